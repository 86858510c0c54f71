//! Pod networking that the pod's root owns. containerd 1.x makes a pod's network namespace
//! before the sandbox, in the host's user namespace, and CNI configures it there; root in a
//! user-namespaced pod then has no say over it (no `ip link add`, no iptables, no sysfs), so an
//! inner dockerd cannot make its bridge. nestrun gives the sandbox a network namespace of its
//! own (made inside the pod's user namespace) and, during create (as soon as the init has that
//! namespace), moves the interfaces CNI configured into it with their addresses and routes. Every app container joins
//! `/proc/<sandbox pid>/ns/net`, i.e. the new namespace. Then the engine's path to its own
//! namespace is re-bound to the pod's (`host::netnspath`): CNI DEL/CHECK and port-forward find
//! the pod's interfaces and listeners there, and the engine's emptied namespace goes. All of it
//! over rtnetlink in this process (`host::rtnl`): no `ip` to run.
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressHeader, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::rtnl::Rtnl;
use super::HostError;

/// Does `path` name a network namespace that the host's user namespace owns (one an engine
/// made for the pod), as opposed to one made inside a container's own?
pub fn host_owned(path: &Path) -> bool {
    std::fs::File::open(path).is_ok_and(|ns| owned_by_host(&ns))
}

/// Is the network namespace file `ns` owned by this process's user namespace?
fn owned_by_host(ns: &std::fs::File) -> bool {
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
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

/// What moves (index in the engine's namespace, name) and what is replayed in the new
/// namespace: the addresses and routes as the kernel listed them there.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub links: Vec<(u32, String)>,
    pub addrs: Vec<AddressMessage>,
    pub routes: Vec<RouteMessage>,
}

fn link_name(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| if let LinkAttribute::IfName(n) = a { Some(n.as_str()) } else { None })
}

/// An address's own address (IFA_LOCAL, else IFA_ADDRESS: IPv6 lists only the latter).
fn addr_of(a: &AddressMessage) -> Option<IpAddr> {
    let get = |local| a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(ip) if local => Some(*ip),
        AddressAttribute::Address(ip) if !local => Some(*ip),
        _ => None,
    });
    get(true).or_else(|| get(false))
}

fn is_v6_link_local_or_multicast(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 || v6.segments()[0] >> 8 == 0xff)
}

fn route_dst(r: &RouteMessage) -> Option<IpAddr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(d) => ip_of(d),
        _ => None,
    })
}

fn ip_of(a: &netlink_packet_route::route::RouteAddress) -> Option<IpAddr> {
    use netlink_packet_route::route::RouteAddress;
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Pure: the plan from the engine namespace's links, addresses and routes (rtnetlink dumps).
/// Every link but `lo` moves. Addresses: all of theirs but IPv6 link-local ones (the kernel
/// makes those again). Routes: those of the main table through a moved link that the kernel
/// did not make itself (an address's prefix route comes back with the address); IPv6 ones
/// only when an IPv6 address moves too; direct routes first, as a gateway needs its own route.
pub fn plan(links: &[LinkMessage], addrs: &[AddressMessage], routes: &[RouteMessage]) -> Plan {
    let links: Vec<(u32, String)> = links.iter().filter_map(|l| link_name(l).filter(|n| *n != "lo").map(|n| (l.header.index, n.to_string()))).collect();
    let moved = |i: u32| links.iter().any(|(x, _)| *x == i);
    let addrs: Vec<AddressMessage> = addrs.iter().filter(|a| moved(a.header.index) && addr_of(a).is_some_and(|ip| !is_v6_link_local_or_multicast(&ip))).cloned().collect();
    let v6 = addrs.iter().any(|a| a.header.family == AddressFamily::Inet6);
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    for r in routes {
        let oif = r.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None });
        let table = r.attributes.iter().find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None }).unwrap_or(r.header.table.into());
        if !oif.is_some_and(moved)
            || table != u32::from(RouteHeader::RT_TABLE_MAIN)
            || r.header.protocol == RouteProtocol::Kernel
            || (r.header.address_family == AddressFamily::Inet6 && !v6)
            || route_dst(r).is_some_and(|d| is_v6_link_local_or_multicast(&d))
        {
            continue;
        }
        let gw = r.attributes.iter().any(|a| matches!(a, RouteAttribute::Gateway(_)));
        if gw { via.push(r.clone()) } else { direct.push(r.clone()) }
    }
    let routes = direct.into_iter().chain(via).collect();
    Plan { links, addrs, routes }
}

/// The request that adds address `a` on link `index` (as `ip addr add` does: local, address,
/// broadcast; prefix length and scope kept).
fn addr_request(a: &AddressMessage, index: u32) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header = AddressHeader { family: a.header.family, prefix_len: a.header.prefix_len, scope: a.header.scope, index, ..AddressHeader::default() };
    let local = addr_of(a);
    m.attributes.extend(local.map(AddressAttribute::Local));
    let address = a.attributes.iter().find_map(|x| if let AddressAttribute::Address(ip) = x { Some(*ip) } else { None }).or(local);
    m.attributes.extend(address.map(AddressAttribute::Address));
    m.attributes.extend(a.attributes.iter().filter(|x| matches!(x, AddressAttribute::Broadcast(_))).cloned());
    m
}

/// The request that replaces route `r` through link `index` in the main table (destination,
/// gateway, preferred source, metric; protocol, scope, type and the onlink flag kept).
fn route_request(r: &RouteMessage, index: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header = RouteHeader {
        address_family: r.header.address_family,
        destination_prefix_length: r.header.destination_prefix_length,
        table: RouteHeader::RT_TABLE_MAIN,
        protocol: r.header.protocol,
        scope: r.header.scope,
        kind: r.header.kind,
        flags: r.header.flags & RouteFlags::Onlink,
        ..RouteHeader::default()
    };
    m.attributes = r.attributes.iter().filter(|a| matches!(a, RouteAttribute::Destination(_) | RouteAttribute::Gateway(_) | RouteAttribute::PrefSource(_) | RouteAttribute::Priority(_))).cloned().collect();
    m.attributes.push(RouteAttribute::Oif(index));
    m
}

fn set_up(index: u32) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(m)
}

fn links(nl: &mut Rtnl) -> std::io::Result<Vec<LinkMessage>> {
    Ok(nl.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?.into_iter().filter_map(|m| if let RouteNetlinkMessage::NewLink(l) = m { Some(l) } else { None }).collect())
}

/// The network namespace of the container's init `pid` once it has made its own (libcontainer's
/// init unshares it early, inside the pod's user namespace): polled (a readlink, with sleeps
/// growing to 1 ms, so 20 pods created at once do not keep the CPUs busy), until `created`
/// says libcontainer's create returned (by then it exists, or the create failed). The init is
/// the runtime's child until its create returns, so its pid cannot be reused meanwhile; the
/// owner of the namespace opened is what decides.
fn pod_netns(pid: i32, created: &AtomicBool) -> Result<(PathBuf, File), HostError> {
    let to = PathBuf::from(format!("/proc/{pid}/ns/net"));
    // the init starts in this process's namespace (the main thread's: the only one that moves)
    let ours = std::fs::read_link("/proc/self/ns/net").ok();
    let mut nap = std::time::Duration::from_micros(250);
    loop {
        let done = created.load(Ordering::Acquire);
        let now = std::fs::read_link(&to).map_err(super::io("read the network namespace link", &to))?;
        if ours.as_ref() != Some(&now) {
            let ns = File::open(&to).map_err(super::io("open network namespace", &to))?;
            if !owned_by_host(&ns) {
                return Ok((to, ns));
            }
        }
        if done {
            return Err(HostError::Io { what: "wait for the sandbox's own network namespace", path: to, source: std::io::Error::other("still the host's after create") });
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(std::time::Duration::from_millis(1));
    }
}

/// Moves the interfaces of the engine's namespace `from` (but `lo`) into the network namespace
/// of the container's init, then gives them their addresses and routes there and brings them
/// up. Runs in a thread beside libcontainer's create: it starts once `pid` has the init's pid
/// (libcontainer patch 15; closed: the create failed first) and the init has its namespace, so
/// the kernel's part (RCU grace periods while a device changes namespace, ~15 ms here)
/// overlaps the init's mounts. Until then it only waits: libcontainer clones its intermediate
/// process from the create's thread before that, and a lock this thread held then would stay
/// locked in the clone.
pub fn adopt(from: &Path, pid: Receiver<i32>, created: &AtomicBool) -> Result<Plan, HostError> {
    let err = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| HostError::Io { what, path, source }
    };
    let pid = pid.recv().map_err(|_| HostError::Io { what: "wait for the sandbox's init to move interfaces from", path: from.into(), source: std::io::Error::other("the create failed first") })?;
    let _t = crate::logging::step("adopt pod interfaces");
    let engine_ns = File::open(from).map_err(err("open network namespace", from))?;
    let mut src = Rtnl::open_in(&engine_ns).map_err(err("open rtnetlink in network namespace", from))?;
    let read = |nl: &mut Rtnl| -> std::io::Result<_> {
        let l = links(nl)?;
        let a = nl.dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))?.into_iter().filter_map(|m| if let RouteNetlinkMessage::NewAddress(a) = m { Some(a) } else { None }).collect::<Vec<_>>();
        let r = nl.dump(RouteNetlinkMessage::GetRoute(RouteMessage::default()))?.into_iter().filter_map(|m| if let RouteNetlinkMessage::NewRoute(r) = m { Some(r) } else { None }).collect::<Vec<_>>();
        Ok(plan(&l, &a, &r))
    };
    let p = read(&mut src).map_err(err("list links, addresses and routes of network namespace", from))?;
    let (to, target) = pod_netns(pid, created)?;
    if !p.links.is_empty() {
        move_in(&mut src, &p, from, &target, &to)?;
    }
    // From now on the engine's path names the pod's namespace (host::netnspath; bound from the
    // descriptor checked above). Best effort: without it only what the engine does in its own
    // path later (CNI DEL/CHECK, port-forward) sees the empty namespace.
    if let Err(e) = super::netnspath::repoint(from, Path::new(&format!("/proc/self/fd/{}", target.as_raw_fd()))) {
        tracing::warn!("the engine's path to the pod's network namespace still names its own (port-forward will not reach the pod): {e}");
    }
    Ok(p)
}

/// The move of `p`'s links (through `src`, a socket in the engine's namespace `from`) into the
/// namespace `target` (at `to`), then their addresses and routes there, links and `lo` up.
fn move_in(src: &mut Rtnl, p: &Plan, from: &Path, target: &File, to: &Path) -> Result<(), HostError> {
    let err = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| HostError::Io { what, path, source }
    };
    for (index, name) in &p.links {
        let mut m = LinkMessage::default();
        m.header.index = *index;
        m.attributes.push(LinkAttribute::NetNsFd(target.as_raw_fd()));
        src.request(RouteNetlinkMessage::SetLink(m), 0).map_err(|e| HostError::Io { what: "move interface out of network namespace", path: from.into(), source: std::io::Error::new(e.kind(), format!("{name} into {}: {e}", to.display())) })?;
    }
    let mut dst = Rtnl::open_in(target).map_err(err("open rtnetlink in network namespace", to))?;
    let conf = |nl: &mut Rtnl| -> std::io::Result<()> {
        let here = links(nl)?;
        let index_of = |name: &str| here.iter().find(|l| link_name(l) == Some(name)).map(|l| l.header.index).ok_or_else(|| std::io::Error::other(format!("no interface {name} after the move")));
        nl.request(set_up(index_of("lo")?), 0)?;
        let new = |old: u32| p.links.iter().find(|(i, _)| *i == old).map(|(_, n)| index_of(n)).unwrap_or_else(|| Err(std::io::Error::other(format!("interface {old} did not move"))));
        for (_, name) in &p.links {
            nl.request(set_up(index_of(name)?), 0)?;
        }
        for a in &p.addrs {
            nl.request(RouteNetlinkMessage::NewAddress(addr_request(a, new(a.header.index)?)), NLM_F_CREATE | NLM_F_EXCL)
                .map_err(|e| std::io::Error::new(e.kind(), format!("add address {:?}: {e}", addr_of(a))))?;
        }
        for r in &p.routes {
            let oif = r.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None }).unwrap_or_default();
            nl.request(RouteNetlinkMessage::NewRoute(route_request(r, new(oif)?)), NLM_F_CREATE | NLM_F_REPLACE)
                .map_err(|e| std::io::Error::new(e.kind(), format!("add route to {:?}/{}: {e}", route_dst(r), r.header.destination_prefix_length)))?;
        }
        Ok(())
    };
    conf(&mut dst).map_err(err("configure the pod's interfaces in network namespace", to))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use netlink_packet_route::address::AddressScope;
    use netlink_packet_route::route::{RouteAddress, RouteScope};

    use super::*;

    fn link(index: u32, name: &str) -> LinkMessage {
        let mut l = LinkMessage::default();
        l.header.index = index;
        l.attributes.push(LinkAttribute::IfName(name.into()));
        l
    }

    fn addr(index: u32, ip: IpAddr, len: u8, scope: AddressScope) -> AddressMessage {
        let mut a = AddressMessage::default();
        a.header = AddressHeader { family: if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 }, prefix_len: len, scope, index, ..AddressHeader::default() };
        a.attributes.push(AddressAttribute::Address(ip));
        if let IpAddr::V4(v4) = ip {
            a.attributes.push(AddressAttribute::Local(ip));
            a.attributes.push(AddressAttribute::Broadcast(Ipv4Addr::from(v4.to_bits() | ((1 << (32 - len)) - 1))));
        }
        a
    }

    fn route(dst: Option<(Ipv4Addr, u8)>, gw: Option<Ipv4Addr>, oif: u32, proto: RouteProtocol, table: u8) -> RouteMessage {
        let mut r = RouteMessage::default();
        r.header.address_family = AddressFamily::Inet;
        r.header.table = table;
        r.header.protocol = proto;
        r.header.scope = if gw.is_some() { RouteScope::Universe } else { RouteScope::Link };
        if let Some((d, len)) = dst {
            r.header.destination_prefix_length = len;
            r.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(d)));
        }
        r.attributes.extend(gw.map(|g| RouteAttribute::Gateway(RouteAddress::Inet(g))));
        r.attributes.push(RouteAttribute::Oif(oif));
        r
    }

    // What a CNI bridge + host-local pod's namespace lists: lo, eth0 with its address, a
    // link-local IPv6 one, the kernel's prefix route, a default route and a service route.
    #[test]
    fn plan_replays_addresses_and_routes_but_not_the_kernels() {
        let links = [link(1, "lo"), link(3, "eth0")];
        let pod_ip = IpAddr::V4(Ipv4Addr::new(10, 88, 77, 5));
        let addrs = [
            addr(1, IpAddr::V4(Ipv4Addr::LOCALHOST), 8, AddressScope::Host),
            addr(3, pod_ip, 24, AddressScope::Universe),
            addr(3, "fe80::1".parse().unwrap(), 64, AddressScope::Link),
        ];
        let main = RouteHeader::RT_TABLE_MAIN;
        let default = route(None, Some(Ipv4Addr::new(10, 88, 77, 1)), 3, RouteProtocol::Boot, main);
        let prefix = route(Some((Ipv4Addr::new(10, 88, 77, 0), 24)), None, 3, RouteProtocol::Kernel, main);
        let service = route(Some((Ipv4Addr::new(10, 96, 0, 0), 12)), None, 3, RouteProtocol::Static, main);
        let local = route(Some((Ipv4Addr::new(10, 88, 77, 5), 32)), None, 3, RouteProtocol::Boot, 255);
        let p = plan(&links, &addrs, &[default.clone(), prefix, service.clone(), local]);
        assert_eq!(p.links, vec![(3, "eth0".to_string())]);
        assert_eq!(p.addrs, vec![addrs[1].clone()], "lo's and the link-local address stay");
        assert_eq!(p.routes, vec![service.clone(), default.clone()], "direct routes first, then those through a gateway; the kernel's and other tables' stay");
        assert_eq!(plan(&[], &[], &[]), Plan::default());
        // the requests: the same address on the new index, the route through it in table main
        let a = addr_request(&addrs[1], 7);
        assert_eq!(a.header.index, 7);
        assert_eq!(a.header.prefix_len, 24);
        assert!(a.attributes.contains(&AddressAttribute::Local(pod_ip)) && a.attributes.contains(&AddressAttribute::Address(pod_ip)));
        assert!(a.attributes.contains(&AddressAttribute::Broadcast(Ipv4Addr::new(10, 88, 77, 255))));
        let r = route_request(&default, 7);
        assert_eq!((r.header.table, r.header.protocol, r.header.scope), (main, RouteProtocol::Boot, RouteScope::Universe));
        assert!(r.attributes.contains(&RouteAttribute::Oif(7)) && !r.attributes.contains(&RouteAttribute::Oif(3)));
        assert!(r.attributes.contains(&RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 88, 77, 1)))));
    }

    #[test]
    fn ipv6_routes_move_only_with_an_ipv6_address() {
        let mut r6 = RouteMessage::default();
        r6.header.address_family = AddressFamily::Inet6;
        r6.header.table = RouteHeader::RT_TABLE_MAIN;
        r6.header.protocol = RouteProtocol::Ra;
        r6.attributes.push(RouteAttribute::Oif(3));
        let links = [link(3, "eth0")];
        let v4 = [addr(3, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 24, AddressScope::Universe)];
        assert!(plan(&links, &v4, &[r6.clone()]).routes.is_empty());
        let v6 = [addr(3, "fd00::2".parse().unwrap(), 64, AddressScope::Universe)];
        assert_eq!(plan(&links, &v6, &[r6.clone()]).routes, vec![r6]);
    }

    #[test]
    fn the_hosts_own_network_namespace_is_host_owned() {
        assert!(host_owned(Path::new("/proc/self/ns/net")));
        assert!(!host_owned(Path::new("/nonexistent")));
    }
}
