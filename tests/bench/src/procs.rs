//! Processes from /proc: who is in which namespace, how much memory and CPU they use.
//!
//! A peer's processes are found by namespace, not by parentage: containerd-shim and conmon
//! daemonize (their parent becomes init), but every helper a daemon starts stays in the
//! network namespace the bench started the daemon in, while containers get their own.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use serde::Serialize;

/// All pids in /proc.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .collect()
}

/// Inode of a namespace file (`/run/netns/X`, `/proc/PID/ns/net`); namespaces are equal
/// when their inodes (on nsfs) are equal.
pub fn ns_inode(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.ino())
}

/// Inode of process `pid`'s namespace of `kind` ("net", "mnt").
pub fn pid_ns(pid: u32, kind: &str) -> Option<u64> {
    ns_inode(Path::new(&format!("/proc/{pid}/ns/{kind}")))
}

/// Pids whose namespace of `kind` has inode `ino`.
pub fn pids_in_ns(kind: &str, ino: u64) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|p| pid_ns(*p, kind) == Some(ino))
        .collect()
}

pub fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// One process's memory.
#[derive(Debug, Clone, Serialize)]
pub struct ProcMem {
    pub pid: u32,
    pub comm: String,
    pub rss_kib: u64,
    /// Proportional set size (shared pages split among their users), when readable.
    pub pss_kib: Option<u64>,
}

pub fn proc_mem(pid: u32) -> ProcMem {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    ProcMem {
        pid,
        comm: comm(pid),
        rss_kib: field_kib(&status, "VmRSS:").unwrap_or(0),
        pss_kib: field_kib(&rollup, "Pss:"),
    }
}

/// `Name:   1234 kB` -> 1234.
pub fn field_kib(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime + cutime + cstime (fields 14-17 of /proc/PID/stat), in clock ticks. The comm
/// field may hold spaces and parens, so fields count from the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (11..15).map(|i| f.get(i)?.parse::<u64>().ok()).sum()
}

/// CPU seconds used so far by `pids` (including their reaped children).
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    pids.iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| parse_cpu_ticks(&s))
        .sum::<u64>() as f64
        / hz
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points (field 5) of a mountinfo text.
pub fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .collect()
}

/// Lazily unmount every mount point at or below `dir` in this mount namespace, deepest first.
pub fn unmount_under(dir: &Path) {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = mount_points(&info)
        .into_iter()
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_and_self() {
        let stat = "9 (x) y) S 1 9 9 0 -1 4194560 10 0 0 0 7 3 2 1 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(13));
        assert_eq!(parse_cpu_ticks("9 (x) S 1"), None);
        assert_eq!(
            field_kib("Name:\tx\nVmRSS:\t  1234 kB\n", "VmRSS:"),
            Some(1234)
        );
        assert_eq!(field_kib("Name:\tkthread\n", "VmRSS:"), None);
        assert_eq!(unescape_mountinfo("/a\\040b/c"), "/a b/c");
        let mi = "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw\n";
        assert_eq!(mount_points(mi), ["/mnt/a b"]);
        let me = std::process::id();
        let m = proc_mem(me);
        assert!(m.rss_kib > 0);
        let net = pid_ns(me, "net").unwrap();
        assert!(pids_in_ns("net", net).contains(&me));
        assert!(cpu_seconds(&[me]) >= 0.0);
    }
}
