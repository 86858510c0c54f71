//! System-container properties through dockerd: unprivileged uid ranges, disjoint ranges,
//! complete cleanup, Docker-in-Docker, plain mode.
use std::os::unix::fs::MetadataExt;

use crate::util::*;

fn assert_pool_uids(c: &Ctr, min: usize) {
    let pids = top_pids(c);
    assert!(pids.len() >= min, "docker top should list {min} processes: {pids:?}");
    let (start, count) = range_of(&c);
    assert_eq!(count, 65536);
    for p in pids {
        let uid = proc_uid(p).unwrap_or_else(|| panic!("pid {p} of docker top vanished"));
        assert!(uid != 0, "container process {p} runs as host root");
        assert!((uid as u64) >= start && (uid as u64) < start + count, "pid {p} runs as host uid {uid}, outside the range {start}+{count}");
    }
}

#[test]
fn processes_run_as_pool_uids() {
    need_engines!("processes_run_as_pool_uids");
    let c = Ctr::start("uids", &[BUSYBOX, "sh", "-c", "sleep 1000 & sleep 100000"]);
    assert!(wait_for(10, || top_pids(&c).len() >= 2), "both sleeps should run (sh execs the last one)");
    assert_pool_uids(&c, 2);
}

/// SECURITY: a `docker exec`'d process must be in the container's user namespace.
#[test]
fn exec_processes_run_as_pool_uids() {
    need_engines!("exec_processes_run_as_pool_uids");
    let c = Ctr::sleeper("exec-uids");
    let o = c.exec(&["cat", "/proc/self/uid_map"]).ok();
    assert_eq!(o.stdout.split_whitespace().nth(1), Some(range_of(&c).0.to_string().as_str()), "exec'd process uid_map: {:?}", o.stdout);
    c.exec(&["sh", "-c", "sleep 1000 & exit 0"]).ok();
    assert_pool_uids(&c, 2);
}

/// A `docker exec`'d process is in the init's cgroup in every hierarchy, named v1 ones
/// (name=systemd, which the cgroup manager does not handle) included: before, an exec'd
/// process stayed in the host's root of name=systemd (`/../..` from inside).
#[test]
fn exec_processes_join_the_inits_cgroups() {
    need_engines!("exec_processes_join_the_inits_cgroups");
    let c = Ctr::sleeper("exec-cgroups");
    let init = c.exec(&["cat", "/proc/1/cgroup"]).ok().stdout;
    let exec = c.exec(&["cat", "/proc/self/cgroup"]).ok().stdout;
    assert_eq!(exec, init, "exec'd process vs the container's init");
    assert!(!exec.contains(".."), "an exec'd process outside the container's cgroups: {exec}");
}

/// A `docker exec`'d root process has the init's capability sets (docker's process.json carries
/// its default set; nestrun gives exec the same privileges as the init, no more).
#[test]
fn exec_root_has_the_inits_capabilities() {
    need_engines!("exec_root_has_the_inits_capabilities");
    let c = Ctr::sleeper("exec-caps");
    let caps = |status: &str| status.lines().filter(|l| l.starts_with("Cap")).map(String::from).collect::<Vec<_>>();
    let init = caps(&c.exec(&["cat", "/proc/1/status"]).ok().stdout);
    let exec = caps(&c.exec(&["cat", "/proc/self/status"]).ok().stdout);
    assert_eq!(exec, init, "exec'd root vs the container's init");
    let host_bnd = std::fs::read_to_string("/proc/self/status").unwrap().lines().find(|l| l.starts_with("CapBnd:")).unwrap().to_string();
    assert!(init.contains(&host_bnd), "the init's bounding set is the runtime's: {init:?} vs host {host_bnd}");
}

/// `--cap-drop` is honoured (docker's default set is widened only when nothing was dropped):
/// `--cap-drop NET_RAW` keeps docker's other 13, `--cap-drop ALL` none, for the init and exec.
#[test]
fn cap_drop_is_honoured() {
    need_engines!("cap_drop_is_honoured");
    let bnd = |c: &Ctr, file: &str| {
        let s = c.exec(&["cat", file]).ok().stdout;
        let l = s.lines().find(|l| l.starts_with("CapBnd:")).unwrap_or_else(|| panic!("{s}")).to_string();
        u64::from_str_radix(l["CapBnd:".len()..].trim(), 16).unwrap()
    };
    let raw = Ctr::start("capdrop-raw", &["--cap-drop", "NET_RAW", BUSYBOX, "sleep", "100000"]);
    let m = bnd(&raw, "/proc/1/status");
    assert_eq!(m.count_ones(), 13, "docker's default set minus NET_RAW: {m:x}");
    assert!(m & (1 << 13) == 0 && m & (1 << 21) == 0, "NET_RAW or SYS_ADMIN kept: {m:x}");
    assert_eq!(bnd(&raw, "/proc/self/status"), m, "exec gets the init's set");
    let o = raw.exec(&["ping", "-c", "1", "-W", "1", "127.0.0.1"]);
    assert!(o.code != 0 && o.stderr.contains("permission denied"), "ping without NET_RAW: {o:?}");
    let none = Ctr::start("capdrop-all", &["--cap-drop", "ALL", BUSYBOX, "sleep", "100000"]);
    assert_eq!((bnd(&none, "/proc/1/status"), bnd(&none, "/proc/self/status")), (0, 0), "--cap-drop ALL");
    range_of(&none);
}

#[test]
fn two_containers_get_disjoint_ranges() {
    need_engines!("two_containers_get_disjoint_ranges");
    let a = Ctr::sleeper("range-a");
    let b = Ctr::sleeper("range-b");
    let (sa, ca) = range_of(&a);
    let (sb, cb) = range_of(&b);
    assert!(sa + ca <= sb || sb + cb <= sa, "uid ranges overlap: {sa}+{ca} and {sb}+{cb}");
    let gid = |c: &Ctr| std::fs::read_to_string(format!("/proc/{}/gid_map", c.pid())).unwrap();
    assert_ne!(gid(&a), gid(&b), "gid maps should differ too");
}

#[test]
fn rm_force_leaves_nothing() {
    need_engines!("rm_force_leaves_nothing");
    let c = Ctr::sleeper("cleanup");
    c.exec(&["sh", "-c", "sleep 1000 & exit 0"]).ok();
    assert!(!traces(&c.id()).data.is_empty(), "a system container should have host-backed data dirs");
    assert_rm_cleans(&c);
}

#[test]
fn dind_overlay2_run_limits_cleanup() {
    need_engines!("dind_overlay2_run_limits_cleanup");
    let c = start_dind("dind", 120);
    let info = c.exec(&["docker", "info"]).ok();
    assert!(info.stdout.contains("Storage Driver: overlay2"), "inner dockerd should use overlay2:\n{}", info.stdout);
    assert_eq!(c.exec(&["docker", "run", "--rm", "busybox", "echo", "hi"]).ok().out(), "hi");
    // inner memory limit is enforced by the inner container's cgroup
    let o = c.exec(&["docker", "run", "--rm", "-m", "32m", "busybox", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]).ok();
    assert_eq!(o.out(), (32u64 << 20).to_string(), "inner -m 32m");
    // an inner container left running, so rm -f must clean nested cgroups, mounts and processes
    c.exec(&["docker", "run", "-d", "busybox", "sleep", "100000"]).ok();
    let id = c.id();
    let (start, count) = range_of(&c);
    let data = traces(&id).data;
    assert_eq!(data.len(), 1, "one data dir for {id}: {data:?}");
    let owner = std::fs::metadata(&data[0]).unwrap().uid() as u64;
    assert!(owner >= start && owner < start + count, "data dir {} owned by host uid {owner}, outside {start}+{count}", data[0].display());
    assert_rm_cleans(&c);
}

#[test]
fn dind_two_stage_build() {
    need_engines!("dind_two_stage_build");
    let c = start_dind("dind-build", 120);
    // a 2-stage build
    let build = "mkdir -p /tmp/b && cd /tmp/b && printf 'FROM busybox AS one\\nRUN echo built > /out\\nFROM busybox\\nCOPY --from=one /out /out\\nCMD [\"cat\", \"/out\"]\\n' > Dockerfile && DOCKER_BUILDKIT=0 docker build -q -t two-stage . >/dev/null && docker run --rm two-stage";
    let o = c.sh(build);
    assert_eq!(o.code, 0, "inner 2-stage docker build failed: {o:?}");
    assert_eq!(o.out(), "built");
}

/// Files the inner dockerd writes under /var/lib/docker are owned on the host by the
/// container's range. The dind image declares VOLUME /var/lib/docker, so docker mounts a volume
/// there, which nestrun re-owns to the range (an ID-mapped bind would leave the inner files
/// owned by host uid 0 on disk) instead of using its host-backed data dir.
#[test]
fn dind_var_lib_docker_owned_by_range_on_host() {
    need_engines!("dind_var_lib_docker_owned_by_range_on_host");
    let c = start_dind("dind-owner", 120);
    let (start, count) = range_of(&c);
    let src = c.inspect("{{range .Mounts}}{{if eq .Destination \"/var/lib/docker\"}}{{.Source}}{{end}}{{end}}");
    let src = if src.is_empty() { format!("{}/var/lib/docker", traces(&c.id()).data[0].display()) } else { src };
    for sub in ["overlay2", "image", "containers"] {
        let p = format!("{src}/{sub}");
        let uid = std::fs::metadata(&p).unwrap_or_else(|e| panic!("stat {p}: {e}")).uid() as u64;
        assert!(uid >= start && uid < start + count, "{p} (written by the inner dockerd) is owned by host uid {uid}, not the container's range {start}+{count}");
    }
}

#[test]
#[ignore = "docker 20.10 does not pass labels (or annotations) into config.json, so io.nestrun.mode=plain never reaches the runtime"]
fn plain_mode_runs_the_bundle_as_written() {
    need_engines!("plain_mode_runs_the_bundle_as_written");
    let o = docker(&["run", "--rm", "--runtime", "nested", "--label", "io.nestrun.mode=plain", BUSYBOX, "cat", "/proc/self/uid_map"]).ok();
    let f: Vec<&str> = o.stdout.split_whitespace().collect();
    assert_eq!(f, ["0", "0", "4294967295"], "plain mode should have the identity map: {:?}", o.stdout);
}

/// `ctr run --rm` with nestrun as the runc binary (docker 20.10 passes neither labels nor
/// annotations to the runtime; `ctr run --annotation` does).
fn ctr_run(id: &str, extra: &[&str], script: &str) -> Out {
    ctr_run_with(&nestrun_bin(), id, extra, script)
}

/// integration/fusehello.c (a FUSE file system without libfuse), built static into `dir`.
fn build_fusehello(dir: &std::path::Path) {
    build_static("fusehello.c", dir, "fusehello");
}

/// `io.nestrun.dev.tun=true` / `io.nestrun.dev.fuse=true`: container root creates a tap device in
/// its own network namespace and serves a FUSE file system (integration/fusehello.c) that `cat`
/// reads. Without them neither node exists.
#[test]
fn fuse_and_tun_devices_on_request() {
    need_engines!("fuse_and_tun_devices_on_request");
    let dir = tempdir("fusehello");
    build_fusehello(&dir.path);
    let bind = format!("type=bind,src={},dst=/t,options=rbind:ro", dir.path.display());
    let tap = format!("nrtap{}", std::process::id() % 100000);
    let script = format!(
        "stat -c '%n %F %u:%g %t:%T %a' /dev/fuse /dev/net/tun 2>&1; tunctl -t {tap} >/dev/null && ip link set {tap} up && ip -o link show {tap}; \
         /t/fusehello /f >/tmp/out & i=0; while ! grep -q mounted /tmp/out && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
         grep ' /f ' /proc/self/mountinfo && cat /f/hello && umount /f; wait; echo end"
    );
    let without = ctr_run(&unique("dev-none"), &["--mount", &bind], &script).ok();
    assert!(without.stdout.contains("can't stat '/dev/fuse'") && without.stdout.contains("can't stat '/dev/net/tun'"), "no devices unless asked: {without:?}");
    assert!(!without.stdout.contains("hello from fuse") && !without.stdout.contains(&format!(": {tap}:")), "{without:?}");
    assert!(without.stderr.contains("fusehello: open /dev/fuse: No such file"), "{without:?}");

    let id = unique("dev-both");
    let with = ctr_run(&id, &["--mount", &bind, "--annotation", "io.nestrun.dev.fuse=true", "--annotation", "io.nestrun.dev.tun=true"], &script).ok();
    println!("{}", with.stdout);
    assert!(with.stdout.contains("/dev/fuse character special file 0:0 a:e5 666") && with.stdout.contains("/dev/net/tun character special file 0:0 a:c8 666"), "nodes owned by container root: {with:?}");
    assert!(with.stdout.contains(&format!(": {tap}: <")) && with.stdout.contains(",UP"), "tap device made and up in the container's netns: {with:?}");
    assert!(with.stdout.contains(" /f ") && with.stdout.contains(" - fuse fusehello "), "FUSE mounted inside: {with:?}");
    assert!(with.stdout.contains("hello from fuse\nend"), "the FUSE server's file read through the mount: {with:?}");
    assert!(!std::path::Path::new("/sys/class/net").join(&tap).exists(), "{tap} must not exist on the host");
    assert_no_traces(&id);
}

/// A device annotation that is neither true nor false fails the create, naming it; nothing is
/// left behind.
#[test]
fn bad_device_annotation_is_refused() {
    need_engines!("bad_device_annotation_is_refused");
    let id = unique("dev-bad");
    let o = ctr_run(&id, &["--annotation", "io.nestrun.dev.fuse=yes"], "echo ran");
    assert_ne!(o.code, 0, "{o:?}");
    assert!(!o.stdout.contains("ran") && o.stderr.contains("annotation io.nestrun.dev.fuse=") && o.stderr.contains("yes") && o.stderr.contains("expected true or false"), "{o:?}");
    assert_no_traces(&id);
}

/// docker 20.10 passes no annotations: `--device /dev/fuse --device /dev/net/tun` is the
/// request there. Container root can open both (a bind of the host's 0600 nodes could not).
#[test]
fn docker_device_flags_give_usable_fuse_and_tun() {
    need_engines!("docker_device_flags_give_usable_fuse_and_tun");
    let script = "stat -c '%n %u:%g %a' /dev/fuse /dev/net/tun; exec 3<>/dev/fuse && echo fuse-open; exec 4<>/dev/net/tun && echo tun-open";
    let o = docker(&["run", "--rm", "--runtime", "nested", "--device", "/dev/fuse", "--device", "/dev/net/tun", BUSYBOX, "sh", "-c", script]).ok();
    assert!(o.stdout.contains("/dev/fuse 0:0 666") && o.stdout.contains("/dev/net/tun 0:0 666"), "nodes owned by container root: {o:?}");
    assert!(o.stdout.contains("fuse-open") && o.stdout.contains("tun-open"), "container root cannot open them: {o:?}");
    let plain = docker(&["run", "--rm", "--runtime", "nested", BUSYBOX, "sh", "-c", "ls /dev/fuse /dev/net/tun"]);
    assert_ne!(plain.code, 0, "devices without asking: {plain:?}");
}
