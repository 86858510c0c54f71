//! nestrun's own per-container record, beside libcontainer's state: what was made on the host
//! for the container, so `delete` (or the cleanup after a failed or killed create) can undo it.
//! Lives in `<root>/.nestrun/<id>/` with the shadow bundle; the mounts live in `mnt_dir`.
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
    let base = std::env::var_os("NESTRUN_MNT_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/run/nestrun-mnt"));
    base.join(format!("{id}-{:08x}", fnv(root)))
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
    pub fuse_pid: Option<i32>,
    pub fuse_mount: Option<PathBuf>,
}

impl Record {
    pub fn load(dir: &Path) -> Option<Record> {
        serde_json::from_slice(&std::fs::read(dir.join("record.json")).ok()?).ok()
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(".record.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("serialisable"))?;
        std::fs::rename(tmp, dir.join("record.json"))
    }
}
