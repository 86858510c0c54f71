//! Kubernetes pods with `hostUsers: false` (CRI `userns_options` mode POD, containerd >= 2.0):
//! the engine picks the pod's id range and user namespace, makes the pod's network namespace
//! inside it, and asks for ID-mapped binds (volumes, /etc/hosts, ...). nestrun keeps all of it
//! (no second user namespace, no lease, no rootfs of its own: containerd ID-maps the image
//! layers) and makes the ID-mapped binds itself. containerd 1.x has no pod user namespaces:
//! there these tests only say so. This host's runc (1.1.5) cannot run such pods (its features
//! lack ID-mapped mounts, which containerd 2.x's shim checks), so there is no runc column.
use std::os::unix::fs::MetadataExt;

use serde_json::{json, Value};

use crate::cri::*;
use crate::util::*;

/// containerd's major version, from the CRI's Version answer ("v1.6.20", "2.1.9").
fn containerd_major() -> u32 {
    let v = cri("Version", json!({}));
    let s = v["runtime_version"].as_str().unwrap_or_default().trim_start_matches('v').to_string();
    s.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0)
}

/// True on containerd >= 2; otherwise prints why the test has nothing to check here.
fn pod_userns_engine(test: &str) -> bool {
    let major = containerd_major();
    if major < 2 {
        eprintln!("{test}: containerd {major}.x has no pod user namespaces (hostUsers: false); nothing to check (scripts/test reruns the CRI tests on containerd 2.1)");
    }
    major >= 2
}

fn mapping(host: u64) -> Value {
    json!([{"container_id": 0, "host_id": host, "length": 65536}])
}

/// RunPodSandbox of a pod with `hostUsers: false` and kubelet's mapping at `host`.
fn run_pod(test: &str, host: u64) -> Result<Pod, String> {
    Pod::try_run_with(test, "nested", "CONTAINER", |c| {
        c["linux"]["security_context"]["namespace_options"]["userns_options"] = json!({"mode": "POD", "uids": mapping(host), "gids": mapping(host)});
    })
}

/// CreateContainer + StartContainer with a hostPath volume at /vol, ID-mapped as kubelet asks
/// for pods with `hostUsers: false` (the mount carries the pod's mappings).
fn start(pod: &mut Pod, name: &str, vol: &str, host: u64) -> String {
    let mut config = pod.container_config(name, &["sleep", "100000"]);
    config["mounts"] = json!([{"container_path": "/vol", "host_path": vol, "uidMappings": mapping(host), "gidMappings": mapping(host)}]);
    pod.start_config(config)
}

#[test]
fn host_users_false_pod_keeps_the_engines_range_nested() {
    need_cri!("host_users_false_pod_keeps_the_engines_range_nested");
    if !pod_userns_engine("host_users_false_pod_keeps_the_engines_range_nested") {
        return;
    }
    // kubelet's ranges are multiples of 65536 outside nestrun's pool (2^31 here: the pool ends
    // far below, at 1048576 + 4096 * 65536)
    let host: u64 = (1 << 31) + 65536 * (std::process::id() as u64 % 64);
    let vol = std::env::temp_dir().join(unique("cri-userns-vol"));
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("by-root"), "r\n").unwrap();
    std::fs::write(vol.join("by-1000"), "u\n").unwrap();
    std::os::unix::fs::chown(vol.join("by-1000"), Some(1000), Some(1000)).unwrap();
    let volp = vol.to_str().unwrap().to_string();

    let mut pod = run_pod("cri-userns", host).unwrap_or_else(|e| panic!("RunPodSandbox: {e}"));
    let a = start(&mut pod, "a", &volp, host);
    let b = start(&mut pod, "b", &volp, host);
    // one user namespace, the engine's range, in the pause process and both containers
    let (inside, h, count) = uid_map(pod.sandbox_pid());
    assert_eq!((inside, h, count), (0, host, 65536), "the sandbox runs in the range containerd was given");
    let userns = std::fs::read_link(format!("/proc/{}/ns/user", pod.sandbox_pid())).unwrap();
    for c in [&a, &b] {
        assert_eq!(pod.sh(c, "id -u; cat /proc/self/uid_map | tr -s ' '").split_whitespace().collect::<Vec<_>>(), ["0", "0", &host.to_string(), "65536"]);
        let pid = cri("ContainerStatus", json!({"container_id": c, "verbose": true}))["info"]["info"]["pid"].as_i64().unwrap() as i32;
        assert_eq!(std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap(), userns, "container {c} joins the pod's user namespace");
        assert_eq!(proc_uid(pid), Some(host as u32), "container {c}'s root is host uid {host}");
    }
    // the ID-mapped volume: host root's file is root's inside, host uid 1000's is 1000's, and
    // what container root writes lands as host root (as runc >= 1.2 maps it)
    assert_eq!(pod.sh(&a, "stat -c '%u %n' /vol/by-root /vol/by-1000"), "0 /vol/by-root\n1000 /vol/by-1000");
    pod.sh(&a, "echo from-a >/vol/new && chown 1000:1000 /vol/new");
    assert_eq!(pod.sh(&b, "cat /vol/new; stat -c %u /vol/new"), "from-a\n1000");
    assert_eq!(std::fs::metadata(vol.join("new")).unwrap().uid(), 1000);
    // the image's files are root's (containerd ID-mapped the layers; nestrun did not again),
    // the engine's ID-mapped /etc/hosts is readable
    assert_eq!(pod.sh(&a, "stat -c '%u %g' /bin/busybox /etc; grep -c localhost /etc/hosts"), "0 0\n0 0\n1");
    // containerd made the network namespace inside the pod's user namespace: the pod's root
    // owns it (an inner dockerd can make its bridge)
    pod.sh(&a, "ip link add nrtest0 type bridge && ip link del nrtest0");
    let ip = pod.status()["status"]["network"]["ip"].as_str().unwrap_or_default().to_string();
    assert!(pod.sh(&b, "ip -4 -o addr show").contains(&format!("inet {ip}/")), "the pod IP {ip} is in the containers' network namespace");
    // nestrun's system container all the same: emulated /proc, no lease of nestrun's
    for id in pod.ids() {
        assert!(!fuse_server_pids(&id).is_empty(), "no fuse-serve for {id}");
        assert!(leases_naming(&id).is_empty(), "{id}: the engine's range takes no lease of nestrun's pool");
    }
    assert!(pod.sh(&a, "grep -c MemTotal /proc/meminfo") == "1");
    remove_and_check(&mut pod);
    let _ = std::fs::remove_dir_all(&vol);
}

#[test]
fn host_users_false_range_inside_nestruns_pool_is_refused() {
    need_cri!("host_users_false_range_inside_nestruns_pool_is_refused");
    if !pod_userns_engine("host_users_false_range_inside_nestruns_pool_is_refused") {
        return;
    }
    let err = match run_pod("cri-userns-pool", POOL_START as u64) {
        Ok(mut pod) => {
            let _ = pod.remove();
            panic!("a pod mapped into nestrun's pool ran");
        }
        Err(e) => e,
    };
    assert!(err.contains(&format!("the engine maps host ids {POOL_START}-{}", POOL_START as u64 + 65535)) && err.contains("overlaps nestrun's pool"), "{err}");
    // containerd removed the failed sandbox
    let pods = cri("ListPodSandbox", json!({}));
    let named = pods["items"].as_array().cloned().unwrap_or_default().into_iter().filter(|p| p["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("cri-userns-pool"))).count();
    assert_eq!(named, 0, "{pods}");
}
