//! `berth-shim`: one small monitor process per container.
//!
//! The shim (not berthd) is the parent of the container's init, owns its stdio,
//! writes its logs and records its exit status, so berthd can restart (or be
//! killed) while containers keep running, and pick them up again afterwards
//! (live-restore). This crate holds both the shim process itself ([`server`],
//! run by the `berth-shim` binary) and the helpers berthd uses to launch,
//! talk to and read after a shim ([`launch`], [`client`], [`state`], [`logs`]).

pub mod client;
pub mod launch;
pub mod logs;
pub mod protocol;
pub mod server;
pub mod state;

pub use client::{connect, ClientError, ShimClient};
pub use launch::{spawn, ShimError, ShimHandle, ShimOptions};
pub use logs::{read_logs, stream_logs, LogEntry, LogError, LogOptions, LogReader};
pub use protocol::{frame, Request, Response, ShimStatus};
pub use state::{is_alive, read_exit, read_shim_info, ExitStatus, ShimInfo};
