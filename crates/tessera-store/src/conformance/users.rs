//! The [`UserStore`] checks: accounts, unique usernames, paging, disabling and roles.

use tessera_core::store::UserStore;
use tessera_core::{StoreError, User, UserId, Username};

use super::{HOUR, T0, at, user, with_user};

/// A created user reads back unchanged by id and by username; an unknown one is `None`.
pub async fn users_round_trip<S: UserStore>(store: S) {
    let alice = with_user(&store, "alice").await;
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

/// A taken username or user id is refused, and the refused user leaves nothing behind nor
/// replaces the first.
pub async fn usernames_are_unique<S: UserStore>(store: S) {
    let alice = with_user(&store, "alice").await;
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

/// `set_password_hash` changes only the hash, `updated_at` and `not_before` of that user, and answers `false`
/// for a missing one.
pub async fn password_hash_replacement<S: UserStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let bob = with_user(&store, "bob").await;
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
        not_before: at(T0 + HOUR),
        ..alice.clone()
    };
    assert_eq!(
        store.user_by_id(&alice.id).await.expect("user_by_id"),
        Some(expected.clone()),
        "only the hash, updated_at and not_before change"
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

fn names(users: &[User]) -> Vec<&str> {
    users.iter().map(|u| u.username.as_str()).collect()
}

fn name(raw: &str) -> Username {
    Username::parse(raw).expect("valid username")
}

/// Five users, created out of order. "émile" sorts last: usernames are ordered by their bytes
/// (code points), as Rust's `str`, SQLite's default collation and PostgreSQL's "C" order them, not by locale.
async fn five_users<S: UserStore>(store: &S) -> Vec<User> {
    let mut users = Vec::new();
    for raw in ["dave", "émile", "alice", "carol", "bob"] {
        users.push(with_user(store, raw).await);
    }
    users.sort_by(|a, b| a.username.as_str().cmp(b.username.as_str()));
    users
}

/// `list_users` pages through every user once, in username (byte) order, at most `limit` at a
/// time; a limit of 0 lists nothing.
pub async fn user_paging<S: UserStore>(store: S) {
    assert_eq!(
        store.list_users(None, 10).await.expect("list_users"),
        Vec::new(),
        "a fresh store lists no users"
    );
    let users = five_users(&store).await;
    assert_eq!(
        names(&users),
        vec!["alice", "bob", "carol", "dave", "émile"]
    );

    let mut seen: Vec<User> = Vec::new();
    let mut pages = Vec::new();
    let mut cursor: Option<Username> = None;
    loop {
        let page = store
            .list_users(cursor.as_ref(), 2)
            .await
            .expect("list_users");
        assert!(page.len() <= 2, "a page holds at most `limit` users");
        pages.push(page.len());
        let Some(last) = page.last() else { break };
        cursor = Some(last.username.clone());
        seen.extend(page);
        assert!(pages.len() <= 5, "paging ends: {pages:?}");
    }
    assert_eq!(
        pages,
        vec![2, 2, 1, 0],
        "two at a time: 2, 2, 1, then nothing"
    );
    assert_eq!(
        seen, users,
        "paging returns every user once, as stored, in username order"
    );

    assert_eq!(
        store
            .list_users(None, usize::MAX)
            .await
            .expect("list_users"),
        users,
        "an unbounded limit lists everyone"
    );
    assert_eq!(
        store.list_users(None, 0).await.expect("list_users"),
        Vec::new(),
        "a limit of 0 lists nothing"
    );
    assert_eq!(
        store
            .list_users(Some(&users[1].username), 0)
            .await
            .expect("list_users"),
        Vec::new(),
        "a limit of 0 lists nothing, cursor or not"
    );
}

/// The `after` cursor is exclusive and is a name, not a position: a name that is no user starts at
/// the next one up, and a user created between pages is neither skipped nor repeated.
pub async fn user_paging_cursors<S: UserStore>(store: S) {
    // Borrowed by the `async move` closure below.
    let store = &store;
    let users = five_users(store).await;
    let after = |raw: &'static str, limit: usize| async move {
        names(
            &store
                .list_users(Some(&name(raw)), limit)
                .await
                .expect("list_users"),
        )
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    assert_eq!(
        after("bob", 10).await,
        vec!["carol", "dave", "émile"],
        "`after` is exclusive"
    );
    assert_eq!(
        after("bz", 2).await,
        vec!["carol", "dave"],
        "a cursor that names no user starts at the next name up"
    );
    assert_eq!(
        after("a", 1).await,
        vec!["alice"],
        "a cursor below every name starts at the first"
    );
    assert_eq!(
        after("alice", 1).await,
        vec!["bob"],
        "`after` the first name starts at the second"
    );
    assert_eq!(
        after("zzz", 10).await,
        vec!["émile"],
        "ordered by bytes: \"émile\" comes after \"zzz\""
    );
    assert_eq!(
        after("émile", 10).await,
        Vec::<String>::new(),
        "nothing comes after the last name"
    );
    assert_eq!(
        after("ëzzz", 10).await,
        Vec::<String>::new(),
        "nothing comes after a cursor above every name"
    );
    // A user created mid-way shows up on a later page, and none is skipped or repeated.
    let first = store.list_users(None, 2).await.expect("list_users");
    let newcomer = with_user(store, "cat").await;
    let rest = store
        .list_users(Some(&first[1].username), 10)
        .await
        .expect("list_users");
    assert_eq!(
        names(&rest),
        vec!["carol", "cat", "dave", "émile"],
        "a cursor is a name, not a position"
    );
    assert_eq!(rest[1], newcomer);
    assert_eq!(first, users[..2]);
}

/// Disabling and re-enabling change only `disabled`, `updated_at` and `not_before`, show in listings and in
/// `disabled_user_ids`, and answer `false` for a missing user.
pub async fn user_disabled<S: UserStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let bob = with_user(&store, "bob").await;
    assert!(
        store
            .set_user_disabled(&alice.id, true, at(T0 + HOUR))
            .await
            .expect("set_user_disabled"),
        "set_user_disabled on an existing user returns true"
    );
    let disabled = User {
        disabled: true,
        updated_at: at(T0 + HOUR),
        not_before: at(T0 + HOUR),
        ..alice.clone()
    };
    assert_eq!(
        store.user_by_id(&alice.id).await.expect("user_by_id"),
        Some(disabled.clone()),
        "only disabled, updated_at and not_before change"
    );
    assert_eq!(
        store
            .user_by_username(&alice.username)
            .await
            .expect("user_by_username"),
        Some(disabled.clone())
    );
    assert_eq!(
        store.list_users(None, 10).await.expect("list_users"),
        vec![disabled, bob.clone()],
        "a disabled user is still listed, as disabled"
    );
    assert_eq!(
        store.disabled_user_ids().await.expect("disabled_user_ids"),
        vec![alice.id.clone()],
        "disabled_user_ids lists exactly the disabled accounts"
    );
    assert!(
        store
            .set_user_disabled(&alice.id, true, at(T0 + 2 * HOUR))
            .await
            .expect("set_user_disabled"),
        "setting the value it has returns true: the user exists"
    );
    assert!(
        store
            .set_user_disabled(&alice.id, false, at(T0 + 3 * HOUR))
            .await
            .expect("set_user_disabled")
    );
    assert_eq!(
        store.user_by_id(&alice.id).await.expect("user_by_id"),
        Some(User {
            updated_at: at(T0 + 3 * HOUR),
            not_before: at(T0 + 3 * HOUR),
            ..alice.clone()
        }),
        "re-enabled, and updated_at moved again"
    );
    assert!(
        store
            .disabled_user_ids()
            .await
            .expect("disabled_user_ids")
            .is_empty(),
        "a re-enabled account is no longer listed as disabled"
    );
    assert_eq!(
        store.user_by_id(&bob.id).await.expect("user_by_id"),
        Some(bob),
        "other users are untouched"
    );
    let ghost = UserId::generate().expect("OS randomness");
    assert!(
        !store
            .set_user_disabled(&ghost, true, at(T0))
            .await
            .expect("set_user_disabled"),
        "set_user_disabled on a missing user returns false"
    );
    assert_eq!(store.user_by_id(&ghost).await.expect("user_by_id"), None);
}

/// Roles read back as set, in order and as opaque strings; setting replaces them (an empty list
/// clears them), moves `updated_at`, and answers `false` for a missing user.
pub async fn user_roles<S: UserStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let bob = with_user(&store, "bob").await;
    // Order kept as given; names are opaque strings, quotes and all.
    let roles: Vec<String> = vec!["ops".into(), "admin".into(), "Grüß \"quoted\" 🦀".into()];
    assert!(
        store
            .set_user_roles(&alice.id, &roles, at(T0 + HOUR))
            .await
            .expect("set_user_roles"),
        "set_user_roles on an existing user returns true"
    );
    let with_roles = User {
        roles: roles.clone(),
        updated_at: at(T0 + HOUR),
        not_before: at(T0 + HOUR),
        ..alice.clone()
    };
    assert_eq!(
        store.user_by_id(&alice.id).await.expect("user_by_id"),
        Some(with_roles.clone()),
        "roles read back as set, in order; only roles, updated_at and not_before change"
    );
    assert_eq!(
        store
            .user_by_username(&alice.username)
            .await
            .expect("user_by_username"),
        Some(with_roles.clone())
    );
    assert_eq!(
        store.list_users(None, 1).await.expect("list_users"),
        vec![with_roles],
        "the listing shows the new roles"
    );
    assert!(
        store
            .set_user_roles(&alice.id, &["viewer".into()], at(T0 + 2 * HOUR))
            .await
            .expect("set_user_roles")
    );
    assert_eq!(
        store
            .user_by_id(&alice.id)
            .await
            .expect("user_by_id")
            .map(|u| (u.roles, u.updated_at)),
        Some((vec!["viewer".to_owned()], at(T0 + 2 * HOUR))),
        "roles are replaced, not merged, and updated_at moves again"
    );
    assert!(
        store
            .set_user_roles(&alice.id, &[], at(T0 + 3 * HOUR))
            .await
            .expect("set_user_roles")
    );
    assert_eq!(
        store.user_by_id(&alice.id).await.expect("user_by_id"),
        Some(User {
            updated_at: at(T0 + 3 * HOUR),
            not_before: at(T0 + 3 * HOUR),
            ..alice.clone()
        }),
        "an empty list clears the roles"
    );
    assert_eq!(
        store.user_by_id(&bob.id).await.expect("user_by_id"),
        Some(bob),
        "other users are untouched"
    );
    let ghost = UserId::generate().expect("OS randomness");
    assert!(
        !store
            .set_user_roles(&ghost, &["admin".into()], at(T0))
            .await
            .expect("set_user_roles"),
        "set_user_roles on a missing user returns false"
    );
    assert_eq!(store.user_by_id(&ghost).await.expect("user_by_id"), None);
}

/// A rehash replaces the hash only while it is still the one the login checked (a password
/// changed meanwhile is never reverted) and moves neither `updated_at` nor `not_before`;
/// `not_before` never moves back, whatever sets it.
pub async fn rehash_and_not_before<S: UserStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    assert!(
        store
            .rehash_password(&alice.id, &alice.password_hash, "$argon2id$rehashed")
            .await
            .expect("rehash_password"),
        "a rehash of the hash the login checked goes through"
    );
    assert_eq!(
        store.user_by_id(&alice.id).await.expect("user_by_id"),
        Some(User {
            password_hash: "$argon2id$rehashed".into(),
            ..alice.clone()
        }),
        "a rehash changes the hash only"
    );
    assert!(
        store
            .set_password_hash(&alice.id, "$argon2id$changed", at(T0 + HOUR))
            .await
            .expect("set_password_hash")
    );
    assert!(
        !store
            .rehash_password(&alice.id, "$argon2id$rehashed", "$argon2id$stale")
            .await
            .expect("rehash_password"),
        "a rehash of a hash that changed meanwhile is refused"
    );
    let changed = store.user_by_id(&alice.id).await.expect("user_by_id");
    assert_eq!(
        changed.as_ref().map(|u| u.password_hash.as_str()),
        Some("$argon2id$changed"),
        "the new password stays"
    );
    assert!(
        store
            .set_user_not_before(&alice.id, at(T0 + 2 * HOUR))
            .await
            .expect("set_user_not_before")
    );
    assert!(
        store
            .set_user_not_before(&alice.id, at(T0 + HOUR))
            .await
            .expect("set_user_not_before")
    );
    assert!(
        store
            .set_user_roles(&alice.id, &["x".into()], at(T0 + HOUR))
            .await
            .expect("set_user_roles")
    );
    assert_eq!(
        store
            .user_by_id(&alice.id)
            .await
            .expect("user_by_id")
            .map(|u| u.not_before),
        Some(at(T0 + 2 * HOUR + 2)),
        "not_before never moves back, and every change moves it (a millisecond on when it is \
         already there)"
    );
    // Two changes in one millisecond: the second still moves it.
    for expected in [at(T0 + 3 * HOUR), at(T0 + 3 * HOUR + 1)] {
        assert!(
            store
                .set_user_disabled(&alice.id, false, at(T0 + 3 * HOUR))
                .await
                .expect("set_user_disabled")
        );
        assert_eq!(
            store
                .user_by_id(&alice.id)
                .await
                .expect("user_by_id")
                .map(|u| u.not_before),
            Some(expected),
            "a change at the instant not_before already holds moves it on"
        );
    }
    let ghost = UserId::generate().expect("OS randomness");
    assert!(
        !store
            .set_user_not_before(&ghost, at(T0))
            .await
            .expect("set_user_not_before")
    );
    assert!(
        !store
            .rehash_password(&ghost, "a", "b")
            .await
            .expect("rehash_password")
    );
}
