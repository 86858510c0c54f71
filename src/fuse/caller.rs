//! What the supervisor reads about a trapped caller from the host's /proc (the server runs in
//! the host's pid namespace: the pid a notification names is the host's). Every file of a
//! caller is opened before the notification's id is checked (`notify::id_valid`): a valid id
//! means the caller was alive after the open, so the descriptor is the caller's and not a
//! recycled pid's.
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The caller's memory, for writing its answer where it asked, as the kernel would: only into
/// writable mappings. A write through /proc/<pid>/mem is a ptrace-style access (FOLL_FORCE) that
/// would also write into the caller's read-only private mappings (RELRO, sealed memory), so the
/// range is checked to be writable first, in the same address space (both files are bound to it
/// when opened). The caller's other threads changing its mappings in between gains them
/// nothing: such a mapping is one they could write themselves.
pub struct Memory {
    mem: File,
    maps: File,
}

pub fn open_memory(pid: i32) -> std::io::Result<Memory> {
    let open = |name: &str, write: bool| std::fs::OpenOptions::new().read(!write).write(write).custom_flags(libc::O_CLOEXEC).open(format!("/proc/{pid}/{name}"));
    Ok(Memory { mem: open("mem", true)?, maps: open("maps", false)? })
}

/// `struct procmap_query` (linux/fs.h, Linux >= 6.11).
#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}
/// _IOWR('f', 17, struct procmap_query)
const PROCMAP_QUERY: libc::c_ulong = 0xC000_0000 | ((std::mem::size_of::<ProcmapQuery>() as libc::c_ulong) << 16) | (0x66 << 8) | 17;
const PROCMAP_QUERY_VMA_WRITABLE: u64 = 0x02;

impl Memory {
    /// Write `bytes` at `addr` if the whole range is writable memory of the caller.
    pub fn write(&self, addr: u64, bytes: &[u8]) -> std::io::Result<()> {
        let end = addr.checked_add(bytes.len() as u64).ok_or_else(|| std::io::Error::from_raw_os_error(libc::EFAULT))?;
        if !self.writable(addr, end)? {
            return Err(std::io::Error::from_raw_os_error(libc::EFAULT));
        }
        std::os::unix::fs::FileExt::write_all_at(&self.mem, bytes, addr)
    }

    /// Whether [addr, end) lies in writable mappings.
    fn writable(&self, addr: u64, end: u64) -> std::io::Result<bool> {
        let mut at = addr;
        // Two mappings at most for the few bytes written here; more: refused.
        for _ in 0..4 {
            let mut q = ProcmapQuery { size: std::mem::size_of::<ProcmapQuery>() as u64, query_flags: PROCMAP_QUERY_VMA_WRITABLE, query_addr: at, ..Default::default() };
            // SAFETY: `q` is a procmap_query of the size it declares; the kernel fills it.
            if unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&self.maps), PROCMAP_QUERY as _, &mut q) } != 0 {
                let e = std::io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::ENOENT) => Ok(false),
                    Some(libc::ENOTTY | libc::EINVAL) => Ok(self.writable_from_text(addr, end)),
                    _ => Err(e),
                };
            }
            if q.vma_start > at {
                return Ok(false);
            }
            if q.vma_end >= end {
                return Ok(true);
            }
            at = q.vma_end;
        }
        Ok(false)
    }

    /// [`Memory::writable`] from the maps text (kernels without PROCMAP_QUERY).
    fn writable_from_text(&self, addr: u64, end: u64) -> bool {
        let mut text = Vec::new();
        let mut f = &self.maps;
        if std::io::Read::read_to_end(&mut f, &mut text).is_err() {
            return false;
        }
        let ranges = String::from_utf8_lossy(&text).lines().filter_map(parse_maps_line).filter(|(_, _, w)| *w).map(|(s, e, _)| (s, e)).collect::<Vec<_>>();
        super::render::sysinfo::covered(&ranges, addr, end)
    }
}

/// (start, end, writable) of a /proc/<pid>/maps line.
fn parse_maps_line(l: &str) -> Option<(u64, u64, bool)> {
    let mut f = l.split_whitespace();
    let (range, perms) = (f.next()?, f.next()?);
    let (s, e) = range.split_once('-')?;
    Some((u64::from_str_radix(s, 16).ok()?, u64::from_str_radix(e, 16).ok()?, perms.as_bytes().get(1) == Some(&b'w')))
}

/// /proc/<pid>/cgroup (open, one read or a few, close: no stat, no growing buffer).
pub fn cgroup(pid: i32) -> Option<String> {
    let f = std::fs::File::open(format!("/proc/{pid}/cgroup")).ok()?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len >= 1 << 20 {
                return None;
            }
            buf.resize(len * 2, 0);
        }
        match std::os::unix::fs::FileExt::read_at(&f, &mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).ok()
}

/// The inode of `pid`'s pid namespace (`pid:[N]`).
pub fn pidns(pid: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()?;
    link.to_str()?.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

/// /proc/<pid>/status.
pub fn status(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

/// Start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat).
pub fn start_ticks(pid: i32) -> Option<u64> {
    super::files::parse_starttime(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Seconds since boot (CLOCK_BOOTTIME, the clock process start times count in).
pub fn boottime() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid pointer to a timespec owned by this frame.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// At most this many pids of a cgroup are looked at for a pid namespace's init.
const MAX_SCAN: usize = 4096;

/// The pids listed in a cgroup directory's `cgroup.procs` (the first [`MAX_SCAN`]).
pub fn cgroup_procs(dir: &Path) -> Vec<i32> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    text.lines().take(MAX_SCAN).filter_map(|l| l.trim().parse().ok()).collect()
}

/// The host's own sysinfo(2) (this process is not under the container's filter).
pub fn host_sysinfo() -> Option<libc::sysinfo> {
    // SAFETY: all-zero is a valid value of this plain struct.
    let mut s: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a sysinfo struct owned by this frame.
    (unsafe { libc::sysinfo(&mut s) } == 0).then_some(s)
}

/// The own limit of a memory cgroup directory (not its ancestors'): v1 `memory.limit_in_bytes`,
/// v2 `memory.max`. None when unlimited or unreadable.
pub fn own_memory_limit(dir: &Path, v2: bool) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(if v2 { "memory.max" } else { "memory.limit_in_bytes" })).ok()?;
    super::cgroup::parse_limit(&text).ok().flatten()
}

/// The init of the pid namespace `ns` that `pid` is in, and its start (clock ticks): `pid`'s
/// ancestors within that namespace, then the processes of `scan` (the caller's cgroup: an
/// exec'd process's parent is outside its container's namespace), then `known` (the container's
/// init, from the runtime). The init is the process whose innermost pid is 1.
pub fn pidns_init(pid: i32, ns: u64, scan: Option<&Path>, known: Option<i32>) -> Option<(i32, u64)> {
    let is_init = |p: i32| {
        let (_, nspid) = super::render::sysinfo::parse_status(&status(p)?)?;
        (nspid.last() == Some(&1) && pidns(p) == Some(ns)).then_some(p)
    };
    let found = (|| {
        let mut cur = pid;
        for _ in 0..64 {
            let (ppid, nspid) = super::render::sysinfo::parse_status(&status(cur)?)?;
            if nspid.last() == Some(&1) {
                return Some(cur);
            }
            if ppid <= 0 || pidns(ppid) != Some(ns) {
                return None;
            }
            cur = ppid;
        }
        None
    })()
    .or_else(|| scan.and_then(|d| cgroup_procs(d).into_iter().find_map(is_init)))
    .or_else(|| known.and_then(is_init))?;
    Some((found, start_ticks(found)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_go_to_writable_memory_only() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (/proc/<pid>/mem)");
            return;
        }
        let m = open_memory(std::process::id() as i32).unwrap();
        let mut buf = [0u8; 200];
        let at = buf.as_mut_ptr() as u64;
        m.write(at, b"answer").unwrap();
        assert_eq!(&buf[..6], b"answer");
        let ro = c"read-only".as_ptr() as u64;
        assert_eq!(m.write(ro, b"x").unwrap_err().raw_os_error(), Some(libc::EFAULT), "rodata is not written");
        assert_eq!(m.write(8, b"x").unwrap_err().raw_os_error(), Some(libc::EFAULT), "unmapped");
        assert_eq!(m.write(u64::MAX - 2, b"xyz").unwrap_err().raw_os_error(), Some(libc::EFAULT), "wraps around");
        assert!(m.writable_from_text(at, at + 6) && !m.writable_from_text(ro, ro + 1));
        assert_eq!(parse_maps_line("7f00-7f10 rw-p 00000000 00:00 0 "), Some((0x7f00, 0x7f10, true)));
    }

    /// The children of `pid` (its threads' `children` files).
    fn children(pid: u32) -> Vec<i32> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        text.split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }

    #[test]
    fn the_init_of_a_callers_pid_namespace() {
        let me = std::process::id() as i32;
        assert!(cgroup(me).unwrap().contains(':'));
        assert!(host_sysinfo().unwrap().totalram > 0);
        assert!(boottime() > 0.0);
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (a pid namespace)");
            return;
        }
        // unshare (host) -> sh (the new namespace's init) -> sleep
        let mut c = std::process::Command::new("unshare").args(["--pid", "--fork", "sh", "-c", "sleep 30 & wait"]).spawn().expect("unshare (util-linux)");
        let mut found = None;
        for _ in 0..100 {
            if let Some(&sh) = children(c.id()).first() {
                if let Some(&sleep) = children(sh as u32).first() {
                    found = Some((sh, sleep));
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let (sh, sleep) = found.expect("the namespace's processes");
        let ns = pidns(sleep).unwrap();
        assert_ne!(Some(ns), pidns(me));
        assert_eq!(pidns_init(sleep, ns, None, None), Some((sh, start_ticks(sh).unwrap())), "found by walking up");
        assert_eq!(pidns_init(sh, ns, None, None).map(|x| x.0), Some(sh), "the init itself");
        // A process whose parent is outside the namespace (an exec'd one): the known init.
        assert_eq!(pidns_init(c.id() as i32, ns, None, Some(sh)).map(|x| x.0), Some(sh));
        assert_eq!(pidns_init(sleep, ns + 1, None, Some(sleep)), None, "not that namespace's init");
        let _ = c.kill();
        let _ = c.wait();
    }
}
