//! The container's syscall supervisor (issue 14): the seccomp profile traps `sysinfo(2)`,
//! `mount(2)`, `umount2(2)` and `fsopen(2)` with SCMP_ACT_NOTIFY, and `linux.seccomp.listenerPath` names the socket of the
//! container's `fuse-serve` (`Facts::supervisor_socket`), which answers sysinfo from the
//! caller's cgroup (`fuse::supervisor`) and performs new procfs and sysfs mounts with the
//! emulated files over them (`fuse::supervisor_mount`; other mounts continue unchanged). libcontainer loads one filter per process (the init and every
//! exec'd process) and sends each filter's notify fd there.
//!
//! - Only syscalls the profile lets through are trapped: an engine's deny (any non-allow rule
//!   naming one, or a denying default action with no allow rule) is kept as it is.
//! - The trap replaces every allow rule for those calls (the lowest action value wins when
//!   several rules of one filter match: an ALLOW would not, but a conditional ERRNO could).
//! - An engine profile with a listener of its own keeps it: one filter, one listener.
//! - Off with `io.nestrun.supervisor=off` or `io.nestrun.proc=host` (`facts::supervisor_wanted`;
//!   gather also reads NESTRUN_SUPERVISOR: no socket in the facts then), and in plain mode (no
//!   rewrite at all). The kernel allows one listener in a task's filter
//!   chain: with the supervisor on, a program in the container that installs its own (LXD's
//!   syscall intercepts, crun's notify plugins, Sysbox, an OCI `listenerPath` inside) gets
//!   EBUSY from seccomp(2).
use std::path::Path;

use libcontainer::oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSyscall, LinuxSyscallBuilder, Spec};

use super::RewriteError;
use crate::facts::{Facts, Mode};

/// The syscalls the supervisor answers.
pub const TRAPPED: &[&str] = &["sysinfo", "mount", "umount2", "fsopen"];

fn lets_through(a: LinuxSeccompAction) -> bool {
    matches!(a, LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog | LinuxSeccompAction::ScmpActNotify)
}

/// Whether the profile lets `name` through: named by a rule that lets it through and by no
/// other rule, or not named at all under an allowing default action.
fn allowed(p: &LinuxSeccomp, name: &str) -> bool {
    let rules: Vec<&LinuxSyscall> = p.syscalls().iter().flatten().filter(|r| r.names().iter().any(|n| n == name)).collect();
    if rules.iter().any(|r| !lets_through(r.action())) {
        return false;
    }
    !rules.is_empty() || matches!(p.default_action(), LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog)
}

/// The profile with the allowed ones of [`TRAPPED`] sent to the listener at `socket`.
pub fn trap(mut p: LinuxSeccomp, socket: &Path) -> LinuxSeccomp {
    if p.listener_path().as_ref().is_some_and(|l| l != socket) {
        return p;
    }
    let trapped: Vec<&str> = TRAPPED.iter().copied().filter(|n| allowed(&p, n)).collect();
    if trapped.is_empty() {
        return p;
    }
    let mut rules: Vec<LinuxSyscall> = Vec::new();
    for mut r in p.syscalls().clone().unwrap_or_default() {
        if r.names().iter().any(|n| trapped.contains(&n.as_str())) {
            let names: Vec<String> = r.names().iter().filter(|n| !trapped.contains(&n.as_str())).cloned().collect();
            if names.is_empty() {
                continue;
            }
            r.set_names(names);
        }
        rules.push(r);
    }
    let notify = LinuxSyscallBuilder::default()
        .names(trapped.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActNotify)
        .build()
        .expect("all fields set");
    rules.push(notify);
    p.set_syscalls(Some(rules));
    p.set_listener_path(Some(socket.to_path_buf()));
    // Marks the listener as nestrun's (libcontainer patch 14): an exec after the supervisor died
    // runs, its trapped calls failing with ENOSYS, instead of failing to start.
    p.set_listener_metadata(Some(libcontainer::process::seccomp_listener::NESTRUN_SUPERVISOR_METADATA.to_string()));
    p
}

pub fn rewrite(mut spec: Spec, facts: &Facts) -> Result<Spec, RewriteError> {
    let Some(socket) = facts.supervisor_socket.as_ref() else { return Ok(spec) };
    if facts.mode != Mode::System || !crate::facts::supervisor_wanted(&spec, None) {
        return Ok(spec);
    }
    let linux = spec.linux_mut().as_mut().ok_or(RewriteError::NoLinux)?;
    // The security step gives every system container a profile.
    if let Some(p) = linux.seccomp().clone() {
        linux.set_seccomp(Some(trap(p, socket)));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use libcontainer::oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator};

    use super::*;
    use crate::rewrite::testutil::{docker_like, facts};

    const SOCK: &str = "/run/nestrun-mnt/c-01234567/sv.sock";

    fn rule(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscall {
        LinuxSyscallBuilder::default().names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).action(action).build().unwrap()
    }

    fn profile(default: LinuxSeccompAction, rules: Vec<LinuxSyscall>) -> LinuxSeccomp {
        LinuxSeccompBuilder::default().default_action(default).syscalls(rules).build().unwrap()
    }

    fn rules_naming(p: &LinuxSeccomp, name: &str) -> Vec<LinuxSeccompAction> {
        p.syscalls().iter().flatten().filter(|r| r.names().iter().any(|n| n == name)).map(|r| r.action()).collect()
    }

    fn on() -> Facts {
        Facts { supervisor_socket: Some(PathBuf::from(SOCK)), ..facts() }
    }

    #[test]
    fn docker_style_allow_rule_becomes_the_trap() {
        let p = profile(LinuxSeccompAction::ScmpActErrno, vec![rule(&["read", "sysinfo", "write"], LinuxSeccompAction::ScmpActAllow)]);
        let out = trap(p, Path::new(SOCK));
        assert_eq!(rules_naming(&out, "sysinfo"), [LinuxSeccompAction::ScmpActNotify], "the only rule naming it");
        assert_eq!(out.syscalls().as_ref().unwrap()[0].names(), &["read", "write"]);
        assert_eq!(out.listener_path().as_deref(), Some(Path::new(SOCK)));
        assert_eq!(out.listener_metadata().as_deref(), Some("nestrun-supervisor"));
        assert_eq!(trap(out.clone(), Path::new(SOCK)), out, "idempotent");
        // NOTIFY on write would make libcontainer refuse the profile (the init could not send
        // its fd): never.
        assert!(rules_naming(&out, "write").iter().all(|a| *a == LinuxSeccompAction::ScmpActAllow));
    }

    #[test]
    fn conditional_rules_and_allow_by_default() {
        let arg = LinuxSeccompArgBuilder::default().index(0usize).value(0u64).op(LinuxSeccompOperator::ScmpCmpNe).build().unwrap();
        let mut cond = rule(&["sysinfo"], LinuxSeccompAction::ScmpActAllow);
        cond.set_args(Some(vec![arg]));
        let out = trap(profile(LinuxSeccompAction::ScmpActErrno, vec![cond]), Path::new(SOCK));
        assert_eq!(rules_naming(&out, "sysinfo"), [LinuxSeccompAction::ScmpActNotify]);
        let out = trap(profile(LinuxSeccompAction::ScmpActAllow, vec![rule(&["kexec_load"], LinuxSeccompAction::ScmpActErrno)]), Path::new(SOCK));
        assert_eq!(rules_naming(&out, "sysinfo"), [LinuxSeccompAction::ScmpActNotify], "allowed by default");
    }

    #[test]
    fn an_engines_deny_and_an_engines_listener_are_kept() {
        for p in [
            profile(LinuxSeccompAction::ScmpActErrno, vec![rule(&["read"], LinuxSeccompAction::ScmpActAllow)]),
            profile(LinuxSeccompAction::ScmpActAllow, vec![rule(&["sysinfo", "mount", "umount2", "fsopen"], LinuxSeccompAction::ScmpActErrno)]),
            profile(
                LinuxSeccompAction::ScmpActErrno,
                vec![rule(&["sysinfo", "mount"], LinuxSeccompAction::ScmpActAllow), rule(&["sysinfo", "mount"], LinuxSeccompAction::ScmpActKill)],
            ),
        ] {
            assert_eq!(trap(p.clone(), Path::new(SOCK)), p, "denied: {p:?}");
        }
        let mut own = profile(LinuxSeccompAction::ScmpActErrno, vec![rule(&["sysinfo"], LinuxSeccompAction::ScmpActAllow), rule(&["mkdir"], LinuxSeccompAction::ScmpActNotify)]);
        own.set_listener_path(Some(PathBuf::from("/run/engine.sock")));
        assert_eq!(trap(own.clone(), Path::new(SOCK)), own);
    }

    #[test]
    fn after_the_security_step_only_when_on() {
        let spec = crate::rewrite::security::rewrite(docker_like(), &on()).unwrap();
        let out = rewrite(spec.clone(), &on()).unwrap();
        let p = out.linux().as_ref().unwrap().seccomp().clone().unwrap();
        assert_eq!(rules_naming(&p, "sysinfo"), [LinuxSeccompAction::ScmpActNotify]);
        assert_eq!(rules_naming(&p, "mount"), [LinuxSeccompAction::ScmpActNotify], "the security step allows mount: trapped");
        assert_eq!(p.listener_path().as_deref(), Some(Path::new(SOCK)));
        let again = rewrite(crate::rewrite::security::rewrite(out.clone(), &on()).unwrap(), &on()).unwrap();
        assert_eq!(again, out, "both steps again: no change");
        assert_eq!(rewrite(spec.clone(), &facts()).unwrap(), spec, "no socket in the facts: no supervisor");
        let plain = Facts { mode: Mode::Plain, ..on() };
        assert_eq!(rewrite(spec.clone(), &plain).unwrap(), spec);
        for (k, v) in [(crate::facts::ANN_SUPERVISOR, "off"), (crate::facts::ANN_PROC, "host")] {
            let mut off = spec.clone();
            off.set_annotations(Some(HashMap::from([(k.to_string(), v.to_string())])));
            assert_eq!(rewrite(off.clone(), &on()).unwrap(), off, "{k}={v}");
        }
    }
}
