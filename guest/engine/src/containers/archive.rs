//! `docker cp` (GET/PUT/HEAD /containers/{id}/archive), `docker export`, `docker diff`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::containers::lifecycle;
use crate::http_util::{ok_json, Body, Query};

fn not_yet(what: &str) -> ApiError {
    ApiError::NotImplemented(format!("{what} is not supported by Berth yet"))
}

/// GET /containers/{id}/archive?path=
pub async fn get(_e: &Arc<Engine>, _key: &str, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet("docker cp"))
}
/// HEAD /containers/{id}/archive?path=
pub async fn head(_e: &Arc<Engine>, _key: &str, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet("docker cp"))
}
/// PUT /containers/{id}/archive?path=&noOverwriteDirNonDir=&copyUIDGID=
pub async fn put(_e: &Arc<Engine>, _key: &str, _req: Request<Incoming>, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet("docker cp"))
}
/// GET /containers/{id}/export
pub async fn export(_e: &Arc<Engine>, _key: &str) -> Result<Response<Body>, ApiError> {
    Err(not_yet("docker export"))
}

/// One `docker diff` line. Kind: 0 = modified, 1 = added, 2 = deleted (Docker's numbering).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    #[serde(rename = "Path")]
    pub path: String,
    #[serde(rename = "Kind")]
    pub kind: u8,
}

/// Does `rel` exist in `root` without following any symlink on the way? The layer dirs hold
/// image content, so an intermediate component may be a symlink to a host path: a plain
/// `root.join(rel).exists()` would then probe the host, hence the component walk.
fn exists_nofollow(root: &Path, rel: &Path) -> bool {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(_) if i + 1 == comps.len() => return true,
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    false
}

/// An overlay whiteout: a character device 0:0 in the upper dir marks a deleted lower file.
fn is_whiteout(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Walk the overlay upper dir: whiteouts are deletions, entries also present in a lower layer
/// are modifications, the rest are additions (Docker reports the parent dirs of a change as
/// modified too, which falls out of the walk since those dirs exist in upper). An opaque dir
/// is reported like any other dir; its new children show as added.
pub fn compute_changes(upper: &Path, lowers: &[PathBuf]) -> std::io::Result<Vec<Change>> {
    fn walk(upper: &Path, rel: &Path, lowers: &[PathBuf], out: &mut Vec<Change>) -> std::io::Result<()> {
        for ent in std::fs::read_dir(upper.join(rel))? {
            let ent = ent?;
            let r = rel.join(ent.file_name());
            let m = std::fs::symlink_metadata(ent.path())?;
            let path = format!("/{}", r.display());
            if is_whiteout(&m) {
                out.push(Change { path, kind: 2 });
                continue;
            }
            let in_lower = lowers.iter().any(|l| exists_nofollow(l, &r));
            out.push(Change { path, kind: if in_lower { 0 } else { 1 } });
            if m.is_dir() {
                walk(upper, &r, lowers, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(upper, Path::new(""), lowers, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// GET /containers/{id}/changes
pub async fn changes(e: &Arc<Engine>, key: &str) -> Result<Response<Body>, ApiError> {
    let c = e.containers.get(key)?;
    let p = lifecycle::paths(e, &c.id);
    let image = e.store.get_image(&berth_image::Digest::parse(&c.image_id)?)?;
    let lowers: Vec<PathBuf> = image.layers.iter().map(|l| e.store.layer_diff_dir(l)).collect();
    let list = tokio::task::spawn_blocking(move || compute_changes(&p.upper, &lowers))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(ok_json(&list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_from_upper_dir() {
        let t = tempfile::tempdir().unwrap();
        let lower = t.path().join("lower");
        let upper = t.path().join("upper");
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::write(lower.join("etc/hosts"), "x").unwrap();
        std::fs::write(lower.join("gone"), "x").unwrap();
        // A lower symlink to a host dir must not make /link/f look "modified".
        std::os::unix::fs::symlink(t.path().join("upper"), lower.join("link")).unwrap();
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/hosts"), "y").unwrap();
        std::fs::write(upper.join("etc/new"), "y").unwrap();
        nix::sys::stat::mknod(&upper.join("gone"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0).unwrap();
        let got = compute_changes(&upper, &[lower]).unwrap();
        let want = vec![
            Change { path: "/etc".into(), kind: 0 },
            Change { path: "/etc/hosts".into(), kind: 0 },
            Change { path: "/etc/new".into(), kind: 1 },
            Change { path: "/gone".into(), kind: 2 },
        ];
        assert_eq!(got, want);
        assert!(!exists_nofollow(&t.path().join("lower"), Path::new("link/etc")));
    }
}
