//! The shim's end-to-end cases with runc (Debian's), the fallback runtime.

fn runtime() -> std::path::PathBuf {
    "/usr/sbin/runc".into()
}

include!("cases/shim.rs");
