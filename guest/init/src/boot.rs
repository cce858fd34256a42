//! Early boot: kernel filesystems, the bind-mounted root, loopback.

use nix::mount::{mount, MsFlags};

use crate::InitError;

fn mnt(src: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Result<(), InitError> {
    std::fs::create_dir_all(target).map_err(|e| InitError::Io(format!("mkdir {target}"), e))?;
    mount(Some(src), target, Some(fstype), flags, data).map_err(|e| InitError::Sys(format!("mount {fstype} on {target}"), e))
}

/// /proc, /sys and /dev: what everything else needs.
pub fn mount_early() -> Result<(), InitError> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt("proc", "/proc", "proc", nosuid, None)?;
    mnt("sysfs", "/sys", "sysfs", nosuid, None)?;
    mnt("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, Some("mode=0755"))?;
    Ok(())
}

/// The rest: ptys, shared memory, tmpfs for runtime state, the cgroup v2 hierarchy with every
/// controller delegated to children (berthd's containers get memory, cpu, pids, io limits).
pub fn mount_late() -> Result<(), InitError> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt("devpts", "/dev/pts", "devpts", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("mode=0620,ptmxmode=0666,gid=5"))?;
    mnt("shm", "/dev/shm", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777"))?;
    mnt("tmpfs", "/run", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755"))?;
    mnt("tmpfs", "/tmp", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777"))?;
    mnt("cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid, Some("nsdelegate"))?;
    if let Ok(ctrls) = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers") {
        let enable: String = ctrls.split_whitespace().map(|c| format!("+{c} ")).collect();
        if let Err(e) = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", enable.trim()) {
            crate::console::line(&format!("cgroup: cannot enable controllers {enable:?}: {e}"));
        }
    }
    let _ = std::os::unix::fs::symlink("/proc/self/fd", "/dev/fd");
    let _ = std::os::unix::fs::symlink("/proc/self/fd/0", "/dev/stdin");
    let _ = std::os::unix::fs::symlink("/proc/self/fd/1", "/dev/stdout");
    let _ = std::os::unix::fs::symlink("/proc/self/fd/2", "/dev/stderr");
    Ok(())
}

/// The initramfs is the kernel's `rootfs`, which has no parent mount, and `pivot_root(2)`
/// refuses to move away from it (the OCI runtime pivots into every container). Bind-mounting
/// `/` onto itself elsewhere and making that the root gives a root that has a parent, without
/// copying the image.
pub fn enter_bind_root() -> Result<(), InitError> {
    let target = "/.root";
    std::fs::create_dir_all(target).map_err(|e| InitError::Io("mkdir /.root".into(), e))?;
    mount(Some("/"), target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| InitError::Sys("bind / on /.root".into(), e))?;
    std::env::set_current_dir(target).map_err(|e| InitError::Io("chdir /.root".into(), e))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(|e| InitError::Sys("move /.root to /".into(), e))?;
    nix::unistd::chroot(".").map_err(|e| InitError::Sys("chroot".into(), e))?;
    std::env::set_current_dir("/").map_err(|e| InitError::Io("chdir /".into(), e))?;
    // Mount events below / propagate to nothing outside; containers get private copies.
    let _ = mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>);
    Ok(())
}

/// Bring up the loopback interface (berthd reaches the egress relay on 127.0.0.1; the VM has
/// no other network device).
pub fn loopback_up() -> Result<(), InitError> {
    // SAFETY: a datagram socket for the interface ioctls, and an ifreq naming "lo".
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(InitError::Io("socket for lo".into(), std::io::Error::last_os_error()));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(InitError::Io("bring up lo".into(), err));
        }
    }
    Ok(())
}
