//! Registry credentials as clients send them: the `X-Registry-Auth` header (base64url JSON),
//! the build's `X-Registry-Config` map, a raw auth config body, and registries'
//! `WWW-Authenticate` challenges. Errors are fine; a panic or hang is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = berth_registry::parse_auth_config_json(data);
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = berth_registry::parse_auth_header(s);
    let _ = berth_registry::parse_auth_header_config(s);
    let _ = berth_engine::build::registry_auth(Some(s), "127.0.0.1:5000");
    let _ = berth_engine::build::registry_auth(Some(s), "docker.io");
    let _ = berth_registry::challenge::parse_www_authenticate(s);
});
