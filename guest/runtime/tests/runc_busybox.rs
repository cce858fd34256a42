//! The runtime cases with runc (Debian's), the fallback runtime.

fn runc_binary() -> Option<std::path::PathBuf> {
    ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc"].iter().map(std::path::PathBuf::from).find(|p| p.exists())
}

include!("cases/busybox.rs");
