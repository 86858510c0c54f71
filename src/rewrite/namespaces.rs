//! Namespaces: a system container gets its own mount, uts, ipc, cgroup, pid and network
//! namespaces. Host network or pid namespaces are refused, never silently handed over: with the
//! host netns, container root could reconfigure the host's interfaces and firewall through the
//! inner dockerd; with the host pidns it sees every host process. (A `path` to join another
//! container's namespace, as Kubernetes pods do, is fine: that namespace is not the host's.)
use libcontainer::oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType as T, Spec};

use super::RewriteError;
use crate::facts::Facts;

pub fn rewrite(mut spec: Spec, facts: &Facts) -> Result<Spec, RewriteError> {
    let cri = crate::facts::is_cri(&spec);
    let linux = spec.linux_mut().as_mut().ok_or(RewriteError::NoLinux)?;
    let mut nss = linux.namespaces().clone().unwrap_or_default();
    let has = |nss: &Vec<LinuxNamespace>, t: T| nss.iter().any(|n| n.typ() == t);
    // A Kubernetes pod is told in its own words (hostNetwork, hostPID, hostIPC); a CRI spec
    // without an ipc namespace is a hostIPC pod (docker's --ipc=host gets a private one).
    if cri {
        let host_path = |t: &str| facts.host_namespace_paths.iter().any(|h| h == t);
        for (t, name, field) in [(T::Network, "network", "hostNetwork"), (T::Pid, "pid", "hostPID"), (T::Ipc, "ipc", "hostIPC")] {
            if !has(&nss, t) || host_path(name) {
                return Err(RewriteError::PodHostNamespace(name, field));
            }
        }
    }
    if facts.host_namespace_paths.iter().any(|t| t == "network") {
        return Err(RewriteError::HostNamespace("network", "network"));
    }
    if facts.host_namespace_paths.iter().any(|t| t == "pid") {
        return Err(RewriteError::HostNamespace("pid", "pid"));
    }
    if !has(&nss, T::Network) {
        return Err(RewriteError::HostNamespace("network", "network"));
    }
    if !has(&nss, T::Pid) {
        return Err(RewriteError::HostNamespace("pid", "pid"));
    }
    // A pod sandbox gets a network namespace of its own, inside its user namespace; the
    // interfaces of the engine's move into it during create (host::podnet).
    if facts.pod_net_from.is_some() {
        for n in nss.iter_mut().filter(|n| n.typ() == T::Network) {
            n.set_path(None);
        }
    }
    // The cgroup namespace is what lets the inner runtime mount cgroupfs; uts and ipc are
    // added when the engine shares the host's (sethostname would fail anyway in a userns,
    // but a private one makes the inner dockerd's hostname handling work).
    for t in [T::Mount, T::Uts, T::Ipc, T::Cgroup] {
        if !has(&nss, t) {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(t);
            nss.push(ns);
        }
    }
    linux.set_namespaces(Some(nss));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::testutil::{facts, spec_with_ns};

    #[test]
    fn host_network_is_refused_with_the_flag_to_drop() {
        let spec = spec_with_ns(&[T::Pid, T::Mount]);
        let err = rewrite(spec, &facts()).unwrap_err();
        assert_eq!(err.to_string(), "the container asks for the host's network namespace; nestrun refuses host namespaces (drop --network=host)");
    }

    #[test]
    fn a_path_to_the_host_netns_is_refused() {
        let mut f = facts();
        f.host_namespace_paths = vec!["network".into()];
        let err = rewrite(spec_with_ns(&[T::Pid, T::Network]), &f).unwrap_err();
        assert_eq!(err, RewriteError::HostNamespace("network", "network"));
    }

    #[test]
    fn host_namespace_pods_are_refused_naming_the_pod_field() {
        let cri = |types: &[T]| {
            let mut s = spec_with_ns(types);
            s.set_annotations(Some([("io.kubernetes.cri.container-type".to_string(), "sandbox".to_string())].into()));
            rewrite(s, &facts()).map(|_| ()).map_err(|e| e.to_string())
        };
        assert_eq!(cri(&[T::Pid, T::Ipc]), Err("the pod asks for the host's network namespace; nestrun refuses host namespaces (drop hostNetwork: true)".into()));
        assert_eq!(cri(&[T::Network, T::Ipc]).unwrap_err(), "the pod asks for the host's pid namespace; nestrun refuses host namespaces (drop hostPID: true)");
        assert_eq!(cri(&[T::Network, T::Pid]).unwrap_err(), "the pod asks for the host's ipc namespace; nestrun refuses host namespaces (drop hostIPC: true)");
        assert_eq!(cri(&[T::Network, T::Pid, T::Ipc]), Ok(()));
        assert!(rewrite(spec_with_ns(&[T::Network, T::Pid]), &facts()).is_ok(), "docker's --ipc=host gets a private one");
    }

    #[test]
    fn a_pod_sandbox_gets_its_own_network_namespace() {
        let mut spec = spec_with_ns(&[T::Pid, T::Network]);
        let nss = spec.linux_mut().as_mut().unwrap().namespaces_mut().as_mut().unwrap();
        nss[1].set_path(Some("/run/netns/cni-1".into()));
        let f = Facts { pod_net_from: Some("/run/netns/cni-1".into()), ..facts() };
        let out = rewrite(spec.clone(), &f).unwrap();
        let net = out.linux().as_ref().unwrap().namespaces().as_ref().unwrap().iter().find(|n| n.typ() == T::Network).unwrap().clone();
        assert_eq!(net.path(), &None);
        let kept = rewrite(spec, &facts()).unwrap();
        assert!(kept.linux().as_ref().unwrap().namespaces().as_ref().unwrap().iter().any(|n| n.path().is_some()), "other paths are kept");
    }

    #[test]
    fn missing_private_namespaces_are_added_once() {
        let spec = rewrite(spec_with_ns(&[T::Pid, T::Network]), &facts()).unwrap();
        let spec = rewrite(spec, &facts()).unwrap();
        let types: Vec<T> = spec.linux().as_ref().unwrap().namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect();
        assert_eq!(types, vec![T::Pid, T::Network, T::Mount, T::Uts, T::Ipc, T::Cgroup]);
    }
}
