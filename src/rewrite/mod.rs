//! The rewrite pipeline: pure steps `fn(Spec, &Facts) -> Result<Spec, RewriteError>`, run in
//! one ordered list, that turn an engine's config.json into a system container. No step touches
//! the file system; everything they need is in `Facts`. Every step is idempotent, and a mount
//! the spec already has at a destination always wins over ours.
use std::path::Path;

use libcontainer::oci_spec::runtime::{Mount, Spec};

use crate::facts::{Facts, Mode};

mod cgroup;
pub mod datadirs;
pub(crate) mod devices;
mod namespaces;
mod procfs;
pub(crate) mod rootfs;
pub mod newsyscalls;
pub mod security;
pub mod supervisor;
mod systemd;
pub mod userns;

#[cfg(test)]
pub(crate) mod golden;
#[cfg(test)]
pub(crate) mod testutil;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    #[error("the container asks for the host's {0} namespace; nestrun refuses host namespaces (drop --{1}=host)")]
    HostNamespace(&'static str, &'static str),
    #[error("the pod asks for the host's {0} namespace; nestrun refuses host namespaces (drop {1}: true)")]
    PodHostNamespace(&'static str, &'static str),
    #[error("linux.{kind}Mappings: {msg}")]
    BadMapping { kind: &'static str, msg: String },
    #[error("config.json has no linux section")]
    NoLinux,
    #[error("config.json has no process section")]
    NoProcess,
}

pub type Step = fn(Spec, &Facts) -> Result<Spec, RewriteError>;

/// The ordered list of steps.
pub const STEPS: &[(&str, Step)] = &[
    ("namespaces", namespaces::rewrite),
    ("userns", userns::rewrite),
    ("rootfs", rootfs::rewrite),
    ("cgroup", cgroup::rewrite),
    ("procfs", procfs::rewrite),
    ("datadirs", datadirs::rewrite),
    ("devices", devices::rewrite),
    ("security", security::rewrite),
    ("supervisor", supervisor::rewrite),
    ("systemd", systemd::rewrite),
];

pub fn rewrite(mut spec: Spec, facts: &Facts) -> Result<Spec, RewriteError> {
    if facts.mode == Mode::Plain {
        return Ok(spec);
    }
    for (name, step) in STEPS {
        spec = step(spec, facts)?;
        tracing::trace!(step = name, "rewrite step done");
    }
    Ok(spec)
}

/// True when the spec already mounts something at `dest`.
pub(crate) fn has_mount(spec: &Spec, dest: &Path) -> bool {
    spec.mounts().as_ref().is_some_and(|ms| ms.iter().any(|m| m.destination() == dest))
}

/// A mount of `typ` from `source` at `dest` with `options`.
pub(crate) fn new_mount(dest: impl Into<std::path::PathBuf>, typ: &str, source: impl Into<std::path::PathBuf>, options: Vec<String>) -> Mount {
    libcontainer::oci_spec::runtime::MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options)
        .build()
        .expect("all fields set")
}

/// Append `m` unless the spec already mounts at its destination (the spec wins).
pub(crate) fn add_mount(spec: &mut Spec, m: Mount) {
    if !has_mount(spec, m.destination()) {
        let mut ms = spec.mounts().clone().unwrap_or_default();
        ms.push(m);
        spec.set_mounts(Some(ms));
    }
}
