//! Issue 2: images. The real `docker` CLI against berthd, pulling from real registries (and a
//! hostile one) inside a private loopback-only namespace. Expectations are Docker's.
//!
//! Every test skips with a message when not root or when the berthd binary is missing.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_tests::image::noise;
use berth_tests::berthd::{run_with_timeout, Berthd};
use berth_tests::evil::{self, BlobBehavior, EvilContent, EvilRegistry};
use berth_tests::fixtures::{AUTH_PASSWORD, AUTH_USER};
use berth_tests::image::{self, Compression, Image, Layer, LayerBuilder, RunConfig};
use berth_tests::require_berthd;
use berth_tests::world::World;

fn world() -> World {
    World::start()
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// `docker image inspect` of one reference, as JSON.
fn inspect(d: &Berthd, reference: &str) -> serde_json::Value {
    let out = d.docker_ok(&["image", "inspect", reference]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
    v[0].clone()
}

fn string_list(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `repo@digest` as Docker writes it in RepoDigests (no tag).
fn repo_digest(reference_with_tag: &str, digest: &str) -> String {
    let (repo, _) = reference_with_tag.rsplit_once(':').expect("has tag");
    format!("{repo}@{digest}")
}

/// Every path under `root` (not following symlinks).
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}


/// A one-layer image whose layer is `tar` (gzip), unique per `tag` via the history text.
fn single_layer_image(tar: &[u8], what: &str) -> Image {
    let layer = Layer::from_tar(tar, Compression::Gzip, what).unwrap();
    Image::new(vec![layer], &RunConfig::cmd(&["sh"]), "amd64").unwrap()
}

#[test]
fn version_and_info_negotiate_without_api_version() {
    require_berthd!();
    let w = world();
    let v = w.d.docker_ok(&["version"]);
    assert!(
        v.contains("Server:"),
        "docker version shows no server section:\n{v}"
    );
    let api =
        w.d.docker_ok(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert!(api.trim().starts_with("1."), "server API version {api:?}");
    let info = w.d.docker_ok(&["info", "--format", "{{json .}}"]);
    let info: serde_json::Value = serde_json::from_str(&info).expect("info json");
    assert!(
        info["ServerErrors"].is_null()
            || info["ServerErrors"]
                .as_array()
                .is_some_and(|a| a.is_empty()),
        "{info}"
    );
    assert_eq!(info["OSType"], "linux");
    w.d.docker_ok(&["info"]);
    // The raw API agrees.
    let ping = w.d.api_get("/_ping").unwrap();
    assert_eq!(ping.status, 200);
    assert_eq!(ping.text(), "OK");
}

#[test]
fn pull_every_manifest_kind_by_tag() {
    require_berthd!();
    let w = world();
    for repo_tag in [
        "busybox:latest",
        "busybox:oci",
        "busybox:index",
        "layered:latest",
        "web:latest",
    ] {
        let reference = w.fx.reference(repo_tag);
        let pushed = w.fx.pushed(repo_tag);
        let out = w.d.docker_ok(&["pull", &reference]);
        assert!(
            out.contains(&format!("Digest: {}", pushed.digest)),
            "pull {repo_tag} output lacks digest:\n{out}"
        );
        assert!(
            out.contains(&reference),
            "pull output should end with the reference:\n{out}"
        );
        let img = inspect(&w.d, &reference);
        assert_eq!(
            img["Id"],
            serde_json::json!(pushed.config_digest),
            "{repo_tag}: Id must be the config digest"
        );
        assert_eq!(img["Architecture"], "amd64", "{repo_tag}");
        assert_eq!(img["Os"], "linux");
        assert!(
            string_list(&img["RepoTags"]).contains(&reference),
            "{repo_tag}: {img}"
        );
        assert!(
            string_list(&img["RepoDigests"]).contains(&repo_digest(&reference, &pushed.digest)),
            "{repo_tag}: RepoDigests {}",
            img["RepoDigests"]
        );
        let n_layers = w.fx.image(repo_tag.split(':').next().unwrap()).layers.len();
        assert_eq!(
            img["RootFS"]["Layers"].as_array().map(|a| a.len()),
            Some(n_layers),
            "{repo_tag}"
        );
    }
    // Pulling again is a no-op that says so.
    let again = w.d.docker_ok(&["pull", &w.fx.reference("busybox:latest")]);
    assert!(again.contains("Image is up to date"), "{again}");

    // busybox:latest, :oci and :index share one config, so they are one image with three tags.
    let listing = w.d.docker_ok(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}}",
    ]);
    let rows = lines(&listing);
    for repo_tag in [
        "busybox:latest",
        "busybox:oci",
        "busybox:index",
        "layered:latest",
        "web:latest",
    ] {
        let want = format!(
            "{} {}",
            w.fx.reference(repo_tag),
            w.fx.pushed(repo_tag).config_digest
        );
        assert!(
            rows.contains(&want),
            "docker images lacks {want:?}:\n{listing}"
        );
    }
    let ids = w.d.docker_ok(&["images", "-q", "--no-trunc"]);
    let mut ids = lines(&ids);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "busybox, layered, web: {ids:?}");
    // The Engine API lists the same.
    let api = w.d.api_get("/images/json").unwrap();
    assert_eq!(api.status, 200);
    let arr = api.json().unwrap();
    assert_eq!(arr.as_array().map(|a| a.len()), Some(3), "{arr}");
}

#[test]
fn pull_by_digest() {
    require_berthd!();
    let w = world();
    for repo_tag in ["busybox:latest", "busybox:oci", "busybox:index"] {
        let pushed = w.fx.pushed(repo_tag);
        let by_digest = repo_digest(&w.fx.reference(repo_tag), &pushed.digest);
        let out = w.d.docker_ok(&["pull", &by_digest]);
        assert!(out.contains(&pushed.digest), "{out}");
        let img = inspect(&w.d, &by_digest);
        assert_eq!(img["Id"], serde_json::json!(pushed.config_digest));
        assert!(
            string_list(&img["RepoDigests"]).contains(&by_digest),
            "{}",
            img["RepoDigests"]
        );
    }
    // A digest pull creates no tag.
    let img = inspect(
        &w.d,
        &repo_digest(
            &w.fx.reference("busybox:latest"),
            &w.fx.pushed("busybox:latest").digest,
        ),
    );
    assert!(
        string_list(&img["RepoTags"]).is_empty(),
        "RepoTags {}",
        img["RepoTags"]
    );
    let digests =
        w.d.docker_ok(&["images", "--digests", "--format", "{{.Digest}}"]);
    assert!(
        digests.contains(&w.fx.pushed("busybox:latest").digest),
        "{digests}"
    );
    // A digest nobody has fails cleanly.
    let missing = format!("{}/busybox@sha256:{}", w.fx.registry.addr(), "0".repeat(64));
    let out = w.d.docker(&["pull", &missing]).assert_fail();
    let e = out.stderr.to_lowercase();
    assert!(
        e.contains("not found") || e.contains("manifest unknown"),
        "{}",
        out.stderr
    );
}

#[test]
fn pull_unknown_tag_fails_cleanly() {
    require_berthd!();
    let w = world();
    let out =
        w.d.docker(&["pull", &w.fx.reference("busybox:nope")])
            .assert_fail();
    let e = out.stderr.to_lowercase();
    assert!(
        e.contains("not found") || e.contains("manifest unknown"),
        "{}",
        out.stderr
    );
    assert!(lines(&w.d.docker_ok(&["images", "-q"])).is_empty());
}

#[test]
fn tag_inspect_history_rmi() {
    require_berthd!();
    let w = world();
    let reference = w.fx.reference("busybox:latest");
    let pushed = w.fx.pushed("busybox:latest");
    w.d.docker_ok(&["pull", &reference]);

    let img = inspect(&w.d, &reference);
    assert_eq!(img["Id"], serde_json::json!(pushed.config_digest));
    assert_eq!(string_list(&img["RepoTags"]), vec![reference.clone()]);
    assert_eq!(
        string_list(&img["RepoDigests"]),
        vec![repo_digest(&reference, &pushed.digest)]
    );
    assert_eq!(img["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(img["Config"]["Env"], serde_json::json!([image::PATH_ENV]));
    assert_eq!(
        img["RootFS"]["Layers"],
        serde_json::json!([w.fx.image("busybox").layers[0].diff_id])
    );
    assert!(
        img["Size"].as_u64().unwrap_or(0) > 1_000_000,
        "busybox is ~2 MB: {}",
        img["Size"]
    );

    // Tag.
    let mine = format!("{}/mine:v1", w.fx.registry.addr());
    w.d.docker_ok(&["tag", &reference, &mine]);
    let img = inspect(&w.d, &mine);
    assert_eq!(img["Id"], serde_json::json!(pushed.config_digest));
    let tags = string_list(&img["RepoTags"]);
    assert!(
        tags.contains(&mine) && tags.contains(&reference),
        "{tags:?}"
    );
    // Tag by short ID works too.
    let short = &pushed.config_digest[7..19];
    let other = format!("{}/mine:v2", w.fx.registry.addr());
    w.d.docker_ok(&["tag", short, &other]);

    // History: newest first, the CMD row (empty layer) then the busybox layer.
    let hist = w.d.docker_ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}|{{.Size}}",
        &reference,
    ]);
    let rows = lines(&hist);
    assert_eq!(rows.len(), 2, "{hist}");
    assert!(
        rows[0].contains("CMD [\"sh\"]") && rows[0].ends_with("|0B"),
        "{hist}"
    );
    assert!(rows[1].starts_with("COPY busybox-static /|"), "{hist}");
    let hist_ids = w.d.docker_ok(&["history", "-q", "--no-trunc", &reference]);
    assert_eq!(lines(&hist_ids)[0], pushed.config_digest);

    // rmi by ID with several tags refuses without -f.
    let out = w.d.docker(&["rmi", short]).assert_fail();
    assert!(
        out.stderr.contains("referenced in multiple repositories"),
        "{}",
        out.stderr
    );

    // rmi of one tag only untags.
    let out = w.d.docker_ok(&["rmi", &mine]);
    assert!(out.contains(&format!("Untagged: {mine}")), "{out}");
    assert!(!out.contains("Deleted:"), "{out}");
    w.d.docker_ok(&["rmi", &other]);
    inspect(&w.d, &reference);
    w.d.docker(&["image", "inspect", &mine]).assert_fail();

    // rmi of the last tag deletes the image (and its layer).
    let out = w.d.docker_ok(&["rmi", &reference]);
    assert!(out.contains(&format!("Untagged: {reference}")), "{out}");
    assert!(
        out.contains(&format!("Deleted: {}", pushed.config_digest)),
        "{out}"
    );
    let gone = w.d.docker(&["image", "inspect", &reference]).assert_fail();
    assert!(
        gone.stderr.to_lowercase().contains("no such image"),
        "{}",
        gone.stderr
    );
    assert!(lines(&w.d.docker_ok(&["images", "-q"])).is_empty());
    // Removing again: "No such image".
    let out = w.d.docker(&["rmi", &reference]).assert_fail();
    assert!(
        out.stderr.to_lowercase().contains("no such image"),
        "{}",
        out.stderr
    );
}

#[test]
fn save_load_round_trip_keeps_image_id() {
    require_berthd!();
    let w = world();
    let reference = w.fx.reference("web:latest");
    let pushed = w.fx.pushed("web:latest");
    w.d.docker_ok(&["pull", &reference]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("web.tar");
    w.d.docker_ok(&["save", "-o", archive.to_str().unwrap(), &reference]);
    // Also through stdout, as `docker save | docker load` does.
    let (status, piped, err) = w.d.docker_bytes(&["save", &reference]);
    assert!(status.success(), "docker save to stdout: {err}");
    assert!(
        piped.len() > 1_000_000,
        "archive too small: {}",
        piped.len()
    );
    {
        let mut a = tar::Archive::new(&piped[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n == "manifest.json"), "{names:?}");
        assert!(
            names
                .iter()
                .any(|n| n == "index.json" || n == "repositories"),
            "{names:?}"
        );
    }

    w.d.docker_ok(&["rmi", &reference]);
    w.d.docker(&["image", "inspect", &reference]).assert_fail();

    let out = w.d.docker_ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains(&format!("Loaded image: {reference}")), "{out}");
    let img = inspect(&w.d, &reference);
    assert_eq!(img["Id"], serde_json::json!(pushed.config_digest));
    assert_eq!(
        img["Config"]["ExposedPorts"],
        serde_json::json!({"80/tcp": {}})
    );

    // Piped load of the stdout archive after removing again.
    w.d.docker_ok(&["rmi", &reference]);
    let out = w.d.docker_with_stdin(&["load"], Some(&piped)).assert_ok();
    assert!(
        out.stdout.contains(&format!("Loaded image: {reference}")),
        "{}",
        out.stdout
    );
    assert_eq!(
        inspect(&w.d, &reference)["Id"],
        serde_json::json!(pushed.config_digest)
    );
}

#[test]
fn login_then_pull_private_image() {
    require_berthd!();
    let w = world();
    let private = w.fx.private_reference();
    let auth_addr = w.fx.auth_registry.addr().to_string();

    // Without credentials the registry refuses.
    let out = w.d.docker(&["pull", &private]).assert_fail();
    let e = out.stderr.to_lowercase();
    // Docker says "no basic auth credentials" here; "unauthorized" is the registry's word.
    assert!(
        e.contains("unauthorized")
            || e.contains("credentials")
            || e.contains("authentication required"),
        "{}",
        out.stderr
    );

    let out =
        w.d.docker_with_stdin(
            &["login", &auth_addr, "-u", AUTH_USER, "--password-stdin"],
            Some(AUTH_PASSWORD.as_bytes()),
        )
        .assert_ok();
    assert!(out.stdout.contains("Login Succeeded"), "{}", out.stdout);
    let cfg = std::fs::read_to_string(w.d.docker_config().join("config.json"))
        .expect("CLI wrote its config");
    assert!(
        cfg.contains(&auth_addr),
        "credentials stored for {auth_addr}: {cfg}"
    );

    let pushed = w.fx.pushed("private/busybox:latest");
    let out = w.d.docker_ok(&["pull", &private]);
    assert!(out.contains(&pushed.digest), "{out}");
    assert_eq!(
        inspect(&w.d, &private)["Id"],
        serde_json::json!(pushed.config_digest)
    );

    // berthd used the credentials for this pull only: they are in none of its files, and not
    // in its (debug-level) log, neither as given nor as the Basic header's base64.
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{AUTH_USER}:{AUTH_PASSWORD}"));
    let log = w.d.log();
    assert!(!log.is_empty(), "berthd logs to its file");
    assert!(!log.contains(AUTH_PASSWORD) && !log.contains(&basic), "credentials in berthd's log");
    let mut seen = 0;
    for root in [w.d.data_root(), w.d.exec_root()] {
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let ft = entry.file_type().unwrap();
                if ft.is_dir() {
                    stack.push(entry.path());
                } else if ft.is_file() {
                    let data = std::fs::read(entry.path()).unwrap_or_default();
                    seen += 1;
                    for needle in [AUTH_PASSWORD.as_bytes(), basic.as_bytes()] {
                        assert!(!data.windows(needle.len()).any(|win| win == needle), "credentials in {}", entry.path().display());
                    }
                }
            }
        }
    }
    assert!(seen > 5, "the walk read berthd's files ({seen})");
    w.d.docker_ok(&["logout", &auth_addr]);
}

#[test]
fn login_with_wrong_password_fails_clearly() {
    require_berthd!();
    let w = world();
    let auth_addr = w.fx.auth_registry.addr().to_string();
    let out =
        w.d.docker_with_stdin(
            &["login", &auth_addr, "-u", AUTH_USER, "--password-stdin"],
            Some(b"wrong-password"),
        )
        .assert_fail();
    let e = out.stderr.to_lowercase();
    assert!(
        e.contains("unauthorized") || e.contains("incorrect"),
        "stderr should say why: {}",
        out.stderr
    );
    // Nothing was stored.
    let cfg = std::fs::read_to_string(w.d.docker_config().join("config.json")).unwrap_or_default();
    assert!(!cfg.contains(&auth_addr), "{cfg}");
    // The Engine API answers 401 for a direct /auth with bad credentials.
    let r = w
        .d
        .api_post(
            "/auth",
            Some(&serde_json::json!({"username": AUTH_USER, "password": "nope", "serveraddress": auth_addr})),
        )
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
}

#[test]
fn digest_mismatch_is_rejected_and_leaves_nothing() {
    require_berthd!();
    let w = world();
    let mut b = LayerBuilder::new();
    b.file("evil.bin", 0o644, &noise(200_000, 7)).unwrap();
    let img = single_layer_image(&b.into_tar().unwrap(), "ADD evil.bin /");
    let layer = img.layers[0].clone();
    let content = EvilContent::for_image("evil", "latest", &img, false)
        .with_behavior(&layer.digest, BlobBehavior::Corrupt);
    let srv = EvilRegistry::start(&w.fx.ns, content).unwrap();
    let reference = srv.reference("evil:latest");

    let out = w.d.docker(&["pull", &reference]).assert_fail();
    assert!(
        out.stderr.to_lowercase().contains("digest"),
        "error should mention the digest: {}",
        out.stderr
    );
    assert!(srv.blob_requests() >= 1, "the layer was requested");
    assert!(
        lines(&w.d.docker_ok(&["images", "-q"])).is_empty(),
        "no image may appear"
    );
    w.d.docker(&["image", "inspect", &reference]).assert_fail();

    // Nothing in the data root is named after the claimed digest or holds the bad bytes.
    let hex = layer.digest.trim_start_matches("sha256:");
    let mut corrupt = layer.blob.clone();
    *corrupt.last_mut().unwrap() ^= 0xff;
    for p in walk(&w.d.data_root()) {
        let name = p.to_string_lossy();
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        // An empty flock file serialising ingests of that digest is allowed to stay; a blob,
        // a partial download (which a resume would trust) or an unpacked layer is not.
        let empty_lock = name.ends_with(".lock") && md.is_file() && md.len() == 0;
        assert!(
            !name.contains(hex) || empty_lock,
            "data for the bad digest kept: {name}"
        );
        if md.is_file() && md.len() == corrupt.len() as u64 {
            assert_ne!(
                std::fs::read(&p).unwrap(),
                corrupt,
                "corrupt bytes kept at {name}"
            );
        }
        if md.is_dir() && name.contains("/diff/") {
            assert!(
                !p.join("evil.bin").exists(),
                "layer unpacked from corrupt blob at {name}"
            );
        }
    }
    // The daemon is still fine.
    w.d.docker_ok(&["pull", &w.fx.reference("busybox:latest")]);
}

#[test]
fn connection_drop_mid_blob_fails_then_retry_from_good_registry_works() {
    require_berthd!();
    let w = world();
    let img = w.fx.image("web").clone();
    let content = EvilContent::for_image("web", "latest", &img, false)
        .with_behavior(&img.layers[0].digest, BlobBehavior::DropAfter(100_000));
    let srv = EvilRegistry::start(&w.fx.ns, content).unwrap();
    let out =
        w.d.docker(&["pull", &srv.reference("web:latest")])
            .assert_fail();
    assert!(!out.stderr.trim().is_empty());
    assert!(srv.dropped() >= 1);
    w.d.docker(&["image", "inspect", &srv.reference("web:latest")])
        .assert_fail();
    // Same blobs from a healthy registry: the pull completes with the right ID.
    w.d.docker_ok(&["pull", &w.fx.reference("web:latest")]);
    assert_eq!(
        inspect(&w.d, &w.fx.reference("web:latest"))["Id"],
        serde_json::json!(img.config_digest)
    );
}

/// A sentinel directory outside the data root: one file whose content must survive.
struct Sentinel {
    dir: tempfile::TempDir,
}

impl Sentinel {
    fn new() -> Sentinel {
        let dir = tempfile::Builder::new()
            .prefix("berth-sentinel-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("keep"), b"original\n").unwrap();
        Sentinel { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    #[track_caller]
    fn assert_untouched(&self, case: &str) {
        let names: Vec<String> = std::fs::read_dir(self.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["keep".to_string()],
            "{case}: something was created outside the data root"
        );
        assert_eq!(
            std::fs::read(self.path().join("keep")).unwrap(),
            b"original\n",
            "{case}: sentinel overwritten"
        );
    }
}

#[test]
fn hostile_layers_cannot_escape_the_data_root() {
    require_berthd!();
    let w = world();
    let sentinel = Sentinel::new();
    let s = sentinel.path();
    // Berth refuses these layers outright. (Docker refuses `..` and escaping links too; for
    // absolute names and symlinked parents it instead confines the write inside the layer.
    // Either way nothing outside may change, which is the property checked last.)
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            evil::dotdot_layer(&s.join("pwned-dotdot")).unwrap(),
        ),
        (
            "absolute",
            evil::absolute_layer(&s.join("pwned-abs")).unwrap(),
        ),
        ("symlink", evil::symlink_escape_layer(s).unwrap()),
        (
            "hardlink",
            evil::hardlink_escape_layer(&s.join("keep")).unwrap(),
        ),
    ];
    let before = lines(&w.d.docker_ok(&["images", "-q"]));
    for (case, tar) in cases {
        let img = single_layer_image(&tar, &format!("evil {case}"));
        let srv = EvilRegistry::start(&w.fx.ns, EvilContent::for_image("evil", case, &img, false))
            .unwrap();
        let reference = srv.reference(&format!("evil:{case}"));
        let out = w.d.docker(&["pull", &reference]);
        sentinel.assert_untouched(case);
        assert!(
            !out.success(),
            "{case}: pull of a hostile layer must fail\n{}",
            out.stdout
        );
        assert!(!out.stderr.trim().is_empty(), "{case}: no error message");
        w.d.docker(&["image", "inspect", &reference]).assert_fail();
    }
    assert_eq!(lines(&w.d.docker_ok(&["images", "-q"])), before);
    // The daemon still works.
    w.d.docker_ok(&["pull", &w.fx.reference("busybox:latest")]);
    sentinel.assert_untouched("after");
}

#[test]
fn kill9_during_pull_then_restart_recovers() {
    require_berthd!();
    let mut w = world();
    let mut b = LayerBuilder::new();
    b.file("big.bin", 0o644, &noise(2 << 20, 99)).unwrap();
    let img = single_layer_image(&b.into_tar().unwrap(), "ADD big.bin /");
    let blob_len = img.layers[0].blob.len();
    // berthd dies at 10 %, 50 % and 90 % of the layer; each time nothing half-pulled is
    // visible after the restart.
    for percent in [10, 50, 90] {
        let content = EvilContent::for_image("stall", "latest", &img, false)
            .with_behavior(&img.layers[0].digest, BlobBehavior::StallAfter(blob_len * percent / 100));
        let srv = EvilRegistry::start(&w.fx.ns, content).unwrap();
        let reference = srv.reference("stall:latest");
        let mut cmd = w.d.docker_command();
        cmd.args(["pull", &reference]);
        let cli = std::thread::spawn(move || run_with_timeout(cmd, None, Duration::from_secs(60)));
        assert!(srv.wait_stalled(Duration::from_secs(30)), "pull never reached the {percent} % stall point\n{}", w.d.log());
        w.d.kill9();
        let (status, _, stderr) = cli.join().unwrap().expect("CLI returns once the daemon dies");
        assert!(!status.success(), "pull cannot succeed when the daemon was killed");
        eprintln!("CLI after kill -9 at {percent} %: {}", String::from_utf8_lossy(&stderr));
        w.d.restart().expect("berthd restarts on the same data root");
        let listing = w.d.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        assert!(!listing.contains(srv.addr()), "half-pulled image listed after restart at {percent} %:\n{listing}");
        w.d.docker(&["image", "inspect", &reference]).assert_fail();
    }
    // The same image from a registry that serves it whole: whatever the killed pulls left
    // behind does not get in the way, and the image is exactly right.
    let good = EvilRegistry::start(&w.fx.ns, EvilContent::for_image("stall", "latest", &img, false)).unwrap();
    let reference = good.reference("stall:latest");
    w.d.docker_ok(&["pull", &reference]);
    assert_eq!(inspect(&w.d, &reference)["Id"], serde_json::json!(img.config_digest));
    // Its layer unpacked whole: the file, read back through a container.
    let c = w.d.docker_ok(&["create", &reference, "none"]);
    let (st, tar, err) = w.d.docker_bytes(&["cp", &format!("{}:/big.bin", c.trim()), "-"]);
    assert!(st.success(), "{err}");
    let mut a = tar::Archive::new(&tar[..]);
    let mut e = a.entries().unwrap().next().unwrap().unwrap();
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut e, &mut data).unwrap();
    assert!(data == noise(2 << 20, 99), "the layer's file is intact");
    w.d.docker_ok(&["rm", c.trim()]);
    let out = w.d.docker_ok(&["pull", &w.fx.reference("busybox:latest")]);
    assert!(out.contains(&w.fx.pushed("busybox:latest").digest), "{out}");
}

/// Overlay whiteout: a 0:0 character device.
fn is_whiteout(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false)
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let cpath = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: valid NUL-terminated strings and a buffer of the stated length.
    let n = unsafe {
        libc::lgetxattr(
            cpath.as_ptr(),
            cname.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn layered_image_unpacks_whiteouts_for_overlay() {
    require_berthd!();
    let w = world();
    let reference = w.fx.reference("layered:latest");
    w.d.docker_ok(&["pull", &reference]);
    let img = inspect(&w.d, &reference);
    assert_eq!(img["RootFS"]["Layers"].as_array().map(|a| a.len()), Some(3));

    let layers_dir = w.d.data_root().join("image/layers");
    let diffs: Vec<PathBuf> = std::fs::read_dir(&layers_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", layers_dir.display()))
        .flatten()
        .map(|e| e.path().join("diff"))
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(diffs.len(), 3, "one diff dir per layer: {diffs:?}");

    // Layer 3 (the zstd one): whiteouts as 0:0 char devices, opaque dir marked, no .wh. files.
    let top = diffs
        .iter()
        .find(|d| d.join("data/dir/y").is_file())
        .expect("a diff with data/dir/y");
    assert!(
        is_whiteout(&top.join("data/a")),
        "data/a should be a whiteout device"
    );
    assert!(
        is_whiteout(&top.join("gone")),
        "gone should be a whiteout device"
    );
    assert_eq!(
        xattr(&top.join("data/dir"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..]),
        "opaque xattr"
    );
    for p in walk(top) {
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !n.starts_with(".wh."),
            "whiteout marker file left as-is: {}",
            p.display()
        );
    }
    // Layer 2 (uncompressed) holds the files the top layer hides.
    let mid = diffs
        .iter()
        .find(|d| d.join("gone/f").is_file())
        .expect("a diff with gone/f");
    assert_eq!(std::fs::read(mid.join("data/a")).unwrap(), b"a\n");
    assert!(mid.join("data/dir/x").is_file());
    // Layer 1 (gzip): busybox.
    let base = diffs
        .iter()
        .find(|d| d.join("bin/busybox").is_file())
        .expect("a diff with bin/busybox");
    assert_eq!(
        std::fs::read_link(base.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let md = std::fs::metadata(base.join("tmp")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o1777);
}

/// An upload refused at its first entry (`docker load`, `docker build -`) gets the engine's
/// message while the CLI is still sending the rest: berthd reads on (bounded) before it answers,
/// where closing the connection with data unread made the CLI print a broken pipe instead.
#[test]
fn uploads_refused_early_show_the_reason_not_a_broken_pipe() {
    require_berthd!();
    let w = world();
    let filler = vec![b'x'; 3 << 20];
    let evil_tar = evil::raw_tar(&[evil::RawEntry::file("../escape", b"nope"), evil::RawEntry::file("filler", &filler)]).unwrap();

    let out = w.d.docker_with_stdin(&["load"], Some(&evil_tar)).assert_fail();
    assert!(!out.stderr.contains("broken pipe"), "docker load: {}", out.stderr);
    assert!(out.stderr.contains("escape"), "the refused entry is named: {}", out.stderr);

    let out = w.d.docker_with_stdin(&["build", "-t", "refused:1", "-"], Some(&evil_tar)).assert_fail();
    assert!(!out.stderr.contains("broken pipe"), "docker build: {}", out.stderr);
    assert!(out.stderr.contains("escape"), "the refused entry is named: {}", out.stderr);
    w.d.docker(&["image", "inspect", "refused:1"]).assert_fail();
    let _ = w.d.docker_ok(&["version"]);
}

/// Checklist #33 through berthd: a registry that answers 429 (with Retry-After) or 503 to the
/// first requests for a layer is retried with backoff, and the pull completes with the right
/// image; one that stays busy fails the pull cleanly, with nothing half-made visible.
#[test]
fn busy_registry_is_retried_then_a_persistent_one_fails_cleanly() {
    require_berthd!();
    let w = world();
    let img = w.fx.image("busybox").clone();
    for status in [429u16, 503] {
        let content = EvilContent::for_image("busy", "latest", &img, false)
            .with_behavior(&img.layers[0].digest, BlobBehavior::BusyFirst { status, times: 2 });
        let srv = EvilRegistry::start(&w.fx.ns, content).unwrap();
        let r = srv.reference("busy:latest");
        w.d.docker_ok(&["pull", &r]);
        assert_eq!(srv.busy_answers(), 2, "status {status}: both busy answers were met");
        assert!(srv.blob_requests() >= 3, "status {status}: the layer was asked for again");
        assert_eq!(inspect(&w.d, &r)["Id"], serde_json::json!(img.config_digest));
        w.d.docker_ok(&["rmi", &r]);
    }
    let content = EvilContent::for_image("busy", "latest", &img, false)
        .with_behavior(&img.layers[0].digest, BlobBehavior::BusyFirst { status: 503, times: 1000 });
    let srv = EvilRegistry::start(&w.fx.ns, content).unwrap();
    let r = srv.reference("busy:latest");
    let out = w.d.docker(&["pull", &r]).assert_fail();
    assert!(out.stderr.contains("503"), "the registry's status is named: {}", out.stderr);
    w.d.docker(&["image", "inspect", &r]).assert_fail();
    assert!(srv.busy_answers() >= 2, "retried before giving up");
}
