//! Per-container network setup and teardown cost, measured on the real plumbing inside a private
//! network namespace this program creates (root). Prints medians; asserts nothing.
//!
//!     cargo run --release -p berth-network --example sandbox_cost [N]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use berth_network::ipam::{mac_for, Ipam};
use berth_network::plumbing::{EndpointSpec, Linux, Plumbing};

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_path_buf();
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (needs root)");
        let p = Linux;
        let mut ipam = Ipam::new("10.88.0.0/16".parse().unwrap(), None).unwrap();
        p.ensure_bridge("brcost0", ipam.gateway, 16).unwrap();
        let (mut setup, mut teardown) = (Vec::new(), Vec::new());
        for i in 0..n {
            let ip: Ipv4Addr = ipam.allocate(None).unwrap();
            let ep = EndpointSpec {
                host_veth: format!("vethc{i}"),
                ifname: "eth0".into(),
                bridge: "brcost0".into(),
                ip,
                prefix: 16,
                gateway: Some(ipam.gateway),
                mac: mac_for(ip),
            };
            let path = d.join(format!("ns{i}"));
            let t = Instant::now();
            let dns = p.create_sandbox(&path, &[ep], true).unwrap();
            setup.push(t.elapsed());
            drop(dns);
            let t = Instant::now();
            p.destroy_sandbox(&path).unwrap();
            teardown.push(t.elapsed());
        }
        println!(
            "{n} sandboxes (netns file + veth on a bridge + address + route + DNS sockets): setup median {:?}, teardown median {:?}",
            median(&mut setup),
            median(&mut teardown)
        );
        p.delete_link("brcost0").unwrap();
    })
    .join()
    .unwrap();
}
