//! What the bench made, and the check that none of it is left after the run.
//!
//! Scoped to the bench's own footprint (its namespaces, directories, cgroup parents and the
//! containers its daemons reported creating), never to system-wide counts: other helpers
//! run daemons, containers and namespaces on the same machine at the same time.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::procs;

#[derive(Debug, Default)]
pub struct Footprint {
    /// Open handles on the bench's namespaces, held until the check is done: a namespace
    /// with a handle cannot be freed, so its inode number cannot be reused by another
    /// helper's namespace and mistaken for the bench's.
    pub handles: Vec<fs::File>,
    /// Network namespace files the bench created (`/run/netns/berth-t-...`).
    pub netns_files: Vec<PathBuf>,
    /// Their inodes (processes are matched by these).
    pub netns_inodes: Vec<u64>,
    /// Mount namespaces of the daemons the bench started.
    pub mount_namespaces: Vec<u64>,
    /// Directories the bench created (data roots, bundles, registry storage).
    pub dirs: Vec<PathBuf>,
    /// Container ids the daemons reported creating, and OCI runtime container ids.
    pub container_ids: BTreeSet<String>,
    /// Cgroup names (one path component below a controller root) that are the bench's own.
    pub cgroup_parents: Vec<String>,
    /// Strings that only the bench's own objects carry (e.g. `berth-bench-<pid>`).
    pub markers: Vec<String>,
}

/// A snapshot of host state outside the bench's scope, compared before/after as a note.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HostNet {
    pub links: BTreeSet<String>,
    pub iptables: Vec<String>,
    /// `nft list tables` (berthd's networks use one nftables table per namespace).
    pub nft_tables: Vec<String>,
}

impl HostNet {
    pub fn capture() -> HostNet {
        let out = |prog: &str, args: &[&str]| {
            Command::new(prog)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let links = out("ip", &["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect();
        // Counters change all the time; compare rules only.
        let iptables = out("iptables-save", &[])
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
            .map(str::to_string)
            .collect();
        let nft_tables = out("nft", &["list", "tables"])
            .lines()
            .map(str::to_string)
            .collect();
        HostNet {
            links,
            iptables,
            nft_tables,
        }
    }
}

/// Remove the bench's own cgroup parents (children first) in every v1 controller and the v2
/// root; only directories with these exact names, and only when empty of processes (rmdir
/// refuses otherwise).
pub fn remove_cgroup_parents(parents: &[String]) {
    for root in cgroup_roots() {
        for p in parents {
            let dir = root.join(p.trim_start_matches('/'));
            if dir.is_dir() {
                rmdir_tree(&dir);
            }
        }
    }
}

fn rmdir_tree(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                rmdir_tree(&e.path());
            }
        }
    }
    if let Err(e) = fs::remove_dir(dir) {
        eprintln!("rmdir {}: {e}", dir.display());
    }
}

/// Every cgroup hierarchy root: /sys/fs/cgroup itself on v2, each controller mount on v1.
pub fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_path_buf()];
    }
    fs::read_dir(base)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists())
                .collect()
        })
        .unwrap_or_default()
}

/// Does any cgroup directory (to depth 4) carry one of `names` in its name?
fn cgroup_dirs_matching(names: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for root in cgroup_roots() {
        let mut stack = vec![(root.clone(), 0)];
        while let Some((d, depth)) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                if names.iter().any(|n| name.contains(n.as_str())) {
                    found.push(e.path().display().to_string());
                } else if depth < 4 {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
    found
}

/// What is left of `fp`. Call after every daemon, registry and namespace was dropped.
pub fn check(fp: &Footprint) -> (Vec<String>, Vec<String>) {
    let mut leaks = Vec::new();
    let ids: Vec<String> = fp.container_ids.iter().cloned().collect();
    let mut names: Vec<String> = ids.clone();
    names.extend(fp.markers.iter().cloned());
    names.extend(
        fp.cgroup_parents
            .iter()
            .map(|p| p.trim_start_matches('/').to_string()),
    );
    for pid in procs::pids() {
        if pid == std::process::id() {
            continue;
        }
        let net = procs::pid_ns(pid, "net");
        let mnt = procs::pid_ns(pid, "mnt");
        if net.is_some_and(|n| fp.netns_inodes.contains(&n)) {
            leaks.push(format!(
                "process {pid} ({}) in a bench network namespace",
                procs::comm(pid)
            ));
            continue;
        }
        if mnt.is_some_and(|m| fp.mount_namespaces.contains(&m)) {
            leaks.push(format!(
                "process {pid} ({}) in a daemon's mount namespace",
                procs::comm(pid)
            ));
            continue;
        }
        let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if names.iter().any(|n| cg.contains(n.as_str())) {
            leaks.push(format!(
                "process {pid} ({}) in a bench cgroup",
                procs::comm(pid)
            ));
        }
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for mp in procs::mount_points(&mountinfo) {
        let under_dir = fp.dirs.iter().any(|d| Path::new(&mp).starts_with(d));
        if under_dir || names.iter().any(|n| mp.contains(n.as_str())) {
            leaks.push(format!("mount {mp}"));
        }
    }
    for f in &fp.netns_files {
        if f.exists() {
            leaks.push(format!("network namespace {}", f.display()));
        }
    }
    for d in &fp.dirs {
        if d.exists() {
            leaks.push(format!("directory {}", d.display()));
        }
    }
    for c in cgroup_dirs_matching(&names) {
        leaks.push(format!("cgroup {c}"));
    }
    let checked = vec![
        format!(
            "processes: none in the bench's {} network namespaces or the {} mount namespaces of \
             its daemons, none in a cgroup named after one of its {} containers or its cgroup \
             parents ({})",
            fp.netns_inodes.len(),
            fp.mount_namespaces.len(),
            ids.len(),
            fp.cgroup_parents.join(", ")
        ),
        format!(
            "mounts: none in the host mount table under the bench's {} directories or naming \
             its containers (the daemons' own mounts lived in their private mount namespaces, \
             gone with their last process)",
            fp.dirs.len()
        ),
        "network namespaces: every `ip netns` entry the bench made is deleted (the daemons' \
         bridges, veths and iptables rules lived inside them)"
            .into(),
        "directories: every data root, state root and bundle the bench made is removed".into(),
        "cgroups: no directory in any hierarchy named after the bench's containers or parents"
            .into(),
    ];
    (checked, leaks)
}

/// Differences in the host's links and iptables rules (for notes: the bench never touches
/// either, but other helpers may while it runs).
pub fn host_net_notes(before: &HostNet, after: &HostNet) -> Vec<String> {
    if before == after {
        return vec![format!(
            "host network unchanged during the run: same {} links, same {} iptables rules, \
             same {} nftables tables",
            after.links.len(),
            after.iptables.len(),
            after.nft_tables.len()
        )];
    }
    let mut notes = Vec::new();
    let added: Vec<&String> = after.links.difference(&before.links).collect();
    let removed: Vec<&String> = before.links.difference(&after.links).collect();
    if !added.is_empty() || !removed.is_empty() {
        notes.push(format!(
            "host links changed during the run (not by the bench, whose peers only have \
             namespaces of their own): added {added:?}, removed {removed:?}"
        ));
    }
    if before.nft_tables != after.nft_tables {
        notes.push(format!(
            "host nftables tables changed during the run (not by the bench): {:?} -> {:?}",
            before.nft_tables, after.nft_tables
        ));
    }
    if before.iptables != after.iptables {
        let b: BTreeSet<&String> = before.iptables.iter().collect();
        let a: BTreeSet<&String> = after.iptables.iter().collect();
        notes.push(format!(
            "host iptables rules changed during the run (not by the bench): +{} -{}",
            a.difference(&b).count(),
            b.difference(&a).count()
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_footprint_and_detected_leftovers() {
        let gone = tempfile::tempdir().unwrap().path().to_path_buf();
        let fp = Footprint {
            dirs: vec![gone],
            netns_files: vec!["/run/netns/berth-t-does-not-exist".into()],
            markers: vec!["berth-bench-test-marker-none".into()],
            ..Default::default()
        };
        let (checked, leaks) = check(&fp);
        assert!(leaks.is_empty(), "{leaks:?}");
        assert_eq!(checked.len(), 5);

        let kept = tempfile::tempdir().unwrap();
        let fp = Footprint {
            dirs: vec![kept.path().to_path_buf()],
            netns_inodes: vec![procs::pid_ns(std::process::id(), "net").unwrap()],
            ..Default::default()
        };
        let (_, leaks) = check(&fp);
        assert!(
            leaks.iter().any(|l| l.starts_with("directory ")),
            "{leaks:?}"
        );
    }

    #[test]
    fn host_notes() {
        let a = HostNet {
            links: ["lo".to_string()].into(),
            iptables: vec!["-P INPUT ACCEPT".into()],
            nft_tables: vec![],
        };
        assert!(host_net_notes(&a, &a)[0].starts_with("host network unchanged"));
        let mut b = a.clone();
        b.links.insert("veth0".into());
        b.iptables.push("-A X".into());
        let n = host_net_notes(&a, &b);
        assert_eq!(n.len(), 2);
        assert!(n[0].contains("veth0"));
        assert!(n[1].contains("+1 -0"));
    }
}
