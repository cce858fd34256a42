//! The OCI bundle on disk: `<dir>/config.json` plus `<dir>/rootfs`, where
//! berthd mounts an overlay of the image layers (read-only lowers) and the
//! container's own upper/work directories before `runc create`.
//!
//! Overlay's legacy mount(2) data is limited to one page (4096 bytes), which a
//! deep image with long store paths exceeds. When the plain option string is
//! too long we link each layer under a short name in `<dir>/l/` (`l/0`,
//! `l/1`, ...) and pass those: overlayfs resolves the symlinks once at mount
//! time. (chdir + relative paths would also work but changes the cwd of the
//! whole multi-threaded daemon.)

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// One page: the kernel copies at most this much mount data.
pub const MAX_MOUNT_DATA: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle {0}: {1}")]
    Io(String, std::io::Error),
    #[error("mount {0}: {1}")]
    Mount(String, String),
    #[error("encoding config.json: {0}")]
    Encode(String),
    #[error("overlay options are {0} bytes even with short layer links (limit {MAX_MOUNT_DATA})")]
    TooManyLayers(usize),
    #[error("layer path {0:?} cannot be used in overlay options (contains ',' or ':')")]
    BadPath(PathBuf),
}

/// The mount operations the bundle needs, separated so the option and
/// ordering logic is testable without privileges.
pub trait Mounter {
    /// Mounts an overlay with `options` (the full "lowerdir=..,upperdir=..,workdir=.." string).
    fn mount_overlay(&self, target: &Path, options: &str) -> Result<(), BundleError>;
    /// Unmounts `target` (lazily, so a stray open file cannot wedge delete).
    fn unmount(&self, target: &Path) -> Result<(), BundleError>;
}

/// The real mount(2)/umount2(2) calls.
pub struct SysMounter;

impl Mounter for SysMounter {
    fn mount_overlay(&self, target: &Path, options: &str) -> Result<(), BundleError> {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options),
        )
        .map_err(|e| BundleError::Mount(target.display().to_string(), e.desc().to_string()))
    }

    fn unmount(&self, target: &Path) -> Result<(), BundleError> {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()), // not mounted
            Err(e) => Err(BundleError::Mount(
                target.display().to_string(),
                e.desc().to_string(),
            )),
        }
    }
}

/// A bundle directory.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
}

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |e| BundleError::Io(p.display().to_string(), e)
}

fn check(p: &Path) -> Result<String, BundleError> {
    let s = p.to_string_lossy().to_string();
    if s.contains(',') || s.contains(':') || s.contains('\\') {
        return Err(BundleError::BadPath(p.to_path_buf()));
    }
    Ok(s)
}

/// The overlay options for `lowers` (top layer first).
pub fn overlay_options(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<String, BundleError> {
    let lows = lowers
        .iter()
        .map(|p| check(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!(
        "lowerdir={},upperdir={},workdir={}",
        lows.join(":"),
        check(upper)?,
        check(work)?
    ))
}

impl Bundle {
    /// Creates `dir` and `dir/rootfs` (0711: runc and the container's users
    /// need to traverse it, nobody needs to list it).
    pub fn create(dir: impl Into<PathBuf>) -> Result<Bundle, BundleError> {
        let dir = dir.into();
        fs::create_dir_all(dir.join("rootfs")).map_err(io(&dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).map_err(io(&dir))?;
        Ok(Bundle { dir })
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// Writes config.json atomically (temp file, rename), so the runtime never
    /// sees a half-written spec after a crash of berthd. No fsync: bundles live
    /// in the exec root (tmpfs, rebuilt at every start), so surviving a power
    /// cut is not their job, and an fsync costs milliseconds per start.
    pub fn write_config(&self, spec: &oci_spec::runtime::Spec) -> Result<(), BundleError> {
        let data = serde_json::to_vec(spec).map_err(|e| BundleError::Encode(e.to_string()))?;
        let tmp = self.dir.join(".config.json.tmp");
        {
            let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&data).map_err(io(&tmp))?;
        }
        fs::rename(&tmp, self.config_path()).map_err(io(&self.dir))
    }

    /// Mounts the overlay rootfs. `layers_top_first` are the image's layer
    /// diff directories, topmost first (overlay's lowerdir order); `upper`
    /// and `work` must be on the same filesystem.
    pub fn mount_rootfs(
        &self,
        m: &dyn Mounter,
        layers_top_first: &[PathBuf],
        upper: &Path,
        work: &Path,
    ) -> Result<(), BundleError> {
        fs::create_dir_all(upper).map_err(io(upper))?;
        fs::create_dir_all(work).map_err(io(work))?;
        let mut lowers = layers_top_first.to_vec();
        if lowers.is_empty() {
            // overlay needs at least one lower; an image with no layers is empty.
            let empty = self.dir.join("empty");
            fs::create_dir_all(&empty).map_err(io(&empty))?;
            lowers.push(empty);
        }
        let mut opts = overlay_options(&lowers, upper, work)?;
        if opts.len() >= MAX_MOUNT_DATA {
            let links = self.dir.join("l");
            let _ = fs::remove_dir_all(&links);
            fs::create_dir_all(&links).map_err(io(&links))?;
            let mut short = Vec::new();
            for (i, l) in lowers.iter().enumerate() {
                let name = links.join(format!("{i:x}"));
                std::os::unix::fs::symlink(l, &name).map_err(io(&name))?;
                short.push(name);
            }
            opts = overlay_options(&short, upper, work)?;
            if opts.len() >= MAX_MOUNT_DATA {
                return Err(BundleError::TooManyLayers(opts.len()));
            }
        }
        m.mount_overlay(&self.rootfs(), &opts)
    }

    pub fn unmount_rootfs(&self, m: &dyn Mounter) -> Result<(), BundleError> {
        m.unmount(&self.rootfs())
    }

    /// Unmounts and removes the bundle directory.
    pub fn remove(&self, m: &dyn Mounter) -> Result<(), BundleError> {
        self.unmount_rootfs(m)?;
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BundleError::Io(self.dir.display().to_string(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Recorder(RefCell<Vec<(PathBuf, String)>>);

    impl Mounter for Recorder {
        fn mount_overlay(&self, target: &Path, options: &str) -> Result<(), BundleError> {
            self.0
                .borrow_mut()
                .push((target.to_path_buf(), options.to_string()));
            Ok(())
        }
        fn unmount(&self, target: &Path) -> Result<(), BundleError> {
            self.0
                .borrow_mut()
                .push((target.to_path_buf(), "umount".into()));
            Ok(())
        }
    }

    #[test]
    fn options_keep_top_first_order() {
        let d = tempfile::tempdir().unwrap();
        let b = Bundle::create(d.path().join("b")).unwrap();
        let r = Recorder::default();
        let layers = vec![PathBuf::from("/s/top"), PathBuf::from("/s/base")];
        b.mount_rootfs(&r, &layers, &d.path().join("up"), &d.path().join("wk"))
            .unwrap();
        let calls = r.0.borrow();
        assert_eq!(calls[0].0, b.rootfs());
        assert_eq!(
            calls[0].1,
            format!(
                "lowerdir=/s/top:/s/base,upperdir={0}/up,workdir={0}/wk",
                d.path().display()
            )
        );
        assert!(d.path().join("up").is_dir() && d.path().join("wk").is_dir());
    }

    #[test]
    fn long_lowerdir_uses_short_links() {
        let d = tempfile::tempdir().unwrap();
        let b = Bundle::create(d.path().join("b")).unwrap();
        let r = Recorder::default();
        let layers: Vec<PathBuf> = (0..80)
            .map(|i| PathBuf::from(format!("/var/lib/berth/image/layers/sha256/{i:064x}/diff")))
            .collect();
        assert!(
            overlay_options(&layers, Path::new("/u"), Path::new("/w"))
                .unwrap()
                .len()
                > MAX_MOUNT_DATA
        );
        b.mount_rootfs(&r, &layers, &d.path().join("up"), &d.path().join("wk"))
            .unwrap();
        let opts = r.0.borrow()[0].1.clone();
        assert!(opts.len() < MAX_MOUNT_DATA);
        let first = opts
            .strip_prefix("lowerdir=")
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(fs::read_link(&first).unwrap(), layers[0]);
        let last_link = b.dir.join("l").join(format!("{:x}", 79));
        assert_eq!(fs::read_link(last_link).unwrap(), layers[79]);
    }

    #[test]
    fn far_too_many_layers_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let b = Bundle::create(d.path().join("b".repeat(200))).unwrap();
        let layers: Vec<PathBuf> = (0..400)
            .map(|i| PathBuf::from(format!("/x/{i:0>100}")))
            .collect();
        let r = Recorder::default();
        assert!(matches!(
            b.mount_rootfs(&r, &layers, &d.path().join("u"), &d.path().join("w")),
            Err(BundleError::TooManyLayers(_))
        ));
    }

    #[test]
    fn empty_image_gets_an_empty_lower_and_bad_paths_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let b = Bundle::create(d.path().join("b")).unwrap();
        let r = Recorder::default();
        b.mount_rootfs(&r, &[], &d.path().join("u"), &d.path().join("w"))
            .unwrap();
        assert!(r.0.borrow()[0]
            .1
            .starts_with(&format!("lowerdir={}/empty,", b.dir.display())));
        assert!(matches!(
            b.mount_rootfs(
                &r,
                &[PathBuf::from("/a:b")],
                &d.path().join("u"),
                &d.path().join("w")
            ),
            Err(BundleError::BadPath(_))
        ));
    }

    #[test]
    fn config_is_written_and_bundle_removed() {
        let d = tempfile::tempdir().unwrap();
        let b = Bundle::create(d.path().join("b")).unwrap();
        let spec = oci_spec::runtime::Spec::default();
        b.write_config(&spec).unwrap();
        let back: oci_spec::runtime::Spec =
            serde_json::from_slice(&fs::read(b.config_path()).unwrap()).unwrap();
        assert_eq!(back, spec);
        assert!(!b.dir.join(".config.json.tmp").exists());
        let r = Recorder::default();
        b.remove(&r).unwrap();
        assert!(!b.dir.exists());
        assert_eq!(r.0.borrow()[0].1, "umount");
    }
}
