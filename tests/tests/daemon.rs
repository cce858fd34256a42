//! Issue 2: the daemon and its API, beyond the image operations in images.rs. The real berthd in
//! a loopback-only namespace, driven by the real `docker` CLI and by a raw hyper client over
//! the unix socket. Expectations are Docker's.
//!
//! Every test skips with a message when not root or when the berthd binary is missing.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_tests::image::noise;
use berth_tests::berthd::{berthd_binary, run_with_timeout, tail, Berthd};
use berth_tests::evil::{EvilContent, EvilRegistry};
use berth_tests::image::{Compression, Image, Layer, LayerBuilder, RunConfig};
use berth_tests::netns::NetNs;
use berth_tests::proxy::SlowProxy;
use berth_tests::push::ManifestFormat;
use berth_tests::require_berthd;
use berth_tests::world::World;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

fn world() -> World {
    World::start()
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Where `Berthd` puts the pidfile (next to its socket; the harness does not expose the path).
fn pidfile(d: &Berthd) -> PathBuf {
    d.socket().parent().expect("socket dir").join("berthd.pid")
}

/// Unix time now as Docker's `--since`/`--until` accept it (`secs.nanos`).
fn unix_now() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}


/// Status, headers and body of one API call. The library's client keeps no headers, and the
/// `Api-Version` header is part of what is tested here, hence this local variant.
struct RawResponse {
    status: u16,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

impl RawResponse {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    }
}

fn raw_request(socket: &Path, method: &str, path: &str) -> RawResponse {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "berth")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
            .await
            .unwrap_or_else(|_| panic!("{method} {path} timed out"))
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        RawResponse {
            status,
            headers,
            body,
        }
    })
}

/// Assert an error response in Docker's shape: the status, a JSON `{"message": ...}` body, and
/// a message containing `needle` (case-insensitive). Returns the message.
#[track_caller]
fn assert_api_error(r: &RawResponse, status: u16, needle: &str, what: &str) -> String {
    assert_eq!(
        r.status,
        status,
        "{what}: body {}",
        String::from_utf8_lossy(&r.body)
    );
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.contains("application/json"),
        "{what}: content-type {ct:?}"
    );
    let msg = r.json()["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no message in {}", String::from_utf8_lossy(&r.body)))
        .to_string();
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "{what}: message {msg:?} lacks {needle:?}"
    );
    msg
}

/// A live `GET /events` follower over the unix socket. `start` returns once the response
/// headers arrived, i.e. once the daemon has subscribed, so no later event can be missed.
struct EventStream {
    rx: mpsc::Receiver<Value>,
    _thread: std::thread::JoinHandle<()>,
}

impl EventStream {
    fn start(socket: &Path, query: &str) -> EventStream {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<u16, String>>();
        let (tx, rx) = mpsc::channel();
        let socket = socket.to_path_buf();
        let path = format!("/events{query}");
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let setup = async {
                    let stream = tokio::net::UnixStream::connect(&socket)
                        .await
                        .map_err(|e| e.to_string())?;
                    let (mut sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream))
                            .await
                            .map_err(|e| e.to_string())?;
                    tokio::spawn(conn);
                    let req = hyper::Request::builder()
                        .method("GET")
                        .uri(&path)
                        .header("Host", "berth")
                        .body(Empty::<Bytes>::new())
                        .map_err(|e| e.to_string())?;
                    sender.send_request(req).await.map_err(|e| e.to_string())
                };
                let resp = match setup.await {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(resp.status().as_u16()));
                let mut body = resp.into_body();
                let mut buf = Vec::new();
                while let Some(Ok(frame)) = body.frame().await {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    buf.extend_from_slice(&data);
                    while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=i).collect();
                        if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        });
        let status = ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("GET /events answered")
            .expect("GET /events connected");
        assert_eq!(status, 200, "GET /events{query}");
        EventStream {
            rx,
            _thread: thread,
        }
    }

    /// Collect events until `done` says so or `timeout` passes.
    fn collect_until(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.rx.recv_timeout(left) {
                Ok(v) => got.push(v),
                Err(_) => break,
            }
        }
        got
    }
}

/// (Action, Actor.ID, Actor.Attributes.name) of image events, in order. Accepts both the API's
/// and the CLI's `{{json .}}` shapes (same field names).
fn image_events(events: &[Value]) -> Vec<(String, String, String)> {
    events
        .iter()
        .filter(|e| e["Type"] == "image")
        .map(|e| {
            (
                e["Action"].as_str().unwrap_or_default().to_string(),
                e["Actor"]["ID"].as_str().unwrap_or_default().to_string(),
                e["Actor"]["Attributes"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

fn parse_json_lines(s: &str) -> Vec<Value> {
    lines(s)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn socket_mode_and_second_daemon_on_same_data_root_is_refused() {
    require_berthd!();
    let w = world();
    let md = std::fs::symlink_metadata(w.d.socket()).expect("stat socket");
    assert!(md.file_type().is_socket(), "{:?}", md.file_type());
    assert_eq!(
        md.permissions().mode() & 0o777,
        0o660,
        "API socket mode {:o}",
        md.permissions().mode() & 0o7777
    );
    // Another local user (nobody) is refused: the socket is root-equivalent. The same docker
    // CLI as root is the control.
    // The daemon's directory is opened up for the check (it is 0700), so what refuses nobody
    // is the socket's own mode. A unix socket needs no network namespace.
    let sock_dir = w.d.socket().parent().unwrap().to_path_buf();
    let dir_mode = std::fs::metadata(&sock_dir).unwrap().permissions().mode();
    std::fs::set_permissions(&sock_dir, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let mut as_nobody = std::process::Command::new("docker");
    as_nobody.env("DOCKER_HOST", w.d.host()).arg("version").arg("--format").arg("{{.Server.Version}}");
    std::os::unix::process::CommandExt::uid(&mut as_nobody, 65534);
    std::os::unix::process::CommandExt::gid(&mut as_nobody, 65534);
    // The CLI's config dir must be readable by nobody; its own state does not matter here.
    let nobody_home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(nobody_home.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    as_nobody.env("DOCKER_CONFIG", nobody_home.path()).env("HOME", nobody_home.path());
    let (status, _, stderr) = run_with_timeout(as_nobody, None, Duration::from_secs(30)).unwrap();
    std::fs::set_permissions(&sock_dir, std::os::unix::fs::PermissionsExt::from_mode(dir_mode)).unwrap();
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(!status.success(), "a non-root user reached the API socket");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(!w.d.docker_ok(&["version", "--format", "{{.Server.Version}}"]).trim().is_empty(), "root is served");

    // A second daemon on the same data root, with its own socket, exec root and pidfile.
    let other = tempfile::tempdir().unwrap();
    let sock2 = other.path().join("second.sock");
    let mut cmd = w.fx.ns.command(berthd_binary());
    cmd.arg("--host")
        .arg(format!("unix://{}", sock2.display()))
        .arg("--data-root")
        .arg(w.d.data_root())
        .arg("--exec-root")
        .arg(other.path().join("exec"))
        .arg("--pidfile")
        .arg(other.path().join("second.pid"));
    let t = Instant::now();
    let (status, stdout, stderr) = run_with_timeout(cmd, None, Duration::from_secs(20))
        .expect("second berthd must exit by itself, not keep running");
    let elapsed = t.elapsed();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    assert!(!status.success(), "second berthd exited {status}:\n{out}");
    assert!(
        elapsed < Duration::from_secs(5),
        "second berthd took {elapsed:?} to give up"
    );
    assert!(out.contains("already running"), "unclear message:\n{out}");
    assert!(
        out.contains(&w.d.data_root().display().to_string()),
        "message should name the data root {}:\n{out}",
        w.d.data_root().display()
    );
    assert!(!sock2.exists(), "the refused daemon left a socket");
    assert!(
        !other.path().join("second.pid").exists(),
        "the refused daemon wrote a pidfile"
    );

    // The first daemon is unharmed: its socket, pidfile and API all still work.
    assert!(w.d.socket().exists());
    let pid = std::fs::read_to_string(pidfile(&w.d)).expect("first pidfile kept");
    assert_eq!(pid.trim(), w.d.pid().unwrap().to_string());
    assert_eq!(w.d.api_get("/_ping").unwrap().text(), "OK");
    w.d.docker_ok(&["pull", &w.fx.reference("busybox:latest")]);
    assert_eq!(lines(&w.d.docker_ok(&["images", "-q"])).len(), 1);
}

#[test]
fn sigterm_exits_cleanly_and_removes_socket_and_pidfile() {
    require_berthd!();
    let ns = NetNs::new().unwrap();
    let mut d = Berthd::start(&ns, &[]).expect("start berthd");
    let pid = std::fs::read_to_string(pidfile(&d)).expect("pidfile written");
    assert_eq!(pid.trim(), d.pid().unwrap().to_string(), "pidfile content");
    assert!(d.socket().exists());

    let t = Instant::now();
    let status = d.sigterm().expect("was running");
    let elapsed = t.elapsed();
    assert_eq!(status.code(), Some(0), "exit status {status}\n{}", d.log());
    assert!(elapsed < Duration::from_secs(3), "SIGTERM took {elapsed:?}");
    assert!(!d.socket().exists(), "socket left behind");
    assert!(!pidfile(&d).exists(), "pidfile left behind");
    assert!(d.api_get("/_ping").is_err(), "nothing may answer any more");

    // With a never-ending `/events` stream open, shutdown still completes promptly.
    d.restart().expect("restart");
    let ev = EventStream::start(&d.socket(), "");
    let t = Instant::now();
    let status = d.sigterm().expect("was running");
    let elapsed = t.elapsed();
    eprintln!("SIGTERM with an open events stream: exit after {elapsed:?}");
    assert_eq!(status.code(), Some(0), "exit status {status}\n{}", d.log());
    assert!(
        elapsed < Duration::from_secs(10),
        "SIGTERM with an open events stream took {elapsed:?}"
    );
    assert!(!d.socket().exists(), "socket left behind");
    assert!(!pidfile(&d).exists(), "pidfile left behind");
    drop(ev);
}

#[test]
fn api_version_negotiation_and_unknown_paths() {
    require_berthd!();
    let ns = NetNs::new().unwrap();
    let d = Berthd::start(&ns, &[]).expect("start berthd");
    let sock = d.socket();

    let ping = raw_request(&sock, "GET", "/_ping");
    assert_eq!(ping.status, 200);
    assert_eq!(String::from_utf8_lossy(&ping.body), "OK");
    let api_version = ping.header("api-version").expect("Api-Version header");
    let (major, minor) = api_version
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .unwrap_or_else(|| panic!("Api-Version {api_version:?}"));
    assert_eq!(major, 1);
    // docker CLI 28 negotiates down to the server's version; 1.47 is what these tests use.
    assert!(minor >= 47, "Api-Version {api_version}");
    let head = raw_request(&sock, "HEAD", "/_ping");
    assert_eq!(head.status, 200);
    assert!(head.header("api-version").is_some());

    let mut seen = Vec::new();
    for path in ["/v1.41/version", "/v1.47/version", "/version"] {
        let r = raw_request(&sock, "GET", path);
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        assert_eq!(
            v["ApiVersion"].as_str(),
            Some(api_version.as_str()),
            "{path}"
        );
        assert_eq!(v["Os"], "linux", "{path}");
        let min = v["MinAPIVersion"].as_str().unwrap_or_default();
        assert!(min.starts_with("1."), "{path}: MinAPIVersion {min:?}");
        assert!(v["Version"].as_str().is_some_and(|s| !s.is_empty()));
        seen.push(v);
    }
    assert_eq!(seen[0], seen[2], "prefix must not change /version");

    let r = raw_request(&sock, "GET", "/v1.99/version");
    let msg = assert_api_error(&r, 400, "too new", "/v1.99/version");
    assert!(msg.contains(&api_version), "should name the maximum: {msg}");
    // The CLI pinned to a too-new version fails with the server's message.
    let mut cmd = d.docker_command();
    cmd.env("DOCKER_API_VERSION", "1.99").args(["version"]);
    let (status, _, stderr) = run_with_timeout(cmd, None, Duration::from_secs(30)).unwrap();
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(!status.success());
    assert!(stderr.contains("too new"), "{stderr}");

    let r = raw_request(&sock, "GET", "/v1.47/no/such/endpoint");
    assert_api_error(&r, 404, "page not found", "unknown path");
    let r = raw_request(&sock, "GET", "/nonsense");
    assert_api_error(&r, 404, "", "unknown unversioned path");
    // Plain requests still work afterwards.
    assert_eq!(raw_request(&sock, "GET", "/_ping").status, 200);
}

#[test]
fn errors_map_to_docker_statuses() {
    require_berthd!();
    let w = world();
    let sock = w.d.socket();

    let r = raw_request(&sock, "GET", "/v1.47/images/nope:1/json");
    assert_api_error(&r, 404, "No such image", "inspect missing image");
    let out = w.d.docker(&["image", "inspect", "nope:1"]).assert_fail();
    assert!(
        out.stderr.to_lowercase().contains("no such image"),
        "{}",
        out.stderr
    );

    let r = raw_request(
        &sock,
        "POST",
        "/v1.47/images/create?fromImage=UPPER%2FCase&tag=latest",
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        String::from_utf8_lossy(&r.body)
    );

    let reference = w.fx.reference("busybox:latest");
    let id = w.fx.pushed("busybox:latest").config_digest.clone();
    w.d.docker_ok(&["pull", &reference]);
    for bad in ["Bad%20Repo", "UPPER", "a%2F..%2Fb", "x%3A%3Ay"] {
        let r = raw_request(
            &sock,
            "POST",
            &format!("/v1.47/images/{id}/tag?repo={bad}&tag=v1"),
        );
        assert_eq!(
            r.status,
            400,
            "tag repo={bad}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.json()["message"].is_string());
    }
    let r = raw_request(
        &sock,
        "POST",
        &format!("/v1.47/images/{id}/tag?repo=good&tag=bad%20tag"),
    );
    assert_eq!(
        r.status,
        400,
        "bad tag: {}",
        String::from_utf8_lossy(&r.body)
    );
    // Nothing was tagged by the refused calls.
    let tags =
        w.d.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(lines(&tags), vec![reference.clone()], "{tags}");

    // Two tags on one ID: removing by ID needs force.
    let second = format!("{}/second:v1", w.fx.registry.addr());
    w.d.docker_ok(&["tag", &reference, &second]);
    let short = &id["sha256:".len().."sha256:".len() + 12];
    let out = w.d.docker(&["rmi", short]).assert_fail();
    let e = out.stderr.to_lowercase();
    assert!(
        e.contains("conflict") && e.contains("must be forced"),
        "{}",
        out.stderr
    );
    let r = raw_request(&sock, "DELETE", &format!("/v1.47/images/{short}"));
    assert_api_error(&r, 409, "must be forced", "DELETE with two tags");
    let r = raw_request(&sock, "DELETE", &format!("/v1.47/images/{id}"));
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        lines(&w.d.docker_ok(&["images", "-q"])).len(),
        2,
        "both tags kept"
    );

    let out = w.d.docker_ok(&["rmi", "-f", short]);
    assert!(out.contains(&format!("Untagged: {reference}")), "{out}");
    assert!(out.contains(&format!("Untagged: {second}")), "{out}");
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    assert!(lines(&w.d.docker_ok(&["images", "-q"])).is_empty());
    let r = raw_request(&sock, "DELETE", &format!("/v1.47/images/{id}"));
    assert_api_error(&r, 404, "No such image", "DELETE after removal");
}

#[test]
fn events_stream_replay_and_filter() {
    require_berthd!();
    let w = world();
    let t0 = unix_now();
    // Live follower: subscribed before anything happens.
    let live = EventStream::start(&w.d.socket(), "");
    // And one that filters on the server side (filters={"event":["untag"]}).
    let untags = EventStream::start(
        &w.d.socket(),
        "?filters=%7B%22event%22%3A%5B%22untag%22%5D%7D",
    );

    let reference = w.fx.reference("busybox:latest");
    let id = w.fx.pushed("busybox:latest").config_digest.clone();
    let extra = format!("{}/evtag:v1", w.fx.registry.addr());
    w.d.docker_ok(&["pull", &reference]);
    w.d.docker_ok(&["tag", &reference, &extra]);
    w.d.docker_ok(&["rmi", &extra]);
    w.d.docker_ok(&["rmi", &reference]);

    let got = live.collect_until(Duration::from_secs(15), |evs| {
        evs.iter().any(|e| e["Action"] == "delete")
    });
    let evs = image_events(&got);
    let actions: Vec<&str> = evs.iter().map(|(a, _, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        vec!["pull", "tag", "untag", "untag", "delete"],
        "live events: {got:?}"
    );
    // Docker: pull's actor is the reference; tag/untag/delete name the image ID.
    assert_eq!(evs[0].1, reference, "pull actor");
    assert_eq!(evs[1], ("tag".into(), id.clone(), extra.clone()), "tag");
    assert_eq!(evs[2], ("untag".into(), id.clone(), extra.clone()), "untag");
    assert_eq!(evs[3].1, id, "second untag");
    assert_eq!(evs[4].1, id, "delete");
    for e in &got {
        assert_eq!(e["scope"], "local", "{e}");
        assert!(e["timeNano"].as_i64().unwrap_or(0) > 0, "{e}");
    }
    drop(live);
    let only_untag = untags.collect_until(Duration::from_secs(5), |evs| evs.len() >= 2);
    assert_eq!(
        image_events(&only_untag),
        vec![
            ("untag".to_string(), id.clone(), extra.clone()),
            ("untag".to_string(), id.clone(), reference.clone()),
        ],
        "server-side filter: {only_untag:?}"
    );
    // Nothing else arrives on the filtered stream.
    assert!(untags
        .collect_until(Duration::from_millis(300), |e| !e.is_empty())
        .is_empty());
    drop(untags);

    // Replay through the CLI: --since/--until returns the same events and then exits.
    let until = unix_now();
    let out = w.d.docker_ok(&[
        "events",
        "--since",
        &t0,
        "--until",
        &until,
        "--format",
        "{{json .}}",
    ]);
    let replay = parse_json_lines(&out);
    assert_eq!(image_events(&replay), evs, "replay:\n{out}");

    let out = w.d.docker_ok(&[
        "events",
        "--since",
        &t0,
        "--until",
        &until,
        "--filter",
        "event=tag",
        "--format",
        "{{json .}}",
    ]);
    let tags = parse_json_lines(&out);
    assert_eq!(
        image_events(&tags),
        vec![("tag".to_string(), id.clone(), extra.clone())],
        "filter event=tag:\n{out}"
    );
    // A window before everything happened is empty.
    let out = w.d.docker_ok(&["events", "--since", "1", "--until", "2"]);
    assert!(out.trim().is_empty(), "{out}");

    // The CLI follows live too: start it, then tag (Docker's text format this time).
    let mut cmd = w.d.docker_command();
    cmd.args(["events", "--filter", "type=image", "--since", &until])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    w.d.docker_ok(&["pull", &reference]);
    w.d.docker_ok(&["tag", &reference, &extra]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !seen.iter().any(|l: &String| l.contains(" image tag ")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => break,
        }
    }
    kill_child(&mut child);
    assert!(
        seen.iter()
            .any(|l| l.contains(" image pull ") && l.contains(&reference)),
        "CLI follower: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.contains(" image tag ") && l.contains(&extra)),
        "CLI follower: {seen:?}"
    );
}

fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn concurrent_pulls_of_one_image_fetch_each_blob_once() {
    require_berthd!();
    let ns = NetNs::new().unwrap();
    // Two layers of ~3 MB of noise each plus the config: three blobs.
    let layers: Vec<Layer> = (0..2)
        .map(|i| {
            let mut b = LayerBuilder::new();
            b.file(&format!("big{i}.bin"), 0o644, &noise(3 << 20, 40 + i))
                .unwrap();
            b.finish(Compression::Gzip, &format!("ADD big{i}.bin /"))
                .unwrap()
        })
        .collect();
    let img = Image::new(layers, &RunConfig::cmd(&["sh"]), "amd64").unwrap();
    let blobs = img.layers.len() + 1;
    let srv =
        EvilRegistry::start(&ns, EvilContent::for_image("big", "latest", &img, false)).unwrap();
    // 32 KiB every 10 ms: ~3 MB/s, so each layer takes about a second.
    let proxy = SlowProxy::start(&ns, srv.addr(), 32 * 1024, Duration::from_millis(10));
    let d = Berthd::start(&ns, &[&proxy.addr]).expect("start berthd");
    let reference = format!("{}/big:latest", proxy.addr);

    let t = Instant::now();
    let pulls: Vec<_> = (0..2)
        .map(|_| {
            let mut cmd = d.docker_command();
            cmd.args(["pull", &reference]);
            std::thread::spawn(move || {
                let r = run_with_timeout(cmd, None, Duration::from_secs(120));
                (r, Instant::now())
            })
        })
        .collect();
    let results: Vec<_> = pulls.into_iter().map(|h| h.join().unwrap()).collect();
    let total = t.elapsed();
    for (r, _) in &results {
        let (status, stdout, stderr) = r.as_ref().expect("pull finished");
        let stdout = String::from_utf8_lossy(stdout);
        assert!(
            status.success(),
            "pull failed: {}\n{stdout}\n--- berthd log:\n{}",
            String::from_utf8_lossy(stderr),
            tail(&d.log(), 60)
        );
        assert!(stdout.contains(&sha_of_manifest(&img)), "{stdout}");
    }
    // The pulls really overlapped: both ended after the transfer, which took a while.
    assert!(
        total > Duration::from_millis(1500),
        "pull took only {total:?}: the throttle did not work, overlap is not proven"
    );
    let (end_a, end_b) = (results[0].1, results[1].1);
    let gap = if end_a > end_b {
        end_a - end_b
    } else {
        end_b - end_a
    };
    eprintln!("two pulls: {total:?} in all, ended {gap:?} apart");
    assert!(
        gap < total / 2,
        "the pulls did not run together (ended {gap:?} apart of {total:?})"
    );
    assert_eq!(
        srv.blob_requests(),
        blobs,
        "each of the {blobs} blobs must be fetched exactly once\n{}",
        tail(&d.log(), 60)
    );
    let id = d.docker_ok(&["image", "inspect", "--format", "{{.Id}}", &reference]);
    assert_eq!(id.trim(), img.config_digest);
    assert_eq!(lines(&d.docker_ok(&["images", "-q"])).len(), 1);
    // Control: the counter sees real fetches. After rmi (which collects the now unused
    // blobs) a third pull downloads every blob again.
    d.docker_ok(&["rmi", &reference]);
    d.docker_ok(&["pull", &reference]);
    eprintln!("blob GETs after rmi + pull: {}", srv.blob_requests());
    assert_eq!(
        srv.blob_requests(),
        2 * blobs,
        "a fresh pull fetches every blob"
    );
    drop(d);
    drop(proxy);
}

fn sha_of_manifest(img: &Image) -> String {
    EvilContent::for_image("big", "latest", img, false).manifest_digest()
}

#[test]
fn system_df_and_prune_of_a_dangling_image() {
    require_berthd!();
    let w = world();
    let reference = format!("{}/moving:t", w.fx.registry.addr());
    let target = w.fx.plain_target();
    let busybox = w.fx.image("busybox").clone();
    let web = w.fx.image("web").clone();
    target
        .push_image("moving", "t", &busybox, ManifestFormat::DockerSchema2)
        .unwrap();
    w.d.docker_ok(&["pull", &reference]);
    w.d.docker_ok(&["pull", &w.fx.reference("layered:latest")]);
    // The tag moves to another image: the first one loses its only tag.
    target
        .push_image("moving", "t", &web, ManifestFormat::DockerSchema2)
        .unwrap();
    let out = w.d.docker_ok(&["pull", &reference]);
    assert!(out.contains("Downloaded newer image"), "{out}");

    let dangling =
        w.d.docker_ok(&["images", "-q", "--no-trunc", "--filter", "dangling=true"]);
    assert_eq!(lines(&dangling), vec![busybox.config_digest.clone()]);
    let all = w.d.docker_ok(&["images", "-q", "--no-trunc"]);
    assert_eq!(lines(&all).len(), 3, "{all}");

    // docker system df: an Images row counting all three, none active.
    let df = w.d.docker_ok(&["system", "df", "--format", "{{json .}}"]);
    let rows = parse_json_lines(&df);
    let images = rows
        .iter()
        .find(|r| r["Type"] == "Images")
        .unwrap_or_else(|| panic!("no Images row:\n{df}"));
    assert_eq!(images["TotalCount"], "3", "{df}");
    assert_eq!(images["Active"], "0", "{df}");
    let size = images["Size"].as_str().unwrap_or_default();
    assert!(
        size.ends_with("MB"),
        "busybox, web and layered are a few MB: {size}"
    );
    let verbose = w.d.docker_ok(&["system", "df", "-v"]);
    assert!(
        verbose.contains(&format!("{}/moving", w.fx.registry.addr())),
        "{verbose}"
    );
    assert!(
        verbose.contains(&format!("{}/layered", w.fx.registry.addr())),
        "{verbose}"
    );
    assert!(verbose.contains(&busybox.short_id()[..12]), "{verbose}");
    let api = w.d.api_get("/v1.47/system/df").unwrap();
    assert_eq!(api.status, 200);
    let v = api.json().unwrap();
    assert_eq!(v["Images"].as_array().map(|a| a.len()), Some(3), "{v}");
    assert!(v["LayersSize"].as_i64().unwrap_or(0) > 1_000_000, "{v}");

    // Prune removes exactly the dangling image.
    let out = w.d.docker_ok(&["image", "prune", "-f"]);
    assert!(
        out.contains(&format!("deleted: {}", busybox.config_digest)),
        "prune output:\n{out}"
    );
    assert!(out.contains("Total reclaimed space"), "{out}");
    let dangling =
        w.d.docker_ok(&["images", "-q", "--filter", "dangling=true"]);
    assert!(lines(&dangling).is_empty(), "{dangling}");
    let left = w.d.docker_ok(&["images", "-q", "--no-trunc"]);
    let mut left = lines(&left);
    left.sort();
    let mut want = vec![
        web.config_digest.clone(),
        w.fx.pushed("layered:latest").config_digest.clone(),
    ];
    want.sort();
    assert_eq!(left, want);
    assert_eq!(
        w.d.docker_ok(&["image", "inspect", "--format", "{{.Id}}", &reference])
            .trim(),
        web.config_digest
    );
    // Pruning again finds nothing.
    let out = w.d.docker_ok(&["image", "prune", "-f"]);
    assert!(!out.contains("deleted:"), "{out}");
    let df = w.d.docker_ok(&["system", "df", "--format", "{{json .}}"]);
    let rows = parse_json_lines(&df);
    let images = rows.iter().find(|r| r["Type"] == "Images").unwrap();
    assert_eq!(images["TotalCount"], "2", "{df}");
}

#[test]
fn invalid_reference_is_refused_and_daemon_keeps_serving() {
    require_berthd!();
    let w = world();
    // Only names that cannot parse: note `UPPER/x` would be valid (an uppercase first
    // component is a registry host in Docker's grammar) and would send berthd to resolve it.
    for bad in ["a/../b", "upper/Case", "busybox::x", "a//b", "a/b:"] {
        let out = w.d.docker(&["pull", bad]).assert_fail();
        eprintln!("docker pull {bad:?}: {}", out.stderr.trim());
        let e = out.stderr.to_lowercase();
        assert!(
            e.contains("invalid reference format") || e.contains("invalid"),
            "pull {bad:?}: {}",
            out.stderr
        );
    }
    // The same through the API (the CLI may refuse before asking): a 400, not a crash.
    let r = raw_request(
        &w.d.socket(),
        "POST",
        "/v1.47/images/create?fromImage=a%2F..%2Fb&tag=latest",
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["message"].as_str().is_some_and(|m| !m.is_empty()));
    let r = raw_request(
        &w.d.socket(),
        "POST",
        &format!(
            "/v1.47/images/create?fromImage={}%2F..%2Fbusybox&tag=latest",
            w.fx.registry.addr()
        ),
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));

    assert_eq!(w.d.api_get("/_ping").unwrap().text(), "OK");
    w.d.docker_ok(&["pull", &w.fx.reference("busybox:latest")]);
    assert_eq!(lines(&w.d.docker_ok(&["images", "-q"])).len(), 1);
    assert!(!w.d.log().contains("panicked"), "{}", w.d.log());
}

/// Checklist #11: compressed uploads and layers are decoded in process, never by an external
/// program (GHSA-x86f-5xw2-fm2r: a container-provided `unpigz` run by the daemon). berthd runs
/// with a PATH whose decompressors and tar are traps that record being run; a gzip pull, a
/// gzipped `docker load`, `docker import` and a compressed build context all work, and no
/// trap fires.
#[test]
fn compressed_inputs_never_run_an_external_decompressor() {
    require_berthd!();
    let fx = berth_tests::fixtures::Fixtures::start().unwrap();
    let traps = tempfile::tempdir().unwrap();
    let marker = traps.path().join("ran");
    for tool in ["gzip", "gunzip", "zcat", "pigz", "unpigz", "xz", "unxz", "zstd", "unzstd", "bzip2", "bunzip2", "tar", "bsdtar"] {
        let p = traps.path().join(tool);
        std::fs::write(&p, format!("#!/bin/sh\necho \"{tool} $*\" >> {}\nexit 1\n", marker.display())).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", traps.path().display(), std::env::var("PATH").unwrap_or_default());
    let d = Berthd::start_with_env(&fx.ns, &[fx.registry.addr()], &[], &[("PATH", &path)]).unwrap();
    // The traps are live for anything that looks them up on this PATH.
    let probe = std::process::Command::new("sh").arg("-c").arg("gzip -d").env("PATH", &path).status().unwrap();
    assert!(!probe.success() && marker.exists(), "the trap records a run");
    std::fs::remove_file(&marker).unwrap();

    let img = fx.reference("busybox:latest");
    d.docker_ok(&["pull", "-q", &img]);
    let work = tempfile::tempdir().unwrap();
    let saved = work.path().join("saved.tar");
    d.docker_ok(&["save", "-o", saved.to_str().unwrap(), &img]);
    let gz = work.path().join("saved.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    std::io::copy(&mut std::fs::File::open(&saved).unwrap(), &mut enc).unwrap();
    enc.finish().unwrap();
    d.docker_ok(&["rmi", &img]);
    let out = d.docker_ok(&["load", "-i", gz.to_str().unwrap()]);
    assert!(out.contains("Loaded image"), "{out}");
    d.docker_ok(&["import", gz.to_str().unwrap(), "imported:gz"]);
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {img}\nCOPY f /f\n")).unwrap();
    std::fs::write(ctx.join("f"), "x").unwrap();
    d.docker_ok(&["build", "--compress", "-q", "-t", "built:gz", ctx.to_str().unwrap()]);
    assert!(!marker.exists(), "berthd ran an external program: {}", std::fs::read_to_string(&marker).unwrap_or_default());
    drop(d);
}
