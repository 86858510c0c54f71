//! Glue between the host's files, the container's cgroup and the pure
//! renderers: produces the bytes of one emulated file.

use std::path::PathBuf;
use std::time::SystemTime;

use super::cgroup::Cgroup;
use super::fdcache::FdCache;
use super::reader;
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
    /// The container's cgroup (see `reader` for whose figures a reader gets).
    pub cgroup: Cgroup,
    /// The container's creation: its uptime while its init is unknown.
    pub start_time: SystemTime,
    /// The container's init (host pid), if known.
    pub init_pid: Option<i32>,
    /// Kept descriptors of the host files read (see `fdcache`).
    pub files: FdCache,
}

/// Whose figures one render shows (see `reader`): the cgroups chosen for the reader.
pub struct Scope<'a> {
    /// Memory figures and the task count.
    pub memory: &'a Cgroup,
    /// Cpus and cpu time.
    pub cpu: &'a Cgroup,
    /// Start of the init whose age is the uptime (clock ticks since boot); None: `start_time`.
    pub start: Option<u64>,
}

impl Sources {
    fn host(&self, name: &str) -> Result<String, FuseError> {
        self.files.read(&self.host_proc.join(name))
    }

    /// Physical cpus cgroup `cg` sees, and whether that is its whole cpuset.
    fn visible_cpus(&self, cg: &Cgroup, host_stat: &str) -> Result<(Vec<usize>, bool), FuseError> {
        let host = render::host_cpus_from_stat(host_stat);
        let cpuset = cg.cpuset()?;
        let quota = cg.cpu_quota()?;
        let visible = render::visible_cpus(&host, cpuset.as_deref(), quota);
        let whole = visible.len() == cpuset.as_ref().map_or(host.len(), |c| c.len());
        Ok((visible, whole))
    }

    pub fn render(&self, kind: Kind, scope: &Scope) -> Result<Vec<u8>, FuseError> {
        let (mem, cpu) = (scope.memory, scope.cpu);
        let text = match kind {
            Kind::Meminfo => {
                let host = self.host("meminfo")?;
                match mem.memory()? {
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
                let (visible, _) = self.visible_cpus(cpu, &self.host("stat")?)?;
                render::cpuinfo::render(&self.host("cpuinfo")?, &visible)
            }
            Kind::Stat => {
                let host = self.host("stat")?;
                let (visible, whole) = self.visible_cpus(cpu, &host)?;
                let usage = cpu.cpu_usage()?.map(|u| {
                    stat::distribute_usage(&visible, whole, u.per_cpu.as_deref(), u.user_ns, u.system_ns)
                });
                stat::render(&host, &visible, usage.as_deref())
            }
            Kind::Uptime => {
                let (visible, _) = self.visible_cpus(cpu, &self.host("stat")?)?;
                let busy = cpu.cpu_usage()?.map_or(0.0, |u| u.user_ns.saturating_add(u.system_ns) as f64 / 1e9);
                misc::uptime(reader::age(scope.start, self.start_time), busy, visible.len())
            }
            Kind::Loadavg => misc::loadavg(&self.host("loadavg")?, mem.pids_current()?),
            Kind::Swaps => {
                let host = self.host("swaps")?;
                let (total, used) = match mem.memory()? {
                    Some(m) => meminfo::swap_kb(&self.host("meminfo")?, m.swap),
                    None => return Ok(host.into_bytes()),
                };
                misc::swaps(&host, total, used)
            }
            Kind::Diskstats => misc::diskstats(&self.host("diskstats")?),
            Kind::CpuOnline => misc::cpu_online(self.visible_cpus(cpu, &self.host("stat")?)?.0.len()),
        };
        Ok(text.into_bytes())
    }
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
    }
}
