//! The agent's core: one engine (VM or native) at a time, its staged status, the docker socket
//! forwarder, published ports, and the event bus the control API streams.
//!
//! A VM outlives the agent (see [`crate::backend::reattach`]): before its first start or stop,
//! and right after it starts, an agent takes over a VM an earlier agent left running, and on
//! SIGTERM it exits without stopping one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc};

use crate::api::{BackendKind, EngineState, Event, Failure, Settings, SettingsPatch, Stage, StageRecord, Status};
use crate::backend::{explaining_line, native::Native, qemu::Qemu, Adoption, Backend, BackendError, BackendEvent, Running};
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
    note: Option<String>,
    reattached_at_ms: Option<u64>,
    /// Why the VM left by an earlier agent was refused (then the next start says it booted
    /// a fresh one).
    refused: Option<String>,
}

/// What the next agent needs to report a VM it adopts as this one did: `run/engine.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct EngineRecord {
    backend: String,
    pid: u32,
    accel: Option<crate::api::Accel>,
    stages: Vec<StageRecord>,
}

pub struct Agent {
    home: Home,
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
    op: tokio::sync::Mutex<Option<Box<dyn Backend>>>,
    ports: PortTable,
    /// Set once this agent has looked for an engine an earlier agent left running.
    resumed: AtomicBool,
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
        // A VM left running: "starting" until [`Agent::resume`] has adopted or refused it.
        let left = Qemu::left_running(&home).is_some();
        Arc::new(Agent {
            home,
            inner: Mutex::new(Inner {
                state: if left { EngineState::Starting } else { EngineState::Stopped },
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
                note: None,
                reattached_at_ms: None,
                refused: None,
            }),
            events,
            op: tokio::sync::Mutex::new(None),
            ports: PortTable::default(),
            resumed: AtomicBool::new(false),
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
            note: i.note.clone(),
            reattached_at_ms: i.reattached_at_ms,
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
        self.resume_locked(&mut slot).await;
        if self.status().state == EngineState::Running {
            return self.status();
        }
        {
            let mut i = self.inner.lock().expect("agent lock");
            i.reattached_at_ms = None;
            i.note = i.refused.take().map(|r| format!("the VM an earlier agent left running could not be re-attached ({r}): it was stopped and a fresh one booted"));
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
        self.go_live(gen, running, backend, &mut slot).await
    }

    /// Forward the docker socket and the published ports of a started (or adopted) engine,
    /// check that the socket answers, and report it running.
    async fn go_live(self: &Arc<Self>, gen: u64, running: Running, mut backend: Box<dyn Backend>, slot: &mut Option<Box<dyn Backend>>) -> Status {
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
        self.save_record(running.pid);
        crate::context::ensure_docker_context(&self.home);
        self.status()
    }

    fn save_record(&self, pid: u32) {
        let rec = {
            let i = self.inner.lock().expect("agent lock");
            EngineRecord { backend: i.backend_name.clone().unwrap_or_default(), pid, accel: i.accel, stages: i.stages.clone() }
        };
        if let Ok(j) = serde_json::to_vec(&rec) {
            let path = self.home.engine_record();
            let tmp = path.with_extension("json.tmp");
            let _ = std::fs::write(&tmp, j).and_then(|_| std::fs::rename(&tmp, &path));
        }
    }

    fn load_record(&self) -> Option<EngineRecord> {
        serde_json::from_slice(&std::fs::read(self.home.engine_record()).ok()?).ok()
    }

    /// Look once for a VM an earlier agent left running, and adopt it (or stop it when it is
    /// inconsistent). Run at agent start, and before the first up or down.
    pub async fn resume(self: &Arc<Self>) {
        let mut slot = self.op.lock().await;
        self.resume_locked(&mut slot).await;
    }

    async fn resume_locked(self: &Arc<Self>, slot: &mut Option<Box<dyn Backend>>) {
        if self.resumed.swap(true, Ordering::SeqCst) || slot.is_some() {
            return;
        }
        let vm = self.home.vm_dir();
        if !vm.join("qemu.pid").exists() && !vm.join("vhost-vsock.pid").exists() {
            return;
        }
        let mut backend: Box<dyn Backend> = Box::new(Qemu::new(self.home.clone()));
        let gen = self.begin(Some(backend.name().to_string()), backend.expected_stages());
        let (tx, mut rx) = mpsc::unbounded_channel();
        {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    me.apply(e);
                }
            });
        }
        match backend.adopt(tx).await {
            Adoption::Nothing => {
                {
                    let mut i = self.inner.lock().expect("agent lock");
                    i.backend_name = None;
                    i.expected.clear();
                    i.stages.clear();
                }
                let _ = std::fs::remove_file(self.home.engine_record());
                self.set_state(EngineState::Stopped);
            }
            Adoption::Stopped(reason) => {
                let _ = std::fs::remove_file(self.home.engine_record());
                let message = format!("the VM an earlier agent left running could not be re-attached ({reason}); it was stopped, `berth up` boots a fresh one");
                {
                    let mut i = self.inner.lock().expect("agent lock");
                    i.refused = Some(reason);
                    i.note = Some(message.clone());
                }
                self.fail(Failure { stage: None, message, log_line: None });
            }
            Adoption::Adopted(running) => {
                // The boot's stages as the agent that booted this VM saw them; this agent
                // forwards the socket again (socket-forwarded, now).
                let rec = self.load_record().filter(|r| r.pid == running.pid);
                {
                    let mut i = self.inner.lock().expect("agent lock");
                    match &rec {
                        Some(r) => i.stages = r.stages.iter().filter(|s| s.stage != Stage::SocketForwarded).cloned().collect(),
                        None => {
                            let at_ms = now_ms();
                            i.stages = i.expected.iter().filter(|s| **s != Stage::SocketForwarded).map(|s| StageRecord { stage: *s, at_ms, elapsed_ms: 0, guest_uptime_s: None }).collect();
                        }
                    }
                    i.reattached_at_ms = Some(now_ms());
                    i.note = Some(format!("re-attached to the running VM (QEMU pid {}) left by an earlier agent", running.pid));
                }
                for l in backend.log_tail(LOG_KEEP) {
                    let mut i = self.inner.lock().expect("agent lock");
                    if i.log.len() >= LOG_KEEP {
                        i.log.pop_front();
                    }
                    i.log.push_back(l);
                }
                let accel = running.accel.or(rec.and_then(|r| r.accel));
                let mut running = running;
                running.accel = accel;
                self.go_live(gen, running, backend, slot).await;
            }
        }
    }

    /// SIGTERM or SIGINT: a VM keeps running for the next agent (the docker socket and the
    /// published ports go away with this agent); a native berthd, our child, is stopped.
    pub async fn detach(self: &Arc<Self>) {
        let keep = {
            let slot = self.op.lock().await;
            slot.as_ref().map(|b| b.survives_agent()).unwrap_or(false) && self.status().state == EngineState::Running
        };
        if keep {
            self.record_log("berth: the agent exits; the VM keeps running (the next agent re-attaches)".into());
            self.teardown_links();
        } else {
            self.down().await;
        }
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
                let _ = std::fs::remove_file(me.home.engine_record());
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
    pub async fn down(self: &Arc<Self>) -> Status {
        let mut slot = self.op.lock().await;
        // A VM an earlier agent left running is stopped too.
        self.resume_locked(&mut slot).await;
        let _ = std::fs::remove_file(self.home.engine_record());
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
            i.note = None;
            i.reattached_at_ms = None;
            i.refused = None;
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
