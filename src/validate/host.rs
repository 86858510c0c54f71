//! The rules that need the host, run by `at_create` after the pure ones: what a namespace path
//! really is, whether net.* sysctls would land in the runtime's own network namespace (plain
//! mode; system mode refuses that namespace outright, `rewrite::namespaces`), and whether the
//! LSM a label names is on. Reading only: nothing is made.
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use libcontainer::oci_spec::runtime::{LinuxNamespaceType as T, Spec};

use super::linux::{namespace_paths, ns_name};
use super::ValidateError as E;
use crate::facts::Mode;

/// `_IO(0xb7, 0x3)` (linux/nsfs.h, Linux 4.11): the CLONE_NEW* type of a namespace file.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

const TYPES: &[T] = &[T::Mount, T::Cgroup, T::Uts, T::Ipc, T::User, T::Pid, T::Network, T::Time];

/// Which of the LSMs the spec can name are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lsm {
    pub apparmor: bool,
    pub selinux: bool,
}

impl Lsm {
    /// As libcontainer (apparmor.rs) and runc's go-selinux see them.
    fn probe() -> Lsm {
        let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.starts_with('Y'));
        Lsm { apparmor, selinux: Path::new("/sys/fs/selinux/enforce").exists() }
    }
}

pub(super) fn check(spec: &Spec, mode: Mode) -> Result<(), E> {
    check_with(spec, mode, Lsm::probe())
}

pub(super) fn check_with(spec: &Spec, mode: Mode, lsm: Lsm) -> Result<(), E> {
    // runc and libcontainer find out in the container's init (setns: EINVAL), namelessly.
    for (index, t, path) in namespace_paths(spec) {
        let what = match kind_of(path) {
            Ok(Some(k)) if k == t => continue,
            Ok(Some(k)) => format!("is a {} namespace", ns_name(k)),
            Ok(None) => "is not a namespace file".into(),
            // One that cannot be opened is named by bundle::load, which runs first.
            Err(_) => continue,
        };
        return Err(E::NamespaceKind { index, typ: ns_name(t), path: path.to_path_buf(), what });
    }
    if mode == Mode::Plain {
        let linux = spec.linux().as_ref();
        let mut keys: Vec<&String> = linux.and_then(|l| l.sysctl().as_ref()).into_iter().flatten().map(|(k, _)| k).filter(|k| k.replace('/', ".").starts_with("net.")).collect();
        keys.sort();
        let netns = namespace_paths(spec).find(|(_, t, _)| *t == T::Network);
        if let (Some(key), Some((index, _, path))) = (keys.first(), netns) {
            if same_file(path, Path::new("/proc/self/ns/net")) {
                return Err(E::Sysctl { key: key.to_string(), why: format!("the network namespace (linux.namespaces[{index}].path {path:?}) is the host's") });
            }
        }
    }
    let process = spec.process().as_ref();
    // libcontainer refuses any profile then (runc fails in the init, writing attr/exec).
    if let Some(p) = process.and_then(|p| p.apparmor_profile().as_ref()).filter(|_| !lsm.apparmor) {
        return Err(E::AppArmor(p.clone()));
    }
    // runc refuses a process label then; libcontainer would silently run without it.
    if let Some(label) = process.and_then(|p| p.selinux_label().as_ref()).filter(|l| !l.is_empty() && !lsm.selinux) {
        return Err(E::SelinuxLabel(label.clone()));
    }
    // runc fails mounting with a mount label then. libcontainer leaves it out of the mounts
    // (runtime-tools' linux_mount_label expects the container), but not out of the tmpfs it
    // puts over masked directories, which then fails (EINVAL, naming /proc/acpi or the like):
    // refused when there are masked paths, which system mode may add (rewrite::devices).
    let linux = spec.linux().as_ref();
    let masked = mode == Mode::System || linux.and_then(|l| l.masked_paths().as_ref()).is_some_and(|m| !m.is_empty());
    if let Some(label) = linux.and_then(|l| l.mount_label().as_ref()).filter(|l| !l.is_empty() && masked && !lsm.selinux) {
        return Err(E::MountLabel(label.clone()));
    }
    Ok(())
}

/// The type of the namespace `path` is a file of; None when it is not a namespace file.
fn kind_of(path: &Path) -> std::io::Result<Option<T>> {
    let f = std::fs::File::open(path)?;
    // SAFETY: an ioctl without argument on a descriptor this function owns.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE as _) };
    Ok(TYPES.iter().copied().find(|t| r > 0 && *t as i32 == r))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
