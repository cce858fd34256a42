//! `docker build` of a 3-step Dockerfile, cold (`--no-cache`) and cached, through the classic
//! `/build` API (DOCKER_BUILDKIT=0 for every peer). berthd's builder is being written (issue
//! 8): until it lands, berthd answers that it has no `/build` and is reported n/a.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use super::{ensure_image, missing_feature, probe_endpoint, Ctx};
use crate::error::{IoContext, Result};
use crate::exec::Out;
use crate::peers::Peer;
use crate::scenario::{Better, Meta, Sample, Scenario, Skip};

pub struct Build {
    ctx: Arc<Ctx>,
    cold: bool,
}

impl Build {
    pub fn cold(ctx: &Arc<Ctx>) -> Self {
        Build {
            ctx: ctx.clone(),
            cold: true,
        }
    }
    pub fn cached(ctx: &Arc<Ctx>) -> Self {
        Build {
            ctx: ctx.clone(),
            cold: false,
        }
    }

    fn context_dir(peer: &Peer) -> PathBuf {
        peer.dir().join("build-context")
    }

    fn tag(&self) -> &'static str {
        if self.cold {
            "bench/build:cold"
        } else {
            "bench/build:cached"
        }
    }
}

/// The Dockerfile: FROM the fixture, one RUN, one COPY, CMD.
pub fn dockerfile(base: &str) -> String {
    format!(
        "FROM {base}\n\
         RUN echo built > /built.txt && seq 1 1000 > /seq.txt\n\
         COPY payload.bin /payload.bin\n\
         CMD [\"cat\", \"/built.txt\"]\n"
    )
}

/// 1 MiB of deterministic, incompressible-looking bytes.
pub fn payload() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

impl Scenario<Peer> for Build {
    fn meta(&self) -> Meta {
        let steps = "FROM busybox, RUN echo + seq, COPY of a 1 MiB file, CMD";
        if self.cold {
            Meta {
                name: "build-cold".into(),
                title: "`docker build --no-cache` (3 steps)".into(),
                description: format!(
                    "Wall time of `docker build --no-cache -t {} <ctx>` ({steps}; base image \
                     present), classic builder API.",
                    self.tag()
                ),
                unit: "s".into(),
                better: Better::Lower,
                rounds: 5,
                warmup: 0,
            }
        } else {
            Meta {
                name: "build-cached".into(),
                title: "`docker build`, all steps cached".into(),
                description: format!(
                    "Wall time of `docker build -t {} <ctx>` ({steps}) after an identical \
                     build, so every step comes from the cache.",
                    self.tag()
                ),
                unit: "s".into(),
                better: Better::Lower,
                rounds: 10,
                warmup: 1,
            }
        }
    }

    fn prepare(&self, peer: &Peer) -> std::result::Result<(), Skip> {
        if let Some(reason) = probe_endpoint(peer, "POST", "/build") {
            return Err(Skip::NotApplicable(format!(
                "no image builder yet (issue 8): {reason}"
            )));
        }
        ensure_image(peer, &self.ctx.busybox)?;
        let dir = Self::context_dir(peer);
        fs::create_dir_all(&dir).ctx(|| "mkdir build context".into())?;
        fs::write(dir.join("Dockerfile"), dockerfile(&self.ctx.busybox))
            .ctx(|| "write Dockerfile".into())?;
        fs::write(dir.join("payload.bin"), payload()).ctx(|| "write payload".into())?;
        // One untimed build: tells a missing builder from a broken one, and fills the cache.
        let ctx = dir.display().to_string();
        match peer.docker_timed(&["build", "-t", self.tag(), &ctx], Out::Null) {
            Ok(_) => Ok(()),
            Err(e) => match missing_feature(&e) {
                Some(line) => Err(Skip::NotApplicable(format!(
                    "no image builder yet (issue 8): {line}"
                ))),
                None => Err(Skip::Failed(e)),
            },
        }
    }

    fn sample(&self, peer: &Peer, _round: usize) -> Result<Sample> {
        let ctx = Self::context_dir(peer).display().to_string();
        let mut args = vec!["build"];
        if self.cold {
            args.push("--no-cache");
        }
        args.extend(["-t", self.tag(), &ctx]);
        let t = peer.docker_timed(&args, Out::Null)?;
        Ok(t.elapsed.as_secs_f64().into())
    }

    fn cleanup(&self, peer: &Peer) {
        let _ = peer.docker(&["rmi", "-f", self.tag()]);
        let _ = peer.docker(&["image", "prune", "-f"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_deterministic() {
        assert_eq!(payload(), payload());
        assert_eq!(payload().len(), 1 << 20);
        let d = dockerfile("127.0.0.1:5000/bench/busybox:latest");
        assert!(d.starts_with("FROM 127.0.0.1:5000/bench/busybox:latest\nRUN "));
        assert_eq!(d.lines().count(), 4);
    }
}
