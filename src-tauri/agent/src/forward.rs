//! The host docker socket: every connection to `~/.berth/run/docker.sock` becomes one stream
//! to berthd's vsock port. Bytes are relayed both ways without parsing HTTP, so hijacked
//! attach/exec streams and half-close (the CLI closing its write side when stdin ends) work
//! like on a local socket.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use crate::transport::Transport;

/// Relay both directions until both are done; an EOF on one side becomes a write shutdown on
/// the other (half-close), the other direction keeps flowing.
pub async fn splice<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, 256 * 1024, 256 * 1024).await
}

/// Bind a private socket (0600) at `path`, replacing a stale one but never a live one.
pub fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, format!("{} is in use by another process", path.display())));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} is a symlink; refusing it", path.display())))
        }
        Ok(_) => std::fs::remove_file(path)?,
        Err(_) => {}
    }
    // Created with a restrictive umask so there is no window where it is group/world usable.
    // SAFETY: umask is process-wide but only narrows permissions for this bind.
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let l = l?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// A running forwarder; dropping it stops accepting and removes the socket.
pub struct Forwarder {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Forwarder {
    pub fn start(path: &Path, transport: Arc<dyn Transport>, port: u32) -> std::io::Result<Forwarder> {
        let l = bind_private(path)?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = l.accept().await else { continue };
                let t = Arc::clone(&transport);
                tokio::spawn(async move {
                    let framed = !t.half_close() && port == crate::protocol::ENGINE_PORT;
                    let target = if framed { crate::protocol::FRAMED_ENGINE_PORT } else { port };
                    match t.connect(target).await {
                        Ok(guest) if framed => {
                            let _ = berth_framed::splice_framed(client, guest).await;
                        }
                        Ok(mut guest) => {
                            let _ = splice(&mut client, &mut guest).await;
                        }
                        Err(e) => {
                            // Answer like an engine would, so the CLI prints something useful.
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            // Read the request first: closing with unread data would reset the
                            // connection before the client sees the answer.
                            let mut sink = [0u8; 8192];
                            let _ = tokio::time::timeout(std::time::Duration::from_millis(300), client.read(&mut sink)).await;
                            let body = serde_json::json!({ "message": format!("Berth engine unreachable: {e}") }).to_string();
                            let resp = format!(
                                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = client.write_all(resp.as_bytes()).await;
                            let _ = client.shutdown().await;
                            tracing::warn!("docker socket: {e}");
                        }
                    }
                });
            }
        });
        Ok(Forwarder { path: path.to_path_buf(), task })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::per_port::PerPortUnix;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relays_with_half_close_and_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let t = PerPortUnix::new(dir.path());
        // The "guest": reads everything until EOF, then answers with its byte count.
        let guest = UnixListener::bind(t.path(2375)).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = guest.accept().await.unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).await.unwrap();
            s.write_all(format!("got {}", all.len()).as_bytes()).await.unwrap();
        });
        let sock = dir.path().join("docker.sock");
        let _f = Forwarder::start(&sock, Arc::new(t), 2375).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut c = tokio::net::UnixStream::connect(&sock).await.unwrap();
        c.write_all(&vec![7u8; 300_000]).await.unwrap();
        c.shutdown().await.unwrap(); // half-close: the answer must still come back
        let mut back = String::new();
        c.read_to_string(&mut back).await.unwrap();
        assert_eq!(back, "got 300000");
        // A live socket is not taken over.
        assert!(bind_private(&sock).is_err());
    }

    #[tokio::test]
    async fn unreachable_guest_gets_a_docker_style_error() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let _f = Forwarder::start(&sock, Arc::new(PerPortUnix::new(dir.path().join("nowhere"))), 2375).unwrap();
        let mut c = tokio::net::UnixStream::connect(&sock).await.unwrap();
        c.write_all(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut back = String::new();
        c.read_to_string(&mut back).await.unwrap();
        assert!(back.starts_with("HTTP/1.1 502"), "{back}");
        assert!(back.contains("Berth engine unreachable"), "{back}");
    }
}
