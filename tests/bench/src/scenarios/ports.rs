//! `publish-tcp`: TCP throughput through a port published on 127.0.0.1 (the networks
//! engineer's scenario, moved here from the old bench): Debian's iperf3 as server in the
//! busybox image (the host's iperf3 and libraries bind-mounted read-only) behind
//! `-p 127.0.0.1:PORT:5201`, and iperf3 as client in the peer's namespace. dockerd forwards
//! with docker-proxy (its default for loopback), podman with netavark's rules, berthd with
//! its in-process splice relay.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{ensure_image, missing_feature, Ctx};
use crate::error::{Error, Result};
use crate::exec::{checked, Out};
use crate::peers::Peer;
use crate::runtimes::find_on_path;
use crate::scenario::{Better, Goal, Meta, Sample, Scenario, Skip, Subject};

/// The host port published in every peer's own namespace (no clash: one namespace each).
pub const PORT: u16 = 15201;
const NAME: &str = "bench-iperf";

pub struct PublishTcp {
    ctx: Arc<Ctx>,
    ready: Mutex<HashMap<String, bool>>,
}

impl PublishTcp {
    pub fn new(ctx: &Arc<Ctx>) -> Self {
        PublishTcp {
            ctx: ctx.clone(),
            ready: Mutex::new(HashMap::new()),
        }
    }
}

/// Received Gbit/s from `iperf3 -J` output.
pub fn parse_iperf_gbits(json: &[u8]) -> Result<f64> {
    let v: serde_json::Value = serde_json::from_slice(json)?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| Error::Unexpected("no throughput in iperf3 output".into()))
}

/// One iperf3 run of `secs` seconds from the peer's namespace to 127.0.0.1:PORT.
fn iperf_gbits(peer: &Peer, secs: u32) -> Result<f64> {
    let mut cmd = peer.ns.command("iperf3");
    cmd.args([
        "-c",
        "127.0.0.1",
        "-p",
        &PORT.to_string(),
        "-t",
        &secs.to_string(),
        "-J",
    ]);
    let t = checked(cmd, Out::Capture, Duration::from_secs(secs as u64 + 20))?;
    parse_iperf_gbits(&t.stdout)
}

fn iperf3() -> std::result::Result<PathBuf, Skip> {
    find_on_path("iperf3").map_err(|e| Skip::Failed(Error::Unexpected(e)))
}

impl Scenario<Peer> for PublishTcp {
    fn meta(&self) -> Meta {
        Meta {
            name: "publish-tcp".into(),
            title: "published port, TCP throughput (iperf3)".into(),
            description: format!(
                "Received Gbit/s of `iperf3 -c 127.0.0.1 -p {PORT} -t 3` (one stream) from the \
                 peer's namespace to an iperf3 server in a `{}` container behind `-p \
                 127.0.0.1:{PORT}:5201`.",
                self.ctx.busybox
            ),
            unit: "Gbit/s".into(),
            better: Better::Higher,
            rounds: 5,
            warmup: 0,
            goal: Some(Goal::Beat {
                peer: "dockerd".into(),
                times: 1.0,
            }),
        }
    }

    fn prepare(&self, peer: &Peer) -> std::result::Result<(), Skip> {
        let iperf = iperf3()?;
        ensure_image(peer, &self.ctx.busybox)?;
        let _ = peer.docker(&["rm", "-f", NAME]);
        let publish = format!("127.0.0.1:{PORT}:5201");
        let bin = format!("{}:/iperf3:ro", iperf.display());
        let run = peer.docker(&[
            "run",
            "-d",
            "--name",
            NAME,
            "-p",
            &publish,
            "-v",
            "/usr/lib:/lib:ro",
            "-v",
            "/usr/lib64:/lib64:ro",
            "-v",
            &bin,
            "-e",
            "LD_LIBRARY_PATH=/lib/x86_64-linux-gnu",
            &self.ctx.busybox,
            "/iperf3",
            "-s",
        ]);
        if let Err(e) = run {
            return Err(match missing_feature(&e) {
                Some(l) => Skip::NotApplicable(format!("no published ports (issue 5): {l}")),
                None => Skip::Failed(e),
            });
        }
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer.name().into(), true);
        // Ready when a short test goes through.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match iperf_gbits(peer, 1) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(Skip::Failed(Error::Unexpected(format!(
                        "iperf3 server behind {publish} never answered: {e}"
                    ))))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn sample(&self, peer: &Peer, _round: usize) -> Result<Sample> {
        Ok(iperf_gbits(peer, 3)?.into())
    }

    fn cleanup(&self, peer: &Peer) {
        let was = self
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(peer.name());
        if was.is_some() {
            let _ = peer.docker(&["rm", "-f", NAME]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf_json() {
        let j = br#"{"end":{"sum_received":{"bits_per_second":12500000000.0}}}"#;
        assert_eq!(parse_iperf_gbits(j).unwrap(), 12.5);
        assert!(parse_iperf_gbits(b"{}").is_err());
        assert!(parse_iperf_gbits(b"not json").is_err());
    }
}
