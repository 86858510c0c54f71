//! The overlay rootfs an engine hands over cannot be ID-mapped itself (EINVAL). Rebuild it:
//! each lower layer becomes an ID-mapped clone, the upper and work dirs (the container's own
//! layer, usually empty) are owned by the container's root range, and host root mounts a new
//! overlay from them (trusted.* xattrs keep working, so Docker-made opaque dirs stay opaque).
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

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

/// Build the ID-mapped overlay at `dir/rootfs`. Returns the mount points made, in mount order
/// (the caller records them before anything else can fail, and unmounts them in reverse).
pub fn rebuild(layers: &Layers, dir: &Path, host_id: u32, size: u32, userns: BorrowedFd, made: &mut Vec<PathBuf>) -> Result<PathBuf, HostError> {
    let mut lower_opts = Vec::new();
    for (i, l) in layers.lowers.iter().enumerate() {
        let target = dir.join("l").join(i.to_string());
        made.push(target.clone());
        idmap::clone_idmapped(l, &target, userns, false)?;
        lower_opts.push(target.to_string_lossy().into_owned());
    }
    let mut data = format!("lowerdir={}", lower_opts.join(":"));
    if let (Some(u), Some(w)) = (&layers.upper, &layers.work) {
        for d in [u, w] {
            let owner = std::fs::metadata(d).map_err(io("stat", d))?.uid();
            if owner != host_id {
                shift_tree(d, owner, host_id, size)?;
            }
        }
        data += &format!(",upperdir={},workdir={}", u.display(), w.display());
    }
    // The engine's own overlay over the same upper stays mounted; index=off makes the kernel
    // accept the shared upper/work (it warns) instead of refusing with EBUSY.
    data += ",index=off";
    let target = dir.join("rootfs");
    std::fs::create_dir_all(&target).map_err(io("create", &target))?;
    made.push(target.clone());
    mount(Some("overlay"), &target, Some("overlay"), MsFlags::empty(), Some(data.as_str())).map_err(sys("mount overlay at", &target))?;
    Ok(target)
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
}
