//! `delete` and teardown: undo everything nestrun made for a container, from its sidecar record
//! and from where things are (mounts below the sidecar dir), so it also works after a create
//! that failed or was killed at any step. Every step tolerates "already gone".
use std::path::Path;

use libcontainer::container::ContainerStatus;
use libcontainer::signal::Signal;

use super::{container_dir, LifecycleError};
use crate::host::{self, cgroup, mountinfo};
use crate::sidecar::{self, Record};

/// The container's `cgroup.procs` in every cgroup hierarchy.
pub(crate) fn procs_files(cgroup_path: &Path) -> Vec<std::path::PathBuf> {
    cgroup::hierarchies().iter().map(|e| cgroup::dir_in(&e.mount_point, cgroup_path).join("cgroup.procs")).collect()
}

/// Kill whatever still runs in the container's cgroup (an init orphaned by a killed create),
/// then wait (up to 2 s) until it is empty.
pub(crate) fn kill_and_wait_empty(cgroup_path: &Path) {
    if cgroup_path.components().count() < 2 {
        return; // never the root cgroup
    }
    let procs = procs_files(cgroup_path);
    let others = |f: &std::path::PathBuf| -> Vec<i32> {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse::<i32>().ok())
            .filter(|p| *p as u32 != std::process::id())
            .collect()
    };
    for f in &procs {
        for pid in others(f) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
    for _ in 0..200 {
        if procs.iter().all(|f| others(f).is_empty()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Unmount everything at or below `dir` (deepest first), then remove it.
pub fn clear_mounts(dir: &Path) {
    // The container's mount dir is a tmpfs of its own (`idmap::mount_dir_fs`): one lazy
    // unmount takes it with everything mounted inside, and its directories go with it. Then
    // nothing is left to look for, and the mount table (a read is O(host mounts) under the
    // kernel's mount lock) is not read. EINVAL, no mount point (a create that died before
    // the tmpfs was mounted): look.
    let detached = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH).is_ok();
    if !detached {
        let entries = mountinfo::read();
        let mut mounts: Vec<_> = mountinfo::under(&entries, dir).map(|e| e.mount_point.clone()).collect();
        mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for m in mounts {
            host::unmount(&m);
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot remove {}: {e}", dir.display());
        }
    }
}

/// Undo all host-side work for `id`. Idempotent; never fails (it logs what it could not undo).
pub fn teardown(root: &Path, id: &str) {
    let _t = crate::logging::step("teardown");
    let sdir = sidecar::dir(root, id);
    // Without its state dir (an orphan: `gc`, or the FUSE server after its container), the
    // record's mirror tells what was made.
    let rec = Record::load(&sdir).or_else(|| Record::load_mirror(root, id)).unwrap_or_default();
    teardown_record(root, id, &rec);
}

/// [`teardown`] from a given record (the caller may have dropped what it must not touch).
pub fn teardown_record(root: &Path, id: &str, rec: &Record) {
    let sdir = sidecar::dir(root, id);
    // The shifted view first: the read-only cover below it is found by stat, which a view
    // whose server is gone would fail.
    if let (Some((path, _)), Some(dev)) = (&rec.engine_cover, rec.engine_shift) {
        host::overlay::uncover_shifted(path, dev);
    }
    if let (Some(pid), Some(mnt)) = (rec.fuse_pid, &rec.fuse_mount) {
        if pid as u32 == std::process::id() {
            crate::host::unmount(mnt); // the server tearing down after its container
        } else {
            let _ = crate::fuse::stop(nix::unistd::Pid::from_raw(pid), mnt);
        }
    }
    if let Some(cg) = &rec.cgroup_path {
        kill_and_wait_empty(cg);
        cgroup::remove_tree(cg, true);
    }
    if let Some((path, dev)) = &rec.engine_cover {
        host::overlay::uncover(path, *dev);
    }
    clear_mounts(&sidecar::mnt_dir(root, id));
    for w in rec.work_dirs.iter().filter(|w| crate::host::overlay::is_own_work(w)) {
        if let Err(e) = std::fs::remove_dir_all(w) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove overlay work dir {}: {e}", w.display());
            }
        }
    }
    if let Some(d) = rec.data_root.as_ref().filter(|_| !rec.data_persistent) {
        if let Err(e) = std::fs::remove_dir_all(d) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove data dir {}: {e}", d.display());
            }
        }
    }
    if let Some(lease) = &rec.lease {
        crate::subid::release(lease, &sdir);
    }
    let cdir = container_dir(root, id);
    if cdir.exists() && !cdir.join("state.json").exists() {
        let _ = std::fs::remove_dir_all(&cdir); // a libcontainer dir from a create that died
    }
    if let Err(e) = std::fs::remove_dir_all(&sdir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot remove {}: {e}", sdir.display());
        }
    }
    let _ = std::fs::remove_dir(root.join(sidecar::DIR));
    sidecar::remove_mirror(root, id);
}

/// `delete [--force]`.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<(), LifecycleError> {
    super::validate_id(id)?;
    let has_state = container_dir(root, id).join("state.json").exists();
    let has_sidecar = sidecar::dir(root, id).exists();
    if !has_state {
        if has_sidecar || container_dir(root, id).exists() {
            teardown(root, id); // a create that failed or was killed
            return Ok(());
        }
        return if force { Ok(()) } else { Err(LifecycleError::NotFound { id: id.into(), root: root.into() }) };
    }
    let mut c = super::load(root, id)?;
    let _ = c.refresh_status();
    let status = c.status();
    if !force && !matches!(status, ContainerStatus::Stopped | ContainerStatus::Created) {
        return Err(LifecycleError::Other { id: id.into(), msg: format!("cannot delete a {status} container without --force") });
    }
    // Inner runtimes leave child cgroups behind, which libcontainer cannot remove: stop all
    // processes, then clear the children first.
    if status != ContainerStatus::Stopped {
        let _ = c.kill(Signal::try_from("SIGKILL").expect("valid"), true);
    }
    if let Some(cg) = crate::lifecycle::record(root, id).and_then(|r| r.cgroup_path) {
        kill_and_wait_empty(&cg);
        cgroup::remove_tree(&cg, false);
    }
    cgroup::seed_libcgroups();
    let t = crate::logging::step("libcontainer delete");
    let result = c.delete(true).map_err(|source| LifecycleError::Libcontainer { id: id.into(), source });
    // A `delete` killed here has removed libcontainer's state but none of nestrun's: the next
    // `delete` finds only the sidecar and tears down from it.
    drop(t);
    super::fault_point("delete");
    teardown(root, id);
    result
}
