//! The control API on `~/.berth/run/agent.sock` (0600): HTTP/1.1 + JSON.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /v1/status` | | [`Status`](crate::api::Status) |
//! | `POST /v1/up` | [`UpRequest`](crate::api::UpRequest) | `Status` once ready or failed |
//! | `POST /v1/down` | | `Status` |
//! | `POST /v1/restart` | | `Status` |
//! | `GET /v1/settings`, `PUT /v1/settings` | [`SettingsPatch`](crate::api::SettingsPatch) | [`Settings`](crate::api::Settings) |
//! | `GET /v1/events` | | newline-delimited [`Event`](crate::api::Event)s, forever |
//! | `GET /v1/logs?tail=N` | | [`Logs`](crate::api::Logs) |
//! | `GET /v1/diagnostics` | | [`Diagnostics`](crate::api::Diagnostics) |
//! | `POST /v1/shell?rows=R&cols=C` | `Upgrade: berth-shell` | 101, then a pty in the VM |
//! | `POST /v1/shutdown` | | `Status`; the agent stops the engine and exits |
//!
//! Errors are `{"message": ...}` with 400 (bad input), 404, 405, 409 (no VM), 413 (body over
//! [`MAX_BODY`]) or 502.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agent::Agent;
use crate::api::{Check, Diagnostics, ErrorBody, Logs, SettingsPatch};
use crate::protocol::{MAX_LINE, SHELL_PORT};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

type Body = BoxBody<Bytes, Infallible>;

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(v).expect("serializable"))).boxed())
        .expect("valid response")
}

fn err(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(status, &ErrorBody { message: message.into() })
}

async fn read_patch(req: Request<Incoming>) -> Result<SettingsPatch, Response<Body>> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| err(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {MAX_BODY} bytes or truncated")))?
        .to_bytes();
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(SettingsPatch::default());
    }
    serde_json::from_slice(&body).map_err(|e| err(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v.to_string()))
}

async fn route(agent: Arc<Agent>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/v1/status") => json(StatusCode::OK, &agent.status()),
        (Method::POST, "/v1/up") => match read_patch(req).await {
            Ok(p) => json(StatusCode::OK, &agent.up(&p).await),
            Err(r) => r,
        },
        (Method::POST, "/v1/down") => json(StatusCode::OK, &agent.down().await),
        (Method::POST, "/v1/restart") => {
            agent.down().await;
            json(StatusCode::OK, &agent.up(&SettingsPatch::default()).await)
        }
        (Method::POST, "/v1/shutdown") => {
            let s = agent.down().await;
            agent.exit.notify_one();
            json(StatusCode::OK, &s)
        }
        (Method::GET, "/v1/settings") => json(StatusCode::OK, &agent.settings()),
        (Method::PUT, "/v1/settings") => match read_patch(req).await {
            Ok(p) => match agent.set_settings(&p) {
                Ok(s) => json(StatusCode::OK, &s),
                Err(m) => err(StatusCode::BAD_REQUEST, m),
            },
            Err(r) => r,
        },
        (Method::GET, "/v1/logs") => {
            let n = query(&req, "tail").and_then(|v| v.parse().ok()).unwrap_or(200usize).min(2000);
            json(StatusCode::OK, &Logs { lines: agent.log_tail(n) })
        }
        (Method::GET, "/v1/diagnostics") => json(StatusCode::OK, &diagnostics(&agent).await),
        (Method::GET, "/v1/events") => events(&agent),
        (Method::POST, "/v1/shell") => shell(&agent, req).await,
        (_, "/v1/status" | "/v1/up" | "/v1/down" | "/v1/restart" | "/v1/shutdown" | "/v1/settings" | "/v1/logs" | "/v1/diagnostics" | "/v1/events" | "/v1/shell") => {
            err(StatusCode::METHOD_NOT_ALLOWED, format!("{} is not allowed on {path}", req.method()))
        }
        _ => err(StatusCode::NOT_FOUND, format!("no such endpoint {path}")),
    }
}

fn events(agent: &Agent) -> Response<Body> {
    let rx = agent.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let mut line = serde_json::to_vec(&e).expect("serializable");
                    line.push(b'\n');
                    return Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), rx));
                }
                // A slow reader misses events rather than blocking the agent.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("valid response")
}

async fn diagnostics(agent: &Agent) -> Diagnostics {
    let status = agent.status();
    let mut checks = Vec::new();
    let sock = agent.home().docker_socket();
    let ok = match tokio::net::UnixStream::connect(&sock).await {
        Ok(s) => crate::backend::ping(s).await,
        Err(_) => false,
    };
    checks.push(Check { name: "docker socket answers /_ping".into(), ok, detail: sock.display().to_string() });
    for (name, bin) in [("qemu-system-x86_64 installed", "qemu-system-x86_64"), ("qemu-img installed", "qemu-img"), ("vhost-device-vsock installed", "vhost-device-vsock")] {
        let found = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file())).unwrap_or(false);
        checks.push(Check { name: name.into(), ok: found, detail: String::new() });
    }
    let image = crate::backend::qemu::VmAssets::locate(agent.home());
    checks.push(Check {
        name: "VM image built".into(),
        ok: image.is_ok(),
        detail: match image {
            Ok(a) => a.kernel.parent().map(|p| p.display().to_string()).unwrap_or_default(),
            Err(e) => e,
        },
    });
    let agent_log = std::fs::read_to_string(agent.home().agent_log()).unwrap_or_default();
    let lines: Vec<String> = agent_log.lines().map(String::from).collect();
    Diagnostics {
        status,
        console_tail: agent.log_tail(50),
        agent_log_tail: lines[lines.len().saturating_sub(50)..].to_vec(),
        checks,
    }
}

/// `berth shell`: upgrade the request and splice it to init's shell service.
async fn shell(agent: &Agent, req: Request<Incoming>) -> Response<Body> {
    let Some(t) = agent.transport() else {
        return err(StatusCode::CONFLICT, "no VM is running (the engine is not up, or it runs natively)");
    };
    let rows: u16 = query(&req, "rows").and_then(|v| v.parse().ok()).unwrap_or(24);
    let cols: u16 = query(&req, "cols").and_then(|v| v.parse().ok()).unwrap_or(80);
    let mut g = match t.connect(SHELL_PORT).await {
        Ok(g) => g,
        Err(e) => return err(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    let hs = async {
        g.write_all(format!("shell {rows} {cols}\n").as_bytes()).await?;
        let mut line = Vec::new();
        loop {
            let b = g.read_u8().await?;
            if b == b'\n' || line.len() > MAX_LINE {
                break;
            }
            line.push(b);
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&line).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(5), hs).await {
        Ok(Ok(l)) if l == "OK" => {}
        Ok(Ok(l)) => return err(StatusCode::BAD_GATEWAY, format!("the VM refused the shell: {l}")),
        _ => return err(StatusCode::BAD_GATEWAY, "the VM's shell service did not answer"),
    }
    tokio::spawn(async move {
        if let Ok(up) = hyper::upgrade::on(req).await {
            let mut up = TokioIo::new(up);
            let _ = crate::forward::splice(&mut up, &mut g).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "berth-shell")
        .body(Full::new(Bytes::new()).boxed())
        .expect("valid response")
}

/// Serve the control API until `agent.exit` is notified.
pub async fn serve(agent: Arc<Agent>) -> std::io::Result<()> {
    let l = bind(&agent)?;
    serve_on(agent, l).await
}

/// Take the control socket (refused while another agent of this home answers on it) and
/// write the pid file: this process is then the home's agent.
pub fn bind(agent: &Agent) -> std::io::Result<tokio::net::UnixListener> {
    let l = crate::forward::bind_private(&agent.home().agent_socket())?;
    std::fs::write(agent.home().agent_pidfile(), format!("{}\n", std::process::id()))?;
    Ok(l)
}

/// Serve the control API on `l` (from [`bind`]) until `agent.exit` is notified.
pub async fn serve_on(agent: Arc<Agent>, l: tokio::net::UnixListener) -> std::io::Result<()> {
    loop {
        tokio::select! {
            _ = agent.exit.notified() => break,
            r = l.accept() => {
                let Ok((s, _)) = r else { continue };
                let a = Arc::clone(&agent);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let a = Arc::clone(&a);
                        async move { Ok::<_, Infallible>(route(a, req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .max_buf_size(64 * 1024)
                        .serve_connection(TokioIo::new(s), svc)
                        .with_upgrades();
                    let _ = conn.await;
                });
            }
        }
    }
    let _ = std::fs::remove_file(agent.home().agent_socket());
    let _ = std::fs::remove_file(agent.home().agent_pidfile());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixStream;

    /// One raw request on a fresh connection; what comes back before the agent closes it.
    async fn raw(sock: &std::path::Path, bytes: &[u8], close_write: bool) -> String {
        let mut s = UnixStream::connect(sock).await.unwrap();
        let _ = s.write_all(bytes).await;
        if close_write {
            let _ = s.shutdown().await;
        }
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Checklist #19 for the control API: truncated, oversized, garbage and unknown requests
    /// get an error or a closed connection, and the agent keeps answering.
    #[tokio::test]
    async fn hostile_requests_fail_cleanly_and_the_agent_stays_up() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::Home::new(dir.path().join("b"));
        home.ensure().unwrap();
        let agent = Agent::new(home.clone());
        tokio::spawn(serve(Arc::clone(&agent)));
        let sock = home.agent_socket();
        for _ in 0..200 {
            if UnixStream::connect(&sock).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let status_ok = || async { raw(&sock, b"GET /v1/status HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false).await };
        assert!(status_ok().await.starts_with("HTTP/1.1 200"));

        let big = vec![b'{'; MAX_BODY + 10];
        let mut req = format!("PUT /v1/settings HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", big.len()).into_bytes();
        req.extend_from_slice(&big);
        assert!(raw(&sock, &req, false).await.starts_with("HTTP/1.1 413"), "oversized body");
        let r = raw(&sock, b"PUT /v1/settings HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\nConnection: close\r\n\r\n{\"cpus\":", false).await;
        assert!(r.starts_with("HTTP/1.1 400") && r.contains("bad JSON"), "{r}");
        let r = raw(&sock, b"PUT /v1/settings HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{\"cpus\":\"x\"}", false).await;
        assert!(r.starts_with("HTTP/1.1 400"), "ill-typed field: {r}");
        let r = raw(&sock, b"PUT /v1/settings HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nConnection: close\r\n\r\n{\"cpus\":0}", false).await;
        assert!(r.starts_with("HTTP/1.1 400") && r.contains("cpus"), "refused value: {r}");
        assert!(raw(&sock, b"GET /v2/status HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false).await.starts_with("HTTP/1.1 404"));
        assert!(raw(&sock, b"DELETE /v1/up HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false).await.starts_with("HTTP/1.1 405"));
        // No VM: the shell is refused, not hung.
        assert!(raw(&sock, b"POST /v1/shell HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false).await.starts_with("HTTP/1.1 409"));
        // Garbage, a request cut off in its headers, a body shorter than its length, a huge
        // header: answered with an error or closed, never a crash.
        for bad in [
            &b"\x00\x01\x02garbage\r\n\r\n"[..],
            b"GET /v1/sta",
            b"PUT /v1/settings HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n{\"cpus\":",
            b"HTTP/1.1 200 OK\r\n\r\n",
        ] {
            let r = raw(&sock, bad, true).await;
            assert!(r.is_empty() || r.starts_with("HTTP/1.1 4"), "{bad:?}: {r}");
        }
        let mut huge = b"GET /v1/status HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat(b'a').take(200 * 1024));
        let r = raw(&sock, &huge, true).await;
        assert!(r.is_empty() || r.starts_with("HTTP/1.1 431") || r.starts_with("HTTP/1.1 4"), "{r}");
        assert!(status_ok().await.starts_with("HTTP/1.1 200"), "the agent answers after all that");
        assert_eq!(agent.settings(), crate::api::Settings::default(), "no bad request changed the settings");
    }
}
