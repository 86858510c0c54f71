//! The syscall supervisor's socket on the host: where it lives (below the container's mount
//! dir, reachable by host root only) and binding it before the container is created, so the
//! init's filter load finds it listening (`fuse::supervisor` serves it, in `fuse-serve`).
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::HostError;

/// The longest path a unix socket address holds (sun_path, with its NUL).
const SUN_PATH_MAX: usize = 107;

/// The socket of the container whose mount dir is `mount_dir`; None when the path is too long
/// for a socket address (a long `NESTRUN_MNT_DIR`): no supervisor then.
pub fn socket_path(mount_dir: &Path) -> Option<PathBuf> {
    let p = mount_dir.join("sv.sock");
    if p.as_os_str().len() > SUN_PATH_MAX {
        tracing::warn!("supervisor socket path {} is longer than a socket address allows: no syscall supervisor", p.display());
        return None;
    }
    Some(p)
}

/// Bind and listen on `path` (mode 0600: host root only; the mount dir is 0711 and unlistable).
/// Returns a descriptor >= 3 without close-on-exec, for the server to inherit
/// (`fuse::ServeConfig::supervisor_fd`); the caller closes it once the server is started.
pub fn listen(path: &Path) -> Result<OwnedFd, HostError> {
    let _ = std::fs::remove_file(path);
    let l = std::os::unix::net::UnixListener::bind(path).map_err(super::io("bind supervisor socket", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(super::io("chmod", path))?;
    // F_DUPFD: a copy at 3 or above (clear of the stdio the child's are put on), and without
    // FD_CLOEXEC, so `fuse-serve` inherits it.
    let fd = nix::fcntl::fcntl(l.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD(3)).map_err(super::sys("dup supervisor socket", path))?;
    // SAFETY: fcntl returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_fit_a_socket_address() {
        let id = "a".repeat(64);
        let dir = Path::new("/run/nestrun-mnt").join(format!("{id}-0123abcd"));
        assert_eq!(socket_path(&dir).unwrap().as_os_str().len(), 98, "a docker id under the default mount dir");
        assert!(socket_path(&Path::new("/var/lib/a-rather-long-mount-dir-set-by-hand").join(format!("{id}-0123abcd"))).is_none());
    }

    #[test]
    fn the_socket_is_root_only_and_inheritable() {
        let path = std::env::temp_dir().join(format!("nestrun-sv-listen-{}", std::process::id()));
        let fd = listen(&path).unwrap();
        assert!(fd.as_raw_fd() >= 3);
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_eq!(flags & libc::FD_CLOEXEC, 0);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok(), "listening");
        drop(fd);
        let _ = std::fs::remove_file(&path);
    }
}
