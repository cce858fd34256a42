//! The shim process: runs one container with an OCI runtime binary and stays
//! its parent (child subreaper) until it exits.
//!
//! Plain threads rather than tokio: the process forks itself at start and
//! its work is a handful of blocking pipes and sockets; a runtime would add
//! nothing but another thing that must not exist before `fork`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::logs::{LineSplitter, LogWriter};
use crate::protocol::{frame, Request, Response, ShimStatus, STDERR, STDOUT};
use crate::state::{self, ExitStatus, ShimInfo, EXIT_JSON, SHIM_JSON, SHIM_SOCK};

/// Output bytes queued for one attached client (beyond what its socket holds) before it is cut
/// off: memory stays bounded for a client that stopped reading, and a slow one (a terminal, a
/// replay being written) has this much slack. A client that falls further behind is told and
/// disconnected, never fed a stream with holes in it (dropping chunks silently lost lines).
pub const CLIENT_QUEUE_BYTES: usize = 8 << 20;
/// What one queued chunk counts for beyond its bytes (its allocation and the channel's slot),
/// so a flood of tiny chunks is bounded too. The channel itself is unbounded: a bounded std
/// channel preallocates every slot, and the byte budget is the bound.
const CHUNK_OVERHEAD: usize = 64;

/// The last thing a client that fell too far behind reads.
fn cut_off_notice(tty: bool) -> Vec<u8> {
    let msg = format!("\nberth-shim: this attach fell more than {} MiB behind the container's output and was disconnected; the output is complete in `docker logs`\n", CLIENT_QUEUE_BYTES >> 20);
    if tty {
        msg.into_bytes()
    } else {
        frame(STDERR, msg.as_bytes())
    }
}

/// Command line of the shim.
#[derive(Debug, Clone)]
pub struct ShimArgs {
    pub id: String,
    pub bundle: PathBuf,
    pub state_dir: PathBuf,
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    pub log_path: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// Docker's `none` log driver: no log file; attached clients still get the output.
    pub no_log: bool,
    pub tty: bool,
    pub stdin: bool,
    /// Close the container's stdin when an attached client's input ends (Docker's StdinOnce);
    /// otherwise stdin stays open for the next attach.
    pub stdin_once: bool,
    /// Pipe to the launcher: one JSON line (`Response`-like) once running or failed.
    pub ready_fd: Option<RawFd>,
    /// Attach sessions to wait for before the container starts (see `start`).
    pub wait_attach: usize,
}

/// Readiness line sent over the ready fd.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Ready {
    pub ok: bool,
    #[serde(default)]
    pub shim_pid: i32,
    #[serde(default)]
    pub init_pid: i32,
    #[serde(default)]
    pub error: Option<String>,
}

/// Entry point of the binary; returns the process exit code.
pub fn run(args: ShimArgs) -> i32 {
    // Safety: called first thing in main, before any thread exists.
    if let Err(e) = unsafe { daemonize(args.ready_fd) } {
        let mut ready = args.ready_fd.map(|fd| unsafe { File::from_raw_fd(fd) });
        fail(&args, &mut ready, format!("shim: daemonize: {e}"));
        return 1;
    }
    let mut ready = args.ready_fd.map(|fd| unsafe { File::from_raw_fd(fd) });
    match start(&args) {
        Ok(running) => {
            send_ready(&mut ready, &Ready { ok: true, shim_pid: running.shared.shim_pid, init_pid: running.shared.init_pid, error: None });
            drop(ready);
            supervise(&args, running);
            0
        }
        Err(msg) => {
            fail(&args, &mut ready, msg);
            1
        }
    }
}

fn send_ready(ready: &mut Option<File>, r: &Ready) {
    if let Some(f) = ready.as_mut() {
        let mut line = serde_json::to_vec(r).unwrap_or_default();
        line.push(b'\n');
        let _ = f.write_all(&line);
    }
}

/// Record a failure to start: exit.json with the error, tell the launcher,
/// clean the runtime state.
fn fail(args: &ShimArgs, ready: &mut Option<File>, msg: String) {
    let exit = ExitStatus { exit_code: 128, signal: None, finished_at: Utc::now(), oom_killed: false, error: Some(msg.clone()) };
    let _ = fs::create_dir_all(&args.state_dir);
    let _ = state::write_atomic(&args.state_dir.join(EXIT_JSON), &serde_json::to_vec(&exit).unwrap_or_default());
    send_ready(ready, &Ready { ok: false, shim_pid: std::process::id() as i32, init_pid: 0, error: Some(msg) });
    let _ = runtime_cmd(args).args(["delete", "-f", &args.id]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
    let _ = fs::remove_file(args.state_dir.join(SHIM_SOCK));
}

/// Detach from the launcher: fork (the parent exits at once so the launcher
/// can reap it), new session, cwd /, stdio on /dev/null, and every other fd
/// closed so nothing of berthd's leaks into the shim or the container.
///
/// # Safety
/// Must be called while the process is single-threaded.
unsafe fn daemonize(keep: Option<RawFd>) -> io::Result<()> {
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { .. } => unsafe { libc::_exit(0) },
        nix::unistd::ForkResult::Child => {}
    }
    nix::unistd::setsid().map_err(io::Error::from)?;
    std::env::set_current_dir("/")?;
    let null = OpenOptions::new().read(true).write(true).open("/dev/null")?;
    for fd in 0..3 {
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    drop(null);
    // Collect first, close after: the directory handle itself is in the list.
    let fds: Vec<RawFd> = fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd > 2 && Some(fd) != keep {
            unsafe { libc::close(fd) };
        }
    }
    if let Some(fd) = keep {
        // The runtime and the container must not inherit the ready pipe.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // The container's init is a child of `runc create`, which exits: as a
    // subreaper the shim inherits it and gets its exit status.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn runtime_cmd(args: &ShimArgs) -> Command {
    let mut c = Command::new(&args.runtime);
    c.arg("--root").arg(&args.runtime_root);
    c
}

/// The last error message of a runc-style JSON log (`{"level":"error","msg":…}`).
fn runtime_error(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error" || v["level"] == "fatal")
        .find_map(|v| v["msg"].as_str().map(str::to_owned))
}

/// Everything the threads share.
struct Shared {
    id: String,
    tty: bool,
    shim_pid: i32,
    init_pid: i32,
    log: Mutex<LogState>,
    clients: Mutex<Clients>,
    stdin: Mutex<Option<File>>,
    stdin_once: bool,
    master: Option<File>,
    exit: Mutex<Option<ExitStatus>>,
    exit_cv: Condvar,
    conns: AtomicUsize,
    /// Attach sessions so far; `start` waits for `--wait-attach` of them.
    attached: Mutex<usize>,
    attached_cv: Condvar,
    /// Exit codes of children other than the init, reaped by `supervise` (which owns
    /// `waitpid(-1)`): exec processes and the runtime commands exec runs.
    reaped: Mutex<Reaped>,
    reaped_cv: Condvar,
    execs: Mutex<HashMap<String, ExecProc>>,
    execs_cv: Condvar,
    runtime: PathBuf,
    runtime_root: PathBuf,
    state_dir: PathBuf,
}

#[derive(Default)]
struct Reaped {
    /// Set once nobody reaps any more (the container has exited).
    done: bool,
    codes: HashMap<i32, i32>,
}

struct ExecProc {
    master: Option<File>,
    exit: Option<ExitStatus>,
}

struct LogState {
    writer: Option<LogWriter>,
    split: HashMap<u8, LineSplitter>,
}

struct Client {
    tx: Sender<Vec<u8>>,
    /// Bytes sent and not yet written to the client (the writer thread subtracts).
    queued: Arc<AtomicUsize>,
    stdout: bool,
    stderr: bool,
}

#[derive(Default)]
struct Clients {
    closed: bool,
    list: Vec<Client>,
}

impl Shared {
    fn output(&self, stream: u8, data: &[u8]) {
        // The log lock is held through the fan-out below: an attach with `logs` takes its
        // replay and its subscription under the same lock, so each chunk reaches it exactly
        // once (from the log or live).
        let mut log = self.log.lock().unwrap();
        {
            let LogState { writer, split } = &mut *log;
            if let Some(w) = writer.as_mut() {
                let name = if stream == STDERR { "stderr" } else { "stdout" };
                let now = Utc::now();
                split.entry(stream).or_default().push(data, |piece| {
                    let _ = w.write_entry(name, piece, now);
                });
                let _ = w.flush();
            }
        }
        let mut clients = self.clients.lock().unwrap();
        if clients.list.is_empty() {
            // Nobody attached (the usual case for a detached container): no copy to make.
            return;
        }
        let payload = if self.tty { data.to_vec() } else { frame(stream, data) };
        clients.list.retain(|c| {
            let wants = if stream == STDERR { c.stderr } else { c.stdout };
            if !wants {
                return true;
            }
            // Never block the container on a client: one too far behind is cut off, after a
            // notice.
            let cost = payload.len() + CHUNK_OVERHEAD;
            if c.queued.load(Ordering::SeqCst) + cost > CLIENT_QUEUE_BYTES {
                let notice = cut_off_notice(self.tty);
                c.queued.fetch_add(notice.len() + CHUNK_OVERHEAD, Ordering::SeqCst);
                let _ = c.tx.send(notice);
                return false;
            }
            c.queued.fetch_add(cost, Ordering::SeqCst);
            c.tx.send(payload.clone()).is_ok()
        });
        drop(clients);
        drop(log);
    }

    /// What the container printed so far, rendered as an attach stream carries it: the log's
    /// records, then the part of a line not yet logged. Called with the log lock held.
    fn replay(&self, log: &mut LogState, stdout: bool, stderr: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(w) = log.writer.as_mut() else { return out };
        let _ = w.flush();
        let opts = crate::logs::LogOptions { stdout, stderr, ..Default::default() };
        if let Ok(reader) = crate::logs::read_logs(w.path(), opts) {
            for entry in reader {
                let Ok(entry) = entry else { break };
                if self.tty {
                    out.extend_from_slice(&entry.log);
                } else {
                    out.extend_from_slice(&frame(entry.stream_type(), &entry.log));
                }
            }
        }
        for (stream, wanted) in [(STDOUT, stdout), (STDERR, stderr)] {
            let pending = log.split.get(&stream).map(|s| s.pending()).unwrap_or_default();
            if wanted && !pending.is_empty() {
                out.extend_from_slice(&if self.tty { pending.to_vec() } else { frame(stream, pending) });
            }
        }
        out
    }

    fn output_eof(&self, stream: u8) {
        let mut log = self.log.lock().unwrap();
        let LogState { writer, split } = &mut *log;
        if let (Some(w), Some(s)) = (writer.as_mut(), split.get_mut(&stream)) {
            let name = if stream == STDERR { "stderr" } else { "stdout" };
            let now = Utc::now();
            s.finish(|piece| {
                let _ = w.write_entry(name, piece, now);
            });
            let _ = w.flush();
        }
    }

    fn record_reaped(&self, pid: i32, code: i32) {
        let mut r = self.reaped.lock().unwrap();
        // Bounded: unclaimed entries (children nobody waits for) must not pile up.
        if r.codes.len() > 4096 {
            r.codes.clear();
        }
        r.codes.insert(pid, code);
        self.reaped_cv.notify_all();
    }

    /// Exit code of a child reaped by `supervise`; None if the container exited first.
    fn wait_child(&self, pid: i32) -> Option<i32> {
        let mut r = self.reaped.lock().unwrap();
        loop {
            if let Some(code) = r.codes.remove(&pid) {
                return Some(code);
            }
            if r.done {
                return None;
            }
            r = self.reaped_cv.wait(r).unwrap();
        }
    }

    fn status(&self) -> ShimStatus {
        let exit = self.exit.lock().unwrap().clone();
        ShimStatus { id: self.id.clone(), shim_pid: self.shim_pid, init_pid: self.init_pid, tty: self.tty, running: exit.is_none(), exit }
    }
}

struct Running {
    shared: Arc<Shared>,
    pumps: Vec<std::thread::JoinHandle<()>>,
    cgroup: Option<PathBuf>,
}

fn pipe() -> Result<(File, File), String> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("shim: pipe: {e}"))?;
    Ok((File::from(r), File::from(w)))
}

/// Capacity asked for the container's output pipes (the kernel's default is 64 KiB): a
/// container that prints fast goes on while the shim encodes the previous chunk, and each read
/// takes up to [`crate::logs::READ_CHUNK`] at once instead of many small pieces.
const PIPE_SIZE: libc::c_int = 256 * 1024;

/// Best effort: a smaller pipe only costs throughput.
fn grow_pipe(f: &File) {
    unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
}

/// Receive the pty master the runtime sends over the console socket.
fn recv_console(listener: UnixListener) -> io::Result<File> {
    let (conn, _) = listener.accept()?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = nix::sys::socket::recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                for &extra in &fds[1..] {
                    unsafe { libc::close(extra) };
                }
                return Ok(unsafe { File::from_raw_fd(fd) });
            }
        }
    }
    Err(io::Error::other("no fd received on the console socket"))
}

/// Create and start the container; on success its output is being pumped.
fn start(args: &ShimArgs) -> Result<Running, String> {
    fs::create_dir_all(&args.state_dir).map_err(|e| format!("shim: state dir: {e}"))?;
    for f in [EXIT_JSON, SHIM_JSON, SHIM_SOCK, "console.sock", "init.pid", "runtime.log"] {
        let _ = fs::remove_file(args.state_dir.join(f));
    }
    let writer = if args.no_log {
        None
    } else {
        Some(LogWriter::open(&args.log_path, args.log_max_size, args.log_max_files).map_err(|e| format!("shim: open log {}: {e}", args.log_path.display()))?)
    };
    let pid_file = args.state_dir.join("init.pid");
    let runtime_log = args.state_dir.join("runtime.log");

    let mut create = runtime_cmd(args);
    create.arg("--log").arg(&runtime_log).args(["--log-format", "json", "create", "--bundle"]).arg(&args.bundle);
    create.arg("--pid-file").arg(&pid_file);

    let mut stdin_w = None;
    let mut outputs: Vec<(u8, File)> = Vec::new();
    let mut console = None;
    if args.tty {
        let sock = args.state_dir.join("console.sock");
        let listener = UnixListener::bind(&sock).map_err(|e| format!("shim: console socket: {e}"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(recv_console(listener));
        });
        console = Some(rx);
        create.arg("--console-socket").arg(&sock);
        create.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        grow_pipe(&out_r);
        grow_pipe(&err_r);
        if args.stdin {
            let (in_r, in_w) = pipe()?;
            create.stdin(Stdio::from(in_r));
            stdin_w = Some(in_w);
        } else {
            create.stdin(Stdio::null());
        }
        create.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
        outputs.push((STDOUT, out_r));
        outputs.push((STDERR, err_r));
    }
    create.arg(&args.id);
    let status = create.status();
    // Drop our copies of the container's ends, or EOF would never come.
    drop(create);
    let status = status.map_err(|e| format!("shim: run {}: {e}", args.runtime.display()))?;
    if !status.success() {
        return Err(runtime_error(&runtime_log).unwrap_or_else(|| format!("runtime create failed: {status}")));
    }
    let mut master = None;
    if let Some(rx) = console {
        let _ = fs::remove_file(args.state_dir.join("console.sock"));
        let m = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "shim: runtime sent no console".to_string())?
            .map_err(|e| format!("shim: console: {e}"))?;
        if args.stdin {
            stdin_w = Some(m.try_clone().map_err(|e| format!("shim: dup console: {e}"))?);
        }
        outputs.push((STDOUT, m.try_clone().map_err(|e| format!("shim: dup console: {e}"))?));
        master = Some(m);
    }
    let init_pid: i32 = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| "shim: runtime wrote no init pid".to_string())?;
    let cgroup = find_memory_cgroup(init_pid);

    let shared = Arc::new(Shared {
        id: args.id.clone(),
        tty: args.tty,
        shim_pid: std::process::id() as i32,
        init_pid,
        log: Mutex::new(LogState { writer, split: HashMap::new() }),
        clients: Mutex::new(Clients::default()),
        stdin: Mutex::new(stdin_w),
        stdin_once: args.stdin_once,
        master,
        exit: Mutex::new(None),
        exit_cv: Condvar::new(),
        conns: AtomicUsize::new(0),
        attached: Mutex::new(0),
        attached_cv: Condvar::new(),
        reaped: Mutex::new(Reaped::default()),
        reaped_cv: Condvar::new(),
        execs: Mutex::new(HashMap::new()),
        execs_cv: Condvar::new(),
        runtime: args.runtime.clone(),
        runtime_root: args.runtime_root.clone(),
        state_dir: args.state_dir.clone(),
    });
    let sock_path = args.state_dir.join(SHIM_SOCK);
    // Created 0600 from the start (umask) rather than chmod-ed afterwards, so
    // there is no window in which others may connect; no other thread
    // creates files at this point.
    let old_mask = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(&sock_path);
    unsafe { libc::umask(old_mask) };
    let listener = bound.map_err(|e| format!("shim: control socket: {e}"))?;
    fs::set_permissions(&sock_path, fs::Permissions::from_mode(0o600)).map_err(|e| format!("shim: chmod socket: {e}"))?;
    let pumps = outputs
        .into_iter()
        .map(|(stream, file)| {
            let shared = shared.clone();
            std::thread::spawn(move || pump(file, stream, &shared))
        })
        .collect();

    {
        let shared = shared.clone();
        std::thread::spawn(move || serve(listener, shared));
    }

    // `docker run` attaches before it starts the container: hold the container's first
    // instruction until those sessions are connected, so none of its output is missed. A client
    // that never arrives does not hold the container for more than a few seconds.
    if args.wait_attach > 0 {
        let guard = shared.attached.lock().unwrap();
        let _ = shared
            .attached_cv
            .wait_timeout_while(guard, std::time::Duration::from_secs(5), |n| *n < args.wait_attach)
            .unwrap();
    }
    let start = runtime_cmd(args)
        .arg("--log")
        .arg(&runtime_log)
        .args(["--log-format", "json", "start", &args.id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("shim: run {}: {e}", args.runtime.display()))?;
    if !start.success() {
        let _ = kill(Pid::from_raw(init_pid), Signal::SIGKILL);
        return Err(runtime_error(&runtime_log).unwrap_or_else(|| format!("runtime start failed: {start}")));
    }
    let info = ShimInfo {
        id: args.id.clone(),
        shim_pid: shared.shim_pid,
        init_pid,
        started_at: Utc::now(),
        shim_start_ticks: state::proc_start_ticks(shared.shim_pid).unwrap_or(0),
        tty: args.tty,
    };
    state::write_atomic(&args.state_dir.join(SHIM_JSON), &serde_json::to_vec(&info).unwrap_or_default())
        .map_err(|e| format!("shim: write shim.json: {e}"))?;
    Ok(Running { shared, pumps, cgroup })
}

fn pump(mut file: File, stream: u8, shared: &Shared) {
    let mut buf = vec![0u8; crate::logs::READ_CHUNK];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => shared.output(stream, &buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // EIO on a pty master once the last slave is closed.
            Err(_) => break,
        }
    }
    shared.output_eof(stream);
}

/// The container's memory cgroup directory (v1 memory controller or v2 unified).
fn find_memory_cgroup(pid: i32) -> Option<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if ctrls.split(',').any(|c| c == "memory") {
            return Some(Path::new("/sys/fs/cgroup/memory").join(rel));
        }
        if ctrls.is_empty() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            return Some(Path::new("/sys/fs/cgroup").join(rel));
        }
    }
    None
}

/// Whether the kernel OOM-killed something in the cgroup.
fn oom_killed(cgroup: &Path) -> bool {
    ["memory.events", "memory.oom_control"].iter().any(|f| {
        fs::read_to_string(cgroup.join(f)).is_ok_and(|t| {
            t.lines().any(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()).is_some_and(|n| n > 0))
        })
    })
}

/// Wait for the init to exit, then record, notify, clean up.
fn supervise(args: &ShimArgs, running: Running) {
    let Running { shared, pumps, cgroup } = running;
    let init = Pid::from_raw(shared.init_pid);
    let (exit_code, signal) = loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == init => break (code, None),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == init => break (128 + sig as i32, Some(sig as i32)),
            Ok(WaitStatus::Exited(pid, code)) => shared.record_reaped(pid.as_raw(), code),
            Ok(WaitStatus::Signaled(pid, sig, _)) => shared.record_reaped(pid.as_raw(), 128 + sig as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                // Not our child after all (subreaper not effective): poll.
                while kill(init, None).is_ok() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                break (255, None);
            }
        }
    };
    // The kernel kills the rest of the pid namespace with the init: collect
    // exec processes for a moment, then let their waiters give up.
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        match waitpid(Pid::from_raw(-1), Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => shared.record_reaped(pid.as_raw(), code),
            Ok(WaitStatus::Signaled(pid, sig, _)) => shared.record_reaped(pid.as_raw(), 128 + sig as i32),
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    shared.reaped.lock().unwrap().done = true;
    shared.reaped_cv.notify_all();
    // Drain output: with a pid namespace every holder of the pipes is gone;
    // without one a leftover process could keep them open, so don't wait forever.
    wait_finished(&pumps, Duration::from_secs(3));
    if let Some(mut w) = shared.log.lock().unwrap().writer.take() {
        let _ = w.flush();
    }
    let exit = ExitStatus {
        exit_code,
        signal,
        finished_at: Utc::now(),
        oom_killed: cgroup.as_deref().is_some_and(oom_killed),
        error: None,
    };
    let _ = state::write_atomic(&args.state_dir.join(EXIT_JSON), &serde_json::to_vec(&exit).unwrap_or_default());
    *shared.exit.lock().unwrap() = Some(exit);
    shared.exit_cv.notify_all();
    // Attached clients see the end only once the exit is known: whoever reacts to that end
    // (a `docker start -a` of the same container) finds the container stopped, not running.
    {
        let mut clients = shared.clients.lock().unwrap();
        clients.closed = true;
        clients.list.clear();
    }
    let _ = fs::remove_file(args.state_dir.join(SHIM_SOCK));
    let _ = runtime_cmd(args).args(["delete", "-f", &args.id]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
    // Let attached clients get the last output and waiters their answer.
    let deadline = Instant::now() + Duration::from_secs(3);
    while shared.conns.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait (at most `limit`) for output pumps to see EOF. They normally finish within a moment
/// of the process exiting, so the polling starts fine-grained: a fixed 10 ms step used to add
/// up to 10 ms to every container exit.
fn wait_finished(threads: &[std::thread::JoinHandle<()>], limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut step = Duration::from_micros(100);
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(step);
        step = (step * 2).min(Duration::from_millis(5));
    }
}

fn serve(listener: UnixListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let shared = shared.clone();
        shared.conns.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || {
            let _ = handle(conn, &shared);
            shared.conns.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn reply(mut conn: &UnixStream, r: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
    line.push(b'\n');
    conn.write_all(&line)
}

fn handle(conn: UnixStream, shared: &Shared) -> io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let req: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => return reply(&conn, &Response::err(format!("bad request: {e}"))),
    };
    match req {
        Request::State => reply(&conn, &Response { state: Some(shared.status()), ..Response::ok() }),
        Request::Wait => {
            let mut exit = shared.exit.lock().unwrap();
            while exit.is_none() {
                exit = shared.exit_cv.wait(exit).unwrap();
            }
            let exit = exit.clone();
            reply(&conn, &Response { exit, ..Response::ok() })
        }
        Request::Kill { signal } => {
            if shared.exit.lock().unwrap().is_some() {
                return reply(&conn, &Response::err("container is not running"));
            }
            let r = Signal::try_from(signal)
                .map_err(|e| e.to_string())
                .and_then(|s| kill(Pid::from_raw(shared.init_pid), s).map_err(|e| e.to_string()));
            reply(&conn, &r.map_or_else(Response::err, |_| Response::ok()))
        }
        Request::Resize { h, w } => {
            let Some(m) = shared.master.as_ref() else {
                return reply(&conn, &Response::err("container has no TTY"));
            };
            let ws = libc::winsize { ws_row: h, ws_col: w, ws_xpixel: 0, ws_ypixel: 0 };
            let r = unsafe { libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
            if r < 0 {
                return reply(&conn, &Response::err(io::Error::last_os_error().to_string()));
            }
            reply(&conn, &Response::ok())
        }
        Request::Attach { stdin, stdout, stderr, logs } => attach(conn, reader, shared, stdin, stdout, stderr, logs),
        Request::Exec { exec_id, process, tty, stdin } => exec(conn, reader, shared, &exec_id, &process, tty, stdin),
        Request::ExecWait { exec_id } => {
            let mut execs = shared.execs.lock().unwrap();
            loop {
                match execs.get(&exec_id) {
                    None => return reply(&conn, &Response::err(format!("no such exec: {exec_id}"))),
                    Some(ExecProc { exit: Some(x), .. }) => {
                        let exit = Some(x.clone());
                        drop(execs);
                        return reply(&conn, &Response { exit, ..Response::ok() });
                    }
                    Some(_) => execs = shared.execs_cv.wait(execs).unwrap(),
                }
            }
        }
        Request::ExecResize { exec_id, h, w } => {
            let execs = shared.execs.lock().unwrap();
            let Some(m) = execs.get(&exec_id).and_then(|x| x.master.as_ref()) else {
                drop(execs);
                return reply(&conn, &Response::err("exec has no TTY"));
            };
            let ws = libc::winsize { ws_row: h, ws_col: w, ws_xpixel: 0, ws_ypixel: 0 };
            let r = unsafe { libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
            drop(execs);
            if r < 0 {
                return reply(&conn, &Response::err(io::Error::last_os_error().to_string()));
            }
            reply(&conn, &Response::ok())
        }
    }
}

/// Start `runc exec --detach` so the process becomes the shim's child (subreaper) and is
/// reaped with the container's other children; stream its stdio on `conn`.
fn exec(conn: UnixStream, mut reader: BufReader<UnixStream>, shared: &Shared, exec_id: &str, process: &serde_json::Value, tty: bool, stdin: bool) -> io::Result<()> {
    if shared.exit.lock().unwrap().is_some() || shared.reaped.lock().unwrap().done {
        return reply(&conn, &Response::err("container is not running"));
    }
    if shared.execs.lock().unwrap().contains_key(exec_id) || exec_id.is_empty() || exec_id.contains('/') {
        return reply(&conn, &Response::err("bad or duplicate exec id"));
    }
    let short: String = exec_id.chars().take(12).collect();
    let proc_path = shared.state_dir.join(format!("exec-{short}.json"));
    let pid_path = shared.state_dir.join(format!("exec-{short}.pid"));
    let log_path = shared.state_dir.join(format!("exec-{short}.log"));
    let sock_path = shared.state_dir.join(format!("x{short}.sock"));
    let cleanup = || {
        for p in [&proc_path, &pid_path, &log_path, &sock_path] {
            let _ = fs::remove_file(p);
        }
    };
    if let Err(e) = fs::write(&proc_path, serde_json::to_vec(process).unwrap_or_default()) {
        return reply(&conn, &Response::err(format!("shim: write process: {e}")));
    }
    let mut cmd = Command::new(&shared.runtime);
    cmd.arg("--root").arg(&shared.runtime_root).arg("--log").arg(&log_path).args(["--log-format", "json", "exec", "--detach"]);
    cmd.arg("--pid-file").arg(&pid_path).arg("--process").arg(&proc_path);
    let mut stdin_w = None;
    let mut outputs: Vec<(u8, File)> = Vec::new();
    let mut console = None;
    let setup = (|| -> Result<(), String> {
        if tty {
            let listener = UnixListener::bind(&sock_path).map_err(|e| format!("shim: console socket: {e}"))?;
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(recv_console(listener));
            });
            console = Some(rx);
            cmd.arg("--tty").arg("--console-socket").arg(&sock_path);
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        } else {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            if stdin {
                let (in_r, in_w) = pipe()?;
                cmd.stdin(Stdio::from(in_r));
                stdin_w = Some(in_w);
            } else {
                cmd.stdin(Stdio::null());
            }
            cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
            outputs.push((STDOUT, out_r));
            outputs.push((STDERR, err_r));
        }
        cmd.arg(&shared.id);
        let child = cmd.spawn().map_err(|e| format!("shim: run {}: {e}", shared.runtime.display()))?;
        let runc_pid = child.id() as i32;
        // `supervise` reaps it; never wait on the Child itself.
        drop(child);
        drop(std::mem::replace(&mut cmd, Command::new("/")));
        match shared.wait_child(runc_pid) {
            Some(0) => Ok(()),
            Some(code) => Err(runtime_error(&log_path).unwrap_or_else(|| format!("runtime exec failed with code {code}"))),
            None => Err("container is not running".into()),
        }
    })();
    if let Err(msg) = setup {
        cleanup();
        return reply(&conn, &Response::err(msg));
    }
    let mut master = None;
    if let Some(rx) = console {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(m)) => {
                if stdin {
                    stdin_w = m.try_clone().ok();
                }
                if let Ok(c) = m.try_clone() {
                    outputs.push((STDOUT, c));
                }
                master = Some(m);
            }
            _ => {
                cleanup();
                return reply(&conn, &Response::err("shim: runtime sent no console for the exec"));
            }
        }
    }
    let pid: i32 = match fs::read_to_string(&pid_path).ok().and_then(|s| s.trim().parse().ok()) {
        Some(p) => p,
        None => {
            cleanup();
            return reply(&conn, &Response::err("shim: runtime wrote no exec pid"));
        }
    };
    cleanup();
    shared.execs.lock().unwrap().insert(exec_id.to_string(), ExecProc { master, exit: None });
    let replied = reply(&conn, &Response { pid: Some(pid), ..Response::ok() });
    let out = Arc::new(Mutex::new(conn.try_clone()?));
    let pumps: Vec<_> = outputs
        .into_iter()
        .map(|(stream, mut file)| {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match file.read(&mut buf) {
                        Ok(0) => break,
                        // Keep draining when the client is gone so the process never blocks.
                        Ok(n) => {
                            let data = if tty { buf[..n].to_vec() } else { frame(stream, &buf[..n]) };
                            let _ = out.lock().unwrap().write_all(&data);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    if replied.is_ok() {
        if let Some(mut w) = stdin_w {
            let tty_stdin = tty;
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if w.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                // Non-TTY: the process sees EOF on stdin. TTY: the master stays with the pumps.
                let _ = tty_stdin;
                drop(w);
            });
        }
    }
    let code = shared.wait_child(pid);
    let exit = ExitStatus {
        exit_code: code.unwrap_or(137),
        signal: code.filter(|c| *c > 128).map(|c| c - 128),
        finished_at: Utc::now(),
        oom_killed: false,
        error: None,
    };
    // A background child may hold the output open: don't wait for it forever.
    wait_finished(&pumps, Duration::from_secs(2));
    {
        let mut execs = shared.execs.lock().unwrap();
        if let Some(x) = execs.get_mut(exec_id) {
            x.exit = Some(exit);
            x.master = None;
        }
    }
    shared.execs_cv.notify_all();
    let _ = out.lock().unwrap().shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn attach(conn: UnixStream, mut reader: BufReader<UnixStream>, shared: &Shared, stdin: bool, stdout: bool, stderr: bool, logs: bool) -> io::Result<()> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let queued = Arc::new(AtomicUsize::new(0));
    let mut replay = Vec::new();
    {
        // With `logs`, the replay and the subscription happen under the log lock (see
        // `Shared::output`): nothing printed in between is lost or sent twice.
        let mut log = logs.then(|| shared.log.lock().unwrap());
        if let Some(l) = log.as_mut() {
            replay = shared.replay(l, stdout, stderr);
        }
        let mut clients = shared.clients.lock().unwrap();
        if clients.closed {
            drop(clients);
            return reply(&conn, &Response::err("container is not running"));
        }
        reply(&conn, &Response::ok())?;
        if stdout || stderr {
            clients.list.push(Client { tx, queued: Arc::clone(&queued), stdout, stderr });
        }
    }
    *shared.attached.lock().unwrap() += 1;
    shared.attached_cv.notify_all();
    let mut out = conn.try_clone()?;
    let writer = std::thread::spawn(move || {
        if !replay.is_empty() && out.write_all(&replay).is_err() {
            return;
        }
        drop(replay);
        for chunk in rx {
            if out.write_all(&chunk).is_err() {
                break;
            }
            queued.fetch_sub(chunk.len() + CHUNK_OVERHEAD, Ordering::SeqCst);
        }
        let _ = out.shutdown(std::net::Shutdown::Write);
    });
    if stdin && shared.stdin.lock().unwrap().is_some() {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut guard = shared.stdin.lock().unwrap();
            let Some(f) = guard.as_mut() else { break };
            if f.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        if !shared.tty && shared.stdin_once {
            // Client closed its side: the container sees EOF on stdin.
            shared.stdin.lock().unwrap().take();
        }
    }
    let _ = writer.join();
    Ok(())
}
