//! DPoP proofs as a client sends them: no input panics, and a proof that passes names a key by a
//! well-formed thumbprint and a bounded `jti`. Inputs are tried both as the whole `DPoP` header
//! and as its three segments each base64url-encoded from the input's thirds, so the fuzzer
//! reaches the JSON and the key handling behind the encoding.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use tessera_dpop::{Expected, check_proof};

fn check(proof: &str) {
    let expected = Expected {
        method: "POST",
        url: "https://auth.example.com/v1/token",
        access_token: Some("token"),
        now: 1_764_400_000,
        max_age: 60,
        leeway: 5,
    };
    if let Ok(verified) = check_proof(proof, &expected) {
        assert_eq!(verified.thumbprint.len(), 43);
        assert!(!verified.jti.is_empty() && verified.jti.len() <= 256);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check(text);
    }
    let third = data.len() / 3;
    let (header, rest) = data.split_at(third);
    let (claims, signature) = rest.split_at(third);
    check(&format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims),
        URL_SAFE_NO_PAD.encode(signature)
    ));
});
