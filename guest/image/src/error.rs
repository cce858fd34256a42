//! The crate's single error type.

use crate::digest::Digest;

/// Errors of the image store. Variants are distinct so the engine can map them
/// to HTTP status codes (NotFound -> 404, Conflict -> 409, InvalidReference -> 400...).
#[derive(thiserror::Error, Debug)]
pub enum ImageError {
    #[error("invalid reference format: {0}")]
    InvalidReference(String),
    #[error("invalid digest: {0}")]
    InvalidDigest(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("ambiguous: {0}")]
    Ambiguous(String),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("unsafe layer entry: {0}")]
    UnsafeLayer(String),
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("already in progress: {0}")]
    AlreadyInProgress(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
