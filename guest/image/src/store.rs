//! The on-disk store: blobs, resumable ingests, unpacked layers, image
//! records, references, and garbage collection.
//!
//! Layout under the root:
//!   blobs/sha256/<hex>          verified content (configs, manifests, layer blobs)
//!   ingest/<hex>.partial|.lock  downloads in progress (resumable)
//!   layers/<chain hex>/{diff/, meta.json}
//!   images/<id hex>.json
//!   refs.json
//!   tmp/                        unpack dirs and metadata temp files; wiped on open
//!
//! Crash safety: everything becomes visible by a rename of a fully written and
//! fsynced file/dir, so a kill -9 leaves only debris in tmp/ and ingest/.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hasher};
use crate::error::ImageError;
use crate::reference::{looks_like_id, Reference};
use crate::sys;
use crate::unpack::{self, UnpackLimits};

/// Layer blob compression.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Guesses from the magic bytes (used by docker load, whose tars are not labelled).
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Configurable bounds; defaults suit real images.
#[derive(Clone, Debug)]
pub struct StoreLimits {
    /// Maximum uncompressed bytes of one layer.
    pub max_layer_bytes: u64,
    /// Maximum tar entries in one layer.
    pub max_layer_entries: u64,
    /// Unlocked partial downloads older than this are discarded (open and gc).
    pub stale_ingest_after: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_layer_bytes: 64 << 30,
            max_layer_entries: 1_000_000,
            stale_ingest_after: Duration::from_secs(24 * 3600),
        }
    }
}

/// An unpacked layer (layers/<chain>/meta.json).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub chain_id: Digest,
    pub diff_id: Digest,
    pub parent: Option<Digest>,
    /// Sum of regular-file payload sizes in the layer tar (like Docker's layer size).
    pub size: u64,
    /// Source blob, kept in blobs/ so `docker save` can reproduce the tar.
    pub blob: Digest,
    pub compression: Compression,
}

/// An image (images/<id hex>.json). The config JSON is the blob `id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: Digest,
    /// Chain IDs, base first.
    pub layers: Vec<Digest>,
    pub diff_ids: Vec<Digest>,
    /// e.g. "127.0.0.1:5000/busybox@sha256:..."
    #[serde(default)]
    pub repo_digests: Vec<String>,
    #[serde(default)]
    pub created: Option<String>,
    pub size: u64,
    pub loaded_at: String,
    /// The image this one was built or committed on top of (local metadata, as Docker
    /// keeps it: build cache lookups and hiding intermediate images use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Digest>,
}

/// Result of a garbage collection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    pub layers_removed: u64,
    pub blobs_removed: u64,
    pub ingests_removed: u64,
    pub bytes_freed: u64,
}

type LeaseMap = Arc<Mutex<HashMap<Digest, usize>>>;

/// Protects digests (blobs or layer chain IDs) from gc while held.
///
/// Taking a lease (or adding to one) waits for a gc that is under way: that gc decided what to
/// delete before the lease existed. So content found present *after* leasing it stays until
/// the lease is dropped (a pull that finds a layer "already exists" while an rmi collects it
/// would otherwise go on with a layer that is being deleted).
pub struct Lease {
    map: LeaseMap,
    gc_lock: Arc<RwLock<()>>,
    digests: Vec<Digest>,
}

impl Lease {
    /// Adds more digests to this lease (e.g. layers as they get unpacked).
    pub fn add(&mut self, d: Digest) {
        let _g = self.gc_lock.read().unwrap_or_else(|e| e.into_inner());
        *self.map.lock().unwrap().entry(d.clone()).or_default() += 1;
        self.digests.push(d);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for d in &self.digests {
            if let Some(n) = m.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    m.remove(d);
                }
            }
        }
    }
}

#[derive(Default)]
struct Meta {
    images: BTreeMap<Digest, ImageRecord>,
    /// Display form of the reference -> image id.
    refs: BTreeMap<String, Digest>,
}

/// The image store. Send + Sync; all methods are blocking.
pub struct Store {
    root: PathBuf,
    limits: StoreLimits,
    meta: Mutex<Meta>,
    /// Writers that make content visible take it shared; gc takes it exclusive.
    gc_lock: Arc<RwLock<()>>,
    leases: LeaseMap,
}

/// Timestamp format for `ImageRecord::loaded_at`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

fn fsync_dir(p: &Path) -> io::Result<()> {
    File::open(p)?.sync_all()
}

fn rand_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl Store {
    pub fn open(root: &Path) -> Result<Store, ImageError> {
        Self::open_with_limits(root, StoreLimits::default())
    }

    /// Creates the layout and recovers from a crash (see module docs).
    /// Takes no process lock: the daemon holds one.
    pub fn open_with_limits(root: &Path, limits: StoreLimits) -> Result<Store, ImageError> {
        for d in ["blobs/sha256", "ingest", "layers", "images", "tmp"] {
            fs::create_dir_all(root.join(d))?;
        }
        // tmp/ only ever holds unfinished work.
        for e in fs::read_dir(root.join("tmp"))? {
            let p = e?.path();
            let r = if p.is_dir() && !p.is_symlink() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
            if let Err(e) = r {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove temp leftover");
            }
        }
        let store = Store {
            root: root.to_path_buf(),
            limits,
            meta: Mutex::new(Meta::default()),
            gc_lock: Arc::new(RwLock::new(())),
            leases: Arc::new(Mutex::new(HashMap::new())),
        };
        store.clean_ingests(false)?;
        // Layers are renamed in complete, but drop any without metadata anyway.
        for e in fs::read_dir(root.join("layers"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let ok = Digest::from_hex(&name).map(|d| store.has_layer(&d)).unwrap_or(false);
            if !ok {
                tracing::warn!(layer = %name, "removing incomplete layer directory");
                store.discard_dir(&e.path())?;
            }
        }
        let mut meta = Meta::default();
        for e in fs::read_dir(root.join("images"))? {
            let p = e?.path();
            let rec: ImageRecord = match fs::read(&p).map_err(ImageError::from).and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| ImageError::Corrupt(e.to_string()))
            }) {
                Ok(r) => r,
                Err(err) => {
                    tracing::warn!(path = %p.display(), error = %err, "dropping unreadable image record");
                    let _ = fs::remove_file(&p);
                    continue;
                }
            };
            let missing = if !store.has_blob(&rec.id) {
                Some(format!("config blob {}", rec.id))
            } else {
                rec.layers.iter().find(|l| !store.has_layer(l)).map(|l| format!("layer {l}"))
            };
            if let Some(what) = missing {
                tracing::warn!(image = %rec.id, missing = %what, "dropping image with missing content");
                let _ = fs::remove_file(&p);
                continue;
            }
            meta.images.insert(rec.id.clone(), rec);
        }
        match fs::read(root.join("refs.json")) {
            Ok(b) => {
                let refs: BTreeMap<String, Digest> =
                    serde_json::from_slice(&b).map_err(|e| ImageError::Corrupt(format!("refs.json: {e}")))?;
                for (k, v) in refs {
                    if meta.images.contains_key(&v) && Reference::parse_name(&k).is_ok() {
                        meta.refs.insert(k, v);
                    } else {
                        tracing::warn!(reference = %k, "dropping reference to missing image");
                    }
                }
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        *store.meta.lock().unwrap() = meta;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Scratch space on the store's filesystem (so renames into the store are
    /// atomic). Everything in it is deleted by the next `open`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// Writes `bytes` to `dest` atomically: temp in tmp/, fsync, rename, fsync dir.
    fn atomic_write(&self, dest: &Path, bytes: &[u8]) -> Result<(), ImageError> {
        let tmp = self.root.join("tmp").join(format!("meta-{}.tmp", rand_suffix()));
        let res = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, dest)?;
            fsync_dir(dest.parent().unwrap_or(&self.root))
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.map_err(Into::into)
    }

    /// Renames a directory into tmp/ (atomic disappearance) and deletes it.
    fn discard_dir(&self, p: &Path) -> Result<(), ImageError> {
        let dead = self.root.join("tmp").join(format!("dead-{}", rand_suffix()));
        fs::rename(p, &dead)?;
        if fs::symlink_metadata(&dead)?.is_dir() {
            fs::remove_dir_all(&dead)?;
        } else {
            fs::remove_file(&dead)?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- blobs

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Size of a stored blob, if present.
    pub fn blob_size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(d)).ok().filter(|m| m.is_file()).map(|m| m.len())
    }

    /// Opens a blob for streaming (push, save). Not re-verified: use
    /// `read_blob` for small blobs whose content is trusted afterwards.
    pub fn open_blob(&self, d: &Digest) -> Result<File, ImageError> {
        File::open(self.blob_path(d)).map_err(|e| {
            if is_not_found(&e) { ImageError::NotFound(format!("blob {d}")) } else { e.into() }
        })
    }

    /// Reads a whole blob (at most `max` bytes) and re-verifies its digest.
    pub fn read_blob(&self, d: &Digest, max: u64) -> Result<Vec<u8>, ImageError> {
        let f = File::open(self.blob_path(d)).map_err(|e| {
            if is_not_found(&e) { ImageError::NotFound(format!("blob {d}")) } else { e.into() }
        })?;
        let len = f.metadata()?.len();
        if len > max {
            return Err(ImageError::LimitExceeded(format!("blob {d} is {len} bytes (max {max})")));
        }
        let mut buf = Vec::with_capacity(len as usize);
        f.take(max.saturating_add(1)).read_to_end(&mut buf)?;
        if buf.len() as u64 > max {
            return Err(ImageError::LimitExceeded(format!("blob {d} grew past {max} bytes")));
        }
        let actual = Digest::of(&buf);
        if &actual != d {
            return Err(ImageError::DigestMismatch { expected: d.clone(), actual });
        }
        Ok(buf)
    }

    /// Stores a small blob (config, manifest) atomically and returns its digest.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest, ImageError> {
        let d = Digest::of(bytes);
        let _g = self.gc_lock.read().unwrap();
        if !self.has_blob(&d) {
            self.atomic_write(&self.blob_path(&d), bytes)?;
        }
        Ok(d)
    }

    /// A writer for a blob whose digest is only known at the end (a layer tar being made).
    /// Nothing is visible until [`BlobWriter::commit`]; a crash leaves only a file in tmp/.
    pub fn blob_writer(&self) -> Result<BlobWriter<'_>, ImageError> {
        let path = self.root.join("tmp").join(format!("blob-{}.tmp", rand_suffix()));
        let file = File::create(&path)?;
        Ok(BlobWriter { store: self, path, file: Some(io::BufWriter::with_capacity(1 << 20, file)), hasher: Hasher::new(), size: 0 })
    }

    /// Starts (or resumes) writing a blob. Blocks while another `Ingest` of the
    /// same digest (in this or another process) is alive: an exclusive flock on
    /// ingest/<hex>.lock serializes them. Callers should check `has_blob`
    /// afterwards, since the other writer may have committed meanwhile.
    pub fn begin_ingest(&self, d: &Digest, expected_size: Option<u64>) -> Result<Ingest, ImageError> {
        self.ingest_inner(d, expected_size, true)
    }

    /// Like `begin_ingest` but fails with `AlreadyInProgress` instead of waiting.
    pub fn try_begin_ingest(&self, d: &Digest, expected_size: Option<u64>) -> Result<Ingest, ImageError> {
        self.ingest_inner(d, expected_size, false)
    }

    fn lock_ingest(&self, d: &Digest, blocking: bool) -> Result<Option<File>, ImageError> {
        let path = self.root.join("ingest").join(format!("{}.lock", d.hex()));
        loop {
            let f = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
            if !sys::flock(f.as_fd(), blocking)? {
                return Ok(None);
            }
            // gc may have unlinked the lock file while we waited on it:
            // only a lock on the file currently at `path` counts.
            match fs::metadata(&path) {
                Ok(m) if m.ino() == f.metadata()?.ino() => return Ok(Some(f)),
                Ok(_) => continue,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn ingest_inner(&self, d: &Digest, expected_size: Option<u64>, blocking: bool) -> Result<Ingest, ImageError> {
        let lock = self
            .lock_ingest(d, blocking)?
            .ok_or_else(|| ImageError::AlreadyInProgress(format!("ingest of {d}")))?;
        let partial = self.root.join("ingest").join(format!("{}.partial", d.hex()));
        let mut file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&partial)?;
        let mut hasher = Hasher::new();
        let mut offset = file.metadata()?.len();
        if expected_size.is_some_and(|s| offset > s) {
            file.set_len(0)?;
            offset = 0;
        }
        if offset > 0 {
            // Prime the hasher with what is already there.
            file.seek(SeekFrom::Start(0))?;
            let n = io::copy(&mut (&mut file).take(offset), &mut hasher)?;
            if n != offset {
                return Err(ImageError::Corrupt(format!("partial ingest of {d} shrank")));
            }
        }
        file.seek(SeekFrom::Start(offset))?;
        Ok(Ingest {
            store_root: self.root.clone(),
            digest: d.clone(),
            expected_size,
            partial,
            file,
            hasher,
            offset,
            written: offset,
            _lock: lock,
        })
    }

    /// Removes partial ingests nobody holds. `all`: regardless of age.
    fn clean_ingests(&self, all: bool) -> Result<u64, ImageError> {
        let mut removed = 0;
        let dir = self.root.join("ingest");
        let mut hexes = HashSet::new();
        for e in fs::read_dir(&dir)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some(h) = name.strip_suffix(".partial").or_else(|| name.strip_suffix(".lock")) {
                hexes.insert(h.to_string());
            }
        }
        for h in hexes {
            let Ok(d) = Digest::from_hex(&h) else { continue };
            let Some(lock) = self.lock_ingest(&d, false)? else { continue };
            let partial = dir.join(format!("{h}.partial"));
            let stale = match fs::metadata(&partial) {
                Ok(m) => {
                    all || m.modified().ok().and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_some_and(|age| age >= self.limits.stale_ingest_after)
                }
                Err(_) => true,
            };
            if stale {
                if fs::remove_file(&partial).is_ok() {
                    removed += 1;
                }
                // Unlink the lock while holding it; waiters re-check the inode.
                let _ = fs::remove_file(dir.join(format!("{h}.lock")));
            }
            drop(lock);
        }
        Ok(removed)
    }

    // --------------------------------------------------------------- layers

    /// OCI ChainID: sha256(parent + " " + diff_id), or diff_id for the base.
    pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
        match parent {
            None => diff_id.clone(),
            Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()),
        }
    }

    fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("layers").join(chain_id.hex())
    }

    pub fn layer_diff_dir(&self, chain_id: &Digest) -> PathBuf {
        self.layer_dir(chain_id).join("diff")
    }

    pub fn has_layer(&self, chain_id: &Digest) -> bool {
        let d = self.layer_dir(chain_id);
        d.join("meta.json").is_file() && d.join("diff").is_dir()
    }

    pub fn layer_info(&self, chain_id: &Digest) -> Result<LayerInfo, ImageError> {
        let b = fs::read(self.layer_dir(chain_id).join("meta.json")).map_err(|e| {
            if is_not_found(&e) { ImageError::NotFound(format!("layer {chain_id}")) } else { e.into() }
        })?;
        serde_json::from_slice(&b).map_err(|e| ImageError::Corrupt(format!("layer {chain_id}: {e}")))
    }

    fn open_decompressed(&self, blob: &Digest, c: Compression) -> Result<Box<dyn Read>, ImageError> {
        let f = File::open(self.blob_path(blob)).map_err(|e| {
            if is_not_found(&e) { ImageError::NotFound(format!("blob {blob}")) } else { e.into() }
        })?;
        let r = io::BufReader::with_capacity(1 << 16, f);
        Ok(match c {
            Compression::None => Box::new(r),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        })
    }

    /// Decompresses and safely unpacks a stored blob into a new layer; see
    /// `unpack` for the rules. The layer only becomes visible (one rename)
    /// after the uncompressed stream hashed to `expected_diff_id`.
    pub fn unpack_layer(
        &self,
        blob: &Digest,
        compression: Compression,
        expected_diff_id: &Digest,
        parent: Option<&Digest>,
    ) -> Result<LayerInfo, ImageError> {
        let chain = Self::chain_id(parent, expected_diff_id);
        if self.has_layer(&chain) {
            return self.layer_info(&chain);
        }
        if let Some(p) = parent {
            if !self.has_layer(p) {
                return Err(ImageError::NotFound(format!("parent layer {p}")));
            }
        }
        let reader = self.open_decompressed(blob, compression)?;
        let work = self.root.join("tmp").join(format!("unpack-{}-{}", chain.short(), rand_suffix()));
        fs::create_dir(&work)?;
        let guard = RemoveOnDrop(Some(work.clone()));
        let diff = work.join("diff");
        fs::create_dir(&diff)?;
        let limits = UnpackLimits { max_bytes: self.limits.max_layer_bytes, max_entries: self.limits.max_layer_entries };
        let stats = unpack::unpack_tar(reader, &diff, limits)?;
        if &stats.diff_id != expected_diff_id {
            return Err(ImageError::DigestMismatch { expected: expected_diff_id.clone(), actual: stats.diff_id });
        }
        let info = LayerInfo {
            chain_id: chain.clone(),
            diff_id: expected_diff_id.clone(),
            parent: parent.cloned(),
            size: stats.size,
            blob: blob.clone(),
            compression,
        };
        let mut mf = File::create(work.join("meta.json"))?;
        mf.write_all(&serde_json::to_vec_pretty(&info).map_err(|e| ImageError::Corrupt(e.to_string()))?)?;
        mf.sync_all()?;
        // One syncfs is much cheaper than fsyncing every unpacked file.
        sys::syncfs(mf.as_fd())?;
        let _g = self.gc_lock.read().unwrap();
        let dest = self.layer_dir(&chain);
        match fs::rename(&work, &dest) {
            Ok(()) => {
                fsync_dir(&self.root.join("layers"))?;
                drop(guard.disarm());
                Ok(info)
            }
            // A concurrent unpack of the same layer won: use its result.
            Err(_) if self.has_layer(&chain) => self.layer_info(&chain),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the layer's uncompressed tar (whose sha256 is its diff_id) to `w`.
    pub fn write_layer_tar(&self, chain_id: &Digest, w: &mut dyn Write) -> Result<(), ImageError> {
        let info = self.layer_info(chain_id)?;
        let mut r = self.open_decompressed(&info.blob, info.compression)?;
        let mut h = HashingWriter { inner: w, hasher: Hasher::new() };
        io::copy(&mut r, &mut h)?;
        let actual = h.hasher.finish();
        if actual != info.diff_id {
            return Err(ImageError::DigestMismatch { expected: info.diff_id, actual });
        }
        Ok(())
    }

    // --------------------------------------------------------------- images

    fn image_path(&self, id: &Digest) -> PathBuf {
        self.root.join("images").join(format!("{}.json", id.hex()))
    }

    /// An image record may be stored only when its config blob and all its layers exist.
    fn check_complete(&self, rec: &ImageRecord) -> Result<(), ImageError> {
        if !self.has_blob(&rec.id) {
            return Err(ImageError::NotFound(format!("config blob {}", rec.id)));
        }
        if rec.layers.len() != rec.diff_ids.len() {
            return Err(ImageError::Corrupt("layers and diff_ids differ in length".into()));
        }
        if let Some(l) = rec.layers.iter().find(|l| !self.has_layer(l)) {
            return Err(ImageError::NotFound(format!("layer {l}")));
        }
        Ok(())
    }

    /// Stores an image record; its config blob and all layers must exist.
    pub fn put_image(&self, rec: &ImageRecord) -> Result<(), ImageError> {
        let _g = self.gc_lock.read().unwrap();
        self.check_complete(rec)?;
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| ImageError::Corrupt(e.to_string()))?;
        let mut meta = self.meta.lock().unwrap();
        self.atomic_write(&self.image_path(&rec.id), &bytes)?;
        meta.images.insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    /// Stores the image `id` and points `r` at it in one step, under the metadata lock: a
    /// concurrent `delete_image` sees both or neither (a pull racing an rmi of the same image
    /// could otherwise store the record, lose it to the rmi, and fail to tag it). `make` gets
    /// the record stored now, if any (to merge repo digests into). Returns the reference's
    /// previous target.
    pub fn publish_image(
        &self,
        id: &Digest,
        make: impl FnOnce(Option<&ImageRecord>) -> ImageRecord,
        r: Option<&Reference>,
    ) -> Result<Option<Digest>, ImageError> {
        if let Some(r) = r {
            if r.tag.is_none() && r.digest.is_none() {
                return Err(ImageError::InvalidReference(format!("{r}: needs a tag or digest")));
            }
        }
        let _g = self.gc_lock.read().unwrap();
        let mut meta = self.meta.lock().unwrap();
        let rec = make(meta.images.get(id));
        if &rec.id != id {
            return Err(ImageError::Corrupt(format!("image record {} published as {id}", rec.id)));
        }
        self.check_complete(&rec)?;
        if meta.images.get(id) != Some(&rec) {
            let bytes = serde_json::to_vec_pretty(&rec).map_err(|e| ImageError::Corrupt(e.to_string()))?;
            self.atomic_write(&self.image_path(id), &bytes)?;
            meta.images.insert(id.clone(), rec);
        }
        let Some(r) = r else { return Ok(None) };
        self.point_ref(&mut meta, r, id)
    }

    pub fn get_image(&self, id: &Digest) -> Result<ImageRecord, ImageError> {
        self.meta.lock().unwrap().images.get(id).cloned().ok_or_else(|| ImageError::NotFound(format!("image {id}")))
    }

    pub fn list_images(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self.meta.lock().unwrap().images.values().cloned().collect())
    }

    /// Removes the record and every reference to it; gc frees the content.
    pub fn delete_image(&self, id: &Digest) -> Result<(), ImageError> {
        let mut meta = self.meta.lock().unwrap();
        if !meta.images.contains_key(id) {
            return Err(ImageError::NotFound(format!("image {id}")));
        }
        let mut refs = meta.refs.clone();
        refs.retain(|_, v| v != id);
        if refs.len() != meta.refs.len() {
            self.write_refs(&refs)?;
            meta.refs = refs;
        }
        self.remove_record(&mut meta, id)
    }

    /// Removes the record only while no reference points at it, under the metadata lock; false
    /// (and nothing changed) when one does. rmi untags first and then calls this: a pull or tag
    /// of the same image that lands in between keeps its new name and the image, as if it had
    /// come just after the rmi, instead of losing the name it was just given.
    pub fn delete_image_if_unreferenced(&self, id: &Digest) -> Result<bool, ImageError> {
        let mut meta = self.meta.lock().unwrap();
        if !meta.images.contains_key(id) {
            return Err(ImageError::NotFound(format!("image {id}")));
        }
        if meta.refs.values().any(|v| v == id) {
            return Ok(false);
        }
        self.remove_record(&mut meta, id)?;
        Ok(true)
    }

    /// The record's file, then its entry. Callers hold the meta lock.
    fn remove_record(&self, meta: &mut Meta, id: &Digest) -> Result<(), ImageError> {
        match fs::remove_file(self.image_path(id)) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        fsync_dir(&self.root.join("images"))?;
        meta.images.remove(id);
        Ok(())
    }

    // ----------------------------------------------------------- references

    fn write_refs(&self, refs: &BTreeMap<String, Digest>) -> Result<(), ImageError> {
        let bytes = serde_json::to_vec_pretty(refs).map_err(|e| ImageError::Corrupt(e.to_string()))?;
        self.atomic_write(&self.root.join("refs.json"), &bytes)
    }

    /// Points `r` (tagged or digested) at image `id`; returns the previous target.
    pub fn set_reference(&self, r: &Reference, id: &Digest) -> Result<Option<Digest>, ImageError> {
        if r.tag.is_none() && r.digest.is_none() {
            return Err(ImageError::InvalidReference(format!("{r}: needs a tag or digest")));
        }
        let mut meta = self.meta.lock().unwrap();
        if !meta.images.contains_key(id) {
            return Err(ImageError::NotFound(format!("image {id}")));
        }
        self.point_ref(&mut meta, r, id)
    }

    /// Points `r` at `id` on disk, then in memory (a failed write changes neither); the
    /// previous target. Callers hold the meta lock.
    fn point_ref(&self, meta: &mut Meta, r: &Reference, id: &Digest) -> Result<Option<Digest>, ImageError> {
        // `sha256:x` would read as a digest wherever an image ID is accepted: Docker refuses
        // such a name on every path that names an image, and so does this one place.
        if r.familiar_name() == "sha256" {
            return Err(ImageError::InvalidReference(format!(
                "{}: refusing to create an ambiguous tag using digest algorithm as name",
                r.familiar_string()
            )));
        }
        let key = r.to_string();
        if meta.refs.get(&key) == Some(id) {
            return Ok(Some(id.clone()));
        }
        let mut refs = meta.refs.clone();
        let prev = refs.insert(key, id.clone());
        self.write_refs(&refs)?;
        meta.refs = refs;
        Ok(prev)
    }

    pub fn remove_reference(&self, r: &Reference) -> Result<bool, ImageError> {
        let mut meta = self.meta.lock().unwrap();
        let mut refs = meta.refs.clone();
        if refs.remove(&r.to_string()).is_none() {
            return Ok(false);
        }
        self.write_refs(&refs)?;
        meta.refs = refs;
        Ok(true)
    }

    pub fn references(&self) -> Result<Vec<(Reference, Digest)>, ImageError> {
        let meta = self.meta.lock().unwrap();
        Ok(meta.refs.iter().filter_map(|(k, v)| Some((Reference::parse_name(k).ok()?, v.clone()))).collect())
    }

    pub fn references_to(&self, id: &Digest) -> Result<Vec<Reference>, ImageError> {
        Ok(self.references()?.into_iter().filter(|(_, v)| v == id).map(|(r, _)| r).collect())
    }

    /// Docker's lookup order: full image ID, then a reference (tag defaults to
    /// latest; name@digest also matches repo_digests), then a unique ID prefix.
    pub fn resolve(&self, name_or_id: &str) -> Result<Digest, ImageError> {
        let s = name_or_id;
        let meta = self.meta.lock().unwrap();
        let bare = s.strip_prefix("sha256:").unwrap_or(s);
        if bare.len() == 64 && looks_like_id(bare) {
            let d = Digest::from_hex(bare)?;
            return if meta.images.contains_key(&d) {
                Ok(d)
            } else {
                Err(ImageError::NotFound(format!("No such image: {s}")))
            };
        }
        if let Ok(r) = Reference::parse(s) {
            if let Some(id) = meta.refs.get(&r.to_string()) {
                return Ok(id.clone());
            }
            if let Some(d) = &r.digest {
                for img in meta.images.values() {
                    for rd in &img.repo_digests {
                        if let Ok(x) = Reference::parse_name(rd) {
                            if x.full_name() == r.full_name() && x.digest.as_ref() == Some(d) {
                                return Ok(img.id.clone());
                            }
                        }
                    }
                }
            }
        }
        if looks_like_id(s) {
            let mut hits = meta.images.keys().filter(|k| k.hex().starts_with(bare));
            if let Some(first) = hits.next() {
                if hits.next().is_some() {
                    return Err(ImageError::Ambiguous(format!("{s} matches more than one image")));
                }
                return Ok(first.clone());
            }
        }
        Err(ImageError::NotFound(format!("No such image: {s:.200}")))
    }

    // ------------------------------------------------------------------- gc

    /// Protects blobs/layers from gc until the returned `Lease` is dropped
    /// (the engine holds one for the duration of a pull or load).
    pub fn lease(&self, digests: impl IntoIterator<Item = Digest>) -> Lease {
        let mut l = Lease { map: self.leases.clone(), gc_lock: self.gc_lock.clone(), digests: Vec::new() };
        for d in digests {
            l.add(d);
        }
        l
    }

    /// Removes layers and blobs that no image references and nobody leased,
    /// plus unlocked stale ingests.
    pub fn gc(&self) -> Result<GcStats, ImageError> {
        let _g = self.gc_lock.write().unwrap();
        let mut st = GcStats::default();
        let leased: HashSet<Digest> = self.leases.lock().unwrap().keys().cloned().collect();
        let (mut keep_layers, mut keep_blobs) = (HashSet::new(), HashSet::new());
        {
            let meta = self.meta.lock().unwrap();
            for img in meta.images.values() {
                keep_blobs.insert(img.id.clone());
                keep_layers.extend(img.layers.iter().cloned());
                for rd in &img.repo_digests {
                    if let Some(d) = rd.rsplit_once('@').and_then(|(_, d)| Digest::parse(d).ok()) {
                        keep_blobs.insert(d);
                    }
                }
            }
        }
        keep_layers.extend(leased.iter().cloned());
        keep_blobs.extend(leased.iter().cloned());
        for e in fs::read_dir(self.root.join("layers"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(d) = Digest::from_hex(&name) else { continue };
            if keep_layers.contains(&d) {
                if let Ok(info) = self.layer_info(&d) {
                    keep_blobs.insert(info.blob);
                }
                continue;
            }
            st.bytes_freed += self.layer_info(&d).map(|i| i.size).unwrap_or(0);
            self.discard_dir(&e.path())?;
            st.layers_removed += 1;
        }
        for e in fs::read_dir(self.root.join("blobs/sha256"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(d) = Digest::from_hex(&name) else { continue };
            if keep_blobs.contains(&d) {
                continue;
            }
            st.bytes_freed += e.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(e.path())?;
            st.blobs_removed += 1;
        }
        st.ingests_removed = self.clean_ingests(false)?;
        Ok(st)
    }
}

struct RemoveOnDrop(Option<PathBuf>);
impl RemoveOnDrop {
    fn disarm(mut self) -> Self {
        self.0 = None;
        self
    }
}
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if let Err(e) = fs::remove_dir_all(&p) {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove unpack temp dir");
            }
        }
    }
}

struct HashingWriter<'a> {
    inner: &'a mut dyn Write,
    hasher: Hasher,
}
impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// See [`Store::blob_writer`].
pub struct BlobWriter<'s> {
    store: &'s Store,
    path: PathBuf,
    file: Option<io::BufWriter<File>>,
    hasher: Hasher,
    size: u64,
}

impl BlobWriter<'_> {
    /// fsync, then rename into blobs/ under its digest. Returns (digest, size).
    pub fn commit(mut self) -> Result<(Digest, u64), ImageError> {
        let f = self.file.take().expect("not committed twice");
        let f = f.into_inner().map_err(|e| ImageError::Io(e.into_error()))?;
        f.sync_all()?;
        let d = self.hasher.clone().finish();
        let _g = self.store.gc_lock.read().unwrap();
        let dest = self.store.blob_path(&d);
        if dest.is_file() {
            let _ = fs::remove_file(&self.path);
        } else {
            fs::rename(&self.path, &dest)?;
            fsync_dir(dest.parent().unwrap_or(&self.store.root))?;
        }
        Ok((d, self.size))
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.as_mut().expect("open").write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("open").flush()
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A blob being written to ingest/<hex>.partial. Holds the per-digest lock.
pub struct Ingest {
    store_root: PathBuf,
    digest: Digest,
    expected_size: Option<u64>,
    partial: PathBuf,
    file: File,
    hasher: Hasher,
    offset: u64,
    written: u64,
    _lock: File,
}

impl Ingest {
    /// Bytes already present when this ingest started (resume point).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Total bytes in the partial file so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Starts over (e.g. the server ignored our Range request).
    pub fn reset(&mut self) -> Result<(), ImageError> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.hasher = Hasher::new();
        self.offset = 0;
        self.written = 0;
        Ok(())
    }

    /// Verifies size and digest, then makes the blob visible. On mismatch the
    /// partial file is removed. Ok if the blob already exists.
    pub fn commit(self) -> Result<(), ImageError> {
        let dest = self.store_root.join("blobs/sha256").join(self.digest.hex());
        if dest.is_file() {
            let _ = fs::remove_file(&self.partial);
            return Ok(());
        }
        if let Some(exp) = self.expected_size {
            if exp != self.written {
                let _ = fs::remove_file(&self.partial);
                return Err(ImageError::SizeMismatch { expected: exp, actual: self.written });
            }
        }
        let actual = self.hasher.clone().finish();
        if actual != self.digest {
            let _ = fs::remove_file(&self.partial);
            return Err(ImageError::DigestMismatch { expected: self.digest.clone(), actual });
        }
        self.file.sync_all()?;
        fs::rename(&self.partial, &dest)?;
        fsync_dir(dest.parent().unwrap())?;
        Ok(())
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(exp) = self.expected_size {
            if self.written + buf.len() as u64 > exp {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("blob {} larger than {exp} bytes", self.digest)));
            }
        }
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
