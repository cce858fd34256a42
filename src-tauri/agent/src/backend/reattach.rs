//! Re-attaching to a VM left running by an earlier agent (reliability checklist #29).
//!
//! The VM belongs to the user's session, not to one agent process: QEMU and its vsock helper
//! run in their own session (no parent-death signal, no pipe to the agent; the console goes to
//! a file), so killing the agent, or quitting the app, leaves them and the containers running.
//! A new agent looks at what it finds before it boots anything, and [`inspect`] decides:
//!
//! - nothing, or only stale files (a dead pid, a pid reused by some other program): boot as
//!   usual; an orphaned vsock helper of ours is stopped;
//! - a QEMU of ours (pid file + its argv names our pid file), its vsock helper alive (argv names
//!   our socket), QMP answering `running`, berthd answering `/_ping` through vsock within a
//!   timeout: adopt it;
//! - a QEMU of ours in any other state (helper dead, QMP silent, engine silent): broken; stop
//!   it cleanly and boot a fresh one, and say so.
//!
//! The process and socket checks are behind [`Probe`] so the decision is unit-tested without
//! a VM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::ENGINE_PORT;
use crate::transport::Transport;

/// How long an adopted engine may take to answer `/_ping`.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the processes of a VM are recorded.
#[derive(Debug, Clone)]
pub struct Layout {
    /// QEMU's `-pidfile`.
    pub qemu_pidfile: PathBuf,
    /// The vhost-user-vsock helper's pid file and control socket; None with kernel vhost-vsock.
    pub helper: Option<(PathBuf, PathBuf)>,
}

/// What was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No VM of ours. `stale_helper`: a helper of ours that outlived its QEMU, to stop.
    Nothing { stale_helper: Option<u32> },
    /// A healthy VM: take it over.
    Adopt { qemu: u32, helper: Option<u32> },
    /// A VM of ours that cannot be taken over: stop it, then boot afresh.
    Broken { qemu: u32, helper: Option<u32>, reason: String },
}

/// The outside world as [`inspect`] sees it.
#[async_trait::async_trait]
pub trait Probe: Send + Sync {
    fn read_pid(&self, path: &Path) -> Option<u32>;
    /// argv of a live process (None: none, or a zombie).
    fn argv(&self, pid: u32) -> Option<Vec<String>>;
    /// QMP `query-status`.
    async fn qmp_status(&self) -> Result<String, String>;
    /// berthd's `/_ping` through vsock, retried up to a timeout.
    async fn engine_answers(&self) -> Result<(), String>;
}

fn program_is(argv: &[String], name: &str) -> bool {
    argv.first().and_then(|a| Path::new(a).file_name()).map(|f| f.to_string_lossy().contains(name)).unwrap_or(false)
}

fn has_pair(argv: &[String], flag: &str, value: &Path) -> bool {
    argv.windows(2).any(|w| w[0] == flag && Path::new(&w[1]) == value)
}

/// A QEMU started by an agent of this home: its `-pidfile` is ours.
pub fn is_our_qemu(argv: &[String], pidfile: &Path) -> bool {
    program_is(argv, "qemu-system") && has_pair(argv, "-pidfile", pidfile)
}

/// A vhost-device-vsock started by an agent of this home: its `--socket` is ours.
pub fn is_our_helper(argv: &[String], socket: &Path) -> bool {
    program_is(argv, "vhost-device-vsock") && has_pair(argv, "--socket", socket)
}

/// The `-accel` QEMU runs with.
pub fn accel_of(argv: &[String]) -> Option<crate::api::Accel> {
    argv.windows(2).find(|w| w[0] == "-accel").and_then(|w| crate::api::Accel::parse(w[1].split(',').next().unwrap_or("")))
}

/// Decide what to do with what is there (see the module doc).
pub async fn inspect(p: &dyn Probe, l: &Layout) -> Found {
    let helper = l.helper.as_ref().and_then(|(pidfile, socket)| {
        let pid = p.read_pid(pidfile)?;
        p.argv(pid).filter(|a| is_our_helper(a, socket)).map(|_| pid)
    });
    let qemu = p.read_pid(&l.qemu_pidfile).filter(|pid| p.argv(*pid).map(|a| is_our_qemu(&a, &l.qemu_pidfile)).unwrap_or(false));
    let Some(qemu) = qemu else {
        return Found::Nothing { stale_helper: helper };
    };
    let broken = |reason: String| Found::Broken { qemu, helper, reason };
    if l.helper.is_some() && helper.is_none() {
        return broken("its vsock helper (vhost-device-vsock) is not running".into());
    }
    match p.qmp_status().await {
        Ok(s) if s == "running" => {}
        Ok(s) => return broken(format!("QEMU reports {s:?}, not running")),
        Err(e) => return broken(format!("QEMU does not answer on QMP ({e})")),
    }
    if let Err(e) = p.engine_answers().await {
        return broken(format!("berthd does not answer through vsock ({e})"));
    }
    Found::Adopt { qemu, helper }
}

/// The real [`Probe`]: pid files, the platform's process table, QMP, the transport.
pub struct SystemProbe {
    pub qmp: PathBuf,
    pub transport: Arc<dyn Transport>,
    pub engine_timeout: Duration,
}

#[async_trait::async_trait]
impl Probe for SystemProbe {
    fn read_pid(&self, path: &Path) -> Option<u32> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok().filter(|p| *p > 1)
    }

    fn argv(&self, pid: u32) -> Option<Vec<String>> {
        super::platform::process_argv(pid)
    }

    async fn qmp_status(&self) -> Result<String, String> {
        let mut q = crate::qmp::Qmp::connect(&self.qmp).await.map_err(|e| e.to_string())?;
        q.status().await.map_err(|e| e.to_string())
    }

    async fn engine_answers(&self) -> Result<(), String> {
        let deadline = Instant::now() + self.engine_timeout;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            match self.transport.connect(ENGINE_PORT).await {
                Ok(s) => {
                    if super::ping(s).await {
                        return Ok(());
                    }
                    last = "no answer to /_ping".into();
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("{last}, for {} s", self.engine_timeout.as_secs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fake {
        pids: HashMap<PathBuf, u32>,
        procs: HashMap<u32, Vec<String>>,
        qmp: Option<Result<String, String>>,
        engine: Option<Result<(), String>>,
    }

    #[async_trait::async_trait]
    impl Probe for Fake {
        fn read_pid(&self, path: &Path) -> Option<u32> {
            self.pids.get(path).copied()
        }
        fn argv(&self, pid: u32) -> Option<Vec<String>> {
            self.procs.get(&pid).cloned()
        }
        async fn qmp_status(&self) -> Result<String, String> {
            self.qmp.clone().expect("QMP asked only once QEMU and its helper are ours and alive")
        }
        async fn engine_answers(&self) -> Result<(), String> {
            self.engine.clone().expect("engine asked only after QMP said running")
        }
    }

    fn layout() -> Layout {
        Layout { qemu_pidfile: "/h/vm/qemu.pid".into(), helper: Some(("/h/vm/vhost-vsock.pid".into(), "/h/vm/vhost-vsock.sock".into())) }
    }

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn healthy() -> Fake {
        let mut f = Fake::default();
        f.pids.insert("/h/vm/qemu.pid".into(), 100);
        f.pids.insert("/h/vm/vhost-vsock.pid".into(), 101);
        f.procs.insert(100, argv(&["/usr/bin/qemu-system-x86_64", "-name", "berth", "-accel", "tcg", "-pidfile", "/h/vm/qemu.pid"]));
        f.procs.insert(101, argv(&["/root/.cargo/bin/vhost-device-vsock", "--guest-cid", "3", "--socket", "/h/vm/vhost-vsock.sock"]));
        f.qmp = Some(Ok("running".into()));
        f.engine = Some(Ok(()));
        f
    }

    #[tokio::test]
    async fn a_healthy_vm_is_adopted() {
        assert_eq!(inspect(&healthy(), &layout()).await, Found::Adopt { qemu: 100, helper: Some(101) });
        // Kernel vhost-vsock: no helper to check.
        let mut f = healthy();
        f.procs.remove(&101);
        let l = Layout { helper: None, ..layout() };
        assert_eq!(inspect(&f, &l).await, Found::Adopt { qemu: 100, helper: None });
    }

    #[tokio::test]
    async fn nothing_when_no_qemu_of_ours_runs() {
        // No pid file at all.
        assert_eq!(inspect(&Fake::default(), &layout()).await, Found::Nothing { stale_helper: None });
        // QEMU dead (or a zombie), its helper still there: the helper is to be stopped.
        let mut f = healthy();
        f.procs.remove(&100);
        assert_eq!(inspect(&f, &layout()).await, Found::Nothing { stale_helper: Some(101) });
        // The pid was reused by another program, or by a QEMU of another home: never touched.
        for other in [argv(&["/usr/bin/vim", "-pidfile", "/h/vm/qemu.pid"]), argv(&["/usr/bin/qemu-system-x86_64", "-pidfile", "/other/vm/qemu.pid"])] {
            let mut f = healthy();
            f.procs.insert(100, other);
            f.procs.remove(&101);
            assert_eq!(inspect(&f, &layout()).await, Found::Nothing { stale_helper: None });
        }
    }

    #[tokio::test]
    async fn inconsistent_vms_are_refused_with_the_reason() {
        let reason = |f: Found| match f {
            Found::Broken { qemu: 100, reason, .. } => reason,
            other => panic!("expected Broken, got {other:?}"),
        };
        let mut f = healthy();
        f.procs.remove(&101);
        f.qmp = None;
        assert!(reason(inspect(&f, &layout()).await).contains("vsock helper"));
        // The helper's pid now belongs to another program.
        let mut f = healthy();
        f.procs.insert(101, argv(&["/bin/sleep", "100"]));
        f.qmp = None;
        assert!(reason(inspect(&f, &layout()).await).contains("vsock helper"));
        let mut f = healthy();
        f.qmp = Some(Err("connection refused".into()));
        f.engine = None;
        assert!(reason(inspect(&f, &layout()).await).contains("QMP"));
        let mut f = healthy();
        f.qmp = Some(Ok("paused".into()));
        f.engine = None;
        assert!(reason(inspect(&f, &layout()).await).contains("paused"));
        let mut f = healthy();
        f.engine = Some(Err("timeout".into()));
        let r = inspect(&f, &layout()).await;
        assert_eq!(r, Found::Broken { qemu: 100, helper: Some(101), reason: "berthd does not answer through vsock (timeout)".into() });
    }

    #[test]
    fn identity_checks() {
        let a = argv(&["qemu-system-x86_64", "-accel", "kvm", "-pidfile", "/h/vm/qemu.pid"]);
        assert!(is_our_qemu(&a, Path::new("/h/vm/qemu.pid")));
        assert!(!is_our_qemu(&a, Path::new("/h/vm/qemu.pid2")));
        assert!(!is_our_qemu(&argv(&["qemu-system-x86_64", "/h/vm/qemu.pid"]), Path::new("/h/vm/qemu.pid")), "the path must be the -pidfile value");
        assert_eq!(accel_of(&a), Some(crate::api::Accel::Kvm));
        assert_eq!(accel_of(&argv(&["q", "-accel", "tcg,thread=multi"])), Some(crate::api::Accel::Tcg));
        assert!(is_our_helper(&argv(&["vhost-device-vsock", "--socket", "/s"]), Path::new("/s")));
        assert!(!is_our_helper(&argv(&["vhost-device-vsock", "--socket", "/t"]), Path::new("/s")));
    }
}
