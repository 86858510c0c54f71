//! Fault and leak suite, driving the built binary directly (root only; no engine needed):
//! `kill -9` of `create` at every named step, then `delete`, must leave nothing behind; and
//! repeated full lifecycles must not leak. NESTRUN_LONG=1 runs 200 lifecycles instead of 10.
//! `limits.rs`: a full uid pool, a full data-dir file system. `crashes.rs`: `delete` killed,
//! the FUSE server killed, a crashed container re-created, racing creates of one id.
//! Every test has its own temp dir, state root and pid-based ids; tests that change the uid
//! pool use their own subuid files, lease dir and host ids (clear of the default pool).
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "../skip.rs"]
mod skip_log;
mod crashes;
mod fallback;
mod limits;

const BIN: &str = env!("CARGO_BIN_EXE_nestrun");
const POINTS: &[&str] = &["sidecar", "lease", "cgroup", "rootfs", "datadirs", "created", "fuse"];

fn is_root() -> bool {
    nix_uid() == 0
}

fn nix_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:").and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap_or(1)
}

/// Skip (with a note) when not root.
macro_rules! need_root {
    () => {
        if !crate::is_root() {
            crate::skip_log::skip("root", "faults", "the fault suite needs root");
            return;
        }
    };
}
pub(crate) use need_root;

struct Env {
    dir: PathBuf,
    root: PathBuf,
    /// Extra environment for every nestrun run (NESTRUN_SUBUID, NESTRUN_LEASE_DIR, ...).
    vars: Vec<(&'static str, OsString)>,
    seq: AtomicUsize,
    /// Ids ever created here: deleted (--force) when a test fails, so a failure leaks nothing.
    ids: std::sync::Mutex<Vec<String>>,
}

impl Env {
    fn new(name: &str) -> Env {
        let dir = std::env::temp_dir().join(format!("nestrun-faults-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rootfs = dir.join("bundle/rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static is installed (scripts/install-deps.sh)");
        for a in ["sh", "sleep", "true", "cat"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        let out = Command::new(BIN).args(["spec", "--bundle"]).arg(dir.join("bundle")).output().unwrap();
        assert!(out.status.success(), "spec: {}", String::from_utf8_lossy(&out.stderr));
        let cfg = dir.join("bundle/config.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
        v["process"]["terminal"] = false.into();
        v["process"]["args"] = serde_json::json!(["sleep", "30"]);
        std::fs::write(&cfg, v.to_string()).unwrap();
        Env { root: dir.join("root"), dir, vars: Vec::new(), seq: AtomicUsize::new(0), ids: Default::default() }
    }

    fn root(&self) -> PathBuf {
        self.root.clone()
    }

    fn var(mut self, name: &'static str, value: impl Into<OsString>) -> Env {
        self.vars.push((name, value.into()));
        self
    }

    /// A directory nestrun uses: the env override of this suite, else the default.
    fn dir_of(&self, var: &str, default: &str) -> PathBuf {
        self.vars.iter().find(|(n, _)| *n == var).map_or_else(|| PathBuf::from(default), |(_, v)| PathBuf::from(v))
    }

    /// A private uid pool of `ranges` ranges at `start` (subuid and subgid files in the temp
    /// dir) with its own lease dir.
    fn private_pool(self, start: u64, ranges: u64) -> Env {
        let (u, g, l) = (self.dir.join("subuid"), self.dir.join("subgid"), self.dir.join("leases"));
        for f in [&u, &g] {
            std::fs::write(f, format!("nestrun:{start}:{}\n", ranges * 65536)).unwrap();
        }
        self.var("NESTRUN_SUBUID", u).var("NESTRUN_SUBGID", g).var("NESTRUN_LEASE_DIR", l)
    }

    /// Run the binary with stdout/stderr in files: a created container's init inherits the
    /// creator's stdio (as with runc), so pipes would stay open until the container exits.
    /// The files are per run, so threads may run it at once.
    fn nestrun(&self, args: &[&str], fault: Option<&str>) -> Output {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        let (out_p, err_p) = (self.dir.join(format!("stdout.{n}")), self.dir.join(format!("stderr.{n}")));
        let mut c = Command::new(BIN);
        c.arg("--root").arg(self.root()).args(args);
        c.stdin(std::process::Stdio::null());
        c.stdout(std::fs::File::create(&out_p).unwrap()).stderr(std::fs::File::create(&err_p).unwrap());
        c.envs(self.vars.iter().map(|(k, v)| (k, v)));
        if let Some(f) = fault {
            c.env("NESTRUN_FAULT_AT", f);
        }
        let status = c.status().unwrap();
        let out = Output { status, stdout: std::fs::read(&out_p).unwrap_or_default(), stderr: std::fs::read(&err_p).unwrap_or_default() };
        let _ = (std::fs::remove_file(out_p), std::fs::remove_file(err_p));
        out
    }

    fn create(&self, id: &str, fault: Option<&str>) -> Output {
        let mut ids = self.ids.lock().unwrap();
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_string());
        }
        drop(ids);
        let bundle = self.dir.join("bundle");
        self.nestrun(&["create", "--bundle", bundle.to_str().unwrap(), id], fault)
    }

    fn create_ok(&self, id: &str) {
        let out = self.create(id, None);
        assert!(out.status.success(), "create {id}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn delete_ok(&self, id: &str, force: bool) {
        let args: Vec<&str> = if force { vec!["delete", "--force", id] } else { vec!["delete", id] };
        let out = self.nestrun(&args, None);
        assert!(out.status.success(), "delete {id} (force: {force}): {}", String::from_utf8_lossy(&out.stderr));
    }

    fn state(&self, id: &str) -> serde_json::Value {
        let out = self.nestrun(&["state", id], None);
        assert!(out.status.success(), "state {id}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The pid of the container's init (from `state`).
    fn init_pid(&self, id: &str) -> i32 {
        let s = self.state(id);
        s["pid"].as_i64().filter(|p| *p > 0).unwrap_or_else(|| panic!("no pid in state of {id}: {s}")) as i32
    }

    fn assert_clean(&self, id: &str, after: &str) {
        let left = self.leftovers(id);
        assert!(left.is_empty(), "{after}, left behind:\n{}", left.join("\n"));
    }

    /// With no container left, the state root must be empty (no `.nestrun` either).
    fn assert_root_empty(&self, after: &str) {
        let left: Vec<String> = std::fs::read_dir(self.root()).into_iter().flatten().flatten().map(|e| e.path().display().to_string()).collect();
        assert!(left.is_empty(), "{after}, left in the state root:\n{}", left.join("\n"));
    }

    /// Everything nestrun may make for `id`, that must be gone.
    fn leftovers(&self, id: &str) -> Vec<String> {
        let mut found = Vec::new();
        let root = self.root();
        for p in [root.join(id), root.join(".nestrun").join(id)] {
            if p.symlink_metadata().is_ok() {
                found.push(format!("state entry {}", p.display()));
            }
        }
        let prefix = format!("{id}-");
        for base in [self.dir_of("NESTRUN_MNT_DIR", "/run/nestrun-mnt"), self.dir_of("NESTRUN_DATA_DIR", "/var/lib/nestrun/data")] {
            if let Ok(rd) = std::fs::read_dir(base) {
                found.extend(rd.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).map(|e| format!("dir {}", e.path().display())));
            }
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        found.extend(mountinfo.lines().filter(|l| l.contains(&format!("/{prefix}"))).map(|l| format!("mount {l}")));
        if let Ok(rd) = std::fs::read_dir(self.dir_of("NESTRUN_LEASE_DIR", "/run/nestrun-subid")) {
            for e in rd.flatten() {
                let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
                if owner.starts_with(root.to_str().unwrap()) && owner.ends_with(&format!("/{id}")) {
                    found.push(format!("lease {} -> {owner}", e.path().display()));
                }
            }
        }
        for ctrl in ["memory", "pids", "cpu", "cpuacct", "blkio", "devices", "cpuset", "systemd", "freezer", "unified"] {
            let p = Path::new("/sys/fs/cgroup").join(ctrl).join("nestrun").join(id);
            if p.exists() {
                found.push(format!("cgroup {}", p.display()));
            }
        }
        found.extend(fuse_servers(id).into_iter().map(|p| format!("fuse-serve process {p}")));
        found
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A state root a test moved away (crashes.rs) comes back to be deleted from.
            let gone = self.dir.join("root.gone");
            if gone.exists() && !self.root.exists() {
                let _ = std::fs::rename(&gone, &self.root);
            }
            for id in std::mem::take(&mut *self.ids.lock().unwrap_or_else(|e| e.into_inner())) {
                let _ = self.nestrun(&["delete", "--force", &id], None);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Pids of the live `fuse-serve` processes of container `id` (its cgroup path is in the args).
fn fuse_servers(id: &str) -> Vec<i32> {
    let arg = format!("--cgroup-path=/nestrun/{id}");
    let ps = Command::new("ps").args(["-eo", "pid=,stat=,args="]).output().unwrap();
    String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let live = f.get(1).is_some_and(|s| !s.starts_with('Z'));
            (live && f.contains(&"fuse-serve") && f.contains(&arg.as_str())).then(|| f[0].parse().ok()).flatten()
        })
        .collect()
}

fn kill9(pid: i32) {
    let st = Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(st.success(), "kill -9 {pid}");
}

/// Wait (up to 5 s) until `pid` is gone or a zombie.
fn wait_dead(pid: i32) {
    for _ in 0..500 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z') {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("process {pid} still alive 5 s after kill -9");
}

/// A failed run's error: exactly one line on stderr, which is returned.
fn one_line_error(out: &Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: not one line of error:\n{err}");
    lines[0].to_string()
}

#[test]
fn kill_9_at_every_create_step_then_delete_leaves_nothing() {
    need_root!();
    let env = Env::new("kill9");
    for point in POINTS {
        let id = format!("f-{point}-{}", std::process::id());
        let out = env.create(&id, Some(point));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(9), "create with NESTRUN_FAULT_AT={point} was not killed: {out:?}");
        let del = env.nestrun(&["delete", &id], None);
        assert!(del.status.success(), "delete after a kill at {point}: {}", String::from_utf8_lossy(&del.stderr));
        env.assert_clean(&id, &format!("after kill -9 at {point} and delete"));
        env.assert_root_empty(&format!("after kill -9 at {point} and delete"));
    }
}

#[test]
fn lifecycles_do_not_leak() {
    need_root!();
    let n = if std::env::var("NESTRUN_LONG").is_ok() { 200 } else { 10 };
    let env = Env::new("cycles");
    for i in 0..n {
        let id = format!("cyc-{i}-{}", std::process::id());
        let out = env.create(&id, None);
        assert!(out.status.success(), "create #{i}: {}", String::from_utf8_lossy(&out.stderr));
        let state = env.state(&id);
        assert_eq!(state["status"], "created", "#{i}: {state}");
        if i % 2 == 0 {
            assert!(env.nestrun(&["start", &id], None).status.success());
            assert!(env.nestrun(&["kill", &id, "KILL"], None).status.success());
        }
        let del = env.nestrun(&["delete", "--force", &id], None);
        assert!(del.status.success(), "delete #{i}: {}", String::from_utf8_lossy(&del.stderr));
        env.assert_clean(&id, &format!("lifecycle #{i}"));
        env.assert_root_empty(&format!("lifecycle #{i}"));
    }
}
