//! Cgroups: the container gets its own cgroup namespace (namespaces step) and a writable
//! /sys/fs/cgroup so the inner runtime can create child cgroups. Safe because the cgroup
//! namespace roots the view at the container's own cgroup, and the delegation `lifecycle`
//! does (chown of the directory, cgroup.procs and tasks to container root) lets it create
//! children but not write its own limit files, which stay owned by host root.
use std::path::Path;

use libcontainer::oci_spec::runtime::Spec;

use super::{add_mount, new_mount, RewriteError};
use crate::facts::Facts;

pub fn rewrite(mut spec: Spec, facts: &Facts) -> Result<Spec, RewriteError> {
    if let (Some(p), Some(linux)) = (&facts.cgroup_path, spec.linux_mut().as_mut()) {
        if linux.cgroups_path().is_none() {
            linux.set_cgroups_path(Some(p.clone()));
        }
    }
    let dest = Path::new("/sys/fs/cgroup");
    if let Some(mounts) = spec.mounts_mut().as_mut() {
        for m in mounts.iter_mut().filter(|m| m.destination() == dest && m.typ().as_deref() == Some("cgroup")) {
            if let Some(opts) = m.options_mut().as_mut() {
                opts.retain(|o| o != "ro");
                if !opts.iter().any(|o| o == "rw") {
                    opts.push("rw".into());
                }
            }
        }
    }
    let opts = ["nosuid", "noexec", "nodev", "relatime", "rw"].map(String::from).to_vec();
    add_mount(&mut spec, new_mount(dest, "cgroup", "cgroup", opts));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use libcontainer::oci_spec::runtime::MountBuilder;

    use super::*;
    use crate::rewrite::testutil::{docker_like, facts};

    #[test]
    fn cgroup_mount_becomes_writable() {
        let mut spec = docker_like();
        let ro = MountBuilder::default().destination("/sys/fs/cgroup").typ("cgroup").source("cgroup")
            .options(["ro", "nosuid", "noexec", "nodev"].map(String::from).to_vec()).build().unwrap();
        spec.set_mounts(Some(vec![ro]));
        let out = rewrite(spec, &facts()).unwrap();
        let ms = out.mounts().as_ref().unwrap();
        assert_eq!(ms.len(), 1);
        assert_eq!(ms[0].options().as_ref().unwrap(), &["nosuid", "noexec", "nodev", "rw"].map(String::from).to_vec());
    }
}
