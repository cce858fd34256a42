//! What `docker cp` sees in a created or exited container: its overlay with its volumes and
//! bind mounts at their destinations, as a running container's own view has them (and as
//! Docker does, which mounts them for the copy). Without this, a copy into `/data` of a stopped
//! database container would land in the overlay under its volume, where nothing ever sees it.
//!
//! The view is a private bind of the container's mounted overlay under
//! `<exec-root>/cp/<id>`, with each volume and bind mounted on it through an fd of its resolved
//! destination (symlinks clamped to the view, so an image cannot aim a mount at a host path),
//! read-only ones remounted read-only. `docker export` never sees it: it archives the overlay
//! itself. tmpfs mounts end with the container's processes, so the directory under them is what
//! a copy sees, as with Docker. Dropping the view detaches the whole tree at once; a view left
//! by a killed berthd is detached at the next start ([`sweep`]).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::mounts::{MountPoint, MountType};
use crate::engine::Engine;
use crate::error::ApiError;

/// The mount syscalls the view needs, behind a trait so the planning and the order of
/// operations are unit-tested unprivileged.
pub trait ViewMounter: Send + Sync {
    /// Bind `source` onto the directory or file that `target` is an fd of.
    fn bind(&self, source: &Path, target: RawFd, recursive: bool) -> io::Result<()>;
    /// Make the mount at `target` private, so what is mounted below it propagates nowhere.
    fn make_private(&self, target: &Path) -> io::Result<()>;
    /// Remount the bind mount that `target` is an fd of read-only.
    fn remount_ro(&self, target: RawFd) -> io::Result<()>;
    /// Detach the mount at `target` and everything below it.
    fn detach(&self, target: &Path) -> io::Result<()>;
}

/// The real mount(2) and umount2(2).
pub struct SysViewMounter;

fn fd_path(fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

impl ViewMounter for SysViewMounter {
    fn bind(&self, source: &Path, target: RawFd, recursive: bool) -> io::Result<()> {
        use nix::mount::{mount, MsFlags};
        let flags = if recursive { MsFlags::MS_BIND | MsFlags::MS_REC } else { MsFlags::MS_BIND };
        mount(Some(source), &fd_path(target), None::<&str>, flags, None::<&str>).map_err(io::Error::from)
    }
    fn make_private(&self, target: &Path) -> io::Result<()> {
        use nix::mount::{mount, MsFlags};
        mount(None::<&str>, target, None::<&str>, MsFlags::MS_PRIVATE | MsFlags::MS_REC, None::<&str>).map_err(io::Error::from)
    }
    fn remount_ro(&self, target: RawFd) -> io::Result<()> {
        use nix::mount::{mount, MsFlags};
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, &fd_path(target), None::<&str>, flags, None::<&str>).map_err(io::Error::from)
    }
    fn detach(&self, target: &Path) -> io::Result<()> {
        use nix::mount::{umount2, MntFlags};
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// One mount of the view: a host source at a container path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewMount {
    pub source: PathBuf,
    pub destination: String,
    pub recursive: bool,
    pub read_only: bool,
}

/// The volumes and binds of `mounts` as view mounts, parents first (so a volume inside a bind
/// lands in it, as at start). `volume_dir` gives a volume's data directory. tmpfs is left out.
pub fn plan(mounts: &[MountPoint], volume_dir: impl Fn(&str) -> PathBuf) -> Vec<ViewMount> {
    let mut order: Vec<&MountPoint> = mounts.iter().filter(|m| m.typ != MountType::Tmpfs).collect();
    order.sort_by_key(|m| m.destination.matches('/').count());
    order
        .into_iter()
        .map(|m| ViewMount {
            source: if m.typ == MountType::Volume { volume_dir(&m.name) } else { PathBuf::from(&m.source) },
            destination: m.destination.clone(),
            recursive: !(m.typ == MountType::Bind && m.non_recursive),
            read_only: !m.rw,
        })
        .collect()
}

/// A mounted view (see the module docs); dropping it takes it down.
pub struct CpView {
    dir: PathBuf,
    m: Box<dyn ViewMounter>,
    /// The engine and the container's mounts, to release volumes activated for the copy.
    release: Option<(Arc<Engine>, Vec<MountPoint>)>,
}

impl CpView {
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Bind `rootfs` at `dir` and mount `plan` on it.
    pub fn build(m: Box<dyn ViewMounter>, rootfs: &Path, dir: PathBuf, plan: &[ViewMount]) -> Result<CpView, ApiError> {
        let fail = |what: &str, err: io::Error| ApiError::internal(format!("preparing the container's volumes for the copy: {what}: {err}"));
        take_down(m.as_ref(), &dir);
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail("creating the view directory", e))?;
        }
        std::fs::create_dir(&dir).map_err(|e| fail("creating the view directory", e))?;
        // From here on, Drop takes down whatever was mounted.
        let view = CpView { dir, m, release: None };
        let d = std::fs::File::open(&view.dir).map_err(|e| fail("opening the view directory", e))?;
        view.m.bind(rootfs, d.as_raw_fd(), false).map_err(|e| fail("binding the rootfs", e))?;
        view.m.make_private(&view.dir).map_err(|e| fail("making the view private", e))?;
        for vm in plan {
            let Ok(meta) = std::fs::metadata(&vm.source) else {
                // A bind source removed on the host since the container last ran: nothing to
                // show there (a start would create it again).
                tracing::debug!(source = %vm.source.display(), "docker cp: a mount source is missing; its destination shows the overlay");
                continue;
            };
            let dest = super::mounts::resolve_in_rootfs(&view.dir, &vm.destination)?;
            let target = open_or_create(&view.dir, &dest, meta.is_dir()).map_err(|e| fail(&vm.destination, e))?;
            view.m.bind(&vm.source, target.as_raw_fd(), vm.recursive).map_err(|e| fail(&vm.destination, e))?;
            if vm.read_only {
                // The fd names the directory under the new mount; the mount's root is a new open.
                let mounted = super::archive::open_in_root(&view.dir, &dest).map_err(|e| fail(&vm.destination, e))?;
                view.m.remount_ro(mounted.as_raw_fd()).map_err(|e| fail(&vm.destination, e))?;
            }
        }
        Ok(view)
    }
}

/// An fd of `dest` (already resolved, symlink-free) in `root`, creating it as a directory or an
/// empty file, as the runtime does for a mount destination at start.
fn open_or_create(root: &Path, dest: &str, dir: bool) -> io::Result<std::os::fd::OwnedFd> {
    match super::archive::open_in_root(root, dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        r => return r,
    }
    let (parent, name) = dest.rsplit_once('/').unwrap_or(("", dest));
    let parent = super::archive::open_in_root_following(root, if parent.is_empty() { "/" } else { parent })?;
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let pfd = parent.as_raw_fd();
    // SAFETY: plain *at syscalls on an fd we own and a NUL-terminated name; a created file's fd
    // is closed at once.
    let r = unsafe {
        if dir {
            libc::mkdirat(pfd, c.as_ptr(), 0o755)
        } else {
            let fd = libc::openat(pfd, c.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o644);
            if fd >= 0 {
                libc::close(fd);
            }
            fd.min(0)
        }
    };
    if r != 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::AlreadyExists {
            return Err(err);
        }
    }
    super::archive::open_in_root(root, dest)
}

/// Detach a view and remove its (then empty) directory. Never a recursive delete: if the detach
/// failed, the volumes would still be below.
fn take_down(m: &dyn ViewMounter, dir: &Path) {
    if !dir.exists() {
        return;
    }
    if let Err(err) = m.detach(dir) {
        tracing::warn!(dir = %dir.display(), "docker cp: detaching a container's view: {err}");
        return;
    }
    if let Err(err) = std::fs::remove_dir(dir) {
        tracing::warn!(dir = %dir.display(), "docker cp: removing a container's view directory: {err}");
    }
}

impl Drop for CpView {
    fn drop(&mut self) {
        take_down(self.m.as_ref(), &self.dir);
        if let Some((e, mounts)) = self.release.take() {
            super::mounts::release(&e, &mounts);
        }
    }
}

/// Where the view of container `id` is mounted.
fn view_dir(e: &Engine, id: &str) -> PathBuf {
    e.config.exec_root.join("cp").join(&id[..16.min(id.len())])
}

/// The view of a stopped container whose overlay is mounted at `rootfs`. Its volumes are
/// activated (driver options mounted) for the copy and released after.
pub fn open(e: &Arc<Engine>, c: &super::store::Container, rootfs: &Path) -> Result<CpView, ApiError> {
    for m in c.mounts.iter().filter(|m| m.typ == MountType::Volume) {
        e.volumes.activate(&m.name)?;
    }
    let plan = plan(&c.mounts, |name| e.volumes.mountpoint(name));
    match CpView::build(Box::new(SysViewMounter), rootfs, view_dir(e, &c.id), &plan) {
        Ok(mut v) => {
            v.release = Some((Arc::clone(e), c.mounts.clone()));
            Ok(v)
        }
        Err(err) => {
            super::mounts::release(e, &c.mounts);
            Err(err)
        }
    }
}

/// Take down views left by a berthd that was killed during a copy.
pub fn sweep(exec_root: &Path) {
    let Ok(dir) = std::fs::read_dir(exec_root.join("cp")) else { return };
    for entry in dir.flatten() {
        tracing::info!(dir = %entry.path().display(), "taking down a docker cp view left by an interrupted copy");
        take_down(&SysViewMounter, &entry.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn mp(typ: MountType, name: &str, source: &str, destination: &str, rw: bool) -> MountPoint {
        MountPoint {
            typ,
            name: name.into(),
            source: source.into(),
            destination: destination.into(),
            rw,
            mode: String::new(),
            propagation: String::new(),
            no_copy: false,
            tmpfs_options: String::new(),
            non_recursive: false,
        }
    }

    #[test]
    fn plan_keeps_volumes_and_binds_parents_first_without_tmpfs() {
        let mut nr = mp(MountType::Bind, "", "/host/b", "/srv/b", true);
        nr.non_recursive = true;
        let mounts = vec![
            mp(MountType::Volume, "inner", "", "/srv/b/vol", false),
            mp(MountType::Tmpfs, "", "", "/scratch", true),
            nr,
            mp(MountType::Volume, "data", "", "/data", true),
        ];
        let p = plan(&mounts, |n| PathBuf::from(format!("/vols/{n}")));
        let got: Vec<(&str, String, bool, bool)> =
            p.iter().map(|v| (v.destination.as_str(), v.source.display().to_string(), v.recursive, v.read_only)).collect();
        assert_eq!(
            got,
            [
                ("/data", "/vols/data".to_string(), true, false),
                ("/srv/b", "/host/b".to_string(), false, false),
                ("/srv/b/vol", "/vols/inner".to_string(), true, true),
            ]
        );
    }

    /// Records what would be mounted where (fd targets read back as paths). Its bind of the
    /// rootfs mounts nothing, so it stands in for the image by planting `plant` (a symlink
    /// name and target) in the view at that moment.
    struct Recorder {
        log: Arc<Mutex<Vec<String>>>,
        plant: Option<Box<dyn Fn(&Path) -> io::Result<()> + Send + Sync>>,
    }

    impl ViewMounter for Recorder {
        fn bind(&self, source: &Path, target: RawFd, recursive: bool) -> io::Result<()> {
            let t = std::fs::read_link(fd_path(target))?;
            if let (Some(plant), false) = (&self.plant, recursive) {
                plant(&t)?;
            }
            self.log.lock().unwrap().push(format!("bind {} {} {recursive}", source.display(), t.display()));
            Ok(())
        }
        fn make_private(&self, target: &Path) -> io::Result<()> {
            self.log.lock().unwrap().push(format!("private {}", target.display()));
            Ok(())
        }
        fn remount_ro(&self, target: RawFd) -> io::Result<()> {
            let t = std::fs::read_link(fd_path(target))?;
            self.log.lock().unwrap().push(format!("ro {}", t.display()));
            Ok(())
        }
        fn detach(&self, target: &Path) -> io::Result<()> {
            self.log.lock().unwrap().push(format!("detach {}", target.display()));
            // What the detach would take away: the stand-in for the rootfs content.
            for e in std::fs::read_dir(target)? {
                let p = e?.path();
                if p.is_dir() && !p.is_symlink() { std::fs::remove_dir_all(&p)? } else { std::fs::remove_file(&p)? }
            }
            Ok(())
        }
    }

    #[test]
    fn build_mounts_on_resolved_destinations_and_drop_takes_the_view_down() {
        let t = tempfile::tempdir().unwrap();
        let rootfs = t.path().join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let view = t.path().join("cp").join("abc");
        let vol = t.path().join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        let file_src = t.path().join("file-src");
        std::fs::write(&file_src, "x").unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let plan = vec![
            ViewMount { source: vol.clone(), destination: "/data/db".into(), recursive: true, read_only: true },
            ViewMount { source: file_src.clone(), destination: "/etc/app.conf".into(), recursive: true, read_only: false },
            ViewMount { source: t.path().join("gone"), destination: "/gone".into(), recursive: true, read_only: false },
        ];
        let v = CpView::build(Box::new(Recorder { log: log.clone(), plant: None }), &rootfs, view.clone(), &plan).unwrap();
        assert_eq!(v.path(), view);
        assert!(view.join("data/db").is_dir(), "a missing directory destination is created");
        assert!(view.join("etc/app.conf").is_file(), "a file bind gets a file to mount on");
        assert!(!view.join("gone").exists(), "a missing source is skipped");
        drop(v);
        let vd = view.display().to_string();
        assert_eq!(
            *log.lock().unwrap(),
            [
                format!("bind {} {vd} false", rootfs.display()),
                format!("private {vd}"),
                format!("bind {} {vd}/data/db true", vol.display()),
                format!("ro {vd}/data/db"),
                format!("bind {} {vd}/etc/app.conf true", file_src.display()),
                format!("detach {vd}"),
            ]
        );
        assert!(!view.exists(), "the view directory is removed after the detach");
    }

    #[test]
    fn an_image_symlink_cannot_aim_a_mount_outside_the_view() {
        let t = tempfile::tempdir().unwrap();
        let rootfs = t.path().join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let vol = t.path().join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let build = |link_to: PathBuf, name: &str| {
            let log = Arc::new(Mutex::new(Vec::new()));
            // The image has /etc and a symlink /data -> `link_to` (absolute).
            let plant = move |view: &Path| {
                std::fs::create_dir(view.join("etc"))?;
                std::os::unix::fs::symlink(&link_to, view.join("data"))
            };
            let rec = Recorder { log: log.clone(), plant: Some(Box::new(plant)) };
            let plan = vec![ViewMount { source: vol.clone(), destination: "/data/sub".into(), recursive: true, read_only: false }];
            let r = CpView::build(Box::new(rec), &rootfs, t.path().join("cp").join(name), &plan).map(drop);
            let binds: Vec<String> = log.lock().unwrap().iter().filter(|l| l.starts_with(&format!("bind {} ", vol.display()))).cloned().collect();
            (r, binds)
        };
        // Aimed at a host path: inside the view that path does not exist, so it is refused.
        let (r, binds) = build(outside.clone(), "a");
        assert!(matches!(r, Err(ApiError::BadParameter(_))), "{r:?}");
        assert!(binds.is_empty(), "{binds:?}");
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "nothing was created in the host directory");
        // Aimed at /etc: the image's own /etc, inside the view.
        let (r, binds) = build(PathBuf::from("/etc"), "b");
        r.unwrap();
        let view = t.path().join("cp").join("b").display().to_string();
        assert_eq!(binds, [format!("bind {} {view}/etc/sub true", vol.display())]);
    }
}
