//! OCI runtimes on one prepared bundle: berth's own runtime (when it lands), crun and runc.
//!
//! Every runtime runs the same read-only busybox rootfs with the same `config.json` (runc's
//! default spec: pid, network, ipc, uts and mount namespaces; `process.args` = `/bin/true`;
//! no terminal) but its own cgroup path under a parent of the bench's own and its own state
//! root, started with the same isolation as the daemons (private mount namespace, the
//! hybrid layout's unified cgroup hidden) and timed from spawn to exit.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::exec::{checked, Out, Timed};
use crate::isolate::Isolation;
use crate::scenario::Subject;

/// Berth's own OCI runtime (guest/oci), the name it is reported under.
pub const BERTH_RUNTIME: &str = "berth-oci";

pub struct OciRuntime {
    pub name: String,
    pub bin: PathBuf,
    /// This runtime's bundle (config.json pointing at the shared rootfs).
    pub bundle: PathBuf,
    /// `--root` state directory.
    pub state: PathBuf,
    runs: AtomicUsize,
}

impl Subject for OciRuntime {
    fn name(&self) -> &str {
        &self.name
    }
}

impl OciRuntime {
    /// `BIN --root STATE run --bundle BUNDLE <unique id>`, timed, in a private mount namespace
    /// with the hybrid unified cgroup hidden. Container stdio goes to /dev/null.
    pub fn run_once(&self) -> Result<Timed> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        let id = format!("berth-bench-{}-{}-{n}", std::process::id(), self.name);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root")
            .arg(&self.state)
            .arg("run")
            .arg("--bundle")
            .arg(&self.bundle)
            .arg(&id);
        Isolation {
            private_mounts: true,
            hide_unified_cgroup: crate::machine::hybrid_unified_mounted(),
            nofile_soft_to_hard: true,
            ..Default::default()
        }
        .apply(&mut cmd)?;
        checked(cmd, Out::Null, Duration::from_secs(60))
    }
}

/// Patch runc's default spec for the bench: absolute read-only rootfs, `/bin/true`, no
/// terminal, the given cgroup path.
pub fn patch_spec(spec: &mut serde_json::Value, rootfs: &Path, cgroups_path: &str) -> Result<()> {
    let bad = || Error::Unexpected("unexpected `runc spec` output".into());
    spec["root"] = serde_json::json!({"path": rootfs.display().to_string(), "readonly": true});
    let process = spec.get_mut("process").ok_or_else(bad)?;
    process["terminal"] = false.into();
    process["args"] = serde_json::json!(["/bin/true"]);
    let linux = spec.get_mut("linux").ok_or_else(bad)?;
    linux["cgroupsPath"] = cgroups_path.into();
    Ok(())
}

/// Runtimes ready to run, and (name, reason) of the missing ones.
pub type Prepared = (Vec<OciRuntime>, Vec<(String, String)>);

/// Prepare a rootfs and one bundle per runtime under `root`; `candidates` are (name, binary
/// or the reason it is missing).
pub fn prepare(
    root: &Path,
    candidates: &[(String, std::result::Result<PathBuf, String>)],
    cgroup_parent: &str,
) -> Result<Prepared> {
    let rootfs = root.join("rootfs");
    fs::create_dir_all(&rootfs).ctx(|| "mkdir rootfs".into())?;
    let tar = berth_tests::image::busybox_tar()?;
    tar::Archive::new(tar)
        .unpack(&rootfs)
        .ctx(|| "unpack busybox rootfs".into())?;
    // runc's default spec as the common starting point (the OCI reference runtime's own).
    let tmpl = root.join("template");
    fs::create_dir_all(&tmpl).ctx(|| "mkdir template".into())?;
    let out = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(&tmpl)
        .output()
        .ctx(|| "spawn runc spec".into())?;
    if !out.status.success() {
        return Err(Error::Unexpected(format!(
            "runc spec: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let base: serde_json::Value =
        serde_json::from_slice(&fs::read(tmpl.join("config.json")).ctx(|| "read spec".into())?)?;
    let mut ready = Vec::new();
    let mut missing = Vec::new();
    for (name, bin) in candidates {
        let bin = match bin {
            Ok(b) => b.clone(),
            Err(reason) => {
                missing.push((name.clone(), reason.clone()));
                continue;
            }
        };
        let bundle = root.join(format!("bundle-{name}"));
        let state = root.join(format!("state-{name}"));
        fs::create_dir_all(&bundle).ctx(|| "mkdir bundle".into())?;
        fs::create_dir_all(&state).ctx(|| "mkdir state".into())?;
        let mut spec = base.clone();
        patch_spec(&mut spec, &rootfs, &format!("{cgroup_parent}/{name}"))?;
        fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&spec)?,
        )
        .ctx(|| "write config.json".into())?;
        ready.push(OciRuntime {
            name: name.clone(),
            bin,
            bundle,
            state,
            runs: AtomicUsize::new(0),
        });
    }
    Ok((ready, missing))
}

/// `name` found on PATH, or why not.
pub fn find_on_path(name: &str) -> std::result::Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{name} is not installed (Debian package `{name}`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_patched() {
        let mut spec = serde_json::json!({
            "process": {"terminal": true, "args": ["sh"]},
            "root": {"path": "rootfs", "readonly": true},
            "linux": {"namespaces": []}
        });
        patch_spec(&mut spec, Path::new("/b/rootfs"), "/berth-bench-1-rt/crun").unwrap();
        assert_eq!(spec["process"]["args"][0], "/bin/true");
        assert_eq!(spec["process"]["terminal"], false);
        assert_eq!(spec["root"]["path"], "/b/rootfs");
        assert_eq!(spec["linux"]["cgroupsPath"], "/berth-bench-1-rt/crun");
        assert!(patch_spec(&mut serde_json::json!({}), Path::new("/r"), "/c").is_err());
        assert!(find_on_path("sh").is_ok());
        assert!(find_on_path("no-such-runtime-xyz").is_err());
    }
}
