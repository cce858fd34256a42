//! A HostConfig (with the rest of a container record) through the conversion to the runtime's
//! container spec and the OCI runtime spec berthd writes for runc: security options,
//! capabilities, devices, ulimits, sysctls, tmpfs, resources. Errors are fine; a panic, hang or
//! OOM is a bug.
#![no_main]

use berth_engine::containers::lifecycle::container_spec;
use berth_engine::containers::store::{Container, State};
use berth_runtime::spec::UserSpec;
use berth_runtime::user::ResolvedUser;
use bollard_stubs::models::{ContainerConfig, HostConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First line: the Config part; the rest: HostConfig.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(0);
    let config: ContainerConfig = serde_json::from_slice(&data[..split]).unwrap_or_default();
    let Ok(host) = serde_json::from_slice::<HostConfig>(&data[split.min(data.len())..]) else { return };
    if berth_engine::containers::validate_host_config(&host).is_err() {
        return;
    }
    let c = Container {
        id: "f".repeat(64),
        name: "fuzz".into(),
        created: "2024-01-01T00:00:00Z".into(),
        image_name: "img".into(),
        image_id: format!("sha256:{}", "0".repeat(64)),
        config,
        host_config: host,
        path: "sh".into(),
        args: vec!["-c".into(), "true".into()],
        state: State::default(),
        mounts: vec![],
        net: Default::default(),
    };
    let user = ResolvedUser { user: UserSpec { uid: 0, gid: 0, additional_gids: vec![] }, home: "/root".into() };
    let Ok(spec) = container_spec(&c, "/nonexistent-rootfs".into(), user) else { return };
    if let Ok(oci) = berth_runtime::spec::build(&spec) {
        let _ = serde_json::to_vec(&oci);
    }
});
