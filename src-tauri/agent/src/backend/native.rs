//! berthd as a host process (Linux): no VM, no forwarding; the docker socket is berthd's own.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use super::{describe_exit, explaining_line, Backend, BackendError, BackendEvent, Running};
use crate::api::{Settings, Stage};
use crate::paths::Home;

pub struct Native {
    home: Home,
    pid: Option<u32>,
    exited: Option<watch::Receiver<Option<String>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Native {
    pub fn new(home: Home) -> Native {
        Native { home, pid: None, exited: None, log: Arc::default() }
    }

    /// `$BERTHD_BIN`, else `berthd` next to this executable, else PATH.
    fn berthd() -> PathBuf {
        if let Some(p) = std::env::var_os("BERTHD_BIN") {
            return p.into();
        }
        if let Ok(exe) = std::env::current_exe() {
            if let Some(d) = exe.parent() {
                let p = d.join("berthd");
                if p.is_file() {
                    return p;
                }
            }
        }
        "berthd".into()
    }
}

#[async_trait::async_trait]
impl Backend for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn expected_stages(&self) -> Vec<Stage> {
        vec![Stage::VmStarted, Stage::EngineUp, Stage::SocketForwarded]
    }

    async fn start(&mut self, _settings: &Settings, events: mpsc::UnboundedSender<BackendEvent>) -> Result<Running, BackendError> {
        let sock = self.home.docker_socket();
        let dir = self.home.native_dir();
        let bin = Self::berthd();
        let mut child = Command::new(&bin)
            .arg("--host")
            .arg(format!("unix://{}", sock.display()))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BackendError::Start { stage: Stage::VmStarted, message: format!("cannot start {}: {e}", bin.display()), log_line: None })?;
        let pid = child.id().unwrap_or(0);
        self.pid = Some(pid);
        let _ = events.send(BackendEvent::Stage { stage: Stage::VmStarted, guest_uptime_s: None });
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::clone(&self.log);
        let ev = events.clone();
        let logfile = dir.join("berthd.log");
        tokio::spawn(async move {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(logfile).ok();
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if let Some(f) = f.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{l}");
                }
                {
                    let mut v = log.lock().expect("log lock");
                    if v.len() > 2000 {
                        v.drain(..1000);
                    }
                    v.push(l.clone());
                }
                let _ = ev.send(BackendEvent::Log(l));
            }
        });
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let r = child.wait().await;
            let _ = tx.send(Some(match r {
                Ok(s) => format!("berthd exited ({})", describe_exit(s)),
                Err(e) => format!("berthd: {e}"),
            }));
        });
        self.exited = Some(rx.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(reason) = rx.borrow().clone() {
                return Err(BackendError::Start { stage: Stage::EngineUp, message: reason, log_line: explaining_line(&self.log_tail(50)) });
            }
            if let Ok(s) = tokio::net::UnixStream::connect(&sock).await {
                if super::ping(s).await {
                    let _ = events.send(BackendEvent::Stage { stage: Stage::EngineUp, guest_uptime_s: None });
                    return Ok(Running { pid, accel: None, transport: None, exited: rx });
                }
            }
            if Instant::now() > deadline {
                return Err(BackendError::Start { stage: Stage::EngineUp, message: "berthd did not answer /_ping within 60 s".into(), log_line: explaining_line(&self.log_tail(50)) });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: our own child; berthd shuts down cleanly on SIGTERM.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            if let Some(mut rx) = self.exited.clone() {
                if tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|v| v.is_some())).await.is_err() {
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
    }

    fn log_tail(&self, n: usize) -> Vec<String> {
        let v = self.log.lock().expect("log lock");
        v[v.len().saturating_sub(n)..].to_vec()
    }
}
