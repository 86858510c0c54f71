//! Keeping the long-lived server process small. `fuse-serve` is the whole
//! nestrun binary: its start-up (argument parsing, logging set-up, mounting)
//! maps in far more code than serving needs, and one server runs per
//! container.
//!
//! - [`tune_allocator`] (before the mount): one malloc arena for all threads
//!   (the worker would otherwise get an arena of its own), and a fixed mmap
//!   threshold, so fuser's 16 MiB request buffers always come from a fresh
//!   mapping whose untouched pages stay non-resident (with glibc's dynamic
//!   threshold, freeing the handshake buffer raises it and the next one comes
//!   from the heap, where calloc may clear it all).
//! - [`trim`] (after the mount, before serving): returns freed heap to the
//!   kernel, and drops this process's page-table entries of clean, read-only,
//!   file-backed mappings (code and constants of the binary and its
//!   libraries). The pages stay in the page cache; the few that serving uses
//!   fault back in (minor faults, once). Mappings holding private (written,
//!   e.g. relocated) pages are left alone: dropping those would lose data.
//! - [`Idle`] (in the server process): the same trim again once the server has
//!   been quiet for a [`QUIET`] spell after answering requests (1-2 spells after
//!   the last one). Each page a request
//!   touches maps its 64 KiB neighbourhood back in (the kernel's fault-around),
//!   so the code of the attaches and of the container's boot-time reads stayed
//!   mapped for good. An idle server has no timer: the trimming thread sleeps
//!   until a request comes.

/// How long a server must go without requests before it trims again.
pub const QUIET: std::time::Duration = std::time::Duration::from_secs(2);

/// Request activity of the server, and the thread that trims after a quiet spell.
#[derive(Default)]
pub struct Idle {
    requests: std::sync::atomic::AtomicU64,
    /// The trimming thread is waiting for a request (set by it, cleared by `touch`).
    waiting: std::sync::atomic::AtomicBool,
    thread: std::sync::OnceLock<std::thread::Thread>,
}

impl Idle {
    /// Called on every request: two atomic operations, and a wake-up of the trimming thread
    /// on the first request after a trim.
    pub fn touch(&self) {
        use std::sync::atomic::Ordering;
        // SeqCst here and in `run`: the count's increment and the thread's `waiting` store
        // are each followed by a load of the other; at least one side must see the other's.
        self.requests.fetch_add(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) && self.waiting.swap(false, Ordering::SeqCst) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    /// Starts the thread that calls `action` (the server: [`trim`]) after each quiet spell
    /// that follows requests (once per process).
    pub fn start(self: &std::sync::Arc<Self>, quiet: std::time::Duration, action: fn()) {
        let me = self.clone();
        let _ = std::thread::Builder::new().name("trim".into()).stack_size(64 * 1024).spawn(move || me.run(quiet, action));
    }

    fn run(&self, quiet: std::time::Duration, action: fn()) {
        use std::sync::atomic::Ordering;
        // Registered before `waiting` is first set: a `touch` that clears it always finds
        // the thread to wake (requests are being served while this thread starts).
        self.thread.get_or_init(std::thread::current);
        // The request count at the last trim (the server trimmed at start, before any).
        let mut trimmed_at = 0;
        loop {
            // Wait for a request, unless some came since the last trim (also before this
            // thread was up). A `touch` after the check clears `waiting` and unparks.
            self.waiting.store(true, Ordering::SeqCst);
            if self.requests.load(Ordering::SeqCst) == trimmed_at {
                while self.waiting.load(Ordering::Acquire) {
                    std::thread::park();
                }
            }
            self.waiting.store(false, Ordering::Relaxed);
            // Then for a quiet spell after them (so the trim comes 1-2 spells after the last
            // request), trimming again if requests came while it trimmed.
            loop {
                let seen = self.requests.load(Ordering::Acquire);
                std::thread::sleep(quiet);
                if self.requests.load(Ordering::Acquire) != seen {
                    continue;
                }
                action();
                trimmed_at = seen;
                if self.requests.load(Ordering::Acquire) == seen {
                    break;
                }
            }
        }
    }
}

/// See the module doc. glibc only (a no-op elsewhere).
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes glibc allocator parameters.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// A mapping of /proc/self/smaps that may be dropped: read-only, private,
/// backed by a file and without anonymous (copy-on-write) pages.
fn droppable(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            // header: range perms offset dev inode [path]
            let perms = f.next().unwrap_or("");
            let inode = f.nth(2).unwrap_or("0");
            let range = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16));
            cur = match range {
                (Ok(a), Ok(b)) if perms.len() == 4 && &perms[1..2] == "-" && &perms[3..4] == "p" && inode != "0" => Some((a, b)),
                _ => None,
            };
        } else if first == "Anonymous:" {
            if let Some(r) = cur.take() {
                if f.next() == Some("0") {
                    out.push(r);
                }
            }
        }
    }
    out
}

/// See the module doc.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return };
    for (start, end) in droppable(&smaps) {
        // SAFETY: the range is a whole private, read-only, file-backed mapping with no
        // anonymous pages: MADV_DONTNEED only unmaps pages the kernel maps back from the
        // file on the next access, with the same content.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static ACTIONS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    /// Waits (up to 10 s, for loaded CI machines) until `n` trims happened.
    fn until_actions(n: u32) -> u32 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ACTIONS.load(std::sync::atomic::Ordering::SeqCst) < n && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        ACTIONS.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn trims_after_a_quiet_spell_only_after_requests() {
        use std::sync::atomic::Ordering::SeqCst;
        use std::time::Duration;
        let ms = Duration::from_millis;
        let quiet = ms(500);
        let idle = std::sync::Arc::new(Idle::default());
        // Touched before the thread is up: the first request is not lost.
        idle.touch();
        idle.start(quiet, || {
            ACTIONS.fetch_add(1, SeqCst);
        });
        assert_eq!(until_actions(1), 1, "one trim after a request and a quiet spell");
        std::thread::sleep(quiet * 3);
        assert_eq!(ACTIONS.load(SeqCst), 1, "no requests, no more trims");
        // busy: a request every 10 ms for 1.5 s leaves no 500 ms of quiet
        for _ in 0..150 {
            idle.touch();
            std::thread::sleep(ms(10));
        }
        assert_eq!(ACTIONS.load(SeqCst), 1, "no trim while requests keep coming");
        assert_eq!(until_actions(2), 2, "a trim once they stop");
        std::thread::sleep(quiet * 3);
        assert_eq!(ACTIONS.load(SeqCst), 2, "and none while idle");
    }

    #[test]
    fn picks_clean_readonly_file_mappings() {
        let smaps = "\
55d0a0000000-55d0a0100000 r--p 00000000 08:01 1234 /bin/x
Size:               1024 kB
Anonymous:             0 kB
55d0a0100000-55d0a0200000 r-xp 00100000 08:01 1234 /bin/x
Anonymous:             0 kB
55d0a0200000-55d0a0210000 r--p 00200000 08:01 1234 /bin/x
Anonymous:            64 kB
55d0a0210000-55d0a0211000 rw-p 00210000 08:01 1234 /bin/x
Anonymous:             0 kB
7f0000000000-7f0000001000 r--s 00000000 08:01 99 /dev/shm/y
Anonymous:             0 kB
7fff0000000-7fff0002000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
7f0000002000-7f0000003000 ---p 00000000 00:00 0
Anonymous:             0 kB
";
        assert_eq!(droppable(smaps), vec![(0x55d0a0000000, 0x55d0a0100000), (0x55d0a0100000, 0x55d0a0200000)]);
        let own = std::fs::read_to_string("/proc/self/smaps").unwrap();
        assert!(!droppable(&own).is_empty(), "this test binary has clean code mappings");
    }
}
