//! Image endpoints: list, pull, inspect, history, tag, remove, save, load, prune.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::sync::Arc;

use berth_image::digest::Digest;
use berth_image::reference::{looks_like_id, Reference};
use berth_image::{ImageRecord, Store};
use bollard_stubs::models::{
    DriverData, HistoryResponseItem, ImageConfig, ImageDeleteResponseItem, ImageInspect, ImageInspectMetadata,
    ImageInspectRootFs, ImagePruneResponse, ImageSummary,
};
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::http_util::{glob_match, json as json_resp, label_matches, ok_json, stream_body, Body, Query};
use crate::pull::{self, Progress};

const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;

/// How long a client may take to send a JSON request body (at most a few MiB): a client that
/// promises a body and never sends it must not hold a connection and a task forever.
pub const JSON_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a JSON request body could not be read (its status is decided in `error.rs`).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("timed out reading the request body (more than {} s)", JSON_BODY_TIMEOUT.as_secs())]
    Timeout,
    #[error("cannot read request body: {0}")]
    Read(String),
}

/// Read a JSON request body of at most `limit` bytes within [`JSON_BODY_TIMEOUT`]. An empty
/// body means `T::default()`.
pub async fn read_json<T: DeserializeOwned + Default>(req: Request<Incoming>, limit: usize) -> Result<T, ApiError> {
    let body = tokio::time::timeout(JSON_BODY_TIMEOUT, Limited::new(req.into_body(), limit).collect())
        .await
        .map_err(|_| BodyError::Timeout)?
        .map_err(|e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
            Some(_) => BodyError::TooLarge { limit },
            None => BodyError::Read(e.to_string()),
        })?
        .to_bytes();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    Ok(serde_json::from_slice(&body)?)
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn json_stream(rx: mpsc::Receiver<Value>) -> Response<Body> {
    let mut rx = rx;
    let s = async_stream::stream! {
        while let Some(v) = rx.recv().await {
            yield Ok::<_, std::io::Error>(line(&v));
        }
    };
    let mut r = Response::new(stream_body(s));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_line(msg: &str) -> Value {
    json!({ "errorDetail": { "message": msg }, "error": msg })
}

/// Everything the listing and inspect views need about one image.
struct View {
    rec: ImageRecord,
    config: Value,
    tags: Vec<String>,
    digests: Vec<String>,
}

fn view(s: &Store, rec: ImageRecord, refs: &[(Reference, Digest)]) -> Result<View, ApiError> {
    let config: Value = serde_json::from_slice(&s.read_blob(&rec.id, MAX_CONFIG_BYTES)?).unwrap_or(Value::Null);
    let mut tags = Vec::new();
    let mut digests = rec.repo_digests.clone();
    for (r, id) in refs {
        if id != &rec.id {
            continue;
        }
        if r.digest.is_some() {
            let d = r.familiar_string();
            if !digests.contains(&d) {
                digests.push(d);
            }
        } else {
            tags.push(r.familiar_string());
        }
    }
    tags.sort();
    digests.sort();
    Ok(View { rec, config, tags, digests })
}

fn views(s: &Store) -> Result<Vec<View>, ApiError> {
    let refs = s.references()?;
    s.list_images()?.into_iter().map(|rec| view(s, rec, &refs)).collect()
}

fn created_unix(config: &Value) -> i64 {
    config["created"]
        .as_str()
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

fn labels(config: &Value) -> HashMap<String, String> {
    serde_json::from_value(config["config"]["Labels"].clone()).unwrap_or_default()
}

fn summary(v: &View) -> ImageSummary {
    ImageSummary {
        id: v.rec.id.to_string(),
        parent_id: v.rec.parent.as_ref().map(|p| p.to_string()).unwrap_or_default(),
        repo_tags: v.tags.clone(),
        repo_digests: v.digests.clone(),
        created: created_unix(&v.config),
        size: v.rec.size as i64,
        shared_size: -1,
        virtual_size: None,
        labels: labels(&v.config),
        containers: -1,
        manifests: None,
    }
}

pub async fn summaries(e: &Arc<Engine>) -> Result<Vec<ImageSummary>, ApiError> {
    let vs = e.blocking(views).await?;
    Ok(vs.iter().map(summary).collect())
}

/// GET /images/json
pub async fn list(e: &Arc<Engine>, q: &Query) -> Result<Response<Body>, ApiError> {
    let f = q.filters()?;
    f.only(&["dangling", "label", "reference", "before", "since", "until"])?;
    let dangling = f.bool("dangling")?;
    let before = resolve_filter_times(e, f.get("before")).await?;
    let since = resolve_filter_times(e, f.get("since")).await?;
    let vs = e.blocking(views).await?;
    // Intermediate images (untagged parents of other images, left by builds) are hidden
    // unless all=1, as in Docker.
    let parents: HashSet<String> = vs.iter().filter_map(|v| v.rec.parent.as_ref().map(|p| p.to_string())).collect();
    let all = q.bool("all")?;
    let mut out: Vec<ImageSummary> = Vec::new();
    for v in &vs {
        if !all && v.tags.is_empty() && parents.contains(&v.rec.id.to_string()) {
            continue;
        }
        if let Some(d) = dangling {
            if d != v.tags.is_empty() {
                continue;
            }
        }
        let l = labels(&v.config);
        if !f.get("label").iter().all(|spec| label_matches(&l, spec)) {
            continue;
        }
        let created = created_unix(&v.config);
        if before.iter().any(|b| created >= *b) || since.iter().any(|s| created <= *s) {
            continue;
        }
        let mut s = summary(v);
        if !f.get("reference").is_empty() {
            let matching: Vec<String> = v
                .tags
                .iter()
                .filter(|t| {
                    f.get("reference").iter().any(|pat| {
                        let name = t.rsplit_once(':').map(|(n, _)| n).unwrap_or(t);
                        glob_match(pat, t) || glob_match(pat, name)
                    })
                })
                .cloned()
                .collect();
            if matching.is_empty() {
                continue;
            }
            s.repo_tags = matching;
        }
        out.push(s);
    }
    out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    Ok(ok_json(&out))
}

/// `before=`/`since=` name images; compare by their creation time.
async fn resolve_filter_times(e: &Arc<Engine>, names: &[String]) -> Result<Vec<i64>, ApiError> {
    let mut out = Vec::new();
    for n in names {
        let n = n.clone();
        let t = e
            .blocking(move |s| {
                let id = s.resolve(&n)?;
                let cfg: Value = serde_json::from_slice(&s.read_blob(&id, MAX_CONFIG_BYTES)?).unwrap_or(Value::Null);
                Ok(created_unix(&cfg))
            })
            .await?;
        out.push(t);
    }
    Ok(out)
}

/// POST /images/create (docker pull). `docker import` (fromSrc) arrives with the builder work.
pub async fn create(e: &Arc<Engine>, req: Request<Incoming>, q: &Query) -> Result<Response<Body>, ApiError> {
    if q.get("fromSrc").is_some() {
        return crate::push::import(e, req, q).await;
    }
    let from = q.get("fromImage").filter(|f| !f.is_empty()).ok_or_else(|| ApiError::bad("fromImage is required"))?;
    let tag = q.get("tag").unwrap_or("");
    // The CLI sends a digest in `tag` for `docker pull name@sha256:...`.
    let reference = if tag.is_empty() {
        Reference::parse(from)?
    } else if tag.contains(':') {
        Reference::parse(&format!("{from}@{tag}"))?
    } else {
        Reference::parse(&format!("{from}:{tag}"))?
    };
    let auth = match req.headers().get("X-Registry-Auth") {
        Some(h) => berth_registry::parse_auth_header(
            h.to_str().map_err(|_| ApiError::bad("invalid X-Registry-Auth header"))?,
        )?,
        None => berth_registry::Auth::Anonymous,
    };
    let resolved = pull::resolve(e, &reference, &auth, q.get("platform")).await?;

    let (tx, rx) = mpsc::channel(256);
    let e2 = Arc::clone(e);
    tokio::spawn(async move {
        let progress = Progress::new(tx.clone());
        let id = reference
            .digest
            .as_ref()
            .map(|d| d.to_string())
            .or_else(|| reference.tag.clone())
            .unwrap_or_default();
        let _ = tx
            .send(json!({ "status": format!("Pulling from {}", reference.repository), "id": id }))
            .await;
        if let Err(err) = pull::fetch(e2, reference, auth, resolved, progress).await {
            tracing::warn!("pull failed: {err}");
            let _ = tx.send(error_line(&err.to_string())).await;
        }
    });
    Ok(json_stream(rx))
}

/// GET /images/{name}/json
pub async fn inspect(e: &Arc<Engine>, name: &str) -> Result<Response<Body>, ApiError> {
    let name = name.to_string();
    let v = e.blocking(move |s| lookup(s, &name)).await?;
    let layers_dir = |c: &Digest| e.store.layer_diff_dir(c).display().to_string();
    let lower: Vec<String> = v.rec.layers.iter().rev().map(layers_dir).collect();
    let mut data = HashMap::new();
    if let Some((top, rest)) = lower.split_first() {
        data.insert("UpperDir".to_string(), top.clone());
        if !rest.is_empty() {
            data.insert("LowerDir".to_string(), rest.join(":"));
        }
    }
    let config: Option<ImageConfig> = serde_json::from_value(v.config["config"].clone()).ok();
    let str_of = |k: &str| v.config[k].as_str().map(str::to_owned);
    let out = ImageInspect {
        id: Some(v.rec.id.to_string()),
        repo_tags: Some(v.tags.clone()),
        repo_digests: Some(v.digests.clone()),
        parent: Some(v.rec.parent.as_ref().map(|p| p.to_string()).unwrap_or_default()),
        comment: Some(str_of("comment").unwrap_or_default()),
        created: str_of("created").or_else(|| v.rec.created.clone()),
        docker_version: Some(str_of("docker_version").unwrap_or_default()),
        author: Some(str_of("author").unwrap_or_default()),
        config,
        architecture: str_of("architecture"),
        variant: str_of("variant"),
        os: str_of("os"),
        os_version: str_of("os.version"),
        size: Some(v.rec.size as i64),
        virtual_size: Some(v.rec.size as i64),
        graph_driver: Some(DriverData { name: "overlay2".into(), data: data }),
        root_fs: Some(ImageInspectRootFs {
            typ: "layers".into(),
            layers: Some(v.rec.diff_ids.iter().map(|d| d.to_string()).collect()),
        }),
        metadata: Some(ImageInspectMetadata { last_tag_time: None }),
    };
    let mut out = serde_json::to_value(&out).map_err(|err| ApiError::internal(format!("image inspect: {err}")))?;
    fill_config_keys(&mut out["Config"]);
    Ok(ok_json(&out))
}

/// Docker always sends these keys of an image's Config, as null or empty when the image does
/// not set them, and clients index them directly (docker-py reads `Config["OnBuild"]`); the
/// API models omit what is unset.
fn fill_config_keys(config: &mut Value) {
    let Some(obj) = config.as_object_mut() else { return };
    for (k, empty) in [
        ("User", json!("")),
        ("Env", Value::Null),
        ("Cmd", Value::Null),
        ("Entrypoint", Value::Null),
        ("WorkingDir", json!("")),
        ("Volumes", Value::Null),
        ("OnBuild", Value::Null),
        ("Labels", Value::Null),
    ] {
        obj.entry(k).or_insert(empty);
    }
}

fn lookup(s: &Store, name: &str) -> Result<View, ApiError> {
    let id = s.resolve(name).map_err(|err| match err {
        berth_image::ImageError::NotFound(_) => ApiError::NotFound(format!("No such image: {name}")),
        other => other.into(),
    })?;
    let rec = s.get_image(&id)?;
    let refs = s.references()?;
    view(s, rec, &refs)
}

/// GET /images/{name}/history: newest first, like Docker.
pub async fn history(e: &Arc<Engine>, name: &str) -> Result<Response<Body>, ApiError> {
    let name = name.to_string();
    let (v, sizes) = e
        .blocking(move |s| {
            let v = lookup(s, &name)?;
            let sizes = v.rec.layers.iter().map(|c| s.layer_info(c).map(|i| i.size)).collect::<Result<Vec<_>, _>>()?;
            Ok((v, sizes))
        })
        .await?;
    let mut items = Vec::new();
    let empty = Vec::new();
    let hist = v.config["history"].as_array().unwrap_or(&empty);
    let mut layer = 0usize;
    if hist.is_empty() {
        for (i, size) in sizes.iter().enumerate() {
            items.push(HistoryResponseItem {
                id: "<missing>".into(),
                created: created_unix(&v.config),
                created_by: String::new(),
                tags: Vec::new(),
                size: *size as i64,
                comment: format!("layer {}", i + 1),
            });
        }
    }
    for h in hist {
        let is_empty = h["empty_layer"].as_bool().unwrap_or(false);
        let size = if is_empty {
            0
        } else {
            let s = sizes.get(layer).copied().unwrap_or(0);
            layer += 1;
            s
        };
        items.push(HistoryResponseItem {
            id: "<missing>".into(),
            created: h["created"]
                .as_str()
                .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                .map(|t| t.timestamp())
                .unwrap_or(0),
            created_by: h["created_by"].as_str().unwrap_or("").into(),
            tags: Vec::new(),
            size: size as i64,
            comment: h["comment"].as_str().unwrap_or("").into(),
        });
    }
    items.reverse();
    if let Some(top) = items.first_mut() {
        top.tags = v.tags.clone();
    }
    // Images built here have one history entry per step and a parent chain: show the local
    // image of each step, as Docker does (pulled history stays <missing>).
    let chain = {
        let store = Arc::clone(&e.store);
        let top = v.rec.clone();
        tokio::task::spawn_blocking(move || {
            let mut ids = vec![top.id.to_string()];
            let mut cur = top.parent.clone();
            while let Some(p) = cur {
                match store.get_image(&p) {
                    Ok(r) => {
                        ids.push(r.id.to_string());
                        cur = r.parent.clone();
                    }
                    Err(_) => break,
                }
            }
            ids
        })
        .await?
    };
    for (item, id) in items.iter_mut().zip(chain) {
        item.id = id;
    }
    Ok(ok_json(&items))
}

/// POST /images/{name}/tag?repo=&tag=
pub async fn tag(e: &Arc<Engine>, name: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let repo = q.get("repo").filter(|r| !r.is_empty()).ok_or_else(|| ApiError::bad("repo is required"))?;
    let base = Reference::parse_name(repo)?;
    if base.digest.is_some() {
        return Err(ApiError::bad("refusing to create a tag with a digest reference"));
    }
    let target = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => base.with_tag(t)?,
        None if base.tag.is_some() => base,
        None => base.with_tag("latest")?,
    };
    let name = name.to_string();
    let t2 = target.clone();
    let id = e
        .blocking(move |s| {
            let v = lookup(s, &name)?;
            s.set_reference(&t2, &v.rec.id)?;
            Ok(v.rec.id)
        })
        .await?;
    e.events.image("tag", &id.to_string(), Some(&target.familiar_string()));
    Ok(crate::http_util::status_only(StatusCode::CREATED))
}

/// DELETE /images/{name}: untag when other tags remain, delete when the last one goes.
pub async fn remove(e: &Arc<Engine>, name: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let force = q.bool("force")?;
    let name = name.to_string();
    let in_use = e.containers.images_in_use();
    let (items, events) = e.blocking(move |s| remove_blocking(s, &name, force, &in_use)).await?;
    for (action, id, n) in events {
        e.events.image(action, &id, n.as_deref());
    }
    Ok(ok_json(&items))
}

type Events = Vec<(&'static str, String, Option<String>)>;

/// `in_use`: image IDs that containers were created from. Such an image is never deleted: without
/// force the request is refused, with force only its tags go (it stays, dangling), as in Docker.
fn remove_blocking(
    s: &Store,
    name: &str,
    force: bool,
    in_use: &[String],
) -> Result<(Vec<ImageDeleteResponseItem>, Events), ApiError> {
    let v = lookup(s, name)?;
    let id = v.rec.id.clone();
    let used = in_use.iter().any(|u| *u == id.to_string());
    let mut items = Vec::new();
    let mut events: Events = Vec::new();
    let untag = |items: &mut Vec<ImageDeleteResponseItem>, events: &mut Events, r: &Reference| -> Result<(), ApiError> {
        if s.remove_reference(r)? {
            items.push(ImageDeleteResponseItem { untagged: Some(r.familiar_string()), deleted: None });
            events.push(("untag", id.to_string(), Some(r.familiar_string())));
        }
        Ok(())
    };
    let by_id = looks_like_id(name) && Reference::parse(name).map(|r| s.resolve(&r.to_string()).is_err()).unwrap_or(true);
    let refuse_in_use = || {
        ApiError::Conflict(format!(
            "conflict: unable to delete {} (must be forced) - image is being used by a container",
            id.short()
        ))
    };
    if !by_id {
        let r = Reference::parse(name)?;
        let others_tagged = s.references_to(&id)?.iter().any(|o| o.digest.is_none() && *o != r);
        if used && !force && !others_tagged {
            return Err(refuse_in_use());
        }
        untag(&mut items, &mut events, &r)?;
        if items.is_empty() {
            // A concurrent rmi untagged it between our lookup and here: to this request the
            // name is gone, as it would be had it come a moment later.
            return Err(ApiError::NotFound(format!("No such image: {name}")));
        }
        let remaining = s.references_to(&id)?;
        if remaining.iter().any(|r| r.digest.is_none()) {
            return Ok((items, events));
        }
        for r in remaining {
            untag(&mut items, &mut events, &r)?;
        }
    } else {
        if used && !force {
            return Err(refuse_in_use());
        }
        let refs = s.references_to(&id)?;
        let tags = refs.iter().filter(|r| r.digest.is_none()).count();
        if tags > 1 && !force {
            return Err(ApiError::Conflict(format!(
                "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                id.short()
            )));
        }
        for r in refs {
            untag(&mut items, &mut events, &r)?;
        }
    }
    if used {
        // Forced: the tags are gone, the image stays for its containers.
        return Ok((items, events));
    }
    // Layers only this image uses go with it; report them the way Docker does.
    let others: HashSet<Digest> = s
        .list_images()?
        .into_iter()
        .filter(|r| r.id != id)
        .flat_map(|r| r.layers)
        .collect();
    match s.delete_image_if_unreferenced(&id) {
        Ok(true) => {}
        // A pull or tag gave it a new name after our untag: it stays, under that name.
        Ok(false) => return Ok((items, events)),
        // A concurrent rmi of another of its names deleted it first.
        Err(berth_image::ImageError::NotFound(_)) if items.is_empty() => return Err(ApiError::NotFound(format!("No such image: {name}"))),
        Err(berth_image::ImageError::NotFound(_)) => return Ok((items, events)),
        Err(err) => return Err(err.into()),
    }
    for d in &v.rec.repo_digests {
        items.push(ImageDeleteResponseItem { untagged: Some(d.clone()), deleted: None });
    }
    items.push(ImageDeleteResponseItem { untagged: None, deleted: Some(id.to_string()) });
    for c in v.rec.layers.iter().rev() {
        if !others.contains(c) {
            items.push(ImageDeleteResponseItem { untagged: None, deleted: Some(c.to_string()) });
        }
    }
    events.push(("delete", id.to_string(), None));
    // Untagged parents left by a build go too, while nothing else needs them (Docker's
    // default "prune parents" on rmi).
    let mut parent = v.rec.parent.clone();
    while let Some(p) = parent.take() {
        let Ok(prec) = s.get_image(&p) else { break };
        let has_children = s.list_images()?.iter().any(|r| r.parent.as_ref() == Some(&p));
        if has_children || !s.references_to(&p)?.is_empty() || in_use.iter().any(|u| *u == p.to_string()) {
            break;
        }
        if !s.delete_image_if_unreferenced(&p)? {
            break;
        }
        items.push(ImageDeleteResponseItem { untagged: None, deleted: Some(p.to_string()) });
        events.push(("delete", p.to_string(), None));
        parent = prec.parent;
    }
    if let Err(err) = s.gc() {
        tracing::warn!("garbage collection after rmi failed: {err}");
    }
    Ok((items, events))
}

/// POST /images/prune: dangling images by default, every unused image with dangling=false.
pub async fn prune(e: &Arc<Engine>, q: &Query) -> Result<Response<Body>, ApiError> {
    let f = q.filters()?;
    f.only(&["dangling", "label", "until"])?;
    let dangling_only = f.bool("dangling")?.unwrap_or(true);
    let until = match f.get("until").first() {
        Some(u) => Some(
            crate::events::parse_time_nanos(u)
                .ok_or_else(|| ApiError::bad(format!("invalid until filter {u:?}")))?
                / 1_000_000_000,
        ),
        None => None,
    };
    let label_specs: Vec<String> = f.get("label").to_vec();
    let in_use = e.containers.images_in_use();
    let (items, reclaimed, events) = e
        .blocking(move |s| {
            let mut items = Vec::new();
            let mut events: Events = Vec::new();
            let mut reclaimed = 0u64;
            let all = views(s)?;
            let parents: HashSet<String> = all.iter().filter_map(|v| v.rec.parent.as_ref().map(|p| p.to_string())).collect();
            for v in all {
                if (dangling_only && !v.tags.is_empty()) || in_use.contains(&v.rec.id.to_string()) {
                    continue;
                }
                // Intermediate images go with their last child, not on their own.
                if parents.contains(&v.rec.id.to_string()) || s.get_image(&v.rec.id).is_err() {
                    continue;
                }
                if until.map(|u| created_unix(&v.config) >= u).unwrap_or(false) {
                    continue;
                }
                let l = labels(&v.config);
                if !label_specs.iter().all(|spec| label_matches(&l, spec)) {
                    continue;
                }
                let (mut its, mut evs) = remove_blocking(s, &v.rec.id.to_string(), true, &in_use)?;
                reclaimed += v.rec.size;
                items.append(&mut its);
                events.append(&mut evs);
            }
            Ok((items, reclaimed, events))
        })
        .await?;
    for (action, id, n) in events {
        e.events.image(action, &id, n.as_deref());
    }
    Ok(ok_json(&ImagePruneResponse { images_deleted: Some(items), space_reclaimed: Some(reclaimed as i64) }))
}

/// A blocking `Write` that feeds an async response body through a bounded channel, so `docker
/// save` streams without holding the archive in memory.
struct ChannelWriter(mpsc::Sender<Result<Bytes, std::io::Error>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// GET /images/get and /images/{name}/get (docker save).
pub async fn save(e: &Arc<Engine>, names: &[&str]) -> Result<Response<Body>, ApiError> {
    if names.is_empty() {
        return Err(ApiError::bad("no images given to save"));
    }
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let images = e
        .blocking(move |s| {
            let mut grouped: Vec<(Digest, Vec<Reference>)> = Vec::new();
            for n in &names {
                let v = lookup(s, n)?;
                let r = if looks_like_id(n) { None } else { Reference::parse(n).ok().filter(|r| r.digest.is_none()) };
                match grouped.iter_mut().find(|(id, _)| *id == v.rec.id) {
                    Some((_, refs)) => refs.extend(r),
                    None => grouped.push((v.rec.id.clone(), r.into_iter().collect())),
                }
            }
            Ok(grouped)
        })
        .await?;
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let store = Arc::clone(&e.store);
    tokio::task::spawn_blocking(move || {
        let mut w = std::io::BufWriter::with_capacity(256 * 1024, ChannelWriter(tx.clone()));
        let r = berth_image::archive::save(&store, &images, &mut w).map_err(|err| err.to_string());
        let r = r.and_then(|_| w.flush().map_err(|err| err.to_string()));
        if let Err(msg) = r {
            tracing::warn!("docker save failed: {msg}");
            let _ = tx.blocking_send(Err(std::io::Error::other(msg)));
        }
    });
    let s = async_stream::stream! {
        while let Some(item) = rx.recv().await {
            yield item;
        }
    };
    let mut r = Response::new(stream_body(s));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    Ok(r)
}

/// A blocking `Read` over the async request body, for `docker load` and `docker cp`.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// How much of an upload that failed early is still read before answering: the docker CLI is
/// still writing the tar when the error comes, and a connection closed with unread data makes
/// its write fail with EPIPE, hiding our message. Go's server reads up to 256 KiB for the same
/// reason; we read a little more, as `docker cp` of a small tree is the common case, and for
/// a bounded time, as a stalled client must not keep the request alive.
const DRAIN_LIMIT: u64 = 4 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

impl ChannelReader {
    /// Run `f` over the upload on a blocking thread. If it fails, what the client is still
    /// sending is read and dropped (bounded, see [`DRAIN_LIMIT`]) before the error is answered,
    /// so the client sees the message rather than a broken pipe.
    pub(crate) async fn consume<T: Send + 'static>(
        mut self,
        f: impl FnOnce(&mut ChannelReader) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (r, back) = tokio::task::spawn_blocking(move || (f(&mut self), self)).await.map_err(ApiError::internal)?;
        if r.is_err() {
            back.discard_unread().await;
        }
        r
    }

    /// Read and drop what is left of a failed upload, bounded by [`DRAIN_LIMIT`] and
    /// [`DRAIN_TIME`]: a client still sending gets our answer instead of a reset connection,
    /// and a stalled one cannot hold the request forever.
    pub(crate) async fn discard_unread(self) {
        self.discard(DRAIN_LIMIT, DRAIN_TIME).await
    }

    async fn discard(mut self, limit: u64, within: std::time::Duration) {
        let mut left = limit.saturating_sub(self.cur.len() as u64);
        let _ = tokio::time::timeout(within, async {
            while left > 0 {
                match self.rx.recv().await {
                    Some(Ok(b)) => left = left.saturating_sub(b.len() as u64),
                    _ => break,
                }
            }
        })
        .await;
    }
}

/// Feed the request body to a blocking reader (use it from `spawn_blocking`).
pub(crate) fn body_reader(req: Request<Incoming>) -> ChannelReader {
    let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(16);
    let mut body = req.into_body();
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(data) = f.into_data() {
                        if tx.send(Ok(data)).await.is_err() {
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
    ChannelReader { rx, cur: Bytes::new() }
}

/// POST /images/load (docker load).
pub async fn load(e: &Arc<Engine>, req: Request<Incoming>, q: &Query) -> Result<Response<Body>, ApiError> {
    let quiet = q.bool("quiet")?;
    let store = Arc::clone(&e.store);
    let loaded = body_reader(req)
        .consume(move |reader| {
            let mut r = std::io::BufReader::with_capacity(256 * 1024, reader);
            Ok(berth_image::archive::load(&store, &mut r, &berth_image::archive::LoadLimits::default())?)
        })
        .await?;
    let mut lines = Vec::new();
    for img in &loaded {
        if img.references.is_empty() {
            lines.push(json!({ "stream": format!("Loaded image ID: {}\n", img.id) }));
            e.events.image("load", &img.id.to_string(), None);
        }
        for r in &img.references {
            lines.push(json!({ "stream": format!("Loaded image: {}\n", r.familiar_string()) }));
            e.events.image("load", &img.id.to_string(), Some(&r.familiar_string()));
        }
    }
    let mut buf = Vec::new();
    for l in &lines {
        buf.extend_from_slice(&line(l));
    }
    let _ = quiet;
    let mut resp = json_resp(StatusCode::OK, &Value::Null);
    *resp.body_mut() = crate::http_util::full(buf);
    Ok(resp)
}
