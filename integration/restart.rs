//! dockerd restarted under running system containers (issue "Fault suite").
//!
//! Each test starts its OWN dockerd (the shared one at /run/nestrun-test/docker.sock is used by
//! other tests in parallel and must never be restarted): distinct data root, exec root, socket
//! and pidfile, no bridge, no iptables, on the shared private containerd (CONTAINERD_ADDRESS)
//! with its own containerd namespaces, runtime `nested` = NESTRUN_BIN. The daemon, its
//! containers and its directories are removed at the end, also when the test panics (Drop).
//! - with `--live-restore` the container keeps running while dockerd is down, and afterwards
//!   `docker exec` works and `docker rm -f` leaves nothing;
//! - without it dockerd stops the container on shutdown, nestrun's state of it is cleaned up
//!   (only the data dir beside the container's layer stays, by design), it starts again, and
//!   `docker rm -f` leaves nothing.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::util::*;

const CONTAINERD_SOCK: &str = "/run/nestrun-test/containerd.sock";

fn containerd_address() -> String {
    std::env::var("CONTAINERD_ADDRESS").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| CONTAINERD_SOCK.into())
}


/// A private dockerd; stopped, its containers removed and its dirs deleted on drop.
struct Dockerd {
    tag: String,
    data_root: PathBuf,
    exec_root: PathBuf,
    live_restore: bool,
    child: Option<Child>,
}

impl Dockerd {
    fn new(test: &str, live_restore: bool) -> Dockerd {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!("nt-rs-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let d = Dockerd {
            data_root: PathBuf::from(format!("/var/lib/nestrun-test/{tag}")),
            exec_root: PathBuf::from(format!("/run/nestrun-test/{tag}")),
            tag,
            live_restore,
            child: None,
        };
        println!("{test}: private dockerd {} (live-restore: {live_restore})", d.tag);
        std::fs::create_dir_all(&d.data_root).unwrap();
        std::fs::create_dir_all(&d.exec_root).unwrap();
        // its own (empty) config file: the system's /etc/docker/daemon.json must not apply
        std::fs::write(d.exec_root.join("daemon.json"), "{}\n").unwrap();
        d
    }

    fn host(&self) -> String {
        format!("unix://{}/docker.sock", self.exec_root.display())
    }

    fn log(&self) -> PathBuf {
        self.data_root.join("dockerd.log")
    }

    fn docker(&self, args: &[&str]) -> Out {
        let mut c = Command::new("/usr/bin/docker");
        c.env("DOCKER_HOST", self.host()).args(args);
        run_cmd(c, Duration::from_secs(120))
    }

    fn answering(&self) -> bool {
        let mut c = Command::new("/usr/bin/docker");
        c.env("DOCKER_HOST", self.host()).args(["version", "--format", "{{.Server.Version}}"]);
        run_cmd(c, Duration::from_secs(20)).code == 0
    }

    fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts dockerd and waits (60 s) until it answers.
    fn start(&mut self) {
        assert!(self.child.is_none(), "{} already started", self.tag);
        let ns = format!("{}-moby", self.tag);
        let plugins_ns = format!("{}-plugins", self.tag);
        let mut c = Command::new("/usr/sbin/dockerd");
        c.arg("--config-file").arg(self.exec_root.join("daemon.json"));
        c.arg("--data-root").arg(&self.data_root);
        c.arg("--exec-root").arg(&self.exec_root);
        c.args(["-H", &self.host()]);
        c.arg("--pidfile").arg(self.exec_root.join("dockerd.pid"));
        c.args(["--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false"]);
        c.args(["--containerd", &containerd_address(), "--containerd-namespace", &ns, "--containerd-plugins-namespace", &plugins_ns]);
        c.args(["--add-runtime", &format!("nested={}", nestrun_bin())]);
        c.args(["--storage-driver", "overlay2", "--exec-opt", "native.cgroupdriver=cgroupfs"]);
        if self.live_restore {
            c.arg("--live-restore");
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log()).unwrap();
        c.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        use std::os::unix::process::CommandExt;
        c.process_group(0);
        self.child = Some(c.spawn().expect("spawn /usr/sbin/dockerd"));
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if self.answering() {
                return;
            }
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("private dockerd {} exited ({s}) before answering; log:\n{}", self.tag, self.log_tail());
            }
            assert!(Instant::now() < end, "private dockerd {} did not answer within 60 s; log:\n{}", self.tag, self.log_tail());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, and wait for dockerd to exit (`secs`, then SIGKILL). Returns true on a clean
    /// exit within the time.
    fn stop(&mut self, secs: u64) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if let Some(s) = child.try_wait().unwrap() {
                return s.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// The data dir nestrun keeps beside the container's upper dir (this dockerd's layer).
    fn layer_data_dir(&self, id: &str) -> Option<PathBuf> {
        let o = self.docker(&["inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", id]);
        let d = Path::new(o.out()).parent()?.join("nestrun-data");
        (o.code == 0).then_some(d)
    }

    /// Loads nestrun-test/busybox from the shared test dockerd.
    fn load_busybox(&self) {
        let dir = tempdir("restart-img");
        let tar = dir.path.join("busybox.tar");
        docker(&["save", "-o", tar.to_str().unwrap(), BUSYBOX]).ok();
        self.docker(&["load", "-q", "-i", tar.to_str().unwrap()]).ok();
    }

    fn ctr(&self, ns: &str, args: &[&str]) -> Out {
        let mut c = Command::new("ctr");
        c.args(["--address", &containerd_address(), "-n", ns]).args(args);
        run_cmd(c, Duration::from_secs(60))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // 1. containers, through dockerd while it runs (nestrun delete via the shim)
        if self.child.is_some() && self.answering() {
            let ids = self.docker(&["ps", "-aq"]).stdout;
            for id in ids.split_whitespace() {
                let _ = self.docker(&["rm", "-f", "-v", id]);
            }
        }
        self.stop(60);
        // 2. what a panic while dockerd was down left in containerd
        let ns = format!("{}-moby", self.tag);
        for id in self.ctr(&ns, &["tasks", "ls", "-q"]).stdout.split_whitespace().map(String::from).collect::<Vec<_>>() {
            let _ = self.ctr(&ns, &["tasks", "kill", "-s", "KILL", &id]);
            std::thread::sleep(Duration::from_millis(500));
            let _ = self.ctr(&ns, &["tasks", "delete", "-f", &id]);
        }
        for id in self.ctr(&ns, &["containers", "ls", "-q"]).stdout.split_whitespace().map(String::from).collect::<Vec<_>>() {
            let _ = self.ctr(&ns, &["containers", "delete", &id]);
        }
        for n in [ns.clone(), format!("{}-plugins", self.tag)] {
            let _ = self.ctr("default", &["namespaces", "remove", &n]);
        }
        // 3. mounts left under its dirs (deepest first), then the dirs
        let roots = [self.data_root.to_string_lossy().into_owned(), self.exec_root.to_string_lossy().into_owned()];
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(String::from))
            .filter(|m| roots.iter().any(|r| m == r || m.starts_with(&format!("{r}/"))))
            .collect();
        mounts.sort();
        for m in mounts.iter().rev() {
            let c = std::ffi::CString::new(m.as_str()).unwrap();
            if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_root);
        let _ = std::fs::remove_dir_all(&self.exec_root);
    }
}

/// nestrun's traces of `id` other than the data dir beside its layer (which persists across
/// stop/start by design): mounts, mount dirs, leases, cgroups, FUSE servers, fallback data dirs.
fn assert_no_runtime_state(id: &str) {
    let t = traces(id);
    let fallback = entries_with_prefix("/var/lib/nestrun/data", &format!("{id}-"));
    assert!(
        t.mounts.is_empty() && t.mnt_dirs.is_empty() && t.leases.is_empty() && t.cgroups.is_empty() && t.fuse_servers.is_empty() && fallback.is_empty(),
        "{id}: nestrun state left after the container stopped: {t:?}, fallback data dirs {fallback:?}"
    );
}

/// A busybox container of `d` that sleeps and exits 0 on SIGTERM; returns (id, pid, range start).
fn sleeper(d: &Dockerd, name: &str) -> (String, i32, u64) {
    d.docker(&[
        "run", "-d", "--runtime", "nested", "--network", "none", "--name", name, BUSYBOX, "sh", "-c",
        "trap 'exit 0' TERM; while :; do sleep 1; done",
    ])
    .ok();
    let id = d.docker(&["inspect", "-f", "{{.Id}}", name]).ok().out().to_string();
    let pid: i32 = d.docker(&["inspect", "-f", "{{.State.Pid}}", name]).ok().out().parse().unwrap();
    let (inside, start, count) = uid_map(pid);
    assert!(inside == 0 && start >= POOL_START as u64 && count == 65536, "{name}: uid_map {inside} {start} {count}");
    let t = traces(&id);
    assert!(!t.mounts.is_empty() && !t.leases.is_empty() && !t.cgroups.is_empty() && !t.fuse_servers.is_empty(), "the checks must see the running container: {t:?}");
    (id, pid, start)
}

/// `docker rm -f` through `d` leaves nothing: no nestrun traces, no layer data dir, no processes.
fn rm_leaves_nothing(d: &Dockerd, name: &str, id: &str, start: u64) {
    let layer_data = d.layer_data_dir(id).expect("the container's layer");
    assert!(layer_data.is_dir(), "{id}: no data dir beside the layer: {}", layer_data.display());
    d.docker(&["rm", "-f", name]).ok();
    assert_no_traces(id);
    assert!(!layer_data.exists(), "{id}: data dir {} outlived docker rm -f", layer_data.display());
    assert!(wait_for(10, || own_pids(id, start).is_empty()), "processes of {id} still run: {:?}", own_pids(id, start));
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists() && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn live_restore_keeps_nested_container_running_across_dockerd_restart() {
    need_engines!("live_restore_keeps_nested_container_running_across_dockerd_restart");
    let mut d = Dockerd::new("live_restore", true);
    d.start();
    d.load_busybox();
    let name = unique("live-restore");
    let (id, pid, start) = sleeper(&d, &name);

    assert!(d.stop(60), "dockerd did not exit cleanly on SIGTERM; log:\n{}", d.log_tail());
    assert!(alive(pid), "live-restore: the container's init {pid} died with dockerd");
    let t = traces(&id);
    assert!(!t.mounts.is_empty() && !t.leases.is_empty() && !t.fuse_servers.is_empty(), "live-restore: nestrun state of the running container vanished with dockerd: {t:?}");

    d.start();
    assert_eq!(d.docker(&["inspect", "-f", "{{.State.Running}} {{.State.Pid}}", &name]).ok().out(), format!("true {pid}"), "the same init after the restart");
    let o = d.docker(&["exec", &name, "cat", "/proc/self/uid_map"]).ok();
    assert_eq!(o.stdout.split_whitespace().nth(1), Some(start.to_string().as_str()), "exec after the restart runs in the container's range: {:?}", o.stdout);
    assert_eq!(d.docker(&["exec", &name, "echo", "ok"]).ok().out(), "ok");
    rm_leaves_nothing(&d, &name, &id, start);
}

#[test]
fn dockerd_shutdown_stops_nested_container_and_it_starts_again() {
    need_engines!("dockerd_shutdown_stops_nested_container_and_it_starts_again");
    let mut d = Dockerd::new("no_live_restore", false);
    d.start();
    d.load_busybox();
    let name = unique("dockerd-stop");
    let (id, pid, _) = sleeper(&d, &name);

    assert!(d.stop(60), "dockerd did not exit cleanly on SIGTERM; log:\n{}", d.log_tail());
    assert!(wait_for(10, || !alive(pid)), "dockerd stopped without live-restore, but the container's init {pid} still runs");
    assert!(wait_for(10, || traces(&id).fuse_servers.is_empty()), "fuse-serve of {id} outlived the container");
    assert_no_runtime_state(&id);

    d.start();
    assert_eq!(d.docker(&["inspect", "-f", "{{.State.Running}}", &name]).ok().out(), "false");
    let layer_data = d.layer_data_dir(&id).unwrap();
    assert!(layer_data.is_dir(), "the data dir beside the layer persists while the container exists: {}", layer_data.display());
    d.docker(&["start", &name]).ok();
    let pid2: i32 = d.docker(&["inspect", "-f", "{{.State.Pid}}", &name]).ok().out().parse().unwrap();
    assert!(pid2 > 0 && pid2 != pid);
    let (inside, start2, count) = uid_map(pid2);
    assert!(inside == 0 && start2 >= POOL_START as u64 && count == 65536, "restarted container: uid_map {inside} {start2} {count}");
    assert_eq!(d.docker(&["exec", &name, "echo", "ok"]).ok().out(), "ok");
    rm_leaves_nothing(&d, &name, &id, start2);
}
