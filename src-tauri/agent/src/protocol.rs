//! The contract with berth-init inside the VM (`guest/init/src/services.rs`, `clock.rs`,
//! `supervise.rs`): vsock ports and the one-line headers spoken on them.

/// berthd's Engine API (guest).
pub const ENGINE_PORT: u32 = 2375;
/// Forward to a TCP address in the guest: `tcp IP:PORT\n` -> `OK\n` | `ERR reason\n` (guest).
pub const FORWARD_PORT: u32 = 2376;
/// The host's wall clock, `<secs>.<9-digit nanos>\n` (host; the guest connects).
pub const TIME_PORT: u32 = 2377;
/// Debug shell: `shell ROWS COLS\n` -> `OK\n`, then a pty (guest).
pub const SHELL_PORT: u32 = 2378;
/// Control: `shutdown\n` | `sync-time\n` -> `OK ...\n` (guest).
pub const CONTROL_PORT: u32 = 2379;
/// Egress HTTP proxy served by the agent (host; the guest connects).
pub const EGRESS_PORT: u32 = 3128;
/// berthd's Engine API with half-close carried in frames (`--host vsock+framed://:2380`, see
/// the berth-framed crate): for transports whose half-close is a full close (vhost-device-vsock).
pub const FRAMED_ENGINE_PORT: u32 = 2380;
/// The guest CID the agent gives its VM.
pub const GUEST_CID: u32 = 3;
/// Longest header or reply line either side accepts.
pub const MAX_LINE: usize = 256;

/// Console line prefix of init's readiness reports.
pub const STAGE_PREFIX: &str = "berth-init: stage=";

/// A parsed `berth-init: stage=NAME uptime=SECS ...` console line.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestStage {
    pub name: String,
    pub uptime_s: Option<f64>,
    /// The rest of the line (for `failed`: `reason="..."`).
    pub detail: String,
}

pub fn parse_stage_line(line: &str) -> Option<GuestStage> {
    let i = line.find(STAGE_PREFIX)?;
    let rest = &line[i + STAGE_PREFIX.len()..];
    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut uptime_s = None;
    let mut detail = Vec::new();
    for w in tail.split(' ') {
        match w.strip_prefix("uptime=") {
            Some(u) if uptime_s.is_none() => uptime_s = u.parse().ok(),
            _ => detail.push(w),
        }
    }
    Some(GuestStage { name: name.trim().to_string(), uptime_s, detail: detail.join(" ").trim().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_lines() {
        let s = parse_stage_line("berth-init: stage=init-up uptime=1.234").unwrap();
        assert_eq!((s.name.as_str(), s.uptime_s), ("init-up", Some(1.234)));
        let s = parse_stage_line("\r[  2.0] berth-init: stage=failed uptime=2.5 reason=\"mke2fs failed\"").unwrap();
        assert_eq!(s.name, "failed");
        assert_eq!(s.detail, "reason=\"mke2fs failed\"");
        assert!(parse_stage_line("berthd: stage=x").is_none());
        let s = parse_stage_line("berth-init: stage=engine-up uptime=zz port=2375").unwrap();
        assert_eq!(s.uptime_s, None);
    }
}
