//! Open descriptors of the host and cgroup files the renders read, kept
//! across renders and re-read with pread(2) from offset 0.
//!
//! Every file read here is a seq_file (procfs, kernfs/cgroupfs, sysfs): a read
//! at offset 0 regenerates the text, so a kept descriptor returns current
//! values (procps relies on the same: it keeps /proc/stat open and re-reads
//! it). This saves the open/statx/close and the growing 32-byte reads of
//! `read_to_string` per file and render (a meminfo render went from ~45
//! syscalls to ~12).
//!
//! Semantics are those of `std::fs::read_to_string` on the path: a file that
//! does not exist is `Ok(None)` and is not cached (it may appear later: the
//! runtime creates the container's cgroup while the server starts); a kept
//! descriptor that fails (a removed cgroup's files answer ENODEV, an exited
//! process's /proc/<pid>/stat ESRCH) is dropped and the path opened afresh,
//! so a gone or re-created file reads exactly as without the cache.

use std::collections::HashMap;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::FuseError;

#[derive(Debug)]
struct Entry {
    /// Shared so that the read happens outside the lock (`pread` needs no exclusive access):
    /// a preempted reader holding the lock would stall the other io_uring workers.
    file: Arc<File>,
    /// Length of the last read, to size the next buffer.
    last_len: usize,
}

#[derive(Debug, Default)]
pub struct FdCache {
    files: Mutex<HashMap<PathBuf, Entry>>,
}

/// A clone starts with no descriptors of its own.
impl Clone for FdCache {
    fn clone(&self) -> Self {
        FdCache::default()
    }
}

/// The whole text of `file` from offset 0 (reads until a read returns 0).
fn read_all(file: &File, hint: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; (hint + 512).next_power_of_two().max(1024)];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|_| std::io::Error::new(ErrorKind::InvalidData, "stream did not contain valid UTF-8"))
}

impl FdCache {
    /// The file's text; `Ok(None)` if it does not exist.
    pub fn read_opt(&self, path: &Path) -> Result<Option<String>, FuseError> {
        let lock = || self.files.lock().unwrap_or_else(|e| e.into_inner());
        let kept = lock().get(path).map(|e| (e.file.clone(), e.last_len));
        if let Some((file, hint)) = kept {
            if let Ok(text) = read_all(&file, hint) {
                if let Some(e) = lock().get_mut(path) {
                    e.last_len = text.len();
                }
                return Ok(Some(text));
            }
            lock().remove(path);
        }
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(FuseError::Read { path: path.to_path_buf(), source }),
        };
        let text = read_all(&file, 0).map_err(|source| FuseError::Read { path: path.to_path_buf(), source })?;
        lock().insert(path.to_path_buf(), Entry { file: Arc::new(file), last_len: text.len() });
        Ok(Some(text))
    }

    /// The file's text; a missing file is an error, like `std::fs::read_to_string`.
    pub fn read(&self, path: &Path) -> Result<String, FuseError> {
        self.read_opt(path)?.ok_or_else(|| FuseError::Read { path: path.to_path_buf(), source: ErrorKind::NotFound.into() })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.files.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rereads_current_content_and_reopens() {
        let dir = std::env::temp_dir().join(format!("nestrun-fdcache-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        let c = FdCache::default();
        assert!(c.read_opt(&p).unwrap().is_none(), "missing file");
        assert!(c.read(&p).unwrap_err().to_string().contains("/f"));
        assert_eq!(c.len(), 0, "a missing file is not cached");
        std::fs::write(&p, "one\n").unwrap();
        assert_eq!(c.read(&p).unwrap(), "one\n");
        assert_eq!(c.len(), 1);
        // rewritten in place: the kept descriptor sees the new text, whatever its length
        let long = "x".repeat(5000);
        std::fs::write(&p, &long).unwrap();
        assert_eq!(c.read(&p).unwrap(), long);
        std::fs::write(&p, "2\n").unwrap();
        assert_eq!(c.read(&p).unwrap(), "2\n");
        // replaced by another file: a regular file's descriptor still reads the old inode
        // (procfs/cgroupfs descriptors fail instead and are reopened, see below)
        std::fs::remove_file(&p).unwrap();
        assert_eq!(c.read(&p).unwrap(), "2\n");
        // /proc/<pid>/stat of an exited process: the descriptor fails, the path is gone
        let mut child = std::process::Command::new("/bin/sh").arg("-c").arg("read x").stdin(std::process::Stdio::piped()).spawn().unwrap();
        let stat = PathBuf::from(format!("/proc/{}/stat", child.id()));
        assert!(c.read(&stat).unwrap().starts_with(&format!("{} (", child.id())));
        drop(child.stdin.take());
        child.wait().unwrap();
        assert!(c.read_opt(&stat).unwrap().is_none(), "reaped process: reopened, not found");
        assert_eq!(c.len(), 1, "the dead descriptor was dropped");
        assert_eq!(c.clone().len(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn proc_file_reread_changes() {
        let c = FdCache::default();
        let p = Path::new("/proc/self/stat");
        // /proc/self resolves at open: the kept descriptor is this process's stat
        let a = c.read(p).unwrap();
        let b = c.read(p).unwrap();
        assert!(a.starts_with(&format!("{} (", std::process::id())) && b.starts_with(&format!("{} (", std::process::id())));
        let up = Path::new("/proc/uptime");
        let first = c.read(up).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_ne!(c.read(up).unwrap(), first, "pread at 0 regenerates a proc file");
    }
}
