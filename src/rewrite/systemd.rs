//! systemd as init: it needs tmpfs at /run and /run/lock and the `container` environment
//! variable (how it detects a container and skips hardware units). Applied when the process is
//! an init (`/sbin/init`, `.../systemd`); a mount the spec already has wins.
use libcontainer::oci_spec::runtime::Spec;

use super::{add_mount, new_mount, RewriteError};
use crate::facts::Facts;

pub fn is_systemd(spec: &Spec) -> bool {
    let arg0 = spec.process().as_ref().and_then(|p| p.args().as_ref()).and_then(|a| a.first().cloned()).unwrap_or_default();
    matches!(arg0.as_str(), "/sbin/init" | "/lib/systemd/systemd" | "/usr/lib/systemd/systemd" | "/usr/sbin/init")
}

pub fn rewrite(mut spec: Spec, _facts: &Facts) -> Result<Spec, RewriteError> {
    if !is_systemd(&spec) {
        return Ok(spec);
    }
    // One option per element: libcontainer hands each `k=v` to fsconfig(2) as a single key, so
    // a joined "mode=755,size=65536k" is mode="755,size=65536k" and the mount fails with EINVAL.
    // /run is not noexec (systemd mounts its own /run without it); /run/lock is.
    let run: &[&str] = &["rw", "nosuid", "nodev", "mode=755", "size=65536k"];
    let lock: &[&str] = &["rw", "nosuid", "nodev", "noexec", "mode=1777", "size=5120k"];
    for (dest, opts) in [("/run", run), ("/run/lock", lock)] {
        let o: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
        add_mount(&mut spec, new_mount(dest, "tmpfs", "tmpfs", o));
    }
    if let Some(p) = spec.process_mut().as_mut() {
        let mut env = p.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("container=")) {
            env.push("container=nestrun".into());
        }
        p.set_env(Some(env));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::testutil::{docker_like, facts};
    use libcontainer::oci_spec::runtime::ProcessBuilder;

    fn with_args(args: &[&str]) -> Spec {
        let mut spec = docker_like();
        spec.set_process(Some(ProcessBuilder::default().args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).build().unwrap()));
        spec
    }

    #[test]
    fn init_gets_run_tmpfs_with_one_option_per_element() {
        let spec = rewrite(with_args(&["/sbin/init"]), &facts()).unwrap();
        let ms = spec.mounts().clone().unwrap();
        for dest in ["/run", "/run/lock"] {
            let m = ms.iter().find(|m| m.destination().to_str() == Some(dest)).unwrap_or_else(|| panic!("no {dest} mount"));
            assert_eq!(m.typ().as_deref(), Some("tmpfs"));
            for o in m.options().as_ref().unwrap() {
                assert!(!o.contains(','), "{dest}: option {o:?} joins several (fsconfig takes one key each)");
            }
        }
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&"container=nestrun".to_string()), "{env:?}");
    }

    #[test]
    fn other_processes_are_untouched() {
        let before = with_args(&["sh"]);
        let after = rewrite(before.clone(), &facts()).unwrap();
        assert_eq!(before, after);
    }
}
