use std::path::PathBuf;

/// The host agent forwards the VM's API socket here.
pub fn default_socket() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
    home.join(".berth/run/docker.sock")
}

/// Nothing to adjust before the webview starts on this OS.
pub fn prepare_env() {}
