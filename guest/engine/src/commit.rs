//! Turning filesystem changes into images: a layer from an overlay upper directory, an image
//! record on top of a parent. Shared by the builder (every step) and `docker commit`.
//!
//! Order gives crash safety: the layer blob is written and fsynced, unpacked into the layer
//! store (one rename), then the config blob, then the image record; only the record makes the
//! image visible, and tags come last. A kill -9 anywhere leaves unreferenced blobs and layers
//! (collected by gc) but never a partial image.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_image::{Compression, Digest, ImageRecord, LayerInfo, Lease, Store};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::engine::Engine;
use crate::error::ApiError;
use crate::http_util::{json as json_resp, Body, Query};

pub const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;

pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Diff `upper` (over `lowers`, top first) into a new layer on top of `parent_chain`.
/// None when nothing changed, including a container never started (no upper dir yet). The
/// lease keeps gc off the new layer until the image exists. Blocking.
pub fn layer_from_upper(
    store: &Store,
    upper: &Path,
    lowers: &[PathBuf],
    parent_chain: Option<&Digest>,
) -> Result<Option<(LayerInfo, Lease)>, ApiError> {
    match std::fs::symlink_metadata(upper) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let w = store.blob_writer()?;
    let (w, stats) = berth_image::diff::write_diff(upper, lowers, true, w)
        .map_err(|e| ApiError::internal(format!("making the layer from {}: {e}", upper.display())))?;
    if stats.entries == 0 {
        return Ok(None);
    }
    let (digest, _) = w.commit()?;
    let chain = Store::chain_id(parent_chain, &digest);
    let lease = store.lease([digest.clone(), chain]);
    // The blob is the uncompressed tar, so its digest is the diff_id; unpacking re-checks it.
    let info = store.unpack_layer(&digest, Compression::None, &digest, parent_chain)?;
    Ok(Some((info, lease)))
}

/// What a new image is made of.
pub struct NewImage<'a> {
    pub parent: Option<&'a ImageRecord>,
    /// The parent's config JSON (or an empty object for scratch).
    pub parent_config: &'a Value,
    /// The new `config` (run config).
    pub config: Value,
    /// Docker's `container_config` (the build cache compares it).
    pub container_config: Option<Value>,
    pub created_by: String,
    pub author: Option<String>,
    pub comment: Option<String>,
    pub layer: Option<&'a LayerInfo>,
}

/// Write the config blob and the image record. Blocking.
pub fn commit_image(store: &Store, n: NewImage<'_>) -> Result<Digest, ApiError> {
    let now = berth_image::now_rfc3339();
    let mut doc = match n.parent_config {
        Value::Object(_) => n.parent_config.clone(),
        _ => json!({}),
    };
    let obj = doc.as_object_mut().expect("object");
    for k in ["id", "parent", "container", "docker_version", "comment"] {
        obj.remove(k);
    }
    obj.entry("architecture").or_insert_with(|| json!(arch()));
    obj.entry("os").or_insert_with(|| json!("linux"));
    obj.insert("created".into(), json!(now));
    obj.insert("config".into(), n.config);
    match n.container_config {
        Some(c) => obj.insert("container_config".into(), c),
        None => obj.remove("container_config"),
    };
    match &n.author {
        Some(a) => obj.insert("author".into(), json!(a)),
        None => obj.remove("author"),
    };
    if let Some(c) = &n.comment {
        obj.insert("comment".into(), json!(c));
    }
    let mut history: Vec<Value> = obj.get("history").and_then(|h| h.as_array().cloned()).unwrap_or_default();
    let mut h = json!({ "created": now, "created_by": n.created_by });
    if let Some(a) = &n.author {
        h["author"] = json!(a);
    }
    if let Some(c) = &n.comment {
        h["comment"] = json!(c);
    }
    if n.layer.is_none() {
        h["empty_layer"] = json!(true);
    }
    history.push(h);
    obj.insert("history".into(), Value::Array(history));
    let mut layers = n.parent.map(|p| p.layers.clone()).unwrap_or_default();
    let mut diff_ids = n.parent.map(|p| p.diff_ids.clone()).unwrap_or_default();
    let mut size = n.parent.map(|p| p.size).unwrap_or(0);
    if let Some(l) = n.layer {
        layers.push(l.chain_id.clone());
        diff_ids.push(l.diff_id.clone());
        size += l.size;
    }
    obj.insert(
        "rootfs".into(),
        json!({ "type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>() }),
    );
    let bytes = serde_json::to_vec(&doc).map_err(ApiError::internal)?;
    let id = store.write_blob(&bytes)?;
    let _lease = store.lease([id.clone()]);
    let rec = ImageRecord {
        id: id.clone(),
        layers,
        diff_ids,
        repo_digests: Vec::new(),
        created: Some(now.clone()),
        size,
        loaded_at: now,
        parent: n.parent.map(|p| p.id.clone()),
    };
    store.put_image(&rec)?;
    Ok(id)
}

/// Read an image's record and config JSON. Blocking.
pub fn image_config(store: &Store, id: &Digest) -> Result<(ImageRecord, Value), ApiError> {
    let rec = store.get_image(id)?;
    let cfg: Value = serde_json::from_slice(&store.read_blob(id, MAX_CONFIG_BYTES)?)
        .map_err(|e| ApiError::internal(format!("image config {id}: {e}")))?;
    Ok((rec, cfg))
}

/// Parse `repo[:tag]` query values into a reference to tag (None when repo is empty).
pub fn tag_reference(repo: Option<&str>, tag: Option<&str>) -> Result<Option<berth_image::Reference>, ApiError> {
    let Some(repo) = repo.filter(|r| !r.is_empty()) else { return Ok(None) };
    let base = berth_image::Reference::parse_name(repo)?;
    if base.digest.is_some() {
        return Err(ApiError::bad("refusing to create a tag with a digest reference"));
    }
    Ok(Some(match tag.filter(|t| !t.is_empty()) {
        Some(t) => base.with_tag(t)?,
        None if base.tag.is_some() => base,
        None => base.with_tag("latest")?,
    }))
}

/// Apply `docker commit --change` / `docker import --change` lines to a run config.
pub fn apply_changes(config: &mut berth_build::config::RunConfig, changes: &[&str]) -> Result<(), ApiError> {
    use berth_build::instructions::Instruction as I;
    let mut st = berth_build::config::State::new(config.clone(), '\\', Default::default(), Default::default(), false);
    for ch in changes {
        for line in ch.lines().filter(|l| !l.trim().is_empty()) {
            let step = berth_build::instructions::parse_line(line, '\\').map_err(|e| ApiError::bad(e.to_string()))?;
            match step.inst {
                I::Cmd { .. } | I::Entrypoint { .. } | I::Env(_) | I::Expose(_) | I::Label(_) | I::OnBuild(_)
                | I::StopSignal(_) | I::User(_) | I::Volume(_) | I::Workdir(_) | I::Healthcheck(_) | I::Shell(_) => {
                    st.dispatch(&step).map_err(|e| ApiError::bad(e.to_string()))?;
                }
                other => {
                    return Err(ApiError::bad(format!("{} is not a valid change command", other.keyword())));
                }
            }
        }
    }
    *config = st.config;
    Ok(())
}

/// POST /commit?container=&repo=&tag=&comment=&author=&pause=&changes=
pub async fn commit(e: &Arc<Engine>, req: Request<Incoming>, q: &Query) -> Result<Response<Body>, ApiError> {
    use crate::containers::store::Status;
    let key = q.get("container").filter(|c| !c.is_empty()).ok_or_else(|| ApiError::bad("container is required"))?;
    let c = e.containers.get(key)?;
    let target = tag_reference(q.get("repo"), q.get("tag"))?;
    let pause = match q.get("pause") {
        None | Some("") => true,
        Some(_) => q.bool("pause")?,
    };
    // A config object (or nothing, or `null`): any other JSON is refused, not ignored.
    let body: Option<serde_json::Map<String, Value>> = crate::images::read_json(req, 4 * 1024 * 1024).await?;
    let changes = q.all("changes");
    // The container's config (with the image's defaults merged at create) is the new config.
    let mut cfg: berth_build::config::RunConfig =
        serde_json::from_value(serde_json::to_value(&c.config).map_err(ApiError::internal)?).unwrap_or_default();
    if let Some(m) = &body {
        let mut base = serde_json::to_value(&cfg).map_err(ApiError::internal)?;
        for (k, v) in m {
            if !v.is_null() {
                base[k] = v.clone();
            }
        }
        cfg = serde_json::from_value(base).map_err(|err| ApiError::bad(format!("invalid config: {err}")))?;
    }
    for k in ["Hostname", "Domainname", "Image", "AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin", "StdinOnce"] {
        cfg.extra.remove(k);
    }
    apply_changes(&mut cfg, &changes)?;
    let running = c.state.status == Status::Running;
    // Frozen for the copy, but never recorded as paused (a crash must not leave it frozen).
    let paused_here = running && pause && crate::containers::stats::freeze_for_commit(e, &c.id, true).await.is_ok();
    let author = q.get("author").filter(|a| !a.is_empty()).map(str::to_string);
    let comment = q.get("comment").filter(|a| !a.is_empty()).map(str::to_string);
    let created_by = std::iter::once(c.path.clone()).chain(c.args.iter().cloned()).collect::<Vec<_>>().join(" ");
    let upper = crate::containers::lifecycle::paths(e, &c.id).upper;
    let image_id = Digest::parse(&c.image_id)?;
    let store = Arc::clone(&e.store);
    let config = serde_json::to_value(&cfg).map_err(ApiError::internal)?;
    let mut container_config = serde_json::to_value(&c.config).map_err(ApiError::internal)?;
    container_config["Image"] = json!(c.image_id);
    let t2 = target.clone();
    let r = tokio::task::spawn_blocking(move || -> Result<Digest, ApiError> {
        let (parent, parent_cfg) = image_config(&store, &image_id)?;
        let lowers: Vec<PathBuf> = parent.layers.iter().rev().map(|l| store.layer_diff_dir(l)).collect();
        let layer = layer_from_upper(&store, &upper, &lowers, parent.layers.last())?;
        let id = commit_image(
            &store,
            NewImage {
                parent: Some(&parent),
                parent_config: &parent_cfg,
                config,
                container_config: Some(container_config),
                created_by,
                author,
                comment,
                layer: layer.as_ref().map(|(l, _)| l),
            },
        )?;
        if let Some(t) = &t2 {
            store.set_reference(t, &id)?;
        }
        Ok(id)
    })
    .await;
    if paused_here {
        if let Err(err) = crate::containers::stats::freeze_for_commit(e, &c.id, false).await {
            tracing::warn!(id = %c.short_id(), "thawing after commit: {err}");
        }
    }
    let id = r??;
    e.events.container("commit", &c);
    if let Some(t) = &target {
        e.events.image("tag", &id.to_string(), Some(&t.familiar_string()));
    }
    Ok(json_resp(StatusCode::CREATED, &json!({ "Id": id.to_string() })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_dockerfile_lines() {
        let mut c = berth_build::config::RunConfig::default();
        apply_changes(&mut c, &["CMD [\"/bin/app\"]", "ENV A=1\nEXPOSE 80"]).unwrap();
        assert_eq!(c.cmd, Some(vec!["/bin/app".to_string()]));
        assert_eq!(c.env_get("A"), Some("1"));
        assert!(c.exposed_ports.contains_key("80/tcp"));
        assert!(apply_changes(&mut c, &["RUN rm -rf /"]).unwrap_err().to_string().contains("not a valid change command"));
        assert!(apply_changes(&mut c, &["FORM x"]).is_err());
    }
}
