//! `docker exec`: the real `docker` CLI against berthd.

use std::io::Write;
use std::process::{Command, Stdio};

use berth_tests::require_berthd;
use berth_tests::world::World;

fn world() -> World {
    World::start()
}

fn running(w: &World, name: &str) {
    let img = w.fx.reference("busybox:latest");
    w.d.docker_ok(&["pull", "-q", &img]);
    w.d.docker_ok(&["run", "-d", "--name", name, &img, "sleep", "1000"]);
}

#[test]
fn exec_output_env_workdir_user_stdin_detach() {
    require_berthd!();
    let w = world();
    running(&w, "web");
    let id = w.d.docker_ok(&["inspect", "-f", "{{.Id}}", "web"]);
    assert_eq!(w.d.docker_ok(&["exec", "web", "cat", "/etc/hostname"]).trim(), &id.trim()[..12]);

    let r = w.d.docker(&["exec", "web", "sh", "-c", "echo out; echo err >&2; exit 5"]);
    assert_eq!(r.status.code(), Some(5), "{r:?}");
    assert_eq!(r.stdout.trim(), "out");
    assert_eq!(r.stderr.trim(), "err");

    assert_eq!(w.d.docker_ok(&["exec", "-e", "X=1", "web", "sh", "-c", "echo $X"]).trim(), "1");
    assert_eq!(w.d.docker_ok(&["exec", "-w", "/tmp", "web", "pwd"]).trim(), "/tmp");
    assert_eq!(w.d.docker_ok(&["exec", "-u", "nobody", "web", "id", "-u"]).trim(), "65534");
    assert_eq!(w.d.docker_ok(&["exec", "web", "id", "-u"]).trim(), "0");

    let r = w.d.docker_with_stdin(&["exec", "-i", "web", "cat"], Some(b"hello\n"));
    assert!(r.success(), "{r:?}");
    assert_eq!(r.stdout, "hello\n");

    w.d.docker_ok(&["exec", "-d", "web", "touch", "/tmp/x"]);
    let mut found = false;
    for _ in 0..50 {
        if w.d.docker(&["exec", "web", "test", "-f", "/tmp/x"]).success() {
            found = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(found, "detached exec did not run");

    // A command that is not there: the runtime's message in the stream and exit code 126,
    // as with Docker (the CLI exits with the exec's code).
    for (cmd, tty) in [("/no/such/binary", false), ("nosuchcmd", false), ("nosuchcmd", true)] {
        let mut args = vec!["exec"];
        if tty {
            args.push("-t");
        }
        args.extend(["web", cmd]);
        let r = w.d.docker(&args);
        assert_eq!(r.status.code(), Some(126), "{r:?}");
        let said = format!("{}{}", r.stdout, r.stderr);
        assert!(said.contains(cmd) && (said.contains("not found") || said.contains("no such file")), "{r:?}");
    }

    w.d.docker_ok(&["stop", "-t", "1", "web"]);
    let r = w.d.docker(&["exec", "web", "true"]).assert_fail();
    assert!(r.stderr.contains("is not running"), "{}", r.stderr);
    let r = w.d.docker(&["exec", "nosuch", "true"]).assert_fail();
    assert!(r.stderr.contains("No such container"), "{}", r.stderr);
}

#[test]
fn exec_tty_in_a_real_pty() {
    require_berthd!();
    let w = world();
    running(&w, "tt");
    let mut child = Command::new("script")
        .args(["-qec", "docker exec -it tt sh", "/dev/null"])
        .env("DOCKER_HOST", w.d.host())
        .env("DOCKER_CONFIG", w.d.docker_config())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    stdin.write_all(b"echo $((6*7)); exit 7\n").unwrap();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    let out = waiter.join().unwrap();
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("42"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(7), "{text}");
}

#[test]
fn exec_api_inspect_after_completion() {
    require_berthd!();
    let w = world();
    running(&w, "api");
    let r = w.d.api_post("/containers/api/exec", Some(&serde_json::json!({"Cmd": ["sh", "-c", "exit 3"], "AttachStdout": true}))).unwrap();
    assert_eq!(r.status, 201);
    let id = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["Id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);
    let v: serde_json::Value = serde_json::from_slice(&w.d.api_get(&format!("/exec/{id}/json")).unwrap().body).unwrap();
    assert_eq!(v["Running"], false);
    assert_eq!(v["ExitCode"], serde_json::Value::Null);
    let r = w.d.api_post(&format!("/exec/{id}/start"), Some(&serde_json::json!({"Detach": true}))).unwrap();
    assert_eq!(r.status, 200);
    let mut v = serde_json::Value::Null;
    for _ in 0..50 {
        v = serde_json::from_slice(&w.d.api_get(&format!("/exec/{id}/json")).unwrap().body).unwrap();
        if v["Running"] == false && v["ExitCode"] != serde_json::Value::Null {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(v["Running"], false, "{v}");
    assert_eq!(v["ExitCode"], 3, "{v}");
    assert_eq!(v["ProcessConfig"]["entrypoint"], "sh");
    assert!(v["ContainerID"].as_str().unwrap().len() == 64);
    // Started once only.
    assert_eq!(w.d.api_post(&format!("/exec/{id}/start"), Some(&serde_json::json!({"Detach": true}))).unwrap().status, 409);
    assert_eq!(w.d.api_get("/exec/nosuch/json").unwrap().status, 404);

    let until = chrono_now_secs();
    let ev = w.d.docker_ok(&["events", "--since", "0", "--until", &until.to_string(), "--format", "{{.Action}} {{index .Actor.Attributes \"exitCode\"}} {{index .Actor.Attributes \"execID\"}}"]);
    assert!(ev.contains("exec_create: sh -c exit 3"), "{ev}");
    assert!(ev.contains("exec_start: sh -c exit 3"), "{ev}");
    assert!(ev.contains(&format!("exec_die 3 {id}")), "{ev}");
}

fn chrono_now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 1
}
