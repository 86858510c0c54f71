//! Undoing the kernel's cached-size shrink after reads through the page cache.
//!
//! sendfile/splice (busybox `cat`) reads these direct_io files through the page cache
//! (fs/fuse/file.c: `fuse_splice_read` is `filemap_splice_read` unless passthrough), which
//! stops at the inode's cached i_size and never asks for attributes. A READ answered with
//! less than was asked shrinks that i_size to where the text ended (`fuse_short_read` ->
//! `fuse_read_update_size`); this is what stops that reader at the end of its text instead of
//! the zero-filled rest of the page (st_size is rounded up, see `server::size_for`), so it
//! must happen. But the shrunk size stays for the next reader, whose text may be longer (an
//! inner container's `0` then the container's `0-1` of /sys/devices/system/cpu/online, or a
//! counter that grew): it was cut (`0-`), until a stat after the attribute TTL refetched the
//! size (the bind-mounted files are never looked up again, and opening asks for nothing).
//!
//! So after such a READ the size is set back, before the next open of the file is answered:
//! FUSE_NOTIFY_STORE of one zero byte at st_size - 1 (`fuse_notify_store` raises i_size to
//! offset + length; the byte is past every text, where the page is zero anyway, and opening
//! drops the file's pages since no file is opened with FOPEN_KEEP_CACHE). Not INVAL_INODE:
//! it only marks the attributes stale, which the splice path never looks at, and it bumps the
//! inode's attr_version, so one landing while a reader's READ is in flight cancels that
//! reader's shrink (it then gets its text padded with NULs up to st_size).
//!
//! - Which READs: only those without FUSE_READ_LOCKOWNER. The kernel sets it on every
//!   direct_io READ (`fuse_send_read` from `fuse_direct_io`) and never on page-cache ones
//!   (`fuse_do_readfolio`, `fuse_send_readpages`): read(2) readers pay nothing.
//! - When: once the READ's reader is done with it, so the restore cannot land between its
//!   READ and its splice. At RELEASE of the file (asynchronously; the opener of the next
//!   `cat` does not wait), and at the next OPEN if that RELEASE has not been seen yet (over
//!   io_uring it may sit on another CPU's queue, or the first reader still has the file open):
//!   that OPEN waits for the restore, at most [`RESTORE_WAIT`].
//! - By whom: a thread of its own, never the request workers. The store locks the page at
//!   st_size - 1; a concurrent page-cache reader may hold that lock while its READ waits for a
//!   worker, so a worker doing the store could wait for itself. A stuck store delays an OPEN
//!   by at most [`RESTORE_WAIT`].
//! - Concurrent page-cache readers of one file share its pages and size anyway (one may get
//!   the other's text); a restore landing while another reader's READ is in flight may cut or
//!   pad that reader. Sequential readers (the shell running `cat` after `cat`) are exact.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Longest an OPEN waits for a pending restore of its file's size.
pub const RESTORE_WAIT: Duration = Duration::from_millis(50);

/// The size is as last reported.
const CLEAN: u8 = 0;
/// A page-cache READ got a short answer: the kernel may have shrunk the size.
const SHRUNK: u8 = 1;
/// Handed to the restoring thread.
const PENDING: u8 = 2;

/// Sets the kernel's cached size of inode `ino` to `size` (at least; never lowers it).
pub type Restore = Box<dyn Fn(u64, u64) + Send>;

/// Per file node: whether its cached size needs restoring.
pub struct Sizes {
    state: Vec<AtomicU8>,
    /// (node, inode, size) to restore; unset until the session can send notifications.
    tx: OnceLock<Mutex<Sender<(usize, u64, u64)>>>,
    done: Mutex<()>,
    cv: Condvar,
}

impl Sizes {
    pub fn new(nodes: usize) -> Self {
        Sizes { state: (0..nodes).map(|_| AtomicU8::new(CLEAN)).collect(), tx: OnceLock::new(), done: Mutex::new(()), cv: Condvar::new() }
    }

    /// Starts the restoring thread with `restore`. Without it nothing is restored.
    pub fn start(self: &std::sync::Arc<Self>, restore: Restore) {
        let (tx, rx) = channel::<(usize, u64, u64)>();
        if self.tx.set(Mutex::new(tx)).is_err() {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("fuse-resize".into()).stack_size(64 * 1024).spawn(move || {
            for (idx, ino, size) in rx {
                restore(ino, size);
                // Shrunk again meanwhile: the next RELEASE or OPEN restores it again.
                let _ = me.state[idx].compare_exchange(PENDING, CLEAN, Ordering::AcqRel, Ordering::Relaxed);
                let _guard = me.done.lock().unwrap_or_else(|e| e.into_inner());
                me.cv.notify_all();
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread restoring file sizes after sendfile reads");
        }
    }

    /// A READ of node `idx` was answered short; `direct`: it carried FUSE_READ_LOCKOWNER.
    pub fn short_read(&self, idx: usize, direct: bool) {
        if !direct {
            if let Some(s) = self.state.get(idx) {
                s.store(SHRUNK, Ordering::Release);
            }
        }
    }

    /// Hands a restore of node `idx` (inode `ino`, to `size`) to the thread if it is needed;
    /// whether one is now pending.
    fn request(&self, idx: usize, ino: u64, size: impl FnOnce() -> u64) -> bool {
        let Some(s) = self.state.get(idx) else { return false };
        match s.load(Ordering::Acquire) {
            CLEAN => false,
            PENDING => true,
            _ => {
                let Some(tx) = self.tx.get() else { return false };
                if s.compare_exchange(SHRUNK, PENDING, Ordering::AcqRel, Ordering::Acquire).is_err() {
                    return s.load(Ordering::Acquire) == PENDING;
                }
                let sent = tx.lock().unwrap_or_else(|e| e.into_inner()).send((idx, ino, size())).is_ok();
                if !sent {
                    s.store(SHRUNK, Ordering::Release);
                }
                sent
            }
        }
    }

    /// A file of node `idx` was released: restore its size if a READ shrank it.
    pub fn released(&self, idx: usize, ino: u64, size: impl FnOnce() -> u64) {
        self.request(idx, ino, size);
    }

    /// Node `idx` is being opened: restore its size first if needed (see the module doc).
    pub fn opening(&self, idx: usize, ino: u64, size: impl FnOnce() -> u64) {
        if !self.request(idx, ino, size) {
            return;
        }
        let deadline = Instant::now() + RESTORE_WAIT;
        let mut guard = self.done.lock().unwrap_or_else(|e| e.into_inner());
        while self.state[idx].load(Ordering::Acquire) == PENDING {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::debug!(node = idx, "file size restore still pending: open answered anyway");
                return;
            }
            guard = self.cv.wait_timeout(guard, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}
