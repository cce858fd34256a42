use std::path::PathBuf;

/// `./berth up`'s socket: on Linux berthd runs natively, no VM.
pub fn default_socket() -> PathBuf {
    PathBuf::from("/run/berth/docker.sock")
}

/// WebKitGTK's accelerated compositing costs ~70 MB of anonymous memory in the web process
/// (measured: web process RSS 284 -> 180 MB) and buys nothing for a list-and-forms UI, so the app
/// turns it off unless the user asks for it (`BERTH_GPU_COMPOSITING=1`) or set the variable
/// themselves. Runs first thing in `run()`, before any thread exists.
pub fn prepare_env() {
    if std::env::var_os("BERTH_GPU_COMPOSITING").is_none() && std::env::var_os("WEBKIT_DISABLE_COMPOSITING_MODE").is_none() {
        std::env::set_var("WEBKIT_DISABLE_COMPOSITING_MODE", "1");
    }
}
