//! The AF_VSOCK listener berthd uses inside the Berth VM (`--host vsock://:2375`).
//!
//! vsock is not network-namespaced, so a container could in principle reach the guest's own
//! vsock ports. The Engine API is root-equivalent: only the host (CID 2) may connect; any other
//! peer (the guest itself through a loopback transport, a sibling VM) is refused at accept.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_vsock::{VsockAddr, VsockListener, VMADDR_CID_ANY, VMADDR_CID_HOST};

/// An accepted connection of any listener kind (unix or vsock).
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn for T {}

/// A vsock listener that hands out only connections from the host.
pub struct HostOnlyListener {
    inner: VsockListener,
}

impl HostOnlyListener {
    /// Listen on `port` of this VM's own CID.
    pub fn bind(port: u32) -> std::io::Result<HostOnlyListener> {
        Ok(HostOnlyListener { inner: VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port))? })
    }

    /// The next connection whose peer is the host; others are closed and logged.
    pub async fn accept(&self) -> std::io::Result<tokio_vsock::VsockStream> {
        loop {
            let (stream, peer) = self.inner.accept().await?;
            if peer_allowed(peer.cid()) {
                return Ok(stream);
            }
            tracing::warn!(cid = peer.cid(), port = peer.port(), "refused a vsock connection that is not from the host");
        }
    }
}

/// Only the host (CID 2) may use the API.
fn peer_allowed(cid: u32) -> bool {
    cid == VMADDR_CID_HOST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_host_cid_is_allowed() {
        assert!(peer_allowed(2));
        for cid in [0, 1, 3, 42, u32::MAX] {
            assert!(!peer_allowed(cid), "cid {cid}");
        }
    }
}
