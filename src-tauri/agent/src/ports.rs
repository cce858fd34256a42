//! Published ports, event-driven: the agent follows berthd's `/events` (container `start` and
//! `die`), reads `GET /containers/{id}/json` for `NetworkSettings.Ports`, and for each
//! published port listens on the same host address and port (`0.0.0.0` and an empty HostIp
//! mean 127.0.0.1 on the host: a desktop should not open ports to the LAN unasked). Each
//! connection goes over vsock to init's forward service, which connects to the container
//! inside the VM. A `die` closes the listeners at once. No polling: a full resync happens only
//! when the event stream (re)connects.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::PortForward;
use crate::protocol::{ENGINE_PORT, FORWARD_PORT, MAX_LINE};
use crate::transport::Transport;

/// One published port of a running container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Published {
    pub forward: PortForward,
    /// Where init connects inside the VM.
    pub guest_target: SocketAddr,
}

/// Published TCP and UDP ports from a `GET /containers/{id}/json` answer.
pub fn published_ports(id: &str, inspect: &Value) -> Vec<Published> {
    let ns = &inspect["NetworkSettings"];
    let container_ip: Option<IpAddr> = ns["IPAddress"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| ns["Networks"].as_object().and_then(|m| m.values().find_map(|n| n["IPAddress"].as_str().filter(|s| !s.is_empty()))))
        .and_then(|s| s.parse().ok());
    let mut out = Vec::new();
    let Some(ports) = ns["Ports"].as_object() else { return out };
    for (cport, bindings) in ports {
        let Some((num, proto)) = cport.split_once('/') else { continue };
        if proto != "tcp" && proto != "udp" {
            continue;
        }
        let Ok(cnum) = num.parse::<u16>() else { continue };
        for b in bindings.as_array().into_iter().flatten() {
            let Some(hport) = b["HostPort"].as_str().and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0) else { continue };
            let hip = b["HostIp"].as_str().unwrap_or("");
            let host_ip = match hip {
                "" | "0.0.0.0" => "127.0.0.1".to_string(),
                "::" => "::1".to_string(),
                other => other.to_string(),
            };
            // The container itself when it has an address in the VM; else the port berthd
            // published on the VM's loopback.
            let guest_target = match container_ip {
                Some(ip) => SocketAddr::new(ip, cnum),
                None => SocketAddr::new(IpAddr::from([127, 0, 0, 1]), hport),
            };
            out.push(Published {
                forward: PortForward { host_ip, host_port: hport, container_id: id.to_string(), container_port: cport.clone() },
                guest_target,
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What a `/events` line means for us: (container id, started?).
pub fn container_event(line: &[u8]) -> Option<(String, bool)> {
    let v: Value = serde_json::from_slice(line).ok()?;
    if v["Type"].as_str() != Some("container") {
        return None;
    }
    let id = v["Actor"]["ID"].as_str().or_else(|| v["id"].as_str())?.to_string();
    match v["Action"].as_str().or_else(|| v["status"].as_str())? {
        "start" => Some((id, true)),
        "die" => Some((id, false)),
        _ => None,
    }
}

/// Notifications for the status and the event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum PortChange {
    Opened(PortForward),
    Closed(PortForward),
    Failed(PortForward, String),
}

struct Open {
    published: Published,
    task: JoinHandle<()>,
}

/// The forwards currently open, by container.
#[derive(Clone, Default)]
pub struct PortTable {
    inner: Arc<Mutex<BTreeMap<String, Vec<Open>>>>,
}

impl PortTable {
    pub fn list(&self) -> Vec<PortForward> {
        let m = self.inner.lock().expect("ports lock");
        m.values().flatten().map(|o| o.published.forward.clone()).collect()
    }

    fn close(&self, id: &str, tx: &mpsc::UnboundedSender<PortChange>) {
        let gone = self.inner.lock().expect("ports lock").remove(id);
        for o in gone.into_iter().flatten() {
            o.task.abort();
            let _ = tx.send(PortChange::Closed(o.published.forward));
        }
    }

    pub fn close_all(&self, tx: &mpsc::UnboundedSender<PortChange>) {
        let ids: Vec<String> = self.inner.lock().expect("ports lock").keys().cloned().collect();
        for id in ids {
            self.close(&id, tx);
        }
    }

    async fn open(&self, transport: &Arc<dyn Transport>, id: &str, ports: Vec<Published>, tx: &mpsc::UnboundedSender<PortChange>) {
        self.close(id, tx);
        let mut opened = Vec::new();
        for p in ports {
            let addr = format!("{}:{}", bracket(&p.forward.host_ip), p.forward.host_port);
            let t = Arc::clone(transport);
            let target = p.guest_target;
            let task = if p.forward.container_port.ends_with("/udp") {
                tokio::net::UdpSocket::bind(&addr).await.map(|u| tokio::spawn(udp_loop(u, t, target)))
            } else {
                TcpListener::bind(&addr).await.map(|l| tokio::spawn(accept_loop(l, t, target)))
            };
            match task {
                Ok(task) => {
                    let _ = tx.send(PortChange::Opened(p.forward.clone()));
                    opened.push(Open { published: p, task });
                }
                Err(e) => {
                    tracing::warn!("cannot listen on {addr} for container {id}: {e}");
                    let _ = tx.send(PortChange::Failed(p.forward.clone(), format!("cannot listen on {addr}: {e}")));
                }
            }
        }
        if !opened.is_empty() {
            self.inner.lock().expect("ports lock").insert(id.to_string(), opened);
        }
    }
}

fn bracket(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

async fn accept_loop(l: TcpListener, t: Arc<dyn Transport>, target: SocketAddr) {
    loop {
        let Ok((c, _)) = l.accept().await else { continue };
        let t = Arc::clone(&t);
        tokio::spawn(async move {
            match open_forward(&*t, target).await {
                Ok(g) => {
                    let _ = g.splice(c).await;
                }
                Err(e) => tracing::warn!("port forward to {target}: {e}"),
            }
        });
    }
}

/// How long a UDP flow (one host-side client address) lives without a datagram either way;
/// docker-proxy keeps its UDP flows 90 s too.
const UDP_IDLE: Duration = Duration::from_secs(90);

/// A published UDP port: each client address gets its own stream to init's forward service
/// (`udp ADDR`, one frame per datagram), so answers go back to the client that asked. The
/// flows are tasks of this one, so closing the port (its task aborted) ends them all and frees
/// the host port at once.
async fn udp_loop(sock: tokio::net::UdpSocket, t: Arc<dyn Transport>, target: SocketAddr) {
    use std::collections::HashMap;
    let sock = Arc::new(sock);
    let mut flows: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        while tasks.try_join_next().is_some() {}
        let Ok((n, client)) = sock.recv_from(&mut buf).await else { continue };
        flows.retain(|_, tx| !tx.is_closed());
        let tx = flows.entry(client).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(64);
            tasks.spawn(udp_flow(Arc::clone(&t), target, Arc::clone(&sock), client, rx));
            tx
        });
        // A full queue drops the datagram, as a busy UDP path may.
        let _ = tx.try_send(buf[..n].to_vec());
    }
}

async fn udp_flow(t: Arc<dyn Transport>, target: SocketAddr, sock: Arc<tokio::net::UdpSocket>, client: SocketAddr, mut rx: mpsc::Receiver<Vec<u8>>) {
    let g = match request_forward(&*t, "udp", target).await {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!("UDP port forward to {target}: {e}");
            return;
        }
    };
    let (mut rd, mut wr) = tokio::io::split(g);
    let last = Arc::new(Mutex::new(std::time::Instant::now()));
    let last2 = Arc::clone(&last);
    // Answers: read in a task of its own (a frame read is not safe to cancel midway).
    let answers = tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Ok(true) = berth_framed::read_datagram(&mut rd, &mut buf).await {
            *last2.lock().expect("udp flow clock") = std::time::Instant::now();
            if sock.send_to(&buf, client).await.is_err() {
                return;
            }
        }
    });
    loop {
        let idle_for = last.lock().expect("udp flow clock").elapsed();
        let Some(left) = UDP_IDLE.checked_sub(idle_for) else { break };
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(d)) => {
                *last.lock().expect("udp flow clock") = std::time::Instant::now();
                if berth_framed::write_datagram(&mut wr, &d).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
        if answers.is_finished() {
            break;
        }
    }
    answers.abort();
}

/// A connection to a TCP address inside the VM, raw or framed (see [`crate::framed`]).
pub struct GuestTcp {
    stream: crate::transport::BoxStream,
    framed: bool,
}

impl GuestTcp {
    /// Relay `local` (e.g. an accepted host TCP connection) to it, with half-close both ways.
    pub async fn splice<L: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(self, mut local: L) -> std::io::Result<()> {
        let mut g = self.stream;
        if self.framed {
            berth_framed::splice_framed(local, g).await
        } else {
            crate::forward::splice(&mut local, &mut g).await.map(|_| ())
        }
    }
}

/// A stream to `target` inside the VM through init's forward service.
pub async fn open_forward(t: &dyn Transport, target: SocketAddr) -> std::io::Result<GuestTcp> {
    let framed = !t.half_close();
    let kind = if framed { "tcp+framed" } else { "tcp" };
    let stream = request_forward(t, kind, target).await?;
    Ok(GuestTcp { stream, framed })
}

/// Ask init's forward service for `kind target` (`tcp`, `tcp+framed`, `udp`); the stream
/// after its `OK`.
async fn request_forward(t: &dyn Transport, kind: &str, target: SocketAddr) -> std::io::Result<crate::transport::BoxStream> {
    let mut g = t.connect(FORWARD_PORT).await?;
    g.write_all(format!("{kind} {target}\n").as_bytes()).await?;
    let mut line = Vec::new();
    loop {
        let b = g.read_u8().await?;
        if b == b'\n' {
            break;
        }
        line.push(b);
        if line.len() > MAX_LINE {
            return Err(std::io::Error::other("forward answer too long"));
        }
    }
    if line == b"OK" {
        Ok(g)
    } else {
        Err(std::io::Error::other(String::from_utf8_lossy(&line).into_owned()))
    }
}

/// One Engine API GET over the transport; the body as JSON.
async fn get_json(t: &dyn Transport, path: &str) -> Result<Value, String> {
    let s = t.connect(ENGINE_PORT).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path).header("host", "berth").body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    if !status.is_success() {
        return Err(format!("{path}: {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

async fn sync_container(table: &PortTable, t: &Arc<dyn Transport>, id: &str, tx: &mpsc::UnboundedSender<PortChange>) {
    match get_json(&**t, &format!("/containers/{id}/json")).await {
        Ok(v) if v["State"]["Running"].as_bool().unwrap_or(false) => table.open(t, id, published_ports(id, &v), tx).await,
        Ok(_) => table.close(id, tx),
        Err(e) => tracing::warn!("inspect {id}: {e}"),
    }
}

/// Follow the engine's events until the task is aborted; reconnect when the stream ends.
pub fn watch(table: PortTable, t: Arc<dyn Transport>, tx: mpsc::UnboundedSender<PortChange>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = follow(&table, &t, &tx).await {
                tracing::debug!("events stream: {e}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

async fn follow(table: &PortTable, t: &Arc<dyn Transport>, tx: &mpsc::UnboundedSender<PortChange>) -> Result<(), String> {
    // Subscribe first, then resync, so nothing that happens in between is missed.
    let s = t.connect(ENGINE_PORT).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let filters = r#"{"type":["container"],"event":["start","die"]}"#;
    let path = format!("/events?filters={}", url_escape(filters));
    let req = http::Request::get(path).header("host", "berth").body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("/events: {}", resp.status()));
    }
    let running = get_json(&**t, "/containers/json").await?;
    let ids: BTreeSet<String> = running.as_array().into_iter().flatten().filter_map(|c| c["Id"].as_str().map(String::from)).collect();
    let known: Vec<String> = table.inner.lock().expect("ports lock").keys().cloned().collect();
    for id in known.iter().filter(|k| !ids.contains(*k)) {
        table.close(id, tx);
    }
    for id in &ids {
        sync_container(table, t, id, tx).await;
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            if let Some((id, started)) = container_event(&line) {
                if started {
                    sync_container(table, t, &id, tx).await;
                } else {
                    table.close(&id, tx);
                }
            }
        }
        if buf.len() > 1 << 20 {
            return Err("event line too long".into());
        }
    }
    Ok(())
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::per_port::PerPortUnix;
    use serde_json::json;

    #[test]
    fn reads_published_ports_like_docker_reports_them() {
        let v = json!({"State": {"Running": true}, "NetworkSettings": {
            "IPAddress": "",
            "Networks": {"bridge": {"IPAddress": "172.17.0.2"}},
            "Ports": {
                "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
                "443/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8443"}],
                "53/udp": [{"HostIp": "", "HostPort": "5353"}],
                "9000/tcp": null
            }}});
        let p = published_ports("c1", &v);
        let f: Vec<_> = p.iter().map(|p| (p.forward.host_ip.as_str(), p.forward.host_port, p.guest_target.to_string())).collect();
        assert_eq!(f, vec![
            ("127.0.0.1", 5353, "172.17.0.2:53".to_string()),
            ("127.0.0.1", 8080, "172.17.0.2:80".to_string()),
            ("127.0.0.1", 8443, "172.17.0.2:443".to_string()),
            ("::1", 8080, "172.17.0.2:80".to_string()),
        ]);
        let v = json!({"NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "", "HostPort": "81"}]}}});
        assert_eq!(published_ports("c", &v)[0].guest_target.to_string(), "127.0.0.1:81", "no container IP: the VM's published port");
        assert!(published_ports("c", &json!({})).is_empty());
        assert!(published_ports("c", &json!({"NetworkSettings": {"Ports": {"x/tcp": [{"HostPort": "1"}], "1/tcp": [{"HostPort": "zz"}]}}})).is_empty());
    }

    #[test]
    fn container_events() {
        assert_eq!(container_event(br#"{"Type":"container","Action":"start","Actor":{"ID":"abc"}}"#), Some(("abc".into(), true)));
        assert_eq!(container_event(br#"{"Type":"container","Action":"die","Actor":{"ID":"abc"}}"#), Some(("abc".into(), false)));
        assert_eq!(container_event(br#"{"Type":"image","Action":"pull","Actor":{"ID":"x"}}"#), None);
        assert_eq!(container_event(br#"{"Type":"container","Action":"exec_start: sh","Actor":{"ID":"x"}}"#), None);
        assert_eq!(container_event(b"garbage"), None);
    }

    /// A fake guest: an Engine API with one container whose running state the test flips,
    /// a `/events` stream the test writes to, and init's forward service in front of a TCP
    /// server that answers "hello from <target>".
    struct FakeGuest {
        _dir: tempfile::TempDir,
        transport: Arc<dyn Transport>,
        events: mpsc::UnboundedSender<String>,
        running: Arc<Mutex<bool>>,
    }

    async fn fake_guest(host_port: u16) -> FakeGuest {
        use http_body_util::{Full, StreamBody};
        use hyper::body::Frame;
        let dir = tempfile::tempdir().unwrap();
        let pp = PerPortUnix::new(dir.path());
        let running = Arc::new(Mutex::new(false));
        let (etx, erx) = mpsc::unbounded_channel::<String>();
        let erx = Arc::new(tokio::sync::Mutex::new(Some(erx)));
        // The "container": a TCP server on loopback standing in for 172.17.0.2:80.
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_port = backend.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = backend.accept().await {
                let _ = s.write_all(b"hello from the container").await;
            }
        });
        let engine = pp.listen(ENGINE_PORT).await.unwrap();
        let r = Arc::clone(&running);
        tokio::spawn(async move {
            let mut engine = engine;
            while let Ok(s) = engine.accept().await {
                let r = Arc::clone(&r);
                let erx = Arc::clone(&erx);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let r = Arc::clone(&r);
                        let erx = Arc::clone(&erx);
                        async move {
                            type B = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;
                            let path = req.uri().path().to_string();
                            let resp: http::Response<B> = if path == "/events" {
                                let rx = erx.lock().await.take().expect("one events subscriber");
                                let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                                    rx.recv().await.map(|l| (Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(l + "\n"))), rx))
                                });
                                http::Response::new(BodyExt::boxed(StreamBody::new(stream)))
                            } else if path == "/containers/json" {
                                let list = if *r.lock().unwrap() { json!([{"Id": "c1"}]) } else { json!([]) };
                                http::Response::new(BodyExt::boxed(Full::new(Bytes::from(list.to_string()))))
                            } else {
                                let v = json!({"State": {"Running": *r.lock().unwrap()}, "NetworkSettings": {"IPAddress": "127.0.0.1",
                                    "Ports": {format!("{backend_port}/tcp"): [{"HostIp": "127.0.0.1", "HostPort": host_port.to_string()}]}}});
                                http::Response::new(BodyExt::boxed(Full::new(Bytes::from(v.to_string()))))
                            };
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
                });
            }
        });
        // init's forward service (same protocol as guest/init/src/services.rs).
        let mut fwd = pp.listen(FORWARD_PORT).await.unwrap();
        tokio::spawn(async move {
            while let Ok(mut s) = fwd.accept().await {
                tokio::spawn(async move {
                    let mut line = Vec::new();
                    loop {
                        let b = s.read_u8().await.unwrap();
                        if b == b'\n' {
                            break;
                        }
                        line.push(b);
                    }
                    let target = String::from_utf8(line).unwrap();
                    let addr = target.strip_prefix("tcp ").unwrap().to_string();
                    let mut t = tokio::net::TcpStream::connect(addr).await.unwrap();
                    s.write_all(b"OK\n").await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut s, &mut t).await;
                });
            }
        });
        FakeGuest { _dir: dir, transport: Arc::new(pp), events: etx, running }
    }

    async fn get(port: u16) -> std::io::Result<String> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await.map_err(|_| std::io::Error::other("timeout"))??;
        Ok(out)
    }

    async fn wait_for(rx: &mut mpsc::UnboundedReceiver<PortChange>) -> PortChange {
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a port change").expect("channel open")
    }

    #[tokio::test]
    async fn start_opens_and_die_closes_the_host_port() {
        let host_port = { std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port() };
        let g = fake_guest(host_port).await;
        let table = PortTable::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let w = watch(table.clone(), Arc::clone(&g.transport), tx);
        // Nothing runs: nothing listens.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(get(host_port).await.is_err());
        // start -> the port opens and reaches the container through the forward service.
        *g.running.lock().unwrap() = true;
        g.events.send(r#"{"Type":"container","Action":"start","Actor":{"ID":"c1"}}"#.into()).unwrap();
        assert!(matches!(wait_for(&mut rx).await, PortChange::Opened(f) if f.host_port == host_port));
        assert_eq!(get(host_port).await.unwrap(), "hello from the container");
        assert_eq!(table.list().len(), 1);
        // die -> released at once.
        *g.running.lock().unwrap() = false;
        g.events.send(r#"{"Type":"container","Action":"die","Actor":{"ID":"c1"}}"#.into()).unwrap();
        assert!(matches!(wait_for(&mut rx).await, PortChange::Closed(_)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(get(host_port).await.is_err(), "port must be released after die");
        assert!(table.list().is_empty());
        // A garbage event line does not stop the watcher.
        g.events.send("{not json".into()).unwrap();
        *g.running.lock().unwrap() = true;
        g.events.send(r#"{"Type":"container","Action":"start","Actor":{"ID":"c1"}}"#.into()).unwrap();
        assert!(matches!(wait_for(&mut rx).await, PortChange::Opened(_)));
        w.abort();
    }
}
