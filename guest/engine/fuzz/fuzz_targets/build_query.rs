//! The query string of `POST /build` (tags, Dockerfile path, build args, labels, target,
//! flags). A Dockerfile path that is accepted must stay inside the context.
#![no_main]

use berth_engine::build::parse_options;
use berth_engine::http_util::Query;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let q = Query::parse(Some(s));
    if let Ok(o) = parse_options(&q) {
        assert!(!o.dockerfile.starts_with('/'), "{:?}", o.dockerfile);
        assert!(!o.dockerfile.split('/').any(|c| c == ".."), "{:?}", o.dockerfile);
        for t in &o.tags {
            assert!(t.tag.is_some() && t.digest.is_none(), "{t:?}");
        }
    }
});
