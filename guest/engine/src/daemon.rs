//! Process-level concerns of berthd: the data-root lock, the pidfile, the listening sockets, and a
//! clean shutdown. The API itself lives in `router` and the handler modules.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;

use crate::config::Config;
use crate::engine::Engine;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("another berthd is already running on data root {root} (pid {pid}); stop it first or use a different --data-root")]
    AlreadyRunning { root: PathBuf, pid: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("unsupported --host {0:?}: Berth listens on unix:///path sockets and vsock://:PORT or vsock+framed://:PORT (inside its VM)")]
    UnsupportedHost(String),
    #[error("cannot prepare {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot start the engine: {0}")]
    Engine(#[from] crate::error::ApiError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io { path: path.to_path_buf(), source }
}

/// Holds the exclusive lock on the data root for as long as the daemon runs.
pub struct RootLock {
    _file: std::fs::File,
}

/// A second berthd on the same data root must refuse to start: two daemons would corrupt the
/// store. flock is released by the kernel when the process dies, so a kill -9 leaves no stale lock.
pub fn lock_data_root(root: &Path) -> Result<RootLock, DaemonError> {
    let path = root.join("berthd.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path))?;
    // SAFETY: flock on a valid, owned descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let pid = std::fs::read_to_string(&path).unwrap_or_default().trim().to_string();
        return Err(DaemonError::AlreadyRunning { root: root.to_path_buf(), pid });
    }
    file.set_len(0).map_err(io_err(&path))?;
    write!(file, "{}", std::process::id()).map_err(io_err(&path))?;
    Ok(RootLock { _file: file })
}

/// Bind a unix socket safely: never through a symlink, never over a live daemon's socket, and
/// with mode 0660 (the socket is root-equivalent).
pub fn bind_unix(path: &Path) -> Result<UnixListener, DaemonError> {
    let addr = format!("unix://{}", path.display());
    let fail = |reason: String| DaemonError::Listen { addr: addr.clone(), reason };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(fail("the path is a symlink; refusing to bind through it".into()))
        }
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(fail("another daemon is listening on it".into()));
            }
            std::fs::remove_file(path).map_err(io_err(path))?;
        }
        Ok(_) => return Err(fail("the path exists and is not a socket".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let l = UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_err(path))?;
    Ok(l)
}

/// Where berthd listens: a unix socket, or (inside the Berth VM) an AF_VSOCK port that only the
/// host may connect to. Never TCP: the API is root-equivalent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ListenAddr {
    Unix(PathBuf),
    Vsock(u32),
    /// vsock with half-close carried in frames (see the berth-framed crate): what the host agent uses
    /// over transports that turn a half-close into a full close (vhost-device-vsock).
    VsockFramed(u32),
}

fn parse_host(host: &str) -> Result<ListenAddr, DaemonError> {
    let bad = || DaemonError::UnsupportedHost(host.to_string());
    if let Some(p) = host.strip_prefix("unix://") {
        return if p.is_empty() { Err(bad()) } else { Ok(ListenAddr::Unix(PathBuf::from(p))) };
    }
    for (scheme, framed) in [("vsock://", false), ("vsock+framed://", true)] {
        if let Some(rest) = host.strip_prefix(scheme) {
            // `vsock://:2375`; a CID before the colon is accepted only as "any" (we listen on our own).
            let (cid, port) = rest.rsplit_once(':').unwrap_or(("", rest));
            if !(cid.is_empty() || cid == "any") {
                return Err(bad());
            }
            let port = port.parse::<u32>().ok().filter(|p| *p > 0).ok_or_else(bad)?;
            return Ok(if framed { ListenAddr::VsockFramed(port) } else { ListenAddr::Vsock(port) });
        }
    }
    Err(bad())
}

#[cfg(test)]
fn unix_path(host: &str) -> Result<PathBuf, DaemonError> {
    match parse_host(host)? {
        ListenAddr::Unix(p) => Ok(p),
        ListenAddr::Vsock(_) | ListenAddr::VsockFramed(_) => Err(DaemonError::UnsupportedHost(host.to_string())),
    }
}

/// One bound listener of either kind; accepted connections are served the same way.
enum Listener {
    Unix(UnixListener),
    Vsock(crate::vsock::HostOnlyListener),
    VsockFramed(crate::vsock::HostOnlyListener),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<Box<dyn crate::vsock::Conn>> {
        match self {
            Listener::Unix(l) => Ok(Box::new(l.accept().await?.0)),
            Listener::Vsock(l) => Ok(Box::new(l.accept().await?)),
            Listener::VsockFramed(l) => Ok(Box::new(berth_framed::Framed::new(l.accept().await?))),
        }
    }
}

/// Run the daemon until `shutdown` resolves, then stop accepting, give open requests a few
/// seconds, and remove the sockets and pidfile.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    for dir in [&config.data_root, &config.exec_root] {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    std::fs::set_permissions(&config.data_root, std::fs::Permissions::from_mode(0o711))
        .map_err(io_err(&config.data_root))?;
    let _lock = lock_data_root(&config.data_root)?;

    let addrs: Vec<ListenAddr> = config.hosts.iter().map(|h| parse_host(h)).collect::<Result<_, _>>()?;
    let paths: Vec<PathBuf> = addrs
        .iter()
        .filter_map(|a| match a {
            ListenAddr::Unix(p) => Some(p.clone()),
            ListenAddr::Vsock(_) | ListenAddr::VsockFramed(_) => None,
        })
        .collect();
    let t0 = std::time::Instant::now();
    let engine = Engine::new(config.clone())?;
    let t_open = t0.elapsed();
    crate::build::recover(&config.exec_root);
    crate::containers::cpview::sweep(&config.exec_root);
    let bring_back = crate::containers::lifecycle::restore(&engine).await;
    crate::build::recover_containers(&engine).await;
    let t_restore = t0.elapsed() - t_open;
    // SAFETY: berthd's main checked that the descriptor is open and owns nothing else on it;
    // this is the only place that takes it.
    let ready_pipe = config.network_ready_fd.map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
    let mut listeners = Vec::new();
    for a in &addrs {
        listeners.push(match a {
            ListenAddr::Unix(p) => Listener::Unix(bind_unix(p)?),
            ListenAddr::Vsock(port) => Listener::Vsock(crate::vsock::HostOnlyListener::bind(*port).map_err(|e| {
                DaemonError::Listen { addr: format!("vsock://:{port}"), reason: e.to_string() }
            })?),
            ListenAddr::VsockFramed(port) => Listener::VsockFramed(crate::vsock::HostOnlyListener::bind(*port).map_err(|e| {
                DaemonError::Listen { addr: format!("vsock+framed://:{port}"), reason: e.to_string() }
            })?),
        });
    }
    if let Some(pidfile) = &config.pidfile {
        std::fs::write(pidfile, format!("{}\n", std::process::id())).map_err(io_err(pidfile))?;
    }
    // Where start-up time goes (the VM's boot benchmark reads it from the console).
    tracing::info!(hosts = ?config.hosts, data_root = %config.data_root.display(), open = ?t_open, restore = ?t_restore, total = ?t0.elapsed(), "berthd is serving the Docker Engine API");
    // Bridges and nftables in the background: `/_ping`, `/version`, images and the rest answer
    // meanwhile; what needs them waits (`networks::network_ready`). Inside the VM this overlaps
    // the kernel's network modules loading and the `nft` run with the host's first requests.
    {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            let e2 = Arc::clone(&engine);
            let t0 = std::time::Instant::now();
            let r = tokio::task::spawn_blocking(move || {
                let prereq = match ready_pipe {
                    Some(f) => read_ready(f, NETWORK_READY_TIMEOUT),
                    None => Ok(()),
                };
                e2.networks.setup_host(prereq)
            })
            .await;
            if let Ok(Ok(())) = r {
                tracing::info!(took = ?t0.elapsed(), "network setup done");
            }
            crate::containers::lifecycle::bring_back(&engine, bring_back).await;
            // The registry's TLS client (every CA certificate parsed) while nothing else runs,
            // rather than in the first pull.
            let e2 = Arc::clone(&engine);
            if let Ok(Err(err)) = tokio::task::spawn_blocking(move || e2.registry.warm_up()).await {
                tracing::warn!("registry client: {err}");
            }
        });
    }

    // Every connection task holds a clone of `alive`; when the last one is dropped, `all_done`
    // yields None. `stop` tells accept loops and connections to wind down.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let mut accept_tasks = Vec::new();
    for l in listeners {
        let engine = Arc::clone(&engine);
        let mut stop = stop_rx.clone();
        let conn_stop = stop_rx.clone();
        let alive = alive.clone();
        accept_tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    r = l.accept() => match r {
                        Ok(stream) => serve_conn(Arc::clone(&engine), stream, conn_stop.clone(), alive.clone()),
                        Err(e) => {
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        }));
    }
    drop(alive);

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = engine.shutdown.send(true);
    for t in accept_tasks {
        let _ = t.await;
    }
    // Streams such as `docker events` never end on their own; do not wait for them forever.
    if tokio::time::timeout(Duration::from_secs(5), all_done.recv()).await.is_err() {
        tracing::warn!("some connections were still open after 5 s; closing them");
    }
    crate::networks::shutdown(&engine);
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }
    if let Some(pidfile) = &config.pidfile {
        let _ = std::fs::remove_file(pidfile);
    }
    Ok(())
}

/// How long berthd waits for the VM's init to report the network modules.
const NETWORK_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Read the VM init's one line on the readiness pipe: `ok`, or `error: REASON` (then the
/// network setup fails with that reason, and so does every start on a bridge network).
fn read_ready(f: std::fs::File, timeout: Duration) -> Result<(), String> {
    use std::io::Read;
    let mut pfd = libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let deadline = std::time::Instant::now() + timeout;
    let mut got = Vec::new();
    let mut f = f;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!("the VM's init did not report the kernel's network modules within {} s", timeout.as_secs()));
        }
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("waiting for the VM's init: {e}"));
        }
        if rc == 0 {
            continue;
        }
        let mut buf = [0u8; 512];
        let n = f.read(&mut buf).map_err(|e| format!("reading the VM init's readiness pipe: {e}"))?;
        got.extend_from_slice(&buf[..n]);
        if n == 0 || got.contains(&b'\n') || got.len() > 4096 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got);
    let line = text.lines().next().unwrap_or("").trim();
    match line {
        "ok" => Ok(()),
        "" => Err("the VM's init closed the readiness pipe without reporting the kernel's network modules".into()),
        l => Err(l.strip_prefix("error:").map(str::trim).unwrap_or(l).to_string()),
    }
}

fn serve_conn(
    engine: Arc<Engine>,
    stream: Box<dyn crate::vsock::Conn>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    alive: tokio::sync::mpsc::Sender<()>,
) {
    let svc = service_fn(move |req| {
        let engine = Arc::clone(&engine);
        async move { Ok::<_, Infallible>(crate::router::handle(engine, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // A client that never finishes its headers (slowloris) is dropped.
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::spawn(async move {
        let _alive = alive;
        let mut conn = std::pin::pin!(conn);
        let r = tokio::select! {
            r = conn.as_mut() => r,
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = r {
            tracing::debug!("connection ended: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _a = lock_data_root(dir.path()).unwrap();
        match lock_data_root(dir.path()) {
            Err(DaemonError::AlreadyRunning { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected AlreadyRunning, got {:?}", other.map(|_| ())),
        }
    }

    #[tokio::test]
    async fn socket_is_0660_and_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock");
        let l = bind_unix(&sock).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // A live socket is not stolen.
        assert!(matches!(bind_unix(&sock), Err(DaemonError::Listen { .. })));
        drop(l);
        // A dead one is replaced.
        bind_unix(&sock).unwrap();
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        assert!(matches!(bind_unix(&link), Err(DaemonError::Listen { .. })));
        assert!(!dir.path().join("elsewhere").exists());
    }

    #[test]
    fn readiness_pipe() {
        let pipe = || {
            let mut fds = [0; 2];
            // SAFETY: a two-element array for pipe(2).
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: fresh descriptors, owned here.
            unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) }
        };
        let t = Duration::from_secs(5);
        let (r, mut w) = pipe();
        w.write_all(b"ok\n").unwrap();
        assert_eq!(read_ready(r, t), Ok(()));
        let (r, mut w) = pipe();
        w.write_all(b"error: insmod bridge: Exec format error\n").unwrap();
        assert_eq!(read_ready(r, t), Err("insmod bridge: Exec format error".into()));
        let (r, w) = pipe();
        drop(w);
        assert!(read_ready(r, t).unwrap_err().contains("without reporting"));
        // A writer that never writes: the timeout, not a hang.
        let (r, _w) = pipe();
        assert!(read_ready(r, Duration::from_millis(50)).unwrap_err().contains("within"));
        // Written in pieces.
        let (r, mut w) = pipe();
        let h = std::thread::spawn(move || {
            w.write_all(b"o").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            w.write_all(b"k\n").unwrap();
        });
        assert_eq!(read_ready(r, t), Ok(()));
        h.join().unwrap();
    }

    #[test]
    fn only_unix_and_vsock_hosts() {
        assert!(unix_path("tcp://0.0.0.0:2375").is_err());
        assert_eq!(unix_path("unix:///x/y.sock").unwrap(), PathBuf::from("/x/y.sock"));
        assert_eq!(parse_host("vsock://:2375").unwrap(), ListenAddr::Vsock(2375));
        assert_eq!(parse_host("vsock://any:2375").unwrap(), ListenAddr::Vsock(2375));
        assert_eq!(parse_host("vsock+framed://:2380").unwrap(), ListenAddr::VsockFramed(2380));
        assert!(parse_host("vsock+framed://3:2380").is_err());
        assert!(parse_host("vsock://3:2375").is_err(), "listening on another CID makes no sense");
        assert!(parse_host("vsock://:0").is_err());
        assert!(parse_host("vsock://:x").is_err());
        assert!(parse_host("unix://").is_err());
    }
}
