//! The embedded resolver: listens on 127.0.0.11:53 (UDP and TCP) inside each container on a
//! user-defined network, as Docker's does, answers names and aliases of containers that share a
//! network with the asker, and forwards everything else to the host's resolvers.
//!
//! Docker binds its resolver to random ports inside the container and adds NAT rules there to
//! redirect 127.0.0.11:53. We bind 127.0.0.11:53 directly (the whole of 127/8 is local on `lo`),
//! from a thread that entered the container's namespace: no rules inside the container, nothing
//! to clean, and the sockets are served by berthd's runtime. Forwarded queries leave from
//! berthd's own namespace, so host resolvers on loopback (systemd-resolved, a VPN's) work too.
//! Packets are parsed and built with `hickory-proto`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::plumbing::DnsSockets;

/// Docker's TTL for container records.
pub const TTL: u32 = 600;

/// Name lookups and upstreams, provided by the engine.
pub trait Resolve: Send + Sync {
    /// Addresses for `name` (lower case, no trailing dot) as seen by container `asker`;
    /// None when the name is not a container's.
    fn lookup(&self, asker: &str, name: &str) -> Option<Vec<Ipv4Addr>>;
    /// Where other names go.
    fn upstreams(&self) -> Vec<SocketAddr>;
}

/// What to do with one query.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Answer(Vec<u8>),
    Forward,
    Drop,
}

/// Answer locally when the (single) question is a container's name.
pub fn local_answer(query: &[u8], asker: &str, r: &dyn Resolve) -> Reply {
    let Ok(msg) = Message::from_vec(query) else { return Reply::Drop };
    if msg.metadata.message_type != MessageType::Query || msg.queries.len() != 1 {
        return Reply::Forward;
    }
    let q = &msg.queries[0];
    let name = q.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
    let Some(ips) = r.lookup(asker, &name) else { return Reply::Forward };
    let mut resp = Message::response(msg.metadata.id, msg.metadata.op_code);
    resp.metadata.recursion_desired = msg.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = true;
    resp.add_query(q.clone());
    if q.query_type() == RecordType::A || q.query_type() == RecordType::ANY {
        for ip in ips {
            resp.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))));
        }
    }
    // AAAA and other types of a known name: no records, no error (as Docker answers).
    resp.metadata.response_code = ResponseCode::NoError;
    match resp.to_vec() {
        Ok(b) => Reply::Answer(b),
        Err(_) => Reply::Drop,
    }
}

/// SERVFAIL for a query we could not forward.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    let mut resp = Message::error_msg(msg.metadata.id, msg.metadata.op_code, ResponseCode::ServFail);
    resp.metadata.recursion_desired = msg.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    for q in msg.queries {
        resp.add_query(q);
    }
    resp.to_vec().ok()
}

/// Send `query` to each upstream in turn over UDP until one answers.
pub async fn forward(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() { "0.0.0.0:0".parse().ok()? } else { "[::]:0".parse().ok()? };
        let Ok(s) = tokio::net::UdpSocket::bind(bind).await else { continue };
        if s.send_to(query, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_secs(2), s.recv_from(&mut buf)).await {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

async fn resolve(query: &[u8], asker: &str, r: &Arc<dyn Resolve>) -> Option<Vec<u8>> {
    match local_answer(query, asker, r.as_ref()) {
        Reply::Answer(b) => Some(b),
        Reply::Drop => None,
        Reply::Forward => match forward(query, &r.upstreams()).await {
            Some(b) => Some(b),
            None => servfail(query),
        },
    }
}

/// Serve one container's resolver sockets until the returned handle is aborted.
pub fn serve(sockets: DnsSockets, asker: String, r: Arc<dyn Resolve>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let udp = Arc::new(tokio::net::UdpSocket::from_std(sockets.udp)?);
    let tcp = tokio::net::TcpListener::from_std(sockets.tcp)?;
    Ok(tokio::spawn(async move {
        let asker = Arc::new(asker);
        let u = {
            let (udp, r, asker) = (Arc::clone(&udp), Arc::clone(&r), Arc::clone(&asker));
            async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((n, from)) = udp.recv_from(&mut buf).await else { return };
                    let q = buf[..n].to_vec();
                    let (udp, r, asker) = (Arc::clone(&udp), Arc::clone(&r), Arc::clone(&asker));
                    tokio::spawn(async move {
                        if let Some(resp) = resolve(&q, &asker, &r).await {
                            let _ = udp.send_to(&resp, from).await;
                        }
                    });
                }
            }
        };
        let t = async move {
            loop {
                let Ok((mut conn, _)) = tcp.accept().await else { return };
                let (r, asker) = (Arc::clone(&r), Arc::clone(&asker));
                tokio::spawn(async move {
                    loop {
                        let Ok(len) = conn.read_u16().await else { return };
                        let mut q = vec![0u8; len as usize];
                        if conn.read_exact(&mut q).await.is_err() {
                            return;
                        }
                        let Some(resp) = resolve(&q, &asker, &r).await else { return };
                        let mut out = (resp.len() as u16).to_be_bytes().to_vec();
                        out.extend(resp);
                        if conn.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        };
        tokio::join!(u, t);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{OpCode, Query};
    use hickory_proto::rr::Name;

    struct Fixed(Vec<SocketAddr>);
    impl Resolve for Fixed {
        fn lookup(&self, asker: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
            (asker == "c1" && (name == "web" || name == "alias")).then(|| vec![Ipv4Addr::new(172, 18, 0, 3)])
        }
        fn upstreams(&self) -> Vec<SocketAddr> {
            self.0.clone()
        }
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    #[test]
    fn answers_container_names() {
        let r = Fixed(vec![]);
        let Reply::Answer(b) = local_answer(&query("web.", RecordType::A), "c1", &r) else { panic!() };
        let m = Message::from_vec(&b).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(172, 18, 0, 3))));
        // Case-insensitive; AAAA of a known name is an empty success.
        let Reply::Answer(b) = local_answer(&query("ALIAS.", RecordType::AAAA), "c1", &r) else { panic!() };
        let m = Message::from_vec(&b).unwrap();
        assert!(m.answers.is_empty());
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        // Other containers' view and unknown names go upstream.
        assert_eq!(local_answer(&query("web.", RecordType::A), "c2", &r), Reply::Forward);
        assert_eq!(local_answer(&query("example.test.", RecordType::A), "c1", &r), Reply::Forward);
        assert_eq!(local_answer(b"junk", "c1", &r), Reply::Drop);
        let sf = Message::from_vec(&servfail(&query("x.", RecordType::A)).unwrap()).unwrap();
        assert_eq!(sf.metadata.response_code, ResponseCode::ServFail);
    }

    #[tokio::test]
    async fn forwards_to_upstream_on_loopback() {
        // A tiny upstream on 127.0.0.1 that answers every query with 10.9.9.9.
        let up = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = up.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            let (n, from) = up.recv_from(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut resp = Message::response(q.metadata.id, OpCode::Query);
            resp.add_query(q.queries[0].clone());
            resp.add_answer(Record::from_rdata(q.queries[0].name().clone(), 5, RData::A(A(Ipv4Addr::new(10, 9, 9, 9)))));
            up.send_to(&resp.to_vec().unwrap(), from).await.unwrap();
        });
        let r: Arc<dyn Resolve> = Arc::new(Fixed(vec![addr]));
        let b = resolve(&query("outside.test.", RecordType::A), "c1", &r).await.unwrap();
        let m = Message::from_vec(&b).unwrap();
        assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(10, 9, 9, 9))));
        // No upstream at all: SERVFAIL, not silence.
        let r: Arc<dyn Resolve> = Arc::new(Fixed(vec![]));
        let b = resolve(&query("outside.test.", RecordType::A), "c1", &r).await.unwrap();
        assert_eq!(Message::from_vec(&b).unwrap().metadata.response_code, ResponseCode::ServFail);
    }
}
