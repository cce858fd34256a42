//! Networks: the predefined `bridge`, `host` and `none`, user-defined bridge networks, container
//! endpoints, the embedded resolver, published ports, and the `/networks` endpoints.
//!
//! What is persisted where: a network's configuration is one JSON record under
//! `<data-root>/networks/` (written at create, removed at rm). A container's endpoints (address,
//! MAC, veth) and its bound ports live in the container record, written in the same update that
//! marks it running, so IPAM state needs no writes of its own: at daemon start it is rebuilt from
//! the containers that are still running (live-restore), and everything else found on the
//! machine (namespace files, veths, bridges, Berth's nftables table) is reconciled to that.
//!
//! Per container the start path costs one short thread (new namespace, veth pairs, addresses and
//! routes by netlink, resolver sockets) and no subprocess; nftables is rewritten only when the
//! set of networks changes.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_network::dns::Resolve;
use berth_network::firewall::FwNetwork;
use berth_network::ipam::{self, Ipam};
use berth_network::plumbing::{EndpointSpec, Plumbing};
use berth_network::proxy::{Bound, Proto};
use berth_network::{Ipv4Net, NetError};
use bollard_stubs::models::EventMessageTypeEnum;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::containers::store::{Container, Status};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::http_util::{json, label_matches, ok_json, status_only, Body, Query};

/// The default bridge's interface (Docker's is docker0).
pub const DEFAULT_BRIDGE: &str = "berth0";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// Docker's message for an unknown network.
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network with name {0} already exists")]
    NameInUse(String),
    #[error("{0} is a pre-defined network and cannot be removed")]
    Predefined(String),
    #[error("error while removing network: network {name} id {id} has active endpoints")]
    ActiveEndpoints { name: String, id: String },
    #[error("Pool overlaps with other one on this address space")]
    Overlap,
    #[error("{0}")]
    Invalid(String),
    #[error("container {container} is not connected to network {network}")]
    NotConnected { container: String, network: String },
    #[error("endpoint with name {container} already exists in network {network}")]
    AlreadyConnected { container: String, network: String },
    /// Docker's wording, which users and tools grep for.
    #[error("driver failed programming external connectivity on endpoint {endpoint}: Bind for {addr} failed: port is already allocated")]
    PortAllocated { endpoint: String, addr: String },
    #[error("{0}")]
    Plumbing(#[from] NetError),
    #[error("network store I/O on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// A network's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    /// "bridge", "host" or "null".
    pub driver: String,
    pub created: String,
    #[serde(default)]
    pub labels: HashMap<String, String>,
    #[serde(default)]
    pub options: HashMap<String, String>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub attachable: bool,
    /// The Linux bridge (bridge driver only).
    #[serde(default)]
    pub bridge: String,
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// IPAM AuxiliaryAddresses: name -> an address of the subnet that is never allocated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
    /// IPAM IPRange: the part of the subnet that addresses are picked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Ipv4Net>,
}

impl NetworkRecord {
    pub fn predefined(&self) -> bool {
        matches!(self.name.as_str(), "bridge" | "host" | "none")
    }
    fn is_bridge(&self) -> bool {
        self.driver == "bridge"
    }
}

/// One endpoint of a running container (kept in the container record).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub network_id: String,
    pub network: String,
    pub endpoint_id: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub host_veth: String,
    pub ifname: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A published port as bound.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortMap {
    pub proto: String,
    pub container_port: u16,
    pub host_ip: String,
    pub host_port: u16,
}

/// What a container asked for on one network (`--network`, `--network-alias`, `--ip`, connect).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointWanted {
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub ipv4: Option<Ipv4Addr>,
    /// `--mac-address` (EndpointSettings.MacAddress), normalised; None: derived from the IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// A container's network state, in its record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetState {
    /// Network name -> what the container asked for there, in connection order.
    #[serde(default)]
    pub wanted: Vec<(String, EndpointWanted)>,
    /// While running: the namespace file, endpoints and bound ports.
    #[serde(default)]
    pub sandbox: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub ports: Vec<PortMap>,
}

/// Live, in-memory parts of a running container's networking.
#[derive(Default)]
struct Live {
    dns: Option<tokio::task::JoinHandle<()>>,
    proxies: Vec<berth_network::proxy::ProxyHandle>,
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(d) = self.dns.take() {
            d.abort();
        }
        self.proxies.clear();
    }
}

pub struct Networks {
    root: PathBuf,
    netns_dir: PathBuf,
    records: Mutex<HashMap<String, NetworkRecord>>,
    /// Allocations per network ID (rebuilt from running containers).
    ipam: Mutex<HashMap<String, Ipam>>,
    /// Endpoints per network ID: container ID -> endpoint (for DNS and inspect).
    endpoints: Mutex<HashMap<String, BTreeMap<String, (String, Endpoint)>>>,
    live: Mutex<HashMap<String, Live>>,
    pub plumbing: Arc<dyn Plumbing>,
    upstreams: Vec<SocketAddr>,
    /// Serializes network create/rm/connect with firewall writes.
    admin: Mutex<()>,
    /// The host side (bridges, forwarding, nftables) is set up after berthd already serves the
    /// API (see [`Networks::setup_host`]); whatever needs it waits here ([`network_ready`]).
    setup: tokio::sync::watch::Sender<Setup>,
    /// Set at daemon shutdown (under `admin`): a setup still waiting then makes nothing, so no
    /// bridge or rule outlives the daemon.
    closed: std::sync::atomic::AtomicBool,
}

/// Where the host-side network setup stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setup {
    Pending,
    Ready,
    /// Why it failed; `retry`: a later request may try the setup again (false when the
    /// kernel's network modules are missing: nothing berthd does brings them).
    Failed { reason: String, retry: bool },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError + '_ {
    move |source| NetworkError::Io { path: path.to_path_buf(), source }
}

fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut b = vec![0u8; bytes];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    hex::encode(b)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// The host's resolvers: `nameserver` lines of /etc/resolv.conf (berthd's own namespace, so
/// loopback resolvers work), or the daemon's `--dns`.
pub fn host_upstreams(dns: &[String]) -> Vec<SocketAddr> {
    let parse = |s: &str| -> Option<SocketAddr> {
        s.parse::<SocketAddr>().ok().or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
    };
    if !dns.is_empty() {
        return dns.iter().filter_map(|d| parse(d)).collect();
    }
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|a| parse(a.trim()))
        .collect()
}

impl Networks {
    pub fn open(data_root: &Path, exec_root: &Path, plumbing: Arc<dyn Plumbing>, dns: &[String]) -> Result<Networks, NetworkError> {
        let root = data_root.join("networks");
        std::fs::create_dir_all(&root).map_err(io_err(&root))?;
        let mut records = HashMap::new();
        for e in std::fs::read_dir(&root).map_err(io_err(&root))?.flatten() {
            let p = e.path();
            if p.extension().map(|x| x == "json").unwrap_or(false) {
                match std::fs::read(&p).ok().and_then(|b| serde_json::from_slice::<NetworkRecord>(&b).ok()) {
                    Some(r) => {
                        records.insert(r.id.clone(), r);
                    }
                    None => tracing::warn!(path = %p.display(), "ignoring an unreadable network record"),
                }
            }
        }
        let n = Networks {
            root,
            netns_dir: exec_root.join("netns"),
            records: Mutex::new(records),
            ipam: Mutex::new(HashMap::new()),
            endpoints: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            plumbing,
            upstreams: host_upstreams(dns),
            admin: Mutex::new(()),
            setup: tokio::sync::watch::channel(Setup::Pending).0,
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        n.ensure_predefined()?;
        Ok(n)
    }

    fn write(&self, r: &NetworkRecord) -> Result<(), NetworkError> {
        let path = self.root.join(format!("{}.json", r.id));
        let tmp = self.root.join(format!("{}.json.tmp", r.id));
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&serde_json::to_vec_pretty(r).expect("serializable")).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    fn ensure_predefined(&self) -> Result<(), NetworkError> {
        let have: Vec<String> = self.records.lock().expect("networks").values().map(|r| r.name.clone()).collect();
        for (name, driver) in [("bridge", "bridge"), ("host", "host"), ("none", "null")] {
            if have.iter().any(|h| h == name) {
                continue;
            }
            let mut r = NetworkRecord {
                id: random_hex(32),
                name: name.into(),
                driver: driver.into(),
                created: now(),
                labels: HashMap::new(),
                options: HashMap::new(),
                internal: false,
                attachable: false,
                bridge: String::new(),
                subnet: None,
                gateway: None,
                aux_addresses: BTreeMap::new(),
                ip_range: None,
            };
            if driver == "bridge" {
                let taken = self.taken_subnets();
                let subnet = ipam::pick_subnet(&taken).ok_or_else(|| NetworkError::Invalid("no free address pool for the default bridge".into()))?;
                let i = Ipam::new(subnet, None)?;
                r.bridge = DEFAULT_BRIDGE.into();
                r.subnet = Some(i.subnet);
                r.gateway = Some(i.gateway);
                r.options.insert("com.docker.network.bridge.name".into(), DEFAULT_BRIDGE.into());
                r.options.insert("com.docker.network.bridge.default_bridge".into(), "true".into());
            }
            self.write(&r)?;
            self.records.lock().expect("networks").insert(r.id.clone(), r);
        }
        Ok(())
    }

    /// Subnets of existing networks plus the routes of this namespace (so a new network does
    /// not shadow the host's LAN or VPN).
    fn taken_subnets(&self) -> Vec<Ipv4Net> {
        let mut v: Vec<Ipv4Net> = self.records.lock().expect("networks").values().filter_map(|r| r.subnet).collect();
        if let Ok(s) = std::fs::read_to_string("/proc/net/route") {
            for l in s.lines().skip(1) {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() < 8 {
                    continue;
                }
                let (Ok(dst), Ok(mask)) = (u32::from_str_radix(f[1], 16), u32::from_str_radix(f[7], 16)) else { continue };
                if mask == 0 {
                    continue;
                }
                let net = Ipv4Addr::from(u32::from_be(dst));
                if let Ok(n) = Ipv4Net::with_netmask(net, Ipv4Addr::from(u32::from_be(mask))) {
                    v.push(n);
                }
            }
        }
        v
    }

    pub fn list(&self) -> Vec<NetworkRecord> {
        let mut v: Vec<NetworkRecord> = self.records.lock().expect("networks").values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Docker's lookup: full ID, exact name, then unique ID prefix.
    pub fn get(&self, key: &str) -> Result<NetworkRecord, NetworkError> {
        let m = self.records.lock().expect("networks");
        if let Some(r) = m.get(key) {
            return Ok(r.clone());
        }
        if let Some(r) = m.values().find(|r| r.name == key) {
            return Ok(r.clone());
        }
        let hits: Vec<&NetworkRecord> = m.values().filter(|r| !key.is_empty() && r.id.starts_with(key)).collect();
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            _ => Err(NetworkError::NotFound(key.to_string())),
        }
    }

    fn firewall_networks(&self) -> Vec<FwNetwork> {
        self.list()
            .into_iter()
            .filter(|r| r.is_bridge())
            .filter_map(|r| {
                Some(FwNetwork {
                    bridge: r.bridge.clone(),
                    subnet: r.subnet?,
                    internal: r.internal,
                    masquerade: r.options.get("com.docker.network.bridge.enable_ip_masquerade").map(|v| v != "false").unwrap_or(true),
                })
            })
            .collect()
    }

    /// Bridges up and Berth's nftables table rewritten for the current set of networks.
    pub fn sync_host(&self) -> Result<(), NetworkError> {
        for r in self.list().into_iter().filter(|r| r.is_bridge()) {
            if let (Some(s), Some(g)) = (r.subnet, r.gateway) {
                self.plumbing.ensure_bridge(&r.bridge, g, s.prefix_len())?;
            }
        }
        self.plumbing.enable_forwarding()?;
        self.plumbing.apply_firewall(&berth_network::firewall::ruleset(&self.firewall_networks()))?;
        Ok(())
    }

    /// The deferred host setup (blocking): once `prereq` says the kernel's network modules are
    /// in (inside the VM, init loads them while berthd already answers), bridges up and
    /// nftables written; then whatever waits in [`Networks::wait_setup`] goes on.
    pub fn setup_host(&self, prereq: Result<(), String>) -> Result<(), String> {
        let st = match prereq {
            Err(reason) => Setup::Failed { reason, retry: false },
            Ok(()) => {
                let _g = self.admin.lock().expect("admin");
                if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err("the engine is shutting down".into());
                }
                match self.sync_host() {
                    Ok(()) => Setup::Ready,
                    Err(e) => Setup::Failed { reason: e.to_string(), retry: true },
                }
            }
        };
        self.setup.send_replace(st.clone());
        match st {
            Setup::Failed { reason, .. } => {
                tracing::warn!("network setup failed: {reason}");
                Err(reason)
            }
            _ => Ok(()),
        }
    }

    /// Wait until the host setup has run: Ok, or why it failed and whether trying again may help.
    pub async fn wait_setup(&self) -> Result<(), (String, bool)> {
        let mut rx = self.setup.subscribe();
        let st = rx.wait_for(|s| *s != Setup::Pending).await.map(|s| s.clone());
        match st {
            Ok(Setup::Failed { reason, retry }) => Err((reason, retry)),
            Ok(_) => Ok(()),
            // Unreachable while `self` (which holds the sender) lives.
            Err(_) => Err(("the engine is shutting down".into(), false)),
        }
    }

    /// The setup's state now.
    pub fn setup_state(&self) -> Setup {
        self.setup.borrow().clone()
    }

    /// Create a user-defined bridge network.
    pub fn create(&self, req: CreateRequest) -> Result<NetworkRecord, NetworkError> {
        let _g = self.admin.lock().expect("admin");
        if req.name.is_empty() || !req.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
            return Err(NetworkError::Invalid(format!("invalid network name {:?}", req.name)));
        }
        if self.get(&req.name).map(|r| r.name == req.name).unwrap_or(false) {
            return Err(NetworkError::NameInUse(req.name));
        }
        let driver = if req.driver.is_empty() { "bridge".to_string() } else { req.driver.clone() };
        if driver != "bridge" {
            return Err(NetworkError::Invalid(format!("plugin \"{driver}\" not found (Berth has the bridge driver)")));
        }
        let taken = self.taken_subnets();
        let (subnet, gateway) = match req.subnet {
            Some(s) => {
                if taken.iter().any(|t| ipam::overlaps(&s, t)) {
                    return Err(NetworkError::Overlap);
                }
                (s, req.gateway)
            }
            None => (ipam::pick_subnet(&taken).ok_or_else(|| NetworkError::Invalid("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network".into()))?, None),
        };
        let i = Ipam::new(subnet, gateway)?;
        if let Some((_, ip)) = req.aux_addresses.iter().find(|(_, ip)| !i.subnet.contains(*ip)) {
            return Err(NetworkError::Invalid(format!("no matching subnet for aux-address {ip}")));
        }
        if let Some(r) = req.ip_range.filter(|r| !i.subnet.contains(r)) {
            return Err(NetworkError::Invalid(format!("no matching subnet for range {r}")));
        }
        let id = random_hex(32);
        let bridge = req.options.get("com.docker.network.bridge.name").cloned().unwrap_or_else(|| format!("br-{}", &id[..12]));
        let r = NetworkRecord {
            id,
            name: req.name,
            driver,
            created: now(),
            labels: req.labels,
            options: req.options,
            internal: req.internal,
            attachable: req.attachable,
            bridge,
            subnet: Some(i.subnet),
            gateway: Some(i.gateway),
            aux_addresses: req.aux_addresses,
            ip_range: req.ip_range,
        };
        self.write(&r)?;
        self.records.lock().expect("networks").insert(r.id.clone(), r.clone());
        if let Err(e) = self.sync_host() {
            // Nothing half-made: the record and the bridge go again.
            self.records.lock().expect("networks").remove(&r.id);
            let _ = std::fs::remove_file(self.root.join(format!("{}.json", r.id)));
            let _ = self.plumbing.delete_link(&r.bridge);
            let _ = self.sync_host();
            return Err(e);
        }
        Ok(r)
    }

    /// Remove a network without active endpoints.
    pub fn remove(&self, key: &str) -> Result<NetworkRecord, NetworkError> {
        let _g = self.admin.lock().expect("admin");
        let r = self.get(key)?;
        if r.predefined() {
            return Err(NetworkError::Predefined(r.name));
        }
        if self.endpoints.lock().expect("endpoints").get(&r.id).map(|m| !m.is_empty()).unwrap_or(false) {
            return Err(NetworkError::ActiveEndpoints { name: r.name, id: r.id });
        }
        let path = self.root.join(format!("{}.json", r.id));
        std::fs::remove_file(&path).map_err(io_err(&path))?;
        self.records.lock().expect("networks").remove(&r.id);
        self.ipam.lock().expect("ipam").remove(&r.id);
        self.plumbing.delete_link(&r.bridge)?;
        self.sync_host()?;
        Ok(r)
    }

    fn ipam_for(&self, r: &NetworkRecord) -> Result<(), NetworkError> {
        let mut m = self.ipam.lock().expect("ipam");
        if !m.contains_key(&r.id) {
            let (Some(s), g) = (r.subnet, r.gateway) else { return Err(NetworkError::Invalid(format!("network {} has no subnet", r.name))) };
            let mut i = Ipam::new(s, g)?;
            i.reserved = r.aux_addresses.values().copied().collect();
            i.range = r.ip_range;
            m.insert(r.id.clone(), i);
        }
        Ok(())
    }

    fn allocate(&self, r: &NetworkRecord, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr, NetworkError> {
        self.ipam_for(r)?;
        Ok(self.ipam.lock().expect("ipam").get_mut(&r.id).expect("just made").allocate(wanted)?)
    }

    fn release(&self, network_id: &str, ip: Ipv4Addr) {
        if let Some(i) = self.ipam.lock().expect("ipam").get_mut(network_id) {
            i.release(ip);
        }
    }

    /// Make a running container's endpoint known (start, connect, live-restore).
    fn register(&self, container_id: &str, container_name: &str, ep: &Endpoint) {
        self.endpoints
            .lock()
            .expect("endpoints")
            .entry(ep.network_id.clone())
            .or_default()
            .insert(container_id.to_string(), (container_name.to_string(), ep.clone()));
    }

    fn unregister(&self, container_id: &str, ep: &Endpoint) {
        if let Some(m) = self.endpoints.lock().expect("endpoints").get_mut(&ep.network_id) {
            m.remove(container_id);
        }
        self.release(&ep.network_id, ep.ip);
    }

    /// Endpoints on a network: container ID -> (container name, endpoint).
    pub fn endpoints_of(&self, network_id: &str) -> BTreeMap<String, (String, Endpoint)> {
        self.endpoints.lock().expect("endpoints").get(network_id).cloned().unwrap_or_default()
    }

    pub fn sandbox_path(&self, id: &str) -> PathBuf {
        self.netns_dir.join(id)
    }

    fn new_endpoint(&self, r: &NetworkRecord, wanted: &EndpointWanted, index: usize, container: &Container) -> Result<Endpoint, NetworkError> {
        let ip = self.allocate(r, wanted.ipv4)?;
        let mut aliases = wanted.aliases.clone();
        if r.name != "bridge" {
            // Docker adds the short ID as an alias on user-defined networks.
            let short = container.id[..12].to_string();
            if !aliases.contains(&short) {
                aliases.push(short);
            }
        }
        Ok(Endpoint {
            network_id: r.id.clone(),
            network: r.name.clone(),
            endpoint_id: random_hex(32),
            ip,
            prefix: r.subnet.map(|s| s.prefix_len()).unwrap_or(16),
            gateway: r.gateway.unwrap_or(Ipv4Addr::UNSPECIFIED),
            mac: wanted.mac.clone().unwrap_or_else(|| ipam::mac_string(&ipam::mac_for(ip))),
            host_veth: format!("veth{}", &random_hex(4)[..7]),
            ifname: format!("eth{index}"),
            aliases,
        })
    }
}

fn spec_of(r: &NetworkRecord, ep: &Endpoint, default_route: bool) -> EndpointSpec {
    EndpointSpec {
        host_veth: ep.host_veth.clone(),
        ifname: ep.ifname.clone(),
        bridge: r.bridge.clone(),
        ip: ep.ip,
        prefix: ep.prefix,
        gateway: default_route.then_some(ep.gateway),
        mac: ipam::parse_mac(&ep.mac).unwrap_or_else(|| ipam::mac_for(ep.ip)),
    }
}

/// The request body of POST /networks/create, reduced to what the bridge driver uses.
#[derive(Debug, Default)]
pub struct CreateRequest {
    pub name: String,
    pub driver: String,
    pub internal: bool,
    pub attachable: bool,
    pub labels: HashMap<String, String>,
    pub options: HashMap<String, String>,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
}

/// How a container is networked, from its HostConfig.NetworkMode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    None,
    Host,
    Container(String),
    Bridge,
}

pub fn mode_of(c: &Container) -> Mode {
    match c.host_config.network_mode.as_deref().unwrap_or("") {
        "none" => Mode::None,
        "host" => Mode::Host,
        m if m.starts_with("container:") => Mode::Container(m["container:".len()..].to_string()),
        _ => Mode::Bridge,
    }
}

/// The networks a new container asks for: NetworkMode (default `bridge`) plus the other
/// EndpointsConfig entries, with aliases and `--ip`. Refuses unknown networks.
pub fn wanted_at_create(e: &Engine, host: &bollard_stubs::models::HostConfig, networking: Option<&Value>) -> Result<Vec<(String, EndpointWanted)>, ApiError> {
    let mode = host.network_mode.clone().unwrap_or_default();
    if mode == "none" || mode == "host" || mode.starts_with("container:") {
        if let Some(target) = mode.strip_prefix("container:") {
            e.containers.get(target)?;
        }
        return Ok(Vec::new());
    }
    let primary = if mode.is_empty() || mode == "default" { "bridge".to_string() } else { mode };
    let mut out: Vec<(String, EndpointWanted)> = Vec::new();
    let mut cfgs = networking.and_then(|n| n.get("EndpointsConfig")).and_then(|v| v.as_object()).cloned().unwrap_or_default();
    // The CLI names the default network "default" in EndpointsConfig.
    if let Some(v) = cfgs.remove("default") {
        cfgs.entry(primary.clone()).or_insert(v);
    }
    let parse = |v: Option<&Value>| -> Result<EndpointWanted, ApiError> {
        let Some(v) = v else { return Ok(EndpointWanted::default()) };
        let aliases = v.get("Aliases").and_then(|a| a.as_array()).map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default();
        let ipv4 = match v.pointer("/IPAMConfig/IPv4Address").and_then(|x| x.as_str()).filter(|s| !s.is_empty()) {
            Some(s) => Some(s.parse::<Ipv4Addr>().map_err(|_| ApiError::bad(format!("invalid IPv4 address: {s}")))?),
            None => None,
        };
        let mac = v.get("MacAddress").and_then(|x| x.as_str()).filter(|s| !s.is_empty()).map(parse_mac).transpose()?;
        Ok(EndpointWanted { aliases, ipv4, mac })
    };
    let resolve = |name: &str| -> Result<NetworkRecord, ApiError> { Ok(e.networks.get(name)?) };
    let pr = resolve(&primary)?;
    let primary_cfg = cfgs.get(&primary).or_else(|| cfgs.get(&pr.id)).or_else(|| cfgs.get(&pr.name));
    let w = parse(primary_cfg)?;
    if pr.name == "bridge" && (!w.aliases.is_empty() || w.ipv4.is_some()) {
        return Err(ApiError::bad("network-scoped aliases and user-specified IP addresses are supported only for user-defined networks"));
    }
    if pr.driver != "bridge" {
        // `--network host` spelled by name.
        return Ok(Vec::new());
    }
    out.push((pr.name.clone(), w));
    for (k, v) in &cfgs {
        let r = resolve(k)?;
        if out.iter().any(|(n, _)| *n == r.name) {
            continue;
        }
        out.push((r.name.clone(), parse(Some(v))?));
    }
    Ok(out)
}

/// A MAC address from a request, normalised, or Docker's refusal.
fn parse_mac(s: &str) -> Result<String, ApiError> {
    ipam::parse_mac(s).map(|m| ipam::mac_string(&m)).ok_or_else(|| ApiError::bad(format!("{s} is not a valid mac address")))
}

/// The deprecated Config.MacAddress (older clients' `--mac-address`): as in Docker, it is the
/// primary network's unless that endpoint names its own.
pub fn legacy_mac(wanted: &mut [(String, EndpointWanted)], mac: Option<&str>) -> Result<(), ApiError> {
    let Some(mac) = mac.filter(|m| !m.is_empty()) else { return Ok(()) };
    let mac = parse_mac(mac)?;
    if let Some((_, w)) = wanted.first_mut() {
        w.mac.get_or_insert(mac);
    }
    Ok(())
}

/// Map `--network host|none` (also given by network name) onto the HostConfig mode.
pub fn normalize_mode(e: &Engine, host: &mut bollard_stubs::models::HostConfig) {
    if let Some(m) = host.network_mode.clone() {
        if let Ok(r) = e.networks.get(&m) {
            if r.driver == "host" {
                host.network_mode = Some("host".into());
            } else if r.driver == "null" {
                host.network_mode = Some("none".into());
            }
        }
    }
}

/// The ports a container publishes: PortBindings, plus every exposed port with `-P`.
/// (proto, container port, host ip, candidate host ports; empty = any).
pub fn port_requests(c: &Container) -> Result<Vec<(Proto, u16, String, Vec<u16>)>, ApiError> {
    port_requests_of(&c.config, &c.host_config)
}

/// Refuse bad port specs at create time, as Docker does.
pub fn port_requests_valid(config: &bollard_stubs::models::ContainerConfig, host: &bollard_stubs::models::HostConfig) -> Result<(), ApiError> {
    for (_, _, ip, _) in port_requests_of(config, host)? {
        if !ip.is_empty() {
            ip.parse::<IpAddr>().map_err(|_| ApiError::bad(format!("invalid IP address: {ip}")))?;
        }
    }
    Ok(())
}

fn port_requests_of(config: &bollard_stubs::models::ContainerConfig, host: &bollard_stubs::models::HostConfig) -> Result<Vec<(Proto, u16, String, Vec<u16>)>, ApiError> {
    let mut out = Vec::new();
    let parse_key = |k: &str| -> Result<(Proto, u16), ApiError> {
        let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            other => return Err(ApiError::bad(format!("invalid proto: {other} (Berth publishes tcp and udp)"))),
        };
        let port = p.parse::<u16>().map_err(|_| ApiError::bad(format!("invalid containerPort: {p}")))?;
        Ok((proto, port))
    };
    let bindings = host.port_bindings.clone().unwrap_or_default();
    let mut keys: Vec<&String> = bindings.keys().collect();
    keys.sort();
    for k in keys {
        let (proto, port) = parse_key(k)?;
        for b in bindings[k].clone().unwrap_or_default() {
            let ip = b.host_ip.unwrap_or_default();
            let hp = b.host_port.unwrap_or_default();
            let candidates: Vec<u16> = if hp.is_empty() || hp == "0" {
                Vec::new()
            } else if let Some((a, z)) = hp.split_once('-') {
                let (a, z) = (a.parse::<u16>(), z.parse::<u16>());
                match (a, z) {
                    (Ok(a), Ok(z)) if a <= z => (a..=z).collect(),
                    _ => return Err(ApiError::bad(format!("invalid hostPort: {hp}"))),
                }
            } else {
                vec![hp.parse::<u16>().map_err(|_| ApiError::bad(format!("invalid hostPort: {hp}")))?]
            };
            out.push((proto, port, ip, candidates));
        }
    }
    if host.publish_all_ports.unwrap_or(false) {
        let mut exposed: Vec<String> = config.exposed_ports.clone().unwrap_or_default().keys().cloned().collect();
        exposed.sort();
        for k in exposed {
            if bindings.get(&k).map(|b| b.as_ref().map(|v| !v.is_empty()).unwrap_or(false)).unwrap_or(false) {
                continue;
            }
            let (proto, port) = parse_key(&k)?;
            out.push((proto, port, String::new(), Vec::new()));
        }
    }
    Ok(out)
}

/// Everything a container's start needs from the network side, made in one go and undone
/// entirely when any part fails.
pub struct Attached {
    pub state: NetState,
    pub netns: Option<PathBuf>,
    pub host_mode: bool,
}

/// Set up a starting container's networking (blocking; called from the launch thread).
pub fn attach(e: &Arc<Engine>, c: &Container) -> Result<Attached, ApiError> {
    let n = &e.networks;
    match mode_of(c) {
        Mode::Host => return Ok(Attached { state: NetState { wanted: c.net.wanted.clone(), ..Default::default() }, netns: None, host_mode: true }),
        Mode::None => return Ok(Attached { state: NetState { wanted: c.net.wanted.clone(), ..Default::default() }, netns: None, host_mode: false }),
        Mode::Container(target) => {
            let t = e.containers.get(&target)?;
            if !matches!(t.state.status, Status::Running | Status::Paused) || t.net.sandbox.is_empty() {
                return Err(ApiError::Conflict(format!("cannot join network of a non running container: {}", t.id)));
            }
            return Ok(Attached { state: NetState { wanted: c.net.wanted.clone(), ..Default::default() }, netns: Some(PathBuf::from(&t.net.sandbox)), host_mode: false });
        }
        Mode::Bridge => {}
    }
    let path = n.sandbox_path(&c.id);
    // A namespace file left by a crash of an earlier run goes first.
    if path.exists() {
        let _ = n.plumbing.destroy_sandbox(&path);
    }
    let mut eps: Vec<Endpoint> = Vec::new();
    let mut specs = Vec::new();
    let mut recs = Vec::new();
    let undo_ips = |eps: &[Endpoint]| {
        for ep in eps {
            n.release(&ep.network_id, ep.ip);
        }
    };
    let mut default_route_given = false;
    for (i, (name, wanted)) in c.net.wanted.iter().enumerate() {
        let r = match n.get(name) {
            Ok(r) => r,
            Err(err) => {
                undo_ips(&eps);
                return Err(err.into());
            }
        };
        let ep = match n.new_endpoint(&r, wanted, i, c) {
            Ok(ep) => ep,
            Err(err) => {
                undo_ips(&eps);
                return Err(err.into());
            }
        };
        let route = !r.internal && !default_route_given;
        default_route_given |= route;
        specs.push(spec_of(&r, &ep, route));
        recs.push(r);
        eps.push(ep);
    }
    let t0 = std::time::Instant::now();
    let dns = match n.plumbing.create_sandbox(&path, &specs, !specs.is_empty()) {
        Ok(d) => d,
        Err(err) => {
            undo_ips(&eps);
            return Err(ApiError::internal(format!("setting up the container's network: {err}")));
        }
    };
    let t_sandbox = t0.elapsed();
    let mut live = Live::default();
    if let Some(s) = dns {
        let resolver: Arc<dyn Resolve> = Arc::new(EngineResolver(Arc::downgrade(e)));
        match berth_network::dns::serve(s, c.id.clone(), resolver) {
            Ok(h) => live.dns = Some(h),
            Err(err) => tracing::warn!(id = %c.short_id(), "embedded DNS not served: {err}"),
        }
    }
    // Published ports: every listener is bound before any serves, so "port is already
    // allocated" leaves nothing behind.
    let ports = match bind_ports(c, &eps) {
        Ok(p) => p,
        Err(err) => {
            drop(live);
            let _ = n.plumbing.destroy_sandbox(&path);
            undo_ips(&eps);
            return Err(err);
        }
    };
    let mut maps = Vec::new();
    for (b, m, target) in ports {
        match b.serve(target) {
            Ok(h) => live.proxies.push(h),
            Err(err) => tracing::warn!("serving port {}: {err}", m.host_port),
        }
        maps.push(m);
    }
    for ep in &eps {
        n.register(&c.id, &c.name, ep);
    }
    n.live.lock().expect("live").insert(c.id.clone(), live);
    tracing::debug!(id = %c.short_id(), ?t_sandbox, total = ?t0.elapsed(), "network attached");
    Ok(Attached {
        state: NetState { wanted: c.net.wanted.clone(), sandbox: path.display().to_string(), endpoints: eps, ports: maps },
        netns: Some(path),
        host_mode: false,
    })
}

fn bind_ports(c: &Container, eps: &[Endpoint]) -> Result<Vec<(Bound, PortMap, SocketAddr)>, ApiError> {
    let reqs = port_requests(c)?;
    if reqs.is_empty() {
        return Ok(Vec::new());
    }
    let Some(ep) = eps.first() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (proto, cport, hip, candidates) in reqs {
        let ip: IpAddr = if hip.is_empty() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            hip.parse().map_err(|_| ApiError::bad(format!("invalid IP address: {hip}")))?
        };
        let tries: Vec<u16> = if candidates.is_empty() { vec![0] } else { candidates.clone() };
        let mut bound = None;
        let mut last_err = None;
        for p in &tries {
            match Bound::bind(proto, SocketAddr::new(ip, *p)) {
                Ok(b) => {
                    bound = Some(b);
                    break;
                }
                Err(err) => last_err = Some(err),
            }
        }
        let Some(b) = bound else {
            let shown = if tries.len() == 1 { format!("{ip}:{}", tries[0]) } else { format!("{ip}:{}-{}", tries[0], tries[tries.len() - 1]) };
            tracing::debug!("bind {shown}: {last_err:?}");
            return Err(NetworkError::PortAllocated { endpoint: c.name.clone(), addr: shown }.into());
        };
        let local = b.local_addr().map_err(ApiError::internal)?;
        let m = PortMap { proto: proto.as_str().into(), container_port: cport, host_ip: ip.to_string(), host_port: local.port() };
        let target = SocketAddr::new(IpAddr::V4(ep.ip), cport);
        let m6 = PortMap { host_ip: "::".into(), ..m.clone() };
        out.push((b, m, target));
        if hip.is_empty() {
            // No host IP: also `[::]` on the same port, as Docker does, so clients that try
            // `localhost` as ::1 first connect at once. Best effort: a host without IPv6, or
            // with that v6 port taken, keeps the IPv4 binding alone.
            let v6 = SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), local.port());
            match Bound::bind(proto, v6) {
                Ok(b6) => out.push((b6, m6, target)),
                Err(err) => tracing::debug!(id = %c.short_id(), "publishing [::]:{} as well: {err}", local.port()),
            }
        }
    }
    Ok(out)
}


/// Undo [`attach`] after the container stopped (or its start failed later on).
pub fn detach(e: &Engine, c: &Container, st: &NetState) {
    let n = &e.networks;
    n.live.lock().expect("live").remove(&c.id);
    for ep in &st.endpoints {
        n.unregister(&c.id, ep);
    }
    if !st.sandbox.is_empty() {
        if let Err(err) = n.plumbing.destroy_sandbox(Path::new(&st.sandbox)) {
            tracing::warn!(id = %c.short_id(), "removing the network namespace: {err}");
        }
    }
}

/// After a daemon restart, for a container that is still running: its endpoints are known
/// again, its resolver and published ports are back.
pub fn reattach(e: &Arc<Engine>, c: &Container) {
    let n = &e.networks;
    let mut live = Live::default();
    for ep in &c.net.endpoints {
        if let Ok(r) = n.get(&ep.network_id) {
            if n.ipam_for(&r).is_ok() {
                let _ = n.ipam.lock().expect("ipam").get_mut(&r.id).map(|i| i.allocated.insert(ep.ip));
            }
        }
        n.register(&c.id, &c.name, ep);
    }
    if !c.net.sandbox.is_empty() && !c.net.endpoints.is_empty() {
        match n.plumbing.bind_dns(Path::new(&c.net.sandbox)) {
            Ok(s) => {
                let resolver: Arc<dyn Resolve> = Arc::new(EngineResolver(Arc::downgrade(e)));
                if let Ok(h) = berth_network::dns::serve(s, c.id.clone(), resolver) {
                    live.dns = Some(h);
                }
            }
            Err(err) => tracing::warn!(id = %c.short_id(), "embedded DNS not restored: {err}"),
        }
    }
    if let Some(ep) = c.net.endpoints.first() {
        for m in &c.net.ports {
            let proto = if m.proto == "udp" { Proto::Udp } else { Proto::Tcp };
            let Ok(ip) = m.host_ip.parse::<IpAddr>() else { continue };
            match Bound::bind(proto, SocketAddr::new(ip, m.host_port)).and_then(|b| b.serve(SocketAddr::new(IpAddr::V4(ep.ip), m.container_port))) {
                Ok(h) => live.proxies.push(h),
                Err(err) => tracing::warn!(id = %c.short_id(), "published port {}:{} not restored: {err}", m.host_ip, m.host_port),
            }
        }
    }
    n.live.lock().expect("live").insert(c.id.clone(), live);
}

/// After restore: remove what no running container accounts for (namespace files, veths on
/// Berth bridges, bridges of deleted networks). Berth's own bridges and table are left to
/// [`Networks::setup_host`].
pub fn reconcile(e: &Engine) {
    let n = &e.networks;
    let running: Vec<Container> = e.containers.list().into_iter().filter(|c| matches!(c.state.status, Status::Running | Status::Paused | Status::Restarting)).collect();
    let keep_ns: Vec<String> = running.iter().map(|c| c.net.sandbox.clone()).filter(|s| !s.is_empty()).collect();
    for p in n.plumbing.sandboxes(&n.netns_dir) {
        if !keep_ns.iter().any(|k| Path::new(k) == p) {
            tracing::info!(path = %p.display(), "removing a network namespace no running container uses");
            let _ = n.plumbing.destroy_sandbox(&p);
        }
    }
    let keep_veth: Vec<String> = running.iter().flat_map(|c| c.net.endpoints.iter().map(|ep| ep.host_veth.clone())).collect();
    let bridges: Vec<String> = n.list().into_iter().filter(|r| r.is_bridge()).map(|r| r.bridge).collect();
    if let Ok(links) = n.plumbing.links() {
        // Only bridges Berth made (marked by their alias); another engine's stay untouched.
        let ours: HashMap<u32, String> = links
            .iter()
            .filter(|l| l.kind == "bridge" && (bridges.contains(&l.name) || l.alias == berth_network::plumbing::OWNER_ALIAS))
            .map(|l| (l.index, l.name.clone()))
            .collect();
        for l in &links {
            if l.kind == "veth" && l.master.map(|m| ours.contains_key(&m)).unwrap_or(false) && !keep_veth.contains(&l.name) {
                tracing::info!(veth = %l.name, "removing a veth no running container uses");
                let _ = n.plumbing.remove_endpoint(&l.name);
            }
        }
        for name in ours.values() {
            if !bridges.contains(name) {
                tracing::info!(bridge = %name, "removing the bridge of a network that no longer exists");
                let _ = n.plumbing.delete_link(name);
            }
        }
    }
}

/// Wait for the host-side network setup (bridges, nftables) that runs in the background after
/// berthd starts serving; a setup that failed for a reason berthd can fix is tried again here,
/// so a transient failure does not stick.
pub async fn network_ready(e: &Arc<Engine>) -> Result<(), ApiError> {
    let failed = |reason: String| ApiError::Internal(format!("the engine's network setup failed: {reason}"));
    match e.networks.wait_setup().await {
        Ok(()) => Ok(()),
        Err((reason, false)) => Err(failed(reason)),
        Err((_, true)) => {
            let e2 = Arc::clone(e);
            tokio::task::spawn_blocking(move || e2.networks.setup_host(Ok(()))).await?.map_err(failed)
        }
    }
}

/// At daemon shutdown with nothing running: take bridges and the nftables table down, so a
/// stopped Berth leaves the host's network as it found it. With containers running
/// (live-restore) everything stays.
pub fn shutdown(e: &Engine) {
    let running = e.containers.list().iter().any(|c| matches!(c.state.status, Status::Running | Status::Paused | Status::Restarting));
    let n = &e.networks;
    // A host setup still running finishes first (and is cleaned up below); one not started yet
    // never will.
    let _g = n.admin.lock().expect("admin");
    n.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    n.live.lock().expect("live").clear();
    if running {
        return;
    }
    for r in n.list().into_iter().filter(|r| r.is_bridge()) {
        let _ = n.plumbing.delete_link(&r.bridge);
    }
    let _ = n.plumbing.apply_firewall(&berth_network::firewall::ruleset(&[]));
}

/// The embedded resolver's view of the engine: names of containers sharing a user-defined
/// network with the asker.
struct EngineResolver(std::sync::Weak<Engine>);

impl Resolve for EngineResolver {
    fn lookup(&self, asker: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
        let e = self.0.upgrade()?;
        let eps = e.networks.endpoints.lock().expect("endpoints").clone();
        let mut out = Vec::new();
        for (net_id, members) in eps.iter() {
            let Some((_, mine)) = members.get(asker) else { continue };
            if mine.network == "bridge" {
                continue;
            }
            for (cid, (cname, ep)) in members {
                let hit = cname.eq_ignore_ascii_case(name)
                    || ep.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
                    || format!("{cname}.{}", mine.network).eq_ignore_ascii_case(name)
                    || (name.len() == 12 && cid.starts_with(name));
                if hit && !out.contains(&ep.ip) {
                    out.push(ep.ip);
                }
            }
            let _ = net_id;
        }
        (!out.is_empty()).then_some(out)
    }

    fn upstreams(&self) -> Vec<SocketAddr> {
        self.0.upgrade().map(|e| e.networks.upstreams.clone()).unwrap_or_default()
    }
}

/// Connect a container to a network (POST /networks/{id}/connect): recorded for later starts,
/// and made live at once when the container runs.
pub async fn connect(e: &Arc<Engine>, key: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: Value = crate::images::read_json(req, 1024 * 1024).await?;
    network_ready(e).await?;
    let r = e.networks.get(key)?;
    let cname = body.get("Container").and_then(|v| v.as_str()).ok_or_else(|| ApiError::bad("Container is required"))?;
    let c = e.containers.get(cname)?;
    if r.driver != "bridge" {
        return Err(ApiError::Forbidden(format!("container cannot be disconnected from host network or connected to host network")));
    }
    if matches!(mode_of(&c), Mode::Host | Mode::None | Mode::Container(_)) {
        return Err(ApiError::Forbidden("container sharing network namespace with another container or host cannot be connected to any other network".into()));
    }
    if c.net.wanted.iter().any(|(n, _)| *n == r.name) {
        return Err(NetworkError::AlreadyConnected { container: c.name.clone(), network: r.name.clone() }.into());
    }
    let mut nets = serde_json::Map::new();
    if let Some(cfg) = body.get("EndpointConfig") {
        nets.insert(r.name.clone(), cfg.clone());
    }
    let wanted_all = wanted_at_create(e, &bollard_stubs::models::HostConfig { network_mode: Some(r.name.clone()), ..Default::default() }, Some(&json!({"EndpointsConfig": nets})))?;
    let wanted = wanted_all.into_iter().next().map(|(_, w)| w).unwrap_or_default();
    let _guard = e.lifecycle_lock(&c.id).await;
    let c = e.containers.get(&c.id)?;
    let running = matches!(c.state.status, Status::Running | Status::Paused) && !c.net.sandbox.is_empty();
    let mut new_ep = None;
    if running {
        let e2 = Arc::clone(e);
        let (c2, r2, w2) = (c.clone(), r.clone(), wanted.clone());
        let ep = tokio::task::spawn_blocking(move || -> Result<Endpoint, ApiError> {
            let n = &e2.networks;
            let ep = n.new_endpoint(&r2, &w2, c2.net.endpoints.len().max(c2.net.wanted.len()), &c2)?;
            let route = c2.net.endpoints.is_empty() && !r2.internal;
            if let Err(err) = n.plumbing.add_endpoint(Path::new(&c2.net.sandbox), &spec_of(&r2, &ep, route)) {
                n.release(&r2.id, ep.ip);
                return Err(ApiError::internal(format!("connecting to {}: {err}", r2.name)));
            }
            n.register(&c2.id, &c2.name, &ep);
            // The first user-defined network of a container on the default bridge brings the
            // resolver up.
            let has_dns = n.live.lock().expect("live").get(&c2.id).map(|l| l.dns.is_some()).unwrap_or(false);
            if !has_dns {
                if let Ok(s) = n.plumbing.bind_dns(Path::new(&c2.net.sandbox)) {
                    let resolver: Arc<dyn Resolve> = Arc::new(EngineResolver(Arc::downgrade(&e2)));
                    if let Ok(h) = berth_network::dns::serve(s, c2.id.clone(), resolver) {
                        n.live.lock().expect("live").entry(c2.id.clone()).or_default().dns = Some(h);
                    }
                }
            }
            Ok(ep)
        })
        .await??;
        new_ep = Some(ep);
    }
    let rname = r.name.clone();
    e.containers.update(&c.id, |c| {
        c.net.wanted.push((rname.clone(), wanted.clone()));
        if let Some(ep) = &new_ep {
            c.net.endpoints.push(ep.clone());
        }
    })?;
    network_event(e, "connect", &r, Some(&c.id));
    Ok(status_only(StatusCode::OK))
}

/// POST /networks/{id}/disconnect
pub async fn disconnect(e: &Arc<Engine>, key: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: Value = crate::images::read_json(req, 1024 * 1024).await?;
    network_ready(e).await?;
    let r = e.networks.get(key)?;
    let cname = body.get("Container").and_then(|v| v.as_str()).ok_or_else(|| ApiError::bad("Container is required"))?;
    let c = e.containers.get(cname)?;
    let _guard = e.lifecycle_lock(&c.id).await;
    let c = e.containers.get(&c.id)?;
    if !c.net.wanted.iter().any(|(n, _)| *n == r.name) {
        return Err(NetworkError::NotConnected { container: c.name.clone(), network: r.name.clone() }.into());
    }
    let ep = c.net.endpoints.iter().find(|ep| ep.network_id == r.id).cloned();
    if let Some(ep) = &ep {
        let e2 = Arc::clone(e);
        let (id, ep2) = (c.id.clone(), ep.clone());
        tokio::task::spawn_blocking(move || {
            let _ = e2.networks.plumbing.remove_endpoint(&ep2.host_veth);
            e2.networks.unregister(&id, &ep2);
        })
        .await?;
    }
    let rname = r.name.clone();
    e.containers.update(&c.id, |c| {
        c.net.wanted.retain(|(n, _)| *n != rname);
        c.net.endpoints.retain(|x| x.network != rname);
    })?;
    network_event(e, "disconnect", &r, Some(&c.id));
    Ok(status_only(StatusCode::OK))
}

/// Docker's network events (`network create/destroy/connect/disconnect`).
pub fn network_event(e: &Engine, action: &str, r: &NetworkRecord, container: Option<&str>) {
    let mut attrs = HashMap::new();
    attrs.insert("name".to_string(), r.name.clone());
    attrs.insert("type".to_string(), r.driver.clone());
    if let Some(c) = container {
        attrs.insert("container".to_string(), c.to_string());
    }
    e.events.publish(EventMessageTypeEnum::NETWORK, action, &r.id, attrs);
}

fn network_view(e: &Engine, r: &NetworkRecord, verbose_containers: bool) -> Value {
    let mut containers = serde_json::Map::new();
    if verbose_containers {
        for (cid, (cname, ep)) in e.networks.endpoints_of(&r.id) {
            containers.insert(
                cid,
                json!({
                    "Name": cname,
                    "EndpointID": ep.endpoint_id,
                    "MacAddress": ep.mac,
                    "IPv4Address": format!("{}/{}", ep.ip, ep.prefix),
                    "IPv6Address": "",
                }),
            );
        }
    }
    let config: Vec<Value> = match (r.subnet, r.gateway) {
        (Some(s), Some(g)) => {
            let mut c = json!({"Subnet": s.to_string(), "Gateway": g.to_string()});
            if let Some(range) = r.ip_range {
                c["IPRange"] = json!(range.to_string());
            }
            if !r.aux_addresses.is_empty() {
                c["AuxiliaryAddresses"] = json!(r.aux_addresses);
            }
            vec![c]
        }
        _ => vec![],
    };
    json!({
        "Name": r.name,
        "Id": r.id,
        "Created": r.created,
        "Scope": "local",
        "Driver": r.driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": config},
        "Internal": r.internal,
        "Attachable": r.attachable,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": r.options,
        "Labels": r.labels,
    })
}

fn filter_ok(e: &Engine, f: &crate::http_util::Filters, r: &NetworkRecord) -> Result<bool, ApiError> {
    let any = |k: &str, p: &dyn Fn(&str) -> bool| f.get(k).is_empty() || f.get(k).iter().any(|v| p(v));
    let dangling = match f.bool("dangling")? {
        None => true,
        Some(d) => d == (e.networks.endpoints_of(&r.id).is_empty() && !r.predefined()),
    };
    Ok(any("name", &|v| r.name.contains(v))
        && any("id", &|v| r.id.starts_with(v))
        && any("driver", &|v| v == r.driver)
        && any("scope", &|v| v == "local")
        && any("type", &|v| (v == "builtin") == r.predefined())
        && f.get("label").iter().all(|l| label_matches(&r.labels, l))
        && dangling)
}

/// GET /networks. Reads records and endpoints only (both known before berthd serves), so it
/// does not wait for the host setup.
pub async fn list(e: &Arc<Engine>, q: &Query) -> Result<Response<Body>, ApiError> {
    let f = q.filters()?;
    f.only(&["name", "id", "driver", "label", "type", "scope", "dangling"])?;
    let mut out = Vec::new();
    for r in e.networks.list() {
        if filter_ok(e, &f, &r)? {
            out.push(network_view(e, &r, false));
        }
    }
    Ok(ok_json(&out))
}

/// GET /networks/{id}. Like [`list`], answered while the host setup still runs.
pub async fn inspect(e: &Arc<Engine>, key: &str) -> Result<Response<Body>, ApiError> {
    let r = e.networks.get(key)?;
    Ok(ok_json(&network_view(e, &r, true)))
}

/// POST /networks/create
pub async fn create(e: &Arc<Engine>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: Value = crate::images::read_json(req, 1024 * 1024).await?;
    let s = |k: &str| body.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let map = |k: &str| -> HashMap<String, String> {
        body.get(k).and_then(|v| v.as_object()).map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect()).unwrap_or_default()
    };
    let mut req = CreateRequest {
        name: s("Name"),
        driver: s("Driver"),
        internal: body.get("Internal").and_then(|v| v.as_bool()).unwrap_or(false),
        attachable: body.get("Attachable").and_then(|v| v.as_bool()).unwrap_or(false),
        labels: map("Labels"),
        options: map("Options"),
        subnet: None,
        gateway: None,
        aux_addresses: BTreeMap::new(),
        ip_range: None,
    };
    if body.get("EnableIPv6").and_then(|v| v.as_bool()).unwrap_or(false) {
        return Err(ApiError::bad("IPv6 networks are not supported by Berth yet"));
    }
    let cfgs = body.pointer("/IPAM/Config").and_then(|v| v.as_array()).cloned().unwrap_or_default();
    if cfgs.len() > 1 {
        return Err(ApiError::bad("Berth supports one IPv4 subnet per network"));
    }
    if let Some(c) = cfgs.first() {
        if let Some(sub) = c.get("Subnet").and_then(|v| v.as_str()).filter(|s| !s.is_empty()) {
            let net: Ipv4Net = sub.parse().map_err(|_| ApiError::bad(format!("invalid subnet {sub}: Berth supports IPv4 subnets")))?;
            req.subnet = Some(net);
        }
        if let Some(g) = c.get("Gateway").and_then(|v| v.as_str()).filter(|s| !s.is_empty()) {
            req.gateway = Some(g.parse().map_err(|_| ApiError::bad(format!("invalid gateway {g}")))?);
            if req.subnet.is_none() {
                return Err(ApiError::bad("a gateway needs a subnet"));
            }
        }
        if let Some(r) = c.get("IPRange").and_then(|v| v.as_str()).filter(|s| !s.is_empty()) {
            let range: Ipv4Net = r.parse().map_err(|_| ApiError::bad(format!("invalid ip-range {r}")))?;
            if req.subnet.is_none() {
                return Err(ApiError::bad("an ip-range needs a subnet"));
            }
            req.ip_range = Some(range.trunc());
        }
        for (name, v) in c.get("AuxiliaryAddresses").and_then(|v| v.as_object()).into_iter().flatten() {
            let a = v.as_str().unwrap_or_default();
            let ip: Ipv4Addr = a.parse().map_err(|_| ApiError::bad(format!("invalid aux-address {name}={a}")))?;
            if req.subnet.is_none() {
                return Err(ApiError::bad("an aux-address needs a subnet"));
            }
            req.aux_addresses.insert(name.clone(), ip);
        }
    }
    network_ready(e).await?;
    let e2 = Arc::clone(e);
    let r = tokio::task::spawn_blocking(move || e2.networks.create(req)).await??;
    network_event(e, "create", &r, None);
    Ok(json(StatusCode::CREATED, &json!({"Id": r.id, "Warning": ""})))
}

/// DELETE /networks/{id}
pub async fn remove(e: &Arc<Engine>, key: &str) -> Result<Response<Body>, ApiError> {
    network_ready(e).await?;
    let e2 = Arc::clone(e);
    let k = key.to_string();
    let r = tokio::task::spawn_blocking(move || e2.networks.remove(&k)).await??;
    network_event(e, "destroy", &r, None);
    Ok(status_only(StatusCode::NO_CONTENT))
}

/// POST /networks/prune: user-defined networks without endpoints (no container names them).
pub async fn prune(e: &Arc<Engine>, q: &Query) -> Result<Response<Body>, ApiError> {
    let f = q.filters()?;
    f.only(&["label", "label!", "until"])?;
    network_ready(e).await?;
    let mut deleted = Vec::new();
    let used: Vec<String> = e.containers.list().iter().flat_map(|c| c.net.wanted.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()).collect();
    for r in e.networks.list() {
        if r.predefined() || used.contains(&r.name) || !f.get("label").iter().all(|l| label_matches(&r.labels, l)) {
            continue;
        }
        if f.get("label!").iter().any(|l| label_matches(&r.labels, l)) {
            continue;
        }
        let e2 = Arc::clone(e);
        let id = r.id.clone();
        if tokio::task::spawn_blocking(move || e2.networks.remove(&id)).await?.is_ok() {
            network_event(e, "destroy", &r, None);
            deleted.push(r.name.clone());
        }
    }
    Ok(ok_json(&json!({"NetworksDeleted": deleted})))
}

/// `NetworkSettings` of `docker inspect`, Docker's shape.
pub fn settings_view(e: &Engine, c: &Container) -> Value {
    let running = matches!(c.state.status, Status::Running | Status::Paused | Status::Restarting);
    let mut nets = serde_json::Map::new();
    for (name, w) in &c.net.wanted {
        let ep = c.net.endpoints.iter().find(|ep| ep.network == *name).filter(|_| running);
        let id = e.networks.get(name).map(|r| r.id).unwrap_or_default();
        let mut dns_names: Vec<String> = vec![c.name.clone()];
        dns_names.extend(ep.map(|ep| ep.aliases.clone()).unwrap_or_else(|| w.aliases.clone()));
        nets.insert(
            name.clone(),
            json!({
                "IPAMConfig": w.ipv4.map(|ip| json!({"IPv4Address": ip.to_string()})),
                "Links": null,
                "Aliases": if w.aliases.is_empty() { Value::Null } else { json!(w.aliases) },
                "MacAddress": ep.map(|ep| ep.mac.clone()).or_else(|| w.mac.clone()).unwrap_or_default(),
                "DriverOpts": null,
                "NetworkID": id,
                "EndpointID": ep.map(|ep| ep.endpoint_id.clone()).unwrap_or_default(),
                "Gateway": ep.map(|ep| ep.gateway.to_string()).unwrap_or_default(),
                "IPAddress": ep.map(|ep| ep.ip.to_string()).unwrap_or_default(),
                "IPPrefixLen": ep.map(|ep| ep.prefix).unwrap_or(0),
                "IPv6Gateway": "",
                "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0,
                "DNSNames": if name == "bridge" { Value::Null } else { json!(dns_names) },
            }),
        );
    }
    match mode_of(c) {
        Mode::Host => {
            nets.insert("host".into(), json!({"NetworkID": e.networks.get("host").map(|r| r.id).unwrap_or_default(), "EndpointID": "", "IPAddress": "", "Gateway": ""}));
        }
        Mode::None => {
            nets.insert("none".into(), json!({"NetworkID": e.networks.get("none").map(|r| r.id).unwrap_or_default(), "EndpointID": "", "IPAddress": "", "Gateway": ""}));
        }
        _ => {}
    }
    let bridge_ep = c.net.endpoints.iter().find(|ep| ep.network == "bridge").filter(|_| running);
    json!({
        "Bridge": "",
        "SandboxID": if running && !c.net.sandbox.is_empty() { c.id.clone() } else { String::new() },
        "SandboxKey": if running { c.net.sandbox.clone() } else { String::new() },
        "HairpinMode": false,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": if running { ports_view(c) } else { json!({}) },
        "SecondaryIPAddresses": null,
        "SecondaryIPv6Addresses": null,
        "EndpointID": bridge_ep.map(|ep| ep.endpoint_id.clone()).unwrap_or_default(),
        "Gateway": bridge_ep.map(|ep| ep.gateway.to_string()).unwrap_or_default(),
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": bridge_ep.map(|ep| ep.ip.to_string()).unwrap_or_default(),
        "IPPrefixLen": bridge_ep.map(|ep| ep.prefix).unwrap_or(0),
        "IPv6Gateway": "",
        "MacAddress": bridge_ep.map(|ep| ep.mac.clone()).unwrap_or_default(),
        "Networks": nets,
    })
}

/// `NetworkSettings.Ports`: every exposed or published port, with its bindings (or null).
pub fn ports_view(c: &Container) -> Value {
    let mut m = serde_json::Map::new();
    for k in c.config.exposed_ports.clone().unwrap_or_default().keys() {
        let k = if k.contains('/') { k.clone() } else { format!("{k}/tcp") };
        m.insert(k, Value::Null);
    }
    for k in c.host_config.port_bindings.clone().unwrap_or_default().keys() {
        let k = if k.contains('/') { k.clone() } else { format!("{k}/tcp") };
        m.entry(k).or_insert(Value::Null);
    }
    for p in &c.net.ports {
        let k = format!("{}/{}", p.container_port, p.proto);
        let entry = m.entry(k).or_insert(Value::Null);
        if entry.is_null() {
            *entry = json!([]);
        }
        if let Some(a) = entry.as_array_mut() {
            a.push(json!({"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}));
        }
    }
    Value::Object(m)
}

/// `Ports` of `docker ps`.
pub fn ps_ports(c: &Container) -> Vec<bollard_stubs::models::Port> {
    use bollard_stubs::models::{Port, PortTypeEnum};
    let running = matches!(c.state.status, Status::Running | Status::Paused | Status::Restarting);
    let typ = |p: &str| if p == "udp" { Some(PortTypeEnum::UDP) } else { Some(PortTypeEnum::TCP) };
    let mut out = Vec::new();
    if running {
        for p in &c.net.ports {
            out.push(Port { ip: Some(p.host_ip.clone()), private_port: p.container_port, public_port: Some(p.host_port), typ: typ(&p.proto) });
        }
    }
    for k in c.config.exposed_ports.clone().unwrap_or_default().keys() {
        let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
        let Ok(port) = port.parse::<u16>() else { continue };
        if !out.iter().any(|p| p.private_port == port) {
            out.push(Port { ip: None, private_port: port, public_port: None, typ: typ(proto) });
        }
    }
    out
}

/// /etc/hosts and /etc/resolv.conf content for a container on bridge networks.
pub fn etc_hosts(c: &Container, st: &NetState) -> String {
    let hostname = c.config.hostname.clone().unwrap_or_default();
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n");
    for h in c.host_config.extra_hosts.clone().unwrap_or_default() {
        if let Some((name, ip)) = h.split_once(':') {
            s.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    match st.endpoints.first() {
        Some(ep) => s.push_str(&format!("{}\t{hostname}\n", ep.ip)),
        None => s.push_str(&format!("127.0.0.1\t{hostname}\n")),
    }
    s
}

/// `--add-host name:host-gateway`: the gateway of the container's first network (Docker's
/// host-gateway-ip default is the default bridge's gateway).
pub fn resolve_extra_hosts(e: &Engine, host: &mut bollard_stubs::models::HostConfig) -> Result<(), ApiError> {
    let Some(list) = host.extra_hosts.clone() else { return Ok(()) };
    let mut out = Vec::new();
    for h in list {
        let (name, ip) = h.split_once(':').ok_or_else(|| ApiError::bad(format!("invalid extra host: {h}")))?;
        let ip = if ip == "host-gateway" {
            e.networks.get("bridge").ok().and_then(|r| r.gateway).map(|g| g.to_string()).ok_or_else(|| ApiError::bad("host-gateway: the default bridge has no gateway"))?
        } else {
            ip.parse::<IpAddr>().map_err(|_| ApiError::bad(format!("invalid IP address in add-host: {ip:?}")))?;
            ip.to_string()
        };
        out.push(format!("{name}:{ip}"));
    }
    host.extra_hosts = Some(out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_network::plumbing::Recorder;

    fn nets() -> (tempfile::TempDir, Arc<Recorder>, Networks) {
        let d = tempfile::tempdir().unwrap();
        let rec = Arc::new(Recorder::default());
        let n = Networks::open(&d.path().join("data"), &d.path().join("exec"), rec.clone(), &["127.0.0.1:5353".into()]).unwrap();
        (d, rec, n)
    }

    #[tokio::test]
    async fn host_setup_is_deferred_and_waited_for() {
        let (_d, rec, n) = nets();
        // Opening the store touches no bridge and no firewall: that is the deferred setup.
        assert!(rec.calls().iter().all(|c| !c.starts_with("bridge ")), "{:?}", rec.calls());
        assert!(rec.firewall.lock().unwrap().is_empty());
        assert_eq!(n.setup_state(), Setup::Pending);
        let n = Arc::new(n);
        let waiter = {
            let n = Arc::clone(&n);
            tokio::spawn(async move { n.wait_setup().await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a waiter must wait while the setup is pending");
        let n2 = Arc::clone(&n);
        tokio::task::spawn_blocking(move || n2.setup_host(Ok(()))).await.unwrap().unwrap();
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert!(rec.calls().iter().any(|c| c.starts_with(&format!("bridge {DEFAULT_BRIDGE} "))), "{:?}", rec.calls());
        assert!(rec.firewall.lock().unwrap().contains(DEFAULT_BRIDGE));
        // Missing kernel modules: a failure no retry fixes, with the reason.
        let (_d, _rec, n) = nets();
        assert_eq!(n.setup_host(Err("insmod bridge: Exec format error".into())), Err("insmod bridge: Exec format error".into()));
        assert_eq!(n.wait_setup().await, Err(("insmod bridge: Exec format error".into(), false)));
        // After the daemon's shutdown began, a late setup makes no bridge and no rule.
        let (_d, rec, n) = nets();
        n.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(n.setup_host(Ok(())).is_err());
        assert!(rec.calls().iter().all(|c| !c.starts_with("bridge ")), "{:?}", rec.calls());
        assert!(rec.firewall.lock().unwrap().is_empty());
    }

    #[test]
    fn predefined_networks_and_user_networks() {
        let (d, rec, n) = nets();
        let names: Vec<String> = n.list().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["bridge", "host", "none"]);
        let b = n.get("bridge").unwrap();
        assert_eq!(b.bridge, DEFAULT_BRIDGE);
        assert!(b.subnet.is_some());
        assert!(matches!(n.remove("bridge"), Err(NetworkError::Predefined(_))));
        let r = n
            .create(CreateRequest { name: "app".into(), subnet: Some("10.50.0.0/24".parse().unwrap()), internal: true, ..Default::default() })
            .unwrap();
        assert_eq!(r.gateway, Some(Ipv4Addr::new(10, 50, 0, 1)));
        assert!(r.bridge.starts_with("br-"));
        assert!(matches!(n.create(CreateRequest { name: "app".into(), ..Default::default() }), Err(NetworkError::NameInUse(_))));
        assert!(matches!(
            n.create(CreateRequest { name: "other".into(), subnet: Some("10.50.0.128/25".parse().unwrap()), ..Default::default() }),
            Err(NetworkError::Overlap)
        ));
        let fw = rec.firewall.lock().unwrap().clone();
        assert!(fw.contains(&format!("iifname \"{}\" oifname != \"{}\" drop", r.bridge, r.bridge)), "{fw}");
        assert!(rec.calls().iter().any(|c| c.starts_with(&format!("bridge {} 10.50.0.1/24", r.bridge))));
        // Prefix and name lookups; records survive a reopen.
        assert_eq!(n.get(&r.id[..6]).unwrap().name, "app");
        let n2 = Networks::open(&d.path().join("data"), &d.path().join("exec"), rec.clone(), &[]).unwrap();
        assert_eq!(n2.get("app").unwrap().id, r.id);
        assert_eq!(n2.get("bridge").unwrap().id, b.id);
        n2.remove("app").unwrap();
        assert!(rec.calls().contains(&format!("del {}", r.bridge)));
        assert!(n2.get("app").is_err());
    }

    #[test]
    fn upstreams_from_flags() {
        assert_eq!(host_upstreams(&["127.0.0.1:5353".into(), "10.0.0.2".into()]), vec!["127.0.0.1:5353".parse::<SocketAddr>().unwrap(), "10.0.0.2:53".parse().unwrap()]);
    }
}
