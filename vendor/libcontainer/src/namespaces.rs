//! Namespaces provide isolation of resources for processes at a kernel level.
//! The namespaces are: Mount (filesystem),
//! Process (processes in a namespace have two PIDs, one for the global PID,
//! which is used by the main system and the second one is for the child within the process tree),
//! Interprocess Communication (Control or communication between processes),
//! Network (which network devices can be seen by the processes in the namespace), User (User configs),
//! UTS (hostname and domain information, processes will think they're running on servers with different names),
//! Cgroup (Resource limits, execution priority etc.)

use std::collections;

use nix::sched::CloneFlags;
use nix::sys::stat;
use nix::{fcntl, unistd};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use crate::syscall::Syscall;
use crate::syscall::syscall::create_syscall;

// CLONE_NEWTIME is not yet defined in nix's CloneFlags.
pub(crate) const CLONE_NEWTIME_FLAG: CloneFlags = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);

type Result<T> = std::result::Result<T, NamespaceError>;

/// nestrun patch 8: namespace files opened by the main process, by path. A tenant (exec) joins
/// the container's user namespace first and its other namespaces after; opening
/// /proc/<init>/ns/* from inside that user namespace needs ptrace access to the init, which
/// fails with EACCES while the init has not exec'd its program yet (its memory still belongs to
/// the host's user namespace and is not dumpable): a `docker exec` right after `docker start`.
/// The main process (host root) opens them all before it forks; the intermediate and init
/// processes inherit the descriptors (close-on-exec: the container's program never gets them).
static PREOPENED: std::sync::Mutex<Vec<(std::path::PathBuf, std::os::fd::OwnedFd)>> = std::sync::Mutex::new(Vec::new());

/// nestrun patch 8: open `paths` now (see [`PREOPENED`]).
pub fn preopen<'a>(paths: impl Iterator<Item = &'a std::path::Path>) -> Result<()> {
    let mut held = PREOPENED.lock().unwrap_or_else(|e| e.into_inner());
    for path in paths {
        if held.iter().any(|(p, _)| p == path) {
            continue;
        }
        let fd = fcntl::open(path, fcntl::OFlag::O_CLOEXEC, stat::Mode::empty()).inspect_err(|err| {
            tracing::error!(?err, ?path, "failed to open namespace file");
        })?;
        // SAFETY: open returned a new descriptor that nothing else owns.
        held.push((path.to_path_buf(), unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }));
    }
    Ok(())
}

fn preopened(path: &std::path::Path) -> Option<std::os::fd::RawFd> {
    use std::os::fd::AsRawFd;
    PREOPENED.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|(p, _)| p == path).map(|(_, fd)| fd.as_raw_fd())
}

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error(transparent)]
    Nix(#[from] nix::Error),
    #[error(transparent)]
    IO(#[from] std::io::Error),
    #[error(transparent)]
    Syscall(#[from] crate::syscall::SyscallError),
    #[error("Namespace type not supported: {0}")]
    NotSupported(String),
}

static ORDERED_NAMESPACES: &[CloneFlags] = &[
    CloneFlags::CLONE_NEWUSER,
    CloneFlags::CLONE_NEWPID,
    CloneFlags::CLONE_NEWUTS,
    CloneFlags::CLONE_NEWIPC,
    CloneFlags::CLONE_NEWNET,
    CloneFlags::CLONE_NEWCGROUP,
    CloneFlags::CLONE_NEWNS,
    CLONE_NEWTIME_FLAG,
];

/// nestrun patch: a detached sysfs mount made by `Namespaces::join_before_userns`.
pub static PREMADE_SYSFS: std::sync::OnceLock<std::os::fd::OwnedFd> = std::sync::OnceLock::new();

/// Holds information about namespaces
pub struct Namespaces {
    command: Box<dyn Syscall>,
    namespace_map: collections::HashMap<CloneFlags, LinuxNamespace>,
}

fn get_clone_flag(namespace_type: LinuxNamespaceType) -> Result<CloneFlags> {
    let flag = match namespace_type {
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Time => CLONE_NEWTIME_FLAG,
    };

    Ok(flag)
}

impl TryFrom<Option<&Vec<LinuxNamespace>>> for Namespaces {
    type Error = NamespaceError;

    fn try_from(namespaces: Option<&Vec<LinuxNamespace>>) -> Result<Self> {
        let command: Box<dyn Syscall> = create_syscall();
        let namespace_map: collections::HashMap<CloneFlags, LinuxNamespace> = namespaces
            .unwrap_or(&vec![])
            .iter()
            .map(|ns| match get_clone_flag(ns.typ()) {
                Ok(flag) => Ok((flag, ns.clone())),
                Err(err) => Err(err),
            })
            .collect::<Result<Vec<(CloneFlags, LinuxNamespace)>>>()?
            .into_iter()
            .collect();

        Ok(Namespaces {
            command,
            namespace_map,
        })
    }
}

impl Namespaces {
    pub fn apply_namespaces<F: Fn(CloneFlags) -> bool>(&self, filter: F) -> Result<()> {
        let to_enter: Vec<(&CloneFlags, &LinuxNamespace)> = ORDERED_NAMESPACES
            .iter()
            .filter(|c| filter(**c))
            .filter_map(|c| self.namespace_map.get_key_value(c))
            .collect();

        for (_, ns) in to_enter {
            self.unshare_or_setns(ns)?;
        }
        Ok(())
    }

    pub fn unshare_or_setns(&self, namespace: &LinuxNamespace) -> Result<()> {
        tracing::debug!("unshare or setns: {:?}", namespace);
        match namespace.path() {
            Some(path) => {
                // nestrun patch 8: a descriptor the main process opened, if there is one.
                let held = preopened(path);
                let fd = match held {
                    Some(fd) => fd,
                    None => fcntl::open(path, fcntl::OFlag::empty(), stat::Mode::empty())
                        .inspect_err(|err| {
                            tracing::error!(?err, ?namespace, "failed to open namespace file");
                        })?,
                };
                self.command
                    .set_ns(fd, get_clone_flag(namespace.typ())?)
                    .map_err(|err| {
                        tracing::error!(?err, ?namespace, "failed to set namespace");
                        err
                    })?;
                if held.is_none() {
                    unistd::close(fd).inspect_err(|err| {
                        tracing::error!(?err, ?namespace, "failed to close namespace file");
                    })?;
                }
            }
            None => {
                self.command
                    .unshare(get_clone_flag(namespace.typ())?)
                    .map_err(|err| {
                        tracing::error!(?err, ?namespace, "failed to unshare namespace");
                        err
                    })?;
            }
        }

        Ok(())
    }

    /// nestrun patch: namespaces given by path that are joined before the user namespace is
    /// made or joined, as runc does. One owned by another user namespace (podman's network
    /// namespace, owned by the host's) cannot be joined from inside the container's: setns
    /// needs CAP_SYS_ADMIN over its owner (EPERM), at create and at exec. Only net, ipc and
    /// uts: pid and time take effect for children and are entered later anyway; mount and
    /// cgroup must be entered last.
    pub fn joined_before_userns(&self, flag: CloneFlags) -> bool {
        self.namespace_map.contains_key(&CloneFlags::CLONE_NEWUSER)
            && [CloneFlags::CLONE_NEWNET, CloneFlags::CLONE_NEWIPC, CloneFlags::CLONE_NEWUTS].contains(&flag)
            && self.namespace_map.get(&flag).is_some_and(|ns| ns.path().is_some())
    }

    /// nestrun patch: join the namespaces of `joined_before_userns` (call before the user
    /// namespace is made). When that includes the network namespace and the spec mounts
    /// sysfs, the sysfs instance is made now, detached, (a sysfs mount needs CAP_SYS_ADMIN
    /// over the network namespace's owner, which the container's root lacks) and kept in
    /// `PREMADE_SYSFS` for the init process (a clone of this one) to move into place.
    pub fn join_before_userns(&self, mounts: &[oci_spec::runtime::Mount]) -> Result<()> {
        for flag in ORDERED_NAMESPACES.iter().filter(|f| self.joined_before_userns(**f)) {
            if let Some(ns) = self.namespace_map.get(flag) {
                self.unshare_or_setns(ns)?;
            }
        }
        // Also when the user namespace is joined (a pod member, nestrun patch 12): its root has
        // no more say over a network namespace the host's user namespace owns.
        if self.joined_before_userns(CloneFlags::CLONE_NEWNET) {
            if let Some(m) = mounts.iter().find(|m| m.typ().as_deref() == Some("sysfs")) {
                use crate::syscall::linux::*;
                let opts = m.options().clone().unwrap_or_default();
                let attr = [("ro", MOUNT_ATTR_RDONLY), ("nosuid", MOUNT_ATTR_NOSUID), ("nodev", MOUNT_ATTR_NODEV), ("noexec", MOUNT_ATTR_NOEXEC)]
                    .iter()
                    .filter(|(o, _)| opts.iter().any(|x| x == o))
                    .fold(0, |a, (_, f)| a | f);
                let fsfd = self.command.fsopen(Some("sysfs"), 1 /* FSOPEN_CLOEXEC */)?;
                use std::os::fd::AsFd;
                self.command.fsconfig(fsfd.as_fd(), FSCONFIG_CMD_CREATE as u32, None, None, 0)?;
                let mfd = self.command.fsmount(fsfd.as_fd(), 1 /* FSMOUNT_CLOEXEC */, Some(attr))?;
                let _ = PREMADE_SYSFS.set(mfd);
            }
        }
        Ok(())
    }

    /// nestrun patch: the `net.*` sysctls of a network namespace joined before the user
    /// namespace are written now, as host root (the container's root has no say over a network
    /// namespace its user namespace does not own: EACCES). `net.ipv4.ping_group_range` is in
    /// the writer's ids, so the container's gids are translated through `gid_mappings`.
    pub fn net_sysctls_before_userns(
        &self,
        sysctl: &collections::HashMap<String, String>,
        gid_mappings: &[oci_spec::runtime::LinuxIdMapping],
    ) -> Result<()> {
        if !self.joined_before_userns(CloneFlags::CLONE_NEWNET) {
            return Ok(());
        }
        let to_host = |g: u32| {
            gid_mappings
                .iter()
                .find(|m| g >= m.container_id() && g - m.container_id() < m.size())
                .map(|m| m.host_id() + (g - m.container_id()))
        };
        for (k, v) in sysctl.iter().filter(|(k, _)| k.starts_with("net.")) {
            let mut v = v.clone();
            if k == "net.ipv4.ping_group_range" {
                let ids: Vec<Option<u32>> = v.split_whitespace().map(|x| x.parse().ok().and_then(to_host)).collect();
                match ids.as_slice() {
                    [Some(lo), Some(hi)] => v = format!("{lo} {hi}"),
                    _ => {
                        tracing::warn!("{k}={v}: gids not mapped, not set");
                        continue;
                    }
                }
            }
            let path = std::path::Path::new("/proc/sys").join(k.replace('.', "/"));
            std::fs::write(&path, v.as_bytes()).inspect_err(|err| {
                tracing::error!(?err, "failed to set sysctl {k}={v}");
            })?;
        }
        Ok(())
    }

    pub fn get(&self, k: LinuxNamespaceType) -> Result<Option<&LinuxNamespace>> {
        Ok(self.namespace_map.get(&get_clone_flag(k)?))
    }
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType};
    use serial_test::serial;

    use super::*;
    use crate::syscall::test::TestHelperSyscall;

    fn gen_sample_linux_namespaces() -> Vec<LinuxNamespace> {
        vec![
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Mount)
                .path("/dev/null")
                .build()
                .unwrap(),
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path("/dev/null")
                .build()
                .unwrap(),
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Pid)
                .build()
                .unwrap(),
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .build()
                .unwrap(),
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Ipc)
                .build()
                .unwrap(),
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Time)
                .build()
                .unwrap(),
        ]
    }

    #[test]
    #[serial]
    fn test_apply_namespaces() {
        let sample_linux_namespaces = gen_sample_linux_namespaces();
        let namespaces = Namespaces::try_from(Some(&sample_linux_namespaces))
            .expect("create namespace struct should be good");
        let test_command: &TestHelperSyscall = namespaces.command.as_any().downcast_ref().unwrap();
        assert!(
            namespaces
                .apply_namespaces(|ns_type| { ns_type != CloneFlags::CLONE_NEWIPC })
                .is_ok()
        );

        let mut setns_args: Vec<_> = test_command
            .get_setns_args()
            .into_iter()
            .map(|(_fd, cf)| cf)
            .collect();
        setns_args.sort();
        let mut expect = vec![CloneFlags::CLONE_NEWNS, CloneFlags::CLONE_NEWNET];
        expect.sort();
        assert_eq!(setns_args, expect);

        let mut unshare_args = test_command.get_unshare_args();
        unshare_args.sort();
        let mut expect = vec![
            CLONE_NEWTIME_FLAG,
            CloneFlags::CLONE_NEWUSER,
            CloneFlags::CLONE_NEWPID,
        ];
        expect.sort();
        assert_eq!(unshare_args, expect)
    }
}
