//! Per-container emulation of NON-namespaced sysctls that tools write at
//! start-up and fail on inside a user namespace (EACCES/EPERM from the real
//! /proc/sys, which belongs to the host's root):
//!
//! - kubelet: vm/overcommit_memory, vm/panic_on_oom, kernel/panic,
//!   kernel/panic_on_oops, kernel/keys/{root_maxkeys,root_maxbytes,maxkeys,maxbytes}
//! - kube-proxy: net/netfilter/nf_conntrack_max and
//!   /sys/module/nf_conntrack/parameters/hashsize (only if present on the host)
//! - dockerd/containerd/systemd/Elasticsearch & co: fs/inotify/max_user_watches,
//!   fs/inotify/max_user_instances, fs/inotify/max_queued_events,
//!   vm/max_map_count, fs/file-max, fs/nr_open, kernel/sysrq,
//!   fs/protected_{hardlinks,symlinks,fifos,regular}
//!
//! Deliberately NOT emulated: namespaced sysctls (net.ipv4.*, net.core.*,
//! kernel.hostname, kernel.shm*, ...), which the container really owns;
//! kernel/pid_max (per pid namespace since Linux 6.14, and lying about it
//! would break tools that size pid tables); kernel/printk and string sysctls
//! such as kernel/core_pattern (only logged by systemd-sysctl on failure).
//!
//! Values start as the host's at server start. Reads return the container's
//! value; writes (by the owner only, checked in the server) are validated like
//! the kernel's proc_dointvec_minmax / proc_doulongvec_minmax (one integer,
//! optional sign, surrounding whitespace, in range, else EINVAL) and are kept
//! in this server's memory only. The host file is never written.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::FuseError;

/// (path relative to the FUSE root — also the in-container path without the
/// leading '/', min, max).
pub const TABLE: &[(&str, i64, i64)] = &[
    ("proc/sys/vm/overcommit_memory", 0, 2),
    ("proc/sys/vm/panic_on_oom", 0, 2),
    ("proc/sys/vm/max_map_count", 0, i32::MAX as i64),
    ("proc/sys/kernel/panic", i32::MIN as i64, i32::MAX as i64),
    ("proc/sys/kernel/panic_on_oops", 0, 1),
    ("proc/sys/kernel/sysrq", 0, i32::MAX as i64),
    ("proc/sys/kernel/keys/root_maxkeys", 0, i32::MAX as i64),
    ("proc/sys/kernel/keys/root_maxbytes", 0, i32::MAX as i64),
    ("proc/sys/kernel/keys/maxkeys", 0, i32::MAX as i64),
    ("proc/sys/kernel/keys/maxbytes", 0, i32::MAX as i64),
    ("proc/sys/fs/inotify/max_user_watches", 0, i32::MAX as i64),
    ("proc/sys/fs/inotify/max_user_instances", 0, i32::MAX as i64),
    ("proc/sys/fs/inotify/max_queued_events", 0, i32::MAX as i64),
    ("proc/sys/fs/file-max", 0, i64::MAX),
    ("proc/sys/fs/nr_open", 64, 1_073_741_816),
    ("proc/sys/fs/protected_hardlinks", 0, 1),
    ("proc/sys/fs/protected_symlinks", 0, 1),
    ("proc/sys/fs/protected_fifos", 0, 2),
    ("proc/sys/fs/protected_regular", 0, 2),
    ("proc/sys/net/netfilter/nf_conntrack_max", 0, i32::MAX as i64),
    ("sys/module/nf_conntrack/parameters/hashsize", 1, u32::MAX as i64),
];

/// Parses a value written to a sysctl: one integer in `[min, max]`.
pub fn parse_value(text: &[u8], min: i64, max: i64) -> Result<i64, FuseError> {
    let s = std::str::from_utf8(text).unwrap_or("").trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0');
    let bad = || FuseError::InvalidValue { value: String::from_utf8_lossy(text).trim().to_string() };
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.trim_start_matches('-').bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let v: i64 = digits.parse().map_err(|_| bad())?;
    if v < min || v > max {
        return Err(bad());
    }
    Ok(v)
}

#[derive(Debug)]
pub struct Entry {
    pub rel: &'static str,
    min: i64,
    max: i64,
    value: Mutex<i64>,
}

impl Entry {
    pub fn read(&self) -> String {
        format!("{}\n", *self.value.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Validates and stores a new value.
    pub fn write(&self, data: &[u8]) -> Result<(), FuseError> {
        let v = parse_value(data, self.min, self.max)
            .map_err(|_| FuseError::InvalidValue { value: format!("{} for {}", String::from_utf8_lossy(data).trim(), self.rel) })?;
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = v;
        Ok(())
    }
}

/// The emulated sysctls that exist on this host (files under `host_root`,
/// normally "/"), with their current host values.
pub fn load(host_root: &Path) -> Vec<Entry> {
    TABLE
        .iter()
        .filter_map(|&(rel, min, max)| {
            let text = std::fs::read_to_string(host_root.join(rel)).ok()?;
            // Host values are trusted as they are (e.g. file-max can be
            // ULONG_MAX-ish); clamp into i64 rather than reject.
            let v = text.trim().parse::<i64>().unwrap_or_else(|_| if text.trim().parse::<u64>().is_ok() { i64::MAX } else { 0 });
            Some(Entry { rel, min, max: max.max(v), value: Mutex::new(v) })
        })
        .collect()
}

/// Relative paths of the emulated sysctls present on this host.
pub fn present_paths() -> Vec<PathBuf> {
    TABLE.iter().map(|t| PathBuf::from(t.0)).filter(|p| Path::new("/").join(p).exists()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_like_kernel() {
        assert_eq!(parse_value(b"1\n", 0, 2).unwrap(), 1);
        assert_eq!(parse_value(b"  2  ", 0, 2).unwrap(), 2);
        assert_eq!(parse_value(b"+2", 0, 2).unwrap(), 2);
        assert_eq!(parse_value(b"-5\n", i32::MIN as i64, 0).unwrap(), -5);
        for bad in [&b"3\n"[..], b"-1", b"", b"\n", b"abc", b"1 2", b"1x", b"0x1", b"--1"] {
            assert!(parse_value(bad, 0, 2).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let e = parse_value(b"garbage\n", 0, 2).unwrap_err().to_string();
        assert!(e.contains("garbage"), "{e}");
    }

    #[test]
    fn load_from_fake_root_and_write() {
        let root = std::env::temp_dir().join(format!("nestrun-sysctl-test-{}", std::process::id()));
        std::fs::create_dir_all(root.join("proc/sys/vm")).unwrap();
        std::fs::write(root.join("proc/sys/vm/overcommit_memory"), "0\n").unwrap();
        std::fs::create_dir_all(root.join("proc/sys/fs")).unwrap();
        std::fs::write(root.join("proc/sys/fs/file-max"), "9223372036854775807\n").unwrap();
        let entries = load(&root);
        assert_eq!(entries.len(), 2, "only files present on the host are emulated");
        let oc = entries.iter().find(|e| e.rel == "proc/sys/vm/overcommit_memory").unwrap();
        assert_eq!(oc.read(), "0\n");
        oc.write(b"1\n").unwrap();
        assert_eq!(oc.read(), "1\n");
        let err = oc.write(b"7\n").unwrap_err().to_string();
        assert!(err.contains("7") && err.contains("overcommit_memory"), "{err}");
        assert_eq!(oc.read(), "1\n");
        assert_eq!(std::fs::read_to_string(root.join("proc/sys/vm/overcommit_memory")).unwrap(), "0\n");
        let fm = entries.iter().find(|e| e.rel == "proc/sys/fs/file-max").unwrap();
        assert_eq!(fm.read(), "9223372036854775807\n");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
