//! A container's mounts: `-v`/`Binds`, `--mount`/`Mounts`, the image's `VOLUME`s (anonymous
//! volumes), `--volumes-from`, resolved once at create time into [`MountPoint`]s kept in the
//! container record (as Docker does: anonymous volumes exist from `create` on), then turned into
//! runtime mounts at every start.
//!
//! Safety: destinations are cleaned lexically and must not be `/proc`, `/sys` or below them
//! (checklist #22); at start each destination is resolved inside the rootfs with openat2
//! `RESOLVE_IN_ROOT` so that an image symlink cannot aim a mount outside the rootfs (#23), and
//! the resolved, symlink-free path is what the runtime gets (runc re-checks it with its own
//! safe join when it mounts, and nothing of the container runs before then).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bollard_stubs::models::{ContainerConfig, HostConfig, MountPointTypeEnum, MountTypeEnum};
use berth_runtime::spec::MountSpec;
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    Volume,
    Tmpfs,
}

/// One resolved mount of a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountPoint {
    pub typ: MountType,
    /// Volume name (volumes only).
    #[serde(default)]
    pub name: String,
    /// Host path for binds.
    #[serde(default)]
    pub source: String,
    pub destination: String,
    pub rw: bool,
    /// The mode string as given (`ro`, `z`, `nocopy`...), shown by inspect.
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub propagation: String,
    /// Do not copy the image's content into a new empty volume.
    #[serde(default)]
    pub no_copy: bool,
    /// tmpfs options for the runtime (`size=...,mode=...`).
    #[serde(default)]
    pub tmpfs_options: String,
    /// Non-recursive bind (`bind-recursive=disabled`).
    #[serde(default)]
    pub non_recursive: bool,
}

const PROPAGATIONS: [&str; 6] = ["private", "rprivate", "shared", "rshared", "slave", "rslave"];

/// Lexically clean an absolute container path (`/a/./b/../c` -> `/a/c`), refusing relative
/// ones and the kernel filesystems a volume must never cover.
pub fn clean_destination(dst: &str) -> Result<String, ApiError> {
    if !dst.starts_with('/') {
        return Err(ApiError::bad(format!("invalid mount config: mount path must be absolute: {dst:?}")));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in dst.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let clean = format!("/{}", parts.join("/"));
    if clean == "/" {
        return Err(ApiError::bad("invalid mount config: destination can't be '/'"));
    }
    if matches!(parts.first(), Some(&"proc") | Some(&"sys")) {
        return Err(ApiError::bad(format!("invalid mount config: {clean} is a kernel filesystem and cannot be a mount destination")));
    }
    Ok(clean)
}

/// Parse one `-v` / `Binds` entry: `src:dst[:opts]`.
pub fn parse_bind(spec: &str) -> Result<MountPoint, ApiError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [s, d] => (*s, *d, ""),
        [s, d, m] => (*s, *d, *m),
        _ => return Err(ApiError::bad(format!("invalid volume specification: '{spec}'"))),
    };
    if src.is_empty() {
        return Err(ApiError::bad(format!("invalid volume specification: '{spec}'")));
    }
    let destination = clean_destination(dst)?;
    let mut rw = true;
    let mut propagation = String::new();
    let mut no_copy = false;
    for o in mode.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => rw = false,
            "rw" => rw = true,
            "z" | "Z" | "consistent" | "cached" | "delegated" => {}
            "nocopy" => no_copy = true,
            p if PROPAGATIONS.contains(&p) => propagation = p.to_string(),
            other => return Err(ApiError::bad(format!("invalid mode: {other}"))),
        }
    }
    if src.starts_with('/') {
        if no_copy {
            return Err(ApiError::bad(format!("invalid mode: nocopy is for volumes only: '{spec}'")));
        }
        Ok(MountPoint {
            typ: MountType::Bind,
            name: String::new(),
            source: src.to_string(),
            destination,
            rw,
            mode: mode.to_string(),
            propagation: if propagation.is_empty() { "rprivate".into() } else { propagation },
            no_copy: false,
            tmpfs_options: String::new(),
            non_recursive: false,
        })
    } else {
        if !crate::volumes::valid_name(src) {
            return Err(crate::volumes::VolumeError::InvalidName(src.to_string()).into());
        }
        if !propagation.is_empty() {
            return Err(ApiError::bad(format!("invalid mode: propagation is for bind mounts only: '{spec}'")));
        }
        Ok(MountPoint {
            typ: MountType::Volume,
            name: src.to_string(),
            source: String::new(),
            destination,
            rw,
            mode: mode.to_string(),
            propagation: String::new(),
            no_copy,
            tmpfs_options: String::new(),
            non_recursive: false,
        })
    }
}

/// tmpfs options for the runtime from `--mount type=tmpfs,tmpfs-size=..,tmpfs-mode=..`.
fn tmpfs_opts(size: Option<i64>, mode: Option<i64>) -> String {
    let mut o = Vec::new();
    if let Some(s) = size.filter(|s| *s > 0) {
        o.push(format!("size={s}"));
    }
    if let Some(m) = mode.filter(|m| *m > 0) {
        o.push(format!("mode={m:o}"));
    }
    o.join(",")
}

/// What a create request needs from the volume store: a named volume's labels and driver
/// options (from `--mount volume-opt=..`), created if missing.
#[derive(Debug, Default, Clone)]
pub struct VolumeWanted {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub options: HashMap<String, String>,
}

/// Turn a create request's mount fields into mount points (volumes not created yet): returns
/// the mounts plus the named volumes to create. `volumes_from` is resolved by the caller into
/// the source containers' mount points.
pub fn plan(
    config: &ContainerConfig,
    host: &HostConfig,
    volumes_from: &[(Vec<MountPoint>, Option<bool>)],
) -> Result<(Vec<MountPoint>, Vec<VolumeWanted>), ApiError> {
    let mut mounts: Vec<MountPoint> = Vec::new();
    let mut wanted: Vec<VolumeWanted> = Vec::new();
    let add = |m: MountPoint, mounts: &mut Vec<MountPoint>| -> Result<(), ApiError> {
        if mounts.iter().any(|x| x.destination == m.destination) {
            return Err(ApiError::bad(format!("Duplicate mount point: {}", m.destination)));
        }
        mounts.push(m);
        Ok(())
    };
    for b in host.binds.clone().unwrap_or_default() {
        let m = parse_bind(&b)?;
        if m.typ == MountType::Volume {
            wanted.push(VolumeWanted { name: m.name.clone(), ..Default::default() });
        }
        add(m, &mut mounts)?;
    }
    for mnt in host.mounts.clone().unwrap_or_default() {
        let target = mnt.target.clone().unwrap_or_default();
        let destination = clean_destination(&target)?;
        let rw = !mnt.read_only.unwrap_or(false);
        let source = mnt.source.clone().unwrap_or_default();
        let m = match mnt.typ {
            Some(MountTypeEnum::BIND) => {
                if !source.starts_with('/') {
                    return Err(ApiError::bad(format!("invalid mount config for type \"bind\": invalid mount path: '{source}' mount path must be absolute")));
                }
                let bo = mnt.bind_options.clone().unwrap_or_default();
                let create = bo.create_mountpoint.unwrap_or(false);
                if !create && !Path::new(&source).exists() {
                    return Err(ApiError::bad(format!("invalid mount config for type \"bind\": bind source path does not exist: {source}")));
                }
                let propagation = bo.propagation.map(|p| p.to_string()).filter(|p| !p.is_empty()).unwrap_or_else(|| "rprivate".into());
                if mnt.volume_options.is_some() || mnt.tmpfs_options.is_some() {
                    return Err(ApiError::bad("invalid mount config for type \"bind\": volume or tmpfs options are not allowed"));
                }
                MountPoint {
                    typ: MountType::Bind,
                    name: String::new(),
                    source,
                    destination,
                    rw,
                    mode: String::new(),
                    propagation,
                    no_copy: false,
                    tmpfs_options: String::new(),
                    non_recursive: bo.non_recursive.unwrap_or(false),
                }
            }
            Some(MountTypeEnum::VOLUME) => {
                let vo = mnt.volume_options.clone().unwrap_or_default();
                if mnt.bind_options.is_some() || mnt.tmpfs_options.is_some() {
                    return Err(ApiError::bad("invalid mount config for type \"volume\": bind or tmpfs options are not allowed"));
                }
                let dc = vo.driver_config.clone().unwrap_or_default();
                if let Some(d) = dc.name.as_deref().filter(|d| !d.is_empty() && *d != "local") {
                    return Err(crate::volumes::VolumeError::Driver(d.to_string()).into());
                }
                let name = if source.is_empty() {
                    let n = crate::volumes::random_name()?;
                    let mut labels = vo.labels.clone().unwrap_or_default();
                    labels.insert(crate::volumes::ANONYMOUS_LABEL.into(), String::new());
                    wanted.push(VolumeWanted { name: n.clone(), labels, options: dc.options.clone().unwrap_or_default() });
                    n
                } else {
                    if !crate::volumes::valid_name(&source) {
                        return Err(crate::volumes::VolumeError::InvalidName(source).into());
                    }
                    wanted.push(VolumeWanted {
                        name: source.clone(),
                        labels: vo.labels.clone().unwrap_or_default(),
                        options: dc.options.clone().unwrap_or_default(),
                    });
                    source
                };
                MountPoint {
                    typ: MountType::Volume,
                    name,
                    source: String::new(),
                    destination,
                    rw,
                    mode: String::new(),
                    propagation: String::new(),
                    no_copy: vo.no_copy.unwrap_or(false),
                    tmpfs_options: String::new(),
                    non_recursive: false,
                }
            }
            Some(MountTypeEnum::TMPFS) => {
                if !source.is_empty() {
                    return Err(ApiError::bad("invalid mount config for type \"tmpfs\": source must not be specified"));
                }
                if mnt.bind_options.is_some() || mnt.volume_options.is_some() {
                    return Err(ApiError::bad("invalid mount config for type \"tmpfs\": bind or volume options are not allowed"));
                }
                let to = mnt.tmpfs_options.clone().unwrap_or_default();
                MountPoint {
                    typ: MountType::Tmpfs,
                    name: String::new(),
                    source: String::new(),
                    destination,
                    rw,
                    mode: String::new(),
                    propagation: String::new(),
                    no_copy: false,
                    tmpfs_options: tmpfs_opts(to.size_bytes, to.mode),
                    non_recursive: false,
                }
            }
            other => {
                return Err(ApiError::bad(format!("mount type {:?} is not supported", other.map(|t| t.to_string()).unwrap_or_default())))
            }
        };
        add(m, &mut mounts)?;
    }
    // --volumes-from: the other container's mounts, with its mode unless overridden.
    for (theirs, ro) in volumes_from {
        for m in theirs {
            if mounts.iter().any(|x| x.destination == m.destination) {
                continue;
            }
            let mut m = m.clone();
            if let Some(ro) = ro {
                m.rw = !ro;
            }
            mounts.push(m);
        }
    }
    // The image's VOLUMEs (and `-v /path`): anonymous volumes where nothing else is mounted.
    let tmpfs: Vec<String> = host.tmpfs.clone().unwrap_or_default().keys().cloned().collect();
    let mut anon: Vec<String> = config.volumes.clone().unwrap_or_default().keys().cloned().collect();
    anon.sort();
    for dst in anon {
        // Some clients leave `src:dst` specs in Config.Volumes too: treat them as the bind they are.
        let destination = if dst.contains(':') { parse_bind(&dst)?.destination } else { clean_destination(&dst)? };
        if mounts.iter().any(|x| x.destination == destination) || tmpfs.iter().any(|t| t.trim_end_matches('/') == destination) {
            continue;
        }
        let name = crate::volumes::random_name()?;
        let mut labels = HashMap::new();
        labels.insert(crate::volumes::ANONYMOUS_LABEL.to_string(), String::new());
        wanted.push(VolumeWanted { name: name.clone(), labels, options: HashMap::new() });
        mounts.push(MountPoint {
            typ: MountType::Volume,
            name,
            source: String::new(),
            destination,
            rw: true,
            mode: String::new(),
            propagation: String::new(),
            no_copy: false,
            tmpfs_options: String::new(),
            non_recursive: false,
        });
    }
    Ok((mounts, wanted))
}

/// Resolve `--volumes-from` entries (`name[:ro|rw]`) against existing containers.
pub fn volumes_from(e: &Engine, host: &HostConfig) -> Result<Vec<(Vec<MountPoint>, Option<bool>)>, ApiError> {
    let mut out = Vec::new();
    for v in host.volumes_from.clone().unwrap_or_default() {
        let (name, mode) = match v.rsplit_once(':') {
            Some((n, m)) if m == "ro" || m == "rw" => (n, Some(m == "ro")),
            Some(_) => return Err(ApiError::bad(format!("invalid mode for volumes-from: {v}"))),
            None => (v.as_str(), None),
        };
        // A missing source is a bad request (Docker: 400), not a missing resource of this call.
        let c = e.containers.get(name).map_err(|err| match ApiError::from(err) {
            ApiError::NotFound(m) => ApiError::BadParameter(m),
            other => other,
        })?;
        out.push((c.mounts.clone(), mode));
    }
    Ok(out)
}

/// Create what [`plan`] asked for (named volumes that do not exist yet, anonymous ones).
pub async fn create_volumes(e: &Arc<Engine>, wanted: Vec<VolumeWanted>) -> Result<(), ApiError> {
    for w in wanted {
        crate::volumes::create_volume(e, &w.name, w.labels, w.options).await?;
    }
    Ok(())
}

/// Resolve `dst` inside `rootfs` (symlinks clamped to the root, `..` cannot climb out), creating
/// missing parent directories on the way as the runtime would (the last component is left to
/// the runtime: it is a file for a file bind), and return the symlink-free container path.
/// Refuses when the result is a kernel filesystem (`/proc` or `/sys` via a symlink).
pub fn resolve_in_rootfs(rootfs: &Path, dst: &str) -> Result<String, ApiError> {
    let fail = |msg: String| ApiError::bad(format!("mount destination {dst}: {msg}"));
    let root_real = std::fs::canonicalize(rootfs).map_err(|err| fail(err.to_string()))?;
    let mut resolved = String::from("/");
    let comps: Vec<&str> = dst.split('/').filter(|c| !c.is_empty()).collect();
    for (i, comp) in comps.iter().copied().enumerate() {
        let last = i + 1 == comps.len();
        let candidate = format!("{}/{}", resolved.trim_end_matches('/'), comp);
        match super::archive::open_in_root_following(rootfs, &candidate) {
            Ok(fd) => {
                let real = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)))
                    .map_err(|err| fail(err.to_string()))?;
                let rel = real.strip_prefix(&root_real).map_err(|_| fail("resolves outside the container root".into()))?;
                resolved = format!("/{}", rel.display());
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                // Missing, or a dangling symlink. Everything from here is fd-relative to the
                // resolved parent: a path-based mkdir would follow a dangling link out of the root.
                let parent = super::archive::open_in_root_following(rootfs, &resolved).map_err(|err| fail(err.to_string()))?;
                let c = std::ffi::CString::new(comp).map_err(|_| fail("bad path".into()))?;
                let pfd = std::os::fd::AsRawFd::as_raw_fd(&parent);
                // SAFETY: plain syscalls on an fd we own and a NUL-terminated name.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                if unsafe { libc::fstatat(pfd, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } == 0 {
                    return Err(fail("a symlink to a missing target is not a valid mount destination".into()));
                }
                if last {
                    resolved = candidate;
                    continue;
                }
                // SAFETY: as above.
                if unsafe { libc::mkdirat(pfd, c.as_ptr(), 0o755) } != 0 {
                    let err = std::io::Error::last_os_error();
                    if err.kind() != std::io::ErrorKind::AlreadyExists {
                        return Err(fail(err.to_string()));
                    }
                }
                resolved = candidate;
            }
            Err(err) => return Err(fail(err.to_string())),
        }
    }
    let first = resolved.trim_start_matches('/').split('/').next().unwrap_or("");
    if first == "proc" || first == "sys" {
        return Err(fail(format!("resolves to {resolved}, a kernel filesystem")));
    }
    Ok(resolved)
}

/// Copy the image's content at `src` (a host path inside the rootfs, already resolved) into an
/// empty volume directory, preserving modes, owners and symlinks, never following a link.
pub fn copy_up(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = match std::fs::symlink_metadata(src) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return Ok(());
    }
    let _ = std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777));
    let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let m = std::fs::symlink_metadata(&from)?;
        let ft = m.file_type();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if ft.is_dir() {
            std::fs::create_dir(&to)?;
            copy_up(&from, &to)?;
            continue;
        } else if ft.is_file() {
            let mut r = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&from)?;
            let mut w = std::fs::OpenOptions::new().write(true).create_new(true).open(&to)?;
            std::io::copy(&mut r, &mut w)?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
        } else {
            // Devices, fifos, sockets: not copied (Docker copies them; nothing needs them here).
            continue;
        }
        let _ = std::os::unix::fs::lchown(&to, Some(m.uid()), Some(m.gid()));
    }
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).map(|mut d| d.next().is_none()).unwrap_or(false)
}

/// Runtime mounts for a container about to start: volumes activated (driver options mounted)
/// and filled from the image when new and empty, bind sources created for `-v` binds as Docker
/// does, destinations resolved inside the rootfs.
pub fn runtime_mounts(e: &Engine, mounts: &[MountPoint], rootfs: &Path) -> Result<Vec<MountSpec>, ApiError> {
    // The runtime mounts proc and sysfs there; through a symlink they would land elsewhere
    // (CVE-2019-16884, CVE-2023-28642). berth-oci refuses too; this gives the clear error early.
    for kernel_fs in ["proc", "sys"] {
        if std::fs::symlink_metadata(rootfs.join(kernel_fs)).map(|m| m.file_type().is_symlink()).unwrap_or(false) {
            return Err(ApiError::bad(format!("the image's /{kernel_fs} is a symlink; refusing to start it")));
        }
    }
    // Parents first, so a mount inside another volume lands in it.
    let mut order: Vec<&MountPoint> = mounts.iter().collect();
    order.sort_by_key(|m| m.destination.matches('/').count());
    let mut out = Vec::new();
    for m in order {
        let dest = resolve_in_rootfs(rootfs, &m.destination)?;
        let mut opts = Vec::new();
        match m.typ {
            MountType::Volume => {
                e.volumes.activate(&m.name)?;
                let data = e.volumes.mountpoint(&m.name);
                if !m.no_copy && is_empty_dir(&data) {
                    let src = rootfs.join(dest.trim_start_matches('/'));
                    copy_up(&src, &data).map_err(|err| ApiError::internal(format!("copying image content into volume {}: {err}", m.name)))?;
                }
                opts.push("rbind".to_string());
                opts.push(if m.rw { "rw" } else { "ro" }.to_string());
                out.push(MountSpec { source: data.display().to_string(), destination: dest, typ: "bind".into(), options: opts });
            }
            MountType::Bind => {
                if !Path::new(&m.source).exists() {
                    // `-v /host:/ctr` creates a missing host directory (legacy Docker behaviour).
                    std::fs::create_dir_all(&m.source).map_err(|err| ApiError::bad(format!("creating bind source {}: {err}", m.source)))?;
                }
                opts.push(if m.non_recursive { "bind" } else { "rbind" }.to_string());
                opts.push(if m.rw { "rw" } else { "ro" }.to_string());
                opts.push(if m.propagation.is_empty() { "rprivate".into() } else { m.propagation.clone() });
                out.push(MountSpec { source: m.source.clone(), destination: dest, typ: "bind".into(), options: opts });
            }
            MountType::Tmpfs => {
                opts.extend(["nosuid", "nodev", "noexec"].map(String::from));
                opts.push(if m.rw { "rw" } else { "ro" }.to_string());
                opts.extend(m.tmpfs_options.split(',').filter(|s| !s.is_empty()).map(String::from));
                out.push(MountSpec { source: "tmpfs".into(), destination: dest, typ: "tmpfs".into(), options: opts });
            }
        }
    }
    Ok(out)
}

/// Unmount option volumes that no running container uses any more.
pub fn release(e: &Engine, mounts: &[MountPoint]) {
    for m in mounts.iter().filter(|m| m.typ == MountType::Volume) {
        let busy = e.containers.list().iter().any(|c| {
            matches!(c.state.status, super::store::Status::Running | super::store::Status::Paused | super::store::Status::Restarting)
                && c.mounts.iter().any(|x| x.typ == MountType::Volume && x.name == m.name)
        });
        if !busy {
            e.volumes.deactivate(&m.name);
        }
    }
}

/// `Mounts` in `docker inspect`.
pub fn inspect_view(e: &Engine, mounts: &[MountPoint]) -> Vec<bollard_stubs::models::MountPoint> {
    mounts
        .iter()
        .map(|m| bollard_stubs::models::MountPoint {
            typ: Some(match m.typ {
                MountType::Bind => MountPointTypeEnum::BIND,
                MountType::Volume => MountPointTypeEnum::VOLUME,
                MountType::Tmpfs => MountPointTypeEnum::TMPFS,
            }),
            name: (m.typ == MountType::Volume).then(|| m.name.clone()),
            source: Some(match m.typ {
                MountType::Volume => e.volumes.mountpoint(&m.name).display().to_string(),
                _ => m.source.clone(),
            }),
            destination: Some(m.destination.clone()),
            driver: (m.typ == MountType::Volume).then(|| "local".to_string()),
            mode: Some(m.mode.clone()),
            rw: Some(m.rw),
            propagation: Some(m.propagation.clone()),
        })
        .collect()
}

/// Anonymous volumes of a container (removed by `rm -v` and by `--rm`).
pub fn anonymous_volumes(e: &Engine, mounts: &[MountPoint]) -> Vec<String> {
    mounts
        .iter()
        .filter(|m| m.typ == MountType::Volume)
        .filter(|m| e.volumes.get(&m.name).map(|v| v.anonymous()).unwrap_or(false))
        .map(|m| m.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(clean_destination("/a/./b/../c/").unwrap(), "/a/c");
        assert!(clean_destination("rel").is_err());
        assert!(clean_destination("/").is_err());
        assert!(clean_destination("/proc").is_err());
        assert!(clean_destination("/x/../proc/sys").is_err());
        assert!(clean_destination("/sys/fs").is_err());
        assert_eq!(clean_destination("/process").unwrap(), "/process");
    }

    #[test]
    fn binds() {
        let b = parse_bind("/host:/data:ro,rshared").unwrap();
        assert_eq!(b.typ, MountType::Bind);
        assert!(!b.rw);
        assert_eq!(b.propagation, "rshared");
        let v = parse_bind("vol:/data:nocopy").unwrap();
        assert_eq!(v.typ, MountType::Volume);
        assert_eq!(v.name, "vol");
        assert!(v.no_copy && v.rw);
        assert!(parse_bind("vol:/data:rshared").is_err());
        assert!(parse_bind("/h:/d:bogus").is_err());
        assert!(parse_bind("a").is_err());
        assert!(parse_bind("v:/proc").is_err());
        assert!(parse_bind("bad name:/d").is_err());
        assert_eq!(parse_bind("/h:/d").unwrap().propagation, "rprivate");
    }

    #[test]
    fn plan_anonymous_and_duplicates() {
        let mut cfg = ContainerConfig::default();
        let mut vols = HashMap::new();
        vols.insert("/data".to_string(), HashMap::new());
        vols.insert("/covered".to_string(), HashMap::new());
        cfg.volumes = Some(vols);
        let host = HostConfig { binds: Some(vec!["named:/covered".into()]), ..Default::default() };
        let (mounts, wanted) = plan(&cfg, &host, &[]).unwrap();
        assert_eq!(mounts.len(), 2);
        let anon = mounts.iter().find(|m| m.destination == "/data").unwrap();
        assert_eq!(anon.name.len(), 64);
        assert!(wanted.iter().any(|w| w.name == "named" && w.labels.is_empty()));
        assert!(wanted.iter().any(|w| w.name == anon.name && w.labels.contains_key(crate::volumes::ANONYMOUS_LABEL)));
        let dup = HostConfig { binds: Some(vec!["a1:/x".into(), "/h:/x".into()]), ..Default::default() };
        assert!(plan(&ContainerConfig::default(), &dup, &[]).is_err());
        // volumes-from copies, with an ro override.
        let from = vec![(mounts.clone(), Some(true))];
        let (m2, w2) = plan(&ContainerConfig::default(), &HostConfig::default(), &from).unwrap();
        assert_eq!(m2.len(), 2);
        assert!(m2.iter().all(|m| !m.rw));
        assert!(w2.is_empty());
    }

    #[test]
    fn resolve_clamps_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/real", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("up")).unwrap();
        std::os::unix::fs::symlink("/proc", r.join("p")).unwrap();
        std::fs::create_dir(r.join("proc")).unwrap();
        assert_eq!(resolve_in_rootfs(r, "/abs/dir").unwrap(), "/real/dir");
        // Climbing out is clamped to the root; a link to a missing target is refused, and
        // nothing is created through it (the host's directories stay untouched).
        std::fs::create_dir(r.join("etc")).unwrap();
        assert_eq!(resolve_in_rootfs(r, "/up").unwrap(), "/etc");
        std::fs::remove_dir(r.join("etc")).unwrap();
        let marker = format!("berth-test-{}", std::process::id());
        std::os::unix::fs::symlink(format!("../../../../../../tmp/{marker}"), r.join("dangling")).unwrap();
        assert!(resolve_in_rootfs(r, "/dangling/x").is_err());
        assert!(!Path::new("/tmp").join(&marker).exists());
        assert!(resolve_in_rootfs(r, "/p/sys").is_err());
        // Parents are created, the last component is left to the runtime.
        assert_eq!(resolve_in_rootfs(r, "/new/a/b").unwrap(), "/new/a/b");
        assert!(r.join("new/a").is_dir());
        assert!(!r.join("new/a/b").exists());
    }

    #[test]
    fn copy_up_preserves_tree_without_following_links() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        std::fs::write(src.path().join("d/f"), b"hello").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("l")).unwrap();
        copy_up(src.path(), dst.path()).unwrap();
        assert_eq!(std::fs::read(dst.path().join("d/f")).unwrap(), b"hello");
        assert_eq!(std::fs::read_link(dst.path().join("l")).unwrap(), Path::new("/etc/passwd"));
    }
}
