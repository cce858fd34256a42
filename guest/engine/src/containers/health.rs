//! Health checks (`HEALTHCHECK` / `--health-cmd`): run the check inside the container through its
//! shim, keep the last five results, and flip the status between starting, healthy and unhealthy
//! the way Docker does (failures during the start period do not count).

use std::sync::Arc;
use std::time::Duration;

use bollard_stubs::models::{Health, HealthStatusEnum, HealthcheckResult};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::exec::{process_json, ExecRecord};
use super::lifecycle::paths;
use super::store::{Container, Status};
use crate::engine::Engine;

const KEEP_RESULTS: usize = 5;
const MAX_OUTPUT: usize = 4096;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct HealthState {
    /// "starting", "healthy" or "unhealthy".
    pub status: String,
    pub failing_streak: i64,
    pub log: Vec<CheckResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub start: String,
    pub end: String,
    pub exit_code: i64,
    pub output: String,
}

impl HealthState {
    pub fn view(&self) -> Health {
        let status = match self.status.as_str() {
            "healthy" => HealthStatusEnum::HEALTHY,
            "unhealthy" => HealthStatusEnum::UNHEALTHY,
            _ => HealthStatusEnum::STARTING,
        };
        Health {
            status: Some(status),
            failing_streak: Some(self.failing_streak),
            log: Some(
                self.log
                    .iter()
                    .map(|r| HealthcheckResult {
                        start: Some(r.start.clone()),
                        end: Some(r.end.clone()),
                        exit_code: Some(r.exit_code),
                        output: Some(r.output.clone()),
                    })
                    .collect(),
            ),
        }
    }
}

/// The check's command, or None for no check (`NONE`, or none configured).
pub fn check_command(c: &Container) -> Option<Vec<String>> {
    let test = c.config.healthcheck.as_ref()?.test.clone()?;
    match test.first().map(String::as_str) {
        Some("CMD") if test.len() > 1 => Some(test[1..].to_vec()),
        Some("CMD-SHELL") if test.len() > 1 => Some(vec!["/bin/sh".into(), "-c".into(), test[1..].join(" ")]),
        _ => None,
    }
}

fn nanos(v: Option<i64>, default: Duration) -> Duration {
    match v {
        Some(n) if n > 0 => Duration::from_nanos(n as u64),
        _ => default,
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Follow one run of a container (identified by its start time) until it stops.
pub fn monitor(e: Arc<Engine>, c: &Container) {
    let Some(cmd) = check_command(c) else { return };
    let hc = c.config.healthcheck.clone().unwrap_or_default();
    let interval = nanos(hc.interval, Duration::from_secs(30));
    let timeout = nanos(hc.timeout, Duration::from_secs(30));
    let start_period = nanos(hc.start_period, Duration::ZERO);
    let retries = hc.retries.filter(|r| *r > 0).unwrap_or(3);
    let id = c.id.clone();
    let run = c.state.started_at.clone();
    let _ = e.containers.update(&id, |c| {
        c.state.health = Some(HealthState { status: "starting".into(), failing_streak: 0, log: Vec::new() })
    });
    tokio::spawn(async move {
        let began = std::time::Instant::now();
        let mut stop = e.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let Ok(c) = e.containers.get(&id) else { return };
            if c.state.status != Status::Running || c.state.started_at != run {
                return;
            }
            let start = now();
            let (code, output) = match tokio::time::timeout(timeout, run_check(&e, &c, &cmd)).await {
                Ok(Ok(r)) => r,
                Ok(Err(msg)) => (-1, msg),
                Err(_) => (-1, format!("Health check exceeded timeout ({timeout:?})")),
            };
            let result = CheckResult { start, end: now(), exit_code: code, output };
            let in_start_period = began.elapsed() < start_period;
            let changed = e
                .containers
                .update(&id, |c| {
                    let h = c.state.health.get_or_insert_with(HealthState::default);
                    let before = h.status.clone();
                    if code == 0 {
                        h.status = "healthy".into();
                        h.failing_streak = 0;
                    } else if !in_start_period {
                        h.failing_streak += 1;
                        if h.failing_streak >= retries {
                            h.status = "unhealthy".into();
                        }
                    }
                    h.log.push(result);
                    let excess = h.log.len().saturating_sub(KEEP_RESULTS);
                    h.log.drain(..excess);
                    (before != h.status).then(|| h.status.clone())
                })
                .ok()
                .flatten();
            if let (Some(status), Ok(c)) = (changed, e.containers.get(&id)) {
                e.events.container(&format!("health_status: {status}"), &c);
            }
        }
    });
}

/// Run the check once in the container; (exit code, first bytes of its output).
async fn run_check(e: &Arc<Engine>, c: &Container, cmd: &[String]) -> Result<(i64, String), String> {
    let p = paths(e, &c.id);
    let rec = ExecRecord {
        id: String::new(),
        container_id: c.id.clone(),
        cmd: cmd.to_vec(),
        tty: false,
        stdin: false,
        stdout: true,
        stderr: true,
        user: String::new(),
        privileged: false,
        env: Vec::new(),
        working_dir: String::new(),
        running: false,
        started: false,
        exit_code: None,
        pid: 0,
        detach_keys: String::new(),
    };
    let process = process_json(&p.bundle, &rec).map_err(|err| err.to_string())?;
    let exec_id = format!("health-{}", chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0));
    let client = berth_shim::connect(&p.shim_state);
    let (_, mut stream) = client.exec(&exec_id, process, false, false).await.map_err(|err| err.to_string())?;
    // The stream is Docker-framed (8-byte headers); keep the payload, bounded.
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if raw.len() < 4 * MAX_OUTPUT {
                    raw.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut rest = &raw[..];
    while rest.len() >= 8 {
        let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let end = (8 + len).min(rest.len());
        out.extend_from_slice(&rest[8..end]);
        rest = &rest[end..];
    }
    out.truncate(MAX_OUTPUT);
    let status = client.exec_wait(&exec_id).await.map_err(|err| err.to_string())?;
    Ok((status.exit_code as i64, String::from_utf8_lossy(&out).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard_stubs::models::HealthConfig;

    #[test]
    fn check_forms() {
        let mut c: Container = serde_json::from_value(serde_json::json!({
            "id": "a".repeat(64), "name": "x", "created": "", "image_name": "i", "image_id": "sha256:0",
            "config": {}, "host_config": {}, "path": "sh", "args": [],
            "state": {"status": "created", "pid": 0, "exit_code": 0, "oom_killed": false, "error": "",
                      "started_at": null, "finished_at": null, "restart_count": 0}
        }))
        .unwrap();
        assert_eq!(check_command(&c), None);
        c.config.healthcheck = Some(HealthConfig { test: Some(vec!["CMD-SHELL".into(), "test -f /ok".into()]), ..Default::default() });
        assert_eq!(check_command(&c).unwrap(), vec!["/bin/sh", "-c", "test -f /ok"]);
        c.config.healthcheck = Some(HealthConfig { test: Some(vec!["CMD".into(), "true".into()]), ..Default::default() });
        assert_eq!(check_command(&c).unwrap(), vec!["true"]);
        c.config.healthcheck = Some(HealthConfig { test: Some(vec!["NONE".into()]), ..Default::default() });
        assert_eq!(check_command(&c), None);
    }
}
