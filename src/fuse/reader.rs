//! Values follow the reader: whose figures a process of the container gets, for both the FUSE
//! files (`server`, a READ's pid) and `sysinfo(2)` (`supervisor`, a trapped caller's pid).
//! Pids are the host's (this process runs in the host's pid namespace).
//!
//! A reader's [`View`] is resolved from /proc/<pid>/cgroup and /proc/<pid>/ns/pid:
//! - memory (meminfo, swaps, sysinfo's memory; and the task count of loadavg and sysinfo): the
//!   deepest cgroup on the reader's memory cgroup's way up to the container's that has a memory
//!   limit of its own (v1 `memory.limit_in_bytes`, v2 `memory.max`), else the container's;
//! - cpu (cpuinfo, stat, uptime's idle time, cpu/online): the deepest cgroup on the reader's cpu
//!   cgroup's way up that has a cpu quota of its own (v1 `cpu.cfs_quota_us`, v2 `cpu.max`) or a
//!   cpuset narrower than its parent's (an effective cpu list missing one of the parent's; the
//!   cpuset directory at the same path), else the container's. The figures shown are then
//!   derived from that cgroup exactly as for the container (quota: the minimum over its
//!   ancestors; memory limit: hierarchical), so they never exceed the container's;
//! - uptime: the age of the init of the reader's pid namespace (`caller::pidns_init`); the
//!   container's own (its init's age, else the time since it was created) when that init is not
//!   found or the reader shares this process's (the host's) pid namespace.
//!
//! So an inner `docker run -m 64m --cpus 0.5` (an inner runtime's cgroup with its own limits)
//! shows 64 MiB and 1 cpu at any depth, while a reader in the container itself, or in a
//! sub-cgroup without limits of its own (systemd's services), sees the container's figures.
//! A pid of 0, an unreadable /proc/<pid> (the reader is gone) or a reader outside the
//! container's cgroup (the host reading the mount): the container's own view, never the host's.
//!
//! Costs: a pid's view is kept [`PID_TTL`] (a reader polling a file resolves itself once per
//! render tick: one read of /proc/<pid>/cgroup and one readlink), a cgroup's choice
//! [`CHOICE_TTL`], a pid namespace's init until it is gone; every map is bounded. A pid reused
//! within its TTL gets the previous reader's view: a view of this same container, nothing to
//! guard against.
use std::collections::HashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::cgroup::{self, Cgroup};
use super::render::sysinfo::{below, path_up_to, proc_cgroup_path};
use super::{caller, render};

/// How long a pid's view is used (one render tick).
pub const PID_TTL: Duration = super::server::RENDER_TTL;
/// How long a cgroup's choice (which cgroup has limits of its own) is kept, and how long a pid
/// namespace without a known init is not looked at again.
pub const CHOICE_TTL: Duration = Duration::from_secs(1);
/// Entries per cache before the expired ones (then all) are dropped.
pub const MAX_CACHE: usize = 512;
/// Cgroups whose files are kept open for rendering (each with a few descriptors).
const MAX_CGROUPS: usize = 64;

/// Where a reader's figures come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct View {
    /// The cgroup whose memory figures and task count are shown.
    pub memory: Arc<str>,
    /// The cgroup whose cpus and cpu time are shown.
    pub cpu: Arc<str>,
    /// Start (clock ticks since boot) of the init whose age is the uptime; None: the container's
    /// creation time.
    pub start: Option<u64>,
}

/// Seconds of uptime for a view's `start`, or since `created` when it has none.
pub fn age(start: Option<u64>, created: SystemTime) -> f64 {
    match start {
        Some(ticks) => (caller::boottime() - ticks as f64 / render::USER_HZ as f64).max(0.0),
        None => SystemTime::now().duration_since(created).map_or(0.0, |d| d.as_secs_f64()),
    }
}

/// A map whose entries count as present for `ttl` after their insertion, with at most `cap`
/// entries: inserting a new key into a full map first drops the expired entries, then, if it is
/// still full, all of them.
#[derive(Debug)]
pub struct Timed<K, V> {
    map: HashMap<K, (Instant, V)>,
    ttl: Duration,
    cap: usize,
}

impl<K: Hash + Eq, V: Clone> Timed<K, V> {
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Timed { map: HashMap::new(), ttl, cap }
    }

    /// The value of `k` if inserted less than the ttl ago.
    pub fn get<Q: Hash + Eq + ?Sized>(&self, k: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.map.get(k).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, v)| v.clone())
    }

    /// The value of `k` however old, and its age.
    fn get_stale(&self, k: &K) -> Option<(Duration, V)> {
        self.map.get(k).map(|(at, v)| (at.elapsed(), v.clone()))
    }

    pub fn insert(&mut self, k: K, v: V) {
        if self.map.len() >= self.cap && !self.map.contains_key(&k) {
            let ttl = self.ttl;
            self.map.retain(|_, (at, _)| at.elapsed() < ttl);
            if self.map.len() >= self.cap {
                self.map.clear();
            }
        }
        self.map.insert(k, (Instant::now(), v));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// The rule of both choices: the deepest cgroup from `caller` up to (not including) `container`
/// for which `own` holds (it has a limit of its own), else `container`. A `caller` outside the
/// container's subtree gets `container`.
pub fn deepest(caller: &str, container: &str, mut own: impl FnMut(&str) -> bool) -> String {
    let mut up = path_up_to(caller, container);
    let container = up.pop().unwrap_or_else(|| container.to_string());
    up.into_iter().find(|p| own(p)).unwrap_or(container)
}

/// Whether a cpu list `child` is narrower than `parent`'s (lacks one of its cpus). An empty or
/// unknown list is not narrower.
pub fn narrower(child: &[usize], parent: &[usize]) -> bool {
    !child.is_empty() && parent.iter().any(|c| !child.contains(c))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Controller {
    Memory,
    Cpu,
}

struct Caches {
    /// Reader pid -> its view.
    pids: Timed<u32, Arc<View>>,
    /// (controller, the reader's cgroup) -> the cgroup chosen for it.
    choice: Timed<(Controller, String), Arc<str>>,
    /// Pid namespace -> its init and that init's start (None: not found).
    inits: Timed<u64, Option<(i32, u64)>>,
    /// The container's own view, with the init pid it was made for.
    own: Option<(i32, Arc<View>)>,
    /// Cgroups other than the container's, for rendering: path -> (last use, cgroup).
    cgroups: HashMap<Arc<str>, (Instant, Arc<Cgroup>)>,
}

/// Resolves readers to views (see the module doc); shared by the threads of one server.
pub struct Reader {
    container: Arc<Cgroup>,
    path: Arc<str>,
    created: SystemTime,
    /// The container's init (host pid), 0 while unknown.
    init: AtomicI32,
    /// This process's pid namespace: a reader in it shares the host's.
    own_ns: Option<u64>,
    caches: Mutex<Caches>,
}

impl Reader {
    /// `container`: the container's cgroup; `created`: its creation (its uptime while its init
    /// is unknown); `init`: its init's host pid, if known.
    pub fn new(container: Cgroup, created: SystemTime, init: Option<i32>) -> Self {
        Reader {
            path: container.path().into(),
            container: Arc::new(container),
            created,
            init: AtomicI32::new(init.unwrap_or(0)),
            own_ns: caller::pidns(std::process::id() as i32),
            caches: Mutex::new(Caches {
                pids: Timed::new(PID_TTL, MAX_CACHE),
                choice: Timed::new(CHOICE_TTL, MAX_CACHE),
                inits: Timed::new(CHOICE_TTL, MAX_CACHE),
                own: None,
                cgroups: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Caches> {
        self.caches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The container's init (learnt after the server started, e.g. by the supervisor).
    pub fn set_init(&self, pid: Option<i32>) {
        self.init.store(pid.unwrap_or(0), Ordering::Relaxed);
    }

    /// Seconds of uptime `view` shows.
    pub fn age(&self, view: &View) -> f64 {
        age(view.start, self.created)
    }

    /// The container's own view (its cgroup for everything, its init's age).
    pub fn own(&self) -> Arc<View> {
        let init = self.init.load(Ordering::Relaxed);
        if let Some((i, v)) = &self.lock().own {
            if *i == init {
                return v.clone();
            }
        }
        let start = (init > 0).then(|| caller::start_ticks(init)).flatten();
        let v = Arc::new(View { memory: self.path.clone(), cpu: self.path.clone(), start });
        self.lock().own = Some((init, v.clone()));
        v
    }

    /// The view of reader `pid` (0: none known).
    pub fn view(&self, pid: u32) -> Arc<View> {
        if pid == 0 {
            return self.own();
        }
        if let Some(v) = self.lock().pids.get(&pid) {
            return v;
        }
        let v = self.resolve(pid as i32);
        self.lock().pids.insert(pid, v.clone());
        v
    }

    fn resolve(&self, pid: i32) -> Arc<View> {
        let own = self.own();
        let Some(text) = caller::cgroup(pid) else { return own };
        let mem = proc_cgroup_path(&text, "memory").unwrap_or(&self.path);
        if !below(mem, &self.path) {
            return own;
        }
        let cpu = proc_cgroup_path(&text, "cpu").unwrap_or(mem);
        let view = View {
            memory: self.choose(Controller::Memory, mem),
            cpu: self.choose(Controller::Cpu, cpu),
            start: match caller::pidns(pid) {
                Some(ns) if Some(ns) != self.own_ns => self.init_start(pid, ns, mem).or(own.start),
                _ => own.start,
            },
        };
        if view == *own {
            own
        } else {
            Arc::new(view)
        }
    }

    /// The cgroup whose `ctrl` figures a reader in cgroup `caller` gets.
    fn choose(&self, ctrl: Controller, caller: &str) -> Arc<str> {
        if caller == &*self.path {
            return self.path.clone();
        }
        let key = (ctrl, caller.to_string());
        if let Some(c) = self.lock().choice.get(&key) {
            return c;
        }
        let chosen = deepest(caller, &self.path, |p| match ctrl {
            Controller::Memory => self.dir(p, "memory").is_some_and(|(d, v2)| caller::own_memory_limit(&d, v2).is_some()),
            Controller::Cpu => self.own_cpu_limit(p),
        });
        let chosen: Arc<str> = if chosen == *self.path { self.path.clone() } else { chosen.into() };
        self.lock().choice.insert(key, chosen.clone());
        chosen
    }

    /// (directory, is v2) of cgroup `path` for `controller`, if there.
    fn dir(&self, path: &str, controller: &str) -> Option<(PathBuf, bool)> {
        let cg = Cgroup::with_mounts(path, self.container.mounts().clone());
        cg.dir(controller).ok().flatten().map(|(d, _, v2)| (d, v2))
    }

    /// Whether cgroup `path` has a cpu quota of its own or a cpuset narrower than its parent's.
    fn own_cpu_limit(&self, path: &str) -> bool {
        let read = |p: &Path| std::fs::read_to_string(p).ok();
        let quota = self.dir(path, "cpu").is_some_and(|(d, v2)| match v2 {
            true => read(&d.join("cpu.max")).is_some_and(|t| cgroup::parse_cpu_max(&t).ok().flatten().is_some()),
            false => read(&d.join("cpu.cfs_quota_us")).is_some_and(|t| cgroup::parse_limit(&t).ok().flatten().is_some()),
        });
        quota
            || self.dir(path, "cpuset").is_some_and(|(d, v2)| {
                let cpus = |dir: &Path| {
                    let files: &[&str] = if v2 { &["cpuset.cpus.effective"] } else { &["cpuset.effective_cpus", "cpuset.cpus"] };
                    files.iter().find_map(|f| read(&dir.join(f))).and_then(|t| render::parse_cpu_list(&t).ok()).unwrap_or_default()
                };
                d.parent().is_some_and(|parent| narrower(&cpus(&d), &cpus(parent)))
            })
    }

    /// Start ticks of the init of pid namespace `ns` (reader `pid`, in memory cgroup `cg`).
    fn init_start(&self, pid: i32, ns: u64, cg: &str) -> Option<u64> {
        let cached = self.lock().inits.get_stale(&ns);
        match cached {
            // Still that namespace's (a pid namespace's init dies with it): checked once per
            // CHOICE_TTL (a namespace inode reused within it would only show another uptime).
            Some((at, Some((init, start)))) if at < CHOICE_TTL || caller::pidns(init) == Some(ns) => {
                if at >= CHOICE_TTL {
                    self.lock().inits.insert(ns, Some((init, start)));
                }
                return Some(start);
            }
            Some((at, None)) if at < CHOICE_TTL => return None,
            _ => {}
        }
        let scan = self.dir(cg, "memory").map(|(d, _)| d);
        let known = Some(self.init.load(Ordering::Relaxed)).filter(|&p| p > 0);
        let found = caller::pidns_init(pid, ns, scan.as_deref(), known);
        self.lock().inits.insert(ns, found);
        found.map(|(_, start)| start)
    }

    /// The cgroup `path` for rendering (its descriptors kept while it is in use).
    pub fn cgroup(&self, path: &Arc<str>) -> Arc<Cgroup> {
        if *path == self.path {
            return self.container.clone();
        }
        let mut c = self.lock();
        if let Some((at, cg)) = c.cgroups.get_mut(path) {
            *at = Instant::now();
            return cg.clone();
        }
        if c.cgroups.len() >= MAX_CGROUPS {
            // Each keeps its files open: the ones not used lately go first.
            c.cgroups.retain(|_, (at, _)| at.elapsed() < CHOICE_TTL);
            if c.cgroups.len() >= MAX_CGROUPS {
                c.cgroups.clear();
            }
        }
        let cg = Arc::new(Cgroup::with_mounts(path, self.container.mounts().clone()));
        c.cgroups.insert(path.clone(), (Instant::now(), cg.clone()));
        cg
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
