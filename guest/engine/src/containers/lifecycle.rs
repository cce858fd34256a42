//! Running containers: start, wait, stop, kill, logs, attach, remove.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::http_util::{status_only, Body, Query};

use super::store::Status;

fn not_yet(what: &str) -> ApiError {
    ApiError::NotImplemented(format!("{what} is not supported by Berth yet"))
}

/// DELETE /containers/{id}
pub async fn remove(e: &Arc<Engine>, key: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let force = q.bool("force")?;
    let c = e.containers.get(key)?;
    let running = matches!(c.state.status, Status::Running | Status::Paused | Status::Restarting);
    if running && !force {
        return Err(ApiError::Conflict(format!(
            "cannot remove container \"/{}\": container is {}: stop the container before removing or force remove",
            c.name,
            c.state.status.as_str()
        )));
    }
    if running {
        return Err(not_yet("removing a running container"));
    }
    let store = Arc::clone(&e.containers);
    let id = c.id.clone();
    tokio::task::spawn_blocking(move || store.remove(&id)).await??;
    e.events.container("destroy", &c);
    Ok(status_only(StatusCode::NO_CONTENT))
}

pub async fn start(_e: &Arc<Engine>, _key: &str) -> Result<Response<Body>, ApiError> {
    Err(not_yet("starting containers"))
}
pub async fn wait(_e: &Arc<Engine>, _key: &str, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet("waiting for containers"))
}
pub async fn stop(_e: &Arc<Engine>, _key: &str, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet("stopping containers"))
}
pub async fn restart(_e: &Arc<Engine>, _key: &str, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet("restarting containers"))
}
pub async fn kill(_e: &Arc<Engine>, _key: &str, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet("killing containers"))
}
pub async fn logs(_e: &Arc<Engine>, _key: &str, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet("container logs"))
}
pub async fn attach(_e: &Arc<Engine>, _key: &str, _req: Request<Incoming>, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet("attach"))
}
pub async fn resize(_e: &Arc<Engine>, _key: &str, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet("resize"))
}
