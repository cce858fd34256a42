//! Running containers: start, wait, stop, kill, restart, logs, attach, resize, remove.
//!
//! berthd prepares the rootfs (overlay of the image layers) and the OCI bundle, then hands the
//! container to a `berth-shim` monitor process that runs it with runc and outlives berthd. berthd
//! follows each container through the shim's control socket: one task per running container waits
//! for its exit and records it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_runtime::bundle::{Bundle, SysMounter};
use berth_runtime::spec::{ContainerSpec, DeviceSpec, MountSpec, NetworkMode};
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::store::{Container, Status};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::http_util::{ok_json, status_only, stream_body, Body, Query};

/// What berthd tells waiters when a container exits or goes away.
#[derive(Debug, Clone)]
pub struct ExitNote {
    pub id: String,
    pub exit_code: i64,
    pub removed: bool,
}

/// Where a container's files live: persistent ones under the data root, runtime ones under the
/// exec root (a tmpfs at /run, gone after a reboot, like runc's state).
pub struct Paths {
    pub dir: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub log: PathBuf,
    pub bundle: PathBuf,
    pub shim_state: PathBuf,
}

pub fn paths(e: &Engine, id: &str) -> Paths {
    let dir = e.containers.dir(id);
    // Short runtime paths: the shim's control socket lives below, and a unix socket path must
    // fit in 108 bytes whatever --exec-root is. 64 bits of a random ID do not collide here.
    let run = e.config.exec_root.join("c").join(&id[..16.min(id.len())]);
    Paths {
        upper: dir.join("upper"),
        work: dir.join("work"),
        log: dir.join("container.log"),
        bundle: run.clone(),
        shim_state: run.join("s"),
        dir,
    }
}

fn is_running(c: &Container) -> bool {
    matches!(c.state.status, Status::Running | Status::Paused | Status::Restarting)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Signal names Docker accepts: "SIGKILL", "KILL", "9".
pub fn parse_signal(s: &str) -> Result<i32, ApiError> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| ApiError::bad(format!("Invalid signal: {s}")))
}

/// Map Docker's Config + HostConfig onto the runtime's container spec.
pub fn container_spec(c: &Container, rootfs: PathBuf, user: berth_runtime::user::ResolvedUser) -> Result<ContainerSpec, ApiError> {
    let h = &c.host_config;
    let cfg = &c.config;
    let mut env = cfg.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", if user.home.is_empty() { "/" } else { &user.home }));
    }
    if cfg.tty.unwrap_or(false) && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let mut args = vec![c.path.clone()];
    args.extend(c.args.iter().cloned());
    let mut mounts = Vec::new();
    if h.init.unwrap_or(false) {
        // Docker's --init: a static tini bind-mounted read-only as /sbin/docker-init, run as
        // pid 1 in front of the command (it forwards signals and reaps zombies).
        let init = init_binary().ok_or_else(|| {
            ApiError::bad("--init: no static init binary found (install Debian's tini, or set BERTH_INIT)")
        })?;
        args.splice(0..0, [INIT_PATH.to_string(), "--".to_string()]);
        mounts.push(MountSpec {
            source: init.display().to_string(),
            destination: INIT_PATH.into(),
            typ: "bind".into(),
            options: vec!["bind".into(), "ro".into()],
        });
    }
    let security = h.security_opt.clone().unwrap_or_default();
    let mut seccomp_unconfined = false;
    let mut no_new_privileges = false;
    for opt in &security {
        let (k, v) = opt.split_once(['=', ':']).unwrap_or((opt.as_str(), "true"));
        match (k, v) {
            ("seccomp", "unconfined") => seccomp_unconfined = true,
            ("no-new-privileges", v) => no_new_privileges = v != "false",
            ("label", _) | ("apparmor", _) => {}
            _ => return Err(ApiError::bad(format!("invalid --security-opt: {opt:?}"))),
        }
    }
    let network = match h.network_mode.as_deref() {
        Some("host") => NetworkMode::Host,
        _ => NetworkMode::Private,
    };
    let mut devices = Vec::new();
    for d in h.devices.clone().unwrap_or_default() {
        let host = d.path_on_host.unwrap_or_default();
        let inside = d.path_in_container.filter(|p| !p.is_empty()).unwrap_or_else(|| host.clone());
        devices.push(DeviceSpec {
            host_path: host.into(),
            container_path: inside,
            permissions: d.cgroup_permissions.filter(|p| !p.is_empty()).unwrap_or_else(|| "rwm".into()),
        });
    }
    Ok(ContainerSpec {
        id: c.id.clone(),
        rootfs,
        args,
        env,
        cwd: cfg.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into()),
        user: user.user,
        hostname: cfg.hostname.clone().unwrap_or_default(),
        domainname: cfg.domainname.clone().unwrap_or_default(),
        tty: cfg.tty.unwrap_or(false),
        readonly_rootfs: h.readonly_rootfs.unwrap_or(false),
        privileged: h.privileged.unwrap_or(false),
        cap_add: h.cap_add.clone().unwrap_or_default(),
        cap_drop: h.cap_drop.clone().unwrap_or_default(),
        no_new_privileges,
        seccomp_unconfined,
        ulimits: h
            .ulimits
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|u| (u.name.unwrap_or_default(), u.soft.unwrap_or(0) as u64, u.hard.unwrap_or(0) as u64))
            .collect(),
        tmpfs: h.tmpfs.clone().unwrap_or_default().into_iter().collect(),
        shm_size: h.shm_size.filter(|s| *s > 0),
        sysctls: with_default_sysctls(h.network_mode.as_deref(), h.sysctls.clone().unwrap_or_default()),
        devices,
        mounts,
        network,
        cgroup_parent: h.cgroup_parent.clone().unwrap_or_default(),
        oom_score_adj: h.oom_score_adj.map(|o| o as i32),
        ..limits_spec(h)
    })
}

/// The container's sysctls: its own, plus Docker's two defaults for a container with a network
/// namespace of its own (not `host`, not `container:`): any port may be bound and any group may
/// open ICMP sockets (unprivileged `ping`), safe because the namespace is the container's.
fn with_default_sysctls(
    network_mode: Option<&str>,
    own: std::collections::HashMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    let mut m: std::collections::BTreeMap<String, String> = own.into_iter().collect();
    let shared = network_mode.is_some_and(|n| n == "host" || n.starts_with("container:"));
    if !shared {
        m.entry("net.ipv4.ip_unprivileged_port_start".into()).or_insert_with(|| "0".into());
        m.entry("net.ipv4.ping_group_range".into()).or_insert_with(|| "0 2147483647".into());
    }
    m
}

/// Docker creates a missing working directory (`-w`, `WORKDIR` of an image) at start, owned
/// by root with mode 0755, resolved inside the rootfs so an image symlink cannot aim it
/// outside (#23); a path that exists as a file is refused.
fn ensure_working_dir(rootfs: &std::path::Path, cwd: &str) -> Result<(), ApiError> {
    let rel = cwd.trim_start_matches('/');
    if rel.is_empty() {
        return Ok(());
    }
    let root = berth_build::context::Root::open(rootfs).map_err(ApiError::internal)?;
    if root.is_dir(rel) {
        return Ok(());
    }
    root.mkdir_all(rel, 0o755, (0, 0))
        .map(drop)
        .map_err(|err| ApiError::bad(format!("cannot create the working directory {cwd:?}: {err}")))
}

/// Where `--init` puts the init inside the container (Docker's path).
pub const INIT_PATH: &str = "/sbin/docker-init";

/// The cgroup limits of a HostConfig as a spec (everything else default): what the runtime
/// applies at start and what `docker update` re-applies.
pub(crate) fn limits_spec(h: &bollard_stubs::models::HostConfig) -> ContainerSpec {
    ContainerSpec {
        memory: h.memory.filter(|m| *m > 0),
        memory_swap: h.memory_swap.filter(|m| *m != 0),
        nano_cpus: h.nano_cpus.filter(|n| *n > 0),
        cpu_shares: h.cpu_shares.filter(|s| *s > 0).map(|s| s as u64),
        cpu_quota: h.cpu_quota.filter(|q| *q > 0),
        cpu_period: h.cpu_period.filter(|p| *p > 0).map(|p| p as u64),
        cpuset_cpus: h.cpuset_cpus.clone().filter(|s| !s.is_empty()),
        pids_limit: h.pids_limit.filter(|p| *p > 0),
        ..Default::default()
    }
}

/// The init binary for `--init`: `BERTH_INIT`, else a static tini (Debian's `tini` package
/// ships `/usr/bin/tini-static`; `docker.io` ships it as docker-init). It must be static: it
/// runs inside the container's rootfs, which has none of the host's libraries.
pub fn init_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("BERTH_INIT") {
        return Some(p.into());
    }
    ["/usr/bin/tini-static", "/usr/sbin/docker-init", "/usr/bin/docker-init", "/usr/libexec/docker/docker-init"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Files Docker bind-mounts into every container: /etc/hostname, /etc/hosts, /etc/resolv.conf.
/// On bridge networks the resolver is the embedded one at 127.0.0.11 (container names on
/// user-defined networks, everything else forwarded to the host's resolvers, loopback ones
/// included); with `--network host` the host's files; with `none` the host's resolvers that a
/// container's own namespace can reach.
fn write_etc_files(c: &Container, bundle: &std::path::Path, net: &crate::networks::NetState) -> Result<Vec<MountSpec>, ApiError> {
    let hostname = c.config.hostname.clone().unwrap_or_default();
    let host_net = c.host_config.network_mode.as_deref() == Some("host");
    let hosts = if host_net {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        crate::networks::etc_hosts(c, net)
    };
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv: String = if !net.endpoints.is_empty() {
        let mut r: String = host_resolv.lines().filter(|l| l.starts_with("search ") || l.starts_with("domain ")).map(|l| format!("{l}\n")).collect();
        r.push_str("nameserver 127.0.0.11\noptions ndots:0\n");
        r
    } else {
        // Resolvers on the host's loopback are unreachable from a container's own namespace.
        host_resolv
            .lines()
            .filter(|l| host_net || !(l.starts_with("nameserver 127.") || l.starts_with("nameserver ::1")))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let mut out = Vec::new();
    for (name, content) in [("hostname", format!("{hostname}\n")), ("hosts", hosts), ("resolv.conf", resolv)] {
        let p = bundle.join(name);
        std::fs::write(&p, content).map_err(|err| ApiError::internal(format!("writing {}: {err}", p.display())))?;
        out.push(MountSpec {
            source: p.display().to_string(),
            destination: format!("/etc/{name}"),
            typ: "bind".into(),
            options: vec!["rbind".into(), "rprivate".into()],
        });
    }
    Ok(out)
}

fn shim_binary() -> PathBuf {
    if let Ok(p) = std::env::var("BERTH_SHIM") {
        return p.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("berth-shim")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "berth-shim".into())
}

/// The OCI runtime for new containers: `--default-runtime` or `BERTH_RUNTIME` (e.g. `runc`,
/// the fallback), else
/// berth-oci installed next to berthd (Berth's own runtime, the default: see README for the
/// measurements behind the choice), else `runc` from PATH.
pub(crate) fn runtime_binary(e: &Engine) -> PathBuf {
    if let Some(p) = &e.config.default_runtime {
        return p.clone();
    }
    if let Ok(p) = std::env::var("BERTH_RUNTIME") {
        return p.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("berth-oci")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "runc".into())
}

/// A runtime's state directory (`--root`), one per runtime binary (their state formats differ).
pub(crate) fn runtime_root_for(e: &Engine, runtime: &std::path::Path) -> PathBuf {
    let name = runtime.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "runc".into());
    e.config.exec_root.join(name)
}

/// The runtime binary and state root a container was started with (recorded in its bundle, so
/// pause/resume keep using it even if the default changed meanwhile); the default otherwise.
pub(crate) fn runtime_of(e: &Engine, id: &str) -> (PathBuf, PathBuf) {
    let rt = std::fs::read_to_string(paths(e, id).bundle.join("runtime"))
        .ok()
        .map(|s| PathBuf::from(s.trim()))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| runtime_binary(e));
    let root = runtime_root_for(e, &rt);
    (rt, root)
}

/// Create the container's bundle directory and mount its overlay rootfs there (image layers
/// below, the container's upper dir on top). Used to start it, and briefly by `docker cp` and
/// `export` of a stopped container. Any mount left over (a crash during such a copy) is
/// detached first, so overlays never stack. Blocking.
pub(crate) fn mount_rootfs(e: &Engine, c: &Container) -> Result<Bundle, ApiError> {
    let p = paths(e, &c.id);
    let image = e.store.get_image(&berth_image::Digest::parse(&c.image_id)?)?;
    let layers: Vec<PathBuf> = image.layers.iter().rev().map(|l| e.store.layer_diff_dir(l)).collect();
    let bundle = Bundle::create(&p.bundle).map_err(ApiError::internal)?;
    let m = SysMounter;
    bundle.unmount_rootfs(&m).map_err(ApiError::internal)?;
    bundle.mount_rootfs(&m, &layers, &p.upper, &p.work).map_err(ApiError::internal)?;
    Ok(bundle)
}

/// Prepare the rootfs and bundle and hand the container to a shim. Blocking.
fn launch(e: &Arc<Engine>, c: &Container, wait_attach: usize) -> Result<(berth_shim::ShimHandle, crate::networks::NetState), ApiError> {
    let t0 = std::time::Instant::now();
    let p = paths(e, &c.id);
    let bundle = mount_rootfs(e, c)?;
    let m = SysMounter;
    let t_mount = t0.elapsed();
    let net = match crate::networks::attach(e, c) {
        Ok(n) => n,
        Err(err) => {
            let _ = bundle.unmount_rootfs(&m);
            return Err(err);
        }
    };
    let t_net = t0.elapsed();
    let result = (|| {
        let user = berth_runtime::user::resolve(
            &bundle.rootfs(),
            c.config.user.as_deref().unwrap_or(""),
            &c.host_config.group_add.clone().unwrap_or_default(),
        )
        .map_err(|err| ApiError::bad(err.to_string()))?;
        let mut spec = container_spec(c, bundle.rootfs(), user)?;
        ensure_working_dir(&bundle.rootfs(), &spec.cwd)?;
        spec.network = match (&net.netns, net.host_mode) {
            (_, true) => NetworkMode::Host,
            (Some(ns), false) => NetworkMode::Path(ns.clone()),
            (None, false) => NetworkMode::Private,
        };
        spec.mounts.extend(super::mounts::runtime_mounts(e, &c.mounts, &bundle.rootfs())?);
        spec.mounts.extend(write_etc_files(c, &p.bundle, &net.state)?);
        let oci = berth_runtime::spec::build(&spec).map_err(|err| ApiError::bad(err.to_string()))?;
        bundle.write_config(&oci).map_err(ApiError::internal)?;
        let runtime = runtime_binary(e);
        std::fs::write(p.bundle.join("runtime"), runtime.as_os_str().as_encoded_bytes()).map_err(ApiError::internal)?;
        let mut opts = berth_shim::ShimOptions::new(
            shim_binary(),
            c.id.clone(),
            p.bundle.clone(),
            p.shim_state.clone(),
            runtime.clone(),
            runtime_root_for(e, &runtime),
            p.log.clone(),
        );
        // Validated at create; a record from before LogConfig was checked falls back to
        // the default rotation rather than failing to start.
        let log = super::logopts::limits(&c.host_config).unwrap_or_default();
        opts.log_max_size = log.max_size;
        opts.log_max_files = log.max_files;
        opts.no_log = super::logopts::discards(&c.host_config);
        opts.tty = c.config.tty.unwrap_or(false);
        opts.stdin = c.config.open_stdin.unwrap_or(false);
        opts.stdin_once = c.config.stdin_once.unwrap_or(false);
        opts.wait_attach = wait_attach;
        let t_bundle = t0.elapsed();
        let r = berth_shim::spawn(&opts);
        tracing::debug!(id = %c.short_id(), ?t_mount, ?t_net, ?t_bundle, total = ?t0.elapsed(), "container launched");
        r.map_err(|err| match err {
            berth_shim::ShimError::Start(msg) => ApiError::bad(msg),
            other => ApiError::internal(other),
        })
    })();
    match result {
        Ok(h) => Ok((h, net.state)),
        Err(err) => {
            crate::networks::detach(e, c, &net.state);
            let _ = bundle.unmount_rootfs(&m);
            Err(err)
        }
    }
}

/// The record says running, but the container may have exited a moment ago with its exit
/// not recorded yet (the shim ends attach streams before `watch_exit` hears of the exit). Ask
/// the shim; if the container is gone, wait briefly for the record, so a `start` or an
/// `attach` right after an exit (what `docker start -a` does) sees a stopped container rather
/// than a monitor that is going away.
async fn settle_exit(e: &Arc<Engine>, c: Container) -> Container {
    if c.state.status != Status::Running {
        return c;
    }
    let p = paths(e, &c.id);
    // The shim records the exit, then ends attach streams, then removes its socket and
    // lingers a moment for its clients: any of those means the container is gone.
    let exited = match berth_shim::connect(&p.shim_state).state().await {
        Ok(st) => !st.running,
        Err(_) => {
            berth_shim::read_exit(&p.shim_state).is_some()
                || !p.shim_state.join(berth_shim::state::SHIM_SOCK).exists()
                || !berth_shim::is_alive(&p.shim_state)
        }
    };
    if !exited {
        return c;
    }
    let rx = e.exits.subscribe();
    if let Ok(now) = e.containers.get(&c.id) {
        if !is_running(&now) {
            return now;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), next_exit(rx, c.id.clone(), false)).await;
    e.containers.get(&c.id).unwrap_or(c)
}

/// POST /containers/{id}/start
pub async fn start(e: &Arc<Engine>, key: &str) -> Result<Response<Body>, ApiError> {
    let c = settle_exit(e, e.containers.get(key)?).await;
    if is_running(&c) {
        return Ok(status_only(StatusCode::NOT_MODIFIED));
    }
    start_container(e, &c.id).await?;
    Ok(status_only(StatusCode::NO_CONTENT))
}

pub async fn start_container(e: &Arc<Engine>, id: &str) -> Result<(), ApiError> {
    start_checked(e, id, false).await
}

/// Start; with `restart`, only if the container still waits out its restart back-off and no
/// `stop`/`rm` came in meanwhile (checked under the lifecycle lock, so a stop that arrives
/// while the restart is starting the container waits for it and then stops it).
async fn start_checked(e: &Arc<Engine>, id: &str, restart: bool) -> Result<(), ApiError> {
    // A container on a bridge network needs the bridges and nftables, which are set up after
    // berthd starts serving (inside the VM, while the kernel's network modules load). `none`,
    // `host` and `container:` modes do not wait.
    if e.containers.get(id).map(|c| crate::networks::mode_of(&c) == crate::networks::Mode::Bridge).unwrap_or(false) {
        crate::networks::network_ready(e).await?;
    }
    let guard = e.lifecycle_lock(id).await;
    let mut c = e.containers.get(id)?;
    if restart {
        if c.state.manually_stopped || c.state.status != Status::Restarting {
            return Ok(());
        }
        // It stays `restarting` until it runs, as in Docker: an `rm` without force during the
        // launch is refused, not let through by a brief `exited`.
        c = e.containers.update(id, |c| {
            c.state.restart_count += 1;
            c.clone()
        })?;
    } else if is_running(&c) {
        return Ok(());
    }
    let pending = e.pending_attaches(id);
    // Clear the previous run's monitor state, then release waiting attach sessions: they connect
    // as soon as the new shim's socket appears, and the shim starts the container once they have.
    let _ = std::fs::remove_dir_all(paths(e, id).shim_state);
    e.announce_started(id);
    let e2 = Arc::clone(e);
    let c2 = c.clone();
    let (handle, net) = match tokio::task::spawn_blocking(move || launch(&e2, &c2, pending)).await? {
        Ok(h) => h,
        Err(err) => {
            let msg = err.to_string();
            let _ = e.containers.update(id, |c| {
                c.state.status = Status::Exited;
                c.state.exit_code = 128;
                c.state.error = msg.clone();
                c.state.finished_at = Some(now());
            });
            e.notify_exit(ExitNote { id: id.to_string(), exit_code: 128, removed: false });
            // `docker run --rm` waits for the removal: a start that failed removes it too.
            if c.host_config.auto_remove.unwrap_or(false) {
                drop(guard);
                if let Ok(c) = e.containers.get(id) {
                    let _ = destroy(e, &c, true).await;
                }
            }
            return Err(err);
        }
    };
    let c = e.containers.update(id, |c| {
        c.state.status = Status::Running;
        c.state.pid = handle.init_pid as i64;
        c.state.exit_code = 0;
        c.state.error.clear();
        c.state.oom_killed = false;
        c.state.started_at = Some(now());
        c.state.finished_at = None;
        c.state.manually_stopped = false;
        c.state.health = None;
        c.net = net.clone();
        c.clone()
    })?;
    for ep in &c.net.endpoints {
        if let Ok(r) = e.networks.get(&ep.network_id) {
            crate::networks::network_event(e, "connect", &r, Some(&c.id));
        }
    }
    e.events.container("start", &c);
    super::health::monitor(Arc::clone(e), &c);
    watch_exit(Arc::clone(e), id.to_string());
    Ok(())
}

/// Follow a running container until it exits, then record the exit. Also used after a daemon
/// restart for containers whose shim is still alive (live-restore).
pub fn watch_exit(e: Arc<Engine>, id: String) {
    tokio::spawn(async move {
        let p = paths(&e, &id);
        let client = berth_shim::connect(&p.shim_state);
        let status = loop {
            match client.wait().await {
                Ok(s) => break Some(s),
                Err(err) => {
                    if let Some(s) = berth_shim::read_exit(&p.shim_state) {
                        break Some(s);
                    }
                    if !berth_shim::is_alive(&p.shim_state) {
                        tracing::warn!(%id, "container monitor is gone without an exit status: {err}");
                        break None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        record_exit(&e, &id, status).await;
    });
}

async fn record_exit(e: &Arc<Engine>, id: &str, status: Option<berth_shim::ExitStatus>) {
    let (code, oom, err) = match &status {
        Some(s) => (s.exit_code as i64, s.oom_killed, s.error.clone().unwrap_or_default()),
        None => (255, false, "container monitor exited unexpectedly".to_string()),
    };
    let p = paths(e, id);
    let bundle = Bundle { dir: p.bundle.clone() };
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(err) = bundle.remove(&SysMounter) {
            tracing::warn!("cleaning up the container bundle: {err}");
        }
    })
    .await;
    // One record write: the exit, and the end of the run's endpoints and ports (a crash before
    // the teardown below leaves only what reconciliation at the next start removes).
    // The restart decision is part of the same write: a container its policy brings back goes
    // straight to `restarting`, as in Docker, so nothing (an `rm` without force above all) sees
    // it `exited` in between.
    let finished = status.as_ref().map(|s| s.finished_at);
    let Ok((c, net, restart)) = e.containers.update(id, |c| {
        c.state.status = Status::Exited;
        c.state.exit_code = code;
        c.state.oom_killed = oom;
        c.state.pid = 0;
        c.state.error = err;
        c.state.finished_at = Some(status.as_ref().map(|s| s.finished_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)).unwrap_or_else(now));
        let restart = restart_delay(c, finished);
        if restart.is_some() {
            c.state.status = Status::Restarting;
        }
        let net = c.net.clone();
        c.net.sandbox.clear();
        c.net.endpoints.clear();
        c.net.ports.clear();
        (c.clone(), net, restart)
    }) else {
        return;
    };
    {
        let e2 = Arc::clone(e);
        let (c2, net2) = (c.clone(), net.clone());
        let _ = tokio::task::spawn_blocking(move || {
            crate::networks::detach(&e2, &c2, &net2);
            super::mounts::release(&e2, &c2.mounts);
        })
        .await;
        for ep in &net.endpoints {
            if let Ok(r) = e.networks.get(&ep.network_id) {
                crate::networks::network_event(e, "disconnect", &r, Some(&c.id));
            }
        }
    }
    if oom {
        e.events.container("oom", &c);
    }
    let mut attrs = HashMap::new();
    attrs.insert("exitCode".to_string(), code.to_string());
    e.events.container_with("die", &c, attrs);
    e.notify_exit(ExitNote { id: id.to_string(), exit_code: code, removed: false });
    if let Some(delay) = restart {
        schedule_restart(Arc::clone(e), c.id.clone(), delay);
        return;
    }
    if c.host_config.auto_remove.unwrap_or(false) {
        // `--rm` takes the container's anonymous volumes with it, as Docker does.
        if let Err(err) = destroy(e, &c, true).await {
            tracing::warn!(%id, "auto-remove failed: {err}");
        }
    }
}

/// Docker's restart policies: `no`, `always`, `unless-stopped`, `on-failure[:N]`. Returns the
/// back-off before the next start: 100 ms doubling per consecutive restart, capped at one
/// minute, back to 100 ms after a run of at least 10 s.
fn restart_delay(c: &Container, finished: Option<chrono::DateTime<chrono::Utc>>) -> Option<Duration> {
    use bollard_stubs::models::RestartPolicyNameEnum as P;
    if c.state.manually_stopped {
        return None;
    }
    let policy = c.host_config.restart_policy.as_ref()?;
    let wanted = match policy.name {
        Some(P::ALWAYS) | Some(P::UNLESS_STOPPED) => true,
        Some(P::ON_FAILURE) => {
            let max = policy.maximum_retry_count.unwrap_or(0);
            c.state.exit_code != 0 && (max <= 0 || c.state.restart_count < max)
        }
        _ => false,
    };
    if !wanted {
        return None;
    }
    let ran = match (&c.state.started_at, finished) {
        (Some(s), Some(f)) => chrono::DateTime::parse_from_rfc3339(s).ok().map(|s| (f - s.with_timezone(&chrono::Utc)).num_seconds()),
        _ => None,
    };
    let n = if ran.unwrap_or(0) >= 10 { 0 } else { c.state.restart_count.clamp(0, 20) as u32 };
    Some(Duration::from_millis(100u64.saturating_mul(1 << n)).min(Duration::from_secs(60)))
}

fn schedule_restart(e: Arc<Engine>, id: String, delay: Duration) {
    // The exit's record write already made it `restarting`.
    tokio::spawn(async move {
        let mut stop = e.shutdown.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Ok(c) = e.containers.get(&id) else { return };
        // `docker stop` or `rm` during the back-off wins; one that raced the exit itself
        // leaves it `restarting` with the stop recorded: it settles as exited.
        if c.state.manually_stopped {
            let _ = e.containers.update(&id, |c| {
                if c.state.status == Status::Restarting {
                    c.state.status = Status::Exited;
                }
            });
            return;
        }
        if c.state.status != Status::Restarting {
            return;
        }
        if let Err(err) = start_checked(&e, &id, true).await {
            tracing::warn!(%id, "restart failed: {err}");
        }
    });
}

/// Remove a stopped container's record, files and log, and tell waiters; with `volumes`, also
/// its anonymous volumes (`rm -v`).
async fn destroy(e: &Arc<Engine>, c: &Container, volumes: bool) -> Result<(), ApiError> {
    // Not while a start or a `docker cp` of the stopped container holds its rootfs.
    let _guard = e.lifecycle_lock(&c.id).await;
    let anonymous = if volumes { super::mounts::anonymous_volumes(e, &c.mounts) } else { Vec::new() };
    let store = Arc::clone(&e.containers);
    let id = c.id.clone();
    let bundle = Bundle { dir: paths(e, &c.id).bundle };
    tokio::task::spawn_blocking(move || {
        let _ = bundle.remove(&SysMounter);
        store.remove(&id)
    })
    .await??;
    e.forget_container(&c.id);
    e.events.container("destroy", c);
    for v in anonymous {
        if let Err(err) = crate::volumes::remove_volume(e, &v).await {
            tracing::debug!(volume = %v, "not removing the anonymous volume: {err}");
        }
    }
    e.notify_exit(ExitNote { id: c.id.clone(), exit_code: c.state.exit_code, removed: true });
    Ok(())
}

/// POST /containers/{id}/wait?condition=not-running|next-exit|removed
pub async fn wait(e: &Arc<Engine>, key: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let condition = q.get("condition").filter(|c| !c.is_empty()).unwrap_or("not-running").to_string();
    if !matches!(condition.as_str(), "not-running" | "next-exit" | "removed") {
        return Err(ApiError::bad(format!("invalid condition: {condition:?}")));
    }
    // Subscribe before looking at the state, so an exit in between is not missed.
    let rx = e.exits.subscribe();
    let c = e.containers.get(key)?;
    let id = c.id.clone();
    let immediate = condition == "not-running" && !is_running(&c);
    let s = async_stream::stream! {
        let code = if immediate {
            c.state.exit_code
        } else {
            match next_exit(rx, id, condition == "removed").await {
                Some(n) => n.exit_code,
                None => return,
            }
        };
        let mut b = serde_json::to_vec(&json!({"StatusCode": code, "Error": null})).unwrap_or_default();
        b.push(b'\n');
        yield Ok::<_, std::io::Error>(Bytes::from(b));
    };
    let mut r = Response::new(stream_body(s));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

/// The next exit note for container `id` (with `removed` when asked for). Subscribe before
/// acting, so an exit in between is not missed. None when the daemon's bus closes.
pub(crate) async fn next_exit(mut rx: tokio::sync::broadcast::Receiver<ExitNote>, id: String, removed: bool) -> Option<ExitNote> {
    loop {
        match rx.recv().await {
            Ok(n) if n.id == id && (!removed || n.removed) => return Some(n),
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// Send `signal`, wait up to `timeout` for the exit, then SIGKILL (Docker's stop).
async fn stop_container(e: &Arc<Engine>, c: &Container, timeout: Option<i64>, signal: Option<&str>) -> Result<(), ApiError> {
    let rx = e.exits.subscribe();
    let client = berth_shim::connect(&paths(e, &c.id).shim_state);
    let sig = match signal.or(c.config.stop_signal.as_deref()) {
        Some(s) if !s.is_empty() => parse_signal(s)?,
        _ => libc::SIGTERM,
    };
    let timeout = timeout.or(c.config.stop_timeout).unwrap_or(10);
    // Recorded in one write with a look at the state: a container that exited since the
    // caller read it (its exit came first) has nothing left to stop, and one its policy was
    // about to bring back stays down.
    let gone = e.containers.update(&c.id, |c| {
        c.state.manually_stopped = true;
        if c.state.status == Status::Restarting {
            c.state.status = Status::Exited;
        }
        !matches!(c.state.status, Status::Running | Status::Paused)
    })?;
    if gone {
        return Ok(());
    }
    let wait_exit = |rx: &tokio::sync::broadcast::Receiver<ExitNote>| next_exit(rx.resubscribe(), c.id.clone(), false);
    if let Err(err) = client.kill(sig).await {
        tracing::debug!("stop signal: {err}");
    }
    super::stats::thaw_after_signal(e, &c.id).await;
    let waited = if timeout < 0 {
        wait_exit(&rx).await;
        true
    } else {
        tokio::time::timeout(Duration::from_secs(timeout as u64), wait_exit(&rx)).await.is_ok()
    };
    if !waited && is_running(&e.containers.get(&c.id)?) {
        let _ = client.kill(libc::SIGKILL).await;
        // The kernel takes the process down; allow for slow teardown of big cgroups.
        let _ = tokio::time::timeout(Duration::from_secs(30), wait_exit(&rx)).await;
    }
    Ok(())
}

/// POST /containers/{id}/stop?t=&signal=
pub async fn stop(e: &Arc<Engine>, key: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let c = e.containers.get(key)?;
    if !is_running(&c) {
        return Ok(status_only(StatusCode::NOT_MODIFIED));
    }
    let mut c = c;
    if c.state.status == Status::Restarting {
        // A restart that is starting it right now finishes first (it holds the lock).
        let guard = e.lifecycle_lock(&c.id).await;
        c = e.containers.get(&c.id)?;
        if c.state.status == Status::Restarting {
            // Waiting out a restart back-off: nothing runs, just cancel the restart.
            e.containers.update(&c.id, |c| {
                c.state.manually_stopped = true;
                c.state.status = Status::Exited;
            })?;
            return Ok(status_only(StatusCode::NO_CONTENT));
        }
        drop(guard);
        if !is_running(&c) {
            return Ok(status_only(StatusCode::NOT_MODIFIED));
        }
    }
    stop_container(e, &c, q.i64("t")?.or(q.i64("timeout")?), q.get("signal")).await?;
    Ok(status_only(StatusCode::NO_CONTENT))
}

/// POST /containers/{id}/restart?t=
pub async fn restart(e: &Arc<Engine>, key: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let c = e.containers.get(key)?;
    if is_running(&c) {
        stop_container(e, &c, q.i64("t")?, q.get("signal")).await?;
    }
    start_container(e, &c.id).await?;
    let c = e.containers.get(&c.id)?;
    e.events.container("restart", &c);
    Ok(status_only(StatusCode::NO_CONTENT))
}

/// POST /containers/{id}/kill?signal=
pub async fn kill(e: &Arc<Engine>, key: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let c = e.containers.get(key)?;
    let sig = parse_signal(q.get("signal").filter(|s| !s.is_empty()).unwrap_or("SIGKILL"))?;
    if !is_running(&c) {
        return Err(ApiError::Conflict(format!("Cannot kill container: {}: Container {} is not running", key, c.id)));
    }
    // Docker's rule (moby `killWithSignal`): the kill also cancels the restart policy for the
    // exit it causes when it sends SIGKILL, the container's stop signal, or any signal to a
    // container without one (moby `TestKillWithStopSignalAndRestartPolicies`).
    let stop_signal = c.config.stop_signal.as_deref().filter(|s| !s.is_empty()).map(parse_signal).transpose()?;
    if sig == libc::SIGKILL || stop_signal.is_none_or(|s| s == sig) {
        e.containers.update(&c.id, |c| c.state.manually_stopped = true)?;
    }
    // Subscribed before the signal so the exit cannot slip past.
    let exits = e.exits.subscribe();
    berth_shim::connect(&paths(e, &c.id).shim_state)
        .kill(sig)
        .await
        .map_err(|err| ApiError::internal(format!("cannot kill container {}: {err}", c.short_id())))?;
    super::stats::thaw_after_signal(e, &c.id).await;
    if sig == libc::SIGKILL {
        // As Docker's kill does for SIGKILL: answer once the container is down, so that
        // `docker kill x && docker rm x` and an inspect right after see it exited (137).
        // Bounded: a process stuck in the kernel must not hang the request.
        let wait = next_exit(exits, c.id.clone(), false);
        if is_running(&e.containers.get(&c.id)?) {
            let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
        }
    }
    let mut attrs = HashMap::new();
    attrs.insert("signal".to_string(), sig.to_string());
    e.events.container_with("kill", &c, attrs);
    Ok(status_only(StatusCode::NO_CONTENT))
}

/// DELETE /containers/{id}?force=&v=
pub async fn remove(e: &Arc<Engine>, key: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let force = q.bool("force")?;
    let c = e.containers.get(key)?;
    if force && c.state.status == Status::Restarting {
        // As in stop: a restart in progress finishes first. Without force a restarting
        // container is refused below, as a running one is (Docker does the same).
        let _guard = e.lifecycle_lock(&c.id).await;
        let _ = e.containers.update(&c.id, |c| {
            c.state.manually_stopped = true;
            if c.state.status == Status::Restarting {
                c.state.status = Status::Exited;
            }
        });
    }
    let c = e.containers.get(&c.id)?;
    if is_running(&c) {
        if !force {
            return Err(ApiError::Conflict(format!(
                "cannot remove container \"/{}\": container is {}: stop the container before removing or force remove",
                c.name,
                c.state.status.as_str()
            )));
        }
        let rx = e.exits.subscribe();
        e.containers.update(&c.id, |c| c.state.manually_stopped = true)?;
        let _ = berth_shim::connect(&paths(e, &c.id).shim_state).kill(libc::SIGKILL).await;
        super::stats::thaw_after_signal(e, &c.id).await;
        let _ = tokio::time::timeout(Duration::from_secs(30), next_exit(rx, c.id.clone(), false)).await;
    }
    // AutoRemove may have raced us to it.
    let Ok(c) = e.containers.get(&c.id) else { return Ok(status_only(StatusCode::NO_CONTENT)) };
    if is_running(&c) {
        return Err(ApiError::internal(format!("container {} did not stop", c.short_id())));
    }
    destroy(e, &c, q.bool("v")?).await?;
    Ok(status_only(StatusCode::NO_CONTENT))
}

/// GET /containers/{id}/logs
pub async fn logs(e: &Arc<Engine>, key: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let c = e.containers.get(key)?;
    let (stdout, stderr) = (q.bool("stdout")?, q.bool("stderr")?);
    if !stdout && !stderr {
        return Err(ApiError::bad("You must choose at least one stream"));
    }
    if super::logopts::discards(&c.host_config) {
        return Err(ApiError::NotImplemented("configured logging driver does not support reading".into()));
    }
    let time = |k: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
        match q.get(k).filter(|v| !v.is_empty() && *v != "0") {
            None => Ok(None),
            Some(v) => crate::events::parse_time_nanos(v)
                .map(|n| Some(chrono::DateTime::from_timestamp_nanos(n)))
                .ok_or_else(|| ApiError::bad(format!("invalid value for {k}: {v:?}"))),
        }
    };
    let tail = match q.get("tail").filter(|t| !t.is_empty() && *t != "all") {
        None => None,
        Some(t) => Some(t.parse::<usize>().map_err(|_| ApiError::bad(format!("invalid tail value {t:?}")))?),
    };
    let follow = q.bool("follow")? && is_running(&c);
    let opts = berth_shim::LogOptions {
        stdout,
        stderr,
        since: time("since")?,
        until: time("until")?,
        tail,
        timestamps: q.bool("timestamps")?,
        follow,
    };
    let tty = c.config.tty.unwrap_or(false);
    let p = paths(e, &c.id);
    // Batches of up to ~64 KiB (below): at most ~1 MiB queued for a client that stopped reading.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let stop_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = Arc::clone(&stop_flag);
    let exit_rx = e.exits.subscribe();
    if follow {
        let id = c.id.clone();
        tokio::spawn(async move {
            next_exit(exit_rx, id, false).await;
            stop2.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
    let timestamps = opts.timestamps;
    let log = p.log.clone();
    tokio::task::spawn_blocking(move || {
        let reader = match berth_shim::read_logs(&log, opts) {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!("reading logs: {err}");
                return;
            }
        };
        // The exit ends the follow only after a last read to the end of the log (a line written
        // just before the exit still goes out); a client that went away ends it at once, even
        // when the container prints nothing more.
        let stop3 = Arc::clone(&stop_flag);
        let gone = tx.clone();
        let reader = reader
            .stop_when(move || stop3.load(std::sync::atomic::Ordering::SeqCst))
            .cancel_when(move || gone.is_closed());
        // Records go out in batches (one channel message and one HTTP chunk per up to
        // LOG_BATCH bytes): one per record cost a task wakeup and a chunk header per line, and
        // kept `docker logs -f` of short lines far behind the writer. A batch is sent as soon
        // as the reader has nothing more at hand, so a follower still sees each line at once.
        const LOG_BATCH: usize = 64 * 1024;
        let mut reader = reader;
        let mut batch = Vec::with_capacity(LOG_BATCH + 4096);
        while let Some(entry) = reader.next() {
            let Ok(entry) = entry else { break };
            entry.write_to(&mut batch, timestamps, !tty);
            if batch.len() >= LOG_BATCH || reader.is_drained() {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(LOG_BATCH + 4096));
                if tx.blocking_send(Bytes::from(full)).is_err() {
                    return;
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(Bytes::from(batch));
        }
    });
    let s = async_stream::stream! {
        while let Some(b) = rx.recv().await {
            yield Ok::<_, std::io::Error>(b);
        }
    };
    let mut r = Response::new(stream_body(s));
    let ct = if tty { "application/vnd.docker.raw-stream" } else { "application/vnd.docker.multiplexed-stream" };
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    Ok(r)
}

/// POST /containers/{id}/attach: hijack the connection and splice it to the shim's attach stream.
/// An attach that arrives before start (what `docker run` does) is counted, and the shim holds
/// the container's first instruction until that many clients are attached, so no output is lost.
pub async fn attach(e: &Arc<Engine>, key: &str, mut req: Request<Incoming>, q: &Query) -> Result<Response<Body>, ApiError> {
    let c = settle_exit(e, e.containers.get(key)?).await;
    let (stdin, stdout, stderr) = (q.bool("stdin")?, q.bool("stdout")?, q.bool("stderr")?);
    let stream = q.bool("stream")?;
    let logs = q.bool("logs")?;
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.eq_ignore_ascii_case("tcp"))
        .unwrap_or(false);
    let tty = c.config.tty.unwrap_or(false);
    let id = c.id.clone();
    let settle = super::hijack_settle(&req);
    let detach_keys = if stdin { Some(super::parse_detach_keys(q.get("detachKeys").unwrap_or(""))?) } else { None };
    if !stream {
        // logs=1 alone: the recorded output, then the end (a plain body unless hijacked).
        let replay = if logs { replay_logs(e, &c, stdout, stderr).await } else { Vec::new() };
        if !upgrade {
            let mut r = Response::new(crate::http_util::full(replay));
            let ct = if tty { "application/vnd.docker.raw-stream" } else { "application/vnd.docker.multiplexed-stream" };
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            return Ok(r);
        }
        super::send_upgraded_then_close(hyper::upgrade::on(&mut req), settle, replay);
        return Ok(super::upgraded_response(tty));
    }
    if !upgrade {
        return Err(ApiError::bad("attach needs a connection upgrade (Upgrade: tcp)"));
    }
    // A running container is subscribed to before the 101 goes out, so a client that has its
    // answer misses nothing the container prints afterwards. With logs=1 the shim sends the
    // replay with that subscription, atomically (no gap, no repeat). A container that is not
    // running yet gets a ticket: its start waits for this attach.
    let mut ticket = None;
    let mut early = None;
    match c.state.status {
        Status::Running | Status::Paused => {
            let shim = berth_shim::connect(&paths(e, &id).shim_state);
            match shim.attach_with_logs(stdin, stdout, stderr, logs).await {
                Ok(s) => early = Some(s),
                Err(err) => {
                    // It exited a moment ago: treat it as stopped (a start may follow).
                    let now = settle_exit(e, c.clone()).await;
                    if is_running(&now) {
                        return Err(ApiError::internal(format!("cannot attach to container {}: {err}", c.short_id())));
                    }
                    ticket = Some(e.register_attach(&id));
                }
            }
        }
        // Between two runs of a restart policy: connect once the next run's shim listens.
        Status::Restarting => {}
        _ => ticket = Some(e.register_attach(&id)),
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let e2 = Arc::clone(e);
    let c2 = c.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(err) => {
                tracing::debug!("attach upgrade failed: {err}");
                if let Some(t) = ticket {
                    e2.cancel_attach(&id, t);
                }
                return;
            }
        };
        if let Some(d) = settle {
            tokio::time::sleep(d).await;
        }
        let mut client = TokioIo::new(upgraded);
        let mut remote = match early {
            Some(r) => r,
            None => {
                // docker-py/compose `attach(logs=True)` of a container that waits for this
                // attach to start: it prints nothing until then, so the log read now is complete.
                if logs {
                    let replay = replay_logs(&e2, &c2, stdout, stderr).await;
                    if client.write_all(&replay).await.is_err() {
                        if let Some(t) = ticket {
                            e2.cancel_attach(&id, t);
                        }
                        return;
                    }
                }
                if let Some(t) = ticket {
                    if !e2.wait_started(&id, t).await {
                        return;
                    }
                }
                let shim = berth_shim::connect(&paths(&e2, &id).shim_state);
                // The shim of a container that is being started may not listen yet: it binds its
                // socket right after `runtime create` and holds the container's start until this
                // attach arrives, so poll finely (a 10 ms step used to cost up to 10 ms per run).
                // The start holds the lifecycle lock until the shim reports the container
                // running: keep trying while it does (on a loaded machine or in a cold VM, mount
                // + network + `runtime create` can take well over 10 s; giving up then lost all
                // output of `docker run`), and for 10 s after that.
                let grace = Duration::from_secs(10);
                let mut deadline = std::time::Instant::now() + grace;
                let mut step = Duration::from_micros(250);
                loop {
                    match shim.attach(stdin, stdout, stderr).await {
                        Ok(s) => break s,
                        Err(berth_shim::ClientError::Connect { .. })
                            if e2.lifecycle_busy(&id) || std::time::Instant::now() < deadline =>
                        {
                            if e2.lifecycle_busy(&id) {
                                deadline = std::time::Instant::now() + grace;
                            }
                            tokio::time::sleep(step).await;
                            step = (step * 2).min(Duration::from_millis(10));
                        }
                        Err(err) => {
                            tracing::debug!(%id, "attach to shim failed: {err}");
                            return;
                        }
                    }
                }
            }
        };
        super::splice(&mut client, &mut remote, detach_keys.as_deref(), false).await;
        let _ = client.shutdown().await;
    });
    Ok(super::upgraded_response(tty))
}

/// The container's log so far, rendered as an attach stream would carry it (framed unless TTY).
async fn replay_logs(e: &Arc<Engine>, c: &Container, stdout: bool, stderr: bool) -> Vec<u8> {
    let tty = c.config.tty.unwrap_or(false);
    let log = paths(e, &c.id).log;
    let opts = berth_shim::LogOptions { stdout, stderr, since: None, until: None, tail: None, timestamps: false, follow: false };
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let Ok(reader) = berth_shim::read_logs(&log, opts) else { return out };
        for entry in reader {
            let Ok(entry) = entry else { break };
            let data = entry.render(false);
            if tty {
                out.extend_from_slice(&data);
            } else {
                out.extend_from_slice(&berth_shim::frame(entry.stream_type(), &data));
            }
        }
        out
    })
    .await
    .unwrap_or_default()
}

/// POST /containers/{id}/resize?h=&w=
pub async fn resize(e: &Arc<Engine>, key: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let c = e.containers.get(key)?;
    let h = q.i64("h")?.unwrap_or(0);
    let w = q.i64("w")?.unwrap_or(0);
    if !(0..=u16::MAX as i64).contains(&h) || !(0..=u16::MAX as i64).contains(&w) {
        return Err(ApiError::bad("invalid terminal size"));
    }
    if !is_running(&c) {
        return Err(ApiError::Conflict(format!("Container {} is not running", c.id)));
    }
    // Without a TTY there is nothing to resize: Docker answers success (moby `TestResize`).
    if !c.config.tty.unwrap_or(false) {
        return Ok(ok_json(&json!({})));
    }
    berth_shim::connect(&paths(e, &c.id).shim_state)
        .resize(h as u16, w as u16)
        .await
        .map_err(ApiError::internal)?;
    Ok(ok_json(&json!({})))
}

/// After a daemon restart: containers whose shim still runs are followed again; the others
/// get their recorded exit (live-restore). Runs before berthd serves and needs no kernel
/// network setup (bridges and nftables come later, in the background: see
/// `networks::Networks::setup_host`). Returns the containers that restart policies bring back
/// once that setup is done ([`bring_back`]).
pub async fn restore(e: &Arc<Engine>) -> Vec<String> {
    let mut later = Vec::new();
    for c in e.containers.list() {
        if !is_running(&c) || c.state.status == Status::Restarting {
            // A crash during `docker cp` of a stopped container may have left its rootfs mounted.
            let _ = Bundle { dir: paths(e, &c.id).bundle }.remove(&SysMounter);
            // Policies that keep a container up bring it back when the daemon starts.
            use bollard_stubs::models::RestartPolicyNameEnum as P;
            let policy = c.host_config.restart_policy.as_ref().and_then(|p| p.name);
            let bring_back = c.state.status == Status::Restarting
                || (c.state.status == Status::Exited
                    && matches!(policy, Some(P::ALWAYS) | Some(P::UNLESS_STOPPED))
                    && !c.state.manually_stopped);
            if bring_back {
                let _ = e.containers.update(&c.id, |c| c.state.status = Status::Exited);
                later.push(c.id.clone());
            }
            continue;
        }
        let p = paths(e, &c.id);
        if berth_shim::is_alive(&p.shim_state) {
            tracing::info!(id = %c.short_id(), "container still running; following it again");
            if c.state.status == Status::Running {
                super::stats::thaw_interrupted_commit(e, &c.id).await;
            }
            crate::networks::reattach(e, &c);
            super::health::monitor(Arc::clone(e), &c);
            watch_exit(Arc::clone(e), c.id.clone());
        } else {
            let status = berth_shim::read_exit(&p.shim_state);
            record_exit(e, &c.id, status).await;
        }
    }
    // Leftovers no running container accounts for go before anything can start a new one.
    let e2 = Arc::clone(e);
    let _ = tokio::task::spawn_blocking(move || crate::networks::reconcile(&e2)).await;
    later
}

/// Start the containers [`restore`] set aside (restart policies), after the host network
/// setup: a start on a bridge network waits for it anyway.
pub async fn bring_back(e: &Arc<Engine>, ids: Vec<String>) {
    for id in ids {
        if let Err(err) = start_container(e, &id).await {
            tracing::warn!(%id, "restarting after daemon start failed: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
        assert_eq!(parse_signal("kill").unwrap(), 9);
        assert_eq!(parse_signal("15").unwrap(), 15);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), libc::SIGUSR1);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn own_network_namespaces_get_dockers_default_sysctls() {
        let own = std::collections::HashMap::from([("net.ipv4.ping_group_range".to_string(), "1 0".to_string())]);
        let m = with_default_sysctls(None, own.clone());
        assert_eq!(m["net.ipv4.ip_unprivileged_port_start"], "0");
        assert_eq!(m["net.ipv4.ping_group_range"], "1 0", "the container's own value wins");
        assert_eq!(with_default_sysctls(Some("bridge"), Default::default())["net.ipv4.ping_group_range"], "0 2147483647");
        assert!(with_default_sysctls(Some("host"), Default::default()).is_empty());
        assert!(with_default_sysctls(Some("container:abc"), Default::default()).is_empty());
    }
}
