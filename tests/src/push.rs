//! A small distribution-v2 push client, used to seed test registries.
//!
//! Hand-written (rather than driving skopeo) so seeding stays in-process and fast, and so the
//! exact manifest bytes, and therefore digests, are known to the tests.

use serde_json::json;

use crate::http::{self, Response};
use crate::image::Image;
use crate::netns::NetNs;
use crate::registry::Credentials;
use crate::{sha256_digest, Error, Result};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Which manifest shape to push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// Docker image manifest v2 schema 2.
    DockerSchema2,
    /// OCI image manifest.
    Oci,
    /// OCI index with the image (linux/amd64) plus a bogus linux/arm64 entry.
    OciIndex,
}

/// Where to push: a registry inside a namespace, with optional basic auth.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub ns: &'a NetNs,
    pub addr: &'a str,
    pub auth: Option<&'a Credentials>,
}

/// What a push produced.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Digest of the manifest the tag points at (the index digest for [`ManifestFormat::OciIndex`]).
    pub digest: String,
    /// The bytes stored under that digest.
    pub manifest: Vec<u8>,
    pub media_type: &'static str,
    /// Digest of the linux/amd64 image manifest (same as `digest` unless an index was pushed).
    pub platform_digest: String,
    /// Config digest of the linux/amd64 image: Docker's image ID.
    pub config_digest: String,
}

/// Render the image manifest bytes for `image` (schema2 or OCI).
pub fn image_manifest(image: &Image, oci: bool) -> Vec<u8> {
    let layers: Vec<_> = image
        .layers
        .iter()
        .map(|l| {
            json!({
                "mediaType": if oci { l.compression.oci_media_type() } else { l.compression.docker_media_type() },
                "size": l.blob.len(),
                "digest": l.digest,
            })
        })
        .collect();
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": if oci { OCI_MANIFEST } else { DOCKER_MANIFEST },
        "config": {
            "mediaType": if oci { OCI_CONFIG } else { DOCKER_CONFIG },
            "size": image.config.len(),
            "digest": image.config_digest,
        },
        "layers": layers,
    });
    serde_json::to_vec_pretty(&doc).expect("json of plain values")
}

/// Render an OCI index listing `(manifest bytes, architecture)` entries for linux.
pub fn index_manifest(entries: &[(&[u8], &str)]) -> Vec<u8> {
    let manifests: Vec<_> = entries
        .iter()
        .map(|(m, arch)| {
            json!({
                "mediaType": OCI_MANIFEST,
                "size": m.len(),
                "digest": sha256_digest(m),
                "platform": {"architecture": arch, "os": "linux"},
            })
        })
        .collect();
    serde_json::to_vec_pretty(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
    )
    .expect("json of plain values")
}

impl Target<'_> {
    fn req(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        let auth_header;
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(c) = self.auth {
            auth_header = c.basic_header();
            headers.push(("Authorization", &auth_header));
        }
        http::request(self.ns, method, self.addr, path, &headers, body)
    }

    /// Upload a blob unless the registry already has it (HEAD, then POST + monolithic PUT).
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> Result<String> {
        let digest = sha256_digest(data);
        let head = self.req("HEAD", &format!("/v2/{repo}/blobs/{digest}"), &[], b"")?;
        if head.status == 200 {
            return Ok(digest);
        }
        let start = self.req("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"")?;
        if start.status != 202 {
            return Err(Error::Protocol(format!(
                "start upload: {} {}",
                start.status,
                start.text()
            )));
        }
        let loc = start
            .header("location")
            .ok_or_else(|| Error::Protocol("upload without Location".into()))?;
        // The registry answers with an absolute URL; keep only path + query.
        let path = match loc.find("://") {
            Some(i) => loc[i + 3..]
                .find('/')
                .map(|j| loc[i + 3 + j..].to_string())
                .unwrap_or_default(),
            None => loc.to_string(),
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let put = self.req(
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            data,
        )?;
        if put.status != 201 {
            return Err(Error::Protocol(format!(
                "put blob {digest}: {} {}",
                put.status,
                put.text()
            )));
        }
        Ok(digest)
    }

    /// PUT a manifest under a tag or digest reference.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<String> {
        let r = self.req(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            body,
        )?;
        if r.status != 201 {
            return Err(Error::Protocol(format!(
                "put manifest {repo}:{reference}: {} {}",
                r.status,
                r.text()
            )));
        }
        let digest = sha256_digest(body);
        if let Some(d) = r.header("docker-content-digest") {
            if d != digest {
                return Err(Error::Protocol(format!(
                    "registry says {d}, we computed {digest}"
                )));
            }
        }
        Ok(digest)
    }

    /// GET a manifest (accepting every type we push); returns (content type, bytes).
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<(String, Vec<u8>)> {
        let accept = [DOCKER_MANIFEST, OCI_MANIFEST, OCI_INDEX].join(", ");
        let r = self.req(
            "GET",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", &accept)],
            b"",
        )?;
        if r.status != 200 {
            return Err(Error::Protocol(format!(
                "get manifest {repo}:{reference}: {} {}",
                r.status,
                r.text()
            )));
        }
        Ok((
            r.header("content-type").unwrap_or_default().to_string(),
            r.body,
        ))
    }

    /// GET a blob's bytes.
    pub fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>> {
        let r = self.req("GET", &format!("/v2/{repo}/blobs/{digest}"), &[], b"")?;
        if r.status != 200 {
            return Err(Error::Protocol(format!("get blob {digest}: {}", r.status)));
        }
        Ok(r.body)
    }

    fn push_image_blobs(&self, repo: &str, image: &Image) -> Result<()> {
        for l in &image.layers {
            self.push_blob(repo, &l.blob)?;
        }
        self.push_blob(repo, &image.config)?;
        Ok(())
    }

    /// Push `image` as `repo:tag` in the given format.
    pub fn push_image(
        &self,
        repo: &str,
        tag: &str,
        image: &Image,
        format: ManifestFormat,
    ) -> Result<Pushed> {
        self.push_image_blobs(repo, image)?;
        match format {
            ManifestFormat::DockerSchema2 | ManifestFormat::Oci => {
                let oci = format == ManifestFormat::Oci;
                let media_type = if oci { OCI_MANIFEST } else { DOCKER_MANIFEST };
                let manifest = image_manifest(image, oci);
                let digest = self.push_manifest(repo, tag, media_type, &manifest)?;
                Ok(Pushed {
                    platform_digest: digest.clone(),
                    digest,
                    manifest,
                    media_type,
                    config_digest: image.config_digest.clone(),
                })
            }
            ManifestFormat::OciIndex => {
                let amd64 = image_manifest(image, true);
                let amd64_digest =
                    self.push_manifest(repo, &sha256_digest(&amd64), OCI_MANIFEST, &amd64)?;
                let arm = image.for_architecture("arm64")?;
                self.push_blob(repo, &arm.config)?;
                let arm_manifest = image_manifest(&arm, true);
                self.push_manifest(
                    repo,
                    &sha256_digest(&arm_manifest),
                    OCI_MANIFEST,
                    &arm_manifest,
                )?;
                // arm64 first so a client that ignores the platform picks the wrong one.
                let index = index_manifest(&[(&arm_manifest, "arm64"), (&amd64, "amd64")]);
                let digest = self.push_manifest(repo, tag, OCI_INDEX, &index)?;
                Ok(Pushed {
                    digest,
                    manifest: index,
                    media_type: OCI_INDEX,
                    platform_digest: amd64_digest,
                    config_digest: image.config_digest.clone(),
                })
            }
        }
    }
}
