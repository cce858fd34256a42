//! berthd: the Berth engine daemon. Flags mean what dockerd's do.

use std::path::PathBuf;

use anyhow::Context;
use berth_engine::config::{DEFAULT_DATA_ROOT, DEFAULT_EXEC_ROOT, DEFAULT_HOST};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser, Debug)]
#[command(name = "berthd", version, about = "Berth engine: a Docker Engine API daemon")]
struct Args {
    /// Socket to listen on (unix:///path; inside the VM also vsock://:PORT and
    /// vsock+framed://:PORT, half-close carried in frames); repeatable.
    #[arg(short = 'H', long = "host", default_value = DEFAULT_HOST)]
    host: Vec<String>,
    /// Where images, containers and volumes live.
    #[arg(long, default_value = DEFAULT_DATA_ROOT)]
    data_root: PathBuf,
    /// Runtime state (sockets, per-container runtime dirs).
    #[arg(long, default_value = DEFAULT_EXEC_ROOT)]
    exec_root: PathBuf,
    /// Write the daemon's pid here.
    #[arg(short = 'p', long)]
    pidfile: Option<PathBuf>,
    /// debug, info, warn, error (RUST_LOG overrides).
    #[arg(short = 'l', long, default_value = "info")]
    log_level: String,
    /// Registry reached over plain HTTP (host:port); repeatable. Loopback is always allowed.
    #[arg(long = "insecure-registry")]
    insecure_registry: Vec<String>,
    /// Upstream DNS server for containers' embedded resolver (IP or IP:PORT); repeatable.
    /// Default: the nameservers of /etc/resolv.conf.
    #[arg(long = "dns")]
    dns: Vec<String>,
    /// Largest build context (unpacked bytes) that `docker build` may send.
    #[arg(long = "max-build-context", default_value_t = berth_engine::build::DEFAULT_MAX_CONTEXT_BYTES)]
    max_build_context: u64,
    /// OCI runtime for new containers: `runc`, or a path (default: berth-oci next to berthd).
    #[arg(long = "default-runtime")]
    default_runtime: Option<std::path::PathBuf>,
    /// Inside the Berth VM: an inherited pipe on which init writes `ok` once the kernel's
    /// network modules are in (or `error: REASON`). The API is served at once; bridges and
    /// nftables are set up after that line, and what needs them waits.
    #[arg(long = "network-ready-fd", value_name = "FD")]
    network_ready_fd: Option<i32>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(fd) = args.network_ready_fd {
        // Never inherited by what berthd runs (nft, shims, containers).
        // SAFETY: fcntl on a number; an fd that is not open fails with EBADF.
        if fd < 3 || unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            anyhow::bail!("--network-ready-fd {fd}: not an open descriptor above stderr");
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{},hyper=warn,reqwest=warn", args.log_level)));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let config = berth_engine::Config {
        hosts: args.host,
        data_root: args.data_root,
        exec_root: args.exec_root,
        pidfile: args.pidfile,
        insecure_registries: args.insecure_registry,
        dns: args.dns,
        build_context_max_bytes: args.max_build_context,
        default_runtime: args.default_runtime,
        network_ready_fd: args.network_ready_fd,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        berth_engine::run(config, shutdown).await.map_err(|e| anyhow::anyhow!("{e}"))
    })
}
