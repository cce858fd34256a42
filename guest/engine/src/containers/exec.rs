//! `docker exec`: create, start (hijacked stream), inspect, resize.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::http_util::{Body, Query};

fn not_yet() -> ApiError {
    ApiError::NotImplemented("docker exec is not supported by Berth yet".into())
}

/// POST /containers/{id}/exec
pub async fn create(_e: &Arc<Engine>, _key: &str, _req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    Err(not_yet())
}
/// POST /exec/{id}/start
pub async fn start(_e: &Arc<Engine>, _id: &str, _req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    Err(not_yet())
}
/// GET /exec/{id}/json
pub async fn inspect(_e: &Arc<Engine>, _id: &str) -> Result<Response<Body>, ApiError> {
    Err(not_yet())
}
/// POST /exec/{id}/resize
pub async fn resize(_e: &Arc<Engine>, _id: &str, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet())
}
