//! berth-runtime: turns a container description into an OCI bundle and drives
//! an OCI runtime binary (runc by default) over it.
//!
//! The split follows containerd: berthd writes the bundle (`bundle`, `spec`,
//! `seccomp`, `user`), a per-container monitor (berth-shim) runs the runtime
//! CLI (`runc`), so a daemon restart does not kill containers.

pub mod bundle;
pub mod caps;
pub mod runc;
pub mod seccomp;
pub mod spec;
pub mod user;

pub use spec::{build, ContainerSpec, MountSpec, NetworkMode, RuntimeError, UserSpec};
