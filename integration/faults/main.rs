//! Fault and leak suite, driving the built binary directly (root only; no engine needed):
//! `kill -9` of `create` at every named step, then `delete`, must leave nothing behind; and
//! repeated full lifecycles must not leak. NESTRUN_LONG=1 runs 200 lifecycles instead of 10.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

struct Env {
    dir: PathBuf,
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
        Env { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// Run the binary with stdout/stderr in files: a created container's init inherits the
    /// creator's stdio (as with runc), so pipes would stay open until the container exits.
    fn nestrun(&self, args: &[&str], fault: Option<&str>) -> Output {
        let (out_p, err_p) = (self.dir.join("stdout"), self.dir.join("stderr"));
        let mut c = Command::new(BIN);
        c.arg("--root").arg(self.root()).args(args);
        c.stdin(std::process::Stdio::null());
        c.stdout(std::fs::File::create(&out_p).unwrap()).stderr(std::fs::File::create(&err_p).unwrap());
        if let Some(f) = fault {
            c.env("NESTRUN_FAULT_AT", f);
        }
        let status = c.status().unwrap();
        Output { status, stdout: std::fs::read(&out_p).unwrap_or_default(), stderr: std::fs::read(&err_p).unwrap_or_default() }
    }

    fn create(&self, id: &str, fault: Option<&str>) -> Output {
        let bundle = self.dir.join("bundle");
        self.nestrun(&["create", "--bundle", bundle.to_str().unwrap(), id], fault)
    }

    /// Everything nestrun may make for `id`, that must be gone.
    fn leftovers(&self, id: &str) -> Vec<String> {
        let mut found = Vec::new();
        let root = self.root();
        if let Ok(rd) = std::fs::read_dir(&root) {
            found.extend(rd.flatten().map(|e| format!("state entry {}", e.path().display())));
        }
        let prefix = format!("{id}-");
        for base in ["/run/nestrun-mnt", "/var/lib/nestrun/data"] {
            if let Ok(rd) = std::fs::read_dir(base) {
                found.extend(rd.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).map(|e| format!("dir {}", e.path().display())));
            }
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        found.extend(mountinfo.lines().filter(|l| l.contains(&format!("/{prefix}"))).map(|l| format!("mount {l}")));
        if let Ok(rd) = std::fs::read_dir("/run/nestrun-subid") {
            for e in rd.flatten() {
                let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
                if owner.starts_with(root.to_str().unwrap()) {
                    found.push(format!("lease {} -> {owner}", e.path().display()));
                }
            }
        }
        for ctrl in ["memory", "pids", "cpu", "systemd", "freezer"] {
            let p = Path::new("/sys/fs/cgroup").join(ctrl).join("nestrun").join(id);
            if p.exists() {
                found.push(format!("cgroup {}", p.display()));
            }
        }
        let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
        found.extend(String::from_utf8_lossy(&ps.stdout).lines().filter(|l| l.contains("fuse-serve") && l.contains(&format!("/nestrun/{id}"))).map(|l| format!("process {l}")));
        found
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn kill_9_at_every_create_step_then_delete_leaves_nothing() {
    if !is_root() {
        eprintln!("skipped: the fault suite needs root");
        return;
    }
    let env = Env::new("kill9");
    for point in POINTS {
        let id = format!("f-{point}-{}", std::process::id());
        let out = env.create(&id, Some(point));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(9), "create with NESTRUN_FAULT_AT={point} was not killed: {out:?}");
        let del = env.nestrun(&["delete", &id], None);
        assert!(del.status.success(), "delete after a kill at {point}: {}", String::from_utf8_lossy(&del.stderr));
        let left = env.leftovers(&id);
        assert!(left.is_empty(), "after kill -9 at {point} and delete, left behind:\n{}", left.join("\n"));
    }
}

#[test]
fn lifecycles_do_not_leak() {
    if !is_root() {
        eprintln!("skipped: the fault suite needs root");
        return;
    }
    let n = if std::env::var("NESTRUN_LONG").is_ok() { 200 } else { 10 };
    let env = Env::new("cycles");
    for i in 0..n {
        let id = format!("cyc-{i}-{}", std::process::id());
        let out = env.create(&id, None);
        assert!(out.status.success(), "create #{i}: {}", String::from_utf8_lossy(&out.stderr));
        let state: serde_json::Value = serde_json::from_slice(&env.nestrun(&["state", &id], None).stdout).unwrap();
        assert_eq!(state["status"], "created", "#{i}: {state}");
        if i % 2 == 0 {
            assert!(env.nestrun(&["start", &id], None).status.success());
            assert!(env.nestrun(&["kill", &id, "KILL"], None).status.success());
        }
        let del = env.nestrun(&["delete", "--force", &id], None);
        assert!(del.status.success(), "delete #{i}: {}", String::from_utf8_lossy(&del.stderr));
        let left = env.leftovers(&id);
        assert!(left.is_empty(), "lifecycle #{i} left behind:\n{}", left.join("\n"));
    }
}
