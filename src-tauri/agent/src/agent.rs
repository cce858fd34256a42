//! The agent's core: one engine (VM or native) at a time, its staged status, the docker socket
//! forwarder, published ports, and the event bus the control API streams.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc};

use crate::api::{BackendKind, EngineState, Event, Failure, Settings, SettingsPatch, Stage, StageRecord, Status};
use crate::backend::{explaining_line, native::Native, qemu::Qemu, Backend, BackendError, BackendEvent};
use crate::forward::Forwarder;
use crate::paths::Home;
use crate::ports::{PortChange, PortTable};
use crate::transport::Transport;

const LOG_KEEP: usize = 2000;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

struct Inner {
    state: EngineState,
    backend_name: Option<String>,
    accel: Option<crate::api::Accel>,
    pid: Option<u32>,
    stages: Vec<StageRecord>,
    expected: Vec<Stage>,
    failure: Option<Failure>,
    settings: Settings,
    started: Option<Instant>,
    log: VecDeque<String>,
    transport: Option<Arc<dyn Transport>>,
    forwarder: Option<Forwarder>,
    port_task: Option<tokio::task::JoinHandle<()>>,
    /// Bumped on every start: a watcher of an older run must not touch a newer one.
    generation: u64,
}

pub struct Agent {
    home: Home,
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
    op: tokio::sync::Mutex<Option<Box<dyn Backend>>>,
    ports: PortTable,
    /// Notified when the agent should exit (`POST /v1/shutdown`).
    pub exit: tokio::sync::Notify,
}

fn load_settings(home: &Home) -> Settings {
    std::fs::read(home.settings_file()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

impl Agent {
    pub fn new(home: Home) -> Arc<Agent> {
        let settings = load_settings(&home);
        let (events, _) = broadcast::channel(1024);
        Arc::new(Agent {
            home,
            inner: Mutex::new(Inner {
                state: EngineState::Stopped,
                backend_name: None,
                accel: None,
                pid: None,
                stages: Vec::new(),
                expected: Vec::new(),
                failure: None,
                settings,
                started: None,
                log: VecDeque::new(),
                transport: None,
                forwarder: None,
                port_task: None,
                generation: 0,
            }),
            events,
            op: tokio::sync::Mutex::new(None),
            ports: PortTable::default(),
            exit: tokio::sync::Notify::new(),
        })
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    pub fn status(&self) -> Status {
        let i = self.inner.lock().expect("agent lock");
        Status {
            state: i.state,
            backend: i.backend_name.clone(),
            accel: i.accel,
            pid: i.pid,
            docker_host: format!("unix://{}", self.home.docker_socket().display()),
            stages: i.stages.clone(),
            expected_stages: i.expected.clone(),
            failure: i.failure.clone(),
            settings: i.settings.clone(),
            ports: self.ports.list(),
            agent_pid: std::process::id(),
        }
    }

    pub fn settings(&self) -> Settings {
        self.inner.lock().expect("agent lock").settings.clone()
    }

    /// Change and persist settings (they apply at the next start).
    pub fn set_settings(&self, p: &SettingsPatch) -> Result<Settings, String> {
        let mut i = self.inner.lock().expect("agent lock");
        let s = i.settings.apply(p)?;
        let json = serde_json::to_vec_pretty(&s).map_err(|e| e.to_string())?;
        let tmp = self.home.settings_file().with_extension("json.tmp");
        std::fs::write(&tmp, json).and_then(|_| std::fs::rename(&tmp, self.home.settings_file())).map_err(|e| format!("cannot save settings: {e}"))?;
        i.settings = s.clone();
        Ok(s)
    }

    pub fn log_tail(&self, n: usize) -> Vec<String> {
        let i = self.inner.lock().expect("agent lock");
        i.log.iter().skip(i.log.len().saturating_sub(n)).cloned().collect()
    }

    pub fn transport(&self) -> Option<Arc<dyn Transport>> {
        self.inner.lock().expect("agent lock").transport.clone()
    }

    fn set_state(&self, s: EngineState) {
        self.inner.lock().expect("agent lock").state = s;
        self.emit(Event::State { state: s });
    }

    fn record_stage(&self, stage: Stage, guest_uptime_s: Option<f64>) {
        let rec = {
            let mut i = self.inner.lock().expect("agent lock");
            if i.stages.iter().any(|r| r.stage == stage) {
                return;
            }
            let elapsed_ms = i.started.map(|s| s.elapsed().as_millis() as u64).unwrap_or(0);
            let rec = StageRecord { stage, at_ms: now_ms(), elapsed_ms, guest_uptime_s };
            i.stages.push(rec.clone());
            rec
        };
        self.emit(Event::Stage { record: rec });
    }

    fn record_log(&self, line: String) {
        {
            let mut i = self.inner.lock().expect("agent lock");
            if i.log.len() >= LOG_KEEP {
                i.log.pop_front();
            }
            i.log.push_back(line.clone());
        }
        self.emit(Event::Log { line });
    }

    fn fail(&self, f: Failure) {
        {
            let mut i = self.inner.lock().expect("agent lock");
            i.failure = Some(f.clone());
            i.state = EngineState::Failed;
        }
        self.emit(Event::State { state: EngineState::Failed });
        self.emit(Event::Failed { failure: f });
    }

    fn apply(&self, e: BackendEvent) {
        match e {
            BackendEvent::Stage { stage, guest_uptime_s } => self.record_stage(stage, guest_uptime_s),
            BackendEvent::Log(l) => self.record_log(l),
        }
    }

    /// Start the engine (after applying `patch`) and return when it is ready or has failed.
    pub async fn up(self: &Arc<Self>, patch: &SettingsPatch) -> Status {
        let mut slot = self.op.lock().await;
        if self.status().state == EngineState::Running {
            return self.status();
        }
        if let Some(mut old) = slot.take() {
            // A failed or crashed run: clean up what is left of it (helpers, sockets).
            self.teardown_links();
            old.stop().await;
        }
        if let Err(msg) = self.set_settings(patch) {
            self.begin(None, Vec::new());
            self.fail(Failure { stage: None, message: msg, log_line: None });
            return self.status();
        }
        let settings = self.settings();
        let kind = match settings.backend {
            BackendKind::Auto => default_backend(),
            k => k,
        };
        let mut backend: Box<dyn Backend> = match kind {
            BackendKind::Native => Box::new(Native::new(self.home.clone())),
            _ => Box::new(Qemu::new(self.home.clone())),
        };
        let gen = self.begin(Some(backend.name().to_string()), backend.expected_stages());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let result = {
            let start = backend.start(&settings, tx);
            tokio::pin!(start);
            loop {
                tokio::select! {
                    biased;
                    Some(e) = rx.recv() => self.apply(e),
                    r = &mut start => break r,
                }
            }
        };
        while let Ok(e) = rx.try_recv() {
            self.apply(e);
        }
        // Later console lines keep flowing into the log.
        {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    me.apply(e);
                }
            });
        }
        let running = match result {
            Ok(r) => r,
            Err(e) => {
                let f = match e {
                    BackendError::Start { stage, message, log_line } => Failure { stage: Some(stage), message, log_line },
                    BackendError::Setup(message) => Failure { stage: self.next_stage(), message, log_line: None },
                };
                backend.stop().await;
                self.fail(f);
                *slot = Some(backend);
                return self.status();
            }
        };
        {
            let mut i = self.inner.lock().expect("agent lock");
            i.pid = Some(running.pid);
            i.accel = running.accel;
            i.transport = running.transport.clone();
        }
        if let Some(t) = &running.transport {
            match Forwarder::start(&self.home.docker_socket(), Arc::clone(t), crate::protocol::ENGINE_PORT) {
                Ok(f) => self.inner.lock().expect("agent lock").forwarder = Some(f),
                Err(e) => {
                    backend.stop().await;
                    self.fail(Failure { stage: Some(Stage::SocketForwarded), message: format!("cannot listen on {}: {e}", self.home.docker_socket().display()), log_line: None });
                    *slot = Some(backend);
                    return self.status();
                }
            }
            let (ptx, mut prx) = mpsc::unbounded_channel();
            let task = crate::ports::watch(self.ports.clone(), Arc::clone(t), ptx);
            self.inner.lock().expect("agent lock").port_task = Some(task);
            let me = Arc::clone(self);
            tokio::spawn(async move {
                while let Some(c) = prx.recv().await {
                    match c {
                        PortChange::Opened(port) => me.emit(Event::PortOpened { port }),
                        PortChange::Closed(port) => me.emit(Event::PortClosed { port }),
                        PortChange::Failed(_, msg) => me.record_log(format!("berth: port forward: {msg}")),
                    }
                }
            });
        }
        let answered = match tokio::net::UnixStream::connect(self.home.docker_socket()).await {
            Ok(s) => crate::backend::ping(s).await,
            Err(_) => false,
        };
        match answered {
            true => self.record_stage(Stage::SocketForwarded, None),
            false => {
                backend.stop().await;
                self.teardown_links();
                self.fail(Failure {
                    stage: Some(Stage::SocketForwarded),
                    message: format!("{} does not answer /_ping", self.home.docker_socket().display()),
                    log_line: explaining_line(&self.log_tail(100)),
                });
                *slot = Some(backend);
                return self.status();
            }
        }
        self.watch_exit(gen, running.exited);
        *slot = Some(backend);
        self.set_state(EngineState::Running);
        crate::context::ensure_docker_context(&self.home);
        self.status()
    }

    fn begin(&self, backend: Option<String>, expected: Vec<Stage>) -> u64 {
        let gen = {
            let mut i = self.inner.lock().expect("agent lock");
            i.generation += 1;
            i.state = EngineState::Starting;
            i.backend_name = backend;
            i.expected = expected;
            i.stages.clear();
            i.failure = None;
            i.pid = None;
            i.accel = None;
            i.started = Some(Instant::now());
            i.generation
        };
        self.emit(Event::State { state: EngineState::Starting });
        gen
    }

    fn next_stage(&self) -> Option<Stage> {
        let i = self.inner.lock().expect("agent lock");
        i.expected.iter().find(|s| !i.stages.iter().any(|r| r.stage == **s)).copied()
    }

    /// When the engine dies on its own (QEMU killed, berthd crashed), say so in the status.
    fn watch_exit(self: &Arc<Self>, gen: u64, mut exited: tokio::sync::watch::Receiver<Option<String>>) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            if exited.wait_for(|v| v.is_some()).await.is_err() {
                return;
            }
            let reason = exited.borrow().clone().unwrap_or_default();
            let current = {
                let i = me.inner.lock().expect("agent lock");
                i.generation == gen && i.state == EngineState::Running
            };
            if current {
                me.teardown_links();
                let log_line = explaining_line(&me.log_tail(100)).filter(|l| !l.is_empty());
                me.fail(Failure { stage: None, message: format!("{reason}: the engine is down; `berth up` starts it again"), log_line });
            }
        });
    }

    fn teardown_links(&self) {
        let (f, t) = {
            let mut i = self.inner.lock().expect("agent lock");
            i.transport = None;
            (i.forwarder.take(), i.port_task.take())
        };
        drop(f);
        if let Some(t) = t {
            t.abort();
        }
        let (tx, _rx) = mpsc::unbounded_channel();
        self.ports.close_all(&tx);
    }

    /// Stop the engine cleanly.
    pub async fn down(&self) -> Status {
        let mut slot = self.op.lock().await;
        if slot.is_none() {
            return self.status();
        }
        self.set_state(EngineState::Stopping);
        self.teardown_links();
        if let Some(mut b) = slot.take() {
            b.stop().await;
        }
        {
            let mut i = self.inner.lock().expect("agent lock");
            i.pid = None;
            i.stages.clear();
            i.failure = None;
        }
        self.set_state(EngineState::Stopped);
        self.status()
    }
}

#[cfg(target_os = "linux")]
fn default_backend() -> BackendKind {
    BackendKind::Native
}

#[cfg(not(target_os = "linux"))]
fn default_backend() -> BackendKind {
    BackendKind::Vm
}
