//! Pull of the ~30 MB image from the peer's registry: cold (nothing present, page cache
//! dropped) and warm (every layer present).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::Ctx;
use crate::error::{Error, IoContext, Result};
use crate::exec::Out;
use crate::peers::Peer;
use crate::procs;
use crate::scenario::{Better, Goal, Meta, Sample, Scenario, Skip};

pub struct Pull {
    ctx: Arc<Ctx>,
    cold: bool,
}

impl Pull {
    pub fn cold(ctx: &Arc<Ctx>) -> Self {
        Pull {
            ctx: ctx.clone(),
            cold: true,
        }
    }
    pub fn warm(ctx: &Arc<Ctx>) -> Self {
        Pull {
            ctx: ctx.clone(),
            cold: false,
        }
    }

    /// No image left at all, so the next pull fetches and unpacks every layer: `rmi -f` of
    /// every image (each peer then drops the layers no image uses; berthd garbage-collects
    /// after rmi), checked empty. Not `image prune -a`: podman 4.3's compat API refuses the
    /// CLI's `dangling=false` filter.
    fn clean_images(&self, peer: &Peer) -> Result<()> {
        let ids = peer.docker(&["images", "-aq", "--no-trunc"])?;
        let mut ids: Vec<&str> = ids.split_whitespace().collect();
        ids.sort();
        ids.dedup();
        if !ids.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(ids);
            peer.docker(&args)?;
        }
        let left = peer.docker(&["images", "-aq"])?;
        if !left.trim().is_empty() {
            return Err(Error::Unexpected(format!(
                "images left after rmi + prune: {}",
                left.trim()
            )));
        }
        Ok(())
    }

    /// The pulled image must be the pushed one.
    fn check_pulled(&self, peer: &Peer) -> Result<()> {
        let id = peer.docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            &self.ctx.pull_ref,
        ])?;
        if id.trim() != self.ctx.pull_image_id {
            return Err(Error::Unexpected(format!(
                "pulled image id {} != pushed {}",
                id.trim(),
                self.ctx.pull_image_id
            )));
        }
        Ok(())
    }
}

/// Drop the kernel's clean caches, then read back in what no peer should pay for: the
/// registry's blobs (served from memory, as a local registry would) and the programs (the
/// CLI, the daemons and their helpers), so a cold pull measures fetching, writing and
/// unpacking the layer, not paging in executables.
pub fn drop_page_cache(storage: &Path, programs: &[std::path::PathBuf]) -> Result<()> {
    nix::unistd::sync();
    fs::write("/proc/sys/vm/drop_caches", "3").ctx(|| "drop_caches".into())?;
    let mut stack = vec![storage.to_path_buf()];
    let mut files: Vec<std::path::PathBuf> = programs.to_vec();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)
            .ctx(|| format!("read {}", d.display()))?
            .flatten()
        {
            let ft = e.file_type().ctx(|| "file type".into())?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                files.push(e.path());
            }
        }
    }
    for f in files {
        if let Ok(mut r) = fs::File::open(&f) {
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        }
    }
    Ok(())
}

impl Scenario<Peer> for Pull {
    fn meta(&self) -> Meta {
        if self.cold {
            Meta {
                name: "pull-cold".into(),
                title: "pull ~30 MB image, cold".into(),
                description: format!(
                    "Wall time of `docker pull {}` with no image present (`rmi -f` of every \
                     image before each run, checked empty), after `sync` and a page cache drop \
                     (the registry's blobs and all programs read back in). The pulled image id \
                     is checked against the pushed config digest.",
                    self.ctx.pull_ref
                ),
                unit: "s".into(),
                better: Better::Lower,
                rounds: 5,
                warmup: 0,
                goal: Some(Goal::Beat {
                    peer: "dockerd".into(),
                    times: 1.5,
                }),
            }
        } else {
            Meta {
                name: "pull-warm".into(),
                title: "pull, all layers present".into(),
                description: format!(
                    "Wall time of `docker pull {}` when the image and all its layers are present.",
                    self.ctx.pull_ref
                ),
                unit: "s".into(),
                better: Better::Lower,
                rounds: 10,
                warmup: 1,
                goal: None,
            }
        }
    }

    fn prepare(&self, peer: &Peer) -> std::result::Result<(), Skip> {
        // One untimed pull: a pull that cannot work shows up here, and warm runs need it.
        peer.docker(&["pull", "-q", &self.ctx.pull_ref])?;
        self.check_pulled(peer)?;
        Ok(())
    }

    fn sample(&self, peer: &Peer, _round: usize) -> Result<Sample> {
        if self.cold {
            self.clean_images(peer)?;
            if self.ctx.drop_caches {
                drop_page_cache(&self.ctx.registry_storage, &self.ctx.programs)?;
            } else {
                nix::unistd::sync();
            }
        }
        let pids = peer.processes();
        let cpu0 = procs::cpu_seconds(&pids);
        let t = peer.docker_timed(&["pull", &self.ctx.pull_ref], Out::Null)?;
        // Daemon-side CPU (including reaped helpers such as dockerd's unpacker): shows
        // whether a pull is CPU-bound. Processes that came and went are in cutime of their
        // parent, which is in `pids`.
        let cpu = procs::cpu_seconds(&peer.processes()) - cpu0;
        self.check_pulled(peer)?;
        Ok(Sample {
            value: t.elapsed.as_secs_f64(),
            detail: Some(json!({ "daemon_cpu_s": (cpu * 100.0).round() / 100.0 })),
        })
    }
}
