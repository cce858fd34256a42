//! Manifest and index parsing, platform selection and layer media types.
//!
//! Hand-written serde structs rather than `oci-spec` types: we must accept Docker schema2 and OCI
//! side by side, validate digests/sizes/counts ourselves with clear messages, and reject schema1
//! explicitly, none of which the generic OCI types do for us.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::RegistryError;

pub const DOCKER_MANIFEST_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_MANIFEST_SCHEMA1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_MANIFEST_SCHEMA2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER_NONDIST_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_LAYER_NONDIST_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_LAYER_NONDIST_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

/// Value for the Accept header of manifest requests (schema1 deliberately absent).
pub const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// At most this many layers in a manifest / entries in an index (guards memory and fan-out).
pub const MAX_ENTRIES: usize = 1000;
/// Largest descriptor size we accept (1 TiB): bigger claims are nonsense or hostile.
pub const MAX_DESCRIPTOR_SIZE: u64 = 1 << 40;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub platform: Option<Platform>,
    pub annotations: BTreeMap<String, String>,
    pub urls: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageManifest {
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageIndex {
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParsedManifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPlatform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    // i128 so a negative or huge size is reported by our check, not as a serde type error.
    size: i128,
    #[serde(default)]
    platform: Option<RawPlatform>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    // schema1 marker fields
    #[serde(default)]
    fs_layers: Option<serde_json::Value>,
}

/// True for a `sha256:<64 lowercase hex>` digest, the only form we accept.
pub fn is_valid_digest(d: &str) -> bool {
    match d.strip_prefix("sha256:") {
        Some(hex) => {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
        None => false,
    }
}

/// Strips parameters and case from a Content-Type value.
fn normalize_media_type(mt: &str) -> String {
    mt.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_generic(mt: &str) -> bool {
    matches!(
        mt,
        "" | "application/json" | "text/plain" | "application/octet-stream"
    )
}

fn schema1_error() -> RegistryError {
    RegistryError::UnsupportedMediaType(
        "Docker Image manifest version 2, schema 1 is deprecated and not supported; \
         the image must be re-pushed with a current client"
            .into(),
    )
}

/// The manifest media type of `bytes`, from the body's `mediaType` or its shape. Used when the
/// registry sent no (or a generic) Content-Type.
pub fn detect_media_type(bytes: &[u8]) -> Result<String, RegistryError> {
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::InvalidManifest(format!("not valid manifest JSON: {e}")))?;
    detect_raw(&raw)
}

fn detect_raw(raw: &RawManifest) -> Result<String, RegistryError> {
    if raw.schema_version == Some(1) || raw.fs_layers.is_some() {
        return Err(schema1_error());
    }
    if let Some(mt) = raw
        .media_type
        .as_deref()
        .map(normalize_media_type)
        .filter(|m| !m.is_empty())
    {
        return Ok(mt);
    }
    if raw.manifests.is_some() {
        Ok(OCI_INDEX.to_string())
    } else if raw.config.is_some() {
        Ok(OCI_MANIFEST.to_string())
    } else {
        Err(RegistryError::InvalidManifest(
            "cannot tell manifest type: no mediaType, config or manifests".into(),
        ))
    }
}

fn convert_descriptor(d: RawDescriptor, what: &str) -> Result<Descriptor, RegistryError> {
    if d.media_type.is_empty() {
        return Err(RegistryError::InvalidManifest(format!(
            "{what}: missing mediaType"
        )));
    }
    if !is_valid_digest(&d.digest) {
        return Err(RegistryError::InvalidManifest(format!(
            "{what}: invalid digest {:?}",
            d.digest
        )));
    }
    if d.size < 0 || d.size > MAX_DESCRIPTOR_SIZE as i128 {
        return Err(RegistryError::InvalidManifest(format!(
            "{what}: invalid size {}",
            d.size
        )));
    }
    let platform = match d.platform {
        Some(p) => {
            if p.os.is_empty() || p.architecture.is_empty() {
                return Err(RegistryError::InvalidManifest(format!(
                    "{what}: platform without os/architecture"
                )));
            }
            Some(Platform {
                os: p.os,
                architecture: p.architecture,
                variant: p.variant.filter(|v| !v.is_empty()),
            })
        }
        None => None,
    };
    Ok(Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size as u64,
        platform,
        annotations: d.annotations.unwrap_or_default(),
        urls: d.urls.unwrap_or_default(),
    })
}

/// Parses a manifest or index. `media_type` is the Content-Type; if it is missing or generic the
/// body's own `mediaType` (or its shape) decides. A body `mediaType` that contradicts a specific
/// Content-Type is rejected, so a registry cannot make us read one format as another.
pub fn parse(media_type: &str, bytes: &[u8]) -> Result<ParsedManifest, RegistryError> {
    let header_mt = normalize_media_type(media_type);
    if header_mt == DOCKER_MANIFEST_SCHEMA1 || header_mt == DOCKER_MANIFEST_SCHEMA1_SIGNED {
        return Err(schema1_error());
    }
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::InvalidManifest(format!("not valid manifest JSON: {e}")))?;
    let mt = if is_generic(&header_mt) {
        detect_raw(&raw)?
    } else {
        header_mt
    };
    if mt == DOCKER_MANIFEST_SCHEMA1
        || mt == DOCKER_MANIFEST_SCHEMA1_SIGNED
        || raw.schema_version == Some(1)
    {
        return Err(schema1_error());
    }
    if let Some(body_mt) = raw
        .media_type
        .as_deref()
        .map(normalize_media_type)
        .filter(|m| !m.is_empty())
    {
        if body_mt != mt {
            return Err(RegistryError::InvalidManifest(format!(
                "mediaType {body_mt} in body does not match {mt}"
            )));
        }
    }
    let is_image = match mt.as_str() {
        DOCKER_MANIFEST_SCHEMA2 | OCI_MANIFEST => true,
        DOCKER_MANIFEST_LIST | OCI_INDEX => false,
        other => return Err(RegistryError::UnsupportedMediaType(other.to_string())),
    };
    if raw.schema_version != Some(2) {
        return Err(RegistryError::InvalidManifest(format!(
            "unsupported schemaVersion {:?}",
            raw.schema_version
        )));
    }
    if is_image {
        let config = raw.config.ok_or_else(|| {
            RegistryError::InvalidManifest("image manifest without config".into())
        })?;
        let layers = raw.layers.unwrap_or_default();
        if layers.len() > MAX_ENTRIES {
            return Err(RegistryError::InvalidManifest(format!(
                "{} layers exceeds the limit of {MAX_ENTRIES}",
                layers.len()
            )));
        }
        let config = convert_descriptor(config, "config")?;
        let layers = layers
            .into_iter()
            .enumerate()
            .map(|(i, d)| convert_descriptor(d, &format!("layer {i}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ParsedManifest::Image(ImageManifest {
            media_type: mt,
            config,
            layers,
        }))
    } else {
        let manifests = raw
            .manifests
            .ok_or_else(|| RegistryError::InvalidManifest("index without manifests".into()))?;
        if manifests.len() > MAX_ENTRIES {
            return Err(RegistryError::InvalidManifest(format!(
                "{} manifests exceeds the limit of {MAX_ENTRIES}",
                manifests.len()
            )));
        }
        let manifests = manifests
            .into_iter()
            .enumerate()
            .map(|(i, d)| convert_descriptor(d, &format!("manifest {i}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ParsedManifest::Index(ImageIndex {
            media_type: mt,
            manifests,
        }))
    }
}

/// Canonical (OCI/GOARCH) architecture name and default variant, so "x86_64"/"aarch64" etc. match.
fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant
        .map(|v| v.to_ascii_lowercase())
        .filter(|v| !v.is_empty());
    match arch.as_str() {
        "x86_64" | "x86-64" | "amd64" => {
            // amd64 has no variant in practice; "v1" is the baseline and means the same.
            let v = variant.filter(|v| v != "v1");
            ("amd64".into(), v)
        }
        "i386" | "i686" | "386" => ("386".into(), None),
        "aarch64" | "arm64" => {
            let v = match variant.as_deref() {
                None | Some("8") | Some("v8") => "v8".to_string(),
                Some(v) => v.to_string(),
            };
            ("arm64".into(), Some(v))
        }
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => {
            let v = match variant.as_deref() {
                None | Some("7") | Some("v7") => "v7".to_string(),
                Some("5") => "v5".into(),
                Some("6") => "v6".into(),
                Some("8") => "v8".into(),
                Some(v) => v.to_string(),
            };
            ("arm".into(), Some(v))
        }
        _ => (arch, variant),
    }
}

fn arm_level(v: &str) -> Option<u32> {
    v.strip_prefix('v').and_then(|n| n.parse().ok())
}

fn is_attestation(d: &Descriptor) -> bool {
    d.annotations
        .get("vnd.docker.reference.type")
        .map(|s| s.as_str())
        == Some("attestation-manifest")
        || matches!(&d.platform, Some(p) if p.os == "unknown" && p.architecture == "unknown")
}

/// Picks the index entry for os/arch(/variant). An exact (normalised) variant match wins, a
/// literally identical variant string breaks ties; for 32-bit arm an older variant is accepted
/// as a fallback (a v7 CPU runs v6 code). Attestation entries are never chosen.
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    os: &str,
    arch: &str,
    variant: Option<&str>,
) -> Option<&'a Descriptor> {
    let (want_arch, want_var) = normalize_arch(arch, variant);
    let os = os.to_ascii_lowercase();
    let mut best: Option<(u32, &Descriptor)> = None;
    for d in &index.manifests {
        if is_attestation(d) {
            continue;
        }
        let Some(p) = &d.platform else { continue };
        if p.os.to_ascii_lowercase() != os {
            continue;
        }
        let (arch_n, var_n) = normalize_arch(&p.architecture, p.variant.as_deref());
        if arch_n != want_arch {
            continue;
        }
        let score = if var_n == want_var {
            if p.variant.as_deref() == variant {
                1001
            } else {
                1000
            }
        } else if want_arch == "arm" {
            match (
                var_n.as_deref().and_then(arm_level),
                want_var.as_deref().and_then(arm_level),
            ) {
                (Some(have), Some(want)) if have < want => have,
                _ => continue,
            }
        } else {
            continue;
        };
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, d));
        }
    }
    best.map(|(_, d)| d)
}

/// Compression of a layer blob from its media type; unknown layer types are an error because
/// guessing would unpack garbage.
pub fn layer_compression(media_type: &str) -> Result<Compression, RegistryError> {
    match normalize_media_type(media_type).as_str() {
        DOCKER_LAYER_TAR | OCI_LAYER_TAR | OCI_LAYER_NONDIST_TAR => Ok(Compression::None),
        DOCKER_LAYER_GZIP | DOCKER_FOREIGN_LAYER_GZIP | OCI_LAYER_GZIP | OCI_LAYER_NONDIST_GZIP => {
            Ok(Compression::Gzip)
        }
        DOCKER_LAYER_ZSTD | OCI_LAYER_ZSTD | OCI_LAYER_NONDIST_ZSTD => Ok(Compression::Zstd),
        other => Err(RegistryError::UnsupportedMediaType(format!(
            "layer media type {other}"
        ))),
    }
}

/// The platform this binary runs on, in OCI/GOARCH names.
pub fn host_platform() -> Platform {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "x86" => ("386", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => (
            "arm",
            Some(if cfg!(target_feature = "v7") {
                "v7"
            } else {
                "v6"
            }),
        ),
        "powerpc64" => (
            if cfg!(target_endian = "little") {
                "ppc64le"
            } else {
                "ppc64"
            },
            None,
        ),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        "loongarch64" => ("loong64", None),
        "mips64" => (
            if cfg!(target_endian = "little") {
                "mips64le"
            } else {
                "mips64"
            },
            None,
        ),
        other => (other, None),
    };
    Platform {
        os: std::env::consts::OS.to_string(),
        architecture: arch.to_string(),
        variant: variant.map(String::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image_json(mt: Option<&str>, layer_mt: &str) -> String {
        let mt = mt
            .map(|m| format!(r#""mediaType":"{m}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"{DOCKER_IMAGE_CONFIG}","digest":"{D1}","size":1469}},
            "layers":[{{"mediaType":"{layer_mt}","digest":"{D2}","size":2591575}}]}}"#
        )
    }

    fn index_json(mt: &str, entries: &[(&str, &str, Option<&str>)]) -> String {
        let ms: Vec<String> = entries
            .iter()
            .enumerate()
            .map(|(i, (os, arch, var))| {
                let var = var.map(|v| format!(r#","variant":"{v}""#)).unwrap_or_default();
                format!(
                    r#"{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{:064x}","size":500,"platform":{{"os":"{os}","architecture":"{arch}"{var}}}}}"#,
                    i + 1
                )
            })
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{mt}","manifests":[{}]}}"#,
            ms.join(",")
        )
    }

    #[test]
    fn docker_schema2() {
        let j = image_json(Some(DOCKER_MANIFEST_SCHEMA2), DOCKER_LAYER_GZIP);
        let ParsedManifest::Image(m) = parse(DOCKER_MANIFEST_SCHEMA2, j.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(m.media_type, DOCKER_MANIFEST_SCHEMA2);
        assert_eq!(m.config.digest, D1);
        assert_eq!(m.config.size, 1469);
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].size, 2591575);
        assert_eq!(
            layer_compression(&m.layers[0].media_type).unwrap(),
            Compression::Gzip
        );
    }

    #[test]
    fn oci_manifest_without_body_media_type_and_generic_content_type() {
        let j = image_json(None, OCI_LAYER_ZSTD);
        // Content-Type with parameters is normalised.
        let ParsedManifest::Image(m) = parse(
            "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
            j.as_bytes(),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(m.media_type, OCI_MANIFEST);
        // No Content-Type: shape says OCI manifest.
        let ParsedManifest::Image(m) = parse("", j.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(
            layer_compression(&m.layers[0].media_type).unwrap(),
            Compression::Zstd
        );
    }

    #[test]
    fn docker_manifest_list_and_oci_index() {
        let j = index_json(
            DOCKER_MANIFEST_LIST,
            &[("linux", "amd64", None), ("linux", "arm", Some("v7"))],
        );
        let ParsedManifest::Index(i) = parse(DOCKER_MANIFEST_LIST, j.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(i.manifests.len(), 2);
        assert_eq!(
            i.manifests[1].platform.as_ref().unwrap().variant.as_deref(),
            Some("v7")
        );
        let j = index_json(OCI_INDEX, &[("linux", "amd64", None)]);
        // generic content type: body's mediaType decides
        let ParsedManifest::Index(i) = parse("application/json", j.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(i.media_type, OCI_INDEX);
    }

    #[test]
    fn rejects_schema1() {
        let j = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let e = parse(DOCKER_MANIFEST_SCHEMA1_SIGNED, j.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("schema 1"), "{e}");
        let e = parse("application/json", j.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("schema 1"), "{e}");
    }

    #[test]
    fn rejects_bad_digests_and_sizes() {
        let good = image_json(Some(DOCKER_MANIFEST_SCHEMA2), DOCKER_LAYER_GZIP);
        for bad in [
            "sha256:ABCD111111111111111111111111111111111111111111111111111111111111",
            "sha256:111",
            "sha512:1111111111111111111111111111111111111111111111111111111111111111",
            "sha256:../../../../11111111111111111111111111111111111111111111111111111",
        ] {
            let j = good.replace(D2, bad);
            assert!(
                matches!(
                    parse(DOCKER_MANIFEST_SCHEMA2, j.as_bytes()),
                    Err(RegistryError::InvalidManifest(_))
                ),
                "{bad}"
            );
        }
        let j = good.replace("2591575", "-1");
        assert!(matches!(
            parse(DOCKER_MANIFEST_SCHEMA2, j.as_bytes()),
            Err(RegistryError::InvalidManifest(_))
        ));
        let j = good.replace("2591575", "99999999999999999999");
        assert!(matches!(
            parse(DOCKER_MANIFEST_SCHEMA2, j.as_bytes()),
            Err(RegistryError::InvalidManifest(_))
        ));
    }

    #[test]
    fn rejects_too_many_layers() {
        let layer = format!(r#"{{"mediaType":"{OCI_LAYER_GZIP}","digest":"{D2}","size":1}}"#);
        let layers = vec![layer; MAX_ENTRIES + 1].join(",");
        let j = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{D1}","size":2}},"layers":[{layers}]}}"#
        );
        let e = parse(OCI_MANIFEST, j.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("exceeds"), "{e}");
    }

    #[test]
    fn rejects_unknown_and_mismatched_types() {
        let j = image_json(None, OCI_LAYER_GZIP);
        assert!(matches!(
            parse("application/vnd.example+json", j.as_bytes()),
            Err(RegistryError::UnsupportedMediaType(_))
        ));
        let j = image_json(Some(OCI_MANIFEST), OCI_LAYER_GZIP);
        assert!(matches!(
            parse(DOCKER_MANIFEST_LIST, j.as_bytes()),
            Err(RegistryError::InvalidManifest(_))
        ));
        assert!(matches!(
            parse(OCI_MANIFEST, b"not json"),
            Err(RegistryError::InvalidManifest(_))
        ));
        assert!(layer_compression("application/vnd.example.layer").is_err());
        assert_eq!(layer_compression(OCI_LAYER_TAR).unwrap(), Compression::None);
        assert_eq!(
            layer_compression(DOCKER_FOREIGN_LAYER_GZIP).unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            layer_compression(OCI_LAYER_NONDIST_ZSTD).unwrap(),
            Compression::Zstd
        );
    }

    fn index(entries: &[(&str, &str, Option<&str>)]) -> ImageIndex {
        let j = index_json(OCI_INDEX, entries);
        match parse(OCI_INDEX, j.as_bytes()).unwrap() {
            ParsedManifest::Index(i) => i,
            _ => panic!(),
        }
    }

    fn pick(i: &ImageIndex, os: &str, arch: &str, v: Option<&str>) -> Option<usize> {
        select_platform(i, os, arch, v).map(|d| {
            i.manifests
                .iter()
                .position(|x| x.digest == d.digest)
                .unwrap()
        })
    }

    #[test]
    fn platform_selection() {
        let i = index(&[
            ("unknown", "unknown", None),
            ("linux", "amd64", None),
            ("linux", "arm", Some("v6")),
            ("linux", "arm", Some("v7")),
            ("linux", "arm64", Some("v8")),
            ("windows", "amd64", None),
        ]);
        assert_eq!(pick(&i, "linux", "amd64", None), Some(1));
        assert_eq!(pick(&i, "linux", "x86_64", None), Some(1));
        assert_eq!(pick(&i, "linux", "arm64", None), Some(4));
        assert_eq!(pick(&i, "linux", "arm", Some("v7")), Some(3));
        assert_eq!(pick(&i, "linux", "arm", Some("v6")), Some(2));
        assert_eq!(pick(&i, "windows", "amd64", None), Some(5));
        assert_eq!(pick(&i, "linux", "s390x", None), None);
        assert_eq!(pick(&i, "unknown", "unknown", None), None);

        // arm64 without a variant matches a v8 request; v7 host falls back to v6.
        let i = index(&[("linux", "arm64", None), ("linux", "arm", Some("v6"))]);
        assert_eq!(pick(&i, "linux", "arm64", Some("v8")), Some(0));
        assert_eq!(pick(&i, "linux", "arm", Some("v7")), Some(1));
        assert_eq!(pick(&i, "linux", "arm", Some("v5")), None);

        // Exact variant string preferred over an equivalent one.
        let i = index(&[("linux", "arm64", None), ("linux", "arm64", Some("v8"))]);
        assert_eq!(pick(&i, "linux", "arm64", Some("v8")), Some(1));
        assert_eq!(pick(&i, "linux", "arm64", None), Some(0));
    }

    #[test]
    fn attestation_annotation_skipped() {
        let mut i = index(&[("linux", "amd64", None), ("linux", "amd64", None)]);
        i.manifests[0].annotations.insert(
            "vnd.docker.reference.type".into(),
            "attestation-manifest".into(),
        );
        assert_eq!(pick(&i, "linux", "amd64", None), Some(1));
    }

    #[test]
    fn host_platform_is_goarch() {
        let p = host_platform();
        assert_eq!(p.os, std::env::consts::OS);
        assert_ne!(p.architecture, "x86_64");
        assert_ne!(p.architecture, "aarch64");
    }
}
