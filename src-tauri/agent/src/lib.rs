//! berth-agent: the Berth host agent, as a library.
//!
//! The agent is a long-lived process (`berth agent`, started on demand by `berth up` or the
//! desktop app) that owns one engine: berthd inside the Berth VM (QEMU, [`backend::qemu`]) or,
//! on Linux, berthd as a host process ([`backend::native`]). For a VM it forwards
//! `~/.berth/run/docker.sock` to berthd's vsock port ([`forward`]), published container ports to
//! host localhost ([`ports`], driven by berthd's events), serves the guest's egress proxy
//! ([`egress`]) and clock ([`timeserve`]), and creates the `docker context` named `berth`.
//!
//! # Control API and client (stable)
//!
//! The agent serves HTTP+JSON on `~/.berth/run/agent.sock` (see [`server`] for the endpoint
//! table); [`client::AgentClient`] is its Rust client. Types are in [`api`]; fields are only
//! ever added. The Engine screen needs:
//!
//! - [`client::AgentClient::connect_or_spawn`]: reach the agent, starting it if needed.
//! - [`client::AgentClient::connect_or_reattach`]: reach the agent, starting one only when a VM
//!   whose agent is gone still runs (it re-attaches; `Status::note` says what it found).
//! - [`client::AgentClient::status`]: [`api::Status`]: state (`stopped`, `starting`,
//!   `running`, `stopping`, `failed`), backend and accelerator, staged readiness with
//!   timestamps (`stages`, `expected_stages`), `failure` (stage + message + the log line that
//!   explains it), `settings`, forwarded `ports`, `docker_host`.
//! - [`client::AgentClient::up`] / [`client::AgentClient::down`] /
//!   [`client::AgentClient::restart`]: start and stop; `up` returns when ready or failed.
//! - [`client::AgentClient::settings`] / [`client::AgentClient::set_settings`]: CPUs, memory
//!   (MiB), disk (GiB), backend, accelerator, shared folders; applied at the next start.
//! - [`client::AgentClient::events`]: live [`api::Event`]s (state, stage, failed, console log
//!   lines, port opened/closed).
//! - [`client::AgentClient::logs`] and [`client::AgentClient::diagnostics`]: the last console
//!   lines, checks (socket answers, QEMU installed, image built) and the agent's own log.
//!
//! # Layout on disk
//! See [`paths`]. Everything lives under `~/.berth` (or `$BERTH_HOME`).

pub mod agent;
pub mod api;
pub mod backend;
pub mod client;
pub mod context;
pub mod egress;
pub mod forward;
pub mod paths;
pub mod ports;
pub mod protocol;
pub mod qmp;
pub mod server;
pub mod timeserve;
pub mod transport;

pub use agent::Agent;
pub use client::AgentClient;
pub use paths::Home;

/// Run the agent in this process until `POST /v1/shutdown` (the engine is stopped first) or
/// SIGTERM/SIGINT (a VM keeps running for the next agent; native berthd is stopped). At start it
/// re-attaches to a VM an earlier agent left running.
pub async fn run_agent(home: Home) -> std::io::Result<()> {
    home.ensure()?;
    let agent = Agent::new(home);
    let a = std::sync::Arc::clone(&agent);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    // The control socket first: a second agent of this home stops here, before it could
    // touch the VM the first one runs.
    let l = server::bind(&agent)?;
    let server = tokio::spawn(server::serve_on(a, l));
    {
        let a = std::sync::Arc::clone(&agent);
        tokio::spawn(async move { a.resume().await });
    }
    tokio::select! {
        r = server => { r.map_err(std::io::Error::other)??; }
        _ = term.recv() => { agent.detach().await; }
        _ = int.recv() => { agent.detach().await; }
    }
    let _ = std::fs::remove_file(agent.home().agent_socket());
    let _ = std::fs::remove_file(agent.home().agent_pidfile());
    Ok(())
}
