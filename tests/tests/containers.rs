//! Issue 3: containers. The real `docker` CLI against berthd in a loopback-only namespace.

use berth_tests::require_berthd;
use berth_tests::world::World;

fn world() -> World {
    World::start()
}

#[test]
fn create_list_inspect_rename_rm() {
    require_berthd!();
    let w = world();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    let id = w.d.docker_ok(&["create", "--name", "first", "-e", "A=1", "--label", "k=v", &img, "echo", "hi"]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "create prints the full ID: {id:?}");

    // Not running: only `ps -a` shows it.
    assert!(!w.d.docker_ok(&["ps", "-q", "--no-trunc"]).contains(&id));
    let all = w.d.docker_ok(&["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}} {{.Status}} {{.Command}}"]);
    assert!(all.contains(&format!("{id} first Created")), "{all}");
    assert!(all.contains("echo hi"), "{all}");
    let by_label = w.d.docker_ok(&["ps", "-aq", "--no-trunc", "--filter", "label=k=v"]);
    assert_eq!(by_label.trim(), id);
    assert!(w.d.docker_ok(&["ps", "-aq", "--filter", "label=k=other"]).trim().is_empty());

    let v: serde_json::Value = serde_json::from_str(&w.d.docker_ok(&["inspect", "first"])).unwrap();
    let c = &v[0];
    assert_eq!(c["Id"], id.as_str());
    assert_eq!(c["Name"], "/first");
    assert_eq!(c["State"]["Status"], "created");
    assert_eq!(c["Path"], "echo");
    assert_eq!(c["Args"][0], "hi");
    let env: Vec<String> = serde_json::from_value(c["Config"]["Env"].clone()).unwrap();
    assert!(env.contains(&"A=1".to_string()), "{env:?}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "image env merged: {env:?}");
    assert_eq!(c["Image"], w.fx.pushed("busybox:latest").config_digest.as_str());

    // Names are unique; rename frees the old one.
    let dup = w.d.docker(&["create", "--name", "first", &img]).assert_fail();
    assert!(dup.stderr.contains("already in use"), "{}", dup.stderr);
    w.d.docker_ok(&["rename", "first", "second"]);
    assert!(w.d.docker(&["inspect", "first"]).assert_fail().stderr.contains("No such"));
    w.d.docker_ok(&["inspect", "second"]);

    // An image in use by a container is not deleted.
    let r = w.d.docker(&["rmi", &img]).assert_fail();
    assert!(r.stderr.contains("being used"), "{}", r.stderr);
    w.d.docker_ok(&["image", "inspect", &img]);

    // Records survive a daemon restart.
    let mut d = w.d;
    d.restart().unwrap();
    assert_eq!(d.docker_ok(&["ps", "-aq", "--no-trunc"]).trim(), id);

    d.docker_ok(&["rm", "second"]);
    assert!(d.docker_ok(&["ps", "-aq"]).trim().is_empty());
    assert!(!d.data_root().join("containers").join(&id).exists());
    // Now the image can go.
    d.docker_ok(&["rmi", &img]);
    drop(d);
    drop(w.fx);
}

#[test]
fn create_errors_are_clear() {
    require_berthd!();
    let w = world();
    let r = w.d.docker(&["create", &w.fx.reference("nosuch:1")]).assert_fail();
    assert!(r.stderr.contains("No such image") || r.stderr.contains("not found"), "{}", r.stderr);
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    let r = w.d.docker(&["create", "--name", "bad name", &img]).assert_fail();
    assert!(r.stderr.contains("Invalid container name"), "{}", r.stderr);
    let r = w.d.docker(&["rm", "nosuch"]).assert_fail();
    assert!(r.stderr.contains("No such container"), "{}", r.stderr);
}

#[test]
fn run_rm_prints_output_and_exit_code() {
    require_berthd!();
    let w = world();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    let out = w.d.docker_ok(&["run", "--rm", &img, "echo", "hi"]);
    assert_eq!(out, "hi\n");
    // stdout and stderr are separate streams.
    let r = w.d.docker(&["run", "--rm", &img, "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(r.status.code(), Some(3), "exit code propagates: {r:?}");
    assert_eq!(r.stdout, "out\n");
    assert!(r.stderr.contains("err"), "{}", r.stderr);
    // --rm removed them.
    assert!(w.d.docker_ok(&["ps", "-aq"]).trim().is_empty());
}

#[test]
fn default_container_has_docker_capabilities_and_own_namespaces() {
    require_berthd!();
    let w = world();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    let out = w.d.docker_ok(&["run", "--rm", &img, "grep", "Cap", "/proc/self/status"]);
    let field = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("{name} missing in {out}"))
            .to_string()
    };
    // Docker's 14 default capabilities, inheritable set empty.
    assert_eq!(field("CapEff:"), "00000000a80425fb", "{out}");
    assert_eq!(field("CapBnd:"), "00000000a80425fb", "{out}");
    assert_eq!(field("CapInh:"), "0000000000000000", "{out}");
    // Own pid namespace: the command is pid 1; own hostname.
    let pid = w.d.docker_ok(&["run", "--rm", &img, "sh", "-c", "echo $$"]);
    assert_eq!(pid.trim(), "1");
    let host = w.d.docker_ok(&["run", "--rm", "--hostname", "boat", &img, "hostname"]);
    assert_eq!(host.trim(), "boat");
    // Own network namespace: loopback plus the default bridge's eth0; only loopback with none.
    let links = w.d.docker_ok(&["run", "--rm", &img, "cat", "/proc/net/dev"]);
    let ifaces: Vec<&str> = links.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(ifaces, vec!["lo", "eth0"], "{links}");
    let links = w.d.docker_ok(&["run", "--rm", "--network", "none", &img, "cat", "/proc/net/dev"]);
    let ifaces: Vec<&str> = links.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(ifaces, vec!["lo"], "{links}");
}

#[test]
fn detached_logs_stop_and_restart_survival() {
    require_berthd!();
    let w = world();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    // A process that ignores SIGTERM: stop -t 2 must SIGKILL it after ~2 s (exit 137).
    let id = w.d.docker_ok(&[
        "run", "-d", "--name", "stubborn", &img, "sh", "-c",
        "trap '' TERM; i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done",
    ]);
    let id = id.trim().to_string();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let logs = w.d.docker_ok(&["logs", "stubborn"]);
    assert!(logs.starts_with("line 0\n"), "{logs}");
    let st = w.d.docker_ok(&["inspect", "-f", "{{.State.Status}} {{.State.Pid}}", "stubborn"]);
    assert!(st.starts_with("running "), "{st}");

    // berthd dies hard; the container keeps running and is picked up again.
    let mut d = w.d;
    d.kill9();
    d.restart().unwrap();
    let st = d.docker_ok(&["inspect", "-f", "{{.State.Status}}", &id]);
    assert_eq!(st.trim(), "running");
    let before = d.docker_ok(&["logs", "stubborn"]).lines().count();
    std::thread::sleep(std::time::Duration::from_millis(600));
    let after = d.docker_ok(&["logs", "--tail", "all", "stubborn"]).lines().count();
    assert!(after > before, "the container kept logging across the restart ({before} -> {after})");

    let t0 = std::time::Instant::now();
    d.docker_ok(&["stop", "-t", "2", "stubborn"]);
    let took = t0.elapsed();
    assert!(took >= std::time::Duration::from_millis(1800) && took < std::time::Duration::from_secs(8), "stop took {took:?}");
    let st = d.docker_ok(&["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "stubborn"]);
    assert_eq!(st.trim(), "exited 137");
    let tail = d.docker_ok(&["logs", "--tail", "1", "stubborn"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    d.docker_ok(&["rm", "stubborn"]);
    drop(d);
    drop(w.fx);
}

#[test]
fn rm_force_of_running_container_leaves_nothing() {
    require_berthd!();
    let w = world();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    let id = w.d.docker_ok(&["run", "-d", &img, "sleep", "1000"]);
    let id = id.trim().to_string();
    let r = w.d.docker(&["rm", &id]).assert_fail();
    assert!(r.stderr.contains("stop the container"), "{}", r.stderr);
    w.d.docker_ok(&["rm", "-f", &id]);
    assert!(w.d.docker_ok(&["ps", "-aq"]).trim().is_empty());
    // No mount, process or runtime state of it is left.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id), "a mount of the container is left");
    let left: Vec<_> = std::fs::read_dir(w.d.exec_root().join("c")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "runtime state left: {left:?}");
    let ps = std::process::Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&ps.stdout).contains(&id), "a process of the container is left");
}

#[test]
fn restart_policy_on_failure_restarts_three_times() {
    require_berthd!();
    let w = world();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    w.d.docker_ok(&["run", "-d", "--name", "flaky", "--restart", "on-failure:3", &img, "sh", "-c", "echo run; exit 1"]);
    // Back-off 100 + 200 + 400 ms plus the runs themselves.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let st = w.d.docker_ok(&["inspect", "-f", "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}", "flaky"]);
        if st.trim() == "exited 3 1" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {st:?} after 20 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // It really ran four times (the first run and three restarts), and then stays down.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(w.d.docker_ok(&["logs", "flaky"]).lines().filter(|l| *l == "run").count(), 4);
    // A successful exit is not restarted under on-failure.
    w.d.docker_ok(&["run", "-d", "--name", "fine", "--restart", "on-failure", &img, "true"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let st = w.d.docker_ok(&["inspect", "-f", "{{.State.Status}} {{.RestartCount}}", "fine"]);
    assert_eq!(st.trim(), "exited 0");
    // `always` restarts until stopped; stop wins over the back-off.
    w.d.docker_ok(&["run", "-d", "--name", "loop", "--restart", "always", &img, "true"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let n: i64 = w.d.docker_ok(&["inspect", "-f", "{{.RestartCount}}", "loop"]).trim().parse().unwrap();
    assert!(n >= 2, "always restarted {n} times");
    // Restarting or running between restarts, it is not removed without force.
    for _ in 0..5 {
        let r = w.d.docker(&["rm", "loop"]);
        assert!(!r.success() && r.stderr.contains("stop the container before removing or force remove"), "{r:?}");
        std::thread::sleep(std::time::Duration::from_millis(70));
    }
    w.d.docker_ok(&["stop", "loop"]);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let st = w.d.docker_ok(&["inspect", "-f", "{{.State.Status}}", "loop"]);
    assert_eq!(st.trim(), "exited");
    w.d.docker_ok(&["rm", "-f", "flaky", "fine", "loop"]);
}

#[test]
fn limits_are_enforced() {
    require_berthd!();
    let w = world();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    // Memory: a process that allocates more than the limit is OOM-killed and inspect says so.
    let r = w.d.docker(&[
        "run", "--name", "hog", "--memory", "32m", "--memory-swap", "32m", &img, "sh", "-c",
        "dd if=/dev/zero bs=1M count=128 | cat > /dev/shm/fill; sleep 1; x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    assert!(!r.stdout.contains("survived"), "{r:?}");
    let st = w.d.docker_ok(&["inspect", "-f", "{{.State.OOMKilled}} {{.State.ExitCode}}", "hog"]);
    assert_eq!(st.trim(), "true 137", "{r:?}");
    // Pids: a fork bomb under --pids-limit 20 is contained.
    let id = w.d.docker_ok(&[
        "run", "-d", "--pids-limit", "20", &img, "sh", "-c",
        // busybox sh gives up when fork fails: the inner shell is the bomb, the outer one stays.
        "sh -c 'for i in $(seq 1 100); do sleep 30 & done; wait'; sleep 30",
    ]);
    let id = id.trim();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let n: i64 = cgroup_file(id, "pids.current", ("pids", "pids.current")).parse().unwrap();
    assert!((2..=20).contains(&n), "pids.current = {n}");
    let logs = w.d.docker(&["logs", id]);
    assert!(logs.stderr.contains("can't fork") || logs.stderr.contains("Resource temporarily unavailable"), "{logs:?}");
    w.d.docker_ok(&["rm", "-f", id]);
}

/// A cgroup file of a container seen from the host, v2 or v1 (`v1` names the controller dir and
/// file there).
fn cgroup_file(id: &str, v2: &str, v1: (&str, &str)) -> String {
    let p2 = format!("/sys/fs/cgroup/berth/{id}/{v2}");
    let p1 = format!("/sys/fs/cgroup/{}/berth/{id}/{}", v1.0, v1.1);
    std::fs::read_to_string(&p2).or_else(|_| std::fs::read_to_string(&p1)).unwrap_or_else(|e| panic!("{p2} or {p1}: {e}")).trim().to_string()
}

#[test]
fn update_changes_limits_and_restart_policy() {
    require_berthd!();
    let w = world();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let mem = |id: &str| cgroup_file(id, "memory.max", ("memory", "memory.limit_in_bytes"));
    let pids = |id: &str| cgroup_file(id, "pids.max", ("pids", "pids.max"));
    let cpu = |id: &str| cgroup_file(id, "cpu.max", ("cpu", "cpu.cfs_quota_us"));

    // A running container gets the new limits at once, and inspect shows them.
    let id = w.d.docker_ok(&["run", "-d", "--memory", "32m", "--pids-limit", "20", &img, "sleep", "300"]).trim().to_string();
    assert_eq!((mem(&id), pids(&id)), ((32u64 << 20).to_string(), "20".to_string()));
    let out = w.d.docker_ok(&["update", "--memory", "64m", "--memory-swap", "128m", "--pids-limit", "30", "--cpus", "0.5", "--restart", "on-failure:3", &id]);
    assert_eq!(out.trim(), id);
    assert_eq!((mem(&id), pids(&id)), ((64u64 << 20).to_string(), "30".to_string()));
    assert_eq!(cpu(&id), if v2 { "50000 100000" } else { "50000" });
    let f = "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}} {{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}";
    assert_eq!(w.d.docker_ok(&["inspect", "-f", f, &id]).trim(), format!("{} {} 500000000 30 on-failure:3", 64u64 << 20, 128u64 << 20));
    // A field not given keeps its value; -1 lifts the pids limit.
    w.d.docker_ok(&["update", "--pids-limit", "-1", &id]);
    assert_eq!((mem(&id), pids(&id)), ((64u64 << 20).to_string(), "max".to_string()));
    // Refusals are Docker's, and change nothing.
    let r = w.d.docker(&["update", "--cpu-quota", "20000", &id]);
    assert!(!r.success() && r.stderr.contains("CPU Quota cannot be updated as NanoCPUs has already been set"), "{r:?}");
    let r = w.d.docker(&["update", "--memory", "256m", &id]);
    assert!(!r.success() && r.stderr.contains("update the memoryswap at the same time"), "{r:?}");
    assert_eq!(mem(&id), (64u64 << 20).to_string());
    let r = w.d.docker(&["update", "--memory", "64m", "nosuch"]);
    assert!(!r.success() && r.stderr.contains("No such container"), "{r:?}");
    let until = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 1).to_string();
    let events = w.d.docker_ok(&["events", "--since", "1", "--until", &until, "--filter", &format!("container={id}"), "--format", "{{.Action}}"]);
    assert_eq!(events.lines().filter(|l| *l == "update").count(), 2, "{events}");
    w.d.docker_ok(&["rm", "-f", &id]);

    // A created container keeps the update for its start.
    let id = w.d.docker_ok(&["create", &img, "sleep", "300"]).trim().to_string();
    w.d.docker_ok(&["update", "--memory", "48m", &id]);
    w.d.docker_ok(&["start", &id]);
    assert_eq!(mem(&id), (48u64 << 20).to_string());
    w.d.docker_ok(&["rm", "-f", &id]);

    // --rm and a restart policy do not go together.
    let id = w.d.docker_ok(&["run", "-d", "--rm", &img, "sleep", "300"]).trim().to_string();
    let r = w.d.docker(&["update", "--restart", "always", &id]);
    assert!(!r.success() && r.stderr.contains("AutoRemove is enabled"), "{r:?}");
    w.d.docker_ok(&["rm", "-f", &id]);
}

#[test]
fn interactive_tty_session_in_a_real_pty() {
    require_berthd!();
    let w = world();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    // `script` gives docker a real pty; the shell reads our input and exits with its code.
    let base = w.d.docker_command();
    let mut cmd = w.fx.ns.command("script");
    cmd.args(["-qec", &format!("docker run -it --rm {img} sh"), "/dev/null"]);
    cmd.env_clear();
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let (status, stdout, _) = berth_tests::berthd::run_with_timeout(
        cmd,
        // /dev/console is the container's pty, as with Docker.
        Some(b"stty size; [ \"$(stat -c %t,%T /dev/console)\" = \"$(stat -c %t,%T $(tty))\" ] && echo console-$((2+3))-tty; echo $((6*7)); exit 7\n"),
        std::time::Duration::from_secs(60),
    )
    .expect("run docker -it under script");
    let out = std::process::Output { status, stdout, stderr: Vec::new() };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("42"), "{text}");
    assert!(text.contains("console-5-tty"), "{text}");
    assert_eq!(out.status.code(), Some(7), "{text}");
}

#[test]
fn hundred_concurrent_runs_succeed_and_leave_nothing() {
    require_berthd!();
    let w = world();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    // A cgroup parent of this test's own, so other tests' containers do not count.
    let parent = format!("berth-test-{}", std::process::id());
    let parent = parent.as_str();
    let check = berth_tests::leaks::LeakCheck::start(&w.d, &w.fx.ns).cgroup_parent(parent);
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let mut c = w.d.docker_command();
            c.args(["run", "--rm", "--cgroup-parent", &parent, &img, "true"]);
            std::thread::spawn(move || berth_tests::berthd::run_with_timeout(c, None, std::time::Duration::from_secs(300)))
        })
        .collect();
    let mut failed = Vec::new();
    for t in threads {
        let (status, _, stderr) = t.join().unwrap().expect("docker run");
        if !status.success() {
            failed.push(String::from_utf8_lossy(&stderr).to_string());
        }
    }
    assert!(failed.is_empty(), "{} of 100 failed: {:?}", failed.len(), &failed[..failed.len().min(3)]);
    // --rm removed them all, with their mounts, runtime state, cgroups, processes, netns and
    // veths, and berthd's fds came back.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(w.d.docker_ok(&["ps", "-aq"]).trim().is_empty());
    assert_eq!(check.created().len(), 100, "create events seen by the leak check");
    check.assert_clean(&w.d, &w.fx.ns);
    let left: Vec<_> = std::fs::read_dir(w.d.exec_root().join("c")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "runtime state left: {left:?}");
    for ctrl in ["memory", "pids", "cpu"] {
        let dir = std::path::Path::new("/sys/fs/cgroup").join(ctrl).join(&parent);
        let cg: Vec<_> = std::fs::read_dir(&dir).map(|d| d.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()).collect()).unwrap_or_default();
        assert!(cg.is_empty(), "cgroups left under {}: {cg:?}", dir.display());
        let _ = std::fs::remove_dir(&dir);
    }
}

#[test]
fn health_checks_flip_between_unhealthy_and_healthy() {
    require_berthd!();
    let w = world();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    w.d.docker_ok(&[
        "run", "-d", "--name", "doc", "--health-cmd", "test -f /tmp/ok && echo fine",
        "--health-interval", "200ms", "--health-retries", "2", &img, "sleep", "300",
    ]);
    let status = |d: &berth_tests::berthd::Berthd| d.docker_ok(&["inspect", "-f", "{{.State.Health.Status}}", "doc"]).trim().to_string();
    let wait_for = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let s = status(&w.d);
            if s == want {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "health still {s:?}, wanted {want}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    wait_for("unhealthy");
    w.d.docker_ok(&["exec", "doc", "touch", "/tmp/ok"]);
    wait_for("healthy");
    let ps = w.d.docker_ok(&["ps", "--format", "{{.Status}}", "--filter", "name=doc"]);
    assert!(ps.contains("(healthy)"), "{ps}");
    let log = w.d.docker_ok(&["inspect", "-f", "{{json .State.Health.Log}}", "doc"]);
    let log: serde_json::Value = serde_json::from_str(&log).unwrap();
    let last = log.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], 0);
    assert_eq!(last["Output"], "fine\n");
    assert!(log.as_array().unwrap().len() <= 5);
    w.d.docker_ok(&["rm", "-f", "doc"]);
}

/// `logs -f` ends with the container and prints its last line; clients that give up on a
/// container that prints nothing leave no reader behind (each follow runs on a blocking thread,
/// which used to poll until the container exited, however long after its client had gone).
#[test]
fn follow_logs_end_with_the_container_and_abandoned_follows_leave_no_thread() {
    use std::io::{Read, Write};
    require_berthd!();
    let w = world();
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    for i in 0..3 {
        let name = format!("lastline{i}");
        w.d.docker_ok(&["run", "-d", "--name", &name, &img, "sh", "-c", "echo first; sleep 0.5; echo last"]);
        let out = w.d.docker_ok(&["logs", "-f", &name]);
        assert_eq!(out, "first\nlast\n", "logs -f of {name}");
        w.d.docker_ok(&["rm", &name]);
    }

    w.d.docker_ok(&["run", "-d", "--name", "quiet", &img, "sleep", "600"]);
    let pid = w.d.pid().expect("berthd pid");
    let threads = || std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count();
    // Idle blocking threads of berthd's pool go away after 10 s; start from a settled count.
    std::thread::sleep(std::time::Duration::from_secs(11));
    let base = threads();
    let mut clients = Vec::new();
    for _ in 0..16 {
        let mut s = std::os::unix::net::UnixStream::connect(w.d.socket()).unwrap();
        s.write_all(b"GET /containers/quiet/logs?follow=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: berth\r\n\r\n").unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200", "a follow is answered at once");
        clients.push(s);
    }
    let busy = threads();
    assert!(busy >= base + 16, "each follow holds a blocking thread while its client is there ({base} -> {busy})");
    drop(clients);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut now = threads();
    while now > base + 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
        now = threads();
    }
    assert!(now <= base + 4, "threads of abandoned follows stay: {base} before, {busy} with 16 clients, {now} 30 s after they left");
    w.d.docker_ok(&["rm", "-f", "quiet"]);
}
