//! Container endpoints. `store` keeps the records; the runtime side (bundle, monitor process,
//! runc) is driven from `lifecycle`.

pub mod archive;
pub mod cpview;
pub mod exec;
pub mod health;
pub mod lifecycle;
pub mod logopts;
pub mod mounts;
pub mod stats;
pub mod store;
pub mod update;

use std::collections::HashMap;
use std::sync::Arc;

use bollard_stubs::models::{
    ContainerConfig, ContainerCreateResponse, ContainerInspectResponse, ContainerState, ContainerStateStatusEnum,
    ContainerSummary, DriverData, HostConfig,
};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::Value;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::http_util::{json, label_matches, ok_json, status_only, Body, Query};
use store::{valid_name, Container, State, Status};

const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;

/// Splice a hijacked client connection to a shim stream (attach or exec) until the stream's
/// output ends. Client bytes go to the stream and the client's EOF half-closes it (stdin EOF);
/// the client's own write side is left open, so the caller can record state (an exec's exit
/// code) before the client sees the end. With `detach` keys, the client typing them ends the
/// session at once (Docker's ctrl-p ctrl-q): the keys are not passed on, and nothing is
/// half-closed, so the process keeps its stdin. Returns true when the session was detached.
///
/// With `frame_output`, the stream's raw bytes (a TTY's) go to the client as stdout frames of
/// Docker's multiplexed format, for an exec started without Tty (see exec::start).
pub(crate) async fn splice<C, R>(client: &mut C, remote: &mut R, detach: Option<&[u8]>, frame_output: bool) -> bool
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    R: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut rr, mut rw) = tokio::io::split(remote);
    let to_remote = async {
        let mut buf = vec![0u8; 32 * 1024];
        let mut keys = detach.filter(|k| !k.is_empty()).map(DetachMatcher::new);
        let mut out = Vec::new();
        loop {
            match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let data = match keys.as_mut() {
                        Some(k) => {
                            out.clear();
                            if k.feed(&buf[..n], &mut out) {
                                let _ = rw.write_all(&out).await;
                                return true;
                            }
                            &out[..]
                        }
                        None => &buf[..n],
                    };
                    if rw.write_all(data).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = rw.shutdown().await;
        false
    };
    let to_client = async {
        if !frame_output {
            let _ = tokio::io::copy(&mut rr, &mut cw).await;
            return;
        }
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if cw.write_all(&berth_shim::frame(1, &buf[..n])).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = cw.flush().await;
    };
    // Output ending ends the session; input ending only half-closes; detaching ends it.
    tokio::pin!(to_remote);
    tokio::select! {
        _ = to_client => false,
        true = &mut to_remote => true,
    }
}

/// Docker's detach keys: a comma-separated list of single characters and `ctrl-<c>` (c in
/// `a-z @ [ \ ] ^ _`), e.g. the default `ctrl-p,ctrl-q`. Empty means the default.
pub(crate) fn parse_detach_keys(s: &str) -> Result<Vec<u8>, ApiError> {
    let s = if s.is_empty() { "ctrl-p,ctrl-q" } else { s };
    let bad = || ApiError::bad(format!("Invalid detach keys ({s}) provided"));
    let mut out = Vec::new();
    for key in s.split(',') {
        let b = key.as_bytes();
        match b {
            [c] => out.push(*c),
            _ => {
                let rest = key.strip_prefix("ctrl-").ok_or_else(bad)?.as_bytes();
                match rest {
                    [c @ b'a'..=b'z'] => out.push(c - b'a' + 1),
                    [c @ (b'@' | b'[' | b'\\' | b']' | b'^' | b'_')] => out.push(c - b'@'),
                    _ => return Err(bad()),
                }
            }
        }
    }
    Ok(out)
}

/// Finds the detach sequence in a client's input. Bytes that may start it are held back until
/// the sequence completes (detach) or breaks (they are passed on, as typed).
struct DetachMatcher<'a> {
    keys: &'a [u8],
    held: usize,
}

impl<'a> DetachMatcher<'a> {
    fn new(keys: &'a [u8]) -> Self {
        DetachMatcher { keys, held: 0 }
    }

    /// Append to `out` what may be passed on; true when the sequence is complete.
    fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in data {
            if b == self.keys[self.held] {
                self.held += 1;
                if self.held == self.keys.len() {
                    return true;
                }
                continue;
            }
            out.extend_from_slice(&self.keys[..self.held]);
            self.held = 0;
            if b == self.keys[0] {
                self.held = 1;
                if self.keys.len() == 1 {
                    return true;
                }
            } else {
                out.push(b);
            }
        }
        false
    }
}

/// How long the first bytes of a hijacked stream wait after the 101 for a client that needs it.
const HIJACK_SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// docker-py (and so docker-compose 1.x) reads a hijacked attach/exec stream from the raw
/// socket, behind its HTTP library's buffered reader (docker-py#3332): bytes that arrive in the
/// same read as the 101 headers sit in that buffer and are lost, so a fast `exec_run` returned
/// b"" or a cut stream. Docker is slow enough between the two never to show it; berthd often
/// has the output ready at once. For that client only, the stream starts a moment after the 101
/// (the docker CLI and bollard read through their buffers and get no delay).
pub(crate) fn hijack_settle(req: &Request<Incoming>) -> Option<std::time::Duration> {
    let ua = req.headers().get(http::header::USER_AGENT)?.to_str().ok()?;
    (ua.starts_with("docker-sdk-python/") || ua.contains(" docker-py/")).then_some(HIJACK_SETTLE)
}

/// Once the client's connection is upgraded (and after the settle pause), write `bytes` and
/// close it: a hijacked answer that is whole at once (a replay, a start failure).
pub(crate) fn send_upgraded_then_close(on_upgrade: hyper::upgrade::OnUpgrade, settle: Option<std::time::Duration>, bytes: Vec<u8>) {
    use tokio::io::AsyncWriteExt;
    tokio::spawn(async move {
        let Ok(u) = on_upgrade.await else { return };
        if let Some(d) = settle {
            tokio::time::sleep(d).await;
        }
        let mut client = hyper_util::rt::TokioIo::new(u);
        let _ = client.write_all(&bytes).await;
        let _ = client.shutdown().await;
    });
}

/// The 101 answer to a hijacking attach/exec request, with Docker's stream content type.
pub(crate) fn upgraded_response(tty: bool) -> Response<Body> {
    let ct = if tty { "application/vnd.docker.raw-stream" } else { "application/vnd.docker.multiplexed-stream" };
    let mut r = Response::new(crate::http_util::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(http::header::CONNECTION, http::HeaderValue::from_static("Upgrade"));
    h.insert(http::header::UPGRADE, http::HeaderValue::from_static("tcp"));
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
    r
}

/// The body of POST /containers/create: Config fields at the top level plus HostConfig.
#[derive(Debug, Default, Deserialize)]
pub struct CreateBody {
    #[serde(flatten)]
    pub config: ContainerConfig,
    #[serde(rename = "HostConfig", default)]
    pub host_config: Option<HostConfig>,
    #[serde(rename = "NetworkingConfig", default)]
    pub networking_config: Option<Value>,
}

/// Fill the request's gaps with the image's config, the way Docker does: environment merged by
/// key, an explicit Entrypoint drops the image's Cmd, working dir and user fall back to the image.
pub fn merge_image_config(req: &ContainerConfig, image: &Value) -> ContainerConfig {
    let img: ContainerConfig = serde_json::from_value(image.clone()).unwrap_or_default();
    let mut c = req.clone();
    let mut env: Vec<String> = img.env.clone().unwrap_or_default();
    for kv in req.env.clone().unwrap_or_default() {
        let key = kv.split('=').next().unwrap_or("").to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    }
    c.env = Some(env);
    let entry_overridden = req.entrypoint.is_some();
    if !entry_overridden {
        c.entrypoint = img.entrypoint.clone();
    }
    if req.cmd.is_none() && !entry_overridden {
        c.cmd = img.cmd.clone();
    }
    if c.working_dir.as_deref().unwrap_or("").is_empty() {
        c.working_dir = img.working_dir.clone().filter(|w| !w.is_empty());
    }
    if c.user.as_deref().unwrap_or("").is_empty() {
        c.user = img.user.clone();
    }
    let mut labels = img.labels.clone().unwrap_or_default();
    labels.extend(req.labels.clone().unwrap_or_default());
    c.labels = Some(labels);
    if c.stop_signal.is_none() {
        c.stop_signal = img.stop_signal.clone();
    }
    if c.healthcheck.is_none() {
        c.healthcheck = img.healthcheck.clone();
    }
    let mut ports = img.exposed_ports.clone().unwrap_or_default();
    ports.extend(req.exposed_ports.clone().unwrap_or_default());
    c.exposed_ports = Some(ports);
    let mut vols = img.volumes.clone().unwrap_or_default();
    vols.extend(req.volumes.clone().unwrap_or_default());
    c.volumes = Some(vols);
    c
}

fn random_id() -> Result<String, ApiError> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).map_err(ApiError::internal)?;
    Ok(hex::encode(b))
}

/// A readable random name, like Docker's "adjective_surname"; `attempt` > 0 adds a number, as
/// Docker does when the plain name is taken.
fn generated_name(id: &str, attempt: u32) -> String {
    const ADJ: &[&str] = &[
        "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry", "nifty", "proud",
        "quiet", "sharp", "tender", "vivid", "wise", "zen", "bold", "crisp",
    ];
    const NOUN: &[&str] = &[
        "anchor", "beacon", "buoy", "cove", "dock", "ferry", "harbor", "jetty", "keel", "lagoon", "mast", "pier",
        "quay", "reef", "sail", "tide", "wharf", "mooring", "bollard", "hull",
    ];
    let n = u64::from_str_radix(&id[..12], 16).unwrap_or(0);
    let base = format!("{}_{}", ADJ[(n % ADJ.len() as u64) as usize], NOUN[((n / 97) % NOUN.len() as u64) as usize]);
    if attempt == 0 {
        base
    } else {
        format!("{base}{}", (n >> 20) % 10 + u64::from(attempt) * 10)
    }
}

/// POST /containers/create
pub async fn create(e: &Arc<Engine>, req: Request<Incoming>, q: &Query) -> Result<Response<Body>, ApiError> {
    let body: CreateBody = crate::images::read_json(req, 4 * 1024 * 1024).await?;
    let id = create_container(e, body, q.get("name")).await?;
    Ok(json(StatusCode::CREATED, &ContainerCreateResponse { id, warnings: vec![] }))
}

/// Create a container record (what POST /containers/create does; also the builder's RUN
/// steps). Returns the new ID.
pub async fn create_container(e: &Arc<Engine>, body: CreateBody, name: Option<&str>) -> Result<String, ApiError> {
    let image_name = body.config.image.clone().filter(|i| !i.is_empty()).ok_or_else(|| ApiError::bad("config.Image is required"))?;
    let name = match name.filter(|n| !n.is_empty()) {
        Some(n) => {
            let n = n.strip_prefix('/').unwrap_or(n);
            if !valid_name(n) {
                return Err(ApiError::bad(format!("Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")));
            }
            Some(n.to_string())
        }
        None => None,
    };
    let image_name2 = image_name.clone();
    let (image_id, image_cfg) = e
        .blocking(move |s| {
            let id = s.resolve(&image_name2).map_err(|err| match err {
                berth_image::ImageError::NotFound(_) => ApiError::NotFound(format!("No such image: {image_name2}")),
                other => other.into(),
            })?;
            let cfg: Value = serde_json::from_slice(&s.read_blob(&id, MAX_CONFIG_BYTES)?).unwrap_or(Value::Null);
            Ok((id, cfg))
        })
        .await?;
    let mut config = merge_image_config(&body.config, &image_cfg["config"]);
    let mut argv: Vec<String> = config.entrypoint.clone().unwrap_or_default();
    argv.extend(config.cmd.clone().unwrap_or_default());
    if argv.is_empty() {
        return Err(ApiError::bad("no command specified"));
    }
    validate_config(&body.config)?;
    let mut host_config = body.host_config.unwrap_or_default();
    crate::containers::validate_host_config(&host_config)?;
    for link in host_config.links.iter().flatten() {
        let target = link.split(':').next().unwrap_or_default().trim_start_matches('/');
        if e.containers.get(target).is_err() {
            return Err(ApiError::bad(format!("could not get container for {target}")));
        }
    }
    logopts::normalize(&mut host_config);
    crate::networks::normalize_mode(e, &mut host_config);
    crate::networks::resolve_extra_hosts(e, &mut host_config)?;
    let mut wanted_networks = crate::networks::wanted_at_create(e, &host_config, body.networking_config.as_ref())?;
    crate::networks::legacy_mac(&mut wanted_networks, config.mac_address.as_deref())?;
    crate::networks::port_requests_valid(&config, &host_config)?;
    let from = mounts::volumes_from(e, &host_config)?;
    let (mount_points, wanted) = mounts::plan(&config, &host_config, &from)?;
    let id = random_id()?;
    if config.hostname.as_deref().unwrap_or("").is_empty() {
        config.hostname = Some(id[..12].to_string());
    }
    config.image = Some(image_name.clone());
    let explicit = name.is_some();
    let mut c = Container {
        name: name.unwrap_or_else(|| generated_name(&id, 0)),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        image_name,
        image_id: image_id.to_string(),
        path: argv[0].clone(),
        args: argv[1..].to_vec(),
        config,
        host_config,
        state: State::default(),
        id: id.clone(),
        mounts: mount_points,
        net: crate::networks::NetState { wanted: wanted_networks, ..Default::default() },
    };
    mounts::create_volumes(e, wanted).await?;
    let mut attempt = 0;
    loop {
        let store = Arc::clone(&e.containers);
        let c2 = c.clone();
        match tokio::task::spawn_blocking(move || store.insert(c2)).await? {
            Ok(()) => break,
            Err(store::StoreError::NameInUse { .. }) if !explicit && attempt < 20 => {
                attempt += 1;
                c.name = generated_name(&id, attempt);
            }
            Err(err) => return Err(err.into()),
        }
    }
    e.events.container("create", &c);
    Ok(id)
}

/// Docker's checks of the container config, in its words: environment entries need a name,
/// and health check durations are 0 (the default) or at least 1 ms.
pub fn validate_config(c: &ContainerConfig) -> Result<(), ApiError> {
    for env in c.env.iter().flatten() {
        if env.split('=').next().unwrap_or_default().is_empty() {
            return Err(ApiError::bad(format!("invalid environment variable: {env}")));
        }
    }
    if let Some(h) = &c.healthcheck {
        const MIN_NANOS: i64 = 1_000_000;
        for (what, v) in [("Interval", h.interval), ("Timeout", h.timeout), ("StartPeriod", h.start_period)] {
            if v.is_some_and(|v| v != 0 && v < MIN_NANOS) {
                return Err(ApiError::bad(format!("{what} in Healthcheck cannot be less than 1ms")));
            }
        }
        if h.retries.is_some_and(|r| r < 0) {
            return Err(ApiError::bad("Retries in Healthcheck cannot be negative"));
        }
    }
    Ok(())
}

/// Docker's floor for a memory limit (create and update alike).
pub(crate) fn check_memory_limit(bytes: i64) -> Result<(), ApiError> {
    if bytes < 6 * 1024 * 1024 {
        return Err(ApiError::bad("Minimum memory limit allowed is 6MB"));
    }
    Ok(())
}

/// Refuse what Berth cannot honour yet, clearly, instead of silently ignoring it.
pub fn validate_host_config(h: &HostConfig) -> Result<(), ApiError> {
    if let Some(m) = h.memory.filter(|m| *m != 0) {
        check_memory_limit(m)?;
    }
    for target in h.tmpfs.iter().flat_map(|t| t.keys()) {
        if !target.starts_with('/') {
            return Err(ApiError::bad(format!("invalid tmpfs mount {target:?}: mount path must be absolute")));
        }
        if target.trim_end_matches('/').is_empty() {
            return Err(ApiError::bad(format!("invalid tmpfs mount {target:?}: destination can't be '/'")));
        }
    }
    logopts::limits(h)?;
    Ok(())
}

fn state_view(c: &Container) -> ContainerState {
    let status = match c.state.status {
        Status::Created => ContainerStateStatusEnum::CREATED,
        Status::Running => ContainerStateStatusEnum::RUNNING,
        Status::Paused => ContainerStateStatusEnum::PAUSED,
        Status::Restarting => ContainerStateStatusEnum::RESTARTING,
        Status::Removing => ContainerStateStatusEnum::REMOVING,
        Status::Exited => ContainerStateStatusEnum::EXITED,
        Status::Dead => ContainerStateStatusEnum::DEAD,
    };
    ContainerState {
        status: Some(status),
        running: Some(matches!(c.state.status, Status::Running | Status::Paused | Status::Restarting)),
        paused: Some(c.state.status == Status::Paused),
        restarting: Some(c.state.status == Status::Restarting),
        oom_killed: Some(c.state.oom_killed),
        dead: Some(c.state.status == Status::Dead),
        pid: Some(c.state.pid),
        exit_code: Some(c.state.exit_code),
        error: Some(c.state.error.clone()),
        started_at: Some(c.state.started_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into())),
        finished_at: Some(c.state.finished_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into())),
        health: c.state.health.as_ref().map(|h| h.view()),
    }
}

/// GET /containers/{id}/json
pub async fn inspect(e: &Arc<Engine>, key: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let c = e.containers.get(key)?;
    let size = if q.bool("size")? { Some(sizes(e, &c).await) } else { None };
    let dir = e.containers.dir(&c.id);
    let out = ContainerInspectResponse {
        id: Some(c.id.clone()),
        created: Some(c.created.clone()),
        path: Some(c.path.clone()),
        args: Some(c.args.clone()),
        state: Some(state_view(&c)),
        image: Some(c.image_id.clone()),
        resolv_conf_path: Some(String::new()),
        hostname_path: Some(String::new()),
        hosts_path: Some(String::new()),
        log_path: Some(dir.join("container.log").display().to_string()),
        name: Some(format!("/{}", c.name)),
        restart_count: Some(c.state.restart_count),
        driver: Some("overlay2".into()),
        platform: Some("linux".into()),
        mount_label: Some(String::new()),
        process_label: Some(String::new()),
        app_armor_profile: Some(String::new()),
        exec_ids: None,
        host_config: Some(c.host_config.clone()),
        graph_driver: Some(DriverData { name: "overlay2".into(), data: HashMap::new() }),
        size_rw: size.map(|s| s.0),
        size_root_fs: size.map(|s| s.1),
        mounts: Some(mounts::inspect_view(e, &c.mounts)),
        config: Some(c.config.clone()),
        network_settings: None,
    };
    let mut v = serde_json::to_value(&out)?;
    v["NetworkSettings"] = crate::networks::settings_view(e, &c);
    let p = lifecycle::paths(e, &c.id);
    if matches!(c.state.status, Status::Running | Status::Paused | Status::Restarting) {
        for (k, f) in [("ResolvConfPath", "resolv.conf"), ("HostnamePath", "hostname"), ("HostsPath", "hosts")] {
            v[k] = Value::String(p.bundle.join(f).display().to_string());
        }
    }
    Ok(ok_json(&v))
}

fn status_text(c: &Container) -> String {
    let since = |t: &Option<String>| {
        t.as_deref()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| human_duration(chrono::Utc::now().signed_duration_since(t).num_seconds()))
            .unwrap_or_else(|| "Less than a second".into())
    };
    match c.state.status {
        Status::Created => "Created".into(),
        Status::Running => match c.state.health.as_ref().map(|h| h.status.as_str()) {
            Some("starting") => format!("Up {} (health: starting)", since(&c.state.started_at)),
            Some(h) => format!("Up {} ({h})", since(&c.state.started_at)),
            None => format!("Up {}", since(&c.state.started_at)),
        },
        Status::Paused => format!("Up {} (Paused)", since(&c.state.started_at)),
        Status::Restarting => format!("Restarting ({}) {} ago", c.state.exit_code, since(&c.state.finished_at)),
        Status::Removing => "Removal In Progress".into(),
        Status::Exited => format!("Exited ({}) {} ago", c.state.exit_code, since(&c.state.finished_at)),
        Status::Dead => "Dead".into(),
    }
}

/// Docker's "About a minute", "3 hours" style.
fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 1 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".into(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 7200 => "About an hour".into(),
        s if s < 48 * 3600 => format!("{} hours", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

/// One row of `docker ps` (and of `docker system df`).
pub fn summary(c: &Container) -> ContainerSummary {
    let command = std::iter::once(c.path.clone()).chain(c.args.iter().cloned()).collect::<Vec<_>>().join(" ");
    ContainerSummary {
        id: Some(c.id.clone()),
        names: Some(vec![format!("/{}", c.name)]),
        image: Some(c.image_name.clone()),
        image_id: Some(c.image_id.clone()),
        command: Some(command),
        created: chrono::DateTime::parse_from_rfc3339(&c.created).ok().map(|t| t.timestamp()),
        ports: Some(crate::networks::ps_ports(c)),
        size_rw: None,
        size_root_fs: None,
        labels: c.config.labels.clone(),
        state: Some(c.state.status.as_str().into()),
        status: Some(status_text(c)),
        host_config: None,
        network_settings: Some(bollard_stubs::models::ContainerSummaryNetworkSettings {
            networks: Some(
                c.net
                    .wanted
                    .iter()
                    .map(|(name, w)| {
                        let ep = c.net.endpoints.iter().find(|ep| ep.network == *name);
                        (
                            name.clone(),
                            bollard_stubs::models::EndpointSettings {
                                network_id: ep.map(|ep| ep.network_id.clone()),
                                endpoint_id: ep.map(|ep| ep.endpoint_id.clone()),
                                ip_address: ep.map(|ep| ep.ip.to_string()),
                                gateway: ep.map(|ep| ep.gateway.to_string()),
                                ip_prefix_len: ep.map(|ep| ep.prefix as i64),
                                mac_address: ep.map(|ep| ep.mac.clone()).or_else(|| w.mac.clone()),
                                ..Default::default()
                            },
                        )
                    })
                    .collect(),
            ),
        }),
        mounts: Some(vec![]),
    }
}

/// Docker's SizeRw (bytes in the container's writable layer) and SizeRootFs (that plus the
/// image) for `ps -s` and `inspect --size`.
pub async fn sizes(e: &Arc<Engine>, c: &Container) -> (i64, i64) {
    let upper = lifecycle::paths(e, &c.id).upper;
    let image = berth_image::Digest::parse(&c.image_id).ok().and_then(|d| e.store.get_image(&d).ok()).map(|i| i.size).unwrap_or(0);
    let rw = tokio::task::spawn_blocking(move || stats::dir_size(&upper)).await.unwrap_or(0);
    (rw as i64, (rw + image) as i64)
}

/// GET /containers/json
pub async fn list(e: &Arc<Engine>, q: &Query) -> Result<Response<Body>, ApiError> {
    let all = q.bool("all")?;
    let with_size = q.bool("size")?;
    let limit = q.i64("limit")?.filter(|l| *l > 0);
    let f = q.filters()?;
    f.only(&["id", "name", "label", "status", "ancestor", "exited", "before", "since", "health", "network", "volume", "publish", "expose", "isolation", "is-task"])?;
    let mut out = Vec::new();
    for c in e.containers.list() {
        let running = matches!(c.state.status, Status::Running | Status::Paused | Status::Restarting);
        if !all && f.get("status").is_empty() && !running {
            continue;
        }
        let labels = c.config.labels.clone().unwrap_or_default();
        let ok = |k: &str, p: &dyn Fn(&str) -> bool| f.get(k).is_empty() || f.get(k).iter().any(|v| p(v));
        if !(ok("id", &|v| c.id.starts_with(v))
            && ok("name", &|v| c.name.contains(v.trim_start_matches('/')))
            && f.get("label").iter().all(|v| label_matches(&labels, v))
            && ok("status", &|v| v == c.state.status.as_str())
            && ok("ancestor", &|v| v == c.image_name || v == c.image_id || c.image_id.trim_start_matches("sha256:").starts_with(v))
            && ok("exited", &|v| c.state.status == Status::Exited && v.parse::<i64>().ok() == Some(c.state.exit_code)))
        {
            continue;
        }
        let mut row = summary(&c);
        if with_size {
            let (rw, root) = sizes(e, &c).await;
            row.size_rw = Some(rw);
            row.size_root_fs = Some(root);
        }
        out.push(row);
        if limit.map(|l| out.len() as i64 >= l).unwrap_or(false) {
            break;
        }
    }
    Ok(ok_json(&out))
}

/// POST /containers/{id}/rename?name=
pub async fn rename(e: &Arc<Engine>, key: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let new = q.get("name").filter(|n| !n.is_empty()).ok_or_else(|| ApiError::bad("name is required"))?;
    let c = e.containers.get(key)?;
    if new.strip_prefix('/').unwrap_or(new) == c.name {
        return Err(ApiError::bad("Renaming a container with the same name as its current name"));
    }
    e.containers.rename(&c.id, new)?;
    let mut attrs = HashMap::new();
    attrs.insert("oldName".to_string(), format!("/{}", c.name));
    e.events.container_with("rename", &e.containers.get(&c.id)?, attrs);
    Ok(status_only(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod detach_tests {
    use super::*;

    #[test]
    fn detach_keys_parse_as_docker_does() {
        assert_eq!(parse_detach_keys("").unwrap(), [16, 17]);
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), [16, 17]);
        assert_eq!(parse_detach_keys("ctrl-x").unwrap(), [24]);
        assert_eq!(parse_detach_keys("a,ctrl-@,ctrl-[,ctrl-_").unwrap(), [b'a', 0, 27, 31]);
        for bad in ["ctrl-", "ctrl-1", "ab", "ctrl-p,,ctrl-q", "shift-a"] {
            assert!(parse_detach_keys(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matcher_holds_a_prefix_and_passes_broken_sequences_on() {
        let keys = [16u8, 17];
        let mut m = DetachMatcher::new(&keys);
        let mut out = Vec::new();
        assert!(!m.feed(b"ab\x10", &mut out));
        assert_eq!(out, b"ab");
        // The held ctrl-p is passed on when the sequence breaks.
        assert!(!m.feed(b"c", &mut out));
        assert_eq!(out, b"ab\x10c");
        out.clear();
        // Split across reads, with a repeated first key.
        assert!(!m.feed(b"x\x10", &mut out));
        assert!(!m.feed(b"\x10", &mut out));
        assert!(m.feed(b"\x11rest", &mut out));
        assert_eq!(out, b"x\x10");
        let one = [24u8];
        let mut m = DetachMatcher::new(&one);
        out.clear();
        assert!(m.feed(b"ab\x18", &mut out));
        assert_eq!(out, b"ab");
    }
}
