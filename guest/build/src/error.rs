//! The crate's error type. Parse errors carry the Dockerfile line they come from.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A syntax or argument error in the Dockerfile, with its 1-based line.
    #[error("dockerfile parse error on line {line}: {message}")]
    Parse { line: usize, message: String },
    /// An error while evaluating an instruction (bad substitution, unknown stage...).
    #[error("{0}")]
    Invalid(String),
    /// A `.dockerignore` pattern that cannot be compiled.
    #[error("error checking context: syntax error in pattern {pattern:?} in .dockerignore: {reason}")]
    Pattern { pattern: String, reason: String },
    /// A COPY/ADD source that is missing or outside the build context.
    #[error("{0}")]
    Source(String),
    /// Reading the build context failed.
    #[error("{context}: {message}")]
    Io { context: String, message: String },
}

impl BuildError {
    pub fn parse(line: usize, message: impl Into<String>) -> Self {
        BuildError::Parse { line, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        BuildError::Invalid(message.into())
    }
    pub fn io(context: impl Into<String>, e: std::io::Error) -> Self {
        BuildError::Io { context: context.into(), message: e.to_string() }
    }
}
