//! nestrun's own per-container record, beside libcontainer's state: what was made on the host
//! for the container, so `delete` (or the cleanup after a failed or killed create) can undo it.
//! Lives in `<root>/.nestrun/<id>/` with the shadow bundle; the mounts live in `mnt_dir`.
//! A copy (with the root) is kept beside the mount dir (`mirror`), so what was made for a
//! container can still be found and undone when its state dir is gone (`lifecycle::gc`).
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::facts::Mode;
use crate::subid::Lease;

pub const DIR: &str = ".nestrun";

pub fn dir(root: &Path, id: &str) -> PathBuf {
    root.join(DIR).join(id)
}

/// Where the container's ID-mapped mounts live. Not below the engine's state root: that is
/// often mode 0700, and container root (an unprivileged host uid) must be able to reach its
/// rootfs and bind sources. Every directory on this path is mode 0711.
pub fn mnt_dir(root: &Path, id: &str) -> PathBuf {
    mnt_base().join(key(root, id))
}

/// Where every container's mount dir (and record mirror) lives.
pub fn mnt_base() -> PathBuf {
    std::env::var_os("NESTRUN_MNT_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/run/nestrun-mnt"))
}

/// `<id>-<fnv(root)>`: the name of a container's mount dir and fallback data dir.
pub fn key(root: &Path, id: &str) -> String {
    format!("{id}-{:08x}", fnv(root))
}

/// Suffix of a record mirror's file name (`<mnt base>/<key>.record`).
pub const MIRROR_EXT: &str = ".record";

/// The copy of a container's record beside its mount dir.
pub fn mirror(root: &Path, id: &str) -> PathBuf {
    mnt_base().join(format!("{}{MIRROR_EXT}", key(root, id)))
}

/// FNV-1a of a path, 32 bits: keeps ids from different state roots apart.
pub fn fnv(p: &Path) -> u32 {
    p.as_os_str().as_encoded_bytes().iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3)) as u32
}

/// Create `dir` and its missing parents with mode 0711.
pub fn create_traversable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o711).create(dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    pub id: String,
    /// The bundle the engine gave us (libcontainer only knows the shadow one).
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub mode: Mode,
    pub host_id: u32,
    pub lease: Option<Lease>,
    pub cgroup_path: Option<PathBuf>,
    pub data_root: Option<PathBuf>,
    /// The data dir lives beside the engine's upper dir and is kept on delete (the engine
    /// removes it with the container's layer).
    pub data_persistent: bool,
    /// Work dirs of nestrun's own rebuilt overlays (beside the engine's upper dir).
    pub work_dirs: Vec<PathBuf>,
    /// The engine's rootfs path covered read-only with nestrun's overlay, and that cover's
    /// device (see `host::overlay::cover`).
    pub engine_cover: Option<(PathBuf, u64)>,
    /// The device of the id-shifting view bound over that cover (`host::overlay::cover_shifted`).
    pub engine_shift: Option<u64>,
    pub fuse_pid: Option<i32>,
    pub fuse_mount: Option<PathBuf>,
    /// The state root (only in the mirror: the sidecar dir is `<root>/.nestrun/<id>`).
    pub root: Option<PathBuf>,
}

impl Record {
    pub fn load(dir: &Path) -> Option<Record> {
        serde_json::from_slice(&std::fs::read(dir.join("record.json")).ok()?).ok()
    }

    /// Write the record into the sidecar dir `dir` (`<root>/.nestrun/<id>`), then its mirror.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(".record.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("serialisable"))?;
        std::fs::rename(tmp, dir.join("record.json"))?;
        match dir.parent().and_then(Path::parent) {
            Some(root) if !self.id.is_empty() => self.save_mirror(root),
            _ => Ok(()),
        }
    }

    fn save_mirror(&self, root: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let rec = Record { root: Some(root.to_path_buf()), ..self.clone() };
        let file = mirror(root, &self.id);
        let tmp = file.with_file_name(format!(".{}.tmp", key(root, &self.id)));
        let open = || std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp);
        let mut f = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_traversable(&mnt_base())?;
                open()?
            }
            r => r?,
        };
        f.write_all(&serde_json::to_vec(&rec).expect("serialisable"))?;
        std::fs::rename(tmp, file)
    }

    /// The mirror of a container's record (see `save`), if there is one.
    pub fn load_mirror(root: &Path, id: &str) -> Option<Record> {
        Self::load_file(&mirror(root, id))
    }

    pub fn load_file(file: &Path) -> Option<Record> {
        serde_json::from_slice(&std::fs::read(file).ok()?).ok()
    }

    /// The sidecar dir this (mirrored) record belongs to.
    pub fn state_dir(&self) -> Option<PathBuf> {
        Some(dir(self.root.as_ref()?, &self.id))
    }
}

/// Remove a container's record mirror (the last step of teardown).
pub fn remove_mirror(root: &Path, id: &str) {
    if let Err(e) = std::fs::remove_file(mirror(root, id)) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot remove {}: {e}", mirror(root, id).display());
        }
    }
}
