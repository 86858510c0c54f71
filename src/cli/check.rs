//! `nestrun check`: what this host supports, and what each missing item disables.
use std::path::Path;

use anyhow::Result;
use clap::Args;

use crate::host::{idmap, mountinfo};

#[derive(Args, Debug)]
pub struct Check {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

struct Item {
    name: &'static str,
    ok: bool,
    required: bool,
    detail: String,
    disables: &'static str,
}

fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut it = release.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse::<u32>().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (major, minor)
}

fn try_idmap() -> Result<(), String> {
    let base = Path::new("/var/lib/nestrun").join(format!(".check-{}", std::process::id()));
    let (src, dst) = (base.join("src"), base.join("dst"));
    std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
    let r = idmap::userns_fd(1 << 20, 65536)
        .and_then(|fd| idmap::clone_idmapped(&src, &dst, std::os::fd::AsFd::as_fd(&fd), false))
        .map(|()| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&dst).map(|m| m.uid()).unwrap_or(0)
        });
    crate::host::unmount(&dst);
    let _ = std::fs::remove_dir_all(&base);
    match r {
        Ok(uid) if uid == 1 << 20 => Ok(()),
        Ok(uid) => Err(format!("mapped owner is {uid}, expected {}", 1 << 20)),
        Err(e) => Err(e.to_string()),
    }
}

fn items() -> Vec<Item> {
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let userns = read("/proc/sys/user/max_user_namespaces").trim().parse::<u64>().unwrap_or(0) > 0;
    let mounts = mountinfo::read();
    let v1 = mounts.iter().any(|e| e.fs_type == "cgroup");
    let v2 = mounts.iter().any(|e| e.fs_type == "cgroup2");
    let cg = match (v1, v2) {
        (true, true) => "hybrid (v1 controllers + cgroup2)",
        (true, false) => "v1",
        (false, true) => "v2 (unified)",
        _ => "none mounted",
    };
    let idm = try_idmap();
    let caps = crate::lifecycle::runtime_caps();
    let missing: Vec<&str> = crate::facts::CAP_NAMES.iter().copied().filter(|c| !caps.iter().any(|h| h == c)).collect();
    let subuid = read("/etc/subuid");
    let uring = read("/sys/module/fuse/parameters/enable_uring").trim().to_string();
    // The container's cgroup move: through `tasks` on v1 (libcgroups patch 2), or cheap for
    // every write when a hierarchy is mounted with favordynmods.
    let dynmods = mounts.iter().find(|e| e.fs_type.starts_with("cgroup") && e.super_options.split(',').any(|o| o == "favordynmods"));
    let fast_moves = match (dynmods, v1) {
        (Some(e), _) => format!("favordynmods on {}", e.mount_point.display()),
        (None, true) => "v1: the container's process joins through `tasks`".into(),
        (None, false) => "cgroup2 without favordynmods".into(),
    };
    let env_mode = std::env::var("NESTRUN_MODE").ok();
    let env_sv = std::env::var(crate::facts::ENV_SUPERVISOR).ok();
    // pure v2: delegation is probed for real; hybrid and v1 hosts delegate their v1 hierarchies
    let (deleg_ok, deleg) = match crate::host::cgroup::unified_mount() {
        Some(m) => match crate::host::cgroup::probe_v2_delegation(&m, 1 << 20) {
            Ok(d) => (true, d),
            Err(e) => (false, e),
        },
        None => (true, "not used: v1 controller hierarchies are delegated".into()),
    };
    let orphans = crate::lifecycle::gc::count();
    vec![
        Item { name: "kernel", ok: kernel_at_least(&release, 5, 19), required: false, detail: release.clone(), disables: "ID-mapped overlay lower layers (>= 5.19): below, the chown fallback copies each container's image layers (O(files) per start)" },
        Item { name: "user namespaces", ok: userns, required: true, detail: format!("max_user_namespaces={}", read("/proc/sys/user/max_user_namespaces").trim()), disables: "everything: system containers need them" },
        Item { name: "id-mapped mounts", ok: idm.is_ok(), required: true, detail: idm.err().unwrap_or_else(|| "bind of /var/lib/nestrun maps 0 -> 1048576".into()), disables: "rootfs without chown: the chown fallback re-owns (copies of) it instead; volumes show host ids as nobody" },
        Item { name: "fuse", ok: Path::new("/dev/fuse").exists(), required: false, detail: "/dev/fuse".into(), disables: "emulated /proc (meminfo, cpuinfo, uptime) and per-container sysctls" },
        Item { name: "fuse over io_uring", ok: uring == "Y", required: false, detail: if uring.is_empty() { "not in this kernel (needs 6.14)".into() } else { format!("fuse.enable_uring={uring}") }, disables: "emulated files answered on the reader's CPU: each /proc read then crosses CPUs (~150 us instead of ~40 on a 2-CPU VM)" },
        Item { name: "cgroups", ok: v1 || v2, required: true, detail: cg.into(), disables: "resource limits and delegation" },
        Item { name: "fast cgroup moves", ok: dynmods.is_some() || v1, required: false, detail: fast_moves, disables: "each container start and exec waits for an RCU grace period to join its cgroup (7-16 ms on a 2-CPU VM); mount the cgroup2 hierarchy with favordynmods" },
        Item { name: "cgroup v2 delegation", ok: deleg_ok, required: true, detail: deleg, disables: "limits and inner runtimes' cgroups on this cgroup v2 host" },
        Item { name: "seccomp user notification", ok: read("/proc/sys/kernel/seccomp/actions_avail").contains("user_notif"), required: false, detail: read("/proc/sys/kernel/seccomp/actions_avail").trim().into(), disables: "the syscall supervisor: sysinfo(2) answers with the host's figures, inner containers' /proc and /sys are the kernel's" },
        Item { name: "NESTRUN_SUPERVISOR", ok: env_sv.as_deref() != Some("off"), required: false, detail: env_sv.clone().map(|m| format!("NESTRUN_SUPERVISOR={m}")).unwrap_or_else(|| "unset: on unless io.nestrun.supervisor=off".into()), disables: "containers without an io.nestrun.supervisor annotation get no syscall supervisor: sysinfo(2) shows the host's figures, inner containers' /proc and /sys the kernel's" },
        Item { name: "NESTRUN_MODE", ok: env_mode.as_deref() != Some("plain"), required: false, detail: env_mode.clone().map(|m| format!("NESTRUN_MODE={m}")).unwrap_or_else(|| "unset: system containers unless io.nestrun.mode=plain".into()), disables: "every container without an io.nestrun.mode annotation runs as written: no user namespace, root is host root" },
        Item { name: "subordinate ids", ok: true, required: false, detail: crate::subid::find_entry(&subuid, "nestrun").map(|(s, n)| format!("nestrun:{s}:{n} in /etc/subuid")).unwrap_or_else(|| "no nestrun entry yet: the first create adds one".into()), disables: "nothing" },
        Item { name: "orphans", ok: orphans == 0, required: false, detail: if orphans == 0 { "none: every nestrun resource belongs to a live container".into() } else { format!("{orphans} resources of lost containers: see `nestrun gc`") }, disables: "their uid ranges, mounts and cgroups stay taken until `nestrun gc --force`" },
        Item { name: "capabilities", ok: true, required: false, detail: if missing.is_empty() { "all".into() } else { format!("bounding set lacks {}", missing.join(",")) }, disables: "a missing capability is also missing inside containers" },
    ]
}

pub fn run(a: Check) -> Result<i32> {
    let items = items();
    if a.json {
        let v: Vec<_> = items.iter().map(|i| serde_json::json!({"item": i.name, "ok": i.ok, "required": i.required, "detail": i.detail, "disables": i.disables})).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{:<27} {:<6} {:<60} IF MISSING", "ITEM", "OK", "DETAIL");
        for i in &items {
            println!("{:<27} {:<6} {:<60} {}", i.name, if i.ok { "yes" } else { "NO" }, i.detail, if i.ok { "" } else { i.disables });
        }
    }
    Ok(if items.iter().any(|i| i.required && !i.ok) { 1 } else { 0 })
}
