//! `berth-oci`: the command line (runc's shape, the subset berth uses). See the crate docs.

use std::path::PathBuf;
use std::process::ExitCode;

use berth_oci::container::{self, Globals};
use berth_oci::OciError;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth-oci", version, about = "Berth's OCI runtime (runc-compatible subset)")]
struct Cli {
    /// State directory.
    #[arg(long, global = true, default_value = "/run/berth-oci")]
    root: PathBuf,
    /// Where errors are logged (in addition to stderr).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// `json` (runc's format) or `text`.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    /// Accepted for runc compatibility; cgroupfs is always used.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a container (its init waits for `start`).
    Create {
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        id: String,
    },
    /// Let a created container run its process.
    Start { id: String },
    /// Create, start, wait and delete; exits with the container's status.
    Run {
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        id: String,
    },
    /// Print the container's state as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to the init, or with --all to every process.
    Kill {
        #[arg(long, short)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Remove a stopped container (--force: kill it first).
    Delete {
        #[arg(long, short)]
        force: bool,
        id: String,
    },
    Pause { id: String },
    /// Set new cgroup limits (an OCI LinuxResources JSON file, `-` for stdin).
    Update {
        #[arg(long, short)]
        resources: PathBuf,
        id: String,
    },
    Resume { id: String },
    /// Pids of the container's processes.
    Ps {
        #[arg(long, short, default_value = "table")]
        format: String,
        id: String,
    },
    /// Run an extra process in a running container.
    Exec {
        /// An OCI process JSON document.
        #[arg(long, short)]
        process: PathBuf,
        #[arg(long, short)]
        detach: bool,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(long, short)]
        tty: bool,
        id: String,
    },
}

fn signal(s: &str) -> Result<i32, OciError> {
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "WINCH" => libc::SIGWINCH,
        _ => return Err(OciError::Invalid(format!("unknown signal {s:?}"))),
    };
    Ok(n)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let g = Globals { root: cli.root.clone(), log: cli.log.clone(), log_json: cli.log_format == "json" };
    // These end in a container process: first make sure it cannot write to this binary.
    if matches!(cli.cmd, Cmd::Create { .. } | Cmd::Run { .. } | Cmd::Exec { .. }) {
        if let Err(e) = berth_oci::selfexe::ensure_protected_exe() {
            berth_oci::state::log_error(g.log.as_deref(), g.log_json, &e.to_string());
            return ExitCode::from(1);
        }
    }
    let r: Result<i32, OciError> = (|| match cli.cmd {
        Cmd::Create { bundle, pid_file, console_socket, id } => container::create(&g, &id, &bundle, pid_file.as_deref(), console_socket.as_deref()).map(|_| 0),
        Cmd::Start { id } => container::start(&g, &id).map(|_| 0),
        Cmd::Run { bundle, pid_file, console_socket, id } => container::run(&g, &id, &bundle, pid_file.as_deref(), console_socket.as_deref()),
        Cmd::State { id } => container::state_json(&g, &id).map(|s| {
            println!("{s}");
            0
        }),
        Cmd::Kill { all, id, signal: s } => container::kill(&g, &id, signal(s.as_deref().unwrap_or("TERM"))?, all).map(|_| 0),
        Cmd::Delete { force, id } => container::delete(&g, &id, force).map(|_| 0),
        Cmd::Pause { id } => container::pause(&g, &id, true).map(|_| 0),
        Cmd::Resume { id } => container::pause(&g, &id, false).map(|_| 0),
        Cmd::Update { resources, id } => container::update(&g, &id, &resources).map(|_| 0),
        Cmd::Ps { format, id } => container::ps(&g, &id).map(|pids| {
            if format == "json" {
                println!("{}", serde_json::to_string(&pids).unwrap_or_default());
            } else {
                println!("PID");
                for p in pids {
                    println!("{p}");
                }
            }
            0
        }),
        Cmd::Exec { process, detach, pid_file, console_socket, tty, id } => {
            let data = std::fs::read(&process).map_err(|e| OciError::Io(format!("reading {}", process.display()), e))?;
            let mut p: oci_spec::runtime::Process = serde_json::from_slice(&data).map_err(|e| OciError::Invalid(format!("process: {e}")))?;
            if tty {
                p.set_terminal(Some(true));
            }
            container::exec(&g, &id, p, detach, pid_file.as_deref(), console_socket.as_deref())
        }
    })();
    match r {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            berth_oci::state::log_error(g.log.as_deref(), g.log_json, &e.to_string());
            ExitCode::from(1)
        }
    }
}
