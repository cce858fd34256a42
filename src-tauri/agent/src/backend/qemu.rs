//! berthd in the Berth VM: QEMU started as a process (`-machine microvm`, PVH boot of the
//! uncompressed kernel, the small initramfs from vm-images/ and its read-only system disk
//! image), a qcow2 data disk, vsock through
//! vhost-user-vsock (the `vhost-device-vsock` daemon) or kernel vhost-vsock, a QMP socket for
//! control, the serial console read line by line for readiness stages and `berth logs`.
//!
//! QEMU and its vsock helper outlive the agent (checklist #29): each runs in a session of its
//! own, with no pipe to the agent (the serial console is a chardev to `vm/console.log`, QEMU's
//! own messages go to `vm/qemu.log`, both followed by the agent), so a killed agent or a quit
//! app leaves the VM and its containers running, and the next agent takes the VM over
//! ([`super::reattach`]). `berth down` stops everything.
//!
//! Acceleration is probed in the platform's order (KVM, HVF, WHPX, then TCG): a candidate that
//! does not get the kernel to print within [`PROGRESS_TIMEOUT`] is abandoned (nested KVM on
//! some hosts accepts the VM and then never runs it), and the verdict is remembered in
//! `vm/accel.json` so the next start goes straight to what works.

use std::collections::VecDeque;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::reattach::{self, Found, Layout, SystemProbe};
use super::{describe_exit, explaining_line, platform, Adoption, Backend, BackendError, BackendEvent, Running};
use crate::api::{Accel, Settings, Stage};
use crate::paths::Home;
use crate::protocol::{self, CONTROL_PORT, ENGINE_PORT};
use crate::transport::hybrid::Hybrid;
use crate::transport::Transport;

/// A hardware accelerator that has not printed a kernel line by then does not work here.
pub const PROGRESS_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole boot, to a ping answered through vsock (TCG on a loaded 2-core machine is slow).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const CONSOLE_KEEP: usize = 2000;

/// Where the VM image and the helper programs are.
#[derive(Debug, Clone)]
pub struct VmAssets {
    pub qemu: PathBuf,
    pub qemu_img: PathBuf,
    pub vhost_vsock: Option<PathBuf>,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The system disk image (berthd and the other guest programs; attached read-only).
    pub system: PathBuf,
    /// The kernel's timer frequency (CONFIG_HZ), from the image's manifest.json.
    pub kernel_hz: Option<u32>,
}

/// The files of a VM image directory (vm-images/build writes them).
pub const IMAGE_FILES: [&str; 3] = ["vmlinux", "initramfs.cpio", "system.img"];

/// The virtio-blk serials init finds the disks by (`berth.system=`/`berth.disk=serial:...`).
pub const SYSTEM_SERIAL: &str = "berth-system";
pub const DATA_SERIAL: &str = "berth-data";

/// `"kernel_hz"` from the manifest vm-images/build writes next to the kernel.
pub fn manifest_hz(dir: &Path) -> Option<u32> {
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).ok()?).ok()?;
    m.get("kernel_hz")?.as_u64().and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

impl VmAssets {
    /// Programs from `$BERTH_QEMU`, `$BERTH_VHOST_VSOCK` or PATH (and ~/.cargo/bin); the image
    /// from `$BERTH_VM_IMAGES`, else `vm-images/out` next to the executable's workspace, else
    /// `~/.berth/vm-images`.
    pub fn locate(home: &Home) -> Result<VmAssets, String> {
        let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
        let qemu = env("BERTH_QEMU").or_else(|| which("qemu-system-x86_64")).ok_or("qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86)")?;
        let qemu_img = env("BERTH_QEMU_IMG").or_else(|| which("qemu-img")).ok_or("qemu-img is not installed (Debian: apt-get install qemu-utils)")?;
        let cargo_bin = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/vhost-device-vsock"));
        let vhost_vsock = env("BERTH_VHOST_VSOCK").or_else(|| which("vhost-device-vsock")).or_else(|| cargo_bin.filter(|p| p.is_file()));
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(d) = env("BERTH_VM_IMAGES") {
            dirs.push(d);
        }
        if let Ok(exe) = std::env::current_exe() {
            // target/{debug,release}/berth -> <workspace>/vm-images/out
            for up in exe.ancestors().skip(1).take(4) {
                dirs.push(up.join("vm-images/out"));
            }
        }
        dirs.push(home.root().join("vm-images"));
        let dir = dirs
            .iter()
            .find(|d| IMAGE_FILES.iter().all(|f| d.join(f).is_file()))
            .ok_or_else(|| format!("the VM image is not built (run vm-images/build); looked in {}", dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")))?;
        Ok(VmAssets {
            qemu,
            qemu_img,
            vhost_vsock,
            kernel: dir.join("vmlinux"),
            initramfs: dir.join("initramfs.cpio"),
            system: dir.join("system.img"),
            kernel_hz: manifest_hz(dir),
        })
    }
}

/// Everything that decides QEMU's command line (kept pure for unit tests).
#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The read-only system disk image.
    pub system: PathBuf,
    pub disk: PathBuf,
    pub qmp: PathBuf,
    /// Where the serial console is written (by QEMU itself: it outlives the agent).
    pub console: PathBuf,
    /// vhost-user-vsock control socket; None: kernel vhost-vsock with [`protocol::GUEST_CID`].
    pub vhost_user_vsock: Option<PathBuf>,
    pub shares: Vec<String>,
    pub tsc_khz: u64,
    pub kernel_hz: Option<u32>,
    pub cpu: &'static str,
}

/// The kernel command line. `loglevel=5`: every console line is a trip through the emulated
/// UART (hundreds of them at boot with the default 7), so only warnings and worse print; that
/// includes a soft lockup's registers and stack (level 4, which `quiet` would hide), and
/// `softlockup_all_cpu_backtrace` adds every CPU's, so a guest hang leaves its cause in
/// console.log. `lpj=`: the delay loop
/// calibration of each secondary CPU fails under TCG and falls back to a slow loop (~0.15 s
/// here); with a known TSC the answer is TSC ticks per jiffy.
pub fn kernel_cmdline(c: &QemuConfig) -> String {
    let mut cmdline = format!("console=ttyS0 loglevel=5 softlockup_all_cpu_backtrace=1 reboot=t panic=-1 tsc_early_khz={} tsc=reliable", c.tsc_khz);
    if let Some(hz) = c.kernel_hz.filter(|_| c.tsc_khz > 0) {
        cmdline.push_str(&format!(" lpj={}", c.tsc_khz * 1000 / u64::from(hz)));
    }
    cmdline.push_str(&format!(" berth.system=serial:{SYSTEM_SERIAL} berth.disk=serial:{DATA_SERIAL}"));
    for (i, s) in c.shares.iter().enumerate() {
        cmdline.push_str(&format!(" berth.share=share{i}:{s}"));
    }
    cmdline
}

/// QEMU's arguments. No network device at all: egress goes through the agent over vsock.
pub fn qemu_args(c: &QemuConfig) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |v: &[&str]| a.extend(v.iter().map(|s| s.to_string()));
    let mem = format!("{}M", c.memory_mib);
    push(&["-name", "berth", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    // microvm: no PCI, no firmware, PVH entry straight into the kernel. The RTC stays on
    // (microvm under TCG hangs without it).
    push(&["-machine", "microvm,acpi=on,rtc=on,pit=off,pic=off,isa-serial=on,memory-backend=mem"]);
    push(&["-accel", c.accel.as_str(), "-cpu", c.cpu, "-smp", &c.cpus.to_string(), "-m", &mem]);
    // vhost-user devices need guest memory the daemon can map.
    push(&["-object", &format!("memory-backend-memfd,id=mem,size={mem},share=on")]);
    push(&["-kernel", &c.kernel.to_string_lossy(), "-initrd", &c.initramfs.to_string_lossy()]);
    push(&["-append", &kernel_cmdline(c)]);
    push(&["-chardev", &format!("file,id=con,path={}", c.console.display()), "-serial", "chardev:con"]);
    push(&["-qmp", &format!("unix:{},server=on,wait=off", c.qmp.display())]);
    // The system disk: read-only for QEMU too, so one image serves every VM and a rebuilt image
    // (vm-images/build renames a new file into place) takes effect at the next boot while the
    // running VM keeps the file it opened. The data disk stays as it is across such upgrades.
    push(&["-drive", &format!("id=system,file={},format=raw,if=none,readonly=on", c.system.display())]);
    push(&["-device", &format!("virtio-blk-device,drive=system,serial={SYSTEM_SERIAL}")]);
    push(&["-drive", &format!("id=data,file={},format=qcow2,if=none,discard=unmap,detect-zeroes=unmap,cache=writeback", c.disk.display())]);
    push(&["-device", &format!("virtio-blk-device,drive=data,serial={DATA_SERIAL}")]);
    match &c.vhost_user_vsock {
        Some(sock) => {
            push(&["-chardev", &format!("socket,id=vsock,path={}", sock.display())]);
            push(&["-device", "vhost-user-vsock-device,chardev=vsock"]);
        }
        None => push(&["-device", &format!("vhost-vsock-device,guest-cid={}", protocol::GUEST_CID)]),
    }
    for (i, s) in c.shares.iter().enumerate() {
        push(&["-fsdev", &format!("local,id=fs{i},path={s},security_model=none")]);
        push(&["-device", &format!("virtio-9p-device,fsdev=fs{i},mount_tag=share{i}")]);
    }
    a
}

/// Accelerators QEMU itself supports (`-accel help`).
async fn qemu_accels(qemu: &Path) -> Vec<String> {
    let out = Command::new(qemu).args(["-accel", "help"]).output().await;
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).lines().skip(1).map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Probe verdicts remembered across starts: accelerators that did not make progress.
fn load_bad_accels(vm_dir: &Path) -> Vec<Accel> {
    std::fs::read(vm_dir.join("accel.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn save_bad_accels(vm_dir: &Path, bad: &[Accel]) {
    if let Ok(j) = serde_json::to_vec(bad) {
        let _ = std::fs::write(vm_dir.join("accel.json"), j);
    }
}

/// The order to try: forced (settings or `BERTH_ACCEL`), else the platform's candidates that
/// QEMU supports and that have not failed before; TCG always last.
pub fn accel_order(forced: Option<Accel>, candidates: &[Accel], qemu_has: &[String], known_bad: &[Accel]) -> Vec<Accel> {
    if let Some(f) = forced {
        return vec![f];
    }
    let mut v: Vec<Accel> = candidates
        .iter()
        .copied()
        .filter(|a| *a != Accel::Tcg && qemu_has.iter().any(|q| q == a.as_str()) && !known_bad.contains(a))
        .collect();
    v.push(Accel::Tcg);
    v
}

/// The console, shared between the reader task and status queries.
#[derive(Clone, Default)]
pub struct Console {
    lines: Arc<Mutex<VecDeque<String>>>,
}

impl Console {
    fn push(&self, l: String) {
        let mut v = self.lines.lock().expect("console lock");
        if v.len() >= CONSOLE_KEEP {
            v.pop_front();
        }
        v.push_back(l);
    }
    pub fn tail(&self, n: usize) -> Vec<String> {
        let v = self.lines.lock().expect("console lock");
        v.iter().skip(v.len().saturating_sub(n)).cloned().collect()
    }
}

/// Follow a file another process writes (QEMU's console and its log) from byte `from`: each
/// complete line goes to `on_line`. Polled, 5 ms after data and backing off to 20 ms while
/// `fast` (booting: stage lines) or 250 ms; a file that shrank (a new boot) is read from 0.
/// Hand-written: the notify crates would add a watcher thread for two files.
fn follow(path: PathBuf, from: u64, fast: Arc<AtomicBool>, mut on_line: impl FnMut(String) + Send + 'static) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut pos = from;
        let mut file: Option<std::fs::File> = None;
        let mut partial: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut idle = Duration::from_millis(5);
        let mut emit = |partial: &mut Vec<u8>| {
            let line = String::from_utf8_lossy(partial).trim_end_matches(['\r', '\n']).to_string();
            partial.clear();
            on_line(line);
        };
        loop {
            if file.is_none() {
                file = std::fs::File::open(&path).ok();
                if let Some(f) = file.as_mut() {
                    if f.seek(std::io::SeekFrom::Start(pos)).is_err() {
                        file = None;
                    }
                }
            }
            let n = file.as_mut().map(|f| f.read(&mut buf).unwrap_or(0)).unwrap_or(0);
            if n > 0 {
                pos += n as u64;
                for &b in &buf[..n] {
                    partial.push(b);
                    if b == b'\n' || partial.len() >= 64 * 1024 {
                        emit(&mut partial);
                    }
                }
                idle = Duration::from_millis(5);
                continue;
            }
            if std::fs::metadata(&path).map(|m| m.len() < pos).unwrap_or(false) {
                pos = 0;
                file = None;
                partial.clear();
                continue;
            }
            let cap = Duration::from_millis(if fast.load(Ordering::Relaxed) { 20 } else { 250 });
            tokio::time::sleep(idle).await;
            idle = (idle * 2).min(cap);
        }
    })
}

/// The whole lines of a file and the offset after the last one.
fn read_lines(path: &Path) -> (Vec<String>, u64) {
    let data = std::fs::read(path).unwrap_or_default();
    let end = data.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
    let lines = String::from_utf8_lossy(&data[..end]).lines().map(|l| l.trim_end_matches('\r').to_string()).collect();
    (lines, end as u64)
}

/// Start `cmd` in a session of its own: no terminal, no signal from the agent's process group
/// or terminal, no parent-death signal. The VM belongs to the user's session, not to the
/// agent process that happened to start it.
fn detach(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

/// The vhost-user-vsock daemon: our child, or adopted from an earlier agent (then only its pid
/// is known).
struct Helper {
    pid: u32,
    socket: PathBuf,
    child: Option<Child>,
}

impl Helper {
    async fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            return;
        }
        // Not our child: signal it only while its argv still says it is ours (pid reuse).
        let ours = |pid| platform::process_argv(pid).map(|a| reattach::is_our_helper(&a, &self.socket)).unwrap_or(false);
        if ours(self.pid) {
            // SAFETY: a process of ours (checked just above).
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while ours(self.pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

pub struct Qemu {
    home: Home,
    console: Console,
    child_pid: Option<u32>,
    helper: Option<Helper>,
    transport: Option<Arc<dyn Transport>>,
    exited: Option<watch::Receiver<Option<String>>>,
    qmp_path: PathBuf,
    /// The host services of this run (the guest's clock and egress proxy).
    services: Vec<JoinHandle<()>>,
    /// The followers of this boot's console and QEMU log.
    followers: Vec<JoinHandle<()>>,
    /// Console polled fast while booting.
    booting: Arc<AtomicBool>,
}

impl Qemu {
    pub fn new(home: Home) -> Qemu {
        let qmp_path = home.vm_dir().join("qmp.sock");
        Qemu {
            home,
            console: Console::default(),
            child_pid: None,
            helper: None,
            transport: None,
            exited: None,
            qmp_path,
            services: Vec::new(),
            followers: Vec::new(),
            booting: Arc::new(AtomicBool::new(false)),
        }
    }

    fn vm(&self, name: &str) -> PathBuf {
        self.home.vm_dir().join(name)
    }

    fn layout(&self) -> Layout {
        let helper = (!platform::host_vsock()).then(|| (self.vm("vhost-vsock.pid"), self.vm("vhost-vsock.sock")));
        Layout { qemu_pidfile: self.vm("qemu.pid"), helper }
    }

    /// The pid of a QEMU of this home that is still running (left by an earlier agent, or run
    /// by the current one): what tells the CLI a VM is there to re-attach to.
    pub fn left_running(home: &Home) -> Option<u32> {
        let pidfile = home.vm_dir().join("qemu.pid");
        let pid: u32 = std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()?;
        platform::process_argv(pid).filter(|a| reattach::is_our_qemu(a, &pidfile)).map(|_| pid)
    }

    fn stop_followers(&mut self) {
        for t in self.followers.drain(..) {
            t.abort();
        }
    }

    fn stop_tasks(&mut self) {
        self.stop_followers();
        for t in self.services.drain(..) {
            t.abort();
        }
    }

    /// Answer the guest's connections to the host: its clock and its egress proxy.
    async fn serve_host(&mut self, t: &Arc<dyn Transport>) -> Result<(), BackendError> {
        let time_l = t.listen(protocol::TIME_PORT).await.map_err(|e| BackendError::Setup(e.to_string()))?;
        self.services.push(tokio::spawn(crate::timeserve::serve(time_l)));
        let egress_l = t.listen(protocol::EGRESS_PORT).await.map_err(|e| BackendError::Setup(e.to_string()))?;
        self.services.push(tokio::spawn(crate::egress::serve(egress_l)));
        Ok(())
    }

    /// How this host reaches the guest's vsock ports (the vhost-user helper's sockets are at
    /// fixed paths, so an adopted VM is reached the same way).
    fn make_transport(&self) -> Result<Arc<dyn Transport>, BackendError> {
        Ok(if platform::host_vsock() { Arc::new(host_vsock_transport()?) } else { Arc::new(Hybrid::new(self.vm("vsock.sock"))) })
    }

    /// Make a QEMU that is not our child (and its helper) this backend's own.
    fn take(&mut self, qemu: u32, helper: Option<u32>, transport: Arc<dyn Transport>) -> watch::Receiver<Option<String>> {
        let exited = platform::watch_exit(qemu, "QEMU");
        self.child_pid = Some(qemu);
        self.exited = Some(exited.clone());
        self.helper = helper.map(|pid| Helper { pid, socket: self.vm("vhost-vsock.sock"), child: None });
        self.transport = Some(transport);
        exited
    }

    /// A VM of this home still running when a boot is asked for: the agent adopts one before
    /// it boots, so this one could not be adopted. Stop it cleanly: two QEMUs must never share
    /// the disk. An orphaned helper is stopped too.
    async fn stop_leftover(&mut self, events: &mpsc::UnboundedSender<BackendEvent>) {
        if self.child_pid.is_some() {
            return;
        }
        let socket = self.vm("vhost-vsock.sock");
        let helper = std::fs::read_to_string(self.vm("vhost-vsock.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|p| platform::process_argv(*p).map(|a| reattach::is_our_helper(&a, &socket)).unwrap_or(false));
        if let Some(qemu) = Self::left_running(&self.home) {
            let _ = events.send(BackendEvent::Log(format!("berth: stopping the VM left running (QEMU pid {qemu}) before booting")));
            if let Ok(t) = self.make_transport() {
                self.take(qemu, helper, t);
                self.stop().await;
            }
        } else if let Some(pid) = helper {
            Helper { pid, socket, child: None }.stop().await;
        }
        let _ = std::fs::remove_file(self.vm("qemu.pid"));
    }

    /// QEMU's own messages (`vm/qemu.log`) into the console tail, as `qemu: ...`.
    fn follow_qemu_log(&mut self, from: u64) {
        let console = self.console.clone();
        self.followers.push(follow(self.vm("qemu.log"), from, Arc::clone(&self.booting), move |l| console.push(format!("qemu: {l}"))));
    }

    async fn ensure_disk(&self, assets: &VmAssets, gib: u32) -> Result<PathBuf, BackendError> {
        let disk = self.vm("disk.qcow2");
        if !disk.exists() {
            let out = Command::new(&assets.qemu_img)
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&disk)
                .arg(format!("{gib}G"))
                .output()
                .await
                .map_err(|e| BackendError::Setup(format!("qemu-img: {e}")))?;
            if !out.status.success() {
                return Err(BackendError::Setup(format!("qemu-img create failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
            }
        }
        Ok(disk)
    }

    /// Start the vhost-user-vsock daemon for this boot (it exits with QEMU's disconnect on
    /// some versions; one per boot is simplest).
    async fn start_vhost_vsock(&mut self, bin: &Path) -> Result<(PathBuf, Hybrid), BackendError> {
        let ctl = self.vm("vhost-vsock.sock");
        let uds = self.vm("vsock.sock");
        let _ = std::fs::remove_file(&ctl);
        let _ = std::fs::remove_file(&uds);
        let log = std::fs::File::create(self.vm("vhost-vsock.log")).map_err(|e| BackendError::Setup(e.to_string()))?;
        let mut cmd = Command::new(bin);
        detach(&mut cmd);
        let child = cmd
            .arg("--guest-cid")
            .arg(protocol::GUEST_CID.to_string())
            .arg("--socket")
            .arg(&ctl)
            .arg("--uds-path")
            .arg(&uds)
            // 1 MiB hangs bulk guest uploads (measured); 256 KiB is fine.
            .args(["--tx-buffer-size", "262144"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| BackendError::Setup(e.to_string()))?)
            .stderr(log)
            .spawn()
            .map_err(|e| BackendError::Setup(format!("cannot start {}: {e}", bin.display())))?;
        let pid = child.id().unwrap_or(0);
        let _ = std::fs::write(self.vm("vhost-vsock.pid"), format!("{pid}\n"));
        self.helper = Some(Helper { pid, socket: ctl.clone(), child: Some(child) });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ctl.exists() {
            if Instant::now() > deadline {
                return Err(BackendError::Setup("vhost-device-vsock did not create its socket within 10 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok((ctl, Hybrid::new(uds)))
    }

    fn fail(&self, stage: Stage, message: String) -> BackendError {
        // QEMU's last words may not have been followed yet: read its log now.
        let mut lines = self.console.tail(200);
        for l in read_lines(&self.vm("qemu.log")).0 {
            let l = format!("qemu: {l}");
            if !lines.contains(&l) {
                lines.push(l);
            }
        }
        BackendError::Start { stage, message, log_line: explaining_line(&lines) }
    }

    /// One boot attempt with one accelerator, up to a ping answered through the transport.
    async fn boot(
        &mut self,
        cfg: &QemuConfig,
        assets: &VmAssets,
        events: &mpsc::UnboundedSender<BackendEvent>,
        probe: bool,
    ) -> Result<Running, BootError> {
        let _ = std::fs::remove_file(&cfg.qmp);
        let console_path = self.vm("console.log");
        if console_path.exists() {
            let _ = std::fs::rename(&console_path, self.vm("console.log.1"));
        }
        // Stale lines from an earlier boot must not count as this one's stages.
        let _ = std::fs::remove_file(&console_path);
        self.stop_followers();
        let log = std::fs::File::create(self.vm("qemu.log")).map_err(|e| BootError::Fatal(BackendError::Setup(format!("{}: {e}", self.vm("qemu.log").display()))))?;
        let log2 = log.try_clone().map_err(|e| BootError::Fatal(BackendError::Setup(e.to_string())))?;
        let mut cmd = Command::new(&assets.qemu);
        cmd.args(qemu_args(cfg)).arg("-pidfile").arg(self.vm("qemu.pid"));
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        detach(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| BootError::Fatal(BackendError::Setup(format!("cannot start {}: {e}", assets.qemu.display()))))?;
        let pid = child.id().unwrap_or(0);
        self.child_pid = Some(pid);
        let (stage_tx, mut stage_rx) = mpsc::unbounded_channel::<(String, Option<f64>, String)>();
        let console = self.console.clone();
        let ev = events.clone();
        let first_line = Arc::new(tokio::sync::Notify::new());
        let first = Arc::clone(&first_line);
        let mut seen_first = false;
        self.booting.store(true, Ordering::Relaxed);
        self.followers.push(follow(console_path.clone(), 0, Arc::clone(&self.booting), move |line| {
            if !seen_first {
                seen_first = true;
                first.notify_one();
            }
            if let Some(s) = protocol::parse_stage_line(&line) {
                let _ = stage_tx.send((s.name, s.uptime_s, s.detail));
            }
            console.push(line.clone());
            let _ = ev.send(BackendEvent::Log(line));
        }));
        self.follow_qemu_log(0);
        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(async move {
            let s = child.wait().await;
            let reason = match s {
                Ok(s) => format!("QEMU exited ({})", describe_exit(s)),
                Err(e) => format!("QEMU: {e}"),
            };
            let _ = exit_tx.send(Some(reason));
        });
        self.exited = Some(exit_rx.clone());
        let mut exited = exit_rx.clone();
        let start = Instant::now();

        // vm-started: QMP answers and the VM runs.
        let mut qmp_ok = false;
        while start.elapsed() < Duration::from_secs(30) {
            if exited.borrow().is_some() {
                break;
            }
            if let Ok(mut q) = crate::qmp::Qmp::connect(&cfg.qmp).await {
                if q.status().await.map(|s| s == "running").unwrap_or(false) {
                    qmp_ok = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !qmp_ok {
            let reason = exited.borrow().clone().unwrap_or_else(|| "QEMU did not answer on QMP within 30 s".into());
            self.kill_vm().await;
            return Err(BootError::Fatal(self.fail(Stage::VmStarted, reason)));
        }
        let _ = events.send(BackendEvent::Stage { stage: Stage::VmStarted, guest_uptime_s: None });

        // kernel-up: the first console line (with `loglevel=5` that is often init's first line, so
        // the stage means "the guest runs"). A hardware accelerator that cannot get this far
        // quickly does not work on this host.
        let limit = if probe { PROGRESS_TIMEOUT } else { BOOT_TIMEOUT };
        tokio::select! {
            _ = first_line.notified() => {}
            _ = tokio::time::sleep(limit) => {
                self.kill_vm().await;
                return Err(if probe { BootError::NoProgress } else { BootError::Fatal(self.fail(Stage::KernelUp, "the kernel printed nothing".into())) });
            }
            _ = exited.changed() => {
                let reason = exited.borrow().clone().unwrap_or_default();
                return Err(if probe { BootError::NoProgress } else { BootError::Fatal(self.fail(Stage::KernelUp, reason)) });
            }
        }
        let _ = events.send(BackendEvent::Stage { stage: Stage::KernelUp, guest_uptime_s: None });

        // Guest stages from the console, up to engine-up confirmed by a ping through vsock.
        let transport = self.transport.clone().expect("transport set before boot");
        let deadline = start + BOOT_TIMEOUT;
        let mut next = Stage::InitUp;
        let mut engine_uptime = None;
        loop {
            if Instant::now() > deadline {
                self.kill_vm().await;
                return Err(BootError::Fatal(self.fail(next, format!("the VM did not reach {} within {} s", next.as_str(), BOOT_TIMEOUT.as_secs()))));
            }
            while let Ok((name, up, detail)) = stage_rx.try_recv() {
                match name.as_str() {
                    "init-up" => {
                        let _ = events.send(BackendEvent::Stage { stage: Stage::InitUp, guest_uptime_s: up });
                        next = Stage::DiskUp;
                    }
                    "disk-up" => {
                        let _ = events.send(BackendEvent::Stage { stage: Stage::DiskUp, guest_uptime_s: up });
                        next = Stage::EngineUp;
                    }
                    "engine-up" => engine_uptime = up,
                    "failed" => {
                        self.kill_vm().await;
                        return Err(BootError::Fatal(self.fail(next, format!("the VM failed at {}: {detail}", next.as_str()))));
                    }
                    _ => {}
                }
            }
            if exited.borrow().is_some() {
                let reason = exited.borrow().clone().unwrap_or_default();
                return Err(BootError::Fatal(self.fail(next, reason)));
            }
            if next == Stage::EngineUp {
                if let Ok(s) = transport.connect(ENGINE_PORT).await {
                    if super::ping(s).await {
                        let _ = events.send(BackendEvent::Stage { stage: Stage::EngineUp, guest_uptime_s: engine_uptime });
                        return Ok(Running { pid, accel: Some(cfg.accel), transport: Some(transport), exited: exit_rx });
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }

    async fn kill_vm(&mut self) {
        if let Some(pid) = self.child_pid.take() {
            // SAFETY: our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            if let Some(rx) = self.exited.as_mut() {
                let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|v| v.is_some())).await;
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let _ = std::fs::remove_file(self.vm("qemu.pid"));
    }
}

enum BootError {
    NoProgress,
    Fatal(BackendError),
}

#[async_trait::async_trait]
impl Backend for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn expected_stages(&self) -> Vec<Stage> {
        vec![Stage::VmStarted, Stage::KernelUp, Stage::InitUp, Stage::DiskUp, Stage::EngineUp, Stage::SocketForwarded]
    }

    async fn start(&mut self, settings: &Settings, events: mpsc::UnboundedSender<BackendEvent>) -> Result<Running, BackendError> {
        self.stop_leftover(&events).await;
        let assets = VmAssets::locate(&self.home).map_err(BackendError::Setup)?;
        let disk = self.ensure_disk(&assets, settings.disk_gib).await?;
        let vhost_user = if platform::host_vsock() {
            self.transport = Some(Arc::new(host_vsock_transport()?));
            None
        } else {
            let bin = assets.vhost_vsock.clone().ok_or_else(|| {
                BackendError::Setup("vhost-device-vsock is not installed and /dev/vhost-vsock is missing (cargo install --locked vhost-device-vsock)".into())
            })?;
            let (ctl, t) = self.start_vhost_vsock(&bin).await?;
            self.transport = Some(Arc::new(t));
            Some(ctl)
        };
        // The guest asks for the time and for egress while it boots: serve both first.
        let t = self.transport.clone().expect("set above");
        self.serve_host(&t).await?;

        let forced = settings.accel.or_else(|| std::env::var("BERTH_ACCEL").ok().and_then(|a| Accel::parse(&a)));
        let mut bad = load_bad_accels(&self.home.vm_dir());
        // `-accel help` is one more QEMU start: only ask when there is a choice to make.
        let qemu_has = if forced.is_some() { Vec::new() } else { qemu_accels(&assets.qemu).await };
        let order = accel_order(forced, &platform::accel_candidates(), &qemu_has, &bad);
        let mut last_err = None;
        for accel in order {
            let cfg = QemuConfig {
                accel,
                cpus: settings.cpus,
                memory_mib: settings.memory_mib,
                kernel: assets.kernel.clone(),
                initramfs: assets.initramfs.clone(),
                system: assets.system.clone(),
                disk: disk.clone(),
                qmp: self.qmp_path.clone(),
                console: self.vm("console.log"),
                vhost_user_vsock: vhost_user.clone(),
                shares: settings.shares.clone(),
                tsc_khz: platform::tsc_khz(),
                kernel_hz: assets.kernel_hz,
                cpu: platform::cpu_model(accel),
            };
            let probe = accel != Accel::Tcg && forced.is_none();
            let _ = events.send(BackendEvent::Log(format!("berth: starting QEMU with -accel {}", accel.as_str())));
            match self.boot(&cfg, &assets, &events, probe).await {
                Ok(mut r) => {
                    self.exited = Some(r.exited.clone());
                    self.booting.store(false, Ordering::Relaxed);
                    r.accel = Some(accel);
                    return Ok(r);
                }
                Err(BootError::NoProgress) => {
                    let _ = events.send(BackendEvent::Log(format!(
                        "berth: -accel {} made no progress within {} s; trying the next accelerator",
                        accel.as_str(),
                        PROGRESS_TIMEOUT.as_secs()
                    )));
                    bad.push(accel);
                    save_bad_accels(&self.home.vm_dir(), &bad);
                    // The vhost-user daemon may have exited with the killed QEMU: restart it.
                    if let Some(bin) = assets.vhost_vsock.clone().filter(|_| vhost_user.is_some()) {
                        if let Some(h) = self.helper.take() {
                            h.stop().await;
                        }
                        let (_, t) = self.start_vhost_vsock(&bin).await?;
                        let _ = t; // same paths as before
                    }
                }
                Err(BootError::Fatal(e)) => {
                    last_err = Some(e);
                    break;
                }
            }
        }
        if let Some(h) = self.helper.take() {
            h.stop().await;
        }
        self.stop_tasks();
        Err(last_err.unwrap_or_else(|| BackendError::Setup("no accelerator could boot the VM".into())))
    }

    async fn stop(&mut self) {
        let Some(pid) = self.child_pid else {
            if let Some(h) = self.helper.take() {
                h.stop().await;
            }
            self.stop_tasks();
            return;
        };
        let exited = self.exited.clone();
        let gone = |rx: Option<watch::Receiver<Option<String>>>, d: Duration| async move {
            match rx {
                Some(mut rx) => tokio::time::timeout(d, rx.wait_for(|v| v.is_some())).await.is_ok(),
                None => false,
            }
        };
        // 1. Ask init: it stops berthd, the containers and the disk, then powers off.
        let mut asked = false;
        if let Some(t) = &self.transport {
            if let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(3), t.connect(CONTROL_PORT)).await {
                asked = s.write_all(b"shutdown\n").await.is_ok();
            }
        }
        let mut done = asked && gone(exited.clone(), Duration::from_secs(30)).await;
        // 2. QMP quit. 3. SIGKILL.
        if !done {
            if let Ok(mut q) = crate::qmp::Qmp::connect(&self.qmp_path).await {
                let _ = q.quit().await;
            }
            done = gone(exited.clone(), Duration::from_secs(5)).await;
        }
        if !done && !exited.as_ref().map(|e| e.borrow().is_some()).unwrap_or(false) {
            // SAFETY: our QEMU (our child, or adopted after checking its argv), not yet exited.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let _ = gone(exited, Duration::from_secs(5)).await;
        }
        self.child_pid = None;
        let _ = std::fs::remove_file(self.vm("qemu.pid"));
        if let Some(h) = self.helper.take() {
            h.stop().await;
        }
        let _ = std::fs::remove_file(self.vm("vhost-vsock.pid"));
        self.stop_tasks();
    }

    async fn adopt(&mut self, events: mpsc::UnboundedSender<BackendEvent>) -> Adoption {
        let layout = self.layout();
        let any_pidfile = layout.qemu_pidfile.exists() || layout.helper.as_ref().map(|(p, _)| p.exists()).unwrap_or(false);
        if !any_pidfile {
            return Adoption::Nothing;
        }
        let transport = match self.make_transport() {
            Ok(t) => t,
            Err(_) => return Adoption::Nothing,
        };
        let probe = SystemProbe { qmp: self.qmp_path.clone(), transport: Arc::clone(&transport), engine_timeout: reattach::ENGINE_TIMEOUT };
        let log = |l: String| {
            let _ = events.send(BackendEvent::Log(l));
        };
        match reattach::inspect(&probe, &layout).await {
            Found::Nothing { stale_helper } => {
                if let Some(pid) = stale_helper {
                    log(format!("berth: stopping a vsock helper (pid {pid}) whose VM is gone"));
                    Helper { pid, socket: self.vm("vhost-vsock.sock"), child: None }.stop().await;
                }
                let _ = std::fs::remove_file(&layout.qemu_pidfile);
                let _ = std::fs::remove_file(self.vm("vhost-vsock.pid"));
                Adoption::Nothing
            }
            Found::Broken { qemu, helper, reason } => {
                log(format!("berth: found the VM an earlier agent left running (QEMU pid {qemu}), but {reason}: stopping it"));
                self.take(qemu, helper, transport);
                self.stop().await;
                Adoption::Stopped(reason)
            }
            Found::Adopt { qemu, helper } => {
                let accel = platform::process_argv(qemu).and_then(|a| reattach::accel_of(&a));
                let exited = self.take(qemu, helper, Arc::clone(&transport));
                if let Err(e) = self.serve_host(&transport).await {
                    let reason = format!("cannot serve the guest's host ports ({e})");
                    log(format!("berth: re-attaching to the VM (QEMU pid {qemu}) failed: {reason}: stopping it"));
                    self.stop().await;
                    return Adoption::Stopped(reason);
                }
                // The console so far (this boot's), then whatever comes next.
                let console_path = self.vm("console.log");
                let (lines, end) = read_lines(&console_path);
                for l in lines {
                    self.console.push(l);
                }
                let console = self.console.clone();
                let ev = events.clone();
                self.followers.push(follow(console_path, end, Arc::clone(&self.booting), move |line| {
                    console.push(line.clone());
                    let _ = ev.send(BackendEvent::Log(line));
                }));
                let qemu_log_end = read_lines(&self.vm("qemu.log")).1;
                self.follow_qemu_log(qemu_log_end);
                log(format!("berth: re-attached to the running VM (QEMU pid {qemu}) left by an earlier agent"));
                Adoption::Adopted(Running { pid: qemu, accel, transport: Some(transport), exited })
            }
        }
    }

    fn survives_agent(&self) -> bool {
        true
    }

    fn log_tail(&self, n: usize) -> Vec<String> {
        self.console.tail(n)
    }
}

#[cfg(target_os = "linux")]
fn host_vsock_transport() -> Result<crate::transport::host_vsock::HostVsock, BackendError> {
    Ok(crate::transport::host_vsock::HostVsock::new(protocol::GUEST_CID))
}

#[cfg(not(target_os = "linux"))]
fn host_vsock_transport() -> Result<crate::transport::per_port::PerPortUnix, BackendError> {
    Err(BackendError::Setup("host AF_VSOCK is Linux-only".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> QemuConfig {
        QemuConfig {
            accel: Accel::Tcg,
            cpus: 2,
            memory_mib: 1024,
            kernel: "/img/vmlinux".into(),
            initramfs: "/img/initramfs.cpio".into(),
            system: "/img/system.img".into(),
            disk: "/h/vm/disk.qcow2".into(),
            qmp: "/h/vm/qmp.sock".into(),
            console: "/h/vm/console.log".into(),
            vhost_user_vsock: Some("/h/vm/vhost-vsock.sock".into()),
            shares: vec!["/home/u".into()],
            tsc_khz: 2_600_000,
            kernel_hz: Some(250),
            cpu: "max",
        }
    }

    #[test]
    fn command_line_has_no_network_and_shared_memory_for_vhost_user() {
        let a = qemu_args(&cfg()).join(" ");
        assert!(a.contains("-accel tcg"));
        assert!(a.contains("-smp 2 -m 1024M"));
        assert!(a.contains("memory-backend-memfd,id=mem,size=1024M,share=on"));
        assert!(a.contains("vhost-user-vsock-device,chardev=vsock"));
        assert!(a.contains("discard=unmap"));
        assert!(a.contains("-drive id=system,file=/img/system.img,format=raw,if=none,readonly=on -device virtio-blk-device,drive=system,serial=berth-system"), "{a}");
        assert!(a.contains("virtio-blk-device,drive=data,serial=berth-data"), "{a}");
        assert!(a.contains("berth.system=serial:berth-system berth.disk=serial:berth-data"), "{a}");
        assert!(a.contains("berth.share=share0:/home/u"));
        assert!(a.contains("tsc_early_khz=2600000"));
        assert!(a.contains(" loglevel=5 softlockup_all_cpu_backtrace=1 "));
        assert!(a.contains("lpj=10400000"), "TSC ticks per jiffy at 250 Hz: {a}");
        assert!(a.contains("-nodefaults"), "no default NIC or devices");
        // The console is QEMU's own file: it keeps working when the agent is gone.
        assert!(a.contains("-chardev file,id=con,path=/h/vm/console.log -serial chardev:con"), "{a}");
        assert!(!a.contains("stdio"), "nothing of QEMU's may depend on the agent's pipes: {a}");
        for forbidden in ["-netdev", "-nic", "user,", "hostfwd"] {
            assert!(!a.contains(forbidden), "{forbidden} in {a}");
        }
        let mut k = cfg();
        k.vhost_user_vsock = None;
        assert!(qemu_args(&k).join(" ").contains("vhost-vsock-device,guest-cid=3"));
    }

    #[test]
    fn accelerator_order() {
        let has = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(accel_order(None, &[Accel::Kvm, Accel::Tcg], &has(&["kvm", "tcg"]), &[]), vec![Accel::Kvm, Accel::Tcg]);
        assert_eq!(accel_order(None, &[Accel::Kvm, Accel::Tcg], &has(&["tcg"]), &[]), vec![Accel::Tcg], "QEMU without KVM");
        assert_eq!(accel_order(None, &[Accel::Kvm, Accel::Tcg], &has(&["kvm", "tcg"]), &[Accel::Kvm]), vec![Accel::Tcg], "remembered verdict");
        assert_eq!(accel_order(Some(Accel::Tcg), &[Accel::Kvm], &has(&["kvm"]), &[]), vec![Accel::Tcg]);
        assert_eq!(accel_order(None, &[Accel::Hvf, Accel::Tcg], &has(&["hvf", "tcg"]), &[]), vec![Accel::Hvf, Accel::Tcg]);
    }

    #[tokio::test]
    async fn follow_reads_new_lines_and_starts_over_on_a_new_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("console.log");
        std::fs::write(&p, "old 1\nold 2\npart").unwrap();
        let (lines, end) = read_lines(&p);
        assert_eq!(lines, ["old 1", "old 2"]);
        assert_eq!(end, 12, "the unfinished line is read by the follower");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let t = follow(p.clone(), end, Arc::new(AtomicBool::new(true)), move |l| {
            let _ = tx.send(l);
        });
        async fn next(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
            tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a line").expect("open")
        }
        use std::io::Write;
        std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"ial\r\nnext\n").unwrap();
        assert_eq!(next(&mut rx).await, "partial");
        assert_eq!(next(&mut rx).await, "next");
        // A new boot's console (shorter than what was read): read from its start.
        std::fs::write(&p, "new\n").unwrap();
        assert_eq!(next(&mut rx).await, "new");
        t.abort();
    }

    #[test]
    fn console_keeps_the_tail() {
        let c = Console::default();
        for i in 0..(CONSOLE_KEEP + 10) {
            c.push(i.to_string());
        }
        let t = c.tail(3);
        assert_eq!(t, vec![(CONSOLE_KEEP + 7).to_string(), (CONSOLE_KEEP + 8).to_string(), (CONSOLE_KEEP + 9).to_string()]);
    }
}
