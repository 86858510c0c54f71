//! Devices and system files.
//! - Host block devices and /dev/mem, /dev/kmem, /dev/port, /dev/kmsg nodes are never handed to
//!   a system container, even when the engine lists them (`docker run --privileged` lists every
//!   host device): nestrun confines --privileged instead of honouring it.
//! - /dev/kmsg is /dev/null (as Sysbox does): systemd and kubelet open it, and the host's
//!   kernel log must not be readable or writable.
//! - /lib/modules/$(uname -r) is bound read-only when present, for tools that look for modules
//!   (loading them stays impossible: init_module is denied by seccomp and by the kernel).
//! - /dev/fuse and /dev/net/tun on request (annotations `io.nestrun.dev.fuse=true`,
//!   `io.nestrun.dev.tun=true`): nestrun's own nodes, owned by the container's root, bound in,
//!   with a device-cgroup allow rule. Why that is safe: see `extra_devices`.
use libcontainer::oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResources, Spec};

use super::{add_mount, new_mount, RewriteError};
use crate::facts::Facts;

/// The only host character devices a system container gets, even when the engine lists more
/// (`--privileged` lists every host device: kvm, ttys, cpu/msr, disks...): null, zero, full,
/// random, urandom, tty, console, ptmx, fuse, net/tun. (-1 = any minor.)
const ALLOWED_CHAR: &[(i64, i64)] = &[(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (10, 229), (10, 200), (136, -1)];

pub(crate) fn allowed(major: i64, minor: i64) -> bool {
    ALLOWED_CHAR.iter().any(|&(ma, mi)| ma == major && (mi == -1 || mi == minor))
}

/// What docker masks and makes read-only by default; restored when the engine sent none
/// (`--privileged`, `systempaths=unconfined`). /proc/sys stays writable (see procfs.rs).
const MASKED: &[&str] = &["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"];
const READONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sysrq-trigger"];

pub fn rewrite(mut spec: Spec, facts: &Facts) -> Result<Spec, RewriteError> {
    if let Some(linux) = spec.linux_mut().as_mut() {
        if let Some(devs) = linux.devices_mut().as_mut() {
            // /dev/ptmx is not made from the list (as runc skips it): libcontainer makes it the
            // symlink to pts/ptmx after binding the listed nodes, and a host node bound there
            // (a CRI privileged container lists every host device) fails every create with
            // "could not delete /dev/ptmx". The cgroup rule for 5:2 stays.
            devs.retain(|d| matches!(d.typ(), LinuxDeviceType::C | LinuxDeviceType::U) && allowed(d.major(), d.minor()) && d.path() != std::path::Path::new("/dev/ptmx"));
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
    extra_devices(&mut spec, facts);
    Ok(spec)
}

/// (name in `Facts::dev_dir`, path in the container, major, minor)
const FUSE: (&str, &str, i64, i64) = ("fuse", "/dev/fuse", 10, 229);
const TUN: (&str, &str, i64, i64) = ("tun", "/dev/net/tun", 10, 200);

/// The devices asked for by annotation. Both are safe for root in a user namespace, because the
/// kernel checks what they do against the container's own namespaces:
/// - /dev/fuse: a FUSE mount needs CAP_SYS_ADMIN in the user namespace owning the caller's
///   mount namespace (FUSE is FS_USERNS_MOUNT since Linux 4.18). The mount exists only in the
///   container's mount namespace, its superblock is nodev and honours setuid/file capabilities
///   only for the ids of that user namespace, and FUSE shields other users from it unless
///   allow_other, which only affects processes of the container itself. The host never
///   traverses it.
/// - /dev/net/tun: TUNSETIFF needs CAP_NET_ADMIN in the user namespace owning the network
///   namespace; the interface is made in the container's own network namespace (never the
///   host's: host namespaces are refused), so host interfaces and routes stay out of reach.
///
/// The nodes are nestrun's own (`Facts::dev_dir`, made by `lifecycle::gather`): mknod of a
/// device needs CAP_MKNOD in the initial user namespace, and a bind of the host's node, often
/// 0600 root, shows as nobody's inside (EACCES). The allow rules name exactly these two
/// devices; the rest of the device cgroup is the engine's (or deny-all, see above).
fn extra_devices(spec: &mut Spec, facts: &Facts) {
    let Some(dir) = &facts.dev_dir else { return };
    for (want, (name, dest, major, minor)) in [(facts.fuse_device, FUSE), (facts.tun_device, TUN)] {
        // a mount of the spec's own at that path wins (e.g. `-v /dev/fuse:/dev/fuse`)
        if !want || super::has_mount(spec, std::path::Path::new(dest)) {
            continue;
        }
        let opts = ["rbind", "nosuid", "noexec"].iter().map(|s| s.to_string()).collect();
        add_mount(spec, new_mount(dest, "bind", dir.join(name), opts));
        let Some(linux) = spec.linux_mut().as_mut() else { continue };
        // the engine's entry for that node (`--privileged` lists the host's) would be bound
        // over ours by the runtime after the mounts
        if let Some(devs) = linux.devices_mut().as_mut() {
            devs.retain(|d| d.path() != std::path::Path::new(dest));
        }
        let mut res = linux.resources().clone().unwrap_or_else(LinuxResources::default);
        let mut rules = res.devices().clone().unwrap_or_default();
        let rule = LinuxDeviceCgroupBuilder::default().allow(true).typ(LinuxDeviceType::C).major(major).minor(minor).access("rwm").build().expect("valid");
        if !rules.contains(&rule) {
            rules.push(rule);
        }
        res.set_devices(Some(rules));
        linux.set_resources(Some(res));
    }
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
            dev("/dev/null", LinuxDeviceType::C, 1, 3),
            dev("/dev/ptmx", LinuxDeviceType::C, 5, 2),
            dev("/dev/fuse", LinuxDeviceType::C, 10, 229),
        ];
        spec.linux_mut().as_mut().unwrap().set_devices(Some(devs));
        let mut f = facts();
        f.lib_modules = Some(PathBuf::from("/lib/modules/6.18.0"));
        let out = rewrite(spec, &f).unwrap();
        let paths: Vec<_> = out.linux().as_ref().unwrap().devices().as_ref().unwrap().iter().map(|d| d.path().clone()).collect();
        assert_eq!(paths, vec![PathBuf::from("/dev/null"), PathBuf::from("/dev/fuse")], "/dev/ptmx is libcontainer's symlink, never a bound node");
        let masked = out.linux().as_ref().unwrap().masked_paths().clone().unwrap();
        assert!(masked.contains(&"/proc/kcore".to_string()), "masks restored: {masked:?}");
        let dests: Vec<_> = out.mounts().as_ref().unwrap().iter().map(|m| m.destination().to_string_lossy().into_owned()).collect();
        assert!(dests.contains(&"/dev/kmsg".to_string()) && dests.contains(&"/lib/modules/6.18.0".to_string()), "{dests:?}");
        assert_eq!(rewrite(out.clone(), &f).unwrap(), out);
    }

    fn allows(spec: &Spec, major: i64, minor: i64) -> bool {
        let rules = spec.linux().as_ref().unwrap().resources().as_ref().and_then(|r| r.devices().clone()).unwrap_or_default();
        // the last rule that matches decides (cgroup v1 applies them in order)
        rules.iter().rev().find(|r| r.typ().is_none_or(|t| t == LinuxDeviceType::A || t == LinuxDeviceType::C) && r.major().is_none_or(|m| m == major) && r.minor().is_none_or(|m| m == minor)).is_some_and(|r| r.allow())
    }

    fn mount_source(spec: &Spec, dest: &str) -> Option<PathBuf> {
        spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == &PathBuf::from(dest)).and_then(|m| m.source().clone())
    }

    #[test]
    fn fuse_and_tun_on_request() {
        let mut spec = docker_like();
        let deny_all = LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().unwrap();
        let mut res = LinuxResources::default();
        res.set_devices(Some(vec![deny_all]));
        spec.linux_mut().as_mut().unwrap().set_resources(Some(res));
        let mut f = facts();
        // nothing asked: nothing added
        let out = rewrite(spec.clone(), &f).unwrap();
        assert!(mount_source(&out, "/dev/fuse").is_none() && mount_source(&out, "/dev/net/tun").is_none());
        assert!(!allows(&out, 10, 229) && !allows(&out, 10, 200));

        f.dev_dir = Some(PathBuf::from("/run/nestrun-mnt/c1/dev"));
        f.tun_device = true;
        let out = rewrite(spec.clone(), &f).unwrap();
        assert_eq!(mount_source(&out, "/dev/net/tun"), Some(PathBuf::from("/run/nestrun-mnt/c1/dev/tun")));
        assert!(mount_source(&out, "/dev/fuse").is_none());
        assert!(allows(&out, 10, 200) && !allows(&out, 10, 229), "only tun is allowed");
        let m = out.mounts().as_ref().unwrap().iter().find(|m| m.destination() == &PathBuf::from("/dev/net/tun")).unwrap();
        assert!(!m.options().as_ref().unwrap().iter().any(|o| o == "nodev"), "a device node on a nodev mount cannot be opened");

        f.fuse_device = true;
        let out = rewrite(spec.clone(), &f).unwrap();
        assert_eq!(mount_source(&out, "/dev/fuse"), Some(PathBuf::from("/run/nestrun-mnt/c1/dev/fuse")));
        assert!(allows(&out, 10, 200) && allows(&out, 10, 229));
        assert!(!allows(&out, 10, 232), "other devices stay denied (kvm)");
        assert_eq!(rewrite(out.clone(), &f).unwrap(), out, "idempotent");
    }

    #[test]
    fn extra_devices_replace_the_engines_entry_and_yield_to_a_spec_mount() {
        let mut spec = docker_like();
        let dev = LinuxDeviceBuilder::default().path("/dev/fuse").typ(LinuxDeviceType::C).major(10).minor(229).build().unwrap();
        spec.linux_mut().as_mut().unwrap().set_devices(Some(vec![dev]));
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        mounts.push(new_mount("/dev/net/tun", "bind", "/dev/net/tun", vec!["rbind".into()]));
        spec.set_mounts(Some(mounts));
        let mut f = facts();
        (f.fuse_device, f.tun_device, f.dev_dir) = (true, true, Some(PathBuf::from("/d")));
        let out = rewrite(spec, &f).unwrap();
        assert!(out.linux().as_ref().unwrap().devices().as_ref().unwrap().is_empty(), "the engine's /dev/fuse entry gives way to nestrun's node");
        assert_eq!(mount_source(&out, "/dev/fuse"), Some(PathBuf::from("/d/fuse")));
        assert_eq!(mount_source(&out, "/dev/net/tun"), Some(PathBuf::from("/dev/net/tun")), "the spec's own mount wins");
        assert!(!allows(&out, 10, 200), "no allow rule for a device nestrun does not provide");
    }
}
