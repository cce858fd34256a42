//! A throttling TCP proxy inside a test namespace: slows registry downloads so that
//! concurrent pulls overlap for long enough to prove they shared one download.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::netns::NetNs;

/// A TCP forwarder that relays server-to-client data in small, paced chunks, so a pull of a
/// few MB takes long enough for two clients to overlap. Hand-written: a few lines of std, and
/// no crate in the workspace throttles a socket.
pub struct SlowProxy {
    /// `127.0.0.1:PORT` inside the namespace.
    pub addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SlowProxy {
    /// Forward to `upstream` (inside `ns`), passing at most `chunk` bytes per `pause`.
    pub fn start(ns: &NetNs, upstream: &str, chunk: usize, pause: Duration) -> SlowProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = ns.bind_tcp("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let ns_path = ns.path();
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let server = connect_in(&ns_path, &upstream);
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_read, mut c_write) = (server, client);
                let st = st.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; chunk];
                    loop {
                        if st.load(Ordering::SeqCst) {
                            break;
                        }
                        match s_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if c_write.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                std::thread::sleep(pause);
                            }
                        }
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        SlowProxy { addr, stop }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Connect to `addr` from inside the namespace at `ns_path` (from any thread).
pub fn connect_in(ns_path: &Path, addr: &str) -> std::net::TcpStream {
    let file = std::fs::File::open(ns_path).unwrap();
    let addr = addr.to_string();
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        std::net::TcpStream::connect(&addr).unwrap()
    })
    .join()
    .unwrap()
}

