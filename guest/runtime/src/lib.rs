//! berth-runtime: turns a container description into an OCI bundle and drives
//! an OCI runtime binary (runc by default) over it.
//!
//! The split follows containerd: berthd writes the bundle (`bundle`, `spec`,
//! `seccomp`, `user`), a per-container monitor (berth-shim) runs the runtime
//! CLI (`runc`), so a daemon restart does not kill containers.
//!
//! cgroups: the spec carries an absolute `cgroupsPath` (`/<parent>/<id>`,
//! parent "berth" by default) and v1-style resource values; runc maps both
//! onto cgroup v1 hierarchies (this dev host) and the v2 unified tree (the
//! VM). The systemd driver's "slice:prefix:name" form is not produced.
//!
//! Typical flow in berthd:
//! 1. `Bundle::create` + `Bundle::mount_rootfs` (overlay of the layers),
//! 2. `user::resolve` the image's `User` against the mounted `Bundle::rootfs`
//!    (the merged view, so upper layers' /etc/passwd wins),
//! 3. `spec::build` + `Bundle::write_config`,
//! 4. the monitor calls `OciRuntime::create`/`start`; on removal
//!    `delete` then `Bundle::remove`.

pub mod bundle;
pub mod caps;
pub mod runc;
pub mod seccomp;
pub mod spec;
pub mod user;

pub use spec::{build, ContainerSpec, MountSpec, NetworkMode, RuntimeError, UserSpec};
