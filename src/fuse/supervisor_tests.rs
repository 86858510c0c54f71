//! The supervisor against the kernel: a forked child, the init of a new pid namespace, loads a
//! filter that traps `sysinfo` and `getpid` with a listener, hands the notify fd to the
//! supervisor's socket as libcontainer does, and calls them.
use std::time::{Duration, SystemTime};

use super::*;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// sysinfo and getpid of the native architecture go to the listener; all else is allowed.
fn program() -> Vec<libc::sock_filter> {
    let (ld, jeq, ret) = (0x20, 0x15, 0x06);
    vec![
        insn(ld, 0, 0, 4),
        insn(jeq, 0, 3, NATIVE_ARCH),
        insn(ld, 0, 0, 0),
        insn(jeq, 2, 0, libc::SYS_sysinfo as u32),
        insn(jeq, 1, 0, libc::SYS_getpid as u32),
        insn(ret, 0, 0, RET_ALLOW),
        insn(ret, 0, 0, RET_USER_NOTIF),
    ]
}

/// What the child saw, written to a pipe as plain data.
#[repr(C)]
#[derive(Clone, Copy)]
struct Seen {
    loaded: i64,
    sysinfo: i64,
    info: libc::sysinfo,
    bad_ptr_errno: i64,
    pid: i64,
}

/// Runs the child (the init of a new pid namespace): load the filter, send its fd to `addr` (unless `send` is false: the fd is
/// closed, as if the supervisor had died), then call the trapped syscalls. Only raw syscalls
/// after the fork (the test process has other threads).
fn child(addr: &libc::sockaddr_un, send: bool) -> Seen {
    let prog = program();
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
    let state = b"{\"ociVersion\":\"1.0.2\",\"fds\":[\"seccompFd\"],\"pid\":1,\"state\":{\"status\":\"running\"}}";
    let mut p = [0; 2];
    // SAFETY: a valid array of two ints.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
    // SAFETY: the child below only makes raw syscalls on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        unsafe {
            // The init of a pid namespace of its own: its uptime starts now.
            if libc::unshare(libc::CLONE_NEWPID) != 0 {
                libc::_exit(1);
            }
            let pid = libc::fork();
            if pid > 0 {
                libc::waitpid(pid, std::ptr::null_mut(), 0);
                libc::_exit(0);
            }
            // SAFETY: all-zero is a valid `Seen`.
            let mut seen: Seen = std::mem::zeroed();
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            let fd = libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog);
            seen.loaded = fd;
            if fd >= 0 && send {
                let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                libc::connect(s, (addr as *const libc::sockaddr_un).cast(), std::mem::size_of::<libc::sockaddr_un>() as u32);
                let mut cbuf = [0u64; 8];
                let mut iov = libc::iovec { iov_base: state.as_ptr() as *mut libc::c_void, iov_len: state.len() };
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = cbuf.as_mut_ptr().cast();
                msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
                *(libc::CMSG_DATA(c) as *mut i32) = fd as i32;
                libc::sendmsg(s, &msg, 0);
                libc::close(s);
            }
            if fd >= 0 {
                libc::close(fd as i32);
            }
            seen.sysinfo = if libc::syscall(libc::SYS_sysinfo, &mut seen.info) == 0 { 0 } else { *libc::__errno_location() as i64 };
            seen.bad_ptr_errno = if libc::syscall(libc::SYS_sysinfo, 8usize) == 0 { 0 } else { *libc::__errno_location() as i64 };
            seen.pid = libc::syscall(libc::SYS_getpid);
            libc::write(p[1], (&seen as *const Seen).cast(), std::mem::size_of::<Seen>());
            libc::_exit(0);
        }
    }
    unsafe { libc::close(p[1]) };
    let mut seen = std::mem::MaybeUninit::<Seen>::zeroed();
    // SAFETY: reads at most the struct's size into it.
    let n = unsafe { libc::read(p[0], seen.as_mut_ptr().cast(), std::mem::size_of::<Seen>()) };
    unsafe {
        libc::close(p[0]);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    assert_eq!(n as usize, std::mem::size_of::<Seen>(), "the child did not report");
    // SAFETY: fully written by the child (checked above); plain data.
    unsafe { seen.assume_init() }
}

fn sockaddr(path: &std::path::Path) -> libc::sockaddr_un {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    for (d, s) in a.sun_path.iter_mut().zip(path.as_os_str().as_encoded_bytes()) {
        *d = *s as libc::c_char;
    }
    a
}

#[test]
fn answers_sysinfo_from_the_cgroup_and_lets_other_calls_through() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (/proc/<pid>/mem of the child)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("nestrun-sv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sv.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let mounts = super::super::cgroup::parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let cg = si::proc_cgroup_path(&own, "memory").unwrap().to_string();
    let ctx = Context {
        cgroup_path: cg.clone(),
        mounts: mounts.clone(),
        start_time: SystemTime::now() - Duration::from_secs(100),
        emulated: crate::fuse::supervisor_mount::Emulated::new("/nonexistent".into(), Vec::new()),
    };
    spawn(listener, ctx);

    let seen = child(&sockaddr(&path), true);
    assert!(seen.loaded >= 0, "seccomp with a listener: errno {}", -seen.loaded);
    assert_eq!(seen.sysinfo, 0, "sysinfo answered");
    let host = caller::host_sysinfo().unwrap();
    let info = seen.info;
    assert_eq!(info.mem_unit, 1);
    let limit = Cgroup::with_mounts(&cg, mounts).memory().unwrap().and_then(|m| m.limit);
    let host_total = host.totalram * u64::from(host.mem_unit);
    let want = limit.map_or(host_total, |l| (l / 1024).min(host_total / 1024) * 1024);
    assert_eq!(info.totalram as u64, want, "the cgroup's limit (or the host's memory)");
    assert!(info.freeram as u64 <= want && info.procs >= 1);
    // The caller's pid namespace's init is the caller itself, just started (not the container's
    // 100 s, nor the host's uptime).
    assert!((0..=2).contains(&info.uptime), "uptime {} (the host's {})", info.uptime, host.uptime);
    assert!(info.loads[2] > 0 || host.loads[2] == 0, "the host's load averages");
    assert_eq!(seen.bad_ptr_errno, libc::EFAULT as i64, "a bad pointer gets EFAULT, as from the kernel");
    assert_eq!(seen.pid, 1, "getpid is let through (CONTINUE)");

    // The listener's fd closed without a supervisor: trapped calls fail at once with ENOSYS.
    let t = std::time::Instant::now();
    let seen = child(&sockaddr(&path), false);
    assert_eq!(seen.sysinfo, libc::ENOSYS as i64);
    assert!(t.elapsed() < Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_socket_fd_must_be_a_socket() {
    let f = std::fs::File::open("/dev/null").unwrap();
    let e = listener_from_fd(f.into()).unwrap_err().to_string();
    assert!(e.contains("is not a socket"), "{e}");
    let l = UnixListener::bind(std::env::temp_dir().join(format!("nestrun-sv-fd-{}", std::process::id()))).unwrap();
    assert!(listener_from_fd(OwnedFd::from(l)).is_ok());
    let _ = std::fs::remove_file(std::env::temp_dir().join(format!("nestrun-sv-fd-{}", std::process::id())));
}
