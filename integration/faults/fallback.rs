//! The chown fallback (`NESTRUN_IDMAP=off`; what a kernel without ID-mapped overlay lower
//! layers gets): container root still owns its files, the engine's lower layers are never
//! touched, and delete removes the per-container copies.
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::{need_root, Env};

/// What root inside can do and whom the image's files belong to, written to /etc/result.
const OWNER_PROBE: &str = "busybox touch /etc/written && echo $(busybox stat -c %u:%g /bin/busybox) > /etc/result; sleep 30";

/// `sh -c script` as the bundle's process, on a writable rootfs.
fn probe(env: &Env, script: &str) {
    let cfg = env.dir.join("bundle/config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["process"]["args"] = serde_json::json!(["sh", "-c", script]);
    v["root"]["readonly"] = false.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
}

/// Unmounts (lazily) when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// An engine-style overlay at the bundle's rootfs over `lowers` (top first), with an upper and
/// a work dir in `<env>/layer`. Returns the upper dir and the guard that unmounts it.
fn engine_overlay(env: &Env, lowers: &[&Path]) -> (std::path::PathBuf, Unmount) {
    let (upper, work, rootfs) = (env.dir.join("layer/diff"), env.dir.join("layer/work"), env.dir.join("bundle/rootfs"));
    for d in [&upper, &work, &rootfs] {
        std::fs::create_dir_all(d).unwrap();
    }
    let lowerdir = lowers.iter().map(|l| l.display().to_string()).collect::<Vec<_>>().join(":");
    let opts = format!("lowerdir={lowerdir},upperdir={},workdir={}", upper.display(), work.display());
    assert!(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(&rootfs).status().unwrap().success());
    (upper, Unmount(rootfs))
}

fn result(rootfs: &Path) -> String {
    let f = rootfs.join("etc/result");
    for _ in 0..100 {
        if let Ok(s) = std::fs::read_to_string(&f) {
            if !s.is_empty() {
                return s.trim().to_string();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the container wrote no {}", f.display());
}

fn host_base(env: &Env, id: &str) -> u32 {
    let map = std::fs::read_to_string(format!("/proc/{}/uid_map", env.init_pid(id))).unwrap();
    map.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn chown_fallback_of_a_directory_rootfs() {
    need_root!();
    let env = Env::new("chownfs-dir").var("NESTRUN_IDMAP", "off");
    probe(&env, OWNER_PROBE);
    let id = format!("chownfs-dir-{}", std::process::id());
    env.create_ok(&id);
    assert!(env.nestrun(&["start", &id], None).status.success());
    let rootfs = env.dir.join("bundle/rootfs");
    assert_eq!(result(&rootfs), "0:0", "image files must belong to root inside");
    let base = host_base(&env, &id);
    assert!(base >= 1 << 20, "container root is host uid {base}");
    for f in ["bin/busybox", "etc/written"] {
        let m = std::fs::symlink_metadata(rootfs.join(f)).unwrap();
        assert_eq!((m.uid(), m.gid()), (base, base), "{f} on the host");
    }
    env.delete_ok(&id, true);
    env.assert_clean(&id, "after delete");
}

#[test]
fn chown_fallback_copies_overlay_lowers_and_delete_removes_them() {
    need_root!();
    let env = Env::new("chownfs-ovl").var("NESTRUN_IDMAP", "off");
    probe(&env, OWNER_PROBE);
    // An engine-style overlay: the bundle's files become the (root-owned) lower layer.
    let lower = env.dir.join("lower");
    std::fs::rename(env.dir.join("bundle/rootfs"), &lower).unwrap();
    let (upper, _u) = engine_overlay(&env, &[&lower]);

    let id = format!("chownfs-ovl-{}", std::process::id());
    env.create_ok(&id);
    assert!(env.nestrun(&["start", &id], None).status.success());
    assert_eq!(result(&upper), "0:0", "image files must belong to root inside");
    let base = host_base(&env, &id);
    assert_eq!(std::fs::metadata(lower.join("bin/busybox")).unwrap().uid(), 0, "the lower layer was changed");
    assert_eq!(std::fs::metadata(upper.join("etc/written")).unwrap().uid(), base, "a file written inside");
    let copies: Vec<_> = std::fs::read_dir(env.dir.join("layer")).unwrap().flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with("-lowers")).collect();
    assert_eq!(copies.len(), 1, "one copy dir of the lower layers beside the upper: {copies:?}");
    assert_eq!(std::fs::metadata(copies[0].join("0/bin/busybox")).unwrap().uid(), base, "the copy is re-owned to the range");
    env.delete_ok(&id, true);
    env.assert_clean(&id, "after delete");
    assert!(!copies[0].exists(), "delete left the copies in {}", copies[0].display());
}

/// An engine-style overlay of two lower layers: the rebuilt overlay keeps their order and their
/// root-owned files show as root inside, whether the ID-mapped layers are handed to the kernel
/// as descriptors (Linux >= 6.13: no host mount per layer) or attached and mounted by path
/// (`NESTRUN_OVERLAY_FDS=off`, what older kernels get).
#[test]
fn overlay_lowers_by_descriptor_and_by_path() {
    need_root!();
    for by_path in [false, true] {
        let tag = if by_path { "ovl-path" } else { "ovl-fd" };
        let mut env = Env::new(tag);
        if by_path {
            env = env.var("NESTRUN_OVERLAY_FDS", "off");
        }
        probe(&env, "echo $(cat /etc/order) $(busybox stat -c %u:%g /bin/busybox /etc/order) > /etc/result; sleep 30");
        let (top, bottom) = (env.dir.join("top"), env.dir.join("bottom"));
        std::fs::rename(env.dir.join("bundle/rootfs"), &bottom).unwrap();
        std::fs::write(bottom.join("etc/order"), "bottom\n").unwrap();
        std::fs::create_dir_all(top.join("etc")).unwrap();
        std::fs::write(top.join("etc/order"), "top\n").unwrap();
        let (upper, _u) = engine_overlay(&env, &[&top, &bottom]);
        let id = format!("{tag}-{}", std::process::id());
        env.create_ok(&id);
        assert!(env.nestrun(&["start", &id], None).status.success());
        assert_eq!(result(&upper), "top 0:0 0:0", "{tag}: the top layer wins, image files belong to root inside");
        // The layer mounts (`<mount dir>/l/N`) exist in the host's table only on the path route.
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let layer_mounts = info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|mp| mp.contains(&id) && mp.contains("/l/")).count();
        assert_eq!(layer_mounts, if by_path { 2 } else { 0 }, "{tag}: host mounts of the layers");
        env.delete_ok(&id, true);
        env.assert_clean(&id, "after delete");
    }
}
