//! The privileged operations behind one trait ([`Plumbing`]), so the engine's network logic can
//! be unit-tested unprivileged with [`Recorder`], and the real implementation ([`Linux`]) stays
//! small: netlink in-process, one short thread per container sandbox, `nft` once per network
//! change (never per container).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::netlink::{Link, Netlink};
use crate::NetError;

/// The interface alias of every bridge Berth creates: reconciliation removes only bridges
/// carrying it, never another engine's (dockerd also names its bridges `br-<id>`).
pub const OWNER_ALIAS: &str = "berth";

/// Where Docker's embedded resolver listens inside each container.
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// One container interface on a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Host end of the veth pair (`veth` + 7 hex digits, like Docker's).
    pub host_veth: String,
    /// Name inside the container (`eth0`, `eth1`, ...).
    pub ifname: String,
    pub bridge: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// Default route via this address (the first non-internal network only).
    pub gateway: Option<Ipv4Addr>,
    pub mac: [u8; 6],
}

/// The embedded resolver's sockets, bound inside a container's namespace.
pub struct DnsSockets {
    pub udp: std::net::UdpSocket,
    pub tcp: std::net::TcpListener,
}

pub trait Plumbing: Send + Sync {
    /// Create the bridge with its gateway address, up, unless it exists.
    fn ensure_bridge(&self, name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), NetError>;
    fn delete_link(&self, name: &str) -> Result<(), NetError>;
    fn links(&self) -> Result<Vec<Link>, NetError>;
    /// A new network namespace bind-mounted at `path`, lo up, the endpoints in it, and (with
    /// `dns`) the resolver sockets on 127.0.0.11:53. Nothing is left behind on failure.
    fn create_sandbox(&self, path: &Path, endpoints: &[EndpointSpec], dns: bool) -> Result<Option<DnsSockets>, NetError>;
    /// Add one endpoint to an existing sandbox (`network connect` of a running container).
    fn add_endpoint(&self, path: &Path, ep: &EndpointSpec) -> Result<(), NetError>;
    /// Resolver sockets in an existing sandbox (after a daemon restart, or a first user network).
    fn bind_dns(&self, path: &Path) -> Result<DnsSockets, NetError>;
    /// Drop the namespace file. The kernel then destroys the namespace (and with it both ends
    /// of its veth pairs) once the container's processes are gone, batched in its own cleanup
    /// work: deleting a veth synchronously costs ~10-30 ms of RCU grace period per container,
    /// which `docker run --rm` would wait for.
    fn destroy_sandbox(&self, path: &Path) -> Result<(), NetError>;
    /// Delete one endpoint's veth pair now (`network disconnect`, reconciliation).
    fn remove_endpoint(&self, host_veth: &str) -> Result<(), NetError>;
    /// Replace Berth's whole nftables table atomically with `ruleset` (`nft -f`).
    fn apply_firewall(&self, ruleset: &str) -> Result<(), NetError>;
    fn enable_forwarding(&self) -> Result<(), NetError>;
    /// Namespace files present under `dir` (for reconciliation).
    fn sandboxes(&self, dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
    }
}

/// The real thing.
pub struct Linux;

fn io(ctx: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> NetError {
    move |e| NetError::Io(format!("{ctx}: {e}"))
}

/// Run `f` on a fresh OS thread (namespace changes stay on that thread, which then ends).
fn on_thread<T: Send + 'static>(f: impl FnOnce() -> Result<T, NetError> + Send + 'static) -> Result<T, NetError> {
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(f)
        .map_err(io("spawning the namespace thread"))?
        .join()
        .map_err(|_| NetError::Io("namespace thread panicked".into()))?
}

fn setns(path: &Path) -> Result<std::fs::File, NetError> {
    let f = std::fs::File::open(path).map_err(io(format!("open {}", path.display())))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Io(format!("setns {}: {e}", path.display())))?;
    Ok(f)
}

fn configure_inside(cnl: &mut Netlink, ep: &EndpointSpec) -> Result<(), NetError> {
    let l = cnl.link_by_name(&ep.ifname)?.ok_or_else(|| NetError::Netlink(format!("{} did not arrive in the namespace", ep.ifname)))?;
    cnl.add_addr(l.index, IpAddr::V4(ep.ip), ep.prefix)?;
    cnl.set_up(l.index, None)?;
    if let Some(gw) = ep.gateway {
        cnl.add_default_route(IpAddr::V4(gw))?;
    }
    Ok(())
}

fn attach_host(hnl: &mut Netlink, ep: &EndpointSpec, ns: &std::fs::File, created: &mut Vec<String>) -> Result<(), NetError> {
    let bridge = hnl.link_by_name(&ep.bridge)?.ok_or_else(|| NetError::Netlink(format!("bridge {} is missing", ep.bridge)))?;
    hnl.add_veth(&ep.host_veth, &ep.ifname, ns.as_raw_fd(), Some(ep.mac))?;
    created.push(ep.host_veth.clone());
    let host = hnl.link_by_name(&ep.host_veth)?.ok_or_else(|| NetError::Netlink(format!("{} vanished", ep.host_veth)))?;
    hnl.set_up(host.index, Some(bridge.index))?;
    Ok(())
}

fn dns_sockets() -> Result<DnsSockets, NetError> {
    let addr = std::net::SocketAddr::from((DNS_ADDR, 53));
    let udp = std::net::UdpSocket::bind(addr).map_err(io("bind 127.0.0.11:53/udp"))?;
    let tcp = std::net::TcpListener::bind(addr).map_err(io("bind 127.0.0.11:53/tcp"))?;
    udp.set_nonblocking(true).map_err(io("nonblocking"))?;
    tcp.set_nonblocking(true).map_err(io("nonblocking"))?;
    Ok(DnsSockets { udp, tcp })
}

fn remove_ns_file(path: &Path) {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

impl Plumbing for Linux {
    fn ensure_bridge(&self, name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        let mut nl = Netlink::open()?;
        if nl.link_by_name(name)?.is_none() {
            nl.add_bridge(name, OWNER_ALIAS)?;
        }
        let l = nl.link_by_name(name)?.ok_or_else(|| NetError::Netlink(format!("bridge {name} vanished")))?;
        match nl.add_addr(l.index, IpAddr::V4(gateway), prefix) {
            Ok(()) => {}
            Err(NetError::Netlink(e)) if e.contains("exists") => {}
            Err(e) => return Err(e),
        }
        nl.set_up(l.index, None)
    }

    fn delete_link(&self, name: &str) -> Result<(), NetError> {
        let mut nl = Netlink::open()?;
        if let Some(l) = nl.link_by_name(name)? {
            nl.del_link(l.index)?;
        }
        Ok(())
    }

    fn links(&self) -> Result<Vec<Link>, NetError> {
        Netlink::open()?.links()
    }

    fn create_sandbox(&self, path: &Path, endpoints: &[EndpointSpec], dns: bool) -> Result<Option<DnsSockets>, NetError> {
        let path = path.to_path_buf();
        let eps = endpoints.to_vec();
        on_thread(move || {
            let mut hnl = Netlink::open()?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io(format!("mkdir {}", dir.display())))?;
            }
            std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(io(format!("create {}", path.display())))?;
            let mut created: Vec<String> = Vec::new();
            let made = (|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Io(format!("unshare: {e}")))?;
                nix::mount::mount(Some("/proc/thread-self/ns/net"), &path, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
                    .map_err(|e| NetError::Io(format!("bind-mount the namespace on {}: {e}", path.display())))?;
                let ns = std::fs::File::open(&path).map_err(io(format!("open {}", path.display())))?;
                let mut cnl = Netlink::open()?;
                cnl.set_up(1, None)?; // lo
                for ep in &eps {
                    attach_host(&mut hnl, ep, &ns, &mut created)?;
                    configure_inside(&mut cnl, ep)?;
                }
                if dns {
                    Ok(Some(dns_sockets()?))
                } else {
                    Ok(None)
                }
            })();
            if made.is_err() {
                // Only what this call made: a name clash must not take another sandbox's veth.
                for v in &created {
                    if let Ok(Some(l)) = hnl.link_by_name(v) {
                        let _ = hnl.del_link(l.index);
                    }
                }
                remove_ns_file(&path);
            }
            made
        })
    }

    fn add_endpoint(&self, path: &Path, ep: &EndpointSpec) -> Result<(), NetError> {
        let path = path.to_path_buf();
        let ep = ep.clone();
        on_thread(move || {
            let mut hnl = Netlink::open()?;
            let ns = std::fs::File::open(&path).map_err(io(format!("open {}", path.display())))?;
            let mut created = Vec::new();
            attach_host(&mut hnl, &ep, &ns, &mut created).inspect_err(|_| {
                for v in &created {
                    if let Ok(Some(l)) = hnl.link_by_name(v) {
                        let _ = hnl.del_link(l.index);
                    }
                }
            })?;
            let inside = (|| {
                setns(&path)?;
                let mut cnl = Netlink::open()?;
                configure_inside(&mut cnl, &ep)
            })();
            if inside.is_err() {
                if let Ok(Some(l)) = hnl.link_by_name(&ep.host_veth) {
                    let _ = hnl.del_link(l.index);
                }
            }
            inside
        })
    }

    fn bind_dns(&self, path: &Path) -> Result<DnsSockets, NetError> {
        let path = path.to_path_buf();
        on_thread(move || {
            setns(&path)?;
            dns_sockets()
        })
    }

    fn destroy_sandbox(&self, path: &Path) -> Result<(), NetError> {
        remove_ns_file(path);
        Ok(())
    }

    fn remove_endpoint(&self, host_veth: &str) -> Result<(), NetError> {
        self.delete_link(host_veth)
    }

    fn apply_firewall(&self, ruleset: &str) -> Result<(), NetError> {
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(io("running nft (Debian package nftables)"))?;
        child.stdin.take().expect("piped").write_all(ruleset.as_bytes()).map_err(io("writing to nft"))?;
        let out = child.wait_with_output().map_err(io("waiting for nft"))?;
        if !out.status.success() {
            return Err(NetError::Firewall(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(())
    }

    fn enable_forwarding(&self) -> Result<(), NetError> {
        let p = "/proc/sys/net/ipv4/ip_forward";
        if std::fs::read_to_string(p).map(|s| s.trim() == "1").unwrap_or(false) {
            return Ok(());
        }
        std::fs::write(p, "1").map_err(io(p))
    }
}

/// A fake that records what was asked, for unit tests of the logic above the plumbing.
#[derive(Default)]
pub struct Recorder {
    pub calls: Mutex<Vec<String>>,
    pub firewall: Mutex<String>,
    pub fail_sandbox: Mutex<bool>,
}

impl Recorder {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn push(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
}

impl Plumbing for Recorder {
    fn ensure_bridge(&self, name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        self.push(format!("bridge {name} {gateway}/{prefix}"));
        Ok(())
    }
    fn delete_link(&self, name: &str) -> Result<(), NetError> {
        self.push(format!("del {name}"));
        Ok(())
    }
    fn links(&self) -> Result<Vec<Link>, NetError> {
        Ok(Vec::new())
    }
    fn create_sandbox(&self, path: &Path, endpoints: &[EndpointSpec], dns: bool) -> Result<Option<DnsSockets>, NetError> {
        if *self.fail_sandbox.lock().unwrap() {
            return Err(NetError::Netlink("injected failure".into()));
        }
        let eps: Vec<String> = endpoints.iter().map(|e| format!("{}:{}@{}={}/{}", e.host_veth, e.ifname, e.bridge, e.ip, e.prefix)).collect();
        self.push(format!("sandbox {} [{}] dns={dns}", path.display(), eps.join(" ")));
        Ok(None)
    }
    fn add_endpoint(&self, path: &Path, ep: &EndpointSpec) -> Result<(), NetError> {
        self.push(format!("connect {} {}@{}={}", path.display(), ep.ifname, ep.bridge, ep.ip));
        Ok(())
    }
    fn bind_dns(&self, path: &Path) -> Result<DnsSockets, NetError> {
        Err(NetError::Io(format!("no DNS sockets in the recorder ({})", path.display())))
    }
    fn destroy_sandbox(&self, path: &Path) -> Result<(), NetError> {
        self.push(format!("destroy {}", path.display()));
        Ok(())
    }
    fn remove_endpoint(&self, host_veth: &str) -> Result<(), NetError> {
        self.push(format!("disconnect {host_veth}"));
        Ok(())
    }
    fn apply_firewall(&self, ruleset: &str) -> Result<(), NetError> {
        *self.firewall.lock().unwrap() = ruleset.to_string();
        self.push("firewall".into());
        Ok(())
    }
    fn enable_forwarding(&self) -> Result<(), NetError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root only: everything happens inside a namespace this test's thread creates, so the host
    /// sees nothing. Builds a bridge, two sandboxes, checks they reach each other over it, and
    /// that destroying a sandbox leaves no veth and no namespace file.
    #[test]
    fn sandboxes_on_a_bridge_in_a_private_namespace() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            // Threads spawned by Linux start in the namespace of their creator: this one.
            let p = Linux;
            p.ensure_bridge("brtest0", Ipv4Addr::new(10, 77, 0, 1), 24).unwrap();
            p.ensure_bridge("brtest0", Ipv4Addr::new(10, 77, 0, 1), 24).unwrap();
            assert!(p.links().unwrap().iter().any(|l| l.name == "brtest0" && l.kind == "bridge" && l.alias == OWNER_ALIAS));
            let ep = |n: u8| EndpointSpec {
                host_veth: format!("vethtest{n}"),
                ifname: "eth0".into(),
                bridge: "brtest0".into(),
                ip: Ipv4Addr::new(10, 77, 0, n),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 77, 0, 1)),
                mac: crate::ipam::mac_for(Ipv4Addr::new(10, 77, 0, n)),
            };
            let a = d.join("a");
            let t = std::time::Instant::now();
            let dns = p.create_sandbox(&a, &[ep(2)], true).unwrap();
            let setup = t.elapsed();
            assert!(dns.is_some());
            p.create_sandbox(&d.join("b"), &[ep(3)], false).unwrap();
            // Same name twice: refused, and nothing half-made.
            assert!(p.create_sandbox(&d.join("c"), &[ep(3)], false).is_err());
            assert!(!d.join("c").exists());
            // From sandbox a, a TCP listener in sandbox b is reachable over the bridge.
            let b = d.join("b");
            let l = std::thread::spawn({
                let b = b.clone();
                move || {
                    setns(&b).unwrap();
                    std::net::TcpListener::bind("10.77.0.3:7000").unwrap()
                }
            })
            .join()
            .unwrap();
            let ok = std::thread::spawn(move || {
                setns(&a).unwrap();
                std::net::TcpStream::connect_timeout(&"10.77.0.3:7000".parse().unwrap(), std::time::Duration::from_secs(3)).is_ok()
            })
            .join()
            .unwrap();
            assert!(ok, "sandbox a cannot reach b over the bridge");
            drop(l);
            // The resolver sockets hold the namespace too (the engine closes them at stop).
            drop(dns);
            let t = std::time::Instant::now();
            p.destroy_sandbox(&d.join("a")).unwrap();
            let teardown = t.elapsed();
            p.remove_endpoint("vethtest3").unwrap();
            p.destroy_sandbox(&d.join("b")).unwrap();
            // The kernel takes the namespaces and their veths down on its own, promptly.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let names: Vec<String> = p.links().unwrap().into_iter().map(|l| l.name).collect();
                if !names.iter().any(|n| n.starts_with("vethtest")) {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "veths left: {names:?}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            assert!(!d.join("a").exists() && !d.join("b").exists());
            p.delete_link("brtest0").unwrap();
            assert!(!p.links().unwrap().iter().any(|l| l.name == "brtest0"));
            eprintln!("sandbox setup {setup:?}, teardown {teardown:?}");
        })
        .join()
        .unwrap();
    }
}
