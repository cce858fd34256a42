//! Desktop app benchmark (not a test): cold start to an interactive containers list, memory
//! with 50 and 500 containers listed, and scrolling with 500 containers. Run by
//! `src-tauri/bench/run` (which builds and measures the release app).
//!
//! Memory counts every process of the app: the app itself and its descendants (WebKitGTK's
//! WebKitWebProcess and WebKitNetworkProcess), RSS and PSS from each one's smaps_rollup. PSS is
//! the fair total for a tree of processes (pages they share, such as libLLVM or libwebkit, count
//! once in all, not once per process); RSS is printed too, since it is what `top` shows.
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
    let app = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| berth_tests::workspace_root().join("target/release/berth-desktop"));
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    assert!(app.is_file(), "app binary {} not built", app.display());
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let dir = tempfile::tempdir().unwrap();
    let (xvfb, display) = start_xvfb(&w, dir.path());

    println!("app binary: {} | berthd: {}", app.display(), berth_tests::berthd::berthd_binary().display());
    let variants = variants();
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "50,500".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut have = 0;
    for n in sizes {
        create_containers(&w, &img, have, n);
        have = n;
        if std::env::var_os("BENCH_FLOOR").is_some() {
            floor(&w, &app, &display, dir.path(), runs);
        }
        // Runs alternate between the variants (run 1 of each, run 2 of each, ...) so that the
        // load of a shared machine hits them alike.
        let mut results: Vec<Vec<RunResult>> = variants.iter().map(|_| Vec::new()).collect();
        let mut failed = vec![false; variants.len()];
        for i in 0..runs {
            for (k, v) in variants.iter().enumerate() {
                if failed[k] {
                    continue;
                }
                // A variant that breaks the app (say, a WebKit setting under which the web
                // process cannot start) is reported as such; the others go on.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_app(&w, &app, &display, dir.path(), i, &v.1)));
                match r {
                    Ok(r) => {
                        assert_eq!(r.rows, n as u64, "the list showed {} rows, expected {n}", r.rows);
                        results[k].push(r);
                    }
                    Err(_) if variants.len() > 1 => failed[k] = true,
                    Err(e) => std::panic::resume_unwind(e),
                }
            }
        }
        for ((v, rs), bad) in variants.iter().zip(&results).zip(&failed) {
            if variants.len() > 1 {
                println!("variant {}: {}", v.0, v.1.iter().map(|(k, x)| format!("{k}={x}")).collect::<Vec<_>>().join(" "));
            }
            if *bad {
                println!("               FAILED: the app did not show its list (see the panic above)");
            } else {
                report(n, rs.len(), rs);
            }
        }
    }
    println!("targets: start < 1000 ms, memory < 150 MiB with 50 containers, p95 frame < 33 ms (30 fps) with 500");
    drop(xvfb);
}

/// `BENCH_VARIANTS="name:K=V K=V;name2:K=V"`: environment variants of the app to compare in one
/// run (each lever measured on its own, alternating with the others). Default: the app as it is.
fn variants() -> Vec<(String, Vec<(String, String)>)> {
    let Ok(spec) = std::env::var("BENCH_VARIANTS") else { return vec![("app".into(), Vec::new())] };
    spec.split(';')
        .filter(|s| !s.trim().is_empty())
        .map(|v| {
            let (name, vars) = v.split_once(':').unwrap_or((v, ""));
            let vars = vars.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, x)| (k.to_string(), x.to_string())).collect();
            (name.trim().to_string(), vars)
        })
        .collect()
}

fn report(n: usize, runs: usize, rs: &[RunResult]) {
    let starts: Vec<f64> = rs.iter().map(|r| r.start_ms).collect();
    let at_ready: Vec<Vec<ProcMem>> = rs.iter().map(|r| r.at_ready.clone()).collect();
    let scrolled: Vec<Vec<ProcMem>> = rs.iter().map(|r| r.after_scroll.clone()).collect();
    let scroll = &rs.last().expect("runs").scroll;
    let p95s: Vec<f64> = rs.iter().map(|r| r.scroll["p95"].as_f64().unwrap_or(f64::NAN)).collect();
    let total = |v: &[Vec<ProcMem>], f: fn(&ProcMem) -> f64| v.iter().map(|t| t.iter().map(f).sum()).collect::<Vec<f64>>();
    println!(
        "containers={n:<4} cold start to interactive list: median {:.0} ms (min {:.0}, max {:.0}, {runs} runs) | DOM rows {}",
        median(&starts), min(&starts), max(&starts), scroll["maxDomRows"]
    );
    let phase_line: Vec<String> = rs[0]
        .phases
        .iter()
        .enumerate()
        .map(|(k, (name, _))| format!("{name} {:.0}", median(&rs.iter().map(|r| r.phases[k].1).collect::<Vec<_>>())))
        .collect();
    println!("               where the start goes (ms after spawn, medians): {}", phase_line.join(", "));
    println!(
        "               memory, all processes of the app, when the list is up: RSS {:.1} MiB, PSS {:.1} MiB (medians); after scrolling the whole list: RSS {:.1} MiB, PSS {:.1} MiB",
        median(&total(&at_ready, |p| p.rss)), median(&total(&at_ready, |p| p.pss)), median(&total(&scrolled, |p| p.rss)), median(&total(&scrolled, |p| p.pss))
    );
    println!("               per process when the list is up (RSS/PSS MiB, medians): {}", per_process(&at_ready));
    println!(
        "               scroll of the whole list, {} frames (last run): frame time p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms; p95 median of runs {:.1} ms",
        scroll["frames"], scroll["p50"].as_f64().unwrap_or(f64::NAN), scroll["p95"].as_f64().unwrap_or(f64::NAN), scroll["max"].as_f64().unwrap_or(f64::NAN), median(&p95s)
    );
}

/// `BENCH_FLOOR=1`: the fixed cost of the stack, measured like the app (same namespace, Xvfb and
/// environment, all processes, RSS and PSS) but with no UI code: the blank Tauri window
/// (examples/blank_window.rs, release, same tauri/wry) and Debian's MiniBrowser (WebKitGTK's own
/// test browser, no Tauri) on an empty HTML page, with the WebKit variables the app sets for itself.
/// Sampled 2.5 s after the web process appears (the page is loaded and the memory settled).
fn floor(w: &World, app: &Path, display: &str, dir: &Path, runs: usize) {
    let blank = app.parent().unwrap().join("examples/blank_window");
    let mini = Path::new("/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser");
    // An empty HTML file (about:blank would not do: WebKit shows it without a web process).
    let blank_html = dir.join("blank.html");
    std::fs::write(&blank_html, "<!doctype html><html><head><title>blank</title></head><body></body></html>").unwrap();
    let blank_url = format!("file://{}", blank_html.display());
    let mut progs: Vec<(&str, PathBuf, Vec<&str>)> = Vec::new();
    if blank.is_file() {
        progs.push(("tauri blank window", blank, vec![]));
    }
    if mini.is_file() {
        progs.push(("MiniBrowser blank page", mini.to_path_buf(), vec![blank_url.as_str()]));
    }
    let mut got: Vec<Vec<Vec<ProcMem>>> = progs.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (k, (_, prog, args)) in progs.iter().enumerate() {
            let mut cmd = command_in(&w.fx.ns.path(), prog);
            cmd.args(args);
            app_env(&mut cmd, display, w, &dir.join("home"));
            cmd.env("WEBKIT_DISABLE_COMPOSITING_MODE", "1").env("GDK_GL", "disable").env("WEBKIT_DISABLE_DMABUF_RENDERER", "1");
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(dir.join("floor.log")).unwrap());
            let mut child = cmd.spawn().expect("spawn floor program");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let web = descendants(child.id()).iter().any(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default().starts_with("WebKitWebProces"));
                if web {
                    break;
                }
                if let Ok(Some(st)) = child.try_wait() {
                    panic!("{} exited ({st}): {}", prog.display(), std::fs::read_to_string(dir.join("floor.log")).unwrap_or_default());
                }
                if Instant::now() > deadline {
                    stop_tree(child);
                    panic!("no web process from {}", prog.display());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(2500));
            got[k].push(tree_memory(child.id(), "floor"));
            stop_tree(child);
        }
    }
    for ((name, _, _), m) in progs.iter().zip(&got) {
        let total = |f: fn(&ProcMem) -> f64| m.iter().map(|t| t.iter().map(f).sum()).collect::<Vec<f64>>();
        println!(
            "floor: {name:<24} all processes RSS {:.1} MiB, PSS {:.1} MiB (medians of {runs}); per process (RSS/PSS): {}",
            median(&total(|p| p.rss)), median(&total(|p| p.pss)), per_process(m)
        );
    }
}

/// The environment every measured program gets: the bench's display, a private HOME and XDG
/// dirs, no accessibility bus, no session bus.
fn app_env(cmd: &mut std::process::Command, display: &str, w: &World, home: &Path) {
    cmd.env("DISPLAY", display)
        .env("DOCKER_HOST", w.d.host())
        .env("BERTH_NO_TRAY", "1")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("NO_AT_BRIDGE", "1")
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
}

/// Kills a measured program and the WebKit processes under it.
fn stop_tree(mut child: std::process::Child) {
    let family = descendants(child.id());
    let _ = child.kill();
    let _ = child.wait();
    // WebKit's processes exit when the app's end of their socket closes; make sure of it.
    let end = Instant::now() + Duration::from_secs(5);
    while family.iter().any(|p| Path::new(&format!("/proc/{p}")).exists()) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in family {
        // SAFETY: plain kill(2) of a process this bench started (a descendant of its child).
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
}

/// "name rss/pss" per process kind, medians over the runs (processes matched by command name).
fn per_process(runs: &[Vec<ProcMem>]) -> String {
    let mut names: Vec<String> = Vec::new();
    for r in runs {
        for p in r {
            if !names.contains(&p.comm) {
                names.push(p.comm.clone());
            }
        }
    }
    names
        .iter()
        .map(|n| {
            let pick = |f: fn(&ProcMem) -> f64| runs.iter().map(|r| r.iter().filter(|p| &p.comm == n).map(f).sum()).collect::<Vec<f64>>();
            format!("{n} {:.0}/{:.0}", median(&pick(|p| p.rss)), median(&pick(|p| p.pss)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

struct RunResult {
    start_ms: f64,
    /// Milestones in ms since spawn: the Rust side's `main` and `setup`, then the page's
    /// navigation start, script run, list data rendered, list painted.
    phases: Vec<(&'static str, f64)>,
    /// Memory of each process when the list is first painted.
    at_ready: Vec<ProcMem>,
    /// Memory of each process after the scripted scroll through the whole list.
    after_scroll: Vec<ProcMem>,
    rows: u64,
    scroll: Value,
}

fn run_app(w: &World, app: &Path, display: &str, dir: &Path, i: usize, extra: &[(String, String)]) -> RunResult {
    let out = dir.join(format!("bench-{i}-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let home = dir.join("home");
    let mut cmd = command_in(&w.fx.ns.path(), app);
    app_env(&mut cmd, display, w, &home);
    cmd.env("BERTH_BENCH_OUT", &out).envs(extra.iter().map(|(k, v)| (k, v)));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("app-{i}.log"))).unwrap());
    let t0 = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0;
    let mut child = cmd.spawn().expect("spawn app");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut interactive: Option<Value> = None;
    let mut at_ready = Vec::new();
    let scroll = loop {
        let marks: Vec<Value> = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if interactive.is_none() {
            if let Some(m) = marks.iter().find(|m| m["label"] == "interactive") {
                // Memory at the moment the list is up, before the scroll test.
                at_ready = tree_memory(child.id(), "list up");
                interactive = Some(m.clone());
            }
        }
        if let Some(m) = marks.iter().find(|m| m["label"] == "scroll") {
            break m["data"].clone();
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("app exited ({st}) before finishing the bench:\n{}", std::fs::read_to_string(dir.join(format!("app-{i}.log"))).unwrap_or_default());
        }
        if Instant::now() > deadline {
            let log = dir.join(format!("app-{i}.log"));
            stop_tree(child);
            panic!("bench timed out; marks: {marks:?}\napp log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // The app stays up after the scroll (no BERTH_BENCH_EXIT): memory once more, then stop it.
    let after_scroll = tree_memory(child.id(), "after the scroll");
    stop_tree(child);
    let m = interactive.expect("interactive mark");
    let marks: Vec<Value> = std::fs::read_to_string(&out).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let stamp = |label: &str| marks.iter().find(|m| m["label"] == label).and_then(|m| m["unixMs"].as_f64()).map(|t| t - t0).unwrap_or(f64::NAN);
    let page = |k: &str| m["data"]["phases"][k].as_f64().map(|t| t - t0).unwrap_or(f64::NAN);
    let phases = vec![
        ("main", stamp("main")),
        ("setup", stamp("setup")),
        ("navigation", page("navigation")),
        ("script", page("script")),
        ("listed", page("listed")),
        ("painted", page("painted")),
    ];
    RunResult {
        phases,
        start_ms: m["unixMs"].as_f64().unwrap() - t0,
        at_ready,
        after_scroll,
        rows: m["data"]["rows"].as_u64().unwrap_or(0),
        scroll,
    }
}

/// Memory of one process of the app: its command name and RSS/PSS in MiB from smaps_rollup.
#[derive(Clone)]
struct ProcMem {
    comm: String,
    rss: f64,
    pss: f64,
}

/// The process and all its descendants, by /proc/<pid>/task/*/children.
fn descendants(pid: u32) -> Vec<u32> {
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
    pids.split_off(1)
}

/// The app process and all its descendants (WebKitGTK starts its web and network processes as
/// children of the app), each with RSS and PSS. With `BENCH_SMAPS=1` it also prints each
/// process's largest mappings (what the memory is: libraries, heap, JIT, GPU buffers).
fn tree_memory(pid: u32, when: &str) -> Vec<ProcMem> {
    let mut out = Vec::new();
    for p in std::iter::once(pid).chain(descendants(pid)) {
        let roll = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
        let (mut r, mut q) = (0, 0);
        for line in roll.lines() {
            if line.starts_with("Rss:") {
                r = kb(line);
            } else if line.starts_with("Pss:") {
                q = kb(line);
            }
        }
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default().trim().to_string();
        if std::env::var_os("BENCH_SMAPS").is_some() {
            print_top_mappings(p, &comm, when);
        }
        out.push(ProcMem { comm, rss: r as f64 / 1024.0, pss: q as f64 / 1024.0 });
    }
    out
}

fn kb(line: &str) -> u64 {
    line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// The 20 largest mappings of a process by RSS, summed per file (anonymous ones per kind).
fn print_top_mappings(pid: u32, comm: &str, when: &str) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by: std::collections::HashMap<String, (u64, u64, u64)> = Default::default();
    let mut name = String::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let rest: Vec<&str> = f.collect();
            name = rest.get(4).map(|s| s.to_string()).unwrap_or_else(|| format!("[anon {}]", rest.first().unwrap_or(&"")));
        } else {
            let e = by.entry(name.clone()).or_default();
            match first {
                "Rss:" => e.0 += kb(line),
                "Pss:" => e.1 += kb(line),
                "Private_Dirty:" => e.2 += kb(line),
                _ => {}
            }
        }
    }
    let mut v: Vec<_> = by.into_iter().collect();
    v.sort_by(|a, b| b.1 .0.cmp(&a.1 .0));
    eprintln!("  {comm} ({pid}) {when}: largest mappings, MiB: RSS / PSS / private dirty");
    for (n, (r, p, d)) in v.into_iter().take(20) {
        eprintln!("    {:7.1} {:7.1} {:7.1}  {n}", r as f64 / 1024.0, p as f64 / 1024.0, d as f64 / 1024.0);
    }
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
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}
fn min(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::INFINITY, f64::min)
}
fn max(v: &[f64]) -> f64 {
    v.iter().cloned().fold(0.0, f64::max)
}

