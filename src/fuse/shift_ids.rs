//! Id translation of the engine's view of a running container's rootfs (see [`super::shift`]):
//! the container's range `[base, base + size)` on the host is shown as `[0, size)`, as the
//! container itself sees it (and as runc's engine would see its files); anything else shows as
//! the overflow id. Ids the engine sets go the other way, and only ids inside the range exist.
//! Also the `security.capability` xattr, whose v3 form names a root uid, and the xattr names
//! the engine may read or write.

/// What an id outside the range shows as (the kernel's overflowuid for an unmapped id).
pub const OVERFLOW: u32 = 65534;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shift {
    pub base: u32,
    pub size: u32,
}

impl Shift {
    /// Host id -> the id the engine sees.
    pub fn down(&self, host: u32) -> u32 {
        match host.checked_sub(self.base) {
            Some(n) if n < self.size => n,
            _ => OVERFLOW,
        }
    }

    /// An id the engine sets (or runs as) -> the host id written; None: not in the range
    /// (the caller refuses the request).
    pub fn up(&self, id: u32) -> Option<u32> {
        (id < self.size).then(|| self.base + id)
    }

    /// Whether a host id belongs to the range.
    pub fn owns(&self, host: u32) -> bool {
        host.checked_sub(self.base).is_some_and(|n| n < self.size)
    }
}

/// What the engine may do with an xattr name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrPolicy {
    /// `user.*`: passed through as is.
    Pass,
    /// `security.capability`: its v3 root uid is translated.
    Capability,
    /// Never shown, never written: `trusted.*` (overlayfs keeps its opaque/redirect/origin
    /// metadata there, and host root could plant it into the container's upper dir), other
    /// `security.*` (LSM labels are the host's business), `system.*` (POSIX ACLs carry raw uids
    /// that would need translating; refused instead).
    Hidden,
}

pub fn policy(name: &[u8]) -> XattrPolicy {
    if name.starts_with(b"user.") {
        XattrPolicy::Pass
    } else if name == b"security.capability" {
        XattrPolicy::Capability
    } else {
        XattrPolicy::Hidden
    }
}

const REV_MASK: u32 = 0xFF00_0000;
const REV2: u32 = 0x0200_0000;
const REV3: u32 = 0x0300_0000;
const V2_LEN: usize = 20;
const V3_LEN: usize = 24;

fn le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// A stored `security.capability` value (as host root reads it through the overlay) -> what the
/// engine sees: v3 with a root uid in the range becomes v2 when that root is the container's
/// root (what runc's engine would read), else v3 with the shifted root uid; v2 as stored.
/// None: another range's (a v3 root uid outside the range) or malformed: hidden.
pub fn cap_down(s: &Shift, v: &[u8]) -> Option<Vec<u8>> {
    if v.len() < 4 {
        return None;
    }
    match (le(v, 0) & REV_MASK, v.len()) {
        // No root uid (an image layer's, read through its ID-mapped clone): as stored, as runc's
        // engine reads it.
        (REV2, V2_LEN) => Some(v.to_vec()),
        (REV3, V3_LEN) => {
            let root = le(v, V2_LEN);
            if !s.owns(root) {
                return None;
            }
            let n = s.down(root);
            let mut out = v.to_vec();
            if n == 0 {
                out.truncate(V2_LEN);
                out[..4].copy_from_slice(&((le(v, 0) & !REV_MASK) | REV2).to_le_bytes());
            } else {
                out[V2_LEN..].copy_from_slice(&n.to_le_bytes());
            }
            Some(out)
        }
        _ => None,
    }
}

/// A `security.capability` value the engine writes -> what is stored: v2 (no root uid, i.e. the
/// engine's root) becomes v3 with the container's root as root uid (what the kernel stores
/// when the container's root sets it from inside), v3 gets its root uid shifted into the range.
/// None: malformed or a root uid outside the range (refused with EINVAL).
pub fn cap_up(s: &Shift, v: &[u8]) -> Option<Vec<u8>> {
    if v.len() < 4 {
        return None;
    }
    let magic = le(v, 0);
    let (root, head) = match (magic & REV_MASK, v.len()) {
        (REV2, V2_LEN) => (0, &v[..V2_LEN]),
        (REV3, V3_LEN) => (le(v, V2_LEN), &v[..V2_LEN]),
        _ => return None,
    };
    let mut out = head.to_vec();
    out[..4].copy_from_slice(&((magic & !REV_MASK) | REV3).to_le_bytes());
    out.extend_from_slice(&s.up(root)?.to_le_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Shift = Shift { base: 100_000, size: 65536 };

    #[test]
    fn ids_shift_down_and_up_within_the_range_only() {
        assert_eq!(S.down(100_000), 0);
        assert_eq!(S.down(101_000), 1000);
        assert_eq!(S.down(165_535), 65535);
        assert_eq!(S.down(165_536), OVERFLOW);
        assert_eq!(S.down(0), OVERFLOW, "host root shows as nobody, as inside");
        assert_eq!(S.down(99_999), OVERFLOW);
        assert_eq!(S.up(0), Some(100_000));
        assert_eq!(S.up(1000), Some(101_000));
        assert_eq!(S.up(65535), Some(165_535));
        assert_eq!(S.up(65536), None);
        assert_eq!(S.up(u32::MAX), None);
        let top = Shift { base: u32::MAX - 10, size: 65536 };
        assert_eq!(top.down(u32::MAX), 10);
        assert!(!top.owns(5));
        for id in [0, 1, 999, 65535] {
            assert_eq!(S.down(S.up(id).unwrap()), id);
        }
    }

    #[test]
    fn xattr_names() {
        assert_eq!(policy(b"user.foo"), XattrPolicy::Pass);
        assert_eq!(policy(b"security.capability"), XattrPolicy::Capability);
        for hidden in [&b"trusted.overlay.opaque"[..], b"trusted.x", b"security.selinux", b"system.posix_acl_access", b"user", b"securityXcapability"] {
            assert_eq!(policy(hidden), XattrPolicy::Hidden, "{}", String::from_utf8_lossy(hidden));
        }
    }

    fn v2(eff: bool) -> Vec<u8> {
        let mut v = (REV2 | eff as u32).to_le_bytes().to_vec();
        v.extend_from_slice(&[0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // cap_net_bind_service
        v
    }

    fn v3(eff: bool, root: u32) -> Vec<u8> {
        let mut v = v2(eff);
        v[..4].copy_from_slice(&(REV3 | eff as u32).to_le_bytes());
        v.extend_from_slice(&root.to_le_bytes());
        v
    }

    #[test]
    fn capability_xattr_root_uid_translates_both_ways() {
        // the engine writes v2 (as under runc): stored as the container root's v3
        assert_eq!(cap_up(&S, &v2(true)), Some(v3(true, 100_000)));
        assert_eq!(cap_up(&S, &v3(false, 1000)), Some(v3(false, 101_000)));
        assert_eq!(cap_up(&S, &v3(false, 65536)), None, "root uid outside the range");
        assert_eq!(cap_up(&S, &v2(true)[..19]), None);
        assert_eq!(cap_up(&S, &[1, 2]), None);
        // read back as runc's engine would
        assert_eq!(cap_down(&S, &v3(true, 100_000)), Some(v2(true)));
        assert_eq!(cap_down(&S, &v3(false, 101_000)), Some(v3(false, 1000)));
        assert_eq!(cap_down(&S, &v3(false, 5)), None, "another range's: hidden");
        assert_eq!(cap_down(&S, &v2(true)), Some(v2(true)), "an image layer's v2: as stored");
        for v in [v2(true), v3(false, 7)] {
            assert_eq!(cap_down(&S, &cap_up(&S, &v).unwrap()).unwrap(), v);
        }
    }
}
