//! The syscall supervisor (issue 14, first slice): `sysinfo(2)` in a system container answers
//! from the container's cgroup, also for `docker exec`'d processes and for the containers an
//! inner dockerd starts (their own limits); the `io.nestrun.supervisor=off` annotation gives the
//! container's programs back the seccomp listener the kernel allows once per filter chain.
//! A static probe (integration/supervisor.c) prints what sysinfo answers.
use std::collections::HashMap;

use crate::util::*;

/// integration/supervisor.c built static as `sv` into a fresh directory (bound at /t).
pub fn probe_dir() -> TempDir {
    let dir = tempdir("sv");
    build_static("supervisor.c", &dir.path, "sv");
    dir
}

/// The `key=value` fields of the probe's `info` line.
pub fn fields(out: &str) -> HashMap<String, u64> {
    let line = out.lines().find(|l| l.starts_with("totalram=")).unwrap_or_else(|| panic!("no sysinfo line in {out:?}"));
    line.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.parse().unwrap_or_else(|_| panic!("bad {k}={v}")))).collect()
}

fn meminfo_kb(text: &str, field: &str) -> u64 {
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap_or_else(|| panic!("no {field} in {text}"));
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap()
}

/// busybox `free`'s `Mem:` total (kB), by column: the header's `total` ends where the number
/// does (an inner container's `used` can run into it: see `inner_containers_see_their_own_limit`).
fn free_total(out: &str) -> u64 {
    let end = out.lines().filter(|l| l.contains(" used ")).find_map(|l| l.find("total")).unwrap_or_else(|| panic!("no header in {out:?}")) + "total".len();
    let line = out.lines().find(|l| l.starts_with("Mem:")).unwrap_or_else(|| panic!("no Mem: line in {out:?}"));
    line.get(4..end).and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("bad Mem: line in {out:?}"))
}

fn host_totalram() -> u64 {
    meminfo_kb(&std::fs::read_to_string("/proc/meminfo").unwrap(), "MemTotal") * 1024
}

/// `-m 256m`: sysinfo says 256 MiB and busybox `free` (which reads it) agrees with the emulated
/// /proc/meminfo; the uptime is the container's. runc beside: the host's figures.
#[test]
fn sysinfo_follows_the_memory_limit_and_agrees_with_proc() {
    need_engines!("sysinfo_follows_the_memory_limit_and_agrees_with_proc");
    let dir = probe_dir();
    let vol = format!("{}:/t:ro", dir.path.display());
    let script = "/t/sv info; free; cat /proc/meminfo";
    let o = docker(&["run", "--rm", "--runtime", "nested", "-m", "256m", "-v", &vol, BUSYBOX, "sh", "-c", script]).ok();
    let f = fields(&o.stdout);
    assert_eq!((f["totalram"], f["mem_unit"]), (256 << 20, 1), "{}", o.stdout);
    assert_eq!(free_total(&o.stdout), 262144, "busybox free total:\n{}", o.stdout);
    assert_eq!(meminfo_kb(&o.stdout, "MemTotal"), 262144);
    // Free memory read a moment apart: close, not equal.
    let (free_si, free_mi) = (f["freeram"] / 1024, meminfo_kb(&o.stdout, "MemFree"));
    assert!(free_si.abs_diff(free_mi) < 16 << 10, "sysinfo freeram {free_si} kB vs MemFree {free_mi} kB");
    assert!(f["freeram"] <= f["totalram"] && f["procs"] >= 1 && f["procs"] < 50, "{f:?}");
    assert!(f["uptime"] as f64 <= o.elapsed.as_secs_f64() + 1.0, "uptime {} s in a fresh container (docker run took {:?})", f["uptime"], o.elapsed);
    let runc = docker(&["run", "--rm", "--runtime", "runc", "-m", "256m", "-v", &vol, BUSYBOX, "/t/sv", "info"]).ok();
    assert_eq!(fields(&runc.stdout)["totalram"], host_totalram(), "runc shows the host's memory");
}

/// glibc's `sysconf(_SC_PHYS_PAGES)` (what `getconf`, Python's `os.sysconf` and many runtimes
/// size themselves from) is sysinfo's totalram: the container's limit.
#[test]
fn glibc_phys_pages_follow_the_memory_limit() {
    need_engines!("glibc_phys_pages_follow_the_memory_limit");
    let img = "nestrun-test/systemd:latest"; // a Debian userland (glibc, getconf)
    let script = "getconf _PHYS_PAGES; getconf PAGESIZE; getconf _AVPHYS_PAGES";
    let o = docker(&["run", "--rm", "--runtime", "nested", "-m", "256m", "--entrypoint", "/bin/sh", img, "-c", script]).ok();
    let v: Vec<u64> = o.stdout.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(v[0] * v[1], 256 << 20, "getconf _PHYS_PAGES x PAGESIZE with -m 256m: {}", o.stdout);
    assert!(v[2] <= v[0], "AVPHYS_PAGES {} above PHYS_PAGES {}", v[2], v[0]);
}

/// `docker exec`'d processes get their own filter (libcontainer loads it again for each), whose
/// notify fd reaches the same supervisor; fds of finished execs are not kept.
#[test]
fn exec_d_processes_are_answered_and_their_fds_released() {
    need_engines!("exec_d_processes_are_answered_and_their_fds_released");
    let dir = probe_dir();
    let vol = format!("{}:/t:ro", dir.path.display());
    let c = Ctr::start("sv-exec", &["-m", "128m", "-v", &vol, BUSYBOX, "sleep", "100000"]);
    for _ in 0..5 {
        let o = c.exec(&["/t/sv", "info"]).ok();
        assert_eq!(fields(&o.stdout)["totalram"], 128 << 20, "{}", o.stdout);
    }
    assert_eq!(free_total(&c.exec(&["free"]).ok().stdout), 131072);
    let server = fuse_server_pids(&c.id());
    assert_eq!(server.len(), 1, "one fuse-serve: {server:?}");
    let held = || {
        std::fs::read_dir(format!("/proc/{}/fd", server[0])).unwrap().flatten().filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:seccomp notify")).count()
    };
    // The init's, and none of the finished execs' (their filters have no task left).
    assert!(wait_for(5, || held() == 1), "notify fds held by the supervisor: {}", held());
}

/// An inner `docker run -m 64m` (the inner runc's processes inherit the container's filter)
/// sees 64 MiB in sysinfo; one without -m the outer container's 1 GiB; each its own uptime.
/// (Its /proc: integration/nestedproc.rs.)
#[test]
fn inner_containers_see_their_own_limit() {
    need_engines!("inner_containers_see_their_own_limit");
    let c = Ctr::start("sv-inner", &["-m", "1g", DIND]);
    wait_dind(&c, 120);
    assert_eq!(free_total(&c.exec(&["free"]).ok().stdout), 1 << 20, "the outer container");
    let o = c.exec(&["docker", "run", "--rm", "-m", "64m", "busybox", "sh", "-c", "free; cat /proc/uptime; uptime"]).ok();
    assert_eq!(free_total(&o.stdout), 65536, "inner -m 64m:\n{}", o.stdout);
    assert!(o.stdout.contains(" up 0 min,"), "the inner container's own uptime:\n{}", o.stdout);
    let o = c.exec(&["docker", "run", "--rm", "busybox", "free"]).ok();
    assert_eq!(free_total(&o.stdout), 1 << 20, "inner without -m: the outer container's limit:\n{}", o.stdout);
}

/// A program that installs a seccomp listener of its own (LXD's intercepts, crun's notify
/// plugins, Sysbox) gets EBUSY with the supervisor on, and works with it off
/// (`io.nestrun.supervisor=off`, passed as a containerd annotation: docker 20.10 passes none).
#[test]
fn own_seccomp_listener_needs_the_supervisor_off() {
    need_engines!("own_seccomp_listener_needs_the_supervisor_off");
    let dir = probe_dir();
    let bind = format!("type=bind,src={},dst=/t,options=rbind:ro", dir.path.display());
    let script = "/t/sv listener; /t/sv info";
    let runc = ctr_run_with("runc", &unique("sv-runc"), &["--mount", &bind], script).ok();
    assert!(runc.stdout.starts_with("listener ok\n"), "runc: {runc:?}");
    let id = unique("sv-on");
    let on = ctr_run_with(&nestrun_bin(), &id, &["--mount", &bind], script).ok();
    assert!(on.stdout.starts_with("listener EBUSY (Device or resource busy)\n"), "supervisor on: {on:?}");
    assert_no_traces(&id);
    let id = unique("sv-off");
    let off = ctr_run_with(&nestrun_bin(), &id, &["--mount", &bind, "--annotation", "io.nestrun.supervisor=off"], script).ok();
    assert!(off.stdout.starts_with("listener ok\n"), "supervisor off: {off:?}");
    assert_eq!(fields(&off.stdout)["totalram"], host_totalram(), "off: sysinfo is the kernel's");
    assert_no_traces(&id);
    let bad = ctr_run_with(&nestrun_bin(), &unique("sv-bad"), &["--mount", &bind, "--annotation", "io.nestrun.supervisor=no"], script);
    assert!(bad.code != 0 && bad.stderr.contains("io.nestrun.supervisor=\"no\": expected on or off"), "{bad:?}");
}

/// A 32-bit (i386) program's sysinfo is answered too, in the kernel's compat layout (its
/// `long`s are 32 bits): the same limit as a 64-bit one sees.
#[cfg(target_arch = "x86_64")]
#[test]
fn thirty_two_bit_callers_see_the_limit_too() {
    need_engines!("thirty_two_bit_callers_see_the_limit_too");
    let dir = probe_dir();
    build_static_with("supervisor.c", &dir.path, "sv32", &["-m32"]);
    let vol = format!("{}:/t:ro", dir.path.display());
    let o = docker(&["run", "--rm", "--runtime", "nested", "-m", "256m", "-v", &vol, BUSYBOX, "sh", "-c", "/t/sv32 info; /t/sv info"]).ok();
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{o:?}");
    assert_eq!(fields(lines[0])["totalram"], 256 << 20, "32-bit: {o:?}");
    assert_eq!(fields(lines[0])["totalram"], fields(lines[1])["totalram"], "{o:?}");
}
