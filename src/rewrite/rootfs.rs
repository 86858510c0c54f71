//! File ownership without chown -R: the rootfs and bind-mount sources are replaced by the
//! ID-mapped clones `lifecycle` prepared on the host (facts.rootfs, facts.idmapped_sources),
//! so files owned by host root appear owned by container root.
use libcontainer::oci_spec::runtime::Spec;

use super::RewriteError;
use crate::facts::Facts;

/// The root propagations libcontainer knows (runc also takes them with an `r` prefix).
pub const ROOT_PROPAGATIONS: [&str; 4] = ["shared", "slave", "private", "unbindable"];

pub fn rewrite(mut spec: Spec, facts: &Facts) -> Result<Spec, RewriteError> {
    if let (Some(new_root), Some(root)) = (&facts.rootfs, spec.root_mut().as_mut()) {
        root.set_path(new_root.clone());
    }
    // runc's r-prefixed propagation (containerd sends `rshared` for Bidirectional mounts) is
    // the plain one for libcontainer, which makes the root's propagation recursive always.
    if let Some(linux) = spec.linux_mut().as_mut() {
        let plain = linux.rootfs_propagation().as_deref().and_then(|p| p.strip_prefix('r')).filter(|p| ROOT_PROPAGATIONS.contains(p)).map(str::to_string);
        if let Some(p) = plain {
            linux.set_rootfs_propagation(Some(p));
        }
    }
    if let Some(mounts) = spec.mounts_mut().as_mut() {
        for m in mounts.iter_mut() {
            let Some(src) = m.source().clone() else { continue };
            if let Some((_, clone)) = facts.idmapped_sources.iter().find(|(orig, _)| *orig == src) {
                m.set_source(Some(clone.clone()));
                // The clone is ID-mapped already (to the container's range, which is what an
                // engine's own mappings on the mount ask for: validate::linux checked that).
                m.set_uid_mappings(None);
                m.set_gid_mappings(None);
            }
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use libcontainer::oci_spec::runtime::MountBuilder;

    use super::*;
    use crate::rewrite::testutil::{docker_like, facts};

    #[test]
    fn root_and_bind_sources_point_at_the_idmapped_clones() {
        let mut spec = docker_like();
        let vol = MountBuilder::default().destination("/data").typ("bind").source("/srv/vol").options(vec!["rbind".to_string()]).build().unwrap();
        spec.set_mounts(Some(vec![vol]));
        let mut f = facts();
        f.rootfs = Some(PathBuf::from("/run/nestrun/.nestrun/c1/rootfs"));
        f.idmapped_sources = vec![(PathBuf::from("/srv/vol"), PathBuf::from("/run/nestrun/.nestrun/c1/mnt/0"))];
        let out = rewrite(spec, &f).unwrap();
        assert_eq!(out.root().as_ref().unwrap().path(), &PathBuf::from("/run/nestrun/.nestrun/c1/rootfs"));
        assert_eq!(out.mounts().as_ref().unwrap()[0].source().as_ref().unwrap(), &PathBuf::from("/run/nestrun/.nestrun/c1/mnt/0"));
        assert_eq!(rewrite(out.clone(), &f).unwrap(), out, "idempotent");
    }

    #[test]
    fn an_engine_id_mapped_bind_becomes_the_clone_without_mappings() {
        use libcontainer::oci_spec::runtime::LinuxIdMappingBuilder;
        let map = vec![LinuxIdMappingBuilder::default().container_id(0u32).host_id(1u32 << 31).size(65536u32).build().unwrap()];
        let mut spec = docker_like();
        let mut vol = MountBuilder::default().destination("/data").typ("bind").source("/srv/vol").options(vec!["rbind".to_string()]).build().unwrap();
        vol.set_uid_mappings(Some(map.clone()));
        vol.set_gid_mappings(Some(map.clone()));
        let mut other = vol.clone();
        other.set_source(Some("/srv/not-cloned".into()));
        spec.set_mounts(Some(vec![vol, other]));
        let mut f = facts();
        f.idmapped_sources = vec![(PathBuf::from("/srv/vol"), PathBuf::from("/run/nestrun-mnt/c1/m/0"))];
        let out = rewrite(spec, &f).unwrap();
        let m = out.mounts().as_ref().unwrap();
        assert_eq!(m[0].source().as_deref(), Some(std::path::Path::new("/run/nestrun-mnt/c1/m/0")));
        assert_eq!((m[0].uid_mappings(), m[0].gid_mappings()), (&None, &None));
        assert_eq!(m[1].uid_mappings(), &Some(map), "a bind nestrun did not clone keeps them (and libcontainer refuses it)");
    }

    #[test]
    fn r_prefixed_root_propagation_becomes_libcontainers_form() {
        let mut spec = docker_like();
        spec.linux_mut().as_mut().unwrap().set_rootfs_propagation(Some("rshared".into()));
        let out = rewrite(spec, &facts()).unwrap();
        assert_eq!(out.linux().as_ref().unwrap().rootfs_propagation().as_deref(), Some("shared"));
        assert_eq!(rewrite(out.clone(), &facts()).unwrap(), out, "idempotent");
        let mut odd = docker_like();
        odd.linux_mut().as_mut().unwrap().set_rootfs_propagation(Some("rweird".into()));
        assert_eq!(rewrite(odd, &facts()).unwrap().linux().as_ref().unwrap().rootfs_propagation().as_deref(), Some("rweird"), "left to validation");
    }
}
