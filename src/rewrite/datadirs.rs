//! Host-backed data directories: /var/lib/docker and friends on a real host file system, so the
//! inner dockerd/containerd get overlay2 / the overlayfs snapshotter (an overlay upper dir on
//! top of the container's own overlay rootfs is not supported and dockerd silently falls back
//! to vfs). A mount the engine already has at that path (a user volume) wins.
use libcontainer::oci_spec::runtime::Spec;

use super::{add_mount, new_mount, RewriteError};
use crate::facts::Facts;

/// Paths that get a host-backed directory.
pub const DATA_DIRS: &[&str] = &[
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/buildkit",
    "/var/lib/kubelet",
    "/var/lib/rancher/k3s",
    "/var/lib/k0s",
];

pub fn rewrite(mut spec: Spec, facts: &Facts) -> Result<Spec, RewriteError> {
    for d in &facts.data_dirs {
        let opts = ["rbind", "rprivate", "rw"].map(String::from).to_vec();
        add_mount(&mut spec, new_mount(&d.destination, "bind", &d.source, opts));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use libcontainer::oci_spec::runtime::MountBuilder;

    use super::*;
    use crate::facts::DataDir;
    use crate::rewrite::testutil::{docker_like, facts};

    #[test]
    fn user_volume_wins_over_data_dir() {
        let mut spec = docker_like();
        let user = MountBuilder::default().destination("/var/lib/docker").typ("bind").source("/vol").build().unwrap();
        spec.set_mounts(Some(vec![user]));
        let mut f = facts();
        f.data_dirs = DATA_DIRS[..2].iter().map(|d| DataDir { destination: d.into(), source: PathBuf::from("/host").join(&d[1..]) }).collect();
        let out = rewrite(spec, &f).unwrap();
        let ms = out.mounts().as_ref().unwrap();
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].source().as_ref().unwrap(), &PathBuf::from("/vol"));
        assert_eq!(ms[1].source().as_ref().unwrap(), &PathBuf::from("/host/var/lib/containerd"));
    }
}
