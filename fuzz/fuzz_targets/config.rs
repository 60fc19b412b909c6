//! Configuration file text, checked as `serve` reads it: no input panics, and an input that is
//! refused is refused with a message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(message) = tessera::check_config(text) {
        assert!(!message.is_empty());
    }
});
