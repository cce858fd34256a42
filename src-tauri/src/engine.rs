//! Client for berthd's Engine API (the Docker API) over its unix socket, on hyper 1.
//!
//! Why not bollard: the app needs a handful of calls, streamed bodies passed through as JSON
//! lines, and the raw upgraded stream of `exec`; hyper 1 (already in the workspace) does all of
//! it in little code, and passing the engine's JSON through unchanged keeps the app thin. One
//! connection per request: connecting to a local socket costs microseconds, and every
//! long-lived stream (events, logs, stats, exec) owns its connection.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Docker API version the app speaks (berthd supports 1.24-1.47).
pub const API_VERSION: &str = "v1.43";

/// What can go wrong talking to the engine. The `Api` variant carries the engine's own message.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The socket could not be reached: the engine is not running or the path is wrong.
    #[error("cannot connect to the engine at {path}: {source}")]
    Connect { path: PathBuf, source: std::io::Error },
    /// The engine answered with an error status; `message` is its `{"message": ...}`.
    #[error("{message}")]
    Api { status: u16, message: String },
    /// The HTTP exchange broke off.
    #[error("engine connection failed: {0}")]
    Http(String),
    /// The engine's answer was not what the API promises.
    #[error("unexpected answer from the engine: {0}")]
    Decode(String),
}

pub type Result<T> = std::result::Result<T, EngineError>;

/// A handle on one engine socket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    socket: PathBuf,
}

impl Engine {
    pub fn new(socket: impl Into<PathBuf>) -> Engine {
        Engine { socket: socket.into() }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn connect(&self) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        self.connect_with(false).await
    }

    /// One HTTP/1 connection to the socket; `upgrades` keeps it usable for a 101 hand-over.
    async fn connect_with(&self, upgrades: bool) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| EngineError::Connect { path: self.socket.clone(), source })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| EngineError::Http(e.to_string()))?;
        if upgrades {
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
            });
        } else {
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        Ok(sender)
    }

    fn request(method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("/{API_VERSION}{path}"))
            .header(header::HOST, "berth")
            .header(header::USER_AGENT, concat!("berth-desktop/", env!("CARGO_PKG_VERSION")));
        if body.is_some() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        b.body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| EngineError::Http(e.to_string()))
    }

    /// Send a request; an error status becomes [`EngineError::Api`] with the engine's message.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Response<Incoming>> {
        let body = body.map(|v| serde_json::to_vec(v).expect("a Value serializes"));
        let mut sender = self.connect().await?;
        let resp = sender
            .send_request(Self::request(method, path, body)?)
            .await
            .map_err(|e| EngineError::Http(e.to_string()))?;
        check(resp).await
    }

    /// A request whose answer is JSON (or nothing: 204 gives `Value::Null`).
    pub async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let resp = self.send(method, path, body).await?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| EngineError::Http(e.to_string()))?
            .to_bytes();
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| EngineError::Decode(format!("{e} in {}", preview(&bytes))))
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.json(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Option<&Value>) -> Result<Value> {
        self.json(Method::POST, path, body).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.json(Method::DELETE, path, None).await
    }

    /// `GET /_ping`: is the engine there at all?
    pub async fn ping(&self) -> Result<()> {
        let resp = self.send(Method::GET, "/_ping", None).await?;
        let _ = resp.into_body().collect().await;
        Ok(())
    }

    /// A request answered with `101 Switching Protocols` (exec start, attach): the raw stream.
    pub async fn upgrade(&self, path: &str, body: &Value) -> Result<TokioIo<hyper::upgrade::Upgraded>> {
        let mut sender = self.connect_with(true).await?;
        let mut req = Self::request(Method::POST, path, Some(serde_json::to_vec(body).expect("serializes")))?;
        req.headers_mut().insert(header::CONNECTION, "Upgrade".parse().expect("static"));
        req.headers_mut().insert(header::UPGRADE, "tcp".parse().expect("static"));
        let resp = sender.send_request(req).await.map_err(|e| EngineError::Http(e.to_string()))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let resp = check(resp).await?;
            return Err(EngineError::Decode(format!("expected 101 Switching Protocols, got {}", resp.status())));
        }
        let up = hyper::upgrade::on(resp).await.map_err(|e| EngineError::Http(e.to_string()))?;
        Ok(TokioIo::new(up))
    }
}

async fn check(resp: Response<Incoming>) -> Result<Response<Incoming>> {
    let status = resp.status();
    if status.is_client_error() || status.is_server_error() {
        let bytes = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(EngineError::Api { status: status.as_u16(), message: error_message(status, &bytes) });
    }
    Ok(resp)
}

/// The engine's `{"message": ...}`, or the body text, or the status reason.
pub fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(m) = v.get("message").and_then(Value::as_str) {
            return m.to_string();
        }
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    if text.is_empty() {
        format!("the engine answered {status}")
    } else {
        text
    }
}

fn preview(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned();
    format!("{s:?}")
}

/// Percent-encode a path segment (an ID, a name, an image reference). `/` and `:` stay as
/// they are, as the docker CLI sends image references.
pub fn seg(s: &str) -> String {
    encode(s, |c| c.is_ascii_alphanumeric() || b"-._~/:@".contains(&c))
}

/// Percent-encode a query value.
pub fn q(s: &str) -> String {
    encode(s, |c| c.is_ascii_alphanumeric() || b"-._~".contains(&c))
}

fn encode(s: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Splits a byte stream into lines (JSON-lines bodies: events, pull progress, stats).
#[derive(Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let line = line[..line.len() - 1].strip_suffix(b"\r").unwrap_or(&line[..line.len() - 1]).to_vec();
            if !line.is_empty() {
                out.push(line);
            }
        }
        out
    }

    /// Whatever is left when the stream ends without a final newline.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = std::mem::take(&mut self.buf);
        (!rest.is_empty()).then_some(rest)
    }
}

/// Docker's multiplexed stdout/stderr framing (`[stream, 0, 0, 0, len u32 BE]` + payload),
/// used for logs and attach of containers without a TTY.
#[derive(Default)]
pub struct Demux {
    buf: Vec<u8>,
}

impl Demux {
    /// Feed bytes; returns complete frames as (stream: 1 stdout / 2 stderr, payload).
    pub fn push(&mut self, data: &[u8]) -> Vec<(u8, Vec<u8>)> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            if self.buf.len() < 8 {
                break;
            }
            let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
            if self.buf.len() < 8 + len {
                break;
            }
            let stream = self.buf[0];
            let payload = self.buf[8..8 + len].to_vec();
            self.buf.drain(..8 + len);
            out.push((stream, payload));
        }
        out
    }
}

/// Decodes UTF-8 across chunk boundaries: a multi-byte character split between two reads is
/// held back until its end arrives (terminal output must not show replacement characters).
#[derive(Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, data: &[u8]) -> String {
        self.pending.extend_from_slice(data);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => {
                let s = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                return s;
            }
        };
        let rest = self.pending.split_off(valid);
        let s = String::from_utf8(std::mem::replace(&mut self.pending, rest)).expect("checked");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_segments_and_queries() {
        assert_eq!(seg("127.0.0.1:5000/web:latest"), "127.0.0.1:5000/web:latest");
        assert_eq!(seg("a b?#%"), "a%20b%3F%23%25");
        assert_eq!(q("127.0.0.1:5000/web"), "127.0.0.1%3A5000%2Fweb");
        assert_eq!(q(r#"{"label":["a=b"]}"#), "%7B%22label%22%3A%5B%22a%3Db%22%5D%7D");
    }

    #[test]
    fn error_message_prefers_engine_text() {
        assert_eq!(error_message(StatusCode::NOT_FOUND, br#"{"message":"No such container: x"}"#), "No such container: x");
        assert_eq!(error_message(StatusCode::BAD_GATEWAY, b"plain text\n"), "plain text");
        assert_eq!(error_message(StatusCode::BAD_GATEWAY, b""), "the engine answered 502 Bad Gateway");
    }

    #[test]
    fn lines_split_across_chunks() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"{\"a\":1}\n{\"b\""), vec![b"{\"a\":1}".to_vec()]);
        assert_eq!(s.push(b":2}\r\n\n"), vec![b"{\"b\":2}".to_vec()]);
        assert_eq!(s.push(b"tail"), Vec::<Vec<u8>>::new());
        assert_eq!(s.finish(), Some(b"tail".to_vec()));
    }

    #[test]
    fn demux_frames_across_chunks() {
        let mut d = Demux::default();
        let mut data = vec![1, 0, 0, 0, 0, 0, 0, 3];
        data.extend_from_slice(b"abc");
        data.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 2, b'e']);
        let frames = d.push(&data);
        assert_eq!(frames, vec![(1, b"abc".to_vec())]);
        assert_eq!(d.push(b"r"), vec![(2, b"er".to_vec())]);
    }

    #[test]
    fn utf8_split_characters_are_held_back() {
        let mut u = Utf8Stream::default();
        let s = "é€".as_bytes();
        assert_eq!(u.push(&s[..1]), "");
        assert_eq!(u.push(&s[1..3]), "é");
        assert_eq!(u.push(&s[3..]), "€");
        assert_eq!(u.push(b"\xff!"), "\u{fffd}!");
    }
}
