//! File I/O, directory listing, attribute changes and xattrs of the id-shifting view (see
//! [`super::shift`]).
use std::ffi::{CString, OsStr};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use fuser::{Errno, FileAttr, TimeOrNow};

use super::shift::ShiftFs;
use super::shift_ids::{self as ids, XattrPolicy};
use super::shift_sys::{self as sys, Res};

/// What the engine's open flags keep (creation, O_NOFOLLOW and the like were the kernel's
/// business already).
const OPEN_KEEP: i32 = libc::O_ACCMODE | libc::O_APPEND | libc::O_TRUNC | libc::O_SYNC | libc::O_DSYNC;

/// Attribute changes of one SETATTR.
#[derive(Debug, Default)]
pub struct Change {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
    pub fh: Option<u64>,
}

fn timespec(t: &TimeOrNow) -> Option<libc::timespec> {
    match t {
        TimeOrNow::Now => None,
        TimeOrNow::SpecificTime(t) => Some(match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => libc::timespec { tv_sec: d.as_secs() as i64, tv_nsec: d.subsec_nanos() as i64 },
            Err(e) => {
                let d = e.duration();
                let (s, n) = (d.as_secs() as i64, d.subsec_nanos() as i64);
                if n == 0 { libc::timespec { tv_sec: -s, tv_nsec: 0 } } else { libc::timespec { tv_sec: -s - 1, tv_nsec: 1_000_000_000 - n } }
            }
        }),
    }
}

fn is(st: &libc::stat, fmt: u32) -> bool {
    st.st_mode & libc::S_IFMT == fmt
}

impl ShiftFs {
    fn file(&self, fh: u64) -> Res<Arc<OwnedFd>> {
        self.files.lock().expect("files").get(&fh).cloned().ok_or(Errno::EBADF)
    }

    /// Open a regular file (anything else: a FIFO would block the server, a device is never
    /// opened by it).
    pub fn open(&self, ino: u64, flags: i32) -> Res<u64> {
        let fd = self.fd(ino)?;
        let st = sys::fstat(&fd)?;
        if !is(&st, libc::S_IFREG) {
            return Err(if is(&st, libc::S_IFDIR) { Errno::EISDIR } else { Errno::EACCES });
        }
        let file = sys::reopen(&fd, flags & OPEN_KEEP)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.lock().expect("files").insert(fh, Arc::new(file));
        Ok(fh)
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Res<Vec<u8>> {
        sys::pread(&*self.file(fh)?, size, offset)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Res<u32> {
        sys::pwrite(&*self.file(fh)?, data, offset)
    }

    pub fn release(&self, fh: u64) {
        self.files.lock().expect("files").remove(&fh);
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Res<()> {
        let f = self.file(fh)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&*f);
        // SAFETY: plain syscalls on our descriptor.
        let r = unsafe { if datasync { libc::fdatasync(fd) } else { libc::fsync(fd) } };
        if r < 0 { Err(sys::errno()) } else { Ok(()) }
    }

    pub fn opendir(&self, ino: u64) -> Res<u64> {
        let fd = self.fd(ino)?;
        if !is(&sys::fstat(&fd)?, libc::S_IFDIR) {
            return Err(Errno::ENOTDIR);
        }
        let dir = sys::reopen(&fd, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs.lock().expect("dirs").insert(fh, Arc::new(Mutex::new(dir)));
        Ok(fh)
    }

    /// The entries from `offset` on: (ino, next offset, d_type, name).
    pub fn readdir(&self, fh: u64, offset: u64) -> Res<Vec<sys::Dirent>> {
        let dir = self.dirs.lock().expect("dirs").get(&fh).cloned().ok_or(Errno::EBADF)?;
        let fd = dir.lock().expect("dir");
        sys::getdents(&fd, offset)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().expect("dirs").remove(&fh);
    }

    /// SETATTR, in the order tar restores a file: size, owner (which clears setuid/setgid), mode,
    /// times. Owners are the engine's ids, shifted; one outside the range is refused (EINVAL).
    pub fn setattr(&self, ino: u64, c: &Change) -> Res<FileAttr> {
        let fd = if c.fh.is_some() { self.held(ino)? } else { self.fd(ino)? };
        let st = sys::fstat(&fd)?;
        let up = |id: Option<u32>| id.map(|i| self.shift.up(i).ok_or(Errno::EINVAL)).transpose();
        let (uid, gid) = (up(c.uid)?, up(c.gid)?);
        if let Some(size) = c.size {
            if !is(&st, libc::S_IFREG) {
                return Err(if is(&st, libc::S_IFDIR) { Errno::EISDIR } else { Errno::EINVAL });
            }
            let f = match c.fh.and_then(|fh| self.file(fh).ok()) {
                Some(f) => f,
                None => Arc::new(sys::reopen(&fd, libc::O_WRONLY)?),
            };
            // SAFETY: plain syscall on our descriptor.
            if unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&*f), size as libc::off_t) } < 0 {
                return Err(sys::errno());
            }
        }
        if uid.is_some() || gid.is_some() {
            sys::chown(&fd, uid, gid)?;
        }
        if let Some(mode) = c.mode.filter(|_| !is(&st, libc::S_IFLNK)) {
            sys::chmod(&fd, mode & 0o7777)?;
        }
        if c.atime.is_some() || c.mtime.is_some() {
            sys::utimens(&fd, c.atime.as_ref().map(timespec), c.mtime.as_ref().map(timespec))?;
        }
        self.getattr(ino, c.fh.is_some())
    }

    fn xattr_target(&self, ino: u64) -> Res<Option<Arc<OwnedFd>>> {
        let fd = self.fd(ino)?;
        // A symlink's xattrs cannot be reached race-free through its handle: none shown, none set.
        Ok((!is(&sys::fstat(&fd)?, libc::S_IFLNK)).then_some(fd))
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Res<Vec<u8>> {
        let policy = ids::policy(name.as_bytes());
        let Some(fd) = self.xattr_target(ino)?.filter(|_| policy != XattrPolicy::Hidden) else { return Err(Errno::NO_XATTR) };
        let cname = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
        let v = sys::getxattr(&fd, &cname)?;
        match policy {
            XattrPolicy::Capability => ids::cap_down(&self.shift, &v).ok_or(Errno::NO_XATTR),
            _ => Ok(v),
        }
    }

    /// The names the engine may see (NUL-terminated, concatenated).
    pub fn listxattr(&self, ino: u64) -> Res<Vec<u8>> {
        let Some(fd) = self.xattr_target(ino)? else { return Ok(Vec::new()) };
        let all = sys::listxattr(&fd)?;
        let mut out = Vec::new();
        for n in all.split(|b| *b == 0).filter(|n| !n.is_empty() && ids::policy(n) != XattrPolicy::Hidden) {
            out.extend_from_slice(n);
            out.push(0);
        }
        Ok(out)
    }

    fn writable_xattr(&self, ino: u64, name: &OsStr) -> Res<(Arc<OwnedFd>, CString, XattrPolicy)> {
        let policy = ids::policy(name.as_bytes());
        if policy == XattrPolicy::Hidden {
            // trusted.overlay.* would steer the overlay (opaque dirs, redirects): EPERM, as to
            // an unprivileged caller; the rest is not supported here (tar skips both).
            return Err(if name.as_bytes().starts_with(b"trusted.") { Errno::EPERM } else { Errno::ENOTSUP });
        }
        let fd = self.xattr_target(ino)?.ok_or(Errno::EPERM)?;
        Ok((fd, CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?, policy))
    }

    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> Res<()> {
        let (fd, cname, policy) = self.writable_xattr(ino, name)?;
        let value = match policy {
            XattrPolicy::Capability => ids::cap_up(&self.shift, value).ok_or(Errno::EINVAL)?,
            _ => value.to_vec(),
        };
        sys::setxattr(&fd, &cname, &value, flags & (libc::XATTR_CREATE | libc::XATTR_REPLACE))
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> Res<()> {
        let (fd, cname, _) = self.writable_xattr(ino, name)?;
        sys::removexattr(&fd, &cname)
    }
}
