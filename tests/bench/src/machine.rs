//! Facts about the machine a run happened on.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub os: String,
    /// "v1 (hybrid: ...)", "v1", "v2".
    pub cgroup_mode: String,
    /// /proc/loadavg at start and end: other helpers share the machine.
    pub load_start: String,
    pub load_end: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        Machine {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            memory_gib: mem_total_kib(&meminfo).unwrap_or(0) as f64 / (1024.0 * 1024.0),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            os: os_pretty_name(&read("/etc/os-release")).unwrap_or_else(|| "unknown".into()),
            cgroup_mode: cgroup_mode(
                fs_magic("/sys/fs/cgroup"),
                fs_magic("/sys/fs/cgroup/unified"),
            ),
            load_start: loadavg(),
            load_end: String::new(),
        }
    }

    pub fn rows(&self) -> Vec<(&'static str, String)> {
        vec![
            ("cores", self.cores.to_string()),
            ("cpu", self.cpu_model.clone()),
            ("memory", format!("{:.1} GiB", self.memory_gib)),
            ("kernel", self.kernel.clone()),
            ("os", self.os.clone()),
            ("cgroups", self.cgroup_mode.clone()),
            (
                "load average at start / end",
                format!("{} / {}", self.load_start, self.load_end),
            ),
        ]
    }

    #[cfg(test)]
    pub fn example() -> Machine {
        Machine {
            cores: 2,
            cpu_model: "AMD EPYC".into(),
            memory_gib: 23.5,
            kernel: "6.1.0".into(),
            os: "Debian GNU/Linux 12 (bookworm)".into(),
            cgroup_mode: "v1".into(),
            load_start: "1.00 1.00 1.00".into(),
            load_end: "1.00 1.00 1.00".into(),
        }
    }
}

/// The first three fields of /proc/loadavg.
pub fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn read(p: &str) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn os_pretty_name(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

const CGROUP2_MAGIC: i64 = 0x6367_7270;
const TMPFS_MAGIC: i64 = 0x0102_1994;

fn fs_magic(p: &str) -> Option<i64> {
    if !Path::new(p).exists() {
        return None;
    }
    nix::sys::statfs::statfs(p)
        .ok()
        .map(|s| s.filesystem_type().0)
}

/// Names the cgroup layout from the filesystem types of /sys/fs/cgroup and its `unified`.
pub fn cgroup_mode(root: Option<i64>, unified: Option<i64>) -> String {
    match (root, unified) {
        (Some(CGROUP2_MAGIC), _) => "v2 (unified)".into(),
        (Some(TMPFS_MAGIC), Some(CGROUP2_MAGIC)) => {
            "v1 hybrid (v1 controllers, an empty cgroup2 at /sys/fs/cgroup/unified)".into()
        }
        (Some(TMPFS_MAGIC), _) => "v1".into(),
        _ => "unknown".into(),
    }
}

/// True when /sys/fs/cgroup/unified is a cgroup2 mount (the hybrid layout crun refuses).
pub fn hybrid_unified_mounted() -> bool {
    fs_magic("/sys/fs/cgroup/unified") == Some(CGROUP2_MAGIC)
        && fs_magic("/sys/fs/cgroup") == Some(TMPFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(
            cpu_model("processor\t: 0\nmodel name\t: AMD EPYC\n").as_deref(),
            Some("AMD EPYC")
        );
        assert_eq!(
            mem_total_kib("MemTotal:       24683652 kB\n"),
            Some(24683652)
        );
        assert_eq!(
            os_pretty_name("ID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n")
                .as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(cgroup_mode(Some(CGROUP2_MAGIC), None), "v2 (unified)");
        assert!(cgroup_mode(Some(TMPFS_MAGIC), Some(CGROUP2_MAGIC)).starts_with("v1 hybrid"));
        assert_eq!(cgroup_mode(Some(TMPFS_MAGIC), None), "v1");
        let m = Machine::probe();
        assert!(m.cores >= 1);
        assert!(!m.kernel.is_empty());
    }
}
