//! JSON merge patch (RFC 7396) on any document and any patch: no panic, and applying a patch twice
//! changes nothing more (a merge patch is idempotent).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok((doc, patch)) = serde_json::from_slice::<(Value, Value)>(data) else {
        return;
    };
    let mut once = doc;
    tessera_core::merge_patch::apply(&mut once, &patch);
    let mut twice = once.clone();
    tessera_core::merge_patch::apply(&mut twice, &patch);
    assert_eq!(once, twice);
});
