//! `docker stats`, `docker top`, `docker pause`/`unpause`, `docker container prune`.
//!
//! Resource numbers come straight from the container's cgroup (runc puts every container process
//! in `cgroupsPath`), read through [`CgroupReader`] so cgroup v1 (this host, hybrid layout) and
//! v2 (the VM) share the Docker-shaped response. The kernel's file formats are small and stable,
//! so they are parsed here by hand instead of pulling in a cgroup crate for read-only access.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_runtime::runc::{OciRuntime, Runc};
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;
use serde_json::json;

use super::store::{Container, Status};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::http_util::{label_matches, ok_json, status_only, stream_body, Body, Query};

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("parsing {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

impl From<StatsError> for ApiError {
    fn from(e: StatsError) -> Self {
        ApiError::internal(e)
    }
}

fn read(path: &Path) -> Result<String, StatsError> {
    std::fs::read_to_string(path).map_err(|source| StatsError::Io { path: path.to_path_buf(), source })
}

// ---------------------------------------------------------------------------------------------
// Parsers for kernel files (pure, unit-tested against fixture strings).

/// "key value" lines (memory.stat, cpu.stat, cpuacct.stat).
pub fn parse_flat_keyed(s: &str) -> BTreeMap<String, u64> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

/// A single number, or `max` (v2 for "no limit") as None.
pub fn parse_single(s: &str) -> Option<u64> {
    let t = s.trim();
    if t == "max" {
        return None;
    }
    t.parse().ok()
}

/// cpuacct.usage_percpu: space-separated nanoseconds per CPU.
pub fn parse_percpu(s: &str) -> Vec<u64> {
    s.split_whitespace().filter_map(|x| x.parse().ok()).collect()
}

/// One entry of Docker's blkio_stats lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

/// v1 blkio.throttle.io_service_bytes: "8:0 Read 4096" lines plus a trailing "Total N".
pub fn parse_v1_blkio(s: &str) -> Vec<BlkioEntry> {
    s.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [dev, op, value] = f.as_slice() else { return None };
            let (maj, min) = dev.split_once(':')?;
            Some(BlkioEntry { major: maj.parse().ok()?, minor: min.parse().ok()?, op: op.to_string(), value: value.parse().ok()? })
        })
        .collect()
}

/// v2 io.stat: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0". Docker maps rbytes/wbytes
/// to io_service_bytes_recursive ops "read"/"write", and rios/wios to io_serviced_recursive.
pub fn parse_v2_io_stat(s: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let mut bytes = Vec::new();
    let mut ios = Vec::new();
    for l in s.lines() {
        let mut it = l.split_whitespace();
        let Some((maj, min)) = it.next().and_then(|d| d.split_once(':')) else { continue };
        let (Ok(major), Ok(minor)) = (maj.parse::<u64>(), min.parse::<u64>()) else { continue };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else { continue };
            let Ok(value) = v.parse::<u64>() else { continue };
            let (list, op) = match k {
                "rbytes" => (&mut bytes, "read"),
                "wbytes" => (&mut bytes, "write"),
                "rios" => (&mut ios, "read"),
                "wios" => (&mut ios, "write"),
                _ => continue,
            };
            list.push(BlkioEntry { major, minor, op: op.into(), value });
        }
    }
    (bytes, ios)
}

/// Docker's `system_cpu_usage`: the first 7 fields of /proc/stat's aggregate "cpu" line (user
/// nice system idle iowait irq softirq), in clock ticks converted to nanoseconds; plus the
/// number of online CPUs (the "cpuN" lines).
pub fn parse_proc_stat(s: &str, clk_tck: u64) -> Option<(u64, u32)> {
    let mut total = None;
    let mut cpus = 0;
    for l in s.lines() {
        if let Some(rest) = l.strip_prefix("cpu ") {
            let ticks: u64 = rest.split_whitespace().take(7).filter_map(|x| x.parse::<u64>().ok()).sum();
            total = Some(ticks.saturating_mul(1_000_000_000) / clk_tck.max(1));
        } else if l.starts_with("cpu") && l.as_bytes().get(3).map(u8::is_ascii_digit).unwrap_or(false) {
            cpus += 1;
        }
    }
    total.map(|t| (t, cpus))
}

/// One interface of Docker's `networks` map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// /proc/<pid>/net/dev: two header lines, then "iface: rx(8 fields) tx(8 fields)".
pub fn parse_net_dev(s: &str) -> BTreeMap<String, NetStats> {
    let mut out = BTreeMap::new();
    for l in s.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else { continue };
        let v: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if v.len() < 16 {
            continue;
        }
        out.insert(
            name.trim().to_string(),
            NetStats {
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            },
        );
    }
    out
}

/// The fields of /proc/<pid>/stat that `ps -ef` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub comm: String,
    pub ppid: i32,
    pub tty_nr: u32,
    pub utime: u64,
    pub stime: u64,
    /// Clock ticks after boot.
    pub starttime: u64,
}

/// /proc/<pid>/stat. The command name is in parentheses and may itself contain spaces and
/// parentheses, so the fields are split after the *last* ')'.
pub fn parse_proc_pid_stat(s: &str) -> Option<ProcStat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let pid = s[..open].trim().parse().ok()?;
    let comm = s[open + 1..close].to_string();
    // Fields from 3 (state) on; field N is at index N-3.
    let f: Vec<&str> = s[close + 1..].split_whitespace().collect();
    let at = |n: usize| f.get(n - 3).copied();
    Some(ProcStat {
        pid,
        comm,
        ppid: at(4)?.parse().ok()?,
        tty_nr: at(7)?.parse().ok()?,
        utime: at(14)?.parse().ok()?,
        stime: at(15)?.parse().ok()?,
        starttime: at(22)?.parse().ok()?,
    })
}

/// The effective UID from /proc/<pid>/status ("Uid: real effective saved fs").
pub fn parse_status_euid(s: &str) -> Option<u32> {
    s.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|r| r.split_whitespace().nth(1)).and_then(|x| x.parse().ok())
}

/// A cgroup v1 controller's mount point from /proc/self/mountinfo: the `cgroup` filesystem
/// whose super options name the controller (e.g. "rw,cpu,cpuacct").
pub fn v1_mount_point(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut post = post.split_whitespace();
        if post.next()? != "cgroup" {
            return None;
        }
        let opts = post.nth(1)?;
        if !opts.split(',').any(|o| o == controller) {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

// ---------------------------------------------------------------------------------------------
// Cgroup readers.

/// What one read of a container's cgroup gives, in Docker's units (bytes, nanoseconds).
#[derive(Debug, Clone, Default)]
pub struct CgroupSample {
    pub memory_usage: u64,
    pub memory_max_usage: Option<u64>,
    pub memory_failcnt: Option<u64>,
    /// None when unlimited.
    pub memory_limit: Option<u64>,
    pub memory_stat: BTreeMap<String, u64>,
    pub cpu_total: u64,
    pub cpu_percpu: Option<Vec<u64>>,
    pub cpu_kernel: u64,
    pub cpu_user: u64,
    pub throttle_periods: u64,
    pub throttled_periods: u64,
    pub throttled_time: u64,
    pub pids_current: u64,
    pub pids_limit: Option<u64>,
    pub io_service_bytes: Vec<BlkioEntry>,
    pub io_serviced: Vec<BlkioEntry>,
}

/// Read-only view of one container's cgroup.
pub trait CgroupReader: Send + Sync {
    /// Everything `docker stats` shows. Missing files (a controller not enabled) read as zero.
    fn sample(&self) -> CgroupSample;
    /// The PIDs in the cgroup (host PID namespace).
    fn procs(&self) -> Result<Vec<i32>, StatsError>;
}

fn opt_read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

fn parse_procs(path: &Path) -> Result<Vec<i32>, StatsError> {
    Ok(read(path)?.split_whitespace().filter_map(|x| x.parse().ok()).collect())
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// cgroup v1: one directory per controller hierarchy.
pub struct V1Cgroup {
    pub memory: PathBuf,
    pub cpu: PathBuf,
    pub cpuacct: PathBuf,
    pub pids: PathBuf,
    pub blkio: PathBuf,
}

impl V1Cgroup {
    pub fn new(cgroup_path: &str) -> V1Cgroup {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let rel = cgroup_path.trim_start_matches('/');
        let dir = |c: &str| v1_mount_point(&mountinfo, c).unwrap_or_else(|| Path::new("/sys/fs/cgroup").join(c)).join(rel);
        V1Cgroup { memory: dir("memory"), cpu: dir("cpu"), cpuacct: dir("cpuacct"), pids: dir("pids"), blkio: dir("blkio") }
    }
}

/// v1 reports "no limit" as a huge page-rounded number near i64::MAX.
const V1_UNLIMITED: u64 = 1 << 62;

impl CgroupReader for V1Cgroup {
    fn sample(&self) -> CgroupSample {
        let num = |d: &Path, f: &str| opt_read(&d.join(f)).and_then(|s| parse_single(&s));
        let keyed = |d: &Path, f: &str| opt_read(&d.join(f)).map(|s| parse_flat_keyed(&s)).unwrap_or_default();
        let acct = keyed(&self.cpuacct, "cpuacct.stat");
        let ns_per_tick = 1_000_000_000 / clk_tck();
        let throttle = keyed(&self.cpu, "cpu.stat");
        let g = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
        CgroupSample {
            memory_usage: num(&self.memory, "memory.usage_in_bytes").unwrap_or(0),
            memory_max_usage: num(&self.memory, "memory.max_usage_in_bytes"),
            memory_failcnt: num(&self.memory, "memory.failcnt"),
            memory_limit: num(&self.memory, "memory.limit_in_bytes").filter(|l| *l < V1_UNLIMITED),
            memory_stat: keyed(&self.memory, "memory.stat"),
            cpu_total: num(&self.cpuacct, "cpuacct.usage").unwrap_or(0),
            cpu_percpu: opt_read(&self.cpuacct.join("cpuacct.usage_percpu")).map(|s| parse_percpu(&s)),
            cpu_kernel: g(&acct, "system") * ns_per_tick,
            cpu_user: g(&acct, "user") * ns_per_tick,
            throttle_periods: g(&throttle, "nr_periods"),
            throttled_periods: g(&throttle, "nr_throttled"),
            throttled_time: g(&throttle, "throttled_time"),
            pids_current: num(&self.pids, "pids.current").unwrap_or(0),
            pids_limit: opt_read(&self.pids.join("pids.max")).and_then(|s| parse_single(&s)),
            io_service_bytes: opt_read(&self.blkio.join("blkio.throttle.io_service_bytes"))
                .map(|s| parse_v1_blkio(&s))
                .unwrap_or_default(),
            io_serviced: opt_read(&self.blkio.join("blkio.throttle.io_serviced")).map(|s| parse_v1_blkio(&s)).unwrap_or_default(),
        }
    }

    fn procs(&self) -> Result<Vec<i32>, StatsError> {
        parse_procs(&self.pids.join("cgroup.procs")).or_else(|_| parse_procs(&self.memory.join("cgroup.procs")))
    }
}

/// cgroup v2: one directory for every controller.
pub struct V2Cgroup {
    pub dir: PathBuf,
}

impl CgroupReader for V2Cgroup {
    fn sample(&self) -> CgroupSample {
        let num = |f: &str| opt_read(&self.dir.join(f)).and_then(|s| parse_single(&s));
        let cpu = opt_read(&self.dir.join("cpu.stat")).map(|s| parse_flat_keyed(&s)).unwrap_or_default();
        let g = |k: &str| cpu.get(k).copied().unwrap_or(0);
        let (bytes, ios) = opt_read(&self.dir.join("io.stat")).map(|s| parse_v2_io_stat(&s)).unwrap_or_default();
        CgroupSample {
            memory_usage: num("memory.current").unwrap_or(0),
            memory_max_usage: None,
            memory_failcnt: None,
            memory_limit: num("memory.max"),
            memory_stat: opt_read(&self.dir.join("memory.stat")).map(|s| parse_flat_keyed(&s)).unwrap_or_default(),
            cpu_total: g("usage_usec") * 1000,
            cpu_percpu: None,
            cpu_kernel: g("system_usec") * 1000,
            cpu_user: g("user_usec") * 1000,
            throttle_periods: g("nr_periods"),
            throttled_periods: g("nr_throttled"),
            throttled_time: g("throttled_usec") * 1000,
            pids_current: num("pids.current").unwrap_or(0),
            pids_limit: num("pids.max"),
            io_service_bytes: bytes,
            io_serviced: ios,
        }
    }

    fn procs(&self) -> Result<Vec<i32>, StatsError> {
        parse_procs(&self.dir.join("cgroup.procs"))
    }
}

/// The reader for a container's cgroup on this host: v2 when /sys/fs/cgroup is the unified
/// hierarchy, else v1.
pub fn cgroup_for(c: &Container) -> Box<dyn CgroupReader> {
    let path = berth_runtime::spec::cgroups_path(c.host_config.cgroup_parent.as_deref().unwrap_or(""), &c.id);
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Box::new(V2Cgroup { dir: Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')) })
    } else {
        Box::new(V1Cgroup::new(&path))
    }
}

// ---------------------------------------------------------------------------------------------
// docker stats

#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUsage {
    pub total_usage: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percpu_usage: Option<Vec<u64>>,
    pub usage_in_kernelmode: u64,
    pub usage_in_usermode: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Throttling {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_time: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuStats {
    pub cpu_usage: CpuUsage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_cpu_usage: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online_cpus: Option<u32>,
    pub throttling_data: Throttling,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryStats {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_usage: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<BTreeMap<String, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failcnt: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PidsStats {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BlkioStats {
    pub io_service_bytes_recursive: Option<Vec<BlkioEntry>>,
    pub io_serviced_recursive: Option<Vec<BlkioEntry>>,
    pub io_queue_recursive: Option<Vec<BlkioEntry>>,
    pub io_service_time_recursive: Option<Vec<BlkioEntry>>,
    pub io_wait_time_recursive: Option<Vec<BlkioEntry>>,
    pub io_merged_recursive: Option<Vec<BlkioEntry>>,
    pub io_time_recursive: Option<Vec<BlkioEntry>>,
    pub sectors_recursive: Option<Vec<BlkioEntry>>,
}

/// Docker's stats object (API 1.47 `ContainerStatsResponse`; the pinned bollard-stubs has no
/// model for it, so it is declared here with Docker's field names).
#[derive(Debug, Clone, Serialize)]
pub struct StatsJson {
    pub name: String,
    pub id: String,
    pub read: String,
    pub preread: String,
    pub pids_stats: PidsStats,
    pub blkio_stats: BlkioStats,
    pub num_procs: u32,
    pub storage_stats: serde_json::Value,
    pub cpu_stats: CpuStats,
    pub precpu_stats: CpuStats,
    pub memory_stats: MemoryStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub networks: Option<BTreeMap<String, NetStats>>,
}

/// Go's zero time, what Docker sends for a `read`/`preread` that did not happen.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl StatsJson {
    fn empty(c: &Container) -> StatsJson {
        StatsJson {
            name: format!("/{}", c.name),
            id: c.id.clone(),
            read: ZERO_TIME.into(),
            preread: ZERO_TIME.into(),
            pids_stats: PidsStats::default(),
            blkio_stats: BlkioStats::default(),
            num_procs: 0,
            storage_stats: json!({}),
            cpu_stats: CpuStats::default(),
            precpu_stats: CpuStats::default(),
            memory_stats: MemoryStats::default(),
            networks: None,
        }
    }
}

fn host_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = s.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// One sample of a running container. Blocking (file reads).
fn sample(c: &Container, cg: &dyn CgroupReader) -> StatsJson {
    let s = cg.sample();
    let mut out = StatsJson::empty(c);
    out.read = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let (system, cpus) = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|st| parse_proc_stat(&st, clk_tck()))
        .map(|(t, n)| (Some(t), Some(n)))
        .unwrap_or((None, None));
    out.cpu_stats = CpuStats {
        cpu_usage: CpuUsage {
            total_usage: s.cpu_total,
            percpu_usage: s.cpu_percpu,
            usage_in_kernelmode: s.cpu_kernel,
            usage_in_usermode: s.cpu_user,
        },
        system_cpu_usage: system,
        online_cpus: cpus,
        throttling_data: Throttling {
            periods: s.throttle_periods,
            throttled_periods: s.throttled_periods,
            throttled_time: s.throttled_time,
        },
    };
    // Like Docker, an unlimited container shows the host's memory as its limit.
    let host = host_memory();
    let limit = match (s.memory_limit, host) {
        (Some(l), Some(h)) => Some(l.min(h)),
        (l, h) => l.or(h),
    };
    out.memory_stats = MemoryStats {
        usage: Some(s.memory_usage),
        max_usage: s.memory_max_usage,
        stats: Some(s.memory_stat),
        failcnt: s.memory_failcnt,
        limit,
    };
    out.pids_stats = PidsStats { current: Some(s.pids_current), limit: s.pids_limit };
    out.blkio_stats.io_service_bytes_recursive = Some(s.io_service_bytes);
    out.blkio_stats.io_serviced_recursive = Some(s.io_serviced);
    if c.state.pid > 0 && c.host_config.network_mode.as_deref() != Some("host") {
        out.networks = std::fs::read_to_string(format!("/proc/{}/net/dev", c.state.pid)).ok().map(|s| parse_net_dev(&s));
    }
    out
}

fn running(c: &Container) -> bool {
    matches!(c.state.status, Status::Running | Status::Paused)
}

/// GET /containers/{id}/stats?stream=&one-shot=
pub async fn stats(e: &Arc<Engine>, key: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let c = e.containers.get(key)?;
    let stream = match q.get("stream") {
        None | Some("") => true,
        Some(_) => q.bool("stream")?,
    };
    let one_shot = q.bool("one-shot")?;
    if one_shot && stream {
        return Err(ApiError::bad("cannot have stream=true and one-shot=true"));
    }
    let e = Arc::clone(e);
    let id = c.id.clone();
    let take = move |prev: Option<StatsJson>| {
        let e = Arc::clone(&e);
        let id = id.clone();
        async move {
            let c = e.containers.get(&id).ok()?;
            if !running(&c) {
                return None;
            }
            let mut s = tokio::task::spawn_blocking(move || sample(&c, cgroup_for(&c).as_ref())).await.ok()?;
            if let Some(p) = prev {
                s.precpu_stats = p.cpu_stats;
                s.preread = p.read;
            }
            Some(s)
        }
    };
    let line = |s: &StatsJson| {
        let mut b = serde_json::to_vec(s).unwrap_or_default();
        b.push(b'\n');
        Bytes::from(b)
    };
    let body = if !stream {
        let first = take(None).await;
        let out = match first {
            None => StatsJson::empty(&c),
            Some(f) if one_shot => f,
            Some(f) => {
                // Docker's non-streaming answer has a precpu sample from a second earlier, so
                // CPU % can be computed from one response.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let fallback = f.clone();
                take(Some(f)).await.unwrap_or(fallback)
            }
        };
        crate::http_util::full(line(&out))
    } else {
        let c0 = c.clone();
        stream_body(async_stream::stream! {
            let mut prev: Option<StatsJson> = None;
            loop {
                match take(prev.take()).await {
                    Some(s) => {
                        yield Ok::<_, std::io::Error>(line(&s));
                        prev = Some(s);
                    }
                    None => {
                        // Stopped (or never started): one zeroed object, as Docker sends, then end.
                        yield Ok(line(&StatsJson::empty(&c0)));
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// docker top

/// uid -> user name from an /etc/passwd text (the host's: Docker's top shows host names).
fn passwd_names(passwd: &str) -> HashMap<u32, String> {
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.get(2)?.parse().ok()?, f.first()?.to_string()))
        })
        .collect()
}

/// `ps`'s TTY column from the kernel's tty_nr (major in bits 8-15 and 20-31, minor in 0-7 and 12-19).
fn tty_name(tty_nr: u32) -> String {
    if tty_nr == 0 {
        return "?".into();
    }
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    match major {
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        _ => format!("{major}:{minor}"),
    }
}

/// `ps`'s cumulative TIME: [DD-]HH:MM:SS.
fn cpu_time(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// `ps`'s STIME: HH:MM today, MonDD this year, else the year.
fn start_time(start: chrono::DateTime<chrono::Local>, now: chrono::DateTime<chrono::Local>) -> String {
    if start.date_naive() == now.date_naive() {
        start.format("%H:%M").to_string()
    } else if start.format("%Y").to_string() == now.format("%Y").to_string() {
        start.format("%b%d").to_string()
    } else {
        start.format("%Y").to_string()
    }
}

/// Inputs `ps -ef` needs besides the process itself.
struct Clock {
    tck: u64,
    boot_time: i64,
    uptime: f64,
    now: chrono::DateTime<chrono::Local>,
}

fn ps_ef_row(p: &ProcStat, uid: Option<u32>, cmdline: &[u8], names: &HashMap<u32, String>, clk: &Clock) -> Vec<String> {
    let user = match uid {
        Some(u) => names.get(&u).cloned().unwrap_or_else(|| u.to_string()),
        None => "?".into(),
    };
    let cpu_ticks = p.utime + p.stime;
    let started = p.starttime as f64 / clk.tck as f64;
    let elapsed = (clk.uptime - started).max(0.0);
    let c = if elapsed > 0.0 { ((cpu_ticks as f64 / clk.tck as f64) * 100.0 / elapsed) as u64 } else { 0 };
    let start = chrono::DateTime::from_timestamp(clk.boot_time + started as i64, 0)
        .map(|t| start_time(t.with_timezone(&chrono::Local), clk.now))
        .unwrap_or_else(|| "?".into());
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let cmd = if args.is_empty() { format!("[{}]", p.comm) } else { args.join(" ") };
    vec![user, p.pid.to_string(), p.ppid.to_string(), c.to_string(), start, tty_name(p.tty_nr), cpu_time(cpu_ticks / clk.tck), cmd]
}

/// `ps -ef` for the given host PIDs, from /proc. Blocking.
fn ps_ef(pids: &[i32]) -> serde_json::Value {
    let names = passwd_names(&std::fs::read_to_string("/etc/passwd").unwrap_or_default());
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let boot_time = stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|b| b.trim().parse().ok()).unwrap_or(0);
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0);
    let clk = Clock { tck: clk_tck(), boot_time, uptime, now: chrono::Local::now() };
    let mut rows = Vec::new();
    for pid in pids {
        let base = PathBuf::from(format!("/proc/{pid}"));
        // A process may exit between listing and reading: skip it.
        let Some(p) = std::fs::read_to_string(base.join("stat")).ok().and_then(|s| parse_proc_pid_stat(&s)) else { continue };
        let uid = std::fs::read_to_string(base.join("status")).ok().and_then(|s| parse_status_euid(&s));
        let cmdline = std::fs::read(base.join("cmdline")).unwrap_or_default();
        rows.push(ps_ef_row(&p, uid, &cmdline, &names, &clk));
    }
    json!({"Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], "Processes": rows})
}

/// Docker's top for other `ps_args`: run the host's `ps` with them and keep the rows whose PID
/// column is one of the container's processes.
pub fn filter_ps_output(out: &str, pids: &[i32]) -> Result<serde_json::Value, ApiError> {
    let mut lines = out.lines();
    let header = lines.next().ok_or_else(|| ApiError::internal("ps printed nothing"))?;
    let titles: Vec<&str> = header.split_whitespace().collect();
    let pid_col = titles
        .iter()
        .position(|t| *t == "PID")
        .ok_or_else(|| ApiError::bad("Couldn't find PID field in ps output"))?;
    let mut rows = Vec::new();
    for l in lines {
        let fields: Vec<&str> = l.split_whitespace().collect();
        let Some(pid) = fields.get(pid_col).and_then(|p| p.parse::<i32>().ok()) else { continue };
        if !pids.contains(&pid) {
            continue;
        }
        // The last title (the command) takes the rest of the line.
        let n = titles.len();
        let mut row: Vec<String> = fields.iter().take(n - 1).map(|s| s.to_string()).collect();
        if fields.len() >= n {
            row.push(fields[n - 1..].join(" "));
        }
        rows.push(row);
    }
    Ok(json!({"Titles": titles, "Processes": rows}))
}

/// GET /containers/{id}/top?ps_args=
pub async fn top(e: &Arc<Engine>, key: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let c = e.containers.get(key)?;
    if !running(&c) {
        return Err(ApiError::Conflict(format!("Container {} is not running", c.id)));
    }
    let args = q.get("ps_args").map(str::trim).filter(|a| !a.is_empty()).unwrap_or("-ef").to_string();
    let v = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, ApiError> {
        let pids = cgroup_for(&c).procs()?;
        if args == "-ef" {
            return Ok(ps_ef(&pids));
        }
        let out = std::process::Command::new("ps")
            .args(args.split_whitespace())
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|err| ApiError::internal(format!("running ps: {err}")))?;
        if !out.status.success() {
            return Err(ApiError::internal(format!(
                "ps: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        filter_ps_output(&String::from_utf8_lossy(&out.stdout), &pids)
    })
    .await??;
    Ok(ok_json(&v))
}

// ---------------------------------------------------------------------------------------------
// docker pause / unpause

/// The runtime CLI the container's shim was started with (same binary, same --root).
fn runc(e: &Engine, id: &str) -> Runc {
    let (rt, root) = super::lifecycle::runtime_of(e, id);
    Runc::new(rt, root)
}

async fn freeze(e: &Arc<Engine>, key: &str, pause: bool) -> Result<Response<Body>, ApiError> {
    let id = e.containers.get(key)?.id;
    let _guard = e.lifecycle_lock(&id).await;
    let c = e.containers.get(&id)?;
    match (&c.state.status, pause) {
        (Status::Paused, true) => return Err(ApiError::Conflict(format!("Container {id} is already paused"))),
        (Status::Running, true) | (Status::Paused, false) => {}
        (_, true) => return Err(ApiError::Conflict(format!("Container {id} is not running"))),
        (_, false) => return Err(ApiError::Conflict(format!("Container {id} is not paused"))),
    }
    let rt = runc(e, &id);
    let id2 = id.clone();
    tokio::task::spawn_blocking(move || if pause { rt.pause(&id2) } else { rt.resume(&id2) })
        .await?
        .map_err(|err| ApiError::internal(format!("Cannot {} container {id}: {err}", if pause { "pause" } else { "unpause" })))?;
    let c = e.containers.update(&id, |c| {
        c.state.status = if pause { Status::Paused } else { Status::Running };
        c.clone()
    })?;
    e.events.container(if pause { "pause" } else { "unpause" }, &c);
    Ok(status_only(StatusCode::NO_CONTENT))
}

/// Freeze (or thaw) a running container for the duration of a `docker commit`, without
/// recording it as paused: the pause is the commit's, not the user's. So a crash of the daemon
/// mid-commit leaves a record that says running, and [`thaw_interrupted_commit`] at the next
/// start thaws the container instead of leaving it frozen for good. Emits Docker's pause and
/// unpause events.
pub(crate) async fn freeze_for_commit(e: &Arc<Engine>, id: &str, freeze: bool) -> Result<(), ApiError> {
    let _guard = e.lifecycle_lock(id).await;
    let c = e.containers.get(id)?;
    if c.state.status != Status::Running {
        return Err(ApiError::Conflict(format!("Container {id} is not running")));
    }
    let rt = runc(e, id);
    let id2 = id.to_string();
    tokio::task::spawn_blocking(move || if freeze { rt.pause(&id2) } else { rt.resume(&id2) })
        .await?
        .map_err(|err| ApiError::internal(format!("Cannot {} container {id}: {err}", if freeze { "pause" } else { "unpause" })))?;
    e.events.container(if freeze { "pause" } else { "unpause" }, &c);
    Ok(())
}

/// At daemon start, for a container recorded as running whose runtime says it is frozen: a
/// commit was interrupted between its freeze and thaw (see [`freeze_for_commit`]). Thaw it.
pub(crate) async fn thaw_interrupted_commit(e: &Arc<Engine>, id: &str) {
    let rt = runc(e, id);
    let id2 = id.to_string();
    let r = tokio::task::spawn_blocking(move || {
        let st = rt.state(&id2)?;
        if st.status == berth_runtime::runc::Status::Paused {
            rt.resume(&id2).map(|()| true)
        } else {
            Ok(false)
        }
    })
    .await;
    match r {
        Ok(Ok(true)) => tracing::warn!(%id, "thawed a container left frozen by an interrupted commit"),
        Ok(Ok(false)) => {}
        Ok(Err(err)) => tracing::debug!(%id, "runtime state at restore: {err}"),
        Err(err) => tracing::debug!(%id, "{err}"),
    }
}

/// A frozen process cannot act on a signal, so stop/kill/rm of a paused container thaw it right
/// after signalling, as Docker does. Best effort: the container may already be gone.
pub(crate) async fn thaw_after_signal(e: &Arc<Engine>, id: &str) {
    let Ok(c) = e.containers.get(id) else { return };
    if c.state.status != Status::Paused {
        return;
    }
    let rt = runc(e, id);
    let id2 = id.to_string();
    match tokio::task::spawn_blocking(move || rt.resume(&id2)).await {
        Ok(Ok(())) => {
            let _ = e.containers.update(id, |c| {
                if c.state.status == Status::Paused {
                    c.state.status = Status::Running;
                }
            });
        }
        Ok(Err(err)) => tracing::debug!(%id, "resuming a paused container after a signal: {err}"),
        Err(err) => tracing::debug!(%id, "{err}"),
    }
}

/// POST /containers/{id}/pause
pub async fn pause(e: &Arc<Engine>, key: &str) -> Result<Response<Body>, ApiError> {
    freeze(e, key, true).await
}

/// POST /containers/{id}/unpause
pub async fn unpause(e: &Arc<Engine>, key: &str) -> Result<Response<Body>, ApiError> {
    freeze(e, key, false).await
}

// ---------------------------------------------------------------------------------------------
// docker container prune

/// Go's duration syntax as Docker's `until=10m` / `24h` uses it ("1h30m", "1.5h", "90s").
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|ch: char| !(ch.is_ascii_digit() || ch == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|ch: char| ch.is_ascii_digit() || ch == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    Some(Duration::from_secs_f64(total))
}

/// `until=` as a unix time in nanoseconds: a timestamp, or a duration before `now`.
fn until_nanos(v: &str, now: chrono::DateTime<chrono::Utc>) -> Option<i64> {
    if let Some(d) = parse_go_duration(v) {
        return (now - chrono::Duration::from_std(d).ok()?).timestamp_nanos_opt();
    }
    crate::events::parse_time_nanos(v)
}

/// Bytes under a directory, not following symlinks (the container's writable layer).
pub(crate) fn dir_size(p: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(p) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(p).map(|rd| rd.filter_map(|e| e.ok()).map(|e| dir_size(&e.path())).sum()).unwrap_or(0)
}

/// Whether a stopped container is selected by prune's filters.
fn prune_selects(c: &Container, until: Option<i64>, labels: &[String], not_labels: &[String]) -> bool {
    if !matches!(c.state.status, Status::Created | Status::Exited | Status::Dead) {
        return false;
    }
    if let Some(u) = until {
        let created = chrono::DateTime::parse_from_rfc3339(&c.created).ok().and_then(|t| t.timestamp_nanos_opt());
        if created.map(|t| t >= u).unwrap_or(true) {
            return false;
        }
    }
    let l = c.config.labels.clone().unwrap_or_default();
    labels.iter().all(|spec| label_matches(&l, spec)) && !not_labels.iter().any(|spec| label_matches(&l, spec))
}

/// POST /containers/prune?filters=
pub async fn prune(e: &Arc<Engine>, q: &Query) -> Result<Response<Body>, ApiError> {
    let f = q.filters()?;
    f.only(&["until", "label", "label!"])?;
    let until = match f.get("until").first() {
        Some(u) => Some(until_nanos(u, chrono::Utc::now()).ok_or_else(|| ApiError::bad(format!("invalid until filter {u:?}")))?),
        None => None,
    };
    let (labels, not_labels) = (f.get("label").to_vec(), f.get("label!").to_vec());
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for c in e.containers.list() {
        if !prune_selects(&c, until, &labels, &not_labels) {
            continue;
        }
        let upper = super::lifecycle::paths(e, &c.id).upper;
        let size = tokio::task::spawn_blocking(move || dir_size(&upper)).await?;
        // The same path as `docker rm` (not forced: one started meanwhile is kept).
        match super::lifecycle::remove(e, &c.id, &Query::parse(None)).await {
            Ok(_) => {
                deleted.push(c.id.clone());
                reclaimed += size;
            }
            Err(err) => tracing::warn!(id = %c.short_id(), "prune: {err}"),
        }
    }
    let mut attrs = HashMap::new();
    attrs.insert("reclaimed".to_string(), reclaimed.to_string());
    e.events.publish(bollard_stubs::models::EventMessageTypeEnum::CONTAINER, "prune", "", attrs);
    Ok(ok_json(&json!({"ContainersDeleted": deleted, "SpaceReclaimed": reclaimed})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_files() {
        let stat = "cache 9465856\nrss 6533120\ntotal_inactive_file 16384\nhierarchical_memory_limit 67108864\n";
        let m = parse_flat_keyed(stat);
        assert_eq!(m["rss"], 6533120);
        assert_eq!(m["total_inactive_file"], 16384);
        assert_eq!(parse_single("67108864\n"), Some(67108864));
        assert_eq!(parse_percpu("123 456 \n"), vec![123, 456]);
        let blk = parse_v1_blkio("8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Total 12288\nTotal 12288\n");
        assert_eq!(blk.len(), 5);
        assert_eq!(blk[1], BlkioEntry { major: 8, minor: 0, op: "Write".into(), value: 8192 });
        let cpu = parse_flat_keyed("nr_periods 10\nnr_throttled 2\nthrottled_time 5000\n");
        assert_eq!((cpu["nr_periods"], cpu["nr_throttled"], cpu["throttled_time"]), (10, 2, 5000));
    }

    #[test]
    fn v2_files() {
        assert_eq!(parse_single("max\n"), None);
        assert_eq!(parse_single("1048576\n"), Some(1048576));
        let cpu = parse_flat_keyed("usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n");
        assert_eq!(cpu["usage_usec"], 2500);
        let (bytes, ios) = parse_v2_io_stat("8:0 rbytes=4096 wbytes=512 rios=1 wios=2 dbytes=0 dios=0\n259:1 rbytes=1 wbytes=0 rios=0 wios=0\n");
        assert_eq!(bytes.len(), 4);
        assert_eq!(bytes[0], BlkioEntry { major: 8, minor: 0, op: "read".into(), value: 4096 });
        assert_eq!(bytes[1].value, 512);
        assert_eq!(ios[1], BlkioEntry { major: 8, minor: 0, op: "write".into(), value: 2 });
        assert_eq!(bytes[2].major, 259);
    }

    #[test]
    fn v2_reader_over_a_fake_cgroup_dir() {
        let d = tempfile::tempdir().unwrap();
        let w = |f: &str, s: &str| std::fs::write(d.path().join(f), s).unwrap();
        w("memory.current", "3000\n");
        w("memory.max", "max\n");
        w("memory.stat", "anon 1000\ninactive_file 200\n");
        w("cpu.stat", "usage_usec 7\nuser_usec 4\nsystem_usec 3\nnr_periods 5\nnr_throttled 1\nthrottled_usec 2\n");
        w("pids.current", "2\n");
        w("pids.max", "100\n");
        w("cgroup.procs", "10\n11\n");
        let cg = V2Cgroup { dir: d.path().to_path_buf() };
        let s = cg.sample();
        assert_eq!((s.memory_usage, s.memory_limit), (3000, None));
        assert_eq!(s.memory_stat["inactive_file"], 200);
        assert_eq!((s.cpu_total, s.cpu_user, s.cpu_kernel, s.throttled_time), (7000, 4000, 3000, 2000));
        assert_eq!((s.pids_current, s.pids_limit), (2, Some(100)));
        assert!(s.io_service_bytes.is_empty(), "no io.stat reads as empty");
        assert_eq!(cg.procs().unwrap(), vec![10, 11]);
    }

    #[test]
    fn v1_reader_over_fake_controller_dirs() {
        let d = tempfile::tempdir().unwrap();
        let p = |c: &str| {
            let x = d.path().join(c);
            std::fs::create_dir_all(&x).unwrap();
            x
        };
        let cg = V1Cgroup { memory: p("memory"), cpu: p("cpu"), cpuacct: p("cpuacct"), pids: p("pids"), blkio: p("blkio") };
        std::fs::write(cg.memory.join("memory.usage_in_bytes"), "4096\n").unwrap();
        std::fs::write(cg.memory.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(cg.cpuacct.join("cpuacct.usage"), "123456\n").unwrap();
        std::fs::write(cg.cpuacct.join("cpuacct.usage_percpu"), "100000 23456 \n").unwrap();
        std::fs::write(cg.cpuacct.join("cpuacct.stat"), "user 3\nsystem 1\n").unwrap();
        std::fs::write(cg.pids.join("pids.current"), "1\n").unwrap();
        std::fs::write(cg.pids.join("pids.max"), "max\n").unwrap();
        std::fs::write(cg.pids.join("cgroup.procs"), "42\n").unwrap();
        let s = cg.sample();
        assert_eq!(s.memory_usage, 4096);
        assert_eq!(s.memory_limit, None, "v1's huge number means no limit");
        assert_eq!(s.cpu_total, 123456);
        assert_eq!(s.cpu_percpu, Some(vec![100000, 23456]));
        assert_eq!(s.cpu_user, 3 * (1_000_000_000 / clk_tck()));
        assert_eq!((s.pids_current, s.pids_limit), (1, None));
        assert_eq!(cg.procs().unwrap(), vec![42]);
    }

    #[test]
    fn proc_stat_and_net_dev() {
        let st = "cpu  100 0 50 800 10 5 5 0 0 0\ncpu0 50 0 25 400 5 2 3 0 0 0\ncpu1 50 0 25 400 5 3 2 0 0 0\nintr 1 2\nbtime 1700000000\n";
        let (total, n) = parse_proc_stat(st, 100).unwrap();
        assert_eq!(total, 970 * 10_000_000);
        assert_eq!(n, 2);
        assert_eq!(parse_proc_stat("intr 1\n", 100), None);
        let dev = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0\n  eth0: 1000 10 1 2 0 0 0 0 2000 20 3 4 0 0 0 0\n";
        let m = parse_net_dev(dev);
        assert_eq!(m["lo"], NetStats { rx_bytes: 140, rx_packets: 2, tx_bytes: 140, tx_packets: 2, ..Default::default() });
        assert_eq!(m["eth0"].tx_dropped, 4);
        assert_eq!(m["eth0"].rx_errors, 1);
    }

    #[test]
    fn proc_pid_stat_with_odd_comm() {
        let s = "1234 (we (ird) x) S 1 1234 1234 34817 1234 4194560 100 0 0 0 250 50 0 0 20 0 1 0 5000 1000000 200 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        let p = parse_proc_pid_stat(s).unwrap();
        assert_eq!(p.pid, 1234);
        assert_eq!(p.comm, "we (ird) x");
        assert_eq!((p.ppid, p.tty_nr, p.utime, p.stime, p.starttime), (1, 34817, 250, 50, 5000));
        assert_eq!(tty_name(34817), "pts/1");
        assert_eq!(tty_name(0), "?");
        assert_eq!(parse_status_euid("Name:\tsh\nUid:\t0\t1000\t0\t0\n"), Some(1000));
    }

    #[test]
    fn ps_ef_formatting() {
        let names = passwd_names("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n");
        let now = chrono::Local::now();
        let clk = Clock { tck: 100, boot_time: now.timestamp() - 1000, uptime: 1000.0, now };
        let p = ProcStat { pid: 7, comm: "sleep".into(), ppid: 1, tty_nr: 0, utime: 5000, stime: 1000, starttime: 100 * 400 };
        let row = ps_ef_row(&p, Some(0), b"sleep\x00300\x00", &names, &clk);
        assert_eq!(row[0], "root");
        assert_eq!(row[1], "7");
        assert_eq!(row[2], "1");
        // 60 s of CPU over 600 s alive.
        assert_eq!(row[3], "10");
        assert_eq!(row[5], "?");
        assert_eq!(row[6], "00:01:00");
        assert_eq!(row[7], "sleep 300");
        let kthread = ps_ef_row(&p, Some(4242), b"", &names, &clk);
        assert_eq!((kthread[0].as_str(), kthread[7].as_str()), ("4242", "[sleep]"));
        assert_eq!(cpu_time(90061), "1-01:01:01");
    }

    #[test]
    fn host_ps_output_is_filtered_by_pid() {
        let out = "  PID USER     COMMAND\n    1 root     init splash\n   42 root     sleep 300\n   43 root     other\n";
        let v = filter_ps_output(out, &[42]).unwrap();
        assert_eq!(v["Titles"], json!(["PID", "USER", "COMMAND"]));
        assert_eq!(v["Processes"], json!([["42", "root", "sleep 300"]]));
        assert!(filter_ps_output("USER CMD\nroot x\n", &[1]).is_err());
    }

    #[test]
    fn mountinfo_finds_v1_controllers() {
        let mi = "30 23 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n31 23 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n25 23 0:22 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(v1_mount_point(mi, "memory"), Some(PathBuf::from("/sys/fs/cgroup/memory")));
        assert_eq!(v1_mount_point(mi, "cpuacct"), Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")));
        assert_eq!(v1_mount_point(mi, "pids"), None);
    }

    #[test]
    fn go_durations_and_until() {
        assert_eq!(parse_go_duration("24h"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("x"), None);
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-02T00:00:00Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(until_nanos("24h", now), Some(1767225600 * 1_000_000_000));
        assert_eq!(until_nanos("1767225600", now), Some(1767225600 * 1_000_000_000));
    }

    #[test]
    fn prune_selection() {
        let mut c = Container {
            id: "a".repeat(64),
            name: "x".into(),
            created: "2026-01-01T00:00:00Z".into(),
            image_name: "i".into(),
            image_id: "sha256:0".into(),
            config: bollard_stubs::models::ContainerConfig {
                labels: Some([("k".to_string(), "v".to_string())].into_iter().collect()),
                ..Default::default()
            },
            host_config: Default::default(),
            path: "sh".into(),
            args: vec![],
            state: Default::default(),
            mounts: vec![],
            net: Default::default(),
        };
        c.state.status = Status::Exited;
        assert!(prune_selects(&c, None, &[], &[]));
        assert!(prune_selects(&c, None, &["k=v".into()], &[]));
        assert!(!prune_selects(&c, None, &["k=w".into()], &[]));
        assert!(!prune_selects(&c, None, &[], &["k".into()]));
        let t = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().timestamp_nanos_opt().unwrap();
        assert!(!prune_selects(&c, Some(t), &[], &[]), "until excludes containers created at or after it");
        assert!(prune_selects(&c, Some(t + 1), &[], &[]));
        c.state.status = Status::Running;
        assert!(!prune_selects(&c, None, &[], &[]));
        c.state.status = Status::Paused;
        assert!(!prune_selects(&c, None, &[], &[]));
    }
}
