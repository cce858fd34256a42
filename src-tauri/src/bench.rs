//! Bench hooks (see src-tauri/bench/run): with `BERTH_BENCH_OUT=<file>` the front end reports
//! milestones, written here as JSON lines with a wall-clock timestamp, so the bench script can
//! measure cold start from the moment it spawned the process. `BERTH_BENCH_EXIT=1` quits after
//! the scroll test.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tauri::AppHandle;

pub fn enabled() -> bool {
    std::env::var_os("BERTH_BENCH_OUT").is_some()
}

pub fn mark(app: &AppHandle, label: &str, data: Value) {
    write(label, data);
    if label == "scroll" && std::env::var_os("BERTH_BENCH_EXIT").is_some() {
        app.exit(0);
    }
}

/// A milestone of the Rust side's start-up (`main`, `setup`), so the bench can split the cold
/// start into phases. Nothing happens without `BERTH_BENCH_OUT`.
pub fn stamp(label: &str) {
    write(label, Value::Null);
}

fn write(label: &str, data: Value) {
    let Some(path) = std::env::var_os("BERTH_BENCH_OUT") else { return };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let line = json!({"label": label, "unixMs": now.as_secs_f64() * 1000.0, "pid": std::process::id(), "data": data});
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}
