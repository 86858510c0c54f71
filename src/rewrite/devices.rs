//! Devices and system files.
//! - Host block devices and /dev/mem, /dev/kmem, /dev/port, /dev/kmsg nodes are never handed to
//!   a system container, even when the engine lists them (`docker run --privileged` lists every
//!   host device): nestrun confines --privileged instead of honouring it.
//! - /dev/kmsg is /dev/null (as Sysbox does): systemd and kubelet open it, and the host's
//!   kernel log must not be readable or writable.
//! - /lib/modules/$(uname -r) is bound read-only when present, for tools that look for modules
//!   (loading them stays impossible: init_module is denied by seccomp and by the kernel).
use libcontainer::oci_spec::runtime::{LinuxDeviceType, MountBuilder, Spec};

use super::{add_mount, RewriteError};
use crate::facts::Facts;

/// Character devices (major, minor) a system container never gets from the host.
const DENIED_CHAR: &[(i64, i64)] = &[(1, 1), (1, 2), (1, 4), (1, 11)]; // mem, kmem, port, kmsg

pub fn rewrite(mut spec: Spec, facts: &Facts) -> Result<Spec, RewriteError> {
    if let Some(devs) = spec.linux_mut().as_mut().and_then(|l| l.devices_mut().as_mut()) {
        devs.retain(|d| match d.typ() {
            LinuxDeviceType::B => false,
            LinuxDeviceType::C | LinuxDeviceType::U => !DENIED_CHAR.contains(&(d.major(), d.minor())),
            _ => true,
        });
    }
    let bind = |src: &str, dest: &str, ro: bool| {
        let mut opts = vec!["rbind".to_string(), "nosuid".into(), "noexec".into()];
        if ro {
            opts.push("ro".into());
        }
        MountBuilder::default().destination(dest).typ("bind").source(src).options(opts).build().expect("all fields set")
    };
    add_mount(&mut spec, bind("/dev/null", "/dev/kmsg", false));
    if let Some(m) = &facts.lib_modules {
        let p = m.to_string_lossy();
        add_mount(&mut spec, bind(&p, &p, true));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use libcontainer::oci_spec::runtime::LinuxDeviceBuilder;

    use super::*;
    use crate::rewrite::testutil::{docker_like, facts};

    #[test]
    fn privileged_device_list_is_confined() {
        let mut spec = docker_like();
        let dev = |p: &str, t, ma, mi| LinuxDeviceBuilder::default().path(p).typ(t).major(ma).minor(mi).build().unwrap();
        let devs = vec![
            dev("/dev/sda", LinuxDeviceType::B, 8, 0),
            dev("/dev/mem", LinuxDeviceType::C, 1, 1),
            dev("/dev/kmsg", LinuxDeviceType::C, 1, 11),
            dev("/dev/snd/timer", LinuxDeviceType::C, 116, 33),
        ];
        spec.linux_mut().as_mut().unwrap().set_devices(Some(devs));
        let mut f = facts();
        f.lib_modules = Some(PathBuf::from("/lib/modules/6.18.0"));
        let out = rewrite(spec, &f).unwrap();
        let paths: Vec<_> = out.linux().as_ref().unwrap().devices().as_ref().unwrap().iter().map(|d| d.path().clone()).collect();
        assert_eq!(paths, vec![PathBuf::from("/dev/snd/timer")]);
        let dests: Vec<_> = out.mounts().as_ref().unwrap().iter().map(|m| m.destination().to_string_lossy().into_owned()).collect();
        assert!(dests.contains(&"/dev/kmsg".to_string()) && dests.contains(&"/lib/modules/6.18.0".to_string()), "{dests:?}");
        assert_eq!(rewrite(out.clone(), &f).unwrap(), out);
    }
}
