//! Volumes: the `local` driver under `<data-root>/volumes/<name>/_data`, and the `/volumes`
//! endpoints.
//!
//! A volume is a directory berthd owns. With driver options (`type=tmpfs o=size=64m`, or
//! `type=none o=bind device=/host/dir`, Docker's local-driver options) the directory is a mount
//! point: berthd mounts it when the first container using it starts and unmounts it when the
//! last one stops, as Docker does. Records are one JSON file per volume written atomically, so a
//! kill -9 leaves the old or the new record. Whether a volume is in use is computed from the
//! container records (a volume is in use while any container, running or not, names it), so
//! there is no reference count to get out of step after a crash.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::http_util::{json, label_matches, ok_json, status_only, Body, Query};

/// Docker 23+ marks anonymous volumes with this label; `volume prune` removes only those unless
/// asked for `all=true`.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// No such volume.
    #[error("get {0}: no such volume")]
    NotFound(String),
    /// The volume is named by containers.
    #[error("remove {name}: volume is in use - [{}]", users.join(", "))]
    InUse { name: String, users: Vec<String> },
    /// Docker's volume name rule.
    #[error("create {0}: \"{0}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path")]
    InvalidName(String),
    #[error("create {name}: {reason}")]
    InvalidOptions { name: String, reason: String },
    /// Docker's words and status (404: no such plugin); Berth has only the local driver.
    #[error("error looking up volume plugin {0}: plugin {0:?} not found (Berth has the \"local\" driver)")]
    Driver(String),
    #[error("volume {name}: mounting its options: {reason}")]
    Mount { name: String, reason: String },
    #[error("volume store I/O on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// One volume's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub created_at: String,
    #[serde(default)]
    pub labels: HashMap<String, String>,
    /// The local driver's options: `type`, `o`, `device`.
    #[serde(default)]
    pub options: HashMap<String, String>,
}

impl Volume {
    pub fn anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }
    fn needs_mount(&self) -> bool {
        self.options.contains_key("type") || self.options.contains_key("device")
    }
}

pub struct VolumeStore {
    root: PathBuf,
    inner: Mutex<HashMap<String, Volume>>,
}

/// Docker's rule for local volume names.
pub fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() >= 2 && b.len() <= 255 && b[0].is_ascii_alphanumeric() && b[1..].iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io { path: path.to_path_buf(), source }
}

impl VolumeStore {
    /// Load every record; a directory without one (a create cut short) is removed unless it is
    /// still a mount point (never delete through a mount).
    pub fn open(root: &Path) -> Result<VolumeStore, VolumeError> {
        std::fs::create_dir_all(root).map_err(io(root))?;
        let mut map = HashMap::new();
        for entry in std::fs::read_dir(root).map_err(io(root))?.flatten() {
            let dir = entry.path();
            match std::fs::read(dir.join("volume.json")) {
                Ok(b) => match serde_json::from_slice::<Volume>(&b) {
                    Ok(v) if dir.file_name().map(|f| f == v.name.as_str()).unwrap_or(false) => {
                        map.insert(v.name.clone(), v);
                    }
                    _ => tracing::warn!(dir = %dir.display(), "ignoring an unreadable volume record"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !is_mount_point(&dir.join("_data")) {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                }
                Err(e) => return Err(VolumeError::Io { path: dir, source: e }),
            }
        }
        Ok(VolumeStore { root: root.to_path_buf(), inner: Mutex::new(map) })
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Where containers see the volume's data.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.root.join(name).join("_data")
    }

    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        self.inner.lock().expect("volumes").get(name).cloned().ok_or_else(|| VolumeError::NotFound(name.to_string()))
    }

    pub fn list(&self) -> Vec<Volume> {
        let mut v: Vec<Volume> = self.inner.lock().expect("volumes").values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Create a volume, or return the existing one of that name (Docker's create is idempotent).
    /// Returns (volume, created).
    pub fn create(&self, name: &str, labels: HashMap<String, String>, options: HashMap<String, String>) -> Result<(Volume, bool), VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::InvalidName(name.to_string()));
        }
        validate_options(name, &options)?;
        let mut m = self.inner.lock().expect("volumes");
        if let Some(v) = m.get(name) {
            return Ok((v.clone(), false));
        }
        let v = Volume {
            name: name.to_string(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            labels,
            options,
        };
        let dir = self.dir(name);
        let data = dir.join("_data");
        std::fs::create_dir_all(&data).map_err(io(&data))?;
        // Docker's volume roots are 0755 (anyone in the container may traverse into them).
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755));
        let tmp = dir.join("volume.json.tmp");
        let bytes = serde_json::to_vec_pretty(&v).expect("volume record serializes");
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, dir.join("volume.json")).map_err(io(&dir))?;
        m.insert(name.to_string(), v.clone());
        Ok((v, true))
    }

    /// Delete a volume that no container names. Its mount (options) goes first; the data is
    /// deleted only when `_data` is no longer a mount point, so a bind volume's host directory
    /// is never emptied.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        let mut m = self.inner.lock().expect("volumes");
        if !m.contains_key(name) {
            return Err(VolumeError::NotFound(name.to_string()));
        }
        let dir = self.dir(name);
        let data = dir.join("_data");
        unmount_all(&data);
        if is_mount_point(&data) {
            return Err(VolumeError::Mount { name: name.to_string(), reason: "its data directory is still mounted".into() });
        }
        let rec = dir.join("volume.json");
        match std::fs::remove_file(&rec) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(VolumeError::Io { path: rec, source: e }),
        }
        m.remove(name);
        drop(m);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// Mount a volume's driver options on its data directory unless already mounted.
    pub fn activate(&self, name: &str) -> Result<(), VolumeError> {
        let v = self.get(name)?;
        if !v.needs_mount() {
            return Ok(());
        }
        let data = self.mountpoint(name);
        if is_mount_point(&data) {
            return Ok(());
        }
        mount_options(&v, &data).map_err(|reason| VolumeError::Mount { name: name.to_string(), reason })
    }

    /// Unmount a volume's options mount (when no running container uses it any more).
    pub fn deactivate(&self, name: &str) {
        if let Ok(v) = self.get(name) {
            if v.needs_mount() {
                unmount_all(&self.mountpoint(name));
            }
        }
    }
}

/// Docker's local driver accepts `type`, `o`, `device` (and `size` on some filesystems).
fn validate_options(name: &str, o: &HashMap<String, String>) -> Result<(), VolumeError> {
    let bad = |reason: String| VolumeError::InvalidOptions { name: name.to_string(), reason };
    for k in o.keys() {
        if !matches!(k.as_str(), "type" | "o" | "device") {
            return Err(bad(format!("invalid option: {k:?}")));
        }
    }
    let typ = o.get("type").map(String::as_str).unwrap_or("");
    let opts = o.get("o").map(String::as_str).unwrap_or("");
    let device = o.get("device").map(String::as_str).unwrap_or("");
    let is_bind = typ == "bind" || opts.split(',').any(|x| x == "bind" || x == "rbind");
    if is_bind {
        if !device.starts_with('/') {
            return Err(bad("a bind volume needs an absolute `device` path".into()));
        }
        if !Path::new(device).is_dir() {
            return Err(bad(format!("failed to mount local volume: mount {device}: no such file or directory")));
        }
    } else if typ.is_empty() && !o.is_empty() {
        return Err(bad("missing required option: \"type\"".into()));
    } else if !typ.is_empty() && typ != "tmpfs" && device.is_empty() {
        return Err(bad("missing required option: \"device\"".into()));
    }
    Ok(())
}

/// Split mount(8)-style options into flags and the filesystem's data string.
pub fn parse_mount_options(o: &str) -> (nix::mount::MsFlags, Vec<String>) {
    use nix::mount::MsFlags as F;
    let mut flags = F::empty();
    let mut data = Vec::new();
    for opt in o.split(',').filter(|s| !s.is_empty()) {
        match opt {
            "ro" => flags |= F::MS_RDONLY,
            "rw" => flags.remove(F::MS_RDONLY),
            "nosuid" => flags |= F::MS_NOSUID,
            "nodev" => flags |= F::MS_NODEV,
            "noexec" => flags |= F::MS_NOEXEC,
            "sync" => flags |= F::MS_SYNCHRONOUS,
            "noatime" => flags |= F::MS_NOATIME,
            "nodiratime" => flags |= F::MS_NODIRATIME,
            "relatime" => flags |= F::MS_RELATIME,
            "strictatime" => flags |= F::MS_STRICTATIME,
            "bind" => flags |= F::MS_BIND,
            "rbind" => flags |= F::MS_BIND | F::MS_REC,
            "suid" | "dev" | "exec" | "async" | "atime" | "defaults" => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, data)
}

fn mount_options(v: &Volume, target: &Path) -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    let typ = v.options.get("type").cloned().unwrap_or_default();
    let (mut flags, data) = parse_mount_options(v.options.get("o").map(String::as_str).unwrap_or(""));
    if typ == "bind" {
        flags |= MsFlags::MS_BIND;
    }
    let device = v.options.get("device").cloned().unwrap_or_else(|| typ.clone());
    let data = data.join(",");
    let fstype = if flags.contains(MsFlags::MS_BIND) { None } else { Some(typ.as_str()) };
    mount(Some(device.as_str()), target, fstype, flags - MsFlags::MS_RDONLY, if data.is_empty() { None } else { Some(data.as_str()) })
        .map_err(|e| format!("mount {device} on {}: {e}", target.display()))?;
    if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
        // A read-only bind needs a remount.
        let _ = mount(None::<&str>, target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>);
    }
    Ok(())
}

/// True when `p` is itself a mount point (its mountinfo entry exists).
pub fn is_mount_point(p: &Path) -> bool {
    let Ok(s) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = p.to_string_lossy();
    s.lines().any(|l| l.split(' ').nth(4).map(|m| unescape_mountinfo(m) == want).unwrap_or(false))
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

fn unmount_all(p: &Path) {
    for _ in 0..8 {
        if !is_mount_point(p) {
            return;
        }
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Total bytes of regular files under `p`, not following symlinks or crossing mounts.
pub fn du(p: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::symlink_metadata(p) else { return 0 };
    let dev = root.dev();
    let mut total = 0i64;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else { continue };
            if m.is_dir() && m.dev() == dev {
                stack.push(e.path());
            } else if m.is_file() {
                total += m.len() as i64;
            }
        }
    }
    total
}

/// Containers (IDs) that name volume `name`.
pub fn users(e: &Engine, name: &str) -> Vec<String> {
    e.containers
        .list()
        .into_iter()
        .filter(|c| c.mounts.iter().any(|m| m.typ == crate::containers::mounts::MountType::Volume && m.name == name))
        .map(|c| c.id)
        .collect()
}

fn view(e: &Engine, v: &Volume, usage: bool) -> serde_json::Value {
    let mut out = json!({
        "Name": v.name,
        "Driver": "local",
        "Mountpoint": e.volumes.mountpoint(&v.name),
        "CreatedAt": v.created_at,
        "Labels": v.labels,
        "Scope": "local",
        "Options": if v.options.is_empty() { serde_json::Value::Null } else { json!(v.options) },
    });
    if usage {
        out["UsageData"] = json!({
            "Size": du(&e.volumes.mountpoint(&v.name)),
            "RefCount": users(e, &v.name).len(),
        });
    }
    out
}

fn matches(e: &Engine, f: &crate::http_util::Filters, v: &Volume) -> Result<bool, ApiError> {
    let name_ok = f.get("name").is_empty() || f.get("name").iter().any(|n| v.name.contains(n.as_str()));
    let label_ok = f.get("label").iter().all(|l| label_matches(&v.labels, l));
    let driver_ok = f.get("driver").is_empty() || f.get("driver").iter().any(|d| d == "local");
    let dangling_ok = match f.bool("dangling")? {
        None => true,
        Some(d) => d == users(e, &v.name).is_empty(),
    };
    Ok(name_ok && label_ok && driver_ok && dangling_ok)
}

/// GET /volumes
pub async fn list(e: &Arc<Engine>, q: &Query) -> Result<Response<Body>, ApiError> {
    let f = q.filters()?;
    f.only(&["name", "label", "dangling", "driver"])?;
    let mut out = Vec::new();
    for v in e.volumes.list() {
        if matches(e, &f, &v)? {
            out.push(view(e, &v, false));
        }
    }
    Ok(ok_json(&json!({"Volumes": out, "Warnings": []})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    driver: String,
    #[serde(default)]
    driver_opts: Option<HashMap<String, String>>,
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
}

/// A random 64-hex name, as Docker gives unnamed volumes.
pub fn random_name() -> Result<String, ApiError> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).map_err(ApiError::internal)?;
    Ok(hex::encode(b))
}

/// POST /volumes/create
pub async fn create(e: &Arc<Engine>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: CreateBody = crate::images::read_json(req, 1024 * 1024).await?;
    if !body.driver.is_empty() && body.driver != "local" {
        return Err(VolumeError::Driver(body.driver).into());
    }
    let mut labels = body.labels.unwrap_or_default();
    // As in Docker: a volume created without a name is anonymous, so `volume prune` takes it.
    let name = if body.name.is_empty() {
        labels.insert(ANONYMOUS_LABEL.into(), String::new());
        random_name()?
    } else {
        body.name
    };
    let opts = body.driver_opts.unwrap_or_default();
    let v = create_volume(e, &name, labels, opts).await?;
    Ok(json(StatusCode::CREATED, &view(e, &v, false)))
}

/// Create (or find) a volume and publish Docker's `volume create` event when it is new.
pub async fn create_volume(e: &Arc<Engine>, name: &str, labels: HashMap<String, String>, opts: HashMap<String, String>) -> Result<Volume, ApiError> {
    let e2 = Arc::clone(e);
    let n = name.to_string();
    let (v, created) = tokio::task::spawn_blocking(move || e2.volumes.create(&n, labels, opts)).await??;
    if created {
        let mut attrs = HashMap::new();
        attrs.insert("driver".to_string(), "local".to_string());
        e.events.publish(bollard_stubs::models::EventMessageTypeEnum::VOLUME, "create", &v.name, attrs);
    }
    Ok(v)
}

/// GET /volumes/{name}
pub async fn inspect(e: &Arc<Engine>, name: &str) -> Result<Response<Body>, ApiError> {
    let v = e.volumes.get(name)?;
    Ok(ok_json(&view(e, &v, false)))
}

/// Remove a volume unless a container names it.
pub async fn remove_volume(e: &Arc<Engine>, name: &str) -> Result<(), ApiError> {
    e.volumes.get(name)?;
    let users = users(e, name);
    if !users.is_empty() {
        return Err(VolumeError::InUse { name: name.to_string(), users }.into());
    }
    let e2 = Arc::clone(e);
    let n = name.to_string();
    tokio::task::spawn_blocking(move || e2.volumes.remove(&n)).await??;
    let mut attrs = HashMap::new();
    attrs.insert("driver".to_string(), "local".to_string());
    e.events.publish(bollard_stubs::models::EventMessageTypeEnum::VOLUME, "destroy", name, attrs);
    Ok(())
}

/// DELETE /volumes/{name}?force=
pub async fn remove(e: &Arc<Engine>, name: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    match remove_volume(e, name).await {
        // `force` only hides "no such volume", as in Docker.
        Err(ApiError::NotFound(_)) if q.bool("force")? => {}
        r => r?,
    }
    Ok(status_only(StatusCode::NO_CONTENT))
}

/// POST /volumes/prune?filters=: unused anonymous volumes (Docker 23+), or every unused volume
/// with `all=true`; label filters narrow it.
pub async fn prune(e: &Arc<Engine>, q: &Query) -> Result<Response<Body>, ApiError> {
    let f = q.filters()?;
    f.only(&["label", "label!", "all"])?;
    let all = f.bool("all")?.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut reclaimed = 0i64;
    for v in e.volumes.list() {
        if !all && !v.anonymous() {
            continue;
        }
        if !f.get("label").iter().all(|l| label_matches(&v.labels, l)) {
            continue;
        }
        if f.get("label!").iter().any(|l| label_matches(&v.labels, l)) {
            continue;
        }
        if !users(e, &v.name).is_empty() {
            continue;
        }
        let size = du(&e.volumes.mountpoint(&v.name));
        match remove_volume(e, &v.name).await {
            Ok(()) => {
                reclaimed += size;
                deleted.push(v.name.clone());
            }
            Err(err) => tracing::warn!(volume = %v.name, "prune: {err}"),
        }
    }
    Ok(ok_json(&json!({"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed})))
}

/// The volumes part of GET /system/df.
pub fn df(e: &Engine) -> Vec<serde_json::Value> {
    e.volumes.list().iter().map(|v| view(e, v, true)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_options() {
        assert!(valid_name("data_1.x-y"));
        assert!(!valid_name("/abs"));
        assert!(!valid_name("a"));
        assert!(!valid_name("a b"));
        let o = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>();
        assert!(validate_options("v", &o(&[("type", "tmpfs"), ("o", "size=1m")])).is_ok());
        assert!(validate_options("v", &o(&[("o", "size=1m")])).is_err());
        assert!(validate_options("v", &o(&[("type", "none"), ("o", "bind"), ("device", "/")])).is_ok());
        assert!(validate_options("v", &o(&[("type", "none"), ("o", "bind"), ("device", "/no/such/dir")])).is_err());
        assert!(validate_options("v", &o(&[("type", "nfs")])).is_err());
        assert!(validate_options("v", &o(&[("bogus", "1")])).is_err());
        let (f, d) = parse_mount_options("ro,size=10m,mode=0700,nosuid");
        assert!(f.contains(nix::mount::MsFlags::MS_RDONLY | nix::mount::MsFlags::MS_NOSUID));
        assert_eq!(d, ["size=10m", "mode=0700"]);
    }

    #[test]
    fn store_create_is_idempotent_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let s = VolumeStore::open(dir.path()).unwrap();
        let mut labels = HashMap::new();
        labels.insert("k".to_string(), "v".to_string());
        let (v, created) = s.create("data", labels.clone(), HashMap::new()).unwrap();
        assert!(created);
        assert_eq!(v.labels, labels);
        let (_, again) = s.create("data", HashMap::new(), HashMap::new()).unwrap();
        assert!(!again);
        std::fs::write(s.mountpoint("data").join("f"), b"x").unwrap();
        assert!(matches!(s.create("bad name", HashMap::new(), HashMap::new()), Err(VolumeError::InvalidName(_))));
        // A create cut short leaves a directory without a record: removed on open.
        std::fs::create_dir_all(dir.path().join("half/_data")).unwrap();
        let s2 = VolumeStore::open(dir.path()).unwrap();
        assert_eq!(s2.get("data").unwrap().labels, labels);
        assert!(!dir.path().join("half").exists());
        assert_eq!(du(&s2.mountpoint("data")), 1);
        s2.remove("data").unwrap();
        assert!(matches!(s2.get("data"), Err(VolumeError::NotFound(_))));
        assert!(!dir.path().join("data").exists());
        assert!(matches!(s2.remove("data"), Err(VolumeError::NotFound(_))));
    }

    #[test]
    fn in_use_message_lists_users() {
        let e = VolumeError::InUse { name: "v".into(), users: vec!["abc".into(), "def".into()] };
        assert_eq!(e.to_string(), "remove v: volume is in use - [abc, def]");
    }
}
