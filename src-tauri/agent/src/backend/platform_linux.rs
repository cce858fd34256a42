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

/// The argv of live process `pid`; None when there is none or it is a zombie (a process whose
/// parent is gone is reaped by PID 1 on a desktop, but not by every init: a zombie is dead).
pub fn process_argv(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    if matches!(state, 'Z' | 'X' | 'x') {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(raw.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
}

/// Becomes Some("`what` exited") when process `pid` ends, whether or not it is our child
/// (a VM adopted from an earlier agent is not): a pidfd turns readable at its exit. Kernels
/// without pidfd_open (before 5.3) fall back to looking at /proc twice a second.
pub fn watch_exit(pid: u32, what: &str) -> tokio::sync::watch::Receiver<Option<String>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (tx, rx) = tokio::sync::watch::channel(None);
    let reason = format!("{what} exited (pid {pid}, adopted from an earlier agent: exit status unknown)");
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd >= 0 {
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the fd is owned by the AsyncFd and stays open as long as it is registered.
        if let Ok(afd) = unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) } {
            tokio::spawn(async move {
                let _ = afd.readable().await;
                let _ = tx.send(Some(reason));
            });
            return rx;
        }
    }
    tokio::spawn(async move {
        while process_argv(pid).is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let _ = tx.send(Some(reason));
    });
    rx
}
