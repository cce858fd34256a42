//! One run of the whole suite: set up, measure every group, tear down, check for leaks.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use berth_tests::push::{ManifestFormat, Target};

use crate::error::{Error, IoContext, Result};
use crate::leaks::{self, Footprint, HostNet};
use crate::machine::{loadavg, Machine};
use crate::peers::{Binaries, Peer, PeerKind, REGISTRY_ADDR};
use crate::report::{Group, LeakCheck, Report};
use crate::runtimes::{self, OciRuntime, BERTH_RUNTIME};
use crate::scenario::{measure, Scenario, ScenarioResult, Slot};
use crate::scenarios::vm::{vm_scenarios, VmCtx};
use crate::scenarios::{self, Ctx, WithRounds};
use crate::vm::{BareBoot, BerthVm, VmPaths, VmSubject, BARE, NATIVE, VM};

/// Repositories the images are pushed under.
pub const BUSYBOX_REPO: &str = "bench/busybox";
pub const PULL_REPO: &str = "bench/debian";
pub const PULL_TAG: &str = "bookworm-minbase";

#[derive(Debug, Clone)]
pub struct Options {
    pub peers: Vec<PeerKind>,
    /// Only these scenarios (None: all).
    pub only: Option<Vec<String>>,
    pub skip: Vec<String>,
    /// Rounds for every scenario (overrides the defaults).
    pub rounds_all: Option<usize>,
    /// Rounds per scenario name (overrides `rounds_all`).
    pub rounds: HashMap<String, usize>,
    /// Runtimes for the runtime group, reference first.
    pub runtimes: Vec<String>,
    pub berth_runtime: Option<PathBuf>,
    pub bins: Binaries,
    pub cache: PathBuf,
    pub drop_caches: bool,
    /// The VM group's programs and image.
    pub vm: VmPaths,
}

impl Options {
    pub fn selected_any(&self, names: &[String]) -> bool {
        names.iter().any(|n| self.selected(n))
    }

    pub fn selected(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|s| s == name))
            && !self.skip.iter().any(|s| s == name)
    }

    fn rounds_for(&self, name: &str) -> Option<usize> {
        self.rounds.get(name).copied().or(self.rounds_all)
    }

    /// True when this is a full run (every peer, every scenario, default rounds), whose
    /// result may replace BENCHMARKS.md.
    pub fn is_full_run(&self) -> bool {
        self.peers == PeerKind::ALL
            && self.only.is_none()
            && self.skip.is_empty()
            && self.rounds_all.is_none()
            && self.rounds.is_empty()
            && self.drop_caches
    }
}

/// Every scenario name the suite knows, with its title (for `--list` and validation).
pub fn all_scenarios() -> Vec<(String, String)> {
    let ctx = Arc::new(Ctx {
        busybox: "busybox".into(),
        pull_ref: "debian".into(),
        pull_image_id: String::new(),
        registry_storage: PathBuf::new(),
        programs: Vec::new(),
        drop_caches: true,
    });
    let mut v: Vec<(String, String)> = scenarios::daemon_scenarios(&ctx)
        .iter()
        .map(|s| s.meta())
        .map(|m| (m.name, m.title))
        .collect();
    v.extend(
        scenarios::runtime_scenarios()
            .iter()
            .map(|s| s.meta())
            .map(|m| (m.name, m.title)),
    );
    v.extend(
        vm_scenarios(&Arc::new(VmCtx {
            busybox: "busybox".into(),
        }))
        .iter()
        .map(|s| s.meta())
        .map(|m| (m.name, m.title)),
    );
    v
}

fn first_line(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
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

/// The workspace commit berthd was built from (with a mark for uncommitted changes).
fn git_describe() -> String {
    let root = berth_tests::workspace_root();
    let head = first_line(
        Path::new("git"),
        &[
            "-C",
            &root.display().to_string(),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    let dirty = Command::new("git")
        .args([
            "-C",
            &root.display().to_string(),
            "status",
            "--porcelain",
            "--untracked-files=no",
        ])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        format!("{head} + uncommitted changes")
    } else {
        head
    }
}

fn versions(opts: &Options) -> BTreeMap<String, String> {
    let b = &opts.bins;
    let mut v = BTreeMap::new();
    v.insert(
        "berthd".into(),
        format!(
            "{} (git {})",
            first_line(&b.berthd, &["--version"]),
            git_describe()
        ),
    );
    v.insert("dockerd".into(), first_line(&b.dockerd, &["--version"]));
    v.insert(
        "containerd".into(),
        first_line(Path::new("containerd"), &["--version"]),
    );
    v.insert("runc".into(), first_line(Path::new("runc"), &["--version"]));
    v.insert("podman".into(), first_line(&b.podman, &["--version"]));
    v.insert("crun".into(), first_line(Path::new("crun"), &["--version"]));
    v.insert(
        "conmon".into(),
        first_line(Path::new("conmon"), &["--version"]),
    );
    v.insert(
        "netavark".into(),
        first_line(Path::new("/usr/lib/podman/netavark"), &["--version"]),
    );
    v.insert(
        "docker CLI".into(),
        format!(
            "{} ({})",
            first_line(&b.cli, &["--version"]),
            b.cli.display()
        ),
    );
    v.insert(
        "docker-registry".into(),
        first_line(Path::new("/usr/bin/docker-registry"), &["--version"]),
    );
    if let Some(rt) = &opts.berth_runtime {
        v.insert(BERTH_RUNTIME.into(), first_line(rt, &["--version"]));
    }
    let vm = &opts.vm;
    if opts.selected_any(&vm_scenario_names()) {
        v.insert(
            "berth (host agent)".into(),
            format!(
                "{} (git {})",
                first_line(&vm.berth, &["--version"]),
                git_describe()
            ),
        );
        if let Some(q) = &vm.qemu {
            v.insert("qemu".into(), first_line(q, &["--version"]));
        }
        if let Some(h) = &vm.vhost_vsock {
            v.insert("vhost-device-vsock".into(), first_line(h, &["--version"]));
        }
        v.insert("VM image".into(), vm_image_version(&vm.images));
    }
    v
}

/// The kernel and sizes from `vm-images/out/manifest.json`, in one line.
fn vm_image_version(images: &Path) -> String {
    let Ok(text) = std::fs::read(images.join("manifest.json")) else {
        return "not built".into();
    };
    let Ok(m) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return "unreadable manifest.json".into();
    };
    let mib = |k: &str| m[k]["bytes"].as_f64().map(|b| b / 1048576.0);
    format!(
        "{} {}, runtime {}, vmlinux {:.0} MiB, initramfs {:.1} MiB, system disk {:.0} MiB \
         (vm-images/out/manifest.json)",
        m["kernel_package"].as_str().unwrap_or("?"),
        m["kernel_package_version"].as_str().unwrap_or("?"),
        m["runtime"].as_str().unwrap_or("?"),
        mib("vmlinux").unwrap_or(0.0),
        mib("initramfs").unwrap_or(0.0),
        mib("system").unwrap_or(0.0)
    )
}

fn vm_scenario_names() -> Vec<String> {
    vm_scenarios(&Arc::new(VmCtx {
        busybox: String::new(),
    }))
    .iter()
    .map(|s| s.meta().name)
    .collect()
}

/// Programs worth reading back into the page cache after a drop.
fn programs(opts: &Options) -> Vec<PathBuf> {
    let mut v = vec![
        opts.bins.cli.clone(),
        opts.bins.berthd.clone(),
        opts.bins.berthd.with_file_name("berth-shim"),
        opts.bins.berthd.with_file_name("berth-oci"),
        opts.bins.dockerd.clone(),
        opts.bins.podman.clone(),
    ];
    for p in [
        "containerd",
        "containerd-shim-runc-v2",
        "runc",
        "crun",
        "conmon",
        "docker-proxy",
    ] {
        if let Ok(path) = runtimes::find_on_path(p) {
            v.push(path);
        }
    }
    v.push("/usr/lib/podman/netavark".into());
    v.retain(|p| p.is_file());
    v
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Run `scenario` with the round override, if any.
fn run_one<S: crate::scenario::Subject + ?Sized>(
    opts: &Options,
    s: &dyn Scenario<S>,
    slots: &[Slot<'_, S>],
    reference: &str,
) -> ScenarioResult {
    let name = s.meta().name;
    eprintln!("== {name}");
    match opts.rounds_for(&name) {
        Some(rounds) => measure(&WithRounds { inner: s, rounds }, slots, reference),
        None => measure(s, slots, reference),
    }
}

pub fn run(opts: &Options) -> Result<Report> {
    if !berth_tests::have_root() {
        return Err(Error::Usage(
            "needs root (network namespaces, daemons)".into(),
        ));
    }
    let started = now();
    let mut machine = Machine::probe();
    let host_before = HostNet::capture();
    let versions = versions(opts);
    let marker = format!("berth-bench-{}", std::process::id());
    let dockerd_parent = format!("/{marker}-dockerd");
    let runtime_parent = format!("/{marker}-rt");
    let mut cgroup_parents = vec![dockerd_parent.clone(), runtime_parent.clone()];
    // podman (cgroupfs) puts containers and conmon under /libpod_parent: the bench's own only
    // if no other podman made it first.
    let uses_podman = opts.peers.contains(&PeerKind::Podman);
    if uses_podman
        && !leaks::cgroup_roots()
            .iter()
            .any(|r| r.join("libpod_parent").exists())
    {
        cgroup_parents.push("/libpod_parent".into());
    }
    let mut made_host_dirs = Vec::new();
    let varlib = Path::new("/var/lib/containers");
    if uses_podman && !varlib.exists() {
        std::fs::create_dir_all(varlib).ctx(|| "mkdir /var/lib/containers".into())?;
        made_host_dirs.push(varlib.to_path_buf());
    }
    let mut fp = Footprint {
        markers: vec![marker.clone()],
        cgroup_parents: cgroup_parents.clone(),
        ..Default::default()
    };
    let mut setup = Vec::new();

    let daemon_group = run_daemons(opts, &dockerd_parent, &mut fp, &mut setup)?;
    let runtime_group = run_runtimes(opts, &runtime_parent, &mut fp, &mut setup)?;
    let vm_group = run_vm(opts, &mut fp, &mut setup)?;

    leaks::remove_cgroup_parents(&cgroup_parents);
    for d in made_host_dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
    let (checked, leaks_found) = leaks::check(&fp);
    drop(fp);
    let mut leak_check = LeakCheck {
        checked,
        leaks: leaks_found,
        notes: leaks::host_net_notes(&host_before, &HostNet::capture()),
    };
    if !made_host_dirs.is_empty() {
        leak_check.notes.push(format!(
            "created (empty) and removed again: {:?}",
            made_host_dirs
        ));
    }
    machine.load_end = loadavg();
    let mut groups = Vec::new();
    groups.extend(daemon_group);
    groups.extend(runtime_group);
    groups.extend(vm_group);
    Ok(Report {
        started,
        finished: now(),
        machine,
        versions,
        setup,
        leak_check,
        groups,
    })
}

fn daemon_scenario_names() -> Vec<String> {
    let ctx = Arc::new(Ctx {
        busybox: String::new(),
        pull_ref: String::new(),
        pull_image_id: String::new(),
        registry_storage: PathBuf::new(),
        programs: Vec::new(),
        drop_caches: true,
    });
    scenarios::daemon_scenarios(&ctx)
        .iter()
        .map(|s| s.meta().name)
        .collect()
}

fn run_daemons(
    opts: &Options,
    dockerd_parent: &str,
    fp: &mut Footprint,
    setup: &mut Vec<String>,
) -> Result<Option<Group>> {
    let daemon_names: Vec<String> = daemon_scenario_names();
    if !daemon_names.iter().any(|n| opts.selected(n)) || opts.peers.is_empty() {
        return Ok(None);
    }
    let pull = crate::image::pull_image(&opts.cache)?;
    let busybox = berth_tests::image::busybox()?;
    let storage = tempfile::Builder::new()
        .prefix("berth-bench-registry-")
        .tempdir()
        .ctx(|| "registry storage".into())?;
    fp.dirs.push(storage.path().to_path_buf());
    let hard = crate::isolate::hard_limits();

    // Namespaces and registries first, then seed once, then start the daemons.
    let mut peers: Vec<(PeerKind, Result<Peer>)> = opts
        .peers
        .iter()
        .map(|&k| {
            (
                k,
                Peer::new(k, &opts.bins, storage.path(), hard, dockerd_parent),
            )
        })
        .collect();
    for p in peers.iter().filter_map(|(_, p)| p.as_ref().ok()) {
        fp.netns_files.push(p.ns.path());
        if let (Some(ino), Ok(h)) = (
            crate::procs::ns_inode(&p.ns.path()),
            std::fs::File::open(p.ns.path()),
        ) {
            fp.netns_inodes.push(ino);
            fp.handles.push(h);
        }
        fp.dirs.push(p.dir().to_path_buf());
    }
    let seeder = peers
        .iter()
        .find_map(|(_, p)| p.as_ref().ok())
        .ok_or_else(|| Error::Unexpected("no peer namespace could be set up".into()))?;
    let target = Target {
        ns: &seeder.ns,
        addr: REGISTRY_ADDR,
        auth: None,
    };
    let pushed_pull = target.push_image(
        PULL_REPO,
        PULL_TAG,
        &pull.image,
        ManifestFormat::DockerSchema2,
    )?;
    target.push_image(
        BUSYBOX_REPO,
        "latest",
        &busybox,
        ManifestFormat::DockerSchema2,
    )?;
    for p in peers.iter().filter_map(|(_, p)| p.as_ref().ok()) {
        // Every namespace's registry serves the same manifest (the shared storage).
        let (_, bytes) = Target {
            ns: &p.ns,
            addr: REGISTRY_ADDR,
            auth: None,
        }
        .get_manifest(PULL_REPO, PULL_TAG)?;
        if berth_tests::sha256_digest(&bytes) != pushed_pull.digest {
            return Err(Error::Unexpected(format!(
                "{}'s registry serves another manifest",
                p.kind.name()
            )));
        }
    }
    let mut slots_missing: Vec<(PeerKind, String)> = Vec::new();
    for (k, p) in &mut peers {
        match p {
            Ok(peer) => {
                eprintln!("starting {}", k.name());
                if let Err(e) = peer.start() {
                    eprintln!("{}: {e}", k.name());
                    slots_missing.push((*k, e.to_string()));
                }
            }
            Err(e) => slots_missing.push((*k, format!("setup: {e}"))),
        }
    }
    let ctx = Arc::new(Ctx {
        busybox: format!("{REGISTRY_ADDR}/{BUSYBOX_REPO}:latest"),
        pull_ref: format!("{REGISTRY_ADDR}/{PULL_REPO}:{PULL_TAG}"),
        pull_image_id: pushed_pull.config_digest.clone(),
        registry_storage: storage.path().to_path_buf(),
        programs: programs(opts),
        drop_caches: opts.drop_caches,
    });
    let slots: Vec<Slot<'_, Peer>> = peers
        .iter()
        .map(
            |(k, p)| match (p, slots_missing.iter().find(|(m, _)| m == k)) {
                (Ok(peer), None) => Slot::Ready(peer),
                (_, Some((_, reason))) => Slot::Missing {
                    name: k.name().into(),
                    reason: reason.clone(),
                },
                (Err(e), None) => Slot::Missing {
                    name: k.name().into(),
                    reason: e.to_string(),
                },
            },
        )
        .collect();
    let reference = "berthd";
    let mut results = Vec::new();
    for s in scenarios::daemon_scenarios(&ctx) {
        if opts.selected(&s.meta().name) {
            results.push(run_one(opts, s.as_ref(), &slots, reference));
        }
    }
    drop(slots);
    for (_, p) in peers.iter_mut() {
        if let Ok(p) = p {
            p.shutdown();
            for (ino, h) in p.take_mount_namespaces() {
                fp.mount_namespaces.push(ino);
                fp.handles.push(h);
            }
            fp.container_ids.extend(p.container_ids());
        }
    }
    drop(peers);
    drop(storage);

    setup.push(format!(
        "Pull image `{}`: {}, one gzip layer of {:.1} MB ({:.1} MB unpacked). Container \
         scenarios use `{}` (Debian busybox-static, {:.1} MB layer).",
        ctx.pull_ref,
        pull.source,
        pull.compressed_bytes() as f64 / 1e6,
        pull.uncompressed_bytes as f64 / 1e6,
        ctx.busybox,
        busybox.layers[0].blob.len() as f64 / 1e6
    ));
    setup.push(
        "Each daemon runs in its own loopback-only network namespace (only `lo`), with its own \
         data, exec and state directories, in a private mount namespace with a fresh tmpfs on \
         /run (its own containerd sockets, crun state, netavark IPAM, xtables lock); there the \
         hybrid layout's empty cgroup2 at /sys/fs/cgroup/unified is unmounted, so every peer \
         sees plain cgroup v1 (crun 1.8 refuses the hybrid layout)."
            .into(),
    );
    setup.push(format!(
        "Every peer pulls from its own Debian docker-registry at {REGISTRY_ADDR} inside its \
         namespace; all of them serve one storage directory seeded once, so references and \
         bytes are identical and no traffic leaves a namespace."
    ));
    setup.push(format!(
        "One docker CLI ({}) drives all three through each daemon's Docker API socket (podman: \
         `podman system service`); every sample times the CLI process from spawn to exit, the \
         same way for each peer. DOCKER_BUILDKIT=0 (the classic /build API) for all.",
        opts.bins.cli.display()
    ));
    let (nofile, nproc) = crate::peers::podman_ulimits(hard, crate::peers::pid_max());
    let berthd_runtime = if opts.bins.berthd.with_file_name("berth-oci").is_file() {
        "berth-oci"
    } else {
        "runc"
    };
    setup.push(format!(
        "dockerd: overlay2, an empty daemon.json, `--cgroup-parent {dockerd_parent}`. podman: \
         crun, cgroupfs, netavark, k8s-file logs, containers.conf `default_ulimits = \
         [nofile={nofile}:{nofile}, nproc={nproc}:{nproc}]`: the highest limits this host \
         lets the service give (rootful podman otherwise asks crun for 1048576 of both, and \
         raising a hard limit needs CAP_SYS_RESOURCE, absent from this machine's bounding \
         set; containers/common also caps podman's own nproc at kernel.pid_max). berthd: \
         release build, berth-shim + {berthd_runtime} (what berthd picks: berth-oci next to \
         it, else runc)."
    ));
    setup.push(
        "Rounds rotate the order (A B C, B C A, C A B, ...); warm-up rounds are not recorded."
            .into(),
    );
    if opts.drop_caches {
        setup.push(
            "Cold pulls drop the page cache machine-wide first (other helpers share the \
             machine), then read the registry's blobs and every program back in."
                .into(),
        );
    }
    Ok(Some(Group {
        title: "Daemons: berthd vs dockerd 20.10 vs podman 4.3, same docker CLI".into(),
        description: "Reference: berthd. Ratio < 1 is better for berthd in time and memory, \
                      > 1 in throughput."
            .into(),
        reference: reference.into(),
        subjects: opts.peers.iter().map(|k| k.name().to_string()).collect(),
        results,
    }))
}

fn run_runtimes(
    opts: &Options,
    parent: &str,
    fp: &mut Footprint,
    setup: &mut Vec<String>,
) -> Result<Option<Group>> {
    let scenarios = scenarios::runtime_scenarios();
    if !scenarios.iter().any(|s| opts.selected(&s.meta().name)) || opts.runtimes.is_empty() {
        return Ok(None);
    }
    let root = tempfile::Builder::new()
        .prefix("berth-bench-runtimes-")
        .tempdir()
        .ctx(|| "runtime dir".into())?;
    fp.dirs.push(root.path().to_path_buf());
    let candidates: Vec<(String, std::result::Result<PathBuf, String>)> = opts
        .runtimes
        .iter()
        .map(|name| {
            let bin = if name == BERTH_RUNTIME {
                match &opts.berth_runtime {
                    Some(p) if p.is_file() => Ok(p.clone()),
                    Some(p) => Err(format!(
                        "{} is not built (cargo build --release -p berth-oci, or \
                         --berth-runtime PATH)",
                        p.display()
                    )),
                    None => Err("no berth-oci binary given (--berth-runtime PATH)".into()),
                }
            } else {
                runtimes::find_on_path(name)
            };
            (name.clone(), bin)
        })
        .collect();
    let (ready, missing) = runtimes::prepare(root.path(), &candidates, parent)?;
    let slots: Vec<Slot<'_, OciRuntime>> = opts
        .runtimes
        .iter()
        .map(|name| match ready.iter().find(|r| &r.name == name) {
            Some(r) => Slot::Ready(r),
            None => Slot::Missing {
                name: name.clone(),
                reason: missing
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default(),
            },
        })
        .collect();
    let reference = opts.runtimes[0].clone();
    let mut results = Vec::new();
    for s in &scenarios {
        if opts.selected(&s.meta().name) {
            results.push(run_one(opts, s.as_ref(), &slots, &reference));
        }
    }
    drop(slots);
    drop(ready);
    drop(root);
    setup.push(format!(
        "Runtimes: the same busybox bundle (runc's default spec, read-only rootfs, \
         `/bin/true`), cgroups under `{parent}/<runtime>`, each runtime with its own `--root`, \
         started in a private mount namespace with the unified cgroup hidden."
    ));
    Ok(Some(Group {
        title: "OCI runtimes alone: berth-oci vs crun vs runc, prepared bundle".into(),
        description: format!(
            "Reference: {reference} (Berth's own runtime, guest/oci). Without it, the row shows \
             crun and runc side by side without a ratio."
        ),
        reference,
        subjects: opts.runtimes.clone(),
        results,
    }))
}

/// The VM group's rows when it cannot run here: every subject n/a with the reason.
pub fn vm_rows_not_applicable(opts: &Options, why: &str) -> Vec<ScenarioResult> {
    vm_scenarios(&Arc::new(VmCtx {
        busybox: String::new(),
    }))
    .iter()
    .map(|s| s.meta())
    .filter(|m| opts.selected(&m.name))
    .map(|mut m| {
        m.rounds = 0;
        m.warmup = 0;
        let reasons: Vec<(&str, String)> = [VM, BARE, NATIVE]
            .into_iter()
            .map(|n| (n, why.to_string()))
            .collect();
        ScenarioResult::not_applicable(m, VM, &reasons)
    })
    .collect()
}

fn vm_group(results: Vec<ScenarioResult>, opts: &Options) -> Group {
    Group {
        title: format!(
            "The Berth VM (host agent + QEMU, -accel {}): against a bare kernel boot and \
             native berthd",
            opts.vm.accel.as_str()
        ),
        description: format!(
            "Reference: {VM} (berthd in the Berth VM, reached on the socket the host agent \
             forwards over vsock). {BARE}: the same QEMU machine booting a bare busybox /init \
             (the floor of a VM start). {NATIVE}: the VM image's own berthd binary as a host \
             process (the floor of anything that goes through the VM). Ratio > 1 in time is \
             the VM's cost."
        ),
        reference: VM.into(),
        subjects: vec![VM.into(), BARE.into(), NATIVE.into()],
        results,
    }
}

fn run_vm(opts: &Options, fp: &mut Footprint, setup: &mut Vec<String>) -> Result<Option<Group>> {
    if !opts.selected_any(&vm_scenario_names()) {
        return Ok(None);
    }
    if let Some(why) = opts.vm.missing() {
        eprintln!("VM scenarios are n/a: {why}");
        setup.push(format!("VM group not measured: {why}."));
        return Ok(Some(vm_group(vm_rows_not_applicable(opts, &why), opts)));
    }
    let busybox = berth_tests::image::busybox()?;
    let storage = tempfile::Builder::new()
        .prefix("berth-bench-vm-registry-")
        .tempdir()
        .ctx(|| "registry storage".into())?;
    fp.dirs.push(storage.path().to_path_buf());
    let native_bins = Binaries {
        berthd: opts.vm.native_berthd.clone(),
        ..opts.bins.clone()
    };
    let hard = crate::isolate::hard_limits();
    let mut subjects: Vec<(&str, Result<VmSubject>)> = vec![
        (
            VM,
            BerthVm::new(&opts.vm, &opts.bins.cli).map(VmSubject::Vm),
        ),
        (BARE, BareBoot::new(&opts.vm).map(VmSubject::Bare)),
        (
            NATIVE,
            Peer::new(PeerKind::Berthd, &native_bins, storage.path(), hard, "")
                .map(VmSubject::Native),
        ),
    ];
    // The VM pulls from a registry on its own namespace's loopback (through the agent's
    // egress proxy) serving the same storage as the native peer's.
    let mut registry = None;
    for (_, s) in subjects
        .iter()
        .filter_map(|(n, s)| Some((n, s.as_ref().ok()?)))
    {
        let (ns, dir) = match s {
            VmSubject::Vm(v) => (&v.ns, v.home().to_path_buf()),
            VmSubject::Bare(b) => (&b.ns, PathBuf::new()),
            VmSubject::Native(p) => (&p.ns, p.dir().to_path_buf()),
        };
        fp.netns_files.push(ns.path());
        if let (Some(ino), Ok(h)) = (
            crate::procs::ns_inode(&ns.path()),
            std::fs::File::open(ns.path()),
        ) {
            fp.netns_inodes.push(ino);
            fp.handles.push(h);
        }
        if !dir.as_os_str().is_empty() {
            fp.dirs.push(dir.clone());
        }
        if let VmSubject::Vm(v) = s {
            registry = Some(crate::peers::NsRegistry::start(
                &v.ns,
                &dir,
                storage.path(),
            )?);
        }
    }
    let seeder = subjects
        .iter()
        .find_map(|(_, s)| match s {
            Ok(VmSubject::Native(p)) => Some(&p.ns),
            Ok(VmSubject::Vm(v)) => Some(&v.ns),
            _ => None,
        })
        .ok_or_else(|| Error::Unexpected("no VM group namespace could be set up".into()))?;
    Target {
        ns: seeder,
        addr: REGISTRY_ADDR,
        auth: None,
    }
    .push_image(
        BUSYBOX_REPO,
        "latest",
        &busybox,
        ManifestFormat::DockerSchema2,
    )?;
    let mut missing: Vec<(String, String)> = Vec::new();
    for (name, s) in &subjects {
        match s {
            Ok(VmSubject::Native(p)) => {
                eprintln!("starting {NATIVE} berthd");
                if let Err(e) = p.start() {
                    missing.push((name.to_string(), e.to_string()));
                }
            }
            Ok(_) => {}
            Err(e) => missing.push((name.to_string(), format!("setup: {e}"))),
        }
    }
    let ctx = Arc::new(VmCtx {
        busybox: format!("{REGISTRY_ADDR}/{BUSYBOX_REPO}:latest"),
    });
    let slots: Vec<Slot<'_, VmSubject>> = subjects
        .iter()
        .map(
            |(name, s)| match (s, missing.iter().find(|(m, _)| m == name)) {
                (Ok(s), None) => Slot::Ready(s),
                (_, Some((_, reason))) => Slot::Missing {
                    name: name.to_string(),
                    reason: reason.clone(),
                },
                (Err(e), None) => Slot::Missing {
                    name: name.to_string(),
                    reason: e.to_string(),
                },
            },
        )
        .collect();
    let mut results = Vec::new();
    for s in vm_scenarios(&ctx) {
        if opts.selected(&s.meta().name) {
            results.push(run_one(opts, s.as_ref(), &slots, VM));
        }
    }
    drop(slots);
    // The registry first: everything left in the VM's namespace afterwards is the VM's.
    drop(registry);
    let bare_args = subjects.iter().find_map(|(_, s)| match s {
        Ok(VmSubject::Bare(b)) => Some(b.args().join(" ")),
        _ => None,
    });
    for (_, s) in subjects.iter_mut() {
        match s {
            Ok(VmSubject::Vm(v)) => v.shutdown(),
            Ok(VmSubject::Native(p)) => {
                p.shutdown();
                for (ino, h) in p.take_mount_namespaces() {
                    fp.mount_namespaces.push(ino);
                    fp.handles.push(h);
                }
                fp.container_ids.extend(p.container_ids());
            }
            _ => {}
        }
    }
    drop(subjects);
    drop(storage);
    setup.push(format!(
        "VM group: `berth up --vm` with a temporary BERTH_HOME, {} vCPUs, {} MiB, a {} GiB \
         qcow2 data disk (created and formatted by an untimed first boot), `-accel {}` \
         (BERTH_ACCEL; /dev/kvm on these build machines does not run guests). The agent, \
         vhost-device-vsock and QEMU run in a loopback-only network namespace with a \
         registry on its 127.0.0.1:5000: QEMU has no network device, and the guest's \
         egress (the agent's proxy) can reach only that loopback. The bare boot runs `{}`. \
         {NATIVE}: {} (the VM image's berthd, static) in the daemons' isolation.",
        crate::vm::VM_CPUS,
        crate::vm::VM_MEMORY_MIB,
        crate::vm::VM_DISK_GIB,
        opts.vm.accel.as_str(),
        bare_args.unwrap_or_else(|| "(not set up)".into()),
        opts.vm.native_berthd.display(),
    ));
    Ok(Some(vm_group(results, opts)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Status;
    use berth_agent::api::Accel;

    fn options(images: &Path, only: Option<Vec<String>>) -> Options {
        Options {
            peers: PeerKind::ALL.to_vec(),
            only,
            skip: Vec::new(),
            rounds_all: None,
            rounds: HashMap::new(),
            runtimes: Vec::new(),
            berth_runtime: None,
            bins: Binaries {
                berthd: "/nonexistent/berthd".into(),
                dockerd: "/nonexistent/dockerd".into(),
                podman: "/nonexistent/podman".into(),
                cli: "/nonexistent/docker".into(),
            },
            cache: images.join("cache"),
            drop_caches: true,
            vm: VmPaths {
                berth: "/bin/sh".into(),
                images: images.to_path_buf(),
                native_berthd: "/bin/sh".into(),
                qemu: Some("/usr/bin/qemu-system-x86_64".into()),
                qemu_img: Some("/usr/bin/qemu-img".into()),
                vhost_vsock: Some("/usr/bin/vhost-device-vsock".into()),
                accel: Accel::Tcg,
            },
        }
    }

    #[test]
    fn without_the_vm_image_the_vm_rows_are_na_with_the_reason() {
        let empty = tempfile::tempdir().unwrap();
        let opts = options(empty.path(), None);
        let mut fp = Footprint::default();
        let mut setup = Vec::new();
        let g = run_vm(&opts, &mut fp, &mut setup).unwrap().unwrap();
        let names: Vec<&str> = g.results.iter().map(|r| r.meta.name.as_str()).collect();
        assert_eq!(
            names,
            ["vm-boot-ready", "vm-run-rm", "vm-ping", "vm-cp-out"]
        );
        assert_eq!(g.subjects, [VM, BARE, NATIVE]);
        for r in &g.results {
            assert!(r.comparisons.is_empty() && r.verdict.is_none());
            assert_eq!(r.subjects.len(), 3);
            for s in &r.subjects {
                assert!(
                    matches!(&s.status, Status::Na { reason } if reason.contains("./vm-images/build")),
                    "{:?}",
                    s.status
                );
            }
        }
        assert!(setup[0].starts_with("VM group not measured: the VM image is not built"));
        assert!(fp.netns_files.is_empty(), "nothing was set up");
        assert!(g.summary_markdown().contains("n/a [1]"));

        // Only the selected rows; none at all when no VM scenario is selected.
        let opts = options(empty.path(), Some(vec!["vm-ping".into(), "run-rm".into()]));
        let g = run_vm(&opts, &mut fp, &mut setup).unwrap().unwrap();
        assert_eq!(g.results.len(), 1);
        let opts = options(empty.path(), Some(vec!["run-rm".into()]));
        assert!(run_vm(&opts, &mut fp, &mut setup).unwrap().is_none());
    }

    #[test]
    fn every_scenario_is_listed_once() {
        let all = all_scenarios();
        let mut names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"vm-boot-ready") && names.contains(&"run-rm"));
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate scenario names");
    }
}
