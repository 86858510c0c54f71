//! What a kubelet asks of a runtime beyond running pods (issue #17), through the CRI of the
//! private containerd (scripts/cri-containerd.sh), under the `runc` and `nested` handlers:
//! `readOnlyRootFilesystem`, `runAsUser`/`runAsGroup`/supplemental groups, a container
//! restarted in a running pod (attempt 1), `ReopenContainerLog`, `privileged: true`,
//! capabilities added and dropped.
//! Volumes: integration/cri_volumes.rs; kubelet's cgroup parent and the stats its eviction
//! reads: integration/cri_cgroups.rs; streaming Exec/Attach: integration/cri_stream.rs.
//! Each test ends with integration/cri.rs's check that nothing of the pod is left.
use std::time::Duration;

use serde_json::{json, Value};

use crate::cri::*;
use crate::util::*;

/// A container that ends at StopContainer's SIGTERM (a bare sleep as PID 1 ignores it).
pub(crate) const SLEEPER: &[&str] = &["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"];

fn sc(config: &mut Value) -> &mut Value {
    &mut config["linux"]["security_context"]
}

/// Uid, Gid and Groups lines of /proc/<pid>/status: (real uid, real gid, supplementary groups).
pub(crate) fn proc_ids(pid: i32) -> (u64, u64, Vec<u64>) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_else(|e| panic!("status of {pid}: {e}"));
    let field = |name: &str| -> Vec<u64> {
        s.lines().find(|l| l.starts_with(name)).map(|l| l[name.len()..].split_whitespace().filter_map(|x| x.parse().ok()).collect()).unwrap_or_default()
    };
    (field("Uid:")[0], field("Gid:")[0], field("Groups:"))
}

/// `readOnlyRootFilesystem: true`: writes to the image's file system fail with EROFS, a volume
/// and the pod's /dev/shm stay writable; nested keeps image files owned by root inside.
fn read_only_root(test: &str, handler: &str) {
    let mut pod = Pod::run(test, handler, "CONTAINER");
    let vol = tempdir("cri-rovol");
    let mut cfg = pod.container_config("app", SLEEPER);
    sc(&mut cfg)["readonly_rootfs"] = json!(true);
    cfg["mounts"] = json!([{"container_path": "/data", "host_path": vol.path}]);
    let app = pod.start_config(cfg);
    for path in ["/newfile", "/etc/newfile", "/tmp/newfile", "/root/newfile"] {
        let (code, out, err) = pod.exec(&app, &format!("touch {path}"));
        assert!(code != 0 && err.contains("Read-only file system"), "touch {path} on a read-only root: exit {code} {out} {err}");
    }
    assert_eq!(pod.sh(&app, "echo vol > /data/f && cat /data/f"), "vol");
    assert_eq!(pod.sh(&app, "echo shm > /dev/shm/f && cat /dev/shm/f"), "shm");
    assert_eq!(std::fs::read_to_string(vol.path.join("f")).unwrap_or_default(), "vol\n", "the volume's file on the host");
    assert_eq!(pod.sh(&app, "stat -c '%u %g' /bin/sh /etc/passwd"), "0 0\n0 0", "image files should be root's inside");
    if handler == "nested" {
        assert_nested_traces(&pod);
        pod_range(&pod);
    }
    remove_and_check(&mut pod);
}

#[test]
fn read_only_root_filesystem_runc_handler() {
    need_cri!("read_only_root_filesystem_runc_handler");
    read_only_root("cri-roroot-runc", "runc");
}

#[test]
fn read_only_root_filesystem_nested() {
    need_cri!("read_only_root_filesystem_nested");
    read_only_root("cri-roroot-nested", "nested");
}

/// `runAsUser: 1000`, `runAsGroup: 3000`, `supplementalGroups: [4000, 5000]`: `id` shows them
/// in the container and in ExecSync; on the host the process runs as those ids (runc) or as
/// the same ids within the pod's range (nested), never as host ids below nestrun's pool.
fn run_as(test: &str, handler: &str) {
    let mut pod = Pod::run(test, handler, "CONTAINER");
    let mut cfg = pod.container_config("app", &["sh", "-c", "trap 'exit 0' TERM; id > /tmp/id-at-start; sleep 100000 & wait"]);
    sc(&mut cfg)["run_as_user"] = json!({"value": 1000});
    sc(&mut cfg)["run_as_group"] = json!({"value": 3000});
    sc(&mut cfg)["supplemental_groups"] = json!([4000, 5000]);
    let app = pod.start_config(cfg);
    // the image's /etc/group puts its user 1000 in group docker (999): containerd adds it
    let want = "uid=1000(user) gid=3000 groups=999(docker),3000,4000,5000";
    assert_eq!(pod.sh(&app, "id"), want, "ExecSync's id");
    assert_eq!(pod.sh(&app, "cat /tmp/id-at-start"), want, "the container process's id");
    let (code, _, err) = pod.exec(&app, "touch /etc/by-user");
    assert!(code != 0 && err.contains("Permission denied"), "uid 1000 wrote to root's /etc: {err}");
    let (uid, gid, groups) = proc_ids(container_pid(&app));
    let base = if handler == "nested" {
        let (start, count) = pod_range(&pod);
        assert!(start >= POOL_START as u64 && count == 65536);
        start
    } else {
        0
    };
    assert_eq!((uid, gid), (base + 1000, base + 3000), "host uid/gid of the container process (range start {base})");
    let mut g = groups.clone();
    g.sort();
    assert_eq!(g, [base + 999, base + 3000, base + 4000, base + 5000], "host supplementary groups");
    remove_and_check(&mut pod);
}

#[test]
fn run_as_user_and_groups_runc_handler() {
    need_cri!("run_as_user_and_groups_runc_handler");
    run_as("cri-runas-runc", "runc");
}

#[test]
fn run_as_user_and_groups_nested() {
    need_cri!("run_as_user_and_groups_nested");
    run_as("cri-runas-nested", "nested");
}

/// A container restarted in its running pod as kubelet does it after a crash: StopContainer,
/// RemoveContainer, CreateContainer with attempt 1 (log 1.log), StartContainer. It runs, in
/// the pod's network namespace (same pod IP) and, with nested, in the pod's same range; the
/// removed attempt leaves nothing.
fn restart(test: &str, handler: &str) {
    let mut pod = Pod::run(test, handler, "CONTAINER");
    let first = pod.start("app", SLEEPER);
    let ip = pod.status()["status"]["network"]["ip"].as_str().unwrap_or_default().to_string();
    assert!(ip.starts_with(&pod_ip_prefix()), "pod IP {ip:?}");
    let range = (handler == "nested").then(|| pod_range(&pod));
    cri("StopContainer", json!({"container_id": first, "timeout": 10}));
    cri("RemoveContainer", json!({"container_id": first}));
    pod.containers.retain(|c| c != &first);
    let gone = wait_for(10, || mounts_containing(&format!("/run/nestrun-mnt/{first}-")).is_empty() && fuse_server_pids(&first).is_empty() && leases_naming(&first).is_empty());
    assert!(gone, "attempt 0 ({first}) left traces: mounts {:?} fuse {:?} leases {:?}", mounts_containing(&format!("/run/nestrun-mnt/{first}-")), fuse_server_pids(&first), leases_naming(&first));
    let mut cfg = pod.container_config("app", SLEEPER);
    cfg["metadata"]["attempt"] = json!(1);
    cfg["log_path"] = json!("app/1.log");
    let second = pod.start_config(cfg);
    assert_eq!(pod.sh(&second, "echo again"), "again");
    let list = cri("ListContainers", json!({"filter": {"pod_sandbox_id": pod.id}}));
    let cs = list["containers"].as_array().cloned().unwrap_or_default();
    assert_eq!(cs.len(), 1, "{list}");
    assert_eq!((cs[0]["id"].as_str(), cs[0]["metadata"]["attempt"].as_i64(), cs[0]["state"].as_str()), (Some(second.as_str()), Some(1), Some("CONTAINER_RUNNING")));
    assert_eq!(pod.status()["status"]["network"]["ip"].as_str().unwrap_or_default(), ip, "pod IP after the restart");
    let addrs = pod.sh(&second, "ip -4 -o addr show");
    assert!(addrs.contains(&format!("inet {ip}/24")), "the restarted container does not have the pod IP {ip}:\n{addrs}");
    if let Some(range) = range {
        assert_eq!(pod_range(&pod), range, "the restarted container is not in the pod's range");
        assert_nested_traces(&pod);
    }
    remove_and_check(&mut pod);
}

#[test]
fn container_restart_in_a_pod_runc_handler() {
    need_cri!("container_restart_in_a_pod_runc_handler");
    restart("cri-restartc-runc", "runc");
}

#[test]
fn container_restart_in_a_pod_nested() {
    need_cri!("container_restart_in_a_pod_nested");
    restart("cri-restartc-nested", "nested");
}

/// The numbers of the `lineN` records of a CRI log file ("<time> stdout F lineN").
fn log_numbers(path: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| l.rsplit_once(" line").and_then(|(_, n)| n.trim().parse().ok())).collect()
}

/// kubelet's log rotation: the log file renamed, ReopenContainerLog, new output in a new file
/// at the old path, the renamed one no longer written.
fn reopen_log(test: &str, handler: &str) {
    let mut pod = Pod::run(test, handler, "CONTAINER");
    let app = pod.start("app", &["sh", "-c", "trap 'exit 0' TERM; i=0; while :; do i=$((i+1)); echo line$i; sleep 0.2; done"]);
    let log = format!("{}/app/0.log", pod.log_dir);
    assert!(wait_for(20, || log_numbers(&log).len() >= 3), "no output in {log}: {:?}", std::fs::read_to_string(&log));
    let first = std::fs::read_to_string(&log).unwrap();
    assert!(first.lines().next().is_some_and(|l| l.contains(" stdout F line1")), "CRI log format: {first}");
    let rotated = format!("{log}.20261204-000000");
    std::fs::rename(&log, &rotated).unwrap();
    cri("ReopenContainerLog", json!({"container_id": app}));
    assert!(wait_for(20, || log_numbers(&log).len() >= 3), "no output in the reopened {log}");
    std::thread::sleep(Duration::from_millis(500));
    let (old, new) = (log_numbers(&rotated), log_numbers(&log));
    let last_old = *old.last().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(log_numbers(&rotated).last(), Some(&last_old), "the rotated file is still written");
    assert!(new[0] > last_old && new[0] <= last_old + 2, "the new file should go on where the old one ended: old ..{last_old}, new {:?}", &new[..3]);
    assert!(log_numbers(&log).len() > new.len(), "the new file stopped growing");
    if handler == "nested" {
        assert_nested_traces(&pod);
    }
    remove_and_check(&mut pod);
}

#[test]
fn reopen_container_log_runc_handler() {
    need_cri!("reopen_container_log_runc_handler");
    reopen_log("cri-reopen-runc", "runc");
}

#[test]
fn reopen_container_log_nested() {
    need_cri!("reopen_container_log_nested");
    reopen_log("cri-reopen-nested", "nested");
}

/// The host's first disk (not loop, ram, zram): (name, "major:minor").
fn host_disk() -> (String, String) {
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if ["loop", "ram", "zram", "nbd", "dm-", "md"].iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let dev = std::fs::read_to_string(e.path().join("dev")).unwrap_or_default().trim().to_string();
        return (name, dev);
    }
    panic!("no disk in /sys/block");
}

/// `privileged: true`. containerd wants the sandbox privileged too (a privileged container in
/// a pod without it is refused). runc gives host root and the host's devices; under nested
/// the pod stays in its unprivileged range: no host block device, none can be made or opened.
fn privileged(test: &str, handler: &str) {
    let mut plain = Pod::run(test, handler, "CONTAINER");
    let mut cfg = plain.container_config("app", SLEEPER);
    sc(&mut cfg)["privileged"] = json!(true);
    let err = plain.create(&cfg).expect_err("a privileged container in a non-privileged pod was created");
    assert!(err.contains("no privileged container allowed in sandbox"), "{err}");
    remove_and_check(&mut plain);

    let mut pod = Pod::run_with(test, handler, "CONTAINER", |c| c["linux"]["security_context"]["privileged"] = json!(true));
    let app = pod.start_config(cfg);
    let (disk, devno) = host_disk();
    let (major, minor) = devno.split_once(':').unwrap();
    let read_disk = format!("head -c 512 /dev/{disk} | wc -c");
    let mknod = format!("mknod /tmp/disk b {major} {minor} && head -c 512 /tmp/disk | wc -c");
    if handler == "runc" {
        assert_eq!(pod.sh(&app, "cat /proc/self/uid_map").split_whitespace().collect::<Vec<_>>(), ["0", "0", "4294967295"]);
        // the host's disk node is there (opening it gives EPERM on this host, also as host root)
        assert!(pod.sh(&app, &format!("ls -l /dev/{disk}")).starts_with('b'), "runc's privileged container should have the host's /dev/{disk}");
        assert_eq!(proc_uid(container_pid(&app)), Some(0));
    } else {
        assert_nested_traces(&pod);
        let (start, count) = pod_range(&pod);
        assert_eq!(uid_map(container_pid(&app)), (0, start, count));
        assert!(proc_uid(container_pid(&app)).is_some_and(|u| u as u64 == start), "container root is not the range's first uid");
        let blocks = pod.sh(&app, "find /dev -type b");
        assert!(blocks.is_empty(), "host block devices in a nested privileged container: {blocks}");
        let (code, out, err) = pod.exec(&app, &read_disk);
        assert!(code != 0 || out.trim() != "512", "read /dev/{disk}: {out} {err}");
        let (code, out, err) = pod.exec(&app, &mknod);
        assert!(code != 0 && !out.contains("512"), "made and read the host disk's node {devno}: {out} {err}");
        for pid in pids_in_cgroup_of(&pod.id).into_iter().chain(pids_in_cgroup_of(&app)) {
            let u = proc_uid(pid).unwrap_or(0) as u64;
            assert!(u >= start && u < start + count, "pid {pid} of the privileged pod runs as host uid {u}");
        }
    }
    remove_and_check(&mut pod);
}

#[test]
fn privileged_pod_runc_handler() {
    need_cri!("privileged_pod_runc_handler");
    privileged("cri-priv-runc", "runc");
}

#[test]
fn privileged_pod_nested() {
    need_cri!("privileged_pod_nested");
    privileged("cri-priv-nested", "nested");
}

/// A capability set line of /proc/<pid>/status ("CapBnd", "CapEff") as a mask.
fn cap_mask(status: &str, name: &str) -> u64 {
    let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {status}"));
    u64::from_str_radix(line[name.len() + 1..].trim(), 16).unwrap()
}

const CAP_NET_BIND_SERVICE: u64 = 1 << 10;
const CAP_NET_RAW: u64 = 1 << 13;
const CAP_SYS_ADMIN: u64 = 1 << 21;

/// `capabilities.drop` is honoured (Kubernetes' restricted profile drops ALL): for the
/// container's init (seen from the host) and for ExecSync. A container that drops nothing gets
/// every capability in its user namespace under nested (the system container: it can make a
/// bridge in the pod's network namespace), the engine's default set under runc.
fn capabilities(test: &str, handler: &str) {
    let mut pod = Pod::run(test, handler, "CONTAINER");
    let with = |pod: &mut Pod, name: &str, add: &[&str], drop: &[&str]| {
        let mut cfg = pod.container_config(name, SLEEPER);
        sc(&mut cfg)["capabilities"] = json!({"add_capabilities": add, "drop_capabilities": drop});
        pod.start_config(cfg)
    };
    let masks = |pod: &Pod, c: &str| {
        let init = std::fs::read_to_string(format!("/proc/{}/status", container_pid(c))).unwrap();
        let exec = pod.sh(c, "grep ^Cap /proc/self/status");
        for s in [&init, &exec] {
            assert_eq!(cap_mask(s, "CapEff:"), cap_mask(s, "CapBnd:"), "root's effective set is its bounding set: {s}");
        }
        assert_eq!(cap_mask(&init, "CapBnd:"), cap_mask(&exec, "CapBnd:"), "ExecSync gets the init's bounding set");
        cap_mask(&exec, "CapBnd:")
    };
    let default = with(&mut pod, "default", &[], &[]);
    let no_raw = with(&mut pod, "noraw", &[], &["NET_RAW"]);
    let none = with(&mut pod, "none", &[], &["ALL"]);
    let bind_only = with(&mut pod, "bindonly", &["NET_BIND_SERVICE"], &["ALL"]);
    let m = masks(&pod, &default);
    assert_eq!(m & CAP_SYS_ADMIN != 0, handler == "nested", "CAP_SYS_ADMIN of a default container: {m:x}");
    let (code, out, err) = pod.exec(&default, "ip link add nrcapbr0 type bridge && ip link del nrcapbr0");
    assert_eq!(code == 0, handler == "nested", "a default container making a bridge: {out} {err}");
    let m = masks(&pod, &no_raw);
    assert!(m & CAP_NET_RAW == 0 && m & CAP_SYS_ADMIN == 0, "dropping NET_RAW: {m:x}");
    let (code, out, err) = pod.exec(&no_raw, "ping -c 1 -W 1 127.0.0.1");
    assert!(code != 0 && err.contains("permission denied"), "ping without CAP_NET_RAW: exit {code} {out} {err}");
    assert_eq!(masks(&pod, &none), 0, "drop ALL");
    assert_eq!(masks(&pod, &bind_only), CAP_NET_BIND_SERVICE, "drop ALL, add NET_BIND_SERVICE");
    if handler == "nested" {
        assert_nested_traces(&pod);
        pod_range(&pod);
    }
    remove_and_check(&mut pod);
}

#[test]
fn capabilities_added_and_dropped_runc_handler() {
    need_cri!("capabilities_added_and_dropped_runc_handler");
    capabilities("cri-caps-runc", "runc");
}

#[test]
fn capabilities_added_and_dropped_nested() {
    need_cri!("capabilities_added_and_dropped_nested");
    capabilities("cri-caps-nested", "nested");
}
