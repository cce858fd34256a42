//! Every privileged call the container setup makes, behind one trait ([`Syscall`]) so the
//! sequencing logic (which mount when, caps before or after the uid switch, when seccomp goes
//! in) is unit-tested unprivileged with [`Recorder`], the way youki does it. [`Linux`] is the
//! real thing: thin wrappers over libc, hand-written because each call needs exact flags.

use std::cell::RefCell;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The privileged operations of container setup.
pub trait Syscall {
    fn mount(&self, source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: libc::c_ulong, data: Option<&str>) -> io::Result<()>;
    fn umount2(&self, target: &Path, flags: libc::c_int) -> io::Result<()>;
    fn pivot_root(&self, new_root: &Path) -> io::Result<()>;
    fn chdir(&self, p: &Path) -> io::Result<()>;
    fn sethostname(&self, name: &str) -> io::Result<()>;
    fn setdomainname(&self, name: &str) -> io::Result<()>;
    fn mknod(&self, p: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()>;
    fn chown(&self, p: &Path, uid: u32, gid: u32) -> io::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    fn write_file(&self, p: &Path, data: &str) -> io::Result<()>;
    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> io::Result<()>;
    fn unshare(&self, flags: libc::c_int) -> io::Result<()>;
    fn setns(&self, fd: RawFd, nstype: libc::c_int) -> io::Result<()>;
    /// setgroups + setresgid + setresuid (with PR_SET_KEEPCAPS around it, so the capability
    /// sets survive the switch to a non-root uid until [`Syscall::set_caps`] sets them).
    fn set_ids(&self, uid: u32, gid: u32, groups: &[u32]) -> io::Result<()>;
    /// Drops every capability not in `keep` from the bounding set (needs CAP_SETPCAP, so it
    /// runs before the uid switch).
    fn drop_bounding(&self, keep: &[String]) -> io::Result<()>;
    /// Permitted, effective, inheritable, and the ambient set (cleared, then raised); each
    /// clipped to what the process still holds, as podman does on hosts whose own bounding
    /// set is smaller than Docker's defaults.
    fn set_caps(&self, caps: &CapSets) -> io::Result<()>;
    fn set_no_new_privs(&self) -> io::Result<()>;
    /// Installs one seccomp BPF program (without forcing no_new_privs: the caller decides).
    fn seccomp(&self, prog: &[seccompiler::sock_filter]) -> io::Result<()>;
    fn umask(&self, mask: u32);
}

/// Capability sets as canonical `CAP_*` names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub permitted: Vec<String>,
    pub inheritable: Vec<String>,
    pub ambient: Vec<String>,
}

/// The real system calls.
pub struct Linux;

fn opt_cstr(s: Option<&str>) -> io::Result<Option<CString>> {
    s.map(|s| CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))).transpose()
}

fn cap_set(names: &[String]) -> caps::CapsHashSet {
    names.iter().filter_map(|n| n.parse::<caps::Capability>().ok()).collect()
}

impl Syscall for Linux {
    fn mount(&self, source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: libc::c_ulong, data: Option<&str>) -> io::Result<()> {
        let src = source.map(cstr).transpose()?;
        let tgt = cstr(target)?;
        let fs = opt_cstr(fstype)?;
        let d = opt_cstr(data)?;
        // SAFETY: all pointers are NUL-terminated strings that outlive the call, or null.
        check(unsafe {
            libc::mount(
                src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                tgt.as_ptr(),
                fs.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                flags,
                d.as_ref().map_or(std::ptr::null(), |s| s.as_ptr().cast()),
            )
        })
        .map(drop)
    }
    fn umount2(&self, target: &Path, flags: libc::c_int) -> io::Result<()> {
        let t = cstr(target)?;
        check(unsafe { libc::umount2(t.as_ptr(), flags) }).map(drop)
    }
    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        // pivot_root(".", "."): the old root ends up mounted on top of the new one, and is
        // detached right after, so no put_old directory is needed (as runc does).
        self.chdir(new_root)?;
        let dot = c".";
        check(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) as libc::c_int })?;
        self.mount(None, Path::new("."), None, libc::MS_SLAVE | libc::MS_REC, None)?;
        self.umount2(Path::new("."), libc::MNT_DETACH)?;
        self.chdir(Path::new("/"))
    }
    fn chdir(&self, p: &Path) -> io::Result<()> {
        let c = cstr(p)?;
        check(unsafe { libc::chdir(c.as_ptr()) }).map(drop)
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
    }
    fn setdomainname(&self, name: &str) -> io::Result<()> {
        check(unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) }).map(drop)
    }
    fn mknod(&self, p: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
        let c = cstr(p)?;
        check(unsafe { libc::mknod(c.as_ptr(), mode, dev) }).map(drop)
    }
    fn chown(&self, p: &Path, uid: u32, gid: u32) -> io::Result<()> {
        let c = cstr(p)?;
        check(unsafe { libc::lchown(c.as_ptr(), uid, gid) }).map(drop)
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }
    fn write_file(&self, p: &Path, data: &str) -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(p)?;
        f.write_all(data.as_bytes())
    }
    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> io::Result<()> {
        let rl = libc::rlimit { rlim_cur: soft, rlim_max: hard };
        check(unsafe { libc::setrlimit(resource as _, &rl) }).map(drop)
    }
    fn unshare(&self, flags: libc::c_int) -> io::Result<()> {
        check(unsafe { libc::unshare(flags) }).map(drop)
    }
    fn setns(&self, fd: RawFd, nstype: libc::c_int) -> io::Result<()> {
        check(unsafe { libc::setns(fd, nstype) }).map(drop)
    }
    fn set_ids(&self, uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
        check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) })?;
        let g: Vec<libc::gid_t> = groups.to_vec();
        check(unsafe { libc::setgroups(g.len(), g.as_ptr()) })?;
        // Raw syscalls: glibc's wrappers broadcast to all threads, pointless here.
        check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) as libc::c_int })?;
        check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) as libc::c_int })?;
        check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) }).map(drop)
    }
    fn drop_bounding(&self, keep: &[String]) -> io::Result<()> {
        let e = |e: caps::errors::CapsError| io::Error::other(e.to_string());
        let keep = cap_set(keep);
        for cap in caps::all() {
            if !keep.contains(&cap) && caps::has_cap(None, caps::CapSet::Bounding, cap).unwrap_or(false) {
                caps::drop(None, caps::CapSet::Bounding, cap).map_err(e)?;
            }
        }
        Ok(())
    }
    fn set_caps(&self, c: &CapSets) -> io::Result<()> {
        let e = |e: caps::errors::CapsError| io::Error::other(e.to_string());
        let have = caps::read(None, caps::CapSet::Permitted).map_err(e)?;
        let clip = |n: &[String]| -> caps::CapsHashSet { cap_set(n).intersection(&have).copied().collect() };
        // Effective must stay within permitted at every step: shrink it first, then
        // permitted, then inheritable (which may only name permitted ones).
        let perm = clip(&c.permitted);
        let eff: caps::CapsHashSet = clip(&c.effective).intersection(&perm).copied().collect();
        caps::set(None, caps::CapSet::Effective, &eff).map_err(e)?;
        caps::set(None, caps::CapSet::Permitted, &perm).map_err(e)?;
        let inh: caps::CapsHashSet = clip(&c.inheritable).intersection(&perm).copied().collect();
        caps::set(None, caps::CapSet::Inheritable, &inh).map_err(e)?;
        caps::clear(None, caps::CapSet::Ambient).map_err(e)?;
        // The kernel only takes ambient capabilities that are both permitted and inheritable
        // (runc likewise skips the others).
        for cap in clip(&c.ambient).intersection(&inh) {
            caps::raise(None, caps::CapSet::Ambient, *cap).map_err(e)?;
        }
        Ok(())
    }
    fn set_no_new_privs(&self) -> io::Result<()> {
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
    }
    fn seccomp(&self, prog: &[seccompiler::sock_filter]) -> io::Result<()> {
        #[repr(C)]
        struct SockFprog {
            len: u16,
            filter: *const seccompiler::sock_filter,
        }
        let p = SockFprog { len: prog.len() as u16, filter: prog.as_ptr() };
        // SAFETY: the kernel copies the program; `p` and `prog` outlive the call.
        let r = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &p as *const SockFprog) };
        check(r as libc::c_int).map(drop)
    }
    fn umask(&self, mask: u32) {
        unsafe { libc::umask(mask as libc::mode_t) };
    }
}

/// Records calls instead of making them; `fail_on` makes one call (by prefix) fail with EPERM.
#[derive(Default)]
pub struct Recorder {
    pub calls: RefCell<Vec<String>>,
    pub fail_on: Option<String>,
}

impl Recorder {
    fn rec(&self, s: String) -> io::Result<()> {
        let fail = self.fail_on.as_deref().is_some_and(|f| s.starts_with(f));
        self.calls.borrow_mut().push(s);
        if fail {
            Err(io::Error::from_raw_os_error(libc::EPERM))
        } else {
            Ok(())
        }
    }
    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
    /// Index of the first call starting with `prefix`.
    pub fn pos(&self, prefix: &str) -> Option<usize> {
        self.calls.borrow().iter().position(|c| c.starts_with(prefix))
    }
}

impl Syscall for Recorder {
    fn mount(&self, source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: libc::c_ulong, data: Option<&str>) -> io::Result<()> {
        self.rec(format!(
            "mount {} {} {} {:#x} {}",
            source.map_or("-".into(), |s| s.display().to_string()),
            target.display(),
            fstype.unwrap_or("-"),
            flags,
            data.unwrap_or("-")
        ))
    }
    fn umount2(&self, target: &Path, flags: libc::c_int) -> io::Result<()> {
        self.rec(format!("umount2 {} {flags}", target.display()))
    }
    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        self.rec(format!("pivot_root {}", new_root.display()))
    }
    fn chdir(&self, p: &Path) -> io::Result<()> {
        self.rec(format!("chdir {}", p.display()))
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.rec(format!("sethostname {name}"))
    }
    fn setdomainname(&self, name: &str) -> io::Result<()> {
        self.rec(format!("setdomainname {name}"))
    }
    fn mknod(&self, p: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
        self.rec(format!("mknod {} {mode:o} {}:{}", p.display(), libc::major(dev), libc::minor(dev)))
    }
    fn chown(&self, p: &Path, uid: u32, gid: u32) -> io::Result<()> {
        self.rec(format!("chown {} {uid}:{gid}", p.display()))
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.rec(format!("symlink {} {}", target.display(), link.display()))
    }
    fn write_file(&self, p: &Path, data: &str) -> io::Result<()> {
        self.rec(format!("write {} {data}", p.display()))
    }
    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> io::Result<()> {
        self.rec(format!("setrlimit {resource} {soft} {hard}"))
    }
    fn unshare(&self, flags: libc::c_int) -> io::Result<()> {
        self.rec(format!("unshare {flags:#x}"))
    }
    fn setns(&self, fd: RawFd, nstype: libc::c_int) -> io::Result<()> {
        self.rec(format!("setns {fd} {nstype:#x}"))
    }
    fn set_ids(&self, uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
        self.rec(format!("set_ids {uid}:{gid} {groups:?}"))
    }
    fn drop_bounding(&self, keep: &[String]) -> io::Result<()> {
        self.rec(format!("drop_bounding keep={}", keep.len()))
    }
    fn set_caps(&self, c: &CapSets) -> io::Result<()> {
        self.rec(format!("set_caps eff={} prm={} inh={} amb={}", c.effective.len(), c.permitted.len(), c.inheritable.len(), c.ambient.len()))
    }
    fn set_no_new_privs(&self) -> io::Result<()> {
        self.rec("no_new_privs".into())
    }
    fn seccomp(&self, prog: &[seccompiler::sock_filter]) -> io::Result<()> {
        self.rec(format!("seccomp {}", prog.len()))
    }
    fn umask(&self, mask: u32) {
        let _ = self.rec(format!("umask {mask:o}"));
    }
}

/// `openat2(root, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: resolves `path` as if
/// `root` were `/`, so symlinks in an untrusted rootfs never lead outside it.
pub fn open_in_root(root: RawFd, path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let c = cstr(rel)?;
    // SAFETY: open_how is plain integers; all-zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    let fd = unsafe { libc::syscall(libc::SYS_openat2, root, c.as_ptr(), &how as *const libc::open_how, std::mem::size_of::<libc::open_how>()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Like [`open_in_root`], but no component may be a symlink (ELOOP if one is).
pub fn open_in_root_no_symlinks(root: RawFd, path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let c = cstr(rel)?;
    // SAFETY: as in open_in_root.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    let fd = unsafe { libc::syscall(libc::SYS_openat2, root, c.as_ptr(), &how as *const libc::open_how, std::mem::size_of::<libc::open_how>()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The magic-link path of an fd, to mount onto (or from) exactly the inode we opened.
pub fn fd_path(fd: &impl AsRawFd) -> std::path::PathBuf {
    format!("/proc/self/fd/{}", fd.as_raw_fd()).into()
}

pub fn open_path(p: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(p)?;
    let fd = check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
