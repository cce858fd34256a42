//! Keeping the guest clock in step with the host. A VM's clock falls behind while the host
//! sleeps (the vCPUs stop); the host agent serves its wall clock on vsock port 2377, and init
//! steps the guest clock whenever it is off by more than [`MAX_DRIFT_NS`].

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio_vsock::{VsockAddr, VsockStream, VMADDR_CID_HOST};

/// Guest-to-host port of the time service.
pub const TIME_PORT: u32 = 2377;
/// Beyond this the clock is stepped.
pub const MAX_DRIFT_NS: i128 = 100_000_000;
/// How often the clock is checked (after a host sleep, the first check fixes it).
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// Host time minus guest time, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Offset(pub i128);

fn now_ns() -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Parse the host's answer: `<seconds>.<nanoseconds>\n` since the Unix epoch.
pub fn parse_host_time(s: &str) -> Option<i128> {
    let (secs, nanos) = s.trim().split_once('.')?;
    let secs: i64 = secs.parse().ok()?;
    if nanos.len() != 9 || secs < 0 {
        return None;
    }
    let nanos: i64 = nanos.parse().ok()?;
    Some(secs as i128 * 1_000_000_000 + nanos as i128)
}

async fn host_time() -> std::io::Result<i128> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), VsockStream::connect(VsockAddr::new(VMADDR_CID_HOST, TIME_PORT)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "time service did not answer"))??;
    let mut buf = Vec::with_capacity(32);
    tokio::time::timeout(Duration::from_secs(2), (&mut s).take(64).read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "time service did not answer"))??;
    parse_host_time(&String::from_utf8_lossy(&buf)).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad time answer"))
}

/// Ask the host once and step the clock if needed; returns the offset found.
pub async fn sync_once() -> std::io::Result<Offset> {
    let before = now_ns();
    let host = host_time().await?;
    let after = now_ns();
    // The host read its clock somewhere in between: assume the middle.
    let off = host - (before + after) / 2;
    if off.abs() > MAX_DRIFT_NS {
        let target = now_ns() + off;
        let ts = libc::timespec { tv_sec: (target / 1_000_000_000) as libc::time_t, tv_nsec: (target % 1_000_000_000) as libc::c_long };
        // SAFETY: valid timespec; needs CAP_SYS_TIME, which PID 1 has.
        if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(Offset(off))
}

/// Check forever; report steps on the console.
pub async fn keep_in_step() {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        if let Ok(off) = sync_once().await {
            if off.0.abs() > MAX_DRIFT_NS {
                crate::console::line(&format!("clock: stepped by {} ms to the host's time", off.0 / 1_000_000));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_time() {
        assert_eq!(parse_host_time("1700000000.000000001\n"), Some(1_700_000_000_000_000_001));
        assert_eq!(parse_host_time("1.5"), None, "nanoseconds must have nine digits");
        assert_eq!(parse_host_time("-1.000000000"), None);
        assert_eq!(parse_host_time("garbage"), None);
        assert_eq!(parse_host_time(""), None);
    }
}
