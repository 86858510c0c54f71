//! Cgroup delegation. v1: the container's directory in every hierarchy, with cgroup.procs and
//! tasks, is chowned to container root: it can create children and move its processes, but its
//! own limit files stay host-root-owned. Named hierarchies (name=systemd) are not managed by
//! libcontainer, yet every inner runc joins them: nestrun makes and delegates that directory
//! and moves itself in before creating the container, so the container inherits it.
use std::path::{Path, PathBuf};

use super::mountinfo::{self, MountEntry};
use super::{io, HostError};

const DELEGATED_FILES: &[&str] = &["", "cgroup.procs", "tasks", "cgroup.threads", "cgroup.subtree_control"];

fn is_named(e: &MountEntry) -> bool {
    e.fs_type == "cgroup" && e.super_options.split(',').any(|o| o.starts_with("name="))
}

/// One entry per cgroup hierarchy, from the process's mount table snapshot (hierarchies do not
/// move while a command runs).
pub fn hierarchies() -> &'static [MountEntry] {
    static CACHE: std::sync::OnceLock<Vec<MountEntry>> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| of_mounts(mountinfo::snapshot()))
}

/// Hands the v1 hierarchies to libcgroups (vendor patch 1), whose cgroup manager would read
/// the mount table again in this process and in libcontainer's intermediate process.
pub fn seed_libcgroups() {
    let v1 = mountinfo::snapshot().iter().filter(|e| e.fs_type == "cgroup").map(|e| e.mount_point.clone()).collect();
    libcgroups::v1::util::seed_mount_points(v1);
}

fn of_mounts(mounts: &[MountEntry]) -> Vec<MountEntry> {
    let mut seen = Vec::new();
    mounts
        .iter()
        .cloned()
        .filter(|e| (e.fs_type == "cgroup" || e.fs_type == "cgroup2") && e.root == Path::new("/"))
        .filter(|e| {
            // One entry per hierarchy (bind mounts of the same one share super options).
            let key = (e.fs_type.clone(), e.super_options.clone());
            !seen.contains(&key) && {
                seen.push(key);
                true
            }
        })
        .collect()
}

/// The cgroup directory of a spec's `cgroupsPath`. A systemd-driver path (`slice:prefix:name`,
/// what docker and podman pass with the systemd cgroup driver, the default on cgroup v2) is
/// expanded the way libcgroups' systemd manager names the unit: `system.slice:docker:ID` is
/// `/system.slice/docker-ID.scope`, `a-b.slice:p:n` is `/a.slice/a-b.slice/p-n.scope`, an empty
/// slice is `system.slice`, a name ending in `.slice` is the unit itself. Other paths are kept.
/// `None` for a systemd path libcgroups would refuse (a bad slice name).
pub fn resolve(cgroups_path: &Path) -> Option<PathBuf> {
    let s = cgroups_path.to_str()?;
    let parts: Vec<&str> = s.split(':').collect();
    if s.starts_with('/') || parts.len() != 3 {
        return Some(cgroups_path.to_path_buf());
    }
    let (slice, prefix, name) = (if parts[0].is_empty() { "system.slice" } else { parts[0] }, parts[1], parts[2]);
    let stem = slice.strip_suffix(".slice").filter(|s| !s.is_empty() && !s.contains('/'))?;
    let mut dir = PathBuf::from("/");
    if stem != "-" {
        let mut acc = String::new();
        for c in stem.split('-') {
            if c.is_empty() {
                return None;
            }
            acc = if acc.is_empty() { c.to_string() } else { format!("{acc}-{c}") };
            dir.push(format!("{acc}.slice"));
        }
    }
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let unit = match (name.ends_with(".slice"), prefix.is_empty()) {
        (true, _) => name.to_string(),
        (false, true) => format!("{name}.scope"),
        (false, false) => format!("{prefix}-{name}.scope"),
    };
    dir.push(unit);
    Some(dir)
}

/// `cgroup_path` relative to a hierarchy's mount point.
pub fn dir_in(mount: &Path, cgroup_path: &Path) -> PathBuf {
    mount.join(cgroup_path.strip_prefix("/").unwrap_or(cgroup_path))
}

fn chown_delegated(dir: &Path, host_id: u32) -> Result<(), HostError> {
    for f in DELEGATED_FILES {
        let p = if f.is_empty() { dir.to_path_buf() } else { dir.join(f) };
        if p.exists() {
            std::os::unix::fs::chown(&p, Some(host_id), Some(host_id)).map_err(io("delegate cgroup", &p))?;
        }
    }
    Ok(())
}

/// Make and delegate the container's directory in the named v1 hierarchies (name=systemd),
/// which libcontainer's cgroup manager does not handle. Returns their `cgroup.procs` files:
/// libcontainer's intermediate process joins them right after its own cgroups (vendor patch
/// 7), so the container's processes are born there and this process never moves (a cgroup v1
/// move after a quiet spell waits for an RCU grace period, 6-11 ms each).
pub fn prepare_named(cgroup_path: &Path, host_id: u32) -> Result<Vec<PathBuf>, HostError> {
    let mut procs = Vec::new();
    for h in hierarchies().iter().filter(|e| is_named(e)) {
        let dir = dir_in(&h.mount_point, cgroup_path);
        std::fs::create_dir_all(&dir).map_err(io("create cgroup", &dir))?;
        chown_delegated(&dir, host_id)?;
        procs.push(dir.join("cgroup.procs"));
    }
    Ok(procs)
}

/// The `cgroup.procs` of the container's directories in the named v1 hierarchies, where they
/// exist: an exec'd process joins them as the init did (`prepare_named`).
pub fn named_procs(cgroup_path: &Path) -> Vec<PathBuf> {
    hierarchies().iter().filter(|e| is_named(e)).map(|h| dir_in(&h.mount_point, cgroup_path).join("cgroup.procs")).filter(|p| p.exists()).collect()
}

/// Delegate the container's directory in every hierarchy where it exists (after create).
pub fn delegate(cgroup_path: &Path, host_id: u32) -> Result<(), HostError> {
    for h in hierarchies() {
        let dir = dir_in(&h.mount_point, cgroup_path);
        if dir.is_dir() {
            chown_delegated(&dir, host_id)?;
        }
    }
    Ok(())
}

/// Remove what the container made below its cgroup in every hierarchy (deepest first), and
/// with `including_root` the directory itself. Only empty cgroups can go: call it after the
/// container's processes are gone.
pub fn remove_tree(cgroup_path: &Path, including_root: bool) {
    for h in hierarchies() {
        let root = dir_in(&h.mount_point, cgroup_path);
        let mut dirs = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
                    stack.push(e.path());
                }
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            if *d != root || including_root {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// The pure cgroup v2 mount point, when this host has no v1 controller hierarchy.
pub fn unified_mount() -> Option<PathBuf> {
    let hs = hierarchies();
    if hs.iter().any(|e| e.fs_type == "cgroup" && !is_named(e)) {
        return None;
    }
    hs.iter().find(|e| e.fs_type == "cgroup2").map(|e| e.mount_point.clone())
}

/// The controllers of a `cgroup.controllers` text that delegation hands on (`+cpu +memory ...`).
pub fn enable_line(controllers: &str, wanted: &[&str]) -> String {
    let have: Vec<&str> = controllers.split_whitespace().collect();
    wanted.iter().filter(|c| have.contains(c)).map(|c| format!("+{c}")).collect::<Vec<_>>().join(" ")
}

const PROBE_FAILURES: &[&str] = &["", "cannot become the test uid", "cannot create a child cgroup", "cannot enable controllers below its cgroup", "the child has no memory.max", "could write its own memory.max"];

/// `nestrun check` on a pure v2 host: delegates `<mount>/nestrun/.check-PID` the way create does
/// to an unprivileged uid, which must create a child, enable the controllers for it, and fail
/// to open its own memory.max for writing. Everything it made is removed.
pub fn probe_v2_delegation(mount: &Path, uid: u32) -> Result<String, String> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let parent = mount.join("nestrun");
    let made_parent = !parent.exists();
    let dir = parent.join(format!(".check-{}", std::process::id()));
    let sub = dir.join("child");
    let cleanup = || {
        let _ = std::fs::remove_dir(&sub);
        let _ = std::fs::remove_dir(&dir);
        if made_parent {
            let _ = std::fs::remove_dir(&parent);
        }
    };
    let r = (|| {
        let root_ctl = std::fs::read_to_string(mount.join("cgroup.controllers")).map_err(|e| format!("{}: {e}", mount.display()))?;
        let line = enable_line(&root_ctl, &["cpu", "memory", "pids"]);
        if !line.contains("+memory") || !line.contains("+pids") {
            return Err(format!("{}/cgroup.controllers lacks memory or pids: {:?}", mount.display(), root_ctl.trim()));
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let sc = parent.join("cgroup.subtree_control");
        std::fs::write(&sc, &line).map_err(|e| format!("{} ({line}): {e}", sc.display()))?;
        chown_delegated(&dir, uid).map_err(|e| e.to_string())?;
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap_or_default();
        let (sub_c, ctl_c, max_c, line_c) = (c(&sub), c(&dir.join("cgroup.subtree_control")), c(&dir.join("memory.max")), line.clone());
        let child_max = c(&sub.join("memory.max"));
        // SAFETY: the child makes only syscalls on prepared buffers and _exits.
        match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
            nix::unistd::ForkResult::Child => unsafe {
                let code = if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                    1
                } else if libc::mkdir(sub_c.as_ptr(), 0o755) != 0 {
                    2
                } else {
                    let fd = libc::open(ctl_c.as_ptr(), libc::O_WRONLY);
                    if fd < 0 || libc::write(fd, line_c.as_ptr().cast(), line_c.len()) < 0 {
                        3
                    } else if libc::access(child_max.as_ptr(), libc::F_OK) != 0 {
                        4
                    } else if libc::open(max_c.as_ptr(), libc::O_WRONLY) >= 0 {
                        5
                    } else {
                        0
                    }
                };
                libc::_exit(code)
            },
            nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(format!("uid {uid} made a child with {line}, own limits stay read-only")),
                Ok(nix::sys::wait::WaitStatus::Exited(_, n)) => Err(format!("uid {uid} {} in {}", PROBE_FAILURES.get(n as usize).unwrap_or(&"failed"), dir.display())),
                other => Err(format!("probe child: {other:?}")),
            },
        }
    })();
    cleanup();
    r
}

/// The v2 cgroup of a `/proc/PID/cgroup` text (its `0::` line).
pub fn v2_cgroup_of(proc_cgroup: &str) -> Option<PathBuf> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::")).map(PathBuf::from)
}

/// Where an exec'd process of a container whose cgroup is `container` goes on a pure v2 host:
/// the init's cgroup when the container moved its init below its own cgroup (an inner dockerd
/// or systemd manages the subtree: joining `container` would fail with EBUSY, or break the
/// container's own enabling of controllers there), else `None` (the container's cgroup).
/// Safe: only a cgroup strictly below the container's own is chosen (read from the host's
/// /proc, so a full host path), where every limit of the container's cgroup still applies;
/// the container can only make its own exec fail by moving its init somewhere odd.
pub fn exec_cgroup(container: &Path, init_cgroup: &Path) -> Option<PathBuf> {
    (init_cgroup != container && init_cgroup.starts_with(container)).then(|| init_cgroup.to_path_buf())
}

/// `exec_cgroup` for a running container with init `pid`, on pure v2 hosts only.
pub fn exec_cgroup_for(container: &Path, pid: i32) -> Option<PathBuf> {
    unified_mount()?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    exec_cgroup(container, &v2_cgroup_of(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_systemd_paths() {
        let r = |p: &str| resolve(Path::new(p)).map(|p| p.to_string_lossy().into_owned());
        assert_eq!(r("system.slice:docker:abc").as_deref(), Some("/system.slice/docker-abc.scope"));
        assert_eq!(r("machine.slice:libpod:x").as_deref(), Some("/machine.slice/libpod-x.scope"));
        assert_eq!(r("test-a-b.slice:docker:foo").as_deref(), Some("/test.slice/test-a.slice/test-a-b.slice/docker-foo.scope"));
        assert_eq!(r(":docker:abc").as_deref(), Some("/system.slice/docker-abc.scope"));
        assert_eq!(r("-.slice:p:n").as_deref(), Some("/p-n.scope"));
        assert_eq!(r("system.slice::n").as_deref(), Some("/system.slice/n.scope"));
        assert_eq!(r("system.slice:p:kube-x.slice").as_deref(), Some("/system.slice/kube-x.slice"));
        // cgroupfs paths are kept as they are
        assert_eq!(r("/docker/abc").as_deref(), Some("/docker/abc"));
        assert_eq!(r("/a:b:c").as_deref(), Some("/a:b:c"));
        assert_eq!(r("relative/path").as_deref(), Some("relative/path"));
        // what libcgroups refuses
        assert_eq!(r("system:docker:abc"), None);
        assert_eq!(r("a--b.slice:docker:abc"), None);
        assert_eq!(r("system.slice:docker:a/b"), None);
    }

    #[test]
    fn exec_joins_the_init_leaf() {
        let c = Path::new("/system.slice/docker-abc.scope");
        assert_eq!(v2_cgroup_of("0::/system.slice/docker-abc.scope/init\n"), Some(PathBuf::from("/system.slice/docker-abc.scope/init")));
        assert_eq!(v2_cgroup_of("12:memory:/x\n1:name=systemd:/x\n"), None);
        assert_eq!(exec_cgroup(c, Path::new("/system.slice/docker-abc.scope/init")), Some(PathBuf::from("/system.slice/docker-abc.scope/init")));
        assert_eq!(exec_cgroup(c, Path::new("/system.slice/docker-abc.scope/init.scope/x")), Some(PathBuf::from("/system.slice/docker-abc.scope/init.scope/x")));
        assert_eq!(exec_cgroup(c, c), None, "init still in the container's cgroup");
        assert_eq!(exec_cgroup(c, Path::new("/system.slice/docker-abcd.scope")), None, "a sibling is not below");
        assert_eq!(exec_cgroup(c, Path::new("/")), None);
    }

    #[test]
    fn enable_line_keeps_wanted_available_controllers() {
        assert_eq!(enable_line("cpuset cpu io memory hugetlb pids rdma misc\n", &["cpu", "memory", "pids"]), "+cpu +memory +pids");
        assert_eq!(enable_line("memory pids", &["cpu", "memory", "pids"]), "+memory +pids");
        assert_eq!(enable_line("hugetlb\n", &["cpu", "memory", "pids"]), "");
    }
}
