//! System endpoints: ping, version, info, events, df, auth.

use std::sync::Arc;

use bollard_stubs::models::{SystemAuthResponse, SystemVersion, SystemVersionComponents, SystemVersionPlatform};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use serde_json::json;

use crate::engine::{Engine, API_VERSION, ENGINE_VERSION, MIN_API_VERSION};
use crate::error::ApiError;
use crate::events::{self, parse_time_nanos};
use crate::http_util::{full, ok_json, stream_body, Body, Query};

pub fn ping(m: &Method) -> Response<Body> {
    let mut r = Response::new(if m == Method::HEAD { full(Bytes::new()) } else { full("OK") });
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    // "1" is the classic builder: the CLI then uses POST /build without BuildKit.
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    r
}

fn uname() -> nix::sys::utsname::UtsName {
    nix::sys::utsname::uname().expect("uname cannot fail")
}

fn kernel_version() -> String {
    uname().release().to_string_lossy().into_owned()
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn version(_e: &Engine) -> Response<Body> {
    let details = json!({
        "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": arch(),
        "KernelVersion": kernel_version(), "GitCommit": "", "GoVersion": "n/a (Rust)",
    });
    // The generated model types Details as an empty map; serialize it through JSON values instead.
    let mut v = serde_json::to_value(SystemVersion {
        platform: Some(SystemVersionPlatform { name: "Berth Engine".into() }),
        components: Some(vec![SystemVersionComponents {
            name: "Engine".into(),
            version: ENGINE_VERSION.into(),
            details: None,
        }]),
        version: Some(ENGINE_VERSION.into()),
        api_version: Some(API_VERSION.into()),
        min_api_version: Some(MIN_API_VERSION.into()),
        git_commit: Some(String::new()),
        go_version: Some("n/a (Rust)".into()),
        os: Some("linux".into()),
        arch: Some(arch().into()),
        kernel_version: Some(kernel_version()),
        experimental: Some(false),
        build_time: None,
    })
    .expect("serializable");
    v["Components"][0]["Details"] = details;
    ok_json(&v)
}

fn cgroup_version() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    }
}

fn mem_total() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
        })
        .unwrap_or_else(|| "Linux".into())
}

pub async fn info(e: &Arc<Engine>) -> Result<Response<Body>, ApiError> {
    let images = e.blocking(|s| s.list_images().map_err(ApiError::from)).await?.len();
    use crate::containers::store::Status;
    let all = e.containers.list();
    let running = all.iter().filter(|c| matches!(c.state.status, Status::Running | Status::Restarting)).count();
    let paused = all.iter().filter(|c| c.state.status == Status::Paused).count();
    // CIDRs only: the CLI parses these as networks. Named insecure registries go in IndexConfigs.
    let insecure = vec!["127.0.0.0/8".to_string(), "::1/128".to_string()];
    let mut index_configs = serde_json::Map::new();
    index_configs.insert(
        "docker.io".into(),
        json!({"Name": "docker.io", "Mirrors": [], "Secure": true, "Official": true}),
    );
    for r in &e.config.insecure_registries {
        index_configs.insert(r.clone(), json!({"Name": r, "Mirrors": [], "Secure": false, "Official": false}));
    }
    let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let v = json!({
        "ID": e.id,
        "Containers": all.len(), "ContainersRunning": running, "ContainersPaused": paused,
        "ContainersStopped": all.len() - running - paused,
        "Images": images,
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
        "DockerRootDir": e.config.data_root,
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "none"], "Log": ["local", "json-file", "none"]},
        "MemoryLimit": true, "SwapLimit": true, "CpuCfsPeriod": true, "CpuCfsQuota": true,
        "CPUShares": true, "CPUSet": true, "PidsLimit": true, "IPv4Forwarding": true,
        "Debug": false, "NFd": count_fds(), "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "LoggingDriver": "local",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version(),
        "NEventsListener": 0,
        "KernelVersion": kernel_version(),
        "OperatingSystem": os_name(),
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": [], "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": insecure, "IndexConfigs": index_configs, "Mirrors": []
        },
        "NCPU": ncpu,
        "MemTotal": mem_total(),
        "GenericResources": null,
        "HttpProxy": "", "HttpsProxy": "", "NoProxy": "",
        "Name": uname().nodename().to_string_lossy(),
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": ENGINE_VERSION,
        "Runtimes": {},
        "DefaultRuntime": "",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "SecurityOptions": ["name=seccomp,profile=builtin", "name=cgroupns"],
        "Warnings": []
    });
    Ok(ok_json(&v))
}

fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// GET /events: replay `since`, then follow until `until` (or forever), filtered.
pub fn events(e: &Arc<Engine>, q: &Query) -> Result<Response<Body>, ApiError> {
    let filters = q.filters()?;
    filters.only(&["type", "event", "image", "container", "label", "scope", "network", "volume", "daemon"])?;
    let parse = |k: &str| -> Result<Option<i64>, ApiError> {
        match q.get(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => parse_time_nanos(v)
                .map(Some)
                .ok_or_else(|| ApiError::bad(format!("invalid value for {k}: {v:?}"))),
        }
    };
    let since = parse("since")?;
    let until = parse("until")?;
    let (past, mut rx) = e.events.subscribe(since, until);
    let mut stopping = e.shutdown.subscribe();
    let s = async_stream::stream! {
        for ev in past.into_iter().filter(|ev| events::matches(&filters, ev)) {
            yield Ok(line(&events::wire(&ev)));
        }
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        if let Some(u) = until {
            if u <= now { return; }
        }
        loop {
            let deadline = until.map(|u| {
                let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
                std::time::Duration::from_nanos((u - now).max(0) as u64)
            });
            let recv = async {
                match deadline {
                    Some(d) => tokio::time::timeout(d, rx.recv()).await.ok(),
                    None => Some(rx.recv().await),
                }
            };
            let next = tokio::select! {
                r = recv => match r {
                    Some(r) => r,
                    None => return,
                },
                // The daemon is stopping: end the stream instead of holding shutdown up.
                _ = stopping.wait_for(|s| *s) => return,
            };
            match next {
                Ok(ev) => {
                    if events::matches(&filters, &ev) {
                        yield Ok(line(&events::wire(&ev)));
                    }
                }
                // A stalled reader lost events; carry on with what comes next.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!("events follower lagged by {n}");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    };
    let mut r = Response::new(stream_body(s));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

fn line<T: serde::Serialize>(v: &T) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

pub async fn df(e: &Arc<Engine>) -> Result<Response<Body>, ApiError> {
    let summaries = crate::images::summaries(e).await?;
    let layers_size: i64 = summaries.iter().map(|s| s.size).sum();
    let v = json!({
        "LayersSize": layers_size,
        "Images": summaries,
        "Containers": e.containers.list().iter().map(crate::containers::summary).collect::<Vec<_>>(),
        "Volumes": crate::volumes::df(e),
        "BuildCache": [],
    });
    Ok(ok_json(&v))
}

/// POST /auth (`docker login`): check the credentials against the registry.
pub async fn auth(e: &Arc<Engine>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    #[derive(serde::Deserialize, Default)]
    struct AuthBody {
        #[serde(default)]
        username: String,
        #[serde(default)]
        password: String,
        #[serde(default, rename = "serveraddress")]
        server_address: String,
        #[serde(default, rename = "identitytoken")]
        identity_token: String,
    }
    let body: AuthBody = crate::images::read_json(req, 64 * 1024).await?;
    let registry = registry_host(&body.server_address);
    let creds = if !body.identity_token.is_empty() {
        berth_registry::Auth::IdentityToken(body.identity_token)
    } else {
        berth_registry::Auth::Basic { username: body.username, password: body.password }
    };
    e.registry.login(&registry, &creds).await.map_err(|err| match err {
        berth_registry::RegistryError::Unauthorized(m) => {
            ApiError::Unauthorized(format!("login attempt to {registry} failed: {m}"))
        }
        other => ApiError::from(other),
    })?;
    Ok(ok_json(&SystemAuthResponse { status: "Login Succeeded".into(), identity_token: Some(String::new()) }))
}

/// The CLI's server address ("https://index.docker.io/v1/", "127.0.0.1:5000", "http://x:1") as
/// the registry host our client keys on.
pub fn registry_host(addr: &str) -> String {
    let a = addr.trim();
    let a = a.strip_prefix("https://").or_else(|| a.strip_prefix("http://")).unwrap_or(a);
    let host = a.split('/').next().unwrap_or("");
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts() {
        assert_eq!(registry_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(registry_host("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(registry_host(""), "docker.io");
    }
}

/// Managed plugins (`/plugins...`): Berth has none (its volume, network and log drivers are built
/// in), so it answers as Docker does with no plugin installed: the list is empty (clients list
/// plugins before they clean up, e.g. moby's own test environment, and fail on a 404), a named
/// plugin is not found, and installing one is refused as not implemented.
pub fn plugins(m: &Method, path: &str) -> Result<Response<Body>, ApiError> {
    let rest = path.strip_prefix("/plugins").unwrap_or(path);
    match (m, rest) {
        (&Method::GET, "" | "/") => Ok(ok_json(&json!([]))),
        (_, "/pull" | "/create" | "/privileges") => {
            Err(ApiError::NotImplemented("managed plugins are not supported by Berth (its drivers are built in)".into()))
        }
        (m, r) => {
            // Names may hold slashes (`vieux/sshfs:latest`); every route but DELETE ends in an
            // action (`/json`, `/enable`, `/set`, ...).
            let r = r.trim_start_matches('/');
            let name = if m == Method::DELETE { r } else { r.rsplit_once('/').map_or(r, |(n, _)| n) };
            Err(ApiError::NotFound(format!("plugin {name:?} not found")))
        }
    }
}

/// True for `/plugins` and the paths under it.
pub fn is_plugins_path(path: &str) -> bool {
    path == "/plugins" || path.starts_with("/plugins/")
}

/// Swarm endpoints (`/swarm`, `/nodes`, `/services`, `/tasks`, `/secrets`, `/configs`): Berth is
/// a single-node engine without swarm mode, so it answers as Docker does on a node that is not
/// in a swarm (503), which clients already handle: `docker node ls` prints the reason, and
/// docker-py's `leave_swarm(force=True)` treats it as "nothing to leave".
pub fn swarm_unavailable(path: &str) -> ApiError {
    if path == "/swarm/leave" {
        return ApiError::Unavailable("This node is not part of a swarm".into());
    }
    if path == "/swarm/init" || path == "/swarm/join" {
        return ApiError::NotImplemented("swarm mode is not supported by Berth (a single-node engine)".into());
    }
    ApiError::Unavailable("This node is not a swarm manager: swarm mode is not supported by Berth (a single-node engine)".into())
}

/// True for the paths of the swarm API.
pub fn is_swarm_path(path: &str) -> bool {
    ["/swarm", "/nodes", "/services", "/tasks", "/secrets", "/configs"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
}
