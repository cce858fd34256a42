//! `.dockerignore` content and a path to match: errors are fine, panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (patterns, path) = text.split_once('\0').unwrap_or((text, "a/b/c"));
    if let Ok(m) = berth_build::ignore::Matcher::parse(patterns) {
        let _ = m.excluded(path);
    }
    let _ = berth_build::context::glob_match(patterns, path);
});
