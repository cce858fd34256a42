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
use crate::scenario::{Better, Goal, Meta, Sample, Scenario, Skip};

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

    /// `docker build -q --network none [--no-cache] -t TAG CTX`, as build-bench runs it.
    fn args<'a>(&self, ctx: &'a str, no_cache: bool) -> Vec<&'a str> {
        let mut a = vec!["build", "-q", "--network", "none"];
        if no_cache {
            a.push("--no-cache");
        }
        a.extend(["-t", self.tag(), ctx]);
        a
    }

    fn tag(&self) -> &'static str {
        if self.cold {
            "bench/build:cold"
        } else {
            "bench/build:cached"
        }
    }
}

/// The builder's 10-step Dockerfile (the one `tests/bench/build-bench` uses), FROM the
/// busybox fixture.
pub fn dockerfile(base: &str) -> String {
    format!(
        "FROM {base}\n\
         ENV A=1\n\
         WORKDIR /app\n\
         COPY a.txt /app/\n\
         COPY dir/ /app/dir/\n\
         RUN echo one > /one\n\
         RUN echo two > /two\n\
         LABEL bench=1\n\
         EXPOSE 8080\n\
         CMD [\"sh\"]\n"
    )
}

/// The build context: Dockerfile, a.txt and dir/f1..f20.
pub fn write_context(dir: &std::path::Path, base: &str) -> std::io::Result<()> {
    fs::create_dir_all(dir.join("dir"))?;
    fs::write(dir.join("Dockerfile"), dockerfile(base))?;
    fs::write(dir.join("a.txt"), "a\n")?;
    for i in 1..=20 {
        fs::write(dir.join(format!("dir/f{i}")), format!("file {i}\n"))?;
    }
    Ok(())
}

impl Scenario<Peer> for Build {
    fn meta(&self) -> Meta {
        let steps = "the 10-step Dockerfile of tests/bench/build-bench: FROM busybox, ENV, \
                     WORKDIR, 2 COPY, 2 RUN, LABEL, EXPOSE, CMD";
        if self.cold {
            Meta {
                name: "build-cold".into(),
                title: "`docker build --no-cache` (10 steps)".into(),
                description: format!(
                    "Wall time of `docker build -q --network none --no-cache -t {} <ctx>` \
                     ({steps}; base image present), classic builder API.",
                    self.tag()
                ),
                unit: "s".into(),
                better: Better::Lower,
                rounds: 5,
                warmup: 0,
                goal: None,
            }
        } else {
            Meta {
                name: "build-cached".into(),
                title: "`docker build`, all steps cached".into(),
                description: format!(
                    "Wall time of `docker build -q --network none -t {} <ctx>` ({steps}) \
                     after an identical build, so every step comes from the cache.",
                    self.tag()
                ),
                unit: "s".into(),
                better: Better::Lower,
                rounds: 10,
                warmup: 1,
                goal: Some(Goal::Beat {
                    peer: "dockerd".into(),
                    times: 2.0,
                }),
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
        write_context(&dir, &self.ctx.busybox).ctx(|| "write build context".into())?;
        // One untimed build: tells a missing builder from a broken one, and fills the cache.
        let ctx = dir.display().to_string();
        match peer.docker_timed(&self.args(&ctx, false), Out::Null) {
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
        let t = peer.docker_timed(&self.args(&ctx, self.cold), Out::Null)?;
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
    fn context_has_the_ten_steps() {
        let d = tempfile::tempdir().unwrap();
        write_context(d.path(), "127.0.0.1:5000/bench/busybox:latest").unwrap();
        let df = fs::read_to_string(d.path().join("Dockerfile")).unwrap();
        assert!(df.starts_with("FROM 127.0.0.1:5000/bench/busybox:latest\nENV A=1\n"));
        assert_eq!(df.lines().count(), 10);
        assert_eq!(
            fs::read_to_string(d.path().join("dir/f20")).unwrap(),
            "file 20\n"
        );
    }
}
