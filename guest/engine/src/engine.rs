//! The shared state behind every API request.

use std::sync::Arc;
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
    /// Flips to true when the daemon shuts down, so never-ending streams (events, logs -f) end.
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

impl Engine {
    pub fn new(config: Config) -> Result<Arc<Engine>, ApiError> {
        let store = Store::open(&config.data_root.join("image")).map_err(ApiError::from)?;
        let registry = Client::new(ClientConfig {
            insecure_registries: config.insecure_registries.clone(),
            user_agent: format!("berth/{ENGINE_VERSION}"),
        })
        .map_err(ApiError::from)?;
        let containers = ContainerStore::open(&config.data_root.join("containers"))?;
        let id = load_or_create_id(&config.data_root)?;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Ok(Arc::new(Engine {
            config,
            store: Arc::new(store),
            containers: Arc::new(containers),
            registry,
            events: EventBus::new(),
            downloads: SingleFlight::default(),
            unpacks: SingleFlight::default(),
            unpack_slots: tokio::sync::Semaphore::new(cores),
            id,
            started: SystemTime::now(),
            shutdown: tokio::sync::watch::channel(false).0,
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
