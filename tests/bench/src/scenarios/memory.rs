//! Idle memory of each daemon with all its helpers, after a fresh start and after 100 runs.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{ensure_image, Ctx};
use crate::error::Result;
use crate::exec::Out;
use crate::peers::Peer;
use crate::procs::{self, ProcMem};
use crate::scenario::{Better, Goal, Meta, Sample, Scenario, Skip};

/// Idle time before memory is read.
const SETTLE: Duration = Duration::from_secs(2);
/// Runs before `idle-rss-after-100` reads memory.
pub const RUNS: usize = 100;

/// Summed RSS (MiB) of the peer's processes, with per-process facts for the JSON.
pub fn tree_memory(peer: &Peer) -> Sample {
    let procs: Vec<ProcMem> = peer.processes().into_iter().map(procs::proc_mem).collect();
    memory_sample(&procs)
}

pub fn memory_sample(procs: &[ProcMem]) -> Sample {
    let rss: u64 = procs.iter().map(|p| p.rss_kib).sum();
    let pss: u64 = procs.iter().filter_map(|p| p.pss_kib).sum();
    Sample {
        value: rss as f64 / 1024.0,
        detail: Some(json!({
            "pss_mib": (pss as f64 / 1024.0 * 10.0).round() / 10.0,
            "processes": procs,
        })),
    }
}

pub struct IdleRss {
    ctx: Arc<Ctx>,
}

impl IdleRss {
    pub fn new(ctx: &Arc<Ctx>) -> Self {
        IdleRss { ctx: ctx.clone() }
    }
}

const WHAT: &str = "Summed VmRSS of every process of the peer (all processes in its network \
                    namespace but the registry: the daemon and helpers such as containerd, \
                    shims, conmon)";

impl Scenario<Peer> for IdleRss {
    fn meta(&self) -> Meta {
        Meta {
            name: "idle-rss".into(),
            title: "idle RSS after start (with helpers)".into(),
            description: format!(
                "{WHAT}, after a fresh start of the daemon on its data root (images from the \
                 earlier scenarios present: {}), one `docker version` and {} s idle. PSS and \
                 the per-process list are in the JSON.",
                self.ctx.busybox,
                SETTLE.as_secs()
            ),
            unit: "MiB".into(),
            better: Better::Lower,
            rounds: 3,
            warmup: 0,
            goal: Some(Goal::AtMost { value: 20.0 }),
        }
    }
    fn prepare(&self, peer: &Peer) -> std::result::Result<(), Skip> {
        Ok(ensure_image(peer, &self.ctx.busybox)?)
    }
    fn sample(&self, peer: &Peer, _round: usize) -> Result<Sample> {
        peer.restart()?;
        peer.docker(&["version"])?;
        std::thread::sleep(SETTLE);
        Ok(tree_memory(peer))
    }
}

pub struct IdleRssAfterRuns {
    ctx: Arc<Ctx>,
}

impl IdleRssAfterRuns {
    pub fn new(ctx: &Arc<Ctx>) -> Self {
        IdleRssAfterRuns { ctx: ctx.clone() }
    }
}

impl Scenario<Peer> for IdleRssAfterRuns {
    fn meta(&self) -> Meta {
        Meta {
            name: "idle-rss-after-100".into(),
            title: "idle RSS after 100 runs (with helpers)".into(),
            description: format!(
                "{WHAT}, after a fresh start, {RUNS} sequential `docker run --rm {} true` and {} \
                 s idle.",
                self.ctx.busybox,
                SETTLE.as_secs()
            ),
            unit: "MiB".into(),
            better: Better::Lower,
            rounds: 1,
            warmup: 0,
            goal: None,
        }
    }
    fn prepare(&self, peer: &Peer) -> std::result::Result<(), Skip> {
        Ok(ensure_image(peer, &self.ctx.busybox)?)
    }
    fn sample(&self, peer: &Peer, _round: usize) -> Result<Sample> {
        peer.restart()?;
        for _ in 0..RUNS {
            peer.docker_timed(&["run", "--rm", &self.ctx.busybox, "true"], Out::Null)?;
        }
        std::thread::sleep(SETTLE);
        Ok(tree_memory(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_summed_in_mib() {
        let p = |pid, rss, pss| ProcMem {
            pid,
            comm: "x".into(),
            rss_kib: rss,
            pss_kib: pss,
        };
        let s = memory_sample(&[p(1, 1024, Some(512)), p(2, 2048, None)]);
        assert_eq!(s.value, 3.0);
        let d = s.detail.unwrap();
        assert_eq!(d["pss_mib"], 0.5);
        assert_eq!(d["processes"][1]["rss_kib"], 2048);
    }
}
