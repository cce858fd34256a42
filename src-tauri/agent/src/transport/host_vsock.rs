//! Kernel vhost-vsock on a Linux host (`/dev/vhost-vsock`, `-device vhost-vsock-pci`): the host
//! speaks AF_VSOCK directly to the guest's CID.

use std::io;

use tokio_vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY};

use super::{BoxStream, GuestListener, Transport, TransportError};

#[derive(Debug, Clone)]
pub struct HostVsock {
    cid: u32,
}

impl HostVsock {
    pub fn new(cid: u32) -> HostVsock {
        HostVsock { cid }
    }

    /// True when this host can run vhost-vsock guests.
    pub fn available() -> bool {
        std::fs::OpenOptions::new().read(true).write(true).open("/dev/vhost-vsock").is_ok()
    }
}

#[async_trait::async_trait]
impl Transport for HostVsock {
    async fn connect(&self, port: u32) -> Result<BoxStream, TransportError> {
        let s = VsockStream::connect(VsockAddr::new(self.cid, port))
            .await
            .map_err(|e| TransportError::Refused { port, detail: e.to_string() })?;
        Ok(Box::new(s))
    }

    async fn listen(&self, port: u32) -> Result<Box<dyn GuestListener>, TransportError> {
        let l = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port))
            .map_err(|source| TransportError::Unreachable { what: format!("host vsock port {port}"), source })?;
        Ok(Box::new(FromGuest { l, cid: self.cid }))
    }

    fn describe(&self) -> String {
        format!("host AF_VSOCK to cid {}", self.cid)
    }
}

/// Accepts only our guest's connections (other VMs on the host share the port space).
struct FromGuest {
    l: VsockListener,
    cid: u32,
}

#[async_trait::async_trait]
impl GuestListener for FromGuest {
    async fn accept(&mut self) -> io::Result<BoxStream> {
        loop {
            let (s, peer) = self.l.accept().await?;
            if peer.cid() == self.cid {
                return Ok(Box::new(s));
            }
        }
    }
}
