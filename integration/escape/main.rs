//! Escape suite: a probe run as root inside nested containers, judged on the host.
//!
//! The probe (`probe*.c` next to this file, built with `gcc -static`) is bound read-only into
//! containers of the private test dockerd (runtime `nested`) with its spec file (/probe.d). It
//! tries host-reaching actions and prints one line per attempt:
//! `ATTEMPT <name> BLOCKED|HARMLESS|N/A|ALLOWED <detail>`. The suite runs it
//! - as a process of the container itself (the container's command: `init` rows),
//! - as a `docker exec`'d process (`exec` rows), with a CVE-2019-5736 race against repeated execs,
//! - inside an inner `docker run --privileged` of a DinD container (`dind` rows; the DinD image is
//!   nestrun-test/dind-trixie, whose docker 26 asks only for the capabilities it has; should the
//!   inner --privileged still fail with "apply caps", the closest equivalent: column
//!   `dind (inner all-caps)`).
//!
//! The probe's verdict is one input. The other is the host's (host.rs, window.rs, judge.rs): the
//! probe stops at two checkpoints; at the first the host reads its process from /proc/<pid> and
//! plants canaries, at the second it checks and restores them; tokens planted on the host must
//! never appear in the probe's output; the host decides what does not exist here (N/A). Every
//! run writes its tables to `target/escape-results.md`, fails if any attempt is ALLOWED, and
//! fails unless SECURITY.md's tables and README's Security model summary match the run.
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

mod docs;
mod host;
mod judge;
mod scenarios;
mod supervisor;
mod supervisor_mount;
mod window;

use scenarios::{dind, init_and_exec};

use docs::{readme_problems, security_md_problems, OUTCOMES};

const BUSYBOX: &str = "nestrun-test/busybox";
/// Debian trixie's docker 26: an inner `--privileged` gets the capabilities its runtime holds
/// (docker 20.10 of nestrun-test/dind asks for all the kernel knows: SECURITY.md F2).
const DIND: &str = "nestrun-test/dind-trixie";
const MEMORY: u64 = 256 * 1024 * 1024;
pub const MODES: [&str; 3] = ["init", "exec", "dind"];

#[path = "../skip.rs"]
mod skip_log;
#[path = "../docker_runtime.rs"]
mod docker_runtime;

fn skip() -> bool {
    if std::env::var_os("NESTRUN_TEST_IMAGES").is_none() {
        skip_log::skip("engine", "escape", "run scripts/test (NESTRUN_TEST_IMAGES is unset)");
        return true;
    }
    false
}

fn docker() -> Command {
    let mut c = Command::new("/usr/bin/docker");
    if std::env::var_os("DOCKER_HOST").is_none() {
        c.env("DOCKER_HOST", "unix:///run/nestrun-test/docker.sock");
    }
    c
}

fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{c:?}: {e}"))
}

fn ok(c: Command) -> String {
    let desc = format!("{c:?}");
    let o = run(c);
    assert!(o.status.success(), "{desc} failed: {}\n{}", String::from_utf8_lossy(&o.stderr), String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn d(args: &[&str]) -> Command {
    let mut c = docker();
    docker_runtime::add_args(&mut c, args);
    c
}

/// A container removed (docker rm -f) when dropped.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker().args(["rm", "-f", &self.0]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

fn name(tag: &str) -> String {
    format!("nestrun-escape-{tag}-{}", std::process::id())
}

pub fn nestrun_bin() -> PathBuf {
    std::env::var_os("NESTRUN_BIN").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug/nestrun"))
}

/// The probe, built once per test binary into a directory that is bound at /probe.d (with
/// the spec file written later). Returns the directory and the probe's (dev, inode).
fn probe() -> &'static (PathBuf, (u64, u64)) {
    static P: OnceLock<(PathBuf, (u64, u64))> = OnceLock::new();
    P.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/escape");
        let dir = std::env::temp_dir().join(format!("nestrun-escape-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join("probe");
        let mut c = Command::new("gcc");
        c.args(["-static", "-O2", "-o"]).arg(&out);
        for f in ["probe.c", "probe_ns.c", "probe_sys.c", "probe_cg.c", "probe_dev.c", "probe_mnt.c"] {
            c.arg(src.join(f));
        }
        match c.output() {
            Err(e) => panic!(
                "escape suite: cannot run gcc ({e}). Install a C compiler with static libc: \
                 apt-get install -y gcc libc6-dev (scripts/install-deps.sh: build-essential libc6-dev)"
            ),
            Ok(o) if !o.status.success() => panic!("escape suite: gcc -static failed (is the static libc, libc6-dev, installed?):\n{}", String::from_utf8_lossy(&o.stderr)),
            Ok(_) => {}
        }
        let m = fs::metadata(&out).unwrap();
        (dir, (m.dev(), m.ino()))
    })
}

fn sha256(r: &mut impl Read) -> String {
    let mut c = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("sha256sum");
    std::io::copy(r, c.stdin.as_mut().unwrap()).unwrap();
    drop(c.stdin.take());
    let o = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

// ---------- results ----------

#[derive(Clone)]
pub struct Row {
    pub mode: String,
    pub attempt: String,
    pub result: String,
    pub detail: String,
}

impl Row {
    fn host(attempt: &str, good: bool, detail: &str) -> Row {
        Row { mode: "host".into(), attempt: attempt.into(), result: if good { "BLOCKED" } else { "ALLOWED" }.into(), detail: detail.into() }
    }
}

fn parse(mode: &str, out: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    for l in out.lines() {
        let Some(rest) = l.strip_prefix("ATTEMPT ") else { continue };
        let mut it = rest.splitn(3, ' ');
        let attempt = it.next().unwrap_or_default().to_string();
        let result = it.next().unwrap_or_default().to_string();
        let detail = it.next().unwrap_or_default().to_string();
        rows.push(Row { mode: mode.into(), attempt, result, detail });
    }
    if rows.is_empty() || !(out.contains("INFO done") || out.contains("cve_2019_5736")) {
        rows.push(Row { mode: mode.into(), attempt: "probe_completed".into(), result: "ALLOWED".into(), detail: format!("the probe did not run to the end; output:\n{out}") });
    }
    rows
}

/// What one scenario produced: probe rows (mode init/exec/dind) and host-side checks (mode host).
struct Scenario {
    rows: Vec<Row>,
    errors: Vec<String>,
    /// The dind column's label (which inner container the probe ran in), for the DinD scenario.
    dind_label: Option<&'static str>,
}

/// Column labels of the three probe modes; the dind one names how the inner container was run.
const DIND_PRIVILEGED: &str = "dind (inner --privileged)";
const DIND_ALLCAPS: &str = "dind (inner all-caps)";

/// The whole run: both scenarios, run once per test binary (concurrently), whichever test asks
/// first. Written to `target/escape-results.md`.
pub struct Results {
    rows: Vec<Row>,
    dind_label: String,
    /// Scenarios that failed before producing their rows (panics), host checks that could not
    /// be made, host tokens in the probe's context lines.
    errors: Vec<String>,
    file: PathBuf,
}

impl Results {
    fn probe_rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| MODES.contains(&r.mode.as_str()))
    }
    fn label(&self, mode: &str) -> String {
        if mode == "dind" { self.dind_label.clone() } else { mode.to_string() }
    }
}

/// What the scenarios share: the probe, the host's namespaces, the plants.
struct Ctx {
    dir: PathBuf,
    exe: (u64, u64),
    hostns: BTreeMap<String, String>,
    plants: Mutex<host::Plants>,
}

fn results() -> &'static Results {
    static R: OnceLock<Results> = OnceLock::new();
    R.get_or_init(|| {
        let (dir, exe) = probe().clone();
        let hostns = host::ns_of("self");
        let plants = host::Plants::new(&MODES);
        let ns_arg = hostns.iter().map(|(t, l)| format!("{t}={}", l.chars().filter(char::is_ascii_digit).collect::<String>())).collect::<Vec<_>>().join(",");
        fs::write(dir.join("spec"), plants.spec(&ns_arg)).unwrap();
        let ctx = Arc::new(Ctx { dir, exe, hostns, plants: Mutex::new(plants) });
        // the runtime binary, hashed through an fd held open over the run: an in-place write to
        // the inode the engine executes shows even if a concurrent build replaces the path
        let mut bin = fs::File::open(nestrun_bin()).ok().map(|mut f| {
            let h = sha256(&mut f);
            (f, h)
        });
        let (c1, c2) = (ctx.clone(), ctx.clone());
        let scenarios = [("init+exec", std::thread::spawn(move || init_and_exec(&c1))), ("dind", std::thread::spawn(move || dind(&c2)))];
        let mut rows = Vec::new();
        let mut errors = Vec::new();
        let mut dind_label = DIND_ALLCAPS.to_string();
        for (name, h) in scenarios {
            match h.join() {
                Ok(sc) => {
                    errors.extend(sc.errors);
                    if let Some(l) = sc.dind_label {
                        dind_label = l.to_string();
                    }
                    rows.extend(sc.rows.into_iter().map(|mut r| {
                        if r.mode == "host" {
                            r.mode = format!("host (after {name})");
                        }
                        r
                    }));
                }
                Err(p) => {
                    let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                    errors.push(format!("{name} scenario failed: {msg}"));
                }
            }
        }
        if let Some((f, before)) = &mut bin {
            use std::io::Seek;
            f.rewind().unwrap();
            let after = sha256(f);
            let same = &after == before;
            rows.push(Row::host("host_unchanged(runtime binary sha256)", same, &format!("{} {before} -> {after}", nestrun_bin().display())));
            for r in rows.iter_mut().filter(|r| r.attempt.starts_with("cve_2019_5736")) {
                r.detail = format!("{} ‖ host: runtime binary sha256 {}", r.detail, if same { "unchanged" } else { "CHANGED" });
                if !same {
                    r.result = "ALLOWED".into();
                }
            }
        }
        drop(ctx);
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().to_path_buf();
        let mut r = Results { rows, dind_label, errors, file: target.join("escape-results.md") };
        let documented = docs::parse_security_md(&read_doc("SECURITY.md")).ok();
        fs::write(&r.file, docs::results_markdown(&r, documented.as_ref())).unwrap_or_else(|e| panic!("write {}: {e}", r.file.display()));
        println!("\n=== escape suite: results written to {} ===", r.file.display());
        println!("| attempt | mode | outcome | detail |\n|---|---|---|---|");
        for x in &r.rows {
            println!("| `{}` | {} | {} | {} |", x.attempt, x.mode, x.result, docs::cell(&x.detail));
        }
        r.file = r.file.canonicalize().unwrap_or(r.file.clone());
        r
    })
}

fn read_doc(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Panics unless the rows of `modes` (and their host-side checks) are complete and none is ALLOWED.
fn assert_clean(r: &Results, scenario: &str, modes: &[&str]) {
    let errors: Vec<&String> = r.errors.iter().filter(|e| modes.iter().any(|m| e.starts_with(&format!("{m}:"))) || e.starts_with(scenario)).collect();
    assert!(errors.is_empty(), "{}", errors.iter().map(|e| e.as_str()).collect::<Vec<_>>().join("\n"));
    let mine = |x: &&Row| modes.contains(&x.mode.as_str()) || x.mode == format!("host (after {scenario})") || x.mode == "host";
    let unknown: Vec<&String> = r.rows.iter().filter(mine).filter(|x| !OUTCOMES.contains(&x.result.as_str())).map(|x| &x.attempt).collect();
    assert!(unknown.is_empty(), "unparsable probe lines: {unknown:?}");
    assert!(r.rows.iter().filter(mine).any(|x| !x.mode.starts_with("host")), "no probe rows for {scenario}");
    let allowed: Vec<String> = r.rows.iter().filter(mine).filter(|x| x.result == "ALLOWED").map(|x| format!("{}:{} ({})", x.mode, x.attempt, x.detail)).collect();
    assert!(allowed.is_empty(), "{} escape attempt(s) ALLOWED (table: {}):\n  {}", allowed.len(), r.file.display(), allowed.join("\n  "));
}

// ---------- tests ----------
// The first test to ask runs both scenarios (concurrently, once); the others wait for it.

#[test]
fn probe_in_nested_container_init_and_exec() {
    if skip() {
        return;
    }
    assert_clean(results(), "init+exec", &["init", "exec"]);
}

#[test]
fn probe_in_privileged_container_of_dind() {
    if skip() {
        return;
    }
    assert_clean(results(), "dind", &["dind"]);
}

/// SECURITY.md's tables list exactly this run's attempts with the same outcomes and host
/// checks, and README's Security model summary has this run's counts (ALLOWED 0 in every
/// mode). A change that adds an attempt or turns a BLOCKED into anything else fails here until
/// the documents are updated (target/escape-results.md has the tables ready to paste).
#[test]
fn security_md_and_readme_match_this_run() {
    if skip() {
        return;
    }
    let r = results();
    assert!(r.errors.is_empty(), "the run is incomplete, the documents cannot be checked:\n{}", r.errors.join("\n"));
    let mut p: Vec<String> = security_md_problems(r, &read_doc("SECURITY.md")).into_iter().map(|x| format!("SECURITY.md: {x}")).collect();
    p.extend(readme_problems(r, &read_doc("README.md")).into_iter().map(|x| format!("README.md: {x}")));
    assert!(p.is_empty(), "the documents do not match this run of the escape suite ({} difference(s)); this run's tables are in {}:\n  {}", p.len(), r.file.display(), p.join("\n  "));
}

#[cfg(test)]
mod unit;
