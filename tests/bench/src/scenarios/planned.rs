//! Scenarios whose feature has not landed in Berth yet and that no Linux peer has either:
//! shown as rows of n/a with the reason. When the feature lands, replace the entry with a real
//! [`crate::scenario::Scenario`] (the VM ones take the host agent as their subject).

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
                        "the Berth VM (host agent, issue 6) has not landed yet".to_string()
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
