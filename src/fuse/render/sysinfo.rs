//! `sysinfo(2)` as the container sees it (the supervisor's answer, `fuse::supervisor`), and the
//! pure parsing the supervisor needs to find the caller's container. The memory figures are
//! those of the emulated /proc/meminfo (`meminfo::render`), so `free` (busybox reads
//! sysinfo) and `cat /proc/meminfo` agree: totalram = MemTotal, freeram = MemFree, sharedram =
//! Shmem, bufferram = Buffers (0), swap = SwapTotal/SwapFree. `uptime` is the container's age,
//! `procs` its task count (pids.current); the load averages stay the host's, as in
//! /proc/loadavg. `mem_unit` is 1 (bytes), as the kernel answers on 64-bit.
use std::mem::{offset_of, size_of};

use super::meminfo::{swap_kb_of, MemStat, SwapInfo};

/// `sysinfo(2)` figures in bytes (`mem_unit` applied): the host's own (`from_libc`) and the
/// container's answer (`compute`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub uptime: i64,
    pub loads: [u64; 3],
    pub totalram: u64,
    pub freeram: u64,
    pub sharedram: u64,
    pub bufferram: u64,
    pub totalswap: u64,
    pub freeswap: u64,
    pub procs: u16,
}

impl Figures {
    /// From the kernel's struct (values scaled by its `mem_unit`). The conversions are no-ops
    /// on 64-bit targets only (`c_ulong`, `c_long` are 32 bits elsewhere).
    #[allow(clippy::useless_conversion)]
    pub fn from_libc(s: &libc::sysinfo) -> Figures {
        let unit = u64::from(s.mem_unit.max(1));
        let b = |v: libc::c_ulong| u64::from(v).saturating_mul(unit);
        Figures {
            uptime: i64::from(s.uptime),
            loads: s.loads.map(u64::from),
            totalram: b(s.totalram),
            freeram: b(s.freeram),
            sharedram: b(s.sharedram),
            bufferram: b(s.bufferram),
            totalswap: b(s.totalswap),
            freeswap: b(s.freeswap),
            procs: s.procs,
        }
    }
}

/// The container's memory as read from its cgroup (see `cgroup::Memory`).
#[derive(Debug, Clone, Copy)]
pub struct Mem<'a> {
    pub limit: Option<u64>,
    pub usage: u64,
    pub swap: Option<SwapInfo>,
    pub stat: &'a MemStat,
}

/// The container's sysinfo. `mem`: None without a memory controller (the host's figures stay);
/// `pids`: the container's task count; `age_s`: seconds since the container (the caller's pid
/// namespace's init) started.
pub fn compute(host: &Figures, mem: Option<Mem>, pids: Option<u64>, age_s: f64) -> Figures {
    let mut a = Figures {
        // The kernel rounds a partial second up.
        uptime: if age_s.is_finite() && age_s > 0.0 { age_s.ceil() as i64 } else { 0 },
        procs: pids.map_or(host.procs, |p| p.clamp(1, u64::from(u16::MAX)) as u16),
        ..*host
    };
    if let Some(m) = mem {
        // In kB, as meminfo::render computes MemTotal/MemFree, so both show the same numbers.
        let host_kb = host.totalram / 1024;
        let total = match m.limit {
            Some(l) if host_kb > 0 => (l / 1024).min(host_kb),
            Some(l) => l / 1024,
            None => host_kb,
        };
        let free = total.saturating_sub(m.usage / 1024);
        let (swap_total, swap_used) = swap_kb_of(host.totalswap / 1024, m.swap);
        a.totalram = total.saturating_mul(1024);
        a.freeram = free.saturating_mul(1024);
        a.sharedram = (m.stat.shmem / 1024).min(total).saturating_mul(1024);
        a.bufferram = 0;
        a.totalswap = swap_total.saturating_mul(1024);
        a.freeswap = swap_total.saturating_sub(swap_used).saturating_mul(1024);
    }
    a
}

/// Size of the caller's `struct sysinfo` (the native ABI: 112 bytes on 64-bit).
pub const SIZE: usize = size_of::<libc::sysinfo>();

/// The answer laid out as the native `struct sysinfo`, padding zeroed.
pub fn encode(a: &Figures) -> [u8; SIZE] {
    let mut out = [0u8; SIZE];
    let mut put = |off: usize, bytes: &[u8]| out[off..off + bytes.len()].copy_from_slice(bytes);
    let ul = |v: u64| (v as libc::c_ulong).to_ne_bytes();
    put(offset_of!(libc::sysinfo, uptime), &(a.uptime as libc::c_long).to_ne_bytes());
    for (i, l) in a.loads.iter().enumerate() {
        put(offset_of!(libc::sysinfo, loads) + i * size_of::<libc::c_ulong>(), &ul(*l));
    }
    put(offset_of!(libc::sysinfo, totalram), &ul(a.totalram));
    put(offset_of!(libc::sysinfo, freeram), &ul(a.freeram));
    put(offset_of!(libc::sysinfo, sharedram), &ul(a.sharedram));
    put(offset_of!(libc::sysinfo, bufferram), &ul(a.bufferram));
    put(offset_of!(libc::sysinfo, totalswap), &ul(a.totalswap));
    put(offset_of!(libc::sysinfo, freeswap), &ul(a.freeswap));
    put(offset_of!(libc::sysinfo, procs), &a.procs.to_ne_bytes());
    put(offset_of!(libc::sysinfo, mem_unit), &1u32.to_ne_bytes());
    out
}

/// Size of a 32-bit caller's `struct sysinfo` (the kernel's `struct compat_sysinfo`).
pub const COMPAT_SIZE: usize = 64;

/// `a` as a 32-bit caller's struct, as the kernel's compat_sys_sysinfo fills it: longs are 32
/// bits; when the memory totals do not fit, every memory figure is given in pages (mem_unit
/// 4096) instead of bytes.
pub fn encode_compat(a: &Figures) -> [u8; COMPAT_SIZE] {
    let mut out = [0u8; COMPAT_SIZE];
    let mut put = |off: usize, bytes: &[u8]| out[off..off + bytes.len()].copy_from_slice(bytes);
    let (shift, unit) = if a.totalram > u64::from(u32::MAX) || a.totalswap > u64::from(u32::MAX) { (12, 4096u32) } else { (0, 1) };
    let mem = |v: u64| ((v >> shift) as u32).to_ne_bytes();
    put(0, &(a.uptime as i32).to_ne_bytes());
    for (i, l) in a.loads.iter().enumerate() {
        put(4 + i * 4, &(*l as u32).to_ne_bytes());
    }
    for (i, v) in [a.totalram, a.freeram, a.sharedram, a.bufferram, a.totalswap, a.freeswap].into_iter().enumerate() {
        put(16 + i * 4, &mem(v));
    }
    put(40, &a.procs.to_ne_bytes());
    put(52, &unit.to_ne_bytes());
    out
}

/// The path of `controller` in a /proc/<pid>/cgroup text: the v1 line naming it, else the v2
/// line (`0::/path`). None if neither is there.
pub fn proc_cgroup_path<'a>(text: &'a str, controller: &str) -> Option<&'a str> {
    let mut v2 = None;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else { continue };
        if ctrls.is_empty() {
            v2 = Some(path);
        } else if ctrls.split(',').any(|c| c == controller) {
            return Some(path);
        }
    }
    v2
}

fn norm(p: &str) -> String {
    format!("/{}", p.trim_matches('/'))
}

/// Whether cgroup `caller` is `container` or below it (component-wise, no `..`).
pub fn below(caller: &str, container: &str) -> bool {
    let (caller, container) = (norm(caller), norm(container));
    let under = caller == container || container == "/" || caller.strip_prefix(&container).is_some_and(|r| r.starts_with('/'));
    under && !caller.split('/').any(|c| c == "..")
}

/// The cgroups from `caller` up to `container`, deepest first, when `caller` is `container` or
/// below it (component-wise); otherwise just `container` (a caller outside the container's
/// subtree, e.g. the runtime's own process during an exec, gets the container's figures).
pub fn path_up_to(caller: &str, container: &str) -> Vec<String> {
    let (caller, container) = (norm(caller), norm(container));
    if !below(&caller, &container) {
        return vec![container];
    }
    let mut out = vec![caller.clone()];
    let mut cur = caller.as_str();
    while cur != container {
        cur = match cur.rfind('/') {
            Some(0) => "/",
            Some(i) => &cur[..i],
            None => break,
        };
        out.push(cur.to_string());
    }
    out
}

/// Whether `[start, end)` is covered by `ranges` (sorted, as /proc/<pid>/maps lists them).
pub fn covered(ranges: &[(u64, u64)], start: u64, end: u64) -> bool {
    let mut at = start;
    for &(s, e) in ranges {
        if s <= at && at < e {
            at = e;
        }
        if at >= end {
            return true;
        }
    }
    false
}

/// From a /proc/<pid>/status text: the parent pid and the pid in each nested pid namespace
/// (`NSpid`, outermost first).
pub fn parse_status(text: &str) -> Option<(i32, Vec<i32>)> {
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
    let ppid = field("PPid:")?.parse().ok()?;
    let nspid = field("NSpid:")?.split_whitespace().map(str::parse).collect::<Result<Vec<i32>, _>>().ok()?;
    (!nspid.is_empty()).then_some((ppid, nspid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Figures {
        Figures {
            uptime: 22000,
            loads: [65536, 32768, 0],
            totalram: 24 << 30,
            freeram: 20 << 30,
            sharedram: 1 << 20,
            bufferram: 5 << 20,
            totalswap: 2 << 30,
            freeswap: 2 << 30,
            procs: 300,
        }
    }

    #[test]
    fn a_256m_container_sees_256m_like_its_meminfo() {
        let stat = MemStat { shmem: 4 << 20, ..Default::default() };
        let a = compute(&host(), Some(Mem { limit: Some(256 << 20), usage: 100 << 20, swap: None, stat: &stat }), Some(7), 12.3);
        assert_eq!(a.totalram, 256 << 20);
        assert_eq!(a.freeram, 156 << 20);
        assert_eq!((a.sharedram, a.bufferram), (4 << 20, 0));
        assert_eq!((a.totalswap, a.freeswap), (0, 0), "no swap accounting: no swap, as /proc/swaps");
        assert_eq!((a.procs, a.uptime, a.loads), (7, 13, [65536, 32768, 0]));
        // The same MemTotal/MemFree as the emulated /proc/meminfo shows for these inputs.
        let text = super::super::meminfo::render(&super::super::meminfo::MemInput {
            host: "MemTotal:       25165824 kB\nMemFree:        20971520 kB\nSwapTotal:       2097152 kB\n",
            limit: Some(256 << 20),
            usage: 100 << 20,
            swap: None,
            stat: &stat,
        });
        let kb = |l: &str| super::super::meminfo::host_value_kb(&text, l).unwrap() * 1024;
        assert_eq!((kb("MemTotal"), kb("MemFree")), (a.totalram, a.freeram));
    }

    #[test]
    fn limits_above_the_host_unlimited_and_no_memory_controller() {
        let stat = MemStat::default();
        let h = host();
        let big = compute(&h, Some(Mem { limit: Some(u64::MAX / 2), usage: 1 << 30, swap: None, stat: &stat }), None, 1.0);
        assert_eq!((big.totalram, big.freeram, big.procs), (h.totalram, h.totalram - (1 << 30), 300));
        let unlimited = compute(&h, Some(Mem { limit: None, usage: 0, swap: None, stat: &stat }), None, 0.0);
        assert_eq!(unlimited.totalram, h.totalram);
        let none = compute(&h, None, Some(0), f64::NAN);
        assert_eq!((none.totalram, none.freeram, none.bufferram, none.uptime, none.procs), (h.totalram, h.freeram, h.bufferram, 0, 1));
        let over = compute(&h, Some(Mem { limit: Some(1 << 20), usage: 2 << 20, swap: None, stat: &MemStat { shmem: 8 << 20, ..stat } }), Some(1 << 20), 1.0);
        assert_eq!((over.freeram, over.sharedram, over.procs), (0, 1 << 20, u16::MAX));
    }

    #[test]
    fn swap_follows_the_swap_limit() {
        let stat = MemStat::default();
        let a = compute(&host(), Some(Mem { limit: Some(256 << 20), usage: 0, swap: Some(SwapInfo { limit: Some(512 << 20), usage: 100 << 20 }), stat: &stat }), None, 1.0);
        assert_eq!((a.totalswap, a.freeswap), (512 << 20, 412 << 20));
        let noswap = Figures { totalswap: 0, freeswap: 0, ..host() };
        let a = compute(&noswap, Some(Mem { limit: None, usage: 0, swap: Some(SwapInfo { limit: None, usage: 0 }), stat: &stat }), None, 1.0);
        assert_eq!((a.totalswap, a.freeswap), (0, 0));
    }

    #[test]
    fn encoding_is_the_native_struct() {
        let a = Figures { uptime: 42, loads: [1, 2, 3], totalram: 4, freeram: 5, sharedram: 6, bufferram: 7, totalswap: 8, freeswap: 9, procs: 10 };
        let bytes = encode(&a);
        // SAFETY: `bytes` is SIZE bytes, the size of the plain-data struct read back.
        let s: libc::sysinfo = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        assert_eq!((s.uptime, s.loads, s.procs, s.mem_unit), (42, [1, 2, 3], 10, 1));
        assert_eq!([s.totalram, s.freeram, s.sharedram, s.bufferram, s.totalswap, s.freeswap, s.totalhigh, s.freehigh], [4, 5, 6, 7, 8, 9, 0, 0]);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(SIZE, 112);
        // The host's own struct round-trips through Figures.
        let mut own: libc::sysinfo = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a sysinfo struct owned by this frame.
        assert_eq!(unsafe { libc::sysinfo(&mut own) }, 0);
        let h = Figures::from_libc(&own);
        assert!(h.totalram > 0 && h.totalram.is_multiple_of(1024));
    }

    #[test]
    fn encoding_for_32_bit_callers() {
        let word = |b: &[u8], off: usize| u32::from_ne_bytes(b[off..off + 4].try_into().unwrap());
        let small = Figures { uptime: 42, loads: [1, 2, 3], totalram: 64 << 20, freeram: 60 << 20, sharedram: 6, bufferram: 7, totalswap: 0, freeswap: 0, procs: 10 };
        let b = encode_compat(&small);
        assert_eq!((word(&b, 0), word(&b, 4), word(&b, 12), word(&b, 16), word(&b, 20)), (42, 1, 3, 64 << 20, 60 << 20));
        assert_eq!((u16::from_ne_bytes([b[40], b[41]]), word(&b, 52)), (10, 1), "procs, mem_unit");
        // 24 GiB does not fit in 32 bits: pages, as the kernel's compat_sys_sysinfo gives them.
        let big = Figures { totalram: 24 << 30, freeram: 20 << 30, ..small };
        let b = encode_compat(&big);
        assert_eq!((word(&b, 16), word(&b, 20), word(&b, 24), word(&b, 52)), (6 << 20, 5 << 20, 0, 4096));
        assert_eq!(COMPAT_SIZE, 64);
    }

    #[test]
    fn proc_cgroup_lines() {
        let v1 = "12:pids:/docker/abc/docker/def\n4:memory:/docker/abc/docker/def\n3:cpu,cpuacct:/docker/abc\n1:name=systemd:/x\n0::/\n";
        assert_eq!(proc_cgroup_path(v1, "memory"), Some("/docker/abc/docker/def"));
        assert_eq!(proc_cgroup_path(v1, "cpuacct"), Some("/docker/abc"));
        assert_eq!(proc_cgroup_path(v1, "blkio"), Some("/"), "not bound to v1: the v2 line");
        assert_eq!(proc_cgroup_path("0::/kubepods/pod1/c2\n", "memory"), Some("/kubepods/pod1/c2"));
        assert_eq!(proc_cgroup_path("garbage\n", "memory"), None);
        assert_eq!(proc_cgroup_path("5:memory:/a:b\n", "memory"), Some("/a:b"), "a colon in the path");
    }

    #[test]
    fn the_walk_stays_inside_the_container() {
        assert_eq!(path_up_to("/docker/a/docker/b", "/docker/a"), ["/docker/a/docker/b", "/docker/a/docker", "/docker/a"]);
        assert_eq!(path_up_to("/docker/a", "/docker/a/"), ["/docker/a"]);
        assert_eq!(path_up_to("/docker/ab", "/docker/a"), ["/docker/a"], "a sibling with a common prefix");
        assert_eq!(path_up_to("/", "/docker/a"), ["/docker/a"], "the runtime's own process");
        assert_eq!(path_up_to("/docker/a/../b", "/docker/a"), ["/docker/a"]);
        assert_eq!(path_up_to("/x/y", "/"), ["/x/y", "/x", "/"]);
        assert!(below("/docker/a", "/docker/a/") && below("/docker/a/b", "/docker/a") && below("/x", "/"));
        assert!(!below("/docker/ab", "/docker/a") && !below("/", "/docker/a") && !below("/docker/a/../b", "/docker/a"));
    }

    #[test]
    fn ranges_covered() {
        let r = [(0x1000, 0x2000), (0x2000, 0x3000), (0x5000, 0x6000)];
        assert!(covered(&r, 0x1ff0, 0x2010), "across two adjacent mappings");
        assert!(covered(&r, 0x5000, 0x6000));
        assert!(!covered(&r, 0x2ff0, 0x3010), "runs into a hole");
        assert!(!covered(&r, 0x4000, 0x4010));
        assert!(!covered(&[], 1, 2));
    }

    #[test]
    fn status_fields() {
        let s = "Name:\tsh\nPPid:\t1234\nNSpid:\t5678\t12\t1\n";
        assert_eq!(parse_status(s), Some((1234, vec![5678, 12, 1])));
        assert_eq!(parse_status("PPid:\t0\nNSpid:\t1\n"), Some((0, vec![1])));
        assert_eq!(parse_status("PPid:\t1\n"), None);
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(parse_status(&own).is_some());
    }
}
