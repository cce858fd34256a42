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

/// The argv of live process `pid`. Not implemented here yet (macOS: sysctl KERN_PROCARGS2):
/// without it a VM left by an earlier agent is never taken for ours, so it is neither adopted
/// nor stopped.
pub fn process_argv(_pid: u32) -> Option<Vec<String>> {
    None
}

/// Becomes Some when `pid` ends (polled: kill(pid, 0)).
pub fn watch_exit(pid: u32, what: &str) -> tokio::sync::watch::Receiver<Option<String>> {
    let (tx, rx) = tokio::sync::watch::channel(None);
    let reason = format!("{what} exited (pid {pid}: exit status unknown)");
    tokio::spawn(async move {
        // SAFETY: signal 0 only checks that the process exists.
        while unsafe { libc::kill(pid as i32, 0) } == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let _ = tx.send(Some(reason));
    });
    rx
}
