//! [`ProofReplayStore`]: DPoP proofs seen lately.

use std::sync::Arc;

use tessera_core::ProofReplayStore;

use super::{HOUR, RACERS, T0, at};

/// A proof is accepted once while its record lives, and again once it has expired.
pub async fn proofs_are_first_used_once<S: ProofReplayStore>(store: S) {
    let key = [1u8; 32];
    let until = at(T0 + 60_000);
    assert!(
        store
            .first_use(&key, until, at(T0))
            .await
            .expect("first_use"),
        "a proof never seen is a first use"
    );
    assert!(
        !store
            .first_use(&key, until, at(T0 + 1))
            .await
            .expect("first_use"),
        "the same proof again within its window is a replay"
    );
    assert!(
        store
            .first_use(&[2u8; 32], until, at(T0 + 1))
            .await
            .expect("first_use"),
        "another proof is not a replay of the first"
    );
    // Redis expires keys by its own clock, so only the other stores can be moved past the window
    // by the caller's `now`; every store must still refuse within the window (checked above).
}

/// Expired records go; live ones stay.
pub async fn proof_sweep<S: ProofReplayStore>(store: S) {
    store
        .first_use(&[3u8; 32], at(T0 + HOUR), at(T0))
        .await
        .expect("first_use");
    store
        .purge_expired_proofs(at(T0 + 1))
        .await
        .expect("purge_expired_proofs");
    assert!(
        !store
            .first_use(&[3u8; 32], at(T0 + HOUR), at(T0 + 2))
            .await
            .expect("first_use"),
        "a sweep must not forget a live proof"
    );
}

/// Many nodes presenting the same proof at once: exactly one wins.
pub async fn concurrent_first_use<S: ProofReplayStore>(store: S) {
    let store = Arc::new(store);
    let until = at(T0 + 60_000);
    let racers: Vec<_> = (0..RACERS)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.first_use(&[4u8; 32], until, at(T0)).await })
        })
        .collect();
    let mut firsts = 0;
    for racer in racers {
        if racer.await.expect("join").expect("first_use") {
            firsts += 1;
        }
    }
    assert_eq!(
        firsts, 1,
        "exactly one of {RACERS} concurrent uses is the first"
    );
}
