//! The Berth VM under test: the real `berth` CLI (which starts the real agent, QEMU under TCG,
//! vhost-device-vsock and berthd inside the VM) with a temporary `BERTH_HOME`, run inside the
//! test's loopback-only network namespace, so the VM's egress (the agent's proxy) can reach
//! only the test registry on loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::berthd::{run_with_timeout, DockerOutput};
use crate::netns::{command_in, NetNs};
use crate::{IoContext, Result};

/// `$BERTH_BIN`, else `<workspace>/target/debug/berth`.
pub fn berth_binary() -> PathBuf {
    std::env::var_os("BERTH_BIN").map(PathBuf::from).unwrap_or_else(|| crate::workspace_root().join("target/debug/berth"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The vhost-user-vsock daemon: PATH, else ~/.cargo/bin.
pub fn vhost_vsock_binary() -> Option<PathBuf> {
    on_path("vhost-device-vsock").or_else(|| {
        let p = PathBuf::from(std::env::var_os("HOME")?).join(".cargo/bin/vhost-device-vsock");
        p.is_file().then_some(p)
    })
}

/// Why the VM tests cannot run here, if they cannot.
pub fn missing_prerequisite() -> Option<String> {
    if !crate::have_root() {
        return Some("needs root".into());
    }
    if !berth_binary().is_file() {
        return Some(format!("{} is not built", berth_binary().display()));
    }
    for p in ["qemu-system-x86_64", "qemu-img"] {
        if on_path(p).is_none() {
            return Some(format!("{p} is not installed"));
        }
    }
    if vhost_vsock_binary().is_none() {
        return Some("vhost-device-vsock is not installed (cargo install --locked vhost-device-vsock)".into());
    }
    let img = crate::workspace_root().join("vm-images/out");
    if !["vmlinux", "initramfs.cpio", "system.img"].iter().all(|f| img.join(f).is_file()) {
        return Some("the VM image is not built (vm-images/build)".into());
    }
    None
}

/// Skip (return) unless the VM can run; in CI (`CI` set) a missing prerequisite fails instead,
/// so a green CI always means the VM was tested.
#[macro_export]
macro_rules! require_vm {
    () => {
        if let Some(why) = $crate::vm::missing_prerequisite() {
            if std::env::var_os("CI").is_some() {
                panic!("VM test cannot run in CI: {why}");
            }
            eprintln!("SKIP: {why}");
            return;
        }
    };
}

pub struct BerthVm {
    ns_path: PathBuf,
    home: tempfile::TempDir,
    /// Pids of this home's processes the test saw (a killed agent's QEMU, say), stopped on drop
    /// if still alive.
    pub extra_pids: std::sync::Mutex<Vec<i32>>,
}

impl BerthVm {
    pub fn new(ns: &NetNs) -> Result<BerthVm> {
        let home = tempfile::Builder::new().prefix("berth-vm-").tempdir().ctx(|| "tempdir".into())?;
        std::fs::create_dir(home.path().join("docker-config")).ctx(|| "mkdir docker-config".into())?;
        Ok(BerthVm { ns_path: ns.path(), home, extra_pids: Default::default() })
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn docker_socket(&self) -> PathBuf {
        self.home().join("run/docker.sock")
    }

    fn env(&self, cmd: &mut Command) {
        let mut path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(v) = vhost_vsock_binary().and_then(|p| p.parent().map(Path::to_path_buf)) {
            let mut p = std::ffi::OsString::from(v);
            p.push(":");
            p.push(&path);
            path = p;
        }
        cmd.env("BERTH_HOME", self.home())
            .env("BERTH_ACCEL", "tcg")
            .env("BERTH_VM_IMAGES", crate::workspace_root().join("vm-images/out"))
            .env("PATH", path)
            .env("DOCKER_CONFIG", self.home().join("docker-config"));
        for var in ["DOCKER_API_VERSION", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_TLS"] {
            cmd.env_remove(var);
        }
    }

    /// `berth <args>` inside the namespace.
    pub fn berth(&self, args: &[&str]) -> DockerOutput {
        let mut cmd = command_in(&self.ns_path, berth_binary());
        self.env(&mut cmd);
        cmd.args(args);
        let (status, out, err) = run_with_timeout(cmd, None, Duration::from_secs(400)).unwrap_or_else(|e| panic!("berth {}: {e}", args.join(" ")));
        DockerOutput { args: args.iter().map(|s| s.to_string()).collect(), status, stdout: String::from_utf8_lossy(&out).into(), stderr: String::from_utf8_lossy(&err).into() }
    }

    #[track_caller]
    pub fn berth_ok(&self, args: &[&str]) -> String {
        let o = self.berth(args);
        if !o.success() {
            panic!("`berth {}` failed ({})\n--- stdout:\n{}\n--- stderr:\n{}\n--- console tail:\n{}", args.join(" "), o.status, o.stdout, o.stderr, self.console_tail(200));
        }
        o.stdout
    }

    /// A `docker` command inside the namespace with DOCKER_HOST at the forwarded socket.
    pub fn docker_command(&self) -> Command {
        let mut cmd = command_in(&self.ns_path, "docker");
        self.env(&mut cmd);
        cmd.env("DOCKER_HOST", format!("unix://{}", self.docker_socket().display()));
        cmd
    }

    pub fn docker_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> DockerOutput {
        let mut cmd = self.docker_command();
        cmd.args(args);
        let (status, out, err): (ExitStatus, Vec<u8>, Vec<u8>) =
            run_with_timeout(cmd, stdin, Duration::from_secs(300)).unwrap_or_else(|e| panic!("docker {}: {e}", args.join(" ")));
        DockerOutput { args: args.iter().map(|s| s.to_string()).collect(), status, stdout: String::from_utf8_lossy(&out).into(), stderr: String::from_utf8_lossy(&err).into() }
    }

    pub fn docker(&self, args: &[&str]) -> DockerOutput {
        self.docker_with_stdin(args, None)
    }

    #[track_caller]
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        if !o.success() {
            panic!("`docker {}` failed ({})\n--- stdout:\n{}\n--- stderr:\n{}\n--- console tail:\n{}", args.join(" "), o.status, o.stdout, o.stderr, self.console_tail(200));
        }
        o.stdout
    }

    pub fn console_tail(&self, n: usize) -> String {
        let c = std::fs::read_to_string(self.home().join("vm/console.log")).unwrap_or_default();
        crate::berthd::tail(&c, n)
    }

    /// `berth status --json`.
    pub fn status(&self) -> serde_json::Value {
        let o = self.berth(&["status", "--json"]);
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("status json: {e}: {}", o.stdout))
    }

    pub fn pid_file(&self, rel: &str) -> Option<i32> {
        std::fs::read_to_string(self.home().join(rel)).ok()?.trim().parse().ok()
    }

    /// Pids of this home's agent and QEMU that are still alive.
    pub fn live_pids(&self) -> Vec<i32> {
        ["run/agent.pid", "vm/qemu.pid", "vm/vhost-vsock.pid"].iter().filter_map(|f| self.pid_file(f)).filter(|p| Path::new(&format!("/proc/{p}")).exists()).collect()
    }
}

/// True while process `pid` runs. A zombie does not: this machine's PID 1 does not reap the
/// orphans a killed agent leaves (a QEMU adopted by the next agent is not its child).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()), Some('Z' | 'X')),
        Err(_) => false,
    }
}

impl Drop for BerthVm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("===== VM console tail =====\n{}\n===== agent log =====\n{}", self.console_tail(80),
                std::fs::read_to_string(self.home().join("logs/agent.log")).unwrap_or_default());
        }
        let _ = self.berth(&["down"]);
        // Whatever is left of this home's processes (only ours: pids from our own files).
        // Extra pids only while their argv still names this home (no pid reuse).
        let home = self.home().display().to_string();
        let ours = |p: &i32| alive(*p) && std::fs::read(format!("/proc/{p}/cmdline")).map(|c| String::from_utf8_lossy(&c).contains(&home)).unwrap_or(false);
        let extra: Vec<i32> = self.extra_pids.lock().unwrap().drain(..).filter(ours).collect();
        for pid in self.live_pids().into_iter().chain(extra) {
            // SAFETY: signalling a process this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
