//! Desktop app benchmark (not a test): cold start to an interactive containers list, RSS with
//! 50 containers listed, and scrolling with 500 containers. Run by `src-tauri/bench/run`.
//!
//! It starts its own berthd and registry in a loopback-only namespace (berth-tests World),
//! creates the containers through the Engine API, and launches the app binary under Xvfb with
//! `BERTH_BENCH_OUT`: the front end reports when the list is first painted (bench.ts) and the
//! frame times of a scripted scroll. Start time is measured from our spawn() of the process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_tests::netns::command_in;
use berth_tests::world::World;
use serde_json::{json, Value};

fn main() {
    if !berth_tests::have_root() || !berth_tests::berthd::berthd_available() {
        eprintln!("the bench needs root and a built berthd (cargo build -p berthd)");
        std::process::exit(2);
    }
    let app = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| berth_tests::workspace_root().join("target/debug/berth-desktop"));
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    assert!(app.is_file(), "app binary {} not built", app.display());
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let dir = tempfile::tempdir().unwrap();
    let (xvfb, display) = start_xvfb(&w, dir.path());

    println!("app binary: {}", app.display());
    let mut have = 0;
    for n in [50usize, 500] {
        create_containers(&w, &img, have, n);
        have = n;
        let mut starts = Vec::new();
        let mut rss = Vec::new();
        let mut pss = Vec::new();
        let mut scroll = Value::Null;
        for i in 0..runs {
            let r = run_app(&w, &app, &display, dir.path(), i);
            starts.push(r.start_ms);
            rss.push(r.rss_mib);
            pss.push(r.pss_mib);
            scroll = r.scroll;
            assert_eq!(r.rows, n as u64, "the list showed {} rows, expected {n}", r.rows);
        }
        println!(
            "containers={n:<4} cold start to interactive list: median {:.0} ms (min {:.0}, max {:.0}, {runs} runs) | RSS of app+WebKit processes: median {:.1} MiB (PSS {:.1} MiB) | DOM rows {}",
            median(&starts), min(&starts), max(&starts), median(&rss), median(&pss), scroll["maxDomRows"]
        );
        println!(
            "               scroll of the whole list, {} frames: frame time p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            scroll["frames"], scroll["p50"].as_f64().unwrap_or(f64::NAN), scroll["p95"].as_f64().unwrap_or(f64::NAN), scroll["max"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!("targets: start < 1000 ms, RSS < 150 MiB with 50 containers, p95 frame < 33 ms (30 fps) with 500");
    drop(xvfb);
}

struct RunResult {
    start_ms: f64,
    rss_mib: f64,
    pss_mib: f64,
    rows: u64,
    scroll: Value,
}

fn run_app(w: &World, app: &Path, display: &str, dir: &Path, i: usize) -> RunResult {
    let out = dir.join(format!("bench-{i}-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let home = dir.join("home");
    let mut cmd = command_in(&w.fx.ns.path(), app);
    cmd.env("DISPLAY", display)
        .env("DOCKER_HOST", w.d.host())
        .env("BERTH_BENCH_OUT", &out)
        .env("BERTH_BENCH_EXIT", "1")
        .env("BERTH_NO_TRAY", "1")
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("NO_AT_BRIDGE", "1")
        .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("app-{i}.log"))).unwrap());
    let t0 = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0;
    let mut child = cmd.spawn().expect("spawn app");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut interactive: Option<Value> = None;
    let mut mem = (0.0, 0.0);
    let scroll = loop {
        let marks: Vec<Value> = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if interactive.is_none() {
            if let Some(m) = marks.iter().find(|m| m["label"] == "interactive") {
                // Memory at the moment the list is up, before the scroll test.
                mem = tree_memory(child.id());
                interactive = Some(m.clone());
            }
        }
        if let Some(m) = marks.iter().find(|m| m["label"] == "scroll") {
            break m["data"].clone();
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("app exited ({st}) before finishing the bench:\n{}", std::fs::read_to_string(dir.join(format!("app-{i}.log"))).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "bench timed out; marks: {marks:?}");
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = child.wait_timeout(Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    let m = interactive.expect("interactive mark");
    RunResult {
        start_ms: m["unixMs"].as_f64().unwrap() - t0,
        rss_mib: mem.0,
        pss_mib: mem.1,
        rows: m["data"]["rows"].as_u64().unwrap_or(0),
        scroll,
    }
}

trait WaitTimeout {
    fn wait_timeout(&mut self, d: Duration) -> Option<std::process::ExitStatus>;
}

impl WaitTimeout for std::process::Child {
    fn wait_timeout(&mut self, d: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// (RSS, PSS) in MiB summed over the process and all its descendants (the WebKit web and
/// network processes are children of the app).
fn tree_memory(pid: u32) -> (f64, f64) {
    let mut pids = vec![pid];
    let mut i = 0;
    while i < pids.len() {
        let p = pids[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                pids.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
        }
        i += 1;
    }
    let mut rss = 0u64;
    let mut pss = 0u64;
    let mut parts = Vec::new();
    for p in pids {
        let roll = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
        let (mut r, mut q) = (0, 0);
        for line in roll.lines() {
            let kb = |l: &str| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            if line.starts_with("Rss:") {
                r = kb(line);
            } else if line.starts_with("Pss:") {
                q = kb(line);
            }
        }
        rss += r;
        pss += q;
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        parts.push(format!("{} {:.0}/{:.0}", comm.trim(), r as f64 / 1024.0, q as f64 / 1024.0));
    }
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!("  per process RSS/PSS MiB: {}", parts.join(", "));
    }
    (rss as f64 / 1024.0, pss as f64 / 1024.0)
}

fn create_containers(w: &World, img: &str, from: usize, to: usize) {
    for i in from..to {
        let body = json!({"Image": img, "Cmd": ["true"], "Labels": {"bench": "desktop"}});
        let r = w.d.api("POST", &format!("/containers/create?name=bench-{i:04}"), Some(body.to_string().into_bytes())).unwrap();
        assert_eq!(r.status, 201, "create: {}", r.text());
    }
}

fn start_xvfb(w: &World, dir: &Path) -> (Xvfb, String) {
    for n in (400 + std::process::id() % 300)..1000 {
        if Path::new(&format!("/tmp/.X{n}-lock")).exists() {
            continue;
        }
        let display = format!(":{n}");
        let mut cmd = command_in(&w.fx.ns.path(), "Xvfb");
        cmd.args([&display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("xvfb.log")).unwrap());
        let mut child = cmd.spawn().expect("Xvfb (Debian xvfb)");
        for _ in 0..200 {
            if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
                return (Xvfb(child), display);
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("no free X display");
}

struct Xvfb(std::process::Child);

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[s.len() / 2]
}
fn min(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::INFINITY, f64::min)
}
fn max(v: &[f64]) -> f64 {
    v.iter().cloned().fold(0.0, f64::max)
}

