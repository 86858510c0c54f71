//! The chown fallback, for kernels that cannot ID-map overlay lower layers (Linux < 5.19) or
//! file systems that refuse ID-mapped mounts, and when `NESTRUN_IDMAP=off` forces it. Instead
//! of an ID-mapped view, the container gets files really owned by its range:
//! - an overlay's lower layers (shared with the engine and other containers: never touched) are
//!   copied per container (`cp -a --reflink=auto`, so a reflink file system shares the data)
//!   into a directory beside the upper dir and re-owned to the range;
//! - a plain directory rootfs (a bundle's own) is re-owned in place, as the upper dir always is.
//!
//! Cost: O(files) per start (plus O(bytes) for the copies without reflinks), where ID-mapped
//! layers are O(1); `scripts/bench` measures both.
use std::path::{Path, PathBuf};
use std::process::Command;

use super::overlay::shift_tree;
use super::{io, HostError};

/// How the lower layers of a rebuilt overlay are made.
pub enum Lowers<'a> {
    /// ID-mapped clones through this user namespace.
    IdMapped(std::os::fd::BorrowedFd<'a>),
    /// Copies below this directory, re-owned to the range.
    Copied(&'a Path),
}

/// True when `NESTRUN_IDMAP=off` asks for the chown fallback.
pub fn forced() -> bool {
    std::env::var("NESTRUN_IDMAP").is_ok_and(|v| v == "off")
}

/// True for the errors a kernel or file system gives when it cannot ID-map (then the fallback
/// applies); other errors (no space, a missing layer) are reported as they are.
pub fn refuses_idmap(e: &HostError) -> bool {
    use nix::errno::Errno;
    matches!(e, HostError::Sys { source: Errno::EINVAL | Errno::EPERM | Errno::EOPNOTSUPP | Errno::ENOSYS, .. })
}

/// Copy `src` to `dst` (replacing it) and re-own the copy from host ids to the range at
/// `host_id`.
pub fn copy_shifted(src: &Path, dst: &Path, host_id: u32, size: u32) -> Result<PathBuf, HostError> {
    if dst.exists() {
        std::fs::remove_dir_all(dst).map_err(io("remove stale copy", dst))?;
    }
    std::fs::create_dir_all(dst).map_err(io("create", dst))?;
    let out = Command::new("cp")
        .args(["-a", "--reflink=auto", "--"])
        .arg(src.join("."))
        .arg(dst)
        .output()
        .map_err(io("run cp for", dst))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().replace('\n', "; ");
        return Err(HostError::Io { what: "copy lower layer to", path: dst.to_path_buf(), source: std::io::Error::other(msg) });
    }
    shift_tree(dst, 0, host_id, size)?;
    Ok(dst.to_path_buf())
}

/// Re-own a directory rootfs to the range at `host_id` (from whichever range it has now) and
/// bind it at `target`.
pub fn bind_shifted(rootfs: &Path, target: &Path, host_id: u32, size: u32) -> Result<(), HostError> {
    super::overlay::reown_to(rootfs, host_id, size)?;
    std::fs::create_dir_all(target).map_err(io("create", target))?;
    nix::mount::mount(Some(rootfs), target, None::<&str>, nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC, None::<&str>)
        .map_err(super::sys("bind", target))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn copies_are_re_owned_and_the_source_is_untouched() {
        if !nix::unistd::geteuid().is_root() {
            return; // chown needs root
        }
        let base = std::env::temp_dir().join(format!("nestrun-chownfs-{}", std::process::id()));
        let (src, dst) = (base.join("src"), base.join("dst"));
        std::fs::create_dir_all(src.join("etc")).unwrap();
        std::fs::write(src.join("etc/f"), b"x").unwrap();
        std::os::unix::fs::lchown(src.join("etc/f"), Some(100), Some(101)).unwrap();
        std::os::unix::fs::symlink("f", src.join("etc/l")).unwrap();
        super::copy_shifted(&src, &dst, 1 << 20, 65536).unwrap();
        let m = std::fs::symlink_metadata(dst.join("etc/f")).unwrap();
        assert_eq!((m.uid(), m.gid()), ((1 << 20) + 100, (1 << 20) + 101));
        assert_eq!(std::fs::symlink_metadata(dst.join("etc/l")).unwrap().uid(), 1 << 20);
        assert_eq!(std::fs::metadata(&dst).unwrap().uid(), 1 << 20);
        assert_eq!(std::fs::symlink_metadata(src.join("etc/f")).unwrap().uid(), 100, "the source was changed");
        let _ = std::fs::remove_dir_all(&base);
    }
}
