//! berth-bench: side-by-side benchmarks of berthd against other Docker-API daemons.
//!
//! A small suite runner: each scenario is measured on every peer (berthd, dockerd, ...),
//! alternating peers (A B, then B A, ...) so slow drift of the machine hits both alike, and reports
//! median/min/max per peer plus the berthd/peer ratio, as markdown on stdout and as
//! JSON + markdown files in the output directory.
//!
//! Everything runs inside one loopback-only network namespace created here (registry,
//! daemons, the docker CLI), so no benchmark traffic leaves it. Every daemon is stopped and
//! its mounts removed before the command returns, also when a scenario fails.
//!
//! Usage: `berth-bench [--runs N] [--out DIR] [--peers berthd,dockerd]
//!         [--scenarios pull-cold,pull-warm,idle-rss,run-rm,run-rm-netnone,run-d-rm,
//!          concurrent-20,idle-rss-after-100] [--berthd PATH] [--dockerd PATH]
//!         [--no-drop-caches]`

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use berth_tests::berthd::{api_request, run_with_timeout, tail};
use berth_tests::image::{Compression, Image, Layer, RunConfig};
use berth_tests::netns::{command_in, NetNs};
use berth_tests::push::{ManifestFormat, Target};
use berth_tests::registry::Registry;
use serde::Serialize;
use serde_json::json;

/// Repository and tag the benchmark image is pushed under in the namespace's registry.
const IMAGE_REPO: &str = "bench/debian";
const IMAGE_TAG: &str = "bookworm-minbase";
/// Debian mirror for debootstrap (the package registry; reachable from the host only).
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
/// Paths (relative to the rootfs, no leading `/`) whose contents are left out of the layer,
/// as slim Debian images do: API filesystems, apt caches and lists, docs, man pages, locales.
/// That brings minbase from ~200 MB to ~77 MB of files, ~29 MB gzipped.
const EXCLUDED_DIR_CONTENTS: &[&str] = &[
    "dev",
    "proc",
    "sys",
    "run",
    "tmp",
    "var/cache/apt",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
];
/// One `docker` CLI call may take this long before the sample counts as failed.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------
// Command line (hand-parsed: berth-tests has no clap dependency and the flags are few).

#[derive(Debug, Clone)]
struct Options {
    runs: usize,
    out: PathBuf,
    peers: Vec<PeerKind>,
    scenarios: Vec<String>,
    berthd: PathBuf,
    dockerd: PathBuf,
    /// Drop the page cache before each cold pull (see `Bench::reset_page_cache`).
    drop_caches: bool,
}

const ALL_SCENARIOS: &[&str] = &[
    "pull-cold",
    "pull-warm",
    "idle-rss",
    "run-rm",
    "run-rm-netnone",
    "run-d-rm",
    "concurrent-20",
    "idle-rss-after-100",
    "publish-tcp",
];
/// Repository and tag of the small container image (the busybox fixture) for run scenarios.
const RUN_REPO: &str = "bench/busybox";
const RUN_TAG: &str = "latest";
/// Containers started at once in `concurrent-20`.
const CONCURRENT: usize = 20;
/// Sequential `run --rm` before `idle-rss-after-100` samples the daemon tree.
const RUNS_BEFORE_RSS: usize = 100;

fn usage() -> String {
    format!(
        "usage: berth-bench [--runs N] [--out DIR] [--peers berthd,dockerd] \
         [--scenarios {}] [--berthd PATH] [--dockerd PATH] [--no-drop-caches]",
        ALL_SCENARIOS.join(",")
    )
}

fn parse_args(args: &[String]) -> Result<Options> {
    let root = berth_tests::workspace_root();
    let mut o = Options {
        runs: 5,
        out: root.join("target/bench"),
        peers: vec![PeerKind::Berthd, PeerKind::Dockerd],
        scenarios: ALL_SCENARIOS.iter().map(|s| s.to_string()).collect(),
        berthd: std::env::var_os("BERTHD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/release/berthd")),
        dockerd: PathBuf::from("dockerd"),
        drop_caches: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| anyhow!("{a} needs a value\n{}", usage()))
        };
        match a.as_str() {
            "--runs" | "-n" => {
                o.runs = val()?.parse().context("--runs")?;
                if o.runs == 0 {
                    bail!("--runs must be at least 1");
                }
            }
            "--out" => o.out = PathBuf::from(val()?),
            "--no-drop-caches" => o.drop_caches = false,
            "--berthd" => o.berthd = PathBuf::from(val()?),
            "--dockerd" => o.dockerd = PathBuf::from(val()?),
            "--peers" => {
                o.peers = val()?
                    .split(',')
                    .map(PeerKind::parse)
                    .collect::<Result<_>>()?;
            }
            "--scenarios" => {
                let v = val()?;
                o.scenarios = Vec::new();
                for s in v.split(',') {
                    if !ALL_SCENARIOS.contains(&s) {
                        bail!("unknown scenario {s}\n{}", usage());
                    }
                    o.scenarios.push(s.to_string());
                }
            }
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{}", usage()),
        }
    }
    if o.peers.is_empty() {
        bail!("no peers");
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------
// Daemons under test.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum PeerKind {
    Berthd,
    Dockerd,
}

impl PeerKind {
    fn parse(s: &str) -> Result<PeerKind> {
        match s {
            "berthd" => Ok(PeerKind::Berthd),
            "dockerd" => Ok(PeerKind::Dockerd),
            _ => bail!("unknown peer {s} (berthd, dockerd)"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            PeerKind::Berthd => "berthd",
            PeerKind::Dockerd => "dockerd",
        }
    }
}

/// One running daemon in the bench namespace with its own socket, data and exec root.
struct Daemon {
    kind: PeerKind,
    ns_path: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Daemon {
    fn start(kind: PeerKind, opts: &Options, ns: &NetNs, registry: &str) -> Result<Daemon> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-bench-{}-", kind.name()))
            .tempdir()
            .context("tempdir")?;
        fs::create_dir(dir.path().join("docker-config"))?;
        let mut d = Daemon {
            kind,
            ns_path: ns.path(),
            dir,
            child: None,
        };
        let program = match kind {
            PeerKind::Berthd => opts.berthd.clone(),
            PeerKind::Dockerd => opts.dockerd.clone(),
        };
        // Entered with setns(CLONE_NEWNET) only (not `ip netns exec`): `ip netns exec` also
        // remounts /sys in a private mount namespace, which hides the cgroup v1 mounts and
        // makes dockerd fail with "Devices cgroup isn't mounted".
        let mut cmd = command_in(&d.ns_path, &program);
        cmd.arg("--host")
            .arg(d.host())
            .arg("--data-root")
            .arg(d.dir.path().join("data"))
            .arg("--exec-root")
            .arg(d.dir.path().join("exec"))
            .arg("--pidfile")
            .arg(d.dir.path().join("daemon.pid"))
            .arg("--insecure-registry")
            .arg(registry);
        match kind {
            PeerKind::Berthd => {
                cmd.arg("--log-level").arg("info");
            }
            PeerKind::Dockerd => {
                // The default bridge (docker0) and its iptables rules are created in the bench
                // namespace, since dockerd runs there; nothing changes on the host.
                cmd.arg("--storage-driver").arg("overlay2");
            }
        }
        let log = fs::File::create(d.log_path())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", program.display()))?;
        d.child = Some(child);
        d.wait_ready()?;
        Ok(d)
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    fn log_tail(&self) -> String {
        tail(&fs::read_to_string(self.log_path()).unwrap_or_default(), 30)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = api_request(&self.socket(), "GET", "/_ping", None) {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    self.child = None;
                    bail!(
                        "{} exited {status} before answering /_ping:\n{}",
                        self.kind.name(),
                        self.log_tail()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer /_ping:\n{}",
                    self.kind.name(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `docker <args>` with the one CLI on PATH, pointed at this daemon via DOCKER_HOST, run in
    /// the namespace with a private config dir. Returns wall time and stdout; errors on failure.
    fn docker(&self, args: &[&str]) -> Result<(Duration, String)> {
        let mut cmd = command_in(&self.ns_path, "docker");
        for var in [
            "DOCKER_API_VERSION",
            "DOCKER_CONTEXT",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .args(args);
        let t = Instant::now();
        let (status, out, err) = run_with_timeout(cmd, None, DOCKER_TIMEOUT)
            .map_err(|e| anyhow!("docker {}: {e}", args.join(" ")))?;
        let elapsed = t.elapsed();
        if !status.success() {
            bail!(
                "`docker {}` against {} failed ({status}): {}\n--- daemon log tail:\n{}",
                args.join(" "),
                self.kind.name(),
                String::from_utf8_lossy(&err).trim(),
                self.log_tail()
            );
        }
        Ok((elapsed, String::from_utf8_lossy(&out).into_owned()))
    }

    /// Stop the daemon and everything it started; unmount whatever it left under its dirs.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let tree = process_tree(child.id());
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("{} ignored SIGTERM for 30 s, killing", self.kind.name());
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // dockerd stops its containerd itself; make sure of it (these pids were its children,
        // checked again by parent-less survival only for the short window here).
        for pid in tree.into_iter().skip(1) {
            if Path::new(&format!("/proc/{pid}")).exists() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        unmount_under(self.dir.path());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Lazily unmount every mount point at or below `dir` (deepest first), e.g. overlay and shm
/// mounts a killed daemon left in its data/exec roots, so the temp dir can be removed.
fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `root` and all its descendants (root first), from the ppid field of /proc/*/stat.
fn process_tree(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Some(ppid) = parse_ppid(&stat) {
                    parent_of.push((pid, ppid));
                }
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// The ppid in a /proc/PID/stat line; the comm field may contain spaces and parens, so parse
/// from the last `)`.
fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds (user + system, including reaped children such as dockerd's untar helper)
/// used so far by the process tree of `root`: shows whether a slow pull is CPU-bound.
fn tree_cpu_seconds(root: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    process_tree(root)
        .into_iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| parse_cpu_ticks(&s))
        .sum::<u64>() as f64
        / hz
}

/// utime + stime + cutime + cstime (fields 14-17 of /proc/PID/stat), in clock ticks.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (11..15).map(|i| f.get(i)?.parse::<u64>().ok()).sum()
}

/// VmRSS of one process in KiB (0 for kernel threads or exited processes).
fn vm_rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| parse_vm_rss(&s))
        .unwrap_or(0)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------------------------------
// The benchmark image: Debian bookworm minbase as one gzip layer.

struct BenchImage {
    image: Image,
    source: String,
    uncompressed_bytes: u64,
}

/// Build (or load from `cache`) the ~30 MB image. The rootfs comes from debootstrap; when that
/// fails, from a synthetic tree of real host files (said so in `source`).
fn bench_image(cache: &Path) -> Result<BenchImage> {
    fs::create_dir_all(cache)?;
    let blob_path = cache.join("layer.tar.gz");
    let meta_path = cache.join("layer.json");
    if let (Ok(blob), Ok(meta)) = (fs::read(&blob_path), fs::read(&meta_path)) {
        let meta: serde_json::Value = serde_json::from_slice(&meta)?;
        let digest = berth_tests::sha256_digest(&blob);
        if meta["digest"] == digest.as_str() {
            eprintln!(
                "bench image: cached layer {} ({} bytes)",
                digest,
                blob.len()
            );
            return finish_image(
                Layer {
                    compression: Compression::Gzip,
                    blob,
                    digest,
                    diff_id: meta["diff_id"].as_str().unwrap_or_default().to_string(),
                    created_by: meta["created_by"].as_str().unwrap_or_default().to_string(),
                },
                meta["source"].as_str().unwrap_or_default().to_string(),
                meta["uncompressed_bytes"].as_u64().unwrap_or(0),
            );
        }
    }
    let rootfs = cache.join("rootfs");
    let (tar, source) = match debootstrap(&rootfs) {
        Ok(()) => (
            tar_tree(&rootfs, EXCLUDED_DIR_CONTENTS)?,
            "debootstrap --variant=minbase bookworm (docs, man, locales, apt lists removed)"
                .to_string(),
        ),
        Err(e) => {
            eprintln!(
                "debootstrap failed ({e:#}); falling back to a synthetic layer of host files"
            );
            (
                synthetic_tar()?,
                "synthetic: host /usr/bin + /usr/lib files (debootstrap failed)".to_string(),
            )
        }
    };
    eprintln!("bench image: gzipping {} bytes of tar", tar.len());
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&tar)?;
    let blob = enc.finish()?;
    let created_by = "berth-bench: debian bookworm minbase rootfs".to_string();
    let layer = Layer {
        compression: Compression::Gzip,
        digest: berth_tests::sha256_digest(&blob),
        diff_id: berth_tests::sha256_digest(&tar),
        blob,
        created_by: created_by.clone(),
    };
    fs::write(&blob_path, &layer.blob)?;
    fs::write(
        &meta_path,
        serde_json::to_vec_pretty(&json!({
            "digest": layer.digest,
            "diff_id": layer.diff_id,
            "created_by": created_by,
            "source": source,
            "uncompressed_bytes": tar.len(),
        }))?,
    )?;
    finish_image(layer, source, tar.len() as u64)
}

fn finish_image(layer: Layer, source: String, uncompressed_bytes: u64) -> Result<BenchImage> {
    let image = Image::new(vec![layer], &RunConfig::cmd(&["bash"]), "amd64")
        .map_err(|e| anyhow!("image config: {e}"))?;
    Ok(BenchImage {
        image,
        source,
        uncompressed_bytes,
    })
}

/// debootstrap into `rootfs` unless a finished one is there (built in `<rootfs>.tmp`, renamed
/// when complete, so an interrupted run is redone rather than used half-made).
fn debootstrap(rootfs: &Path) -> Result<()> {
    if rootfs.join("usr/bin/apt-get").exists() {
        return Ok(());
    }
    let tmp = rootfs.with_extension("tmp");
    if tmp.exists() {
        unmount_under(&tmp);
        fs::remove_dir_all(&tmp)?;
    }
    eprintln!(
        "debootstrap --variant=minbase bookworm {} ...",
        tmp.display()
    );
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&tmp)
        .arg(DEBIAN_MIRROR)
        .output()
        .context("spawn debootstrap")?;
    if !out.status.success() {
        bail!(
            "debootstrap {}: {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stdout), 5)
        );
    }
    fs::rename(&tmp, rootfs)?;
    Ok(())
}

/// A tar of the tree at `root` (sorted, owners/modes/mtimes kept, symlinks not followed),
/// leaving out the contents of `excluded` directories (the directories themselves stay).
/// Hand-walked because tar's `append_dir_all` cannot skip paths.
fn tar_tree(root: &Path, excluded: &[&str]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let mut skipped = 0usize;
    walk(&mut b, root, Path::new(""), excluded, &mut skipped)?;
    if skipped > 0 {
        eprintln!("bench image: skipped {skipped} special files");
    }
    Ok(b.into_inner()?)
}

fn walk(
    b: &mut tar::Builder<Vec<u8>>,
    root: &Path,
    rel: &Path,
    excluded: &[&str],
    skipped: &mut usize,
) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let r = rel.join(&name);
        let full = root.join(&r);
        let md = fs::symlink_metadata(&full)?;
        let ft = md.file_type();
        if ft.is_dir() || ft.is_file() || ft.is_symlink() {
            b.append_path_with_name(&full, &r)
                .with_context(|| format!("tar {}", r.display()))?;
        } else {
            *skipped += 1;
            continue;
        }
        if ft.is_dir() && !excluded.iter().any(|x| Path::new(x) == r) {
            walk(b, root, &r, excluded, skipped)?;
        }
    }
    Ok(())
}

/// Fallback layer: regular files of the host's /usr/bin and /usr/lib (real binaries and
/// libraries compress like an OS image does), capped at ~80 MB uncompressed.
fn synthetic_tar() -> Result<Vec<u8>> {
    const CAP: u64 = 80 << 20;
    let mut b = tar::Builder::new(Vec::new());
    let mut total = 0u64;
    for top in ["/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/lib"] {
        let mut stack = vec![PathBuf::from(top)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            entries.sort();
            for p in entries {
                let Ok(md) = fs::symlink_metadata(&p) else {
                    continue;
                };
                if md.is_dir() {
                    stack.push(p);
                } else if md.is_file() && total + md.size() <= CAP {
                    let name = p.strip_prefix("/").unwrap_or(&p).to_path_buf();
                    if b.append_path_with_name(&p, &name).is_ok() {
                        total += md.size();
                    }
                }
            }
        }
    }
    Ok(b.into_inner()?)
}

// ---------------------------------------------------------------------------------------
// Results.

#[derive(Debug, Clone, Serialize)]
struct PeerResult {
    peer: PeerKind,
    samples: Vec<f64>,
    median: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    /// Extra facts per sample (e.g. per-process RSS), for the JSON only.
    details: Vec<serde_json::Value>,
    error: Option<String>,
}

impl PeerResult {
    fn new(peer: PeerKind) -> PeerResult {
        PeerResult {
            peer,
            samples: Vec::new(),
            median: None,
            min: None,
            max: None,
            details: Vec::new(),
            error: None,
        }
    }

    fn finish(&mut self) {
        let (median, min, max) = stats(&self.samples);
        self.median = median;
        self.min = min;
        self.max = max;
    }
}

/// Peer indices for round `run`: forward on even rounds, reversed on odd ones (A B B A A B ...),
/// so a machine that drifts during the run does not always favour the peer measured first.
fn round_order(peers: usize, run: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..peers).collect();
    if run % 2 == 1 {
        v.reverse();
    }
    v
}

/// (median, min, max); the median of an even count is the mean of the middle two.
fn stats(samples: &[f64]) -> (Option<f64>, Option<f64>, Option<f64>) {
    if samples.is_empty() {
        return (None, None, None);
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (Some(median), Some(s[0]), Some(s[n - 1]))
}

/// What a scenario promises, checked against the medians.
#[derive(Debug, Clone, Serialize)]
enum Goal {
    /// peer median / berthd median must reach this (berthd this many times faster).
    SpeedupAtLeast(f64),
    /// berthd median must stay below this value (in the scenario's unit).
    BerthdBelow(f64),
    /// berthd median / peer median must reach this (for throughputs: higher is better).
    RatioAtLeast(f64),
    /// No target in any issue: measured for the record only.
    None,
}

#[derive(Debug, Clone, Serialize)]
struct ScenarioResult {
    name: String,
    description: String,
    unit: &'static str,
    goal: Goal,
    peers: Vec<PeerResult>,
    /// berthd median / peer median, per other peer.
    ratio_berthd_over_peer: BTreeMap<String, f64>,
    /// "pass", "fail" or "n/a" (berthd or the peer had no samples).
    verdict: String,
}

impl ScenarioResult {
    fn finish(&mut self) {
        for p in &mut self.peers {
            p.finish();
        }
        let berthd = self
            .peers
            .iter()
            .find(|p| p.peer == PeerKind::Berthd)
            .and_then(|p| p.median);
        let mut verdicts = Vec::new();
        for p in self.peers.iter().filter(|p| p.peer != PeerKind::Berthd) {
            if let (Some(b), Some(m)) = (berthd, p.median) {
                if m > 0.0 {
                    self.ratio_berthd_over_peer
                        .insert(p.peer.name().into(), b / m);
                }
                if let Goal::SpeedupAtLeast(x) = self.goal {
                    verdicts.push(b > 0.0 && m / b >= x);
                }
                if let Goal::RatioAtLeast(x) = self.goal {
                    verdicts.push(m > 0.0 && b / m >= x);
                }
            }
        }
        if let (Goal::BerthdBelow(x), Some(b)) = (&self.goal, berthd) {
            verdicts.push(b < *x);
        }
        self.verdict = if verdicts.is_empty() {
            "n/a".into()
        } else if verdicts.iter().all(|v| *v) {
            "pass".into()
        } else {
            "fail".into()
        };
    }
}

fn fmt_val(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "-".into(),
        Some(x) if unit == "s" => format!("{x:.3}"),
        Some(x) => format!("{x:.1}"),
    }
}

fn markdown(header: &str, results: &[ScenarioResult]) -> String {
    let mut s = String::new();
    s.push_str(header);
    for r in results {
        s.push_str(&format!(
            "\n### {} ({})\n\n{}\n\n| peer | runs | median | min | max | berthd/peer |\n|---|---|---|---|---|---|\n",
            r.name, r.unit, r.description
        ));
        for p in &r.peers {
            let ratio = match p.peer {
                PeerKind::Berthd => "1.00".to_string(),
                other => r
                    .ratio_berthd_over_peer
                    .get(other.name())
                    .map(|x| format!("{x:.2}"))
                    .unwrap_or_else(|| "-".into()),
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                p.peer.name(),
                p.samples.len(),
                fmt_val(p.median, r.unit),
                fmt_val(p.min, r.unit),
                fmt_val(p.max, r.unit),
                ratio
            ));
        }
        let goal = match r.goal {
            Goal::SpeedupAtLeast(x) => format!("berthd at least {x}x faster (peer/berthd >= {x})"),
            Goal::BerthdBelow(x) => format!("berthd below {x} {}", r.unit),
            Goal::RatioAtLeast(x) => format!("berthd/peer at least {x}"),
            Goal::None => "none (informational)".to_string(),
        };
        let mut speedups = String::new();
        if r.unit == "s" {
            for (peer, ratio) in &r.ratio_berthd_over_peer {
                if *ratio > 0.0 {
                    speedups.push_str(&format!(" {peer}/berthd = {:.2}x.", 1.0 / ratio));
                }
            }
        }
        s.push_str(&format!(
            "\nGoal: {goal}.{speedups} Verdict: **{}**\n",
            r.verdict
        ));
        for p in r.peers.iter().filter(|p| p.error.is_some()) {
            let e = p.error.as_deref().unwrap_or_default();
            let first: String = e.lines().take(3).collect::<Vec<_>>().join(" / ");
            s.push_str(&format!("\n- {} error: {}\n", p.peer.name(), first));
        }
    }
    s
}

// ---------------------------------------------------------------------------------------
// Scenarios.

/// The shared setup: namespace, registry with the image, one daemon per peer.
struct Bench<'a> {
    opts: &'a Options,
    ns: &'a NetNs,
    registry: &'a Registry,
    reference: String,
    image_id: String,
    /// The busybox fixture in the namespace's registry, for the container scenarios.
    run_reference: String,
}

impl Bench<'_> {
    /// Start one daemon per peer; a peer that cannot start is reported, not fatal.
    fn daemons(&self) -> Vec<(PeerKind, Result<Daemon>)> {
        self.opts
            .peers
            .iter()
            .map(|&k| {
                (
                    k,
                    Daemon::start(k, self.opts, self.ns, self.registry.addr()),
                )
            })
            .collect()
    }

    /// Drop the kernel's clean page/dentry/inode caches, then read the registry's storage back
    /// in so the registry still serves from memory. Measured on this VM, repeated unpack + delete
    /// cycles without this make a plain `tar -xzf` of the layer go from 1.0 s to 3.0 s (system
    /// time 0.7 -> 2.8 s) as the caches grow; with it every run starts from the same state.
    fn reset_page_cache(&self) -> Result<()> {
        fs::write("/proc/sys/vm/drop_caches", "3").context("drop_caches")?;
        let mut stack = vec![self.registry.storage_dir()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d)?.flatten() {
                let ft = e.file_type()?;
                if ft.is_dir() {
                    stack.push(e.path());
                } else if ft.is_file() {
                    std::io::copy(&mut fs::File::open(e.path())?, &mut std::io::sink())?;
                }
            }
        }
        Ok(())
    }

    /// Remove every image so the next pull fetches and unpacks all layers.
    fn clean_images(&self, d: &Daemon) -> Result<()> {
        let _ = d.docker(&["rmi", "-f", &self.reference]);
        d.docker(&["image", "prune", "-af"])?;
        let (_, left) = d.docker(&["images", "-q"])?;
        if !left.trim().is_empty() {
            bail!("images left after rmi + prune: {}", left.trim());
        }
        Ok(())
    }

    /// The pulled image must be the pushed one (same config digest = image ID).
    fn check_pulled(&self, d: &Daemon) -> Result<()> {
        let (_, id) = d.docker(&["image", "inspect", "--format", "{{.Id}}", &self.reference])?;
        if id.trim() != self.image_id {
            bail!("pulled image id {} != pushed {}", id.trim(), self.image_id);
        }
        Ok(())
    }

    fn pull(&self, cold: bool) -> ScenarioResult {
        let (name, description) = if cold {
            (
                "pull-cold",
                format!(
                    "Wall time of `docker pull {}` with no image present (rmi + image prune -af before each run).",
                    self.reference
                ),
            )
        } else {
            (
                "pull-warm",
                format!(
                    "Wall time of `docker pull {}` when the image and all its layers are already present.",
                    self.reference
                ),
            )
        };
        let mut result = ScenarioResult {
            name: name.into(),
            description,
            unit: "s",
            // The 1.5x target of the pull benchmark issue is for the cold pull.
            goal: if cold {
                Goal::SpeedupAtLeast(1.5)
            } else {
                Goal::None
            },
            peers: self
                .opts
                .peers
                .iter()
                .map(|&k| PeerResult::new(k))
                .collect(),
            ratio_berthd_over_peer: BTreeMap::new(),
            verdict: String::new(),
        };
        let mut daemons = self.daemons();
        for (i, (_, d)) in daemons.iter_mut().enumerate() {
            if let Err(e) = d {
                result.peers[i].error = Some(format!("start: {e:#}"));
            }
        }
        // Warm: one untimed pull first so every layer is present.
        if !cold {
            for (i, (_, d)) in daemons.iter().enumerate() {
                if let Ok(d) = d {
                    if let Err(e) = d.docker(&["pull", &self.reference]) {
                        result.peers[i].error = Some(format!("{e:#}"));
                    }
                }
            }
        }
        for run in 0..self.opts.runs {
            for i in round_order(self.opts.peers.len(), run) {
                let (kind, d) = &daemons[i];
                let Ok(d) = d else { continue };
                if result.peers[i].error.is_some() {
                    continue;
                }
                let sample = (|| -> Result<(f64, f64)> {
                    if cold {
                        self.clean_images(d)?;
                    }
                    // Flush the previous run's writes (and deletions) first, so one run's
                    // writeback is not billed to the next one.
                    nix::unistd::sync();
                    if cold && self.opts.drop_caches {
                        self.reset_page_cache()?;
                    }
                    let pid = d.pid().ok_or_else(|| anyhow!("daemon exited"))?;
                    let cpu0 = tree_cpu_seconds(pid);
                    let (t, _) = d.docker(&["pull", &self.reference])?;
                    let cpu = tree_cpu_seconds(pid) - cpu0;
                    self.check_pulled(d)?;
                    Ok((t.as_secs_f64(), cpu))
                })();
                match sample {
                    Ok((s, cpu)) => {
                        result.peers[i].details.push(json!({ "daemon_cpu_s": cpu }));
                        eprintln!(
                            "{name} run {}/{} {}: {s:.3} s (daemon CPU {cpu:.2} s)",
                            run + 1,
                            self.opts.runs,
                            kind.name()
                        );
                        result.peers[i].samples.push(s);
                    }
                    Err(e) => {
                        eprintln!("{name} {}: {e:#}", kind.name());
                        result.peers[i].error = Some(format!("{e:#}"));
                    }
                }
            }
        }
        drop(daemons);
        result.finish();
        result
    }

    fn idle_rss(&self) -> ScenarioResult {
        let mut result = ScenarioResult {
            name: "idle-rss".into(),
            description:
                "Summed VmRSS of the daemon's whole process tree (dockerd + its containerd) \
                          after a fresh start, one `docker version` and 2 s of idle, in MiB."
                    .into(),
            unit: "MiB",
            goal: Goal::BerthdBelow(20.0),
            peers: self
                .opts
                .peers
                .iter()
                .map(|&k| PeerResult::new(k))
                .collect(),
            ratio_berthd_over_peer: BTreeMap::new(),
            verdict: String::new(),
        };
        for run in 0..self.opts.runs {
            for i in round_order(self.opts.peers.len(), run) {
                let kind = self.opts.peers[i];
                if result.peers[i].error.is_some() {
                    continue;
                }
                let sample = (|| -> Result<(f64, serde_json::Value)> {
                    let mut d = Daemon::start(kind, self.opts, self.ns, self.registry.addr())?;
                    d.docker(&["version"])?;
                    std::thread::sleep(Duration::from_secs(2));
                    let pid = d.pid().ok_or_else(|| anyhow!("daemon exited"))?;
                    let procs: Vec<(u32, String, u64)> = process_tree(pid)
                        .into_iter()
                        .map(|p| (p, comm(p), vm_rss_kib(p)))
                        .collect();
                    d.stop();
                    let kib: u64 = procs.iter().map(|p| p.2).sum();
                    let detail = json!(procs
                        .iter()
                        .map(|(p, c, k)| json!({"pid": p, "comm": c, "vm_rss_kib": k}))
                        .collect::<Vec<_>>());
                    Ok((kib as f64 / 1024.0, detail))
                })();
                match sample {
                    Ok((mib, detail)) => {
                        eprintln!(
                            "idle-rss run {}/{} {}: {mib:.1} MiB {detail}",
                            run + 1,
                            self.opts.runs,
                            kind.name()
                        );
                        result.peers[i].samples.push(mib);
                        result.peers[i].details.push(detail);
                    }
                    Err(e) => {
                        eprintln!("idle-rss {}: {e:#}", kind.name());
                        result.peers[i].error = Some(format!("{e:#}"));
                    }
                }
            }
        }
        result.finish();
        result
    }

    fn empty_result(&self, name: &str, description: String, unit: &'static str, goal: Goal) -> ScenarioResult {
        ScenarioResult {
            name: name.into(),
            description,
            unit,
            goal,
            peers: self
                .opts
                .peers
                .iter()
                .map(|&k| PeerResult::new(k))
                .collect(),
            ratio_berthd_over_peer: BTreeMap::new(),
            verdict: String::new(),
        }
    }

    /// Start every peer once and pull the busybox fixture into it (untimed), for the container
    /// scenarios. A peer that fails is returned as an error and reported by each scenario.
    fn run_daemons(&self) -> Vec<(PeerKind, Result<Daemon>)> {
        self.daemons()
            .into_iter()
            .map(|(k, d)| {
                let d = d.and_then(|d| {
                    d.docker(&["pull", &self.run_reference])?;
                    // One untimed run so first-use costs (runtime binary in page cache, network
                    // setup) are not billed to the first sample.
                    d.docker(&["run", "--rm", &self.run_reference, "true"])?;
                    Ok(d)
                });
                (k, d)
            })
            .collect()
    }

    /// Measure `sample` `runs` times per peer, peers alternating, on already running daemons.
    fn timed(
        &self,
        daemons: &[(PeerKind, Result<Daemon>)],
        mut result: ScenarioResult,
        runs: usize,
        sample: impl Fn(&Daemon) -> Result<f64>,
    ) -> ScenarioResult {
        for (i, (_, d)) in daemons.iter().enumerate() {
            if let Err(e) = d {
                result.peers[i].error = Some(format!("start: {e:#}"));
            }
        }
        for run in 0..runs {
            for i in round_order(daemons.len(), run) {
                let (kind, d) = &daemons[i];
                let Ok(d) = d else { continue };
                if result.peers[i].error.is_some() {
                    continue;
                }
                match sample(d) {
                    Ok(v) => {
                        eprintln!(
                            "{} run {}/{runs} {}: {v:.3} {}",
                            result.name,
                            run + 1,
                            kind.name(),
                            result.unit
                        );
                        result.peers[i].samples.push(v);
                    }
                    Err(e) => {
                        eprintln!("{} {}: {e:#}", result.name, kind.name());
                        result.peers[i].error = Some(format!("{e:#}"));
                    }
                }
            }
        }
        result.finish();
        result
    }

    /// `run-rm` (default network) or `run-rm-netnone` (`--network none`).
    fn run_rm(&self, daemons: &[(PeerKind, Result<Daemon>)], netnone: bool) -> ScenarioResult {
        let (name, extra): (&str, &[&str]) = if netnone {
            ("run-rm-netnone", &["--network", "none"])
        } else {
            ("run-rm", &[])
        };
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(extra);
        args.push(&self.run_reference);
        args.push("true");
        let result = self.empty_result(
            name,
            format!("Wall time of `docker {}` (image already pulled).", args.join(" ")),
            "s",
            // The target: berthd at most 0.25x dockerd's median, i.e. 4x faster.
            if netnone { Goal::None } else { Goal::SpeedupAtLeast(4.0) },
        );
        self.timed(daemons, result, 2 * self.opts.runs, |d| {
            Ok(d.docker(&args)?.0.as_secs_f64())
        })
    }

    /// `publish-tcp`: TCP throughput from the daemons' host namespace to a container through a
    /// port published on 127.0.0.1 (dockerd: docker-proxy, its default for loopback; berthd:
    /// its in-process splice relay). Server and client are Debian's iperf3; the server runs in
    /// the busybox image with the host's iperf3 and libraries bind-mounted read-only.
    fn publish_tcp(&self, daemons: &[(PeerKind, Result<Daemon>)]) -> ScenarioResult {
        let result = self.empty_result(
            "publish-tcp",
            "iperf3 -c 127.0.0.1:PORT -t 3 (one stream) to a container behind `-p 127.0.0.1:PORT:5201`; received Gbit/s.".into(),
            "Gbit/s",
            Goal::RatioAtLeast(1.0),
        );
        let iperf = which("iperf3");
        let ports: Vec<Result<u16>> = daemons
            .iter()
            .map(|(_, d)| {
                let d = d.as_ref().map_err(|e| anyhow!("{e:#}"))?;
                let iperf = iperf.clone().ok_or_else(|| anyhow!("iperf3 is not installed (Debian package iperf3)"))?;
                let port = self.ns.free_port().map_err(|e| anyhow!("{e}"))?;
                let _ = d.docker(&["rm", "-f", "bench-iperf"]);
                d.docker(&[
                    "run", "-d", "--name", "bench-iperf", "-p", &format!("127.0.0.1:{port}:5201"),
                    "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro",
                    "-v", &format!("{}:/iperf3:ro", iperf.display()),
                    "-e", "LD_LIBRARY_PATH=/lib/x86_64-linux-gnu",
                    &self.run_reference, "/iperf3", "-s",
                ])?;
                // Ready when a short test goes through.
                let deadline = Instant::now() + Duration::from_secs(20);
                while iperf_gbits(self.ns, port, 1).is_err() {
                    if Instant::now() > deadline {
                        bail!("iperf3 server behind port {port} never answered");
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Ok(port)
            })
            .collect();
        let r = self.timed(daemons, result, self.opts.runs, |d| {
            let i = daemons.iter().position(|(k, _)| *k == d.kind).ok_or_else(|| anyhow!("peer"))?;
            let port = *ports[i].as_ref().map_err(|e| anyhow!("{e:#}"))?;
            iperf_gbits(self.ns, port, 3)
        });
        for (_, d) in daemons {
            if let Ok(d) = d {
                let _ = d.docker(&["rm", "-f", "bench-iperf"]);
            }
        }
        r
    }

    /// `run-d-rm`: start a detached sleeper and force-remove it; both calls timed together.
    fn run_d_rm(&self, daemons: &[(PeerKind, Result<Daemon>)]) -> ScenarioResult {
        let result = self.empty_result(
            "run-d-rm",
            format!(
                "Wall time of `docker run -d {} sleep 100` plus `docker rm -f` of it.",
                self.run_reference
            ),
            "s",
            Goal::None,
        );
        self.timed(daemons, result, self.opts.runs, |d| {
            let (t1, id) = d.docker(&["run", "-d", &self.run_reference, "sleep", "100"])?;
            let id = id.trim().to_string();
            if id.is_empty() {
                bail!("run -d printed no container id");
            }
            let (t2, _) = d.docker(&["rm", "-f", &id])?;
            Ok((t1 + t2).as_secs_f64())
        })
    }

    /// `concurrent-20`: 20 `docker run --rm ... true` started together, total wall time.
    fn concurrent(&self, daemons: &[(PeerKind, Result<Daemon>)]) -> ScenarioResult {
        let result = self.empty_result(
            "concurrent-20",
            format!(
                "Total wall time of {CONCURRENT} concurrent `docker run --rm {} true`.",
                self.run_reference
            ),
            "s",
            Goal::None,
        );
        self.timed(daemons, result, 3, |d| {
            let t = Instant::now();
            let errors: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..CONCURRENT)
                    .map(|_| s.spawn(|| d.docker(&["run", "--rm", &self.run_reference, "true"])))
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| match h.join() {
                        Ok(Ok(_)) => None,
                        Ok(Err(e)) => Some(format!("{e:#}")),
                        Err(_) => Some("thread panicked".into()),
                    })
                    .collect()
            });
            let elapsed = t.elapsed().as_secs_f64();
            if let Some(e) = errors.first() {
                bail!("{} of {CONCURRENT} runs failed, first: {e}", errors.len());
            }
            Ok(elapsed)
        })
    }

    /// `idle-rss-after-100`: a fresh daemon, 100 sequential `run --rm`, 2 s idle, tree RSS.
    fn idle_rss_after_runs(&self) -> ScenarioResult {
        let result = self.empty_result(
            "idle-rss-after-100",
            format!(
                "Summed VmRSS of the daemon's process tree (berthd alone: shims of exited containers are gone; \
                 dockerd + containerd + any shims) after a fresh start, {RUNS_BEFORE_RSS} sequential \
                 `docker run --rm {} true` and 2 s of idle, in MiB.",
                self.run_reference
            ),
            "MiB",
            Goal::None,
        );
        let mut result = result;
        for (i, &kind) in self.opts.peers.iter().enumerate() {
            let sample = (|| -> Result<(f64, serde_json::Value)> {
                let mut d = Daemon::start(kind, self.opts, self.ns, self.registry.addr())?;
                d.docker(&["pull", &self.run_reference])?;
                let t = Instant::now();
                for _ in 0..RUNS_BEFORE_RSS {
                    d.docker(&["run", "--rm", &self.run_reference, "true"])?;
                }
                eprintln!(
                    "idle-rss-after-100 {}: {RUNS_BEFORE_RSS} runs in {:.1} s",
                    kind.name(),
                    t.elapsed().as_secs_f64()
                );
                std::thread::sleep(Duration::from_secs(2));
                let pid = d.pid().ok_or_else(|| anyhow!("daemon exited"))?;
                let procs: Vec<(u32, String, u64)> = process_tree(pid)
                    .into_iter()
                    .map(|p| (p, comm(p), vm_rss_kib(p)))
                    .collect();
                d.stop();
                let kib: u64 = procs.iter().map(|p| p.2).sum();
                let detail = json!(procs
                    .iter()
                    .map(|(p, c, k)| json!({"pid": p, "comm": c, "vm_rss_kib": k}))
                    .collect::<Vec<_>>());
                Ok((kib as f64 / 1024.0, detail))
            })();
            match sample {
                Ok((mib, detail)) => {
                    eprintln!("idle-rss-after-100 {}: {mib:.1} MiB {detail}", kind.name());
                    result.peers[i].samples.push(mib);
                    result.peers[i].details.push(detail);
                }
                Err(e) => {
                    eprintln!("idle-rss-after-100 {}: {e:#}", kind.name());
                    result.peers[i].error = Some(format!("{e:#}"));
                }
            }
        }
        result.finish();
        result
    }
}

fn version_of(program: &Path, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "unavailable".into())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// One iperf3 run of `secs` seconds from the namespace to 127.0.0.1:port; received Gbit/s.
fn iperf_gbits(ns: &NetNs, port: u16, secs: u32) -> Result<f64> {
    let mut cmd = ns.command("iperf3");
    cmd.args(["-c", "127.0.0.1", "-p", &port.to_string(), "-t", &secs.to_string(), "-J"]);
    let (status, out, err) = run_with_timeout(cmd, None, Duration::from_secs(secs as u64 + 20)).map_err(|e| anyhow!("iperf3: {e}"))?;
    if !status.success() {
        bail!("iperf3 failed: {}{}", String::from_utf8_lossy(&out).chars().take(300).collect::<String>(), String::from_utf8_lossy(&err));
    }
    let v: serde_json::Value = serde_json::from_slice(&out)?;
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().ok_or_else(|| anyhow!("no throughput in iperf3 output"))?;
    Ok(bps / 1e9)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("berth-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<()> {
    if !berth_tests::have_root() {
        bail!("needs root (network namespaces, daemons)");
    }
    let opts = parse_args(args)?;
    fs::create_dir_all(&opts.out)?;
    let img = bench_image(&opts.out.join("cache"))?;
    let layer = &img.image.layers[0];
    let ns = NetNs::new().map_err(|e| anyhow!("netns: {e}"))?;
    let registry = Registry::start(&ns).map_err(|e| anyhow!("registry: {e}"))?;
    let pushed = Target {
        ns: &ns,
        addr: registry.addr(),
        auth: None,
    }
    .push_image(
        IMAGE_REPO,
        IMAGE_TAG,
        &img.image,
        ManifestFormat::DockerSchema2,
    )
    .map_err(|e| anyhow!("push: {e}"))?;
    let reference = format!("{}/{IMAGE_REPO}:{IMAGE_TAG}", registry.addr());
    let busybox = berth_tests::image::busybox().map_err(|e| anyhow!("busybox fixture: {e}"))?;
    Target {
        ns: &ns,
        addr: registry.addr(),
        auth: None,
    }
    .push_image(RUN_REPO, RUN_TAG, &busybox, ManifestFormat::DockerSchema2)
    .map_err(|e| anyhow!("push busybox: {e}"))?;
    let run_reference = format!("{}/{RUN_REPO}:{RUN_TAG}", registry.addr());
    eprintln!("pushed {reference} ({} bytes compressed)", layer.blob.len());
    let bench = Bench {
        opts: &opts,
        ns: &ns,
        registry: &registry,
        reference: reference.clone(),
        image_id: pushed.config_digest.clone(),
        run_reference,
    };
    let mut results = Vec::new();
    // The container scenarios share one set of daemons, started on first need.
    let mut run_daemons: Option<Vec<(PeerKind, Result<Daemon>)>> = None;
    for s in &opts.scenarios {
        let uses_run_daemons = matches!(
            s.as_str(),
            "run-rm" | "run-rm-netnone" | "run-d-rm" | "concurrent-20" | "publish-tcp"
        );
        if uses_run_daemons && run_daemons.is_none() {
            run_daemons = Some(bench.run_daemons());
        }
        if !uses_run_daemons {
            // Stop them before scenarios that start their own daemons or measure RSS.
            run_daemons = None;
        }
        let rd = run_daemons.as_deref().unwrap_or(&[]);
        results.push(match s.as_str() {
            "pull-cold" => bench.pull(true),
            "pull-warm" => bench.pull(false),
            "idle-rss" => bench.idle_rss(),
            "run-rm" => bench.run_rm(rd, false),
            "run-rm-netnone" => bench.run_rm(rd, true),
            "run-d-rm" => bench.run_d_rm(rd),
            "concurrent-20" => bench.concurrent(rd),
            "idle-rss-after-100" => bench.idle_rss_after_runs(),
            "publish-tcp" => bench.publish_tcp(rd),
            other => bail!("unknown scenario {other}"),
        });
    }
    drop(run_daemons);
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let versions = json!({
        "berthd": opts.berthd.display().to_string(),
        "dockerd": version_of(&opts.dockerd, "--version"),
        "containerd": version_of(Path::new("containerd"), "--version"),
        "docker_cli": version_of(Path::new("docker"), "--version"),
        "kernel": kernel.trim(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });
    let header = format!(
        "## berth-bench\n\nImage: `{reference}`, 1 gzip layer, {:.1} MB compressed, {:.1} MB uncompressed ({}).\n\
         Runs per peer: {}, peers alternated (A B B A ...), page cache dropped before cold pulls: {}. dockerd: {}; containerd: {}; CLI: {}; \
         kernel {}, {} CPUs.\n",
        layer.blob.len() as f64 / 1e6,
        img.uncompressed_bytes as f64 / 1e6,
        img.source,
        opts.runs,
        opts.drop_caches,
        versions["dockerd"].as_str().unwrap_or_default(),
        versions["containerd"].as_str().unwrap_or_default(),
        versions["docker_cli"].as_str().unwrap_or_default(),
        versions["kernel"].as_str().unwrap_or_default(),
        versions["cpus"],
    );
    let md = markdown(&header, &results);
    let doc = json!({
        "unix_time": started,
        "image": {
            "reference": reference,
            "source": img.source,
            "compressed_bytes": layer.blob.len(),
            "uncompressed_bytes": img.uncompressed_bytes,
            "layer_digest": layer.digest,
            "image_id": pushed.config_digest,
        },
        "runs": opts.runs,
        "drop_caches": opts.drop_caches,
        "versions": versions,
        "scenarios": results,
    });
    let json_text = serde_json::to_string_pretty(&doc)?;
    for (name, text) in [
        (format!("bench-{started}.json"), &json_text),
        ("latest.json".to_string(), &json_text),
        (format!("bench-{started}.md"), &md),
        ("latest.md".to_string(), &md),
    ] {
        fs::write(opts.out.join(name), text)?;
    }
    println!("{md}");
    eprintln!("wrote {}", opts.out.join("latest.{json,md}").display());
    drop(registry);
    drop(ns);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_alternate_direction() {
        assert_eq!(round_order(2, 0), [0, 1]);
        assert_eq!(round_order(2, 1), [1, 0]);
        assert_eq!(round_order(3, 2), [0, 1, 2]);
    }

    #[test]
    fn stats_median_min_max() {
        assert_eq!(stats(&[]), (None, None, None));
        assert_eq!(stats(&[3.0, 1.0, 2.0]), (Some(2.0), Some(1.0), Some(3.0)));
        assert_eq!(
            stats(&[4.0, 1.0, 2.0, 3.0]),
            (Some(2.5), Some(1.0), Some(4.0))
        );
    }

    #[test]
    fn proc_parsing() {
        assert_eq!(parse_ppid("42 (a) b) S 7 42 42 0"), Some(7));
        assert_eq!(parse_vm_rss("Name:\tx\nVmRSS:\t  1234 kB\n"), Some(1234));
        assert_eq!(parse_vm_rss("Name:\tkthread\n"), None);
        let stat = "9 (x) S 1 9 9 0 -1 4194560 10 0 0 0 7 3 2 1 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(13));
        assert_eq!(parse_cpu_ticks("9 (x) S 1"), None);
        assert_eq!(unescape_mountinfo("/a\\040b/c"), "/a b/c");
        let me = std::process::id();
        assert_eq!(process_tree(me)[0], me);
        assert!(vm_rss_kib(me) > 0);
    }

    #[test]
    fn verdicts() {
        let mk = |goal, b: &[f64], d: &[f64]| {
            let mut r = ScenarioResult {
                name: "x".into(),
                description: String::new(),
                unit: "s",
                goal,
                peers: vec![
                    PeerResult::new(PeerKind::Berthd),
                    PeerResult::new(PeerKind::Dockerd),
                ],
                ratio_berthd_over_peer: BTreeMap::new(),
                verdict: String::new(),
            };
            r.peers[0].samples = b.to_vec();
            r.peers[1].samples = d.to_vec();
            r.finish();
            r
        };
        let r = mk(Goal::SpeedupAtLeast(1.5), &[1.0, 1.0], &[2.0, 2.0]);
        assert_eq!(r.verdict, "pass");
        assert_eq!(r.ratio_berthd_over_peer["dockerd"], 0.5);
        let md = markdown("", std::slice::from_ref(&r));
        assert!(
            md.contains("| dockerd | 2 | 2.000 | 2.000 | 2.000 | 0.50 |"),
            "{md}"
        );
        assert!(
            md.contains("dockerd/berthd = 2.00x. Verdict: **pass**"),
            "{md}"
        );
        assert_eq!(
            mk(Goal::SpeedupAtLeast(1.5), &[1.0], &[1.2]).verdict,
            "fail"
        );
        assert_eq!(mk(Goal::SpeedupAtLeast(1.5), &[], &[1.2]).verdict, "n/a");
        assert_eq!(
            mk(Goal::BerthdBelow(20.0), &[12.0], &[100.0]).verdict,
            "pass"
        );
        assert_eq!(
            mk(Goal::BerthdBelow(20.0), &[25.0], &[100.0]).verdict,
            "fail"
        );
        let r = mk(Goal::None, &[1.0], &[3.0]);
        assert_eq!(r.verdict, "n/a");
        assert!(markdown("", &[r]).contains("dockerd/berthd = 3.00x"));
    }

    #[test]
    fn tar_tree_excludes_contents_only() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("usr/share/doc/pkg")).unwrap();
        fs::write(d.path().join("usr/share/doc/pkg/README"), "x").unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/hostname"), "h").unwrap();
        std::os::unix::fs::symlink("etc/hostname", d.path().join("link")).unwrap();
        let tar = tar_tree(d.path(), &["usr/share/doc"]).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "etc",
                "etc/hostname",
                "link",
                "usr",
                "usr/share",
                "usr/share/doc"
            ]
        );
        assert!(parse_args(&["--runs".into(), "0".into()]).is_err());
        let o = parse_args(&[
            "--peers".into(),
            "dockerd".into(),
            "--runs".into(),
            "3".into(),
        ])
        .unwrap();
        assert_eq!((o.peers, o.runs), (vec![PeerKind::Dockerd], 3));
    }
}
