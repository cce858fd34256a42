//! The vsock services init offers the host agent, and the egress relay it offers berthd.
//!
//! | port | direction | protocol |
//! |---|---|---|
//! | 2376 | host to guest | forward: `tcp IP:PORT\n` (or `tcp+framed`, `udp`), answer `OK\n` or `ERR reason\n`, then raw bytes, frames, or one frame per datagram (published ports) |
//! | 2378 | host to guest | shell: `shell ROWS COLS\n`, answer `OK\n`, then a pty running /bin/sh (`berth shell`) |
//! | 2379 | host to guest | control: `shutdown\n` or `sync-time\n`, answer `OK ...\n` |
//! | 2380 | host to guest | berthd itself (`--host vsock+framed://:2380`): the Engine API with half-close carried in frames |
//! | 3128 | guest to host | egress: an HTTP proxy served by the agent; init relays guest 127.0.0.1:3128 to it |
//! | 2377 | guest to host | time (see `clock.rs`) |
//!
//! Only the host (CID 2) may connect to the guest-side ports.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::mpsc::Sender;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY, VMADDR_CID_HOST};

pub const FORWARD_PORT: u32 = 2376;
pub const SHELL_PORT: u32 = 2378;
pub const CONTROL_PORT: u32 = 2379;
pub const EGRESS_PORT: u32 = 3128;
/// berthd's framed vsock listener (berthd serves it; see the berth-framed crate for the codec).
pub const FRAMED_ENGINE_PORT: u32 = 2380;
/// Where berthd finds the egress proxy (HTTP_PROXY / HTTPS_PROXY).
pub const EGRESS_LISTEN: &str = "127.0.0.1:3128";
/// Longest header line a host may send.
pub const MAX_LINE: usize = 256;

/// Read one `\n`-terminated line of at most [`MAX_LINE`] bytes (byte by byte: nothing after
/// the newline may be consumed, it belongs to the relayed stream).
pub async fn read_line<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<String> {
    let mut line = Vec::new();
    loop {
        let b = r.read_u8().await?;
        if b == b'\n' {
            return String::from_utf8(line).map_err(|_| bad("header is not UTF-8"));
        }
        line.push(b);
        if line.len() > MAX_LINE {
            return Err(bad("header line too long"));
        }
    }
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// How a forward carries its traffic after `OK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardKind {
    /// `tcp ADDR`: raw bytes.
    Tcp,
    /// `tcp+framed ADDR`: frames, for transports whose half-close is a full close (see the
    /// berth-framed crate).
    TcpFramed,
    /// `udp ADDR`: one frame per datagram, each way (one stream per host-side client).
    Udp,
}

/// A forward request line: its kind and target.
pub fn parse_forward(line: &str) -> Result<(SocketAddr, ForwardKind), String> {
    let (kind, rest) = line.split_once(' ').ok_or_else(|| format!("unsupported forward {line:?}"))?;
    let kind = match kind {
        "tcp" => ForwardKind::Tcp,
        "tcp+framed" => ForwardKind::TcpFramed,
        "udp" => ForwardKind::Udp,
        _ => return Err(format!("unsupported forward {line:?}")),
    };
    rest.trim().parse::<SocketAddr>().map(|a| (a, kind)).map_err(|_| format!("bad address {rest:?}"))
}

/// A shell request: `shell ROWS COLS`.
pub fn parse_shell(line: &str) -> Option<(u16, u16)> {
    let mut w = line.split_whitespace();
    if w.next()? != "shell" {
        return None;
    }
    let rows = w.next()?.parse().ok()?;
    let cols = w.next()?.parse().ok()?;
    w.next().is_none().then_some((rows, cols))
}

fn listen(port: u32) -> Option<VsockListener> {
    match VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port)) {
        Ok(l) => Some(l),
        Err(e) => {
            crate::console::line(&format!("cannot listen on vsock port {port}: {e}"));
            None
        }
    }
}

/// Accept loop that hands host connections to `f`.
async fn serve<F, Fut>(port: u32, f: F)
where
    F: Fn(VsockStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(l) = listen(port) else { return };
    loop {
        match l.accept().await {
            Ok((s, peer)) if peer.cid() == VMADDR_CID_HOST => {
                tokio::spawn(f(s));
            }
            Ok((_, peer)) => crate::console::line(&format!("refused vsock port {port} connection from cid {}", peer.cid())),
            Err(e) => {
                crate::console::line(&format!("vsock port {port}: accept: {e}"));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

pub fn start_all(rt: &tokio::runtime::Runtime, shutdown: Sender<()>) {
    rt.spawn(serve(FORWARD_PORT, forward));
    rt.spawn(serve(SHELL_PORT, shell));
    rt.spawn(serve(CONTROL_PORT, move |s| control(s, shutdown.clone())));
    rt.spawn(egress_relay());
}

async fn forward(mut s: VsockStream) {
    let Ok(line) = read_line(&mut s).await else { return };
    let (target, kind) = match parse_forward(&line) {
        Ok(t) => t,
        Err(e) => {
            let _ = s.write_all(format!("ERR {e}\n").as_bytes()).await;
            return;
        }
    };
    if kind == ForwardKind::Udp {
        return forward_udp(s, target).await;
    }
    match TcpStream::connect(target).await {
        Ok(mut t) => {
            if s.write_all(b"OK\n").await.is_ok() {
                if kind == ForwardKind::TcpFramed {
                    let _ = berth_framed::splice_framed(t, s).await;
                } else {
                    let _ = tokio::io::copy_bidirectional(&mut s, &mut t).await;
                }
            }
        }
        Err(e) => {
            let _ = s.write_all(format!("ERR connect {target}: {e}\n").as_bytes()).await;
        }
    }
}

/// One host-side UDP client's flow to `target`: datagrams from the stream go out of a socket
/// connected to the target, its answers come back as frames. Ends when the host ends the
/// stream (the agent closes idle flows).
async fn forward_udp(mut s: VsockStream, target: SocketAddr) {
    let local: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = match tokio::net::UdpSocket::bind(local).await {
        Ok(u) => u,
        Err(e) => {
            let _ = s.write_all(format!("ERR bind: {e}\n").as_bytes()).await;
            return;
        }
    };
    if let Err(e) = sock.connect(target).await {
        let _ = s.write_all(format!("ERR connect {target}: {e}\n").as_bytes()).await;
        return;
    }
    if s.write_all(b"OK\n").await.is_err() {
        return;
    }
    let (mut rd, mut wr) = tokio::io::split(s);
    let up = async {
        let mut buf = Vec::new();
        while let Ok(true) = berth_framed::read_datagram(&mut rd, &mut buf).await {
            // A target that is not listening answers with ICMP: that datagram is lost, as
            // it would be without Berth in between.
            let _ = sock.send(&buf).await;
        }
    };
    let down = async {
        let mut buf = vec![0u8; 65_536];
        loop {
            match sock.recv(&mut buf).await {
                Ok(n) => {
                    if berth_framed::write_datagram(&mut wr, &buf[..n]).await.is_err() {
                        return;
                    }
                }
                // ECONNREFUSED from an earlier datagram's ICMP: keep the flow.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(_) => return,
            }
        }
    };
    // The host ending the stream ends the flow; the target going quiet does not.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn control(mut s: VsockStream, shutdown: Sender<()>) {
    let Ok(line) = read_line(&mut s).await else { return };
    let reply = match line.trim() {
        "shutdown" => {
            let _ = shutdown.send(());
            "OK\n".to_string()
        }
        "sync-time" => match crate::clock::sync_once().await {
            Ok(off) => format!("OK {}\n", off.0 / 1_000_000),
            Err(e) => format!("ERR {e}\n"),
        },
        other => format!("ERR unknown command {other:?}\n"),
    };
    let _ = s.write_all(reply.as_bytes()).await;
    let _ = s.shutdown(std::net::Shutdown::Write);
}

async fn egress_relay() {
    let l = match TcpListener::bind(EGRESS_LISTEN).await {
        Ok(l) => l,
        Err(e) => {
            crate::console::line(&format!("egress relay: cannot listen on {EGRESS_LISTEN}: {e}"));
            return;
        }
    };
    loop {
        let Ok((mut c, _)) = l.accept().await else { continue };
        tokio::spawn(async move {
            match VsockStream::connect(VsockAddr::new(VMADDR_CID_HOST, EGRESS_PORT)).await {
                Ok(mut h) => {
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut h).await;
                }
                Err(e) => crate::console::line(&format!("egress relay: host proxy unreachable: {e}")),
            }
        });
    }
}

/// A debug shell on a fresh pty. The session ends when the shell exits (reading the pty master
/// fails) or when the host hangs up (the shell's session gets SIGHUP).
async fn shell(mut s: VsockStream) {
    let Ok(line) = read_line(&mut s).await else { return };
    let Some((rows, cols)) = parse_shell(&line) else {
        let _ = s.write_all(b"ERR expected: shell ROWS COLS\n").await;
        return;
    };
    let ws = nix::pty::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = match nix::pty::openpty(Some(&ws), None) {
        Ok(p) => p,
        Err(e) => {
            let _ = s.write_all(format!("ERR openpty: {e}\n").as_bytes()).await;
            return;
        }
    };
    let child = spawn_shell(pty.slave);
    let pid = match child {
        Ok(pid) => pid,
        Err(e) => {
            let _ = s.write_all(format!("ERR spawn /bin/sh: {e}\n").as_bytes()).await;
            return;
        }
    };
    if s.write_all(b"OK\n").await.is_err() {
        return;
    }
    let master: OwnedFd = pty.master;
    let Ok(wfd) = master.try_clone() else { return };
    let mut reader = tokio::fs::File::from_std(std::fs::File::from(master));
    let mut writer = tokio::fs::File::from_std(std::fs::File::from(wfd));
    let (mut sr, mut sw) = s.into_split();
    let to_host = async {
        let _ = tokio::io::copy(&mut reader, &mut sw).await;
        let _ = sw.shutdown().await;
    };
    let from_host = async {
        let mut buf = [0u8; 4096];
        loop {
            match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if writer.write_all(&buf[..n]).await.is_err() || writer.flush().await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = to_host => {}
        _ = from_host => {}
    }
    // SAFETY: signalling the shell's own process group (it is a session leader).
    unsafe { libc::kill(-(pid as i32), libc::SIGHUP) };
}

fn spawn_shell(slave: OwnedFd) -> std::io::Result<u32> {
    let fd = slave.as_raw_fd();
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-l")
        .env_clear()
        .env("PATH", crate::supervise::PATH)
        .env("TERM", "xterm")
        .env("HOME", "/root")
        .env("PS1", "berth-vm:\\w# ")
        .stdin(slave.try_clone()?)
        .stdout(slave.try_clone()?)
        .stderr(slave);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let _ = fd;
            Ok(())
        });
    }
    // The reaper in `supervise` collects it; the Child handle is dropped without waiting.
    Ok(cmd.spawn()?.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_headers() {
        assert_eq!(parse_forward("tcp 127.0.0.1:8080").unwrap(), ("127.0.0.1:8080".parse().unwrap(), ForwardKind::Tcp));
        assert_eq!(parse_forward("tcp [::1]:80").unwrap(), ("[::1]:80".parse().unwrap(), ForwardKind::Tcp));
        assert_eq!(parse_forward("tcp+framed 10.0.0.2:80").unwrap(), ("10.0.0.2:80".parse().unwrap(), ForwardKind::TcpFramed));
        assert_eq!(parse_forward("udp 127.0.0.1:53").unwrap(), ("127.0.0.1:53".parse().unwrap(), ForwardKind::Udp));
        assert!(parse_forward("sctp 127.0.0.1:53").is_err());
        assert!(parse_forward("tcp localhost:80").is_err(), "no name lookups in init");
        assert!(parse_forward("").is_err());
    }

    #[test]
    fn shell_headers() {
        assert_eq!(parse_shell("shell 24 80"), Some((24, 80)));
        assert_eq!(parse_shell("shell 24"), None);
        assert_eq!(parse_shell("shell 24 80 1"), None);
        assert_eq!(parse_shell("sh 24 80"), None);
        assert_eq!(parse_shell("shell -1 80"), None);
    }

    #[tokio::test]
    async fn header_lines_are_bounded_and_leave_the_rest() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(b"tcp 127.0.0.1:1\nPAYLOAD").await.unwrap();
        assert_eq!(read_line(&mut b).await.unwrap(), "tcp 127.0.0.1:1");
        let mut rest = [0u8; 7];
        b.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"PAYLOAD");

        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(&vec![b'x'; MAX_LINE + 10]).await.unwrap();
        assert!(read_line(&mut b).await.is_err(), "oversized header must be refused");

        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(b"tcp 127.0").await.unwrap();
        drop(a);
        assert!(read_line(&mut b).await.is_err(), "truncated header must be refused");
    }
}
