//! Engine API details that real clients depend on, each found by docker-py's integration suite
//! (`tests/docker_py.rs`) and pinned here through the raw API, so a regression names itself
//! without the Python suite.

use berth_tests::require_berthd;
use berth_tests::world::World;
use serde_json::json;

/// Create (and optionally start) a container from the busybox fixture through the API.
fn create(w: &World, body: serde_json::Value) -> String {
    let r = w.d.api_post("/v1.47/containers/create", Some(&body)).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    r.json().unwrap()["Id"].as_str().unwrap().to_string()
}

fn inspect(w: &World, id: &str) -> serde_json::Value {
    let r = w.d.api_get(&format!("/v1.47/containers/{id}/json")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().unwrap()
}

/// docker-py `KillTest`: POST /kill (SIGKILL) answers once the container is down, as Docker's
/// does, so an inspect right after sees it exited with 137.
#[test]
fn sigkill_returns_after_the_container_is_down() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    for _ in 0..3 {
        let id = create(&w, json!({"Image": img, "Cmd": ["sleep", "9999"]}));
        assert_eq!(w.d.api_post(&format!("/v1.47/containers/{id}/start"), None).unwrap().status, 204);
        let r = w.d.api_post(&format!("/v1.47/containers/{id}/kill"), None).unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
        let state = &inspect(&w, &id)["State"];
        assert_eq!(state["Running"], false, "{state}");
        assert_eq!(state["ExitCode"], 137, "{state}");
        // And so a plain (not forced) remove right after works.
        let r = w.d.api("DELETE", &format!("/v1.47/containers/{id}"), None).unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
    }
}

/// docker-py `test_valid_no_log_driver_specified` and every `containers.run()` (it reads
/// `HostConfig.LogConfig.Type`): a container created without a log driver shows Docker's
/// default `json-file`, options kept; an unknown driver is refused in Docker's words.
#[test]
fn log_config_defaults_to_json_file_and_unknown_drivers_are_refused_as_docker_does() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let id = create(&w, json!({"Image": img, "Cmd": ["true"]}));
    let lc = &inspect(&w, &id)["HostConfig"]["LogConfig"];
    assert_eq!(lc["Type"], "json-file", "{lc}");
    assert_eq!(lc["Config"], json!({}), "{lc}");
    let id = create(&w, json!({"Image": img, "Cmd": ["true"], "HostConfig": {"LogConfig": {"Type": "", "Config": {"max-file": "100"}}}}));
    let lc = &inspect(&w, &id)["HostConfig"]["LogConfig"];
    assert_eq!(lc["Type"], "json-file", "{lc}");
    assert_eq!(lc["Config"], json!({"max-file": "100"}), "{lc}");
    let r = w
        .d
        .api_post("/v1.47/containers/create", Some(&json!({"Image": img, "HostConfig": {"LogConfig": {"Type": "asdf"}}})))
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json().unwrap()["message"], "logger: no log driver named 'asdf' is registered");
    // The CLI shows the same default.
    let t = w.d.docker_ok(&["inspect", "--format", "{{.HostConfig.LogConfig.Type}}", &id]);
    assert_eq!(t.trim(), "json-file");
}

/// docker-py `test_build_container_with_target` reads `Config["OnBuild"]` of an image that has
/// none: Docker sends the key (null), as it does for Entrypoint, Volumes, Labels and the rest.
#[test]
fn image_inspect_config_has_the_keys_docker_always_sends() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let r = w.d.api_get(&format!("/v1.47/images/{img}/json")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let cfg = &r.json().unwrap()["Config"];
    let obj = cfg.as_object().expect("Config is an object");
    for k in ["OnBuild", "Entrypoint", "Volumes", "Labels", "WorkingDir", "User", "Env", "Cmd"] {
        assert!(obj.contains_key(k), "{k} missing in {cfg}");
    }
    assert_eq!(cfg["OnBuild"], serde_json::Value::Null);
    assert_eq!(cfg["Cmd"], json!(["sh"]), "set keys keep their values");
}

/// docker-py reads a hijacked stream from the raw socket behind its HTTP buffer
/// (docker-py#3332): bytes that come in the same read as the 101 headers are lost to it, so a
/// fast `attach(logs=True)` or `exec_run` returned b"". For its User-Agent, the stream starts
/// a moment after the 101. A client that reads 10 ms after sending (a busy Python process) gets
/// the headers alone in its first read, and the output after.
#[test]
fn hijacked_stream_for_docker_py_starts_after_the_101_headers() {
    use std::io::{Read, Write};
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let id = create(&w, json!({"Image": img, "Cmd": ["echo", "hello"]}));
    assert_eq!(w.d.api_post(&format!("/v1.47/containers/{id}/start"), None).unwrap().status, 204);
    let r = w.d.api_post(&format!("/v1.47/containers/{id}/wait"), None).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    for _ in 0..5 {
        let mut s = std::os::unix::net::UnixStream::connect(w.d.socket()).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST /v1.47/containers/{id}/attach?logs=1&stdout=1&stderr=1&stream=0 HTTP/1.1\r\nHost: docker\r\n\
             User-Agent: docker-sdk-python/6.1.3\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        let mut first = vec![0u8; 8192];
        let n = s.read(&mut first).unwrap();
        let head = String::from_utf8_lossy(&first[..n]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "stream bytes came with the headers: {head:?}");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        // One stdout frame: [1, 0, 0, 0, len(4 bytes BE)] + "hello\n".
        assert_eq!(rest, [&[1u8, 0, 0, 0, 0, 0, 0, 6][..], b"hello\n"].concat(), "{:?}", String::from_utf8_lossy(&rest));
    }
}

/// Raw hijacked request on the daemon's socket; returns the stream after the 101 headers.
fn hijack(w: &World, path: &str, body: &str) -> std::os::unix::net::UnixStream {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(w.d.socket()).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "connection closed in the headers: {:?}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s
}

/// Read until `want` shows up in what was read (or panic after the read timeout).
fn read_until(s: &mut std::os::unix::net::UnixStream, want: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(want.len()).any(|x| x == want) {
        let n = s.read(&mut buf).unwrap_or_else(|e| panic!("{e}; got {:?}", String::from_utf8_lossy(&got)));
        assert!(n > 0, "closed before {:?}; got {:?}", String::from_utf8_lossy(want), String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// docker-py `test_detach_with_*` (attach and exec), and `docker attach` + ctrl-p ctrl-q:
/// typing the detach keys (the default, or `detachKeys`) ends the session, the keys are not
/// passed to the process, and the process keeps running.
#[test]
fn detach_keys_end_attach_and_exec_sessions_and_the_process_runs_on() {
    use std::io::{Read, Write};
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let id = create(&w, json!({"Image": img, "Cmd": ["cat"], "Tty": true, "OpenStdin": true, "AttachStdin": true}));
    assert_eq!(w.d.api_post(&format!("/v1.47/containers/{id}/start"), None).unwrap().status, 204);
    for (query, keys) in [("", &b"\x10\x11"[..]), ("&detachKeys=ctrl-x", &b"\x18"[..])] {
        let mut s = hijack(&w, &format!("/v1.47/containers/{id}/attach?stdin=1&stdout=1&stderr=1&stream=1{query}"), "");
        s.write_all(b"ping\n").unwrap();
        read_until(&mut s, b"ping");
        if keys.len() > 1 {
            // A broken sequence is passed on as typed.
            s.write_all(&[keys[0], b'z', b'\n']).unwrap();
            read_until(&mut s, b"z");
        }
        s.write_all(keys).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("the session ends after the detach keys");
        assert!(!rest.windows(keys.len()).any(|x| x == keys), "keys passed on: {rest:?}");
        assert_eq!(inspect(&w, &id)["State"]["Running"], true, "the container runs on");
    }
    // Exec: DetachKeys from the exec's create.
    let r = w
        .d
        .api_post(
            &format!("/v1.47/containers/{id}/exec"),
            Some(&json!({"Cmd": ["cat"], "AttachStdin": true, "AttachStdout": true, "Tty": true, "DetachKeys": "ctrl-x"})),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let exec = r.json().unwrap()["Id"].as_str().unwrap().to_string();
    let mut s = hijack(&w, &format!("/v1.47/exec/{exec}/start"), r#"{"Detach":false,"Tty":true}"#);
    s.write_all(b"pong\n").unwrap();
    read_until(&mut s, b"pong");
    s.write_all(b"\x18").unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("the exec session ends after the detach keys");
    let r = w.d.api_get(&format!("/v1.47/exec/{exec}/json")).unwrap();
    let v = r.json().unwrap();
    assert_eq!(v["Running"], true, "the exec runs on: {v}");
    assert_eq!(v["DetachKeys"], "ctrl-x");
    // Bad keys are refused up front.
    let r = w
        .d
        .api_post(&format!("/v1.47/containers/{id}/exec"), Some(&json!({"Cmd": ["true"], "DetachKeys": "ctrl-1"})))
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
}

/// docker-py's network tests end with `leave_swarm(force=True)`, which expects what Docker
/// answers outside a swarm (503), not a 404; the CLI shows the reason.
#[test]
fn swarm_endpoints_answer_as_a_node_outside_a_swarm() {
    require_berthd!();
    let w = World::start();
    let r = w.d.api_post("/v1.47/swarm/leave?force=1", None).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json().unwrap()["message"], "This node is not part of a swarm");
    for p in ["/v1.47/swarm", "/v1.47/nodes", "/v1.47/services", "/v1.47/secrets", "/v1.47/configs", "/v1.47/tasks"] {
        assert_eq!(w.d.api_get(p).unwrap().status, 503, "{p}");
    }
    let out = w.d.docker(&["node", "ls"]).assert_fail();
    assert!(out.stderr.contains("not a swarm manager"), "{}", out.stderr);
    let out = w.d.docker(&["swarm", "init"]).assert_fail();
    assert!(out.stderr.contains("not supported by Berth"), "{}", out.stderr);
}

/// docker-py's ExecDemuxTest and `exec_start(socket=True)`, and bollard's default start
/// options: Docker frames an exec's output by the *start's* Tty flag, so a TTY exec started
/// with Tty false gets stdout frames, and one started with Tty true the raw bytes.
#[test]
fn tty_exec_output_is_framed_by_the_start_requests_tty_flag() {
    use std::io::Read;
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let id = create(&w, json!({"Image": img, "Cmd": ["sleep", "600"]}));
    assert_eq!(w.d.api_post(&format!("/v1.47/containers/{id}/start"), None).unwrap().status, 204);
    for start_tty in [false, true] {
        let r = w
            .d
            .api_post(
                &format!("/v1.47/containers/{id}/exec"),
                Some(&json!({"Cmd": ["echo", "hi"], "AttachStdout": true, "AttachStderr": true, "Tty": true})),
            )
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.text());
        let exec = r.json().unwrap()["Id"].as_str().unwrap().to_string();
        let mut s = hijack(&w, &format!("/v1.47/exec/{exec}/start"), &json!({"Detach": false, "Tty": start_tty}).to_string());
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        if start_tty {
            assert_eq!(out, b"hi\r\n", "{:?}", String::from_utf8_lossy(&out));
        } else {
            let mut want = vec![1u8, 0, 0, 0];
            let mut payload = Vec::new();
            let mut rest = &out[..];
            // The TTY's bytes may come in more than one frame: all stdout, together "hi\r\n".
            while !rest.is_empty() {
                assert!(rest.len() >= 8 && rest[..4] == want[..], "not a stdout frame: {out:?}");
                let n = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
                payload.extend_from_slice(&rest[8..8 + n]);
                rest = &rest[8 + n..];
            }
            assert_eq!(payload, b"hi\r\n", "{out:?}");
            want.clear();
        }
    }
}

/// docker-py `test_diff`: `touch /test` in a container gives exactly [/test added]: the files
/// berthd writes for it (/etc/hosts, hostname, resolv.conf) and their /etc are not changes.
#[test]
fn diff_shows_only_what_the_container_changed() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let id = create(&w, json!({"Image": img, "Cmd": ["touch", "/test"]}));
    assert_eq!(w.d.api_post(&format!("/v1.47/containers/{id}/start"), None).unwrap().status, 204);
    assert_eq!(w.d.api_post(&format!("/v1.47/containers/{id}/wait"), None).unwrap().status, 200);
    let r = w.d.api_get(&format!("/v1.47/containers/{id}/changes")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().unwrap(), json!([{"Path": "/test", "Kind": 1}]));
}

/// docker-py `test_create_volume_invalid_driver`: an unknown volume driver is a missing
/// plugin to Docker (404), at volume create and in a container's mounts alike.
#[test]
fn unknown_volume_driver_is_not_found_as_in_docker() {
    require_berthd!();
    let w = World::start();
    let r = w.d.api_post("/v1.47/volumes/create", Some(&json!({"Name": "v1", "Driver": "invalid.driver"}))).unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    let msg = r.json().unwrap()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("plugin \"invalid.driver\" not found"), "{msg}");
    let out = w.d.docker(&["volume", "create", "-d", "nosuch", "v2"]).assert_fail();
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    let ls = w.d.docker_ok(&["volume", "ls", "-q"]);
    assert!(ls.trim().is_empty(), "nothing made: {ls}");
}
