//! What the host agent tells init on the kernel command line (`berth.*` parameters).

/// A host folder shared over 9p (`berth.share=TAG:/guest/path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub tag: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// The persistent data disk (`berth.disk=`, default /dev/vda): a `/dev` path or
    /// `serial:NAME` (see [`crate::disk::resolve`]).
    pub data_disk: String,
    /// The read-only system disk (`berth.system=`, default `serial:berth-system`).
    pub system_disk: String,
    pub shares: Vec<Share>,
}

impl Cmdline {
    pub fn parse(s: &str) -> Cmdline {
        let mut c = Cmdline { data_disk: "/dev/vda".into(), system_disk: "serial:berth-system".into(), shares: Vec::new() };
        for word in s.split_whitespace() {
            if let Some(v) = word.strip_prefix("berth.disk=") {
                if disk_spec_ok(v) {
                    c.data_disk = v.to_string();
                }
            } else if let Some(v) = word.strip_prefix("berth.system=") {
                if disk_spec_ok(v) {
                    c.system_disk = v.to_string();
                }
            } else if let Some(v) = word.strip_prefix("berth.share=") {
                if let Some((tag, path)) = v.split_once(':') {
                    // Only absolute, plain paths: init creates the mount point.
                    let ok = !tag.is_empty()
                        && path.starts_with('/')
                        && path != "/"
                        && !path.split('/').any(|p| p == ".." || p == ".");
                    if ok {
                        c.shares.push(Share { tag: tag.into(), path: path.into() });
                    }
                }
            }
        }
        c
    }
}

/// A `/dev` path without `..`, or `serial:` and a plain serial (virtio-blk serials are at most
/// 20 bytes).
fn disk_spec_ok(v: &str) -> bool {
    if let Some(serial) = v.strip_prefix("serial:") {
        return !serial.is_empty() && serial.len() <= 20 && serial.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    }
    v.starts_with("/dev/") && !v.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_values() {
        let c = Cmdline::parse("console=ttyS0 quiet");
        assert_eq!(c.data_disk, "/dev/vda");
        assert_eq!(c.system_disk, "serial:berth-system");
        assert!(c.shares.is_empty());
        let c = Cmdline::parse("berth.disk=/dev/vdb berth.share=h0:/home/u berth.share=h1:/tmp/x");
        assert_eq!(c.data_disk, "/dev/vdb");
        assert_eq!(c.shares, vec![
            Share { tag: "h0".into(), path: "/home/u".into() },
            Share { tag: "h1".into(), path: "/tmp/x".into() },
        ]);
        let c = Cmdline::parse("berth.disk=serial:berth-data berth.system=/dev/vdc");
        assert_eq!((c.data_disk.as_str(), c.system_disk.as_str()), ("serial:berth-data", "/dev/vdc"));
    }

    #[test]
    fn hostile_values_are_ignored() {
        let c = Cmdline::parse("berth.disk=/etc/passwd berth.share=x:/ berth.share=y:/a/../etc berth.share=:/a berth.share=z:rel");
        assert_eq!(c.data_disk, "/dev/vda");
        for bad in ["serial:", "serial:../x", "serial:a/b", "serial:123456789012345678901", "/dev/../etc/x", "vdb"] {
            let c = Cmdline::parse(&format!("berth.disk={bad} berth.system={bad}"));
            assert_eq!((c.data_disk.as_str(), c.system_disk.as_str()), ("/dev/vda", "serial:berth-system"), "{bad}");
        }
        assert!(c.shares.is_empty(), "{:?}", c.shares);
    }
}
