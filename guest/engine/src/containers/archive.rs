//! `docker cp` (GET/PUT/HEAD /containers/{id}/archive), `docker export`, `docker diff`.

use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::containers::lifecycle;
use crate::http_util::{ok_json, Body, Query};



/// A blocking `Write` whose bytes become a streamed response body: `docker cp` out and
/// `docker export` are archived straight to the client, never whole in berthd's memory.
/// Writes block while the client is slow (the channel is bounded) and fail once it has gone.
struct BodyWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

const BODY_CHUNK: usize = 256 * 1024;

impl BodyWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(BODY_CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl std::io::Write for BodyWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= BODY_CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Run `produce` on a blocking thread, writing into a streamed body. An error after the first
/// bytes cannot change the status any more: the body then ends with an error, so the client
/// sees a cut stream, never a short archive that looks complete.
fn streamed_tar(produce: impl FnOnce(&mut BodyWriter) -> std::io::Result<()> + Send + 'static) -> Body {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    let err_tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = BodyWriter { tx, buf: Vec::with_capacity(BODY_CHUNK) };
        let r = produce(&mut w).and_then(|()| std::io::Write::flush(&mut w));
        if let Err(err) = r {
            if err.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::warn!("archiving for a client: {err}");
                let _ = err_tx.blocking_send(Err(err));
            }
        }
    });
    crate::http_util::stream_body(async_stream::stream! {
        while let Some(item) = rx.recv().await {
            yield item;
        }
    })
}

fn fstat_at(dir: i32, name: &std::ffi::CStr) -> std::io::Result<libc::stat> {
    // SAFETY: st is written by the kernel on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(st) }
}

fn open_at(dir: i32, name: &std::ffi::CStr, flags: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain openat; O_NOFOLLOW so a symlink swapped in is never followed.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 { Err(std::io::Error::last_os_error()) } else { Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }) }
}

fn readlink_at(dir: i32, name: &std::ffi::CStr) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 { return Err(std::io::Error::last_os_error()); }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Kernel filesystems (proc, sysfs, cgroup, devpts, mqueue, ...) that a running container's
/// view has mounted: `docker cp` neither reads nor writes them (a read of /proc/kmsg would
/// block, and berthd is root in the host's namespaces, so it must not write kernel knobs on
/// the container's behalf). Their directories are archived empty.
fn on_kernel_fs(fd: i32) -> bool {
    // SAFETY: sf is written by the kernel on success.
    let mut sf: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd, &mut sf) } < 0 {
        return true;
    }
    const KERNEL_FS: &[i64] = &[
        libc::PROC_SUPER_MAGIC as i64,
        libc::SYSFS_MAGIC as i64,
        libc::CGROUP_SUPER_MAGIC as i64,
        libc::CGROUP2_SUPER_MAGIC as i64,
        libc::DEVPTS_SUPER_MAGIC as i64,
        libc::SECURITYFS_MAGIC as i64,
        libc::DEBUGFS_MAGIC as i64,
        libc::TRACEFS_MAGIC as i64,
        libc::BPF_FS_MAGIC as i64,
        0x1980_0202, // mqueue
    ];
    KERNEL_FS.contains(&(sf.f_type as i64))
}

/// Archive the entry `name` of directory fd `dir` as `arc`: all I/O relative to fds opened
/// with O_NOFOLLOW, so nothing the container renames meanwhile can lead outside its root.
/// Names and ids are written as they are (GNU long-name records where needed, numeric ids).
fn tar_at<W: std::io::Write>(out: &mut tar::Builder<W>, dir: i32, name: &std::ffi::CStr, arc: &str) -> std::io::Result<()> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let st = fstat_at(dir, name)?;
    let header = |kind: tar::EntryType, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid as u64);
        h.set_gid(st.st_gid as u64);
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(size);
        h
    };
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            // The root of an export has no entry of its own; its children are top-level names.
            if !arc.is_empty() {
                out.append_data(&mut header(tar::EntryType::Directory, 0), format!("{arc}/"), std::io::empty())?;
            }
            let fd = open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY)?;
            if on_kernel_fs(fd.as_raw_fd()) {
                return Ok(());
            }
            let raw = fd.as_raw_fd();
            let mut d = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)).map_err(std::io::Error::from)?;
            let mut names: Vec<std::ffi::CString> = Vec::new();
            for ent in d.iter() {
                let ent = ent.map_err(std::io::Error::from)?;
                let n = ent.file_name();
                if n.to_bytes() != b"." && n.to_bytes() != b".." {
                    names.push(n.to_owned());
                }
            }
            names.sort();
            for n in names {
                let nm = String::from_utf8_lossy(n.to_bytes());
                let child = if arc.is_empty() { nm.into_owned() } else { format!("{arc}/{nm}") };
                match tar_at(out, raw, &n, &child) {
                    // Removed while we walked: skip it like a snapshot taken a moment later.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    r => r?,
                }
            }
            drop(d);
        }
        libc::S_IFREG => {
            let fd = open_at(dir, name, libc::O_RDONLY | libc::O_NONBLOCK)?;
            if on_kernel_fs(fd.as_raw_fd()) {
                return Ok(());
            }
            // Exactly the size in the header, even if the file grows or shrinks meanwhile
            // (zero-padded): the archive stays well-formed.
            let size = st.st_size.max(0) as u64;
            let body = std::fs::File::from(fd).take(size).chain(std::io::repeat(0)).take(size);
            out.append_data(&mut header(tar::EntryType::Regular, size), arc, body)?;
        }
        libc::S_IFLNK => {
            let link = readlink_at(dir, name)?;
            let target = std::path::PathBuf::from(std::ffi::OsString::from_vec(link));
            out.append_link(&mut header(tar::EntryType::Symlink, 0), arc, target)?;
        }
        // Devices, fifos and sockets are left out (docker cp of those is rare; not supported yet).
        _ => {}
    }
    Ok(())
}

/// Tar of `path` inside `root`, named by its basename (Docker's layout for `docker cp c:P -`).
pub fn tar_in_root<W: std::io::Write>(root: &Path, path: &str, w: W) -> std::io::Result<W> {
    use std::os::fd::AsRawFd;
    // Resolve the parent with openat2, then name the last component relative to it (an O_PATH
    // fd of the target itself could not be reopened for reading without /proc magic links).
    let clean = path.split('/').fold(Vec::new(), |mut v: Vec<&str>, c| {
        match c {
            "" | "." => {}
            ".." => {
                v.pop();
            }
            c => v.push(c),
        }
        v
    });
    let mut out = tar::Builder::new(w);
    out.mode(tar::HeaderMode::Complete);
    match clean.split_last() {
        None => {
            let fd = open_in_root(root, "/")?;
            tar_at(&mut out, fd.as_raw_fd(), c".", "")?;
        }
        Some((base, parent)) => {
            let fd = open_in_root_with(root, &parent.join("/"), libc::O_DIRECTORY)?;
            let c = std::ffi::CString::new(*base).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            tar_at(&mut out, fd.as_raw_fd(), &c, base)?;
        }
    }
    out.into_inner()
}

/// GET /containers/{id}/archive?path= (streamed; the stat header comes first).
pub async fn get(e: &Arc<Engine>, key: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let (c, guard) = container_root(e, key, RootFor::Copy).await?;
    let head = stat_response(&c.id, &guard.cp_root(), q)?;
    let path = q.get("path").unwrap_or("/").to_string();
    let body = streamed_tar(move |w| {
        let r = tar_in_root(&guard.cp_root(), &path, w).map(drop);
        drop(guard);
        r
    });
    let (mut parts, _) = head.into_parts();
    parts.headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/x-tar"));
    Ok(Response::from_parts(parts, body))
}

/// Open `path` (a client-supplied, container-absolute path) inside `root` with openat2:
/// RESOLVE_IN_ROOT clamps `..` and absolute symlinks to `root`, RESOLVE_NO_MAGICLINKS refuses
/// /proc/self/fd-style jumps, and the final component is not followed (O_NOFOLLOW|O_PATH), so
/// a container racing to swap a component for a symlink (CVE-2018-15664) can at worst point
/// us at another file of its own. Everything after this is relative to the returned fd.
/// Hand-written because no crate in the workspace exposes openat2; no fallback walk is done
/// for kernels before 5.6 (ENOSYS is reported as an error), the guest kernel is 6.x.
pub fn open_in_root(root: &Path, path: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    open_in_root_with(root, path, libc::O_NOFOLLOW)
}

/// Like [`open_in_root`] but a final symlink is followed (still clamped to the root).
pub(crate) fn open_in_root_following(root: &Path, path: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    open_in_root_with(root, path, 0)
}

/// Like [`open_in_root`]; `extra` = 0 follows a final symlink (still clamped to the root), for
/// parent directories, which Docker resolves through links.
fn open_in_root_with(root: &Path, path: &str, extra: i32) -> std::io::Result<std::os::fd::OwnedFd> {
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
    how.flags = (libc::O_PATH | extra | libc::O_CLOEXEC) as u64;
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

/// A container's root filesystem, available for `docker cp` and `export`: the live overlay of a
/// running container, or, for a created or exited one, a temporary mount of the same overlay
/// that is unmounted (and its bundle directory removed) when the guard is dropped. The
/// container's lifecycle lock is held meanwhile, so it cannot start (and mount the same upper
/// dir a second time) or be removed while the copy runs.
pub struct RootGuard {
    /// The container's own filesystem (its overlay): what `docker export` archives.
    pub root: PathBuf,
    /// A running container's view of its root with its volumes, binds and tmpfs mounts, for
    /// `docker cp` (see [`live_view`]); None for a stopped container.
    view: Option<std::os::fd::OwnedFd>,
    /// A stopped container's overlay with its volumes and binds mounted, for `docker cp`.
    stopped_view: Option<super::cpview::CpView>,
    temp: Option<berth_runtime::bundle::Bundle>,
    _lock: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl RootGuard {
    fn overlay(root: PathBuf, temp: Option<berth_runtime::bundle::Bundle>, lock: Option<tokio::sync::OwnedMutexGuard<()>>) -> RootGuard {
        RootGuard { root, view: None, stopped_view: None, temp, _lock: lock }
    }

    /// Where `docker cp` resolves paths: the live view when there is one (reopened through our
    /// own fd table, which names exactly the directory the fd holds), else a stopped
    /// container's view with its volumes, else the overlay.
    pub fn cp_root(&self) -> PathBuf {
        match (&self.view, &self.stopped_view) {
            (Some(fd), _) => PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd))),
            (None, Some(v)) => v.path().to_path_buf(),
            (None, None) => self.root.clone(),
        }
    }
}

/// `/proc/PID/root` of a running container: its root as its processes see it, with every mount
/// of its mount namespace below, so `docker cp` reads and writes volumes and bind mounts, not
/// the overlay underneath them. The pid is trusted only if that root is the container's own
/// overlay (same device and inode as the bundle's rootfs), so a pid that another process took
/// over after the container exited cannot redirect a copy.
fn live_view(pid: i64, overlay_root: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    if pid <= 0 {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    let c = std::ffi::CString::new(format!("/proc/{pid}/root")).expect("no NUL");
    // SAFETY: plain open of a path we built; the fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just handed us this fd and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is written by the kernel on success.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let ours = std::fs::metadata(overlay_root)?;
    if st.st_dev != ours.dev() || st.st_ino != ours.ino() {
        return Err(std::io::Error::new(std::io::ErrorKind::Other, format!("process {pid} is not in the container's root")));
    }
    Ok(fd)
}

/// The live guard of a running container: its view when it can be had, else its overlay (the
/// process may have exited a moment ago; the overlay is still mounted until the exit is handled).
fn live_guard(e: &Arc<Engine>, c: &crate::containers::store::Container) -> RootGuard {
    let root = lifecycle::paths(e, &c.id).bundle.join("rootfs");
    let view = match live_view(c.state.pid, &root) {
        Ok(fd) => Some(fd),
        Err(err) => {
            tracing::debug!(id = %c.id, "docker cp uses the overlay, not the container's view: {err}");
            None
        }
    };
    RootGuard { root, view, stopped_view: None, temp: None, _lock: None }
}

impl Drop for RootGuard {
    fn drop(&mut self) {
        // The view first: it holds a bind of the overlay below.
        drop(self.stopped_view.take());
        if let Some(b) = self.temp.take() {
            if let Err(err) = b.remove(&berth_runtime::bundle::SysMounter) {
                tracing::warn!("unmounting a stopped container's rootfs after a copy: {err}");
            }
        }
    }
}

fn is_live(s: &crate::containers::store::Status) -> bool {
    use crate::containers::store::Status;
    matches!(s, Status::Running | Status::Paused)
}

/// What a root is wanted for: `docker cp` sees a container's volumes and binds, `docker export`
/// its own filesystem only.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RootFor {
    Copy,
    Export,
}

/// The root to resolve client paths in (see [`RootGuard`]).
pub async fn container_root(e: &Arc<Engine>, key: &str, purpose: RootFor) -> Result<(crate::containers::store::Container, RootGuard), ApiError> {
    let c = e.containers.get(key)?;
    if is_live(&c.state.status) {
        let g = live_guard(e, &c);
        return Ok((c, g));
    }
    let lock = e.lifecycle_lock(&c.id).await;
    let c = e.containers.get(&c.id)?;
    if is_live(&c.state.status) {
        // Started while we waited for the lock.
        drop(lock);
        let g = live_guard(e, &c);
        return Ok((c, g));
    }
    if c.state.status == crate::containers::store::Status::Restarting {
        return Err(ApiError::Conflict(format!("container {} is restarting", c.short_id())));
    }
    let e2 = Arc::clone(e);
    let c2 = c.clone();
    let guard = tokio::task::spawn_blocking(move || {
        let bundle = lifecycle::mount_rootfs(&e2, &c2)?;
        // The guard first, so a failure below still unmounts the overlay.
        let mut guard = RootGuard::overlay(bundle.rootfs(), Some(bundle), Some(lock));
        if purpose == RootFor::Copy && !c2.mounts.is_empty() {
            guard.stopped_view = Some(super::cpview::open(&e2, &c2, &guard.root)?);
        }
        Ok::<_, ApiError>(guard)
    })
    .await??;
    Ok((c, guard))
}

fn path_param(q: &Query) -> Result<String, ApiError> {
    q.get("path").filter(|p| !p.is_empty()).map(str::to_string).ok_or_else(|| ApiError::BadParameter("path is required".into()))
}

fn stat_response(id: &str, root: &Path, q: &Query) -> Result<Response<Body>, ApiError> {
    use base64::Engine as _;
    let path = path_param(q)?;
    let st = stat_in_root(root, &path).map_err(|err| match err.raw_os_error() {
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
    let (c, guard) = container_root(e, key, RootFor::Copy).await?;
    let r = stat_response(&c.id, &guard.cp_root(), q);
    tokio::task::spawn_blocking(move || drop(guard)).await.map_err(ApiError::internal)?;
    r
}

/// Open the directory `path` inside `root` for extraction: resolved with openat2
/// (RESOLVE_IN_ROOT, symlinks followed but clamped to the root, as Docker resolves the
/// destination), opened as a real directory fd that the extraction walk starts from.
fn open_dir_in_root(root: &Path, path: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let rootf = std::fs::File::open(root)?;
    let parts = clean_parts(path);
    let rel = if parts.is_empty() { ".".to_string() } else { parts.join("/") };
    let c = CString::new(rel.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain integers; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
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

/// Docker's lexical clean of a client path (`a/link/..` means `a`).
fn clean_parts(path: &str) -> Vec<&str> {
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
    parts
}

/// Bounds for one `docker cp` upload: generous (the client is the machine's admin), but a
/// runaway stream still ends with an error instead of filling the disk with inodes.
const COPY_LIMITS: berth_image::unpack::UnpackLimits =
    berth_image::unpack::UnpackLimits { max_bytes: 1 << 40, max_entries: 10_000_000 };

/// gzip-compressed uploads are accepted (the API allows them); plain tar otherwise.
fn decompressing<'a>(r: impl std::io::Read + 'a) -> std::io::Result<Box<dyn std::io::Read + 'a>> {
    use std::io::BufRead;
    let mut r = std::io::BufReader::with_capacity(256 * 1024, r);
    let head = r.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::GzDecoder::new(r)))
    } else {
        Ok(Box::new(r))
    }
}

/// Map an extraction failure: the client's archive or paths (400/409) vs the daemon's
/// filesystem (500).
fn extract_error(err: berth_image::ImageError) -> ApiError {
    use berth_image::ImageError as I;
    match err {
        I::Conflict(m) => ApiError::Conflict(m),
        I::UnsafeLayer(m) => ApiError::bad(format!("refusing archive entry: {m}")),
        I::LimitExceeded(m) => ApiError::bad(m),
        I::Io(e) if e.raw_os_error().is_none() => ApiError::bad(format!("invalid tar archive: {e}")),
        I::Io(e) if e.raw_os_error() == Some(libc::EROFS) => ApiError::Forbidden("the destination is a read-only mount of the container".into()),
        other => ApiError::internal(other),
    }
}

/// PUT /containers/{id}/archive?path=&noOverwriteDirNonDir=&copyUIDGID=
/// Extracts the uploaded tar into the directory `path` with berth-image's unpack walk
/// (O_NOFOLLOW component by component from an openat2-resolved directory fd), so a container
/// that swaps path components for symlinks meanwhile makes the copy fail, never escape.
pub async fn put(e: &Arc<Engine>, key: &str, req: Request<Incoming>, q: &Query) -> Result<Response<Body>, ApiError> {
    let reader = crate::images::body_reader(req);
    match put_checks(e, key, q).await {
        Ok((path, no_overwrite, copy_ids, user, id, guard)) => {
            reader
                .consume(move |reader| {
                    let r = extract_upload(&guard.cp_root(), reader, &path, no_overwrite, copy_ids, &user, &id);
                    drop(guard);
                    r
                })
                .await?
        }
        Err(err) => {
            reader.discard_unread().await;
            return Err(err);
        }
    };
    Ok(crate::http_util::status_only(http::StatusCode::OK))
}

type PutTarget = (String, bool, bool, String, String, RootGuard);

/// The query and container checks of a PUT, done before any of the upload is read.
async fn put_checks(e: &Arc<Engine>, key: &str, q: &Query) -> Result<PutTarget, ApiError> {
    let path = path_param(q)?;
    let no_overwrite = q.bool("noOverwriteDirNonDir")?;
    let copy_ids = q.bool("copyUIDGID")?;
    let (c, guard) = container_root(e, key, RootFor::Copy).await?;
    if c.host_config.readonly_rootfs.unwrap_or(false) {
        return Err(ApiError::Forbidden("container rootfs is marked read-only".into()));
    }
    let user = c.config.user.clone().unwrap_or_default();
    Ok((path, no_overwrite, copy_ids, user, c.id.clone(), guard))
}

fn extract_upload(
    root: &Path,
    reader: &mut impl std::io::Read,
    path: &str,
    no_overwrite: bool,
    copy_ids: bool,
    user: &str,
    id: &str,
) -> Result<(), ApiError> {
    let st = stat_in_root(root, path);
    if matches!(st.as_ref().map_err(|e| e.raw_os_error()), Err(Some(libc::ENOENT)) | Err(Some(libc::ENOTDIR))) {
        return Err(ApiError::NotFound(format!("Could not find the file {path} in container {id}")));
    }
    st.map_err(ApiError::internal)?;
    let dir = open_dir_in_root(root, path).map_err(|err| match err.raw_os_error() {
        Some(libc::ENOTDIR) => ApiError::bad("extraction point is not a directory"),
        Some(libc::ENOENT) => ApiError::NotFound(format!("Could not find the file {path} in container {id}")),
        _ => ApiError::internal(err),
    })?;
    if on_kernel_fs(std::os::fd::AsRawFd::as_raw_fd(&dir)) {
        return Err(ApiError::Forbidden(format!("cannot copy into {path}: it is a kernel filesystem of the container")));
    }
    // copyUIDGID: everything belongs to the container's user (Docker looks it up in the
    // container's own passwd file, as the runtime does).
    let owner = if copy_ids && !user.is_empty() {
        let u = berth_runtime::user::resolve(root, user, &[]).map_err(|err| ApiError::bad(err.to_string()))?;
        Some((u.user.uid, u.user.gid))
    } else {
        None
    };
    let input = decompressing(reader).map_err(|err| ApiError::bad(format!("reading the archive: {err}")))?;
    let opts = berth_image::unpack::ExtractOptions::copy_in(COPY_LIMITS, no_overwrite, owner);
    berth_image::unpack::extract_at(input, dir, opts).map(drop).map_err(extract_error)
}

/// GET /containers/{id}/export (streamed). A stopped container's rootfs stays mounted, and
/// its lifecycle lock held, until the last byte is written or the client leaves.
pub async fn export(e: &Arc<Engine>, key: &str) -> Result<Response<Body>, ApiError> {
    let (_, guard) = container_root(e, key, RootFor::Export).await?;
    let body = streamed_tar(move |w| {
        let r = tar_in_root(&guard.root, "/", w).map(drop);
        drop(guard);
        r
    });
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/x-tar")
        .body(body)
        .map_err(ApiError::internal)
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
    hide_daemon_files(&mut list);
    Ok(ok_json(&list))
}

/// berthd writes /etc/hostname, /etc/hosts and /etc/resolv.conf into the upper dir where Docker
/// bind-mounts them; Docker's diff never shows them, nor /etc as modified because of them
/// alone (docker-py's test_diff: `touch /test` must give exactly [/test added]).
fn hide_daemon_files(list: &mut Vec<Change>) {
    list.retain(|c| !matches!(c.path.as_str(), "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf"));
    if !list.iter().any(|c| c.path.starts_with("/etc/")) {
        list.retain(|c| !(c.path == "/etc" && c.kind == 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_written_files_and_their_etc_are_not_changes() {
        let ch = |p: &str, kind| Change { path: p.into(), kind };
        let mut l = vec![ch("/etc", 0), ch("/etc/hostname", 1), ch("/etc/hosts", 0), ch("/etc/resolv.conf", 1), ch("/test", 1)];
        hide_daemon_files(&mut l);
        assert_eq!(l, vec![ch("/test", 1)]);
        // /etc stays when something else in it changed.
        let mut l = vec![ch("/etc", 0), ch("/etc/hosts", 0), ch("/etc/motd", 1)];
        hide_daemon_files(&mut l);
        assert_eq!(l, vec![ch("/etc", 0), ch("/etc/motd", 1)]);
    }

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
        let t2 = tar_in_root(&upper, "/etc", Vec::new()).unwrap();
        // GNU tar reads it back.
        let tf = t.path().join("out.tar");
        std::fs::write(&tf, &t2).unwrap();
        let o = std::process::Command::new("tar").arg("tvf").arg(&tf).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let listing = String::from_utf8_lossy(&o.stdout);
        let names: Vec<&str> = listing.lines().map(|l| l.rsplit(' ').next().unwrap()).collect();
        assert_eq!(names, vec!["etc/", "etc/hosts", "etc/new"], "{listing}");
        assert!(!exists_nofollow(&t.path().join("lower"), Path::new("link/etc")));
    }
}
