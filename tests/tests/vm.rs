//! Issue 6 end to end, under TCG: `berth up --vm`, the docker CLI through the forwarded socket
//! (pull from the test registry on host loopback through the agent's egress proxy, run, exec
//! -it in a pty, stdin half-close), the guest forward service, persistence across `berth down`
//! / `berth up`, and recovery after `kill -9` of QEMU. Checklist #29: `kill -9` of the agent
//! leaves the VM and its containers running and the next `berth status` re-attaches; a VM whose
//! vsock helper died is stopped and a fresh one booted.

use berth_tests::fixtures::Fixtures;
use berth_tests::vm::{alive, BerthVm};
use berth_tests::require_vm;

fn stages(status: &serde_json::Value) -> Vec<String> {
    status["stages"].as_array().into_iter().flatten().filter_map(|s| s["stage"].as_str().map(String::from)).collect()
}

#[test]
fn vm_end_to_end() {
    require_vm!();
    let fx = Fixtures::start().expect("fixtures");
    let vm = BerthVm::new(&fx.ns).expect("vm home");

    // --- berth up --vm, staged readiness with timestamps ------------------------------------
    // A host folder shared into the VM over 9p, at the same path, for `docker run -v`.
    let share = tempfile::tempdir().unwrap();
    std::fs::write(share.path().join("from-host"), "host-data\n").unwrap();
    let share_dir = share.path().display().to_string();
    let out = vm.berth_ok(&["up", "--vm", "--cpus", "2", "--memory", "1024", "--disk", "4", "--share", &share_dir]);
    assert!(out.contains("Berth is up (qemu, tcg)"), "{out}");
    let st = vm.status();
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(stages(&st), ["vm-started", "kernel-up", "init-up", "disk-up", "engine-up", "socket-forwarded"], "{st}");
    for s in st["stages"].as_array().unwrap() {
        assert!(s["at_ms"].as_u64().unwrap() > 1_600_000_000_000, "{s}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&vm.docker_socket()), 0o600);
    assert_eq!(mode(vm.docker_socket().parent().unwrap()), 0o700);
    let human = vm.berth(&["status"]).stdout;
    assert!(human.contains("[x] socket-forwarded") && human.contains("UTC"), "{human}");

    // --- the docker CLI through the forwarded socket -----------------------------------------
    let v = vm.docker_ok(&["version", "--format", "{{.Server.Os}} {{.Server.KernelVersion}}"]);
    assert!(v.starts_with("linux 6.1."), "{v}");
    // Inside our VM, cgroups are v2.
    assert_eq!(vm.docker_ok(&["info", "--format", "{{.CgroupVersion}}"]).trim(), "2");
    // Pull from the registry on host loopback: the VM has no network device, so this went
    // through the agent's egress proxy.
    let img = fx.reference("busybox:latest");
    vm.docker_ok(&["pull", &img]);
    vm.docker_ok(&["tag", &img, "busybox:latest"]);
    assert_eq!(vm.docker_ok(&["run", "--rm", "busybox", "echo", "hi"]), "hi\n");
    // The shared folder as a bind mount: host files readable, container writes seen on the host.
    let bind = format!("{share_dir}:/host");
    let r = vm.docker_ok(&["run", "--rm", "-v", &bind, "busybox", "sh", "-c", "cat /host/from-host && echo vm-data > /host/from-vm"]);
    assert_eq!(r, "host-data\n");
    assert_eq!(std::fs::read_to_string(share.path().join("from-vm")).unwrap(), "vm-data\n");
    // Limits really land in the cgroup v2 files (read through the container's cgroup
    // namespace), and the memory limit is enforced: `tail` buffers an endless line until OOM.
    let limits = vm.docker_ok(&["run", "--rm", "--memory", "32m", "--pids-limit", "20", "--cpus", "0.5", "busybox",
        "cat", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/cpu.max"]);
    assert_eq!(limits, "33554432\n20\n50000 100000\n", "cgroup v2 limit files: {limits}");
    let oom = vm.docker_ok(&["run", "-d", "--memory", "32m", "--memory-swap", "32m", "busybox", "tail", "/dev/zero"]);
    assert_eq!(vm.docker_ok(&["wait", oom.trim()]).trim(), "137");
    assert_eq!(vm.docker_ok(&["inspect", "--format", "{{.State.OOMKilled}}", oom.trim()]).trim(), "true");
    vm.docker_ok(&["rm", oom.trim()]);
    // docker exec -it in a real pty (`script`).
    let id = vm.docker_ok(&["run", "-d", "--name", "sleeper", "busybox", "sleep", "600"]);
    let base = vm.docker_command();
    let mut cmd = fx.ns.command("script");
    cmd.args(["-qec", "docker exec -it sleeper sh", "/dev/null"]);
    cmd.env_clear();
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let (status, stdout, _) = berth_tests::berthd::run_with_timeout(cmd, Some(b"tty; echo $((6*7)); exit 5\n"), std::time::Duration::from_secs(120)).expect("exec -it");
    let text = String::from_utf8_lossy(&stdout);
    assert!(text.contains("/dev/pts/") && text.contains("42"), "{text}");
    assert_eq!(status.code(), Some(5), "{text}");
    // Hijacked stream with stdin half-close: cat sees EOF and exits; its output comes back.
    let o = vm.docker_with_stdin(&["exec", "-i", "sleeper", "cat"], Some(b"through the vsock\n"));
    assert!(o.success(), "{o:?}");
    assert_eq!(o.stdout, "through the vsock\n");
    vm.docker_ok(&["rm", "-f", id.trim()]);

    // --- the guest forward service (what published ports use), through the real VM -----------
    let web = fx.reference("web:latest");
    vm.docker_ok(&["pull", "-q", &web]);
    let wid = vm.docker_ok(&["run", "-d", "--network", "host", &web]);
    let page = forward_get(&vm, "127.0.0.1:80");
    assert!(page.contains(berth_tests::image::WEB_MARKER), "{page}");
    vm.docker_ok(&["rm", "-f", wid.trim()]);

    // --- published ports (-p): the agent listens on the host and forwards over vsock ---------
    published_port_reaches_the_host(&vm, &fx, &web);
    published_udp_port_reaches_the_host(&vm, &fx);

    // --- kill -9 of the agent: the VM and its containers live on, a new agent re-attaches ----
    let adopted = agent_kill_leaves_the_vm_running(&vm, &fx, &web);

    // --- berth down (no agent is running: it re-attaches, then stops everything), berth up:
    // the image is still there ---------------------------------------------------------------
    let down = vm.berth_ok(&["down"]);
    assert!(down.contains("stopped"), "{down}");
    assert!(vm.live_pids().is_empty(), "processes left after down: {:?}", vm.live_pids());
    for pid in adopted {
        assert!(!alive(pid), "adopted process {pid} left after down");
    }
    assert!(!vm.docker_socket().exists(), "docker socket left after down");
    vm.berth_ok(&["up", "--vm"]);
    let images = vm.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.lines().any(|l| l == "busybox:latest"), "{images}");

    // --- kill -9 of the agent and of the vsock helper: refused, stopped, booted afresh --------
    inconsistent_vm_is_replaced(&vm);

    // --- kill -9 of QEMU: status says so, berth up recovers -----------------------------------
    let qemu = vm.status()["pid"].as_i64().expect("qemu pid") as i32;
    // SAFETY: the QEMU this test started.
    unsafe { libc::kill(qemu, libc::SIGKILL) };
    let st = status_once_failed(&vm);
    assert_eq!(st["state"], "failed", "{st}");
    let msg = st["failure"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("QEMU exited") && msg.contains("signal 9"), "{st}");
    let human = vm.berth(&["status"]);
    assert_eq!(human.status.code(), Some(3));
    assert!(human.stderr.contains("signal 9") || human.stdout.contains("signal 9"), "{human:?}");
    assert!(!vm.docker(&["version"]).success(), "docker must fail while the VM is down");
    vm.berth_ok(&["up", "--vm"]);
    let images = vm.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.lines().any(|l| l == "busybox:latest"), "image lost after kill -9: {images}");
    // The engine runs containers again. (Checked through `logs`: with runc in the VM, once in
    // two runs the attach stream of a `run` right after the recovery came back empty. Not seen
    // since the VM runs berth-oci: 9 attached `run --rm ... echo` after 3 kill -9 recoveries all
    // printed. The shim starts a container whose attach has not connected after 5 s anyway
    // (`wait_attach`), which gives exactly that symptom if berthd's attach is that late.)
    let c = vm.docker_ok(&["run", "-d", "busybox", "echo", "back"]);
    vm.docker_ok(&["wait", c.trim()]);
    assert_eq!(vm.docker_ok(&["logs", c.trim()]), "back\n");

    // --- an adopted QEMU (not the agent's child) that dies is noticed too (pidfd) ------------
    let st = vm.status();
    let agent = st["agent_pid"].as_i64().expect("agent pid") as i32;
    let qemu = st["pid"].as_i64().expect("qemu pid") as i32;
    vm.extra_pids.lock().unwrap().push(qemu);
    // SAFETY: the agent and the QEMU this test started.
    unsafe { libc::kill(agent, libc::SIGKILL) };
    wait_dead(agent, "killed agent");
    let st = vm.status();
    assert_eq!((st["state"].as_str(), st["pid"].as_i64()), (Some("running"), Some(qemu as i64)), "{st}");
    unsafe { libc::kill(qemu, libc::SIGKILL) };
    let st = status_once_failed(&vm);
    assert_eq!(st["state"], "failed", "{st}");
    assert!(st["failure"]["message"].as_str().unwrap_or("").contains("QEMU exited"), "{st}");
}

/// The agent's status once it says `failed` (after QEMU was killed), or after 20 s.
fn status_once_failed(vm: &BerthVm) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let st = vm.status();
        if st["state"] == "failed" || std::time::Instant::now() > deadline {
            return st;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// GET /index.html on host port `port` until the page comes (30 s).
fn host_page(fx: &Fixtures, port: u16) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(r) = berth_tests::http::request(&fx.ns, "GET", &format!("127.0.0.1:{port}"), "/index.html", &[], b"") {
            if r.status == 200 {
                return r.text();
            }
        }
        assert!(std::time::Instant::now() < deadline, "host port {port} never answered");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn wait_dead(pid: i32, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alive(pid) {
        assert!(std::time::Instant::now() < deadline, "{what} (pid {pid}) still alive");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Checklist #29: containers run (one publishing a port), the agent is killed with SIGKILL;
/// QEMU and its vsock helper live on, the docker socket is gone; `berth status` starts a new
/// agent that re-attaches: the same containers (same ID, same StartedAt), exec works, the
/// port answers on the host again, `berth up` keeps the same VM. Then the new agent gets
/// SIGTERM (it detaches), and the pids to check after the caller's `berth down` (with no agent)
/// are returned.
fn agent_kill_leaves_the_vm_running(vm: &BerthVm, fx: &Fixtures, web: &str) -> Vec<i32> {
    let sleeper = vm.docker_ok(&["run", "-d", "busybox", "sleep", "600"]).trim().to_string();
    let port = fx.ns.free_port().unwrap();
    let webc = vm.docker_ok(&["run", "-d", "-p", &format!("127.0.0.1:{port}:80"), web]).trim().to_string();
    assert!(host_page(fx, port).contains(berth_tests::image::WEB_MARKER));
    let state = |id: &str| vm.docker_ok(&["inspect", "--format", "{{.State.Running}} {{.State.StartedAt}}", id]).trim().to_string();
    let (s_before, w_before) = (state(&sleeper), state(&webc));
    assert!(s_before.starts_with("true ") && w_before.starts_with("true "), "{s_before} / {w_before}");
    let st = vm.status();
    let agent = st["agent_pid"].as_i64().expect("agent pid") as i32;
    let qemu = st["pid"].as_i64().expect("qemu pid") as i32;
    let helper = vm.pid_file("vm/vhost-vsock.pid").expect("vhost-vsock pid");
    vm.extra_pids.lock().unwrap().extend([qemu, helper]);
    // SAFETY: the agent this test started (its pid from its own status).
    unsafe { libc::kill(agent, libc::SIGKILL) };
    wait_dead(agent, "killed agent");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(alive(qemu), "QEMU died with its agent");
    assert!(alive(helper), "vhost-device-vsock died with its agent");
    assert!(!vm.docker(&["version"]).success(), "no agent, no docker socket: the next step must really re-attach");

    // A new agent, started by `berth status`, takes the VM over.
    let started = std::time::Instant::now();
    let st = vm.status();
    let reattach_s = started.elapsed().as_secs_f64();
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["pid"].as_i64(), Some(qemu as i64), "the same QEMU: {st}");
    assert_ne!(st["agent_pid"].as_i64(), Some(agent as i64), "{st}");
    assert!(st["note"].as_str().unwrap_or("").contains("re-attached"), "{st}");
    assert!(st["reattached_at_ms"].as_u64().is_some(), "{st}");
    assert_eq!(stages(&st), ["vm-started", "kernel-up", "init-up", "disk-up", "engine-up", "socket-forwarded"], "{st}");
    assert_eq!(st["accel"], "tcg", "{st}");
    eprintln!("re-attach after kill -9 of the agent: `berth status` took {reattach_s:.2} s (agent start, adoption, running status)");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(vm.docker_socket()).unwrap().permissions().mode() & 0o777, 0o600);

    // The containers never stopped.
    assert_eq!(state(&sleeper), s_before);
    assert_eq!(state(&webc), w_before);
    assert_eq!(vm.docker_ok(&["exec", &sleeper, "echo", "still here"]), "still here\n");
    // The published port is listened on again (a resync of the running containers).
    assert!(host_page(fx, port).contains(berth_tests::image::WEB_MARKER));
    assert!(vm.status()["ports"].as_array().unwrap().iter().any(|p| p["host_port"] == port));
    // The console is still followed: the boot's lines and the log.
    let logs = vm.berth_ok(&["logs", "-n", "2000"]);
    assert!(logs.contains("stage=init-up"), "{logs}");
    // `berth up` keeps the VM it has.
    let up = vm.berth_ok(&["up", "--vm"]);
    assert!(up.contains("Berth is up"), "{up}");
    assert_eq!(vm.status()["pid"].as_i64(), Some(qemu as i64));
    vm.docker_ok(&["rm", "-f", &sleeper, &webc]);
    // SIGTERM to the new agent: it exits on purpose, leaving the VM running (its socket
    // removed); the caller's `berth down` finds no agent, and must still stop the VM.
    let agent2 = vm.status()["agent_pid"].as_i64().expect("agent pid") as i32;
    // SAFETY: the agent this test's `berth status` started.
    unsafe { libc::kill(agent2, libc::SIGTERM) };
    wait_dead(agent2, "second agent after SIGTERM");
    assert!(alive(qemu) && alive(helper), "the VM stopped with its second agent's SIGTERM");
    assert!(!vm.docker_socket().exists(), "a detaching agent removes its docker socket");
    vec![qemu, helper]
}

/// A VM that cannot be adopted (its vsock helper was killed with the agent): the next
/// `berth up` stops it, boots a fresh one and says so; nothing is lost.
fn inconsistent_vm_is_replaced(vm: &BerthVm) {
    let st = vm.status();
    let agent = st["agent_pid"].as_i64().expect("agent pid") as i32;
    let qemu = st["pid"].as_i64().expect("qemu pid") as i32;
    let helper = vm.pid_file("vm/vhost-vsock.pid").expect("vhost-vsock pid");
    vm.extra_pids.lock().unwrap().extend([qemu, helper]);
    // SAFETY: processes this test started (pids from the agent's status and pid file).
    unsafe {
        libc::kill(agent, libc::SIGKILL);
        libc::kill(helper, libc::SIGKILL);
    }
    wait_dead(agent, "killed agent");
    wait_dead(helper, "killed vsock helper");
    let up = vm.berth_ok(&["up", "--vm"]);
    assert!(up.contains("Berth is up"), "{up}");
    assert!(up.contains("could not be re-attached") && up.contains("vsock helper"), "{up}");
    wait_dead(qemu, "the refused QEMU");
    let st = vm.status();
    assert_ne!(st["pid"].as_i64(), Some(qemu as i64), "{st}");
    let images = vm.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.lines().any(|l| l == "busybox:latest"), "{images}");
}

/// GET / from `target` inside the VM through the agent's transport and init's forward service.
fn forward_get(vm: &BerthVm, target: &str) -> String {
    let uds = vm.home().join("vm/vsock.sock");
    let target: std::net::SocketAddr = target.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let t = berth_agent::transport::hybrid::Hybrid::new(uds);
        // httpd may need a moment to listen.
        for _ in 0..100 {
            if let Ok(g) = berth_agent::ports::open_forward(&t, target).await {
                // The same relay the published ports use, from an in-memory "client".
                let (mut client, local) = tokio::io::duplex(1 << 16);
                let relay = tokio::spawn(g.splice(local));
                client.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await.unwrap();
                let mut out = String::new();
                let r = tokio::time::timeout(std::time::Duration::from_secs(20), client.read_to_string(&mut out)).await;
                assert!(r.is_ok(), "the forward did not end after the server closed: {out}");
                relay.abort();
                if out.contains("200") {
                    return out;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no answer from {target} in the VM");
    })
}

/// `docker run -d -p 127.0.0.1:PORT:80` and a GET on the host: the agent saw the container's
/// start event, listens on the host port and forwards over vsock; `rm -f` releases it.
fn published_port_reaches_the_host(vm: &BerthVm, fx: &Fixtures, web: &str) {
    let port = fx.ns.free_port().unwrap();
    let id = vm.docker_ok(&["run", "-d", "-p", &format!("127.0.0.1:{port}:80"), web]);
    let inspect: serde_json::Value = serde_json::from_str(&vm.docker_ok(&["inspect", id.trim()])).unwrap();
    let ports = inspect[0]["NetworkSettings"]["Ports"].to_string();
    assert!(ports.contains(&port.to_string()), "berthd does not report the published port: {ports}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let page = loop {
        if let Ok(r) = berth_tests::http::request(&fx.ns, "GET", &format!("127.0.0.1:{port}"), "/index.html", &[], b"") {
            if r.status == 200 {
                break r.text();
            }
        }
        assert!(std::time::Instant::now() < deadline, "host port {port} never answered");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(page.contains(berth_tests::image::WEB_MARKER), "{page}");
    let st = vm.status();
    assert!(st["ports"].as_array().unwrap().iter().any(|p| p["host_port"] == port), "{st}");
    vm.docker_ok(&["rm", "-f", id.trim()]);
    // Released when the container stops.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fx.ns.connect_tcp(&format!("127.0.0.1:{port}")).is_ok() {
        assert!(std::time::Instant::now() < deadline, "host port {port} still open after rm");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `-p 127.0.0.1:PORT:7/udp`: a datagram to the host port goes over vsock (one frame per
/// datagram) to the container's echo server, and the answer comes back to the sender.
fn published_udp_port_reaches_the_host(vm: &BerthVm, fx: &Fixtures) {
    let port = fx.ns.free_port().unwrap();
    let echo = berth_tests::probe::probes().unwrap().udp_echo.display().to_string();
    let id = vm.docker_ok(&["run", "-d", "-p", &format!("127.0.0.1:{port}:7/udp"), "busybox", "sleep", "300"]);
    let id = id.trim();
    vm.docker_ok(&["cp", &echo, &format!("{id}:/udp-echo")]);
    vm.docker_ok(&["exec", "-d", id, "/udp-echo", "7"]);
    let s = fx.ns.run(|| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let answer = loop {
        // Retried: the agent opens the host port on the start event, and the echo server
        // binds after `exec -d` returns.
        s.send_to(b"through the vm", ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 1500];
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            break String::from_utf8_lossy(&buf[..n]).into_owned();
        }
        assert!(std::time::Instant::now() < deadline, "UDP host port {port} never answered");
    };
    assert_eq!(answer, "echo:through the vm");
    vm.docker_ok(&["rm", "-f", id]);
}
