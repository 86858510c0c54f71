//! Attempts aimed at the supervisor's `mount` and `umount2` arms (src/fuse/supervisor_mount.rs,
//! src/host/nestedmount.rs), which mount a procfs or sysfs on behalf of a process in the
//! container: a mount target raced with a symlink to a host path, a procfs mounted over a host
//! volume, unterminated and unreadable arguments, a flood of mounts, a caller killed while its
//! mount waits, and the supervisor killed. The verdicts are the host's: its mount table, its
//! directories, the server's memory and children.
use std::path::Path;
use std::time::{Duration, Instant};

use super::supervisor::{exec, field, flood_meanwhile, kill_callers_while_stopped, kill_server, pids_named, rss_kb, server_of, start, wait_until, Flood};
use super::skip;

const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// The host's procfs mounts (its own mount namespace).
fn host_procfs_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(" - proc ")).map(String::from).collect()
}

fn is_procfs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == PROC_SUPER_MAGIC)
}

/// Processes whose parent is `pid` (the supervisor's helpers, if any were left).
fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .is_ok_and(|s| s.lines().any(|l| l.strip_prefix("PPid:").is_some_and(|v| v.trim() == pid.to_string())))
        })
        .collect()
}

/// A child swaps the target directory with a symlink to a host directory (which exists in
/// the container too) while procfs is mounted on it in a loop: every mount lands in the
/// container's own mount namespace; the host's mount table and directory are untouched.
#[test]
fn mount_target_raced_with_a_symlink_stays_in_the_container() {
    if skip() {
        return;
    }
    let canary = std::env::temp_dir().join(format!("nestrun-escape-canary-{}", std::process::id()));
    std::fs::create_dir_all(&canary).unwrap();
    let before = host_procfs_mounts();
    let c = start("svm-race", &[], &["sleep", "100000"]);
    let target = canary.display().to_string();
    exec(&c, &["mkdir", "-p", &target, "/tmp/r"]);
    let out = exec(&c, &["/t/sv", "race", "/tmp/r/t", &target, "3"]);
    assert!(field(&out, "ok") > 0, "no mount went through: {out}");
    assert_eq!(host_procfs_mounts(), before, "the host's procfs mounts changed");
    assert!(!is_procfs(&canary) && std::fs::read_dir(&canary).unwrap().next().is_none(), "{} changed on the host", canary.display());
    let _ = std::fs::remove_dir(&canary);
}

/// `mount -t proc` over a directory bound from the host: the procfs is the container's only.
#[test]
fn procfs_over_a_host_volume_stays_in_the_container() {
    if skip() {
        return;
    }
    let vol = std::env::temp_dir().join(format!("nestrun-escape-vol-{}", std::process::id()));
    std::fs::create_dir_all(&vol).unwrap();
    let bind = format!("{}:/vol", vol.display());
    let c = start("svm-vol", &["-v", &bind], &["sleep", "100000"]);
    let before = host_procfs_mounts();
    let inside = exec(&c, &["sh", "-c", "mount -t proc proc /vol && head -n1 /vol/meminfo && grep -c ' /vol/.* - fuse nestrun ' /proc/self/mountinfo"]);
    assert!(inside.starts_with("MemTotal:") && inside.contains("262144 kB"), "the container's emulated meminfo over its own procfs: {inside}");
    assert!(!is_procfs(&vol), "{} is a procfs on the host", vol.display());
    assert!(std::fs::read_dir(&vol).unwrap().next().is_none(), "{} shows the container's procfs on the host", vol.display());
    assert_eq!(host_procfs_mounts(), before);
    drop(c);
    let _ = std::fs::remove_dir(&vol);
}

/// A target of 8192 bytes with no NUL, one running into an unreadable page, an unreadable
/// fstype, a NULL target: the kernel's own errors (the supervisor reads the caller's memory as
/// the kernel does, then lets the kernel answer), and it goes on answering.
#[test]
fn mount_with_bad_arguments_gets_the_kernels_errors() {
    if skip() {
        return;
    }
    let c = start("svm-bad", &[], &["sleep", "100000"]);
    let server = server_of(&c);
    assert_eq!(exec(&c, &["/t/sv", "mountbad"]).trim(), "mountbad ENAMETOOLONG EFAULT EFAULT EFAULT");
    assert_eq!(field(&exec(&c, &["/t/sv", "info"]), "totalram"), 256 << 20);
    assert_eq!(server_of(&c), server);
}

/// 8 processes mounting and unmounting procfs for 5 s: another process's sysinfo calls are
/// still answered, the server's memory stays put, no helper process and no mount is left.
#[test]
fn mount_flood_stays_responsive_and_bounded() {
    if skip() {
        return;
    }
    let c = start("svm-flood", &[], &["sleep", "100000"]);
    let server = server_of(&c);
    exec(&c, &["/t/sv", "mountloop", "10", "/tmp", "proc"]);
    let before = rss_kb(server);
    let script = "for i in $(seq 8); do mkdir -p /tmp/f$i; /t/sv mountflood 5 /tmp/f$i & done; wait";
    let Flood { out, bench, took, during } = flood_meanwhile(&c, server, script, 8, "100");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("mountflood ")).collect();
    assert_eq!(lines.len(), 8, "{out}");
    let pairs: u64 = lines.iter().map(|l| field(l, "pairs")).sum();
    println!("mount flood: {pairs} procfs mount/umount pairs in 5 s by 8 processes; meanwhile {bench:?} in {took:?}; fuse-serve VmRSS {before} -> {during} kB");
    assert!(lines.iter().all(|l| field(l, "errors") == 0), "{out}");
    assert!(took < Duration::from_secs(30), "100 sysinfo calls during the flood took {took:?}");
    assert!(during < before + 8192, "fuse-serve grew from {before} to {during} kB");
    assert!(wait_until(5, || children_of(server).is_empty()), "helpers left: {:?}", children_of(server));
    let left = exec(&c, &["sh", "-c", "grep -c ' /tmp/f' /proc/self/mountinfo || true"]);
    assert_eq!(left.trim(), "0", "mounts left");
}

/// A caller killed while its mount waits for the (stopped) supervisor: the supervisor, resumed,
/// mounts nothing for it and goes on serving others.
#[test]
fn mount_caller_killed_mid_request() {
    if skip() {
        return;
    }
    let c = start("svm-kill", &[], &["sleep", "100000"]);
    let server = server_of(&c);
    exec(&c, &["mkdir", "-p", "/tmp/k"]);
    let (waiting, victims) = kill_callers_while_stopped(&c, server, &["/t/sv", "mountloop", "1", "/tmp/k", "proc"]);
    assert!(waiting, "the caller was not seen waiting in its trapped mount");
    assert!(!victims.is_empty() && wait_until(10, || pids_named(&c, "sv").is_empty()), "killed callers linger");
    let info = exec(&c, &["sh", "-c", "grep -c ' /tmp/k' /proc/self/mountinfo || true"]);
    assert_eq!(info.trim(), "0", "a mount was made for a caller that was gone");
    let again = exec(&c, &["/t/sv", "mountloop", "5", "/tmp/k", "proc"]);
    assert_eq!(field(&again, "errors"), 0, "{again}");
    assert_eq!(server_of(&c), server);
}

/// `fuse-serve` killed: every mount in the container then fails at once with ENOSYS (the
/// kernel's answer when the listener is gone), none hangs.
#[test]
fn supervisor_killed_mounts_fail_fast() {
    if skip() {
        return;
    }
    let c = start("svm-dead", &[], &["sleep", "100000"]);
    let server = server_of(&c);
    kill_server(server);
    let t = Instant::now();
    let proc_ = exec(&c, &["/t/sv", "mountloop", "3", "/tmp", "proc"]);
    let tmpfs = exec(&c, &["/t/sv", "mountloop", "3", "/tmp", "tmpfs"]);
    assert!(t.elapsed() < Duration::from_secs(20), "mounts hang without the supervisor");
    assert!(proc_.contains("errors=3 first=ENOSYS") && tmpfs.contains("errors=3 first=ENOSYS"), "{proc_}{tmpfs}");
}
