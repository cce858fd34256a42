//! The host half of the guest clock sync: each connection to host port 2377 gets the host's
//! wall clock as `<secs>.<nanos>\n` (see guest/init/src/clock.rs).

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;

use crate::transport::GuestListener;

pub fn now_line() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}\n", d.as_secs(), d.subsec_nanos())
}

pub async fn serve(mut l: Box<dyn GuestListener>) {
    while let Ok(mut s) = l.accept().await {
        let _ = s.write_all(now_line().as_bytes()).await;
        let _ = s.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn format_has_nine_digit_nanos() {
        let l = super::now_line();
        let (s, n) = l.trim().split_once('.').unwrap();
        assert!(s.parse::<u64>().unwrap() > 1_600_000_000);
        assert_eq!(n.len(), 9);
    }
}
