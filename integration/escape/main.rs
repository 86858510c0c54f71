//! Escape suite: a probe run as root inside nested containers.
//!
//! `probe.c` (next to this file) is built with `gcc -static` and copied into containers of the
//! private test dockerd (runtime `nested`). It tries host-reaching actions and prints one line per
//! attempt: `ATTEMPT <name> BLOCKED|ALLOWED|HARMLESS <detail>`. The tests run it
//! - as a process of the container itself (the container's command: `init` rows),
//! - as a `docker exec`'d process (`exec` rows), with a CVE-2019-5736 race against repeated execs,
//! - inside an inner `docker run --privileged` of a DinD container (`dind` rows),
//!
//! check host state before and after (runtime binary hash, global sysctls, a sysfs knob, the
//! container's memory limit as docker set it), print the full table (SECURITY.md is written from
//! it) and fail if any attempt is ALLOWED.
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BUSYBOX: &str = "nestrun-test/busybox";
const DIND: &str = "nestrun-test/dind";
const MEMORY: u64 = 256 * 1024 * 1024;

fn skip() -> bool {
    if std::env::var_os("NESTRUN_TEST_IMAGES").is_none() {
        eprintln!("skipped: run scripts/test");
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

fn report(title: &str, rows: &[Row], marker: &str, outputs: &str) {
    println!("\n=== escape suite: {title} ===");
    println!("| mode | attempt | result | detail |");
    println!("|---|---|---|---|");
    for r in rows {
        println!("| {} | `{}` | {} | {} |", r.mode, r.attempt, r.result, r.detail.replace('|', "\\|"));
    }
    let allowed: Vec<String> = rows.iter().filter(|r| r.result == "ALLOWED").map(|r| format!("{}:{} ({})", r.mode, r.attempt, r.detail)).collect();
    // The probe was given the marker to look for; it must never find it in what it reads.
    let leak = outputs.lines().any(|l| l.starts_with("ATTEMPT ") && l.contains("host's marker line"));
    let unknown: Vec<&Row> = rows.iter().filter(|r| !["BLOCKED", "ALLOWED", "HARMLESS"].contains(&r.result.as_str())).collect();
    assert!(unknown.is_empty(), "unparsable probe lines: {:?}", unknown.iter().map(|r| &r.attempt).collect::<Vec<_>>());
    assert!(!leak, "the host's kernel-log marker {marker} appeared in the probe's output");
    assert!(allowed.is_empty(), "{} escape attempt(s) ALLOWED:\n  {}", allowed.len(), allowed.join("\n  "));
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

// ---------- tests ----------

#[test]
fn probe_in_nested_container_init_and_exec() {
    if skip() {
        return;
    }
    let probe = probe().to_str().unwrap().to_string();
    let ns = host_ns();
    let mut host = HostState::take();
    let mut rows = Vec::new();
    let mut outputs = String::new();

    // exec mode: a long-running container, the probe joins it with docker exec.
    let ex = Container(name("exec"));
    ok(d(&["run", "-d", "--runtime", "nested", "-m", "256m", "--name", &ex.0, BUSYBOX, "sleep", "600"]));
    let mem_ex = memory_limit_file(&ex.0);
    ok(d(&["cp", &probe, &format!("{}:/probe", ex.0)]));
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
    ok(d(&["create", "--runtime", "nested", "-m", "256m", "--name", &init.0, BUSYBOX, "sh", "-c", &script]));
    ok(d(&["cp", &probe, &format!("{}:/probe", init.0)]));
    ok(d(&["start", &init.0]));
    let mem_init = memory_limit_file(&init.0);
    let n = exec_storm(&init.0, Instant::now() + Duration::from_secs(8));
    println!("init race: {n} docker execs during the race");
    let deadline = Instant::now() + Duration::from_secs(180);
    let out = loop {
        let out = ok(d(&["logs", &init.0]));
        if out.contains("PROBE-END") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    outputs.push_str(&out);
    assert!(out.contains("PROBE-END rc=0"), "probe did not finish; output:\n{out}");
    parse("init", &out, &mut rows);
    check_memory_limit(&mem_init, &mut rows);

    host.check(&mut rows);
    report("nested container (init and docker exec)", &rows, &host.marker, &outputs);
}

#[test]
fn probe_in_privileged_container_of_dind() {
    if skip() {
        return;
    }
    let probe = probe().to_str().unwrap().to_string();
    let ns = host_ns();
    let mut host = HostState::take();
    let mut rows = Vec::new();
    let dind = Container(name("dind"));
    ok(d(&["run", "-d", "--runtime", "nested", "-m", "1g", "--name", &dind.0, DIND]));
    let mem = memory_limit_file(&dind.0);
    let w = run(d(&["exec", &dind.0, "dind-wait"]));
    assert!(w.status.success(), "inner dockerd did not come up: {}", String::from_utf8_lossy(&w.stderr));
    ok(d(&["cp", &probe, &format!("{}:/probe", dind.0)]));
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
    let mut mode = "dind-privileged";
    if !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("apply caps") {
        println!("NOTE: inner --privileged failed (the outer container lacks a capability the host runtime lacks); using cap-add ALL minus SYS_RESOURCE, all devices, unconfined seccomp/apparmor/systempaths");
        mode = "dind-allcaps";
        o = inner(&[
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--device-cgroup-rule", "a *:* rwm", "--security-opt", "seccomp=unconfined",
            "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined", "--security-opt", "label=disable",
        ]);
    }
    assert!(o.status.success(), "inner docker run failed: {}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    parse(mode, &out, &mut rows);
    let v = mem.as_ref().and_then(|f| fs::read_to_string(f).ok()).unwrap_or_default();
    rows.push(Row::host("host_memory_limit_as_docker_set", v.trim() == (1u64 << 30).to_string(), &format!("{:?} = {} (docker: 1g)", mem, v.trim())));
    host.check(&mut rows);
    report("inner --privileged container of a DinD container", &rows, &host.marker, &out);
}
