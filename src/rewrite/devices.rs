//! Devices and system files.
//! - Host block devices and /dev/mem, /dev/kmem, /dev/port, /dev/kmsg nodes are never handed to
//!   a system container, even when the engine lists them (`docker run --privileged` lists every
//!   host device): nestrun confines --privileged instead of honouring it.
//! - /dev/kmsg is /dev/null (as Sysbox does): systemd and kubelet open it, and the host's
//!   kernel log must not be readable or writable.
//! - /lib/modules/$(uname -r) is bound read-only when present, for tools that look for modules
//!   (loading them stays impossible: init_module is denied by seccomp and by the kernel).
use libcontainer::oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType, Spec};

use super::{add_mount, new_mount, RewriteError};
use crate::facts::Facts;

/// The only host character devices a system container gets, even when the engine lists more
/// (`--privileged` lists every host device: kvm, ttys, cpu/msr, disks...): null, zero, full,
/// random, urandom, tty, console, ptmx, fuse, net/tun. (-1 = any minor.)
const ALLOWED_CHAR: &[(i64, i64)] = &[(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (10, 229), (10, 200), (136, -1)];

fn allowed(major: i64, minor: i64) -> bool {
    ALLOWED_CHAR.iter().any(|&(ma, mi)| ma == major && (mi == -1 || mi == minor))
}

/// What docker masks and makes read-only by default; restored when the engine sent none
/// (`--privileged`, `systempaths=unconfined`). /proc/sys stays writable (see procfs.rs).
const MASKED: &[&str] = &["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"];
const READONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sysrq-trigger"];

pub fn rewrite(mut spec: Spec, facts: &Facts) -> Result<Spec, RewriteError> {
    if let Some(linux) = spec.linux_mut().as_mut() {
        if let Some(devs) = linux.devices_mut().as_mut() {
            devs.retain(|d| matches!(d.typ(), LinuxDeviceType::C | LinuxDeviceType::U) && allowed(d.major(), d.minor()));
        }
        // An "allow everything" device rule becomes deny-all plus the allowed list.
        if let Some(res) = linux.resources_mut().as_mut() {
            let rules = res.devices().clone().unwrap_or_default();
            if rules.iter().any(|r| r.allow() && r.typ().is_none_or(|t| t == LinuxDeviceType::A) && r.major().is_none()) {
                let mut out = vec![LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().expect("valid")];
                out.extend(ALLOWED_CHAR.iter().map(|&(ma, mi)| {
                    let b = LinuxDeviceCgroupBuilder::default().allow(true).typ(LinuxDeviceType::C).major(ma).access("rwm");
                    if mi >= 0 { b.minor(mi) } else { b }.build().expect("valid")
                }));
                res.set_devices(Some(out));
            }
        }
        if linux.masked_paths().as_ref().is_none_or(|m| m.is_empty()) {
            linux.set_masked_paths(Some(MASKED.iter().map(|s| s.to_string()).collect()));
        }
        if linux.readonly_paths().as_ref().is_none_or(|m| m.is_empty()) {
            linux.set_readonly_paths(Some(READONLY.iter().map(|s| s.to_string()).collect()));
        }
    }
    let bind = |src: &str, dest: &str, ro: bool| {
        let mut opts = vec!["rbind".to_string(), "nosuid".into(), "noexec".into()];
        if ro {
            opts.push("ro".into());
        }
        new_mount(dest, "bind", src, opts)
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
            dev("/dev/kvm", LinuxDeviceType::C, 10, 232),
            dev("/dev/fuse", LinuxDeviceType::C, 10, 229),
        ];
        spec.linux_mut().as_mut().unwrap().set_devices(Some(devs));
        let mut f = facts();
        f.lib_modules = Some(PathBuf::from("/lib/modules/6.18.0"));
        let out = rewrite(spec, &f).unwrap();
        let paths: Vec<_> = out.linux().as_ref().unwrap().devices().as_ref().unwrap().iter().map(|d| d.path().clone()).collect();
        assert_eq!(paths, vec![PathBuf::from("/dev/fuse")]);
        let masked = out.linux().as_ref().unwrap().masked_paths().clone().unwrap();
        assert!(masked.contains(&"/proc/kcore".to_string()), "masks restored: {masked:?}");
        let dests: Vec<_> = out.mounts().as_ref().unwrap().iter().map(|m| m.destination().to_string_lossy().into_owned()).collect();
        assert!(dests.contains(&"/dev/kmsg".to_string()) && dests.contains(&"/lib/modules/6.18.0".to_string()), "{dests:?}");
        assert_eq!(rewrite(out.clone(), &f).unwrap(), out);
    }
}
