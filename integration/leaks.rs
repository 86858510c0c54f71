//! Leak check through the real dockerd: N mixed lifecycles (`--rm`, kill -9 of the init from the
//! host, DinD up/down with inner containers running, a volume at /var/lib/docker, docker kill +
//! start + stop),
//! each followed by a check that nestrun left nothing for that container: mounts, mount dirs,
//! cgroups (all v1 controllers), FUSE servers, uid leases, data dirs, state dirs, and processes
//! in the range it had. N = 5 (one of each); NESTRUN_LONG=1 runs 200.
use crate::util::*;
use std::time::{Duration, Instant};

/// Everything the host still holds for container `id` (whose range started at `start`, if known).
fn leftovers(id: &str, start: Option<u64>) -> Vec<String> {
    let t = traces(id);
    let mut v = vec![];
    if !t.is_empty() {
        v.push(format!("{t:?}"));
    }
    let s = runtime_state_dirs("/run/nestrun-test", id);
    if !s.is_empty() {
        v.push(format!("state dirs {s:?}"));
    }
    if let Some(start) = start {
        let p = own_pids(id, start);
        if !p.is_empty() {
            v.push(format!("processes {p:?} in range {start}"));
        }
    }
    v
}

/// Waits (up to 20 s: docker's cleanup after an exit is asynchronous) until `id` left nothing.
fn assert_gone(id: &str, start: Option<u64>, what: &str) {
    if !wait_for(20, || leftovers(id, start).is_empty()) {
        panic!("{what}: container {id} left {:?}", leftovers(id, start));
    }
}

fn cid_of(file: &std::path::Path) -> String {
    std::fs::read_to_string(file).unwrap_or_default().trim().to_string()
}

/// One lifecycle of kind `i % 5`; returns a label for the report.
fn cycle(i: usize, tmp: &std::path::Path) -> &'static str {
    match i % 5 {
        0 => {
            let cidfile = tmp.join(format!("cid-{i}"));
            let cf = cidfile.to_string_lossy().to_string();
            let o = docker(&["run", "--rm", "--runtime", "nested", "--cidfile", &cf, BUSYBOX, "sh", "-c", "exit 3"]);
            assert_eq!(o.code, 3, "#{i} docker run --rm: {o:?}");
            assert_gone(&cid_of(&cidfile), None, &format!("#{i} after docker run --rm"));
            "run --rm"
        }
        1 => {
            let c = Ctr::sleeper(&format!("leak-kill-{i}"));
            let (id, (start, _), pid) = (c.id(), range_of(&c), c.pid());
            // The container's init dies from outside; dockerd sees an exit and deletes it.
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
            assert!(wait_for(20, || c.inspect("{{.State.Running}}") == "false"), "#{i}: still running after kill -9 of init");
            let layer_data = layer_data_dir(&id);
            docker(&["rm", &c.name]).ok();
            if let Some(d) = layer_data {
                assert!(!d.exists(), "#{i}: data dir {} outlived docker rm", d.display());
            }
            assert_gone(&id, Some(start), &format!("#{i} after kill -9 of init + docker rm"));
            "kill -9 init"
        }
        2 => {
            let c = start_dind(&format!("leak-dind-{i}"), 60);
            let (id, (start, _)) = (c.id(), range_of(&c));
            c.exec(&["docker", "run", "-d", "--name", "inner", "busybox", "sleep", "100000"]).ok();
            c.exec(&["docker", "run", "-d", "-m", "64m", "busybox", "sleep", "100000"]).ok();
            docker(&["rm", "-f", &c.name]).ok();
            assert_gone(&id, Some(start), &format!("#{i} after docker rm -f of a DinD with inner containers"));
            "dind up/down"
        }
        3 => {
            let cidfile = tmp.join(format!("cid-{i}"));
            let cf = cidfile.to_string_lossy().to_string();
            // An anonymous volume on a data-dir path (the user's mount wins over nestrun's).
            let o = docker(&["run", "--rm", "--runtime", "nested", "-v", "/var/lib/docker", "--cidfile", &cf, BUSYBOX, "sh", "-c", "echo x > /var/lib/docker/f"]);
            assert_eq!(o.code, 0, "#{i} run --rm with a volume at /var/lib/docker: {o:?}");
            assert_gone(&cid_of(&cidfile), None, &format!("#{i} after docker run --rm -v /var/lib/docker"));
            "volume --rm"
        }
        _ => {
            let c = Ctr::sleeper(&format!("leak-restart-{i}"));
            let id = c.id();
            docker(&["kill", &c.name]).ok();
            docker(&["start", &c.name]).ok();
            let (start, _) = range_of(&c);
            docker(&["stop", "-t", "1", &c.name]).ok();
            // Stopped: the lease, FUSE server, mounts and cgroups are gone; the data dir stays.
            assert!(wait_for(20, || traces(&id).is_empty_but_data()), "#{i}: stopped container holds {:?}", traces(&id));
            docker(&["rm", &c.name]).ok();
            assert_gone(&id, Some(start), &format!("#{i} after kill, start, stop, rm"));
            "kill+start+stop"
        }
    }
}

#[test]
fn docker_lifecycles_leave_nothing() {
    need_engines!("docker_lifecycles_leave_nothing");
    let n = if std::env::var("NESTRUN_LONG").is_ok() { 200 } else { 5 };
    let tmp = tempdir("leaks");
    let t0 = Instant::now();
    let mut kinds = std::collections::BTreeMap::<&str, (usize, Duration)>::new();
    for i in 0..n {
        let t = Instant::now();
        let kind = cycle(i, &tmp.path);
        let e = kinds.entry(kind).or_default();
        e.0 += 1;
        e.1 += t.elapsed();
    }
    println!("docker_lifecycles_leave_nothing: {n} lifecycles, nothing left, {:.1?}", t0.elapsed());
    for (k, (count, d)) in kinds {
        println!("  {k}: {count} x, mean {:.0?}", d / count as u32);
    }
}
