//! The supervisor's `mount(2)` arm: a new procfs or sysfs mounted anywhere in the container (an
//! inner runc's /proc and /sys, `unshare -p --mount-proc`, systemd-nspawn) is mounted by the
//! supervisor on the caller's behalf, in its namespaces and with its credentials
//! (`host::nestedmount`), with the container's emulated files placed over it: every level of
//! nesting reads them, each reader its own container's figures. Every other mount, and any
//! trapped mount the supervisor cannot read or does not handle (a remount, a bind, flags it
//! does not know, a caller without CAP_SYS_ADMIN), is let through to the kernel unchanged
//! (CONTINUE): what is at stake there is emulation, never a permission, since the kernel checks
//! it then.
//!
//! The caller's arguments are read once from its memory (the strings at most PATH_MAX bytes, the
//! option string one page, as the kernel copies them), its files (/proc/<pid>/{status,uid_map,
//! gid_map,ns/*,root,cwd}, a descriptor it names as `/proc/self/fd/N`) are opened, then the
//! notification is checked to be still pending: all of it was the caller's.
//!
//! The new mount API: `fsopen("proc")` and `fsopen("sysfs")` answer ENOSYS, as on a kernel
//! without it, so that libmount (util-linux >= 2.39's `mount -t proc`, which tries the new API
//! first) and other callers fall back to mount(2), which the supervisor handles. (A context made
//! by `fsopen` would reach the mount tree through `move_mount`, with nothing telling the
//! supervisor it is a procfs.) runc 1.3's private procfs handle falls back the same way, to a
//! clone of /proc. `fsopen` of any other file system goes ahead.
use std::collections::HashMap;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use super::mount_args::{self as args, FsType};
use super::notify::{self, Notif, Reply};
use crate::host::nestedmount::{self as nm, Caller, Request, Target};

/// How long a helper may take (a target behind a file system that does not answer).
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);
const PATH_MAX: usize = 4096;
const PAGE: usize = 4096;

/// Where the emulated files come from.
#[derive(Debug)]
pub struct Emulated {
    /// The FUSE server's mountpoint on the host.
    pub root: PathBuf,
    /// Every emulated file, relative to it (`fuse::emulated_files`).
    pub files: Vec<PathBuf>,
    /// A detached clone of each, made at the first mount; each mount gets clones of these.
    pub masters: HashMap<PathBuf, OwnedFd>,
}

impl Emulated {
    pub fn new(root: PathBuf, files: Vec<PathBuf>) -> Self {
        Emulated { root, files, masters: HashMap::new() }
    }

    /// A detached clone of emulated file `rel`, to attach once.
    fn clone_of(&mut self, rel: &std::path::Path) -> Option<OwnedFd> {
        if !self.masters.contains_key(rel) {
            let master = nm::clone_tree(&self.root.join(rel)).map_err(|e| tracing::warn!("clone {}: {e}", rel.display())).ok()?;
            self.masters.insert(rel.to_path_buf(), master);
        }
        nm::clone_again(&self.masters[rel]).map_err(|e| tracing::warn!("clone {}: {e}", rel.display())).ok()
    }
}

/// Reads the caller's memory as the kernel's own copy from it would (`process_vm_readv`: only
/// readable mappings, unlike /proc/<pid>/mem, which also reads PROT_NONE pages).
struct Mem(i32);

impl Mem {
    fn read_at(&self, buf: &mut [u8], addr: u64) -> Option<usize> {
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
        // SAFETY: `local` covers `buf`; the kernel checks `remote` against the caller's mappings.
        let n = unsafe { libc::process_vm_readv(self.0, &local, 1, &remote, 1, 0) };
        (n > 0).then_some(n as usize)
    }
}

/// The bytes before the NUL of the string at `addr` in the caller's memory, at most `max` of
/// them with the NUL; read a page at a time (a string ending before an unreadable page is fine).
/// Errors: EFAULT (unreadable), ENAMETOOLONG (no NUL in `max` bytes).
fn read_str(read: impl Fn(&mut [u8], u64) -> Option<usize>, addr: u64, max: usize) -> Result<Vec<u8>, i32> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < max {
        let room = (PAGE - (at as usize % PAGE)).min(max - out.len());
        let mut buf = vec![0u8; room];
        let n = read(&mut buf, at).ok_or(libc::EFAULT)?;
        if let Some(i) = buf[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&buf[..i]);
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        at = at.checked_add(n as u64).ok_or(libc::EFAULT)?;
    }
    Err(libc::ENAMETOOLONG)
}

/// Answer a trapped mount(2).
pub fn answer(em: &mut Emulated, fd: BorrowedFd, n: &Notif) -> Reply {
    let [source, target, fstype, flags, data, _] = n.args;
    let Some((attrs, read_only)) = args::attrs(flags) else { return Reply::Continue };
    if target == 0 || fstype == 0 {
        return Reply::Continue;
    }
    let pid = n.pid as i32;
    let mem = Mem(pid);
    let Some(fs) = read_str(|b, a| mem.read_at(b, a), fstype, 8).ok().and_then(|t| FsType::parse(&t)) else { return Reply::Continue };
    match prepare(em, pid, &mem, fs, (source, target, data), (attrs, read_only)) {
        Some((caller, req)) => {
            if !notify::id_valid(fd, n.id) {
                return Reply::Gone;
            }
            match nm::mount_for(&caller, &req, HELPER_TIMEOUT) {
                Ok(()) => {
                    tracing::debug!(pid, fs = fs.name(), "nested mount with emulated files");
                    Reply::Value(0)
                }
                Err(e) => Reply::Error(e as i32),
            }
        }
        None => Reply::Continue,
    }
}

/// Answer a trapped fsopen(2): ENOSYS for "proc" and "sysfs" (see the module doc), else
/// CONTINUE (as for an unreadable name: the kernel answers).
pub fn answer_fsopen(n: &Notif) -> Reply {
    let mem = Mem(n.pid as i32);
    match read_str(|b, a| mem.read_at(b, a), n.args[0], 8).ok().and_then(|t| FsType::parse(&t)) {
        Some(_) => Reply::Error(libc::ENOSYS),
        None => Reply::Continue,
    }
}

/// What the helper needs of caller `pid`; None when it lacks CAP_SYS_ADMIN (the kernel then
/// refuses the call itself) or cannot be read.
fn caller(pid: i32) -> Option<Caller> {
    let creds = args::creds(&super::caller::status(pid)?)?;
    if creds.caps.effective & (1 << args::CAP_SYS_ADMIN) == 0 {
        return None;
    }
    let map = |name: &str| std::fs::read_to_string(format!("/proc/{pid}/{name}")).ok();
    let uid = args::inside(&map("uid_map")?, creds.fsuid)?;
    let gid = args::inside(&map("gid_map")?, creds.fsgid)?;
    Caller::open(pid, uid, gid, (creds.caps.effective, creds.caps.permitted, creds.caps.inheritable)).ok()
}

/// Answer a trapped umount2(2): when it names a procfs or sysfs mount with emulated files
/// over it (which would make it busy), those are detached first, as the caller; the kernel
/// then does the call as asked (CONTINUE) and answers it. A lazy unmount (MNT_DETACH takes the
/// files along), a relative path, `UMOUNT_NOFOLLOW` or anything unreadable: CONTINUE at once.
pub fn answer_umount(fd: BorrowedFd, n: &Notif) -> Reply {
    let [target, flags, ..] = n.args;
    const UMOUNT_NOFOLLOW: u64 = 8;
    if target == 0 || flags & (libc::MNT_DETACH as u64 | libc::MNT_EXPIRE as u64 | UMOUNT_NOFOLLOW) != 0 {
        return Reply::Continue;
    }
    let pid = n.pid as i32;
    let Some((caller, paths)) = overlays_under(pid, target) else { return Reply::Continue };
    if !notify::id_valid(fd, n.id) {
        return Reply::Gone;
    }
    if let Err(e) = nm::unmount_for(&caller, &paths, HELPER_TIMEOUT) {
        tracing::debug!(pid, "emulated files over a procfs being unmounted: {e}");
    }
    Reply::Continue
}

/// The caller and the emulated files over the procfs or sysfs mount at `target` (resolved in
/// the caller's root), if it has any.
fn overlays_under(pid: i32, target: u64) -> Option<(Caller, Vec<std::ffi::CString>)> {
    let mem = Mem(pid);
    let path = read_str(|b, a| mem.read_at(b, a), target, PATH_MAX).ok()?;
    if path.first() != Some(&b'/') {
        return None;
    }
    let mnt_id = nm::procfs_mount_root(pid, &path)?;
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    let paths: Vec<std::ffi::CString> = args::overlay_mounts(&info, mnt_id).into_iter().filter_map(|p| std::ffi::CString::new(p).ok()).collect();
    if paths.is_empty() {
        return None;
    }
    Some((caller(pid)?, paths))
}

/// Read the rest of the caller's arguments and open what the helper needs; None: let the
/// kernel have it.
fn prepare(em: &mut Emulated, pid: i32, mem: &Mem, fs: FsType, (source, target, data): (u64, u64, u64), (attrs, read_only): (u64, bool)) -> Option<(Caller, Request)> {
    let read = |b: &mut [u8], a: u64| mem.read_at(b, a);
    let target = read_str(read, target, PATH_MAX).ok()?;
    let source = if source == 0 { None } else { Some(read_str(read, source, PATH_MAX).ok()?) };
    let options = if data == 0 { Vec::new() } else { args::options(&read_str(read, data, PAGE).ok()?)? };
    let target = match args::own_fd(&target) {
        Some(n) => Target::Fd(nm::caller_fd(pid, n).ok()?),
        None => Target::Path(std::ffi::CString::new(target).ok()?),
    };
    let caller = caller(pid)?;
    let overlays = fs
        .overlays(&em.files)
        .into_iter()
        .filter_map(|(rel, dest)| Some((em.clone_of(&rel)?, std::ffi::CString::new(dest.into_os_string().into_encoded_bytes()).ok()?)))
        .collect();
    let fstype = match fs {
        FsType::Proc => c"proc",
        FsType::Sysfs => c"sysfs",
    };
    let source = match source {
        Some(s) => Some(std::ffi::CString::new(s).ok()?),
        None => None,
    };
    Some((caller, Request { fstype, source, options, attrs, read_only, target, overlays }))
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn strings_from_memory() {
        let dir = std::env::temp_dir().join(format!("nestrun-readstr-{}", std::process::id()));
        let mut bytes = vec![b'x'; 3 * PAGE];
        bytes[10..16].copy_from_slice(b"proc\0z");
        bytes[PAGE - 2..PAGE + 3].copy_from_slice(b"ab/c\0");
        std::fs::write(&dir, &bytes).unwrap();
        let f = File::open(&dir).unwrap();
        let f = |b: &mut [u8], a: u64| f.read_at(b, a).ok().filter(|n| *n > 0);
        assert_eq!(read_str(f, 10, 8).unwrap(), b"proc");
        assert_eq!(read_str(f, PAGE as u64 - 2, PATH_MAX).unwrap(), b"ab/c", "across a page");
        assert_eq!(read_str(f, 0, 8), Err(libc::ENAMETOOLONG));
        assert_eq!(read_str(f, PAGE as u64 + 4, PATH_MAX), Err(libc::ENAMETOOLONG), "no NUL in PATH_MAX bytes");
        assert_eq!(read_str(f, 3 * PAGE as u64 - 1, PATH_MAX), Err(libc::EFAULT), "runs off the end");
        assert_eq!(read_str(f, 10 * PAGE as u64, 8), Err(libc::EFAULT));
        std::fs::remove_file(&dir).unwrap();
        // This process's own memory, as the supervisor reads a caller's.
        let own = b"sysfs\0".to_vec();
        let me = Mem(std::process::id() as i32);
        assert_eq!(read_str(|b, a| me.read_at(b, a), own.as_ptr() as u64, 8).unwrap(), b"sysfs");
        assert_eq!(read_str(|b, a| me.read_at(b, a), 8, 8), Err(libc::EFAULT), "an unmapped address");
    }
}
