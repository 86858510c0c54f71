//! Root-only tests against a real FUSE mount (skipped, with a message, when
//! not root or /dev/fuse is missing). The server process is this test binary
//! re-executed into the ignored `child_server` test.

use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::*;

pub(super) fn can_mount() -> bool {
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        crate::skip_log::skip("root", "fuse mount test", "needs root and /dev/fuse");
        return false;
    }
    true
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nestrun-fusetest-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

/// A cgroup created in every cgroup hierarchy mounted here, removed on drop.
pub(super) struct TestCgroup {
    pub name: String,
    dirs: Vec<PathBuf>,
    pub memory_limited: bool,
    /// The files of `with` written (in some hierarchy).
    pub written: Vec<String>,
}

impl TestCgroup {
    fn new() -> Self {
        Self::with(&format!("nestrun-fusetest-{}", std::process::id()), &[("memory.limit_in_bytes", "268435456"), ("memory.max", "268435456")])
    }

    /// Cgroup `name` (a path below the roots) with the `files` that exist written; the memory
    /// limit files count for `memory_limited`.
    pub(super) fn with(name: &str, files: &[(&str, &str)]) -> Self {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut dirs = Vec::new();
        let mut memory_limited = false;
        let mut written = Vec::new();
        for line in info.lines() {
            let Some((l, r)) = line.split_once(" - ") else { continue };
            if !(r.starts_with("cgroup ") || r.starts_with("cgroup2 ")) {
                continue;
            }
            let dir = Path::new(l.split(' ').nth(4).unwrap()).join(name);
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            for (file, value) in files {
                if dir.join(file).exists() && std::fs::write(dir.join(file), value).is_ok() {
                    memory_limited |= file.starts_with("memory.");
                    written.push(file.to_string());
                }
            }
            dirs.push(dir);
        }
        TestCgroup { name: name.to_string(), dirs, memory_limited, written }
    }

    /// Moves process `pid` into this cgroup, in every hierarchy.
    pub(super) fn add(&self, pid: u32) {
        for d in &self.dirs {
            let _ = std::fs::write(d.join("cgroup.procs"), pid.to_string());
        }
    }

    /// Runs `sh -c script` in this cgroup (it moves itself in first).
    pub(super) fn run(&self, script: &str) -> std::process::Output {
        let script = format!("for d in \"$@\"; do echo $$ > \"$d/cgroup.procs\"; done; {script}");
        std::process::Command::new("/bin/sh").arg("-c").arg(script).arg("sh").args(&self.dirs).output().unwrap()
    }

    fn remove(&mut self) {
        for d in self.dirs.drain(..) {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Unmounts (and stops the server, if any) even when a test panics.
pub(super) struct MountGuard(PathBuf, Option<nix::unistd::Pid>);

impl Drop for MountGuard {
    fn drop(&mut self) {
        match self.1 {
            Some(pid) => drop(stop(pid, &self.0)),
            None => drop(nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH)),
        }
    }
}

/// The server side: runs only when re-executed by `spawn_with` below, which
/// passes the server's arguments after `--` (libtest takes them as filters).
#[test]
#[ignore = "helper process for mount_spawn_read_write_stop"]
fn child_server() {
    let args: Vec<String> = std::env::args().skip_while(|a| a != "fuse-serve").skip(1).collect();
    let get = |k: &str| args.iter().find_map(|a| a.strip_prefix(&format!("--{k}=")).map(String::from));
    let Some(mountpoint) = get("mountpoint") else { return };
    let secs: f64 = get("start-time").unwrap().parse().unwrap();
    let cfg = ServeConfig {
        mountpoint: mountpoint.into(),
        cgroup_path: get("cgroup-path").unwrap(),
        owner_uid: get("owner-uid").unwrap().parse().unwrap(),
        owner_gid: get("owner-gid").unwrap().parse().unwrap(),
        start_time: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs),
        init_pid: get("init-pid").map(|p| p.parse().unwrap()),
        cgroup_mounts: get("cgroup-mounts"),
        shift: None,
        supervisor_fd: None,
    };
    let fd: i32 = get("ready-fd").unwrap().parse().unwrap();
    // SAFETY: the fd was inherited from spawn_with for exactly this purpose.
    let ready = unsafe { OwnedFd::from_raw_fd(fd) };
    serve(cfg, Some(ready)).unwrap();
}

const URING_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";
static URING_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sets the host's `fuse.enable_uring` for one test (tests that set it run one at a time)
/// and puts the old value back on drop.
struct UringParam(String, #[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

impl UringParam {
    /// `None`: the kernel has no FUSE over io_uring (then every server uses /dev/fuse).
    fn set(on: bool) -> Option<UringParam> {
        let lock = URING_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let old = std::fs::read_to_string(URING_PARAM).ok()?;
        std::fs::write(URING_PARAM, if on { "Y" } else { "N" }).unwrap();
        Some(UringParam(old.trim().to_string(), lock))
    }
}

impl Drop for UringParam {
    fn drop(&mut self) {
        let _ = std::fs::write(URING_PARAM, &self.0);
    }
}

/// Runs `body(uring)` with the host's `fuse.enable_uring` set to `uring` (left alone, and the
/// /dev/fuse case still run, on a kernel without it).
fn over(uring: bool, body: fn(bool)) {
    match UringParam::set(uring) {
        Some(_param) => body(uring),
        None if !uring => body(false),
        None => crate::skip_log::skip("host", "fuse over io_uring test", "this kernel has no fuse.enable_uring"),
    }
}

#[test]
fn mount_spawn_read_write_stop() {
    over(false, spawn_read_write_stop);
}

/// The same over io_uring: the kernel queues each request on its caller's CPU, and the
/// server's worker for that CPU answers (see uring.rs).
#[test]
fn mount_spawn_read_write_stop_over_io_uring() {
    over(true, spawn_read_write_stop);
}

fn spawn_read_write_stop(uring: bool) {
    if !can_mount() {
        return;
    }
    let mut cg = TestCgroup::new();
    let dir = tempdir(if uring { "spawn-uring" } else { "spawn" });
    let mnt = dir.join("fuse");
    let cfg = ServeConfig {
        mountpoint: mnt.clone(),
        cgroup_path: format!("/{}", cg.name),
        owner_uid: 0,
        owner_gid: 0,
        start_time: SystemTime::now() - std::time::Duration::from_secs(100),
        init_pid: None,
        cgroup_mounts: None,
        shift: None,
        supervisor_fd: None,
    };
    let exe = std::env::current_exe().unwrap();
    let prefix: Vec<OsString> = ["--exact", "fuse::tests::child_server", "--ignored", "--nocapture", "--", "fuse-serve"]
        .iter()
        .map(OsString::from)
        .collect();
    let log = dir.join("server.log");
    let (pid, over_uring) = spawn_with(&cfg, Some(&log), &exe, &prefix).expect("spawn fuse server");
    assert_eq!(over_uring, uring, "served over io_uring");
    let _guard = MountGuard(mnt.clone(), Some(pid));
    assert!(mounted(&mnt));

    let meminfo = std::fs::read_to_string(mnt.join("proc/meminfo")).unwrap();
    if cg.memory_limited {
        assert!(meminfo.contains("MemTotal:         262144 kB\n"), "{meminfo}");
    } else {
        eprintln!("no memory controller to limit: only checking meminfo is served");
        assert!(meminfo.starts_with("MemTotal:"));
    }
    let md = std::fs::metadata(mnt.join("proc/meminfo")).unwrap();
    assert_eq!((md.size(), md.mode() & 0o7777, md.uid()), (4096, 0o444, 0));
    reader_in_a_limited_child(&cg, &mnt);
    let md = std::fs::metadata(mnt.join("proc/sys/vm/overcommit_memory")).unwrap();
    assert_eq!((md.size(), md.mode() & 0o7777, md.uid()), (4096, 0o644, 0));
    if Path::new("/bin/busybox").exists() {
        let out = std::process::Command::new("/bin/busybox").arg("cat").arg(mnt.join("proc/meminfo")).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().count(), meminfo.lines().count(), "busybox cat (sendfile) reads it all: {text}");
        assert_eq!(text.lines().next(), meminfo.lines().next());
    }
    for f in EMULATED_PROC_FILES.iter().filter(|f| **f != "proc/swaps") {
        let text = std::fs::read_to_string(mnt.join(f)).unwrap();
        assert!(!text.is_empty() && text.ends_with('\n'), "{f}: {text:?}");
    }
    let uptime = std::fs::read_to_string(mnt.join("proc/uptime")).unwrap();
    let up: f64 = uptime.split_whitespace().next().unwrap().parse().unwrap();
    assert!((99.0..200.0).contains(&up), "{uptime}");

    // sysctl: the owner (uid 0 here) writes, the host file stays unchanged.
    let rel = "proc/sys/vm/overcommit_memory";
    let host_before = std::fs::read_to_string(Path::new("/").join(rel)).unwrap();
    let new = if host_before.trim() == "1" { "2" } else { "1" };
    std::fs::write(mnt.join(rel), format!("{new}\n")).unwrap();
    assert_eq!(std::fs::read_to_string(mnt.join(rel)).unwrap(), format!("{new}\n"));
    assert_eq!(std::fs::read_to_string(Path::new("/").join(rel)).unwrap(), host_before);
    let e = std::fs::write(mnt.join(rel), "garbage\n").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    let e = std::fs::write(mnt.join("proc/meminfo"), "1\n").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    // a non-owner uid can read but not write
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("cat {0} >/dev/null && ! echo 0 > {0}", mnt.join(rel).display()))
        .uid(12345)
        .gid(12345)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "uid 12345 must read but not write the sysctl");
    assert_eq!(std::fs::read_to_string(mnt.join(rel)).unwrap(), format!("{new}\n"));

    // cgroup gone -> EIO (once the last good render has expired), and the server keeps running
    cg.remove();
    std::thread::sleep(server::RENDER_TTL);
    let e = std::fs::read_to_string(mnt.join("proc/meminfo")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    assert!(std::fs::read_to_string(mnt.join(rel)).is_ok());

    stop(pid, &mnt).unwrap();
    assert!(!mounted(&mnt), "still mounted after stop");
    // Gone, or at most a zombie not yet reaped (a loaded machine delays the exit).
    let alive = || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!alive(), "server still running");
    stop(pid, &mnt).expect("stop is idempotent");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Values follow the reader (the pid of the READ, over either transport): a process in a child
/// cgroup with limits of its own (as an inner runtime makes) sees them, the others the
/// container's.
fn reader_in_a_limited_child(cg: &TestCgroup, mnt: &Path) {
    let limits = [("memory.limit_in_bytes", "67108864"), ("memory.max", "67108864"), ("cpu.cfs_quota_us", "50000"), ("cpu.max", "50000 100000")];
    let inner = TestCgroup::with(&format!("{}/inner", cg.name), &limits);
    let files = ["proc/meminfo", "sys/devices/system/cpu/online"].map(|f| mnt.join(f).display().to_string()).join(" ");
    let out = inner.run(&format!("cat {files}"));
    assert!(out.status.success(), "{out:?}");
    let inside = String::from_utf8(out.stdout).unwrap();
    let outside = std::fs::read_to_string(mnt.join("proc/meminfo")).unwrap();
    if cg.memory_limited && inner.memory_limited {
        assert!(inside.starts_with("MemTotal:          65536 kB\n"), "{inside}");
        assert!(outside.starts_with("MemTotal:         262144 kB\n"), "{outside}");
    }
    if inner.written.iter().any(|f| f.starts_with("cpu.")) {
        assert_eq!(inside.lines().last(), Some("0"), "one cpu at quota 0.5: {inside}");
        let host = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
        assert_eq!(std::fs::read_to_string(mnt.join("sys/devices/system/cpu/online")).unwrap(), host, "the container has no quota");
    }
}

/// A cpuinfo text of `n` processors (the sample's first block, renumbered).
pub(super) fn fake_cpuinfo(n: usize) -> String {
    let block = include_str!("testdata/cpuinfo").split("\n\n").next().unwrap().to_string();
    (0..n).map(|i| block.replacen("processor\t: 0", &format!("processor\t: {i}"), 1) + "\n\n").collect()
}

/// A fake host /proc at `dir/hostproc`: cpuinfo with `cpus` processors, stat with `stat_cpus`.
pub(super) fn fake_host(dir: &Path, cpus: usize, stat_cpus: usize) -> PathBuf {
    let host = dir.join("hostproc");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("cpuinfo"), fake_cpuinfo(cpus)).unwrap();
    let stat: String = std::iter::once("cpu  1 2 3 4 5 6 7 8 9 10\n".to_string())
        .chain((0..stat_cpus).map(|i| format!("cpu{i} 1 2 3 4 5 6 7 8 9 10\n")))
        .collect();
    std::fs::write(host.join("stat"), stat).unwrap();
    host
}

/// The server over the fake host /proc `host` (cgroup `/`: no limits), mounted at `dir/fuse`
/// from a thread of this process, ready (over io_uring when `uring`) when this returns.
pub(super) fn serve_in_thread(host: PathBuf, dir: &Path, uring: bool) -> (PathBuf, MountGuard, std::thread::JoinHandle<Result<(), FuseError>>) {
    let sources = files::Sources {
        host_proc: host,
        cgroup: cgroup::Cgroup::with_mounts("/", cgroup::Mounts::default()),
        start_time: SystemTime::now(),
        init_pid: None,
        files: Default::default(),
    };
    let mnt = dir.join("fuse");
    let fs = server::ProcFs::new(sources, Vec::new(), 0, 0);
    let (rd, wr) = nix::unistd::pipe().unwrap();
    let m = mnt.clone();
    let t = std::thread::spawn(move || serve_fs(fs, &m, Some(wr), false));
    let guard = MountGuard(mnt.clone(), None);
    let mut b = [0u8; 1];
    assert_eq!(nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&rd), &mut b).unwrap(), 1);
    assert_eq!(b[0], if uring { READY_URING } else { READY_DEV });
    (mnt, guard, t)
}

/// A 64-cpu cpuinfo (> 4096 bytes, the reported st_size) served whole, from a
/// fake host /proc, with the server in a thread.
#[test]
fn large_file_served_whole() {
    over(false, large_file);
}

#[test]
fn large_file_served_whole_over_io_uring() {
    over(true, large_file);
}

fn large_file(uring: bool) {
    if !can_mount() {
        return;
    }
    let dir = tempdir(if uring { "large-uring" } else { "large" });
    let host = fake_host(&dir, 64, 64);
    let cpuinfo = fake_cpuinfo(64);
    assert!(cpuinfo.len() > 64 * 1024);
    let (mnt, guard, t) = serve_in_thread(host, &dir, uring);
    assert_eq!(std::fs::read_to_string(mnt.join("proc/cpuinfo")).unwrap(), cpuinfo);
    // One read(2) with a large buffer gets the whole file although it is bigger than one
    // READ request (the kernel sends several within the call).
    let mut buf = vec![0u8; 1 << 20];
    let n = std::io::Read::read(&mut std::fs::File::open(mnt.join("proc/cpuinfo")).unwrap(), &mut buf).unwrap();
    assert_eq!(n, cpuinfo.len());
    assert_eq!(std::fs::read_to_string(mnt.join("sys/devices/system/cpu/online")).unwrap(), "0-63\n");
    if Path::new("/bin/busybox").exists() {
        let out = std::process::Command::new("/bin/busybox").arg("cat").arg(mnt.join("proc/cpuinfo")).output().unwrap();
        assert_eq!(out.stdout.len(), cpuinfo.len());
    }
    let names: Vec<String> = std::fs::read_dir(mnt.join("proc")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.contains(&"meminfo".to_string()) && names.contains(&"stat".to_string()), "{names:?}");
    drop(guard);
    t.join().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn emulated_files_map_to_destinations() {
    let files = emulated_files();
    assert!(files.contains(&(PathBuf::from("proc/meminfo"), PathBuf::from("/proc/meminfo"))));
    assert!(files.contains(&(PathBuf::from("sys/devices/system/cpu/online"), PathBuf::from("/sys/devices/system/cpu/online"))));
    for (rel, dest) in &files {
        assert_eq!(Path::new("/").join(rel), *dest);
    }
    let kinds: Vec<&str> = files::FILES.iter().map(|f| f.0).collect();
    assert_eq!(kinds, EMULATED_PROC_FILES);
    let cfg = ServeConfig {
        mountpoint: "/run/x y".into(),
        cgroup_path: "/docker/abc".into(),
        owner_uid: 100000,
        owner_gid: 100000,
        start_time: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1500),
        init_pid: Some(42),
        cgroup_mounts: Some("1 0 0:1 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory".into()),
        shift: None,
        supervisor_fd: None,
    };
    let args: Vec<String> = cfg.to_args(Some(5)).into_iter().map(|a| a.into_string().unwrap()).collect();
    assert_eq!(
        args,
        [
            "--mountpoint=/run/x y",
            "--cgroup-path=/docker/abc",
            "--owner-uid=100000",
            "--owner-gid=100000",
            "--start-time=1.5",
            "--ready-fd=5",
            "--init-pid=42",
            "--cgroup-mounts=1 0 0:1 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory"
        ]
    );
}

/// Micro-benchmark of the renders alone (no FUSE): median µs per render of each file
/// for the root cgroup or `NESTRUN_BENCH_CGROUP` (a cgroup path such as
/// `/docker/<id>`). Run with
/// `cargo test --release --bin nestrun bench_render -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn bench_render() {
    let path = std::env::var("NESTRUN_BENCH_CGROUP").unwrap_or_else(|_| "/".into());
    let sources = files::Sources {
        host_proc: PathBuf::from("/proc"),
        cgroup: cgroup::Cgroup::new(&path, None).unwrap(),
        start_time: SystemTime::now(),
        init_pid: Some(std::process::id() as i32),
        files: Default::default(),
    };
    let scope = files::Scope { memory: &sources.cgroup, cpu: &sources.cgroup, start: None };
    let n = 5000;
    for &(name, kind) in files::FILES {
        let mut t: Vec<f64> = (0..n)
            .map(|_| {
                let s = std::time::Instant::now();
                let out = sources.render(kind, &scope).unwrap();
                std::hint::black_box(out);
                s.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        t.sort_by(f64::total_cmp);
        eprintln!("{name:32} median {:6.1} µs  p90 {:6.1} µs", t[n / 2], t[n * 9 / 10]);
    }
}

#[path = "cat_tests.rs"]
mod cat;
