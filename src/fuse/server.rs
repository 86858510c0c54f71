//! The `fuser::Filesystem`: a small fixed tree whose files mirror their
//! in-container destinations (`proc/meminfo` -> /proc/meminfo, ...).
//!
//! - Every open file is direct_io and rendered afresh when read at offset 0
//!   (but see [`RENDER_TTL`]); later offsets of the same open file read that
//!   snapshot (so a reader using small buffers sees one consistent text, like
//!   lxcfs). FOPEN_NOFLUSH spares close(2) a FLUSH round trip.
//! - st_size is never 0: busybox `cat` (sendfile) reads nothing from a
//!   size-0 file, and sendfile stops at st_size even on direct_io files
//!   (read(2) does not). So lookup/getattr render the file and report its
//!   length plus a quarter, rounded up to 4 KiB (at least 4096), leaving room
//!   for numbers that grow within the 1 s attribute TTL.
//! - The mount has allow_other but no default_permissions: this server checks
//!   access itself. Everything is readable by all; only sysctl files can be
//!   written, and only by requests whose uid is the owner (the container's
//!   root as seen from the host); anything else gets EACCES.
//! - Render errors (e.g. the cgroup is gone) answer EIO.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::files::{Kind, Sources, FILES};
use super::sysctl::Entry;

const TTL: Duration = Duration::from_secs(1);
const MIN_SIZE: u64 = 4096;

/// Largest READ/WRITE request (max_write and max_readahead, hence the connection's
/// max_pages). A direct_io read pins the reader's buffer up to max_pages pages for every
/// request and marks them all dirty afterwards, however few bytes the reply holds: with
/// fuser's default (16 MiB, clamped by the kernel to 256 pages) a reader with a 1 MiB
/// buffer paid ~50 µs per read(2) for pinning alone (open+read+close of /proc/uptime 88 µs
/// with a 1 MiB buffer vs 34 µs with 4 KiB). Every file here is far smaller; a larger one
/// (cpuinfo of a many-CPU host) is read in several requests within one read(2), each
/// served from the same per-open snapshot. Sysctl writes are a few bytes.
const MAX_REQUEST: u32 = 32 * 1024;

/// How long a rendered file is served again to reads at offset 0 (by any reader) instead of
/// rendering it anew. One USER_HZ tick: the resolution the files themselves have (/proc/stat
/// counts 10 ms ticks, /proc/uptime shows hundredths of a second), so a cached text is at most
/// one unit of its last digit behind; the other inputs are coarser anyway (loadavg changes
/// every 5 s, the kernel folds its per-cpu memory counters every second and memory cgroup
/// statistics every 2 s). A render costs 10-60 µs of kernel work (procfs/cgroupfs text
/// generation, /proc/cpuinfo and /proc/stat above all); a reader polling in a loop now pays
/// it once per tick. The sysctls are not cached (their writes show at once); errors are not
/// cached (a gone cgroup answers EIO at most this long after its last good render).
pub const RENDER_TTL: Duration = Duration::from_millis(10);

/// The st_size reported for a file whose current content is `len` bytes.
fn size_for(len: usize) -> u64 {
    let len = len as u64;
    (len + len / 4).div_ceil(MIN_SIZE).max(1) * MIN_SIZE
}

/// A file's text and when it was rendered.
type Rendered = (Instant, Arc<[u8]>);

#[derive(Debug)]
enum Content {
    Dir(Vec<usize>),
    File(Kind),
    Sysctl(usize),
}

#[derive(Debug)]
struct Node {
    name: String,
    parent: usize,
    content: Content,
}

/// The filesystem. Node index i has inode number i + 1 (root = 1).
pub struct ProcFs {
    nodes: Vec<Node>,
    sources: Sources,
    sysctls: Vec<Entry>,
    owner_uid: u32,
    owner_gid: u32,
    created: SystemTime,
    next_fh: AtomicU64,
    snapshots: Mutex<HashMap<u64, Arc<[u8]>>>,
    /// Last render of each file node (see [`RENDER_TTL`]).
    rendered: Mutex<HashMap<usize, Rendered>>,
    /// Last reported st_size per file node: getattr answers from it instead of rendering the
    /// file a second time on every open (it only ever grows, so a reader never sees a size
    /// smaller than content it read before).
    sizes: Mutex<HashMap<usize, u64>>,
}

impl ProcFs {
    pub fn new(sources: Sources, sysctls: Vec<Entry>, owner_uid: u32, owner_gid: u32) -> Self {
        let mut fs = ProcFs {
            nodes: vec![Node { name: String::new(), parent: 0, content: Content::Dir(Vec::new()) }],
            sources,
            sysctls: Vec::new(),
            owner_uid,
            owner_gid,
            created: SystemTime::now(),
            next_fh: AtomicU64::new(1),
            snapshots: Mutex::new(HashMap::new()),
            rendered: Mutex::new(HashMap::new()),
            sizes: Mutex::new(HashMap::new()),
        };
        for &(path, kind) in FILES {
            fs.add(path, Content::File(kind));
        }
        for (i, e) in sysctls.iter().enumerate() {
            fs.add(e.rel, Content::Sysctl(i));
        }
        fs.sysctls = sysctls;
        fs
    }

    fn add(&mut self, path: &str, content: Content) {
        let parts: Vec<&str> = path.split('/').collect();
        let Some((last, dirs)) = parts.split_last() else { return };
        let mut parent = 0;
        for dir in dirs {
            parent = match self.child(parent, dir) {
                Some(idx) => idx,
                None => self.push(parent, dir, Content::Dir(Vec::new())),
            };
        }
        self.push(parent, last, content);
    }

    fn push(&mut self, parent: usize, name: &str, content: Content) -> usize {
        let idx = self.nodes.len();
        self.nodes.push(Node { name: name.to_string(), parent, content });
        if let Content::Dir(children) = &mut self.nodes[parent].content {
            children.push(idx);
        }
        idx
    }

    fn child(&self, dir: usize, name: &str) -> Option<usize> {
        match &self.nodes.get(dir)?.content {
            Content::Dir(children) => children.iter().copied().find(|&c| self.nodes[c].name == name),
            _ => None,
        }
    }

    fn node(&self, ino: INodeNo) -> Option<(usize, &Node)> {
        let idx = usize::try_from(ino.0).ok()?.checked_sub(1)?;
        self.nodes.get(idx).map(|n| (idx, n))
    }

    fn attr(&self, idx: usize) -> FileAttr {
        let (kind, perm, size, nlink) = match &self.nodes[idx].content {
            Content::Dir(c) => (FileType::Directory, 0o555, 0, 2 + c.len() as u32),
            Content::File(_) => (FileType::RegularFile, 0o444, self.file_size(idx), 1),
            Content::Sysctl(_) => (FileType::RegularFile, 0o644, MIN_SIZE, 1),
        };
        FileAttr {
            ino: INodeNo(idx as u64 + 1),
            size,
            blocks: size.div_ceil(512),
            atime: self.created,
            mtime: self.created,
            ctime: self.created,
            crtime: self.created,
            kind,
            perm,
            nlink,
            uid: self.owner_uid,
            gid: self.owner_gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn file_size(&self, idx: usize) -> u64 {
        let cached = self.sizes.lock().unwrap_or_else(|e| e.into_inner()).get(&idx).copied();
        cached.unwrap_or_else(|| {
            let size = self.render(idx).map_or(MIN_SIZE, |d| size_for(d.len()));
            self.note_size(idx, size);
            size
        })
    }

    fn note_size(&self, idx: usize, size: u64) {
        let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        let e = sizes.entry(idx).or_insert(size);
        *e = (*e).max(size);
    }

    /// Whether `req` may write node `idx`.
    fn may_write(&self, req: &Request, idx: usize) -> bool {
        matches!(self.nodes[idx].content, Content::Sysctl(_)) && req.uid() == self.owner_uid
    }

    fn render(&self, idx: usize) -> Result<Arc<[u8]>, Errno> {
        match &self.nodes[idx].content {
            Content::File(kind) => {
                let mut rendered = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((at, data)) = rendered.get(&idx) {
                    if at.elapsed() < RENDER_TTL {
                        return Ok(data.clone());
                    }
                }
                let data: Arc<[u8]> = self
                    .sources
                    .render(*kind)
                    .map_err(|e| {
                        rendered.remove(&idx);
                        tracing::warn!(file = self.nodes[idx].name.as_str(), error = %e, "render failed");
                        Errno::EIO
                    })?
                    .into();
                rendered.insert(idx, (Instant::now(), data.clone()));
                Ok(data)
            }
            Content::Sysctl(i) => Ok(self.sysctls[*i].read().into_bytes().into()),
            Content::Dir(_) => Err(Errno::EISDIR),
        }
    }
}

impl Filesystem for ProcFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Both only lower the defaults; an Err carries the nearest accepted value.
        let _ = config.set_max_write(MAX_REQUEST).or_else(|v| config.set_max_write(v));
        let _ = config.set_max_readahead(MAX_REQUEST).or_else(|v| config.set_max_readahead(v));
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.node(parent).and_then(|(p, _)| self.child(p, name.to_str()?));
        match found {
            Some(idx) => reply.entry(&TTL, &self.attr(idx), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Some((idx, _)) => reply.attr(&TTL, &self.attr(idx)),
            None => reply.error(Errno::ENOENT),
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
        let Some((idx, _)) = self.node(ino) else { return reply.error(Errno::ENOENT) };
        // Only the truncation that `echo 1 > file` (O_TRUNC) sends is accepted,
        // as a no-op, on writable files; chmod/chown are refused.
        if mode.is_some() || uid.is_some() || gid.is_some() || !self.may_write(req, idx) || size.is_some_and(|s| s != 0) {
            return reply.error(Errno::EPERM);
        }
        reply.attr(&TTL, &self.attr(idx));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some((idx, node)) = self.node(ino) else { return reply.error(Errno::ENOENT) };
        if matches!(node.content, Content::Dir(_)) {
            return reply.error(Errno::EISDIR);
        }
        if flags.acc_mode() != OpenAccMode::O_RDONLY && !self.may_write(req, idx) {
            return reply.error(Errno::EACCES);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        // NOFLUSH: close(2) sends no FLUSH (a synchronous round trip the reader waits for);
        // nothing here needs one (writes are synchronous, no locks).
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some((idx, _)) = self.node(ino) else { return reply.error(Errno::ENOENT) };
        let mut snaps = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        if offset == 0 || !snaps.contains_key(&fh.0) {
            match self.render(idx) {
                Ok(data) => {
                    if matches!(self.nodes[idx].content, Content::File(_)) {
                        self.note_size(idx, size_for(data.len()));
                    }
                    snaps.insert(fh.0, data);
                }
                Err(e) => return reply.error(e),
            }
        }
        let data = &snaps[&fh.0];
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(size as usize).min(data.len());
        reply.data(&data[start..end]);
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
        let Some((idx, node)) = self.node(ino) else { return reply.error(Errno::ENOENT) };
        if !self.may_write(req, idx) {
            return reply.error(Errno::EACCES);
        }
        let Content::Sysctl(i) = node.content else { return reply.error(Errno::EACCES) };
        if offset != 0 {
            return reply.error(Errno::EINVAL);
        }
        match self.sysctls[i].write(data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => {
                tracing::info!(error = %e, "rejected sysctl write");
                reply.error(Errno::EINVAL)
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.snapshots.lock().unwrap_or_else(|e| e.into_inner()).remove(&fh.0);
        reply.ok();
    }

    /// Not sent for files opened with FOPEN_NOFLUSH; ENOSYS also makes the kernel stop
    /// sending FLUSH for good (fc->no_flush), and close(2) then succeeds without it.
    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lo: LockOwner, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some((idx, node)) = self.node(ino) else { return reply.error(Errno::ENOENT) };
        let Content::Dir(children) = &node.content else { return reply.error(Errno::ENOTDIR) };
        let mut entries = vec![(idx, FileType::Directory, "."), (node.parent, FileType::Directory, "..")];
        for &c in children {
            let kind = if matches!(self.nodes[c].content, Content::Dir(_)) { FileType::Directory } else { FileType::RegularFile };
            entries.push((c, kind, self.nodes[c].name.as_str()));
        }
        for (i, (c, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(c as u64 + 1), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let Some((idx, node)) = self.node(ino) else { return reply.error(Errno::ENOENT) };
        let is_dir = matches!(node.content, Content::Dir(_));
        if (mask.contains(AccessFlags::W_OK) && !self.may_write(req, idx)) || (mask.contains(AccessFlags::X_OK) && !is_dir) {
            return reply.error(Errno::EACCES);
        }
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size_for(0), 4096);
        assert_eq!(size_for(1500), 4096);
        assert_eq!(size_for(4000), 8192);
        assert_eq!(size_for(84598), 106496);
    }
}
