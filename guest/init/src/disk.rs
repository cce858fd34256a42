//! The disks (the read-only system disk and the persistent data disk, a qcow2 on the host) and
//! shared host folders.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};

use crate::cmdline::Share;
use crate::InitError;

/// berthd's data root inside the VM: images, containers, volumes.
pub const DATA_ROOT: &str = "/var/lib/berth";

/// Where the read-only system disk is mounted. The initramfs holds only init and the boot
/// modules; every other path in it (/bin, /sbin, /usr, /lib64, the rest of /lib and /etc) is a
/// symlink to the same path under here (vm-images/build).
pub const SYSTEM_ROOT: &str = "/system";

/// How long a disk may take to appear once virtio-blk is loaded.
const DISK_TIMEOUT: Duration = Duration::from_secs(10);

/// The block device a `berth.disk=`/`berth.system=` value names: a `/dev` path, or
/// `serial:NAME`, the virtio-blk disk whose serial is NAME (the agent sets one per drive on
/// QEMU's command line). Names such as vda follow the order in which the virtio-mmio devices
/// are probed, which nothing promises; serials do not depend on it.
pub fn resolve(spec: &str) -> Result<String, InitError> {
    let deadline = Instant::now() + DISK_TIMEOUT;
    loop {
        let found = match spec.strip_prefix("serial:") {
            Some(serial) => find_by_serial(Path::new("/sys/block"), serial).map(|name| format!("/dev/{name}")),
            None => Some(spec.to_string()),
        };
        if let Some(dev) = found.filter(|d| Path::new(d).exists()) {
            return Ok(dev);
        }
        if Instant::now() > deadline {
            return Err(InitError::Other(format!("disk {spec} did not appear within {} s", DISK_TIMEOUT.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The block device under `sys_block` (/sys/block) whose `serial` attribute is `serial`.
pub fn find_by_serial(sys_block: &Path, serial: &str) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(sys_block).ok()?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names.into_iter().find(|n| std::fs::read_to_string(sys_block.join(n).join("serial")).map(|s| s.trim() == serial).unwrap_or(false))
}

/// Read-ahead for the system disk, KiB. Its programs are paged in on demand, and under
/// emulation every virtio request costs a round trip through QEMU: fewer, larger reads win.
const SYSTEM_READ_AHEAD_KIB: u32 = 2048;

/// Mount the system disk read-only at [`SYSTEM_ROOT`] (QEMU opens its image read-only too).
pub fn mount_system(dev: &str) -> Result<(), InitError> {
    if let Some(name) = dev.strip_prefix("/dev/") {
        let knob = format!("/sys/block/{name}/queue/read_ahead_kb");
        if let Err(e) = std::fs::write(&knob, SYSTEM_READ_AHEAD_KIB.to_string()) {
            crate::console::line(&format!("{knob}: {e}"));
        }
    }
    mount(Some(dev), SYSTEM_ROOT, Some("ext4"), MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOATIME, None::<&str>)
        .map_err(|e| InitError::Sys(format!("mount the system disk {dev} on {SYSTEM_ROOT}"), e))
}

/// What the first bytes of a block device say about it.
#[derive(Debug, PartialEq, Eq)]
pub enum DiskState {
    /// All zeros: a fresh disk, safe to format.
    Blank,
    Ext4,
    /// Something else: never formatted over (it may hold the user's data).
    Unknown,
}

/// Classify from the first 64 KiB (the ext4 superblock sits at 1024, magic 0xEF53 at +56).
pub fn classify(head: &[u8]) -> DiskState {
    if head.len() >= 1082 && head[1080] == 0x53 && head[1081] == 0xEF {
        DiskState::Ext4
    } else if head.iter().all(|b| *b == 0) {
        DiskState::Blank
    } else {
        DiskState::Unknown
    }
}

/// Ask the kernel to read `files` into the page cache now (readahead(2): the reads are queued,
/// nothing is copied), so that the pages berthd's start faults in are there by then: a few
/// large sequential reads instead of a virtio request per fault.
pub fn prefetch(files: &[&str]) {
    use std::os::fd::AsRawFd;
    for f in files {
        if let Ok(file) = std::fs::File::open(f) {
            let len = file.metadata().map(|m| m.len() as usize).unwrap_or(0);
            // SAFETY: readahead on an open descriptor; the file is closed afterwards.
            unsafe { libc::readahead(file.as_raw_fd(), 0, len) };
        }
    }
}

/// Format the device the first time (mke2fs is on the system disk: `system_ready` waits for
/// it), mount it at `root` with online discard (so deleted images give their space back to the
/// host's qcow2).
pub fn prepare(dev: &str, root: &str, system_ready: impl FnOnce() -> Result<(), InitError>) -> Result<(), InitError> {
    let mut head = vec![0u8; 65536];
    std::fs::File::open(dev)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| InitError::Io(format!("read {dev}"), e))?;
    match classify(&head) {
        DiskState::Ext4 => {}
        DiskState::Blank => {
            system_ready()?;
            crate::console::line(&format!("formatting the data disk {dev} (first boot)"));
            let out = std::process::Command::new("/sbin/mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-L", "berth-data", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", dev])
                .output()
                .map_err(|e| InitError::Io("run mke2fs".into(), e))?;
            if !out.status.success() {
                return Err(InitError::Other(format!("mke2fs {dev} failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
            }
        }
        DiskState::Unknown => {
            return Err(InitError::Other(format!("data disk {dev} holds something that is not ext4; refusing to format it")))
        }
    }
    std::fs::create_dir_all(root).map_err(|e| InitError::Io(format!("mkdir {root}"), e))?;
    mount(Some(dev), root, Some("ext4"), MsFlags::MS_NOATIME, Some("discard"))
        .map_err(|e| InitError::Sys(format!("mount {dev} on {root}"), e))
}

/// Mount a host folder shared over virtio-9p at the same path as on the host, so that
/// `docker run -v /host/dir:/x` finds it.
pub fn mount_share(s: &Share) -> Result<(), InitError> {
    std::fs::create_dir_all(&s.path).map_err(|e| InitError::Io(format!("mkdir {}", s.path), e))?;
    mount(Some(s.tag.as_str()), s.path.as_str(), Some("9p"), MsFlags::empty(), Some("trans=virtio,version=9p2000.L,msize=262144,cache=mmap"))
        .map_err(|e| InitError::Sys(format!("mount 9p share {} on {}", s.tag, s.path), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_disks() {
        assert_eq!(classify(&vec![0u8; 65536]), DiskState::Blank);
        let mut ext4 = vec![0u8; 65536];
        ext4[1080] = 0x53;
        ext4[1081] = 0xEF;
        assert_eq!(classify(&ext4), DiskState::Ext4);
        let mut other = vec![0u8; 65536];
        other[510] = 0x55;
        other[511] = 0xAA; // an MBR: never formatted over
        assert_eq!(classify(&other), DiskState::Unknown);
    }

    #[test]
    fn finds_disks_by_serial() {
        let d = std::env::temp_dir().join(format!("berth-init-sysblock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for (name, serial) in [("vda", Some("berth-system\n")), ("vdb", Some("berth-data")), ("loop0", None)] {
            std::fs::create_dir_all(d.join(name)).unwrap();
            if let Some(s) = serial {
                std::fs::write(d.join(name).join("serial"), s).unwrap();
            }
        }
        assert_eq!(find_by_serial(&d, "berth-data").as_deref(), Some("vdb"));
        assert_eq!(find_by_serial(&d, "berth-system").as_deref(), Some("vda"), "the attribute's newline is ignored");
        assert_eq!(find_by_serial(&d, "berth"), None, "whole serials only");
        assert_eq!(find_by_serial(&d.join("nothing"), "berth-data"), None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
