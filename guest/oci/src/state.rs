//! Container state under `--root`: `<root>/<id>/state.json` plus the `exec.fifo` a created
//! container's init blocks on until `start`. The status is derived, as runc does: the init is
//! gone -> stopped; the fifo still exists -> created; the freezer says so -> paused; else
//! running. A recorded process start time tells the init from an unrelated reused pid.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;
use crate::OciError;

pub const STATE_JSON: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub pid: i32,
    /// Field 22 of /proc/PID/stat at create time.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub cgroup: Cgroup,
    /// Namespace paths of the init (/proc/PID/ns/*) are derived; kept for `exec`.
    #[serde(default)]
    pub annotations: std::collections::HashMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

/// `state` output, field for field what runc prints.
#[derive(Debug, Serialize)]
pub struct StateOut<'a> {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'static str,
    pub id: &'a str,
    pub pid: i32,
    pub status: Status,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub created: &'a str,
    pub owner: &'static str,
}

pub fn dir(root: &Path, id: &str) -> Result<PathBuf, OciError> {
    if id.is_empty() || id.contains('/') || id.starts_with('.') || id.len() > 1024 {
        return Err(OciError::Invalid(format!("invalid container id {id:?}")));
    }
    Ok(root.join(id))
}

/// Start time (clock ticks since boot) of `pid`, None if it is gone or a zombie.
pub fn proc_start(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    if matches!(f.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    f.get(19)?.parse().ok()
}

impl State {
    pub fn load(root: &Path, id: &str) -> Result<State, OciError> {
        let d = dir(root, id)?;
        let data = fs::read(d.join(STATE_JSON)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => OciError::NotFound(id.to_string()),
            _ => OciError::Io(format!("reading state of {id}"), e),
        })?;
        serde_json::from_slice(&data).map_err(|e| OciError::Invalid(format!("state of {id}: {e}")))
    }

    /// Atomic write (temp + rename) so a concurrent `state` never reads half a file.
    pub fn save(&self, root: &Path) -> Result<(), OciError> {
        let d = dir(root, &self.id)?;
        let tmp = d.join(".state.json.tmp");
        let data = serde_json::to_vec(self).map_err(|e| OciError::Invalid(e.to_string()))?;
        (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&data)?;
            fs::rename(&tmp, d.join(STATE_JSON))
        })()
        .map_err(|e| OciError::Io("writing state".into(), e))
    }

    pub fn alive(&self) -> bool {
        self.pid > 0 && proc_start(self.pid) == Some(self.pid_start)
    }

    pub fn status(&self, root: &Path) -> Status {
        if !self.alive() {
            return Status::Stopped;
        }
        if root.join(&self.id).join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        if self.cgroup.is_frozen() {
            return Status::Paused;
        }
        Status::Running
    }
}

/// `--log FILE --log-format json`: runc-style lines that berth-shim and berth-runtime read back
/// (`{"level":"error","msg":...,"time":...}`).
pub fn log_error(log: Option<&Path>, json: bool, msg: &str) {
    // With --log the error goes there only: during `create` our stderr is the container's, and
    // the caller (berth-shim) reports the logged message itself.
    let Some(p) = log else {
        eprintln!("berth-oci: {msg}");
        return;
    };
    let line = if json {
        serde_json::json!({"level": "error", "msg": msg, "time": chrono::Utc::now().to_rfc3339()}).to_string()
    } else {
        format!("berth-oci: {msg}")
    };
    if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(p) {
        let _ = writeln!(f, "{line}");
    }
}
