//! The Tauri commands: each one is a thin call to the Engine API (or the host agent).
//! Paths are built here from validated arguments; the front end never sends a raw path.

use std::sync::Arc;

use futures_util::StreamExt;
use http::Method;
use http_body_util::BodyExt;
use serde::Serialize;
use serde_json::{json, Value};
use tauri::ipc::Channel;
use tauri::{AppHandle, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::engine::{q, seg, Demux, Engine, LineSplitter, Utf8Stream};
use crate::error::{AppError, AppResult};
use crate::state::{AppState, ExecSession};

type St<'a> = State<'a, Arc<AppState>>;

fn id_arg(id: &str) -> AppResult<&str> {
    if id.is_empty() || id.len() > 512 || id.contains(['?', '#']) || id.split('/').any(|p| p == "..") {
        return Err(AppError::Invalid(format!("invalid name or ID {id:?}")));
    }
    Ok(id)
}

// ---------------------------------------------------------------- engine

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineStatus {
    socket: String,
    socket_source: &'static str,
    reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<Value>,
    agent: crate::agent::AgentView,
}

pub async fn status_of(state: &AppState) -> EngineStatus {
    let engine = state.engine();
    let (source, warning) = state.socket_source.read().expect("lock").clone();
    let (version, info) = tokio::join!(engine.get("/version"), engine.get("/info"));
    let (reachable, error) = match (&version, &info) {
        (Ok(_), Ok(_)) => (true, warning),
        (Err(e), _) | (_, Err(e)) => (false, Some(e.to_string())),
    };
    EngineStatus {
        socket: engine.socket().display().to_string(),
        socket_source: source,
        reachable,
        error,
        version: version.ok(),
        info: info.ok(),
        agent: crate::agent::status().await,
    }
}

#[tauri::command]
pub async fn engine_status(state: St<'_>) -> AppResult<EngineStatus> {
    Ok(status_of(&state).await)
}

#[tauri::command]
pub async fn set_docker_host(app: AppHandle, state: St<'_>, host: String) -> AppResult<EngineStatus> {
    let mut s = crate::settings::Settings::load(&state.settings_path);
    s.docker_host = if host.trim().is_empty() {
        None
    } else {
        crate::settings::parse_host(&host)?;
        Some(host.trim().to_string())
    };
    s.save(&state.settings_path)?;
    state.reconfigure();
    crate::events::restart(&app, state.inner().clone());
    Ok(status_of(&state).await)
}

#[tauri::command]
pub async fn agent_action(action: String) -> AppResult<()> {
    if !["start", "stop", "restart"].contains(&action.as_str()) {
        return Err(AppError::Invalid(format!("unknown engine action {action:?}")));
    }
    crate::agent::action(&action).await.map_err(AppError::Agent)
}

#[tauri::command]
pub async fn agent_settings(settings: crate::agent::AgentSettings) -> AppResult<()> {
    if settings.cpus == 0 || settings.memory_mib < 256 || settings.disk_gib == 0 {
        return Err(AppError::Invalid("CPUs must be at least 1, memory at least 256 MiB, disk at least 1 GiB".into()));
    }
    crate::agent::apply_settings(settings).await.map_err(AppError::Agent)
}

// ---------------------------------------------------------------- containers

/// `/containers/json?all=1`, with `StartedAt` added to running containers (from inspect) so
/// the list can show a live uptime without asking the engine again.
pub async fn list_containers(engine: &Engine) -> AppResult<Value> {
    let mut list = engine.get("/containers/json?all=1").await?;
    let Some(items) = list.as_array_mut() else { return Ok(list) };
    let running: Vec<(usize, String)> = items
        .iter()
        .enumerate()
        .filter(|(_, c)| c["State"] == "running")
        .filter_map(|(i, c)| c["Id"].as_str().map(|id| (i, id.to_string())))
        .collect();
    let started: Vec<(usize, Option<String>)> = futures_util::stream::iter(running)
        .map(|(i, id)| async move {
            let v = engine.get(&format!("/containers/{}/json", seg(&id))).await.ok();
            (i, v.and_then(|v| v["State"]["StartedAt"].as_str().map(str::to_string)))
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (i, s) in started {
        if let Some(s) = s {
            items[i]["StartedAt"] = Value::String(s);
        }
    }
    Ok(list)
}

#[tauri::command]
pub async fn containers_list(state: St<'_>) -> AppResult<Value> {
    list_containers(&state.engine()).await
}

#[tauri::command]
pub async fn container_inspect(state: St<'_>, id: String) -> AppResult<Value> {
    Ok(state.engine().get(&format!("/containers/{}/json", seg(id_arg(&id)?))).await?)
}

#[tauri::command]
pub async fn container_action(state: St<'_>, id: String, action: String) -> AppResult<()> {
    if !["start", "stop", "restart", "pause", "unpause", "kill"].contains(&action.as_str()) {
        return Err(AppError::Invalid(format!("unknown container action {action:?}")));
    }
    state.engine().post(&format!("/containers/{}/{action}", seg(id_arg(&id)?)), None).await?;
    Ok(())
}

#[tauri::command]
pub async fn container_remove(state: St<'_>, id: String, force: bool) -> AppResult<()> {
    state.engine().delete(&format!("/containers/{}?force={force}&v=false", seg(id_arg(&id)?))).await?;
    Ok(())
}

/// Create and start in one step, as `docker run -d` does. A failed start leaves the created
/// container (as the CLI does) and returns the engine's message.
#[tauri::command]
pub async fn container_run(state: St<'_>, name: String, body: Value) -> AppResult<String> {
    if !body.is_object() || !body["Image"].is_string() {
        return Err(AppError::Invalid("the run request needs an Image".into()));
    }
    let engine = state.engine();
    let path = if name.is_empty() { "/containers/create".to_string() } else { format!("/containers/create?name={}", q(&name)) };
    let created = engine.post(&path, Some(&body)).await?;
    let id = created["Id"].as_str().ok_or_else(|| AppError::Invalid("the engine returned no container ID".into()))?.to_string();
    engine.post(&format!("/containers/{}/start", seg(&id)), None).await?;
    Ok(id)
}

#[tauri::command]
pub async fn unsubscribe(state: St<'_>, sub: u64) -> AppResult<()> {
    state.end_sub(sub);
    Ok(())
}

#[derive(Serialize, Clone)]
pub struct LogLine {
    stream: &'static str,
    line: String,
}

#[derive(Serialize, Clone)]
#[serde(untagged)]
pub enum LogBatch {
    Lines { lines: Vec<LogLine> },
    End { end: bool, #[serde(skip_serializing_if = "Option::is_none")] error: Option<String> },
}

/// Lines from a log body: demultiplexed unless the container has a TTY, split per stream.
pub struct LogDecoder {
    tty: bool,
    demux: Demux,
    partial: [Vec<u8>; 2],
}

impl LogDecoder {
    pub fn new(tty: bool) -> LogDecoder {
        LogDecoder { tty, demux: Demux::default(), partial: [Vec::new(), Vec::new()] }
    }

    pub fn push(&mut self, data: &[u8]) -> Vec<LogLine> {
        let frames = if self.tty { vec![(1u8, data.to_vec())] } else { self.demux.push(data) };
        let mut out = Vec::new();
        for (stream, payload) in frames {
            let k = if stream == 2 { 1 } else { 0 };
            self.partial[k].extend_from_slice(&payload);
            while let Some(i) = self.partial[k].iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.partial[k].drain(..=i).collect();
                let text = String::from_utf8_lossy(&raw[..raw.len() - 1]).trim_end_matches('\r').to_string();
                out.push(LogLine { stream: if k == 1 { "stderr" } else { "stdout" }, line: text });
            }
        }
        out
    }

    pub fn finish(&mut self) -> Vec<LogLine> {
        let mut out = Vec::new();
        for k in 0..2 {
            if !self.partial[k].is_empty() {
                let text = String::from_utf8_lossy(&std::mem::take(&mut self.partial[k])).into_owned();
                out.push(LogLine { stream: if k == 1 { "stderr" } else { "stdout" }, line: text });
            }
        }
        out
    }
}

#[tauri::command]
pub async fn container_logs(state: St<'_>, id: String, tail: u32, follow: bool, channel: Channel<LogBatch>) -> AppResult<u64> {
    let engine = state.engine();
    let id = id_arg(&id)?.to_string();
    let info = engine.get(&format!("/containers/{}/json", seg(&id))).await?;
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let path = format!("/containers/{}/logs?stdout=1&stderr=1&timestamps=1&tail={tail}&follow={}", seg(&id), follow as u8);
    let resp = engine.send(Method::GET, &path, None).await?;
    let sub = state.next_id();
    let st = state.inner().clone();
    let task = tokio::spawn(async move {
        let mut body = resp.into_body();
        let mut dec = LogDecoder::new(tty);
        let mut error = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(data) = f.data_ref() {
                        let lines = dec.push(data);
                        if !lines.is_empty() && channel.send(LogBatch::Lines { lines }).is_err() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    error = Some(format!("log stream ended: {e}"));
                    break;
                }
            }
        }
        let rest = dec.finish();
        if !rest.is_empty() {
            let _ = channel.send(LogBatch::Lines { lines: rest });
        }
        let _ = channel.send(LogBatch::End { end: true, error });
        st.forget_sub(sub);
    });
    state.add_sub(sub, task.abort_handle());
    Ok(sub)
}

/// Forward a JSON-lines body to a channel, one parsed value per line.
async fn forward_json_lines(resp: http::Response<hyper::body::Incoming>, channel: &Channel<Value>) -> Result<(), String> {
    let mut body = resp.into_body();
    let mut lines = LineSplitter::default();
    while let Some(frame) = body.frame().await {
        let f = frame.map_err(|e| e.to_string())?;
        if let Some(data) = f.data_ref() {
            for l in lines.push(data) {
                if let Ok(v) = serde_json::from_slice::<Value>(&l) {
                    channel.send(v).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    if let Some(l) = lines.finish() {
        if let Ok(v) = serde_json::from_slice::<Value>(&l) {
            channel.send(v).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

#[tauri::command]
pub async fn container_stats(state: St<'_>, id: String, channel: Channel<Value>) -> AppResult<u64> {
    let path = format!("/containers/{}/stats?stream=1", seg(id_arg(&id)?));
    let resp = state.engine().send(Method::GET, &path, None).await?;
    let sub = state.next_id();
    let st = state.inner().clone();
    let task = tokio::spawn(async move {
        let r = forward_json_lines(resp, &channel).await;
        let _ = channel.send(json!({"end": true, "error": r.err()}));
        st.forget_sub(sub);
    });
    state.add_sub(sub, task.abort_handle());
    Ok(sub)
}

// ---------------------------------------------------------------- exec

#[derive(Serialize, Clone)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ExecOutput {
    Data { data: String },
    Exit { code: Option<i64> },
    Error { message: String },
}

/// Start an interactive exec with a TTY (`sh` by default) and stream it both ways: output to
/// `channel`, keystrokes through [`exec_input`], size through [`exec_resize`].
#[tauri::command]
pub async fn exec_open(state: St<'_>, id: String, cmd: Vec<String>, cols: u16, rows: u16, channel: Channel<ExecOutput>) -> AppResult<u64> {
    let engine = state.engine();
    let cmd = if cmd.is_empty() { vec!["/bin/sh".to_string()] } else { cmd };
    let created = engine
        .post(
            &format!("/containers/{}/exec", seg(id_arg(&id)?)),
            Some(&json!({
                "AttachStdin": true, "AttachStdout": true, "AttachStderr": true, "Tty": true,
                "Cmd": cmd, "Env": ["TERM=xterm-256color"], "ConsoleSize": [rows.max(1), cols.max(1)],
            })),
        )
        .await?;
    let exec_id = created["Id"].as_str().ok_or_else(|| AppError::Invalid("the engine returned no exec ID".into()))?.to_string();
    let io = engine
        .upgrade(&format!("/exec/{}/start", seg(&exec_id)), &json!({"Detach": false, "Tty": true, "ConsoleSize": [rows.max(1), cols.max(1)]}))
        .await?;
    let _ = engine.post(&format!("/exec/{}/resize?h={}&w={}", seg(&exec_id), rows.max(1), cols.max(1)), None).await;
    let (mut rd, mut wr) = tokio::io::split(io);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
    let session = state.next_id();
    let st = state.inner().clone();
    let exec_for_task = exec_id.clone();
    let task = tokio::spawn(async move {
        let writer = tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if wr.write_all(&data).await.is_err() {
                    break;
                }
                let _ = wr.flush().await;
            }
            let _ = wr.shutdown().await;
        });
        let mut buf = vec![0u8; 16 * 1024];
        let mut utf8 = Utf8Stream::default();
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    let s = utf8.push(&buf[..n]);
                    if !s.is_empty() && channel.send(ExecOutput::Data { data: s }).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = channel.send(ExecOutput::Error { message: e.to_string() });
                    break;
                }
            }
        }
        writer.abort();
        let code = engine.get(&format!("/exec/{}/json", seg(&exec_for_task))).await.ok().and_then(|v| v["ExitCode"].as_i64());
        let _ = channel.send(ExecOutput::Exit { code });
        st.sessions.lock().expect("sessions lock").remove(&session);
    });
    state.sessions.lock().expect("sessions lock").insert(session, ExecSession { exec_id, input: tx, task: task.abort_handle() });
    Ok(session)
}

#[tauri::command]
pub async fn exec_input(state: St<'_>, session: u64, data: String) -> AppResult<()> {
    let tx = state.sessions.lock().expect("sessions lock").get(&session).map(|s| s.input.clone());
    let tx = tx.ok_or_else(|| AppError::Gone("the terminal session has ended".into()))?;
    tx.send(data.into_bytes()).await.map_err(|_| AppError::Gone("the terminal session has ended".into()))
}

#[tauri::command]
pub async fn exec_resize(state: St<'_>, session: u64, cols: u16, rows: u16) -> AppResult<()> {
    let exec_id = state.sessions.lock().expect("sessions lock").get(&session).map(|s| s.exec_id.clone());
    let exec_id = exec_id.ok_or_else(|| AppError::Gone("the terminal session has ended".into()))?;
    state.engine().post(&format!("/exec/{}/resize?h={}&w={}", seg(&exec_id), rows.max(1), cols.max(1)), None).await?;
    Ok(())
}

/// Close the terminal: dropping the stream ends the shell's input (it sees EOF and exits).
#[tauri::command]
pub async fn exec_close(state: St<'_>, session: u64) -> AppResult<()> {
    if let Some(s) = state.sessions.lock().expect("sessions lock").remove(&session) {
        s.task.abort();
    }
    Ok(())
}

// ---------------------------------------------------------------- images

#[tauri::command]
pub async fn images_list(state: St<'_>) -> AppResult<Value> {
    Ok(state.engine().get("/images/json").await?)
}

#[tauri::command]
pub async fn image_inspect(state: St<'_>, id: String) -> AppResult<Value> {
    Ok(state.engine().get(&format!("/images/{}/json", seg(id_arg(&id)?))).await?)
}

#[tauri::command]
pub async fn image_remove(state: St<'_>, id: String, force: bool) -> AppResult<Value> {
    Ok(state.engine().delete(&format!("/images/{}?force={force}", seg(id_arg(&id)?))).await?)
}

#[tauri::command]
pub async fn images_prune(state: St<'_>) -> AppResult<Value> {
    Ok(state.engine().post("/images/prune", None).await?)
}

/// `docker pull`: progress messages go to `channel` as the engine sends them; resolves when
/// the pull ends (an error message in the stream is also returned as the error).
#[tauri::command]
pub async fn image_pull(state: St<'_>, reference: String, channel: Channel<Value>) -> AppResult<()> {
    let reference = reference.trim();
    if reference.is_empty() || reference.contains(char::is_whitespace) {
        return Err(AppError::Invalid(format!("invalid image reference {reference:?}")));
    }
    // fromImage carries the whole reference; the engine splits off the tag or digest.
    let resp = state.engine().send(Method::POST, &format!("/images/create?fromImage={}", q(reference)), None).await?;
    let mut body = resp.into_body();
    let mut lines = LineSplitter::default();
    let mut error = None;
    while let Some(frame) = body.frame().await {
        let f = frame.map_err(|e| AppError::Engine(crate::engine::EngineError::Http(e.to_string())))?;
        if let Some(data) = f.data_ref() {
            for l in lines.push(data) {
                if let Ok(v) = serde_json::from_slice::<Value>(&l) {
                    if let Some(m) = v["errorDetail"]["message"].as_str().or(v["error"].as_str()) {
                        error = Some(m.to_string());
                    }
                    let _ = channel.send(v);
                }
            }
        }
    }
    let _ = channel.send(json!({"end": true}));
    match error {
        Some(message) => Err(AppError::Engine(crate::engine::EngineError::Api { status: 500, message })),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------- volumes and networks

#[tauri::command]
pub async fn volumes_list(state: St<'_>) -> AppResult<Value> {
    Ok(state.engine().get("/volumes").await?)
}

#[tauri::command]
pub async fn volume_create(state: St<'_>, name: String) -> AppResult<Value> {
    let body = if name.trim().is_empty() { json!({}) } else { json!({"Name": name.trim()}) };
    Ok(state.engine().post("/volumes/create", Some(&body)).await?)
}

#[tauri::command]
pub async fn volume_inspect(state: St<'_>, name: String) -> AppResult<Value> {
    Ok(state.engine().get(&format!("/volumes/{}", seg(id_arg(&name)?))).await?)
}

#[tauri::command]
pub async fn volume_remove(state: St<'_>, name: String, force: bool) -> AppResult<()> {
    state.engine().delete(&format!("/volumes/{}?force={force}", seg(id_arg(&name)?))).await?;
    Ok(())
}

#[tauri::command]
pub async fn volumes_prune(state: St<'_>) -> AppResult<Value> {
    // API >= 1.42 prunes only anonymous volumes unless all=true; the GUI means "unused".
    Ok(state.engine().post(&format!("/volumes/prune?filters={}", q(r#"{"all":["true"]}"#)), None).await?)
}

#[tauri::command]
pub async fn networks_list(state: St<'_>) -> AppResult<Value> {
    Ok(state.engine().get("/networks").await?)
}

#[tauri::command]
pub async fn network_create(state: St<'_>, name: String, driver: String) -> AppResult<Value> {
    if name.trim().is_empty() {
        return Err(AppError::Invalid("a network needs a name".into()));
    }
    let driver = if driver.is_empty() { "bridge".to_string() } else { driver };
    Ok(state.engine().post("/networks/create", Some(&json!({"Name": name.trim(), "Driver": driver}))).await?)
}

#[tauri::command]
pub async fn network_inspect(state: St<'_>, id: String) -> AppResult<Value> {
    Ok(state.engine().get(&format!("/networks/{}", seg(id_arg(&id)?))).await?)
}

#[tauri::command]
pub async fn network_remove(state: St<'_>, id: String) -> AppResult<()> {
    state.engine().delete(&format!("/networks/{}", seg(id_arg(&id)?))).await?;
    Ok(())
}

#[tauri::command]
pub async fn networks_prune(state: St<'_>) -> AppResult<Value> {
    Ok(state.engine().post("/networks/prune", None).await?)
}

// ---------------------------------------------------------------- misc

/// Open a published port in the browser: only http(s) URLs, never files or other schemes.
#[tauri::command]
pub async fn open_url(url: String) -> AppResult<()> {
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(char::is_whitespace) {
        return Err(AppError::Invalid(format!("refusing to open {url:?}: only http and https links")));
    }
    open::that_detached(&url).map_err(|e| AppError::Invalid(format!("cannot open a browser for {url}: {e}")))
}

#[tauri::command]
pub fn bench_config() -> Value {
    json!({"enabled": crate::bench::enabled()})
}

#[tauri::command]
pub fn bench_mark(app: AppHandle, label: String, data: Value) {
    crate::bench::mark(&app, &label, data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_decoder_demuxes_and_splits_lines() {
        let mut d = LogDecoder::new(false);
        let mut data = vec![1, 0, 0, 0, 0, 0, 0, 8];
        data.extend_from_slice(b"a\nb\r\npar");
        data.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 4]);
        data.extend_from_slice(b"err\n");
        let lines = d.push(&data);
        let got: Vec<(&str, &str)> = lines.iter().map(|l| (l.stream, l.line.as_str())).collect();
        assert_eq!(got, vec![("stdout", "a"), ("stdout", "b"), ("stderr", "err")]);
        let rest = d.finish();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].line, "par");
        let mut t = LogDecoder::new(true);
        assert_eq!(t.push(b"x\ny\n").len(), 2);
    }

    #[test]
    fn ids_are_checked() {
        assert!(id_arg("web").is_ok());
        assert!(id_arg("127.0.0.1:5000/web:latest").is_ok());
        assert!(id_arg("").is_err());
        assert!(id_arg("a?b").is_err());
        assert!(id_arg("../../x").is_err());
    }
}
