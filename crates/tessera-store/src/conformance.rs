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
use tessera_core::store::{
    EventStore, HealthCheck, KeyStore, RefreshStore, RevocationStore, SessionStore, UserStore,
};
use tessera_core::{
    AllowedToken, ClientInfo, CsrfToken, EventKind, FamilyId, KeyStatus, LoginModel, NewEvent,
    RefreshFamily, RefreshTokenRecord, RevocationEntry, Revoked, Rotation, SecurityEvent, Session,
    SessionHandle, SessionId, SigningAlgorithm, StoreError, StoredKey, Timestamp, TokenHash, User,
    UserId, Username,
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
    S: UserStore
        + SessionStore
        + KeyStore
        + RefreshStore
        + RevocationStore
        + EventStore
        + HealthCheck,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    ping(&make().await).await;
    session_conformance(&make).await;
    key_conformance(&make).await;
    refresh_conformance(&make).await;
    revocation_conformance(&make).await;
    event_conformance(&make).await;
}

/// The [`UserStore`] and [`SessionStore`] checks, each on a fresh store from `make`.
pub async fn session_conformance<S, F, Fut>(make: F)
where
    S: UserStore + SessionStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    users_round_trip(&make().await).await;
    usernames_are_unique(&make().await).await;
    password_hash_replacement(&make().await).await;
    user_paging(&make().await).await;
    user_paging_cursors(&make().await).await;
    user_disabled(&make().await).await;
    user_roles(&make().await).await;
    sessions_by_secret(&make().await).await;
    session_clashes(&make().await).await;
    touch(&make().await).await;
    data_compare_and_swap(&make().await).await;
    concurrent_compare_and_swap(Arc::new(make().await)).await;
    concurrent_patches_lose_nothing(Arc::new(make().await)).await;
    delete(&make().await).await;
    sessions_of_user(&make().await).await;
    delete_sessions_of_user(&make().await).await;
    sweep(&make().await).await;
    sweep_follows_touch(&make().await).await;
    data_round_trip(&make().await).await;
    client_info_round_trip(&make().await).await;
    sessions_need_a_user(&make().await).await;
}

/// The [`KeyStore`] checks, each on a fresh store from `make`.
pub async fn key_conformance<S, F, Fut>(make: F)
where
    S: KeyStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    keys_round_trip(&make().await).await;
    key_rotation(&make().await).await;
    key_retirement(&make().await).await;
}

/// The [`RefreshStore`] checks, each on a fresh store from `make`.
pub async fn refresh_conformance<S, F, Fut>(make: F)
where
    S: UserStore + RefreshStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    families_round_trip(&make().await).await;
    family_clashes(&make().await).await;
    rotation(&make().await).await;
    concurrent_rotation(Arc::new(make().await)).await;
    rotation_refusals(&make().await).await;
    add_token(&make().await).await;
    revoke_family(&make().await).await;
    families_of_user(&make().await).await;
    family_sweep(&make().await).await;
    family_sweep_follows_refresh(&make().await).await;
}

/// The [`RevocationStore`] checks, each on a fresh store from `make`.
pub async fn revocation_conformance<S, F, Fut>(make: F)
where
    S: RevocationStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    denylist(&make().await).await;
    denylist_twice(&make().await).await;
    allowlist(&make().await).await;
    purge(&make().await).await;
}

/// The [`EventStore`] checks, each on a fresh store from `make`.
pub async fn event_conformance<S, F, Fut>(make: F)
where
    S: EventStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    events_round_trip(&make().await).await;
    event_paging(&make().await).await;
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

fn names(users: &[User]) -> Vec<&str> {
    users.iter().map(|u| u.username.as_str()).collect()
}

fn name(raw: &str) -> Username {
    Username::parse(raw).expect("valid username")
}

/// Five users, created out of order. "émile" sorts last: usernames are ordered by their bytes
/// (code points), as SQLite's default collation and Rust's `str` order them, not by locale.
async fn five_users<S: UserStore>(store: &S) -> Vec<User> {
    let mut users = Vec::new();
    for raw in ["dave", "émile", "alice", "carol", "bob"] {
        users.push(with_user(store, raw).await);
    }
    users.sort_by(|a, b| a.username.as_str().cmp(b.username.as_str()));
    users
}

async fn user_paging<S: UserStore>(store: &S) {
    assert_eq!(
        store.list_users(None, 10).await.expect("list_users"),
        Vec::new(),
        "a fresh store lists no users"
    );
    let users = five_users(store).await;
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

async fn user_paging_cursors<S: UserStore>(store: &S) {
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

async fn user_disabled<S: UserStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let bob = with_user(store, "bob").await;
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
        ..alice.clone()
    };
    assert_eq!(
        store.user_by_id(&alice.id).await.expect("user_by_id"),
        Some(disabled.clone()),
        "only disabled and updated_at change"
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

async fn user_roles<S: UserStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let bob = with_user(store, "bob").await;
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
        ..alice.clone()
    };
    assert_eq!(
        store.user_by_id(&alice.id).await.expect("user_by_id"),
        Some(with_roles.clone()),
        "roles read back as set, in order; only roles and updated_at change"
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

async fn delete_sessions_of_user<S: UserStore + SessionStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let bob = with_user(store, "bob").await;
    let carol = with_user(store, "carol").await;
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
        stored(store, &current).await,
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
    assert_eq!(stored(store, &bobs).await, bobs);

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
        stored(store, &bobs).await,
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

/// The owner of a session must exist (SQLite's foreign key; the memory store checks the same).
async fn sessions_need_a_user<S: UserStore + SessionStore>(store: &S) {
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

// ---------------------------------------------------------------------------------------------
// Keys

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

async fn keys_round_trip<S: KeyStore>(store: &S) {
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
        stored_key(store, "k-oldest").await,
        oldest,
        "a refused key does not replace the first one"
    );
    assert_eq!(store.keys().await.expect("keys").len(), 4);
}

async fn key_rotation<S: KeyStore>(store: &S) {
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
        stored_key(store, "k-active").await,
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
        stored_key(store, "k-active").await,
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
        stored_key(store, "k-other").await.status,
        KeyStatus::Retired,
        "a retired key stays retired"
    );
    assert_eq!(
        stored_key(store, "k-other").await.rotated_at,
        None,
        "a refused rotation sets no rotated_at"
    );
}

async fn key_retirement<S: KeyStore>(store: &S) {
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
        stored_key(store, "k-active").await,
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
        stored_key(store, "k-rotated").await,
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
        stored_key(store, "k-rotated").await,
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

// ---------------------------------------------------------------------------------------------
// Refresh families

fn fresh_hash() -> TokenHash {
    SessionId::generate().expect("OS randomness").hash()
}

/// A family of `user` created at `created_at`, with the given idle and absolute expiries, and
/// its first token.
fn family(
    user: &UserId,
    created_at: i64,
    expires_at: i64,
    absolute_expires_at: i64,
) -> (RefreshFamily, RefreshTokenRecord) {
    let family = RefreshFamily {
        id: FamilyId::generate().expect("OS randomness"),
        user_id: user.clone(),
        model: LoginModel::Token,
        created_at: at(created_at),
        last_used_at: at(created_at),
        expires_at: at(expires_at),
        absolute_expires_at: at(absolute_expires_at),
        revoked_at: None,
        revoked_reason: None,
        client: ClientInfo::default(),
    };
    let first = token_of(&family.id, created_at);
    (family, first)
}

fn token_of(family: &FamilyId, issued_at: i64) -> RefreshTokenRecord {
    RefreshTokenRecord {
        hash: fresh_hash(),
        family_id: family.clone(),
        issued_at: at(issued_at),
        rotated_at: None,
    }
}

async fn with_family<S: RefreshStore>(
    store: &S,
    user: &UserId,
    created_at: i64,
) -> (RefreshFamily, RefreshTokenRecord) {
    let (f, first) = family(user, created_at, created_at + HOUR, created_at + 12 * HOUR);
    store
        .create_family(&f, &first)
        .await
        .expect("create_family");
    (f, first)
}

async fn stored_token<S: RefreshStore>(
    store: &S,
    hash: &TokenHash,
) -> (RefreshTokenRecord, RefreshFamily) {
    store
        .refresh_token(hash)
        .await
        .expect("refresh_token")
        .unwrap_or_else(|| panic!("refresh token {hash:?} should exist"))
}

async fn stored_family<S: RefreshStore>(store: &S, id: &FamilyId) -> RefreshFamily {
    store
        .family(id)
        .await
        .expect("family")
        .unwrap_or_else(|| panic!("family {id} should exist"))
}

async fn families_round_trip<S: UserStore + RefreshStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let (plain, plain_first) = family(&alice.id, T0, T0 + HOUR, T0 + 12 * HOUR);
    let (described, described_first) = family(&alice.id, T0 + 1, T0 + HOUR, T0 + 12 * HOUR);
    let described = RefreshFamily {
        model: LoginModel::Hybrid,
        client: ClientInfo {
            user_agent: Some("curl/8.5 Ünïcode 🦀".into()),
            ip: Some("2001:db8::7".into()),
        },
        ..described
    };
    // A family may be stored already revoked (an import, say): the store keeps what it is given.
    let (revoked, revoked_first) = family(&alice.id, T0 + 2, T0 + HOUR, T0 + 12 * HOUR);
    let revoked = RefreshFamily {
        model: LoginModel::Session,
        revoked_at: Some(at(T0 + 3)),
        revoked_reason: Some("imported revoked".into()),
        ..revoked
    };
    for (f, first) in [
        (&plain, &plain_first),
        (&described, &described_first),
        (&revoked, &revoked_first),
    ] {
        store.create_family(f, first).await.expect("create_family");
        assert_eq!(
            stored_token(store, &first.hash).await,
            (first.clone(), f.clone()),
            "a family's first token reads back with its family, as written"
        );
        assert_eq!(
            stored_family(store, &f.id).await,
            *f,
            "a family reads back as written"
        );
    }
    assert_eq!(
        store
            .refresh_token(&fresh_hash())
            .await
            .expect("refresh_token"),
        None,
        "an unknown token hash finds nothing"
    );
    assert_eq!(
        store
            .family(&FamilyId::generate().expect("OS randomness"))
            .await
            .expect("family"),
        None,
        "an unknown family id finds nothing"
    );
}

async fn family_clashes<S: UserStore + RefreshStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let (original, first) = with_family(store, &alice.id, T0).await;

    let same_id = RefreshFamily {
        id: original.id.clone(),
        ..family(&alice.id, T0 + 5, T0 + HOUR, T0 + 12 * HOUR).0
    };
    let same_id_first = token_of(&original.id, T0 + 5);
    assert!(
        matches!(
            store.create_family(&same_id, &same_id_first).await,
            Err(StoreError::Conflict(_))
        ),
        "a family id clash is a Conflict"
    );
    assert_eq!(
        store
            .refresh_token(&same_id_first.hash)
            .await
            .expect("refresh_token"),
        None,
        "a refused family leaves no token behind"
    );
    assert_eq!(
        stored_family(store, &original.id).await,
        original,
        "a refused family does not replace the first one"
    );

    let (other, _) = family(&alice.id, T0 + 6, T0 + HOUR, T0 + 12 * HOUR);
    let same_hash = RefreshTokenRecord {
        hash: first.hash,
        ..token_of(&other.id, T0 + 6)
    };
    assert!(
        matches!(
            store.create_family(&other, &same_hash).await,
            Err(StoreError::Conflict(_))
        ),
        "a token hash clash is a Conflict"
    );
    assert_eq!(
        store.family(&other.id).await.expect("family"),
        None,
        "a family whose first token is refused is not created either"
    );
    assert_eq!(
        stored_token(store, &first.hash).await,
        (first.clone(), original.clone()),
        "a refused token does not replace the first one"
    );

    let ghost = UserId::generate().expect("OS randomness");
    let (orphan, orphan_first) = family(&ghost, T0, T0 + HOUR, T0 + 12 * HOUR);
    assert!(
        matches!(
            store.create_family(&orphan, &orphan_first).await,
            Err(StoreError::Other(_))
        ),
        "a family of a user that does not exist is refused"
    );
    assert_eq!(store.family(&orphan.id).await.expect("family"), None);
    assert_eq!(
        store
            .refresh_token(&orphan_first.hash)
            .await
            .expect("refresh_token"),
        None
    );

    let (lost, _) = family(&alice.id, T0 + 7, T0 + HOUR, T0 + 12 * HOUR);
    let elsewhere = token_of(&original.id, T0 + 7);
    assert!(
        store.create_family(&lost, &elsewhere).await.is_err(),
        "a first token that names another family is refused"
    );
    assert_eq!(store.family(&lost.id).await.expect("family"), None);
    assert_eq!(
        store
            .refresh_token(&elsewhere.hash)
            .await
            .expect("refresh_token"),
        None
    );
    assert_eq!(
        store
            .families_of_user(&alice.id)
            .await
            .expect("families_of_user"),
        vec![original],
        "refused families are not listed"
    );
}

async fn rotation<S: UserStore + RefreshStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let (f, first) = with_family(store, &alice.id, T0).await;
    let (bystander, bystander_first) = with_family(store, &alice.id, T0 + 1).await;

    let second = token_of(&f.id, T0 + 60_000);
    assert_eq!(
        store
            .rotate_refresh_token(&first.hash, &second, at(T0 + 60_000), at(T0 + 2 * HOUR))
            .await
            .expect("rotate_refresh_token"),
        Rotation::Rotated,
        "a live token rotates"
    );
    let moved = RefreshFamily {
        last_used_at: at(T0 + 60_000),
        expires_at: at(T0 + 2 * HOUR),
        ..f.clone()
    };
    assert_eq!(
        stored_token(store, &first.hash).await,
        (
            RefreshTokenRecord {
                rotated_at: Some(at(T0 + 60_000)),
                ..first.clone()
            },
            moved.clone()
        ),
        "the old token is marked rotated at `now`; the family's activity and expiry move"
    );
    assert_eq!(
        stored_token(store, &second.hash).await,
        (second.clone(), moved.clone()),
        "the new token is stored in the same family"
    );
    assert_eq!(
        stored_token(store, &bystander_first.hash).await,
        (bystander_first.clone(), bystander.clone()),
        "other families are untouched"
    );

    assert_eq!(
        store
            .rotate_refresh_token(
                &first.hash,
                &token_of(&f.id, T0 + 120_000),
                at(T0 + 120_000),
                at(T0 + 3 * HOUR)
            )
            .await
            .expect("rotate_refresh_token"),
        Rotation::AlreadyRotated {
            at: at(T0 + 60_000)
        },
        "a rotated token does not rotate again, and says when it was rotated"
    );
    assert_eq!(
        stored_family(store, &f.id).await,
        moved,
        "a refused rotation does not move the family"
    );
    assert_eq!(
        store
            .rotate_refresh_token(
                &fresh_hash(),
                &token_of(&f.id, T0 + 120_000),
                at(T0 + 120_000),
                at(T0 + 3 * HOUR)
            )
            .await
            .expect("rotate_refresh_token"),
        Rotation::Unknown,
        "a token that does not exist is Unknown"
    );

    // The chain goes on: the new token rotates in turn.
    let third = token_of(&f.id, T0 + 180_000);
    assert_eq!(
        store
            .rotate_refresh_token(&second.hash, &third, at(T0 + 180_000), at(T0 + 4 * HOUR))
            .await
            .expect("rotate_refresh_token"),
        Rotation::Rotated
    );
    assert_eq!(
        stored_token(store, &third.hash).await.1.expires_at,
        at(T0 + 4 * HOUR)
    );

    // Stores hold no policy: a revoked family's live token still rotates (the service refuses it
    // before asking).
    assert!(
        store
            .revoke_family(&f.id, at(T0 + 200_000), "logout")
            .await
            .expect("revoke_family")
    );
    let fourth = token_of(&f.id, T0 + 240_000);
    assert_eq!(
        store
            .rotate_refresh_token(&third.hash, &fourth, at(T0 + 240_000), at(T0 + 5 * HOUR))
            .await
            .expect("rotate_refresh_token"),
        Rotation::Rotated,
        "rotation does not look at the family's revocation"
    );
    let (_, after) = stored_token(store, &fourth.hash).await;
    assert_eq!(
        (after.revoked_at, after.revoked_reason.as_deref()),
        (Some(at(T0 + 200_000)), Some("logout")),
        "rotation does not undo a revocation"
    );
}

async fn concurrent_rotation<S: UserStore + RefreshStore>(store: Arc<S>) {
    let alice = with_user(&*store, "alice").await;
    let (f, first) = with_family(&*store, &alice.id, T0).await;

    let mut racers = JoinSet::new();
    for racer in 0..RACERS {
        let store = Arc::clone(&store);
        let old = first.hash;
        let new = token_of(&f.id, T0 + 1_000 + racer as i64);
        racers.spawn(async move {
            let now = at(T0 + 1_000 + racer as i64);
            let outcome = store
                .rotate_refresh_token(&old, &new, now, at(T0 + HOUR + racer as i64))
                .await
                .expect("rotate_refresh_token");
            (racer, new, outcome)
        });
    }
    let outcomes = racers.join_all().await;
    let winners: Vec<&(usize, RefreshTokenRecord, Rotation)> = outcomes
        .iter()
        .filter(|(_, _, outcome)| *outcome == Rotation::Rotated)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {RACERS} concurrent rotations of a token wins"
    );
    let (winner, winning_token, _) = winners[0];
    let rotated_at = at(T0 + 1_000 + *winner as i64);
    for (racer, new, outcome) in &outcomes {
        if racer == winner {
            continue;
        }
        assert_eq!(
            *outcome,
            Rotation::AlreadyRotated { at: rotated_at },
            "every loser sees the winner's rotation time"
        );
        assert_eq!(
            store.refresh_token(&new.hash).await.expect("refresh_token"),
            None,
            "a losing rotation stores no token"
        );
    }
    let (old, family) = stored_token(&*store, &first.hash).await;
    assert_eq!(old.rotated_at, Some(rotated_at));
    assert_eq!(
        (family.last_used_at, family.expires_at),
        (rotated_at, at(T0 + HOUR + *winner as i64)),
        "the family moved by the winner, and only by it"
    );
    assert_eq!(
        stored_token(&*store, &winning_token.hash).await.0,
        winning_token.clone()
    );
}

async fn rotation_refusals<S: UserStore + RefreshStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let (f, first) = with_family(store, &alice.id, T0).await;
    let (other, other_first) = with_family(store, &alice.id, T0 + 1).await;

    let clash = RefreshTokenRecord {
        hash: other_first.hash,
        ..token_of(&f.id, T0 + 60_000)
    };
    assert!(
        matches!(
            store
                .rotate_refresh_token(&first.hash, &clash, at(T0 + 60_000), at(T0 + 2 * HOUR))
                .await,
            Err(StoreError::Conflict(_))
        ),
        "a new token whose hash exists is a Conflict"
    );
    let elsewhere = token_of(&other.id, T0 + 60_000);
    assert!(
        store
            .rotate_refresh_token(&first.hash, &elsewhere, at(T0 + 60_000), at(T0 + 2 * HOUR))
            .await
            .is_err(),
        "a token cannot rotate into another family"
    );
    assert_eq!(
        store
            .refresh_token(&elsewhere.hash)
            .await
            .expect("refresh_token"),
        None
    );
    assert_eq!(
        stored_token(store, &first.hash).await,
        (first.clone(), f.clone()),
        "a failed rotation leaves the old token live and the family as it was"
    );
    assert_eq!(
        stored_token(store, &other_first.hash).await,
        (other_first.clone(), other.clone()),
        "a failed rotation leaves the clashing token alone"
    );
    assert_eq!(
        store
            .rotate_refresh_token(
                &first.hash,
                &token_of(&f.id, T0 + 60_000),
                at(T0 + 60_000),
                at(T0 + 2 * HOUR)
            )
            .await
            .expect("rotate_refresh_token"),
        Rotation::Rotated,
        "after a failed rotation the token still rotates"
    );
}

async fn add_token<S: UserStore + RefreshStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let (f, first) = with_family(store, &alice.id, T0).await;

    let extra = token_of(&f.id, T0 + 60_000);
    assert!(
        store
            .add_refresh_token(&extra, at(T0 + 60_000), at(T0 + 2 * HOUR))
            .await
            .expect("add_refresh_token"),
        "a token joins a live family"
    );
    let moved = RefreshFamily {
        last_used_at: at(T0 + 60_000),
        expires_at: at(T0 + 2 * HOUR),
        ..f.clone()
    };
    assert_eq!(
        stored_token(store, &extra.hash).await,
        (extra.clone(), moved.clone()),
        "the added token is stored and the family moves"
    );
    assert_eq!(
        stored_token(store, &first.hash).await,
        (first.clone(), moved.clone()),
        "adding rotates nothing"
    );

    let clash = RefreshTokenRecord {
        hash: first.hash,
        ..token_of(&f.id, T0 + 90_000)
    };
    assert!(
        matches!(
            store
                .add_refresh_token(&clash, at(T0 + 90_000), at(T0 + 3 * HOUR))
                .await,
            Err(StoreError::Conflict(_))
        ),
        "a token hash clash is a Conflict"
    );
    assert_eq!(
        stored_family(store, &f.id).await,
        moved,
        "a refused token does not move the family"
    );

    let ghost = token_of(&FamilyId::generate().expect("OS randomness"), T0);
    assert!(
        !store
            .add_refresh_token(&ghost, at(T0 + 60_000), at(T0 + 2 * HOUR))
            .await
            .expect("add_refresh_token"),
        "a token of a missing family is refused"
    );
    assert_eq!(
        store
            .refresh_token(&ghost.hash)
            .await
            .expect("refresh_token"),
        None
    );

    assert!(
        store
            .revoke_family(&f.id, at(T0 + 100_000), "reuse")
            .await
            .expect("revoke_family")
    );
    let late = token_of(&f.id, T0 + 120_000);
    assert!(
        !store
            .add_refresh_token(&late, at(T0 + 120_000), at(T0 + 4 * HOUR))
            .await
            .expect("add_refresh_token"),
        "a token of a revoked family is refused"
    );
    assert_eq!(
        store
            .refresh_token(&late.hash)
            .await
            .expect("refresh_token"),
        None,
        "a refused token is not stored"
    );
    let after = stored_family(store, &f.id).await;
    assert_eq!(
        (after.last_used_at, after.expires_at),
        (moved.last_used_at, moved.expires_at),
        "a refused token does not move the family"
    );
}

async fn revoke_family<S: UserStore + RefreshStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let (f, first) = with_family(store, &alice.id, T0).await;
    let (other, _) = with_family(store, &alice.id, T0 + 1).await;

    assert!(
        store
            .revoke_family(&f.id, at(T0 + HOUR), "reuse detected")
            .await
            .expect("revoke_family"),
        "a live family is revoked"
    );
    let revoked = RefreshFamily {
        revoked_at: Some(at(T0 + HOUR)),
        revoked_reason: Some("reuse detected".into()),
        ..f.clone()
    };
    assert_eq!(
        stored_family(store, &f.id).await,
        revoked,
        "revocation sets revoked_at and the reason, nothing else"
    );
    assert_eq!(
        stored_token(store, &first.hash).await,
        (first.clone(), revoked.clone()),
        "a revoked family's tokens are still found (the service decides)"
    );
    assert!(
        !store
            .revoke_family(&f.id, at(T0 + 2 * HOUR), "logout")
            .await
            .expect("revoke_family"),
        "a revoked family is not revoked again"
    );
    assert_eq!(
        stored_family(store, &f.id).await,
        revoked,
        "the first revocation's time and reason stay"
    );
    assert!(
        !store
            .revoke_family(
                &FamilyId::generate().expect("OS randomness"),
                at(T0),
                "logout"
            )
            .await
            .expect("revoke_family"),
        "a missing family is not revoked"
    );
    assert_eq!(
        stored_family(store, &other.id).await,
        other,
        "other families are untouched"
    );
}

async fn families_of_user<S: UserStore + RefreshStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let bob = with_user(store, "bob").await;
    let carol = with_user(store, "carol").await;
    let (newest, newest_first) = family(&alice.id, T0 + 300, T0 + HOUR, T0 + 12 * HOUR);
    let (oldest, oldest_first) = family(&alice.id, T0 + 100, T0 + HOUR, T0 + 12 * HOUR);
    // Expired families are listed until swept.
    let (middle, middle_first) = family(&alice.id, T0 + 200, T0 + 250, T0 + 12 * HOUR);
    let (bobs, bobs_first) = family(&bob.id, T0 + 150, T0 + HOUR, T0 + 12 * HOUR);
    for (f, first) in [
        (&newest, &newest_first),
        (&oldest, &oldest_first),
        (&bobs, &bobs_first),
        (&middle, &middle_first),
    ] {
        store.create_family(f, first).await.expect("create_family");
    }
    // Revoked families are listed too.
    assert!(
        store
            .revoke_family(&newest.id, at(T0 + 400), "logout")
            .await
            .expect("revoke_family")
    );
    let newest = stored_family(store, &newest.id).await;
    assert_eq!(
        store
            .families_of_user(&alice.id)
            .await
            .expect("families_of_user"),
        vec![oldest, middle, newest],
        "a user's families, and only theirs, oldest first"
    );
    assert_eq!(
        store
            .families_of_user(&bob.id)
            .await
            .expect("families_of_user"),
        vec![bobs]
    );
    assert_eq!(
        store
            .families_of_user(&carol.id)
            .await
            .expect("families_of_user"),
        Vec::new(),
        "a user without families has none"
    );
    assert_eq!(
        store
            .families_of_user(&UserId::generate().expect("OS randomness"))
            .await
            .expect("families_of_user"),
        Vec::new()
    );
}

async fn family_sweep<S: UserStore + RefreshStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let bob = with_user(store, "bob").await;
    let now = T0 + 300;
    // (idle expiry, absolute expiry): expired by idleness, by age, exactly now, or live.
    let shapes = [
        (T0 + 500, T0 + 600),
        (T0 + 100, T0 + 600),
        (T0 + 500, T0 + 200),
        (T0 + 400, T0 + 700),
        (now, T0 + 600),
        (T0 + 600, now),
    ];
    let mut families = Vec::new();
    for (i, (expires_at, absolute)) in shapes.into_iter().enumerate() {
        let owner = if i % 2 == 0 { &alice.id } else { &bob.id };
        let (f, first) = family(owner, T0 + i as i64, expires_at, absolute);
        store
            .create_family(&f, &first)
            .await
            .expect("create_family");
        // A second token per family: the sweep takes every token of a family with it.
        let second = token_of(&f.id, T0 + 10 + i as i64);
        assert!(
            store
                .add_refresh_token(&second, f.last_used_at, f.expires_at)
                .await
                .expect("add_refresh_token")
        );
        families.push((f, [first, second]));
    }
    let is_expired =
        |f: &RefreshFamily| f.expires_at <= at(now) || f.absolute_expires_at <= at(now);

    assert_eq!(
        store
            .delete_expired_families(at(now), 0)
            .await
            .expect("delete_expired_families"),
        0,
        "a limit of 0 deletes nothing"
    );
    assert_eq!(
        store
            .delete_expired_families(at(now), 3)
            .await
            .expect("delete_expired_families"),
        3,
        "the sweep respects its limit"
    );
    assert_eq!(
        store
            .delete_expired_families(at(now), 10)
            .await
            .expect("delete_expired_families"),
        1,
        "families past either expiry, or expiring exactly now, are expired"
    );
    assert_eq!(
        store
            .delete_expired_families(at(now), 10)
            .await
            .expect("delete_expired_families"),
        0,
        "nothing is left to sweep"
    );

    for (f, tokens) in &families {
        let found = store.family(&f.id).await.expect("family");
        if is_expired(f) {
            assert_eq!(found, None, "an expired family is swept");
            for token in tokens {
                assert_eq!(
                    store
                        .refresh_token(&token.hash)
                        .await
                        .expect("refresh_token"),
                    None,
                    "a swept family's tokens go with it"
                );
            }
        } else {
            assert_eq!(found.as_ref(), Some(f), "a live family survives the sweep");
            for token in tokens {
                assert_eq!(
                    stored_token(store, &token.hash).await,
                    (token.clone(), f.clone()),
                    "a live family keeps its tokens"
                );
            }
        }
    }
    for user in [&alice.id, &bob.id] {
        let expected: Vec<RefreshFamily> = families
            .iter()
            .map(|(f, _)| f)
            .filter(|f| &f.user_id == user && !is_expired(f))
            .cloned()
            .collect();
        assert_eq!(
            store
                .families_of_user(user)
                .await
                .expect("families_of_user"),
            expected,
            "swept families leave the per-user listing"
        );
    }
    assert_eq!(
        store
            .delete_expired_families(at(T0 + HOUR), usize::MAX)
            .await
            .expect("delete_expired_families"),
        2,
        "an unbounded limit sweeps everything expired"
    );
}

/// The sweep goes by the latest idle expiry, as moved by rotation and by added tokens.
async fn family_sweep_follows_refresh<S: UserStore + RefreshStore>(store: &S) {
    let alice = with_user(store, "alice").await;
    let (rotated, rotated_first) = family(&alice.id, T0, T0 + 100, T0 + HOUR);
    let (added, _) = family(&alice.id, T0 + 1, T0 + 100, T0 + HOUR);
    let (shortened, shortened_first) = family(&alice.id, T0 + 2, T0 + HOUR, T0 + 2 * HOUR);
    let (capped, capped_first) = family(&alice.id, T0 + 3, T0 + 100, T0 + 150);
    for (f, first) in [
        (&rotated, &rotated_first),
        (&added, &token_of(&added.id, T0 + 1)),
        (&shortened, &shortened_first),
        (&capped, &capped_first),
    ] {
        store.create_family(f, first).await.expect("create_family");
    }
    assert_eq!(
        store
            .rotate_refresh_token(
                &rotated_first.hash,
                &token_of(&rotated.id, T0 + 50),
                at(T0 + 50),
                at(T0 + HOUR)
            )
            .await
            .expect("rotate_refresh_token"),
        Rotation::Rotated
    );
    assert!(
        store
            .add_refresh_token(&token_of(&added.id, T0 + 50), at(T0 + 50), at(T0 + HOUR))
            .await
            .expect("add_refresh_token")
    );
    assert_eq!(
        store
            .rotate_refresh_token(
                &shortened_first.hash,
                &token_of(&shortened.id, T0 + 50),
                at(T0 + 50),
                at(T0 + 100)
            )
            .await
            .expect("rotate_refresh_token"),
        Rotation::Rotated
    );
    // Moving the idle expiry past the absolute one does not keep a family alive.
    assert_eq!(
        store
            .rotate_refresh_token(
                &capped_first.hash,
                &token_of(&capped.id, T0 + 50),
                at(T0 + 50),
                at(T0 + HOUR)
            )
            .await
            .expect("rotate_refresh_token"),
        Rotation::Rotated
    );

    assert_eq!(
        store
            .delete_expired_families(at(T0 + 200), 10)
            .await
            .expect("delete_expired_families"),
        2
    );
    for (f, survives) in [
        (&rotated, true),
        (&added, true),
        (&shortened, false),
        (&capped, false),
    ] {
        assert_eq!(
            store.family(&f.id).await.expect("family").is_some(),
            survives,
            "the sweep follows the family's current expiries"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Revocations

fn revocation(revoked: Revoked, expires_at: i64) -> RevocationEntry {
    RevocationEntry {
        revoked,
        expires_at: at(expires_at),
    }
}

/// The listing order is not part of the contract: compare sorted.
async fn live_revocations<S: RevocationStore>(store: &S, now: i64) -> Vec<RevocationEntry> {
    let mut entries = store.revocations(at(now)).await.expect("revocations");
    entries.sort_by_key(|e| (format!("{:?}", e.revoked), e.expires_at));
    entries
}

fn sorted(mut entries: Vec<RevocationEntry>) -> Vec<RevocationEntry> {
    entries.sort_by_key(|e| (format!("{:?}", e.revoked), e.expires_at));
    entries
}

async fn denylist<S: RevocationStore>(store: &S) {
    assert_eq!(live_revocations(store, T0).await, Vec::new());
    let user = UserId::generate().expect("OS randomness");
    let token = revocation(
        Revoked::Token {
            jti: "jti-1 ünï".into(),
        },
        T0 + HOUR,
    );
    let family = revocation(
        Revoked::Family {
            id: FamilyId::generate().expect("OS randomness"),
        },
        T0 + 2 * HOUR,
    );
    let earlier = revocation(
        Revoked::UserBefore {
            user: user.clone(),
            before: at(T0),
        },
        T0 + HOUR,
    );
    let later = revocation(
        Revoked::UserBefore {
            user: user.clone(),
            before: at(T0 + 60_000),
        },
        T0 + 3 * HOUR,
    );
    // A jti that looks like a family id and a family id that looks like a user id are still
    // different entries.
    let lookalike = revocation(
        Revoked::Token {
            jti: user.as_str().into(),
        },
        T0 + HOUR,
    );
    let expired = revocation(
        Revoked::Token {
            jti: "jti-expired".into(),
        },
        T0 + 100,
    );
    for entry in [&token, &family, &earlier, &later, &lookalike, &expired] {
        store.add_revocation(entry).await.expect("add_revocation");
    }
    assert_eq!(
        live_revocations(store, T0).await,
        sorted(vec![
            token.clone(),
            family.clone(),
            earlier.clone(),
            later.clone(),
            lookalike.clone(),
            expired.clone()
        ]),
        "every entry reads back as written; a user's entries with different `before`s are kept"
    );
    assert_eq!(
        live_revocations(store, T0 + 100).await,
        sorted(vec![
            token.clone(),
            family.clone(),
            earlier.clone(),
            later.clone(),
            lookalike.clone()
        ]),
        "an entry expiring exactly now is not listed"
    );
    assert_eq!(
        live_revocations(store, T0 + 2 * HOUR).await,
        vec![later],
        "only entries expiring after now are listed"
    );
}

async fn denylist_twice<S: RevocationStore>(store: &S) {
    let entry = revocation(
        Revoked::Family {
            id: FamilyId::generate().expect("OS randomness"),
        },
        T0 + HOUR,
    );
    store.add_revocation(&entry).await.expect("add_revocation");
    store
        .add_revocation(&entry)
        .await
        .expect("recording an entry twice is not an error");
    assert_eq!(
        live_revocations(store, T0).await,
        vec![entry.clone()],
        "an entry recorded twice is listed once"
    );
    let longer = RevocationEntry {
        expires_at: at(T0 + 2 * HOUR),
        ..entry.clone()
    };
    store.add_revocation(&longer).await.expect("add_revocation");
    assert_eq!(
        live_revocations(store, T0).await,
        vec![longer.clone()],
        "recorded again with a later expiry, an entry lasts until the later one"
    );
    store.add_revocation(&entry).await.expect("add_revocation");
    assert_eq!(
        live_revocations(store, T0).await,
        vec![longer],
        "recorded again with an earlier expiry, an entry is not cut short"
    );
}

fn allowed(jti: &str, family: &FamilyId, user: &UserId, expires_at: i64) -> AllowedToken {
    AllowedToken {
        jti: jti.into(),
        family_id: family.clone(),
        user_id: user.clone(),
        expires_at: at(expires_at),
    }
}

async fn live_allowed<S: RevocationStore>(store: &S, now: i64) -> Vec<AllowedToken> {
    let mut tokens = store.allowed_tokens(at(now)).await.expect("allowed_tokens");
    tokens.sort_by(|a, b| a.jti.cmp(&b.jti));
    tokens
}

async fn allowlist<S: RevocationStore>(store: &S) {
    let alice = UserId::generate().expect("OS randomness");
    let bob = UserId::generate().expect("OS randomness");
    let f1 = FamilyId::generate().expect("OS randomness");
    let f2 = FamilyId::generate().expect("OS randomness");
    let f3 = FamilyId::generate().expect("OS randomness");
    let a = allowed("a", &f1, &alice, T0 + HOUR);
    let b = allowed("b", &f1, &alice, T0 + 2 * HOUR);
    let c = allowed("c", &f2, &alice, T0 + HOUR);
    let d = allowed("d", &f3, &bob, T0 + HOUR);
    let e = allowed("e", &f3, &bob, T0 + 100);
    for t in [&a, &b, &c, &d, &e] {
        store.allow_token(t).await.expect("allow_token");
    }
    assert_eq!(
        live_allowed(store, T0).await,
        vec![a.clone(), b.clone(), c.clone(), d.clone(), e.clone()],
        "live tokens read back as written"
    );
    assert_eq!(
        live_allowed(store, T0 + 100).await,
        vec![a.clone(), b.clone(), c.clone(), d.clone()],
        "a token expiring exactly now is not listed"
    );

    store
        .allow_token(&a)
        .await
        .expect("recording a token twice is not an error");
    assert_eq!(live_allowed(store, T0).await.len(), 5, "listed once");

    assert!(
        store.disallow_token("e").await.expect("disallow_token"),
        "disallowing a live token returns true"
    );
    assert!(
        !store.disallow_token("e").await.expect("disallow_token"),
        "disallowing it again returns false"
    );
    assert!(
        !store.disallow_token("nope").await.expect("disallow_token"),
        "disallowing an unknown jti returns false"
    );
    assert_eq!(
        store.disallow_family(&f1).await.expect("disallow_family"),
        2,
        "disallowing a family counts its tokens"
    );
    assert_eq!(
        live_allowed(store, T0).await,
        vec![c.clone(), d.clone()],
        "only that family's tokens went"
    );
    assert_eq!(
        store.disallow_family(&f1).await.expect("disallow_family"),
        0,
        "nothing is left of that family"
    );
    assert_eq!(
        store.disallow_user(&bob).await.expect("disallow_user"),
        1,
        "disallowing a user counts their tokens"
    );
    assert_eq!(
        live_allowed(store, T0).await,
        vec![c.clone()],
        "only that user's tokens went"
    );
    assert_eq!(store.disallow_user(&bob).await.expect("disallow_user"), 0);

    // A jti recorded again takes the new record's place, in every index.
    let moved = allowed("c", &f3, &bob, T0 + 3 * HOUR);
    store.allow_token(&moved).await.expect("allow_token");
    assert_eq!(live_allowed(store, T0).await, vec![moved.clone()]);
    assert_eq!(
        store.disallow_user(&alice).await.expect("disallow_user"),
        0,
        "the replaced record no longer counts for its old user"
    );
    assert_eq!(
        store.disallow_family(&f2).await.expect("disallow_family"),
        0,
        "nor for its old family"
    );
    assert_eq!(
        store.disallow_family(&f3).await.expect("disallow_family"),
        1
    );
    assert_eq!(live_allowed(store, T0).await, Vec::new());
}

async fn purge<S: RevocationStore>(store: &S) {
    let user = UserId::generate().expect("OS randomness");
    let family = FamilyId::generate().expect("OS randomness");
    let expired_entries = [
        revocation(Revoked::Token { jti: "old".into() }, T0 + 100),
        revocation(
            Revoked::UserBefore {
                user: user.clone(),
                before: at(T0),
            },
            T0 + 200,
        ),
    ];
    let live_entries = [
        revocation(Revoked::Token { jti: "new".into() }, T0 + 201),
        revocation(
            Revoked::UserBefore {
                user: user.clone(),
                before: at(T0 + 1),
            },
            T0 + HOUR,
        ),
    ];
    for entry in expired_entries.iter().chain(&live_entries) {
        store.add_revocation(entry).await.expect("add_revocation");
    }
    let expired_tokens = [
        allowed("x1", &family, &user, T0 + 150),
        allowed("x2", &family, &user, T0 + 200),
    ];
    let live_token = allowed("y", &family, &user, T0 + 250);
    for t in expired_tokens.iter().chain([&live_token]) {
        store.allow_token(t).await.expect("allow_token");
    }

    assert_eq!(
        store
            .purge_expired(at(T0 + 200))
            .await
            .expect("purge_expired"),
        4,
        "purge counts the expired entries and tokens, those expiring exactly now included"
    );
    // Listing as of long ago shows what is still stored, expired or not.
    assert_eq!(
        live_revocations(store, 0).await,
        sorted(live_entries.to_vec()),
        "purge removes only expired entries"
    );
    assert_eq!(
        live_allowed(store, 0).await,
        vec![live_token],
        "purge removes only expired tokens"
    );
    assert_eq!(
        store
            .purge_expired(at(T0 + 200))
            .await
            .expect("purge_expired"),
        0,
        "nothing is left to purge"
    );
    assert!(
        !store.disallow_token("x1").await.expect("disallow_token"),
        "a purged token is gone"
    );
}

// ---------------------------------------------------------------------------------------------
// Events

const EVENT_KINDS: [EventKind; 9] = [
    EventKind::LoginSucceeded,
    EventKind::LoginFailed,
    EventKind::Logout,
    EventKind::TokenIssued,
    EventKind::TokenRefreshed,
    EventKind::RefreshReuseDetected,
    EventKind::TokenRevoked,
    EventKind::KeyRotated,
    EventKind::KeyRetired,
];

fn event(at_ms: i64, kind: EventKind, user_id: Option<UserId>, detail: Value) -> NewEvent {
    NewEvent {
        at: at(at_ms),
        kind,
        user_id,
        detail,
    }
}

fn recorded(id: i64, event: &NewEvent) -> SecurityEvent {
    SecurityEvent {
        id,
        at: event.at,
        kind: event.kind,
        user_id: event.user_id.clone(),
        detail: event.detail.clone(),
    }
}

async fn events_round_trip<S: EventStore>(store: &S) {
    assert_eq!(
        store.events(None, 100).await.expect("events"),
        Vec::new(),
        "a fresh store has no events"
    );
    let user = UserId::generate().expect("OS randomness");
    let mut written = Vec::new();
    for (i, kind) in EVENT_KINDS.into_iter().enumerate() {
        let who = (i % 2 == 0).then(|| user.clone());
        let detail = json!({"i": i, "kind": kind.as_str()});
        written.push(event(T0 + i as i64, kind, who, detail));
    }
    written.push(event(
        T0 + 100,
        EventKind::RefreshReuseDetected,
        None,
        json!({
            "family": "fam_x",
            "ip": "2001:db8::1",
            "reason": "Grüß Gott, Zoë! 🦀 \"quoted\" \\ \n",
            "nested": {"list": [1, 2.5, null, true, {"deep": []}]},
            "big": u64::MAX,
            "small": i64::MIN,
        }),
    ));
    // Events are recorded as given, in the order given, whatever their timestamps.
    written.push(event(T0 - HOUR, EventKind::Logout, None, json!({})));
    for e in &written {
        store.record_event(e).await.expect("record_event");
    }

    let listed = store.events(None, 100).await.expect("events");
    assert_eq!(listed.len(), written.len(), "every event is listed");
    assert!(
        listed.windows(2).all(|w| w[0].id > w[1].id),
        "newest first, ids strictly increasing with every event: {:?}",
        listed.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    let oldest_first: Vec<SecurityEvent> = listed.into_iter().rev().collect();
    for (stored, written) in oldest_first.iter().zip(&written) {
        assert_eq!(
            *stored,
            recorded(stored.id, written),
            "an event reads back as written: kind, user, time and detail"
        );
    }
}

async fn event_paging<S: EventStore>(store: &S) {
    for i in 0..7 {
        store
            .record_event(&event(
                T0 + i,
                EventKind::TokenIssued,
                None,
                json!({"n": i}),
            ))
            .await
            .expect("record_event");
    }
    let all = store.events(None, usize::MAX).await.expect("events");
    assert_eq!(all.len(), 7, "an unbounded limit lists everything");
    let numbers = |events: &[SecurityEvent]| -> Vec<i64> {
        events
            .iter()
            .map(|e| e.detail["n"].as_i64().expect("n"))
            .collect()
    };
    assert_eq!(numbers(&all), vec![6, 5, 4, 3, 2, 1, 0], "newest first");

    let first = store.events(None, 3).await.expect("events");
    assert_eq!(numbers(&first), vec![6, 5, 4], "the limit keeps the newest");
    let second = store.events(Some(first[2].id), 3).await.expect("events");
    assert_eq!(
        numbers(&second),
        vec![3, 2, 1],
        "`before` continues below the last id seen"
    );
    let third = store.events(Some(second[2].id), 3).await.expect("events");
    assert_eq!(numbers(&third), vec![0], "the last page is short");
    assert_eq!(
        store.events(Some(third[0].id), 3).await.expect("events"),
        Vec::new(),
        "nothing is below the oldest event"
    );
    assert_eq!(
        store.events(None, 0).await.expect("events"),
        Vec::new(),
        "a limit of 0 lists nothing"
    );
    assert_eq!(
        numbers(
            &store
                .events(Some(all[0].id + 1_000), 2)
                .await
                .expect("events")
        ),
        vec![6, 5],
        "a cursor above every id starts at the newest"
    );
    store
        .record_event(&event(T0 + 7, EventKind::Logout, None, json!({"n": 7})))
        .await
        .expect("record_event");
    assert_eq!(
        numbers(&store.events(Some(first[2].id), 3).await.expect("events")),
        vec![3, 2, 1],
        "a page does not shift when newer events arrive"
    );
}
