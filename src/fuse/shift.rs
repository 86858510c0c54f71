//! The engine's view of a running system container's rootfs: an id-shifting passthrough of
//! nestrun's own overlay (the one the container runs on), served by the container's
//! `fuse-serve` and bound over the engine's rootfs path (`host::overlay::cover_shifted`), so
//! that `docker cp` in and out works on the very overlay the container sees, with ownership
//! as under runc: the engine (host root) sees the container's range `[base, base + size)` as
//! `[0, size)` and whatever it creates or chowns to id N lands as `base + N`.
//!
//! The server runs as host root on a tree the container's root controls, so:
//! - Nothing is resolved by path. Every inode is held as an O_PATH descriptor, reached from its
//!   parent's descriptor by a single name with `openat2` (no symlinks, no magic links, no
//!   mount crossing, beneath the parent: see `shift_sys`); operations on an inode use its
//!   descriptor. A rename or symlink race in the container can only make a name point to
//!   another object of the same overlay, never outside it.
//! - The mount has no allow_other: the kernel lets only processes running as host uid 0 (the
//!   engine) use it, so the container, whose uids are the range's, never reaches it; and it has
//!   default_permissions: the kernel checks access against the shifted owners and modes.
//! - Ids outside the range show as 65534 and cannot be set (EINVAL); char and block devices
//!   cannot be made (EPERM); trusted.* and other non-user xattrs cannot be written.
//! - Modes are stored as asked, setuid and setgid bits included: they are relative to the
//!   shifted owner (`base + N`, an unprivileged host uid of the container's range), exactly what
//!   the container's root could set itself; the engine's view is mounted nosuid and nodev.
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};

use super::shift_ids::Shift;
use super::shift_sys::{self as sys, Res};

/// Entry and attribute validity. The container changes the same tree at any time, so the
/// engine's view of a name may lag by up to this long (as any FUSE or NFS client's). An inode the
/// container has removed since is never written to: every operation on a node first checks that
/// the inode is still linked and else answers ESTALE, on which the kernel walks the path again
/// with the cache bypassed (so a file the container deleted is created anew). With no cache at
/// all every path component of every syscall of the engine was a LOOKUP: `docker cp` of a 50 MB
/// tree took 5-10x runc's time.
pub const TTL: Duration = Duration::from_secs(1);

pub const ROOT: u64 = 1;

struct Node {
    fd: Arc<OwnedFd>,
    key: (u64, u64),
    lookups: u64,
}

#[derive(Default)]
struct Table {
    nodes: HashMap<u64, Node>,
    by_key: HashMap<(u64, u64), u64>,
    next: u64,
}

pub struct ShiftFs {
    pub shift: Shift,
    table: Mutex<Table>,
    pub(super) files: Mutex<HashMap<u64, Arc<OwnedFd>>>,
    pub(super) dirs: Mutex<HashMap<u64, Arc<Mutex<OwnedFd>>>>,
    pub(super) next_fh: AtomicU64,
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

pub fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

impl ShiftFs {
    /// Serve the tree whose root directory is `root` (an O_PATH descriptor).
    pub fn new(root: OwnedFd, shift: Shift) -> Res<ShiftFs> {
        let st = sys::fstat(&root)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        let key = (st.st_dev, st.st_ino);
        let mut t = Table { next: ROOT + 1, ..Table::default() };
        t.nodes.insert(ROOT, Node { fd: Arc::new(root), key, lookups: 1 });
        t.by_key.insert(key, ROOT);
        Ok(ShiftFs { shift, table: Mutex::new(t), files: Mutex::default(), dirs: Mutex::default(), next_fh: AtomicU64::new(1) })
    }

    /// The handle of a node, whatever became of its inode.
    pub fn held(&self, ino: u64) -> Res<Arc<OwnedFd>> {
        self.table.lock().expect("table").nodes.get(&ino).map(|n| n.fd.clone()).ok_or(Errno::ESTALE)
    }

    /// The handle of a node whose inode is still linked somewhere in the tree; ESTALE for one
    /// the container removed (see [`TTL`]).
    pub fn fd(&self, ino: u64) -> Res<Arc<OwnedFd>> {
        let fd = self.held(ino)?;
        if sys::fstat(&fd)?.st_nlink == 0 {
            return Err(Errno::ESTALE);
        }
        Ok(fd)
    }

    pub fn attr(&self, ino: u64, st: &libc::stat) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: kind(st.st_mode),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: self.shift.down(st.st_uid),
            gid: self.shift.down(st.st_gid),
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
            flags: 0,
        }
    }

    /// Count a lookup of the object behind `fd` (a new node, or one more reference to the node
    /// that already holds this inode: hard links share one) and answer its attributes.
    fn remember(&self, fd: OwnedFd) -> Res<FileAttr> {
        let st = sys::fstat(&fd)?;
        let key = (st.st_dev, st.st_ino);
        let mut t = self.table.lock().expect("table");
        let ino = match t.by_key.get(&key).copied() {
            Some(ino) => {
                t.nodes.get_mut(&ino).expect("indexed").lookups += 1;
                ino
            }
            None => {
                let ino = t.next;
                t.next += 1;
                t.nodes.insert(ino, Node { fd: Arc::new(fd), key, lookups: 1 });
                t.by_key.insert(key, ino);
                ino
            }
        };
        drop(t);
        Ok(self.attr(ino, &st))
    }

    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let mut t = self.table.lock().expect("table");
        let gone = match t.nodes.get_mut(&ino) {
            Some(node) => {
                node.lookups = node.lookups.saturating_sub(n);
                (node.lookups == 0).then_some(node.key)
            }
            None => None,
        };
        if let Some(key) = gone {
            t.nodes.remove(&ino);
            t.by_key.remove(&key);
        }
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Res<FileAttr> {
        let dir = self.fd(parent)?;
        let fd = sys::handle(&dir, &sys::component(name)?)?;
        self.remember(fd)
    }

    /// `open`: an fstat of a file the engine has open (it may have been removed since: still
    /// answered, as fstat(2) is).
    pub fn getattr(&self, ino: u64, open: bool) -> Res<FileAttr> {
        let fd = if open { self.held(ino)? } else { self.fd(ino)? };
        Ok(self.attr(ino, &sys::fstat(&fd)?))
    }

    /// Owner of an object the engine (running as `uid`:`gid`) creates in `dir`: the shifted
    /// ids, the group of a setgid directory.
    fn new_owner(&self, dir: &OwnedFd, uid: u32, gid: u32) -> Res<(u32, u32)> {
        let st = sys::fstat(dir)?;
        let u = self.shift.up(uid).ok_or(Errno::EPERM)?;
        let g = if st.st_mode & libc::S_ISGID != 0 { st.st_gid } else { self.shift.up(gid).ok_or(Errno::EPERM)? };
        Ok((u, g))
    }

    /// Give a just-made object its owner and exact mode. It was made by host root, so it is
    /// owned by host uid 0 until now: anything else at that name was put there by someone
    /// else in between, and is left alone (EIO).
    fn adopt(&self, fd: &OwnedFd, owner: (u32, u32), mode: Option<u32>) -> Res<()> {
        let st = sys::fstat(fd)?;
        if st.st_uid != 0 {
            return Err(Errno::EIO);
        }
        sys::chown(fd, Some(owner.0), Some(owner.1))?;
        // chown drops setuid/setgid; the process umask applied at creation: set the mode asked.
        if let Some(mode) = mode.filter(|_| st.st_mode & libc::S_IFMT != libc::S_IFLNK) {
            sys::chmod(fd, mode & 0o7777)?;
        }
        Ok(())
    }

    /// Make an entry with `make`, then take it in (owner, mode) and count its lookup.
    fn made(&self, dir: &OwnedFd, name: &std::ffi::CStr, owner: (u32, u32), mode: Option<u32>) -> Res<FileAttr> {
        let fd = sys::handle(dir, name)?;
        self.adopt(&fd, owner, mode)?;
        self.remember(fd)
    }

    pub fn mkdir(&self, uid: u32, gid: u32, parent: u64, name: &OsStr, mode: u32) -> Res<FileAttr> {
        let (dir, name) = (self.fd(parent)?, sys::component(name)?);
        let owner = self.new_owner(&dir, uid, gid)?;
        sys::mkdir(&dir, &name, 0o700)?;
        // A directory made in a setgid directory keeps the bit, as mkdir(2) does.
        let inherit = sys::fstat(&dir)?.st_mode & libc::S_ISGID;
        self.made(&dir, &name, owner, Some((mode & 0o7777) | inherit))
    }

    /// Regular files, FIFOs and sockets; never device nodes.
    pub fn mknod(&self, uid: u32, gid: u32, parent: u64, name: &OsStr, mode: u32) -> Res<FileAttr> {
        let fmt = mode & libc::S_IFMT;
        if ![libc::S_IFREG, libc::S_IFIFO, libc::S_IFSOCK, 0].contains(&fmt) {
            return Err(Errno::EPERM);
        }
        let (dir, name) = (self.fd(parent)?, sys::component(name)?);
        let owner = self.new_owner(&dir, uid, gid)?;
        sys::mknod(&dir, &name, if fmt == 0 { libc::S_IFREG } else { fmt })?;
        self.made(&dir, &name, owner, Some(mode & 0o7777))
    }

    pub fn symlink(&self, uid: u32, gid: u32, parent: u64, name: &OsStr, target: &std::path::Path) -> Res<FileAttr> {
        use std::os::unix::ffi::OsStrExt;
        let (dir, name) = (self.fd(parent)?, sys::component(name)?);
        let target = std::ffi::CString::new(target.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
        let owner = self.new_owner(&dir, uid, gid)?;
        // The target is stored as given and never followed here.
        sys::symlink(&target, &dir, &name)?;
        self.made(&dir, &name, owner, None)
    }

    /// Create and open a regular file: (attributes, file handle).
    pub fn create(&self, uid: u32, gid: u32, parent: u64, name: &OsStr, mode: u32, flags: i32) -> Res<(FileAttr, u64)> {
        let (dir, name) = (self.fd(parent)?, sys::component(name)?);
        let owner = self.new_owner(&dir, uid, gid)?;
        let acc = flags & (libc::O_ACCMODE | libc::O_APPEND | libc::O_SYNC | libc::O_DSYNC);
        let file = match sys::open_beneath(&dir, &name, acc | libc::O_CREAT | libc::O_EXCL, 0o600) {
            Ok(f) => {
                self.adopt(&f, owner, Some(mode & 0o7777))?;
                f
            }
            // Made by someone else since the kernel's lookup: open it, as open(O_CREAT) would.
            Err(Errno::EEXIST) if flags & libc::O_EXCL == 0 => {
                let f = sys::open_beneath(&dir, &name, acc | (flags & libc::O_TRUNC), 0)?;
                if sys::fstat(&f)?.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return Err(Errno::EISDIR);
                }
                f
            }
            Err(e) => return Err(e),
        };
        let attr = self.remember(sys::reopen(&file, libc::O_PATH)?)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.lock().expect("files").insert(fh, Arc::new(file));
        Ok((attr, fh))
    }

    pub fn link(&self, ino: u64, parent: u64, name: &OsStr) -> Res<FileAttr> {
        let (fd, dir, name) = (self.fd(ino)?, self.fd(parent)?, sys::component(name)?);
        if sys::fstat(&fd)?.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return Err(Errno::EPERM);
        }
        sys::link(&fd, &dir, &name)?;
        self.remember(sys::handle(&dir, &name)?)
    }

    pub fn unlink(&self, parent: u64, name: &OsStr, dir_flag: bool) -> Res<()> {
        let (dir, name) = (self.fd(parent)?, sys::component(name)?);
        sys::unlink(&dir, &name, if dir_flag { libc::AT_REMOVEDIR } else { 0 })
    }

    pub fn rename(&self, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr, flags: u32) -> Res<()> {
        // RENAME_WHITEOUT makes a char device 0/0 (an overlay whiteout): refused with the rest.
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            return Err(Errno::EINVAL);
        }
        let (from, name) = (self.fd(parent)?, sys::component(name)?);
        let (to, newname) = (self.fd(newparent)?, sys::component(newname)?);
        sys::rename(&from, &name, &to, &newname, flags)
    }

    pub fn readlink(&self, ino: u64) -> Res<Vec<u8>> {
        sys::readlink(&*self.fd(ino)?)
    }

    pub fn statfs(&self) -> Res<libc::statfs> {
        sys::statfs(&*self.held(ROOT)?)
    }
}
