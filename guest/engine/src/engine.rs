//! The shared state behind every API request.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use berth_image::Store;
use berth_registry::{Client, ClientConfig};

use crate::config::Config;
use crate::containers::store::ContainerStore;
use crate::error::ApiError;
use crate::events::EventBus;
use crate::singleflight::SingleFlight;

pub const API_VERSION: &str = "1.47";
pub const MIN_API_VERSION: &str = "1.24";
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct Engine {
    pub config: Config,
    pub store: Arc<Store>,
    pub containers: Arc<ContainerStore>,
    pub volumes: crate::volumes::VolumeStore,
    pub networks: crate::networks::Networks,
    pub registry: Client,
    pub events: EventBus,
    /// One download per blob digest across concurrent pulls.
    pub downloads: SingleFlight<String>,
    /// One unpack per layer chain ID across concurrent pulls and loads.
    pub unpacks: SingleFlight<String>,
    /// Bounds CPU-heavy layer decompression to the machine's cores.
    pub unpack_slots: tokio::sync::Semaphore,
    /// A stable daemon ID, kept in the data root (what `docker info` shows as ID).
    pub id: String,
    pub started: SystemTime,
    /// Container exits and removals, for `wait`, `stop` and `logs -f`.
    pub exits: tokio::sync::broadcast::Sender<crate::containers::lifecycle::ExitNote>,
    /// Attach sessions opened before their container started, per container.
    attaches: Mutex<HashMap<String, PendingAttach>>,
    /// Serializes start/stop of one container.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// `docker exec` records by exec ID (in memory, like Docker's).
    pub execs: Mutex<HashMap<String, crate::containers::exec::ExecRecord>>,
    /// Flips to true when the daemon shuts down, so never-ending streams (events, logs -f) end.
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

impl Engine {
    pub fn new(config: Config) -> Result<Arc<Engine>, ApiError> {
        let store = Store::open(&config.data_root.join("image")).map_err(ApiError::from)?;
        // A crash between writing a layer or blob and the image record that uses it (a kill -9
        // during pull, commit, build or rmi) leaves content nothing refers to: collect it now
        // rather than at some later rmi. Nothing is leased yet, and every image a container
        // was made from has a record (rmi keeps images in use).
        match store.gc() {
            Ok(st) if st.layers_removed + st.blobs_removed + st.ingests_removed > 0 => tracing::info!(
                layers = st.layers_removed,
                blobs = st.blobs_removed,
                ingests = st.ingests_removed,
                bytes = st.bytes_freed,
                "collected content left by an interrupted operation"
            ),
            Ok(_) => {}
            Err(err) => tracing::warn!("garbage collection at start failed: {err}"),
        }
        let registry = Client::new(ClientConfig {
            insecure_registries: config.insecure_registries.clone(),
            user_agent: format!("berth/{ENGINE_VERSION}"),
        })
        .map_err(ApiError::from)?;
        let containers = ContainerStore::open(&config.data_root.join("containers"))?;
        let volumes = crate::volumes::VolumeStore::open(&config.data_root.join("volumes"))?;
        let networks = crate::networks::Networks::open(
            &config.data_root,
            &config.exec_root,
            std::sync::Arc::new(berth_network::plumbing::Linux),
            &config.dns,
        )?;
        let id = load_or_create_id(&config.data_root)?;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Ok(Arc::new(Engine {
            config,
            store: Arc::new(store),
            containers: Arc::new(containers),
            volumes,
            networks,
            registry,
            events: EventBus::new(),
            downloads: SingleFlight::default(),
            unpacks: SingleFlight::default(),
            unpack_slots: tokio::sync::Semaphore::new(cores),
            id,
            started: SystemTime::now(),
            shutdown: tokio::sync::watch::channel(false).0,
            exits: tokio::sync::broadcast::channel(256).0,
            attaches: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            execs: Mutex::new(HashMap::new()),
        }))
    }

    /// Run blocking store work off the async threads.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&store)).await?
    }
}

/// Attach sessions waiting for their container to start.
struct PendingAttach {
    tickets: HashSet<u64>,
    started: tokio::sync::watch::Sender<bool>,
}

static NEXT_TICKET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Engine {
    pub fn notify_exit(&self, n: crate::containers::lifecycle::ExitNote) {
        let _ = self.exits.send(n);
    }

    pub async fn lifecycle_lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.locks.lock().expect("locks");
            Arc::clone(locks.entry(id.to_string()).or_default())
        };
        m.lock_owned().await
    }

    /// True while an operation holds the container's lifecycle lock (e.g. a start that is still
    /// mounting, wiring the network or waiting for `runtime create`).
    pub fn lifecycle_busy(&self, id: &str) -> bool {
        let m = self.locks.lock().expect("locks").get(id).cloned();
        m.is_some_and(|m| m.try_lock().is_err())
    }

    /// The container is gone: drop what the engine keeps per container in memory (its
    /// lifecycle lock, its exec records, waiting attaches), so a daemon that runs many
    /// containers over its life does not grow with each one (checklist #34).
    pub fn forget_container(&self, id: &str) {
        self.locks.lock().expect("locks").remove(id);
        self.execs.lock().expect("execs").retain(|_, r| r.container_id != id);
        self.attaches.lock().expect("attaches").remove(id);
    }

    /// Count an attach that waits for the container to start; returns its ticket.
    pub fn register_attach(&self, id: &str) -> u64 {
        let t = NEXT_TICKET.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut m = self.attaches.lock().expect("attaches");
        m.entry(id.to_string())
            .or_insert_with(|| PendingAttach { tickets: HashSet::new(), started: tokio::sync::watch::channel(false).0 })
            .tickets
            .insert(t);
        t
    }

    pub fn cancel_attach(&self, id: &str, ticket: u64) {
        if let Some(p) = self.attaches.lock().expect("attaches").get_mut(id) {
            p.tickets.remove(&ticket);
        }
    }

    /// How many attach sessions the container's first output must wait for.
    pub fn pending_attaches(&self, id: &str) -> usize {
        self.attaches.lock().expect("attaches").get(id).map(|p| p.tickets.len()).unwrap_or(0)
    }

    /// The container is running: release the waiting attach sessions.
    pub fn announce_started(&self, id: &str) {
        if let Some(p) = self.attaches.lock().expect("attaches").remove(id) {
            let _ = p.started.send(true);
        }
    }

    /// Wait until the container starts (true) or the daemon stops (false).
    pub async fn wait_started(&self, id: &str, ticket: u64) -> bool {
        let rx = {
            let m = self.attaches.lock().expect("attaches");
            match m.get(id) {
                Some(p) if p.tickets.contains(&ticket) => p.started.subscribe(),
                // Already started and released.
                _ => return true,
            }
        };
        let mut rx = rx;
        let mut stop = self.shutdown.subscribe();
        tokio::select! {
            r = rx.wait_for(|s| *s) => r.is_ok(),
            _ = stop.wait_for(|s| *s) => false,
        }
    }
}

fn load_or_create_id(root: &std::path::Path) -> Result<String, ApiError> {
    let path = root.join("engine-id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let mut buf = [0u8; 16];
    getrandom(&mut buf)?;
    let id = hex::encode(buf);
    let tmp = root.join("engine-id.tmp");
    std::fs::write(&tmp, &id).map_err(ApiError::internal)?;
    std::fs::rename(&tmp, &path).map_err(ApiError::internal)?;
    Ok(id)
}

fn getrandom(buf: &mut [u8]) -> Result<(), ApiError> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(ApiError::internal)
}
