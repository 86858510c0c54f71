//! Exclusive host id ranges for containers: a pool from the `nestrun` entry of /etc/subuid and
//! /etc/subgid (created when absent), cut into 65536-id ranges, each leased to one container by
//! an O_EXCL lease file. A lease outlives a crashed create: it is only freed by `delete`, or
//! reclaimed when the state directory that owns it no longer exists.
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const RANGE: u32 = 65536;
pub const POOL_USER: &str = "nestrun";
/// Default pool: 4096 ranges of 65536 ids (2^28 ids), like Sysbox's default.
pub const DEFAULT_RANGES: u32 = 4096;
pub const DEFAULT_LEASE_DIR: &str = "/run/nestrun-subid";

#[derive(Debug, thiserror::Error)]
pub enum SubidError {
    #[error("cannot update {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: the {user} entry {start}:{size} is smaller than one {RANGE}-id range")]
    PoolTooSmall { path: PathBuf, user: String, start: u64, size: u64 },
    #[error("{path} and {other} give different ranges for {user}")]
    Mismatch { path: PathBuf, other: PathBuf, user: String },
    #[error("no free uid range: all {ranges} ranges of {start}:{size} in {dir} are leased")]
    Exhausted { ranges: u32, start: u32, size: u64, dir: PathBuf },
    #[error("linux.uidMappings: the engine maps host ids {host_id}-{last} into the container, which overlaps nestrun's pool {start}-{end} (the {user:?} entry of /etc/subuid) whose ranges nestrun leases to other containers; give the engine a range outside it (kubelet: its own \"kubelet\" entry in /etc/subuid and /etc/subgid; dockerd --userns-remap: another user)")]
    EngineOverlap { host_id: u32, last: u64, start: u32, end: u64, user: String },
}

/// An engine's own mapping (docker --userns-remap, Kubernetes `hostUsers: false`) is the
/// engine's to keep apart from its other containers; nestrun only makes sure it never shares
/// ids with a range nestrun leases (two containers sharing host ids could reach each other's
/// files and processes).
pub fn check_engine_range(pool: Pool, host_id: u32, size: u32) -> Result<(), SubidError> {
    let (lo, hi) = (host_id as u64, host_id as u64 + size as u64);
    let (start, end) = (pool.start as u64, pool.start as u64 + pool.ranges as u64 * RANGE as u64);
    if lo < end && start < hi {
        return Err(SubidError::EngineOverlap { host_id, last: hi - 1, start: pool.start, end: end - 1, user: POOL_USER.into() });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub start: u32,
    pub ranges: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub index: u32,
    pub host_id: u32,
    pub size: u32,
    pub file: PathBuf,
}

/// Find `user:start:count` in subuid/subgid text.
pub fn find_entry(text: &str, user: &str) -> Option<(u64, u64)> {
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        (f.next()? == user).then_some(())?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// Where a new pool starts: after every existing entry, aligned to a range, at least 2^20
/// (clear of ordinary users and of the usual 100000-based ranges).
pub fn next_free_start(text: &str) -> u64 {
    let end = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(':').collect();
            Some(f.get(1)?.parse::<u64>().ok()? + f.get(2)?.parse::<u64>().ok()?)
        })
        .max()
        .unwrap_or(0)
        .max(1 << 20);
    end.div_ceil(RANGE as u64) * RANGE as u64
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SubidError + '_ {
    move |source| SubidError::Io { path: path.to_path_buf(), source }
}

fn read_or_empty(path: &Path) -> Result<String, SubidError> {
    match fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        r => r.map_err(io(path)),
    }
}

/// Read the pool, creating the same `nestrun:start:size` line in both files when absent.
pub fn ensure_pool(subuid: &Path, subgid: &Path, ranges: u32) -> Result<Pool, SubidError> {
    let lock = fs::File::create(subuid.with_extension("nestrun-lock")).map_err(io(subuid))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| SubidError::Io { path: subuid.to_path_buf(), source: e.into() })?;
    let (u, g) = (read_or_empty(subuid)?, read_or_empty(subgid)?);
    let (eu, eg) = (find_entry(&u, POOL_USER), find_entry(&g, POOL_USER));
    let (start, size) = match (eu, eg) {
        (Some(a), Some(b)) if a == b => a,
        (Some(_), Some(_)) => {
            return Err(SubidError::Mismatch { path: subuid.into(), other: subgid.into(), user: POOL_USER.into() })
        }
        _ => {
            let start = next_free_start(&u).max(next_free_start(&g));
            let size = ranges as u64 * RANGE as u64;
            for (path, text, have) in [(subuid, &u, eu), (subgid, &g, eg)] {
                if have.is_none() {
                    let sep = if text.is_empty() || text.ends_with('\n') { "" } else { "\n" };
                    let mut f = OpenOptions::new().create(true).append(true).open(path).map_err(io(path))?;
                    write!(f, "{sep}{POOL_USER}:{start}:{size}\n").map_err(io(path))?;
                }
            }
            (start, size)
        }
    };
    if size < RANGE as u64 {
        return Err(SubidError::PoolTooSmall { path: subuid.into(), user: POOL_USER.into(), start, size });
    }
    let ranges = (size / RANGE as u64).min(u32::MAX as u64) as u32;
    Ok(Pool { start: start as u32, ranges })
}

/// Lease a free range for `owner` (the path of the container's state directory).
/// `prefer` is a host id that the container's files already belong to (its old range).
pub fn acquire(dir: &Path, pool: Pool, owner: &Path, prefer: Option<u32>) -> Result<Lease, SubidError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let preferred = prefer
        .filter(|h| *h >= pool.start && (*h - pool.start) % RANGE == 0)
        .map(|h| (h - pool.start) / RANGE)
        .filter(|i| *i < pool.ranges);
    for pass in 0..2 {
        for index in preferred.into_iter().chain(0..pool.ranges) {
            let file = dir.join(index.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&file) {
                Ok(mut f) => {
                    f.write_all(owner.as_os_str().as_encoded_bytes()).map_err(io(&file))?;
                    return Ok(Lease { index, host_id: pool.start + index * RANGE, size: RANGE, file });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(SubidError::Io { path: file, source: e }),
            }
        }
        if pass == 0 && reclaim_stale(dir) == 0 {
            break;
        }
    }
    Err(SubidError::Exhausted { ranges: pool.ranges, start: pool.start, size: pool.ranges as u64 * RANGE as u64, dir: dir.into() })
}

/// The owners (state directory paths) written in a lease file, one a line: the container that
/// leased the range first, then the pod's other containers that share it (`join`).
fn owners(text: &[u8]) -> Vec<PathBuf> {
    String::from_utf8_lossy(text).lines().filter(|l| !l.is_empty()).map(PathBuf::from).collect()
}

/// Opens a lease file and locks it exclusively; None when it is gone, or was replaced (freed
/// and leased again) between the open and the lock.
fn locked(file: &Path) -> Option<nix::fcntl::Flock<fs::File>> {
    let f = OpenOptions::new().read(true).write(true).open(file).ok()?;
    let f = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).ok()?;
    let (a, b) = (f.metadata().ok()?, fs::metadata(file).ok()?);
    use std::os::unix::fs::MetadataExt;
    ((a.dev(), a.ino()) == (b.dev(), b.ino())).then_some(f)
}

/// Keeps the owners of a locked lease that `keep` accepts; removes the file when none is left.
fn retain(file: &Path, f: &mut fs::File, keep: impl Fn(&Path) -> bool) -> std::io::Result<bool> {
    use std::io::{Read, Seek};
    let mut text = Vec::new();
    f.seek(std::io::SeekFrom::Start(0))?;
    f.read_to_end(&mut text)?;
    let all = owners(&text);
    let kept: Vec<&PathBuf> = all.iter().filter(|o| keep(o)).collect();
    if kept.len() == all.len() {
        return Ok(false);
    }
    if kept.is_empty() {
        fs::remove_file(file)?;
    } else {
        let body: String = kept.iter().map(|o| format!("{}\n", o.display())).collect();
        f.set_len(0)?;
        f.seek(std::io::SeekFrom::Start(0))?;
        f.write_all(body.as_bytes())?;
    }
    Ok(true)
}

/// Free leases whose owning state directories are all gone (a create killed before it recorded
/// the lease, or a host whose engine never called delete). Returns how many were freed.
pub fn reclaim_stale(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| {
            // An empty file is a lease being written right now (O_EXCL create, then write).
            fs::read(e.path()).is_ok_and(|t| !t.is_empty() && owners(&t).iter().any(|o| !o.exists()))
        })
        .filter(|e| {
            let Some(mut f) = locked(&e.path()) else { return false };
            retain(&e.path(), &mut f, |o| o.exists()).is_ok() && !e.path().exists()
        })
        .count()
}

/// A pod's container shares the range its sandbox leased (`host_id`): `owner` is added to that
/// lease, so the range stays taken until the last of the pod's containers is deleted. None when
/// the range is no lease of this pool (the sandbox is no nestrun container of this host).
pub fn join(dir: &Path, pool: Pool, host_id: u32, owner: &Path) -> Result<Option<Lease>, SubidError> {
    if host_id < pool.start || (host_id - pool.start) % RANGE != 0 || (host_id - pool.start) / RANGE >= pool.ranges {
        return Ok(None);
    }
    let index = (host_id - pool.start) / RANGE;
    let file = dir.join(index.to_string());
    let Some(mut f) = locked(&file) else { return Ok(None) };
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut *f, &mut text).map_err(io(&file))?;
    if !owners(&text).iter().any(|o| o == owner) {
        let sep = if text.is_empty() || text.ends_with(b"\n") { "" } else { "\n" };
        write!(f, "{sep}{}\n", owner.display()).map_err(io(&file))?;
    }
    Ok(Some(Lease { index, host_id, size: RANGE, file }))
}

/// Release `owner`'s hold on a lease; the range is free once no owner is left.
pub fn release(lease: &Lease, owner: &Path) {
    if let Some(mut f) = locked(&lease.file) {
        let _ = retain(&lease.file, &mut f, |o| o != owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nestrun-subid-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn engine_ranges_must_stay_out_of_the_pool() {
        let pool = Pool { start: 1 << 20, ranges: 4 };
        assert!(check_engine_range(pool, 1 << 31, RANGE).is_ok());
        assert!(check_engine_range(pool, (1 << 20) - RANGE, RANGE).is_ok(), "just below");
        assert!(check_engine_range(pool, (1 << 20) + 4 * RANGE, RANGE).is_ok(), "just above");
        let e = check_engine_range(pool, (1 << 20) + 4 * RANGE - 1, RANGE).unwrap_err().to_string();
        assert!(e.starts_with(&format!("linux.uidMappings: the engine maps host ids {}-", (1 << 20) + 4 * RANGE - 1)), "{e}");
        assert!(e.contains(&format!("overlaps nestrun's pool {}-{}", 1 << 20, (1 << 20) + 4 * RANGE - 1)), "{e}");
        assert!(check_engine_range(pool, RANGE, 1 << 24).is_err(), "a range spanning the pool");
    }

    #[test]
    fn pool_is_created_after_existing_entries_in_both_files() {
        let d = tmp("pool");
        fs::write(d.join("subuid"), "alice:100000:65536\n").unwrap();
        fs::write(d.join("subgid"), "alice:100000:65536").unwrap();
        let p = ensure_pool(&d.join("subuid"), &d.join("subgid"), 8).unwrap();
        assert_eq!(p, Pool { start: 1 << 20, ranges: 8 });
        assert_eq!(fs::read_to_string(d.join("subgid")).unwrap(), "alice:100000:65536\nnestrun:1048576:524288\n");
        // Second call reads the same pool and appends nothing.
        assert_eq!(ensure_pool(&d.join("subuid"), &d.join("subgid"), 99).unwrap(), p);
        assert_eq!(fs::read_to_string(d.join("subuid")).unwrap().lines().count(), 2);
    }

    #[test]
    fn leases_are_exclusive_preferred_and_exhaust_with_a_clear_error() {
        let d = tmp("lease");
        let owners: Vec<PathBuf> = (0..3).map(|i| d.join(format!("c{i}"))).collect();
        owners.iter().for_each(|o| fs::create_dir_all(o).unwrap());
        let pool = Pool { start: 1 << 20, ranges: 2 };
        let a = acquire(&d.join("l"), pool, &owners[0], None).unwrap();
        let b = acquire(&d.join("l"), pool, &owners[1], None).unwrap();
        assert_ne!(a.host_id, b.host_id);
        let err = acquire(&d.join("l"), pool, &owners[2], None).unwrap_err().to_string();
        assert!(err.starts_with("no free uid range: all 2 ranges of 1048576:131072"), "{err}");
        release(&a, &owners[1]); // not the owner: no effect
        assert!(a.file.exists());
        release(&a, &owners[0]);
        let c = acquire(&d.join("l"), pool, &owners[2], Some(b.host_id)).unwrap();
        assert_eq!(c.host_id, a.host_id, "b's range is taken, so the preference falls back");
        // An owner whose state dir vanished (crashed create) is reclaimed.
        fs::remove_dir_all(&owners[1]).unwrap();
        let e = acquire(&d.join("l"), pool, &owners[0], None).unwrap();
        assert_eq!(e.host_id, b.host_id);
    }

    #[test]
    fn a_pod_shares_its_sandboxs_lease_until_the_last_member_goes() {
        let d = tmp("pod");
        let owners: Vec<PathBuf> = (0..4).map(|i| d.join(format!("c{i}"))).collect();
        owners.iter().for_each(|o| fs::create_dir_all(o).unwrap());
        let (dir, pool) = (d.join("l"), Pool { start: 1 << 20, ranges: 2 });
        let sandbox = acquire(&dir, pool, &owners[0], None).unwrap();
        let app = join(&dir, pool, sandbox.host_id, &owners[1]).unwrap().expect("joined");
        assert_eq!((app.index, app.host_id, &app.file), (sandbox.index, sandbox.host_id, &sandbox.file));
        assert_eq!(join(&dir, pool, sandbox.host_id, &owners[1]).unwrap(), Some(app.clone()), "joining twice adds no line");
        assert_eq!(fs::read_to_string(&sandbox.file).unwrap().lines().count(), 2);
        assert_eq!(join(&dir, pool, sandbox.host_id + RANGE, &owners[2]).unwrap(), None, "a range nobody leased");
        assert_eq!(join(&dir, pool, 12345, &owners[2]).unwrap(), None, "outside the pool");
        // The sandbox goes first: the range stays taken while the app container lives.
        release(&sandbox, &owners[0]);
        assert!(sandbox.file.exists());
        let other = acquire(&dir, pool, &owners[2], Some(sandbox.host_id)).unwrap();
        assert_ne!(other.host_id, sandbox.host_id, "a second pod never gets a range in use");
        release(&app, &owners[1]);
        assert!(!sandbox.file.exists(), "freed with its last owner");
        // A member whose state vanished is dropped by reclaim; the live one keeps the range.
        let s2 = acquire(&dir, pool, &owners[0], None).unwrap();
        join(&dir, pool, s2.host_id, &owners[3]).unwrap().unwrap();
        fs::remove_dir_all(&owners[3]).unwrap();
        assert_eq!(reclaim_stale(&dir), 0, "the sandbox still holds it");
        assert_eq!(fs::read_to_string(&s2.file).unwrap(), format!("{}\n", owners[0].display()));
        fs::remove_dir_all(&owners[0]).unwrap();
        assert_eq!(reclaim_stale(&dir), 1, "freed once its sandbox is gone too");
    }
}
