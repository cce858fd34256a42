//! `docker diff`, `docker cp` (both ways, running and stopped) and `docker export` with the real
//! docker CLI against berthd, including containers that race symlinks against the copy.

use berth_tests::require_berthd;
use berth_tests::world::World;

#[test]
fn diff_shows_added_changed_deleted() {
    require_berthd!();
    let w = World::start();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    w.d.docker_ok(&[
        "run", "--name", "difc", &img, "sh", "-c",
        "mkdir /newdir && echo x > /newdir/f && echo y >> /etc/passwd && rm /etc/group",
    ]);
    let out = w.d.docker_ok(&["diff", "difc"]);
    let lines: Vec<&str> = out.lines().collect();
    for want in ["A /newdir", "A /newdir/f", "C /etc", "C /etc/passwd", "D /etc/group"] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{out}");
    }
    // Nothing the container did not touch.
    assert!(!lines.iter().any(|l| l.contains("/bin/busybox")), "{out}");
}

#[test]
fn cp_stat_missing_path_and_symlink_escape() {
    require_berthd!();
    let w = World::start();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    // A host dir with a marker; the container links to its absolute host path.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("marker"), "HOST-SECRET").unwrap();
    let target = host.path().display().to_string();
    w.d.docker_ok(&["run", "-d", "--name", "cpc", &img, "sh", "-c", &format!("ln -s {target} /tmp/esc; sleep 300")]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Missing path: a clear error.
    let r = w.d.docker(&["cp", "cpc:/nope", "-"]).assert_fail();
    assert!(r.stderr.contains("Could not find the file /nope"), "{}", r.stderr);
    // Through the symlink, the host marker is not reachable: resolution stays in the container.
    let r = w.d.docker(&["cp", &format!("cpc:/tmp/esc/marker"), "-"]);
    assert!(!r.success(), "escaped the container root: {}", r.stdout);
    assert!(!r.stdout.contains("HOST-SECRET") && !r.stderr.contains("HOST-SECRET"));
    // HEAD resolves inside the root: the link itself is found, the host file behind it is not.
    let link = w.d.api("HEAD", "/containers/cpc/archive?path=/tmp/esc", None).unwrap();
    assert_eq!(link.status, 200);
    let through = w.d.api("HEAD", "/containers/cpc/archive?path=/tmp/esc/marker", None).unwrap();
    assert_eq!(through.status, 404);
    let parent = w.d.api("HEAD", "/containers/cpc/archive?path=/tmp/esc/../../../../bin/busybox", None).unwrap();
    assert_eq!(parent.status, 200, "Docker cleans `..` lexically: this is the container's /bin/busybox");
    // Copy out: a file and a dir, content and mode preserved.
    w.d.docker_ok(&["exec", "cpc", "sh", "-c", "mkdir -p /data/sub && echo hello > /data/sub/f && chmod 751 /data/sub/f"]);
    let out = tempfile::tempdir().unwrap();
    w.d.docker_ok(&["cp", "cpc:/data", &out.path().display().to_string()]);
    let f = out.path().join("data/sub/f");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "hello\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777, 0o751);
    w.d.docker_ok(&["cp", "cpc:/data/sub/f", &out.path().join("single").display().to_string()]);
    assert_eq!(std::fs::read_to_string(out.path().join("single")).unwrap(), "hello\n");
    // Through the link: the container's own /tmp/esc target does not exist, the host marker is never read.
    let (_, bytes, _) = w.d.docker_bytes(&["cp", "cpc:/tmp/esc/marker", "-"]);
    assert!(!String::from_utf8_lossy(&bytes).contains("HOST-SECRET"));
    w.d.docker_ok(&["rm", "-f", "cpc"]);
}

#[test]
fn export_and_racing_symlink_swap() {
    require_berthd!();
    let w = World::start();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("marker"), "HOST-SECRET").unwrap();
    let target = host.path().display().to_string();
    // Swap /tmp/sw between a symlink to the host marker dir's path and a real dir, forever.
    let script = format!("while true; do ln -sfn {target} /tmp/sw; rm -f /tmp/sw; mkdir -p /tmp/sw; rmdir /tmp/sw; done");
    w.d.docker_ok(&["run", "-d", "--name", "race", &img, "sh", "-c", &script]);

    let (st, tar, err) = w.d.docker_bytes(&["export", "race"]);
    assert!(st.success(), "{err}");
    let tf = host.path().join("../export-test.tar");
    std::fs::write(&tf, &tar).unwrap();
    let o = std::process::Command::new("tar").arg("tf").arg(&tf).output().unwrap();
    let _ = std::fs::remove_file(&tf);
    assert!(String::from_utf8_lossy(&o.stdout).lines().any(|l| l == "bin/busybox"), "{}", String::from_utf8_lossy(&o.stdout));

    for _ in 0..200 {
        let (_, bytes, _) = w.d.docker_bytes(&["cp", "race:/tmp/sw/marker", "-"]);
        assert!(!String::from_utf8_lossy(&bytes).contains("HOST-SECRET"), "read the host file through the swapped link");
    }
    assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 1, "host marker dir was written");
    w.d.docker_ok(&["rm", "-f", "race"]);
}

/// A one-file tar (ustar, written here so the test does not depend on the code under test).
/// For the volume tests: a host directory holding `from-host` (mounted with `bind_arg`, i.e.
/// `-v DIR:/bound`) and a host file `in.txt` (`file`) to copy in.
struct HostFiles {
    bind: tempfile::TempDir,
    bind_arg: String,
    src: tempfile::TempDir,
    file: String,
}

impl HostFiles {
    fn new() -> HostFiles {
        let bind = tempfile::tempdir().unwrap();
        std::fs::write(bind.path().join("from-host"), "host-file").unwrap();
        let bind_arg = format!("{}:/bound", bind.path().display());
        let src = tempfile::tempdir().unwrap();
        let f = src.path().join("in.txt");
        std::fs::write(&f, "copied-in\n").unwrap();
        HostFiles { bind, bind_arg, file: f.display().to_string(), src }
    }
}

/// The paths in a tar archive, in order.
fn entry_names(tar: &[u8]) -> Vec<String> {
    tar::Archive::new(tar).entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect()
}

/// The content of the first entry of a tar archive (what `docker cp CTR:FILE -` gives).
fn first_entry_text(tar: &[u8]) -> String {
    let mut a = tar::Archive::new(tar);
    let mut e = a.entries().unwrap().next().expect("one entry").unwrap();
    let mut body = String::new();
    std::io::Read::read_to_string(&mut e, &mut body).unwrap();
    body
}

fn tar_with(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    // Raw name bytes: set_path refuses `..`, which the hostile cases need.
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    b.append(&h, data).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn cp_into_running_and_stopped_containers() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    w.d.docker_ok(&["run", "-d", "--name", "cpin", "--user", "1000:1000", &img, "sleep", "300"]);
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("tree/sub")).unwrap();
    std::fs::write(src.path().join("tree/sub/f"), "deep\n").unwrap();
    std::fs::write(src.path().join("one"), "single\n").unwrap();
    let s = |p: &str| src.path().join(p).display().to_string();
    // A file to a new name, a file into a dir, a whole tree.
    w.d.docker_ok(&["cp", &s("one"), "cpin:/tmp/renamed"]);
    w.d.docker_ok(&["cp", &s("one"), "cpin:/etc/"]);
    w.d.docker_ok(&["cp", &s("tree"), "cpin:/opt"]);
    let out = w.d.docker_ok(&["exec", "cpin", "cat", "/tmp/renamed", "/etc/one", "/opt/sub/f"]);
    assert_eq!(out, "single\nsingle\ndeep\n");
    // Without -a the archive's ids stay (Docker's daemon keeps them); with -a the files belong
    // to the container's user.
    w.d.docker_ok(&["cp", "-a", &s("one"), "cpin:/tmp/owned"]);
    let ids = w.d.docker_ok(&["exec", "cpin", "stat", "-c", "%u:%g", "/tmp/owned", "/tmp/renamed"]);
    assert_eq!(ids, "1000:1000\n0:0\n", "ids: {ids}");
    // A missing destination: 404 through the CLI; a file where a dir is needed: clear error.
    let r = w.d.docker(&["cp", &s("one"), "cpin:/nowhere/x"]).assert_fail();
    assert!(r.stderr.contains("Could not find the file /nowhere") || r.stderr.contains("no such"), "{}", r.stderr);
    // The same with an upload larger than the socket buffers: the CLI is still writing when
    // the 404 comes, and must read it rather than fail with EPIPE.
    std::fs::write(src.path().join("big"), vec![7u8; 2 << 20]).unwrap();
    let r = w.d.docker(&["cp", &s("big"), "cpin:/nowhere/x"]).assert_fail();
    assert!(r.stderr.contains("Could not find the file /nowhere"), "{}", r.stderr);
    let bad = w.d.api("PUT", "/containers/cpin/archive?path=/nowhere", Some(tar_with("f", b"x"))).unwrap();
    assert_eq!(bad.status, 404, "{}", bad.text());
    let notdir = w.d.api("PUT", "/containers/cpin/archive?path=/etc/one", Some(tar_with("f", b"x"))).unwrap();
    assert_eq!(notdir.status, 400, "{}", notdir.text());
    assert!(notdir.text().contains("not a directory"), "{}", notdir.text());
    let garbage = w.d.api("PUT", "/containers/cpin/archive?path=/tmp", Some(b"this is not a tar archive, not at all".repeat(20))).unwrap();
    assert_eq!(garbage.status, 400, "{}", garbage.text());
    let esc = w.d.api("PUT", "/containers/cpin/archive?path=/tmp", Some(tar_with("../../../../escape", b"x"))).unwrap();
    assert_eq!(esc.status, 400, "{}", esc.text());
    // noOverwriteDirNonDir (the CLI's default): a file over the dir /opt/sub is refused.
    let over = w.d.api("PUT", "/containers/cpin/archive?path=/opt&noOverwriteDirNonDir=1", Some(tar_with("sub", b"x"))).unwrap();
    assert_eq!(over.status, 409, "{}", over.text());
    assert!(over.text().contains("cannot overwrite directory"), "{}", over.text());
    assert_eq!(w.d.docker_ok(&["exec", "cpin", "cat", "/opt/sub/f"]), "deep\n");
    // A read-only rootfs refuses.
    w.d.docker_ok(&["create", "--name", "ro", "--read-only", &img, "true"]);
    let r = w.d.docker(&["cp", &s("one"), "ro:/tmp/"]).assert_fail();
    assert!(r.stderr.contains("read-only"), "{}", r.stderr);

    // Stopped: copy in, copy out, export and diff all work on a created and an exited container,
    // and nothing stays mounted afterwards.
    w.d.docker_ok(&["create", "--name", "stopped", &img, "cat", "/in/one"]);
    w.d.docker_ok(&["cp", &s("one"), "stopped:/etc/one"]);
    w.d.docker_ok(&["cp", &s("tree"), "stopped:/in2"]);
    let out = tempfile::tempdir().unwrap();
    let o = |p: &str| out.path().join(p).display().to_string();
    w.d.docker_ok(&["cp", "stopped:/etc/one", &o("back")]);
    assert_eq!(std::fs::read_to_string(out.path().join("back")).unwrap(), "single\n");
    let diff = w.d.docker_ok(&["diff", "stopped"]);
    assert!(diff.lines().any(|l| l == "A /etc/one") && diff.lines().any(|l| l == "A /in2/sub/f"), "{diff}");
    // The copy lands in the container's own rootfs: the command sees it when it starts.
    w.d.docker_ok(&["cp", &s("tree"), "stopped:/in"]);
    w.d.docker_ok(&["cp", &s("one"), "stopped:/in/one"]);
    assert_eq!(w.d.docker_ok(&["start", "-a", "stopped"]), "single\n");
    // Exited now: export has the copied file.
    let (st, tar, err) = w.d.docker_bytes(&["export", "stopped"]);
    assert!(st.success(), "{err}");
    let names = entry_names(&tar);
    assert!(names.iter().any(|n| n == "in/one") && names.iter().any(|n| n == "bin/busybox"), "{names:?}");
    w.d.docker_ok(&["cp", "stopped:/in/sub", &o("sub-out")]);
    assert_eq!(std::fs::read_to_string(out.path().join("sub-out/f")).unwrap(), "deep\n");
    // No mount of the stopped container's rootfs is left behind.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let exec_root = w.d.exec_root().display().to_string();
    // (The running container's network namespace file is a mount too; count rootfs mounts.)
    let ours: Vec<&str> = mounts.lines().filter(|l| l.contains(&exec_root) && l.contains(" - overlay ")).collect();
    assert_eq!(ours.len(), 1, "only the running container's rootfs may be mounted: {ours:?}");
}

/// CVE-2018-15664 the other way round: while `docker cp` writes into /tmp/sw/, the container keeps
/// swapping that path between a real directory and a symlink to a host directory. Every copy either
/// lands inside the container or fails; the host directory never gets a file.
#[test]
fn cp_into_racing_symlink_swap_never_writes_outside() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("marker"), "HOST").unwrap();
    let target = host.path().display().to_string();
    let script = format!("mkdir -p /tmp/sw; while true; do mv /tmp/sw /tmp/real; ln -s {target} /tmp/sw; rm /tmp/sw; mv /tmp/real /tmp/sw; done");
    w.d.docker_ok(&["run", "-d", "--name", "swap", &img, "sh", "-c", &script]);
    let payload = tar_with("sub/pwned", b"written by docker cp");
    let mut landed = 0;
    let mut refused = 0;
    for _ in 0..300 {
        let r = w.d.api("PUT", "/containers/swap/archive?path=/tmp/sw", Some(payload.clone())).unwrap();
        if r.status == 200 {
            landed += 1;
        } else {
            assert!(matches!(r.status, 400 | 404), "unexpected status {}: {}", r.status, r.text());
            assert!(!r.text().contains("invalid tar"), "{}", r.text());
            refused += 1;
        }
        let names: Vec<_> = std::fs::read_dir(host.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("marker")], "docker cp wrote into the host directory");
    }
    // The race really ran both ways (otherwise this test could not fail).
    assert!(landed > 0, "no copy landed ({refused} refused)");
    eprintln!("racing cp: {landed} landed inside the container, {refused} refused");
    w.d.docker_ok(&["rm", "-f", "swap"]);
}

/// `docker cp` into and out of a running container sees what the container sees: its named
/// volume, bind mount and tmpfs, not the overlay under them. Kernel filesystems in its view are
/// neither written (berthd is host root) nor read (a /proc/kmsg read would block); `export`
/// still archives the container's own filesystem only.
#[test]
fn cp_sees_volumes_binds_and_tmpfs_of_a_running_container() {
    require_berthd!();
    let w = World::start();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    let HostFiles { bind, bind_arg, src: _src, file: f } = HostFiles::new();
    w.d.docker_ok(&[
        "run", "-d", "--name", "cpv", "-v", "cpvol:/data", "-v", &bind_arg, "--tmpfs", "/scratch",
        "-v", "cpro:/ro:ro", &img, "sleep", "300",
    ]);
    for dir in ["/data", "/bound", "/scratch"] {
        w.d.docker_ok(&["cp", &f, &format!("cpv:{dir}/")]);
        let got = w.d.docker_ok(&["exec", "cpv", "cat", &format!("{dir}/in.txt")]);
        assert_eq!(got, "copied-in\n", "the container sees the file copied into {dir}");
    }
    assert_eq!(std::fs::read_to_string(bind.path().join("in.txt")).unwrap(), "copied-in\n", "the bind mount's host side has it");

    // Out of the mounts: what the container wrote there.
    w.d.docker_ok(&["exec", "cpv", "sh", "-c", "echo vol-out > /data/out; echo tmp-out > /scratch/out"]);
    for (dir, want) in [("/data", "vol-out"), ("/scratch", "tmp-out"), ("/bound", "host-file")] {
        let name = if dir == "/bound" { "from-host" } else { "out" };
        let (st, tar, err) = w.d.docker_bytes(&["cp", &format!("cpv:{dir}/{name}"), "-"]);
        assert!(st.success(), "cp out of {dir}: {err}");
        let body = first_entry_text(&tar);
        assert_eq!(body.trim(), want, "cp out of {dir}");
    }

    // A read-only volume refuses the copy with a clear error; kernel filesystems are refused.
    let r = w.d.docker(&["cp", &f, "cpv:/ro/"]).assert_fail();
    assert!(r.stderr.contains("read-only"), "{}", r.stderr);
    let r = w.d.docker(&["cp", &f, "cpv:/proc/sys/"]).assert_fail();
    assert!(r.stderr.contains("kernel filesystem"), "{}", r.stderr);
    // Archiving the whole view ends (no /proc or /sys content) and holds the volume's file.
    let (st, tar, err) = w.d.docker_bytes(&["cp", "cpv:/", "-"]);
    assert!(st.success(), "cp of /: {err}");
    let names = entry_names(&tar);
    assert!(names.iter().any(|n| n.ends_with("data/out")), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("proc/self") || n.contains("sys/kernel")), "kernel filesystems are not walked");

    // export: the container's filesystem without its volumes (as Docker).
    let (st, tar, err) = w.d.docker_bytes(&["export", "cpv"]);
    assert!(st.success(), "export: {err}");
    let names = entry_names(&tar);
    assert!(!names.iter().any(|n| n.ends_with("data/out") || n.ends_with("data/in.txt")), "export leaves volumes out: {names:?}");
    w.d.docker_ok(&["rm", "-f", "-v", "cpv"]);
    w.d.docker_ok(&["volume", "rm", "cpvol", "cpro"]);
}

/// `docker cp` into and out of a created or exited container also sees its volumes and binds
/// (Docker mounts them for the copy): a file copied into a stopped container's volume is there
/// when it starts, not hidden in the overlay under the volume. Read-only volumes refuse, export
/// leaves volumes out, and nothing stays mounted afterwards.
#[test]
fn cp_sees_volumes_and_binds_of_a_stopped_container() {
    require_berthd!();
    let w = World::start();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    let HostFiles { bind, bind_arg, src: _src, file: f } = HostFiles::new();
    w.d.docker_ok(&[
        "create", "--name", "cps", "-v", "cpsvol:/data", "-v", &bind_arg, "-v", "cpsro:/ro:ro", &img,
        "cat", "/data/in.txt", "/bound/in.txt",
    ]);
    // Created, never started: into the volume and the bind.
    w.d.docker_ok(&["cp", &f, "cps:/data/"]);
    w.d.docker_ok(&["cp", &f, "cps:/bound/"]);
    assert_eq!(std::fs::read_to_string(bind.path().join("in.txt")).unwrap(), "copied-in\n", "the bind's host side has it");
    let r = w.d.docker(&["cp", &f, "cps:/ro/"]).assert_fail();
    assert!(r.stderr.contains("read-only"), "{}", r.stderr);
    // Out of the bind, from the stopped container.
    let (st, tar, err) = w.d.docker_bytes(&["cp", "cps:/bound/from-host", "-"]);
    assert!(st.success(), "cp out of a stopped container's bind: {err}");
    let body = first_entry_text(&tar);
    assert_eq!(body, "host-file");
    // The container sees both files (so they went to the volume and the bind, not the overlay).
    assert_eq!(w.d.docker_ok(&["start", "-a", "cps"]), "copied-in\ncopied-in\n");
    // Exited now: the volume's content comes out, and a second container sees what went in.
    w.d.docker_ok(&["cp", &f, "cps:/data/again.txt"]);
    let got = w.d.docker_ok(&["run", "--rm", "-v", "cpsvol:/v", &img, "cat", "/v/again.txt"]);
    assert_eq!(got, "copied-in\n");
    let (st, tar, err) = w.d.docker_bytes(&["export", "cps"]);
    assert!(st.success(), "export: {err}");
    let names = entry_names(&tar);
    assert!(names.iter().any(|n| n == "bin/busybox"), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with("in.txt") || n.ends_with("from-host")), "export leaves volumes and binds out: {names:?}");
    // Nothing of the copies stays mounted: no view, no overlay of the stopped container.
    let exec_root = w.d.exec_root().display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours: Vec<&str> = mounts.lines().filter(|l| l.contains(&exec_root) && !l.contains("/netns/")).collect();
    assert!(ours.is_empty(), "mounts left after the copies: {ours:?}");
    w.d.docker_ok(&["rm", "-v", "cps"]);
    w.d.docker_ok(&["volume", "rm", "cpsvol", "cpsro"]);
}

/// A kill -9 of berthd while it streams a copy out of a stopped container's volume leaves the
/// copy's mounts (the container's view with its volume, and its overlay) behind; the next start
/// takes them down, and the container still starts and sees its volume.
#[test]
fn kill_9_during_a_copy_out_of_a_stopped_container_leaves_no_mount() {
    require_berthd!();
    let mut w = World::start();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    // 64 MiB in the volume: far more than the socket buffers hold, so the copy stays open.
    w.d.docker_ok(&["run", "--name", "cpk", "-v", "cpkvol:/data", &img, "dd", "if=/dev/zero", "of=/data/big", "bs=1M", "count=64"]);
    let exec_root = w.d.exec_root().display().to_string();
    let ours = || -> Vec<String> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        mounts.lines().filter(|l| l.contains(&exec_root) && !l.contains("/netns/")).map(String::from).collect()
    };
    assert!(ours().is_empty(), "{:?}", ours());
    let mut s = std::os::unix::net::UnixStream::connect(w.d.socket()).unwrap();
    std::io::Write::write_all(&mut s, b"GET /containers/cpk/archive?path=/data/big HTTP/1.1\r\nHost: berth\r\n\r\n").unwrap();
    let mut head = [0u8; 4096];
    let n = std::io::Read::read(&mut s, &mut head).unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head[..n]));
    // The reader stalls; the copy holds the view with the volume mounted.
    let during = ours();
    assert!(during.iter().any(|l| l.contains("/cp/")), "the copy's view is mounted: {during:?}");
    w.d.kill9();
    drop(s);
    assert!(!ours().is_empty(), "the killed copy's mounts are still there");
    w.d.restart().unwrap();
    assert!(ours().is_empty(), "mounts left after the restart: {:?}", ours());
    let size = w.d.docker_ok(&["run", "--rm", "-v", "cpkvol:/v", &img, "stat", "-c", "%s", "/v/big"]);
    assert_eq!(size.trim(), (64u64 << 20).to_string());
    w.d.docker_ok(&["rm", "-v", "cpk"]);
    w.d.docker_ok(&["volume", "rm", "cpkvol"]);
}

/// `docker export` and `docker cp` out stream the archive: berthd's peak memory stays far below
/// the size of what it archives (both used to build the whole tar in memory first).
#[test]
fn export_and_cp_out_stream_without_holding_the_archive() {
    require_berthd!();
    let w = World::start();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    w.d.docker_ok(&["run", "--name", "big", &img, "dd", "if=/dev/zero", "of=/big", "bs=1M", "count=200"]);
    let pid = w.d.pid().expect("berthd pid");
    let peak_mib = || -> u64 {
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: u64 = st.lines().find(|l| l.starts_with("VmHWM:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        kb / 1024
    };
    let before = peak_mib();
    let (st, tar, err) = w.d.docker_bytes(&["export", "big"]);
    assert!(st.success(), "export: {err}");
    assert!(tar.len() > 200 << 20, "the export holds the 200 MiB file: {} bytes", tar.len());
    let mut found = false;
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_str() == Some("big") {
            assert_eq!(e.header().size().unwrap(), 200 << 20);
            found = true;
        }
    }
    assert!(found, "the file is in the export");
    drop(tar);
    let (st, tar, err) = w.d.docker_bytes(&["cp", "big:/big", "-"]);
    assert!(st.success(), "cp out: {err}");
    assert!(tar.len() > 200 << 20);
    let after = peak_mib();
    assert!(after < before + 100, "berthd's peak RSS grew from {before} MiB to {after} MiB while archiving 200 MiB twice");
    w.d.docker_ok(&["rm", "big"]);
}
