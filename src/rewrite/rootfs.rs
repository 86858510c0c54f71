//! File ownership without chown -R: the rootfs and bind-mount sources are replaced by the
//! ID-mapped clones `lifecycle` prepared on the host (facts.rootfs, facts.idmapped_sources),
//! so files owned by host root appear owned by container root.
use libcontainer::oci_spec::runtime::Spec;

use super::RewriteError;
use crate::facts::Facts;

pub fn rewrite(mut spec: Spec, facts: &Facts) -> Result<Spec, RewriteError> {
    if let (Some(new_root), Some(root)) = (&facts.rootfs, spec.root_mut().as_mut()) {
        root.set_path(new_root.clone());
    }
    if let Some(mounts) = spec.mounts_mut().as_mut() {
        for m in mounts.iter_mut() {
            let Some(src) = m.source().clone() else { continue };
            if let Some((_, clone)) = facts.idmapped_sources.iter().find(|(orig, _)| *orig == src) {
                m.set_source(Some(clone.clone()));
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
}
