//! `docker run`'s attach path: the output and the stdin EOF of a container that `docker run`
//! attaches to before it starts, natively, including when the start is slow (a loaded machine,
//! a cold VM: mount + network + `runtime create` taking longer than berthd's old 10 s attach
//! deadline lost all output; `run -i` then never closed the container's stdin).

use std::os::unix::fs::PermissionsExt;

use berth_tests::berthd::Berthd;
use berth_tests::fixtures::Fixtures;
use berth_tests::require_berthd;
use berth_tests::world::World;

#[test]
fn run_prints_output_and_run_i_passes_stdin_eof() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    assert_eq!(w.d.docker_ok(&["run", "--rm", &img, "echo", "back"]), "back\n");
    let o = w.d.docker_with_stdin(&["run", "-i", "--rm", &img, "cat"], Some(b"through stdin\n"));
    assert!(o.success(), "{o:?}");
    assert_eq!(o.stdout, "through stdin\n");
    // Without -i the container's stdin is closed at once.
    assert_eq!(w.d.docker_with_stdin(&["run", "--rm", &img, "cat"], Some(b"ignored\n")).assert_ok().stdout, "");
}

#[test]
fn slow_start_keeps_the_attached_output_and_stdin() {
    require_berthd!();
    let fx = Fixtures::start().expect("fixtures");
    // An OCI runtime whose `create` takes 12 s: longer than the attach used to wait.
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("slow-runtime");
    std::fs::write(&wrapper, "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = create ] && sleep 12; done\nexec runc \"$@\"\n").unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Berthd::start_with_env(&fx.ns, &[fx.registry.addr()], &[], &[("BERTH_RUNTIME", wrapper.to_str().unwrap())]).expect("berthd");
    let img = fx.reference("busybox:latest");
    d.docker_ok(&["pull", "-q", &img]);
    // Both at once: the slow part is the same sleep.
    std::thread::scope(|s| {
        let echo = s.spawn(|| d.docker(&["run", "--rm", &img, "echo", "back"]));
        let cat = s.spawn(|| d.docker_with_stdin(&["run", "-i", "--rm", &img, "cat"], Some(b"slow stdin\n")));
        let echo = echo.join().unwrap();
        let cat = cat.join().unwrap();
        assert!(echo.success(), "{echo:?}\n{}", d.log());
        assert_eq!(echo.stdout, "back\n", "{echo:?}\n{}", d.log());
        assert!(cat.success(), "{cat:?}\n{}", d.log());
        assert_eq!(cat.stdout, "slow stdin\n", "{cat:?}\n{}", d.log());
    });
}
