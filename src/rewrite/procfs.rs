//! /proc: /proc/sys stays writable. Safe in a user namespace: the kernel lets container root
//! write only the sysctls of namespaces it owns (net.* of its own netns, kernel.hostname of its
//! uts ns, ...); global knobs stay read-only for it whatever the mount flags say, and the
//! emulated ones are served by nestrun's per-container FUSE server instead. The inner dockerd
//! needs this (it enables net.ipv4.ip_forward in its netns). Masked paths (kcore, keys, timer_list,
//! sched_debug, ...) and the other read-only paths stay as the engine set them.
use libcontainer::oci_spec::runtime::Spec;

use super::RewriteError;
use crate::facts::Facts;

pub fn rewrite(mut spec: Spec, _facts: &Facts) -> Result<Spec, RewriteError> {
    if let Some(linux) = spec.linux_mut().as_mut() {
        if let Some(ro) = linux.readonly_paths_mut().as_mut() {
            ro.retain(|p| p != "/proc/sys");
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::testutil::{docker_like, facts};

    #[test]
    fn only_proc_sys_leaves_the_readonly_list() {
        let mut spec = docker_like();
        let ro = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"].map(String::from).to_vec();
        spec.linux_mut().as_mut().unwrap().set_readonly_paths(Some(ro));
        let out = rewrite(spec, &facts()).unwrap();
        assert_eq!(out.linux().as_ref().unwrap().readonly_paths().as_ref().unwrap(), &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sysrq-trigger"].map(String::from).to_vec());
    }
}
