//! Small builders for rewrite unit tests.
use libcontainer::oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};

use crate::facts::Facts;

pub fn facts() -> Facts {
    Facts {
        host_id: 1 << 20,
        id_size: 65536,
        runtime_caps: vec!["CAP_CHOWN".into(), "CAP_SYS_ADMIN".into(), "CAP_NET_ADMIN".into()],
        rlimit_hard: vec![("RLIMIT_NOFILE".into(), 524288)],
        ..Facts::default()
    }
}

/// The default spec (as `runc spec` writes it) with exactly these namespaces.
pub fn spec_with_ns(types: &[LinuxNamespaceType]) -> Spec {
    let mut spec = Spec::default();
    let nss = types
        .iter()
        .map(|t| {
            let mut n = LinuxNamespace::default();
            n.set_typ(*t);
            n
        })
        .collect();
    spec.linux_mut().as_mut().unwrap().set_namespaces(Some(nss));
    spec
}

/// The default spec with the namespaces docker gives a container.
pub fn docker_like() -> Spec {
    use LinuxNamespaceType as T;
    spec_with_ns(&[T::Mount, T::Network, T::Uts, T::Pid, T::Ipc])
}
