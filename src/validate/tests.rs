//! One row per rule: a mutation of a valid spec and the exact message in each mode (None:
//! accepted). integration/validation.rs runs the same kinds of rows through `nestrun create`
//! and runc.
use std::path::Path;

use libcontainer::oci_spec::runtime::Spec;
use serde_json::{json, Value};

use super::host::{check_with, Lsm};
use super::*;

/// `oci_spec`'s default spec (hostname "youki") with runc's default namespaces, in its order.
fn base() -> Value {
    let mut v = serde_json::to_value(Spec::default()).unwrap();
    set_ns(&mut v, serde_json::from_str(FIVE_NS).unwrap());
    v
}

fn parse(v: &Value) -> Spec {
    crate::bundle::parse_spec(Path::new("config.json"), &serde_json::to_vec(v).unwrap()).unwrap()
}

fn drop_ns(v: &mut Value, typ: &str) {
    v["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != typ);
}

fn set_ns(v: &mut Value, nss: Value) {
    v["linux"]["namespaces"] = nss;
}

/// A user namespace with these uid mappings and gid 0-65535 at 100000.
fn userns(v: &mut Value, uid: Value) {
    v["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
    v["linux"]["uidMappings"] = uid;
    v["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
}

fn sysctl(v: &mut Value, key: &str) {
    v["linux"]["sysctl"] = json!({ key: "1" });
}

const FIVE_NS: &str = r#"[{"type":"pid"},{"type":"network"},{"type":"ipc"},{"type":"uts"},{"type":"mount"}]"#;

type Row = (&'static str, fn(&mut Value), Option<&'static str>, Option<&'static str>);

/// (rule, mutation, plain mode's message, system mode's message). System mode leaves engine id
/// mappings to the rewrite (`rewrite::userns::validate`), which refuses all but one range from 0.
const ROWS: &[Row] = &[
    ("valid", |_| {}, None, None),
    ("ociVersion 2", |v| v["ociVersion"] = json!("2.0.0"), Some(r#"ociVersion "2.0.0": nestrun runs configs of runtime-spec 1.x only"#), Some(r#"ociVersion "2.0.0": nestrun runs configs of runtime-spec 1.x only"#)),
    ("no process", |v| v["process"] = Value::Null, Some("process: missing; create needs a process to run"), Some("process: missing; create needs a process to run")),
    ("no linux", |v| v["linux"] = Value::Null, Some("linux: missing; nestrun runs Linux containers only"), Some("linux: missing; nestrun runs Linux containers only")),
    ("args empty", |v| v["process"]["args"] = json!([]), Some("process.args: empty; the OCI runtime spec requires at least one entry on Linux"), Some("process.args: empty; the OCI runtime spec requires at least one entry on Linux")),
    ("args missing", |v| v["process"]["args"] = Value::Null, Some("process.args: empty; the OCI runtime spec requires at least one entry on Linux"), Some("process.args: empty; the OCI runtime spec requires at least one entry on Linux")),
    ("program empty", |v| v["process"]["args"] = json!(["", "x"]), Some("process.args[0]: empty; it names the program to run"), Some("process.args[0]: empty; it names the program to run")),
    ("cwd empty", |v| v["process"]["cwd"] = json!(""), Some("process.cwd: empty; it must be an absolute path"), Some("process.cwd: empty; it must be an absolute path")),
    ("cwd relative", |v| v["process"]["cwd"] = json!("tmp"), Some(r#"process.cwd "tmp": not an absolute path"#), Some(r#"process.cwd "tmp": not an absolute path"#)),
    ("env without =", |v| v["process"]["env"] = json!(["A=1", "NOEQUALS"]), Some(r#"process.env[1] "NOEQUALS": not NAME=VALUE"#), Some(r#"process.env[1] "NOEQUALS": not NAME=VALUE"#)),
    ("env empty name", |v| v["process"]["env"] = json!(["=x"]), Some(r#"process.env[0] "=x": the name is empty"#), Some(r#"process.env[0] "=x": the name is empty"#)),
    ("env NUL", |v| v["process"]["env"] = json!(["A=b\u{0}c"]), Some(r#"process.env[0] "A=b\0c": contains a NUL byte"#), Some(r#"process.env[0] "A=b\0c": contains a NUL byte"#)),
    ("env value with =", |v| v["process"]["env"] = json!(["A=b=c", "EMPTY="]), None, None),
    ("terminal without console socket", |v| v["process"]["terminal"] = json!(true), Some("process.terminal is true, but no --console-socket was given to receive the terminal of a detached container"), Some("process.terminal is true, but no --console-socket was given to receive the terminal of a detached container")),
    ("uid above 2^31-1", |v| v["process"]["user"]["uid"] = json!(4294967295u32), Some("process.user.uid 4294967295: above 2147483647, the largest id the kernel takes"), Some("process.user.uid 4294967295: above 2147483647, the largest id the kernel takes")),
    ("additional gid above 2^31-1", |v| v["process"]["user"]["additionalGids"] = json!([0, 3000000000u32]), Some("process.user.additionalGids[1] 3000000000: above 2147483647, the largest id the kernel takes"), Some("process.user.additionalGids[1] 3000000000: above 2147483647, the largest id the kernel takes")),
    ("oomScoreAdj 1001", |v| v["process"]["oomScoreAdj"] = json!(1001), Some("process.oomScoreAdj 1001: outside -1000..1000"), Some("process.oomScoreAdj 1001: outside -1000..1000")),
    ("oomScoreAdj -1001", |v| v["process"]["oomScoreAdj"] = json!(-1001), Some("process.oomScoreAdj -1001: outside -1000..1000"), Some("process.oomScoreAdj -1001: outside -1000..1000")),
    ("oomScoreAdj -1000", |v| v["process"]["oomScoreAdj"] = json!(-1000), None, None),
    ("rlimit soft above hard", |v| v["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 10}]), Some("process.rlimits[0] (RLIMIT_NOFILE): soft 100 is above hard 10"), Some("process.rlimits[0] (RLIMIT_NOFILE): soft 100 is above hard 10")),
    ("rlimit twice", |v| v["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 10}, {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}, {"type": "RLIMIT_NOFILE", "soft": 9, "hard": 9}]), Some("process.rlimits[2]: a second RLIMIT_NOFILE (the first is process.rlimits[0])"), Some("process.rlimits[2]: a second RLIMIT_NOFILE (the first is process.rlimits[0])")),
    ("scheduler nice", |v| v["process"]["scheduler"] = json!({"policy": "SCHED_OTHER", "nice": 50}), Some("process.scheduler: nice 50 is outside -20..19 (SCHED_OTHER)"), Some("process.scheduler: nice 50 is outside -20..19 (SCHED_OTHER)")),
    ("scheduler priority", |v| v["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "priority": 5}), Some("process.scheduler: priority 5 is only for SCHED_FIFO and SCHED_RR, not SCHED_BATCH"), Some("process.scheduler: priority 5 is only for SCHED_FIFO and SCHED_RR, not SCHED_BATCH")),
    ("scheduler deadline", |v| v["process"]["scheduler"] = json!({"policy": "SCHED_FIFO", "priority": 5, "runtime": 100}), Some("process.scheduler: runtime, deadline and period are only for SCHED_DEADLINE, not SCHED_FIFO"), Some("process.scheduler: runtime, deadline and period are only for SCHED_DEADLINE, not SCHED_FIFO")),
    ("ioPriority 9", |v| v["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 9}), Some("process.ioPriority.priority 9: outside 0..7"), Some("process.ioPriority.priority 9: outside 0..7")),
    ("prestart hook relative", |v| v["hooks"] = json!({"prestart": [{"path": "/bin/true"}, {"path": "true"}]}), Some(r#"hooks.prestart[1].path "true": not an absolute path"#), Some(r#"hooks.prestart[1].path "true": not an absolute path"#)),
    ("poststart hook relative", |v| v["hooks"] = json!({"poststart": [{"path": "true"}]}), Some(r#"hooks.poststart[0].path "true": not an absolute path"#), Some(r#"hooks.poststart[0].path "true": not an absolute path"#)),
    ("startContainer and poststop hooks relative", |v| v["hooks"] = json!({"startContainer": [{"path": "true"}], "poststop": [{"path": "true"}]}), None, None),
    ("hostname without uts", |v| drop_ns(v, "uts"), Some(r#"hostname "youki": needs a uts namespace (linux.namespaces has none)"#), None),
    ("domainname without uts", |v| {
        drop_ns(v, "uts");
        v["hostname"] = Value::Null;
        v["domainname"] = json!("example.org");
    }, Some(r#"domainname "example.org": needs a uts namespace (linux.namespaces has none)"#), None),
    ("masked paths without mount ns", |v| drop_ns(v, "mount"), Some("linux.maskedPaths: needs a mount namespace (linux.namespaces has none)"), None),
    ("readonly paths without mount ns", |v| {
        drop_ns(v, "mount");
        v["linux"]["maskedPaths"] = json!([]);
    }, Some("linux.readonlyPaths: needs a mount namespace (linux.namespaces has none)"), None),
    ("namespace twice", |v| set_ns(v, json!([{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "pid"}])), Some("linux.namespaces[5]: a second pid namespace (the first is linux.namespaces[0])"), Some("linux.namespaces[5]: a second pid namespace (the first is linux.namespaces[0])")),
    ("namespace path relative", |v| set_ns(v, json!([{"type": "pid"}, {"type": "network"}, {"type": "ipc", "path": "proc/1/ns/ipc"}, {"type": "uts"}, {"type": "mount"}])), Some(r#"linux.namespaces[2] (ipc).path "proc/1/ns/ipc": not an absolute path"#), Some(r#"linux.namespaces[2] (ipc).path "proc/1/ns/ipc": not an absolute path"#)),
    ("mappings without user ns", |v| v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]), Some("linux.uidMappings: set, but linux.namespaces has no user namespace"), None),
    ("user ns without mappings", |v| v["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"})), Some("linux.uidMappings: empty, but the new user namespace needs them"), None),
    ("user ns joined by path without mappings", |v| v["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user", "path": "/proc/1/ns/user"})), None, None),
    ("mappings overlap in the container", |v| userns(v, json!([{"containerID": 0, "hostID": 100000, "size": 65536}, {"containerID": 100, "hostID": 300000, "size": 10}])), Some("linux.uidMappings[1]: overlaps linux.uidMappings[0] on the container side"), None),
    ("mappings overlap on the host", |v| userns(v, json!([{"containerID": 0, "hostID": 100000, "size": 1000}, {"containerID": 1000, "hostID": 100500, "size": 1000}])), Some("linux.uidMappings[1]: overlaps linux.uidMappings[0] on the host side"), None),
    ("two adjacent mappings", |v| userns(v, json!([{"containerID": 0, "hostID": 100000, "size": 1000}, {"containerID": 1000, "hostID": 101000, "size": 64536}])), None, None),
    ("mapping of size 0", |v| userns(v, json!([{"containerID": 0, "hostID": 100000, "size": 0}])), Some("linux.uidMappings[0]: size 0"), None),
    ("mapping past 2^32", |v| userns(v, json!([{"containerID": 0, "hostID": 4294967000u32, "size": 65536}])), Some("linux.uidMappings[0]: hostID 4294967000 + size 65536 reaches past 4294967295"), None),
    ("root not mapped", |v| userns(v, json!([{"containerID": 1, "hostID": 100000, "size": 65535}])), Some("linux.uidMappings: container uid 0 (root) is not mapped"), None),
    ("user ns without mounts", |v| {
        userns(v, json!([{"containerID": 0, "hostID": 100000, "size": 65536}]));
        v["mounts"] = Value::Null;
    }, Some("mounts: missing; libcontainer needs the list (it may be empty) to create a user namespace"), None),
    ("uid outside the container's range", |v| v["process"]["user"]["uid"] = json!(70000), None, Some("process.user.uid: uid 70000 is not mapped in the container's user namespace (a system container maps container ids 0-65535)")),
    ("uid outside the spec's mappings", |v| {
        userns(v, json!([{"containerID": 0, "hostID": 100000, "size": 65536}]));
        v["process"]["user"]["uid"] = json!(70000);
    }, Some("process.user.uid: uid 70000 is not mapped in the container's user namespace (linux.uidMappings)"), Some("process.user.uid: uid 70000 is not mapped in the container's user namespace (linux.uidMappings)")),
    ("additional gid outside the container's range", |v| v["process"]["user"]["additionalGids"] = json!([10, 70000]), None, Some("process.user.additionalGids[1]: gid 70000 is not mapped in the container's user namespace (a system container maps container ids 0-65535)")),
    ("mount uid= outside the container's range", |v| v["mounts"] = json!([{"destination": "/mnt", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755", "uid=70000"]}]), None, Some(r#"mounts[0].options "uid=70000": uid 70000 is not mapped in the container's user namespace (a system container maps container ids 0-65535)"#)),
    ("mount uid= not a number", |v| v["mounts"] = json!([{"destination": "/mnt", "type": "tmpfs", "source": "tmpfs", "options": ["uid=abc"]}]), None, Some(r#"mounts[0] at "/mnt": option "uid=abc" is not a number"#)),
    ("mount destination relative", |v| v["mounts"] = json!([{"destination": "mnt", "type": "tmpfs", "source": "tmpfs"}]), Some(r#"mounts[0].destination "mnt": not an absolute path"#), Some(r#"mounts[0].destination "mnt": not an absolute path"#)),
    ("idmap mount option", |v| v["mounts"] = json!([{"destination": "/mnt", "type": "bind", "source": "/tmp", "options": ["rbind", "idmap"]}]), Some(r#"mounts[0] at "/mnt": ID-mapped mounts (idmap, ridmap, uidMappings, gidMappings) are supported only for binds in system mode, with the container's own uidMappings and gidMappings"#), Some(r#"mounts[0] at "/mnt": ID-mapped mounts (idmap, ridmap, uidMappings, gidMappings) are supported only for binds in system mode, with the container's own uidMappings and gidMappings"#)),
    ("mount with its own mappings", |v| v["mounts"] = json!([{"destination": "/mnt", "type": "bind", "source": "/tmp", "options": ["rbind"], "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 1}]}]), Some(r#"mounts[0] at "/mnt": ID-mapped mounts (idmap, ridmap, uidMappings, gidMappings) are supported only for binds in system mode, with the container's own uidMappings and gidMappings"#), Some(r#"mounts[0] at "/mnt": ID-mapped mounts (idmap, ridmap, uidMappings, gidMappings) are supported only for binds in system mode, with the container's own uidMappings and gidMappings"#)),
    ("bind with the container's mappings (hostUsers: false)", |v| {
        let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        userns(v, map.clone());
        v["mounts"] = json!([{"destination": "/mnt", "type": "bind", "source": "/tmp", "options": ["rbind"], "uidMappings": map, "gidMappings": map}]);
    }, Some(r#"mounts[0] at "/mnt": ID-mapped mounts (idmap, ridmap, uidMappings, gidMappings) are supported only for binds in system mode, with the container's own uidMappings and gidMappings"#), None),
    ("bind with other mappings than the container's", |v| {
        userns(v, json!([{"containerID": 0, "hostID": 100000, "size": 65536}]));
        v["mounts"] = json!([{"destination": "/mnt", "type": "bind", "source": "/tmp", "options": ["rbind"], "uidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}], "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}]);
    }, Some(r#"mounts[0] at "/mnt": ID-mapped mounts (idmap, ridmap, uidMappings, gidMappings) are supported only for binds in system mode, with the container's own uidMappings and gidMappings"#), Some(r#"mounts[0] at "/mnt": ID-mapped mounts (idmap, ridmap, uidMappings, gidMappings) are supported only for binds in system mode, with the container's own uidMappings and gidMappings"#)),
    ("net sysctl without network ns", |v| {
        sysctl(v, "net.ipv4.ip_forward");
        drop_ns(v, "network");
    }, Some(r#"linux.sysctl "net.ipv4.ip_forward": needs a network namespace (linux.namespaces has none)"#), None),
    ("net sysctl, / separated", |v| sysctl(v, "net/ipv4/ip_forward"), None, None),
    ("ipc sysctl without ipc ns", |v| {
        sysctl(v, "kernel.shmmax");
        drop_ns(v, "ipc");
    }, Some(r#"linux.sysctl "kernel.shmmax": needs an ipc namespace (linux.namespaces has none)"#), None),
    ("mqueue sysctl without ipc ns", |v| {
        sysctl(v, "fs.mqueue.msg_max");
        drop_ns(v, "ipc");
    }, Some(r#"linux.sysctl "fs.mqueue.msg_max": needs an ipc namespace (linux.namespaces has none)"#), None),
    ("global sysctl", |v| sysctl(v, "vm.swappiness"), Some(r#"linux.sysctl "vm.swappiness": not in any namespace (it would set the host's value)"#), Some(r#"linux.sysctl "vm.swappiness": not in any namespace (it would set the host's value)"#)),
    ("emulated global sysctl", |v| sysctl(v, "vm.max_map_count"), Some(r#"linux.sysctl "vm.max_map_count": not in any namespace (it would set the host's value)"#), Some(r#"linux.sysctl "vm.max_map_count": not in any namespace (it would set the host's value); nestrun emulates it per container: write /proc/sys/vm/max_map_count inside the container instead"#)),
    ("kernel.hostname sysctl", |v| sysctl(v, "kernel.hostname"), Some(r#"linux.sysctl "kernel.hostname": conflicts with the hostname field: set that instead"#), Some(r#"linux.sysctl "kernel.hostname": conflicts with the hostname field: set that instead"#)),
    ("kernel.domainname sysctl", |v| sysctl(v, "kernel.domainname"), None, None),
    ("kernel.domainname sysctl without uts", |v| {
        sysctl(v, "kernel.domainname");
        drop_ns(v, "uts");
        v["hostname"] = Value::Null;
    }, Some(r#"linux.sysctl "kernel.domainname": needs a uts namespace (linux.namespaces has none)"#), None),
    ("user sysctl without user ns", |v| sysctl(v, "user.max_user_namespaces"), Some(r#"linux.sysctl "user.max_user_namespaces": needs a user namespace (linux.namespaces has none)"#), None),
    ("rootfsPropagation rshared", |v| v["linux"]["rootfsPropagation"] = json!("rshared"), Some(r#"linux.rootfsPropagation "rshared": expected shared, slave, private or unbindable"#), None),
    ("rootfsPropagation private", |v| v["linux"]["rootfsPropagation"] = json!("private"), None, None),
    ("intelRdt closID ..", |v| v["linux"]["intelRdt"] = json!({"closID": ".."}), Some(r#"linux.intelRdt.closID "..": must not be '.' or '..' or contain '/'"#), Some(r#"linux.intelRdt.closID "..": must not be '.' or '..' or contain '/'"#)),
    ("timeOffsets without time ns", |v| v["linux"]["timeOffsets"] = json!({"monotonic": {"secs": 1}}), Some("linux.timeOffsets: set, but linux.namespaces has no time namespace"), Some("linux.timeOffsets: set, but linux.namespaces has no time namespace")),
    ("timeOffsets with a joined time ns", |v| {
        v["linux"]["timeOffsets"] = json!({"monotonic": {"secs": 1}});
        v["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "time", "path": "/proc/1/ns/time"}));
    }, Some("linux.timeOffsets: set, but the time namespace is joined by path; offsets apply to a new one only"), Some("linux.timeOffsets: set, but the time namespace is joined by path; offsets apply to a new one only")),
    ("time ns with offsets", |v| {
        v["linux"]["timeOffsets"] = json!({"monotonic": {"secs": 1}});
        v["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "time"}));
    }, None, None),
    ("netDevices bad name", |v| v["linux"]["netDevices"] = json!({"eth/0": {}}), Some(r#"linux.netDevices "eth/0": not a valid interface name (1-15 bytes, no '/', ':' or space, not . or ..)"#), Some(r#"linux.netDevices "eth/0": not a valid interface name (1-15 bytes, no '/', ':' or space, not . or ..)"#)),
    ("netDevices without network ns", |v| {
        v["linux"]["netDevices"] = json!({"eth0": {"name": "ctr0"}});
        drop_ns(v, "network");
    }, Some(r#"linux.netDevices "eth0": needs a network namespace (linux.namespaces has none)"#), None),
];

#[test]
fn every_rule_with_its_message() {
    let mut failures = vec![];
    for (name, edit, plain, system) in ROWS {
        let mut v = base();
        edit(&mut v);
        let spec = parse(&v);
        for (mode, want) in [(Mode::Plain, plain), (Mode::System, system)] {
            let got = validate(&spec, &Call::create(mode)).map_err(|e| e.to_string());
            if got.as_ref().err().map(String::as_str) != *want {
                failures.push(format!("{name} ({mode:?}): expected {want:?}, got {got:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} rows failed:\n{}", failures.len(), failures.join("\n"));
}

/// What nestrun accepts in plain mode, libcontainer's validator accepts too: the refusals of
/// libcontainer's validator all come from nestrun's rules first.
#[test]
fn accepted_plain_rows_pass_libcontainers_validator() {
    for (name, edit, plain, _) in ROWS.iter().filter(|r| r.2.is_none()) {
        let mut v = base();
        edit(&mut v);
        assert_eq!(crate::rewrite::golden::validate_for_create(&parse(&v)), Ok(()), "{name}: {plain:?}");
    }
}

#[test]
fn console_socket_and_terminal() {
    let mut tty = Spec::default();
    tty.process_mut().as_mut().unwrap().set_terminal(Some(true));
    let plain = Spec::default();
    let call = |detach, console_socket| Call { mode: Mode::Plain, detach, console_socket };
    assert_eq!(validate(&tty, &call(true, true)), Ok(()));
    assert_eq!(validate(&tty, &call(false, false)), Ok(()), "`run` in the foreground gives the container nestrun's own terminal");
    assert_eq!(validate(&tty, &call(true, false)), Err(ValidateError::ConsoleSocketRequired));
    let unused = "--console-socket was given, but the container gets no terminal to send (process.terminal is not true, or it is not detached)";
    assert_eq!(validate(&plain, &call(true, true)).unwrap_err().to_string(), unused);
    assert_eq!(validate(&tty, &call(false, true)).unwrap_err().to_string(), unused);
}

#[test]
fn the_captured_engine_specs_all_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec-fixtures");
    let mut n = 0;
    for d in std::fs::read_dir(&dir).unwrap().flatten().filter(|d| d.path().join("input.json").exists()) {
        let spec = crate::bundle::parse_spec(Path::new("input.json"), &std::fs::read(d.path().join("input.json")).unwrap()).unwrap();
        for mode in [Mode::Plain, Mode::System] {
            let terminal = spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
            let call = Call { mode, detach: true, console_socket: terminal };
            assert_eq!(validate(&spec, &call), Ok(()), "{} in {mode:?} mode", d.path().display());
        }
        n += 1;
    }
    assert!(n >= 11, "only {n} fixtures in {}", dir.display());
}

#[test]
fn namespace_paths_are_checked_for_their_kind() {
    let on = Lsm { apparmor: true, selinux: true };
    let with_ipc = |path: &str| {
        let mut v = base();
        set_ns(&mut v, json!([{"type": "pid"}, {"type": "network"}, {"type": "ipc", "path": path}, {"type": "uts"}, {"type": "mount"}]));
        parse(&v)
    };
    assert_eq!(check_with(&with_ipc("/proc/self/ns/ipc"), Mode::Plain, on), Ok(()));
    let e = check_with(&with_ipc("/proc/self/ns/net"), Mode::System, on).unwrap_err().to_string();
    assert_eq!(e, r#"linux.namespaces[2] (ipc).path "/proc/self/ns/net": is a network namespace"#);
    let e = check_with(&with_ipc("/proc/self/status"), Mode::Plain, on).unwrap_err().to_string();
    assert_eq!(e, r#"linux.namespaces[2] (ipc).path "/proc/self/status": is not a namespace file"#);
    assert_eq!(check_with(&with_ipc("/no/such/ns"), Mode::Plain, on), Ok(()), "bundle::load names a path it cannot open");
}

#[test]
fn net_sysctls_in_the_runtimes_own_netns_are_refused_in_plain_mode() {
    let on = Lsm { apparmor: true, selinux: true };
    let mut v = base();
    set_ns(&mut v, json!([{"type": "pid"}, {"type": "network", "path": "/proc/self/ns/net"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]));
    let spec = parse(&v);
    assert_eq!(check_with(&spec, Mode::Plain, on), Ok(()), "no net.* sysctl");
    sysctl(&mut v, "net.core.somaxconn");
    let spec = parse(&v);
    let e = check_with(&spec, Mode::Plain, on).unwrap_err().to_string();
    assert_eq!(e, r#"linux.sysctl "net.core.somaxconn": the network namespace (linux.namespaces[1].path "/proc/self/ns/net") is the host's"#);
    assert_eq!(check_with(&spec, Mode::System, on), Ok(()), "system mode refuses the host's netns itself (rewrite::namespaces)");
}

#[test]
fn labels_need_their_lsm() {
    let off = Lsm { apparmor: false, selinux: false };
    let mut v = base();
    assert_eq!(check_with(&parse(&v), Mode::Plain, off), Ok(()));
    v["process"]["apparmorProfile"] = json!("docker-default");
    assert_eq!(check_with(&parse(&v), Mode::Plain, off).unwrap_err().to_string(), r#"process.apparmorProfile "docker-default": AppArmor is not enabled on this host"#);
    assert_eq!(check_with(&parse(&v), Mode::Plain, Lsm { apparmor: true, selinux: false }), Ok(()));
    let mut v = base();
    v["linux"]["mountLabel"] = json!("system_u:object_r:container_file_t:s0");
    let mount_label = r#"linux.mountLabel "system_u:object_r:container_file_t:s0": SELinux is not enabled on this host, and libcontainer would put the label on the tmpfs over masked directories, which fails"#;
    assert_eq!(check_with(&parse(&v), Mode::Plain, off).unwrap_err().to_string(), mount_label);
    assert_eq!(check_with(&parse(&v), Mode::System, off).unwrap_err().to_string(), mount_label);
    v["linux"]["maskedPaths"] = json!([]);
    assert_eq!(check_with(&parse(&v), Mode::Plain, off), Ok(()), "libcontainer leaves the label out of the mounts (runtime-tools' linux_mount_label)");
    assert_eq!(check_with(&parse(&v), Mode::System, off).unwrap_err().to_string(), mount_label, "the rewrite may add masked paths");
    v["linux"]["mountLabel"] = Value::Null;
    v["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0");
    assert_eq!(check_with(&parse(&v), Mode::Plain, off).unwrap_err().to_string(), r#"process.selinuxLabel "system_u:system_r:container_t:s0": SELinux is not enabled on this host"#);
    assert_eq!(check_with(&parse(&v), Mode::Plain, Lsm { apparmor: false, selinux: true }), Ok(()));
    v["process"]["selinuxLabel"] = json!("");
    assert_eq!(check_with(&parse(&v), Mode::Plain, off), Ok(()), "an empty label is none (runc)");
}
