//! Escape suite: a probe run as root inside nested containers.
//!
//! `probe.c` (next to this file) is built with `gcc -static` and copied into containers of the
//! private test dockerd (runtime `nested`). It tries host-reaching actions and prints one line per
//! attempt: `ATTEMPT <name> BLOCKED|ALLOWED|HARMLESS <detail>`. The suite runs it
//! - as a process of the container itself (the container's command: `init` rows),
//! - as a `docker exec`'d process (`exec` rows), with a CVE-2019-5736 race against repeated execs,
//! - inside an inner `docker run --privileged` of a DinD container (`dind` rows; the DinD image is
//!   nestrun-test/dind-trixie, whose docker 26 asks only for the capabilities it has; should the
//!   inner --privileged still fail with "apply caps", the closest equivalent: column
//!   `dind (inner all-caps)`),
//!
//! and checks host state before and after (runtime binary hash, global sysctls, a sysfs knob, the
//! container's memory limit as docker set it). Every run writes its table (attempt, mode, outcome,
//! detail) to `target/escape-results.md`, fails if any attempt is ALLOWED, and fails unless
//! SECURITY.md's results table and README's Security model summary match the run.
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BUSYBOX: &str = "nestrun-test/busybox";
/// Debian trixie's docker 26: an inner `--privileged` gets the capabilities its runtime holds
/// (docker 20.10 of nestrun-test/dind asks for all the kernel knows: SECURITY.md F2).
const DIND: &str = "nestrun-test/dind-trixie";
const MEMORY: u64 = 256 * 1024 * 1024;

#[path = "../skip.rs"]
mod skip_log;

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
    let o = c.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    o
}

fn ok(c: Command) -> String {
    let desc = format!("{c:?}");
    let o = run(c);
    assert!(o.status.success(), "{desc} failed: {}\n{}", String::from_utf8_lossy(&o.stderr), String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn d(args: &[&str]) -> Command {
    let mut c = docker();
    c.args(args);
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

/// The probe, built once per test binary.
fn probe() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/escape/probe.c");
        let dir = std::env::temp_dir().join(format!("nestrun-escape-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join("probe");
        let o = Command::new("gcc").args(["-static", "-O2", "-o"]).arg(&out).arg(&src).output();
        match o {
            Err(e) => panic!(
                "escape suite: cannot run gcc ({e}). Install a C compiler with static libc: \
                 apt-get install -y gcc libc6-dev (scripts/install-deps.sh: build-essential libc6-dev)"
            ),
            Ok(o) if !o.status.success() => panic!(
                "escape suite: gcc -static failed (is the static libc, libc6-dev, installed?):\n{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Ok(_) => out,
        }
    })
}

// ---------- host state ----------

fn host_ns() -> String {
    ["user", "pid", "net", "mnt", "ipc", "uts", "cgroup"]
        .iter()
        .map(|t| {
            let l = fs::read_link(format!("/proc/self/ns/{t}")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
            format!("{t}={}", l.chars().filter(char::is_ascii_digit).collect::<String>())
        })
        .collect::<Vec<_>>()
        .join(",")
}

const HOST_FILES: &[&str] = &[
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/kernel/panic",
    "/proc/sys/kernel/randomize_va_space",
    "/proc/sys/kernel/kptr_restrict",
    "/proc/sys/kernel/dmesg_restrict",
    "/proc/sys/kernel/perf_event_paranoid",
    "/proc/sys/kernel/hostname",
    "/proc/sys/vm/overcommit_memory",
    "/proc/sys/fs/file-max",
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/core/somaxconn",
    "/sys/kernel/mm/transparent_hugepage/enabled",
];

fn nestrun_bin() -> PathBuf {
    std::env::var_os("NESTRUN_BIN").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug/nestrun"))
}

fn sha256(r: &mut impl Read) -> String {
    let mut c = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("sha256sum");
    std::io::copy(r, c.stdin.as_mut().unwrap()).unwrap();
    drop(c.stdin.take());
    let o = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// What must not change: files of HOST_FILES, and the runtime binary (hashed through an fd held
/// open, so an in-place overwrite of the very inode the engine executed is seen even when a
/// concurrent `cargo build` replaces the path with a new file).
struct HostState {
    files: BTreeMap<String, String>,
    bin: Option<(fs::File, String)>,
    marker: String,
}

impl HostState {
    fn take() -> HostState {
        let files = HOST_FILES.iter().filter_map(|f| fs::read_to_string(f).ok().map(|v| (f.to_string(), v))).collect();
        let bin = fs::File::open(nestrun_bin()).ok().map(|mut f| {
            let h = sha256(&mut f);
            (f, h)
        });
        // A line in the host's kernel log that the probe must never be able to read back.
        let marker = format!("nestrun-escape-marker-{}", std::process::id());
        if let Ok(mut k) = fs::OpenOptions::new().write(true).open("/dev/kmsg") {
            let _ = writeln!(k, "{marker}");
        }
        HostState { files, bin, marker }
    }

    fn check(&mut self, rows: &mut Vec<Row>) {
        for (f, before) in &self.files {
            let after = fs::read_to_string(f).unwrap_or_default();
            let same = &after == before;
            rows.push(Row::host(&format!("host_unchanged({f})"), same, &format!("before '{}' after '{}'", before.trim(), after.trim())));
        }
        if let Some((f, before)) = &mut self.bin {
            use std::io::Seek;
            f.rewind().unwrap();
            let after = sha256(f);
            rows.push(Row::host("host_unchanged(runtime binary sha256)", &after == before, &format!("{} {before} -> {after}", nestrun_bin().display())));
        }
    }
}

fn memory_limit_file(container: &str) -> Option<PathBuf> {
    let pid = ok(d(&["inspect", "-f", "{{.State.Pid}}", container])).trim().to_string();
    let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = cg.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))?;
    Some(PathBuf::from(format!("/sys/fs/cgroup/memory{rel}/memory.limit_in_bytes")))
}

fn check_memory_limit(file: &Option<PathBuf>, rows: &mut Vec<Row>) {
    match file {
        Some(f) => {
            let v = fs::read_to_string(f).unwrap_or_default();
            rows.push(Row::host("host_memory_limit_as_docker_set", v.trim() == MEMORY.to_string(), &format!("{} = {} (docker: {MEMORY})", f.display(), v.trim())));
        }
        None => rows.push(Row::host("host_memory_limit_as_docker_set", false, "the container's memory cgroup was not found on the host")),
    }
}

// ---------- results ----------

#[derive(Clone)]
struct Row {
    mode: String,
    attempt: String,
    result: String,
    detail: String,
}

impl Row {
    fn host(attempt: &str, good: bool, detail: &str) -> Row {
        Row { mode: "host".into(), attempt: attempt.into(), result: if good { "BLOCKED" } else { "ALLOWED" }.into(), detail: detail.into() }
    }
}

fn parse(mode: &str, out: &str, rows: &mut Vec<Row>) {
    let mut n = 0;
    for l in out.lines() {
        let Some(rest) = l.strip_prefix("ATTEMPT ") else { continue };
        let mut it = rest.splitn(3, ' ');
        let attempt = it.next().unwrap_or_default().to_string();
        let result = it.next().unwrap_or_default().to_string();
        let detail = it.next().unwrap_or_default().to_string();
        rows.push(Row { mode: mode.into(), attempt, result, detail });
        n += 1;
    }
    if n == 0 || !(out.contains("INFO done") || out.contains("cve_2019_5736")) {
        rows.push(Row { mode: mode.into(), attempt: "probe_completed".into(), result: "ALLOWED".into(), detail: format!("the probe did not run to the end; output:\n{out}") });
    }
}

/// What one scenario produced: probe rows (mode init/exec/dind) and host-side checks (mode host).
struct Scenario {
    rows: Vec<Row>,
    /// Everything the probe printed (searched for the host's kernel-log marker).
    outputs: String,
    marker: String,
    /// The dind column's label (which inner container the probe ran in), for the DinD scenario.
    dind_label: Option<&'static str>,
}

/// Column labels of the three probe modes; the dind one names how the inner container was run.
const DIND_PRIVILEGED: &str = "dind (inner --privileged)";
const DIND_ALLCAPS: &str = "dind (inner all-caps)";

/// The whole run: both scenarios, run once per test binary (concurrently), whichever test asks
/// first. Written to `target/escape-results.md`.
struct Results {
    rows: Vec<Row>,
    dind_label: String,
    /// Scenarios that failed before producing their rows (panics), and kernel-log marker leaks.
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

const MODES: [&str; 3] = ["init", "exec", "dind"];
const OUTCOMES: [&str; 3] = ["BLOCKED", "HARMLESS", "ALLOWED"];

fn results() -> &'static Results {
    static R: OnceLock<Results> = OnceLock::new();
    R.get_or_init(|| {
        let probe = probe().to_str().unwrap().to_string();
        let p2 = probe.clone();
        let scenarios = [
            ("init+exec", std::thread::spawn(move || init_and_exec(&probe))),
            ("dind", std::thread::spawn(move || dind(&p2))),
        ];
        let mut rows = Vec::new();
        let mut errors = Vec::new();
        let mut dind_label = DIND_ALLCAPS.to_string();
        for (name, h) in scenarios {
            match h.join() {
                Ok(sc) => {
                    if sc.outputs.lines().any(|l| l.starts_with("ATTEMPT ") && l.contains("host's marker line")) {
                        errors.push(format!("{name}: the host's kernel-log marker {} appeared in the probe's output", sc.marker));
                    }
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
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().to_path_buf();
        let mut r = Results { rows, dind_label, errors, file: target.join("escape-results.md") };
        let documented = parse_security_md(&read_doc("SECURITY.md")).ok();
        fs::write(&r.file, results_markdown(&r, documented.as_ref())).unwrap_or_else(|e| panic!("write {}: {e}", r.file.display()));
        println!("\n=== escape suite: results written to {} ===", r.file.display());
        println!("| attempt | mode | outcome | detail |\n|---|---|---|---|");
        for x in &r.rows {
            println!("| `{}` | {} | {} | {} |", x.attempt, x.mode, x.result, cell(&x.detail));
        }
        r.file = r.file.canonicalize().unwrap_or(r.file.clone());
        r
    })
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn read_doc(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// attempt -> outcome per mode (init, exec, dind; "—" when not run in that mode), in run order.
/// An attempt reported twice in a mode keeps its worst outcome.
fn pivot(r: &Results) -> Vec<(String, [String; 3])> {
    let mut v: Vec<(String, [String; 3])> = Vec::new();
    for row in r.probe_rows() {
        let i = MODES.iter().position(|m| *m == row.mode).unwrap();
        let e = match v.iter().position(|(a, _)| *a == row.attempt) {
            Some(p) => &mut v[p],
            None => {
                v.push((row.attempt.clone(), ["—".into(), "—".into(), "—".into()]));
                v.last_mut().unwrap()
            }
        };
        let rank = |o: &str| OUTCOMES.iter().position(|x| *x == o).map_or(3, |p| p);
        if e.1[i] == "—" || rank(&row.result) > rank(&e.1[i]) {
            e.1[i] = row.result.clone();
        }
    }
    v
}

/// Per mode: (attempts, BLOCKED, HARMLESS, ALLOWED).
fn counts(r: &Results) -> Vec<(String, [usize; 4])> {
    MODES
        .iter()
        .map(|m| {
            let mut c = [0; 4];
            for row in r.probe_rows().filter(|x| x.mode == *m) {
                c[0] += 1;
                if let Some(i) = OUTCOMES.iter().position(|o| *o == row.result) {
                    c[i + 1] += 1;
                }
            }
            (r.label(m), c)
        })
        .collect()
}

fn outcome_cell(o: &str) -> String {
    if o == "ALLOWED" { "**ALLOWED**".into() } else { o.into() }
}

const README_HEADER: &str = "| escape suite mode | attempts | BLOCKED | HARMLESS | ALLOWED |";

fn results_markdown(r: &Results, documented: Option<&DocTable>) -> String {
    let mut s = String::from("# Escape suite results (generated by `cargo test --test escape`)\n\n");
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let commit = Command::new("git").args(["-C", env!("CARGO_MANIFEST_DIR"), "describe", "--always", "--dirty"]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    s += &format!("Kernel {}, nestrun {} ({commit}), dind column: {}.\n", kernel.trim(), nestrun_bin().display(), r.dind_label);
    s += "SECURITY.md's results table and README's summary are checked against this run (test `security_md_and_readme_match_this_run`).\n\n";
    if !r.errors.is_empty() {
        s += "## ERRORS (the run is incomplete)\n\n";
        for e in &r.errors {
            s += &format!("- {}\n", cell(e));
        }
        s += "\n";
    }
    s += "## Summary (README's Security model table)\n\n";
    s += README_HEADER;
    s += "\n|---|---:|---:|---:|---:|\n";
    for (label, c) in counts(r) {
        s += &format!("| {label} | {} | {} | {} | {} |\n", c[0], c[1], c[2], c[3]);
    }
    s += "\n## SECURITY.md table\n\n";
    s += &format!("| attempt | init | exec | {} | what it proves |\n|---|---|---|---|---|\n", r.dind_label);
    let piv = pivot(r);
    // SECURITY.md's order for attempts it lists, then new ones in run order
    let mut order: Vec<&(String, [String; 3])> = Vec::new();
    if let Some(d) = documented {
        for (a, _) in &d.rows {
            order.extend(piv.iter().filter(|(x, _)| x == a));
        }
    }
    for p in &piv {
        if !order.iter().any(|(a, _)| *a == p.0) {
            order.push(p);
        }
    }
    for (a, o) in order {
        let proof = documented.and_then(|d| d.proofs.get(a)).cloned().unwrap_or_else(|| "(new attempt: say what it proves)".into());
        s += &format!("| `{a}` | {} | {} | {} | {proof} |\n", outcome_cell(&o[0]), outcome_cell(&o[1]), outcome_cell(&o[2]));
    }
    s += "\n## All rows\n\n| attempt | mode | outcome | detail |\n|---|---|---|---|\n";
    for x in &r.rows {
        s += &format!("| `{}` | {} | {} | {} |\n", x.attempt, x.mode, outcome_cell(&x.result), cell(&x.detail));
    }
    s
}

// ---------- the documents ----------

/// Cells of a markdown table line (`\|` is a literal bar), trimmed.
fn cells(line: &str) -> Vec<String> {
    let t = line.trim().trim_start_matches('|');
    let t = t.strip_suffix('|').unwrap_or(t);
    let mut v = vec![String::new()];
    let mut esc = false;
    for ch in t.chars() {
        match ch {
            '|' if !esc => v.push(String::new()),
            _ => v.last_mut().unwrap().push(ch),
        }
        esc = ch == '\\';
    }
    v.iter().map(|c| c.trim().to_string()).collect()
}

/// The table following `header_pred`'s line: its header cells and body rows.
fn table_after(text: &str, is_header: impl Fn(&[String]) -> bool) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let mut lines = text.lines().skip_while(|l| !(l.trim_start().starts_with('|') && is_header(&cells(l))));
    let header = cells(lines.next()?);
    let body = lines.skip(1).take_while(|l| l.trim_start().starts_with('|')).map(cells).collect();
    Some((header, body))
}

struct DocTable {
    dind_label: String,
    rows: Vec<(String, [String; 3])>,
    proofs: BTreeMap<String, String>,
}

fn parse_security_md(text: &str) -> Result<DocTable, String> {
    let (header, body) = table_after(text, |c| c.len() >= 4 && c[0] == "attempt" && c[1] == "init" && c[2] == "exec" && c[3].starts_with("dind"))
        .ok_or("SECURITY.md has no results table (header `| attempt | init | exec | dind ... |`)")?;
    let mut rows = Vec::new();
    let mut proofs = BTreeMap::new();
    for c in body {
        if c.len() < 4 {
            return Err(format!("SECURITY.md results table: short row {c:?}"));
        }
        let a = c[0].trim_matches('`').to_string();
        let o = [1, 2, 3].map(|i| c[i].replace("**", "").trim().to_string());
        proofs.insert(a.clone(), c.get(4).cloned().unwrap_or_default());
        rows.push((a, o));
    }
    Ok(DocTable { dind_label: header[3].clone(), rows, proofs })
}

/// Differences between SECURITY.md's results table and this run.
fn security_md_problems(r: &Results, text: &str) -> Vec<String> {
    let doc = match parse_security_md(text) {
        Ok(d) => d,
        Err(e) => return vec![e],
    };
    let mut p = Vec::new();
    if doc.dind_label != r.dind_label {
        p.push(format!("SECURITY.md's dind column is `{}`, this run's is `{}`", doc.dind_label, r.dind_label));
    }
    let run = pivot(r);
    let mut seen = std::collections::BTreeSet::new();
    for (a, o) in &doc.rows {
        if !seen.insert(a) {
            p.push(format!("SECURITY.md lists `{a}` twice"));
        }
        match run.iter().find(|(x, _)| x == a) {
            None => p.push(format!("SECURITY.md lists `{a}`, which this run did not report")),
            Some((_, ro)) => {
                for i in 0..3 {
                    if ro[i] != o[i] {
                        let detail = r.probe_rows().find(|x| x.attempt == *a && x.mode == MODES[i]).map(|x| x.detail.clone()).unwrap_or_default();
                        p.push(format!("`{a}` {}: SECURITY.md says {}, this run {} ({detail})", MODES[i], o[i], ro[i]));
                    }
                }
            }
        }
    }
    for (a, o) in &run {
        if !doc.rows.iter().any(|(x, _)| x == a) {
            p.push(format!("`{a}` (init {}, exec {}, dind {}) is missing from SECURITY.md", o[0], o[1], o[2]));
        }
    }
    p
}

/// Differences between README's "Security model" summary and this run; every ALLOWED must be 0.
fn readme_problems(r: &Results, text: &str) -> Vec<String> {
    let mut lines = text.lines().skip_while(|l| l.trim_end() != "## Security model");
    if lines.next().is_none() {
        return vec!["README.md has no `## Security model` section".into()];
    }
    let section = lines.take_while(|l| !l.starts_with("## ")).collect::<Vec<_>>().join("\n");
    let section = section.as_str();
    let want = cells(README_HEADER);
    let Some((_, body)) = table_after(section, |c| c == want.as_slice()) else {
        return vec![format!("README.md's Security model section has no summary table `{README_HEADER}`")];
    };
    let mut p = Vec::new();
    let run = counts(r);
    for c in &body {
        if c.len() < 5 {
            p.push(format!("README summary: short row {c:?}"));
            continue;
        }
        if c[4] != "0" {
            p.push(format!("README summary: {} shows ALLOWED {} (must be 0)", c[0], c[4]));
        }
        match run.iter().find(|(l, _)| *l == c[0]) {
            None => p.push(format!("README summary lists mode `{}`, this run has {:?}", c[0], run.iter().map(|(l, _)| l).collect::<Vec<_>>())),
            Some((_, n)) => {
                let doc: Vec<String> = c[1..5].to_vec();
                let got: Vec<String> = n.iter().map(|x| x.to_string()).collect();
                if doc != got {
                    p.push(format!("README summary `{}`: attempts/BLOCKED/HARMLESS/ALLOWED {} in README, {} in this run", c[0], doc.join("/"), got.join("/")));
                }
            }
        }
    }
    for (l, n) in &run {
        if !body.iter().any(|c| c.first() == Some(l)) {
            p.push(format!("README summary has no row for `{l}` ({n:?})"));
        }
        if n[3] != 0 {
            p.push(format!("this run has {} ALLOWED attempt(s) in mode `{l}`", n[3]));
        }
    }
    p
}

/// Panics unless the rows of `modes` (and their host-side checks) are complete and none is ALLOWED.
fn assert_clean(r: &Results, scenario: &str, modes: &[&str]) {
    let errors: Vec<&String> = r.errors.iter().filter(|e| e.starts_with(scenario)).collect();
    assert!(errors.is_empty(), "{}", errors.iter().map(|e| e.as_str()).collect::<Vec<_>>().join("\n"));
    let mine = |x: &&Row| modes.contains(&x.mode.as_str()) || x.mode == format!("host (after {scenario})");
    let unknown: Vec<&String> = r.rows.iter().filter(mine).filter(|x| !OUTCOMES.contains(&x.result.as_str())).map(|x| &x.attempt).collect();
    assert!(unknown.is_empty(), "unparsable probe lines: {unknown:?}");
    assert!(r.rows.iter().filter(mine).any(|x| x.mode != "host"), "no probe rows for {scenario}");
    let allowed: Vec<String> = r.rows.iter().filter(mine).filter(|x| x.result == "ALLOWED").map(|x| format!("{}:{} ({})", x.mode, x.attempt, x.detail)).collect();
    assert!(allowed.is_empty(), "{} escape attempt(s) ALLOWED (table: {}):\n  {}", allowed.len(), r.file.display(), allowed.join("\n  "));
}

/// Repeatedly `docker exec <c> true` until the time is up; returns how many succeeded.
fn exec_storm(container: &str, until: Instant) -> usize {
    let mut n = 0;
    while Instant::now() < until {
        if run(d(&["exec", container, "true"])).status.success() {
            n += 1;
        }
    }
    n
}

// ---------- scenarios ----------

/// The probe as a `docker exec`'d process (with a CVE-2019-5736 race against repeated execs) and
/// as the container's own command.
fn init_and_exec(probe: &str) -> Scenario {
    let ns = host_ns();
    let mut host = HostState::take();
    let mut rows = Vec::new();
    let mut outputs = String::new();

    // exec mode: a long-running container, the probe joins it with docker exec.
    let ex = Container(name("exec"));
    // The probe comes in as a read-only bind (`docker cp` into a running system container
    // fails by design: see README, Known gaps).
    let vol = format!("{probe}:/probe:ro");
    ok(d(&["run", "-d", "--runtime", "nested", "-m", "256m", "-v", &vol, "--name", &ex.0, BUSYBOX, "sleep", "600"]));
    let mem_ex = memory_limit_file(&ex.0);
    let out = ok(d(&["exec", &ex.0, "/probe", "suite", &ns, &host.marker]));
    outputs.push_str(&out);
    parse("exec", &out, &mut rows);
    // CVE-2019-5736: the probe watches /proc/*/exe while the runtime joins with docker exec.
    let racer = {
        let c = ex.0.clone();
        std::thread::spawn(move || ok(d(&["exec", &c, "/probe", "race", "8"])))
    };
    std::thread::sleep(Duration::from_millis(500));
    let n = exec_storm(&ex.0, Instant::now() + Duration::from_secs(7));
    let out = racer.join().unwrap();
    outputs.push_str(&out);
    println!("exec race: {n} docker execs during the race");
    parse("exec", &out, &mut rows);
    check_memory_limit(&mem_ex, &mut rows);

    // init mode: the probe is the container's own command (race first, while the test execs);
    // the container stays up afterwards so its host cgroup can still be checked.
    let init = Container(name("init"));
    let script = format!("/probe race 8; /probe suite '{ns}' '{}'; echo PROBE-END rc=$?; sleep 600", host.marker);
    ok(d(&["create", "--runtime", "nested", "-m", "256m", "-v", &vol, "--name", &init.0, BUSYBOX, "sh", "-c", &script]));
    ok(d(&["start", &init.0]));
    let mem_init = memory_limit_file(&init.0);
    let n = exec_storm(&init.0, Instant::now() + Duration::from_secs(8));
    println!("init race: {n} docker execs during the race");
    let deadline = Instant::now() + Duration::from_secs(180);
    let out = loop {
        let out = ok(d(&["logs", &init.0]));
        // A line of its own: the kill_host_pids attempt quotes pid 1's command line, which
        // names PROBE-END too (a partial log once stopped the wait before the probe ended).
        if out.lines().any(|l| l.starts_with("PROBE-END")) || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    outputs.push_str(&out);
    assert!(out.lines().any(|l| l == "PROBE-END rc=0"), "probe did not finish; output:\n{out}");
    parse("init", &out, &mut rows);
    check_memory_limit(&mem_init, &mut rows);

    host.check(&mut rows);
    Scenario { rows, outputs, marker: host.marker.clone(), dind_label: None }
}

/// The probe inside an inner `docker run --privileged` (or its closest equivalent) of a DinD
/// container.
fn dind(probe: &str) -> Scenario {
    let ns = host_ns();
    let mut host = HostState::take();
    let mut rows = Vec::new();
    let dind = Container(name("dind"));
    let vol = format!("{probe}:/probe:ro");
    ok(d(&["run", "-d", "--runtime", "nested", "-m", "1g", "-v", &vol, "--name", &dind.0, DIND]));
    let mem = memory_limit_file(&dind.0);
    let w = run(d(&["exec", &dind.0, "dind-wait"]));
    assert!(w.status.success(), "inner dockerd did not come up: {}", String::from_utf8_lossy(&w.stderr));
    // `--privileged` asks for every capability the kernel knows; when the host runtime itself
    // lacks one (CAP_SYS_RESOURCE in some sandboxes) the outer container cannot have it and the
    // inner runc fails with "unable to apply caps". Then the closest equivalent is used.
    let inner = |opts: &[&str]| {
        let mut a = vec!["exec", &dind.0, "docker", "run", "--rm"];
        a.extend_from_slice(opts);
        a.extend_from_slice(&["-v", "/probe:/probe:ro", "busybox", "/probe", "suite", &ns, &host.marker]);
        run(d(&a))
    };
    let mut o = inner(&["--privileged"]);
    let mut label = DIND_PRIVILEGED;
    if !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("apply caps") {
        println!("NOTE: inner --privileged failed (the outer container lacks a capability the host runtime lacks); using cap-add ALL minus SYS_RESOURCE, all devices, unconfined seccomp/apparmor/systempaths");
        label = DIND_ALLCAPS;
        o = inner(&[
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--device-cgroup-rule", "a *:* rwm", "--security-opt", "seccomp=unconfined",
            "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined", "--security-opt", "label=disable",
        ]);
    }
    assert!(o.status.success(), "inner docker run failed: {}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    parse("dind", &out, &mut rows);
    let v = mem.as_ref().and_then(|f| fs::read_to_string(f).ok()).unwrap_or_default();
    rows.push(Row::host("host_memory_limit_as_docker_set", v.trim() == (1u64 << 30).to_string(), &format!("{:?} = {} (docker: 1g)", mem, v.trim())));
    host.check(&mut rows);
    Scenario { rows, outputs: out, marker: host.marker.clone(), dind_label: Some(label) }
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

/// SECURITY.md's results table lists exactly this run's attempts with the same outcomes, and
/// README's Security model summary has this run's counts (ALLOWED 0 in every mode). A change
/// that adds an attempt or turns a BLOCKED into anything else fails here until the documents
/// are updated (target/escape-results.md has both tables ready to paste).
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

/// The document checks themselves, on a made-up run (no engines needed).
#[test]
fn document_checks_catch_changes() {
    let row = |m: &str, a: &str, o: &str| Row { mode: m.into(), attempt: a.into(), result: o.into(), detail: "d|x".into() };
    let r = Results {
        rows: vec![row("init", "a", "BLOCKED"), row("exec", "a", "BLOCKED"), row("dind", "a", "BLOCKED"), row("init", "b", "HARMLESS"), row("host (after x)", "h", "BLOCKED")],
        dind_label: DIND_ALLCAPS.into(),
        errors: vec![],
        file: PathBuf::from("x"),
    };
    let md = results_markdown(&r, None);
    // the generated tables pass their own checks
    let sec = md.replace("(new attempt: say what it proves)", "proof \\| with a bar");
    assert_eq!(security_md_problems(&r, &sec), Vec::<String>::new(), "{sec}");
    let readme = format!("# x\n\n## Security model\n\ntext\n\n{}\n\n## Next\n", md.lines().skip_while(|l| !l.starts_with(README_HEADER)).take(5).collect::<Vec<_>>().join("\n"));
    assert_eq!(readme_problems(&r, &readme), Vec::<String>::new(), "{readme}");
    assert!(readme.contains("| init | 2 | 1 | 1 | 0 |") && readme.contains("| dind (inner all-caps) | 1 | 1 | 0 | 0 |"), "{readme}");
    // a BLOCKED turned ALLOWED, a new attempt, a vanished one, another dind variant
    let mut r2 = Results { rows: r.rows.clone(), dind_label: DIND_PRIVILEGED.into(), errors: vec![], file: PathBuf::from("x") };
    r2.rows[1].result = "ALLOWED".into();
    r2.rows.push(row("init", "c", "BLOCKED"));
    r2.rows.retain(|x| x.attempt != "b");
    let p = security_md_problems(&r2, &sec).join("\n");
    for want in ["`a` exec: SECURITY.md says BLOCKED, this run ALLOWED", "`c` (init BLOCKED, exec —, dind —) is missing", "lists `b`, which this run did not report", "dind column"] {
        assert!(p.contains(want), "missing {want:?} in:\n{p}");
    }
    let p = readme_problems(&r2, &readme).join("\n");
    for want in ["`exec`: attempts/BLOCKED/HARMLESS/ALLOWED 1/1/0/0 in README, 1/0/0/1", "1 ALLOWED attempt(s) in mode `exec`", "mode `dind (inner all-caps)`"] {
        assert!(p.contains(want), "missing {want:?} in:\n{p}");
    }
    // an ALLOWED written into the README is refused even when it matches
    let md2 = results_markdown(&r2, None);
    let readme2 = format!("## Security model\n\n{}\n", md2.lines().skip_while(|l| !l.starts_with(README_HEADER)).take(5).collect::<Vec<_>>().join("\n"));
    assert!(readme_problems(&r2, &readme2).join("\n").contains("exec shows ALLOWED 1 (must be 0)"), "{readme2}");
}
