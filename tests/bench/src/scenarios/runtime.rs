//! The runtime alone: `RUNTIME run` of a prepared bundle, no daemon around it.

use crate::error::Result;
use crate::runtimes::OciRuntime;
use crate::scenario::{Better, Meta, Sample, Scenario, Skip};

pub struct RuntimeRun;

impl Scenario<OciRuntime> for RuntimeRun {
    fn meta(&self) -> Meta {
        Meta {
            name: "runtime-run".into(),
            title: "`RUNTIME run` of a prepared bundle (`/bin/true`)".into(),
            description: "Wall time of `RUNTIME --root STATE run --bundle B ID` (create \
                          namespaces and cgroups, pivot into the read-only busybox rootfs, exec \
                          /bin/true, wait, delete) on the same bundle for every runtime, cgroups \
                          on (cgroup v1 here)."
                .into(),
            unit: "s".into(),
            better: Better::Lower,
            rounds: 30,
            warmup: 3,
            goal: None,
        }
    }
    fn prepare(&self, rt: &OciRuntime) -> std::result::Result<(), Skip> {
        // One run outside the clock: a runtime that cannot run this bundle fails here.
        rt.run_once()?;
        Ok(())
    }
    fn sample(&self, rt: &OciRuntime, _round: usize) -> Result<Sample> {
        Ok(rt.run_once()?.elapsed.as_secs_f64().into())
    }
}
