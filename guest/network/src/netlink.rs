//! A small synchronous rtnetlink client: the handful of link, address and route requests that
//! berthd needs, built with `netlink-packet-route` and sent on a `netlink-sys` socket.
//!
//! Synchronous on purpose: a socket talks to the network namespace it was opened in, and the
//! per-container work happens on one short-lived thread that moves between namespaces. An
//! async connection (rtnetlink) would need a runtime on that thread for a few requests.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::NetError;

/// One interface as a link dump reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// "bridge", "veth", ... (empty for plain devices such as lo).
    pub kind: String,
    /// Index of the bridge it is enslaved to.
    pub master: Option<u32>,
    /// IFLA_IFALIAS: Berth marks the bridges it creates with [`crate::plumbing::OWNER_ALIAS`].
    pub alias: String,
}

pub struct Netlink {
    sock: Socket,
    seq: u32,
}

fn nl_err(op: &str, e: impl std::fmt::Display) -> NetError {
    NetError::Netlink(format!("{op}: {e}"))
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, NetError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| nl_err("socket", e))?;
        sock.bind_auto().map_err(|e| nl_err("bind", e))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(|e| nl_err("connect", e))?;
        Ok(Netlink { sock, seq: 0 })
    }

    /// Send one request and collect the replies until the ack (or the end of a dump).
    fn request(&mut self, op: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>, NetError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(|e| nl_err(op, e))?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(|e| nl_err(op, e))?;
            let mut off = 0;
            while off < data.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..]).map_err(|e| nl_err(op, e))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(nl_err(op, "zero-length message"));
                }
                off += (len + 3) & !3;
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => match e.code {
                        None => {
                            if !dump {
                                return Ok(out);
                            }
                        }
                        Some(code) => {
                            return Err(NetError::Netlink(format!("{op}: {}", std::io::Error::from_raw_os_error(-code.get()))))
                        }
                    },
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>, NetError> {
        let replies = self.request("dump links", RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_REQUEST | NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(to_link(&l)),
                _ => None,
            })
            .collect())
    }

    /// One link by name (a single GetLink request, no dump).
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NetError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(&format!("get link {name}"), RouteNetlinkMessage::GetLink(m), NLM_F_REQUEST | NLM_F_ACK) {
            Ok(r) => Ok(r.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(to_link(&l)),
                _ => None,
            })),
            Err(NetError::Netlink(e)) if e.contains("No such device") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A bridge named `name`, its alias set to `alias` (how Berth recognises its own bridges).
    pub fn add_bridge(&mut self, name: &str, alias: &str) -> Result<(), NetError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.request(&format!("add bridge {name}"), RouteNetlinkMessage::NewLink(m), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)?;
        // The kernel takes IFLA_IFALIAS on a change, not on creation.
        let l = self.link_by_name(name)?.ok_or_else(|| nl_err("add bridge", format!("{name} vanished")))?;
        let mut m = LinkMessage::default();
        m.header.index = l.index;
        m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        self.request(&format!("set alias of {name}"), RouteNetlinkMessage::SetLink(m), NLM_F_REQUEST | NLM_F_ACK)?;
        Ok(())
    }

    /// A veth pair: `host` here, `peer` created directly in the namespace behind `peer_ns`.
    pub fn add_veth(&mut self, host: &str, peer: &str, peer_ns: RawFd, mac: Option<[u8; 6]>) -> Result<(), NetError> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        p.attributes.push(LinkAttribute::NetNsFd(peer_ns));
        if let Some(mac) = mac {
            p.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(host.to_string()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(&format!("add veth {host}"), RouteNetlinkMessage::NewLink(m), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)?;
        Ok(())
    }

    /// Set a link up, optionally enslaving it to `master` in the same request.
    pub fn set_up(&mut self, index: u32, master: Option<u32>) -> Result<(), NetError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags |= LinkFlags::Up;
        m.header.change_mask |= LinkFlags::Up;
        if let Some(b) = master {
            m.attributes.push(LinkAttribute::Controller(b));
        }
        self.request(&format!("set link {index} up"), RouteNetlinkMessage::SetLink(m), NLM_F_REQUEST | NLM_F_ACK)?;
        Ok(())
    }

    pub fn del_link(&mut self, index: u32) -> Result<(), NetError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.request(&format!("delete link {index}"), RouteNetlinkMessage::DelLink(m), NLM_F_REQUEST | NLM_F_ACK)?;
        Ok(())
    }

    pub fn add_addr(&mut self, index: u32, ip: IpAddr, prefix: u8) -> Result<(), NetError> {
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.header.prefix_len = prefix;
        match ip {
            IpAddr::V4(v4) => {
                m.header.family = AddressFamily::Inet;
                m.attributes.push(AddressAttribute::Address(ip));
                m.attributes.push(AddressAttribute::Local(ip));
                if prefix < 31 {
                    let brd = Ipv4Addr::from(u32::from(v4) | (u32::MAX >> prefix));
                    m.attributes.push(AddressAttribute::Broadcast(brd));
                }
            }
            IpAddr::V6(_) => {
                m.header.family = AddressFamily::Inet6;
                m.attributes.push(AddressAttribute::Address(ip));
            }
        }
        self.request(&format!("add address {ip}/{prefix}"), RouteNetlinkMessage::NewAddress(m), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)?;
        Ok(())
    }

    /// `ip route add default via <gw>`.
    pub fn add_default_route(&mut self, gw: IpAddr) -> Result<(), NetError> {
        let mut m = RouteMessage::default();
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        match gw {
            IpAddr::V4(v4) => {
                m.header.address_family = AddressFamily::Inet;
                m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(v4)));
            }
            IpAddr::V6(v6) => {
                m.header.address_family = AddressFamily::Inet6;
                m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet6(v6)));
            }
        }
        self.request(&format!("add default route via {gw}"), RouteNetlinkMessage::NewRoute(m), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)?;
        Ok(())
    }
}

fn to_link(l: &LinkMessage) -> Link {
    let mut out = Link { index: l.header.index, name: String::new(), kind: String::new(), master: None, alias: String::new() };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => out.name = n.clone(),
            LinkAttribute::Controller(m) => out.master = Some(*m),
            LinkAttribute::IfAlias(a) => out.alias = a.clone(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        out.kind = k.to_string();
                    }
                }
            }
            _ => {}
        }
    }
    out
}
