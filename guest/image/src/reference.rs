//! Image references with Docker's normalization rules
//! (github.com/distribution/reference grammar, re-implemented by hand because
//! there is no maintained Rust crate with Docker's exact normalization; the
//! grammar is small and the table tests below pin it).

use std::fmt;

use crate::digest::{is_hex64, Digest};
use crate::error::ImageError;

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const MAX_NAME: usize = 255;

/// A normalized image reference.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

fn invalid(s: &str, why: &str) -> ImageError {
    // Truncate: names can be attacker-sized and end up in logs and API errors.
    ImageError::InvalidReference(format!("{:.100}: {why}", s))
}

impl Reference {
    /// Parses and normalizes; adds tag "latest" when neither tag nor digest is given.
    pub fn parse(s: &str) -> Result<Reference, ImageError> {
        let mut r = Self::parse_name(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some("latest".into());
        }
        Ok(r)
    }

    /// Parses and normalizes, never adding a default tag.
    pub fn parse_name(s: &str) -> Result<Reference, ImageError> {
        if s.is_empty() {
            return Err(invalid(s, "empty"));
        }
        if s.len() > 4096 {
            return Err(invalid(s, "too long"));
        }
        if is_hex64(s) {
            return Err(invalid(s, "cannot specify 64-byte hexadecimal strings"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d).map_err(|_| invalid(s, "invalid digest"))?)),
            None => (s, None),
        };
        // Tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(invalid(s, "invalid tag"));
            }
        }
        let (registry, repository) = split_domain(name);
        if !valid_domain(&registry) {
            return Err(invalid(s, "invalid registry"));
        }
        if repository.is_empty() {
            return Err(invalid(s, "empty repository"));
        }
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid(s, "repository name must be lowercase"));
        }
        if !repository.split('/').all(valid_path_component) {
            return Err(invalid(s, "invalid repository name"));
        }
        if registry.len() + 1 + repository.len() > MAX_NAME {
            return Err(invalid(s, "repository name must not be more than 255 characters"));
        }
        Ok(Reference { registry, repository, tag: tag.map(str::to_string), digest })
    }

    /// Same repository with a different tag (digest dropped).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ImageError> {
        if !valid_tag(tag) {
            return Err(invalid(tag, "invalid tag"));
        }
        Ok(Reference { tag: Some(tag.to_string()), digest: None, ..self.clone() })
    }

    /// Same repository pinned to a digest (tag dropped).
    pub fn with_digest(&self, d: &Digest) -> Reference {
        Reference { tag: None, digest: Some(d.clone()), ..self.clone() }
    }

    /// "busybox", "user/repo", "127.0.0.1:5000/x".
    pub fn familiar_name(&self) -> String {
        if self.registry == DEFAULT_DOMAIN {
            match self.repository.strip_prefix(OFFICIAL_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.full_name()
        }
    }

    /// "busybox:latest", "127.0.0.1:5000/x@sha256:...".
    pub fn familiar_string(&self) -> String {
        self.with_suffix(self.familiar_name())
    }

    /// "docker.io/library/busybox".
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    fn with_suffix(&self, mut s: String) -> String {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.with_suffix(self.full_name()))
    }
}

impl std::str::FromStr for Reference {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Splits off the registry the way Docker does: the first component is a
/// registry only if it contains '.' or ':', is "localhost", or has uppercase.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !rest.contains('/') {
        rest = format!("{OFFICIAL_PREFIX}{rest}");
    }
    (domain, rest)
}

/// tag: [\w][\w.-]{0,127}
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    let w = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    !b.is_empty() && b.len() <= 128 && w(b[0]) && b[1..].iter().all(|&c| w(c) || c == b'.' || c == b'-')
}

/// Distribution's path-component grammar: `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
/// Shared with the registry client, which checks names before they go into URLs.
pub fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // separator run
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// domain: host components separated by '.', or [ipv6], optional :port.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, after)) => {
                if v6.is_empty() || !v6.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
                    return false;
                }
                match after {
                    "" => return true,
                    p => match p.strip_prefix(':') {
                        Some(p) => ("x", Some(p)),
                        None => return false,
                    },
                }
            }
            None => return false,
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        })
}

/// True if `s` looks like an image ID or ID prefix (hex, optionally "sha256:")
/// rather than a name.
pub fn looks_like_id(s: &str) -> bool {
    let h = s.strip_prefix("sha256:").unwrap_or(s);
    !h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalize_table() {
        // input, Display, familiar_string, familiar_name
        let d = format!("127.0.0.1:5000/a/b@{D}");
        let dt = format!("busybox:1.36@{D}");
        let dt_full = format!("docker.io/library/busybox:1.36@{D}");
        let cases: Vec<(&str, &str, &str, &str)> = vec![
            ("busybox", "docker.io/library/busybox:latest", "busybox:latest", "busybox"),
            ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36", "busybox"),
            ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest", "busybox"),
            ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest", "busybox"),
            ("index.docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest", "busybox"),
            ("user/repo", "docker.io/user/repo:latest", "user/repo:latest", "user/repo"),
            ("docker.io/library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest", "library/a/b"),
            ("127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b"),
            ("localhost/x", "localhost/x:latest", "localhost/x:latest", "localhost/x"),
            ("localhost:5000/x:v1.0-rc_1", "localhost:5000/x:v1.0-rc_1", "localhost:5000/x:v1.0-rc_1", "localhost:5000/x"),
            ("Example.com/x", "Example.com/x:latest", "Example.com/x:latest", "Example.com/x"),
            ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000/x:latest", "[::1]:5000/x"),
            ("a.b-c/d__e/f-g.h_i", "a.b-c/d__e/f-g.h_i:latest", "a.b-c/d__e/f-g.h_i:latest", "a.b-c/d__e/f-g.h_i"),
            ("a/b---c", "docker.io/a/b---c:latest", "a/b---c:latest", "a/b---c"),
            (d.as_str(), d.as_str(), d.as_str(), "127.0.0.1:5000/a/b"),
            (dt.as_str(), dt_full.as_str(), dt.as_str(), "busybox"),
        ];
        for (input, full, fam, famname) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), full, "{input}");
            assert_eq!(r.familiar_string(), fam, "{input}");
            assert_eq!(r.familiar_name(), famname, "{input}");
            // Round trip through Display is stable.
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r, "{input}");
        }
    }

    #[test]
    fn parse_name_adds_no_tag() {
        let r = Reference::parse_name("127.0.0.1:5000/x").unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.full_name(), "127.0.0.1:5000/x");
        let r2 = r.with_tag("v2").unwrap();
        assert_eq!(r2.to_string(), "127.0.0.1:5000/x:v2");
        assert!(r.with_tag("-bad").is_err());
        let r3 = Reference::parse(&format!("x@{D}")).unwrap();
        assert_eq!(r3.tag, None);
    }

    #[test]
    fn rejects_invalid() {
        let long = "a".repeat(10_000);
        let long_ok_len = format!("{}/{}", "r.io", "a".repeat(251)); // 256 total
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let cases = [
            "", "../x", "a/../b", "./a", "Busybox", "user/Repo", "a//b", "/a", "a/", "a:", ":t",
            "a:-t", "a@sha256:123", "a@md5:d41d8cd98f00b204e9800998ecf8427e", "a b", "a/b c", "a..b",
            "-a", "a-", "a___b", "a.:5000/b", "host:port/x", "a@", "@sha256:00", long.as_str(),
            long_ok_len.as_str(), hex,
        ];
        for s in cases {
            match Reference::parse(s) {
                Err(ImageError::InvalidReference(_)) => {}
                other => panic!("{s:.40}: expected InvalidReference, got {other:?}"),
            }
        }
        let tag129 = format!("a:{}", "t".repeat(129));
        assert!(Reference::parse(&tag129).is_err());
        let tag128 = format!("a:{}", "t".repeat(128));
        assert!(Reference::parse(&tag128).is_ok());
    }

    #[test]
    fn id_detection() {
        assert!(looks_like_id("abc123"));
        assert!(looks_like_id("sha256:abc"));
        assert!(!looks_like_id("busybox"));
        assert!(!looks_like_id(""));
        assert!(!looks_like_id("sha256:"));
        assert!(!looks_like_id("ABC"));
        assert!(!looks_like_id(&"a".repeat(65)));
    }
}
