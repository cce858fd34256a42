//! berthd under init: started with the VM's settings, restarted if it dies, stopped cleanly
//! (then everything else, then the disk) when the host asks for a shutdown. init is PID 1, so it
//! also reaps every orphan.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::modules::{Class, Loader};
use crate::{console, disk, services, InitError};

/// The `modules-loaded` stage is printed once, not again for a restarted berthd.
static NETWORK_REPORTED: AtomicBool = AtomicBool::new(false);

pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// berthd's socket inside the VM, for init's own readiness check and the debug shell; the host
/// uses vsock port 2375.
pub const INNER_SOCKET: &str = "/run/berth/docker.sock";
pub const ENGINE_PORT: u32 = 2375;
/// Written by the image build: the OCI runtime berthd is configured with.
const RUNTIME_FILE: &str = "/etc/berth/runtime";

#[derive(Default)]
struct State {
    berthd: Option<i32>,
    stopping: bool,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

/// berthd's descriptor for the readiness pipe (`--network-ready-fd`).
const READY_FD: i32 = 3;

/// Start berthd with a pipe on [`READY_FD`]: a thread writes `ok` into it once the network
/// modules are in (or `error: REASON`), which is when berthd sets up its bridges and nftables.
/// berthd serves the API before that.
fn spawn_berthd(mods: &Loader) -> std::io::Result<i32> {
    let (ready_rd, ready_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    let rd = ready_rd.as_raw_fd();
    let proxy = format!("http://{}", services::EGRESS_LISTEN);
    let mut cmd = Command::new("/bin/berthd");
    cmd.args(["--network-ready-fd", &READY_FD.to_string()]);
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec: clear it instead.
            let rc = if rd == READY_FD { libc::fcntl(rd, libc::F_SETFD, 0) } else { libc::dup2(rd, READY_FD) };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Port 2380: the same API with half-close carried in frames (the agent's route over
    // vhost-device-vsock; berthd decodes the frames itself, no relay hop).
    cmd.args(["--host", &format!("vsock://:{ENGINE_PORT}"), "--host", &format!("vsock+framed://:{}", services::FRAMED_ENGINE_PORT)])
        .args(["--host", &format!("unix://{INNER_SOCKET}")])
        .args(["--data-root", disk::DATA_ROOT, "--exec-root", "/run/berth"])
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", "/root")
        // The log goes to a serial console: plain text.
        .env("NO_COLOR", "1")
        // Egress is VPN-proof: every pull goes out through the host agent's proxy.
        .env("HTTP_PROXY", &proxy)
        .env("HTTPS_PROXY", &proxy)
        .env("http_proxy", &proxy)
        .env("https_proxy", &proxy)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Ok(rt) = std::fs::read_to_string(RUNTIME_FILE) {
        cmd.env("BERTH_RUNTIME", rt.trim());
    }
    let mut child = cmd.spawn()?;
    drop(ready_rd);
    let pid = child.id() as i32;
    let mods = mods.clone();
    std::thread::spawn(move || {
        let line = match mods.wait_class(Class::Network) {
            Ok(()) => {
                if !NETWORK_REPORTED.swap(true, Ordering::SeqCst) {
                    console::stage("modules-loaded", "");
                }
                "ok\n".to_string()
            }
            Err(e) => {
                console::line(&format!("network modules: {e}"));
                format!("error: {e}\n")
            }
        };
        // berthd may have died meanwhile (EPIPE): its restart gets a pipe of its own.
        let _ = std::fs::File::from(ready_wr).write_all(line.as_bytes());
    });
    for out in [child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>), child.stderr.take().map(|e| Box::new(e) as Box<dyn Read + Send>)]
        .into_iter()
        .flatten()
    {
        std::thread::spawn(move || relay_log(out));
    }
    // The Child is dropped without waiting: the reaper collects it by pid.
    Ok(pid)
}

/// berthd's log goes to the console (so `berth logs` and the agent's diagnostics have it) and
/// to /run/berthd.log.
fn relay_log(out: Box<dyn Read + Send>) {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open("/run/berthd.log").ok();
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        if let Some(f) = file.as_mut() {
            let _ = writeln!(f, "{line}");
        }
        console::line(&format!("berthd: {line}"));
    }
}

/// True once berthd answers `GET /_ping` on its inner socket.
fn engine_answers() -> bool {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(INNER_SOCKET) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: berth\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") && &buf[9..12] == b"200"
}

fn wait_engine(shared: Shared, mods: Loader) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if engine_answers() {
            console::stage("engine-up", &format!("port={ENGINE_PORT}"));
            // Now the network modules (held until here so that berthd's start had the CPUs).
            mods.release();
            return;
        }
        if shared.0.lock().map(|s| s.stopping).unwrap_or(true) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    mods.release();
    console::line("stage=failed reason=\"berthd did not answer /_ping within 120 s\"");
}

/// Start berthd, then reap until a shutdown request; never returns on success (powers off).
pub fn run(_rt: &tokio::runtime::Runtime, shutdown: Receiver<()>, mods: Loader) -> Result<(), InitError> {
    let shared: Shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
    let pid = spawn_berthd(&mods).map_err(|e| InitError::Io("start berthd".into(), e))?;
    shared.0.lock().expect("lock").berthd = Some(pid);
    {
        let sh = Arc::clone(&shared);
        let m = mods.clone();
        std::thread::spawn(move || wait_engine(sh, m));
    }
    {
        let sh = Arc::clone(&shared);
        std::thread::spawn(move || {
            if shutdown.recv().is_ok() {
                shut_down(sh);
            }
        });
    }
    reap(shared, mods);
    Ok(())
}

fn reap(shared: Shared, mods: Loader) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on any child with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let (lock, cv) = &*shared;
        let mut st = lock.lock().expect("lock");
        if st.berthd == Some(pid) {
            st.berthd = None;
            cv.notify_all();
            if !st.stopping {
                console::line(&format!("berthd exited ({}); restarting it in 1 s", describe(status)));
                drop(st);
                std::thread::sleep(Duration::from_secs(1));
                match spawn_berthd(&mods) {
                    Ok(p) => {
                        lock.lock().expect("lock").berthd = Some(p);
                        let sh = Arc::clone(&shared);
                        let m = mods.clone();
                        std::thread::spawn(move || wait_engine(sh, m));
                    }
                    Err(e) => console::line(&format!("cannot restart berthd: {e}")),
                }
            }
        }
    }
}

fn describe(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {status}")
    }
}

/// berthd first (it stops cleanly), then every other process, then the mounts under the data
/// root and the data disk itself, then power off.
fn shut_down(shared: Shared) {
    console::stage("stopping", "");
    let (lock, cv) = &*shared;
    let mut st = lock.lock().expect("lock");
    st.stopping = true;
    if let Some(pid) = st.berthd {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while st.berthd.is_some() && Instant::now() < deadline {
            st = cv.wait_timeout(st, Duration::from_millis(100)).expect("lock").0;
        }
    }
    drop(st);
    // SAFETY: kill(-1) signals every process but init itself.
    unsafe { libc::kill(-1, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(-1, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(100));
    unmount_below(disk::DATA_ROOT);
    power_off();
}

/// Unmount every mount at or below `root`, deepest first.
fn unmount_below(root: &str) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p == root || p.starts_with(&format!("{root}/")))
        .collect();
    points.reverse();
    for p in points {
        if let Err(e) = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::empty()) {
            console::line(&format!("umount {p}: {e}; detaching it"));
            let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Flush and leave. QEMU runs with `-no-reboot`, so a reboot ends the VM on every machine type
/// (microvm has no ACPI power button to press).
pub fn power_off() {
    // SAFETY: plain syscalls; init is the only caller.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
}
