//! Container records: what `docker create` asked for, merged with the image's defaults, plus the
//! container's state. One JSON file per container, written atomically (temp, fsync, rename), so a
//! kill -9 leaves either the old or the new record, never a torn one.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bollard_stubs::models::{ContainerConfig, HostConfig};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct State {
    pub status: Status,
    pub pid: i64,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub error: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub restart_count: i64,
    /// Stopped by `docker stop`/`rm`: restart policies do not bring it back (and
    /// `unless-stopped` stays down across daemon restarts).
    #[serde(default)]
    pub manually_stopped: bool,
    /// Present for containers with a health check.
    #[serde(default)]
    pub health: Option<super::health::HealthState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    /// Without the leading slash Docker shows in inspect.
    pub name: String,
    pub created: String,
    /// The image as the user named it, and the image ID it resolved to.
    pub image_name: String,
    pub image_id: String,
    /// The merged config: the request's, with the image's defaults filled in.
    pub config: ContainerConfig,
    pub host_config: HostConfig,
    /// The command the container runs: entrypoint + cmd.
    pub path: String,
    pub args: Vec<String>,
    pub state: State,
    /// Mounts resolved at create time (volumes, binds, tmpfs).
    #[serde(default)]
    pub mounts: Vec<super::mounts::MountPoint>,
    /// Networks asked for, and while running the endpoints and published ports.
    #[serde(default)]
    pub net: crate::networks::NetState,
}

impl Container {
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
}

/// All containers, in memory and on disk under `<data-root>/containers/<id>/`.
pub struct ContainerStore {
    root: PathBuf,
    inner: Mutex<HashMap<String, Container>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameInUse { name: String, id: String },
    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    #[error("multiple containers match {0:?}; use a longer ID")]
    Ambiguous(String),
    #[error("container store I/O on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("corrupt container record {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::NotFound(_) => ApiError::NotFound(msg),
            StoreError::NameInUse { .. } => ApiError::Conflict(msg),
            StoreError::InvalidName(_) | StoreError::Ambiguous(_) => ApiError::BadParameter(msg),
            _ => ApiError::Internal(msg),
        }
    }
}

/// Docker's name rule: `/?[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() >= 2
        && b.len() <= 255
        && b[0].is_ascii_alphanumeric()
        && b[1..].iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

impl ContainerStore {
    /// Loads every record. A directory without a readable record (a create cut short by a
    /// crash) is removed: it was never visible to a client.
    pub fn open(root: &Path) -> Result<ContainerStore, StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        std::fs::create_dir_all(root).map_err(io(root))?;
        let mut map = HashMap::new();
        for entry in std::fs::read_dir(root).map_err(io(root))? {
            let entry = entry.map_err(io(root))?;
            let dir = entry.path();
            let rec = dir.join("container.json");
            match std::fs::read(&rec) {
                Ok(bytes) => match serde_json::from_slice::<Container>(&bytes) {
                    Ok(c) if c.id.len() == 64 && dir.file_name().map(|f| f == c.id.as_str()).unwrap_or(false) => {
                        map.insert(c.id.clone(), c);
                    }
                    Ok(_) | Err(_) => {
                        tracing::warn!(dir = %dir.display(), "ignoring an unreadable container record");
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::info!(dir = %dir.display(), "removing a container directory left by an interrupted create");
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Err(e) => return Err(StoreError::Io { path: rec, source: e }),
            }
        }
        Ok(ContainerStore { root: root.to_path_buf(), inner: Mutex::new(map) })
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn write(&self, c: &Container) -> Result<(), StoreError> {
        let dir = self.dir(&c.id);
        let io = |path: PathBuf| move |source| StoreError::Io { path, source };
        std::fs::create_dir_all(&dir).map_err(io(dir.clone()))?;
        let tmp = dir.join("container.json.tmp");
        let dst = dir.join("container.json");
        let bytes = serde_json::to_vec_pretty(c).expect("container record serializes");
        let mut f = std::fs::File::create(&tmp).map_err(io(tmp.clone()))?;
        f.write_all(&bytes).map_err(io(tmp.clone()))?;
        f.sync_all().map_err(io(tmp.clone()))?;
        std::fs::rename(&tmp, &dst).map_err(io(dst.clone()))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Add a new container; fails if the name is taken.
    pub fn insert(&self, c: Container) -> Result<(), StoreError> {
        let mut m = self.inner.lock().expect("container store lock");
        if let Some(other) = m.values().find(|o| o.name == c.name) {
            return Err(StoreError::NameInUse { name: c.name.clone(), id: other.id.clone() });
        }
        self.write(&c)?;
        m.insert(c.id.clone(), c);
        Ok(())
    }

    /// Docker's lookup: full ID, then exact name (with or without '/'), then unique ID prefix.
    pub fn resolve(&self, key: &str) -> Result<String, StoreError> {
        let m = self.inner.lock().expect("container store lock");
        if m.contains_key(key) {
            return Ok(key.to_string());
        }
        let name = key.strip_prefix('/').unwrap_or(key);
        if let Some(c) = m.values().find(|c| c.name == name) {
            return Ok(c.id.clone());
        }
        if !key.is_empty() && key.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<&String> = m.keys().filter(|id| id.starts_with(key)).collect();
            match hits.len() {
                1 => return Ok(hits[0].clone()),
                0 => {}
                _ => return Err(StoreError::Ambiguous(key.to_string())),
            }
        }
        Err(StoreError::NotFound(key.to_string()))
    }

    pub fn get(&self, key: &str) -> Result<Container, StoreError> {
        let id = self.resolve(key)?;
        let m = self.inner.lock().expect("container store lock");
        m.get(&id).cloned().ok_or(StoreError::NotFound(key.to_string()))
    }

    /// Change a record under the lock and persist it.
    pub fn update<T>(&self, id: &str, f: impl FnOnce(&mut Container) -> T) -> Result<T, StoreError> {
        let mut m = self.inner.lock().expect("container store lock");
        let c = m.get_mut(id).ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let mut copy = c.clone();
        let out = f(&mut copy);
        self.write(&copy)?;
        *c = copy;
        Ok(out)
    }

    pub fn rename(&self, id: &str, new_name: &str) -> Result<(), StoreError> {
        let new_name = new_name.strip_prefix('/').unwrap_or(new_name);
        if !valid_name(new_name) {
            return Err(StoreError::InvalidName(new_name.to_string()));
        }
        let mut m = self.inner.lock().expect("container store lock");
        if let Some(other) = m.values().find(|o| o.name == new_name && o.id != id) {
            return Err(StoreError::NameInUse { name: new_name.to_string(), id: other.id.clone() });
        }
        let c = m.get_mut(id).ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let mut copy = c.clone();
        copy.name = new_name.to_string();
        self.write(&copy)?;
        *c = copy;
        Ok(())
    }

    /// Forget a container and delete its directory (the record goes first, so a crash midway
    /// leaves a directory `open` cleans up, not a record pointing at half-deleted state).
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        let mut m = self.inner.lock().expect("container store lock");
        let dir = self.dir(id);
        let rec = dir.join("container.json");
        match std::fs::remove_file(&rec) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Io { path: rec, source: e }),
        }
        m.remove(id);
        drop(m);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    pub fn list(&self) -> Vec<Container> {
        let m = self.inner.lock().expect("container store lock");
        let mut v: Vec<Container> = m.values().cloned().collect();
        v.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        v
    }

    /// Image IDs in use by any container (images in use cannot be removed without force).
    pub fn images_in_use(&self) -> Vec<String> {
        self.inner.lock().expect("container store lock").values().map(|c| c.image_id.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: char, name: &str) -> Container {
        Container {
            id: std::iter::repeat(id).take(64).collect(),
            name: name.into(),
            created: "2026-01-01T00:00:00Z".into(),
            image_name: "busybox".into(),
            image_id: "sha256:00".into(),
            config: ContainerConfig::default(),
            host_config: HostConfig::default(),
            path: "sh".into(),
            args: vec![],
            state: State::default(),
            mounts: vec![],
            net: Default::default(),
        }
    }

    #[test]
    fn names_ids_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContainerStore::open(dir.path()).unwrap();
        s.insert(sample('a', "web")).unwrap();
        s.insert(sample('b', "db")).unwrap();
        assert!(matches!(s.insert(sample('c', "web")), Err(StoreError::NameInUse { .. })));
        assert_eq!(s.resolve("web").unwrap(), "a".repeat(64));
        assert_eq!(s.resolve("/db").unwrap(), "b".repeat(64));
        assert_eq!(s.resolve("aaa").unwrap(), "a".repeat(64));
        assert!(matches!(s.resolve("zz"), Err(StoreError::NotFound(_))));
        s.rename(&"a".repeat(64), "front").unwrap();
        assert!(matches!(s.rename(&"a".repeat(64), "db"), Err(StoreError::NameInUse { .. })));
        assert!(matches!(s.rename(&"a".repeat(64), "bad name"), Err(StoreError::InvalidName(_))));
        s.update(&"b".repeat(64), |c| c.state.status = Status::Running).unwrap();
        // A create cut short: a directory without a record.
        std::fs::create_dir_all(dir.path().join("c".repeat(64))).unwrap();
        let s2 = ContainerStore::open(dir.path()).unwrap();
        assert_eq!(s2.get("front").unwrap().id, "a".repeat(64));
        assert_eq!(s2.get("db").unwrap().state.status, Status::Running);
        assert!(!dir.path().join("c".repeat(64)).exists());
        s2.remove(&"a".repeat(64)).unwrap();
        assert!(s2.get("front").is_err());
        assert!(!dir.path().join("a".repeat(64)).exists());
        assert_eq!(ContainerStore::open(dir.path()).unwrap().list().len(), 1);
    }

    #[test]
    fn name_rule() {
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("a"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
    }
}
