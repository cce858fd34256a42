//! Thin *at() syscall wrappers over libc.
//!
//! Hand-written on purpose: safe unpacking needs exact control over flags
//! (O_NOFOLLOW, AT_SYMLINK_NOFOLLOW, O_EXCL) on every call, relative to
//! directory fds we opened ourselves, and nix 0.29's RawFd/OwnedFd API mix
//! makes that harder to audit than these few lines.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

pub(crate) fn cstr(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in file name"))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(crate) fn open_path(path: &std::path::Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    let fd = check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn openat(dir: BorrowedFd, name: &[u8], flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    let fd = check(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a directory entry as a directory without following a symlink.
pub(crate) fn open_dir_nofollow(dir: BorrowedFd, name: &[u8]) -> io::Result<OwnedFd> {
    openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)
}

pub(crate) fn mkdirat(dir: BorrowedFd, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) }).map(drop)
}

pub(crate) fn mknodat(dir: BorrowedFd, name: &[u8], mode: u32, dev: libc::dev_t) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t, dev) }).map(drop)
}

pub(crate) fn symlinkat(target: &[u8], dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) }).map(drop)
}

/// linkat without AT_SYMLINK_FOLLOW: a symlink source is linked itself, never followed.
pub(crate) fn linkat(odir: BorrowedFd, oname: &[u8], ndir: BorrowedFd, nname: &[u8]) -> io::Result<()> {
    let o = cstr(oname)?;
    let n = cstr(nname)?;
    check(unsafe { libc::linkat(odir.as_raw_fd(), o.as_ptr(), ndir.as_raw_fd(), n.as_ptr(), 0) }).map(drop)
}

pub(crate) fn unlinkat(dir: BorrowedFd, name: &[u8], rmdir: bool) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = if rmdir { libc::AT_REMOVEDIR } else { 0 };
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) }).map(drop)
}

/// lchown-style: never follows a symlink.
pub(crate) fn lchownat(dir: BorrowedFd, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::fchownat(dir.as_raw_fd(), c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) }).map(drop)
}

pub(crate) fn fchown(fd: BorrowedFd, uid: u32, gid: u32) -> io::Result<()> {
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

pub(crate) fn fchmod(fd: BorrowedFd, mode: u32) -> io::Result<()> {
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// Only used on nodes we just created with mknodat in a private directory.
pub(crate) fn fchmodat(dir: BorrowedFd, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t, 0) }).map(drop)
}

pub(crate) fn lstatat(dir: BorrowedFd, name: &[u8]) -> io::Result<libc::stat> {
    let c = cstr(name)?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

pub(crate) fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec { tv_sec: sec as libc::time_t, tv_nsec: nsec as _ }
}

pub(crate) fn lutimensat(dir: BorrowedFd, name: &[u8], t: libc::timespec) -> io::Result<()> {
    let c = cstr(name)?;
    let times = [t, t];
    check(unsafe { libc::utimensat(dir.as_raw_fd(), c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

pub(crate) fn futimens(fd: BorrowedFd, t: libc::timespec) -> io::Result<()> {
    let times = [t, t];
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

pub(crate) fn syncfs(fd: BorrowedFd) -> io::Result<()> {
    check(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

pub(crate) fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub(crate) fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// Lists names in a directory fd (excluding . and ..).
pub(crate) fn list_dir(dir: BorrowedFd) -> io::Result<Vec<Vec<u8>>> {
    // /proc/self/fd/N resolves to the directory the fd already refers to.
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))? {
        out.push(e?.file_name().as_bytes().to_vec());
    }
    Ok(out)
}

/// Removes `name` in `dir` (recursively if a directory) without following symlinks.
pub(crate) fn remove_at(dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    let st = match lstatat(dir, name) {
        Ok(st) => st,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if is_dir(&st) {
        let sub = open_dir_nofollow(dir, name)?;
        for child in list_dir(sub.as_fd_ref())? {
            remove_at(sub.as_fd_ref(), &child)?;
        }
        unlinkat(dir, name, true)
    } else {
        unlinkat(dir, name, false)
    }
}

pub(crate) trait AsFdRef {
    fn as_fd_ref(&self) -> BorrowedFd<'_>;
}
impl AsFdRef for OwnedFd {
    fn as_fd_ref(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

pub(crate) fn flock(fd: BorrowedFd, blocking: bool) -> io::Result<bool> {
    let op = libc::LOCK_EX | if blocking { 0 } else { libc::LOCK_NB };
    loop {
        let r = unsafe { libc::flock(fd.as_raw_fd(), op) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}
