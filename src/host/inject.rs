//! Placing the emulated /proc and /sys files into a created container. libcontainer (like runc)
//! only accepts spec mounts over a fixed list of /proc files, and sysctl files are not on it;
//! and mounts made before the user namespace exists would be locked, which breaks every inner
//! `mount -t proc`. So nestrun does it after create, while the init waits for `start`: each
//! file of the host-side FUSE mount is cloned (open_tree), then a child process enters the
//! container's mount namespace and attaches the clones (move_mount). The mounts are not
//! locked: container root may unmount one, which only reveals the kernel's own file, which it
//! cannot write (a global sysctl is read-only to a user namespace).
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::{HostError, MOVE_MOUNT_F_EMPTY_PATH};

/// Attach `files` ((host source, container destination)) in the mount namespace of `pid`.
/// Destinations missing in the container are skipped. Returns how many were attached.
pub fn attach(pid: Pid, files: &[(PathBuf, PathBuf)]) -> Result<usize, HostError> {
    let ns_path = PathBuf::from(format!("/proc/{pid}/ns/mnt"));
    let ns = std::fs::File::open(&ns_path).map_err(super::io("open", &ns_path))?;
    let mut fds: Vec<(OwnedFd, CString)> = Vec::new();
    for (src, dest) in files {
        let fd = super::nestedmount::clone_tree(src).map_err(super::sys("clone (open_tree)", src))?;
        let d = CString::new(dest.as_os_str().as_bytes()).unwrap_or_default();
        fds.push((fd, d));
    }
    // SAFETY: the child only makes syscalls and exits; it never returns into Rust code that
    // could touch locks held by other threads (a pod sandbox's create moves its interfaces in
    // a thread meanwhile: host::podnet; glibc's fork leaves malloc usable in the child).
    match unsafe { fork() }.map_err(super::sys("fork to enter", &ns_path))? {
        ForkResult::Child => {
            if setns(&ns, CloneFlags::CLONE_NEWNS).is_err() {
                unsafe { libc::_exit(200) };
            }
            let mut n = 0;
            let empty = CString::default();
            for (fd, dest) in &fds {
                // Only over a file that exists in the container (sysctls vary by kernel).
                if unsafe { libc::access(dest.as_ptr(), libc::F_OK) } != 0 {
                    continue;
                }
                let r = unsafe { libc::syscall(libc::SYS_move_mount, fd.as_raw_fd(), empty.as_ptr(), libc::AT_FDCWD, dest.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH) };
                if r == 0 {
                    n += 1;
                }
            }
            unsafe { libc::_exit(n.min(199)) };
        }
        ForkResult::Parent { child } => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 200)) => Err(HostError::Io { what: "enter mount namespace", path: ns_path, source: std::io::Error::other("setns failed") }),
            Ok(WaitStatus::Exited(_, n)) => Ok(n as usize),
            other => Err(HostError::Io { what: "attach emulated files in", path: ns_path, source: std::io::Error::other(format!("{other:?}")) }),
        },
    }
}

/// (host source, destination) pairs for a FUSE mount at `mnt`.
pub fn pairs(mnt: &Path, files: Vec<(PathBuf, PathBuf)>) -> Vec<(PathBuf, PathBuf)> {
    files.into_iter().map(|(rel, dest)| (mnt.join(rel), dest)).collect()
}
