//! Pod networking that the pod's root owns. containerd 1.x makes a pod's network namespace
//! before the sandbox, in the host's user namespace, and CNI configures it there; root in a
//! user-namespaced pod then has no say over it (no `ip link add`, no iptables, no sysfs), so an
//! inner dockerd cannot make its bridge. nestrun gives the sandbox a network namespace of its
//! own (made inside the pod's user namespace) and, right after create, moves the interfaces
//! CNI configured into it with their addresses and routes. Every app container joins
//! `/proc/<sandbox pid>/ns/net`, i.e. the new namespace. The engine's namespace stays behind
//! empty but for `lo`: CNI DEL finds no interface there (the bridge plugin takes that as
//! done), releases the IP, and the host side of the veth pair goes when the pod's namespace
//! does.
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::HostError;

/// Does `path` name a network namespace that the host's user namespace owns (one an engine
/// made for the pod), as opposed to one made inside a container's own?
pub fn host_owned(path: &Path) -> bool {
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    let Ok(ns) = std::fs::File::open(path) else { return false };
    // SAFETY: an ioctl on a descriptor we own; it returns a new descriptor or -1.
    let owner = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS as _) };
    if owner < 0 {
        return false;
    }
    // SAFETY: owner is a new descriptor nobody else owns.
    let owner = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(owner) };
    use std::os::unix::fs::MetadataExt;
    let id = |m: &std::fs::Metadata| (m.dev(), m.ino());
    matches!((owner.metadata(), std::fs::metadata("/proc/self/ns/user")), (Ok(a), Ok(b)) if id(&a) == id(&b))
}

/// `ip ARGS` run inside the network namespace `ns`, with `batch` on its stdin (`-batch -`).
fn ip_in(ns: &Path, args: &[&str], batch: Option<&str>) -> Result<String, HostError> {
    let f = std::fs::File::open(ns).map_err(super::io("open network namespace", ns))?;
    let fd = f.as_raw_fd();
    let mut cmd = Command::new("ip");
    cmd.args(args);
    // SAFETY: only setns (async-signal-safe) between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let what = format!("ip {}{}", args.join(" "), batch.map(|b| format!(" <<< {:?}", b)).unwrap_or_default());
    let run = |e| HostError::Io { what: "run ip (iproute2) in", path: ns.into(), source: e };
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(run)?;
    if let (Some(b), Some(mut stdin)) = (batch, child.stdin.take()) {
        use std::io::Write;
        stdin.write_all(b.as_bytes()).map_err(run)?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().map_err(run)?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(HostError::Io { what: "ip in", path: ns.into(), source: std::io::Error::other(format!("{what}: {msg}")) });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What to replay in the new namespace: `ip addr add` and `ip route add` argument lists.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub links: Vec<String>,
    pub addrs: Vec<Vec<String>>,
    pub routes: Vec<Vec<String>>,
}

/// Pure: the plan from `ip -j addr show` and `ip -j route show` (IPv4 and IPv6) output.
/// A default route is written as its prefix, so one `ip -batch` replays both families.
pub fn plan(addrs: &str, routes4: &str, routes6: &str) -> Plan {
    let mut p = Plan::default();
    let list = |t: &str| serde_json::from_str::<Vec<Value>>(t).unwrap_or_default();
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    for link in list(addrs) {
        let Some(name) = s(&link, "ifname").filter(|n| n != "lo") else { continue };
        for a in link.get("addr_info").and_then(Value::as_array).into_iter().flatten() {
            let (Some(local), Some(len)) = (s(a, "local"), a.get("prefixlen").and_then(Value::as_u64)) else { continue };
            if s(a, "scope").as_deref() == Some("link") && local.starts_with("fe80") {
                continue; // the kernel makes the link-local address again
            }
            let mut args = vec![format!("{local}/{len}"), "dev".into(), name.clone()];
            if let Some(b) = s(a, "broadcast") {
                args.extend(["broadcast".into(), b]);
            }
            p.addrs.push(args);
        }
        p.links.push(name);
    }
    // Routes through a gateway need the gateway's own route first: direct ones go first.
    let mut direct = Vec::new();
    let mut via = Vec::new();
    for (family, text) in [("-4", routes4), ("-6", routes6)] {
        for r in list(text) {
            let (Some(dst), Some(dev)) = (s(&r, "dst"), s(&r, "dev")) else { continue };
            if !p.links.contains(&dev) || s(&r, "protocol").as_deref() == Some("kernel") || dst.starts_with("fe80") || dst.starts_with("ff00") {
                continue;
            }
            let dst = match (dst.as_str(), family) {
                ("default", "-4") => "0.0.0.0/0".to_string(),
                ("default", _) => "::/0".to_string(),
                _ => dst,
            };
            let mut args = vec![family.to_string(), dst, "dev".into(), dev];
            for (key, field) in [("via", "gateway"), ("src", "prefsrc"), ("scope", "scope"), ("proto", "protocol")] {
                if let Some(v) = s(&r, field).filter(|v| !(field == "scope" && v == "global")) {
                    args.extend([key.to_string(), v]);
                }
            }
            if let Some(m) = r.get("metric").and_then(Value::as_u64) {
                args.extend(["metric".into(), m.to_string()]);
            }
            if s(&r, "gateway").is_some() { via.push(args) } else { direct.push(args) }
        }
    }
    p.routes = direct.into_iter().chain(via).collect();
    p
}

/// Moves the interfaces of the engine's namespace `from` (but `lo`) into the network namespace
/// of process `pid`, then gives them their addresses and routes there and brings them up.
/// Three `ip` runs: one reads, one moves, one configures (`-batch`; each run costs a few ms).
pub fn adopt(from: &Path, pid: i32) -> Result<Plan, HostError> {
    let to = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let read = ip_in(from, &["-j", "-batch", "-"], Some("addr show\nroute show\n"))?;
    let mut docs = read.lines().filter(|l| l.trim_start().starts_with('['));
    let (addrs, routes4) = (docs.next().unwrap_or("[]"), docs.next().unwrap_or("[]"));
    // IPv6 routes only where an interface has an IPv6 address of its own (`-6` is no batch word)
    let routes6 = if addrs.contains("\"inet6\"") && addrs.contains("\"scope\":\"global\"") { ip_in(from, &["-j", "-6", "route", "show"], None)? } else { "[]".into() };
    let p = plan(addrs, routes4, &routes6);
    if p.links.is_empty() {
        return Ok(p);
    }
    let moves: String = p.links.iter().map(|l| format!("link set dev {l} netns {pid}\n")).collect();
    ip_in(from, &["-batch", "-"], Some(&moves))?;
    let mut conf = String::from("link set lo up\n");
    conf.extend(p.links.iter().map(|l| format!("link set dev {l} up\n")));
    conf.extend(p.addrs.iter().map(|a| format!("addr add {}\n", a.join(" "))));
    conf.extend(p.routes.iter().map(|r| format!("route replace {}\n", r[1..].join(" "))));
    ip_in(&to, &["-batch", "-"], Some(&conf))?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    // `ip -j addr show` / `ip -j route show` of a CNI bridge + host-local pod (iproute2 6.1).
    const ADDRS: &str = r#"[{"ifindex":1,"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]},
        {"ifindex":3,"ifname":"eth0","link_index":9,"addr_info":[{"family":"inet","local":"10.88.77.5","prefixlen":24,"broadcast":"10.88.77.255","scope":"global"},
        {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]}]"#;
    const ROUTES4: &str = r#"[{"dst":"default","gateway":"10.88.77.1","dev":"eth0","flags":[]},
        {"dst":"10.88.77.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"10.88.77.5","flags":[]},
        {"dst":"10.96.0.0/12","dev":"eth0","scope":"link","metric":100,"flags":[]}]"#;

    #[test]
    fn plan_replays_addresses_and_routes_but_not_the_kernels() {
        let p = plan(ADDRS, ROUTES4, "[]");
        assert_eq!(p.links, vec!["eth0"]);
        assert_eq!(p.addrs, vec![vec!["10.88.77.5/24", "dev", "eth0", "broadcast", "10.88.77.255"]]);
        assert_eq!(
            p.routes,
            vec![
                vec!["-4", "10.96.0.0/12", "dev", "eth0", "scope", "link", "metric", "100"],
                vec!["-4", "0.0.0.0/0", "dev", "eth0", "via", "10.88.77.1"],
            ],
            "direct routes first, then those through a gateway; the address's own route is the kernel's"
        );
        assert_eq!(plan("not json", "", ""), Plan::default());
    }

    #[test]
    fn the_hosts_own_network_namespace_is_host_owned() {
        assert!(host_owned(Path::new("/proc/self/ns/net")));
        assert!(!host_owned(Path::new("/nonexistent")));
    }
}
