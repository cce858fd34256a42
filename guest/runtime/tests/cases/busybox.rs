// Runs real containers with an OCI runtime over an overlay-mounted busybox rootfs; included
// by one test crate per runtime (runc, berth-oci), each defining `fn runc_binary()` first.
// Needs root and a static busybox (Debian's busybox-static); skipped (with a message) otherwise.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use berth_runtime::bundle::{Bundle, SysMounter};
use berth_runtime::runc::{ContainerStdio, OciRuntime, Runc, Status};
use berth_runtime::spec::{build, cgroups_path, ContainerSpec, NetworkMode};
use berth_runtime::user;

const BUSYBOX: &str = "/bin/busybox";

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    if runc_binary().is_none() {
        return Some("runc not installed".into());
    }
    assert!(runc_binary().unwrap().exists(), "{} is missing (build the workspace's binaries first)", runc_binary().unwrap().display());
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
    for applet in [
        "sh", "echo", "cat", "grep", "dd", "sleep", "seq", "id", "head", "ls", "touch", "unshare",
        "hostname",
    ] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\nstaff:x:50:app\n").unwrap();
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
    /// Per test: a shared parent could be removed by one test's cleanup
    /// while runc is creating another test's cgroup under it.
    cgroup_parent: String,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        let layer = base.join("layer");
        busybox_layer(&layer);
        let runc = Runc::new(runc_binary().unwrap(), base.join("runc-state"));
        let cgroup_parent = format!(
            "berth-runtime-test-{}",
            base.file_name()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches('.')
        );
        Env {
            _tmp: tmp,
            base,
            runc,
            layer,
            cgroup_parent,
        }
    }

    fn spec(&self, id: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            id: id.into(),
            rootfs: self.base.join(id).join("bundle/rootfs"),
            args: vec!["sh".into(), "-c".into(), script.into()],
            hostname: id.into(),
            network: NetworkMode::Private,
            cgroup_parent: self.cgroup_parent.clone(),
            ..Default::default()
        }
    }

    /// Writes the bundle, mounts the overlay, runs the container in the
    /// foreground, then unmounts and removes everything.
    fn run(&self, spec: &ContainerSpec) -> Outcome {
        let cdir = self.base.join(&spec.id);
        let bundle = Bundle::create(cdir.join("bundle")).unwrap();
        bundle
            .mount_rootfs(
                &SysMounter,
                std::slice::from_ref(&self.layer),
                &cdir.join("upper"),
                &cdir.join("work"),
            )
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
                let _ = Bundle {
                    dir: entry.path().join("bundle"),
                }
                .unmount_rootfs(&SysMounter);
            }
        }
        // runc delete removes each container's cgroup; the parent is ours too.
        for ctl in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = fs::remove_dir(ctl.path().join(&self.cgroup_parent));
        }
        let _ = fs::remove_dir(Path::new("/sys/fs/cgroup").join(&self.cgroup_parent));
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
    let o = env.run(&env.spec(
        "caps",
        "echo hi; grep -E 'Cap|SigIgn|SigBlk' /proc/self/status; hostname 2>/dev/null; id",
    ));
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    assert!(o.stdout.starts_with("hi\n"), "{}", o.stdout);
    assert_eq!(status_line(&o.stdout, "CapEff:"), "00000000a80425fb");
    assert_eq!(status_line(&o.stdout, "CapPrm:"), "00000000a80425fb");
    assert_eq!(status_line(&o.stdout, "CapBnd:"), "00000000a80425fb");
    assert_eq!(status_line(&o.stdout, "CapInh:"), "0000000000000000");
    assert_eq!(status_line(&o.stdout, "CapAmb:"), "0000000000000000");
    // SIGPIPE is not ignored (a runtime written in Rust inherits it ignored unless it resets
    // it; `yes | head` would then spin) and nothing is blocked. (Other ignored signals depend
    // on what started the test: runc passes its parent's through.)
    let ign = u64::from_str_radix(status_line(&o.stdout, "SigIgn:"), 16).unwrap();
    assert_eq!(ign & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE ignored in the container");
    assert_eq!(status_line(&o.stdout, "SigBlk:"), "0000000000000000");

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
    assert!(
        o.stdout.contains("dd-ok"),
        "control run: {} {}",
        o.stdout,
        o.stderr
    );
    let mut s = env.spec("memlimit", script);
    s.memory = Some(32 << 20);
    s.memory_swap = Some(32 << 20);
    let o = env.run(&s);
    assert!(!o.stdout.contains("dd-ok"), "{}", o.stdout);
    assert_eq!(
        o.code,
        Some(137),
        "dd should die of SIGKILL; stderr: {}",
        o.stderr
    );

    // Pids limit: a fork loop stops at the limit instead of reaching 50.
    let script = "n=0; while [ $n -lt 50 ]; do sleep 30 & n=$((n+1)); echo $n; done";
    let mut s = env.spec("pids", script);
    s.pids_limit = Some(10);
    let o = env.run(&s);
    let last: u32 = o.stdout.lines().last().unwrap_or("0").parse().unwrap();
    assert!(
        (1..10).contains(&last),
        "forks: {last}, stderr: {}",
        o.stderr
    );
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
    bundle
        .mount_rootfs(
            &SysMounter,
            std::slice::from_ref(&env.layer),
            &cdir.join("upper"),
            &cdir.join("work"),
        )
        .unwrap();
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
    let pid: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(st.pid, pid);
    // The container's cgroup exists where the spec said.
    let cg = cgroups_path(&env.cgroup_parent, "life");
    let procs = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(procs.contains(&cg), "{procs}");

    env.runc.start("life").unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("started")
        {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ok, "container never printed");
    assert_eq!(env.runc.state("life").unwrap().status, Status::Running);
    // exec with the container's own process settings and other args, as
    // `docker exec` does.
    let mut process = build(&spec).unwrap().process().clone().unwrap();
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "echo exec-ok; grep CapEff /proc/self/status; exit 3".into(),
    ]));
    let exec_out = cdir.join("exec-out");
    let status = env
        .runc
        .exec(
            "life",
            &process,
            false,
            None,
            None,
            ContainerStdio {
                stdin: Some(Stdio::null()),
                stdout: Some(fs::File::create(&exec_out).unwrap().into()),
                stderr: Some(Stdio::null()),
            },
        )
        .unwrap();
    assert_eq!(status.code(), Some(3));
    let text = fs::read_to_string(&exec_out).unwrap();
    assert!(text.starts_with("exec-ok\n"), "{text}");
    assert_eq!(status_line(&text, "CapEff:"), "00000000a80425fb");

    env.runc.pause("life").unwrap();
    assert_eq!(env.runc.state("life").unwrap().status, Status::Paused);
    env.runc.resume("life").unwrap();

    // A second create with the same id fails with runc's own message.
    let err = env
        .runc
        .create(
            "life",
            &bundle.dir,
            &cdir.join("pid2"),
            None,
            ContainerStdio {
                stdin: Some(Stdio::null()),
                stdout: Some(Stdio::null()),
                stderr: Some(Stdio::null()),
            },
        )
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

/// Seccomp, network modes, users and a read-only rootfs, each checked
/// against its opposite so every assertion can fail.
#[test]
fn runc_security_and_modes() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping runc integration test: {why}");
        return;
    }
    let env = Env::new();

    // unshare(CLONE_NEWUSER) needs no capability, so only seccomp stops it.
    let script = "unshare -U true && echo userns-ok";
    let o = env.run(&env.spec("seccomp-on", script));
    assert!(!o.stdout.contains("userns-ok"), "{}", o.stdout);
    assert!(o.stderr.contains("not permitted"), "{}", o.stderr);
    // The same syscall is allowed by the profile once CAP_SYS_ADMIN is granted.
    let mut s = env.spec("seccomp-admin", script);
    s.cap_add = vec!["SYS_ADMIN".into()];
    let o = env.run(&s);
    assert!(o.stdout.contains("userns-ok"), "{} {}", o.stdout, o.stderr);
    let mut s = env.spec("seccomp-off", script);
    s.seccomp_unconfined = true;
    let o = env.run(&s);
    assert!(o.stdout.contains("userns-ok"), "{} {}", o.stdout, o.stderr);

    // Private network: loopback only. Host: the host's interfaces.
    let script = "ls /sys/class/net; hostname";
    let o = env.run(&env.spec("netpriv", script));
    assert_eq!(o.stdout, "lo\nnetpriv\n", "{}", o.stderr);
    let mut s = env.spec("nethost", script);
    s.network = NetworkMode::Host;
    let o = env.run(&s);
    let host_ifaces = fs::read_dir("/sys/class/net").unwrap().count();
    assert_eq!(
        o.stdout.lines().count(),
        host_ifaces + 1,
        "{} {}",
        o.stdout,
        o.stderr
    );

    // A user resolved from the image's passwd: ids applied, no capabilities.
    let resolved = user::resolve(&env.layer, "app", &["root".into()]).unwrap();
    let mut s = env.spec(
        "asuser",
        "id -u; id -G; grep CapEff /proc/self/status; touch /tmp/x && echo wrote",
    );
    s.user = resolved.user;
    s.env = vec![format!("HOME={}", resolved.home)];
    let o = env.run(&s);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0], "1000", "{} {}", o.stdout, o.stderr);
    let mut groups: Vec<&str> = lines[1].split_whitespace().collect();
    groups.sort();
    assert_eq!(groups, vec!["0", "1000", "50"]);
    assert_eq!(status_line(&o.stdout, "CapEff:"), "0000000000000000");

    // Read-only rootfs: writes fail, tmpfs mounts still work.
    let script =
        "touch /rootfs-file && echo rootfs-writable; touch /scratch/f && echo tmpfs-writable";
    let mut s = env.spec("ro", script);
    s.readonly_rootfs = true;
    s.tmpfs = vec![("/scratch".into(), "size=1m".into())];
    let o = env.run(&s);
    assert_eq!(o.stdout, "tmpfs-writable\n", "{}", o.stderr);
    let mut s = env.spec("rw", script);
    s.tmpfs = vec![("/scratch".into(), String::new())];
    let o = env.run(&s);
    assert_eq!(
        o.stdout, "rootfs-writable\ntmpfs-writable\n",
        "{}",
        o.stderr
    );
}
