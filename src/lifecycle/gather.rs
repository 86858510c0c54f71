//! Gathering facts: everything host-side the rewrite needs, made and recorded before it runs.
//! Each resource is written into the sidecar record before the next step, so a failure or a
//! `kill -9` at any point leaves a record that teardown can undo.
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::Spec;

use super::LifecycleError;
use crate::facts::{DataDir, Facts, Mode};
use crate::host::chownfs::Lowers;
use crate::host::{self, idmap, mountinfo, overlay};
use crate::rewrite::datadirs::DATA_DIRS;
use crate::sidecar::Record;
use crate::subid;

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default))
}

pub fn save(record: &Record, dir: &Path) -> Result<(), LifecycleError> {
    record.save(dir).map_err(|source| LifecycleError::State { path: dir.join("record.json"), source })
}

/// Capability names of the bits set in this process's bounding set.
pub fn runtime_caps() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    crate::facts::CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

pub fn rlimit_hard() -> Vec<(String, u64)> {
    use nix::sys::resource::{getrlimit, Resource as R};
    [
        ("RLIMIT_NOFILE", R::RLIMIT_NOFILE),
        ("RLIMIT_NPROC", R::RLIMIT_NPROC),
        ("RLIMIT_MEMLOCK", R::RLIMIT_MEMLOCK),
        ("RLIMIT_CORE", R::RLIMIT_CORE),
        ("RLIMIT_STACK", R::RLIMIT_STACK),
        ("RLIMIT_SIGPENDING", R::RLIMIT_SIGPENDING),
        ("RLIMIT_MSGQUEUE", R::RLIMIT_MSGQUEUE),
        ("RLIMIT_NICE", R::RLIMIT_NICE),
        ("RLIMIT_RTPRIO", R::RLIMIT_RTPRIO),
    ]
    .into_iter()
    .filter_map(|(n, r)| getrlimit(r).ok().map(|(_, hard)| (n.to_string(), hard)))
    .collect()
}

/// The runtime's own oom_score_adj when `adj` is below what it may set without
/// CAP_SYS_RESOURCE (the kernel's per-process minimum, which no file shows): a child tries.
fn oom_floor(adj: i32) -> Option<i32> {
    let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj").ok()?.trim().parse().ok()?;
    if adj >= own {
        return None;
    }
    let value = format!("{adj}");
    // SAFETY: the child only opens, writes and exits (async-signal-safe).
    match unsafe { libc::fork() } {
        0 => unsafe {
            let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
            let ok = fd >= 0 && libc::write(fd, value.as_ptr().cast(), value.len()) == value.len() as isize;
            libc::_exit(if ok { 0 } else { 1 })
        },
        -1 => Some(own),
        pid => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            (!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)).then_some(own)
        }
    }
}

/// Where the container's host-backed data dirs live: one directory per (root, id).
/// The data dir's name beside an engine's upper dir.
pub const DATA_DIR_NAME: &str = "nestrun-data";

fn data_root(root: &Path, id: &str) -> PathBuf {
    env_path("NESTRUN_DATA_DIR", "/var/lib/nestrun/data").join(format!("{id}-{:08x}", crate::sidecar::fnv(root)))
}

fn is_bind(m: &libcontainer::oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind") || m.options().as_ref().is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
}

pub fn gather(spec: &Spec, rootfs: &Path, id: &str, root: &Path, sdir: &Path, systemd: bool, rec: &mut Record) -> Result<Facts, LifecycleError> {
    let mut facts = Facts { mode: Mode::System, rootfs: Some(rootfs.to_path_buf()), ..Facts::default() };
    // checked before anything is made, so a bad value leaves nothing behind
    let (fuse, tun) = crate::facts::requested_devices(spec).map_err(|e| LifecycleError::Other { id: id.into(), msg: e.to_string() })?;
    facts.runtime_caps = runtime_caps();
    facts.rlimit_hard = rlimit_hard();
    let wanted = spec.process().as_ref().and_then(|p| p.oom_score_adj());
    if let Some(adj) = wanted.filter(|_| !facts.runtime_caps.iter().any(|c| c == "CAP_SYS_RESOURCE")) {
        facts.oom_score_adj_floor = oom_floor(adj);
    }
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let modules = Path::new("/lib/modules").join(&release);
    facts.lib_modules = modules.is_dir().then_some(modules);

    // Namespace paths that are the host's own (compared by device and inode).
    let same = |a: &Path, b: &Path| match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    };
    for ns in spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default() {
        let name = match ns.typ() {
            libcontainer::oci_spec::runtime::LinuxNamespaceType::Network => "net",
            libcontainer::oci_spec::runtime::LinuxNamespaceType::Pid => "pid",
            _ => continue,
        };
        if ns.path().as_ref().is_some_and(|p| same(p, &Path::new("/proc/self/ns").join(name))) {
            facts.host_namespace_paths.push(if name == "net" { "network".into() } else { "pid".into() });
        } else if let Some(p) = ns.path().as_ref().filter(|p| name == "net" && crate::facts::is_pod_sandbox(spec) && host::podnet::host_owned(p)) {
            facts.pod_net_from = Some(p.clone());
        }
    }

    // Rootfs layers first: the upper dir's owner says which range its files already have.
    let entries = mountinfo::snapshot();
    let layers = mountinfo::at(entries, rootfs)
        .filter(|e| e.fs_type == "overlay")
        .map(|e| overlay::parse_options(&e.super_options).ok_or_else(|| host::HostError::OverlayOptions { path: rootfs.into(), options: e.super_options.clone() }))
        .transpose()?;
    let prefer = layers.as_ref().and_then(|l| l.upper.as_ref()).and_then(|u| std::fs::metadata(u).ok()).map(|m| m.uid());

    // The id range: the engine's own mapping, the pod's (a container joining another's
    // namespaces shares its user namespace and lease), or an exclusive lease.
    let linux = spec.linux().as_ref().ok_or(crate::rewrite::RewriteError::NoLinux)?;
    let peer = host::pod::peer(spec).map_err(|e| LifecycleError::Other { id: id.into(), msg: e.to_string() })?;
    let lease_dir = env_path("NESTRUN_LEASE_DIR", subid::DEFAULT_LEASE_DIR);
    let pool = || subid::ensure_pool(&env_path("NESTRUN_SUBUID", "/etc/subuid"), &env_path("NESTRUN_SUBGID", "/etc/subgid"), subid::DEFAULT_RANGES);
    let engine_maps = linux.uid_mappings().as_ref().filter(|m| !m.is_empty());
    let engine_userns = engine_maps.is_some();
    if let Some(m) = engine_maps {
        let (h, s) = crate::rewrite::userns::validate("uid", m)?;
        subid::check_engine_range(pool()?, h, s)?;
        (facts.host_id, facts.id_size) = (h, s);
    } else if let Some(p) = peer {
        // Held by this member too, so the range outlives a sandbox deleted before it. A peer
        // outside nestrun's pool (another runtime's container) holds no lease of ours.
        rec.lease = subid::join(&lease_dir, pool()?, p.host_id, sdir)?;
        tracing::info!(pid = p.pid, host_id = p.host_id, "pod member: joins the user namespace of the container whose namespaces it shares");
        (facts.host_id, facts.id_size, facts.pod_userns) = (p.host_id, p.size, Some(p.userns));
    } else {
        let lease = subid::acquire(&lease_dir, pool()?, sdir, prefer)?;
        (facts.host_id, facts.id_size) = (lease.host_id, lease.size);
        rec.lease = Some(lease);
    }
    rec.host_id = facts.host_id;
    save(rec, sdir)?;
    super::fault_point("lease");

    // Cgroup: a path of our own when the engine gave none (named hierarchies are joined right
    // before the container is built: see create.rs).
    // A systemd-driver path (slice:prefix:name) is recorded as the directory it names, when
    // the engine asked for the systemd driver (--systemd-cgroup, runc's rule); otherwise
    // libcontainer takes it literally (containerd 1.6 passes `test.slice:cri-containerd:<id>`
    // for a `.slice` parent with the cgroupfs driver), and so does nestrun.
    let cgroup_path = match linux.cgroups_path() {
        Some(p) if systemd => host::cgroup::resolve(p).unwrap_or_else(|| p.clone()),
        Some(p) => Path::new("/").join(p),
        None => PathBuf::from(format!("/nestrun/{id}")),
    };
    rec.cgroup_path = Some(cgroup_path.clone());
    save(rec, sdir)?;
    facts.cgroup_path = Some(cgroup_path);
    super::fault_point("cgroup");

    // ID-mapped rootfs and bind sources. Every mount is made below the mount dir, so teardown
    // finds them by location even if this process dies before recording anything.
    let mdir = crate::sidecar::mnt_dir(root, id);
    if mdir.exists() {
        // Left by a container of this root and id whose state vanished: start clean.
        super::teardown::clear_mounts(&mdir);
    }
    crate::sidecar::create_traversable(&mdir).map_err(host::io("create", &mdir))?;
    idmap::mount_dir_fs(&mdir)?;
    if fuse || tun {
        facts.dev_dir = Some(dev_nodes(&mdir.join("dev"), fuse, tun, facts.host_id).map_err(|msg| LifecycleError::Other { id: id.into(), msg })?);
        (facts.fuse_device, facts.tun_device) = (fuse, tun);
    }
    let userns = idmap::userns_fd(facts.host_id, facts.id_size)?;
    let mut made = Vec::new();
    // ID-mapped layers, or the chown fallback (host::chownfs) when forced or when the kernel
    // refuses ID-mapped mounts there (Linux < 5.19 for overlay lower layers).
    let forced = host::chownfs::forced();
    let rootfs_in_range = engine_userns && std::fs::metadata(rootfs).is_ok_and(|m| m.uid() == facts.host_id);
    let (host_id, size) = (facts.host_id, facts.id_size);
    facts.rootfs = Some(match &layers {
        // An engine that maps ids itself may hand over a rootfs already owned by its range
        // (docker --userns-remap chowns the layers; containerd 2.x ID-maps the lower layers of
        // a `hostUsers: false` pod's overlay, in temporary mounts gone by now): used as is.
        // A rootfs its root does not own yet is ID-mapped like any other.
        _ if rootfs_in_range => rootfs.to_path_buf(),
        Some(l) => {
            let work = overlay::own_work(l, &mdir);
            // The copies of the fallback: beside the own work dir (removed with it on delete).
            let copies = match &work {
                Some(w) => w.with_file_name(format!("{}-lowers", w.file_name().unwrap_or_default().to_string_lossy())),
                None => data_root(root, id).join(format!("{}lowers", overlay::OWN_WORK_PREFIX)),
            };
            rec.work_dirs.extend(work.clone());
            rec.work_dirs.push(copies.clone());
            save(rec, sdir)?;
            let idmapped = (!forced).then(|| overlay::rebuild(l, work.as_deref(), &mdir, host_id, size, Lowers::IdMapped(userns.as_fd()), &mut made));
            match idmapped {
                Some(Ok(p)) => p,
                Some(Err(e)) if !host::chownfs::refuses_idmap(&e) => return Err(e.into()),
                r => {
                    if let Some(Err(e)) = r {
                        tracing::warn!("ID-mapped overlay refused ({e}): using re-owned copies of the lower layers");
                        made.drain(..).rev().for_each(|m| host::unmount(&m));
                    }
                    overlay::rebuild(l, work.as_deref(), &mdir, host_id, size, Lowers::Copied(&copies), &mut made)?
                }
            }
        }
        None => {
            let target = mdir.join("rootfs");
            match (!forced).then(|| idmap::clone_idmapped(rootfs, &target, userns.as_fd(), false)) {
                Some(Ok(())) => {}
                Some(Err(e)) if !host::chownfs::refuses_idmap(&e) => return Err(e.into()),
                r => {
                    if let Some(Err(e)) = r {
                        tracing::warn!("ID-mapped rootfs refused ({e}): re-owning {} to the range", rootfs.display());
                    }
                    host::chownfs::bind_shifted(rootfs, &target, host_id, size)?;
                }
            }
            target
        }
    });
    if let (Some(_), Some(own), false) = (&layers, &facts.rootfs, rootfs_in_range) {
        let dev = std::fs::metadata(own).map(|m| m.dev()).map_err(host::io("stat", own))?;
        rec.engine_cover = Some((rootfs.to_path_buf(), dev));
        save(rec, sdir)?;
        overlay::cover(rootfs, own)?;
    }
    super::fault_point("rootfs");
    // Data dirs live beside the engine's upper dir when there is one: they then persist across
    // stop/start like the container's own layer, and go with it when the engine removes the
    // container (docker rm deletes the whole layer dir). Otherwise in nestrun's data dir,
    // removed on delete.
    let (data_root, persistent) = match layers.as_ref().and_then(|l| l.upper.as_ref()).and_then(|u| u.parent()) {
        Some(layer_dir) if layer_dir.is_dir() => (layer_dir.join(DATA_DIR_NAME), true),
        _ => (data_root(root, id), false),
    };
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let Some(src) = m.source().as_ref().filter(|s| s.is_absolute() && is_bind(m)) else { continue };
        if ["/proc", "/sys", "/dev"].iter().any(|p| src.starts_with(p)) || !src.exists() {
            continue;
        }
        // A volume at a data-dir path (e.g. the dind image's `VOLUME /var/lib/docker`) is not
        // ID-mapped: what the inner dockerd writes there (setuid binaries included) would land
        // as host root on disk. It is re-owned to the container's range instead, like nestrun's
        // own data dirs.
        if DATA_DIRS.iter().any(|d| m.destination() == Path::new(d)) && src.is_dir() {
            overlay::reown_to(src, facts.host_id, facts.id_size)?;
            // A plain bind below the mount dir: the engine's volume path is often not
            // traversable by the container's root (e.g. /var/lib/docker is 0710).
            let target = mdir.join("m").join(i.to_string());
            std::fs::create_dir_all(&target).map_err(host::io("create", &target))?;
            nix::mount::mount(Some(src.as_path()), &target, None::<&str>, nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC, None::<&str>)
                .map_err(host::sys("bind", &target))?;
            facts.idmapped_sources.push((src.clone(), target));
            continue;
        }
        let target = mdir.join("m").join(i.to_string());
        let recursive = m.options().as_ref().is_some_and(|o| o.iter().any(|o| o == "rbind"));
        match idmap::clone_idmapped(src, &target, userns.as_fd(), recursive) {
            Ok(()) => facts.idmapped_sources.push((src.clone(), target)),
            // The engine asked for this ID-mapped mount (validation checked that its mappings
            // are the container's, those of `userns`): without it, it must not run.
            Err(e) if m.uid_mappings().is_some() => return Err(e.into()),
            Err(e) => tracing::warn!("bind source kept as is (files owned by host ids show as nobody): {e}"),
        }
    }

    // Host-backed data dirs, seeded with what the image has there, owned by the range.
    rec.data_root = Some(data_root.clone());
    rec.data_persistent = persistent;
    if let Some(parent) = data_root.parent().filter(|_| !persistent) {
        crate::sidecar::create_traversable(parent).map_err(host::io("create", parent))?;
    }
    save(rec, sdir)?;
    if let Ok(owner) = std::fs::metadata(&data_root).map(|m| m.uid()) {
        if owner != facts.host_id {
            // Kept from a run with another range: re-own it to this one.
            overlay::shift_tree(&data_root, owner, facts.host_id, facts.id_size)?;
        }
    }
    let data_mnt = mdir.join("d");
    for d in DATA_DIRS {
        if crate::rewrite::has_mount(spec, Path::new(d)) {
            continue;
        }
        let src = data_root.join(&d[1..]);
        let fresh = !src.exists();
        std::fs::create_dir_all(&src).map_err(host::io("create data dir", &src))?;
        let seed = rootfs.join(&d[1..]);
        if fresh && seed.is_dir() && std::fs::read_dir(&seed).is_ok_and(|mut r| r.next().is_some()) {
            // A data dir seeded in part (e.g. its file system is full) would be a broken
            // /var/lib/docker: the create fails instead, with cp's first complaint.
            let out = std::process::Command::new("cp").arg("-a").arg(seed.join(".")).arg(&src).stdin(std::process::Stdio::null()).output();
            let why = match &out {
                Ok(o) if o.status.success() => None,
                Ok(o) => Some(String::from_utf8_lossy(&o.stderr).lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("cp failed").to_string()),
                Err(e) => Some(format!("cannot run cp: {e}")),
            };
            if let Some(why) = why {
                return Err(LifecycleError::Other { id: id.into(), msg: format!("cannot seed data dir {} from the image's {d}: {why}", src.display()) });
            }
        }
        if fresh {
            // The seed and the directories just made (up to the data root) join the range.
            overlay::shift_tree(&src, 0, facts.host_id, facts.id_size)?;
            for dir in src.ancestors().skip(1).take_while(|a| a.starts_with(&data_root)) {
                std::os::unix::fs::chown(dir, Some(facts.host_id), Some(facts.host_id)).map_err(host::io("chown", dir))?;
            }
        }
        facts.data_dirs.push(DataDir { destination: d.into(), source: data_mnt.join(&d[1..]) });
    }
    if !facts.data_dirs.is_empty() {
        // The data root is bound below the mount dir, once for all its dirs: the engine's
        // layer dir is often not traversable by the container's root (/var/lib/docker is
        // 0710); the data root and the dirs on the way down are the range's own.
        std::fs::create_dir_all(&data_mnt).map_err(host::io("create", &data_mnt))?;
        nix::mount::mount(Some(data_root.as_path()), &data_mnt, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).map_err(host::sys("bind", &data_mnt))?;
    }
    super::fault_point("datadirs");
    // The syscall supervisor (rewrite/supervisor.rs) runs in the FUSE server: only with one.
    let env = std::env::var(crate::facts::ENV_SUPERVISOR).ok();
    if crate::facts::supervisor_wanted(spec, env.as_deref()) && Path::new("/dev/fuse").exists() {
        facts.supervisor_socket = host::supervisor::socket_path(&mdir);
    }
    Ok(facts)
}

/// The device nodes asked for by annotation (see rewrite/devices.rs), made by host root in a
/// tmpfs of their own at `dir` (below the mount dir: teardown unmounts it with the rest). A fresh
/// tmpfs is not nodev wherever the mount dir lives (/run often is); it is 0700 and owned by the
/// container's root, so no other host user reaches the nodes.
fn dev_nodes(dir: &Path, fuse: bool, tun: bool, host_id: u32) -> Result<PathBuf, String> {
    use nix::sys::stat::{makedev, mknod, Mode as M, SFlag};
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let opts = format!("mode=700,uid={host_id},gid={host_id},size=16k");
    nix::mount::mount(Some("nestrun-dev"), dir, Some("tmpfs"), nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NOEXEC, Some(opts.as_str()))
        .map_err(|e| format!("mount tmpfs on {}: {e}", dir.display()))?;
    for (want, name, host, minor, ann) in [(fuse, "fuse", "/dev/fuse", 229, crate::facts::ANN_DEV_FUSE), (tun, "tun", "/dev/net/tun", 200, crate::facts::ANN_DEV_TUN)] {
        if !want {
            continue;
        }
        if !Path::new(host).exists() {
            return Err(format!("{ann}=true, but the host has no {host} (load the kernel module)"));
        }
        let node = dir.join(name);
        mknod(&node, SFlag::S_IFCHR, M::from_bits_truncate(0o666), makedev(10, minor)).map_err(|e| format!("mknod {}: {e}", node.display()))?;
        // mknod applies the umask
        std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o666)).map_err(|e| format!("chmod {}: {e}", node.display()))?;
        std::os::unix::fs::chown(&node, Some(host_id), Some(host_id)).map_err(|e| format!("chown {}: {e}", node.display()))?;
    }
    Ok(dir.to_path_buf())
}
