//! Glue between the host's files, the container's cgroup and the pure
//! renderers: produces the bytes of one emulated file.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::cgroup::Cgroup;
use super::fdcache::FdCache;
use super::render::{self, meminfo, misc, stat};
use super::FuseError;

/// The dynamic (rendered) files, relative to the FUSE root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Meminfo,
    Cpuinfo,
    Stat,
    Uptime,
    Loadavg,
    Swaps,
    Diskstats,
    CpuOnline,
}

pub const FILES: &[(&str, Kind)] = &[
    ("proc/meminfo", Kind::Meminfo),
    ("proc/cpuinfo", Kind::Cpuinfo),
    ("proc/stat", Kind::Stat),
    ("proc/uptime", Kind::Uptime),
    ("proc/loadavg", Kind::Loadavg),
    ("proc/swaps", Kind::Swaps),
    ("proc/diskstats", Kind::Diskstats),
    ("sys/devices/system/cpu/online", Kind::CpuOnline),
];

/// Everything a render needs besides the pure functions.
#[derive(Debug)]
pub struct Sources {
    /// Where the host's proc files are read ("/proc"; a fixture dir in tests).
    pub host_proc: PathBuf,
    pub cgroup: Cgroup,
    pub start_time: SystemTime,
    pub init_pid: Option<i32>,
    /// Kept descriptors of the host files read (see `fdcache`).
    pub files: FdCache,
}

impl Sources {
    fn host(&self, name: &str) -> Result<String, FuseError> {
        self.files.read(&self.host_proc.join(name))
    }

    /// Physical cpus the container sees, and whether that is its whole cpuset.
    fn visible_cpus(&self, host_stat: &str) -> Result<(Vec<usize>, bool), FuseError> {
        let host = render::host_cpus_from_stat(host_stat);
        let cpuset = self.cgroup.cpuset()?;
        let quota = self.cgroup.cpu_quota()?;
        let visible = render::visible_cpus(&host, cpuset.as_deref(), quota);
        let whole = visible.len() == cpuset.as_ref().map_or(host.len(), |c| c.len());
        Ok((visible, whole))
    }

    /// Seconds since the container started: from the init process's start
    /// (boot-relative, immune to wall-clock steps) when known, else from the
    /// configured start time.
    fn age(&self) -> f64 {
        if let Some(age) = self.init_pid.and_then(|pid| init_age(pid, &self.files)) {
            return age;
        }
        SystemTime::now().duration_since(self.start_time).unwrap_or(Duration::ZERO).as_secs_f64()
    }

    pub fn render(&self, kind: Kind) -> Result<Vec<u8>, FuseError> {
        let text = match kind {
            Kind::Meminfo => {
                let host = self.host("meminfo")?;
                match self.cgroup.memory()? {
                    None => host,
                    Some(m) => meminfo::render(&meminfo::MemInput {
                        host: &host,
                        limit: m.limit,
                        usage: m.usage,
                        swap: m.swap,
                        stat: &m.stat,
                    }),
                }
            }
            Kind::Cpuinfo => {
                let (visible, _) = self.visible_cpus(&self.host("stat")?)?;
                render::cpuinfo::render(&self.host("cpuinfo")?, &visible)
            }
            Kind::Stat => {
                let host = self.host("stat")?;
                let (visible, whole) = self.visible_cpus(&host)?;
                let usage = self.cgroup.cpu_usage()?.map(|u| {
                    stat::distribute_usage(&visible, whole, u.per_cpu.as_deref(), u.user_ns, u.system_ns)
                });
                stat::render(&host, &visible, usage.as_deref())
            }
            Kind::Uptime => {
                let (visible, _) = self.visible_cpus(&self.host("stat")?)?;
                let busy = self.cgroup.cpu_usage()?.map_or(0.0, |u| u.user_ns.saturating_add(u.system_ns) as f64 / 1e9);
                misc::uptime(self.age(), busy, visible.len())
            }
            Kind::Loadavg => misc::loadavg(&self.host("loadavg")?, self.cgroup.pids_current()?),
            Kind::Swaps => {
                let host = self.host("swaps")?;
                let (total, used) = match self.cgroup.memory()? {
                    Some(m) => meminfo::swap_kb(&self.host("meminfo")?, m.swap),
                    None => return Ok(host.into_bytes()),
                };
                misc::swaps(&host, total, used)
            }
            Kind::Diskstats => misc::diskstats(&self.host("diskstats")?),
            Kind::CpuOnline => misc::cpu_online(self.visible_cpus(&self.host("stat")?)?.0.len()),
        };
        Ok(text.into_bytes())
    }
}

/// Age in seconds of a process, from /proc/<pid>/stat's starttime and
/// CLOCK_BOOTTIME. None if the process is gone.
fn init_age(pid: i32, files: &FdCache) -> Option<f64> {
    let text = files.read_opt(Path::new(&format!("/proc/{pid}/stat"))).ok()??;
    let start_ticks = parse_starttime(&text)?;
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec owned by this frame.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return None;
    }
    let now = ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9;
    Some((now - start_ticks as f64 / render::USER_HZ as f64).max(0.0))
}

/// Field 22 (starttime) of /proc/<pid>/stat; comm may contain spaces/parens.
pub fn parse_starttime(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // after ")" come fields 3.. ; starttime is field 22 -> index 19
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starttime_field() {
        let s = "1234 (my (weird) comm) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 12345 100";
        assert_eq!(parse_starttime(s), Some(987654));
        assert_eq!(parse_starttime("garbage"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_starttime(&own).is_some());
        assert!(init_age(std::process::id() as i32, &FdCache::default()).unwrap() >= 0.0);
    }
}
