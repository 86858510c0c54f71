//! Validation at create: every config.json that runc refuses at create is refused here too,
//! before anything is made on the host (no sidecar, lease, mount or FUSE server), in one line
//! that names the field and its value. Also refused here, for the same one line: what youki's
//! libcontainer would refuse later, deep inside create (vendor/libcontainer: validator.rs,
//! container/init_builder.rs, container/mount_validation.rs, user_ns.rs, workload/default.rs).
//!
//! [`validate`] is pure: a function of the parsed spec and of how create was called ([`Call`]).
//! [`at_create`] adds the few checks that need the host (`host.rs`: what a namespace path is,
//! whether AppArmor and SELinux are on).
//!
//! The rules follow runc 1.1.5's behaviour as measured (integration/validation.rs runs every
//! rule through runc too and lists where the two differ). By mode:
//! - Plain mode runs the spec as written: every rule applies as runc applies it.
//! - System mode rewrites the spec first (src/rewrite). The namespaces the rewrite adds (mount,
//!   uts, ipc, cgroup, user) count as present, so what runc refuses for lack of one is fixed
//!   there, not refused: a hostname or domainname without uts, masked or read-only paths without
//!   mount, ipc sysctls without ipc, user.* sysctls without user, a user namespace without
//!   mappings, mappings without a user namespace. A missing network or pid namespace counts as
//!   present too: the rewrite refuses it naming the engine flag to drop
//!   (`rewrite::namespaces`), as it refuses engine mappings other than one range from container
//!   id 0 (`rewrite::userns::validate`), and annotations are checked by
//!   `facts::check_annotations`: none of that is repeated here. System mode alone refuses ids
//!   outside the container's mapped range (process.user, mount uid=/gid=) and points the
//!   global sysctls nestrun emulates per container at their emulated file (`linux.rs`).
//!
//! Refused before this runs, naming the field: a root.path that is missing or not a directory,
//! bind sources and namespace paths that cannot be opened (`bundle::load`), unknown rlimit,
//! namespace, capability, device or seccomp names (oci_spec, while parsing). Not checked here:
//! what only the rootfs can tell (runc and libcontainer both look process.args[0] up at create;
//! libcontainer's message names it), whether an AppArmor profile is loaded, and whether the
//! host has Intel RDT.
use std::path::PathBuf;

use libcontainer::oci_spec::runtime::{LinuxSchedulerPolicy as Policy, Process, Spec};

use crate::facts::Mode;

mod host;
mod linux;
#[cfg(test)]
mod tests;

/// How create was called: what the rules need besides the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub mode: Mode,
    /// `create` and `run --detach`: the container's terminal, if any, goes to a console socket.
    pub detach: bool,
    /// `--console-socket` was given.
    pub console_socket: bool,
}

impl Call {
    /// `nestrun create` without --console-socket, in `mode`.
    #[cfg(test)]
    pub fn create(mode: Mode) -> Call {
        Call { mode, detach: true, console_socket: false }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidateError {
    #[error("ociVersion {0:?}: nestrun runs configs of runtime-spec 1.x only")]
    Version(String),
    #[error("process: missing; create needs a process to run")]
    NoProcess,
    #[error("linux: missing; nestrun runs Linux containers only")]
    NoLinux,
    #[error("process.args: empty; the OCI runtime spec requires at least one entry on Linux")]
    NoArgs,
    #[error("process.args[0]: empty; it names the program to run")]
    EmptyProgram,
    #[error("process.cwd: empty; it must be an absolute path")]
    EmptyCwd,
    #[error("process.cwd {0:?}: not an absolute path")]
    RelativeCwd(PathBuf),
    #[error("process.env[{index}] {value:?}: {why}")]
    Env { index: usize, value: String, why: &'static str },
    #[error("process.terminal is true, but no --console-socket was given to receive the terminal of a detached container")]
    ConsoleSocketRequired,
    #[error("--console-socket was given, but the container gets no terminal to send (process.terminal is not true, or it is not detached)")]
    ConsoleSocketUnused,
    #[error("{field} {id}: above 2147483647, the largest id the kernel takes")]
    IdRange { field: String, id: u32 },
    #[error("process.oomScoreAdj {0}: outside -1000..1000")]
    OomScoreAdj(i32),
    #[error("process.rlimits[{index}] ({typ}): soft {soft} is above hard {hard}")]
    RlimitOrder { index: usize, typ: String, soft: u64, hard: u64 },
    #[error("process.rlimits[{index}]: a second {typ} (the first is process.rlimits[{first}])")]
    RlimitTwice { index: usize, typ: String, first: usize },
    #[error("process.scheduler: {0}")]
    Scheduler(String),
    #[error("process.ioPriority.priority {0}: outside 0..7")]
    IoPriority(i64),
    #[error("hooks.{kind}[{index}].path {path:?}: not an absolute path")]
    HookPath { kind: &'static str, index: usize, path: PathBuf },
    #[error("{field} {value:?}: needs a uts namespace (linux.namespaces has none)")]
    NoUts { field: &'static str, value: String },
    #[error("linux.{0}: needs a mount namespace (linux.namespaces has none)")]
    NoMountNs(&'static str),
    #[error("linux.namespaces[{index}]: a second {typ} namespace (the first is linux.namespaces[{first}])")]
    NamespaceTwice { index: usize, typ: &'static str, first: usize },
    #[error("linux.namespaces[{index}] ({typ}).path {path:?}: not an absolute path")]
    NamespacePath { index: usize, typ: &'static str, path: PathBuf },
    #[error("linux.namespaces[{index}] ({typ}).path {path:?}: {what}")]
    NamespaceKind { index: usize, typ: &'static str, path: PathBuf, what: String },
    #[error("linux.{0}Mappings: set, but linux.namespaces has no user namespace")]
    MappingsWithoutUserns(&'static str),
    #[error("linux.{0}Mappings: empty, but the new user namespace needs them")]
    UsernsWithoutMappings(&'static str),
    #[error("linux.{kind}Mappings[{index}]: {msg}")]
    Mapping { kind: &'static str, index: usize, msg: String },
    #[error("linux.{0}Mappings: container {0} 0 (root) is not mapped")]
    RootNotMapped(&'static str),
    #[error("{field}: {kind} {id} is not mapped in the container's user namespace ({range})")]
    Unmapped { field: String, kind: &'static str, id: u32, range: String },
    #[error("mounts: missing; libcontainer needs the list (it may be empty) to create a user namespace")]
    NoMounts,
    #[error("mounts[{index}].destination {dest:?}: not an absolute path")]
    MountDestination { index: usize, dest: PathBuf },
    #[error("mounts[{index}] at {dest:?}: ID-mapped mounts (idmap, ridmap, uidMappings, gidMappings) are supported only for binds in system mode, with the container's own uidMappings and gidMappings")]
    MountIdmap { index: usize, dest: PathBuf },
    #[error("mounts[{index}] at {dest:?}: option {option:?} is not a number")]
    MountIdOption { index: usize, dest: PathBuf, option: String },
    #[error("linux.sysctl {key:?}: {why}")]
    Sysctl { key: String, why: String },
    #[error("linux.rootfsPropagation {0:?}: expected shared, slave, private or unbindable")]
    RootfsPropagation(String),
    #[error("linux.intelRdt.closID {0:?}: must not be '.' or '..' or contain '/'")]
    ClosId(String),
    #[error("linux.timeOffsets: {0}")]
    TimeOffsets(&'static str),
    #[error("linux.netDevices {name:?}: {why}")]
    NetDevice { name: String, why: &'static str },
    #[error("process.apparmorProfile {0:?}: AppArmor is not enabled on this host")]
    AppArmor(String),
    #[error("process.selinuxLabel {0:?}: SELinux is not enabled on this host")]
    SelinuxLabel(String),
    #[error("linux.mountLabel {0:?}: SELinux is not enabled on this host, and libcontainer would put the label on the tmpfs over masked directories, which fails")]
    MountLabel(String),
}

/// The pure rules: `Err` names the first field that create would refuse.
pub fn validate(spec: &Spec, call: &Call) -> Result<(), ValidateError> {
    // libcontainer's init_builder: runc 1.1.5 takes any version.
    if !spec.version().starts_with("1.") {
        return Err(ValidateError::Version(spec.version().clone()));
    }
    let process = spec.process().as_ref().ok_or(ValidateError::NoProcess)?;
    let linux = spec.linux().as_ref().ok_or(ValidateError::NoLinux)?;
    check_process(process, call)?;
    check_hooks(spec)?;
    linux::check(spec, linux, process, call.mode)
}

/// [`validate`], then the checks that look at the host.
pub fn at_create(spec: &Spec, call: &Call) -> Result<(), ValidateError> {
    validate(spec, call)?;
    host::check(spec, call.mode)
}

fn check_process(p: &Process, call: &Call) -> Result<(), ValidateError> {
    use ValidateError as E;
    // runc's validateProcessSpec; libcontainer panics on empty args (workload/default.rs).
    let args = p.args().as_deref().unwrap_or_default();
    match args.first() {
        None => return Err(E::NoArgs),
        // runc looks the program up at create, libcontainer too: "" is never found.
        Some(a) if a.is_empty() => return Err(E::EmptyProgram),
        Some(_) => {}
    }
    if p.cwd().as_os_str().is_empty() {
        return Err(E::EmptyCwd);
    }
    if !p.cwd().is_absolute() {
        return Err(E::RelativeCwd(p.cwd().clone()));
    }
    // runc's init refuses these; libcontainer would set NAME= for the first.
    for (index, e) in p.env().iter().flatten().enumerate() {
        let why = match e.split_once('=') {
            None => "not NAME=VALUE",
            Some(("", _)) => "the name is empty",
            Some(_) if e.contains('\0') => "contains a NUL byte",
            Some(_) => continue,
        };
        return Err(E::Env { index, value: e.clone(), why });
    }
    // runc's checkTerminal, libcontainer's check_terminal.
    let terminal = p.terminal().unwrap_or(false);
    if call.detach && terminal && !call.console_socket {
        return Err(E::ConsoleSocketRequired);
    }
    if call.console_socket && !(call.detach && terminal) {
        return Err(E::ConsoleSocketUnused);
    }
    let user = p.user();
    let ids = [("process.user.uid".to_string(), user.uid()), ("process.user.gid".to_string(), user.gid())];
    let extra = user.additional_gids().iter().flatten().enumerate().map(|(i, g)| (format!("process.user.additionalGids[{i}]"), *g));
    if let Some((field, id)) = ids.into_iter().chain(extra).find(|(_, id)| *id > i32::MAX as u32) {
        return Err(E::IdRange { field, id });
    }
    // The kernel's range for /proc/<pid>/oom_score_adj (runc and libcontainer fail on write).
    if let Some(v) = p.oom_score_adj().filter(|v| !(-1000..=1000).contains(v)) {
        return Err(E::OomScoreAdj(v));
    }
    let rlimits = p.rlimits().as_deref().unwrap_or_default();
    for (index, r) in rlimits.iter().enumerate() {
        let typ = r.typ().to_string();
        if r.soft() > r.hard() {
            return Err(E::RlimitOrder { index, typ, soft: r.soft(), hard: r.hard() });
        }
        // The OCI spec: duplicated types MUST be an error (runc fails setting the second).
        if let Some(first) = rlimits[..index].iter().position(|o| o.typ() == r.typ()) {
            return Err(E::RlimitTwice { index, typ, first });
        }
    }
    check_scheduler(p)?;
    // libcontainer's validator (runc 1.1.5 predates ioPriority and ignores it).
    if let Some(io) = p.io_priority().as_ref().filter(|io| !(0..=7).contains(&io.priority())) {
        return Err(E::IoPriority(io.priority()));
    }
    Ok(())
}

/// libcontainer's validator (runc 1.1.5 predates process.scheduler and ignores it).
fn check_scheduler(p: &Process) -> Result<(), ValidateError> {
    let Some(s) = p.scheduler() else { return Ok(()) };
    let policy = *s.policy();
    let name = serde_json::to_value(policy).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    let bad = |msg: String| Err(ValidateError::Scheduler(msg));
    if let Some(nice) = s.nice().filter(|n| matches!(policy, Policy::SchedOther | Policy::SchedBatch) && !(-20..=19).contains(n)) {
        return bad(format!("nice {nice} is outside -20..19 ({name})"));
    }
    if let Some(prio) = s.priority().filter(|p| *p != 0 && !matches!(policy, Policy::SchedFifo | Policy::SchedRr)) {
        return bad(format!("priority {prio} is only for SCHED_FIFO and SCHED_RR, not {name}"));
    }
    let deadline_set = [s.runtime(), s.deadline(), s.period()].iter().any(|v| v.is_some_and(|v| v != 0));
    if policy != Policy::SchedDeadline && deadline_set {
        return bad(format!("runtime, deadline and period are only for SCHED_DEADLINE, not {name}"));
    }
    Ok(())
}

/// The hooks runc 1.1.5 runs during create (poststart too: it runs them before `create`
/// returns) must name an absolute path; startContainer and poststop hooks fail only later there.
fn check_hooks(spec: &Spec) -> Result<(), ValidateError> {
    let Some(h) = spec.hooks() else { return Ok(()) };
    #[allow(deprecated)]
    let lists = [("prestart", h.prestart()), ("createRuntime", h.create_runtime()), ("createContainer", h.create_container()), ("poststart", h.poststart())];
    for (kind, hooks) in lists {
        if let Some((index, hook)) = hooks.iter().flatten().enumerate().find(|(_, hook)| !hook.path().is_absolute()) {
            return Err(ValidateError::HookPath { kind, index, path: hook.path().clone() });
        }
    }
    Ok(())
}
