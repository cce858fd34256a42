//! `docker push` (POST /images/{name}/push) and `docker import` (POST /images/create?fromSrc=).
//!
//! Push: for every layer, a HEAD checks whether the registry already has the blob; a layer
//! pulled from another repository of the same registry is cross-mounted (POST ?mount=&from=);
//! anything else is uploaded (one streamed PATCH, then PUT ?digest=). Layers Berth made
//! itself are stored uncompressed, as Docker does; they are gzip-compressed for the push and
//! the compressed digest is remembered per diff_id (`<data-root>/distribution/`), so a later
//! push of the same layer needs only the HEAD. The manifest (Docker schema 2) goes last and
//! its digest is recorded in the image's RepoDigests, which is what a pull back reports.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_image::{Compression, Digest, Reference};
use berth_registry::{Auth, Repository, UploadStart};
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::http_util::{stream_body, Body, Query};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// What Berth knows about a layer's compressed form on registries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DistInfo {
    digest: String,
    size: u64,
    media_type: String,
    /// "registry/repository" names known to have the blob.
    #[serde(default)]
    repos: Vec<String>,
}

fn dist_path(e: &Engine, diff_id: &Digest) -> PathBuf {
    e.config.data_root.join("distribution").join(format!("{}.json", diff_id.hex()))
}

fn read_dist(e: &Engine, diff_id: &Digest) -> Option<DistInfo> {
    serde_json::from_slice(&std::fs::read(dist_path(e, diff_id)).ok()?).ok()
}

fn write_dist(e: &Engine, diff_id: &Digest, d: &DistInfo) {
    let p = dist_path(e, diff_id);
    let _ = std::fs::create_dir_all(p.parent().expect("has parent"));
    let tmp = p.with_extension("tmp");
    let ok = std::fs::write(&tmp, serde_json::to_vec(d).unwrap_or_default()).and_then(|_| std::fs::rename(&tmp, &p));
    if let Err(err) = ok {
        tracing::warn!("recording push metadata: {err}");
    }
}

fn media_type(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
    }
}

fn short(d: &str) -> String {
    d.split_once(':').map(|(_, h)| h).unwrap_or(d).chars().take(12).collect()
}

#[derive(Clone)]
struct Out(mpsc::Sender<Value>);
impl Out {
    async fn send(&self, v: Value) {
        let _ = self.0.send(v).await;
    }
    async fn layer(&self, id: &str, status: &str) {
        self.send(json!({ "status": status, "progressDetail": {}, "id": id })).await;
    }
}

fn json_stream(rx: mpsc::Receiver<Value>) -> Response<Body> {
    let mut rx = rx;
    let s = async_stream::stream! {
        while let Some(v) = rx.recv().await {
            let mut b = serde_json::to_vec(&v).unwrap_or_default();
            b.push(b'\n');
            yield Ok::<_, std::io::Error>(Bytes::from(b));
        }
    };
    let mut r = Response::new(stream_body(s));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn auth_of(req: &Request<Incoming>) -> Result<Auth, ApiError> {
    match req.headers().get("X-Registry-Auth") {
        Some(h) => Ok(berth_registry::parse_auth_header(h.to_str().map_err(|_| ApiError::bad("invalid X-Registry-Auth header"))?)?),
        None => Ok(Auth::Anonymous),
    }
}

/// POST /images/{name}/push?tag=
pub async fn push(e: &Arc<Engine>, name: &str, req: Request<Incoming>, q: &Query) -> Result<Response<Body>, ApiError> {
    let auth = auth_of(&req)?;
    let base = Reference::parse_name(name)?;
    let tag = q.get("tag").filter(|t| !t.is_empty()).map(str::to_string).or(base.tag.clone());
    let repo_name = base.full_name();
    // The tags to push: the one asked for, or all of the repository's.
    let refs: Vec<(Reference, Digest)> = {
        let all = e.store.references()?;
        let mine: Vec<(Reference, Digest)> = all.into_iter().filter(|(r, _)| r.full_name() == repo_name && r.tag.is_some()).collect();
        match &tag {
            Some(t) => {
                let found: Vec<_> = mine.into_iter().filter(|(r, _)| r.tag.as_deref() == Some(t.as_str())).collect();
                if found.is_empty() {
                    return Err(ApiError::NotFound(format!("tag does not exist: {}:{t}", base.familiar_name())));
                }
                found
            }
            None if mine.is_empty() => {
                return Err(ApiError::NotFound(format!("An image does not exist locally with the tag: {}", base.familiar_name())))
            }
            None => mine,
        }
    };
    let (tx, rx) = mpsc::channel(256);
    let out = Out(tx);
    let e2 = Arc::clone(e);
    tokio::spawn(async move {
        let repo = Repository { registry: base.registry.clone(), name: base.repository.clone() };
        out.send(json!({ "status": format!("The push refers to repository [{}]", base.familiar_name()) })).await;
        for (r, id) in refs {
            if let Err(err) = push_one(&e2, &repo, &r, &id, &auth, &out).await {
                tracing::info!("push of {} failed: {err}", r.familiar_string());
                let msg = err.to_string();
                out.send(json!({ "errorDetail": { "message": msg }, "error": msg })).await;
                return;
            }
        }
    });
    Ok(json_stream(rx))
}

/// The blob to send for one layer: (digest, size, media type, file, temp file to remove).
struct LayerBlob {
    digest: String,
    size: u64,
    media_type: String,
    path: Option<PathBuf>,
    temp: Option<PathBuf>,
}

impl Drop for LayerBlob {
    fn drop(&mut self) {
        if let Some(t) = &self.temp {
            let _ = std::fs::remove_file(t);
        }
    }
}

/// Gzip a stored uncompressed layer into a temp file (deterministic: no name, no mtime, so
/// the same layer always gives the same digest).
fn compress_layer(e: &Engine, chain: &Digest) -> Result<LayerBlob, ApiError> {
    let mut rnd = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut rnd));
    let tmp = e.store.tmp_dir().join(format!("push-{}-{}.tar.gz", chain.short(), hex::encode(rnd)));
    let f = std::fs::File::create(&tmp).map_err(ApiError::internal)?;
    let mut blob = LayerBlob { digest: String::new(), size: 0, media_type: media_type(Compression::Gzip).into(), path: Some(tmp.clone()), temp: Some(tmp.clone()) };
    let mut gz = flate2::GzBuilder::new().write(std::io::BufWriter::new(f), flate2::Compression::default());
    e.store.write_layer_tar(chain, &mut gz)?;
    let f = gz.finish().map_err(ApiError::internal)?.into_inner().map_err(|err| ApiError::internal(err.to_string()))?;
    f.sync_all().map_err(ApiError::internal)?;
    drop(f);
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    let size = std::io::copy(&mut std::fs::File::open(&tmp).map_err(ApiError::internal)?, &mut h).map_err(ApiError::internal)?;
    let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::finalize(h)));
    blob.digest = digest;
    blob.size = size;
    Ok(blob)
}

/// A repository on the same registry that is known to have the blob (to mount from).
fn mount_source(e: &Engine, repo: &Repository, chain: &Digest, dist: Option<&DistInfo>) -> Option<String> {
    let mine = format!("{}/{}", repo.registry, repo.name);
    if let Some(d) = dist {
        for r in &d.repos {
            if let Some((reg, name)) = r.split_once('/') {
                if reg == repo.registry && *r != mine {
                    return Some(name.to_string());
                }
            }
        }
    }
    for img in e.store.list_images().ok()? {
        if !img.layers.contains(chain) {
            continue;
        }
        for rd in &img.repo_digests {
            if let Ok(r) = Reference::parse_name(rd) {
                if r.registry == repo.registry && r.repository != repo.name {
                    return Some(r.repository);
                }
            }
        }
    }
    None
}

async fn push_one(e: &Arc<Engine>, repo: &Repository, r: &Reference, id: &Digest, auth: &Auth, out: &Out) -> Result<(), ApiError> {
    let rec = e.store.get_image(id)?;
    let config = e.store.read_blob(id, crate::commit::MAX_CONFIG_BYTES)?;
    for d in rec.diff_ids.iter().rev() {
        out.layer(&short(&d.to_string()), "Preparing").await;
    }
    let mut descriptors = Vec::new();
    let me = format!("{}/{}", repo.registry, repo.name);
    for (chain, diff_id) in rec.layers.iter().zip(rec.diff_ids.iter()) {
        let sid = short(&diff_id.to_string());
        let info = e.store.layer_info(chain)?;
        let mut dist = read_dist(e, diff_id);
        // Pulled layers are pushed as they came; our own (uncompressed) ones compressed.
        let mut blob = if info.compression != Compression::None {
            let size = e.store.blob_size(&info.blob).ok_or_else(|| ApiError::internal(format!("layer blob {} is missing", info.blob)))?;
            LayerBlob { digest: info.blob.to_string(), size, media_type: media_type(info.compression).into(), path: Some(e.store.blob_path(&info.blob)), temp: None }
        } else if let Some(d) = dist.as_ref().filter(|d| !d.digest.is_empty()) {
            LayerBlob { digest: d.digest.clone(), size: d.size, media_type: d.media_type.clone(), path: None, temp: None }
        } else {
            let e2 = Arc::clone(e);
            let c2 = chain.clone();
            tokio::task::spawn_blocking(move || compress_layer(&e2, &c2)).await??
        };
        if e.registry.blob_exists(repo, &blob.digest, auth).await?.is_some() {
            out.layer(&sid, "Layer already exists").await;
        } else {
            let from = mount_source(e, repo, chain, dist.as_ref());
            let start = e.registry.start_upload(repo, auth, from.as_deref().map(|f| (f, blob.digest.as_str()))).await?;
            match start {
                UploadStart::Mounted => out.layer(&sid, &format!("Mounted from {}", from.unwrap_or_default())).await,
                UploadStart::Session(url) => {
                    if blob.path.is_none() {
                        // Known digest but the registry lacks it: compress again (same bytes).
                        let e2 = Arc::clone(e);
                        let c2 = chain.clone();
                        blob = tokio::task::spawn_blocking(move || compress_layer(&e2, &c2)).await??;
                    }
                    out.layer(&sid, "Pushing").await;
                    let sent = Arc::new(AtomicU64::new(0));
                    let path = blob.path.clone().expect("set above");
                    let up = e.registry.upload_blob(repo, url, &path, &blob.digest, auth, Arc::clone(&sent));
                    tokio::pin!(up);
                    let total = blob.size;
                    loop {
                        tokio::select! {
                            r = &mut up => { r?; break; }
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                                let cur = sent.load(Ordering::Relaxed);
                                out.send(json!({ "status": "Pushing", "progressDetail": { "current": cur, "total": total }, "id": sid })).await;
                            }
                        }
                    }
                    out.layer(&sid, "Pushed").await;
                }
            }
        }
        let d = dist.get_or_insert_with(|| DistInfo { digest: blob.digest.clone(), size: blob.size, media_type: blob.media_type.clone(), repos: Vec::new() });
        d.digest = blob.digest.clone();
        d.size = blob.size;
        d.media_type = blob.media_type.clone();
        if !d.repos.contains(&me) {
            d.repos.push(me.clone());
        }
        write_dist(e, diff_id, d);
        descriptors.push(json!({ "mediaType": blob.media_type, "size": blob.size, "digest": blob.digest }));
    }
    // The config blob.
    let cfg_digest = id.to_string();
    if e.registry.blob_exists(repo, &cfg_digest, auth).await?.is_none() {
        if let UploadStart::Session(url) = e.registry.start_upload(repo, auth, None).await? {
            e.registry.upload_blob(repo, url, &e.store.blob_path(id), &cfg_digest, auth, Arc::new(AtomicU64::new(0))).await?;
        }
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": DOCKER_CONFIG, "size": config.len(), "digest": cfg_digest },
        "layers": descriptors,
    });
    let bytes = Bytes::from(serde_json::to_vec_pretty(&manifest).map_err(ApiError::internal)?);
    let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
    let digest = e.registry.put_manifest(repo, &tag, DOCKER_MANIFEST, bytes.clone(), auth).await?;
    let rd = format!("{}@{digest}", r.familiar_name());
    let id2 = id.clone();
    e.blocking(move |s| {
        let mut rec = s.get_image(&id2)?;
        if !rec.repo_digests.contains(&rd) {
            rec.repo_digests.push(rd);
            s.put_image(&rec)?;
        }
        Ok(())
    })
    .await?;
    out.send(json!({ "status": format!("{tag}: digest: {digest} size: {}", bytes.len()) })).await;
    out.send(json!({ "progressDetail": {}, "aux": { "Tag": tag, "Digest": digest, "Size": bytes.len() } })).await;
    e.events.image("push", &r.familiar_string(), Some(&r.familiar_string()));
    Ok(())
}

/// POST /images/create?fromSrc=-&repo=&tag=&message=&changes= (docker import): the body is a
/// filesystem tar (plain, gzip or zstd), made into a one-layer image.
pub async fn import(e: &Arc<Engine>, req: Request<Incoming>, q: &Query) -> Result<Response<Body>, ApiError> {
    let src = q.get("fromSrc").unwrap_or("-");
    if src != "-" {
        return Err(ApiError::bad("importing from a URL is not supported by Berth yet; pipe the file into `docker import -`"));
    }
    let target = crate::commit::tag_reference(q.get("repo"), q.get("tag"))?;
    let mut cfg = berth_build::config::RunConfig::default();
    crate::commit::apply_changes(&mut cfg, &q.all("changes"))?;
    let message = q.get("message").filter(|m| !m.is_empty()).map(str::to_string);
    let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(16);
    let mut body = req.into_body();
    tokio::spawn(async move {
        use http_body_util::BodyExt;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(d) = f.into_data() {
                        if tx.send(Ok(d)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(err) => {
                    let _ = tx.send(Err(err.to_string())).await;
                    return;
                }
            }
        }
    });
    let store = Arc::clone(&e.store);
    let t2 = target.clone();
    let id = tokio::task::spawn_blocking(move || -> Result<Digest, ApiError> {
        use std::io::{BufRead, Read};
        struct R(mpsc::Receiver<Result<Bytes, String>>, Bytes);
        impl Read for R {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                while self.1.is_empty() {
                    match self.0.blocking_recv() {
                        Some(Ok(b)) => self.1 = b,
                        Some(Err(e)) => return Err(std::io::Error::other(e)),
                        None => return Ok(0),
                    }
                }
                let n = buf.len().min(self.1.len());
                buf[..n].copy_from_slice(&self.1[..n]);
                self.1 = self.1.slice(n..);
                Ok(n)
            }
        }
        let mut r = std::io::BufReader::with_capacity(256 * 1024, R(rx, Bytes::new()));
        let head = r.fill_buf().map_err(|err| ApiError::bad(format!("reading the import: {err}")))?.to_vec();
        let mut reader: Box<dyn Read> = match Compression::detect(&head) {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r).map_err(ApiError::internal)?),
            Compression::None => Box::new(r),
        };
        // The tar is stored as it came (uncompressed) and then unpacked with the layer rules:
        // unsafe names, links out of the tree and bombs fail before an image exists.
        let mut w = store.blob_writer()?;
        let max = store.limits().max_layer_bytes;
        let n = std::io::copy(&mut (&mut reader).take(max + 1), &mut w).map_err(|err| ApiError::bad(format!("reading the import: {err}")))?;
        if n > max {
            return Err(ApiError::bad(format!("the imported archive is larger than {max} bytes")));
        }
        let (digest, _) = w.commit()?;
        let _lease = store.lease([digest.clone()]);
        let info = store.unpack_layer(&digest, Compression::None, &digest, None).map_err(|err| ApiError::bad(format!("invalid archive: {err}")))?;
        let config = serde_json::to_value(&cfg).map_err(ApiError::internal)?;
        let id = crate::commit::commit_image(
            &store,
            crate::commit::NewImage {
                parent: None,
                parent_config: &json!({}),
                config,
                container_config: None,
                created_by: String::new(),
                author: None,
                comment: Some(message.unwrap_or_else(|| "Imported from -".into())),
                layer: Some(&info),
            },
        )?;
        if let Some(t) = &t2 {
            store.set_reference(t, &id)?;
        }
        Ok(id)
    })
    .await??;
    e.events.image("import", &id.to_string(), target.as_ref().map(|t| t.familiar_string()).as_deref());
    let mut b = serde_json::to_vec(&json!({ "status": id.to_string() })).unwrap_or_default();
    b.push(b'\n');
    let mut resp = Response::new(crate::http_util::full(b));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
