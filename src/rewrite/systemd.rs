//! systemd as init: it needs tmpfs at /run and /run/lock and the `container` environment
//! variable (how it detects a container and skips hardware units). Applied when the process is
//! an init (`/sbin/init`, `.../systemd`); a mount the spec already has wins.
use libcontainer::oci_spec::runtime::{MountBuilder, Spec};

use super::{add_mount, RewriteError};
use crate::facts::Facts;

pub fn is_systemd(spec: &Spec) -> bool {
    let arg0 = spec.process().as_ref().and_then(|p| p.args().as_ref()).and_then(|a| a.first().cloned()).unwrap_or_default();
    matches!(arg0.as_str(), "/sbin/init" | "/lib/systemd/systemd" | "/usr/lib/systemd/systemd" | "/usr/sbin/init")
}

pub fn rewrite(mut spec: Spec, _facts: &Facts) -> Result<Spec, RewriteError> {
    if !is_systemd(&spec) {
        return Ok(spec);
    }
    for (dest, opts) in [("/run", "mode=755,size=65536k"), ("/run/lock", "mode=1777,size=5120k")] {
        let mut o: Vec<String> = ["rw", "nosuid", "nodev", "noexec"].map(String::from).to_vec();
        o.push(opts.to_string());
        let m = MountBuilder::default().destination(dest).typ("tmpfs").source("tmpfs").options(o).build().expect("all fields set");
        add_mount(&mut spec, m);
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
