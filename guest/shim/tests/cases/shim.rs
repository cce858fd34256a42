// End-to-end tests of the shim with a real OCI runtime and a busybox rootfs, included by one
// test crate per runtime (runc, berth-oci), each defining `fn runtime() -> PathBuf` first.
// They need root; without it they print why and pass.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_shim::{connect, is_alive, read_exit, read_logs, spawn, LogOptions, ShimError, ShimHandle, ShimOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn can_run() -> bool {
    if unsafe { libc::geteuid() } != 0 || !Path::new("/bin/busybox").exists() {
        eprintln!("skipping: needs root and /bin/busybox");
        return false;
    }
    assert!(runtime().exists(), "{} is missing (build the workspace's binaries first)", runtime().display());
    true
}

struct Env {
    _dir: tempfile::TempDir,
    bundle: PathBuf,
    state: PathBuf,
    root: PathBuf,
    log: PathBuf,
    id: String,
}

fn env(name: &str, script: &str, tty: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    for d in ["proc", "dev", "tmp"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for app in ["sh", "echo", "cat", "sleep", "yes", "head", "ls", "stty", "seq", "tr"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(app)).unwrap();
    }
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": tty,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", script],
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/"
        },
        "root": {"path": "rootfs"},
        "hostname": "shimtest",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}]}
    });
    fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let state = dir.path().join("state");
    let root = dir.path().join("runc");
    let log = dir.path().join("logs/container.log");
    let id = format!("shimtest-{name}-{}", std::process::id());
    Env { _dir: dir, bundle, state, root, log, id }
}

fn opts(e: &Env) -> ShimOptions {
    let mut o = ShimOptions::new(
        PathBuf::from(env!("CARGO_BIN_EXE_berth-shim")),
        e.id.clone(),
        e.bundle.clone(),
        e.state.clone(),
        runtime(),
        e.root.clone(),
        e.log.clone(),
    );
    o.timeout = Duration::from_secs(20);
    o
}

/// After exit: the shim is gone, runc has no state, the init is gone.
fn assert_cleaned_up(e: &Env, h: Option<ShimHandle>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while (is_alive(&e.state) || e.root.join(&e.id).exists() || e.state.join("shim.sock").exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!is_alive(&e.state), "shim still alive");
    assert!(!e.root.join(&e.id).exists(), "runc state left behind");
    assert!(!e.state.join("shim.sock").exists(), "control socket left behind");
    if let Some(h) = h {
        let stat = fs::read_to_string(format!("/proc/{}/stat", h.init_pid)).unwrap_or_default();
        assert!(stat.is_empty() || !stat.contains("(sh)"), "container init still exists: {stat}");
    }
}

fn stdout_text(e: &Env, stdout: bool, stderr: bool) -> String {
    read_logs(&e.log, LogOptions { stdout, stderr, ..Default::default() })
        .unwrap()
        .map(|r| String::from_utf8(r.unwrap().log).unwrap())
        .collect()
}

/// Read Docker-framed chunks until `pred` holds on the (stream, text) collected or EOF.
async fn read_frames(s: &mut berth_shim::client::AttachStream, mut pred: impl FnMut(&[(u8, String)]) -> bool) -> Vec<(u8, String)> {
    let mut got = Vec::new();
    loop {
        let mut hdr = [0u8; 8];
        if s.read_exact(&mut hdr).await.is_err() {
            return got;
        }
        let len = u32::from_be_bytes(hdr[4..8].try_into().unwrap()) as usize;
        assert_eq!(&hdr[1..4], &[0, 0, 0]);
        let mut data = vec![0u8; len];
        s.read_exact(&mut data).await.unwrap();
        got.push((hdr[0], String::from_utf8(data).unwrap()));
        if pred(&got) {
            return got;
        }
    }
}

#[tokio::test]
async fn exit_code_logs_and_cleanup() {
    if !can_run() {
        return;
    }
    let e = env("exit", "echo hi; echo err >&2; exit 3", false);
    let h = spawn(&opts(&e)).unwrap();
    assert!(h.shim_pid > 0 && h.init_pid > 0);
    let exit = connect(&e.state).wait().await.unwrap();
    assert_eq!(exit.exit_code, 3);
    assert_eq!(exit.signal, None);
    assert!(!exit.oom_killed);
    assert_cleaned_up(&e, Some(h));
    assert_eq!(read_exit(&e.state).unwrap().exit_code, 3);
    // With the shim gone, wait is answered from exit.json; other calls fail.
    assert_eq!(connect(&e.state).wait().await.unwrap().exit_code, 3);
    assert!(matches!(connect(&e.state).state().await, Err(berth_shim::ClientError::Connect { .. })));
    assert_eq!(stdout_text(&e, true, false), "hi\n");
    assert_eq!(stdout_text(&e, false, true), "err\n");
    let streams: Vec<String> = read_logs(&e.log, LogOptions { stdout: true, stderr: true, ..Default::default() }).unwrap().map(|r| r.unwrap().stream).collect();
    assert_eq!(streams.len(), 2);
}

#[tokio::test]
async fn no_fd_leaks_into_container() {
    if !can_run() {
        return;
    }
    // An inheritable fd in the launcher must not reach the container.
    let leak = fs::File::open("/dev/null").unwrap();
    unsafe { libc::fcntl(leak.as_raw_fd(), libc::F_SETFD, 0) };
    let e = env("fds", "ls /proc/self/fd", false);
    let h = spawn(&opts(&e)).unwrap();
    let exit = connect(&e.state).wait().await.unwrap();
    assert_eq!(exit.exit_code, 0);
    assert_cleaned_up(&e, Some(h));
    let listed: Vec<String> = stdout_text(&e, true, false).split_whitespace().map(str::to_owned).collect();
    assert_eq!(listed, ["0", "1", "2", "3"], "only stdio and ls's own directory fd");
    drop(leak);
}

#[tokio::test]
async fn start_failure_is_reported() {
    if !can_run() {
        return;
    }
    let e = env("fail", "true", false);
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(e.bundle.join("config.json")).unwrap()).unwrap();
    cfg["process"]["args"] = serde_json::json!(["/nonexistent-binary"]);
    fs::write(e.bundle.join("config.json"), cfg.to_string()).unwrap();
    match spawn(&opts(&e)) {
        Err(ShimError::Start(msg)) => assert!(msg.contains("nonexistent-binary"), "{msg}"),
        other => panic!("expected a start error, got {other:?}"),
    }
    let exit = read_exit(&e.state).expect("exit.json on failure");
    assert!(exit.error.unwrap().contains("nonexistent-binary"));
    assert_cleaned_up(&e, None);
}

#[tokio::test]
async fn survives_its_launcher() {
    if !can_run() {
        return;
    }
    let e = env("survive", "sleep 1; echo done; exit 7", false);
    // The launcher is a shell that starts the shim and is then killed -9.
    let shim = env!("CARGO_BIN_EXE_berth-shim");
    let script = format!(
        "{shim} --id {} --bundle {} --state-dir {} --runtime {} --runtime-root {} --log-path {} & sleep 0.3; kill -9 $$",
        e.id,
        e.bundle.display(),
        e.state.display(),
        runtime().display(),
        e.root.display(),
        e.log.display()
    );
    let status = std::process::Command::new("/bin/sh").arg("-c").arg(&script).status().unwrap();
    assert!(!status.success(), "launcher was killed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while berth_shim::read_shim_info(&e.state).is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let info = berth_shim::read_shim_info(&e.state).expect("shim.json");
    assert!(is_alive(&e.state));
    let client = connect(&e.state);
    let st = client.state().await.unwrap();
    assert!(st.running);
    assert_eq!(st.init_pid, info.init_pid);
    let exit = client.wait().await.unwrap();
    assert_eq!(exit.exit_code, 7);
    assert_eq!(stdout_text(&e, true, true), "done\n");
    assert_cleaned_up(&e, None);
}

#[tokio::test]
async fn attach_streams_output_and_forwards_stdin() {
    if !can_run() {
        return;
    }
    let e = env("attach", "echo ready; cat; echo bye >&2", false);
    let mut o = opts(&e);
    o.stdin = true;
    o.stdin_once = true;
    let h = spawn(&o).unwrap();
    let client = connect(&e.state);
    let mut a = client.attach(true, true, true).await.unwrap();
    a.get_mut().write_all(b"ping\n").await.unwrap();
    let got = read_frames(&mut a, |g| g.iter().any(|(_, t)| t.contains("ping"))).await;
    // Frame boundaries follow the pipe reads, so "ready\nping\n" may come as one frame.
    let joined = |frames: &[(u8, String)], stream: u8| frames.iter().filter(|(s, _)| *s == stream).map(|(_, t)| t.as_str()).collect::<String>();
    assert!(joined(&got, 1).ends_with("ping\n"), "{got:?}");
    // Closing our stdin closes the container's: cat ends.
    a.get_mut().shutdown().await.unwrap();
    let rest = read_frames(&mut a, |_| false).await;
    assert_eq!(joined(&rest, 2), "bye\n", "{rest:?}");
    let exit = client.wait().await.unwrap();
    assert_eq!(exit.exit_code, 0);
    assert_cleaned_up(&e, Some(h));
    assert!(stdout_text(&e, true, true).contains("ping\n"));
}

/// Without StdinOnce (`docker run -di`, then attach and detach) a client's EOF leaves the
/// container's stdin open for the next attach.
#[tokio::test]
async fn stdin_stays_open_without_stdin_once() {
    if !can_run() {
        return;
    }
    let e = env("keepin", "cat; echo stdin-closed", false);
    let mut o = opts(&e);
    o.stdin = true;
    let h = spawn(&o).unwrap();
    let client = connect(&e.state);
    let joined = |frames: &[(u8, String)]| frames.iter().map(|(_, t)| t.as_str()).collect::<String>();
    let mut a = client.attach(true, true, true).await.unwrap();
    a.get_mut().write_all(b"first\n").await.unwrap();
    let got = read_frames(&mut a, |g| joined(g).contains("first")).await;
    assert!(joined(&got).contains("first\n"), "{got:?}");
    a.get_mut().shutdown().await.unwrap();
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(client.state().await.unwrap().running, "stdin was closed by the first client's EOF");
    let mut b = client.attach(true, true, true).await.unwrap();
    b.get_mut().write_all(b"second\n").await.unwrap();
    let got = read_frames(&mut b, |g| joined(g).contains("second")).await;
    assert!(joined(&got).contains("second\n"), "{got:?}");
    client.kill(9).await.unwrap();
    client.wait().await.unwrap();
    assert_cleaned_up(&e, Some(h));
    assert!(!stdout_text(&e, true, true).contains("stdin-closed"));
}

#[tokio::test]
async fn kill_reports_signal_exit_code() {
    if !can_run() {
        return;
    }
    let e = env("kill", "echo up; sleep 100", false);
    let h = spawn(&opts(&e)).unwrap();
    let client = connect(&e.state);
    assert!(client.resize(10, 10).await.is_err(), "no TTY to resize");
    let mode = fs::metadata(e.state.join("shim.sock")).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions())).unwrap();
    assert_eq!(mode & 0o777, 0o600);
    client.kill(9).await.unwrap();
    let exit = client.wait().await.unwrap();
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
    assert_cleaned_up(&e, Some(h));
}

#[tokio::test]
async fn tty_with_resize() {
    if !can_run() {
        return;
    }
    let e = env("tty", "read x; stty size; echo got-$x", true);
    let mut o = opts(&e);
    o.tty = true;
    o.stdin = true;
    let h = spawn(&o).unwrap();
    let client = connect(&e.state);
    assert!(client.state().await.unwrap().tty);
    client.resize(33, 101).await.unwrap();
    let mut a = client.attach(true, true, true).await.unwrap();
    a.get_mut().write_all(b"go\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), a.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out).to_string();
    assert!(out.contains("33 101"), "{out:?}");
    assert!(out.contains("got-go\r\n"), "raw TTY output with CRLF: {out:?}");
    let exit = client.wait().await.unwrap();
    assert_eq!(exit.exit_code, 0);
    assert_cleaned_up(&e, Some(h));
    assert!(stdout_text(&e, true, false).contains("33 101"));
}

#[tokio::test]
async fn stalled_client_does_not_block_and_logs_are_capped() {
    if !can_run() {
        return;
    }
    // Long lines keep the record count (and debug-build CPU time) moderate.
    let line = "x".repeat(200);
    let e = env("stall", &format!("yes {line} | head -c 50000000; echo end"), false);
    let mut o = opts(&e);
    o.log_max_size = 1 << 20;
    o.log_max_files = 3;
    let h = spawn(&o).unwrap();
    let client = connect(&e.state);
    // Attached but never reading.
    let _stalled = client.attach(false, true, true).await.unwrap();
    let started = Instant::now();
    let exit = tokio::time::timeout(Duration::from_secs(120), client.wait()).await.expect("container blocked by a stalled client").unwrap();
    assert_eq!(exit.exit_code, 0);
    eprintln!("50 MB through the shim in {:?}", started.elapsed());
    assert_cleaned_up(&e, Some(h));
    let mut total = 0;
    for entry in fs::read_dir(e.log.parent().unwrap()).unwrap() {
        total += entry.unwrap().metadata().unwrap().len();
    }
    assert!(total <= 3 * (1 << 20), "log disk use {total} above cap");
    let tail: Vec<_> = read_logs(&e.log, LogOptions { stdout: true, stderr: true, tail: Some(1), ..Default::default() }).unwrap().map(Result::unwrap).collect();
    // head cut the last line short, so "end" completes it.
    assert!(tail[0].log.ends_with(b"xxend\n"), "{:?}", String::from_utf8_lossy(&tail[0].log));
}

#[tokio::test]
async fn oom_kill_is_recorded() {
    if !can_run() || !Path::new("/sys/fs/cgroup/memory/memory.oom_control").exists() {
        eprintln!("skipping: needs the v1 memory controller");
        return;
    }
    // The shell grows a variable far beyond the 32 MiB limit.
    let e = env("oom", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived", false);
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(e.bundle.join("config.json")).unwrap()).unwrap();
    cfg["linux"]["resources"] = serde_json::json!({"memory": {"limit": 33554432, "swap": 33554432}});
    fs::write(e.bundle.join("config.json"), cfg.to_string()).unwrap();
    let h = spawn(&opts(&e)).unwrap();
    let exit = connect(&e.state).wait().await.unwrap();
    assert!(exit.oom_killed, "{exit:?}");
    assert_ne!(exit.exit_code, 0);
    assert_cleaned_up(&e, Some(h));
    assert!(!stdout_text(&e, true, false).contains("survived"));
}

#[tokio::test]
async fn several_clients_and_following_logs() {
    if !can_run() {
        return;
    }
    let e = env("multi", "sleep 1; for i in 1 2 3 4 5; do echo line$i; echo warn$i >&2; sleep 0.1; done", false);
    let h = spawn(&opts(&e)).unwrap();
    let client = connect(&e.state);
    let mut out_only = client.attach(false, true, false).await.unwrap();
    let mut both = client.attach(false, true, true).await.unwrap();
    let follow = berth_shim::stream_logs(&e.log, LogOptions { stdout: true, stderr: true, follow: true, ..Default::default() }, Some(e.state.join("exit.json"))).unwrap();
    let a = tokio::spawn(async move { read_frames(&mut out_only, |_| false).await });
    let b = tokio::spawn(async move { read_frames(&mut both, |_| false).await });
    let mut follow = follow;
    let mut followed = Vec::new();
    while let Some(entry) = tokio::time::timeout(Duration::from_secs(20), follow.recv()).await.unwrap() {
        followed.push(String::from_utf8(entry.unwrap().log).unwrap());
    }
    let join = |v: Vec<(u8, String)>, s: u8| v.into_iter().filter(|(k, _)| *k == s).map(|(_, t)| t).collect::<String>();
    let a = a.await.unwrap();
    let b = b.await.unwrap();
    let outs: String = (1..=5).map(|i| format!("line{i}\n")).collect();
    let errs: String = (1..=5).map(|i| format!("warn{i}\n")).collect();
    assert_eq!(join(a.clone(), 1), outs);
    assert_eq!(join(a, 2), "", "stderr not asked for");
    assert_eq!(join(b.clone(), 1), outs);
    assert_eq!(join(b, 2), errs);
    assert_eq!(followed.len(), 10, "{followed:?}");
    assert_eq!(followed.iter().filter(|l| l.starts_with("line")).cloned().collect::<String>(), outs);
    assert_eq!(connect(&e.state).wait().await.unwrap().exit_code, 0);
    assert_cleaned_up(&e, Some(h));
}

#[tokio::test]
async fn exec_streams_reports_exit_and_resizes() {
    if !can_run() {
        return;
    }
    let e = env("exec", "sleep 100", false);
    let h = spawn(&opts(&e)).unwrap();
    let client = connect(&e.state);
    let process = |args: &[&str], tty: bool| serde_json::json!({"terminal": tty, "user": {"uid": 0, "gid": 0}, "args": args, "env": ["PATH=/bin"], "cwd": "/"});

    // Pipes: stdin forwarded, EOF on half-close, framed stdout/stderr, exit code.
    let (pid, mut s) = client.exec("e1", process(&["sh", "-c", "cat; echo err >&2; exit 4"], false), false, true).await.unwrap();
    assert!(pid > 0);
    s.get_mut().write_all(b"hi\n").await.unwrap();
    s.get_mut().shutdown().await.unwrap();
    let got = read_frames(&mut s, |_| false).await;
    assert!(got.contains(&(1, "hi\n".to_string())) && got.contains(&(2, "err\n".to_string())), "{got:?}");
    assert_eq!(client.exec_wait("e1").await.unwrap().exit_code, 4);
    assert!(client.exec("e1", process(&["true"], false), false, false).await.is_err(), "exec ids are unique");
    assert!(client.exec_wait("nosuch").await.is_err());

    // TTY: raw output, resize of the exec's own pty.
    let (_, mut t) = client.exec("e2", process(&["sh", "-c", "read x; stty size"], true), true, true).await.unwrap();
    client.exec_resize("e2", 21, 77).await.unwrap();
    t.get_mut().write_all(b"go\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), t.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).contains("21 77"), "{:?}", String::from_utf8_lossy(&out));
    assert_eq!(client.exec_wait("e2").await.unwrap().exit_code, 0);

    // A failing runtime exec is an error reply, not a hang.
    assert!(client.exec("e3", process(&["/no/such"], false), false, false).await.is_err());

    client.kill(9).await.unwrap();
    client.wait().await.unwrap();
    assert_cleaned_up(&e, Some(h));
}
