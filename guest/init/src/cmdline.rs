//! What the host agent tells init on the kernel command line (`berth.*` parameters).

/// A host folder shared over 9p (`berth.share=TAG:/guest/path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub tag: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// The persistent data disk (`berth.disk=`, default /dev/vda).
    pub data_disk: String,
    pub shares: Vec<Share>,
}

impl Cmdline {
    pub fn parse(s: &str) -> Cmdline {
        let mut c = Cmdline { data_disk: "/dev/vda".into(), shares: Vec::new() };
        for word in s.split_whitespace() {
            if let Some(v) = word.strip_prefix("berth.disk=") {
                if v.starts_with("/dev/") && !v.contains("..") {
                    c.data_disk = v.to_string();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_values() {
        let c = Cmdline::parse("console=ttyS0 quiet");
        assert_eq!(c.data_disk, "/dev/vda");
        assert!(c.shares.is_empty());
        let c = Cmdline::parse("berth.disk=/dev/vdb berth.share=h0:/home/u berth.share=h1:/tmp/x");
        assert_eq!(c.data_disk, "/dev/vdb");
        assert_eq!(c.shares, vec![
            Share { tag: "h0".into(), path: "/home/u".into() },
            Share { tag: "h1".into(), path: "/tmp/x".into() },
        ]);
    }

    #[test]
    fn hostile_values_are_ignored() {
        let c = Cmdline::parse("berth.disk=/etc/passwd berth.share=x:/ berth.share=y:/a/../etc berth.share=:/a berth.share=z:rel");
        assert_eq!(c.data_disk, "/dev/vda");
        assert!(c.shares.is_empty(), "{:?}", c.shares);
    }
}
