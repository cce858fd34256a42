//! The agent's control API types (JSON over HTTP on `~/.berth/run/agent.sock`). These are the
//! stable contract the `berth` CLI and the desktop app build on: fields are only ever added.

use serde::{Deserialize, Serialize};

/// Which engine the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A VM where the OS needs one (macOS, Windows); berthd natively on Linux.
    #[default]
    Auto,
    /// berthd inside the Berth VM (QEMU).
    Vm,
    /// berthd as a host process (Linux only).
    Native,
}

/// A QEMU accelerator, probed in this order where available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Hvf,
    Whpx,
    Tcg,
}

impl Accel {
    pub fn as_str(&self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Hvf => "hvf",
            Accel::Whpx => "whpx",
            Accel::Tcg => "tcg",
        }
    }

    pub fn parse(s: &str) -> Option<Accel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kvm" => Some(Accel::Kvm),
            "hvf" => Some(Accel::Hvf),
            "whpx" => Some(Accel::Whpx),
            "tcg" => Some(Accel::Tcg),
            _ => None,
        }
    }
}

/// Engine settings, persisted in `~/.berth/settings.json`. CPU, memory and accelerator changes
/// apply at the next start; the disk size applies when the data disk is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub backend: BackendKind,
    pub cpus: u32,
    pub memory_mib: u32,
    pub disk_gib: u32,
    /// Force one accelerator instead of probing (`BERTH_ACCEL` overrides too).
    pub accel: Option<Accel>,
    /// Host folders shared into the VM at the same path (for `docker run -v`).
    pub shares: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { backend: BackendKind::Auto, cpus: 2, memory_mib: 2048, disk_gib: 64, accel: None, shares: Vec::new() }
    }
}

/// A change to the settings: only the fields given change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SettingsPatch {
    pub backend: Option<BackendKind>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u32>,
    pub disk_gib: Option<u32>,
    pub accel: Option<Accel>,
    pub shares: Option<Vec<String>>,
}

impl Settings {
    /// Apply a patch, refusing values no VM can run with.
    pub fn apply(&self, p: &SettingsPatch) -> Result<Settings, String> {
        let mut s = self.clone();
        if let Some(b) = p.backend {
            s.backend = b;
        }
        if let Some(c) = p.cpus {
            if c == 0 || c > 256 {
                return Err(format!("cpus must be 1-256, not {c}"));
            }
            s.cpus = c;
        }
        if let Some(m) = p.memory_mib {
            if !(256..=1024 * 1024).contains(&m) {
                return Err(format!("memory must be at least 256 MiB, not {m}"));
            }
            s.memory_mib = m;
        }
        if let Some(d) = p.disk_gib {
            if !(1..=16 * 1024).contains(&d) {
                return Err(format!("disk must be 1-16384 GiB, not {d}"));
            }
            s.disk_gib = d;
        }
        if p.accel.is_some() {
            s.accel = p.accel;
        }
        if let Some(sh) = &p.shares {
            for d in sh {
                if !d.starts_with('/') || d == "/" || d.contains(char::is_whitespace) || d.contains(':') {
                    return Err(format!("shared folder {d:?} must be an absolute path other than /, without spaces or ':'"));
                }
            }
            s.shares = sh.clone();
        }
        Ok(s)
    }
}

/// Readiness stages, in the order they are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// QEMU runs and answers on QMP (or: the native berthd process started).
    VmStarted,
    /// The kernel wrote its first console line.
    KernelUp,
    /// berth-init (PID 1) runs.
    InitUp,
    /// The data disk is mounted.
    DiskUp,
    /// berthd answers `/_ping`.
    EngineUp,
    /// The host docker socket answers `/_ping` through the transport.
    SocketForwarded,
}

impl Stage {
    pub fn as_str(&self) -> &'static str {
        match self {
            Stage::VmStarted => "vm-started",
            Stage::KernelUp => "kernel-up",
            Stage::InitUp => "init-up",
            Stage::DiskUp => "disk-up",
            Stage::EngineUp => "engine-up",
            Stage::SocketForwarded => "socket-forwarded",
        }
    }
}

/// When a stage was reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub stage: Stage,
    /// Unix time, milliseconds.
    pub at_ms: u64,
    /// Milliseconds since the start was requested.
    pub elapsed_ms: u64,
    /// Guest uptime in seconds when the guest reported it, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_uptime_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineState {
    Stopped,
    Starting,
    Running,
    Stopping,
    Failed,
}

/// What went wrong: the stage that was not reached (or `None` when a running engine died), a
/// message, and the log line that explains it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub stage: Option<Stage>,
    pub message: String,
    pub log_line: Option<String>,
}

/// A host port forwarded to a container port in the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
pub struct PortForward {
    pub host_ip: String,
    pub host_port: u16,
    pub container_id: String,
    /// e.g. "80/tcp"
    pub container_port: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub state: EngineState,
    /// "qemu" or "native"; None while stopped and never started.
    pub backend: Option<String>,
    pub accel: Option<Accel>,
    /// QEMU's pid (VM) or berthd's (native).
    pub pid: Option<u32>,
    /// What to put in DOCKER_HOST.
    pub docker_host: String,
    pub stages: Vec<StageRecord>,
    /// The stages this backend goes through, for progress displays.
    pub expected_stages: Vec<Stage>,
    pub failure: Option<Failure>,
    pub settings: Settings,
    pub ports: Vec<PortForward>,
    pub agent_pid: u32,
    /// What happened to the engine an earlier agent left running: re-attached to, or found
    /// inconsistent and stopped (then the next start boots a fresh VM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When this agent re-attached to a running VM (Unix ms); the stages before
    /// `socket-forwarded` are then the VM's own boot, by the agent that started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reattached_at_ms: Option<u64>,
}

/// Body of `POST /v1/up`: the settings to change before starting.
pub type UpRequest = SettingsPatch;

/// One line of `GET /v1/events` (newline-delimited JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    State { state: EngineState },
    Stage { record: StageRecord },
    Failed { failure: Failure },
    /// A console line of the VM (or berthd's log, native).
    Log { line: String },
    PortOpened { port: PortForward },
    PortClosed { port: PortForward },
}

/// `GET /v1/logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logs {
    pub lines: Vec<String>,
}

/// `GET /v1/diagnostics`: everything a bug report or the Engine screen needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    pub status: Status,
    pub console_tail: Vec<String>,
    pub agent_log_tail: Vec<String>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Error body of every non-2xx answer (the Docker API's shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_patch_validates() {
        let s = Settings::default();
        let p = SettingsPatch { cpus: Some(4), memory_mib: Some(1024), ..Default::default() };
        let n = s.apply(&p).unwrap();
        assert_eq!((n.cpus, n.memory_mib, n.disk_gib), (4, 1024, 64));
        assert!(s.apply(&SettingsPatch { cpus: Some(0), ..Default::default() }).is_err());
        assert!(s.apply(&SettingsPatch { memory_mib: Some(16), ..Default::default() }).is_err());
        assert!(s.apply(&SettingsPatch { shares: Some(vec!["rel".into()]), ..Default::default() }).is_err());
        assert!(s.apply(&SettingsPatch { shares: Some(vec!["/a b".into()]), ..Default::default() }).is_err());
    }

    #[test]
    fn wire_names_are_stable() {
        let e = Event::Stage { record: StageRecord { stage: Stage::SocketForwarded, at_ms: 1, elapsed_ms: 2, guest_uptime_s: None } };
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"type":"stage","record":{"stage":"socket-forwarded","at_ms":1,"elapsed_ms":2}}"#);
        assert_eq!(serde_json::to_string(&EngineState::Failed).unwrap(), r#""failed""#);
        let s: Settings = serde_json::from_str(r#"{"cpus":1}"#).unwrap();
        assert_eq!(s.memory_mib, Settings::default().memory_mib, "missing fields take defaults");
    }
}
