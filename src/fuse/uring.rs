//! FUSE over io_uring (Linux >= 6.14, when the host sets `fuse.enable_uring`): the kernel
//! queues each request on the ring queue of the CPU its caller runs on, and here one worker
//! thread pinned to each CPU serves that CPU's queue. A reader of an emulated file and the
//! thread answering it then share a CPU: no cross-CPU wake-up per round trip (over
//! /dev/fuse the single worker is woken on whichever CPU it last ran on; on a VM that halts
//! idle vCPUs each such wake-up is a VM exit, ~45 µs per round trip here).
//!
//! Life cycle: [`Workers::prepare`] (before the INIT handshake) starts the workers and makes
//! their rings, so a host where io_uring cannot be set up never offers it to the kernel;
//! once the kernel agreed at INIT, [`Workers::start`] has each worker register one ring
//! entry per queue it serves and waits until all have (the kernel holds every request until
//! each CPU's queue has an entry). If a registration fails the kernel falls back to
//! /dev/fuse by itself. The workers end when the connection goes (their commands complete
//! with ENOTCONN) or with the process.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring};

use super::server::{ProcFs, MAX_REQUEST};
use super::wire::{self, InHeader, HEADER_LEN};

const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// Above this many CPUs the workers are not pinned and share the queues round-robin (one
/// thread per CPU per container would be too many threads).
const MAX_WORKERS: usize = 16;
/// How long a worker may take to make its ring or register its entries (never near this).
const WORKER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether the host lets FUSE servers use io_uring.
pub fn enabled_on_host() -> bool {
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

/// One ring entry: the kernel writes requests into and reads replies from these buffers
/// (registered by address: they must not move while the ring lives).
struct Ent {
    qid: u16,
    header: Box<[u8]>,
    payload: Box<[u8]>,
    /// Failed commands since this entry last carried a request.
    fails: u32,
}

impl Workers {
    /// Starts one worker per possible CPU (each makes its ring), or `None` when io_uring
    /// cannot be used (disabled on the host, no ring, no thread).
    pub fn prepare() -> Option<Workers> {
        if !enabled_on_host() {
            return None;
        }
        let cpus = possible_cpus()?;
        let n = cpus.len().min(MAX_WORKERS);
        let pin = cpus.len() <= MAX_WORKERS;
        let (ready_tx, ready_rx) = channel();
        let mut go = Vec::new();
        for w in 0..n {
            let qids: Vec<u16> = cpus.iter().copied().skip(w).step_by(n).collect();
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
        let made = (0..n).map(|_| ready_rx.recv_timeout(WORKER_WAIT).ok().and_then(|r| r.ok())).all(|ok| ok.is_some());
        if !made {
            tracing::warn!("io_uring unusable for fuse, serving over /dev/fuse");
            return None;
        }
        Some(Workers { go, done: ready_rx })
    }

    /// Registers every queue's entry on `dev` (the session's /dev/fuse) and waits for it.
    pub fn start(self, dev: BorrowedFd<'_>, fs: Arc<ProcFs>) -> Result<(), String> {
        let dev = Arc::new(dev.try_clone_to_owned().map_err(|e| format!("dup /dev/fuse: {e}"))?);
        for tx in &self.go {
            let _ = tx.send(Some(Go { dev: dev.clone(), fs: fs.clone() }));
        }
        for _ in &self.go {
            self.done.recv_timeout(WORKER_WAIT).map_err(|_| "io_uring worker did not answer".to_string())??;
        }
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for tx in &self.go {
            let _ = tx.send(None);
        }
    }
}

fn possible_cpus() -> Option<Vec<u16>> {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/possible").ok()?;
    let cpus = super::render::parse_cpu_list(list.trim()).ok()?;
    Some(cpus.into_iter().filter_map(|c| u16::try_from(c).ok()).collect())
}

fn worker(qids: Vec<u16>, pin: bool, ready: Sender<Result<(), String>>, go: Receiver<Option<Go>>) {
    if pin {
        let mut set = nix::sched::CpuSet::new();
        // An offline CPU cannot be pinned to: its queue gets no requests while it is off.
        if set.set(usize::from(qids[0])).is_ok() && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok() {
            idle_policy();
        }
    }
    let entries = (qids.len() as u32).next_power_of_two().max(2);
    let ring = Ring::builder().setup_single_issuer().setup_defer_taskrun().setup_coop_taskrun().build(entries);
    let mut ring = match ring.or_else(|_| Ring::builder().build(entries)) {
        Ok(r) => r,
        Err(e) => return drop(ready.send(Err(format!("io_uring_setup: {e}")))),
    };
    let _ = ready.send(Ok(()));
    let Ok(Some(Go { dev, fs })) = go.recv() else { return };
    let mut ents: Vec<Ent> = qids
        .iter()
        .map(|&qid| Ent { qid, header: vec![0; HEADER_LEN].into(), payload: vec![0; MAX_REQUEST as usize].into(), fails: 0 })
        .collect();
    let fd = types::Fd(dev.as_raw_fd());
    for (i, ent) in ents.iter_mut().enumerate() {
        if let Err(e) = register(&mut ring, fd, ent, i) {
            return drop(ready.send(Err(format!("register fuse queue {}: {e}", ent.qid))));
        }
    }
    // A refused registration completes at once; an accepted one only when a request comes.
    let refused = ring.completion().find(|c| c.result() < 0);
    if let Some(c) = refused {
        let e = std::io::Error::from_raw_os_error(-c.result());
        return drop(ready.send(Err(format!("register fuse queue: {e}"))));
    }
    let _ = ready.send(Ok(()));
    serve(&mut ring, fd, &mut ents, &fs);
}

/// SCHED_IDLE for this (pinned) worker, so that the reader it answers stays on this CPU.
/// When the reply wakes the reader, this worker is still running on the reader's CPU; the
/// scheduler then moves the reader to an idle CPU, if there is one (a wake-up there is a VM
/// exit on this host: open + read + close of /proc/stat 142 µs median), unless every task on
/// this CPU has the idle policy (`sched_idle_cpu`): then the reader stays and preempts the
/// worker at once (45 µs, 33-39 µs through `nsenter` into a container). The worker never
/// runs for long (a render is 10-60 µs) and only on behalf of a reader blocked on it. Not
/// starved under load here: with four CPU-bound loops pinned two per CPU, in the same
/// cgroup, with and without autogroups, reads took 35-36 µs median (41-50 µs with the normal
/// policy; 62 µs over /dev/fuse). Refused (e.g. by a seccomp filter): the normal policy.
fn idle_policy() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid sched_param.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}

/// Answers requests until the connection ends.
fn serve(ring: &mut Ring, fd: types::Fd, ents: &mut [Ent], fs: &ProcFs) {
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return tracing::warn!(error = %e, "io_uring wait failed"),
        }
        let done: Vec<(u64, i32)> = ring.completion().map(|c| (c.user_data(), c.result())).collect();
        for (i, res) in done {
            let Some(ent) = ents.get_mut(i as usize) else { continue };
            if res < 0 {
                let e = std::io::Error::from_raw_os_error(-res);
                if matches!(-res, libc::ENOTCONN | libc::ECANCELED | libc::ECONNABORTED) {
                    // The connection is gone (unmounted or aborted).
                    return tracing::debug!(error = %e, "fuse io_uring queue ended");
                }
                // A refused commit leaves this CPU's queue without the entry: its requests
                // would wait forever. The request itself has failed; register the entry again
                // (once: a refused registration is not retried).
                ent.fails += 1;
                let again = ent.fails == 1 && register(ring, fd, ent, i as usize).is_ok();
                tracing::warn!(error = %e, qid = ent.qid, registered_again = again, "fuse io_uring command refused");
                continue;
            }
            ent.fails = 0;
            let h = InHeader::parse(&ent.header);
            let (commit_id, in_len) = wire::ent_in(&ent.header);
            let result = wire::answer(fs, &h, &ent.header[128..256], &mut ent.payload, in_len);
            wire::set_out(&mut ent.header, h.unique, result);
            let sqe = command(fd, CMD_COMMIT_AND_FETCH, ent.qid, commit_id, None).user_data(i);
            if let Err(e) = push(ring, &sqe) {
                return tracing::warn!(error = %e, "io_uring queue full");
            }
        }
    }
}

/// Registers `ent` (ring entry `i`) with its queue and submits it.
fn register(ring: &mut Ring, fd: types::Fd, ent: &mut Ent, i: usize) -> std::io::Result<()> {
    let iov = [
        libc::iovec { iov_base: ent.header.as_mut_ptr().cast(), iov_len: ent.header.len() },
        libc::iovec { iov_base: ent.payload.as_mut_ptr().cast(), iov_len: ent.payload.len() },
    ];
    // The kernel copies the iovec array while the command is submitted, before this returns.
    let sqe = command(fd, CMD_REGISTER, ent.qid, 0, Some(iov.as_ptr() as u64)).user_data(i as u64);
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
    // SAFETY: the buffers the entry points to (the iovec array, the ring entry's buffers)
    // outlive its submission: the array is submitted before it goes out of scope, the
    // buffers live as long as the worker.
    unsafe { ring.submission().push(sqe) }.map_err(|_| std::io::Error::from_raw_os_error(libc::EBUSY))
}
