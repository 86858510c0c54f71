//! /proc/meminfo for a memory-limited container, derived like lxcfs's
//! `proc_meminfo_read`: lines that depend on the cgroup are recomputed from the
//! limit, the usage and memory.stat; every other line is kept from the host.

/// The subset of memory.stat the renderer needs, in bytes. cgroup v1 names
/// are the hierarchical `total_*` ones, v2 names are the plain ones; see
/// `cgroup::parse_memory_stat`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemStat {
    /// v1 `total_cache`, v2 `file`.
    pub cache: u64,
    pub shmem: u64,
    /// v1 `total_mapped_file`, v2 `file_mapped`.
    pub mapped: u64,
    pub dirty: u64,
    pub writeback: u64,
    pub active_anon: u64,
    pub inactive_anon: u64,
    pub active_file: u64,
    pub inactive_file: u64,
    pub unevictable: u64,
    /// v2 only (v1 memory.stat has no slab lines: they render as 0, like lxcfs).
    pub slab: u64,
    pub slab_reclaimable: u64,
    pub slab_unreclaimable: u64,
    /// v1 `total_rss_huge`, v2 `anon_thp`.
    pub anon_huge: u64,
}

/// Swap as seen by the container, already normalised to swap-only semantics
/// (for cgroup v1 the caller subtracts the memory limit/usage from memsw).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapInfo {
    /// Swap limit in bytes; `None` = unlimited.
    pub limit: Option<u64>,
    /// Swap in use by the cgroup, bytes.
    pub usage: u64,
}

#[derive(Debug, Clone)]
pub struct MemInput<'a> {
    /// The host's /proc/meminfo text.
    pub host: &'a str,
    /// Effective memory limit in bytes (min over ancestors); `None` = unlimited.
    pub limit: Option<u64>,
    /// Memory usage in bytes (v1 memory.usage_in_bytes, v2 memory.current).
    pub usage: u64,
    /// `None` when swap accounting is unavailable: the container is shown no swap.
    pub swap: Option<SwapInfo>,
    pub stat: &'a MemStat,
}

/// Formats one `Label:   value kB` line with the kernel's widths
/// (label padded to 16 columns, value right-aligned in 8).
pub fn kb_line(label: &str, kb: u64) -> String {
    format!("{:<16}{:>8} kB\n", format!("{label}:"), kb)
}

/// Reads `Label: N kB` from a meminfo text.
pub fn host_value_kb(host: &str, label: &str) -> Option<u64> {
    host.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k != label {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

/// Container swap total/used in kB as rendered in meminfo and swaps.
pub fn swap_kb(host: &str, swap: Option<SwapInfo>) -> (u64, u64) {
    swap_kb_of(host_value_kb(host, "SwapTotal").unwrap_or(0), swap)
}

/// [`swap_kb`] from the host's swap total in kB (also sysinfo's, `sysinfo::compute`).
pub fn swap_kb_of(host_total: u64, swap: Option<SwapInfo>) -> (u64, u64) {
    match swap {
        None => (0, 0),
        Some(_) if host_total == 0 => (0, 0),
        Some(s) => {
            let total = s.limit.map_or(host_total, |l| (l / 1024).min(host_total));
            (total, (s.usage / 1024).min(total))
        }
    }
}

pub fn render(input: &MemInput) -> String {
    let host_total = host_value_kb(input.host, "MemTotal").unwrap_or(0);
    let total = match input.limit {
        Some(l) if host_total > 0 => (l / 1024).min(host_total),
        Some(l) => l / 1024,
        None => host_total,
    };
    let usage = input.usage / 1024;
    let st = input.stat;
    let free = total.saturating_sub(usage);
    let reclaimable = st.active_file.saturating_add(st.inactive_file).saturating_add(st.slab_reclaimable) / 1024;
    let available = free.saturating_add(reclaimable).min(total);
    let (swap_total, swap_used) = swap_kb(input.host, input.swap);

    let mut out = String::with_capacity(input.host.len() + 64);
    for line in input.host.lines() {
        let label = line.split_once(':').map(|(k, _)| k).unwrap_or("");
        let value = match label {
            "MemTotal" => Some(total),
            "MemFree" => Some(free),
            "MemAvailable" => Some(available),
            "Buffers" | "SwapCached" | "ShmemHugePages" | "ShmemPmdMapped" => Some(0),
            "Cached" => Some(st.cache / 1024),
            "Active" => Some(st.active_anon.saturating_add(st.active_file) / 1024),
            "Inactive" => Some(st.inactive_anon.saturating_add(st.inactive_file) / 1024),
            "Active(anon)" => Some(st.active_anon / 1024),
            "Inactive(anon)" => Some(st.inactive_anon / 1024),
            "Active(file)" => Some(st.active_file / 1024),
            "Inactive(file)" => Some(st.inactive_file / 1024),
            "Unevictable" => Some(st.unevictable / 1024),
            "Dirty" => Some(st.dirty / 1024),
            "Writeback" => Some(st.writeback / 1024),
            "AnonPages" => {
                Some(st.active_anon.saturating_add(st.inactive_anon).saturating_sub(st.shmem) / 1024)
            }
            "Mapped" => Some(st.mapped / 1024),
            "Shmem" => Some(st.shmem / 1024),
            "Slab" => Some(st.slab / 1024),
            "SReclaimable" => Some(st.slab_reclaimable / 1024),
            "SUnreclaim" => Some(st.slab_unreclaimable / 1024),
            "AnonHugePages" => Some(st.anon_huge / 1024),
            "SwapTotal" => Some(swap_total),
            "SwapFree" => Some(swap_total - swap_used),
            "Zswap" | "Zswapped" => Some(0),
            _ => None,
        };
        match value {
            Some(v) => out.push_str(&kb_line(label, v)),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = include_str!("../testdata/meminfo");

    fn line<'a>(text: &'a str, label: &str) -> &'a str {
        let prefix = format!("{label}:");
        text.lines().find(|l| l.starts_with(&prefix)).unwrap()
    }

    #[test]
    fn limit_256m() {
        let stat = MemStat {
            cache: 100 << 20,
            shmem: 4 << 20,
            active_anon: 30 << 20,
            inactive_anon: 10 << 20,
            active_file: 60 << 20,
            inactive_file: 40 << 20,
            slab_reclaimable: 2 << 20,
            ..Default::default()
        };
        let out = render(&MemInput {
            host: HOST,
            limit: Some(268_435_456),
            usage: 150 << 20,
            swap: None,
            stat: &stat,
        });
        assert_eq!(line(&out, "MemTotal"), "MemTotal:         262144 kB");
        assert_eq!(line(&out, "MemFree"), "MemFree:          108544 kB");
        // free + (active_file + inactive_file + slab_reclaimable)
        assert_eq!(line(&out, "MemAvailable"), "MemAvailable:     212992 kB");
        assert_eq!(line(&out, "Buffers"), "Buffers:               0 kB");
        assert_eq!(line(&out, "Cached"), "Cached:           102400 kB");
        assert_eq!(line(&out, "Active"), "Active:            92160 kB");
        assert_eq!(line(&out, "Inactive(anon)"), "Inactive(anon):    10240 kB");
        assert_eq!(line(&out, "AnonPages"), "AnonPages:         36864 kB");
        assert_eq!(line(&out, "Shmem"), "Shmem:              4096 kB");
        assert_eq!(line(&out, "SwapTotal"), "SwapTotal:             0 kB");
        assert_eq!(line(&out, "SwapFree"), "SwapFree:              0 kB");
        // untouched host lines, same line count and order
        assert_eq!(line(&out, "VmallocTotal"), line(HOST, "VmallocTotal"));
        assert_eq!(line(&out, "HugePages_Total"), line(HOST, "HugePages_Total"));
        assert_eq!(out.lines().count(), HOST.lines().count());
        let labels = |t: &str| t.lines().map(|l| l.split(':').next().unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(labels(&out), labels(HOST));
        assert!(out.ends_with(" kB\n"));
    }

    #[test]
    fn unlimited_uses_host_total_and_limit_above_host_is_clamped() {
        let stat = MemStat::default();
        let host_total = host_value_kb(HOST, "MemTotal").unwrap();
        for limit in [None, Some(u64::MAX / 2)] {
            let out = render(&MemInput { host: HOST, limit, usage: 1 << 20, swap: None, stat: &stat });
            assert_eq!(line(&out, "MemTotal"), kb_line("MemTotal", host_total).trim_end());
            assert_eq!(host_value_kb(&out, "MemFree"), Some(host_total - 1024));
        }
    }

    #[test]
    fn usage_above_limit_saturates() {
        let stat = MemStat { active_file: 1 << 30, ..Default::default() };
        let out = render(&MemInput { host: HOST, limit: Some(1 << 20), usage: 2 << 20, swap: None, stat: &stat });
        assert_eq!(host_value_kb(&out, "MemFree"), Some(0));
        assert_eq!(host_value_kb(&out, "MemAvailable"), Some(1024));
    }

    #[test]
    fn huge_memory_stat_values_saturate() {
        // Found by the fuzzer (src/fuzz.rs): sums of memory.stat values overflowed (a panic in
        // debug builds, wrapped nonsense in release).
        let stat = MemStat { active_anon: u64::MAX, inactive_anon: u64::MAX, active_file: u64::MAX, inactive_file: 1, slab_reclaimable: u64::MAX, ..Default::default() };
        let out = render(&MemInput { host: HOST, limit: Some(1 << 30), usage: 0, swap: None, stat: &stat });
        assert_eq!(host_value_kb(&out, "Active"), Some(u64::MAX / 1024));
        assert_eq!(host_value_kb(&out, "MemAvailable"), Some(1 << 20));
        assert_eq!(out.lines().count(), HOST.lines().count());
    }

    #[test]
    fn swap_limits() {
        let host = HOST.replace("SwapTotal:             0 kB", "SwapTotal:       2097152 kB");
        assert_eq!(swap_kb(&host, None), (0, 0));
        assert_eq!(swap_kb(HOST, Some(SwapInfo { limit: None, usage: 0 })), (0, 0));
        assert_eq!(swap_kb(&host, Some(SwapInfo { limit: None, usage: 1 << 20 })), (2097152, 1024));
        assert_eq!(swap_kb(&host, Some(SwapInfo { limit: Some(512 << 20), usage: 0 })), (524288, 0));
        let out = render(&MemInput {
            host: &host,
            limit: Some(256 << 20),
            usage: 0,
            swap: Some(SwapInfo { limit: Some(512 << 20), usage: 100 << 20 }),
            stat: &MemStat::default(),
        });
        assert_eq!(line(&out, "SwapTotal"), "SwapTotal:        524288 kB");
        assert_eq!(line(&out, "SwapFree"), "SwapFree:         421888 kB");
    }
}
