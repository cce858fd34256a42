//! The Berth VM group's subjects: berthd in the Berth VM reached through the host agent, a
//! bare kernel boot (the floor of any VM start), and the same berthd binary natively (the
//! floor of anything that goes through the VM).
//!
//! - [`BerthVm`]: the real `berth` CLI with a temporary `BERTH_HOME`, so `berth up --vm`
//!   starts the real agent, vhost-device-vsock and QEMU; docker commands go to the agent's
//!   forwarded socket.
//! - [`BareBoot`]: QEMU with the agent's own command line ([`berth_agent::backend::qemu::qemu_args`]:
//!   same machine type, accelerator, CPU model, vCPUs, memory, kernel and kernel command line),
//!   minus the devices a bare busybox `/init` does not use (disk, vsock, QMP), booting
//!   `bare-busybox.cpio` from `vm-images/build` until its init prints its line.
//! - the native subject: a [`Peer`] running the static berthd that `vm-images/build` put into
//!   the VM image, so VM against native compares the same binary and runtime.
//!
//! Each runs in a loopback-only network namespace of its own (QEMU has no network device at
//! all; the VM's egress goes through the agent, which can reach only that namespace's
//! loopback, where the bench's registry listens).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use berth_agent::api::{Accel, Status};
use berth_agent::backend::{platform, qemu};
use berth_tests::netns::{command_in, NetNs};

use crate::error::{Error, IoContext, Result};
use crate::exec::{checked, describe, run_timed, Out, Timed};
use crate::peers::{Peer, CLIENT_ENV, CLI_TIMEOUT};
use crate::procs;
use crate::scenario::Subject;

/// Column names in the VM group.
pub const VM: &str = "berth-vm";
pub const BARE: &str = "bare-init";
pub const NATIVE: &str = "native";

/// The VM's size, the same for the Berth VM and the bare boot.
pub const VM_CPUS: u32 = 2;
pub const VM_MEMORY_MIB: u32 = 1024;
pub const VM_DISK_GIB: u32 = 8;

/// What the bare busybox `/init` prints once it runs (vm-images/build writes it).
pub const BARE_INIT_LINE: &str = "bare-init: stage=init-up";

/// One `berth up` may take this long (TCG on a loaded 2-core machine is slow).
const BERTH_TIMEOUT: Duration = Duration::from_secs(400);
/// A bare boot that has not reached its init by then failed.
const BARE_TIMEOUT: Duration = Duration::from_secs(180);

/// Where the VM group's programs and image are.
#[derive(Debug, Clone)]
pub struct VmPaths {
    /// The `berth` CLI (host agent).
    pub berth: PathBuf,
    /// `vm-images/out`: vmlinux, initramfs.cpio, system.img, bare-busybox.cpio.
    pub images: PathBuf,
    /// The berthd the image was built with (static, vm-images/build), run natively.
    pub native_berthd: PathBuf,
    pub qemu: Option<PathBuf>,
    pub qemu_img: Option<PathBuf>,
    pub vhost_vsock: Option<PathBuf>,
    pub accel: Accel,
}

impl VmPaths {
    pub fn kernel(&self) -> PathBuf {
        self.images.join("vmlinux")
    }
    pub fn initramfs(&self) -> PathBuf {
        self.images.join("initramfs.cpio")
    }
    pub fn system(&self) -> PathBuf {
        self.images.join("system.img")
    }
    pub fn bare_initramfs(&self) -> PathBuf {
        self.images.join("bare-busybox.cpio")
    }

    /// Why the VM scenarios cannot run here, if they cannot: the first missing piece, with
    /// how to get it.
    pub fn missing(&self) -> Option<String> {
        if self.qemu.is_none() {
            return Some(
                "QEMU is not installed (Debian: apt-get install qemu-system-x86 qemu-utils)".into(),
            );
        }
        if self.qemu_img.is_none() {
            return Some("qemu-img is not installed (Debian: apt-get install qemu-utils)".into());
        }
        if self.vhost_vsock.is_none() && !platform::host_vsock() {
            return Some(
                "vhost-device-vsock is not installed and /dev/vhost-vsock is missing \
                 (cargo install --locked vhost-device-vsock)"
                    .into(),
            );
        }
        for f in [self.kernel(), self.initramfs(), self.system(), self.bare_initramfs()] {
            if !f.is_file() {
                return Some(format!(
                    "the VM image is not built ({} is missing: run ./vm-images/build)",
                    f.display()
                ));
            }
        }
        if !self.native_berthd.is_file() {
            return Some(format!(
                "{} (the VM image's own berthd, built by ./vm-images/build) is missing",
                self.native_berthd.display()
            ));
        }
        if !self.berth.is_file() {
            return Some(format!(
                "{} is not built (cargo build --release -p berth-cli, or --berth PATH)",
                self.berth.display()
            ));
        }
        None
    }
}

/// `name` on PATH, else in ~/.cargo/bin.
pub fn find_program(name: &str) -> Option<PathBuf> {
    crate::runtimes::find_on_path(name).ok().or_else(|| {
        let p = PathBuf::from(std::env::var_os("HOME")?)
            .join(".cargo/bin")
            .join(name);
        p.is_file().then_some(p)
    })
}

/// The QEMU command line of the bare boot: the agent's own (see module doc) with only the
/// options that make the machine and boot it kept; every device, the QMP socket and the
/// pid file dropped. An allowlist, so a device the agent adds later is dropped too.
pub fn bare_qemu_args(agent_args: &[String]) -> Vec<String> {
    const FLAGS: [&str; 4] = ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"];
    const WITH_VALUE: [&str; 11] = [
        "-name", "-machine", "-accel", "-cpu", "-smp", "-m", "-object", "-kernel", "-initrd",
        "-append", "-serial",
    ];
    let mut out = Vec::new();
    let mut i = 0;
    while i < agent_args.len() {
        let flag = agent_args[i].as_str();
        let value = agent_args
            .get(i + 1)
            .filter(|v| !v.starts_with('-'))
            .cloned();
        i += 1 + value.is_some() as usize;
        // The agent's console chardev (`id=con`, a file QEMU writes) becomes stdio: the bare
        // boot reads QEMU's stdout. Socket chardevs belong to vsock devices.
        if flag == "-chardev" && value.as_deref().map(|v| v.contains("id=con,") || v.ends_with("id=con")).unwrap_or(false) {
            out.extend(["-chardev".to_string(), "stdio,id=con,signal=off".to_string()]);
            continue;
        }
        let keep = match (&value, flag) {
            (None, f) => FLAGS.contains(&f),
            (Some(_), f) => WITH_VALUE.contains(&f),
        };
        if keep {
            out.push(flag.to_string());
            out.extend(value);
        }
    }
    out
}

/// The agent's QEMU configuration for this machine with `initramfs` (placeholder paths for
/// the devices [`bare_qemu_args`] drops).
pub fn agent_config(paths: &VmPaths, initramfs: PathBuf) -> qemu::QemuConfig {
    qemu::QemuConfig {
        accel: paths.accel,
        cpus: VM_CPUS,
        memory_mib: VM_MEMORY_MIB,
        kernel: paths.kernel(),
        initramfs,
        system: "/dev/null".into(),
        disk: "/dev/null".into(),
        qmp: "/dev/null".into(),
        console: "/dev/null".into(),
        vhost_user_vsock: Some("/dev/null".into()),
        shares: Vec::new(),
        tsc_khz: platform::tsc_khz(),
        kernel_hz: qemu::manifest_hz(&paths.images),
        cpu: platform::cpu_model(paths.accel),
    }
}

/// The guest uptime (seconds) on the bare init's line, when `line` is that line.
pub fn parse_bare_line(line: &str) -> Option<Option<f64>> {
    let i = line.find(BARE_INIT_LINE)?;
    let rest = &line[i + BARE_INIT_LINE.len()..];
    Some(
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix("uptime="))
            .and_then(|u| u.parse().ok()),
    )
}

/// Kill every process left in the network namespace with inode `ino` (by construction only
/// what the bench started there), and wait until they are gone.
fn kill_all_in_netns(ino: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut left = procs::pids_in_ns("net", ino);
        left.retain(|p| *p != std::process::id());
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("{what}: processes still alive after SIGKILL: {left:?}");
            return;
        }
        for p in &left {
            eprintln!("{what}: killing leftover {p} ({})", procs::comm(*p));
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// berthd in the Berth VM, driven by the `berth` CLI and reached on the forwarded socket.
pub struct BerthVm {
    pub ns: NetNs,
    home: tempfile::TempDir,
    paths: VmPaths,
    cli: PathBuf,
    running: Mutex<bool>,
    formatted: Mutex<bool>,
}

/// One `berth up --vm` to the first answered `docker version`.
#[derive(Debug)]
pub struct Boot {
    pub elapsed: Duration,
    /// The agent's status right after (stages with timestamps, accelerator).
    pub status: Option<Status>,
}

impl BerthVm {
    pub fn new(paths: &VmPaths, cli: &Path) -> Result<BerthVm> {
        let ns = NetNs::new()?;
        let home = tempfile::Builder::new()
            .prefix("berth-bench-vm-")
            .tempdir()
            .ctx(|| "VM home".into())?;
        std::fs::create_dir(home.path().join("docker-config"))
            .ctx(|| "mkdir docker-config".into())?;
        Ok(BerthVm {
            ns,
            home,
            paths: paths.clone(),
            cli: cli.to_path_buf(),
            running: Mutex::new(false),
            formatted: Mutex::new(false),
        })
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.home().join("run/docker.sock")
    }

    fn env(&self, cmd: &mut Command) {
        let mut path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(dir) = self.paths.vhost_vsock.as_ref().and_then(|p| p.parent()) {
            let mut p = std::ffi::OsString::from(dir);
            p.push(":");
            p.push(&path);
            path = p;
        }
        for var in CLIENT_ENV.iter().chain(&["DOCKER_HOST"]) {
            cmd.env_remove(var);
        }
        cmd.env("BERTH_HOME", self.home())
            .env("BERTH_ACCEL", self.paths.accel.as_str())
            .env("BERTH_VM_IMAGES", &self.paths.images)
            .env("PATH", path)
            .env("DOCKER_CONFIG", self.home().join("docker-config"));
    }

    /// `berth <args>` in the namespace, failing on a non-zero exit with what it printed (a
    /// failed `berth up` explains itself on stdout) and the console tail.
    pub fn berth(&self, args: &[&str]) -> Result<Timed> {
        let mut cmd = command_in(&self.ns.path(), &self.paths.berth);
        self.env(&mut cmd);
        cmd.args(args);
        let command = describe(&cmd);
        let t = run_timed(cmd, Out::Capture, BERTH_TIMEOUT)?;
        if !t.status.success() {
            return Err(Error::Command {
                command,
                status: t.status,
                stderr: format!(
                    "{}\n{}\nVM console tail:\n{}",
                    t.stdout_text().trim(),
                    String::from_utf8_lossy(&t.stderr).trim(),
                    self.console_tail(8)
                ),
            });
        }
        Ok(t)
    }

    pub fn console_tail(&self, n: usize) -> String {
        berth_tests::berthd::tail(
            &std::fs::read_to_string(self.home().join("vm/console.log")).unwrap_or_default(),
            n,
        )
    }

    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut cmd = command_in(&self.ns.path(), &self.cli);
        self.env(&mut cmd);
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .args(args);
        cmd
    }

    pub fn docker_timed(&self, args: &[&str], out: Out) -> Result<Timed> {
        checked(self.docker_command(args), out, CLI_TIMEOUT)
    }

    /// The first boot creates and formats the data disk with the bench's VM size: untimed,
    /// once.
    fn first_boot(&self) -> Result<()> {
        let mut formatted = self.formatted.lock().unwrap_or_else(|e| e.into_inner());
        if *formatted {
            return Ok(());
        }
        let (cpus, mem, disk) = (
            VM_CPUS.to_string(),
            VM_MEMORY_MIB.to_string(),
            VM_DISK_GIB.to_string(),
        );
        self.berth(&[
            "up", "--vm", "--cpus", &cpus, "--memory", &mem, "--disk", &disk,
        ])?;
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = true;
        *formatted = true;
        Ok(())
    }

    /// Timed: `berth up --vm` (agent, vhost-device-vsock, QEMU, guest init, berthd, the
    /// forwarded socket) until `docker version` answers through the socket. Untimed after:
    /// the agent's status, checked to have used the bench's accelerator.
    pub fn boot(&self) -> Result<Boot> {
        self.first_boot()?;
        self.down()?;
        let start = Instant::now();
        self.berth(&["up", "--vm"])?;
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = true;
        let deadline = start + Duration::from_secs(120);
        loop {
            let mut cmd = self.docker_command(&["version"]);
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            if cmd.status().map(|s| s.success()).unwrap_or(false) {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Unexpected(format!(
                    "`berth up --vm` returned but `docker version` got no answer within 120 s; \
                     console:\n{}",
                    self.console_tail(8)
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let elapsed = start.elapsed();
        let status: Option<Status> = self
            .berth(&["status", "--json"])
            .ok()
            .and_then(|t| serde_json::from_slice(&t.stdout).ok());
        if let Some(a) = status.as_ref().and_then(|s| s.accel) {
            if a != self.paths.accel {
                return Err(Error::Unexpected(format!(
                    "the agent booted with -accel {} instead of {}",
                    a.as_str(),
                    self.paths.accel.as_str()
                )));
            }
        }
        Ok(Boot { elapsed, status })
    }

    /// Untimed: the VM running (booted once if it is not).
    pub fn ensure_up(&self) -> Result<()> {
        self.first_boot()?;
        if *self.running.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(());
        }
        self.berth(&["up", "--vm"])?;
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = true;
        Ok(())
    }

    /// `berth down` (the VM and the agent), if it runs.
    pub fn down(&self) -> Result<()> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if *running {
            self.berth(&["down"])?;
            *running = false;
        }
        Ok(())
    }

    /// Stop everything: `berth down`, then whatever is left in the VM's namespace.
    pub fn shutdown(&self) {
        if let Err(e) = self.down() {
            eprintln!("{VM}: berth down: {e}");
        }
        if let Some(ino) = procs::ns_inode(&self.ns.path()) {
            kill_all_in_netns(ino, VM);
        }
    }
}

impl Drop for BerthVm {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A bare busybox `/init` on the VM's kernel and QEMU command line.
pub struct BareBoot {
    pub ns: NetNs,
    qemu: PathBuf,
    args: Vec<String>,
}

/// One bare boot: QEMU start to the init's line.
#[derive(Debug)]
pub struct BareSample {
    pub elapsed: Duration,
    pub guest_uptime_s: Option<f64>,
}

impl BareBoot {
    pub fn new(paths: &VmPaths) -> Result<BareBoot> {
        let qemu = paths
            .qemu
            .clone()
            .ok_or_else(|| Error::Usage("QEMU is not installed".into()))?;
        let cfg = agent_config(paths, paths.bare_initramfs());
        Ok(BareBoot {
            ns: NetNs::new()?,
            qemu,
            args: bare_qemu_args(&qemu::qemu_args(&cfg)),
        })
    }

    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Timed from spawn to the init's console line; then QEMU exits (the init powers off
    /// and QEMU runs with -no-reboot), untimed, or is killed.
    pub fn boot(&self) -> Result<BareSample> {
        let mut cmd = command_in(&self.ns.path(), &self.qemu);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (tx, rx) = mpsc::channel::<(Instant, Option<f64>)>();
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .ctx(|| format!("spawn {}", self.qemu.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut tail = Vec::new();
            for line in BufReader::new(stdout).split(b'\n').map_while(|l| l.ok()) {
                let line = String::from_utf8_lossy(&line).into_owned();
                if let Some(up) = parse_bare_line(&line) {
                    let _ = tx.send((Instant::now(), up));
                }
                tail.push(line);
                if tail.len() > 20 {
                    tail.remove(0);
                }
            }
            tail
        });
        let errs = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let got = rx.recv_timeout(BARE_TIMEOUT);
        // QEMU exits by itself after the init's `reboot -f`; kill it if it does not.
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline || got.is_err() {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let tail = reader.join().unwrap_or_default();
        let errs = errs.join().unwrap_or_default();
        match got {
            Ok((at, guest_uptime_s)) => Ok(BareSample {
                elapsed: at - start,
                guest_uptime_s,
            }),
            Err(_) => Err(Error::Unexpected(format!(
                "no `{BARE_INIT_LINE}` line within {} s; console tail:\n{}\n{}",
                BARE_TIMEOUT.as_secs(),
                tail.join("\n"),
                errs.trim()
            ))),
        }
    }
}

impl Drop for BareBoot {
    fn drop(&mut self) {
        if let Some(ino) = procs::ns_inode(&self.ns.path()) {
            kill_all_in_netns(ino, BARE);
        }
    }
}

/// One column of the VM group.
pub enum VmSubject {
    Vm(BerthVm),
    Bare(BareBoot),
    Native(Peer),
}

impl Subject for VmSubject {
    fn name(&self) -> &str {
        match self {
            VmSubject::Vm(_) => VM,
            VmSubject::Bare(_) => BARE,
            VmSubject::Native(_) => NATIVE,
        }
    }
}

impl VmSubject {
    /// The docker socket of an engine subject (`None`: a bare kernel has no engine).
    pub fn socket(&self) -> Option<PathBuf> {
        match self {
            VmSubject::Vm(v) => Some(v.socket()),
            VmSubject::Native(p) => Some(p.socket()),
            VmSubject::Bare(_) => None,
        }
    }

    /// Untimed: the engine ready to take docker commands.
    pub fn engine_ready(&self) -> Result<()> {
        match self {
            VmSubject::Vm(v) => v.ensure_up(),
            VmSubject::Native(p) => p.start(),
            VmSubject::Bare(_) => Err(Error::Usage(format!("{BARE} has no engine"))),
        }
    }

    pub fn docker_timed(&self, args: &[&str], out: Out) -> Result<Timed> {
        match self {
            VmSubject::Vm(v) => v.docker_timed(args, out),
            VmSubject::Native(p) => p.docker_timed(args, out),
            VmSubject::Bare(_) => Err(Error::Usage(format!("{BARE} has no engine"))),
        }
    }

    pub fn docker(&self, args: &[&str]) -> Result<String> {
        Ok(self.docker_timed(args, Out::Capture)?.stdout_text())
    }
}

/// Read one HTTP/1.1 response (status line, headers, a Content-Length or chunked body):
/// (status, body). Hand-written because the ping scenario times many requests on one
/// kept-alive connection from this thread, with nothing between the socket and the clock.
pub fn read_response(r: &mut impl BufRead) -> Result<(u16, Vec<u8>)> {
    let bad = |what: &str| Error::Unexpected(format!("HTTP response: {what}"));
    let mut line = String::new();
    let read_line = |r: &mut dyn BufRead, line: &mut String| -> Result<()> {
        line.clear();
        if r.read_line(line).ctx(|| "read HTTP response".into())? == 0 {
            return Err(bad("connection closed"));
        }
        Ok(())
    };
    read_line(r, &mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .filter(|_| line.starts_with("HTTP/1."))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {line:?}")))?;
    let mut length = None;
    let mut chunked = false;
    loop {
        read_line(r, &mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| bad(&format!("bad header {l:?}")))?;
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| bad("bad Content-Length"))?,
                )
            }
            "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            read_line(r, &mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // Trailers up to the empty line.
                loop {
                    read_line(r, &mut line)?;
                    if line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let at = body.len();
            body.resize(at + size, 0);
            r.read_exact(&mut body[at..])
                .ctx(|| "read HTTP chunk".into())?;
            read_line(r, &mut line)?;
        }
    } else {
        let n = length.ok_or_else(|| bad("neither Content-Length nor chunked"))?;
        body.resize(n, 0);
        r.read_exact(&mut body).ctx(|| "read HTTP body".into())?;
    }
    Ok((status, body))
}

/// Seconds per `GET /_ping` round trip, the mean of `n` sequential requests on one
/// kept-alive connection to `socket`, after one untimed request on it.
pub fn ping_round_trip(socket: &Path, n: usize) -> Result<f64> {
    let s = UnixStream::connect(socket).ctx(|| format!("connect {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .ctx(|| "socket timeout".into())?;
    let mut w = s.try_clone().ctx(|| "dup socket".into())?;
    let mut r = BufReader::new(s);
    let req = b"GET /_ping HTTP/1.1\r\nHost: berth\r\n\r\n";
    let once = |w: &mut UnixStream, r: &mut BufReader<UnixStream>| -> Result<()> {
        w.write_all(req).ctx(|| "write request".into())?;
        let (status, body) = read_response(r)?;
        if status != 200 || body != b"OK" {
            return Err(Error::Unexpected(format!(
                "/_ping answered {status} {:?}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(())
    };
    once(&mut w, &mut r)?;
    let start = Instant::now();
    for _ in 0..n {
        once(&mut w, &mut r)?;
    }
    Ok(start.elapsed().as_secs_f64() / n.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(images: &Path) -> VmPaths {
        VmPaths {
            berth: "/bin/sh".into(),
            images: images.to_path_buf(),
            native_berthd: "/bin/sh".into(),
            qemu: Some("/usr/bin/qemu-system-x86_64".into()),
            qemu_img: Some("/usr/bin/qemu-img".into()),
            vhost_vsock: Some("/usr/bin/vhost-device-vsock".into()),
            accel: Accel::Tcg,
        }
    }

    #[test]
    fn bare_boot_is_the_agents_machine_without_devices() {
        let p = paths(Path::new("/img"));
        let agent = qemu::qemu_args(&agent_config(&p, p.initramfs()));
        let bare = bare_qemu_args(&qemu::qemu_args(&agent_config(&p, p.bare_initramfs())));
        let value = |args: &[String], flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .map(|i| args[i + 1].clone())
        };
        for flag in [
            "-machine", "-accel", "-cpu", "-smp", "-m", "-object", "-kernel", "-append",
        ] {
            assert!(value(&agent, flag).is_some(), "{flag} in {agent:?}");
            assert_eq!(value(&bare, flag), value(&agent, flag), "{flag}");
        }
        assert_eq!(value(&bare, "-initrd").unwrap(), "/img/bare-busybox.cpio");
        assert_eq!(value(&bare, "-accel").unwrap(), "tcg");
        assert!(value(&bare, "-m").unwrap().starts_with("1024"));
        let joined = bare.join(" ");
        for gone in [
            "-drive", "-device", "-qmp", "vsock", "socket,", "-netdev", "-nic", "-fsdev",
        ] {
            assert!(!joined.contains(gone), "{gone} in {joined}");
        }
        assert!(joined.contains("-chardev stdio,id=con"), "{joined}");
        assert!(joined.contains("-serial chardev:con"), "{joined}");
        assert!(joined.contains("-nodefaults") && joined.contains("-no-reboot"));
        // Unknown options (and their values) are dropped, known ones kept in order.
        let a: Vec<String> = ["-foo", "x", "-m", "1G", "-bar", "-nographic"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(bare_qemu_args(&a), ["-m", "1G", "-nographic"]);
    }

    #[test]
    fn bare_init_line() {
        assert_eq!(
            parse_bare_line("bare-init: stage=init-up uptime=1.73"),
            Some(Some(1.73))
        );
        assert_eq!(
            parse_bare_line("\r[ 1.0] bare-init: stage=init-up uptime=x"),
            Some(None)
        );
        assert_eq!(parse_bare_line("berth-init: stage=init-up uptime=1"), None);
        assert_eq!(parse_bare_line("[    0.000000] Linux version 6.1"), None);
    }

    #[test]
    fn missing_pieces_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = paths(dir.path());
        let why = p.missing().unwrap();
        assert!(
            why.contains("vm-images/build") && why.contains("vmlinux"),
            "{why}"
        );
        for f in ["vmlinux", "initramfs.cpio", "system.img"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        assert!(p.missing().unwrap().contains("bare-busybox.cpio"));
        std::fs::write(dir.path().join("bare-busybox.cpio"), b"x").unwrap();
        assert_eq!(p.missing(), None);
        p.berth = dir.path().join("berth");
        assert!(p.missing().unwrap().contains("berth-cli"));
        p.qemu = None;
        assert!(p.missing().unwrap().contains("QEMU is not installed"));
    }

    #[test]
    fn http_responses_on_one_connection() {
        let raw = b"HTTP/1.1 200 OK\r\nApi-Version: 1.47\r\ncontent-length: 2\r\n\r\nOK\
                    HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nO\r\n1;x=y\r\nK\r\n0\r\n\r\n\
                    HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let mut r = BufReader::with_capacity(3, &raw[..]);
        assert_eq!(read_response(&mut r).unwrap(), (200, b"OK".to_vec()));
        assert_eq!(read_response(&mut r).unwrap(), (200, b"OK".to_vec()));
        assert_eq!(read_response(&mut r).unwrap(), (404, Vec::new()));
        assert!(read_response(&mut r).is_err(), "closed");
        for bad in [
            &b"SSH-2.0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nOK",
            b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n",
        ] {
            assert!(read_response(&mut &bad[..]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ping_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let mut n = 0;
            let mut line = String::new();
            while r.read_line(&mut line).unwrap() > 0 {
                if line == "\r\n" {
                    w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
                        .unwrap();
                    n += 1;
                }
                line.clear();
            }
            n
        });
        let t = ping_round_trip(&sock, 5).unwrap();
        assert!(t > 0.0 && t < 1.0, "{t}");
        assert_eq!(server.join().unwrap(), 6, "one untimed + 5 timed requests");
    }
}
