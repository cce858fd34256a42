//! Issue 8: `docker build` (the classic builder API), `docker commit`, the build cache. The real
//! docker CLI against berthd in a loopback-only namespace; expectations are Docker's.

use std::path::Path;

use berth_tests::berthd::Berthd;
use berth_tests::require_berthd;
use berth_tests::world::World;

fn write(dir: &Path, rel: &str, data: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// `docker build` output: (success, stdout+stderr).
fn build(d: &Berthd, args: &[&str]) -> (bool, String) {
    let mut a = vec!["build"];
    a.extend_from_slice(args);
    let o = d.docker(&a);
    (o.success(), format!("{}{}", o.stdout, o.stderr))
}

fn build_ok(d: &Berthd, args: &[&str]) -> String {
    let (ok, out) = build(d, args);
    assert!(ok, "docker build {args:?} failed:\n{out}\n--- berthd log tail:\n{}", berth_tests::berthd::tail(&d.log(), 40));
    out
}

fn image_id(d: &Berthd, r: &str) -> String {
    d.docker_ok(&["image", "inspect", "--format", "{{.Id}}", r]).trim().to_string()
}

/// Mounts below the daemon's roots: a build must leave none.
fn mounts_under(d: &Berthd) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let roots = [d.exec_root().display().to_string(), d.data_root().display().to_string()];
    info.lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| roots.iter().any(|r| m.starts_with(r.as_str())))
        .collect()
}

fn multi_stage_context(dir: &Path, base: &str) {
    write(
        dir,
        "Dockerfile",
        &format!(
            "# a comment\nARG BASE={base}\nFROM $BASE AS builder\nARG MSG=hello\nWORKDIR /src\nCOPY greeting.txt .\nRUN echo \"$MSG from $(cat greeting.txt)\" > /out.txt \\\n    && mkdir -p /gone && rm -rf /etc/group\n\
             FROM {base}\nLABEL stage=final\nCOPY --from=builder /out.txt /app/out.txt\nCOPY data/ /data/\nENV GREETING=world\nCMD [\"cat\", \"/app/out.txt\"]\n"
        ),
    );
    write(dir, "greeting.txt", "the context");
    write(dir, "data/a", "a1");
    write(dir, "data/sub/b", "b1");
    write(dir, "secret.key", "must not be sent");
    write(dir, ".dockerignore", "secret.key\n*.tmp\n");
}

#[test]
fn multi_stage_build_cache_and_target() {
    require_berthd!();
    let w = World::start();
    let base = w.pulled("busybox:latest");
    let ctx = tempfile::tempdir().unwrap();
    multi_stage_context(ctx.path(), &base);
    let c = ctx.path().to_str().unwrap();

    let out = build_ok(&w.d, &["-t", "built:1", "-t", "built:alias", "--build-arg", "MSG=hi", c]);
    assert!(out.contains("Step 1/12 : ARG BASE="), "{out}");
    assert!(out.contains("Successfully tagged built:1"), "{out}");
    assert!(out.contains("Successfully tagged built:alias"), "{out}");
    assert!(!out.contains("Using cache"), "first build uses no cache:\n{out}");
    assert_eq!(w.d.docker_ok(&["run", "--rm", "built:1"]).trim(), "hi from the context");
    let id = image_id(&w.d, "built:1");
    assert_eq!(id, image_id(&w.d, "built:alias"));
    // The final stage has the copied data, the config, none of the builder's changes.
    let ls = w.d.docker_ok(&["run", "--rm", "built:1", "sh", "-c", "cat /data/a /data/sub/b; ls /gone 2>&1; echo $GREETING; ls /etc/group"]);
    assert!(ls.contains("a1b1"), "{ls}");
    assert!(ls.contains("No such file"), "{ls}");
    assert!(ls.contains("world"), "{ls}");
    let labels = w.d.docker_ok(&["image", "inspect", "--format", "{{json .Config.Labels}}", "built:1"]);
    assert!(labels.contains("\"stage\":\"final\""), "{labels}");
    let hist = w.d.docker_ok(&["history", "--no-trunc", "built:1"]);
    assert!(hist.contains("COPY dir:"), "{hist}");

    // No change: every step comes from the cache and the image is the same.
    let out = build_ok(&w.d, &["-t", "built:1", "--build-arg", "MSG=hi", c]);
    assert_eq!(out.matches("Using cache").count(), 9, "{out}");
    assert_eq!(image_id(&w.d, "built:1"), id);

    // One copied file changes: the steps before it are cached, it and the rest rebuild.
    write(ctx.path(), "data/sub/b", "b2");
    write(ctx.path(), "ignored.tmp", "ignored files do not bust the cache");
    let out = build_ok(&w.d, &["-t", "built:2", "--build-arg", "MSG=hi", c]);
    assert_eq!(out.matches("Using cache").count(), 6, "{out}");
    let after = out.split("COPY data/ /data/").nth(1).unwrap();
    assert!(!after.contains("Using cache"), "{out}");
    assert_ne!(image_id(&w.d, "built:2"), id);
    assert!(w.d.docker_ok(&["run", "--rm", "built:2", "cat", "/data/sub/b"]).contains("b2"));
    let secret = w.d.docker(&["run", "--rm", "built:2", "ls", "/secret.key"]);
    assert!(!secret.success());

    // --target stops at the builder stage.
    build_ok(&w.d, &["--target", "builder", "-t", "built:builder", "--build-arg", "MSG=hi", c]);
    let o = w.d.docker_ok(&["run", "--rm", "built:builder", "sh", "-c", "cat /out.txt; pwd; ls /app 2>&1; true"]);
    assert!(o.contains("hi from the context") && o.contains("/src") && o.contains("No such file"), "{o}");

    // --no-cache rebuilds everything.
    let out = build_ok(&w.d, &["--no-cache", "-q", "--build-arg", "MSG=hi", c]);
    assert!(out.trim().starts_with("sha256:"), "{out}");

    // Nothing left behind: no intermediate containers, no mounts.
    assert!(w.d.docker_ok(&["ps", "-aq"]).trim().is_empty());
    assert!(mounts_under(&w.d).is_empty(), "{:?}", mounts_under(&w.d));
    // Intermediate images are hidden from `docker images`, shown with -a.
    let imgs = w.d.docker_ok(&["images", "-q"]);
    let all = w.d.docker_ok(&["images", "-aq"]);
    assert!(all.lines().count() > imgs.lines().count() + 5, "{imgs}\n--\n{all}");
    // rmi of the tags removes the untagged parents too.
    w.d.docker_ok(&["rmi", "built:1", "built:alias", "built:2", "built:builder"]);
}

#[test]
fn build_instructions_and_errors() {
    require_berthd!();
    let w = World::start();
    let base = w.pulled("busybox:latest");
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path().to_str().unwrap();
    write(ctx.path(), "f.txt", "file");
    {
        // A tar and a gzip tar for ADD, built with the host's tar.
        let t = ctx.path();
        std::fs::create_dir_all(t.join("srcdir/inner")).unwrap();
        std::fs::write(t.join("srcdir/inner/x"), "from tar").unwrap();
        let st = std::process::Command::new("tar").args(["-czf", "arch.tar.gz", "-C", "srcdir", "."]).current_dir(t).status().unwrap();
        assert!(st.success());
        std::fs::remove_dir_all(t.join("srcdir")).unwrap();
    }
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "FROM {base}\nSHELL [\"/bin/sh\", \"-c\"]\nUSER nobody\nUSER root\nCOPY --chown=nobody:nogroup --chmod=0600 f.txt /owned/\nADD arch.tar.gz /extracted/\n\
             RUN [\"sh\", \"-c\", \"echo exec form > /exec\"]\nEXPOSE 8080/tcp 53/udp\nVOLUME /data\nSTOPSIGNAL SIGUSR1\n\
             HEALTHCHECK --interval=5s --retries=2 CMD true\nONBUILD RUN echo triggered > /trigger\nENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"echo default\"]\n\
             RUN <<EOF\necho heredoc > /heredoc\nEOF\nCOPY <<EOF /hd.txt\nvalue=${{HOSTNAME:-none}}\nEOF\n"
        ),
    );
    build_ok(&w.d, &["-t", "instr", "--label", "via=cli", c]);
    let cfg = w.d.docker_ok(&["image", "inspect", "--format", "{{json .Config}}", "instr"]);
    let v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(v["StopSignal"], "SIGUSR1");
    assert!(v["ExposedPorts"]["8080/tcp"].is_object() && v["ExposedPorts"]["53/udp"].is_object(), "{v}");
    assert!(v["Volumes"]["/data"].is_object(), "{v}");
    assert_eq!(v["Healthcheck"]["Test"][1], "true");
    assert_eq!(v["OnBuild"][0], "RUN echo triggered > /trigger");
    assert_eq!(v["Labels"]["via"], "cli");
    let o = w.d.docker_ok(&["run", "--rm", "--entrypoint", "sh", "instr", "-c", "stat -c '%U:%G %a' /owned/f.txt; cat /extracted/inner/x /exec /heredoc /hd.txt"]);
    assert!(o.contains("nobody:nogroup 600"), "{o}");
    assert!(o.contains("from tar") && o.contains("exec form") && o.contains("heredoc") && o.contains("value=none"), "{o}");
    assert!(w.d.docker_ok(&["run", "--rm", "instr"]).contains("default"));
    // ONBUILD triggers run in a build FROM the image.
    let ctx2 = tempfile::tempdir().unwrap();
    // COPY --from by stage index and by image name.
    write(ctx2.path(), "Dockerfile", &format!("FROM instr\nRUN test -f /trigger\nFROM {base}\nCOPY --from=0 /trigger /t0\nCOPY --from=instr /exec /t1\n"));
    let out = build_ok(&w.d, &["-t", "child", ctx2.path().to_str().unwrap()]);
    assert!(out.contains("Executing 1 build trigger"), "{out}");
    let o = w.d.docker_ok(&["run", "--rm", "child", "cat", "/t0", "/t1"]);
    assert_eq!(o, "triggered\nexec form\n");

    // `docker build - < Dockerfile`: the Dockerfile alone, no context.
    let df = format!("FROM {base}\nRUN echo from-stdin > /s\n");
    let o = w.d.docker_with_stdin(&["build", "-t", "stdin:1", "-"], Some(df.as_bytes()));
    assert!(o.success(), "{o:?}");
    assert_eq!(w.d.docker_ok(&["run", "--rm", "stdin:1", "cat", "/s"]), "from-stdin\n");

    // Errors: Dockerfile line, a path outside the context, a failing RUN (its exit code).
    let bad = tempfile::tempdir().unwrap();
    let b = bad.path().to_str().unwrap();
    write(bad.path(), "Dockerfile", &format!("FROM {base}\nFORM x\n"));
    let (ok, out) = build(&w.d, &[b]);
    assert!(!ok && out.contains("dockerfile parse error on line 2: unknown instruction: FORM"), "{out}");
    write(bad.path(), "Dockerfile", &format!("FROM {base}\nCOPY ../../etc/passwd /x\n"));
    let (ok, out) = build(&w.d, &[b]);
    assert!(!ok && out.contains("forbidden path outside the build context"), "{out}");
    write(bad.path(), "Dockerfile", &format!("FROM {base}\nCOPY nothere /x\n"));
    let (ok, out) = build(&w.d, &[b]);
    assert!(!ok && out.contains("file not found in build context"), "{out}");
    write(bad.path(), "Dockerfile", &format!("FROM {base}\nRUN echo before; exit 3\n"));
    let o = w.d.docker(&["build", b]);
    assert_eq!(o.status.code(), Some(3), "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("returned a non-zero code: 3") || o.stdout.contains("returned a non-zero code: 3"), "{o:?}");
    assert!(o.stdout.contains("before"), "{o:?}");
    write(bad.path(), "Dockerfile", &format!("FROM {base}\nENV A=${{B:?required}}\n"));
    let (ok, out) = build(&w.d, &[b]);
    assert!(!ok && out.contains("B: required"), "{out}");
    let (ok, out) = build(&w.d, &["--target", "nope", c]);
    assert!(!ok && out.contains("failed to reach build target nope"), "{out}");
    write(bad.path(), "Dockerfile", "");
    let (ok, _) = build(&w.d, &[b]);
    assert!(!ok);
    assert!(w.d.docker_ok(&["ps", "-aq"]).trim().is_empty(), "failed builds leave no containers");
    assert!(mounts_under(&w.d).is_empty());
}

#[test]
fn commit_of_a_changed_container() {
    require_berthd!();
    let w = World::start();
    let base = w.pulled("busybox:latest");
    w.d.docker_ok(&["run", "--name", "changed", &base, "sh", "-c", "echo committed > /hello && rm /etc/group"]);
    w.d.docker_ok(&["commit", "-a", "tester", "-m", "made by a test", "-c", "CMD [\"cat\", \"/hello\"]", "-c", "ENV FROM_COMMIT=1", "changed", "committed:1"]);
    assert_eq!(w.d.docker_ok(&["run", "--rm", "committed:1"]).trim(), "committed");
    let o = w.d.docker_ok(&["run", "--rm", "committed:1", "sh", "-c", "echo $FROM_COMMIT; ls /etc/group 2>&1; true"]);
    assert!(o.contains('1') && o.contains("No such file"), "{o}");
    let v: serde_json::Value = serde_json::from_str(&w.d.docker_ok(&["image", "inspect", "committed:1"])).unwrap();
    assert_eq!(v[0]["Author"], "tester");
    assert_eq!(v[0]["Comment"], "made by a test");
    let hist = w.d.docker_ok(&["history", "--format", "{{.Comment}}", "committed:1"]);
    assert!(hist.contains("made by a test"), "{hist}");
    // A running container is paused while committed and runs on afterwards.
    w.d.docker_ok(&["run", "-d", "--name", "live", &base, "sh", "-c", "echo live > /live; sleep 300"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    w.d.docker_ok(&["commit", "live", "committed:live"]);
    assert_eq!(w.d.docker_ok(&["inspect", "--format", "{{.State.Status}}", "live"]).trim(), "running");
    assert_eq!(w.d.docker_ok(&["run", "--rm", "committed:live", "cat", "/live"]).trim(), "live");
    w.d.docker_ok(&["rm", "-f", "live", "changed"]);
}

#[test]
fn push_rmi_pull_gives_the_same_digest() {
    require_berthd!();
    let w = World::start();
    let base = w.pulled("busybox:latest");
    let reg = w.fx.registry.addr().to_string();
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "f", "pushed content");
    write(ctx.path(), "Dockerfile", &format!("FROM {base}\nCOPY f /f\nRUN echo made > /made\n"));
    let name = format!("{reg}/pushed/app:v1");
    build_ok(&w.d, &["-t", &name, ctx.path().to_str().unwrap()]);
    let id = image_id(&w.d, &name);
    let out = w.d.docker_ok(&["push", &name]);
    assert!(out.contains("Mounted from busybox"), "the base layer is cross-mounted:\n{out}");
    assert_eq!(out.matches(": Pushed").count(), 2, "{out}");
    let digest = out.lines().find_map(|l| l.split("digest: ").nth(1)).and_then(|r| r.split_whitespace().next()).expect("digest line").to_string();
    let rd = w.d.docker_ok(&["image", "inspect", "--format", "{{json .RepoDigests}}", &name]);
    assert!(rd.contains(&format!("{reg}/pushed/app@{digest}")), "{rd}");
    // The registry serves that manifest, and it names our config as the image.
    let (_, manifest) = w.fx.plain_target().get_manifest("pushed/app", "v1").unwrap();
    assert_eq!(berth_tests::sha256_digest(&manifest), digest);
    // A second push finds every layer there already.
    let again = w.d.docker_ok(&["push", &name]);
    assert_eq!(again.matches("Layer already exists").count(), 3, "{again}");
    // rmi, pull back: same image, same digest.
    w.d.docker_ok(&["rmi", &name]);
    assert!(!w.d.docker(&["image", "inspect", &name]).success());
    let pulled = w.d.docker_ok(&["pull", &name]);
    assert!(pulled.contains(&digest), "{pulled}");
    assert_eq!(image_id(&w.d, &name), id);
    assert_eq!(w.d.docker_ok(&["run", "--rm", &name, "cat", "/f", "/made"]), "pushed contentmade\n");
    // An unknown tag is a clear error.
    let r = w.d.docker(&["push", &format!("{reg}/pushed/app:nope")]).assert_fail();
    assert!(r.stderr.contains("tag does not exist") || r.stderr.contains("does not exist"), "{}", r.stderr);
}

#[test]
fn push_to_the_auth_registry_after_login() {
    require_berthd!();
    let w = World::start();
    let base = w.pulled("busybox:latest");
    let reg = w.fx.auth_registry.addr().to_string();
    let name = format!("{reg}/team/tool:1");
    w.d.docker_ok(&["tag", &base, &name]);
    let denied = w.d.docker(&["push", &name]);
    assert!(!denied.success(), "push without login must fail: {denied:?}");
    let combined = format!("{}{}", denied.stdout, denied.stderr);
    assert!(combined.contains("unauthorized") || combined.contains("authentication required") || combined.contains("no basic auth"), "{combined}");
    let o = w.d.docker_with_stdin(&["login", "-u", berth_tests::fixtures::AUTH_USER, "--password-stdin", &reg], Some(berth_tests::fixtures::AUTH_PASSWORD.as_bytes()));
    assert!(o.success(), "{o:?}");
    let out = w.d.docker_ok(&["push", &name]);
    assert!(out.contains("digest: sha256:"), "{out}");
    let (_, m) = w.fx.auth_target().get_manifest("team/tool", "1").unwrap();
    assert!(String::from_utf8_lossy(&m).contains(&w.fx.pushed("busybox:latest").config_digest));
}

#[test]
fn import_a_filesystem_tar() {
    require_berthd!();
    let w = World::start();
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("root/bin")).unwrap();
    std::fs::copy(berth_tests::image::HOST_BUSYBOX, t.path().join("root/bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", t.path().join("root/bin/sh")).unwrap();
    std::os::unix::fs::symlink("busybox", t.path().join("root/bin/cat")).unwrap();
    std::fs::write(t.path().join("root/hello"), "imported\n").unwrap();
    let st = std::process::Command::new("tar").args(["-czf", "fs.tar.gz", "-C", "root", "."]).current_dir(t.path()).status().unwrap();
    assert!(st.success());
    let data = std::fs::read(t.path().join("fs.tar.gz")).unwrap();
    let o = w.d.docker_with_stdin(&["import", "-c", "CMD [\"/bin/cat\", \"/hello\"]", "-m", "from a test", "-", "imported:1"], Some(&data));
    assert!(o.success(), "{o:?}");
    assert!(o.stdout.trim().starts_with("sha256:"), "{o:?}");
    assert_eq!(w.d.docker_ok(&["run", "--rm", "imported:1"]), "imported\n");
    // A hostile tar is refused and leaves no image.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../../escaped");
    h.set_cksum();
    b.append(&h, &b"evil"[..]).unwrap();
    let evil = b.into_inner().unwrap();
    let before = w.d.docker_ok(&["images", "-aq"]);
    let o = w.d.docker_with_stdin(&["import", "-", "evil:1"], Some(&evil));
    assert!(!o.success(), "{o:?}");
    assert_eq!(w.d.docker_ok(&["images", "-aq"]), before);
    assert!(!w.d.data_root().join("../escaped").exists());
}

/// A tar whose one entry has the raw `name` (the tar crate refuses such names itself).
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(*kind);
        let g = h.as_gnu_mut().unwrap();
        g.name[..name.len()].copy_from_slice(name.as_bytes());
        g.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_add_archives_and_context_bombs() {
    require_berthd!();
    let fx = berth_tests::fixtures::Fixtures::start().unwrap();
    let d = Berthd::start_with_args(&fx.ns, &[fx.registry.addr()], &["--max-build-context", "1048576"]).unwrap();
    let base = fx.reference("busybox:latest");
    d.docker_ok(&["pull", "-q", &base]);
    let canary = tempfile::tempdir().unwrap();
    let evil: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot.tar", raw_tar(&[("../../../../../../../../tmp/berth-pwned-dotdot", tar::EntryType::Regular, "", b"x")])),
        ("link.tar", raw_tar(&[("escape", tar::EntryType::Symlink, "/", b""), ("escape/tmp/berth-pwned-link", tar::EntryType::Regular, "", b"x")])),
        ("hard.tar", raw_tar(&[("h", tar::EntryType::Link, "../../../../etc/passwd", b"")])),
    ];
    for (name, data) in &evil {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join(name), data).unwrap();
        write(ctx.path(), "Dockerfile", &format!("FROM {base}\nADD {name} /x/\n"));
        let (ok, out) = build(&d, &[ctx.path().to_str().unwrap()]);
        assert!(!ok, "{name} must be refused:\n{out}");
        assert!(out.contains("ADD failed"), "{name}: {out}");
    }
    assert!(!Path::new("/tmp/berth-pwned-dotdot").exists() && !Path::new("/tmp/berth-pwned-link").exists());
    drop(canary);
    // A context that unpacks beyond --max-build-context (a zero file, gzip-compressed on the wire).
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("zeros"), vec![0u8; 8 << 20]).unwrap();
    write(ctx.path(), "Dockerfile", &format!("FROM {base}\nCOPY zeros /\n"));
    let (ok, out) = build(&d, &["--compress", ctx.path().to_str().unwrap()]);
    assert!(!ok && out.contains("build context"), "{out}");
    assert!(out.contains("limit") || out.contains("larger than"), "{out}");
    // The daemon is fine afterwards and left nothing in its tmp dir.
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "Dockerfile", &format!("FROM {base}\nRUN true\n"));
    build_ok(&d, &[ctx.path().to_str().unwrap()]);
    let tmp = d.data_root().join("image/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "{left:?}");
    drop(d);
    drop(fx);
}

#[test]
fn client_disconnect_mid_build_leaves_nothing() {
    require_berthd!();
    let w = World::start();
    let base = w.pulled("busybox:latest");
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "Dockerfile", &format!("FROM {base}\nRUN echo started; sleep 60\n"));
    let mut cmd = w.d.docker_command();
    cmd.args(["build", ctx.path().to_str().unwrap()]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while w.d.docker_ok(&["ps", "-q"]).trim().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the RUN container never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!mounts_under(&w.d).is_empty(), "the RUN container has its rootfs mounted");
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left = w.d.docker_ok(&["ps", "-aq"]);
        let mounts = mounts_under(&w.d);
        if left.trim().is_empty() && mounts.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "left behind: containers {left:?}, mounts {mounts:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn kill_9_mid_build_leaves_no_partial_image() {
    require_berthd!();
    let mut w = World::start();
    let base = w.pulled("busybox:latest");
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "big", &"x".repeat(1 << 20));
    write(ctx.path(), "Dockerfile", &format!("FROM {base}\nCOPY big /big\nRUN echo started; sleep 60\n"));
    let before = w.d.docker_ok(&["images", "-aq", "--no-trunc"]);
    let mut cmd = w.d.docker_command();
    cmd.args(["build", "-t", "never:done", ctx.path().to_str().unwrap()]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while w.d.docker_ok(&["ps", "-q"]).trim().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the RUN container never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    w.d.kill9();
    let _ = child.kill();
    let _ = child.wait();
    w.d.restart().unwrap();
    // The tag never appeared; what exists is complete (inspectable, its layers on disk).
    assert!(!w.d.docker(&["image", "inspect", "never:done"]).success());
    for id in w.d.docker_ok(&["images", "-aq", "--no-trunc"]).lines() {
        w.d.docker_ok(&["image", "inspect", id]);
        w.d.docker_ok(&["history", id]);
    }
    let _ = before;
    // The interrupted build's RUN container is gone after the restart, and its mounts with it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !w.d.docker_ok(&["ps", "-aq"]).trim().is_empty() || !mounts_under(&w.d).is_empty() {
        assert!(std::time::Instant::now() < deadline, "left: {} {:?}", w.d.docker_ok(&["ps", "-a"]), mounts_under(&w.d));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // And a build of the same context now succeeds, reusing the COPY step that completed.
    write(ctx.path(), "Dockerfile", &format!("FROM {base}\nCOPY big /big\nRUN echo quick\n"));
    let out = build_ok(&w.d, &["-t", "done:1", ctx.path().to_str().unwrap()]);
    assert_eq!(out.matches("Using cache").count(), 1, "{out}");
}
