//! Today's engines outside: dockerd 28.5 with containerd 2.1 (Debian sid's, run beside the
//! bookworm test dockerd by scripts/sid-engines.sh) drive nestrun: system containers, plain
//! mode through `docker run --annotation` (docker >= 24 passes annotations), exec, restart,
//! DinD, the ENOSYS rule under docker 28's own seccomp profile, and nothing left after `rm`.
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// The sid CLI against dockerd 28 (None, with the skip line, when scripts/test did not start it).
fn engine(test: &str) -> Option<(String, String)> {
    if !engines(test) {
        return None;
    }
    match (std::env::var("NESTRUN_DOCKER28_HOST"), std::env::var("NESTRUN_DOCKER28_CLI")) {
        (Ok(h), Ok(c)) if !h.is_empty() => Some((h, c)),
        _ => {
            crate::skip::skip("engine", test, "dockerd 28 is not running (scripts/sid-engines.sh start; eval \"$(scripts/sid-engines.sh env)\")");
            None
        }
    }
}

fn d28(e: &(String, String), args: &[&str]) -> Out {
    let mut c = Command::new(&e.1);
    c.args(["-H", &e.0]).args(args);
    run_cmd(c, Duration::from_secs(240))
}

/// `docker rm -f` on drop, through dockerd 28.
struct C28<'a>(&'a (String, String), String);

impl Drop for C28<'_> {
    fn drop(&mut self) {
        let _ = d28(self.0, &["rm", "-f", &self.1]);
    }
}

#[test]
fn docker28_runs_system_and_plain_containers() {
    let Some(e) = engine("docker28_runs_system_and_plain_containers") else { return };
    let sys = d28(&e, &["run", "--rm", "--runtime", "nested", BUSYBOX, "cat", "/proc/self/uid_map"]).ok();
    let f: Vec<u64> = sys.out().split_whitespace().filter_map(|x| x.parse().ok()).collect();
    assert!(f.len() == 3 && f[0] == 0 && f[1] >= POOL_START as u64 && f[2] == 65536, "system container's root is an unprivileged range: {sys:?}");
    let plain = d28(&e, &["run", "--rm", "--runtime", "nested", "--annotation", "io.nestrun.mode=plain", BUSYBOX, "cat", "/proc/self/uid_map"]).ok();
    assert_eq!(plain.out().split_whitespace().collect::<Vec<_>>(), ["0", "0", "4294967295"], "docker 28 passes io.nestrun.mode=plain: {plain:?}");
    let bad = d28(&e, &["run", "--rm", "--runtime", "nested", "--annotation", "io.nestrun.dev.fuse=yes", BUSYBOX, "true"]);
    assert!(bad.code != 0 && bad.stderr.contains("io.nestrun.dev.fuse"), "a bad annotation is refused, naming it: {bad:?}");
}

#[test]
fn docker28_exec_restart_and_nothing_left() {
    let Some(e) = engine("docker28_exec_restart_and_nothing_left") else { return };
    let name = unique("d28");
    let c = C28(&e, name.clone());
    d28(&e, &["run", "-d", "--runtime", "nested", "--name", &name, BUSYBOX, "sleep", "100000"]).ok();
    let id = d28(&e, &["inspect", "-f", "{{.Id}}", &name]).ok().out().to_string();
    assert_eq!(d28(&e, &["exec", &name, "id", "-u"]).ok().out(), "0");
    d28(&e, &["restart", "-t", "1", &name]).ok();
    assert_eq!(d28(&e, &["exec", &name, "sh", "-c", "echo again"]).ok().out(), "again");
    drop(c);
    assert_no_traces(&id);
}

#[test]
fn docker28_dind() {
    let Some(e) = engine("docker28_dind") else { return };
    let name = unique("d28-dind");
    let c = C28(&e, name.clone());
    d28(&e, &["run", "-d", "--runtime", "nested", "--name", &name, DIND]).ok();
    let id = d28(&e, &["inspect", "-f", "{{.Id}}", &name]).ok().out().to_string();
    let w = d28(&e, &["exec", &name, "dind-wait", "120"]);
    assert_eq!(w.code, 0, "inner dockerd under dockerd 28: {w:?}");
    let o = d28(&e, &["exec", &name, "sh", "-c", "docker info -f '{{.Driver}}' && docker run --rm busybox echo inner-ok"]).ok();
    assert_eq!(o.out(), "overlay2\ninner-ok", "{o:?}");
    drop(c);
    assert_no_traces(&id);
}

/// docker 28's profile names syscalls up to 2024's: above them, ENOSYS as under runc.
#[test]
fn docker28_profile_new_syscalls_get_enosys() {
    let Some(e) = engine("docker28_profile_new_syscalls_get_enosys") else { return };
    let dir = crate::seccomp::probe_dir();
    let vol = format!("{}:/t:ro", dir.path.display());
    let cmd = "/t/enosys 999 1000 174";
    let mut outs = Vec::new();
    for runtime in ["runc", "nested"] {
        outs.push(d28(&e, &["run", "--rm", "--runtime", runtime, "-v", &vol, BUSYBOX, "sh", "-c", cmd]).ok().out().to_string());
    }
    assert_eq!(outs[0], "999 ENOSYS\n1000 ENOSYS\n174 EPERM", "runc under docker 28's profile");
    assert_eq!(outs[1], outs[0], "nested answers as runc does");
}
