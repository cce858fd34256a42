//! The host agent (VM/native backends, staged readiness, settings, logs), seen from the app.
//!
//! The agent crate (`berth-agent`, src-tauri/agent) is being built in parallel; until it lands
//! on main the app reports "no agent" and the Engine screen shows berthd's own status only.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What the Engine screen shows about the agent.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSettings {
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

/// The agent's forwarded docker socket, when an agent is running.
pub fn socket() -> Option<PathBuf> {
    None
}

pub async fn status() -> AgentView {
    AgentView {
        available: false,
        error: Some(
            "No host agent in this build yet: on Linux berthd runs natively (`./berth up`); the VM agent for macOS and Windows arrives with berth-agent."
                .into(),
        ),
    }
}

pub async fn action(action: &str) -> Result<(), String> {
    Err(format!("cannot {action} the engine: no host agent is running (on Linux: ./berth up / ./berth down)"))
}

pub async fn apply_settings(_s: AgentSettings) -> Result<(), String> {
    Err("no host agent is running: CPU, memory and disk settings apply to the Berth VM".into())
}
