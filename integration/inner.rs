//! Inner containers of a nested DinD (issue "System containers"): inner `docker run
//! --privileged`, port publishing and `--pids-limit`.
//!
//! They use `nestrun-test/dind-trixie` (Debian trixie's docker 26, containerd 1.7, runc 1.1):
//! docker >= 23 gives an inner `--privileged` container the capabilities its runtime holds,
//! where docker 20.10 (`nestrun-test/dind`, the host's bookworm packages) asks for every
//! capability the kernel knows, which fails on hosts whose bounding set lacks one (SECURITY.md
//! F2; the last test here records that). The outer containers never get `--privileged`.
use crate::util::*;

pub const DIND_TRIXIE: &str = "nestrun-test/dind-trixie:latest";

/// A nested trixie DinD whose inner dockerd answers (fails when the image is missing).
pub fn start_trixie(test: &str, extra: &[&str]) -> Ctr {
    start_debian_dind(test, DIND_TRIXIE, extra)
}

/// The hex value of a `Cap...:` line of a /proc/<pid>/status text.
fn cap_line(status: &str, name: &str) -> String {
    status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_else(|| panic!("no {name} in {status}"))
}

/// Inner `docker run --privileged` in a nested container that has no --privileged itself: it
/// gets every capability the outer container has, mounts, makes namespaces and veth pairs; and it
/// stays confined: its processes are the outer container's range on the host, it sees no host
/// block device and cannot make one, and a global sysctl it writes stays unchanged on the host.
#[test]
fn inner_privileged_runs_and_stays_confined() {
    need_engines!("inner_privileged_runs_and_stays_confined");
    let c = start_trixie("inner-priv", &[]);
    let (start, count) = range_of(&c);
    let outer = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap();
    let host = std::fs::read_to_string("/proc/self/status").unwrap();

    c.exec(&["docker", "run", "-d", "--privileged", "--name", "priv", "busybox", "sleep", "100000"]).ok();
    let inner = c.exec(&["docker", "exec", "priv", "cat", "/proc/self/status"]).ok().stdout;
    assert_eq!(cap_line(&inner, "CapEff:"), cap_line(&outer, "CapEff:"), "inner --privileged has the outer container's capabilities");
    assert_eq!(cap_line(&inner, "CapEff:"), cap_line(&host, "CapBnd:"), "... which are all the runtime holds");

    let o = c
        .exec(&[
            "docker", "exec", "priv", "sh", "-c",
            "mkdir /m && mount -t tmpfs inner-tmpfs /m && grep -c ' /m .* inner-tmpfs ' /proc/self/mountinfo && \
             unshare -n sh -c 'ip link add v0 type veth && ip -o link show v0' && echo done",
        ])
        .ok();
    assert!(o.stdout.starts_with("1\n") && o.stdout.contains(": v0@") && o.stdout.ends_with("done\n"), "tmpfs mount, netns, veth: {o:?}");

    // From the host: the inner privileged container is the outer container's range.
    let id = c.exec(&["docker", "inspect", "-f", "{{.Id}}", "priv"]).ok().out().to_string();
    let pids = pids_in_cgroup_of(&id);
    let sleep = *pids.iter().find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep")).expect("inner sleep seen from the host");
    assert_eq!(uid_map(sleep), (0, start, count), "the inner --privileged container is in the outer container's user namespace");
    let uid = proc_uid(sleep).unwrap() as u64;
    assert!(uid >= start && uid < start + count, "inner --privileged root is host uid {uid}, outside {start}+{count}");

    // No host block device: not listed, and mknod of the host's root device is refused.
    let root_dev = std::fs::metadata("/").map(|m| std::os::unix::fs::MetadataExt::dev(&m)).unwrap();
    let (major, minor) = (nix::sys::stat::major(root_dev), nix::sys::stat::minor(root_dev));
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).unwrap_or_default();
    let devname = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME=")).unwrap_or("vda").to_string();
    let o = c.exec(&["docker", "exec", "priv", "sh", "-c", &format!("ls /dev; mknod /tmp/rootdev b {major} {minor} && head -c 512 /tmp/rootdev | wc -c; echo end")]).ok();
    assert!(!o.stdout.lines().any(|l| l.trim() == devname), "host block device {devname} visible in the inner --privileged container: {o:?}");
    assert!(!o.stdout.contains("512\n"), "inner --privileged read the host's root block device {major}:{minor}: {o:?}");

    // A global sysctl: written from inside, unchanged on the host. The inner container's /proc
    // has the emulated files (the supervisor mounted it, issue 14): the write lands in the
    // container's emulated value, which its readers then see.
    let knob = "/proc/sys/vm/overcommit_memory";
    let before = std::fs::read_to_string(knob).unwrap().trim().to_string();
    let other = if before == "1" { "0" } else { "1" };
    let o = c.exec(&["docker", "exec", "priv", "sh", "-c", &format!("echo {other} > {knob} && cat {knob} && grep -c ' {knob} .* - fuse nestrun ' /proc/self/mountinfo")]);
    let after = std::fs::read_to_string(knob).unwrap().trim().to_string();
    if after != before {
        std::fs::write(knob, &before).unwrap();
    }
    assert_eq!(after, before, "inner --privileged changed the host's {knob}: {o:?}");
    assert_eq!(o.code, 0, "the write goes to the emulated value: {o:?}");
    assert_eq!(o.stdout.lines().collect::<Vec<_>>(), [other, "1"], "read back from the emulated file: {o:?}");
}

/// docker 20.10 (the host's bookworm packages, nestrun-test/dind) asks an inner `--privileged`
/// for every capability up to cap_last_cap: it works exactly when the runtime's bounding set has
/// all of them (this VM lacks CAP_SYS_RESOURCE: README "Known gaps", SECURITY.md F2).
#[test]
fn inner_privileged_with_docker_20_10_needs_every_capability() {
    need_engines!("inner_privileged_with_docker_20_10_needs_every_capability");
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").unwrap().trim().parse().unwrap();
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = u64::from_str_radix(&cap_line(&host, "CapBnd:"), 16).unwrap();
    let missing: Vec<&str> = (0..=last).filter(|b| bnd & (1 << b) == 0).map(|b| nestrun_cap_name(b)).collect();
    let c = start_dind("inner-priv-2010", 120);
    let o = c.exec(&["docker", "run", "--rm", "--privileged", "busybox", "true"]);
    println!("bounding set lacks {missing:?}; docker 20.10 inner --privileged: exit {} {}", o.code, o.stderr.trim());
    if missing.is_empty() {
        assert_eq!(o.code, 0, "every capability is there: inner --privileged should work: {o:?}");
    } else {
        assert!(o.code != 0 && o.stderr.contains("apply caps"), "docker 20.10 asks for {missing:?}, which the runtime lacks: {o:?}");
    }
}

fn nestrun_cap_name(bit: u32) -> &'static str {
    const N: &[&str] = &[
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT",
        "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE",
        "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
        "PERFMON", "BPF", "CHECKPOINT_RESTORE",
    ];
    N.get(bit as usize).copied().unwrap_or("?")
}

/// Inner `docker run -d -p 8080:80` (busybox httpd) answers from the nested container's own
/// network namespace, on 127.0.0.1 (docker-proxy) and on its eth0 address (the inner
/// dockerd's DNAT rule, whose counter must move). `flavour`: the iptables backend.
fn port_publishing(flavour: &str, version_word: &str) {
    let c = start_trixie(&format!("inner-port-{flavour}"), &["-e", &format!("DIND_IPTABLES={flavour}")]);
    let v = c.exec(&["iptables", "-V"]).ok();
    assert!(v.stdout.contains(version_word), "iptables backend: {v:?}");
    assert_port_published(&c);
}

/// The checks of port_publishing in a running nested DinD `c` (its inner dockerd answers).
pub fn assert_port_published(c: &Ctr) {
    c.exec(&["docker", "run", "-d", "--name", "web", "-p", "8080:80", "busybox", "sh", "-c", "mkdir /www && echo hello-from-inner > /www/index.html && exec httpd -f -p 80 -h /www"]).ok();
    let get = |host: &str| c.exec(&["busybox", "wget", "-qO-", "-T", "5", &format!("http://{host}:8080/")]);
    assert!(wait_for(30, || get("127.0.0.1").out() == "hello-from-inner"), "127.0.0.1:8080: {:?}", get("127.0.0.1"));
    let ip = c.sh("ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1").ok().out().to_string();
    assert!(!ip.is_empty(), "no eth0 address");
    assert_eq!(get(&ip).ok().out(), "hello-from-inner", "{ip}:8080");
    let nat = c.exec(&["iptables", "-t", "nat", "-L", "DOCKER", "-v", "-n", "-x"]).ok();
    let rule = nat.stdout.lines().find(|l| l.contains("DNAT") && l.contains("dpt:8080")).unwrap_or_else(|| panic!("no DNAT rule for 8080: {nat:?}"));
    let pkts: u64 = rule.split_whitespace().next().unwrap().parse().unwrap();
    assert!(pkts > 0, "the request to {ip}:8080 went through the DNAT rule: {rule}");
}

#[test]
fn inner_port_publishing_iptables_legacy() {
    need_engines!("inner_port_publishing_iptables_legacy");
    port_publishing("legacy", "(legacy)");
}

#[test]
fn inner_port_publishing_iptables_nft() {
    need_engines!("inner_port_publishing_iptables_nft");
    port_publishing("nft", "(nf_tables)");
}

/// Inner `docker run --pids-limit 20`: a shell cannot fork past 20 tasks; without the limit the
/// same script starts all 40.
#[test]
fn inner_pids_limit_is_enforced() {
    need_engines!("inner_pids_limit_is_enforced");
    let c = start_trixie("inner-pids", &[]);
    // no fork after the burst: `read` is a shell builtin
    let script = "d=/sys/fs/cgroup/pids; [ -e $d/pids.max ] || d=/sys/fs/cgroup; \
                  (for i in $(seq 1 40); do sleep 30 & done) 2>/tmp/e; \
                  read cur < $d/pids.current; read max < $d/pids.max; err=; read err < /tmp/e; echo \"$cur|$max|$err\"";
    let run = |limit: &[&str]| {
        let mut a = vec!["docker", "run", "--rm"];
        a.extend_from_slice(limit);
        a.extend_from_slice(&["busybox", "sh", "-c", script]);
        let o = c.exec(&a).ok();
        let f: Vec<String> = o.out().splitn(3, '|').map(String::from).collect();
        assert_eq!(f.len(), 3, "{o:?}");
        (f[0].parse::<u64>().unwrap(), f[1].clone(), f[2].clone())
    };
    let (cur, max, err) = run(&["--pids-limit", "20"]);
    println!("--pids-limit 20: pids.current {cur}, pids.max {max}, {err:?}");
    assert_eq!(max, "20");
    assert!(cur <= 20 && err.contains("can't fork"), "forks stop at the limit: current {cur}, error {err:?}");
    let (cur, max, err) = run(&[]);
    println!("no limit: pids.current {cur}, pids.max {max}, {err:?}");
    assert!(cur > 40 && err.is_empty(), "without the limit all 40 start: current {cur}, error {err:?}");
}
