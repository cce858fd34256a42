#![recursion_limit = "256"]
//! berthd's engine: the Docker Engine API over a unix socket, and the daemon around it.
//!
//! `daemon::run` owns the process concerns (lock, sockets, shutdown); `router` maps requests to
//! the handler modules (`system`, `images`); `pull` orchestrates registry pulls on top of the
//! `berth-image` store and the `berth-registry` client; `error` is the one place that turns
//! failures into Docker's HTTP statuses.

pub mod build;
pub mod commit;
pub mod config;
pub mod containers;
pub mod daemon;
pub mod engine;
pub mod error;
pub mod events;
pub mod http_util;
pub mod images;
pub mod networks;
pub mod pull;
pub mod push;
pub mod router;
pub mod singleflight;
pub mod system;
pub mod volumes;
pub mod vsock;

pub use config::Config;
pub use daemon::{run, DaemonError};
