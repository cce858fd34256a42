//! Console reporting. The host agent reads the serial console line by line; a line starting with
//! `berth-init: stage=` marks a readiness stage (the agent timestamps it on arrival).

use std::io::Write;

/// Guest uptime in seconds (CLOCK_BOOTTIME), for the record next to each stage.
pub fn uptime() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Print `berth-init: <msg>` on the console (and stderr before /dev exists).
pub fn line(msg: &str) {
    let text = format!("berth-init: {msg}\n");
    match std::fs::OpenOptions::new().write(true).open("/dev/console") {
        Ok(mut c) => {
            let _ = c.write_all(text.as_bytes());
        }
        Err(_) => {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
}

/// Report a readiness stage with the guest uptime.
pub fn stage(name: &str, detail: &str) {
    if detail.is_empty() {
        line(&format!("stage={name} uptime={:.3}", uptime()));
    } else {
        line(&format!("stage={name} uptime={:.3} {detail}", uptime()));
    }
}
