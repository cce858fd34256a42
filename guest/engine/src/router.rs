//! Request dispatch: API version prefix and negotiation, then method + path to a handler.

use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use crate::engine::{Engine, API_VERSION, MIN_API_VERSION};
use crate::error::ApiError;
use crate::http_util::{error_response, Body, Query};
use crate::{containers, images, networks, system, volumes};

/// A parsed `/vX.Y` prefix, compared numerically (1.9 < 1.41).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl ApiVersion {
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (a, b) = s.split_once('.')?;
        Some(ApiVersion(a.parse().ok()?, b.parse().ok()?))
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// Split `/v1.47/images/json` into (Some(1.47), "/images/json"); refuse versions out of range.
pub fn split_version(path: &str) -> Result<(Option<ApiVersion>, &str), ApiError> {
    if let Some(rest) = path.strip_prefix("/v") {
        let (ver, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if let Some(v) = ApiVersion::parse(ver) {
            let max = ApiVersion::parse(API_VERSION).expect("const");
            let min = ApiVersion::parse(MIN_API_VERSION).expect("const");
            if v > max {
                return Err(ApiError::bad(format!(
                    "client version {v} is too new. Maximum supported API version is {API_VERSION}"
                )));
            }
            if v < min {
                return Err(ApiError::bad(format!(
                    "client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
                )));
            }
            return Ok((Some(v), tail));
        }
    }
    Ok((None, path))
}

pub async fn handle(engine: Arc<Engine>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let raw_path = req.uri().path().to_string();
    let mut resp = match dispatch(engine, req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status().is_server_error() {
                tracing::warn!(%method, path = %raw_path, "request failed: {e}");
            } else {
                tracing::debug!(%method, path = %raw_path, "request refused: {e}");
            }
            error_response(&e)
        }
    };
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert(
        header::SERVER,
        HeaderValue::from_str(&format!("Berth/{} (linux)", crate::engine::ENGINE_VERSION))
            .unwrap_or(HeaderValue::from_static("Berth")),
    );
    resp
}

async fn dispatch(engine: Arc<Engine>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let raw = req.uri().path().to_string();
    let decoded = percent_decode(&raw)?;
    let (_version, path) = split_version(&decoded)?;
    let path = path.trim_end_matches('/').to_string();
    let query = Query::parse(req.uri().query());
    let m = req.method().clone();

    match (&m, path.as_str()) {
        (&Method::GET | &Method::HEAD, "/_ping") => Ok(system::ping(&m)),
        (&Method::GET, "/version") => Ok(system::version(&engine)),
        (&Method::GET, "/info") => system::info(&engine).await,
        (&Method::GET, "/events") => system::events(&engine, &query),
        (&Method::GET, "/system/df") => system::df(&engine).await,
        (&Method::POST, "/auth") => system::auth(&engine, req).await,

        (&Method::GET, "/images/json") => images::list(&engine, &query).await,
        (&Method::POST, "/images/create") => images::create(&engine, req, &query).await,
        (&Method::POST, "/images/load") => images::load(&engine, req, &query).await,
        (&Method::GET, "/images/get") => images::save(&engine, &query.all("names")).await,
        (&Method::POST, "/images/prune") => images::prune(&engine, &query).await,
        (&Method::GET, "/images/search") => {
            Err(ApiError::NotImplemented("image search is not supported by Berth yet".into()))
        }
        (&Method::POST, "/build") => crate::build::build(&engine, req, &query).await,
        (&Method::POST, "/commit") => crate::commit::commit(&engine, req, &query).await,
        (&Method::POST, "/containers/create") => containers::create(&engine, req, &query).await,
        (&Method::GET, "/containers/json") => containers::list(&engine, &query).await,
        (&Method::POST, "/containers/prune") => containers::stats::prune(&engine, &query).await,
        (&Method::GET, "/networks") => networks::list(&engine, &query).await,
        (&Method::POST, "/networks/create") => networks::create(&engine, req).await,
        (&Method::POST, "/networks/prune") => networks::prune(&engine, &query).await,
        (_, p) if p.starts_with("/networks/") => {
            let rest = &p["/networks/".len()..];
            let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
            match (&m, action) {
                (&Method::GET, "") => networks::inspect(&engine, id).await,
                (&Method::DELETE, "") => networks::remove(&engine, id).await,
                (&Method::POST, "connect") => networks::connect(&engine, id, req).await,
                (&Method::POST, "disconnect") => networks::disconnect(&engine, id, req).await,
                _ => Err(ApiError::NotFound(format!("page not found: {m} {p}"))),
            }
        }
        (&Method::GET, "/volumes") => volumes::list(&engine, &query).await,
        (&Method::POST, "/volumes/create") => volumes::create(&engine, req).await,
        (&Method::POST, "/volumes/prune") => volumes::prune(&engine, &query).await,
        (&Method::GET, p) if p.starts_with("/volumes/") => volumes::inspect(&engine, &p["/volumes/".len()..]).await,
        (&Method::DELETE, p) if p.starts_with("/volumes/") => volumes::remove(&engine, &p["/volumes/".len()..], &query).await,
        (_, p) if p.starts_with("/exec/") => {
            let (id, action) = p["/exec/".len()..].split_once('/').unwrap_or((&p["/exec/".len()..], ""));
            match (&m, action) {
                (&Method::POST, "start") => containers::exec::start(&engine, id, req).await,
                (&Method::GET, "json") => containers::exec::inspect(&engine, id).await,
                (&Method::POST, "resize") => containers::exec::resize(&engine, id, &query).await,
                _ => Err(ApiError::NotFound(format!("page not found: {m} {p}"))),
            }
        }
        (_, p) if p.starts_with("/containers/") => {
            let rest = &p["/containers/".len()..];
            let (id, action) = match rest.split_once('/') {
                Some((id, a)) => (id, a),
                None => (rest, ""),
            };
            match (&m, action) {
                (&Method::GET, "json") => containers::inspect(&engine, id, &query).await,
                (&Method::POST, "rename") => containers::rename(&engine, id, &query).await,
                (&Method::POST, "update") => containers::update::update(&engine, id, req).await,
                (&Method::DELETE, "") => containers::lifecycle::remove(&engine, id, &query).await,
                (&Method::POST, "start") => containers::lifecycle::start(&engine, id).await,
                (&Method::POST, "wait") => containers::lifecycle::wait(&engine, id, &query).await,
                (&Method::POST, "stop") => containers::lifecycle::stop(&engine, id, &query).await,
                (&Method::POST, "restart") => containers::lifecycle::restart(&engine, id, &query).await,
                (&Method::POST, "kill") => containers::lifecycle::kill(&engine, id, &query).await,
                (&Method::GET, "logs") => containers::lifecycle::logs(&engine, id, &query).await,
                (&Method::POST, "attach") => containers::lifecycle::attach(&engine, id, req, &query).await,
                (&Method::POST, "resize") => containers::lifecycle::resize(&engine, id, &query).await,
                (&Method::POST, "exec") => containers::exec::create(&engine, id, req).await,
                (&Method::GET, "archive") => containers::archive::get(&engine, id, &query).await,
                (&Method::HEAD, "archive") => containers::archive::head(&engine, id, &query).await,
                (&Method::PUT, "archive") => containers::archive::put(&engine, id, req, &query).await,
                (&Method::GET, "export") => containers::archive::export(&engine, id).await,
                (&Method::GET, "changes") => containers::archive::changes(&engine, id).await,
                (&Method::GET, "stats") => containers::stats::stats(&engine, id, &query).await,
                (&Method::GET, "top") => containers::stats::top(&engine, id, &query).await,
                (&Method::POST, "pause") => containers::stats::pause(&engine, id).await,
                (&Method::POST, "unpause") => containers::stats::unpause(&engine, id).await,
                _ => Err(ApiError::NotFound(format!("page not found: {m} {p}"))),
            }
        }
        (_, p) if p.starts_with("/images/") => {
            let rest = &p["/images/".len()..];
            if m == Method::DELETE {
                return images::remove(&engine, rest, &query).await;
            }
            let (name, action) = rest
                .rsplit_once('/')
                .ok_or_else(|| ApiError::NotFound(format!("page not found: {m} {p}")))?;
            match (&m, action) {
                (&Method::GET, "json") => images::inspect(&engine, name).await,
                (&Method::GET, "history") => images::history(&engine, name).await,
                (&Method::POST, "tag") => images::tag(&engine, name, &query).await,
                (&Method::GET, "get") => images::save(&engine, &[name]).await,
                (&Method::POST, "push") => crate::push::push(&engine, name, req, &query).await,
                _ => Err(ApiError::NotFound(format!("page not found: {m} {p}"))),
            }
        }
        (_, p) if system::is_swarm_path(p) => Err(system::swarm_unavailable(p)),
        (_, p) if system::is_plugins_path(p) => system::plugins(&m, p),
        (_, p) => Err(ApiError::NotFound(format!("page not found: {m} {p}"))),
    }
}

/// Percent-decode a request path (the CLI escapes some characters in image names).
pub fn percent_decode(p: &str) -> Result<String, ApiError> {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            match hex.and_then(|s| u8::from_str_radix(s, 16).ok()) {
                Some(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                None => return Err(ApiError::bad("invalid percent-encoding in path")),
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::bad("path is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(split_version("/v1.47/info").unwrap(), (Some(ApiVersion(1, 47)), "/info"));
        assert_eq!(split_version("/info").unwrap(), (None, "/info"));
        assert_eq!(split_version("/v1.41/_ping").unwrap().1, "/_ping");
        let e = split_version("/v1.50/info").unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("too new"));
        assert!(split_version("/v1.12/info").unwrap_err().to_string().contains("too old"));
        assert!(ApiVersion(1, 9) < ApiVersion(1, 41));
    }

    #[test]
    fn plugin_paths_answer_as_an_engine_without_plugins() {
        assert!(system::is_plugins_path("/plugins") && system::is_plugins_path("/plugins/x/json"));
        assert!(!system::is_plugins_path("/pluginsx"));
        assert_eq!(system::plugins(&Method::GET, "/plugins").unwrap().status(), 200);
        let e = system::plugins(&Method::GET, "/plugins/vieux/sshfs:latest/json").unwrap_err();
        assert_eq!((e.status().as_u16(), e.to_string()), (404, "plugin \"vieux/sshfs:latest\" not found".to_string()));
        let e = system::plugins(&Method::DELETE, "/plugins/foo").unwrap_err();
        assert_eq!(e.to_string(), "plugin \"foo\" not found");
        assert_eq!(system::plugins(&Method::POST, "/plugins/pull").unwrap_err().status(), 501);
    }

    #[test]
    fn swarm_paths_answer_as_a_node_outside_a_swarm() {
        for p in ["/swarm", "/swarm/leave", "/nodes", "/services/x/update", "/tasks", "/secrets/create", "/configs"] {
            assert!(system::is_swarm_path(p), "{p}");
        }
        for p in ["/swarmy", "/servicesx", "/containers/json"] {
            assert!(!system::is_swarm_path(p), "{p}");
        }
        assert_eq!(system::swarm_unavailable("/swarm/leave").status(), 503);
        assert_eq!(system::swarm_unavailable("/swarm/leave").to_string(), "This node is not part of a swarm");
        assert_eq!(system::swarm_unavailable("/nodes").status(), 503);
        assert_eq!(system::swarm_unavailable("/swarm/init").status(), 501);
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("/images/a%2Fb/json").unwrap(), "/images/a/b/json");
        assert!(percent_decode("/x%zz").is_err());
        assert_eq!(percent_decode("/x%").unwrap(), "/x%");
    }
}
