//! Per-container FUSE server emulating /proc and /sys files (lxcfs-like).
//!
//! The runtime starts one server per container with [`spawn`] (a detached
//! `nestrun fuse-serve` process), mounted on the host at `<state>/fuse`; it
//! then bind-mounts each of [`emulated_files`] over the container's path and,
//! on delete, calls [`stop`]. The server renders every file from the host's
//! file and the container's cgroup (see `render`, `cgroup`), and keeps
//! per-container values for a few non-namespaced sysctls (see `sysctl`).

pub mod cgroup;
mod caller;
mod fdcache;
mod files;
mod fuser_fs;
mod memory;
mod mount_args;
mod notify;
mod process;
mod reader;
pub(crate) mod resize;
pub mod render;
mod server;
mod shift;
mod shift_fuser;
mod shift_ids;
mod shift_io;
mod shift_sys;
pub mod supervisor;
pub mod supervisor_mount;
pub mod sysctl;
mod uring;
mod watch;
mod wire;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[cfg(test)]
pub use process::spawn_with;
pub use process::{start, stop, Pending};
pub use shift_fuser::{is_view as is_shift_view, ShiftConfig};

#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cgroup directory {path} does not exist")]
    CgroupGone { path: PathBuf },
    #[error("invalid {what}: {value:?}")]
    Parse { what: &'static str, value: String },
    #[error("invalid sysctl value {value:?}")]
    InvalidValue { value: String },
    #[error("mount fuse filesystem at {path}: {source}")]
    Mount { path: PathBuf, source: std::io::Error },
    #[error("fuse session at {path}: {source}")]
    Session { path: PathBuf, source: std::io::Error },
    #[error("spawn fuse server {exe}: {source}")]
    Spawn { exe: PathBuf, source: std::io::Error },
    #[error("fuse server for {path} not ready after {secs} s")]
    Timeout { path: PathBuf, secs: u64 },
    #[error("fuse server for {path} exited before it was ready ({status})")]
    Exited { path: PathBuf, status: String },
    #[error("{op} {path}: {source}")]
    Sys { op: &'static str, path: PathBuf, source: nix::Error },
}

/// What one server serves.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Host directory the filesystem is mounted on (created if missing).
    pub mountpoint: PathBuf,
    /// The container's cgroup path as the runtime resolved it (`/docker/<id>`).
    pub cgroup_path: String,
    /// Host uid/gid of the container's root: files are shown owned by them and
    /// only `owner_uid` may write the emulated sysctls.
    pub owner_uid: u32,
    pub owner_gid: u32,
    /// Container start (for /proc/uptime when the init pid is unknown).
    pub start_time: SystemTime,
    /// Host pid of the container's init: /proc/uptime uses its start time.
    pub init_pid: Option<i32>,
    /// The host's cgroup mounts as mountinfo lines, as the runtime read them (so the server
    /// does not read the whole mount table again); `None`: read /proc/self/mountinfo.
    pub cgroup_mounts: Option<String>,
    /// The id-shifting view of the container's rootfs for the engine (`docker cp`), if any.
    pub shift: Option<ShiftConfig>,
    /// The syscall supervisor's listening socket, inherited from the runtime (see `supervisor`).
    pub supervisor_fd: Option<i32>,
}

impl ServeConfig {
    /// Arguments of the hidden `fuse-serve` subcommand (after its name).
    pub fn to_args(&self, ready_fd: Option<i32>) -> Vec<std::ffi::OsString> {
        let secs = self.start_time.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let mut mp = std::ffi::OsString::from("--mountpoint=");
        mp.push(&self.mountpoint);
        let mut args = vec![
            mp,
            format!("--cgroup-path={}", self.cgroup_path).into(),
            format!("--owner-uid={}", self.owner_uid).into(),
            format!("--owner-gid={}", self.owner_gid).into(),
            format!("--start-time={secs}").into(),
        ];
        if let Some(fd) = ready_fd {
            args.push(format!("--ready-fd={fd}").into());
        }
        if let Some(pid) = self.init_pid {
            args.push(format!("--init-pid={pid}").into());
        }
        if let Some(fd) = self.supervisor_fd {
            args.push(format!("--supervisor-fd={fd}").into());
        }
        if let Some(m) = &self.cgroup_mounts {
            args.push(format!("--cgroup-mounts={m}").into());
        }
        if let Some(s) = &self.shift {
            for (flag, p) in [("--shift-source=", &s.source), ("--shift-mount=", &s.mountpoint)] {
                let mut a = std::ffi::OsString::from(flag);
                a.push(p);
                args.push(a);
            }
            args.push(format!("--shift-base={}", s.base).into());
            args.push(format!("--shift-size={}", s.size).into());
        }
        args
    }
}

/// Files always emulated, relative to the mountpoint; the in-container
/// destination is "/" + path. (The sysctls come on top: [`emulated_files`].)
/// `/sys/devices/system/cpu/possible` and `present` are deliberately not
/// emulated: libbpf and per-cpu allocators size arrays from them.
pub const EMULATED_PROC_FILES: &[&str] = &[
    "proc/meminfo",
    "proc/cpuinfo",
    "proc/stat",
    "proc/uptime",
    "proc/loadavg",
    "proc/swaps",
    "proc/diskstats",
    "sys/devices/system/cpu/online",
];

/// (path relative to the mountpoint, in-container destination) of every file
/// the server exposes on this host, sysctls included.
pub fn emulated_files() -> Vec<(PathBuf, PathBuf)> {
    EMULATED_PROC_FILES
        .iter()
        .map(PathBuf::from)
        .chain(sysctl::present_paths())
        .map(|rel| {
            let dest = Path::new("/").join(&rel);
            (rel, dest)
        })
        .collect()
}

/// Mounts the filesystem at `cfg.mountpoint` and serves it until it is
/// unmounted (or the process is killed). Writes one byte to `ready_fd` once
/// the mount is live (the kernel's INIT handshake is done).
pub fn serve(cfg: ServeConfig, ready_fd: Option<OwnedFd>) -> Result<(), FuseError> {
    memory::tune_allocator();
    let sources = files::Sources {
        host_proc: PathBuf::from("/proc"),
        cgroup: cgroup::Cgroup::new(&cfg.cgroup_path, cfg.cgroup_mounts.as_deref())?,
        start_time: cfg.start_time,
        init_pid: cfg.init_pid,
        files: Default::default(),
    };
    if let Some(fd) = cfg.supervisor_fd {
        start_supervisor(fd, &sources, &cfg);
    }
    let sysctls = sysctl::load(Path::new("/"));
    if let Some(s) = &cfg.shift {
        // Without it the engine's rootfs path keeps its read-only cover: docker cp in fails
        // loudly, as before.
        if let Err(e) = shift_fuser::start(s) {
            tracing::warn!("no id-shifting view for the engine: {e}");
        }
    }
    watch::spawn(&cfg.mountpoint);
    let served = serve_fs(server::ProcFs::new(sources, sysctls, cfg.owner_uid, cfg.owner_gid), &cfg.mountpoint, ready_fd, true);
    watch::hold();
    served
}

/// Start the syscall supervisor on the inherited socket `fd`. On failure the socket is closed
/// (the runtime's connection then fails: no notify fd is left unread, no trapped call hangs).
fn start_supervisor(fd: i32, sources: &files::Sources, cfg: &ServeConfig) {
    // SAFETY: F_GETFD only inspects the descriptor number.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        tracing::error!("--supervisor-fd {fd} is not an open descriptor: no syscall supervisor");
        return;
    }
    // SAFETY: the fd is open and was handed to this process for this purpose only.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    match supervisor::listener_from_fd(fd) {
        Ok(l) => supervisor::spawn(
            l,
            supervisor::Context {
                cgroup_path: cfg.cgroup_path.clone(),
                mounts: sources.cgroup.mounts().clone(),
                start_time: cfg.start_time,
                emulated: supervisor_mount::Emulated::new(cfg.mountpoint.clone(), emulated_files().into_iter().map(|(rel, _)| rel).collect()),
            },
        ),
        Err(e) => tracing::error!("no syscall supervisor: {e}"),
    }
}

/// What the server writes to its ready fd once serving: over /dev/fuse, or over io_uring.
pub const READY_DEV: u8 = b'R';
pub const READY_URING: u8 = b'U';

/// `trim`: shrink this process's resident memory before serving (the server process;
/// not a test running the server in a thread).
fn serve_fs(fs: server::ProcFs, mountpoint: &Path, ready_fd: Option<OwnedFd>, trim: bool) -> Result<(), FuseError> {
    std::fs::create_dir_all(mountpoint).map_err(|source| FuseError::Mount { path: mountpoint.into(), source })?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("nestrun".into()),
        fuser::MountOption::Subtype("nestrun".into()),
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoExec,
    ];
    // allow_other (the container's root is not the mounter); no
    // default_permissions: the server checks writes itself.
    config.acl = fuser::SessionACL::All;
    // One worker: requests come one at a time from each reader anyway, and the same
    // thread answering every request keeps it on the readers' CPU more often (cheaper
    // wake-ups than alternating between two threads); one stack and buffer less.
    // Over io_uring this thread only sees FORGET and INTERRUPT.
    config.n_threads = Some(1);
    let fs = std::sync::Arc::new(fs);
    let idle = fs.idle.clone();
    let workers = uring::Workers::prepare();
    let negotiated = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fuser_fs = fuser_fs::Fuser { fs: fs.clone(), offer_uring: workers.is_some(), uring: negotiated.clone() };
    let session = fuser::Session::new(fuser_fs, mountpoint, &config)
        .map_err(|source| FuseError::Mount { path: mountpoint.into(), source })?;
    // Notifications go through /dev/fuse over either transport (see `resize`).
    let notifier = session.notifier();
    fs.restore_sizes_with(Box::new(move |ino, size| {
        if let Err(e) = notifier.store(fuser::INodeNo(ino), size.saturating_sub(1), &[0]) {
            tracing::debug!(ino, error = %e, "file size not restored");
        }
    }));
    let mut ready = READY_DEV;
    if let Some(workers) = workers.filter(|_| negotiated.load(std::sync::atomic::Ordering::Acquire)) {
        // Agreed at INIT: every request now waits for the rings, so a failure ends the server
        // (see `uring`) rather than leave readers waiting.
        workers.start(std::os::fd::AsFd::as_fd(&session), fs).map_err(|e| FuseError::Session {
            path: mountpoint.into(),
            source: std::io::Error::other(format!("fuse over io_uring: {e}")),
        })?;
        ready = READY_URING;
    }
    if let Some(fd) = ready_fd {
        let _ = nix::unistd::write(&fd, &[ready]);
    }
    tracing::info!(mountpoint = %mountpoint.display(), io_uring = ready == READY_URING, "fuse server ready");
    if trim {
        memory::trim();
        idle.start(memory::QUIET, memory::trim);
    }
    session.run().map_err(|source| FuseError::Session { path: mountpoint.into(), source })
}

#[cfg(test)]
mod tests;
