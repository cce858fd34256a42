//! The inverse of `unpack`: an overlayfs upper directory (a container's or a build step's
//! changes) as an image layer tar. Whiteout devices (char 0:0) become `.wh.<name>` entries,
//! opaque directories (`trusted.overlay.opaque=y`) get a `.wh..wh..opq` entry, hard links
//! inside the upper dir stay links, xattrs other than `trusted.overlay.*` are kept as PAX
//! records.
//!
//! The tar is deterministic: entries sorted by name, numeric ids only, no user/group names,
//! mtimes in whole seconds and no atime/ctime, so the same tree always gives the same
//! diff_id.
//!
//! With `skip_runtime_mountpoints`, what the OCI runtime itself creates in a container's upper
//! dir is left out (Docker keeps these in its separate "init" layer): the empty mount points
//! `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`, empty `/proc`, `/sys` and `/dev`, and an
//! `/etc` directory that is only there because of them.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

const MOUNTPOINT_FILES: &[&str] = &["etc/hostname", "etc/hosts", "etc/resolv.conf"];
const MOUNTPOINT_DIRS: &[&str] = &["proc", "sys", "dev"];

/// What `write_diff` produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffStats {
    /// Tar entries written (0: nothing changed, the step needs no layer).
    pub entries: u64,
    /// Sum of regular file sizes.
    pub size: u64,
}

struct Entry {
    rel: String,
    meta: fs::Metadata,
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn collect(root: &Path, rel: &str, out: &mut Vec<Entry>) -> io::Result<()> {
    let dir = if rel.is_empty() { root.to_path_buf() } else { root.join(rel) };
    let mut names: Vec<_> = fs::read_dir(&dir)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
    names.sort();
    for n in names {
        let name = n.to_string_lossy().into_owned();
        let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let meta = fs::symlink_metadata(root.join(&r))?;
        let is_dir = meta.is_dir();
        out.push(Entry { rel: r.clone(), meta });
        if is_dir {
            collect(root, &r, out)?;
        }
    }
    Ok(())
}

fn in_lower(lowers: &[PathBuf], rel: &str) -> Option<fs::Metadata> {
    for l in lowers {
        if let Ok(m) = fs::symlink_metadata(l.join(rel)) {
            return if is_whiteout(&m) { None } else { Some(m) };
        }
    }
    None
}

fn filter_mountpoints(upper: &Path, entries: Vec<Entry>, lowers: &[PathBuf]) -> Vec<Entry> {
    let mut keep: Vec<Entry> = entries
        .into_iter()
        .filter(|e| {
            let empty_file = e.meta.is_file() && e.meta.len() == 0;
            !(MOUNTPOINT_FILES.contains(&e.rel.as_str()) && empty_file)
        })
        .collect();
    let has_children = |keep: &[Entry], dir: &str| keep.iter().any(|e| e.rel.starts_with(&format!("{dir}/")));
    let mut drop_dirs: Vec<String> = Vec::new();
    for d in MOUNTPOINT_DIRS {
        if keep.iter().any(|e| e.rel == *d && e.meta.is_dir()) && !has_children(&keep, d) {
            drop_dirs.push(d.to_string());
        }
    }
    if let Some(etc) = keep.iter().find(|e| e.rel == "etc" && e.meta.is_dir()) {
        let opaque = xattr::get(upper.join("etc"), "trusted.overlay.opaque").ok().flatten().is_some();
        let same_as_lower = match in_lower(lowers, "etc") {
            Some(l) => l.is_dir() && l.mode() == etc.meta.mode() && l.uid() == etc.meta.uid() && l.gid() == etc.meta.gid(),
            None => true,
        };
        if !opaque && same_as_lower && !has_children(&keep, "etc") {
            drop_dirs.push("etc".into());
        }
    }
    keep.retain(|e| !drop_dirs.contains(&e.rel));
    keep
}

fn header(kind: tar::EntryType, m: &fs::Metadata, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(m.mode() & 0o7777);
    h.set_uid(m.uid() as u64);
    h.set_gid(m.gid() as u64);
    h.set_mtime(m.mtime().max(0) as u64);
    h.set_size(size);
    h
}

fn xattrs_of(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(e),
    };
    for n in names {
        let name = n.to_string_lossy().into_owned();
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        if let Some(v) = xattr::get(path, &n)? {
            out.push((name, v));
        }
    }
    out.sort();
    Ok(out)
}

/// Write the layer tar of `upper` (with `lowers`, top first, for the mount-point rule) to `w`.
pub fn write_diff<W: Write>(upper: &Path, lowers: &[PathBuf], skip_runtime_mountpoints: bool, w: W) -> io::Result<(W, DiffStats)> {
    let mut entries = Vec::new();
    collect(upper, "", &mut entries)?;
    if skip_runtime_mountpoints {
        entries = filter_mountpoints(upper, entries, lowers);
    }
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    let mut stats = DiffStats { entries: 0, size: 0 };
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    for e in &entries {
        let path = upper.join(&e.rel);
        let m = &e.meta;
        if is_whiteout(m) {
            let (dir, name) = match e.rel.rsplit_once('/') {
                Some((d, n)) => (format!("{d}/"), n),
                None => (String::new(), e.rel.as_str()),
            };
            let mut h = header(tar::EntryType::Regular, m, 0);
            h.set_mode(0);
            b.append_data(&mut h, format!("{dir}.wh.{name}"), io::empty())?;
            stats.entries += 1;
            continue;
        }
        let ft = m.file_type();
        if ft.is_socket() {
            continue;
        }
        let xattrs = xattrs_of(&path)?;
        if !xattrs.is_empty() {
            let pax: Vec<(String, Vec<u8>)> = xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone())).collect();
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        if ft.is_dir() {
            let mut h = header(tar::EntryType::Directory, m, 0);
            b.append_data(&mut h, format!("{}/", e.rel), io::empty())?;
            stats.entries += 1;
            if xattr::get(&path, "trusted.overlay.opaque")?.as_deref() == Some(b"y") {
                let mut h = header(tar::EntryType::Regular, m, 0);
                h.set_mode(0);
                b.append_data(&mut h, format!("{}/.wh..wh..opq", e.rel), io::empty())?;
                stats.entries += 1;
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(&path)?;
            let mut h = header(tar::EntryType::Symlink, m, 0);
            b.append_link(&mut h, &e.rel, &target)?;
            stats.entries += 1;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                let key = (m.dev(), m.ino());
                if let Some(first) = links.get(&key) {
                    let mut h = header(tar::EntryType::Link, m, 0);
                    b.append_link(&mut h, &e.rel, first)?;
                    stats.entries += 1;
                    continue;
                }
                links.insert(key, e.rel.clone());
            }
            let f = fs::File::open(&path)?;
            let mut h = header(tar::EntryType::Regular, m, m.len());
            b.append_data(&mut h, &e.rel, f)?;
            stats.entries += 1;
            stats.size += m.len();
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            };
            let mut h = header(kind, m, 0);
            let dev = m.rdev();
            h.set_device_major(libc::major(dev))?;
            h.set_device_minor(libc::minor(dev))?;
            b.append_data(&mut h, &e.rel, io::empty())?;
            stats.entries += 1;
        }
    }
    let w = b.into_inner()?;
    Ok((w, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(tar: &[u8]) -> Vec<(String, tar::EntryType)> {
        let mut a = tar::Archive::new(tar);
        a.entries().unwrap().map(|e| {
            let e = e.unwrap();
            (e.path().unwrap().to_string_lossy().into_owned(), e.header().entry_type())
        }).collect()
    }

    #[test]
    fn upper_dir_to_layer_and_back() {
        let t = tempfile::tempdir().unwrap();
        let upper = t.path().join("upper");
        let lower = t.path().join("lower");
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::create_dir_all(upper.join("app/opq")).unwrap();
        fs::create_dir_all(upper.join("proc")).unwrap();
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::write(upper.join("etc/hosts"), "").unwrap();
        fs::write(upper.join("app/f"), "data").unwrap();
        fs::hard_link(upper.join("app/f"), upper.join("app/g")).unwrap();
        std::os::unix::fs::symlink("f", upper.join("app/link")).unwrap();
        nix::sys::stat::mknod(&upper.join("app/gone"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0).unwrap();
        let root = nix::unistd::geteuid().is_root();
        if root {
            xattr::set(upper.join("app/opq"), "trusted.overlay.opaque", b"y").unwrap();
        }
        let (tar, st) = write_diff(&upper, &[lower.clone()], true, Vec::new()).unwrap();
        let names = listing(&tar);
        let ns: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
        let mut want = vec!["app/", "app/f", "app/g", "app/.wh.gone", "app/link", "app/opq/"];
        if root {
            want.push("app/opq/.wh..wh..opq");
        }
        assert_eq!(ns, want);
        assert_eq!(names[2].1, tar::EntryType::Link);
        assert_eq!(st.size, 4);
        // Deterministic: the same tree gives the same bytes.
        let (tar2, _) = write_diff(&upper, &[lower.clone()], true, Vec::new()).unwrap();
        assert_eq!(tar, tar2);
        // Without the mount-point rule the runtime's files are kept.
        let (tar3, _) = write_diff(&upper, &[lower], false, Vec::new()).unwrap();
        let all: Vec<String> = listing(&tar3).into_iter().map(|(n, _)| n).collect();
        assert!(all.contains(&"etc/hosts".to_string()) && all.contains(&"proc/".to_string()));
        // And it unpacks with the store's safe unpacker to the same tree.
        let out = t.path().join("out");
        fs::create_dir(&out).unwrap();
        let lim = crate::unpack::UnpackLimits { max_bytes: 1 << 20, max_entries: 100 };
        crate::unpack::unpack_tar(&tar[..], &out, lim).unwrap();
        assert_eq!(fs::read(out.join("app/g")).unwrap(), b"data");
        assert!(is_whiteout(&fs::symlink_metadata(out.join("app/gone")).unwrap()));
        // Nothing changed: no entries.
        let empty = t.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert_eq!(write_diff(&empty, &[], true, Vec::new()).unwrap().1.entries, 0);
    }
}
