//! Pull orchestration: resolve a reference to a manifest, download config and layers in
//! parallel (each blob once, even across concurrent pulls), unpack them, and only then make the
//! image visible. A kill -9 at any point leaves at most verified blobs, complete layers and
//! resumable ingest files behind; never an image record or tag that points at missing data.


use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_image::digest::Digest;
use berth_image::reference::Reference;
use berth_image::{Compression, ImageRecord, Store};
use berth_registry::manifest::{self, Descriptor, ImageManifest, ParsedManifest, Platform};
use berth_registry::{Auth, Repository};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::engine::Engine;
use crate::error::ApiError;

/// Image configs are small JSON documents; anything bigger is hostile.
const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;
/// Parallel layer downloads per pull (Docker's default is 3).
const PARALLEL_DOWNLOADS: usize = 3;
const BLOB_ATTEMPTS: u32 = 4;

/// Progress lines in Docker's JSON message format, sent to the client as they happen.
#[derive(Clone)]
pub struct Progress(Option<mpsc::Sender<Value>>);

impl Progress {
    pub fn new(tx: mpsc::Sender<Value>) -> Self {
        Progress(Some(tx))
    }
    pub fn none() -> Self {
        Progress(None)
    }
    async fn send(&self, v: Value) {
        if let Some(tx) = &self.0 {
            // A client that went away does not stop the pull.
            let _ = tx.send(v).await;
        }
    }
    pub async fn status(&self, status: &str) {
        self.send(json!({ "status": status })).await;
    }
    async fn layer(&self, id: &str, status: &str) {
        self.send(json!({ "status": status, "progressDetail": {}, "id": id })).await;
    }
    async fn bytes(&self, id: &str, status: &str, current: u64, total: Option<u64>) {
        let mut detail = json!({ "current": current });
        if let Some(t) = total {
            detail["total"] = json!(t);
        }
        self.send(json!({ "status": status, "progressDetail": detail, "id": id })).await;
    }
}

/// What `resolve` found: enough to fetch the image without asking the registry again.
pub struct Resolved {
    pub repo: Repository,
    /// Digest of the manifest the reference named (the index for multi-platform images): the
    /// one `RepoDigests` shows, as Docker does.
    pub top_digest: String,
    pub manifest: ImageManifest,
}

/// Operating systems and architectures Go knows (`GOOS`/`GOARCH`), as containerd's platform
/// parser, whose rules Docker's `platform` parameter follows.
const KNOWN_OS: &[&str] = &[
    "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux", "nacl",
    "netbsd", "openbsd", "plan9", "solaris", "windows", "zos",
];
const KNOWN_ARCH: &[&str] = &[
    "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le", "loong64", "mips",
    "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc", "riscv", "riscv64", "s390", "s390x",
    "sparc", "sparc64", "wasm",
];

/// `os[/arch[/variant]]`, checked before anything is fetched. A lone component is an OS if Go
/// knows it, else an architecture of the host's OS; one that is neither is refused (Docker:
/// `"foobar": unknown operating system or architecture`) instead of being looked up.
fn platform_from(s: Option<&str>) -> Result<Platform, ApiError> {
    let host = manifest::host_platform();
    let Some(s) = s.filter(|s| !s.is_empty()) else { return Ok(host) };
    let parts: Vec<&str> = s.split('/').collect();
    let valid = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if parts.len() > 3 || !parts.iter().all(|p| valid(p)) {
        return Err(ApiError::bad(format!("invalid platform {s:?}: expected os[/arch[/variant]]")));
    }
    let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
    if let [one] = lower.as_slice() {
        if KNOWN_OS.contains(&one.as_str()) {
            return Ok(Platform { os: one.clone(), ..host });
        }
        let arch = match one.as_str() {
            "x86_64" | "x86-64" => "amd64",
            "i386" => "386",
            "aarch64" => "arm64",
            "armhf" | "armel" => "arm",
            a => a,
        };
        if KNOWN_ARCH.contains(&arch) {
            return Ok(Platform { os: host.os, architecture: arch.to_string(), variant: None });
        }
        return Err(ApiError::bad(format!("{s:?}: unknown operating system or architecture: invalid argument")));
    }
    Ok(Platform { os: lower[0].clone(), architecture: lower[1].clone(), variant: lower.get(2).cloned() })
}

/// Phase one, before any progress is streamed, so that "not found" and "unauthorized" reach the
/// client as HTTP errors the CLI prints plainly.
pub async fn resolve(e: &Engine, r: &Reference, auth: &Auth, platform: Option<&str>) -> Result<Resolved, ApiError> {
    let want = platform_from(platform)?;
    let repo = Repository { registry: r.registry.clone(), name: r.repository.clone() };
    let target = match (&r.digest, &r.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".to_string(),
    };
    let fetched = e.registry.get_manifest(&repo, &target, auth).await.map_err(|err| pull_error(r, err))?;
    let top_digest = fetched.digest.clone();
    let manifest = match manifest::parse(&fetched.media_type, &fetched.bytes)? {
        ParsedManifest::Image(m) => m,
        ParsedManifest::Index(idx) => {
            let d = manifest::select_platform(&idx, &want.os, &want.architecture, want.variant.as_deref())
                .ok_or_else(|| {
                    ApiError::NotFound(format!(
                        "no matching manifest for {}/{} in the manifest list entries",
                        want.os, want.architecture
                    ))
                })?
                .clone();
            let inner = e.registry.get_manifest(&repo, &d.digest, auth).await?;
            match manifest::parse(&inner.media_type, &inner.bytes)? {
                ParsedManifest::Image(m) => m,
                ParsedManifest::Index(_) => {
                    return Err(ApiError::bad("nested image indexes are not supported"));
                }
            }
        }
    };
    Ok(Resolved { repo, top_digest, manifest })
}

fn pull_error(r: &Reference, err: berth_registry::RegistryError) -> ApiError {
    use berth_registry::RegistryError as R;
    match err {
        R::Unauthorized(m) => ApiError::NotFound(format!(
            "pull access denied for {}, repository does not exist or may require 'docker login': {m}",
            r.familiar_name()
        )),
        R::NotFound(m) => ApiError::NotFound(format!("manifest for {} not found: {m}", r.familiar_string())),
        other => other.into(),
    }
}

fn layer_compression(d: &Descriptor) -> Result<Compression, ApiError> {
    Ok(match manifest::layer_compression(&d.media_type)? {
        manifest::Compression::None => Compression::None,
        manifest::Compression::Gzip => Compression::Gzip,
        manifest::Compression::Zstd => Compression::Zstd,
    })
}

/// Phase two: fetch and unpack everything, then publish the image and the reference.
/// Returns the image ID.
pub async fn fetch(e: Arc<Engine>, r: Reference, auth: Auth, res: Resolved, progress: Progress) -> Result<Digest, ApiError> {
    let m = &res.manifest;
    let config_digest = Digest::parse(&m.config.digest)?;
    if m.config.size > MAX_CONFIG_BYTES {
        return Err(ApiError::bad(format!("image config is too large ({} bytes)", m.config.size)));
    }
    // Keep gc away from what this pull is assembling, from before the first "already there"
    // check on (taking a lease waits for a gc under way, which may be an rmi of this image).
    let mut leased: Vec<Digest> = vec![config_digest.clone()];
    for l in &m.layers {
        leased.push(Digest::parse(&l.digest)?);
    }
    let store = Arc::clone(&e.store);
    let mut lease = tokio::task::spawn_blocking(move || store.lease(leased)).await?;
    download(&e, &res.repo, &auth, &m.config, None, &progress).await?;
    let cfg_digest = config_digest.clone();
    let config_bytes = e.blocking(move |s| s.read_blob(&cfg_digest, MAX_CONFIG_BYTES).map_err(ApiError::from)).await?;
    let config: Value = serde_json::from_slice(&config_bytes)
        .map_err(|err| ApiError::bad(format!("invalid image config: {err}")))?;
    let diff_ids: Vec<Digest> = config["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| ApiError::bad("invalid image config: no rootfs.diff_ids"))?
        .iter()
        .map(|v| v.as_str().ok_or_else(|| ApiError::bad("invalid diff_id")).and_then(|s| Ok(Digest::parse(s)?)))
        .collect::<Result<_, _>>()?;
    if diff_ids.len() != m.layers.len() {
        return Err(ApiError::bad(format!(
            "invalid image: the manifest has {} layers but the config lists {} diff_ids",
            m.layers.len(),
            diff_ids.len()
        )));
    }
    let mut chain = Vec::with_capacity(diff_ids.len());
    let mut parent: Option<Digest> = None;
    for d in &diff_ids {
        let c = Store::chain_id(parent.as_ref(), d);
        chain.push(c.clone());
        parent = Some(c);
    }
    let lease = {
        let chain = chain.clone();
        tokio::task::spawn_blocking(move || {
            for c in chain {
                lease.add(c);
            }
            lease
        })
        .await?
    };
    let _lease = lease;
    let existing = e.store.get_image(&config_digest).ok();
    let had_image = existing.as_ref().map(|rec| rec.layers.iter().all(|c| e.store.has_layer(c))).unwrap_or(false);

    let mut downloaded_any = false;
    let mut tasks = Vec::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(PARALLEL_DOWNLOADS));
    for (i, layer) in m.layers.iter().enumerate() {
        let short = short_id(&layer.digest);
        if e.store.has_layer(&chain[i]) {
            progress.layer(&short, "Already exists").await;
            continue;
        }
        downloaded_any = true;
        progress.layer(&short, "Pulling fs layer").await;
        let compression = layer_compression(layer)?;
        let (e2, repo, auth2, layer, progress2, slots) =
            (Arc::clone(&e), res.repo.clone(), auth.clone(), layer.clone(), progress.clone(), Arc::clone(&slots));
        let (diff_id, chain_id, parent) = (diff_ids[i].clone(), chain[i].clone(), if i > 0 { Some(chain[i - 1].clone()) } else { None });
        // Downloads run in parallel; extraction follows in layer order, because a layer is
        // recorded on top of its parent.
        tasks.push((
            i,
            compression,
            tokio::spawn(async move {
                let short = short_id(&layer.digest);
                let _slot = slots.acquire().await.map_err(ApiError::internal)?;
                download(&e2, &repo, &auth2, &layer, Some(&short), &progress2).await
            }),
            (diff_id, chain_id, parent),
        ));
    }
    let mut first_err = None;
    for (i, compression, task, (diff_id, chain_id, parent)) in tasks {
        let r = match task.await {
            Ok(r) => r,
            Err(j) => Err(ApiError::from(j)),
        };
        if first_err.is_some() {
            continue;
        }
        let layer = &m.layers[i];
        let short = short_id(&layer.digest);
        let r = match r {
            Ok(()) => {
                progress.layer(&short, "Extracting").await;
                let r = unpack(&e, Digest::parse(&layer.digest)?, compression, diff_id, chain_id, parent).await;
                if r.is_ok() {
                    progress.layer(&short, "Pull complete").await;
                }
                r
            }
            Err(err) => Err(err),
        };
        if let Err(err) = r {
            first_err = Some(err);
        }
    }
    if let Some(err) = first_err {
        return Err(err);
    }

    // Everything is on disk: now, and only now, the image becomes visible.
    let repo_digest = format!("{}@{}", r.familiar_name(), res.top_digest);
    let id = config_digest.clone();
    let created = config["created"].as_str().map(str::to_owned);
    let r2 = r.clone();
    let chain2 = chain.clone();
    let previous = e
        .blocking(move |s| {
            let mut size = 0;
            for c in &chain2 {
                size += s.layer_info(c)?.size;
            }
            // Record and tag in one step: a racing rmi removes both or neither.
            let make = |now: Option<&ImageRecord>| {
                let mut rec = now.cloned().unwrap_or_else(|| ImageRecord {
                    id: id.clone(),
                    layers: chain2.clone(),
                    diff_ids: diff_ids.clone(),
                    repo_digests: Vec::new(),
                    created,
                    size,
                    loaded_at: chrono::Utc::now().to_rfc3339(),
                    parent: None,
                });
                if !rec.repo_digests.contains(&repo_digest) {
                    rec.repo_digests.push(repo_digest);
                }
                rec
            };
            Ok(s.publish_image(&id, make, Some(&r2))?)
        })
        .await?;
    progress.status(&format!("Digest: {}", res.top_digest)).await;
    let name = r.familiar_string();
    if !downloaded_any && had_image && previous.as_ref() == Some(&config_digest) {
        progress.status(&format!("Status: Image is up to date for {name}")).await;
    } else {
        progress.status(&format!("Status: Downloaded newer image for {name}")).await;
    }
    if let Some(old) = previous.filter(|p| p != &config_digest) {
        // The tag moved: the old image may now be dangling; it stays until pruned, as in Docker.
        tracing::debug!(old = %old, "tag {name} moved to a new image");
    }
    e.events.image("pull", &name, Some(&name));
    Ok(config_digest)
}

fn short_id(digest: &str) -> String {
    let hex = digest.split_once(':').map(|(_, h)| h).unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// Fetch one blob into the content store, once per digest across all pulls. Resumes from the
/// bytes already on disk after a dropped connection or a daemon restart.
async fn download(
    e: &Arc<Engine>,
    repo: &Repository,
    auth: &Auth,
    desc: &Descriptor,
    progress_id: Option<&str>,
    progress: &Progress,
) -> Result<(), ApiError> {
    let digest = Digest::parse(&desc.digest)?;
    if e.store.has_blob(&digest) {
        if let Some(id) = progress_id {
            progress.layer(id, "Download complete").await;
        }
        return Ok(());
    }
    let (e2, repo2, auth2, desc2, progress2, id2) =
        (Arc::clone(e), repo.clone(), auth.clone(), desc.clone(), progress.clone(), progress_id.map(str::to_owned));
    let (joined, r) = e
        .downloads
        .run(desc.digest.clone(), move || async move {
            fetch_blob(&e2, &repo2, &auth2, &desc2, id2.as_deref(), &progress2).await
        })
        .await;
    r?;
    if let (true, Some(id)) = (joined, progress_id) {
        progress.layer(id, "Download complete").await;
    }
    Ok(())
}

async fn fetch_blob(
    e: &Arc<Engine>,
    repo: &Repository,
    auth: &Auth,
    desc: &Descriptor,
    progress_id: Option<&str>,
    progress: &Progress,
) -> Result<(), ApiError> {
    let digest = Digest::parse(&desc.digest)?;
    let size = desc.size;
    let d2 = digest.clone();
    let mut ingest = e.blocking(move |s| Ok(s.begin_ingest(&d2, Some(size))?)).await?;
    let mut attempt = 0u32;
    let mut last_report = Instant::now();
    loop {
        attempt += 1;
        let offset = ingest.written();
        let resp = match e.registry.get_blob(repo, &desc.digest, auth, offset).await {
            Ok(r) => r,
            Err(err) if attempt < BLOB_ATTEMPTS && !matches!(err, berth_registry::RegistryError::Unauthorized(_) | berth_registry::RegistryError::NotFound(_)) => {
                tracing::info!(digest = %desc.digest, "blob request failed ({err}); retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        if resp.offset != offset {
            // The server ignored our Range request: start over.
            tokio::task::block_in_place(|| ingest.reset())?;
        }
        let mut stream = resp.stream;
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut failed = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => {
                    buf.extend_from_slice(&b);
                    if buf.len() >= (1 << 20) {
                        write_chunk(&mut ingest, &mut buf)?;
                    }
                    let have = ingest.written() + buf.len() as u64;
                    if have > size {
                        return Err(ApiError::bad(format!(
                            "blob {} is larger than the {size} bytes its manifest declares",
                            desc.digest
                        )));
                    }
                    if let Some(id) = progress_id {
                        if last_report.elapsed() >= Duration::from_millis(100) {
                            last_report = Instant::now();
                            progress.bytes(id, "Downloading", have, Some(size)).await;
                        }
                    }
                }
                Err(err) => {
                    failed = Some(err);
                    break;
                }
            }
        }
        write_chunk(&mut ingest, &mut buf)?;
        match failed {
            None => break,
            Some(err) if attempt < BLOB_ATTEMPTS => {
                tracing::info!(digest = %desc.digest, at = ingest.written(), "blob stream broke ({err}); resuming");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            Some(err) => return Err(err.into()),
        }
    }
    if let Some(id) = progress_id {
        progress.bytes(id, "Downloading", ingest.written(), Some(size)).await;
        progress.layer(id, "Verifying Checksum").await;
    }
    tokio::task::spawn_blocking(move || ingest.commit()).await??;
    if let Some(id) = progress_id {
        progress.layer(id, "Download complete").await;
    }
    Ok(())
}

fn write_chunk(ingest: &mut berth_image::Ingest, buf: &mut Vec<u8>) -> Result<(), ApiError> {
    if buf.is_empty() {
        return Ok(());
    }
    tokio::task::block_in_place(|| ingest.write_all(buf)).map_err(|err| ApiError::internal(format!("writing blob: {err}")))?;
    buf.clear();
    Ok(())
}

/// Unpack one layer, once per chain ID across concurrent pulls and loads.
async fn unpack(e: &Arc<Engine>, blob: Digest, compression: Compression, diff_id: Digest, chain_id: Digest, parent: Option<Digest>) -> Result<(), ApiError> {
    let e2 = Arc::clone(e);
    let (_, r) = e
        .unpacks
        .run(chain_id.to_string(), move || async move {
            let _slot = e2.unpack_slots.acquire().await.map_err(ApiError::internal)?;
            e2.blocking(move |s| {
                if s.has_layer(&chain_id) {
                    return Ok(());
                }
                s.unpack_layer(&blob, compression, &diff_id, parent.as_ref())?;
                Ok(())
            })
            .await
        })
        .await;
    r
}


#[cfg(test)]
mod platform_tests {
    use super::*;

    #[test]
    fn platforms_parse_as_containerd_does_before_any_lookup() {
        let host = manifest::host_platform();
        let p = platform_from(Some("linux")).unwrap();
        assert_eq!((p.os.as_str(), p.architecture.as_str()), ("linux", host.architecture.as_str()));
        let p = platform_from(Some("arm64")).unwrap();
        assert_eq!((p.os.as_str(), p.architecture.as_str()), (host.os.as_str(), "arm64"));
        assert_eq!(platform_from(Some("x86_64")).unwrap().architecture, "amd64");
        let p = platform_from(Some("Linux/ARM/v7")).unwrap();
        assert_eq!((p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()), ("linux", "arm", Some("v7")));
        let e = platform_from(Some("foobar")).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("unknown operating system or architecture"), "{e}");
        for bad in ["linux/", "a/b/c/d", "linux/am d64", "../x"] {
            assert_eq!(platform_from(Some(bad)).unwrap_err().status(), 400, "{bad}");
        }
        assert_eq!(platform_from(None).unwrap().architecture, host.architecture);
    }
}
