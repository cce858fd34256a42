//! Docker distribution v2 registry client: token/basic auth, manifests and blobs.
//!
//! Knows nothing about images beyond manifest formats; pull orchestration lives in the engine.

mod authconfig;
pub mod challenge;
mod client;
mod error;
pub mod manifest;
pub mod reference;
#[cfg(test)]
mod server_tests;

pub use authconfig::{
    parse_auth_config_json, parse_auth_header, parse_auth_header_config, AuthConfig,
};
pub use client::{BlobResponse, Client, ClientConfig, FetchedManifest, UploadStart};
pub use error::RegistryError;

/// Credentials for one registry.
#[derive(Clone)]
pub enum Auth {
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// OAuth refresh token, POSTed to the token realm.
    IdentityToken(String),
    /// Bearer token used directly.
    RegistryToken(String),
}

// Manual Debug so secrets never end up in logs.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Anonymous => f.write_str("Anonymous"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Auth::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
            Auth::RegistryToken(_) => f.write_str("RegistryToken(<redacted>)"),
        }
    }
}

/// A repository on a registry.
#[derive(Clone, Debug)]
pub struct Repository {
    /// "docker.io" or "127.0.0.1:5000"
    pub registry: String,
    /// "library/busybox"
    pub name: String,
}
