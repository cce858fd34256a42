//! The last steps before the container's process runs its command, shared by a container's
//! init and by `exec`: the terminal, limits, working directory, executable lookup, and the
//! privilege drop in the one order that works (seccomp while still privileged unless
//! no_new_privs is asked for, capability bounding set before the uid switch, the other sets
//! after it).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxCapabilities, Process};

use crate::sys::{CapSets, Syscall};
use crate::OciError;

fn names(c: &Option<oci_spec::runtime::Capabilities>) -> Vec<String> {
    let mut v: Vec<String> = c
        .iter()
        .flatten()
        .map(|cap| serde_json::to_value(cap).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default())
        .filter(|s| !s.is_empty())
        .collect();
    v.sort();
    v
}

/// The spec's capability sets as names.
pub fn cap_sets(c: Option<&LinuxCapabilities>) -> CapSets {
    let Some(c) = c else { return CapSets::default() };
    CapSets {
        bounding: names(c.bounding()),
        effective: names(c.effective()),
        permitted: names(c.permitted()),
        inheritable: names(c.inheritable()),
        ambient: names(c.ambient()),
    }
}

/// rlimit name ("RLIMIT_NOFILE") -> resource number.
pub fn rlimit_resource(name: &str) -> Option<u32> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    } as u32)
}

pub fn set_rlimits(sys: &dyn Syscall, p: &Process) -> Result<(), OciError> {
    for r in p.rlimits().as_deref().unwrap_or_default() {
        let name = serde_json::to_value(r.typ()).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let res = rlimit_resource(&name).ok_or_else(|| OciError::Invalid(format!("unknown rlimit {name}")))?;
        sys.setrlimit(res, r.soft(), r.hard()).map_err(|e| OciError::Setup(format!("setrlimit {name}: {e}")))?;
    }
    Ok(())
}

/// The value of `PATH` in `env`, or the usual default.
fn path_var(env: &[String]) -> String {
    env.iter()
        .find_map(|e| e.strip_prefix("PATH=").map(str::to_string))
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into())
}

/// Finds the executable as execvp would, inside the (already pivoted) root. Errors use runc's
/// wording, which Docker users know.
pub fn find_executable(arg0: &str, env: &[String]) -> Result<PathBuf, OciError> {
    let ok = |p: &Path| {
        let Ok(c) = CString::new(p.as_os_str().as_bytes()) else { return false };
        std::fs::metadata(p).map(|m| m.is_file()).unwrap_or(false) && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
    };
    if arg0.contains('/') {
        let p = PathBuf::from(arg0);
        if ok(&p) {
            return Ok(p);
        }
        return Err(OciError::Exec(format!("exec: \"{arg0}\": stat {arg0}: no such file or directory")));
    }
    for dir in path_var(env).split(':') {
        let p = Path::new(if dir.is_empty() { "." } else { dir }).join(arg0);
        if ok(&p) {
            return Ok(p);
        }
    }
    Err(OciError::Exec(format!("exec: \"{arg0}\": executable file not found in $PATH")))
}

/// chdir to the process cwd and make sure it is inside the container: a cwd reached through a
/// leaked host directory fd (`/proc/self/fd/N`, CVE-2024-21626) shows as "(unreachable)".
pub fn enter_cwd(sys: &dyn Syscall, cwd: &Path) -> Result<(), OciError> {
    sys.chdir(cwd).map_err(|e| OciError::Setup(format!("chdir to cwd ({}) set in config.json failed: {e}", cwd.display())))?;
    let outside = || OciError::Setup(format!("current working directory {} is outside of the container root", cwd.display()));
    // glibc's getcwd answers ENOENT for a directory the root cannot reach (the kernel's
    // "(unreachable)" prefix), so that error means the same.
    let here = match std::env::current_dir() {
        Ok(h) => h,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(outside()),
        Err(e) => return Err(OciError::Setup(format!("getcwd: {e}"))),
    };
    if !here.is_absolute() || here.as_os_str().as_bytes().starts_with(b"(unreachable)") {
        return Err(outside());
    }
    Ok(())
}

/// A new pty from the container's /dev/ptmx: the slave becomes the process's controlling
/// terminal and stdio, the master goes to the console socket (runc's `--console-socket`).
/// Returns the slave's path in the container (`/dev/pts/N`).
pub fn setup_terminal(console: &std::os::unix::net::UnixStream, uid: u32, gid: u32) -> Result<std::path::PathBuf, OciError> {
    let err = |w: &'static str| move |e: io::Error| OciError::Setup(format!("console: {w}: {e}"));
    let master = crate::sys::open_path(Path::new("/dev/ptmx"), libc::O_RDWR | libc::O_NOCTTY).map_err(err("open /dev/ptmx"))?;
    let mut unlock: libc::c_int = 0;
    crate::sys::check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) }).map_err(err("unlockpt"))?;
    let slave = crate::sys::check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) }).map_err(err("open the pty peer"))?;
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    let mut n: libc::c_uint = 0;
    crate::sys::check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) }).map_err(err("pty number"))?;
    let _ = unsafe { libc::fchown(slave.as_raw_fd(), uid, gid) };
    crate::sys::check(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) }).map_err(err("set the controlling terminal"))?;
    for fd in 0..3 {
        crate::sys::check(unsafe { libc::dup2(slave.as_raw_fd(), fd) }).map_err(err("dup2"))?;
    }
    send_fd(console.as_raw_fd(), master.as_raw_fd()).map_err(err("send the pty master"))?;
    Ok(std::path::PathBuf::from(format!("/dev/pts/{n}")))
}

/// SCM_RIGHTS with a small payload, as runc sends the console.
pub fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    let payload = b"/dev/ptmx";
    let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut _, iov_len: payload.len() };
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut buf = vec![0u8; space];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::copy_nonoverlapping(&fd as *const RawFd as *const u8, libc::CMSG_DATA(c), std::mem::size_of::<RawFd>());
    }
    crate::sys::check(unsafe { libc::sendmsg(sock, &msg, 0) } as libc::c_int).map(drop)
}

/// Everything after the environment is ready: drop privileges in order, then execve.
/// Returns only on failure.
pub fn finalize(sys: &dyn Syscall, p: &Process, exe: &Path, seccomp: &[seccompiler::BpfProgram]) -> OciError {
    match drop_privileges(sys, p, seccomp) {
        Ok(()) => exec(p, exe),
        Err(e) => e,
    }
}

/// The privilege drop, separated from execve so its order is unit-tested.
pub fn drop_privileges(sys: &dyn Syscall, p: &Process, seccomp: &[seccompiler::BpfProgram]) -> Result<(), OciError> {
    let nnp = p.no_new_privileges().unwrap_or(false);
    let user = p.user();
    let caps = cap_sets(p.capabilities().as_ref());
    let install = |sys: &dyn Syscall| -> Result<(), OciError> {
        for prog in seccomp {
            sys.seccomp(prog).map_err(|e| OciError::Seccomp(format!("loading the filter: {e}")))?;
        }
        Ok(())
    };
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: do it while we have it. The
    // syscalls still to come (prctl, capset, setgroups, setres[ug]id, execve) are allowed.
    if !nnp {
        install(sys)?;
    }
    if let Some(m) = user.umask() {
        sys.umask(m);
    }
    sys.drop_bounding(&caps.bounding).map_err(|e| OciError::Setup(format!("dropping the capability bounding set: {e}")))?;
    let groups: Vec<u32> = user.additional_gids().clone().unwrap_or_default();
    sys.set_ids(user.uid(), user.gid(), &groups).map_err(|e| OciError::Setup(format!("switching to uid {} gid {}: {e}", user.uid(), user.gid())))?;
    sys.set_caps(&caps).map_err(|e| OciError::Setup(format!("setting capabilities: {e}")))?;
    if nnp {
        sys.set_no_new_privs().map_err(|e| OciError::Setup(format!("no_new_privs: {e}")))?;
        install(sys)?;
    }
    Ok(())
}

fn exec(p: &Process, exe: &Path) -> OciError {
    let to_c = |v: &[String]| -> Vec<CString> { v.iter().filter_map(|s| CString::new(s.as_bytes()).ok()).collect() };
    let args = to_c(p.args().as_deref().unwrap_or_default());
    let env = to_c(p.env().as_deref().unwrap_or_default());
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let Ok(path) = CString::new(exe.as_os_str().as_bytes()) else { return OciError::Exec("bad executable path".into()) };
    // Every descriptor but stdio closes at exec: nothing of the runtime (or of whoever started
    // it) reaches the container.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    reset_signals();
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    OciError::Exec(format!("exec {}: {}", exe.display(), io::Error::last_os_error()))
}

/// Default dispositions and an empty mask: ignored signals survive execve, and every Rust
/// program (this one included) starts with SIGPIPE ignored, which would leave `yes | head`
/// in the container spinning on EPIPE instead of dying.
pub fn reset_signals() {
    // Raw rt_sigaction: glibc refuses to touch its two internal realtime signals (32, 33),
    // which can arrive ignored too (seen when started from a multi-threaded Rust parent).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, &dfl as *const KernelSigaction, std::ptr::null_mut::<KernelSigaction>(), 8usize) };
        }
    }
    // The raw syscall: glibc's sigprocmask keeps its own two realtime signals (32, 33) blocked.
    let empty: u64 = 0;
    unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &empty as *const u64, std::ptr::null_mut::<u64>(), 8usize) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Recorder;

    fn process(nnp: bool) -> Process {
        serde_json::from_value(serde_json::json!({
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [50]},
            "args": ["sh"], "cwd": "/",
            "capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_CHOWN", "CAP_KILL"], "permitted": ["CAP_CHOWN", "CAP_KILL"], "inheritable": [], "ambient": []},
            "noNewPrivileges": nnp,
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024}]
        }))
        .unwrap()
    }

    #[test]
    fn seccomp_before_the_uid_switch_without_nnp() {
        let r = Recorder::default();
        drop_privileges(&r, &process(false), &[vec![seccompiler::sock_filter { code: 6, jt: 0, jf: 0, k: 0x7fff0000 }]]).unwrap();
        let (sc, bnd, ids, caps) = (r.pos("seccomp").unwrap(), r.pos("drop_bounding keep=2").unwrap(), r.pos("set_ids").unwrap(), r.pos("set_caps eff=2").unwrap());
        assert!(sc < bnd && bnd < ids && ids < caps, "{:?}", r.calls());
        assert_eq!(r.calls()[ids], "set_ids 1000:1000 [50]");
        assert!(r.pos("no_new_privs").is_none());
    }

    #[test]
    fn seccomp_last_with_nnp() {
        let r = Recorder::default();
        drop_privileges(&r, &process(true), &[vec![seccompiler::sock_filter { code: 6, jt: 0, jf: 0, k: 0 }]]).unwrap();
        let (ids, caps, nnp, sc) = (r.pos("set_ids").unwrap(), r.pos("set_caps eff=2").unwrap(), r.pos("no_new_privs").unwrap(), r.pos("seccomp").unwrap());
        assert!(ids < caps && caps < nnp && nnp < sc, "{:?}", r.calls());
    }

    #[test]
    fn failures_stop_the_sequence() {
        let r = Recorder { fail_on: Some("set_ids".into()), ..Default::default() };
        assert!(drop_privileges(&r, &process(false), &[]).is_err());
        assert!(r.pos("set_caps eff=2").is_none(), "caps set after a failed uid switch");
    }

    #[test]
    fn rlimits_and_names() {
        let r = Recorder::default();
        set_rlimits(&r, &process(false)).unwrap();
        assert_eq!(r.calls(), vec![format!("setrlimit {} 512 1024", libc::RLIMIT_NOFILE)]);
        assert_eq!(cap_sets(process(false).capabilities().as_ref()).bounding, vec!["CAP_CHOWN", "CAP_KILL"]);
    }

    #[test]
    fn executable_lookup() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::write(bin.join("plain"), "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = vec![format!("PATH=/nonexistent:{}", bin.display())];
        assert_eq!(find_executable("tool", &env).unwrap(), bin.join("tool"));
        let e = find_executable("nope", &env).unwrap_err().to_string();
        assert!(e.contains("executable file not found in $PATH"), "{e}");
        // Root may access anything; non-executable files fail for others. Either way a
        // missing absolute path is reported.
        assert!(find_executable("/no/such", &env).is_err());
    }
}
