//! How each attempt is decided: the probe's word is one input; what the host saw (host.rs)
//! is the other, and a host-side effect always wins.
//!
//! - a host-side change (a canary, a container limit, a release agent, the clock, a killed
//!   canary process, a host token in the probe's output) makes the attempt ALLOWED;
//! - a host-side verdict (the probe's namespaces, id maps and seccomp mode read from
//!   /proc/<pid>) decides, though a probe ALLOWED still wins;
//! - the host decides N/A: the thing attempted does not exist on this host (a probe ALLOWED
//!   still wins); when it exists on the host but the probe found nothing, that is BLOCKED;
//! - otherwise the probe's word stands (reads the host cannot observe).
use std::collections::BTreeMap;
use std::path::Path;

use super::host::Plants;
use super::window::Findings;
use super::Row;

pub enum Host {
    Changed(String),
    Decides(&'static str, String),
    Unchanged(String),
    Absent(String),
    Present(String),
}

/// Final outcome from the probe's word and the host's facts.
pub fn combine(probe: &str, facts: &[Host]) -> String {
    let any = |f: &dyn Fn(&Host) -> bool| facts.iter().any(f);
    if any(&|h| matches!(h, Host::Changed(_))) || probe == "ALLOWED" || any(&|h| matches!(h, Host::Decides("ALLOWED", _))) {
        return "ALLOWED".into();
    }
    if any(&|h| matches!(h, Host::Absent(_))) {
        return "N/A".into();
    }
    if let Some(Host::Decides(o, _)) = facts.iter().find(|h| matches!(h, Host::Decides(..))) {
        return o.to_string();
    }
    if probe == "N/A" && any(&|h| matches!(h, Host::Present(_))) {
        return "BLOCKED".into();
    }
    probe.to_string()
}

fn note(h: &Host) -> String {
    match h {
        Host::Changed(d) => format!("HOST CHANGED: {d}"),
        Host::Decides(o, d) => format!("host says {o}: {d}"),
        Host::Unchanged(d) => format!("host unchanged: {d}"),
        Host::Absent(d) => format!("host: {d}"),
        Host::Present(d) => format!("host: {d}"),
    }
}

/// Whether the thing attempted exists on this host (None: not checked on the host).
pub fn precondition(a: &str) -> Option<(bool, String)> {
    let ex = |p: String| {
        let e = Path::new(&p).exists();
        Some((e, format!("{p} {} on the host", if e { "exists" } else { "does not exist" })))
    };
    let inner = |a: &str| a.split_once('(').map(|(_, r)| r.trim_end_matches(')').to_string()).unwrap_or_default();
    if let Some(rest) = a.strip_prefix("mknod_read_block_") {
        let mut it = rest.split(['_', '(']);
        return ex(format!("/sys/dev/block/{}:{}", it.next()?, it.next()?));
    }
    match a {
        "open_mem" => ex("/dev/mem".into()),
        "mknod_read_dev_mem" => ex("/sys/dev/char/1:1".into()),
        "mknod_read_dev_kmem" => ex("/sys/dev/char/1:2".into()),
        "mknod_read_dev_port" => ex("/sys/dev/char/1:4".into()),
        "mknod_read_kmsg" => ex("/sys/dev/char/1:11".into()),
        "open_proc_kcore" => ex("/proc/kcore".into()),
        "open_sysrq_trigger" => ex("/proc/sysrq-trigger".into()),
        "init_module" | "finit_module" | "delete_module" => ex("/proc/modules".into()),
        "kexec_load" => ex("/sys/kernel/kexec_loaded".into()),
        "swapoff" => ex("/proc/swaps".into()),
        "acct" => ex("/proc/sys/kernel/acct".into()),
        "bpf(BPF_PROG_LOAD)" => ex("/proc/sys/kernel/unprivileged_bpf_disabled".into()),
        "perf_event_open(system-wide,kernel)" => ex("/proc/sys/kernel/perf_event_paranoid".into()),
        "keyctl_user_keyring" => ex("/proc/keys".into()),
        "sysfs_write_thp" | "sysfs_fresh_mount_write_thp" => ex("/sys/kernel/mm/transparent_hugepage/enabled".into()),
        _ if a.starts_with("umount_mask(") => ex(inner(a)),
        _ if a.starts_with("sysctl_write(") => ex(format!("/proc/sys/{}", inner(a))),
        _ if a.starts_with("release_agent_fresh_mount(") && !inner(a).contains('=') => {
            let ctl = inner(a);
            let have = std::fs::read_to_string("/proc/cgroups").unwrap_or_default().lines().any(|l| l.split_whitespace().next() == Some(ctl.as_str()));
            Some((have, format!("controller {ctl} {} in the host's /proc/cgroups", if have { "is" } else { "is not" })))
        }
        _ => None,
    }
}

/// The CGROUP_FILES key a cgroup attempt writes.
fn cgroup_key(a: &str) -> Option<&'static str> {
    Some(match a {
        "cgroup_raise_memory_limit" | "cgroup_write_child_memory_limit" => "memory",
        "cgroup_write_swap_limit" => "swap",
        "cgroup_write_pids_max" => "pids",
        "cgroup_write_cpu_quota" => "cpu",
        "cgroup_write_cpuset_cpus" => "cpuset",
        "cgroup_devices_allow" => "devices",
        _ => return None,
    })
}

/// What the host checks for an attempt (SECURITY.md's "checked on the host" column).
pub fn judged_by(a: &str) -> String {
    let pre = precondition(a).is_some();
    let main: &str = match a {
        _ if a.starts_with("own_") => "its /proc/PID/ns inode differs from the host's",
        "uid_map" => "/proc/PID/uid_map and gid_map: one line `0 R 65536`, R the range nestrun leased to the container",
        "seccomp_filter" => "/proc/PID/status: Seccomp 2",
        "sysctl_write(vm/drop_caches)" => "/proc/vmstat drop_slab unchanged (the probe writes 2)",
        "sysctl_write(kernel/hostname)" | "sysctl_write(net/ipv4/ip_forward)" | "sysctl_write(net/core/somaxconn)" => "the host's value unchanged (the probe writes another)",
        _ if a.starts_with("sysctl_write(") || a.contains("_thp") => "a planted canary value unchanged (the probe writes another)",
        "cgroup_devices_allow" => "the container's devices.list unchanged",
        _ if cgroup_key(a).is_some() => "the container's limit file unchanged (the probe writes another value); a HARMLESS write found in the probe's own cgroup below it",
        _ if a.starts_with("release_agent_") => "every hierarchy's release_agent unchanged; the host's agent script never ran",
        "clock_settime(now+jump)" => "the host's clock did not jump (the probe sets it 3 s ahead)",
        "kill_host_pids" => "a host canary process (pid given to the probe) still alive",
        "keyctl_user_keyring" => "a key planted in host root's keyring: its token not in the output",
        "syslog(READ_ALL)" => "the host's kernel-log token not in the output, with dmesg_restrict planted 0",
        "read_dev_kmsg" | "mknod_read_kmsg" => "the host's kernel-log token not in the output",
        "bpf(BPF_PROG_LOAD)" => "no BPF program fd in the probe's fd table, with unprivileged_bpf_disabled planted 0",
        "perf_event_open(system-wide,kernel)" => "no perf event fd in the probe's fd table, with perf_event_paranoid planted -1",
        "read_host_marker_file" | "open_by_handle_at_shocker" | "open_tree_move_mount_unmask_proc" => "the host's marker-file token not in the output",
        _ if a.starts_with("leaked_fds_cwd") => "the host's marker-file token not in the output",
        "fsopen_fsmount_proc" => "— (probe's word: the host's canary pid not listed)",
        _ if a.starts_with("cve_2019_5736") => "the runtime binary's sha256 unchanged (fd held open)",
        _ => "— (probe's word)",
    };
    if pre {
        format!("exists on the host (else N/A); {main}")
    } else {
        main.to_string()
    }
}

/// uid_map/gid_map as read from the host: BLOCKED only for exactly one line `0 R 65536` with R
/// an aligned range of the pool; any id below the pool (host root included) is ALLOWED.
pub fn idmap_verdict(uid: &str, gid: &str, pool: (u64, u64)) -> (&'static str, String) {
    let mut why = Vec::new();
    for (k, m) in [("uid_map", uid), ("gid_map", gid)] {
        let lines: Vec<Vec<u64>> = m.lines().map(|l| l.split_whitespace().filter_map(|x| x.parse().ok()).collect()).collect();
        for l in &lines {
            if l.len() == 3 && l[1] < pool.0 {
                why.push(format!("{k} line '{} {} {}' maps host id {} (below the pool at {})", l[0], l[1], l[2], l[1], pool.0));
            }
        }
        let exact = matches!(lines.as_slice(), [l] if l.len() == 3 && l[0] == 0 && l[2] == 65536 && l[1] >= pool.0 && l[1] + 65536 <= pool.0 + pool.1 && (l[1] - pool.0).is_multiple_of(65536));
        if !exact {
            why.push(format!("{k} '{}' is not one line `0 R 65536` of the pool", m.replace('\n', "; ")));
        }
    }
    if why.is_empty() {
        ("BLOCKED", format!("uid_map '{}', gid_map '{}': one range of the pool", uid.trim(), gid.trim()))
    } else {
        ("ALLOWED", why.join("; "))
    }
}

fn same_value(a: &str, b: &str) -> bool {
    a.trim() == b.trim() || matches!((a.trim().parse::<i64>(), b.trim().parse::<i64>()), (Ok(x), Ok(y)) if x == y)
}

/// The host's facts for one row of `mode`.
/// What the host knows about one probe run besides its findings.
pub struct Seen<'a> {
    pub hostns: &'a BTreeMap<String, String>,
    /// (the mode's canary process is alive, detail)
    pub canary: (bool, String),
    /// The full id of the container whose user namespace the probe is in (docker inspect).
    pub container_id: String,
}

/// nestrun's lease files, one per range of the pool, holding the owners' state directories.
pub fn lease_dir() -> String {
    std::env::var("NESTRUN_LEASE_DIR").unwrap_or_else(|_| "/run/nestrun-subid".into())
}

/// Whether the lease file of the range in `uid_map` (`0 R 65536`) names `container_id`.
pub fn lease_verdict(uid_map: &str, pool: (u64, u64), dir: &str, container_id: &str) -> (&'static str, String) {
    let r = uid_map.split_whitespace().nth(1).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let file = format!("{dir}/{}", r.saturating_sub(pool.0) / 65536);
    let owners = std::fs::read_to_string(&file).unwrap_or_default();
    if !container_id.is_empty() && owners.contains(container_id) {
        ("BLOCKED", format!("range {r} is leased to this container ({file})"))
    } else {
        ("ALLOWED", format!("range {r} is not leased to container {container_id}: {file} holds '{}'", owners.trim()))
    }
}

pub fn facts(row: &Row, f: &Findings, plants: &Plants, seen: &Seen) -> Vec<Host> {
    let (hostns, canary) = (seen.hostns, &seen.canary);
    let a = row.attempt.as_str();
    let mut v = Vec::new();
    for t in plants.tokens() {
        if row.detail.contains(t) {
            v.push(Host::Changed(format!("the probe's output holds the host's token {t}")));
        }
    }
    if let Some((exists, d)) = precondition(a) {
        v.push(if exists { Host::Present(d) } else { Host::Absent(d) });
    }
    let view = f.view.as_ref();
    if let (Some(t), Some(view)) = (a.strip_prefix("own_").and_then(|x| x.strip_suffix("_namespace")), view) {
        let (p, h) = (view.ns.get(t).cloned().unwrap_or_default(), hostns.get(t).cloned().unwrap_or_default());
        v.push(if p.is_empty() || p == h { Host::Decides("ALLOWED", format!("probe pid {} {t} ns {p} = the host's {h}", view.pid)) } else { Host::Decides("BLOCKED", format!("probe pid {} has {p}, host {h}", view.pid)) });
    } else if let (true, Some(view)) = (a == "uid_map", view) {
        let (o, d) = idmap_verdict(&view.uid_map, &view.gid_map, plants.pool);
        v.push(Host::Decides(o, d));
        if o == "BLOCKED" {
            let (o, d) = lease_verdict(&view.uid_map, plants.pool, &lease_dir(), &seen.container_id);
            v.push(Host::Decides(o, d));
        }
    } else if let (true, Some(view)) = (a == "seccomp_filter", view) {
        let on = view.seccomp == "2" && view.filters.parse::<u32>().unwrap_or(1) >= 1;
        v.push(Host::Decides(if on { "BLOCKED" } else { "ALLOWED" }, format!("probe pid {}: Seccomp {}, {} filter(s)", view.pid, view.seccomp, view.filters)));
    } else if a == "sysctl_write(vm/drop_caches)" {
        if let Some((b, x)) = f.drop_slab {
            v.push(if b != x { Host::Changed(format!("/proc/vmstat drop_slab {b} -> {x}")) } else { Host::Unchanged(format!("drop_slab {b}")) });
        }
    } else if let Some(rel) = a.strip_prefix("sysctl_write(").and_then(|x| x.strip_suffix(')')) {
        if let Some((b, x)) = f.sysctls.get(rel) {
            v.push(if b != x { Host::Changed(format!("the host's {rel} went from '{b}' to '{x}'")) } else { Host::Unchanged(format!("the host's {rel} stayed '{b}'")) });
        }
    } else if a.ends_with("_thp") {
        if let (Some((b, x)), Some((_, v1, v2))) = (&f.thp, &plants.thp) {
            let mine = if a == "sysfs_write_thp" { (v1, v2) } else { (v2, v1) };
            let hit = x != b && (x == mine.0 || x != mine.1);
            v.push(if hit { Host::Changed(format!("THP enabled went from '{b}' to '{x}'")) } else { Host::Unchanged(format!("THP enabled '{x}' (planted '{b}')")) });
        }
    } else if let Some(k) = cgroup_key(a) {
        if view.is_some() {
            match f.cgroup.get(k) {
                None => v.push(Host::Absent(format!("the container's cgroup has no {k} file on this host"))),
                Some((p, b, x)) if b != x => v.push(Host::Changed(format!("the container's {} went from '{b}' to '{x}'", p.display()))),
                Some((p, b, _)) if row.result == "HARMLESS" => v.push(confirm_landing(row, f, k, p, b)),
                Some((p, b, _)) => v.push(Host::Unchanged(format!("{} stayed '{}'", p.display(), b.replace('\n', " ")))),
            }
        }
    } else if a.starts_with("release_agent_") && view.is_some() {
        let changed: Vec<String> = f.release_agents.iter().filter(|(_, (b, x))| b != x).map(|(p, (b, x))| format!("{p}: '{b}' -> '{x}'")).collect();
        if let Some(r) = &f.agent_ran {
            v.push(Host::Changed(format!("the host's agent RAN: {r}")));
        }
        v.push(if changed.is_empty() { Host::Unchanged(format!("{} release_agent files", f.release_agents.len())) } else { Host::Changed(changed.join(", ")) });
    } else if a == "clock_settime(now+jump)" && view.is_some() {
        v.push(if f.clock_jump.abs() > 1.5 { Host::Changed(format!("the host's clock jumped {:.1} s", f.clock_jump)) } else { Host::Unchanged(format!("clock moved {:.3} s", f.clock_jump)) });
    } else if let (Some(kind), true) = (a.strip_prefix("bpf(").map(|_| "bpf-prog").or(a.strip_prefix("perf_event_open(").map(|_| "[perf_event]")), view.is_some()) {
        let held: Vec<&String> = f.fds.iter().filter(|l| l.contains(kind)).collect();
        v.push(if held.is_empty() { Host::Unchanged(format!("no {kind} fd among the probe's {} fds", f.fds.len())) } else { Host::Changed(format!("the probe holds {held:?}")) });
    } else if a == "kill_host_pids" {
        v.push(if canary.0 { Host::Unchanged(canary.1.clone()) } else { Host::Changed(canary.1.clone()) });
    }
    v
}

/// A HARMLESS cgroup write (the container's own file unchanged): the value must be in the
/// probe's own cgroup (read at the second checkpoint), a different one below the container's.
fn confirm_landing(row: &Row, f: &Findings, k: &str, container_file: &Path, before: &str) -> Host {
    let wrote = row.detail.split("{wrote=").nth(1).and_then(|x| x.split('}').next()).unwrap_or_default();
    let Some((own, now)) = f.own_cgroup.get(k) else {
        return Host::Decides("ALLOWED", format!("the probe's own cgroup has no {k} file on the host: where did '{wrote}' go?"));
    };
    let below = own.parent().zip(container_file.parent()).is_some_and(|(o, c)| o != c && o.starts_with(c));
    if below && same_value(now, wrote) {
        Host::Unchanged(format!("the container's {} stayed '{}'; '{wrote}' is in the probe's own {}", container_file.display(), before.trim(), own.display()))
    } else {
        Host::Decides("ALLOWED", format!("the probe's write '{wrote}' was not found below the container's cgroup: {} = '{}'", own.display(), now.trim()))
    }
}

/// Applies the host's facts to every row of one probe run.
pub fn apply(rows: &mut [Row], f: &Findings, plants: &Plants, seen: &Seen) {
    for r in rows.iter_mut() {
        let facts = facts(r, f, plants, seen);
        let out = combine(&r.result, &facts);
        let notes: Vec<String> = facts.iter().map(note).collect();
        if out != r.result {
            r.detail = format!("[probe: {}] {}", r.result, r.detail);
        }
        if !notes.is_empty() {
            r.detail = format!("{} ‖ {}", r.detail, notes.join("; "));
        }
        r.result = out;
    }
}
