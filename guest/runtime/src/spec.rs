//! Builds the OCI runtime `config.json` for a container with Docker's
//! defaults: namespaces, the 14 default capabilities, the standard /proc /dev
//! /sys mounts, masked and read-only paths, the device cgroup allow-list,
//! resources and the default seccomp profile.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDevice,
    LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResources, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::caps::{self, CapsError};
use crate::seccomp;

/// Docker's /dev/shm size when none is given.
pub const DEFAULT_SHM_SIZE: i64 = 64 << 20;
/// Docker's default CFS period when only NanoCpus is given.
const DEFAULT_CPU_PERIOD: u64 = 100_000;
/// Docker's default open-files limit (soft and hard).
const DEFAULT_NOFILE: u64 = 1_048_576;

/// The default RLIMIT_NOFILE: Docker's 1048576, lowered to our own hard limit
/// when that is smaller, since raising past it needs CAP_SYS_RESOURCE, which
/// a sandboxed berthd may lack (runc would then fail to start every container).
pub fn default_nofile() -> u64 {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) if hard < DEFAULT_NOFILE => hard,
        _ => DEFAULT_NOFILE,
    }
}

/// Paths hidden from non-privileged containers (they leak host information or
/// expose kernel interfaces).
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths visible but read-only for non-privileged containers (writes there
/// would reconfigure the host kernel).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSpec {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountSpec {
    pub source: String,
    pub destination: String,
    /// "bind", "tmpfs", "volume"-backed binds are plain "bind" here.
    pub typ: String,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    pub host_path: PathBuf,
    pub container_path: String,
    /// Docker's cgroup permissions, e.g. "rwm".
    pub permissions: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// Own network namespace with only loopback (`--network none`, or before
    /// a network is attached).
    #[default]
    Private,
    /// Share the host's (here: the VM's) network namespace.
    Host,
    /// Join an existing namespace, e.g. one prepared by the network manager.
    Path(PathBuf),
}

/// Everything berthd knows about a container that shapes its OCI spec. The
/// field names follow Docker's HostConfig/Config so the engine maps 1:1.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub id: String,
    /// Absolute path of the mounted rootfs (normally `<bundle>/rootfs`).
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: UserSpec,
    pub hostname: String,
    pub domainname: String,
    pub tty: bool,
    pub readonly_rootfs: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    pub seccomp_unconfined: bool,
    /// Bytes; None or 0 = unlimited.
    pub memory: Option<i64>,
    /// Docker's memory+swap total; -1 = unlimited swap; None = twice `memory`.
    pub memory_swap: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    /// > 0 limits; None, 0 or -1 = unlimited (Docker's convention).
    pub pids_limit: Option<i64>,
    /// (name like "nofile", soft, hard)
    pub ulimits: Vec<(String, u64, u64)>,
    /// (container path, Docker tmpfs options like "size=64m,exec")
    pub tmpfs: Vec<(String, String)>,
    pub shm_size: Option<i64>,
    pub sysctls: BTreeMap<String, String>,
    pub devices: Vec<DeviceSpec>,
    pub mounts: Vec<MountSpec>,
    pub network: NetworkMode,
    /// Cgroup parent; empty = "berth".
    pub cgroup_parent: String,
    pub oom_score_adj: Option<i32>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Caps(#[from] CapsError),
    #[error("invalid container spec: {0}")]
    Invalid(String),
    #[error("building OCI spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
    #[error("device {0}: {1}")]
    Device(String, String),
}

fn mount(dest: &str, typ: &str, source: &str, opts: &[&str]) -> Result<Mount, RuntimeError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn dev_rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, RuntimeError> {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .access(access);
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    Ok(b.build()?)
}

/// Docker's default device cgroup: deny everything, then allow mknod of any
/// device (the node is useless without the rw rule) and rw on the standard
/// character devices.
fn default_device_rules() -> Result<Vec<LinuxDeviceCgroup>, RuntimeError> {
    use LinuxDeviceType::{A, B, C};
    let mut v = vec![
        dev_rule(false, A, None, None, "rwm")?,
        dev_rule(true, C, None, None, "m")?,
        dev_rule(true, B, None, None, "m")?,
    ];
    for (maj, min) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
    ] {
        v.push(dev_rule(true, C, Some(maj), Some(min), "rwm")?);
    }
    v.push(dev_rule(true, C, Some(136), None, "rwm")?); // /dev/pts/*
    Ok(v)
}

fn host_device(d: &DeviceSpec) -> Result<(LinuxDevice, LinuxDeviceCgroup), RuntimeError> {
    let name = d.host_path.display().to_string();
    let st = nix::sys::stat::stat(&d.host_path)
        .map_err(|e| RuntimeError::Device(name.clone(), e.desc().into()))?;
    let kind = st.st_mode & libc::S_IFMT;
    let typ = match kind {
        libc::S_IFCHR => LinuxDeviceType::C,
        libc::S_IFBLK => LinuxDeviceType::B,
        _ => return Err(RuntimeError::Device(name, "not a device node".into())),
    };
    let (major, minor) = (
        libc::major(st.st_rdev) as i64,
        libc::minor(st.st_rdev) as i64,
    );
    let dest = if d.container_path.is_empty() {
        name.clone()
    } else {
        d.container_path.clone()
    };
    let perms = if d.permissions.is_empty() {
        "rwm"
    } else {
        d.permissions.as_str()
    };
    let dev = LinuxDeviceBuilder::default()
        .path(dest)
        .typ(typ)
        .major(major)
        .minor(minor)
        .file_mode(st.st_mode & 0o777)
        .uid(0u32)
        .gid(0u32)
        .build()?;
    Ok((dev, dev_rule(true, typ, Some(major), Some(minor), perms)?))
}

/// Docker gives privileged containers every host device node. Walks `/dev`
/// (not following symlinks), skipping the per-container filesystems that
/// runc mounts itself and the console, which runc sets up for ttys.
pub fn host_devices(dev_root: &Path) -> Vec<DeviceSpec> {
    const SKIP_DIRS: [&str; 6] = ["pts", "shm", "fd", "mqueue", ".lxc", ".udev"];
    let mut out = Vec::new();
    let mut stack = vec![dev_root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name();
            if ft.is_dir() {
                if !SKIP_DIRS.iter().any(|s| name == *s) {
                    stack.push(e.path());
                }
                continue;
            }
            use std::os::unix::fs::FileTypeExt;
            if (ft.is_char_device() || ft.is_block_device()) && name != "console" {
                let rel = e
                    .path()
                    .strip_prefix(dev_root)
                    .map(|r| r.to_path_buf())
                    .unwrap_or_default();
                out.push(DeviceSpec {
                    host_path: e.path(),
                    container_path: Path::new("/dev").join(rel).display().to_string(),
                    permissions: "rwm".into(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.container_path.cmp(&b.container_path));
    out
}

fn rlimit_type(name: &str) -> Result<PosixRlimitType, RuntimeError> {
    let upper = format!("\"RLIMIT_{}\"", name.to_ascii_uppercase());
    serde_json::from_str(&upper)
        .map_err(|_| RuntimeError::Invalid(format!("invalid ulimit type: {name}")))
}

/// The cgroup path runc should use: absolute, so it means the same thing
/// under cgroup v1 (one path per controller hierarchy) and v2 (one tree).
pub fn cgroups_path(cgroup_parent: &str, id: &str) -> String {
    let parent = cgroup_parent.trim_matches('/');
    let parent = if parent.is_empty() { "berth" } else { parent };
    format!("/{parent}/{id}")
}

/// The spec's sysctls. The domain name travels as the `kernel.domainname` sysctl (of the
/// container's own UTS namespace) rather than the spec's `domainname` field: runc before 1.2
/// (Debian 12 ships 1.1.5) ignores that field, and it refuses the sysctl when the field is set.
fn sysctls(spec: &ContainerSpec) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = spec.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if !spec.domainname.is_empty() {
        m.entry("kernel.domainname".into()).or_insert_with(|| spec.domainname.clone());
    }
    m
}

/// The memory, CPU and pids limits of `spec` (Docker's HostConfig values translated); fields
/// left at Docker's "unset" are absent.
pub fn limits(spec: &ContainerSpec) -> Result<LinuxResources, RuntimeError> {
    let mut memory = LinuxMemoryBuilder::default();
    let mut has_memory = false;
    if let Some(limit) = spec.memory.filter(|m| *m > 0) {
        memory = memory.limit(limit);
        let swap = match spec.memory_swap {
            Some(s) if s != 0 => s,
            _ => limit * 2,
        };
        memory = memory.swap(swap);
        has_memory = true;
    }
    let mut cpu = LinuxCpuBuilder::default();
    let mut has_cpu = false;
    if let Some(shares) = spec.cpu_shares.filter(|s| *s > 0) {
        cpu = cpu.shares(shares);
        has_cpu = true;
    }
    match (
        spec.nano_cpus.filter(|n| *n > 0),
        spec.cpu_quota.filter(|q| *q != 0),
    ) {
        (Some(_), Some(_)) => {
            return Err(RuntimeError::Invalid(
                "conflicting options: Nano CPUs and CPU Period/Quota cannot both be set".into(),
            ))
        }
        (Some(n), None) => {
            let period = DEFAULT_CPU_PERIOD;
            cpu = cpu.period(period).quota(n * period as i64 / 1_000_000_000);
            has_cpu = true;
        }
        (None, Some(q)) => {
            cpu = cpu.quota(q);
            if let Some(p) = spec.cpu_period.filter(|p| *p > 0) {
                cpu = cpu.period(p);
            }
            has_cpu = true;
        }
        (None, None) => {
            if let Some(p) = spec.cpu_period.filter(|p| *p > 0) {
                cpu = cpu.period(p);
                has_cpu = true;
            }
        }
    }
    if let Some(cpus) = spec.cpuset_cpus.as_ref().filter(|c| !c.is_empty()) {
        cpu = cpu.cpus(cpus.clone());
        has_cpu = true;
    }
    let mut resources = LinuxResourcesBuilder::default();
    if has_memory {
        resources = resources.memory(memory.build()?);
    }
    if has_cpu {
        resources = resources.cpu(cpu.build()?);
    }
    if let Some(p) = spec.pids_limit.filter(|p| *p > 0) {
        resources = resources.pids(LinuxPidsBuilder::default().limit(p).build()?);
    }
    Ok(resources.build()?)
}

/// [`limits`] for a running container's update: the pids limit is always there, `-1`
/// ("max") when unset, because `docker update --pids-limit -1` lifts a limit and an absent
/// field would leave the old one in the cgroup.
pub fn update_limits(spec: &ContainerSpec) -> Result<LinuxResources, RuntimeError> {
    let mut r = limits(spec)?;
    if r.pids().is_none() {
        r.set_pids(Some(LinuxPidsBuilder::default().limit(-1).build()?));
    }
    Ok(r)
}

/// Builds the OCI spec for `spec`.
pub fn build(spec: &ContainerSpec) -> Result<Spec, RuntimeError> {
    if spec.id.is_empty() || spec.id.contains('/') || spec.id.starts_with('.') {
        return Err(RuntimeError::Invalid(format!(
            "bad container id {:?}",
            spec.id
        )));
    }
    if spec.args.is_empty() {
        return Err(RuntimeError::Invalid("no command specified".into()));
    }
    let privileged = spec.privileged;
    let cap_list = caps::effective_caps(&spec.cap_add, &spec.cap_drop, privileged)?;
    let oci_caps = caps::to_oci(&cap_list)?;
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(oci_caps.clone())
        .effective(oci_caps.clone())
        .permitted(oci_caps)
        // Empty inheritable and ambient: exec'd binaries never gain caps from
        // the parent through file capabilities (CVE-2022-24769).
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()?;

    let mut rlimits = Vec::new();
    for (name, soft, hard) in &spec.ulimits {
        rlimits.push(
            PosixRlimitBuilder::default()
                .typ(rlimit_type(name)?)
                .soft(*soft)
                .hard(*hard)
                .build()?,
        );
    }
    if !spec
        .ulimits
        .iter()
        .any(|(n, _, _)| n.eq_ignore_ascii_case("nofile"))
    {
        rlimits.push(
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(default_nofile())
                .hard(default_nofile())
                .build()?,
        );
    }

    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) && !spec.hostname.is_empty() {
        env.push(format!("HOSTNAME={}", spec.hostname));
    }
    if spec.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }

    let user = UserBuilder::default()
        .uid(spec.user.uid)
        .gid(spec.user.gid)
        .additional_gids(spec.user.additional_gids.clone())
        .build()?;
    let mut process = ProcessBuilder::default()
        .terminal(spec.tty)
        .user(user)
        .args(spec.args.clone())
        .env(env)
        .cwd(if spec.cwd.is_empty() {
            "/"
        } else {
            spec.cwd.as_str()
        })
        .capabilities(capabilities)
        .rlimits(rlimits)
        .no_new_privileges(spec.no_new_privileges);
    if let Some(adj) = spec.oom_score_adj {
        process = process.oom_score_adj(adj);
    }
    let process = process.build()?;

    // Mounts, in Docker's order; user mounts replace defaults at the same path.
    let shm = format!(
        "size={}k",
        spec.shm_size.filter(|s| *s > 0).unwrap_or(DEFAULT_SHM_SIZE) / 1024
    );
    let sys_ro = if privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_ro],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_ro],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm],
        )?,
    ];
    let mut user_mounts = Vec::new();
    for m in &spec.mounts {
        if !m.destination.starts_with('/') {
            return Err(RuntimeError::Invalid(format!(
                "mount destination {:?} is not absolute",
                m.destination
            )));
        }
        let typ = if m.typ.is_empty() {
            "bind"
        } else {
            m.typ.as_str()
        };
        let mut opts = m.options.clone();
        if typ == "bind" && !opts.iter().any(|o| o == "bind" || o == "rbind") {
            opts.insert(0, "rbind".into());
        }
        let opt_refs: Vec<&str> = opts.iter().map(String::as_str).collect();
        user_mounts.push(mount(&m.destination, typ, &m.source, &opt_refs)?);
    }
    for (path, opts) in &spec.tmpfs {
        if !path.starts_with('/') {
            return Err(RuntimeError::Invalid(format!(
                "tmpfs destination {path:?} is not absolute"
            )));
        }
        let mut o = vec!["noexec", "nosuid", "nodev"];
        o.extend(opts.split(',').filter(|x| !x.is_empty()));
        user_mounts.push(mount(path, "tmpfs", "tmpfs", &o)?);
    }
    mounts.retain(|d| {
        !user_mounts
            .iter()
            .any(|u| u.destination() == d.destination())
    });
    mounts.extend(user_mounts);

    let mut namespaces = Vec::new();
    for typ in [
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Cgroup,
    ] {
        let mut ns = LinuxNamespaceBuilder::default().typ(typ);
        if typ == LinuxNamespaceType::Network {
            match &spec.network {
                NetworkMode::Host => continue,
                NetworkMode::Path(p) => ns = ns.path(p.clone()),
                NetworkMode::Private => {}
            }
        }
        namespaces.push(ns.build()?);
    }

    let mut dev_rules = if privileged {
        vec![dev_rule(true, LinuxDeviceType::A, None, None, "rwm")?]
    } else {
        default_device_rules()?
    };
    let mut devices = Vec::new();
    let mut wanted = spec.devices.clone();
    if privileged {
        let host = host_devices(Path::new("/dev"));
        wanted.retain(|d| !host.iter().any(|h| h.container_path == d.container_path));
        wanted.extend(host);
    }
    for d in &wanted {
        let (dev, rule) = host_device(d)?;
        devices.push(dev);
        if !privileged {
            dev_rules.push(rule);
        }
    }

    let mut resources = limits(spec)?;
    resources.set_devices(Some(dev_rules));

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(PathBuf::from(cgroups_path(&spec.cgroup_parent, &spec.id)))
        .devices(devices)
        .sysctl(sysctls(spec));
    if privileged {
        linux = linux
            .masked_paths(Vec::<String>::new())
            .readonly_paths(Vec::<String>::new());
    } else {
        linux = linux
            .masked_paths(
                MASKED_PATHS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .readonly_paths(
                READONLY_PATHS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            );
    }
    if !spec.seccomp_unconfined && !privileged {
        linux = linux.seccomp(seccomp::default_profile(&cap_list));
    }

    let root = RootBuilder::default()
        .path(spec.rootfs.clone())
        .readonly(spec.readonly_rootfs)
        .build()?;
    let mut b = SpecBuilder::default()
        .version("1.0.2")
        .root(root)
        .process(process)
        .mounts(mounts)
        .linux(linux.build()?);
    if !spec.hostname.is_empty() {
        b = b.hostname(spec.hostname.clone());
    }

    Ok(b.build()?)
}

/// Whether `p` is one of the default mounts' destinations (for callers that
/// must not shadow them with image volumes).
pub fn is_default_mount(p: &Path) -> bool {
    [
        "/proc",
        "/dev",
        "/dev/pts",
        "/sys",
        "/sys/fs/cgroup",
        "/dev/mqueue",
        "/dev/shm",
    ]
    .iter()
    .any(|d| Path::new(d) == p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability;

    fn base() -> ContainerSpec {
        ContainerSpec {
            id: "c1".into(),
            rootfs: "/b/rootfs".into(),
            args: vec!["sh".into()],
            hostname: "c1host".into(),
            ..Default::default()
        }
    }

    fn caps_of(s: &Spec) -> oci_spec::runtime::LinuxCapabilities {
        s.process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap()
    }

    #[test]
    fn default_caps_are_docker_14_with_empty_inheritable() {
        let s = build(&base()).unwrap();
        let c = caps_of(&s);
        let want = caps::to_oci(
            &caps::DEFAULT_CAPS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert_eq!(c.bounding().as_ref().unwrap(), &want);
        assert_eq!(c.effective().as_ref().unwrap(), &want);
        assert_eq!(c.permitted().as_ref().unwrap(), &want);
        assert!(c.inheritable().as_ref().unwrap().is_empty());
        assert!(c.ambient().as_ref().unwrap().is_empty());
        assert!(!want.contains(&Capability::SysAdmin));
    }

    #[test]
    fn masked_and_readonly_paths_unless_privileged() {
        let s = build(&base()).unwrap();
        let l = s.linux().as_ref().unwrap();
        let masked = l.masked_paths().as_ref().unwrap();
        for p in MASKED_PATHS {
            assert!(masked.iter().any(|m| m == p), "{p}");
        }
        assert_eq!(l.readonly_paths().as_ref().unwrap().len(), 5);
        assert!(l.seccomp().is_some());

        let mut p = base();
        p.privileged = true;
        let s = build(&p).unwrap();
        let l = s.linux().as_ref().unwrap();
        assert!(l.masked_paths().as_ref().unwrap().is_empty());
        assert!(l.readonly_paths().as_ref().unwrap().is_empty());
        assert!(l.seccomp().is_none());
        assert!(caps_of(&s)
            .bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::SysAdmin));
        let rules = l.resources().as_ref().unwrap().devices().as_ref().unwrap();
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allow());
        let devs = l.devices().as_ref().unwrap();
        assert!(devs.iter().any(|d| d.path() == Path::new("/dev/null")));
        assert!(!devs.iter().any(|d| d.path().starts_with("/dev/pts")));
    }

    #[test]
    fn cap_add_drop_all() {
        let mut p = base();
        p.cap_add = vec!["NET_ADMIN".into()];
        p.cap_drop = vec!["CAP_KILL".into()];
        let c = caps_of(&build(&p).unwrap());
        let b = c.bounding().as_ref().unwrap();
        assert!(b.contains(&Capability::NetAdmin) && !b.contains(&Capability::Kill));
        p.cap_add = vec![];
        p.cap_drop = vec!["ALL".into()];
        assert!(caps_of(&build(&p).unwrap())
            .effective()
            .as_ref()
            .unwrap()
            .is_empty());
        p.cap_drop = vec!["BOGUS".into()];
        assert!(matches!(build(&p), Err(RuntimeError::Caps(_))));
    }

    #[test]
    fn namespaces_and_network_modes() {
        let kinds = |s: &Spec| -> Vec<LinuxNamespaceType> {
            s.linux()
                .as_ref()
                .unwrap()
                .namespaces()
                .as_ref()
                .unwrap()
                .iter()
                .map(|n| n.typ())
                .collect()
        };
        let s = build(&base()).unwrap();
        assert_eq!(kinds(&s).len(), 6);
        let mut p = base();
        p.network = NetworkMode::Host;
        assert!(!kinds(&build(&p).unwrap()).contains(&LinuxNamespaceType::Network));
        p.network = NetworkMode::Path("/run/netns/x".into());
        let s = build(&p).unwrap();
        let ns = s.linux().as_ref().unwrap().namespaces().as_ref().unwrap();
        let net = ns
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .unwrap();
        assert_eq!(net.path().as_deref(), Some(Path::new("/run/netns/x")));
    }

    #[test]
    fn default_mounts_and_shm_size() {
        let s = build(&base()).unwrap();
        let mounts = s.mounts().as_ref().unwrap();
        let find = |d: &str| {
            mounts
                .iter()
                .find(|m| m.destination() == Path::new(d))
                .unwrap()
                .clone()
        };
        assert!(find("/dev/shm")
            .options()
            .as_ref()
            .unwrap()
            .contains(&"size=65536k".to_string()));
        let pts = find("/dev/pts");
        for o in ["newinstance", "ptmxmode=0666", "gid=5"] {
            assert!(pts.options().as_ref().unwrap().contains(&o.to_string()));
        }
        assert!(find("/sys")
            .options()
            .as_ref()
            .unwrap()
            .contains(&"ro".to_string()));
        assert_eq!(find("/sys/fs/cgroup").typ().as_deref(), Some("cgroup"));
        assert!(find("/dev")
            .options()
            .as_ref()
            .unwrap()
            .contains(&"mode=755".to_string()));

        let mut p = base();
        p.shm_size = Some(1 << 30);
        p.tmpfs = vec![("/dev/shm".into(), "size=1m".into())];
        p.mounts = vec![MountSpec {
            source: "/host".into(),
            destination: "/data".into(),
            typ: String::new(),
            options: vec!["ro".into()],
        }];
        let s = build(&p).unwrap();
        let mounts = s.mounts().as_ref().unwrap();
        assert_eq!(
            mounts
                .iter()
                .filter(|m| m.destination() == Path::new("/dev/shm"))
                .count(),
            1
        );
        let data = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/data"))
            .unwrap();
        assert_eq!(
            data.options().as_ref().unwrap(),
            &vec!["rbind".to_string(), "ro".to_string()]
        );
    }

    #[test]
    fn resources_rlimits_cgroup_path() {
        let mut p = base();
        p.memory = Some(32 << 20);
        p.nano_cpus = Some(1_500_000_000);
        p.pids_limit = Some(20);
        p.cpuset_cpus = Some("0".into());
        p.ulimits = vec![("nproc".into(), 10, 20)];
        p.oom_score_adj = Some(500);
        p.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
        let s = build(&p).unwrap();
        let l = s.linux().as_ref().unwrap();
        let r = l.resources().as_ref().unwrap();
        let m = r.memory().as_ref().unwrap();
        assert_eq!(m.limit(), Some(32 << 20));
        assert_eq!(m.swap(), Some(64 << 20));
        let c = r.cpu().as_ref().unwrap();
        assert_eq!((c.quota(), c.period()), (Some(150_000), Some(100_000)));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 20);
        assert_eq!(l.cgroups_path().as_deref(), Some(Path::new("/berth/c1")));
        assert_eq!(l.sysctl().as_ref().unwrap()["net.ipv4.ip_forward"], "1");
        assert!(!l.sysctl().as_ref().unwrap().contains_key("kernel.domainname"));
        let mut d = base();
        d.domainname = "example.org".into();
        let s2 = build(&d).unwrap();
        assert_eq!(s2.linux().as_ref().unwrap().sysctl().as_ref().unwrap()["kernel.domainname"], "example.org");
        assert_eq!(s2.domainname(), &None, "runc 1.1 refuses the sysctl when the field is set too");
        let proc_ = s.process().as_ref().unwrap();
        assert_eq!(proc_.oom_score_adj(), Some(500));
        let rl = proc_.rlimits().as_ref().unwrap();
        assert!(rl
            .iter()
            .any(|r| r.typ() == PosixRlimitType::RlimitNproc && r.hard() == 20));
        assert!(rl
            .iter()
            .any(|r| r.typ() == PosixRlimitType::RlimitNofile && r.soft() == default_nofile()));
        assert!(default_nofile() <= 1_048_576 && default_nofile() > 0);
        // Default device cgroup denies first, then allows the standard nodes.
        let d = r.devices().as_ref().unwrap();
        assert!(!d[0].allow());
        assert!(d
            .iter()
            .any(|x| x.allow() && x.major() == Some(1) && x.minor() == Some(3)));

        p.cpu_quota = Some(5000);
        assert!(matches!(build(&p), Err(RuntimeError::Invalid(_))));
        p.cpu_quota = None;
        p.ulimits = vec![("bogus".into(), 1, 1)];
        assert!(matches!(build(&p), Err(RuntimeError::Invalid(_))));
        assert_eq!(cgroups_path("/docker/", "x"), "/docker/x");
    }

    #[test]
    fn user_devices_are_added_with_their_rule() {
        let mut p = base();
        p.devices = vec![DeviceSpec {
            host_path: "/dev/null".into(),
            container_path: "/dev/mynull".into(),
            permissions: "rw".into(),
        }];
        let s = build(&p).unwrap();
        let l = s.linux().as_ref().unwrap();
        let d = &l.devices().as_ref().unwrap()[0];
        assert_eq!(
            (d.path().as_path(), d.major(), d.minor()),
            (Path::new("/dev/mynull"), 1, 3)
        );
        let rules = l.resources().as_ref().unwrap().devices().as_ref().unwrap();
        assert!(rules
            .iter()
            .any(|r| r.allow() && r.access().as_deref() == Some("rw") && r.minor() == Some(3)));
        p.devices[0].host_path = "/etc/hostname".into();
        assert!(matches!(build(&p), Err(RuntimeError::Device(..))));
    }

    #[test]
    fn serializes_to_runtime_json() {
        let s = build(&base()).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(
            v["process"]["capabilities"]["inheritable"],
            serde_json::json!([])
        );
        assert_eq!(v["hostname"], "c1host");
    }
}
