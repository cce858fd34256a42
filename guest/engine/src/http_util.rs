//! Small HTTP helpers shared by the handlers: response bodies, query strings, Docker's filter JSON.

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{header, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde::Serialize;

use crate::error::ApiError;

/// Every response body: a whole buffer or a stream (pull progress, events, save).
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

pub fn stream_body<S>(s: S) -> Body
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    StreamBody::new(s.map(|r| r.map(Frame::data))).boxed_unsync()
}

pub fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    match serde_json::to_vec(v) {
        Ok(mut buf) => {
            buf.push(b'\n');
            Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, "application/json")
                .body(full(buf))
                .expect("static response parts are valid")
        }
        Err(e) => error_response(&ApiError::internal(e)),
    }
}

pub fn ok_json<T: Serialize>(v: &T) -> Response<Body> {
    json(StatusCode::OK, v)
}

pub fn status_only(status: StatusCode) -> Response<Body> {
    Response::builder().status(status).body(empty()).expect("valid")
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let body = serde_json::json!({ "message": e.to_string() });
    let mut buf = serde_json::to_vec(&body).unwrap_or_default();
    buf.push(b'\n');
    Response::builder()
        .status(e.status())
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(buf))
        .expect("valid")
}

/// Parsed query string. Docker repeats keys for lists (`names=a&names=b`).
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        let pairs = q
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Query { pairs }
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, k: &str) -> Vec<&str> {
        self.pairs.iter().filter(|(key, _)| key == k).map(|(_, v)| v.as_str()).collect()
    }

    /// Docker's boolean query values: "1"/"true"/"True" are true, absent/""/"0"/"false" false.
    pub fn bool(&self, k: &str) -> Result<bool, ApiError> {
        match self.get(k) {
            None | Some("") => Ok(false),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" => Ok(true),
                "0" | "false" | "no" => Ok(false),
                other => Err(ApiError::bad(format!("invalid boolean value for {k}: {other:?}"))),
            },
        }
    }

    pub fn i64(&self, k: &str) -> Result<Option<i64>, ApiError> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad(format!("invalid integer value for {k}: {v:?}"))),
        }
    }

    /// The `filters` parameter: `{"key":["v1","v2"]}` or the legacy `{"key":{"v1":true}}`.
    pub fn filters(&self) -> Result<Filters, ApiError> {
        Filters::parse(self.get("filters"))
    }
}

#[derive(Debug, Default, Clone)]
pub struct Filters(pub HashMap<String, Vec<String>>);

impl Filters {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let Some(raw) = raw.filter(|r| !r.is_empty()) else {
            return Ok(Filters::default());
        };
        let v: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad(format!("invalid filter JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| ApiError::bad("invalid filter: expected an object"))?;
        let mut out = HashMap::new();
        for (k, v) in obj {
            let vals: Vec<String> = match v {
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .ok_or_else(|| ApiError::bad(format!("invalid filter value for {k:?}")))?,
                serde_json::Value::Object(m) => m
                    .iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(name, _)| name.clone())
                    .collect(),
                _ => return Err(ApiError::bad(format!("invalid filter value for {k:?}"))),
            };
            out.insert(k.clone(), vals);
        }
        Ok(Filters(out))
    }

    pub fn get(&self, k: &str) -> &[String] {
        self.0.get(k).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Refuse filter keys an endpoint does not know, as Docker does ("invalid filter 'x'").
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        for k in self.0.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::bad(format!("invalid filter '{k}'")));
            }
        }
        Ok(())
    }

    /// A boolean filter such as `dangling=true`. Err on values other than true/false/1/0.
    pub fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        match self.get(k).first().map(String::as_str) {
            None => Ok(None),
            Some("true") | Some("1") => Ok(Some(true)),
            Some("false") | Some("0") => Ok(Some(false)),
            Some(v) => Err(ApiError::bad(format!("invalid filter '{k}={v}'"))),
        }
    }
}

/// `label=key` or `label=key=value` against a label map.
pub fn label_matches(labels: &HashMap<String, String>, spec: &str) -> bool {
    match spec.split_once('=') {
        Some((k, v)) => labels.get(k).map(|x| x == v).unwrap_or(false),
        None => labels.contains_key(spec),
    }
}

/// Docker's glob for `reference=` filters: `*` does not cross `/`, as in Go's path.Match.
/// One row of a dynamic programme per pattern byte: O(pattern x name) time whatever the
/// pattern. (A backtracking matcher took exponential time on `a*****...*b`, a CPU hog for any
/// API client; found by guest/engine/fuzz `filters`.)
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let s = s.as_bytes();
    // m[j]: the pattern so far matches the first j bytes of s.
    let mut m = vec![false; s.len() + 1];
    m[0] = true;
    for &c in pattern.as_bytes() {
        let mut next = vec![false; s.len() + 1];
        next[0] = c == b'*' && m[0];
        for j in 1..=s.len() {
            let b = s[j - 1];
            next[j] = match c {
                // Empty, or one more byte (never a `/`) for the same star.
                b'*' => m[j] || (next[j - 1] && b != b'/'),
                b'?' => m[j - 1] && b != b'/',
                _ => m[j - 1] && b == c,
            };
        }
        m = next;
    }
    m[s.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_both_formats() {
        let f = Filters::parse(Some(r#"{"dangling":["true"],"label":{"a=b":true}}"#)).unwrap();
        assert_eq!(f.get("dangling"), ["true"]);
        assert_eq!(f.get("label"), ["a=b"]);
        assert_eq!(f.bool("dangling").unwrap(), Some(true));
        assert!(f.only(&["dangling"]).is_err());
        assert!(Filters::parse(Some("[1]")).is_err());
        assert!(Filters::parse(Some("{")).is_err());
    }

    #[test]
    fn query_bools() {
        let q = Query::parse(Some("a=1&b=false&c=True&d=maybe"));
        assert!(q.bool("a").unwrap());
        assert!(!q.bool("b").unwrap());
        assert!(q.bool("c").unwrap());
        assert!(q.bool("d").is_err());
        assert!(!q.bool("missing").unwrap());
    }

    #[test]
    fn globs() {
        assert!(glob_match("busy*", "busybox"));
        assert!(!glob_match("*", "a/b"));
        assert!(glob_match("*/*", "a/b"));
        assert!(glob_match("b?sybox", "busybox"));
        assert!(glob_match("", "") && !glob_match("", "a") && glob_match("*", "") && !glob_match("?", ""));
        assert!(glob_match("a*b*c", "aXbYbc") && !glob_match("a*b*c", "aXbY") && !glob_match("a*c", "a/c"));
        assert!(glob_match("127.0.0.1:5000/*:lat?st", "127.0.0.1:5000/busybox:latest"));
        // Many stars against a long name that does not match: must not backtrack exponentially.
        let name = "a".repeat(200);
        assert!(!glob_match(&format!("{}b", "a*".repeat(100)), &name));
    }
}
