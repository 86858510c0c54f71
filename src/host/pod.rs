//! Pods: a container whose spec joins another container's namespaces by path
//! (`/proc/<pid>/ns/net|ipc|uts|pid`: containerd's and CRI-O's app containers joining their
//! sandbox, `docker run --network container:X`, `podman pod`) shares that container's user
//! namespace and id range instead of getting its own. Its capabilities then reach the pod's
//! ipc, uts and pid namespaces (owned by that user namespace), and its files are owned alike.
//! Keyed on the namespaces themselves, not on engine annotations, so every engine is covered.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{LinuxNamespaceType as T, Spec};

/// The container whose user namespace a pod member joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    /// `/proc/<pid>/ns/user`, the path the member's spec joins.
    pub userns: PathBuf,
    pub host_id: u32,
    pub size: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PodError {
    #[error("linux.namespaces: {a} and {b} belong to containers with different user namespaces; a pod's namespaces must all be one container's")]
    TwoPods { a: PathBuf, b: PathBuf },
    #[error("linux.namespaces: {path}: the process's user namespace maps {map:?}; nestrun joins only a container whose root is one unprivileged range")]
    BadMap { path: PathBuf, map: String },
}

/// `/proc/<pid>/ns/<kind>` → pid.
fn proc_pid(path: &Path) -> Option<i32> {
    let mut c = path.components().map(|c| c.as_os_str().to_str().unwrap_or(""));
    match (c.next(), c.next(), c.next(), c.next(), c.next(), c.next()) {
        (Some("/"), Some("proc"), Some(pid), Some("ns"), Some(_), None) => pid.parse().ok(),
        _ => None,
    }
}

fn inode(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// The pod peer of `spec`, if its namespace paths point at a process in a user namespace other
/// than the host's. None when the engine gives a user namespace itself (its choice is kept).
pub fn peer(spec: &Spec) -> Result<Option<Peer>, PodError> {
    let Some(nss) = spec.linux().as_ref().and_then(|l| l.namespaces().clone()) else { return Ok(None) };
    if nss.iter().any(|n| n.typ() == T::User) {
        return Ok(None);
    }
    let host = inode(Path::new("/proc/self/ns/user"));
    let mut found: Option<(PathBuf, Peer)> = None;
    for ns in nss.iter().filter(|n| matches!(n.typ(), T::Network | T::Ipc | T::Uts | T::Pid)) {
        let Some(path) = ns.path().as_ref() else { continue };
        let Some(pid) = proc_pid(path) else { continue };
        let userns = PathBuf::from(format!("/proc/{pid}/ns/user"));
        let Some(id) = inode(&userns).filter(|i| Some(*i) != host) else { continue };
        if let Some((first, p)) = &found {
            if inode(&p.userns) != Some(id) {
                return Err(PodError::TwoPods { a: first.clone(), b: path.clone() });
            }
            continue;
        }
        let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_default();
        let f: Vec<u64> = map.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        let (host_id, size) = match f.as_slice() {
            [0, h, s] if *h > 0 && *s >= crate::subid::RANGE as u64 && h + s <= u32::MAX as u64 => (*h as u32, *s as u32),
            _ => return Err(PodError::BadMap { path: path.clone(), map: map.trim().to_string() }),
        };
        found = Some((path.clone(), Peer { pid, userns, host_id, size }));
    }
    Ok(found.map(|(_, p)| p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_proc_namespace_paths_name_a_process() {
        assert_eq!(proc_pid(Path::new("/proc/42/ns/net")), Some(42));
        assert_eq!(proc_pid(Path::new("/proc/self/ns/net")), None);
        assert_eq!(proc_pid(Path::new("/var/run/netns/cni-1234")), None);
        assert_eq!(proc_pid(Path::new("/proc/42/ns/net/x")), None);
    }

    #[test]
    fn host_namespaces_and_engine_user_namespaces_are_no_pod() {
        let me = std::process::id();
        let mut spec = crate::rewrite::testutil::spec_with_ns(&[T::Pid, T::Mount]);
        let net = libcontainer::oci_spec::runtime::LinuxNamespaceBuilder::default().typ(T::Network).path(format!("/proc/{me}/ns/net")).build().unwrap();
        let mut nss = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        nss.push(net);
        spec.linux_mut().as_mut().unwrap().set_namespaces(Some(nss.clone()));
        // This test process is in the host's user namespace: a path to it is no pod peer.
        assert_eq!(peer(&spec), Ok(None));
        nss.push(libcontainer::oci_spec::runtime::LinuxNamespaceBuilder::default().typ(T::User).build().unwrap());
        spec.linux_mut().as_mut().unwrap().set_namespaces(Some(nss));
        assert_eq!(peer(&spec), Ok(None));
    }
}
