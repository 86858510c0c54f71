//! Host-side actions: the only code besides the CLI that touches the host's mounts, cgroups and
//! files. Every function here is undone by `lifecycle::teardown` from the sidecar record.
pub mod cgroup;
pub mod chownfs;
pub mod idmap;
pub mod inject;
pub mod mountinfo;
pub mod nestedmount;
pub mod netnspath;
pub mod overlay;
pub mod pod;
pub mod podnet;
pub mod rtnl;
pub mod supervisor;

use std::path::PathBuf;

/// The new mount API's flags that libc does not name (linux/mount.h).
pub(crate) const OPEN_TREE_CLONE: u32 = 1;
pub(crate) const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{what} {path}: {source}")]
    Sys { what: &'static str, path: PathBuf, source: nix::Error },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("rootfs {path} is an overlay without lowerdir in {options:?}")]
    OverlayOptions { path: PathBuf, options: String },
}

pub(crate) fn sys(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(nix::Error) -> HostError {
    let path = path.into();
    move |source| HostError::Sys { what, path, source }
}

pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HostError {
    let path = path.into();
    move |source| HostError::Io { what, path, source }
}

/// Lazily unmount; a path that is not (or no longer) mounted is fine.
pub fn unmount(path: &std::path::Path) {
    use nix::mount::{umount2, MntFlags};
    let _ = umount2(path, MntFlags::MNT_DETACH);
}
