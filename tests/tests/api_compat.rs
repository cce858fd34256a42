//! Engine API details that real clients depend on, each found by docker-py's integration suite
//! (`tests/docker_py.rs`) or moby's (`tests/moby_integration.rs`) and pinned here through the raw API, so a regression names itself
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

/// moby's integration suite (`tests/moby_integration.rs`): its test environment lists plugins
/// before every test and fails on a 404. With no managed plugins, Docker answers an empty list,
/// `plugin "x" not found` for a name, and refuses installs; so does berthd.
#[test]
fn plugin_list_is_empty_and_a_named_plugin_is_not_found() {
    require_berthd!();
    let w = World::start();
    let r = w.d.api_get("/v1.41/plugins").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().unwrap(), json!([]));
    let r = w.d.api_get("/v1.41/plugins?filters=%7B%22capability%22%3A%7B%22volumedriver%22%3Atrue%7D%7D").unwrap();
    assert_eq!((r.status, r.json().unwrap()), (200, json!([])));
    let r = w.d.api_get("/v1.41/plugins/vieux/sshfs:latest/json").unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json().unwrap()["message"], "plugin \"vieux/sshfs:latest\" not found");
    let r = w.d.api_post("/v1.41/plugins/pull?remote=vieux/sshfs", Some(&json!([]))).unwrap();
    assert_eq!(r.status, 501, "{}", r.text());
    let out = w.d.docker_ok(&["plugin", "ls", "-q"]);
    assert_eq!(out.trim(), "");
}

/// moby `TestImagePullPlatformInvalid`: a platform that is neither a known OS nor an
/// architecture is refused before the reference is resolved, so no registry (here: Docker Hub,
/// which the loopback-only namespace cannot reach) is ever asked.
#[test]
fn pull_with_an_unknown_platform_is_refused_before_any_lookup() {
    require_berthd!();
    let w = World::start();
    let r = w
        .d
        .api_post("/v1.41/images/create?fromImage=docker.io%2Flibrary%2Fhello-world&tag=latest&platform=foobar", None)
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.json().unwrap()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("unknown operating system or architecture"), "{msg}");
    assert!(!w.d.log().contains("registry-1.docker.io"), "berthd contacted Docker Hub:\n{}", w.d.log());
}

/// moby `TestEventsBackwardsCompatible`: container and image events also carry the older
/// `status`, `id` and (containers) `from` fields, which Docker still sends.
#[test]
fn events_carry_the_legacy_status_id_and_from_fields() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 1;
    let id = create(&w, json!({"Image": img, "Cmd": ["true"]}));
    w.d.docker_ok(&["tag", &img, "legacy-events:1"]);
    let until = since + 3;
    let r = w.d.api_get(&format!("/v1.41/events?since={since}&until={until}")).unwrap();
    assert_eq!(r.status, 200);
    let events: Vec<serde_json::Value> =
        r.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let create_ev = events.iter().find(|e| e["Action"] == "create" && e["Type"] == "container").expect("create event");
    assert_eq!(create_ev["status"], "create", "{create_ev}");
    assert_eq!(create_ev["id"], id.as_str(), "{create_ev}");
    assert_eq!(create_ev["from"], img.as_str(), "{create_ev}");
    let tag_ev = events.iter().find(|e| e["Action"] == "tag").expect("tag event");
    assert_eq!(tag_ev["status"], "tag", "{tag_ev}");
    assert_eq!(tag_ev["id"], tag_ev["Actor"]["ID"], "{tag_ev}");
}

/// moby `TestTagInvalidReference`: a tag named like a digest algorithm (`sha256:x`) would read
/// as an image ID, so Docker refuses it; so does berthd.
#[test]
fn a_tag_named_after_the_digest_algorithm_is_refused() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let r = w.d.api_post(&format!("/v1.41/images/{img}/tag?repo=sha256&tag=sometag"), None).unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.json().unwrap()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("refusing to create an ambiguous tag using digest algorithm as name"), "{msg}");
    let r = w.d.api_get("/v1.41/images/sha256:sometag/json").unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
}

/// moby `TestCreateWithInvalidEnv`, `TestCreateWithInvalidHealthcheckParams`,
/// `TestCreateTmpfsMountsTarget`, `TestCreateLinkToNonExistingContainer`,
/// `TestCreateVolumesFromNonExistingContainer`: what Docker refuses at create, with a 400 in its
/// words, and nothing created.
#[test]
fn create_refuses_what_docker_refuses() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let ms = |n: i64| n * 1_000_000;
    let cases = [
        (json!({"Env": ["=foo"]}), json!({}), "invalid environment variable: =foo"),
        (json!({"Env": [""]}), json!({}), "invalid environment variable:"),
        (json!({"Healthcheck": {"Interval": -ms(10), "Timeout": ms(1000), "Retries": 3}}), json!({}), "Interval in Healthcheck cannot be less than 1ms"),
        (json!({"Healthcheck": {"Interval": 500_000, "Timeout": ms(1000)}}), json!({}), "Interval in Healthcheck cannot be less than 1ms"),
        (json!({"Healthcheck": {"Interval": ms(1000), "Timeout": -ms(100)}}), json!({}), "Timeout in Healthcheck cannot be less than 1ms"),
        (json!({"Healthcheck": {"Interval": ms(1000), "Retries": -10}}), json!({}), "Retries in Healthcheck cannot be negative"),
        (json!({"Healthcheck": {"StartPeriod": 100_000}}), json!({}), "StartPeriod in Healthcheck cannot be less than 1ms"),
        (json!({}), json!({"Tmpfs": {"foo": ""}}), "mount path must be absolute"),
        (json!({}), json!({"Tmpfs": {"//": ""}}), "destination can't be '/'"),
        (json!({}), json!({"Links": ["no-such-container:alias"]}), "could not get container for no-such-container"),
        (json!({}), json!({"VolumesFrom": ["no-such-container"]}), "no-such-container"),
    ];
    for (cfg, host, want) in cases {
        let mut body = cfg.clone();
        body["Image"] = json!(img);
        body["HostConfig"] = host.clone();
        let r = w.d.api_post("/v1.41/containers/create", Some(&body)).unwrap();
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let msg = r.json().unwrap()["message"].as_str().unwrap().to_string();
        assert!(msg.contains(want), "{body}: {msg}");
    }
    // A health check with zero durations (the defaults) and a named env entry are fine.
    create(&w, json!({"Image": img, "Env": ["A=1", "B"], "Healthcheck": {"Test": ["NONE"], "Interval": 0}}));
    let r = w.d.api_get("/v1.41/containers/json?all=1").unwrap();
    assert_eq!(r.json().unwrap().as_array().unwrap().len(), 1, "only the valid container exists");
}

/// moby `TestRenameContainerWithSameName`: renaming to the current name is refused.
#[test]
fn rename_to_the_same_name_is_refused() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let r = w.d.api_post("/v1.41/containers/create?name=same", Some(&json!({"Image": img}))).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json().unwrap()["Id"].as_str().unwrap().to_string();
    for key in ["same", id.as_str()] {
        let r = w.d.api_post(&format!("/v1.41/containers/{key}/rename?name=same"), None).unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("Renaming a container with the same name"), "{}", r.text());
    }
    let r = w.d.api_post("/v1.41/containers/same/rename?name=other", None).unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
}

/// moby `TestCopyFromContainer` builds through moby's Go client, which sends `buildargs=null`
/// and `labels=null` for nil maps: Docker takes `null` as no map.
#[test]
fn build_accepts_null_buildargs_and_labels() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let mut ctx = tar::Builder::new(Vec::new());
    let dockerfile = format!("FROM {img}\nLABEL a=b\n");
    let mut h = tar::Header::new_gnu();
    h.set_size(dockerfile.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    ctx.append_data(&mut h, "Dockerfile", dockerfile.as_bytes()).unwrap();
    let body = ctx.into_inner().unwrap();
    let r = w.d.api("POST", "/v1.41/build?t=nullargs%3A1&buildargs=null&labels=null", Some(body)).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("errorDetail"), "{}", r.text());
    assert_eq!(w.d.api_get("/v1.41/images/nullargs:1/json").unwrap().status, 200);
}

/// moby `TestUnprivilegedPortsAndPing`: a container with its own network namespace gets
/// Docker's defaults: any port may be bound and any group may ping; `--network host` keeps the
/// host's values.
#[test]
fn own_network_namespace_allows_unprivileged_ports_and_ping() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let out = w.d.docker_ok(&[
        "run", "--rm", "--user", "1000:1000", &img, "cat",
        "/proc/sys/net/ipv4/ping_group_range", "/proc/sys/net/ipv4/ip_unprivileged_port_start",
    ]);
    let got: Vec<String> = out.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(got, ["0 2147483647", "0"], "{out}");
    let out = w.d.docker_ok(&["run", "--rm", "--sysctl", "net.ipv4.ip_unprivileged_port_start=80", &img, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]);
    assert_eq!(out.trim(), "80", "the container's own value wins");
}

/// moby `TestHealthCheckWorkdir`: a missing working directory is created at start, as Docker
/// does (`docker run -w /new/dir`), inside the rootfs even through an image symlink to `/`; a
/// working directory that is a file is refused.
#[test]
fn a_missing_working_dir_is_created_inside_the_rootfs() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    assert_eq!(w.d.docker_ok(&["run", "--rm", "-w", "/new/dir", &img, "pwd"]).trim(), "/new/dir");
    assert_eq!(w.d.docker_ok(&["run", "--rm", "-w", "/new/dir", &img, "stat", "-c", "%u:%g %a", "."]).trim(), "0:0 755");
    // An image whose /escape is a symlink to the host's idea of `/`.
    w.d.docker_ok(&["run", "--name", "linker", &img, "ln", "-s", "/", "/escape"]);
    w.d.docker_ok(&["commit", "linker", "escape:1"]);
    let marker = format!("berth-workdir-escape-{}", std::process::id());
    // getcwd: the link resolved inside the rootfs.
    let out = w.d.docker_ok(&["run", "--rm", "-w", &format!("/escape/{marker}"), "escape:1", "pwd"]);
    assert_eq!(out.trim(), format!("/{marker}"));
    assert!(!std::path::Path::new(&format!("/{marker}")).exists(), "created on the host");
    w.d.docker(&["run", "--rm", "-w", "/etc/passwd", &img, "pwd"]).assert_fail();
}

/// moby `TestResize`: resizing a running container without a TTY succeeds (nothing to do), as
/// in Docker; a stopped one is still a conflict.
#[test]
fn resize_without_a_tty_is_a_no_op() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let id = create(&w, json!({"Image": img, "Cmd": ["sleep", "60"]}));
    let r = w.d.api_post(&format!("/v1.41/containers/{id}/resize?h=40&w=40"), None).unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(w.d.api_post(&format!("/v1.41/containers/{id}/start"), None).unwrap().status, 204);
    let r = w.d.api_post(&format!("/v1.41/containers/{id}/resize?h=40&w=40"), None).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    w.d.docker_ok(&["rm", "-f", &id]);
}

/// moby `TestKillWithStopSignalAndRestartPolicies`: a kill with the container's stop signal (or
/// SIGKILL) ends it for good despite `--restart always`, as `docker stop` does; another signal
/// that makes it exit leaves the policy in force.
#[test]
fn kill_with_the_stop_signal_cancels_the_restart_policy() {
    require_berthd!();
    let w = World::start();
    let img = w.pulled("busybox:latest");
    let trap = ["sh", "-c", "trap 'exit 3' TERM; while :; do sleep 0.1; done"];
    let run = |stop_signal: &str| {
        let id = create(&w, json!({"Image": img, "Cmd": trap, "StopSignal": stop_signal, "HostConfig": {"RestartPolicy": {"Name": "always"}}}));
        assert_eq!(w.d.api_post(&format!("/v1.41/containers/{id}/start"), None).unwrap().status, 204);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let r = w.d.api_post(&format!("/v1.41/containers/{id}/kill?signal=TERM"), None).unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
        id
    };
    let same = run("SIGTERM");
    let other = run("SIGCONT");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s = inspect(&w, &same)["State"].clone();
        let o = inspect(&w, &other)["State"].clone();
        if s["Status"] == "exited" && o["Running"] == true && inspect(&w, &other)["RestartCount"].as_i64() >= Some(1) {
            // The first one stays down: no restart after the back-off either.
            std::thread::sleep(std::time::Duration::from_secs(1));
            let s = inspect(&w, &same);
            assert_eq!((s["State"]["Status"].as_str(), s["RestartCount"].as_i64()), (Some("exited"), Some(0)), "{s}");
            assert_eq!(s["State"]["ExitCode"], 3);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "same signal: {s}\nother signal: {o}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    w.d.docker_ok(&["rm", "-f", &same, &other]);
}
