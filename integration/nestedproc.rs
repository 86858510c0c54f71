//! Nested /proc and /sys (issue 14): a procfs or sysfs mounted inside a system container (an
//! inner dockerd's runc for its containers, `unshare -p --mount-proc`, `mount -t proc`) is
//! mounted by the syscall supervisor for the caller, with the container's emulated files over
//! it (src/fuse/supervisor_mount.rs, src/host/nestedmount.rs). What a user does there keeps
//! working as under runc: unmounting it (not busy), remounting it, mount options, and a caller
//! without CAP_SYS_ADMIN is refused as the kernel refuses it.
use crate::util::*;

/// The emulated files (FUSE type, source "nestrun") mounted at or below `dir` in a mountinfo.
fn overlays_below(mountinfo: &str, dir: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter(|l| l.contains(" - fuse nestrun "))
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&format!("{}/", dir.trim_end_matches('/'))))
        .map(String::from)
        .collect()
}

fn meminfo_total_kb(text: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix("MemTotal:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or_else(|| panic!("no MemTotal in {text:?}"))
}

/// A procfs and a sysfs mounted in the container get the emulated files; `umount` (not lazy)
/// works; a remount and mount options go through; `unshare --mount-proc` gives a pid namespace
/// whose /proc is emulated; a caller without CAP_SYS_ADMIN gets EPERM from the kernel.
#[test]
fn procfs_and_sysfs_mounted_inside_get_the_emulated_files() {
    need_engines!("procfs_and_sysfs_mounted_inside_get_the_emulated_files");
    let c = Ctr::start("np-mount", &["-m", "256m", "--cpus", "1", "--entrypoint", "sleep", DIND, "100000"]);
    let o = c.sh("mkdir -p /mnt/p /mnt/s && mount -t proc proc /mnt/p && mount -t sysfs sysfs /mnt/s && cat /proc/self/mountinfo && echo === && cat /mnt/p/meminfo && echo === && cat /mnt/s/devices/system/cpu/online").ok();
    let parts: Vec<&str> = o.stdout.split("===\n").collect();
    let (info, meminfo, online) = (parts[0], parts[1], parts[2]);
    let proc_files = overlays_below(info, "/mnt/p");
    for f in ["/mnt/p/meminfo", "/mnt/p/cpuinfo", "/mnt/p/stat", "/mnt/p/uptime", "/mnt/p/loadavg", "/mnt/p/swaps", "/mnt/p/diskstats"] {
        assert!(proc_files.iter().any(|p| p == f), "{f} not emulated in the new procfs: {proc_files:?}");
    }
    assert!(proc_files.iter().any(|p| p.starts_with("/mnt/p/sys/")), "the emulated sysctls too: {proc_files:?}");
    let sys_files = overlays_below(info, "/mnt/s");
    assert!(sys_files.iter().any(|p| p == "/mnt/s/devices/system/cpu/online"), "{sys_files:?}");
    assert_eq!(meminfo_total_kb(meminfo), 262144, "-m 256m in the new procfs");
    assert_eq!(online.trim(), "0", "--cpus 1 in the new sysfs");

    // umount as a user types it (busy without the supervisor's help), then nothing is left.
    let o = c.sh("umount /mnt/p && umount /mnt/s && (grep -c ' /mnt/[ps]' /proc/self/mountinfo || true)").ok();
    assert_eq!(o.stdout.trim(), "0", "mounts left after umount: {o:?}");
    // Options, remount, read-only.
    let o = c.sh("mount -t proc -o hidepid=2 proc /mnt/p && mount -o remount,ro /mnt/p && grep ' /mnt/p ' /proc/self/mountinfo && touch /mnt/p/x; umount /mnt/p").out().to_string();
    assert!(o.contains("hidepid=invisible") || o.contains("hidepid=2"), "mount options kept: {o}");
    assert!(o.contains(" /mnt/p ro,"), "remounted read-only: {o}");
    // A pid namespace of its own with its /proc.
    let o = c.sh("unshare -p -f -m --mount-proc sh -c 'echo pid=$$; ls /proc | grep -c \"^[0-9]\"; head -n1 /proc/meminfo'").ok();
    assert!(o.stdout.starts_with("pid=1\n"), "{o:?}");
    assert_eq!(meminfo_total_kb(&o.stdout), 262144, "{o:?}");
    let procs: u32 = o.stdout.lines().nth(1).unwrap().parse().unwrap();
    assert!(procs <= 3, "the new procfs shows the new pid namespace only: {o:?}");
    // Without CAP_SYS_ADMIN: refused by the kernel, as without the supervisor.
    let o = c.sh("su nobody -s /bin/sh -c 'busybox mount -t proc proc /mnt/p'").fails();
    assert!(o.stderr.contains("ermission denied"), "{o:?}");
    assert!(overlays_below(&c.sh("cat /proc/self/mountinfo").ok().stdout, "/mnt").is_empty());
}

/// An inner dockerd's containers get the emulated /proc and /sys files (the inner runc's mounts
/// are trapped, at any depth): an inner `docker run -m 64m --cpus 0.5` sees 64 MiB, one CPU and
/// its own uptime; `free` and `uptime` agree with its /proc; the outer container still sees its
/// own limits.
#[test]
fn inner_containers_see_their_own_machine() {
    need_engines!("inner_containers_see_their_own_machine");
    let c = Ctr::start("np-inner", &["-m", "1g", "--cpus", "2", DIND]);
    wait_dind(&c, 120);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let script = "grep -c ' - fuse nestrun ' /proc/self/mountinfo; head -n1 /proc/meminfo; grep -c ^processor /proc/cpuinfo; grep -c '^cpu[0-9]' /proc/stat; cat /sys/devices/system/cpu/online; cut -d' ' -f1 /proc/uptime; free | grep Mem:";
    let o = c.exec(&["docker", "run", "--rm", "-m", "64m", "--cpus", "0.5", "busybox", "sh", "-c", script]).ok();
    let l: Vec<&str> = o.stdout.lines().collect();
    assert!(l[0].parse::<u32>().unwrap() >= 8, "emulated files in the inner container: {o:?}");
    assert_eq!(meminfo_total_kb(l[1]), 65536, "inner -m 64m: {o:?}");
    assert_eq!((l[2], l[3], l[4]), ("1", "1", "0"), "inner --cpus 0.5: one CPU in cpuinfo, stat, online: {o:?}");
    let inner_up: f64 = l[5].parse().unwrap();
    let free: Vec<u64> = l[6].split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect();
    assert_eq!(free[0], 65536, "free's total is /proc's: {o:?}");
    assert!(free[1] <= free[0], "free's used column does not wrap: {o:?}");
    let outer = c.sh("head -n1 /proc/meminfo; cat /sys/devices/system/cpu/online; cut -d' ' -f1 /proc/uptime").ok();
    let ol: Vec<&str> = outer.stdout.lines().collect();
    assert_eq!(meminfo_total_kb(ol[0]), 1 << 20, "the outer container: {outer:?}");
    assert_eq!(ol[1], "0-1", "{outer:?}");
    let outer_up: f64 = ol[2].parse().unwrap();
    assert!(inner_up + 2.0 < outer_up, "the inner container's own uptime ({inner_up}) vs the outer's ({outer_up})");
}

/// With the supervisor off (`io.nestrun.supervisor=off`), a procfs mounted inside is the
/// kernel's, as before the supervisor: nothing over it.
#[test]
fn supervisor_off_leaves_inner_mounts_alone() {
    need_engines!("supervisor_off_leaves_inner_mounts_alone");
    let script = "mkdir -p /p && mount -t proc proc /p && grep -c ' - fuse nestrun ' /proc/self/mountinfo; grep ' /p/' /proc/self/mountinfo | grep -c nestrun; umount /p && echo unmounted";
    let on = ctr_run_with(&nestrun_bin(), &unique("np-on"), &[], script).ok();
    let off = ctr_run_with(&nestrun_bin(), &unique("np-off"), &["--annotation", "io.nestrun.supervisor=off"], script).out().to_string();
    let on_l: Vec<&str> = on.stdout.lines().collect();
    assert!(on_l[1].parse::<u32>().unwrap() >= 8 && on_l[2] == "unmounted", "on: {on:?}");
    let off_l: Vec<&str> = off.lines().collect();
    assert_eq!(off_l.get(1), Some(&"0"), "off: no emulated files over the new procfs: {off}");
    assert_eq!(off_l.get(2), Some(&"unmounted"), "off: {off}");
}

/// util-linux >= 2.39's `mount -t proc` (Debian trixie's 2.41) tries the new mount API first:
/// `fsopen("proc")` answers ENOSYS, it falls back to mount(2), and the new procfs gets the
/// emulated files; `fsopen` of other file systems goes ahead (a tmpfs mounts).
#[test]
fn libmount_with_the_new_mount_api_gets_the_emulated_files() {
    need_engines!("libmount_with_the_new_mount_api_gets_the_emulated_files");
    let script = "mkdir -p /mnt/p && mount -t proc proc /mnt/p && grep ' /mnt/p/' /proc/self/mountinfo | grep -c ' - fuse nestrun '; head -n1 /mnt/p/meminfo; umount /mnt/p && mount -t tmpfs t /mnt/p && echo tmpfs";
    let o = docker(&["run", "--rm", "--runtime", "nested", "-m", "256m", "--entrypoint", "sh", crate::inner::DIND_TRIXIE, "-c", script]).ok();
    let l: Vec<&str> = o.stdout.lines().collect();
    assert!(l[0].parse::<u32>().unwrap() >= 8, "{o:?}");
    assert_eq!(meminfo_total_kb(l[1]), 262144, "{o:?}");
    assert_eq!(l[2], "tmpfs", "{o:?}");
}
