//! Issue 5: Debian's docker-compose 1.29 (a real client, docker-py underneath) brings up a
//! two-service app with a network and a volume against berthd, the services talk by name, and
//! `down -v` leaves no container, network or volume.

use std::time::{Duration, Instant};

use berth_tests::berthd::run_with_timeout;
use berth_tests::netns::command_in;
use berth_tests::require_berthd;
use berth_tests::world::World;

fn compose(w: &World, dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let mut cmd = command_in(&w.fx.ns.path(), "docker-compose");
    cmd.current_dir(dir)
        .env("DOCKER_HOST", w.d.host())
        .env("DOCKER_CONFIG", w.d.docker_config())
        .env_remove("DOCKER_API_VERSION")
        .args(["-p", "berthapp", "-f", "compose.yml"])
        .args(args);
    let (status, out, err) = run_with_timeout(cmd, None, Duration::from_secs(180)).expect("docker-compose runs");
    (status.success(), format!("{}{}", String::from_utf8_lossy(&out), String::from_utf8_lossy(&err)))
}

#[test]
fn compose_up_talk_and_down_leaves_nothing() {
    require_berthd!();
    if std::process::Command::new("docker-compose").arg("version").output().is_err() {
        panic!("docker-compose (Debian package docker-compose) is not installed; .ci/run installs it");
    }
    let w = World::start();
    let web = w.pulled("web:latest");
    let bb = w.pulled("busybox:latest");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("compose.yml"),
        format!(
            r#"version: "3.8"
services:
  web:
    image: {web}
    networks: [appnet]
    volumes:
      - site:/www
  client:
    image: {bb}
    depends_on: [web]
    networks: [appnet]
    command: ["sh", "-c", "until wget -qO- http://web/ > /tmp/page; do sleep 0.2; done; sleep 600"]
networks:
  appnet:
    labels:
      purpose: test
volumes:
  site: {{}}
"#
        ),
    )
    .unwrap();
    let (ok, out) = compose(&w, dir.path(), &["up", "-d"]);
    assert!(ok, "compose up failed:\n{out}\n--- berthd log:\n{}", berth_tests::berthd::tail(&w.d.log(), 80));
    // The client reaches the web service by its service name over the project network, and
    // the page comes from the volume (filled from the image on first use).
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let r = w.d.docker(&["exec", "berthapp_client_1", "cat", "/tmp/page"]);
        if r.success() && !r.stdout.is_empty() {
            break r.stdout;
        }
        assert!(Instant::now() < deadline, "client never fetched the page: {r:?}\n{}", berth_tests::berthd::tail(&w.d.log(), 40));
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(page.contains(berth_tests::image::WEB_MARKER), "{page}");
    let (ok, out) = compose(&w, dir.path(), &["ps"]);
    assert!(ok && out.contains("berthapp_web_1") && out.contains("Up"), "{out}");
    let nets = w.d.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(nets.lines().any(|l| l == "berthapp_appnet"), "{nets}");
    let vols = w.d.docker_ok(&["volume", "ls", "--format", "{{.Name}}"]);
    assert!(vols.lines().any(|l| l == "berthapp_site"), "{vols}");

    let (ok, out) = compose(&w, dir.path(), &["down", "-v"]);
    assert!(ok, "compose down failed:\n{out}");
    assert_eq!(w.d.docker_ok(&["ps", "-aq"]).trim(), "", "containers left");
    assert_eq!(w.d.docker_ok(&["volume", "ls", "-q"]).trim(), "", "volumes left");
    let nets = w.d.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    let mut left: Vec<&str> = nets.lines().collect();
    left.sort();
    assert_eq!(left, ["bridge", "host", "none"], "networks left");
}
