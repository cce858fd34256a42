//! The runtime cases with berth-oci, Berth's own runtime (built with the workspace): the same
//! assertions runc passes.

fn runc_binary() -> Option<std::path::PathBuf> {
    // target/<profile>/deps/<this test> -> target/<profile>/berth-oci
    let exe = std::env::current_exe().unwrap();
    Some(exe.parent().and_then(|d| d.parent()).unwrap().join("berth-oci"))
}

include!("cases/busybox.rs");
