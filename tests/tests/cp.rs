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
    w.d.docker_ok(&["rm", "-f", "cpc"]);
}
