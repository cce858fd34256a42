//! Checklist #38: moby 20.10's own API integration tests (`integration/<pkg>` of Debian's
//! docker.io 20.10.24 source, compiled by `tests/compat/moby/setup` as Go test binaries) against
//! a real berthd, with the pass rate tracked.
//!
//! Each top-level Go test runs in its own process (`<pkg>.test -test.run '^Name$'`) inside a
//! loopback-only namespace, so a hang fails that one test (its own `-test.timeout`) and the
//! listed deselects are simply not started (Go 1.19 has no `-test.skip`). Tests run one at a
//! time: each ends with moby's `testEnv.Clean`, which removes every container, image, volume
//! and network that did not exist when it started.
//!
//! The daemon is declared remote (`DOCKER_REMOTE_DAEMON=1`): moby's tests that start and
//! restart a dockerd of their own (`testutil/daemon`) then skip themselves instead of starting
//! whatever `dockerd` is on PATH, which would test that daemon, not berthd. The tests listed
//! as `local` (they look at the daemon's host from the test process and start no daemon) run
//! with the daemon declared local, a refusing `dockerd` stub first on PATH. Frozen images
//! (`busybox:latest` and the others `testutil/environment` protects) are seeded from the
//! offline busybox-static fixture before the run, so nothing is pulled.
//!
//! `tests/compat/moby/expected.txt` lists, each with its reason, every test that is deselected,
//! known to fail, flaky, or that moby skips itself. Any other failure or skip fails this test;
//! a known failure that passes is reported so the list can shrink.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_tests::berthd::tail;
use berth_tests::compat::{parse_expected, say, Entry, Kind, Tally};
use berth_tests::netns::command_in;
use berth_tests::require_berthd;
use berth_tests::world::World;

/// The `integration/` packages compiled by the setup script, in run order. Left out: `build`
/// (not yet: its session, squash, userns and cgroupns files need BuildKit, an experimental
/// daemon or a dockerd of their own), `plugin/*`, `service`, `secret`, `config` (managed
/// plugins and swarm: out of scope for a single-node engine), `daemon` (every test starts its
/// own dockerd), `session` (the experimental BuildKit session endpoint).
const PACKAGES: &[&str] = &["system", "image", "volume", "network", "container"];

/// The frozen images of moby 20.10's `testutil/environment`: present under these names, moby's
/// `EnsureFrozenImagesLinux` loads nothing. All are the busybox fixture: the compiled packages
/// use busybox only (`debian:bullseye-slim` is used by `integration/build`, not compiled).
const FROZEN: &[&str] = &["busybox:latest", "busybox:glibc", "hello-world:frozen", "debian:bullseye-slim"];

/// Per-test limit: the slowest tests here take about 10 s (health checks, stop timeouts); a
/// hang fails alone after this.
const TEST_TIMEOUT: &str = "180s";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

/// The outcome of top-level test `name` from its `-test.v` output: its `--- PASS/FAIL/SKIP:`
/// line (at column 0; subtests are indented). No such line (a panic, a timeout, a TestMain
/// failure) is a failure whose detail is the output's tail. Each process runs one top-level
/// test, so every indented log line (Go streams them before the verdict) belongs to it.
fn parse_outcome(name: &str, out: &str) -> Outcome {
    let verdict = out.lines().find_map(|l| {
        let (verdict, rest) = l.strip_prefix("--- ")?.split_once(": ")?;
        (rest.split_whitespace().next() == Some(name)).then_some(verdict)
    });
    let detail = || {
        let d: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("    "))
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("=== ") && !l.starts_with("--- PASS"))
            .collect();
        let d = d.join(" | ");
        truncate(&d, 700)
    };
    match verdict {
        Some("PASS") => Outcome::Pass,
        Some("SKIP") => Outcome::Skip(detail()),
        Some(_) => {
            let d = detail();
            Outcome::Fail(if d.is_empty() { tail(out, 15) } else { d })
        }
        None => Outcome::Fail(format!("no result line for {name}:\n{}", tail(out, 15))),
    }
}

/// At most `n` bytes of `s` (cut at a char boundary), marked when cut.
fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut i = n;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    format!("{}...", &s[..i])
}

fn compat_dir() -> PathBuf {
    berth_tests::workspace_root().join("tests/compat/moby")
}

/// Where the source and the test binaries live (the workspace's target dir: rebuilt, never
/// committed).
fn work_dir() -> PathBuf {
    berth_tests::workspace_root().join("target/moby")
}

fn setup() {
    let t = Instant::now();
    let out = std::process::Command::new(compat_dir().join("setup"))
        .arg(work_dir())
        .output()
        .expect("run tests/compat/moby/setup");
    assert!(
        out.status.success(),
        "moby integration setup failed (needs golang-go and tests/compat/moby/debian-packages; .ci/run installs them):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if t.elapsed() > Duration::from_secs(2) {
        say(&format!(
            "moby: source fetched and test binaries built in {:.0} s\n{}",
            t.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
}

/// Users and groups of Docker Hub's busybox image, which moby's tests rely on (`exec` as
/// `daemon`, `id` output with names).
const BUSYBOX_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
bin:x:2:2:bin:/bin:/bin/false\nsys:x:3:3:sys:/dev:/bin/false\nsync:x:4:100:sync:/bin:/bin/sync\n\
mail:x:8:8:mail:/var/spool/mail:/bin/false\nwww-data:x:33:33:www-data:/var/www:/bin/false\n\
operator:x:37:37:Operator:/var:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n";
const BUSYBOX_GROUP: &str = "root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\nadm:x:4:\ntty:x:5:\ndisk:x:6:\n\
lp:x:7:\nmail:x:8:\nkmem:x:9:\nwheel:x:10:root\ncdrom:x:11:\ndialout:x:18:\nfloppy:x:19:\nvideo:x:28:\n\
audio:x:29:\ntape:x:32:\nwww-data:x:33:\noperator:x:37:\nutmp:x:43:\nplugdev:x:46:\nstaff:x:50:\n\
lock:x:54:\nnetdev:x:82:\nusers:x:100:\nnogroup:x:65534:\n";

/// The frozen images: busybox-static plus Docker Hub busybox's /etc users and groups, pushed
/// to the namespace's registry, pulled, and tagged under moby's names.
fn seed_images(w: &World) {
    use berth_tests::image::{busybox_layer, Compression, Image, LayerBuilder, RunConfig};
    let mut l = LayerBuilder::new();
    l.dir("etc", 0o755).unwrap()
        .file("etc/passwd", 0o644, BUSYBOX_PASSWD.as_bytes()).unwrap()
        .file("etc/group", 0o644, BUSYBOX_GROUP.as_bytes()).unwrap();
    let l = l.finish(Compression::Gzip, "COPY busybox-etc /").unwrap();
    let img = Image::new(vec![busybox_layer().unwrap(), l], &RunConfig::cmd(&["sh"]), "amd64").unwrap();
    w.fx.plain_target()
        .push_image("moby-busybox", "latest", &img, berth_tests::push::ManifestFormat::DockerSchema2)
        .unwrap();
    let src = w.pulled("moby-busybox:latest");
    for name in FROZEN {
        w.d.docker_ok(&["tag", &src, name]);
    }
    w.d.docker_ok(&["rmi", &src]);
    // moby's CI has arm32v7/hello-world frozen too (TestCreatePlatformSpecificImageNoPlatform
    // creates a container from an image of another platform): busybox labelled as arm.
    let arm = Image::new(vec![busybox_layer().unwrap()], &RunConfig::cmd(&["/hello"]), "arm").unwrap();
    w.fx.plain_target()
        .push_image("moby-arm", "latest", &arm, berth_tests::push::ManifestFormat::DockerSchema2)
        .unwrap();
    let src = w.pulled("moby-arm:latest");
    w.d.docker_ok(&["tag", &src, "arm32v7/hello-world:latest"]);
    w.d.docker_ok(&["rmi", &src]);
}

/// A test binary as moby's CI runs it: from its package's source dir (some tests read
/// `testdata/` beside them), against our socket only.
fn test_command(w: &World, pkg: &str, home: &Path) -> std::process::Command {
    let bin = work_dir().join(format!("bin/{pkg}.test"));
    let mut cmd = command_in(&w.fx.ns.path(), &bin);
    cmd.current_dir(work_dir().join(format!("gopath/src/github.com/docker/docker/integration/{pkg}")))
        .env("DOCKER_HOST", w.d.host())
        .env("DOCKER_REMOTE_DAEMON", "1")
        .env("HOME", home)
        .env("DOCKER_CONFIG", w.d.docker_config())
        .env_remove("DOCKER_API_VERSION")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("DOCKER_ROOTLESS")
        .env_remove("DOCKER_REMAP_ROOT")
        .env_remove("TEST_OSTYPE")
        .stdin(Stdio::null());
    cmd
}

/// Top-level test names of `pkg` (`-test.list`; TestMain still checks the daemon first).
fn list_tests(w: &World, pkg: &str, home: &Path) -> Vec<String> {
    let out = test_command(w, pkg, home).args(["-test.list", "."]).output().expect("spawn test binary");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{pkg}.test -test.list failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().filter(|l| l.starts_with("Test")).map(str::to_string).collect()
}

fn run_one(w: &World, pkg: &str, name: &str, home: &Path, local: bool, log: &mut std::fs::File) -> (Outcome, f64) {
    let t = Instant::now();
    let mut cmd = test_command(w, pkg, home);
    if local {
        // A `dockerd` that refuses first on PATH: a test listed as local that tries to start
        // its own daemon fails loudly instead of testing Debian's dockerd.
        let stub = home.join("stub-bin");
        if !stub.join("dockerd").exists() {
            std::fs::create_dir_all(&stub).unwrap();
            std::fs::write(stub.join("dockerd"), "#!/bin/sh\necho 'berth: a test listed as local tried to start dockerd' >&2\nexit 1\n").unwrap();
            std::fs::set_permissions(stub.join("dockerd"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        let path = format!("{}:{}", stub.display(), std::env::var("PATH").unwrap_or_default());
        cmd.env_remove("DOCKER_REMOTE_DAEMON").env("PATH", path);
    }
    let out = cmd
        .args(["-test.v", "-test.timeout", TEST_TIMEOUT, "-test.run"])
        .arg(format!("^{name}$"))
        .output()
        .expect("spawn test binary");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = writeln!(log, "##### {pkg}/{name} (local: {local}, {:?})\n{text}", out.status);
    (parse_outcome(name, &text), t.elapsed().as_secs_f64())
}

#[test]
fn moby_integration_suite() {
    require_berthd!();
    let entries = parse_expected(&std::fs::read_to_string(compat_dir().join("expected.txt")).expect("read expected.txt"), true);
    let by_id: BTreeMap<&str, &Entry> =
        entries.iter().filter(|e| e.kind != Kind::Local).map(|e| (e.id.as_str(), e)).collect();
    let local: BTreeSet<&str> = entries.iter().filter(|e| e.kind == Kind::Local).map(|e| e.id.as_str()).collect();
    setup();
    let w = World::start();
    seed_images(&w);
    let scratch = tempfile::tempdir().unwrap();
    let home = scratch.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let log_path = work_dir().join("last-run.log");
    let mut log = std::fs::File::create(&log_path).unwrap();
    let only = std::env::var("BERTH_MOBY_ONLY").ok();

    let t = Instant::now();
    let mut tally = Tally::default();
    let mut seen = BTreeSet::new();
    let mut record = String::new();
    let mut slow = Vec::new();
    for pkg in PACKAGES {
        for name in list_tests(&w, pkg, &home) {
            let id = format!("{pkg}/{name}");
            seen.insert(id.clone());
            if only.as_deref().is_some_and(|o| !id.contains(o)) {
                continue;
            }
            let entry = by_id.get(id.as_str()).copied();
            if entry.map(|e| e.kind) == Some(Kind::Deselect) {
                tally.deselected += 1;
                record.push_str(&format!("deselected {id}\n"));
                continue;
            }
            let (outcome, secs) = run_one(&w, pkg, &name, &home, local.contains(id.as_str()), &mut log);
            slow.push((secs, id.clone()));
            match &outcome {
                Outcome::Pass => tally.pass(&id, entry),
                Outcome::Fail(detail) => tally.fail(&id, detail, entry),
                Outcome::Skip(detail) => tally.skip(&id, detail, entry),
            }
            record.push_str(&format!("{outcome:?} {id} {secs:.1}s\n"));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::write(work_dir().join("last-outcomes.txt"), &record);
    let summary = tally.summary(&format!("moby integration 20.10.24 ({})", PACKAGES.join(", ")), secs);
    say(&summary);
    slow.sort_by(|a, b| b.0.total_cmp(&a.0));
    say(&format!(
        "moby: slowest: {}",
        slow.iter().take(5).map(|(s, id)| format!("{id} {s:.0}s")).collect::<Vec<_>>().join(", ")
    ));
    tally.report_now_passing("moby", "tests/compat/moby/expected.txt");
    if only.is_none() {
        for e in &entries {
            if !seen.contains(&e.id) {
                say(&format!("moby: expected.txt lists a test that does not exist: {}", e.id));
            }
        }
    }
    assert!(tally.ran() > 0, "no moby integration test ran; see {}", log_path.display());
    tally.check(&summary, &format!("(full output: {})\n--- berthd log tail:\n{}", log_path.display(), tail(&w.d.log(), 40)));
}

#[test]
fn expected_list_is_well_formed() {
    let entries = parse_expected(&std::fs::read_to_string(compat_dir().join("expected.txt")).expect("read expected.txt"), true);
    let mut ids = BTreeSet::new();
    for e in &entries {
        let (pkg, name) = e.id.split_once('/').unwrap_or_else(|| panic!("{e:?}: want <pkg>/<Test>"));
        assert!(PACKAGES.contains(&pkg), "{e:?}: package not compiled");
        assert!(name.starts_with("Test") && !name.contains('/'), "{e:?}: top-level tests only");
        let key = (e.kind == Kind::Local, e.id.as_str());
        assert!(ids.insert(key), "listed twice: {}", e.id);
    }
}

#[test]
fn go_test_output_is_parsed_per_top_level_test() {
    let out = "=== RUN   TestA\n=== RUN   TestA/sub\n    a_test.go:3: boom\n    --- FAIL: TestA/sub (0.00s)\n--- FAIL: TestA (0.01s)\nFAIL\n";
    assert_eq!(parse_outcome("TestA", out), Outcome::Fail("a_test.go:3: boom | --- FAIL: TestA/sub (0.00s)".into()));
    let out = "=== RUN   TestB\n    b_test.go:5: skipping test: testEnv.IsRemoteDaemon()\n--- SKIP: TestB (0.00s)\nPASS\n";
    assert_eq!(parse_outcome("TestB", out), Outcome::Skip("b_test.go:5: skipping test: testEnv.IsRemoteDaemon()".into()));
    assert_eq!(parse_outcome("TestC", "--- PASS: TestC (0.10s)\nPASS\n"), Outcome::Pass);
    // A longer name with the same prefix is another test.
    assert!(matches!(parse_outcome("TestCD", "--- PASS: TestC (0.10s)\n"), Outcome::Fail(_)));
    assert!(matches!(parse_outcome("TestD", "panic: test timed out after 3m0s\n"), Outcome::Fail(_)));
}
