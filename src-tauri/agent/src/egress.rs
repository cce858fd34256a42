//! Egress for the VM: an HTTP proxy served by the agent on host vsock port 3128. berthd in the
//! guest uses it for every pull (`HTTP_PROXY`/`HTTPS_PROXY`, relayed by init from guest
//! 127.0.0.1:3128), so connections leave from this host process: they follow the host's routes,
//! DNS and VPN, and reach the host's loopback (a registry on 127.0.0.1). The VM has no network
//! device at all.
//!
//! `CONNECT host:port` tunnels (HTTPS, end-to-end TLS); absolute-form requests
//! (`GET http://host:port/path`) are sent on by a one-shot HTTP/1.1 client.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::transport::GuestListener;

type Body = BoxBody<Bytes, hyper::Error>;

fn text(status: StatusCode, msg: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(msg)).map_err(|never| match never {}).boxed())
        .expect("static response")
}

/// `host:port` of a CONNECT or absolute-form request, with the scheme's default port.
pub fn target_of(req: &Request<Incoming>) -> Option<(String, u16)> {
    let uri = req.uri();
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().or(match uri.scheme_str() {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    })?;
    Some((host, port))
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let Some((host, port)) = target_of(&req) else {
        return Ok(text(StatusCode::BAD_REQUEST, "berth egress proxy: expected CONNECT or an absolute URL\n".into()));
    };
    if req.method() == Method::CONNECT {
        let upstream = match TcpStream::connect((host.as_str(), port)).await {
            Ok(u) => u,
            Err(e) => return Ok(text(StatusCode::BAD_GATEWAY, format!("berth egress proxy: connect {host}:{port}: {e}\n"))),
        };
        tokio::spawn(async move {
            if let Ok(up) = hyper::upgrade::on(req).await {
                let mut up = TokioIo::new(up);
                let mut upstream = upstream;
                let _ = crate::forward::splice(&mut up, &mut upstream).await;
            }
        });
        return Ok(Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed()));
    }
    let stream = match TcpStream::connect((host.as_str(), port)).await {
        Ok(s) => s,
        Err(e) => return Ok(text(StatusCode::BAD_GATEWAY, format!("berth egress proxy: connect {host}:{port}: {e}\n"))),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(x) => x,
        Err(e) => return Ok(text(StatusCode::BAD_GATEWAY, format!("berth egress proxy: {e}\n"))),
    };
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    let pq = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    parts.uri = pq.parse().unwrap_or_else(|_| "/".parse().expect("static"));
    parts.headers.remove("proxy-connection");
    parts.headers.remove("proxy-authorization");
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => Ok(resp.map(|b| b.boxed())),
        Err(e) => Ok(text(StatusCode::BAD_GATEWAY, format!("berth egress proxy: {e}\n"))),
    }
}

/// Serve proxy connections from the guest until the listener fails.
pub async fn serve(mut l: Box<dyn GuestListener>) {
    while let Ok(s) = l.accept().await {
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), service_fn(handle))
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!("egress connection: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::per_port::PerPortUnix;
    use crate::transport::Transport;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn origin() -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap();
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let first = req.lines().next().unwrap_or("").to_string();
                    let body = format!("origin saw: {first}");
                    let _ = s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).await;
                });
            }
        });
        port
    }

    async fn proxy() -> (tempfile::TempDir, PerPortUnix) {
        let dir = tempfile::tempdir().unwrap();
        let t = PerPortUnix::new(dir.path());
        let l = t.listen(3128).await.unwrap();
        tokio::spawn(serve(l));
        (dir, t)
    }

    #[tokio::test]
    async fn absolute_form_reaches_host_loopback_with_origin_form() {
        let port = origin().await;
        let (_d, t) = proxy().await;
        let mut s = tokio::net::UnixStream::connect(t.path(3128)).await.unwrap();
        s.write_all(format!("GET http://127.0.0.1:{port}/v2/x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("origin saw: GET /v2/x?y=1 HTTP/1.1"), "{out}");
    }

    #[tokio::test]
    async fn connect_tunnels_and_bad_requests_are_refused() {
        let port = origin().await;
        let (_d, t) = proxy().await;
        let mut s = tokio::net::UnixStream::connect(t.path(3128)).await.unwrap();
        s.write_all(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        s.write_all(b"GET /tunnelled HTTP/1.1\r\n\r\n").await.unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("origin saw: GET /tunnelled"));

        let mut s = tokio::net::UnixStream::connect(t.path(3128)).await.unwrap();
        s.write_all(b"GET /relative HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");

        // A closed port answers 502, not a hang.
        let dead = { let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap(); l.local_addr().unwrap().port() };
        let mut s = tokio::net::UnixStream::connect(t.path(3128)).await.unwrap();
        s.write_all(format!("CONNECT 127.0.0.1:{dead} HTTP/1.1\r\n\r\n").as_bytes()).await.unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 502"));
    }
}
