//! berth-build: the Dockerfile side of `docker build`, with no daemon in it.
//!
//! - [`parser`]: Dockerfile text to nodes (directives, continuations, comments, heredocs,
//!   JSON vs shell form, builder flags), every error tagged with its line.
//! - [`shell`]: Docker's word lexer: quotes, escapes and `$VAR`/`${VAR:-default}` expansion.
//! - [`instructions`]: nodes to typed instructions grouped into stages, ARG before FROM.
//! - [`config`]: the image run config an instruction changes, and the pure dispatch of the
//!   metadata instructions (ENV, LABEL, CMD, ...), producing Docker's history comments.
//! - [`ignore`]: `.dockerignore` patterns with Docker's semantics (`!`, `**`, parent matching).
//! - [`context`]: source paths inside a build context (wildcards, refusing paths outside it)
//!   and the content checksums that key the layer cache.
//!
//! The engine (`berth-engine`'s build module) runs what needs a filesystem or a container.

pub mod config;
pub mod context;
pub mod error;
pub mod ignore;
pub mod instructions;
pub mod parser;
pub mod shell;

pub use error::BuildError;
