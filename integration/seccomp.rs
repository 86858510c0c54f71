//! Syscalls newer than the container's seccomp profile get ENOSYS, as under runc (libcontainer
//! patch 11): glibc >= 2.39 and Go try `fchmodat2`, `clone3`, ... first and fall back to the
//! older call only on ENOSYS. A static probe (integration/enosys.c) calls syscall numbers
//! above every profile's highest (451 cachestat, 453 map_shadow_stack, 460 lsm_set_self_attr,
//! 999 none), one the engines do not list (174 create_module: the default action) and one
//! nestrun's system mode lists and denies (246 kexec_load), under each engine's default
//! profile, with runc beside. 452 (fchmodat2) is allowed in system mode with fchmodat
//! (rewrite/newsyscalls.rs); 451 keeps ENOSYS there through a rule of its own.
use serde_json::json;

use crate::badinput::{is_root, Env};
use crate::util::*;

const PROBE_NRS: [&str; 6] = ["451", "453", "460", "999", "174", "246"];
const EXPECTED: &str = "451 ENOSYS\n453 ENOSYS\n460 ENOSYS\n999 ENOSYS\n174 EPERM\n246 EPERM";

/// integration/enosys.c built static into a fresh directory.
pub(crate) fn probe_dir() -> TempDir {
    let dir = tempdir("enosys");
    build_static("enosys.c", &dir.path, "enosys");
    dir
}

fn probe_cmd() -> String {
    format!("/t/enosys {}", PROBE_NRS.join(" "))
}

/// dockerd 20.10's default profile (it names nothing past 441): runc and nested answer alike.
#[test]
fn new_syscalls_get_enosys_under_dockers_profile() {
    need_engines!("new_syscalls_get_enosys_under_dockers_profile");
    let dir = probe_dir();
    let vol = format!("{}:/t:ro", dir.path.display());
    let mut outs = Vec::new();
    for runtime in ["runc", "nested"] {
        let mut args = vec!["run", "--rm", "--runtime", runtime, "-v", &vol, BUSYBOX, "sh", "-c"];
        let cmd = probe_cmd();
        args.push(&cmd);
        outs.push(docker(&args).ok().out().to_string());
    }
    assert_eq!(outs[0], EXPECTED, "runc under docker's default profile");
    assert_eq!(outs[1], outs[0], "nested must answer as runc does");
    // fchmodat2 goes with fchmodat in a system container (its NULL path: EFAULT, not ENOSYS).
    let o = docker(&["run", "--rm", "--runtime", "nested", "-v", &vol, BUSYBOX, "/t/enosys", "452"]).ok();
    assert_eq!(o.out(), "452 EFAULT", "{o:?}");
}

/// containerd's default profile (`ctr run --seccomp`) in both of nestrun's modes, and runc.
#[test]
fn new_syscalls_get_enosys_under_containerds_profile_in_both_modes() {
    need_engines!("new_syscalls_get_enosys_under_containerds_profile_in_both_modes");
    let dir = probe_dir();
    let bind = format!("type=bind,src={},dst=/t,options=rbind:ro", dir.path.display());
    let base = ["--seccomp", "--mount", bind.as_str()];
    let runc = ctr_run_with("runc", &unique("enosys-runc"), &base, &probe_cmd()).ok();
    assert_eq!(runc.out(), EXPECTED, "runc under containerd's default profile");
    for mode in ["system", "plain"] {
        let annotation = format!("io.nestrun.mode={mode}");
        let mut extra = base.to_vec();
        extra.extend(["--annotation", annotation.as_str()]);
        let id = unique("enosys");
        let o = ctr_run_with(&nestrun_bin(), &id, &extra, &probe_cmd()).ok();
        assert_eq!(o.out(), runc.out(), "{mode} mode must answer as runc does");
        assert_no_traces(&id);
    }
}

/// A profile of one's own: `defaultErrnoRet` stays the answer for known syscalls it does not
/// name, a named one keeps its own errno, and numbers above its highest get ENOSYS.
#[test]
fn default_errno_and_named_errnos_are_kept_below_the_highest() {
    if !is_root() {
        crate::skip::skip("root", "default_errno_and_named_errnos_are_kept_below_the_highest", "needs root");
        return;
    }
    let probe = probe_dir();
    for mode in ["plain", "system"] {
        let e = Env::new("enosys-own");
        std::fs::copy(probe.path.join("enosys"), e.bundle.join("rootfs/bin/enosys")).unwrap();
        e.edit(|c| {
            c["annotations"] = json!({ "io.nestrun.mode": mode });
            c["process"]["args"] = json!(["/bin/enosys", "110", "174", "999"]);
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ERRNO",
                "defaultErrnoRet": 13,
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "syscalls": [
                    { "names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 9 },
                    { "names": STARTUP, "action": "SCMP_ACT_ALLOW" },
                ],
            });
        });
        let i = e.run_id("own");
        let o = e.cli(&["run", "--bundle", e.bundle.to_str().unwrap(), &i]).ok();
        assert_eq!(o.out(), "110 EBADF\n174 EACCES\n999 ENOSYS", "{mode} mode: {o:?}");
        e.delete_leaves_nothing(&i);
    }
}

/// What libcontainer's init and a static glibc program call after the filter is loaded.
const STARTUP: &[&str] = &[
    "execve", "brk", "arch_prctl", "set_tid_address", "set_robust_list", "rseq", "prlimit64",
    "mprotect", "mmap", "munmap", "uname", "getrandom", "write", "writev", "exit_group", "exit",
    "newfstatat", "fstat", "readlink", "readlinkat", "close", "close_range", "futex", "getpid",
    "gettid", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "capget", "capset", "prctl",
    "setgroups", "setuid", "setgid", "setresuid", "setresgid", "getcwd", "chdir", "fchdir",
    "openat", "read", "ioctl", "fcntl", "dup2", "dup3", "sched_getaffinity", "access",
    "faccessat2", "statx", "lseek", "getuid", "geteuid", "getgid", "getegid", "sendmsg",
    "recvmsg", "sendto", "recvfrom", "pipe2", "wait4", "kill", "tgkill", "sigaltstack",
    "madvise", "sched_yield", "clock_gettime", "clock_nanosleep", "getdents64", "poll", "ppoll",
    "accept4", "accept", "socket", "bind", "listen", "connect", "getsockopt", "setsockopt",
    "shutdown", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait",
];

/// podman's default profile (podman 4.3 here), nested system mode against runc.
#[test]
fn new_syscalls_get_enosys_under_podmans_profile() {
    need_engines!("new_syscalls_get_enosys_under_podmans_profile");
    crate::podman::ensure_image();
    let dir = probe_dir();
    let vol = format!("{}:/t:ro", dir.path.display());
    // runc cannot give podman's default RLIMIT_NOFILE and RLIMIT_NPROC on a host without
    // CAP_SYS_RESOURCE in the bounding set: both get the same lower one.
    let args = ["run", "--rm", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "-v", &vol, crate::podman::IMAGE, "sh", "-c", &probe_cmd()];
    let nested = crate::podman::podman(&args).ok();
    let mut c = std::process::Command::new("podman");
    c.args(["--root", "/var/lib/nestrun-test/podman", "--runroot", "/run/nestrun-test/podman", "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc"]);
    c.args(args);
    let runc = run_cmd(c, std::time::Duration::from_secs(120)).ok();
    // podman's profile answers ENOSYS by default (defaultErrnoRet 38): 174 too.
    assert_eq!(runc.out(), EXPECTED.replace("174 EPERM", "174 ENOSYS"), "runc under podman's default profile");
    assert_eq!(nested.out(), runc.out(), "nested answers as runc does");
}
