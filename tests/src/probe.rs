//! Small hostile programs for the escape tests, compiled from C at test time with the system
//! `cc` (always there: rustc links with it), so no binary is committed:
//!
//! - `probe` (static): syscalls a default container must not get, the writer half of the
//!   CVE-2019-5736 exploit, and a TCP scan that recognises the Engine API (`probe.c`);
//! - `fake-ld` (static, no libc): a container-side ELF loader that grabs `/proc/self/exe`
//!   when the runtime binary is executed inside the container (`fake_ld.c`);
//! - `libnss_berthevil.so.2`: an NSS module whose constructor leaves a marker (`nss_evil.c`);
//! - `udp-echo` (static): a UDP echo server for the published-port tests (`udp_echo.c`).
//!
//! Busybox cannot make these calls, and a real exploit is the only honest way to show that the
//! protection holds (and that the test fails without it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{Error, IoContext, Result};

const PROBE_C: &str = include_str!("probe.c");
const FAKE_LD_C: &str = include_str!("fake_ld.c");
const NSS_EVIL_C: &str = include_str!("nss_evil.c");
const UDP_ECHO_C: &str = include_str!("udp_echo.c");

/// The compiled helpers (in a directory shared by every test process, one per source version).
#[derive(Debug)]
pub struct Probes {
    pub probe: PathBuf,
    pub fake_ld: PathBuf,
    pub nss_evil: PathBuf,
    pub udp_echo: PathBuf,
}

fn cc(dir: &Path, src_name: &str, src: &str, out: &str, flags: &[&str]) -> Result<PathBuf> {
    let src_path = dir.join(src_name);
    std::fs::write(&src_path, src).ctx(|| format!("write {}", src_path.display()))?;
    let out_path = dir.join(out);
    let o = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(&out_path)
        .arg(&src_path)
        .output()
        .ctx(|| "run cc (install gcc and libc6-dev)".into())?;
    if !o.status.success() {
        return Err(Error::Command {
            command: format!("cc {src_name}"),
            detail: String::from_utf8_lossy(&o.stderr).into_owned(),
        });
    }
    Ok(out_path)
}

fn build() -> Result<Probes> {
    // One directory per version of the sources, shared by every test process (and run): built
    // in a private temp dir, then renamed into place; a process that loses the race uses the
    // winner's. So nothing piles up in /tmp.
    let hash = crate::sha256_digest(format!("{PROBE_C}{FAKE_LD_C}{NSS_EVIL_C}{UDP_ECHO_C}").as_bytes());
    let dir = std::env::temp_dir().join(format!("berth-probes-{}", &hash["sha256:".len().."sha256:".len() + 16]));
    let probes = |d: &Path| Probes {
        probe: d.join("probe"),
        fake_ld: d.join("fake-ld"),
        nss_evil: d.join("libnss_berthevil.so.2"),
        udp_echo: d.join("udp-echo"),
    };
    let done = dir.join("done");
    if done.is_file() {
        return Ok(probes(&dir));
    }
    let tmp = tempfile::Builder::new()
        .prefix("berth-probes-build-")
        .tempdir()
        .ctx(|| "tempdir".into())?;
    let t = tmp.path();
    cc(t, "probe.c", PROBE_C, "probe", &["-O1", "-static"])?;
    cc(
        t,
        "fake_ld.c",
        FAKE_LD_C,
        "fake-ld",
        &["-O1", "-static", "-nostdlib", "-no-pie", "-fno-pic", "-fno-stack-protector", "-fcf-protection=none"],
    )?;
    cc(t, "nss_evil.c", NSS_EVIL_C, "libnss_berthevil.so.2", &["-O1", "-shared", "-fPIC"])?;
    cc(t, "udp_echo.c", UDP_ECHO_C, "udp-echo", &["-O1", "-static"])?;
    std::fs::write(t.join("done"), "").ctx(|| "write done".into())?;
    let tmp_path = tmp.keep();
    if std::fs::rename(&tmp_path, &dir).is_err() {
        // Another process got there first (or a stale half-built dir is in the way).
        let _ = std::fs::remove_dir_all(&tmp_path);
        if !done.is_file() {
            return Err(Error::Command { command: "build probes".into(), detail: format!("{} exists but is incomplete", dir.display()) });
        }
    }
    Ok(probes(&dir))
}

/// Build once per test process.
pub fn probes() -> Result<&'static Probes> {
    static P: OnceLock<std::result::Result<Probes, String>> = OnceLock::new();
    P.get_or_init(|| build().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Command { command: "build probes".into(), detail: e.clone() })
}

/// Bytes of a compiled helper.
pub fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).ctx(|| format!("read {}", p.display()))
}

/// The ELF interpreter (PT_INTERP) of a binary, None when it is static.
pub fn elf_interpreter(bin: &Path) -> Result<Option<String>> {
    let data = read(bin)?;
    let bad = || Error::Protocol(format!("{} is not a 64-bit ELF", bin.display()));
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return Err(bad());
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if ph + 56 > data.len() {
            return Err(bad());
        }
        if u32::from_le_bytes(data[ph..ph + 4].try_into().unwrap()) == 3 {
            let (off, size) = (u64_at(ph + 8), u64_at(ph + 32));
            let s = data.get(off..off + size).ok_or_else(bad)?;
            return Ok(Some(String::from_utf8_lossy(s).trim_end_matches('\0').to_string()));
        }
    }
    Ok(None)
}
