//! Published ports: a listener on the host address (including 127.0.0.1) that relays to the
//! container's address, in berthd's own runtime (no docker-proxy process per port).
//!
//! Why a proxy rather than DNAT: traffic to 127.0.0.1 from the host is never DNATed by the kernel
//! unless `route_localnet` is enabled on the bridge (which exposes 127/8 to the bridge's
//! neighbours), while a listener works for every local address, makes "port already allocated"
//! an honest bind error before anything else is set up, and is the thing the VM host agent
//! forwards to. TCP bytes move with splice(2) through a pipe, never through user space, so the
//! relay costs about what the kernel's own forwarding path does (see the benchmark in README).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::{TcpStream, UdpSocket};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(&self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A bound but not yet serving listener: binding first, serving after, so a port that is in
/// use fails the start before any relay exists.
pub enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

impl Bound {
    /// An IPv6 address is bound v6-only, so `[::]:P` sits beside `0.0.0.0:P` (Docker publishes
    /// a port without a host IP on both) instead of colliding with it as a dual-stack socket.
    pub fn bind(proto: Proto, addr: SocketAddr) -> io::Result<Bound> {
        use socket2::{Domain, Protocol, Socket, Type};
        let (ty, p) = match proto {
            Proto::Tcp => (Type::STREAM, Protocol::TCP),
            Proto::Udp => (Type::DGRAM, Protocol::UDP),
        };
        let s = Socket::new(Domain::for_address(addr), ty.cloexec(), Some(p))?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        if proto == Proto::Tcp {
            // As std's TcpListener::bind: a port whose old connections linger in TIME_WAIT
            // can be published again at once.
            s.set_reuse_address(true)?;
        }
        s.bind(&addr.into())?;
        s.set_nonblocking(true)?;
        Ok(match proto {
            Proto::Tcp => {
                s.listen(1024)?;
                Bound::Tcp(s.into())
            }
            Proto::Udp => Bound::Udp(s.into()),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Bound::Tcp(l) => l.local_addr(),
            Bound::Udp(u) => u.local_addr(),
        }
    }

    /// Serve until the handle is dropped: that closes the listener and ends the connections
    /// it relays (their container is gone; a half-dead relay would hold the client until TCP
    /// gives up).
    pub fn serve(self, target: SocketAddr) -> io::Result<ProxyHandle> {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let task = match self {
            Bound::Tcp(l) => {
                let l = tokio::net::TcpListener::from_std(l)?;
                tokio::spawn(async move {
                    loop {
                        let Ok((client, _)) = l.accept().await else {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        };
                        let mut rx = rx.clone();
                        tokio::spawn(async move {
                            let Ok(Ok(upstream)) = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(target)).await else {
                                return;
                            };
                            let _ = client.set_nodelay(true);
                            let _ = upstream.set_nodelay(true);
                            tokio::select! {
                                _ = relay(client, upstream) => {}
                                _ = rx.wait_for(|s| *s) => {}
                            }
                        });
                    }
                })
            }
            Bound::Udp(u) => {
                let u = Arc::new(UdpSocket::from_std(u)?);
                tokio::spawn(udp_relay(u, target))
            }
        };
        Ok(ProxyHandle { task, stop })
    }
}

/// A serving published port; dropping it stops it.
pub struct ProxyHandle {
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

/// Both directions of a TCP connection, each with splice(2) through its own pipe; a side's EOF
/// half-closes the other.
pub async fn relay(a: TcpStream, b: TcpStream) {
    let ab = splice_one_way(&a, &b);
    let ba = splice_one_way(&b, &a);
    let _ = tokio::join!(ab, ba);
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A bigger pipe means fewer splice calls per megabyte; the default (64 KiB) if refused.
    // SAFETY: fcntl on an owned fd.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    Ok((r, w))
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain syscall on fds the caller keeps open; null offsets (sockets and pipes).
    let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

const CHUNK: usize = 1 << 20;

async fn splice_one_way(from: &TcpStream, to: &TcpStream) -> io::Result<()> {
    let (pr, pw) = pipe()?;
    loop {
        from.readable().await?;
        let n = match from.try_io(Interest::READABLE, || splice(from.as_raw_fd(), pw.as_raw_fd(), CHUNK)) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || splice(pr.as_raw_fd(), to.as_raw_fd(), left)) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
    // SAFETY: shutdown on a socket we hold open.
    unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) };
    Ok(())
}

/// UDP: one upstream socket per client address, dropped after 90 s without traffic (the
/// conntrack-like timeout docker-proxy uses).
async fn udp_relay(listener: Arc<UdpSocket>, target: SocketAddr) {
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = listener.recv_from(&mut buf).await else { continue };
        let existing = flows.lock().expect("flows").get(&client).cloned();
        let up = match existing {
            Some(u) => u,
            None => {
                let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse().expect("addr") } else { "[::]:0".parse().expect("addr") };
                let Ok(u) = UdpSocket::bind(bind).await else { continue };
                if u.connect(target).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                flows.lock().expect("flows").insert(client, Arc::clone(&u));
                let (l, f, u2) = (Arc::clone(&listener), Arc::clone(&flows), Arc::clone(&u));
                tokio::spawn(async move {
                    let mut b = vec![0u8; 65536];
                    while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(90), u2.recv(&mut b)).await {
                        let _ = l.send_to(&b[..m], client).await;
                    }
                    f.lock().expect("flows").remove(&client);
                });
                u
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn tcp_relay_moves_bytes_both_ways_and_half_closes() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).await.unwrap();
            s.write_all(format!("got {}", all.len()).as_bytes()).await.unwrap();
        });
        let b = Bound::bind(Proto::Tcp, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = b.local_addr().unwrap();
        let h = b.serve(target).unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        let data = vec![7u8; 3 << 20];
        c.write_all(&data).await.unwrap();
        c.shutdown().await.unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).await.unwrap();
        assert_eq!(reply, format!("got {}", 3 << 20));
        // A port in use is a bind error; aborting the proxy frees it.
        assert!(Bound::bind(Proto::Tcp, addr).is_err());
        drop(h);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Bound::bind(Proto::Tcp, addr).unwrap();
    }

    #[tokio::test]
    async fn udp_relay_answers_the_client() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            let (n, from) = server.recv_from(&mut b).await.unwrap();
            server.send_to(&b[..n].repeat(2), from).await.unwrap();
        });
        let b = Bound::bind(Proto::Udp, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = b.local_addr().unwrap();
        let _h = b.serve(target).unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(b"ab", addr).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), c.recv(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"abab");
    }
}
