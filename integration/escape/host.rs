//! The host side of the escape suite: what is planted for the probe to try to change, what is
//! read from the host while the probe waits at its checkpoints, and what is restored.
//!
//! For the whole run ([`Plants`]): a marker file in a host directory that no container sees
//! (its content, a random token, must never appear in the probe's output), a line with another
//! token in the host's kernel log, a key with a third token in host root's user keyring, one
//! canary process per mode (the probe is told its host pid and tries to kill it), and a
//! release agent script whose trace would show it ran.
//!
//! Per probe run (`window.rs`, under a host-wide lock so that runs never overlap): at the
//! probe's first checkpoint its process is inspected from /proc/<pid> (namespaces, id maps,
//! seccomp, cgroups), the global sysctls and the THP knob are set to unusual values (always
//! different from what the probe will write), `kernel.dmesg_restrict`,
//! `kernel.perf_event_paranoid` and `kernel.unprivileged_bpf_disabled` are opened up to
//! unprivileged users (so only seccomp stands between the probe and the kernel log, perf and
//! bpf), and the container's cgroup files, the hierarchies' release_agent, /proc/vmstat's
//! drop_slab and the clock are read. At the second checkpoint all of it is read again and the
//! host's values are restored (a file in /run remembers the originals, so a run killed half-way
//! is repaired by the next one).
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LOCK: &str = "/run/nestrun-escape.lock";
pub const RESTORE: &str = "/run/nestrun-escape-restore";
pub const KMSG_PREFIX: &str = "nestrun-escape-kmsg-";
pub const CLOCK_JUMP: i64 = 3;

/// Sysctls the probe writes: (path below /proc/sys, planted value or None (keep the host's),
/// the probe's two values: it writes the first unless it reads that already, then the second).
/// Neither of them is ever the planted value, so a write that reaches the host shows.
pub struct SysctlPlan {
    pub rel: &'static str,
    pub plant: Option<String>,
    pub write: [String; 2],
}

pub fn read(p: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim_end_matches('\n').to_string())
}

/// The probe's values and the canaries, from the host's current values.
pub fn plans() -> Vec<SysctlPlan> {
    let cur = |rel: &str| read(format!("/proc/sys/{rel}")).unwrap_or_default();
    let p = |rel: &'static str, plant: Option<String>, a: &str, b: &str| SysctlPlan { rel, plant, write: [a.to_string(), b.to_string()] };
    let s = |v: &str| Some(v.to_string());
    let fm = cur("fs/file-max").parse::<u64>().unwrap_or(1 << 20);
    let fwd = if cur("net/ipv4/ip_forward") == "1" { "0" } else { "1" };
    let sysrq = if cur("kernel/sysrq") == "176" { "16" } else { "176" };
    vec![
        p("kernel/core_pattern", s("core.nestrun-canary"), "core.nestrun-probe", "core.nestrun-probe2"),
        p("vm/drop_caches", None, "2", "2"),
        p("kernel/modprobe", None, "/nonexistent/nestrun-probe-modprobe", "/nonexistent/nestrun-probe-modprobe2"),
        p("kernel/panic", s("17"), "23", "29"),
        p("kernel/sysrq", s(sysrq), "0", "1"),
        p("kernel/randomize_va_space", s("1"), "2", "0"),
        p("kernel/kptr_restrict", s("2"), "1", "0"),
        p("kernel/dmesg_restrict", s("0"), "1", "1"),
        p("kernel/perf_event_paranoid", s("-1"), "2", "1"),
        p("vm/overcommit_memory", s("1"), "0", "2"),
        p("fs/file-max", Some((fm + 7).to_string()), &fm.to_string(), &(fm + 3).to_string()),
        p("kernel/hostname", None, "nestrun-probe", "nestrun-probe2"),
        p("net/ipv4/ip_forward", None, fwd, fwd),
        p("net/core/somaxconn", None, "4000", "4001"),
    ]
}

/// Planted but not written by the probe: unprivileged bpf opened up (only seccomp stands).
pub const EXTRA_PLANTS: &[(&str, &str)] = &[("kernel/unprivileged_bpf_disabled", "0")];
pub const THP: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// THP: (planted, probe's first value, probe's second value).
pub fn thp_plan() -> Option<(String, String, String)> {
    let cur = read(THP)?;
    let sel = cur.split_whitespace().find(|w| w.starts_with('['))?.trim_matches(|c| c == '[' || c == ']').to_string();
    let plant = if sel == "never" { "madvise" } else { "never" };
    let others: Vec<&str> = ["always", "madvise", "never"].into_iter().filter(|v| *v != plant).collect();
    Some((plant.into(), others[0].into(), others[1].into()))
}

pub fn thp_selected() -> String {
    read(THP).and_then(|c| c.split_whitespace().find(|w| w.starts_with('[')).map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())).unwrap_or_default()
}

fn token() -> String {
    let mut b = [0u8; 8];
    let _ = fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// nestrun's id pool from /etc/subuid (`nestrun:start:size`).
pub fn pool() -> (u64, u64) {
    read("/etc/subuid")
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.trim().split(':').collect();
                (f.len() == 3 && f[0] == "nestrun").then(|| Some((f[1].parse().ok()?, f[2].parse().ok()?)))?
            })
        })
        .unwrap_or((1 << 20, 1 << 28))
}

/// A host-wide lock: plants of two runs (or two scenarios of one) never overlap.
pub fn lock() -> nix::fcntl::Flock<fs::File> {
    let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(LOCK).expect("open escape lock");
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).expect("flock")
}

/// Puts back what a previous run planted and could not restore (killed in a window).
fn repair_leftovers() {
    if let Some(t) = read(RESTORE) {
        for l in t.lines() {
            if let Some((p, v)) = l.split_once('\t') {
                let _ = fs::write(p, v);
                eprintln!("escape: restored {p} = {v:?} left planted by an earlier run");
            }
        }
        let _ = fs::remove_file(RESTORE);
    }
}

pub struct Plants {
    pub dir: PathBuf,
    pub marker_token: String,
    pub kmsg_token: String,
    pub key_token: String,
    pub key_desc: String,
    key_id: Option<i64>,
    pub canaries: BTreeMap<String, (Child, String)>,
    pub pool: (u64, u64),
    pub sysctls: Vec<SysctlPlan>,
    pub thp: Option<(String, String, String)>,
}

impl Plants {
    pub fn new(modes: &[&str]) -> Plants {
        {
            let _l = lock();
            repair_leftovers();
        }
        let id = std::process::id();
        let dir = PathBuf::from(format!("/var/tmp/nestrun-escape-{id}"));
        fs::create_dir_all(&dir).unwrap();
        let marker_token = format!("marker-{}", token());
        fs::write(dir.join("marker"), format!("{marker_token}\n")).unwrap();
        let agent = dir.join("agent");
        fs::write(&agent, format!("#!/bin/sh\necho \"$$ $*\" >> {}\n", dir.join("agent-ran").display())).unwrap();
        fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let kmsg_token = format!("{KMSG_PREFIX}{}", token());
        if let Ok(mut k) = fs::OpenOptions::new().write(true).open("/dev/kmsg") {
            let _ = writeln!(k, "{kmsg_token}");
        }
        let key_token = format!("key-{}", token());
        let key_desc = format!("nestrun-escape-key-{id}");
        let key_id = add_key(&key_desc, &key_token);
        let mut canaries = BTreeMap::new();
        for m in modes {
            let name = format!("nestrun-escape-canary-{id}-{m}");
            let c = Command::new("sleep").arg0(&name).arg("3600").stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("spawn canary");
            canaries.insert(m.to_string(), (c, name));
        }
        Plants { dir, marker_token, kmsg_token, key_token, key_desc, key_id, canaries, pool: pool(), sysctls: plans(), thp: thp_plan() }
    }

    pub fn tokens(&self) -> [&str; 3] {
        [&self.marker_token, &self.kmsg_token, &self.key_token]
    }

    /// The probe's spec file (/probe.d/spec).
    pub fn spec(&self, hostns: &str) -> String {
        let mut s = format!("handshake 90\nhostns {hostns}\npool_start {}\nkmsg_prefix {KMSG_PREFIX}\n", self.pool.0);
        s += &format!("marker_file {}\nagent {}\nkey_desc {}\nclock_jump {CLOCK_JUMP}\n", self.dir.join("marker").display(), self.dir.join("agent").display(), self.key_desc);
        for (m, (c, name)) in &self.canaries {
            s += &format!("canary {m} {} {name}\n", c.id());
        }
        for p in &self.sysctls {
            s += &format!("sysctl {} {} {}\n", p.rel, p.write[0], p.write[1]);
        }
        if let Some((_, a, b)) = &self.thp {
            s += &format!("thp {a} {b}\n");
        }
        s
    }

    /// Whether the mode's canary process still runs (the probe tried to SIGKILL it).
    pub fn canary_alive(&mut self, mode: &str) -> (bool, String) {
        match self.canaries.get_mut(mode) {
            None => (true, "no canary".into()),
            Some((c, name)) => match c.try_wait() {
                Ok(None) => (true, format!("canary '{name}' (host pid {}) alive", c.id())),
                Ok(Some(st)) => (false, format!("canary '{name}' (host pid {}) is DEAD: {st}", c.id())),
                Err(e) => (false, format!("canary: {e}")),
            },
        }
    }

    pub fn agent_ran(&self) -> Option<String> {
        read(self.dir.join("agent-ran"))
    }
}

impl Drop for Plants {
    fn drop(&mut self) {
        for (c, _) in self.canaries.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(id) = self.key_id {
            unsafe { libc::syscall(libc::SYS_keyctl, 21 /* KEYCTL_INVALIDATE */, id) };
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn add_key(desc: &str, payload: &str) -> Option<i64> {
    let ty = std::ffi::CString::new("user").unwrap();
    let d = std::ffi::CString::new(desc).unwrap();
    let id = unsafe { libc::syscall(libc::SYS_add_key, ty.as_ptr(), d.as_ptr(), payload.as_ptr(), payload.len(), -4i32 /* KEY_SPEC_USER_KEYRING */) };
    if id < 0 {
        return None;
    }
    // possessor everything, the owning user (host root) view + read
    unsafe { libc::syscall(libc::SYS_keyctl, 5 /* KEYCTL_SETPERM */, id, 0x3f03_0000u32) };
    Some(id)
}

/// The probe's process as the host sees it, at its first checkpoint.
#[derive(Default, Clone)]
pub struct ProbeView {
    pub pid: u32,
    pub ns: BTreeMap<String, String>,
    pub uid_map: String,
    pub gid_map: String,
    pub seccomp: String,
    pub filters: String,
    pub cgroup: String,
}

pub const NS_TYPES: [&str; 7] = ["user", "pid", "net", "mnt", "ipc", "uts", "cgroup"];

pub fn ns_of(pid: &str) -> BTreeMap<String, String> {
    NS_TYPES.iter().map(|t| (t.to_string(), fs::read_link(format!("/proc/{pid}/ns/{t}")).map(|p| p.display().to_string()).unwrap_or_default())).collect()
}

pub fn view(pid: u32) -> ProbeView {
    let st = read(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| st.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string()).unwrap_or_default();
    ProbeView {
        pid,
        ns: ns_of(&pid.to_string()),
        uid_map: read(format!("/proc/{pid}/uid_map")).unwrap_or_default(),
        gid_map: read(format!("/proc/{pid}/gid_map")).unwrap_or_default(),
        seccomp: field("Seccomp:"),
        filters: field("Seccomp_filters:"),
        cgroup: read(format!("/proc/{pid}/cgroup")).unwrap_or_default(),
    }
}

/// The probe's `suite <mode>` process at checkpoint `phase` (its comm), found by the inode of
/// its executable (the host's probe file, bound into every container).
fn find_probe(phase: &str, mode: &str, exe: (u64, u64)) -> Option<u32> {
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if read(format!("/proc/{pid}/comm")).as_deref() != Some(phase) {
            continue;
        }
        let Ok(m) = fs::metadata(format!("/proc/{pid}/exe")) else { continue };
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if (m.dev(), m.ino()) == exe && args.get(1) == Some(&&b"suite"[..]) && args.get(2) == Some(&mode.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

pub fn wait_for(phase: &str, mode: &str, exe: (u64, u64), gone: &dyn Fn() -> bool, limit: Duration) -> Option<u32> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(p) = find_probe(phase, mode, exe) {
            return Some(p);
        }
        if gone() {
            return find_probe(phase, mode, exe);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

pub fn clock_offset() -> f64 {
    let get = |c| {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        unsafe { libc::clock_gettime(c, &mut t) };
        t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
    };
    get(libc::CLOCK_REALTIME) - get(libc::CLOCK_BOOTTIME)
}

pub fn shift_clock(by: f64) {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut t) };
    let ns = t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128 + (by * 1e9) as i128;
    let t = libc::timespec { tv_sec: (ns / 1_000_000_000) as libc::time_t, tv_nsec: (ns % 1_000_000_000) as libc::c_long };
    unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &t) };
}

pub fn vmstat(key: &str) -> Option<u64> {
    read("/proc/vmstat")?.lines().find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
}

/// The v1 mount points (cgroup, by controller) and the v2 one, from the host's mountinfo.
pub fn cgroup_mounts() -> (BTreeMap<String, String>, Option<String>) {
    let mut v1 = BTreeMap::new();
    let mut v2 = None;
    for l in read("/proc/self/mountinfo").unwrap_or_default().lines() {
        let Some((a, b)) = l.split_once(" - ") else { continue };
        let mp = a.split(' ').nth(4).unwrap_or_default().to_string();
        let f: Vec<&str> = b.split(' ').collect();
        match f.first() {
            Some(&"cgroup") => {
                for o in f.get(2).unwrap_or(&"").split(',') {
                    v1.insert(o.strip_prefix("name=").unwrap_or(o).to_string(), mp.clone());
                }
            }
            Some(&"cgroup2") => v2 = Some(mp),
            _ => {}
        }
    }
    (v1, v2)
}

/// Host path of `file` (v1 name, v2 name) of controller `ctl` in the cgroup of `cgroup_text`
/// (a /proc/<pid>/cgroup read from the host). None when this host has no such file.
pub fn cgroup_file(cgroup_text: &str, ctl: &str, v1: &str, v2: Option<&str>) -> Option<PathBuf> {
    let (m1, m2) = cgroup_mounts();
    if let Some(mp) = m1.get(ctl) {
        let path = cgroup_text.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctls, p) = (f.next()?, f.next()?, f.next()?);
            ctls.split(',').any(|c| c == ctl).then(|| p.to_string())
        })?;
        return Some(PathBuf::from(format!("{mp}{path}/{v1}"))).filter(|p| p.exists());
    }
    let path = cgroup_text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(PathBuf::from(format!("{}{path}/{}", m2?, v2?))).filter(|p| p.exists())
}

/// The container's cgroup files the probe tries to write: attempt key -> (ctl, v1, v2).
pub const CGROUP_FILES: &[(&str, &str, &str, Option<&str>)] = &[
    ("memory", "memory", "memory.limit_in_bytes", Some("memory.max")),
    ("swap", "memory", "memory.memsw.limit_in_bytes", Some("memory.swap.max")),
    ("pids", "pids", "pids.max", Some("pids.max")),
    ("cpu", "cpu", "cpu.cfs_quota_us", Some("cpu.max")),
    ("cpuset", "cpuset", "cpuset.cpus", Some("cpuset.cpus")),
    ("devices", "devices", "devices.list", None),
];

