//! Validation at create (src/validate/), rule by rule, through the real binary: each row edits
//! the busybox bundle and runs `nestrun create` in plain mode (io.nestrun.mode=plain) and in
//! system mode, expecting a refusal (non-zero exit, exactly one stderr line containing the
//! needles, nothing left behind) or a created container (deleted again, nothing left); then
//! `runc create` on the same bundle, expecting what runc 1.1.5 was seen to do.
//!
//! Where nestrun (plain mode) and runc differ, and why (each row says so in `why`):
//!
//! | config | runc 1.1.5 | nestrun | why |
//! |---|---|---|---|
//! | relative mounts[].destination | warns, prefixes / | refuses | OCI 1.0: MUST be absolute; the rewrite matches destinations literally |
//! | ociVersion not 1.x | runs it | refuses | libcontainer refuses (init_builder) |
//! | process.scheduler, process.ioPriority out of range | ignores (predates them) | refuses | libcontainer's validator refuses |
//! | linux.timeOffsets without a time namespace | ignores (predates it) | refuses | libcontainer's validator refuses |
//! | linux.netDevices with a bad interface name | ignores (predates it) | refuses | libcontainer refuses |
//! | rootfsPropagation rshared/rslave/rprivate/runbindable | takes them | refuses in plain mode (system mode: rewritten to shared/slave/...) | libcontainer knows only shared, slave, private, unbindable |
//! | hostname "" or domainname without a uts namespace | ignores them | refuses | libcontainer refuses any hostname/domainname without uts |
//! | uid/gidMappings without a user namespace | ignores them | refuses | libcontainer's validator refuses |
//! | a user namespace without `mounts` | refuses (later, for another reason) | refuses | libcontainer needs the list (user_ns.rs) |
//! | ID-mapped mounts (idmap option, uid/gidMappings) | ignores them | refuses, except in system mode binds with the container's own mappings (nestrun makes those: hostUsers: false pods) | libcontainer does not implement them |
//! | an apparmorProfile of "" without AppArmor | takes it | refuses | libcontainer checks AppArmor whenever the field is there |
//! | a time namespace | refuses ("does not exist") | creates | libcontainer supports time namespaces |
//! | root.path through a symlink | refuses | creates | nestrun resolves it (bundle::load; badinput's odd_but_valid_configs_work) |
//! | an unknown capability name | warns, ignores it | refuses | oci_spec refuses it while parsing, naming the field |
//! | linux.mountLabel without SELinux, no maskedPaths | fails mounting (context=) | creates | libcontainer leaves the label out then, as runtime-tools' linux_mount_label expects (with masked paths libcontainer fails: refused) |
//!
//! Runc's refusals that system mode fixes instead (the rewrite adds the namespace, or the
//! mappings): hostname/domainname without uts, masked/readonly paths without a mount
//! namespace, ipc (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*) sysctls without ipc,
//! user.* sysctls without a user namespace (runc 1.1.5 refuses user.* even with one: they are
//! per user namespace, and a system container has its own), a user namespace without
//! mappings, mappings without a user namespace. A net.* sysctl without a network namespace is
//! refused there by the rewrite, naming --network=host. System mode alone refuses ids outside
//! the container's 65536 (process.user, additionalGids, mount uid=/gid=): runc runs such a
//! spec without a user namespace.
//!
//! Left to runc alone: runc checks at create that process.args[0] is found in the rootfs
//! (libcontainer does too, in the container's init: its error names the executable).
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::badinput::{is_root, Env};
use crate::util::*;

/// What `nestrun create` must do with a row's bundle.
#[derive(Clone, Copy)]
enum Want {
    /// Non-zero, one stderr line containing every needle.
    Refused(&'static [&'static str]),
    Created,
}

/// What runc 1.1.5 does with it: refuses, its stderr containing the needle; or creates it.
#[derive(Clone, Copy)]
enum Runc {
    Refuses(&'static str),
    Accepts,
}

struct Row {
    rule: &'static str,
    edit: fn(&mut Value),
    plain: Want,
    system: Want,
    runc: Runc,
    /// Why nestrun (plain mode) and runc differ, when they do.
    why: &'static str,
    console_socket: bool,
    /// A row that holds on some hosts only (the LSMs).
    only_if: Option<fn() -> bool>,
}

fn row(rule: &'static str, edit: fn(&mut Value), plain: Want, system: Want, runc: Runc) -> Row {
    Row { rule, edit, plain, system, runc, why: "", console_socket: false, only_if: None }
}

impl Row {
    fn why(self, why: &'static str) -> Row {
        Row { why, ..self }
    }
}

use Want::{Created, Refused};

fn drop_ns(v: &mut Value, typ: &str) {
    v["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != typ);
}

fn set_ns(v: &mut Value, typ: &str, path: String) {
    drop_ns(v, typ);
    v["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": typ, "path": path}));
}

fn sysctl(v: &mut Value, key: &str, value: &str) {
    v["linux"]["sysctl"] = json!({ key: value });
}

fn userns(v: &mut Value, uid: Value) {
    v["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
    v["linux"]["uidMappings"] = uid;
    v["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 3_000_000_000u32, "size": 65536}]);
}

fn push_mount(v: &mut Value, m: Value) {
    v["mounts"].as_array_mut().unwrap().push(m);
}

/// A mapping outside nestrun's pool (leased ranges), so a container made with it takes nobody's.
fn far_range() -> Value {
    json!([{"containerID": 0, "hostID": 3_000_000_000u32, "size": 65536}])
}

fn apparmor_off() -> bool {
    !std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.starts_with('Y'))
}

fn selinux_off() -> bool {
    !Path::new("/sys/fs/selinux/enforce").exists()
}

const HOST_NET: &[&str] = &["the container asks for the host's network namespace"];

fn rows() -> Vec<Row> {
    let r = row;
    vec![
        r("valid", |_| {}, Created, Created, Runc::Accepts),
        r("root.path through a symlink", |v| v["root"]["path"] = json!("rootfs-link"), Created, Created, Runc::Refuses("not an absolute path, or a symlink")).why("nestrun resolves the rootfs path (bundle::load); runc refuses a symlink"),
        r("unknown capability", |v| v["process"]["capabilities"]["bounding"].as_array_mut().unwrap().push(json!("CAP_FOO")), Refused(&["process.capabilities.bounding", "CAP_FOO"]), Refused(&["process.capabilities.bounding"]), Runc::Accepts).why("oci_spec refuses unknown capability names while parsing; runc warns and ignores them"),
        r("process.args empty", |v| v["process"]["args"] = json!([]), Refused(&["process.args: empty; the OCI runtime spec requires at least one entry on Linux"]), Refused(&["process.args: empty"]), Runc::Refuses("args must not be empty")),
        r("process.args missing", |v| {
            v["process"].as_object_mut().unwrap().remove("args");
        }, Refused(&["process.args: empty"]), Refused(&["process.args: empty"]), Runc::Refuses("args must not be empty")),
        r("process.args[0] empty", |v| v["process"]["args"] = json!([""]), Refused(&["process.args[0]: empty"]), Refused(&["process.args[0]: empty"]), Runc::Refuses("executable file not found")),
        r("process missing", |v| v["process"] = Value::Null, Refused(&["process: missing"]), Refused(&["process: missing"]), Runc::Refuses("process property must not be empty")),
        r("process.cwd relative", |v| v["process"]["cwd"] = json!("tmp"), Refused(&[r#"process.cwd "tmp": not an absolute path"#]), Refused(&[r#"process.cwd "tmp""#]), Runc::Refuses("Cwd must be an absolute path")),
        r("process.cwd empty", |v| v["process"]["cwd"] = json!(""), Refused(&["process.cwd: empty"]), Refused(&["process.cwd: empty"]), Runc::Refuses("Cwd property must not be empty")),
        r("process.env without =", |v| v["process"]["env"] = json!(["NOEQUALS"]), Refused(&[r#"process.env[0] "NOEQUALS": not NAME=VALUE"#]), Refused(&[r#"process.env[0] "NOEQUALS""#]), Runc::Refuses("invalid environment variable")),
        r("process.env empty name", |v| v["process"]["env"] = json!(["PATH=/bin", "=x"]), Refused(&[r#"process.env[1] "=x": the name is empty"#]), Refused(&[r#"process.env[1] "=x""#]), Runc::Refuses("name can't be empty")),
        r("terminal without --console-socket", |v| v["process"]["terminal"] = json!(true), Refused(&["process.terminal is true, but no --console-socket"]), Refused(&["process.terminal is true"]), Runc::Refuses("cannot allocate tty if runc will detach without setting console socket")),
        Row { console_socket: true, ..r("--console-socket without a terminal", |_| {}, Refused(&["--console-socket was given, but the container gets no terminal"]), Refused(&["--console-socket was given"]), Runc::Refuses("cannot use console socket if runc will not detach or allocate tty")) },
        r("process.user.uid above 2^31-1", |v| v["process"]["user"]["uid"] = json!(4294967295u32), Refused(&["process.user.uid 4294967295: above 2147483647"]), Refused(&["process.user.uid 4294967295"]), Runc::Refuses("uids and gids must be in range 0-2147483647")),
        r("oomScoreAdj 1001", |v| v["process"]["oomScoreAdj"] = json!(1001), Refused(&["process.oomScoreAdj 1001: outside -1000..1000"]), Refused(&["process.oomScoreAdj 1001"]), Runc::Refuses("oom_score_adj: Invalid argument")),
        r("oomScoreAdj -1001", |v| v["process"]["oomScoreAdj"] = json!(-1001), Refused(&["process.oomScoreAdj -1001"]), Refused(&["process.oomScoreAdj -1001"]), Runc::Refuses("oom_score_adj: Invalid argument")),
        r("rlimit of an unknown type", |v| v["process"]["rlimits"] = json!([{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]), Refused(&["process.rlimits[0].type", "RLIMIT_BOGUS"]), Refused(&["process.rlimits[0].type"]), Runc::Refuses("wrong rlimit value: RLIMIT_BOGUS")),
        r("rlimit soft above hard", |v| v["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 10}]), Refused(&["process.rlimits[0] (RLIMIT_NOFILE): soft 100 is above hard 10"]), Refused(&["process.rlimits[0] (RLIMIT_NOFILE)"]), Runc::Refuses("error setting rlimit")),
        r("rlimit twice", |v| v["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 10}, {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 100}]), Refused(&["process.rlimits[1]: a second RLIMIT_NOFILE"]), Refused(&["process.rlimits[1]"]), Runc::Refuses("error setting rlimit")),
        r("scheduler nice out of range", |v| v["process"]["scheduler"] = json!({"policy": "SCHED_OTHER", "nice": 50}), Refused(&["process.scheduler: nice 50 is outside -20..19"]), Refused(&["process.scheduler: nice 50"]), Runc::Accepts).why("runc 1.1.5 predates process.scheduler; libcontainer's validator refuses it"),
        r("ioPriority out of range", |v| v["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 9}), Refused(&["process.ioPriority.priority 9: outside 0..7"]), Refused(&["process.ioPriority.priority 9"]), Runc::Accepts).why("runc 1.1.5 predates process.ioPriority; libcontainer's validator refuses it"),
        r("prestart hook relative", |v| v["hooks"] = json!({"prestart": [{"path": "true"}]}), Refused(&[r#"hooks.prestart[0].path "true": not an absolute path"#]), Refused(&["hooks.prestart[0].path"]), Runc::Refuses("fork/exec true: no such file or directory")),
        r("poststart hook relative", |v| v["hooks"] = json!({"poststart": [{"path": "true"}]}), Refused(&[r#"hooks.poststart[0].path "true""#]), Refused(&["hooks.poststart[0].path"]), Runc::Refuses("fork/exec true: no such file or directory")),
        r("ociVersion 2.0.0", |v| v["ociVersion"] = json!("2.0.0"), Refused(&[r#"ociVersion "2.0.0": nestrun runs configs of runtime-spec 1.x only"#]), Refused(&[r#"ociVersion "2.0.0""#]), Runc::Accepts).why("libcontainer refuses configs of another major version"),
        r("hostname without uts", |v| drop_ns(v, "uts"), Refused(&[r#"hostname "youki": needs a uts namespace"#]), Created, Runc::Refuses("unable to set hostname without a private UTS namespace")),
        r("empty hostname without uts", |v| {
            drop_ns(v, "uts");
            v["hostname"] = json!("");
        }, Refused(&[r#"hostname "": needs a uts namespace"#]), Created, Runc::Accepts).why("runc ignores an empty hostname; libcontainer refuses any hostname without uts"),
        r("domainname without uts", |v| {
            drop_ns(v, "uts");
            v.as_object_mut().unwrap().remove("hostname");
            v["domainname"] = json!("example.org");
        }, Refused(&[r#"domainname "example.org": needs a uts namespace"#]), Created, Runc::Accepts).why("runc 1.1.5 predates domainname and ignores it; libcontainer refuses it without uts"),
        r("masked paths without mount ns", |v| drop_ns(v, "mount"), Refused(&["linux.maskedPaths: needs a mount namespace"]), Created, Runc::Refuses("unable to restrict sys entries without a private MNT namespace")),
        r("namespace twice", |v| v["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "pid"})), Refused(&["linux.namespaces[6]: a second pid namespace (the first is linux.namespaces[0])"]), Refused(&["linux.namespaces[6]: a second pid namespace"]), Runc::Refuses("duplicated ns")),
        r("namespace path relative", |v| set_ns(v, "ipc", "proc/1/ns/ipc".into()), Refused(&["linux.namespaces[", "(ipc)", r#""proc/1/ns/ipc""#]), Refused(&["(ipc)", r#""proc/1/ns/ipc""#]), Runc::Refuses("proc/1/ns/ipc")),
        r("namespace path of another type", |v| set_ns(v, "ipc", format!("/proc/{}/ns/net", std::process::id())), Refused(&["(ipc).path", "is a network namespace"]), Refused(&["(ipc).path", "is a network namespace"]), Runc::Refuses("failed to setns into ipc namespace")),
        r("namespace path not a namespace", |v| set_ns(v, "ipc", format!("/proc/{}/status", std::process::id())), Refused(&["(ipc).path", "is not a namespace file"]), Refused(&["is not a namespace file"]), Runc::Refuses("failed to setns into ipc namespace")),
        r("time namespace", |v| v["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "time"})), Created, Created, Runc::Refuses("does not exist")).why("runc 1.1.5 predates time namespaces; libcontainer makes them"),
        r("mappings without user ns", |v| {
            v["linux"]["uidMappings"] = far_range();
            v["linux"]["gidMappings"] = far_range();
        }, Refused(&["linux.uidMappings: set, but linux.namespaces has no user namespace"]), Created, Runc::Accepts).why("runc ignores mappings without a user namespace; libcontainer's validator refuses them"),
        r("user ns without mappings", |v| v["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"})), Refused(&["linux.uidMappings: empty, but the new user namespace needs them"]), Created, Runc::Refuses("no uid mappings found")),
        r("mappings overlap", |v| userns(v, json!([{"containerID": 0, "hostID": 3_000_000_000u32, "size": 65536}, {"containerID": 100, "hostID": 3_100_000_000u32, "size": 10}])), Refused(&["linux.uidMappings[1]: overlaps linux.uidMappings[0] on the container side"]), Refused(&["linux.uidMappings: 2 entries; nestrun needs one contiguous range"]), Runc::Refuses("uid_map: Invalid argument")),
        r("mapping of size 0", |v| userns(v, json!([{"containerID": 0, "hostID": 3_000_000_000u32, "size": 0}])), Refused(&["linux.uidMappings[0]: size 0"]), Refused(&["linux.uidMappings: size 0 is smaller than 65536"]), Runc::Refuses("no user mapping found")),
        r("root not mapped", |v| userns(v, json!([{"containerID": 1, "hostID": 3_000_000_000u32, "size": 65535}])), Refused(&["linux.uidMappings: container uid 0 (root) is not mapped"]), Refused(&["linux.uidMappings: must start at container id 0, not 1"]), Runc::Refuses("no user mapping found")),
        r("user ns without mounts", |v| {
            userns(v, far_range());
            for k in ["mounts", "maskedPaths", "readonlyPaths"] {
                v.as_object_mut().unwrap().remove(k);
                v["linux"].as_object_mut().unwrap().remove(k);
            }
        // runc refuses too, for another reason (device nodes in a rootfs the mapped root does not own).
        }, Refused(&["mounts: missing; libcontainer needs the list"]), Created, Runc::Refuses("")),
        r("uid outside the container's range", |v| v["process"]["user"]["uid"] = json!(70000), Created, Refused(&["process.user.uid: uid 70000 is not mapped in the container's user namespace (a system container maps container ids 0-65535)"]), Runc::Accepts),
        r("tmpfs uid= outside the mappings", |v| {
            userns(v, far_range());
            push_mount(v, json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["uid=70000"]}));
        }, Refused(&[r#".options "uid=70000": uid 70000 is not mapped in the container's user namespace (linux.uidMappings)"#]), Refused(&[r#".options "uid=70000""#]), Runc::Refuses("uid=70000: invalid argument")),
        r("mount destination relative", |v| push_mount(v, json!({"destination": "mnt", "type": "tmpfs", "source": "tmpfs"})), Refused(&[r#".destination "mnt": not an absolute path"#]), Refused(&[r#".destination "mnt""#]), Runc::Accepts).why("runc 1.1.5 warns and prefixes /; the OCI spec 1.0 says MUST be absolute, and the rewrite matches destinations literally"),
        r("ID-mapped mount", |v| push_mount(v, json!({"destination": "/mnt", "type": "bind", "source": "/tmp", "options": ["rbind", "idmap"]})), Refused(&[r#"at "/mnt": ID-mapped mounts (idmap, ridmap, uidMappings, gidMappings) are supported only for binds in system mode"#]), Refused(&[r#"at "/mnt": ID-mapped mounts"#]), Runc::Accepts).why("runc 1.1.5 passes the unknown idmap option on and the bind ignores it; libcontainer refuses ID-mapped mounts"),
        r("net sysctl without network ns", |v| {
            drop_ns(v, "network");
            sysctl(v, "net.ipv4.ip_forward", "1");
        }, Refused(&[r#"linux.sysctl "net.ipv4.ip_forward": needs a network namespace"#]), Refused(HOST_NET), Runc::Refuses("not allowed in host network namespace")),
        r("net sysctl in the host's network ns", |v| {
            set_ns(v, "network", format!("/proc/{}/ns/net", std::process::id()));
            sysctl(v, "net.ipv4.ip_forward", "1");
        }, Refused(&[r#"linux.sysctl "net.ipv4.ip_forward": the network namespace"#, "is the host's"]), Refused(HOST_NET), Runc::Refuses("not allowed in host network namespace")),
        r("ipc sysctl without ipc ns", |v| {
            drop_ns(v, "ipc");
            sysctl(v, "kernel.shmmax", "100000000");
        }, Refused(&[r#"linux.sysctl "kernel.shmmax": needs an ipc namespace"#]), Created, Runc::Refuses("is not allowed in the hosts ipc namespace")),
        r("mqueue sysctl without ipc ns", |v| {
            drop_ns(v, "ipc");
            sysctl(v, "fs.mqueue.msg_max", "20");
        }, Refused(&[r#"linux.sysctl "fs.mqueue.msg_max": needs an ipc namespace"#]), Created, Runc::Refuses("is not allowed in the hosts ipc namespace")),
        r("global sysctl", |v| sysctl(v, "vm.swappiness", "10"), Refused(&[r#"linux.sysctl "vm.swappiness": not in any namespace (it would set the host's value)"#]), Refused(&[r#"linux.sysctl "vm.swappiness": not in any namespace"#]), Runc::Refuses("is not in a separate kernel namespace")),
        r("emulated global sysctl", |v| sysctl(v, "vm.max_map_count", "262144"), Refused(&[r#"linux.sysctl "vm.max_map_count": not in any namespace"#]), Refused(&["nestrun emulates it per container: write /proc/sys/vm/max_map_count inside the container instead"]), Runc::Refuses("is not in a separate kernel namespace")),
        r("kernel.hostname sysctl", |v| sysctl(v, "kernel.hostname", "x"), Refused(&[r#"linux.sysctl "kernel.hostname": conflicts with the hostname field"#]), Refused(&[r#"linux.sysctl "kernel.hostname""#]), Runc::Refuses("conflicts with the OCI")),
        r("user sysctl without user ns", |v| sysctl(v, "user.max_user_namespaces", "10"), Refused(&[r#"linux.sysctl "user.max_user_namespaces": needs a user namespace"#]), Created, Runc::Refuses("is not in a separate kernel namespace")),
        r("rootfsPropagation unknown", |v| v["linux"]["rootfsPropagation"] = json!("weird"), Refused(&[r#"linux.rootfsPropagation "weird": expected shared, slave, private or unbindable"#]), Refused(&[r#"linux.rootfsPropagation "weird""#]), Runc::Refuses("rootfsPropagation=weird is not supported")),
        r("rootfsPropagation rshared", |v| v["linux"]["rootfsPropagation"] = json!("rshared"), Refused(&[r#"linux.rootfsPropagation "rshared""#]), Created, Runc::Accepts).why("libcontainer knows only shared, slave, private and unbindable; system mode's rewrite makes it shared (libcontainer applies it recursively)"),
        r("intelRdt closID ..", |v| v["linux"]["intelRdt"] = json!({"closID": ".."}), Refused(&[r#"linux.intelRdt.closID "..": must not be"#]), Refused(&[r#"linux.intelRdt.closID "..""#]), Runc::Refuses("invalid intelRdt.ClosID")),
        r("timeOffsets without time ns", |v| v["linux"]["timeOffsets"] = json!({"monotonic": {"secs": 1}}), Refused(&["linux.timeOffsets: set, but linux.namespaces has no time namespace"]), Refused(&["linux.timeOffsets"]), Runc::Accepts).why("runc 1.1.5 predates timeOffsets; libcontainer's validator refuses them without a time namespace"),
        r("netDevices bad name", |v| v["linux"]["netDevices"] = json!({"eth/0": {}}), Refused(&[r#"linux.netDevices "eth/0": not a valid interface name"#]), Refused(&[r#"linux.netDevices "eth/0""#]), Runc::Accepts).why("runc 1.1.5 predates netDevices; libcontainer refuses the name"),
        Row { only_if: Some(apparmor_off), ..r("apparmorProfile without AppArmor", |v| v["process"]["apparmorProfile"] = json!("nestrun-test"), Refused(&[r#"process.apparmorProfile "nestrun-test": AppArmor is not enabled on this host"#]), Refused(&[r#"process.apparmorProfile "nestrun-test""#]), Runc::Refuses("apparmor failed to apply profile")) },
        Row { only_if: Some(apparmor_off), ..r("empty apparmorProfile without AppArmor", |v| v["process"]["apparmorProfile"] = json!(""), Refused(&[r#"process.apparmorProfile "": AppArmor is not enabled"#]), Refused(&[r#"process.apparmorProfile """#]), Runc::Accepts).why("runc takes an empty profile for none; libcontainer checks AppArmor whenever the field is there") },
        Row { only_if: Some(selinux_off), ..r("selinuxLabel without SELinux", |v| v["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0"), Refused(&[r#"process.selinuxLabel "system_u:system_r:container_t:s0": SELinux is not enabled on this host"#]), Refused(&["process.selinuxLabel"]), Runc::Refuses("selinux is disabled or not supported")) },
        Row { only_if: Some(selinux_off), ..r("mountLabel without SELinux", |v| v["linux"]["mountLabel"] = json!("system_u:object_r:container_file_t:s0"), Refused(&[r#"linux.mountLabel "system_u:object_r:container_file_t:s0": SELinux is not enabled on this host"#]), Refused(&["linux.mountLabel"]), Runc::Refuses("invalid argument")) },
        Row { only_if: Some(selinux_off), ..r("mountLabel without SELinux or masked paths", |v| {
            v["linux"]["mountLabel"] = json!("system_u:object_r:container_file_t:s0");
            v["linux"]["maskedPaths"] = json!([]);
        }, Created, Refused(&["linux.mountLabel"]), Runc::Refuses("invalid argument")).why("libcontainer leaves the label out of the mounts without SELinux, as runtime-tools' linux_mount_label expects; runc fails at the mount") },
    ]
}

/// `runc` on PATH (Debian's is /usr/sbin/runc), or None.
fn runc() -> Option<String> {
    let ok = Command::new("runc").arg("--version").output().is_ok_and(|o| o.status.success());
    ok.then(|| "runc".to_string())
}

/// `create` of `id` from `e`'s bundle, with --console-socket when the row asks.
fn create_cmd(e: &Env, row: &Row, id: &str, socket: &Path) -> Vec<String> {
    let mut args = vec!["create".to_string()];
    if row.console_socket {
        args.extend(["--console-socket".into(), socket.display().to_string()]);
    }
    args.extend(["--bundle".into(), e.bundle.display().to_string(), id.to_string()]);
    args
}

fn check_nestrun(e: &Env, row: &Row, mode: &str, want: Want, id: &str, socket: &Path) -> Result<(), String> {
    let args = create_cmd(e, row, id, socket);
    let o = e.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let verdict = match want {
        Refused(needles) => {
            let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            if o.code == 0 {
                e.cli(&["delete", "--force", id]);
                Err(format!("created, expected a refusal naming {needles:?}"))
            } else if lines.len() != 1 || !needles.iter().all(|n| lines[0].contains(n)) {
                Err(format!("exit {}, expected one stderr line containing {needles:?}, got:\n{}", o.code, o.stderr))
            } else {
                Ok(())
            }
        }
        Created if o.code != 0 => Err(format!("refused, expected a container: {}", o.stderr.trim())),
        Created => {
            e.cli(&["delete", "--force", id]).ok();
            Ok(())
        }
    };
    let clean = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.assert_clean(id))).map_err(|_| "left something behind (see the panic above)".to_string());
    verdict.and(clean).map_err(|m| format!("{} [{mode}]: {m}", row.rule))
}

fn check_runc(runc: &str, runc_root: &Path, e: &Env, row: &Row, id: &str, socket: &Path) -> Result<(), String> {
    let mut c = Command::new(runc);
    c.arg("--root").arg(runc_root).args(create_cmd(e, row, id, socket));
    let o = run_cmd(c, Duration::from_secs(60));
    let mut d = Command::new(runc);
    d.arg("--root").arg(runc_root).args(["delete", "--force", id]);
    let _ = run_cmd(d, Duration::from_secs(60));
    let (ok, want) = match row.runc {
        Runc::Refuses(needle) => (o.code != 0 && o.stderr.contains(needle), format!("a refusal containing {needle:?}")),
        Runc::Accepts => (o.code == 0, "a container".to_string()),
    };
    if ok {
        return Ok(());
    }
    Err(format!("{} [runc]: expected {want}, got exit {}: {}\n  (runc's behaviour differs from the row: update it and the table of differences)", row.rule, o.code, o.stderr.trim()))
}

#[test]
fn every_rule_in_both_modes_and_against_runc() {
    if !is_root() {
        crate::skip::skip("root", "validation::every_rule_in_both_modes_and_against_runc", "needs root (run scripts/test)");
        return;
    }
    let e = Env::new("validation");
    let pristine: Value = serde_json::from_slice(&std::fs::read(e.config()).unwrap()).unwrap();
    std::os::unix::fs::symlink("rootfs", e.bundle.join("rootfs-link")).unwrap();
    let runc = runc();
    if runc.is_none() {
        crate::skip::skip("host", "validation::against runc", "no runc on PATH: nestrun is checked alone");
    }
    let runc_root = tempdir("validation-runc");
    let socket = runc_root.path.join("no-such-console.sock");
    let mut failures = vec![];
    for (k, row) in rows().iter().enumerate() {
        if row.only_if.is_some_and(|f| !f()) {
            eprintln!("validation: {}: not on this host", row.rule);
            continue;
        }
        let differs = !matches!((row.plain, row.runc), (Refused(_), Runc::Refuses(_)) | (Created, Runc::Accepts));
        assert_eq!(differs, !row.why.is_empty(), "{}: a row where nestrun and runc differ says why, and only such a row", row.rule);
        for (mode, want) in [("plain", row.plain), ("system", row.system)] {
            let mut v = pristine.clone();
            (row.edit)(&mut v);
            if mode == "plain" {
                v["annotations"] = json!({"io.nestrun.mode": "plain"});
            }
            std::fs::write(e.config(), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
            let id = format!("val-{k}-{mode}-{}", std::process::id());
            println!("row {k} {} [{mode}]", row.rule);
            if let Err(m) = check_nestrun(&e, row, mode, want, &id, &socket) {
                failures.push(m);
            }
            if let (Some(runc), "plain") = (&runc, mode) {
                if let Err(m) = check_runc(runc, &runc_root.path, &e, row, &format!("val-runc-{k}-{}", std::process::id()), &socket) {
                    failures.push(m);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of the rows failed:\n{}", failures.len(), failures.join("\n"));
}
