//! Runs real containers with runc over an overlay-mounted busybox rootfs.
//! Needs root, runc and a static busybox (Debian's busybox-static); skipped
//! (with a message) otherwise.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use berth_runtime::bundle::{Bundle, SysMounter};
use berth_runtime::runc::{ContainerStdio, OciRuntime, Runc, Status};
use berth_runtime::spec::{build, cgroups_path, ContainerSpec, NetworkMode};

const BUSYBOX: &str = "/bin/busybox";
const CGROUP_PARENT: &str = "berth-runtime-test";

fn runc_binary() -> Option<PathBuf> {
    ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    if runc_binary().is_none() {
        return Some("runc not installed".into());
    }
    if !Path::new(BUSYBOX).exists() {
        return Some("busybox-static not installed".into());
    }
    None
}

/// One image layer: static busybox plus the applet links the tests use.
fn busybox_layer(dir: &Path) {
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::create_dir_all(dir.join("tmp")).unwrap();
    fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "cat", "grep", "dd", "sleep", "seq", "id", "head", "ls"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
}

/// A container run to completion; its output and status.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

struct Env {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    runc: Runc,
    layer: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        let layer = base.join("layer");
        busybox_layer(&layer);
        let runc = Runc::new(runc_binary().unwrap(), base.join("runc-state"));
        Env { _tmp: tmp, base, runc, layer }
    }

    fn spec(&self, id: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            id: id.into(),
            rootfs: self.base.join(id).join("bundle/rootfs"),
            args: vec!["sh".into(), "-c".into(), script.into()],
            hostname: id.into(),
            network: NetworkMode::Private,
            cgroup_parent: CGROUP_PARENT.into(),
            ..Default::default()
        }
    }

    /// Writes the bundle, mounts the overlay, runs the container in the
    /// foreground, then unmounts and removes everything.
    fn run(&self, spec: &ContainerSpec) -> Outcome {
        let cdir = self.base.join(&spec.id);
        let bundle = Bundle::create(cdir.join("bundle")).unwrap();
        bundle
            .mount_rootfs(&SysMounter, &[self.layer.clone()], &cdir.join("upper"), &cdir.join("work"))
            .unwrap();
        bundle.write_config(&build(spec).unwrap()).unwrap();
        let out = cdir.join("stdout");
        let err = cdir.join("stderr");
        let status = self.runc.run_foreground(
            &spec.id,
            &bundle.dir,
            ContainerStdio {
                stdin: Some(Stdio::null()),
                stdout: Some(fs::File::create(&out).unwrap().into()),
                stderr: Some(fs::File::create(&err).unwrap().into()),
            },
        );
        let _ = self.runc.delete(&spec.id, true);
        bundle.remove(&SysMounter).unwrap();
        let status = status.unwrap();
        Outcome {
            code: status.code(),
            stdout: fs::read_to_string(out).unwrap(),
            stderr: fs::read_to_string(err).unwrap(),
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // After a failed assertion: force-delete containers and unmount
        // rootfs mounts so nothing leaks onto the host.
        for entry in fs::read_dir(&self.base).into_iter().flatten().flatten() {
            let rootfs = entry.path().join("bundle/rootfs");
            if rootfs.exists() {
                let _ = self.runc.delete(&entry.file_name().to_string_lossy(), true);
                let _ = Bundle { dir: entry.path().join("bundle") }.unmount_rootfs(&SysMounter);
            }
        }
        // runc delete removes each container's cgroup; the parent is ours too.
        for ctl in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let _ = fs::remove_dir(ctl.path().join(CGROUP_PARENT));
        }
        let _ = fs::remove_dir(Path::new("/sys/fs/cgroup").join(CGROUP_PARENT));
    }
}

fn status_line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("{key} missing in {out:?}"))
        .split_whitespace()
        .nth(1)
        .unwrap()
}

#[test]
fn runc_busybox_containers() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping runc integration test: {why}");
        return;
    }
    let env = Env::new();

    // Defaults: Docker's 14 capabilities, nothing inheritable or ambient.
    let o = env.run(&env.spec("caps", "echo hi; grep Cap /proc/self/status; hostname 2>/dev/null; id"));
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    assert!(o.stdout.starts_with("hi\n"), "{}", o.stdout);
    assert_eq!(status_line(&o.stdout, "CapEff:"), "00000000a80425fb");
    assert_eq!(status_line(&o.stdout, "CapPrm:"), "00000000a80425fb");
    assert_eq!(status_line(&o.stdout, "CapBnd:"), "00000000a80425fb");
    assert_eq!(status_line(&o.stdout, "CapInh:"), "0000000000000000");
    assert_eq!(status_line(&o.stdout, "CapAmb:"), "0000000000000000");

    // Seccomp and masked paths are in force: no mount without CAP_SYS_ADMIN
    // even for root, /proc/kcore is masked, /proc/sys is read-only.
    let o = env.run(&env.spec(
        "confined",
        "cat /proc/kcore | head -c 1 | grep -c . ; echo kcore=$?; \
         echo 1 > /proc/sys/kernel/domainname && echo sys-writable; \
         grep Seccomp: /proc/self/status",
    ));
    assert!(o.stdout.contains("kcore=1"), "{} {}", o.stdout, o.stderr);
    assert!(!o.stdout.contains("sys-writable"), "{}", o.stdout);
    assert_eq!(status_line(&o.stdout, "Seccomp:"), "2");

    // Memory limit: allocating 64 MiB in a 32 MiB container gets OOM-killed;
    // the same command fits without the limit (so the check can fail).
    let script = "dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null && echo dd-ok";
    let o = env.run(&env.spec("nolimit", script));
    assert!(o.stdout.contains("dd-ok"), "control run: {} {}", o.stdout, o.stderr);
    let mut s = env.spec("memlimit", script);
    s.memory = Some(32 << 20);
    s.memory_swap = Some(32 << 20);
    let o = env.run(&s);
    assert!(!o.stdout.contains("dd-ok"), "{}", o.stdout);
    assert_eq!(o.code, Some(137), "dd should die of SIGKILL; stderr: {}", o.stderr);

    // Pids limit: a fork loop stops at the limit instead of reaching 50.
    let script = "n=0; while [ $n -lt 50 ]; do sleep 30 & n=$((n+1)); echo $n; done";
    let mut s = env.spec("pids", script);
    s.pids_limit = Some(10);
    let o = env.run(&s);
    let last: u32 = o.stdout.lines().last().unwrap_or("0").parse().unwrap();
    assert!((1..10).contains(&last), "forks: {last}, stderr: {}", o.stderr);
    assert!(o.stderr.contains("fork"), "{}", o.stderr);
}

/// create/start/state/kill/delete through the trait, as the monitor uses it.
#[test]
fn runc_lifecycle_through_the_trait() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping runc integration test: {why}");
        return;
    }
    let env = Env::new();
    let spec = env.spec("life", "echo started; exec sleep 60");
    let cdir = env.base.join("life");
    let bundle = Bundle::create(cdir.join("bundle")).unwrap();
    bundle.mount_rootfs(&SysMounter, &[env.layer.clone()], &cdir.join("upper"), &cdir.join("work")).unwrap();
    bundle.write_config(&build(&spec).unwrap()).unwrap();
    let out = cdir.join("stdout");
    let pid_file = cdir.join("pid");
    env.runc
        .create(
            "life",
            &bundle.dir,
            &pid_file,
            None,
            ContainerStdio {
                stdin: Some(Stdio::null()),
                stdout: Some(fs::File::create(&out).unwrap().into()),
                stderr: Some(Stdio::null()),
            },
        )
        .unwrap();
    let st = env.runc.state("life").unwrap();
    assert_eq!(st.status, Status::Created);
    let pid: i32 = fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert_eq!(st.pid, pid);
    // The container's cgroup exists where the spec said.
    let cg = cgroups_path(CGROUP_PARENT, "life");
    let procs = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(procs.contains(&cg), "{procs}");

    env.runc.start("life").unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if fs::read_to_string(&out).unwrap_or_default().contains("started") {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ok, "container never printed");
    assert_eq!(env.runc.state("life").unwrap().status, Status::Running);
    env.runc.pause("life").unwrap();
    assert_eq!(env.runc.state("life").unwrap().status, Status::Paused);
    env.runc.resume("life").unwrap();

    // A second create with the same id fails with runc's own message.
    let err = env
        .runc
        .create("life", &bundle.dir, &cdir.join("pid2"), None, ContainerStdio::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("life") && err.contains("exist"), "{err}");

    env.runc.kill("life", 9, false).unwrap();
    let mut stopped = false;
    for _ in 0..100 {
        if env.runc.state("life").unwrap().status == Status::Stopped {
            stopped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(stopped);
    env.runc.delete("life", false).unwrap();
    assert!(env.runc.state("life").is_err());
    bundle.remove(&SysMounter).unwrap();
}
