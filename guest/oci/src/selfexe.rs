//! CVE-2019-5736: the runtime binary must not be writable from inside a container.
//!
//! The commands that end in a container process (`create`, `run`, `exec`) are, until their
//! final execve, this binary, and a container can reach it: if the container's program starts
//! with `#!/proc/self/exe`, the kernel executes the runtime itself inside the container (the
//! process is still the runtime while the kernel resolves the interpreter), and that process is
//! dumpable and loads its ELF interpreter and libraries from the container's rootfs. Hostile
//! code there opens `/proc/self/exe` (the host binary), and reopens it through
//! `/proc/self/fd/N` for writing once the runtime processes are gone. Being non-dumpable does not
//! help: a process may always open its own `/proc/self/exe`.
//!
//! So these commands first re-execute themselves from a read-only view of their own binary: a
//! detached bind mount of it (open_tree(OPEN_TREE_CLONE), made read-only with mount_setattr,
//! never attached anywhere, gone with the last process that uses it). `/proc/self/exe` then
//! names the same inode on a read-only mount, and opening it for writing fails with EROFS. It
//! costs one execve and no copy. Where the new mount API is missing (kernels before 5.12), a
//! sealed memfd copy of the binary is used instead, as runc does.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::OciError;

/// Set across the re-exec: if the new process still finds its binary writable, it stops
/// instead of re-executing forever.
const REEXEC_GUARD: &str = "_BERTH_OCI_REEXEC";

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// True when this process's binary cannot be written through `/proc/self/exe`: it is on a
/// read-only mount, or it is a memfd sealed against writes.
pub fn exe_is_protected() -> bool {
    let exe = SELF_EXE;
    // SAFETY: plain syscalls on a NUL-terminated path and a zeroed out-struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(exe.as_ptr(), &mut s) } == 0 && s.f_flag & libc::ST_RDONLY != 0 {
        return true;
    }
    let fd = unsafe { libc::open(exe.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    unsafe { libc::close(fd) };
    seals >= 0 && seals & libc::F_SEAL_WRITE != 0
}

const SELF_EXE: &std::ffi::CStr = c"/proc/self/exe";

/// A read-only, detached bind mount of the file `path` (our binary), as an O_PATH fd.
fn read_only_view(path: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: the path is NUL-terminated; the result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr { attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, attr_clr: 0, propagation: 0, userns_fd: 0 };
    // SAFETY: attr outlives the call; its size is passed.
    let r = unsafe { libc::syscall(libc::SYS_mount_setattr, tree.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, &attr as *const MountAttr, std::mem::size_of::<MountAttr>()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tree)
}

/// A memfd holding a copy of the file `path` (our binary), sealed against any change.
fn sealed_copy(path: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: NUL-terminated name; the result is a new fd we own.
    let fd = unsafe { libc::memfd_create(c"berth-oci".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut mem = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut src = std::fs::File::open(std::ffi::OsStr::from_bytes(path.to_bytes()))?;
    io::copy(&mut src, &mut mem)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    if unsafe { libc::fcntl(mem.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(mem.into())
}

fn cstrings(v: impl Iterator<Item = OsString>) -> Vec<CString> {
    v.filter_map(|s| CString::new(s.as_bytes()).ok()).collect()
}

/// Re-executes this process from a read-only view of its binary unless it already runs from
/// one. Call first thing in `main`, while single-threaded. Returns Ok only when protected.
pub fn ensure_protected_exe() -> Result<(), OciError> {
    if exe_is_protected() {
        std::env::remove_var(REEXEC_GUARD);
        return Ok(());
    }
    if std::env::var_os(REEXEC_GUARD).is_some() {
        return Err(OciError::Setup("re-executed from a read-only view of berth-oci, but /proc/self/exe is still writable".into()));
    }
    let fd = read_only_view(SELF_EXE)
        .or_else(|_| sealed_copy(SELF_EXE))
        .map_err(|e| OciError::Setup(format!("protecting the runtime binary (CVE-2019-5736): {e}")))?;
    std::env::set_var(REEXEC_GUARD, "1");
    let args = cstrings(std::env::args_os());
    let env = cstrings(std::env::vars_os().map(|(k, v)| {
        let mut s = k;
        s.push("=");
        s.push(v);
        s
    }));
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: argv/envp are NULL-terminated arrays of strings that outlive the call.
    unsafe { libc::syscall(libc::SYS_execveat, fd.as_raw_fd(), c"".as_ptr(), argv.as_ptr(), envp.as_ptr(), libc::AT_EMPTY_PATH) };
    Err(OciError::Setup(format!("re-executing berth-oci from its read-only view: {}", io::Error::last_os_error())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both views refuse writes through a reopen, the way the exploit tries it, and the real
    /// file stays as it was.
    #[test]
    fn views_of_the_binary_refuse_writes() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("bin");
        std::fs::write(&file, b"\x7fELF original").unwrap();
        let c = CString::new(file.as_os_str().as_bytes()).unwrap();
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping the mount view: open_tree needs CAP_SYS_ADMIN");
        } else {
            let v = read_only_view(&c).expect("open_tree + mount_setattr");
            let p = format!("/proc/self/fd/{}", v.as_raw_fd());
            let e = std::fs::OpenOptions::new().write(true).open(&p).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
            let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
            let pc = CString::new(p).unwrap();
            assert_eq!(unsafe { libc::statvfs(pc.as_ptr(), &mut s) }, 0);
            assert_ne!(s.f_flag & libc::ST_RDONLY, 0);
        }
        let m = sealed_copy(&c).expect("memfd copy");
        let p = format!("/proc/self/fd/{}", m.as_raw_fd());
        let r = std::fs::OpenOptions::new().write(true).open(&p).and_then(|mut f| io::Write::write_all(&mut f, b"x"));
        assert!(r.is_err(), "a sealed copy took a write");
        assert_eq!(std::fs::read(&p).unwrap(), b"\x7fELF original");
        assert_eq!(std::fs::read(&file).unwrap(), b"\x7fELF original");
    }
}
