//! COPY/ADD sources and destinations on real directory trees: a build context, a stage's
//! mounted rootfs, the rootfs a step writes into.
//!
//! Every path from a Dockerfile is resolved with `openat2(RESOLVE_IN_ROOT)`, so `..` and
//! symlinks (absolute or relative) stay inside the tree, as Docker's FollowSymlinkInScope
//! does; below a resolved source or destination everything is done relative to directory
//! fds with `O_NOFOLLOW`. A source that names a path above the context is refused with
//! Docker's message. Content checksums (Docker's `file:<hash>` / `dir:<hash>`) cover names,
//! types, modes, ownership, link targets and contents, not timestamps, as Docker's do.
//!
//! The few `*at` wrappers are hand-written: the workspace has no crate exposing openat2, and
//! exact flags on every call are the point.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::BuildError;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A directory tree that paths are resolved inside.
pub struct Root {
    fd: OwnedFd,
}

fn openat2(dir: RawFd, rel: &str, flags: i32) -> io::Result<OwnedFd> {
    let c = cstr(if rel.is_empty() { "." } else { rel })?;
    // SAFETY: open_how is plain integers; zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: pointers valid for the call; size is that of `how`.
    let fd = unsafe {
        libc::syscall(libc::SYS_openat2, dir, c.as_ptr(), &how as *const libc::open_how, std::mem::size_of::<libc::open_how>())
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Reopen an `O_PATH` fd for reading (through /proc/self/fd, which names exactly that
/// inode: nothing is resolved again).
fn reopen(fd: RawFd, flags: i32) -> io::Result<OwnedFd> {
    let p = cstr(&format!("/proc/self/fd/{fd}"))?;
    // SAFETY: plain open of our own fd's magic link.
    let r = cvt(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

fn openat(dir: RawFd, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain openat with a valid C string.
    let fd = cvt(unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOFOLLOW, mode) })?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstatat(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: st is written by the kernel on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH) })?;
    Ok(st)
}

fn readlinkat(dir: RawFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: buf valid for its length.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn list_dir(fd: &OwnedFd) -> io::Result<Vec<CString>> {
    let dup = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: dup is ours; fdopendir takes it over.
    let d = unsafe { libc::fdopendir(dup) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        unsafe { libc::close(dup) };
        return Err(e);
    }
    unsafe { libc::rewinddir(d) };
    let mut out = Vec::new();
    loop {
        // SAFETY: d is a valid DIR*; the entry is copied before the next call.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            out.push(name.to_owned());
        }
    }
    unsafe { libc::closedir(d) };
    out.sort();
    Ok(out)
}

fn is(st: &libc::stat, fmt: u32) -> bool {
    st.st_mode & libc::S_IFMT == fmt
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let f = File::open(path)?;
        Ok(Root { fd: f.into() })
    }

    /// Resolve `rel` inside the tree, following symlinks but never leaving it.
    pub fn open_resolved(&self, rel: &str) -> io::Result<OwnedFd> {
        openat2(self.fd.as_raw_fd(), rel, libc::O_PATH)
    }

    /// Resolve `rel`'s parent (following symlinks inside the tree) and return it with the
    /// last component, which is not followed.
    fn parent_of(&self, rel: &str) -> io::Result<(OwnedFd, CString)> {
        let clean = clean_rel(rel).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        match clean.rsplit_once('/') {
            Some((p, n)) => Ok((openat2(self.fd.as_raw_fd(), p, libc::O_RDONLY | libc::O_DIRECTORY)?, cstr(n)?)),
            None if clean.is_empty() => Err(io::Error::from_raw_os_error(libc::EISDIR)),
            None => Ok((openat2(self.fd.as_raw_fd(), "", libc::O_RDONLY | libc::O_DIRECTORY)?, cstr(&clean)?)),
        }
    }

    /// Stat `rel` (resolved inside the tree); None when missing.
    pub fn stat(&self, rel: &str) -> io::Result<Option<libc::stat>> {
        match self.open_resolved(rel) {
            Ok(fd) => Ok(Some(fstatat(fd.as_raw_fd(), c"")?)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Is `rel` an existing directory (following symlinks inside the tree)?
    pub fn is_dir(&self, rel: &str) -> bool {
        matches!(self.stat(rel), Ok(Some(st)) if is(&st, libc::S_IFDIR))
    }

    /// `mkdir -p` of `rel` inside the tree; new directories get `mode` and `owner`. A
    /// dangling symlink on the way is followed inside the tree (its target is created), as
    /// Docker's MkdirAll in scope does.
    pub fn mkdir_all(&self, rel: &str, mode: u32, owner: (u32, u32)) -> io::Result<OwnedFd> {
        self.mkdir_all_depth(rel, mode, owner, 0)
    }

    fn mkdir_all_depth(&self, rel: &str, mode: u32, owner: (u32, u32), depth: u32) -> io::Result<OwnedFd> {
        if depth > 40 {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        let clean = clean_rel(rel).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut cur = String::new();
        let mut fd = openat2(self.fd.as_raw_fd(), "", libc::O_RDONLY | libc::O_DIRECTORY)?;
        for comp in clean.split('/').filter(|c| !c.is_empty()) {
            let next = if cur.is_empty() { comp.to_string() } else { format!("{cur}/{comp}") };
            match openat2(self.fd.as_raw_fd(), &next, libc::O_RDONLY | libc::O_DIRECTORY) {
                Ok(f) => fd = f,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let c = cstr(comp)?;
                    if let Ok(st) = fstatat(fd.as_raw_fd(), &c) {
                        if is(&st, libc::S_IFLNK) {
                            // Dangling link: create its target inside the tree.
                            let target = String::from_utf8_lossy(&readlinkat(fd.as_raw_fd(), &c)?).into_owned();
                            let joined = if target.starts_with('/') { target } else { format!("{cur}/{target}") };
                            let inside = clean_rel_clamped(&joined);
                            self.mkdir_all_depth(&inside, mode, owner, depth + 1)?;
                            fd = openat2(self.fd.as_raw_fd(), &next, libc::O_RDONLY | libc::O_DIRECTORY)?;
                            cur = next;
                            continue;
                        }
                    }
                    // SAFETY: valid fd and C string. EEXIST (a racing creator) is fine: the
                    // open below decides.
                    let _ = unsafe { libc::mkdirat(fd.as_raw_fd(), c.as_ptr(), mode) };
                    let f = openat(fd.as_raw_fd(), &c, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                    // SAFETY: fd-based chown/chmod of the directory we just made.
                    cvt(unsafe { libc::fchown(f.as_raw_fd(), owner.0, owner.1) })?;
                    cvt(unsafe { libc::fchmod(f.as_raw_fd(), mode) })?;
                    fd = f;
                }
                Err(e) => return Err(e),
            }
            cur = next;
        }
        Ok(fd)
    }
}

/// Like [`clean_rel`], but `..` at the root stays at the root (how a chroot sees it).
fn clean_rel_clamped(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// Clean a Dockerfile source/destination path relative to a root: leading `/` and `./`
/// dropped, `.` and `..` resolved lexically; climbing above the root is an error.
pub fn clean_rel(p: &str) -> Result<String, ()> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(());
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// A COPY source path, checked against the context: Docker's "forbidden path" error when
/// it names something above the context root.
pub fn source_path(src: &str, kw: &str) -> Result<String, BuildError> {
    clean_rel(src).map_err(|_| BuildError::Source(format!("{kw} failed: forbidden path outside the build context: {src} ()")))
}

pub fn has_wildcards(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Go's filepath.Match: `*` and `?` do not match `/`, `[...]` classes with `^` negation and
/// ranges, `\` escapes. An invalid pattern matches nothing.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // p starts after '['; returns (matched, chars consumed incl. ']').
        let mut i = 0;
        let neg = p.first() == Some(&'^');
        if neg {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == ']' && !first {
                return Some((matched != neg, i + 1));
            }
            first = false;
            let mut lo = p[i];
            if lo == '\\' {
                i += 1;
                lo = *p.get(i)?;
            }
            i += 1;
            let mut hi = lo;
            if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|c| *c != ']') {
                hi = p[i + 1];
                if hi == '\\' {
                    hi = *p.get(i + 2)?;
                    i += 1;
                }
                i += 2;
            }
            if lo <= c && c <= hi {
                matched = true;
            }
        }
        None
    }
    fn go(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len()).take_while(|i| *i == 0 || s[i - 1] != '/').any(|i| go(&p[1..], &s[i..])),
            Some('?') => !s.is_empty() && s[0] != '/' && go(&p[1..], &s[1..]),
            Some('[') => match (s.first(), class(&p[1..], *s.first().unwrap_or(&'\0'))) {
                (Some(c), Some((true, n))) if *c != '/' => go(&p[1 + n..], &s[1..]),
                _ => false,
            },
            Some('\\') if p.len() > 1 => !s.is_empty() && s[0] == p[1] && go(&p[2..], &s[1..]),
            Some(c) => !s.is_empty() && s[0] == *c && go(&p[1..], &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    go(&p, &s)
}

/// Every path in the tree (relative, not following symlinks) matching a wildcard source, as
/// Docker's classic builder finds them. Sorted.
pub fn match_wildcards(root: &Root, pattern: &str, max_entries: usize) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut seen = 0usize;
    let depth = pattern.split('/').count();
    fn walk(dir: &OwnedFd, rel: &str, depth: usize, pattern: &str, out: &mut Vec<String>, seen: &mut usize, max: usize) -> io::Result<()> {
        for name in list_dir(dir)? {
            *seen += 1;
            if *seen > max {
                return Err(io::Error::other("too many files in the build context"));
            }
            let n = name.to_string_lossy();
            let r = if rel.is_empty() { n.to_string() } else { format!("{rel}/{n}") };
            if glob_match(pattern, &r) {
                out.push(r.clone());
            }
            let st = fstatat(dir.as_raw_fd(), &name)?;
            if is(&st, libc::S_IFDIR) && depth > 1 {
                let sub = openat(dir.as_raw_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                walk(&sub, &r, depth - 1, pattern, out, seen, max)?;
            }
        }
        Ok(())
    }
    let top = openat2(root.fd.as_raw_fd(), "", libc::O_RDONLY | libc::O_DIRECTORY)?;
    walk(&top, "", depth, pattern, &mut out, &mut seen, max_entries)?;
    out.sort();
    Ok(out)
}

/// Checksum of a source for the cache key: `file:<hex>` for a file, `dir:<hex>` for a tree.
pub fn checksum(root: &Root, rel: &str) -> io::Result<String> {
    let fd = root.open_resolved(rel)?;
    let st = fstatat(fd.as_raw_fd(), c"")?;
    let mut h = Sha256::new();
    if is(&st, libc::S_IFDIR) {
        let dir = openat2(fd.as_raw_fd(), "", libc::O_RDONLY | libc::O_DIRECTORY)?;
        hash_dir(&dir, "", &mut h)?;
        Ok(format!("dir:{}", hex::encode(h.finalize())))
    } else {
        hash_entry(fd.as_raw_fd(), c"", "", &st, &mut h)?;
        Ok(format!("file:{}", hex::encode(h.finalize())))
    }
}

fn hash_entry(dir: RawFd, name: &CStr, rel: &str, st: &libc::stat, h: &mut Sha256) -> io::Result<()> {
    let kind = st.st_mode & libc::S_IFMT;
    h.update(format!("{rel}\0{kind:o}\0{:o}\0{}\0{}\0", st.st_mode & 0o7777, st.st_uid, st.st_gid).as_bytes());
    if kind == libc::S_IFREG {
        let f = if name.to_bytes().is_empty() {
            reopen(dir, libc::O_RDONLY)?
        } else {
            openat(dir, name, libc::O_RDONLY, 0)?
        };
        let mut f = File::from(f);
        let mut c = Sha256::new();
        io::copy(&mut f, &mut c)?;
        h.update(c.finalize());
    } else if kind == libc::S_IFLNK {
        h.update(readlinkat(dir, name)?);
    } else if kind == libc::S_IFCHR || kind == libc::S_IFBLK {
        h.update(format!("{}", st.st_rdev).as_bytes());
    }
    h.update(b"\n");
    Ok(())
}

fn hash_dir(dir: &OwnedFd, rel: &str, h: &mut Sha256) -> io::Result<()> {
    for name in list_dir(dir)? {
        let n = name.to_string_lossy();
        let r = if rel.is_empty() { n.to_string() } else { format!("{rel}/{n}") };
        let st = fstatat(dir.as_raw_fd(), &name)?;
        hash_entry(dir.as_raw_fd(), &name, &r, &st, h)?;
        if is(&st, libc::S_IFDIR) {
            let sub = openat(dir.as_raw_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            hash_dir(&sub, &r, h)?;
        }
    }
    Ok(())
}

/// Docker's hash for several sources: `multi:` + sha256 of their hashes.
pub fn combine_checksums(hashes: &[String]) -> String {
    if hashes.len() == 1 {
        return hashes[0].clone();
    }
    format!("multi:{}", hex::encode(Sha256::digest(hashes.concat().as_bytes())))
}

/// How COPY writes what it copies.
#[derive(Debug, Clone, Copy)]
pub struct CopyOptions {
    /// `--chown` (COPY's default is root, 0:0); None keeps the source's ids (ADD of a tar).
    pub owner: Option<(u32, u32)>,
    /// `--chmod` for files and directories copied.
    pub mode: Option<u32>,
}

/// Copy `src` (a path inside `from`, following symlinks there) to `dest` inside `to`, with
/// Docker's COPY rules: a directory's contents go into `dest`; a file goes into `dest` when
/// it is a directory or ends with `/`, else becomes `dest`. Missing parents are created
/// (owned like the copy). Returns the number of bytes copied.
pub fn copy(from: &Root, src: &str, to: &Root, dest: &str, dest_is_dir: bool, opts: CopyOptions) -> io::Result<u64> {
    let sfd = from.open_resolved(src)?;
    let st = fstatat(sfd.as_raw_fd(), c"")?;
    let base = clean_rel(src).ok().and_then(|c| c.rsplit('/').next().map(str::to_string)).unwrap_or_default();
    let dest_clean = clean_rel(dest).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    if is(&st, libc::S_IFDIR) {
        let existed = to.is_dir(&dest_clean);
        let dfd = to.mkdir_all(&dest_clean, opts.mode.unwrap_or(st.st_mode & 0o7777), opts.owner.unwrap_or((st.st_uid, st.st_gid)))?;
        let sdir = openat2(sfd.as_raw_fd(), "", libc::O_RDONLY | libc::O_DIRECTORY)?;
        if !existed {
            set_times(dfd.as_raw_fd(), c"", &st)?;
        }
        let n = copy_dir_contents(&sdir, &dfd, opts)?;
        if !existed {
            set_times(dfd.as_raw_fd(), c"", &st)?;
        }
        return Ok(n);
    }
    let into_dir = dest_is_dir || dest.ends_with('/') || to.is_dir(&dest_clean);
    let target = if into_dir {
        if base.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if dest_clean.is_empty() { base } else { format!("{dest_clean}/{base}") }
    } else {
        dest_clean
    };
    let (parent, name) = match target.rsplit_once('/') {
        Some((p, n)) => (to.mkdir_all(p, 0o755, opts.owner.unwrap_or((0, 0)))?, cstr(n)?),
        None => (to.mkdir_all("", 0o755, opts.owner.unwrap_or((0, 0)))?, cstr(&target)?),
    };
    copy_entry(sfd.as_raw_fd(), c"", &st, parent.as_raw_fd(), &name, opts)
}

/// Write `data` as a new file `dest` inside `to` (COPY <<EOF).
pub fn write_file(to: &Root, dest: &str, data: &[u8], opts: CopyOptions) -> io::Result<()> {
    let clean = clean_rel(dest).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let (parent, name) = match clean.rsplit_once('/') {
        Some((p, n)) => (to.mkdir_all(p, 0o755, opts.owner.unwrap_or((0, 0)))?, cstr(n)?),
        None => (to.mkdir_all("", 0o755, opts.owner.unwrap_or((0, 0)))?, cstr(&clean)?),
    };
    remove_non_dir(parent.as_raw_fd(), &name)?;
    let f = openat(parent.as_raw_fd(), &name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)?;
    let mut f = File::from(f);
    f.write_all(data)?;
    let (uid, gid) = opts.owner.unwrap_or((0, 0));
    cvt(unsafe { libc::fchown(f.as_raw_fd(), uid, gid) })?;
    cvt(unsafe { libc::fchmod(f.as_raw_fd(), opts.mode.unwrap_or(0o644)) })?;
    Ok(())
}

fn set_times(dir: RawFd, name: &CStr, st: &libc::stat) -> io::Result<()> {
    let ts = [
        libc::timespec { tv_sec: st.st_atime, tv_nsec: st.st_atime_nsec },
        libc::timespec { tv_sec: st.st_mtime, tv_nsec: st.st_mtime_nsec },
    ];
    let flags = if name.to_bytes().is_empty() { libc::AT_EMPTY_PATH } else { libc::AT_SYMLINK_NOFOLLOW };
    if name.to_bytes().is_empty() {
        // SAFETY: futimens on a real fd.
        cvt(unsafe { libc::futimens(dir, ts.as_ptr()) }).map(drop)
    } else {
        // SAFETY: valid fd, name and times.
        cvt(unsafe { libc::utimensat(dir, name.as_ptr(), ts.as_ptr(), flags) }).map(drop)
    }
}

/// Remove what is at `name` unless it is a directory (a file replaces a file or a link).
fn remove_non_dir(dir: RawFd, name: &CStr) -> io::Result<()> {
    match fstatat(dir, name) {
        Ok(st) if !is(&st, libc::S_IFDIR) => cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) }).map(drop),
        Ok(_) => Err(io::Error::other(format!("cannot copy to {}: it is a directory", name.to_string_lossy()))),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

fn copy_entry(sdir: RawFd, sname: &CStr, st: &libc::stat, ddir: RawFd, dname: &CStr, opts: CopyOptions) -> io::Result<u64> {
    let kind = st.st_mode & libc::S_IFMT;
    let mode = opts.mode.unwrap_or(st.st_mode & 0o7777);
    let (uid, gid) = opts.owner.unwrap_or((st.st_uid, st.st_gid));
    match kind {
        libc::S_IFREG => {
            remove_non_dir(ddir, dname)?;
            let src = if sname.to_bytes().is_empty() { reopen(sdir, libc::O_RDONLY)? } else { openat(sdir, sname, libc::O_RDONLY, 0)? };
            let mut src = File::from(src);
            let dst = openat(ddir, dname, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)?;
            let mut dst = File::from(dst);
            let n = io::copy(&mut src, &mut dst)?;
            // chown before chmod: chown clears setuid bits.
            cvt(unsafe { libc::fchown(dst.as_raw_fd(), uid, gid) })?;
            cvt(unsafe { libc::fchmod(dst.as_raw_fd(), mode) })?;
            set_times(dst.as_raw_fd(), c"", st)?;
            Ok(n)
        }
        libc::S_IFLNK => {
            let target = readlinkat(sdir, sname)?;
            remove_non_dir(ddir, dname)?;
            let t = CString::new(target).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            cvt(unsafe { libc::symlinkat(t.as_ptr(), ddir, dname.as_ptr()) })?;
            cvt(unsafe { libc::fchownat(ddir, dname.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })?;
            set_times(ddir, dname, st)?;
            Ok(0)
        }
        libc::S_IFDIR => {
            let existed = matches!(fstatat(ddir, dname), Ok(s) if is(&s, libc::S_IFDIR));
            if !existed {
                remove_non_dir(ddir, dname)?;
                cvt(unsafe { libc::mkdirat(ddir, dname.as_ptr(), 0o700) })?;
            }
            let d = openat(ddir, dname, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            cvt(unsafe { libc::fchown(d.as_raw_fd(), uid, gid) })?;
            cvt(unsafe { libc::fchmod(d.as_raw_fd(), mode) })?;
            let s = openat(sdir, sname, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            let n = copy_dir_contents(&s, &d, opts)?;
            set_times(d.as_raw_fd(), c"", st)?;
            Ok(n)
        }
        libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
            remove_non_dir(ddir, dname)?;
            cvt(unsafe { libc::mknodat(ddir, dname.as_ptr(), kind | 0o600, st.st_rdev) })?;
            cvt(unsafe { libc::fchownat(ddir, dname.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })?;
            cvt(unsafe { libc::fchmodat(ddir, dname.as_ptr(), mode, 0) })?;
            Ok(0)
        }
        // Sockets are not copied (Docker's archive skips them too).
        _ => Ok(0),
    }
}

fn copy_dir_contents(src: &OwnedFd, dst: &OwnedFd, opts: CopyOptions) -> io::Result<u64> {
    let mut n = 0;
    for name in list_dir(src)? {
        let st = fstatat(src.as_raw_fd(), &name)?;
        n += copy_entry(src.as_raw_fd(), &name, &st, dst.as_raw_fd(), &name, opts)?;
    }
    Ok(n)
}

/// Read a whole small file inside a tree (the Dockerfile, .dockerignore), at most `max` bytes.
pub fn read_file(root: &Root, rel: &str, max: u64) -> io::Result<Option<Vec<u8>>> {
    let fd = match openat2(root.fd.as_raw_fd(), rel, libc::O_RDONLY) {
        Ok(f) => f,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = fstatat(fd.as_raw_fd(), c"")?;
    if !is(&st, libc::S_IFREG) {
        return Ok(None);
    }
    let mut buf = Vec::new();
    File::from(fd).take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::other(format!("{rel} is larger than {max} bytes")));
    }
    Ok(Some(buf))
}

/// Remove `rel` (file or whole tree) inside the tree without following symlinks; used to
/// drop what `.dockerignore` excludes from an extracted context.
pub fn remove(root: &Root, rel: &str) -> io::Result<()> {
    let (parent, name) = root.parent_of(rel)?;
    remove_at(parent.as_raw_fd(), &name)
}

fn remove_at(dir: RawFd, name: &CStr) -> io::Result<()> {
    let st = match fstatat(dir, name) {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if is(&st, libc::S_IFDIR) {
        let d = openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        for child in list_dir(&d)? {
            remove_at(d.as_raw_fd(), &child)?;
        }
        cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR) }).map(drop)
    } else {
        cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) }).map(drop)
    }
}

/// Every path in the tree (not following symlinks), parents before children.
pub fn walk_paths(root: &Root, max_entries: usize) -> io::Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    fn walk(dir: &OwnedFd, rel: &str, out: &mut Vec<(String, bool)>, max: usize) -> io::Result<()> {
        for name in list_dir(dir)? {
            if out.len() >= max {
                return Err(io::Error::other("too many files in the build context"));
            }
            let n = name.to_string_lossy();
            let r = if rel.is_empty() { n.to_string() } else { format!("{rel}/{n}") };
            let st = fstatat(dir.as_raw_fd(), &name)?;
            let d = is(&st, libc::S_IFDIR);
            out.push((r.clone(), d));
            if d {
                let sub = openat(dir.as_raw_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                walk(&sub, &r, out, max)?;
            }
        }
        Ok(())
    }
    let top = openat2(root.fd.as_raw_fd(), "", libc::O_RDONLY | libc::O_DIRECTORY)?;
    walk(&top, "", &mut out, max_entries)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    #[test]
    fn source_paths() {
        assert_eq!(source_path("./a/../b/", "COPY").unwrap(), "b");
        assert_eq!(source_path("/", "COPY").unwrap(), "");
        let e = source_path("../secret", "COPY").unwrap_err();
        assert_eq!(e.to_string(), "COPY failed: forbidden path outside the build context: ../secret ()");
        assert!(source_path("a/../../x", "COPY").is_err());
    }

    #[test]
    fn globbing() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "d/a.txt"));
        assert!(glob_match("d/*.txt", "d/a.txt"));
        assert!(glob_match("f[0-9]", "f7"));
        assert!(!glob_match("f[^0-9]", "f7"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("[", "["));
    }

    #[test]
    fn symlinks_stay_inside_and_hashes_ignore_mtime() {
        let t = tempfile::tempdir().unwrap();
        let ctx = t.path().join("ctx");
        std::fs::create_dir_all(ctx.join("d/sub")).unwrap();
        std::fs::write(ctx.join("d/a.txt"), "a").unwrap();
        std::fs::write(ctx.join("d/sub/b"), "b").unwrap();
        std::fs::write(t.path().join("outside"), "host secret").unwrap();
        symlink("/outside", ctx.join("abs")).unwrap();
        symlink("../../outside", ctx.join("d/rel")).unwrap();
        let root = Root::open(&ctx).unwrap();
        // Both links resolve inside the context, where nothing is called "outside".
        assert!(root.open_resolved("abs").is_err());
        assert!(root.open_resolved("d/rel").is_err());
        let h1 = checksum(&root, "d").unwrap();
        assert!(h1.starts_with("dir:"));
        let f = checksum(&root, "d/a.txt").unwrap();
        assert!(f.starts_with("file:"));
        // mtime does not change the key; content does.
        let ft = std::fs::File::open(ctx.join("d/a.txt")).unwrap();
        ft.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(checksum(&root, "d").unwrap(), h1);
        std::fs::write(ctx.join("d/a.txt"), "A").unwrap();
        assert_ne!(checksum(&root, "d").unwrap(), h1);
        assert_eq!(match_wildcards(&root, "d/*.txt", 100).unwrap(), vec!["d/a.txt"]);
        assert_eq!(combine_checksums(&[f.clone()]), f);
        assert!(combine_checksums(&[f.clone(), h1]).starts_with("multi:"));
    }

    #[test]
    fn copy_follows_docker_rules() {
        let t = tempfile::tempdir().unwrap();
        let ctx = t.path().join("ctx");
        let dst = t.path().join("rootfs");
        std::fs::create_dir_all(ctx.join("dir/sub")).unwrap();
        std::fs::create_dir_all(dst.join("existing")).unwrap();
        std::fs::write(ctx.join("f"), "file").unwrap();
        std::fs::set_permissions(ctx.join("f"), std::fs::Permissions::from_mode(0o751)).unwrap();
        std::fs::write(ctx.join("dir/sub/x"), "x").unwrap();
        symlink("sub/x", ctx.join("dir/link")).unwrap();
        // A destination symlink pointing out of the rootfs is resolved inside it.
        symlink(t.path(), dst.join("escape")).unwrap();
        let (from, to) = (Root::open(&ctx).unwrap(), Root::open(&dst).unwrap());
        let me = (nix_uid(), nix_gid());
        let opts = CopyOptions { owner: Some(me), mode: None };
        copy(&from, "f", &to, "/existing", false, opts).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("existing/f")).unwrap(), "file");
        assert_eq!(std::fs::metadata(dst.join("existing/f")).unwrap().mode() & 0o7777, 0o751);
        copy(&from, "f", &to, "/renamed", false, opts).unwrap();
        assert!(dst.join("renamed").is_file());
        copy(&from, "f", &to, "/new/dir/", false, opts).unwrap();
        assert!(dst.join("new/dir/f").is_file());
        copy(&from, "dir", &to, "/app", false, CopyOptions { owner: Some(me), mode: Some(0o700) }).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("app/sub/x")).unwrap(), "x");
        assert_eq!(std::fs::read_link(dst.join("app/link")).unwrap(), Path::new("sub/x"));
        assert_eq!(std::fs::metadata(dst.join("app/sub/x")).unwrap().mode() & 0o7777, 0o700);
        copy(&from, "f", &to, "/escape/", false, opts).unwrap();
        assert!(dst.join(t.path().strip_prefix("/").unwrap()).join("f").is_file(), "written inside the rootfs");
        assert!(!t.path().join("f").exists(), "nothing written through the symlink");
        write_file(&to, "/hd/file", b"heredoc", opts).unwrap();
        assert_eq!(std::fs::read(dst.join("hd/file")).unwrap(), b"heredoc");
        assert_eq!(read_file(&from, "f", 100).unwrap().unwrap(), b"file");
        assert!(read_file(&from, "nope", 100).unwrap().is_none());
        remove(&from, "dir").unwrap();
        assert!(!ctx.join("dir").exists());
        assert_eq!(walk_paths(&from, 10).unwrap(), vec![("f".to_string(), false)]);
    }

    fn nix_uid() -> u32 {
        unsafe { libc::geteuid() }
    }
    fn nix_gid() -> u32 {
        unsafe { libc::getegid() }
    }
}
