//! Writes an OCI bundle the way berthd does for `docker run busybox <cmd>` (Docker's defaults:
//! 14 capabilities, the seccomp profile, masked/read-only paths, a cgroup), over a plain copy
//! of a static busybox, for measuring runtimes on their own (guest/oci/bench/runtime-alone).
//!
//!     cargo run -p berth-runtime --example write_bundle -- DIR [CMD...]

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: write_bundle DIR [CMD...]"));
    let mut cmd: Vec<String> = args.collect();
    if cmd.is_empty() {
        cmd = vec!["true".into()];
    }
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for a in ["sh", "true", "echo", "cat", "ls", "sleep"] {
        let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a));
    }
    let spec = berth_runtime::spec::ContainerSpec {
        id: "bench".into(),
        rootfs: rootfs.clone(),
        args: cmd,
        hostname: "bench".into(),
        cgroup_parent: "berth-bench".into(),
        ..Default::default()
    };
    let oci = berth_runtime::spec::build(&spec).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&oci).unwrap()).unwrap();
}
