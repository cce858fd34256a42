use std::path::PathBuf;

/// `./berth up`'s socket: on Linux berthd runs natively, no VM.
pub fn default_socket() -> PathBuf {
    PathBuf::from("/run/berth/docker.sock")
}

/// WebKitGTK's accelerated compositing costs ~70 MB of anonymous memory in the web process
/// (measured: web process RSS 284 -> 180 MB) and buys nothing for a list-and-forms UI, so the app
/// turns it off unless the user asks for it (`BERTH_GPU_COMPOSITING=1`) or set the variable
/// themselves. Without compositing nothing in the app process draws with GL, so GTK's GLX set-up
/// at display open (`GDK_GL=disable`) and WebKit's DMA-BUF renderer are turned off too: 7 MiB
/// less PSS in the app process (measured under Xvfb/llvmpipe). A user who set
/// `WEBKIT_DISABLE_COMPOSITING_MODE` decides alone; variables already set are never changed.
/// Runs first thing in `run()`, before any thread exists.
pub fn prepare_env() {
    if std::env::var_os("BERTH_GPU_COMPOSITING").is_some() || std::env::var_os("WEBKIT_DISABLE_COMPOSITING_MODE").is_some() {
        return;
    }
    for (k, v) in [("WEBKIT_DISABLE_COMPOSITING_MODE", "1"), ("GDK_GL", "disable"), ("WEBKIT_DISABLE_DMABUF_RENDERER", "1")] {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
}
