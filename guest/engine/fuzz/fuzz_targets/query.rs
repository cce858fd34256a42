//! A request target (path and query string) through the router's path decoding and version
//! split, and the query helpers every handler uses: booleans, integers, signals, times, the
//! logs `tail`. Input: `path?query`.
#![no_main]

use berth_engine::http_util::Query;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else { return };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if let Ok(p) = berth_engine::router::percent_decode(path) {
        let _ = berth_engine::router::split_version(&p);
    }
    let q = Query::parse(Some(query));
    for k in ["all", "force", "v", "stream", "follow", "timestamps", "logs", "stdin", "quiet"] {
        let _ = q.bool(k);
    }
    for k in ["t", "limit", "h", "w", "signal"] {
        let _ = q.i64(k);
    }
    if let Some(s) = q.get("signal") {
        let _ = berth_engine::containers::lifecycle::parse_signal(s);
    }
    for k in ["since", "until"] {
        if let Some(v) = q.get(k) {
            let _ = berth_engine::events::parse_time_nanos(v);
        }
    }
    let _ = q.filters();
    let _ = q.all("names");
});
