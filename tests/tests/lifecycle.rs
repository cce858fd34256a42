//! Issue 3, lifecycle and I/O details with the real docker CLI: `--init`, attach with log replay,
//! wait conditions, and the HostConfig knobs (domainname, sysctls, devices, group-add, shm size,
//! ulimits, stop timeout, `ps -s`). Each check has a control run or an exact value, so it can fail.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use berth_tests::require_berthd;
use berth_tests::world::World;

/// Row of `ps -o pid,stat,args` whose pid is `pid`.
fn ps_row(ps: &str, pid: &str) -> Option<String> {
    ps.lines().find(|l| l.split_whitespace().next() == Some(pid)).map(str::to_string)
}

#[test]
fn init_runs_tini_as_pid_1_forwards_signals_reaps_and_keeps_exit_codes() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    // pid 1 is Docker's init path in front of the command.
    let ps = w.d.docker_ok(&["run", "--rm", "--init", &img, "ps", "-o", "pid,args"]);
    let one = ps_row(&ps, "1").unwrap_or_default();
    assert!(one.contains("/sbin/docker-init -- ps"), "{ps}");
    let ps = w.d.docker_ok(&["run", "--rm", &img, "ps", "-o", "pid,args"]);
    assert!(!ps.contains("docker-init"), "control run without --init: {ps}");

    // Exit codes propagate through the init.
    let r = w.d.docker(&["run", "--rm", "--init", &img, "sh", "-c", "exit 3"]);
    assert_eq!(r.status.code(), Some(3), "{r:?}");

    // Signals: the shell is not pid 1 here, so only a forwarding init gets SIGTERM to its trap.
    w.d.docker_ok(&[
        "run", "-d", "--init", "--name", "sig", &img, "sh", "-c",
        "trap 'echo got-term; exit 7' TERM; while true; do sleep 0.1; done",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    w.d.docker_ok(&["stop", "-t", "5", "sig"]);
    assert_eq!(w.d.docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", "sig"]).trim(), "7");
    assert!(w.d.docker_ok(&["logs", "sig"]).contains("got-term"));

    // Zombies: an orphan is reparented to pid 1. tini reaps it; `sleep` as pid 1 (the control)
    // cannot, and the orphan stays a zombie.
    let orphan = "sh -c 'sleep 0.2 &'; exec sleep 60";
    w.d.docker_ok(&["run", "-d", "--init", "--name", "reaped", &img, "sh", "-c", orphan]);
    w.d.docker_ok(&["run", "-d", "--name", "zombie", &img, "sh", "-c", orphan]);
    std::thread::sleep(Duration::from_millis(1200));
    let zombies = |name: &str| {
        let ps = w.d.docker_ok(&["exec", name, "ps", "-o", "stat,comm"]);
        ps.lines().filter(|l| l.trim_start().starts_with('Z')).count()
    };
    assert_eq!(zombies("reaped"), 0, "tini left a zombie");
    assert_eq!(zombies("zombie"), 1, "control: without an init the orphan must stay a zombie");
    w.d.docker_ok(&["rm", "-f", "sig", "reaped", "zombie"]);
}

/// A raw hijacked attach over the socket (the CLI never sends logs=1; docker-py and compose do),
/// read frame by frame.
struct RawAttach {
    s: std::os::unix::net::UnixStream,
    buf: Vec<u8>,
}

impl RawAttach {
    /// Send the attach request and read the 101 head.
    fn open(sock: &std::path::Path, query: &str) -> RawAttach {
        let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(s, "POST /containers/{query} HTTP/1.1\r\nHost: berth\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n").unwrap();
        let mut a = RawAttach { s, buf: Vec::new() };
        let head_end = loop {
            if let Some(i) = a.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(a.fill(), "connection closed before the response head: {:?}", String::from_utf8_lossy(&a.buf));
        };
        let head = String::from_utf8_lossy(&a.buf[..head_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        a.buf.drain(..head_end);
        a
    }

    /// Read more bytes; false at EOF.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match self.s.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) => panic!("attach read: {e}"),
        }
    }

    /// The next `n` complete frames (blocking; the 60 s read timeout fails the test).
    fn frames(&mut self, n: usize) -> Vec<(u8, String)> {
        loop {
            let f = frames(&self.buf);
            if f.len() >= n {
                let used: usize = f[..n].iter().map(|(_, p)| 8 + p.len()).sum();
                self.buf.drain(..used);
                return f[..n].to_vec();
            }
            assert!(self.fill(), "stream ended after {f:?}, wanted {n} frames");
        }
    }

    /// Every frame until the daemon ends the stream.
    fn rest(mut self) -> Vec<(u8, String)> {
        while self.fill() {}
        frames(&self.buf)
    }
}

/// An empty host file named `go` (and the directory that holds it): `docker cp` it to
/// `/tmp/go` to release a container script waiting for it.
fn go_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    std::fs::write(&go, "").unwrap();
    let go = go.display().to_string();
    (dir, go)
}

/// (stream, payload) frames of Docker's multiplexed stream (complete ones only).
fn frames(mut b: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    while b.len() >= 8 {
        let n = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
        if b.len() < 8 + n {
            break;
        }
        out.push((b[0], String::from_utf8_lossy(&b[8..8 + n]).to_string()));
        b = &b[8 + n..];
    }
    out
}

/// Wait until `docker logs name` shows every one of `lines`.
fn wait_logged(d: &berth_tests::berthd::Berthd, name: &str, lines: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = d.docker(&["logs", name]);
        let all = format!("{}{}", out.stdout, out.stderr);
        if lines.iter().all(|l| all.lines().any(|x| x == *l)) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never logged {lines:?}: {all:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Docker's attach with logs=1: the output so far, then live output, then the end. No step
/// depends on timing: each container prints its first lines, then waits for the test's go (a
/// file copied in with `docker cp`: an exec could be killed by the container's own exit), so
/// what is replayed and what is live is decided by the test.
/// (Which of two writes to stdout and stderr comes first is the order the two pipes were read
/// in, as with Docker; only the order within each stream is fixed.)
#[test]
fn attach_replays_logs_then_streams() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let (_go_dir, go) = go_file();
    let script = "echo early; echo oops >&2; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo late";
    w.d.docker_ok(&["run", "-d", "--name", "talk", &img, "sh", "-c", script]);
    wait_logged(&w.d, "talk", &["early", "oops"]);
    // logs=1&stream=1: the replay arrives, and from then on the stream is live.
    let mut a = RawAttach::open(&w.d.socket(), "talk/attach?logs=1&stream=1&stdout=1&stderr=1");
    let mut replay = a.frames(2);
    replay.sort();
    assert_eq!(replay, vec![(1, "early\n".into()), (2, "oops\n".into())]);
    w.d.docker_ok(&["cp", &go, "talk:/tmp/go"]);
    assert_eq!(a.rest(), vec![(1, "late\n".into())], "live output after the replay, then the end");

    // Without logs=1 nothing is replayed (the control); the stream is live once the 101 is in.
    let script = "echo early; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo late";
    w.d.docker_ok(&["run", "-d", "--name", "talk2", &img, "sh", "-c", script]);
    wait_logged(&w.d, "talk2", &["early"]);
    let a = RawAttach::open(&w.d.socket(), "talk2/attach?stream=1&stdout=1&stderr=1");
    w.d.docker_ok(&["cp", &go, "talk2:/tmp/go"]);
    assert_eq!(a.rest(), vec![(1, "late\n".into())]);

    // logs=1 alone on an exited container: just the recorded output, stdout only when asked.
    let r = w.d.api("POST", "/containers/talk/attach?logs=1&stdout=1", None).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(frames(&r.body), vec![(1, "early\n".into()), (1, "late\n".into())]);
    // docker start -a right after the attach stream ended: the new run's whole output (the
    // go file is in the container's filesystem now, so it runs straight through).
    assert_eq!(w.d.docker_ok(&["start", "-a", "talk2"]), "early\nlate\n");
}

/// `--log-driver none`: output reaches attached clients and no file; `docker logs` says the
/// driver cannot be read, in Docker's words; log options are refused for it.
#[test]
fn none_log_driver_keeps_no_log() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    assert_eq!(w.d.docker_ok(&["run", "--name", "quiet", "--log-driver", "none", &img, "sh", "-c", "echo out; echo err >&2; echo more"]), "out\nmore\n");
    let id = w.d.docker_ok(&["inspect", "-f", "{{.Id}} {{.HostConfig.LogConfig.Type}}", "quiet"]);
    let (id, typ) = id.trim().split_once(' ').unwrap();
    assert_eq!(typ, "none");
    let dir = w.d.data_root().join("containers").join(id);
    let logs: Vec<String> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("container.log")).collect();
    assert!(logs.is_empty(), "log files of a none-driver container: {logs:?}");
    let r = w.d.docker(&["logs", "quiet"]);
    assert!(!r.success() && r.stderr.contains("configured logging driver does not support reading"), "{r:?}");
    assert_eq!(w.d.api_get(&format!("/containers/{id}/logs?stdout=1")).unwrap().status, 501);
    // The CLI refuses this itself; berthd does too, for other clients.
    let body = serde_json::json!({"Image": img, "HostConfig": {"LogConfig": {"Type": "none", "Config": {"max-size": "1m"}}}});
    let r = w.d.api_post("/v1.47/containers/create", Some(&body)).unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json().unwrap()["message"], "unknown log opt 'max-size' for none log driver");
    // The json-file control: the same container with the default driver has its log.
    w.d.docker_ok(&["run", "--name", "loud", &img, "echo", "out"]);
    assert_eq!(w.d.docker_ok(&["logs", "loud"]), "out\n");
}

/// An attach client that reads slowly gets every line, in order (a 16-chunk queue used to drop
/// output for it); one that stops reading is cut off once it is 8 MiB behind, after a notice,
/// and what it got until then has no holes. The container runs on either way.
#[test]
fn slow_attach_loses_nothing_and_a_stalled_one_is_cut_off_cleanly() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let (_go_dir, go) = go_file();
    w.d.docker_ok(&["run", "-d", "--name", "burst", &img, "sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.05; done; seq 1 100000; sleep 600"]);
    let mut a = RawAttach::open(&w.d.socket(), "burst/attach?stream=1&stdout=1");
    w.d.docker_ok(&["cp", &go, "burst:/tmp/go"]);
    let mut text = String::new();
    let mut want = 1u64;
    while want <= 100_000 {
        std::thread::sleep(Duration::from_millis(2));
        for (_, p) in a.frames(1) {
            text.push_str(&p);
        }
        while let Some(i) = text.find('\n') {
            let line: String = text.drain(..=i).collect();
            assert_eq!(line.trim().parse::<u64>().ok(), Some(want), "slow reader: line {want} missing or out of order");
            want += 1;
        }
    }
    w.d.docker_ok(&["rm", "-f", "burst"]);

    let flood = "p=$(printf '%0200d' 0); i=0; while :; do echo \"$i $p\"; i=$((i+1)); done";
    w.d.docker_ok(&["run", "-d", "--name", "flood", "--log-opt", "max-size=8m", "--log-opt", "max-file=2", &img, "sh", "-c", flood]);
    let mut stalled = RawAttach::open(&w.d.socket(), "flood/attach?stream=1&stdout=1&stderr=1");
    std::thread::sleep(Duration::from_secs(5));
    // Read to the end, which must come: a client that is never cut off would read forever.
    let deadline = Instant::now() + Duration::from_secs(60);
    while stalled.fill() {
        assert!(Instant::now() < deadline, "the stalled client was never cut off ({} bytes read)", stalled.buf.len());
    }
    let got = frames(&stalled.buf);
    let (notice, out): (Vec<_>, Vec<_>) = got.into_iter().partition(|(s, _)| *s == 2);
    assert_eq!(notice.len(), 1, "{notice:?}");
    assert!(notice[0].1.contains("fell more than 8 MiB behind") && notice[0].1.contains("disconnected"), "{notice:?}");
    let text: String = out.into_iter().map(|(_, p)| p).collect();
    let nums: Vec<u64> = text.lines().filter(|l| l.len() > 200).map(|l| l.split(' ').next().unwrap().parse().unwrap()).collect();
    assert!(nums.len() > 10_000, "only {} lines before the cut-off", nums.len());
    for pair in nums.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a hole in the stalled client's stream");
    }
    let st = w.d.docker_ok(&["inspect", "-f", "{{.State.Status}}", "flood"]);
    assert_eq!(st.trim(), "running");
    w.d.docker_ok(&["rm", "-f", "flood"]);
}

/// The replay and the live stream of attach logs=1&stream=1 join exactly, while the container
/// keeps printing: a counter read back through several attaches has no gap and no repeat.
#[test]
fn attach_with_logs_joins_replay_and_live_output_exactly() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    w.d.docker_ok(&["run", "-d", "--name", "count", &img, "sh", "-c", "i=0; while true; do echo $i; i=$((i+1)); usleep 2000; done"]);
    for round in 0..5 {
        // Read on to 200 numbers past what was printed before we attached: the replay ends
        // (and the live stream starts) somewhere in between.
        let logged = w.d.docker_ok(&["logs", "--tail", "1", "count"]);
        let target = logged.trim().parse::<u64>().unwrap_or(0) + 200;
        let mut a = RawAttach::open(&w.d.socket(), "count/attach?logs=1&stream=1&stdout=1&stderr=1");
        let mut text = String::new();
        let mut want = 0u64;
        loop {
            let f = a.frames(1);
            text.push_str(&f[0].1);
            while let Some(i) = text.find('\n') {
                let line: String = text.drain(..=i).collect();
                let n: u64 = line.trim().parse().unwrap_or_else(|_| panic!("round {round}: not a number {line:?}"));
                assert_eq!(n, want, "round {round}: expected {want}, got {n}");
                want += 1;
            }
            if want >= target {
                break;
            }
        }
    }
    w.d.docker_ok(&["rm", "-f", "count"]);
}

#[test]
fn wait_conditions() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    w.d.docker_ok(&["create", "--name", "w1", &img, "sh", "-c", "sleep 1; exit 4"]);
    let sock = w.d.socket();
    // next-exit on a created container returns only after it ran and exited.
    let waiter = |cond: &'static str, name: &'static str| {
        let sock = sock.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let r = berth_tests::berthd::api_request(&sock, "POST", &format!("/containers/{name}/wait?condition={cond}"), None).unwrap();
            (r.json().unwrap()["StatusCode"].as_i64(), t0.elapsed())
        })
    };
    // not-running on a created (not running) container answers at once.
    let (code, took) = waiter("not-running", "w1").join().unwrap();
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(1), "{took:?}");
    let next = waiter("next-exit", "w1");
    let removed = waiter("removed", "w1");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!next.is_finished(), "next-exit answered before the container ran");
    w.d.docker_ok(&["start", "w1"]);
    let (code, took) = next.join().unwrap();
    assert_eq!(code, Some(4));
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!removed.is_finished(), "removed answered before rm");
    w.d.docker_ok(&["rm", "w1"]);
    assert_eq!(removed.join().unwrap().0, Some(4));
    let bad = w.d.api("POST", "/containers/nosuch/wait", None).unwrap();
    assert_eq!(bad.status, 404);
}

#[test]
fn host_config_knobs_reach_the_container() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let out = w.d.docker_ok(&[
        "run", "--rm", "--hostname", "boat", "--domainname", "example.org",
        "--sysctl", "net.ipv4.ip_unprivileged_port_start=81", "--shm-size", "16m",
        "--ulimit", "nofile=512:1024", "--group-add", "123", "--device", "/dev/null:/dev/mynull",
        &img, "sh", "-c",
        "cat /proc/sys/kernel/domainname; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; \
         df -k /dev/shm | tail -1 | awk '{print $2}'; ulimit -n; ulimit -Hn; id -G; \
         ls -l /dev/mynull | cut -c1; echo x > /dev/mynull && echo dev-writable",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, vec!["example.org", "81", "16384", "512", "1024", "0 123", "c", "dev-writable"], "{out}");
    // Defaults differ (so the checks above can fail): no domain, Docker's 64 MiB shm.
    let out = w.d.docker_ok(&["run", "--rm", &img, "sh", "-c", "cat /proc/sys/kernel/domainname; df -k /dev/shm | tail -1 | awk '{print $2}'; ls /dev/mynull 2>&1 | head -c 2"]);
    assert_eq!(out.lines().collect::<Vec<_>>(), vec!["(none)", "65536", "ls"], "{out}");

    // StopTimeout from create: a TERM-ignoring process is killed after it, not after 10 s.
    w.d.docker_ok(&["run", "-d", "--name", "st", "--stop-timeout", "1", &img, "sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    w.d.docker_ok(&["stop", "st"]);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");

    // ps -s: SizeRw counts what the container wrote.
    w.d.docker_ok(&["run", "--name", "sized", &img, "sh", "-c", "head -c 3000000 /dev/zero > /big"]);
    let v = w.d.api_get("/containers/json?all=1&size=1").unwrap().json().unwrap();
    let row = v.as_array().unwrap().iter().find(|c| c["Names"][0] == "/sized").unwrap().clone();
    let rw = row["SizeRw"].as_i64().unwrap();
    assert!((3_000_000..3_200_000).contains(&rw), "SizeRw {rw}");
    assert!(row["SizeRootFs"].as_i64().unwrap() > rw);
    let plain = w.d.api_get("/containers/json?all=1").unwrap().json().unwrap();
    assert!(plain[0].get("SizeRw").is_none_or(|v| v.is_null()), "size only when asked");
    let text = w.d.docker_ok(&["ps", "-a", "-s", "--filter", "name=sized", "--format", "{{.Size}}"]);
    assert!(text.starts_with("3MB") || text.starts_with("3.0"), "{text}");
    w.d.docker_ok(&["rm", "-f", "st", "sized"]);
}

/// berth-oci is the default runtime; `--default-runtime runc` (Debian's runc) still works for
/// the whole lifecycle. Which one ran is visible in the runtime's own state root.
#[test]
fn default_runtime_is_berth_oci_and_runc_still_works() {
    require_berthd!();
    let fx = berth_tests::fixtures::Fixtures::start().expect("fixtures");
    let regs = [fx.registry.addr(), fx.auth_registry.addr()];
    for (args, state_root) in [(&[][..], "berth-oci"), (&["--default-runtime", "runc"][..], "runc")] {
        let d = berth_tests::berthd::Berthd::start_with_args(&fx.ns, &regs, args).expect("berthd");
        let img = fx.reference("busybox:latest");
        d.docker_ok(&["pull", "-q", &img]);
        assert_eq!(d.docker_ok(&["run", "--rm", &img, "echo", "hi"]), "hi\n", "{state_root}");
        d.docker_ok(&["run", "-d", "--name", "rt", &img, "sleep", "60"]);
        assert!(d.exec_root().join(state_root).join(d.docker_ok(&["inspect", "-f", "{{.Id}}", "rt"]).trim()).exists(), "{state_root} state dir");
        assert_eq!(d.docker_ok(&["exec", "rt", "sh", "-c", "echo $$; grep CapEff /proc/self/status"]).lines().nth(1).unwrap(), "CapEff:\t00000000a80425fb");
        d.docker_ok(&["pause", "rt"]);
        assert_eq!(d.docker_ok(&["inspect", "-f", "{{.State.Status}}", "rt"]).trim(), "paused");
        d.docker_ok(&["unpause", "rt"]);
        d.docker_ok(&["rm", "-f", "rt"]);
    }
}

/// Wait (up to `secs`) until `inspect -f fmt name` prints `want`; returns the last value.
fn wait_inspect(d: &berth_tests::berthd::Berthd, name: &str, fmt: &str, want: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = d.docker(&["inspect", "-f", fmt, name]).stdout.trim().to_string();
        if got == want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGKILL a container's pid 1 from outside (e.g. while berthd is down).
fn kill_pid(pid: &str) {
    let pid: i32 = pid.trim().parse().expect("pid");
    assert!(pid > 0);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill");
}

/// Checklist #31: the stop signal comes from `--stop-signal`, else from the image's StopSignal,
/// and `docker stop` sends it (the trap answers at once with exit 3; with SIGTERM, which pid 1
/// ignores without a trap, the control run is SIGKILLed after the timeout: 137).
#[test]
fn custom_stop_signal_from_flag_and_image_reaches_the_container() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let trap = "trap 'echo got-usr1; exit 3' USR1; trap 'echo got-term; exit 5' TERM; echo ready; while true; do sleep 0.1; done";
    let trap_usr1_only = "trap 'echo got-usr1; exit 3' USR1; echo ready; while true; do sleep 0.1; done";
    let stop = |name: &str| {
        wait_logged(&w.d, name, &["ready"]);
        let t0 = Instant::now();
        w.d.docker_ok(&["stop", "-t", "10", name]);
        let took = t0.elapsed();
        let st = w.d.docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", name]).trim().to_string();
        (st, w.d.docker_ok(&["logs", name]), took)
    };

    // --stop-signal on run.
    w.d.docker_ok(&["run", "-d", "--name", "flag", "--stop-signal", "USR1", &img, "sh", "-c", trap]);
    assert_eq!(w.d.docker_ok(&["inspect", "-f", "{{.Config.StopSignal}}", "flag"]).trim(), "USR1");
    let (code, logs, took) = stop("flag");
    assert_eq!(code, "3", "{logs}");
    assert!(logs.contains("got-usr1") && !logs.contains("got-term"), "{logs}");
    assert!(took < Duration::from_secs(5), "the trap answers at once, not after the timeout: {took:?}");

    // Control: without it, stop sends SIGTERM.
    w.d.docker_ok(&["run", "-d", "--name", "plain", &img, "sh", "-c", trap]);
    let (code, logs, _) = stop("plain");
    assert_eq!(code, "5", "{logs}");
    assert!(!logs.contains("got-usr1"), "{logs}");

    // The image's StopSignal (set by commit --change, as a Dockerfile STOPSIGNAL would).
    // A container created and never started commits too (no upper dir yet: no new layer).
    w.d.docker_ok(&["create", "--name", "base", &img, "true"]);
    w.d.docker_ok(&["commit", "--change", "STOPSIGNAL SIGUSR1", "base", "stopsig:usr1"]);
    assert_eq!(w.d.docker_ok(&["image", "inspect", "-f", "{{.Config.StopSignal}}", "stopsig:usr1"]).trim(), "SIGUSR1");
    w.d.docker_ok(&["run", "-d", "--name", "fromimg", "stopsig:usr1", "sh", "-c", trap_usr1_only]);
    assert_eq!(w.d.docker_ok(&["inspect", "-f", "{{.Config.StopSignal}}", "fromimg"]).trim(), "SIGUSR1");
    let (code, logs, took) = stop("fromimg");
    assert_eq!(code, "3", "{logs}");
    assert!(logs.contains("got-usr1"), "{logs}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // --stop-signal wins over the image's.
    w.d.docker_ok(&["run", "-d", "--name", "override", "--stop-signal", "SIGTERM", "stopsig:usr1", "sh", "-c", trap]);
    let (code, logs, _) = stop("override");
    assert_eq!(code, "5", "{logs}");
    assert!(logs.contains("got-term") && !logs.contains("got-usr1"), "{logs}");

    // It also survives a daemon crash: the record, not memory, carries it.
    w.d.docker_ok(&["run", "-d", "--name", "crash", "stopsig:usr1", "sh", "-c", trap_usr1_only]);
    wait_logged(&w.d, "crash", &["ready"]);
    let mut d = w.d;
    d.kill9();
    d.restart().unwrap();
    d.docker_ok(&["stop", "-t", "10", "crash"]);
    assert_eq!(d.docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", "crash"]).trim(), "3");
    d.docker_ok(&["rm", "-f", "flag", "plain", "base", "fromimg", "override", "crash"]);
    drop(d);
    drop(w.fx);
}

/// Checklist #30: `always` and `unless-stopped` across daemon restarts. Running ones whose
/// process died while berthd was down (kill -9 of berthd, then of the container) come back;
/// after a clean daemon restart they are running; an `unless-stopped` container the user
/// stopped stays stopped, and so does a container without a policy (the control).
#[test]
fn always_and_unless_stopped_across_daemon_restarts() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let run = |name: &str, policy: &str| {
        w.d.docker_ok(&["run", "-d", "--name", name, "--restart", policy, &img, "sleep", "1000"]);
    };
    run("al", "always");
    run("us", "unless-stopped");
    run("us-stopped", "unless-stopped");
    run("al-stopped", "always");
    run("nopol", "no");
    w.d.docker_ok(&["stop", "-t", "1", "us-stopped", "al-stopped"]);
    let pid = |d: &berth_tests::berthd::Berthd, n: &str| d.docker_ok(&["inspect", "-f", "{{.State.Pid}}", n]).trim().to_string();
    let old: Vec<String> = ["al", "us", "nopol"].iter().map(|n| pid(&w.d, n)).collect();

    // berthd crashes; meanwhile the containers die too.
    let mut d = w.d;
    d.kill9();
    for p in &old {
        kill_pid(p);
    }
    std::thread::sleep(Duration::from_millis(300));
    d.restart().unwrap();
    for n in ["al", "us"] {
        assert_eq!(wait_inspect(&d, n, "{{.State.Status}}", "running", 15), "running", "{n} came back\n{}", berth_tests::berthd::tail(&d.log(), 30));
        assert!(!old.contains(&pid(&d, n)), "{n} runs a new process");
    }
    std::thread::sleep(Duration::from_millis(500));
    for n in ["us-stopped", "nopol"] {
        assert_eq!(d.docker_ok(&["inspect", "-f", "{{.State.Status}}", n]).trim(), "exited", "{n} stays down");
    }
    // Docker brings back an `always` container the user stopped when the daemon starts; we
    // record what berthd does so a change is seen.
    let al_stopped = d.docker_ok(&["inspect", "-f", "{{.State.Status}}", "al-stopped"]).trim().to_string();

    // A clean daemon restart: the running ones are running afterwards, the stopped stay down.
    d.sigterm();
    d.restart().unwrap();
    for n in ["al", "us"] {
        assert_eq!(wait_inspect(&d, n, "{{.State.Status}}", "running", 15), "running", "{n} after a clean restart");
    }
    std::thread::sleep(Duration::from_millis(500));
    for n in ["us-stopped", "nopol"] {
        assert_eq!(d.docker_ok(&["inspect", "-f", "{{.State.Status}}", n]).trim(), "exited", "{n} stays down after a clean restart");
    }
    // A second crash, this time with the containers left running: still running, same process.
    let before: Vec<String> = ["al", "us"].iter().map(|n| pid(&d, n)).collect();
    d.kill9();
    d.restart().unwrap();
    let after: Vec<String> = ["al", "us"].iter().map(|n| pid(&d, n)).collect();
    assert_eq!(before, after, "live-restore keeps the same processes");
    assert_eq!(d.docker_ok(&["inspect", "-f", "{{.State.Status}}", "us-stopped"]).trim(), "exited");
    eprintln!("always container stopped by the user, after a daemon restart: {al_stopped}");
    d.docker_ok(&["rm", "-f", "al", "us", "us-stopped", "al-stopped", "nopol"]);
    drop(d);
    drop(w.fx);
}

/// Checklist #28: after berthd is killed with -9 and restarted, `docker exec` reaches a
/// container that kept running, and `--rm` containers that exit after
/// the restart (or while berthd was down) are removed.
#[test]
fn exec_and_auto_remove_after_kill9_restart() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    w.d.docker_ok(&["run", "-d", "--name", "live", &img, "sleep", "1000"]);
    w.d.docker_ok(&["run", "-d", "-i", "--name", "echoer", &img, "sh", "-c", "echo ready; read a; read b; echo \"echo:$a $b\""]);
    w.d.docker_ok(&["run", "-d", "--rm", "--name", "rm-later", &img, "sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 4"]);
    w.d.docker_ok(&["run", "-d", "--rm", "--name", "rm-while-down", &img, "sleep", "1000"]);
    wait_logged(&w.d, "echoer", &["ready"]);
    let down_pid = w.d.docker_ok(&["inspect", "-f", "{{.State.Pid}}", "rm-while-down"]);

    let mut d = w.d;
    d.kill9();
    kill_pid(&down_pid);
    std::thread::sleep(Duration::from_millis(300));
    d.restart().unwrap();

    // exec into a container that kept running.
    assert_eq!(d.docker_ok(&["exec", "live", "sh", "-c", "echo exec-ok; cat /proc/1/cmdline | tr '\\0' ' '"]), "exec-ok\nsleep 1000 ");
    let r = d.docker(&["exec", "live", "sh", "-c", "exit 6"]);
    assert_eq!(r.status.code(), Some(6), "{r:?}");

    // attach with stdin to a container that kept running: the input reaches it and its
    // answer comes back (it exits after two lines, which ends the attach).
    let o = d.docker_with_stdin(&["attach", "echoer"], Some(b"hello\nworld\n"));
    assert!(o.success(), "{o:?}");
    assert_eq!(o.stdout, "echo:hello world\n");

    // --rm: exited while berthd was down, removed when it comes back.
    let gone = |d: &berth_tests::berthd::Berthd, n: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if d.docker_ok(&["ps", "-aq", "--filter", &format!("name=^{n}$")]).trim().is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    assert!(gone(&d, "rm-while-down"), "--rm container that died while berthd was down is left");
    // --rm: exits after the restart, removed.
    assert_eq!(d.docker_ok(&["inspect", "-f", "{{.State.Status}}", "rm-later"]).trim(), "running");
    let w8 = {
        let mut c = d.docker_command();
        c.args(["wait", "rm-later"]);
        c.stdout(std::process::Stdio::piped()).spawn().unwrap()
    };
    std::thread::sleep(Duration::from_millis(300));
    // The go file goes in with `docker cp` (an exec could be killed by the container's own exit).
    let go = d.root().join("go");
    std::fs::write(&go, b"").unwrap();
    d.docker_ok(&["cp", go.to_str().unwrap(), "rm-later:/tmp/go"]);
    let out = w8.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4", "docker wait sees the exit code");
    assert!(gone(&d, "rm-later"), "--rm container that exited after the restart is left");
    d.docker_ok(&["rm", "-f", "live", "echoer"]);
    drop(d);
    drop(w.fx);
}
