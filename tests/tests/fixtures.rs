//! The fixtures themselves: seeding is fast and what the registries serve is what we pushed,
//! as seen by independent clients (skopeo, and our HTTP client reading raw bytes back).

use std::time::Instant;

use berth_tests::fixtures::Fixtures;
use berth_tests::push::{DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use berth_tests::{require_root, sha256_digest};

fn skopeo_inspect(fx: &Fixtures, reference: &str, extra: &[&str]) -> serde_json::Value {
    let out = fx
        .ns
        .command("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .args(extra)
        .arg(format!("docker://{reference}"))
        .output()
        .expect("spawn skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {reference} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("skopeo json")
}

#[test]
fn fixtures_seed_and_read_back() {
    require_root!();
    let t = Instant::now();
    let fx = Fixtures::start().expect("fixtures");
    let took = t.elapsed();
    // Printed, not asserted: speed goals belong in benchmarks, and this machine is shared.
    eprintln!("fixtures seeded in {took:?}");

    let cases = [
        ("busybox:latest", DOCKER_MANIFEST),
        ("busybox:oci", OCI_MANIFEST),
        ("busybox:index", OCI_INDEX),
        ("layered:latest", OCI_MANIFEST),
        ("web:latest", DOCKER_MANIFEST),
    ];
    let plain = fx.plain_target();
    for (repo_tag, media_type) in cases {
        let (repo, tag) = repo_tag.split_once(':').unwrap();
        let pushed = fx.pushed(repo_tag);
        let (ct, body) = plain.get_manifest(repo, tag).unwrap();
        assert_eq!(ct, media_type, "{repo_tag}");
        assert_eq!(body, pushed.manifest, "{repo_tag}");
        assert_eq!(sha256_digest(&body), pushed.digest);
        // By digest too.
        let (_, by_digest) = plain.get_manifest(repo, &pushed.digest).unwrap();
        assert_eq!(by_digest, body);
        // The config blob reads back byte-identical.
        let config = plain.get_blob(repo, &pushed.config_digest).unwrap();
        assert_eq!(sha256_digest(&config), pushed.config_digest);

        // skopeo resolves the linux/amd64 image and agrees on digest and layers.
        let info = skopeo_inspect(
            &fx,
            &fx.reference(repo_tag),
            &["--override-arch", "amd64", "--override-os", "linux"],
        );
        assert_eq!(info["Architecture"], "amd64", "{repo_tag}");
        let name = repo_tag.split(':').next().unwrap();
        let fixture = fx.image(name);
        let layers: Vec<String> = fixture.layers.iter().map(|l| l.digest.clone()).collect();
        assert_eq!(info["Layers"], serde_json::json!(layers), "{repo_tag}");
        assert_eq!(
            info["Digest"],
            serde_json::json!(pushed.digest),
            "{repo_tag}"
        );
    }

    // The index really has a second, arm64 entry that skopeo can select.
    let arm = skopeo_inspect(
        &fx,
        &fx.reference("busybox:index"),
        &["--override-arch", "arm64"],
    );
    assert_eq!(arm["Architecture"], "arm64");

    // The private image needs the credentials.
    let denied = fx
        .ns
        .command("skopeo")
        .args(["inspect", "--tls-verify=false", "--no-creds"])
        .arg(format!("docker://{}", fx.private_reference()))
        .output()
        .unwrap();
    assert!(!denied.status.success());
    let info = skopeo_inspect(&fx, &fx.private_reference(), &["--creds", "berth:s3cret"]);
    assert_eq!(
        info["Digest"],
        serde_json::json!(fx.pushed("private/busybox:latest").digest)
    );
    let (_, m) = fx
        .auth_target()
        .get_manifest("private/busybox", "latest")
        .unwrap();
    assert_eq!(
        sha256_digest(&m),
        fx.pushed("private/busybox:latest").digest
    );
}

#[test]
fn skopeo_copies_fixture_to_oci_dir_and_layers_unpack() {
    require_root!();
    let fx = Fixtures::start().expect("fixtures");
    let dir = tempfile::tempdir().unwrap();
    let out = fx
        .ns
        .command("skopeo")
        .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
        .arg(format!("docker://{}", fx.reference("layered:latest")))
        .arg(format!("oci:{}:layered", dir.path().display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // skopeo verified every blob digest while copying; check all three encodings arrived.
    for l in &fx.image("layered").layers {
        let p = dir
            .path()
            .join("blobs/sha256")
            .join(l.digest.trim_start_matches("sha256:"));
        let got = std::fs::read(&p).unwrap_or_else(|e| {
            let have: Vec<_> = std::fs::read_dir(dir.path().join("blobs/sha256"))
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            panic!("{} ({:?}): {e}; have {have:?}", l.digest, l.compression)
        });
        assert_eq!(got, l.blob);
    }
}
