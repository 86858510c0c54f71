//! FUSE requests and replies as the kernel lays them out in an io_uring ring entry
//! (`struct fuse_uring_req_header` plus a payload buffer, include/uapi/linux/fuse.h):
//! the header's `in_out` holds `fuse_in_header` on the way in and `fuse_out_header` on the
//! way out, `op_in` the operation's first argument, `ring_ent_in_out` the commit id and the
//! payload length; the payload holds the rest of the request (a name, written data) and
//! then every argument of the reply. Only what [`ProcFs`] answers is decoded; anything else
//! gets ENOSYS, as fuser answers it. Pure byte work, tested on samples below.

use std::time::{SystemTime, UNIX_EPOCH};

use fuser::{AccessFlags, Errno, FileAttr, FileType};

use super::server::{ProcFs, OPEN_FLAGS, TTL};

/// `sizeof(struct fuse_uring_req_header)`: in_out[128], op_in[128], ring_ent_in_out (32).
pub const HEADER_LEN: usize = 288;
const OP_IN: usize = 128;
const ENT_IN_OUT: usize = 256;
const OUT_HEADER_LEN: usize = 16;

const LOOKUP: u32 = 1;
const GETATTR: u32 = 3;
const SETATTR: u32 = 4;
const OPEN: u32 = 14;
const READ: u32 = 15;
const WRITE: u32 = 16;
const STATFS: u32 = 17;
const RELEASE: u32 = 18;
const OPENDIR: u32 = 27;
const READDIR: u32 = 28;
const RELEASEDIR: u32 = 29;
const ACCESS: u32 = 34;

const FATTR_MODE: u32 = 1 << 0;
const FATTR_UID: u32 = 1 << 1;
const FATTR_GID: u32 = 1 << 2;
const FATTR_SIZE: u32 = 1 << 3;
/// `fuse_read_in.read_flags`: set on direct_io READs, never on page-cache ones.
const READ_LOCKOWNER: u32 = 1 << 1;

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4).map_or(0, |s| u32::from_ne_bytes(s.try_into().unwrap_or_default()))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8).map_or(0, |s| u64::from_ne_bytes(s.try_into().unwrap_or_default()))
}

/// The fields of `fuse_in_header` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InHeader {
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    /// The requester's pid in the server's pid namespace (0: none, e.g. a kernel-made request).
    pub pid: u32,
}

impl InHeader {
    pub fn parse(header: &[u8]) -> InHeader {
        InHeader { opcode: u32_at(header, 4), unique: u64_at(header, 8), nodeid: u64_at(header, 16), uid: u32_at(header, 24), pid: u32_at(header, 32) }
    }
}

/// The commit id and payload length the kernel put in `ring_ent_in_out`.
pub fn ent_in(header: &[u8]) -> (u64, usize) {
    (u64_at(header, ENT_IN_OUT + 8), u32_at(header, ENT_IN_OUT + 16) as usize)
}

/// Writes the reply's `fuse_out_header` and payload length into `header`.
pub fn set_out(header: &mut [u8], unique: u64, result: Result<usize, i32>) {
    let (len, error) = match result {
        Ok(n) => (n, 0),
        Err(errno) => (0, -errno),
    };
    header[..OUT_HEADER_LEN].copy_from_slice(&[&((OUT_HEADER_LEN + len) as u32).to_ne_bytes()[..], &error.to_ne_bytes(), &unique.to_ne_bytes()].concat());
    header[ENT_IN_OUT + 16..ENT_IN_OUT + 20].copy_from_slice(&(len as u32).to_ne_bytes());
}

/// Answers request `h`: `op_in` is the header's op_in area, `payload` holds `in_len` bytes of
/// the request on entry and the reply on return; Ok(reply length) or Err(errno).
pub fn answer(fs: &ProcFs, h: &InHeader, op_in: &[u8], payload: &mut [u8], in_len: usize) -> Result<usize, i32> {
    let op = &op_in[..OP_IN.min(op_in.len())];
    let mut out = Out(payload, 0);
    let e = |e: Errno| e.code();
    match h.opcode {
        LOOKUP => {
            let name = &out.0[..in_len.min(out.0.len())];
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            let attr = fs.lookup(h.nodeid, name).map_err(e)?;
            out.u64(attr.ino.0).u64(0).duration(true).attr(&attr);
        }
        GETATTR => {
            let attr = fs.getattr(h.nodeid).map_err(e)?;
            out.duration(false).attr(&attr);
        }
        SETATTR => {
            let valid = u32_at(op, 0);
            let size = (valid & FATTR_SIZE != 0).then(|| u64_at(op, 16));
            let attr = fs.setattr(h.uid, h.nodeid, valid & (FATTR_MODE | FATTR_UID | FATTR_GID) != 0, size).map_err(e)?;
            out.duration(false).attr(&attr);
        }
        OPEN => {
            let read_only = u32_at(op, 0) & libc::O_ACCMODE as u32 == libc::O_RDONLY as u32;
            let fh = fs.open(h.uid, h.nodeid, read_only).map_err(e)?;
            out.u64(fh).u32(OPEN_FLAGS.bits()).u32(0);
        }
        OPENDIR => {
            out.u64(0).u32(0).u32(0);
        }
        READ => {
            let direct = u32_at(op, 20) & READ_LOCKOWNER != 0;
            let (data, range) = fs.read(h.nodeid, u64_at(op, 0), u64_at(op, 8), u32_at(op, 16), h.pid, direct).map_err(e)?;
            out.bytes(&data[range]);
        }
        WRITE => {
            let len = (u32_at(op, 16) as usize).min(in_len);
            let n = fs.write(h.uid, h.nodeid, u64_at(op, 8), &out.0[..len.min(out.0.len())]).map_err(e)?;
            out.u32(n).u32(0);
        }
        RELEASE => fs.release(h.nodeid, u64_at(op, 0)),
        RELEASEDIR => {}
        READDIR => {
            let entries = fs.readdir(h.nodeid, u64_at(op, 8)).map_err(e)?;
            let room = (u32_at(op, 16) as usize).min(out.0.len());
            for (ino, next, kind, name) in entries {
                let len = (24 + name.len()).next_multiple_of(8);
                if out.1 + len > room {
                    break;
                }
                let dt = if kind == FileType::Directory { libc::DT_DIR } else { libc::DT_REG };
                out.u64(ino).u64(next).u32(name.len() as u32).u32(u32::from(dt)).bytes(name.as_bytes());
                out.pad8();
            }
        }
        ACCESS => fs.access(h.uid, h.nodeid, AccessFlags::from_bits_truncate(u32_at(op, 0) as i32)).map_err(e)?,
        // fuse_kstatfs as fuser answers it: no blocks or inodes, bsize 512, namelen 255.
        STATFS => {
            out.u64(0).u64(0).u64(0).u64(0).u64(0).u32(512).u32(255).u32(0).u32(0).bytes(&[0; 24]);
        }
        _ => return Err(libc::ENOSYS),
    }
    Ok(out.1)
}

/// A writer of native-endian fields into the payload; writes past its end are dropped (the
/// payload is at least max_write long, larger than any reply here).
struct Out<'a>(&'a mut [u8], usize);

impl Out<'_> {
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let end = (self.1 + b.len()).min(self.0.len());
        self.0[self.1..end].copy_from_slice(&b[..end - self.1]);
        self.1 = end;
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_ne_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_ne_bytes())
    }
    fn pad8(&mut self) {
        let pad = self.1.next_multiple_of(8) - self.1;
        self.bytes(&[0; 8][..pad]);
    }
    /// entry_valid + attr_valid (lookup) or attr_valid + dummy, then their nanoseconds.
    fn duration(&mut self, entry: bool) -> &mut Self {
        let (s, ns) = (TTL.as_secs(), TTL.subsec_nanos());
        if entry {
            self.u64(s).u64(s).u32(ns).u32(ns)
        } else {
            self.u64(s).u32(ns).u32(0)
        }
    }
    /// `struct fuse_attr`.
    fn attr(&mut self, a: &FileAttr) -> &mut Self {
        let t = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let (at, mt, ct) = (t(a.atime), t(a.mtime), t(a.ctime));
        let ftype = if a.kind == FileType::Directory { libc::S_IFDIR } else { libc::S_IFREG };
        self.u64(a.ino.0).u64(a.size).u64(a.blocks).u64(at.as_secs()).u64(mt.as_secs()).u64(ct.as_secs());
        self.u32(at.subsec_nanos()).u32(mt.subsec_nanos()).u32(ct.subsec_nanos());
        self.u32(ftype | u32::from(a.perm)).u32(a.nlink).u32(a.uid).u32(a.gid).u32(a.rdev).u32(a.blksize).u32(a.flags)
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
