//! The desktop app end to end: a real window under Xvfb driven by WebDriver (WebKitWebDriver),
//! against a real berthd and the local registry, in a loopback-only namespace. Everything the
//! user does is done by clicking and typing; assertions read the page, and the engine's own
//! API confirms the result. Screenshots of each screen go to target/screenshots/ (docs/screenshots/
//! with BERTH_UPDATE_SCREENSHOTS=1).

mod support;

use std::time::Duration;

use berth_tests::image::WEB_MARKER;
use berth_tests::require_berthd;
use berth_tests::world::World;
use serde_json::json;
use support::Session;

const T: Duration = Duration::from_secs(60);

fn css_attr(v: &str) -> String {
    json!(v).to_string()
}

#[test]
fn desktop_app_pull_run_logs_terminal_stop_delete() {
    require_berthd!();
    require_gui!();
    let mut w = World::start();
    let dir = tempfile::tempdir().unwrap();
    // README's screenshots are refreshed on request only, so a test run leaves the tree clean.
    let shots = match std::env::var_os("BERTH_UPDATE_SCREENSHOTS") {
        Some(_) => berth_tests::workspace_root().join("docs/screenshots"),
        None => berth_tests::workspace_root().join("target/screenshots"),
    };
    let (_xvfb, display) = support::start_xvfb(&w.fx.ns, dir.path());
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let env = [
        ("DOCKER_HOST", w.d.host()),
        ("HOME", home.display().to_string()),
        ("XDG_CONFIG_HOME", home.join(".config").display().to_string()),
        ("XDG_DATA_HOME", home.join(".local/share").display().to_string()),
        ("XDG_CACHE_HOME", home.join(".cache").display().to_string()),
        ("XDG_RUNTIME_DIR", dir.path().display().to_string()),
    ];
    // The system's URL opener, as the app finds it on PATH: this one records what it was asked
    // to open (the test must not start a browser).
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let opened = dir.path().join("opened.txt");
    std::fs::write(bin.join("xdg-open"), format!("#!/bin/sh\necho \"$@\" >> {}\n", opened.display())).unwrap();
    std::fs::set_permissions(bin.join("xdg-open"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let env: Vec<(&str, String)> = env.into_iter().chain([("PATH", path)]).collect();
    let (driver, addr) = support::start_webdriver(&w.fx.ns, dir.path(), &display, &env);
    let app = std::path::PathBuf::from(env!("CARGO_BIN_EXE_berth-desktop"));
    let s = Session::new(&w.fx.ns, &addr, &app, &[]);
    let run = std::panic::AssertUnwindSafe(|| {
        scenario(&s, &W { d: &w.d, fx: &w.fx }, &shots, &opened);
        engine_restart(&s, &mut w.d, &w.fx);
    });
    if let Err(p) = std::panic::catch_unwind(run) {
        let _ = std::fs::create_dir_all(dir.path());
        if let Err(e) = s.try_screenshot(&dir.path().join("failure.png")) {
            eprintln!("no failure screenshot: {e}");
        }
        eprintln!("failure screenshot: {}\n--- webdriver/app log:\n{}", dir.path().join("failure.png").display(), berth_tests::berthd::tail(&driver.log(), 60));
        let keep = dir.keep();
        eprintln!("kept {}", keep.display());
        std::panic::resume_unwind(p);
    }
}

/// The parts of the World the scenario reads (the daemon handle stays free for a restart).
struct W<'a> {
    d: &'a berth_tests::berthd::Berthd,
    fx: &'a berth_tests::fixtures::Fixtures,
}

fn scenario(s: &Session, w: &W<'_>, shots: &std::path::Path, opened: &std::path::Path) {
    let port = w.fx.ns.free_port().unwrap();
    let busybox = w.fx.reference("busybox:latest");
    let web = w.fx.reference("web:latest");

    // The app comes up on the Containers screen, connected to the engine.
    s.wait_js("containers screen", "return document.querySelector('[data-testid=screen-containers]') && document.querySelector('[data-testid=containers-empty]')?.offsetParent !== null", T);
    s.wait_js("engine pill", "return document.querySelector('[data-testid=engine-pill]').textContent.includes('Engine running')", T);

    // Images: pull busybox and web by name, with per-layer progress.
    s.click("[data-testid=nav-images]");
    for reference in [&busybox, &web] {
        s.type_into("[data-testid=pull-input]", reference);
        s.click("[data-testid=pull-button]");
        let sel = format!("[data-testid=pull][data-ref={}]", css_attr(reference));
        s.wait_js(&format!("pull of {reference} done"), &format!("return document.querySelector({})?.dataset.done === '1'", css_attr(&sel)), T);
        let layers = s.js(&format!(
            "return [...document.querySelectorAll({} + ' [data-testid=layer-progress]')].map(l => [l.dataset.layer, l.dataset.done, l.querySelector('.fill').style.width, l.querySelector('.layer-status').textContent])",
            css_attr(&sel)
        ));
        let layers = layers.as_array().unwrap().clone();
        assert!(!layers.is_empty(), "no layer progress shown for {reference}");
        for l in &layers {
            assert_eq!(l[1], "1", "layer not complete: {l}");
            assert_eq!(l[2].as_str().unwrap().trim_end_matches('%').parse::<f64>().unwrap(), 100.0, "bar not full: {l}");
            let status = l[3].as_str().unwrap();
            assert!(status == "Pull complete" || status == "Already exists", "{l}");
        }
        let ref_sel = format!("[data-testid=image-row][data-ref={}]", css_attr(reference));
        s.wait_js("image listed", &format!("return !!document.querySelector({})", css_attr(&ref_sel)), T);
        // Clear the input for the next one.
        s.js("document.querySelector('[data-testid=pull-input]').value = ''; return true");
    }
    // web shares busybox's layer: the second pull says so.
    let web_sel = format!("[data-testid=pull][data-ref={}] [data-testid=layer-progress] .layer-status", css_attr(&web));
    let web_layers = s.js(&format!("return [...document.querySelectorAll({})].map(e => e.textContent)", css_attr(&web_sel)));
    assert!(web_layers.as_array().unwrap().iter().any(|v| v == "Already exists"), "{web_layers}");
    assert!(web_layers.as_array().unwrap().iter().any(|v| v == "Pull complete"), "{web_layers}");
    s.screenshot(&shots.join("images.png"));
    let images = w.d.api("GET", "/images/json", None).unwrap().json().unwrap();
    assert_eq!(images.as_array().unwrap().len(), 2, "{images}");

    // A bad pull shows the engine's own message.
    let missing = w.fx.reference("nosuch:1");
    let engine_says = w.d.api("POST", &format!("/images/create?fromImage={missing}"), None).unwrap().text();
    s.type_into("[data-testid=pull-input]", &missing);
    s.click("[data-testid=pull-button]");
    let notice = s.wait_js("pull error notice", "return document.querySelector('[data-testid=notice-error] .notice-text')?.textContent", T);
    let notice = notice.as_str().unwrap().to_string();
    assert!(!notice.is_empty() && engine_says.contains(&notice), "notice {notice:?} is not the engine's message {engine_says:?}");
    s.click("[data-testid=notice-close]");
    s.js("document.querySelector('[data-testid=pull-input]').value = ''; return true");

    // Volumes: create one from its screen, to mount in the container below.
    s.click("[data-testid=nav-volumes]");
    s.type_into("[data-testid=volume-create-name]", "gui-vol");
    s.click("[data-testid=volume-create]");
    s.wait_js("volume listed", "return !!document.querySelector('[data-testid=volume-row][data-name=gui-vol]')", T);
    s.click("[data-testid=volume-row][data-name=gui-vol] [data-testid=volume-inspect]");
    s.wait_js("volume inspect", "return document.querySelector('[data-testid=volume-inspect-dialog] [data-testid=inspect-json]')?.textContent.includes('\"Name\": \"gui-vol\"')", T);
    s.click("[data-testid=dialog-close]");
    s.click("[data-testid=nav-images]");

    // Run the web image from its Run button, with a name, env and a command that logs.
    let run_btn = format!("[data-testid=image-row][data-ref={}] [data-testid=image-run]", css_attr(&web));
    s.click(&run_btn);
    s.find("[data-testid=run-dialog]");
    s.type_into("[data-testid=run-name]", "gui-web");
    s.type_into("[data-testid=run-env]", "GREETING=hello-from-env");
    s.type_into("[data-testid=run-volumes]", "gui-vol:/data");
    s.type_into("[data-testid=run-ports]", &format!("{port}:80"));
    s.find("[data-testid=run-restart]");
    s.type_into(
        "[data-testid=run-command]",
        "sh -c 'echo web-started $GREETING; for i in 1 2 3; do echo tick-$i; done; exec httpd -f -v -p 80 -h /www'",
    );
    s.screenshot(&shots.join("run-form.png"));
    s.click("[data-testid=run-submit]");
    // The app opens the new container's detail view: live logs first.
    s.wait_js("detail view", "return document.querySelector('[data-testid=detail-name]')?.textContent === 'gui-web'", T);
    s.wait_js("logs", "return [...document.querySelectorAll('[data-testid=log-line]')].some(l => l.textContent.includes('tick-3'))", T);
    let logs = s.text("[data-testid=logs]");
    assert!(logs.contains("web-started hello-from-env"), "{logs}");

    // It is in the Containers list, running, with its image.
    s.click("[data-testid=detail-back]");
    let row = "[data-testid=container-row][data-name=gui-web]";
    s.wait_js("running row", &format!("return document.querySelector({})?.dataset.state === 'running'", css_attr(row)), T);
    assert!(s.text(&format!("{row} .c-image")).ends_with("/web:latest"), "{}", s.text(row));
    s.wait_js("uptime", &format!("return /^\\d+s$|^\\d+m/.test(document.querySelector({} + ' .uptime').textContent)", css_attr(row)), T);
    // Its published port is a link; clicking it hands the URL to the system's opener, and the
    // port really serves the container's page.
    let link = format!("{row} [data-testid=port-link]");
    s.wait_js("port link", &format!("return document.querySelector({})?.textContent === '{port}:80'", css_attr(&link)), T);
    s.screenshot(&shots.join("containers.png"));
    s.click(&link);
    let want = format!("http://localhost:{port}");
    let deadline = std::time::Instant::now() + T;
    while !std::fs::read_to_string(opened).unwrap_or_default().contains(&want) {
        assert!(std::time::Instant::now() < deadline, "the port link did not open {want}: {:?}", std::fs::read_to_string(opened));
        std::thread::sleep(Duration::from_millis(100));
    }
    let page = berth_tests::http::request(&w.fx.ns, "GET", &format!("127.0.0.1:{port}"), "/", &[], b"").unwrap();
    assert!(page.text().contains(WEB_MARKER), "{}", page.text());
    // Search narrows the list.
    s.type_into("[data-testid=container-search]", "no-such-container");
    s.wait_js("search hides it", &format!("return !document.querySelector({})", css_attr(row)), T);
    s.js("const i = document.querySelector('[data-testid=container-search]'); i.value = ''; i.dispatchEvent(new Event('input')); return true");
    s.find(row);
    // Pause and resume from the row.
    s.click(&format!("{row} [data-testid=container-pause]"));
    s.wait_js("paused", &format!("return document.querySelector({})?.dataset.state === 'paused'", css_attr(row)), T);
    assert_eq!(w.d.api("GET", "/containers/gui-web/json", None).unwrap().json().unwrap()["State"]["Status"], "paused");
    s.click(&format!("{row} [data-testid=container-unpause]"));
    s.wait_js("resumed", &format!("return document.querySelector({})?.dataset.state === 'running'", css_attr(row)), T);

    // Open it; logs, search, timestamps.
    s.click(&format!("{row} [data-testid=container-name]"));
    s.wait_js("logs again", "return [...document.querySelectorAll('[data-testid=log-line]')].some(l => l.textContent.includes('tick-2'))", T);
    s.type_into("[data-testid=logs-search]", "tick-2");
    s.wait_js("log search", "const l = [...document.querySelectorAll('[data-testid=log-line]')]; return l.length === 1 && l[0].textContent.includes('tick-2')", T);
    s.js("const i = document.querySelector('[data-testid=logs-search]'); i.value = ''; i.dispatchEvent(new Event('input')); return true");
    s.click("[data-testid=logs-timestamps]");
    s.wait_js("timestamps", "return !!document.querySelector('[data-testid=log-line] .ts')", T);
    s.screenshot(&shots.join("container-logs.png"));

    // Terminal: a shell in the container through exec; run commands by typing.
    s.click("[data-testid=tab-button-terminal]");
    s.wait_js("terminal connected", "return document.querySelector('[data-testid=terminal-status]').textContent.startsWith('Connected')", T);
    s.wait_js("prompt", "return /[#$][\\s\\u00a0]/.test(document.querySelector('.xterm-rows')?.textContent ?? '')", T);
    // One short command per line: a long line wraps, and ash's line editing garbles typeahead
    // across the wrap.
    // Typed keys are retried once more if no output came (WebDriver key events into xterm's
    // hidden textarea were seen lost once on a loaded machine); the commands are idempotent.
    let run = |cmd: &str, expect: &str| {
        let check = format!("return document.querySelector('.xterm-rows').textContent.includes({})", css_attr(expect));
        for _ in 0..2 {
            s.type_into(".xterm-helper-textarea", &format!("{cmd}\u{E007}"));
            if s.try_wait_js(&check, Duration::from_secs(20)) {
                return;
            }
        }
        s.wait_js(&format!("output of {cmd}"), &check, T);
    };
    run("echo sum-$((6*7))", "sum-42");
    run("wget -qO- http://127.0.0.1/", WEB_MARKER);
    // Expected output has no spaces: xterm's DOM rows may render them as no-break spaces.
    run("echo ke''pt >/data/f; echo k-$((4+4))", "k-8");
    run("cat /data/f", "kept");
    run("echo live-from-terminal >/proc/1/fd/1; echo l-$((3+4))", "l-7");
    run("echo done-$((2+3))", "done-5");
    s.screenshot(&shots.join("container-terminal.png"));
    let term = s.text(".xterm-rows");
    s.click("[data-testid=tab-button-logs]");
    eprintln!("terminal: {term}");
    s.wait_js("followed log line", "return [...document.querySelectorAll('[data-testid=log-line]')].some(l => l.textContent.includes('live-from-terminal'))", T);

    // Stats graphs and inspect.
    s.click("[data-testid=tab-button-stats]");
    s.wait_js("stats", "return document.querySelector('[data-testid=stats-text]').textContent.startsWith('CPU')", T);
    std::thread::sleep(Duration::from_millis(2500));
    s.screenshot(&shots.join("container-stats.png"));
    s.click("[data-testid=tab-button-inspect]");
    s.wait_js("inspect", "return document.querySelector('[data-testid=inspect-json]')?.textContent.includes('\"Name\": \"/gui-web\"')", T);

    // Restart, stop from the list, then delete (with confirmation).
    s.click("[data-testid=detail-back]");
    let started = |w: &W<'_>| w.d.api("GET", "/containers/gui-web/json", None).unwrap().json().unwrap()["State"]["StartedAt"].clone();
    let before = started(w);
    s.click(&format!("{row} [data-testid=container-restart]"));
    let deadline = std::time::Instant::now() + T;
    while started(w) == before {
        assert!(std::time::Instant::now() < deadline, "restart did not restart");
        std::thread::sleep(Duration::from_millis(100));
    }
    s.wait_js("running after restart", &format!("return document.querySelector({})?.dataset.state === 'running'", css_attr(row)), T);
    s.click(&format!("{row} [data-testid=container-stop]"));
    s.wait_js("stopped", &format!("return document.querySelector({})?.dataset.state === 'exited'", css_attr(row)), T);
    let st = w.d.api("GET", "/containers/gui-web/json", None).unwrap().json().unwrap();
    assert_eq!(st["State"]["Status"], "exited");
    s.click(&format!("{row} [data-testid=container-delete]"));
    s.click("[data-testid=confirm-ok]");
    s.wait_js("row gone", &format!("return !document.querySelector({})", css_attr(row)), T);
    let left = w.d.api("GET", "/containers/json?all=1", None).unwrap().json().unwrap();
    assert_eq!(left, json!([]), "the engine still has containers");

    // The volume outlived the container, with what the shell wrote; then delete it.
    s.click("[data-testid=nav-volumes]");
    s.wait_js("volume still listed", "return !!document.querySelector('[data-testid=volume-row][data-name=gui-vol]')", T);
    s.screenshot(&shots.join("volumes.png"));
    let vol = w.d.api("GET", "/volumes/gui-vol", None).unwrap().json().unwrap();
    let mp = vol["Mountpoint"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(std::path::Path::new(mp).join("f")).unwrap(), "kept\n");
    s.click("[data-testid=volume-row][data-name=gui-vol] [data-testid=volume-delete]");
    s.click("[data-testid=confirm-ok]");
    s.wait_js("volume gone", "return !document.querySelector('[data-testid=volume-row][data-name=gui-vol]')", T);
    let r = w.d.api("GET", "/volumes/gui-vol", None).unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    // Delete the web image from the Images screen, then prune.
    s.click("[data-testid=nav-images]");
    s.click(&format!("[data-testid=image-row][data-ref={}] [data-testid=image-delete]", css_attr(&web)));
    s.click("[data-testid=confirm-ok]");
    s.wait_js("image row gone", &format!("return !document.querySelector({})", css_attr(&format!("[data-testid=image-row][data-ref={}]", css_attr(&web)))), T);
    assert_eq!(w.d.api("GET", &format!("/images/{web}/json"), None).unwrap().status, 404);
    s.click("[data-testid=images-prune]");
    s.wait_js("prune notice", "return [...document.querySelectorAll('[data-testid=notice-info]')].some(n => n.textContent.startsWith('Pruned'))", T);

    // Networks: create, inspect, delete.
    s.click("[data-testid=nav-networks]");
    s.wait_js("networks screen", "return !!document.querySelector('[data-testid=network-row][data-name=bridge]')", T);
    s.type_into("[data-testid=network-create-name]", "gui-net");
    s.click("[data-testid=network-create]");
    s.wait_js("network listed", "return !!document.querySelector('[data-testid=network-row][data-name=gui-net]')", T);
    s.screenshot(&shots.join("networks.png"));
    s.click("[data-testid=network-row][data-name=gui-net] [data-testid=network-inspect]");
    s.wait_js("network inspect", "return document.querySelector('[data-testid=network-inspect-dialog] [data-testid=inspect-json]')?.textContent.includes('\"Name\": \"gui-net\"')", T);
    s.click("[data-testid=dialog-close]");
    s.click("[data-testid=network-row][data-name=gui-net] [data-testid=network-delete]");
    s.click("[data-testid=confirm-ok]");
    s.wait_js("network gone", "return !document.querySelector('[data-testid=network-row][data-name=gui-net]')", T);
    assert_eq!(w.d.api("GET", "/networks/gui-net", None).unwrap().status, 404);
    s.click("[data-testid=nav-engine]");
    s.wait_js("engine screen", "return document.querySelector('[data-testid=engine-state]')?.textContent === 'running' && document.querySelector('[data-testid=engine-images]')?.textContent === '1'", T);
    let socket = s.text("[data-testid=engine-socket]");
    assert!(socket.contains(&w.d.socket().display().to_string()) && socket.contains("DOCKER_HOST"), "{socket}");
    s.screenshot(&shots.join("engine.png"));
}

/// The engine goes away and comes back: the app says so, and its event stream reconnects by
/// itself (the list then follows new containers again without a reload).
fn engine_restart(s: &Session, d: &mut berth_tests::berthd::Berthd, fx: &berth_tests::fixtures::Fixtures) {
    s.click("[data-testid=nav-containers]");
    d.sigterm();
    s.wait_js("unreachable pill", "return document.querySelector('[data-testid=engine-pill]').textContent === 'Engine unreachable'", T);
    d.restart().unwrap();
    s.wait_js("running pill", "return document.querySelector('[data-testid=engine-pill]').textContent.startsWith('Engine running')", T);
    let img = fx.reference("busybox:latest");
    d.docker_ok(&["create", "--name", "after-restart", &img, "true"]);
    s.wait_js("new container listed after reconnect", "return !!document.querySelector('[data-testid=container-row][data-name=after-restart]')", T);
    // Bulk: select it with its checkbox and delete the selection.
    s.click("[data-testid=container-row][data-name=after-restart] [data-testid=container-select]");
    s.click("[data-testid=bulk-delete]");
    s.click("[data-testid=confirm-ok]");
    s.wait_js("bulk delete", "return !document.querySelector('[data-testid=container-row][data-name=after-restart]')", T);
    assert_eq!(d.api("GET", "/containers/json?all=1", None).unwrap().json().unwrap(), serde_json::json!([]));
}
