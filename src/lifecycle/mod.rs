//! Container lifecycle: create (gather facts, rewrite, shadow bundle, libcontainer), load,
//! delete, and the teardown that undoes everything nestrun made on the host.
use std::path::{Path, PathBuf};

use libcontainer::container::Container;

use crate::bundle::BundleError;
use crate::host::HostError;
use crate::rewrite::RewriteError;
use crate::subid::SubidError;

mod create;
mod gather;
pub mod gc;
pub(crate) mod teardown;

pub use create::{create, CreateArgs};
pub use gather::{rlimit_hard, runtime_caps};
pub use teardown::{delete, teardown};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("invalid container id {0:?}: {1}")]
    BadId(String, &'static str),
    #[error("container {id:?} does not exist in {root}")]
    NotFound { id: String, root: PathBuf },
    #[error("container {id:?} already exists in {root}")]
    Exists { id: String, root: PathBuf },
    #[error("container {id:?}: cannot load its state from {path}: {source}")]
    Load { id: String, path: PathBuf, source: libcontainer::error::LibcontainerError },
    #[error("container {id:?}: {source}")]
    Libcontainer { id: String, source: libcontainer::error::LibcontainerError },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{0}")]
    Rewrite(#[from] RewriteError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Subid(#[from] SubidError),
    #[error("cannot write state {path}: {source}")]
    State { path: PathBuf, source: std::io::Error },
    #[error("container {id:?}: {msg}")]
    Other { id: String, msg: String },
}

/// Test-only fault injection: with `NESTRUN_FAULT_AT=<point>`, the process SIGKILLs itself at
/// that point of `create`, as `kill -9` would. The fault suite uses it to check that `delete`
/// afterwards leaves nothing behind.
pub fn fault_point(point: &str) {
    if std::env::var("NESTRUN_FAULT_AT").is_ok_and(|p| p == point) {
        let _ = nix::sys::signal::raise(nix::sys::signal::SIGKILL);
    }
}

// The points, in the order create passes them: sidecar, lease, cgroup, rootfs, datadirs,
// created, fuse; and "delete", between libcontainer's delete and teardown
// (integration/faults/ walks them all).

/// runc's rule for ids, stated in the error: letters, digits and `_ + - .`, not `.` or `..`.
pub fn validate_id(id: &str) -> Result<(), LifecycleError> {
    let bad = |why| Err(LifecycleError::BadId(id.to_string(), why));
    if id.is_empty() {
        return bad("it is empty");
    }
    if id == "." || id == ".." || id == crate::sidecar::DIR {
        return bad("it is a reserved name");
    }
    if id.len() > 1024 {
        return bad("it is longer than 1024 bytes");
    }
    if id.contains('/') {
        return bad("it contains '/'");
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c)) {
        return bad("only letters, digits and _ + - . are allowed");
    }
    Ok(())
}

pub fn container_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// Load a container by id with errors that name the id and the root.
pub fn load(root: &Path, id: &str) -> Result<Container, LifecycleError> {
    validate_id(id)?;
    let dir = container_dir(root, id);
    if !dir.join("state.json").exists() {
        return Err(LifecycleError::NotFound { id: id.into(), root: root.into() });
    }
    Container::load(dir.clone()).map_err(|source| LifecycleError::Load { id: id.into(), path: dir, source })
}

/// The sidecar record of a container, if nestrun made one.
pub fn record(root: &Path, id: &str) -> Option<crate::sidecar::Record> {
    crate::sidecar::Record::load(&crate::sidecar::dir(root, id))
}

/// The bounding set the container's init got (its rewritten config.json in the bundle
/// libcontainer knows), for `exec`'d processes; the runtime's own set when it cannot be read.
pub fn init_caps(c: &Container) -> Vec<String> {
    let spec = libcontainer::oci_spec::runtime::Spec::load(c.bundle().join("config.json")).ok();
    let caps = spec.as_ref().and_then(|s| s.process().as_ref()?.capabilities().as_ref()?.bounding().clone());
    match caps {
        Some(b) => b.iter().filter_map(|c| serde_json::to_value(c).ok()?.as_str().map(String::from)).collect(),
        None => runtime_caps(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_with_a_reason() {
        assert!(validate_id("abc-1.2_x+y").is_ok());
        let e = |id: &str| validate_id(id).unwrap_err().to_string();
        assert_eq!(e(""), "invalid container id \"\": it is empty");
        assert_eq!(e("../etc"), "invalid container id \"../etc\": it contains '/'");
        assert_eq!(e(".."), "invalid container id \"..\": it is a reserved name");
        assert_eq!(e("a b"), "invalid container id \"a b\": only letters, digits and _ + - . are allowed");
    }
}
