//! The images the bench pushes: busybox (the harness's offline fixture) for container
//! scenarios, and a ~30 MB Debian bookworm minbase layer for the pull scenarios.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::image::{Compression, Image, Layer, RunConfig};
use serde_json::json;

use crate::error::{Error, IoContext, Result};

/// Debian mirror for debootstrap (the package registry; used from the host only, never from
/// a namespace under test).
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
/// Directories whose contents are left out of the layer, as slim Debian images do. That
/// brings minbase from ~200 MB to ~80 MB of files, ~30 MB gzipped.
const EXCLUDED_DIR_CONTENTS: &[&str] = &[
    "dev",
    "proc",
    "sys",
    "run",
    "tmp",
    "var/cache/apt",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
];

pub struct PullImage {
    pub image: Image,
    pub source: String,
    pub uncompressed_bytes: u64,
}

impl PullImage {
    pub fn compressed_bytes(&self) -> usize {
        self.image.layers.iter().map(|l| l.blob.len()).sum()
    }
}

/// Build (or load from `cache`) the pull image. The rootfs comes from debootstrap; when that
/// fails, from real host binaries and libraries (and `source` says so).
pub fn pull_image(cache: &Path) -> Result<PullImage> {
    fs::create_dir_all(cache).ctx(|| format!("mkdir {}", cache.display()))?;
    let blob_path = cache.join("layer.tar.gz");
    let meta_path = cache.join("layer.json");
    if let (Ok(blob), Ok(meta)) = (fs::read(&blob_path), fs::read(&meta_path)) {
        let meta: serde_json::Value = serde_json::from_slice(&meta)?;
        let digest = berth_tests::sha256_digest(&blob);
        if meta["digest"] == digest.as_str() {
            eprintln!("pull image: cached layer {digest} ({} bytes)", blob.len());
            return finish(
                Layer {
                    compression: Compression::Gzip,
                    blob,
                    digest,
                    diff_id: meta["diff_id"].as_str().unwrap_or_default().to_string(),
                    created_by: meta["created_by"].as_str().unwrap_or_default().to_string(),
                },
                meta["source"].as_str().unwrap_or_default().to_string(),
                meta["uncompressed_bytes"].as_u64().unwrap_or(0),
            );
        }
    }
    let rootfs = cache.join("rootfs");
    let (tar, source) = match debootstrap(&rootfs) {
        Ok(()) => (
            tar_tree(&rootfs, EXCLUDED_DIR_CONTENTS)?,
            "debootstrap --variant=minbase bookworm (docs, man pages, locales, apt lists left out)"
                .to_string(),
        ),
        Err(e) => {
            eprintln!("debootstrap failed ({e}); using a layer of host binaries instead");
            (
                synthetic_tar()?,
                "host /usr/bin and /usr/lib files (debootstrap failed)".to_string(),
            )
        }
    };
    eprintln!("pull image: gzipping {} bytes of tar", tar.len());
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&tar).ctx(|| "gzip".into())?;
    let blob = enc.finish().ctx(|| "gzip".into())?;
    let created_by = "berth-bench: debian bookworm minbase rootfs".to_string();
    let layer = Layer {
        compression: Compression::Gzip,
        digest: berth_tests::sha256_digest(&blob),
        diff_id: berth_tests::sha256_digest(&tar),
        blob,
        created_by: created_by.clone(),
    };
    fs::write(&blob_path, &layer.blob).ctx(|| "write layer cache".into())?;
    fs::write(
        &meta_path,
        serde_json::to_vec_pretty(&json!({
            "digest": layer.digest,
            "diff_id": layer.diff_id,
            "created_by": created_by,
            "source": source,
            "uncompressed_bytes": tar.len(),
        }))?,
    )
    .ctx(|| "write layer meta".into())?;
    finish(layer, source, tar.len() as u64)
}

fn finish(layer: Layer, source: String, uncompressed_bytes: u64) -> Result<PullImage> {
    let image = Image::new(vec![layer], &RunConfig::cmd(&["bash"]), "amd64")?;
    Ok(PullImage {
        image,
        source,
        uncompressed_bytes,
    })
}

/// debootstrap into `rootfs` unless a finished one is there (built in `<rootfs>.tmp`, renamed
/// when complete, so an interrupted run is redone rather than used half-made).
fn debootstrap(rootfs: &Path) -> Result<()> {
    if rootfs.join("usr/bin/apt-get").exists() {
        return Ok(());
    }
    let tmp = rootfs.with_extension("tmp");
    if tmp.exists() {
        crate::procs::unmount_under(&tmp);
        fs::remove_dir_all(&tmp).ctx(|| format!("rm {}", tmp.display()))?;
    }
    eprintln!(
        "debootstrap --variant=minbase bookworm {} ...",
        tmp.display()
    );
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&tmp)
        .arg(DEBIAN_MIRROR)
        .output()
        .ctx(|| "spawn debootstrap".into())?;
    if !out.status.success() {
        return Err(Error::Unexpected(format!(
            "debootstrap {}: {}",
            out.status,
            berth_tests::berthd::tail(&String::from_utf8_lossy(&out.stdout), 5)
        )));
    }
    fs::rename(&tmp, rootfs).ctx(|| "rename rootfs".into())?;
    Ok(())
}

/// A tar of the tree at `root` (sorted, owners/modes/mtimes kept, symlinks not followed),
/// leaving out the contents of `excluded` directories (the directories themselves stay).
/// Walked by hand because tar's `append_dir_all` cannot skip paths.
pub fn tar_tree(root: &Path, excluded: &[&str]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    walk(&mut b, root, Path::new(""), excluded)?;
    b.into_inner().ctx(|| "tar".into())
}

fn walk(b: &mut tar::Builder<Vec<u8>>, root: &Path, rel: &Path, excluded: &[&str]) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .ctx(|| format!("read {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let r = rel.join(&name);
        let full = root.join(&r);
        let md = fs::symlink_metadata(&full).ctx(|| format!("stat {}", full.display()))?;
        let ft = md.file_type();
        if !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
            continue; // device nodes, sockets: not in an image layer
        }
        b.append_path_with_name(&full, &r)
            .ctx(|| format!("tar {}", r.display()))?;
        if ft.is_dir() && !excluded.iter().any(|x| Path::new(x) == r) {
            walk(b, root, &r, excluded)?;
        }
    }
    Ok(())
}

/// Fallback layer: regular files of the host's /usr/bin and /usr/lib (real binaries and
/// libraries compress like an OS image does), capped at ~80 MB uncompressed.
fn synthetic_tar() -> Result<Vec<u8>> {
    const CAP: u64 = 80 << 20;
    let mut b = tar::Builder::new(Vec::new());
    let mut total = 0u64;
    for top in ["/usr/bin", "/usr/lib"] {
        let mut stack = vec![PathBuf::from(top)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            entries.sort();
            for p in entries {
                let Ok(md) = fs::symlink_metadata(&p) else {
                    continue;
                };
                if md.is_dir() {
                    stack.push(p);
                } else if md.is_file() && total + md.size() <= CAP {
                    let name = p.strip_prefix("/").unwrap_or(&p).to_path_buf();
                    if b.append_path_with_name(&p, &name).is_ok() {
                        total += md.size();
                    }
                }
            }
        }
    }
    b.into_inner().ctx(|| "tar".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_tree_excludes_contents_only() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("usr/share/doc/pkg")).unwrap();
        fs::write(d.path().join("usr/share/doc/pkg/README"), "x").unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/hostname"), "h").unwrap();
        std::os::unix::fs::symlink("etc/hostname", d.path().join("link")).unwrap();
        let tar = tar_tree(d.path(), &["usr/share/doc"]).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "etc",
                "etc/hostname",
                "link",
                "usr",
                "usr/share",
                "usr/share/doc"
            ]
        );
    }
}
