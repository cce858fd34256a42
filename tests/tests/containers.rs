//! Issue 3: containers. The real `docker` CLI against berthd in a loopback-only namespace.

use berth_tests::berthd::Berthd;
use berth_tests::fixtures::Fixtures;
use berth_tests::require_berthd;

struct World {
    d: Berthd,
    fx: Fixtures,
}

fn world() -> World {
    let fx = Fixtures::start().expect("start fixtures");
    let d = Berthd::start(&fx.ns, &[fx.registry.addr()]).expect("start berthd");
    World { d, fx }
}

#[test]
fn create_list_inspect_rename_rm() {
    require_berthd!();
    let w = world();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    let id = w.d.docker_ok(&["create", "--name", "first", "-e", "A=1", "--label", "k=v", &img, "echo", "hi"]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "create prints the full ID: {id:?}");

    // Not running: only `ps -a` shows it.
    assert!(!w.d.docker_ok(&["ps", "-q", "--no-trunc"]).contains(&id));
    let all = w.d.docker_ok(&["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}} {{.Status}} {{.Command}}"]);
    assert!(all.contains(&format!("{id} first Created")), "{all}");
    assert!(all.contains("echo hi"), "{all}");
    let by_label = w.d.docker_ok(&["ps", "-aq", "--no-trunc", "--filter", "label=k=v"]);
    assert_eq!(by_label.trim(), id);
    assert!(w.d.docker_ok(&["ps", "-aq", "--filter", "label=k=other"]).trim().is_empty());

    let v: serde_json::Value = serde_json::from_str(&w.d.docker_ok(&["inspect", "first"])).unwrap();
    let c = &v[0];
    assert_eq!(c["Id"], id.as_str());
    assert_eq!(c["Name"], "/first");
    assert_eq!(c["State"]["Status"], "created");
    assert_eq!(c["Path"], "echo");
    assert_eq!(c["Args"][0], "hi");
    let env: Vec<String> = serde_json::from_value(c["Config"]["Env"].clone()).unwrap();
    assert!(env.contains(&"A=1".to_string()), "{env:?}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "image env merged: {env:?}");
    assert_eq!(c["Image"], w.fx.pushed("busybox:latest").config_digest.as_str());

    // Names are unique; rename frees the old one.
    let dup = w.d.docker(&["create", "--name", "first", &img]).assert_fail();
    assert!(dup.stderr.contains("already in use"), "{}", dup.stderr);
    w.d.docker_ok(&["rename", "first", "second"]);
    assert!(w.d.docker(&["inspect", "first"]).assert_fail().stderr.contains("No such"));
    w.d.docker_ok(&["inspect", "second"]);

    // An image in use by a container is not deleted.
    let r = w.d.docker(&["rmi", &img]).assert_fail();
    assert!(r.stderr.contains("being used"), "{}", r.stderr);
    w.d.docker_ok(&["image", "inspect", &img]);

    // Records survive a daemon restart.
    let mut d = w.d;
    d.restart().unwrap();
    assert_eq!(d.docker_ok(&["ps", "-aq", "--no-trunc"]).trim(), id);

    d.docker_ok(&["rm", "second"]);
    assert!(d.docker_ok(&["ps", "-aq"]).trim().is_empty());
    assert!(!d.data_root().join("containers").join(&id).exists());
    // Now the image can go.
    d.docker_ok(&["rmi", &img]);
    drop(d);
    drop(w.fx);
}

#[test]
fn create_errors_are_clear() {
    require_berthd!();
    let w = world();
    let r = w.d.docker(&["create", &w.fx.reference("nosuch:1")]).assert_fail();
    assert!(r.stderr.contains("No such image") || r.stderr.contains("not found"), "{}", r.stderr);
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    let r = w.d.docker(&["create", "--name", "bad name", &img]).assert_fail();
    assert!(r.stderr.contains("Invalid container name"), "{}", r.stderr);
    let r = w.d.docker(&["rm", "nosuch"]).assert_fail();
    assert!(r.stderr.contains("No such container"), "{}", r.stderr);
}
