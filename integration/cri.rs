//! Kubernetes: nestrun as a RuntimeClass handler. containerd's CRI plugin (the private one of
//! scripts/cri-containerd.sh, handlers `runc` and `nested`) driven the way kubelet drives it,
//! one CRI call per run of scripts/cri.py: RunPodSandbox, CreateContainer + StartContainer,
//! ExecSync, ContainerStatus, ListContainers, UpdateContainerResources, ContainerStats, then
//! StopContainer, StopPodSandbox, RemoveContainer, RemovePodSandbox. Each pod gets a cgroup
//! parent /nestrun-test-cri/pod<uid> (kubelet's /kubepods/... role), removed with the pod.
//! Runs when NESTRUN_TEST_CRI is set (scripts/test: `scripts/cri-containerd.sh env`).
use std::process::Command;
use std::sync::RwLock;
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

const IMAGE: &str = "docker.io/nestrun-test/busybox:latest";

/// The pods' cgroup parent root (kubelet's /kubepods role), as scripts/cri-containerd.sh's `env`
/// names it (NESTRUN_CRI_CGROUP_PARENT; a second instance has its own).
pub(crate) fn cgroup_parent_root() -> String {
    std::env::var("NESTRUN_CRI_CGROUP_PARENT").unwrap_or_else(|_| "nestrun-test-cri".into())
}

/// The CNI network of that containerd (NESTRUN_CRI_NET).
fn cni_net() -> String {
    std::env::var("NESTRUN_CRI_NET").unwrap_or_else(|_| "nestrun-cri".into())
}

/// What every pod IP of that network starts with: its /24 subnet (NESTRUN_CRI_SUBNET) up to the
/// last dot, e.g. "10.88.77.".
pub(crate) fn pod_ip_prefix() -> String {
    let subnet = std::env::var("NESTRUN_CRI_SUBNET").unwrap_or_else(|_| "10.88.77.0/24".into());
    subnet.rsplit_once('.').map(|(a, _)| format!("{a}.")).unwrap_or(subnet)
}

/// True when the CRI containerd of scripts/cri-containerd.sh is there. Otherwise prints the skip line.
pub(crate) fn cri_enabled(test: &str) -> bool {
    if std::env::var_os("NESTRUN_TEST_CRI").is_some_and(|v| !v.is_empty() && v != "0") {
        return true;
    }
    crate::skip::skip("engine", test, "run scripts/test (needs scripts/cri-containerd.sh; NESTRUN_TEST_CRI is unset)");
    false
}

macro_rules! need_cri {
    ($name:expr) => {
        if !crate::cri::cri_enabled($name) {
            return;
        }
    };
}
pub(crate) use need_cri;

/// Every CRI call holds this for reading; a test that restarts the CRI containerd holds it for
/// writing, so the calls of tests running beside it wait instead of failing.
pub(crate) static CRI_CALLS: RwLock<()> = RwLock::new(());

/// One CRI call: the answer as JSON, or cri.py's error line.
pub(crate) fn cri_try(method: &str, req: &Value) -> Result<Value, String> {
    let _call = CRI_CALLS.read().unwrap_or_else(|e| e.into_inner());
    let python = std::env::var("NESTRUN_CRI_PYTHON").unwrap_or_else(|_| "/var/lib/nestrun-test/cri-venv/bin/python".into());
    let mut c = Command::new(python);
    c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cri.py"));
    if let Ok(a) = std::env::var("NESTRUN_CRI_ADDRESS") {
        c.args(["--address", &a]);
    }
    c.args([method, &req.to_string()]);
    let o = run_cmd(c, Duration::from_secs(240));
    if o.code != 0 {
        return Err(format!("{} {}", o.stderr.trim(), o.stdout.trim()));
    }
    serde_json::from_str(&o.stdout).map_err(|e| format!("{method}: bad JSON answer ({e}): {}", o.stdout))
}

pub(crate) fn cri(method: &str, req: Value) -> Value {
    cri_try(method, &req).unwrap_or_else(|e| panic!("CRI {method} {req} failed: {e}"))
}

/// What ExecSync gave: (exit code, stdout, stderr).
pub(crate) type Exec = (i64, String, String);

/// A pod sandbox and its containers; stopped and removed (best effort) on drop.
pub(crate) struct Pod {
    pub(crate) id: String,
    pub(crate) uid: String,
    pub(crate) config: Value,
    pub(crate) log_dir: String,
    pub(crate) containers: Vec<String>,
    pub(crate) netns: String,
    pub(crate) removed: bool,
}

impl Pod {
    /// RunPodSandbox with `handler`; `pid` is the pod's PID namespace mode (POD or CONTAINER).
    pub(crate) fn run(test: &str, handler: &str, pid: &str) -> Pod {
        Pod::run_with(test, handler, pid, |_| {})
    }

    /// RunPodSandbox of the config `run` sends after `edit` changed it (its `linux.cgroup_parent`
    /// is the pod's cgroup, removed with the pod).
    pub(crate) fn run_with(test: &str, handler: &str, pid: &str, edit: impl FnOnce(&mut Value)) -> Pod {
        Pod::try_run_with(test, handler, pid, edit).unwrap_or_else(|e| panic!("RunPodSandbox with {handler}: {e}"))
    }

    /// `run_with`, with the CRI's error line when RunPodSandbox fails.
    pub(crate) fn try_run_with(test: &str, handler: &str, pid: &str, edit: impl FnOnce(&mut Value)) -> Result<Pod, String> {
        let name = unique(test);
        let uid = format!("{name}-uid");
        let logs = std::env::var("NESTRUN_CRI_LOGS").unwrap_or_else(|_| "/var/lib/nestrun-test/cri-logs".into());
        let log_dir = format!("{logs}/{uid}");
        std::fs::create_dir_all(&log_dir).unwrap();
        let config = json!({
            "metadata": {"name": name, "uid": uid, "namespace": "nestrun-test", "attempt": 0},
            "hostname": name,
            "log_directory": log_dir,
            "labels": {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": "nestrun-test", "io.kubernetes.pod.uid": uid},
            "linux": {
                "cgroup_parent": format!("/{}/pod{uid}", cgroup_parent_root()),
                "security_context": {"namespace_options": {"network": "POD", "pid": pid, "ipc": "POD"}},
            },
        });
        let mut config = config;
        edit(&mut config);
        let r = cri_try("RunPodSandbox", &json!({"config": config, "runtime_handler": handler}))?;
        let id = r["pod_sandbox_id"].as_str().unwrap().to_string();
        let mut pod = Pod { id, uid, config, log_dir, containers: vec![], netns: String::new(), removed: false };
        let st = pod.status();
        assert_eq!(st["status"]["state"], "SANDBOX_READY", "{st}");
        assert_eq!(st["status"]["runtime_handler"], handler);
        let nss = st["info"]["info"]["runtimeSpec"]["linux"]["namespaces"].as_array().cloned().unwrap_or_default();
        pod.netns = nss.iter().find(|n| n["type"] == "network").and_then(|n| n["path"].as_str()).unwrap_or_default().to_string();
        assert!(!pod.netns.is_empty(), "sandbox has no network namespace path: {st}");
        Ok(pod)
    }

    /// The pod's cgroup parent (config `linux.cgroup_parent`) without the leading `/`.
    pub(crate) fn cgroup_parent(&self) -> String {
        self.config["linux"]["cgroup_parent"].as_str().unwrap_or_default().trim_start_matches('/').to_string()
    }

    pub(crate) fn status(&self) -> Value {
        cri("PodSandboxStatus", json!({"pod_sandbox_id": self.id, "verbose": true}))
    }

    /// The host pid of the pause process.
    pub(crate) fn sandbox_pid(&self) -> i32 {
        let st = self.status();
        let pid = st["info"]["info"]["pid"].as_i64().unwrap_or(0) as i32;
        assert!(pid > 0, "sandbox {} has no pid: {st}", self.id);
        pid
    }

    /// CreateContainer + StartContainer of the busybox image running `cmd`, as kubelet sends it
    /// for a BestEffort container; returns the container id.
    pub(crate) fn start(&mut self, name: &str, cmd: &[&str]) -> String {
        let config = self.container_config(name, cmd);
        self.start_config(config)
    }

    /// The CreateContainer config `start` sends (BestEffort busybox running `cmd`), to edit.
    pub(crate) fn container_config(&self, name: &str, cmd: &[&str]) -> Value {
        let ns = self.config["linux"]["security_context"]["namespace_options"].clone();
        json!({
            "metadata": {"name": name, "attempt": 0},
            "image": {"image": IMAGE},
            "command": cmd,
            "log_path": format!("{name}/0.log"),
            "labels": {"io.kubernetes.container.name": name},
            "linux": {"resources": {"cpu_shares": 2, "oom_score_adj": 1000}, "security_context": {"namespace_options": ns}},
        })
    }

    /// CreateContainer of `config` in the pod: the container id, or the CRI's error line.
    pub(crate) fn create(&mut self, config: &Value) -> Result<String, String> {
        let r = cri_try("CreateContainer", &json!({"pod_sandbox_id": self.id, "config": config, "sandbox_config": self.config}))?;
        let id = r["container_id"].as_str().unwrap().to_string();
        self.containers.push(id.clone());
        Ok(id)
    }

    /// CreateContainer + StartContainer of `config`; panics with the container's log.
    pub(crate) fn start_config(&mut self, config: Value) -> String {
        let id = self.create(&config).unwrap_or_else(|e| panic!("CreateContainer {config}: {e}"));
        if let Err(e) = cri_try("StartContainer", &json!({"container_id": id})) {
            let log = std::fs::read_to_string(format!("{}/{}", self.log_dir, config["log_path"].as_str().unwrap_or_default())).unwrap_or_default();
            panic!("StartContainer {} ({id}) failed: {e}\ncontainer log:\n{log}", config["metadata"]["name"]);
        }
        id
    }

    pub(crate) fn exec(&self, cid: &str, script: &str) -> Exec {
        let r = cri("ExecSync", json!({"container_id": cid, "cmd": ["sh", "-c", script], "timeout": 60}));
        (r["exit_code"].as_i64().unwrap_or(-1), r["stdout"].as_str().unwrap_or_default().into(), r["stderr"].as_str().unwrap_or_default().into())
    }

    /// ExecSync that must exit 0; its stdout, trimmed.
    pub(crate) fn sh(&self, cid: &str, script: &str) -> String {
        let (code, out, err) = self.exec(cid, script);
        assert_eq!(code, 0, "ExecSync `{script}` in {cid}: exit {code}\nstdout: {out}\nstderr: {err}");
        out.trim().to_string()
    }

    /// kubelet's order when a pod is deleted: stop the containers, stop the sandbox, then
    /// (garbage collection) remove the containers and the sandbox; then the pod cgroup.
    pub(crate) fn remove(&mut self) -> Result<(), String> {
        self.removed = true;
        let mut errs = vec![];
        for c in &self.containers {
            errs.extend(cri_try("StopContainer", &json!({"container_id": c, "timeout": 10})).err());
        }
        errs.extend(cri_try("StopPodSandbox", &json!({"pod_sandbox_id": self.id})).err());
        for c in &self.containers {
            errs.extend(cri_try("RemoveContainer", &json!({"container_id": c})).err());
        }
        errs.extend(cri_try("RemovePodSandbox", &json!({"pod_sandbox_id": self.id})).err());
        let _ = std::fs::remove_dir_all(&self.log_dir);
        for d in cgroup_dirs(&self.cgroup_parent()) {
            let _ = std::fs::remove_dir(d);
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("\n"))
        }
    }

    /// Every id of the pod: the sandbox's first.
    pub(crate) fn ids(&self) -> Vec<String> {
        std::iter::once(self.id.clone()).chain(self.containers.iter().cloned()).collect()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if !self.removed {
            let _ = self.remove();
        }
    }
}

/// The host pid of container `cid`'s init (ContainerStatus verbose).
pub(crate) fn container_pid(cid: &str) -> i32 {
    let st = cri("ContainerStatus", json!({"container_id": cid, "verbose": true}));
    let pid = st["info"]["info"]["pid"].as_i64().unwrap_or(0) as i32;
    assert!(pid > 0, "container {cid} has no pid: {st}");
    pid
}

/// (host id, count) of root from `cat /proc/.../uid_map` text: a single line starting at 0.
pub(crate) fn root_range(uid_map: &str) -> (u64, u64) {
    let f: Vec<u64> = uid_map.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    assert_eq!(f.len(), 3, "uid_map should be one line: {uid_map:?}");
    assert_eq!(f[0], 0, "uid_map should start at 0: {uid_map:?}");
    assert!(f[1] >= POOL_START as u64, "root maps to host uid {}, below nestrun's pool: {uid_map:?}", f[1]);
    assert_eq!(f[2], 65536, "{uid_map:?}");
    (f[1], f[2])
}

/// The pod's range, the same in the pause process (read from the host) and in every container.
pub(crate) fn pod_range(pod: &Pod) -> (u64, u64) {
    let (inside, host, count) = uid_map(pod.sandbox_pid());
    let sandbox = root_range(&format!("{inside} {host} {count}"));
    for c in &pod.containers {
        assert_eq!(root_range(&pod.sh(c, "cat /proc/self/uid_map")), sandbox, "container {c} is not in the sandbox's range");
    }
    sandbox
}

/// CNI allocations (host-local files) and cached results that name `pod_id`.
fn cni_traces(pod_id: &str) -> Vec<String> {
    let mut v = vec![];
    for dir in [format!("/var/lib/cni/networks/{}", cni_net()), "/var/lib/cni/results".into()] {
        for e in std::fs::read_dir(&dir).map(|r| r.flatten().collect::<Vec<_>>()).unwrap_or_default() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(pod_id) || std::fs::read_to_string(e.path()).is_ok_and(|s| s.contains(pod_id)) {
                v.push(e.path().display().to_string());
            }
        }
    }
    v
}

/// What nestrun and the CRI made for the pod's ids while it runs, seen from the host.
pub(crate) fn pod_traces(pod: &Pod) -> Vec<String> {
    let mut v = vec![];
    for id in pod.ids() {
        v.extend(mounts_containing(&format!("/run/nestrun-mnt/{id}-")).into_iter().map(|m| format!("mount {m}")));
        v.extend(entries_with_prefix("/run/nestrun-mnt", &format!("{id}-")).iter().map(|p| format!("dir {}", p.display())));
        v.extend(leases_naming(&id).iter().map(|p| format!("lease {}", p.display())));
        v.extend(entries_with_prefix("/var/lib/nestrun/data", &format!("{id}-")).iter().map(|p| format!("data {}", p.display())));
        v.extend(fuse_server_pids(&id).iter().map(|p| format!("fuse-serve pid {p} of {id}")));
        v.extend(pids_in_cgroup_of(&id).iter().map(|p| format!("pid {p} in the cgroup of {id}")));
        v.extend(cgroup_dirs(&format!("{}/{id}", pod.cgroup_parent())).iter().map(|p| format!("cgroup {}", p.display())));
    }
    v.extend(cgroup_dirs(&pod.cgroup_parent()).iter().map(|p| format!("pod cgroup {}", p.display())));
    v.extend(cni_traces(&pod.id).into_iter().map(|p| format!("CNI {p}")));
    v.extend(mounts_containing(&pod.netns).into_iter().map(|m| format!("netns mount {m}")));
    if std::path::Path::new(&pod.netns).exists() {
        v.push(format!("netns file {}", pod.netns));
    }
    v
}

/// Removes the pod the kubelet way and asserts nothing of it is left on the host.
pub(crate) fn remove_and_check(pod: &mut Pod) {
    pod.remove().unwrap_or_else(|e| panic!("removing pod {}: {e}", pod.id));
    let ok = wait_for(10, || pod_traces(pod).is_empty());
    assert!(ok, "pod {} left: {:#?}", pod.id, pod_traces(pod));
}

pub(crate) fn assert_nested_traces(pod: &Pod) {
    for id in pod.ids() {
        assert!(!mounts_containing(&format!("/run/nestrun-mnt/{id}-")).is_empty(), "no nestrun mounts for {id}: is it a nested container?");
        assert!(!leases_naming(&id).is_empty(), "no uid lease names {id}");
        assert!(!fuse_server_pids(&id).is_empty(), "no fuse-serve for {id}");
    }
}

/// A memory cgroup file of container `cid` (v1 limit_in_bytes or v2 memory.max).
pub(crate) fn memory_limit(pod: &Pod, cid: &str) -> Option<String> {
    cgroup_dirs(&format!("{}/{cid}", pod.cgroup_parent()))
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("memory.limit_in_bytes")).or_else(|_| std::fs::read_to_string(d.join("memory.max"))).ok())
        .map(|s| s.trim().to_string())
}

/// Two containers of one pod: exec in each, localhost between them, their own PID namespaces,
/// the calls kubelet makes on running containers, then removal leaving nothing.
fn two_containers(test: &str, handler: &str) {
    let mut pod = Pod::run(test, handler, "CONTAINER");
    let web = pod.start("web", &["sh", "-c", "mkdir -p /tmp/www && echo hello-from-web >/tmp/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www"]);
    let client = pod.start("client", &["sleep", "100000"]);
    for c in [&web, &client] {
        assert_eq!(pod.sh(c, "echo ok; id -u; hostname"), format!("ok\n0\n{}", pod.config["hostname"].as_str().unwrap()));
    }
    // the pod IP containerd reports (CNI's) is the one the containers have
    let ip = pod.status()["status"]["network"]["ip"].as_str().unwrap_or_default().to_string();
    assert!(ip.starts_with(&pod_ip_prefix()), "pod IP {ip:?} is not from the CNI range");
    let addrs = pod.sh(&client, "ip -4 -o addr show");
    assert!(addrs.contains(&format!("inet {ip}/24")), "client does not have the pod IP {ip}:\n{addrs}");
    let mut last = (0, String::new(), String::new());
    let served = wait_for(30, || {
        // busybox-static 1.35's wget segfaults here (also under docker + runc): HTTP by hand
        last = pod.exec(&client, r#"printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc 127.0.0.1 8080"#);
        last.1.lines().last().is_some_and(|l| l.trim() == "hello-from-web")
    });
    assert!(served, "client cannot reach web on localhost: {last:?}");
    // ... and back, with nc: a listener in client, a sender in web
    // its stdin stays open (at /dev/null's EOF busybox nc -l could exit before the peer's
    // data); nothing of the pipeline holds ExecSync's output pipes (it would wait for them)
    let (code, out, err) = pod.exec(&client, "(sleep 1000 2>/dev/null | nc -l -p 9090 >/tmp/got 2>&1) </dev/null >/dev/null 2>&1 & sleep 1; echo done");
    assert_eq!((code, out.trim()), (0, "done"), "{err}");
    // sent again until it lands: on a loaded machine the listener may not be up after 1 s
    let got = wait_for(20, || {
        pod.exec(&web, "echo ping-from-web | nc 127.0.0.1 9090");
        pod.exec(&client, "cat /tmp/got").1.trim() == "ping-from-web"
    });
    assert!(got, "nc from web to client on localhost: {:?}", pod.exec(&client, "cat /tmp/got; ps -o pid,args"));
    // a PID namespace per container: client does not see httpd
    let ps = pod.sh(&client, "ps -o pid,args");
    assert!(!ps.contains("httpd"), "client sees web's processes without a shared PID namespace:\n{ps}");

    let list = cri("ListContainers", json!({"filter": {"pod_sandbox_id": pod.id}}));
    let states: Vec<&str> = list["containers"].as_array().unwrap().iter().map(|c| c["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["CONTAINER_RUNNING", "CONTAINER_RUNNING"], "{list}");
    let st = cri("ContainerStatus", json!({"container_id": web, "verbose": true}));
    assert_eq!(st["status"]["state"], "CONTAINER_RUNNING", "{st}");
    assert!(st["info"]["info"]["pid"].as_i64().unwrap_or(0) > 0, "{st}");

    cri("UpdateContainerResources", json!({"container_id": client, "linux": {"cpu_shares": 512, "memory_limit_in_bytes": 268435456}}));
    let limit = memory_limit(&pod, &client);
    assert_eq!(limit.as_deref(), Some("268435456"), "memory limit after UpdateContainerResources");
    let stats = cri("ContainerStats", json!({"container_id": web}));
    let ws: u64 = stats["stats"]["memory"]["working_set_bytes"]["value"].as_str().unwrap_or("0").parse().unwrap();
    let cpu: u64 = stats["stats"]["cpu"]["usage_core_nano_seconds"]["value"].as_str().unwrap_or("0").parse().unwrap();
    assert!(ws > 0 && cpu > 0, "ContainerStats: {stats}");

    if handler == "nested" {
        assert_nested_traces(&pod);
        let (host, _) = pod_range(&pod);
        assert!(pids_in_uid_range(host, 65536).len() >= 3, "pause, httpd and sleep should run in the pod's range");
    }
    remove_and_check(&mut pod);
}

#[test]
fn pod_with_two_containers_runc_handler() {
    need_cri!("pod_with_two_containers_runc_handler");
    two_containers("cri-two-runc", "runc");
}

#[test]
fn pod_with_two_containers_nested() {
    need_cri!("pod_with_two_containers_nested");
    two_containers("cri-two-nested", "nested");
}

#[test]
fn two_nested_pods_get_disjoint_ranges() {
    need_cri!("two_nested_pods_get_disjoint_ranges");
    let mut pods: Vec<Pod> = (0..2).map(|_| Pod::run("cri-disjoint", "nested", "CONTAINER")).collect();
    for p in pods.iter_mut() {
        p.start("sleeper", &["sleep", "100000"]);
    }
    let (a, b) = (pod_range(&pods[0]), pod_range(&pods[1]));
    assert!(a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0, "two pods share host uids: {a:?} and {b:?}");
    for p in pods.iter_mut() {
        remove_and_check(p);
    }
}

/// shareProcessNamespace: true. Each container sees the other's processes and the pause
/// process as PID 1.
fn shared_pid(test: &str, handler: &str) {
    let mut pod = Pod::run(test, handler, "POD");
    let one = pod.start("one", &["sleep", "100001"]);
    let two = pod.start("two", &["sleep", "100002"]);
    for (c, other) in [(&one, "sleep 100002"), (&two, "sleep 100001")] {
        let ps = pod.sh(c, "ps -o pid,args");
        assert!(ps.contains(other), "{c} does not see `{other}` in the pod's PID namespace:\n{ps}");
        assert_eq!(pod.sh(c, "tr '\\0' ' ' </proc/1/cmdline"), "/pause", "PID 1 of the pod should be pause:\n{ps}");
    }
    if handler == "nested" {
        assert_nested_traces(&pod);
        pod_range(&pod);
    }
    // a signal across containers: two ends one's sleep (then `one` exits)
    pod.sh(&two, r#"for p in /proc/[0-9]*; do [ "$(tr '\0' ' ' <$p/cmdline)" = "sleep 100001 " ] && kill ${p#/proc/}; done; true"#);
    let exited = wait_for(20, || cri("ContainerStatus", json!({"container_id": one}))["status"]["state"] == "CONTAINER_EXITED");
    assert!(exited, "container one did not exit after two killed its process");
    remove_and_check(&mut pod);
}

#[test]
fn shared_pid_namespace_runc_handler() {
    need_cri!("shared_pid_namespace_runc_handler");
    shared_pid("cri-pidns-runc", "runc");
}

#[test]
fn shared_pid_namespace_nested() {
    need_cri!("shared_pid_namespace_nested");
    shared_pid("cri-pidns-nested", "nested");
}
