//! nestrun's own per-container record, beside libcontainer's state: what was made on the host
//! for the container, so `delete` (or the cleanup after a failed or killed create) can undo it.
//! Lives in `<root>/.nestrun/<id>/` with the shadow bundle and the ID-mapped mounts.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::facts::Mode;
use crate::subid::Lease;

pub const DIR: &str = ".nestrun";

pub fn dir(root: &Path, id: &str) -> PathBuf {
    root.join(DIR).join(id)
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
