//! What critest found (docs/critest.md): a pod whose cgroup parent is a `.slice` (critest's
//! `/test.slice`) gets cgroupsPath `test.slice:cri-containerd:<id>` from containerd even with
//! the cgroupfs driver, which libcontainer and runc take literally; and StopContainer /
//! RemoveContainer of a container that already exited must succeed (containerd's shim maps
//! runc's "container not running" kill error to "already finished").
use serde_json::json;

use crate::cri::*;
use crate::util::*;

fn slice_parent_and_exited_container(test: &str, handler: &str) {
    let slice = format!("{}.slice", unique("nrslice").replace('-', "_"));
    let mut pod = Pod::run_with(test, handler, "CONTAINER", |c| c["linux"]["cgroup_parent"] = json!(format!("/{slice}")));
    let cfg = pod.container_config("once", &["sh", "-c", "head -1 /proc/stat; head -1 /proc/meminfo"]);
    let id = pod.start_config(cfg);
    let exited = wait_for(30, || cri("ContainerStatus", json!({"container_id": id}))["status"]["state"] == "CONTAINER_EXITED");
    assert!(exited, "the container did not exit");
    let st = cri("ContainerStatus", json!({"container_id": id, "verbose": true}));
    assert_eq!(st["status"]["exit_code"], 0, "the emulated /proc answers under a .slice parent: {st}");
    let log = std::fs::read_to_string(format!("{}/once/0.log", pod.log_dir)).unwrap_or_default();
    assert!(log.contains("cpu ") && log.contains("MemTotal:"), "container log: {log}");
    let cg = format!("{slice}:cri-containerd:{id}");
    // kubelet stops and removes an exited container: both succeed, as with runc
    cri_try("StopContainer", &json!({"container_id": id, "timeout": 10})).unwrap_or_else(|e| panic!("StopContainer of an exited container: {e}"));
    cri_try("RemoveContainer", &json!({"container_id": id})).unwrap_or_else(|e| panic!("RemoveContainer of an exited container: {e}"));
    pod.containers.retain(|c| *c != id);
    assert!(wait_for(10, || cgroup_dirs(&cg).is_empty()), "cgroups left: {:?}", cgroup_dirs(&cg));
    remove_and_check(&mut pod);
}

#[test]
fn slice_parent_and_exited_container_runc_handler() {
    need_cri!("slice_parent_and_exited_container_runc_handler");
    slice_parent_and_exited_container("cri-slice-runc", "runc");
}

#[test]
fn slice_parent_and_exited_container_nested() {
    need_cri!("slice_parent_and_exited_container_nested");
    slice_parent_and_exited_container("cri-slice-nested", "nested");
}
