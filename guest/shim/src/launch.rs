//! Starting a shim from berthd.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::Ready;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("cannot run shim {path}: {source}")]
    Exec { path: PathBuf, source: std::io::Error },
    #[error("shim setup: {0}")]
    Io(#[from] std::io::Error),
    /// The runtime refused the container; the text is the runtime's error.
    #[error("container failed to start: {0}")]
    Start(String),
    #[error("shim did not report readiness within {0:?}")]
    Timeout(Duration),
    #[error("shim exited without reporting readiness")]
    Died,
}

/// What berthd tells a shim; mirrors the binary's flags.
#[derive(Debug, Clone)]
pub struct ShimOptions {
    /// Path of the `berth-shim` binary.
    pub binary: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub state_dir: PathBuf,
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    pub log_path: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// Docker's `none` log driver: no log file.
    pub no_log: bool,
    pub tty: bool,
    pub stdin: bool,
    /// Docker's StdinOnce (see the binary's flag).
    pub stdin_once: bool,
    pub timeout: Duration,
    /// Attach sessions the shim waits for before starting the container (`docker run`).
    pub wait_attach: usize,
}

impl ShimOptions {
    /// Options with Docker's json-file defaults (20 MiB × 5 files) and a 30 s timeout.
    pub fn new(binary: PathBuf, id: String, bundle: PathBuf, state_dir: PathBuf, runtime: PathBuf, runtime_root: PathBuf, log_path: PathBuf) -> Self {
        ShimOptions { binary, id, bundle, state_dir, runtime, runtime_root, log_path, log_max_size: 20 << 20, log_max_files: 5, no_log: false, tty: false, stdin: false, stdin_once: false, timeout: Duration::from_secs(30), wait_attach: 0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShimHandle {
    pub shim_pid: i32,
    pub init_pid: i32,
}

/// Run the shim and wait until the container runs (or failed to start).
///
/// Readiness comes over a pipe rather than by polling for `shim.json`: a shim
/// that dies early closes the pipe, which is noticed at once. Blocking (up to
/// `opts.timeout`): call it from `spawn_blocking` in async code.
pub fn spawn(opts: &ShimOptions) -> Result<ShimHandle, ShimError> {
    std::fs::create_dir_all(&opts.state_dir)?;
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    let wfd = w.as_raw_fd();
    let mut cmd = Command::new(&opts.binary);
    cmd.arg("--id").arg(&opts.id);
    cmd.arg("--bundle").arg(&opts.bundle);
    cmd.arg("--state-dir").arg(&opts.state_dir);
    cmd.arg("--runtime").arg(&opts.runtime);
    cmd.arg("--runtime-root").arg(&opts.runtime_root);
    cmd.arg("--log-path").arg(&opts.log_path);
    cmd.arg("--log-max-size").arg(opts.log_max_size.to_string());
    cmd.arg("--log-max-files").arg(opts.log_max_files.to_string());
    cmd.arg("--ready-fd").arg(wfd.to_string());
    if opts.no_log {
        cmd.arg("--no-log");
    }
    if opts.tty {
        cmd.arg("--tty");
    }
    if opts.stdin {
        cmd.arg("--stdin");
    }
    if opts.stdin_once {
        cmd.arg("--stdin-once");
    }
    if opts.wait_attach > 0 {
        cmd.arg("--wait-attach").arg(opts.wait_attach.to_string());
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // Safety: fcntl is async-signal-safe; only the child's copy of the write
    // end loses close-on-exec, so no other process berthd starts inherits it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(wfd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| ShimError::Exec { path: opts.binary.clone(), source })?;
    drop(w);
    // The first process only forks the daemon and exits.
    let _ = child.wait();

    let deadline = Instant::now() + opts.timeout;
    let mut pfd = libc::pollfd { fd: r.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let mut data = Vec::new();
    let mut file = File::from(r);
    loop {
        if data.contains(&b'\n') {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ShimError::Timeout(opts.timeout));
        }
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if n == 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        match file.read(&mut buf)? {
            0 => break,
            k => data.extend_from_slice(&buf[..k]),
        }
    }
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let ready: Ready = serde_json::from_slice(line).map_err(|_| ShimError::Died)?;
    if ready.ok {
        Ok(ShimHandle { shim_pid: ready.shim_pid, init_pid: ready.init_pid })
    } else {
        Err(ShimError::Start(ready.error.unwrap_or_default()))
    }
}
