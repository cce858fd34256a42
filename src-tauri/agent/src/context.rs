//! The `docker context` named `berth`, pointing at the agent's docker socket. Created (or
//! updated) when the engine comes up; the user switches with `docker context use berth`.

use std::process::{Command, Stdio};

use crate::paths::Home;

pub const CONTEXT_NAME: &str = "berth";

/// Create or update the context in the background; a missing docker CLI is not an error.
pub fn ensure_docker_context(home: &Home) {
    let host = format!("host=unix://{}", home.docker_socket().display());
    std::thread::spawn(move || {
        let run = |args: &[&str]| {
            Command::new("docker").args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
        };
        if !run(&["context", "update", CONTEXT_NAME, "--docker", &host]) {
            run(&["context", "create", CONTEXT_NAME, "--description", "Berth", "--docker", &host]);
        }
    });
}
