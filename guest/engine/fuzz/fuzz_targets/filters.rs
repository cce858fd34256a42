//! `filters=` JSON and what consumes it: Docker's two filter shapes, key checks, boolean
//! filters, label specs, `reference=` globs and the event matcher. Input: the filters JSON,
//! then (after a 0 byte) a glob pattern, then a string to match it against.
#![no_main]

use std::collections::HashMap;

use berth_engine::events;
use berth_engine::http_util::{glob_match, label_matches, Filters};
use bollard_stubs::models::{EventActor, EventMessage, EventMessageTypeEnum};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let raw = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let pattern = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let subject = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let _ = glob_match(&pattern, &subject);
    let labels = HashMap::from([("com.example".to_string(), "v".to_string()), (subject.to_string(), pattern.to_string())]);
    let _ = label_matches(&labels, &pattern);
    let Ok(f) = Filters::parse(Some(&raw)) else { return };
    let _ = f.only(&["dangling", "label", "reference", "before", "since"]);
    for k in ["dangling", "label", "reference", "type", "event"] {
        let _ = f.bool(k);
        for v in f.get(k) {
            let _ = glob_match(v, &subject);
            let _ = label_matches(&labels, v);
        }
    }
    let ev = EventMessage {
        typ: Some(EventMessageTypeEnum::CONTAINER),
        action: Some("exec_start: sh".into()),
        actor: Some(EventActor { id: Some("abc".into()), attributes: Some(labels) }),
        ..Default::default()
    };
    let _ = events::matches(&f, &ev);
});
