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
/// The path is resolved (404 when missing, same rules as HEAD); streaming the tar is not done yet.
pub async fn get(e: &Arc<Engine>, key: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    stat_response(e, key, q)?;
    Err(not_yet("copying files out of a container"))
}

/// Open `path` (a client-supplied, container-absolute path) inside `root` with openat2:
/// RESOLVE_IN_ROOT clamps `..` and absolute symlinks to `root`, RESOLVE_NO_MAGICLINKS refuses
/// /proc/self/fd-style jumps, and the final component is not followed (O_NOFOLLOW|O_PATH), so
/// a container racing to swap a component for a symlink (CVE-2018-15664) can at worst point
/// us at another file of its own. Everything after this is relative to the returned fd.
/// Hand-written because no crate in the workspace exposes openat2; no fallback walk is done
/// for kernels before 5.6 (ENOSYS is reported as an error), the guest kernel is 6.x.
pub fn open_in_root(root: &Path, path: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let rootf = std::fs::File::open(root)?;
    // Docker cleans the path lexically first (filepath.Join), so `a/link/..` means `a`.
    let mut parts: Vec<&str> = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let rel = if parts.is_empty() { ".".to_string() } else { parts.join("/") };
    let c = CString::new(rel.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain integers; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `how` and `c` outlive the call; the size passed is that of `how`.
    let fd = unsafe {
        libc::syscall(libc::SYS_openat2, rootf.as_raw_fd(), c.as_ptr(), &how as *const libc::open_how, std::mem::size_of::<libc::open_how>())
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just handed us this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Docker's X-Docker-Container-Path-Stat body (Go's os.FileMode bits in `mode`).
#[derive(Debug, serde::Serialize)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    pub mode: u32,
    pub mtime: String,
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

/// Unix st_mode -> Go os.FileMode.
fn go_mode(st_mode: u32) -> u32 {
    let mut m = st_mode & 0o777;
    match st_mode & libc::S_IFMT {
        libc::S_IFDIR => m |= 1 << 31,
        libc::S_IFLNK => m |= 1 << 27,
        libc::S_IFIFO => m |= 1 << 25,
        libc::S_IFSOCK => m |= 1 << 24,
        libc::S_IFBLK => m |= 1 << 26,
        libc::S_IFCHR => m |= (1 << 26) | (1 << 21),
        _ => {}
    }
    if st_mode & libc::S_ISUID != 0 { m |= 1 << 23 }
    if st_mode & libc::S_ISGID != 0 { m |= 1 << 22 }
    if st_mode & libc::S_ISVTX != 0 { m |= 1 << 20 }
    m
}

/// Stat `path` inside `root` without following a final symlink (Docker describes the link).
pub fn stat_in_root(root: &Path, path: &str) -> std::io::Result<PathStat> {
    use std::os::fd::AsRawFd;
    let fd = open_in_root(root, path)?;
    let st = nix::sys::stat::fstatat(Some(fd.as_raw_fd()), "", nix::fcntl::AtFlags::AT_EMPTY_PATH | nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
    let link_target = if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        let mut buf = vec![0u8; 4096];
        // SAFETY: buf is valid for buf.len() bytes; empty path with an O_PATH fd reads the link itself.
        let n = unsafe { libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 { return Err(std::io::Error::last_os_error()); }
        String::from_utf8_lossy(&buf[..n as usize]).into_owned()
    } else {
        String::new()
    };
    let trimmed = path.trim_end_matches('/');
    let name = trimmed.rsplit('/').next().filter(|s| !s.is_empty()).unwrap_or("/").to_string();
    let mtime = chrono::DateTime::from_timestamp(st.st_mtime, st.st_mtime_nsec as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    Ok(PathStat { name, size: st.st_size, mode: go_mode(st.st_mode), mtime, link_target })
}

/// The root to resolve client paths in: the mounted overlay of a running container.
fn running_root(e: &Engine, key: &str) -> Result<(String, PathBuf), ApiError> {
    let c = e.containers.get(key)?;
    if !matches!(c.state.status, crate::containers::store::Status::Running | crate::containers::store::Status::Paused) {
        return Err(not_yet("docker cp on a stopped container"));
    }
    let p = lifecycle::paths(e, &c.id);
    Ok((c.id, p.bundle.join("rootfs")))
}

fn stat_response(e: &Engine, key: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    use base64::Engine as _;
    let path = q.get("path").filter(|p| !p.is_empty()).ok_or_else(|| ApiError::BadParameter("path is required".into()))?.to_string();
    let (id, root) = running_root(e, key)?;
    let st = stat_in_root(&root, &path).map_err(|err| match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => ApiError::NotFound(format!("Could not find the file {path} in container {id}")),
        _ => ApiError::internal(err),
    })?;
    let hdr = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&st).map_err(ApiError::internal)?);
    Response::builder()
        .status(200)
        .header("X-Docker-Container-Path-Stat", hdr)
        .body(crate::http_util::empty())
        .map_err(ApiError::internal)
}

/// HEAD /containers/{id}/archive?path=
pub async fn head(e: &Arc<Engine>, key: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    stat_response(e, key, q)
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
    let mut list = tokio::task::spawn_blocking(move || compute_changes(&p.upper, &lowers))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    // berthd writes these into the upper dir where Docker bind-mounts them; Docker's diff
    // never shows them, so neither do we.
    list.retain(|c| !matches!(c.path.as_str(), "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf"));
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
        // openat2 keeps an absolute symlink inside the root.
        std::fs::write(t.path().join("marker"), "host").unwrap();
        std::os::unix::fs::symlink(t.path(), upper.join("esc")).unwrap();
        let r = stat_in_root(&upper, "/esc/marker");
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOENT));
        let st = stat_in_root(&upper, "/esc").unwrap();
        assert_eq!(st.mode & (1 << 27), 1 << 27);
        assert_eq!(st.link_target, t.path().display().to_string());
        let st = stat_in_root(&upper, "/etc/").unwrap();
        assert_eq!((st.name.as_str(), st.mode & (1 << 31)), ("etc", 1 << 31));
        assert!(!exists_nofollow(&t.path().join("lower"), Path::new("link/etc")));
    }
}
