//! podman with `--runtime nestrun`, in a private storage root (the system's is not touched).
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::util::*;

const ROOT: &str = "/var/lib/nestrun-test/podman";
const RUNROOT: &str = "/run/nestrun-test/podman";
pub(crate) const IMAGE: &str = "localhost/nestrun-test/busybox:latest";

pub(crate) fn podman(args: &[&str]) -> Out {
    let mut c = Command::new("podman");
    c.args(["--root", ROOT, "--runroot", RUNROOT, "--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
    c.args(["--runtime", env!("CARGO_BIN_EXE_nestrun")]);
    c.args(args);
    run_cmd(c, Duration::from_secs(120))
}

/// Load the busybox image from the test dockerd once (podman load is not concurrency-safe
/// with itself on a fresh store).
pub(crate) fn ensure_image() {
    static LOADED: Mutex<bool> = Mutex::new(false);
    let mut done = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    if podman(&["image", "exists", IMAGE]).code != 0 {
        let dir = tempdir("podman-img");
        let tar = dir.path.join("busybox.tar");
        docker(&["save", "-o", tar.to_str().unwrap(), BUSYBOX]).ok();
        podman(&["load", "-i", tar.to_str().unwrap()]).ok();
    }
    *done = true;
}

struct PodGuard(String);

impl Drop for PodGuard {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.0]);
    }
}

#[test]
fn podman_run_echo() {
    need_engines!("podman_run_echo");
    ensure_image();
    let name = unique("podman-echo");
    let _g = PodGuard(name.clone());
    let o = podman(&["run", "--rm", "--name", &name, IMAGE, "echo", "hi"]).ok();
    assert_eq!(o.out(), "hi", "stderr: {}", o.stderr);
    let o = podman(&["run", "--rm", IMAGE, "sh", "-c", "cat /proc/self/uid_map; exit 4"]);
    assert_eq!(o.code, 4, "exit code should propagate: {o:?}");
    let f: Vec<u64> = o.stdout.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
    assert!(f.len() == 3 && f[0] == 0 && f[1] >= POOL_START as u64 && f[2] == 65536, "uid_map under podman: {:?}", o.stdout);
}

#[test]
fn podman_exec() {
    need_engines!("podman_exec");
    ensure_image();
    let name = unique("podman-exec");
    let _g = PodGuard(name.clone());
    podman(&["run", "-d", "--name", &name, IMAGE, "sleep", "100000"]).ok();
    let o = podman(&["exec", &name, "sh", "-c", "echo from-exec; id -u"]).ok();
    assert_eq!(o.out(), "from-exec\n0");
    assert_eq!(podman(&["exec", &name, "sh", "-c", "exit 6"]).code, 6, "podman exec exit code");
    podman(&["stop", "-t", "1", &name]).ok();
}
