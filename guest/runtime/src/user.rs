//! Resolves Docker's `User` string against the image's /etc/passwd and
//! /etc/group.
//!
//! The files belong to an untrusted image, and berthd runs as host root, so
//! they are opened component by component under the rootfs with O_NOFOLLOW:
//! a symlinked /etc or /etc/passwd (e.g. pointing at the host's /etc/shadow)
//! is refused instead of followed, and only regular files are read (a FIFO
//! would hang the daemon). Hand-written because the libc getpw* functions
//! read the host's files, and no crate offers a rooted, no-follow lookup.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};

use crate::spec::UserSpec;

/// Refuse absurdly large account files rather than read them into memory.
const MAX_FILE: u64 = 8 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    #[error("invalid user or group id {0:?}")]
    BadId(String),
    #[error("refusing to read {0}: it is a symlink or not a regular file inside the rootfs")]
    Unsafe(String),
    #[error("reading {0}: {1}")]
    Io(String, String),
}

/// The result of a lookup: ids for the spec plus the account's home for $HOME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub user: UserSpec,
    pub home: String,
}

#[derive(Debug, Clone)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug, Clone)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Reads `rel` (like "etc/passwd") under `rootfs` without following any
/// symlink. `Ok(None)` when a component does not exist (Docker treats a
/// missing passwd file as empty).
pub fn read_rooted(rootfs: &Path, rel: &str) -> Result<Option<String>, UserError> {
    let shown = format!("/{rel}");
    let io = |e: nix::Error| UserError::Io(shown.clone(), e.desc().to_string());
    let root: OwnedFd = File::open(rootfs)
        .map_err(|e| UserError::Io(rootfs.display().to_string(), e.to_string()))?
        .into();
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    let mut dir = root;
    for (i, part) in parts.iter().enumerate() {
        if *part == ".." || *part == "." {
            return Err(UserError::Unsafe(shown));
        }
        let last = i + 1 == parts.len();
        let flags = OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NONBLOCK
            | if last {
                OFlag::O_RDONLY
            } else {
                OFlag::O_DIRECTORY | OFlag::O_PATH
            };
        let fd = match openat(
            Some(std::os::fd::AsRawFd::as_raw_fd(&dir)),
            *part,
            flags,
            Mode::empty(),
        ) {
            Ok(fd) => unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) },
            Err(nix::Error::ENOENT) => return Ok(None),
            // ELOOP: the component is a symlink; ENOTDIR: a symlink or file where a dir should be.
            Err(nix::Error::ELOOP) | Err(nix::Error::ENOTDIR) => {
                return Err(UserError::Unsafe(shown))
            }
            Err(e) => return Err(io(e)),
        };
        dir = fd;
    }
    let st = fstat(std::os::fd::AsRawFd::as_raw_fd(&dir.as_fd())).map_err(io)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(UserError::Unsafe(shown));
    }
    if st.st_size as u64 > MAX_FILE {
        return Err(UserError::Io(shown, "file too large".into()));
    }
    let mut s = String::new();
    File::from(dir)
        .take(MAX_FILE)
        .read_to_string(&mut s)
        .map_err(|e| UserError::Io(shown, e.to_string()))?;
    Ok(Some(s))
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|x| !x.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn numeric(s: &str) -> Option<Result<u32, UserError>> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        Some(
            s.parse::<u32>()
                .map_err(|_| UserError::BadId(s.to_string())),
        )
    } else {
        None
    }
}

fn find_group(groups: &[GroupEntry], g: &str) -> Result<u32, UserError> {
    match numeric(g) {
        Some(id) => id,
        None => groups
            .iter()
            .find(|e| e.name == g)
            .map(|e| e.gid)
            .ok_or_else(|| UserError::NoGroup(g.to_string())),
    }
}

/// Resolves `user_arg` ("", "name", "uid", "name:group", "uid:gid") and the
/// `--group-add` entries against the rootfs, with Docker's rules: an unknown
/// name is an error, an unknown numeric uid is fine (gid 0); with no explicit
/// group the account's primary gid applies plus every /etc/group entry listing
/// the user as a member.
pub fn resolve(
    rootfs: &Path,
    user_arg: &str,
    group_add: &[String],
) -> Result<ResolvedUser, UserError> {
    let passwd = parse_passwd(&read_rooted(rootfs, "etc/passwd")?.unwrap_or_default());
    let groups = parse_group(&read_rooted(rootfs, "etc/group")?.unwrap_or_default());
    let (u, g) = match user_arg.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user_arg, None),
    };
    let entry = match (u, numeric(u)) {
        ("", _) => passwd.iter().find(|e| e.uid == 0).cloned(),
        (_, Some(id)) => {
            let id = id?;
            passwd.iter().find(|e| e.uid == id).cloned()
        }
        (name, None) => Some(
            passwd
                .iter()
                .find(|e| e.name == name)
                .cloned()
                .ok_or_else(|| UserError::NoUser(name.to_string()))?,
        ),
    };
    let uid = match (&entry, numeric(u)) {
        (_, Some(id)) => id?,
        (Some(e), None) => e.uid,
        (None, None) => 0,
    };
    let home = entry
        .as_ref()
        .map(|e| e.home.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into());
    let mut additional = Vec::new();
    let gid = match g.filter(|g| !g.is_empty()) {
        Some(g) => find_group(&groups, g)?,
        None => {
            if let Some(e) = &entry {
                for grp in &groups {
                    if grp.members.contains(&e.name)
                        && grp.gid != e.gid
                        && !additional.contains(&grp.gid)
                    {
                        additional.push(grp.gid);
                    }
                }
            }
            entry.as_ref().map(|e| e.gid).unwrap_or(0)
        }
    };
    for ga in group_add {
        let id = find_group(&groups, ga)?;
        if !additional.contains(&id) {
            additional.push(id);
        }
    }
    Ok(ResolvedUser {
        user: UserSpec {
            uid,
            gid,
            additional_gids: additional,
        },
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n\
             # comment\n\
             nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
             app:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nwheel:x:10:app,root\naudio:x:29:app\napp:x:1000:\nnogroup:x:65534:\n",
        )
        .unwrap();
        d
    }

    fn u(uid: u32, gid: u32, extra: &[u32]) -> UserSpec {
        UserSpec {
            uid,
            gid,
            additional_gids: extra.to_vec(),
        }
    }

    #[test]
    fn table() {
        let d = rootfs();
        let cases: &[(&str, &[&str], Result<UserSpec, UserError>)] = &[
            ("", &[], Ok(u(0, 0, &[10]))),
            ("root", &[], Ok(u(0, 0, &[10]))),
            ("app", &[], Ok(u(1000, 1000, &[10, 29]))),
            ("1000", &[], Ok(u(1000, 1000, &[10, 29]))),
            ("4242", &[], Ok(u(4242, 0, &[]))),
            ("app:nogroup", &[], Ok(u(1000, 65534, &[]))),
            ("1000:77", &[], Ok(u(1000, 77, &[]))),
            ("nobody", &["audio", "123"], Ok(u(65534, 65534, &[29, 123]))),
            ("ghost", &[], Err(UserError::NoUser("ghost".into()))),
            ("app:ghosts", &[], Err(UserError::NoGroup("ghosts".into()))),
            ("app", &["ghosts"], Err(UserError::NoGroup("ghosts".into()))),
            (
                "99999999999",
                &[],
                Err(UserError::BadId("99999999999".into())),
            ),
        ];
        for (arg, adds, want) in cases {
            let adds: Vec<String> = adds.iter().map(|s| s.to_string()).collect();
            let got = resolve(d.path(), arg, &adds).map(|r| r.user);
            assert_eq!(&got, want, "user {arg:?}");
        }
        assert_eq!(resolve(d.path(), "app", &[]).unwrap().home, "/home/app");
        assert_eq!(resolve(d.path(), "4242", &[]).unwrap().home, "/");
    }

    #[test]
    fn missing_files_allow_numeric_only() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(resolve(d.path(), "5:6", &[]).unwrap().user, u(5, 6, &[]));
        assert_eq!(resolve(d.path(), "", &[]).unwrap().user, u(0, 0, &[]));
        assert_eq!(
            resolve(d.path(), "app", &[]),
            Err(UserError::NoUser("app".into()))
        );
    }

    #[test]
    fn symlinked_passwd_is_refused() {
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("secret"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(host.path().join("secret"), d.path().join("etc/passwd"))
            .unwrap();
        assert_eq!(
            resolve(d.path(), "evil", &[]),
            Err(UserError::Unsafe("/etc/passwd".into()))
        );
    }

    #[test]
    fn symlinked_etc_is_refused() {
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(host.path(), d.path().join("etc")).unwrap();
        assert_eq!(
            resolve(d.path(), "evil", &[]),
            Err(UserError::Unsafe("/etc/passwd".into()))
        );
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        nix::unistd::mkfifo(
            &d.path().join("etc/passwd"),
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert_eq!(
            resolve(d.path(), "x", &[]),
            Err(UserError::Unsafe("/etc/passwd".into()))
        );
    }
}
