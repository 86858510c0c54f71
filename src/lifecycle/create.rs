//! `create`: load the bundle, gather facts, rewrite, write the shadow bundle, create through
//! libcontainer, then the post-create host steps (cgroup delegation). Any failure undoes
//! everything made so far before the error is returned.
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;

use super::{gather, teardown, LifecycleError};
use crate::facts::{Mode, ANN_MODE};
use crate::host::cgroup;
use crate::sidecar::{self, Record};
use crate::{bundle, rewrite};

#[derive(Debug, Clone, Default)]
pub struct CreateArgs {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
    pub systemd_cgroup: bool,
    pub detach: bool,
}

/// Plain mode: the `io.nestrun.mode=plain` annotation, or NESTRUN_MODE=plain for suites that
/// drive the binary directly.
pub fn mode_of(spec: &libcontainer::oci_spec::runtime::Spec) -> Mode {
    let ann = spec.annotations().as_ref().and_then(|a| a.get(ANN_MODE).cloned());
    let env = std::env::var("NESTRUN_MODE").ok();
    match ann.or(env).as_deref() {
        Some("plain") => Mode::Plain,
        _ => Mode::System,
    }
}

pub fn create(args: &CreateArgs, root: &Path) -> Result<Container, LifecycleError> {
    super::validate_id(&args.id)?;
    let id = args.id.as_str();
    if super::container_dir(root, id).exists() || sidecar::dir(root, id).exists() {
        return Err(LifecycleError::Exists { id: id.into(), root: root.into() });
    }
    let bundle_dir = std::path::absolute(&args.bundle).unwrap_or_else(|_| args.bundle.clone());
    let loaded = bundle::load(&bundle_dir)?;
    crate::facts::check_annotations(&loaded.spec).map_err(|e| LifecycleError::Other { id: id.into(), msg: e.to_string() })?;
    // Every spec runc refuses at create, refused before anything is made (src/validate/).
    let call = crate::validate::Call { mode: mode_of(&loaded.spec), detach: args.detach, console_socket: args.console_socket.is_some() };
    crate::validate::at_create(&loaded.spec, &call).map_err(|e| LifecycleError::Other { id: id.into(), msg: e.to_string() })?;
    if loaded.spec.annotations().as_ref().is_none_or(|a| !a.contains_key(ANN_MODE)) && std::env::var("NESTRUN_MODE").is_ok_and(|m| m == "plain") {
        // Into the engine's log; not on a bare stderr, which suites driving plain mode through
        // the environment count as a failure (nestrun check shows the setting there).
        if crate::logging::to_file() {
            tracing::warn!("NESTRUN_MODE=plain in the runtime's environment: container {id} runs as written, without a user namespace");
        }
    }
    std::fs::create_dir_all(root.join(sidecar::DIR)).map_err(|source| LifecycleError::State { path: root.into(), source })?;
    let root = std::fs::canonicalize(root).map_err(|source| LifecycleError::State { path: root.into(), source })?;
    let sdir = sidecar::dir(&root, id);
    // create_dir (not _all): of two racing creates of one id, exactly one gets here. A
    // concurrent teardown of the last container may remove the empty `.nestrun` in between:
    // then make it again and retry.
    let mut tries = 0;
    loop {
        match std::fs::create_dir(&sdir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(LifecycleError::Exists { id: id.into(), root }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 10 => {
                tries += 1;
                let _ = std::fs::create_dir_all(root.join(sidecar::DIR));
            }
            r => break r.map_err(|source| LifecycleError::State { path: sdir.clone(), source })?,
        }
    }
    let mut rec = Record { id: id.into(), bundle: bundle_dir.clone(), rootfs: loaded.rootfs.clone(), mode: mode_of(&loaded.spec), ..Record::default() };
    super::fault_point("sidecar");
    let result = gather::save(&rec, &sdir).and_then(|()| create_in(args, &root, &sdir, &bundle_dir, loaded, &mut rec));
    if result.is_err() {
        let _ = rec.save(&sdir);
        teardown(&root, id);
    }
    result
}

fn create_in(
    args: &CreateArgs,
    root: &Path,
    sdir: &Path,
    bundle_dir: &Path,
    loaded: bundle::Loaded,
    rec: &mut Record,
) -> Result<Container, LifecycleError> {
    let bundle::Loaded { spec, rootfs, text } = loaded;
    let rootfs = rootfs.as_path();
    let id = args.id.as_str();
    let (bundle_for_lc, facts) = match rec.mode {
        // Plain mode runs the engine's bundle as written: no shadow, no rewrite.
        Mode::Plain => (bundle_dir.to_path_buf(), None),
        Mode::System => {
            bundle::check_system(&spec, rootfs)?;
            let t = crate::logging::step("gather");
            let facts = gather::gather(&spec, rootfs, id, root, sdir, args.systemd_cgroup, rec)?;
            gather::save(rec, sdir)?;
            drop(t);
            let t = crate::logging::step("rewrite");
            let unknown = bundle::Unknown::of(&text, &spec);
            let mut out = rewrite::rewrite(spec, &facts)?;
            // libcontainer resolves a relative root.path against the bundle: make it absolute.
            if let Some(r) = out.root_mut().as_mut() {
                if r.path().is_relative() {
                    r.set_path(bundle_dir.join(r.path()));
                }
            }
            tracing::debug!(spec = %serde_json::to_string(&out).unwrap_or_default(), "rewritten spec");
            let shadow = sdir.join("bundle");
            bundle::write_shadow(&shadow, &out, &unknown)?;
            drop(t);
            let _t = crate::logging::step("start fuse server");
            let server = start_proc_emulation(&out, &facts, root, sdir, rec)?;
            (shadow, Some((facts, server)))
        }
    };
    let lc = |source| LifecycleError::Libcontainer { id: id.into(), source };
    cgroup::seed_libcgroups();
    // Named v1 hierarchies (name=systemd): libcontainer's intermediate process joins them.
    let named = match facts.as_ref().and_then(|(f, _)| f.cgroup_path.as_ref().filter(|p| p.is_absolute()).map(|p| (p, f.host_id))) {
        Some((p, host_id)) => cgroup::prepare_named(p, host_id)?,
        None => Vec::new(),
    };
    // A pod sandbox's interfaces move in a thread beside libcontainer's create and the attach of
    // the emulated files (host::podnet: as soon as the init has its network namespace).
    let pod_net = facts.as_ref().and_then(|(f, _)| f.pod_net_from.clone());
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let created = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| -> Result<Container, LifecycleError> {
        let moving = pod_net.as_ref().map(|from| {
            let created = &created;
            s.spawn(move || crate::host::podnet::adopt(from, pid_rx, created))
        });
        let t = crate::logging::step("libcontainer create");
        let built = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(root)
            .map_err(lc)?
            .with_pid_file(args.pid_file.as_ref())
            .map_err(lc)?
            .with_console_socket(args.console_socket.as_ref())
            .with_preserved_fds(args.preserve_fds)
            .as_init(&bundle_for_lc)
            .with_systemd(args.systemd_cgroup)
            .with_detach(args.detach)
            .with_no_pivot(args.no_pivot)
            .with_extra_cgroup_procs(named)
            .with_init_pid_channel(moving.is_some().then_some(pid_tx))
            .build()
            .map_err(lc);
        created.store(true, std::sync::atomic::Ordering::Release);
        drop(t);
        let finish = |container: Container| -> Result<Container, LifecycleError> {
            let Some((facts, server)) = facts else { return Ok(container) };
            crate::host::idmap::detach_clones(facts.idmapped_sources.iter().map(|(_, clone)| clone.as_path()));
            if let Some(p) = facts.cgroup_path.as_ref().filter(|p| p.is_absolute()) {
                cgroup::delegate(p, facts.host_id)?;
            }
            super::fault_point("created");
            if let Some(server) = server {
                let _t = crate::logging::step("attach emulated files");
                attach_proc_emulation(&container, server, rec)?;
                shift_cover(root, sdir, rec)?;
            }
            super::fault_point("fuse");
            Ok(container)
        };
        let done = built.and_then(finish);
        if let Some(m) = moving {
            let moved = m.join().map_err(|_| LifecycleError::Other { id: id.into(), msg: "moving the pod's interfaces panicked".into() })?;
            // a failed create's own error first: the move's follows from it
            if done.is_ok() {
                let plan = moved?;
                tracing::debug!(?plan, "pod interfaces moved into the sandbox's network namespace");
            }
        }
        done
    })
}

/// Start the container's FUSE server without waiting for it, so its start-up overlaps the
/// container's creation. Skipped, with a warning, on hosts without /dev/fuse, or when the
/// `io.nestrun.proc=host` annotation asks for the kernel's own files.
fn start_proc_emulation(
    spec: &libcontainer::oci_spec::runtime::Spec,
    facts: &crate::facts::Facts,
    root: &Path,
    sdir: &Path,
    rec: &mut Record,
) -> Result<Option<crate::fuse::Pending>, LifecycleError> {
    let off = spec.annotations().as_ref().and_then(|a| a.get(crate::facts::ANN_PROC)).is_some_and(|v| v == "host");
    if off {
        return Ok(None);
    }
    if !Path::new("/dev/fuse").exists() {
        tracing::warn!("no /dev/fuse on this host: /proc and /sys are the kernel's own");
        return Ok(None);
    }
    let Some(cg) = facts.cgroup_path.as_ref() else { return Ok(None) };
    let mnt = sidecar::mnt_dir(root, &rec.id).join("fuse");
    // The supervisor's socket listens from here on: the init's filter load (during the
    // libcontainer create, before the server is ready) connects to it at once.
    let supervisor = facts.supervisor_socket.as_deref().map(crate::host::supervisor::listen).transpose()?;
    let cfg = crate::fuse::ServeConfig {
        mountpoint: mnt.clone(),
        cgroup_path: cg.to_string_lossy().into_owned(),
        owner_uid: facts.host_id,
        owner_gid: facts.host_id,
        start_time: std::time::SystemTime::now(),
        init_pid: None,
        cgroup_mounts: Some(crate::host::mountinfo::format(
            &crate::host::mountinfo::snapshot().iter().filter(|e| e.fs_type.starts_with("cgroup")).collect::<Vec<_>>(),
        )),
        // The engine's rootfs path is covered (an overlay rootfs): the server also serves the
        // engine an id-shifting view of the container's overlay, for `docker cp`.
        shift: match (&rec.engine_cover, &facts.rootfs) {
            (Some(_), Some(own)) => Some(crate::fuse::ShiftConfig {
                source: own.clone(),
                mountpoint: sidecar::mnt_dir(root, &rec.id).join("shift"),
                base: facts.host_id,
                size: facts.id_size,
            }),
            _ => None,
        },
        supervisor_fd: supervisor.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
    };
    let server = crate::fuse::start(&cfg, None);
    // The server holds the socket now; this process's copy goes.
    drop(supervisor);
    let server = server.map_err(|e| LifecycleError::Other { id: rec.id.clone(), msg: format!("cannot start the /proc emulation: {e}") })?;
    rec.fuse_pid = Some(server.pid().as_raw());
    rec.fuse_mount = Some(mnt);
    gather::save(rec, sdir)?;
    Ok(Some(server))
}

/// Wait for the FUSE server and place its files over /proc and /sys (see `host::inject`).
fn attach_proc_emulation(container: &Container, server: crate::fuse::Pending, rec: &Record) -> Result<(), LifecycleError> {
    server.wait().map_err(|e| LifecycleError::Other { id: rec.id.clone(), msg: format!("cannot start the /proc emulation: {e}") })?;
    let (Some(pid), Some(mnt)) = (container.pid(), rec.fuse_mount.as_ref()) else { return Ok(()) };
    let n = crate::host::inject::attach(pid, &crate::host::inject::pairs(mnt, crate::fuse::emulated_files()))?;
    tracing::debug!(files = n, "emulated /proc and /sys files attached");
    Ok(())
}

/// Bind the server's id-shifting view over the engine's rootfs path (see
/// `host::overlay::cover_shifted`), its device recorded first. No view (the server could not
/// mount it): the read-only cover stays, and `docker cp` in fails loudly.
fn shift_cover(root: &Path, sdir: &Path, rec: &mut Record) -> Result<(), LifecycleError> {
    let Some((engine_rootfs, _)) = rec.engine_cover.clone() else { return Ok(()) };
    let view = sidecar::mnt_dir(root, &rec.id).join("shift");
    // A FUSE file system there (the server mounted it before it said it was ready); else the
    // plain directory of the mount dir's tmpfs, or nothing.
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    if !nix::sys::statfs::statfs(&view).is_ok_and(|s| s.filesystem_type().0 as i64 == FUSE_SUPER_MAGIC) {
        tracing::warn!("no id-shifting view at {}: docker cp into the container stays refused", view.display());
        return Ok(());
    }
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(&view).map(|m| m.dev()).map_err(crate::host::io("stat", &view))?;
    rec.engine_shift = Some(dev);
    gather::save(rec, sdir)?;
    crate::host::overlay::cover_shifted(&engine_rootfs, &view)?;
    Ok(())
}
