//! The crate's single error type, plus decoding of registry error bodies.

use serde::Deserialize;

/// Everything that can go wrong talking to a registry or parsing what it sent.
#[derive(thiserror::Error, Debug)]
pub enum RegistryError {
    /// 401/403, or credentials rejected by the token server. The message is the registry's own
    /// (e.g. "unauthorized: incorrect username or password"), which the CLI shows verbatim.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("registry returned HTTP {status}: {message}")]
    Http { status: u16, message: String },
    #[error("transport error: {0}")]
    Transport(String),
    #[error("invalid reference: {0}")]
    InvalidReference(String),
    /// Malformed `X-Registry-Auth` / auth config JSON.
    #[error("invalid auth config: {0}")]
    InvalidAuthConfig(String),
    /// Client construction failed (TLS setup etc.).
    #[error("client setup: {0}")]
    Setup(String),
}

impl From<reqwest::Error> for RegistryError {
    fn from(e: reqwest::Error) -> Self {
        // reqwest's Display hides the cause chain ("error sending request"); include it so a
        // "connection refused" or TLS failure is visible to the user.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        RegistryError::Transport(msg)
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
    // Token servers (e.g. Docker Hub's) use these instead of `errors`.
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Turns a registry error body into the "code: message" text Docker prints
/// (`MANIFEST_UNKNOWN` -> "manifest unknown: manifest unknown"). Falls back to the status text.
pub(crate) fn error_message(status: u16, body: &[u8]) -> String {
    if let Ok(b) = serde_json::from_slice::<ErrorBody>(body) {
        let parts: Vec<String> = b
            .errors
            .iter()
            .filter(|e| !e.code.is_empty() || !e.message.is_empty())
            .map(|e| {
                let code = e.code.to_ascii_lowercase().replace('_', " ");
                match (code.is_empty(), e.message.is_empty()) {
                    (false, false) => format!("{code}: {}", e.message),
                    (false, true) => code,
                    _ => e.message.clone(),
                }
            })
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
        let text = b
            .details
            .or(b.error_description)
            .or(b.message)
            .or(b.error)
            .filter(|s| !s.is_empty());
        if let Some(t) = text {
            return if status == 401 {
                format!("unauthorized: {t}")
            } else {
                t
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if !text.is_empty() && text.len() <= 200 && !text.starts_with('<') {
        return text.to_string();
    }
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| r.to_ascii_lowercase())
        .unwrap_or_else(|| format!("status {status}"))
}

/// Maps a failed status + body to the matching error variant.
pub(crate) fn error_for_status(status: u16, body: &[u8]) -> RegistryError {
    let message = error_message(status, body);
    match status {
        401 | 403 => RegistryError::Unauthorized(message),
        404 => RegistryError::NotFound(message),
        _ => RegistryError::Http { status, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_error_body() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        match error_for_status(404, body) {
            RegistryError::NotFound(m) => assert_eq!(m, "manifest unknown: manifest unknown"),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn token_server_body() {
        let body = br#"{"details":"incorrect username or password"}"#;
        match error_for_status(401, body) {
            RegistryError::Unauthorized(m) => {
                assert_eq!(m, "unauthorized: incorrect username or password")
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn empty_body_uses_reason() {
        match error_for_status(502, b"") {
            RegistryError::Http { status, message } => {
                assert_eq!(status, 502);
                assert_eq!(message, "bad gateway");
            }
            e => panic!("{e:?}"),
        }
    }
}
