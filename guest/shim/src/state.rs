//! Files the shim leaves in its state directory (`shim.json`, `exit.json`).
//!
//! They are the contract that survives berthd: written atomically (temp file +
//! rename) so a reader never sees half a document.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Written once the container is running.
pub const SHIM_JSON: &str = "shim.json";
/// Written when the container exited or could not be started.
pub const EXIT_JSON: &str = "exit.json";
/// Control socket.
pub const SHIM_SOCK: &str = "shim.sock";

/// Content of `shim.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShimInfo {
    pub id: String,
    pub shim_pid: i32,
    pub init_pid: i32,
    pub started_at: DateTime<Utc>,
    /// Start time of the shim process in clock ticks since boot (field 22 of
    /// /proc/PID/stat): tells a live shim from an unrelated process that
    /// reused its pid after a reboot or a long time.
    pub shim_start_ticks: u64,
    pub tty: bool,
}

/// Content of `exit.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Docker semantics: the exit code, or 128+signal when killed by a signal.
    pub exit_code: i32,
    #[serde(default)]
    pub signal: Option<i32>,
    pub finished_at: DateTime<Utc>,
    #[serde(default)]
    pub oom_killed: bool,
    /// Set when the runtime could not create or start the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Write `bytes` to `path` so that readers see either the old or the new file.
///
/// No fsync: these files live in the exec root (a tmpfs at /run, gone at reboot by design) and
/// only have to survive a crash of berthd or the shim, which the rename alone guarantees. An
/// fsync here would cost milliseconds on every container start and exit for nothing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
    }
    fs::rename(&tmp, path)
}

/// `shim.json` of a state directory, if present and valid.
pub fn read_shim_info(state_dir: &Path) -> Option<ShimInfo> {
    serde_json::from_slice(&fs::read(state_dir.join(SHIM_JSON)).ok()?).ok()
}

/// `exit.json` of a state directory, if the container has exited (or failed to start).
pub fn read_exit(state_dir: &Path) -> Option<ExitStatus> {
    serde_json::from_slice(&fs::read(state_dir.join(EXIT_JSON)).ok()?).ok()
}

/// Fields of /proc/PID/stat after the command name (which may contain spaces
/// and parentheses, hence the split at the last ')').
fn proc_stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Start time (clock ticks since boot) of a process.
pub fn proc_start_ticks(pid: i32) -> Option<u64> {
    // Field 22 overall; fields after ')' start at field 3.
    proc_stat_fields(pid)?.get(22 - 3)?.parse().ok()
}

/// Whether the shim recorded in `state_dir` is still running: its pid exists,
/// is not a zombie, and has the start time recorded in `shim.json`.
pub fn is_alive(state_dir: &Path) -> bool {
    let Some(info) = read_shim_info(state_dir) else {
        return false;
    };
    let Some(fields) = proc_stat_fields(info.shim_pid) else {
        return false;
    };
    let state = fields.first().map(String::as_str).unwrap_or("");
    state != "Z" && state != "X" && fields.get(19).and_then(|t| t.parse().ok()) == Some(info.shim_start_ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let exit = ExitStatus { exit_code: 137, signal: Some(9), finished_at: Utc::now(), oom_killed: false, error: None };
        write_atomic(&dir.path().join(EXIT_JSON), &serde_json::to_vec(&exit).unwrap()).unwrap();
        assert_eq!(read_exit(dir.path()), Some(exit));
        // no temp file left behind
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn is_alive_checks_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        let ticks = proc_start_ticks(me).unwrap();
        let mut info = ShimInfo { id: "x".into(), shim_pid: me, init_pid: me, started_at: Utc::now(), shim_start_ticks: ticks, tty: false };
        write_atomic(&dir.path().join(SHIM_JSON), &serde_json::to_vec(&info).unwrap()).unwrap();
        assert!(is_alive(dir.path()));
        info.shim_start_ticks = ticks + 1;
        write_atomic(&dir.path().join(SHIM_JSON), &serde_json::to_vec(&info).unwrap()).unwrap();
        assert!(!is_alive(dir.path()), "pid reused by another process must not count");
        assert!(!is_alive(&dir.path().join("missing")));
    }
}
