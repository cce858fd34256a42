//! The Rust client of the agent's control API, for the `berth` CLI and the desktop app.
//!
//! ```no_run
//! # async fn demo() -> Result<(), berth_agent::client::ClientError> {
//! use berth_agent::{client::AgentClient, paths::Home, api::SettingsPatch};
//! let home = Home::from_env();
//! let c = AgentClient::connect_or_spawn(&home, &std::env::current_exe().unwrap()).await?;
//! let mut events = c.events().await?;           // progress while starting
//! tokio::spawn(async move { while let Some(Ok(e)) = events.next().await { println!("{e:?}") } });
//! let status = c.up(&SettingsPatch { cpus: Some(2), ..Default::default() }).await?;
//! println!("{:?} {}", status.state, status.docker_host);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use crate::api::{Diagnostics, ErrorBody, Event, Logs, Settings, SettingsPatch, Status};
use crate::paths::Home;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent is not running (no socket, or nobody listens).
    #[error("the Berth agent is not running ({0})")]
    NotRunning(String),
    #[error("agent API: {0}")]
    Http(String),
    /// The agent answered with an error.
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("agent answered something unexpected: {0}")]
    Decode(String),
    #[error("cannot start the agent: {0}")]
    Spawn(String),
}

#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
}

impl AgentClient {
    pub fn new(socket: impl Into<PathBuf>) -> AgentClient {
        AgentClient { socket: socket.into() }
    }

    pub fn for_home(home: &Home) -> AgentClient {
        AgentClient::new(home.agent_socket())
    }

    /// True when an agent answers.
    pub async fn is_running(&self) -> bool {
        self.status().await.is_ok()
    }

    /// Connect to the agent of `home`, starting `<program> agent` (detached, logging to
    /// `~/.berth/logs/agent.log`) if none runs.
    pub async fn connect_or_spawn(home: &Home, program: &Path) -> Result<AgentClient, ClientError> {
        let c = AgentClient::for_home(home);
        if c.is_running().await {
            return Ok(c);
        }
        home.ensure().map_err(|e| ClientError::Spawn(e.to_string()))?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(home.agent_log()).map_err(|e| ClientError::Spawn(e.to_string()))?;
        let mut cmd = std::process::Command::new(program);
        cmd.arg("agent").env("BERTH_HOME", home.root()).stdin(std::process::Stdio::null()).stdout(log.try_clone().map_err(|e| ClientError::Spawn(e.to_string()))?).stderr(log);
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid only; the agent outlives this process and its terminal.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| ClientError::Spawn(format!("{}: {e}", program.display())))?;
        for _ in 0..200 {
            if c.is_running().await {
                // Reap it when it exits, so no zombie is left behind by a long-lived caller.
                std::thread::spawn(move || child.wait());
                return Ok(c);
            }
            if let Ok(Some(s)) = child.try_wait() {
                return Err(ClientError::Spawn(format!("the agent exited ({s}); see {}", home.agent_log().display())));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(ClientError::Spawn(format!("the agent did not answer within 5 s; see {}", home.agent_log().display())))
    }

    /// The agent of `home`; when none runs but a VM of this home does (its agent was killed,
    /// or exited on SIGTERM), start `<program> agent`, which re-attaches to the VM, and wait
    /// (up to 60 s) until it has adopted or refused it. With neither, the client of the absent
    /// agent (its calls fail with [`ClientError::NotRunning`]).
    pub async fn connect_or_reattach(home: &Home, program: &Path) -> Result<AgentClient, ClientError> {
        let c = AgentClient::for_home(home);
        if c.is_running().await || crate::backend::qemu::Qemu::left_running(home).is_none() {
            return Ok(c);
        }
        let c = AgentClient::connect_or_spawn(home, program).await?;
        // Adopting takes a QMP query and a ping; a refused VM is stopped (up to ~40 s).
        for _ in 0..1200 {
            match c.status().await {
                Ok(s) if s.state != crate::api::EngineState::Starting => break,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        Ok(c)
    }

    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let s = tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| ClientError::NotRunning(format!("{}: {e}", self.socket.display())))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(path).header("host", "berth-agent");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| ClientError::Http(e.to_string()))?;
        sender.send_request(req).await.map_err(|e| ClientError::Http(e.to_string()))
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<T, ClientError> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| ClientError::Http(e.to_string()))?.to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes).map(|e| e.message).unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Api { status: status.as_u16(), message });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn status(&self) -> Result<Status, ClientError> {
        self.call(Method::GET, "/v1/status", None).await
    }

    /// Start (applying `patch` first); returns once ready or failed (see `Status::failure`).
    pub async fn up(&self, patch: &SettingsPatch) -> Result<Status, ClientError> {
        self.call(Method::POST, "/v1/up", Some(serde_json::to_vec(patch).expect("serializable"))).await
    }

    pub async fn down(&self) -> Result<Status, ClientError> {
        self.call(Method::POST, "/v1/down", None).await
    }

    pub async fn restart(&self) -> Result<Status, ClientError> {
        self.call(Method::POST, "/v1/restart", None).await
    }

    /// Stop the engine and the agent itself.
    pub async fn shutdown(&self) -> Result<Status, ClientError> {
        self.call(Method::POST, "/v1/shutdown", None).await
    }

    pub async fn settings(&self) -> Result<Settings, ClientError> {
        self.call(Method::GET, "/v1/settings", None).await
    }

    pub async fn set_settings(&self, patch: &SettingsPatch) -> Result<Settings, ClientError> {
        self.call(Method::PUT, "/v1/settings", Some(serde_json::to_vec(patch).expect("serializable"))).await
    }

    /// The last `tail` console lines of the VM (berthd's log when native).
    pub async fn logs(&self, tail: usize) -> Result<Vec<String>, ClientError> {
        Ok(self.call::<Logs>(Method::GET, &format!("/v1/logs?tail={tail}"), None).await?.lines)
    }

    pub async fn diagnostics(&self) -> Result<Diagnostics, ClientError> {
        self.call(Method::GET, "/v1/diagnostics", None).await
    }

    /// Follow the agent's events (state changes, stages, console lines, ports).
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let resp = self.send(Method::GET, "/v1/events", None).await?;
        if resp.status() != StatusCode::OK {
            return Err(ClientError::Api { status: resp.status().as_u16(), message: "events refused".into() });
        }
        Ok(EventStream { body: resp.into_body(), buf: Vec::new() })
    }

    /// Open a debug shell in the VM: the returned stream is the pty.
    pub async fn shell(&self, rows: u16, cols: u16) -> Result<TokioIo<hyper::upgrade::Upgraded>, ClientError> {
        let s = tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| ClientError::NotRunning(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(conn.with_upgrades());
        let req = Request::post(format!("/v1/shell?rows={rows}&cols={cols}"))
            .header("host", "berth-agent")
            .header("connection", "Upgrade")
            .header("upgrade", "berth-shell")
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| ClientError::Http(e.to_string()))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let message = serde_json::from_slice::<ErrorBody>(&bytes).map(|e| e.message).unwrap_or_default();
            return Err(ClientError::Api { status, message });
        }
        let up = hyper::upgrade::on(resp).await.map_err(|e| ClientError::Http(e.to_string()))?;
        Ok(TokioIo::new(up))
    }
}

/// Newline-delimited events; lines over 1 MiB end the stream with an error.
pub struct EventStream {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl EventStream {
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(serde_json::from_slice(&line).map_err(|e| ClientError::Decode(e.to_string())));
            }
            if self.buf.len() > 1 << 20 {
                return Some(Err(ClientError::Decode("event line over 1 MiB".into())));
            }
            match self.body.frame().await? {
                Ok(f) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
                Err(e) => return Some(Err(ClientError::Http(e.to_string()))),
            }
        }
    }
}
