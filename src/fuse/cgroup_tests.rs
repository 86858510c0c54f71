//! Tests of the cgroup parsers and directory resolution.
use super::*;

const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

#[test]
fn mountinfo_hybrid_and_v2() {
    let m = parse_mountinfo(HYBRID);
    assert_eq!(m.v1.len(), 4);
    assert_eq!(m.v1[0].controllers, vec!["cpu"]);
    assert_eq!(m.v1[3].controllers, Vec::<String>::new(), "name=systemd is no controller");
    assert_eq!(m.v2, Some((PathBuf::from("/sys/fs/cgroup/unified"), "/".to_string())));
    let co = parse_mountinfo("32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n");
    assert_eq!(co.v1[0].controllers, vec!["cpu", "cpuacct"]);
    let v2 = parse_mountinfo("30 23 0:26 /init.scope /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n");
    assert_eq!(v2.v2, Some((PathBuf::from("/sys/fs/cgroup"), "/init.scope".to_string())));
    assert!(v2.v1.is_empty());
}

#[test]
fn dir_resolution_and_gone() {
    let m = parse_mountinfo("1 0 0:1 / /tmp rw - cgroup2 cgroup2 rw\n");
    let cg = Cgroup::with_mounts("/", m.clone());
    assert_eq!(cg.dir("memory").unwrap().unwrap().0, PathBuf::from("/tmp"));
    let err = Cgroup::with_mounts("/nestrun-no-such-cgroup", m).dir("memory").unwrap_err();
    assert!(err.to_string().contains("/tmp/nestrun-no-such-cgroup"), "{err}");
    assert!(Cgroup::with_mounts("/x", Mounts::default()).dir("memory").unwrap().is_none());
    // hybrid: pids not bound to v1, cgroup absent from the cgroup2 mount -> unavailable
    let hybrid = parse_mountinfo("1 0 0:1 / /tmp/nestrun-no-v1 rw - cgroup cgroup rw,memory\n2 0 0:2 / /tmp rw - cgroup2 cgroup2 rw\n");
    assert!(Cgroup::with_mounts("/nestrun-no-such-cgroup", hybrid).dir("pids").unwrap().is_none());
}

#[test]
fn limits() {
    assert_eq!(parse_limit("max\n").unwrap(), None);
    assert_eq!(parse_limit("-1\n").unwrap(), None);
    assert_eq!(parse_limit("9223372036854771712\n").unwrap(), None);
    assert_eq!(parse_limit("268435456\n").unwrap(), Some(268435456));
    assert!(parse_limit("abc").unwrap_err().to_string().contains("abc"));
    assert_eq!(parse_cpu_max("max 100000\n").unwrap(), None);
    assert_eq!(parse_cpu_max("150000 100000\n").unwrap(), Some(1.5));
    assert!(parse_cpu_max("x 1").is_err());
}

#[test]
fn memory_stat_v1_captured() {
    let text = include_str!("testdata/memory.stat.v1");
    let s = parse_memory_stat(text, false);
    assert_eq!(s.cache, 564809728);
    assert_eq!(s.shmem, 9084928);
    assert_eq!(s.mapped, 11431936);
    assert_eq!(s.active_file, 224137216);
    assert_eq!(s.inactive_anon, 3956736);
    assert_eq!(s.unevictable, 12722176);
    assert_eq!(s.slab, 0);
    assert_eq!(v1_hierarchical_limit(text, "hierarchical_memory_limit"), None);
    assert_eq!(v1_hierarchical_limit("hierarchical_memory_limit 268435456\n", "hierarchical_memory_limit"), Some(268435456));
}

#[test]
fn memory_stat_v2_sample() {
    let s = parse_memory_stat(include_str!("testdata/memory.stat.v2"), true);
    assert_eq!(s.cache, 52428800);
    assert_eq!(s.shmem, 4194304);
    assert_eq!(s.mapped, 20971520);
    assert_eq!(s.dirty, 1048576);
    assert_eq!(s.active_anon, 100663296);
    assert_eq!(s.inactive_file, 31457280);
    assert_eq!(s.slab, 6291456);
    assert_eq!(s.slab_reclaimable, 4194304);
    assert_eq!(s.slab_unreclaimable, 2097152);
}

#[test]
fn cpu_usage_parsers() {
    let per = parse_cpuacct_usage_all("cpu user system\n0 57257632592 16797353992\n1 67576801553 22579438007\n").unwrap();
    assert_eq!(per, vec![(57257632592, 16797353992), (67576801553, 22579438007)]);
    assert!(parse_cpuacct_usage_all("cpu user system\n0 1\n").is_err());
    // Found by the fuzzer (src/fuzz.rs): a huge cpu id overflowed `cpu + 1` or made resize()
    // allocate terabytes (an abort, not even a panic).
    for id in ["18446744073709551615", "99999999999", "65536"] {
        assert!(parse_cpuacct_usage_all(&format!("cpu user system\n{id} 1 2\n")).is_err(), "{id}");
    }
    assert_eq!(parse_cpuacct_usage_all("cpu user system\n65535 1 2\n").unwrap().len(), 65536);
    // Found by the fuzzer (src/fuzz.rs): usec * 1000 overflowed (a panic in debug builds).
    assert_eq!(parse_cpu_stat_v2("user_usec 18446744073709551615\nsystem_usec 18446744073709551\n"), (u64::MAX, 18446744073709551000));
    let (u, s) = parse_cpu_stat_v2("usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\nnr_periods 0\n");
    assert_eq!((u, s), (2_000_000, 1_000_000));
}
