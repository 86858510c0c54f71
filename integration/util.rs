//! Shared helpers: running commands with a timeout, the docker client, container guards,
//! direct-CLI bundles and host-side leftover checks.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The private test dockerd of scripts/dockerd.sh, unless DOCKER_HOST says otherwise.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///run/nestrun-test/docker.sock";
pub const BUSYBOX: &str = "nestrun-test/busybox:latest";
pub const DIND: &str = "nestrun-test/dind:latest";
/// First host uid of nestrun's subordinate id pool (/etc/subuid entry `nestrun`).
pub const POOL_START: u32 = 1_048_576;

/// True when the engines and images of scripts/test are there. Otherwise prints the skip line.
pub fn engines(test: &str) -> bool {
    if std::env::var_os("NESTRUN_TEST_IMAGES").is_some_and(|v| !v.is_empty() && v != "0") {
        return true;
    }
    println!("{test}: skipped: run scripts/test (needs the private dockerd/containerd and test images; NESTRUN_TEST_IMAGES is unset)");
    false
}

/// Early-return from a test when the engines are not set up.
#[macro_export]
macro_rules! need_engines {
    ($name:expr) => {
        if !$crate::util::engines($name) {
            return;
        }
    };
}

/// A unique name for a container of this test process.
pub fn unique(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("nt-{}-{}-{}", test.replace('_', "-"), std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// What a command did.
#[derive(Debug)]
pub struct Out {
    pub cmd: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Out {
    pub fn ok(self) -> Out {
        assert!(self.code == 0, "`{}` failed with exit code {}\nstdout: {}\nstderr: {}", self.cmd, self.code, self.stdout, self.stderr);
        self
    }
    pub fn fails(self) -> Out {
        assert!(self.code != 0, "`{}` should have failed but exited 0\nstdout: {}\nstderr: {}", self.cmd, self.stdout, self.stderr);
        self
    }
    pub fn out(&self) -> &str {
        self.stdout.trim()
    }
}

/// Run a command with stdout/stderr going to files (so a daemonized child holding them does
/// not block us), killed after `timeout`.
pub fn run_cmd(mut cmd: Command, timeout: Duration) -> Out {
    let desc = format!("{} {}", cmd.get_program().to_string_lossy(), cmd.get_args().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
    let dir = tempdir("out");
    let (o, e) = (dir.path.join("stdout"), dir.path.join("stderr"));
    cmd.stdin(Stdio::null()).stdout(std::fs::File::create(&o).unwrap()).stderr(std::fs::File::create(&e).unwrap());
    let start = std::time::Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|err| panic!("cannot run `{desc}`: {err}"));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{desc}` did not finish within {timeout:?}\nstdout: {}\nstderr: {}", read(&o), read(&e));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Out { cmd: desc, code, stdout: read(&o), stderr: read(&e), elapsed: start.elapsed() }
}

fn read(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_DOCKER_HOST.to_string())
}

/// `/usr/bin/docker` (the 20.10 client that matches the daemon) against the test dockerd.
pub fn docker_cmd(args: &[&str]) -> Command {
    let mut c = Command::new("/usr/bin/docker");
    c.env("DOCKER_HOST", docker_host()).args(args);
    c
}

pub fn docker(args: &[&str]) -> Out {
    run_cmd(docker_cmd(args), Duration::from_secs(180))
}

/// A container removed with `docker rm -f` when dropped.
pub struct Ctr {
    pub name: String,
}

impl Ctr {
    /// `docker run -d --runtime nested --name <unique> <extra...>`; panics with stderr on failure.
    pub fn start(test: &str, extra: &[&str]) -> Ctr {
        let c = Ctr { name: unique(test) };
        let mut args = vec!["run", "-d", "--runtime", "nested", "--name", &c.name];
        args.extend_from_slice(extra);
        docker(&args).ok();
        c
    }
    /// A busybox container sleeping forever.
    pub fn sleeper(test: &str) -> Ctr {
        Ctr::start(test, &[BUSYBOX, "sleep", "100000"])
    }
    pub fn exec(&self, cmd: &[&str]) -> Out {
        let mut args = vec!["exec", &self.name];
        args.extend_from_slice(cmd);
        docker(&args)
    }
    pub fn sh(&self, script: &str) -> Out {
        self.exec(&["sh", "-c", script])
    }
    pub fn inspect(&self, format: &str) -> String {
        docker(&["inspect", "-f", format, &self.name]).ok().out().to_string()
    }
    pub fn id(&self) -> String {
        self.inspect("{{.Id}}")
    }
    pub fn pid(&self) -> i32 {
        let p: i32 = self.inspect("{{.State.Pid}}").parse().expect("numeric pid");
        assert!(p > 0, "container {} has no pid (not running?)", self.name);
        p
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = run_cmd(docker_cmd(&["rm", "-f", "-v", &self.name]), Duration::from_secs(120));
    }
}

/// A temporary directory removed (after unmounting nothing: tests must clean up) on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn tempdir(tag: &str) -> TempDir {
    static N: AtomicU32 = AtomicU32::new(0);
    // Not /tmp: may be tmpfs or noexec; a real disk under target/ works everywhere.
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = base.join(format!("{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    TempDir { path }
}

// ---- host-side views ----------------------------------------------------------------------

/// The first line of /proc/<pid>/uid_map as (inside, outside, count).
pub fn uid_map(pid: i32) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_else(|e| panic!("read uid_map of {pid}: {e}"));
    let f: Vec<u64> = text.split_whitespace().take(3).map(|x| x.parse().unwrap()).collect();
    (f[0], f[1], f[2])
}

/// Real uid of a host process, if it exists.
pub fn proc_uid(pid: i32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Host pids whose real uid is in [start, start+len).
pub fn pids_in_uid_range(start: u64, len: u64) -> Vec<i32> {
    let mut v = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
            if let Some(u) = proc_uid(pid) {
                if (u as u64) >= start && (u as u64) < start + len {
                    v.push(pid);
                }
            }
        }
    }
    v
}

/// Mount points (from our mountinfo) that contain `needle`.
pub fn mounts_containing(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.contains(needle))
        .map(String::from)
        .collect()
}

/// Entries of `dir` whose name starts with `prefix`.
pub fn entries_with_prefix(dir: &str, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(prefix)).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Lease files in /run/nestrun-subid whose owner (the file's content) contains `needle`.
pub fn leases_naming(needle: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/run/nestrun-subid")
        .map(|rd| rd.flatten().filter(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default()).contains(needle)).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Existing cgroup dirs /sys/fs/cgroup/<controller>/<rel> for every v1 controller (and v2 unified).
pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let mut v = vec![];
    for e in std::fs::read_dir("/sys/fs/cgroup").map(|r| r.flatten().collect::<Vec<_>>()).unwrap_or_default() {
        let p = e.path().join(rel.trim_start_matches('/'));
        if p.is_dir() && !e.path().is_symlink() {
            v.push(p);
        }
    }
    v
}

/// Poll `f` until it returns true or `secs` pass.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
