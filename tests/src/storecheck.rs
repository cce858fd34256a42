//! An independent consistency check of berthd's image store, read straight from its files
//! (`<data-root>/image`), for the crash and race tests: after a kill -9 or a pull/rmi race no
//! image may point at missing or corrupt content, and no tag at a missing image.
//!
//! Layout (see `guest/image/src/store.rs`): `blobs/sha256/<hex>`, `layers/<chain>/{diff,meta.json}`,
//! `images/<id>.json`, `refs.json`, `tmp/`, `ingest/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What the store holds, and what in it nothing refers to (crash debris that gc collects).
#[derive(Debug, Default)]
pub struct StoreReport {
    /// Image IDs (`sha256:...`).
    pub images: BTreeSet<String>,
    /// Reference -> image ID.
    pub refs: BTreeMap<String, String>,
    pub layers: BTreeSet<String>,
    pub blobs: BTreeSet<String>,
    /// Layers no image uses.
    pub orphan_layers: BTreeSet<String>,
    /// Blobs no image, repo digest or layer uses.
    pub orphan_blobs: BTreeSet<String>,
    /// Entries in tmp/ and ingest/ (unfinished work).
    pub scratch: Vec<String>,
}

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn sha256_file(p: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(p)?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

fn hex_of(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}

/// Read and check the store of a daemon whose data root is `data_root`. Err lists every
/// inconsistency: an image record whose config blob or layer is missing, a config blob whose
/// bytes do not hash to its name, a layer without metadata, a reference to a missing image.
pub fn check(data_root: &Path) -> Result<StoreReport, String> {
    let root: PathBuf = data_root.join("image");
    let mut r = StoreReport::default();
    let mut problems = Vec::new();
    for l in names(&root.join("layers")) {
        let meta = root.join("layers").join(&l).join("meta.json");
        let diff = root.join("layers").join(&l).join("diff");
        if !meta.is_file() || !diff.is_dir() {
            problems.push(format!("layer {l} lacks meta.json or diff/"));
        }
        r.layers.insert(l);
    }
    for b in names(&root.join("blobs/sha256")) {
        r.blobs.insert(b);
    }
    let mut used_layers = BTreeSet::new();
    let mut used_blobs = BTreeSet::new();
    for f in names(&root.join("images")) {
        let p = root.join("images").join(&f);
        let rec: serde_json::Value = match std::fs::read(&p).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("image record {f} unreadable: {e}"));
                continue;
            }
        };
        let id = rec["id"].as_str().unwrap_or("").to_string();
        if format!("{}.json", hex_of(&id)) != f {
            problems.push(format!("image record {f} names id {id:?}"));
        }
        let cfg = root.join("blobs/sha256").join(hex_of(&id));
        match sha256_file(&cfg) {
            Ok(h) if h == hex_of(&id) => {}
            Ok(h) => problems.push(format!("image {id}: config blob hashes to {h}")),
            Err(e) => problems.push(format!("image {id}: config blob: {e}")),
        }
        used_blobs.insert(hex_of(&id).to_string());
        for rd in rec["repo_digests"].as_array().into_iter().flatten() {
            if let Some((_, d)) = rd.as_str().and_then(|s| s.rsplit_once('@')) {
                used_blobs.insert(hex_of(d).to_string());
            }
        }
        for l in rec["layers"].as_array().into_iter().flatten() {
            let l = hex_of(l.as_str().unwrap_or("")).to_string();
            if !r.layers.contains(&l) {
                problems.push(format!("image {id}: layer {l} missing"));
            }
            used_layers.insert(l);
        }
        r.images.insert(id);
    }
    // Layers in use keep their parents' chain too (a layer's parent is in the same image).
    for l in &r.layers {
        let meta = root.join("layers").join(l).join("meta.json");
        if let Ok(v) = std::fs::read(&meta).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())) {
            let blob = hex_of(v["blob"].as_str().unwrap_or("")).to_string();
            if used_layers.contains(l) {
                if !r.blobs.contains(&blob) {
                    problems.push(format!("layer {l}: blob {blob} missing"));
                }
                used_blobs.insert(blob);
            }
        }
    }
    match std::fs::read(root.join("refs.json")) {
        Ok(b) => match serde_json::from_slice::<BTreeMap<String, String>>(&b) {
            Ok(refs) => {
                for (k, v) in &refs {
                    if !r.images.contains(v) {
                        problems.push(format!("reference {k} -> missing image {v}"));
                    }
                }
                r.refs = refs;
            }
            Err(e) => problems.push(format!("refs.json: {e}")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => problems.push(format!("refs.json: {e}")),
    }
    r.orphan_layers = r.layers.difference(&used_layers).cloned().collect();
    r.orphan_blobs = r.blobs.difference(&used_blobs).cloned().collect();
    for d in ["tmp", "ingest"] {
        r.scratch.extend(names(&root.join(d)).into_iter().map(|n| format!("{d}/{n}")));
    }
    if problems.is_empty() {
        Ok(r)
    } else {
        Err(problems.join("\n"))
    }
}
