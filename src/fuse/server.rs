//! The file system: a small fixed tree whose files mirror their
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
//! - A read through the page cache (sendfile/splice, e.g. busybox `cat`) that gets less than
//!   asked shrinks the kernel's cached size of the file to its text, which would cut the next
//!   such reader's (longer) text there: see `resize` for how the size is set back.
//! - The mount has allow_other but no default_permissions: this server checks
//!   access itself. Everything is readable by all; only sysctl files can be
//!   written, and only by requests whose uid is the owner (the container's
//!   root as seen from the host); anything else gets EACCES.
//! - Values follow the reader: a read at offset 0 renders for the reader's view (the request's
//!   pid, see `reader`), and rendered texts are kept per (file, view). lookup/getattr size the
//!   file from the container's own view. A view whose chosen cgroup fails to render (an inner
//!   container just removed) falls back to the container's own view.
//! - Render errors (e.g. the cgroup is gone) answer EIO.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fuser::{AccessFlags, Errno, FileAttr, FileType, FopenFlags, INodeNo};

use super::files::{Kind, Scope, Sources, FILES};
use super::reader::{Reader, View};
use super::resize::{Restore, Sizes};
use super::sysctl::Entry;

/// Entry and attribute validity.
pub const TTL: Duration = Duration::from_secs(1);

/// How every file is opened. DIRECT_IO: each read(2) reaches the server. NOFLUSH: close(2)
/// sends no FLUSH (a synchronous round trip the reader waits for); nothing here needs one
/// (writes are synchronous, no locks).
pub const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_DIRECT_IO.union(FopenFlags::FOPEN_NOFLUSH);
const MIN_SIZE: u64 = 4096;

/// Largest READ/WRITE request (max_write and max_readahead, hence the connection's
/// max_pages). A direct_io read pins the reader's buffer up to max_pages pages for every
/// request and marks them all dirty afterwards, however few bytes the reply holds: with
/// fuser's default (16 MiB, clamped by the kernel to 256 pages) a reader with a 1 MiB
/// buffer paid ~50 µs per read(2) for pinning alone (open+read+close of /proc/uptime 88 µs
/// with a 1 MiB buffer vs 34 µs with 4 KiB). Every file here is far smaller; a larger one
/// (cpuinfo of a many-CPU host) is read in several requests within one read(2), each
/// served from the same per-open snapshot. Sysctl writes are a few bytes.
pub const MAX_REQUEST: u32 = 32 * 1024;

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
/// A file node and the view it was rendered for.
type RenderKey = (usize, Arc<View>);

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
    /// Whose figures each reader gets.
    reader: Reader,
    sysctls: Vec<Entry>,
    owner_uid: u32,
    owner_gid: u32,
    created: SystemTime,
    next_fh: AtomicU64,
    snapshots: Mutex<HashMap<u64, Arc<[u8]>>>,
    /// Last render of each file node per view (see [`RENDER_TTL`]).
    rendered: Mutex<HashMap<RenderKey, Rendered>>,
    /// Last reported st_size per file node: getattr answers from it instead of rendering the
    /// file a second time on every open (it only ever grows, so a reader never sees a size
    /// smaller than content it read before).
    sizes: Mutex<HashMap<usize, u64>>,
    /// Which files' kernel-cached sizes need setting back (see `resize`).
    resize: Arc<Sizes>,
    /// Request activity, for the server process's trimming (see `memory::Idle`).
    pub idle: Arc<super::memory::Idle>,
}

impl ProcFs {
    pub fn new(sources: Sources, sysctls: Vec<Entry>, owner_uid: u32, owner_gid: u32) -> Self {
        let reader = Reader::new(sources.cgroup.clone(), sources.start_time, sources.init_pid);
        let mut fs = ProcFs {
            nodes: vec![Node { name: String::new(), parent: 0, content: Content::Dir(Vec::new()) }],
            sources,
            reader,
            sysctls: Vec::new(),
            owner_uid,
            owner_gid,
            created: SystemTime::now(),
            next_fh: AtomicU64::new(1),
            snapshots: Mutex::new(HashMap::new()),
            rendered: Mutex::new(HashMap::new()),
            sizes: Mutex::new(HashMap::new()),
            resize: Arc::new(Sizes::new(0)),
            idle: Arc::default(),
        };
        for &(path, kind) in FILES {
            fs.add(path, Content::File(kind));
        }
        for (i, e) in sysctls.iter().enumerate() {
            fs.add(e.rel, Content::Sysctl(i));
        }
        fs.sysctls = sysctls;
        fs.resize = Arc::new(Sizes::new(fs.nodes.len()));
        fs
    }

    /// Lets the server set the kernel's cached file sizes back after sendfile reads (see
    /// `resize`); `restore(ino, size)` sends the notification.
    pub fn restore_sizes_with(&self, restore: Restore) {
        self.resize.start(restore);
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

    /// The node of `ino`. The requests that run the filesystem's code (lookup, getattr, open,
    /// read, write, readdir, ...) look one up, so this is where they count as activity (as
    /// does `release`; the bookkeeping ones, FORGET, FLUSH, STATFS, do not).
    fn node(&self, ino: INodeNo) -> Option<(usize, &Node)> {
        self.idle.touch();
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
            let size = self.render(idx, 0).map_or(MIN_SIZE, |d| size_for(d.len()));
            self.note_size(idx, size);
            size
        })
    }

    fn note_size(&self, idx: usize, size: u64) {
        let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        let e = sizes.entry(idx).or_insert(size);
        *e = (*e).max(size);
    }

    /// Whether host uid `uid` may write node `idx`.
    fn may_write(&self, uid: u32, idx: usize) -> bool {
        matches!(self.nodes[idx].content, Content::Sysctl(_)) && uid == self.owner_uid
    }

    /// The text of node `idx` for reader `pid` (0: the container's own view).
    fn render(&self, idx: usize, pid: u32) -> Result<Arc<[u8]>, Errno> {
        match &self.nodes[idx].content {
            Content::File(kind) => {
                let view = self.reader.view(pid);
                let own = || self.reader.own();
                let text = match self.render_view(idx, *kind, &view) {
                    // The chosen cgroup is gone (an inner container just removed, its reader
                    // with it): the container's own figures, never the host's.
                    Err(_) if *view != *own() => self.render_view(idx, *kind, &own()),
                    r => r,
                };
                text.map_err(|e| {
                    tracing::warn!(file = self.nodes[idx].name.as_str(), error = %e, "render failed");
                    Errno::EIO
                })
            }
            Content::Sysctl(i) => Ok(self.sysctls[*i].read().into_bytes().into()),
            Content::Dir(_) => Err(Errno::EISDIR),
        }
    }

    /// Renders outside the locks: a worker preempted mid-render (io_uring workers are
    /// SCHED_IDLE) must not hold up the others; two may then render the same file at once.
    /// The texts of other views than the one rendered are dropped once expired, when the map
    /// holds more than one view's files: at most the views read within one tick are kept.
    fn render_view(&self, idx: usize, kind: Kind, view: &Arc<View>) -> Result<Arc<[u8]>, super::FuseError> {
        let lock = || self.rendered.lock().unwrap_or_else(|e| e.into_inner());
        let key = (idx, view.clone());
        if let Some((at, data)) = lock().get(&key) {
            if at.elapsed() < RENDER_TTL {
                return Ok(data.clone());
            }
        }
        let (memory, cpu) = (self.reader.cgroup(&view.memory), self.reader.cgroup(&view.cpu));
        match self.sources.render(kind, &Scope { memory: &memory, cpu: &cpu, start: view.start }) {
            Ok(text) => {
                let data: Arc<[u8]> = text.into();
                let mut map = lock();
                if map.len() >= self.nodes.len() && !map.contains_key(&key) {
                    map.retain(|_, (at, _)| at.elapsed() < RENDER_TTL);
                }
                map.insert(key, (Instant::now(), data.clone()));
                Ok(data)
            }
            Err(e) => {
                lock().remove(&key);
                Err(e)
            }
        }
    }
}

/// The operations, as both transports ([`super::fuser_fs`] over /dev/fuse, [`super::uring`]
/// over io_uring) call them: `uid` is the requester's host uid, errors are the errno answered.
impl ProcFs {
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<FileAttr, Errno> {
        let name = std::str::from_utf8(name).map_err(|_| Errno::ENOENT)?;
        let (p, _) = self.node(INodeNo(parent)).ok_or(Errno::ENOENT)?;
        self.child(p, name).map(|idx| self.attr(idx)).ok_or(Errno::ENOENT)
    }

    pub fn getattr(&self, ino: u64) -> Result<FileAttr, Errno> {
        self.node(INodeNo(ino)).map(|(idx, _)| self.attr(idx)).ok_or(Errno::ENOENT)
    }

    /// `meta`: the request changes mode, owner or group. Only the truncation that
    /// `echo 1 > file` (O_TRUNC) sends is accepted, as a no-op, on writable files.
    pub fn setattr(&self, uid: u32, ino: u64, meta: bool, size: Option<u64>) -> Result<FileAttr, Errno> {
        let (idx, _) = self.node(INodeNo(ino)).ok_or(Errno::ENOENT)?;
        if meta || !self.may_write(uid, idx) || size.is_some_and(|s| s != 0) {
            return Err(Errno::EPERM);
        }
        Ok(self.attr(idx))
    }

    /// A new file handle; every file is opened with [`OPEN_FLAGS`].
    pub fn open(&self, uid: u32, ino: u64, read_only: bool) -> Result<u64, Errno> {
        let (idx, node) = self.node(INodeNo(ino)).ok_or(Errno::ENOENT)?;
        if matches!(node.content, Content::Dir(_)) {
            return Err(Errno::EISDIR);
        }
        if !read_only && !self.may_write(uid, idx) {
            return Err(Errno::EACCES);
        }
        self.resize.opening(idx, ino, || self.attr(idx).size);
        Ok(self.next_fh.fetch_add(1, Ordering::Relaxed))
    }

    /// The text of open file `fh` and the range of it a READ of `size` bytes at `offset` by
    /// host pid `pid` (0: unknown) gets. `direct`: the READ carries FUSE_READ_LOCKOWNER (a
    /// direct_io read(2); without it, a read through the page cache, see `resize`).
    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32, pid: u32, direct: bool) -> Result<(Arc<[u8]>, Range<usize>), Errno> {
        let (idx, _) = self.node(INodeNo(ino)).ok_or(Errno::ENOENT)?;
        let snaps = || self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        let kept = if offset == 0 { None } else { snaps().get(&fh).cloned() };
        let data = match kept {
            Some(data) => data,
            None => {
                let data = self.render(idx, pid)?;
                if matches!(self.nodes[idx].content, Content::File(_)) {
                    self.note_size(idx, size_for(data.len()));
                }
                snaps().insert(fh, data.clone());
                data
            }
        };
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(size as usize).min(data.len());
        if end - start < size as usize {
            self.resize.short_read(idx, direct);
        }
        Ok((data, start..end))
    }

    pub fn write(&self, uid: u32, ino: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let (idx, node) = self.node(INodeNo(ino)).ok_or(Errno::ENOENT)?;
        if !self.may_write(uid, idx) {
            return Err(Errno::EACCES);
        }
        let Content::Sysctl(i) = node.content else { return Err(Errno::EACCES) };
        if offset != 0 {
            return Err(Errno::EINVAL);
        }
        self.sysctls[i].write(data).map(|()| data.len() as u32).map_err(|e| {
            tracing::info!(error = %e, "rejected sysctl write");
            Errno::EINVAL
        })
    }

    pub fn release(&self, ino: u64, fh: u64) {
        self.idle.touch();
        self.snapshots.lock().unwrap_or_else(|e| e.into_inner()).remove(&fh);
        if let Some(idx) = usize::try_from(ino).ok().and_then(|i| i.checked_sub(1)).filter(|&i| i < self.nodes.len()) {
            self.resize.released(idx, ino, || self.attr(idx).size);
        }
    }

    /// The entries of directory `ino` after `offset`: (inode, offset of the next entry, type, name).
    pub fn readdir(&self, ino: u64, offset: u64) -> Result<Vec<(u64, u64, FileType, &str)>, Errno> {
        let (idx, node) = self.node(INodeNo(ino)).ok_or(Errno::ENOENT)?;
        let Content::Dir(children) = &node.content else { return Err(Errno::ENOTDIR) };
        let mut entries = vec![(idx, FileType::Directory, "."), (node.parent, FileType::Directory, "..")];
        for &c in children {
            let kind = if matches!(self.nodes[c].content, Content::Dir(_)) { FileType::Directory } else { FileType::RegularFile };
            entries.push((c, kind, self.nodes[c].name.as_str()));
        }
        let entries = entries.into_iter().enumerate().skip(offset as usize);
        Ok(entries.map(|(i, (c, kind, name))| (c as u64 + 1, i as u64 + 1, kind, name)).collect())
    }

    pub fn access(&self, uid: u32, ino: u64, mask: AccessFlags) -> Result<(), Errno> {
        let (idx, node) = self.node(INodeNo(ino)).ok_or(Errno::ENOENT)?;
        let is_dir = matches!(node.content, Content::Dir(_));
        if (mask.contains(AccessFlags::W_OK) && !self.may_write(uid, idx)) || (mask.contains(AccessFlags::X_OK) && !is_dir) {
            return Err(Errno::EACCES);
        }
        Ok(())
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
