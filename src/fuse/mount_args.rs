//! The pure part of the supervisor's `mount(2)` arm (`supervisor_mount`): which trapped mounts
//! it performs itself (a new procfs or sysfs, nothing else), how mount(2)'s flags and option
//! string become the new mount API's calls, the caller's credentials as its `/proc/<pid>/status`
//! and id maps give them, and where the emulated files go in the new mount.
use std::ffi::CString;

use libc::{MS_MGC_MSK, MS_MGC_VAL, MS_NOATIME, MS_NODEV, MS_NODIRATIME, MS_NOEXEC, MS_NOSUID, MS_NOSYMFOLLOW, MS_RDONLY, MS_RELATIME, MS_SILENT, MS_STRICTATIME};

/// The file systems whose new mounts get the emulated files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Proc,
    Sysfs,
}

impl FsType {
    /// From the `filesystemtype` string mount(2) was given (its bytes before the NUL).
    pub fn parse(s: &[u8]) -> Option<Self> {
        match s {
            b"proc" => Some(FsType::Proc),
            b"sysfs" => Some(FsType::Sysfs),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FsType::Proc => "proc",
            FsType::Sysfs => "sysfs",
        }
    }

    /// The first component of the emulated files' paths (relative to the FUSE root) that this
    /// file system's mounts get.
    fn root(self) -> &'static str {
        match self {
            FsType::Proc => "proc/",
            FsType::Sysfs => "sys/",
        }
    }

    /// (emulated file relative to the FUSE root, its place relative to a new mount of this
    /// type) for the files that go over it.
    pub fn overlays(self, files: &[std::path::PathBuf]) -> Vec<(std::path::PathBuf, std::path::PathBuf)> {
        files.iter().filter_map(|rel| Some((rel.clone(), rel.strip_prefix(self.root()).ok()?.to_path_buf()))).collect()
    }
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_RELATIME: u64 = 0x0;
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

/// The mount attributes (`fsmount(2)`'s MOUNT_ATTR_*) and whether the superblock is read-only,
/// for a new mount with mount(2)'s `flags`. None: the flags ask for anything else (a remount, a
/// bind, a move, a propagation change, a superblock flag): the supervisor lets the kernel do
/// that mount as it is (only emulation is at stake, never a permission).
pub fn attrs(flags: u64) -> Option<(u64, bool)> {
    // The old magic number may sit in the flags' top 16 bits (the kernel drops it).
    let flags = flags as libc::c_ulong;
    let flags = if flags & MS_MGC_MSK == MS_MGC_VAL { flags & !MS_MGC_MSK } else { flags };
    let known = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_SILENT | MS_NOATIME | MS_NODIRATIME | MS_RELATIME | MS_STRICTATIME | MS_NOSYMFOLLOW;
    if flags & !known != 0 {
        return None;
    }
    let mut a = 0;
    for (ms, attr) in [
        (MS_RDONLY, MOUNT_ATTR_RDONLY),
        (MS_NOSUID, MOUNT_ATTR_NOSUID),
        (MS_NODEV, MOUNT_ATTR_NODEV),
        (MS_NOEXEC, MOUNT_ATTR_NOEXEC),
        (MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
        (MS_NOSYMFOLLOW, MOUNT_ATTR_NOSYMFOLLOW),
    ] {
        if flags & ms != 0 {
            a |= attr;
        }
    }
    // mount(2): relatime unless noatime or strictatime is asked (do_mount_setattr's rules).
    a |= if flags & MS_NOATIME != 0 {
        MOUNT_ATTR_NOATIME
    } else if flags & MS_STRICTATIME != 0 {
        MOUNT_ATTR_STRICTATIME
    } else {
        MOUNT_ATTR_RELATIME
    };
    Some((a, flags & MS_RDONLY != 0))
}

/// The option string (mount(2)'s `data`) as `fsconfig` calls: `key=value` or a flag `key`,
/// separated by commas, empty ones skipped (what the kernel's legacy parser does). None when an
/// option holds a NUL-free string no C call can take (never: the caller's string ends at NUL).
pub fn options(data: &[u8]) -> Option<Vec<(CString, Option<CString>)>> {
    let mut out = Vec::new();
    for opt in data.split(|b| *b == b',').filter(|o| !o.is_empty()) {
        let (k, v) = match opt.iter().position(|b| *b == b'=') {
            Some(i) => (&opt[..i], Some(&opt[i + 1..])),
            None => (opt, None),
        };
        out.push((CString::new(k).ok()?, match v {
            Some(v) => Some(CString::new(v).ok()?),
            None => None,
        }));
    }
    Some(out)
}

/// Where a target given as `/proc/self/fd/N` or `/proc/thread-self/fd/N` (runc mounts on an
/// fd it holds that way) points: the caller's descriptor N, which the supervisor takes from it
/// (`pidfd_getfd`) since those paths name a different process in the helper that mounts.
pub fn own_fd(target: &[u8]) -> Option<i32> {
    let rest = target.strip_prefix(b"/proc/self/fd/").or_else(|| target.strip_prefix(b"/proc/thread-self/fd/"))?;
    let n = std::str::from_utf8(rest).ok()?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The capability sets of a caller (bit masks), from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

pub const CAP_SYS_ADMIN: u32 = 21;

/// A caller's credentials in the host's terms: fs ids and capability sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creds {
    pub fsuid: u32,
    pub fsgid: u32,
    pub caps: Caps,
}

/// The fs uid/gid (4th field of `Uid:`/`Gid:`) and CapInh/CapPrm/CapEff of a status text.
pub fn creds(status: &str) -> Option<Creds> {
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let id = |name: &str| field(name)?.split_whitespace().nth(3)?.parse().ok();
    let cap = |name: &str| u64::from_str_radix(field(name)?, 16).ok();
    Some(Creds {
        fsuid: id("Uid:")?,
        fsgid: id("Gid:")?,
        caps: Caps { effective: cap("CapEff:")?, permitted: cap("CapPrm:")?, inheritable: cap("CapInh:")? },
    })
}

/// The id inside a user namespace of the host's `id`, from that namespace's `uid_map` or
/// `gid_map` text ("inside outside count" lines, as the host sees them). None: not mapped.
pub fn inside(map: &str, id: u32) -> Option<u32> {
    map.lines().find_map(|l| {
        let mut f = l.split_whitespace().map(|x| x.parse::<u64>().ok());
        let (inner, outer, count) = (f.next()??, f.next()??, f.next()??);
        let id = u64::from(id);
        (id >= outer && id < outer + count).then(|| u32::try_from(inner + (id - outer)).ok()).flatten()
    })
}

/// The mount points (as the caller's mountinfo shows them: in its root) of the emulated files
/// over mount `parent`: its children that are the FUSE server's ("fuse" type, source
/// "nestrun").
pub fn overlay_mounts(mountinfo: &str, parent: u64) -> Vec<Vec<u8>> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            let ours = f.get(sep + 1) == Some(&"fuse") && f.get(sep + 2) == Some(&"nestrun");
            let point = f.get(4)?;
            (ours && f.get(1)?.parse::<u64>().ok()? == parent).then(|| unescape(point))
        })
        .collect()
}

/// mountinfo's octal escapes (`\040` for a space, ...) undone.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).filter(|o| b[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(o) => {
                out.push(o.iter().fold(0u8, |a, c| a.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn only_proc_and_sysfs() {
        assert_eq!(FsType::parse(b"proc"), Some(FsType::Proc));
        assert_eq!(FsType::parse(b"sysfs"), Some(FsType::Sysfs));
        for other in [&b"tmpfs"[..], b"procfs", b"proc ", b"", b"overlay", b"cgroup2"] {
            assert_eq!(FsType::parse(other), None, "{other:?}");
        }
    }

    #[test]
    fn overlays_per_file_system() {
        let files: Vec<PathBuf> = ["proc/meminfo", "proc/sys/vm/max_map_count", "sys/devices/system/cpu/online"].map(PathBuf::from).to_vec();
        assert_eq!(
            FsType::Proc.overlays(&files),
            [("proc/meminfo", "meminfo"), ("proc/sys/vm/max_map_count", "sys/vm/max_map_count")].map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
        );
        assert_eq!(FsType::Sysfs.overlays(&files), [(PathBuf::from("sys/devices/system/cpu/online"), PathBuf::from("devices/system/cpu/online"))]);
    }

    #[test]
    fn new_mount_flags_become_attributes() {
        // runc's /proc: nosuid,nodev,noexec; its /sys: ro as well.
        assert_eq!(attrs(MS_NOSUID | MS_NODEV | MS_NOEXEC), Some((MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, false)));
        assert_eq!(attrs(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC), Some((0xf, true)));
        assert_eq!(attrs(0), Some((MOUNT_ATTR_RELATIME, false)));
        assert_eq!(attrs(MS_MGC_VAL | MS_NOEXEC), Some((MOUNT_ATTR_NOEXEC, false)), "the old magic is dropped");
        assert_eq!(attrs(MS_NOATIME | MS_STRICTATIME), Some((MOUNT_ATTR_NOATIME, false)));
        assert_eq!(attrs(MS_STRICTATIME | MS_NOSYMFOLLOW), Some((MOUNT_ATTR_STRICTATIME | MOUNT_ATTR_NOSYMFOLLOW, false)));
        assert_eq!(attrs(MS_SILENT | MS_NODIRATIME), Some((MOUNT_ATTR_NODIRATIME, false)));
    }

    #[test]
    fn anything_but_a_new_mount_is_the_kernels() {
        use libc::{MS_BIND, MS_LAZYTIME, MS_MOVE, MS_PRIVATE, MS_REC, MS_REMOUNT, MS_SHARED, MS_SYNCHRONOUS};
        for f in [MS_REMOUNT, MS_BIND, MS_BIND | MS_REC, MS_MOVE, MS_PRIVATE | MS_REC, MS_SHARED, MS_SYNCHRONOUS, MS_LAZYTIME, MS_REMOUNT | MS_RDONLY, 1 << 40] {
            assert_eq!(attrs(f), None, "{f:#x}");
        }
    }

    #[test]
    fn option_strings() {
        let o = options(b"hidepid=invisible,,gid=5,subset=pid,rw").unwrap();
        let show: Vec<(String, Option<String>)> =
            o.iter().map(|(k, v)| (k.to_string_lossy().into_owned(), v.as_ref().map(|v| v.to_string_lossy().into_owned()))).collect();
        assert_eq!(
            show,
            [("hidepid", Some("invisible")), ("gid", Some("5")), ("subset", Some("pid")), ("rw", None)].map(|(k, v)| (k.to_string(), v.map(String::from)))
        );
        assert!(options(b"").unwrap().is_empty());
        assert_eq!(options(b"a=b=c").unwrap()[0].1.as_ref().unwrap().to_bytes(), b"b=c");
    }

    #[test]
    fn runc_style_fd_targets() {
        assert_eq!(own_fd(b"/proc/self/fd/7"), Some(7));
        assert_eq!(own_fd(b"/proc/thread-self/fd/12"), Some(12));
        for not in [&b"/proc/self/fd/"[..], b"/proc/self/fd/7/x", b"/proc/1/fd/7", b"/proc/self/fd/-1", b"/proc/self/fd/99999999999", b"proc/self/fd/3", b"/rootfs/proc"] {
            assert_eq!(own_fd(not), None, "{not:?}");
        }
    }

    #[test]
    fn credentials_from_status() {
        let status = "Name:\tsh\nUid:\t101000\t101000\t101000\t101005\nGid:\t101000\t101000\t101000\t101007\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n";
        let c = creds(status).unwrap();
        assert_eq!((c.fsuid, c.fsgid), (101005, 101007));
        assert_eq!(c.caps, Caps { effective: 0x1ff_ffff_ffff, permitted: 0x1ff_ffff_ffff, inheritable: 0 });
        assert!(c.caps.effective & (1 << CAP_SYS_ADMIN) != 0);
        assert_eq!(creds("Name:\tx\nUid:\t1 2\n"), None);
    }

    #[test]
    fn overlays_of_one_mount_from_mountinfo() {
        let info = "261 234 0:62 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
235 261 0:46 /proc/meminfo /proc/meminfo rw,nosuid,nodev,noexec,relatime - fuse nestrun rw,user_id=0,group_id=0,allow_other
236 261 0:46 /proc/sys/kernel/panic /proc/sys/kernel/panic rw,relatime - fuse nestrun rw,user_id=0
237 261 0:70 / /proc/kcore ro - tmpfs tmpfs rw
238 300 0:46 /proc/meminfo /mnt/my\\040proc/meminfo rw - fuse nestrun rw
239 261 0:71 / /proc/other rw - fuse sshfs rw";
        assert_eq!(overlay_mounts(info, 261), [b"/proc/meminfo".to_vec(), b"/proc/sys/kernel/panic".to_vec()]);
        assert_eq!(overlay_mounts(info, 300), [b"/mnt/my proc/meminfo".to_vec()]);
        assert!(overlay_mounts(info, 235).is_empty());
        assert_eq!(unescape("a\\134b\\01"), b"a\\b\\01");
    }

    #[test]
    fn ids_inside_a_user_namespace() {
        let map = "         0     100000      65536\n     65536    1000000          1\n";
        assert_eq!(inside(map, 100000), Some(0));
        assert_eq!(inside(map, 165535), Some(65535));
        assert_eq!(inside(map, 1000000), Some(65536));
        assert_eq!(inside(map, 165536), None);
        assert_eq!(inside(map, 0), None);
        assert_eq!(inside("", 0), None);
    }
}
