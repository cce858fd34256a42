//! Image references as the API receives them (`fromImage`, `tag`, `repo`, names in paths):
//! Berth's reference grammar, its familiar/full forms, and the registry client's repository
//! and manifest-reference checks. Nothing here may build a path from an unchecked name.
#![no_main]

use berth_image::reference::{looks_like_id, Reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = looks_like_id(s);
    let _ = Reference::parse_name(s);
    if let Ok(r) = Reference::parse(s) {
        let familiar = r.familiar_string();
        let full = r.full_name();
        // What Berth prints must parse back to the same reference, except where Docker's
        // familiar form is ambiguous too: `docker.io/a.b/c` is shown as `a.b/c`, which names
        // the registry `a.b` (distribution's familiarizeName does the same).
        let first = r.repository.split('/').next().unwrap_or("");
        let ambiguous = r.registry == "docker.io" && r.repository.contains('/') && (first.contains(['.', ':']) || first == "localhost");
        if !ambiguous {
            let again = Reference::parse(&familiar).expect("familiar form parses");
            assert_eq!(again.full_name(), full, "{s:?}: {familiar:?}");
        }
        // The full form always parses back.
        assert_eq!(Reference::parse(&full).expect("full name parses").full_name(), full, "{s:?}");
        let _ = r.with_tag("latest");
        let _ = berth_registry::reference::validate_repository_name(&r.repository);
    }
    let (name, rest) = s.split_once(':').unwrap_or((s, ""));
    let _ = berth_registry::reference::validate_repository_name(name);
    let _ = berth_registry::reference::validate_manifest_reference(rest);
    let _ = berth_registry::reference::normalize_registry(s);
    let _ = berth_engine::system::registry_host(s);
});
