//! The container's filesystem view: the spec's mounts below the rootfs, /dev with the standard
//! nodes, pivot_root, masked and read-only paths, a read-only root.
//!
//! Mount targets are resolved inside the rootfs with openat2(RESOLVE_IN_ROOT) and mounted onto
//! through /proc/self/fd/N, so a symlink planted in the image cannot redirect a mount to the
//! host (CVE-2021-30465). Masked paths are verified by inode: the /dev/null bound over them is
//! the node we just created, opened O_NOFOLLOW and checked to be char 1:3 (CVE-2025-31133).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use crate::cgroups::Hierarchy;
use crate::sys::{fd_path, open_in_root, Syscall};
use crate::OciError;

/// Mount flags and data parsed from OCI mount options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOpts {
    pub flags: libc::c_ulong,
    /// Propagation to apply after mounting (MS_PRIVATE|MS_REC ...), 0 for none.
    pub propagation: libc::c_ulong,
    /// Filesystem-specific options, comma-joined (size=, mode=, ...).
    pub data: String,
}

/// Parses options like runc: known flag words set or clear flags, propagation words are kept
/// apart (they need their own mount call), everything else is filesystem data.
pub fn parse_options(opts: &[String]) -> MountOpts {
    let mut m = MountOpts::default();
    let mut data = Vec::new();
    for o in opts {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match o.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "atime" => (0, libc::MS_NOATIME),
            "noatime" => (libc::MS_NOATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable" => {
                let rec = if o.starts_with('r') { libc::MS_REC } else { 0 };
                let kind = match o.trim_start_matches('r') {
                    "private" => libc::MS_PRIVATE,
                    "shared" => libc::MS_SHARED,
                    "slave" => libc::MS_SLAVE,
                    _ => libc::MS_UNBINDABLE,
                };
                m.propagation = kind | rec;
                continue;
            }
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        m.flags = (m.flags | set) & !clear;
    }
    m.data = data.join(",");
    m
}

/// The default device nodes every container gets (OCI runtime spec "Default Devices").
pub fn default_devices() -> Vec<(&'static str, u32, u32)> {
    vec![("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7), ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0)]
}

/// Opens (creating it and missing parents inside the root if needed) the mount target `dest`
/// below `root`, as an O_PATH fd. `dir` chooses what to create for a missing last component.
pub fn ensure_target(root: &OwnedFd, dest: &Path, dir: bool) -> io::Result<OwnedFd> {
    if let Ok(fd) = open_in_root(root.as_raw_fd(), dest, libc::O_PATH) {
        return Ok(fd);
    }
    let comps: Vec<_> = dest.components().filter(|c| matches!(c, std::path::Component::Normal(_))).collect();
    let mut cur = open_in_root(root.as_raw_fd(), Path::new("/"), libc::O_PATH | libc::O_DIRECTORY)?;
    let mut sofar = PathBuf::from("/");
    for (i, c) in comps.iter().enumerate() {
        sofar.push(c);
        let last = i + 1 == comps.len();
        match open_in_root(root.as_raw_fd(), &sofar, libc::O_PATH) {
            Ok(fd) => {
                cur = fd;
                continue;
            }
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
            Err(_) => {}
        }
        let name = crate::sys::cstr(Path::new(c.as_os_str()))?;
        if last && !dir {
            // SAFETY: plain openat relative to our directory fd; O_NOFOLLOW|O_EXCL.
            let fd = unsafe { libc::openat(cur.as_raw_fd(), name.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_WRONLY, 0o644) };
            if fd < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                return Err(io::Error::last_os_error());
            }
            if fd >= 0 {
                unsafe { libc::close(fd) };
            }
        } else {
            let r = unsafe { libc::mkdirat(cur.as_raw_fd(), name.as_ptr(), 0o755) };
            if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                return Err(io::Error::last_os_error());
            }
        }
        cur = open_in_root(root.as_raw_fd(), &sofar, libc::O_PATH)?;
    }
    Ok(cur)
}

/// What the rootfs setup needs besides the spec.
pub struct RootfsPlan<'a> {
    pub rootfs: PathBuf,
    pub spec: &'a Spec,
    /// cgroup v1 hierarchies (for a `cgroup` mount), or empty on v2.
    pub hierarchies: &'a [Hierarchy],
    pub cgroup_v2: bool,
}

fn is_dev_tmpfs(m: &Mount) -> bool {
    m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs")
}

/// Phase one, in the new mount namespace before pivot_root: make "/" a slave (host mounts and
/// unmounts still propagate in, ours never out), bind the rootfs onto itself, then every mount.
pub fn mount_all(sys: &dyn Syscall, plan: &RootfsPlan) -> Result<(), OciError> {
    let err = |what: String| move |e: io::Error| OciError::Setup(format!("{what}: {e}"));
    sys.mount(None, Path::new("/"), None, libc::MS_SLAVE | libc::MS_REC, None).map_err(err("making / a slave mount".into()))?;
    sys.mount(Some(&plan.rootfs), &plan.rootfs, None, libc::MS_BIND | libc::MS_REC, None).map_err(err("binding the rootfs".into()))?;
    let root = crate::sys::open_path(&plan.rootfs, libc::O_PATH | libc::O_DIRECTORY).map_err(err(format!("opening {}", plan.rootfs.display())))?;
    let mut dev_tmpfs = false;
    for m in plan.spec.mounts().as_deref().unwrap_or_default() {
        mount_one(sys, &root, plan, m)?;
        dev_tmpfs |= is_dev_tmpfs(m);
    }
    if dev_tmpfs {
        setup_dev(sys, &plan.rootfs, plan.spec)?;
    }
    Ok(())
}

fn mount_one(sys: &dyn Syscall, root: &OwnedFd, plan: &RootfsPlan, m: &Mount) -> Result<(), OciError> {
    let dest = m.destination();
    let shown = dest.display().to_string();
    let err = |what: &'static str| {
        let shown = shown.clone();
        move |e: io::Error| OciError::Setup(format!("{what} {shown}: {e}"))
    };
    if !dest.is_absolute() {
        return Err(OciError::Setup(format!("mount destination {shown} is not absolute")));
    }
    let typ = m.typ().clone().unwrap_or_else(|| "bind".into());
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let is_bind = opts.flags & libc::MS_BIND != 0 || typ == "bind";
    let source = m.source().clone().unwrap_or_default();
    if typ == "cgroup" {
        return mount_cgroups(sys, root, plan, dest, &opts);
    }
    let dir = !is_bind || std::fs::metadata(&source).map(|s| s.is_dir()).unwrap_or(true);
    let mut target = ensure_target(root, dest, dir).map_err(err("creating mount point"))?;
    if typ == "proc" || typ == "sysfs" {
        // A kernel filesystem goes exactly where the spec says: an image whose /proc is a
        // symlink would get it elsewhere, and tools that trust /proc/self/... would be fooled
        // (CVE-2019-16884, CVE-2023-28642).
        target = crate::sys::open_in_root_no_symlinks(root.as_raw_fd(), dest, libc::O_PATH).map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                OciError::Setup(format!("mount destination {shown} is a symlink in the rootfs; refusing to mount {typ} there"))
            } else {
                OciError::Setup(format!("opening mount point {shown}: {e}"))
            }
        })?;
    }
    let tpath = fd_path(&target);
    let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
    if is_bind {
        let flags = libc::MS_BIND | (opts.flags & libc::MS_REC);
        sys.mount(Some(&source), &tpath, None, flags, None).map_err(err("bind-mounting"))?;
        // Bind mounts ignore other flags on the first call: remount to apply ro/nosuid/...
        let extra = opts.flags & !(libc::MS_BIND | libc::MS_REC | libc::MS_REMOUNT);
        if extra != 0 {
            let target2 = open_in_root(root.as_raw_fd(), dest, libc::O_PATH).map_err(err("reopening"))?;
            sys.mount(None, &fd_path(&target2), None, libc::MS_BIND | libc::MS_REMOUNT | extra, None).map_err(err("remounting"))?;
        }
    } else {
        let src = if source.as_os_str().is_empty() { PathBuf::from(&typ) } else { source };
        // sysfs/cgroup mounted read-only stay so; others get their flags in one call.
        sys.mount(Some(&src), &tpath, Some(&typ), opts.flags & !libc::MS_REMOUNT, data).map_err(err("mounting"))?;
    }
    if opts.propagation != 0 {
        let target2 = open_in_root(root.as_raw_fd(), dest, libc::O_PATH).map_err(err("reopening"))?;
        sys.mount(None, &fd_path(&target2), None, opts.propagation, None).map_err(err("setting propagation on"))?;
    }
    Ok(())
}

/// The `cgroup` mount: on v2 one cgroup2 mount; on v1 a tmpfs with one mount per hierarchy,
/// each showing the container's own cgroup (the cgroup namespace's root), then the tmpfs
/// remounted read-only if the spec says so.
fn mount_cgroups(sys: &dyn Syscall, root: &OwnedFd, plan: &RootfsPlan, dest: &Path, opts: &MountOpts) -> Result<(), OciError> {
    let err = |w: String| move |e: io::Error| OciError::Setup(format!("{w}: {e}"));
    let target = ensure_target(root, dest, true).map_err(err(format!("creating {}", dest.display())))?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | (opts.flags & libc::MS_RELATIME);
    if plan.cgroup_v2 {
        return sys
            .mount(Some(Path::new("cgroup2")), &fd_path(&target), Some("cgroup2"), flags | (opts.flags & libc::MS_RDONLY), None)
            .map_err(err("mounting cgroup2".into()));
    }
    sys.mount(Some(Path::new("tmpfs")), &fd_path(&target), Some("tmpfs"), flags, Some("mode=755")).map_err(err("mounting the cgroup tmpfs".into()))?;
    for h in plan.hierarchies {
        let sub = dest.join(&h.name);
        let t = ensure_target(root, &sub, true).map_err(err(format!("creating {}", sub.display())))?;
        sys.mount(Some(Path::new("cgroup")), &fd_path(&t), Some("cgroup"), flags | (opts.flags & libc::MS_RDONLY), Some(&h.mount_data()))
            .map_err(err(format!("mounting cgroup {}", h.name)))?;
    }
    if opts.flags & libc::MS_RDONLY != 0 {
        let t = open_in_root(root.as_raw_fd(), dest, libc::O_PATH).map_err(err("reopening the cgroup tmpfs".into()))?;
        sys.mount(None, &fd_path(&t), None, libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | flags, None)
            .map_err(err("remounting the cgroup tmpfs read-only".into()))?;
    }
    Ok(())
}

/// /dev on its tmpfs: the default nodes plus the spec's devices, and the standard links.
fn setup_dev(sys: &dyn Syscall, rootfs: &Path, spec: &Spec) -> Result<(), OciError> {
    let err = |w: String| move |e: io::Error| OciError::Setup(format!("{w}: {e}"));
    let spec_devs: Vec<LinuxDevice> = spec.linux().as_ref().and_then(|l| l.devices().clone()).unwrap_or_default();
    let mut nodes: Vec<(PathBuf, libc::mode_t, libc::dev_t, u32, u32)> = Vec::new();
    for (p, maj, min) in default_devices() {
        if !spec_devs.iter().any(|d| d.path() == Path::new(p)) {
            nodes.push((p.into(), libc::S_IFCHR | 0o666, libc::makedev(maj, min), 0, 0));
        }
    }
    for d in &spec_devs {
        let kind = match d.typ() {
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            _ => libc::S_IFCHR,
        };
        let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
        nodes.push((d.path().clone(), kind | mode, libc::makedev(d.major() as u32, d.minor() as u32), d.uid().unwrap_or(0), d.gid().unwrap_or(0)));
    }
    // Every node is made relative to its parent directory resolved inside the rootfs: a path
    // joined onto the host path of the rootfs would follow an image's `dev -> /somewhere`
    // symlink out to the host. (Still before pivot_root, so "/" is the host's.)
    let root = crate::sys::open_path(rootfs, libc::O_PATH | libc::O_DIRECTORY).map_err(err(format!("opening {}", rootfs.display())))?;
    let in_dir = |p: &Path| -> Result<(OwnedFd, PathBuf), OciError> {
        let parent = p.parent().unwrap_or(Path::new("/dev"));
        let dir = ensure_target(&root, parent, true).map_err(err(format!("creating {}", parent.display())))?;
        let name = p.file_name().ok_or_else(|| OciError::Setup(format!("device path {} has no name", p.display())))?;
        let path = fd_path(&dir).join(name);
        Ok((dir, path))
    };
    // mknod obeys the umask; the spec's modes are meant exactly (no chmod afterwards, which
    // would follow a symlink swapped in meanwhile).
    let old_umask = unsafe { libc::umask(0) };
    let made = (|| -> Result<(), OciError> {
        for (p, mode, dev, uid, gid) in nodes {
            if !p.starts_with("/dev") || p.components().any(|c| c == std::path::Component::ParentDir) {
                return Err(OciError::Setup(format!("device path {} is not under /dev", p.display())));
            }
            let (_dir, node) = in_dir(&p)?;
            sys.mknod(&node, mode, dev).map_err(err(format!("mknod {}", p.display())))?;
            sys.chown(&node, uid, gid).map_err(err(format!("chown {}", p.display())))?;
        }
        Ok(())
    })();
    unsafe { libc::umask(old_umask) };
    made?;
    for (target, link) in [("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"), ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"), ("pts/ptmx", "/dev/ptmx")] {
        let (_dir, l) = in_dir(Path::new(link))?;
        let _ = std::fs::remove_file(&l);
        sys.symlink(Path::new(target), &l).map_err(err(format!("symlink {link}")))?;
    }
    Ok(())
}

/// Phase two, after pivot_root (paths are container paths now, /proc is the container's):
/// masked paths, read-only paths, and the read-only root.
pub fn finish(sys: &dyn Syscall, spec: &Spec) -> Result<(), OciError> {
    let linux = spec.linux().as_ref();
    let root = crate::sys::open_path(Path::new("/"), libc::O_PATH | libc::O_DIRECTORY).map_err(|e| OciError::Setup(format!("opening /: {e}")))?;
    let masked = linux.and_then(|l| l.masked_paths().clone()).unwrap_or_default();
    if !masked.is_empty() {
        let null = open_in_root(root.as_raw_fd(), Path::new("/dev/null"), libc::O_PATH | libc::O_NOFOLLOW)
            .map_err(|e| OciError::Setup(format!("opening /dev/null: {e}")))?;
        verify_null(&null)?;
        for p in &masked {
            mask_path(sys, &root, &null, Path::new(p))?;
        }
    }
    for p in linux.and_then(|l| l.readonly_paths().clone()).unwrap_or_default() {
        readonly_path(sys, &root, Path::new(&p))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        sys.mount(None, Path::new("/"), None, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY, None)
            .map_err(|e| OciError::Setup(format!("remounting / read-only: {e}")))?;
    }
    Ok(())
}

/// With a terminal, the container's `/dev/console` is its pty (`pts`), as runc and Docker make
/// it: programs that write to the console (init systems, getty) reach the user's terminal.
/// Done after pivot_root, in the container's own /dev (a tmpfs of ours); `O_NOFOLLOW` refuses
/// a symlink there rather than create or mount through it.
pub fn bind_console(sys: &dyn Syscall, pts: &Path) -> Result<(), OciError> {
    let console = Path::new("/dev/console");
    let c = std::ffi::CString::new("/dev/console").expect("no NUL");
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_CLOEXEC, 0o600) };
    let fd = crate::sys::check(fd).map_err(|e| OciError::Setup(format!("creating /dev/console: {e}")))?;
    unsafe { libc::close(fd) };
    sys.mount(Some(pts), console, None, libc::MS_BIND, None).map_err(|e| OciError::Setup(format!("mounting the pty on /dev/console: {e}")))
}

/// The node we bind over masked files must really be the null device.
fn verify_null(fd: &OwnedFd) -> Result<(), OciError> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    if r < 0 || st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != libc::makedev(1, 3) {
        return Err(OciError::Setup("/dev/null is not the null device; refusing to mask paths with it".into()));
    }
    Ok(())
}

fn mask_path(sys: &dyn Syscall, root: &OwnedFd, null: &OwnedFd, p: &Path) -> Result<(), OciError> {
    let target = match open_in_root(root.as_raw_fd(), p, libc::O_PATH | libc::O_NOFOLLOW) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => return Ok(()),
        Err(e) => return Err(OciError::Setup(format!("masking {}: {e}", p.display()))),
    };
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    unsafe { libc::fstat(target.as_raw_fd(), &mut st) };
    let r = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        sys.mount(Some(Path::new("tmpfs")), &fd_path(&target), Some("tmpfs"), libc::MS_RDONLY, None)
    } else {
        sys.mount(Some(&fd_path(null)), &fd_path(&target), None, libc::MS_BIND, None)
    };
    r.map_err(|e| OciError::Setup(format!("masking {}: {e}", p.display())))
}

fn readonly_path(sys: &dyn Syscall, root: &OwnedFd, p: &Path) -> Result<(), OciError> {
    let target = match open_in_root(root.as_raw_fd(), p, libc::O_PATH | libc::O_NOFOLLOW) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => return Ok(()),
        Err(e) => return Err(OciError::Setup(format!("read-only {}: {e}", p.display()))),
    };
    let tp = fd_path(&target);
    sys.mount(Some(&tp), &tp, None, libc::MS_BIND | libc::MS_REC, None).map_err(|e| OciError::Setup(format!("binding {}: {e}", p.display())))?;
    let again = open_in_root(root.as_raw_fd(), p, libc::O_PATH | libc::O_NOFOLLOW).map_err(|e| OciError::Setup(format!("{}: {e}", p.display())))?;
    // Keep the flags the mount already has (proc's nosuid/nodev/noexec), add read-only.
    let keep = mount_flags(&again);
    sys.mount(None, &fd_path(&again), None, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep, None)
        .map_err(|e| OciError::Setup(format!("remounting {} read-only: {e}", p.display())))
}

/// MS_NOSUID/NODEV/NOEXEC of the mount `fd` is on (statvfs flags).
fn mount_flags(fd: &OwnedFd) -> libc::c_ulong {
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut s) } < 0 {
        return libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    }
    let mut f = 0;
    if s.f_flag & libc::ST_NOSUID != 0 {
        f |= libc::MS_NOSUID;
    }
    if s.f_flag & libc::ST_NODEV != 0 {
        f |= libc::MS_NODEV;
    }
    if s.f_flag & libc::ST_NOEXEC != 0 {
        f |= libc::MS_NOEXEC;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Recorder;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let m = parse_options(&s(&["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]));
        assert_eq!(m.flags, libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV);
        assert_eq!(m.data, "mode=1777,size=65536k");
        let m = parse_options(&s(&["rbind", "ro", "rprivate"]));
        assert_eq!(m.flags, libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
        assert_eq!(m.propagation, libc::MS_PRIVATE | libc::MS_REC);
        let m = parse_options(&s(&["ro", "rw", "slave"]));
        assert_eq!((m.flags, m.propagation), (0, libc::MS_SLAVE));
    }

    /// A real (unprivileged) tree: ensure_target creates missing dirs and files inside the
    /// root, and an absolute symlink in the "image" resolves inside it, not on the host.
    #[test]
    fn mount_targets_stay_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let host = t.path().join("host");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::os::unix::fs::symlink(&host, root.join("evil")).unwrap();
        let rfd = crate::sys::open_path(&root, libc::O_PATH | libc::O_DIRECTORY).unwrap();
        ensure_target(&rfd, Path::new("/a/b/c"), true).unwrap();
        assert!(root.join("a/b/c").is_dir());
        ensure_target(&rfd, Path::new("/etc/hostname"), false).unwrap();
        assert!(root.join("etc/hostname").is_file());
        // A symlink to a host path resolves inside the root; dangling there, it is refused.
        assert!(ensure_target(&rfd, Path::new("/evil/x"), true).is_err());
        assert!(std::fs::read_dir(&host).unwrap().next().is_none(), "created through the symlink on the host");
        std::fs::create_dir_all(root.join(host.strip_prefix("/").unwrap())).unwrap();
        ensure_target(&rfd, Path::new("/evil/x"), true).unwrap();
        assert!(std::fs::read_dir(&host).unwrap().next().is_none(), "created through the symlink on the host");
        assert!(root.join(host.strip_prefix("/").unwrap()).join("x").is_dir());
    }

    #[test]
    fn bind_with_ro_is_bind_then_remount_and_propagation_is_separate() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": root},
            "mounts": [
                {"destination": "/data", "type": "bind", "source": src, "options": ["rbind", "ro", "rprivate"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "ro"]}
            ],
            "linux": {"devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438}]}
        }))
        .unwrap();
        let h = vec![Hierarchy { name: "memory".into(), controllers: vec!["memory".into()], mount: "/sys/fs/cgroup/memory".into() }];
        let plan = RootfsPlan { rootfs: root.clone(), spec: &spec, hierarchies: &h, cgroup_v2: false };
        let r = Recorder::default();
        mount_all(&r, &plan).unwrap();
        let calls = r.calls();
        assert!(calls[0].starts_with("mount - / - 0x"), "{calls:?}");
        let bind = r.pos(&format!("mount {} /proc/self/fd/", src.display())).expect("bind");
        let flags = libc::MS_BIND | libc::MS_REC;
        assert!(calls[bind].contains(&format!("{flags:#x}")), "{}", calls[bind]);
        let remount = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        assert!(calls[bind + 1].contains(&format!("{remount:#x}")), "{}", calls[bind + 1]);
        assert!(calls[bind + 2].contains(&format!("{:#x}", libc::MS_PRIVATE | libc::MS_REC)));
        // cgroup v1: tmpfs, one cgroup mount per hierarchy, read-only remount.
        let cg = calls.iter().position(|c| c.contains(" cgroup ")).unwrap() - 1;
        assert!(calls[cg].starts_with("mount tmpfs") && calls[cg].ends_with("mode=755"), "{}", calls[cg]);
        assert!(calls[cg + 1].contains(" cgroup ") && calls[cg + 1].ends_with(" memory"), "{}", calls[cg + 1]);
        assert!(calls[cg + 2].contains(&format!("{:#x}", libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC)));
        // /dev: default nodes plus the spec's, links.
        let has = |pat: &str, end: &str| calls.iter().any(|c| c.starts_with(pat) && c.ends_with(end));
        assert!(has("mknod /proc/self/fd/", "/null 20666 1:3"), "{calls:?}");
        assert!(has("mknod /proc/self/fd/", "/fuse 20666 10:229"), "{calls:?}");
        assert!(has("symlink pts/ptmx /proc/self/fd/", "/ptmx"), "{calls:?}");
        assert!(root.join("dev").is_dir());
    }

    #[test]
    fn unsafe_device_paths_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "mounts": [{"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}],
            "linux": {"devices": [{"path": "/dev/../etc/x", "type": "c", "major": 1, "minor": 3}]}
        }))
        .unwrap();
        let plan = RootfsPlan { rootfs: t.path().to_path_buf(), spec: &spec, hierarchies: &[], cgroup_v2: true };
        assert!(mount_all(&Recorder::default(), &plan).is_err());
    }
}
