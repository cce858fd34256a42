//! Scenarios this suite does not run yet and that no Linux peer has either: rows of n/a with
//! the reason. The Berth VM measures them in its own script for now (`tests/bench/vm`, issue
//! 6: boot against a bare kernel, socket latency, throughput, run through the VM vs native);
//! moving them here means a [`crate::scenario::Scenario`] over a VM subject (the host agent)
//! and a group of its own in `suite.rs`.

use crate::scenario::{Better, Meta, ScenarioResult};

pub fn all(peers: &[&str]) -> Vec<ScenarioResult> {
    let vm = |name: &str, title: &str, description: &str| {
        let meta = Meta {
            name: name.into(),
            title: title.into(),
            description: description.into(),
            unit: "s".into(),
            better: Better::Lower,
            rounds: 0,
            warmup: 0,
            goal: None,
        };
        let reasons: Vec<(&str, String)> = peers
            .iter()
            .map(|p| {
                (
                    *p,
                    if *p == "berthd" {
                        "measured by tests/bench/vm (the VM's own script, see README), not yet \
                         by this suite"
                            .to_string()
                    } else {
                        "runs natively on Linux: no VM to boot or go through".to_string()
                    },
                )
            })
            .collect();
        ScenarioResult::not_applicable(meta, "berthd", &reasons)
    };
    vec![
        vm(
            "vm-boot-ready",
            "VM boot to ready docker socket",
            "Wall time from `berth up` to a docker socket on the host that answers /_ping, \
             through the VM and its vsock forward.",
        ),
        vm(
            "vm-run-rm",
            "`docker run --rm busybox true` through the VM",
            "Wall time of `docker run --rm busybox true` on the host socket forwarded into the VM.",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Status;

    #[test]
    fn planned_rows_are_all_na_with_reasons() {
        let rows = all(&["berthd", "dockerd"]);
        assert_eq!(rows.len(), 2);
        for r in rows {
            assert!(r.comparisons.is_empty());
            for s in &r.subjects {
                assert!(matches!(&s.status, Status::Na { reason } if !reason.is_empty()));
            }
        }
    }
}
