//! Throughput through a published port: a busybox httpd in a container serves 128 MiB on
//! `-p 127.0.0.1::8080`, and the bench downloads it from inside the peer's namespace. berthd's
//! networks and published ports are being written (issue 5): until they land, berthd
//! publishes nothing and is reported n/a.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{ensure_image, missing_feature, Ctx};
use crate::error::{Error, IoContext, Result};
use crate::peers::Peer;
use crate::scenario::{Better, Meta, Sample, Scenario, Skip, Subject};

/// Bytes served per sample.
pub const BLOB: u64 = 128 << 20;

pub struct PortThroughput {
    ctx: Arc<Ctx>,
    /// peer -> (container id, host address of the published port)
    state: Mutex<HashMap<String, (String, String)>>,
}

impl PortThroughput {
    pub fn new(ctx: &Arc<Ctx>) -> Self {
        PortThroughput {
            ctx: ctx.clone(),
            state: Mutex::new(HashMap::new()),
        }
    }
}

/// The IPv4 `host:port` from `docker port <id> 8080/tcp` output (one binding per line).
pub fn parse_port_output(out: &str) -> Option<String> {
    out.lines()
        .map(str::trim)
        .find(|l| l.starts_with("127.0.0.1:") || l.starts_with("0.0.0.0:"))
        .map(|l| l.replacen("0.0.0.0:", "127.0.0.1:", 1))
}

/// GET `path` over HTTP/1.0 from inside the peer's namespace; returns (status line, body
/// bytes, elapsed from connect to EOF).
fn http_get(peer: &Peer, addr: &str, path: &str) -> Result<(String, u64, Duration)> {
    let start = Instant::now();
    let mut s = peer.ns.connect_tcp(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .ctx(|| "timeout".into())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").ctx(|| "send request".into())?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let mut body = 0u64;
    let mut in_body = false;
    loop {
        let n = s.read(&mut buf).ctx(|| format!("read {path}"))?;
        if n == 0 {
            break;
        }
        if in_body {
            body += n as u64;
            continue;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            body += (head.len() - end - 4) as u64;
            head.truncate(end);
            in_body = true;
        }
    }
    let elapsed = start.elapsed();
    let status = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    Ok((status, body, elapsed))
}

impl Scenario<Peer> for PortThroughput {
    fn meta(&self) -> Meta {
        Meta {
            name: "port-throughput".into(),
            title: "published port, 128 MiB download".into(),
            description: format!(
                "MB/s (10^6 bytes/s) of one HTTP/1.0 download of {} MiB from busybox httpd in a \
                 `{}` container published with `-p 127.0.0.1::8080`, from connect to EOF, client \
                 in the peer's namespace (the peer's own forwarding: docker-proxy for dockerd, \
                 netavark's rules for podman).",
                BLOB >> 20,
                self.ctx.busybox
            ),
            unit: "MB/s".into(),
            better: Better::Higher,
            rounds: 5,
            warmup: 1,
        }
    }

    fn prepare(&self, peer: &Peer) -> std::result::Result<(), Skip> {
        ensure_image(peer, &self.ctx.busybox)?;
        let script = format!(
            "mkdir -p /www && head -c {BLOB} /dev/zero > /www/blob && echo ok > /www/ready && \
             exec httpd -f -p 8080 -h /www"
        );
        let id = match peer.docker(&[
            "run",
            "-d",
            "-p",
            "127.0.0.1::8080",
            &self.ctx.busybox,
            "sh",
            "-c",
            &script,
        ]) {
            Ok(id) => id.trim().to_string(),
            Err(e) => {
                return Err(match missing_feature(&e) {
                    Some(l) => {
                        Skip::NotApplicable(format!("no published ports yet (issue 5): {l}"))
                    }
                    None => Skip::Failed(e),
                })
            }
        };
        let port_out = peer.docker(&["port", &id, "8080/tcp"]).unwrap_or_default();
        let Some(addr) = parse_port_output(&port_out) else {
            let _ = peer.docker(&["rm", "-f", &id]);
            return Err(Skip::NotApplicable(format!(
                "`-p 127.0.0.1::8080` was accepted but `docker port` shows no binding ({:?}): \
                 published ports not implemented yet (issue 5)",
                port_out.trim()
            )));
        };
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer.name().into(), (id, addr.clone()));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match http_get(peer, &addr, "/ready") {
                Ok((status, _, _)) if status.contains(" 200") => return Ok(()),
                r => {
                    if Instant::now() > deadline {
                        return Err(Skip::Failed(Error::Unexpected(format!(
                            "httpd behind {addr} not ready after 60 s: {r:?}"
                        ))));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn sample(&self, peer: &Peer, _round: usize) -> Result<Sample> {
        let addr = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer.name())
            .map(|s| s.1.clone())
            .ok_or_else(|| Error::Unexpected("not prepared".into()))?;
        let (status, body, elapsed) = http_get(peer, &addr, "/blob")?;
        if !status.contains(" 200") || body != BLOB {
            return Err(Error::Unexpected(format!(
                "GET /blob: {status:?}, {body} of {BLOB} bytes"
            )));
        }
        Ok((body as f64 / 1e6 / elapsed.as_secs_f64()).into())
    }

    fn cleanup(&self, peer: &Peer) {
        let st = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(peer.name());
        if let Some((id, _)) = st {
            let _ = peer.docker(&["rm", "-f", &id]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_output() {
        assert_eq!(
            parse_port_output("127.0.0.1:32768\n").as_deref(),
            Some("127.0.0.1:32768")
        );
        assert_eq!(
            parse_port_output("[::1]:1\n0.0.0.0:49153\n").as_deref(),
            Some("127.0.0.1:49153")
        );
        assert_eq!(parse_port_output(""), None);
    }
}
