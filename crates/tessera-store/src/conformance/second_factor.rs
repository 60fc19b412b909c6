//! [`SecondFactorStore`] checks: TOTP factors, recovery codes, login challenges.

use std::sync::Arc;

use tessera_core::store::{ChallengeStore, SecondFactorStore, UserStore};
use tessera_core::{
    ClientInfo, LoginChallenge, LoginModel, SessionId, TokenHash, TotpFactor, UserDeletion, UserId,
};
use tokio::task::JoinSet;

use super::{HOUR, RACERS, T0, at, with_user};

fn pending(user: &UserId, secret: &[u8]) -> TotpFactor {
    TotpFactor {
        user_id: user.clone(),
        sealed_secret: secret.to_vec(),
        created_at: at(T0),
        confirmed_at: None,
        last_step: None,
    }
}

pub(super) fn random_hash() -> TokenHash {
    SessionId::generate().expect("OS randomness").hash()
}

pub(super) fn challenge(user: &UserId, expires_at: i64) -> LoginChallenge {
    LoginChallenge {
        hash: random_hash(),
        user_id: user.clone(),
        model: LoginModel::Hybrid,
        user_not_before: at(T0 - 5),
        client: ClientInfo {
            user_agent: Some("Mozilla/5.0 (conformance)".into()),
            ip: Some("2001:db8::7".parse().expect("an IP address")),
        },
        created_at: at(T0),
        expires_at: at(expires_at),
        attempts: 0,
        dpop_jkt: Some("a-thumbprint".into()),
    }
}

/// Enrolment: a pending factor round-trips and may be replaced while pending; confirming it
/// records the step and the recovery codes; a confirmed factor is not replaced; removal takes
/// the codes along.
pub async fn totp_enrolment<S: UserStore + SecondFactorStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    assert_eq!(
        store.totp_factor(&alice.id).await.expect("totp_factor"),
        None
    );
    assert!(
        store
            .put_pending_totp(&pending(&alice.id, b"first"))
            .await
            .expect("put")
    );
    assert!(
        store
            .put_pending_totp(&pending(&alice.id, b"second"))
            .await
            .expect("put")
    );
    let stored = store.totp_factor(&alice.id).await.expect("totp_factor");
    assert_eq!(
        stored,
        Some(pending(&alice.id, b"second")),
        "a pending factor is replaced"
    );
    assert!(
        !store
            .use_totp_step(&alice.id, 10)
            .await
            .expect("use_totp_step"),
        "an unconfirmed factor accepts no code"
    );

    let codes: Vec<TokenHash> = (0..10).map(|_| random_hash()).collect();
    assert!(
        !store
            .confirm_totp(&alice.id, b"first", 7, &codes, at(T0 + 1))
            .await
            .expect("confirm"),
        "the enrolment whose code was checked was replaced: nothing is confirmed"
    );
    assert!(
        store
            .confirm_totp(&alice.id, b"second", 7, &codes, at(T0 + 1))
            .await
            .expect("confirm")
    );
    assert!(
        !store
            .confirm_totp(&alice.id, b"second", 8, &codes, at(T0 + 2))
            .await
            .expect("confirm"),
        "confirming twice"
    );
    let confirmed = store
        .totp_factor(&alice.id)
        .await
        .expect("totp_factor")
        .expect("factor");
    assert_eq!(confirmed.confirmed_at, Some(at(T0 + 1)));
    assert_eq!(confirmed.last_step, Some(7));
    assert_eq!(confirmed.sealed_secret, b"second");
    assert_eq!(
        store.recovery_codes_left(&alice.id).await.expect("left"),
        10
    );
    assert!(
        !store
            .put_pending_totp(&pending(&alice.id, b"third"))
            .await
            .expect("put"),
        "a confirmed factor is not replaced by a new enrolment"
    );
    assert_eq!(
        store
            .totp_factor(&alice.id)
            .await
            .expect("totp_factor")
            .map(|f| f.sealed_secret),
        Some(b"second".to_vec())
    );

    let ghost = UserId::generate().expect("OS randomness");
    assert!(
        !store
            .put_pending_totp(&pending(&ghost, b"x"))
            .await
            .expect("put"),
        "no such user"
    );

    assert!(store.delete_totp(&alice.id).await.expect("delete_totp"));
    assert!(!store.delete_totp(&alice.id).await.expect("delete_totp"));
    assert_eq!(
        store.totp_factor(&alice.id).await.expect("totp_factor"),
        None
    );
    assert_eq!(store.recovery_codes_left(&alice.id).await.expect("left"), 0);
    assert_eq!(
        store
            .spend_recovery_code(&alice.id, &codes[0])
            .await
            .expect("use"),
        None,
        "recovery codes go with the factor"
    );
}

/// A time step is used once, and never an earlier one after a later.
pub async fn totp_steps_are_used_once<S: UserStore + SecondFactorStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    store
        .put_pending_totp(&pending(&alice.id, b"s"))
        .await
        .expect("put");
    store
        .confirm_totp(&alice.id, b"s", 100, &[], at(T0))
        .await
        .expect("confirm");
    assert!(
        !store.use_totp_step(&alice.id, 100).await.expect("use"),
        "the confirming step"
    );
    assert!(store.use_totp_step(&alice.id, 101).await.expect("use"));
    assert!(
        !store.use_totp_step(&alice.id, 101).await.expect("use"),
        "used twice"
    );
    assert!(
        !store.use_totp_step(&alice.id, 100).await.expect("use"),
        "an earlier step"
    );
    assert!(store.use_totp_step(&alice.id, 102).await.expect("use"));
    assert_eq!(
        store
            .totp_factor(&alice.id)
            .await
            .expect("factor")
            .and_then(|f| f.last_step),
        Some(102)
    );
}

/// Of many concurrent uses of one step, exactly one wins.
pub async fn concurrent_step_use<S: UserStore + SecondFactorStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    store
        .put_pending_totp(&pending(&alice.id, b"s"))
        .await
        .expect("put");
    store
        .confirm_totp(&alice.id, b"s", 1, &[], at(T0))
        .await
        .expect("confirm");
    let store = Arc::new(store);
    let mut racers = JoinSet::new();
    for _ in 0..RACERS {
        let store = Arc::clone(&store);
        let user = alice.id.clone();
        racers.spawn(async move { store.use_totp_step(&user, 2).await.expect("use") });
    }
    let winners = racers
        .join_all()
        .await
        .into_iter()
        .filter(|won| *won)
        .count();
    assert_eq!(winners, 1, "one code, one use");
}

/// Recovery codes: each works once, only for its owner; replacing them voids the old ones.
pub async fn recovery_codes_work_once<S: UserStore + SecondFactorStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let bob = with_user(&store, "bob").await;
    let codes: Vec<TokenHash> = (0..3).map(|_| random_hash()).collect();
    assert!(
        !store
            .replace_recovery_codes(&alice.id, &codes)
            .await
            .expect("replace"),
        "no codes without a confirmed factor"
    );
    store
        .put_pending_totp(&pending(&alice.id, b"s"))
        .await
        .expect("put");
    store
        .confirm_totp(&alice.id, b"s", 1, &codes, at(T0))
        .await
        .expect("confirm");
    assert_eq!(
        store
            .spend_recovery_code(&bob.id, &codes[0])
            .await
            .expect("use"),
        None
    );
    assert_eq!(
        store
            .spend_recovery_code(&alice.id, &codes[0])
            .await
            .expect("use"),
        Some(2)
    );
    assert_eq!(
        store
            .spend_recovery_code(&alice.id, &codes[0])
            .await
            .expect("use"),
        None
    );
    let fresh: Vec<TokenHash> = (0..4).map(|_| random_hash()).collect();
    assert!(
        store
            .replace_recovery_codes(&alice.id, &fresh)
            .await
            .expect("replace")
    );
    assert_eq!(
        store
            .spend_recovery_code(&alice.id, &codes[1])
            .await
            .expect("use"),
        None
    );
    assert_eq!(store.recovery_codes_left(&alice.id).await.expect("left"), 4);
    assert_eq!(
        store
            .spend_recovery_code(&alice.id, &fresh[3])
            .await
            .expect("use"),
        Some(3)
    );
}

/// Of many concurrent uses of one recovery code, exactly one wins.
pub async fn concurrent_recovery_code_use<S: UserStore + SecondFactorStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let code = random_hash();
    store
        .put_pending_totp(&pending(&alice.id, b"s"))
        .await
        .expect("put");
    store
        .confirm_totp(&alice.id, b"s", 1, &[code], at(T0))
        .await
        .expect("confirm");
    let store = Arc::new(store);
    let mut racers = JoinSet::new();
    for _ in 0..RACERS {
        let store = Arc::clone(&store);
        let user = alice.id.clone();
        racers.spawn(async move { store.spend_recovery_code(&user, &code).await.expect("use") });
    }
    let winners = racers.join_all().await.into_iter().flatten().count();
    assert_eq!(winners, 1, "one recovery code, one use");
}

/// Deleting the account takes its factor, recovery codes and challenges along.
pub async fn second_factors_of_a_deleted_user<S: UserStore + SecondFactorStore + ChallengeStore>(
    store: S,
) {
    let alice = with_user(&store, "alice").await;
    let code = random_hash();
    store
        .put_pending_totp(&pending(&alice.id, b"s"))
        .await
        .expect("put");
    store
        .confirm_totp(&alice.id, b"s", 1, &[code], at(T0))
        .await
        .expect("confirm");
    let waiting = challenge(&alice.id, T0 + HOUR);
    store
        .create_challenge(&waiting)
        .await
        .expect("create_challenge");
    let deletion = UserDeletion {
        user: alice.id.clone(),
        username: alice.username.clone(),
        event: tessera_core::NewEvent {
            at: at(T0),
            kind: tessera_core::EventKind::AccountDeleted,
            user_id: Some(alice.id.clone()),
            detail: serde_json::json!({}),
        },
    };
    assert!(store.delete_user(&deletion).await.expect("delete_user"));
    assert_eq!(
        store.totp_factor(&alice.id).await.expect("totp_factor"),
        None
    );
    assert_eq!(store.recovery_codes_left(&alice.id).await.expect("left"), 0);
    assert_eq!(
        store
            .attempt_challenge(&waiting.hash, at(T0), 5)
            .await
            .expect("attempt"),
        None
    );
}
