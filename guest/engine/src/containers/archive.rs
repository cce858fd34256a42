//! `docker cp` (GET/PUT/HEAD /containers/{id}/archive), `docker export`, `docker diff`.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::http_util::{Body, Query};

fn not_yet(what: &str) -> ApiError {
    ApiError::NotImplemented(format!("{what} is not supported by Berth yet"))
}

/// GET /containers/{id}/archive?path=
pub async fn get(_e: &Arc<Engine>, _key: &str, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet("docker cp"))
}
/// HEAD /containers/{id}/archive?path=
pub async fn head(_e: &Arc<Engine>, _key: &str, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet("docker cp"))
}
/// PUT /containers/{id}/archive?path=&noOverwriteDirNonDir=&copyUIDGID=
pub async fn put(_e: &Arc<Engine>, _key: &str, _req: Request<Incoming>, _q: &Query) -> Result<Response<Body>, ApiError> {
    Err(not_yet("docker cp"))
}
/// GET /containers/{id}/export
pub async fn export(_e: &Arc<Engine>, _key: &str) -> Result<Response<Body>, ApiError> {
    Err(not_yet("docker export"))
}
/// GET /containers/{id}/changes
pub async fn changes(_e: &Arc<Engine>, _key: &str) -> Result<Response<Body>, ApiError> {
    Err(not_yet("docker diff"))
}
