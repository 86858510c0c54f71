//! Syscalls newer than the engine's seccomp profile. The filter answers ENOSYS above the
//! highest syscall a profile names (libcontainer patch 11, runc's rule), which is how new libc
//! and Go runtimes learn to fall back. Two consequences for a system container's profile:
//! - A newer call that only adds a flag argument to one the profile allows is allowed too:
//!   `fchmodat2` (`fchmodat` with flags). Go's fallback for it (dockerd 28's `docker cp`
//!   into an inner container) goes through `/proc/self/fd`, which the copy's private mount
//!   namespace does not have: with ENOSYS the inner copy fails, with the call it works. It
//!   grants nothing `fchmodat` does not.
//! - Naming a syscall moves the highest up, so unnamed ones below it would get the default
//!   action (EPERM) instead of ENOSYS: every syscall that nestrun's additions pass over keeps
//!   ENOSYS through a rule of its own, so the container sees what the engine's profile meant.
//!
//! Since Linux 5.1 new syscalls have one number on every architecture (asm-generic's 424 on),
//! so their order is one table for all.
use libcontainer::oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSyscallBuilder};

/// The syscalls from 424 on, in number order.
pub const UNIFIED: &[&str] = &[
    "pidfd_send_signal", "io_uring_setup", "io_uring_enter", "io_uring_register", "open_tree",
    "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "pidfd_open", "clone3", "close_range",
    "openat2", "pidfd_getfd", "faccessat2", "process_madvise", "epoll_pwait2", "mount_setattr",
    "quotactl_fd", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
    "memfd_secret", "process_mrelease", "futex_waitv", "set_mempolicy_home_node", "cachestat",
    "fchmodat2", "map_shadow_stack", "futex_wake", "futex_wait", "futex_requeue", "statmount",
    "listmount", "lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules", "mseal",
    "setxattrat", "getxattrat", "listxattrat", "removexattrat", "open_tree_attr", "file_getattr",
    "file_setattr",
];

/// A newer call and the older one whose allow rule it shares.
const FLAG_VARIANTS: &[(&str, &str)] = &[("fchmodat", "fchmodat2")];

const ENOSYS: u32 = 38;

fn named(p: &LinuxSeccomp) -> impl Iterator<Item = &String> {
    p.syscalls().iter().flatten().flat_map(|r| r.names().iter())
}

/// The index in `UNIFIED` of the highest syscall `p` names (None: it names none of them).
pub fn highest(p: &LinuxSeccomp) -> Option<usize> {
    named(p).filter_map(|n| UNIFIED.iter().position(|u| u == n)).max()
}

/// Newer flag variants allowed with their older call, where the engine's profile allows that
/// one unconditionally and does not name the newer.
pub fn flag_variants(mut p: LinuxSeccomp) -> LinuxSeccomp {
    let mut rules = p.syscalls().clone().unwrap_or_default();
    for (old, new) in FLAG_VARIANTS {
        if named(&p).any(|n| n == new) {
            continue;
        }
        let allow = rules.iter_mut().find(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().as_ref().is_none_or(|a| a.is_empty()) && r.names().iter().any(|n| n == old));
        if let Some(r) = allow {
            let mut names = r.names().clone();
            names.push(new.to_string());
            r.set_names(names);
        }
    }
    p.set_syscalls(Some(rules));
    p
}

/// ENOSYS, by a rule of their own, for the unnamed syscalls between the engine profile's
/// highest (`engine`, from `highest` before the rewrite) and the rewritten profile's.
pub fn keep_enosys(mut p: LinuxSeccomp, engine: Option<usize>) -> LinuxSeccomp {
    let Some(now) = highest(&p) else { return p };
    let from = engine.map_or(0, |e| e + 1);
    if from > now {
        return p;
    }
    let missing: Vec<String> = UNIFIED[from..now].iter().filter(|u| !named(&p).any(|n| n == *u)).map(|u| u.to_string()).collect();
    if missing.is_empty() {
        return p;
    }
    let rule = LinuxSyscallBuilder::default().names(missing).action(LinuxSeccompAction::ScmpActErrno).errno_ret(ENOSYS).build().expect("all fields set");
    // First, so that a rewrite of the output leaves it where it is (relax moves its own rule
    // to the end).
    let mut rules = p.syscalls().clone().unwrap_or_default();
    rules.insert(0, rule);
    p.set_syscalls(Some(rules));
    p
}

#[cfg(test)]
mod tests {
    use libcontainer::oci_spec::runtime::{LinuxSeccompBuilder, LinuxSyscall};

    use super::*;

    fn rule(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscall {
        LinuxSyscallBuilder::default().names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).action(action).build().unwrap()
    }

    fn profile(rules: Vec<LinuxSyscall>) -> LinuxSeccomp {
        LinuxSeccompBuilder::default().default_action(LinuxSeccompAction::ScmpActErrno).syscalls(rules).build().unwrap()
    }

    #[test]
    fn the_table_is_in_number_order() {
        assert_eq!(UNIFIED.iter().position(|n| *n == "clone3"), Some(435 - 424));
        assert_eq!(UNIFIED.iter().position(|n| *n == "fchmodat2"), Some(452 - 424));
        assert_eq!(UNIFIED.iter().position(|n| *n == "mseal"), Some(462 - 424));
        assert_eq!(UNIFIED.len(), 470 - 424);
    }

    #[test]
    fn fchmodat2_joins_an_unconditional_fchmodat_allow() {
        let p = flag_variants(profile(vec![rule(&["read", "fchmodat"], LinuxSeccompAction::ScmpActAllow)]));
        assert!(named(&p).any(|n| n == "fchmodat2"));
        let denied = flag_variants(profile(vec![rule(&["fchmodat"], LinuxSeccompAction::ScmpActErrno)]));
        assert!(!named(&denied).any(|n| n == "fchmodat2"), "not where fchmodat is denied");
        assert_eq!(flag_variants(p.clone()), p, "idempotent");
    }

    #[test]
    fn syscalls_passed_over_by_additions_keep_enosys() {
        // docker 20.10's profile names up to epoll_pwait2 (441); fchmodat2 (452) is added.
        let engine = profile(vec![rule(&["epoll_pwait2", "clone3"], LinuxSeccompAction::ScmpActAllow)]);
        let before = highest(&engine);
        assert_eq!(before, Some(441 - 424));
        let mut p = engine.clone();
        p.set_syscalls(Some(vec![rule(&["epoll_pwait2", "clone3", "mount_setattr", "fchmodat2"], LinuxSeccompAction::ScmpActAllow)]));
        let out = keep_enosys(p, before);
        let last = out.syscalls().as_ref().unwrap()[0].clone();
        assert_eq!(last.errno_ret(), Some(38));
        assert_eq!(last.names(), &["quotactl_fd", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self", "memfd_secret", "process_mrelease", "futex_waitv", "set_mempolicy_home_node", "cachestat"]);
        assert_eq!(keep_enosys(out.clone(), highest(&out)), out, "idempotent once the rule is there");
        // A profile naming none of the table: everything below the added highest keeps ENOSYS.
        let mut old = profile(vec![rule(&["read"], LinuxSeccompAction::ScmpActAllow)]);
        old.set_syscalls(Some(vec![rule(&["read", "open_tree"], LinuxSeccompAction::ScmpActAllow)]));
        let out = keep_enosys(old, None);
        assert_eq!(out.syscalls().as_ref().unwrap()[0].names(), &["pidfd_send_signal", "io_uring_setup", "io_uring_enter", "io_uring_register"]);
    }
}
