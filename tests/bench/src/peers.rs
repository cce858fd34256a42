//! The Docker-API daemons under comparison: berthd, dockerd 20.10 and podman 4 (its Docker
//! API service), each driven by the same docker CLI.
//!
//! Each peer gets its own loopback-only network namespace, its own registry process in that
//! namespace (all of them serving one storage directory, seeded once, at the same address
//! `127.0.0.1:5000`, so every peer pulls the same bytes by the same reference), its own
//! data/exec/state directories under one temp dir, and the same process isolation
//! ([`crate::isolate`]). Nothing a peer does reaches the host's network or mount table.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_tests::netns::{command_in, NetNs};
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::exec::{checked, Out, Timed};
use crate::isolate::Isolation;
use crate::procs;
use crate::scenario::Subject;

/// Where every peer's registry listens, inside that peer's namespace.
pub const REGISTRY_ADDR: &str = "127.0.0.1:5000";
/// Caller environment that could point a docker client somewhere else or change what it
/// asks: removed from every CLI the bench runs.
pub const CLIENT_ENV: &[&str] = &["DOCKER_API_VERSION", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_DEFAULT_PLATFORM"];
/// One docker CLI call may take this long before it counts as failed.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    Berthd,
    Dockerd,
    Podman,
}

impl PeerKind {
    pub const ALL: [PeerKind; 3] = [PeerKind::Berthd, PeerKind::Dockerd, PeerKind::Podman];

    pub fn parse(s: &str) -> Result<PeerKind> {
        PeerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| Error::Usage(format!("unknown peer {s} (berthd, dockerd, podman)")))
    }

    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Berthd => "berthd",
            PeerKind::Dockerd => "dockerd",
            PeerKind::Podman => "podman",
        }
    }
}

/// Programs the bench runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub berthd: PathBuf,
    pub dockerd: PathBuf,
    pub podman: PathBuf,
    /// The one docker CLI that drives every peer.
    pub cli: PathBuf,
}

/// How to start one peer: program, arguments, environment, config files, mounts. Pure data,
/// so what each peer is given can be read (and tested) in one place.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Files written before the start.
    pub files: Vec<(PathBuf, String)>,
    /// Directories created before the start.
    pub dirs: Vec<PathBuf>,
    /// Fresh tmpfs mounts in the daemon's private mount namespace.
    pub tmpfs: Vec<PathBuf>,
    /// (private source, fixed host path) bind mounts in that namespace.
    pub binds: Vec<(PathBuf, PathBuf)>,
}

/// Per-peer paths under its temp dir.
pub struct Paths<'a>(pub &'a Path);

impl Paths<'_> {
    pub fn socket(&self) -> PathBuf {
        self.0.join("docker.sock")
    }
    pub fn data(&self) -> PathBuf {
        self.0.join("data")
    }
    pub fn exec(&self) -> PathBuf {
        self.0.join("exec")
    }
    pub fn log(&self) -> PathBuf {
        self.0.join("daemon.log")
    }
    pub fn cli_config(&self) -> PathBuf {
        self.0.join("cli-config")
    }
}

/// kernel.pid_max (what containers/common caps podman's own RLIMIT_NPROC to).
pub fn pid_max() -> u64 {
    fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

/// The (nofile, nproc) limits podman is configured to give containers (containers.conf
/// `default_ulimits`), from the hard limits the service inherits and kernel.pid_max.
///
/// Why podman needs this here: rootful podman asks crun for RLIMIT_NOFILE = RLIMIT_NPROC =
/// 1048576 for every container unless configured otherwise. Raising a hard limit above the
/// one crun inherited needs CAP_SYS_RESOURCE, which the capability bounding set of these
/// machines lacks (the reason `--cap-add SYS_RESOURCE` fails here too), so crun's setrlimit
/// fails with EPERM, `crun create` fails, and the compat attach of `docker run` answers 409.
/// On top of that, when podman loads its configuration, containers/common lowers the
/// service's own RLIMIT_NPROC to kernel.pid_max (32768 here), so nproc above pid_max fails
/// the same way even when it is the service's original hard limit. So podman hands out the
/// highest limits this host allows, as an admin of such a host would configure it.
pub fn podman_ulimits(hard_limits: (u64, u64), pid_max: u64) -> (u64, u64) {
    (hard_limits.0, hard_limits.1.min(pid_max))
}

/// The launch plan of `kind` with its state under `dir`.
///
/// `hard_limits` (RLIMIT_NOFILE, RLIMIT_NPROC) are the highest limits a daemon started by the
/// bench may hand to containers. `cgroup_parent` is a cgroup of the bench's own, for peers
/// that take a daemon-wide parent (dockerd).
pub fn launch(
    kind: PeerKind,
    dir: &Path,
    bins: &Binaries,
    hard_limits: (u64, u64),
    cgroup_parent: &str,
) -> Launch {
    let p = Paths(dir);
    let host = format!("unix://{}", p.socket().display());
    let common = |l: &mut Launch| {
        l.args.extend([
            "--host".into(),
            host.clone(),
            "--data-root".into(),
            p.data().display().to_string(),
            "--exec-root".into(),
            p.exec().display().to_string(),
            "--pidfile".into(),
            dir.join("daemon.pid").display().to_string(),
            "--insecure-registry".into(),
            REGISTRY_ADDR.into(),
        ]);
    };
    let mut l = Launch {
        tmpfs: vec!["/run".into()],
        ..Default::default()
    };
    match kind {
        PeerKind::Berthd => {
            l.program = bins.berthd.clone();
            common(&mut l);
            l.args.extend(["--log-level".into(), "info".into()]);
        }
        PeerKind::Dockerd => {
            l.program = bins.dockerd.clone();
            common(&mut l);
            let config = dir.join("daemon.json");
            l.files.push((config.clone(), "{}\n".into()));
            l.args.extend([
                // Not /etc/docker/daemon.json: the host's settings stay out of the comparison.
                "--config-file".into(),
                config.display().to_string(),
                "--storage-driver".into(),
                "overlay2".into(),
                // Containers' cgroups under a parent of the bench's own, not the shared /docker.
                "--cgroup-parent".into(),
                cgroup_parent.into(),
            ]);
        }
        PeerKind::Podman => {
            let (nofile, nproc) = podman_ulimits(hard_limits, pid_max());
            let root = dir.join("root");
            let runroot = dir.join("runroot");
            let tmp = dir.join("tmp");
            let net = dir.join("networks");
            let varlib = dir.join("var-lib-containers");
            let containers_conf = format!(
                "[containers]\n\
                 log_driver = \"k8s-file\"\n\
                 default_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n\
                 [network]\n\
                 network_backend = \"netavark\"\n\
                 network_config_dir = \"{net}\"\n\
                 [engine]\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 events_logfile_path = \"{events}\"\n\
                 runtime = \"crun\"\n\
                 tmp_dir = \"{tmp}\"\n\
                 static_dir = \"{static_dir}\"\n\
                 volume_path = \"{volumes}\"\n",
                net = net.display(),
                events = dir.join("events.log").display(),
                tmp = tmp.display(),
                static_dir = root.join("libpod").display(),
                volumes = root.join("volumes").display(),
            );
            let storage_conf = format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                root.display(),
                runroot.display()
            );
            // No search registries: a short name fails instead of going to a public host.
            let registries_conf = format!(
                "unqualified-search-registries = []\n\n[[registry]]\nlocation = \"{REGISTRY_ADDR}\"\ninsecure = true\n"
            );
            for (name, text) in [
                ("containers.conf", containers_conf),
                ("storage.conf", storage_conf),
                ("registries.conf", registries_conf),
            ] {
                let path = dir.join(name);
                l.env.push((
                    match name {
                        "containers.conf" => "CONTAINERS_CONF",
                        "storage.conf" => "CONTAINERS_STORAGE_CONF",
                        _ => "CONTAINERS_REGISTRIES_CONF",
                    }
                    .into(),
                    path.display().to_string(),
                ));
                l.files.push((path, text));
            }
            l.dirs.extend([root, runroot, tmp, net, varlib.clone()]);
            // containers/image keeps its blob-info cache at this fixed path for root.
            l.binds.push((varlib, "/var/lib/containers".into()));
            l.program = bins.podman.clone();
            l.args.extend([
                "system".into(),
                "service".into(),
                "--time".into(),
                "0".into(),
                host,
            ]);
        }
    }
    l
}

/// A registry process in a peer's namespace, serving the shared storage.
pub(crate) struct NsRegistry {
    child: Child,
}

impl NsRegistry {
    pub(crate) fn start(ns: &NetNs, dir: &Path, storage: &Path) -> Result<NsRegistry> {
        let config = dir.join("registry.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {REGISTRY_ADDR}\n",
                storage.display()
            ),
        )
        .ctx(|| "write registry config".into())?;
        let log = fs::File::create(dir.join("registry.log")).ctx(|| "registry log".into())?;
        let child = ns
            .command("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().ctx(|| "dup".into())?)
            .stderr(log)
            .spawn()
            .ctx(|| "spawn docker-registry".into())?;
        let mut r = NsRegistry { child };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(resp) = berth_tests::http::request(ns, "GET", REGISTRY_ADDR, "/v2/", &[], b"")
            {
                if resp.status == 200 {
                    return Ok(r);
                }
            }
            if let Ok(Some(st)) = r.child.try_wait() {
                return Err(Error::Unexpected(format!(
                    "docker-registry exited {st}: {}",
                    fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::Unexpected(
                    "docker-registry did not answer /v2/".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One peer: namespace, registry, directories, and (when started) its daemon.
pub struct Peer {
    pub kind: PeerKind,
    pub ns: NetNs,
    dir: tempfile::TempDir,
    launch: Launch,
    cli: PathBuf,
    registry: Option<NsRegistry>,
    registry_pid: u32,
    daemon: Mutex<Option<Child>>,
    /// Mount namespaces of every daemon process started (for the leak check), with an open
    /// handle each: a held namespace cannot be freed, so its inode number cannot be reused by
    /// someone else's namespace while the bench still matches processes against it.
    mount_namespaces: Mutex<Vec<(u64, fs::File)>>,
    /// Container ids every daemon instance reported creating (from its events).
    container_ids: Mutex<BTreeSet<String>>,
    started_unix: Mutex<i64>,
}

impl Subject for Peer {
    fn name(&self) -> &str {
        self.kind.name()
    }
}

impl Peer {
    /// Namespace, directories and registry; the daemon is started by [`Peer::start`].
    pub fn new(
        kind: PeerKind,
        bins: &Binaries,
        storage: &Path,
        hard_limits: (u64, u64),
        cgroup_parent: &str,
    ) -> Result<Peer> {
        let ns = NetNs::new()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-bench-{}-", kind.name()))
            .tempdir()
            .ctx(|| "tempdir".into())?;
        fs::create_dir_all(Paths(dir.path()).cli_config()).ctx(|| "cli config dir".into())?;
        let registry = NsRegistry::start(&ns, dir.path(), storage)?;
        let registry_pid = registry.child.id();
        let launch = launch(kind, dir.path(), bins, hard_limits, cgroup_parent);
        Ok(Peer {
            kind,
            ns,
            dir,
            launch,
            cli: bins.cli.clone(),
            registry: Some(registry),
            registry_pid,
            daemon: Mutex::new(None),
            mount_namespaces: Mutex::new(Vec::new()),
            container_ids: Mutex::new(BTreeSet::new()),
            started_unix: Mutex::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        Paths(self.dir.path()).socket()
    }

    /// The registry every image reference of this peer points at.
    pub fn registry(&self) -> &'static str {
        REGISTRY_ADDR
    }

    pub fn log_tail(&self, n: usize) -> String {
        berth_tests::berthd::tail(
            &fs::read_to_string(Paths(self.dir.path()).log()).unwrap_or_default(),
            n,
        )
    }

    /// Start the daemon and wait until it answers `/_ping`.
    pub fn start(&self) -> Result<()> {
        let mut slot = self.daemon.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Ok(());
        }
        for d in &self.launch.dirs {
            fs::create_dir_all(d).ctx(|| format!("mkdir {}", d.display()))?;
        }
        for (p, text) in &self.launch.files {
            fs::write(p, text).ctx(|| format!("write {}", p.display()))?;
        }
        for (_, target) in &self.launch.binds {
            if !target.exists() {
                return Err(Error::Start {
                    peer: self.name().into(),
                    detail: format!("bind target {} does not exist", target.display()),
                });
            }
        }
        let _ = fs::remove_file(self.socket());
        let log_path = Paths(self.dir.path()).log();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .ctx(|| "daemon log".into())?;
        let mut cmd = Command::new(&self.launch.program);
        cmd.args(&self.launch.args)
            .envs(self.launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().ctx(|| "dup".into())?)
            .stderr(log);
        Isolation {
            netns: Some(self.ns.path()),
            private_mounts: true,
            hide_unified_cgroup: crate::machine::hybrid_unified_mounted(),
            tmpfs: self.launch.tmpfs.clone(),
            binds: self.launch.binds.clone(),
            nofile_soft_to_hard: true,
        }
        .apply(&mut cmd)?;
        let mut child = cmd.spawn().map_err(|e| Error::Start {
            peer: self.name().into(),
            detail: format!("spawn {}: {e}", self.launch.program.display()),
        })?;
        let ns_file = format!("/proc/{}/ns/mnt", child.id());
        if let (Some(ino), Ok(handle)) = (
            procs::ns_inode(Path::new(&ns_file)),
            fs::File::open(&ns_file),
        ) {
            self.mount_namespaces
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((ino, handle));
        }
        *self.started_unix.lock().unwrap_or_else(|e| e.into_inner()) =
            chrono::Utc::now().timestamp() - 1;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(r) = berth_tests::berthd::api_request(&self.socket(), "GET", "/_ping", None) {
                if r.status == 200 {
                    break;
                }
            }
            if let Ok(Some(st)) = child.try_wait() {
                return Err(Error::Start {
                    peer: self.name().into(),
                    detail: format!("exited {st}:\n{}", self.log_tail(20)),
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Start {
                    peer: self.name().into(),
                    detail: format!("no answer to /_ping in 90 s:\n{}", self.log_tail(20)),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        *slot = Some(child);
        Ok(())
    }

    /// Pid of the running daemon.
    pub fn pid(&self) -> Option<u32> {
        self.daemon
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.id())
    }

    /// Stop (after removing every container) and start again: a fresh daemon on the same
    /// data root.
    pub fn restart(&self) -> Result<()> {
        self.stop();
        self.start()
    }

    /// The daemon's processes: everything in the peer's network namespace except the
    /// registry (the daemon, containerd, shims, conmon, proxies; containers have their own
    /// namespaces).
    pub fn processes(&self) -> Vec<u32> {
        match procs::ns_inode(&self.ns.path()) {
            Some(ino) => procs::pids_in_ns("net", ino)
                .into_iter()
                .filter(|p| *p != self.registry_pid)
                .collect(),
            None => Vec::new(),
        }
    }

    /// `docker <args>` against this peer, as a Command (not yet run): the bench's one CLI,
    /// in the peer's namespace, with a private config dir and nothing from the caller's
    /// environment that could point it elsewhere.
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut cmd = command_in(&self.ns.path(), &self.cli);
        for var in CLIENT_ENV {
            cmd.env_remove(var);
        }
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("DOCKER_CONFIG", Paths(self.dir.path()).cli_config())
            // The classic /build API for every peer: podman's compat API has no BuildKit
            // sessions, and neither has berthd.
            .env("DOCKER_BUILDKIT", "0")
            .args(args);
        cmd
    }

    /// Run `docker <args>`, timed, failing on a non-zero exit.
    pub fn docker_timed(&self, args: &[&str], out: Out) -> Result<Timed> {
        checked(self.docker_command(args), out, CLI_TIMEOUT).map_err(|e| self.annotate(e))
    }

    /// Run `docker <args>` (untimed use) and return stdout.
    pub fn docker(&self, args: &[&str]) -> Result<String> {
        Ok(self.docker_timed(args, Out::Capture)?.stdout_text())
    }

    /// Add the daemon's log tail to a CLI failure, so reports say why.
    fn annotate(&self, e: Error) -> Error {
        match e {
            Error::Command {
                command,
                status,
                stderr,
            } if self.pid().is_none() => Error::Command {
                command,
                status,
                stderr: format!("{stderr} (daemon not running; log: {})", self.log_tail(5)),
            },
            other => other,
        }
    }

    /// Remove every container of this daemon.
    pub fn remove_all_containers(&self) {
        if let Ok(ids) = self.docker(&["ps", "-aq", "--no-trunc"]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                if let Err(e) = self.docker(&args) {
                    eprintln!("{}: rm -f of leftover containers: {e}", self.name());
                }
            }
        }
    }

    /// Ids of containers this daemon instance created (from its event log).
    fn record_created_containers(&self) {
        let since = *self.started_unix.lock().unwrap_or_else(|e| e.into_inner());
        let until = chrono::Utc::now().timestamp() + 1;
        let out = self.docker(&[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until.to_string(),
            "--filter",
            "type=container",
            "--filter",
            "event=create",
            "--format",
            "{{.ID}}",
        ]);
        match out {
            Ok(text) => {
                let mut ids = self.container_ids.lock().unwrap_or_else(|e| e.into_inner());
                ids.extend(text.split_whitespace().map(str::to_string));
            }
            Err(e) => eprintln!("{}: events: {e}", self.name()),
        }
    }

    /// Stop the daemon: remove its containers, SIGTERM (SIGKILL after 30 s), then kill
    /// whatever is left in the peer's own namespaces (network and the daemon's mount
    /// namespace), which by construction only holds what this daemon started.
    pub fn stop(&self) {
        if self.pid().is_none() {
            return;
        }
        self.record_created_containers();
        self.remove_all_containers();
        let daemon = self.pid();
        let others: Vec<String> = self
            .processes()
            .into_iter()
            .filter(|p| Some(*p) != daemon)
            .map(|p| format!("{p} {}", procs::comm(p)))
            .collect();
        if !others.is_empty() {
            eprintln!(
                "{}: besides the daemon, running at stop (all containers removed): {others:?}",
                self.name()
            );
        }
        let mut slot = self.daemon.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut child) = slot.take() else { return };
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
                eprintln!("{} ignored SIGTERM for 30 s, killing it", self.name());
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(slot);
        self.kill_leftovers();
    }

    /// SIGKILL every process left in this peer's network namespace (but the registry) or in
    /// a mount namespace of one of its daemons, and wait for them to go.
    fn kill_leftovers(&self) {
        let mnts: Vec<u64> = self
            .mount_namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(ino, _)| *ino)
            .collect();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut left: Vec<u32> = self.processes();
            for m in &mnts {
                left.extend(procs::pids_in_ns("mnt", *m));
            }
            left.sort();
            left.dedup();
            left.retain(|p| *p != std::process::id());
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "{}: processes still alive after SIGKILL: {left:?}",
                    self.name()
                );
                return;
            }
            for p in &left {
                eprintln!(
                    "{}: killing leftover {} ({})",
                    self.name(),
                    p,
                    procs::comm(*p)
                );
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*p as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemons' mount namespaces (inode, open handle), handed over to the leak check.
    pub fn take_mount_namespaces(&self) -> Vec<(u64, fs::File)> {
        std::mem::take(
            &mut *self
                .mount_namespaces
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    pub fn container_ids(&self) -> BTreeSet<String> {
        self.container_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stop the daemon and the registry; the namespace and directories go when `self` drops.
    pub fn shutdown(&mut self) {
        self.stop();
        self.registry = None;
        procs::unmount_under(self.dir.path());
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bins() -> Binaries {
        Binaries {
            berthd: "/b/berthd".into(),
            dockerd: "/usr/sbin/dockerd".into(),
            podman: "/usr/bin/podman".into(),
            cli: "/usr/local/bin/docker".into(),
        }
    }

    #[test]
    fn every_peer_gets_its_own_dirs_and_the_same_registry() {
        let dir = Path::new("/tmp/x");
        for kind in PeerKind::ALL {
            let l = launch(kind, dir, &bins(), (20000, 32768), "/berth-bench-1-dockerd");
            let all = format!("{:?} {:?} {:?}", l.args, l.env, l.files);
            assert!(all.contains("/tmp/x/docker.sock"), "{kind:?}: {all}");
            assert!(l.tmpfs.contains(&PathBuf::from("/run")));
            assert!(all.contains(REGISTRY_ADDR));
            assert!(
                !all.contains("/var/lib/docker") && !all.contains("\"/run/"),
                "{all}"
            );
        }
        let d = launch(
            PeerKind::Dockerd,
            dir,
            &bins(),
            (1, 1),
            "/berth-bench-1-dockerd",
        );
        let i = d.args.iter().position(|a| a == "--cgroup-parent").unwrap();
        assert_eq!(d.args[i + 1], "/berth-bench-1-dockerd");
        assert!(d.args.contains(&"--config-file".to_string()));
    }

    #[test]
    fn podman_limits_are_capped_like_podman_caps_itself() {
        assert_eq!(podman_ulimits((20000, 96364), 32768), (20000, 32768));
        assert_eq!(podman_ulimits((1048576, 4096), 4194304), (1048576, 4096));
    }

    #[test]
    fn podman_hands_out_the_hosts_hard_limits() {
        let l = launch(
            PeerKind::Podman,
            Path::new("/tmp/p"),
            &bins(),
            (20000, 96364),
            "/x",
        );
        let conf = &l
            .files
            .iter()
            .find(|(p, _)| p.ends_with("containers.conf"))
            .unwrap()
            .1;
        assert!(
            conf.contains(&format!(
                "default_ulimits = [\"nofile=20000:20000\", \"nproc={n}:{n}\"]",
                n = 96364.min(pid_max())
            )),
            "{conf}"
        );
        assert!(conf.contains("cgroup_manager = \"cgroupfs\""));
        assert!(conf.contains("runtime = \"crun\""));
        let reg = &l
            .files
            .iter()
            .find(|(p, _)| p.ends_with("registries.conf"))
            .unwrap()
            .1;
        assert!(reg.contains("unqualified-search-registries = []"));
        assert_eq!(l.args[..2], ["system", "service"]);
        assert_eq!(l.args.last().unwrap(), "unix:///tmp/p/docker.sock");
        assert!(l.binds.contains(&(
            PathBuf::from("/tmp/p/var-lib-containers"),
            "/var/lib/containers".into()
        )));
        assert!(l.env.iter().any(|(k, _)| k == "CONTAINERS_CONF"));
        assert_eq!(PeerKind::parse("podman").unwrap(), PeerKind::Podman);
        assert!(PeerKind::parse("docker").is_err());
    }
}
