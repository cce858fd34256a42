//! `HostConfig.LogConfig` (`docker run --log-driver/--log-opt`): the rotation limits of a
//! container's log file. The shim always writes Docker's json-file format, so `json-file` and
//! `local` (and no driver at all) are accepted, and `none` keeps no log file; other drivers
//! are refused at create instead of being silently ignored. Rotation is on by default (20 MB
//! × 5, like Docker's `local` driver), because Desktop users never tune daemon.json.

use bollard_stubs::models::HostConfig;

use crate::error::ApiError;

/// Default size of one log file before it rotates.
pub const DEFAULT_MAX_SIZE: u64 = 20 << 20;
/// Default number of log files kept (the live one included).
pub const DEFAULT_MAX_FILES: u32 = 5;
/// Smallest `max-size` accepted: one record must fit, and tiny files would rotate per line.
const MIN_MAX_SIZE: u64 = 4096;

/// Where a container's log disk use is capped: about `max_size × max_files` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    pub max_size: u64,
    pub max_files: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits { max_size: DEFAULT_MAX_SIZE, max_files: DEFAULT_MAX_FILES }
    }
}

/// Docker's `none` driver: the output goes to attached clients only, and `docker logs` has
/// nothing to read (501, Docker's "does not support reading").
pub fn discards(h: &HostConfig) -> bool {
    h.log_config.as_ref().and_then(|c| c.typ.as_deref()) == Some("none")
}

/// The limits a container's LogConfig asks for, or a 400 for what Berth cannot honour.
pub fn limits(h: &HostConfig) -> Result<LogLimits, ApiError> {
    let mut l = LogLimits::default();
    let Some(cfg) = &h.log_config else { return Ok(l) };
    let driver = cfg.typ.as_deref().unwrap_or("");
    if !matches!(driver, "" | "json-file" | "local" | "none") {
        // Docker's own words for an unknown driver: clients and scripts match on them. The
        // drivers Berth has are listed by GET /info (Plugins.Log).
        return Err(ApiError::bad(format!("logger: no log driver named '{driver}' is registered")));
    }
    if driver == "none" {
        if let Some(k) = cfg.config.iter().flatten().map(|(k, _)| k).next() {
            return Err(ApiError::bad(format!("unknown log opt '{k}' for none log driver")));
        }
        return Ok(l);
    }
    for (k, v) in cfg.config.iter().flatten() {
        match k.as_str() {
            "max-size" => {
                // Docker's json-file: -1 means unlimited. Berth keeps a cap anyway (a Desktop
                // disk must not fill up), so -1 means the default size.
                if v.trim() == "-1" {
                    continue;
                }
                let n = parse_size(v).ok_or_else(|| ApiError::bad(format!("invalid log-opt max-size {v:?}")))?;
                if n < MIN_MAX_SIZE {
                    return Err(ApiError::bad(format!("log-opt max-size {v:?} is below the minimum of {MIN_MAX_SIZE} bytes")));
                }
                l.max_size = n;
            }
            "max-file" => {
                l.max_files = match v.trim().parse::<u32>() {
                    Ok(n) if (1..=1000).contains(&n) => n,
                    _ => return Err(ApiError::bad(format!("invalid log-opt max-file {v:?}: a number from 1 to 1000"))),
                };
            }
            // Accepted and without effect here: these only shape other drivers' output or
            // ask for compression, which this writer does not do.
            "compress" | "mode" | "max-buffer-size" | "labels" | "labels-regex" | "env" | "env-regex" | "tag" => {}
            other => return Err(ApiError::bad(format!("unknown log opt {other:?} for the json-file log driver"))),
        }
    }
    Ok(l)
}

/// What the record keeps and inspect shows: no LogConfig, or one without a driver, means the
/// default driver, named as Docker names it (`json-file`), with the options as given.
pub fn normalize(h: &mut HostConfig) {
    let cfg = h.log_config.get_or_insert_with(Default::default);
    if cfg.typ.as_deref().unwrap_or("").is_empty() {
        cfg.typ = Some("json-file".to_string());
    }
    cfg.config.get_or_insert_with(Default::default);
}

/// Docker's `RAMInBytes`: a number with an optional binary unit (`k`, `m`, `g`, `t`, with an
/// optional `b` or `ib`), case-insensitive: `10m` is 10 MiB.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    let v = num * mult as f64;
    (v.is_finite() && v >= 1.0 && v < u64::MAX as f64).then_some(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard_stubs::models::HostConfigLogConfig;

    fn hc(typ: &str, opts: &[(&str, &str)]) -> HostConfig {
        HostConfig {
            log_config: Some(HostConfigLogConfig {
                typ: Some(typ.into()),
                config: Some(opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn sizes_files_and_refusals() {
        assert_eq!(limits(&HostConfig::default()).unwrap(), LogLimits::default());
        assert_eq!(limits(&hc("json-file", &[("max-size", "1m"), ("max-file", "3")])).unwrap(), LogLimits { max_size: 1 << 20, max_files: 3 });
        assert_eq!(limits(&hc("local", &[("max-size", "512K")])).unwrap().max_size, 512 << 10);
        assert_eq!(limits(&hc("", &[("max-size", "-1")])).unwrap(), LogLimits::default());
        assert_eq!(parse_size("1.5g"), Some(3 << 29));
        assert_eq!(parse_size("10MiB"), Some(10 << 20));
        for bad in [hc("syslog", &[]), hc("json-file", &[("max-size", "ten")]), hc("json-file", &[("max-size", "1")]),
            hc("json-file", &[("max-file", "0")]), hc("json-file", &[("frobnicate", "1")])]
        {
            let err = limits(&bad).unwrap_err();
            assert!(matches!(err, ApiError::BadParameter(_)), "{err:?}");
        }
        assert_eq!(limits(&hc("asdf", &[])).unwrap_err().to_string(), "logger: no log driver named 'asdf' is registered");
        assert!(limits(&hc("none", &[])).is_ok() && discards(&hc("none", &[])) && !discards(&hc("local", &[])));
        assert_eq!(limits(&hc("none", &[("max-size", "1m")])).unwrap_err().to_string(), "unknown log opt 'max-size' for none log driver");
    }

    #[test]
    fn no_driver_is_shown_as_json_file() {
        for mut h in [HostConfig::default(), hc("", &[("max-file", "100")])] {
            normalize(&mut h);
            assert_eq!(h.log_config.as_ref().unwrap().typ.as_deref(), Some("json-file"));
        }
        let mut h = hc("", &[("max-file", "100")]);
        normalize(&mut h);
        assert_eq!(h.log_config.unwrap().config.unwrap()["max-file"], "100");
        let mut h = hc("local", &[]);
        normalize(&mut h);
        assert_eq!(h.log_config.unwrap().typ.as_deref(), Some("local"));
    }
}
