//! The server outlives a container whose state is lost: it watches the container's state dir
//! (inotify) and, once that is gone, its init (pidfd). When both are gone nobody will call
//! `delete`, so the server tears down what is left of the container (its mounts, cgroup, lease,
//! data dirs: `lifecycle::teardown`, from the record mirror beside the mount dir) and exits.
//! While the state dir exists it does nothing: the engine deletes the container.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sidecar::{self, Record};

/// Set while this server tears its container down: unmounting its own mount ends the FUSE
/// session, and the server must not exit before the teardown is done (`hold`).
static TEARING_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called when the session has ended: during the teardown, wait for it (it exits the process).
pub fn hold() {
    while TEARING_DOWN.load(std::sync::atomic::Ordering::Acquire) {
        std::thread::park();
    }
}

/// How often the state dir is looked at without an inotify event (a renamed ancestor sends none).
const RECHECK: Duration = Duration::from_secs(30);

/// Start watching in a thread, for the server mounted at `mountpoint` (`<mount dir>/fuse`).
pub fn spawn(mountpoint: &Path) {
    let Some(mdir) = mountpoint.parent() else { return };
    let mut mirror = mdir.as_os_str().to_owned();
    mirror.push(sidecar::MIRROR_EXT);
    let mirror = PathBuf::from(mirror);
    let r = std::thread::Builder::new().name("orphan-watch".into()).stack_size(256 << 10).spawn(move || watch(&mirror));
    if let Err(e) = r {
        tracing::warn!("cannot start the orphan watch: {e}");
    }
}

fn watch(mirror: &Path) {
    // The create saved the record (and its mirror) before it started this server.
    let Some(rec) = Record::load_file(mirror) else {
        tracing::debug!(mirror = %mirror.display(), "no record mirror: not watching for a lost state dir");
        return;
    };
    let (Some(root), Some(sdir)) = (rec.root.clone(), rec.state_dir()) else { return };
    wait_gone(&sdir);
    tracing::info!(state = %sdir.display(), "the container's state dir is gone: waiting for its processes");
    if let Some(cg) = &rec.cgroup_path {
        kill_never_started(cg);
        wait_empty(cg);
    }
    // Still ours? A create of the same id in the same root makes the state dir and the mirror
    // again: then that container owns the mount dir, and this server only leaves.
    let now = Record::load_file(mirror);
    let ours = now.as_ref().is_some_and(|r| r.fuse_pid == Some(std::process::id() as i32));
    if !sdir.exists() && ours {
        tracing::info!(id = %rec.id, root = %root.display(), "container and state gone: tearing down what is left");
        TEARING_DOWN.store(true, std::sync::atomic::Ordering::Release);
        crate::lifecycle::teardown::teardown_record(&root, &rec.id, now.as_ref().expect("checked"));
    }
    std::process::exit(0);
}

/// Block until `dir` no longer exists.
fn wait_gone(dir: &Path) {
    // SAFETY: plain syscall; the fd is owned below.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    let fd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) });
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap_or_default();
    if let Some(fd) = &fd {
        // SAFETY: a valid fd and NUL-terminated path.
        unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) };
    }
    while dir.exists() {
        match &fd {
            Some(fd) if readable(fd, RECHECK) => {
                let mut buf = [0u8; 4096];
                let _ = nix::unistd::read(fd.as_raw_fd(), &mut buf);
            }
            Some(_) => {}
            None => std::thread::sleep(RECHECK),
        }
    }
}

fn readable(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis().min(i32::MAX as u128) as i32) > 0 }
}

/// Block until the cgroup has no process left: wait on the container's init (pid 1 of its
/// namespace) by pidfd, then on whatever else is left.
fn wait_empty(cg: &Path) {
    loop {
        let pids = crate::lifecycle::gc::cgroup_pids(cg);
        let Some(pid) = pids.iter().copied().find(|p| is_ns_init(*p)).or(pids.first().copied()) else { return };
        // SAFETY: plain syscall; on success the fd is ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            while !readable(&fd, RECHECK) {}
        }
        std::thread::sleep(Duration::from_millis(100)); // the kernel empties the cgroup after the exit
    }
}

/// A created container whose state is gone can never be started (`start` needs the state): its
/// init is still this runtime's binary, waiting. It is killed so the teardown can go on. A
/// container that runs its own program keeps running (as under runc); `nestrun gc --force`
/// reclaims it.
fn kill_never_started(cg: &Path) {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let Some(me) = id("/proc/self/exe") else { return };
    for pid in crate::lifecycle::gc::cgroup_pids(cg) {
        if id(&format!("/proc/{pid}/exe")) == Some(me) {
            tracing::info!(pid, "init of a container that was never started: killed");
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
}

/// Whether `pid` is pid 1 of its pid namespace.
fn is_ns_init(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("NSpid:")).is_some_and(|v| v.split_whitespace().count() > 1 && v.split_whitespace().last() == Some("1"))
}
