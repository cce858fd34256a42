//! The HTTP side: URL choice, retries, the 401 -> challenge -> token -> retry dance, and the
//! manifest/blob requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use reqwest::header::{
    HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::challenge::{parse_www_authenticate, Challenge};
use crate::error::{error_for_status, error_message};
use crate::reference::{
    normalize_registry, validate_manifest_reference, validate_repository_name, DOCKER_HUB_API_HOST,
};
use crate::{manifest, Auth, RegistryError, Repository};

/// Largest manifest body we read; real ones are a few KiB, big ones are an attack.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Largest token or error body we read.
const MAX_SMALL_BODY: u64 = 1 << 20;
const ATTEMPTS: u32 = 3;
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Retry-After values above this are clamped: a pull should fail rather than hang for minutes.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-read stall limit; no total timeout because layers can be gigabytes.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Time limit for the small requests (manifests, tokens, ping).
const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

pub struct ClientConfig {
    /// "host:port" or "host" (any port): spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            insecure_registries: Vec::new(),
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

pub struct FetchedManifest {
    pub media_type: String,
    /// "sha256:<hex>" of `bytes`
    pub digest: String,
    pub bytes: Bytes,
}

pub struct BlobResponse {
    /// Size of the whole blob when the server said (Content-Length or Content-Range total).
    pub total_size: Option<u64>,
    /// Where `stream` starts within the blob: the requested offset, or 0 if Range was ignored.
    pub offset: u64,
    pub stream: BoxStream<'static, Result<Bytes, RegistryError>>,
}

#[derive(Hash, PartialEq, Eq, Clone)]
struct CacheKey {
    registry: String,
    scope: String,
    /// Hash of the credentials, so one user's token never serves another.
    cred: String,
}

struct CachedAuth {
    header: String,
    expires: Option<Instant>,
}

struct Inner {
    /// Built at first use ([`Client::http`]): reqwest loads and parses every CA certificate of
    /// the system when it builds a TLS client, which is most of berthd's start-up natively
    /// (~0.35 s with /etc/ssl/certs here) and more under emulation (the Berth VM under TCG),
    /// while most daemon runs never pull.
    http: std::sync::OnceLock<Result<reqwest::Client, String>>,
    user_agent: String,
    insecure: Vec<String>,
    auth_cache: Mutex<HashMap<CacheKey, CachedAuth>>,
}

/// Registry client; clones share the connection pool and token cache.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

fn cred_key(auth: &Auth) -> String {
    let mut h = Sha256::new();
    match auth {
        Auth::Anonymous => h.update(b"anon"),
        Auth::Basic { username, password } => {
            h.update(b"basic\0");
            h.update(username.as_bytes());
            h.update(b"\0");
            h.update(password.as_bytes());
        }
        Auth::IdentityToken(t) => {
            h.update(b"identity\0");
            h.update(t.as_bytes());
        }
        Auth::RegistryToken(t) => {
            h.update(b"registry\0");
            h.update(t.as_bytes());
        }
    }
    hex::encode(h.finalize())
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Reads at most `limit` bytes of a body; more is TooLarge.
async fn read_bounded(mut resp: Response, limit: u64, what: &str) -> Result<Bytes, RegistryError> {
    if let Some(len) = resp.content_length() {
        if len > limit {
            return Err(RegistryError::TooLarge(format!(
                "{what} is {len} bytes, limit {limit}"
            )));
        }
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        if buf.len() as u64 + chunk.len() as u64 > limit {
            return Err(RegistryError::TooLarge(format!(
                "{what} exceeds {limit} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Error for a non-success response, with the registry's own message.
async fn error_from_response(resp: Response) -> RegistryError {
    let status = resp.status().as_u16();
    let body = read_bounded(resp, 64 << 10, "error body")
        .await
        .unwrap_or_default();
    error_for_status(status, &body)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

fn with_auth(rb: RequestBuilder, header: Option<&str>) -> RequestBuilder {
    match header {
        Some(h) => rb.header(AUTHORIZATION, h),
        None => rb,
    }
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Self, RegistryError> {
        let insecure = cfg
            .insecure_registries
            .iter()
            .map(|r| normalize_registry(r))
            .filter(|r| !r.is_empty())
            .collect();
        Ok(Client {
            inner: Arc::new(Inner {
                http: std::sync::OnceLock::new(),
                user_agent: cfg.user_agent,
                insecure,
                auth_cache: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The HTTP client, built on first use (blocking for as long as loading the CA
    /// certificates takes; [`Client::warm_up`] does it ahead of time).
    fn http(&self) -> Result<&reqwest::Client, RegistryError> {
        let r = self.inner.http.get_or_init(|| {
            reqwest::Client::builder()
                .user_agent(self.inner.user_agent.clone())
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
                .build()
                .map_err(|e| e.to_string())
        });
        r.as_ref().map_err(|e| RegistryError::Setup(e.clone()))
    }

    /// Build the HTTP client now (call it off the async threads, when the daemon is idle), so
    /// the first pull does not pay for it.
    pub fn warm_up(&self) -> Result<(), RegistryError> {
        self.http().map(|_| ())
    }

    /// "docker.io" -> https://registry-1.docker.io. Plain HTTP for 127.0.0.0/8, ::1, "localhost"
    /// and insecure_registries; HTTPS (rustls) otherwise.
    pub fn base_url(&self, registry: &str) -> Result<url::Url, RegistryError> {
        let bad = || RegistryError::InvalidReference(format!("invalid registry host {registry:?}"));
        let r = registry.trim().to_ascii_lowercase();
        if r.is_empty()
            || r.chars()
                .any(|c| c.is_whitespace() || "/@?#\\%".contains(c))
        {
            return Err(bad());
        }
        if matches!(
            r.as_str(),
            "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
        ) {
            return Ok(
                url::Url::parse(&format!("https://{DOCKER_HUB_API_HOST}/")).expect("static url")
            );
        }
        let (host, port): (&str, Option<&str>) = if let Some(rest) = r.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (h, None),
                a => (h, Some(a.strip_prefix(':').ok_or_else(bad)?)),
            }
        } else if r.matches(':').count() > 1 {
            (r.as_str(), None) // bare IPv6 literal
        } else {
            match r.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (r.as_str(), None),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        if let Some(p) = port {
            p.parse::<u16>().map_err(|_| bad())?;
        }
        let is_v6 = host.contains(':');
        if is_v6 && host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        let url_host = if is_v6 {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let authority = match port {
            Some(p) => format!("{url_host}:{p}"),
            None => url_host.clone(),
        };
        let plain = is_loopback_host(host)
            || self
                .inner
                .insecure
                .iter()
                .any(|i| *i == authority || *i == url_host || *i == host);
        let scheme = if plain { "http" } else { "https" };
        let url = url::Url::parse(&format!("{scheme}://{authority}/")).map_err(|_| bad())?;
        if url.host_str().is_none() || url.path() != "/" {
            return Err(bad());
        }
        Ok(url)
    }

    /// `docker login`: GET /v2/ with the credentials, following a Bearer challenge if any.
    pub async fn login(&self, registry: &str, auth: &Auth) -> Result<(), RegistryError> {
        let url = self.base_url(registry)?.join("v2/").expect("static path");
        let resp = self
            .send_authed(registry, None, auth, |c| {
                c.get(url.clone()).timeout(SMALL_REQUEST_TIMEOUT)
            })
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(error_from_response(resp).await)
        }
    }

    /// GET /v2/<name>/manifests/<reference>; the digest is computed locally and, for a digest
    /// reference, must match it.
    pub async fn get_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        auth: &Auth,
    ) -> Result<FetchedManifest, RegistryError> {
        validate_repository_name(&repo.name)?;
        let by_digest = validate_manifest_reference(reference)?;
        let url = self
            .base_url(&repo.registry)?
            .join(&format!("v2/{}/manifests/{}", repo.name, reference))
            .map_err(|e| RegistryError::InvalidReference(e.to_string()))?;
        let scope = pull_scope(&repo.name);
        let resp = self
            .send_authed(&repo.registry, Some(&scope), auth, |c| {
                c.get(url.clone())
                    .header(ACCEPT, manifest::ACCEPT)
                    .timeout(SMALL_REQUEST_TIMEOUT)
            })
            .await?;
        if !resp.status().is_success() {
            return Err(error_from_response(resp).await);
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| {
                s.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read_bounded(resp, MAX_MANIFEST_SIZE, "manifest").await?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if by_digest && digest != reference {
            return Err(RegistryError::DigestMismatch {
                expected: reference.to_string(),
                actual: digest,
            });
        }
        if let Some(h) = header_digest {
            if h.starts_with("sha256:") && h != digest {
                // Only a warning: the digest we return is the one we computed from the bytes.
                tracing::warn!(registry = %repo.registry, header = %h, computed = %digest, "Docker-Content-Digest disagrees with manifest body");
            }
        }
        let media_type = match content_type.as_str() {
            "" | "application/json" | "text/plain" | "application/octet-stream" => {
                manifest::detect_media_type(&bytes)?
            }
            manifest::DOCKER_MANIFEST_SCHEMA1 | manifest::DOCKER_MANIFEST_SCHEMA1_SIGNED => {
                // Let parse() produce its explanatory schema1 error.
                manifest::parse(&content_type, &bytes)?;
                unreachable!("schema1 always rejected")
            }
            _ => content_type,
        };
        Ok(FetchedManifest {
            media_type,
            digest,
            bytes,
        })
    }

    /// GET /v2/<name>/blobs/<digest>, following redirects. The caller verifies the digest of
    /// what it stores (it may be resuming, so only it sees the whole blob).
    pub async fn get_blob(
        &self,
        repo: &Repository,
        digest: &str,
        auth: &Auth,
        offset: u64,
    ) -> Result<BlobResponse, RegistryError> {
        validate_repository_name(&repo.name)?;
        if !manifest::is_valid_digest(digest) {
            return Err(RegistryError::InvalidReference(format!(
                "invalid blob digest {digest:?}"
            )));
        }
        let url = self
            .base_url(&repo.registry)?
            .join(&format!("v2/{}/blobs/{}", repo.name, digest))
            .map_err(|e| RegistryError::InvalidReference(e.to_string()))?;
        let scope = pull_scope(&repo.name);
        let resp = self
            .send_authed(&repo.registry, Some(&scope), auth, |c| {
                let rb = c.get(url.clone());
                if offset > 0 {
                    rb.header(RANGE, format!("bytes={offset}-"))
                } else {
                    rb
                }
            })
            .await?;
        let status = resp.status();
        let (start, total) = if status == StatusCode::PARTIAL_CONTENT {
            let cr = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    RegistryError::Transport("206 response without Content-Range".into())
                })?;
            let (start, total) = parse_content_range(cr)
                .ok_or_else(|| RegistryError::Transport(format!("bad Content-Range {cr:?}")))?;
            if offset == 0 || start != offset {
                return Err(RegistryError::Transport(format!(
                    "asked for bytes from {offset}, server sent {cr:?}"
                )));
            }
            (start, total)
        } else if status.is_success() {
            (0, resp.content_length())
        } else {
            return Err(error_from_response(resp).await);
        };
        let stream = resp.bytes_stream().map_err(RegistryError::from).boxed();
        Ok(BlobResponse {
            total_size: total,
            offset: start,
            stream,
        })
    }

    /// Sends with retries for transient failures: connect errors/timeouts, 429 and 5xx.
    /// The last response is returned as-is so the caller reports the real status.
    async fn send_with_retry(
        &self,
        mk: &(dyn Fn() -> RequestBuilder + Send + Sync),
    ) -> Result<Response, RegistryError> {
        let mut backoff = INITIAL_BACKOFF;
        let mut attempt = 1;
        loop {
            let last = attempt >= ATTEMPTS;
            match mk().send().await {
                Ok(resp) => {
                    let s = resp.status();
                    if last || !(s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()) {
                        return Ok(resp);
                    }
                    let wait = if s == StatusCode::TOO_MANY_REQUESTS {
                        retry_after(resp.headers()).unwrap_or(backoff)
                    } else {
                        backoff
                    };
                    tracing::debug!(status = %s, attempt, url = %resp.url(), "retrying registry request");
                    tokio::time::sleep(wait).await;
                }
                Err(e) if !last && (e.is_connect() || e.is_timeout()) => {
                    tracing::debug!(error = %e, attempt, "retrying registry request");
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(e.into()),
            }
            backoff *= 2;
            attempt += 1;
        }
    }

    fn cached_auth(&self, key: &CacheKey) -> Option<String> {
        let mut cache = self
            .inner
            .auth_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match cache.get(key) {
            Some(c) if c.expires.is_none_or(|t| Instant::now() < t) => Some(c.header.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    /// One request with credentials: cached header first; on 401 answer the challenge and
    /// retry once. A 401 after that is Unauthorized with the registry's message.
    async fn send_authed<F>(
        &self,
        registry: &str,
        scope: Option<&str>,
        auth: &Auth,
        mk: F,
    ) -> Result<Response, RegistryError>
    where
        F: Fn(&reqwest::Client) -> RequestBuilder + Send + Sync,
    {
        let http = self.http()?;
        let key = CacheKey {
            registry: registry.to_ascii_lowercase(),
            scope: scope.unwrap_or("").to_string(),
            cred: cred_key(auth),
        };
        let pre = match auth {
            Auth::RegistryToken(t) => Some(format!("Bearer {t}")),
            _ => self.cached_auth(&key),
        };
        let resp = self
            .send_with_retry(&|| with_auth(mk(http), pre.as_deref()))
            .await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        if matches!(auth, Auth::RegistryToken(_)) {
            return Err(error_from_response(resp).await);
        }
        if pre.is_some() {
            self.inner
                .auth_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_www_authenticate)
            .collect();
        let first_body = read_bounded(resp, 64 << 10, "error body")
            .await
            .unwrap_or_default();
        let header = self
            .answer_challenge(scope, auth, &challenges, &first_body)
            .await?;
        let resp = self
            .send_with_retry(&|| with_auth(mk(http), Some(&header.header)))
            .await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(error_from_response(resp).await);
        }
        if resp.status().is_success() || resp.status().is_redirection() {
            self.inner
                .auth_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, header);
        }
        Ok(resp)
    }

    async fn answer_challenge(
        &self,
        scope: Option<&str>,
        auth: &Auth,
        challenges: &[Challenge],
        first_body: &[u8],
    ) -> Result<CachedAuth, RegistryError> {
        let unauthorized = || RegistryError::Unauthorized(error_message(401, first_body));
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            return self.fetch_token(scope, auth, bearer).await;
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return match auth {
                Auth::Basic { username, password } => {
                    let b64 = base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}"));
                    Ok(CachedAuth {
                        header: format!("Basic {b64}"),
                        expires: None,
                    })
                }
                _ => Err(unauthorized()),
            };
        }
        Err(unauthorized())
    }

    /// Bearer token from the challenge's realm: GET (optionally with basic creds) or, for an
    /// identity token, the OAuth2 refresh_token POST.
    async fn fetch_token(
        &self,
        scope: Option<&str>,
        auth: &Auth,
        ch: &Challenge,
    ) -> Result<CachedAuth, RegistryError> {
        let realm = ch
            .params
            .get("realm")
            .ok_or_else(|| RegistryError::Unauthorized("bearer challenge without realm".into()))?;
        let realm = url::Url::parse(realm)
            .map_err(|e| RegistryError::Unauthorized(format!("bad token realm {realm:?}: {e}")))?;
        if !matches!(realm.scheme(), "http" | "https") {
            return Err(RegistryError::Unauthorized(format!(
                "bad token realm scheme {}",
                realm.scheme()
            )));
        }
        let service = ch.params.get("service").cloned();
        // Several scopes (a push that mounts from another repository) travel space-separated.
        let mut scopes: Vec<String> = scope.map(|s| s.split(' ').filter(|p| !p.is_empty()).map(str::to_string).collect()).unwrap_or_default();
        if let Some(s) = ch.params.get("scope") {
            for part in s.split(' ').filter(|p| !p.is_empty()) {
                if !scopes.iter().any(|x| x == part) {
                    scopes.push(part.to_string());
                }
            }
        }
        let http = self.http()?;
        let resp = match auth {
            Auth::IdentityToken(refresh) => {
                let mut form: Vec<(&str, String)> = vec![
                    ("grant_type", "refresh_token".into()),
                    ("refresh_token", refresh.clone()),
                    ("client_id", "berth".into()),
                ];
                if let Some(s) = &service {
                    form.push(("service", s.clone()));
                }
                if !scopes.is_empty() {
                    form.push(("scope", scopes.join(" ")));
                }
                self.send_with_retry(&|| {
                    http.post(realm.clone())
                        .form(&form)
                        .timeout(SMALL_REQUEST_TIMEOUT)
                })
                .await?
            }
            _ => {
                let mut url = realm.clone();
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = &service {
                        q.append_pair("service", s);
                    }
                    for s in &scopes {
                        q.append_pair("scope", s);
                    }
                    if let Auth::Basic { username, .. } = auth {
                        q.append_pair("account", username);
                    }
                }
                self.send_with_retry(&|| {
                    let rb = http.get(url.clone()).timeout(SMALL_REQUEST_TIMEOUT);
                    match auth {
                        Auth::Basic { username, password } => {
                            rb.basic_auth(username, Some(password))
                        }
                        _ => rb,
                    }
                })
                .await?
            }
        };
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = read_bounded(resp, 64 << 10, "token error")
                .await
                .unwrap_or_default();
            let msg = error_message(status, &body);
            return Err(match status {
                400 | 401 | 403 => RegistryError::Unauthorized(msg),
                _ => RegistryError::Http {
                    status,
                    message: format!("token request failed: {msg}"),
                },
            });
        }
        let body = read_bounded(resp, MAX_SMALL_BODY, "token response").await?;
        let tr: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::Unauthorized(format!("bad token response: {e}")))?;
        let token = tr
            .token
            .filter(|t| !t.is_empty())
            .or(tr.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| RegistryError::Unauthorized("token response without token".into()))?;
        // Spec: missing expires_in means 60s. Expire a little early so we never send a stale one.
        let lifetime = tr.expires_in.unwrap_or(60);
        let expires =
            Instant::now() + Duration::from_secs(lifetime.saturating_sub(lifetime / 10 + 1));
        Ok(CachedAuth {
            header: format!("Bearer {token}"),
            expires: Some(expires),
        })
    }
}

fn pull_scope(name: &str) -> String {
    format!("repository:{name}:pull")
}

fn push_scope(name: &str, mount_from: Option<&str>) -> String {
    match mount_from {
        Some(f) if f != name => format!("repository:{name}:pull,push repository:{f}:pull"),
        _ => format!("repository:{name}:pull,push"),
    }
}

/// Outcome of starting a blob upload.
pub enum UploadStart {
    /// The registry mounted the blob from the other repository: nothing to send.
    Mounted,
    /// An upload session to PATCH/PUT to.
    Session(url::Url),
}

impl Client {
    fn repo_url(&self, repo: &Repository, path: &str) -> Result<url::Url, RegistryError> {
        validate_repository_name(&repo.name)?;
        self.base_url(&repo.registry)?
            .join(&format!("v2/{}/{path}", repo.name))
            .map_err(|e| RegistryError::InvalidReference(e.to_string()))
    }

    /// HEAD /v2/<name>/blobs/<digest> with push rights: Some(size) when the registry has it.
    pub async fn blob_exists(&self, repo: &Repository, digest: &str, auth: &Auth) -> Result<Option<u64>, RegistryError> {
        if !manifest::is_valid_digest(digest) {
            return Err(RegistryError::InvalidReference(format!("invalid blob digest {digest:?}")));
        }
        let url = self.repo_url(repo, &format!("blobs/{digest}"))?;
        let scope = push_scope(&repo.name, None);
        let resp = self.send_authed(&repo.registry, Some(&scope), auth, |c| c.head(url.clone()).timeout(SMALL_REQUEST_TIMEOUT)).await?;
        match resp.status() {
            s if s.is_success() => Ok(Some(resp.content_length().unwrap_or(0))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(error_from_response(resp).await),
        }
    }

    /// POST /v2/<name>/blobs/uploads/, asking to mount `digest` from repository `from` (same
    /// registry) when given; registries that cannot mount answer with a normal session.
    pub async fn start_upload(&self, repo: &Repository, auth: &Auth, mount: Option<(&str, &str)>) -> Result<UploadStart, RegistryError> {
        let mut url = self.repo_url(repo, "blobs/uploads/")?;
        if let Some((from, digest)) = mount {
            url.query_pairs_mut().append_pair("mount", digest).append_pair("from", from);
        }
        let scope = push_scope(&repo.name, mount.map(|(f, _)| f));
        let resp = self
            .send_authed(&repo.registry, Some(&scope), auth, |c| c.post(url.clone()).header(CONTENT_LENGTH, "0").timeout(SMALL_REQUEST_TIMEOUT))
            .await?;
        match resp.status() {
            StatusCode::CREATED if mount.is_some() => Ok(UploadStart::Mounted),
            StatusCode::ACCEPTED => Ok(UploadStart::Session(self.location(repo, &resp)?)),
            _ => Err(error_from_response(resp).await),
        }
    }

    fn location(&self, repo: &Repository, resp: &Response) -> Result<url::Url, RegistryError> {
        let loc = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Transport("upload response without Location".into()))?;
        self.base_url(&repo.registry)?.join(loc).map_err(|e| RegistryError::Transport(format!("bad upload Location {loc:?}: {e}")))
    }

    /// Upload the file at `path` (whose sha256 is `digest`) to an upload session: one
    /// streamed PATCH (a chunked upload of a single chunk), then the closing PUT ?digest=.
    /// `sent` counts the bytes as they go, for progress.
    pub async fn upload_blob(
        &self,
        repo: &Repository,
        session: url::Url,
        path: &std::path::Path,
        digest: &str,
        auth: &Auth,
        sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<(), RegistryError> {
        let scope = push_scope(&repo.name, None);
        let size = std::fs::metadata(path).map_err(|e| RegistryError::Transport(format!("{}: {e}", path.display())))?.len();
        let p = path.to_path_buf();
        let resp = self
            .send_authed(&repo.registry, Some(&scope), auth, |c| {
                sent.store(0, std::sync::atomic::Ordering::Relaxed);
                let counter = std::sync::Arc::clone(&sent);
                let body = match std::fs::File::open(&p) {
                    Ok(f) => {
                        let s = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(f), 256 * 1024).inspect(move |r| {
                            if let Ok(b) = r {
                                counter.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                            }
                        });
                        reqwest::Body::wrap_stream(s)
                    }
                    Err(_) => reqwest::Body::from(Vec::new()),
                };
                c.patch(session.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, size.to_string())
                    .body(body)
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED && resp.status() != StatusCode::NO_CONTENT {
            return Err(error_from_response(resp).await);
        }
        let mut put = self.location(repo, &resp).unwrap_or(session);
        put.query_pairs_mut().append_pair("digest", digest);
        let resp = self
            .send_authed(&repo.registry, Some(&scope), auth, |c| c.put(put.clone()).header(CONTENT_LENGTH, "0").timeout(SMALL_REQUEST_TIMEOUT))
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(error_from_response(resp).await);
        }
        Ok(())
    }

    /// PUT /v2/<name>/manifests/<reference>; returns the digest (computed locally).
    pub async fn put_manifest(&self, repo: &Repository, reference: &str, media_type: &str, bytes: Bytes, auth: &Auth) -> Result<String, RegistryError> {
        validate_manifest_reference(reference)?;
        let url = self.repo_url(repo, &format!("manifests/{reference}"))?;
        let scope = push_scope(&repo.name, None);
        let resp = self
            .send_authed(&repo.registry, Some(&scope), auth, |c| {
                c.put(url.clone()).header(CONTENT_TYPE, media_type).body(bytes.clone()).timeout(SMALL_REQUEST_TIMEOUT)
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(error_from_response(resp).await);
        }
        Ok(format!("sha256:{}", hex::encode(Sha256::digest(&bytes))))
    }
}

/// "bytes 100-199/200" -> (100, Some(200)); "bytes 100-199/*" -> (100, None).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(insecure: &[&str]) -> Client {
        Client::new(ClientConfig {
            insecure_registries: insecure.iter().map(|s| s.to_string()).collect(),
            user_agent: "test".into(),
        })
        .unwrap()
    }

    #[test]
    fn http_or_https() {
        let c = client(&["myreg.local:5000", "other.example"]);
        assert_eq!(
            c.base_url("docker.io").unwrap().as_str(),
            "https://registry-1.docker.io/"
        );
        assert_eq!(
            c.base_url("index.docker.io").unwrap().as_str(),
            "https://registry-1.docker.io/"
        );
        assert_eq!(
            c.base_url("127.0.0.1:5000").unwrap().as_str(),
            "http://127.0.0.1:5000/"
        );
        assert_eq!(
            c.base_url("127.3.4.5").unwrap().as_str(),
            "http://127.3.4.5/"
        );
        assert_eq!(
            c.base_url("localhost:5000").unwrap().as_str(),
            "http://localhost:5000/"
        );
        assert_eq!(
            c.base_url("[::1]:5000").unwrap().as_str(),
            "http://[::1]:5000/"
        );
        assert_eq!(c.base_url("::1").unwrap().as_str(), "http://[::1]/");
        assert_eq!(c.base_url("ghcr.io").unwrap().as_str(), "https://ghcr.io/");
        assert_eq!(
            c.base_url("myreg.local:5000").unwrap().as_str(),
            "http://myreg.local:5000/"
        );
        assert_eq!(
            c.base_url("myreg.local:5001").unwrap().as_str(),
            "https://myreg.local:5001/"
        );
        assert_eq!(
            c.base_url("other.example:443").unwrap().as_str(),
            "http://other.example:443/"
        );
        assert_eq!(
            c.base_url("128.0.0.1:5000").unwrap().as_str(),
            "https://128.0.0.1:5000/"
        );
        for bad in [
            "",
            "a/b",
            "user@host",
            "host:99999",
            "host:",
            "h?x",
            "[::1",
            "[zz::1]:5",
        ] {
            assert!(c.base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn auth_debug_redacts() {
        let a = Auth::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{a:?}").contains("hunter2"));
    }

    fn _assert_send_sync() {
        fn is<T: Send + Sync + Clone>() {}
        is::<Client>();
    }
}
