//! Every scenario of the suite, in the order they run.
//!
//! To add one: write a type implementing [`Scenario<Peer>`] (daemons driven by the docker
//! CLI) or [`Scenario<OciRuntime>`] (runtimes on a prepared bundle) in a module here, and
//! add it to [`daemon_scenarios`] or [`runtime_scenarios`] (the Berth VM's scenarios are
//! [`Scenario<VmSubject>`](crate::vm::VmSubject), listed in [`vm::vm_scenarios`]). Time the docker CLI invocation as
//! a whole with [`Peer::docker_timed`], do untimed setup in `prepare`, answer
//! [`Skip::NotApplicable`] with the reason when a subject lacks the feature (see
//! [`missing_feature`]), and remove what you made in `cleanup`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::peers::Peer;
use crate::runtimes::OciRuntime;
use crate::scenario::{Meta, Sample, Scenario, Skip};

pub mod build;
pub mod containers;
pub mod memory;
pub mod ports;
pub mod pull;
pub mod runtime;
pub mod vm;

/// What the daemon scenarios share.
pub struct Ctx {
    /// The busybox fixture, e.g. `127.0.0.1:5000/bench/busybox:latest`.
    pub busybox: String,
    /// The ~30 MB pull image.
    pub pull_ref: String,
    /// Its config digest (the image id every peer must report after a pull).
    pub pull_image_id: String,
    /// Shared registry storage, read back in after a page cache drop.
    pub registry_storage: PathBuf,
    /// Programs read back in after a page cache drop (the CLI, every daemon's binaries).
    pub programs: Vec<PathBuf>,
    pub drop_caches: bool,
}

/// The daemon scenarios, in run order.
pub fn daemon_scenarios(ctx: &Arc<Ctx>) -> Vec<Box<dyn Scenario<Peer>>> {
    vec![
        Box::new(memory::IdleRss::new(ctx)),
        Box::new(pull::Pull::cold(ctx)),
        Box::new(pull::Pull::warm(ctx)),
        Box::new(containers::RunRm::new(ctx)),
        Box::new(containers::RunRm::no_network(ctx)),
        Box::new(containers::RunDetachedRm::new(ctx)),
        Box::new(containers::Exec::new(ctx)),
        Box::new(containers::Logs::new(ctx)),
        Box::new(containers::Concurrent::new(ctx)),
        Box::new(build::Build::cold(ctx)),
        Box::new(build::Build::cached(ctx)),
        Box::new(ports::PublishTcp::new(ctx)),
        Box::new(memory::IdleRssAfterRuns::new(ctx)),
    ]
}

/// The runtime scenarios, in run order.
pub fn runtime_scenarios() -> Vec<Box<dyn Scenario<OciRuntime>>> {
    vec![Box::new(runtime::RuntimeRun)]
}

/// A scenario with its rounds overridden from the command line.
pub struct WithRounds<'a, S: ?Sized> {
    pub inner: &'a dyn Scenario<S>,
    pub rounds: usize,
}

impl<S: ?Sized> Scenario<S> for WithRounds<'_, S> {
    fn meta(&self) -> Meta {
        let mut m = self.inner.meta();
        m.rounds = self.rounds;
        m
    }
    fn prepare(&self, s: &S) -> std::result::Result<(), Skip> {
        self.inner.prepare(s)
    }
    fn sample(&self, s: &S, round: usize) -> Result<Sample> {
        self.inner.sample(s, round)
    }
    fn cleanup(&self, s: &S) {
        self.inner.cleanup(s)
    }
}

/// When a daemon refuses a request because it lacks the feature (an endpoint it does not
/// have, or says it does not implement), the reason in one line; `None` for other failures,
/// which are errors, not gaps.
pub fn missing_feature(err: &Error) -> Option<String> {
    let Error::Command { stderr, .. } = err else {
        return None;
    };
    let lower = stderr.to_lowercase();
    let markers = [
        "page not found",
        "not implemented",
        "is not supported by berth",
        "not supported yet",
        "(501",
        "status 501",
    ];
    if markers.iter().any(|m| lower.contains(m)) {
        let line = stderr
            .lines()
            .find(|l| markers.iter().any(|m| l.to_lowercase().contains(m)))
            .unwrap_or("");
        Some(line.trim().to_string())
    } else {
        None
    }
}

/// Ask the daemon's API directly whether it has an endpoint: `Some(reason)` when it answers
/// 404 "page not found" or 501 for the endpoint itself (a daemon that has the endpoint
/// refuses the empty request with another status). Deterministic, unlike reading the
/// error of a CLI command that may be cut off while uploading (e.g. a build context).
pub fn probe_endpoint(peer: &Peer, method: &str, path: &str) -> Option<String> {
    let r =
        berth_tests::berthd::api_request(&peer.socket(), method, path, Some(Vec::new())).ok()?;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let missing = r.status == 501 || (r.status == 404 && text.contains("page not found"));
    missing.then(|| format!("{method} {path}: {} {}", r.status, text.trim()))
}

/// `docker pull` (untimed) so a scenario's image is present.
pub fn ensure_image(peer: &Peer, reference: &str) -> Result<()> {
    peer.docker(&["pull", "-q", reference]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    fn cmd_err(stderr: &str) -> Error {
        Error::Command {
            command: "docker build".into(),
            status: std::process::ExitStatus::from_raw(256),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn missing_features_are_told_apart_from_failures() {
        assert_eq!(
            missing_feature(&cmd_err(
                "DEPRECATED: legacy builder\nError response from daemon: page not found: POST /build"
            ))
            .as_deref(),
            Some("Error response from daemon: page not found: POST /build")
        );
        assert!(missing_feature(&cmd_err(
            "Error response from daemon: docker push is not supported by Berth yet"
        ))
        .is_some());
        assert!(missing_feature(&cmd_err("Error response from daemon: no such image")).is_none());
        assert!(missing_feature(&Error::Unexpected("page not found".into())).is_none());
    }
}
