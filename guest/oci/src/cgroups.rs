//! cgroups v1 (one directory per controller hierarchy: this build host, hybrid layout) and v2
//! (one unified tree: the Berth VM). Resources are written as plain files under a root that is
//! a parameter, so the logic is unit-tested against temporary directory trees.
//!
//! v2 devices: the v2 device controller has no files, only BPF programs
//! (BPF_PROG_TYPE_CGROUP_DEVICE); see [`crate::devices_bpf`]. On v1 the `devices` controller's
//! allow/deny files are written.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

/// One mounted v1 hierarchy: `name` is the directory under /sys/fs/cgroup (also what a
/// container's own /sys/fs/cgroup shows), `controllers` what it carries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hierarchy {
    pub name: String,
    pub controllers: Vec<String>,
    pub mount: PathBuf,
}

impl Hierarchy {
    /// The data argument to mount this hierarchy again (in a container).
    pub fn mount_data(&self) -> String {
        if self.controllers.is_empty() {
            format!("none,name={}", self.name)
        } else {
            self.controllers.join(",")
        }
    }
}

/// Which cgroup layout the host has.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Layout {
    V1(Vec<Hierarchy>),
    /// The unified mount point.
    V2(PathBuf),
}

/// v1 hierarchies from /proc/self/mountinfo: "cgroup" mounts; their super options name the
/// controllers (or `name=systemd`). The hybrid layout's cgroup2 mount is ignored here.
pub fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        let mut post = post.split_whitespace();
        if post.next() != Some("cgroup") {
            continue;
        }
        let _src = post.next();
        let sup = post.next().unwrap_or("");
        let Some(mount) = pre.split_whitespace().nth(4) else { continue };
        let mut controllers = Vec::new();
        let mut named = None;
        for o in sup.split(',') {
            if let Some(n) = o.strip_prefix("name=") {
                named = Some(n.to_string());
            } else if !matches!(o, "rw" | "ro" | "nosuid" | "nodev" | "noexec" | "relatime" | "clone_children" | "noprefix" | "xattr") && !o.contains('=') {
                controllers.push(o.to_string());
            }
        }
        let name = Path::new(mount).file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if named.is_some() {
            controllers.clear();
        }
        out.push(Hierarchy { name, controllers, mount: mount.into() });
    }
    out
}

/// The host's layout: v2 when the cgroup root is a cgroup2 mount, else the v1 hierarchies.
pub fn detect() -> io::Result<Layout> {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return Ok(Layout::V2("/sys/fs/cgroup".into()));
    }
    Ok(Layout::V1(parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo")?)))
}

/// A container's cgroup: its directory in every hierarchy (v1) or the unified tree (v2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cgroup {
    pub layout: Layout,
    /// `cgroupsPath`, absolute ("/berth/<id>").
    pub path: String,
}

fn write(p: &Path, v: &str) -> io::Result<()> {
    fs::write(p, v).map_err(|e| io::Error::new(e.kind(), format!("writing {v:?} to {}: {e}", p.display())))
}

/// Docker/runc's mapping of cpu.shares (2..262144) to cgroup v2 cpu.weight (1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

/// v1 devices rule text: "c 1:3 rwm", "a *:* rwm".
pub fn device_rule(d: &LinuxDeviceCgroup) -> String {
    let t = match d.typ().map(|t| format!("{t:?}").to_lowercase()) {
        Some(t) => t,
        None => "a".into(),
    };
    let n = |x: Option<i64>| x.map(|v| v.to_string()).unwrap_or_else(|| "*".into());
    format!("{t} {}:{} {}", n(d.major()), n(d.minor()), d.access().clone().unwrap_or_else(|| "rwm".into()))
}

impl Cgroup {
    pub fn new(layout: Layout, cgroups_path: &str, id: &str) -> Cgroup {
        let p = if cgroups_path.is_empty() { format!("/berth/{id}") } else { format!("/{}", cgroups_path.trim_start_matches('/')) };
        Cgroup { layout, path: p }
    }

    fn rel(&self) -> &str {
        self.path.trim_start_matches('/')
    }

    /// Every directory of this cgroup (one per v1 hierarchy, or the one v2 directory).
    pub fn dirs(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V1(hs) => hs.iter().map(|h| h.mount.join(self.rel())).collect(),
            Layout::V2(root) => vec![root.join(self.rel())],
        }
    }

    /// The directory of a v1 controller, or the v2 directory.
    pub fn dir_for(&self, controller: &str) -> Option<PathBuf> {
        match &self.layout {
            Layout::V1(hs) => hs.iter().find(|h| h.controllers.iter().any(|c| c == controller)).map(|h| h.mount.join(self.rel())),
            Layout::V2(root) => Some(root.join(self.rel())),
        }
    }

    /// Creates the directories and applies the limits (before any process joins).
    pub fn create(&self, r: Option<&LinuxResources>) -> io::Result<()> {
        match &self.layout {
            Layout::V1(hs) => {
                for h in hs {
                    let d = h.mount.join(self.rel());
                    fs::create_dir_all(&d)?;
                    if h.controllers.iter().any(|c| c == "cpuset") {
                        init_cpuset(&h.mount, &d)?;
                    }
                }
                if let Some(r) = r {
                    self.set_v1(r)?;
                }
            }
            Layout::V2(root) => {
                let d = root.join(self.rel());
                enable_v2_controllers(root, &d)?;
                fs::create_dir_all(&d)?;
                if let Some(r) = r {
                    set_v2(&d, r)?;
                }
            }
        }
        Ok(())
    }

    /// Applies new limits to an existing cgroup (`update`).
    pub fn set(&self, r: &LinuxResources) -> io::Result<()> {
        match &self.layout {
            Layout::V1(_) => self.set_v1(r),
            Layout::V2(root) => set_v2(&root.join(self.rel()), r),
        }
    }

    fn set_v1(&self, r: &LinuxResources) -> io::Result<()> {
        if let (Some(m), Some(d)) = (r.memory(), self.dir_for("memory")) {
            if let Some(l) = m.limit() {
                write(&d.join("memory.limit_in_bytes"), &l.to_string())?;
            }
            if let Some(s) = m.swap() {
                let f = d.join("memory.memsw.limit_in_bytes");
                // Without swap accounting in the kernel the file does not exist (runc skips it too).
                if f.exists() {
                    write(&f, &s.to_string())?;
                }
            }
            if let Some(sw) = m.swappiness() {
                write(&d.join("memory.swappiness"), &sw.to_string())?;
            }
        }
        if let Some(c) = r.cpu() {
            if let Some(d) = self.dir_for("cpu") {
                if let Some(s) = c.shares() {
                    write(&d.join("cpu.shares"), &s.to_string())?;
                }
                if let Some(p) = c.period() {
                    write(&d.join("cpu.cfs_period_us"), &p.to_string())?;
                }
                if let Some(q) = c.quota() {
                    write(&d.join("cpu.cfs_quota_us"), &q.to_string())?;
                }
            }
            if let Some(d) = self.dir_for("cpuset") {
                if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
                    write(&d.join("cpuset.cpus"), cpus)?;
                }
                if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
                    write(&d.join("cpuset.mems"), mems)?;
                }
            }
        }
        if let (Some(p), Some(d)) = (r.pids(), self.dir_for("pids")) {
            let v = if p.limit() > 0 { p.limit().to_string() } else { "max".into() };
            write(&d.join("pids.max"), &v)?;
        }
        Ok(())
    }

    /// The device rules. Applied once the init has built /dev (mknod needs the `m` right the
    /// rules take away), before the container's process runs, as runc does.
    pub fn set_devices(&self, r: Option<&LinuxResources>) -> io::Result<()> {
        let Some(rules) = r.and_then(|r| r.devices().as_ref()) else { return Ok(()) };
        match &self.layout {
            Layout::V1(_) => {
                if let Some(d) = self.dir_for("devices") {
                    for rule in rules {
                        let f = if rule.allow() { "devices.allow" } else { "devices.deny" };
                        write(&d.join(f), &device_rule(rule))?;
                    }
                }
                Ok(())
            }
            Layout::V2(root) => crate::devices_bpf::apply(&root.join(self.rel()), rules),
        }
    }

    /// Moves `pid` into the cgroup (every hierarchy).
    pub fn add(&self, pid: i32) -> io::Result<()> {
        for d in self.dirs() {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Pids in the cgroup (from the pids/memory hierarchy on v1).
    pub fn procs(&self) -> Vec<i32> {
        let d = self.dir_for("pids").or_else(|| self.dir_for("memory")).or_else(|| self.dirs().into_iter().next());
        d.and_then(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Freeze (pause) or thaw; waits until the kernel reports the new state.
    pub fn freeze(&self, frozen: bool) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        match &self.layout {
            Layout::V1(_) => {
                let d = self.dir_for("freezer").ok_or_else(|| io::Error::other("no freezer hierarchy"))?;
                let want = if frozen { "FROZEN" } else { "THAWED" };
                loop {
                    write(&d.join("freezer.state"), want)?;
                    if fs::read_to_string(d.join("freezer.state"))?.trim() == want {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        return Err(io::Error::other(format!("cgroup did not become {want}")));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Layout::V2(_) => {
                let d = self.dirs().remove(0);
                write(&d.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
                let want = if frozen { "frozen 1" } else { "frozen 0" };
                loop {
                    if fs::read_to_string(d.join("cgroup.events"))?.lines().any(|l| l.trim() == want) {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        return Err(io::Error::other("cgroup did not reach the freeze state"));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    pub fn is_frozen(&self) -> bool {
        match &self.layout {
            Layout::V1(_) => self.dir_for("freezer").and_then(|d| fs::read_to_string(d.join("freezer.state")).ok()).is_some_and(|s| s.trim() == "FROZEN"),
            Layout::V2(_) => self.dirs().first().and_then(|d| fs::read_to_string(d.join("cgroup.freeze")).ok()).is_some_and(|s| s.trim() == "1"),
        }
    }

    /// Removes the directories (they must be empty of processes; retried while the kernel
    /// finishes tearing down exited tasks).
    pub fn delete(&self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for d in self.dirs() {
            loop {
                match fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                    Err(e) => return Err(io::Error::new(e.kind(), format!("removing {}: {e}", d.display()))),
                }
            }
        }
        Ok(())
    }
}

/// A new v1 cpuset cgroup starts with empty cpus/mems, and no task may join it then: copy the
/// parent's values down every new level.
fn init_cpuset(mount: &Path, dir: &Path) -> io::Result<()> {
    let rel = dir.strip_prefix(mount).map_err(|_| io::Error::other("cpuset dir outside its hierarchy"))?;
    let mut cur = mount.to_path_buf();
    for c in rel.components() {
        let parent = cur.clone();
        cur.push(c);
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let mine = fs::read_to_string(cur.join(f)).unwrap_or_default();
            if mine.trim().is_empty() {
                let theirs = fs::read_to_string(parent.join(f))?;
                write(&cur.join(f), theirs.trim())?;
            }
        }
    }
    Ok(())
}

/// v2: controllers only reach a child when every ancestor lists them in cgroup.subtree_control:
/// the root and each directory between it and the container's (`/berth` for `/berth/<id>`).
fn enable_v2_controllers(root: &Path, dir: &Path) -> io::Result<()> {
    let avail = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<&str> = avail.split_whitespace().filter(|c| matches!(*c, "cpu" | "cpuset" | "memory" | "pids" | "io")).collect();
    let rel = dir.strip_prefix(root).map_err(|_| io::Error::other("cgroup dir outside the unified tree"))?;
    let comps: Vec<_> = rel.components().collect();
    let mut cur = root.to_path_buf();
    for (i, c) in comps.iter().enumerate() {
        let ctl = cur.join("cgroup.subtree_control");
        let have = fs::read_to_string(&ctl).unwrap_or_default();
        let missing: Vec<String> = wanted.iter().filter(|w| !have.split_whitespace().any(|h| h == **w)).map(|w| format!("+{w}")).collect();
        if !missing.is_empty() {
            write(&ctl, &missing.join(" "))?;
        }
        if i + 1 == comps.len() {
            break;
        }
        cur.push(c);
        fs::create_dir_all(&cur)?;
    }
    Ok(())
}

/// v2 resource files (Docker's v1-style values translated as runc does).
pub fn set_v2(d: &Path, r: &LinuxResources) -> io::Result<()> {
    if let Some(m) = r.memory() {
        if let Some(l) = m.limit() {
            write(&d.join("memory.max"), &if l > 0 { l.to_string() } else { "max".into() })?;
            if let Some(s) = m.swap() {
                // v1's memsw is memory+swap; v2's swap.max is swap alone.
                let v = if s < 0 { "max".to_string() } else { (s - l).max(0).to_string() };
                let f = d.join("memory.swap.max");
                if f.exists() {
                    write(&f, &v)?;
                }
            }
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(s) = c.shares() {
            write(&d.join("cpu.weight"), &shares_to_weight(s).to_string())?;
        }
        if c.quota().is_some() || c.period().is_some() {
            let q = c.quota().filter(|q| *q > 0).map(|q| q.to_string()).unwrap_or_else(|| "max".into());
            write(&d.join("cpu.max"), &format!("{q} {}", c.period().unwrap_or(100_000)))?;
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            write(&d.join("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            write(&d.join("cpuset.mems"), mems)?;
        }
    }
    if let Some(p) = r.pids() {
        write(&d.join("pids.max"), &if p.limit() > 0 { p.limit().to_string() } else { "max".into() })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxResources;

    const MOUNTINFO: &str = "\
35 26 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
37 35 0:32 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
38 35 0:33 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
39 35 0:34 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
";

    #[test]
    fn v1_hierarchies_from_mountinfo() {
        let h = parse_mountinfo(MOUNTINFO);
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].mount_data(), "none,name=systemd");
        assert_eq!(h[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(h[1].name, "cpu,cpuacct");
        assert_eq!(h[2].mount_data(), "memory");
    }

    fn resources() -> LinuxResources {
        serde_json::from_value(serde_json::json!({
            "memory": {"limit": 33554432, "swap": 67108864},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
            "pids": {"limit": 20},
            "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]
        }))
        .unwrap()
    }

    /// A fake v1 tree: each "hierarchy" is a plain directory.
    #[test]
    fn v1_files_written() {
        let t = tempfile::tempdir().unwrap();
        let mk = |n: &str, c: &[&str]| {
            let m = t.path().join(n);
            fs::create_dir_all(&m).unwrap();
            Hierarchy { name: n.into(), controllers: c.iter().map(|s| s.to_string()).collect(), mount: m }
        };
        let hs = vec![mk("memory", &["memory"]), mk("cpu", &["cpu"]), mk("cpuset", &["cpuset"]), mk("pids", &["pids"]), mk("devices", &["devices"])];
        fs::write(t.path().join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        fs::write(t.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
        let cg = Cgroup::new(Layout::V1(hs), "/berth/c1", "c1");
        cg.create(Some(&resources())).unwrap();
        let r = |p: &str| fs::read_to_string(t.path().join(p)).unwrap();
        assert!(!t.path().join("devices/berth/c1/devices.deny").exists(), "device rules wait for set_devices");
        cg.set_devices(Some(&resources())).unwrap();
        assert_eq!(r("memory/berth/c1/memory.limit_in_bytes"), "33554432");
        assert_eq!(r("cpu/berth/c1/cpu.shares"), "512");
        assert_eq!(r("cpu/berth/c1/cpu.cfs_quota_us"), "50000");
        assert_eq!(r("pids/berth/c1/pids.max"), "20");
        // cpuset inherited mems at each new level, cpus set from the spec.
        assert_eq!(r("cpuset/berth/cpuset.mems"), "0");
        assert_eq!(r("cpuset/berth/c1/cpuset.cpus"), "0");
        // Devices: only the last rule written survives in a plain file; check the allow one.
        assert_eq!(r("devices/berth/c1/devices.allow"), "c 1:3 rwm");
        assert_eq!(r("devices/berth/c1/devices.deny"), "a *:* rwm");
        assert_eq!(cg.dir_for("memory").unwrap(), t.path().join("memory/berth/c1"));
    }

    #[test]
    fn v2_files_written_and_controllers_enabled() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma misc\n").unwrap();
        fs::write(t.path().join("cgroup.subtree_control"), "").unwrap();
        let cg = Cgroup::new(Layout::V2(t.path().into()), "/berth/c1", "c1");
        let d = t.path().join("berth/c1");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("memory.swap.max"), "").unwrap();
        cg.create(Some(&resources())).unwrap();
        let r = |p: &str| fs::read_to_string(t.path().join(p)).unwrap();
        assert_eq!(r("cgroup.subtree_control"), "+cpuset +cpu +io +memory +pids");
        // The parent too: without it the container's directory has no memory.max etc.
        assert_eq!(r("berth/cgroup.subtree_control"), "+cpuset +cpu +io +memory +pids");
        assert!(!t.path().join("berth/c1/cgroup.subtree_control").exists(), "the leaf keeps its processes");
        assert_eq!(r("berth/c1/memory.max"), "33554432");
        assert_eq!(r("berth/c1/memory.swap.max"), "33554432");
        assert_eq!(r("berth/c1/cpu.max"), "50000 100000");
        assert_eq!(r("berth/c1/cpu.weight"), shares_to_weight(512).to_string());
        assert_eq!(r("berth/c1/pids.max"), "20");
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn device_rules_text() {
        let r: Vec<LinuxDeviceCgroup> = serde_json::from_value(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "b", "major": 8, "access": "m"}
        ]))
        .unwrap();
        assert_eq!(device_rule(&r[0]), "a *:* rwm");
        assert_eq!(device_rule(&r[1]), "b 8:* m");
    }
}
