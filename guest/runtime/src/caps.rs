//! Capability sets with Docker's semantics (`--cap-add`, `--cap-drop`, `ALL`,
//! `--privileged`). Names are kept as canonical `CAP_*` strings so the seccomp
//! module can gate syscall groups on them without caring about oci-spec types.

use oci_spec::runtime::{Capabilities, Capability};

/// Docker's default set: exactly these 14, nothing more (no NET_ADMIN,
/// SYS_ADMIN, SYS_PTRACE...). Order is irrelevant; kept as Docker documents it.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux 6.x defines (numbers 0..=40), in kernel order. This
/// is what `ALL` and `--privileged` expand to.
pub const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapsError {
    /// Docker's wording for an unknown name.
    #[error("unknown capability: {0:?}")]
    Unknown(String),
}

/// `net_admin`, `NET_ADMIN` and `CAP_NET_ADMIN` all mean the same; `ALL` stays `ALL`.
pub fn normalize(name: &str) -> Result<String, CapsError> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPS.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(CapsError::Unknown(name.to_string()))
    }
}

/// The final capability list, computed as Docker does: privileged gets
/// everything; `add ALL` means everything but the drops; `drop ALL` means only
/// the adds; otherwise defaults minus drops plus adds.
pub fn effective_caps(
    cap_add: &[String],
    cap_drop: &[String],
    privileged: bool,
) -> Result<Vec<String>, CapsError> {
    if privileged {
        return Ok(ALL_CAPS.iter().map(|s| s.to_string()).collect());
    }
    let adds = cap_add
        .iter()
        .map(|c| normalize(c))
        .collect::<Result<Vec<_>, _>>()?;
    let drops = cap_drop
        .iter()
        .map(|c| normalize(c))
        .collect::<Result<Vec<_>, _>>()?;
    let has_all = |v: &[String]| v.iter().any(|c| c == "ALL");
    let mut out: Vec<String> = Vec::new();
    let push = |c: &str, out: &mut Vec<String>| {
        if c != "ALL" && !out.iter().any(|x| x == c) {
            out.push(c.to_string());
        }
    };
    if has_all(&adds) {
        for c in ALL_CAPS {
            if !drops.iter().any(|d| d == c) {
                push(c, &mut out);
            }
        }
    } else if has_all(&drops) {
        for c in &adds {
            push(c, &mut out);
        }
    } else {
        for c in DEFAULT_CAPS {
            if !drops.iter().any(|d| d == c) {
                push(c, &mut out);
            }
        }
        for c in &adds {
            push(c, &mut out);
        }
    }
    Ok(out)
}

/// Converts canonical names to oci-spec's set (its deserializer accepts `CAP_*`).
pub fn to_oci(caps: &[String]) -> Result<Capabilities, CapsError> {
    caps.iter()
        .map(|c| {
            serde_json::from_value::<Capability>(serde_json::Value::String(c.clone()))
                .map_err(|_| CapsError::Unknown(c.clone()))
        })
        .collect()
}

/// The kernel bit mask of a capability list, as shown in /proc/PID/status.
pub fn mask(caps: &[String]) -> u64 {
    caps.iter()
        .filter_map(|c| ALL_CAPS.iter().position(|a| a == c))
        .fold(0u64, |m, bit| m | (1u64 << bit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn default_mask_matches_docker() {
        let caps = effective_caps(&[], &[], false).unwrap();
        assert_eq!(caps.len(), 14);
        assert_eq!(mask(&caps), 0xa80425fb);
    }

    #[test]
    fn add_and_drop_accept_both_spellings() {
        let caps = effective_caps(&s(&["net_admin"]), &s(&["CAP_CHOWN", "KILL"]), false).unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        assert!(!caps.contains(&"CAP_KILL".to_string()));
        assert_eq!(caps.len(), 13);
    }

    #[test]
    fn drop_all_keeps_only_adds() {
        let caps = effective_caps(&s(&["NET_BIND_SERVICE"]), &s(&["ALL"]), false).unwrap();
        assert_eq!(caps, s(&["CAP_NET_BIND_SERVICE"]));
    }

    #[test]
    fn add_all_minus_drops() {
        let caps = effective_caps(&s(&["ALL"]), &s(&["SYS_ADMIN"]), false).unwrap();
        assert_eq!(caps.len(), 40);
        assert!(!caps.contains(&"CAP_SYS_ADMIN".to_string()));
    }

    #[test]
    fn privileged_is_everything() {
        let caps = effective_caps(&[], &s(&["ALL"]), true).unwrap();
        assert_eq!(mask(&caps), (1u64 << 41) - 1);
    }

    #[test]
    fn unknown_name_is_an_error() {
        assert_eq!(
            effective_caps(&s(&["FLY"]), &[], false),
            Err(CapsError::Unknown("FLY".into()))
        );
    }

    #[test]
    fn every_name_converts_to_oci() {
        let all = s(&ALL_CAPS);
        assert_eq!(to_oci(&all).unwrap().len(), 41);
    }
}
