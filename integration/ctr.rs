//! containerd through `ctr`, with nestrun as the runc binary of the runc v2 shim.
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// The image scripts/containerd.sh imports (`docker save` names become docker.io/...).
const CTR_IMAGE: &str = "docker.io/nestrun-test/busybox:latest";

fn address() -> String {
    std::env::var("CONTAINERD_ADDRESS").unwrap_or_else(|_| "/run/nestrun-test/containerd.sock".into())
}

fn namespace() -> String {
    std::env::var("CONTAINERD_NAMESPACE").unwrap_or_else(|_| "nestrun".into())
}

fn ctr(args: &[&str]) -> Out {
    let mut c = Command::new("ctr");
    c.arg("--address").arg(address()).arg("-n").arg(namespace()).args(args);
    run_cmd(c, Duration::from_secs(120))
}


/// Removes the task and container (and its snapshot) on drop.
struct CtrGuard(String);

impl Drop for CtrGuard {
    fn drop(&mut self) {
        let _ = ctr(&["task", "kill", "-s", "SIGKILL", &self.0]);
        let _ = ctr(&["task", "delete", "-f", &self.0]);
        let _ = ctr(&["container", "delete", &self.0]);
    }
}

#[test]
fn ctr_run_echo() {
    need_engines!("ctr_run_echo");
    let id = unique("ctr-echo");
    let _g = CtrGuard(id.clone());
    let bin = nestrun_bin();
    let o = ctr(&["run", "--rm", "--runc-binary", &bin, CTR_IMAGE, &id, "echo", "hi"]).ok();
    assert_eq!(o.out(), "hi", "stderr: {}", o.stderr);
}

#[test]
fn ctr_run_is_a_system_container() {
    need_engines!("ctr_run_is_a_system_container");
    let id = unique("ctr-uidmap");
    let _g = CtrGuard(id.clone());
    let bin = nestrun_bin();
    let o = ctr(&["run", "--rm", "--runc-binary", &bin, CTR_IMAGE, &id, "sh", "-c", "cat /proc/self/uid_map; echo code; exit 5"]);
    assert_eq!(o.code, 5, "exit code should propagate through the shim: {o:?}");
    let f: Vec<u64> = o.stdout.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
    assert_eq!(f.len(), 3, "uid_map: {:?}", o.stdout);
    assert_eq!(f[0], 0);
    assert!(f[1] >= POOL_START as u64, "container root should map to the subid pool, got {:?}", o.stdout);
    assert_eq!(f[2], 65536);
}

#[test]
fn ctr_detached_task_exec() {
    need_engines!("ctr_detached_task_exec");
    let id = unique("ctr-exec");
    let _g = CtrGuard(id.clone());
    let bin = nestrun_bin();
    ctr(&["run", "-d", "--runc-binary", &bin, CTR_IMAGE, &id, "sleep", "100000"]).ok();
    let o = ctr(&["task", "exec", "--exec-id", "e1", &id, "sh", "-c", "echo from-exec; id -u"]).ok();
    assert_eq!(o.out(), "from-exec\n0");
    let o = ctr(&["task", "ps", &id]).ok();
    assert!(o.stdout.lines().count() >= 2, "task ps should list the init: {}", o.stdout);
    ctr(&["task", "kill", "-s", "SIGKILL", &id]).ok();
    assert!(wait_for(20, || ctr(&["task", "ls"]).stdout.lines().any(|l| l.starts_with(&id) && l.contains("STOPPED"))), "task did not stop after SIGKILL");
}
