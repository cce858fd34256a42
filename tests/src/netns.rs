//! Loopback-only network namespaces for tests.
//!
//! Every registry, daemon and client under test runs inside one of these, so the only
//! reachable network is the namespace's own `lo`: an accidental lookup of a public host fails
//! at once instead of leaving the machine.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Error, IoContext, Result};

/// Prefix of every namespace the harness creates: `berth-t-<creator pid>-<n>`.
pub const PREFIX: &str = "berth-t-";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace with only `lo` (up). Dropping it deletes the namespace; it kills
/// no process (the owners of processes inside, e.g. registry handles, kill their own).
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Create `berth-t-<pid>-<n>` with loopback up, after removing stale namespaces left by
    /// dead test processes.
    pub fn new() -> Result<NetNs> {
        cleanup_stale();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{PREFIX}{}-{n}", std::process::id());
        run_ip(&["netns", "add", &name])?;
        let ns = NetNs { name };
        run_ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, usable with setns(2).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A Command that runs `program` inside this namespace. Uses setns in the forked child
    /// (not `ip netns exec`) so the child's pid is the program itself (kill -9 hits it) and no
    /// private mount namespace is created.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        command_in(&self.path(), program)
    }

    /// Run `f` on a fresh thread that has joined this namespace, and return its result.
    /// Sockets created there stay in the namespace and may be used from any thread
    /// afterwards, which is how the test process talks to servers inside.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let file = File::open(self.path()).ctx(|| format!("open {}", self.path().display()))?;
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                Error::Io {
                    context: "setns".into(),
                    source: e.into(),
                }
            })?;
            Ok(f())
        })
        .join()
        .map_err(|_| Error::Command {
            command: "netns thread".into(),
            detail: "panicked".into(),
        })?
    }

    /// Bind a TCP listener inside the namespace (e.g. `127.0.0.1:0` for a free port).
    pub fn bind_tcp(&self, addr: &str) -> Result<TcpListener> {
        let a = addr.to_string();
        self.run(move || TcpListener::bind(&a))?
            .ctx(|| format!("bind {addr} in netns"))
    }

    /// Connect to `addr` from inside the namespace.
    pub fn connect_tcp(&self, addr: &str) -> Result<TcpStream> {
        let a: SocketAddr = addr
            .parse()
            .map_err(|e| Error::Http(format!("bad address {addr}: {e}")))?;
        self.run(move || TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5)))?
            .ctx(|| format!("connect {addr} in netns"))
    }

    /// A free TCP port on 127.0.0.1 inside the namespace (bind port 0, read it, release it).
    /// The namespace is private to this test, so nothing else can grab it in between.
    pub fn free_port(&self) -> Result<u16> {
        let l = self.bind_tcp("127.0.0.1:0")?;
        Ok(l.local_addr().ctx(|| "local_addr".into())?.port())
    }
}

/// A Command that runs `program` inside the namespace at `ns_path` (see [`NetNs::command`]);
/// for handles that keep only the path, e.g. a daemon that restarts.
pub fn command_in(ns_path: &std::path::Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    // Opened (O_CLOEXEC) in the parent; the closure owns it so it lives until spawn.
    let file = File::open(ns_path);
    // SAFETY: the closure only calls setns(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || match &file {
            Ok(f) => {
                if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            }
            Err(e) => Err(std::io::Error::new(e.kind(), "cannot open netns file")),
        });
    }
    cmd
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = run_ip(&["netns", "del", &self.name]);
    }
}

fn run_ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .ctx(|| "spawn ip".into())?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("ip {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Delete `berth-t-<pid>-*` namespaces whose creating pid no longer exists (left behind by a
/// test process that was killed before its Drop ran).
pub fn cleanup_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run_ip(&["netns", "del", &name]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_isolated_and_removed() {
        crate::require_root!();
        let ns = NetNs::new().unwrap();
        let path = ns.path();
        assert!(path.exists());
        // Only loopback inside.
        let out = ns.command("ip").args(["-o", "link"]).output().unwrap();
        let links = String::from_utf8_lossy(&out.stdout);
        assert_eq!(links.lines().count(), 1, "{links}");
        assert!(links.contains("lo:"));
        // A listener inside is not reachable from the host namespace.
        let l = ns.bind_tcp("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(ns.connect_tcp(&format!("127.0.0.1:{port}")).is_ok());
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        // Public addresses are unreachable at once.
        assert!(ns.connect_tcp("192.0.2.1:443").is_err());
        drop(l);
        drop(ns);
        assert!(!path.exists());
    }
}
