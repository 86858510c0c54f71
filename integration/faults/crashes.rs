//! Crashes around a container: `delete` killed mid-way, the FUSE server killed under a
//! running container, a container whose processes died without `delete` (and one whose state
//! root vanished), and racing creates of one id.
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::{fuse_servers, kill9, need_root, one_line_error, wait_dead, Env};

/// `cat <path>` in the mount namespace of `pid`, given at most `secs` seconds.
fn read_in(pid: i32, path: &str, secs: u32) -> (Output, Duration) {
    let t = Instant::now();
    let out = Command::new("timeout")
        .args(["-s", "KILL", &secs.to_string(), "nsenter", "-t", &pid.to_string(), "-m", "cat", path])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (out, t.elapsed())
}

fn the_fuse_server(id: &str) -> i32 {
    let s = fuse_servers(id);
    assert_eq!(s.len(), 1, "fuse-serve processes of {id}: {s:?}");
    s[0]
}

/// Ids of the mounts nestrun made for `id` (below its mount dir), as the host sees them.
fn mount_ids(id: &str) -> Vec<String> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mi.lines().filter(|l| l.contains(&format!("/{id}-"))).filter_map(|l| l.split(' ').next().map(str::to_string)).collect()
}

#[test]
fn kill_9_of_delete_then_delete_again_cleans_everything() {
    need_root!();
    let env = Env::new("delkill");
    let pid = std::process::id();
    // (id, start it first, the second delete is --force)
    for (id, start, force) in [(format!("dk-created-{pid}"), false, false), (format!("dk-running-{pid}"), true, true)] {
        env.create_ok(&id);
        if start {
            assert!(env.nestrun(&["start", &id], None).status.success());
        }
        let args: Vec<&str> = if force { vec!["delete", "--force", &id] } else { vec!["delete", &id] };
        let first = env.nestrun(&args, Some("delete"));
        assert_eq!(first.status.signal(), Some(9), "delete with NESTRUN_FAULT_AT=delete was not killed: {first:?}");
        assert!(!env.leftovers(&id).is_empty(), "the killed delete had already cleaned up: the fault point is too late");
        env.delete_ok(&id, force);
        env.assert_clean(&id, &format!("after a killed delete and a second delete (force: {force})"));
    }
    env.assert_root_empty("after the second deletes");
}

#[test]
fn killed_fuse_server_fails_reads_cleanly_and_delete_force_cleans() {
    need_root!();
    if !std::path::Path::new("/dev/fuse").exists() {
        crate::skip_log::skip("host", "killed_fuse_server_fails_reads_cleanly_and_delete_force_cleans", "no /dev/fuse");
        return;
    }
    let env = Env::new("fusekill");
    let id = format!("fk-{}", std::process::id());
    env.create_ok(&id);
    assert!(env.nestrun(&["start", &id], None).status.success());
    let init = env.init_pid(&id);
    let (ok, _) = read_in(init, "/proc/meminfo", 10);
    assert!(ok.status.success() && String::from_utf8_lossy(&ok.stdout).contains("MemTotal"), "/proc/meminfo before: {ok:?}");
    let cmi = std::fs::read_to_string(format!("/proc/{init}/mountinfo")).unwrap();
    assert!(cmi.lines().any(|l| l.contains(" /proc/meminfo ") && l.contains(" - fuse")), "/proc/meminfo is not emulated:\n{cmi}");

    let server = the_fuse_server(&id);
    kill9(server);
    wait_dead(server);
    let (out, took) = read_in(init, "/proc/meminfo", 5);
    assert!(took < Duration::from_secs(4), "reading /proc/meminfo with the FUSE server dead hung ({took:?}): {out:?}");
    assert!(!out.status.success(), "reading /proc/meminfo with the FUSE server dead succeeded: {out:?}");
    eprintln!("read with the server dead ({took:?}): {}", String::from_utf8_lossy(&out.stderr).trim());
    assert_eq!(env.state(&id)["status"], "running", "the container itself is unaffected");

    let t = Instant::now();
    env.delete_ok(&id, true);
    assert!(t.elapsed() < Duration::from_secs(20), "delete --force took {:?}", t.elapsed());
    env.assert_clean(&id, "after the FUSE server was killed and delete --force");
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.lines().any(|l| l.contains(" - fuse") && l.contains(&id)), "stale fuse mount:\n{mi}");
    env.assert_root_empty("after delete --force");
}

#[test]
fn crashed_container_is_already_there_until_deleted_then_recreated_fresh() {
    need_root!();
    let env = Env::new("recreate");
    let id = format!("rc-{}", std::process::id());
    env.create_ok(&id);
    assert!(env.nestrun(&["start", &id], None).status.success());
    let (init, server, mounts) = (env.init_pid(&id), fuse_servers(&id), mount_ids(&id));
    assert!(!mounts.is_empty(), "no mounts made for {id}");
    kill9(init);
    for p in &server {
        kill9(*p);
    }
    wait_dead(init);
    server.iter().for_each(|p| wait_dead(*p));

    let out = env.create(&id, None);
    let err = one_line_error(&out, "create over a crashed container");
    eprintln!("{err}");
    assert!(err.contains("already exists") && err.contains(&id), "not a clear 'already exists':\n{err}");
    assert_eq!(env.state(&id)["status"], "stopped", "the crashed container is still listed, stopped");
    assert_eq!(mount_ids(&id), mounts, "the refused create touched the crashed container's mounts");

    env.delete_ok(&id, false);
    env.assert_clean(&id, "after deleting a crashed container");

    env.create_ok(&id);
    assert!(env.nestrun(&["start", &id], None).status.success());
    // (Mount ids are recycled by the kernel, so they cannot tell new mounts from old ones:
    // that the old ones are all gone was checked after the delete.)
    let init2 = env.init_pid(&id);
    assert!(!mount_ids(&id).is_empty(), "no mounts made for the re-created {id}");
    assert_ne!(init2, init);
    if !server.is_empty() {
        let server2 = the_fuse_server(&id);
        assert!(!server.contains(&server2), "the old FUSE server ({server:?}) is reused");
        let (out, _) = read_in(init2, "/proc/meminfo", 10);
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("MemTotal"), "/proc/meminfo in the new container: {out:?}");
    }
    env.delete_ok(&id, true);
    env.assert_clean(&id, "after delete of the re-created container");
    env.assert_root_empty("after delete of the re-created container");
}

#[test]
fn lease_of_a_vanished_state_root_is_reclaimed_by_the_next_create() {
    need_root!();
    // One range, clear of limits.rs's pool (which runs at the same time).
    let start = crate::limits::POOL_START + 4 * 65536;
    let a = Env::new("vanish-a").private_pool(start, 1);
    let mut b = Env::new("vanish-b");
    b.vars = a.vars.clone();
    let leases = a.dir.join("leases");
    let (ida, idb) = (format!("va-{}", std::process::id()), format!("vb-{}", std::process::id()));
    a.create_ok(&ida);
    let (init, server) = (a.init_pid(&ida), fuse_servers(&ida));
    kill9(init);
    server.iter().for_each(|p| kill9(*p));
    wait_dead(init);
    server.iter().for_each(|p| wait_dead(*p));
    let lease = leases.join("0");
    let owner_a = std::fs::read_to_string(&lease).unwrap();
    assert!(owner_a.starts_with(a.root().to_str().unwrap()), "lease 0 -> {owner_a}");

    // The state root vanishes (moved away rather than removed: the test puts it back to
    // delete what the host still holds for the container: mounts, cgroup, data dir).
    let gone = a.dir.join("root.gone");
    std::fs::rename(a.root(), &gone).unwrap();
    let out = b.create(&idb, None);
    assert!(out.status.success(), "create with the only range leased by a vanished root: {}", String::from_utf8_lossy(&out.stderr));
    let owner_b = std::fs::read_to_string(&lease).unwrap();
    assert!(owner_b.starts_with(b.root().to_str().unwrap()) && owner_b.ends_with(&idb), "lease 0 not reclaimed: -> {owner_b}");

    std::fs::rename(&gone, a.root()).unwrap();
    a.delete_ok(&ida, true);
    a.assert_clean(&ida, "after deleting the container of the vanished root");
    assert_eq!(std::fs::read_to_string(&lease).unwrap(), owner_b, "deleting the old container freed the new one's lease");
    b.delete_ok(&idb, true);
    b.assert_clean(&idb, "after delete");
    assert_eq!(std::fs::read_dir(&leases).unwrap().count(), 0, "leases left");
    a.assert_root_empty("after delete");
    b.assert_root_empty("after delete");
}

#[test]
fn racing_creates_of_one_id_one_wins_the_others_already_exist() {
    need_root!();
    let env = Env::new("race");
    for round in 0..3 {
        let id = format!("race{round}-{}", std::process::id());
        let outs: Vec<Output> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..5).map(|_| s.spawn(|| env.create(&id, None))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won = outs.iter().filter(|o| o.status.success()).count();
        assert_eq!(won, 1, "round {round}: {won} of 5 racing creates succeeded: {outs:?}");
        for o in outs.iter().filter(|o| !o.status.success()) {
            let err = one_line_error(o, "a losing create");
            eprintln!("{err}");
            assert!(err.contains("already exists") && err.contains(&id), "round {round}: a losing create said:\n{err}");
        }
        assert_eq!(env.state(&id)["status"], "created");
        if std::path::Path::new("/dev/fuse").exists() {
            the_fuse_server(&id);
        }
        env.delete_ok(&id, true);
        env.assert_clean(&id, &format!("round {round}: after the race and delete"));
        env.assert_root_empty(&format!("round {round}: after the race and delete"));
    }
}
