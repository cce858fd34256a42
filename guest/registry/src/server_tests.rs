//! End-to-end tests of [`Client`] against an in-process hyper server on 127.0.0.1:0.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

use crate::manifest::{self, ParsedManifest};
use crate::{Auth, Client, ClientConfig, RegistryError, Repository};

type Handler = Arc<dyn Fn(&http::request::Parts, &Bytes) -> Response<Full<Bytes>> + Send + Sync>;

async fn serve(h: Handler) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let h = h.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let h = h.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, Infallible>(h(&parts, &body))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    addr
}

fn resp(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).unwrap()
}

fn client() -> Client {
    Client::new(ClientConfig {
        insecure_registries: vec![],
        user_agent: "berth-test".into(),
    })
    .unwrap()
}

fn repo(addr: SocketAddr) -> Repository {
    Repository {
        registry: addr.to_string(),
        name: "library/busybox".into(),
    }
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn manifest_body() -> Bytes {
    Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"sha256:{}","size":10}},"layers":[{{"mediaType":"{}","digest":"sha256:{}","size":20}}]}}"#,
        manifest::OCI_MANIFEST,
        manifest::OCI_CONFIG,
        "a".repeat(64),
        manifest::OCI_LAYER_GZIP,
        "b".repeat(64)
    ))
}

fn header<'a>(p: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    p.headers.get(name).and_then(|v| v.to_str().ok())
}

fn query(p: &http::request::Parts) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(p.uri.query().unwrap_or("").as_bytes()) {
        m.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    m
}

#[tokio::test]
async fn anonymous_manifest_fetch() {
    let body = manifest_body();
    let b2 = body.clone();
    let addr = serve(Arc::new(move |p, _| {
        if p.uri.path() != "/v2/library/busybox/manifests/latest" {
            return resp(
                404,
                &[],
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            );
        }
        let accept = header(p, "accept").unwrap_or("");
        for mt in [
            manifest::DOCKER_MANIFEST_SCHEMA2,
            manifest::DOCKER_MANIFEST_LIST,
            manifest::OCI_MANIFEST,
            manifest::OCI_INDEX,
        ] {
            if !accept.contains(mt) {
                return resp(406, &[], "bad accept");
            }
        }
        assert_eq!(header(p, "user-agent"), Some("berth-test"));
        resp(200, &[("content-type", manifest::OCI_MANIFEST)], b2.clone())
    }))
    .await;
    let c = client();
    let m = c
        .get_manifest(&repo(addr), "latest", &Auth::Anonymous)
        .await
        .unwrap();
    assert_eq!(m.media_type, manifest::OCI_MANIFEST);
    assert_eq!(m.digest, sha(&body));
    assert_eq!(m.bytes, body);
    assert!(matches!(
        manifest::parse(&m.media_type, &m.bytes).unwrap(),
        ParsedManifest::Image(_)
    ));

    match c.get_manifest(&repo(addr), "nope", &Auth::Anonymous).await {
        Err(RegistryError::NotFound(msg)) => assert_eq!(msg, "manifest unknown: manifest unknown"),
        other => panic!("{:?}", other.err()),
    }
    assert!(matches!(
        c.get_manifest(&repo(addr), "../x", &Auth::Anonymous).await,
        Err(RegistryError::InvalidReference(_))
    ));
}

/// A registry that wants `Bearer good-token`, with a token endpoint that checks basic creds.
async fn bearer_registry(token_hits: Arc<AtomicUsize>) -> SocketAddr {
    let addr_cell: Arc<std::sync::OnceLock<SocketAddr>> = Arc::new(std::sync::OnceLock::new());
    let cell = addr_cell.clone();
    let body = manifest_body();
    let addr = serve(Arc::new(move |p, form| {
        let me = cell.get().unwrap();
        match p.uri.path() {
            "/token" => {
                token_hits.fetch_add(1, Ordering::SeqCst);
                let q = query(p);
                if p.method != http::Method::POST
                    && q.get("service").map(|v| v.as_slice()) != Some(&["test-registry".to_string()][..])
                {
                    return resp(400, &[], r#"{"details":"bad service"}"#);
                }
                if p.method == http::Method::POST {
                    let f: HashMap<String, String> = url::form_urlencoded::parse(form).into_owned().collect();
                    if f.get("grant_type").map(String::as_str) == Some("refresh_token")
                        && f.get("refresh_token").map(String::as_str) == Some("refresh-me")
                        && f.get("service").map(String::as_str) == Some("test-registry")
                    {
                        return resp(200, &[], r#"{"access_token":"good-token","expires_in":300}"#);
                    }
                    return resp(401, &[], r#"{"details":"invalid refresh token"}"#);
                }
                let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:s3cret"));
                if header(p, "authorization") != Some(want.as_str()) {
                    return resp(401, &[], r#"{"details":"incorrect username or password"}"#);
                }
                // Pull scope for the repository, sent once even though the challenge repeats it.
                let scopes = q.get("scope").cloned().unwrap_or_default();
                if scopes.len() > 1 || scopes.iter().any(|s| s != "repository:library/busybox:pull") {
                    return resp(400, &[], r#"{"details":"bad scope"}"#);
                }
                if q.get("account").map(|v| v.as_slice()) != Some(&["alice".to_string()][..]) {
                    return resp(400, &[], r#"{"details":"bad account"}"#);
                }
                resp(200, &[], r#"{"token":"good-token","expires_in":300}"#)
            }
            path => {
                if header(p, "authorization") != Some("Bearer good-token") {
                    let scope = if path == "/v2/" { String::new() } else { ",scope=\"repository:library/busybox:pull\"".into() };
                    let chal = format!("Bearer realm=\"http://{me}/token\",service=\"test-registry\"{scope}");
                    return resp(
                        401,
                        &[("www-authenticate", chal.as_str())],
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                    );
                }
                match path {
                    "/v2/" => resp(200, &[], "{}"),
                    "/v2/library/busybox/manifests/latest" => {
                        resp(200, &[("content-type", manifest::OCI_MANIFEST)], body.clone())
                    }
                    _ => resp(404, &[], ""),
                }
            }
        }
    }))
    .await;
    addr_cell.set(addr).unwrap();
    addr
}

#[tokio::test]
async fn bearer_flow_with_basic_credentials() {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = bearer_registry(hits.clone()).await;
    let c = client();
    let alice = Auth::Basic {
        username: "alice".into(),
        password: "s3cret".into(),
    };
    let m = c.get_manifest(&repo(addr), "latest", &alice).await.unwrap();
    assert_eq!(m.digest, sha(&manifest_body()));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Token is cached for (registry, scope, credentials): no second token request.
    let c2 = c.clone();
    let r = repo(addr);
    let a2 = alice.clone();
    tokio::spawn(async move { c2.get_manifest(&r, "latest", &a2).await.map(|_| ()) })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Anonymous gets no token from this endpoint and ends Unauthorized.
    assert!(matches!(
        c.get_manifest(&repo(addr), "latest", &Auth::Anonymous)
            .await,
        Err(RegistryError::Unauthorized(_))
    ));
    // login follows the challenge too.
    c.login(&addr.to_string(), &alice).await.unwrap();
    // Identity token: OAuth refresh_token POST.
    c.get_manifest(
        &repo(addr),
        "latest",
        &Auth::IdentityToken("refresh-me".into()),
    )
    .await
    .unwrap();
    // Registry token used directly, without the token endpoint.
    let before = hits.load(Ordering::SeqCst);
    c.get_manifest(
        &repo(addr),
        "latest",
        &Auth::RegistryToken("good-token".into()),
    )
    .await
    .unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), before);
    assert!(matches!(
        c.get_manifest(&repo(addr), "latest", &Auth::RegistryToken("bad".into()))
            .await,
        Err(RegistryError::Unauthorized(_))
    ));
}

#[tokio::test]
async fn wrong_password_is_unauthorized() {
    let addr = bearer_registry(Arc::new(AtomicUsize::new(0))).await;
    let c = client();
    let bad = Auth::Basic {
        username: "alice".into(),
        password: "wrong".into(),
    };
    match c.login(&addr.to_string(), &bad).await {
        Err(RegistryError::Unauthorized(m)) => {
            assert_eq!(m, "unauthorized: incorrect username or password")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.get_manifest(&repo(addr), "latest", &bad).await,
        Err(RegistryError::Unauthorized(_))
    ));
    assert!(matches!(
        c.get_manifest(&repo(addr), "latest", &Auth::IdentityToken("stale".into()))
            .await,
        Err(RegistryError::Unauthorized(_))
    ));
}

#[tokio::test]
async fn basic_challenge_registry() {
    // Like distribution with htpasswd auth: Basic challenge on every request.
    let addr = serve(Arc::new(|p, _| {
        let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("bob:pw"));
        if header(p, "authorization") != Some(want.as_str()) {
            return resp(
                401,
                &[("www-authenticate", "Basic realm=\"Registry Realm\"")],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#,
            );
        }
        resp(200, &[], "{}")
    }))
    .await;
    let c = client();
    c.login(
        &addr.to_string(),
        &Auth::Basic {
            username: "bob".into(),
            password: "pw".into(),
        },
    )
    .await
    .unwrap();
    match c
        .login(
            &addr.to_string(),
            &Auth::Basic {
                username: "bob".into(),
                password: "nope".into(),
            },
        )
        .await
    {
        Err(RegistryError::Unauthorized(m)) => {
            assert_eq!(m, "unauthorized: authentication required")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.login(&addr.to_string(), &Auth::Anonymous).await,
        Err(RegistryError::Unauthorized(_))
    ));
}

#[tokio::test]
async fn digest_mismatch_by_digest() {
    let body = manifest_body();
    let b2 = body.clone();
    let addr = serve(Arc::new(move |_, _| {
        resp(200, &[("content-type", manifest::OCI_MANIFEST)], b2.clone())
    }))
    .await;
    let c = client();
    let good = sha(&body);
    let m = c
        .get_manifest(&repo(addr), &good, &Auth::Anonymous)
        .await
        .unwrap();
    assert_eq!(m.digest, good);
    let wrong = format!("sha256:{}", "0".repeat(64));
    match c.get_manifest(&repo(addr), &wrong, &Auth::Anonymous).await {
        Err(RegistryError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, good);
        }
        other => panic!("{:?}", other.err()),
    }
}

#[tokio::test]
async fn oversized_manifest_rejected() {
    let big = Bytes::from(vec![b' '; (crate::client::MAX_MANIFEST_SIZE + 1) as usize]);
    let addr = serve(Arc::new(move |_, _| {
        resp(
            200,
            &[("content-type", manifest::OCI_MANIFEST)],
            big.clone(),
        )
    }))
    .await;
    assert!(matches!(
        client()
            .get_manifest(&repo(addr), "latest", &Auth::Anonymous)
            .await,
        Err(RegistryError::TooLarge(_))
    ));
}

#[tokio::test]
async fn retries_503_then_200() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let body = manifest_body();
    let addr = serve(Arc::new(move |_, _| {
        if n2.fetch_add(1, Ordering::SeqCst) == 0 {
            resp(503, &[], "")
        } else {
            resp(
                200,
                &[("content-type", manifest::OCI_MANIFEST)],
                body.clone(),
            )
        }
    }))
    .await;
    let c = client();
    c.get_manifest(&repo(addr), "latest", &Auth::Anonymous)
        .await
        .unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 2);

    // Always failing: gives up after 3 attempts with the real status.
    let m = Arc::new(AtomicUsize::new(0));
    let m2 = m.clone();
    let addr = serve(Arc::new(move |_, _| {
        m2.fetch_add(1, Ordering::SeqCst);
        resp(
            429,
            &[("retry-after", "0")],
            r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
        )
    }))
    .await;
    match c
        .get_manifest(&repo(addr), "latest", &Auth::Anonymous)
        .await
    {
        Err(RegistryError::Http {
            status: 429,
            message,
        }) => assert_eq!(message, "toomanyrequests: slow down"),
        other => panic!("{:?}", other.err()),
    }
    assert_eq!(m.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn connection_refused_is_transport_error() {
    // Bind then drop to get a port that is (almost certainly) closed.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    assert!(matches!(
        client()
            .get_manifest(&repo(addr), "latest", &Auth::Anonymous)
            .await,
        Err(RegistryError::Transport(_))
    ));
}

fn blob() -> Bytes {
    Bytes::from((0..1000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

#[tokio::test]
async fn blob_range_resume_and_redirect() {
    let data = blob();
    let digest = sha(&data);
    let d2 = data.clone();
    let dg = digest.clone();
    let addr = serve(Arc::new(move |p, _| {
        let path = p.uri.path();
        if path == format!("/v2/library/busybox/blobs/{dg}") {
            return resp(307, &[("location", "/storage/blob")], "");
        }
        if path == "/storage/blob" || path == "/norange/blob" {
            if let (Some(r), "/storage/blob") = (header(p, "range"), path) {
                let start: usize = r
                    .strip_prefix("bytes=")
                    .unwrap()
                    .trim_end_matches('-')
                    .parse()
                    .unwrap();
                let cr = format!("bytes {}-{}/{}", start, d2.len() - 1, d2.len());
                return resp(206, &[("content-range", cr.as_str())], d2.slice(start..));
            }
            return resp(200, &[], d2.clone());
        }
        resp(
            404,
            &[],
            r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#,
        )
    }))
    .await;
    let c = client();
    let full = c
        .get_blob(&repo(addr), &digest, &Auth::Anonymous, 0)
        .await
        .unwrap();
    assert_eq!(full.offset, 0);
    assert_eq!(full.total_size, Some(1000));
    let got: Vec<Bytes> = full.stream.try_collect().await.unwrap();
    assert_eq!(got.concat(), data.to_vec());

    let part = c
        .get_blob(&repo(addr), &digest, &Auth::Anonymous, 400)
        .await
        .unwrap();
    assert_eq!(part.offset, 400);
    assert_eq!(part.total_size, Some(1000));
    let got: Vec<Bytes> = part.stream.try_collect().await.unwrap();
    assert_eq!(got.concat(), data[400..].to_vec());

    let other = format!("sha256:{}", "c".repeat(64));
    assert!(matches!(
        c.get_blob(&repo(addr), &other, &Auth::Anonymous, 0).await,
        Err(RegistryError::NotFound(_))
    ));
    assert!(matches!(
        c.get_blob(&repo(addr), "sha256:zz", &Auth::Anonymous, 0)
            .await,
        Err(RegistryError::InvalidReference(_))
    ));
}

#[tokio::test]
async fn blob_range_ignored_by_server() {
    let data = blob();
    let d2 = data.clone();
    let addr = serve(Arc::new(move |_, _| resp(200, &[], d2.clone()))).await;
    let digest = sha(&data);
    let r = client()
        .get_blob(&repo(addr), &digest, &Auth::Anonymous, 500)
        .await
        .unwrap();
    assert_eq!(r.offset, 0, "server ignored Range: stream starts at 0");
    let got: Vec<Bytes> = r.stream.try_collect().await.unwrap();
    assert_eq!(got.concat(), data.to_vec());
}

#[tokio::test]
async fn stale_cached_token_is_replaced() {
    // Every token request issues a new token and revokes the previous one, as if it expired.
    let issued = Arc::new(AtomicUsize::new(0));
    let cell: Arc<std::sync::OnceLock<SocketAddr>> = Arc::new(std::sync::OnceLock::new());
    let (i2, c2) = (issued.clone(), cell.clone());
    let addr = serve(Arc::new(move |p, _| {
        if p.uri.path() == "/token" {
            let n = i2.fetch_add(1, Ordering::SeqCst) + 1;
            return resp(200, &[], format!(r#"{{"token":"tok-{n}"}}"#));
        }
        let current = format!("Bearer tok-{}", i2.load(Ordering::SeqCst));
        if header(p, "authorization") != Some(current.as_str()) {
            let chal = format!(
                "Bearer realm=\"http://{}/token\",service=\"s\"",
                c2.get().unwrap()
            );
            return resp(401, &[("www-authenticate", chal.as_str())], "");
        }
        resp(
            200,
            &[("content-type", manifest::OCI_MANIFEST)],
            manifest_body(),
        )
    }))
    .await;
    cell.set(addr).unwrap();
    let c = client();
    c.get_manifest(&repo(addr), "latest", &Auth::Anonymous)
        .await
        .unwrap();
    assert_eq!(issued.load(Ordering::SeqCst), 1);
    // Revoke tok-1 behind the client's back: the cached token gets a 401 and is replaced.
    issued.fetch_add(1, Ordering::SeqCst);
    c.get_manifest(&repo(addr), "latest", &Auth::Anonymous)
        .await
        .unwrap();
    assert_eq!(issued.load(Ordering::SeqCst), 3);
}
