//! The rules on `linux` and `mounts`: namespaces, id mappings, sysctls and the rest of what
//! runc's configs/validate and libcontainer's validator look at. Pure.
use std::path::Path;

use libcontainer::oci_spec::runtime::{Linux, LinuxIdMapping, LinuxNamespace, LinuxNamespaceType as T, Process, Spec};

use super::ValidateError as E;
use crate::facts::Mode;
use crate::subid::RANGE;

/// The namespace types the system-container rewrite gives every container: added when missing
/// (mount, uts, ipc, cgroup, user), or required and refused there, naming the engine flag to
/// drop, when missing (network, pid; `rewrite::namespaces`).
const SYSTEM_HAS: &[T] = &[T::Mount, T::Uts, T::Ipc, T::Cgroup, T::User, T::Network, T::Pid];

/// The sysctls of the ipc namespace (runc's and libcontainer's list) besides fs.mqueue.*.
const IPC_SYSCTLS: &[&str] = &["kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"];

/// The kernel's limit on lines in uid_map and gid_map (since Linux 4.15).
const MAX_MAPPINGS: usize = 340;

/// The name a namespace type has in config.json (oci_spec's Display says "mnt" and "net").
pub(super) fn ns_name(t: T) -> &'static str {
    match t {
        T::Mount => "mount",
        T::Cgroup => "cgroup",
        T::Uts => "uts",
        T::Ipc => "ipc",
        T::User => "user",
        T::Pid => "pid",
        T::Network => "network",
        T::Time => "time",
    }
}

/// The namespaces the container will have, by mode.
struct View<'a> {
    mode: Mode,
    list: &'a [LinuxNamespace],
}

impl View<'_> {
    /// In the spec (new or joined by path).
    fn listed(&self, t: T) -> Option<&LinuxNamespace> {
        self.list.iter().find(|n| n.typ() == t)
    }

    /// In the spec, or given by the system-container rewrite.
    fn has(&self, t: T) -> bool {
        self.listed(t).is_some() || self.mode == Mode::System && SYSTEM_HAS.contains(&t)
    }
}

pub(super) fn check(spec: &Spec, linux: &Linux, process: &Process, mode: Mode) -> Result<(), E> {
    let list = linux.namespaces().as_deref().unwrap_or_default();
    let view = View { mode, list };
    check_namespaces(list)?;
    // runc and libcontainer: a hostname needs a uts namespace. runc 1.1.5 ignores an empty
    // hostname and predates domainname; libcontainer refuses both whenever they are present.
    if !view.has(T::Uts) {
        if let Some(h) = spec.hostname() {
            return Err(E::NoUts { field: "hostname", value: h.clone() });
        }
        if let Some(d) = spec.domainname() {
            return Err(E::NoUts { field: "domainname", value: d.clone() });
        }
    }
    if !view.has(T::Mount) {
        for (field, paths) in [("maskedPaths", linux.masked_paths()), ("readonlyPaths", linux.readonly_paths())] {
            if paths.as_ref().is_some_and(|p| !p.is_empty()) {
                return Err(E::NoMountNs(field));
            }
        }
    }
    check_mappings(spec, linux, &view)?;
    check_mounts(spec, linux, &view)?;
    check_mapped_ids(spec, linux, process, &view)?;
    let mut keys: Vec<&String> = linux.sysctl().iter().flatten().map(|(k, _)| k).collect();
    keys.sort();
    for key in keys {
        check_sysctl(key, &view).map_err(|why| E::Sysctl { key: key.clone(), why })?;
    }
    // libcontainer's rootfs setup knows these four (runc also takes the r-prefixed forms, which
    // containerd sends for Bidirectional/HostToContainer mounts; system mode's rewrite turns
    // them into these, which libcontainer applies recursively anyway: rewrite::rootfs).
    let known = |p: &str| crate::rewrite::rootfs::ROOT_PROPAGATIONS.contains(&p);
    let system_form = |p: &str| view.mode == Mode::System && p.strip_prefix('r').is_some_and(known);
    if let Some(p) = linux.rootfs_propagation().as_ref().filter(|p| !known(p) && !system_form(p)) {
        return Err(E::RootfsPropagation(p.clone()));
    }
    if let Some(id) = linux.intel_rdt().as_ref().and_then(|r| r.clos_id().as_ref()) {
        if id == "." || id == ".." || (id.len() > 1 && id.contains('/')) {
            return Err(E::ClosId(id.clone()));
        }
    }
    // libcontainer's validator (runc 1.1.5 predates time namespaces and timeOffsets).
    if linux.time_offsets().is_some() {
        match view.listed(T::Time) {
            None => return Err(E::TimeOffsets("set, but linux.namespaces has no time namespace")),
            Some(ns) if ns.path().is_some() => return Err(E::TimeOffsets("set, but the time namespace is joined by path; offsets apply to a new one only")),
            Some(_) => {}
        }
    }
    // libcontainer's validate_spec_for_net_devices (runc 1.1.5 predates netDevices).
    let mut devices: Vec<(&String, Option<&String>)> = linux.net_devices().iter().flatten().map(|(k, d)| (k, d.name().as_ref())).collect();
    devices.sort();
    for (name, rename) in devices {
        if !view.has(T::Network) {
            return Err(E::NetDevice { name: name.clone(), why: "needs a network namespace (linux.namespaces has none)" });
        }
        if !if_name_ok(name) || rename.is_some_and(|r| !if_name_ok(r)) {
            return Err(E::NetDevice { name: name.clone(), why: "not a valid interface name (1-15 bytes, no '/', ':' or space, not . or ..)" });
        }
    }
    Ok(())
}

/// runc's spec conversion: one namespace per type; the OCI spec: an absolute path.
fn check_namespaces(list: &[LinuxNamespace]) -> Result<(), E> {
    for (index, ns) in list.iter().enumerate() {
        let typ = ns_name(ns.typ());
        if let Some(first) = list[..index].iter().position(|o| o.typ() == ns.typ()) {
            return Err(E::NamespaceTwice { index, typ, first });
        }
        if let Some(path) = ns.path().as_ref().filter(|p| !p.as_os_str().is_empty() && !p.is_absolute()) {
            return Err(E::NamespacePath { index, typ, path: path.clone() });
        }
    }
    Ok(())
}

/// The id mappings in plain mode: what the kernel takes, and runc's and libcontainer's rules
/// for a user namespace the spec creates. System mode keeps engine mappings only in the form
/// `rewrite::userns::validate` checks (one range from 0, at least 65536 ids, not host root, no
/// overflow: stricter than the kernel), refusing others there, in its own words.
fn check_mappings(spec: &Spec, linux: &Linux, view: &View) -> Result<(), E> {
    if view.mode == Mode::System {
        return Ok(());
    }
    let kinds = [("uid", linux.uid_mappings().as_deref().unwrap_or_default()), ("gid", linux.gid_mappings().as_deref().unwrap_or_default())];
    for (kind, maps) in kinds {
        check_mapping_list(kind, maps)?;
    }
    let Some(user) = view.listed(T::User) else {
        return match kinds.iter().find(|(_, m)| !m.is_empty()) {
            Some((kind, _)) => Err(E::MappingsWithoutUserns(kind)),
            None => Ok(()),
        };
    };
    if user.path().is_some() {
        return Ok(());
    }
    for (kind, maps) in kinds {
        if maps.is_empty() {
            return Err(E::UsernsWithoutMappings(kind));
        }
        if !maps.iter().any(|m| m.container_id() == 0) {
            return Err(E::RootNotMapped(kind));
        }
    }
    if spec.mounts().is_none() {
        return Err(E::NoMounts);
    }
    Ok(())
}

/// What writing the list to uid_map / gid_map needs: at most 340 lines, none empty or past
/// 2^32 on either side, no two overlapping on either side.
fn check_mapping_list(kind: &'static str, maps: &[LinuxIdMapping]) -> Result<(), E> {
    let bad = |index: usize, msg: String| Err(E::Mapping { kind, index, msg });
    if maps.len() > MAX_MAPPINGS {
        return bad(MAX_MAPPINGS, format!("{} entries; the kernel takes at most {MAX_MAPPINGS}", maps.len()));
    }
    let end = |start: u32, size: u32| start as u64 + size as u64;
    for (index, m) in maps.iter().enumerate() {
        if m.size() == 0 {
            return bad(index, "size 0".into());
        }
        for (side, start) in [("containerID", m.container_id()), ("hostID", m.host_id())] {
            if end(start, m.size()) >= 1 << 32 {
                return bad(index, format!("{side} {start} + size {} reaches past 4294967295", m.size()));
            }
        }
        for (j, o) in maps[..index].iter().enumerate() {
            for (side, a, b) in [("container", m.container_id(), o.container_id()), ("host", m.host_id(), o.host_id())] {
                if (a as u64) < end(b, o.size()) && (b as u64) < end(a, m.size()) {
                    return bad(index, format!("overlaps linux.{kind}Mappings[{j}] on the {side} side"));
                }
            }
        }
    }
    Ok(())
}

/// runc's spec conversion warns and goes on; the OCI spec 1.0 says MUST be absolute, and the
/// rewrite matches destinations literally (a relative "proc" is not the /proc it manages).
/// libcontainer does not implement ID-mapped mounts and refuses them (mount_validation.rs). In
/// system mode nestrun makes them itself, for the engine's own user namespace (containerd 2.x's
/// `hostUsers: false` pods map every bind so): a bind whose uid and gid mappings are the
/// container's (linux.uidMappings/gidMappings) becomes an ID-mapped clone on the host, as every
/// bind source already does (lifecycle::gather, rewrite::rootfs).
fn check_mounts(spec: &Spec, linux: &Linux, view: &View) -> Result<(), E> {
    for (index, m) in spec.mounts().iter().flatten().enumerate() {
        let dest = m.destination();
        if !dest.is_absolute() {
            return Err(E::MountDestination { index, dest: dest.clone() });
        }
        let idmap_option = m.options().iter().flatten().any(|o| o == "idmap" || o == "ridmap");
        if !idmap_option && m.uid_mappings().is_none() && m.gid_mappings().is_none() {
            continue;
        }
        let bind = m.typ().as_deref() == Some("bind") || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind");
        let own = |mine: &Option<Vec<LinuxIdMapping>>, container: &Option<Vec<LinuxIdMapping>>| {
            mine.as_ref().is_some_and(|v| !v.is_empty()) && mine == container
        };
        let container_range = own(m.uid_mappings(), linux.uid_mappings()) && own(m.gid_mappings(), linux.gid_mappings());
        if view.mode == Mode::System && bind && !idmap_option && container_range {
            continue;
        }
        return Err(E::MountIdmap { index, dest: dest.clone() });
    }
    Ok(())
}

/// Container id ranges (start, size) and how to name them in a message.
type Ranges = (Vec<(u32, u32)>, String);

/// The container's id ranges (container id, size), when known before the rewrite: the spec's
/// own for a new user namespace in plain mode; in system mode the engine's (kept by the
/// rewrite) or nestrun's lease, always container ids 0-65535.
fn ranges(linux: &Linux, view: &View) -> Option<[Ranges; 2]> {
    let spec_maps = |m: &Option<Vec<LinuxIdMapping>>| m.iter().flatten().map(|m| (m.container_id(), m.size())).collect::<Vec<_>>();
    let (uid, gid) = (spec_maps(linux.uid_mappings()), spec_maps(linux.gid_mappings()));
    let named = |kind: &str| format!("linux.{kind}Mappings");
    match view.mode {
        Mode::Plain if view.listed(T::User).is_some_and(|u| u.path().is_none()) => Some([(uid, named("uid")), (gid, named("gid"))]),
        Mode::Plain => None,
        // Engine mappings the rewrite does not keep are the rewrite's to refuse.
        Mode::System if !uid.is_empty() || !gid.is_empty() => {
            let kept = |kind, m: &Option<Vec<LinuxIdMapping>>| crate::rewrite::userns::validate(kind, m.as_deref().unwrap_or_default()).is_ok();
            (kept("uid", linux.uid_mappings()) && kept("gid", linux.gid_mappings())).then(|| [(uid, named("uid")), (gid, named("gid"))])
        }
        Mode::System => {
            let text = format!("a system container maps container ids 0-{}", RANGE - 1);
            Some([(vec![(0, RANGE)], text.clone()), (vec![(0, RANGE)], text)])
        }
    }
}

/// Ids the container's processes and mounts use must be mapped: setuid, setgroups and mount
/// fail inside the user namespace otherwise (runc and libcontainer refuse at create).
fn check_mapped_ids(spec: &Spec, linux: &Linux, process: &Process, view: &View) -> Result<(), E> {
    let Some([(uids, uid_range), (gids, gid_range)]) = ranges(linux, view) else { return Ok(()) };
    let mapped = |ranges: &[(u32, u32)], id: u32| ranges.iter().any(|&(start, size)| id >= start && (id as u64) < start as u64 + size as u64);
    let user = process.user();
    let mut wanted: Vec<(String, u32, bool)> = vec![("process.user.uid".into(), user.uid(), true), ("process.user.gid".into(), user.gid(), false)];
    wanted.extend(user.additional_gids().iter().flatten().enumerate().map(|(i, g)| (format!("process.user.additionalGids[{i}]"), *g, false)));
    for (index, m) in spec.mounts().iter().flatten().enumerate() {
        for o in m.options().iter().flatten() {
            let (is_uid, value) = match (o.strip_prefix("uid="), o.strip_prefix("gid=")) {
                (Some(v), _) => (true, v),
                (_, Some(v)) => (false, v),
                _ => continue,
            };
            let id = value.parse::<u32>().map_err(|_| E::MountIdOption { index, dest: m.destination().clone(), option: o.clone() })?;
            wanted.push((format!("mounts[{index}].options {o:?}"), id, is_uid));
        }
    }
    for (field, id, is_uid) in wanted {
        let (ranges, range) = if is_uid { (&uids, &uid_range) } else { (&gids, &gid_range) };
        if !mapped(ranges, id) {
            return Err(E::Unmapped { field, kind: if is_uid { "uid" } else { "gid" }, id, range: range.clone() });
        }
    }
    Ok(())
}

/// runc's and libcontainer's sysctl rules: a sysctl must belong to a namespace the container
/// has of its own, or it would change the host's value. Err is why not.
///
/// In system mode the non-namespaced sysctls nestrun emulates per container
/// (`fuse::sysctl::TABLE`: vm.overcommit_memory, vm.panic_on_oom, vm.max_map_count,
/// kernel.panic, kernel.panic_on_oops, kernel.sysrq, kernel.keys.*, fs.inotify.*, fs.file-max,
/// fs.nr_open, fs.protected_*) are refused too, pointing at the emulated file: the emulation
/// starts from the host's values and is attached after libcontainer writes the spec's sysctls
/// (to the real /proc/sys, which the container's root may not write), and libcontainer's own
/// validator refuses them. net.netfilter.nf_conntrack_max is a net.* sysctl like any other.
fn check_sysctl(key: &str, view: &View) -> Result<(), String> {
    let k = key.replace('/', ".");
    let lacks = |what: &str| Err(format!("needs {what} namespace (linux.namespaces has none)"));
    if IPC_SYSCTLS.contains(&k.as_str()) || k.starts_with("fs.mqueue.") {
        return if view.has(T::Ipc) { Ok(()) } else { lacks("an ipc") };
    }
    if k.starts_with("net.") {
        return if view.has(T::Network) { Ok(()) } else { lacks("a network") };
    }
    if view.has(T::Uts) {
        match k.as_str() {
            "kernel.domainname" => return Ok(()),
            "kernel.hostname" => return Err("conflicts with the hostname field: set that instead".into()),
            _ => {}
        }
    }
    // Per user namespace (ucounts): libcontainer takes them with one, runc 1.1.5 never.
    if k.starts_with("user.") {
        return if view.has(T::User) { Ok(()) } else { lacks("a user") };
    }
    let file = format!("proc/sys/{}", k.replace('.', "/"));
    if view.mode == Mode::System && crate::fuse::sysctl::TABLE.iter().any(|(rel, _, _)| *rel == file) {
        return Err(format!("not in any namespace (it would set the host's value); nestrun emulates it per container: write /{file} inside the container instead"));
    }
    if matches!(k.as_str(), "kernel.hostname" | "kernel.domainname") {
        return lacks("a uts");
    }
    Err("not in any namespace (it would set the host's value)".into())
}

/// The kernel's dev_valid_name (as libcontainer checks it).
fn if_name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() < 16 && name != "." && name != ".." && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// The namespace a path in the spec names, for `host.rs`.
pub(super) fn namespace_paths(spec: &Spec) -> impl Iterator<Item = (usize, T, &Path)> {
    let list = spec.linux().as_ref().and_then(|l| l.namespaces().as_deref()).unwrap_or_default();
    list.iter().enumerate().filter_map(|(i, ns)| ns.path().as_deref().filter(|p| !p.as_os_str().is_empty()).map(|p| (i, ns.typ(), p)))
}
