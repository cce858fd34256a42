//! berth-tests: the offline test harness shared by the integration tests and benchmarks.
//!
//! Everything here is real: Debian's `docker-registry`, images built from Debian's
//! busybox-static, the real `docker` CLI. Every process under test runs inside a private,
//! loopback-only network namespace ([`netns::NetNs`]) so that an accidental lookup of a
//! public registry fails immediately instead of leaving the machine.
//!
//! Typical use in an integration test or benchmark:
//!
//! ```no_run
//! use berth_tests::{berthd::Berthd, fixtures::Fixtures};
//! let fx = Fixtures::start().unwrap(); // netns + registries seeded with busybox, layered, web
//! let d = Berthd::start(&fx.ns, &[fx.registry.addr()]).unwrap();
//! d.docker_ok(&["pull", &fx.reference("busybox:latest")]);
//! let id = d.docker_ok(&["image", "inspect", "--format", "{{.Id}}", &fx.reference("busybox:latest")]);
//! assert_eq!(id.trim(), fx.pushed("busybox:latest").config_digest);
//! // Drop order: `d` before `fx` (berthd stops before its namespace goes).
//! ```

pub mod berthd;
pub mod compat;
pub mod evil;
pub mod fixtures;
pub mod http;
pub mod image;
pub mod leaks;
pub mod netns;
pub mod probe;
pub mod proxy;
pub mod push;
pub mod registry;
pub mod storecheck;
pub mod vm;
pub mod world;

/// The one error type of the harness. Tests mostly `.expect()` these; the variants exist so a
/// failure message says which step broke and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("command `{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("http: {0}")]
    Http(String),
    #[error("registry protocol: {0}")]
    Protocol(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result alias for the harness.
pub type Result<T> = std::result::Result<T, Error>;

/// Attach a context string to an io::Error.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

/// True when the process can create network namespaces (root). Tests call this first and
/// return early with a message when it is false, so `cargo test` as non-root skips cleanly.
pub fn have_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skip the current test (return) with a message unless we are root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::have_root() {
            eprintln!("SKIP: needs root (network namespaces)");
            return;
        }
    };
}

/// `sha256:<hex>` of some bytes: the OCI digest form used everywhere.
pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent dir")
        .to_path_buf()
}
