//! One unix socket per guest port (vfkit's `--device virtio-vsock,port=P,socketURL=...`):
//! connecting to `<dir>/vsock-<P>.sock` reaches guest port P with no handshake.

use std::path::PathBuf;

use tokio::net::{UnixListener, UnixStream};

use super::hybrid::UnixGuestListener;
use super::{BoxStream, GuestListener, Transport, TransportError};

#[derive(Debug, Clone)]
pub struct PerPortUnix {
    dir: PathBuf,
}

impl PerPortUnix {
    pub fn new(dir: impl Into<PathBuf>) -> PerPortUnix {
        PerPortUnix { dir: dir.into() }
    }

    pub fn path(&self, port: u32) -> PathBuf {
        self.dir.join(format!("vsock-{port}.sock"))
    }
}

#[async_trait::async_trait]
impl Transport for PerPortUnix {
    async fn connect(&self, port: u32) -> Result<BoxStream, TransportError> {
        let p = self.path(port);
        let s = UnixStream::connect(&p).await.map_err(|source| TransportError::Unreachable { what: p.display().to_string(), source })?;
        Ok(Box::new(s))
    }

    async fn listen(&self, port: u32) -> Result<Box<dyn GuestListener>, TransportError> {
        let p = self.path(port);
        let _ = std::fs::remove_file(&p);
        let l = UnixListener::bind(&p).map_err(|source| TransportError::Unreachable { what: p.display().to_string(), source })?;
        Ok(Box::new(UnixGuestListener(l)))
    }

    fn describe(&self) -> String {
        format!("per-port unix sockets in {}", self.dir.display())
    }
}
