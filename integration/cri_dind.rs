//! Docker in a Kubernetes pod (handler `nested`, no privileged), and nested pods under faults:
//! containerd restarted under a running pod, the sandbox's pause process killed from the host,
//! a pod removed while its containers still run, 20 pods made and removed at once. Each ends
//! with the checks of integration/cri.rs that nothing of the pod is left on the host.
//! Same CRI containerd as integration/cri.rs (scripts/cri-containerd.sh); the dind image is
//! imported into it by scripts/test (`scripts/cri-containerd.sh import nestrun-test/dind:latest`).
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cri::*;
use crate::util::*;

const DIND_IMAGE: &str = "docker.io/nestrun-test/dind:latest";
const GIB: u64 = 1 << 30;

/// CreateContainer + StartContainer of `image` (its own entrypoint when `cmd` is empty) with
/// the CRI linux `resources`, as kubelet sends it; returns the container id.
fn start_image(pod: &mut Pod, name: &str, image: &str, cmd: &[&str], resources: Value) -> String {
    let ns = pod.config["linux"]["security_context"]["namespace_options"].clone();
    let mut config = json!({
        "metadata": {"name": name, "attempt": 0},
        "image": {"image": image},
        "log_path": format!("{name}/0.log"),
        "labels": {"io.kubernetes.container.name": name},
        "linux": {"resources": resources, "security_context": {"namespace_options": ns}},
    });
    if !cmd.is_empty() {
        config["command"] = json!(cmd);
    }
    let r = cri("CreateContainer", json!({"pod_sandbox_id": pod.id, "config": config, "sandbox_config": pod.config}));
    let id = r["container_id"].as_str().unwrap().to_string();
    pod.containers.push(id.clone());
    if let Err(e) = cri_try("StartContainer", &json!({"container_id": id})) {
        let log = std::fs::read_to_string(format!("{}/{name}/0.log", pod.log_dir)).unwrap_or_default();
        panic!("StartContainer {name} ({id}) failed: {e}\ncontainer log:\n{log}");
    }
    id
}

fn state(method: &str, key: &str, id: &str) -> String {
    let mut req = serde_json::Map::new();
    req.insert(key.into(), id.into());
    cri(method, Value::Object(req))["status"]["state"].as_str().unwrap_or_default().to_string()
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

/// Host pids of the pod (their cgroup is under the pod's parent) that are not zombies.
fn live_pod_pids(pod_uid: &str) -> Vec<i32> {
    let needle = format!("/{}/pod{pod_uid}/", cgroup_parent_root());
    let mut v = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'));
        if !zombie && std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|s| s.contains(&needle)) {
            v.push(pid);
        }
    }
    v
}

/// The one lease file of the pod and its owner lines (nestrun state dirs, one per line).
fn pod_lease(pod: &Pod) -> (std::path::PathBuf, Vec<String>) {
    let files = leases_naming(&pod.id);
    assert_eq!(files.len(), 1, "the pod {} should have one lease file: {files:?}", pod.id);
    let owners = std::fs::read_to_string(&files[0]).unwrap_or_default().lines().map(String::from).collect();
    (files[0].clone(), owners)
}

/// A lease file's text under a shared lock: nestrun rewrites it in place under an exclusive one
/// (a plain read may see it empty halfway). Empty when it is gone.
fn read_locked(file: &std::path::Path) -> String {
    let Ok(f) = std::fs::File::open(file) else { return String::new() };
    let Ok(mut f) = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockShared) else { return String::new() };
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut *f, &mut text);
    text
}

/// What StopPodSandbox + RemovePodSandbox leave to kubelet: the pod's log dir and cgroup parent.
fn forget(pod: &mut Pod) {
    pod.removed = true;
    let _ = std::fs::remove_dir_all(&pod.log_dir);
    for d in cgroup_dirs(&format!("{}/pod{}", cgroup_parent_root(), pod.uid)) {
        let _ = std::fs::remove_dir(d);
    }
}

/// A pod running the dind image (1 GiB memory limit) and a busybox client: the inner dockerd
/// uses overlay2 and makes its bridge and iptables rules in the pod's network namespace; an
/// inner run, build and `-p 8080:80` work and the client reaches the published port; /proc
/// shows the limit; every process of the pod, inner containers included, is the pod's range.
#[test]
fn docker_in_a_pod_nested() {
    need_cri!("docker_in_a_pod_nested");
    let t0 = Instant::now();
    let mut pod = Pod::run("cri-dind", "nested", "CONTAINER");
    let dind = start_image(&mut pod, "docker", DIND_IMAGE, &[], json!({"cpu_shares": 1024, "memory_limit_in_bytes": GIB, "oom_score_adj": -997}));
    let client = pod.start("client", &["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]);
    let mut last = (0, String::new(), String::new());
    if !wait_for(150, || {
        last = pod.exec(&dind, "dind-wait 50");
        last.0 == 0
    }) {
        let (_, log, _) = pod.exec(&dind, "tail -n 30 /var/log/dockerd.log");
        let out = std::fs::read_to_string(format!("{}/docker/0.log", pod.log_dir)).unwrap_or_default();
        panic!("inner dockerd not ready: {last:?}\ndockerd.log:\n{log}\ncontainer log:\n{out}");
    }
    println!("inner dockerd ready after {:?}", t0.elapsed());

    assert_eq!(pod.sh(&dind, "docker info --format '{{.Driver}}'"), "overlay2", "inner storage driver");
    let bridge = pod.sh(&dind, "ip -4 -o addr show docker0");
    assert!(bridge.contains("docker0") && bridge.contains("inet "), "no docker0 bridge with an address: {bridge}");
    assert_eq!(pod.sh(&dind, "docker run --rm busybox echo inner-run-ok"), "inner-run-ok");
    let build = "mkdir -p /tmp/b && cd /tmp/b && printf 'FROM busybox\\nRUN echo built-in-a-pod > /built\\nCMD [\"cat\", \"/built\"]\\n' > Dockerfile \
                 && DOCKER_BUILDKIT=0 docker build -q -t pod-built . >/dev/null && docker run --rm pod-built";
    assert_eq!(pod.sh(&dind, build), "built-in-a-pod", "inner docker build");

    pod.sh(&dind, "docker run -d --name web -p 8080:80 busybox sh -c 'mkdir /www && echo hello-from-inner > /www/index.html && exec httpd -f -p 80 -h /www'");
    let nat = pod.sh(&dind, "iptables -t nat -S DOCKER");
    assert!(nat.contains("--dport 8080") && nat.contains("DNAT"), "the inner dockerd's DNAT rule for 8080 is missing:\n{nat}");
    let ip = pod.status()["status"]["network"]["ip"].as_str().unwrap_or_default().to_string();
    for host in ["127.0.0.1", ip.as_str()] {
        // busybox-static's wget segfaults on this host: HTTP by hand with nc
        let get = format!("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc {host} 8080");
        let served = wait_for(30, || {
            last = pod.exec(&client, &get);
            last.1.lines().last().is_some_and(|l| l.trim() == "hello-from-inner")
        });
        assert!(served, "the client container cannot reach the inner container's published port at {host}:8080: {last:?}");
    }

    assert_eq!(pod.sh(&dind, "awk '/^MemTotal:/ {print $2, $3}' /proc/meminfo"), "1048576 kB", "MemTotal should be the 1 GiB limit");
    assert_eq!(memory_limit(&pod, &dind).as_deref(), Some(GIB.to_string().as_str()), "memory cgroup limit");

    // From the host: the dind container's init is the pod's range, and so is every process
    // of the pod (pause, dockerd, containerd, the inner httpd, docker-proxy), none host root.
    assert_nested_traces(&pod);
    let (start, count) = pod_range(&pod);
    assert_eq!(uid_map(container_pid(&dind)), (0, start, count), "the dind container's uid_map");
    let pids = live_pod_pids(&pod.uid);
    let names: Vec<String> = pids.iter().map(|p| comm(*p)).collect();
    for want in ["pause", "dockerd", "containerd", "httpd", "docker-proxy", "sleep"] {
        assert!(names.iter().any(|n| n == want), "no {want} among the pod's processes: {names:?}");
    }
    for p in &pids {
        let u = proc_uid(*p).unwrap_or(0) as u64;
        assert!(u >= start && u < start + count, "pid {p} ({}) of the pod runs as host uid {u}, outside {start}+{count}", comm(*p));
    }
    remove_and_check(&mut pod);
    assert!(live_pod_pids(&pod.uid).is_empty(), "processes of the pod survived its removal");
    println!("docker_in_a_pod_nested: {:?}", t0.elapsed());
}

/// containerd restarted (only the daemon: shims and containers stay) under a running pod: the
/// same processes run, ExecSync works, a new container joins the pod's range, removal cleans up.
#[test]
fn containerd_restart_keeps_a_nested_pod() {
    need_cri!("containerd_restart_keeps_a_nested_pod");
    let mut pod = Pod::run("cri-restart", "nested", "CONTAINER");
    let app = pod.start("app", &["sleep", "100000"]);
    let range = pod_range(&pod);
    let pids = [pod.sandbox_pid(), container_pid(&app)];
    let t = Instant::now();
    let out = {
        let _no_calls = CRI_CALLS.write().unwrap_or_else(|e| e.into_inner());
        let mut c = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cri-containerd.sh"));
        c.arg("restart-keep");
        run_cmd(c, Duration::from_secs(120))
    };
    assert_eq!(out.code, 0, "scripts/cri-containerd.sh restart-keep: {out:?}");
    println!("containerd restarted in {:?}", t.elapsed());
    for p in pids {
        let u = proc_uid(p).map(u64::from);
        assert!(u.is_some_and(|u| u >= range.0 && u < range.0 + range.1), "pid {p} of the pod did not survive the restart (uid {u:?})");
    }
    assert_eq!(state("PodSandboxStatus", "pod_sandbox_id", &pod.id), "SANDBOX_READY");
    assert_eq!(state("ContainerStatus", "container_id", &app), "CONTAINER_RUNNING");
    assert_eq!(pod.sh(&app, "echo exec-after-restart"), "exec-after-restart");
    assert_eq!([pod.sandbox_pid(), container_pid(&app)], pids, "the recovered pod has other pids");
    pod.start("late", &["sleep", "100001"]);
    assert_eq!(pod_range(&pod), range, "a container made after the restart is not in the pod's range");
    assert_nested_traces(&pod);
    remove_and_check(&mut pod);
}

/// kill -9 of the pause process from the host: the sandbox goes NOTREADY, its container keeps
/// running and keeps the range (a new pod gets another one), ExecSync still works in it, and
/// the pod is stopped and removed without leftovers.
#[test]
fn sandbox_killed_from_the_host_nested() {
    need_cri!("sandbox_killed_from_the_host_nested");
    let mut pod = Pod::run("cri-killpause", "nested", "CONTAINER");
    let app = pod.start("app", &["sleep", "100000"]);
    let range = pod_range(&pod);
    let (lease, owners) = pod_lease(&pod);
    assert_eq!(owners.len(), 2, "the lease should list the sandbox and app: {owners:?}");
    let pause = pod.sandbox_pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pause), nix::sys::signal::Signal::SIGKILL).unwrap();
    let notready = wait_for(30, || state("PodSandboxStatus", "pod_sandbox_id", &pod.id) == "SANDBOX_NOTREADY");
    assert!(notready, "the sandbox is not NOTREADY after its pause process was killed");
    assert_eq!(state("ContainerStatus", "container_id", &app), "CONTAINER_RUNNING");
    // containerd deleted the sandbox's task: the lease now names only app, whose range it stays
    let freed = wait_for(10, || leases_naming(&pod.id).is_empty());
    let now = std::fs::read_to_string(&lease).unwrap_or_default();
    println!("lease {} after the sandbox's delete (sandbox line dropped: {freed}): {now:?}", lease.display());
    assert!(now.contains(&app), "the range was freed while container {app} runs: lease {} holds {now:?}", lease.display());
    assert_eq!(uid_map(container_pid(&app)), (0, range.0, range.1));
    let mut other = Pod::run("cri-killpause-other", "nested", "CONTAINER");
    other.start("s", &["sleep", "100000"]);
    let r2 = pod_range(&other);
    assert!(r2.0 + r2.1 <= range.0 || range.0 + range.1 <= r2.0, "a new pod got {r2:?}, the range {range:?} app still runs in");
    remove_and_check(&mut other);
    // runc's handler passes this; the shim's cwd is the sandbox's deleted bundle by now
    let exec = cri_try("ExecSync", &json!({"container_id": app, "cmd": ["echo", "exec-after-pause-died"], "timeout": 30}));
    remove_and_check(&mut pod);
    assert!(live_pod_pids(&pod.uid).is_empty(), "processes of the pod survived its removal");
    let exec = exec.unwrap_or_else(|e| panic!("ExecSync in a running container whose pause process died: {e}"));
    assert_eq!(exec["stdout"].as_str().unwrap_or_default().trim(), "exec-after-pause-died", "{exec}");
}

/// StopPodSandbox + RemovePodSandbox with both app containers running (containerd stops and
/// removes them): nothing is left, and a sampler of the lease file never sees the range freed
/// while a process of the pod is alive.
#[test]
fn pod_removed_with_running_containers_nested() {
    need_cri!("pod_removed_with_running_containers_nested");
    let mut pod = Pod::run("cri-rmrunning", "nested", "CONTAINER");
    pod.start("one", &["sleep", "100000"]);
    pod.start("two", &["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]);
    pod_range(&pod);
    let (lease, owners) = pod_lease(&pod);
    for id in pod.ids() {
        assert_eq!(owners.iter().filter(|o| o.ends_with(&format!("/{id}"))).count(), 1, "{id} is not one line of the lease: {owners:?}");
    }
    let done = AtomicBool::new(false);
    let (ids, uid) = (pod.ids(), pod.uid.clone());
    let names = ["sandbox", "one", "two"];
    let (seen, bad) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let (mut seen, mut bad) = (Vec::<Vec<&str>>::new(), vec![]);
            while !done.load(Ordering::Relaxed) {
                let text = read_locked(&lease);
                let ours: Vec<&str> = ids.iter().zip(names).filter(|(id, _)| text.contains(id.as_str())).map(|(_, n)| n).collect();
                if ours.is_empty() {
                    let live: Vec<String> = live_pod_pids(&uid).iter().map(|p| format!("{p} {}", comm(*p))).collect();
                    if !live.is_empty() && bad.len() < 5 {
                        bad.push(live);
                    }
                }
                if seen.last() != Some(&ours) {
                    seen.push(ours);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (seen, bad)
        });
        let r = cri_try("StopPodSandbox", &json!({"pod_sandbox_id": pod.id})).and_then(|_| cri_try("RemovePodSandbox", &json!({"pod_sandbox_id": pod.id})));
        forget(&mut pod);
        let gone = wait_for(10, || pod_traces(&pod).is_empty() && live_pod_pids(&pod.uid).is_empty());
        done.store(true, Ordering::Relaxed);
        r.unwrap_or_else(|e| panic!("stopping and removing pod {} with running containers: {e}", pod.id));
        assert!(gone, "pod {} left: {:#?}\nlive: {:?}", pod.id, pod_traces(&pod), live_pod_pids(&pod.uid));
        sampler.join().unwrap()
    });
    println!("owners of the lease seen, in order: {seen:?}");
    assert_eq!(seen.first().map(|o| o.len()), Some(3), "the sampler should first see all three owners: {seen:?}");
    assert_eq!(seen.last().map(|o| o.len()), Some(0), "the lease should be gone: {seen:?}");
    assert!(bad.is_empty(), "the range was freed while processes of the pod were alive: {bad:?}");
    let left = cri("ListContainers", json!({"filter": {"pod_sandbox_id": pod.id}}));
    assert!(left["containers"].as_array().is_none_or(|c| c.is_empty()), "containers left: {left}");
}

/// 20 busybox pods made by 4 threads, all running at once with disjoint ranges, then removed by
/// 4 threads, each without leftovers.
#[test]
fn twenty_pods_at_once_nested() {
    need_cri!("twenty_pods_at_once_nested");
    const PODS: usize = 20;
    const THREADS: usize = 4;
    let t0 = Instant::now();
    let next = AtomicUsize::new(0);
    let pods: Mutex<Vec<(Pod, (u64, u64))>> = Mutex::new(vec![]);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < PODS {
                    let mut p = Pod::run("cri-many", "nested", "CONTAINER");
                    // ends at StopContainer's SIGTERM (a bare sleep as PID 1 waits for the SIGKILL)
                    p.start("sleeper", &["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]);
                    let r = pod_range(&p);
                    pods.lock().unwrap_or_else(|e| e.into_inner()).push((p, r));
                }
            });
        }
    });
    let made = t0.elapsed();
    let mut all = pods.into_inner().unwrap();
    assert_eq!(all.len(), PODS);
    all.sort_by_key(|(_, r)| r.0);
    for w in all.windows(2) {
        let ((a, ra), (b, rb)) = (&w[0], &w[1]);
        assert!(ra.0 + ra.1 <= rb.0, "pods {} {ra:?} and {} {rb:?} overlap", a.id, b.id);
    }
    let t1 = Instant::now();
    let queue = Mutex::new(all);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| loop {
                let Some((mut p, _)) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop() else { break };
                remove_and_check(&mut p);
            });
        }
    });
    println!("{PODS} pods by {THREADS} threads: made and running in {made:?}, removed in {:?}, total {:?}", t1.elapsed(), t0.elapsed());
}
