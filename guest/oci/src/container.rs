//! The runtime commands: create, start, run, state, kill, delete, pause, resume, ps, exec.
//!
//! `create` clones the init straight into its new namespaces (one raw clone(2) with the
//! namespace flags; the process is single-threaded, so that is as safe as fork), puts it in its
//! cgroup, lets it build the container's filesystem, and returns once it reports ready. The init
//! then blocks opening `exec.fifo` for writing until `start` opens it for reading, which is
//! what makes create+start two steps (runc's model, so berth-shim drives both runtimes alike).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use crate::cgroups::{self, Cgroup, Layout};
use crate::rootfs::{self, RootfsPlan};
use crate::state::{self, State, Status, EXEC_FIFO};
use crate::sys::{Linux, Syscall};
use crate::OciError;

/// Global flags (`--root`, `--log`, `--log-format`).
#[derive(Debug, Clone)]
pub struct Globals {
    pub root: PathBuf,
    pub log: Option<PathBuf>,
    pub log_json: bool,
}

fn ns_flag(t: LinuxNamespaceType) -> libc::c_int {
    match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Time => 0x80,
    }
}

fn ns_file(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Time => "time",
    }
}

pub fn load_spec(bundle: &Path) -> Result<Spec, OciError> {
    let p = bundle.join("config.json");
    let data = fs::read(&p).map_err(|e| OciError::Io(format!("reading {}", p.display()), e))?;
    serde_json::from_slice(&data).map_err(|e| OciError::Invalid(format!("{}: {e}", p.display())))
}

/// What to clone and what to join, from the spec's namespace list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NsPlan {
    /// Flags for clone(2) (every new namespace except cgroup, which the init unshares after
    /// it has been moved into its cgroup, so that cgroup becomes its namespace root).
    pub clone_flags: libc::c_int,
    pub new_cgroup_ns: bool,
    /// (path, flag) to setns into.
    pub joins: Vec<(PathBuf, libc::c_int)>,
}

pub fn ns_plan(spec: &Spec) -> Result<NsPlan, OciError> {
    let mut p = NsPlan::default();
    for ns in spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default() {
        let f = ns_flag(ns.typ());
        match (ns.typ(), ns.path()) {
            (LinuxNamespaceType::User, _) => return Err(OciError::Invalid("user namespaces are not supported by berth-oci".into())),
            (LinuxNamespaceType::Mount, Some(_)) => return Err(OciError::Invalid("joining a mount namespace is not supported by berth-oci".into())),
            (_, Some(path)) => p.joins.push((path.clone(), f)),
            (LinuxNamespaceType::Cgroup, None) => p.new_cgroup_ns = true,
            (_, None) => p.clone_flags |= f,
        }
    }
    if p.clone_flags & libc::CLONE_NEWNS == 0 {
        return Err(OciError::Invalid("berth-oci needs a mount namespace".into()));
    }
    Ok(p)
}

fn seqpacket_pair() -> Result<(UnixStream, UnixStream), OciError> {
    let mut fds = [0; 2];
    crate::sys::check(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })
        .map_err(|e| OciError::Io("socketpair".into(), e))?;
    Ok(unsafe { (UnixStream::from_raw_fd(fds[0]), UnixStream::from_raw_fd(fds[1])) })
}

fn send(s: &UnixStream, msg: &str) {
    let _ = unsafe { libc::send(s.as_raw_fd(), msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) };
}

/// One message, or None at EOF.
fn recv(s: &UnixStream) -> Option<String> {
    let mut buf = vec![0u8; 8192];
    loop {
        let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return None;
        }
        return Some(String::from_utf8_lossy(&buf[..n as usize]).into_owned());
    }
}

/// clone3's argument block (struct clone_args, version 2 with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Like [`clone_process`], but the child is born in the cgroup v2 directory `cgroup_fd`
/// (CLONE_INTO_CGROUP): no migration afterwards, which on cgroup v1 costs an RCU grace period
/// (~8 ms here) for the first controller. None when the kernel cannot (then clone + move).
pub fn clone_into_cgroup(flags: libc::c_int, cgroup_fd: RawFd) -> Option<i32> {
    let args = CloneArgs { flags: flags as u64 | CLONE_INTO_CGROUP, exit_signal: libc::SIGCHLD as u64, cgroup: cgroup_fd as u64, ..Default::default() };
    // SAFETY: no stack: fork-like; the process is single-threaded.
    let r = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if r < 0 {
        None
    } else {
        Some(r as i32)
    }
}

/// A fork-like clone(2) into new namespaces. Safe to call only while single-threaded.
fn clone_process(flags: libc::c_int) -> Result<i32, OciError> {
    // SAFETY: no stack argument: the child runs on a copy of ours, like fork.
    let r = unsafe { libc::syscall(libc::SYS_clone, (flags | libc::SIGCHLD) as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) };
    if r < 0 {
        return Err(OciError::Io("clone".into(), io::Error::last_os_error()));
    }
    Ok(r as i32)
}

fn write_pid_file(p: &Path, pid: i32) -> Result<(), OciError> {
    let tmp = p.with_extension("tmp-berth");
    fs::write(&tmp, pid.to_string()).and_then(|_| fs::rename(&tmp, p)).map_err(|e| OciError::Io(format!("writing {}", p.display()), e))
}

fn rootfs_path(bundle: &Path, spec: &Spec) -> PathBuf {
    let p = spec.root().as_ref().map(|r| r.path().clone()).unwrap_or_else(|| "rootfs".into());
    if p.is_absolute() {
        p
    } else {
        bundle.join(p)
    }
}

/// Removes what a failed create left.
struct Cleanup {
    dir: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    pid: i32,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.pid > 0 {
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
        if let Some(c) = self.cgroup.take() {
            let _ = c.delete();
        }
        if let Some(d) = self.dir.take() {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// `create`: returns the init's pid.
pub fn create(g: &Globals, id: &str, bundle: &Path, pid_file: Option<&Path>, console_socket: Option<&Path>) -> Result<i32, OciError> {
    let bundle = fs::canonicalize(bundle).map_err(|e| OciError::Io(format!("bundle {}", bundle.display()), e))?;
    let spec = load_spec(&bundle)?;
    let process = spec.process().clone().ok_or_else(|| OciError::Invalid("config.json has no process".into()))?;
    let terminal = process.terminal().unwrap_or(false);
    if terminal && console_socket.is_none() {
        return Err(OciError::Invalid("process.terminal is set but no --console-socket was given".into()));
    }
    let plan = ns_plan(&spec)?;
    let rootfs = rootfs_path(&bundle, &spec);
    let dir = state::dir(&g.root, id)?;
    fs::create_dir_all(&g.root).map_err(|e| OciError::Io("creating --root".into(), e))?;
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(OciError::Exists(id.to_string())),
        Err(e) => return Err(OciError::Io("creating the state dir".into(), e)),
    }
    let mut cleanup = Cleanup { dir: Some(dir.clone()), cgroup: None, pid: 0 };
    let fifo = dir.join(EXEC_FIFO);
    let c = crate::sys::cstr(&fifo).map_err(|e| OciError::Io("fifo".into(), e))?;
    crate::sys::check(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }).map_err(|e| OciError::Io("mkfifo".into(), e))?;

    let layout = cgroups::detect().map_err(|e| OciError::Io("detecting cgroups".into(), e))?;
    let linux = spec.linux().clone().unwrap_or_default();
    let cg = Cgroup::new(layout.clone(), &linux.cgroups_path().as_ref().map(|p| p.display().to_string()).unwrap_or_default(), id);
    cg.create(linux.resources().as_ref()).map_err(|e| OciError::Cgroup(e.to_string()))?;
    cleanup.cgroup = Some(cg.clone());
    let seccomp = match linux.seccomp() {
        Some(s) => crate::seccomp::compile(s)?,
        None => Vec::new(),
    };
    let mut joins = Vec::new();
    for (path, flag) in &plan.joins {
        let fd = crate::sys::open_path(path, libc::O_RDONLY).map_err(|e| OciError::Io(format!("opening namespace {}", path.display()), e))?;
        if *flag == libc::CLONE_NEWPID {
            // A pid namespace is entered by the children of whoever calls setns.
            Linux.setns(fd.as_raw_fd(), *flag).map_err(|e| OciError::Io(format!("joining {}", path.display()), e))?;
        } else {
            joins.push((fd, *flag));
        }
    }
    let (parent, child) = seqpacket_pair()?;
    let hierarchies = match &layout {
        Layout::V1(h) => h.clone(),
        Layout::V2(_) => Vec::new(),
    };
    // cgroup v2: born inside the container's cgroup; v1: moved there right after.
    let v2_dir = match &layout {
        Layout::V2(_) => cg.dirs().first().and_then(|d| crate::sys::open_path(d, libc::O_RDONLY | libc::O_DIRECTORY).ok()),
        Layout::V1(_) => None,
    };
    let (pid, in_cgroup) = match v2_dir.as_ref().and_then(|d| clone_into_cgroup(plan.clone_flags, d.as_raw_fd())) {
        Some(pid) => (pid, true),
        None => (clone_process(plan.clone_flags)?, false),
    };
    if pid == 0 {
        drop(parent);
        // See exec_intermediate: this binary must not be reachable through /proc/1/exe.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        let ctx = InitCtx {
            spec: &spec,
            process: &process,
            rootfs: &rootfs,
            fifo: &fifo,
            console_socket,
            joins: &joins,
            new_cgroup_ns: plan.new_cgroup_ns,
            hierarchies: &hierarchies,
            cgroup_v2: matches!(layout, Layout::V2(_)),
            seccomp: &seccomp,
        };
        let err = init(&Linux, &ctx, &child);
        send(&child, &format!("error:{err}"));
        unsafe { libc::_exit(1) };
    }
    cleanup.pid = pid;
    drop(child);
    drop(joins);
    drop(v2_dir);
    if !in_cgroup {
        cg.add(pid).map_err(|e| OciError::Cgroup(e.to_string()))?;
    }
    if let Some(adj) = process.oom_score_adj() {
        fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string()).map_err(|e| OciError::Io("oom_score_adj".into(), e))?;
    }
    send(&parent, "go");
    match recv(&parent) {
        Some(m) if m == "ready" => {}
        Some(m) => return Err(OciError::Child(m.strip_prefix("error:").unwrap_or(&m).to_string())),
        None => return Err(OciError::Setup("container init exited during setup".into())),
    }
    cg.set_devices(linux.resources().as_ref()).map_err(|e| OciError::Cgroup(e.to_string()))?;
    let st = State {
        id: id.to_string(),
        pid,
        pid_start: state::proc_start(pid).unwrap_or(0),
        bundle: bundle.clone(),
        rootfs,
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        cgroup: cg,
        annotations: spec.annotations().clone().unwrap_or_default(),
    };
    st.save(&g.root)?;
    if let Some(p) = pid_file {
        write_pid_file(p, pid)?;
    }
    cleanup.pid = 0;
    cleanup.dir = None;
    cleanup.cgroup = None;
    Ok(pid)
}

/// What the init needs, borrowed from `create`'s stack (it is a copy after clone).
pub struct InitCtx<'a> {
    pub spec: &'a Spec,
    pub process: &'a Process,
    pub rootfs: &'a Path,
    pub fifo: &'a Path,
    pub console_socket: Option<&'a Path>,
    pub joins: &'a [(OwnedFd, libc::c_int)],
    pub new_cgroup_ns: bool,
    pub hierarchies: &'a [cgroups::Hierarchy],
    pub cgroup_v2: bool,
    pub seccomp: &'a [seccompiler::BpfProgram],
}

/// The container's init, in its new namespaces. Returns only on failure.
fn init(sys: &dyn Syscall, ctx: &InitCtx, sync: &UnixStream) -> OciError {
    match init_setup(sys, ctx, sync) {
        Ok((exe, fifo)) => {
            send(sync, "ready");
            // Block until `start` opens the fifo for reading, then let it know we go.
            let p = crate::sys::fd_path(&fifo);
            let w = match fs::OpenOptions::new().write(true).open(&p) {
                Ok(w) => w,
                Err(e) => return OciError::Setup(format!("opening the exec fifo: {e}")),
            };
            let _ = io::Write::write_all(&mut &w, b"0");
            drop(w);
            drop(fifo);
            let e = crate::process::finalize(sys, ctx.process, &exe, ctx.seccomp);
            eprintln!("berth-oci: {e}");
            unsafe { libc::_exit(127) };
        }
        Err(e) => e,
    }
}

fn init_setup(sys: &dyn Syscall, ctx: &InitCtx, sync: &UnixStream) -> Result<(PathBuf, OwnedFd), OciError> {
    if recv(sync).as_deref() != Some("go") {
        return Err(OciError::Setup("create went away".into()));
    }
    for (fd, flag) in ctx.joins {
        sys.setns(fd.as_raw_fd(), *flag).map_err(|e| OciError::Setup(format!("joining namespace {flag:#x}: {e}")))?;
    }
    if ctx.new_cgroup_ns {
        sys.unshare(libc::CLONE_NEWCGROUP).map_err(|e| OciError::Setup(format!("cgroup namespace: {e}")))?;
    }
    unsafe { libc::setsid() };
    // Host paths are reachable only until pivot_root: connect and open what we need now.
    let console = match (ctx.process.terminal().unwrap_or(false), ctx.console_socket) {
        (true, Some(p)) => Some(UnixStream::connect(p).map_err(|e| OciError::Setup(format!("connecting to the console socket {}: {e}", p.display())))?),
        _ => None,
    };
    let fifo = crate::sys::open_path(ctx.fifo, libc::O_PATH).map_err(|e| OciError::Setup(format!("opening the exec fifo: {e}")))?;
    let plan = RootfsPlan { rootfs: ctx.rootfs.to_path_buf(), spec: ctx.spec, hierarchies: ctx.hierarchies, cgroup_v2: ctx.cgroup_v2 };
    rootfs::mount_all(sys, &plan)?;
    sys.pivot_root(ctx.rootfs).map_err(|e| OciError::Setup(format!("pivot_root: {e}")))?;
    if let Some(h) = ctx.spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        sys.sethostname(h).map_err(|e| OciError::Setup(format!("sethostname: {e}")))?;
    }
    if let Some(d) = ctx.spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        sys.setdomainname(d).map_err(|e| OciError::Setup(format!("setdomainname: {e}")))?;
    }
    for (k, v) in ctx.spec.linux().as_ref().and_then(|l| l.sysctl().clone()).unwrap_or_default() {
        if k.contains("..") || k.contains('/') {
            return Err(OciError::Invalid(format!("invalid sysctl {k:?}")));
        }
        let p = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
        sys.write_file(&p, &v).map_err(|e| OciError::Setup(format!("sysctl {k}={v}: {e}")))?;
    }
    rootfs::finish(sys, ctx.spec)?;
    crate::process::set_rlimits(sys, ctx.process)?;
    let user = ctx.process.user();
    if let Some(c) = &console {
        let pts = crate::process::setup_terminal(c, user.uid(), user.gid())?;
        rootfs::bind_console(sys, &pts)?;
    }
    drop(console);
    crate::process::enter_cwd(sys, ctx.process.cwd())?;
    let args = ctx.process.args().clone().unwrap_or_default();
    let arg0 = args.first().ok_or_else(|| OciError::Invalid("process.args is empty".into()))?;
    let exe = crate::process::find_executable(arg0, ctx.process.env().as_deref().unwrap_or_default())?;
    Ok((exe, fifo))
}

/// `start`: releases a created init.
pub fn start(g: &Globals, id: &str) -> Result<(), OciError> {
    let st = State::load(&g.root, id)?;
    match st.status(&g.root) {
        Status::Created => {}
        s => return Err(OciError::State(format!("cannot start a container that is {s:?}").to_lowercase())),
    }
    let fifo = g.root.join(id).join(EXEC_FIFO);
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .map_err(|e| OciError::Io("opening the exec fifo".into(), e))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut pfd = libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n > 0 && pfd.revents & libc::POLLIN != 0 {
            let mut b = [0u8; 1];
            let k = unsafe { libc::read(f.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
            if k == 1 {
                break;
            }
        }
        if !st.alive() {
            return Err(OciError::State("container init exited before start".into()));
        }
        if Instant::now() > deadline {
            return Err(OciError::State("container init did not take the start signal".into()));
        }
    }
    let _ = fs::remove_file(&fifo);
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;

pub fn state_json(g: &Globals, id: &str) -> Result<String, OciError> {
    let st = State::load(&g.root, id)?;
    let status = st.status(&g.root);
    let pid = if status == Status::Stopped { 0 } else { st.pid };
    let out = state::StateOut { oci_version: "1.0.2", id: &st.id, pid, status, bundle: &st.bundle, rootfs: &st.rootfs, created: &st.created, owner: "" };
    serde_json::to_string_pretty(&out).map_err(|e| OciError::Invalid(e.to_string()))
}

pub fn kill(g: &Globals, id: &str, signal: i32, all: bool) -> Result<(), OciError> {
    let st = State::load(&g.root, id)?;
    if !st.alive() {
        return Err(OciError::State("container not running".into()));
    }
    if all {
        for p in st.cgroup.procs() {
            unsafe { libc::kill(p, signal) };
        }
    }
    crate::sys::check(unsafe { libc::kill(st.pid, signal) }).map(drop).map_err(|e| OciError::Io("kill".into(), e))
}

pub fn delete(g: &Globals, id: &str, force: bool) -> Result<(), OciError> {
    let st = State::load(&g.root, id)?;
    let status = st.status(&g.root);
    if matches!(status, Status::Running | Status::Paused) && !force {
        return Err(OciError::State(format!("cannot delete container {id} that is not stopped: {status:?}").to_lowercase()));
    }
    if st.alive() {
        for p in st.cgroup.procs().into_iter().chain([st.pid]) {
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        // A frozen task only dies once thawed.
        if st.cgroup.is_frozen() {
            let _ = st.cgroup.freeze(false);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while st.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    st.cgroup.delete().map_err(|e| OciError::Cgroup(e.to_string()))?;
    fs::remove_dir_all(g.root.join(id)).map_err(|e| OciError::Io("removing the state dir".into(), e))
}

pub fn pause(g: &Globals, id: &str, frozen: bool) -> Result<(), OciError> {
    let st = State::load(&g.root, id)?;
    match (st.status(&g.root), frozen) {
        (Status::Running, true) | (Status::Paused, false) => st.cgroup.freeze(frozen).map_err(|e| OciError::Cgroup(e.to_string())),
        (s, _) => Err(OciError::State(format!("container is {s:?}, cannot {}", if frozen { "pause" } else { "resume" }).to_lowercase())),
    }
}

/// `update --resources FILE` (`-` for stdin): new cgroup limits for a running or paused
/// container, in the OCI LinuxResources shape runc's update reads.
pub fn update(g: &Globals, id: &str, resources: &Path) -> Result<(), OciError> {
    let st = State::load(&g.root, id)?;
    match st.status(&g.root) {
        Status::Running | Status::Paused | Status::Created => {}
        s => return Err(OciError::State(format!("container is {s:?}, cannot update").to_lowercase())),
    }
    let data = if resources == Path::new("-") {
        let mut v = Vec::new();
        io::Read::read_to_end(&mut io::stdin(), &mut v).map_err(|e| OciError::Io("reading the resources from stdin".into(), e))?;
        v
    } else {
        fs::read(resources).map_err(|e| OciError::Io(format!("reading {}", resources.display()), e))?
    };
    let r: oci_spec::runtime::LinuxResources = serde_json::from_slice(&data).map_err(|e| OciError::Invalid(format!("resources: {e}")))?;
    st.cgroup.set(&r).map_err(|e| OciError::Cgroup(e.to_string()))
}

pub fn ps(g: &Globals, id: &str) -> Result<Vec<i32>, OciError> {
    Ok(State::load(&g.root, id)?.cgroup.procs())
}

/// `run`: create + start in the foreground, wait, delete; the container's exit status.
pub fn run(g: &Globals, id: &str, bundle: &Path, pid_file: Option<&Path>, console_socket: Option<&Path>) -> Result<i32, OciError> {
    let pid = create(g, id, bundle, pid_file, console_socket)?;
    if let Err(e) = start(g, id) {
        let _ = delete(g, id, true);
        return Err(e);
    }
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid || (r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            break;
        }
    }
    let _ = delete(g, id, true);
    Ok(exit_code(status))
}

fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// `exec`: runs `process` in the running container's namespaces and cgroup with the container's
/// seccomp profile. Detached: returns once it runs (its pid in `pid_file`; it is reparented to
/// the caller's subreaper). Otherwise waits and returns its exit code.
pub fn exec(g: &Globals, id: &str, mut process: Process, detach: bool, pid_file: Option<&Path>, console_socket: Option<&Path>) -> Result<i32, OciError> {
    let st = State::load(&g.root, id)?;
    if st.status(&g.root) != Status::Running {
        return Err(OciError::State(format!("cannot exec in a container that is {:?}", st.status(&g.root)).to_lowercase()));
    }
    let spec = load_spec(&st.bundle)?;
    if process.terminal().unwrap_or(false) && console_socket.is_none() {
        return Err(OciError::Invalid("terminal exec needs --console-socket".into()));
    }
    if process.env().is_none() {
        process.set_env(spec.process().as_ref().and_then(|p| p.env().clone()));
    }
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(s) => crate::seccomp::compile(s)?,
        None => Vec::new(),
    };
    // Order: mnt last (after it, host paths are gone); pid before the fork that enters it.
    let mut ns: Vec<(OwnedFd, libc::c_int)> = Vec::new();
    for t in [LinuxNamespaceType::Ipc, LinuxNamespaceType::Uts, LinuxNamespaceType::Network, LinuxNamespaceType::Pid, LinuxNamespaceType::Cgroup, LinuxNamespaceType::Mount] {
        let mine = fs::read_link(format!("/proc/self/ns/{}", ns_file(t))).ok();
        let theirs = fs::read_link(format!("/proc/{}/ns/{}", st.pid, ns_file(t))).ok();
        if theirs.is_some() && mine != theirs {
            let fd = crate::sys::open_path(Path::new(&format!("/proc/{}/ns/{}", st.pid, ns_file(t))), libc::O_RDONLY).map_err(|e| OciError::Io("opening a namespace".into(), e))?;
            ns.push((fd, ns_flag(t)));
        }
    }
    if !st.alive() {
        return Err(OciError::State("container not running".into()));
    }
    let (parent, child) = seqpacket_pair()?;
    let mid = unsafe { libc::fork() };
    if mid < 0 {
        return Err(OciError::Io("fork".into(), io::Error::last_os_error()));
    }
    if mid == 0 {
        drop(parent);
        let e = exec_intermediate(&st, &process, &ns, console_socket, &child, detach, &seccomp);
        send(&child, &format!("error:{e}"));
        unsafe { libc::_exit(1) };
    }
    drop(child);
    drop(ns);
    let mut result = Err(OciError::Setup("exec: the helper exited early".into()));
    if let Some(m) = recv(&parent) {
        if let Some(p) = m.strip_prefix("pid:") {
            let pid: i32 = p.parse().unwrap_or(0);
            // EOF now means the process reached execve (the socket is close-on-exec).
            result = match recv(&parent) {
                None => Ok(pid),
                Some(m) => Err(OciError::Child(m.strip_prefix("error:").unwrap_or(&m).to_string())),
            };
        } else {
            result = Err(OciError::Child(m.strip_prefix("error:").unwrap_or(&m).to_string()));
        }
    }
    let mut status = 0;
    if result.is_err() || detach {
        unsafe { libc::waitpid(mid, &mut status, 0) };
    }
    let pid = result?;
    if let Some(p) = pid_file {
        write_pid_file(p, pid)?;
    }
    if detach {
        return Ok(0);
    }
    loop {
        let r = unsafe { libc::waitpid(mid, &mut status, 0) };
        if r == mid || (r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            break;
        }
    }
    Ok(exit_code(status))
}

/// The forked helper: joins the cgroup and namespaces, forks the process (a pid namespace only
/// takes effect for children), reports its pid, then exits (detached) or relays its exit.
fn exec_intermediate(st: &State, process: &Process, ns: &[(OwnedFd, libc::c_int)], console_socket: Option<&Path>, sync: &UnixStream, detach: bool, seccomp: &[seccompiler::BpfProgram]) -> OciError {
    // Until execve this is berth-oci, visible in the container's pid namespace: non-dumpable,
    // its /proc/PID/exe (this binary on the host) cannot be opened from inside without
    // CAP_SYS_PTRACE (CVE-2019-5736). execve of the container's binary resets the flag.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let me = unsafe { libc::getpid() };
    if let Err(e) = st.cgroup.add(me) {
        return OciError::Cgroup(e.to_string());
    }
    let console = match (process.terminal().unwrap_or(false), console_socket) {
        (true, Some(p)) => match UnixStream::connect(p) {
            Ok(c) => Some(c),
            Err(e) => return OciError::Setup(format!("connecting to the console socket: {e}")),
        },
        _ => None,
    };
    for (fd, flag) in ns {
        if let Err(e) = Linux.setns(fd.as_raw_fd(), *flag) {
            return OciError::Setup(format!("joining namespace {flag:#x}: {e}"));
        }
    }
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return OciError::Io("fork".into(), io::Error::last_os_error());
    }
    if pid == 0 {
        let e = exec_final(&Linux, process, console.as_ref(), seccomp);
        send(sync, &format!("error:{e}"));
        unsafe { libc::_exit(127) };
    }
    drop(console);
    send(sync, &format!("pid:{pid}"));
    if detach {
        unsafe { libc::_exit(0) };
    }
    // Our copy of the socket must go, or the caller never sees the exec's EOF.
    let fd: RawFd = sync.as_raw_fd();
    unsafe { libc::close(fd) };
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid || (r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            break;
        }
    }
    unsafe { libc::_exit(exit_code(status)) };
}

fn exec_final(sys: &dyn Syscall, process: &Process, console: Option<&UnixStream>, seccomp: &[seccompiler::BpfProgram]) -> OciError {
    let run = || -> Result<PathBuf, OciError> {
        unsafe { libc::setsid() };
        let user = process.user();
        if let Some(c) = console {
            crate::process::setup_terminal(c, user.uid(), user.gid())?;
        }
        crate::process::set_rlimits(sys, process)?;
        crate::process::enter_cwd(sys, process.cwd())?;
        let args = process.args().clone().unwrap_or_default();
        let arg0 = args.first().ok_or_else(|| OciError::Invalid("process.args is empty".into()))?;
        crate::process::find_executable(arg0, process.env().as_deref().unwrap_or_default())
    };
    match run() {
        Ok(exe) => crate::process::finalize(sys, process, &exe, seccomp),
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_plan() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "network", "path": "/run/netns/x"}, {"type": "cgroup"}, {"type": "uts"}, {"type": "ipc"}]}
        }))
        .unwrap();
        let p = ns_plan(&spec).unwrap();
        assert_eq!(p.clone_flags, libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC);
        assert!(p.new_cgroup_ns);
        assert_eq!(p.joins, vec![(PathBuf::from("/run/netns/x"), libc::CLONE_NEWNET)]);
        let user: Spec = serde_json::from_value(serde_json::json!({"ociVersion": "1.0.2", "linux": {"namespaces": [{"type": "mount"}, {"type": "user"}]}})).unwrap();
        assert!(ns_plan(&user).is_err());
        let nomnt: Spec = serde_json::from_value(serde_json::json!({"ociVersion": "1.0.2", "linux": {"namespaces": [{"type": "pid"}]}})).unwrap();
        assert!(ns_plan(&nomnt).is_err());
    }

    /// CLONE_INTO_CGROUP on a real cgroup2 directory (this host's hybrid layout has one at
    /// /sys/fs/cgroup/unified): the child's first look at /proc/self/cgroup shows it there.
    #[test]
    fn clone3_puts_the_child_into_its_cgroup() {
        let root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { PathBuf::from("/sys/fs/cgroup") } else { PathBuf::from("/sys/fs/cgroup/unified") };
        if unsafe { libc::geteuid() } != 0 || !root.join("cgroup.procs").exists() {
            eprintln!("skipping: needs root and a cgroup2 mount");
            return;
        }
        let name = format!("berth-oci-clone3-{}", std::process::id());
        let dir = root.join(&name);
        fs::create_dir(&dir).unwrap();
        let fd = crate::sys::open_path(&dir, libc::O_RDONLY | libc::O_DIRECTORY).unwrap();
        let (r, w) = {
            let mut f = [0; 2];
            unsafe { libc::pipe(f.as_mut_ptr()) };
            (f[0], f[1])
        };
        // In a multi-threaded test process the child may only make raw syscalls: it reads its
        // own cgroup file into a stack buffer and writes that to the pipe.
        let pid = clone_into_cgroup(0, fd.as_raw_fd()).expect("clone3 with CLONE_INTO_CGROUP");
        if pid == 0 {
            unsafe {
                let f = libc::open(c"/proc/self/cgroup".as_ptr(), libc::O_RDONLY);
                let mut buf = [0u8; 4096];
                let n = libc::read(f, buf.as_mut_ptr().cast(), buf.len());
                libc::write(w, buf.as_ptr().cast(), n.max(0) as usize);
                libc::_exit(0);
            }
        }
        unsafe { libc::close(w) };
        let mut buf = vec![0u8; 4096];
        let n = unsafe { libc::read(r, buf.as_mut_ptr().cast(), buf.len()) };
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        let _ = fs::remove_dir(&dir);
        let text = String::from_utf8_lossy(&buf[..n.max(0) as usize]).to_string();
        assert!(text.lines().any(|l| l.starts_with("0::") && l.ends_with(&name)), "{text}");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(9), 137);
    }
}
