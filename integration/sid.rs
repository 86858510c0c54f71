//! Today's images and engines (issue 13): `nestrun-test/dind-sid` (Debian sid: docker 28.5,
//! containerd 2.1, runc 1.3, buildx, glibc 2.43, GNU tar 1.35, built with Go 1.27) nested under
//! the test dockerd 20.10 with its default seccomp profile. That profile predates fchmodat2
//! (452) and everything after it; nestrun answers ENOSYS above the profile's highest syscall, as
//! runc does, so glibc and Go take their older paths. Each test does inside what a user of
//! that image does and checks what they would see: exit codes, output, file modes and owners.
//!
//! The fixture: a directory `d` (0750) with `f` (0640, owned by 1000:1000), an executable `x`
//! and a symlink `l -> f`, and `x.tar` of it. `LIST` prints its modes, owners and names.
use std::os::unix::fs::PermissionsExt;

use crate::util::*;

pub const DIND_SID: &str = "nestrun-test/dind-sid:latest";

/// Makes /fx/src/d and /fx/x.tar (runs in sh of the nested container and in busybox).
const FIXTURE: &str = r#"rm -rf /fx && mkdir -p /fx/src/d && cd /fx/src && printf payload > d/f &&
printf '#!/bin/sh\necho x\n' > d/x && ln -s f d/l && chmod 750 d && chmod 640 d/f && chmod 755 d/x &&
chown 1000:1000 d/f && tar -cf /fx/x.tar d"#;
/// Modes, owners and names of `d` below the current directory.
const LIST: &str = r#"find d | sort | xargs stat -c '%A %u:%g %n'"#;
const EXPECTED: &str = "drwxr-x--- 0:0 d\n-rw-r----- 1000:1000 d/f\nlrwxrwxrwx 0:0 d/l\n-rwxr-xr-x 0:0 d/x";

fn start_sid(test: &str, extra: &[&str]) -> Ctr {
    start_debian_dind(test, DIND_SID, extra)
}

/// `s` single-quoted for sh.
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `sh -c script` in the nested container: its stdout, or a panic with what it printed and
/// the tail of the inner dockerd's log.
fn run_ok(c: &Ctr, what: &str, script: &str) -> String {
    let o = c.sh(script);
    if o.code != 0 {
        let log = c.sh("grep -E 'level=(warning|error|fatal)' /var/log/dockerd.log | tail -n 15");
        // Go >= 1.27 (internal/syscall/unix/fchmodat_linux.go) falls back to chmod of
        // /proc/self/fd/N when fchmodat2 answers ENOSYS; where the daemon has pivoted into a
        // container's root (docker cp) there is no /proc
        let hint = if o.stderr.contains("via /proc/self/fd/") {
            "\nhint: fchmodat2 (452) answered ENOSYS (the outer seccomp profile, docker 20.10's, does not name it) and Go's fallback needs /proc"
        } else {
            ""
        };
        panic!(
            "{what} failed in {DIND_SID} (nested, {}): exit {}\nscript: {script}\nstdout:\n{}\nstderr:\n{}{hint}\ninner dockerd log (last warnings and errors):\n{}",
            c.name, o.code, o.stdout, o.stderr, log.stdout
        );
    }
    o.stdout
}

/// The fixture listing printed by `script` (which ends with LIST) is the expected one.
fn assert_listing(c: &Ctr, what: &str, script: &str) {
    assert_listing_is(c, what, script, EXPECTED);
}

fn assert_listing_is(c: &Ctr, what: &str, script: &str, expected: &str) {
    let out = run_ok(c, what, script);
    assert_eq!(out.trim(), expected, "{what}: modes, owners or names differ in {}", c.name);
}

/// The versions the tests are about, printed once per test (and checked: sid, not trixie).
fn versions(c: &Ctr) {
    let v =
        run_ok(c, "versions", "docker version -f '{{.Server.Version}} ({{range .Server.Components}}{{.Name}} {{.Version}}, {{end}})'; ldd --version | head -1");
    println!("{}: {}", c.name, v.trim().replace('\n', "; "));
    let major = v.split('.').next().and_then(|m| m.parse::<u32>().ok());
    assert!(major.is_some_and(|m| m >= 28), "inner docker should be >= 28: {v}");
}

/// GNU tar -x directly in the nested container restores modes and owners (its fchmodat with
/// AT_SYMLINK_NOFOLLOW is fchmodat2 in glibc 2.43; ENOSYS sends it to the old path).
#[test]
fn sid_gnu_tar_extracts_modes_and_owners() {
    need_engines!("sid_gnu_tar_extracts_modes_and_owners");
    let c = start_sid("sid-tar", &[]);
    versions(&c);
    assert_listing(&c, "tar -xpf", &format!("{FIXTURE} && mkdir /fx/out && tar -C /fx/out -xpf /fx/x.tar && cd /fx/out && {LIST}"));
    // and GNU cp -a of the same tree
    assert_listing(&c, "cp -a", &format!("mkdir /fx/cp && cp -a /fx/src/d /fx/cp/ && cd /fx/cp && {LIST}"));
}

/// `docker import` of a tarball, `docker save` of the result, `docker rmi`, `docker load` of
/// the saved tarball: the image runs and has the fixture's modes and owners each time.
#[test]
fn sid_docker_import_save_load() {
    need_engines!("sid_docker_import_save_load");
    let c = start_sid("sid-load", &[]);
    let run_list = format!("docker run --rm imp:sid sh -c {}", sq(&format!("cd / && {LIST}")));
    let script = format!(
        "{FIXTURE} && docker export -o /fx/rootfs.tar $(docker create busybox) && tar -C /fx/src -rf /fx/rootfs.tar d && \
         docker import -c 'CMD [\"sh\"]' /fx/rootfs.tar imp:sid >/dev/null && {run_list}"
    );
    assert_listing(&c, "docker import", &script);
    let loaded = run_ok(&c, "docker save + rmi + load", "docker save -o /fx/imp.tar imp:sid && docker rmi imp:sid >/dev/null && docker load -i /fx/imp.tar");
    assert!(loaded.contains("Loaded image: imp:sid"), "docker load output: {loaded}");
    assert_listing(&c, "run of the loaded image", &run_list);
}

/// `docker cp` out of a running inner container (and out of a stopped one) keeps the modes of
/// what the inner container made; the files belong to the user running `docker cp` (docker's
/// client extracts without chown, -a or not, as under runc).
#[test]
fn sid_docker_cp_out_of_an_inner_container() {
    need_engines!("sid_docker_cp_out_of_an_inner_container");
    let c = start_sid("sid-cp-out", &[]);
    run_ok(&c, "inner busybox", &format!("docker run -d --name box busybox sleep 100000 && docker exec box sh -c {}", sq(FIXTURE)));
    let made = c.exec(&["docker", "exec", "box", "sh", "-c", &format!("cd /fx/src && {LIST}")]).ok();
    assert_eq!(made.out(), EXPECTED, "the fixture made by busybox in the inner container");
    let expected = EXPECTED.replace("1000:1000", "0:0");
    let out = |when: &str| format!("{when} rm -rf /fx/out && mkdir -p /fx/out && docker cp -a box:/fx/src/d /fx/out/ && cd /fx/out && {LIST}");
    assert_listing_is(&c, "docker cp out (running)", &out(""), &expected);
    assert_listing_is(&c, "docker cp out (stopped)", &out("docker stop -t 0 box >/dev/null &&"), &expected);
}

/// `docker cp` (with -a: owners kept) into a running inner container and into a created one.
#[test]
fn sid_docker_cp_into_an_inner_container() {
    need_engines!("sid_docker_cp_into_an_inner_container");
    let c = start_sid("sid-cp-in", &[]);
    run_ok(&c, "fixture", FIXTURE);
    run_ok(&c, "inner busybox", "docker run -d --name box busybox sleep 100000 && docker create --name created busybox true");
    run_ok(&c, "docker cp into a running inner container", "docker cp -a /fx/src/d box:/");
    let seen = c.exec(&["docker", "exec", "box", "sh", "-c", &format!("cd / && {LIST}")]).ok();
    assert_eq!(seen.out(), EXPECTED, "what docker cp wrote, seen in the inner container");
    run_ok(&c, "docker cp into a created inner container", "docker cp /fx/x.tar created:/x.tar");
    let back = run_ok(&c, "docker cp out of it", "docker cp created:/x.tar - | tar -xOf - x.tar | cmp - /fx/x.tar && echo same");
    assert_eq!(back.trim(), "same");
}

/// A build context with the fixture tarball and `ADD x.tar /added/`; `build` builds it as
/// `tag`, whose image must list the fixture (ADD extracts local tarballs).
fn build_adds_tarball(test: &str, build: &str, tag: &str) {
    let c = start_sid(test, &[]);
    let dockerfile = format!("FROM busybox\nADD x.tar /added/\nRUN cd /added && {LIST} > /listing\n");
    let script = format!("{FIXTURE} && mkdir /fx/ctx && cp /fx/x.tar /fx/ctx/ && cat > /fx/ctx/Dockerfile <<'EOF'\n{dockerfile}EOF\n{build} -t {tag} /fx/ctx");
    let out = run_ok(&c, build, &format!("({script}) 2>&1"));
    println!("{build}: {} lines of output, last: {:?}", out.lines().count(), out.lines().last());
    assert_listing(&c, "the built image (RUN's listing)", &format!("docker run --rm {tag} cat /listing"));
    assert_listing(&c, "the built image", &format!("docker run --rm {tag} sh -c {}", sq(&format!("cd /added && {LIST}"))));
}

#[test]
fn sid_legacy_build_adds_a_tarball() {
    need_engines!("sid_legacy_build_adds_a_tarball");
    build_adds_tarball("sid-build-legacy", "DOCKER_BUILDKIT=0 docker build", "legacy:sid");
}

#[test]
fn sid_buildkit_build_adds_a_tarball() {
    need_engines!("sid_buildkit_build_adds_a_tarball");
    build_adds_tarball("sid-build-buildkit", "docker buildx build --progress=plain --load", "buildkit:sid");
}

/// Inner `docker run -p 8080:80` answers inside the nested container (docker-proxy and DNAT).
#[test]
fn sid_inner_port_publishing() {
    need_engines!("sid_inner_port_publishing");
    let c = start_sid("sid-port", &[]);
    crate::inner::assert_port_published(&c);
}

/// Namespaced sysctls of an inner container (net and ipc) take the values asked for.
#[test]
fn sid_inner_namespaced_sysctls() {
    need_engines!("sid_inner_namespaced_sysctls");
    let c = start_sid("sid-sysctl", &[]);
    let out = run_ok(
        &c,
        "docker run --sysctl",
        "docker run --rm --sysctl net.ipv4.ip_forward=1 --sysctl net.core.somaxconn=1234 --sysctl 'net.ipv4.ping_group_range=0 1000' \
         --sysctl kernel.msgmax=12345 busybox sh -c 'cd /proc/sys && cat net/ipv4/ip_forward net/core/somaxconn net/ipv4/ping_group_range kernel/msgmax'",
    );
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["1", "1234", "0", "1000", "12345"], "{out}");
}

/// Inner `docker run --privileged`: the outer container's capabilities, tmpfs mounts and veth
/// pairs work in it.
#[test]
fn sid_inner_privileged() {
    need_engines!("sid_inner_privileged");
    let c = start_sid("sid-priv", &[]);
    let outer = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap();
    let cap_eff = |s: &str| s.lines().find_map(|l| l.strip_prefix("CapEff:")).map(|v| v.trim().to_string()).unwrap_or_default();
    let out = run_ok(
        &c,
        "docker run --privileged",
        "docker run --rm --privileged busybox sh -c 'grep CapEff /proc/self/status; mkdir /m && mount -t tmpfs t /m && \
         grep -c \" /m \" /proc/self/mountinfo && ip link add v0 type veth && ip -o link show v0 | grep -c v0@'",
    );
    assert_eq!(cap_eff(&out), cap_eff(&outer), "inner --privileged has the outer container's capabilities: {out}");
    assert!(out.ends_with("1\n1\n"), "tmpfs mount and veth pair: {out}");
}

/// The inner containerd 2 (dockerd's) with its own ctr: `ctr images import` and `ctr run`.
#[test]
fn sid_inner_ctr_run() {
    need_engines!("sid_inner_ctr_run");
    let c = start_sid("sid-ctr", &[]);
    let ctr = "ctr --address /run/docker/containerd/containerd.sock -n x";
    let v = run_ok(&c, "ctr version", &format!("{ctr} version"));
    assert!(v.lines().filter(|l| l.trim_start().starts_with("Version:")).all(|l| l.contains(" 2.")), "containerd 2 client and server: {v}");
    run_ok(&c, "ctr images import", &format!("{ctr} images import /images/busybox.tar && {ctr} images ls -q | grep -x docker.io/nestrun-test/busybox:latest"));
    let script = format!("echo ctr-ok; id -u; {FIXTURE} && cd /fx/src && {LIST}");
    let out = run_ok(&c, "ctr run", &format!("{ctr} run --rm docker.io/nestrun-test/busybox:latest t1 sh -c {}", sq(&script)));
    assert_eq!(out.trim(), format!("ctr-ok\n0\n{EXPECTED}"), "ctr run output");
}

/// DinD level 2: the inner dockerd runs the same image `--privileged` (nestrun confines it to
/// the outer container's user namespace), whose dockerd runs busybox (level 3). From the host,
/// level 2's dockerd runs as a uid of the outer container's range.
#[test]
fn sid_dind_level_2() {
    need_engines!("sid_dind_level_2");
    let dir = tempdir("sid-l2");
    let tar = dir.path.join("dind-sid.tar");
    docker(&["save", "-o", tar.to_str().unwrap(), DIND_SID]).ok();
    // root-owned on the host, hence "others" inside: must be readable by them
    std::fs::set_permissions(&tar, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mount = format!("{}:/host-images:ro", dir.path.display());
    let c = start_sid("sid-l2", &["-v", &mount]);
    let (start, count) = range_of(&c);
    run_ok(&c, "docker load of the dind-sid image", &format!("docker load -q -i /host-images/dind-sid.tar && docker image inspect -f ok {DIND_SID}"));
    run_ok(&c, "level-2 docker run --privileged", &format!("docker run -d --name level2 --privileged {DIND_SID}"));
    let w = c.exec(&["docker", "exec", "level2", "dind-wait", "120"]);
    if w.code != 0 {
        let logs = c.sh("docker logs --tail 40 level2 2>&1; docker exec level2 tail -n 40 /var/log/dockerd.log");
        panic!("level-2 dockerd not ready: {w:?}\n{}", logs.stdout);
    }
    let v = run_ok(&c, "level-2 docker version", "docker exec level2 docker version -f '{{.Server.Version}}'");
    assert!(v.starts_with("28."), "level-2 dockerd: {v}");
    let out = run_ok(&c, "level 3", "docker exec level2 docker run --rm busybox echo level3");
    assert_eq!(out.trim(), "level3");
    let l2 = run_ok(&c, "level-2 id", "docker inspect -f '{{.Id}}' level2").trim().to_string();
    let dockerd = pids_in_cgroup_of(&l2).into_iter().find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|s| s.trim() == "dockerd"));
    let dockerd = dockerd.expect("level-2 dockerd seen from the host");
    let uid = proc_uid(dockerd).unwrap() as u64;
    assert!(uid >= start && uid < start + count, "level-2 dockerd runs as host uid {uid}, outside {start}+{count}");
}

/// The inner stack's containers get the emulated /proc and /sys (runc 1.3's mount(2) calls are
/// trapped by the supervisor) with their own limits.
#[test]
fn sid_inner_containers_see_their_own_machine() {
    need_engines!("sid_inner_containers_see_their_own_machine");
    let c = start_sid("sid-machine", &["-m", "1g", "--cpus", "2"]);
    let out = run_ok(
        &c,
        "docker run -m 64m --cpus 0.5",
        "docker run --rm -m 64m --cpus 0.5 busybox sh -c \"grep -c ' - fuse nestrun ' /proc/self/mountinfo; head -n1 /proc/meminfo; head -n1 /sys/devices/system/cpu/online; free | grep Mem:\"",
    );
    let l: Vec<&str> = out.lines().collect();
    assert!(l[0].parse::<u32>().unwrap() >= 8, "emulated files in the inner container: {out}");
    assert!(l[1].ends_with(" 65536 kB"), "{out}");
    assert_eq!(l[2], "0", "{out}");
    assert_eq!(l[3].split_whitespace().nth(1), Some("65536"), "free agrees with /proc/meminfo: {out}");
}
