//! Daemon configuration, with dockerd's flag meanings and Berth's defaults.

use std::path::PathBuf;

pub const DEFAULT_HOST: &str = "unix:///run/berth/docker.sock";
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/berth";
pub const DEFAULT_EXEC_ROOT: &str = "/run/berth";

#[derive(Debug, Clone)]
pub struct Config {
    /// Listen addresses, dockerd style: `unix:///path`. TCP is never opened unless asked for.
    pub hosts: Vec<String>,
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    pub pidfile: Option<PathBuf>,
    /// Registries reached over plain HTTP besides loopback (`host:port` or `host`).
    pub insecure_registries: Vec<String>,
    /// Upstream resolvers for the embedded DNS (`--dns IP[:PORT]`); default: /etc/resolv.conf.
    pub dns: Vec<String>,
    /// Largest unpacked build context accepted by POST /build.
    pub build_context_max_bytes: u64,
    /// OCI runtime binary for new containers (dockerd's `--default-runtime`); None: the
    /// `BERTH_RUNTIME` environment variable, else berth-oci next to berthd, else runc.
    pub default_runtime: Option<PathBuf>,
    /// A pipe (inherited descriptor, close-on-exec already set) on which the Berth VM's init
    /// writes `ok` once the kernel's network modules are loaded, or `error: REASON`. berthd
    /// serves the API at once and sets up bridges and nftables only after that line. None:
    /// nothing to wait for (native).
    pub network_ready_fd: Option<std::os::fd::RawFd>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hosts: vec![DEFAULT_HOST.to_string()],
            data_root: DEFAULT_DATA_ROOT.into(),
            exec_root: DEFAULT_EXEC_ROOT.into(),
            pidfile: None,
            insecure_registries: Vec::new(),
            dns: Vec::new(),
            build_context_max_bytes: crate::build::DEFAULT_MAX_CONTEXT_BYTES,
            default_runtime: None,
            network_ready_fd: None,
        }
    }
}
