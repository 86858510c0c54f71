//! The hidden `fuse-serve` subcommand: runs the per-container FUSE server
//! (emulated /proc and /sys files) in the foreground. Started by
//! `fuse::start`; not meant to be run by hand.
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;

#[derive(Args, Debug)]
pub struct FuseServe {
    /// Host directory to mount the filesystem on.
    #[arg(long)]
    pub mountpoint: std::path::PathBuf,
    /// The container's cgroup path (e.g. /docker/<id>).
    #[arg(long, allow_hyphen_values = true)]
    pub cgroup_path: String,
    /// Host uid of the container's root (owner of the files, sole writer of sysctls).
    #[arg(long)]
    pub owner_uid: u32,
    /// Host gid of the container's root.
    #[arg(long)]
    pub owner_gid: u32,
    /// Container start time, unix seconds.
    #[arg(long)]
    pub start_time: f64,
    /// Inherited fd to write one byte to once the mount is live.
    #[arg(long)]
    pub ready_fd: Option<i32>,
    /// Host pid of the container's init process.
    #[arg(long)]
    pub init_pid: Option<i32>,
    /// The host's cgroup mounts as mountinfo lines (default: read /proc/self/mountinfo).
    #[arg(long, allow_hyphen_values = true)]
    pub cgroup_mounts: Option<String>,
    /// Inherited listening socket of the container's syscall supervisor (seccomp notify fds).
    #[arg(long)]
    pub supervisor_fd: Option<i32>,
    /// nestrun's overlay of the container, served id-shifted at --shift-mount for the engine.
    #[arg(long)]
    pub shift_source: Option<std::path::PathBuf>,
    #[arg(long)]
    pub shift_mount: Option<std::path::PathBuf>,
    /// First host id of the container's range, and its size.
    #[arg(long)]
    pub shift_base: Option<u32>,
    #[arg(long)]
    pub shift_size: Option<u32>,
}

pub fn run(args: FuseServe) -> anyhow::Result<()> {
    // Out of the creator's session and process group: a terminal's SIGINT/SIGHUP must not stop
    // the container's /proc (fuse::start spawns without a pre-exec hook, for speed).
    let _ = nix::unistd::setsid();
    let ready = match args.ready_fd {
        Some(fd) => {
            // SAFETY: F_GETFD only inspects the descriptor number.
            if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                anyhow::bail!("--ready-fd {fd} is not an open descriptor");
            }
            // SAFETY: the fd is open and was handed to this process for this purpose only.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        }
        None => None,
    };
    let start = if args.start_time.is_finite() && args.start_time > 0.0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(args.start_time)
    } else {
        SystemTime::now()
    };
    let mountpoint = args.mountpoint.clone();
    let cfg = crate::fuse::ServeConfig {
        mountpoint: args.mountpoint,
        cgroup_path: args.cgroup_path,
        owner_uid: args.owner_uid,
        owner_gid: args.owner_gid,
        start_time: start,
        init_pid: args.init_pid,
        cgroup_mounts: args.cgroup_mounts,
        supervisor_fd: args.supervisor_fd,
        shift: match (args.shift_source, args.shift_mount, args.shift_base, args.shift_size) {
            (Some(source), Some(mountpoint), Some(base), Some(size)) => Some(crate::fuse::ShiftConfig { source, mountpoint, base, size }),
            _ => None,
        },
    };
    crate::fuse::serve(cfg, ready).with_context(|| format!("fuse server at {}", mountpoint.display()))
}
