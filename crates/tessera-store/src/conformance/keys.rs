//! The [`KeyStore`] checks: signing keys round-trip and move from active to rotated to retired.

use serde_json::json;
use tessera_core::store::KeyStore;
use tessera_core::{KeyStatus, SigningAlgorithm, StoreError, StoredKey};

use super::{HOUR, T0, at};

fn key(kid: &str, algorithm: SigningAlgorithm, created_at: i64) -> StoredKey {
    // Arbitrary bytes, NULs and invalid UTF-8 included: the store must treat them as opaque.
    let mut sealed_private: Vec<u8> = (0..=255_u8).rev().collect();
    sealed_private.extend_from_slice(kid.as_bytes());
    StoredKey {
        kid: kid.into(),
        algorithm,
        status: KeyStatus::Active,
        sealed_private,
        public_jwk: algorithm.is_asymmetric().then(|| {
            json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})
                .to_string()
        }),
        created_at: at(created_at),
        rotated_at: None,
        retired_at: None,
    }
}

async fn stored_key<S: KeyStore>(store: &S, kid: &str) -> StoredKey {
    store
        .keys()
        .await
        .expect("keys")
        .into_iter()
        .find(|k| k.kid == kid)
        .unwrap_or_else(|| panic!("key {kid} should exist"))
}

/// Every key reads back as inserted, whatever its status or algorithm, oldest first, its sealed
/// private part as opaque bytes; a kid that exists is a `Conflict` and replaces nothing.
pub async fn keys_round_trip<S: KeyStore>(store: S) {
    assert_eq!(
        store.keys().await.expect("keys"),
        Vec::new(),
        "a fresh store has no keys"
    );
    let newest = key("k-newest", SigningAlgorithm::EdDSA, T0 + 2 * HOUR);
    let oldest = key("k-oldest", SigningAlgorithm::HS256, T0);
    let middle = StoredKey {
        status: KeyStatus::Rotated,
        rotated_at: Some(at(T0 + 2 * HOUR)),
        ..key("k-middle", SigningAlgorithm::ES256, T0 + HOUR)
    };
    let retired = StoredKey {
        status: KeyStatus::Retired,
        rotated_at: Some(at(T0 + 3 * HOUR)),
        retired_at: Some(at(T0 + 4 * HOUR)),
        ..key("k-retired", SigningAlgorithm::RS256, T0 + HOUR + 1)
    };
    for k in [&newest, &oldest, &middle, &retired] {
        store.insert_key(k).await.expect("insert_key");
    }
    assert_eq!(oldest.public_jwk, None, "an HMAC key has no public part");
    assert_eq!(
        store.keys().await.expect("keys"),
        vec![oldest.clone(), middle.clone(), retired, newest.clone()],
        "every key, whatever its status, oldest first, as inserted"
    );

    let impostor = key("k-oldest", SigningAlgorithm::EdDSA, T0 + 5 * HOUR);
    assert!(
        matches!(
            store.insert_key(&impostor).await,
            Err(StoreError::Conflict(_))
        ),
        "a kid that exists is a Conflict"
    );
    assert_eq!(
        stored_key(&store, "k-oldest").await,
        oldest,
        "a refused key does not replace the first one"
    );
    assert_eq!(store.keys().await.expect("keys").len(), 4);
}

/// Only an active key rotates, and rotating sets just its status and `rotated_at`; a rotated,
/// retired or missing key answers `false` and nothing changes.
pub async fn key_rotation<S: KeyStore>(store: S) {
    let active = key("k-active", SigningAlgorithm::EdDSA, T0);
    let other = key("k-other", SigningAlgorithm::EdDSA, T0 + 1);
    store.insert_key(&active).await.expect("insert_key");
    store.insert_key(&other).await.expect("insert_key");

    assert!(
        store
            .mark_key_rotated("k-active", at(T0 + HOUR))
            .await
            .expect("mark_key_rotated"),
        "an active key rotates"
    );
    let rotated = StoredKey {
        status: KeyStatus::Rotated,
        rotated_at: Some(at(T0 + HOUR)),
        ..active.clone()
    };
    assert_eq!(
        stored_key(&store, "k-active").await,
        rotated,
        "rotation sets the status and rotated_at, nothing else"
    );
    assert!(
        !store
            .mark_key_rotated("k-active", at(T0 + 2 * HOUR))
            .await
            .expect("mark_key_rotated"),
        "a rotated key does not rotate again"
    );
    assert_eq!(
        stored_key(&store, "k-active").await,
        rotated,
        "a refused rotation changes nothing"
    );
    assert!(
        !store
            .mark_key_rotated("k-missing", at(T0 + HOUR))
            .await
            .expect("mark_key_rotated"),
        "a missing key does not rotate"
    );
    assert!(
        store
            .mark_key_retired("k-other", at(T0 + HOUR))
            .await
            .expect("mark_key_retired")
    );
    assert!(
        !store
            .mark_key_rotated("k-other", at(T0 + 2 * HOUR))
            .await
            .expect("mark_key_rotated"),
        "a retired key does not rotate"
    );
    assert_eq!(
        stored_key(&store, "k-other").await.status,
        KeyStatus::Retired,
        "a retired key stays retired"
    );
    assert_eq!(
        stored_key(&store, "k-other").await.rotated_at,
        None,
        "a refused rotation sets no rotated_at"
    );
}

/// An active or rotated key retires (keeping any `rotated_at`), setting its status and
/// `retired_at`; a retired or missing key answers `false` and nothing changes.
pub async fn key_retirement<S: KeyStore>(store: S) {
    let active = key("k-active", SigningAlgorithm::ES256, T0);
    let rotated = key("k-rotated", SigningAlgorithm::EdDSA, T0 + 1);
    store.insert_key(&active).await.expect("insert_key");
    store.insert_key(&rotated).await.expect("insert_key");
    assert!(
        store
            .mark_key_rotated("k-rotated", at(T0 + HOUR))
            .await
            .expect("mark_key_rotated")
    );

    assert!(
        store
            .mark_key_retired("k-active", at(T0 + 2 * HOUR))
            .await
            .expect("mark_key_retired"),
        "an active key retires"
    );
    assert_eq!(
        stored_key(&store, "k-active").await,
        StoredKey {
            status: KeyStatus::Retired,
            retired_at: Some(at(T0 + 2 * HOUR)),
            ..active.clone()
        },
        "retiring an active key sets the status and retired_at, not rotated_at"
    );
    assert!(
        store
            .mark_key_retired("k-rotated", at(T0 + 3 * HOUR))
            .await
            .expect("mark_key_retired"),
        "a rotated key retires"
    );
    let retired = StoredKey {
        status: KeyStatus::Retired,
        rotated_at: Some(at(T0 + HOUR)),
        retired_at: Some(at(T0 + 3 * HOUR)),
        ..rotated.clone()
    };
    assert_eq!(
        stored_key(&store, "k-rotated").await,
        retired,
        "retiring a rotated key keeps its rotated_at"
    );
    assert!(
        !store
            .mark_key_retired("k-rotated", at(T0 + 4 * HOUR))
            .await
            .expect("mark_key_retired"),
        "a retired key does not retire twice"
    );
    assert_eq!(
        stored_key(&store, "k-rotated").await,
        retired,
        "a refused retirement changes nothing"
    );
    assert!(
        !store
            .mark_key_retired("k-missing", at(T0))
            .await
            .expect("mark_key_retired"),
        "a missing key does not retire"
    );
}
