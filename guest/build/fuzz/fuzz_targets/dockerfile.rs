//! Any byte string through the whole Dockerfile front end: parse, plan, and dispatch of every
//! step against an empty config. Errors are fine; a panic, hang or OOM is a bug.
#![no_main]

use std::collections::BTreeMap;

use berth_build::config::{meta_arg_values, RunConfig, State};
use berth_build::instructions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(plan) = instructions::parse_plan(text) else { return };
    let user: BTreeMap<String, Option<String>> = BTreeMap::new();
    let Ok(meta) = meta_arg_values(&plan.meta_args, &user, plan.escape) else { return };
    for stage in &plan.stages {
        let mut st = State::new(RunConfig::default(), plan.escape, user.clone(), meta.clone(), true);
        for step in &stage.steps {
            let _ = st.dispatch(step);
        }
    }
    let _ = berth_build::shell::Lexer::new(plan.escape).process_words(text, &["A=b".to_string()]);
});
