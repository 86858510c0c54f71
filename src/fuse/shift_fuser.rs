//! [`ShiftFs`] served by `fuser` over /dev/fuse, and its mount (see [`super::shift`]).
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::shift::{ShiftFs, TTL};
use super::shift_io::Change;
use super::shift_sys::Res;

/// Largest READ/WRITE (the kernel's limit of 256 pages).
const MAX_IO: u32 = 1 << 20;

pub struct Shifted(pub Arc<ShiftFs>);

fn entry(r: Res<fuser::FileAttr>, reply: ReplyEntry) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn empty(r: Res<()>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn xattr(r: Res<Vec<u8>>, size: u32, reply: ReplyXattr) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for Shifted {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_IO).or_else(|v| config.set_max_write(v));
        let _ = config.set_max_readahead(MAX_IO).or_else(|v| config.set_max_readahead(v));
        // The server's own writes, truncates and chowns on the overlay drop setuid/setgid bits and
        // file capabilities as the kernel does for the engine (host root) under runc: the kernel
        // need not ask for security.capability before every write and chown (2-3 round trips
        // per file copied in).
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(self.0.lookup(parent.0, name), reply)
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.0.forget(ino.0, nlookup)
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.getattr(ino.0, fh.is_some()) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let c = Change { mode, uid, gid, size, atime, mtime, fh: fh.map(|f| f.0) };
        match self.0.setattr(ino.0, &c) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.0.readlink(ino.0) {
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, _rdev: u32, reply: ReplyEntry) {
        let mode = (mode & libc::S_IFMT) | (mode & 0o7777 & !umask);
        entry(self.0.mknod(req.uid(), req.gid(), parent.0, name, mode), reply)
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        entry(self.0.mkdir(req.uid(), req.gid(), parent.0, name, mode & !umask), reply)
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(self.0.unlink(parent.0, name, false), reply)
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(self.0.unlink(parent.0, name, true), reply)
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        entry(self.0.symlink(req.uid(), req.gid(), parent.0, link_name, target), reply)
    }

    fn rename(&self, _req: &Request, parent: INodeNo, name: &OsStr, newparent: INodeNo, newname: &OsStr, flags: RenameFlags, reply: ReplyEmpty) {
        empty(self.0.rename(parent.0, name, newparent.0, newname, flags.bits()), reply)
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        entry(self.0.link(ino.0, newparent.0, newname), reply)
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.0.open(ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, size: u32, _flags: OpenFlags, _lo: Option<LockOwner>, reply: ReplyData) {
        match self.0.read(fh.0, offset, size) {
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.0.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    /// Nothing to flush (writes are synchronous, locks are the kernel's): ENOSYS makes the kernel
    /// stop sending FLUSH (a round trip per close).
    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lo: LockOwner, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS)
    }

    fn release(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, _lo: Option<LockOwner>, _flush: bool, reply: ReplyEmpty) {
        self.0.release(fh.0);
        reply.ok()
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        empty(self.0.fsync(fh.0, datasync), reply)
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.0.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match self.0.readdir(fh.0, offset) {
            Ok(entries) => {
                for (ino, next, t, name) in entries {
                    let kind = super::shift::kind((t as u32) << 12);
                    if reply.add(INodeNo(ino.max(1)), next, kind, <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&name)) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.0.releasedir(fh.0);
        reply.ok()
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.0.statfs() {
            Ok(s) => reply.statfs(s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree, s.f_bsize as u32, s.f_namelen as u32, s.f_frsize as u32),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, value: &[u8], flags: i32, _position: u32, reply: ReplyEmpty) {
        empty(self.0.setxattr(ino.0, name, value, flags), reply)
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        xattr(self.0.getxattr(ino.0, name), size, reply)
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr(self.0.listxattr(ino.0), size, reply)
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(self.0.removexattr(ino.0, name), reply)
    }

    /// Not sent with default_permissions (the kernel checks); answered all the same.
    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok()
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        match self.0.create(req.uid(), req.gid(), parent.0, name, mode & !umask, flags) {
            Ok((a, fh)) => reply.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }
}

/// What one shifting view serves, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftConfig {
    /// nestrun's own overlay (the container's rootfs, `<mount dir>/rootfs`).
    pub source: std::path::PathBuf,
    /// Where the view is mounted (`<mount dir>/shift`); the runtime binds it over the engine's
    /// rootfs path.
    pub mountpoint: std::path::PathBuf,
    pub base: u32,
    pub size: u32,
}

/// The view's source in mountinfo (its type is `fuse`, or `fuse.nestrun-shift` when mounted
/// through fusermount).
pub const FSNAME: &str = "nestrun-shift";

/// Whether a mount table entry is a shifting view.
pub fn is_view(fs_type: &str, source: &str) -> bool {
    (fs_type == "fuse" || fs_type.starts_with("fuse.")) && source == FSNAME
}

/// Mount the view and serve it from a thread of its own. Returns once mounted (requests wait
/// in the kernel until the thread answers INIT).
pub fn start(cfg: &ShiftConfig) -> Result<(), super::FuseError> {
    let err = |source| super::FuseError::Mount { path: cfg.mountpoint.clone(), source };
    let root = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(&cfg.source)
        .map_err(err)?;
    let fs = ShiftFs::new(root.into(), super::shift_ids::Shift { base: cfg.base, size: cfg.size })
        .map_err(|e| err(std::io::Error::from_raw_os_error(e.code())))?;
    // One descriptor per inode the kernel holds: a large tree needs more than the default 1024.
    raise_nofile();
    std::fs::create_dir_all(&cfg.mountpoint).map_err(err)?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(FSNAME.into()),
        fuser::MountOption::Subtype(FSNAME.into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
    ];
    // No allow_other: only host uid 0 (the engine) may use the view.
    config.acl = fuser::SessionACL::Owner;
    config.n_threads = Some(2);
    let session = fuser::Session::new(Shifted(Arc::new(fs)), &cfg.mountpoint, &config).map_err(err)?;
    let mp = cfg.mountpoint.clone();
    std::thread::Builder::new()
        .name("shift".into())
        .spawn(move || {
            if let Err(e) = session.run() {
                tracing::warn!(mountpoint = %mp.display(), "shifting view ended: {e}");
            }
        })
        .map_err(err)?;
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;

fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
