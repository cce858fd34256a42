//! Windows hosts: the Windows Hypervisor Platform through QEMU's WHPX, else TCG. The transport
//! there is Hyper-V sockets (a `hvsock_windows.rs` adapter behind transport::Transport).

use crate::api::Accel;

pub fn accel_candidates() -> Vec<Accel> {
    vec![Accel::Whpx, Accel::Tcg]
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
