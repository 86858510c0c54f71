//! Privileges that are safe inside the user namespace.
//! - Capabilities: container root gets every capability the runtime itself holds. In a user
//!   namespace a capability only acts on objects that namespace owns (its mounts, netns, cgroup
//!   namespace, files mapped into its range); the kernel checks the host's own resources
//!   against the initial namespace, where the container has none. "All" means the runtime's
//!   bounding set: asking for one the runtime lacks (CAP_SYS_RESOURCE on some hosts) fails.
//!   Only an engine's default set is widened so: a set from which the user dropped something
//!   (`--cap-drop`, a pod's `capabilities.drop`, Kubernetes' restricted profile's `drop: [ALL]`)
//!   is kept as the engine wrote it (see `system_caps`).
//! - Seccomp: the syscalls a nested runtime needs (mount, pivot_root, unshare, setns, keyrings,
//!   the new mount API, ...) are allowed: each is checked by the kernel against the caller's
//!   user namespace. Syscalls that act on the host whatever namespace the caller is in (module
//!   loading, kexec, clocks, swap, acct, raw I/O ports, bpf/perf, open_by_handle_at) stay denied,
//!   also when the engine sent no profile at all (--privileged, seccomp=unconfined) or one that
//!   allows by default.
//! - Rlimits above the runtime's own hard limits are clamped: raising them needs
//!   CAP_SYS_RESOURCE on the host, and the create would fail with "error setting rlimit".
use libcontainer::oci_spec::runtime::{
    Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscall, LinuxSyscallBuilder, PosixRlimitBuilder,
    Spec,
};

use super::RewriteError;
use crate::facts::Facts;

/// Allowed for nested runtimes; the kernel checks each against the caller's user namespace.
pub const NESTED_SYSCALLS: &[&str] = &[
    "mount", "umount", "umount2", "pivot_root", "unshare", "setns", "clone", "sethostname",
    "setdomainname", "keyctl", "add_key", "request_key", "name_to_handle_at", "open_tree",
    "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "chroot",
    // Docker allows these only with CAP_SYS_PTRACE / CAP_SYS_BOOT; the kernel checks ptrace
    // access within the container's pid and user namespaces, and reboot() in a pid namespace
    // only ends that namespace's init.
    "kcmp", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "reboot",
];

/// Never allowed: they act on the host kernel, not on a namespace.
pub const HOST_SYSCALLS: &[&str] = &[
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "swapon",
    "swapoff", "settimeofday", "clock_settime", "clock_settime64", "clock_adjtime",
    "clock_adjtime64", "stime", "acct", "iopl", "ioperm", "open_by_handle_at", "bpf",
    "perf_event_open", "lookup_dcookie", "syslog", "uselib", "nfsservctl", "_sysctl",
];

const EPERM: u32 = 1;

fn syscall_rule(names: &[&str], action: LinuxSeccompAction, errno: Option<u32>) -> LinuxSyscall {
    let mut b = LinuxSyscallBuilder::default().names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).action(action);
    if let Some(e) = errno {
        b = b.errno_ret(e);
    }
    b.build().expect("all fields set")
}

/// Actions under which a syscall goes ahead (LOG allows it and logs it).
fn allows(action: LinuxSeccompAction) -> bool {
    matches!(action, LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog)
}

/// An engine profile that allows by default (a deny-list: `--security-opt seccomp=...` with
/// defaultAction SCMP_ACT_ALLOW): host-acting calls are taken out of its allow rules and denied
/// by one more rule, for those the engine does not already deny unconditionally.
pub fn deny_host_calls(mut profile: LinuxSeccomp) -> LinuxSeccomp {
    let mut rules: Vec<LinuxSyscall> = Vec::new();
    for mut r in profile.syscalls().clone().unwrap_or_default() {
        if allows(r.action()) {
            let names: Vec<String> = r.names().iter().filter(|n| !HOST_SYSCALLS.contains(&n.as_str())).cloned().collect();
            if names.is_empty() {
                continue;
            }
            r.set_names(names);
        }
        rules.push(r);
    }
    let denied = |h: &str| rules.iter().any(|r| !allows(r.action()) && r.args().as_ref().is_none_or(|a| a.is_empty()) && r.names().iter().any(|n| n == h));
    let missing: Vec<&str> = HOST_SYSCALLS.iter().copied().filter(|h| !denied(h)).collect();
    if !missing.is_empty() {
        rules.push(syscall_rule(&missing, LinuxSeccompAction::ScmpActErrno, Some(EPERM)));
    }
    profile.set_syscalls(Some(rules));
    profile
}

/// The engine's profile with host-acting calls removed from every allow rule, conditional
/// allow rules for nested calls made unconditional, and one allow rule for nested calls.
pub fn relax(mut profile: LinuxSeccomp) -> LinuxSeccomp {
    let engine_highest = super::newsyscalls::highest(&profile);
    let allow = LinuxSeccompAction::ScmpActAllow;
    let nested = syscall_rule(NESTED_SYSCALLS, allow, None);
    let mut rules: Vec<LinuxSyscall> = Vec::new();
    // Our own rule from an earlier pass, maybe without the calls the supervisor traps.
    let untrapped = |names: &[String]| -> Vec<String> { names.iter().filter(|n| !super::supervisor::TRAPPED.contains(&n.as_str())).cloned().collect() };
    let ours = |r: &LinuxSyscall| r == &nested || (r.action() == allow && r.args().is_none() && untrapped(r.names()) == untrapped(nested.names()));
    for mut r in profile.syscalls().clone().unwrap_or_default() {
        if ours(&r) {
            continue;
        }
        // A NOTIFY rule (the supervisor's, from an earlier pass) lets its calls through.
        if r.action() != allow && r.action() != LinuxSeccompAction::ScmpActNotify && r.args().as_ref().is_none_or(|a| a.is_empty()) {
            // An engine's explicit deny (podman denies setns, sethostname, ...) would override
            // our allow rule: take the nested calls out of it.
            let names: Vec<String> = r.names().iter().filter(|n| !NESTED_SYSCALLS.contains(&n.as_str())).cloned().collect();
            if names.is_empty() {
                continue;
            }
            r.set_names(names);
        }
        if allows(r.action()) {
            let conditional = r.args().as_ref().is_some_and(|a| !a.is_empty());
            let names: Vec<String> = r
                .names()
                .iter()
                .filter(|n| !HOST_SYSCALLS.contains(&n.as_str()))
                .filter(|n| !(conditional && NESTED_SYSCALLS.contains(&n.as_str())))
                .cloned()
                .collect();
            if names.is_empty() {
                continue;
            }
            r.set_names(names);
        }
        rules.push(r);
    }
    rules.push(nested);
    profile.set_syscalls(Some(rules));
    super::newsyscalls::keep_enosys(super::newsyscalls::flag_variants(profile), engine_highest)
}

/// The profile used when the engine sent none: allow all but the host-acting calls.
pub fn default_profile() -> LinuxSeccomp {
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(vec![syscall_rule(HOST_SYSCALLS, LinuxSeccompAction::ScmpActErrno, Some(EPERM))])
        .build()
        .expect("all fields set")
}

/// Clamp the process's rlimits to `hard` (the runtime's own hard limits, by name). Also used
/// for `exec` (podman's exec process asks for RLIMIT_NOFILE 1048576).
pub fn clamp_rlimits(process: &mut libcontainer::oci_spec::runtime::Process, hard: &[(String, u64)]) {
    if let Some(mut rl) = process.rlimits().clone() {
        for r in rl.iter_mut() {
            let name = serde_json::to_value(r.typ()).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
            if let Some((_, max)) = hard.iter().find(|(n, _)| *n == name) {
                let (hard, soft) = (r.hard().min(*max), r.soft().min(*max));
                *r = PosixRlimitBuilder::default().typ(r.typ()).hard(hard).soft(soft).build().expect("all fields set");
            }
        }
        process.set_rlimits(Some(rl));
    }
}

/// Default capability sets as engines write them when the user asked for nothing: docker,
/// containerd (`ctr`, CRI) and runc's own default spec share the first; `runc spec` writes the
/// second; podman (annotation `io.container.manager: libpod`) and CRI-O (their configurable
/// defaults as shipped) write the others.
const DOCKER_DEFAULT: &[&str] = &[
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID",
    "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
];
const RUNC_SPEC_DEFAULT: &[&str] = &["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
const PODMAN_DEFAULT: &[&str] = &[
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETFCAP",
    "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
];
const CRIO_DEFAULT: &[&str] = &[
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_KILL",
];

/// The engine's default sets for this spec: the first is the one a user's drop is measured
/// against, the others are accepted as untouched when the spec holds exactly one of them.
fn engine_defaults(spec: &Spec) -> &'static [&'static [&'static str]] {
    let ann = |k: &str| spec.annotations().as_ref().and_then(|a| a.get(k)).map(String::as_str);
    if ann("io.container.manager") == Some("libpod") {
        &[PODMAN_DEFAULT]
    } else if ann("io.kubernetes.cri-o.ContainerType").is_some() {
        &[CRIO_DEFAULT]
    } else {
        &[DOCKER_DEFAULT, RUNC_SPEC_DEFAULT]
    }
}

/// The bounding set of a system container. The engine's default set (or any superset of it:
/// `--cap-add`, `--privileged`) becomes every capability the runtime holds — the system
/// container. A set lacking one of the engine's defaults means the user dropped it on
/// purpose: that set is honoured as written (only what the runtime holds), not widened, so
/// `drop: [ALL]` gives an empty set and `--cap-drop NET_RAW` a container without raw sockets.
/// Such a container is an ordinary one in a user namespace (an inner dockerd needs
/// CAP_SYS_ADMIN and CAP_NET_ADMIN: add them back, or do not drop). A missing bounding set is
/// an empty one, as for runc: engines written in Go omit empty lists, so `drop: [ALL]` arrives
/// as `"capabilities": {}`.
pub fn system_caps(spec: &Spec, runtime_caps: &[String]) -> Vec<String> {
    let bounding = spec.process().as_ref().and_then(|p| p.capabilities().as_ref()).and_then(|c| c.bounding().clone()).unwrap_or_default();
    let have: std::collections::BTreeSet<String> = bounding.iter().filter_map(|c| serde_json::to_value(c).ok()?.as_str().map(String::from)).collect();
    let defaults = engine_defaults(spec);
    let exactly = |d: &[&str]| have.len() == d.len() && d.iter().all(|c| have.contains(*c));
    if defaults[0].iter().all(|c| have.contains(*c)) || defaults.iter().any(|d| exactly(d)) {
        return runtime_caps.to_vec();
    }
    let dropped: Vec<&str> = defaults[0].iter().copied().filter(|c| !have.contains(*c)).collect();
    tracing::info!("capabilities dropped by the engine's config ({}): its set is kept, not widened", dropped.join(", "));
    runtime_caps.iter().filter(|c| have.contains(*c)).cloned().collect()
}

/// The process's capabilities and rlimits in a system container: bounding set = `caps` (the
/// `system_caps` of the container), all of them effective for uid 0, rlimits clamped. Used for
/// the init (`rewrite`) and for every `exec`'d process (with the init's bounding set), so
/// `docker exec` root has the same privileges as the container's init.
pub fn process_privileges(process: &mut libcontainer::oci_spec::runtime::Process, caps: &[String], rlimit_hard: &[(String, u64)]) {
    let caps: std::collections::HashSet<Capability> =
        caps.iter().filter_map(|c| serde_json::from_value(serde_json::Value::String(c.clone())).ok()).collect();
    let mut pc = process.capabilities().clone().unwrap_or_default();
    pc.set_bounding(Some(caps.clone()));
    // Only root gets them effective: a `--user 1000` process keeps the engine's sets (it can
    // still gain them the usual way, e.g. through sudo, within the bounding set).
    if process.user().uid() == 0 {
        pc.set_effective(Some(caps.clone()));
        pc.set_permitted(Some(caps));
    }
    process.set_capabilities(Some(pc));
    clamp_rlimits(process, rlimit_hard);
}

pub fn rewrite(mut spec: Spec, facts: &Facts) -> Result<Spec, RewriteError> {
    let caps = system_caps(&spec, &facts.runtime_caps);
    let process = spec.process_mut().as_mut().ok_or(RewriteError::NoProcess)?;
    process_privileges(process, &caps, &facts.rlimit_hard);
    // Clamped like the rlimits: a pod sandbox asks for -998 (kubelet), which a runtime without
    // CAP_SYS_RESOURCE cannot give (runc fails the create unless containerd restricts it).
    if let (Some(adj), Some(floor)) = (process.oom_score_adj(), facts.oom_score_adj_floor) {
        if adj < floor {
            tracing::warn!("oomScoreAdj {adj} clamped to {floor}: the runtime lacks CAP_SYS_RESOURCE to go below its own");
            process.set_oom_score_adj(Some(floor));
        }
    }
    let linux = spec.linux_mut().as_mut().ok_or(RewriteError::NoLinux)?;
    let profile = match linux.seccomp().clone() {
        Some(p) if allows(p.default_action()) => deny_host_calls(p),
        Some(p) => relax(p),
        None => default_profile(),
    };
    linux.set_seccomp(Some(profile));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use libcontainer::oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompOperator, PosixRlimitType};

    use super::*;
    use crate::rewrite::testutil::{docker_like, facts};

    fn names(p: &LinuxSeccomp, action: LinuxSeccompAction) -> Vec<String> {
        p.syscalls().as_ref().unwrap().iter().filter(|r| r.action() == action && r.args().as_ref().is_none_or(|a| a.is_empty())).flat_map(|r| r.names().clone()).collect()
    }

    #[test]
    fn oom_score_adj_below_the_runtimes_own_is_clamped_without_cap_sys_resource() {
        let mut spec = docker_like();
        spec.process_mut().as_mut().unwrap().set_oom_score_adj(Some(-998));
        let f = Facts { oom_score_adj_floor: Some(0), ..facts() };
        assert_eq!(rewrite(spec.clone(), &f).unwrap().process().as_ref().unwrap().oom_score_adj(), Some(0));
        assert_eq!(rewrite(spec.clone(), &facts()).unwrap().process().as_ref().unwrap().oom_score_adj(), Some(-998), "with the capability it is kept");
        spec.process_mut().as_mut().unwrap().set_oom_score_adj(Some(500));
        assert_eq!(rewrite(spec, &f).unwrap().process().as_ref().unwrap().oom_score_adj(), Some(500), "raising needs nothing");
    }

    #[test]
    fn docker_style_profile_gets_nested_calls_but_never_host_calls() {
        let arg = LinuxSeccompArgBuilder::default().index(0usize).value(2114060288u64).op(LinuxSeccompOperator::ScmpCmpMaskedEq).build().unwrap();
        let mut clone_rule = syscall_rule(&["clone"], LinuxSeccompAction::ScmpActAllow, None);
        clone_rule.set_args(Some(vec![arg]));
        let p = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .syscalls(vec![syscall_rule(&["read", "write", "init_module", "acct"], LinuxSeccompAction::ScmpActAllow, None), clone_rule])
            .build()
            .unwrap();
        let out = relax(p);
        let allowed = names(&out, LinuxSeccompAction::ScmpActAllow);
        for n in ["read", "write", "mount", "pivot_root", "unshare", "setns", "clone", "keyctl"] {
            assert!(allowed.contains(&n.to_string()), "{n} not allowed");
        }
        for n in HOST_SYSCALLS {
            assert!(!allowed.contains(&n.to_string()), "{n} allowed");
        }
        // the ENOSYS rule for the newer calls the nested ones pass over (newsyscalls.rs), the
        // engine's allow rule and the nested one: the conditional clone rule is gone
        assert_eq!(out.syscalls().as_ref().unwrap().len(), 3, "the conditional clone rule is gone");
        assert_eq!(out.syscalls().as_ref().unwrap()[0].errno_ret(), Some(38));
        assert_eq!(relax(out.clone()), out, "idempotent");
    }

    #[test]
    fn allow_by_default_profiles_and_log_rules_never_let_host_calls_through() {
        // Found by the fuzzer (src/fuzz.rs): an engine profile with defaultAction ALLOW (or
        // LOG) was kept as is, so kexec_load, init_module, ... were allowed; a LOG rule in a
        // deny-by-default profile let its host calls through too.
        for default in [LinuxSeccompAction::ScmpActAllow, LinuxSeccompAction::ScmpActLog] {
            let p = LinuxSeccompBuilder::default()
                .default_action(default)
                .syscalls(vec![
                    syscall_rule(&["bpf", "read"], LinuxSeccompAction::ScmpActAllow, None),
                    syscall_rule(&["kexec_load", "ptrace"], LinuxSeccompAction::ScmpActErrno, Some(38)),
                ])
                .build()
                .unwrap();
            let mut spec = docker_like();
            spec.linux_mut().as_mut().unwrap().set_seccomp(Some(p));
            let out = rewrite(spec, &facts()).unwrap();
            let p = out.linux().as_ref().unwrap().seccomp().clone().unwrap();
            let denied = names(&p, LinuxSeccompAction::ScmpActErrno);
            for h in HOST_SYSCALLS {
                assert_eq!(denied.iter().filter(|n| n == h).count(), 1, "{h} denied exactly once: {denied:?}");
            }
            assert_eq!(names(&p, LinuxSeccompAction::ScmpActAllow), vec!["read"]);
            assert_eq!(rewrite(out.clone(), &facts()).unwrap(), out, "idempotent");
        }
        let p = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .syscalls(vec![syscall_rule(&["swapoff", "read"], LinuxSeccompAction::ScmpActLog, None)])
            .build()
            .unwrap();
        assert_eq!(names(&relax(p), LinuxSeccompAction::ScmpActLog), vec!["read"]);
    }

    fn with_caps(names: &[&str], annotations: &[(&str, &str)]) -> Spec {
        let mut spec = docker_like();
        let set: std::collections::HashSet<Capability> = names.iter().map(|n| serde_json::from_value(serde_json::Value::String(n.to_string())).unwrap()).collect();
        let p = spec.process_mut().as_mut().unwrap();
        let mut c = p.capabilities().clone().unwrap();
        c.set_bounding(Some(set.clone()));
        c.set_effective(Some(set));
        p.set_capabilities(Some(c));
        spec.set_annotations(Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()));
        spec
    }

    fn bounding(spec: &Spec) -> std::collections::BTreeSet<String> {
        let b = spec.process().as_ref().unwrap().capabilities().as_ref().unwrap().bounding().clone().unwrap();
        b.iter().map(|c| serde_json::to_value(c).unwrap().as_str().unwrap().to_string()).collect()
    }

    fn all_caps() -> Facts {
        Facts { runtime_caps: crate::facts::CAP_NAMES.iter().map(|s| s.to_string()).collect(), ..facts() }
    }

    #[test]
    fn engine_defaults_are_widened_and_explicit_drops_are_honoured() {
        let f = all_caps();
        let all: std::collections::BTreeSet<String> = f.runtime_caps.iter().cloned().collect();
        // docker/containerd's default, with --cap-add, and privileged: every capability
        assert_eq!(bounding(&rewrite(with_caps(DOCKER_DEFAULT, &[]), &f).unwrap()), all);
        let added: Vec<&str> = DOCKER_DEFAULT.iter().copied().chain(["CAP_SYS_PTRACE"]).collect();
        assert_eq!(bounding(&rewrite(with_caps(&added, &[]), &f).unwrap()), all);
        // podman's and CRI-O's defaults, told apart by their annotations
        assert_eq!(bounding(&rewrite(with_caps(PODMAN_DEFAULT, &[("io.container.manager", "libpod")]), &f).unwrap()), all);
        assert_eq!(bounding(&rewrite(with_caps(CRIO_DEFAULT, &[("io.kubernetes.cri-o.ContainerType", "container")]), &f).unwrap()), all);
        // runc spec's three
        assert_eq!(bounding(&rewrite(with_caps(RUNC_SPEC_DEFAULT, &[]), &f).unwrap()), all);
        // --cap-drop NET_RAW (critest "dropping capability"): the engine's 13, nothing added
        let dropped: Vec<&str> = DOCKER_DEFAULT.iter().copied().filter(|c| *c != "CAP_NET_RAW").collect();
        let out = rewrite(with_caps(&dropped, &[("io.kubernetes.cri.container-type", "container")]), &f).unwrap();
        assert_eq!(bounding(&out), dropped.iter().map(|s| s.to_string()).collect());
        let eff = out.process().as_ref().unwrap().capabilities().as_ref().unwrap().effective().clone().unwrap();
        assert_eq!(eff.len(), 13, "root's effective set is the bounding set");
        // drop: [ALL] (Kubernetes' restricted profile), and drop ALL + add NET_BIND_SERVICE
        assert!(bounding(&rewrite(with_caps(&[], &[]), &f).unwrap()).is_empty());
        let mut omitted = with_caps(&[], &[]);
        let mut empty = libcontainer::oci_spec::runtime::LinuxCapabilities::default();
        empty.set_bounding(None);
        omitted.process_mut().as_mut().unwrap().set_capabilities(Some(empty));
        assert!(bounding(&rewrite(omitted, &f).unwrap()).is_empty(), "an omitted (empty) list, as containerd writes drop ALL");
        assert_eq!(bounding(&rewrite(with_caps(&["CAP_NET_BIND_SERVICE"], &[]), &f).unwrap()).into_iter().collect::<Vec<_>>(), vec!["CAP_NET_BIND_SERVICE"]);
        // podman's default under docker's rules (no annotation) is a drop of three
        assert_eq!(bounding(&rewrite(with_caps(PODMAN_DEFAULT, &[]), &f).unwrap()).len(), PODMAN_DEFAULT.len());
        // never more than the runtime holds
        let few = Facts { runtime_caps: vec!["CAP_CHOWN".into()], ..facts() };
        assert_eq!(bounding(&rewrite(with_caps(&dropped, &[]), &few).unwrap()).into_iter().collect::<Vec<_>>(), vec!["CAP_CHOWN"]);
        let out = rewrite(with_caps(&dropped, &[]), &f).unwrap();
        assert_eq!(rewrite(out.clone(), &f).unwrap(), out, "idempotent");
    }

    #[test]
    fn no_profile_gets_the_host_deny_profile_and_caps_are_the_runtimes() {
        let mut spec = docker_like();
        let rl = PosixRlimitBuilder::default().typ(PosixRlimitType::RlimitNofile).hard(1048576u64).soft(1048576u64).build().unwrap();
        spec.process_mut().as_mut().unwrap().set_rlimits(Some(vec![rl]));
        let out = rewrite(spec, &facts()).unwrap();
        let p = out.linux().as_ref().unwrap().seccomp().clone().unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(names(&p, LinuxSeccompAction::ScmpActErrno).len(), HOST_SYSCALLS.len());
        let proc_ = out.process().as_ref().unwrap();
        let b = proc_.capabilities().as_ref().unwrap().bounding().clone().unwrap();
        assert_eq!(b.len(), 3);
        assert!(b.contains(&Capability::SysAdmin));
        let r = &proc_.rlimits().as_ref().unwrap()[0];
        assert_eq!((r.hard(), r.soft()), (524288, 524288));
        assert_eq!(rewrite(out.clone(), &facts()).unwrap(), out, "idempotent");
    }
}
