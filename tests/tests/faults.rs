//! Faults (issue 9, checklist #27 and #32): kill -9 of berthd in the middle of `docker commit`,
//! `docker tag`, `docker rmi` and `docker rm`, and a data root that runs out of space during a
//! pull and while a container writes logs. Afterwards no partial image is visible, the store
//! passes an independent consistency check (`tests/src/storecheck.rs`), acknowledged changes
//! survive, the daemon restarts and serves, and space once freed is usable again.
//!
//! Every test skips with a message when not root or when the berthd binary is missing.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_tests::image::noise;
use berth_tests::berthd::{api_request, run_with_timeout, tail, Berthd};
use berth_tests::evil::{EvilContent, EvilRegistry};
use berth_tests::image::{busybox_layer, Compression, Image, LayerBuilder, RunConfig};
use berth_tests::netns::NetNs;
use berth_tests::require_berthd;
use berth_tests::storecheck;
use berth_tests::world::World;


fn sha256_hex(data: &[u8]) -> String {
    berth_tests::sha256_digest(data).trim_start_matches("sha256:").to_string()
}

/// busybox plus one layer per entry of `files` (path, bytes), uncompressed on the wire.
fn image_with_files(files: &[(&str, Vec<u8>)]) -> Image {
    let mut layers = vec![busybox_layer().unwrap()];
    for (path, data) in files {
        let mut b = LayerBuilder::new();
        b.file(path, 0o644, data).unwrap();
        layers.push(b.finish(Compression::None, &format!("ADD {path} /")).unwrap());
    }
    Image::new(layers, &RunConfig::cmd(&["sh"]), "amd64").unwrap()
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

/// The store is consistent and tmp/ (wiped at every start) is empty: the check after a restart.
#[track_caller]
fn assert_store_consistent(d: &Berthd, what: &str) -> storecheck::StoreReport {
    let r = storecheck::check(&d.data_root()).unwrap_or_else(|e| panic!("{what}: image store inconsistent:\n{e}\n{}", tail(&d.log(), 40)));
    let tmp: Vec<&String> = r.scratch.iter().filter(|s| s.starts_with("tmp/")).collect();
    assert!(tmp.is_empty(), "{what}: tmp/ not wiped at start: {tmp:?}");
    r
}

/// Every image the daemon lists (other than `keep`) has `path` with the expected sha256:
/// a visible image is a complete image.
#[track_caller]
fn assert_images_complete(d: &Berthd, keep: &str, path: &str, sha: &str, what: &str) -> usize {
    let keep_id = d.docker_ok(&["image", "inspect", "-f", "{{.Id}}", keep]).trim().to_string();
    let mut n = 0;
    for id in lines(&d.docker_ok(&["images", "-a", "-q", "--no-trunc"])) {
        if id == keep_id {
            continue;
        }
        let out = d.docker_ok(&["run", "--rm", "--network", "none", &id, "sha256sum", path]);
        assert!(out.starts_with(sha), "{what}: image {id} is visible but its {path} is wrong: {out}");
        n += 1;
    }
    n
}

/// Sleep for a fraction of a duration.
fn sleep_frac(total: Duration, frac: f64) {
    std::thread::sleep(Duration::from_secs_f64(total.as_secs_f64() * frac));
}

#[test]
fn kill9_during_commit_leaves_no_partial_image() {
    require_berthd!();
    let t0 = Instant::now();
    let mut w = World::start();
    let img = w.pulled("busybox:latest");
    // 16 MiB of random data in the container's upper layer: the commit writes a 16 MiB layer
    // tar, fsyncs it, unpacks it and syncs the filesystem, which takes a while.
    w.d.docker_ok(&[
        "run", "-d", "--name", "src", "--network", "none", &img, "sh", "-c",
        "dd if=/dev/urandom of=/big bs=1M count=16 2>/dev/null && sha256sum /big > /big.sum && exec sleep 1000",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let sum = loop {
        let out = w.d.docker(&["exec", "src", "cat", "/big.sum"]);
        if out.success() && !out.stdout.trim().is_empty() {
            break out.stdout.split_whitespace().next().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the container never wrote /big");
        std::thread::sleep(Duration::from_millis(100));
    };
    // An uninterrupted commit first: how long one takes, and that it is right.
    let t = Instant::now();
    w.d.docker_ok(&["commit", "src", "crash/commit:ref"]);
    let full = t.elapsed();
    eprintln!("commit of a 16 MiB layer: {full:?}");
    assert_eq!(assert_images_complete(&w.d, &img, "/big", &sum, "reference commit"), 1);
    w.d.docker_ok(&["rmi", "crash/commit:ref"]);
    let r = assert_store_consistent(&w.d, "after rmi");
    assert!(r.orphan_layers.is_empty(), "rmi left layers: {:?}", r.orphan_layers);

    // Kill at each step of the commit, seen from the store's files: while the layer tar is
    // written (tmp/blob-*), while it is unpacked (tmp/unpack-*), once the layer exists but no
    // image yet, once the image record exists; and at fractions of a whole commit's time.
    let store = w.d.data_root().join("image");
    let count = |dir: &str, prefix: &str| -> usize {
        std::fs::read_dir(store.join(dir)).map(|r| r.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(prefix)).count()).unwrap_or(0)
    };
    let (layers0, images0) = (count("layers", ""), count("images", ""));
    let phases: Vec<(String, Box<dyn Fn() -> bool>)> = vec![
        ("writing the layer tar".into(), Box::new(|| count("tmp", "blob-") > 0)),
        ("unpacking the layer".into(), Box::new(|| count("tmp", "unpack-") > 0)),
        ("layer stored, no image yet".into(), Box::new(|| count("layers", "") > layers0)),
        ("image record written".into(), Box::new(|| count("images", "") > images0)),
    ];
    let mut plan: Vec<(String, Option<&dyn Fn() -> bool>, f64)> = phases.iter().map(|(n, f)| (n.clone(), Some(f.as_ref()), 0.0)).collect();
    for frac in [0.3, 0.6, 0.9] {
        plan.push((format!("{:.0}% of a commit's time", frac * 100.0), None, frac));
    }
    let mut outcomes = Vec::new();
    for (i, (what, cond, frac)) in plan.into_iter().enumerate() {
        let tag = format!("crash/commit:{i}");
        let mut cmd = w.d.docker_command();
        cmd.args(["commit", "src", &tag]);
        let cli = std::thread::spawn(move || run_with_timeout(cmd, None, Duration::from_secs(120)));
        let hit = match cond {
            Some(f) => {
                let deadline = Instant::now() + full * 3;
                loop {
                    if f() {
                        break true;
                    }
                    if cli.is_finished() || Instant::now() > deadline {
                        break false;
                    }
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
            None => {
                sleep_frac(full, frac);
                true
            }
        };
        w.d.kill9();
        let (status, _, _) = cli.join().unwrap().expect("the CLI returns once the daemon is gone");
        w.d.restart().expect("berthd restarts after kill -9 mid-commit");
        let what = format!("kill -9 {} ({what})", if hit { "at" } else { "after missing" });
        assert_store_consistent(&w.d, &what);
        let visible = assert_images_complete(&w.d, &img, "/big", &sum, &what);
        let tagged = w.d.docker(&["image", "inspect", &tag]).success();
        assert!(!tagged || visible == 1, "{what}: tag {tag} without a complete image");
        // The commit froze the container; the restarted daemon must not leave it frozen.
        let exec = w.d.docker(&["exec", "src", "true"]);
        assert!(exec.success(), "{what}: the committed container is not usable after the restart: {}", exec.stderr);
        assert_eq!(w.d.docker_ok(&["inspect", "-f", "{{.State.Status}}", "src"]).trim(), "running", "{what}");
        outcomes.push((what, status.success(), visible, tagged));
        // Start the next round from a store without the committed layer.
        for id in lines(&w.d.docker_ok(&["images", "-a", "-q", "--no-trunc"])) {
            if !w.d.docker_ok(&["image", "inspect", "-f", "{{.RepoTags}}", &id]).contains("busybox") {
                w.d.docker_ok(&["rmi", "-f", &id]);
            }
        }
    }
    eprintln!("(kill point, CLI succeeded, images visible, tagged): {outcomes:#?}");
    // Debris of the interrupted commits (a layer unpacked before the kill, its blob) is
    // collected by the next gc: after the last rmi nothing of the commits is left.
    let r = assert_store_consistent(&w.d, "end");
    assert!(r.orphan_layers.is_empty() && r.orphan_blobs.is_empty(), "debris left: layers {:?} blobs {:?}", r.orphan_layers, r.orphan_blobs);
    w.d.docker_ok(&["run", "--rm", "--network", "none", &img, "true"]);
    eprintln!("kill9_during_commit_leaves_no_partial_image: {:?}", t0.elapsed());
}

#[test]
fn kill9_during_tag_and_untag_keeps_what_was_acknowledged() {
    require_berthd!();
    let t0 = Instant::now();
    let mut w = World::start();
    let img = w.pulled("busybox:latest");
    let id = w.d.docker_ok(&["image", "inspect", "-f", "{{.Id}}", &img]).trim().to_string();
    let socket = w.d.socket();
    let stop = Arc::new(AtomicBool::new(false));
    // Acknowledged tags (201) and acknowledged untags (200), by the threads that made them.
    let tagged = Arc::new(Mutex::new(BTreeSet::new()));
    let untagged = Arc::new(Mutex::new(BTreeSet::new()));
    // Untags sent, acknowledged or not (one may be in flight at the kill, and may have landed).
    let untag_sent = Arc::new(Mutex::new(BTreeSet::new()));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (socket, stop, tagged, untagged, id) = (socket.clone(), stop.clone(), tagged.clone(), untagged.clone(), id.clone());
            let untag_sent = untag_sent.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("t{t}-{i}");
                    match api_request(&socket, "POST", &format!("/images/{id}/tag?repo=crash/tag&tag={name}"), None) {
                        Ok(r) if r.status == 201 => {
                            tagged.lock().unwrap().insert(name.clone());
                        }
                        Ok(r) => panic!("tag {name}: {} {}", r.status, r.text()),
                        Err(_) => break,
                    }
                    // Every other tag is removed again right away.
                    if i % 2 == 1 {
                        untag_sent.lock().unwrap().insert(name.clone());
                        match api_request(&socket, "DELETE", &format!("/images/crash/tag:{name}"), None) {
                            Ok(r) if r.status == 200 => {
                                untagged.lock().unwrap().insert(name.clone());
                            }
                            Ok(r) => panic!("untag {name}: {} {}", r.status, r.text()),
                            Err(_) => break,
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tagged.lock().unwrap().len() < 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    w.d.kill9();
    stop.store(true, Ordering::SeqCst);
    for h in workers {
        h.join().expect("worker");
    }
    let (tagged, untagged) = (tagged.lock().unwrap().clone(), untagged.lock().unwrap().clone());
    let untag_sent = untag_sent.lock().unwrap().clone();
    assert!(tagged.len() >= 50, "only {} tags acknowledged before the kill", tagged.len());
    w.d.restart().expect("berthd restarts after kill -9 mid-tag");
    let r = assert_store_consistent(&w.d, "kill -9 during tag/untag");
    let now: BTreeSet<String> = lines(&w.d.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]))
        .into_iter()
        .filter_map(|l| l.strip_prefix("crash/tag:").map(String::from))
        .collect();
    let lost: Vec<&String> = tagged.iter().filter(|t| !untag_sent.contains(*t) && !now.contains(*t)).collect();
    assert!(lost.is_empty(), "acknowledged tags lost by the crash: {lost:?}");
    let back: Vec<&String> = untagged.iter().filter(|t| now.contains(*t)).collect();
    assert!(back.is_empty(), "acknowledged untags undone by the crash: {back:?}");
    // At most the one request in flight per worker is unaccounted for.
    let extra: Vec<&String> = now.iter().filter(|t| !tagged.contains(*t)).collect();
    assert!(extra.len() <= 4, "tags that were never acknowledged: {extra:?}");
    for t in now.iter().take(20) {
        let got = w.d.docker_ok(&["image", "inspect", "-f", "{{.Id}}", &format!("crash/tag:{t}")]);
        assert_eq!(got.trim(), id);
    }
    eprintln!(
        "tag crash: {} tags and {} untags acknowledged, {} tags after restart, {} refs in the store",
        tagged.len(),
        untagged.len(),
        now.len(),
        r.refs.len()
    );
    w.d.docker_ok(&["tag", &img, "crash/tag:after"]);
    w.d.docker_ok(&["run", "--rm", "--network", "none", "crash/tag:after", "true"]);
    eprintln!("kill9_during_tag_and_untag_keeps_what_was_acknowledged: {:?}", t0.elapsed());
}

#[test]
fn kill9_during_rmi_and_rm_leaves_a_consistent_store() {
    require_berthd!();
    let t0 = Instant::now();
    let ns = NetNs::new().unwrap();
    // Three 4 MiB layers on busybox: the rmi removes three layer dirs and their blobs.
    let files: Vec<(String, Vec<u8>)> = (0..3).map(|i| (format!("big{i}.bin"), noise(4 << 20, 70 + i))).collect();
    let sums: Vec<String> = files.iter().map(|(_, d)| sha256_hex(d)).collect();
    let img = image_with_files(&files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect::<Vec<_>>());
    let srv = EvilRegistry::start(&ns, EvilContent::for_image("big", "latest", &img, false)).unwrap();
    let reference = srv.reference("big:latest");
    let mut d = Berthd::start(&ns, &[srv.addr()]).expect("start berthd");

    d.docker_ok(&["pull", "-q", &reference]);
    let t = Instant::now();
    d.docker_ok(&["rmi", &reference]);
    let full = t.elapsed().max(Duration::from_millis(20));
    eprintln!("rmi of 3 x 4 MiB layers: {full:?} ({:?} since start)", t0.elapsed());
    // Kill at each step of the rmi, seen from the store's files: the tag gone from refs.json,
    // the image record gone, layers being discarded (moved to tmp/ or gone), blobs going.
    let store = d.data_root().join("image");
    let count = |dir: &str, prefix: &str| -> usize {
        std::fs::read_dir(store.join(dir)).map(|r| r.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(prefix)).count()).unwrap_or(0)
    };
    let repo = reference.rsplit_once(':').unwrap().0.to_string();
    let untagged = || !std::fs::read_to_string(store.join("refs.json")).unwrap_or_default().contains(&repo);
    let mut outcomes = Vec::new();
    for phase in ["untagged", "record removed", "layers going", "blobs going"] {
        d.docker_ok(&["pull", "-q", &reference]);
        let (images0, layers0, blobs0) = (count("images", ""), count("layers", ""), count("blobs/sha256", ""));
        let mut cmd = d.docker_command();
        cmd.args(["rmi", &reference]);
        let cli = std::thread::spawn(move || run_with_timeout(cmd, None, Duration::from_secs(60)));
        let deadline = Instant::now() + Duration::from_secs(20);
        let hit = loop {
            let now = match phase {
                "untagged" => untagged(),
                "record removed" => count("images", "") < images0,
                "layers going" => count("layers", "") < layers0 || count("tmp", "dead-") > 0,
                _ => count("blobs/sha256", "") < blobs0,
            };
            if now {
                break true;
            }
            if cli.is_finished() || Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        d.kill9();
        let (status, _, _) = cli.join().unwrap().expect("CLI returns");
        d.restart().expect("berthd restarts after kill -9 mid-rmi");
        let what = format!("kill -9 {} {phase}", if hit { "once" } else { "after missing" });
        let r = assert_store_consistent(&d, &what);
        let present = d.docker(&["image", "inspect", &reference]).success();
        if present {
            // Still there: complete, runnable, and removable now.
            for (i, sum) in sums.iter().enumerate() {
                let out = d.docker_ok(&["run", "--rm", "--network", "none", &reference, "sha256sum", &format!("/big{i}.bin")]);
                assert!(out.starts_with(sum.as_str()), "{what}: /big{i}.bin wrong: {out}");
            }
            d.docker_ok(&["rmi", &reference]);
        } else {
            // Untagged and killed before the record went: a whole image, dangling; rmi by ID
            // removes it. Anything else is gone with all its content (start-up gc).
            for id in &r.images {
                d.docker_ok(&["rmi", id]);
            }
        }
        let r = assert_store_consistent(&d, &what);
        assert!(r.images.is_empty() && r.layers.is_empty() && r.blobs.is_empty(), "{what}: left after rmi: {r:?}");
        outcomes.push((what, status.success(), present));
    }
    eprintln!("(kill point, CLI succeeded, image still there): {outcomes:?}");
    let r = assert_store_consistent(&d, "after the rmi rounds");
    assert!(r.images.is_empty() && r.layers.is_empty() && r.blobs.is_empty(), "left after the last rmi: {r:?}");

    eprintln!("rmi rounds done after {:?}", t0.elapsed());
    // docker rm -f of a running container, killed part way: afterwards the container is
    // either still listed (and removable) or gone, and nothing of it is left either way.
    d.docker_ok(&["pull", "-q", &reference]);
    let root = d.root().display().to_string();
    let mounts_before = berth_tests::leaks::mounts_under(&root);
    let mut ids = BTreeSet::new();
    let id = d.docker_ok(&["run", "-d", "--name", "timed", &reference, "sleep", "1000"]).trim().to_string();
    ids.insert(id);
    let t = Instant::now();
    d.docker_ok(&["rm", "-f", "timed"]);
    let full = t.elapsed();
    eprintln!("rm -f of a running container: {full:?}");
    for (i, frac) in [0.2, 0.4, 0.6, 0.8, 0.95].into_iter().enumerate() {
        let name = format!("victim{i}");
        let id = d.docker_ok(&["run", "-d", "--name", &name, &reference, "sleep", "1000"]).trim().to_string();
        ids.insert(id.clone());
        let mut cmd = d.docker_command();
        cmd.args(["rm", "-f", &name]);
        let cli = std::thread::spawn(move || run_with_timeout(cmd, None, Duration::from_secs(60)));
        sleep_frac(full, frac);
        d.kill9();
        let _ = cli.join().unwrap();
        d.restart().expect("berthd restarts after kill -9 mid-rm");
        let listed = lines(&d.docker_ok(&["ps", "-a", "-q", "--no-trunc"]));
        if listed.contains(&id) {
            d.docker_ok(&["rm", "-f", &name]);
        }
        assert!(lines(&d.docker_ok(&["ps", "-a", "-q"])).is_empty(), "after rm -f #{i}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mounts: Vec<String> = berth_tests::leaks::mounts_under(&root).difference(&mounts_before).cloned().collect();
        let procs = berth_tests::leaks::processes_naming(&root, &ids, d.pid());
        let cgroups = berth_tests::leaks::cgroups_of(&["berth".to_string()], &ids);
        let netns: Vec<_> = std::fs::read_dir(d.exec_root().join("netns")).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        let state: Vec<_> = std::fs::read_dir(d.exec_root().join("c")).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        if mounts.is_empty() && procs.is_empty() && cgroups.is_empty() && netns.is_empty() && state.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left after rm -f interrupted by kill -9:\nmounts {mounts:?}\nprocesses {procs:?}\ncgroups {cgroups:?}\nnetns {netns:?}\nruntime state {state:?}\n{}",
            tail(&d.log(), 60)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    d.docker_ok(&["run", "--rm", &reference, "true"]);
    drop(d);
    drop(srv);
    eprintln!("kill9_during_rmi_and_rm_leaves_a_consistent_store: {:?}", t0.elapsed());
}

/// Bytes free on the filesystem at `p`.
fn free_bytes(p: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(p).unwrap();
    s.blocks_available() as u64 * s.fragment_size() as u64
}

/// Grow the tmpfs mounted at `p` (the test daemon's own data root).
fn resize_tmpfs(p: &Path, bytes: u64) {
    let st = std::process::Command::new("mount").args(["-o", &format!("remount,size={bytes}")]).arg(p).status().unwrap();
    assert!(st.success(), "remount {}", p.display());
}

#[test]
fn disk_full_during_pull_fails_cleanly_and_recovers() {
    require_berthd!();
    let t0 = Instant::now();
    let fx = berth_tests::fixtures::Fixtures::start().unwrap();
    // Two 8 MiB layers (blob + unpacked copy: ~32 MiB in all) onto a 24 MiB data root.
    let files: Vec<(String, Vec<u8>)> = (0..2).map(|i| (format!("big{i}.bin"), noise(8 << 20, 90 + i))).collect();
    let sums: Vec<String> = files.iter().map(|(_, d)| sha256_hex(d)).collect();
    let img = image_with_files(&files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect::<Vec<_>>());
    let srv = EvilRegistry::start(&fx.ns, EvilContent::for_image("big", "latest", &img, false)).unwrap();
    let reference = srv.reference("big:latest");
    let d = Berthd::start_with_data_limit(&fx.ns, &[fx.registry.addr(), srv.addr()], 24 << 20).expect("start berthd");
    let small = fx.reference("busybox:latest");
    d.docker_ok(&["pull", "-q", &small]);
    // A container that is running before the disk fills, and must not notice.
    d.docker_ok(&["run", "-d", "--name", "bystander", "--network", "none", &small, "sleep", "1000"]);

    let out = d.docker(&["pull", &reference]);
    assert!(!out.success(), "a pull of ~32 MiB into 24 MiB succeeded:\n{}", out.stdout);
    let msg = format!("{}{}", out.stdout, out.stderr);
    assert!(msg.to_lowercase().contains("no space left on device"), "the pull's error does not say the disk is full:\n{msg}");
    eprintln!("pull into a full disk: {}", out.stderr.trim());
    d.docker(&["image", "inspect", &reference]).assert_fail();
    let r = storecheck::check(&d.data_root()).unwrap_or_else(|e| panic!("store inconsistent after ENOSPC:\n{e}"));
    assert_eq!(r.images.len(), 1, "only busybox is an image: {:?}", r.images);
    let tmp: Vec<&String> = r.scratch.iter().filter(|s| s.starts_with("tmp/")).collect();
    assert!(tmp.is_empty(), "the failed pull left unpack temp data: {tmp:?}");
    // The daemon and the other container are unaffected.
    d.docker_ok(&["exec", "bystander", "true"]);
    assert_eq!(d.docker_ok(&["inspect", "-f", "{{.State.Running}}", "bystander"]).trim(), "true");
    d.docker_ok(&["run", "--rm", "--network", "none", &small, "true"]);

    // Space freed (the disk grows): the same pull now works, and the image is right.
    resize_tmpfs(&d.data_root(), 96 << 20);
    d.docker_ok(&["pull", "-q", &reference]);
    for (i, sum) in sums.iter().enumerate() {
        let out = d.docker_ok(&["run", "--rm", "--network", "none", &reference, "sha256sum", &format!("/big{i}.bin")]);
        assert!(out.starts_with(sum.as_str()), "/big{i}.bin after recovery: {out}");
    }
    storecheck::check(&d.data_root()).unwrap_or_else(|e| panic!("store inconsistent after recovery:\n{e}"));
    drop(d);
    drop(srv);
    eprintln!("disk_full_during_pull_fails_cleanly_and_recovers: {:?}", t0.elapsed());
}

#[test]
fn disk_full_during_logs_keeps_containers_running_and_logs_readable() {
    require_berthd!();
    let t0 = Instant::now();
    let fx = berth_tests::fixtures::Fixtures::start().unwrap();
    let d = Berthd::start_with_data_limit(&fx.ns, &[fx.registry.addr()], 32 << 20).expect("start berthd");
    let small = fx.reference("busybox:latest");
    d.docker_ok(&["pull", "-q", &small]);
    d.docker_ok(&["run", "-d", "--name", "bystander", "--network", "none", &small, "sleep", "1000"]);
    // A logger: ten numbered lines every 2 ms, forever: fast enough (~500 KB/s) that the two
    // seconds of full disk below overflow the shim's log write buffer (256 KiB, kept for a
    // retry when a write fails) and lines are really lost.
    d.docker_ok(&[
        "run", "-d", "--name", "logger", "--network", "none", &small, "sh", "-c",
        "p=$(printf '%0100d' 0); i=0; while :; do for j in 0 1 2 3 4 5 6 7 8 9; do echo \"line $i $p\"; i=$((i+1)); done; usleep 2000; done",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    // Fill the disk (the test's own file in the daemon's data root) until ENOSPC.
    let filler = d.data_root().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0x55u8; 1 << 20];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                    break;
                }
            }
        }
        // Small writes fill the last pages.
        while f.write(&[0u8; 512]).map(|n| n > 0).unwrap_or(false) {}
    }
    assert!(free_bytes(&d.data_root()) < 64 << 10, "the disk is not full: {} bytes free", free_bytes(&d.data_root()));
    // Logs fail to be written for a while.
    std::thread::sleep(Duration::from_secs(2));
    for c in ["logger", "bystander"] {
        assert_eq!(d.docker_ok(&["inspect", "-f", "{{.State.Running}}", c]).trim(), "true", "{c} stopped on a full disk\n{}", tail(&d.log(), 40));
    }
    d.docker_ok(&["exec", "bystander", "true"]);
    let during = d.docker(&["logs", "--tail", "5", "logger"]);
    assert!(during.success(), "docker logs fails on a full disk: {}", during.stderr);
    // Space is freed: logging resumes, and the whole log reads back as whole records.
    std::fs::remove_file(&filler).unwrap();
    let last_before = last_line_number(&d.docker_ok(&["logs", "logger"]));
    std::thread::sleep(Duration::from_secs(2));
    let all = d.docker(&["logs", "logger"]);
    assert!(all.success(), "docker logs after the disk was freed: {}\n{}", all.stderr, tail(&d.log(), 40));
    let last_after = last_line_number(&all.stdout);
    assert!(last_after > last_before + 100, "logging did not resume after space was freed: {last_before} -> {last_after}");
    // Lines written while the disk was full were dropped (the fault really hit the log).
    let kept = all.stdout.lines().count() as u64;
    assert!(kept < last_after + 1, "no line was lost while the disk was full ({kept} lines, last {last_after})");
    for l in all.stdout.lines() {
        let ok = l.starts_with("line ") && l.len() == "line ".len() + l.split(' ').nth(1).unwrap().len() + 101;
        assert!(ok, "a torn log record after the disk was full: {l:?}");
    }
    eprintln!("log lines: last before freeing {last_before}, after {last_after}, {} kept", all.stdout.lines().count());
    d.docker_ok(&["rm", "-f", "logger", "bystander"]);
    drop(d);
    eprintln!("disk_full_during_logs_keeps_containers_running_and_logs_readable: {:?}", t0.elapsed());
}

fn last_line_number(s: &str) -> u64 {
    s.lines().rev().find_map(|l| l.split(' ').nth(1)?.parse().ok()).unwrap_or(0)
}

#[test]
fn disk_full_during_a_build_layer_fails_cleanly_and_recovers() {
    require_berthd!();
    let t0 = Instant::now();
    let fx = berth_tests::fixtures::Fixtures::start().unwrap();
    let d = Berthd::start_with_data_limit(&fx.ns, &[fx.registry.addr()], 24 << 20).expect("start berthd");
    let small = fx.reference("busybox:latest");
    d.docker_ok(&["pull", "-q", &small]);
    d.docker_ok(&["run", "-d", "--name", "bystander", "--network", "none", &small, "sleep", "1000"]);
    // The RUN step's 9 MiB fit in the container's upper dir; turning them into a layer (a
    // 9 MiB tar blob, then its unpacked copy) does not fit in what is left.
    let df = format!("FROM {small}\nRUN dd if=/dev/urandom of=/big bs=1M count=9 2>/dev/null && sha256sum /big > /big.sum\n");
    let out = d.docker_with_stdin(&["build", "-t", "full/build:1", "-"], Some(df.as_bytes()));
    assert!(!out.success(), "a build layer that cannot fit was committed:\n{}", out.stdout);
    let msg = format!("{}{}", out.stdout, out.stderr).to_lowercase();
    assert!(msg.contains("no space left on device"), "the build's error does not say the disk is full:\n{msg}");
    // The step itself ran (the container wrote its file): the layer commit hit the full disk.
    assert!(!msg.contains("returned a non-zero code"), "the RUN step itself failed, not the layer commit:\n{msg}");
    eprintln!("build on a full disk: {}", out.stderr.trim().lines().last().unwrap_or(""));
    d.docker(&["image", "inspect", "full/build:1"]).assert_fail();
    let r = storecheck::check(&d.data_root()).unwrap_or_else(|e| panic!("store inconsistent after ENOSPC in a build:\n{e}"));
    assert_eq!(r.images.len(), 1, "only busybox is an image: {:?}", r.images);
    let tmp: Vec<&String> = r.scratch.iter().filter(|s| s.starts_with("tmp/")).collect();
    assert!(tmp.is_empty(), "the failed layer left temp data: {tmp:?}");
    d.docker_ok(&["exec", "bystander", "true"]);
    // The build's own container went with the failed step (or is removable), and the disk is
    // usable again once it grows: the same build works.
    for id in lines(&d.docker_ok(&["ps", "-a", "-q", "--filter", "status=exited"])) {
        d.docker_ok(&["rm", &id]);
    }
    resize_tmpfs(&d.data_root(), 96 << 20);
    d.docker_with_stdin(&["build", "-t", "full/build:1", "-"], Some(df.as_bytes())).assert_ok();
    let sum = d.docker_ok(&["run", "--rm", "--network", "none", "full/build:1", "sh", "-c", "sha256sum /big | cmp - /big.sum && echo same"]);
    assert_eq!(sum.trim(), "same");
    storecheck::check(&d.data_root()).unwrap_or_else(|e| panic!("store inconsistent after recovery:\n{e}"));
    d.docker_ok(&["rm", "-f", "bystander"]);
    drop(d);
    eprintln!("disk_full_during_a_build_layer_fails_cleanly_and_recovers: {:?}", t0.elapsed());
}
