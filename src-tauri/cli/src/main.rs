//! `berth`: start and stop the Berth engine, show its staged status, its console, a shell in
//! its VM. A thin client of the host agent (crate berth-agent), which it starts on demand.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use berth_agent::api::{Accel, BackendKind, EngineState, Event, SettingsPatch, Stage, Status};
use berth_agent::{AgentClient, Home};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth", version, about = "Berth: a desktop container platform")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the engine (on Linux natively unless --vm) and forward its socket.
    Up {
        /// Run berthd inside the Berth VM (always so on macOS and Windows).
        #[arg(long)]
        vm: bool,
        /// Run berthd natively (Linux).
        #[arg(long, conflicts_with = "vm")]
        native: bool,
        #[arg(long)]
        cpus: Option<u32>,
        /// VM memory in MiB.
        #[arg(long)]
        memory: Option<u32>,
        /// Data disk size in GiB (applies when the disk is created).
        #[arg(long)]
        disk: Option<u32>,
        /// Force an accelerator: kvm, hvf, whpx or tcg (default: probe).
        #[arg(long)]
        accel: Option<String>,
        /// Share a host folder into the VM at the same path (repeatable).
        #[arg(long = "share")]
        shares: Vec<String>,
    },
    /// Stop the engine (and the agent).
    Down,
    /// Show the engine's state and readiness stages with timestamps.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The VM's console (berthd's log when native).
    Logs {
        #[arg(short = 'n', long, default_value_t = 100)]
        tail: usize,
        #[arg(short, long)]
        follow: bool,
    },
    /// A debug shell inside the VM.
    Shell,
    /// Everything needed to report a start-up problem.
    Diagnose,
    /// Run the agent in the foreground (started for you by `berth up`).
    #[command(hide = true)]
    Agent,
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let code = match rt.block_on(run(cli)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth: {e:#}");
            1
        }
    };
    rt.shutdown_timeout(Duration::from_millis(100));
    std::process::exit(code);
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let home = Home::from_env();
    match cli.cmd {
        Cmd::Agent => {
            berth_agent::run_agent(home).await.context("agent")?;
            Ok(0)
        }
        Cmd::Up { vm, native, cpus, memory, disk, accel, shares } => {
            let accel = match accel {
                Some(a) => Some(Accel::parse(&a).with_context(|| format!("unknown accelerator {a:?} (kvm, hvf, whpx, tcg)"))?),
                None => None,
            };
            let backend = if vm { Some(BackendKind::Vm) } else if native { Some(BackendKind::Native) } else { Some(BackendKind::Auto) };
            let patch = SettingsPatch {
                backend,
                cpus,
                memory_mib: memory,
                disk_gib: disk,
                accel,
                shares: if shares.is_empty() { None } else { Some(shares) },
            };
            up(&home, patch).await
        }
        Cmd::Down => {
            // A VM whose agent is gone is stopped too: a new agent adopts it first.
            let c = reattach(&home).await?;
            if !c.is_running().await {
                println!("Berth is not running");
                return Ok(0);
            }
            let pid = c.status().await.map(|s| s.agent_pid).ok();
            c.shutdown().await?;
            // Wait for the agent to be gone, so a following `berth up` starts afresh.
            for _ in 0..200 {
                if !c.is_running().await && pid.map(|p| !alive(p)).unwrap_or(true) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            println!("Berth is stopped");
            Ok(0)
        }
        Cmd::Status { json } => {
            let c = reattach(&home).await?;
            match c.status().await {
                Ok(s) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&s)?);
                    } else {
                        print_status(&s);
                    }
                    Ok(if s.state == EngineState::Running { 0 } else { 3 })
                }
                Err(berth_agent::client::ClientError::NotRunning(_)) => {
                    if json {
                        println!("{}", serde_json::json!({"state": "stopped", "agent": "not running"}));
                    } else {
                        println!("Berth is not running (no agent)");
                    }
                    Ok(3)
                }
                Err(e) => Err(e.into()),
            }
        }
        Cmd::Logs { tail, follow } => {
            let c = reattach(&home).await?;
            let mut events = if follow { Some(c.events().await?) } else { None };
            for l in c.logs(tail).await? {
                println!("{l}");
            }
            if let Some(ev) = events.as_mut() {
                while let Some(e) = ev.next().await {
                    if let Ok(Event::Log { line }) = e {
                        println!("{line}");
                    }
                }
            }
            Ok(0)
        }
        Cmd::Shell => shell(&home).await,
        Cmd::Diagnose => {
            let c = reattach(&home).await?;
            let d = c.diagnostics().await?;
            print_status(&d.status);
            println!("\nChecks:");
            for ch in &d.checks {
                println!("  [{}] {} {}", if ch.ok { "ok" } else { "!!" }, ch.name, ch.detail);
            }
            println!("\nLast console lines:");
            for l in &d.console_tail {
                println!("  {l}");
            }
            Ok(0)
        }
    }
}

/// True while process `pid` runs (a zombie does not: not every init reaps orphans at once).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()), Some('Z' | 'X')),
        Err(_) => false,
    }
}

/// The agent's client, re-attaching to a VM whose agent is gone (see
/// [`AgentClient::connect_or_reattach`]).
async fn reattach(home: &Home) -> anyhow::Result<AgentClient> {
    let exe = std::env::current_exe().context("locating the berth executable")?;
    Ok(AgentClient::connect_or_reattach(home, &exe).await?)
}

async fn up(home: &Home, patch: SettingsPatch) -> anyhow::Result<i32> {
    let exe = std::env::current_exe().context("locating the berth executable")?;
    let c = AgentClient::connect_or_spawn(home, &exe).await?;
    // Print stages as they happen.
    let mut events = c.events().await?;
    let printer = tokio::spawn(async move {
        while let Some(Ok(e)) = events.next().await {
            if let Event::Stage { record } = e {
                println!("  {:<18} +{:>7.3} s", record.stage.as_str(), record.elapsed_ms as f64 / 1000.0);
                let _ = std::io::stdout().flush();
                if record.stage == Stage::SocketForwarded {
                    break;
                }
            }
        }
    });
    println!("Starting Berth...");
    let s = c.up(&patch).await?;
    // The last stage event may still be on its way; a failed start never sends it.
    let _ = tokio::time::timeout(Duration::from_millis(50), printer).await;
    if let Some(n) = &s.note {
        println!("Note: {n}");
    }
    match s.state {
        EngineState::Running => {
            println!(
                "Berth is up ({}{}). Use it with:\n  export DOCKER_HOST={}\nor: docker context use berth",
                s.backend.as_deref().unwrap_or("?"),
                s.accel.map(|a| format!(", {}", a.as_str())).unwrap_or_default(),
                s.docker_host
            );
            Ok(0)
        }
        _ => {
            print_failure(&s);
            Ok(1)
        }
    }
}

fn print_failure(s: &Status) {
    if let Some(f) = &s.failure {
        match f.stage {
            Some(st) => eprintln!("Berth failed at stage {}: {}", st.as_str(), f.message),
            None => eprintln!("Berth failed: {}", f.message),
        }
        if let Some(l) = &f.log_line {
            eprintln!("  log: {l}");
        }
        eprintln!("  more: berth logs, berth diagnose");
    } else {
        eprintln!("Berth is {:?}", s.state);
    }
}

fn fmt_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03} UTC", ms % 1000)
}

fn print_status(s: &Status) {
    let state = serde_json::to_value(s.state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    let mut head = format!("Berth: {state}");
    if let Some(b) = &s.backend {
        head += &format!(" ({b}");
        if let Some(a) = s.accel {
            head += &format!(", {}", a.as_str());
        }
        head += ")";
    }
    if let Some(p) = s.pid {
        head += &format!(", pid {p}");
    }
    println!("{head}");
    if let Some(n) = &s.note {
        println!("Note: {n}");
    }
    if !s.expected_stages.is_empty() {
        println!("Stages:");
        for st in &s.expected_stages {
            match s.stages.iter().find(|r| r.stage == *st) {
                Some(r) => println!(
                    "  [x] {:<18} {}  +{:.3} s{}",
                    st.as_str(),
                    fmt_time(r.at_ms),
                    r.elapsed_ms as f64 / 1000.0,
                    r.guest_uptime_s.map(|u| format!("  (guest uptime {u:.3} s)")).unwrap_or_default()
                ),
                None => println!("  [ ] {}", st.as_str()),
            }
        }
    }
    if s.state == EngineState::Running {
        println!("DOCKER_HOST={}", s.docker_host);
    }
    for p in &s.ports {
        println!("port {}:{} -> {} {}", p.host_ip, p.host_port, &p.container_id[..p.container_id.len().min(12)], p.container_port);
    }
    if s.failure.is_some() {
        print_failure(s);
    }
}

/// Raw terminal for the shell, restored on exit.
struct RawTerm(Option<libc::termios>);

impl RawTerm {
    fn enter() -> RawTerm {
        // SAFETY: termios calls on stdin with valid buffers.
        unsafe {
            if libc::isatty(0) == 0 {
                return RawTerm(None);
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return RawTerm(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawTerm(Some(saved))
        }
    }
}

impl Drop for RawTerm {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restoring the saved attributes.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

fn term_size() -> (u16, u16) {
    // SAFETY: TIOCGWINSZ into a valid winsize.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0 {
            (ws.ws_row, ws.ws_col)
        } else {
            (24, 80)
        }
    }
}

async fn shell(home: &Home) -> anyhow::Result<i32> {
    let c = reattach(home).await?;
    let (rows, cols) = term_size();
    let pty = match c.shell(rows, cols).await {
        Ok(p) => p,
        Err(berth_agent::client::ClientError::NotRunning(_)) => bail!("Berth is not running (berth up --vm first)"),
        Err(e) => return Err(e.into()),
    };
    let _raw = RawTerm::enter();
    let (mut r, mut w) = tokio::io::split(pty);
    let out = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        let _ = tokio::io::copy(&mut r, &mut stdout).await;
    });
    let input = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let _ = tokio::io::copy(&mut stdin, &mut w).await;
    });
    let _ = out.await;
    input.abort();
    Ok(0)
}
