//! What the GUI tests need around the app: an X server (Xvfb), WebKitWebDriver (what
//! tauri-driver wraps on Linux: it only sets TAURI_WEBVIEW_AUTOMATION=true and starts it, so the
//! test does that itself), and a small W3C WebDriver client. All of it runs inside the test's
//! loopback-only network namespace; the WebDriver port is reached from a thread that joined the
//! namespace (berth_tests::http), which is why the client is this small hand-written one.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::netns::{command_in, NetNs};
use serde_json::{json, Value};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// True when Xvfb and WebKitWebDriver are installed (Debian `xvfb`, `webkit2gtk-driver`).
pub fn gui_tools() -> Result<(), String> {
    for tool in ["Xvfb", "WebKitWebDriver"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Err(format!("{tool} is not on PATH (Debian packages xvfb and webkit2gtk-driver)"));
        }
    }
    Ok(())
}

/// Skip (return) without the GUI tools, except on CI, where they must be there.
#[macro_export]
macro_rules! require_gui {
    () => {
        if let Err(e) = support::gui_tools() {
            if std::env::var_os("CI").is_some() {
                panic!("CI must run the GUI test: {e}");
            }
            eprintln!("SKIP: {e}");
            return;
        }
    };
}

/// A child process killed (and reaped) on drop; its output goes to a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_logged(mut cmd: Command, log: &Path) -> Proc {
    let f = std::fs::File::create(log).expect("create log");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone().expect("dup"))
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    Proc { child, log: log.to_path_buf() }
}

/// Xvfb on a free display number, inside the namespace.
pub fn start_xvfb(ns: &NetNs, dir: &Path) -> (Proc, String) {
    for n in (100 + std::process::id() % 300)..1000 {
        if Path::new(&format!("/tmp/.X{n}-lock")).exists() || Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
            continue;
        }
        let display = format!(":{n}");
        let mut cmd = command_in(&ns.path(), "Xvfb");
        cmd.args([&display, "-screen", "0", "1280x800x24", "-nolisten", "tcp", "-noreset"]);
        let mut p = spawn_logged(cmd, &dir.join("xvfb.log"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
                return (p, display);
            }
            if let Ok(Some(_)) = p.child.try_wait() {
                break; // lost a race for this display: try the next
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = p.child.kill();
    }
    panic!("could not start Xvfb");
}

/// WebKitWebDriver listening on a free port in the namespace, with the app's environment.
pub fn start_webdriver(ns: &NetNs, dir: &Path, display: &str, env: &[(&str, String)]) -> (Proc, String) {
    let port = ns.free_port().expect("free port");
    let mut cmd = command_in(&ns.path(), "WebKitWebDriver");
    cmd.arg(format!("--port={port}"))
        .env("DISPLAY", display)
        .env("TAURI_WEBVIEW_AUTOMATION", "true")
        .env("NO_AT_BRIDGE", "1")
        // The app turns WebKit's accelerated compositing off by default (memory); with it off,
        // WebKitWebDriver's screenshot under Xvfb sometimes waits forever for a presentation
        // update, so the GUI test runs the composited path. Page behaviour is the same.
        .env("BERTH_GPU_COMPOSITING", "1")
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let p = spawn_logged(cmd, &dir.join("webdriver.log"));
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = berth_tests::http::request(ns, "GET", &addr, "/status", &[], b"") {
            if r.status == 200 {
                return (p, addr);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("WebKitWebDriver did not answer /status:\n{}", p.log());
}

/// One WebDriver session (the app's window).
pub struct Session<'a> {
    ns: &'a NetNs,
    addr: String,
    id: String,
}

impl<'a> Session<'a> {
    /// Start the app binary through WebDriver (this launches it).
    pub fn new(ns: &'a NetNs, addr: &str, app: &Path, args: &[&str]) -> Session<'a> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "webkitgtk:browserOptions": {"binary": app.display().to_string(), "args": args},
        }}});
        let mut s = Session { ns, addr: addr.to_string(), id: String::new() };
        let v = s.call("POST", "/session", Some(caps)).expect("new WebDriver session");
        s.id = v["sessionId"].as_str().expect("sessionId").to_string();
        s
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let r = request(self.ns, method, &self.addr, path, body.as_bytes(), Duration::from_secs(150))
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("{method} {path}: {e}: {}", r.text()))?;
        if r.status >= 400 {
            return Err(format!("{method} {path}: {} {}", r.status, v["value"]));
        }
        Ok(v["value"].clone())
    }

    fn s(&self, tail: &str) -> String {
        format!("/session/{}{tail}", self.id)
    }

    /// Run a script in the page; its `return` value comes back.
    pub fn js(&self, script: &str) -> Value {
        self.call("POST", &self.s("/execute/sync"), Some(json!({"script": script, "args": []})))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Poll (the page, not the engine) until `script` returns something truthy.
    #[track_caller]
    pub fn wait_js(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.call("POST", &self.s("/execute/sync"), Some(json!({"script": script, "args": []})));
            if let Ok(v) = &v {
                let truthy = !(v.is_null() || v == &json!(false) || v == &json!("") || v == &json!(0));
                if truthy {
                    return v.clone();
                }
            }
            if Instant::now() > deadline {
                let body = self.js("return document.body.innerText.slice(0, 3000)");
                panic!("timed out waiting for {what} (last: {v:?})\n--- page text:\n{}", body.as_str().unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Like [`Session::wait_js`], but gives up quietly: true when `script` became truthy.
    pub fn try_wait_js(&self, script: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(v) = self.call("POST", &self.s("/execute/sync"), Some(json!({"script": script, "args": []}))) {
                if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Find one element by CSS selector, waiting for it to appear.
    #[track_caller]
    pub fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.call("POST", &self.s("/element"), Some(json!({"using": "css selector", "value": css}))) {
                Ok(v) => return v[ELEMENT_KEY].as_str().expect("element id").to_string(),
                Err(e) if Instant::now() > deadline => {
                    let body = self.js("return document.body.innerText.slice(0, 3000)");
                    panic!("no element {css}: {e}\n--- page text:\n{}", body.as_str().unwrap_or_default());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// A real click (WebDriver element click: scrolls into view, checks it is not covered).
    #[track_caller]
    pub fn click(&self, css: &str) {
        let mut el = self.find(css);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.call("POST", &self.s(&format!("/element/{el}/click")), Some(json!({}))) {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => panic!("click {css}: {e}"),
                // The list re-rendered (an engine event) between find and click: find it again.
                Err(e) if e.contains("stale element") => el = self.find(css),
                Err(_) => std::thread::sleep(Duration::from_millis(150)),
            }
        }
    }

    /// Type into an element (WebDriver Element Send Keys: real key events).
    #[track_caller]
    pub fn type_into(&self, css: &str, text: &str) {
        let mut el = self.find(css);
        for _ in 0..5 {
            match self.call("POST", &self.s(&format!("/element/{el}/value")), Some(json!({"text": text}))) {
                Ok(_) => return,
                Err(e) if e.contains("stale element") => el = self.find(css),
                Err(e) => panic!("type into {css}: {e}"),
            }
        }
        panic!("type into {css}: the element kept being replaced");
    }

    /// Text content of the first element matching `css` (empty if none).
    pub fn text(&self, css: &str) -> String {
        let script = format!("const e = document.querySelector({}); return e ? e.textContent : ''", json!(css));
        self.js(&script).as_str().unwrap_or_default().to_string()
    }

    /// Save a PNG of the window.
    #[track_caller]
    pub fn screenshot(&self, path: &Path) {
        if let Err(e) = self.try_screenshot(path) {
            panic!("screenshot {}: {e}", path.display());
        }
    }

    pub fn try_screenshot(&self, path: &Path) -> Result<(), String> {
        use base64::Engine as _;
        let t = Instant::now();
        // WebKit snapshots the last presented frame: force a style change and let two animation
        // frames pass so the DOM the test just checked is on screen (bounded, in case rAF is
        // throttled). Assertions read the page, never the picture.
        let settle = "const done = arguments[arguments.length - 1]; \
            document.body.style.outline = document.body.style.outline ? '' : '0px solid transparent'; \
            setTimeout(() => done(false), 1000); \
            requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(() => done(true), 50)));";
        let _ = self.call("POST", &self.s("/execute/async"), Some(json!({"script": settle, "args": []})));
        let v = self.call("GET", &self.s("/screenshot"), None)?;
        eprintln!("screenshot {} took {:?}", path.display(), t.elapsed());
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
        }
        std::fs::write(path, png).map_err(|e| e.to_string())
    }

    pub fn close(&self) {
        let _ = self.call("DELETE", &self.s(""), None);
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

/// One HTTP/1.1 request from inside the namespace, with a caller-chosen read timeout (a
/// WebKit snapshot on a loaded machine can take longer than the harness client's 30 s).
fn request(ns: &NetNs, method: &str, addr: &str, path: &str, body: &[u8], timeout: Duration) -> Result<berth_tests::http::Response, String> {
    use std::io::{Read, Write};
    let mut stream = ns.connect_tcp(addr).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body)).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| format!("read response: {e}"))?;
    berth_tests::http::parse_response(&raw, false).map_err(|e| e.to_string())
}
