//! One probe run seen from the host: the probe's two checkpoints (see host.rs).
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::host::{cgroup_file, cgroup_mounts, clock_offset, read, shift_clock, thp_selected, view, vmstat, wait_for, Plants, ProbeView, CGROUP_FILES, EXTRA_PLANTS, RESTORE, THP};

/// (before, after) of a host file or value during one probe run.
pub type Change = (String, String);

#[derive(Default)]
pub struct Findings {
    pub view: Option<ProbeView>,
    /// sysctl rel -> (the host's value while the probe ran, after)
    pub sysctls: BTreeMap<String, Change>,
    pub thp: Option<Change>,
    pub drop_slab: Option<(u64, u64)>,
    pub clock_jump: f64,
    /// release_agent file -> (before, after)
    pub release_agents: BTreeMap<String, Change>,
    pub agent_ran: Option<String>,
    /// CGROUP_FILES key -> (host path, before, after); absent key: no such file on this host
    pub cgroup: BTreeMap<String, (PathBuf, String, String)>,
    /// CGROUP_FILES key -> (host path, content) of the probe's own cgroup, at the second checkpoint
    pub own_cgroup: BTreeMap<String, (PathBuf, String)>,
    /// What the probe's fds point to at its second checkpoint (anon_inode:bpf-prog, ...)
    pub fds: Vec<String>,
    pub errors: Vec<String>,
}

fn write_restore(orig: &[(PathBuf, String)]) {
    let text: String = orig.iter().map(|(p, v)| format!("{}\t{v}\n", p.display())).collect();
    let _ = fs::write(RESTORE, text);
}

/// One probe run, seen from the host (hold [`lock`] from before the probe starts).
/// `container_cgroup`: /proc/<pid>/cgroup of the container (the outer one for dind).
/// `gone`: true once the probe's command has ended.
pub fn window(mode: &str, plants: &Plants, exe: (u64, u64), container_cgroup: &str, gone: &dyn Fn() -> bool) -> Findings {
    let mut f = Findings::default();
    let Some(pid) = wait_for("probe-host1", mode, exe, gone, Duration::from_secs(240)) else {
        f.errors.push(format!("{mode}: the probe never reached its first host checkpoint (not inspected on the host)"));
        return f;
    };
    f.view = Some(view(pid));
    // originals first (and remembered in /run), then the plants
    let mut orig: Vec<(PathBuf, String)> = Vec::new();
    let mut planted: BTreeMap<String, String> = BTreeMap::new();
    for p in &plants.sysctls {
        let path = PathBuf::from(format!("/proc/sys/{}", p.rel));
        if let Some(v) = read(&path) {
            orig.push((path, v));
        }
    }
    for (rel, _) in EXTRA_PLANTS {
        let path = PathBuf::from(format!("/proc/sys/{rel}"));
        if let Some(v) = read(&path) {
            orig.push((path, v));
        }
    }
    let thp_orig = read(THP).map(|_| thp_selected());
    let mut restore_list = orig.clone();
    if let Some(t) = &thp_orig {
        restore_list.push((PathBuf::from(THP), t.clone()));
    }
    write_restore(&restore_list);
    for p in &plants.sysctls {
        let path = format!("/proc/sys/{}", p.rel);
        if let (Some(v), true) = (&p.plant, Path::new(&path).exists()) {
            if let Err(e) = fs::write(&path, v) {
                f.errors.push(format!("{mode}: planting {path} = {v}: {e}"));
            }
        }
        if let Some(v) = read(&path) {
            planted.insert(p.rel.to_string(), v);
        }
    }
    for (rel, v) in EXTRA_PLANTS {
        let path = format!("/proc/sys/{rel}");
        if Path::new(&path).exists() {
            if let Err(e) = fs::write(&path, v) {
                f.errors.push(format!("{mode}: planting {path} = {v}: {e}"));
            }
        }
    }
    let thp_planted = plants.thp.as_ref().map(|(p, _, _)| {
        let _ = fs::write(THP, p);
        thp_selected()
    });
    let agents: BTreeMap<String, String> =
        cgroup_mounts().0.values().map(|mp| format!("{mp}/release_agent")).filter_map(|p| Some((p.clone(), read(&p)?))).collect();
    let cg: BTreeMap<String, (PathBuf, String)> = CGROUP_FILES
        .iter()
        .filter_map(|(k, ctl, v1, v2)| {
            let p = cgroup_file(container_cgroup, ctl, v1, *v2)?;
            let v = read(&p)?;
            Some((k.to_string(), (p, v)))
        })
        .collect();
    let slab = vmstat("drop_slab ");
    let clock = clock_offset();

    unsafe { libc::kill(pid as i32, libc::SIGUSR1) };
    let at2 = wait_for("probe-host2", mode, exe, gone, Duration::from_secs(120));
    if at2.is_none() {
        f.errors.push(format!("{mode}: the probe never reached its second host checkpoint"));
    }
    // read everything again, then restore
    if let Some(p) = at2 {
        f.fds = fs::read_dir(format!("/proc/{p}/fd")).map(|d| d.flatten().filter_map(|e| fs::read_link(e.path()).ok()).map(|l| l.display().to_string()).collect()).unwrap_or_default();
    }
    for (rel, before) in planted {
        let after = read(format!("/proc/sys/{rel}")).unwrap_or_default();
        f.sysctls.insert(rel, (before, after));
    }
    if let (Some(b), Some(_)) = (thp_planted, &thp_orig) {
        f.thp = Some((b, thp_selected()));
    }
    f.drop_slab = slab.zip(vmstat("drop_slab "));
    f.clock_jump = clock_offset() - clock;
    if f.clock_jump.abs() > 1.5 {
        shift_clock(-f.clock_jump);
    }
    for (p, before) in agents {
        let after = read(&p).unwrap_or_default();
        if after != before {
            let _ = fs::write(&p, if before.is_empty() { "\n".to_string() } else { before.clone() });
        }
        f.release_agents.insert(p, (before, after));
    }
    f.agent_ran = plants.agent_ran();
    for (k, (p, before)) in cg {
        let after = read(&p).unwrap_or_default();
        f.cgroup.insert(k, (p, before, after));
    }
    let own = f.view.as_ref().map(|v| v.cgroup.clone()).unwrap_or_default();
    for (k, ctl, v1, v2) in CGROUP_FILES {
        if let Some(p) = cgroup_file(&own, ctl, v1, *v2) {
            let v = read(&p).unwrap_or_default();
            f.own_cgroup.insert(k.to_string(), (p, v));
        }
    }
    for (p, v) in &orig {
        if read(p).as_deref() != Some(v.as_str()) {
            if let Err(e) = fs::write(p, v) {
                f.errors.push(format!("{mode}: restoring {} = {v}: {e}", p.display()));
            }
        }
    }
    if let Some(t) = thp_orig {
        let _ = fs::write(THP, t);
    }
    let _ = fs::remove_file(RESTORE);
    if let Some(p) = at2 {
        unsafe { libc::kill(p as i32, libc::SIGUSR1) };
    }
    f
}
