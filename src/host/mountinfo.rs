//! Parsing /proc/self/mountinfo (pure, tested) and looking up a mount point.
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted file system.
    pub dev: String,
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            Some(MountEntry {
                dev: pre.get(2)?.to_string(),
                root: PathBuf::from(unescape(pre.get(3)?)),
                mount_point: PathBuf::from(unescape(pre.get(4)?)),
                fs_type: post.next()?.to_string(),
                source: unescape(post.next()?),
                super_options: post.next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

pub fn read() -> Vec<MountEntry> {
    parse(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// `entries` as mountinfo lines (ids and mount options zeroed), which `parse` reads back.
pub fn format(entries: &[&MountEntry]) -> String {
    let esc = |p: &Path| {
        let s = p.to_string_lossy();
        s.replace('\\', "\\134").replace(' ', "\\040").replace('\t', "\\011").replace('\n', "\\012")
    };
    entries
        .iter()
        .map(|e| {
            let (src, opts) = (esc(Path::new(&e.source)), &e.super_options);
            format!("0 0 {} {} {} rw - {} {src} {opts}", e.dev, esc(&e.root), esc(&e.mount_point), e.fs_type)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The mount table as this process first read it, for what does not change while a command
/// runs (cgroup hierarchies, the engine's rootfs mount): every read of /proc/self/mountinfo is
/// O(host mounts) under the kernel's mount lock, which all mounts and unmounts on the host
/// contend for. Use `read` for what this process itself mounts or unmounts.
pub fn snapshot() -> &'static [MountEntry] {
    static CACHE: std::sync::OnceLock<Vec<MountEntry>> = std::sync::OnceLock::new();
    CACHE.get_or_init(read)
}

/// The topmost mount exactly at `path`.
pub fn at(entries: &[MountEntry], path: &Path) -> Option<MountEntry> {
    entries.iter().rev().find(|e| e.mount_point == path).cloned()
}

/// Mounts at or below `path`.
pub fn under<'a>(entries: &'a [MountEntry], path: &'a Path) -> impl Iterator<Item = &'a MountEntry> + 'a {
    entries.iter().filter(move |e| e.mount_point.starts_with(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_overlay_and_escapes() {
        let text = "1088 1001 0:94 / /run/x/rootfs rw,relatime - overlay overlay rw,lowerdir=l/A:l/B,upperdir=/var/lib/docker/overlay2/abc/diff,workdir=/var/lib/docker/overlay2/abc/work,index=off\n\
                    30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory\n\
                    31 25 0:27 /a\\040b /mnt/with\\040space rw - ext4 /dev/vda rw\n";
        let e = parse(text);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].fs_type, "overlay");
        assert!(e[0].super_options.contains("lowerdir=l/A:l/B"));
        assert_eq!(e[1].super_options, "rw,memory");
        assert_eq!(e[2].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(e[2].root, PathBuf::from("/a b"));
        assert_eq!(at(&e, Path::new("/sys/fs/cgroup/memory")).unwrap().fs_type, "cgroup");
    }

    #[test]
    fn format_reads_back() {
        let text = "30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory\n\
                    32 25 0:28 /x\\040y /sys/fs/cgroup/odd\\040dir rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let e = parse(text);
        let back = parse(&format(&e.iter().collect::<Vec<_>>()));
        assert_eq!(back, e);
        // the FUSE server's own parser reads the same lines
        let m = crate::fuse::cgroup::parse_mountinfo(&format(&e.iter().collect::<Vec<_>>()));
        assert_eq!(m, crate::fuse::cgroup::parse_mountinfo(text));
    }
}
