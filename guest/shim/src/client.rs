//! berthd's side of the control socket (async, tokio).

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::protocol::{Request, Response, ShimStatus};
use crate::state::{self, ExitStatus, SHIM_SOCK};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("shim socket {path}: {source}")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("shim connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad reply from shim: {0}")]
    Protocol(String),
    #[error("shim: {0}")]
    Shim(String),
}

/// Handle on one shim; every call opens its own connection, so one client can
/// be used from several tasks at once.
#[derive(Debug, Clone)]
pub struct ShimClient {
    state_dir: PathBuf,
}

/// An attached connection: read output (framed with [`crate::frame`] unless
/// TTY), write stdin, `shutdown()` to close the container's stdin.
pub type AttachStream = BufReader<UnixStream>;

pub fn connect(state_dir: &Path) -> ShimClient {
    ShimClient { state_dir: state_dir.to_owned() }
}

impl ShimClient {
    async fn request(&self, req: &Request) -> Result<(Response, AttachStream), ClientError> {
        let path = self.state_dir.join(SHIM_SOCK);
        let stream = UnixStream::connect(&path).await.map_err(|source| ClientError::Connect { path, source })?;
        let mut stream = BufReader::new(stream);
        let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        stream.get_mut().write_all(&line).await?;
        let mut resp = String::new();
        if stream.read_line(&mut resp).await? == 0 {
            return Err(ClientError::Protocol("connection closed before reply".into()));
        }
        let resp: Response = serde_json::from_str(&resp).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if !resp.ok {
            return Err(ClientError::Shim(resp.error.unwrap_or_default()));
        }
        Ok((resp, stream))
    }

    pub async fn attach(&self, stdin: bool, stdout: bool, stderr: bool) -> Result<AttachStream, ClientError> {
        self.attach_with_logs(stdin, stdout, stderr, false).await
    }

    /// Like [`ShimClient::attach`]; with `logs` the stream starts with the container's output
    /// so far (Docker's attach `logs=1&stream=1`), with no gap or overlap before live output.
    pub async fn attach_with_logs(&self, stdin: bool, stdout: bool, stderr: bool, logs: bool) -> Result<AttachStream, ClientError> {
        Ok(self.request(&Request::Attach { stdin, stdout, stderr, logs }).await?.1)
    }

    pub async fn resize(&self, h: u16, w: u16) -> Result<(), ClientError> {
        self.request(&Request::Resize { h, w }).await.map(drop)
    }

    pub async fn kill(&self, signal: i32) -> Result<(), ClientError> {
        self.request(&Request::Kill { signal }).await.map(drop)
    }

    pub async fn state(&self) -> Result<ShimStatus, ClientError> {
        self.request(&Request::State).await?.0.state.ok_or_else(|| ClientError::Protocol("no state in reply".into()))
    }

    /// Start an exec process; returns its host pid and the stream (see [`Request::Exec`]).
    pub async fn exec(&self, exec_id: &str, process: serde_json::Value, tty: bool, stdin: bool) -> Result<(i32, AttachStream), ClientError> {
        let (resp, s) = self.request(&Request::Exec { exec_id: exec_id.into(), process, tty, stdin }).await?;
        Ok((resp.pid.unwrap_or(0), s))
    }

    /// Exit status of an exec, waiting for it to exit.
    pub async fn exec_wait(&self, exec_id: &str) -> Result<ExitStatus, ClientError> {
        let (resp, _) = self.request(&Request::ExecWait { exec_id: exec_id.into() }).await?;
        resp.exit.ok_or_else(|| ClientError::Protocol("no exit status in reply".into()))
    }

    pub async fn exec_resize(&self, exec_id: &str, h: u16, w: u16) -> Result<(), ClientError> {
        self.request(&Request::ExecResize { exec_id: exec_id.into(), h, w }).await.map(drop)
    }

    /// Wait for the container to exit. If the shim is already gone (the
    /// container exited while nobody was connected), `exit.json` answers.
    pub async fn wait(&self) -> Result<ExitStatus, ClientError> {
        match self.request(&Request::Wait).await {
            Ok((resp, _)) => resp.exit.ok_or_else(|| ClientError::Protocol("no exit status in reply".into())),
            Err(e @ (ClientError::Connect { .. } | ClientError::Protocol(_))) => {
                // The shim writes exit.json before it goes away.
                state::read_exit(&self.state_dir).ok_or(e)
            }
            Err(e) => Err(e),
        }
    }
}
