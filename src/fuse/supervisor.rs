//! The container's syscall supervisor: a thread of its `fuse-serve` that answers the syscalls the
//! container's seccomp profile traps (rewrite/supervisor.rs: `sysinfo`), over the notify fds
//! libcontainer sends to the supervisor's socket (one per filter load: the init and every exec).
//!
//! - One thread, one poll(2) loop over the socket and every notify fd; each notification is
//!   answered before the next is read, so memory stays bounded whatever the container does (a
//!   flood of trapped calls waits in the kernel, each caller blocked in its own call). At most
//!   [`MAX_FDS`] notify fds; a notify fd whose filter has no task left (POLLHUP) is closed.
//! - `sysinfo`: the caller's memory is opened (/proc/<pid>/mem and maps) and its cgroup and pid
//!   namespace read, then the notification is checked to be still valid, then the answer is
//!   computed (`render::sysinfo`) and written where the caller asked, into writable memory only
//!   (`caller::Memory`; a bad or read-only pointer: EFAULT, as the kernel answers). Anything unexpected (another architecture's call, an unreadable caller) is let
//!   through to the kernel (CONTINUE): `sysinfo` is no security decision.
//! - Values follow the caller, as for the FUSE files (`reader`): the memory figures and task
//!   count of the cgroup chosen for its memory cgroup (an inner `docker run -m 64m` shows
//!   64 MiB, capped by the outer limits; none of its own: the container's), the age of the init
//!   of its pid namespace. The figures of a cgroup are read at most once per render tick.
//! - If this process dies, the kernel answers every trapped call with ENOSYS (the listener is
//!   gone); a new exec into the container then fails to connect.
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Instant, SystemTime};

use super::caller;
use super::cgroup::{Cgroup, Memory, Mounts};
use super::notify::{self, Notif, Reply};
use super::reader::{Reader, CHOICE_TTL};
use super::render::sysinfo::{self as si, Mem};

/// At most this many notify fds (filter loads: the init and execs whose processes still run).
/// More: the new one is closed, and that process's trapped calls fail with ENOSYS.
pub const MAX_FDS: usize = 1024;
/// Cgroups whose figures are kept (each with a few open files).
const MAX_FIGURES: usize = 64;

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NATIVE_ARCH: u32 = 0;
/// The 32-bit architecture the kernel runs beside the native one, and its sysinfo's number.
#[cfg(target_arch = "x86_64")]
const COMPAT_ARCH: u32 = 0x4000_0003; // AUDIT_ARCH_I386
#[cfg(target_arch = "aarch64")]
const COMPAT_ARCH: u32 = 0x4000_0028; // AUDIT_ARCH_ARM
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const COMPAT_ARCH: u32 = 0;
const COMPAT_SYSINFO: i32 = 116;
/// x32 calls come with the native architecture and this bit in the number (same struct).
const X32_BIT: i32 = 0x4000_0000;

/// What the supervisor answers from.
pub struct Context {
    /// The container's cgroup (`/docker/<id>`), as the FUSE server's.
    pub cgroup_path: String,
    pub mounts: Mounts,
    /// When the container was created: its uptime when no init is found for a caller.
    pub start_time: SystemTime,
    /// The emulated files a new procfs or sysfs in the container gets (`supervisor_mount`).
    pub emulated: super::supervisor_mount::Emulated,
}

/// The figures of one cgroup, read at most once per render tick.
struct Figures {
    cgroup: Cgroup,
    at: Option<Instant>,
    memory: Option<Memory>,
    pids: Option<u64>,
}

pub struct Supervisor {
    ctx: Context,
    /// The init's pid from the runtime (the first filter load's state).
    container_init: Option<i32>,
    /// Whose figures a caller gets.
    reader: Reader,
    figures: HashMap<String, Figures>,
}

/// Start the supervisor thread on the socket `listener` (the runtime bound it before the
/// container's init loaded its filter). A thread that cannot start closes the socket: the
/// runtime's connection then fails instead of leaving a notify fd nobody reads.
pub fn spawn(listener: UnixListener, ctx: Context) {
    let r = std::thread::Builder::new().name("supervisor".into()).stack_size(256 << 10).spawn(move || {
        let mut sv = Supervisor::new(ctx);
        if let Err(e) = sv.run(&listener) {
            tracing::error!("syscall supervisor stopped: {e}");
        }
    });
    if let Err(e) = r {
        tracing::error!("cannot start the syscall supervisor: {e}");
    }
}

impl Supervisor {
    pub fn new(ctx: Context) -> Self {
        let reader = Reader::new(Cgroup::with_mounts(&ctx.cgroup_path, ctx.mounts.clone()), ctx.start_time, None);
        Supervisor { ctx, container_init: None, reader, figures: HashMap::new() }
    }

    /// Serve until poll(2) fails.
    pub fn run(&mut self, listener: &UnixListener) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        loop {
            let mut pfds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
                .chain(fds.iter().map(|f| f.as_raw_fd()))
                .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
                .collect();
            // SAFETY: a valid array of pollfds of this length.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut gone = Vec::new();
            for (i, p) in pfds.iter().enumerate().skip(1) {
                let fd = fds[i - 1].as_fd();
                if p.revents & libc::POLLIN != 0 {
                    match notify::recv(fd) {
                        Ok(Some(n)) => self.answer(fd, &n),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!("seccomp notify fd: {e}");
                            gone.push(i - 1);
                        }
                    }
                } else if p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                    gone.push(i - 1);
                }
            }
            for i in gone.into_iter().rev() {
                fds.swap_remove(i);
            }
            if pfds[0].revents & libc::POLLIN != 0 {
                self.accept(listener, &mut fds);
            }
        }
    }

    /// Take every pending connection's notify fd.
    fn accept(&mut self, listener: &UnixListener, fds: &mut Vec<OwnedFd>) {
        loop {
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("supervisor socket: accept: {e}");
                    return;
                }
            };
            if stream.set_nonblocking(false).is_err() {
                continue;
            }
            match notify::receive(stream) {
                Ok(r) if fds.len() < MAX_FDS => {
                    if r.status.as_deref() == Some("creating") && self.container_init.is_none() {
                        self.container_init = r.pid;
                    }
                    let sync = notify::sync_wake_up(r.fd.as_fd());
                    tracing::debug!(pid = ?r.pid, status = ?r.status, sync, "seccomp notify fd received");
                    fds.push(r.fd);
                }
                Ok(r) => tracing::warn!(pid = ?r.pid, "{MAX_FDS} seccomp notify fds held: this one is closed, its trapped calls fail with ENOSYS"),
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }

    /// Answer one notification (errors answering: the caller went away, nothing to do).
    pub fn answer(&mut self, fd: std::os::fd::BorrowedFd, n: &Notif) {
        let reply = match i64::from(n.nr) {
            _ if n.arch == COMPAT_ARCH && n.nr == COMPAT_SYSINFO => self.sysinfo(fd, n, true),
            _ if n.arch != NATIVE_ARCH => Reply::Continue,
            nr if cfg!(target_arch = "x86_64") && nr == i64::from(X32_BIT) | libc::SYS_sysinfo => self.sysinfo(fd, n, false),
            libc::SYS_sysinfo => self.sysinfo(fd, n, false),
            libc::SYS_mount => super::supervisor_mount::answer(&mut self.ctx.emulated, fd, n),
            libc::SYS_umount2 => super::supervisor_mount::answer_umount(fd, n),
            libc::SYS_fsopen => super::supervisor_mount::answer_fsopen(n),
            _ => Reply::Continue,
        };
        if let Err(e) = notify::respond(fd, n.id, reply) {
            tracing::debug!(pid = n.pid, "answer to a trapped call: {e}");
        }
    }

    /// `compat`: a 32-bit caller's struct (`render::sysinfo::encode_compat`).
    fn sysinfo(&mut self, fd: std::os::fd::BorrowedFd, n: &Notif, compat: bool) -> Reply {
        let pid = n.pid as i32;
        let Ok(mem) = caller::open_memory(pid) else { return Reply::Continue };
        self.reader.set_init(self.container_init);
        let view = self.reader.view(n.pid);
        if !notify::id_valid(fd, n.id) {
            return Reply::Gone;
        }
        let Some(host) = caller::host_sysinfo() else { return Reply::Continue };
        let host = si::Figures::from_libc(&host);
        let mut chosen = view.memory.to_string();
        let age = self.reader.age(&view);
        if self.figures(&chosen).memory.is_none() {
            // Gone since it was chosen (an inner container just removed): the container's own
            // figures, never the host's for a container that has a memory controller.
            chosen = self.ctx.cgroup_path.clone();
        }
        let f = self.figures(&chosen);
        let mem_in = f.memory.as_ref().map(|m| Mem { limit: m.limit, usage: m.usage, swap: m.swap, stat: &m.stat });
        let answer = si::compute(&host, mem_in, f.pids, age);
        let written = if compat { mem.write(n.args[0] & 0xffff_ffff, &si::encode_compat(&answer)) } else { mem.write(n.args[0], &si::encode(&answer)) };
        match written {
            Ok(()) => Reply::Value(0),
            Err(_) => Reply::Error(libc::EFAULT),
        }
    }

    /// The memory and task count of `path`, read at most once per render tick.
    fn figures(&mut self, path: &str) -> &Figures {
        if self.figures.len() >= MAX_FIGURES && !self.figures.contains_key(path) {
            // Each keeps its cgroup files open: the ones not read lately go first.
            self.figures.retain(|_, f| f.at.is_some_and(|at| at.elapsed() < CHOICE_TTL));
            if self.figures.len() >= MAX_FIGURES {
                self.figures.clear();
            }
        }
        let mounts = &self.ctx.mounts;
        let f = self.figures.entry(path.to_string()).or_insert_with(|| Figures { cgroup: Cgroup::with_mounts(path, mounts.clone()), at: None, memory: None, pids: None });
        if f.at.is_none_or(|at| at.elapsed() >= super::server::RENDER_TTL) {
            f.memory = f.cgroup.memory().ok().flatten();
            f.pids = f.cgroup.pids_current().ok().flatten();
            f.at = Some(Instant::now());
        }
        f
    }
}

/// The listener socket inherited from the runtime (`--supervisor-fd`), checked to be one.
pub fn listener_from_fd(fd: OwnedFd) -> std::io::Result<UnixListener> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(std::io::Error::from)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(std::io::Error::other(format!("fd {} is not a socket", fd.as_raw_fd())));
    }
    // Not inherited by anything this process starts.
    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).map_err(std::io::Error::from)?;
    Ok(UnixListener::from(fd))
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
