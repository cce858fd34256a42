//! Shared app state: the current engine, running streams and exec sessions.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::engine::Engine;
use crate::settings::{self, Settings};

/// An exec session's handles: keystrokes go in through `input`, resizes name the exec ID.
pub struct ExecSession {
    pub exec_id: String,
    pub input: mpsc::Sender<Vec<u8>>,
    pub task: AbortHandle,
}

pub struct AppState {
    engine: RwLock<Arc<Engine>>,
    pub socket_source: RwLock<(&'static str, Option<String>)>,
    pub settings_path: PathBuf,
    next_id: AtomicU64,
    subs: Mutex<HashMap<u64, AbortHandle>>,
    pub sessions: Mutex<HashMap<u64, ExecSession>>,
    /// The /events follower; replaced when the socket changes.
    pub events_task: Mutex<Option<tauri::async_runtime::JoinHandle<()>>>,
}

impl AppState {
    pub fn new(settings_path: PathBuf) -> AppState {
        let settings = Settings::load(&settings_path);
        let env = std::env::var("DOCKER_HOST").ok();
        let (socket, source, warning) = settings::resolve(env.as_deref(), &settings, crate::agent::socket());
        AppState {
            engine: RwLock::new(Arc::new(Engine::new(socket))),
            socket_source: RwLock::new((source, warning)),
            settings_path,
            next_id: AtomicU64::new(1),
            subs: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            events_task: Mutex::new(None),
        }
    }

    pub fn engine(&self) -> Arc<Engine> {
        self.engine.read().expect("engine lock").clone()
    }

    /// Re-resolve the socket after the settings changed.
    pub fn reconfigure(&self) {
        let settings = Settings::load(&self.settings_path);
        let env = std::env::var("DOCKER_HOST").ok();
        let (socket, source, warning) = settings::resolve(env.as_deref(), &settings, crate::agent::socket());
        *self.engine.write().expect("engine lock") = Arc::new(Engine::new(socket));
        *self.socket_source.write().expect("source lock") = (source, warning);
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Remember a stream task so the front end can end it by its id.
    pub fn add_sub(&self, id: u64, task: AbortHandle) {
        self.subs.lock().expect("subs lock").insert(id, task);
    }

    pub fn end_sub(&self, id: u64) -> bool {
        match self.subs.lock().expect("subs lock").remove(&id) {
            Some(t) => {
                t.abort();
                true
            }
            None => false,
        }
    }

    /// Forget a stream that ended by itself.
    pub fn forget_sub(&self, id: u64) {
        self.subs.lock().expect("subs lock").remove(&id);
    }
}
