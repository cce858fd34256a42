//! The body of `POST /containers/create` through everything the create path does without an
//! engine: JSON into Docker's models, HostConfig checks, port bindings, the mount plan
//! (binds, `--mount`, tmpfs, image volumes) and the merge with an image config. Errors are
//! fine (they become 400s); a panic, hang or OOM is a bug.
#![no_main]

use berth_engine::containers::{self, mounts, CreateBody};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<CreateBody>(data) else { return };
    let host = body.host_config.clone().unwrap_or_default();
    let _ = containers::validate_host_config(&host);
    let _ = berth_engine::networks::port_requests_valid(&body.config, &host);
    let _ = mounts::plan(&body.config, &host, &[]);
    for b in host.binds.iter().flatten() {
        let _ = mounts::parse_bind(b);
    }
    for dst in body.config.volumes.iter().flat_map(|v| v.keys()) {
        let _ = mounts::clean_destination(dst);
    }
    let image = serde_json::json!({
        "Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "Entrypoint": null, "WorkingDir": "/w",
        "Labels": {"a": "b"}, "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}}
    });
    let merged = containers::merge_image_config(&body.config, &image);
    let _ = serde_json::to_vec(&merged);
});
