//! Issue 8: docker-compose (Debian's 1.29, a real client on docker-py) runs a three-service app
//! against berthd: one image built from a Dockerfile, a user-defined network, a named volume,
//! depends_on with a health-check condition; `up -d`, `ps`, `logs`, `down -v`.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_tests::berthd::run_with_timeout;
use berth_tests::require_berthd;
use berth_tests::world::World;

fn compose(w: &World, dir: &Path, args: &[&str]) -> (bool, String) {
    let d = &w.d;
    let mut cmd = w.fx.ns.command("docker-compose");
    cmd.current_dir(dir)
        .env("DOCKER_HOST", d.host())
        .env("DOCKER_CONFIG", d.docker_config())
        .env("COMPOSE_INTERACTIVE_NO_CLI", "1")
        .env_remove("DOCKER_API_VERSION")
        .args(["-p", "berthbuild"])
        .args(args);
    let (st, out, err) = run_with_timeout(cmd, None, Duration::from_secs(180)).expect("docker-compose runs");
    (st.success(), format!("{}{}", String::from_utf8_lossy(&out), String::from_utf8_lossy(&err)))
}

#[test]
fn compose_builds_and_runs_a_three_service_app() {
    require_berthd!();
    if std::process::Command::new("docker-compose").arg("version").output().map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("SKIP: docker-compose (Debian's docker-compose package) is not installed");
        return;
    }
    let w = World::start();
    let base = w.pulled("busybox:latest");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::write(
        dir.path().join("app/Dockerfile"),
        format!("FROM {base}\nCOPY run.sh /run.sh\nCMD [\"sh\", \"/run.sh\"]\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("app/run.sh"), "echo \"app got: $(wget -qO- http://db:8080/state)\"\nexec sleep 300\n").unwrap();
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        format!(
            r#"version: "2.4"
services:
  db:
    image: {base}
    command: ["sh", "-c", "echo db-ready > /data/state && exec httpd -f -p 8080 -h /data"]
    volumes: ["dbdata:/data"]
    networks: [backend]
    healthcheck:
      test: ["CMD", "wget", "-qO-", "http://127.0.0.1:8080/state"]
      interval: 1s
      timeout: 2s
      retries: 30
  app:
    build: ./app
    image: berthbuild-app:latest
    networks: [backend]
    depends_on:
      db:
        condition: service_healthy
  worker:
    image: {base}
    command: ["sh", "-c", "echo worker up && exec sleep 300"]
    networks: [backend]
    depends_on: [app]
networks:
  backend: {{}}
volumes:
  dbdata: {{}}
"#
        ),
    )
    .unwrap();
    let (ok, out) = compose(&w, dir.path(), &["up", "-d"]);
    assert!(ok, "up -d:\n{out}\n--- berthd:\n{}", berth_tests::berthd::tail(&w.d.log(), 60));
    let (ok, ps) = compose(&w, dir.path(), &["ps"]);
    assert!(ok, "{ps}");
    for s in ["berthbuild_db_1", "berthbuild_app_1", "berthbuild_worker_1"] {
        assert!(ps.lines().any(|l| l.contains(s) && l.contains("Up")), "{s} not up:\n{ps}");
    }
    assert!(ps.contains("healthy"), "{ps}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, logs) = compose(&w, dir.path(), &["logs", "--no-color"]);
        if logs.contains("app got: db-ready") && logs.contains("worker up") {
            break;
        }
        assert!(Instant::now() < deadline, "logs:\n{logs}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (ok, out) = compose(&w, dir.path(), &["down", "-v"]);
    assert!(ok, "down -v:\n{out}");
    assert!(w.d.docker_ok(&["ps", "-aq"]).trim().is_empty());
    assert!(!w.d.docker_ok(&["volume", "ls", "-q"]).contains("berthbuild_dbdata"));
    assert!(!w.d.docker_ok(&["network", "ls"]).contains("berthbuild_backend"));
}
