//! The Berth VM against its floors ([`crate::vm`]): boot to a ready docker socket against a
//! bare kernel boot on the same QEMU command line, and what goes through the VM (run, the
//! API round trip, docker cp) against the same berthd running natively.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::exec::Out;
use crate::scenario::{Better, Goal, Meta, Sample, Scenario, Skip, Subject};
use crate::vm::{ping_round_trip, VmSubject, BARE, NATIVE};

/// What the VM scenarios share.
pub struct VmCtx {
    /// The busybox fixture, e.g. `127.0.0.1:5000/bench/busybox:latest`.
    pub busybox: String,
}

/// The VM scenarios, in run order.
pub fn vm_scenarios(ctx: &Arc<VmCtx>) -> Vec<Box<dyn Scenario<VmSubject>>> {
    vec![
        Box::new(BootReady),
        Box::new(RunRm { ctx: ctx.clone() }),
        Box::new(Ping),
        Box::new(CpOut {
            ctx: ctx.clone(),
            containers: Mutex::new(HashMap::new()),
        }),
    ]
}

fn no_engine() -> Skip {
    Skip::NotApplicable("a bare kernel with a busybox /init: no engine to measure".into())
}

/// Untimed for engine scenarios: the engine up and the busybox image present (the VM pulls
/// it from the registry on its namespace's loopback through the agent's egress proxy).
fn engine_with_image(s: &VmSubject, image: &str) -> std::result::Result<(), Skip> {
    if matches!(s, VmSubject::Bare(_)) {
        return Err(no_engine());
    }
    s.engine_ready()?;
    s.docker(&["pull", "-q", image])?;
    Ok(())
}

pub struct BootReady;

impl Scenario<VmSubject> for BootReady {
    fn meta(&self) -> Meta {
        Meta {
            name: "vm-boot-ready".into(),
            title: "VM boot to a ready docker socket".into(),
            description: format!(
                "berth-vm: wall time from `berth up --vm` (the host agent starts, then \
                 vhost-device-vsock, QEMU, the guest's init and berthd, and the agent forwards \
                 the socket) until `docker version` first answers on the host socket; the \
                 agent's stage timestamps are in the JSON. {BARE}: QEMU started with the \
                 agent's own command line (machine, accelerator, CPU, vCPUs, memory, kernel and \
                 its command line) minus the devices, booting a bare busybox initramfs until its \
                 /init prints its first line: the floor of any VM start. Each berth-vm round \
                 starts from `berth down` (agent gone, disk formatted already) and ends with \
                 `berth down`, untimed, so nothing of the bench runs during the {BARE} rounds. \
                 Goal: at most 1.5x the bare boot."
            ),
            unit: "s".into(),
            better: Better::Lower,
            rounds: 5,
            warmup: 0,
            goal: Some(Goal::Within {
                peer: BARE.into(),
                times: 1.5,
            }),
        }
    }
    fn prepare(&self, s: &VmSubject) -> std::result::Result<(), Skip> {
        match s {
            VmSubject::Native(_) => Err(Skip::NotApplicable(
                "berthd as a host process: no VM to boot".into(),
            )),
            // The first boot creates and formats the data disk: not what a start costs.
            VmSubject::Vm(v) => Ok(v.ensure_up().and_then(|_| v.down())?),
            // One untimed boot: fails early on a broken image, warms the page cache.
            VmSubject::Bare(b) => Ok(b.boot().map(|_| ())?),
        }
    }
    fn sample(&self, s: &VmSubject, _round: usize) -> Result<Sample> {
        match s {
            VmSubject::Vm(v) => {
                let boot = v.boot()?;
                v.down()?;
                let stages: Vec<serde_json::Value> = boot
                    .status
                    .iter()
                    .flat_map(|st| &st.stages)
                    .map(|r| {
                        serde_json::json!({
                            "stage": r.stage.as_str(),
                            "elapsed_ms": r.elapsed_ms,
                            "guest_uptime_s": r.guest_uptime_s,
                        })
                    })
                    .collect();
                Ok(Sample {
                    value: boot.elapsed.as_secs_f64(),
                    detail: Some(serde_json::json!({ "stages": stages })),
                })
            }
            VmSubject::Bare(b) => {
                let boot = b.boot()?;
                Ok(Sample {
                    value: boot.elapsed.as_secs_f64(),
                    detail: Some(serde_json::json!({ "guest_uptime_s": boot.guest_uptime_s })),
                })
            }
            VmSubject::Native(_) => Err(Error::Usage(format!("{NATIVE} does not boot"))),
        }
    }
    fn cleanup(&self, s: &VmSubject) {
        if let VmSubject::Vm(v) = s {
            let _ = v.down();
        }
    }
}

pub struct RunRm {
    ctx: Arc<VmCtx>,
}

impl Scenario<VmSubject> for RunRm {
    fn meta(&self) -> Meta {
        Meta {
            name: "vm-run-rm".into(),
            title: "`docker run --rm busybox true` through the VM".into(),
            description: format!(
                "Wall time of `docker run --rm {} true`: berth-vm on the host socket the agent \
                 forwards into the VM (vsock), {NATIVE} on the unix socket of the same berthd \
                 binary (the VM image's static build, same OCI runtime) as a host process.",
                self.ctx.busybox
            ),
            unit: "s".into(),
            better: Better::Lower,
            rounds: 10,
            warmup: 1,
            goal: None,
        }
    }
    fn prepare(&self, s: &VmSubject) -> std::result::Result<(), Skip> {
        engine_with_image(s, &self.ctx.busybox)
    }
    fn sample(&self, s: &VmSubject, _round: usize) -> Result<Sample> {
        Ok(
            s.docker_timed(&["run", "--rm", &self.ctx.busybox, "true"], Out::Null)?
                .elapsed
                .as_secs_f64()
                .into(),
        )
    }
}

/// Requests per ping sample.
pub const PINGS: usize = 200;

pub struct Ping;

impl Scenario<VmSubject> for Ping {
    fn meta(&self) -> Meta {
        Meta {
            name: "vm-ping".into(),
            title: "`GET /_ping` round trip through the VM (kept-alive)".into(),
            description: format!(
                "Mean time of {PINGS} sequential `GET /_ping` requests on one kept-alive \
                 connection (after one untimed request on it), from the bench process itself: \
                 berth-vm through the agent's forwarded socket and vsock, {NATIVE} on berthd's \
                 own unix socket."
            ),
            unit: "s".into(),
            better: Better::Lower,
            rounds: 5,
            warmup: 1,
            goal: None,
        }
    }
    fn prepare(&self, s: &VmSubject) -> std::result::Result<(), Skip> {
        if matches!(s, VmSubject::Bare(_)) {
            return Err(no_engine());
        }
        Ok(s.engine_ready()?)
    }
    fn sample(&self, s: &VmSubject, _round: usize) -> Result<Sample> {
        let sock = s.socket().ok_or_else(|| Error::Usage("no socket".into()))?;
        Ok(ping_round_trip(&sock, PINGS)?.into())
    }
}

/// Size of the file `docker cp` copies out.
pub const CP_MIB: u64 = 64;

pub struct CpOut {
    ctx: Arc<VmCtx>,
    /// Subject name -> the container holding the file.
    containers: Mutex<HashMap<String, String>>,
}

impl Scenario<VmSubject> for CpOut {
    fn meta(&self) -> Meta {
        Meta {
            name: "vm-cp-out".into(),
            title: format!("`docker cp` of {CP_MIB} MiB out of a container, through the VM"),
            description: format!(
                "{CP_MIB} MiB divided by the wall time of `docker cp CONTAINER:/big -` (the tar \
                 stream to /dev/null) from a running busybox container that wrote /big with dd \
                 beforehand: berth-vm through the forwarded socket, {NATIVE} on berthd's own."
            ),
            unit: "MiB/s".into(),
            better: Better::Higher,
            rounds: 5,
            warmup: 1,
            goal: None,
        }
    }
    fn prepare(&self, s: &VmSubject) -> std::result::Result<(), Skip> {
        engine_with_image(s, &self.ctx.busybox)?;
        let script = format!(
            "dd if=/dev/zero of=/big bs=1M count={CP_MIB} 2>/dev/null && touch /ready && exec sleep 3600"
        );
        let id = s
            .docker(&["run", "-d", &self.ctx.busybox, "sh", "-c", &script])?
            .trim()
            .to_string();
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(s.name().to_string(), id.clone());
        let deadline = Instant::now() + Duration::from_secs(120);
        while s.docker(&["exec", &id, "test", "-f", "/ready"]).is_err() {
            if Instant::now() > deadline {
                return Err(Skip::Failed(Error::Unexpected(
                    "the container did not write /big within 120 s".into(),
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
    fn sample(&self, s: &VmSubject, _round: usize) -> Result<Sample> {
        let id = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(s.name())
            .cloned()
            .ok_or_else(|| Error::Unexpected("no container".into()))?;
        let src = format!("{id}:/big");
        let t = s.docker_timed(&["cp", &src, "-"], Out::Null)?;
        Ok((CP_MIB as f64 / t.elapsed.as_secs_f64()).into())
    }
    fn cleanup(&self, s: &VmSubject) {
        let id = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(s.name());
        if let Some(id) = id {
            if let Err(e) = s.docker(&["rm", "-f", &id]) {
                eprintln!("vm-cp-out {}: rm -f {id}: {e}", s.name());
            }
        }
    }
}
