//! Linux hosts: KVM when it really runs guests, else TCG; vsock through kernel vhost-vsock when
//! `/dev/vhost-vsock` exists, else through the vhost-device-vsock daemon (vhost-user).

use crate::api::Accel;

/// Accelerators worth trying on this host, best first.
pub fn accel_candidates() -> Vec<Accel> {
    let kvm = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    if kvm {
        vec![Accel::Kvm, Accel::Tcg]
    } else {
        vec![Accel::Tcg]
    }
}

/// QEMU's `-cpu` for an accelerator.
pub fn cpu_model(accel: Accel) -> &'static str {
    match accel {
        Accel::Tcg => "max",
        _ => "host",
    }
}

/// The TSC frequency the guest kernel should assume (microvm under TCG hangs calibrating it).
pub fn tsc_khz() -> u64 {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("cpu MHz")).and_then(|l| l.split(':').nth(1)).and_then(|v| v.trim().parse::<f64>().ok()))
        .map(|mhz| (mhz * 1000.0) as u64)
        .unwrap_or(2_000_000)
}

/// True when the kernel's vhost-vsock can be used (host AF_VSOCK to the guest).
pub fn host_vsock() -> bool {
    crate::transport::host_vsock::HostVsock::available()
}
