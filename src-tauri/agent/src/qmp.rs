//! A small QMP client (QEMU Machine Protocol: JSON lines on a unix socket): greeting,
//! `qmp_capabilities`, then commands. Used to see that QEMU runs, to query its state and to
//! stop it when the guest does not power off by itself. Hand-written: the protocol is three
//! JSON shapes and no maintained async crate fits.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A line longer than this is not QMP.
const MAX_LINE: usize = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP protocol: {0}")]
    Protocol(String),
    #[error("QMP command {cmd} failed: {desc}")]
    Command { cmd: String, desc: String },
    #[error("QMP did not answer within 5 s")]
    Timeout,
}

pub struct Qmp {
    r: BufReader<tokio::net::unix::OwnedReadHalf>,
    w: tokio::net::unix::OwnedWriteHalf,
}

impl Qmp {
    pub async fn connect(path: &Path) -> Result<Qmp, QmpError> {
        let s = UnixStream::connect(path).await?;
        let (r, w) = s.into_split();
        let mut q = Qmp { r: BufReader::new(r), w };
        let greeting = q.read_msg().await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!("expected a greeting, got {greeting}")));
        }
        q.execute("qmp_capabilities", None).await?;
        Ok(q)
    }

    async fn read_msg(&mut self) -> Result<Value, QmpError> {
        let fut = async {
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = (&mut self.r).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await?;
                if n == 0 {
                    return Err(QmpError::Protocol("connection closed".into()));
                }
                if line.len() > MAX_LINE {
                    return Err(QmpError::Protocol("message too long".into()));
                }
                let v: Value = serde_json::from_slice(&line).map_err(|e| QmpError::Protocol(format!("bad JSON: {e}")))?;
                // Asynchronous events are interleaved with replies; skip them.
                if v.get("event").is_none() {
                    return Ok(v);
                }
            }
        };
        tokio::time::timeout(TIMEOUT, fut).await.map_err(|_| QmpError::Timeout)?
    }

    /// Run a command and return its `return` value.
    pub async fn execute(&mut self, cmd: &str, args: Option<Value>) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": cmd });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut line = serde_json::to_vec(&msg).expect("json");
        line.push(b'\n');
        self.w.write_all(&line).await?;
        let v = self.read_msg().await?;
        if let Some(e) = v.get("error") {
            return Err(QmpError::Command { cmd: cmd.into(), desc: e["desc"].as_str().unwrap_or("?").to_string() });
        }
        v.get("return").cloned().ok_or_else(|| QmpError::Protocol(format!("no return in {v}")))
    }

    /// `query-status` -> e.g. "running".
    pub async fn status(&mut self) -> Result<String, QmpError> {
        let v = self.execute("query-status", None).await?;
        Ok(v["status"].as_str().unwrap_or("unknown").to_string())
    }

    /// Stop QEMU now (after the guest had its chance to shut down).
    pub async fn quit(&mut self) -> Result<(), QmpError> {
        self.execute("quit", None).await.map(|_| ())
    }
}

use tokio::io::AsyncReadExt;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    async fn fake(script: &'static [&'static str]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("qmp.sock");
        let l = UnixListener::bind(&p).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.split();
            let mut r = BufReader::new(r);
            let mut lines = script.iter();
            if let Some(g) = lines.next() {
                w.write_all(g.as_bytes()).await.unwrap();
            }
            for reply in lines {
                let mut buf = String::new();
                if r.read_line(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                w.write_all(reply.as_bytes()).await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        (dir, p)
    }

    #[tokio::test]
    async fn handshake_events_and_status() {
        let (_d, p) = fake(&[
            "{\"QMP\":{\"version\":{}}}\n",
            "{\"return\":{}}\n",
            "{\"event\":\"RESUME\"}\n{\"return\":{\"status\":\"running\",\"running\":true}}\n",
        ])
        .await;
        let mut q = Qmp::connect(&p).await.unwrap();
        assert_eq!(q.status().await.unwrap(), "running");
    }

    #[tokio::test]
    async fn adversarial_peers_fail_cleanly() {
        let (_d, p) = fake(&["not json\n"]).await;
        assert!(matches!(Qmp::connect(&p).await, Err(QmpError::Protocol(_))));
        let (_d, p) = fake(&["{\"hello\":1}\n"]).await;
        assert!(matches!(Qmp::connect(&p).await, Err(QmpError::Protocol(_))));
        let (_d, p) = fake(&["{\"QMP\":{}}\n", "{\"error\":{\"class\":\"x\",\"desc\":\"nope\"}}\n"]).await;
        assert!(matches!(Qmp::connect(&p).await, Err(QmpError::Command { .. })));
        // A greeting that never ends (no newline) times out instead of hanging.
        let (_d, p) = fake(&["{\"QMP\":"]).await;
        assert!(matches!(Qmp::connect(&p).await, Err(QmpError::Timeout)));
    }
}
