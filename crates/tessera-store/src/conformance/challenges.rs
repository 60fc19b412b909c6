//! [`ChallengeStore`] checks: login challenges waiting for a second factor.

use std::sync::Arc;

use tessera_core::LoginChallenge;
use tessera_core::store::{ChallengeStore, UserStore};
use tokio::task::JoinSet;

use super::second_factor::challenge;
use super::{HOUR, RACERS, T0, at, with_user};

/// Challenges: round trip, attempts counted up to the limit (then it is gone), expiry, and one
/// consumption.
pub async fn challenges<S: UserStore + ChallengeStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let first = challenge(&alice.id, T0 + HOUR);
    store
        .create_challenge(&first)
        .await
        .expect("create_challenge");
    let counted = store
        .attempt_challenge(&first.hash, at(T0 + 1), 2)
        .await
        .expect("attempt")
        .expect("a live challenge");
    assert_eq!(
        counted,
        LoginChallenge {
            attempts: 1,
            ..first.clone()
        },
        "round trip"
    );
    let again = store
        .attempt_challenge(&first.hash, at(T0 + 2), 2)
        .await
        .expect("attempt");
    assert_eq!(again.map(|c| c.attempts), Some(2));
    assert_eq!(
        store
            .attempt_challenge(&first.hash, at(T0 + 3), 2)
            .await
            .expect("attempt"),
        None,
        "burnt after its attempts"
    );
    assert!(
        !store.consume_challenge(&first.hash).await.expect("consume"),
        "a burnt challenge is gone"
    );

    let second = challenge(&alice.id, T0 + 10);
    store
        .create_challenge(&second)
        .await
        .expect("create_challenge");
    assert_eq!(
        store
            .attempt_challenge(&second.hash, at(T0 + 10), 5)
            .await
            .expect("attempt"),
        None,
        "expired at expires_at"
    );
    assert!(
        !store
            .consume_challenge(&second.hash)
            .await
            .expect("consume")
    );

    let third = challenge(&alice.id, T0 + HOUR);
    store
        .create_challenge(&third)
        .await
        .expect("create_challenge");
    assert!(
        store.create_challenge(&third).await.is_err(),
        "a hash that exists is refused"
    );
    assert!(store.consume_challenge(&third.hash).await.expect("consume"));
    assert!(
        !store.consume_challenge(&third.hash).await.expect("consume"),
        "used once"
    );
    assert_eq!(
        store
            .attempt_challenge(&third.hash, at(T0), 5)
            .await
            .expect("attempt"),
        None
    );
}

/// Of many concurrent consumptions of one challenge, exactly one wins; concurrent attempts
/// never count past the limit.
pub async fn concurrent_challenge_use<S: UserStore + ChallengeStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let store = Arc::new(store);
    let limited = challenge(&alice.id, T0 + HOUR);
    store
        .create_challenge(&limited)
        .await
        .expect("create_challenge");
    let mut racers = JoinSet::new();
    for _ in 0..RACERS {
        let store = Arc::clone(&store);
        let hash = limited.hash;
        racers.spawn(async move {
            store
                .attempt_challenge(&hash, at(T0 + 1), 3)
                .await
                .expect("attempt")
                .is_some()
        });
    }
    let counted = racers.join_all().await.into_iter().filter(|c| *c).count();
    assert_eq!(counted, 3, "attempts past the limit are refused");

    let once = challenge(&alice.id, T0 + HOUR);
    store
        .create_challenge(&once)
        .await
        .expect("create_challenge");
    let mut racers = JoinSet::new();
    for _ in 0..RACERS {
        let store = Arc::clone(&store);
        let hash = once.hash;
        racers.spawn(async move { store.consume_challenge(&hash).await.expect("consume") });
    }
    let winners = racers
        .join_all()
        .await
        .into_iter()
        .filter(|won| *won)
        .count();
    assert_eq!(winners, 1, "one challenge, one login");
}

/// The sweep deletes expired challenges only, up to its limit.
pub async fn challenge_sweep<S: UserStore + ChallengeStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let expired: Vec<LoginChallenge> = (0..3).map(|i| challenge(&alice.id, T0 + i)).collect();
    let live = challenge(&alice.id, T0 + HOUR);
    for c in expired.iter().chain([&live]) {
        store.create_challenge(c).await.expect("create_challenge");
    }
    assert_eq!(
        store
            .delete_expired_challenges(at(T0 + 5), 2)
            .await
            .expect("sweep"),
        2
    );
    assert_eq!(
        store
            .delete_expired_challenges(at(T0 + 5), 10)
            .await
            .expect("sweep"),
        1
    );
    assert_eq!(
        store
            .delete_expired_challenges(at(T0 + 5), 10)
            .await
            .expect("sweep"),
        0
    );
    assert!(
        store
            .attempt_challenge(&live.hash, at(T0 + 5), 5)
            .await
            .expect("attempt")
            .is_some(),
        "a live challenge survives the sweep"
    );
}
