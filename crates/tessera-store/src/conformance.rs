//! The conformance suite: every store implementation runs it, so a backend cannot quietly differ
//! from the contract written on the traits in `tessera_core::store`.
//!
//! ```
//! use tessera_store::MemoryStore;
//! use tessera_store::conformance::store_conformance;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // In a test: `#[tokio::test(flavor = "multi_thread")]`.
//! store_conformance(|| async { MemoryStore::new() }).await;
//! # }
//! ```
//!
//! Failures panic with a message naming the broken rule. Some checks spawn Tokio tasks, so run
//! the suite inside a Tokio runtime (a multi-threaded one exercises real contention).

use std::future::Future;
use std::sync::Arc;

use serde_json::{Value, json};
use tessera_core::store::{HealthCheck, SessionStore, UserStore};
use tessera_core::{
    ClientInfo, CsrfToken, Session, SessionHandle, SessionId, StoreError, Timestamp, TokenHash,
    User, UserId, Username,
};
use tokio::task::JoinSet;

/// A moment in late 2023, so that every timestamp in the suite is a plausible one.
const T0: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;
/// How many tasks race in the concurrency checks.
const RACERS: usize = 16;

/// Runs every check, each on a fresh store from `make`.
pub async fn store_conformance<S, F, Fut>(make: F)
where
    S: UserStore + SessionStore + HealthCheck,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    ping(&make().await).await;
    users_round_trip(&make().await).await;
    usernames_are_unique(&make().await).await;
    password_hash_replacement(&make().await).await;
    sessions_by_secret(&make().await).await;
    session_clashes(&make().await).await;
    touch(&make().await).await;
    data_compare_and_swap(&make().await).await;
    concurrent_compare_and_swap(Arc::new(make().await)).await;
    concurrent_patches_lose_nothing(Arc::new(make().await)).await;
    delete(&make().await).await;
    sessions_of_user(&make().await).await;
    sweep(&make().await).await;
    sweep_follows_touch(&make().await).await;
    data_round_trip(&make().await).await;
    client_info_round_trip(&make().await).await;
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

fn user(name: &str) -> User {
    User {
        id: UserId::generate().expect("OS randomness"),
        username: Username::parse(name).expect("valid username"),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${name}"),
        roles: Vec::new(),
        disabled: false,
        created_at: at(T0),
        updated_at: at(T0),
    }
}

/// A session of `user` created at `created_at` that expires at `expires_at`.
fn session(user: &UserId, created_at: i64, expires_at: i64) -> Session {
    let secret = SessionId::generate().expect("OS randomness");
    Session {
        handle: SessionHandle::generate().expect("OS randomness"),
        user_id: user.clone(),
        secret_hash: secret.hash(),
        csrf_token: CsrfToken::generate().expect("OS randomness"),
        created_at: at(created_at),
        last_seen_at: at(created_at),
        expires_at: at(expires_at),
        absolute_expires_at: at(created_at + 12 * HOUR),
        client: ClientInfo::default(),
        data: json!({}),
        data_version: 0,
    }
}

async fn with_user<S: UserStore>(store: &S, name: &str) -> User {
    let user = user(name);
    store.create_user(&user).await.expect("create_user");
    user
}

async fn stored<S: SessionStore>(store: &S, session: &Session) -> Session {
    store
        .session_by_secret(&session.secret_hash)
        .await
        .expect("session_by_secret")
        .unwrap_or_else(|| panic!("session {} should exist", session.handle))
}

async fn ping<S: HealthCheck>(store: &S) {
    store.ping().await.expect("ping on a fresh store");
}

async fn users_round_trip<S: UserStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let mut zoe = user("Zoë");
    zoe.roles = vec!["admin".into(), "ops".into()];
    zoe.disabled = true;
    zoe.updated_at = at(T0 + 1);
    store.create_user(&zoe).await.expect("create_user");

    for u in [&alice, &zoe] {
        assert_eq!(
            store.user_by_id(&u.id).await.expect("user_by_id").as_ref(),
            Some(u),
            "user_by_id returns the user as created"
        );
        assert_eq!(
            store
                .user_by_username(&u.username)
                .await
                .expect("user_by_username")
                .as_ref(),
            Some(u),
            "user_by_username returns the user as created"
        );
    }
    let nobody = user("nobody");
    assert_eq!(
        store.user_by_id(&nobody.id).await.expect("user_by_id"),
        None
    );
    assert_eq!(
        store
            .user_by_username(&nobody.username)
            .await
            .expect("user_by_username"),
        None
    );
}

async fn usernames_are_unique<S: UserStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let impostor = user("ALICE");
    assert!(
        matches!(
            store.create_user(&impostor).await,
            Err(StoreError::Conflict(_))
        ),
        "a taken username is a Conflict"
    );
    assert_eq!(
        store.user_by_id(&impostor.id).await.expect("user_by_id"),
        None,
        "a refused user leaves nothing behind"
    );
    assert_eq!(
        store
            .user_by_username(&alice.username)
            .await
            .expect("user_by_username"),
        Some(alice.clone()),
        "a refused user does not replace the first one"
    );

    let mut same_id = user("bob");
    same_id.id = alice.id.clone();
    assert!(
        store.create_user(&same_id).await.is_err(),
        "a user id that exists is refused"
    );
    assert_eq!(
        store
            .user_by_username(&same_id.username)
            .await
            .expect("user_by_username"),
        None,
        "a refused user leaves nothing behind"
    );
    assert_eq!(
        store.user_by_id(&alice.id).await.expect("user_by_id"),
        Some(alice)
    );
}

async fn password_hash_replacement<S: UserStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let bob = with_user(store, "bob").await;
    assert!(
        store
            .set_password_hash(&alice.id, "$argon2id$new", at(T0 + HOUR))
            .await
            .expect("set_password_hash"),
        "set_password_hash on an existing user returns true"
    );
    let expected = User {
        password_hash: "$argon2id$new".into(),
        updated_at: at(T0 + HOUR),
        ..alice.clone()
    };
    assert_eq!(
        store.user_by_id(&alice.id).await.expect("user_by_id"),
        Some(expected.clone()),
        "only the hash and updated_at change"
    );
    assert_eq!(
        store
            .user_by_username(&alice.username)
            .await
            .expect("user_by_username"),
        Some(expected)
    );
    assert_eq!(
        store.user_by_id(&bob.id).await.expect("user_by_id"),
        Some(bob),
        "other users are untouched"
    );
    let ghost = UserId::generate().expect("OS randomness");
    assert!(
        !store
            .set_password_hash(&ghost, "$argon2id$x", at(T0))
            .await
            .expect("set_password_hash"),
        "set_password_hash on a missing user returns false"
    );
    assert_eq!(store.user_by_id(&ghost).await.expect("user_by_id"), None);
}

async fn sessions_by_secret<S: UserStore + SessionStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let one = session(&alice.id, T0, T0 + HOUR);
    let two = session(&alice.id, T0 + 1, T0 + HOUR);
    store.create_session(&one).await.expect("create_session");
    store.create_session(&two).await.expect("create_session");
    assert_eq!(
        stored(store, &one).await,
        one,
        "a session reads back as written"
    );
    assert_eq!(
        stored(store, &two).await,
        two,
        "a session reads back as written"
    );
    assert_eq!(
        store
            .session_by_secret(&TokenHash::of(b"unknown"))
            .await
            .expect("session_by_secret"),
        None,
        "an unknown secret hash finds nothing"
    );
}

async fn session_clashes<S: UserStore + SessionStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let original = session(&alice.id, T0, T0 + HOUR);
    store
        .create_session(&original)
        .await
        .expect("create_session");

    let same_handle = Session {
        handle: original.handle.clone(),
        ..session(&alice.id, T0 + 5, T0 + 2 * HOUR)
    };
    assert!(
        matches!(
            store.create_session(&same_handle).await,
            Err(StoreError::Conflict(_))
        ),
        "a session handle clash is a Conflict"
    );
    assert_eq!(
        store
            .session_by_secret(&same_handle.secret_hash)
            .await
            .expect("session_by_secret"),
        None,
        "a refused session leaves nothing behind"
    );

    let same_secret = Session {
        secret_hash: original.secret_hash,
        ..session(&alice.id, T0 + 5, T0 + 2 * HOUR)
    };
    assert!(
        matches!(
            store.create_session(&same_secret).await,
            Err(StoreError::Conflict(_))
        ),
        "a secret hash clash is a Conflict"
    );
    assert_eq!(
        stored(store, &original).await,
        original,
        "a refused session does not replace the first one"
    );
    assert_eq!(
        store
            .sessions_of_user(&alice.id)
            .await
            .expect("sessions_of_user"),
        vec![original],
        "refused sessions are not listed"
    );
}

async fn touch<S: UserStore + SessionStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let mut s = session(&alice.id, T0, T0 + HOUR);
    s.data = json!({"keep": "me"});
    s.data_version = 3;
    store.create_session(&s).await.expect("create_session");

    assert!(
        store
            .touch_session(&s.handle, at(T0 + 60_000), at(T0 + 60_000 + HOUR))
            .await
            .expect("touch_session"),
        "touching a live session returns true"
    );
    let expected = Session {
        last_seen_at: at(T0 + 60_000),
        expires_at: at(T0 + 60_000 + HOUR),
        ..s.clone()
    };
    assert_eq!(
        stored(store, &s).await,
        expected,
        "touch sets last_seen_at and expires_at, nothing else"
    );

    assert!(
        store
            .delete_session(&s.handle)
            .await
            .expect("delete_session")
    );
    assert!(
        !store
            .touch_session(&s.handle, at(T0 + 120_000), at(T0 + 2 * HOUR))
            .await
            .expect("touch_session"),
        "touching a deleted session returns false"
    );
    assert_eq!(
        store
            .session_by_secret(&s.secret_hash)
            .await
            .expect("session_by_secret"),
        None,
        "touch does not bring a session back"
    );
}

async fn data_compare_and_swap<S: UserStore + SessionStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let s = session(&alice.id, T0, T0 + HOUR);
    store.create_session(&s).await.expect("create_session");

    let first = json!({"step": 1});
    assert!(
        store
            .replace_session_data(&s.handle, 0, &first)
            .await
            .expect("replace_session_data"),
        "the current version wins"
    );
    let now = stored(store, &s).await;
    assert_eq!((now.data, now.data_version), (first.clone(), 1));

    assert!(
        !store
            .replace_session_data(&s.handle, 0, &json!({"step": "stale"}))
            .await
            .expect("replace_session_data"),
        "a stale version loses"
    );
    let now = stored(store, &s).await;
    assert_eq!(
        (now.data, now.data_version),
        (first, 1),
        "a losing write changes nothing"
    );

    assert!(
        !store
            .replace_session_data(&s.handle, 7, &json!({"step": "future"}))
            .await
            .expect("replace_session_data"),
        "a version from the future loses"
    );

    let second = json!({"step": 2});
    assert!(
        store
            .replace_session_data(&s.handle, 1, &second)
            .await
            .expect("replace_session_data")
    );
    let now = stored(store, &s).await;
    assert_eq!((now.data, now.data_version), (second, 2));
    assert_eq!(
        (now.last_seen_at, now.expires_at),
        (s.last_seen_at, s.expires_at),
        "a data write is not activity"
    );

    let ghost = SessionHandle::generate().expect("OS randomness");
    assert!(
        !store
            .replace_session_data(&ghost, 0, &json!({}))
            .await
            .expect("replace_session_data"),
        "writing to a missing session returns false"
    );
}

async fn concurrent_compare_and_swap<S: UserStore + SessionStore>(store: Arc<S>) {
    let alice = with_user(&*store, "alice").await;
    let s = session(&alice.id, T0, T0 + HOUR);
    store.create_session(&s).await.expect("create_session");

    for version in 0..4_i64 {
        let mut racers = JoinSet::new();
        for racer in 0..RACERS {
            let store = Arc::clone(&store);
            let handle = s.handle.clone();
            racers.spawn(async move {
                let data = json!({"version": version, "racer": racer});
                let won = store
                    .replace_session_data(&handle, version, &data)
                    .await
                    .expect("replace_session_data");
                (racer, won)
            });
        }
        let winners: Vec<usize> = racers
            .join_all()
            .await
            .into_iter()
            .filter_map(|(racer, won)| won.then_some(racer))
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "exactly one of {RACERS} concurrent writers of version {version} wins"
        );
        let now = stored(&*store, &s).await;
        assert_eq!(now.data_version, version + 1);
        assert_eq!(
            now.data,
            json!({"version": version, "racer": winners[0]}),
            "the stored data is the winner's"
        );
    }
}

/// The service's read-modify-write loop: no writer's change may be lost.
async fn concurrent_patches_lose_nothing<S: UserStore + SessionStore>(store: Arc<S>) {
    let alice = with_user(&*store, "alice").await;
    let s = session(&alice.id, T0, T0 + HOUR);
    store.create_session(&s).await.expect("create_session");

    let mut writers = JoinSet::new();
    for writer in 0..RACERS {
        let store = Arc::clone(&store);
        let secret_hash = s.secret_hash;
        writers.spawn(async move {
            for _ in 0..10_000 {
                let current = store
                    .session_by_secret(&secret_hash)
                    .await
                    .expect("session_by_secret")
                    .expect("the session exists");
                let mut data = current.data;
                if let Value::Object(map) = &mut data {
                    map.insert(format!("writer{writer}"), json!(writer));
                }
                if store
                    .replace_session_data(&current.handle, current.data_version, &data)
                    .await
                    .expect("replace_session_data")
                {
                    return;
                }
                tokio::task::yield_now().await;
            }
            panic!("writer {writer} never won a compare-and-swap");
        });
    }
    writers.join_all().await;

    let now = stored(&*store, &s).await;
    assert_eq!(
        now.data_version, RACERS as i64,
        "every successful write increments the version exactly once"
    );
    let expected: serde_json::Map<String, Value> = (0..RACERS)
        .map(|w| (format!("writer{w}"), json!(w)))
        .collect();
    assert_eq!(
        now.data,
        Value::Object(expected),
        "no concurrent write was lost"
    );
}

async fn delete<S: UserStore + SessionStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let gone = session(&alice.id, T0, T0 + HOUR);
    let kept = session(&alice.id, T0 + 1, T0 + HOUR);
    store.create_session(&gone).await.expect("create_session");
    store.create_session(&kept).await.expect("create_session");

    assert!(
        store
            .delete_session(&gone.handle)
            .await
            .expect("delete_session"),
        "deleting an existing session returns true"
    );
    assert!(
        !store
            .delete_session(&gone.handle)
            .await
            .expect("delete_session"),
        "deleting it again returns false"
    );
    assert_eq!(
        store
            .session_by_secret(&gone.secret_hash)
            .await
            .expect("session_by_secret"),
        None,
        "a deleted session is not found by its secret"
    );
    assert_eq!(
        store
            .sessions_of_user(&alice.id)
            .await
            .expect("sessions_of_user"),
        vec![kept.clone()],
        "a deleted session is not listed"
    );
    assert!(
        !store
            .replace_session_data(&gone.handle, 0, &json!({}))
            .await
            .expect("replace_session_data"),
        "a deleted session takes no data"
    );
    assert_eq!(stored(store, &kept).await, kept, "other sessions stay");

    // Nothing of the deleted session lingers in an index: its handle and secret are free again.
    let again = Session {
        handle: gone.handle.clone(),
        secret_hash: gone.secret_hash,
        ..session(&alice.id, T0 + 2, T0 + HOUR)
    };
    store
        .create_session(&again)
        .await
        .expect("a deleted session's handle and secret hash can be reused");
    assert_eq!(stored(store, &again).await, again);
    assert_eq!(
        store
            .delete_expired_sessions(at(T0 + 2 * HOUR), 100)
            .await
            .expect("delete_expired_sessions"),
        2,
        "the sweep counts only sessions that exist"
    );
}

async fn sessions_of_user<S: UserStore + SessionStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let bob = with_user(store, "bob").await;
    let carol = with_user(store, "carol").await;
    let newest = session(&alice.id, T0 + 300, T0 + HOUR);
    let oldest = session(&alice.id, T0 + 100, T0 + 3 * HOUR);
    // Expired sessions are listed until swept.
    let middle = session(&alice.id, T0 + 200, T0 + 250);
    let bobs = session(&bob.id, T0 + 150, T0 + HOUR);
    for s in [&newest, &oldest, &bobs, &middle] {
        store.create_session(s).await.expect("create_session");
    }
    assert_eq!(
        store
            .sessions_of_user(&alice.id)
            .await
            .expect("sessions_of_user"),
        vec![oldest, middle, newest],
        "a user's sessions, and only theirs, oldest first"
    );
    assert_eq!(
        store
            .sessions_of_user(&bob.id)
            .await
            .expect("sessions_of_user"),
        vec![bobs]
    );
    assert_eq!(
        store
            .sessions_of_user(&carol.id)
            .await
            .expect("sessions_of_user"),
        Vec::new(),
        "a user without sessions has none"
    );
    let ghost = UserId::generate().expect("OS randomness");
    assert_eq!(
        store
            .sessions_of_user(&ghost)
            .await
            .expect("sessions_of_user"),
        Vec::new()
    );
}

async fn sweep<S: UserStore + SessionStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let bob = with_user(store, "bob").await;
    let sessions: Vec<Session> = [500, 100, 400, 200, 300]
        .into_iter()
        .enumerate()
        .map(|(i, expires)| {
            let owner = if i % 2 == 0 { &alice.id } else { &bob.id };
            session(owner, T0 + i as i64, T0 + expires)
        })
        .collect();
    for s in &sessions {
        store.create_session(s).await.expect("create_session");
    }
    let now = at(T0 + 300);

    assert_eq!(
        store
            .delete_expired_sessions(now, 0)
            .await
            .expect("delete_expired_sessions"),
        0,
        "a limit of 0 deletes nothing"
    );
    assert_eq!(
        store
            .delete_expired_sessions(now, 2)
            .await
            .expect("delete_expired_sessions"),
        2,
        "the sweep respects its limit"
    );
    assert_eq!(
        store
            .delete_expired_sessions(now, 10)
            .await
            .expect("delete_expired_sessions"),
        1,
        "a session expiring exactly now is expired"
    );
    assert_eq!(
        store
            .delete_expired_sessions(now, 10)
            .await
            .expect("delete_expired_sessions"),
        0,
        "nothing is left to sweep"
    );

    for s in &sessions {
        let found = store
            .session_by_secret(&s.secret_hash)
            .await
            .expect("session_by_secret");
        if s.expires_at <= now {
            assert_eq!(found, None, "an expired session is swept");
        } else {
            assert_eq!(found.as_ref(), Some(s), "a live session survives the sweep");
        }
    }
    let listed = |of: &UserId| {
        sessions
            .iter()
            .filter(|s| &s.user_id == of && s.expires_at > now)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        store
            .sessions_of_user(&alice.id)
            .await
            .expect("sessions_of_user"),
        listed(&alice.id),
        "swept sessions leave the per-user listing"
    );
    assert_eq!(
        store
            .sessions_of_user(&bob.id)
            .await
            .expect("sessions_of_user"),
        listed(&bob.id)
    );
    assert_eq!(
        store
            .delete_expired_sessions(at(T0 + HOUR), usize::MAX)
            .await
            .expect("delete_expired_sessions"),
        2,
        "an unbounded limit sweeps everything expired"
    );
}

/// The sweep goes by the latest `expires_at`, not by the one a session was created with.
async fn sweep_follows_touch<S: UserStore + SessionStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let extended = session(&alice.id, T0, T0 + 100);
    let shortened = session(&alice.id, T0, T0 + HOUR);
    store
        .create_session(&extended)
        .await
        .expect("create_session");
    store
        .create_session(&shortened)
        .await
        .expect("create_session");
    assert!(
        store
            .touch_session(&extended.handle, at(T0 + 50), at(T0 + HOUR))
            .await
            .expect("touch_session")
    );
    assert!(
        store
            .touch_session(&shortened.handle, at(T0 + 50), at(T0 + 100))
            .await
            .expect("touch_session")
    );

    assert_eq!(
        store
            .delete_expired_sessions(at(T0 + 200), 10)
            .await
            .expect("delete_expired_sessions"),
        1
    );
    assert!(
        store
            .session_by_secret(&extended.secret_hash)
            .await
            .expect("session_by_secret")
            .is_some(),
        "a session whose expiry was extended survives"
    );
    assert_eq!(
        store
            .session_by_secret(&shortened.secret_hash)
            .await
            .expect("session_by_secret"),
        None,
        "a session whose expiry was brought forward is swept"
    );
}

async fn data_round_trip<S: UserStore + SessionStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let document = json!({
        "cart": {
            "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1, "gift": true}],
            "total": 12.5,
            "coupon": null,
        },
        "greeting": "Grüß Gott, Zoë! 日本語 🦀",
        "escapes": "quote \" backslash \\ nul \u{0} newline \n tab \t",
        "big": u64::MAX,
        "small": i64::MIN,
        "nested": {"a": {"b": {"c": [[], {}, [1, [2, [3]]]]}}},
        "": "empty key",
    });
    let mut s = session(&alice.id, T0, T0 + HOUR);
    s.data = document.clone();
    s.data_version = 41;
    store.create_session(&s).await.expect("create_session");
    assert_eq!(
        stored(store, &s).await,
        s,
        "session data reads back exactly as created"
    );

    let replaced = json!({"replaced": document, "ünïcödé": ["✓"]});
    assert!(
        store
            .replace_session_data(&s.handle, 41, &replaced)
            .await
            .expect("replace_session_data")
    );
    let now = stored(store, &s).await;
    assert_eq!(
        (now.data, now.data_version),
        (replaced, 42),
        "replaced data reads back exactly"
    );
}

async fn client_info_round_trip<S: UserStore + SessionStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let anonymous = session(&alice.id, T0, T0 + HOUR);
    let described = Session {
        client: ClientInfo {
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Ünïcode/1.0 🦀".into()),
            ip: Some("2001:db8::1".into()),
        },
        ..session(&alice.id, T0 + 1, T0 + HOUR)
    };
    let half = Session {
        client: ClientInfo {
            user_agent: None,
            ip: Some("203.0.113.7".into()),
        },
        ..session(&alice.id, T0 + 2, T0 + HOUR)
    };
    for s in [&anonymous, &described, &half] {
        store.create_session(s).await.expect("create_session");
        assert_eq!(
            stored(store, s).await.client,
            s.client,
            "client info reads back as written"
        );
    }
    assert_eq!(
        store
            .sessions_of_user(&alice.id)
            .await
            .expect("sessions_of_user"),
        vec![anonymous, described, half]
    );
}
