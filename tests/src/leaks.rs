//! A leak checker shared by the tests: what one berthd and its namespace own before a test
//! step, compared with what they own after it.
//!
//! Everything is scoped to what the test created, because other engineers run their own
//! daemons, containers and namespaces on the same machine at the same time:
//! - mounts whose mount point is under this daemon's temporary root;
//! - cgroups named after containers this daemon created (their IDs are collected from the
//!   daemon's own `/events` stream while the check runs), under `berth/` or a given parent;
//! - network namespace files under the daemon's exec root;
//! - links (bridges, veths) and the nftables ruleset inside the test's network namespace;
//! - processes whose command line names the daemon's root (shims, runtimes) or a container ID;
//! - berthd's own open descriptors and threads.
//!
//! ```no_run
//! # use berth_tests::{world::World, leaks::LeakCheck};
//! let w = World::start();
//! let check = LeakCheck::start(&w.d, &w.fx.ns);
//! // ... run containers ...
//! check.assert_clean(&w.d, &w.fx.ns);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::berthd::Berthd;
use crate::netns::NetNs;

/// What one daemon and its namespace own at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub mounts: BTreeSet<String>,
    pub netns_files: BTreeSet<String>,
    pub links: BTreeSet<String>,
    pub nft: String,
    pub processes: BTreeMap<i32, String>,
    pub cgroups: BTreeSet<PathBuf>,
    pub berthd_fds: usize,
    pub berthd_threads: usize,
    pub berthd_rss_kib: u64,
}

/// Follows the daemon's container events and remembers every container it created.
struct IdFollower {
    ids: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IdFollower {
    fn start(socket: &Path) -> IdFollower {
        let ids = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (ids2, stop2, socket) = (ids.clone(), stop.clone(), socket.to_path_buf());
        let thread = std::thread::spawn(move || {
            let Ok(mut s) = std::os::unix::net::UnixStream::connect(&socket) else {
                let _ = ready_tx.send(());
                return;
            };
            let filters = "%7B%22type%22%3A%5B%22container%22%5D%7D";
            let _ = write!(s, "GET /events?filters={filters} HTTP/1.1\r\nHost: berth\r\n\r\n");
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let mut r = BufReader::new(s);
            let mut line = String::new();
            let mut head_done = false;
            while !stop2.load(Ordering::SeqCst) {
                // A read timeout may leave half a line in `line`: keep it and read on.
                match r.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) if line.ends_with('\n') => {}
                    Ok(_) | Err(_) => continue,
                }
                let line = std::mem::take(&mut line);
                if !head_done {
                    if line == "\r\n" {
                        head_done = true;
                        let _ = ready_tx.send(());
                    }
                    continue;
                }
                // Chunked encoding: JSON lines between chunk-size lines.
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) else { continue };
                if v["Action"] == "create" {
                    if let Some(id) = v["Actor"]["ID"].as_str() {
                        ids2.lock().unwrap().insert(id.to_string());
                    }
                }
            }
        });
        // The subscription exists once the response head arrived; wait for it so no create
        // event of the test is missed.
        let _ = ready_rx.recv_timeout(Duration::from_secs(10));
        IdFollower { ids, stop, thread: Some(thread) }
    }

    fn ids(&self) -> BTreeSet<String> {
        self.ids.lock().unwrap().clone()
    }
}

impl Drop for IdFollower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A before/after comparison for one daemon. Extra cgroup parents (`--cgroup-parent`) can be
/// named with [`LeakCheck::cgroup_parent`].
pub struct LeakCheck {
    before: Snapshot,
    follower: IdFollower,
    parents: Vec<String>,
    /// Slack allowed on berthd's thread count (tokio's blocking pool keeps idle threads for 10 s).
    thread_slack: usize,
}

impl LeakCheck {
    /// Snapshot now and start collecting the IDs of containers the daemon creates.
    pub fn start(d: &Berthd, ns: &NetNs) -> LeakCheck {
        let follower = IdFollower::start(&d.socket());
        let mut c = LeakCheck { before: Snapshot::empty(), follower, parents: vec!["berth".into()], thread_slack: 4 };
        c.before = c.snapshot(d, ns);
        c
    }

    /// Also look for container cgroups under this parent (as given to `--cgroup-parent`).
    pub fn cgroup_parent(mut self, parent: &str) -> LeakCheck {
        self.parents.push(parent.trim_matches('/').to_string());
        self.before.cgroups = cgroups_of(&self.parents, &self.follower.ids());
        self
    }

    /// The snapshot taken at start.
    pub fn before(&self) -> &Snapshot {
        &self.before
    }

    /// IDs of the containers created since start.
    pub fn created(&self) -> BTreeSet<String> {
        self.follower.ids()
    }

    /// Take a snapshot of the daemon and namespace now (cgroups for the IDs seen so far).
    pub fn snapshot(&self, d: &Berthd, ns: &NetNs) -> Snapshot {
        let root = d.root().display().to_string();
        let ids = self.follower.ids();
        let (fds, threads, rss) = d.pid().map(proc_counts).unwrap_or((0, 0, 0));
        Snapshot {
            mounts: mounts_under(&root),
            netns_files: dir_names(&d.exec_root().join("netns")),
            links: links_in(ns),
            nft: nft_in(ns),
            processes: processes_naming(&root, &ids, d.pid()),
            cgroups: cgroups_of(&self.parents, &ids),
            berthd_fds: fds,
            berthd_threads: threads,
            berthd_rss_kib: rss,
        }
    }

    /// What differs from the start, or None when clean. fds must come back exactly, threads
    /// within a small slack.
    pub fn leaks(&self, d: &Berthd, ns: &NetNs) -> Option<String> {
        let now = self.snapshot(d, ns);
        let b = &self.before;
        let mut out = Vec::new();
        let diff = |name: &str, before: &BTreeSet<String>, after: &BTreeSet<String>, out: &mut Vec<String>| {
            let added: Vec<&String> = after.difference(before).collect();
            if !added.is_empty() {
                out.push(format!("{name} left: {added:?}"));
            }
        };
        diff("mounts", &b.mounts, &now.mounts, &mut out);
        diff("netns files", &b.netns_files, &now.netns_files, &mut out);
        diff("links", &b.links, &now.links, &mut out);
        if now.nft != b.nft {
            out.push(format!("nft ruleset changed:\n--- before\n{}\n--- after\n{}", b.nft, now.nft));
        }
        let procs: Vec<&String> = now.processes.iter().filter(|(p, _)| !b.processes.contains_key(p)).map(|(_, c)| c).collect();
        if !procs.is_empty() {
            out.push(format!("processes left: {procs:?}"));
        }
        let cg: Vec<&PathBuf> = now.cgroups.difference(&b.cgroups).collect();
        if !cg.is_empty() {
            out.push(format!("cgroups left: {cg:?}"));
        }
        if now.berthd_fds > b.berthd_fds {
            out.push(format!("berthd fds {} -> {}: {:?}", b.berthd_fds, now.berthd_fds, d.pid().map(fd_targets)));
        }
        if now.berthd_threads > b.berthd_threads + self.thread_slack {
            out.push(format!("berthd threads {} -> {}", b.berthd_threads, now.berthd_threads));
        }
        (!out.is_empty()).then(|| out.join("\n"))
    }

    /// Wait (up to 30 s: kernels free namespaces and veths asynchronously, idle threads exit
    /// after 10 s) until nothing is left, else panic with the difference.
    #[track_caller]
    pub fn assert_clean(self, d: &Berthd, ns: &NetNs) -> Snapshot {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.leaks(d, ns) {
                None => break,
                Some(what) if Instant::now() > deadline => panic!(
                    "leaks after the test ({} containers created):\n{what}\n--- berthd log tail:\n{}",
                    self.created().len(),
                    crate::berthd::tail(&d.log(), 40)
                ),
                Some(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
        let after = self.snapshot(d, ns);
        eprintln!(
            "leak check: clean after {} containers; berthd fds {} -> {}, threads {} -> {}, RSS {} -> {} KiB",
            self.created().len(),
            self.before.berthd_fds,
            after.berthd_fds,
            self.before.berthd_threads,
            after.berthd_threads,
            self.before.berthd_rss_kib,
            after.berthd_rss_kib
        );
        after
    }
}

impl Snapshot {
    fn empty() -> Snapshot {
        Snapshot {
            mounts: BTreeSet::new(),
            netns_files: BTreeSet::new(),
            links: BTreeSet::new(),
            nft: String::new(),
            processes: BTreeMap::new(),
            cgroups: BTreeSet::new(),
            berthd_fds: 0,
            berthd_threads: 0,
            berthd_rss_kib: 0,
        }
    }
}

/// Whether `path` is `root` or below it (`/tmp/a` is not below `/tmp/ab`).
fn is_under(path: &str, root: &str) -> bool {
    let root = root.trim_end_matches('/');
    path == root || path.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'))
}

/// Mount points (mountinfo field 5) under `root`.
pub fn mounts_under(root: &str) -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| is_under(m, root))
        .map(String::from)
        .collect()
}

fn dir_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Link names inside the namespace (`ip -o link`), without the `@peer` suffix.
pub fn links_in(ns: &NetNs) -> BTreeSet<String> {
    let out = ns.command("ip").args(["-o", "link"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .collect()
}

/// The namespace's nftables ruleset with counters and handles removed.
pub fn nft_in(ns: &NetNs) -> String {
    let out = ns.command("nft").args(["list", "ruleset"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    out.lines()
        .map(|l| match l.find(" counter packets ") {
            Some(i) => l[..i].to_string(),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Processes (other than berthd itself) whose command line names `root` or one of `ids`.
pub fn processes_naming(root: &str, ids: &BTreeSet<String>, berthd: Option<u32>) -> BTreeMap<i32, String> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if Some(pid as u32) == berthd || pid == std::process::id() as i32 {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&raw).into_owned();
        let names_root = cmd.split(['\0', ' ', '=']).any(|arg| is_under(arg, root));
        if names_root || ids.iter().any(|id| cmd.contains(id.as_str())) {
            out.insert(pid, cmd.replace('\0', " ").trim().to_string());
        }
    }
    out
}

/// Existing cgroup directories `<controller>/<parent>/<id>` for the given IDs.
pub fn cgroups_of(parents: &[String], ids: &BTreeSet<String>) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let ctrls: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|r| r.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    let mut roots = ctrls.clone();
    // cgroup v2: the container cgroups sit in the one tree at /sys/fs/cgroup itself.
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    for c in &roots {
        for p in parents {
            for id in ids {
                let d = c.join(p).join(id);
                if d.is_dir() {
                    out.insert(d);
                }
            }
        }
    }
    out
}

/// (open fds, threads, RSS KiB) of a process.
pub fn proc_counts(pid: u32) -> (usize, usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|r| r.count()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (fds, field("Threads:") as usize, field("VmRSS:"))
}

/// What each of a process's descriptors points to (for the failure message).
fn fd_targets(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|r| r.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()).map(|p| p.display().to_string()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_of_this_process() {
        let (fds, threads, rss) = proc_counts(std::process::id());
        assert!(fds >= 3 && threads >= 1 && rss > 0, "{fds} {threads} {rss}");
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(proc_counts(std::process::id()).0, fds + 1);
        drop(f);
    }

    #[test]
    fn mounts_are_scoped_by_prefix() {
        // Only mount points below the prefix count: `/proc` is below `/`, never below `/proc/x`.
        assert!(mounts_under("/").contains("/proc"));
        assert!(mounts_under("/proc/no-such-prefix-").is_empty());
        assert!(is_under("/tmp/a/b", "/tmp/a") && is_under("/tmp/a", "/tmp/a/") && !is_under("/tmp/ab", "/tmp/a"));
    }
}
