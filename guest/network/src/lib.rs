//! berth-network: the Linux network plumbing behind berthd's networks and published ports.
//!
//! - [`netlink`]: a small synchronous rtnetlink client (bridges, veth pairs, addresses, routes).
//! - [`plumbing`]: the privileged operations behind one trait, with the real Linux
//!   implementation (one short thread per container sandbox: new netns bind-mounted to a file,
//!   veth created straight into it, addresses and routes set in-process) and a recording fake.
//! - [`ipam`]: subnet choice and address allocation, serializable for persistence.
//! - [`firewall`]: Berth's single nftables table, generated whole and replaced atomically.
//! - [`dns`]: the embedded resolver on 127.0.0.11 inside each container (hickory-proto).
//! - [`proxy`]: published-port listeners relaying with splice(2).

pub mod dns;
pub mod firewall;
pub mod ipam;
pub mod netlink;
pub mod plumbing;
pub mod proxy;

pub use ipnet::Ipv4Net;

#[derive(Debug, Clone, thiserror::Error)]
pub enum NetError {
    /// A netlink request the kernel refused.
    #[error("netlink: {0}")]
    Netlink(String),
    /// A system call or file outside netlink.
    #[error("{0}")]
    Io(String),
    /// `nft` refused the ruleset.
    #[error("nftables: {0}")]
    Firewall(String),
    /// A bad subnet, gateway or address.
    #[error("{0}")]
    Invalid(String),
    /// `--ip` names an address another endpoint has.
    #[error("Address already in use: {0}")]
    AddressInUse(String),
    /// No free address left.
    #[error("no available IPv4 addresses on this network's address pools: {0}")]
    Exhausted(String),
}
