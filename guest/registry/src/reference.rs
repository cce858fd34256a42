//! Validation of the pieces that go into request URLs (repository names, tags, digests) and
//! normalisation of registry host names. Strict validation keeps path tricks out of URLs.

use berth_image::reference::valid_path_component;

use crate::RegistryError;

/// Registry host Docker Hub is reached at, whatever name the user typed.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// Checks a repository name ("library/busybox").
pub fn validate_repository_name(name: &str) -> Result<(), RegistryError> {
    if name.is_empty() || name.len() > 255 || !name.split('/').all(valid_path_component) {
        return Err(RegistryError::InvalidReference(format!(
            "invalid repository name {name:?}"
        )));
    }
    Ok(())
}

/// True for a tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Checks a manifest reference (tag or `sha256:` digest); returns true if it is a digest.
pub fn validate_manifest_reference(r: &str) -> Result<bool, RegistryError> {
    if crate::manifest::is_valid_digest(r) {
        Ok(true)
    } else if is_tag(r) {
        Ok(false)
    } else {
        Err(RegistryError::InvalidReference(format!(
            "invalid tag or digest {r:?}"
        )))
    }
}

/// Turns whatever the CLI sent as a server address ("https://index.docker.io/v1/",
/// "127.0.0.1:5000", "http://localhost:5000/") into the registry host[:port] used elsewhere;
/// all Docker Hub spellings become "docker.io".
pub fn normalize_registry(server_address: &str) -> String {
    let s = server_address.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or("").to_ascii_lowercase();
    match host.as_str() {
        ""
        | "docker.io"
        | "index.docker.io"
        | "registry-1.docker.io"
        | "registry.hub.docker.com" => "docker.io".to_string(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "library/busybox",
            "a",
            "foo/bar_baz/x.y",
            "a__b",
            "a---b",
            "127.0.0.1/x",
        ] {
            assert!(validate_repository_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Library/x",
            "a/../b",
            "a//b",
            "-a",
            "a_",
            "a/b?x",
            "a%2f",
            "a...b",
        ] {
            assert!(validate_repository_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn references() {
        assert!(!validate_manifest_reference("latest").unwrap());
        assert!(!validate_manifest_reference("1.36.1-musl").unwrap());
        assert!(validate_manifest_reference(&format!("sha256:{}", "a".repeat(64))).unwrap());
        assert!(validate_manifest_reference(".hidden").is_err());
        assert!(validate_manifest_reference("a/b").is_err());
        assert!(validate_manifest_reference(&"x".repeat(129)).is_err());
    }

    #[test]
    fn registry_normalisation() {
        assert_eq!(
            normalize_registry("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalize_registry("registry-1.docker.io"), "docker.io");
        assert_eq!(
            normalize_registry("http://127.0.0.1:5000/"),
            "127.0.0.1:5000"
        );
        assert_eq!(normalize_registry("LocalHost:5000"), "localhost:5000");
    }
}
