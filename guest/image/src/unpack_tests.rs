//! Adversarial and functional unpack tests. Tars are built in code with raw
//! headers (tar::Builder's path setters refuse the hostile names we need).

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::split_path;
use crate::digest::Digest;
use crate::error::ImageError;
use crate::store::{Compression, Store, StoreLimits};

pub(crate) fn is_root() -> bool {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: test needs root (mknod, chown, trusted.* xattrs)");
        return false;
    }
    true
}

pub(crate) enum E<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str, u32),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str, u32, u32),
    Fifo(&'a str),
    Owned(&'a str, &'a [u8], u32, u32, u32),
    Xattr(&'a str, &'a str, &'a [u8]),
}

fn raw_header(name: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    let n = &mut h.as_old_mut().name;
    assert!(name.len() <= 100);
    n[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h
}

fn set_link(h: &mut tar::Header, target: &str) {
    let l = &mut h.as_old_mut().linkname;
    assert!(target.len() <= 100);
    l[..target.len()].copy_from_slice(target.as_bytes());
}

pub(crate) fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (mut h, data): (tar::Header, &[u8]) = match *e {
            E::File(n, d, m) => (raw_header(n, tar::EntryType::Regular, d.len() as u64, m), d),
            E::Owned(n, d, m, uid, gid) => {
                let mut h = raw_header(n, tar::EntryType::Regular, d.len() as u64, m);
                h.set_uid(uid as u64);
                h.set_gid(gid as u64);
                (h, d)
            }
            E::Dir(n, m) => (raw_header(n, tar::EntryType::Directory, 0, m), &[]),
            E::Sym(n, t) => {
                let mut h = raw_header(n, tar::EntryType::Symlink, 0, 0o777);
                set_link(&mut h, t);
                (h, &[])
            }
            E::Hard(n, t) => {
                let mut h = raw_header(n, tar::EntryType::Link, 0, 0o644);
                set_link(&mut h, t);
                (h, &[])
            }
            E::Char(n, maj, min) => {
                let mut h = raw_header(n, tar::EntryType::Char, 0, 0o620);
                h.set_device_major(maj).unwrap();
                h.set_device_minor(min).unwrap();
                (h, &[])
            }
            E::Fifo(n) => (raw_header(n, tar::EntryType::Fifo, 0, 0o640), &[]),
            E::Xattr(n, k, v) => {
                let key = format!("SCHILY.xattr.{k}");
                b.append_pax_extensions([(key.as_str(), v)]).unwrap();
                (raw_header(n, tar::EntryType::Regular, 1, 0o644), b"x")
            }
        };
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A sandbox: <tmp>/store is the store root, <tmp>/outside a sentinel dir
/// holding one file. Nothing else may ever appear in <tmp>.
pub(crate) struct Sandbox {
    pub _t: tempfile::TempDir,
    pub base: PathBuf,
    pub outside: PathBuf,
    pub store: Store,
}

pub(crate) fn sandbox(limits: StoreLimits) -> Sandbox {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().to_path_buf();
    let outside = base.join("outside");
    fs::create_dir(&outside).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    let store = Store::open_with_limits(&base.join("store"), limits).unwrap();
    Sandbox { _t: t, base, outside, store }
}

fn names(p: &Path) -> BTreeSet<String> {
    fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

impl Sandbox {
    /// Asserts nothing escaped: the sandbox and sentinel are untouched and no
    /// temp unpack directory is left behind.
    pub fn assert_clean(&self) {
        assert_eq!(names(&self.base), ["outside", "store"].iter().map(|s| s.to_string()).collect());
        assert_eq!(names(&self.outside), ["secret"].iter().map(|s| s.to_string()).collect());
        let m = fs::metadata(&self.outside).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o750, "sentinel dir mode changed");
        assert_eq!(fs::read(self.outside.join("secret")).unwrap(), b"secret");
        assert!(names(&self.base.join("store/tmp")).is_empty(), "temp unpack dir left behind");
    }

    pub fn unpack(&self, tar: &[u8]) -> Result<crate::store::LayerInfo, ImageError> {
        let blob = self.store.write_blob(tar).unwrap();
        self.store.unpack_layer(&blob, Compression::None, &Digest::of(tar), None)
    }

    /// Unpack must fail with UnsafeLayer and leave no layer and no trace.
    pub fn expect_unsafe(&self, entries: &[E]) {
        let tar = tar_of(entries);
        match self.unpack(&tar) {
            Err(ImageError::UnsafeLayer(_)) => {}
            other => panic!("expected UnsafeLayer, got {other:?}"),
        }
        assert!(!self.store.has_layer(&Digest::of(&tar)));
        assert!(names(&self.base.join("store/layers")).is_empty());
        self.assert_clean();
    }
}

#[test]
fn split_path_rules() {
    assert_eq!(split_path(b"./a//b/./c").unwrap(), vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    assert!(split_path(b"./").unwrap().is_empty());
    for bad in [&b""[..], b"/etc/x", b"../x", b"a/../../x", b"a/..", b"a\0b"] {
        assert!(matches!(split_path(bad), Err(ImageError::UnsafeLayer(_))), "{bad:?}");
    }
}

#[test]
fn refuses_dotdot_and_absolute() {
    if !is_root() {
        return;
    }
    let s = sandbox(StoreLimits::default());
    s.expect_unsafe(&[E::File("../../etc/passwd", b"x", 0o644)]);
    s.expect_unsafe(&[E::File("/etc/x", b"x", 0o644)]);
    s.expect_unsafe(&[E::Dir("a", 0o755), E::File("a/../../x", b"x", 0o644)]);
    s.expect_unsafe(&[E::File("", b"x", 0o644)]);
}

#[test]
fn refuses_writes_through_symlinks() {
    if !is_root() {
        return;
    }
    let s = sandbox(StoreLimits::default());
    // s -> / then s/<path to sentinel>/pwn would land in the sentinel dir.
    let via_root = format!("s{}/pwn", s.outside.display());
    if via_root.len() <= 100 {
        s.expect_unsafe(&[E::Sym("s", "/"), E::File(&via_root, b"pwn", 0o644)]);
    }
    s.expect_unsafe(&[E::Sym("s", "/"), E::File("s/tmp/pwn", b"pwn", 0o644)]);
    assert!(!Path::new("/tmp/pwn").exists());
    s.expect_unsafe(&[E::Sym("s", "../.."), E::File("s/x", b"pwn", 0o644)]);
    let out = s.outside.to_str().unwrap().to_string();
    s.expect_unsafe(&[E::Sym("d", &out), E::Dir("d/sub", 0o777)]);
    // whiteout through a symlinked parent must not delete outside files
    s.expect_unsafe(&[E::Sym("d", &out), E::File("d/.wh.secret", b"", 0o644)]);
    s.expect_unsafe(&[E::Sym("d", &out), E::File("d/.wh..wh..opq", b"", 0o644)]);
    // a regular file used as a directory
    s.expect_unsafe(&[E::File("f", b"x", 0o644), E::File("f/x", b"x", 0o644)]);
}

#[test]
fn dir_entry_over_symlink_replaces_it() {
    if !is_root() {
        return;
    }
    let s = sandbox(StoreLimits::default());
    let out = s.outside.to_str().unwrap().to_string();
    let info = s.unpack(&tar_of(&[E::Sym("d", &out), E::Dir("d", 0o777), E::File("d/f", b"in", 0o644)])).unwrap();
    let diff = s.store.layer_diff_dir(&info.chain_id);
    let m = fs::symlink_metadata(diff.join("d")).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.mode() & 0o7777, 0o777);
    assert_eq!(fs::read(diff.join("d/f")).unwrap(), b"in");
    s.assert_clean();
}

#[test]
fn hardlink_rules() {
    if !is_root() {
        return;
    }
    let s = sandbox(StoreLimits::default());
    s.expect_unsafe(&[E::Hard("h", "../outside/secret")]);
    s.expect_unsafe(&[E::Hard("h", "/etc/passwd")]);
    let out = s.outside.to_str().unwrap().to_string();
    s.expect_unsafe(&[E::Sym("d", &out), E::Hard("h", "d/secret")]);
    s.expect_unsafe(&[E::Hard("h", "missing")]);
    // A hardlink to a symlink links the symlink itself, never its target.
    let target = format!("{out}/secret");
    let info = s.unpack(&tar_of(&[E::Sym("l", &target), E::Hard("h", "l")])).unwrap();
    let diff = s.store.layer_diff_dir(&info.chain_id);
    let m = fs::symlink_metadata(diff.join("h")).unwrap();
    assert!(m.file_type().is_symlink());
    assert_eq!(m.nlink(), 2);
    assert_eq!(fs::read_link(diff.join("h")).unwrap(), Path::new(&target));
    assert_eq!(fs::metadata(s.outside.join("secret")).unwrap().nlink(), 1);
    s.assert_clean();
    // A normal hardlink inside the layer works.
    let info = s.unpack(&tar_of(&[E::File("a/f", b"data", 0o644), E::Hard("b", "./a/f")])).unwrap();
    let diff = s.store.layer_diff_dir(&info.chain_id);
    assert_eq!(fs::metadata(diff.join("b")).unwrap().ino(), fs::metadata(diff.join("a/f")).unwrap().ino());
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    if !is_root() {
        return;
    }
    let s = sandbox(StoreLimits::default());
    let info = s
        .unpack(&tar_of(&[
            E::Dir("d", 0o755),
            E::File("d/.wh..wh..opq", b"", 0o644),
            E::File("d/keep", b"k", 0o644),
            E::File(".wh.gone", b"", 0o644),
            E::File("e/.wh.x", b"", 0o644),
            E::File(".wh..wh.plnk", b"", 0o644),
        ]))
        .unwrap();
    let diff = s.store.layer_diff_dir(&info.chain_id);
    assert_eq!(xattr::get(diff.join("d"), "trusted.overlay.opaque").unwrap().as_deref(), Some(&b"y"[..]));
    for w in ["gone", "e/x"] {
        let m = fs::symlink_metadata(diff.join(w)).unwrap();
        assert!(m.file_type().is_char_device(), "{w}");
        assert_eq!(m.rdev(), 0);
    }
    assert_eq!(names(&diff), ["d", "e", "gone"].iter().map(|s| s.to_string()).collect());
    assert_eq!(names(&diff.join("d")), ["keep"].iter().map(|s| s.to_string()).collect());
    s.assert_clean();
}

#[test]
fn preserves_metadata_and_replaces_duplicates() {
    if !is_root() {
        return;
    }
    let s = sandbox(StoreLimits::default());
    let tar = tar_of(&[
        E::Dir("./", 0o755),
        E::Dir("bin", 0o755),
        E::Owned("bin/su", b"suid", 0o4755, 1000, 1001),
        E::File("dup", b"first", 0o644),
        E::File("dup", b"second", 0o600),
        E::File("wasfile", b"f", 0o644),
        E::Dir("wasfile", 0o700),
        E::File("wasfile/in", b"", 0o644),
        E::Dir("wasdir", 0o755),
        E::File("wasdir/child", b"", 0o644),
        E::File("wasdir", b"now a file", 0o644),
        E::File("x/y", b"parent created", 0o644),
        E::Sym("link", "/abs/target"),
        E::Char("dev/null", 1, 3),
        E::Fifo("pipe"),
        E::Xattr("attr", "user.test", b"v1"),
        E::Xattr("ovl", "trusted.overlay.redirect", b"/etc"),
    ]);
    let info = s.unpack(&tar).unwrap();
    assert_eq!(info.diff_id, Digest::of(&tar));
    let diff = s.store.layer_diff_dir(&info.chain_id);
    let su = fs::metadata(diff.join("bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755);
    assert_eq!((su.uid(), su.gid()), (1000, 1001));
    assert_eq!(su.mtime(), 1_600_000_000);
    assert_eq!(fs::metadata(diff.join("bin")).unwrap().mtime(), 1_600_000_000);
    assert_eq!(fs::read(diff.join("dup")).unwrap(), b"second");
    assert_eq!(fs::metadata(diff.join("dup")).unwrap().mode() & 0o777, 0o600);
    assert_eq!(fs::read(diff.join("x/y")).unwrap(), b"parent created");
    assert_eq!(fs::read_link(diff.join("link")).unwrap(), Path::new("/abs/target"));
    let dev = fs::symlink_metadata(diff.join("dev/null")).unwrap();
    assert!(dev.file_type().is_char_device());
    assert_eq!(dev.rdev(), libc::makedev(1, 3));
    assert_eq!(dev.mode() & 0o7777, 0o620);
    assert!(fs::symlink_metadata(diff.join("pipe")).unwrap().file_type().is_fifo());
    assert_eq!(xattr::get(diff.join("attr"), "user.test").unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(xattr::get(diff.join("ovl"), "trusted.overlay.redirect").unwrap(), None);
    assert!(fs::symlink_metadata(diff.join("wasfile")).unwrap().is_dir());
    assert_eq!(fs::metadata(diff.join("wasfile")).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(fs::read(diff.join("wasdir")).unwrap(), b"now a file");
    // size counts every regular-file payload in the tar, replaced ones included
    assert_eq!(info.size, 4 + 5 + 6 + 1 + 14 + 10 + 1 + 1);

    // Idempotent, and write_layer_tar reproduces the exact bytes.
    let again = s.unpack(&tar).unwrap();
    assert_eq!(again, info);
    let mut out = Vec::new();
    s.store.write_layer_tar(&info.chain_id, &mut out).unwrap();
    assert_eq!(out, tar);
    s.assert_clean();
}

#[test]
fn compressed_layers_and_chain() {
    if !is_root() {
        return;
    }
    let s = sandbox(StoreLimits::default());
    let base = tar_of(&[E::File("a", b"base", 0o644)]);
    let top = tar_of(&[E::File("b", b"top", 0o644)]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&base).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&top[..], 3).unwrap();
    assert_eq!(Compression::detect(&gz), Compression::Gzip);
    assert_eq!(Compression::detect(&zst), Compression::Zstd);
    let gzb = s.store.write_blob(&gz).unwrap();
    let zsb = s.store.write_blob(&zst).unwrap();
    let l1 = s.store.unpack_layer(&gzb, Compression::Gzip, &Digest::of(&base), None).unwrap();
    assert_eq!(l1.chain_id, Digest::of(&base));
    // parent must exist
    let bogus = Digest::of(b"nope");
    assert!(matches!(
        s.store.unpack_layer(&zsb, Compression::Zstd, &Digest::of(&top), Some(&bogus)),
        Err(ImageError::NotFound(_))
    ));
    let l2 = s.store.unpack_layer(&zsb, Compression::Zstd, &Digest::of(&top), Some(&l1.chain_id)).unwrap();
    assert_eq!(l2.chain_id, Digest::of(format!("{} {}", l1.chain_id, Digest::of(&top)).as_bytes()));
    assert_eq!(l2.parent.as_ref(), Some(&l1.chain_id));
    assert_eq!(fs::read(s.store.layer_diff_dir(&l2.chain_id).join("b")).unwrap(), b"top");
    let mut out = Vec::new();
    s.store.write_layer_tar(&l1.chain_id, &mut out).unwrap();
    assert_eq!(out, base);
    s.assert_clean();
}

#[test]
fn gzip_bomb_and_entry_limits() {
    if !is_root() {
        return;
    }
    let limits = StoreLimits { max_layer_bytes: 1 << 20, max_layer_entries: 10, ..Default::default() };
    let s = sandbox(limits);
    let zeros = vec![0u8; 8 << 20];
    let tar = tar_of(&[E::File("big", &zeros, 0o644)]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 100_000);
    let blob = s.store.write_blob(&gz).unwrap();
    let r = s.store.unpack_layer(&blob, Compression::Gzip, &Digest::of(&tar), None);
    assert!(matches!(r, Err(ImageError::LimitExceeded(_))), "{r:?}");
    assert!(!s.store.has_layer(&Digest::of(&tar)));
    s.assert_clean();

    let many: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
    let entries: Vec<E> = many.iter().map(|n| E::File(n, b"", 0o644)).collect();
    let tar = tar_of(&entries);
    let r = s.unpack(&tar);
    assert!(matches!(r, Err(ImageError::LimitExceeded(_))), "{r:?}");
    assert!(!s.store.has_layer(&Digest::of(&tar)));
    s.assert_clean();
    // exactly at the limit is fine
    assert!(s.unpack(&tar_of(&entries[..10])).is_ok());
}

#[test]
fn diff_id_mismatch_is_not_committed() {
    if !is_root() {
        return;
    }
    let s = sandbox(StoreLimits::default());
    let tar = tar_of(&[E::File("a", b"x", 0o644)]);
    let blob = s.store.write_blob(&tar).unwrap();
    let wrong = Digest::of(b"other");
    let r = s.store.unpack_layer(&blob, Compression::None, &wrong, None);
    assert!(matches!(r, Err(ImageError::DigestMismatch { .. })), "{r:?}");
    assert!(!s.store.has_layer(&wrong));
    assert!(names(&s.base.join("store/layers")).is_empty());
    s.assert_clean();
}

/// PAX records override the header name/linkname; they must be checked too.
#[test]
fn refuses_hostile_pax_paths() {
    if !is_root() {
        return;
    }
    let s = sandbox(StoreLimits::default());
    for (key, val, kind) in [
        ("path", "../evil", tar::EntryType::Regular),
        ("path", "/abs/evil", tar::EntryType::Regular),
        ("linkpath", "../outside/secret", tar::EntryType::Link),
    ] {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([(key, val.as_bytes())]).unwrap();
        let mut h = raw_header("benign", kind, 0, 0o644);
        if kind == tar::EntryType::Link {
            set_link(&mut h, "benign-target");
        }
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        let tar = b.into_inner().unwrap();
        match s.unpack(&tar) {
            Err(ImageError::UnsafeLayer(_)) => {}
            other => panic!("{key}={val}: expected UnsafeLayer, got {other:?}"),
        }
        assert!(!s.store.has_layer(&Digest::of(&tar)));
        s.assert_clean();
    }
}

#[test]
fn concurrent_unpacks_of_one_layer_agree() {
    if !is_root() {
        return;
    }
    let s = std::sync::Arc::new(sandbox(StoreLimits::default()));
    let tar = tar_of(&[E::File("a/b", b"same", 0o644), E::Sym("l", "a/b")]);
    let blob = s.store.write_blob(&tar).unwrap();
    let diff_id = Digest::of(&tar);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (s, blob, diff_id) = (s.clone(), blob.clone(), diff_id.clone());
            std::thread::spawn(move || s.store.unpack_layer(&blob, Compression::None, &diff_id, None).unwrap())
        })
        .collect();
    let infos: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(infos.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(fs::read(s.store.layer_diff_dir(&diff_id).join("a/b")).unwrap(), b"same");
    s.assert_clean();
}

fn copy_in(root: &Path, tar: &[u8], no_overwrite: bool, owner: Option<(u32, u32)>) -> Result<super::UnpackStats, ImageError> {
    let fd = crate::sys::open_path(root, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW).unwrap();
    let limits = super::UnpackLimits { max_bytes: 1 << 20, max_entries: 100 };
    super::extract_at(tar, fd, super::ExtractOptions::copy_in(limits, no_overwrite, owner))
}

#[test]
fn split_path_clean_rules() {
    use super::split_path_clean;
    assert_eq!(split_path_clean(b"/etc/x").unwrap(), vec![b"etc".to_vec(), b"x".to_vec()]);
    assert_eq!(split_path_clean(b"a/../b").unwrap(), vec![b"b".to_vec()]);
    assert!(split_path_clean(b"a/../../b").is_err());
    assert!(split_path_clean(b"../x").is_err());
    assert!(split_path_clean(b"a\0b").is_err());
}

/// `docker cp` into a directory: names are cleaned like Docker's Untar, `.wh.` names are plain
/// files, the destination's own metadata is kept, and nothing escapes through symlinks.
#[test]
fn copy_in_mode() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    fs::create_dir_all(root.join("existing")).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o711)).unwrap();
    fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    let tar = tar_of(&[
        E::Dir(".", 0o777),
        E::File("/abs", b"a", 0o644),
        E::File("d/../plain", b"p", 0o600),
        E::File(".wh.kept", b"w", 0o644),
        E::Owned("owned", b"o", 0o640, 1234, 4321),
    ]);
    copy_in(&root, &tar, false, None).unwrap();
    assert_eq!(fs::read(root.join("abs")).unwrap(), b"a");
    assert_eq!(fs::read(root.join("plain")).unwrap(), b"p");
    assert_eq!(fs::read(root.join(".wh.kept")).unwrap(), b"w");
    let m = fs::metadata(root.join("owned")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 4321));
    assert_eq!(fs::metadata(&root).unwrap().mode() & 0o7777, 0o711, "the '.' entry must not chmod the destination");
    // copyUIDGID with a container user: every entry is chowned to it.
    copy_in(&root, &tar_of(&[E::Owned("owned2", b"o", 0o640, 1234, 4321)]), false, Some((7, 8))).unwrap();
    let m = fs::metadata(root.join("owned2")).unwrap();
    assert_eq!((m.uid(), m.gid()), (7, 8));
    // Escapes: above the root, and through a symlinked parent.
    assert!(copy_in(&root, &tar_of(&[E::File("../evil", b"x", 0o644)]), false, None).is_err());
    assert!(copy_in(&root, &tar_of(&[E::File("link/evil", b"x", 0o644)]), false, None).is_err());
    assert!(copy_in(&root, &tar_of(&[E::Hard("hl", "../outside/x")]), false, None).is_err());
    assert!(names(&outside).is_empty(), "wrote outside the destination");
    // noOverwriteDirNonDir: both directions refused; without it the dir is replaced.
    let err = copy_in(&root, &tar_of(&[E::File("existing", b"f", 0o644)]), true, None).unwrap_err();
    assert!(err.to_string().contains("cannot overwrite directory"), "{err}");
    let err = copy_in(&root, &tar_of(&[E::Dir("abs", 0o755)]), true, None).unwrap_err();
    assert!(err.to_string().contains("cannot overwrite non-directory"), "{err}");
    assert!(root.join("existing").is_dir() && root.join("abs").is_file());
    copy_in(&root, &tar_of(&[E::File("existing", b"f", 0o644)]), false, None).unwrap();
    assert_eq!(fs::read(root.join("existing")).unwrap(), b"f");
    // A bad archive is an error, not a partial success.
    let mut bad = tar_of(&[E::File("z", b"zz", 0o644)]);
    bad[148] ^= 0x55; // checksum byte
    assert!(copy_in(&root, &bad, false, None).is_err());
}
