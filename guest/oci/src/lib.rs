//! berth-oci: Berth's own OCI runtime, with the subset of runc's command line that berth-shim
//! and berth-runtime use (create, start, run, state, kill, delete, pause, resume, ps, exec, with
//! `--root`, `--log`/`--log-format json`, `--pid-file`, `--console-socket`), so either runtime
//! can run a bundle (`BERTH_RUNTIME=runc` stays a working fallback).
//!
//! Why our own: a container start with runc costs ~60 ms on these machines (Go runtime start
//! plus its re-exec'd `runc init` and C nsexec stage, for each of create/start/delete), crun
//! refuses this host's cgroup v1 hybrid layout, and youki's libcontainer must not run inside
//! the daemon and is dropping cgroup v1. A direct clone(2) into the namespaces with the setup in
//! Rust measures several times faster (README has the numbers).
//!
//! Layout: [`container`] the commands, [`rootfs`] mounts/pivot_root/masking, [`process`] the
//! privilege drop and exec, [`cgroups`] v1 and v2, [`seccomp`] the profile compiler, [`selfexe`]
//! the read-only re-exec that keeps containers from overwriting this binary, [`state`]
//! the on-disk state, [`sys`] the privileged calls behind a trait with a recording fake.

pub mod cgroups;
pub mod container;
pub mod devices_bpf;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod selfexe;
pub mod state;
pub mod sys;

/// Errors of the runtime; the message is what `--log` records and berthd shows.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("container with id {0} already exists")]
    Exists(String),
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("{0}")]
    State(String),
    #[error("container setup: {0}")]
    Setup(String),
    #[error("{0}")]
    Exec(String),
    #[error("cgroups: {0}")]
    Cgroup(String),
    #[error("seccomp: {0}")]
    Seccomp(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// An error the container's init (or exec helper) reported, already worded.
    #[error("{0}")]
    Child(String),
}
