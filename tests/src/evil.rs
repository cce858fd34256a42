//! A hostile registry and hostile layer tars, for adversarial pull tests.
//!
//! The server speaks just enough of distribution v2 (`/v2/`, manifests, blobs) to serve one
//! image, and can misbehave per blob: wrong bytes, a dropped connection, or a stall.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;

use crate::image::Image;
use crate::netns::NetNs;
use crate::push::{image_manifest, DOCKER_MANIFEST, OCI_MANIFEST};
use crate::{sha256_digest, IoContext, Result};

/// How the server misbehaves for one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobBehavior {
    /// Serve the right bytes.
    Normal,
    /// Serve the same length with one byte flipped: the digest will not match.
    Corrupt,
    /// Announce the full length, send this many bytes, then reset the connection.
    DropAfter(usize),
    /// Announce the full length, send this many bytes, then never send more.
    StallAfter(usize),
    /// Answer the first `times` GETs of the blob with `status` (429 with `Retry-After: 1`,
    /// or a 5xx), then serve it normally: a registry that is briefly overloaded.
    BusyFirst { status: u16, times: usize },
}

/// What the evil server serves: one manifest under `repo:tag` (and its digest), plus blobs.
#[derive(Debug, Clone)]
pub struct EvilContent {
    pub repo: String,
    pub tag: String,
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    blobs: HashMap<String, (Bytes, BlobBehavior)>,
}

impl EvilContent {
    /// Serve `image` as `repo:tag` with a schema2 (or OCI) manifest, every blob normal.
    pub fn for_image(repo: &str, tag: &str, image: &Image, oci: bool) -> EvilContent {
        let mut blobs = HashMap::new();
        for l in &image.layers {
            blobs.insert(
                l.digest.clone(),
                (Bytes::from(l.blob.clone()), BlobBehavior::Normal),
            );
        }
        blobs.insert(
            image.config_digest.clone(),
            (Bytes::from(image.config.clone()), BlobBehavior::Normal),
        );
        EvilContent {
            repo: repo.into(),
            tag: tag.into(),
            manifest: image_manifest(image, oci),
            manifest_media_type: if oci { OCI_MANIFEST } else { DOCKER_MANIFEST }.into(),
            blobs,
        }
    }

    /// Digest of the served manifest.
    pub fn manifest_digest(&self) -> String {
        sha256_digest(&self.manifest)
    }

    /// Set how one blob (by digest) is served. Panics if the blob is unknown (a test bug).
    pub fn with_behavior(mut self, digest: &str, behavior: BlobBehavior) -> EvilContent {
        self.blobs
            .get_mut(digest)
            .unwrap_or_else(|| panic!("no blob {digest}"))
            .1 = behavior;
        self
    }
}

#[derive(Default)]
struct Stats {
    blob_requests: AtomicUsize,
    stalled: AtomicUsize,
    dropped: AtomicUsize,
    /// Busy answers given (BusyFirst), over all blobs.
    busy: AtomicUsize,
}

/// The running server. Drop stops it (stalled connections are closed).
pub struct EvilRegistry {
    addr: String,
    stats: Arc<Stats>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl EvilRegistry {
    /// Start serving `content` on 127.0.0.1:<free port> inside `ns`.
    pub fn start(ns: &NetNs, content: EvilContent) -> Result<EvilRegistry> {
        let listener = ns.bind_tcp("127.0.0.1:0")?;
        let addr = listener
            .local_addr()
            .ctx(|| "local_addr".into())?
            .to_string();
        listener
            .set_nonblocking(true)
            .ctx(|| "nonblocking".into())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .ctx(|| "tokio runtime".into())?;
        let stats = Arc::new(Stats::default());
        let content = Arc::new(content);
        let st = stats.clone();
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener).ctx(|| "tokio listener".into())?
        };
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let content = content.clone();
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let content = content.clone();
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(route(&content, &st, req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(EvilRegistry {
            addr,
            stats,
            runtime: Some(runtime),
        })
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Full reference of the served image, e.g. `127.0.0.1:PORT/evil:latest`.
    pub fn reference(&self, content_repo_tag: &str) -> String {
        format!("{}/{content_repo_tag}", self.addr)
    }

    /// How many blob GETs were received.
    pub fn blob_requests(&self) -> usize {
        self.stats.blob_requests.load(Ordering::SeqCst)
    }

    /// How many responses reached their stall point.
    pub fn stalled(&self) -> usize {
        self.stats.stalled.load(Ordering::SeqCst)
    }

    /// Busy answers given so far (see [`BlobBehavior::BusyFirst`]).
    pub fn busy_answers(&self) -> usize {
        self.stats.busy.load(Ordering::SeqCst)
    }

    /// How many responses were cut off on purpose.
    pub fn dropped(&self) -> usize {
        self.stats.dropped.load(Ordering::SeqCst)
    }

    /// Wait until some response has stalled (true) or `timeout` passes (false).
    pub fn wait_stalled(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stalled() > 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for EvilRegistry {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

type Resp = hyper::Response<EvilBody>;

fn route(
    content: &EvilContent,
    stats: &Arc<Stats>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Resp {
    let path = req.uri().path().to_string();
    let head = req.method() == hyper::Method::HEAD;
    let builder =
        hyper::Response::builder().header("Docker-Distribution-Api-Version", "registry/2.0");
    let not_found = |code: &str| {
        hyper::Response::builder()
            .status(404)
            .header("Content-Type", "application/json")
            .body(EvilBody::plain(
                format!(r#"{{"errors":[{{"code":"{code}","message":"unknown"}}]}}"#).into(),
                head,
            ))
            .expect("static response")
    };
    if path == "/v2/" || path == "/v2" {
        return builder
            .body(EvilBody::plain(Bytes::from_static(b"{}"), head))
            .expect("static response");
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return not_found("NAME_UNKNOWN");
    };
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        let digest = content.manifest_digest();
        if repo != content.repo || (reference != content.tag && reference != digest) {
            return not_found("MANIFEST_UNKNOWN");
        }
        return builder
            .header("Content-Type", content.manifest_media_type.as_str())
            .header("Docker-Content-Digest", digest)
            .body(EvilBody::plain(Bytes::from(content.manifest.clone()), head))
            .expect("static response");
    }
    if let Some((repo, digest)) = rest.rsplit_once("/blobs/") {
        let Some((data, behavior)) = content.blobs.get(digest).filter(|_| repo == content.repo)
        else {
            return not_found("BLOB_UNKNOWN");
        };
        if !head {
            stats.blob_requests.fetch_add(1, Ordering::SeqCst);
        }
        if let BlobBehavior::BusyFirst { status, times } = behavior {
            let busy_now = !head
                && stats.busy.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < *times).then_some(n + 1)).is_ok();
            if busy_now {
                let mut b = hyper::Response::builder().status(*status).header("Content-Type", "application/json");
                if *status == 429 {
                    b = b.header("Retry-After", "1");
                }
                return b
                    .body(EvilBody::plain(Bytes::from_static(br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"busy"}]}"#), false))
                    .expect("static response");
            }
        }
        let data = match behavior {
            BlobBehavior::Corrupt => {
                let mut v = data.to_vec();
                if let Some(b) = v.last_mut() {
                    *b ^= 0xff;
                }
                Bytes::from(v)
            }
            _ => data.clone(),
        };
        return builder
            .header("Content-Type", "application/octet-stream")
            .header("Docker-Content-Digest", digest)
            .body(EvilBody {
                data,
                sent: 0,
                behavior: *behavior,
                head,
                stats: stats.clone(),
                marked: AtomicBool::new(false),
            })
            .expect("static response");
    }
    not_found("UNSUPPORTED")
}

/// Response body that can stop short on purpose. Hand-written (not a stream adapter) because
/// the stall must be a body that is never ready while the connection stays open.
pub struct EvilBody {
    data: Bytes,
    sent: usize,
    behavior: BlobBehavior,
    head: bool,
    stats: Arc<Stats>,
    marked: AtomicBool,
}

impl EvilBody {
    fn plain(data: Bytes, head: bool) -> EvilBody {
        EvilBody {
            data,
            sent: 0,
            behavior: BlobBehavior::Normal,
            head,
            stats: Arc::new(Stats::default()),
            marked: AtomicBool::new(false),
        }
    }
}

impl Body for EvilBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.head {
            return Poll::Ready(None);
        }
        let limit = match this.behavior {
            BlobBehavior::DropAfter(n) | BlobBehavior::StallAfter(n) => n.min(this.data.len()),
            _ => this.data.len(),
        };
        if this.sent < limit {
            let n = (limit - this.sent).min(64 * 1024);
            let chunk = this.data.slice(this.sent..this.sent + n);
            this.sent += n;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match this.behavior {
            BlobBehavior::DropAfter(_) => {
                if !this.marked.swap(true, Ordering::SeqCst) {
                    this.stats.dropped.fetch_add(1, Ordering::SeqCst);
                }
                Poll::Ready(Some(Err(std::io::Error::other(
                    "evil registry: dropping connection",
                ))))
            }
            BlobBehavior::StallAfter(_) => {
                if !this.marked.swap(true, Ordering::SeqCst) {
                    this.stats.stalled.fetch_add(1, Ordering::SeqCst);
                }
                // Never woken: the connection stays open with no more data.
                Poll::Pending
            }
            _ => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head
    }

    fn size_hint(&self) -> SizeHint {
        // The full length is announced even when we mean to stop short.
        SizeHint::with_exact(self.data.len() as u64)
    }
}

/// One raw tar entry; names are bytes written straight into the header, so `..` and
/// absolute paths survive (the tar crate's path setters refuse them).
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub name: Vec<u8>,
    pub kind: RawKind,
}

/// Kind and payload of a [`RawEntry`].
#[derive(Debug, Clone)]
pub enum RawKind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
}

impl RawEntry {
    pub fn file(name: &str, data: &[u8]) -> RawEntry {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind: RawKind::File(data.to_vec()),
        }
    }
    pub fn dir(name: &str) -> RawEntry {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind: RawKind::Dir,
        }
    }
    pub fn symlink(name: &str, target: &str) -> RawEntry {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind: RawKind::Symlink(target.as_bytes().to_vec()),
        }
    }
    pub fn hardlink(name: &str, target: &str) -> RawEntry {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind: RawKind::Hardlink(target.as_bytes().to_vec()),
        }
    }
}

fn gnu_long(builder: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, value: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_mtime(0);
    let mut data = value.to_vec();
    data.push(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    builder.append(&h, &data[..]).ctx(|| "tar long name".into())
}

/// Build an uncompressed tar from raw entries, using GNU long-name/long-link records for
/// names of 100 bytes or more.
pub fn raw_tar(entries: &[RawEntry]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (kind, data, link): (_, &[u8], Option<&[u8]>) = match &e.kind {
            RawKind::File(d) => (tar::EntryType::Regular, d, None),
            RawKind::Dir => (tar::EntryType::Directory, &[], None),
            RawKind::Symlink(t) => (tar::EntryType::Symlink, &[], Some(t)),
            RawKind::Hardlink(t) => (tar::EntryType::Link, &[], Some(t)),
        };
        if e.name.len() >= 100 {
            gnu_long(&mut b, tar::EntryType::GNULongName, &e.name)?;
            h.as_old_mut().name[..99].copy_from_slice(&e.name[..99]);
        } else {
            h.as_old_mut().name[..e.name.len()].copy_from_slice(&e.name);
        }
        if let Some(t) = link {
            if t.len() >= 100 {
                gnu_long(&mut b, tar::EntryType::GNULongLink, t)?;
                h.as_old_mut().linkname[..99].copy_from_slice(&t[..99]);
            } else {
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
            }
        }
        h.set_entry_type(kind);
        h.set_mode(if matches!(e.kind, RawKind::Dir) {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(crate::image::MTIME);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).ctx(|| "tar raw entry".into())?;
    }
    b.into_inner().ctx(|| "tar finish".into())
}

/// `../` repeated enough to climb from any data-root depth to `/`.
fn climb() -> String {
    "../".repeat(40)
}

/// Layer with a `../../…/<target>` file entry: tries to create the absolute path `target`.
pub fn dotdot_layer(target: &std::path::Path) -> Result<Vec<u8>> {
    let rel = target.to_string_lossy().trim_start_matches('/').to_string();
    raw_tar(&[
        RawEntry::file("ok.txt", b"ok\n"),
        RawEntry::file(&format!("{}{rel}", climb()), b"pwned by ..\n"),
    ])
}

/// Layer with an absolute-path file entry `target`.
pub fn absolute_layer(target: &std::path::Path) -> Result<Vec<u8>> {
    raw_tar(&[
        RawEntry::file("ok.txt", b"ok\n"),
        RawEntry::file(&target.to_string_lossy(), b"pwned by abs\n"),
    ])
}

/// Layer with `escape -> outside_dir` (absolute symlink), `escape2 -> ../../…/outside_dir`
/// (relative), then files written through both: `escape/pwned`, `escape2/pwned2`.
pub fn symlink_escape_layer(outside_dir: &std::path::Path) -> Result<Vec<u8>> {
    let abs = outside_dir.to_string_lossy().to_string();
    let rel = format!("{}{}", climb(), abs.trim_start_matches('/'));
    raw_tar(&[
        RawEntry::symlink("escape", &abs),
        RawEntry::file("escape/pwned", b"pwned via symlink\n"),
        RawEntry::symlink("escape2", &rel),
        RawEntry::file("escape2/pwned2", b"pwned via relative symlink\n"),
    ])
}

/// Layer with a hard link `hl` to the outside file `target`, then a regular file `hl`
/// whose content would overwrite the target if the link were followed.
pub fn hardlink_escape_layer(target: &std::path::Path) -> Result<Vec<u8>> {
    let abs = target.to_string_lossy().to_string();
    raw_tar(&[
        RawEntry::hardlink("hl", &abs),
        RawEntry::file("hl", b"pwned via hardlink\n"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;

    #[test]
    fn raw_tar_keeps_hostile_names() {
        let long = format!("{}etc/x", "../".repeat(40));
        let tar = raw_tar(&[
            RawEntry::file("../up", b"1"),
            RawEntry::file("/abs", b"2"),
            RawEntry::file(&long, b"3"),
            RawEntry::symlink("s", &"a/".repeat(60)),
        ])
        .unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let names: Vec<Vec<u8>> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path_bytes().into_owned())
            .collect();
        assert_eq!(names[0], b"../up");
        assert_eq!(names[1], b"/abs");
        assert_eq!(names[2], long.as_bytes());
        let mut a = tar::Archive::new(&tar[..]);
        let link = a
            .entries()
            .unwrap()
            .nth(3)
            .unwrap()
            .unwrap()
            .link_name_bytes()
            .unwrap()
            .into_owned();
        assert_eq!(link, "a/".repeat(60).as_bytes());
    }

    #[test]
    fn serves_manifest_and_misbehaves_per_blob() {
        crate::require_root!();
        let ns = NetNs::new().unwrap();
        let img = crate::image::web().unwrap();
        let content = EvilContent::for_image("evil", "latest", &img, false)
            .with_behavior(&img.layers[0].digest, BlobBehavior::Corrupt)
            .with_behavior(&img.layers[1].digest, BlobBehavior::DropAfter(10));
        let digest = content.manifest_digest();
        let srv = EvilRegistry::start(&ns, content).unwrap();
        let r = http::request(
            &ns,
            "GET",
            srv.addr(),
            "/v2/evil/manifests/latest",
            &[],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        assert_eq!(sha256_digest(&r.body), digest);
        let r = http::request(
            &ns,
            "GET",
            srv.addr(),
            &format!("/v2/evil/blobs/{}", img.layers[0].digest),
            &[],
            b"",
        )
        .unwrap();
        assert_eq!(r.body.len(), img.layers[0].blob.len());
        assert_ne!(sha256_digest(&r.body), img.layers[0].digest);
        let r = http::request(
            &ns,
            "GET",
            srv.addr(),
            &format!("/v2/evil/blobs/{}", img.layers[1].digest),
            &[],
            b"",
        );
        assert!(r.is_err(), "truncated body must fail: {r:?}");
        assert_eq!(srv.dropped(), 1);
        let r = http::request(
            &ns,
            "GET",
            srv.addr(),
            &format!("/v2/evil/blobs/{}", img.config_digest),
            &[],
            b"",
        )
        .unwrap();
        assert_eq!(r.body, img.config);
        let r = http::request(&ns, "GET", srv.addr(), "/v2/evil/manifests/nope", &[], b"").unwrap();
        assert_eq!(r.status, 404);
    }

    #[test]
    fn stall_keeps_connection_open_without_data() {
        use std::io::{Read, Write};
        crate::require_root!();
        let ns = NetNs::new().unwrap();
        let img = crate::image::busybox().unwrap();
        let d = img.layers[0].digest.clone();
        let srv = EvilRegistry::start(
            &ns,
            EvilContent::for_image("s", "t", &img, true)
                .with_behavior(&d, BlobBehavior::StallAfter(1000)),
        )
        .unwrap();
        let mut c = ns.connect_tcp(srv.addr()).unwrap();
        write!(c, "GET /v2/s/blobs/{d} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let err = loop {
            match c.read(&mut buf) {
                Ok(0) => panic!("server closed a stalled connection"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{err}"
        );
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
        assert!(
            head.contains(&format!("content-length: {}", img.layers[0].blob.len())),
            "{head}"
        );
        assert_eq!(got.len() - head_end, 1000);
        assert!(srv.wait_stalled(Duration::from_secs(1)));
    }
}
