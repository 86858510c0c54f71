//! Nesting (issue "System containers"): Docker-in-Docker-in-Docker.
//!
//! Level 1 is a nested `nestrun-test/dind-trixie` of the shared test dockerd (no --privileged).
//! Its inner dockerd loads the same image (saved from the shared dockerd, `docker cp`'d in) and
//! runs it as level 2 the way DinD is run everywhere: `docker run --privileged` (docker 26 asks
//! only for the capabilities it has; docker 20.10 of nestrun-test/dind cannot on a host whose
//! runtime lacks CAP_SYS_RESOURCE, see SECURITY.md F2). Level 2's dockerd runs `busybox` as
//! level 3. From the host, every process of the outer container, levels 2 and 3 included, runs
//! as a uid of the outer container's range.
use std::os::unix::fs::PermissionsExt;

use crate::inner::DIND_TRIXIE;
use crate::util::*;

/// Real, effective, saved and filesystem uid of a host process.
fn uids(pid: i32) -> Option<Vec<u64>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with("Uid:"))?;
    Some(l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect())
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

#[test]
fn docker_in_docker_in_docker() {
    need_engines!("docker_in_docker_in_docker");
    let t0 = std::time::Instant::now();
    // The dind image for level 2, from the shared dockerd, through a read-only bind (`docker
    // cp` into a running system container fails by design).
    let dir = tempdir("nesting");
    let tar = dir.path.join("dind.tar");
    let tar_s = tar.to_str().unwrap();
    docker(&["save", "-o", tar_s, DIND_TRIXIE]).ok();
    std::fs::set_permissions(&tar, std::fs::Permissions::from_mode(0o644)).unwrap();
    let vol = format!("{}:/imgs:ro", dir.path.display());
    let l1 = crate::inner::start_trixie("dind3", &["-v", &vol]);
    let (start, count) = range_of(&l1);
    l1.sh(&format!("docker load -q -i /imgs/dind.tar && docker image inspect -f ok {DIND_TRIXIE}")).ok();

    // level 2: DinD inside the DinD
    l1.exec(&["docker", "run", "-d", "--name", "level2", "--privileged", "-m", "512m", DIND_TRIXIE]).ok();
    let w = l1.exec(&["docker", "exec", "level2", "dind-wait", "120"]);
    if w.code != 0 {
        let logs = l1.sh("docker logs --tail 40 level2 2>&1; docker exec level2 tail -n 40 /var/log/dockerd.log");
        panic!("level-2 dockerd not ready: {w:?}\n{}", logs.stdout);
    }
    let info = l1.exec(&["docker", "exec", "level2", "docker", "info", "--format", "{{.Driver}}"]).ok();
    println!("level-2 dockerd storage driver: {}", info.out());

    // level 3
    assert_eq!(l1.exec(&["docker", "exec", "level2", "docker", "run", "--rm", "busybox", "echo", "hi"]).ok().out(), "hi");
    // Each level sees its own memory limit in its /proc (issue 14: the supervisor traps every
    // level's procfs mounts; the FUSE server answers each reader from its own cgroup).
    let mem = |args: &[&str]| l1.exec(args).ok().out().split_whitespace().nth(1).unwrap_or_default().to_string();
    assert_eq!(mem(&["docker", "exec", "level2", "head", "-n1", "/proc/meminfo"]), "524288", "level 2 (-m 512m)");
    assert_eq!(mem(&["docker", "exec", "level2", "docker", "run", "--rm", "-m", "64m", "busybox", "head", "-n1", "/proc/meminfo"]), "65536", "level 3 (-m 64m)");
    // one left running, to be seen from the host
    l1.exec(&["docker", "exec", "level2", "docker", "run", "-d", "--name", "level3", "busybox", "sleep", "100000"]).ok();
    let l2_id = l1.exec(&["docker", "inspect", "-f", "{{.Id}}", "level2"]).ok().out().to_string();
    let l3_id = l1.exec(&["docker", "exec", "level2", "docker", "inspect", "-f", "{{.Id}}", "level3"]).ok().out().to_string();
    assert!(l2_id.len() == 64 && l3_id.len() == 64, "ids: {l2_id:?} {l3_id:?}");

    // From the host: every process of the outer container's cgroup, levels 2 and 3 included.
    let id = l1.id();
    let all = pids_in_cgroup_of(&id);
    let level2 = pids_in_cgroup_of(&l2_id);
    let level3 = pids_in_cgroup_of(&l3_id);
    let names = |v: &[i32]| v.iter().map(|p| format!("{p}:{}", comm(*p))).collect::<Vec<_>>();
    println!("outer container: {} processes; level 2: {:?}; level 3: {:?}", all.len(), names(&level2), names(&level3));
    assert!(level2.iter().any(|p| comm(*p) == "dockerd"), "no level-2 dockerd seen from the host: {:?}", names(&level2));
    assert!(level3.iter().any(|p| comm(*p) == "sleep"), "no level-3 sleep seen from the host: {:?}", names(&level3));
    for p in level2.iter().chain(&level3) {
        assert!(all.contains(p), "level-2/3 process {p} is not in the outer container's cgroup");
    }
    for p in &all {
        let Some(u) = uids(*p) else { continue }; // exited meanwhile
        assert!(
            u.iter().all(|u| *u >= start && *u < start + count),
            "process {p} ({}) of the outer container (level 2: {}, level 3: {}) runs as host uids {u:?}, outside the range {start}+{count}",
            comm(*p),
            level2.contains(p),
            level3.contains(p)
        );
    }
    let (inside, outside, n) = uid_map(level3[0]);
    assert_eq!((inside, outside, n), (0, start, count), "level 3 is in the outer container's user namespace");
    println!("docker_in_docker_in_docker: level 3 ran {:.1} s after the start", t0.elapsed().as_secs_f64());

    // removing the outer container takes levels 2 and 3 with it
    assert_rm_cleans(&l1);
    assert!(wait_for(10, || level2.iter().chain(&level3).all(|p| uids(*p).is_none_or(|u| !(u[0] >= start && u[0] < start + count)))), "level-2/3 processes survived docker rm -f");
}
