//! systemd as the container's init (nestrun-test/systemd: Debian bookworm with systemd, dbus and
//! docker.io, docker.service enabled, CMD /sbin/init, STOPSIGNAL SIGRTMIN+3): it boots to
//! `running` (or `degraded`, with docker.service active), the inner dockerd runs containers,
//! `docker stop` ends it, and after its init is SIGKILLed from the host it boots again with nothing
//! stale, and `docker rm -f` leaves nothing on the host.
use std::time::{Duration, Instant};

use crate::util::*;

const SYSTEMD: &str = "nestrun-test/systemd:latest";

fn need_image() {
    let o = docker(&["image", "inspect", "-f", "{{.Id}}", SYSTEMD]);
    assert!(o.code == 0, "{SYSTEMD} is missing from {}: scripts/build-images.sh builds it with debootstrap (needs the Debian mirror once; see its warnings)\n{}", docker_host(), o.stderr);
}

/// Wait (up to `secs`) until `systemctl is-system-running --wait` says running or degraded.
/// It fails at once while dbus is not up yet, so retry. Returns the final state.
fn wait_booted(c: &Ctr, secs: u64) -> String {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(secs) {
        let left = secs.saturating_sub(start.elapsed().as_secs()).max(1).to_string();
        let o = run_cmd(docker_cmd(&["exec", &c.name, "timeout", &left, "systemctl", "is-system-running", "--wait"]), Duration::from_secs(secs + 30));
        last = format!("{} {}", o.out(), o.stderr.trim());
        match o.out() {
            "running" | "degraded" => {
                println!("{}: systemd {} after {:.1?}", c.name, o.out(), start.elapsed());
                return o.out().to_string();
            }
            // "offline": systemctl cannot reach PID 1 yet (early boot on a loaded machine): retry.
            "stopping" => break,
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    let journal = c.sh("journalctl -b --no-pager | tail -n 40");
    let failed = c.exec(&["systemctl", "--failed", "--no-pager"]);
    let logs = docker(&["logs", "--tail", "40", &c.name]);
    panic!(
        "{}: systemd did not reach running/degraded within {secs} s (last: {last:?})\nsystemctl --failed:\n{}{}\njournal:\n{}{}\ndocker logs:\n{}{}",
        c.name, failed.stdout, failed.stderr, journal.stdout, journal.stderr, logs.stdout, logs.stderr
    );
}

/// Booted, docker.service active (printing the failed units when degraded), and the inner dockerd
/// runs a container from the baked-in busybox image.
fn assert_booted_with_dockerd(c: &Ctr) {
    let state = wait_booted(c, 60);
    if state == "degraded" {
        let f = c.exec(&["systemctl", "--failed", "--no-pager"]);
        println!("{}: degraded; systemctl --failed:\n{}", c.name, f.stdout);
    }
    let o = c.exec(&["systemctl", "is-active", "docker"]);
    assert_eq!(o.out(), "active", "docker.service should be active: {o:?}\n{}", c.exec(&["systemctl", "status", "--no-pager", "docker"]).stdout);
    // the oneshot unit that loads busybox is part of the boot transaction, so it is done
    let hi = c.exec(&["docker", "run", "--rm", "busybox", "echo", "hi"]);
    assert!(hi.code == 0 && hi.out() == "hi", "inner docker run failed: {hi:?}\n{}", c.sh("journalctl -u docker -u containerd --no-pager | tail -n 30").stdout);
}

fn running(c: &Ctr) -> bool {
    c.inspect("{{.State.Running}}") == "true"
}

#[test]
fn systemd_boots_with_dockerd_and_stops() {
    need_engines!("systemd_boots_with_dockerd_and_stops");
    need_image();
    let c = Ctr::start("systemd", &[SYSTEMD]);
    assert_booted_with_dockerd(&c);
    let env = c.sh("tr '\\0' '\\n' </proc/1/environ | grep ^container=").ok();
    assert_eq!(env.out(), "container=nestrun");
    let start = Instant::now();
    docker(&["stop", &c.name]).ok();
    let took = start.elapsed();
    let code = c.inspect("{{.State.ExitCode}}");
    println!("{}: docker stop took {took:.1?}, exit code {code}", c.name);
    assert!(took < Duration::from_secs(15), "docker stop took {took:?}");
    assert!(!running(&c));
    if code == "137" {
        println!("{}: note: docker stop fell back to SIGKILL: the runtime rejected SIGRTMIN+3 (see systemd_stop_signal_halts_cleanly)", c.name);
    }
}

/// systemd halts on SIGRTMIN+3 (the image's STOPSIGNAL): its reboot(2) in the PID namespace ends
/// init with SIGINT, so docker reports 130. 137 means docker had to SIGKILL it.
#[test]
fn systemd_stop_signal_halts_cleanly() {
    need_engines!("systemd_stop_signal_halts_cleanly");
    need_image();
    let c = Ctr::start("systemd-stop", &[SYSTEMD]);
    wait_booted(&c, 60);
    docker(&["stop", &c.name]).ok();
    assert_eq!(c.inspect("{{.State.ExitCode}}"), "130", "systemd should halt on SIGRTMIN+3 (exit by SIGINT), not be killed");
}

// ---- host-side leftovers: util.rs's traces(), as system.rs checks them ----------------------

fn range_start(c: &Ctr) -> u64 {
    let (inside, outside, count) = uid_map(c.pid());
    assert_eq!((inside, count), (0, 65536), "uid_map of {}", c.name);
    assert!(outside >= POOL_START as u64);
    outside
}

/// One running instance: exactly one of each per-container thing on the host.
fn assert_single_instance(id: &str) {
    let t = traces(id);
    assert!(t.mnt_dirs.len() == 1 && t.leases.len() == 1 && t.data.len() == 1 && t.fuse_servers.len() == 1 && !t.mounts.is_empty() && !t.cgroups.is_empty(), "a running container should have one mount dir, lease, data dir and FUSE server:\n{}", format!("{t:#?}"));
}

#[test]
fn systemd_boots_again_after_init_is_killed() {
    need_engines!("systemd_boots_again_after_init_is_killed");
    need_image();
    let c = Ctr::start("systemd-crash", &[SYSTEMD]);
    assert_booted_with_dockerd(&c);
    let id = c.id();
    assert_single_instance(&id);
    // state that must not survive a boot: /run is a tmpfs, inner containers die with it
    c.sh("touch /run/nestrun-stale-marker").ok();
    c.exec(&["docker", "run", "-d", "--name", "inner", "busybox", "sleep", "100000"]).ok();

    // crash: SIGKILL to init from the host (no shutdown at all)
    let pid = c.pid();
    let start = range_start(&c);
    nix_kill9(pid);
    assert!(wait_for(20, || !running(&c)), "container still running 20 s after kill -9 of its init {pid}");
    assert_eq!(c.inspect("{{.State.ExitCode}}"), "137");
    // the engine deleted the task: nothing of it is left before the restart but its data dir
    // (kept beside the container's layer, like the layer itself)
    assert!(wait_for(15, || traces(&id).is_empty_but_data()), "after the crash (container exited) the host still has:\n{:#?}", traces(&id));
    assert!(wait_for(10, || own_pids(&id, start).is_empty()), "processes of {id} survived the crash: {:?}", own_pids(&id, start));

    docker(&["start", &c.name]).ok();
    assert_booted_with_dockerd(&c);
    assert_single_instance(&id);
    assert_eq!(c.sh("ls /run/nestrun-stale-marker 2>&1 || true").out(), "ls: cannot access '/run/nestrun-stale-marker': No such file or directory", "/run kept a file from the previous boot");
    let inner = c.exec(&["docker", "ps", "-q", "--filter", "name=inner", "--filter", "status=running"]).ok();
    assert_eq!(inner.out(), "", "an inner container of the crashed boot is running again");
    let failed = c.exec(&["systemctl", "--failed", "--no-legend", "--no-pager"]).ok();
    println!("{}: failed units after the restart: {:?}", c.name, failed.out());

    // and docker rm -f leaves nothing
    let start = range_start(&c);
    let pids = own_pids(&id, start);
    assert!(!pids.is_empty());
    let layer_data = layer_data_dir(&id);
    docker(&["rm", "-f", &c.name]).ok();
    let after = traces(&id);
    assert!(after.is_empty(), "docker rm -f left:\n{after:#?}");
    assert!(layer_data.is_some_and(|d| !d.exists()), "the data dir beside the container's layer outlived docker rm -f");
    assert!(wait_for(5, || own_pids(&id, start).is_empty()), "processes of {id} survived docker rm -f: {:?}", own_pids(&id, start));
}

fn nix_kill9(pid: i32) {
    let o = run_cmd(
        {
            let mut k = std::process::Command::new("kill");
            k.args(["-9", &pid.to_string()]);
            k
        },
        Duration::from_secs(10),
    );
    assert_eq!(o.code, 0, "kill -9 {pid}: {o:?}");
}
