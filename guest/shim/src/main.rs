//! `berth-shim`: see the crate docs of `berth_shim`.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(name = "berth-shim", about = "Per-container monitor process of berthd")]
struct Cli {
    #[arg(long)]
    id: String,
    #[arg(long)]
    bundle: PathBuf,
    #[arg(long)]
    state_dir: PathBuf,
    #[arg(long)]
    runtime: PathBuf,
    #[arg(long)]
    runtime_root: PathBuf,
    #[arg(long)]
    log_path: PathBuf,
    #[arg(long, default_value_t = 20 * 1024 * 1024)]
    log_max_size: u64,
    #[arg(long, default_value_t = 5)]
    log_max_files: u32,
    /// No log file (Docker's `none` driver).
    #[arg(long)]
    no_log: bool,
    #[arg(long)]
    tty: bool,
    #[arg(long)]
    stdin: bool,
    /// Docker's StdinOnce: the first attached client's EOF closes the container's stdin.
    #[arg(long)]
    stdin_once: bool,
    /// Inherited pipe to report readiness on (set by `berth_shim::spawn`).
    #[arg(long)]
    ready_fd: Option<i32>,
    /// Hold the container's start until this many attach sessions are connected (max 5 s).
    #[arg(long, default_value_t = 0)]
    wait_attach: usize,
}

fn main() {
    let c = Cli::parse();
    std::process::exit(berth_shim::server::run(berth_shim::server::ShimArgs {
        id: c.id,
        bundle: c.bundle,
        state_dir: c.state_dir,
        runtime: c.runtime,
        runtime_root: c.runtime_root,
        log_path: c.log_path,
        log_max_size: c.log_max_size,
        log_max_files: c.log_max_files,
        no_log: c.no_log,
        tty: c.tty,
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        ready_fd: c.ready_fd,
        wait_attach: c.wait_attach,
    }))
}
