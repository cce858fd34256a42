//! `docker stats`, `docker top`, `docker pause`/`unpause`, `docker container prune`.

use std::sync::Arc;

use http::Response;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::http_util::{Body, Query};

fn not_yet(what: &str) -> ApiError {
    ApiError::NotImplemented(format!("{what} is not supported by Berth yet"))
}

/// GET /containers/{id}/stats?stream=&one-shot=
pub async fn stats(_e: &Arc<Engine>, _key: &str, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet("docker stats"))
}
/// GET /containers/{id}/top?ps_args=
pub async fn top(_e: &Arc<Engine>, _key: &str, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet("docker top"))
}
/// POST /containers/{id}/pause
pub async fn pause(_e: &Arc<Engine>, _key: &str) -> Result<Response<Body>, ApiError> {
    Err(not_yet("docker pause"))
}
/// POST /containers/{id}/unpause
pub async fn unpause(_e: &Arc<Engine>, _key: &str) -> Result<Response<Body>, ApiError> {
    Err(not_yet("docker unpause"))
}
/// POST /containers/prune
pub async fn prune(_e: &Arc<Engine>, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet("docker container prune"))
}
