//! Orphans: what nestrun made for containers whose state is lost (a `--root` removed without
//! `delete`, an engine's state wiped, a create killed and never retried), found without the
//! state dir and reclaimed with the pieces of `teardown`.
//!
//! A container is live while its sidecar dir (`<root>/.nestrun/<id>`) exists, whatever its root.
//! The live ones are known from the record mirrors beside the mount dirs (every container since
//! the mirror exists) and from the uid lease lines (each names its owner's sidecar dir). Every
//! resource is traced to its container: the mirror names the root, id, cgroup, lease and data
//! dirs; a mount dir and a fallback data dir are named `<id>-<fnv(root)>`; a FUSE server's
//! command line names its mount dir; nestrun's own cgroups are `/nestrun/<id>`. Anything that
//! maps to a live container, or to no nestrun container at all, is never touched.
//!
//! The scan lists resources first and reads the mirrors and leases after: a create writes its
//! sidecar dir and mirror before it makes anything else, so a container being created while
//! the scan runs is seen as live.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::teardown;
use crate::host::cgroup;
use crate::sidecar::{self, Record};

/// One resource `gc` would reclaim (or reclaimed), and why.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: &'static str,
    pub resource: String,
    /// `<id> in <root>` when the resource is traced to a container.
    pub container: Option<String>,
    pub reason: String,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    pub findings: Vec<Finding>,
    /// Containers known only by their mirror whose state dir is gone.
    orphans: Vec<Record>,
    servers: Vec<(i32, PathBuf)>,
    mount_dirs: Vec<PathBuf>,
    cgroups: Vec<PathBuf>,
    data_dirs: Vec<PathBuf>,
    /// (lease file, owner line) whose owner's state dir is gone.
    leases: Vec<(PathBuf, PathBuf)>,
}

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default))
}

fn lease_dir() -> PathBuf {
    env_path("NESTRUN_LEASE_DIR", crate::subid::DEFAULT_LEASE_DIR)
}

fn data_base() -> PathBuf {
    env_path("NESTRUN_DATA_DIR", "/var/lib/nestrun/data")
}

fn entries(dir: &Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(dir).map(|r| r.flatten().filter(|e| !e.file_name().as_encoded_bytes().starts_with(b".")).collect()).unwrap_or_default()
}

fn is_dir(e: &std::fs::DirEntry) -> bool {
    e.file_type().is_ok_and(|t| t.is_dir())
}

/// `nestrun fuse-serve` processes and their mount points.
pub fn servers() -> Vec<(i32, PathBuf)> {
    let mut v = Vec::new();
    for e in entries(Path::new("/proc")) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if !args.iter().any(|a| *a == b"fuse-serve") {
            continue;
        }
        let mp = args.iter().find_map(|a| a.strip_prefix(b"--mountpoint="));
        if let Some(mp) = mp {
            v.push((pid, PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(mp))));
        }
    }
    v
}

/// Pids in a cgroup and below it, in every hierarchy.
pub fn cgroup_pids(cg: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for h in cgroup::hierarchies() {
        let mut stack = vec![cgroup::dir_in(&h.mount_point, cg)];
        while let Some(d) = stack.pop() {
            let text = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            pids.extend(text.lines().filter_map(|l| l.parse::<i32>().ok()));
            stack.extend(entries(&d).iter().filter(|e| is_dir(e)).map(|e| e.path()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn cgroup_exists(cg: &Path) -> bool {
    cgroup::hierarchies().iter().any(|h| cgroup::dir_in(&h.mount_point, cg).is_dir())
}

/// The owner lines of a lease file.
fn lease_owners(file: &Path) -> Vec<PathBuf> {
    String::from_utf8_lossy(&std::fs::read(file).unwrap_or_default()).lines().filter(|l| !l.is_empty()).map(PathBuf::from).collect()
}

/// (root, id) of a sidecar dir `<root>/.nestrun/<id>`.
fn split_state_dir(sdir: &Path) -> Option<(PathBuf, String)> {
    let id = sdir.file_name()?.to_str()?.to_string();
    let dot = sdir.parent()?;
    (dot.file_name()? == sidecar::DIR).then(|| (dot.parent().unwrap_or(Path::new("/")).to_path_buf(), id))
}

fn who(root: &Path, id: &str) -> String {
    format!("{id} in {}", root.display())
}

/// Find every orphaned resource on this host. Reads only.
pub fn scan() -> Scan {
    let base = sidecar::mnt_base();
    // 1. Resources (before the live set: see the module comment).
    let servers = servers();
    let mnt = entries(&base);
    let mut nestrun_cgroups: Vec<PathBuf> = Vec::new();
    for h in cgroup::hierarchies() {
        for e in entries(&cgroup::dir_in(&h.mount_point, Path::new("/nestrun"))).iter().filter(|e| is_dir(e)) {
            let cg = Path::new("/nestrun").join(e.file_name());
            if !nestrun_cgroups.contains(&cg) {
                nestrun_cgroups.push(cg);
            }
        }
    }
    let data = entries(&data_base());
    let leases: Vec<PathBuf> = entries(&lease_dir()).iter().map(|e| e.path()).collect();
    // 2. Who is live, and the orphans that still have a mirror.
    let mut live_keys: HashSet<String> = HashSet::new();
    let mut live_ids: HashSet<String> = HashSet::new();
    let mut live_cgroups: HashSet<PathBuf> = HashSet::new();
    let mut orphans = Vec::new();
    for e in entries(&base).iter().filter(|e| e.file_name().to_string_lossy().ends_with(sidecar::MIRROR_EXT)) {
        let Some(rec) = Record::load_file(&e.path()) else { continue };
        let Some(root) = rec.root.clone() else { continue };
        if sidecar::dir(&root, &rec.id).exists() {
            live_keys.insert(sidecar::key(&root, &rec.id));
            live_ids.insert(rec.id.clone());
            live_cgroups.extend(rec.cgroup_path.clone());
        } else {
            orphans.push(rec);
        }
    }
    for owner in leases.iter().flat_map(|f| lease_owners(f)) {
        if let Some((root, id)) = split_state_dir(&owner).filter(|_| owner.exists()) {
            live_keys.insert(sidecar::key(&root, &id));
            live_ids.insert(id);
        }
    }
    // 3. The orphans' resources, each traced through its mirror.
    let mut s = Scan::default();
    let mut orphan_keys = HashSet::new();
    let mut orphan_leases: HashSet<(PathBuf, PathBuf)> = HashSet::new();
    for rec in &mut orphans {
        let root = rec.root.clone().unwrap_or_default();
        let (key, c) = (sidecar::key(&root, &rec.id), who(&root, &rec.id));
        let sdir = sidecar::dir(&root, &rec.id);
        let lost = format!("its state dir {} is gone", sdir.display());
        orphan_keys.insert(key.clone());
        let mut add = |kind, resource: String, why: &str| {
            s.findings.push(Finding { kind, resource, container: Some(c.clone()), reason: format!("{lost}{why}") })
        };
        if rec.cgroup_path.as_ref().is_some_and(|cg| live_cgroups.contains(cg)) {
            rec.cgroup_path = None; // shared with a live container: never ours to empty
        }
        if let Some(cg) = &rec.cgroup_path {
            for pid in cgroup_pids(cg) {
                add("process", format!("pid {pid}"), &format!("; still runs in {}", cg.display()));
            }
            if cgroup_exists(cg) {
                add("cgroup", cg.display().to_string(), "");
            }
        }
        let own_server = |pid: i32, mp: &Path| rec.fuse_pid == Some(pid) || mp.parent().is_some_and(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == key));
        for (pid, mp) in servers.iter().filter(|(pid, mp)| own_server(*pid, mp)) {
            add("server", format!("pid {pid} ({})", mp.display()), "");
        }
        let mdir = base.join(&key);
        if mdir.exists() {
            add("mounts", mdir.display().to_string(), "");
        }
        if let Some(l) = rec.lease.as_ref().filter(|l| lease_owners(&l.file).contains(&sdir)) {
            add("lease", format!("{} ({}:{})", l.file.display(), l.host_id, l.size), "");
            orphan_leases.insert((l.file.clone(), sdir.clone()));
        }
        if let Some(d) = rec.data_root.as_ref().filter(|d| !rec.data_persistent && d.exists()) {
            add("data", d.display().to_string(), "");
        }
        for w in rec.work_dirs.iter().filter(|w| crate::host::overlay::is_own_work(w) && w.exists()) {
            add("data", w.display().to_string(), " (overlay work dir)");
        }
        if let Some((p, _)) = &rec.engine_cover {
            let what = if rec.engine_shift.is_some() { " (read-only and id-shifted covers of the engine's rootfs)" } else { " (read-only cover of the engine's rootfs)" };
            add("cover", p.display().to_string(), what);
        }
        add("record", sidecar::mirror(&root, &rec.id).display().to_string(), "");
    }
    let known = |name: &str| live_keys.contains(name) || orphan_keys.contains(name);
    // 4. What no mirror claims (a create killed before its first record, an older nestrun).
    for (pid, mp) in &servers {
        let name = mp.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if mp.parent().and_then(Path::parent) == Some(base.as_path()) && !known(&name) {
            s.servers.push((*pid, mp.clone()));
            s.findings.push(Finding { kind: "server", resource: format!("pid {pid} ({})", mp.display()), container: None, reason: "its mount dir belongs to no live container".into() });
        }
    }
    for e in mnt.iter().filter(|e| is_dir(e) && !known(&e.file_name().to_string_lossy())) {
        s.mount_dirs.push(e.path());
        s.findings.push(Finding { kind: "mounts", resource: e.path().display().to_string(), container: None, reason: "no live container has this mount dir".into() });
    }
    for cg in nestrun_cgroups {
        let id = cg.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let claimed = live_cgroups.contains(&cg) || live_ids.contains(&id) || orphans.iter().any(|r| r.cgroup_path.as_ref() == Some(&cg));
        if !claimed && cgroup_pids(&cg).is_empty() {
            s.findings.push(Finding { kind: "cgroup", resource: cg.display().to_string(), container: None, reason: "empty, and no live container has it".into() });
            s.cgroups.push(cg);
        }
    }
    for e in data.iter().filter(|e| is_dir(e) && !known(&e.file_name().to_string_lossy())) {
        s.data_dirs.push(e.path());
        s.findings.push(Finding { kind: "data", resource: e.path().display().to_string(), container: None, reason: "no live container has this data dir".into() });
    }
    let running = RangeUse::read();
    for file in &leases {
        for owner in lease_owners(file).into_iter().filter(|o| !o.exists()) {
            if orphan_leases.contains(&(file.clone(), owner.clone())) {
                continue;
            }
            if let Some(n) = running.pids_in(file).filter(|n| *n > 0) {
                tracing::warn!("keeping lease {}: {n} processes still run in its uid range", file.display());
                continue;
            }
            let c = split_state_dir(&owner).map(|(r, i)| who(&r, &i));
            s.findings.push(Finding { kind: "lease", resource: format!("{} ({})", file.display(), owner.display()), container: c, reason: format!("its owner's state dir {} is gone", owner.display()) });
            s.leases.push((file.clone(), owner));
        }
    }
    s.orphans = orphans;
    s
}

/// Which host uids processes run as, to keep a lease whose range is still in use.
struct RangeUse {
    uids: Vec<u32>,
    pool_start: Option<u32>,
}

impl RangeUse {
    fn read() -> RangeUse {
        let subuid = std::fs::read_to_string(env_path("NESTRUN_SUBUID", "/etc/subuid")).unwrap_or_default();
        let pool_start = crate::subid::find_entry(&subuid, crate::subid::POOL_USER).map(|(s, _)| s as u32);
        let mut uids = Vec::new();
        for e in entries(Path::new("/proc")) {
            let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            uids.extend(status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok()));
        }
        RangeUse { uids, pool_start }
    }

    /// How many processes run in the range of lease file `file` (named by its index).
    fn pids_in(&self, file: &Path) -> Option<usize> {
        let index: u32 = file.file_name()?.to_str()?.parse().ok()?;
        let start = self.pool_start? + index * crate::subid::RANGE;
        Some(self.uids.iter().filter(|u| (start..start + crate::subid::RANGE).contains(u)).count())
    }
}

/// Reclaim everything `scan` found; returns what was reclaimed.
pub fn reclaim(s: Scan) -> Vec<Finding> {
    for rec in &s.orphans {
        let root = rec.root.clone().unwrap_or_default();
        if sidecar::dir(&root, &rec.id).exists() {
            continue; // re-created since the scan: live again
        }
        tracing::info!(id = %rec.id, root = %root.display(), "reclaiming an orphaned container");
        teardown::teardown_record(&root, &rec.id, rec);
    }
    for (pid, mp) in &s.servers {
        if let Err(e) = crate::fuse::stop(nix::unistd::Pid::from_raw(*pid), mp) {
            tracing::warn!("cannot stop fuse server {pid}: {e}");
        }
    }
    for d in &s.mount_dirs {
        teardown::clear_mounts(d);
    }
    for cg in s.cgroups.iter().filter(|cg| cgroup_pids(cg).is_empty()) {
        cgroup::remove_tree(cg, true);
    }
    for d in &s.data_dirs {
        if let Err(e) = std::fs::remove_dir_all(d) {
            tracing::warn!("cannot remove data dir {}: {e}", d.display());
        }
    }
    for (file, owner) in &s.leases {
        let lease = crate::subid::Lease { index: 0, host_id: 0, size: 0, file: file.clone() };
        crate::subid::release(&lease, owner);
    }
    s.findings
}

/// How many resources `gc` would reclaim (for `nestrun check`).
pub fn count() -> usize {
    scan().findings.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_owner_names_its_root_and_id() {
        assert_eq!(split_state_dir(Path::new("/run/x/state/.nestrun/c-1")), Some((PathBuf::from("/run/x/state"), "c-1".into())));
        assert_eq!(split_state_dir(Path::new("/run/x/state/c-1")), None, "not a sidecar dir");
        assert_eq!(who(Path::new("/r"), "a"), "a in /r");
    }
}
