//! Safe tar layer unpacking for overlayfs.
//!
//! The `tar` crate is only used to *read* entries; every filesystem change is
//! done here with *at() calls relative to directory fds opened with
//! O_NOFOLLOW|O_DIRECTORY, so no path from the archive is ever resolved by the
//! kernel through a symlink. (tar's own unpack has had escape bugs.)

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use tar::EntryType;

use crate::digest::{Digest, Hasher};
use crate::error::ImageError;
use crate::sys::{self, AsFdRef};

/// Bounds on what one layer may expand to (decompression bombs, inode floods).
#[derive(Clone, Copy, Debug)]
pub struct UnpackLimits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

/// What an unpack produced.
#[derive(Debug)]
pub struct UnpackStats {
    /// sha256 of the whole uncompressed stream.
    pub diff_id: Digest,
    /// Sum of regular file sizes.
    pub size: u64,
    pub entries: u64,
}

/// Hashes and counts the uncompressed stream; fails once it exceeds `max`.
struct Counting<R> {
    inner: R,
    hasher: Hasher,
    n: u64,
    max: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        if self.n > self.max {
            self.exceeded.set(true);
            return Err(io::Error::other("uncompressed size limit exceeded"));
        }
        self.hasher.update(&buf[..k]);
        Ok(k)
    }
}

fn unsafe_entry(path: &[u8], why: &str) -> ImageError {
    ImageError::UnsafeLayer(format!("{:.200}: {why}", String::from_utf8_lossy(path)))
}

/// How an archive is applied: as an image layer (strict names, overlay
/// whiteouts) or as `docker cp` content extracted into a container directory.
#[derive(Clone, Copy, Debug)]
pub struct ExtractOptions {
    pub limits: UnpackLimits,
    /// Turn AUFS `.wh.` entries into overlayfs whiteouts (layers only; for
    /// `docker cp` they are ordinary names, as in Docker's Untar).
    pub whiteouts: bool,
    /// Docker's `noOverwriteDirNonDir`: refuse to replace a directory with a
    /// non-directory or the reverse instead of removing what is there.
    pub no_overwrite_dir_non_dir: bool,
    /// Chown every entry to this uid:gid instead of the archive's ids
    /// (`copyUIDGID` with a container user).
    pub owner: Option<(u32, u32)>,
    /// Accept absolute names and `..` that stay inside the root, cleaned
    /// lexically as Docker's Untar does (`/etc/x` means `<root>/etc/x`); a
    /// name that climbs above the root is still refused. Layers stay strict.
    pub lexical_clean: bool,
    /// Apply a "." entry's mode/owner to the root itself (layers) or skip it
    /// (docker cp, where the root is an existing container directory).
    pub root_metadata: bool,
}

impl ExtractOptions {
    /// Image layers: the strict policy, with overlay whiteouts.
    pub fn layer(limits: UnpackLimits) -> Self {
        ExtractOptions { limits, whiteouts: true, no_overwrite_dir_non_dir: false, owner: None, lexical_clean: false, root_metadata: true }
    }

    /// `docker cp` into a container directory.
    pub fn copy_in(limits: UnpackLimits, no_overwrite_dir_non_dir: bool, owner: Option<(u32, u32)>) -> Self {
        ExtractOptions { limits, whiteouts: false, no_overwrite_dir_non_dir, owner, lexical_clean: true, root_metadata: false }
    }
}

/// Splits an archive path into components, cleaning `.`, `..` and a leading
/// `/` lexically; refuses a name that climbs above the root.
fn split_path_clean(path: &[u8]) -> Result<Vec<Vec<u8>>, ImageError> {
    if path.is_empty() {
        return Err(unsafe_entry(path, "empty name"));
    }
    if path.contains(&0) {
        return Err(unsafe_entry(path, "NUL in name"));
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(unsafe_entry(path, "climbs above the destination"));
                }
            }
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// Splits an archive path into components, refusing anything that could
/// name a location outside the root. "." and empty components are dropped.
fn split_path(path: &[u8]) -> Result<Vec<Vec<u8>>, ImageError> {
    if path.is_empty() {
        return Err(unsafe_entry(path, "empty name"));
    }
    if path.contains(&0) {
        return Err(unsafe_entry(path, "NUL in name"));
    }
    if path[0] == b'/' {
        return Err(unsafe_entry(path, "absolute path"));
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(unsafe_entry(path, "'..' component")),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// Opens the directory `comps` below `root`, one component at a time, never
/// following symlinks. Missing directories are created (0755) when `create`.
fn walk(root: &OwnedFd, comps: &[Vec<u8>], create: bool, path: &[u8]) -> Result<OwnedFd, ImageError> {
    let mut cur = root.try_clone()?;
    for c in comps {
        let next = match sys::open_dir_nofollow(cur.as_fd(), c) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                sys::mkdirat(cur.as_fd(), c, 0o755)?;
                sys::open_dir_nofollow(cur.as_fd(), c)?
            }
            Err(e) => {
                return Err(match sys::lstatat(cur.as_fd(), c) {
                    Ok(st) if sys::is_symlink(&st) => unsafe_entry(path, "parent path goes through a symlink"),
                    Ok(_) => unsafe_entry(path, "parent is not a directory"),
                    Err(_) => ImageError::UnsafeLayer(format!(
                        "{:.200}: parent missing: {e}",
                        String::from_utf8_lossy(path)
                    )),
                })
            }
        };
        cur = next;
    }
    Ok(cur)
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: libc::timespec,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Only namespaces a layer may legitimately carry; trusted.overlay.* is
/// excluded because overlayfs interprets it (redirects, metacopy) and only our
/// whiteout conversion may set it.
fn xattr_allowed(k: &str) -> bool {
    (k.starts_with("user.") || k.starts_with("security.") || k.starts_with("trusted."))
        && !k.starts_with("trusted.overlay.")
}

fn read_meta<R: Read>(entry: &mut tar::Entry<R>) -> Result<Meta, ImageError> {
    let h = entry.header();
    let mut m = Meta {
        mode: h.mode()? & 0o7777,
        uid: h.uid()? as u32,
        gid: h.gid()? as u32,
        mtime: sys::ts(h.mtime()? as i64, 0),
        xattrs: Vec::new(),
    };
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            let val = ext.value_bytes();
            let s = std::str::from_utf8(val).unwrap_or("");
            match key {
                "uid" => m.uid = s.parse().map_err(|_| ImageError::Corrupt("bad PAX uid".into()))?,
                "gid" => m.gid = s.parse().map_err(|_| ImageError::Corrupt("bad PAX gid".into()))?,
                "mtime" => {
                    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
                    if let Ok(sec) = sec.parse::<i64>() {
                        let mut ns = format!("{frac:0<9}");
                        ns.truncate(9);
                        m.mtime = sys::ts(sec, ns.parse().unwrap_or(0));
                    }
                }
                k => {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        if xattr_allowed(name) {
                            m.xattrs.push((name.to_string(), val.to_vec()));
                        }
                    }
                }
            }
        }
    }
    Ok(m)
}

/// chown before chmod: chown clears setuid/setgid bits.
fn apply_fd_meta(fd: BorrowedFd, m: &Meta) -> Result<(), ImageError> {
    sys::fchown(fd, m.uid, m.gid)?;
    sys::fchmod(fd, m.mode)?;
    if !m.xattrs.is_empty() {
        let f = File::from(fd.try_clone_to_owned()?);
        for (k, v) in &m.xattrs {
            xattr::FileExt::set_xattr(&f, k, v)?;
        }
    }
    Ok(())
}

/// Removes whatever is at `name` (file, symlink, whole directory tree), never
/// following symlinks, so a later entry replaces an earlier one.
fn clear(dir: BorrowedFd, name: &[u8]) -> Result<(), ImageError> {
    sys::remove_at(dir, name).map_err(ImageError::from)
}

/// Unpacks an uncompressed tar stream into the existing empty directory `root`.
/// On error the caller discards `root`; nothing is ever created outside it.
pub fn unpack_tar<R: Read>(reader: R, root: &Path, limits: UnpackLimits) -> Result<UnpackStats, ImageError> {
    let root_fd = sys::open_path(root, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW)?;
    extract_at(reader, root_fd, ExtractOptions::layer(limits))
}

/// Extracts an uncompressed tar stream below the directory fd `root_fd` with
/// the same path walk as layer unpacking: every component is opened with
/// O_NOFOLLOW relative to a directory fd, so nothing outside `root_fd` is
/// touched even while another process (a running container) swaps
/// components for symlinks; such an entry fails instead of being followed.
pub fn extract_at<R: Read>(reader: R, root_fd: OwnedFd, opts: ExtractOptions) -> Result<UnpackStats, ImageError> {
    let limits = opts.limits;
    let exceeded = Rc::new(Cell::new(false));
    let counting = Counting { inner: reader, hasher: Hasher::new(), n: 0, max: limits.max_bytes, exceeded: exceeded.clone() };
    let mut archive = tar::Archive::new(counting);
    let mut stats = (0u64, 0u64); // size, entries
    let mut dir_times: Vec<(Vec<Vec<u8>>, libc::timespec)> = Vec::new();

    let res = (|| -> Result<(), ImageError> {
        for entry in archive.entries()? {
            let mut entry = entry?;
            stats.1 += 1;
            if stats.1 > limits.max_entries {
                return Err(ImageError::LimitExceeded(format!("more than {} entries", limits.max_entries)));
            }
            let size = unpack_entry(&mut entry, &root_fd, &mut dir_times, &opts)?;
            stats.0 += size;
        }
        Ok(())
    })();
    let res = res.and_then(|_| {
        // Directory mtimes last: creating children changes them.
        for (comps, t) in dir_times.iter().rev() {
            let (name, parent) = match comps.split_last() {
                Some(x) => x,
                None => {
                    sys::futimens(root_fd.as_fd(), *t)?;
                    continue;
                }
            };
            if let Ok(pfd) = walk(&root_fd, parent, false, b"") {
                match sys::lutimensat(pfd.as_fd(), name, *t) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    r => r?,
                }
            }
        }
        Ok(())
    });
    let mut counting = match res {
        Ok(()) => archive.into_inner(),
        Err(e) => {
            if exceeded.get() {
                return Err(ImageError::LimitExceeded(format!("uncompressed layer larger than {} bytes", limits.max_bytes)));
            }
            return Err(e);
        }
    };
    // The diff_id covers the whole stream, including end-of-archive padding.
    if let Err(e) = io::copy(&mut counting, &mut io::sink()) {
        if exceeded.get() {
            return Err(ImageError::LimitExceeded(format!("uncompressed layer larger than {} bytes", limits.max_bytes)));
        }
        return Err(e.into());
    }
    Ok(UnpackStats { diff_id: counting.hasher.finish(), size: stats.0, entries: stats.1 })
}

/// With `no_overwrite_dir_non_dir`, refuse to replace a directory by a
/// non-directory and the reverse (Docker's wording).
fn check_overwrite(pfd: BorrowedFd, name: &[u8], new_is_dir: bool, path: &[u8], opts: &ExtractOptions) -> Result<(), ImageError> {
    if !opts.no_overwrite_dir_non_dir {
        return Ok(());
    }
    if let Ok(st) = sys::lstatat(pfd, name) {
        let shown = String::from_utf8_lossy(path);
        if sys::is_dir(&st) && !new_is_dir {
            return Err(ImageError::Conflict(format!("cannot overwrite directory {shown:?} with non-directory {shown:?}")));
        }
        if !sys::is_dir(&st) && new_is_dir {
            return Err(ImageError::Conflict(format!("cannot overwrite non-directory {shown:?} with directory {shown:?}")));
        }
    }
    Ok(())
}

fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<R>,
    root: &OwnedFd,
    dir_times: &mut Vec<(Vec<Vec<u8>>, libc::timespec)>,
    opts: &ExtractOptions,
) -> Result<u64, ImageError> {
    let kind = entry.header().entry_type();
    if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink) {
        return Ok(0);
    }
    let path = entry.path_bytes().into_owned();
    let comps = if opts.lexical_clean { split_path_clean(&path)? } else { split_path(&path)? };
    let mut meta = read_meta(entry)?;
    if let Some((uid, gid)) = opts.owner {
        meta.uid = uid;
        meta.gid = gid;
    }

    let Some((name, parent)) = comps.split_last() else {
        // "./" itself: only a directory may describe the root.
        if kind == EntryType::Directory && !opts.root_metadata {
            return Ok(0);
        }
        if kind == EntryType::Directory {
            apply_fd_meta(root.as_fd(), &meta)?;
            dir_times.push((Vec::new(), meta.mtime));
            return Ok(0);
        }
        return Err(unsafe_entry(&path, "empty name"));
    };
    let pfd = walk(root, parent, true, &path)?;
    let pfd = pfd.as_fd_ref();

    check_overwrite(pfd, name, kind == EntryType::Directory, &path, opts)?;

    // Whiteouts (AUFS style in the tar) become overlayfs whiteouts.
    if let Some(wh) = name.strip_prefix(b".wh.").filter(|_| opts.whiteouts) {
        if wh == b".wh..opq" {
            let f = File::from(pfd.try_clone_to_owned()?);
            xattr::FileExt::set_xattr(&f, "trusted.overlay.opaque", b"y")?;
            return Ok(0);
        }
        if wh.starts_with(b".wh.") {
            return Ok(0); // other AUFS metadata (.wh..wh.plnk etc.): meaningless here
        }
        if wh.is_empty() || wh == b"." || wh == b".." {
            return Err(unsafe_entry(&path, "invalid whiteout name"));
        }
        clear(pfd, wh)?;
        sys::mknodat(pfd, wh, libc::S_IFCHR, 0)?;
        return Ok(0);
    }

    match kind {
        EntryType::Regular | EntryType::Continuous => {
            clear(pfd, name)?;
            let fd = sys::openat(pfd, name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW, 0o600)?;
            let mut f = File::from(fd);
            let n = io::copy(entry, &mut f)?;
            apply_fd_meta(f.as_fd(), &meta)?;
            sys::futimens(f.as_fd(), meta.mtime)?;
            Ok(n)
        }
        EntryType::Directory => {
            // Merge into an existing real directory; anything else (including a
            // symlink) is removed first so we never chmod through a link.
            match sys::lstatat(pfd, name) {
                Ok(st) if sys::is_dir(&st) => {}
                Ok(_) => {
                    clear(pfd, name)?;
                    sys::mkdirat(pfd, name, 0o700)?;
                }
                Err(_) => sys::mkdirat(pfd, name, 0o700)?,
            }
            let dfd = sys::open_dir_nofollow(pfd, name)?;
            apply_fd_meta(dfd.as_fd(), &meta)?;
            dir_times.push((comps.clone(), meta.mtime));
            Ok(0)
        }
        EntryType::Symlink => {
            let target = entry.link_name_bytes().ok_or_else(|| unsafe_entry(&path, "symlink without target"))?;
            if target.is_empty() || target.contains(&0) {
                return Err(unsafe_entry(&path, "invalid symlink target"));
            }
            clear(pfd, name)?;
            // The target text is stored as-is: it is only dangerous to follow,
            // and nothing here ever follows it.
            sys::symlinkat(&target, pfd, name)?;
            sys::lchownat(pfd, name, meta.uid, meta.gid)?;
            sys::lutimensat(pfd, name, meta.mtime)?;
            Ok(0)
        }
        EntryType::Link => {
            let target = entry.link_name_bytes().ok_or_else(|| unsafe_entry(&path, "hardlink without target"))?;
            let tcomps = if opts.lexical_clean { split_path_clean(&target) } else { split_path(&target) }
                .map_err(|_| unsafe_entry(&path, "hardlink target outside the layer"))?;
            let Some((tname, tparent)) = tcomps.split_last() else {
                return Err(unsafe_entry(&path, "hardlink to the layer root"));
            };
            let tfd = walk(root, tparent, false, &path)?;
            let tst = sys::lstatat(tfd.as_fd(), tname).map_err(|_| unsafe_entry(&path, "hardlink target missing"))?;
            if sys::is_dir(&tst) {
                return Err(unsafe_entry(&path, "hardlink to a directory"));
            }
            if let Ok(st) = sys::lstatat(pfd, name) {
                if st.st_dev == tst.st_dev && st.st_ino == tst.st_ino {
                    return Ok(0); // already the same file
                }
            }
            clear(pfd, name)?;
            // No AT_SYMLINK_FOLLOW: a symlink target is linked as a symlink.
            sys::linkat(tfd.as_fd(), tname, pfd, name)?;
            Ok(0)
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            let fmt = match kind {
                EntryType::Char => libc::S_IFCHR,
                EntryType::Block => libc::S_IFBLK,
                _ => libc::S_IFIFO,
            };
            // FIFOs often carry blank device fields; only devices need them.
            let (major, minor) = if kind == EntryType::Fifo {
                (0, 0)
            } else {
                (entry.header().device_major()?.unwrap_or(0), entry.header().device_minor()?.unwrap_or(0))
            };
            clear(pfd, name)?;
            sys::mknodat(pfd, name, fmt | 0o600, libc::makedev(major, minor))?;
            sys::lchownat(pfd, name, meta.uid, meta.gid)?;
            sys::fchmodat(pfd, name, meta.mode)?;
            if !meta.xattrs.is_empty() {
                // Setting xattrs on a node needs a path or an fd that opens the
                // device; neither is safe/sensible here, and images don't do this.
                tracing::debug!(path = %String::from_utf8_lossy(&path), "ignoring xattrs on device node");
            }
            sys::lutimensat(pfd, name, meta.mtime)?;
            Ok(0)
        }
        EntryType::GNUSparse => Err(ImageError::Unsupported(format!(
            "{:.200}: sparse tar entries",
            String::from_utf8_lossy(&path)
        ))),
        other => {
            tracing::warn!(path = %String::from_utf8_lossy(&path), kind = ?other, "skipping unsupported tar entry type");
            Ok(0)
        }
    }
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
pub(crate) mod tests;
