//! Kubernetes cgroups through the CRI, under the `runc` and `nested` handlers: a pod under
//! kubelet's own cgroup parent `/kubepods/burstable/pod<uid>` (cgroupfs driver) with the limits
//! kubelet sends for a Burstable container, and the stats kubelet's summary API and eviction
//! read (ListContainerStats, ListPodSandboxStats): working set, usage, CPU time and rate.
use std::time::Duration;

use serde_json::{json, Value};

use crate::cri::*;
use crate::cri_kubelet::SLEEPER;
use crate::util::*;

const MIB: u64 = 1 << 20;

/// The first of `files` that exists in a hierarchy's dir `rel` (v1 controllers or v2), trimmed.
fn cgroup_file(rel: &str, files: &[&str]) -> Option<String> {
    cgroup_dirs(rel).iter().find_map(|d| files.iter().find_map(|f| std::fs::read_to_string(d.join(f)).ok())).map(|s| s.trim().to_string())
}

/// Removes kubelet's `kubepods/burstable` and `kubepods` dirs when no pod is left in them.
fn remove_kubepods() {
    for rel in ["kubepods/burstable", "kubepods"] {
        for d in cgroup_dirs(rel) {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A pod under `/kubepods/burstable/pod<uid>` with a container limited to 128 MiB and half a
/// CPU: the sandbox's and container's cgroups are under the pod's on the host, with the limits
/// kubelet asked for; inside, the container sees its limit (nested: also in /proc/meminfo).
fn kubepods(test: &str, handler: &str) {
    let mut pod = Pod::run_with(test, handler, "CONTAINER", |c| {
        let uid = c["metadata"]["uid"].as_str().unwrap().to_string();
        c["linux"]["cgroup_parent"] = json!(format!("/kubepods/burstable/pod{uid}"));
    });
    let parent = pod.cgroup_parent();
    assert_eq!(parent, format!("kubepods/burstable/pod{}", pod.uid));
    let mut cfg = pod.container_config("app", SLEEPER);
    cfg["linux"]["resources"] = json!({"cpu_period": 100000, "cpu_quota": 50000, "cpu_shares": 512, "memory_limit_in_bytes": 128 * MIB, "oom_score_adj": 968});
    let app = pod.start_config(cfg);
    for (id, what) in [(&pod.id, "sandbox"), (&app, "container")] {
        let pid = if id == &app { container_pid(&app) } else { pod.sandbox_pid() };
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let mem = cg.lines().find(|l| l.split(':').nth(1).is_some_and(|c| c == "memory" || c.is_empty())).unwrap_or_default();
        assert!(mem.ends_with(&format!("/{parent}/{id}")), "the {what}'s memory cgroup is not under the pod's {parent}: {cg}");
    }
    let rel = format!("{parent}/{app}");
    assert_eq!(cgroup_file(&rel, &["memory.limit_in_bytes", "memory.max"]).as_deref(), Some("134217728"), "memory limit of {rel}");
    let quota = cgroup_file(&rel, &["cpu.cfs_quota_us", "cpu.max"]).unwrap_or_default();
    assert!(quota == "50000" || quota == "50000 100000", "CPU quota of {rel}: {quota:?}");
    let shares = cgroup_file(&rel, &["cpu.shares", "cpu.weight"]).unwrap_or_default();
    assert!(shares == "512" || shares == "20", "CPU shares of {rel}: {shares:?}");
    let inside = pod.sh(&app, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max");
    assert_eq!(inside, "134217728", "the limit seen in the container");
    if handler == "nested" {
        assert_nested_traces(&pod);
        pod_range(&pod);
        assert_eq!(pod.sh(&app, "awk '/^MemTotal:/ {print $2, $3}' /proc/meminfo"), "131072 kB", "MemTotal under a 128 MiB limit");
    }
    remove_and_check(&mut pod);
    remove_kubepods();
}

#[test]
fn kubepods_cgroup_parent_runc_handler() {
    need_cri!("kubepods_cgroup_parent_runc_handler");
    kubepods("cri-kubepods-runc", "runc");
}

#[test]
fn kubepods_cgroup_parent_nested() {
    need_cri!("kubepods_cgroup_parent_nested");
    kubepods("cri-kubepods-nested", "nested");
}

fn num(v: &Value) -> u64 {
    v["value"].as_str().and_then(|s| s.parse().ok()).or_else(|| v["value"].as_u64()).unwrap_or(0)
}

/// (working set, usage, CPU ns, CPU nanocores) of a CRI ContainerStats / pod stats message.
fn figures(s: &Value) -> (u64, u64, u64, u64) {
    (num(&s["memory"]["working_set_bytes"]), num(&s["memory"]["usage_bytes"]), num(&s["cpu"]["usage_core_nano_seconds"]), num(&s["cpu"]["usage_nano_cores"]))
}

/// The stats of container `cid` from ListContainerStats (filtered by pod, as kubelet lists).
fn container_stats(pod: &Pod, cid: &str) -> Value {
    let all = cri("ListContainerStats", json!({"filter": {"pod_sandbox_id": pod.id}}));
    all["stats"].as_array().and_then(|v| v.iter().find(|s| s["attributes"]["id"] == cid).cloned()).unwrap_or_else(|| panic!("no stats for {cid}: {all}"))
}

/// The pod's entry of ListPodSandboxStats.
fn pod_stats(pod: &Pod) -> Value {
    let all = cri("ListPodSandboxStats", json!({"filter": {"id": pod.id}}));
    all["stats"].as_array().and_then(|v| v.iter().find(|s| s["attributes"]["id"] == pod.id).cloned()).unwrap_or_else(|| panic!("no pod stats for {}: {all}", pod.id))
}

/// A container that holds 24 MiB in tmpfs and keeps one CPU busy: ListContainerStats shows a
/// working set of at least that (and no more than its usage), CPU time growing between two
/// samples and a rate (nanocores) near one core; ListPodSandboxStats the same for the pod.
fn stats(test: &str, handler: &str) {
    let mut pod = Pod::run(test, handler, "CONTAINER");
    let burn = "trap 'exit 0' TERM; dd if=/dev/zero of=/dev/shm/fill bs=1M count=24 2>/dev/null; \
                timeout 60 sh -c 'while :; do :; done' & sleep 100000 & wait";
    let app = pod.start("app", &["sh", "-c", burn]);
    assert!(wait_for(20, || figures(&container_stats(&pod, &app)).0 >= 24 * MIB), "working set never reached 24 MiB: {}", container_stats(&pod, &app));
    // the rate is computed between two calls (containerd keeps the previous sample)
    let (_, _, cpu0, _) = figures(&container_stats(&pod, &app));
    let p0 = pod_stats(&pod);
    std::thread::sleep(Duration::from_secs(2));
    let s = container_stats(&pod, &app);
    let (ws, usage, cpu, cores) = figures(&s);
    println!("{handler}: working set {ws}, usage {usage}, cpu {cpu} ns, {cores} nanocores");
    assert!(ws >= 24 * MIB && ws <= usage && usage < 512 * MIB, "memory of {app}: {s}");
    // (2 CPUs shared with the other tests: the loop gets less than a core, but gets some)
    assert!(cpu >= cpu0 + 100_000_000, "CPU time of {app} grew by {} ns in 2 s of a busy loop: {s}", cpu - cpu0);
    assert!((50_000_000..=2_200_000_000).contains(&cores), "usage_nano_cores {cores} of a one-CPU busy loop: {s}");
    let p = pod_stats(&pod);
    let (pws, pusage, pcpu, pcores) = figures(&p["linux"]);
    println!("{handler}: pod working set {pws}, usage {pusage}, cpu {pcpu} ns, {pcores} nanocores");
    assert!(pws >= 24 * MIB && pws <= pusage && pusage < 1024 * MIB, "pod memory: {p}");
    assert!(pcpu >= figures(&p0["linux"]).2 + 100_000_000 && pcpu >= cpu, "pod CPU time: {p}");
    // containerd 2.1 leaves the pod's usage_nano_cores out (kubelet then computes the rate)
    if p["linux"]["cpu"].get("usage_nano_cores").is_some() {
        assert!((50_000_000..=2_200_000_000).contains(&pcores), "pod usage_nano_cores {pcores}: {p}");
    }
    let in_pod = p["linux"]["containers"].as_array().cloned().unwrap_or_default();
    assert!(in_pod.iter().any(|c| c["attributes"]["id"] == app), "the pod's stats do not list {app}: {p}");
    if handler == "nested" {
        assert_nested_traces(&pod);
    }
    remove_and_check(&mut pod);
}

#[test]
fn container_and_pod_stats_runc_handler() {
    need_cri!("container_and_pod_stats_runc_handler");
    stats("cri-stats-runc", "runc");
}

#[test]
fn container_and_pod_stats_nested() {
    need_cri!("container_and_pod_stats_nested");
    stats("cri-stats-nested", "nested");
}
