//! The [`SessionStore`] checks: lookups, clashes, renewal, compare-and-swap of the data,
//! deletion and the sweep.

use std::sync::Arc;

use serde_json::{Value, json};
use tessera_core::store::{SessionStore, UserStore};
use tessera_core::{
    ClientInfo, CsrfToken, Session, SessionData, SessionHandle, SessionId, StoreError, TokenHash,
    UserId,
};
use tokio::task::JoinSet;

use super::{HOUR, RACERS, T0, at, with_user};

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
        data: SessionData::default(),
        data_version: 0,
        auth: tessera_core::AuthContext::password(at(created_at)),
    }
}

async fn stored<S: SessionStore>(store: &S, session: &Session) -> Session {
    store
        .session_by_secret(&session.secret_hash)
        .await
        .expect("session_by_secret")
        .unwrap_or_else(|| panic!("session {} should exist", session.handle))
}

/// A session reads back as written by the hash of its secret; an unknown hash finds nothing.
pub async fn sessions_by_secret<S: UserStore + SessionStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let one = session(&alice.id, T0, T0 + HOUR);
    let two = session(&alice.id, T0 + 1, T0 + HOUR);
    store.create_session(&one).await.expect("create_session");
    store.create_session(&two).await.expect("create_session");
    assert_eq!(
        stored(&store, &one).await,
        one,
        "a session reads back as written"
    );
    assert_eq!(
        stored(&store, &two).await,
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

/// A session whose handle or secret hash is taken is a `Conflict`, leaves nothing behind and
/// replaces nothing.
pub async fn session_clashes<S: UserStore + SessionStore>(store: S) {
    let alice = with_user(&store, "alice").await;
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
        stored(&store, &original).await,
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

/// `touch` moves only `last_seen_at` and `expires_at` of a live session, and answers `false` for a
/// deleted one without bringing it back.
pub async fn touch<S: UserStore + SessionStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let mut s = session(&alice.id, T0, T0 + HOUR);
    s.data = json!({"keep": "me"}).into();
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
        stored(&store, &s).await,
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

/// Session data is replaced only at its current version, which then goes up by one; a stale or
/// future version, or a missing session, changes nothing, and a data write is not activity.
pub async fn data_compare_and_swap<S: UserStore + SessionStore>(store: S) {
    let alice = with_user(&store, "alice").await;
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
    let now = stored(&store, &s).await;
    assert_eq!((now.data.to_value(), now.data_version), (first.clone(), 1));

    assert!(
        !store
            .replace_session_data(&s.handle, 0, &json!({"step": "stale"}))
            .await
            .expect("replace_session_data"),
        "a stale version loses"
    );
    let now = stored(&store, &s).await;
    assert_eq!(
        (now.data.to_value(), now.data_version),
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
    let now = stored(&store, &s).await;
    assert_eq!((now.data.to_value(), now.data_version), (second, 2));
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

/// Of many writers racing to replace the same version of a session's data, exactly one wins, and
/// the stored data is the winner's.
pub async fn concurrent_compare_and_swap<S: UserStore + SessionStore>(store: S) {
    let store = Arc::new(store);
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
pub async fn concurrent_patches_lose_nothing<S: UserStore + SessionStore>(store: S) {
    let store = Arc::new(store);
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
                let mut data = current.data.to_value();
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

/// A deleted session is gone from every lookup, listing and the sweep, takes no data, leaves other
/// sessions alone, and frees its handle and secret hash for reuse.
pub async fn delete<S: UserStore + SessionStore>(store: S) {
    let alice = with_user(&store, "alice").await;
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
    assert_eq!(stored(&store, &kept).await, kept, "other sessions stay");

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
    assert_eq!(stored(&store, &again).await, again);
    assert_eq!(
        store
            .delete_expired_sessions(at(T0 + 2 * HOUR), 100)
            .await
            .expect("delete_expired_sessions"),
        2,
        "the sweep counts only sessions that exist"
    );
}

/// `sessions_of_user` lists a user's sessions, and only theirs, oldest first.
pub async fn sessions_of_user<S: UserStore + SessionStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let bob = with_user(&store, "bob").await;
    let carol = with_user(&store, "carol").await;
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

/// `delete_sessions_of_user` deletes and counts every session of the user but `keep` (when `keep`
/// is theirs), touches no one else's, and leaves no trace of the deleted ones in any index.
pub async fn delete_sessions_of_user<S: UserStore + SessionStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let bob = with_user(&store, "bob").await;
    let carol = with_user(&store, "carol").await;
    let first = session(&alice.id, T0, T0 + HOUR);
    let current = session(&alice.id, T0 + 1, T0 + HOUR);
    let third = session(&alice.id, T0 + 2, T0 + 2 * HOUR);
    let bobs = session(&bob.id, T0, T0 + HOUR);
    for s in [&first, &current, &third, &bobs] {
        store.create_session(s).await.expect("create_session");
    }

    assert_eq!(
        store
            .delete_sessions_of_user(&alice.id, Some(&current.handle))
            .await
            .expect("delete_sessions_of_user"),
        2,
        "counts the sessions deleted, not the one kept"
    );
    assert_eq!(
        store
            .sessions_of_user(&alice.id)
            .await
            .expect("sessions_of_user"),
        vec![current.clone()],
        "only the kept session is left"
    );
    assert_eq!(
        stored(&store, &current).await,
        current,
        "`keep` is untouched"
    );
    for gone in [&first, &third] {
        assert_eq!(
            store
                .session_by_secret(&gone.secret_hash)
                .await
                .expect("session_by_secret"),
            None,
            "a deleted session no longer resolves by its secret"
        );
        assert!(
            !store
                .touch_session(&gone.handle, at(T0 + 10), at(T0 + 3 * HOUR))
                .await
                .expect("touch_session"),
            "a deleted session cannot be touched"
        );
    }
    assert_eq!(
        store
            .sessions_of_user(&bob.id)
            .await
            .expect("sessions_of_user"),
        vec![bobs.clone()],
        "other users' sessions are untouched"
    );
    assert_eq!(stored(&store, &bobs).await, bobs);

    assert_eq!(
        store
            .delete_sessions_of_user(&alice.id, Some(&current.handle))
            .await
            .expect("delete_sessions_of_user"),
        0,
        "nothing is left but the kept session"
    );
    for nobody in [&carol.id, &UserId::generate().expect("OS randomness")] {
        assert_eq!(
            store
                .delete_sessions_of_user(nobody, None)
                .await
                .expect("delete_sessions_of_user"),
            0,
            "a user without sessions, or no user at all, loses none"
        );
    }

    // Nothing of the deleted sessions lingers in an index: handle and secret are free again.
    let again = Session {
        handle: first.handle.clone(),
        secret_hash: first.secret_hash,
        ..session(&alice.id, T0 + 3, T0 + HOUR)
    };
    store
        .create_session(&again)
        .await
        .expect("a deleted session's handle and secret hash can be reused");
    assert_eq!(
        store
            .sessions_of_user(&alice.id)
            .await
            .expect("sessions_of_user"),
        vec![current.clone(), again.clone()]
    );

    // `keep` names a session of someone else: it protects nothing of this user's, and that
    // session is not touched either.
    assert_eq!(
        store
            .delete_sessions_of_user(&alice.id, Some(&bobs.handle))
            .await
            .expect("delete_sessions_of_user"),
        2,
        "without a session of theirs to keep, all of the user's sessions go"
    );
    assert_eq!(
        store
            .sessions_of_user(&alice.id)
            .await
            .expect("sessions_of_user"),
        Vec::new()
    );
    assert_eq!(
        stored(&store, &bobs).await,
        bobs,
        "`keep` of another user is left alone"
    );
    let last = session(&alice.id, T0 + 4, T0 + HOUR);
    store.create_session(&last).await.expect("create_session");
    assert_eq!(
        store
            .delete_sessions_of_user(&alice.id, None)
            .await
            .expect("delete_sessions_of_user"),
        1,
        "with nothing to keep, every session of the user goes"
    );

    assert_eq!(
        store
            .delete_expired_sessions(at(T0 + 3 * HOUR), 100)
            .await
            .expect("delete_expired_sessions"),
        1,
        "deleted sessions are gone from the sweep: only bob's is left to expire"
    );
    assert_eq!(
        store
            .sessions_of_user(&bob.id)
            .await
            .expect("sessions_of_user"),
        Vec::new()
    );
}

/// The sweep deletes sessions expired by `now` (those expiring at `now` included) up to its limit,
/// counts them, keeps the live ones, and removes the swept ones from the per-user listing.
pub async fn sweep<S: UserStore + SessionStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let bob = with_user(&store, "bob").await;
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
pub async fn sweep_follows_touch<S: UserStore + SessionStore>(store: S) {
    let alice = with_user(&store, "alice").await;
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

/// Session data, awkward JSON included, reads back exactly as created and as replaced, with its
/// version.
pub async fn data_round_trip<S: UserStore + SessionStore>(store: S) {
    let alice = with_user(&store, "alice").await;
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
    s.data = document.clone().into();
    s.data_version = 41;
    store.create_session(&s).await.expect("create_session");
    assert_eq!(
        stored(&store, &s).await,
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
    let now = stored(&store, &s).await;
    assert_eq!(
        (now.data.to_value(), now.data_version),
        (replaced, 42),
        "replaced data reads back exactly"
    );
}

/// The client's user agent and address read back as written, each present or absent.
pub async fn client_info_round_trip<S: UserStore + SessionStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let anonymous = session(&alice.id, T0, T0 + HOUR);
    let described = Session {
        client: ClientInfo {
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Ünïcode/1.0 🦀".into()),
            ip: Some("2001:db8::1".parse().expect("an IP address")),
        },
        ..session(&alice.id, T0 + 1, T0 + HOUR)
    };
    let half = Session {
        client: ClientInfo {
            user_agent: None,
            ip: Some("203.0.113.7".parse().expect("an IP address")),
        },
        ..session(&alice.id, T0 + 2, T0 + HOUR)
    };
    for s in [&anonymous, &described, &half] {
        store.create_session(s).await.expect("create_session");
        assert_eq!(
            stored(&store, s).await.client,
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

/// The owner of a session must exist (the SQL stores' foreign key; the memory store checks the
/// same).
pub async fn sessions_need_a_user<S: UserStore + SessionStore>(store: S) {
    let ghost = UserId::generate().expect("OS randomness");
    let orphan = session(&ghost, T0, T0 + HOUR);
    assert!(
        matches!(
            store.create_session(&orphan).await,
            Err(StoreError::Other(_))
        ),
        "a session of a user that does not exist is refused"
    );
    assert_eq!(
        store
            .session_by_secret(&orphan.secret_hash)
            .await
            .expect("session_by_secret"),
        None,
        "a refused session leaves nothing behind"
    );
    assert_eq!(
        store
            .sessions_of_user(&ghost)
            .await
            .expect("sessions_of_user"),
        Vec::new()
    );
}

/// `session_owner` names the user of a stored session, and nobody once it is deleted or for a
/// handle never stored.
pub async fn session_owner<S: UserStore + SessionStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let bob = with_user(&store, "bob").await;
    let live = session(&alice.id, T0, T0 + HOUR);
    let other = session(&bob.id, T0, T0 + HOUR);
    store.create_session(&live).await.expect("create_session");
    store.create_session(&other).await.expect("create_session");
    let owner = |handle: SessionHandle| {
        let store = &store;
        async move { store.session_owner(&handle).await.expect("session_owner") }
    };
    assert_eq!(owner(live.handle.clone()).await, Some(alice.id.clone()));
    assert_eq!(owner(other.handle.clone()).await, Some(bob.id.clone()));
    assert_eq!(
        owner(SessionHandle::generate().expect("OS randomness")).await,
        None,
        "an unknown handle has no owner"
    );
    store
        .delete_session(&live.handle)
        .await
        .expect("delete_session");
    assert_eq!(
        owner(live.handle.clone()).await,
        None,
        "a deleted session has no owner"
    );
}

/// An account's deletion takes its sessions (with their data and the per-user index) wherever
/// they are kept: the session store deletes them all, the user store deletes the account (and
/// what it holds itself), in either order, and a repeat of either finds nothing left.
pub async fn sessions_of_a_deleted_user<S: UserStore + SessionStore>(store: S) {
    let bob = with_user(&store, "bob").await;
    let bobs = session(&bob.id, T0, T0 + HOUR);
    store.create_session(&bobs).await.expect("create_session");
    for (name, sessions_first) in [("alice", true), ("carol", false)] {
        let user = with_user(&store, name).await;
        let mut mine = Vec::new();
        for i in 0..3 {
            let mut s = session(&user.id, T0 + i, T0 + HOUR);
            s.data = SessionData::new(json!({"n": i}));
            store.create_session(&s).await.expect("create_session");
            mine.push(s);
        }
        let deletion = tessera_core::UserDeletion {
            user: user.id.clone(),
            username: user.username.clone(),
            event: tessera_core::NewEvent {
                at: at(T0 + 10),
                kind: tessera_core::EventKind::AccountDeleted,
                user_id: Some(user.id.clone()),
                detail: json!({}),
            },
        };
        if sessions_first {
            assert_eq!(
                store
                    .delete_sessions_of_user(&user.id, None)
                    .await
                    .expect("delete_sessions_of_user"),
                3,
                "every session of the user goes"
            );
            assert!(store.delete_user(&deletion).await.expect("delete_user"));
        } else {
            assert!(store.delete_user(&deletion).await.expect("delete_user"));
            store
                .delete_sessions_of_user(&user.id, None)
                .await
                .expect("delete_sessions_of_user after the account");
        }
        assert_eq!(
            store
                .delete_sessions_of_user(&user.id, None)
                .await
                .expect("delete_sessions_of_user again"),
            0,
            "a repeat finds nothing"
        );
        assert!(
            !store
                .delete_user(&deletion)
                .await
                .expect("delete_user again"),
            "a repeat finds no account"
        );
        assert!(
            store
                .sessions_of_user(&user.id)
                .await
                .expect("sessions_of_user")
                .is_empty(),
            "nothing is indexed under the deleted user"
        );
        for gone in &mine {
            assert_eq!(
                store
                    .session_by_secret(&gone.secret_hash)
                    .await
                    .expect("session_by_secret"),
                None,
                "a deleted user's session no longer resolves"
            );
            assert!(
                !store
                    .replace_session_data(&gone.handle, 0, &json!({"x": 1}))
                    .await
                    .expect("replace_session_data"),
                "its data is gone"
            );
            assert!(
                !store
                    .delete_session(&gone.handle)
                    .await
                    .expect("delete_session"),
                "it is gone by its handle too"
            );
        }
        // The name is free again; the new account starts with no session.
        let again = with_user(&store, name).await;
        assert!(
            store
                .sessions_of_user(&again.id)
                .await
                .expect("sessions_of_user")
                .is_empty(),
            "a new account of the same name inherits no session"
        );
    }
    assert_eq!(
        stored(&store, &bobs).await,
        bobs,
        "another user's session is untouched"
    );
}

/// How a session was authenticated round-trips, and a step-up replaces it.
pub async fn session_auth<S: UserStore + SessionStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let session = session(&alice.id, T0, T0 + HOUR);
    store
        .create_session(&session)
        .await
        .expect("create_session");
    assert_eq!(stored(&store, &session).await.auth, session.auth);
    let stepped = session
        .auth
        .with_second_factor(tessera_core::SecondFactorMethod::Totp, at(T0 + 60_000));
    assert!(
        store
            .set_session_auth(&session.handle, &stepped)
            .await
            .expect("set_session_auth")
    );
    assert_eq!(stored(&store, &session).await.auth, stepped);
    store.delete_session(&session.handle).await.expect("delete");
    assert!(
        !store
            .set_session_auth(&session.handle, &stepped)
            .await
            .expect("set_session_auth"),
        "a session that is gone"
    );
}
