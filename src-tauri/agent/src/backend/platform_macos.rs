//! macOS hosts: Hypervisor.framework through QEMU's HVF, else TCG. vsock needs the
//! vhost-user daemon or, with vfkit, its per-port sockets (transport::per_port).

use crate::api::Accel;

pub fn accel_candidates() -> Vec<Accel> {
    vec![Accel::Hvf, Accel::Tcg]
}

pub fn cpu_model(accel: Accel) -> &'static str {
    match accel {
        Accel::Tcg => "max",
        _ => "host",
    }
}

pub fn tsc_khz() -> u64 {
    2_000_000
}

pub fn host_vsock() -> bool {
    false
}
