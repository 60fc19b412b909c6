//! [`SecondFactorStore`] checks of passkeys: registration (credential ids unique across every
//! account, the per-account limit), the signature counter that only moves forward, renaming and
//! removal, and what goes with a deleted account.

use std::sync::Arc;

use tessera_core::store::{SecondFactorStore, UserStore};
use tessera_core::{StoredPasskey, UserDeletion, UserId};
use tokio::task::JoinSet;

use super::{RACERS, T0, at, with_user};

/// A passkey of `user` as a registration stores it: never used yet.
fn passkey(user: &UserId, id: &str, credential_id: &[u8], created_at: i64) -> StoredPasskey {
    StoredPasskey {
        id: id.to_owned(),
        user_id: user.clone(),
        credential_id: credential_id.to_vec(),
        name: format!("Key {id}"),
        credential: format!(r#"{{"cred":{{"id":"{id}","alg":-7,"note":"clé ✓"}}}}"#),
        sign_count: 0,
        created_at: at(created_at),
        last_used_at: None,
    }
}

async fn add<S: SecondFactorStore>(store: &S, passkey: &StoredPasskey, max: usize) -> bool {
    store.add_passkey(passkey, max).await.expect("add_passkey")
}

async fn of<S: SecondFactorStore>(store: &S, user: &UserId) -> Vec<StoredPasskey> {
    store.passkeys_of(user).await.expect("passkeys_of")
}

async fn by_credential<S: SecondFactorStore>(
    store: &S,
    credential_id: &[u8],
) -> Option<StoredPasskey> {
    store
        .passkey_by_credential(credential_id)
        .await
        .expect("passkey_by_credential")
}

/// Round trip: every field comes back as it was written (binary credential ids, the credential
/// text, a counter beyond `i32`), oldest first by `created_at` then id, whatever the order they
/// were added in; found by credential id, whoever's it is.
pub async fn passkeys_round_trip<S: UserStore + SecondFactorStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let bob = with_user(&store, "bob").await;
    assert_eq!(of(&store, &alice.id).await, []);

    let late = StoredPasskey {
        sign_count: 7,
        ..passkey(&alice.id, "pky_c", &[0x00, 0xff, 0x10, 0x00], T0 + 2)
    };
    let second = StoredPasskey {
        sign_count: u32::MAX,
        ..passkey(&alice.id, "pky_b", &[0xff; 64], T0)
    };
    let first = passkey(&alice.id, "pky_a", b"\x00", T0);
    let bobs = passkey(&bob.id, "pky_0", b"bob's key", T0 - 1);
    for p in [&late, &second, &first, &bobs] {
        assert!(add(&store, p, 20).await, "registering {}", p.id);
    }

    assert_eq!(
        of(&store, &alice.id).await,
        [first.clone(), second.clone(), late.clone()],
        "oldest first, by created_at then id, every field kept"
    );
    assert_eq!(
        of(&store, &bob.id).await,
        std::slice::from_ref(&bobs),
        "only the user's own"
    );
    for p in [&late, &second, &first, &bobs] {
        assert_eq!(
            by_credential(&store, &p.credential_id).await.as_ref(),
            Some(p),
            "found by its credential id"
        );
    }
    assert_eq!(
        by_credential(&store, &[0x00, 0xff, 0x10]).await,
        None,
        "a prefix of a credential id is another credential id"
    );
    assert_eq!(by_credential(&store, b"no such credential").await, None);
    let ghost = UserId::generate().expect("OS randomness");
    assert_eq!(of(&store, &ghost).await, []);
}

/// A credential id is registered once, across every account: again (for the same user or
/// another) writes nothing. Nor does a passkey of a user that does not exist.
pub async fn passkey_credential_ids_are_unique<S: UserStore + SecondFactorStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let bob = with_user(&store, "bob").await;
    let original = passkey(&alice.id, "pky_1", b"one credential", T0);
    assert!(add(&store, &original, 20).await);

    let again = StoredPasskey {
        name: "Again".into(),
        credential: "{}".into(),
        ..passkey(&alice.id, "pky_2", b"one credential", T0 + 1)
    };
    assert!(
        !add(&store, &again, 20).await,
        "the same credential id, the same user"
    );
    let bobs = passkey(&bob.id, "pky_3", b"one credential", T0 + 2);
    assert!(
        !add(&store, &bobs, 20).await,
        "the same credential id, another user"
    );
    assert_eq!(
        by_credential(&store, b"one credential").await,
        Some(original.clone()),
        "the registered passkey is untouched"
    );
    assert_eq!(of(&store, &alice.id).await, [original]);
    assert_eq!(of(&store, &bob.id).await, [], "nothing written for bob");

    let ghost = UserId::generate().expect("OS randomness");
    assert!(
        !add(&store, &passkey(&ghost, "pky_4", b"a ghost's", T0), 20).await,
        "no such user"
    );
    assert_eq!(by_credential(&store, b"a ghost's").await, None);
    assert_eq!(of(&store, &ghost).await, []);
}

/// The per-account limit: the passkey past `max` is refused and not written; it counts one
/// account's passkeys only; removing one makes room again.
pub async fn passkey_limit<S: UserStore + SecondFactorStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let bob = with_user(&store, "bob").await;
    for i in 0..3_u8 {
        let p = passkey(
            &alice.id,
            &format!("pky_a{i}"),
            &[b'a', i],
            T0 + i64::from(i),
        );
        assert!(add(&store, &p, 3).await, "passkey {i} of 3");
    }
    let fourth = passkey(&alice.id, "pky_a3", b"a3", T0 + 3);
    assert!(!add(&store, &fourth, 3).await, "one past the limit");
    assert_eq!(by_credential(&store, b"a3").await, None, "nothing written");
    assert_eq!(of(&store, &alice.id).await.len(), 3);
    assert!(
        add(&store, &passkey(&bob.id, "pky_b0", b"b0", T0), 3).await,
        "another account's passkeys do not count"
    );
    assert!(
        add(&store, &fourth, 4).await,
        "the limit is the caller's to give"
    );
    assert!(
        !add(&store, &passkey(&alice.id, "pky_a4", b"a4", T0 + 4), 4).await,
        "four of four"
    );
    assert!(
        store
            .delete_passkey(&alice.id, "pky_a0")
            .await
            .expect("delete_passkey")
    );
    assert!(
        add(&store, &passkey(&alice.id, "pky_a4", b"a4", T0 + 4), 4).await,
        "a removal makes room"
    );
    assert_eq!(of(&store, &alice.id).await.len(), 4);
}

/// Concurrent registrations of distinct credentials on one account never pass the limit.
pub async fn concurrent_passkey_adds<S: UserStore + SecondFactorStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let store = Arc::new(store);
    let mut racers = JoinSet::new();
    for i in 0..RACERS {
        let store = Arc::clone(&store);
        let p = passkey(
            &alice.id,
            &format!("pky_{i:02}"),
            format!("credential {i}").as_bytes(),
            T0,
        );
        racers.spawn(async move { add(&*store, &p, 3).await });
    }
    let added = racers
        .join_all()
        .await
        .into_iter()
        .filter(|added| *added)
        .count();
    assert_eq!(added, 3, "three of three, however many race");
    assert_eq!(of(&*store, &alice.id).await.len(), 3, "and three stored");
}

/// Concurrent registrations of one credential id (on one account or several) store it once.
pub async fn concurrent_adds_of_one_credential<S: UserStore + SecondFactorStore>(store: S) {
    let users = [
        with_user(&store, "alice").await.id,
        with_user(&store, "bob").await.id,
        with_user(&store, "carol").await.id,
    ];
    let store = Arc::new(store);
    let mut racers = JoinSet::new();
    for i in 0..RACERS {
        let store = Arc::clone(&store);
        let p = passkey(&users[i % users.len()], &format!("pky_{i:02}"), b"one", T0);
        racers.spawn(async move { add(&*store, &p, 20).await.then_some(p) });
    }
    let winners: Vec<StoredPasskey> = racers.join_all().await.into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "one credential, one registration");
    assert_eq!(
        by_credential(&*store, b"one").await.as_ref(),
        winners.first(),
        "the winner's passkey is stored"
    );
    let mut stored = 0;
    for user in &users {
        stored += of(&*store, user).await.len();
    }
    assert_eq!(stored, 1, "and nothing else");
}

/// A use records the new credential, counter and time, only when the counter moves forward
/// (or stays 0 on an authenticator without one); anything else changes nothing.
pub async fn passkey_counters_move_forward<S: UserStore + SecondFactorStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let counted = StoredPasskey {
        sign_count: 5,
        ..passkey(&alice.id, "pky_counted", b"counted", T0)
    };
    assert!(add(&store, &counted, 20).await);
    let used = |credential: &'static [u8], text: &'static str, count: u32, ms: i64| {
        let store = &store;
        async move {
            store
                .passkey_used(credential, text, count, at(ms))
                .await
                .expect("passkey_used")
        }
    };

    assert!(
        !used(b"counted", "replayed", 5, T0 + 1).await,
        "the same counter"
    );
    assert!(
        !used(b"counted", "cloned", 4, T0 + 2).await,
        "a counter that went back"
    );
    assert_eq!(
        by_credential(&store, b"counted").await,
        Some(counted.clone()),
        "a refused use changes nothing"
    );
    assert!(used(b"counted", "after six", 6, T0 + 3).await);
    let after = StoredPasskey {
        credential: "after six".into(),
        sign_count: 6,
        last_used_at: Some(at(T0 + 3)),
        ..counted.clone()
    };
    assert_eq!(by_credential(&store, b"counted").await, Some(after.clone()));
    assert_eq!(of(&store, &alice.id).await, std::slice::from_ref(&after));
    assert!(!used(b"counted", "again", 6, T0 + 4).await, "used twice");
    assert!(
        !used(b"counted", "zero", 0, T0 + 4).await,
        "0 is not ahead of a counter"
    );
    assert_eq!(by_credential(&store, b"counted").await, Some(after));
    assert!(
        used(b"counted", "the last", u32::MAX, T0 + 5).await,
        "the largest counter"
    );
    assert_eq!(
        by_credential(&store, b"counted").await.map(|p| (
            p.credential,
            p.sign_count,
            p.last_used_at
        )),
        Some(("the last".to_owned(), u32::MAX, Some(at(T0 + 5))))
    );

    let uncounted = passkey(&alice.id, "pky_uncounted", b"uncounted", T0 + 1);
    assert!(add(&store, &uncounted, 20).await);
    for (i, text) in ["first", "second"].into_iter().enumerate() {
        let ms = T0 + 10 + i64::try_from(i).expect("small");
        assert!(
            used(b"uncounted", text, 0, ms).await,
            "an authenticator without a counter: 0 and 0"
        );
        assert_eq!(
            by_credential(&store, b"uncounted").await.map(|p| (
                p.credential,
                p.sign_count,
                p.last_used_at
            )),
            Some((text.to_owned(), 0, Some(at(ms))))
        );
    }
    assert!(
        used(b"uncounted", "counting", 1, T0 + 20).await,
        "a counter that starts"
    );
    assert!(
        !used(b"uncounted", "back to zero", 0, T0 + 21).await,
        "once counted, 0 is behind"
    );

    assert!(
        !used(b"unknown", "x", 100, T0).await,
        "no passkey with this credential id"
    );
    assert_eq!(by_credential(&store, b"unknown").await, None);
    assert!(
        store
            .delete_passkey(&alice.id, "pky_counted")
            .await
            .expect("delete_passkey")
    );
    assert!(
        !used(b"counted", "gone", u32::MAX, T0 + 30).await,
        "a removed passkey"
    );
}

/// Of many concurrent uses with one counter value, exactly one is recorded, and it is the one
/// stored.
pub async fn concurrent_passkey_use<S: UserStore + SecondFactorStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let p = StoredPasskey {
        sign_count: 1,
        ..passkey(&alice.id, "pky_1", b"raced", T0)
    };
    assert!(add(&store, &p, 20).await);
    let store = Arc::new(store);
    let mut racers = JoinSet::new();
    for i in 0..RACERS {
        let store = Arc::clone(&store);
        racers.spawn(async move {
            let credential = format!("use {i}");
            store
                .passkey_used(b"raced", &credential, 2, at(T0 + 1))
                .await
                .expect("passkey_used")
                .then_some(credential)
        });
    }
    let winners: Vec<String> = racers.join_all().await.into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "one counter value, one use");
    let stored = by_credential(&*store, b"raced").await.expect("the passkey");
    assert_eq!(
        Some(&stored.credential),
        winners.first(),
        "the winner's state"
    );
    assert_eq!(stored.sign_count, 2);
    assert_eq!(stored.last_used_at, Some(at(T0 + 1)));
}

/// Renaming and removal touch only the given user's passkey with the given id.
pub async fn passkey_rename_and_delete<S: UserStore + SecondFactorStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let bob = with_user(&store, "bob").await;
    let laptop = passkey(&alice.id, "pky_laptop", b"laptop", T0);
    let phone = passkey(&alice.id, "pky_phone", b"phone", T0 + 1);
    let bobs = passkey(&bob.id, "pky_bob", b"bob", T0);
    for p in [&laptop, &phone, &bobs] {
        assert!(add(&store, p, 20).await);
    }

    assert!(
        !store
            .rename_passkey(&bob.id, "pky_laptop", "Mine now")
            .await
            .expect("rename_passkey"),
        "another user's passkey"
    );
    assert!(
        !store
            .rename_passkey(&alice.id, "pky_none", "Nothing")
            .await
            .expect("rename_passkey"),
        "no such passkey"
    );
    assert_eq!(by_credential(&store, b"laptop").await, Some(laptop.clone()));
    assert!(
        store
            .rename_passkey(&alice.id, "pky_laptop", "Work laptop")
            .await
            .expect("rename_passkey")
    );
    let renamed = StoredPasskey {
        name: "Work laptop".into(),
        ..laptop.clone()
    };
    assert_eq!(
        of(&store, &alice.id).await,
        [renamed.clone(), phone.clone()],
        "only the name changes, only of that passkey"
    );
    assert!(
        store
            .rename_passkey(&alice.id, "pky_laptop", "Work laptop")
            .await
            .expect("rename_passkey"),
        "the passkey exists, even when its name stays"
    );

    assert!(
        !store
            .delete_passkey(&bob.id, "pky_laptop")
            .await
            .expect("delete_passkey"),
        "another user's passkey"
    );
    assert_eq!(by_credential(&store, b"laptop").await, Some(renamed));
    assert!(
        store
            .delete_passkey(&alice.id, "pky_laptop")
            .await
            .expect("delete_passkey")
    );
    assert!(
        !store
            .delete_passkey(&alice.id, "pky_laptop")
            .await
            .expect("delete_passkey"),
        "removed already"
    );
    assert_eq!(by_credential(&store, b"laptop").await, None);
    assert_eq!(of(&store, &alice.id).await, [phone]);

    assert!(add(&store, &passkey(&alice.id, "pky_key", b"key", T0 + 2), 20).await);
    assert_eq!(
        store
            .delete_passkeys(&alice.id)
            .await
            .expect("delete_passkeys"),
        2
    );
    assert_eq!(
        store
            .delete_passkeys(&alice.id)
            .await
            .expect("delete_passkeys"),
        0
    );
    assert_eq!(of(&store, &alice.id).await, []);
    assert_eq!(by_credential(&store, b"phone").await, None);
    assert_eq!(
        of(&store, &bob.id).await,
        [bobs],
        "another user's passkeys stay"
    );
    let ghost = UserId::generate().expect("OS randomness");
    assert_eq!(
        store
            .delete_passkeys(&ghost)
            .await
            .expect("delete_passkeys"),
        0
    );
}

/// Deleting the account takes its passkeys along, and frees their credential ids.
pub async fn passkeys_of_a_deleted_user<S: UserStore + SecondFactorStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let bob = with_user(&store, "bob").await;
    let bobs = passkey(&bob.id, "pky_bob", b"bob", T0);
    for p in [
        &passkey(&alice.id, "pky_1", b"alice 1", T0),
        &passkey(&alice.id, "pky_2", b"alice 2", T0 + 1),
        &bobs,
    ] {
        assert!(add(&store, p, 20).await);
    }
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
    assert_eq!(by_credential(&store, b"alice 1").await, None);
    assert_eq!(by_credential(&store, b"alice 2").await, None);
    assert_eq!(of(&store, &alice.id).await, []);
    assert!(
        !store
            .passkey_used(b"alice 1", "x", 1, at(T0 + 1))
            .await
            .expect("passkey_used"),
        "a deleted account's passkey is not used"
    );
    assert_eq!(
        of(&store, &bob.id).await,
        [bobs],
        "another user's passkeys stay"
    );
    assert!(
        add(&store, &passkey(&bob.id, "pky_3", b"alice 1", T0 + 2), 20).await,
        "the credential id is free again"
    );
}
