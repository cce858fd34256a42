//! The one error type of berth-bench.

use std::process::ExitStatus;

/// What went wrong in a bench step. Each variant says which step and why, since the text ends
/// up in the report next to the subject that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A command ran and exited unsuccessfully.
    #[error("`{command}` exited {status}: {stderr}")]
    Command {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    /// A command did not finish in time and was killed.
    #[error("`{command}` timed out after {secs} s")]
    Timeout { command: String, secs: u64 },
    /// The test harness (namespaces, registry, images, push) failed.
    #[error("harness: {0}")]
    Harness(#[from] berth_tests::Error),
    /// A daemon did not come up.
    #[error("{peer} did not start: {detail}")]
    Start { peer: String, detail: String },
    /// Output or state that contradicts what the step expected.
    #[error("{0}")]
    Unexpected(String),
    /// Bad command-line input.
    #[error("{0}")]
    Usage(String),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result alias for berth-bench.
pub type Result<T> = std::result::Result<T, Error>;

/// Attach a context string to an io::Error.
pub trait IoContext<T> {
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
