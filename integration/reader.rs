//! Values follow the reader (issue 14): the emulated /proc and /sys files answer each reader from
//! its own cgroups. Inside one container (-m 256m), processes move themselves into child cgroups
//! with limits of their own, as an inner runtime places an inner container's processes (an inner
//! `docker run -m 64m --cpus 0.5`), and read the same FUSE files as the container's own processes,
//! in turns: each sees its own MemTotal and cpus (depth two included), the others the
//! container's. (The container runs on the private containerd with the nestrun under test.)
//! The readers use read(2): busybox `cat` (sendfile) reads through the page cache, where a
//! shorter text read by another view shrinks the file's cached size (see src/fuse/server.rs):
//! not asserted here.
use crate::util::*;

/// In the container: `inner` (64 MiB, half a cpu), below it `deeper` (32 MiB, no quota of its
/// own) and `free` (no limits), made in every hierarchy as runc makes them (v1 cpuset: the
/// parent's cpus and mems first); then three rounds of reads by the container's shell and by
/// subshells that entered each cgroup.
const SCRIPT: &str = r#"
cg=/sys/fs/cgroup
make() {
  for h in $cg/*; do
    mkdir "$h/$1" 2>/dev/null || continue
    if [ -f "$h/$1/cpuset.cpus" ]; then
      cat "$h/${1%/*}/cpuset.cpus" >"$h/$1/cpuset.cpus"
      cat "$h/${1%/*}/cpuset.mems" >"$h/$1/cpuset.mems"
    fi
  done
}
enter() {
  read -r pid _ </proc/self/stat
  for h in $cg/*; do [ -d "$h/$1" ] && echo "$pid" >"$h/$1/cgroup.procs"; done
  grep -q "memory:/$1\$" /proc/self/cgroup || echo "NOT MOVED $1"
}
show() {
  echo "$1 mem=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo) cpuinfo=$(grep -c ^processor /proc/cpuinfo) online=$(head -n 1 /sys/devices/system/cpu/online) stat=$(grep -c '^cpu[0-9]' /proc/stat)"
}
make inner && make inner/deeper && make inner/free
echo 67108864 >$cg/memory/inner/memory.limit_in_bytes
echo 50000 >$cg/cpu/inner/cpu.cfs_quota_us
echo 33554432 >$cg/memory/inner/deeper/memory.limit_in_bytes
for round in 1 2 3; do
  show outer
  (enter inner && show inner)
  (enter inner/deeper && show deeper)
  (enter inner/free && show free)
done
"#;

/// `name mem=.. cpuinfo=.. online=.. stat=..` lines of one reader.
fn lines_of<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.split(' ').next() == Some(name)).collect()
}

#[test]
fn readers_in_inner_cgroups_see_their_own_limits() {
    need_engines!("readers_in_inner_cgroups_see_their_own_limits");
    let host_cpus = std::fs::read_to_string("/proc/cpuinfo").unwrap().lines().filter(|l| l.starts_with("processor")).count();
    let host_online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let o = ctr_run_with(&nestrun_bin(), &unique("reader"), &["--memory-limit", "268435456"], SCRIPT).ok();
    assert!(!o.stdout.contains("NOT MOVED"), "a reader could not enter its cgroup:\n{o:?}");
    let all = format!("cpuinfo={host_cpus} online={} stat={host_cpus}", host_online.trim());
    let one = if host_cpus > 1 { "cpuinfo=1 online=0 stat=1".to_string() } else { all.clone() };
    for (name, want) in [("outer", format!("mem=262144 {all}")), ("inner", format!("mem=65536 {one}")), ("deeper", format!("mem=32768 {one}")), ("free", format!("mem=65536 {one}"))] {
        let got = lines_of(&o.stdout, name);
        assert_eq!(got.len(), 3, "three rounds of {name}:\n{}", o.stdout);
        for l in got {
            assert_eq!(l, format!("{name} {want}"), "what {name} reads:\n{}", o.stdout);
        }
    }
}
