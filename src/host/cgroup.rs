//! Cgroup delegation. v1: the container's directory in every hierarchy, with cgroup.procs and
//! tasks, is chowned to container root: it can create children and move its processes, but its
//! own limit files stay host-root-owned. Named hierarchies (name=systemd) are not managed by
//! libcontainer, yet every inner runc joins them: nestrun makes and delegates that directory
//! and moves itself in before creating the container, so the container inherits it.
use std::path::{Path, PathBuf};

use super::mountinfo::{self, MountEntry};
use super::{io, HostError};

const DELEGATED_FILES: &[&str] = &["", "cgroup.procs", "tasks", "cgroup.threads", "cgroup.subtree_control"];

fn is_named(e: &MountEntry) -> bool {
    e.fs_type == "cgroup" && e.super_options.split(',').any(|o| o.starts_with("name="))
}

fn hierarchies() -> Vec<MountEntry> {
    let mut seen = Vec::new();
    mountinfo::read()
        .into_iter()
        .filter(|e| (e.fs_type == "cgroup" || e.fs_type == "cgroup2") && e.root == Path::new("/"))
        .filter(|e| {
            // One entry per hierarchy (bind mounts of the same one share super options).
            let key = (e.fs_type.clone(), e.super_options.clone());
            !seen.contains(&key) && {
                seen.push(key);
                true
            }
        })
        .collect()
}

/// `cgroup_path` relative to a hierarchy's mount point.
pub fn dir_in(mount: &Path, cgroup_path: &Path) -> PathBuf {
    mount.join(cgroup_path.strip_prefix("/").unwrap_or(cgroup_path))
}

fn chown_delegated(dir: &Path, host_id: u32) -> Result<(), HostError> {
    for f in DELEGATED_FILES {
        let p = if f.is_empty() { dir.to_path_buf() } else { dir.join(f) };
        if p.exists() {
            std::os::unix::fs::chown(&p, Some(host_id), Some(host_id)).map_err(io("delegate cgroup", &p))?;
        }
    }
    Ok(())
}

/// This process's cgroup in the hierarchy named `name` (e.g. "name=systemd").
fn own_cgroup(name: &str) -> Option<PathBuf> {
    std::fs::read_to_string("/proc/self/cgroup")
        .ok()?
        .lines()
        .find_map(|l| l.splitn(3, ':').collect::<Vec<_>>().get(1..3).filter(|f| f[0] == name).map(|f| PathBuf::from(f[1])))
}

/// Make and delegate the container's directory in named v1 hierarchies and move this process
/// into it, so the container's processes are born there. Returns the cgroup.procs files to
/// write our pid back to once the container exists (`leave_named`).
pub fn join_named(cgroup_path: &Path, host_id: u32) -> Result<Vec<PathBuf>, HostError> {
    let mut back = Vec::new();
    for h in hierarchies().iter().filter(|e| is_named(e)) {
        let name = h.super_options.split(',').find(|o| o.starts_with("name=")).unwrap_or_default();
        let dir = dir_in(&h.mount_point, cgroup_path);
        std::fs::create_dir_all(&dir).map_err(io("create cgroup", &dir))?;
        chown_delegated(&dir, host_id)?;
        if let Some(prev) = own_cgroup(name) {
            back.push(dir_in(&h.mount_point, &prev).join("cgroup.procs"));
        }
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string()).map_err(io("join cgroup", &procs))?;
    }
    Ok(back)
}

/// Move this process back to where it was before `join_named`.
pub fn leave_named(back: &[PathBuf]) {
    for procs in back {
        let _ = std::fs::write(procs, std::process::id().to_string());
    }
}

/// Delegate the container's directory in every hierarchy where it exists (after create).
pub fn delegate(cgroup_path: &Path, host_id: u32) -> Result<(), HostError> {
    for h in hierarchies() {
        let dir = dir_in(&h.mount_point, cgroup_path);
        if dir.is_dir() {
            chown_delegated(&dir, host_id)?;
        }
    }
    Ok(())
}

/// Remove what the container made below its cgroup in every hierarchy (deepest first), and
/// with `including_root` the directory itself. Only empty cgroups can go: call it after the
/// container's processes are gone.
pub fn remove_tree(cgroup_path: &Path, including_root: bool) {
    for h in hierarchies() {
        let root = dir_in(&h.mount_point, cgroup_path);
        let mut dirs = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
                    stack.push(e.path());
                }
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            if *d != root || including_root {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}
