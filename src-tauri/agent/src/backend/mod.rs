//! Engine backends behind one trait: [`qemu::Qemu`] (berthd in the Berth VM) and
//! [`native::Native`] (berthd as a host process, Linux). Both report readiness stages and
//! log lines on a channel and expose how to reach the engine once it runs.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::api::{Accel, Settings, Stage};
use crate::transport::Transport;

pub mod native;
pub mod qemu;
pub mod reattach;

#[cfg(target_os = "linux")]
#[path = "platform_linux.rs"]
pub mod platform;
#[cfg(target_os = "macos")]
#[path = "platform_macos.rs"]
pub mod platform;
#[cfg(target_os = "windows")]
#[path = "platform_windows.rs"]
pub mod platform;

/// What a backend reports while it starts and runs.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendEvent {
    Stage { stage: Stage, guest_uptime_s: Option<f64> },
    Log(String),
}

/// A started engine.
pub struct Running {
    pub pid: u32,
    pub accel: Option<Accel>,
    /// How to reach guest vsock ports (None: the engine runs on the host).
    pub transport: Option<Arc<dyn Transport>>,
    /// Becomes Some(reason) when the engine process ends on its own.
    pub exited: watch::Receiver<Option<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The start failed at `stage`; `log_line` is the console/log line that explains it.
    #[error("{message}")]
    Start { stage: Stage, message: String, log_line: Option<String> },
    #[error("{0}")]
    Setup(String),
}

/// What [`Backend::adopt`] found.
pub enum Adoption {
    /// No engine of ours was left running.
    Nothing,
    /// An engine left by an earlier agent, taken over.
    Adopted(Running),
    /// One was there but could not be taken over (the reason); it has been stopped.
    Stopped(String),
}

#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// "qemu" or "native".
    fn name(&self) -> &'static str;
    fn expected_stages(&self) -> Vec<Stage>;
    /// Start, and return once the engine answers `/_ping`.
    async fn start(&mut self, settings: &Settings, events: mpsc::UnboundedSender<BackendEvent>) -> Result<Running, BackendError>;
    /// Stop cleanly (the engine first, then the VM), forcefully after a timeout.
    async fn stop(&mut self);
    /// The last console/log lines.
    fn log_tail(&self, n: usize) -> Vec<String>;
    /// Take over an engine an earlier agent left running (see [`reattach`]).
    async fn adopt(&mut self, _events: mpsc::UnboundedSender<BackendEvent>) -> Adoption {
        Adoption::Nothing
    }
    /// True when the engine keeps running after this agent exits (a VM does; native berthd,
    /// our child, is stopped with the agent).
    fn survives_agent(&self) -> bool {
        false
    }
}

/// The line of a log that best explains a failure: the guest's own failure report, a kernel
/// panic, an error, else the last line.
pub fn explaining_line(lines: &[String]) -> Option<String> {
    let pick = |pat: &dyn Fn(&str) -> bool| lines.iter().rev().find(|l| pat(l)).cloned();
    pick(&|l| l.contains("stage=failed"))
        .or_else(|| pick(&|l| l.contains("Kernel panic")))
        .or_else(|| pick(&|l| l.contains("qemu-system") || l.contains("qemu:")))
        .or_else(|| pick(&|l| l.contains(" ERROR ") || l.contains("error:") || l.contains("failed")))
        .or_else(|| lines.iter().rev().find(|l| !l.trim().is_empty()).cloned())
}

/// Describe a process exit status the way a user reads it.
pub fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}{}", if sig == 9 { " (SIGKILL)" } else { "" }),
        _ => "unknown exit".into(),
    }
}

/// GET /_ping over any stream; true on a 200.
pub async fn ping<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if s.write_all(b"GET /_ping HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut buf)).await, Ok(Ok(_)))
        && buf.starts_with(b"HTTP/1.")
        && &buf[9..12] == b"200"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explaining_line_prefers_the_guest_report() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            explaining_line(&l(&["Linux version", "berth-init: stage=failed reason=\"mke2fs\"", "reboot: Restarting"])).unwrap(),
            "berth-init: stage=failed reason=\"mke2fs\""
        );
        assert_eq!(explaining_line(&l(&["a", "Kernel panic - not syncing: x", "b"])).unwrap(), "Kernel panic - not syncing: x");
        assert_eq!(explaining_line(&l(&["a", "b", ""])).unwrap(), "b");
        assert_eq!(explaining_line(&[]), None);
    }
}
