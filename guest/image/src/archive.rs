//! `docker save` / `docker load` archives.
//!
//! `save` writes Docker 25+'s combined layout: an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/<hex>`) plus the legacy `manifest.json` and
//! `repositories`, so docker 20.10+, docker 25+ (both image stores) and our own
//! `load` accept it.
//!
//! `load` accepts docker archives (manifest.json, including the pre-25 layout
//! with `<id>/layer.tar` and symlinked duplicates) and OCI layouts (index.json,
//! possibly nested indexes). The archive is an untrusted upload, so:
//! - entry names are normalised and `..`/absolute names are refused;
//! - paths named in manifest.json are only ever looked up among the archive's
//!   own entries, and OCI blob paths are only built from parsed `Digest`s;
//! - JSON documents, the entry count and the total size are bounded;
//! - nothing becomes visible (images, tags) until every layer of every image
//!   in the archive has been verified and committed.
//!
//! The tar stream is sequential and manifest.json may come last, so entries
//! are staged while reading: `blobs/sha256/<hex>` goes straight into the
//! content store (content-addressed, verified on commit and unreferenced until
//! the end), everything else into a private temp dir under the store's root.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hasher};
use crate::error::ImageError;
use crate::reference::Reference;
use crate::store::{now_rfc3339, Compression, ImageRecord, Lease, Store};

/// Media types written by `save` and recognised by `load`.
const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Annotation keys containerd/docker put on index.json descriptors.
const ANN_IMAGE_NAME: &str = "io.containerd.image.name";
const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// BuildKit marks attestation manifests this way; they are not images.
const ANN_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// Bound for reading our own stored configs back (they were bounded on the
/// way in; this only guards against a corrupt store).
const MAX_SAVED_CONFIG_BYTES: u64 = 64 << 20;

const OCI_LAYOUT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";

/// Longest image name we accept from an archive. Docker's own limit for the
/// repository part is 255 and for a tag 128; anything longer is hostile.
const MAX_REFERENCE_LEN: usize = 512;

/// Errors of save/load. Every archive-content problem has its own variant so
/// the engine can answer 400 (bad upload) instead of 500.
#[derive(thiserror::Error, Debug)]
pub enum ArchiveError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("archive i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("unsafe path in archive: {0:?}")]
    UnsafePath(String),
    #[error("archive refers to {0:?}, which is not a file in the archive")]
    MissingEntry(String),
    #[error("archive ends in the middle of {0:?}")]
    Truncated(String),
    #[error("archive contains {0:?} more than once")]
    DuplicateEntry(String),
    #[error("invalid {file} in archive: {reason}")]
    InvalidJson { file: String, reason: String },
    #[error("invalid image name {name:?} in {file}: {reason}")]
    InvalidReference {
        name: String,
        file: String,
        reason: String,
    },
    #[error("archive limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("image {image}: config has {config} layer diff_ids but the manifest lists {manifest} layers")]
    LayerCountMismatch {
        image: Digest,
        config: usize,
        manifest: usize,
    },
    #[error("layer {0:?} uses an unsupported compression (only tar, gzip and zstd are accepted)")]
    UnsupportedCompression(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("archive contains no image (neither manifest.json nor index.json)")]
    NoImages,
    #[error("image {0} not found")]
    ImageNotFound(Digest),
    #[error("failed to encode {0}: {1}")]
    Encode(&'static str, serde_json::Error),
}

/// Bounds for `load`. Defaults fit real images (hundreds of layers, tens of GiB)
/// while stopping uploads meant to exhaust memory or disk.
#[derive(Clone, Debug)]
pub struct LoadLimits {
    /// Tar entries of any type.
    pub max_entries: usize,
    /// Bytes read from the (uncompressed) archive stream.
    pub max_total_bytes: u64,
    /// Size of any JSON document read into memory (manifest.json, configs, ...).
    pub max_json_bytes: u64,
    /// Images in one archive.
    pub max_images: usize,
    /// Layers per image.
    pub max_layers: usize,
    /// Nesting of OCI indexes (index -> index -> manifest).
    pub max_index_depth: usize,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            max_entries: 100_000,
            max_total_bytes: 64 << 30,
            max_json_bytes: 8 << 20,
            max_images: 1_000,
            // overlay2 tops out at ~125 layers; leave room, but bound the work.
            max_layers: 256,
            max_index_depth: 4,
        }
    }
}

/// One image imported by `load`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedImage {
    pub id: Digest,
    pub references: Vec<Reference>,
}

// ---------------------------------------------------------------------------
// JSON documents. Hand-written serde structs instead of oci-spec's: loading
// must be lenient about fields we don't use (and about docker's manifest.json,
// which oci-spec does not model), and saving only needs a handful of fields.

/// One element of docker's manifest.json.
#[derive(Serialize, Deserialize, Debug)]
struct ManifestItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
}

#[derive(Serialize, Deserialize, Debug)]
struct OciIndex {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<Descriptor>,
}

#[derive(Serialize, Deserialize, Debug)]
struct OciManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// Either kind of document an index entry can point at; told apart by fields
/// because `mediaType` is optional in OCI documents.
#[derive(Deserialize, Debug)]
struct AnyManifest {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// The part of an image config load needs.
#[derive(Deserialize, Debug)]
struct ConfigProbe {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    created: Option<String>,
    rootfs: RootFs,
}

#[derive(Deserialize, Debug)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    diff_ids: Vec<String>,
}

// ---------------------------------------------------------------------------
// save

/// docker save: writes every image (config, uncompressed layers, OCI manifest)
/// and the given tags as a tar stream. Only tagged references are written
/// (like docker, digest references cannot be restored by `load`).
pub fn save(
    store: &Store,
    images: &[(Digest, Vec<Reference>)],
    w: &mut dyn Write,
) -> Result<(), ArchiveError> {
    // Merge duplicate ids so each image is written once, keeping input order.
    let mut order: Vec<Digest> = Vec::new();
    let mut refs_of: HashMap<Digest, Vec<Reference>> = HashMap::new();
    for (id, refs) in images {
        let entry = refs_of.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            Vec::new()
        });
        for r in refs {
            if r.tag.is_some() && r.digest.is_none() && !entry.contains(r) {
                entry.push(r.clone());
            }
        }
    }

    // Look everything up before the first byte is written: an error after
    // that can only show up as a truncated download.
    let mut found = Vec::with_capacity(order.len());
    for id in &order {
        let rec = match store.get_image(id) {
            Ok(rec) => rec,
            Err(ImageError::NotFound(_)) => return Err(ArchiveError::ImageNotFound(id.clone())),
            Err(e) => return Err(e.into()),
        };
        let config = store.read_blob(id, MAX_SAVED_CONFIG_BYTES)?;
        let probe: ConfigProbe = serde_json::from_slice(&config)
            .map_err(|e| ImageError::Corrupt(format!("config of image {id}: {e}")))?;
        if rec.layers.len() != rec.diff_ids.len() {
            return Err(
                ImageError::Corrupt(format!("image {id}: layers and diff_ids differ")).into(),
            );
        }
        if let Some(missing) = rec.layers.iter().find(|l| !store.has_layer(l)) {
            return Err(ImageError::NotFound(format!("layer {missing} of image {id}")).into());
        }
        found.push((rec, config, probe));
    }

    let mut tar = tar::Builder::new(w);
    append_dir(&mut tar, "blobs/")?;
    append_dir(&mut tar, "blobs/sha256/")?;

    // Blobs already in the stream and their sizes (layers are shared between images).
    let mut written: HashMap<Digest, u64> = HashMap::new();
    let mut manifest_json: Vec<ManifestItem> = Vec::new();
    let mut index: Vec<Descriptor> = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();

    for (rec, config, probe) in &found {
        let id = &rec.id;
        let mtime = rec
            .created
            .as_deref()
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            .map(|t| t.timestamp().max(0) as u64)
            .unwrap_or(0);

        if !written.contains_key(id) {
            append_bytes(&mut tar, &blob_name(id), config, mtime)?;
            written.insert(id.clone(), config.len() as u64);
        }
        let mut layer_descs = Vec::with_capacity(rec.layers.len());
        for (chain, diff_id) in rec.layers.iter().zip(&rec.diff_ids) {
            let size = match written.get(diff_id) {
                // Shared with an earlier image: already in the stream.
                Some(size) => *size,
                None => {
                    let size = append_layer(store, &mut tar, chain, diff_id, mtime)?;
                    written.insert(diff_id.clone(), size);
                    size
                }
            };
            layer_descs.push(Descriptor {
                media_type: MT_OCI_LAYER_TAR.into(),
                digest: diff_id.to_string(),
                size: size as i64,
                annotations: None,
                platform: None,
            });
        }

        let platform = match (&probe.os, &probe.architecture) {
            (Some(os), Some(arch)) if !os.is_empty() && !arch.is_empty() => Some(Platform {
                architecture: arch.clone(),
                os: os.clone(),
                variant: probe.variant.clone().filter(|v| !v.is_empty()),
            }),
            _ => None,
        };
        let manifest = OciManifest {
            schema_version: 2,
            media_type: Some(MT_OCI_MANIFEST.into()),
            config: Descriptor {
                media_type: MT_OCI_CONFIG.into(),
                digest: id.to_string(),
                size: config.len() as i64,
                annotations: None,
                platform: None,
            },
            layers: layer_descs,
        };
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|e| ArchiveError::Encode("OCI manifest", e))?;
        let manifest_digest = Digest::of(&manifest_bytes);
        if !written.contains_key(&manifest_digest) {
            append_bytes(&mut tar, &blob_name(&manifest_digest), &manifest_bytes, 0)?;
            written.insert(manifest_digest.clone(), manifest_bytes.len() as u64);
        }

        let refs = &refs_of[id];
        let descriptor = |annotations| Descriptor {
            media_type: MT_OCI_MANIFEST.into(),
            digest: manifest_digest.to_string(),
            size: manifest_bytes.len() as i64,
            annotations,
            platform: platform.clone(),
        };
        if refs.is_empty() {
            index.push(descriptor(None));
        }
        let mut repo_tags = Vec::new();
        for r in refs {
            let tag = r.tag.clone().unwrap_or_default();
            let mut ann = BTreeMap::new();
            ann.insert(ANN_IMAGE_NAME.to_string(), r.to_string());
            ann.insert(ANN_REF_NAME.to_string(), tag.clone());
            index.push(descriptor(Some(ann)));
            repo_tags.push(r.familiar_string());
            if let Some(top) = rec.diff_ids.last() {
                repositories
                    .entry(r.familiar_name())
                    .or_default()
                    .insert(tag, top.hex().to_string());
            }
        }
        manifest_json.push(ManifestItem {
            config: blob_name(id),
            repo_tags: Some(repo_tags),
            layers: rec.diff_ids.iter().map(blob_name).collect(),
        });
    }

    let index_doc = OciIndex {
        schema_version: 2,
        media_type: Some(MT_OCI_INDEX.into()),
        manifests: index,
    };
    let index_bytes =
        serde_json::to_vec(&index_doc).map_err(|e| ArchiveError::Encode("index.json", e))?;
    append_bytes(&mut tar, "index.json", &index_bytes, 0)?;
    let manifest_bytes =
        serde_json::to_vec(&manifest_json).map_err(|e| ArchiveError::Encode("manifest.json", e))?;
    append_bytes(&mut tar, "manifest.json", &manifest_bytes, 0)?;
    append_bytes(&mut tar, "oci-layout", OCI_LAYOUT.as_bytes(), 0)?;
    if !repositories.is_empty() {
        let repo_bytes = serde_json::to_vec(&repositories)
            .map_err(|e| ArchiveError::Encode("repositories", e))?;
        append_bytes(&mut tar, "repositories", &repo_bytes, 0)?;
    }
    tar.finish()?;
    Ok(())
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn header(kind: tar::EntryType, size: u64, mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> io::Result<()> {
    let mut h = header(tar::EntryType::Directory, 0, 0o755, 0);
    tar.append_data(&mut h, name, io::empty())
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
    mtime: u64,
) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644, mtime);
    tar.append_data(&mut h, name, data)
}

/// Writes one layer as `blobs/sha256/<diff_id>`. A tar header needs the size
/// up front and a layer can be far larger than memory, so the layer tar is
/// first spooled to a temp file under the store's tmp dir (also letting us
/// check its digest before anything is sent), then streamed. Returns its size.
fn append_layer<W: Write>(
    store: &Store,
    tar: &mut tar::Builder<W>,
    chain: &Digest,
    diff_id: &Digest,
    mtime: u64,
) -> Result<u64, ArchiveError> {
    let tmp = TempDir::new(&store.tmp_dir(), "save")?;
    let path = tmp.path().join("layer.tar");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let mut tee = HashingWriter {
        inner: BufWriter::new(file),
        hasher: Hasher::new(),
        len: 0,
    };
    store.write_layer_tar(chain, &mut tee)?;
    tee.inner.flush()?;
    let got = tee.hasher.finish();
    if got != *diff_id {
        return Err(ImageError::DigestMismatch {
            expected: diff_id.clone(),
            actual: got,
        }
        .into());
    }
    let size = tee.len;
    let mut file = tee.inner.into_inner().map_err(|e| e.into_error())?;
    file.seek(SeekFrom::Start(0))?;
    let mut h = header(tar::EntryType::Regular, size, 0o644, mtime);
    tar.append_data(&mut h, blob_name(diff_id), file.take(size))?;
    Ok(size)
}

/// Passes writes through while hashing and counting them.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Hasher,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A private directory removed on drop, so staging never outlives a save or
/// load whatever way it ends. Hand-written because `tempfile` is only a
/// dev-dependency of this crate and this needs nothing more than a random name.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path, prefix: &str) -> io::Result<TempDir> {
        fs::create_dir_all(parent)?;
        for _ in 0..16 {
            let name = format!("{prefix}-{:016x}", rand::random::<u64>());
            let path = parent.join(name);
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temp dir name",
        ))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %e, "removing temp dir");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// load

/// docker load: imports every image of a docker or OCI archive. Images and
/// tags are only recorded after all layers of all images were committed, so
/// a failing upload leaves `list_images()` and every tag untouched (the blobs
/// and layers already imported are unreferenced and left to GC).
pub fn load(
    store: &Store,
    r: &mut dyn Read,
    limits: &LoadLimits,
) -> Result<Vec<LoadedImage>, ArchiveError> {
    let staging = Staging::read(store, r, limits)?;
    let plans = staging.plan()?;
    commit(store, &staging, plans)
}

/// Where the bytes of one archive entry ended up.
#[derive(Clone, Debug)]
enum Staged {
    /// In the content store (entry named `blobs/sha256/<hex>`, verified on ingest).
    Blob { digest: Digest, size: u64 },
    /// In the staging dir under a name of our own, digest computed while copying.
    File {
        path: PathBuf,
        digest: Digest,
        size: u64,
    },
}

impl Staged {
    fn digest(&self) -> &Digest {
        match self {
            Staged::Blob { digest, .. } | Staged::File { digest, .. } => digest,
        }
    }
    fn size(&self) -> u64 {
        match self {
            Staged::Blob { size, .. } | Staged::File { size, .. } => *size,
        }
    }
}

/// An image to import, fully validated except for layer contents.
struct Plan {
    id: Digest,
    config: Vec<u8>,
    diff_ids: Vec<Digest>,
    layers: Vec<Staged>,
    references: Vec<Reference>,
}

/// The archive's entries after one sequential pass.
struct Staging<'a> {
    store: &'a Store,
    limits: &'a LoadLimits,
    dir: TempDir,
    /// Keeps gc away from every blob and layer imported so far until the
    /// images referencing them are recorded.
    lease: std::cell::RefCell<Lease>,
    files: HashMap<String, Staged>,
    /// Symlinks and hard links: normalised name -> normalised target.
    links: HashMap<String, String>,
}

/// Bounds the bytes read from the upload; remembers whether it was the limit
/// that stopped the read so the error can say so (tar wraps io errors).
struct LimitedReader<'r> {
    inner: &'r mut dyn Read,
    remaining: u64,
    exceeded: bool,
}

impl Read for LimitedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.exceeded = true;
            return Err(io::Error::other("archive exceeds the size limit"));
        }
        let max = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

impl<'a> Staging<'a> {
    fn read(
        store: &'a Store,
        r: &mut dyn Read,
        limits: &'a LoadLimits,
    ) -> Result<Staging<'a>, ArchiveError> {
        let dir = TempDir::new(&store.tmp_dir(), "load")?;
        let lease = std::cell::RefCell::new(store.lease([]));
        let mut st = Staging {
            store,
            limits,
            dir,
            lease,
            files: HashMap::new(),
            links: HashMap::new(),
        };
        let mut input = decompressed(r)?;
        let mut limited = LimitedReader {
            inner: &mut *input,
            remaining: limits.max_total_bytes,
            exceeded: false,
        };
        let res = {
            let mut archive = tar::Archive::new(&mut limited);
            st.read_entries(&mut archive)
        };
        match res {
            Err(_) if limited.exceeded => Err(ArchiveError::LimitExceeded(format!(
                "archive is larger than {} bytes",
                limits.max_total_bytes
            ))),
            Err(e) => Err(e),
            Ok(()) => Ok(st),
        }
    }

    fn read_entries<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), ArchiveError> {
        let mut count = 0usize;
        for entry in archive.entries()? {
            let mut entry = entry?;
            count += 1;
            if count > self.limits.max_entries {
                return Err(ArchiveError::LimitExceeded(format!(
                    "archive has more than {} entries",
                    self.limits.max_entries
                )));
            }
            let kind = entry.header().entry_type();
            let Some(name) = normalize_name(&entry.path_bytes())? else {
                continue; // the archive root itself ("./")
            };
            if kind.is_dir() {
                continue;
            }
            if kind.is_symlink() || kind.is_hard_link() {
                let raw = entry.link_name_bytes().ok_or_else(|| {
                    ArchiveError::UnsafePath(format!("{name}: link without target"))
                })?;
                let target = if kind.is_symlink() {
                    resolve_symlink(&name, &raw)?
                } else {
                    // Hard link targets are archive paths.
                    normalize_name(&raw)?.ok_or_else(|| ArchiveError::UnsafePath(name.clone()))?
                };
                self.check_new(&name)?;
                self.links.insert(name, target);
                continue;
            }
            if !(kind.is_file() || kind.is_contiguous()) {
                // PAX global headers, devices, fifos: never part of an image
                // archive and never materialised, so they are skipped.
                continue;
            }
            self.check_new(&name)?;
            let size = entry.size();
            // The tar reader reports a short entry at EOF as a short read.
            let staged = match blob_name_digest(&name) {
                Some(digest) => self.ingest_entry(&mut entry, &name, digest, size, count)?,
                None => self.stage_file(&mut entry, count)?,
            };
            if staged.size() != size && matches!(staged, Staged::File { .. }) {
                return Err(ArchiveError::Truncated(name));
            }
            self.files.insert(name, staged);
        }
        Ok(())
    }

    fn check_new(&self, name: &str) -> Result<(), ArchiveError> {
        if self.files.contains_key(name) || self.links.contains_key(name) {
            return Err(ArchiveError::DuplicateEntry(name.to_string()));
        }
        Ok(())
    }

    /// `blobs/sha256/<hex>`: straight into the content store, verified there.
    fn ingest_entry(
        &self,
        entry: &mut dyn Read,
        name: &str,
        digest: Digest,
        size: u64,
        n: usize,
    ) -> Result<Staged, ArchiveError> {
        self.lease.borrow_mut().add(digest.clone());
        if self.store.has_blob(&digest) {
            // Ours is already verified; the archive's copy is not needed.
            io::copy(entry, &mut io::sink())?;
            let size = fs::metadata(self.store.blob_path(&digest))?.len();
            return Ok(Staged::Blob { digest, size });
        }
        match self.store.try_begin_ingest(&digest, Some(size)) {
            Ok(mut ingest) => {
                if ingest.offset() > 0 {
                    // A partial from an interrupted pull: we send it all again.
                    ingest.reset()?;
                }
                match io::copy(entry, &mut ingest) {
                    Ok(n) if n == size => {}
                    // A broken upload is not worth resuming: free the space now.
                    Ok(_) => {
                        let _ = ingest.reset();
                        return Err(ArchiveError::Truncated(name.to_string()));
                    }
                    Err(e) => {
                        let _ = ingest.reset();
                        return Err(e.into());
                    }
                }
                ingest.commit()?;
                Ok(Staged::Blob { digest, size })
            }
            // A concurrent pull is writing the same blob: keep our own copy
            // and verify it ourselves.
            Err(ImageError::AlreadyInProgress(_)) => {
                let staged = self.stage_file(entry, n)?;
                if *staged.digest() != digest {
                    return Err(ImageError::DigestMismatch {
                        expected: digest,
                        actual: staged.digest().clone(),
                    }
                    .into());
                }
                Ok(staged)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Any other file: into the staging dir under its entry number (never a
    /// name derived from the archive), hashing on the way.
    fn stage_file(&self, entry: &mut dyn Read, n: usize) -> Result<Staged, ArchiveError> {
        let path = self.dir.path().join(n.to_string());
        let file = File::create(&path)?;
        let mut w = HashingWriter {
            inner: BufWriter::new(file),
            hasher: Hasher::new(),
            len: 0,
        };
        io::copy(entry, &mut w)?;
        w.inner.flush()?;
        Ok(Staged::File {
            path,
            digest: w.hasher.finish(),
            size: w.len,
        })
    }

    /// Looks up a path named inside the archive (manifest.json, legacy
    /// layouts): it must be one of the archive's own entries.
    fn resolve(&self, raw: &str) -> Result<&Staged, ArchiveError> {
        let mut name = normalize_name(raw.as_bytes())?
            .ok_or_else(|| ArchiveError::MissingEntry(raw.to_string()))?;
        for _ in 0..16 {
            if let Some(s) = self.files.get(&name) {
                return Ok(s);
            }
            match self.links.get(&name) {
                Some(target) => name = target.clone(),
                None => return Err(ArchiveError::MissingEntry(raw.to_string())),
            }
        }
        Err(ArchiveError::UnsafePath(format!(
            "{raw}: too many levels of links"
        )))
    }

    /// Looks up an OCI blob by a digest parsed from the archive; the path is
    /// built from the parsed digest only.
    fn blob(&self, digest: &Digest) -> Result<&Staged, ArchiveError> {
        let staged = self.resolve(&blob_name(digest))?;
        if staged.digest() != digest {
            return Err(ImageError::DigestMismatch {
                expected: digest.clone(),
                actual: staged.digest().clone(),
            }
            .into());
        }
        Ok(staged)
    }

    fn read_json(&self, staged: &Staged, what: &str) -> Result<Vec<u8>, ArchiveError> {
        let max = self.limits.max_json_bytes;
        if staged.size() > max {
            return Err(ArchiveError::LimitExceeded(format!(
                "{what} is larger than {max} bytes"
            )));
        }
        Ok(match staged {
            Staged::Blob { digest, .. } => self.store.read_blob(digest, max)?,
            Staged::File { path, .. } => {
                let mut buf = Vec::new();
                File::open(path)?.take(max + 1).read_to_end(&mut buf)?;
                buf
            }
        })
    }

    /// Makes sure a staged entry is a blob of the content store.
    fn ensure_blob(&self, staged: &Staged) -> Result<Digest, ArchiveError> {
        match staged {
            Staged::Blob { digest, .. } => Ok(digest.clone()),
            Staged::File { path, digest, size } => {
                self.lease.borrow_mut().add(digest.clone());
                if !self.store.has_blob(digest) {
                    // Blocks while a concurrent pull writes the same blob;
                    // commit is then a no-op.
                    let mut ingest = self.store.begin_ingest(digest, Some(*size))?;
                    if !self.store.has_blob(digest) {
                        if ingest.offset() > 0 {
                            ingest.reset()?;
                        }
                        io::copy(&mut File::open(path)?, &mut ingest)?;
                    }
                    ingest.commit()?;
                }
                Ok(digest.clone())
            }
        }
    }

    fn plan(&self) -> Result<Vec<Plan>, ArchiveError> {
        // Docker itself ignores `repositories` when manifest.json exists, but a
        // malformed one is a sign of a hostile upload: refuse it.
        if self.files.contains_key("repositories") || self.links.contains_key("repositories") {
            self.check_repositories()?;
        }
        let plans = if self.files.contains_key("manifest.json")
            || self.links.contains_key("manifest.json")
        {
            self.plan_docker()?
        } else if self.files.contains_key("index.json") || self.links.contains_key("index.json") {
            self.plan_oci()?
        } else {
            return Err(ArchiveError::NoImages);
        };
        // One plan per image id, references merged (index.json lists an image once per tag).
        let mut merged: Vec<Plan> = Vec::new();
        for p in plans {
            match merged.iter_mut().find(|m| m.id == p.id) {
                Some(m) => {
                    for r in p.references {
                        if !m.references.contains(&r) {
                            m.references.push(r);
                        }
                    }
                }
                None => merged.push(p),
            }
        }
        if merged.len() > self.limits.max_images {
            return Err(ArchiveError::LimitExceeded(format!(
                "archive has more than {} images",
                self.limits.max_images
            )));
        }
        // Listing one big layer many times would make us unpack it many
        // times: bound the unpack work (distinct chains) by the upload limit.
        let mut chains = HashMap::new();
        for p in &merged {
            let mut parent: Option<Digest> = None;
            for (l, d) in p.layers.iter().zip(&p.diff_ids) {
                let chain = Store::chain_id(parent.as_ref(), d);
                chains.insert(chain.clone(), l.size());
                parent = Some(chain);
            }
        }
        let work: u64 = chains.values().sum();
        if work > self.limits.max_total_bytes {
            return Err(ArchiveError::LimitExceeded(format!(
                "images in the archive add up to {work} bytes of layers (max {})",
                self.limits.max_total_bytes
            )));
        }
        Ok(merged)
    }

    fn check_repositories(&self) -> Result<(), ArchiveError> {
        let file = "repositories";
        let bytes = self.read_json(self.resolve(file)?, file)?;
        let repos: BTreeMap<String, BTreeMap<String, String>> = parse_json(&bytes, file)?;
        for (repo, tags) in &repos {
            for (tag, id) in tags {
                let name = format!("{repo}:{tag}");
                let r = parse_tag(&name, file)?;
                if r.tag.as_deref() != Some(tag.as_str()) {
                    return Err(invalid_ref(&name, file, "tag does not round-trip"));
                }
                Digest::from_hex(id).map_err(|_| ArchiveError::InvalidJson {
                    file: file.into(),
                    reason: format!("{name}: {id:.80?} is not a layer id"),
                })?;
            }
        }
        Ok(())
    }

    fn plan_docker(&self) -> Result<Vec<Plan>, ArchiveError> {
        let file = "manifest.json";
        let bytes = self.read_json(self.resolve(file)?, file)?;
        let items: Vec<ManifestItem> = parse_json(&bytes, file)?;
        if items.len() > self.limits.max_images {
            return Err(ArchiveError::LimitExceeded(format!(
                "{file} lists more than {} images",
                self.limits.max_images
            )));
        }
        let mut plans = Vec::with_capacity(items.len());
        for item in items {
            let config_entry = self.resolve(&item.config)?;
            let config = self.read_json(config_entry, "image config")?;
            let references = item
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| parse_tag(t, file))
                .collect::<Result<Vec<_>, _>>()?;
            let layers = item
                .layers
                .iter()
                .map(|l| self.resolve(l).cloned())
                .collect::<Result<Vec<_>, _>>()?;
            plans.push(self.make_plan(config, layers, references)?);
        }
        Ok(plans)
    }

    fn plan_oci(&self) -> Result<Vec<Plan>, ArchiveError> {
        let file = "index.json";
        let bytes = self.read_json(self.resolve(file)?, file)?;
        let index: OciIndex = parse_json(&bytes, file)?;
        if index.manifests.len() > self.limits.max_images {
            return Err(ArchiveError::LimitExceeded(format!(
                "{file} lists more than {} images",
                self.limits.max_images
            )));
        }
        let mut plans = Vec::new();
        for desc in &index.manifests {
            if is_attestation(desc) {
                continue;
            }
            let references = descriptor_names(desc)?;
            let manifest = self.oci_manifest(desc, 0)?;
            let config_digest = parse_digest(&manifest.config.digest, "OCI manifest")?;
            let config_entry = self.blob(&config_digest)?;
            let config = self.read_json(config_entry, "image config")?;
            let layers = manifest
                .layers
                .iter()
                .map(|l| {
                    let d = parse_digest(&l.digest, "OCI manifest")?;
                    let staged = self.blob(&d)?.clone();
                    check_size(l, &staged)?;
                    Ok(staged)
                })
                .collect::<Result<Vec<_>, ArchiveError>>()?;
            plans.push(self.make_plan(config, layers, references)?);
        }
        Ok(plans)
    }

    /// Follows a descriptor to an image manifest, choosing this host's
    /// platform in (possibly nested) indexes.
    fn oci_manifest(&self, desc: &Descriptor, depth: usize) -> Result<OciManifest, ArchiveError> {
        if depth > self.limits.max_index_depth {
            return Err(ArchiveError::LimitExceeded(format!(
                "OCI indexes nested deeper than {}",
                self.limits.max_index_depth
            )));
        }
        let digest = parse_digest(&desc.digest, "OCI index")?;
        let staged = self.blob(&digest)?;
        check_size(desc, staged)?;
        let bytes = self.read_json(staged, "OCI manifest")?;
        let doc: AnyManifest = parse_json(&bytes, "OCI manifest")?;
        let is_index = matches!(
            doc.media_type.as_deref(),
            Some(MT_OCI_INDEX | MT_DOCKER_LIST)
        ) || (doc.manifests.is_some() && doc.config.is_none());
        if is_index {
            let children: Vec<&Descriptor> = doc
                .manifests
                .iter()
                .flatten()
                .filter(|d| !is_attestation(d))
                .collect();
            let child = choose_platform(&children).ok_or_else(|| {
                ArchiveError::Unsupported(format!(
                    "index {digest} has no image for linux/{}",
                    host_arch()
                ))
            })?;
            return self.oci_manifest(child, depth + 1);
        }
        match doc.media_type.as_deref() {
            None | Some(MT_OCI_MANIFEST | MT_DOCKER_MANIFEST) => {}
            Some(other) => {
                return Err(ArchiveError::Unsupported(format!(
                    "manifest {digest} has media type {other:.100}"
                )))
            }
        }
        let (Some(config), layers) = (doc.config, doc.layers) else {
            return Err(ArchiveError::InvalidJson {
                file: blob_name(&digest),
                reason: "manifest without config".into(),
            });
        };
        Ok(OciManifest {
            schema_version: 2,
            media_type: doc.media_type,
            config,
            layers: layers.unwrap_or_default(),
        })
    }

    fn make_plan(
        &self,
        config: Vec<u8>,
        layers: Vec<Staged>,
        references: Vec<Reference>,
    ) -> Result<Plan, ArchiveError> {
        let id = Digest::of(&config);
        let probe: ConfigProbe = parse_json(&config, "image config")?;
        if probe.rootfs.kind != "layers" {
            return Err(ArchiveError::InvalidJson {
                file: format!("config {id}"),
                reason: format!("rootfs type {:.40?} is not \"layers\"", probe.rootfs.kind),
            });
        }
        if layers.len() > self.limits.max_layers {
            return Err(ArchiveError::LimitExceeded(format!(
                "image {id} has more than {} layers",
                self.limits.max_layers
            )));
        }
        let diff_ids = probe
            .rootfs
            .diff_ids
            .iter()
            .map(|d| parse_digest(d, "image config"))
            .collect::<Result<Vec<_>, _>>()?;
        if diff_ids.len() != layers.len() {
            return Err(ArchiveError::LayerCountMismatch {
                image: id,
                config: diff_ids.len(),
                manifest: layers.len(),
            });
        }
        Ok(Plan {
            id,
            config,
            diff_ids,
            layers,
            references,
        })
    }
}

/// Unpacks every layer of every plan, then records images and tags.
fn commit(
    store: &Store,
    st: &Staging<'_>,
    plans: Vec<Plan>,
) -> Result<Vec<LoadedImage>, ArchiveError> {
    let mut records = Vec::with_capacity(plans.len());
    for plan in &plans {
        let mut parent: Option<Digest> = None;
        let mut chains = Vec::with_capacity(plan.layers.len());
        let mut size = 0u64;
        for (staged, diff_id) in plan.layers.iter().zip(&plan.diff_ids) {
            let blob = st.ensure_blob(staged)?;
            let compression = detect_compression(&store.blob_path(&blob), &blob)?;
            // Leased before it exists so gc cannot take it before the image is recorded.
            st.lease
                .borrow_mut()
                .add(Store::chain_id(parent.as_ref(), diff_id));
            let info = store.unpack_layer(&blob, compression, diff_id, parent.as_ref())?;
            size += info.size;
            parent = Some(info.chain_id.clone());
            chains.push(info.chain_id);
        }
        st.lease.borrow_mut().add(plan.id.clone());
        let written = store.write_blob(&plan.config)?;
        if written != plan.id {
            return Err(ImageError::DigestMismatch {
                expected: plan.id.clone(),
                actual: written,
            }
            .into());
        }
        // Keep what a pull may have recorded for this image (repo digests).
        let (repo_digests, loaded_at) = match store.get_image(&plan.id) {
            Ok(old) => (old.repo_digests, old.loaded_at),
            Err(_) => (Vec::new(), now_rfc3339()),
        };
        let created = serde_json::from_slice::<ConfigProbe>(&plan.config)
            .ok()
            .and_then(|c| c.created);
        records.push(ImageRecord {
            id: plan.id.clone(),
            layers: chains,
            diff_ids: plan.diff_ids.clone(),
            repo_digests,
            created,
            size,
            loaded_at,
            parent: None,
        });
    }
    // Everything is committed: now make it visible.
    let mut loaded = Vec::with_capacity(plans.len());
    for (plan, rec) in plans.into_iter().zip(records) {
        store.put_image(&rec)?;
        for r in &plan.references {
            store.set_reference(r, &plan.id)?;
        }
        loaded.push(LoadedImage {
            id: plan.id,
            references: plan.references,
        });
    }
    Ok(loaded)
}

/// Like docker, accept the whole archive gzip- or zstd-compressed
/// (`docker save | gzip` files); the size limit applies after decompression.
fn decompressed<'r>(r: &'r mut dyn Read) -> Result<Box<dyn Read + 'r>, ArchiveError> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        let m = r.read(&mut head[n..])?;
        if m == 0 {
            break;
        }
        n += m;
    }
    let whole = io::Cursor::new(head[..n].to_vec()).chain(r);
    Ok(match Compression::detect(&head[..n]) {
        Compression::None => Box::new(whole),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(whole)?),
    })
}

/// Layers inside archives may be compressed whatever their name or media
/// type says (docker detects by content too), so look at the magic bytes.
fn detect_compression(path: &Path, blob: &Digest) -> Result<Compression, ArchiveError> {
    let mut magic = [0u8; 6];
    let mut f = File::open(path)?;
    let mut n = 0;
    while n < magic.len() {
        let m = f.read(&mut magic[n..])?;
        if m == 0 {
            break;
        }
        n += m;
    }
    let m = &magic[..n];
    // bzip2 and xz were once accepted by docker load; refuse them clearly
    // instead of failing later as "not a tar".
    if m.starts_with(b"BZh") || m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Err(ArchiveError::UnsupportedCompression(blob.to_string()));
    }
    Ok(Compression::detect(m))
}

/// Normalises a tar entry name or a path named in a manifest: drops `.` and
/// empty components, refuses absolute names, `..` and non-UTF-8. `None` is
/// the archive root.
fn normalize_name(raw: &[u8]) -> Result<Option<String>, ArchiveError> {
    let s = std::str::from_utf8(raw)
        .map_err(|_| ArchiveError::UnsafePath(String::from_utf8_lossy(raw).into_owned()))?;
    if s.starts_with('/') || s.contains('\0') {
        return Err(ArchiveError::UnsafePath(s.chars().take(200).collect()));
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(ArchiveError::UnsafePath(s.chars().take(200).collect())),
            c => parts.push(c),
        }
    }
    Ok(if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    })
}

/// Resolves a symlink target relative to the link's directory, lexically and
/// without ever leaving the archive root (docker < 25 links duplicate layers
/// as `../<id>/layer.tar`).
fn resolve_symlink(link: &str, target: &[u8]) -> Result<String, ArchiveError> {
    let t = std::str::from_utf8(target).map_err(|_| ArchiveError::UnsafePath(link.to_string()))?;
    if t.starts_with('/') || t.contains('\0') {
        return Err(ArchiveError::UnsafePath(format!(
            "{link} -> {}",
            t.chars().take(200).collect::<String>()
        )));
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in t.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(ArchiveError::UnsafePath(format!(
                        "{link} -> {}",
                        t.chars().take(200).collect::<String>()
                    )));
                }
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(ArchiveError::UnsafePath(format!("{link} -> {t:.200}")));
    }
    Ok(parts.join("/"))
}

/// `blobs/sha256/<hex>` -> its digest.
fn blob_name_digest(name: &str) -> Option<Digest> {
    Digest::from_hex(name.strip_prefix("blobs/sha256/")?).ok()
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], file: &str) -> Result<T, ArchiveError> {
    serde_json::from_slice(bytes).map_err(|e| ArchiveError::InvalidJson {
        file: file.to_string(),
        reason: e.to_string(),
    })
}

fn parse_digest(s: &str, file: &str) -> Result<Digest, ArchiveError> {
    Digest::parse(s).map_err(|e| ArchiveError::InvalidJson {
        file: file.to_string(),
        reason: e.to_string(),
    })
}

fn invalid_ref(name: &str, file: &str, reason: &str) -> ArchiveError {
    ArchiveError::InvalidReference {
        name: name.chars().take(200).collect(),
        file: file.into(),
        reason: reason.into(),
    }
}

/// A tag from an archive: must be a valid reference with a tag and no digest.
fn parse_tag(name: &str, file: &str) -> Result<Reference, ArchiveError> {
    if name.len() > MAX_REFERENCE_LEN {
        return Err(invalid_ref(
            name,
            file,
            &format!("longer than {MAX_REFERENCE_LEN} bytes"),
        ));
    }
    // parse_name, not parse: a RepoTag without a tag is an error, as in docker.
    let r = Reference::parse_name(name).map_err(|e| invalid_ref(name, file, &e.to_string()))?;
    if r.tag.is_none() || r.digest.is_some() {
        return Err(invalid_ref(name, file, "expected repository:tag"));
    }
    Ok(r)
}

/// Names of an index.json entry: containerd's full name, else a ref.name that
/// is a whole reference. A bare ref.name ("latest") names no repository, and
/// digest-only names cannot be tags, so both leave the image untagged.
fn descriptor_names(desc: &Descriptor) -> Result<Vec<Reference>, ArchiveError> {
    let Some(ann) = &desc.annotations else {
        return Ok(Vec::new());
    };
    let name = match (ann.get(ANN_IMAGE_NAME), ann.get(ANN_REF_NAME)) {
        (Some(n), _) => n,
        (None, Some(n)) if n.contains('/') || n.contains(':') || n.contains('@') => n,
        _ => return Ok(Vec::new()),
    };
    if name.len() > MAX_REFERENCE_LEN {
        return Err(invalid_ref(
            name,
            "index.json",
            &format!("longer than {MAX_REFERENCE_LEN} bytes"),
        ));
    }
    let r =
        Reference::parse_name(name).map_err(|e| invalid_ref(name, "index.json", &e.to_string()))?;
    if r.tag.is_none() {
        return Ok(Vec::new());
    }
    let mut r = r;
    r.digest = None;
    Ok(vec![r])
}

fn check_size(desc: &Descriptor, staged: &Staged) -> Result<(), ArchiveError> {
    if desc.size > 0 && desc.size as u64 != staged.size() {
        return Err(ImageError::SizeMismatch {
            expected: desc.size as u64,
            actual: staged.size(),
        }
        .into());
    }
    Ok(())
}

fn is_attestation(desc: &Descriptor) -> bool {
    desc.annotations
        .as_ref()
        .and_then(|a| a.get(ANN_REFERENCE_TYPE))
        .is_some_and(|t| t == "attestation-manifest")
        || desc.platform.as_ref().is_some_and(|p| p.os == "unknown")
}

/// GOARCH spelling of this host's architecture.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// linux/<host arch> wins; otherwise a lone candidate is taken as is.
fn choose_platform<'d>(children: &[&'d Descriptor]) -> Option<&'d Descriptor> {
    children
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == host_arch())
        })
        .copied()
        .or_else(|| {
            if children.len() == 1 {
                Some(children[0])
            } else {
                None
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    // ------------------------------------------------------------ builders

    /// A layer tar with the given regular files (and their parent dirs).
    fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            if let Some((dir, _)) = name.rsplit_once('/') {
                let mut h = header(tar::EntryType::Directory, 0, 0o755, 0);
                b.append_data(&mut h, format!("{dir}/"), io::empty())
                    .unwrap();
            }
            let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644, 0);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn config_json(diff_ids: &[Digest], arch: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "created": "2024-05-06T07:08:09Z",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap()
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn zstd(b: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(b, 1).unwrap()
    }

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    /// Puts an image made of `layers` (uncompressed tars) into `store`.
    fn make_image(store: &Store, layers: &[Vec<u8>], tags: &[&str]) -> Digest {
        let mut parent: Option<Digest> = None;
        let (mut chains, mut diff_ids) = (Vec::new(), Vec::new());
        for l in layers {
            let blob = store.write_blob(l).unwrap();
            let info = store
                .unpack_layer(&blob, Compression::None, &blob, parent.as_ref())
                .unwrap();
            parent = Some(info.chain_id.clone());
            chains.push(info.chain_id);
            diff_ids.push(blob);
        }
        let id = store
            .write_blob(&config_json(&diff_ids, host_arch()))
            .unwrap();
        store
            .put_image(&ImageRecord {
                id: id.clone(),
                layers: chains,
                diff_ids,
                repo_digests: vec![],
                created: Some("2024-05-06T07:08:09Z".into()),
                size: 0,
                loaded_at: now_rfc3339(),
                parent: None,
            })
            .unwrap();
        for t in tags {
            store.set_reference(&r(t), &id).unwrap();
        }
        id
    }

    /// Builds archives, including entries the tar crate's safe API refuses
    /// to write (`..`, absolute names), by filling the header name directly.
    struct Ar(tar::Builder<Vec<u8>>);

    impl Ar {
        fn new() -> Ar {
            Ar(tar::Builder::new(Vec::new()))
        }
        fn raw_header(kind: tar::EntryType, name: &str, size: u64) -> tar::Header {
            let mut h = tar::Header::new_old();
            h.set_entry_type(kind);
            h.set_size(size);
            h.set_mode(0o644);
            let field = &mut h.as_old_mut().name;
            assert!(name.len() < field.len());
            field[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            h
        }
        fn file(mut self, name: &str, data: &[u8]) -> Ar {
            let h = Self::raw_header(tar::EntryType::Regular, name, data.len() as u64);
            self.0.append(&h, data).unwrap();
            self
        }
        fn json(self, name: &str, v: serde_json::Value) -> Ar {
            self.file(name, &serde_json::to_vec(&v).unwrap())
        }
        fn blob(self, data: &[u8]) -> Ar {
            let name = blob_name(&Digest::of(data));
            self.file(&name, data)
        }
        fn symlink(mut self, name: &str, target: &str) -> Ar {
            let mut h = Self::raw_header(tar::EntryType::Symlink, name, 0);
            let field = &mut h.as_old_mut().linkname;
            field[..target.len()].copy_from_slice(target.as_bytes());
            h.set_cksum();
            self.0.append(&h, io::empty()).unwrap();
            self
        }
        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn load_bytes(store: &Store, bytes: &[u8]) -> Result<Vec<LoadedImage>, ArchiveError> {
        load(store, &mut Cursor::new(bytes), &LoadLimits::default())
    }

    /// After a failed load nothing may be visible and no staging left behind.
    fn assert_untouched(store: &Store) {
        assert!(store.list_images().unwrap().is_empty());
        assert!(store.references().unwrap().is_empty());
        assert_eq!(
            fs::read_dir(store.tmp_dir()).unwrap().count(),
            0,
            "staging dir left behind"
        );
    }

    fn entries(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut a = tar::Archive::new(bytes);
        let mut out = BTreeMap::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            assert!(out.insert(name.clone(), data).is_none(), "duplicate {name}");
        }
        out
    }

    // ------------------------------------------------------------ save+load

    #[test]
    fn save_then_load_round_trips() {
        let (_a, src) = store();
        let base = layer_tar(&[("etc/hostname", b"berth\n"), ("bin/tool", b"#!/bin/sh\n")]);
        let top = layer_tar(&[("hello.txt", b"hello world\n")]);
        let id = make_image(
            &src,
            &[base.clone(), top.clone()],
            &["127.0.0.1:5000/test/img:v1", "127.0.0.1:5000/other:latest"],
        );
        let id2 = make_image(&src, std::slice::from_ref(&base), &[]);

        let refs = src.references_to(&id).unwrap();
        let mut out = Vec::new();
        save(
            &src,
            &[
                (id.clone(), refs.clone()),
                (id2.clone(), vec![]),
                (id.clone(), refs.clone()),
            ],
            &mut out,
        )
        .unwrap();

        // Layout: both the OCI and the docker views are present, shared
        // layers once.
        let files = entries(&out);
        let base_id = Digest::of(&base);
        assert_eq!(files[&blob_name(&base_id)], base);
        assert_eq!(files[&blob_name(&Digest::of(&top))], top);
        assert_eq!(files["oci-layout"], OCI_LAYOUT.as_bytes());
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(manifest.as_array().unwrap().len(), 2);
        assert_eq!(manifest[0]["Config"], blob_name(&id));
        let mut tags: Vec<_> = manifest[0]["RepoTags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        tags.sort();
        assert_eq!(
            tags,
            ["127.0.0.1:5000/other:latest", "127.0.0.1:5000/test/img:v1"]
        );
        assert_eq!(manifest[0]["Layers"][1], blob_name(&Digest::of(&top)));
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let names: Vec<_> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["annotations"][ANN_IMAGE_NAME].as_str())
            .collect();
        assert!(names.contains(&"127.0.0.1:5000/test/img:v1"), "{names:?}");
        assert_eq!(
            index["manifests"].as_array().unwrap().len(),
            3,
            "two tags + one untagged image"
        );
        let repos: serde_json::Value = serde_json::from_slice(&files["repositories"]).unwrap();
        assert_eq!(
            repos["127.0.0.1:5000/test/img"]["v1"],
            Digest::of(&top).hex()
        );
        // Each OCI manifest blob is referenced and describes the layers.
        let mdesc = &index["manifests"][0];
        let m: serde_json::Value = serde_json::from_slice(
            &files[&blob_name(&Digest::parse(mdesc["digest"].as_str().unwrap()).unwrap())],
        )
        .unwrap();
        assert_eq!(m["layers"][0]["mediaType"], MT_OCI_LAYER_TAR);
        assert_eq!(m["layers"][0]["size"], base.len());

        let (_b, dst) = store();
        let mut loaded = load_bytes(&dst, &out).unwrap();
        loaded.sort_by_key(|l| l.references.len());
        assert_eq!(loaded.len(), 2);
        assert_eq!(
            loaded[0],
            LoadedImage {
                id: id2.clone(),
                references: vec![]
            }
        );
        assert_eq!(loaded[1].id, id);
        let mut got = dst.references_to(&id).unwrap();
        let mut want = refs.clone();
        got.sort_by_key(|r| r.to_string());
        want.sort_by_key(|r| r.to_string());
        assert_eq!(got, want);
        let rec = dst.get_image(&id).unwrap();
        assert_eq!(rec.diff_ids, vec![base_id.clone(), Digest::of(&top)]);
        assert_eq!(rec.created.as_deref(), Some("2024-05-06T07:08:09Z"));
        let top_dir = dst.layer_diff_dir(&rec.layers[1]);
        assert_eq!(
            fs::read(top_dir.join("hello.txt")).unwrap(),
            b"hello world\n"
        );
        assert_eq!(
            fs::read(dst.layer_diff_dir(&rec.layers[0]).join("etc/hostname")).unwrap(),
            b"berth\n"
        );
        assert_eq!(fs::read_dir(dst.tmp_dir()).unwrap().count(), 0);

        // And what we load we can save again, identically.
        let mut again = Vec::new();
        save(
            &dst,
            &[(id.clone(), refs.clone()), (id2.clone(), vec![])],
            &mut again,
        )
        .unwrap();
        assert_eq!(entries(&again)["manifest.json"], files["manifest.json"]);
    }

    #[test]
    fn loads_compressed_archives() {
        let (_a, src) = store();
        let id = make_image(&src, &[layer_tar(&[("z", b"z")])], &["127.0.0.1:5000/z:1"]);
        let mut out = Vec::new();
        save(
            &src,
            &[(id.clone(), vec![r("127.0.0.1:5000/z:1")])],
            &mut out,
        )
        .unwrap();
        for packed in [gzip(&out), zstd(&out)] {
            let (_b, dst) = store();
            let loaded = load_bytes(&dst, &packed).unwrap();
            assert_eq!(
                loaded,
                vec![LoadedImage {
                    id: id.clone(),
                    references: vec![r("127.0.0.1:5000/z:1")]
                }]
            );
        }
        // The size limit counts decompressed bytes (no gzip bombs).
        let bomb = gzip(&Ar::new().file("big", &vec![0u8; 4 << 20]).bytes());
        let (_c, dst) = store();
        let limits = LoadLimits {
            max_total_bytes: 1 << 20,
            ..LoadLimits::default()
        };
        let err = load(&dst, &mut Cursor::new(&bomb), &limits).unwrap_err();
        assert!(matches!(err, ArchiveError::LimitExceeded(_)), "{err}");
        assert_untouched(&dst);
    }

    #[test]
    fn save_unknown_image_is_not_found() {
        let (_a, s) = store();
        let id = make_image(&s, &[layer_tar(&[("a", b"a")])], &[]);
        let mut out = Vec::new();
        let err = save(&s, &[(id, vec![]), (Digest::of(b"nope"), vec![])], &mut out).unwrap_err();
        assert!(matches!(err, ArchiveError::ImageNotFound(_)), "{err}");
        assert!(
            out.is_empty(),
            "nothing may be sent before every image was found"
        );
    }

    #[test]
    fn load_prefers_manifest_json_and_keeps_existing_repo_digests() {
        let (_a, s) = store();
        let layer = layer_tar(&[("a", b"1")]);
        let id = make_image(&s, &[layer], &["127.0.0.1:5000/x:1"]);
        let mut rec = s.get_image(&id).unwrap();
        rec.repo_digests = vec![format!("127.0.0.1:5000/x@{}", Digest::of(b"m"))];
        s.put_image(&rec).unwrap();
        let mut out = Vec::new();
        save(&s, &[(id.clone(), vec![r("127.0.0.1:5000/y:2")])], &mut out).unwrap();
        let loaded = load_bytes(&s, &out).unwrap();
        assert_eq!(
            loaded,
            vec![LoadedImage {
                id: id.clone(),
                references: vec![r("127.0.0.1:5000/y:2")]
            }]
        );
        assert_eq!(s.get_image(&id).unwrap().repo_digests, rec.repo_digests);
        assert_eq!(s.resolve("127.0.0.1:5000/x:1").unwrap(), id);
    }

    // ------------------------------------------------------ foreign formats

    /// docker < 25: `<v1 id>/layer.tar`, `<id>.json` config, a symlinked
    /// duplicate layer, gzip inside (as some tools write), `repositories`.
    #[test]
    fn loads_legacy_docker_archive() {
        let l1 = layer_tar(&[("etc/os-release", b"ID=berth\n")]);
        let l2 = layer_tar(&[("usr/bin/app", b"app")]);
        let d1 = Digest::of(&l1);
        let d2 = Digest::of(&l2);
        let config = config_json(&[d1.clone(), d2.clone(), d1.clone()], "amd64");
        let id = Digest::of(&config);
        let (v1a, v1b, v1c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let bytes = Ar::new()
            .file(&format!("{}.json", id.hex()), &config)
            .file(&format!("{v1a}/VERSION"), b"1.0")
            .file(&format!("{v1a}/json"), b"{}")
            .file(&format!("{v1a}/layer.tar"), &l1)
            .file(&format!("./{v1b}/layer.tar"), &gzip(&l2))
            .symlink(&format!("{v1c}/layer.tar"), &format!("../{v1a}/layer.tar"))
            .json(
                "manifest.json",
                serde_json::json!([{
                    "Config": format!("{}.json", id.hex()),
                    "RepoTags": ["127.0.0.1:5000/legacy:1.0"],
                    "Layers": [format!("{v1a}/layer.tar"), format!("{v1b}/layer.tar"), format!("{v1c}/layer.tar")],
                }]),
            )
            .json("repositories", serde_json::json!({"127.0.0.1:5000/legacy": {"1.0": v1c}}))
            .bytes();
        let (_a, s) = store();
        let loaded = load_bytes(&s, &bytes).unwrap();
        assert_eq!(
            loaded,
            vec![LoadedImage {
                id: id.clone(),
                references: vec![r("127.0.0.1:5000/legacy:1.0")]
            }]
        );
        let rec = s.get_image(&id).unwrap();
        assert_eq!(rec.layers.len(), 3);
        assert_eq!(
            s.layer_info(&rec.layers[1]).unwrap().compression,
            Compression::Gzip
        );
        assert_eq!(
            fs::read(s.layer_diff_dir(&rec.layers[1]).join("usr/bin/app")).unwrap(),
            b"app"
        );
        assert_eq!(s.resolve("127.0.0.1:5000/legacy:1.0").unwrap(), id);
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);

        // Saved again, the gzip layer comes out uncompressed under its diff_id.
        let mut out = Vec::new();
        save(&s, &[(id.clone(), vec![])], &mut out).unwrap();
        assert_eq!(entries(&out)[&blob_name(&d2)], l2);
    }

    /// An OCI layout as buildx/skopeo write it: index.json naming a
    /// multi-platform index, zstd layer, no manifest.json.
    #[test]
    fn loads_oci_layout_with_nested_index() {
        let layer = layer_tar(&[("data/file", b"oci")]);
        let diff = Digest::of(&layer);
        let compressed = zstd(&layer);
        let config = config_json(std::slice::from_ref(&diff), host_arch());
        let id = Digest::of(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": id, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": Digest::of(&compressed), "size": compressed.len()}],
        }))
        .unwrap();
        // A manifest for another platform whose blobs are absent: it must not be touched.
        let other_arch = if host_arch() == "amd64" {
            "arm64"
        } else {
            "amd64"
        };
        let missing = Digest::of(b"other platform manifest");
        let attest = Digest::of(b"attestation");
        let nested = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_INDEX,
            "manifests": [
                {"mediaType": MT_OCI_MANIFEST, "digest": missing, "size": 10, "platform": {"architecture": other_arch, "os": "linux"}},
                {"mediaType": MT_OCI_MANIFEST, "digest": Digest::of(&manifest), "size": manifest.len(), "platform": {"architecture": host_arch(), "os": "linux"}},
                {"mediaType": MT_OCI_MANIFEST, "digest": attest, "size": 10, "platform": {"architecture": "unknown", "os": "unknown"},
                 "annotations": {ANN_REFERENCE_TYPE: "attestation-manifest"}},
            ],
        }))
        .unwrap();
        let bytes = Ar::new()
            .file("oci-layout", OCI_LAYOUT.as_bytes())
            .blob(&config)
            .blob(&compressed)
            .blob(&manifest)
            .blob(&nested)
            .json(
                "index.json",
                serde_json::json!({
                    "schemaVersion": 2,
                    "manifests": [{
                        "mediaType": MT_OCI_INDEX, "digest": Digest::of(&nested), "size": nested.len(),
                        "annotations": {ANN_IMAGE_NAME: "127.0.0.1:5000/oci/app:2.1", ANN_REF_NAME: "2.1"},
                    }, {
                        // ref.name only, a bare tag: loads, but untagged.
                        "mediaType": MT_OCI_MANIFEST, "digest": Digest::of(&manifest), "size": manifest.len(),
                        "annotations": {ANN_REF_NAME: "latest"},
                    }],
                }),
            )
            .bytes();
        let (_a, s) = store();
        let loaded = load_bytes(&s, &bytes).unwrap();
        assert_eq!(
            loaded,
            vec![LoadedImage {
                id: id.clone(),
                references: vec![r("127.0.0.1:5000/oci/app:2.1")]
            }]
        );
        let rec = s.get_image(&id).unwrap();
        assert_eq!(
            s.layer_info(&rec.layers[0]).unwrap().compression,
            Compression::Zstd
        );
        assert_eq!(
            fs::read(s.layer_diff_dir(&rec.layers[0]).join("data/file")).unwrap(),
            b"oci"
        );
    }

    // --------------------------------------------------------------- hostile

    /// A valid single-layer image's parts, for tampering with.
    struct Parts {
        layer: Vec<u8>,
        config: Vec<u8>,
        id: Digest,
    }

    fn parts() -> Parts {
        let layer = layer_tar(&[("f", b"x")]);
        let config = config_json(&[Digest::of(&layer)], "amd64");
        let id = Digest::of(&config);
        Parts { layer, config, id }
    }

    fn docker_archive(
        p: &Parts,
        config_path: &str,
        layer_path: &str,
        tags: serde_json::Value,
    ) -> Vec<u8> {
        Ar::new()
            .blob(&p.config)
            .blob(&p.layer)
            .json("manifest.json", serde_json::json!([{"Config": config_path, "RepoTags": tags, "Layers": [layer_path]}]))
            .bytes()
    }

    fn load_err(bytes: &[u8]) -> ArchiveError {
        let (_a, s) = store();
        let err = load_bytes(&s, bytes).unwrap_err();
        assert_untouched(&s);
        err
    }

    #[test]
    fn refuses_manifest_paths_outside_the_archive() {
        let p = parts();
        let good_layer = blob_name(&Digest::of(&p.layer));
        for path in ["../../etc/passwd", "/etc/passwd", "blobs/../../etc/passwd"] {
            let err = load_err(&docker_archive(
                &p,
                path,
                &good_layer,
                serde_json::json!([]),
            ));
            assert!(matches!(err, ArchiveError::UnsafePath(_)), "{path}: {err}");
            let err = load_err(&docker_archive(
                &p,
                &blob_name(&p.id),
                path,
                serde_json::json!([]),
            ));
            assert!(matches!(err, ArchiveError::UnsafePath(_)), "{path}: {err}");
        }
        // A path that is fine but names nothing in the archive (e.g. a file
        // that exists on the host or in the store) is refused too.
        let other = Digest::of(b"in the store, not in the archive");
        let err = load_err(&docker_archive(
            &p,
            &blob_name(&p.id),
            &blob_name(&other),
            serde_json::json!([]),
        ));
        assert!(matches!(err, ArchiveError::MissingEntry(_)), "{err}");
        let err = load_err(&docker_archive(
            &p,
            "etc/passwd",
            &good_layer,
            serde_json::json!([]),
        ));
        assert!(matches!(err, ArchiveError::MissingEntry(_)), "{err}");
    }

    #[test]
    fn refuses_unsafe_entry_names_and_links() {
        let p = parts();
        let err = load_err(&Ar::new().file("../evil", b"x").bytes());
        assert!(matches!(err, ArchiveError::UnsafePath(_)), "{err}");
        let err = load_err(&Ar::new().file("/abs", b"x").bytes());
        assert!(matches!(err, ArchiveError::UnsafePath(_)), "{err}");
        let err = load_err(
            &Ar::new()
                .symlink("a/layer.tar", "../../../etc/passwd")
                .bytes(),
        );
        assert!(matches!(err, ArchiveError::UnsafePath(_)), "{err}");
        let err = load_err(&Ar::new().symlink("a/layer.tar", "/etc/passwd").bytes());
        assert!(matches!(err, ArchiveError::UnsafePath(_)), "{err}");
        // A link loop resolves to nothing.
        let bytes = Ar::new()
            .blob(&p.config)
            .symlink("x", "y")
            .symlink("y", "x")
            .json(
                "manifest.json",
                serde_json::json!([{"Config": blob_name(&p.id), "Layers": ["x"]}]),
            )
            .bytes();
        let err = load_err(&bytes);
        assert!(matches!(err, ArchiveError::UnsafePath(_)), "{err}");
        // Two entries with one name: which one would count is ambiguous.
        let err = load_err(
            &Ar::new()
                .file("manifest.json", b"[]")
                .file("./manifest.json", b"[]")
                .bytes(),
        );
        assert!(matches!(err, ArchiveError::DuplicateEntry(_)), "{err}");
    }

    #[test]
    fn refuses_mismatching_content() {
        let p = parts();
        // Config diff_ids do not match the layer.
        let wrong = config_json(&[Digest::of(b"another layer")], "amd64");
        let wrong_id = Digest::of(&wrong);
        let bytes = Ar::new()
            .blob(&wrong)
            .blob(&p.layer)
            .json(
                "manifest.json",
                serde_json::json!([{"Config": blob_name(&wrong_id), "RepoTags": ["127.0.0.1:5000/x:1"], "Layers": [blob_name(&Digest::of(&p.layer))]}]),
            )
            .bytes();
        let err = load_err(&bytes);
        assert!(
            matches!(err, ArchiveError::Image(ImageError::DigestMismatch { .. })),
            "{err}"
        );
        // A blob whose content is not its name.
        let bytes = Ar::new()
            .file(&blob_name(&Digest::of(b"claimed")), b"actual")
            .bytes();
        let err = load_err(&bytes);
        assert!(
            matches!(err, ArchiveError::Image(ImageError::DigestMismatch { .. })),
            "{err}"
        );
        // Layer count differs from diff_ids.
        let bytes = Ar::new()
            .blob(&p.config)
            .blob(&p.layer)
            .json(
                "manifest.json",
                serde_json::json!([{"Config": blob_name(&p.id), "Layers": [blob_name(&Digest::of(&p.layer)), blob_name(&Digest::of(&p.layer))]}]),
            )
            .bytes();
        let err = load_err(&bytes);
        assert!(
            matches!(
                err,
                ArchiveError::LayerCountMismatch {
                    config: 1,
                    manifest: 2,
                    ..
                }
            ),
            "{err}"
        );
        // bzip2 layers are refused clearly.
        let bz = b"BZh91AY&SY fake".to_vec();
        let config = config_json(&[Digest::of(b"whatever")], "amd64");
        let bytes = Ar::new()
            .blob(&config)
            .blob(&bz)
            .json("manifest.json", serde_json::json!([{"Config": blob_name(&Digest::of(&config)), "Layers": [blob_name(&Digest::of(&bz))]}]))
            .bytes();
        let err = load_err(&bytes);
        assert!(
            matches!(err, ArchiveError::UnsupportedCompression(_)),
            "{err}"
        );
        // Not JSON at all.
        let err = load_err(&Ar::new().file("manifest.json", b"{nope").bytes());
        assert!(matches!(err, ArchiveError::InvalidJson { .. }), "{err}");
        // No image metadata.
        let err = load_err(&Ar::new().blob(&p.layer).bytes());
        assert!(matches!(err, ArchiveError::NoImages), "{err}");
    }

    #[test]
    fn refuses_bad_tags() {
        let p = parts();
        let layer = blob_name(&Digest::of(&p.layer));
        let config = blob_name(&p.id);
        let long = format!("127.0.0.1:5000/{}:1", "a".repeat(10_000));
        for tag in [
            "../x",
            "127.0.0.1:5000/x",
            "UPPER:1",
            long.as_str(),
            "127.0.0.1:5000/x@sha256:0000",
        ] {
            let err = load_err(&docker_archive(
                &p,
                &config,
                &layer,
                serde_json::json!([tag]),
            ));
            match &err {
                ArchiveError::InvalidReference { name, .. } => {
                    assert!(name.len() <= 200, "error echoes a huge name")
                }
                _ => panic!("{tag:.40}: {err}"),
            }
        }
        // `repositories` with a path-like tag or a 10 kB name.
        for repos in [
            serde_json::json!({"127.0.0.1:5000/x": {"../x": "a".repeat(64)}}),
            serde_json::json!({"a".repeat(10_000): {"latest": "a".repeat(64)}}),
            serde_json::json!({"127.0.0.1:5000/x": {"latest": "../../etc"}}),
        ] {
            let bytes = Ar::new()
                .blob(&p.config)
                .blob(&p.layer)
                .json(
                    "manifest.json",
                    serde_json::json!([{"Config": config, "RepoTags": [], "Layers": [layer]}]),
                )
                .json("repositories", repos)
                .bytes();
            let err = load_err(&bytes);
            assert!(
                matches!(
                    err,
                    ArchiveError::InvalidReference { .. } | ArchiveError::InvalidJson { .. }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn a_failing_image_hides_the_whole_archive() {
        let p = parts();
        let good_layer = blob_name(&Digest::of(&p.layer));
        let wrong = config_json(&[Digest::of(b"x")], "arm64");
        let bytes = Ar::new()
            .blob(&p.config)
            .blob(&p.layer)
            .blob(&wrong)
            .json(
                "manifest.json",
                serde_json::json!([
                    {"Config": blob_name(&p.id), "RepoTags": ["127.0.0.1:5000/good:1"], "Layers": [good_layer]},
                    {"Config": blob_name(&Digest::of(&wrong)), "RepoTags": ["127.0.0.1:5000/bad:1"], "Layers": [good_layer]},
                ]),
            )
            .bytes();
        let err = load_err(&bytes);
        assert!(
            matches!(err, ArchiveError::Image(ImageError::DigestMismatch { .. })),
            "{err}"
        );
    }

    #[test]
    fn truncated_upload_leaves_nothing_behind() {
        let p = parts();
        let big = layer_tar(&[("big", &vec![1u8; 64 << 10])]);
        let bytes = Ar::new().blob(&big).blob(&p.config).bytes();
        let cut = &bytes[..bytes.len() / 2];
        let (dir, s) = store();
        let err = load_bytes(&s, cut).unwrap_err();
        assert!(matches!(err, ArchiveError::Truncated(_)), "{err}");
        assert_untouched(&s);
        assert!(!s.has_blob(&Digest::of(&big)));
        for e in fs::read_dir(dir.path().join("ingest")).unwrap() {
            let e = e.unwrap();
            assert_eq!(
                e.metadata().unwrap().len(),
                0,
                "{:?} keeps upload bytes",
                e.path()
            );
        }
        // Same for a file staged outside the content store.
        let bytes = Ar::new().file("manifest.json", &vec![b' '; 8192]).bytes();
        let err = load_bytes(&s, &bytes[..4096]).unwrap_err();
        assert!(matches!(err, ArchiveError::Truncated(_)), "{err}");
        assert_untouched(&s);
    }

    #[test]
    fn enforces_limits() {
        let p = parts();
        let bytes = docker_archive(
            &p,
            &blob_name(&p.id),
            &blob_name(&Digest::of(&p.layer)),
            serde_json::json!([]),
        );
        let run = |limits: LoadLimits| {
            let (_a, s) = store();
            let err = load(&s, &mut Cursor::new(&bytes), &limits).unwrap_err();
            assert_untouched(&s);
            err
        };
        let err = run(LoadLimits {
            max_entries: 2,
            ..LoadLimits::default()
        });
        assert!(matches!(err, ArchiveError::LimitExceeded(_)), "{err}");
        let err = run(LoadLimits {
            max_total_bytes: 2048,
            ..LoadLimits::default()
        });
        assert!(matches!(err, ArchiveError::LimitExceeded(_)), "{err}");
        let err = run(LoadLimits {
            max_json_bytes: 64,
            ..LoadLimits::default()
        });
        assert!(matches!(err, ArchiveError::LimitExceeded(_)), "{err}");
        let err = run(LoadLimits {
            max_images: 0,
            ..LoadLimits::default()
        });
        assert!(matches!(err, ArchiveError::LimitExceeded(_)), "{err}");
        let err = run(LoadLimits {
            max_layers: 0,
            ..LoadLimits::default()
        });
        assert!(matches!(err, ArchiveError::LimitExceeded(_)), "{err}");
        // One 256 kB layer listed 64 times: 16 MiB of unpacking from a small upload.
        let big = layer_tar(&[("big", &vec![7u8; 256 << 10])]);
        let d = Digest::of(&big);
        let config = config_json(&vec![d.clone(); 64], "amd64");
        let bytes = Ar::new()
            .blob(&config)
            .blob(&big)
            .json("manifest.json", serde_json::json!([{"Config": blob_name(&Digest::of(&config)), "Layers": vec![blob_name(&d); 64]}]))
            .bytes();
        let (_a, s) = store();
        let limits = LoadLimits {
            max_total_bytes: 4 << 20,
            ..LoadLimits::default()
        };
        let err = load(&s, &mut Cursor::new(&bytes), &limits).unwrap_err();
        assert!(matches!(err, ArchiveError::LimitExceeded(_)), "{err}");
        assert_untouched(&s);
        // The same archive within limits loads.
        let (_a, s) = store();
        assert_eq!(load_bytes(&s, &bytes).unwrap().len(), 1);
    }

    #[test]
    fn name_helpers() {
        assert_eq!(
            normalize_name(b"./a//b/./c").unwrap().as_deref(),
            Some("a/b/c")
        );
        assert_eq!(normalize_name(b"./").unwrap(), None);
        assert!(normalize_name(b"a/../b").is_err());
        assert!(normalize_name(b"\xff").is_err());
        assert_eq!(
            resolve_symlink("x/layer.tar", b"../y/layer.tar").unwrap(),
            "y/layer.tar"
        );
        assert!(resolve_symlink("layer.tar", b"../y").is_err());
        assert!(blob_name_digest("blobs/sha256/abc").is_none());
        assert!(blob_name_digest(&blob_name(&Digest::of(b""))).is_some());
    }
}
