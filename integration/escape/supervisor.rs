//! Attempts aimed at the syscall supervisor (src/fuse/supervisor.rs), the part of `fuse-serve`
//! that acts on the container's trapped `sysinfo` calls: a flood of them (it stays responsive,
//! its memory bounded), callers killed while their call waits, calls with bad pointers (EFAULT
//! as from the kernel, never a write elsewhere), and the supervisor killed (trapped calls then
//! fail at once with ENOSYS, nothing hangs, the container is still removed). The probe is
//! integration/supervisor.c; the verdicts are the host's.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{d, name, ok, run, skip, Container, BUSYBOX};

/// integration/supervisor.c built static as `sv` in a directory of its own (bound at /t).
pub(super) fn probe_dir() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("nestrun-escape-sv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/supervisor.c");
        let o = Command::new("gcc").args(["-static", "-O2", "-o"]).arg(dir.join("sv")).arg(&src).output().expect("gcc (apt-get install -y gcc libc6-dev)");
        assert!(o.status.success(), "gcc -static {}: {}", src.display(), String::from_utf8_lossy(&o.stderr));
        dir
    })
}

/// A running busybox container with -m 256m and the probe at /t (and `extra` docker flags).
pub(super) fn start(tag: &str, extra: &[&str], cmd: &[&str]) -> Container {
    let c = Container(name(tag));
    let vol = format!("{}:/t:ro", probe_dir().display());
    let mut args = vec!["run", "-d", "--runtime", "nested", "-m", "256m", "-v", &vol, "--name", &c.0];
    args.extend_from_slice(extra);
    args.push(BUSYBOX);
    args.extend_from_slice(cmd);
    ok(d(&args));
    c
}

pub(super) fn exec(c: &Container, cmd: &[&str]) -> String {
    let mut args = vec!["exec", c.0.as_str()];
    args.extend_from_slice(cmd);
    ok(d(&args))
}

/// Host pid of the container's `fuse-serve`.
pub(super) fn server_of(c: &Container) -> i32 {
    let id = ok(d(&["inspect", "-f", "{{.Id}}", &c.0])).trim().to_string();
    let found = std::fs::read_dir("/proc").unwrap().flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()).find(|p| {
        std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.contains(&&b"fuse-serve"[..]) && args.iter().any(|a| String::from_utf8_lossy(a).contains(&id))
        })
    });
    found.unwrap_or_else(|| panic!("no fuse-serve for {}", c.0))
}

pub(super) fn rss_kb(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

/// Host pids of the container's processes named `comm`.
pub(super) fn pids_named(c: &Container, comm: &str) -> Vec<i32> {
    let id = ok(d(&["inspect", "-f", "{{.Id}}", &c.0])).trim().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|s| s.trim() == comm))
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/cgroup")).is_ok_and(|s| s.contains(&id)))
        .collect()
}

pub(super) fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok()).unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

pub(super) fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// What `flood_meanwhile` saw.
pub(super) struct Flood {
    /// The flood's own output.
    pub out: String,
    /// `sv bench N` of another process, run during the flood, and how long it took.
    pub bench: String,
    pub took: Duration,
    /// fuse-serve's VmRSS during the flood.
    pub during: u64,
}

/// Runs `script` (starting `n` `sv` processes) in the container while another process makes
/// `calls` sysinfo calls (`sv bench`).
pub(super) fn flood_meanwhile(c: &Container, server: i32, script: &str, n: usize, calls: &str) -> Flood {
    let name = c.0.clone();
    let script = script.to_string();
    let flood = std::thread::spawn(move || ok(d(&["exec", &name, "sh", "-c", &script])));
    assert!(wait_until(10, || pids_named(c, "sv").len() >= n), "the flood did not start");
    let t = Instant::now();
    let bench = exec(c, &["/t/sv", "bench", calls]);
    let took = t.elapsed();
    let during = rss_kb(server);
    Flood { out: flood.join().unwrap(), bench, took, during }
}

/// Stops the supervisor (`server`), starts `cmd` in the container (`docker exec -d`), waits until
/// an `sv` process waits in a trapped call, kills every `sv`, resumes the supervisor. Returns
/// whether one was seen waiting, and the pids killed.
pub(super) fn kill_callers_while_stopped(c: &Container, server: i32, cmd: &[&str]) -> (bool, Vec<i32>) {
    let pid = nix::unistd::Pid::from_raw(server);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGSTOP).unwrap();
    let resume = || {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGCONT);
    };
    let mut args = vec!["exec", "-d", c.0.as_str()];
    args.extend_from_slice(cmd);
    let o = run(d(&args));
    if !o.status.success() {
        resume();
        panic!("docker exec -d: {}", String::from_utf8_lossy(&o.stderr));
    }
    // Blocked in its first trapped call: its notification waits for the stopped supervisor.
    let waiting = wait_until(10, || {
        pids_named(c, "sv").iter().any(|p| std::fs::read_to_string(format!("/proc/{p}/wchan")).is_ok_and(|w| w.contains("seccomp")))
    });
    let victims = pids_named(c, "sv");
    for p in &victims {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), nix::sys::signal::SIGKILL);
    }
    resume();
    (waiting, victims)
}

/// Kills the supervisor (`server`) and waits until it is gone (or a zombie).
pub(super) fn kill_server(server: i32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server), nix::sys::signal::SIGKILL).unwrap();
    assert!(wait_until(10, || !Path::new(&format!("/proc/{server}")).exists() || std::fs::read_to_string(format!("/proc/{server}/stat")).is_ok_and(|s| s.contains(") Z "))));
}

/// 16 processes calling sysinfo in a loop for 5 s: another process's calls are still answered
/// (each notify fd gets its turn), the server's memory stays put, the flooders see no error.
#[test]
fn supervisor_flood_stays_responsive_and_bounded() {
    if skip() {
        return;
    }
    let c = start("sv-flood", &[], &["sleep", "100000"]);
    let server = server_of(&c);
    exec(&c, &["/t/sv", "info"]);
    let before = rss_kb(server);
    let Flood { out, bench, took, during } = flood_meanwhile(&c, server, "for i in $(seq 16); do /t/sv flood 5 & done; wait", 16, "200");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("flood ")).collect();
    assert_eq!(lines.len(), 16, "{out}");
    let calls: u64 = lines.iter().map(|l| field(l, "calls")).sum();
    assert!(lines.iter().all(|l| field(l, "errors") == 0), "{out}");
    println!("flood: {calls} calls in 5 s by 16 processes; meanwhile 200 calls of another process: {bench:?} in {took:?}; fuse-serve VmRSS {before} -> {during} kB");
    assert!(took < Duration::from_secs(30), "200 calls during the flood took {took:?}");
    assert!(field(&bench, "max_ns") < 2_000_000_000, "one call waited {} ns", field(&bench, "max_ns"));
    assert!(during < before + 8192, "fuse-serve grew from {before} to {during} kB under the flood");
    let after = exec(&c, &["/t/sv", "info"]);
    assert_eq!(field(&after, "totalram"), 256 << 20, "still answering: {after}");
    assert_eq!(server_of(&c), server, "the same server");
}

/// A caller killed while its call waits for the supervisor (stopped meanwhile): the
/// supervisor, resumed, goes on answering the others.
#[test]
fn supervisor_survives_callers_killed_mid_request() {
    if skip() {
        return;
    }
    let c = start("sv-kill", &[], &["sleep", "100000"]);
    let server = server_of(&c);
    let (waiting, victims) = kill_callers_while_stopped(&c, server, &["sh", "-c", "/t/sv info; /t/sv info; /t/sv info"]);
    assert!(waiting, "the caller was not seen waiting in the trapped call");
    assert!(!victims.is_empty() && wait_until(10, || pids_named(&c, "sv").is_empty()), "killed callers linger");
    let after = exec(&c, &["/t/sv", "info"]);
    assert_eq!(field(&after, "totalram"), 256 << 20, "still answering: {after}");
    assert_eq!(server_of(&c), server);
}

/// Bad pointers: EFAULT, as runc's container gets from the kernel (an unmapped page, NULL, a
/// read-only page, which is left unwritten); the supervisor answers the next call.
#[test]
fn supervisor_bad_pointers_get_efault() {
    if skip() {
        return;
    }
    let vol = format!("{}:/t:ro", probe_dir().display());
    let runc = ok(d(&["run", "--rm", "--runtime", "runc", "-v", &vol, BUSYBOX, "/t/sv", "badptr"]));
    assert_eq!(runc.trim(), "badptr EFAULT EFAULT EFAULT");
    let c = start("sv-badptr", &[], &["sleep", "100000"]);
    let server = server_of(&c);
    assert_eq!(exec(&c, &["/t/sv", "badptr"]).trim(), runc.trim());
    assert_eq!(field(&exec(&c, &["/t/sv", "info"]), "totalram"), 256 << 20);
    assert_eq!(server_of(&c), server);
}

/// `fuse-serve` killed: the container's trapped calls fail at once with ENOSYS (the kernel's
/// answer when the listener is gone), none hangs, `docker exec` still works, and the container
/// is still removed.
#[test]
fn supervisor_killed_trapped_calls_fail_fast() {
    if skip() {
        return;
    }
    let go = std::env::temp_dir().join(format!("nestrun-escape-sv-go-{}", std::process::id()));
    std::fs::create_dir_all(&go).unwrap();
    let bind = format!("{}:/go:ro", go.display());
    let script = "while [ ! -e /go/go ]; do sleep 0.1; done; /t/sv info; /t/sv bench 10; echo end; sleep 100000";
    let c = start("sv-dead", &["-v", &bind], &["sh", "-c", script]);
    let server = server_of(&c);
    kill_server(server);
    std::fs::write(go.join("go"), "").unwrap();
    let t = Instant::now();
    let mut logs = String::new();
    let done = wait_until(20, || {
        logs = ok(d(&["logs", &c.0]));
        logs.contains("end")
    });
    assert!(done, "the container's trapped calls hang without the supervisor (after {:?}): {logs:?}", t.elapsed());
    assert!(logs.contains("sysinfo ENOSYS") && logs.contains("bench sysinfo ENOSYS"), "{logs:?}");
    // An exec still runs (its filter's fd has nowhere to go: closed, libcontainer patch 14),
    // and its trapped calls fail the same way.
    let o = run(d(&["exec", &c.0, "/t/sv", "info"]));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "sysinfo ENOSYS", "docker exec after the supervisor died: {}", String::from_utf8_lossy(&o.stderr));
    let t = Instant::now();
    ok(d(&["rm", "-f", &c.0]));
    assert!(t.elapsed() < Duration::from_secs(60), "docker rm -f took {:?}", t.elapsed());
    let _ = std::fs::remove_dir_all(&go);
}
