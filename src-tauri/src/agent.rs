//! The host agent (berth-agent: VM or native backend, staged readiness, settings, logs), seen
//! from the app through the agent's own Rust client. When no agent runs (e.g. Linux with
//! `./berth up`), the Engine screen shows berthd's status only and says so.

use std::path::PathBuf;

use berth_agent::api::{SettingsPatch, Status};
use berth_agent::{AgentClient, Home};
use serde::{Deserialize, Serialize};

/// What the Engine screen shows about the agent.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    pub stages: Vec<StageView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<SettingsView>,
    pub logs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageView {
    pub name: String,
    /// "done" or "pending".
    pub state: String,
    /// RFC 3339, when reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsView {
    pub cpus: u32,
    pub memory_mib: u32,
    pub disk_gib: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSettings {
    pub cpus: u32,
    pub memory_mib: u32,
    pub disk_gib: u32,
}

fn client() -> AgentClient {
    AgentClient::for_home(&Home::from_env())
}

/// The agent's forwarded docker socket, when it is there.
pub fn socket() -> Option<PathBuf> {
    let p = Home::from_env().docker_socket();
    p.exists().then_some(p)
}

/// Map the agent's status to the screen's view (pure, unit-tested).
pub fn view(st: &Status, logs: Vec<String>) -> AgentView {
    let mut stages: Vec<StageView> = st
        .stages
        .iter()
        .map(|r| StageView {
            name: r.stage.as_str().to_string(),
            state: "done".into(),
            at: Some(unix_ms_rfc3339(r.at_ms)),
            detail: Some(format!("+{} ms", r.elapsed_ms)),
        })
        .collect();
    for s in &st.expected_stages {
        if !st.stages.iter().any(|r| r.stage == *s) {
            let failed = st.failure.as_ref().and_then(|f| f.stage) == Some(*s);
            stages.push(StageView { name: s.as_str().to_string(), state: if failed { "failed" } else { "pending" }.into(), at: None, detail: None });
        }
    }
    AgentView {
        available: true,
        state: Some(serde_json::to_value(st.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()),
        stages,
        settings: Some(SettingsView { cpus: st.settings.cpus, memory_mib: st.settings.memory_mib, disk_gib: st.settings.disk_gib }),
        logs,
        error: st.failure.as_ref().map(|f| match &f.log_line {
            Some(l) => format!("{}: {l}", f.message),
            None => f.message.clone(),
        }),
    }
}

fn unix_ms_rfc3339(ms: u64) -> String {
    // Days-from-civil: a small conversion instead of a date crate for one timestamp format.
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

pub async fn status() -> AgentView {
    // A VM whose agent is gone (killed, or the app restarted after a crash): start an agent,
    // which re-attaches to it (berth-agent's reattach), instead of showing "no agent".
    let c = match berth_program() {
        Some(program) => AgentClient::connect_or_reattach(&Home::from_env(), &program).await.unwrap_or_else(|_| client()),
        None => client(),
    };
    match c.status().await {
        Ok(st) => {
            let logs = c.logs(30).await.unwrap_or_default();
            view(&st, logs)
        }
        Err(e) => AgentView {
            available: false,
            error: Some(format!("{e}. On Linux berthd can also run natively (`./berth up`); `berth up` starts the agent.")),
            ..Default::default()
        },
    }
}

/// The `berth` CLI next to the app's binary or on PATH: what starts the agent.
fn berth_program() -> Option<PathBuf> {
    let sibling = std::env::current_exe().ok()?.with_file_name("berth");
    if sibling.is_file() {
        return Some(sibling);
    }
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join("berth")).find(|p| p.is_file()))
}

pub async fn action(action: &str) -> Result<(), String> {
    let home = Home::from_env();
    let c = match client().is_running().await {
        true => client(),
        false => {
            let program = berth_program().ok_or("the berth CLI (which starts the agent) was not found next to the app or on PATH")?;
            AgentClient::connect_or_spawn(&home, &program).await.map_err(|e| e.to_string())?
        }
    };
    let r = match action {
        "start" => c.up(&SettingsPatch::default()).await,
        "stop" => c.down().await,
        _ => c.restart().await,
    };
    r.map(|_| ()).map_err(|e| e.to_string())
}

pub async fn apply_settings(s: AgentSettings) -> Result<(), String> {
    let patch = SettingsPatch { cpus: Some(s.cpus), memory_mib: Some(s.memory_mib), disk_gib: Some(s.disk_gib), ..Default::default() };
    client().set_settings(&patch).await.map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(unix_ms_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(unix_ms_rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
