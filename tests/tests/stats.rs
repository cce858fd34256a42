//! docker stats, top, pause/unpause and container prune against berthd.

use std::time::Duration;

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
fn stats_top_pause_prune() {
    require_berthd!();
    let w = world();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    let id = w.d.docker_ok(&["run", "-d", "--name", "cc", "--memory", "64m", &img, "sleep", "300"]).trim().to_string();

    // CLI: non-zero usage, limit 64MiB.
    let out = w.d.docker_ok(&["stats", "--no-stream", "--format", "{{.Name}}|{{.MemUsage}}", "cc"]);
    let line = out.lines().next().unwrap_or("");
    assert!(line.starts_with("cc|"), "{out}");
    assert!(line.contains("/ 64MiB"), "{out}");
    assert!(!line.contains("|0B /"), "{out}");

    // API: one object with memory and pids.
    let r = w.d.api_get(&format!("/v1.47/containers/{id}/stats?stream=false")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json().unwrap();
    assert!(v["memory_stats"]["usage"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["memory_stats"]["limit"].as_u64(), Some(64 * 1024 * 1024), "{v}");
    assert!(v["pids_stats"]["current"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["precpu_stats"]["system_cpu_usage"].as_u64().unwrap() > 0, "two samples: {v}");
    assert_eq!(v["name"], "/cc");

    // top lists the sleep.
    let top = w.d.docker_ok(&["top", "cc"]);
    assert!(top.contains("PID") && top.contains("sleep 300"), "{top}");

    // pause freezes a counter; unpause resumes it.
    let ctr = w
        .d
        .docker_ok(&["run", "-d", "--name", "counter", &img, "sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done"])
        .trim()
        .to_string();
    let _ = ctr;
    let read_n = || -> u64 {
        let r = w.d.api_get("/v1.47/containers/counter/top").unwrap();
        assert_eq!(r.status, 200);
        let pid: i32 = r.json().unwrap()["Processes"][0][1].as_str().unwrap().parse().unwrap();
        std::fs::read_to_string(format!("/proc/{pid}/root/tmp/n")).unwrap_or_default().trim().parse().unwrap_or(0)
    };
    std::thread::sleep(Duration::from_millis(500));
    w.d.docker_ok(&["pause", "counter"]);
    assert_eq!(w.d.docker_ok(&["inspect", "-f", "{{.State.Status}}", "counter"]).trim(), "paused");
    let r = w.d.docker(&["pause", "counter"]).assert_fail();
    assert!(r.stderr.contains("already paused"), "{}", r.stderr);
    let a = read_n();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(read_n(), a, "paused container kept counting");
    w.d.docker_ok(&["unpause", "counter"]);
    assert_eq!(w.d.docker_ok(&["inspect", "-f", "{{.State.Status}}", "counter"]).trim(), "running");
    std::thread::sleep(Duration::from_millis(800));
    assert!(read_n() > a, "unpaused container did not resume");
    assert!(w.d.docker(&["unpause", "counter"]).assert_fail().stderr.contains("not paused"));

    // prune removes exited containers only.
    let done = w.d.docker_ok(&["run", "--name", "done", &img, "true"]);
    let _ = done;
    let out = w.d.docker_ok(&["container", "prune", "-f"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    let left = w.d.docker_ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!left.contains("done"), "{left}");
    assert!(left.contains("counter") && left.lines().any(|l| l == "cc"), "{left}");
    w.d.docker_ok(&["rm", "-f", "cc", "counter"]);
}

#[test]
fn stop_and_rm_of_a_paused_container() {
    require_berthd!();
    let w = world();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    w.d.docker_ok(&["run", "-d", "--name", "p1", &img, "sleep", "300"]);
    w.d.docker_ok(&["pause", "p1"]);
    let t = std::time::Instant::now();
    w.d.docker_ok(&["stop", "-t", "1", "p1"]);
    assert!(t.elapsed() < Duration::from_secs(20), "stop of a paused container took {:?}", t.elapsed());
    assert_eq!(w.d.docker_ok(&["inspect", "-f", "{{.State.Status}}", "p1"]).trim(), "exited");
    w.d.docker_ok(&["run", "-d", "--name", "p2", &img, "sleep", "300"]);
    w.d.docker_ok(&["pause", "p2"]);
    w.d.docker_ok(&["rm", "-f", "p2"]);
    assert!(w.d.docker(&["inspect", "p2"]).assert_fail().stderr.contains("No such"));
}
