//! IPv4 address management: which subnet a new network gets, which address a new endpoint
//! gets. Pure logic over a serializable state that the engine persists with the network record
//! (so allocations survive a daemon restart and a kill -9 leaves the last written state).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::NetError;

/// Docker's default address pools: 172.17-31.0.0/16, then 192.168.x.0/20.
pub fn default_pools() -> Vec<Ipv4Net> {
    let mut v: Vec<Ipv4Net> = (17..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("valid")).collect();
    v.extend((0..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).expect("valid")));
    v
}

/// The first default pool that overlaps none of `taken` (existing networks and host routes).
pub fn pick_subnet(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    default_pools().into_iter().find(|p| !taken.iter().any(|t| overlaps(p, t)))
}

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// One network's allocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    #[serde(default)]
    pub allocated: BTreeSet<Ipv4Addr>,
    /// The last address handed out: the next search starts after it, so a released address is
    /// not reused at once (stale ARP entries and DNS caches), as Docker does.
    #[serde(default)]
    pub last: Option<Ipv4Addr>,
    /// Addresses never handed out (the network's AuxiliaryAddresses, used by hosts outside
    /// Docker's control).
    #[serde(default)]
    pub reserved: BTreeSet<Ipv4Addr>,
    /// IPRange (`--ip-range`): where addresses are picked from; `--ip` may still name any
    /// address of the subnet.
    #[serde(default)]
    pub range: Option<Ipv4Net>,
}

impl Ipam {
    /// `subnet` must be /30 or larger; the gateway defaults to its first host address.
    pub fn new(subnet: Ipv4Net, gateway: Option<Ipv4Addr>) -> Result<Ipam, NetError> {
        let subnet = subnet.trunc();
        if subnet.prefix_len() > 30 {
            return Err(NetError::Invalid(format!("subnet {subnet} is too small")));
        }
        let gateway = gateway.unwrap_or_else(|| Ipv4Addr::from(u32::from(subnet.network()) + 1));
        if !subnet.contains(&gateway) || gateway == subnet.network() || gateway == subnet.broadcast() {
            return Err(NetError::Invalid(format!("gateway {gateway} is not a host address of {subnet}")));
        }
        Ok(Ipam { subnet, gateway, allocated: BTreeSet::new(), last: None, reserved: BTreeSet::new(), range: None })
    }

    fn usable(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(&ip) && ip != self.subnet.network() && ip != self.subnet.broadcast() && ip != self.gateway
    }

    /// Reserve `wanted` (`--ip`) or the next free address.
    pub fn allocate(&mut self, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr, NetError> {
        if let Some(ip) = wanted {
            if !self.usable(ip) {
                return Err(NetError::Invalid(format!("invalid address {ip}: it does not belong to any of this network's subnets")));
            }
            if self.reserved.contains(&ip) || !self.allocated.insert(ip) {
                return Err(NetError::AddressInUse(ip.to_string()));
            }
            return Ok(ip);
        }
        let pool = self.range.unwrap_or(self.subnet);
        let first = u32::from(pool.network()).max(u32::from(self.subnet.network()) + 1);
        let end = u32::from(pool.broadcast()).min(u32::from(self.subnet.broadcast())) + 1;
        let start = self.last.map(|l| u32::from(l) + 1).filter(|s| *s >= first && *s < end).unwrap_or(first);
        let span = end - first;
        for i in 0..span {
            let cand = Ipv4Addr::from(first + (start - first + i) % span);
            if self.usable(cand) && !self.allocated.contains(&cand) && !self.reserved.contains(&cand) {
                self.allocated.insert(cand);
                self.last = Some(cand);
                return Ok(cand);
            }
        }
        Err(NetError::Exhausted(self.subnet.to_string()))
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.allocated.remove(&ip);
    }
}

/// Docker's MAC for an IPv4 endpoint: 02:42 followed by the address.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn mac_string(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// `aa:bb:cc:dd:ee:ff` (or with `-`), any case; a unicast address only, as a NIC must have.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut m = [0u8; 6];
    for (o, p) in m.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    (m[0] & 1 == 0).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_addresses_and_the_range_bound_what_is_picked() {
        let mut i = Ipam::new("10.9.0.0/24".parse().unwrap(), None).unwrap();
        i.reserved = [Ipv4Addr::new(10, 9, 0, 2), Ipv4Addr::new(10, 9, 0, 3)].into();
        assert_eq!(i.allocate(None).unwrap(), Ipv4Addr::new(10, 9, 0, 4));
        assert!(matches!(i.allocate(Some(Ipv4Addr::new(10, 9, 0, 2))), Err(NetError::AddressInUse(_))));
        let mut i = Ipam::new("10.9.0.0/24".parse().unwrap(), None).unwrap();
        i.range = Some("10.9.0.252/30".parse().unwrap());
        let got: Vec<Ipv4Addr> = (0..3).map(|_| i.allocate(None).unwrap()).collect();
        // .255 is the subnet's broadcast: never an endpoint's.
        assert_eq!(got, [Ipv4Addr::new(10, 9, 0, 252), Ipv4Addr::new(10, 9, 0, 253), Ipv4Addr::new(10, 9, 0, 254)]);
        assert!(matches!(i.allocate(None), Err(NetError::Exhausted(_))));
        // --ip may still name an address outside the range.
        assert_eq!(i.allocate(Some(Ipv4Addr::new(10, 9, 0, 9))).unwrap(), Ipv4Addr::new(10, 9, 0, 9));
    }

    #[test]
    fn subnets_skip_taken_ones() {
        assert_eq!(pick_subnet(&[]).unwrap().to_string(), "172.17.0.0/16");
        let taken: Vec<Ipv4Net> = vec!["172.17.0.0/16".parse().unwrap(), "172.18.5.0/24".parse().unwrap()];
        assert_eq!(pick_subnet(&taken).unwrap().to_string(), "172.19.0.0/16");
        let all: Vec<Ipv4Net> = vec!["172.16.0.0/12".parse().unwrap(), "192.168.0.0/16".parse().unwrap()];
        assert!(pick_subnet(&all).is_none());
    }

    #[test]
    fn allocation_is_sequential_and_does_not_reuse_at_once() {
        let mut i = Ipam::new("10.9.0.0/29".parse().unwrap(), None).unwrap();
        assert_eq!(i.gateway, Ipv4Addr::new(10, 9, 0, 1));
        let a = i.allocate(None).unwrap();
        let b = i.allocate(None).unwrap();
        assert_eq!((a, b), (Ipv4Addr::new(10, 9, 0, 2), Ipv4Addr::new(10, 9, 0, 3)));
        i.release(a);
        assert_eq!(i.allocate(None).unwrap(), Ipv4Addr::new(10, 9, 0, 4));
        assert_eq!(i.allocate(None).unwrap(), Ipv4Addr::new(10, 9, 0, 5));
        assert_eq!(i.allocate(None).unwrap(), Ipv4Addr::new(10, 9, 0, 6));
        // Wraps around to the released one; then the /29 is full.
        assert_eq!(i.allocate(None).unwrap(), a);
        assert!(matches!(i.allocate(None), Err(NetError::Exhausted(_))));
        // Round trip through JSON (the engine persists this).
        let j = serde_json::to_string(&i).unwrap();
        assert_eq!(serde_json::from_str::<Ipam>(&j).unwrap(), i);
    }

    #[test]
    fn static_addresses_and_gateways() {
        let mut i = Ipam::new("10.1.0.0/24".parse().unwrap(), Some(Ipv4Addr::new(10, 1, 0, 254))).unwrap();
        assert_eq!(i.allocate(Some(Ipv4Addr::new(10, 1, 0, 9))).unwrap(), Ipv4Addr::new(10, 1, 0, 9));
        assert!(matches!(i.allocate(Some(Ipv4Addr::new(10, 1, 0, 9))), Err(NetError::AddressInUse(_))));
        assert!(i.allocate(Some(Ipv4Addr::new(10, 1, 0, 254))).is_err());
        assert!(i.allocate(Some(Ipv4Addr::new(10, 2, 0, 1))).is_err());
        assert!(Ipam::new("10.1.0.0/24".parse().unwrap(), Some(Ipv4Addr::new(10, 2, 0, 1))).is_err());
        assert!(Ipam::new("10.1.0.0/31".parse().unwrap(), None).is_err());
        assert_eq!(mac_string(&mac_for(Ipv4Addr::new(172, 17, 0, 2))), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:AC:11:00:0a"), Some([2, 0x42, 0xac, 0x11, 0, 10]));
        assert_eq!(parse_mac("02-42-ac-11-00-0a"), parse_mac("02:42:ac:11:00:0a"));
        for bad in ["", "02:42:ac:11:00", "02:42:ac:11:00:0a:0b", "0242ac11000a", "02:42:ac:11:00:0g", "01:00:5e:00:00:01", "2:42:ac:11:00:0a"] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
