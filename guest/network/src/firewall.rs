//! Berth's nftables table, generated whole from the list of networks and applied atomically
//! (`nft -f` with `delete table` + the new table in one transaction). One table owned by Berth
//! means cleanup is a single `delete table`, nothing is left in other tables, and a restart
//! after kill -9 converges by rewriting it. Rules are per network, never per container.

use ipnet::Ipv4Net;

pub const TABLE: &str = "berth";

/// What the firewall needs to know about one bridge network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwNetwork {
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// `--internal`: no traffic leaves or enters the bridge (and no masquerade).
    pub internal: bool,
    /// Outbound NAT for traffic leaving through another interface.
    pub masquerade: bool,
}

fn q(s: &str) -> String {
    format!("\"{}\"", s.replace(['"', '\\'], ""))
}

/// The nft script that replaces Berth's table (or just deletes it when there are no networks).
pub fn ruleset(nets: &[FwNetwork]) -> String {
    let mut s = format!("table ip {TABLE}\ndelete table ip {TABLE}\n");
    if nets.is_empty() {
        return s;
    }
    s.push_str(&format!("table ip {TABLE} {{\n"));
    s.push_str("  chain forward {\n    type filter hook forward priority filter; policy accept;\n");
    for n in nets {
        let br = q(&n.bridge);
        if n.internal {
            s.push_str(&format!("    iifname {br} oifname != {br} drop\n    oifname {br} iifname != {br} drop\n"));
        }
        // Isolation: nothing from this bridge reaches another Berth bridge.
        let others: Vec<String> = nets.iter().filter(|o| o.bridge != n.bridge).map(|o| q(&o.bridge)).collect();
        if !others.is_empty() {
            s.push_str(&format!("    iifname {br} oifname {{ {} }} drop\n", others.join(", ")));
        }
    }
    s.push_str("  }\n");
    s.push_str("  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n");
    for n in nets.iter().filter(|n| n.masquerade && !n.internal) {
        s.push_str(&format!("    ip saddr {} oifname != {} masquerade\n", n.subnet, q(&n.bridge)));
    }
    s.push_str("  }\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_per_network() {
        let nets = vec![
            FwNetwork { bridge: "berth0".into(), subnet: "172.17.0.0/16".parse().unwrap(), internal: false, masquerade: true },
            FwNetwork { bridge: "br-aa".into(), subnet: "172.18.0.0/16".parse().unwrap(), internal: true, masquerade: true },
        ];
        let r = ruleset(&nets);
        assert!(r.starts_with("table ip berth\ndelete table ip berth\n"), "{r}");
        assert!(r.contains("ip saddr 172.17.0.0/16 oifname != \"berth0\" masquerade"), "{r}");
        assert!(!r.contains("172.18.0.0/16 oifname"), "internal networks are not masqueraded: {r}");
        assert!(r.contains("iifname \"br-aa\" oifname != \"br-aa\" drop"), "{r}");
        assert!(r.contains("iifname \"berth0\" oifname { \"br-aa\" } drop"), "{r}");
        assert!(r.contains("iifname \"br-aa\" oifname { \"berth0\" } drop"), "{r}");
        assert_eq!(ruleset(&[]), "table ip berth\ndelete table ip berth\n");
    }
}
