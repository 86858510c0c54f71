//! ID-mapped mounts (kernel >= 5.12; overlay over ID-mapped layers >= 5.19): a user namespace
//! fd carrying the container's mapping, and clones of host paths that show host uid N as
//! container uid N. Container root cannot do this itself (EPERM), so the runtime does.
use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe, read, ForkResult};

use super::{io, HostError, MOVE_MOUNT_F_EMPTY_PATH, OPEN_TREE_CLONE};

const OPEN_TREE_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
const AT_RECURSIVE: u32 = 0x8000;
const AT_EMPTY_PATH: u32 = libc::AT_EMPTY_PATH as u32;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Mount a small tmpfs of its own on a container's mount dir (already created, mode 0711).
/// Every mount nestrun makes for the container (ID-mapped layers, rootfs, data dirs, the FUSE
/// mountpoint) sits on a directory inside it, so teardown detaches the whole tree with one
/// lazy unmount and never removes those directories one by one: removing a directory that
/// is a mountpoint in another mount namespace (copies made while the container lived) makes
/// the kernel detach those copies and wait for an RCU grace period, once per directory
/// (1-4 ms each, a dozen per container). Not nodev: `dev/` holds the device nodes bound into
/// the container; nosuid and noexec hold nothing that needs them (the mounts on top carry
/// their own flags).
pub fn mount_dir_fs(dir: &Path) -> Result<(), HostError> {
    use nix::mount::{mount, MsFlags};
    mount(Some("nestrun"), dir, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("mode=711,size=1m"))
        .map_err(super::sys("mount tmpfs on", dir))
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// A user namespace with `0 -> host_id (size)` for uids and gids, held by an fd. A short-lived
/// child unshares it and waits while we write its maps and open its ns file.
pub fn userns_fd(host_id: u32, size: u32) -> Result<OwnedFd, HostError> {
    let proc_path = Path::new("/proc/self/ns/user");
    let (rx, tx) = pipe().map_err(super::sys("pipe for", proc_path))?;
    let (ready_rx, ready_tx) = pipe().map_err(super::sys("pipe for", proc_path))?;
    // SAFETY: the child only calls async-signal-safe functions (unshare, write, read, _exit).
    match unsafe { fork() }.map_err(super::sys("fork for", proc_path))? {
        ForkResult::Child => {
            drop(tx);
            drop(ready_rx);
            let ok = unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = nix::unistd::write(&ready_tx, &[ok as u8]);
            let mut b = [0u8; 1];
            let _ = read(rx.as_raw_fd(), &mut b);
            unsafe { libc::_exit(0) };
        }
        ForkResult::Parent { child } => {
            drop(rx);
            drop(ready_tx);
            let mut b = [0u8; 1];
            let got = read(ready_rx.as_raw_fd(), &mut b);
            let result = (|| {
                if got != Ok(1) || b[0] != 1 {
                    return Err(HostError::Io { what: "unshare a user namespace for", path: proc_path.into(), source: std::io::Error::other("child failed") });
                }
                let base = Path::new("/proc").join(child.as_raw().to_string());
                let map = format!("0 {host_id} {size}\n");
                std::fs::write(base.join("uid_map"), &map).map_err(io("write", base.join("uid_map")))?;
                std::fs::write(base.join("gid_map"), &map).map_err(io("write", base.join("gid_map")))?;
                let f = std::fs::File::open(base.join("ns/user")).map_err(io("open", base.join("ns/user")))?;
                Ok(OwnedFd::from(f))
            })();
            drop(tx);
            let _ = waitpid(child, None);
            result
        }
    }
}

fn check(ret: libc::c_long, what: &'static str, path: &Path) -> Result<libc::c_long, HostError> {
    if ret < 0 {
        Err(HostError::Sys { what, path: path.into(), source: nix::Error::last() })
    } else {
        Ok(ret)
    }
}

/// Clone the mount at `src` (a bind of it, and of its submounts with `recursive`), ID-map it
/// with `userns`, and attach it at `target` (created as an empty dir or file like `src`).
pub fn clone_idmapped(src: &Path, target: &Path, userns: BorrowedFd, recursive: bool) -> Result<(), HostError> {
    let fd = idmapped_fd(src, userns, recursive)?;
    if src.is_dir() {
        std::fs::create_dir_all(target).map_err(io("create", target))?;
    } else {
        if let Some(p) = target.parent() {
            std::fs::create_dir_all(p).map_err(io("create", p))?;
        }
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(target).map_err(io("create", target))?;
    }
    attach(&fd, target, ATTACH_IDMAPPED)
}

/// Detach the host's copies of the bind sources (`clone_idmapped`'s targets) once the
/// container's mount namespace has its own (libcontainer's create returns after the pivot):
/// nothing else uses them. Left attached, a recursive copy keeps each submount of its source
/// mounted in the host's namespace too, on the same directories: while the container runs,
/// the host could not remove such a mountpoint (rmdir: EBUSY; with runc's container the
/// kernel detaches the container's copies instead), and a tmpfs the host unmounted would live
/// on below the mount dir. The container's copies keep their ID mapping, and a copy that is a
/// slave of a shared source keeps receiving its mounts (the kernel moves the slave to another
/// member of the peer group).
pub fn detach_clones<'a>(clones: impl IntoIterator<Item = &'a Path>) {
    for c in clones {
        super::unmount(c);
    }
}

/// A detached, ID-mapped clone of the mount tree at `src` (not attached anywhere yet).
pub fn idmapped_fd(src: &Path, userns: BorrowedFd, recursive: bool) -> Result<OwnedFd, HostError> {
    let c = cpath(src);
    let rec = if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: plain syscalls with valid, NUL-terminated paths and a properly sized struct.
    let fd = check(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec) }, "open_tree", src)?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr { attr_set: MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    let empty = CString::default();
    check(
        unsafe { libc::syscall(libc::SYS_mount_setattr, fd.as_raw_fd(), empty.as_ptr(), AT_EMPTY_PATH | rec, &attr as *const MountAttr, std::mem::size_of::<MountAttr>()) },
        "id-map (mount_setattr)",
        src,
    )?;
    Ok(fd)
}

/// What an error attaching an ID-mapped clone says.
pub const ATTACH_IDMAPPED: &str = "attach id-mapped mount (move_mount) at";

/// Attach a detached mount at `target` (which exists); `what` names the step in an error.
pub fn attach(fd: &OwnedFd, target: &Path, what: &'static str) -> Result<(), HostError> {
    let (t, empty) = (cpath(target), CString::default());
    // SAFETY: plain syscall with valid, NUL-terminated paths and an open fd.
    check(
        unsafe { libc::syscall(libc::SYS_move_mount, fd.as_raw_fd(), empty.as_ptr(), libc::AT_FDCWD, t.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH) },
        what,
        target,
    )?;
    Ok(())
}

/// Mount an overlay at `target` whose lower layers are the detached mounts `lowers` (top
/// first), handed to the kernel as file descriptors (`lowerdir+`, Linux 6.13): they are never
/// attached to the host's mount table, which saves a mount operation per layer on the kernel's
/// global mount lock and keeps the table that short while the container runs. `Ok(false)`: the
/// kernel does not take layers as descriptors (nothing was mounted; use paths).
pub fn mount_overlay_fds(lowers: &[OwnedFd], upper_work: Option<(&Path, &Path)>, target: &Path) -> Result<bool, HostError> {
    const FSOPEN_CLOEXEC: u32 = 1;
    const FSCONFIG_SET_STRING: u32 = 1;
    const FSCONFIG_SET_FD: u32 = 5;
    const FSCONFIG_CMD_CREATE: u32 = 6;
    const FSMOUNT_CLOEXEC: u32 = 1;
    let what = "mount overlay at";
    let fs = CString::new("overlay").unwrap_or_default();
    // SAFETY: plain syscalls with valid NUL-terminated strings and open fds.
    let fsfd = check(unsafe { libc::syscall(libc::SYS_fsopen, fs.as_ptr(), FSOPEN_CLOEXEC) }, what, target)?;
    let fsfd = unsafe { OwnedFd::from_raw_fd(fsfd as i32) };
    let set = |key: &str, value: Option<&Path>, fd: i32| -> libc::c_long {
        let k = CString::new(key).unwrap_or_default();
        let v = value.map(cpath);
        let (cmd, vp) = match &v {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FD, std::ptr::null()),
        };
        unsafe { libc::syscall(libc::SYS_fsconfig, fsfd.as_raw_fd(), cmd, k.as_ptr(), vp, fd) }
    };
    for (i, l) in lowers.iter().enumerate() {
        if set("lowerdir+", None, l.as_raw_fd()) < 0 {
            let e = nix::Error::last();
            if i == 0 && matches!(e, nix::Error::EINVAL | nix::Error::EBADF | nix::Error::EOPNOTSUPP) {
                return Ok(false);
            }
            return Err(HostError::Sys { what, path: target.into(), source: e });
        }
    }
    if let Some((u, w)) = upper_work {
        check(set("upperdir", Some(u), 0), what, target)?;
        check(set("workdir", Some(w), 0), what, target)?;
    }
    check(set("index", Some(Path::new("off")), 0), what, target)?;
    check(unsafe { libc::syscall(libc::SYS_fsconfig, fsfd.as_raw_fd(), FSCONFIG_CMD_CREATE, std::ptr::null::<libc::c_char>(), std::ptr::null::<libc::c_void>(), 0) }, what, target)?;
    let mfd = check(unsafe { libc::syscall(libc::SYS_fsmount, fsfd.as_raw_fd(), FSMOUNT_CLOEXEC, 0) }, what, target)?;
    let mfd = unsafe { OwnedFd::from_raw_fd(mfd as i32) };
    attach(&mfd, target, what)?;
    Ok(true)
}
