use anyhow::Result;
use serde_json::json;

use crate::rewrite::security::{HOST_SYSCALLS, NESTED_SYSCALLS};

/// The OCI features document (runtime-spec features.md), plus nestrun's own annotations.
pub fn run(_: liboci_cli::Features) -> Result<()> {
    let doc = json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "bind", "rbind",
            "private", "rprivate", "shared", "rshared", "slave", "rslave", "relatime", "norelatime",
            "strictatime", "nostrictatime", "noatime", "atime", "tmpcopyup",
            // recursive read-only (libcontainer: mount_setattr, AT_RECURSIVE); containerd 2.x
            // reports a handler able to do CRI recursive_read_only mounts when it is listed
            "rro"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time"],
            "capabilities": crate::facts::CAP_NAMES,
            "cgroup": { "v1": true, "v2": true, "systemd": true, "systemdUser": false, "rdma": false },
            "seccomp": { "enabled": true, "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE",
                "SCMP_ACT_TRAP", "SCMP_ACT_NOTIFY"] },
            "apparmor": { "enabled": true },
            "selinux": { "enabled": true },
            "intelRdt": { "enabled": false },
            // What containerd 2.x reads before it reports a handler able to run pods with
            // `hostUsers: false` (runc >= 1.2 reports true), and what its shim checks before it
            // creates a container whose spec has ID-mapped mounts: binds with the container's
            // own mappings are made by nestrun (an ID-mapped clone on the host, in system mode).
            "mountExtensions": { "idmap": { "enabled": true } },
        },
        "annotations": {
            "io.nestrun.mode": "system (default) or plain: run the bundle exactly as written",
            "io.nestrun.version": env!("CARGO_PKG_VERSION"),
            "io.nestrun.seccomp.allowed": NESTED_SYSCALLS.join(","),
            "io.nestrun.seccomp.denied": HOST_SYSCALLS.join(","),
        },
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
