//! `docker diff` (and later `docker cp` / `docker export`) with the real docker CLI against berthd.

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
