//! How the bench starts every daemon and runtime: the same isolation for all of them.
//!
//! In the forked child, before exec:
//! 1. join the subject's own loopback-only network namespace (setns), so its bridges,
//!    iptables rules and any lookup stay inside it;
//! 2. enter a new mount namespace with private propagation, so nothing it mounts (overlay
//!    rootfs, shm, netns bind mounts) is seen by or leaks into the host's: when its last
//!    process exits, its mounts are gone;
//! 3. on the cgroup v1 hybrid layout, lazily unmount the empty cgroup2 at
//!    `/sys/fs/cgroup/unified` in that namespace only (crun 1.8 refuses hybrid mode; runc
//!    and berthd then see the same plain v1, so all peers run on the same layout);
//! 4. mount a fresh tmpfs on `/run` (and bind private directories over the few fixed state
//!    paths a peer has, e.g. podman's `/var/lib/containers`), so every peer gets its own
//!    runtime state (containerd's shim sockets, crun's state, netavark's IPAM database,
//!    iptables' lock) instead of the host's shared one;
//! 5. raise the soft RLIMIT_NOFILE to the hard limit (what Go daemons do themselves), so all
//!    peers start with the same limits.
//!
//! Everything here runs between fork and exec, so it only makes raw syscalls on memory
//! prepared before the fork.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext, Result};

/// What to set up for one child process.
#[derive(Debug, Clone, Default)]
pub struct Isolation {
    /// Network namespace file to join.
    pub netns: Option<PathBuf>,
    /// Enter a new mount namespace (private propagation).
    pub private_mounts: bool,
    /// Unmount /sys/fs/cgroup/unified in the new mount namespace (needs `private_mounts`).
    pub hide_unified_cgroup: bool,
    /// Fresh tmpfs mounts (needs `private_mounts`).
    pub tmpfs: Vec<PathBuf>,
    /// (source, target) bind mounts, after the tmpfs mounts (needs `private_mounts`).
    pub binds: Vec<(PathBuf, PathBuf)>,
    pub nofile_soft_to_hard: bool,
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::Unexpected(format!("NUL in path {}", p.display())))
}

impl Isolation {
    /// Install the setup on `cmd` (as a pre_exec hook).
    pub fn apply(&self, cmd: &mut Command) -> Result<()> {
        if !self.private_mounts
            && (self.hide_unified_cgroup || !self.tmpfs.is_empty() || !self.binds.is_empty())
        {
            return Err(Error::Usage(
                "mount changes need a private mount namespace".into(),
            ));
        }
        let net = match &self.netns {
            Some(p) => Some(File::open(p).ctx(|| format!("open {}", p.display()))?),
            None => None,
        };
        let root = CString::new("/").expect("no NUL");
        let unified = CString::new("/sys/fs/cgroup/unified").expect("no NUL");
        let tmpfs_type = CString::new("tmpfs").expect("no NUL");
        let tmpfs_opts = CString::new("mode=755").expect("no NUL");
        let tmpfs: Vec<CString> = self.tmpfs.iter().map(|p| cstr(p)).collect::<Result<_>>()?;
        let binds: Vec<(CString, CString)> = self
            .binds
            .iter()
            .map(|(s, t)| Ok((cstr(s)?, cstr(t)?)))
            .collect::<Result<_>>()?;
        let private = self.private_mounts;
        let hide = self.hide_unified_cgroup;
        let nofile = self.nofile_soft_to_hard;
        let err = std::io::Error::last_os_error;
        // SAFETY: the hook only makes raw syscalls (setns, unshare, mount, umount2,
        // getrlimit, setrlimit) on values prepared before fork; all are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(f) = &net {
                    if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(err());
                    }
                }
                if private {
                    if libc::unshare(libc::CLONE_NEWNS) != 0 {
                        return Err(err());
                    }
                    if libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(err());
                    }
                }
                if hide && libc::umount2(unified.as_ptr(), libc::MNT_DETACH) != 0 {
                    return Err(err());
                }
                for t in &tmpfs {
                    if libc::mount(
                        tmpfs_type.as_ptr(),
                        t.as_ptr(),
                        tmpfs_type.as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        tmpfs_opts.as_ptr().cast(),
                    ) != 0
                    {
                        return Err(err());
                    }
                }
                for (s, t) in &binds {
                    if libc::mount(
                        s.as_ptr(),
                        t.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(err());
                    }
                }
                if nofile {
                    let mut r = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
                        r.rlim_cur = r.rlim_max;
                        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
                    }
                }
                Ok(())
            });
        }
        Ok(())
    }
}

/// The hard limits this process (and so every daemon it starts) can give out. Raising a hard
/// limit needs CAP_SYS_RESOURCE, which the bounding set of these machines lacks.
pub fn hard_limits() -> (u64, u64) {
    let get = |res| {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        if unsafe { libc::getrlimit(res, &mut r) } == 0 {
            r.rlim_max
        } else {
            0
        }
    };
    (get(libc::RLIMIT_NOFILE), get(libc::RLIMIT_NPROC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_mounts_without_private_namespace() {
        let i = Isolation {
            tmpfs: vec!["/run".into()],
            ..Default::default()
        };
        assert!(i.apply(&mut Command::new("true")).is_err());
        let (nofile, nproc) = hard_limits();
        assert!(nofile > 0 && nproc > 0);
    }

    #[test]
    fn private_run_is_invisible_outside() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root");
            return;
        }
        let probe = tempfile::tempdir().unwrap();
        let i = Isolation {
            private_mounts: true,
            tmpfs: vec![probe.path().to_path_buf()],
            nofile_soft_to_hard: true,
            ..Default::default()
        };
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("touch \"$0/inside\" && test \"$(ulimit -Sn)\" = \"$(ulimit -Hn)\"")
            .arg(probe.path());
        i.apply(&mut c).unwrap();
        assert!(c.status().unwrap().success());
        // The file went into the child's private tmpfs, which died with it.
        assert!(!probe.path().join("inside").exists());
    }
}
