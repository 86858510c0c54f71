//! User namespace: container root becomes an unprivileged host uid range. The range comes from
//! the allocator (facts.host_id), or, when the engine already maps ids (docker --userns-remap,
//! Kubernetes hostUsers: false), the engine's mapping is checked and kept.
use libcontainer::oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceType, Spec};

use super::RewriteError;
use crate::facts::Facts;
use crate::subid::RANGE;

/// Check an engine-supplied mapping: one contiguous entry from container id 0, at least 65536
/// ids, never mapping host root.
pub fn validate(kind: &'static str, maps: &[LinuxIdMapping]) -> Result<(u32, u32), RewriteError> {
    let bad = |msg: String| Err(RewriteError::BadMapping { kind, msg });
    match maps {
        [] => bad("empty mapping".into()),
        [m] if m.container_id() != 0 => bad(format!("must start at container id 0, not {}", m.container_id())),
        [m] if m.host_id() == 0 => bad("maps host root (hostID 0) into the container".into()),
        [m] if m.size() < RANGE => bad(format!("size {} is smaller than {RANGE}", m.size())),
        [m] if m.host_id().checked_add(m.size()).is_none() => bad(format!("hostID {} + size {} overflows", m.host_id(), m.size())),
        [m] => Ok((m.host_id(), m.size())),
        _ => bad(format!("{} entries; nestrun needs one contiguous range", maps.len())),
    }
}

pub fn rewrite(mut spec: Spec, facts: &Facts) -> Result<Spec, RewriteError> {
    let linux = spec.linux_mut().as_mut().ok_or(RewriteError::NoLinux)?;
    let engine_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if engine_maps {
        validate("uid", linux.uid_mappings().as_deref().unwrap_or_default())?;
        validate("gid", linux.gid_mappings().as_deref().unwrap_or_default())?;
    } else {
        let map = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(facts.host_id)
            .size(facts.id_size)
            .build()
            .expect("all fields set");
        // The allocator's range passes the same checks: host root is never mapped, and the
        // output must pass them when it is rewritten again (as an engine mapping).
        validate("uid", &[map])?;
        linux.set_uid_mappings(Some(vec![map]));
        linux.set_gid_mappings(Some(vec![map]));
    }
    // dockerd sets ping_group_range to "0 2147483647" for containers without a user namespace;
    // in one, only mapped gids are valid and the kernel rejects the write (EINVAL).
    if let Some(mut sysctl) = linux.sysctl().clone() {
        if let Some(v) = sysctl.get_mut("net.ipv4.ping_group_range") {
            let size = linux.gid_mappings().as_ref().and_then(|m| m.first()).map(|m| m.size()).unwrap_or(facts.id_size);
            let max = size.saturating_sub(1) as u64;
            let mut it = v.split_whitespace().map(|n| n.parse::<u64>().unwrap_or(u64::MAX));
            let (lo, hi) = (it.next().unwrap_or(0), it.next().unwrap_or(u64::MAX));
            if hi > max {
                *v = format!("{} {max}", lo.min(max));
            }
        }
        linux.set_sysctl(Some(sysctl));
    }
    let mut nss = linux.namespaces().clone().unwrap_or_default();
    if !nss.iter().any(|n| n.typ() == LinuxNamespaceType::User) {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::User);
        // A pod member joins its pod's user namespace (the mappings above are that one's).
        ns.set_path(facts.pod_userns.clone());
        nss.push(ns);
    }
    linux.set_namespaces(Some(nss));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::testutil::{docker_like, facts};

    fn map(c: u32, h: u32, s: u32) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default().container_id(c).host_id(h).size(s).build().unwrap()
    }

    #[test]
    fn adds_the_allocated_range() {
        let spec = rewrite(docker_like(), &facts()).unwrap();
        let l = spec.linux().as_ref().unwrap();
        assert_eq!(l.uid_mappings().as_ref().unwrap(), &vec![map(0, 1 << 20, 65536)]);
        assert_eq!(l.gid_mappings().as_ref().unwrap(), &vec![map(0, 1 << 20, 65536)]);
        assert!(l.namespaces().as_ref().unwrap().iter().any(|n| n.typ() == LinuxNamespaceType::User));
    }

    #[test]
    fn a_pod_member_joins_the_pods_user_namespace_with_its_mappings() {
        let f = crate::facts::Facts { pod_userns: Some("/proc/42/ns/user".into()), host_id: 3 << 20, ..facts() };
        let spec = rewrite(docker_like(), &f).unwrap();
        let l = spec.linux().as_ref().unwrap();
        let user = l.namespaces().as_ref().unwrap().iter().find(|n| n.typ() == LinuxNamespaceType::User).unwrap();
        assert_eq!(user.path().as_deref(), Some(std::path::Path::new("/proc/42/ns/user")));
        assert_eq!(l.uid_mappings().as_ref().unwrap(), &vec![map(0, 3 << 20, 65536)]);
        assert_eq!(rewrite(spec.clone(), &f).unwrap(), spec, "idempotent");
    }

    #[test]
    fn ping_group_range_is_clamped_to_the_mapped_gids() {
        let mut spec = docker_like();
        let sysctl = [("net.ipv4.ping_group_range".to_string(), "0 2147483647".to_string())].into_iter().collect();
        spec.linux_mut().as_mut().unwrap().set_sysctl(Some(sysctl));
        let out = rewrite(spec, &facts()).unwrap();
        assert_eq!(out.linux().as_ref().unwrap().sysctl().as_ref().unwrap()["net.ipv4.ping_group_range"], "0 65535");
    }

    #[test]
    fn the_allocated_range_is_validated_too() {
        // Found by the fuzzer (src/fuzz.rs): facts with hostID 0 mapped host root, and a range
        // smaller than 65536 (or overflowing) was written out, then refused when the output
        // was rewritten again (not idempotent).
        let with = |host_id, id_size| crate::facts::Facts { host_id, id_size, ..facts() };
        let e = |f| rewrite(docker_like(), &f).unwrap_err().to_string();
        assert_eq!(e(with(0, 65536)), "linux.uidMappings: maps host root (hostID 0) into the container");
        assert_eq!(e(with(1 << 20, 1000)), "linux.uidMappings: size 1000 is smaller than 65536");
        assert!(e(with(u32::MAX - 10, 65536)).ends_with("overflows"));
        let out = rewrite(docker_like(), &facts()).unwrap();
        assert_eq!(rewrite(out.clone(), &facts()).unwrap(), out);
    }

    #[test]
    fn engine_mappings_are_validated() {
        assert_eq!(validate("uid", &[map(0, 100000, 65536)]), Ok((100000, 65536)));
        let e = |m: &[LinuxIdMapping]| validate("uid", m).unwrap_err().to_string();
        assert_eq!(e(&[map(0, 0, 65536)]), "linux.uidMappings: maps host root (hostID 0) into the container");
        assert_eq!(e(&[map(0, 100000, 1000)]), "linux.uidMappings: size 1000 is smaller than 65536");
        assert_eq!(e(&[map(0, 1, 65536), map(65536, 200000, 10)]), "linux.uidMappings: 2 entries; nestrun needs one contiguous range");
        assert_eq!(e(&[map(1, 100000, 65536)]), "linux.uidMappings: must start at container id 0, not 1");
        assert_eq!(e(&[map(0, u32::MAX - 5, 65536)]), format!("linux.uidMappings: hostID {} + size 65536 overflows", u32::MAX - 5));
    }
}
