//! How the host reaches the guest: "a unix-socket-like stream to guest vsock port P", and the
//! other way, "accept the guest's connections to host port P". One trait, one adapter per
//! mechanism:
//!
//! - [`hybrid::Hybrid`]: the Firecracker-style hybrid vsock socket that `vhost-device-vsock`
//!   (vhost-user, any Linux host, what the build machines run), Firecracker and
//!   cloud-hypervisor offer: write `CONNECT <port>\n`, read `OK <n>\n`; the guest's connections
//!   to port P arrive on `<socket>_<P>`.
//! - `host_vsock::HostVsock` (Linux with `/dev/vhost-vsock`): plain AF_VSOCK on the host.
//! - [`per_port::PerPortUnix`]: one unix socket per port, as vfkit offers on macOS.
//! - Hyper-V sockets on Windows belong in a `hvsock_windows.rs` behind the same trait.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

pub mod hybrid;
#[cfg(target_os = "linux")]
pub mod host_vsock;
pub mod per_port;

/// A byte stream to or from the guest.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

pub type BoxStream = Box<dyn Stream>;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The transport itself is not there (VM down, socket missing).
    #[error("cannot reach the VM's vsock ({what}): {source}")]
    Unreachable { what: String, source: io::Error },
    /// The guest side refused or nobody listens on the port.
    #[error("guest vsock port {port} refused the connection: {detail}")]
    Refused { port: u32, detail: String },
    #[error("vsock handshake for port {port} failed: {detail}")]
    Handshake { port: u32, detail: String },
}

impl From<TransportError> for io::Error {
    fn from(e: TransportError) -> io::Error {
        io::Error::other(e.to_string())
    }
}

#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// A stream to guest vsock port `port`.
    async fn connect(&self, port: u32) -> Result<BoxStream, TransportError>;
    /// Start accepting the guest's connections to host port `port`.
    async fn listen(&self, port: u32) -> Result<Box<dyn GuestListener>, TransportError>;
    /// For status and logs.
    fn describe(&self) -> String;
    /// True when a write shutdown on a stream reaches the guest as a half-close (and not as a
    /// full close). When false, engine streams use berthd's framed listener (the berth-framed crate).
    fn half_close(&self) -> bool {
        true
    }
}

#[async_trait::async_trait]
pub trait GuestListener: Send + 'static {
    async fn accept(&mut self) -> io::Result<BoxStream>;
}
