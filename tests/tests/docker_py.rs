//! Checklist #38: docker-py 6.1.3's own integration suite (`tests/integration` of its sdist,
//! run by pytest) against a real berthd, with the pass rate tracked.
//!
//! `tests/compat/docker-py/setup` builds a venv from PyPI (outside the namespace; idempotent);
//! berthd, its seeded images and pytest then all run inside one loopback-only namespace.
//! `tests/compat/docker-py/expected.txt` lists, each with its reason, the tests deselected
//! (out of scope for a single-node engine, or made to reach the internet), the ones known to
//! fail, and the ones pytest skips. Any other failure is a regression and fails this test; a
//! known failure that passes is reported so the list can shrink.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_tests::berthd::tail;
use berth_tests::compat::{parse_expected, say, Entry, Kind, Tally};
use berth_tests::netns::command_in;
use berth_tests::require_berthd;
use berth_tests::world::World;

const VERSION: &str = "6.1.3";

/// Local names docker-py's tests expect to exist (TEST_IMG is alpine:3.10), all built offline
/// from busybox-static. None of them is ever pulled from Docker Hub here.
const BUSYBOX_NAMES: &[&str] = &["busybox:latest", "hello-world:latest"];
const ALPINE_NAMES: &[&str] = &["alpine:3.10", "alpine:latest"];

/// Users of Alpine's /etc/passwd that docker-py's tests use (`exec(user="postgres")`).
const ALPINE_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nbin:x:1:1:bin:/bin:/sbin/nologin\n\
daemon:x:2:2:daemon:/sbin:/sbin/nologin\npostgres:x:70:70::/var/lib/postgresql:/bin/sh\n\
nobody:x:65534:65534:nobody:/:/sbin/nologin\n";
const ALPINE_GROUP: &str = "root:x:0:root\nbin:x:1:root,bin,daemon\ndaemon:x:2:root,bin,daemon\npostgres:x:70:\nnobody:x:65534:\n";

/// One line of `berth_outcomes.py`'s output.
#[derive(Debug, serde::Deserialize)]
struct Outcome {
    id: String,
    outcome: String,
    detail: String,
}

fn compat_dir() -> PathBuf {
    berth_tests::workspace_root().join("tests/compat/docker-py")
}

/// Where the venv and the unpacked sdist live (the workspace's target dir: rebuilt, never
/// committed).
fn work_dir() -> PathBuf {
    berth_tests::workspace_root().join("target/docker-py")
}

fn setup_venv() -> PathBuf {
    let t = Instant::now();
    let out = std::process::Command::new(compat_dir().join("setup"))
        .arg(work_dir())
        .output()
        .expect("run tests/compat/docker-py/setup");
    assert!(
        out.status.success(),
        "docker-py venv setup failed (needs python3-venv and PyPI):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if t.elapsed() > Duration::from_secs(2) {
        say(&format!("docker-py: venv and sdist set up in {:.1} s", t.elapsed().as_secs_f64()));
    }
    work_dir().join(format!("docker-{VERSION}"))
}

/// busybox under its names, and an "alpine": busybox plus the parts of Alpine's layout the
/// suite relies on (its users, /var/opt for `exec(workdir=...)`).
fn seed_images(w: &World) {
    use berth_tests::image::{busybox_layer, Compression, Image, LayerBuilder, RunConfig};
    let src = w.pulled("busybox:latest");
    for name in BUSYBOX_NAMES {
        w.d.docker_ok(&["tag", &src, name]);
    }
    let mut l = LayerBuilder::new();
    l.dir("etc", 0o755).unwrap()
        .file("etc/passwd", 0o644, ALPINE_PASSWD.as_bytes()).unwrap()
        .file("etc/group", 0o644, ALPINE_GROUP.as_bytes()).unwrap()
        .dir("var", 0o755).unwrap()
        .dir("var/opt", 0o755).unwrap();
    let l = l.finish(Compression::Gzip, "COPY alpine-etc /").unwrap();
    let img = Image::new(vec![busybox_layer().unwrap(), l], &RunConfig::cmd(&["/bin/sh"]), "amd64").unwrap();
    w.fx.plain_target().push_image("alpine", "3.10", &img, berth_tests::push::ManifestFormat::DockerSchema2).unwrap();
    let src = w.pulled("alpine:3.10");
    for name in ALPINE_NAMES {
        w.d.docker_ok(&["tag", &src, name]);
    }
}

/// Runs pytest inside the namespace with its output going live to `log` (so a long run can be
/// watched with `tail -f`); returns that output.
fn run_pytest(w: &World, src: &Path, entries: &[Entry], outcomes: &Path, home: &Path, log: &Path) -> String {
    let python = work_dir().join("venv/bin/python");
    let mut cmd = command_in(&w.fx.ns.path(), &python);
    cmd.current_dir(src)
        .env("DOCKER_HOST", w.d.host())
        .env("DOCKER_CONFIG", w.d.docker_config())
        .env("BERTH_OUTCOMES", outcomes)
        // docker-py's context tests write ~/.docker/contexts: never the real home.
        .env("HOME", home)
        .env("PYTHONPATH", compat_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("DOCKER_API_VERSION")
        .env_remove("DOCKER_TEST_API_VERSION")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .args(["-m", "pytest", "-p", "berth_outcomes", "-p", "no:cacheprovider"])
        // A hung test fails alone (docker-py's own client timeout is 60 s) instead of
        // hanging the suite.
        .args(["--timeout", "30", "-v", "-rf", "--tb=line", "--durations=10", "-o", "addopts="]);
    for e in entries.iter().filter(|e| e.kind == Kind::Deselect) {
        cmd.arg("--deselect").arg(&e.id);
    }
    cmd.arg("tests/integration");
    let file = std::fs::File::create(log).expect("create pytest log");
    cmd.stdin(std::process::Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    let mut child = cmd.spawn().expect("spawn pytest");
    let deadline = Instant::now() + Duration::from_secs(1500);
    while child.try_wait().expect("wait pytest").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pytest still running after 25 min:\n{}", tail(&std::fs::read_to_string(log).unwrap_or_default(), 40));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::read_to_string(log).unwrap_or_default()
}

#[test]
fn docker_py_integration_suite() {
    require_berthd!();
    let entries = parse_expected(&std::fs::read_to_string(compat_dir().join("expected.txt")).expect("read expected.txt"), false);
    let src = setup_venv();
    let w = World::start();
    seed_images(&w);
    let scratch = tempfile::tempdir().unwrap();
    let outcomes_path = scratch.path().join("outcomes.jsonl");
    let t = Instant::now();
    // docker-py keeps contexts beside the config file it finds, or in ./contexts (the sdist,
    // shared by runs) when there is none: give it one in this daemon's config dir.
    let cfg = w.d.docker_config().join("config.json");
    if !cfg.exists() {
        std::fs::write(&cfg, "{}").unwrap();
    }
    let _ = std::fs::remove_dir_all(src.join("contexts"));
    let home = scratch.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let log = run_pytest(&w, &src, &entries, &outcomes_path, &home, &work_dir().join("last-pytest.log"));
    let secs = t.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&outcomes_path).unwrap_or_else(|_| {
        panic!("pytest wrote no outcomes (collection error?):\n{}", tail(&log, 80))
    });
    let outcomes: Vec<Outcome> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("outcome line is JSON"))
        .collect();

    let listed: BTreeMap<&str, &Entry> = entries
        .iter()
        .filter(|e| e.kind != Kind::Deselect)
        .map(|e| (e.id.as_str(), e))
        .collect();
    let mut tally = Tally::default();
    let mut seen = BTreeSet::new();
    for o in &outcomes {
        seen.insert(o.id.as_str());
        let entry = listed.get(o.id.as_str()).copied();
        match o.outcome.as_str() {
            "deselected" => tally.deselected += 1,
            "passed" => tally.pass(&o.id, entry),
            "failed" => tally.fail(&o.id, &o.detail, entry),
            "skipped" => tally.skip(&o.id, &o.detail, entry),
            other => panic!("unknown outcome {other} for {}", o.id),
        }
    }
    let stale: Vec<&str> = listed.keys().copied().filter(|id| !seen.contains(id)).collect();
    let summary = tally.summary(&format!("docker-py {VERSION}"), secs);
    say(&summary);
    tally.report_now_passing("docker-py", "tests/compat/docker-py/expected.txt");
    for id in &stale {
        say(&format!("docker-py: expected.txt lists a test that did not run: {id}"));
    }
    // The whole picture for whoever updates expected.txt.
    let _ = std::fs::write(work_dir().join("last-outcomes.jsonl"), &text);
    assert!(tally.ran() > 0, "no docker-py test ran:\n{}", tail(&log, 80));
    tally.check(&summary, &format!("--- pytest tail:\n{}\n--- berthd log tail:\n{}", tail(&log, 60), tail(&w.d.log(), 60)));
}

#[test]
fn expected_list_is_well_formed() {
    let entries = parse_expected(&std::fs::read_to_string(compat_dir().join("expected.txt")).expect("read expected.txt"), false);
    let mut ids = BTreeSet::new();
    for e in &entries {
        assert!(e.id.starts_with("tests/integration/"), "{e:?}");
        assert!(ids.insert(e.id.as_str()), "listed twice: {}", e.id);
    }
    assert!(matches!(parse_expected("fail a::b -- why", false)[0].kind, Kind::Fail));
}
