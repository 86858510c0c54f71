//! System calls of the id-shifting view (see [`super::shift`]), all on descriptors: an object of
//! the container's tree is only ever reached as a single name below an O_PATH directory
//! descriptor, with `openat2` refusing symlinks, magic links, mount crossings and anything not
//! beneath that directory; an object is then worked on through its own descriptor
//! (`AT_EMPTY_PATH`, or the `/proc/self/fd/N` magic link, which names that very inode and is
//! never resolved through the tree).
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use fuser::Errno;

pub type Res<T> = Result<T, Errno>;

pub fn errno() -> Errno {
    Errno::from_i32(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
}

fn cvt(r: libc::c_int) -> Res<libc::c_int> {
    if r < 0 { Err(errno()) } else { Ok(r) }
}

fn cvt_long(r: libc::c_long) -> Res<libc::c_long> {
    if r < 0 { Err(errno()) } else { Ok(r) }
}

/// A FUSE name as one path component: never empty, `.`, `..`, or with a slash or NUL (the
/// kernel sends none of these; refused all the same).
pub fn component(name: &OsStr) -> Res<CString> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.len() > 255 {
        return Err(Errno::EINVAL);
    }
    CString::new(b).map_err(|_| Errno::EINVAL)
}

const EMPTY: &CStr = c"";

/// `struct open_how` (the libc crate's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dir, name)` confined to `dir`: no symlink or magic link followed, no mount crossed,
/// nothing outside `dir` (a name is one component, so that is the entry itself).
pub fn open_beneath(dir: &OwnedFd, name: &CStr, flags: i32, mode: u32) -> Res<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
        mode: if flags & libc::O_CREAT != 0 { mode as u64 } else { 0 },
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV,
    };
    // SAFETY: valid pointers for the call's duration; a non-negative result is a new fd.
    let fd = cvt_long(unsafe { libc::syscall(libc::SYS_openat2, dir.as_raw_fd(), name.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>()) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The O_PATH handle of the entry `name` in `dir`.
pub fn handle(dir: &OwnedFd, name: &CStr) -> Res<OwnedFd> {
    open_beneath(dir, name, libc::O_PATH, 0)
}

pub fn fstat(fd: &OwnedFd) -> Res<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid out-pointer; "" with AT_EMPTY_PATH names the descriptor itself.
    cvt(unsafe { libc::fstatat(fd.as_raw_fd(), EMPTY.as_ptr(), &mut st, libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

/// The magic link naming the inode behind `fd` (only for non-symlinks: see the module doc).
pub fn proc_path(fd: &OwnedFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL")
}

/// Open the inode behind an O_PATH handle for I/O. The caller checked its type (regular file
/// or directory): the magic link leads to that inode, never through the tree.
pub fn reopen(fd: &OwnedFd, flags: i32) -> Res<OwnedFd> {
    let p = proc_path(fd);
    // SAFETY: a valid C string; a non-negative result is a new fd.
    let r = cvt(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOCTTY) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// Change the owner of the object itself (a symlink is not followed). -1: unchanged.
pub fn chown(fd: &OwnedFd, uid: Option<u32>, gid: Option<u32>) -> Res<()> {
    let (u, g) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
    // SAFETY: plain syscall on our descriptor.
    cvt(unsafe { libc::fchownat(fd.as_raw_fd(), EMPTY.as_ptr(), u, g, libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW) }).map(drop)
}

/// chmod of the object behind an O_PATH handle (never a symlink: the caller skips those).
pub fn chmod(fd: &OwnedFd, mode: u32) -> Res<()> {
    // fchmodat2 (Linux 6.6) takes AT_EMPTY_PATH; older kernels: the magic link.
    // SAFETY: plain syscalls on our descriptor / a valid C string.
    let r = unsafe { libc::syscall(libc::SYS_fchmodat2, fd.as_raw_fd(), EMPTY.as_ptr(), mode, libc::AT_EMPTY_PATH) };
    if r == 0 {
        return Ok(());
    }
    match errno() {
        Errno::ENOSYS | Errno::EINVAL => cvt(unsafe { libc::chmod(proc_path(fd).as_ptr(), mode) }).map(drop),
        e => Err(e),
    }
}

/// Set times of the object itself (None: leave, Some(None): now).
pub fn utimens(fd: &OwnedFd, atime: Option<Option<libc::timespec>>, mtime: Option<Option<libc::timespec>>) -> Res<()> {
    let ts = |t: Option<Option<libc::timespec>>| match t {
        None => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        Some(None) => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
        Some(Some(t)) => t,
    };
    let times = [ts(atime), ts(mtime)];
    // SAFETY: valid pointers; "" with AT_EMPTY_PATH names the descriptor itself.
    cvt(unsafe { libc::utimensat(fd.as_raw_fd(), EMPTY.as_ptr(), times.as_ptr(), libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW) }).map(drop)
}

pub fn readlink(fd: &OwnedFd) -> Res<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: buf is valid for its length; "" reads the symlink the O_PATH descriptor is.
    let n = unsafe { libc::readlinkat(fd.as_raw_fd(), EMPTY.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

pub fn mkdir(dir: &OwnedFd, name: &CStr, mode: u32) -> Res<()> {
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub fn mknod(dir: &OwnedFd, name: &CStr, mode: u32) -> Res<()> {
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}

pub fn symlink(target: &CStr, dir: &OwnedFd, name: &CStr) -> Res<()> {
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// A new name for the object behind `fd` (never a path: AT_EMPTY_PATH).
pub fn link(fd: &OwnedFd, dir: &OwnedFd, name: &CStr) -> Res<()> {
    cvt(unsafe { libc::linkat(fd.as_raw_fd(), EMPTY.as_ptr(), dir.as_raw_fd(), name.as_ptr(), libc::AT_EMPTY_PATH) }).map(drop)
}

pub fn unlink(dir: &OwnedFd, name: &CStr, flags: i32) -> Res<()> {
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub fn rename(from: &OwnedFd, name: &CStr, to: &OwnedFd, newname: &CStr, flags: u32) -> Res<()> {
    cvt(unsafe { libc::renameat2(from.as_raw_fd(), name.as_ptr(), to.as_raw_fd(), newname.as_ptr(), flags) }).map(drop)
}

pub fn statfs(fd: &OwnedFd) -> Res<libc::statfs> {
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub fn pread(fd: &OwnedFd, size: u32, offset: u64) -> Res<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), offset as libc::off_t) };
    if n < 0 {
        return Err(errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

pub fn pwrite(fd: &OwnedFd, data: &[u8], offset: u64) -> Res<u32> {
    let mut done = 0;
    while done < data.len() {
        // SAFETY: the slice is valid for its length.
        let n = unsafe { libc::pwrite(fd.as_raw_fd(), data[done..].as_ptr().cast(), data.len() - done, (offset + done as u64) as libc::off_t) };
        match n {
            n if n > 0 => done += n as usize,
            0 => break,
            _ if done > 0 => break,
            _ => return Err(errno()),
        }
    }
    Ok(done as u32)
}

/// A directory entry: (ino, next offset, d_type, name).
pub type Dirent = (u64, u64, u8, Vec<u8>);

/// Directory entries from `offset` on (the file system's own cookies): (ino, next offset, type,
/// name), `.` and `..` included.
pub fn getdents(fd: &OwnedFd, offset: u64) -> Res<Vec<Dirent>> {
    // SAFETY: plain syscall on our descriptor.
    if unsafe { libc::lseek(fd.as_raw_fd(), offset as libc::off_t, libc::SEEK_SET) } < 0 {
        return Err(errno());
    }
    let mut buf = vec![0u8; 32 * 1024];
    // SAFETY: buf is valid for its length.
    let n = cvt_long(unsafe { libc::syscall(libc::SYS_getdents64, fd.as_raw_fd(), buf.as_mut_ptr(), buf.len()) })?;
    Ok(parse_dirents(&buf[..n as usize]))
}

/// Parse `linux_dirent64` records.
pub fn parse_dirents(b: &[u8]) -> Vec<Dirent> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 19 <= b.len() {
        let ino = u64::from_ne_bytes(b[at..at + 8].try_into().expect("8"));
        let off = u64::from_ne_bytes(b[at + 8..at + 16].try_into().expect("8"));
        let reclen = u16::from_ne_bytes(b[at + 16..at + 18].try_into().expect("2")) as usize;
        if reclen < 19 || at + reclen > b.len() {
            break;
        }
        let name = &b[at + 19..at + reclen];
        let name = &name[..name.iter().position(|c| *c == 0).unwrap_or(name.len())];
        out.push((ino, off, b[at + 18], name.to_vec()));
        at += reclen;
    }
    out
}

/// xattr calls on the inode behind an O_PATH handle, through its magic link (not for symlinks:
/// the caller answers for those itself).
pub fn getxattr(fd: &OwnedFd, name: &CStr) -> Res<Vec<u8>> {
    let p = proc_path(fd);
    loop {
        // SAFETY: valid C strings; a NULL buffer of size 0 asks for the length.
        let len = unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            return Err(errno());
        }
        let mut buf = vec![0u8; len as usize];
        let n = unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            n if n >= 0 => {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            _ if errno() == Errno::ERANGE => continue, // grew in between
            _ => return Err(errno()),
        }
    }
}

pub fn listxattr(fd: &OwnedFd) -> Res<Vec<u8>> {
    let p = proc_path(fd);
    loop {
        let len = unsafe { libc::listxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            return Err(errno());
        }
        let mut buf = vec![0u8; len as usize];
        let n = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            n if n >= 0 => {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            _ if errno() == Errno::ERANGE => continue,
            _ => return Err(errno()),
        }
    }
}

pub fn setxattr(fd: &OwnedFd, name: &CStr, value: &[u8], flags: i32) -> Res<()> {
    cvt(unsafe { libc::setxattr(proc_path(fd).as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), flags) }).map(drop)
}

pub fn removexattr(fd: &OwnedFd, name: &CStr) -> Res<()> {
    cvt(unsafe { libc::removexattr(proc_path(fd).as_ptr(), name.as_ptr()) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_components() {
        for bad in ["", ".", "..", "a/b", "/", "x\0y"] {
            assert!(component(OsStr::new(bad)).is_err(), "{bad:?}");
        }
        assert!(component(OsStr::new(&"n".repeat(256))).is_err());
        for good in ["a", "...", ".pivot_root123", "with space", "ü"] {
            assert_eq!(component(OsStr::new(good)).unwrap().as_bytes(), good.as_bytes());
        }
    }

    #[test]
    fn dirents_parse_and_stop_at_a_short_record() {
        let rec = |ino: u64, off: u64, t: u8, name: &[u8]| {
            let len = (19 + name.len() + 1).div_ceil(8) * 8;
            let mut r = Vec::new();
            r.extend_from_slice(&ino.to_ne_bytes());
            r.extend_from_slice(&off.to_ne_bytes());
            r.extend_from_slice(&(len as u16).to_ne_bytes());
            r.push(t);
            r.extend_from_slice(name);
            r.resize(len, 0);
            r
        };
        let mut b = rec(5, 1, 4, b".");
        b.extend(rec(9, 2, 8, b"file-with-a-long-name"));
        let mut short = rec(10, 3, 8, b"x");
        short.truncate(20);
        b.extend(short);
        let d = parse_dirents(&b);
        assert_eq!(d, vec![(5, 1, 4, b".".to_vec()), (9, 2, 8, b"file-with-a-long-name".to_vec())]);
    }
}
