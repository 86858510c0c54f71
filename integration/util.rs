//! Shared helpers: running commands with a timeout, the docker client, container guards,
//! direct-CLI bundles and host-side leftover checks.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The private test dockerd of scripts/dockerd.sh, unless DOCKER_HOST says otherwise.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///run/nestrun-test/docker.sock";
pub const BUSYBOX: &str = "nestrun-test/busybox:latest";
pub const DIND: &str = "nestrun-test/dind:latest";
/// First host uid of nestrun's subordinate id pool (/etc/subuid entry `nestrun`).
pub const POOL_START: u32 = 1_048_576;

/// True when the engines and images of scripts/test are there. Otherwise prints the skip line.
pub fn engines(test: &str) -> bool {
    if std::env::var_os("NESTRUN_TEST_IMAGES").is_some_and(|v| !v.is_empty() && v != "0") {
        return true;
    }
    crate::skip::skip("engine", test, "run scripts/test (needs the private dockerd/containerd and test images; NESTRUN_TEST_IMAGES is unset)");
    false
}

/// Early-return from a test when the engines are not set up.
#[macro_export]
macro_rules! need_engines {
    ($name:expr) => {
        if !$crate::util::engines($name) {
            return;
        }
    };
}

/// A unique name for a container of this test process.
pub fn unique(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("nt-{}-{}-{}", test.replace('_', "-"), std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// What a command did.
#[derive(Debug)]
pub struct Out {
    pub cmd: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Out {
    pub fn ok(self) -> Out {
        assert!(self.code == 0, "`{}` failed with exit code {}\nstdout: {}\nstderr: {}", self.cmd, self.code, self.stdout, self.stderr);
        self
    }
    pub fn fails(self) -> Out {
        assert!(self.code != 0, "`{}` should have failed but exited 0\nstdout: {}\nstderr: {}", self.cmd, self.stdout, self.stderr);
        self
    }
    pub fn out(&self) -> &str {
        self.stdout.trim()
    }
}

/// Run a command with stdout/stderr going to files (so a daemonized child holding them does
/// not block us), killed after `timeout`.
pub fn run_cmd(mut cmd: Command, timeout: Duration) -> Out {
    let desc = format!("{} {}", cmd.get_program().to_string_lossy(), cmd.get_args().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
    let dir = tempdir("out");
    let (o, e) = (dir.path.join("stdout"), dir.path.join("stderr"));
    cmd.stdin(Stdio::null()).stdout(std::fs::File::create(&o).unwrap()).stderr(std::fs::File::create(&e).unwrap());
    let start = std::time::Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|err| panic!("cannot run `{desc}`: {err}"));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{desc}` did not finish within {timeout:?}\nstdout: {}\nstderr: {}", read(&o), read(&e));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Out { cmd: desc, code, stdout: read(&o), stderr: read(&e), elapsed: start.elapsed() }
}

fn read(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_DOCKER_HOST.to_string())
}

/// `/usr/bin/docker` (the 20.10 client that matches the daemon) against the test dockerd.
pub fn docker_cmd(args: &[&str]) -> Command {
    let mut c = Command::new("/usr/bin/docker");
    c.env("DOCKER_HOST", docker_host());
    crate::docker_runtime::add_args(&mut c, args);
    c
}

pub fn docker(args: &[&str]) -> Out {
    run_cmd(docker_cmd(args), Duration::from_secs(180))
}

/// The nestrun binary under test.
pub fn nestrun_bin() -> String {
    std::env::var("NESTRUN_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_nestrun").into())
}

/// `ctr run --rm` of the busybox image on the private containerd with `binary` as the runc
/// binary of the runc v2 shim; the container record is removed afterwards.
pub fn ctr_run_with(binary: &str, id: &str, extra: &[&str], script: &str) -> Out {
    let addr = std::env::var("CONTAINERD_ADDRESS").unwrap_or_else(|_| "/run/nestrun-test/containerd.sock".into());
    let mut c = Command::new("ctr");
    c.args(["--address", &addr, "-n", "nestrun", "run", "--rm", "--runc-binary", binary]);
    c.args(extra);
    c.args(["docker.io/nestrun-test/busybox:latest", id, "sh", "-c", script]);
    let o = run_cmd(c, Duration::from_secs(120));
    let mut c = Command::new("ctr");
    c.args(["--address", &addr, "-n", "nestrun", "container", "delete", id]);
    let _ = run_cmd(c, Duration::from_secs(30));
    o
}

/// A container removed with `docker rm -f` when dropped.
pub struct Ctr {
    pub name: String,
}

impl Ctr {
    /// `docker run -d --runtime nested --name <unique> <extra...>`; panics with stderr on failure.
    pub fn start(test: &str, extra: &[&str]) -> Ctr {
        let c = Ctr { name: unique(test) };
        let mut args = vec!["run", "-d", "--runtime", "nested", "--name", &c.name];
        args.extend_from_slice(extra);
        docker(&args).ok();
        c
    }
    /// A busybox container sleeping forever.
    pub fn sleeper(test: &str) -> Ctr {
        Ctr::start(test, &[BUSYBOX, "sleep", "100000"])
    }
    pub fn exec(&self, cmd: &[&str]) -> Out {
        let mut args = vec!["exec", &self.name];
        args.extend_from_slice(cmd);
        docker(&args)
    }
    pub fn sh(&self, script: &str) -> Out {
        self.exec(&["sh", "-c", script])
    }
    pub fn inspect(&self, format: &str) -> String {
        docker(&["inspect", "-f", format, &self.name]).ok().out().to_string()
    }
    pub fn id(&self) -> String {
        self.inspect("{{.Id}}")
    }
    pub fn pid(&self) -> i32 {
        let p: i32 = self.inspect("{{.State.Pid}}").parse().expect("numeric pid");
        assert!(p > 0, "container {} has no pid (not running?)", self.name);
        p
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = run_cmd(docker_cmd(&["rm", "-f", "-v", &self.name]), Duration::from_secs(120));
    }
}

/// A temporary directory removed (after unmounting nothing: tests must clean up) on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `integration/<c_file>` built static as `dir/<bin>` (a probe run inside containers).
pub fn build_static(c_file: &str, dir: &Path, bin: &str) {
    build_static_with(c_file, dir, bin, &[]);
}

/// The same with more gcc flags (`-m32`: gcc-multilib, installed by scripts/install-deps.sh).
pub fn build_static_with(c_file: &str, dir: &Path, bin: &str, flags: &[&str]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration").join(c_file);
    let o = std::process::Command::new("gcc").args(flags).args(["-static", "-O2", "-o"]).arg(dir.join(bin)).arg(&src).output();
    match o {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("gcc -static {} failed (libc6-dev installed?): {}", src.display(), String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("cannot run gcc ({e}): apt-get install -y gcc libc6-dev"),
    }
}

pub fn tempdir(tag: &str) -> TempDir {
    static N: AtomicU32 = AtomicU32::new(0);
    // Not /tmp: may be tmpfs or noexec; a real disk under target/ works everywhere.
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = base.join(format!("{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    TempDir { path }
}

// ---- host-side views ----------------------------------------------------------------------

/// The first line of /proc/<pid>/uid_map as (inside, outside, count).
pub fn uid_map(pid: i32) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_else(|e| panic!("read uid_map of {pid}: {e}"));
    let f: Vec<u64> = text.split_whitespace().take(3).map(|x| x.parse().unwrap()).collect();
    (f[0], f[1], f[2])
}

/// Real uid of a host process, if it exists.
pub fn proc_uid(pid: i32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Host pids whose real uid is in [start, start+len).
pub fn pids_in_uid_range(start: u64, len: u64) -> Vec<i32> {
    let mut v = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
            if let Some(u) = proc_uid(pid) {
                if (u as u64) >= start && (u as u64) < start + len {
                    v.push(pid);
                }
            }
        }
    }
    v
}

/// Host pids whose cgroup (any hierarchy) names `id`.
pub fn pids_in_cgroup_of(id: &str) -> Vec<i32> {
    let mut v = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|s| s.contains(id)) {
            v.push(pid);
        }
    }
    v
}

/// The runtime state dockerd 20.10 keeps for container `id` under its exec root in `rundir`
/// (the `--root` it passes to nestrun, and nestrun's sidecar below it) that still exists.
pub fn runtime_state_dirs(rundir: &str, id: &str) -> Vec<PathBuf> {
    let mut v = vec![];
    for runtime in ["runc", "nested"] {
        let root = format!("{rundir}/docker-exec/runtime-{runtime}/moby");
        for p in [format!("{root}/{id}"), format!("{root}/.nestrun/{id}")] {
            if Path::new(&p).exists() {
                v.push(PathBuf::from(p));
            }
        }
    }
    v
}

/// Mount points (from our mountinfo) that contain `needle`.
pub fn mounts_containing(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.contains(needle))
        .map(String::from)
        .collect()
}

/// Entries of `dir` whose name starts with `prefix`.
pub fn entries_with_prefix(dir: &str, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(prefix)).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Lease files in /run/nestrun-subid whose owner (the file's content) contains `needle`.
pub fn leases_naming(needle: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/run/nestrun-subid")
        .map(|rd| rd.flatten().filter(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default()).contains(needle)).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Existing cgroup dirs /sys/fs/cgroup/<controller>/<rel> for every v1 controller (and v2 unified).
pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let mut v = vec![];
    for e in std::fs::read_dir("/sys/fs/cgroup").map(|r| r.flatten().collect::<Vec<_>>()).unwrap_or_default() {
        let p = e.path().join(rel.trim_start_matches('/'));
        if p.is_dir() && !e.path().is_symlink() {
            v.push(p);
        }
    }
    v
}

/// Poll `f` until it returns true or `secs` pass.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- nestrun's traces of a docker container, and the leftover check ------------------------

/// Host pids of a container, from `docker top -o pid`.
pub fn top_pids(c: &Ctr) -> Vec<i32> {
    let o = docker(&["top", &c.name, "-o", "pid"]).ok();
    o.stdout.lines().skip(1).filter_map(|l| l.trim().parse().ok()).collect()
}

/// The container's host uid range from its init's uid_map (must start at 0, in the pool).
pub fn range_of(c: &Ctr) -> (u64, u64) {
    let (inside, outside, count) = uid_map(c.pid());
    assert_eq!(inside, 0, "uid_map of {} should start at 0", c.name);
    assert!(outside >= POOL_START as u64, "container root of {} maps to host uid {outside}, below the pool", c.name);
    (outside, count)
}

/// Host pids of `nestrun fuse-serve` servers whose arguments name `id` (mount point and
/// cgroup path both contain the container id).
pub fn fuse_server_pids(id: &str) -> Vec<i32> {
    let mut v = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.iter().any(|a| a == "fuse-serve") && args.iter().any(|a| a.contains(id)) {
            v.push(pid);
        }
    }
    v
}

/// Everything nestrun made for a container, seen from the host.
#[derive(Debug)]
pub struct Traces {
    pub mounts: Vec<String>,
    pub mnt_dirs: Vec<PathBuf>,
    /// The record kept beside the mount dir (`<id>-<hash>.record`).
    pub records: Vec<PathBuf>,
    pub leases: Vec<PathBuf>,
    pub data: Vec<PathBuf>,
    pub cgroups: Vec<PathBuf>,
    pub fuse_servers: Vec<i32>,
}

impl Traces {
    /// Everything but the data dir, which persists across stop/start by design.
    pub fn is_empty_but_data(&self) -> bool {
        self.mounts.is_empty() && self.mnt_dirs.is_empty() && self.records.is_empty() && self.leases.is_empty() && self.cgroups.is_empty() && self.fuse_servers.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty() && self.mnt_dirs.is_empty() && self.records.is_empty() && self.leases.is_empty() && self.data.is_empty() && self.cgroups.is_empty() && self.fuse_servers.is_empty()
    }
}

/// nestrun's traces of the docker container with full id `id` (cgroup parent `docker`).
/// The data dir nestrun keeps beside a docker container's upper dir (it persists across
/// stop/start and goes with the container's layer on `docker rm`), while docker knows the id.
pub fn layer_data_dir(id: &str) -> Option<std::path::PathBuf> {
    let o = docker(&["inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", id]);
    let upper = std::path::PathBuf::from(o.out().trim());
    let d = upper.parent()?.join("nestrun-data");
    (o.code == 0 && d.is_dir()).then_some(d)
}

pub fn traces(id: &str) -> Traces {
    let mut data = entries_with_prefix("/var/lib/nestrun/data", &format!("{id}-"));
    data.extend(layer_data_dir(id));
    Traces {
        mounts: mounts_containing(&format!("/run/nestrun-mnt/{id}-")),
        mnt_dirs: entries_with_prefix("/run/nestrun-mnt", &format!("{id}-")).into_iter().filter(|p| p.extension().is_none_or(|e| e != "record")).collect(),
        records: entries_with_prefix("/run/nestrun-mnt", &format!("{id}-")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "record")).collect(),
        leases: leases_naming(&format!("/.nestrun/{id}")),
        data,
        cgroups: cgroup_dirs(&format!("docker/{id}")),
        fuse_servers: fuse_server_pids(id),
    }
}

/// Panics naming each kind of leftover of container `id`.
pub fn assert_no_traces(id: &str) {
    let after = traces(id);
    assert!(after.mounts.is_empty(), "{id}: mounts left: {:?}", after.mounts);
    assert!(after.mnt_dirs.is_empty(), "{id}: mount dirs left: {:?}", after.mnt_dirs);
    assert!(after.records.is_empty(), "{id}: records left: {:?}", after.records);
    assert!(after.leases.is_empty(), "{id}: uid leases left: {:?}", after.leases);
    assert!(after.data.is_empty(), "{id}: data dirs left: {:?}", after.data);
    assert!(after.cgroups.is_empty(), "{id}: cgroups left: {:?}", after.cgroups);
    assert!(after.fuse_servers.is_empty(), "{id}: fuse-serve processes left: {:?}", after.fuse_servers);
}

/// Host pids in the container's uid range that belong to it (their cgroup names the id: a new
/// container may lease the same range as soon as this one is gone).
pub fn own_pids(id: &str, start: u64) -> Vec<i32> {
    pids_in_uid_range(start, 65536).into_iter().filter(|p| std::fs::read_to_string(format!("/proc/{p}/cgroup")).is_ok_and(|s| s.contains(id))).collect()
}

/// `docker rm -f` of a running system container leaves nothing on the host.
pub fn assert_rm_cleans(c: &Ctr) {
    let id = c.id();
    let (start, _) = range_of(c);
    let before = traces(&id);
    let pids = own_pids(&id, start);
    assert!(
        !before.mounts.is_empty() && !before.leases.is_empty() && !before.cgroups.is_empty() && !before.fuse_servers.is_empty(),
        "the checks must see the running container: {before:?}"
    );
    assert!(!pids.is_empty(), "no processes found in the range {start}");
    let layer_data = layer_data_dir(&id);
    docker(&["rm", "-f", &c.name]).ok();
    assert_no_traces(&id);
    if let Some(d) = layer_data {
        assert!(!d.exists(), "{id}: data dir {} outlived docker rm -f", d.display());
    }
    let alive: Vec<_> = pids.iter().filter(|p| proc_uid(**p).is_some_and(|u| (u as u64) >= start && (u as u64) < start + 65536)).collect();
    assert!(alive.is_empty(), "container processes survived docker rm -f: {alive:?}");
    assert!(own_pids(&id, start).is_empty(), "processes of {id} still run");
}

/// A nested DinD container whose inner dockerd answers (`dind-wait secs`).
pub fn start_dind(test: &str, secs: u32) -> Ctr {
    let c = Ctr::start(test, &[DIND]);
    wait_dind(&c, secs);
    c
}

/// Waits until the inner dockerd of a container with the dind entrypoint answers and the
/// baked-in busybox is loaded (`dind-wait secs`); panics with the container's logs otherwise.
pub fn wait_dind(c: &Ctr, secs: u32) {
    let o = c.exec(&["dind-wait", &secs.to_string()]);
    if o.code != 0 {
        let logs = docker(&["logs", "--tail", "40", &c.name]);
        panic!("inner dockerd of {} not ready: {o:?}\ncontainer logs:\n{}{}", c.name, logs.stdout, logs.stderr);
    }
}

/// A nested DinD of one of the debootstrapped images (`nestrun-test/dind-trixie`, `-sid`) run
/// with `extra` docker run flags, once its inner dockerd answers. Fails (never skips) when the
/// image is missing: scripts/build-images.sh builds them with debootstrap from the Debian mirror.
pub fn start_debian_dind(test: &str, image: &str, extra: &[&str]) -> Ctr {
    let have = docker(&["image", "inspect", "-f", "ok", image]);
    assert_eq!(
        have.code, 0,
        "{image} is missing: scripts/build-images.sh builds it with debootstrap (from deb.debian.org or $NESTRUN_DEBIAN_MIRROR); see its warnings"
    );
    let mut args = extra.to_vec();
    args.push(image);
    let c = Ctr::start(test, &args);
    wait_dind(&c, 120);
    c
}

/// Percentile (0..=100) of a non-empty list of durations, nearest rank.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    assert!(!sorted.is_empty());
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}
