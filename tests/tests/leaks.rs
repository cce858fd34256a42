//! The shared leak checker (`tests/src/leaks.rs`) against a real berthd: clean after containers
//! that were removed, and it does report what a container that is still there holds (so a
//! test that uses it can fail). Only this daemon's own roots, namespace and container IDs are
//! looked at, so other daemons on the machine do not count.

use berth_tests::leaks::LeakCheck;
use berth_tests::require_berthd;
use berth_tests::world::World;

#[test]
fn leak_check_is_clean_after_rm_and_reports_a_live_container() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let check = LeakCheck::start(&w.d, &w.fx.ns);
    w.d.docker_ok(&["run", "--rm", &img, "true"]);
    w.d.docker_ok(&["run", "-d", "--name", "kept", "-p", "127.0.0.1::80", &img, "sleep", "300"]);
    // Running: the checker sees its mounts, cgroups, shim and network plumbing.
    let found = check.leaks(&w.d, &w.fx.ns).expect("a running container must show up as a leak");
    for what in ["mounts left", "cgroups left", "processes left"] {
        assert!(found.contains(what), "leak report lacks {what}:\n{found}");
    }
    let id = w.d.docker_ok(&["inspect", "-f", "{{.Id}}", "kept"]).trim().to_string();
    assert!(check.created().contains(&id), "{id} not among {:?}", check.created());
    assert!(found.contains(&id), "leak report does not name the container {id}:\n{found}");
    w.d.docker_ok(&["rm", "-f", "kept"]);
    check.assert_clean(&w.d, &w.fx.ns);
}
