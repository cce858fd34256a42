//! The shim's end-to-end cases with berth-oci, Berth's own runtime (built with the workspace).

fn runtime() -> std::path::PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/berth-oci
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|d| d.parent()).unwrap().join("berth-oci")
}

include!("cases/shim.rs");
