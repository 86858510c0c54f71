//! Starting and stopping the detached server process.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::{FuseError, ServeConfig};

const READY_TIMEOUT: Duration = Duration::from_secs(5);
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Start with an explicit executable and arguments placed before the server's own, and wait
/// for readiness (tests re-execute the test binary as the server).
/// Also returns whether the server serves over io_uring.
#[cfg(test)]
pub fn spawn_with(cfg: &ServeConfig, log: Option<&Path>, exe: &Path, prefix: &[OsString]) -> Result<(Pid, bool), FuseError> {
    start_with(cfg, log, exe, prefix)?.wait_ready()
}

/// A server that was started and may not be ready yet: the caller overlaps other work
/// (creating the container) with its start-up, then calls [`Pending::wait`].
pub struct Pending {
    child: std::process::Child,
    rd: OwnedFd,
    mountpoint: PathBuf,
}

impl Pending {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Wait (up to 5 s, no polling loop) for the readiness byte. On failure the server is
    /// killed and the mountpoint unmounted.
    pub fn wait(self) -> Result<Pid, FuseError> {
        self.wait_ready().map(|(pid, _)| pid)
    }

    /// [`Pending::wait`], also telling whether the server serves over io_uring.
    fn wait_ready(mut self) -> Result<(Pid, bool), FuseError> {
        let pid = self.pid();
        let mountpoint = self.mountpoint.clone();
        let fail = |child: &mut std::process::Child, e: FuseError| {
            let _ = child.kill();
            let _ = child.wait();
            let _ = umount2(&mountpoint, MntFlags::MNT_DETACH);
            Err(e)
        };
        match wait_readable(self.rd.as_fd().as_raw_fd(), READY_TIMEOUT) {
            Ok(true) => {}
            Ok(false) => return fail(&mut self.child, FuseError::Timeout { path: mountpoint.clone(), secs: READY_TIMEOUT.as_secs() }),
            Err(e) => return fail(&mut self.child, FuseError::Sys { op: "wait for fuse server of", path: mountpoint.clone(), source: e }),
        }
        let mut byte = [0u8; 1];
        match nix::unistd::read(self.rd.as_raw_fd(), &mut byte) {
            Ok(1) => {
                let uring = byte[0] == super::READY_URING;
                tracing::debug!(pid = pid.as_raw(), io_uring = uring, "fuse server ready");
                Ok((pid, uring))
            }
            _ => {
                let status = self.child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
                fail(&mut self.child, FuseError::Exited { path: mountpoint.clone(), status })
            }
        }
    }
}

/// Start the server (`/proc/self/exe fuse-serve ...` or `$NESTRUN_SELF_EXE`) without waiting.
pub fn start(cfg: &ServeConfig, log: Option<&Path>) -> Result<Pending, FuseError> {
    let exe = std::env::var_os("NESTRUN_SELF_EXE").map_or_else(|| PathBuf::from("/proc/self/exe"), PathBuf::from);
    start_with(cfg, log, &exe, &["fuse-serve".into()])
}

fn start_with(cfg: &ServeConfig, log: Option<&Path>, exe: &Path, prefix: &[OsString]) -> Result<Pending, FuseError> {
    let sys = |op, source| FuseError::Sys { op, path: cfg.mountpoint.clone(), source };
    // The write end is inherited by the server (not close-on-exec); it is closed here right
    // after the spawn, before anything else forks.
    let (rd, wr) = nix::unistd::pipe().map_err(|e| sys("pipe for", e))?;
    nix::fcntl::fcntl(rd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).map_err(|e| sys("pipe for", e))?;
    // Keep the child's end clear of fds 0-2, which the child's stdio replaces
    // (possible when this process runs with stdio closed).
    let wr = if wr.as_raw_fd() < 3 {
        let fd = nix::fcntl::fcntl(wr.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD(3)).map_err(|e| sys("dup pipe for", e))?;
        // SAFETY: fcntl returned a new descriptor that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    } else {
        wr
    };
    let (out, err) = match log {
        Some(p) => {
            let f = File::options().create(true).append(true).open(p).map_err(|source| FuseError::Spawn { exe: p.into(), source })?;
            let f2 = f.try_clone().map_err(|source| FuseError::Spawn { exe: p.into(), source })?;
            (Stdio::from(f), Stdio::from(f2))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    let wr_raw: RawFd = wr.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.args(prefix).args(cfg.to_args(Some(wr_raw))).stdin(Stdio::null()).stdout(out).stderr(err);
    // No pre_exec closure: std then spawns with posix_spawn (vfork-like), which does not copy
    // this process's page tables and returns as soon as the child has exec'd, where fork +
    // pre_exec cost 5-6 ms of create time. The server makes itself a session leader first
    // thing (`cli::fuse::run`), so a terminal's signals never reach it.
    let child = cmd.spawn().map_err(|source| FuseError::Spawn { exe: exe.into(), source })?;
    drop(wr);
    Ok(Pending { child, rd, mountpoint: cfg.mountpoint.clone() })
}

/// poll(2) for readability with an overall deadline (EINTR-safe).
fn wait_readable(fd: RawFd, timeout: Duration) -> Result<bool, Errno> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        match r {
            0 => return Ok(false),
            n if n > 0 => return Ok(true),
            _ if Errno::last() == Errno::EINTR => continue,
            _ => return Err(Errno::last()),
        }
    }
}

fn pidfd_open(pid: Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: plain syscall; on success the return value is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn pidfd_signal(pidfd: &OwnedFd, sig: Signal) -> Result<(), Errno> {
    // SAFETY: plain syscall on a pidfd we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig as i32, 0usize, 0) };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Whether `pid` is a fuse server (guards against a recycled pid).
fn is_server(pid: Pid) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"fuse-serve"))
}

/// Lazily unmounts `mountpoint` and kills the server (SIGKILL: it keeps no state worth a
/// graceful exit, and a SIGTERM first cost a wake-up and a scheduling round trip of the
/// server per delete, long on a busy host), waiting up to 2 s for it to be gone.
/// Idempotent: an unmounted path or a gone process is fine.
pub fn stop(pid: Pid, mountpoint: &Path) -> Result<(), FuseError> {
    let sys = |op, source| FuseError::Sys { op, path: mountpoint.to_path_buf(), source };
    let umount = match umount2(mountpoint, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => Ok(()),
        Err(e) => Err(sys("unmount", e)),
    };
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => Some(fd),
        Err(Errno::ESRCH) => None,
        Err(e) => return Err(sys("pidfd_open for server of", e)),
    };
    if let Some(pidfd) = pidfd.filter(|_| is_server(pid)) {
        match pidfd_signal(&pidfd, Signal::SIGKILL) {
            Ok(()) => {
                wait_readable(pidfd.as_raw_fd(), EXIT_WAIT).map_err(|e| sys("wait for server of", e))?;
            }
            Err(Errno::ESRCH) => {}
            Err(e) => return Err(sys("signal server of", e)),
        }
    }
    // Reap it if it is our child (spawned by this process); ECHILD otherwise.
    let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    umount
}
