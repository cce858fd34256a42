//! Drives an OCI runtime binary (runc, or crun which has the same CLI).
//!
//! Every call passes `--root` (runc's state directory, so berth's containers
//! never mix with another engine's) and a fresh `--log` file in JSON format:
//! runc reports failures there, which keeps them apart from the container's
//! own stderr (during `create`, runc's stdio *is* the container's stdio).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    /// The runtime ran and failed; `message` is its last logged error.
    #[error("{runtime} {command} {id}: {message}")]
    Failed {
        runtime: String,
        command: String,
        id: String,
        message: String,
    },
    #[error("running {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("decoding {0} output: {1}")]
    Decode(String, String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

/// The parts of `runc state` berth uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct State {
    pub id: String,
    pub status: Status,
    /// 0 once the container has stopped.
    pub pid: i32,
    pub bundle: PathBuf,
}

/// Stdio for the container's process. `None` inherits the caller's: with no
/// console socket, runc hands its own stdin/stdout/stderr to the container
/// process, so the monitor passes the pipes or files it wants the container
/// to use here.
#[derive(Debug, Default)]
pub struct ContainerStdio {
    pub stdin: Option<Stdio>,
    pub stdout: Option<Stdio>,
    pub stderr: Option<Stdio>,
}

/// The operations berth needs from an OCI runtime, shaped after the runtime
/// CLI so another implementation (crun, a fake in tests) can stand in.
pub trait OciRuntime {
    /// Creates the container (namespaces, cgroup, mounts) with its init
    /// process waiting to exec; writes its host pid to `pid_file`.
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ContainerStdio,
    ) -> Result<(), RuncError>;
    /// Lets the created init process exec the user's command.
    fn start(&self, id: &str) -> Result<(), RuncError>;
    /// Signals init, or with `all` every process in the container.
    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuncError>;
    /// Removes runtime state and the cgroup; `force` kills a running container first.
    fn delete(&self, id: &str, force: bool) -> Result<(), RuncError>;
    fn state(&self, id: &str) -> Result<State, RuncError>;
    fn pause(&self, id: &str) -> Result<(), RuncError>;
    fn resume(&self, id: &str) -> Result<(), RuncError>;
    /// Sets a running or paused container's cgroup limits (`docker update`).
    fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<(), RuncError>;
    /// Runs an extra process in the container. With `detach` it returns once
    /// started (pid in `pid_file`); otherwise it waits and returns its exit.
    fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        detach: bool,
        pid_file: Option<&Path>,
        console_socket: Option<&Path>,
        stdio: ContainerStdio,
    ) -> Result<ExitStatus, RuncError>;
}

/// The runc CLI. `root` is its `--root` state directory.
#[derive(Debug, Clone)]
pub struct Runc {
    pub binary: PathBuf,
    pub root: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Runc {
    pub fn new(binary: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        Runc {
            binary: binary.into(),
            root: root.into(),
        }
    }

    /// A unique log/scratch path under the state root for one invocation.
    fn scratch(&self, what: &str) -> Result<PathBuf, RuncError> {
        fs::create_dir_all(&self.root)?;
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .root
            .join(format!(".berth-{what}-{}-{n}", std::process::id())))
    }

    fn command(&self, log: &Path) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(log)
            .arg("--log-format")
            .arg("json");
        c
    }

    /// Runs `args`, capturing stdout; the container is not involved, so
    /// runc's own stdio can be piped.
    fn run(&self, command: &str, id: &str, args: &[&str]) -> Result<Vec<u8>, RuncError> {
        let log = self.scratch("log")?;
        let out = self
            .command(&log)
            .arg(command)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| RuncError::Spawn(self.binary.display().to_string(), e));
        let result = match out {
            Ok(o) if o.status.success() => Ok(o.stdout),
            Ok(o) => Err(self.failure(command, id, &log, &o.stderr, o.status)),
            Err(e) => Err(e),
        };
        let _ = fs::remove_file(&log);
        result
    }

    fn failure(
        &self,
        command: &str,
        id: &str,
        log: &Path,
        stderr: &[u8],
        status: ExitStatus,
    ) -> RuncError {
        let message = last_error(log)
            .or_else(|| {
                let s = String::from_utf8_lossy(stderr).trim().to_string();
                (!s.is_empty()).then_some(s)
            })
            .unwrap_or_else(|| format!("exited with {status}"));
        RuncError::Failed {
            runtime: self.binary.display().to_string(),
            command: command.into(),
            id: id.into(),
            message,
        }
    }

    /// `runc run` in the foreground: create+start+wait in one call; the
    /// container uses `stdio`. Useful for one-shot containers and tests.
    pub fn run_foreground(
        &self,
        id: &str,
        bundle: &Path,
        stdio: ContainerStdio,
    ) -> Result<ExitStatus, RuncError> {
        let log = self.scratch("log")?;
        let mut c = self.command(&log);
        c.arg("run").arg("--bundle").arg(bundle).arg(id);
        apply_stdio(&mut c, stdio);
        let status = c
            .status()
            .map_err(|e| RuncError::Spawn(self.binary.display().to_string(), e))?;
        // runc run exits with the container's status; only a logged error
        // means runc itself failed.
        let err = last_error(&log);
        let _ = fs::remove_file(&log);
        match err {
            Some(message) => Err(RuncError::Failed {
                runtime: self.binary.display().to_string(),
                command: "run".into(),
                id: id.into(),
                message,
            }),
            None => Ok(status),
        }
    }
}

fn apply_stdio(c: &mut Command, stdio: ContainerStdio) {
    if let Some(s) = stdio.stdin {
        c.stdin(s);
    }
    if let Some(s) = stdio.stdout {
        c.stdout(s);
    }
    if let Some(s) = stdio.stderr {
        c.stderr(s);
    }
}

#[derive(Deserialize)]
struct LogLine {
    #[serde(default)]
    level: String,
    #[serde(default)]
    msg: String,
}

/// The last error-level message in a runc JSON log, if any.
pub fn last_error(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<LogLine>(l).ok())
        .find(|l| l.level == "error" || l.level == "fatal")
        .map(|l| l.msg)
}

impl OciRuntime for Runc {
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ContainerStdio,
    ) -> Result<(), RuncError> {
        let log = self.scratch("log")?;
        let mut c = self.command(&log);
        c.arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file);
        if let Some(s) = console_socket {
            c.arg("--console-socket").arg(s);
        }
        c.arg(id);
        apply_stdio(&mut c, stdio);
        // status(), not output(): the container keeps runc's stdout open, so
        // reading it to EOF here would wait for the container to exit.
        let status = c
            .status()
            .map_err(|e| RuncError::Spawn(self.binary.display().to_string(), e));
        let result = match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(self.failure("create", id, &log, b"", s)),
            Err(e) => Err(e),
        };
        let _ = fs::remove_file(&log);
        result
    }

    fn start(&self, id: &str) -> Result<(), RuncError> {
        self.run("start", id, &[id]).map(drop)
    }

    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuncError> {
        let sig = signal.to_string();
        if all {
            self.run("kill", id, &["--all", id, &sig]).map(drop)
        } else {
            self.run("kill", id, &[id, &sig]).map(drop)
        }
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), RuncError> {
        if force {
            self.run("delete", id, &["--force", id]).map(drop)
        } else {
            self.run("delete", id, &[id]).map(drop)
        }
    }

    fn state(&self, id: &str) -> Result<State, RuncError> {
        let out = self.run("state", id, &[id])?;
        serde_json::from_slice(&out).map_err(|e| RuncError::Decode("state".into(), e.to_string()))
    }

    fn pause(&self, id: &str) -> Result<(), RuncError> {
        self.run("pause", id, &[id]).map(drop)
    }

    fn resume(&self, id: &str) -> Result<(), RuncError> {
        self.run("resume", id, &[id]).map(drop)
    }

    /// `update --resources FILE`: the OCI LinuxResources document, which runc reads too.
    fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<(), RuncError> {
        let file = self.scratch("resources")?;
        let json = serde_json::to_vec(resources).map_err(|e| RuncError::Decode("resources".into(), e.to_string()))?;
        fs::write(&file, json)?;
        let path = file.to_string_lossy().into_owned();
        let r = self.run("update", id, &["--resources", &path, id]).map(drop);
        let _ = fs::remove_file(&file);
        r
    }

    fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        detach: bool,
        pid_file: Option<&Path>,
        console_socket: Option<&Path>,
        stdio: ContainerStdio,
    ) -> Result<ExitStatus, RuncError> {
        let proc_path = self.scratch("process")?;
        {
            let mut f = fs::File::create(&proc_path)?;
            f.write_all(
                &serde_json::to_vec(process)
                    .map_err(|e| RuncError::Decode("process".into(), e.to_string()))?,
            )?;
        }
        let log = self.scratch("log")?;
        let mut c = self.command(&log);
        c.arg("exec").arg("--process").arg(&proc_path);
        if detach {
            c.arg("--detach");
        }
        if let Some(p) = pid_file {
            c.arg("--pid-file").arg(p);
        }
        if let Some(s) = console_socket {
            c.arg("--console-socket").arg(s);
        }
        c.arg(id);
        apply_stdio(&mut c, stdio);
        let status = c
            .status()
            .map_err(|e| RuncError::Spawn(self.binary.display().to_string(), e));
        let err = last_error(&log);
        let _ = fs::remove_file(&log);
        let _ = fs::remove_file(&proc_path);
        let status = status?;
        match err {
            Some(message) => Err(RuncError::Failed {
                runtime: self.binary.display().to_string(),
                command: "exec".into(),
                id: id.into(),
                message,
            }),
            None => Ok(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_picks_the_last_error_line() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        fs::write(
            &log,
            "{\"level\":\"warning\",\"msg\":\"w\",\"time\":\"t\"}\n\
             {\"level\":\"error\",\"msg\":\"first\"}\n\
             not json\n\
             {\"level\":\"error\",\"msg\":\"container_linux.go: starting container process caused: exec: \\\"nope\\\": executable file not found in $PATH\"}\n",
        )
        .unwrap();
        assert!(last_error(&log)
            .unwrap()
            .contains("executable file not found"));
        fs::write(&log, "{\"level\":\"info\",\"msg\":\"fine\"}\n").unwrap();
        assert_eq!(last_error(&log), None);
        assert_eq!(last_error(&d.path().join("missing")), None);
    }

    #[test]
    fn state_json_decodes() {
        let s: State = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","id":"c1","pid":42,"status":"running","bundle":"/b","rootfs":"/b/rootfs","created":"x","owner":""}"#,
        )
        .unwrap();
        assert_eq!((s.status, s.pid), (Status::Running, 42));
    }

    /// Uses a fake runtime script to check the CLI shape and error plumbing
    /// without needing root.
    #[test]
    fn failures_carry_the_logged_message() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("fake-runc");
        fs::write(
            &script,
            "#!/bin/sh\n\
             # args: --root R --log L --log-format json CMD ...\n\
             log=$4; cmd=$7\n\
             echo \"$@\" >> \"$2/argv\"\n\
             if [ \"$cmd\" = state ]; then echo '{\"id\":\"c\",\"pid\":7,\"status\":\"created\",\"bundle\":\"/b\"}'; exit 0; fi\n\
             printf '{\"level\":\"error\",\"msg\":\"no such container %s\"}\\n' \"$cmd\" > \"$log\"; exit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let root = d.path().join("state");
        let r = Runc::new(&script, &root);
        assert_eq!(r.state("c").unwrap().pid, 7);
        match r.kill("c", 15, true) {
            Err(RuncError::Failed {
                message, command, ..
            }) => {
                assert_eq!(message, "no such container kill");
                assert_eq!(command, "kill");
            }
            other => panic!("{other:?}"),
        }
        let argv = fs::read_to_string(root.join("argv")).unwrap();
        assert!(argv.contains("kill --all c 15"), "{argv}");
        // Log files are cleaned up after each call.
        let leftovers: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".berth"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
