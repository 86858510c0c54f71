//! The overlay rootfs an engine hands over cannot be ID-mapped itself (EINVAL). Rebuild it:
//! each lower layer becomes an ID-mapped clone, the upper and work dirs (the container's own
//! layer, usually empty) are owned by the container's root range, and host root mounts a new
//! overlay from them (trusted.* xattrs keep working, so Docker-made opaque dirs stay opaque).
//! The rebuilt overlay has a work dir of its own beside the upper dir: the engine's overlay
//! stays mounted on its work dir, and podman's `volatile` mount marks it so that the kernel
//! refuses any second overlay on it (EINVAL).
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use super::chownfs::Lowers;
use super::{idmap, io, sys, HostError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
}

/// Parse overlay super options. Relative lowerdirs (dockerd mounts with cwd = its overlay2
/// dir and `l/<short>` names) are resolved against the upper dir's grandparent.
pub fn parse_options(opts: &str) -> Option<Layers> {
    let mut lowers = Vec::new();
    let (mut upper, mut work) = (None, None);
    for o in opts.split(',') {
        if let Some(v) = o.strip_prefix("lowerdir=") {
            lowers.extend(v.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
        } else if let Some(v) = o.strip_prefix("lowerdir+=") {
            lowers.push(PathBuf::from(v));
        } else if let Some(v) = o.strip_prefix("upperdir=") {
            upper = Some(PathBuf::from(v));
        } else if let Some(v) = o.strip_prefix("workdir=") {
            work = Some(PathBuf::from(v));
        }
    }
    if lowers.is_empty() {
        return None;
    }
    let base = upper.as_ref().and_then(|u| u.parent()?.parent().map(Path::to_path_buf));
    if lowers.iter().any(|l| l.is_relative()) {
        let base = base?;
        lowers = lowers.into_iter().map(|l| if l.is_relative() { base.join(l) } else { l }).collect();
    }
    Some(Layers { lowers, upper, work })
}

/// Re-own `dir` and everything below from the range starting at `from` to the one at `to`
/// (ids outside the old range, e.g. files an engine wrote as host root, count as range 0).
pub fn shift_tree(dir: &Path, from: u32, to: u32, size: u32) -> Result<u64, HostError> {
    let shift = |id: u32| -> u32 {
        if id >= from && id - from < size {
            to + (id - from)
        } else if id < size {
            to + id
        } else {
            id
        }
    };
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).map_err(io("stat", &p))?;
        let (u, g) = (shift(m.uid()), shift(m.gid()));
        if (u, g) != (m.uid(), m.gid()) {
            std::os::unix::fs::lchown(&p, Some(u), Some(g)).map_err(io("chown", &p))?;
            // chown clears setuid/setgid bits on regular files: put them back.
            if m.is_file() && m.mode() & 0o6000 != 0 {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m.mode() & 0o7777));
            }
            count += 1;
        }
        if m.is_dir() {
            for e in std::fs::read_dir(&p).map_err(io("read", &p))? {
                stack.push(e.map_err(io("read", &p))?.path());
            }
        }
    }
    Ok(count)
}

/// Re-own `dir` and everything below to the range at `host_id`, from whichever range its top
/// directory has now (nothing to do when it has that one already).
pub fn reown_to(dir: &Path, host_id: u32, size: u32) -> Result<(), HostError> {
    let owner = std::fs::metadata(dir).map_err(io("stat", dir))?.uid();
    if owner != host_id {
        shift_tree(dir, owner, host_id, size)?;
    }
    Ok(())
}

/// Prefix of nestrun's own work dirs (teardown removes only directories named so).
pub const OWN_WORK_PREFIX: &str = "nestrun-work-";

/// Where the rebuilt overlay of the container with mount dir `mdir` gets its own work dir: a
/// sibling of the upper dir (overlayfs needs upper and work on the same mount), named after
/// the mount dir so containers of different state roots never share one. None when there is
/// no upper dir or its parent is another file system (then the engine's work dir is used).
pub fn own_work(layers: &Layers, mdir: &Path) -> Option<PathBuf> {
    let upper = layers.upper.as_ref()?;
    let parent = upper.parent()?;
    let (u, p) = (std::fs::metadata(upper).ok()?, std::fs::metadata(parent).ok()?);
    (u.dev() == p.dev()).then(|| parent.join(format!("{OWN_WORK_PREFIX}{:08x}", crate::sidecar::fnv(mdir))))
}

/// True for a path `own_work` makes (a guard before teardown removes a recorded path).
pub fn is_own_work(p: &Path) -> bool {
    p.is_absolute() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(OWN_WORK_PREFIX))
}

/// Build the ID-mapped overlay at `dir/rootfs`, with `work` (from `own_work`, recorded by the
/// caller first) as work dir when given, else the engine's. Returns the mount points made, in
/// mount order (the caller records them before anything else can fail, and unmounts them in
/// reverse).
/// `lowers` says how the lower layers are made: ID-mapped clones, or (the chown fallback)
/// re-owned copies.
pub fn rebuild(layers: &Layers, work: Option<&Path>, dir: &Path, host_id: u32, size: u32, lowers: Lowers, made: &mut Vec<PathBuf>) -> Result<PathBuf, HostError> {
    // ID-mapped layers stay detached when the kernel takes them as descriptors (Linux 6.13;
    // NESTRUN_OVERLAY_FDS=off attaches them and mounts by path, as older kernels need).
    let by_fd = std::env::var("NESTRUN_OVERLAY_FDS").map_or(true, |v| v != "off");
    let fds = match &lowers {
        Lowers::IdMapped(userns) => layers.lowers.iter().map(|l| idmap::idmapped_fd(l, *userns, false)).collect::<Result<Vec<_>, _>>()?,
        Lowers::Copied(_) => Vec::new(),
    };
    let upper_work = match (&layers.upper, &layers.work) {
        (Some(u), Some(engine_work)) => Some((u, own_or_engine_work(u, engine_work, work, host_id, size)?)),
        _ => None,
    };
    let target = dir.join("rootfs");
    std::fs::create_dir_all(&target).map_err(io("create", &target))?;
    if by_fd && !fds.is_empty() {
        made.push(target.clone());
        if idmap::mount_overlay_fds(&fds, upper_work.as_ref().map(|(u, w)| (u.as_path(), w.as_path())), &target)? {
            return Ok(target);
        }
        made.pop();
    }
    let mut lower_opts = Vec::new();
    for (i, l) in layers.lowers.iter().enumerate() {
        let target = match &lowers {
            Lowers::IdMapped(_) => {
                let target = dir.join("l").join(i.to_string());
                made.push(target.clone());
                std::fs::create_dir_all(&target).map_err(io("create", &target))?;
                idmap::attach(&fds[i], &target, idmap::ATTACH_IDMAPPED)?;
                target
            }
            Lowers::Copied(base) => super::chownfs::copy_shifted(l, &base.join(i.to_string()), host_id, size)?,
        };
        lower_opts.push(target.to_string_lossy().into_owned());
    }
    let mut data = format!("lowerdir={}", lower_opts.join(":"));
    if let Some((u, w)) = &upper_work {
        data += &format!(",upperdir={},workdir={}", u.display(), w.display());
    }
    // The engine's own overlay over the same upper stays mounted; index=off makes the kernel
    // accept the shared upper (it warns) instead of refusing with EBUSY.
    data += ",index=off";
    made.push(target.clone());
    mount(Some("overlay"), &target, Some("overlay"), MsFlags::empty(), Some(data.as_str())).map_err(sys("mount overlay at", &target))?;
    Ok(target)
}

/// The upper dir re-owned to the range, and the work dir for the rebuilt overlay: nestrun's own
/// beside the upper (`work`, made empty) or else the engine's, re-owned.
fn own_or_engine_work(u: &Path, engine_work: &Path, work: Option<&Path>, host_id: u32, size: u32) -> Result<PathBuf, HostError> {
    reown_to(u, host_id, size)?;
    Ok(match work {
        Some(w) => {
            // Left over by a create or delete that was killed: start from an empty one.
            if w.exists() {
                std::fs::remove_dir_all(w).map_err(io("remove stale work dir", w))?;
            }
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o700).create(w).map_err(io("create", w))?;
            w.to_path_buf()
        }
        None => {
            reown_to(engine_work, host_id, size)?;
            engine_work.to_path_buf()
        }
    })
}

/// The engine's own overlay at `engine_rootfs` shares its upper dir with nestrun's rebuilt one:
/// writes through both (an engine's `docker cp` into a running container) are undefined for
/// overlayfs (ESTALE seen) and land as host root, which the container sees as nobody. It is
/// covered with a read-only bind of nestrun's overlay: copies out read what the container
/// sees, copies in fail loudly ("read-only file system") instead of corrupting. Once the
/// container's FUSE server is up, `cover_shifted` puts the writable id-shifting view on top;
/// this cover is what stays when there is none. `uncover` checks the cover's device (`own`'s,
/// which the caller records first) before it unmounts anything.
pub fn cover(engine_rootfs: &Path, own: &Path) -> Result<(), HostError> {
    mount(Some(own), engine_rootfs, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(super::sys("cover engine rootfs", engine_rootfs))?;
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if let Err(e) = mount(None::<&str>, engine_rootfs, None::<&str>, ro, None::<&str>) {
        super::unmount(engine_rootfs);
        return Err(super::sys("make read-only", engine_rootfs)(e));
    }
    Ok(())
}

/// Binds the container's id-shifting view (`fuse::ShiftConfig`, mounted at `view` by its FUSE
/// server) over the engine's rootfs path, on top of the read-only cover: the engine then reads
/// and writes the container's own overlay, seeing its range as ids `0..size` (as runc's engine
/// would), and what it writes lands in the range (`fuse::shift`). The caller records the
/// view's device first; `uncover_shifted` checks it before unmounting.
pub fn cover_shifted(engine_rootfs: &Path, view: &Path) -> Result<(), HostError> {
    // A bind keeps the view's nosuid and nodev.
    mount(Some(view), engine_rootfs, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(super::sys("cover engine rootfs with the shifted view", engine_rootfs))
}

/// Removes the bind made by `cover_shifted`. Identified from the mount table (the view's file
/// system type and device), not by stat: once its server is gone (killed with the container)
/// a stat of the view fails with ENOTCONN, and the bind must go all the same.
pub fn uncover_shifted(engine_rootfs: &Path, dev: u64) {
    let want = format!("{}:{}", nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    for _ in 0..4 {
        let entries = super::mountinfo::read();
        match super::mountinfo::at(&entries, engine_rootfs) {
            Some(e) if e.dev == want && crate::fuse::is_shift_view(&e.fs_type, &e.source) => super::unmount(engine_rootfs),
            _ => return,
        }
    }
}

/// Removes the cover(s) made by `cover` (never the engine's own mount below them).
pub fn uncover(engine_rootfs: &Path, dev: u64) {
    for _ in 0..4 {
        match std::fs::metadata(engine_rootfs) {
            Ok(m) if m.dev() == dev => super::unmount(engine_rootfs),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_relative_lowers_resolve_against_overlay2_dir() {
        let l = parse_options("rw,lowerdir=l/AB:l/CD,upperdir=/var/lib/docker/overlay2/x/diff,workdir=/var/lib/docker/overlay2/x/work,index=off").unwrap();
        assert_eq!(l.lowers, vec![PathBuf::from("/var/lib/docker/overlay2/l/AB"), PathBuf::from("/var/lib/docker/overlay2/l/CD")]);
        assert_eq!(l.work, Some(PathBuf::from("/var/lib/docker/overlay2/x/work")));
        assert_eq!(parse_options("rw,upperdir=/a/b/c"), None);
        let ro = parse_options("ro,lowerdir=/s/1:/s/2").unwrap();
        assert_eq!((ro.lowers.len(), ro.upper), (2, None));
    }

    #[test]
    fn own_work_dir_is_a_sibling_of_the_upper_dir() {
        let t = std::env::temp_dir().join(format!("nestrun-ow-{}", std::process::id()));
        std::fs::create_dir_all(t.join("diff")).unwrap();
        let l = Layers { lowers: vec![], upper: Some(t.join("diff")), work: Some(t.join("work")) };
        let w = own_work(&l, Path::new("/run/nestrun-mnt/c1-0000abcd")).unwrap();
        assert_eq!(w.parent(), Some(t.as_path()));
        assert!(is_own_work(&w));
        assert_ne!(w, own_work(&l, Path::new("/run/nestrun-mnt/c2-0000abcd")).unwrap());
        assert!(!is_own_work(&t.join("work")) && !is_own_work(Path::new("nestrun-work-1")));
        assert_eq!(own_work(&Layers { upper: None, ..l }, Path::new("/x")), None);
        std::fs::remove_dir_all(&t).unwrap();
    }
}
