//! The choice rules and cache bounds (pure), and views of real processes in real cgroups
//! (root only).
use super::*;
use crate::fuse::tests::{can_mount, TestCgroup};

#[test]
fn the_deepest_cgroup_with_limits_of_its_own() {
    let limited = ["/docker/a/docker/b", "/docker/a/docker", "/docker/a/x"];
    let own = |p: &str| limited.contains(&p);
    assert_eq!(deepest("/docker/a/docker/b/sub", "/docker/a", own), "/docker/a/docker/b", "an unlimited child of an inner container");
    assert_eq!(deepest("/docker/a/docker/b", "/docker/a", own), "/docker/a/docker/b");
    assert_eq!(deepest("/docker/a/docker/c", "/docker/a", own), "/docker/a/docker", "the nearest limited ancestor");
    assert_eq!(deepest("/docker/a/system.slice/cron.service", "/docker/a", own), "/docker/a", "no limit below: the container's");
    assert_eq!(deepest("/docker/a", "/docker/a", |_| panic!("the container itself is not looked at")), "/docker/a");
    assert_eq!(deepest("/docker/ab/docker/b", "/docker/a", |_| true), "/docker/a", "outside the container: its own");
    assert_eq!(deepest("/", "/docker/a", |_| true), "/docker/a");
    assert_eq!(deepest("/docker/a/../x", "/docker/a", |_| true), "/docker/a");
    // Every cgroup looked at is below the container, deepest first, up to a hit.
    let mut seen = Vec::new();
    deepest("/docker/a/b/c", "/docker/a/", |p| {
        seen.push(p.to_string());
        false
    });
    assert_eq!(seen, ["/docker/a/b/c", "/docker/a/b"]);
}

#[test]
fn a_cpuset_is_narrower_when_it_lacks_a_parents_cpu() {
    assert!(narrower(&[0], &[0, 1]));
    assert!(narrower(&[2, 3], &[0, 1, 2, 3]));
    assert!(!narrower(&[0, 1], &[0, 1]));
    assert!(!narrower(&[], &[0, 1]), "an empty (v1: unset) cpuset");
    assert!(!narrower(&[0, 1], &[]), "no parent list known");
}

#[test]
fn timed_maps_expire_and_stay_bounded() {
    let mut m = Timed::new(Duration::from_millis(30), 3);
    m.insert(1, "a");
    assert_eq!(m.get(&1), Some("a"));
    assert_eq!(m.get(&2), None);
    m.insert(2, "b");
    m.insert(3, "c");
    m.insert(3, "c2");
    assert_eq!(m.len(), 3, "a present key is replaced, not added");
    m.insert(4, "d");
    assert_eq!((m.len(), m.get(&4), m.get(&1)), (1, Some("d"), None), "full of fresh entries: emptied");
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(m.get(&4), None, "expired");
    assert_eq!(m.get_stale(&4).map(|(age, v)| (age >= Duration::from_millis(30), v)), Some((true, "d")));
    m.insert(5, "e");
    m.insert(6, "f");
    m.insert(7, "g");
    assert_eq!(m.len(), 3, "the expired entry went first");
    assert_eq!((m.get(&5), m.get(&6), m.get(&7)), (Some("e"), Some("f"), Some("g")));
}

/// A `sleep 30` (through `prefix`, e.g. `unshare --pid --fork`), killed on drop.
struct Sleeper(std::process::Child);

impl Sleeper {
    fn new(prefix: &[&str]) -> Self {
        let mut args: Vec<&str> = prefix.to_vec();
        args.extend(["sleep", "30"]);
        Sleeper(std::process::Command::new(args[0]).args(&args[1..]).spawn().expect(args[0]))
    }

    /// The sleep: the child itself, or (after a prefix) its only child.
    fn pid(&self, prefixed: bool) -> u32 {
        if !prefixed {
            return self.0.id();
        }
        for _ in 0..100 {
            let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.0.id())).unwrap_or_default();
            if let Some(p) = kids.split_whitespace().next() {
                return p.parse().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no child of {}", self.0.id());
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn views_follow_the_readers_cgroups() {
    if !can_mount() {
        return;
    }
    let mounts = cgroup::parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
    // v1 cpuset: a cgroup takes processes once it has cpus and mems.
    let root_cpuset = Cgroup::with_mounts("/", mounts.clone()).dir("cpuset").ok().flatten().map(|(d, _, _)| d);
    let root = |f: &str| root_cpuset.as_ref().and_then(|d| std::fs::read_to_string(d.join(f)).ok()).unwrap_or_default().trim().to_string();
    let (cpus, mems) = (root("cpuset.cpus"), root("cpuset.mems"));
    let base = format!("nestrun-readertest-{}", std::process::id());
    let container = TestCgroup::with(&base, &[("cpuset.cpus", &cpus), ("cpuset.mems", &mems)]);
    let limits = [("memory.limit_in_bytes", "67108864"), ("memory.max", "67108864"), ("cpu.cfs_quota_us", "50000"), ("cpu.max", "50000 100000")];
    let limited = TestCgroup::with(&format!("{base}/limited"), &limits);
    let deeper = TestCgroup::with(&format!("{base}/limited/deeper"), &[]);
    let free = TestCgroup::with(&format!("{base}/free"), &[("cpuset.cpus", &cpus), ("cpuset.mems", &mems)]);
    let pinned = TestCgroup::with(&format!("{base}/pinned"), &[("cpuset.cpus", "0"), ("cpuset.mems", &mems)]);

    let (in_deeper, in_free, in_pinned) = (Sleeper::new(&[]), Sleeper::new(&[]), Sleeper::new(&[]));
    deeper.add(in_deeper.pid(false));
    free.add(in_free.pid(false));
    pinned.add(in_pinned.pid(false));
    let own_ns = Sleeper::new(&["unshare", "--pid", "--fork", "--kill-child"]);
    container.add(own_ns.pid(true));

    let path = format!("/{base}");
    let r = Reader::new(Cgroup::with_mounts(&path, mounts), SystemTime::now() - Duration::from_secs(100), None);
    let own = r.own();
    assert_eq!(*own, View { memory: path.as_str().into(), cpu: path.as_str().into(), start: None });
    assert!((99.0..110.0).contains(&r.age(&own)), "no init known: since its creation");
    assert_eq!(r.view(0), own, "no pid");
    assert_eq!(r.view(std::process::id()), own, "a reader outside the container");
    assert_eq!(r.view(in_free.pid(false)), own, "a sub-cgroup without limits of its own");

    let v = r.view(in_deeper.pid(false));
    let lim = format!("{path}/limited");
    if limited.memory_limited {
        assert_eq!(&*v.memory, lim, "the limited ancestor's memory");
    } else {
        eprintln!("no memory controller to limit: memory choice not checked");
    }
    if !limited.written.iter().any(|f| f.starts_with("cpu.")) {
        eprintln!("no cpu controller to limit: cpu choice not checked");
    } else {
        assert_eq!(&*v.cpu, lim, "the limited ancestor's cpu quota");
        let cg = r.cgroup(&v.cpu);
        assert_eq!(cg.cpu_quota().unwrap(), Some(0.5));
    }
    assert_eq!(v.start, None, "the host's pid namespace: the container's own uptime");
    if pinned.written.iter().any(|f| f == "cpuset.cpus") && render::parse_cpu_list(&cpus).unwrap().len() > 1 {
        let v = r.view(in_pinned.pid(false));
        assert_eq!((&*v.memory, &*v.cpu), (path.as_str(), format!("{path}/pinned").as_str()), "a narrower cpuset");
    } else {
        eprintln!("no cpuset controller or a single cpu: cpuset choice not checked");
    }

    // The init of its own pid namespace: its uptime starts with it.
    let init = own_ns.pid(true);
    let v = r.view(init);
    assert_eq!(v.start, caller::start_ticks(init as i32));
    assert!(r.age(&v) < 10.0, "{}", r.age(&v));
    assert_eq!(r.view(init), v, "cached");

    // Gone: the container's own view once the pid's entry expired.
    let gone = in_deeper.pid(false);
    drop(in_deeper);
    std::thread::sleep(PID_TTL);
    assert_eq!(r.view(gone), own);
    drop((own_ns, in_free, in_pinned));
    // The killed processes leave their cgroups (the pid namespace's init on its own, after its
    // parent) before the cgroups can go.
    let empty = || [&path, &format!("{path}/free"), &format!("{path}/pinned")].iter().all(|p| caller::cgroup_procs(&r.dir(p, "memory").map(|d| d.0).unwrap_or_default()).is_empty());
    for _ in 0..100 {
        if empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop((deeper, limited, free, pinned, container));
}
