//! POST /containers/{id}/update (`docker update`): new cgroup limits and restart policy.
//!
//! As in Docker, a field left at zero (or absent) keeps its value, the new HostConfig is saved
//! for the next start, and a running or paused container gets the limits at once through the
//! runtime's `update`.

use std::sync::Arc;

use bollard_stubs::models::{ContainerUpdateResponse, HostConfig, Resources, RestartPolicy, RestartPolicyNameEnum};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::store::Status;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::http_util::{json, Body};
use berth_runtime::runc::{OciRuntime, Runc};

/// The request body: Docker's Resources, flattened, plus RestartPolicy.
#[derive(Debug, Default, Deserialize)]
pub struct UpdateBody {
    #[serde(flatten)]
    pub resources: Resources,
    #[serde(rename = "RestartPolicy")]
    pub restart_policy: Option<RestartPolicy>,
}

/// Merges `u` into `h` with Docker's rules (zero means unchanged); a refusal names the conflict.
pub fn merge(h: &mut HostConfig, u: &UpdateBody) -> Result<(), ApiError> {
    let r = &u.resources;
    let set = |v: Option<i64>| v.filter(|v| *v != 0);
    if set(r.nano_cpus).is_some() && set(h.cpu_quota).is_some() && set(r.cpu_quota).is_none() {
        return Err(ApiError::bad("Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set"));
    }
    if set(r.cpu_quota).is_some() && set(h.nano_cpus).is_some() && set(r.nano_cpus).is_none() {
        return Err(ApiError::bad("Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set"));
    }
    if let Some(m) = set(r.memory) {
        super::check_memory_limit(m)?;
        if let Some(swap) = set(h.memory_swap).filter(|s| *s > 0) {
            if m > swap && set(r.memory_swap).is_none() {
                return Err(ApiError::bad("Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time"));
            }
        }
    }
    if let Some(p) = &u.restart_policy {
        let none = matches!(p.name, None | Some(RestartPolicyNameEnum::EMPTY) | Some(RestartPolicyNameEnum::NO));
        if h.auto_remove == Some(true) && !none {
            return Err(ApiError::bad("Restart policy cannot be updated because AutoRemove is enabled for the container"));
        }
    }
    macro_rules! take {
        ($($f:ident),*) => {$(
            if let Some(v) = set(r.$f) {
                h.$f = Some(v);
            }
        )*};
    }
    take!(memory, memory_swap, memory_reservation, nano_cpus, cpu_quota, cpu_period, cpu_shares, cpu_realtime_period, cpu_realtime_runtime);
    if let Some(w) = r.blkio_weight.filter(|w| *w != 0) {
        h.blkio_weight = Some(w);
    }
    for (from, to) in [(&r.cpuset_cpus, &mut h.cpuset_cpus), (&r.cpuset_mems, &mut h.cpuset_mems)] {
        if let Some(v) = from.as_ref().filter(|v| !v.is_empty()) {
            *to = Some(v.clone());
        }
    }
    // 0 and -1 both lift the limit (Docker stores the request as given).
    if let Some(p) = r.pids_limit {
        h.pids_limit = Some(p);
    }
    if let Some(p) = u.restart_policy.as_ref().filter(|p| !matches!(p.name, None | Some(RestartPolicyNameEnum::EMPTY))) {
        h.restart_policy = Some(p.clone());
    }
    Ok(())
}

/// POST /containers/{id}/update
pub async fn update(e: &Arc<Engine>, key: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: UpdateBody = crate::images::read_json(req, 1024 * 1024).await?;
    let id = e.containers.get(key)?.id;
    let _guard = e.lifecycle_lock(&id).await;
    let c = e.containers.get(&id)?;
    if matches!(c.state.status, Status::Removing | Status::Dead) {
        return Err(ApiError::Conflict(format!("Cannot update container {id}: container is marked for removal and cannot be \"update\"")));
    }
    let mut h = c.host_config.clone();
    merge(&mut h, &body)?;
    if matches!(c.state.status, Status::Running | Status::Paused) {
        let limits = berth_runtime::spec::update_limits(&super::lifecycle::limits_spec(&h)).map_err(|err| ApiError::bad(err.to_string()))?;
        let (rt, root) = super::lifecycle::runtime_of(e, &id);
        let id2 = id.clone();
        tokio::task::spawn_blocking(move || Runc::new(rt, root).update(&id2, &limits))
            .await?
            .map_err(|err| ApiError::internal(format!("Cannot update container {id}: {err}")))?;
    }
    let c = e.containers.update(&id, |c| {
        c.host_config = h;
        c.clone()
    })?;
    e.events.container("update", &c);
    Ok(json(StatusCode::OK, &ContainerUpdateResponse { warnings: Some(vec![]) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(j: serde_json::Value) -> UpdateBody {
        serde_json::from_value(j).unwrap()
    }

    #[test]
    fn zero_keeps_and_non_zero_replaces() {
        let mut h = HostConfig { memory: Some(64 << 20), cpu_shares: Some(512), pids_limit: Some(20), ..Default::default() };
        merge(&mut h, &body(serde_json::json!({"Memory": 0, "CpuShares": 1024, "NanoCpus": 500000000, "CpusetCpus": ""}))).unwrap();
        assert_eq!((h.memory, h.cpu_shares, h.nano_cpus, h.pids_limit), (Some(64 << 20), Some(1024), Some(500_000_000), Some(20)));
        assert_eq!(h.cpuset_cpus, None);
        merge(&mut h, &body(serde_json::json!({"PidsLimit": -1, "RestartPolicy": {"Name": "always"}}))).unwrap();
        assert_eq!(h.pids_limit, Some(-1));
        assert_eq!(h.restart_policy.unwrap().name, Some(RestartPolicyNameEnum::ALWAYS));
    }

    #[test]
    fn refusals_name_the_conflict() {
        let err = |h: &mut HostConfig, j| merge(h, &body(j)).unwrap_err().to_string();
        let mut h = HostConfig { nano_cpus: Some(1_000_000_000), ..Default::default() };
        assert!(err(&mut h, serde_json::json!({"CpuQuota": 50000})).contains("NanoCPUs has already been set"));
        let mut h = HostConfig { cpu_quota: Some(50000), ..Default::default() };
        assert!(err(&mut h, serde_json::json!({"NanoCpus": 1})).contains("CPU Quota has already been set"));
        let mut h = HostConfig { memory: Some(64 << 20), memory_swap: Some(128 << 20), ..Default::default() };
        assert!(err(&mut h, serde_json::json!({"Memory": 256 << 20})).contains("update the memoryswap at the same time"));
        merge(&mut h, &body(serde_json::json!({"Memory": 256 << 20, "MemorySwap": 512 << 20}))).unwrap();
        assert!(err(&mut h, serde_json::json!({"Memory": 1024})).contains("Minimum memory limit"));
        let mut h = HostConfig { auto_remove: Some(true), ..Default::default() };
        assert!(err(&mut h, serde_json::json!({"RestartPolicy": {"Name": "always"}})).contains("AutoRemove"));
        // What the CLI sends without --restart changes nothing; "no" is allowed with AutoRemove.
        merge(&mut h, &body(serde_json::json!({"RestartPolicy": {"Name": "", "MaximumRetryCount": 0}}))).unwrap();
        assert_eq!(h.restart_policy, None);
        merge(&mut h, &body(serde_json::json!({"RestartPolicy": {"Name": "no"}}))).unwrap();
        assert_eq!(h.restart_policy.unwrap().name, Some(RestartPolicyNameEnum::NO));
    }
}
