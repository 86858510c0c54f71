//! Bad input to the binary itself: every mistake gets a non-zero exit, one line on stderr that
//! names the problem, and leaves nothing behind (state root, mounts, cgroups, uid leases).
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! need_root {
    ($name:expr) => {
        if !is_root() {
            crate::skip::skip("root", $name, "needs root (run scripts/test)");
            return;
        }
    };
}

/// A fresh `--root` and a busybox bundle (`nestrun spec`, terminal off, `sleep`).
pub(crate) struct Env {
    /// Ids created in this root: `delete --force`d on drop, before the root is removed, so a
    /// failing test does not leave a container behind.
    created: std::cell::RefCell<Vec<String>>,
    dir: TempDir,
    pub(crate) root: PathBuf,
    pub(crate) bundle: PathBuf,
}

impl Env {
    pub(crate) fn new(tag: &str) -> Env {
        let dir = tempdir(tag);
        let root = dir.path.join("state");
        let bundle = dir.path.join("bundle");
        std::fs::create_dir_all(&root).unwrap();
        let bin = bundle.join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        for d in ["proc", "sys", "dev", "tmp", "etc", "root"] {
            std::fs::create_dir_all(bundle.join("rootfs").join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy /bin/busybox (install busybox-static)");
        for a in ["sh", "sleep", "echo", "cat", "true", "id"] {
            std::os::unix::fs::symlink("busybox", bin.join(a)).unwrap();
        }
        let e = Env { created: Default::default(), dir, root, bundle };
        e.cli(&["spec", "--bundle", e.bundle.to_str().unwrap()]).ok();
        e.edit(|c| {
            c["process"]["terminal"] = json!(false);
            c["process"]["args"] = json!(["sleep", "100000"]);
        });
        e
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.bundle.join("config.json")
    }

    pub(crate) fn edit(&self, f: impl FnOnce(&mut Value)) {
        let mut c: Value = serde_json::from_slice(&std::fs::read(self.config()).unwrap()).unwrap();
        f(&mut c);
        std::fs::write(self.config(), serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    }

    /// The command `nestrun --root <root> args...`.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nestrun"));
        c.arg("--root").arg(&self.root).args(args).env_remove("NESTRUN_MODE");
        c
    }

    /// `nestrun --root <root> args...`, run with its output captured.
    pub(crate) fn cli(&self, args: &[&str]) -> Out {
        run_cmd(self.command(args), Duration::from_secs(60))
    }

    /// A fresh id for a container that `run` makes (removed with the rest if the test fails).
    pub(crate) fn run_id(&self, tag: &str) -> String {
        let i = id(tag);
        self.created.borrow_mut().push(i.clone());
        i
    }

    /// `delete --force`, then nothing is left for `id` (see `assert_clean`).
    pub(crate) fn delete_leaves_nothing(&self, id: &str) {
        self.cli(&["delete", "--force", id]).ok();
        self.assert_clean(id);
    }

    pub(crate) fn create(&self, id: &str) -> Out {
        self.created.borrow_mut().push(id.to_string());
        self.cli(&["create", "--bundle", self.bundle.to_str().unwrap(), id])
    }

    /// Fails, with exactly one stderr line containing every `needle`.
    pub(crate) fn expect_error(&self, o: Out, needles: &[&str]) {
        let o = o.fails();
        let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "`{}` should print exactly one line on stderr, got:\n{}", o.cmd, o.stderr);
        for n in needles {
            assert!(lines[0].contains(n), "`{}`: stderr should name {n:?}: {}", o.cmd, lines[0]);
        }
    }

    /// Nothing left for `id`: no state, no mounts, no cgroups, no leases.
    pub(crate) fn assert_clean(&self, id: &str) {
        let left: Vec<_> = std::fs::read_dir(&self.root).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "--root {} should be empty, has {left:?}", self.root.display());
        let mnt = entries_with_prefix("/run/nestrun-mnt", &format!("{id}-"));
        assert!(mnt.is_empty(), "mount dirs left for {id}: {mnt:?}");
        let m = mounts_containing(&format!("/run/nestrun-mnt/{id}-"));
        assert!(m.is_empty(), "mounts left for {id}: {m:?}");
        let m = mounts_containing(self.root.to_str().unwrap());
        assert!(m.is_empty(), "mounts left under the root: {m:?}");
        let cg: Vec<_> = cgroup_dirs(&format!("nestrun/{id}")).into_iter().chain(cgroup_dirs(id)).collect();
        assert!(cg.is_empty(), "cgroups left for {id}: {cg:?}");
        let l = leases_naming(self.root.to_str().unwrap());
        assert!(l.is_empty(), "uid leases left pointing into {}: {l:?}", self.root.display());
        let data = entries_with_prefix("/var/lib/nestrun/data", &format!("{id}-"));
        assert!(data.is_empty(), "data dirs left for {id}: {data:?}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in self.created.borrow().iter().filter(|i| !i.is_empty()) {
            let _ = self.cli(&["delete", "--force", id]);
        }
    }
}

fn id(tag: &str) -> String {
    format!("bad-{tag}-{}", std::process::id())
}

#[test]
fn missing_bundle() {
    need_root!("missing_bundle");
    let e = Env::new("bad-nobundle");
    let i = id("nobundle");
    let missing = e.dir.path.join("no-such-bundle");
    e.expect_error(e.cli(&["create", "--bundle", missing.to_str().unwrap(), &i]), &[missing.to_str().unwrap()]);
    e.assert_clean(&i);
}

#[test]
fn missing_config() {
    need_root!("missing_config");
    let e = Env::new("bad-noconfig");
    std::fs::remove_file(e.config()).unwrap();
    let i = id("noconfig");
    e.expect_error(e.create(&i), &["config.json"]);
    e.assert_clean(&i);
}

#[test]
fn malformed_config() {
    need_root!("malformed_config");
    let e = Env::new("bad-json");
    std::fs::write(e.config(), "{ \"ociVersion\": \"1.0.2\", ").unwrap();
    let i = id("json");
    e.expect_error(e.create(&i), &["config.json"]);
    e.assert_clean(&i);
}

#[test]
fn wrong_type_names_the_field() {
    need_root!("wrong_type_names_the_field");
    let e = Env::new("bad-type");
    e.edit(|c| c["process"]["user"]["uid"] = json!("zero"));
    let i = id("type");
    e.expect_error(e.create(&i), &["process.user.uid", "config.json"]);
    e.assert_clean(&i);
}

#[test]
fn missing_rootfs() {
    need_root!("missing_rootfs");
    let e = Env::new("bad-rootfs");
    e.edit(|c| c["root"]["path"] = json!("no-rootfs-here"));
    let i = id("rootfs");
    e.expect_error(e.create(&i), &["no-rootfs-here"]);
    e.assert_clean(&i);
}

#[test]
fn bad_ids() {
    need_root!("bad_ids");
    let e = Env::new("bad-ids");
    e.expect_error(e.create(""), &["CONTAINER_ID"]);
    e.expect_error(e.create("../x"), &["../x"]);
    e.expect_error(e.create("a b"), &["a b"]);
    e.assert_clean("x");
    assert!(!e.dir.path.join("x").exists(), "a path-like id must not create anything outside --root");
}

#[test]
fn unknown_container() {
    need_root!("unknown_container");
    let e = Env::new("bad-unknown");
    let i = id("unknown");
    let process = e.dir.path.join("process.json");
    std::fs::write(&process, r#"{"cwd":"/","args":["true"],"user":{"uid":0,"gid":0}}"#).unwrap();
    for args in [
        vec!["state", &i],
        vec!["start", &i],
        vec!["kill", &i, "KILL"],
        vec!["delete", &i],
        vec!["exec", &i, "true"],
        vec!["exec", "--process", process.to_str().unwrap(), &i],
        vec!["ps", &i],
        vec!["pause", &i],
        vec!["resume", &i],
        vec!["update", "--memory", "1000000", &i],
    ] {
        e.expect_error(e.cli(&args), &[&i]);
    }
    e.delete_leaves_nothing(&i); // runc: --force on a missing container is not an error
}

/// Mistakes against a container that exists: duplicate create, bad signal, missing --process.
/// The container must survive them and delete must then remove everything.
#[test]
fn mistakes_on_an_existing_container() {
    need_root!("mistakes_on_an_existing_container");
    let e = Env::new("bad-exists");
    let i = id("exists");
    e.create(&i).ok();
    let st: Value = serde_json::from_str(&e.cli(&["state", &i]).ok().stdout).unwrap();
    assert_eq!(st["status"], "created", "{st}");
    e.expect_error(e.create(&i), &[&i, "exists"]);
    e.expect_error(e.cli(&["kill", &i, "FOO"]), &["FOO"]);
    let missing = e.dir.path.join("no-process.json");
    e.expect_error(e.cli(&["exec", "--process", missing.to_str().unwrap(), &i]), &[missing.to_str().unwrap()]);
    let st: Value = serde_json::from_str(&e.cli(&["state", &i]).ok().stdout).unwrap();
    assert_eq!(st["status"], "created", "the container must survive the mistakes: {st}");
    let pid = st["pid"].as_i64().unwrap() as i32;
    assert!(proc_uid(pid).is_some_and(|u| u >= POOL_START), "the init runs as a pool uid");
    e.cli(&["delete", "--force", &i]).ok();
    assert!(wait_for(10, || proc_uid(pid).is_none()), "the init {pid} survived delete --force");
    e.assert_clean(&i);
}

/// The happy path of the direct CLI, so the checks above are known to see a real container.
#[test]
fn cli_run_and_cleanup() {
    need_root!("cli_run_and_cleanup");
    let e = Env::new("cli-run");
    e.edit(|c| c["process"]["args"] = json!(["sh", "-c", "echo hello; cat /proc/self/uid_map; exit 3"]));
    let i = e.run_id("run");
    let o = e.cli(&["run", "--bundle", e.bundle.to_str().unwrap(), &i]);
    assert_eq!(o.code, 3, "exit code of the init: {o:?}");
    assert!(o.stdout.starts_with("hello\n"), "{o:?}");
    assert!(o.stdout.contains("65536"), "uid_map: {o:?}");
    e.delete_leaves_nothing(&i);
}

/// stdout and stderr on the host's /dev/null (how scripts and some engines start a runtime):
/// the container's process can write to them. libcontainer replaces such descriptors with the
/// container's own /dev/null, and used to open that read-only (EBADF on every write).
#[test]
fn stdio_on_dev_null_stays_writable() {
    need_root!("stdio_on_dev_null_stays_writable");
    let e = Env::new("cli-devnull");
    e.edit(|c| c["process"]["args"] = json!(["sh", "-c", "echo out && echo err >&2 && cat /proc/self/uid_map"]));
    let i = e.run_id("devnull");
    let status = e
        .command(&["run", "--bundle", e.bundle.to_str().unwrap(), &i])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "the container's writes to stdout/stderr on /dev/null must succeed");
    e.delete_leaves_nothing(&i);
}

/// `exec` while the init has not exec'd its program yet (a startContainer hook holds it after
/// `start`, as a slow start does under load: `docker exec` right after `docker run -d`). The
/// init's namespace files must be opened as host root: from inside the container's user
/// namespace the not-yet-exec'd init refuses ptrace access (EACCES on /proc/<init>/ns/pid).
#[test]
fn exec_right_after_start_before_the_init_execs() {
    need_root!("exec_right_after_start_before_the_init_execs");
    let e = Env::new("cli-early-exec");
    e.edit(|c| c["hooks"] = json!({"startContainer": [{"path": "/bin/sleep", "args": ["sleep", "2"]}]}));
    let i = id("early");
    e.create(&i).ok();
    e.cli(&["start", &i]).ok();
    let o = e.cli(&["exec", &i, "cat", "/proc/self/uid_map"]);
    assert_eq!(o.code, 0, "exec during the init's startContainer hook: {o:?}");
    assert!(o.stdout.contains("65536"), "the exec'd process is in the container's user namespace: {o:?}");
    e.delete_leaves_nothing(&i);
}

/// `--debug --log F --log-format json` records how long each step of create and delete took
/// (the way to see where a slow start goes), as numbers within the command's own duration.
#[test]
fn debug_log_times_each_step() {
    need_root!("debug_log_times_each_step");
    let e = Env::new("cli-steps");
    e.edit(|c| c["process"]["args"] = json!(["true"]));
    let i = e.run_id("steps");
    let log = e.dir.path.join("log.json");
    let t0 = std::time::Instant::now();
    let o = e.cli(&["--debug", "--log", log.to_str().unwrap(), "--log-format", "json", "run", "--bundle", e.bundle.to_str().unwrap(), &i]);
    let wall = t0.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(o.code, 0, "{o:?}");
    let steps: Vec<(String, f64)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|j| j["message"] == "step done")
        .map(|j| (j["step"].as_str().unwrap_or("").to_string(), j["ms"].as_f64().unwrap_or(-1.0)))
        .collect();
    let mut want = vec!["gather", "rewrite", "libcontainer create", "libcontainer delete", "teardown"];
    if std::path::Path::new("/dev/fuse").exists() {
        want.extend(["start fuse server", "attach emulated files"]);
    }
    for w in want {
        assert!(steps.iter().any(|(s, ms)| s == w && *ms > 0.0 && *ms < wall), "no timing for step {w:?} (wall {wall:.1} ms): {steps:?}");
    }
    e.assert_clean(&i);
}

/// Hostile and malformed config.json, table-driven: each case edits the busybox bundle (or
/// writes raw text) and must fail with exactly one stderr line containing every needle, and
/// leave nothing behind.
#[test]
fn hostile_configs() {
    need_root!("hostile_configs");
    let e = Env::new("bad-hostile");
    let pristine = std::fs::read_to_string(e.config()).unwrap();
    let n_mounts = serde_json::from_str::<Value>(&pristine).unwrap()["mounts"].as_array().unwrap().len();
    let userns = |c: &mut Value, host: u64, size: u64| {
        c["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": host, "size": size}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": host, "size": size}]);
    };
    let host_root_link = e.dir.path.join("hostroot");
    std::os::unix::fs::symlink("/", &host_root_link).unwrap();
    let dotdot = format!(r#"mounts[{n_mounts}].destination "/../../etc/evil": '..' components are refused in system mode"#);
    type Edit<'a> = Box<dyn Fn(&mut Value) + 'a>;
    // (case, edit of the JSON or None for raw text, raw text, needles)
    let cases: Vec<(&str, Option<Edit>, String, Vec<&str>)> = vec![
        ("huge file", None, pristine.replacen('{', &format!("{{\"x-pad\": \"{}\",", "y".repeat(5 << 20)), 1), vec!["config.json", "larger than the 4194304 byte limit"]),
        ("deep nesting in a known field", None, pristine.replacen("\"args\": [", &format!("\"args\": {}", "[".repeat(300)), 1), vec!["config.json", "process.args[0]"]),
        ("negative uid", Some(Box::new(|c| c["process"]["user"]["uid"] = json!(-1))), String::new(), vec!["process.user.uid", "expected u32"]),
        ("mapping of host root", Some(Box::new(move |c| userns(c, 0, 65536))), String::new(), vec!["linux.uidMappings: maps host root (hostID 0)"]),
        ("empty mapping", Some(Box::new(move |c| userns(c, 2_000_000, 0))), String::new(), vec!["linux.uidMappings: size 0 is smaller than 65536"]),
        ("mapping past 2^32", Some(Box::new(move |c| userns(c, 4_294_967_000, 65536))), String::new(), vec!["linux.uidMappings: hostID 4294967000 + size 65536 overflows"]),
        ("two mapping ranges", Some(Box::new(|c| {
            userns(c, 2_000_000, 65536);
            c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 2_000_000, "size": 1000}, {"containerID": 1000, "hostID": 2_000_500, "size": 65536}]);
        })), String::new(), vec!["linux.uidMappings: 2 entries; nestrun needs one contiguous range"]),
        ("mount destination with ..", Some(Box::new(|c| c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/../../etc/evil", "type": "tmpfs", "source": "tmpfs"})))), String::new(), vec![dotdot.as_str()]),
        ("missing bind source", Some(Box::new(|c| c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/mnt", "type": "bind", "source": "/no/such/src", "options": ["rbind"]})))), String::new(), vec![r#"at "/mnt": bind source "/no/such/src" does not exist"#]),
        ("rootfs symlinked to /", Some(Box::new(|c| c["root"]["path"] = json!(host_root_link.to_str().unwrap()))), String::new(), vec!["rootfs / is the host's root directory"]),
        ("host network namespace", Some(Box::new(|c| {
            let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "network");
            ns.push(json!({"type": "network", "path": format!("/proc/{}/ns/net", std::process::id())}));
        })), String::new(), vec!["the container asks for the host's network namespace"]),
        ("unknown file system type (fails in the container's init)", Some(Box::new(|c| c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/mnt", "type": "bogusfs", "source": "none"})))), String::new(), vec![r#"failed to prepare rootfs: failed to mount none (bogusfs) at "/mnt""#]),
        ("unopenable namespace path", Some(Box::new(|c| {
            let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "ipc");
            ns.push(json!({"type": "ipc", "path": "/no/such/ns"}));
        })), String::new(), vec![r#"(ipc): cannot open path "/no/such/ns""#]),
    ];
    for (k, (case, edit, raw, needles)) in cases.iter().enumerate() {
        std::fs::write(e.config(), &pristine).unwrap();
        match edit {
            Some(f) => e.edit(f),
            None => std::fs::write(e.config(), raw).unwrap(),
        }
        let i = id(&format!("hostile{k}"));
        println!("case {case}");
        e.expect_error(e.create(&i), needles);
        e.assert_clean(&i);
    }
}

/// What is odd but not wrong works: deep nesting in a member nestrun does not know, members
/// oci_spec does not know (kept in the config.json the container is created from), and a
/// rootfs reached through a symlink.
#[test]
fn odd_but_valid_configs_work() {
    need_root!("odd_but_valid_configs_work");
    let e = Env::new("odd-valid");
    let real = e.bundle.join("rootfs");
    let link = e.dir.path.join("rootfs-link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    e.edit(|c| {
        c["root"]["path"] = json!(link.to_str().unwrap());
        c["org.example.extension"] = json!({"keep": ["me"]});
        c["process"]["x-vendor-knob"] = json!(7);
    });
    let i = id("odd");
    e.create(&i).ok();
    let shadow: Value = serde_json::from_slice(&std::fs::read(e.root.join(".nestrun").join(&i).join("bundle/config.json")).unwrap()).unwrap();
    assert_eq!(shadow["org.example.extension"], json!({"keep": ["me"]}), "unknown top-level member dropped");
    assert_eq!(shadow["process"]["x-vendor-knob"], 7, "unknown nested member dropped");
    let st: Value = serde_json::from_str(&e.cli(&["state", &i]).ok().stdout).unwrap();
    assert_eq!(st["status"], "created", "{st}");
    e.delete_leaves_nothing(&i);
    // 10000 levels of nesting in a member nestrun does not know: parsed without a stack
    // overflow (members nested deeper than serde_json's 128 levels are not carried over).
    let text = std::fs::read_to_string(e.config()).unwrap();
    std::fs::write(e.config(), text.replacen('{', &format!("{{\"x-deep\": {}{},", "[".repeat(10_000), "]".repeat(10_000)), 1)).unwrap();
    let i = id("deep");
    e.create(&i).ok();
    e.delete_leaves_nothing(&i);
    // No PATH in the process's env (a CRI pause image without ENV PATH): runs, as under runc.
    std::fs::write(e.config(), text).unwrap();
    e.edit(|c| c["process"]["env"] = json!(["TERM=xterm"]));
    for args in [json!(["/bin/echo", "absolute"]), json!(["echo", "looked-up"])] {
        e.edit(|c| c["process"]["args"] = args.clone());
        let i = e.run_id("nopath");
        let o = e.cli(&["run", "--bundle", e.bundle.to_str().unwrap(), &i]).ok();
        assert_eq!(o.out(), args[1].as_str().unwrap(), "{o:?}");
        e.delete_leaves_nothing(&i);
    }
}
