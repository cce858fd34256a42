//! Store tests: ingest, metadata atomicity and recovery, resolve, gc.

use std::fs;
use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::unpack::tests::{is_root, tar_of, E};

fn open(dir: &Path) -> Store {
    Store::open(dir).unwrap()
}

fn config(n: u32) -> Vec<u8> {
    format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":{n}}}").into_bytes()
}

/// An image with one layer holding `file`; returns its record (already put).
fn make_image(s: &Store, n: u32, layers: &[&[u8]]) -> ImageRecord {
    let id = s.write_blob(&config(n)).unwrap();
    let mut parent: Option<Digest> = None;
    let (mut chains, mut diffs) = (Vec::new(), Vec::new());
    for content in layers {
        let tar = tar_of(&[E::File("f", content, 0o644)]);
        let blob = s.write_blob(&tar).unwrap();
        let info = s.unpack_layer(&blob, Compression::None, &Digest::of(&tar), parent.as_ref()).unwrap();
        parent = Some(info.chain_id.clone());
        chains.push(info.chain_id);
        diffs.push(info.diff_id);
    }
    let rec = ImageRecord {
        id,
        layers: chains,
        diff_ids: diffs,
        repo_digests: vec![],
        created: None,
        size: 0,
        loaded_at: now_rfc3339(),
        parent: None,
    };
    s.put_image(&rec).unwrap();
    rec
}

#[test]
fn store_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
    check::<Ingest>();
    check::<Lease>();
}

#[test]
fn blob_roundtrip_and_corruption() {
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    let d = s.write_blob(b"{}").unwrap();
    assert_eq!(d, Digest::of(b"{}"));
    assert!(s.has_blob(&d));
    assert_eq!(s.read_blob(&d, 10).unwrap(), b"{}");
    assert_eq!(s.blob_size(&d), Some(2));
    assert_eq!(s.blob_size(&Digest::of(b"x")), None);
    assert!(s.open_blob(&d).is_ok());
    assert!(matches!(s.read_blob(&d, 1), Err(ImageError::LimitExceeded(_))));
    fs::write(s.blob_path(&d), b"[]").unwrap();
    assert!(matches!(s.read_blob(&d, 10), Err(ImageError::DigestMismatch { .. })));
    assert!(matches!(s.read_blob(&Digest::of(b"x"), 10), Err(ImageError::NotFound(_))));
}

#[test]
fn ingest_resume_and_commit() {
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::of(&data);
    {
        let mut ing = s.begin_ingest(&d, Some(data.len() as u64)).unwrap();
        assert_eq!(ing.offset(), 0);
        ing.write_all(&data[..40_000]).unwrap();
        assert_eq!(ing.written(), 40_000);
        // dropped without commit: simulates a broken connection
    }
    // A store reopened after a crash keeps the partial for resume.
    let s = open(t.path());
    let mut ing = s.begin_ingest(&d, Some(data.len() as u64)).unwrap();
    assert_eq!(ing.offset(), 40_000);
    ing.write_all(&data[40_000..]).unwrap();
    // Writing past the expected size is refused.
    assert!(ing.write_all(b"x").is_err());
    ing.commit().unwrap();
    assert!(s.has_blob(&d));
    assert_eq!(s.read_blob(&d, u64::MAX).unwrap(), data);
    assert!(!t.path().join("ingest").join(format!("{}.partial", d.hex())).exists());
    // Committing again when the blob exists is fine.
    let ing = s.begin_ingest(&d, None).unwrap();
    ing.commit().unwrap();
}

#[test]
fn ingest_reset_and_mismatch() {
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    let d = Digest::of(b"hello");
    let mut ing = s.begin_ingest(&d, None).unwrap();
    ing.write_all(b"garbage").unwrap();
    ing.reset().unwrap();
    assert_eq!((ing.offset(), ing.written()), (0, 0));
    ing.write_all(b"hello").unwrap();
    ing.commit().unwrap();
    assert!(s.has_blob(&d));

    let d2 = Digest::of(b"expected");
    let mut ing = s.begin_ingest(&d2, None).unwrap();
    ing.write_all(b"tampered").unwrap();
    match ing.commit() {
        Err(ImageError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, d2);
            assert_eq!(actual, Digest::of(b"tampered"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!s.has_blob(&d2));
    assert!(!t.path().join("ingest").join(format!("{}.partial", d2.hex())).exists());

    let mut ing = s.begin_ingest(&d2, Some(100)).unwrap();
    ing.write_all(b"expected").unwrap();
    assert!(matches!(ing.commit(), Err(ImageError::SizeMismatch { expected: 100, actual: 8 })));
    assert!(!s.has_blob(&d2));
}

#[test]
fn concurrent_ingests_are_serialized() {
    let t = tempfile::tempdir().unwrap();
    let s = Arc::new(open(t.path()));
    let d = Digest::of(b"shared");
    let mut first = s.begin_ingest(&d, None).unwrap();
    assert!(matches!(s.try_begin_ingest(&d, None), Err(ImageError::AlreadyInProgress(_))));
    let (tx, rx) = mpsc::channel();
    let s2 = s.clone();
    let d2 = d.clone();
    let h = std::thread::spawn(move || {
        let ing = s2.begin_ingest(&d2, None).unwrap();
        tx.send(s2.has_blob(&d2)).unwrap();
        ing.commit().unwrap();
    });
    // The second writer must still be waiting.
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    first.write_all(b"shared").unwrap();
    first.commit().unwrap();
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "second ingest sees the committed blob");
    h.join().unwrap();
    assert_eq!(s.read_blob(&d, 100).unwrap(), b"shared");
}

#[test]
fn images_refs_persist_and_recover() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    let a = make_image(&s, 1, &[b"base", b"a"]);
    let b = make_image(&s, 2, &[b"base", b"b"]);
    assert_eq!(a.layers[0], b.layers[0]);
    let ra = Reference::parse("127.0.0.1:5000/app:1").unwrap();
    assert_eq!(s.set_reference(&ra, &a.id).unwrap(), None);
    assert_eq!(s.set_reference(&ra, &b.id).unwrap(), Some(a.id.clone()));
    let rb = Reference::parse("127.0.0.1:5000/other").unwrap();
    s.set_reference(&rb, &a.id).unwrap();
    assert!(matches!(s.set_reference(&rb, &Digest::of(b"none")), Err(ImageError::NotFound(_))));
    assert!(matches!(
        s.set_reference(&Reference::parse_name("x").unwrap(), &a.id),
        Err(ImageError::InvalidReference(_))
    ));
    // `sha256:x` would read as an image ID: refused, as Docker does (moby's TestTagInvalidReference).
    let e = s.set_reference(&Reference::parse("sha256:sometag").unwrap(), &a.id).unwrap_err();
    assert!(e.to_string().contains("refusing to create an ambiguous tag using digest algorithm as name"), "{e}");
    let not_ambiguous = Reference::parse("127.0.0.1:5000/sha256:x").unwrap();
    assert!(s.set_reference(&not_ambiguous, &a.id).is_ok());
    assert!(s.remove_reference(&not_ambiguous).unwrap());
    // put_image refuses records whose content is missing
    let mut bad = a.clone();
    bad.layers.push(Digest::of(b"missing layer"));
    bad.diff_ids.push(Digest::of(b"missing layer"));
    assert!(matches!(s.put_image(&bad), Err(ImageError::NotFound(_))));

    // Simulate a crash: debris in tmp/, a half-written metadata temp file.
    fs::write(t.path().join("tmp/meta-123.tmp"), b"{half").unwrap();
    fs::create_dir_all(t.path().join("tmp/unpack-abc/diff/x")).unwrap();
    // Junk in layers/: a dir without meta.json and a stray file.
    fs::create_dir_all(t.path().join("layers").join(Digest::of(b"junk").hex()).join("diff")).unwrap();
    fs::write(t.path().join("layers/stray"), b"").unwrap();
    drop(s);
    let s = open(t.path());
    assert!(fs::read_dir(t.path().join("tmp")).unwrap().next().is_none());
    assert_eq!(fs::read_dir(t.path().join("layers")).unwrap().count(), 3);
    assert_eq!(s.get_image(&a.id).unwrap(), a);
    assert_eq!(s.list_images().unwrap().len(), 2);
    assert_eq!(s.references_to(&b.id).unwrap(), vec![ra.clone()]);
    assert_eq!(s.references().unwrap().len(), 2);

    // An image whose layer vanished is dropped on open, with its references.
    fs::remove_dir_all(t.path().join("layers").join(b.layers[1].hex())).unwrap();
    drop(s);
    let s = open(t.path());
    assert!(matches!(s.get_image(&b.id), Err(ImageError::NotFound(_))));
    assert!(s.references_to(&b.id).unwrap().is_empty());
    assert_eq!(s.references().unwrap(), vec![(rb.clone(), a.id.clone())]);

    assert!(s.remove_reference(&rb).unwrap());
    assert!(!s.remove_reference(&rb).unwrap());
    s.set_reference(&rb, &a.id).unwrap();
    s.delete_image(&a.id).unwrap();
    assert!(s.references().unwrap().is_empty());
    assert!(matches!(s.delete_image(&a.id), Err(ImageError::NotFound(_))));
    drop(s);
    let s = open(t.path());
    assert!(s.list_images().unwrap().is_empty());
}

#[test]
fn resolve_lookup_order() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    // 17 images: at least two share the first hex digit (pigeonhole).
    let imgs: Vec<ImageRecord> = (0..17).map(|n| make_image(&s, n, &[b"l"])).collect();
    let a = &imgs[0];
    assert_eq!(s.resolve(a.id.as_str()).unwrap(), a.id);
    assert_eq!(s.resolve(a.id.hex()).unwrap(), a.id);
    assert_eq!(s.resolve(a.id.short()).unwrap(), a.id);
    assert_eq!(s.resolve(&format!("sha256:{}", a.id.short())).unwrap(), a.id);
    let mut by_first: std::collections::HashMap<char, usize> = Default::default();
    for i in &imgs {
        *by_first.entry(i.id.hex().chars().next().unwrap()).or_default() += 1;
    }
    let (c, _) = by_first.iter().find(|(_, n)| **n > 1).unwrap();
    assert!(matches!(s.resolve(&c.to_string()), Err(ImageError::Ambiguous(_))));
    let missing = Digest::of(b"no such image");
    assert!(matches!(s.resolve(missing.as_str()), Err(ImageError::NotFound(_))));

    let r = Reference::parse("127.0.0.1:5000/app").unwrap();
    s.set_reference(&r, &imgs[1].id).unwrap();
    assert_eq!(s.resolve("127.0.0.1:5000/app").unwrap(), imgs[1].id);
    assert_eq!(s.resolve("127.0.0.1:5000/app:latest").unwrap(), imgs[1].id);
    assert!(matches!(s.resolve("127.0.0.1:5000/app:v2"), Err(ImageError::NotFound(_))));
    // A tag that happens to look like an ID prefix wins over the prefix.
    let c_ref = Reference::parse(&c.to_string()).unwrap();
    s.set_reference(&c_ref, &imgs[2].id).unwrap();
    assert_eq!(s.resolve(&c.to_string()).unwrap(), imgs[2].id);

    // name@digest via repo_digests
    let manifest = Digest::of(b"manifest");
    let mut rec = imgs[3].clone();
    rec.repo_digests = vec![format!("127.0.0.1:5000/app@{manifest}")];
    s.put_image(&rec).unwrap();
    assert_eq!(s.resolve(&format!("127.0.0.1:5000/app@{manifest}")).unwrap(), rec.id);
    assert!(matches!(s.resolve(&format!("127.0.0.1:5000/zzz@{manifest}")), Err(ImageError::NotFound(_))));
    assert!(matches!(s.resolve("Bad Name"), Err(ImageError::NotFound(_))));
}

#[test]
fn gc_removes_only_unreferenced() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = Store::open_with_limits(t.path(), StoreLimits { stale_ingest_after: Duration::ZERO, ..Default::default() })
        .unwrap();
    let a = make_image(&s, 1, &[b"base", b"a"]);
    let b = make_image(&s, 2, &[b"base", b"b"]);
    let a_top_blob = s.layer_info(&a.layers[1]).unwrap().blob;
    let base_blob = s.layer_info(&a.layers[0]).unwrap().blob;
    // An unreferenced layer held by a lease (a pull in progress).
    let tar = tar_of(&[E::File("leased", b"x", 0o644)]);
    let lblob = s.write_blob(&tar).unwrap();
    let lease = s.lease([lblob.clone(), Digest::of(&tar)]);
    s.unpack_layer(&lblob, Compression::None, &Digest::of(&tar), None).unwrap();
    // A stale, unlocked partial download and an orphan blob.
    {
        let mut ing = s.begin_ingest(&Digest::of(b"partial"), None).unwrap();
        ing.write_all(b"par").unwrap();
    }
    let orphan = s.write_blob(b"orphan").unwrap();
    // A partial being written right now must survive.
    let mut live = s.begin_ingest(&Digest::of(b"live"), None).unwrap();
    live.write_all(b"li").unwrap();

    let st = s.gc().unwrap();
    assert_eq!((st.layers_removed, st.blobs_removed, st.ingests_removed), (0, 1, 1), "{st:?}");
    assert!(!s.has_blob(&orphan));
    assert!(s.has_layer(&Digest::of(&tar)) && s.has_blob(&lblob));
    live.write_all(b"ve").unwrap();
    live.commit().unwrap();
    assert!(s.has_blob(&Digest::of(b"live")));

    s.delete_image(&a.id).unwrap();
    drop(lease);
    let st = s.gc().unwrap();
    // a's top layer, the leased layer; blobs: a's config, a's top, leased blob, "live"
    assert_eq!((st.layers_removed, st.blobs_removed), (2, 4), "{st:?}");
    assert!(!s.has_layer(&a.layers[1]) && !s.has_blob(&a_top_blob) && !s.has_blob(&a.id));
    assert!(s.has_layer(&b.layers[0]) && s.has_layer(&b.layers[1]) && s.has_blob(&base_blob));
    assert!(s.has_blob(&b.id));
    let mut out = Vec::new();
    s.write_layer_tar(&b.layers[1], &mut out).unwrap();
    assert_eq!(Digest::of(&out), b.diff_ids[1]);
    assert_eq!(s.gc().unwrap(), GcStats::default());
    assert!(fs::read_dir(t.path().join("tmp")).unwrap().next().is_none());
}

#[test]
fn publish_image_stores_record_and_reference_together() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    let rec = make_image(&s, 7, &[b"one"]);
    s.delete_image(&rec.id).unwrap();
    let r = Reference::parse("127.0.0.1:5000/pub:1").unwrap();
    // Stored and tagged in one call; `make` sees no record the first time, the stored one after.
    let prev = s
        .publish_image(&rec.id, |now| {
            assert!(now.is_none());
            let mut x = rec.clone();
            x.repo_digests.push("127.0.0.1:5000/pub@sha256:aa".into());
            x
        }, Some(&r))
        .unwrap();
    assert_eq!(prev, None);
    assert_eq!(s.resolve("127.0.0.1:5000/pub:1").unwrap(), rec.id);
    s.publish_image(&rec.id, |now| {
        let now = now.expect("the stored record");
        assert_eq!(now.repo_digests.len(), 1);
        now.clone()
    }, None)
    .unwrap();
    // A record whose layer is missing is refused, and nothing is tagged.
    let mut bad = rec.clone();
    bad.id = s.write_blob(&config(8)).unwrap();
    bad.layers = vec![Digest::of(b"no such layer")];
    let r2 = Reference::parse("127.0.0.1:5000/pub:2").unwrap();
    assert!(matches!(s.publish_image(&bad.id.clone(), |_| bad, Some(&r2)), Err(ImageError::NotFound(_))));
    assert!(s.resolve("127.0.0.1:5000/pub:2").is_err());
    // Both survive a reopen.
    drop(s);
    let s = open(t.path());
    assert_eq!(s.resolve("127.0.0.1:5000/pub:1").unwrap(), rec.id);
    assert_eq!(s.get_image(&rec.id).unwrap().repo_digests.len(), 1);
}

#[test]
fn lease_waits_for_a_gc_under_way() {
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    let d = Digest::of(b"x");
    // Stand-in for a gc that is deleting: it holds the gc lock exclusively.
    let gc = s.gc_lock.write().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let lease = s.lease([d.clone()]);
            tx.send(()).unwrap();
            drop(lease);
        });
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "a lease was taken while gc ran");
        drop(gc);
        rx.recv_timeout(Duration::from_secs(5)).expect("the lease is taken once gc is done");
    });
    assert!(s.leases.lock().unwrap().is_empty());
}

#[test]
fn delete_if_unreferenced_keeps_an_image_tagged_meanwhile() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    let rec = make_image(&s, 11, &[b"kept"]);
    let r = Reference::parse("127.0.0.1:5000/kept:new").unwrap();
    // What a pull racing an rmi does between the rmi's untag and its delete.
    s.set_reference(&r, &rec.id).unwrap();
    assert!(!s.delete_image_if_unreferenced(&rec.id).unwrap());
    assert_eq!(s.get_image(&rec.id).unwrap(), rec);
    assert_eq!(s.resolve(&r.to_string()).unwrap(), rec.id);
    assert!(s.remove_reference(&r).unwrap());
    assert!(s.delete_image_if_unreferenced(&rec.id).unwrap());
    assert!(matches!(s.get_image(&rec.id), Err(ImageError::NotFound(_))));
    assert!(matches!(s.delete_image_if_unreferenced(&rec.id), Err(ImageError::NotFound(_))));
    drop(s);
    assert!(open(t.path()).list_images().unwrap().is_empty());
}
