//! Container lifecycle scenarios: run --rm, run -d + rm -f, exec, logs, 20 concurrent runs.

use std::collections::HashMap;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use super::{ensure_image, Ctx};
use crate::error::{Error, Result};
use crate::exec::{checked, Out};
use crate::peers::{Peer, CLI_TIMEOUT};
use crate::scenario::{Better, Goal, Meta, Sample, Scenario, Skip, Subject};

fn secs(t: &crate::exec::Timed) -> Sample {
    t.elapsed.as_secs_f64().into()
}

/// Per-peer state a scenario keeps between prepare and cleanup (a container id).
#[derive(Default)]
struct PerPeer(Mutex<HashMap<String, String>>);

impl PerPeer {
    fn set(&self, peer: &Peer, v: String) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer.name().to_string(), v);
    }
    fn get(&self, peer: &Peer) -> Result<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer.name())
            .cloned()
            .ok_or_else(|| Error::Unexpected("not prepared".into()))
    }
    fn take(&self, peer: &Peer) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(peer.name())
    }
}

/// `docker run -d ... ` and return the container id it prints.
fn run_detached(peer: &Peer, args: &[&str]) -> Result<String> {
    let mut a = vec!["run", "-d"];
    a.extend_from_slice(args);
    let id = peer.docker(&a)?.trim().to_string();
    if id.is_empty() {
        return Err(Error::Unexpected("run -d printed no container id".into()));
    }
    Ok(id)
}

pub struct RunRm {
    ctx: Arc<Ctx>,
    /// `--network none`: without the peer's network setup.
    no_network: bool,
}

impl RunRm {
    pub fn new(ctx: &Arc<Ctx>) -> Self {
        RunRm {
            ctx: ctx.clone(),
            no_network: false,
        }
    }
    pub fn no_network(ctx: &Arc<Ctx>) -> Self {
        RunRm {
            ctx: ctx.clone(),
            no_network: true,
        }
    }
    fn args(&self) -> Vec<&str> {
        let mut a = vec!["run", "--rm"];
        if self.no_network {
            a.extend(["--network", "none"]);
        }
        a.extend([self.ctx.busybox.as_str(), "true"]);
        a
    }
}

impl Scenario<Peer> for RunRm {
    fn meta(&self) -> Meta {
        let (name, title, network, goal) = if self.no_network {
            (
                "run-rm-netnone",
                "`docker run --rm --network none busybox true`",
                "no network",
                None,
            )
        } else {
            (
                "run-rm",
                "`docker run --rm busybox true`",
                "default network",
                Some(Goal::Beat {
                    peer: "dockerd".into(),
                    times: 4.0,
                }),
            )
        };
        Meta {
            name: name.into(),
            title: title.into(),
            description: format!(
                "Wall time of the docker CLI process `docker {}` (create, attach, start, wait, \
                 remove; {network}), image already present.",
                self.args().join(" ")
            ),
            unit: "s".into(),
            better: Better::Lower,
            rounds: 15,
            warmup: 2,
            goal,
        }
    }
    fn prepare(&self, peer: &Peer) -> std::result::Result<(), Skip> {
        Ok(ensure_image(peer, &self.ctx.busybox)?)
    }
    fn sample(&self, peer: &Peer, _round: usize) -> Result<Sample> {
        Ok(secs(&peer.docker_timed(&self.args(), Out::Null)?))
    }
}

pub struct RunDetachedRm {
    ctx: Arc<Ctx>,
}

impl RunDetachedRm {
    pub fn new(ctx: &Arc<Ctx>) -> Self {
        RunDetachedRm { ctx: ctx.clone() }
    }
}

impl Scenario<Peer> for RunDetachedRm {
    fn meta(&self) -> Meta {
        Meta {
            name: "run-d-rm".into(),
            title: "`docker run -d` + `docker rm -f`".into(),
            description: format!(
                "Wall time of `docker run -d {} sleep 100` plus that of `docker rm -f <id>` (the \
                 two CLI processes, nothing in between).",
                self.ctx.busybox
            ),
            unit: "s".into(),
            better: Better::Lower,
            rounds: 10,
            warmup: 1,
            goal: None,
        }
    }
    fn prepare(&self, peer: &Peer) -> std::result::Result<(), Skip> {
        Ok(ensure_image(peer, &self.ctx.busybox)?)
    }
    fn sample(&self, peer: &Peer, _round: usize) -> Result<Sample> {
        let run = peer.docker_timed(
            &["run", "-d", &self.ctx.busybox, "sleep", "100"],
            Out::Capture,
        )?;
        let id = run.stdout_text().trim().to_string();
        if id.is_empty() {
            return Err(Error::Unexpected("run -d printed no container id".into()));
        }
        let rm = peer.docker_timed(&["rm", "-f", &id], Out::Null)?;
        Ok((run.elapsed + rm.elapsed).as_secs_f64().into())
    }
}

pub struct Exec {
    ctx: Arc<Ctx>,
    ids: PerPeer,
}

impl Exec {
    pub fn new(ctx: &Arc<Ctx>) -> Self {
        Exec {
            ctx: ctx.clone(),
            ids: PerPeer::default(),
        }
    }
}

impl Scenario<Peer> for Exec {
    fn meta(&self) -> Meta {
        Meta {
            name: "exec".into(),
            title: "`docker exec <running> true`".into(),
            description: format!(
                "Wall time of `docker exec <id> true` in a running `{} sleep` container \
                 (started once, untimed).",
                self.ctx.busybox
            ),
            unit: "s".into(),
            better: Better::Lower,
            rounds: 15,
            warmup: 2,
            goal: None,
        }
    }
    fn prepare(&self, peer: &Peer) -> std::result::Result<(), Skip> {
        ensure_image(peer, &self.ctx.busybox)?;
        let id = run_detached(peer, &[&self.ctx.busybox, "sleep", "100000"])?;
        self.ids.set(peer, id);
        Ok(())
    }
    fn sample(&self, peer: &Peer, _round: usize) -> Result<Sample> {
        let id = self.ids.get(peer)?;
        Ok(secs(&peer.docker_timed(&["exec", &id, "true"], Out::Null)?))
    }
    fn cleanup(&self, peer: &Peer) {
        if let Some(id) = self.ids.take(peer) {
            let _ = peer.docker(&["rm", "-f", &id]);
        }
    }
}

/// Lines the logs container prints.
pub const LOG_LINES: usize = 100_000;

pub struct Logs {
    ctx: Arc<Ctx>,
    ids: PerPeer,
}

impl Logs {
    pub fn new(ctx: &Arc<Ctx>) -> Self {
        Logs {
            ctx: ctx.clone(),
            ids: PerPeer::default(),
        }
    }
}

/// The logs must be complete and in order: 1..=n, one per line.
pub fn check_seq_output(out: &str, n: usize) -> Result<()> {
    let lines: Vec<&str> = out.lines().collect();
    if lines.len() != n {
        return Err(Error::Unexpected(format!(
            "logs printed {} lines, expected {n}",
            lines.len()
        )));
    }
    if lines.first() != Some(&"1") || lines.last().map(|l| l.to_string()) != Some(n.to_string()) {
        return Err(Error::Unexpected(format!(
            "logs out of order: first {:?}, last {:?}",
            lines.first(),
            lines.last()
        )));
    }
    Ok(())
}

impl Scenario<Peer> for Logs {
    fn meta(&self) -> Meta {
        Meta {
            name: "logs-100k".into(),
            title: "`docker logs` of 100k lines".into(),
            description: format!(
                "Wall time of `docker logs <id>` (stdout to /dev/null) of an exited container \
                 that printed {LOG_LINES} lines (`seq 1 {LOG_LINES}`). Completeness and order \
                 are checked once, untimed, before the timed runs."
            ),
            unit: "s".into(),
            better: Better::Lower,
            rounds: 10,
            warmup: 1,
            goal: None,
        }
    }
    fn prepare(&self, peer: &Peer) -> std::result::Result<(), Skip> {
        ensure_image(peer, &self.ctx.busybox)?;
        let n = LOG_LINES.to_string();
        let id = run_detached(peer, &[&self.ctx.busybox, "seq", "1", &n])?;
        self.ids.set(peer, id.clone());
        let code = peer.docker(&["wait", &id])?;
        if code.trim() != "0" {
            return Err(Error::Unexpected(format!("seq exited {}", code.trim())).into());
        }
        check_seq_output(&peer.docker(&["logs", &id])?, LOG_LINES)?;
        Ok(())
    }
    fn sample(&self, peer: &Peer, _round: usize) -> Result<Sample> {
        let id = self.ids.get(peer)?;
        Ok(secs(&peer.docker_timed(&["logs", &id], Out::Null)?))
    }
    fn cleanup(&self, peer: &Peer) {
        if let Some(id) = self.ids.take(peer) {
            let _ = peer.docker(&["rm", "-f", &id]);
        }
    }
}

/// Containers started at once in `concurrent-20`.
pub const CONCURRENT: usize = 20;

pub struct Concurrent {
    ctx: Arc<Ctx>,
}

impl Concurrent {
    pub fn new(ctx: &Arc<Ctx>) -> Self {
        Concurrent { ctx: ctx.clone() }
    }
}

impl Scenario<Peer> for Concurrent {
    fn meta(&self) -> Meta {
        Meta {
            name: "concurrent-20".into(),
            title: "20 concurrent `docker run --rm`".into(),
            description: format!(
                "Wall time from starting {CONCURRENT} docker CLI processes `docker run --rm {} \
                 true` at once (released by a barrier) until the last one exits.",
                self.ctx.busybox
            ),
            unit: "s".into(),
            better: Better::Lower,
            rounds: 5,
            warmup: 1,
            goal: None,
        }
    }
    fn prepare(&self, peer: &Peer) -> std::result::Result<(), Skip> {
        Ok(ensure_image(peer, &self.ctx.busybox)?)
    }
    fn sample(&self, peer: &Peer, _round: usize) -> Result<Sample> {
        let barrier = Barrier::new(CONCURRENT + 1);
        let (elapsed, errors) = std::thread::scope(|s| {
            let handles: Vec<_> = (0..CONCURRENT)
                .map(|_| {
                    let cmd = peer.docker_command(&["run", "--rm", &self.ctx.busybox, "true"]);
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        checked(cmd, Out::Null, CLI_TIMEOUT)
                    })
                })
                .collect();
            barrier.wait();
            let start = Instant::now();
            let errors: Vec<String> = handles
                .into_iter()
                .filter_map(|h| match h.join() {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("thread panicked".into()),
                })
                .collect();
            (start.elapsed(), errors)
        });
        if let Some(e) = errors.first() {
            return Err(Error::Unexpected(format!(
                "{} of {CONCURRENT} runs failed, first: {e}",
                errors.len()
            )));
        }
        Ok(elapsed.as_secs_f64().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_output_is_checked() {
        assert!(check_seq_output("1\n2\n3\n", 3).is_ok());
        assert!(check_seq_output("1\n2\n", 3).is_err());
        assert!(check_seq_output("1\n3\n2\n", 3).is_err());
    }
}
