//! [`ProcFs`] served by `fuser` over /dev/fuse: the INIT handshake, FORGET and INTERRUPT,
//! and every request unless the connection runs over io_uring (see [`super::uring`]).

use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

use super::server::{ProcFs, MAX_REQUEST, OPEN_FLAGS, TTL};

pub struct Fuser {
    pub fs: Arc<ProcFs>,
    /// Ask the kernel for FUSE over io_uring at INIT (the rings are ready).
    pub offer_uring: bool,
    /// Set when the kernel agreed: the server must then register its rings, or every
    /// request waits for them.
    pub uring: Arc<AtomicBool>,
}

impl Filesystem for Fuser {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Both only lower the defaults; an Err carries the nearest accepted value.
        let _ = config.set_max_write(MAX_REQUEST).or_else(|v| config.set_max_write(v));
        let _ = config.set_max_readahead(MAX_REQUEST).or_else(|v| config.set_max_readahead(v));
        // Offered by the kernel only when the host enabled it (fuse.enable_uring).
        if self.offer_uring && config.add_capabilities(InitFlags::FUSE_OVER_IO_URING).is_ok() {
            self.uring.store(true, Ordering::Release);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name.as_encoded_bytes()) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let meta = mode.is_some() || uid.is_some() || gid.is_some();
        match self.fs.setattr(req.uid(), ino.0, meta, size) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(req.uid(), ino.0, flags.acc_mode() == OpenAccMode::O_RDONLY) {
            Ok(fh) => reply.opened(FileHandle(fh), OPEN_FLAGS),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // The kernel names a lock owner on direct_io READs only (not on page-cache ones).
        match self.fs.read(ino.0, fh.0, offset, size, req.pid(), lock_owner.is_some()) {
            Ok((data, range)) => reply.data(&data[range]),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(req.uid(), ino.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(ino.0, fh.0);
        reply.ok();
    }

    /// Not sent for files opened with FOPEN_NOFLUSH; ENOSYS also makes the kernel stop
    /// sending FLUSH for good (fc->no_flush), and close(2) then succeeds without it.
    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lo: LockOwner, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match self.fs.readdir(ino.0, offset) {
            Ok(entries) => {
                for (ino, next, kind, name) in entries {
                    if reply.add(INodeNo(ino), next, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.fs.access(req.uid(), ino.0, mask) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
