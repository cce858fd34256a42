//! Issue 9: runtime escapes and the host boundary, through berthd and its default runtime
//! (berth-oci) with the real docker CLI: checklist #14, #15, #20, #21, #22, #24 and #25 (see
//! tests/RELIABILITY.md). The hostile programs are compiled from C at test time
//! (`berth_tests::probe`), the hostile images are built in code and pushed to the test registry.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_tests::berthd::Berthd;
use berth_tests::fixtures::Fixtures;
use berth_tests::image::{self, Compression, Image, LayerBuilder, RunConfig};
use berth_tests::probe;
use berth_tests::push::ManifestFormat;
use berth_tests::require_berthd;

/// Busybox plus one layer built by `add`, with the image config edited by `edit`; pushed as
/// `repo:latest` and pulled. Returns the reference.
fn hostile_image(
    fx: &Fixtures,
    d: &Berthd,
    repo: &str,
    add: impl FnOnce(&mut LayerBuilder),
    edit: impl FnOnce(&mut serde_json::Value),
) -> String {
    let mut b = LayerBuilder::new();
    add(&mut b);
    let layer = b.finish(Compression::Gzip, &format!("hostile layer of {repo}")).unwrap();
    let base = Image::new(vec![image::busybox_layer().unwrap(), layer], &RunConfig::cmd(&["sh"]), "amd64").unwrap();
    let mut doc: serde_json::Value = serde_json::from_slice(&base.config).unwrap();
    edit(&mut doc["config"]);
    let config = serde_json::to_vec(&doc).unwrap();
    let img = Image { config_digest: berth_tests::sha256_digest(&config), config, ..base };
    fx.plain_target().push_image(repo, "latest", &img, ManifestFormat::DockerSchema2).unwrap();
    let r = fx.reference(&format!("{repo}:latest"));
    d.docker_ok(&["pull", "-q", &r]);
    r
}

fn file_bytes(b: &mut LayerBuilder, path: &str, mode: u32, data: &[u8]) {
    b.file(path, mode, data).unwrap();
}

fn sha256_file(p: &Path) -> String {
    berth_tests::sha256_digest(&std::fs::read(p).unwrap())
}

/// The berth-oci that berthd would run by default (next to the berthd binary under test).
fn berth_oci() -> PathBuf {
    berth_tests::berthd::berthd_binary().with_file_name("berth-oci")
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `docker cp c:path` into a temp dir; the file's text if it exists.
fn read_from_container(d: &Berthd, c: &str, path: &str) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = d.docker(&["cp", &format!("{c}:{path}"), &dir.path().display().to_string()]);
    if !out.success() {
        return None;
    }
    let name = Path::new(path).file_name().unwrap();
    std::fs::read_to_string(dir.path().join(name)).ok()
}

/// #20 (CVE-2019-5736): a container that runs `#!/proc/self/exe` makes the kernel execute the
/// runtime binary inside the container, where its loader is the image's (a hostile
/// /lib64/ld-linux-x86-64.so.2). That code holds the host binary open and reopens it for
/// writing once the runtime is gone. Both ways in are tried: `docker exec` into a running
/// container, and a hostile image's own entrypoint. berth-oci re-executes itself from a
/// read-only mount first, so the reopen fails with EROFS and the binary is unchanged.
///
/// The daemon runs a private copy of berth-oci (`BERTH_RUNTIME`), so a regression corrupts
/// only that copy. Without the protection this test reports "overwritten" (checked by hand).
#[test]
fn runtime_binary_cannot_be_overwritten_from_a_container() {
    require_berthd!();
    let p = probe::probes().expect("compile the probes (needs cc and libc6-dev)");
    let interp = probe::elf_interpreter(&berth_oci()).unwrap();
    assert_eq!(
        interp.as_deref(),
        Some("/lib64/ld-linux-x86-64.so.2"),
        "the exploit enters through the runtime's ELF loader; berth-oci is expected to be a dynamic binary here"
    );
    let rt_dir = tempfile::Builder::new().prefix("berth-esc-rt-").tempdir().unwrap();
    let runtime = rt_dir.path().join("berth-oci");
    std::fs::copy(berth_oci(), &runtime).unwrap();
    let before = sha256_file(&runtime);

    let fx = Fixtures::start().expect("fixtures");
    let d = Berthd::start_with_env(&fx.ns, &[fx.registry.addr()], &[], &[("BERTH_RUNTIME", runtime.to_str().unwrap())]).expect("berthd");
    let (probe_bin, fake_ld) = (probe::read(&p.probe).unwrap(), probe::read(&p.fake_ld).unwrap());
    let img = hostile_image(
        &fx,
        &d,
        "exe-attack",
        |b| {
            file_bytes(b, "probe", 0o755, &probe_bin);
            b.dir("lib64", 0o755).unwrap();
            file_bytes(b, "lib64/ld-linux-x86-64.so.2", 0o755, &fake_ld);
            file_bytes(b, "evil", 0o755, b"#!/proc/self/exe\n");
        },
        |_| {},
    );

    // 1. docker exec into a running container.
    d.docker_ok(&["run", "-d", "--name", "victim", &img, "sleep", "600"]);
    let out = d.docker(&["exec", "victim", "/evil"]);
    let result = wait_for("the exec exploit's result", Duration::from_secs(60), || read_from_container(&d, "victim", "/exploit-result"));
    assert!(result.starts_with("refused EROFS"), "exec path: {result:?} (exec: {out:?})");
    assert_eq!(sha256_file(&runtime), before, "the runtime binary changed through docker exec");
    // The runtime still works.
    assert_eq!(d.docker_ok(&["exec", "victim", "echo", "alive"]), "alive\n");

    // 2. The hostile image's entrypoint (pid 1 becomes the writer).
    d.docker_ok(&["run", "-d", "--name", "hostile", "--entrypoint", "/evil", &img]);
    let logs = wait_for("the entrypoint exploit's result", Duration::from_secs(60), || {
        let l = d.docker(&["logs", "hostile"]);
        let all = format!("{}{}", l.stdout, l.stderr);
        (all.contains("overwritten") || all.contains("refused")).then_some(all)
    });
    assert!(logs.contains("refused EROFS"), "entrypoint path: {logs}");
    assert_eq!(sha256_file(&runtime), before, "the runtime binary changed through a hostile entrypoint");
    assert_eq!(d.docker_ok(&["run", "--rm", &img, "echo", "still-works"]), "still-works\n");
    drop(d);
    drop(fx);
}

/// Parse `probe syscalls` output into (name, result) pairs.
fn syscall_results(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// #25 (and #24's /proc/sysrq-trigger): inside a default container the escape syscalls fail
/// with EPERM, Docker's masked paths are the null device or an empty read-only tmpfs, and the
/// read-only paths refuse writes. The positive controls show each check can fail: with
/// `seccomp=unconfined` the seccomp-only calls succeed, and `--privileged` unmasks /proc/keys.
#[test]
fn default_container_blocks_escape_syscalls_and_masks_kernel_files() {
    require_berthd!();
    let p = probe::probes().expect("compile the probes");
    let fx = Fixtures::start().expect("fixtures");
    let d = Berthd::start(&fx.ns, &[fx.registry.addr()]).expect("berthd");
    let probe_bin = probe::read(&p.probe).unwrap();
    let img = hostile_image(&fx, &d, "probe", |b| file_bytes(b, "probe", 0o755, &probe_bin), |_| {});

    let r = syscall_results(&d.docker_ok(&["run", "--rm", &img, "/probe", "syscalls"]));
    for name in ["keyctl", "add_key", "bpf", "mount", "unshare_user", "socket_vsock", "finit_module", "perf_event_open", "open_by_handle_at"] {
        assert_eq!(r.get(name).map(String::as_str), Some("EPERM"), "{name} in a default container: {r:?}");
    }
    let status = d.docker_ok(&["run", "--rm", &img, "cat", "/proc/self/status"]);
    assert!(status.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Seccomp:", "2"]), "{status}");
    // Control: the same probe unconfined reaches the kernel (mount and bpf still need caps).
    let u = syscall_results(&d.docker_ok(&["run", "--rm", "--security-opt", "seccomp=unconfined", &img, "/probe", "syscalls"]));
    for name in ["keyctl", "add_key", "unshare_user"] {
        assert_eq!(u.get(name).map(String::as_str), Some("ok"), "{name} unconfined: {u:?}");
    }
    assert_eq!(u.get("mount").map(String::as_str), Some("EPERM"), "{u:?}");

    // Masked files: the null device, bound by inode; masked dirs: empty read-only tmpfs.
    let script = r#"
for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/latency_stats /proc/timer_stats /proc/interrupts; do
  [ -e $f ] && echo "$f $(stat -c '%F %t:%T' $f) size=$(head -c 64 $f | wc -c)"
done
for d in /proc/acpi /proc/scsi /proc/asound /sys/firmware; do
  [ -e $d ] && { echo "$d entries=$(ls -A $d | wc -l)"; touch $d/x 2>&1 | sed "s|^|$d |"; }
done
echo h 2>&1 > /proc/sysrq-trigger | sed 's|^|sysrq |'
echo berth 2>&1 > /proc/sys/kernel/domainname | sed 's|^|procsys |'
grep -E ' /proc/(bus|fs|irq|sys|sysrq-trigger) ' /proc/self/mountinfo | awk '{print "ro-mount", $5, $6}'
"#;
    let out = d.docker_ok(&["run", "--rm", &img, "sh", "-c", script]);
    // Each masked file the host kernel has is there, and is the null device. (This CI kernel
    // has no /proc/kcore and no /proc/sysrq-trigger; where they exist they are checked too.)
    let masked_files = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats", "/proc/timer_stats", "/proc/interrupts"];
    let mut checked = 0;
    for f in masked_files.iter().filter(|f| Path::new(f).exists()) {
        let line = out.lines().find(|l| l.starts_with(&format!("{f} "))).unwrap_or_else(|| panic!("{f} missing in the container: {out}"));
        assert_eq!(*line, format!("{f} character special file 1:3 size=0"), "{f} is not masked: {out}");
        checked += 1;
    }
    assert!(checked >= 2, "too few masked files to check on this host: {out}");
    for dir in ["/proc/acpi", "/proc/scsi", "/proc/asound", "/sys/firmware"].iter().filter(|d| Path::new(d).is_dir()) {
        assert!(out.lines().any(|l| l == format!("{dir} entries=0")), "{dir} is not an empty tmpfs: {out}");
        assert!(out.lines().any(|l| l.starts_with(&format!("{dir} ")) && l.contains("Read-only file system")), "{dir} is writable: {out}");
    }
    if Path::new("/proc/sysrq-trigger").exists() {
        assert!(out.lines().any(|l| l.starts_with("sysrq ") && l.contains("Read-only file system")), "/proc/sysrq-trigger writable: {out}");
    } else {
        eprintln!("note: this kernel has no /proc/sysrq-trigger; its read-only check did not run");
    }
    assert!(out.lines().any(|l| l.starts_with("procsys ") && l.contains("Read-only file system")), "/proc/sys writable: {out}");
    for p in ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"] {
        if Path::new(p).exists() {
            assert!(out.lines().any(|l| l.starts_with(&format!("ro-mount {p} ro,"))), "{p} is not a read-only mount: {out}");
        }
    }
    // Control: --privileged has no masks, so the same check sees the real /proc/keys.
    let prv = d.docker(&["run", "--rm", "--privileged", &img, "stat", "-c", "%F", "/proc/keys"]);
    if prv.success() {
        assert_ne!(prv.stdout.trim(), "character special file", "privileged containers are unmasked");
    } else {
        eprintln!("note: --privileged not available here: {}", prv.stderr);
    }
    drop(d);
    drop(fx);
}

/// #24 (CVE-2025-31133 and relatives): the nodes of /dev are created inside the rootfs even when
/// the image makes /dev a symlink to a host path, and a /dev/null that is a symlink (planted in
/// a volume mounted over /dev) is never what masks /proc/keys (or /proc/kcore).
#[test]
fn dev_symlinks_cannot_redirect_device_nodes_or_masking() {
    require_berthd!();
    let fx = Fixtures::start().expect("fixtures");
    let d = Berthd::start(&fx.ns, &[fx.registry.addr()]).expect("berthd");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let unique = format!("berth-esc-dev-{}-{nanos}", std::process::id());
    let host_target = PathBuf::from("/tmp").join(&unique);
    let img = hostile_image(
        &fx,
        &d,
        "devlink",
        |b| {
            b.dir("tmp", 0o1777).unwrap();
            b.dir(&format!("tmp/{unique}"), 0o755).unwrap();
            b.symlink("dev", &host_target.display().to_string()).unwrap();
        },
        |_| {},
    );
    // The host directory exists (as /etc would): a runtime that joins paths onto the rootfs's
    // host path follows the link and fills it.
    std::fs::create_dir(&host_target).unwrap();
    let out = d.docker(&["run", "--rm", &img, "sh", "-c", "stat -c '%F %t:%T' /dev/null; stat -c '%F %t:%T' /proc/keys"]);
    let leaked: Vec<String> = std::fs::read_dir(&host_target).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let _ = std::fs::remove_dir_all(&host_target);
    assert!(leaked.is_empty(), "device nodes were created on the host in {}: {leaked:?} ({out:?})", host_target.display());
    if out.success() {
        assert_eq!(out.stdout, "character special file 1:3\ncharacter special file 1:3\n", "{out:?}");
    }

    // A volume over /dev whose `null` is a symlink to a host-sensitive file.
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    d.docker_ok(&["run", "--rm", "-v", "devvol:/v", &img, "sh", "-c", "ln -s /proc/sys/kernel/core_pattern /v/null && ln -s /proc/sysrq-trigger /v/zero"]);
    let out = d.docker(&["run", "--rm", "-v", "devvol:/dev", &img, "sh", "-c", "stat -c '%F %t:%T' /proc/keys; echo x > /proc/keys; cat /proc/sys/kernel/core_pattern"]);
    if out.success() {
        assert!(out.stdout.starts_with("character special file 1:3\n"), "/proc/keys masked by something else: {out:?}");
    } else {
        assert!(out.stderr.contains("null") || out.stderr.contains("File exists"), "unclear refusal: {out:?}");
    }
    assert_eq!(std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(), core_pattern);
    drop(d);
    drop(fx);
}

/// #22 (CVE-2019-16884, CVE-2023-28642): an image that declares a volume over /proc or /sys,
/// or whose /proc or /sys is a symlink, does not start, with a clear error.
#[test]
fn image_volumes_over_proc_and_proc_symlinks_are_refused() {
    require_berthd!();
    let fx = Fixtures::start().expect("fixtures");
    let d = Berthd::start(&fx.ns, &[fx.registry.addr()]).expect("berthd");
    for (repo, vol) in [("vol-proc", "/proc"), ("vol-proc-sub", "/proc/sys"), ("vol-sys", "/sys/fs"), ("vol-proc-dots", "/x/../proc")] {
        let img = hostile_image(&fx, &d, repo, |_| {}, |c| c["Volumes"] = serde_json::json!({ vol: {} }));
        let out = d.docker(&["run", "--rm", &img, "true"]).assert_fail();
        assert!(out.stderr.contains("/proc") || out.stderr.contains("/sys"), "VOLUME {vol}: {}", out.stderr);
    }
    for (repo, link, target) in [("proc-link", "proc", "/tmp/fakeproc"), ("proc-link-root", "proc", "/"), ("sys-link", "sys", "/tmp/fakesys")] {
        let img = hostile_image(
            &fx,
            &d,
            repo,
            |b| {
                b.dir("tmp", 0o1777).unwrap();
                b.dir("tmp/fakeproc", 0o755).unwrap();
                b.dir("tmp/fakesys", 0o755).unwrap();
                b.symlink(link, target).unwrap();
            },
            |_| {},
        );
        let out = d.docker(&["run", "--rm", &img, "cat", "/proc/self/status"]).assert_fail();
        assert!(out.stderr.contains("symlink"), "/{link} -> {target}: {}", out.stderr);
    }
    // The plain image still runs: the refusals are about the hostile parts.
    let ok = hostile_image(&fx, &d, "plain", |_| {}, |_| {});
    d.docker_ok(&["run", "--rm", &ok, "true"]);
    drop(d);
    drop(fx);
}

/// #21 (CVE-2024-21626): a working directory through a leaked descriptor never lands on the
/// host. To make the leak real, the daemon's runtime is a wrapper that opens a host directory
/// on fd 7 before it runs berth-oci (as runc once leaked a cgroup directory): `WORKDIR
/// /proc/self/fd/7` and `docker exec -w` then must still fail, and the container sees only its
/// own descriptors. Every N in 3..64 is tried.
#[test]
fn workdir_through_leaked_fds_never_reaches_the_host() {
    require_berthd!();
    let host_dir = tempfile::Builder::new().prefix("berth-esc-hostdir-").tempdir().unwrap();
    std::fs::write(host_dir.path().join("HOST-MARKER"), "host").unwrap();
    let wrap_dir = tempfile::Builder::new().prefix("berth-esc-wrap-").tempdir().unwrap();
    // Named berth-oci so berthd keeps the same state root naming.
    let wrapper = wrap_dir.path().join("berth-oci");
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec 7<{}\nexec {} \"$@\"\n", host_dir.path().display(), berth_oci().display())).unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let fx = Fixtures::start().expect("fixtures");
    let d = Berthd::start_with_env(&fx.ns, &[fx.registry.addr()], &[], &[("BERTH_RUNTIME", wrapper.to_str().unwrap())]).expect("berthd");
    let img = fx.reference("busybox:latest");
    d.docker_ok(&["pull", "-q", &img]);

    // Whatever the runtime had open stays out of the container.
    let fds = d.docker_ok(&["run", "--rm", &img, "ls", "/proc/self/fd"]);
    let mut fds: Vec<u32> = fds.split_whitespace().map(|s| s.parse().unwrap()).collect();
    fds.sort();
    assert_eq!(fds, [0, 1, 2, 3], "only stdio and ls's own directory fd may be open in the container");

    for n in 3..64 {
        let wd = format!("/proc/self/fd/{n}");
        let out = d.docker(&["run", "--rm", "-w", &wd, &img, "sh", "-c", "pwd; ls -a"]);
        assert!(!out.stdout.contains("HOST-MARKER"), "-w {wd} reached the host directory: {out:?}");
        if n == 7 {
            let out = out.assert_fail();
            assert!(out.stderr.contains("outside of the container root"), "-w {wd}: {}", out.stderr);
        } else if out.success() {
            assert!(!out.stdout.starts_with("(unreachable)"), "-w {wd}: {out:?}");
        }
    }
    let hostile = hostile_image(&fx, &d, "workdir-fd", |_| {}, |c| c["WorkingDir"] = serde_json::json!("/proc/self/fd/7"));
    let out = d.docker(&["run", "--rm", &hostile, "ls", "-a"]).assert_fail();
    assert!(!out.stdout.contains("HOST-MARKER") && out.stderr.contains("outside of the container root"), "{out:?}");

    d.docker_ok(&["run", "-d", "--name", "fdc", &img, "sleep", "600"]);
    let out = d.docker(&["exec", "-w", "/proc/self/fd/7", "fdc", "ls", "-a"]).assert_fail();
    assert!(!out.stdout.contains("HOST-MARKER"), "{out:?}");
    let fds = d.docker_ok(&["exec", "fdc", "ls", "/proc/self/fd"]);
    assert!(!fds.split_whitespace().any(|f| f == "7"), "the leaked fd reached an exec'd process: {fds}");
    drop(d);
    drop(fx);
}

/// Listening TCP ports (IPv4 and IPv6) of the netns `pid` lives in whose sockets `pid` owns.
fn listening_ports_of(pid: u32) -> Vec<(String, u16)> {
    let mut inodes = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if let Ok(t) = std::fs::read_link(e.path()) {
            if let Some(i) = t.to_str().and_then(|s| s.strip_prefix("socket:[")).and_then(|s| s.strip_suffix(']')) {
                inodes.insert(i.to_string());
            }
        }
    }
    let mut out = Vec::new();
    for f in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).unwrap_or_default();
        for l in text.lines().skip(1) {
            let c: Vec<&str> = l.split_whitespace().collect();
            if c.len() > 9 && c[3] == "0A" && inodes.contains(c[9]) {
                let (addr, port) = c[1].rsplit_once(':').unwrap();
                out.push((addr.to_string(), u16::from_str_radix(port, 16).unwrap()));
            }
        }
    }
    out
}

/// #15 (CVE-2025-9074): from a container on the default bridge and on a user network, a scan of
/// every TCP port of every address berthd's namespace has finds no Engine API. berthd listens
/// on no TCP port at all but the published one, binds no abstract unix socket (reachable from
/// `--network host` containers), and no socket appears inside a container; AF_VSOCK is refused
/// (see the syscall test). Control: a decoy that answers `/_ping` like the API, published on a
/// port, is found by the same scan, so the scan does reach the host side.
#[test]
fn engine_api_is_unreachable_from_container_networks() {
    require_berthd!();
    let p = probe::probes().expect("compile the probes");
    let fx = Fixtures::start().expect("fixtures");
    let d = Berthd::start(&fx.ns, &[fx.registry.addr()]).expect("berthd");
    let probe_bin = probe::read(&p.probe).unwrap();
    let img = hostile_image(
        &fx,
        &d,
        "scanner",
        |b| {
            file_bytes(b, "probe", 0o755, &probe_bin);
            b.dir("www", 0o755).unwrap();
            file_bytes(b, "www/_ping", 0o644, b"OK");
        },
        |_| {},
    );
    let decoy_port = fx.ns.free_port().unwrap();
    d.docker_ok(&["network", "create", "escnet"]);
    d.docker_ok(&["run", "-d", "--name", "decoy", "-p", &format!("{decoy_port}:80"), &img, "httpd", "-f", "-p", "80", "-h", "/www"]);

    let addrs_out = fx.ns.command("ip").args(["-4", "-o", "addr", "show"]).output().unwrap();
    let addrs: Vec<String> = String::from_utf8_lossy(&addrs_out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .map(|a| a.split('/').next().unwrap().to_string())
        .collect();
    let gateways: Vec<&String> = addrs.iter().filter(|a| !a.starts_with("127.")).collect();
    assert!(gateways.len() >= 2, "bridge and escnet gateways expected: {addrs:?}");

    for net in ["bridge", "escnet"] {
        let mut args = vec!["run", "--rm", "--network", net, img.as_str(), "/probe", "scan"];
        args.extend(addrs.iter().map(String::as_str));
        args.push("127.0.0.11");
        let t = Instant::now();
        let out = d.docker_ok(&args);
        eprintln!("scan of {} addresses from {net}: {:?}", addrs.len() + 1, t.elapsed());
        assert!(out.contains("scan-done"), "{out}");
        let api: Vec<&str> = out.lines().filter(|l| l.starts_with("api ")).collect();
        // The decoy is found on the gateway of the scanning container's network at least.
        assert!(api.iter().any(|l| l.ends_with(&format!(":{decoy_port}"))), "the decoy was not found from {net}: {out}");
        for l in &api {
            assert!(l.ends_with(&format!(":{decoy_port}")), "something answers like the Engine API from {net}: {l}\n{out}");
        }
    }

    // berthd's own sockets: TCP listeners only for published ports; unix sockets named (under its
    // root), never abstract.
    let pid = d.pid().unwrap();
    let listening = listening_ports_of(pid);
    assert!(listening.iter().all(|(_, port)| *port == decoy_port), "berthd listens on TCP: {listening:?}");
    let inodes: std::collections::BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| t.to_str().and_then(|s| s.strip_prefix("socket:[")).and_then(|s| s.strip_suffix(']')).map(str::to_string))
        .collect();
    let unix = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap();
    for l in unix.lines().skip(1) {
        let c: Vec<&str> = l.split_whitespace().collect();
        if c.len() >= 8 && inodes.contains(c[6]) {
            assert!(!c[7].starts_with('@'), "berthd has an abstract unix socket (reachable with --network host): {l}");
            assert!(Path::new(c[7]).starts_with(d.root()), "berthd socket outside its root: {l}");
        }
    }
    // Nothing of the daemon inside a container: no sockets, no docker.sock mount.
    let inside = d.docker_ok(&["run", "--rm", &img, "sh", "-c", "find / -xdev -type s 2>/dev/null; grep -i sock /proc/self/mountinfo; true"]);
    assert_eq!(inside.trim(), "", "sockets visible inside a container: {inside}");
    drop(d);
    drop(fx);
}

/// The host files a glibc program needs, with the paths they have inside the image.
fn glibc_files(bin: &str) -> Vec<(String, PathBuf)> {
    let out = std::process::Command::new("ldd").arg(bin).output().unwrap();
    let mut v = vec![(bin.trim_start_matches('/').to_string(), PathBuf::from(bin))];
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let path = l.split_whitespace().find(|w| w.starts_with('/'));
        if let Some(p) = path {
            v.push((p.trim_start_matches('/').to_string(), std::fs::canonicalize(p).unwrap()));
        }
    }
    v
}

/// #14 (CVE-2019-14271): `docker cp` (both ways, running and stopped, with -a), `exec -u`,
/// `run -u`, `top`, `diff` and `export` on a container whose nsswitch.conf names a hostile NSS
/// module never load it into a daemon process: berthd reads the container's files itself and
/// runs no code of the container. Control: a glibc program inside the container does load it.
#[test]
fn docker_cp_never_loads_the_containers_libraries() {
    require_berthd!();
    let p = probe::probes().expect("compile the probes");
    let fx = Fixtures::start().expect("fixtures");
    let d = Berthd::start(&fx.ns, &[fx.registry.addr()]).expect("berthd");
    let nss = probe::read(&p.nss_evil).unwrap();
    let libs = glibc_files("/usr/bin/getent");
    let img = hostile_image(
        &fx,
        &d,
        "nss-evil",
        |b| {
            let mut dirs = std::collections::BTreeSet::new();
            for (inside, _) in &libs {
                let mut cur = PathBuf::new();
                for c in Path::new(inside).parent().unwrap().components() {
                    cur.push(c);
                    dirs.insert(cur.display().to_string());
                }
            }
            dirs.insert("lib".into());
            dirs.insert("lib/x86_64-linux-gnu".into());
            dirs.insert("data".into());
            dirs.insert("etc".into());
            for dir in &dirs {
                b.dir(dir, 0o755).unwrap();
            }
            for (inside, host) in &libs {
                file_bytes(b, inside, 0o755, &std::fs::read(host).unwrap());
            }
            for l in ["lib/x86_64-linux-gnu/libnss_berthevil.so.2", "lib/libnss_berthevil.so.2"] {
                file_bytes(b, l, 0o755, &nss);
            }
            file_bytes(b, "etc/nsswitch.conf", 0o644, b"passwd: berthevil files\ngroup: berthevil files\nhosts: berthevil files\n");
            file_bytes(b, "etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\nalice:x:1234:1234::/tmp:/bin/sh\n");
            file_bytes(b, "etc/group", 0o644, b"root:x:0:\nalice:x:1234:\n");
            file_bytes(b, "data/f", 0o644, b"payload\n");
        },
        |_| {},
    );
    // Control: glibc inside the container loads the module.
    let ctl = d.docker(&["run", "--rm", &img, "/usr/bin/getent", "passwd", "alice"]);
    assert!(ctl.stderr.contains("BERTH-NSS-EVIL-LOADED"), "the fixture's NSS module is not loaded by glibc: {ctl:?}");

    d.docker_ok(&["run", "-d", "--name", "cpc", &img, "sleep", "600"]);
    let host = tempfile::tempdir().unwrap();
    let h = |p: &str| host.path().join(p).display().to_string();
    std::fs::write(host.path().join("up"), "up\n").unwrap();
    for round in ["running", "stopped"] {
        d.docker_ok(&["cp", "cpc:/data/f", &h(&format!("f-{round}"))]);
        d.docker_ok(&["cp", "-a", "cpc:/data", &h(&format!("data-{round}"))]);
        d.docker_ok(&["cp", &h("up"), &format!("cpc:/data/up-{round}")]);
        d.docker_ok(&["cp", "-a", &h("up"), &format!("cpc:/data/upa-{round}")]);
        d.docker_ok(&["diff", "cpc"]);
        let (status, _, err) = d.docker_bytes(&["export", "cpc"]);
        assert!(status.success(), "{err}");
        if round == "running" {
            assert_eq!(d.docker_ok(&["exec", "-u", "alice", "cpc", "id", "-u"]), "1234\n");
            d.docker_ok(&["top", "cpc"]);
            d.docker_ok(&["stop", "-t", "1", "cpc"]);
        }
    }
    assert_eq!(d.docker_ok(&["run", "--rm", "-u", "alice:alice", &img, "id", "-u"]), "1234\n");
    assert_eq!(std::fs::read_to_string(host.path().join("f-stopped")).unwrap(), "payload\n");

    // No daemon process loaded it: no marker on the host or in the container, berthd alive,
    // the module mapped in no process of ours, nothing in the daemon log.
    let host_marker = Path::new("/berth-nss-evil-loaded");
    let leaked = host_marker.exists();
    if leaked {
        let _ = std::fs::remove_file(host_marker);
    }
    assert!(!leaked, "a host process loaded the container's NSS module");
    assert!(read_from_container(&d, "cpc", "/berth-nss-evil-loaded").is_none(), "a daemon process loaded the NSS module inside the container's root");
    let pid = d.pid().unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(!maps.contains("libnss_berthevil"), "berthd mapped the container's NSS module");
    assert!(!d.log().contains("BERTH-NSS-EVIL-LOADED"), "{}", d.log());
    d.docker_ok(&["version"]);
    drop(d);
    drop(fx);
}
