//! FUSE over io_uring (Linux >= 6.14, when the host sets `fuse.enable_uring`): the kernel
//! queues each request on the ring queue of the CPU its caller runs on, and here one worker
//! thread pinned to each online CPU serves that CPU's queue (up to 16 online CPUs, see
//! [`assign`]). A reader of an emulated file and the
//! thread answering it then share a CPU: no cross-CPU wake-up per round trip (over
//! /dev/fuse the single worker is woken on whichever CPU it last ran on; on a VM that halts
//! idle vCPUs each such wake-up is a VM exit, ~45 µs per round trip here).
//!
//! Life cycle: [`Workers::prepare`] (before the INIT handshake) starts the workers and makes
//! their rings, so a host where io_uring cannot be set up never offers it to the kernel;
//! once the kernel agreed at INIT, [`Workers::start`] has each worker register one ring
//! entry per queue it serves and waits until all have (the kernel holds every request until
//! each CPU's queue has an entry). The workers end when the connection goes (their commands
//! complete with ENOTCONN) or with the process.
//!
//! No failure may leave readers waiting: once the kernel agreed to io_uring, a request waits
//! for the ring of its CPU's queue, so a registration that fails, or a worker that stops while
//! the connection lives, would hang that CPU's readers for good. Then the whole server exits
//! instead ([`fatal`]): the kernel aborts the connection, reads fail at once (ENOTCONN), as
//! after a crash, and a create still waiting for the server fails with its error.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use super::server::{ProcFs, MAX_REQUEST};
use super::wire::{self, InHeader, HEADER_LEN};

const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// Above this many online CPUs the workers are not pinned and share the queues round-robin
/// (one thread per CPU per container would be too many threads).
const MAX_WORKERS: usize = 16;
/// How long all workers together may take to make their rings, and again to register their
/// entries (never near this: the runtime waits 5 s for the whole server).
const WORKER_WAIT: Duration = Duration::from_secs(2);

/// Whether the host lets FUSE servers use io_uring.
fn enabled_on_host() -> bool {
    std::fs::read_to_string("/sys/module/fuse/parameters/enable_uring").is_ok_and(|s| s.trim() == "Y")
}

type Ring = IoUring<squeue::Entry128>;

/// Worker threads with their rings, waiting for [`Workers::start`].
pub struct Workers {
    go: Vec<Sender<Option<Go>>>,
    done: Receiver<Result<(), String>>,
}

struct Go {
    dev: Arc<OwnedFd>,
    fs: Arc<ProcFs>,
}

/// One ring entry: the kernel writes requests into and reads replies from these buffers,
/// registered by address. Entries are leaked: the kernel may hold their addresses until the
/// process ends.
struct Ent {
    qid: u16,
    header: Box<[u8]>,
    payload: Box<[u8]>,
    /// The (header, payload) iovec array REGISTER points to.
    iov: [libc::iovec; 2],
    /// Failed commands since this entry last carried a request.
    fails: u32,
}

/// Receives `n` results before `deadline`: the first error, or a timeout, is an Err.
fn collect(rx: &Receiver<Result<(), String>>, n: usize, deadline: Instant) -> Result<(), String> {
    for _ in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left).map_err(|_| format!("io_uring workers did not answer within {} s", WORKER_WAIT.as_secs()))??;
    }
    Ok(())
}

impl Workers {
    /// Starts one worker per online CPU (see [`assign`]; each makes its ring), or `None` when
    /// io_uring cannot be used (disabled on the host, no ring, no thread).
    pub fn prepare() -> Option<Workers> {
        if !enabled_on_host() {
            return None;
        }
        let (possible, online) = (cpu_list("possible")?, cpu_list("online")?);
        let (queues, pin) = assign(&possible, &online);
        if !pin {
            tracing::info!(online = online.len(), workers = queues.len(), "more online CPUs than io_uring workers: workers not pinned");
        }
        let n = queues.len();
        let (ready_tx, ready_rx) = channel();
        let mut go = Vec::new();
        for (w, qids) in queues.into_iter().enumerate() {
            let (go_tx, go_rx) = channel();
            let ready = ready_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("uring{w}"))
                .stack_size(256 * 1024)
                .spawn(move || worker(qids, pin, ready, go_rx));
            if spawned.is_err() {
                return None;
            }
            go.push(go_tx);
        }
        drop(ready_tx);
        if let Err(e) = collect(&ready_rx, n, Instant::now() + WORKER_WAIT) {
            tracing::warn!(error = e.as_str(), "io_uring unusable for fuse, serving over /dev/fuse");
            return None;
        }
        Some(Workers { go, done: ready_rx })
    }

    /// Registers every queue's entry on `dev` (the session's /dev/fuse) and waits for it.
    /// An Err leaves the connection unusable: the caller must end the server.
    pub fn start(self, dev: BorrowedFd<'_>, fs: Arc<ProcFs>) -> Result<(), String> {
        let dev = Arc::new(dev.try_clone_to_owned().map_err(|e| format!("dup /dev/fuse: {e}"))?);
        for tx in &self.go {
            let _ = tx.send(Some(Go { dev: dev.clone(), fs: fs.clone() }));
        }
        collect(&self.done, self.go.len(), Instant::now() + WORKER_WAIT)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for tx in &self.go {
            let _ = tx.send(None);
        }
    }
}

/// /sys/devices/system/cpu/{possible,online}.
fn cpu_list(which: &str) -> Option<Vec<u16>> {
    let list = std::fs::read_to_string(format!("/sys/devices/system/cpu/{which}")).ok()?;
    let cpus = super::render::parse_cpu_list(list.trim()).ok()?;
    Some(cpus.into_iter().filter_map(|c| u16::try_from(c).ok()).collect())
}

/// The queues (one per possible CPU) each worker serves, and whether workers are pinned.
/// Up to [`MAX_WORKERS`] online CPUs: one worker per online CPU, pinned to it and serving its
/// queue first (the first queue is the one it pins to), the queues of offline CPUs shared
/// round-robin (they get requests only once their CPU comes online). More online CPUs:
/// [`MAX_WORKERS`] unpinned workers share all queues round-robin.
fn assign(possible: &[u16], online: &[u16]) -> (Vec<Vec<u16>>, bool) {
    let online: Vec<u16> = online.iter().copied().filter(|c| possible.contains(c)).collect();
    if online.is_empty() || online.len() > MAX_WORKERS {
        let n = possible.len().min(MAX_WORKERS);
        return ((0..n).map(|w| possible.iter().copied().skip(w).step_by(n).collect()).collect(), false);
    }
    let mut queues: Vec<Vec<u16>> = online.iter().map(|&c| vec![c]).collect();
    let offline = possible.iter().copied().filter(|c| !online.contains(c));
    for (j, c) in offline.enumerate() {
        let w = j % queues.len();
        queues[w].push(c);
    }
    (queues, true)
}

/// The payload buffer the kernel requires: at least max(8 KiB, max_write, max_pages pages),
/// where fuser derives max_pages from max_write (rounded up to whole pages).
fn payload_len() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(4096);
    (MAX_REQUEST as usize).next_multiple_of(page).max(8192)
}

/// Logs `msg` and ends the process at once (see the module doc).
fn fatal(msg: &str) -> ! {
    tracing::error!(error = msg, "fuse io_uring worker failed: ending the server");
    // SAFETY: _exit ends the process without running anything else.
    unsafe { libc::_exit(70) }
}

fn worker(qids: Vec<u16>, pin: bool, ready: Sender<Result<(), String>>, go: Receiver<Option<Go>>) {
    let pinned = pin && {
        let mut set = nix::sched::CpuSet::new();
        // An offline CPU cannot be pinned to: its queue gets no requests while it is off.
        set.set(usize::from(qids[0])).is_ok() && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
    };
    let entries = (qids.len() as u32).next_power_of_two().max(2);
    let ring = Ring::builder().setup_single_issuer().setup_defer_taskrun().setup_coop_taskrun().build(entries);
    let mut ring = match ring.or_else(|_| Ring::builder().build(entries)) {
        Ok(r) => r,
        Err(e) => return drop(ready.send(Err(format!("io_uring_setup: {e}")))),
    };
    let _ = ready.send(Ok(()));
    let Ok(Some(Go { dev, fs })) = go.recv() else { return };
    // From here on a panic must not leave this CPU's queue without its worker.
    let run = std::panic::AssertUnwindSafe(|| {
        let ents: &'static mut [Ent] = Vec::leak(qids.iter().map(|&qid| new_ent(qid)).collect());
        let fd = types::Fd(dev.as_raw_fd());
        for (i, ent) in ents.iter_mut().enumerate() {
            if let Err(e) = register(&mut ring, fd, ent, i) {
                let _ = ready.send(Err(format!("register fuse queue {}: {e}", ent.qid)));
                return;
            }
        }
        // A refused registration completes at once; an accepted one when a request comes.
        let early: Vec<(u64, i32)> = ring.completion().map(|c| (c.user_data(), c.result())).collect();
        if let Some(&(_, res)) = early.iter().find(|(_, res)| *res < 0) {
            let e = std::io::Error::from_raw_os_error(-res);
            let _ = ready.send(Err(format!("register fuse queue: {e} (unset fuse.enable_uring to serve over /dev/fuse)")));
            return;
        }
        if pinned {
            idle_policy();
        }
        let _ = ready.send(Ok(()));
        serve(&mut ring, fd, ents, &fs, early);
    });
    if std::panic::catch_unwind(run).is_err() {
        fatal("worker panicked");
    }
}

fn new_ent(qid: u16) -> Ent {
    let mut header: Box<[u8]> = vec![0; HEADER_LEN].into();
    let mut payload: Box<[u8]> = vec![0; payload_len()].into();
    let iov = [
        libc::iovec { iov_base: header.as_mut_ptr().cast(), iov_len: header.len() },
        libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() },
    ];
    Ent { qid, header, payload, iov, fails: 0 }
}

/// SCHED_IDLE for this (pinned) worker, so that the reader it answers stays on this CPU.
/// When the reply wakes the reader, this worker is still running on the reader's CPU; the
/// scheduler then moves the reader to an idle CPU, if there is one (a wake-up there is a VM
/// exit on this host: open + read + close of /proc/stat 142 µs median), unless every task on
/// this CPU has the idle policy (`sched_idle_cpu`): then the reader stays and preempts the
/// worker at once (45 µs, 33-39 µs through `nsenter` into a container). The worker never
/// runs for long (a render is 10-60 µs), only on behalf of a reader blocked on it, and holds
/// no lock another worker waits for while it renders (see `ProcFs::render`). Not starved
/// under load here: with four CPU-bound loops pinned two per CPU, in the same cgroup, with
/// and without autogroups, reads took 35-36 µs median (41-50 µs with the normal policy;
/// 62 µs over /dev/fuse). Refused (e.g. by a seccomp filter): the normal policy.
fn idle_policy() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid sched_param.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}

/// Answers requests (starting with completions already taken, `pending`) until the
/// connection ends.
fn serve(ring: &mut Ring, fd: types::Fd, ents: &mut [Ent], fs: &ProcFs, mut pending: Vec<(u64, i32)>) {
    loop {
        for (i, res) in pending.drain(..) {
            let Some(ent) = ents.get_mut(i as usize) else { continue };
            if res < 0 {
                if matches!(-res, libc::ENOTCONN | libc::ECANCELED | libc::ECONNABORTED) {
                    // The connection is gone (unmounted or aborted).
                    return tracing::debug!("fuse io_uring queue ended");
                }
                // A refused commit leaves this CPU's queue without the entry. The request
                // itself has failed; register the entry again, once.
                let e = std::io::Error::from_raw_os_error(-res);
                ent.fails += 1;
                if ent.fails > 1 || register(ring, fd, ent, i as usize).is_err() {
                    fatal(&format!("fuse queue {} lost its entry: {e}", ent.qid));
                }
                tracing::warn!(error = %e, qid = ent.qid, "fuse io_uring command refused, entry registered again");
                continue;
            }
            ent.fails = 0;
            let h = InHeader::parse(&ent.header);
            let (commit_id, in_len) = wire::ent_in(&ent.header);
            let result = wire::answer(fs, &h, &ent.header[128..256], &mut ent.payload, in_len);
            wire::set_out(&mut ent.header, h.unique, result);
            let sqe = command(fd, CMD_COMMIT_AND_FETCH, ent.qid, commit_id, None).user_data(i);
            if let Err(e) = push(ring, &sqe) {
                fatal(&format!("queue the reply: {e}"));
            }
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => fatal(&format!("io_uring wait: {e}")),
        }
        pending.extend(ring.completion().map(|c| (c.user_data(), c.result())));
    }
}

/// Registers `ent` (ring entry `i`) with its queue and submits it.
fn register(ring: &mut Ring, fd: types::Fd, ent: &mut Ent, i: usize) -> std::io::Result<()> {
    let sqe = command(fd, CMD_REGISTER, ent.qid, 0, Some(ent.iov.as_ptr() as u64)).user_data(i as u64);
    push(ring, &sqe)?;
    ring.submit().map(drop)
}

/// A FUSE uring command: `struct fuse_uring_cmd_req` in the SQE's 80-byte command area,
/// `iov` (header, payload) for REGISTER.
fn command(fd: types::Fd, op: u32, qid: u16, commit_id: u64, iov: Option<u64>) -> squeue::Entry128 {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    let mut b = opcode::UringCmd80::new(fd, op).cmd(cmd);
    if let Some(addr) = iov {
        b = b.addr(Some(addr));
    }
    let sqe = b.build();
    if iov.is_none() {
        return sqe;
    }
    // The kernel wants sqe->len = 2 (the iovec count), which the builder has no setter for.
    // SAFETY: Entry128 is #[repr(C)] of the 64-byte io_uring_sqe and 64 more bytes, every bit
    // pattern of which is a valid entry; `len` is the u32 at offset 24 of io_uring_sqe.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    raw[24..28].copy_from_slice(&2u32.to_ne_bytes());
    unsafe { std::mem::transmute(raw) }
}

fn push(ring: &mut Ring, sqe: &squeue::Entry128) -> std::io::Result<()> {
    // SAFETY: what the entry points to (a ring entry's iovec array and buffers) is leaked,
    // so it outlives the entry's submission and the kernel's use of it.
    unsafe { ring.submission().push(sqe) }.map_err(|_| std::io::Error::from_raw_os_error(libc::EBUSY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pinned_worker_per_online_cpu_and_every_queue_served() {
        // This VM: possible = online = 0-1.
        assert_eq!(assign(&[0, 1], &[0, 1]), (vec![vec![0], vec![1]], true));
        // A VM that could hot-add up to 64 CPUs and has 4: 4 pinned workers, the 60 offline
        // queues shared, every queue served exactly once.
        let possible: Vec<u16> = (0..64).collect();
        let (queues, pin) = assign(&possible, &[0, 1, 2, 3]);
        assert!(pin);
        assert_eq!(queues.len(), 4);
        assert_eq!(queues.iter().map(|q| q[0]).collect::<Vec<_>>(), [0, 1, 2, 3], "each worker's first queue is its own CPU");
        let mut all: Vec<u16> = queues.concat();
        all.sort();
        assert_eq!(all, possible);
        assert_eq!(queues.iter().map(Vec::len).collect::<Vec<_>>(), [16, 16, 16, 16]);
        // Online CPUs 2-5 of 0-7 (0 and 1 offline).
        let (queues, pin) = assign(&[0, 1, 2, 3, 4, 5, 6, 7], &[2, 3, 4, 5]);
        assert!(pin);
        assert_eq!(queues, [vec![2, 0], vec![3, 1], vec![4, 6], vec![5, 7]]);
        // More online CPUs than workers: 16 unpinned workers over all queues.
        let big: Vec<u16> = (0..40).collect();
        let (queues, pin) = assign(&big, &big);
        assert!(!pin);
        assert_eq!(queues.len(), MAX_WORKERS);
        let mut all = queues.concat();
        all.sort();
        assert_eq!(all, big);
    }
}
