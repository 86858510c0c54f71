//! Reading a container's limits and usage from its cgroup, on cgroup v1
//! (each controller's own hierarchy, found in /proc/self/mountinfo) and v2.
//! On hybrid hosts a controller bound to a v1 hierarchy is read there; the
//! others from the cgroup2 mount. The parsers are pure and unit-tested.
//!
//! Errors: the container's cgroup directory missing (cgroup gone) or an
//! unreadable file is an error (the server answers EIO); a controller that is
//! not mounted, or a file the kernel does not provide (memsw without
//! swapaccount, a disabled v2 controller), is `None` and the host's values are
//! shown instead.

use std::path::{Path, PathBuf};

use super::fdcache::FdCache;
use super::render::meminfo::{MemStat, SwapInfo};
use super::render::parse_cpu_list;
use super::FuseError;

/// Values at or above this are "unlimited" (v1 reports 0x7FFFFFFFFFFFF000).
const UNLIMITED: u64 = 1 << 62;

#[derive(Debug, Clone, PartialEq, Eq)]
struct V1Mount {
    controllers: Vec<String>,
    mountpoint: PathBuf,
    root: String,
}

/// cgroup mounts as seen in a mountinfo text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    v1: Vec<V1Mount>,
    v2: Option<(PathBuf, String)>,
}

/// Parses /proc/self/mountinfo for cgroup and cgroup2 mounts (the first
/// mount of each hierarchy wins).
pub fn parse_mountinfo(text: &str) -> Mounts {
    let mut m = Mounts::default();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let (root, mountpoint) = (unescape(l[3]), PathBuf::from(unescape(l[4])));
        match r[0] {
            "cgroup2" if m.v2.is_none() => m.v2 = Some((mountpoint, root)),
            "cgroup" => {
                let controllers: Vec<String> = r[2]
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                    .map(String::from)
                    .collect();
                if !m.v1.iter().any(|v| v.controllers == controllers) {
                    m.v1.push(V1Mount { controllers, mountpoint, root });
                }
            }
            _ => {}
        }
    }
    m
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// Parses a limit: `max`, `-1` or a huge value is `None` (unlimited).
pub fn parse_limit(text: &str) -> Result<Option<u64>, FuseError> {
    let t = text.trim();
    if t == "max" || t == "-1" {
        return Ok(None);
    }
    let v: u64 = t.parse().map_err(|_| FuseError::Parse { what: "limit", value: t.to_string() })?;
    Ok((v < UNLIMITED).then_some(v))
}

pub fn parse_u64(text: &str) -> Result<u64, FuseError> {
    let t = text.trim();
    t.parse().map_err(|_| FuseError::Parse { what: "integer", value: t.to_string() })
}

fn stat_fields(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|l| {
        let (k, v) = l.split_once(' ')?;
        Some((k, v.trim().parse().ok()?))
    })
}

/// memory.stat (v1 hierarchical `total_*` names, or v2 names) into [`MemStat`].
pub fn parse_memory_stat(text: &str, v2: bool) -> MemStat {
    let mut s = MemStat::default();
    for (k, v) in stat_fields(text) {
        let key = if v2 { Some(k) } else { k.strip_prefix("total_") };
        let Some(key) = key else { continue };
        let slot = match (key, v2) {
            ("cache", false) | ("file", true) => &mut s.cache,
            ("shmem", _) => &mut s.shmem,
            ("mapped_file", false) | ("file_mapped", true) => &mut s.mapped,
            ("dirty", false) | ("file_dirty", true) => &mut s.dirty,
            ("writeback", false) | ("file_writeback", true) => &mut s.writeback,
            ("active_anon", _) => &mut s.active_anon,
            ("inactive_anon", _) => &mut s.inactive_anon,
            ("active_file", _) => &mut s.active_file,
            ("inactive_file", _) => &mut s.inactive_file,
            ("unevictable", _) => &mut s.unevictable,
            ("slab", true) => &mut s.slab,
            ("slab_reclaimable", true) => &mut s.slab_reclaimable,
            ("slab_unreclaimable", true) => &mut s.slab_unreclaimable,
            ("rss_huge", false) | ("anon_thp", true) => &mut s.anon_huge,
            _ => continue,
        };
        *slot = v;
    }
    s
}

/// v1 memory.stat `hierarchical_memory_limit` / `hierarchical_memsw_limit`.
pub fn v1_hierarchical_limit(stat: &str, key: &str) -> Option<u64> {
    stat_fields(stat).find(|(k, _)| *k == key).map(|(_, v)| v).filter(|v| *v < UNLIMITED)
}

/// v2 cpu.max (`max 100000` / `50000 100000`) as a cpu count.
pub fn parse_cpu_max(text: &str) -> Result<Option<f64>, FuseError> {
    let bad = || FuseError::Parse { what: "cpu.max", value: text.trim().to_string() };
    let mut it = text.split_whitespace();
    let quota = it.next().ok_or_else(bad)?;
    let period: u64 = it.next().unwrap_or("100000").parse().map_err(|_| bad())?;
    if quota == "max" {
        return Ok(None);
    }
    let quota: u64 = quota.parse().map_err(|_| bad())?;
    Ok((period > 0).then(|| quota as f64 / period as f64))
}

/// Cpu ids at or above this are refused (the kernel's NR_CPUS is at most 8192).
const MAX_CPUS: usize = 1 << 16;

/// v1 cpuacct.usage_all: `cpu user system` then one line per cpu (ns).
pub fn parse_cpuacct_usage_all(text: &str) -> Result<Vec<(u64, u64)>, FuseError> {
    let mut out = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = || FuseError::Parse { what: "cpuacct.usage_all line", value: line.to_string() };
        if f.len() != 3 {
            return Err(bad());
        }
        // A cpu id beyond any kernel's NR_CPUS would size the vector from the file's text.
        let cpu: usize = f[0].parse().ok().filter(|&c| c < MAX_CPUS).ok_or_else(bad)?;
        let vals = (f[1].parse().map_err(|_| bad())?, f[2].parse().map_err(|_| bad())?);
        if out.len() <= cpu {
            out.resize(cpu + 1, (0, 0));
        }
        out[cpu] = vals;
    }
    Ok(out)
}

/// v2 cpu.stat: (user_ns, system_ns).
pub fn parse_cpu_stat_v2(text: &str) -> (u64, u64) {
    let get = |key: &str| stat_fields(text).find(|(k, _)| *k == key).map_or(0, |(_, v)| v);
    (get("user_usec").saturating_mul(1000), get("system_usec").saturating_mul(1000))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memory {
    pub limit: Option<u64>,
    pub usage: u64,
    pub swap: Option<SwapInfo>,
    pub stat: MemStat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuUsage {
    pub user_ns: u64,
    pub system_ns: u64,
    /// Per physical cpu (user, system) ns; v1 only.
    pub per_cpu: Option<Vec<(u64, u64)>>,
}

/// A container's cgroup, resolved against the host's cgroup mounts.
#[derive(Debug, Clone)]
pub struct Cgroup {
    path: String,
    mounts: Mounts,
    /// Kept descriptors of the cgroup files read (see `fdcache`).
    files: FdCache,
}

impl Cgroup {
    /// `mounts`: mountinfo lines of the host's cgroup mounts, or `None` to read
    /// /proc/self/mountinfo.
    pub fn new(cgroup_path: &str, mounts: Option<&str>) -> Result<Self, FuseError> {
        if let Some(text) = mounts {
            return Ok(Self::with_mounts(cgroup_path, parse_mountinfo(text)));
        }
        let p = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(p).map_err(|source| FuseError::Read { path: p.into(), source })?;
        Ok(Self::with_mounts(cgroup_path, parse_mountinfo(&text)))
    }

    pub fn with_mounts(cgroup_path: &str, mounts: Mounts) -> Self {
        Self { path: cgroup_path.to_string(), mounts, files: FdCache::default() }
    }

    pub fn mounts(&self) -> &Mounts {
        &self.mounts
    }

    /// The cgroup's path (`/docker/<id>`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// (cgroup dir, mount dir, is v2) for a controller, or None if not mounted.
    /// Errors when the container's directory is gone.
    pub fn dir(&self, controller: &str) -> Result<Option<(PathBuf, PathBuf, bool)>, FuseError> {
        let (mnt, root, v2) = match self.mounts.v1.iter().find(|m| m.controllers.iter().any(|c| c == controller)) {
            Some(m) => (&m.mountpoint, &m.root, false),
            None => match &self.mounts.v2 {
                Some((mp, root)) => (mp, root, true),
                None => return Ok(None),
            },
        };
        let rel = self.path.trim_start_matches('/');
        let root_rel = root.trim_start_matches('/');
        let rel = match rel.strip_prefix(root_rel) {
            Some(r) if !root_rel.is_empty() && (r.is_empty() || r.starts_with('/')) => r.trim_start_matches('/'),
            _ => rel,
        };
        let dir = if rel.is_empty() { mnt.clone() } else { mnt.join(rel) };
        if !dir.is_dir() {
            // On hybrid hosts the runtime creates the cgroup in the v1
            // hierarchies only: a missing dir in the mostly empty cgroup2
            // mount means "not available", not "gone".
            let hybrid = v2 && self.mounts.v1.iter().any(|m| !m.controllers.is_empty());
            return if hybrid { Ok(None) } else { Err(FuseError::CgroupGone { path: dir }) };
        }
        Ok(Some((dir, mnt.clone(), v2)))
    }

    /// Minimum limit over the cgroup and its ancestors (up to the mount).
    fn min_limit(&self, dir: &Path, mnt: &Path, file: &str) -> Result<Option<u64>, FuseError> {
        let mut best: Option<u64> = None;
        let mut cur = Some(dir);
        while let Some(d) = cur.filter(|d| d.starts_with(mnt)) {
            if let Some(text) = self.files.read_opt(&d.join(file))? {
                if let Some(v) = parse_limit(&text)? {
                    best = Some(best.map_or(v, |b| b.min(v)));
                }
            }
            cur = d.parent();
        }
        Ok(best)
    }

    pub fn memory(&self) -> Result<Option<Memory>, FuseError> {
        let Some((dir, mnt, v2)) = self.dir("memory")? else { return Ok(None) };
        let usage_file = if v2 { "memory.current" } else { "memory.usage_in_bytes" };
        let Some(usage) = self.files.read_opt(&dir.join(usage_file))? else { return Ok(None) };
        let usage = parse_u64(&usage)?;
        let stat_text = self.files.read_opt(&dir.join("memory.stat"))?.unwrap_or_default();
        let stat = parse_memory_stat(&stat_text, v2);
        let (limit, swap) = if v2 {
            let limit = self.min_limit(&dir, &mnt, "memory.max")?;
            let swap = match self.files.read_opt(&dir.join("memory.swap.current"))? {
                Some(cur) => Some(SwapInfo {
                    limit: self.min_limit(&dir, &mnt, "memory.swap.max")?,
                    usage: parse_u64(&cur)?,
                }),
                None => None,
            };
            (limit, swap)
        } else {
            let own = self.min_limit(&dir, &dir, "memory.limit_in_bytes")?;
            let hier = v1_hierarchical_limit(&stat_text, "hierarchical_memory_limit");
            let limit = [own, hier].into_iter().flatten().min();
            let swap = match self.files.read_opt(&dir.join("memory.memsw.usage_in_bytes"))? {
                Some(cur) => {
                    let own = self.min_limit(&dir, &dir, "memory.memsw.limit_in_bytes")?;
                    let hier = v1_hierarchical_limit(&stat_text, "hierarchical_memsw_limit");
                    let memsw = [own, hier].into_iter().flatten().min();
                    Some(SwapInfo {
                        limit: memsw.map(|ms| ms.saturating_sub(limit.unwrap_or(ms))),
                        usage: parse_u64(&cur)?.saturating_sub(usage),
                    })
                }
                None => None,
            };
            (limit, swap)
        };
        Ok(Some(Memory { limit, usage, swap, stat }))
    }

    /// The cgroup's effective cpuset, `None` if unknown or empty.
    pub fn cpuset(&self) -> Result<Option<Vec<usize>>, FuseError> {
        let Some((dir, _, v2)) = self.dir("cpuset")? else { return Ok(None) };
        let files: &[&str] = if v2 { &["cpuset.cpus.effective"] } else { &["cpuset.effective_cpus", "cpuset.cpus"] };
        for f in files {
            if let Some(text) = self.files.read_opt(&dir.join(f))? {
                let cpus = parse_cpu_list(&text)?;
                if !cpus.is_empty() {
                    return Ok(Some(cpus));
                }
            }
        }
        Ok(None)
    }

    /// CFS quota as a cpu count (quota/period), minimum over ancestors.
    pub fn cpu_quota(&self) -> Result<Option<f64>, FuseError> {
        let Some((dir, mnt, v2)) = self.dir("cpu")? else { return Ok(None) };
        let mut best: Option<f64> = None;
        let mut cur = Some(dir.as_path());
        while let Some(d) = cur.filter(|d| d.starts_with(&mnt)) {
            let q = if v2 {
                match self.files.read_opt(&d.join("cpu.max"))? {
                    Some(t) => parse_cpu_max(&t)?,
                    None => None,
                }
            } else {
                match (self.files.read_opt(&d.join("cpu.cfs_quota_us"))?, self.files.read_opt(&d.join("cpu.cfs_period_us"))?) {
                    (Some(q), Some(p)) => match (parse_limit(&q)?, parse_u64(&p)?) {
                        (Some(q), p) if p > 0 => Some(q as f64 / p as f64),
                        _ => None,
                    },
                    _ => None,
                }
            };
            if let Some(q) = q {
                best = Some(best.map_or(q, |b: f64| b.min(q)));
            }
            cur = d.parent();
        }
        Ok(best)
    }

    pub fn cpu_usage(&self) -> Result<Option<CpuUsage>, FuseError> {
        let (ctrl, v2_file) = ("cpuacct", "cpu.stat");
        let Some((dir, _, v2)) = self.dir(ctrl)? else { return Ok(None) };
        if v2 {
            return Ok(self.files.read_opt(&dir.join(v2_file))?.map(|t| {
                let (user_ns, system_ns) = parse_cpu_stat_v2(&t);
                CpuUsage { user_ns, system_ns, per_cpu: None }
            }));
        }
        if let Some(t) = self.files.read_opt(&dir.join("cpuacct.usage_all"))? {
            let per = parse_cpuacct_usage_all(&t)?;
            let (u, s) = per.iter().fold((0u64, 0u64), |(a, b), (u, s)| (a.saturating_add(*u), b.saturating_add(*s)));
            return Ok(Some(CpuUsage { user_ns: u, system_ns: s, per_cpu: Some(per) }));
        }
        match self.files.read_opt(&dir.join("cpuacct.usage"))? {
            Some(t) => Ok(Some(CpuUsage { user_ns: parse_u64(&t)?, system_ns: 0, per_cpu: None })),
            None => Ok(None),
        }
    }

    pub fn pids_current(&self) -> Result<Option<u64>, FuseError> {
        let Some((dir, _, _)) = self.dir("pids")? else { return Ok(None) };
        self.files.read_opt(&dir.join("pids.current"))?.map(|t| parse_u64(&t)).transpose()
    }
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;
