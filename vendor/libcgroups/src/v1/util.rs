use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use pathrs::flags::OpenFlags;
use pathrs::procfs::{ProcfsBase, ProcfsHandle};
use procfs::ProcError;
use procfs::process::MountInfo;

use super::ControllerType;
use super::controller_type::CONTROLLERS;

#[derive(thiserror::Error, Debug)]
pub enum V1MountPointError {
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("failed to get mountinfo: {0}")]
    MountInfo(ProcError),
    #[error("could not find mountpoint for {subsystem}")]
    NotFound { subsystem: ControllerType },
    #[error(transparent)]
    Pathrs(#[from] pathrs::error::Error),
}

/// nestrun patch 1: the `cgroup` entries of /proc/self/mountinfo, read once per process.
/// Upstream re-read and parsed the whole mountinfo for every subsystem (12 reads per cgroup
/// manager, one manager in each of create's processes and in delete): O(host mounts) each, and
/// a host running many containers has thousands. The hierarchies do not move while a runtime
/// command runs. Lines are filtered by their file system type before they are parsed.
static CACHE: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();

/// nestrun patch 1: a caller that has read the mount table already hands over the mount points
/// of its `cgroup` (v1) entries, so the table is not read again. No-op once the cache is set.
pub fn seed_mount_points(points: Vec<PathBuf>) {
    let _ = CACHE.set(points);
}

fn cgroup_mount_points() -> Result<&'static [PathBuf], V1MountPointError> {
    if let Some(v) = CACHE.get() {
        return Ok(v);
    }
    let reader = BufReader::new(ProcfsHandle::new()?.open(
        ProcfsBase::ProcSelf,
        "mountinfo",
        OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC,
    )?);
    let mut points = Vec::new();
    for line in reader.lines() {
        let line = line?;
        if !line.contains(" - cgroup ") {
            continue;
        }
        let m = MountInfo::from_line(&line).map_err(V1MountPointError::MountInfo)?;
        if m.fs_type == "cgroup" {
            points.push(m.mount_point);
        }
    }
    Ok(CACHE.get_or_init(|| points))
}

/// List all cgroup v1 subsystem mount points on the system. This can include unsupported
/// subsystems, comounted controllers and named hierarchies.
pub fn list_subsystem_mount_points() -> Result<Vec<PathBuf>, V1MountPointError> {
    Ok(cgroup_mount_points()?.to_vec())
}

/// List the mount points of all currently supported cgroup subsystems.
pub fn list_supported_mount_points() -> Result<HashMap<ControllerType, PathBuf>, V1MountPointError>
{
    let mut mount_paths = HashMap::with_capacity(CONTROLLERS.len());

    for controller in CONTROLLERS {
        if let Ok(mount_point) = get_subsystem_mount_point(controller) {
            mount_paths.insert(controller.to_owned(), mount_point);
        }
    }

    Ok(mount_paths)
}

pub fn get_subsystem_mount_point(subsystem: &ControllerType) -> Result<PathBuf, V1MountPointError> {
    let subsystem_name = subsystem.to_string();
    cgroup_mount_points()?
        .iter()
        .find(|mount_point| {
            // Some systems mount net_prio and net_cls in the same directory
            // other systems mount them in their own directories. This
            // should handle both cases.
            match subsystem_name.as_str() {
                "net_cls" => ["net_cls,net_prio", "net_prio,net_cls", "net_cls"]
                    .iter()
                    .any(|s| mount_point.ends_with(s)),
                "net_prio" => ["net_cls,net_prio", "net_prio,net_cls", "net_prio"]
                    .iter()
                    .any(|s| mount_point.ends_with(s)),
                "cpu" => ["cpu,cpuacct", "cpu"]
                    .iter()
                    .any(|s| mount_point.ends_with(s)),
                "cpuacct" => ["cpu,cpuacct", "cpuacct"]
                    .iter()
                    .any(|s| mount_point.ends_with(s)),
                _ => mount_point.ends_with(&subsystem_name),
            }
        })
        .cloned()
        .ok_or(V1MountPointError::NotFound {
            subsystem: *subsystem,
        })
}

/// nestrun patch 2: puts `pid` into the v1 cgroup at `dir`. A single-threaded process moving
/// itself (libcontainer's intermediate process, always: a clone child has one thread) writes
/// "0" to `tasks`: the kernel then moves just the calling thread and skips the global
/// threadgroup lock that a `cgroup.procs` write takes for writing, which (unless the
/// hierarchy is mounted with `favordynmods`) first waits for an RCU grace period: 7-16 ms on
/// the first move of every container start, measured on Linux 6.18, against 0.02-0.2 ms.
/// For a process with one thread, moving that thread is moving the process.
pub fn attach_task(pid: nix::unistd::Pid, dir: &std::path::Path) -> Result<(), crate::common::WrappedIoError> {
    if pid == nix::unistd::getpid() && single_threaded() {
        return crate::common::write_cgroup_file_str(dir.join("tasks"), "0");
    }
    crate::common::write_cgroup_file(dir.join(crate::common::CGROUP_PROCS), pid)
}

/// Whether this process has exactly one thread (field 20 of /proc/self/stat).
fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(17).map(|n| n == "1")))
        .unwrap_or(false)
}
