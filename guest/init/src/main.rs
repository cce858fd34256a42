//! berth-init: PID 1 of the Berth VM.
//!
//! In order: mount the kernel filesystems (cgroup2 only: inside our VM cgroups are v2), move the
//! initramfs root onto a bind mount (so the OCI runtime can `pivot_root`), start loading the
//! kernel modules listed by the image build (in parallel, in the background), start the
//! host-facing vsock services and ask the host for the time, mount the read-only system disk
//! (berthd and every other program live there: the initramfs links into it), format (first
//! boot) and mount the persistent data disk at berthd's data root, start berthd on vsock port 2375 (it serves
//! while the network modules still load, and is told on a pipe when they are in), and then
//! reap orphans and keep berthd running until the host asks for a
//! shutdown. Every stage is printed on the console as `berth-init: stage=NAME ...`, which the
//! host agent timestamps.
//!
//! The vsock port numbers are a contract with the host agent (`src-tauri/agent`, `protocol.rs`).

mod boot;
mod clock;
mod cmdline;
mod console;
mod disk;
mod modules;
mod services;
mod supervise;

use std::time::Duration;

fn main() {
    if std::process::id() != 1 && std::env::var_os("BERTH_INIT_NOT_PID1").is_none() {
        eprintln!("berth-init must run as PID 1 of the Berth VM");
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| {
        console::line(&format!("stage=failed reason=\"panic: {info}\""));
    }));
    if let Err(e) = run() {
        console::line(&format!("stage=failed reason=\"{e}\""));
        // Leave the console readable for `berth logs`, then power off so the host sees it.
        std::thread::sleep(Duration::from_millis(200));
        supervise::power_off();
    }
}

fn run() -> Result<(), InitError> {
    boot::mount_early()?;
    boot::enter_bind_root()?;
    let cmd = cmdline::Cmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    console::stage("init-up", "");
    // Modules load on background threads; each step below waits only for what it uses.
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mods = modules::Loader::start("/etc/berth/modules", cpus, !cmd.shares.is_empty())?;
    boot::mount_late()?;
    boot::loopback_up()?;
    // SAFETY: a valid buffer and length.
    unsafe { libc::sethostname(b"berth".as_ptr().cast(), 5) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| InitError::Io("tokio runtime".into(), e))?;
    // The host's time and the host services as soon as vsock is there, while the disk mounts.
    mods.wait_for(&["vmw_vsock_virtio_transport"])?;
    let clock = rt.spawn(clock::sync_once());
    let (shutdown_tx, shutdown_rx) = std::sync::mpsc::channel::<()>();
    services::start_all(&rt, shutdown_tx);
    mods.wait_for(&["virtio_mmio", "virtio_blk", "crc32c_generic", "ext4"])?;
    // The two disks at once: the data disk's mount does not wait for the system disk's (only
    // its first-boot format does: mke2fs is on the system disk).
    let (system_tx, system_rx) = std::sync::mpsc::channel::<()>();
    let data_spec = cmd.data_disk.clone();
    let data = std::thread::spawn(move || {
        let ready = move || system_rx.recv().map_err(|_| InitError::Other("no system disk to format the data disk with".into()));
        disk::prepare(&disk::resolve(&data_spec)?, disk::DATA_ROOT, ready)
    });
    let system = disk::resolve(&cmd.system_disk)?;
    disk::mount_system(&system)?;
    disk::prefetch(&["/system/bin/berthd"]);
    let _ = system_tx.send(());
    console::stage("system-up", &system);
    data.join().map_err(|_| InitError::Other("the data disk thread panicked".into()))??;
    if !cmd.shares.is_empty() {
        mods.wait_for(&["9p", "9pnet_virtio"])?;
    }
    for share in &cmd.shares {
        disk::mount_share(share)?;
    }
    console::stage("disk-up", disk::DATA_ROOT);
    // TLS certificates and image timestamps need the right time before berthd starts.
    match rt.block_on(clock) {
        Ok(Ok(off)) => console::stage("clock-synced", &format!("offset_ms={}", off.0 / 1_000_000)),
        Ok(Err(e)) => console::line(&format!("clock: no time from the host yet: {e}")),
        Err(e) => console::line(&format!("clock: {e}")),
    }
    rt.spawn(clock::keep_in_step());
    // berthd mounts overlays (a `boot` module); it starts serving before the network modules
    // are in and sets up its bridges and nftables when init reports them (see supervise). The
    // `late` ones (iptables compatibility) keep loading in the background.
    mods.wait_class(modules::Class::Boot)?;
    supervise::run(&rt, shutdown_rx, mods)
}

/// Why start-up failed; printed on the console as the reason of the `failed` stage.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{0}: {1}")]
    Sys(String, #[source] nix::Error),
    #[error("{0}")]
    Other(String),
}

