//! Seccomp user notification, the kernel's side: receiving a notification from a notify fd,
//! checking it is still valid and answering it (`seccomp_unotify(2)`); and taking the notify fds
//! libcontainer sends to the supervisor's socket (one connection per filter load: the OCI
//! "container process state" JSON with the fd as SCM_RIGHTS, in one message).
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

/// One trapped syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notif {
    pub id: u64,
    /// The caller's pid in this process's pid namespace (the host's).
    pub pid: u32,
    pub nr: i32,
    pub arch: u32,
    pub args: [u64; 6],
}

/// How a notification is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The syscall returns `val`.
    Value(i64),
    /// The syscall fails with this errno.
    Error(i32),
    /// The kernel runs the syscall as if it had not been trapped.
    Continue,
    /// No answer: the caller is gone (the notification is no longer valid).
    Gone,
}

/// The sizes of the kernel's structs (they may grow in newer kernels: buffers are the larger
/// of theirs and ours).
fn sizes() -> (usize, usize) {
    static S: OnceLock<(usize, usize)> = OnceLock::new();
    *S.get_or_init(|| {
        let mut s = libc::seccomp_notif_sizes { seccomp_notif: 0, seccomp_notif_resp: 0, seccomp_data: 0 };
        // SAFETY: the kernel fills the struct this pointer points at.
        let r = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_GET_NOTIF_SIZES, 0, &mut s as *mut libc::seccomp_notif_sizes) };
        let ours = (std::mem::size_of::<libc::seccomp_notif>(), std::mem::size_of::<libc::seccomp_notif_resp>());
        if r != 0 {
            return ours;
        }
        (ours.0.max(s.seccomp_notif as usize), ours.1.max(s.seccomp_notif_resp as usize))
    })
}

/// The next notification of `fd`; `Ok(None)` when the caller went away meanwhile (ENOENT).
/// Only called when poll(2) said `fd` is readable: it does not block then.
pub fn recv(fd: BorrowedFd) -> Result<Option<Notif>, Errno> {
    // u64 words: aligned for the struct; zeroed, as the kernel requires.
    let mut buf = vec![0u64; sizes().0.div_ceil(8)];
    loop {
        // SAFETY: `buf` is at least as large as the kernel's struct seccomp_notif.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, buf.as_mut_ptr()) };
        if r == 0 {
            break;
        }
        match Errno::last() {
            Errno::EINTR => continue,
            Errno::ENOENT => return Ok(None),
            e => return Err(e),
        }
    }
    // SAFETY: the buffer holds a struct seccomp_notif written by the kernel at its start.
    let n: libc::seccomp_notif = unsafe { std::ptr::read(buf.as_ptr().cast()) };
    Ok(Some(Notif { id: n.id, pid: n.pid, nr: n.data.nr, arch: n.data.arch, args: n.data.args }))
}

/// Whether notification `id` is still pending: its caller is alive and waiting, so a pid it
/// named (and a /proc/<pid> file opened before this check) is still that caller's.
pub fn id_valid(fd: BorrowedFd, id: u64) -> bool {
    // SAFETY: the kernel reads one u64.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id as *const u64) == 0 }
}

/// Answer notification `id`. A caller that went away meanwhile (ENOENT) is no error.
pub fn respond(fd: BorrowedFd, id: u64, reply: Reply) -> Result<(), Errno> {
    let (val, error, flags) = match reply {
        Reply::Value(v) => (v, 0, 0),
        Reply::Error(e) => (0, -e.abs(), 0),
        Reply::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
        Reply::Gone => return Ok(()),
    };
    let mut buf = vec![0u64; sizes().1.div_ceil(8)];
    let resp = libc::seccomp_notif_resp { id, val, error, flags };
    // SAFETY: `buf` is at least the struct's size and aligned for it.
    unsafe { std::ptr::write(buf.as_mut_ptr().cast(), resp) };
    loop {
        // SAFETY: `buf` holds a struct seccomp_notif_resp, at least the kernel's size.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, buf.as_mut_ptr()) };
        if r == 0 {
            return Ok(());
        }
        match Errno::last() {
            Errno::EINTR => continue,
            Errno::ENOENT => return Ok(()),
            e => return Err(e),
        }
    }
}

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux >= 6.6): the caller and the supervisor hand the
/// CPU to each other (the supervisor is woken on the caller's CPU, the caller on the
/// supervisor's), instead of a wake-up on another CPU each way.
const SYNC_WAKE_UP: u64 = 1;

/// Ask for synchronous wake-ups on `fd`; false where the kernel lacks them (it works without).
pub fn sync_wake_up(fd: BorrowedFd) -> bool {
    // SAFETY: the ioctl takes the flags by value.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS, SYNC_WAKE_UP) == 0 }
}

/// Largest state JSON accepted (libcontainer's is well under 4 KiB; annotations can add some).
const MAX_STATE: usize = 64 * 1024;

/// What one connection to the supervisor's socket brought.
#[derive(Debug)]
pub struct Received {
    pub fd: OwnedFd,
    /// `pid` of the OCI container process state (the process that loaded the filter).
    pub pid: Option<i32>,
    /// `state.status`: `creating` for the container's init, `running` for an exec.
    pub status: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("supervisor connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("supervisor connection: recvmsg: {0}")]
    Recv(Errno),
    #[error("supervisor connection sent no seccomp notify fd")]
    NoFd,
    #[error("supervisor connection sent fd {0} that is not a seccomp notify fd ({1})")]
    NotNotify(RawFd, String),
}

/// Take the notify fd (and the state) from an accepted connection. Blocks at most 1 s: the
/// runtime sends right after connecting.
pub fn receive(stream: UnixStream) -> Result<Received, NotifyError> {
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut data = vec![0u8; MAX_STATE];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let (len, fds) = {
        let mut iov = [IoSliceMut::new(&mut data)];
        let msg = recvmsg::<UnixAddr>(stream.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC).map_err(NotifyError::Recv)?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for c in msg.cmsgs().map_err(NotifyError::Recv)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel installed these descriptors in this process for us.
                fds.extend(raw.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
            }
        }
        (msg.bytes, fds)
    };
    // One fd is expected; any others are closed with `fds`.
    let fd = fds.into_iter().next().ok_or(NotifyError::NoFd)?;
    let kind = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    if kind != "anon_inode:seccomp notify" {
        return Err(NotifyError::NotNotify(fd.as_raw_fd(), kind));
    }
    let state: Option<serde_json::Value> = serde_json::from_slice(&data[..len]).ok();
    let pid = state.as_ref().and_then(|s| s.get("pid")?.as_i64()).and_then(|p| i32::try_from(p).ok());
    let status = state.as_ref().and_then(|s| s.get("state")?.get("status")?.as_str().map(String::from));
    Ok(Received { fd, pid, status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_without_a_notify_fd_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert!(matches!(receive(b), Err(NotifyError::NoFd)));
        let (a, b) = UnixStream::pair().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        let fds = [f.as_raw_fd()];
        let iov = [std::io::IoSlice::new(b"{\"pid\":1}")];
        nix::sys::socket::sendmsg::<UnixAddr>(a.as_raw_fd(), &iov, &[nix::sys::socket::ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None).unwrap();
        let e = receive(b).unwrap_err().to_string();
        assert!(e.contains("not a seccomp notify fd (/dev/null)"), "{e}");
    }

    #[test]
    fn struct_sizes_cover_ours() {
        let (n, r) = sizes();
        assert!(n >= 80 && r >= 24, "{n} {r}");
    }
}
