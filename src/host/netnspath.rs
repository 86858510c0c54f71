//! The engine's path to a pod's network namespace, re-pointed at the pod's own. containerd
//! (1.x, and 2.x without pod user namespaces) keeps the namespace it made for a pod as a bind
//! mount at a path of its state dir (`…/netns/cni-<uuid>`) and uses that path, not the pause
//! process, for what it does inside the pod's network later: CNI DEL and CHECK, and kubectl
//! port-forward (it dials localhost:PORT in it). After `podnet::adopt` moved the interfaces into
//! the sandbox's own namespace, nestrun binds that namespace at the engine's path, so the
//! engine finds the pod's interfaces and listeners there: CNI DEL removes eth0 and releases the
//! IP as under runc, port-forward reaches the pod's servers. The engine's empty namespace goes
//! when its last mount does. The engine removes the path as usual (one unmount, then unlink).
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::HostError;

/// Bind the network namespace file `ours` (the pod's, e.g. `/proc/self/fd/N` of a descriptor
/// checked to be it) at `engine_path` in place of the engine's. Should the new bind fail, the
/// engine's namespace is bound there again (kept open meanwhile), so the path always names a
/// namespace the engine can tear down.
pub fn repoint(engine_path: &Path, ours: &Path) -> Result<(), HostError> {
    let old = std::fs::File::open(engine_path).map_err(super::io("open the engine's network namespace", engine_path))?;
    umount2(engine_path, MntFlags::MNT_DETACH).map_err(super::sys("unmount the engine's network namespace", engine_path))?;
    let bind = |src: &Path| mount(Some(src), engine_path, None::<&str>, MsFlags::MS_BIND, None::<&str>);
    if let Err(e) = bind(ours) {
        let back = PathBuf::from(format!("/proc/self/fd/{}", old.as_raw_fd()));
        if let Err(e2) = bind(&back) {
            tracing::error!(path = %engine_path.display(), "the engine's network namespace could not be bound again: {e2}");
        }
        return Err(super::sys("bind the pod's network namespace at", engine_path)(e));
    }
    Ok(())
}
