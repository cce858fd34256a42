//! Runs the real `berthd` binary inside a test namespace, and the real `docker` CLI and a
//! small hyper API client against it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::netns::{command_in, NetNs};
use crate::{Error, IoContext, Result};

/// How long one `docker` CLI call may take before it is killed and reported as hung.
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// Path of the berthd binary: `$BERTHD_BIN`, else `<workspace>/target/debug/berthd`.
pub fn berthd_binary() -> PathBuf {
    match std::env::var_os("BERTHD_BIN") {
        Some(p) => PathBuf::from(p),
        None => crate::workspace_root().join("target/debug/berthd"),
    }
}

/// True when the berthd binary has been built. Tests that need it skip otherwise.
pub fn berthd_available() -> bool {
    berthd_binary().is_file()
}

/// Skip the current test (return) with a message unless root and the berthd binary exists.
#[macro_export]
macro_rules! require_berthd {
    () => {
        $crate::require_root!();
        if !$crate::berthd::berthd_available() {
            eprintln!(
                "SKIP: berthd binary not found at {} (run `cargo build -p berthd` or set BERTHD_BIN)",
                $crate::berthd::berthd_binary().display()
            );
            return;
        }
    };
}

/// Captured result of one `docker` CLI call.
#[derive(Debug, Clone)]
pub struct DockerOutput {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl DockerOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panic with the full picture unless the command succeeded; returns self for chaining.
    #[track_caller]
    pub fn assert_ok(self) -> DockerOutput {
        if !self.success() {
            panic!(
                "`docker {}` failed ({})\n--- stdout:\n{}\n--- stderr:\n{}",
                self.args.join(" "),
                self.status,
                self.stdout,
                self.stderr
            );
        }
        self
    }

    /// Panic unless the command failed; returns self so the error text can be checked.
    #[track_caller]
    pub fn assert_fail(self) -> DockerOutput {
        if self.success() {
            panic!(
                "`docker {}` unexpectedly succeeded\n--- stdout:\n{}\n--- stderr:\n{}",
                self.args.join(" "),
                self.stdout,
                self.stderr
            );
        }
        self
    }
}

/// Status and body of one Engine API call.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Bytes,
}

impl ApiResponse {
    /// Body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A running berthd with its own socket, data root and exec root under one temp dir.
/// Drop stops it (SIGTERM, then SIGKILL) and prints its log when the test is failing.
pub struct Berthd {
    ns_path: PathBuf,
    dir: tempfile::TempDir,
    insecure: Vec<String>,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    starts: usize,
    /// A size-limited tmpfs this harness mounted on the data root (unmounted on drop).
    data_mount: Option<PathBuf>,
}

impl Berthd {
    /// Start berthd in `ns`, trusting `insecure_registries` (host:port) over plain HTTP, and
    /// wait until `GET /_ping` answers.
    pub fn start(ns: &NetNs, insecure_registries: &[&str]) -> Result<Berthd> {
        Self::start_with_args(ns, insecure_registries, &[])
    }

    /// Like [`Berthd::start`], appending `extra_args` to the command line (kept on restart).
    pub fn start_with_args(
        ns: &NetNs,
        insecure_registries: &[&str],
        extra_args: &[&str],
    ) -> Result<Berthd> {
        Self::start_with_env(ns, insecure_registries, extra_args, &[])
    }

    /// Like [`Berthd::start_with_args`], with extra environment variables for berthd (e.g.
    /// `BERTH_RUNTIME`), kept on restart.
    pub fn start_with_env(
        ns: &NetNs,
        insecure_registries: &[&str],
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Berthd> {
        Self::start_inner(ns, insecure_registries, extra_args, env, None)
    }

    /// Like [`Berthd::start`], on a data root that is a tmpfs of `bytes` (a small disk, to
    /// fill up on purpose). The mount belongs to this daemon and goes when it is dropped.
    pub fn start_with_data_limit(ns: &NetNs, insecure_registries: &[&str], bytes: u64) -> Result<Berthd> {
        Self::start_inner(ns, insecure_registries, &[], &[], Some(bytes))
    }

    fn start_inner(
        ns: &NetNs,
        insecure_registries: &[&str],
        extra_args: &[&str],
        env: &[(&str, &str)],
        data_limit: Option<u64>,
    ) -> Result<Berthd> {
        let dir = tempfile::Builder::new()
            .prefix("berth-berthd-")
            .tempdir()
            .ctx(|| "tempdir".into())?;
        std::fs::create_dir(dir.path().join("docker-config"))
            .ctx(|| "mkdir docker-config".into())?;
        let mut d = Berthd {
            ns_path: ns.path(),
            dir,
            insecure: insecure_registries.iter().map(|s| s.to_string()).collect(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            child: None,
            starts: 0,
            data_mount: None,
        };
        if let Some(bytes) = data_limit {
            let root = d.data_root();
            std::fs::create_dir(&root).ctx(|| "mkdir data root".into())?;
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0711"), "berth-test-data"])
                .arg(&root)
                .output()
                .ctx(|| "mount tmpfs".into())?;
            if !out.status.success() {
                return Err(Error::Command {
                    command: "mount -t tmpfs".into(),
                    detail: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            d.data_mount = Some(root);
        }
        d.spawn()?;
        Ok(d)
    }

    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .ctx(|| "open berthd log".into())?;
        writeln!(&log, "===== berthd start #{} =====", self.starts).ctx(|| "write log".into())?;
        let mut cmd = command_in(&self.ns_path, berthd_binary());
        cmd.arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(self.data_root())
            .arg("--exec-root")
            .arg(self.exec_root())
            .arg("--pidfile")
            .arg(self.dir.path().join("berthd.pid"))
            .arg("--log-level")
            .arg("debug");
        for r in &self.insecure {
            cmd.arg("--insecure-registry").arg(r);
        }
        cmd.args(&self.extra_args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().ctx(|| "dup log".into())?)
            .stderr(log)
            .spawn()
            .ctx(|| format!("spawn {}", berthd_binary().display()))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.api("GET", "/_ping", None) {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(Error::Command {
                        command: "berthd".into(),
                        detail: format!("exited {status} before answering /_ping:\n{}", self.log()),
                    });
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!("berthd /_ping:\n{}", self.log())));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `unix://<tmp>/docker.sock`
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The daemon's temporary directory: socket, data root, exec root, log and pidfile.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn exec_root(&self) -> PathBuf {
        self.dir.path().join("exec")
    }

    /// The CLI's config dir (auths from `docker login` land here, never in ~/.docker).
    pub fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("berthd.log")
    }

    /// Everything berthd wrote to stdout/stderr so far (all starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Pid of the running daemon, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL the daemon and reap it (crash simulation).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (up to 20 s, then SIGKILL) for a clean exit; returns its status.
    pub fn sigterm(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start again on the same socket, data root and exec root (after kill9 or sigterm; a
    /// still-running daemon is SIGTERMed first).
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.sigterm();
        }
        self.spawn()
    }

    /// The `docker` CLI inside the namespace, pointed at this daemon, with an isolated config
    /// dir and no inherited DOCKER_* overrides (so API version negotiation is exercised).
    pub fn docker_command(&self) -> Command {
        let mut cmd = command_in(&self.ns_path, "docker");
        for var in [
            "DOCKER_API_VERSION",
            "DOCKER_CONTEXT",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
            "DOCKER_TLS",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.docker_config());
        cmd
    }

    /// Run `docker <args>`; never panics on a non-zero exit (see [`DockerOutput::assert_ok`]).
    pub fn docker(&self, args: &[&str]) -> DockerOutput {
        self.docker_with_stdin(args, None)
    }

    /// Run `docker <args>` and return stdout, panicking with stderr and the daemon log tail
    /// on failure.
    #[track_caller]
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        if !out.success() {
            panic!(
                "`docker {}` failed ({})\n--- stdout:\n{}\n--- stderr:\n{}\n--- berthd log tail:\n{}",
                args.join(" "),
                out.status,
                out.stdout,
                out.stderr,
                tail(&self.log(), 60)
            );
        }
        out.stdout
    }

    /// Run `docker <args>` feeding `stdin`, with [`DOCKER_TIMEOUT`].
    pub fn docker_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> DockerOutput {
        let mut cmd = self.docker_command();
        cmd.args(args);
        let (status, stdout, stderr) = run_with_timeout(cmd, stdin, DOCKER_TIMEOUT)
            .unwrap_or_else(|e| panic!("`docker {}`: {e}", args.join(" ")));
        DockerOutput {
            args: args.iter().map(|s| s.to_string()).collect(),
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Like [`Berthd::docker`] but returns raw stdout bytes (for `docker save`).
    pub fn docker_bytes(&self, args: &[&str]) -> (ExitStatus, Vec<u8>, String) {
        let mut cmd = self.docker_command();
        cmd.args(args);
        let (s, o, e) = run_with_timeout(cmd, None, DOCKER_TIMEOUT)
            .unwrap_or_else(|e| panic!("`docker {}`: {e}", args.join(" ")));
        (s, o, String::from_utf8_lossy(&e).into_owned())
    }

    /// GET an Engine API path (e.g. `/v1.47/images/json`).
    pub fn api_get(&self, path: &str) -> Result<ApiResponse> {
        self.api("GET", path, None)
    }

    /// POST to an Engine API path with an optional JSON body.
    pub fn api_post(&self, path: &str, json: Option<&serde_json::Value>) -> Result<ApiResponse> {
        let body = match json {
            Some(v) => Some(serde_json::to_vec(v)?),
            None => None,
        };
        self.api("POST", path, body)
    }

    /// Any Engine API call over the unix socket (hyper 1 client, one connection per call).
    pub fn api(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<ApiResponse> {
        api_request(&self.socket(), method, path, body)
    }
}

impl Berthd {
    /// Force-remove every container, so that their shims, mounts and cgroups (which outlive
    /// berthd by design) do not outlive the test.
    pub fn remove_all_containers(&self) {
        let Ok(list) = self.api_get("/containers/json?all=1") else { return };
        let Ok(list) = list.json() else { return };
        for c in list.as_array().into_iter().flatten() {
            if let Some(id) = c["Id"].as_str() {
                let _ = self.api("DELETE", &format!("/containers/{id}?force=1"), None);
            }
        }
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        if self.pid().is_some() {
            self.remove_all_containers();
        }
        self.sigterm();
        if let Some(m) = self.data_mount.take() {
            // Container mounts below it went with the containers; a lazy unmount covers a
            // straggler rather than leaving the tmpfs behind.
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        if std::thread::panicking() {
            eprintln!(
                "===== berthd log ({}) =====\n{}\n===== end berthd log =====",
                self.log_path().display(),
                self.log()
            );
        }
    }
}

/// One HTTP request to a unix socket with hyper 1. Blocking: builds its own small runtime, so
/// call it from plain threads (inside a tokio runtime use `spawn_blocking`).
pub fn api_request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<ApiResponse> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ctx(|| "tokio runtime".into())?;
    let socket = socket.to_path_buf();
    rt.block_on(async move {
        let stream = tokio::net::UnixStream::connect(&socket)
            .await
            .ctx(|| format!("connect {}", socket.display()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Http(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "berth");
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::Http(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
            .await
            .map_err(|_| Error::Timeout(format!("{method} {path}")))?
            .map_err(|e| Error::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Http(e.to_string()))?
            .to_bytes();
        Ok(ApiResponse { status, body })
    })
}

/// Run a command with captured output and a hard timeout (a hung CLI must fail the test,
/// not hang the suite). Returns (status, stdout, stderr).
pub fn run_with_timeout(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<(ExitStatus, Vec<u8>, Vec<u8>)> {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ctx(|| format!("spawn {:?}", cmd.get_program()))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    if let Some(data) = stdin {
        let mut w = child.stdin.take().expect("piped");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().ctx(|| "wait".into())? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Timeout(format!(
                "{:?} after {timeout:?}",
                cmd.get_program()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok((
        status,
        t_out.join().unwrap_or_default(),
        t_err.join().unwrap_or_default(),
    ))
}

/// Last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_with_timeout_captures_and_kills() {
        let mut c = Command::new("sh");
        c.args(["-c", "cat; echo err >&2; exit 3"]);
        let (status, out, err) =
            run_with_timeout(c, Some(b"hello"), Duration::from_secs(10)).unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(out, b"hello");
        assert_eq!(err, b"err\n");
        let mut c = Command::new("sleep");
        c.arg("30");
        let t = Instant::now();
        assert!(matches!(
            run_with_timeout(c, None, Duration::from_millis(200)),
            Err(Error::Timeout(_))
        ));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn api_request_speaks_http1_over_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = {
            let _g = rt.enter();
            tokio::net::UnixListener::bind(&sock).unwrap()
        };
        rt.spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        |req: hyper::Request<hyper::body::Incoming>| async move {
                            let line = format!("{} {}", req.method(), req.uri());
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let text = format!("{line} {}", String::from_utf8_lossy(&body));
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(201)
                                    .body(Full::new(Bytes::from(text)))
                                    .unwrap(),
                            )
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let r = api_request(&sock, "POST", "/v1.47/x?y=1", Some(b"{}".to_vec())).unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.text(), "POST /v1.47/x?y=1 {}");
        let r = api_request(&sock, "GET", "/_ping", None).unwrap();
        assert_eq!(r.text(), "GET /_ping ");
        assert!(api_request(&dir.path().join("nope.sock"), "GET", "/", None).is_err());
    }

    #[test]
    fn binary_path_honours_env() {
        // Only read here: the default path sits under the workspace target dir.
        if std::env::var_os("BERTHD_BIN").is_none() {
            assert!(berthd_binary().ends_with("target/debug/berthd"));
        }
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
    }
}
