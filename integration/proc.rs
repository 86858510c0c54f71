//! Emulated /proc and /sys through the real dockerd (issue acceptance): meminfo follows -m,
//! cpuinfo and cpu/online follow --cpuset-cpus and --cpus, uptime starts at the container's
//! start, non-namespaced sysctls are per container, net sysctls belong to the container's netns,
//! and the per-container FUSE server goes away with the container, also when it died first.
use std::time::Duration;

use crate::util::*;

fn run_nested(args: &[&str]) -> Out {
    let mut a = vec!["run", "--rm", "--runtime", "nested"];
    a.extend_from_slice(args);
    docker(&a)
}

/// The kB value of a /proc/meminfo field.
fn meminfo_kb(text: &str, field: &str) -> u64 {
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap_or_else(|| panic!("no {field} in meminfo:\n{text}"));
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("bad meminfo line {line:?}"))
}

fn host_sysctl(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path} on the host: {e}")).trim().to_string()
}

fn processors(cpuinfo: &str) -> usize {
    cpuinfo.lines().filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor")).count()
}

fn host_cpus() -> usize {
    processors(&std::fs::read_to_string("/proc/cpuinfo").unwrap())
}

#[test]
fn proc_meminfo_follows_memory_limit() {
    need_engines!("proc_meminfo_follows_memory_limit");
    let o = run_nested(&["-m", "256m", BUSYBOX, "cat", "/proc/meminfo"]).ok();
    let total = meminfo_kb(&o.stdout, "MemTotal");
    assert!(total.abs_diff(262144) * 100 <= 262144, "MemTotal {total} kB with -m 256m, want 262144 kB +-1%:\n{}", o.stdout);
    let avail = meminfo_kb(&o.stdout, "MemAvailable");
    let free = meminfo_kb(&o.stdout, "MemFree");
    assert!(avail <= total && free <= total, "MemAvailable {avail} / MemFree {free} above MemTotal {total}");
    // the first lines as `head` (a partial read) sees them agree
    let o = run_nested(&["-m", "256m", BUSYBOX, "head", "-n", "3", "/proc/meminfo"]).ok();
    let (t, a) = (meminfo_kb(&o.stdout, "MemTotal"), meminfo_kb(&o.stdout, "MemAvailable"));
    assert!(t.abs_diff(262144) * 100 <= 262144 && a <= t, "head /proc/meminfo: MemTotal {t} MemAvailable {a}:\n{}", o.stdout);
}

#[test]
fn proc_cpuset_one_cpu() {
    need_engines!("proc_cpuset_one_cpu");
    let o = run_nested(&["--cpuset-cpus", "0", BUSYBOX, "sh", "-c", "cat /proc/cpuinfo; echo ONLINE=$(cat /sys/devices/system/cpu/online)"]).ok();
    assert_eq!(processors(&o.stdout), 1, "--cpuset-cpus 0: processor lines in /proc/cpuinfo (host has {}):\n{}", host_cpus(), o.stdout);
    assert!(o.stdout.lines().any(|l| l == "ONLINE=0"), "--cpuset-cpus 0: /sys/devices/system/cpu/online should be \"0\":\n{}", o.stdout);
}

#[test]
fn proc_cpus_quota_one_cpu() {
    need_engines!("proc_cpus_quota_one_cpu");
    if host_cpus() < 2 {
        println!("proc_cpus_quota_one_cpu: host has one CPU, --cpus 1 changes nothing; only checking 1 processor");
    }
    let o = run_nested(&["--cpus", "1", BUSYBOX, "grep", "-c", "^processor", "/proc/cpuinfo"]).ok();
    assert_eq!(o.out(), "1", "--cpus 1: processor lines in /proc/cpuinfo (host has {})", host_cpus());
}

/// procps `free` and glibc's sysconf (what JVMs and `getconf` use) read the emulated files.
/// (coreutils `nproc` uses sched_getaffinity(): the cpuset; busybox `free` uses sysinfo(), which
/// the syscall supervisor answers: integration/supervisor.rs.)
#[test]
fn procps_free_and_glibc_sysconf_see_the_limits() {
    need_engines!("procps_free_and_glibc_sysconf_see_the_limits");
    let img = "nestrun-test/systemd:latest"; // a Debian userland with procps
    if docker(&["image", "inspect", img]).code != 0 {
        panic!("{img} is missing: scripts/build-images.sh builds it");
    }
    let o = run_nested(&["-m", "256m", "--cpus", "1", "--entrypoint", "/bin/sh", img, "-c", "free -k | awk '/^Mem:/{print $2}'; getconf _NPROCESSORS_ONLN"]).ok();
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines, ["262144", "1"], "free -k total and getconf _NPROCESSORS_ONLN with -m 256m --cpus 1:\n{}", o.stdout);
}

#[test]
fn proc_uptime_starts_with_container() {
    need_engines!("proc_uptime_starts_with_container");
    let o = run_nested(&[BUSYBOX, "cat", "/proc/uptime"]).ok();
    let up: f64 = o.stdout.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("bad /proc/uptime {:?}", o.stdout));
    let host: f64 = host_sysctl("/proc/uptime").split_whitespace().next().unwrap().parse().unwrap();
    // The container cannot be older than the `docker run` that made it; under load (the
    // concurrency tests run alongside) that run itself may take longer than 5 s.
    let run = o.elapsed.as_secs_f64();
    assert!(up <= run + 0.5, "uptime in a fresh container is {up} s, but docker run took {run:.1} s (host uptime {host} s)");
    assert!(up < 5.0 || run > 4.5, "uptime in a fresh container is {up} s (host {host} s)");
}

/// Writes by container root to emulated global sysctls read back in that container only: the
/// host's files and a running neighbour's view keep their values.
#[test]
fn sysctl_writes_stay_in_the_container() {
    need_engines!("sysctl_writes_stay_in_the_container");
    const OVERCOMMIT: &str = "/proc/sys/vm/overcommit_memory";
    const PANIC: &str = "/proc/sys/kernel/panic";
    let (host_oc, host_panic) = (host_sysctl(OVERCOMMIT), host_sysctl(PANIC));
    // values that differ from the host's, so a leak would show
    let oc = if host_oc == "1" { "2" } else { "1" };
    let panic = if host_panic == "10" { "11" } else { "10" };
    let neighbour = Ctr::sleeper("sysctl-neighbour");
    let read_both = format!("cat {OVERCOMMIT} {PANIC}");
    let n_before = neighbour.sh(&read_both).ok().stdout;
    assert_eq!(n_before.split_whitespace().collect::<Vec<_>>(), [host_oc.as_str(), host_panic.as_str()], "a fresh container starts with the host's values");
    let c = Ctr::sleeper("sysctl");
    let o = c.sh(&format!("echo {oc} > {OVERCOMMIT} && echo {panic} > {PANIC} && {read_both}")).ok();
    assert_eq!(o.stdout.split_whitespace().collect::<Vec<_>>(), [oc, panic], "container root's writes read back");
    // also from the container's init (not only docker exec)
    let o = run_nested(&[BUSYBOX, "sh", "-c", &format!("echo {oc} > {OVERCOMMIT} && echo {panic} > {PANIC} && {read_both}")]).ok();
    assert_eq!(o.stdout.split_whitespace().collect::<Vec<_>>(), [oc, panic], "writes by the container's init read back");
    assert_eq!((host_sysctl(OVERCOMMIT), host_sysctl(PANIC)), (host_oc.clone(), host_panic.clone()), "the host's sysctls changed");
    assert_eq!(neighbour.sh(&read_both).ok().stdout, n_before, "the neighbour container's sysctls changed");
    assert_eq!(c.sh(&read_both).ok().stdout.split_whitespace().collect::<Vec<_>>(), [oc, panic], "the value is kept by the container's server");
}

/// net.* sysctls are the container's netns's own: container root writes them for real.
fn ip_forward_script() -> &'static str {
    "F=/proc/sys/net/ipv4/ip_forward; echo 0 > $F && a=$(cat $F) && echo 1 > $F && echo $a$(cat $F)"
}

#[test]
fn net_sysctl_in_own_netns_from_init() {
    need_engines!("net_sysctl_in_own_netns_from_init");
    let host = host_sysctl("/proc/sys/net/ipv4/ip_forward");
    let o = run_nested(&[BUSYBOX, "sh", "-c", ip_forward_script()]).ok();
    assert_eq!(o.out(), "01", "ip_forward written 0 then 1 in the container's netns");
    assert_eq!(host_sysctl("/proc/sys/net/ipv4/ip_forward"), host, "the host's ip_forward changed");
}

/// The same from a `docker exec`'d root shell: it should have the init's privileges.
#[test]
fn net_sysctl_in_own_netns_from_exec() {
    need_engines!("net_sysctl_in_own_netns_from_exec");
    let host = host_sysctl("/proc/sys/net/ipv4/ip_forward");
    let c = Ctr::sleeper("netsysctl");
    let o = c.sh(ip_forward_script());
    assert_eq!(o.code, 0, "docker exec as root cannot write its own netns's ip_forward: {o:?}\nexec CapEff: {}", c.sh("grep CapEff /proc/self/status").stdout);
    assert_eq!(o.out(), "01");
    assert_eq!(host_sysctl("/proc/sys/net/ipv4/ip_forward"), host, "the host's ip_forward changed");
}

#[test]
fn non_root_cannot_write_emulated_sysctl() {
    need_engines!("non_root_cannot_write_emulated_sysctl");
    let host = host_sysctl("/proc/sys/vm/overcommit_memory");
    let want = if host == "1" { "2" } else { "1" };
    let script = format!("echo {want} > /proc/sys/vm/overcommit_memory; echo rc=$?; cat /proc/sys/vm/overcommit_memory");
    let o = run_nested(&["--user", "1000", BUSYBOX, "sh", "-c", &script]).ok();
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines, ["rc=1", host.as_str()], "uid 1000 wrote the emulated sysctl (stderr: {})", o.stderr);
    assert!(o.stderr.contains("Permission denied") || o.stderr.contains("Operation not permitted"), "EACCES/EPERM expected: {}", o.stderr);
    // and through docker exec -u
    let c = Ctr::sleeper("sysctl-user");
    let o = docker(&["exec", "-u", "1000", &c.name, "sh", "-c", &script]).ok();
    assert_eq!(o.stdout.lines().collect::<Vec<_>>(), ["rc=1", host.as_str()], "exec -u 1000 wrote the emulated sysctl (stderr: {})", o.stderr);
    assert_eq!(host_sysctl("/proc/sys/vm/overcommit_memory"), host);
}

#[test]
fn rm_stops_the_fuse_server() {
    need_engines!("rm_stops_the_fuse_server");
    let c = Ctr::sleeper("fuse-rm");
    let id = c.id();
    let servers = fuse_server_pids(&id);
    assert_eq!(servers.len(), 1, "one fuse-serve process for {id}: {servers:?}");
    assert!(mounts_containing(&format!("/run/nestrun-mnt/{id}-")).iter().any(|m| m.ends_with("/fuse")), "the FUSE mount of {id} should be seen");
    docker(&["rm", "-f", &c.name]).ok();
    assert!(fuse_server_pids(&id).is_empty(), "fuse-serve of {id} survived docker rm -f: {:?}", fuse_server_pids(&id));
    assert_no_traces(&id);
}

/// A container whose FUSE server died: reads of emulated files fail (no hang), exec and rm work,
/// nothing is left.
#[test]
fn killed_fuse_server_fails_cleanly() {
    need_engines!("killed_fuse_server_fails_cleanly");
    let c = Ctr::sleeper("fuse-kill");
    let id = c.id();
    c.exec(&["cat", "/proc/meminfo"]).ok();
    let servers = fuse_server_pids(&id);
    assert_eq!(servers.len(), 1, "one fuse-serve process for {id}: {servers:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(servers[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(wait_for(10, || fuse_server_pids(&id).is_empty()), "fuse-serve {} did not die", servers[0]);
    let o = c.exec(&["timeout", "10", "cat", "/proc/meminfo"]);
    assert!(o.code != 0, "reading /proc/meminfo without its server should fail: {o:?}");
    assert!(o.code != 124 && o.code != 143 && o.elapsed < Duration::from_secs(9), "reading /proc/meminfo without its server hung ({:?}): {o:?}", o.elapsed);
    let o = c.exec(&["timeout", "10", "cat", "/proc/sys/vm/overcommit_memory"]);
    assert!(o.code != 0 && o.elapsed < Duration::from_secs(9), "an emulated sysctl without its server: {o:?}");
    assert_eq!(c.exec(&["echo", "alive"]).ok().out(), "alive", "docker exec after the FUSE server died");
    let o = docker(&["rm", "-f", &c.name]).ok();
    assert!(o.elapsed < Duration::from_secs(30), "docker rm -f took {:?}", o.elapsed);
    assert_no_traces(&id);
}

const URING_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// Puts the host's `fuse.enable_uring` back when dropped.
struct RestoreParam(String);

impl Drop for RestoreParam {
    fn drop(&mut self) {
        let _ = std::fs::write(URING_PARAM, &self.0);
    }
}

/// With the host's `fuse.enable_uring` on (a host setting, see the README) the FUSE server
/// serves over io_uring: one worker per CPU, the same files and sysctls, and a dead server
/// still fails reads at once and leaves nothing behind. The parameter is on only while the
/// container starts: a connection keeps the mode it started with.
#[test]
fn emulated_files_over_io_uring() {
    need_engines!("emulated_files_over_io_uring");
    let Ok(old) = std::fs::read_to_string(URING_PARAM) else {
        return crate::skip::skip("host", "emulated_files_over_io_uring", "this kernel has no fuse.enable_uring");
    };
    let restore = RestoreParam(old.trim().to_string());
    std::fs::write(URING_PARAM, "Y").unwrap();
    let c = Ctr::start("fuse-uring", &["-m", "256m", BUSYBOX, "sleep", "100000"]);
    drop(restore);
    let id = c.id();
    let servers = fuse_server_pids(&id);
    assert_eq!(servers.len(), 1, "one fuse-serve process for {id}: {servers:?}");
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", servers[0]))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect();
    // One worker per online CPU (up to 16).
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let ncpu: usize = online
        .trim()
        .split(',')
        .map(|r| r.split_once('-').map_or(1, |(a, b)| b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1))
        .sum();
    let workers = threads.iter().filter(|t| t.starts_with("uring")).count();
    assert_eq!(workers, ncpu.min(16), "io_uring workers of fuse-serve (threads {threads:?}) for {ncpu} online CPUs");
    let o = c.exec(&["cat", "/proc/meminfo"]).ok();
    assert!(o.stdout.starts_with("MemTotal:         262144 kB\n"), "meminfo over io_uring with -m 256m:\n{}", o.stdout);
    let o = c.sh("echo 1 > /proc/sys/vm/overcommit_memory && cat /proc/sys/vm/overcommit_memory; head -c 20 /proc/cpuinfo >/dev/null && echo ok").ok();
    assert_eq!(o.stdout, "1\nok\n", "sysctl write and partial read over io_uring");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(servers[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(wait_for(10, || fuse_server_pids(&id).is_empty()), "fuse-serve {} did not die", servers[0]);
    let o = c.exec(&["timeout", "10", "cat", "/proc/meminfo"]);
    assert!(o.code != 0 && o.elapsed < Duration::from_secs(9), "reading /proc/meminfo without its io_uring server: {o:?}");
    docker(&["rm", "-f", &c.name]).ok();
    assert_no_traces(&id);
}
