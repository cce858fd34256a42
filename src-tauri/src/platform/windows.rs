use std::path::PathBuf;

/// The host agent forwards the VM's API socket here (an AF_UNIX socket; Windows 10+ has them).
pub fn default_socket() -> PathBuf {
    let base = std::env::var_os("LOCALAPPDATA").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("C:\\"));
    base.join("berth\\run\\docker.sock")
}

/// Nothing to adjust before the webview starts on this OS.
pub fn prepare_env() {}
