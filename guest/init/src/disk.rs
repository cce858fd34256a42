//! The persistent data disk (a qcow2 on the host) and shared host folders.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};

use crate::cmdline::Share;
use crate::InitError;

/// berthd's data root inside the VM: images, containers, volumes.
pub const DATA_ROOT: &str = "/var/lib/berth";

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

/// Wait for the device, format it the first time, mount it at `root` with online discard (so
/// deleted images give their space back to the host's qcow2).
pub fn prepare(dev: &str, root: &str) -> Result<(), InitError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new(dev).exists() {
        if Instant::now() > deadline {
            return Err(InitError::Other(format!("data disk {dev} did not appear within 10 s")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut head = vec![0u8; 65536];
    std::fs::File::open(dev)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| InitError::Io(format!("read {dev}"), e))?;
    match classify(&head) {
        DiskState::Ext4 => {}
        DiskState::Blank => {
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
}
