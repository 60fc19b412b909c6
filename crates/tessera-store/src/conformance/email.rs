//! The [`UserStore`] checks of addresses and mailed codes: an address is unique by its key across
//! accounts, a change of address starts it unverified and voids the codes that were for the old
//! one, a newer code voids the older one of its purpose, and a code works once, before it
//! expires, with the effects its purpose names.

use std::sync::Arc;

use tessera_core::store::UserStore;
use tessera_core::{
    AccountCode, CodePurpose, CodeVerified, EmailAddress, EventKind, NewEvent, SessionId,
    StoreError, Timestamp, TokenHash, User, UserDeletion, UserEmail, UserId,
};
use tokio::task::JoinSet;

use super::{HOUR, RACERS, T0, at, user, with_user};

fn address(raw: &str) -> EmailAddress {
    EmailAddress::parse(raw).expect("valid address")
}

fn unverified(raw: &str) -> Option<UserEmail> {
    Some(UserEmail {
        address: address(raw),
        verified: false,
    })
}

async fn with_address<S: UserStore>(store: &S, name: &str, raw: &str, verified: bool) -> User {
    let mut u = user(name);
    u.email = Some(UserEmail {
        address: address(raw),
        verified,
    });
    store.create_user(&u).await.expect("create_user");
    u
}

async fn stored<S: UserStore>(store: &S, id: &UserId) -> User {
    store
        .user_by_id(id)
        .await
        .expect("user_by_id")
        .expect("the user exists")
}

/// A code of `purpose` for `user`, mailed to `key`, valid until `expires_at`.
async fn with_code<S: UserStore>(
    store: &S,
    user: &UserId,
    purpose: CodePurpose,
    key: &str,
    expires_at: Timestamp,
) -> TokenHash {
    let code = AccountCode {
        hash: SessionId::generate().expect("OS randomness").hash(),
        user_id: user.clone(),
        purpose,
        email_key: key.to_owned(),
        created_at: at(T0),
        expires_at,
    };
    assert!(
        store.create_code(&code).await.expect("create_code"),
        "create_code for an existing user returns true"
    );
    code.hash
}

/// Asserts an address conflict: a [`StoreError::Conflict`] that says the address is in use and
/// does not repeat it (an error message may end up in a log).
fn assert_address_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::Conflict(message)) => {
            let lower = message.to_lowercase();
            assert!(
                lower.contains("in use"),
                "{what}: the conflict says the address is in use: {message:?}"
            );
            assert!(
                !lower.contains("alice") && !lower.contains("example"),
                "{what}: the conflict does not repeat the address: {message:?}"
            );
        }
        other => panic!("{what}: expected a Conflict, got {other:?}"),
    }
}

/// An account's address reads back as created (as given, verified or not) by id, by username,
/// in the listing and by its key; an account without one has `None`; an unknown key finds none.
pub async fn emails_round_trip<S: UserStore>(store: S) {
    let alice = with_address(&store, "alice", "Alice@Example.org", false).await;
    let bob = with_address(&store, "bob", "bob+tag@sub.example.org", true).await;
    let carol = with_user(&store, "carol").await;
    let dave = with_address(&store, "dave", "dave@例子.广告", false).await;
    for u in [&alice, &bob, &carol, &dave] {
        assert_eq!(
            store.user_by_id(&u.id).await.expect("user_by_id").as_ref(),
            Some(u),
            "the address reads back by id as created"
        );
        assert_eq!(
            store
                .user_by_username(&u.username)
                .await
                .expect("user_by_username")
                .as_ref(),
            Some(u),
            "the address reads back by username as created"
        );
    }
    let read = stored(&store, &alice.id).await;
    assert_eq!(
        read.email.as_ref().map(|e| e.address.as_str()),
        Some("Alice@example.org"),
        "the address is kept as given (its domain in ASCII form), not as its key"
    );
    assert_eq!(
        store.list_users(None, 10).await.expect("list_users"),
        vec![alice.clone(), bob.clone(), carol, dave.clone()],
        "the listing shows the addresses"
    );
    for (u, typed) in [
        (&alice, "ALICE@example.ORG"),
        (&bob, "Bob+Tag@Sub.Example.Org"),
        (&dave, "DAVE@xn--fsqu00a.xn--4rr70v"),
    ] {
        assert_eq!(
            store
                .user_by_email(address(typed).key())
                .await
                .expect("user_by_email")
                .as_ref(),
            Some(u),
            "user_by_email finds the account by the key of any spelling of its address"
        );
    }
    assert_eq!(
        store
            .user_by_email(address("nobody@example.org").key())
            .await
            .expect("user_by_email"),
        None,
        "an unknown address finds no account"
    );
}

/// No two accounts have addresses with the same key, whatever their spelling: a second one is a
/// conflict that names no address, on creation and on change, and changes nothing; an address
/// given up is free again; an account may set its own address again.
pub async fn addresses_are_unique<S: UserStore>(store: S) {
    let alice = with_address(&store, "alice", "alice@example.org", true).await;
    for (i, taken) in [
        "alice@example.org",
        "ALICE@Example.ORG",
        "ａlice@example.org",
    ]
    .into_iter()
    .enumerate()
    {
        let mut impostor = user(&format!("impostor{i}"));
        impostor.email = unverified(taken);
        assert_address_conflict(
            store.create_user(&impostor).await,
            "creating an account with a taken address",
        );
        assert_eq!(
            store.user_by_id(&impostor.id).await.expect("user_by_id"),
            None,
            "a refused account leaves nothing behind"
        );
    }
    let bob = with_user(&store, "bob").await;
    assert_address_conflict(
        store
            .set_email(&bob.id, Some(&address("Alice@EXAMPLE.org")))
            .await,
        "setting a taken address",
    );
    assert_eq!(
        stored(&store, &bob.id).await,
        bob,
        "a refused address is not set"
    );
    assert_eq!(
        store
            .user_by_email("alice@example.org")
            .await
            .expect("user_by_email"),
        Some(alice.clone()),
        "the first owner keeps the address, still verified"
    );
    // Its own address, spelled otherwise: not a conflict.
    assert!(
        store
            .set_email(&alice.id, Some(&address("Alice@Example.org")))
            .await
            .expect("set_email"),
        "an account may set its own address again"
    );
    assert_eq!(
        stored(&store, &alice.id).await.email,
        unverified("Alice@Example.org"),
        "as newly given, and unverified"
    );
    assert!(
        store.set_email(&alice.id, None).await.expect("set_email"),
        "removing an address"
    );
    assert!(
        store
            .set_email(&bob.id, Some(&address("ALICE@example.org")))
            .await
            .expect("set_email"),
        "an address given up is free for another account"
    );
    assert_eq!(
        store
            .user_by_email("alice@example.org")
            .await
            .expect("user_by_email")
            .map(|u| u.id),
        Some(bob.id),
        "and found under its new owner"
    );
}

/// Setting, changing or removing an address leaves it unverified (even the same address again),
/// moves neither `updated_at` nor `not_before`, re-keys `user_by_email`, voids the account's
/// pending codes of both purposes (they went to the old mailbox; nobody else's), and answers `false`
/// for a missing user.
pub async fn set_email_resets_verification<S: UserStore>(store: S) {
    let alice = with_address(&store, "alice", "alice@example.org", true).await;
    let bob = with_address(&store, "bob", "bob@example.org", false).await;
    let bobs_code = with_code(
        &store,
        &bob.id,
        CodePurpose::VerifyEmail,
        "bob@example.org",
        at(T0 + HOUR),
    )
    .await;
    let old_address = with_code(
        &store,
        &alice.id,
        CodePurpose::VerifyEmail,
        "alice@example.org",
        at(T0 + HOUR),
    )
    .await;
    let recovery = with_code(
        &store,
        &alice.id,
        CodePurpose::Recovery,
        "alice@example.org",
        at(T0 + HOUR),
    )
    .await;
    assert!(
        store
            .set_email(&alice.id, Some(&address("Alice.New@Example.org")))
            .await
            .expect("set_email"),
        "set_email on an existing user returns true"
    );
    assert_eq!(
        stored(&store, &alice.id).await,
        User {
            email: unverified("Alice.New@Example.org"),
            ..alice.clone()
        },
        "only the address changes, and it starts unverified"
    );
    assert_eq!(
        store
            .user_by_email("alice@example.org")
            .await
            .expect("user_by_email"),
        None,
        "the old address no longer finds the account"
    );
    assert_eq!(
        store
            .user_by_email("alice.new@example.org")
            .await
            .expect("user_by_email")
            .map(|u| u.id),
        Some(alice.id.clone()),
        "the new one does"
    );
    assert_eq!(
        store
            .use_verification_code(&old_address, at(T0 + 1))
            .await
            .expect("use_verification_code"),
        None,
        "a verification code for the old address is void"
    );
    assert!(
        store
            .use_verification_code(&bobs_code, at(T0 + 1))
            .await
            .expect("use_verification_code")
            .is_some(),
        "another account's verification code is untouched"
    );

    // A new code for the new address, then the same address set again: void too.
    let new_address = with_code(
        &store,
        &alice.id,
        CodePurpose::VerifyEmail,
        "alice.new@example.org",
        at(T0 + HOUR),
    )
    .await;
    assert!(
        store
            .set_email(&alice.id, Some(&address("alice.new@example.org")))
            .await
            .expect("set_email")
    );
    assert_eq!(
        store
            .use_verification_code(&new_address, at(T0 + 1))
            .await
            .expect("use_verification_code"),
        None,
        "setting the address again voids its pending verification code"
    );

    // Verified, then removed: no address, no code, nobody found under it.
    let verify = with_code(
        &store,
        &alice.id,
        CodePurpose::VerifyEmail,
        "alice.new@example.org",
        at(T0 + HOUR),
    )
    .await;
    assert_eq!(
        store
            .use_verification_code(&verify, at(T0 + 1))
            .await
            .expect("use_verification_code"),
        Some(CodeVerified {
            user: alice.id.clone(),
            still_current: true
        })
    );
    let pending = with_code(
        &store,
        &alice.id,
        CodePurpose::VerifyEmail,
        "alice.new@example.org",
        at(T0 + HOUR),
    )
    .await;
    assert!(store.set_email(&alice.id, None).await.expect("set_email"));
    assert_eq!(
        stored(&store, &alice.id).await,
        alice_without_address(&alice),
        "removing the address changes nothing else"
    );
    assert_eq!(
        store
            .user_by_email("alice.new@example.org")
            .await
            .expect("user_by_email"),
        None
    );
    assert_eq!(
        store
            .use_verification_code(&pending, at(T0 + 1))
            .await
            .expect("use_verification_code"),
        None,
        "removing the address voids its pending verification code"
    );
    assert_eq!(
        store
            .use_recovery_code(&recovery, "$argon2id$recovered", at(T0 + 1))
            .await
            .expect("use_recovery_code"),
        None,
        "a recovery code mailed to the old address is void after a change of address"
    );

    let ghost = UserId::generate().expect("OS randomness");
    assert!(
        !store
            .set_email(&ghost, Some(&address("ghost@example.org")))
            .await
            .expect("set_email"),
        "set_email on a missing user returns false"
    );
    assert_eq!(
        store
            .user_by_email("ghost@example.org")
            .await
            .expect("user_by_email"),
        None,
        "and sets nothing"
    );
}

fn alice_without_address(alice: &User) -> User {
    User {
        email: None,
        ..alice.clone()
    }
}

/// A new code voids the account's older code of the same purpose, not its code of the other
/// purpose nor anyone else's; a hash that exists is a conflict that replaces nothing; a code for
/// a missing user is not stored.
pub async fn newer_code_voids_older<S: UserStore>(store: S) {
    let alice = with_address(&store, "alice", "alice@example.org", false).await;
    let bob = with_address(&store, "bob", "bob@example.org", false).await;
    let key = "alice@example.org";
    let old_recovery =
        with_code(&store, &alice.id, CodePurpose::Recovery, key, at(T0 + HOUR)).await;
    let verify = with_code(
        &store,
        &alice.id,
        CodePurpose::VerifyEmail,
        key,
        at(T0 + HOUR),
    )
    .await;
    let bobs = with_code(
        &store,
        &bob.id,
        CodePurpose::Recovery,
        "bob@example.org",
        at(T0 + HOUR),
    )
    .await;
    let new_recovery =
        with_code(&store, &alice.id, CodePurpose::Recovery, key, at(T0 + HOUR)).await;

    let clash = AccountCode {
        hash: bobs,
        user_id: alice.id.clone(),
        purpose: CodePurpose::Recovery,
        email_key: key.into(),
        created_at: at(T0),
        expires_at: at(T0 + HOUR),
    };
    assert!(
        matches!(
            store.create_code(&clash).await,
            Err(StoreError::Conflict(_))
        ),
        "a hash that exists is a Conflict"
    );
    let ghost = AccountCode {
        hash: SessionId::generate().expect("OS randomness").hash(),
        user_id: UserId::generate().expect("OS randomness"),
        ..clash
    };
    assert!(
        !store.create_code(&ghost).await.expect("create_code"),
        "create_code for a missing user returns false"
    );
    assert_eq!(
        store
            .use_recovery_code(&ghost.hash, "$argon2id$ghost", at(T0 + 1))
            .await
            .expect("use_recovery_code"),
        None,
        "and stores nothing"
    );

    assert_eq!(
        store
            .use_verification_code(&verify, at(T0 + 1))
            .await
            .expect("use_verification_code"),
        Some(CodeVerified {
            user: alice.id.clone(),
            still_current: true
        }),
        "a new recovery code leaves the verification code alone"
    );
    assert_eq!(
        store
            .use_recovery_code(&old_recovery, "$argon2id$old", at(T0 + 2))
            .await
            .expect("use_recovery_code"),
        None,
        "the older recovery code is void"
    );
    assert_eq!(
        stored(&store, &alice.id).await.password_hash,
        alice.password_hash,
        "a void code changes nothing"
    );
    assert_eq!(
        store
            .use_recovery_code(&bobs, "$argon2id$bob", at(T0 + 3))
            .await
            .expect("use_recovery_code"),
        Some(bob.id.clone()),
        "another account's code is untouched, and a refused clash did not replace it"
    );
    assert_eq!(
        store
            .use_recovery_code(&new_recovery, "$argon2id$new", at(T0 + 4))
            .await
            .expect("use_recovery_code"),
        Some(alice.id.clone()),
        "the newest recovery code works"
    );
}

/// A code is refused from its `expires_at` on (nothing changes), used once only, and only for
/// its own purpose; an unknown hash is refused.
pub async fn codes_work_once_before_they_expire<S: UserStore>(store: S) {
    let alice = with_address(&store, "alice", "alice@example.org", false).await;
    let key = "alice@example.org";
    let recovery = with_code(&store, &alice.id, CodePurpose::Recovery, key, at(T0 + HOUR)).await;
    let verify = with_code(
        &store,
        &alice.id,
        CodePurpose::VerifyEmail,
        key,
        at(T0 + HOUR),
    )
    .await;

    assert_eq!(
        store
            .use_recovery_code(&recovery, "$argon2id$late", at(T0 + HOUR))
            .await
            .expect("use_recovery_code"),
        None,
        "a recovery code is refused at its expiry"
    );
    assert_eq!(
        store
            .use_verification_code(&verify, at(T0 + 2 * HOUR))
            .await
            .expect("use_verification_code"),
        None,
        "a verification code is refused after its expiry"
    );
    assert_eq!(
        stored(&store, &alice.id).await,
        alice,
        "refused codes change nothing"
    );
    assert_eq!(
        store
            .use_verification_code(&recovery, at(T0 + 1))
            .await
            .expect("use_verification_code"),
        None,
        "a recovery code does not verify"
    );
    assert_eq!(
        store
            .use_recovery_code(&verify, "$argon2id$wrong", at(T0 + 1))
            .await
            .expect("use_recovery_code"),
        None,
        "a verification code does not recover"
    );
    assert_eq!(stored(&store, &alice.id).await, alice);

    // Refusals used nothing up: each works once, just before its expiry.
    assert_eq!(
        store
            .use_recovery_code(&recovery, "$argon2id$first", at(T0 + HOUR - 1))
            .await
            .expect("use_recovery_code"),
        Some(alice.id.clone()),
        "a recovery code works until its expiry"
    );
    assert_eq!(
        store
            .use_recovery_code(&recovery, "$argon2id$second", at(T0 + HOUR - 1))
            .await
            .expect("use_recovery_code"),
        None,
        "a recovery code works once"
    );
    assert_eq!(
        stored(&store, &alice.id).await.password_hash,
        "$argon2id$first",
        "a second use changes nothing"
    );
    assert!(
        store
            .use_verification_code(&verify, at(T0 + HOUR - 1))
            .await
            .expect("use_verification_code")
            .is_some(),
        "a verification code works until its expiry"
    );
    assert_eq!(
        store
            .use_verification_code(&verify, at(T0 + HOUR - 1))
            .await
            .expect("use_verification_code"),
        None,
        "a verification code works once"
    );
    let unknown = TokenHash::of(b"never issued");
    assert_eq!(
        store
            .use_recovery_code(&unknown, "$argon2id$x", at(T0))
            .await
            .expect("use_recovery_code"),
        None
    );
    assert_eq!(
        store
            .use_verification_code(&unknown, at(T0))
            .await
            .expect("use_verification_code"),
        None
    );
}

/// A recovery code replaces the password hash, sets `updated_at`, moves `not_before` (never
/// back) and verifies the address it went to while that is still the account's; for an address
/// changed since, or an account without one, it changes the password only.
pub async fn recovery_code_resets_the_password<S: UserStore>(store: S) {
    let alice = with_address(&store, "alice", "Alice@Example.org", false).await;
    let code = with_code(
        &store,
        &alice.id,
        CodePurpose::Recovery,
        "alice@example.org",
        at(T0 + 2 * HOUR),
    )
    .await;
    assert!(
        store
            .set_user_not_before(&alice.id, at(T0 + HOUR))
            .await
            .expect("set_user_not_before")
    );
    assert_eq!(
        store
            .use_recovery_code(&code, "$argon2id$recovered", at(T0 + HOUR))
            .await
            .expect("use_recovery_code"),
        Some(alice.id.clone())
    );
    assert_eq!(
        stored(&store, &alice.id).await,
        User {
            password_hash: "$argon2id$recovered".into(),
            updated_at: at(T0 + HOUR),
            not_before: at(T0 + HOUR + 1),
            email: Some(UserEmail {
                address: address("Alice@Example.org"),
                verified: true,
            }),
            ..alice.clone()
        },
        "the hash, updated_at and not_before change, and the address it went to is verified"
    );

    // Mailed to an address that is not the account's (a change of address voids the codes
    // mailed before it, so this is a code made for another address than the current one).
    let bob = with_address(&store, "bob", "bob@example.org", false).await;
    assert!(
        store
            .set_email(&bob.id, Some(&address("bob.new@example.org")))
            .await
            .expect("set_email")
    );
    let code = with_code(
        &store,
        &bob.id,
        CodePurpose::Recovery,
        "bob@example.org",
        at(T0 + 2 * HOUR),
    )
    .await;
    assert_eq!(
        store
            .use_recovery_code(&code, "$argon2id$bob", at(T0 + HOUR))
            .await
            .expect("use_recovery_code"),
        Some(bob.id.clone())
    );
    assert_eq!(
        stored(&store, &bob.id).await,
        User {
            password_hash: "$argon2id$bob".into(),
            updated_at: at(T0 + HOUR),
            not_before: at(T0 + HOUR),
            email: unverified("bob.new@example.org"),
            ..bob.clone()
        },
        "the password changes, but an address the code did not go to stays unverified"
    );

    // An account without an address (a code made for an address it no longer has: removing
    // the address voids the codes mailed before).
    let carol = with_address(&store, "carol", "carol@example.org", true).await;
    assert!(store.set_email(&carol.id, None).await.expect("set_email"));
    let code = with_code(
        &store,
        &carol.id,
        CodePurpose::Recovery,
        "carol@example.org",
        at(T0 + 2 * HOUR),
    )
    .await;
    assert_eq!(
        store
            .use_recovery_code(&code, "$argon2id$carol", at(T0 + HOUR))
            .await
            .expect("use_recovery_code"),
        Some(carol.id.clone())
    );
    let carol_now = stored(&store, &carol.id).await;
    assert_eq!(
        (carol_now.password_hash.as_str(), carol_now.email),
        ("$argon2id$carol", None),
        "no address appears"
    );
}

/// A verification code verifies the address it was mailed to while the account still has it,
/// changing nothing else; for an address changed since (a code that raced the change) it
/// answers `still_current: false` and changes nothing, and is used up all the same.
pub async fn verification_code_checks_the_address<S: UserStore>(store: S) {
    let alice = with_address(&store, "alice", "Alice@Example.org", false).await;
    let code = with_code(
        &store,
        &alice.id,
        CodePurpose::VerifyEmail,
        "alice@example.org",
        at(T0 + HOUR),
    )
    .await;
    assert_eq!(
        store
            .use_verification_code(&code, at(T0 + 1))
            .await
            .expect("use_verification_code"),
        Some(CodeVerified {
            user: alice.id.clone(),
            still_current: true
        })
    );
    assert_eq!(
        stored(&store, &alice.id).await,
        User {
            email: Some(UserEmail {
                address: address("Alice@Example.org"),
                verified: true,
            }),
            ..alice.clone()
        },
        "the address is verified; updated_at and not_before stay"
    );

    let bob = with_address(&store, "bob", "bob.new@example.org", false).await;
    // Mailed to the old address, stored after the change (the change voided the codes it saw).
    let stale = with_code(
        &store,
        &bob.id,
        CodePurpose::VerifyEmail,
        "bob@example.org",
        at(T0 + HOUR),
    )
    .await;
    assert_eq!(
        store
            .use_verification_code(&stale, at(T0 + 1))
            .await
            .expect("use_verification_code"),
        Some(CodeVerified {
            user: bob.id.clone(),
            still_current: false
        }),
        "a code for an address the account no longer has is not current"
    );
    assert_eq!(stored(&store, &bob.id).await, bob, "and changes nothing");
    assert_eq!(
        store
            .use_verification_code(&stale, at(T0 + 1))
            .await
            .expect("use_verification_code"),
        None,
        "it is used up all the same"
    );
}

/// The sweep deletes codes whose `expires_at` is at or before `now`, at most `limit` at a time,
/// and none that is still valid.
pub async fn code_sweep<S: UserStore>(store: S) {
    let mut codes = Vec::new();
    for (i, expires) in [3, 1, 2, HOUR].into_iter().enumerate() {
        let u = with_address(
            &store,
            &format!("user{i}"),
            &format!("user{i}@example.org"),
            false,
        )
        .await;
        let hash = with_code(
            &store,
            &u.id,
            CodePurpose::Recovery,
            &format!("user{i}@example.org"),
            at(T0 + expires),
        )
        .await;
        codes.push(hash);
    }
    assert_eq!(
        store
            .delete_expired_codes(at(T0), 10)
            .await
            .expect("delete_expired_codes"),
        0,
        "nothing has expired yet"
    );
    assert_eq!(
        store
            .delete_expired_codes(at(T0 + 3), 0)
            .await
            .expect("delete_expired_codes"),
        0,
        "a limit of 0 deletes nothing"
    );
    assert_eq!(
        store
            .delete_expired_codes(at(T0 + 1), 10)
            .await
            .expect("delete_expired_codes"),
        1,
        "a code expiring at `now` goes"
    );
    assert_eq!(
        store
            .delete_expired_codes(at(T0 + 3), 1)
            .await
            .expect("delete_expired_codes"),
        1,
        "at most `limit`"
    );
    assert_eq!(
        store
            .delete_expired_codes(at(T0 + 3), 10)
            .await
            .expect("delete_expired_codes"),
        1,
        "then the rest"
    );
    assert_eq!(
        store
            .delete_expired_codes(at(T0 + 3), 10)
            .await
            .expect("delete_expired_codes"),
        0,
        "nothing more has expired"
    );
    assert!(
        store
            .use_recovery_code(&codes[3], "$argon2id$x", at(T0 + 3))
            .await
            .expect("use_recovery_code")
            .is_some(),
        "a valid code is not swept"
    );
}

/// Of many uses of one code racing each other, exactly one succeeds, and only its change is
/// made.
pub async fn concurrent_code_use<S: UserStore>(store: S) {
    let store = Arc::new(store);
    let alice = with_address(&*store, "alice", "alice@example.org", false).await;
    let key = "alice@example.org";
    let recovery = with_code(
        &*store,
        &alice.id,
        CodePurpose::Recovery,
        key,
        at(T0 + HOUR),
    )
    .await;
    let verify = with_code(
        &*store,
        &alice.id,
        CodePurpose::VerifyEmail,
        key,
        at(T0 + HOUR),
    )
    .await;

    let mut racers = JoinSet::new();
    for racer in 0..RACERS {
        let recoverer = Arc::clone(&store);
        racers.spawn(async move {
            let hash = format!("$argon2id$racer{racer}");
            let used = recoverer
                .use_recovery_code(&recovery, &hash, at(T0 + 1))
                .await
                .expect("use_recovery_code");
            (hash, used)
        });
        let verifier = Arc::clone(&store);
        racers.spawn(async move {
            let used = verifier
                .use_verification_code(&verify, at(T0 + 1))
                .await
                .expect("use_verification_code");
            (String::new(), used.map(|verified| verified.user))
        });
    }
    let outcomes = racers.join_all().await;
    let recovered: Vec<&String> = outcomes
        .iter()
        .filter(|(hash, used)| !hash.is_empty() && used.is_some())
        .map(|(hash, _)| hash)
        .collect();
    assert_eq!(
        recovered.len(),
        1,
        "exactly one of {RACERS} concurrent uses of a recovery code succeeds"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|(hash, used)| hash.is_empty() && used.is_some())
            .count(),
        1,
        "exactly one of {RACERS} concurrent uses of a verification code succeeds"
    );
    let now = stored(&*store, &alice.id).await;
    assert_eq!(
        &now.password_hash, recovered[0],
        "the password is the winner's"
    );
    assert_eq!(
        now.email.map(|e| e.verified),
        Some(true),
        "the address is verified"
    );
}

/// Codes written, used and erased all at once, for two accounts, one of which is deleted
/// meanwhile: every call succeeds (none deadlocks with another), each code works at most once,
/// and what is left is what the rules leave in whatever order the calls ran: the newest code of
/// each purpose of the remaining account, and nothing of the deleted one.
pub async fn concurrent_code_writes<S: UserStore>(store: S) {
    let store = Arc::new(store);
    let alice = with_address(&*store, "alice", "alice@example.org", false).await;
    let bob = with_address(&*store, "bob", "bob@example.org", false).await;
    let mut first = Vec::new();
    for (u, purpose) in [
        (&alice, CodePurpose::Recovery),
        (&alice, CodePurpose::VerifyEmail),
        (&bob, CodePurpose::Recovery),
    ] {
        let key = u.email.as_ref().map(|e| e.address.key().to_owned());
        first.push(
            with_code(
                &*store,
                &u.id,
                purpose,
                &key.unwrap_or_default(),
                at(T0 + HOUR),
            )
            .await,
        );
    }
    let deletion = UserDeletion {
        user: bob.id.clone(),
        username: bob.username.clone(),
        event: NewEvent {
            at: at(T0 + 1),
            kind: EventKind::AccountDeleted,
            user_id: Some(bob.id.clone()),
            detail: serde_json::json!({}),
        },
    };

    let mut racers: JoinSet<Option<bool>> = JoinSet::new();
    for racer in 0..RACERS {
        for (u, purpose) in [
            (&alice, CodePurpose::Recovery),
            (&alice, CodePurpose::VerifyEmail),
            (&bob, CodePurpose::Recovery),
        ] {
            let store = Arc::clone(&store);
            let code = AccountCode {
                hash: SessionId::generate().expect("OS randomness").hash(),
                user_id: u.id.clone(),
                purpose,
                email_key: format!("{}@example.org", u.username),
                created_at: at(T0 + 1),
                expires_at: at(T0 + HOUR),
            };
            racers.spawn(async move {
                store.create_code(&code).await.expect("create_code");
                None
            });
        }
        let store_ = Arc::clone(&store);
        let (recovery, bobs) = (first[0], first[2]);
        racers.spawn(async move {
            let hash = format!("$argon2id$racer{racer}");
            let used = store_
                .use_recovery_code(&recovery, &hash, at(T0 + 2))
                .await
                .expect("use_recovery_code");
            store_
                .use_recovery_code(&bobs, &hash, at(T0 + 2))
                .await
                .expect("use_recovery_code");
            Some(used.is_some())
        });
        let store_ = Arc::clone(&store);
        let verify = first[1];
        racers.spawn(async move {
            store_
                .use_verification_code(&verify, at(T0 + 2))
                .await
                .expect("use_verification_code");
            None
        });
        if racer == RACERS / 2 {
            let store = Arc::clone(&store);
            let deletion = deletion.clone();
            racers.spawn(async move {
                store.delete_user(&deletion).await.expect("delete_user");
                None
            });
        }
    }
    let recovered = racers
        .join_all()
        .await
        .into_iter()
        .filter(|used| *used == Some(true))
        .count();
    assert!(
        recovered <= 1,
        "a recovery code works at most once, not {recovered} times"
    );
    assert_eq!(
        store.user_by_id(&bob.id).await.expect("user_by_id"),
        None,
        "the deletion went through"
    );
    assert_eq!(
        store
            .delete_expired_codes(at(T0 + 2 * HOUR), 1_000)
            .await
            .expect("delete_expired_codes"),
        2,
        "one code of each purpose is left of the remaining account, none of the deleted one"
    );
}
