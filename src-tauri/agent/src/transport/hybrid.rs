//! The hybrid vsock unix socket (vhost-device-vsock, Firecracker, cloud-hypervisor).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::{BoxStream, GuestListener, Transport, TransportError};
use crate::protocol::MAX_LINE;

/// How long the daemon may take to answer `CONNECT`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Hybrid {
    socket: PathBuf,
}

impl Hybrid {
    /// `socket` is the daemon's `--uds-path`.
    pub fn new(socket: impl Into<PathBuf>) -> Hybrid {
        Hybrid { socket: socket.into() }
    }

    /// Where the guest's connections to host port `port` arrive.
    pub fn guest_port_path(&self, port: u32) -> PathBuf {
        let mut s = self.socket.clone().into_os_string();
        s.push(format!("_{port}"));
        PathBuf::from(s)
    }
}

/// Check the daemon's answer to `CONNECT`: `OK <host port>`.
pub fn parse_ok(line: &str) -> Result<u32, String> {
    let rest = line.strip_prefix("OK ").ok_or_else(|| format!("unexpected answer {line:?}"))?;
    rest.trim().parse::<u32>().map_err(|_| format!("unexpected answer {line:?}"))
}

/// Read the answer line byte by byte: whatever follows belongs to the guest's stream.
async fn read_answer(s: &mut UnixStream, port: u32) -> Result<String, TransportError> {
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        let n = s.read(&mut b).await.map_err(|e| TransportError::Handshake { port, detail: e.to_string() })?;
        if n == 0 {
            // vhost-device-vsock closes the stream when nothing listens on the guest port.
            return Err(TransportError::Refused { port, detail: "closed before answering (nothing listens there, or the VM is down)".into() });
        }
        if b[0] == b'\n' {
            return String::from_utf8(line).map_err(|_| TransportError::Handshake { port, detail: "answer is not UTF-8".into() });
        }
        line.push(b[0]);
        if line.len() > MAX_LINE {
            return Err(TransportError::Handshake { port, detail: "answer line too long".into() });
        }
    }
}

pub async fn connect_hybrid(socket: &Path, port: u32) -> Result<UnixStream, TransportError> {
    let mut s = UnixStream::connect(socket)
        .await
        .map_err(|source| TransportError::Unreachable { what: socket.display().to_string(), source })?;
    let hs = async {
        s.write_all(format!("CONNECT {port}\n").as_bytes())
            .await
            .map_err(|e| TransportError::Handshake { port, detail: e.to_string() })?;
        let line = read_answer(&mut s, port).await?;
        parse_ok(&line).map_err(|detail| TransportError::Handshake { port, detail })
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, hs)
        .await
        .map_err(|_| TransportError::Handshake { port, detail: "no answer within 5 s".into() })??;
    Ok(s)
}

#[async_trait::async_trait]
impl Transport for Hybrid {
    async fn connect(&self, port: u32) -> Result<BoxStream, TransportError> {
        Ok(Box::new(connect_hybrid(&self.socket, port).await?))
    }

    async fn listen(&self, port: u32) -> Result<Box<dyn GuestListener>, TransportError> {
        let path = self.guest_port_path(port);
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).map_err(|source| TransportError::Unreachable { what: path.display().to_string(), source })?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        Ok(Box::new(UnixGuestListener(l)))
    }

    fn describe(&self) -> String {
        format!("vhost-user-vsock hybrid socket {}", self.socket.display())
    }

    /// vhost-device-vsock turns a host-side EOF into SHUTDOWN(RCV|SEND) for the guest.
    fn half_close(&self) -> bool {
        false
    }
}

/// Guest connections arriving on a unix listener.
pub struct UnixGuestListener(pub UnixListener);

#[async_trait::async_trait]
impl GuestListener for UnixGuestListener {
    async fn accept(&mut self) -> io::Result<BoxStream> {
        Ok(Box::new(self.0.accept().await?.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(parse_ok("OK 1073741824"), Ok(1073741824));
        assert!(parse_ok("ERR").is_err());
        assert!(parse_ok("OK").is_err());
        assert!(parse_ok("OK x").is_err());
    }

    /// A fake daemon: answers each CONNECT with `reply`, then echoes.
    async fn fake_daemon(reply: &'static [u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let l = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    assert!(buf[..n].starts_with(b"CONNECT "));
                    let _ = s.write_all(reply).await;
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        (dir, path)
    }

    #[tokio::test]
    async fn handshake_then_bytes_flow_including_ones_sent_with_the_answer() {
        let (_d, path) = fake_daemon(b"OK 5\nearly").await;
        let mut s = connect_hybrid(&path, 2375).await.unwrap();
        let mut early = [0u8; 5];
        s.read_exact(&mut early).await.unwrap();
        assert_eq!(&early, b"early", "bytes after the answer line belong to the stream");
        s.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
    }

    #[tokio::test]
    async fn adversarial_answers_fail_cleanly() {
        let (_d, path) = fake_daemon(b"NOPE\n").await;
        assert!(matches!(connect_hybrid(&path, 1).await, Err(TransportError::Handshake { .. })));
        let long: &'static [u8] = Box::leak(vec![b'O'; MAX_LINE * 4].into_boxed_slice());
        let (_d2, path2) = fake_daemon(long).await;
        assert!(matches!(connect_hybrid(&path2, 1).await, Err(TransportError::Handshake { .. })));
        let (_d3, path3) = fake_daemon(b"OK 1").await; // truncated: no newline, then EOF? (echo keeps it open)
        let r = tokio::time::timeout(Duration::from_secs(8), connect_hybrid(&path3, 1)).await.unwrap();
        assert!(r.is_err());
        let missing = _d.path().join("missing.sock");
        assert!(matches!(connect_hybrid(&missing, 1).await, Err(TransportError::Unreachable { .. })));
    }
}
