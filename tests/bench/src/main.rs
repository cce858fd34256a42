//! berth-bench command line: parse flags, run the suite, write the report files.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use berth_agent::api::Accel;
use berth_bench::peers::{Binaries, PeerKind};
use berth_bench::suite::{self, Options};
use berth_bench::vm::{find_program, VmPaths};
use clap::Parser;

/// berthd side by side with dockerd 20.10 and podman (same docker CLI), and berth's OCI
/// runtime with crun and runc. Needs root; see README "Benchmarks".
#[derive(Debug, Parser)]
#[command(name = "berth-bench")]
struct Cli {
    /// Daemon peers, comma separated (the first one is the reference: berthd).
    #[arg(long, value_delimiter = ',', default_value = "berthd,dockerd,podman")]
    peers: Vec<String>,
    /// Run only these scenarios (see --list).
    #[arg(long, value_delimiter = ',')]
    scenarios: Option<Vec<String>>,
    /// Leave out these scenarios.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Timed rounds: `N` for every scenario, or `NAME=N,...` per scenario.
    #[arg(long, value_delimiter = ',')]
    rounds: Vec<String>,
    /// OCI runtimes for the runtime group, reference first.
    #[arg(long, value_delimiter = ',', default_value = "berth-oci,crun,runc")]
    runtimes: Vec<String>,
    /// Berth's own OCI runtime binary (an OCI CLI: `--root DIR run --bundle DIR ID`); default
    /// target/release/berth-oci.
    #[arg(long, env = "BERTH_OCI_RUNTIME")]
    berth_runtime: Option<PathBuf>,
    #[arg(long, env = "BERTHD_BIN")]
    berthd: Option<PathBuf>,
    #[arg(long, default_value = "/usr/sbin/dockerd")]
    dockerd: PathBuf,
    #[arg(long, default_value = "/usr/bin/podman")]
    podman: PathBuf,
    /// The docker CLI for every peer (default: the first `docker` on PATH).
    #[arg(long)]
    docker_cli: Option<PathBuf>,
    /// The `berth` CLI / host agent for the VM group (default target/release/berth).
    #[arg(long, env = "BERTH_BIN")]
    berth: Option<PathBuf>,
    /// The VM image directory (vm-images/build output; default vm-images/out).
    #[arg(long, env = "BERTH_VM_IMAGES")]
    vm_images: Option<PathBuf>,
    /// The berthd run natively against the VM (default: the VM image's own static build,
    /// target/guest/x86_64-unknown-linux-gnu/guest/berthd).
    #[arg(long)]
    vm_berthd: Option<PathBuf>,
    /// QEMU accelerator for the VM group, forced for both the VM and the bare boot (tcg: the
    /// build machines' /dev/kvm does not run guests).
    #[arg(long, env = "BERTH_ACCEL", default_value = "tcg")]
    vm_accel: String,
    /// Where latest.{md,json}, ratios.svg and timestamped copies go.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write BENCHMARKS.md and tests/bench/results/ even for a partial run
    /// (a full run with default rounds always does).
    #[arg(long)]
    publish: bool,
    /// Never write BENCHMARKS.md.
    #[arg(long, conflicts_with = "publish")]
    no_publish: bool,
    /// Do not drop the page cache before cold pulls.
    #[arg(long)]
    no_drop_caches: bool,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Render an earlier run's JSON (e.g. target/bench/latest.json) again instead of
    /// measuring: markdown and SVG into --out, BENCHMARKS.md with --publish.
    #[arg(long, value_name = "JSON")]
    replot: Option<PathBuf>,
}

fn parse_rounds(v: &[String]) -> anyhow::Result<(Option<usize>, HashMap<String, usize>)> {
    let mut all = None;
    let mut per = HashMap::new();
    for item in v {
        match item.split_once('=') {
            Some((name, n)) => {
                per.insert(name.to_string(), n.parse().context("--rounds NAME=N")?);
            }
            None => all = Some(item.parse().context("--rounds N")?),
        }
    }
    if all == Some(0) || per.values().any(|n| *n == 0) {
        bail!("--rounds must be at least 1");
    }
    Ok((all, per))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let known = suite::all_scenarios();
    if cli.list {
        for (name, title) in &known {
            println!("{name:20} {title}");
        }
        return Ok(());
    }
    let root = berth_tests::workspace_root();
    for name in cli.scenarios.iter().flatten().chain(&cli.skip) {
        if !known.iter().any(|(n, _)| n == name) {
            bail!("unknown scenario {name} (see --list)");
        }
    }
    let peers: Vec<PeerKind> = cli
        .peers
        .iter()
        .map(|p| PeerKind::parse(p))
        .collect::<Result<_, _>>()?;
    let (rounds_all, rounds) = parse_rounds(&cli.rounds)?;
    for name in rounds.keys() {
        if !known.iter().any(|(n, _)| n == name) {
            bail!("unknown scenario {name} in --rounds");
        }
    }
    let cli_path = match cli.docker_cli {
        Some(p) => p,
        None => berth_bench::runtimes::find_on_path("docker")
            .map_err(|_| anyhow::anyhow!("no docker CLI on PATH"))?,
    };
    let opts = Options {
        peers,
        only: cli.scenarios,
        skip: cli.skip,
        rounds_all,
        rounds,
        runtimes: cli.runtimes,
        berth_runtime: cli
            .berth_runtime
            .or_else(|| Some(root.join("target/release/berth-oci"))),
        bins: Binaries {
            berthd: cli
                .berthd
                .unwrap_or_else(|| root.join("target/release/berthd")),
            dockerd: cli.dockerd,
            podman: cli.podman,
            cli: cli_path,
        },
        cache: root.join("target/bench/cache"),
        drop_caches: !cli.no_drop_caches,
        vm: VmPaths {
            berth: cli
                .berth
                .unwrap_or_else(|| root.join("target/release/berth")),
            images: cli.vm_images.unwrap_or_else(|| root.join("vm-images/out")),
            native_berthd: cli
                .vm_berthd
                .unwrap_or_else(|| root.join("target/guest/x86_64-unknown-linux-gnu/guest/berthd")),
            qemu: find_program("qemu-system-x86_64"),
            qemu_img: find_program("qemu-img"),
            vhost_vsock: find_program("vhost-device-vsock"),
            accel: Accel::parse(&cli.vm_accel)
                .with_context(|| format!("--vm-accel {}: kvm, hvf, whpx or tcg", cli.vm_accel))?,
        },
    };
    let out = cli.out.unwrap_or_else(|| root.join("target/bench"));
    std::fs::create_dir_all(&out).with_context(|| format!("mkdir {}", out.display()))?;
    let report = match &cli.replot {
        Some(json) => serde_json::from_slice(
            &std::fs::read(json).with_context(|| format!("read {}", json.display()))?,
        )
        .with_context(|| format!("parse {}", json.display()))?,
        None => suite::run(&opts)?,
    };
    let md = report.markdown();
    let json = serde_json::to_string_pretty(&report)?;
    let svg = berth_bench::plot::ratios_svg(
        &report,
        &format!(
            "How many times better berthd is than each peer (right of 1.00x: berthd better), {}",
            &report.started[..10]
        ),
    )
    .map_err(anyhow::Error::msg)?;
    let stamp = report.started.replace([':', '-'], "");
    for (name, text) in [
        (format!("bench-{stamp}.md"), &md),
        (format!("bench-{stamp}.json"), &json),
        ("latest.md".to_string(), &md),
        ("latest.json".to_string(), &json),
        ("ratios.svg".to_string(), &svg),
    ] {
        std::fs::write(out.join(&name), text).with_context(|| format!("write {name}"))?;
    }
    println!("{md}");
    eprintln!("wrote {}/latest.{{md,json}} and ratios.svg", out.display());
    let publish = !cli.no_publish && (cli.publish || (cli.replot.is_none() && opts.is_full_run()));
    if publish {
        let results = root.join("tests/bench/results");
        std::fs::create_dir_all(&results)?;
        std::fs::write(results.join("ratios.svg"), &svg)?;
        std::fs::write(results.join("latest.json"), &json)?;
        std::fs::write(
            root.join("BENCHMARKS.md"),
            report.benchmarks_document("tests/bench/results/ratios.svg"),
        )?;
        eprintln!("wrote BENCHMARKS.md and tests/bench/results/");
    } else {
        eprintln!("partial run: BENCHMARKS.md left as it is (--publish to overwrite)");
    }
    if !report.leak_check.leaks.is_empty() {
        bail!("the run left things behind: {:?}", report.leak_check.leaks);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_flags() {
        let (all, per) = parse_rounds(&["3".into(), "run-rm=20".into()]).unwrap();
        assert_eq!(all, Some(3));
        assert_eq!(per["run-rm"], 20);
        assert!(parse_rounds(&["0".into()]).is_err());
        assert!(parse_rounds(&["x".into()]).is_err());
        Cli::try_parse_from(["berth-bench", "--peers", "berthd,dockerd", "--rounds", "2"]).unwrap();
    }
}
