//! A small rtnetlink client for `host::podnet`: one NETLINK_ROUTE socket per network namespace,
//! dumps and acknowledged requests, one at a time (netlink-packet-route messages over a
//! netlink-sys socket, the crates libcontainer uses for OCI netDevices).
use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::Socket;

pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

impl Rtnl {
    /// A socket in the network namespace `ns` (an open namespace file: `/proc/<pid>/ns/net`, or
    /// one an engine bind-mounted). A socket stays in the namespace it was made in, so a thread
    /// that lives only for this enters `ns` and makes it; this thread stays where it is.
    pub fn open_in(file: &File) -> io::Result<Rtnl> {
        let sock = std::thread::scope(|s| {
            s.spawn(|| -> io::Result<Socket> {
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                let mut sock = Socket::new(NETLINK_ROUTE)?;
                sock.bind_auto()?;
                Ok(sock)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the thread making the netlink socket panicked")))
        })?;
        Ok(Rtnl { sock, seq: 0 })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        let mut req = NetlinkMessage::from(msg);
        self.seq += 1;
        req.header.flags = flags;
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        Ok(self.seq)
    }

    /// Every message of the kernel's answer to request `seq`, until its end (a dump's DONE or
    /// the ACK); an error answer is returned as the error it carries.
    fn answers(&mut self, seq: u32) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut out = Vec::new();
        loop {
            let (buf, _) = self.sock.recv_from_full()?;
            let mut at = 0;
            while at < buf.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[at..]).map_err(|e| io::Error::other(format!("bad netlink answer: {e}")))?;
                let len = msg.header.length as usize;
                at += len.max(16).next_multiple_of(4);
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Noop | NetlinkPayload::Overrun(_) => {}
                    _ => {}
                }
            }
        }
    }

    /// A dump (`RTM_GET*` with NLM_F_DUMP): every object it lists.
    pub fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP)?;
        self.answers(seq)
    }

    /// A change (`RTM_NEW*`/`RTM_SET*`, with `flags` besides REQUEST and ACK), acknowledged.
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        self.answers(seq).map(drop)
    }
}
