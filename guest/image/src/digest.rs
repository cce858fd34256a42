//! Content digests. Only sha256 is accepted: it is the only algorithm Docker
//! images use in practice and accepting others would widen the attack surface.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::ImageError;

const PREFIX: &str = "sha256:";

/// A validated "sha256:<64 lowercase hex>" digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, ImageError> {
        let hex = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| ImageError::InvalidDigest(format!("{s:.80}: only sha256 is supported")))?;
        if !is_hex64(hex) {
            return Err(ImageError::InvalidDigest(format!("{s:.80}: expected 64 lowercase hex characters")));
        }
        Ok(Digest(s.to_string()))
    }

    /// Parses a bare 64-hex string (as used in file names) into a digest.
    pub fn from_hex(hex: &str) -> Result<Digest, ImageError> {
        if !is_hex64(hex) {
            return Err(ImageError::InvalidDigest(format!("{hex:.80}")));
        }
        Ok(Digest(format!("{PREFIX}{hex}")))
    }

    pub fn of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::new();
        h.update(bytes);
        h.finish()
    }

    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    /// The 12-character ID prefix docker prints.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub(crate) fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = ImageError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

/// Incremental sha256 that yields a `Digest`.
#[derive(Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new() -> Self {
        Hasher(Sha256::new())
    }
    pub fn update(&mut self, b: &[u8]) {
        self.0.update(b);
    }
    pub fn finish(self) -> Digest {
        Digest(format!("{PREFIX}{}", hex::encode(self.0.finalize())))
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        let d = Digest::of(b"");
        assert_eq!(d.hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(d.short(), "e3b0c44298fc");
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(j, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&j).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha512:00\"").is_err());
    }

    #[test]
    fn rejects_bad() {
        for s in [
            "",
            "sha256:",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
        ] {
            assert!(Digest::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn hasher_matches_of() {
        let mut h = Hasher::new();
        std::io::Write::write_all(&mut h, b"hello ").unwrap();
        h.update(b"world");
        assert_eq!(h.finish(), Digest::of(b"hello world"));
    }
}
