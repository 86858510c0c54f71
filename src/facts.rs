//! Facts: everything the rewrite pipeline needs to know about the host and this container,
//! gathered (by `lifecycle`) before any rewrite runs. A plain, serialisable struct, so golden
//! fixtures can pin it in `facts.json`.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The full system-container rewrite.
    #[default]
    System,
    /// The bundle runs exactly as written (conformance suites, debugging).
    Plain,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDir {
    pub destination: PathBuf,
    pub source: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Facts {
    pub mode: Mode,
    /// A pod member: the user namespace (`/proc/<pid>/ns/user` of the container whose
    /// namespaces its spec joins by path) it joins instead of getting one of its own.
    pub pod_userns: Option<PathBuf>,
    /// A pod sandbox whose engine made its network namespace in the host's user namespace
    /// (containerd 1.x): that namespace, whose interfaces move into the sandbox's own during
    /// create (`host::podnet`).
    pub pod_net_from: Option<PathBuf>,
    /// Host uid and gid that container root maps to, and the size of the range.
    pub host_id: u32,
    pub id_size: u32,
    /// The ID-mapped rootfs prepared for this container (replaces root.path).
    pub rootfs: Option<PathBuf>,
    /// Bind-mount sources replaced by a clone of themselves below the mount dir: ID-mapped,
    /// except volumes at data-dir paths, which are re-owned to the range instead.
    pub idmapped_sources: Vec<(PathBuf, PathBuf)>,
    /// The capabilities the runtime itself holds (its bounding set), e.g. "CAP_CHOWN".
    pub runtime_caps: Vec<String>,
    /// The runtime's own hard rlimits ("RLIMIT_NOFILE" → hard); without CAP_SYS_RESOURCE on
    /// the host no container limit can be raised above them.
    pub rlimit_hard: Vec<(String, u64)>,
    /// Without CAP_SYS_RESOURCE the runtime cannot give the container an oom_score_adj below
    /// its own (EACCES): its own value then, the lowest the container can get.
    pub oom_score_adj_floor: Option<i32>,
    /// Namespace types (e.g. "network") whose `path` in the spec is the host's own namespace
    /// (docker 20.10 sends `--network host` as a path to the host's netns).
    pub host_namespace_paths: Vec<String>,
    /// The container's cgroup path (the engine's, or nestrun's own when it gave none).
    pub cgroup_path: Option<PathBuf>,
    /// Host-backed data directories prepared for this container.
    pub data_dirs: Vec<DataDir>,
    /// /lib/modules/<release> when the host has it.
    pub lib_modules: Option<PathBuf>,
    /// Extra devices requested by annotation (`io.nestrun.dev.fuse`, `io.nestrun.dev.tun`)
    /// and present on the host.
    pub fuse_device: bool,
    pub tun_device: bool,
    /// Where their nodes are: a host directory (nestrun's own tmpfs below the mount dir) with
    /// `fuse` and `tun` character devices owned by the container's root.
    pub dev_dir: Option<PathBuf>,
    /// The unix socket the container's syscall supervisor (in its `fuse-serve`) listens on:
    /// the spec's `linux.seccomp.listenerPath` (rewrite/supervisor.rs). None: no supervisor
    /// (`io.nestrun.supervisor=off`, `io.nestrun.proc=host`, no /dev/fuse).
    pub supervisor_socket: Option<PathBuf>,
}

/// A container of a Kubernetes pod (sandbox or app container), as the CRI engines mark it.
pub fn is_cri(spec: &libcontainer::oci_spec::runtime::Spec) -> bool {
    spec.annotations().as_ref().is_some_and(|a| a.contains_key("io.kubernetes.cri.container-type") || a.contains_key("io.kubernetes.cri-o.ContainerType"))
}

/// A pod's sandbox (pause) container, as containerd's CRI plugin and CRI-O mark it.
pub fn is_pod_sandbox(spec: &libcontainer::oci_spec::runtime::Spec) -> bool {
    let a = spec.annotations().as_ref();
    let get = |k: &str| a.and_then(|a| a.get(k)).map(String::as_str);
    get("io.kubernetes.cri.container-type") == Some("sandbox") || get("io.kubernetes.cri-o.ContainerType") == Some("sandbox")
}

/// Annotation keys (docker `--label` reaches the spec as annotations).
pub const ANN_MODE: &str = "io.nestrun.mode";
/// `host`: keep the kernel's own /proc and /sys files (no FUSE emulation).
pub const ANN_PROC: &str = "io.nestrun.proc";

/// `off`: no syscall supervisor (seccomp user notification) for the container: its programs
/// may install a seccomp listener of their own (the kernel allows one per filter chain), and
/// `sysinfo(2)` answers with the host's figures.
pub const ANN_SUPERVISOR: &str = "io.nestrun.supervisor";

/// `true`: /dev/fuse, usable by root in the container (FUSE mounts inside it).
pub const ANN_DEV_FUSE: &str = "io.nestrun.dev.fuse";
/// `true`: /dev/net/tun, usable by root in the container (tun/tap devices in its netns).
pub const ANN_DEV_TUN: &str = "io.nestrun.dev.tun";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FactsError {
    #[error("annotation {key}={value:?}: expected true or false")]
    NotABool { key: &'static str, value: String },
    #[error("annotation {key}={value:?}: expected {expected}")]
    BadValue { key: String, value: String, expected: &'static str },
    #[error("annotation {key}: nestrun knows io.nestrun.mode, io.nestrun.proc, io.nestrun.supervisor, io.nestrun.dev.fuse and io.nestrun.dev.tun")]
    Unknown { key: String },
}

/// Every `io.nestrun.*` annotation, checked before anything is made: a typo must not silently
/// give the default (a system container where plain mode was asked for, or the reverse).
pub fn check_annotations(spec: &libcontainer::oci_spec::runtime::Spec) -> Result<(), FactsError> {
    for (k, v) in spec.annotations().iter().flatten().filter(|(k, _)| k.starts_with("io.nestrun.")) {
        let expected = match k.as_str() {
            ANN_MODE => "system or plain",
            ANN_PROC => "emulated or host",
            ANN_SUPERVISOR => "on or off",
            ANN_DEV_FUSE | ANN_DEV_TUN => "true or false",
            _ => return Err(FactsError::Unknown { key: k.clone() }),
        };
        if !expected.split(" or ").any(|e| e == v) {
            return Err(FactsError::BadValue { key: k.clone(), value: v.clone(), expected });
        }
    }
    Ok(())
}

/// The runtime's environment setting for containers without the annotation (docker 20.10
/// passes no annotations): `NESTRUN_SUPERVISOR=off`.
pub const ENV_SUPERVISOR: &str = "NESTRUN_SUPERVISOR";

/// Whether the container gets the syscall supervisor: the `io.nestrun.supervisor` annotation,
/// else `env` (the runtime's NESTRUN_SUPERVISOR), else on; never with `io.nestrun.proc=host`
/// (the kernel's own figures everywhere). System mode only.
pub fn supervisor_wanted(spec: &libcontainer::oci_spec::runtime::Spec, env: Option<&str>) -> bool {
    let get = |key: &str| spec.annotations().as_ref().and_then(|a| a.get(key)).map(String::as_str);
    get(ANN_PROC) != Some("host") && get(ANN_SUPERVISOR).or(env) != Some("off")
}

/// The extra devices the spec's annotations ask for: (fuse, tun). Absent means false.
pub fn requested_devices(spec: &libcontainer::oci_spec::runtime::Spec) -> Result<(bool, bool), FactsError> {
    let get = |key: &'static str| match spec.annotations().as_ref().and_then(|a| a.get(key)).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(FactsError::NotABool { key, value: v.to_string() }),
    };
    // An engine's device entry is a request too: `docker run --device /dev/fuse` (docker 20.10
    // passes no annotations) or `--privileged` (every host device). A bind of the host's 0600
    // node would show as nobody's inside and be useless; nestrun's own node replaces it.
    let listed = |major: i64, minor: i64| {
        let devices = spec.linux().as_ref().and_then(|l| l.devices().as_ref());
        devices.into_iter().flatten().any(|d| d.typ() == libcontainer::oci_spec::runtime::LinuxDeviceType::C && d.major() == major && d.minor() == minor)
    };
    Ok((get(ANN_DEV_FUSE)? || listed(10, 229), get(ANN_DEV_TUN)? || listed(10, 200)))
}

/// Linux capability names by bit number (capability.h), for reading CapBnd.
pub const CAP_NAMES: &[&str] = &[
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
];

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use libcontainer::oci_spec::runtime::Spec;

    use super::*;

    fn with(ann: &[(&str, &str)]) -> Spec {
        let mut s = Spec::default();
        s.set_annotations(Some(ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>()));
        s
    }

    #[test]
    fn every_nestrun_annotation_is_checked() {
        assert_eq!(check_annotations(&with(&[(ANN_MODE, "plain"), (ANN_PROC, "host"), ("org.other", "x")])), Ok(()));
        assert_eq!(check_annotations(&with(&[(ANN_MODE, "Plain")])).unwrap_err().to_string(), "annotation io.nestrun.mode=\"Plain\": expected system or plain");
        assert_eq!(check_annotations(&with(&[(ANN_PROC, "off")])).unwrap_err().to_string(), "annotation io.nestrun.proc=\"off\": expected emulated or host");
        assert_eq!(check_annotations(&with(&[(ANN_DEV_TUN, "1")])).unwrap_err().to_string(), "annotation io.nestrun.dev.tun=\"1\": expected true or false");
        assert_eq!(check_annotations(&with(&[(ANN_SUPERVISOR, "off")])), Ok(()));
        assert_eq!(check_annotations(&with(&[(ANN_SUPERVISOR, "false")])).unwrap_err().to_string(), "annotation io.nestrun.supervisor=\"false\": expected on or off");
        assert!(check_annotations(&with(&[("io.nestrun.moed", "plain")])).unwrap_err().to_string().starts_with("annotation io.nestrun.moed: nestrun knows"));
    }

    #[test]
    fn supervisor_annotation() {
        assert!(supervisor_wanted(&Spec::default(), None));
        assert!(supervisor_wanted(&with(&[(ANN_SUPERVISOR, "on")]), None));
        assert!(!supervisor_wanted(&with(&[(ANN_SUPERVISOR, "off")]), None));
        assert!(!supervisor_wanted(&with(&[(ANN_PROC, "host")]), None), "the kernel's own figures everywhere");
        assert!(!supervisor_wanted(&Spec::default(), Some("off")), "the runtime's environment");
        assert!(supervisor_wanted(&with(&[(ANN_SUPERVISOR, "on")]), Some("off")), "the annotation wins");
    }

    #[test]
    fn device_annotations() {
        assert_eq!(requested_devices(&Spec::default()), Ok((false, false)));
        assert_eq!(requested_devices(&with(&[(ANN_DEV_FUSE, "true")])), Ok((true, false)));
        assert_eq!(requested_devices(&with(&[(ANN_DEV_TUN, "true"), (ANN_DEV_FUSE, "false")])), Ok((false, true)));
        let mut listed = Spec::default();
        let tun = libcontainer::oci_spec::runtime::LinuxDeviceBuilder::default().path("/dev/net/tun").typ(libcontainer::oci_spec::runtime::LinuxDeviceType::C).major(10).minor(200).build().unwrap();
        listed.linux_mut().as_mut().unwrap().set_devices(Some(vec![tun]));
        assert_eq!(requested_devices(&listed), Ok((false, true)), "docker --device /dev/net/tun is a request");
        let e = requested_devices(&with(&[(ANN_DEV_TUN, "yes")])).unwrap_err();
        assert_eq!(e.to_string(), "annotation io.nestrun.dev.tun=\"yes\": expected true or false");
    }
}
