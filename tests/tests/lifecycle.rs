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
    let go_dir = tempfile::tempdir().unwrap();
    let go = go_dir.path().join("go");
    std::fs::write(&go, "").unwrap();
    let go = go.display().to_string();
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
