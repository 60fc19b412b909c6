//! Every parser of what clients send as a credential or an id: no input panics, and what parses
//! encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_core::token::MasterKey;
use tessera_core::{CsrfToken, RefreshToken, SessionId, UserId, Username};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(id) = SessionId::parse(text) {
        assert_eq!(
            SessionId::parse(&id.encode()).map(|i| i.hash()),
            Some(id.hash())
        );
    }
    if let Some(token) = RefreshToken::parse(text) {
        assert_eq!(
            RefreshToken::parse(&token.encode()).map(|t| t.hash()),
            Some(token.hash())
        );
    }
    if let Some(token) = CsrfToken::parse(text) {
        assert!(CsrfToken::parse(&token.encode()) == Some(token));
    }
    if let Ok(name) = Username::parse(text) {
        assert_eq!(Username::parse(name.as_str()).ok(), Some(name));
    }
    let _ = UserId::parse(text);
    let _ = serde_json::from_str::<UserId>(text);
    let _ = serde_json::from_str::<tessera_core::FamilyId>(text);
    let key = MasterKey::from_bytes(&[7; 32]).unwrap();
    let _ = key.verify_device_token("alice", text);
    let _ = key.verify_hybrid_csrf_token("fam_x", text);
    let _ = MasterKey::parse_base64(text);
});
