//! `docker exec`: create, start (hijacked stream), inspect, resize.
//!
//! The process runs under the container's shim (`runc exec`), so it is reaped there and its exit
//! code is known even when nobody is attached; berthd keeps the records in memory like Docker.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::lifecycle::paths;
use super::store::{Container, Status};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::http_util::{full, json, ok_json, status_only, Body, Query};

/// One exec instance.
#[derive(Debug, Clone)]
pub struct ExecRecord {
    pub id: String,
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub user: String,
    pub privileged: bool,
    pub env: Vec<String>,
    pub working_dir: String,
    pub running: bool,
    pub started: bool,
    pub exit_code: Option<i64>,
    pub pid: i64,
    /// As given at create (empty: Docker's default, ctrl-p ctrl-q).
    pub detach_keys: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateBody {
    #[serde(default)]
    attach_stdin: bool,
    #[serde(default)]
    attach_stdout: bool,
    #[serde(default)]
    attach_stderr: bool,
    #[serde(default)]
    tty: bool,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    privileged: bool,
    /// docker-py sends `detachKeys`; Docker's JSON decoding ignores case.
    #[serde(default, alias = "detachKeys")]
    detach_keys: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartBody {
    #[serde(default)]
    detach: bool,
    /// Docker frames the output by this flag, not by the exec's own Tty: a TTY exec started
    /// with Tty false (docker-py's and bollard's default) gets multiplexed stdout frames.
    #[serde(default)]
    tty: bool,
    #[serde(default)]
    console_size: Option<Vec<u16>>,
}

fn running(s: &Status) -> bool {
    matches!(s, Status::Running | Status::Paused | Status::Restarting)
}

/// POST /containers/{id}/exec
pub async fn create(e: &Arc<Engine>, key: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: CreateBody = crate::images::read_json(req, 1024 * 1024).await?;
    let c = e.containers.get(key)?;
    if !running(&c.state.status) {
        return Err(ApiError::Conflict(format!("container {} is not running", c.id)));
    }
    let cmd = body.cmd.unwrap_or_default();
    if cmd.is_empty() {
        return Err(ApiError::bad("No exec command specified"));
    }
    let detach_keys = body.detach_keys.unwrap_or_default();
    super::parse_detach_keys(&detach_keys)?;
    let id = super::random_id()?;
    let rec = ExecRecord {
        id: id.clone(),
        container_id: c.id.clone(),
        cmd: cmd.clone(),
        tty: body.tty,
        stdin: body.attach_stdin,
        stdout: body.attach_stdout,
        stderr: body.attach_stderr,
        user: body.user.unwrap_or_default(),
        privileged: body.privileged,
        env: body.env.unwrap_or_default(),
        working_dir: body.working_dir.unwrap_or_default(),
        running: false,
        started: false,
        exit_code: None,
        pid: 0,
        detach_keys,
    };
    e.execs.lock().expect("execs").insert(id.clone(), rec);
    e.events.container(&format!("exec_create: {}", cmd.join(" ")), &c);
    Ok(json(StatusCode::CREATED, &json!({ "Id": id })))
}

fn get(e: &Engine, id: &str) -> Result<ExecRecord, ApiError> {
    e.execs.lock().expect("execs").get(id).cloned().ok_or_else(|| ApiError::NotFound(format!("No such exec instance: {id}")))
}

fn update(e: &Engine, id: &str, f: impl FnOnce(&mut ExecRecord)) {
    if let Some(r) = e.execs.lock().expect("execs").get_mut(id) {
        f(r);
    }
}

/// The exec's OCI process: the container's own (env, user, cwd, capabilities, rlimits) with the
/// exec's command and overrides.
pub(crate) fn process_json(bundle: &std::path::Path, rec: &ExecRecord) -> Result<Value, ApiError> {
    let cfg: Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json")).map_err(ApiError::internal)?)
        .map_err(ApiError::internal)?;
    let mut p = cfg["process"].clone();
    if !p.is_object() {
        return Err(ApiError::internal("container config has no process"));
    }
    p["args"] = json!(rec.cmd);
    p["terminal"] = json!(rec.tty);
    let mut env: Vec<String> = p["env"].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default();
    for kv in &rec.env {
        let key = kv.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    if rec.tty && !env.iter().any(|x| x.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    if !rec.working_dir.is_empty() {
        p["cwd"] = json!(rec.working_dir);
    }
    if !rec.user.is_empty() {
        let u = berth_runtime::user::resolve(&bundle.join("rootfs"), &rec.user, &[]).map_err(|err| ApiError::bad(err.to_string()))?;
        p["user"] = json!({ "uid": u.user.uid, "gid": u.user.gid, "additionalGids": u.user.additional_gids });
        let home = if u.home.is_empty() { "/".to_string() } else { u.home };
        env.retain(|x| !x.starts_with("HOME="));
        env.push(format!("HOME={home}"));
    }
    p["env"] = json!(env);
    if let Some(o) = p.as_object_mut() {
        o.remove("consoleSize");
    }
    Ok(p)
}

/// POST /exec/{id}/start
pub async fn start(e: &Arc<Engine>, id: &str, mut req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let rec = get(e, id)?;
    let upgrade = req.headers().get(header::UPGRADE).is_some();
    let settle = super::hijack_settle(&req);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body: StartBody = crate::images::read_json(req, 64 * 1024).await.unwrap_or_default();
    if rec.started {
        return Err(ApiError::Conflict(format!("exec {id} has already been started")));
    }
    let c = e.containers.get(&rec.container_id)?;
    if !running(&c.state.status) {
        return Err(ApiError::Conflict(format!("container {} is not running", c.id)));
    }
    let p = paths(e, &c.id);
    let process = process_json(&p.bundle, &rec)?;
    let shim = berth_shim::connect(&p.shim_state);
    let (pid, stream) = match shim.exec(id, process, rec.tty, rec.stdin && !body.detach).await {
        Ok(v) => v,
        // As in Docker, an attached client gets the runtime's refusal in its stream, and the
        // exec's exit code says why (the CLI exits with it).
        Err(berth_shim::ClientError::Shim(m)) if !body.detach => {
            let code = START_FAILURE_CODE;
            update(e, id, |r| {
                r.started = true;
                r.running = false;
                r.exit_code = Some(code);
            });
            announce_exit(e, &c, id, code);
            let raw = rec.tty && body.tty;
            let msg = format!("{m}\r\n").into_bytes();
            let msg = if raw { msg } else { berth_shim::frame(1, &msg) };
            if !upgrade {
                return Ok(Response::new(full(Bytes::from(msg))));
            }
            super::send_upgraded_then_close(on_upgrade, settle, msg);
            return Ok(super::upgraded_response(raw));
        }
        Err(berth_shim::ClientError::Shim(m)) => return Err(ApiError::bad(m)),
        Err(other) => return Err(ApiError::internal(other)),
    };
    update(e, id, |r| {
        r.started = true;
        r.running = true;
        r.pid = pid as i64;
    });
    e.events.container(&format!("exec_start: {}", rec.cmd.join(" ")), &c);
    if let Some([h, w]) = body.console_size.as_deref().map(|s| [s.first().copied().unwrap_or(0), s.get(1).copied().unwrap_or(0)]) {
        if rec.tty && h > 0 && w > 0 {
            let _ = shim.exec_resize(id, h, w).await;
        }
    }
    let (e2, id2) = (Arc::clone(e), id.to_string());
    if body.detach {
        tokio::spawn(async move {
            let mut stream = stream;
            let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
            finish(&e2, &id2).await;
        });
        return Ok(status_only(StatusCode::OK));
    }
    let want_upgrade = upgrade;
    let frame_output = rec.tty && !body.tty;
    let raw_stream = rec.tty && body.tty;
    tokio::spawn(async move {
        let mut remote = stream;
        if !want_upgrade {
            let _ = tokio::io::copy(&mut remote, &mut tokio::io::sink()).await;
            finish(&e2, &id2).await;
            return;
        }
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(err) => {
                tracing::debug!("exec upgrade failed: {err}");
                let _ = tokio::io::copy(&mut remote, &mut tokio::io::sink()).await;
                finish(&e2, &id2).await;
                return;
            }
        };
        if let Some(d) = settle {
            tokio::time::sleep(d).await;
        }
        let mut client = TokioIo::new(upgraded);
        let keys = if rec.stdin { super::parse_detach_keys(&rec.detach_keys).ok() } else { None };
        if super::splice(&mut client, &mut remote, keys.as_deref(), frame_output).await {
            // Detached: the client goes now; the process runs on, its output drained, and its
            // exit is recorded when it comes.
            let _ = client.shutdown().await;
            drop(client);
            let _ = tokio::io::copy(&mut remote, &mut tokio::io::sink()).await;
            finish(&e2, &id2).await;
            return;
        }
        // The exit code must be recorded before the client sees the end of the stream: the CLI
        // inspects the exec right after.
        finish(&e2, &id2).await;
        let _ = client.shutdown().await;
    });
    if upgrade {
        return Ok(super::upgraded_response(raw_stream));
    }
    Ok(Response::new(full(Bytes::new())))
}

/// The exit code of an exec the runtime could not start, missing command or not: Docker's is
/// 126 (its own client's test suite checks it), where `docker run` of a missing command is 127.
const START_FAILURE_CODE: i64 = 126;

/// Record the exit of a finished exec and announce it.
async fn finish(e: &Arc<Engine>, id: &str) {
    let Ok(rec) = get(e, id) else { return };
    let shim = berth_shim::connect(&paths(e, &rec.container_id).shim_state);
    let code = match shim.exec_wait(id).await {
        Ok(s) => s.exit_code as i64,
        Err(err) => {
            tracing::debug!(%id, "exec wait: {err}");
            137
        }
    };
    update(e, id, |r| {
        r.running = false;
        r.exit_code = Some(code);
    });
    if let Ok(c) = e.containers.get(&rec.container_id) {
        announce_exit(e, &c, id, code);
    }
}

/// Docker's `exec_die` event of exec `id` in container `c`.
fn announce_exit(e: &Engine, c: &Container, id: &str, code: i64) {
    let mut attrs = HashMap::new();
    attrs.insert("execID".to_string(), id.to_string());
    attrs.insert("exitCode".to_string(), code.to_string());
    e.events.container_with("exec_die", c, attrs);
}

/// GET /exec/{id}/json
pub async fn inspect(e: &Arc<Engine>, id: &str) -> Result<Response<Body>, ApiError> {
    let r = get(e, id)?;
    Ok(ok_json(&json!({
        "ID": r.id,
        "Running": r.running,
        "ExitCode": r.exit_code,
        "ProcessConfig": {
            "entrypoint": r.cmd.first(),
            "arguments": r.cmd.get(1..).unwrap_or_default(),
            "tty": r.tty,
            "user": r.user,
            "privileged": r.privileged,
        },
        "OpenStdin": r.stdin,
        "OpenStderr": r.stderr,
        "OpenStdout": r.stdout,
        "CanRemove": false,
        "ContainerID": r.container_id,
        "DetachKeys": r.detach_keys,
        "Pid": r.pid,
    })))
}

/// POST /exec/{id}/resize
pub async fn resize(e: &Arc<Engine>, id: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let r = get(e, id)?;
    let h = q.i64("h")?.unwrap_or(0);
    let w = q.i64("w")?.unwrap_or(0);
    if !(0..=u16::MAX as i64).contains(&h) || !(0..=u16::MAX as i64).contains(&w) {
        return Err(ApiError::bad("invalid terminal size"));
    }
    if !r.running {
        return Err(ApiError::Conflict(format!("exec {id} is not running")));
    }
    berth_shim::connect(&paths(e, &r.container_id).shim_state)
        .exec_resize(id, h as u16, w as u16)
        .await
        .map_err(|err| ApiError::Conflict(err.to_string()))?;
    Ok(status_only(StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> ExecRecord {
        ExecRecord {
            id: "x".into(),
            container_id: "c".into(),
            cmd: vec!["sh".into(), "-c".into(), "true".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
            user: String::new(),
            privileged: false,
            env: vec!["A=2".into(), "B=1".into()],
            working_dir: "/tmp".into(),
            running: false,
            started: false,
            exit_code: None,
            pid: 0,
            detach_keys: String::new(),
        }
    }

    #[test]
    fn detach_keys_are_read_in_both_spellings() {
        for body in [r#"{"Cmd":["sh"],"DetachKeys":"ctrl-x"}"#, r#"{"Cmd":["sh"],"detachKeys":"ctrl-x"}"#] {
            let b: CreateBody = serde_json::from_str(body).unwrap();
            assert_eq!(b.detach_keys.as_deref(), Some("ctrl-x"), "{body}");
        }
    }

    #[test]
    fn process_inherits_container_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = json!({"process": {"args": ["sleep", "1"], "env": ["PATH=/bin", "A=1"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "capabilities": {"bounding": ["CAP_CHOWN"]}}});
        std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
        let p = process_json(dir.path(), &rec()).unwrap();
        assert_eq!(p["args"], json!(["sh", "-c", "true"]));
        assert_eq!(p["env"], json!(["PATH=/bin", "A=2", "B=1"]));
        assert_eq!(p["cwd"], "/tmp");
        assert_eq!(p["capabilities"]["bounding"], json!(["CAP_CHOWN"]));
        assert_eq!(p["terminal"], false);
    }
}
