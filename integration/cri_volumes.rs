//! Pod volumes as kubelet hands them to the CRI, under the `runc` and `nested` handlers: every
//! volume is a bind mount of a host path. A hostPath dir (read-write and `readOnly`), emptyDir
//! (a dir kubelet makes under its pods dir, mode 0777, shared by the pod's containers) and an
//! emptyDir with `medium: Memory` (a tmpfs kubelet mounts there).
//!
//! Ownership, the same under both handlers: files owned by host uid N show as N inside, and
//! what container uid N writes is owned by host uid N on disk. Under nested that is the
//! ID-mapped bind mount nestrun makes of every bind source (as for docker `-v`): container root
//! is an unprivileged host uid, but its writes through the mount land as host uid 0.
use std::os::unix::fs::MetadataExt;

use serde_json::json;

use crate::cri::*;
use crate::util::*;

/// A tmpfs mounted by the test on a host dir (kubelet's emptyDir `medium: Memory`), unmounted
/// on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: std::path::PathBuf) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        nix::mount::mount(Some("tmpfs"), &dir, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("mode=0777,size=16m")).unwrap_or_else(|e| panic!("mount tmpfs on {}: {e}", dir.display()));
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn owner(p: &std::path::Path) -> (u32, u32) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (m.uid(), m.gid())
}

fn volumes(test: &str, handler: &str) {
    use std::os::unix::fs::PermissionsExt;
    let host = tempdir("cri-hostpath");
    std::fs::write(host.path.join("seed"), "from-host\n").unwrap();
    std::fs::write(host.path.join("user-file"), "user\n").unwrap();
    std::os::unix::fs::chown(host.path.join("user-file"), Some(1234), Some(1234)).unwrap();
    let ro = tempdir("cri-hostpath-ro");
    std::fs::write(ro.path.join("config"), "read-only\n").unwrap();
    let kubelet = tempdir("cri-kubelet-pods");

    let mut pod = Pod::run(test, handler, "CONTAINER");
    let vols = kubelet.path.join(&pod.uid).join("volumes/kubernetes.io~empty-dir");
    let empty = vols.join("cache");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mem = Tmpfs::mount(vols.join("mem"));
    let mut cfg = pod.container_config("writer", &["sh", "-c", "trap 'exit 0' TERM; echo started > /cache/started; sleep 100000 & wait"]);
    cfg["mounts"] = json!([
        {"container_path": "/host", "host_path": host.path},
        {"container_path": "/ro", "host_path": ro.path, "readonly": true},
        {"container_path": "/cache", "host_path": empty},
        {"container_path": "/mem", "host_path": mem.0},
    ]);
    let writer = pod.start_config(cfg);
    let mut cfg = pod.container_config("reader", &["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]);
    cfg["mounts"] = json!([{"container_path": "/cache", "host_path": empty, "readonly": true}]);
    cfg["linux"]["security_context"]["run_as_user"] = json!({"value": 1000});
    let reader = pod.start_config(cfg);

    // host files keep their owners inside
    assert_eq!(pod.sh(&writer, "cat /host/seed; stat -c '%u %g' /host/seed /host/user-file"), "from-host\n0 0\n1234 1234");
    // writes by container root: root's inside, host uid 0 on disk
    pod.sh(&writer, "echo w > /host/new && mkdir /host/dir && echo e > /cache/e && echo m > /mem/m");
    assert_eq!(pod.sh(&writer, "stat -c '%u %g' /host/new /host/dir /cache/e /mem/m /cache/started"), "0 0\n0 0\n0 0\n0 0\n0 0");
    for p in [host.path.join("new"), host.path.join("dir"), empty.join("e"), empty.join("started"), mem.0.join("m")] {
        assert_eq!(owner(&p), (0, 0), "{} written by container root", p.display());
    }
    assert_eq!(std::fs::read_to_string(host.path.join("new")).unwrap_or_default(), "w\n");
    // root in the container may chown within the volume, to ids it has (as under runc)
    pod.sh(&writer, "touch /host/chowned && chown 1234:1234 /host/chowned");
    assert_eq!(owner(&host.path.join("chowned")), (1234, 1234));
    // readOnly volumes
    assert_eq!(pod.sh(&writer, "cat /ro/config"), "read-only");
    let (code, _, err) = pod.exec(&writer, "touch /ro/x");
    assert!(code != 0 && err.contains("Read-only file system"), "write to a readOnly hostPath: {err}");
    assert!(!ro.path.join("x").exists());
    // emptyDir shared: the reader (uid 1000, readOnly) sees the writer's files and cannot write
    assert_eq!(pod.sh(&reader, "cat /cache/e /cache/started; id -u"), "e\nstarted\n1000");
    let (code, _, err) = pod.exec(&reader, "touch /cache/r");
    assert!(code != 0 && err.contains("Read-only file system"), "write to a readOnly emptyDir: {err}");
    // uid 1000 writes into the memory emptyDir: host uid 1000 on the tmpfs
    let mut cfg = pod.container_config("user", &["sh", "-c", "echo u > /mem/u; trap 'exit 0' TERM; sleep 100000 & wait"]);
    cfg["mounts"] = json!([{"container_path": "/mem", "host_path": mem.0}]);
    cfg["linux"]["security_context"]["run_as_user"] = json!({"value": 1000});
    cfg["linux"]["security_context"]["run_as_group"] = json!({"value": 1000});
    let user = pod.start_config(cfg);
    assert_eq!(pod.sh(&user, "stat -c '%u %g' /mem/u"), "1000 1000");
    assert_eq!(owner(&mem.0.join("u")), (1000, 1000));
    if handler == "nested" {
        assert_nested_traces(&pod);
        pod_range(&pod);
    }
    remove_and_check(&mut pod);
    // the volumes outlive the pod (kubelet removes emptyDirs itself)
    assert!(host.path.join("new").exists() && empty.join("e").exists() && mem.0.join("m").exists());
    drop(mem);
}

#[test]
fn host_path_and_empty_dir_volumes_runc_handler() {
    need_cri!("host_path_and_empty_dir_volumes_runc_handler");
    volumes("cri-vol-runc", "runc");
}

#[test]
fn host_path_and_empty_dir_volumes_nested() {
    need_cri!("host_path_and_empty_dir_volumes_nested");
    volumes("cri-vol-nested", "nested");
}

/// critest's `non-recursive readonly mounts`: a hostPath with a tmpfs mounted inside, bound
/// read-only (the submount stays writable); while the container runs, the host unmounts the
/// tmpfs and removes the hostPath, as critest's cleanup does (kubelet's volume teardown too).
/// Under runc the kernel detaches the container's copies; nestrun's host-side copy of the
/// bind source must not pin the submount's directory in the host's namespace (EBUSY).
fn submount_removed_while_running(test: &str, handler: &str) {
    let host = tempdir("cri-hostpath-sub");
    let sub = Tmpfs::mount(host.path.join("tmpfs"));
    let mut pod = Pod::run(test, handler, "CONTAINER");
    let mut cfg = pod.container_config("c", &["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]);
    cfg["mounts"] = json!([{"container_path": "/mnt", "host_path": host.path, "readonly": true}]);
    let c = pod.start_config(cfg);
    pod.sh(&c, "touch /mnt/tmpfs/file");
    let (code, _, err) = pod.exec(&c, "touch /mnt/x");
    assert!(code != 0 && err.contains("Read-only file system"), "write to the readOnly hostPath: {err}");
    nix::mount::umount2(&sub.0, nix::mount::MntFlags::MNT_DETACH).unwrap_or_else(|e| panic!("umount {}: {e}", sub.0.display()));
    std::fs::remove_dir_all(&host.path).unwrap_or_else(|e| panic!("the host cannot remove {} while a {handler} container has it bound: {e}", host.path.display()));
    assert_eq!(pod.sh(&c, "echo alive"), "alive");
    remove_and_check(&mut pod);
}

#[test]
fn host_path_submount_removed_while_running_runc_handler() {
    need_cri!("host_path_submount_removed_while_running_runc_handler");
    submount_removed_while_running("cri-sub-runc", "runc");
}

#[test]
fn host_path_submount_removed_while_running_nested() {
    need_cri!("host_path_submount_removed_while_running_nested");
    submount_removed_while_running("cri-sub-nested", "nested");
}

/// CRI `recursive_read_only` (containerd >= 2.0, critest's `recursive readonly mounts`):
/// containerd reports a handler able to do it when the runtime's `features` list `rro` (runc
/// does), and then sends `rro`: the tmpfs inside the read-only hostPath is read-only too.
/// containerd 1.x reports no handler features and knows no such field: nothing to check there.
fn recursive_read_only(test: &str, handler: &str) {
    let st = cri("Status", json!({}));
    let handlers = st["runtime_handlers"].as_array().cloned().unwrap_or_default();
    if handlers.is_empty() {
        eprintln!("{test}: this containerd reports no runtime handler features (containerd 1.x): no recursive read-only mounts to check (scripts/test reruns the CRI tests on containerd 2.1)");
        return;
    }
    let rro = handlers.iter().find(|h| h["name"] == handler).map(|h| h["features"]["recursive_read_only_mounts"].clone());
    assert_eq!(rro, Some(json!(true)), "containerd does not report recursive read-only mounts for {handler}: {st}");
    let host = tempdir("cri-hostpath-rro");
    let sub = Tmpfs::mount(host.path.join("tmpfs"));
    let mut pod = Pod::run(test, handler, "CONTAINER");
    let mut cfg = pod.container_config("c", &["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]);
    cfg["mounts"] = json!([{"container_path": "/mnt", "host_path": host.path, "readonly": true, "recursive_read_only": true}]);
    let c = pod.start_config(cfg);
    for f in ["/mnt/x", "/mnt/tmpfs/x"] {
        let (code, _, err) = pod.exec(&c, &format!("touch {f}"));
        assert!(code != 0 && err.contains("Read-only file system"), "touch {f} in a recursive read-only hostPath: exit {code}, {err}");
    }
    remove_and_check(&mut pod);
    drop(sub);
}

#[test]
fn host_path_recursive_read_only_runc_handler() {
    need_cri!("host_path_recursive_read_only_runc_handler");
    recursive_read_only("cri-rro-runc", "runc");
}

#[test]
fn host_path_recursive_read_only_nested() {
    need_cri!("host_path_recursive_read_only_nested");
    recursive_read_only("cri-rro-nested", "nested");
}
