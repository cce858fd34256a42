//! Real OCI/Docker images built offline, in code, from Debian's busybox-static.
//!
//! Output is deterministic (fixed mtimes, uid 0, gzip header without a timestamp), so the
//! same fixture has the same digests in every test process.

use std::io::Write;
use std::sync::OnceLock;

use serde_json::json;

use crate::{sha256_digest, Error, IoContext, Result};

/// Fixed timestamp for every entry and every history record.
pub const MTIME: u64 = 1_704_067_200; // 2024-01-01T00:00:00Z
/// RFC 3339 form of [`MTIME`].
pub const CREATED: &str = "2024-01-01T00:00:00Z";
/// Default PATH in every fixture's config.
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Text served by the `web` fixture at `/index.html`.
pub const WEB_MARKER: &str = "berth-web-fixture-marker-7f3a9c";
/// Where busybox-static lives on the host.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// How a layer blob is encoded; all three are covered by the fixtures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Layer media type in a Docker schema2 manifest. Docker has no zstd type, so zstd
    /// layers use the OCI type there too (as Docker itself does when pushing zstd).
    pub fn docker_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
            Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// Layer media type in an OCI manifest.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// Encode an uncompressed tar.
    pub fn compress(self, tar: &[u8]) -> Result<Vec<u8>> {
        match self {
            Compression::None => Ok(tar.to_vec()),
            Compression::Gzip => {
                // fast(): the fixtures are built in unoptimised test builds; size hardly matters.
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(tar).ctx(|| "gzip".into())?;
                enc.finish().ctx(|| "gzip finish".into())
            }
            Compression::Zstd => zstd::encode_all(tar, 3).ctx(|| "zstd".into()),
        }
    }
}

/// One layer: its blob (as stored in a registry) and the digest of its uncompressed tar.
#[derive(Debug, Clone)]
pub struct Layer {
    pub compression: Compression,
    /// The bytes as pushed (compressed per `compression`).
    pub blob: Vec<u8>,
    /// Digest of `blob` (what manifests reference).
    pub digest: String,
    /// Digest of the uncompressed tar (what config.rootfs.diff_ids lists).
    pub diff_id: String,
    /// History line for the config.
    pub created_by: String,
}

impl Layer {
    /// Wrap an uncompressed tar as a layer with the given encoding.
    pub fn from_tar(tar: &[u8], compression: Compression, created_by: &str) -> Result<Layer> {
        let blob = compression.compress(tar)?;
        Ok(Layer {
            compression,
            digest: sha256_digest(&blob),
            diff_id: sha256_digest(tar),
            blob,
            created_by: created_by.to_string(),
        })
    }
}

/// Builds one layer tar. Paths are given without the leading `/`.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        LayerBuilder { tar }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h
    }

    /// A directory entry.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self> {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.tar
            .append_data(
                &mut h,
                format!("{}/", path.trim_end_matches('/')),
                std::io::empty(),
            )
            .ctx(|| format!("tar dir {path}"))?;
        Ok(self)
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<&mut Self> {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.tar
            .append_data(&mut h, path, data)
            .ctx(|| format!("tar file {path}"))?;
        Ok(self)
    }

    /// A symlink `path -> target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar
            .append_link(&mut h, path, target)
            .ctx(|| format!("tar symlink {path}"))?;
        Ok(self)
    }

    /// An OCI whiteout: deletes `name` in `dir` from lower layers (`dir/.wh.name`).
    pub fn whiteout(&mut self, dir: &str, name: &str) -> Result<&mut Self> {
        let p = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&p, 0o644, b"")
    }

    /// An opaque-directory marker: hides everything lower layers had in `dir`.
    pub fn opaque(&mut self, dir: &str) -> Result<&mut Self> {
        self.file(&format!("{dir}/.wh..wh..opq"), 0o644, b"")
    }

    /// The finished uncompressed tar.
    pub fn into_tar(self) -> Result<Vec<u8>> {
        self.tar.into_inner().ctx(|| "tar finish".into())
    }

    /// Finish and encode as a layer.
    pub fn finish(self, compression: Compression, created_by: &str) -> Result<Layer> {
        let tar = self.into_tar()?;
        Layer::from_tar(&tar, compression, created_by)
    }
}

/// The runtime part of an image config.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub exposed_ports: Vec<String>,
    pub working_dir: String,
}

impl RunConfig {
    /// PATH set, the given Cmd, nothing else.
    pub fn cmd(cmd: &[&str]) -> RunConfig {
        RunConfig {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            env: vec![PATH_ENV.to_string()],
            exposed_ports: Vec::new(),
            working_dir: String::new(),
        }
    }
}

/// A complete image: config blob plus layers, ready to push.
#[derive(Debug, Clone)]
pub struct Image {
    pub config: Vec<u8>,
    /// Digest of `config`; Docker shows it as the image ID.
    pub config_digest: String,
    pub layers: Vec<Layer>,
    pub architecture: String,
}

impl Image {
    /// Build the config JSON (linux/amd64 unless `architecture` says otherwise).
    pub fn new(layers: Vec<Layer>, run: &RunConfig, architecture: &str) -> Result<Image> {
        let mut history: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| json!({"created": CREATED, "created_by": l.created_by}))
            .collect();
        history.push(json!({
            "created": CREATED,
            "created_by": format!("/bin/sh -c #(nop)  CMD {}", serde_json::to_string(&run.cmd)?),
            "empty_layer": true,
        }));
        let mut config = json!({
            "Env": run.env,
            "Cmd": run.cmd,
        });
        if !run.exposed_ports.is_empty() {
            let ports: serde_json::Map<String, serde_json::Value> = run
                .exposed_ports
                .iter()
                .map(|p| (p.clone(), json!({})))
                .collect();
            config["ExposedPorts"] = serde_json::Value::Object(ports);
        }
        if !run.working_dir.is_empty() {
            config["WorkingDir"] = json!(run.working_dir);
        }
        let doc = json!({
            "architecture": architecture,
            "os": "linux",
            "created": CREATED,
            "config": config,
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
            "history": history,
        });
        let config = serde_json::to_vec(&doc)?;
        Ok(Image {
            config_digest: sha256_digest(&config),
            config,
            layers,
            architecture: architecture.to_string(),
        })
    }

    /// The same layers with a config for another architecture (for index fixtures).
    pub fn for_architecture(&self, architecture: &str) -> Result<Image> {
        let mut doc: serde_json::Value = serde_json::from_slice(&self.config)?;
        doc["architecture"] = json!(architecture);
        let config = serde_json::to_vec(&doc)?;
        Ok(Image {
            config_digest: sha256_digest(&config),
            config,
            layers: self.layers.clone(),
            architecture: architecture.to_string(),
        })
    }

    /// Short image ID as `docker images` prints it (12 hex chars of the config digest).
    pub fn short_id(&self) -> &str {
        &self.config_digest["sha256:".len().."sha256:".len() + 12]
    }
}

/// Applet names busybox-static provides (`busybox --list`), excluding `busybox` itself.
pub fn busybox_applets() -> Result<Vec<String>> {
    let out = std::process::Command::new(HOST_BUSYBOX)
        .arg("--list")
        .output()
        .ctx(|| format!("run {HOST_BUSYBOX} --list"))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: "busybox --list".into(),
            detail: format!("{}", out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "busybox" && !l.contains('/'))
        .map(String::from)
        .collect())
}

/// The uncompressed busybox base layer tar (built once per process).
pub fn busybox_tar() -> Result<&'static [u8]> {
    static TAR: OnceLock<Vec<u8>> = OnceLock::new();
    if let Some(t) = TAR.get() {
        return Ok(t);
    }
    let bin = std::fs::read(HOST_BUSYBOX).ctx(|| format!("read {HOST_BUSYBOX}"))?;
    let mut b = LayerBuilder::new();
    for d in [
        "bin", "etc", "root", "home", "var", "usr", "usr/bin", "sbin", "dev", "proc", "sys",
    ] {
        b.dir(d, 0o755)?;
    }
    b.dir("tmp", 0o1777)?;
    b.file("bin/busybox", 0o755, &bin)?;
    for applet in busybox_applets()? {
        b.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    b.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    b.file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    Ok(TAR.get_or_init(|| b.into_tar().expect("in-memory tar cannot fail")))
}

/// The busybox base layer, gzip (shared by every fixture so pulls can dedupe it).
pub fn busybox_layer() -> Result<Layer> {
    static LAYER: OnceLock<Layer> = OnceLock::new();
    if let Some(l) = LAYER.get() {
        return Ok(l.clone());
    }
    let l = Layer::from_tar(busybox_tar()?, Compression::Gzip, "COPY busybox-static /")?;
    Ok(LAYER.get_or_init(|| l).clone())
}

/// `busybox`: one gzip layer, Cmd ["sh"].
pub fn busybox() -> Result<Image> {
    Image::new(vec![busybox_layer()?], &RunConfig::cmd(&["sh"]), "amd64")
}

/// `layered`: busybox (gzip) + an uncompressed layer adding /data/{a,b,dir/x} and /gone/f +
/// a zstd layer whiting out /data/a, making /data/dir opaque (with new /data/dir/y) and
/// removing /gone. Result after overlay: /data/b and /data/dir/y only, no /gone.
pub fn layered() -> Result<Image> {
    let mut l2 = LayerBuilder::new();
    l2.dir("data", 0o755)?
        .file("data/a", 0o644, b"a\n")?
        .file("data/b", 0o644, b"b\n")?
        .dir("data/dir", 0o755)?
        .file("data/dir/x", 0o644, b"x\n")?
        .dir("gone", 0o755)?
        .file("gone/f", 0o644, b"f\n")?;
    let l2 = l2.finish(Compression::None, "ADD data gone /")?;
    let mut l3 = LayerBuilder::new();
    l3.dir("data", 0o755)?
        .whiteout("data", "a")?
        .dir("data/dir", 0o755)?
        .opaque("data/dir")?
        .file("data/dir/y", 0o644, b"y\n")?
        .whiteout("", "gone")?;
    let l3 = l3.finish(
        Compression::Zstd,
        "RUN rm -rf /data/a /data/dir/* /gone && echo y > /data/dir/y",
    )?;
    Image::new(
        vec![busybox_layer()?, l2, l3],
        &RunConfig::cmd(&["sh"]),
        "amd64",
    )
}

/// `web`: busybox + /www/index.html containing [`WEB_MARKER`], running busybox httpd on 80.
pub fn web() -> Result<Image> {
    let mut l = LayerBuilder::new();
    l.dir("www", 0o755)?.file(
        "www/index.html",
        0o644,
        format!("<html><body>{WEB_MARKER}</body></html>\n").as_bytes(),
    )?;
    let l = l.finish(Compression::Gzip, "COPY index.html /www/")?;
    let mut run = RunConfig::cmd(&["httpd", "-f", "-p", "80", "-h", "/www"]);
    run.exposed_ports = vec!["80/tcp".into()];
    Image::new(vec![busybox_layer()?, l], &run, "amd64")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                )
            })
            .collect()
    }

    #[test]
    fn busybox_layer_has_applets_and_decodes_to_diff_id() {
        let img = busybox().unwrap();
        let l = &img.layers[0];
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&l.blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(sha256_digest(&tar), l.diff_id);
        assert_eq!(sha256_digest(&l.blob), l.digest);
        let names = entries(&tar);
        assert!(names
            .iter()
            .any(|(n, t)| n == "bin/sh" && *t == tar::EntryType::Symlink));
        assert!(names
            .iter()
            .any(|(n, t)| n == "bin/busybox" && *t == tar::EntryType::Regular));
        assert!(names.iter().any(|(n, _)| n == "etc/passwd"));
        let cfg: serde_json::Value = serde_json::from_slice(&img.config).unwrap();
        assert_eq!(cfg["rootfs"]["diff_ids"][0], json!(l.diff_id));
        assert_eq!(cfg["config"]["Cmd"], json!(["sh"]));
        assert_eq!(sha256_digest(&img.config), img.config_digest);
        // Deterministic across builds.
        assert_eq!(busybox().unwrap().config_digest, img.config_digest);
    }

    #[test]
    fn layered_covers_three_encodings_and_whiteouts() {
        let img = layered().unwrap();
        let enc: Vec<_> = img.layers.iter().map(|l| l.compression).collect();
        assert_eq!(
            enc,
            [Compression::Gzip, Compression::None, Compression::Zstd]
        );
        let tar3 = zstd::decode_all(&img.layers[2].blob[..]).unwrap();
        assert_eq!(sha256_digest(&tar3), img.layers[2].diff_id);
        let names: Vec<String> = entries(&tar3).into_iter().map(|(n, _)| n).collect();
        for want in [
            "data/.wh.a",
            "data/dir/.wh..wh..opq",
            "data/dir/y",
            ".wh.gone",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing in {names:?}"
            );
        }
        assert_eq!(sha256_digest(&img.layers[1].blob), img.layers[1].diff_id);
    }

    #[test]
    fn web_config_has_port_and_cmd() {
        let img = web().unwrap();
        let cfg: serde_json::Value = serde_json::from_slice(&img.config).unwrap();
        assert_eq!(cfg["config"]["ExposedPorts"], json!({"80/tcp": {}}));
        assert_eq!(cfg["config"]["Cmd"][0], json!("httpd"));
        let arm = img.for_architecture("arm64").unwrap();
        assert_ne!(arm.config_digest, img.config_digest);
        assert_eq!(arm.layers[1].digest, img.layers[1].digest);
    }
}

/// Deterministic incompressible bytes (xorshift), so a layer has real size on the wire and on
/// disk.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
