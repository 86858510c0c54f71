//! Mounting a new procfs or sysfs for a process in a container, on its behalf (the syscall
//! supervisor's `mount` arm, `fuse::supervisor_mount`), then placing the container's emulated
//! files over it, so that an inner runc's /proc, `unshare -p --mount-proc` or systemd-nspawn get
//! them as the container's own /proc does (`inject`).
//!
//! A helper process does it, forked from the FUSE server, never with more privilege than the
//! caller has:
//! - it is forked into the caller's pid namespace (a procfs shows the pid namespace of its
//!   mounter), then enters its network namespace (a sysfs shows its mounter's), mount
//!   namespace and user namespace, then the caller's root and working directory;
//! - it takes the caller's fs uid and gid (as the caller's user namespace maps them), no
//!   supplementary groups, and exactly the caller's effective, permitted and inheritable
//!   capabilities. The kernel then checks the mount as it would have for the caller
//!   (CAP_SYS_ADMIN over the namespaces, `mount_too_revealing`, search permission on the path);
//! - it is not dumpable: the caller's user namespace cannot ptrace it or open its descriptors
//!   (its memory belongs to the host's user namespace), and it dies with its parent;
//! - the target is resolved once, by the helper, inside the caller's root (a symlink or `..`
//!   cannot leave it), or is the caller's own descriptor (`/proc/self/fd/N`); the new mount is
//!   attached to that very directory (`move_mount` between descriptors: no second lookup a
//!   racing rename or symlink could redirect), and the emulated files are attached below the
//!   new mount by name, where the caller cannot create symlinks (procfs, sysfs).
//!
//! The emulated files arrive as detached clones of the FUSE server's files, made beforehand in
//! the host's mount namespace (`clone_tree`). Like the container's own, they are not locked:
//! the caller may unmount one, which only reveals the kernel's file.
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;

use super::{MOVE_MOUNT_F_EMPTY_PATH, OPEN_TREE_CLONE};

const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;
const FSOPEN_CLOEXEC: u32 = 1;
const FSMOUNT_CLOEXEC: u32 = 1;
const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_CMD_CREATE: u32 = 6;

/// Where the new mount goes.
pub enum Target {
    /// The caller's descriptor (taken with `pidfd_getfd`).
    Fd(OwnedFd),
    /// A path, resolved in the caller's root and working directory.
    Path(CString),
}

/// What to mount.
pub struct Request {
    /// "proc" or "sysfs".
    pub fstype: &'static CStr,
    pub source: Option<CString>,
    /// The option string as `fsconfig` calls (key, value; no value: a flag).
    pub options: Vec<(CString, Option<CString>)>,
    /// MOUNT_ATTR_* for `fsmount`.
    pub attrs: u64,
    /// The superblock read-only ("ro").
    pub read_only: bool,
    pub target: Target,
    /// Detached clones of emulated files, and where they go below the new mount.
    pub overlays: Vec<(OwnedFd, CString)>,
}

/// The caller: its namespaces, root and working directory (opened from the host's /proc while
/// it waited in its trapped call), and its credentials inside its user namespace.
pub struct Caller {
    pid_ns: OwnedFd,
    net_ns: OwnedFd,
    mnt_ns: OwnedFd,
    user_ns: OwnedFd,
    root: OwnedFd,
    cwd: OwnedFd,
    pub uid: u32,
    pub gid: u32,
    /// (effective, permitted, inheritable).
    pub caps: (u64, u64, u64),
}

fn open(path: &str, flags: i32) -> std::io::Result<OwnedFd> {
    let c = CString::new(path).map_err(std::io::Error::other)?;
    // SAFETY: a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Caller {
    /// Open what the helper needs of host pid `pid` (a thread id works too).
    pub fn open(pid: i32, uid: u32, gid: u32, caps: (u64, u64, u64)) -> std::io::Result<Caller> {
        let ns = |n: &str| open(&format!("/proc/{pid}/ns/{n}"), libc::O_RDONLY);
        let dir = |n: &str| open(&format!("/proc/{pid}/{n}"), libc::O_PATH | libc::O_DIRECTORY);
        Ok(Caller { pid_ns: ns("pid")?, net_ns: ns("net")?, mnt_ns: ns("mnt")?, user_ns: ns("user")?, root: dir("root")?, cwd: dir("cwd")?, uid, gid, caps })
    }
}

/// A detached copy of the mount at `path` (this process's mount namespace), to attach elsewhere.
pub fn clone_tree(path: &Path) -> Result<OwnedFd, Errno> {
    let c = CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())).map_err(|_| Errno::EINVAL)?;
    // SAFETY: open_tree with a valid NUL-terminated path.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), OPEN_TREE_CLONE | libc::O_CLOEXEC as u32) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a new descriptor this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The mount id of the procfs or sysfs whose root `path` names in process `pid`'s root (the
/// path resolved there by `openat2(RESOLVE_IN_ROOT)`: neither a symlink nor `..` leads out);
/// None for anything else.
pub fn procfs_mount_root(pid: i32, path: &[u8]) -> Option<u64> {
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    const SYSFS_MAGIC: i64 = 0x6265_6572;
    const RESOLVE_IN_ROOT: u64 = 0x10;
    let root = open(&format!("/proc/{pid}/root"), libc::O_PATH | libc::O_DIRECTORY).ok()?;
    let c = CString::new(path).ok()?;
    // struct open_how: flags, mode, resolve.
    let how: [u64; 3] = [(libc::O_PATH | libc::O_CLOEXEC) as u64, 0, RESOLVE_IN_ROOT];
    // SAFETY: openat2 with a valid path and struct; the descriptor returned is new and ours.
    let fd = unsafe { libc::syscall(libc::SYS_openat2, root.as_raw_fd(), c.as_ptr(), how.as_ptr(), std::mem::size_of_val(&how)) };
    if fd < 0 {
        return None;
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let fs = nix::sys::statfs::fstatfs(&fd).ok()?;
    if ![PROC_SUPER_MAGIC, SYSFS_MAGIC].contains(&(fs.filesystem_type().0 as i64)) {
        return None;
    }
    // SAFETY: statx on our descriptor into a zeroed struct.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statx(fd.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_MNT_ID, &mut st) };
    (r == 0 && st.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0 && st.stx_mask & libc::STATX_MNT_ID != 0).then_some(st.stx_mnt_id)
}

/// A detached copy of the detached mount `fd` (a clone made once is cloned for each use: no
/// path lookup into the FUSE server each time).
pub fn clone_again(fd: &OwnedFd) -> Result<OwnedFd, Errno> {
    // SAFETY: open_tree on our descriptor with an empty path.
    let r = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), OPEN_TREE_CLONE | libc::AT_EMPTY_PATH as u32 | libc::O_CLOEXEC as u32) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a new descriptor this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// A descriptor of process `pid`'s (a thread's) descriptor `n`.
pub fn caller_fd(pid: i32, n: i32) -> Result<OwnedFd, Errno> {
    const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;
    // SAFETY: plain syscalls; the descriptors returned are new and ours.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, PIDFD_THREAD) };
    if pidfd < 0 {
        return Err(Errno::last());
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), n, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Do the mount of `req` as `caller` would (see the module's doc); the caller's errno on
/// failure.
pub fn mount_for(caller: &Caller, req: &Request, timeout: Duration) -> Result<(), Errno> {
    run_as(caller, timeout, &|| mount(req))
}

/// Detach the mounts at `paths` (the emulated files over a procfs the caller unmounts) as
/// `caller` would.
pub fn unmount_for(caller: &Caller, paths: &[CString], timeout: Duration) -> Result<(), Errno> {
    run_as(caller, timeout, &|| {
        for p in paths {
            // SAFETY: a valid NUL-terminated path.
            check(unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) } as libc::c_long)?;
        }
        Ok(())
    })
}

/// Run `act` in a helper that has become `caller` (see the module's doc). A helper that takes
/// longer than `timeout` (a path on a file system whose server does not answer) is killed:
/// EIO then.
fn run_as(caller: &Caller, timeout: Duration, act: &dyn Fn() -> Result<(), Errno>) -> Result<(), Errno> {
    // A procfs shows its mounter's pid namespace: this thread's children go to the caller's
    // for this one fork, then back to this process's own (an ancestor of every container's).
    let own = open("/proc/self/ns/pid", libc::O_RDONLY).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    // SAFETY: setns of this thread's pid namespace for children; plain syscall.
    check(unsafe { libc::setns(caller.pid_ns.as_raw_fd(), libc::CLONE_NEWPID) } as libc::c_long)?;
    // SAFETY: the child only makes syscalls and exits (see `become_caller`); glibc's fork
    // leaves malloc usable in the child, and nothing it calls takes a lock another thread may
    // hold.
    let child = unsafe { libc::fork() };
    if child == 0 {
        unsafe {
            // Dies with the supervisor thread; the caller's user namespace cannot ptrace it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::prctl(libc::PR_SET_DUMPABLE, 0);
        }
        let code = match become_caller(caller).and_then(|()| act()) {
            Ok(()) => 0,
            Err(e) => e as i32,
        };
        // SAFETY: only syscalls were made; exit without running this process's destructors.
        unsafe { libc::_exit(code) };
    }
    let forked = if child < 0 { Err(Errno::last()) } else { Ok(child) };
    // SAFETY: as above.
    if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
        tracing::error!("cannot return to the own pid namespace: {}", Errno::last());
    }
    wait(forked?, timeout)
}

/// Wait for `child` at most `timeout`; its exit code is an errno (0: done).
fn wait(child: libc::pid_t, timeout: Duration) -> Result<(), Errno> {
    // SAFETY: plain syscalls on our own child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0) };
    if pidfd >= 0 {
        let mut p = libc::pollfd { fd: pidfd as RawFd, events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let ready = loop {
            let r = unsafe { libc::poll(&mut p, 1, ms) };
            if r >= 0 || Errno::last() != Errno::EINTR {
                break r > 0;
            }
        };
        unsafe { libc::close(pidfd as RawFd) };
        if !ready {
            unsafe { libc::kill(child, libc::SIGKILL) };
        }
    }
    let mut status = 0;
    while unsafe { libc::waitpid(child, &mut status, 0) } < 0 {
        if Errno::last() != Errno::EINTR {
            return Err(Errno::EIO);
        }
    }
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            e => Err(Errno::from_raw(e)),
        }
    } else {
        Err(Errno::EIO)
    }
}

fn check(r: libc::c_long) -> Result<libc::c_long, Errno> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// `struct __user_cap_header_struct` / `__user_cap_data_struct` (version 3: two words).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Become the caller: namespaces, root, cwd, ids, capabilities.
fn become_caller(caller: &Caller) -> Result<(), Errno> {
    unsafe {
        // The host's supplementary groups must not come along (done while still able to).
        check(libc::setgroups(0, std::ptr::null()) as libc::c_long)?;
        for (fd, t) in [(&caller.net_ns, libc::CLONE_NEWNET), (&caller.mnt_ns, libc::CLONE_NEWNS), (&caller.user_ns, libc::CLONE_NEWUSER)] {
            check(libc::setns(fd.as_raw_fd(), t) as libc::c_long)?;
        }
        check(libc::fchdir(caller.root.as_raw_fd()) as libc::c_long)?;
        check(libc::chroot(c".".as_ptr()) as libc::c_long)?;
        check(libc::fchdir(caller.cwd.as_raw_fd()) as libc::c_long)?;
        check(libc::prctl(libc::PR_SET_KEEPCAPS, 1) as libc::c_long)?;
        check(libc::setresgid(caller.gid, caller.gid, caller.gid) as libc::c_long)?;
        check(libc::setresuid(caller.uid, caller.uid, caller.uid) as libc::c_long)?;
        let (e, p, i) = caller.caps;
        let mut head = CapHeader { version: 0x2008_0522, pid: 0 };
        let data = [0, 32].map(|s| CapData { effective: (e >> s) as u32, permitted: (p >> s) as u32, inheritable: (i >> s) as u32 });
        check(libc::syscall(libc::SYS_capset, &mut head as *mut CapHeader, data.as_ptr()))?;
    }
    Ok(())
}

/// The new mount, attached at the target, the emulated files over it.
fn mount(req: &Request) -> Result<(), Errno> {
    let target = match &req.target {
        Target::Fd(fd) => fd.as_raw_fd(),
        Target::Path(p) => {
            // SAFETY: a valid NUL-terminated path; the descriptor is closed at _exit.
            check(unsafe { libc::open(p.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) } as libc::c_long)? as RawFd
        }
    };
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: syscalls with valid NUL-terminated strings and descriptors of this process.
    unsafe {
        let fs = check(libc::syscall(libc::SYS_fsopen, req.fstype.as_ptr(), FSOPEN_CLOEXEC))? as RawFd;
        if let Some(s) = &req.source {
            check(libc::syscall(libc::SYS_fsconfig, fs, FSCONFIG_SET_STRING, c"source".as_ptr(), s.as_ptr(), 0))?;
        }
        for (k, v) in &req.options {
            match v {
                Some(v) => check(libc::syscall(libc::SYS_fsconfig, fs, FSCONFIG_SET_STRING, k.as_ptr(), v.as_ptr(), 0))?,
                None => check(libc::syscall(libc::SYS_fsconfig, fs, FSCONFIG_SET_FLAG, k.as_ptr(), none, 0))?,
            };
        }
        if req.read_only {
            check(libc::syscall(libc::SYS_fsconfig, fs, FSCONFIG_SET_FLAG, c"ro".as_ptr(), none, 0))?;
        }
        check(libc::syscall(libc::SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, none, none, 0))?;
        let mnt = check(libc::syscall(libc::SYS_fsmount, fs, FSMOUNT_CLOEXEC, req.attrs))? as RawFd;
        check(libc::syscall(libc::SYS_move_mount, mnt, c"".as_ptr(), target, c"".as_ptr(), MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH))?;
        // The emulated files: one that this mount does not have (a `subset=pid` procfs, a
        // sysctl of another kernel) is skipped.
        for (clone, dest) in &req.overlays {
            libc::syscall(libc::SYS_move_mount, clone.as_raw_fd(), c"".as_ptr(), mnt, dest.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH);
        }
    }
    Ok(())
}
