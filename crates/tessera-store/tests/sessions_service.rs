//! The session service over real stores: the background sweep deletes what expired and nothing
//! else, and a session of a disabled or deleted user authenticates nothing.

mod support;

use std::sync::Arc;
use std::time::Duration;

use tessera_core::{
    Accounts, ClientInfo, Clock, ManualClock, Password, ServicesConfig, SessionConfig, Sessions,
    Stores,
};
use tessera_store::{MemoryStore, SqliteStore};

/// The account and session services over `stores`, on a manual clock, built as the server
/// builds them.
async fn services(stores: &Stores, config: SessionConfig) -> (ManualClock, Accounts, Sessions) {
    let clock = ManualClock::starting_at_millis(1_000_000_000);
    let config = ServicesConfig {
        sessions: config,
        ..ServicesConfig::default()
    };
    let services = support::services(stores.clone(), &clock, config).await;
    // The near caches answer only while the change feed is followed, as on a server.
    services.spawn_follower();
    tokio::time::sleep(Duration::from_millis(50)).await;
    (clock, services.accounts, services.sessions)
}

async fn sweep_deletes_only_expired_sessions(stores: Stores) {
    let config = SessionConfig {
        idle_timeout: Duration::from_secs(600),
        absolute_lifetime: Duration::from_secs(3600),
        touch_interval: Duration::from_secs(10),
        max_data_bytes: 1024,
        ..SessionConfig::default()
    };
    let (clock, accounts, sessions) = services(&stores, config).await;
    let user = support::create_alice(&accounts).await;

    let mut old = Vec::new();
    for _ in 0..25 {
        old.push(sessions.start(&user, ClientInfo::default()).await.unwrap());
    }
    clock.advance(Duration::from_secs(300));
    let (kept_secret, _) = sessions.start(&user, ClientInfo::default()).await.unwrap();
    // One of the old sessions stays active, so its idle expiry moves on.
    assert!(sessions.authenticate(&old[0].0).await.unwrap().is_some());
    clock.advance(Duration::from_secs(301));

    // Small batches: the sweep loops until nothing expired is left.
    assert_eq!(sessions.sweep(10).await.unwrap(), 24);
    assert_eq!(sessions.sweep(10).await.unwrap(), 0);
    assert!(sessions.authenticate(&kept_secret).await.unwrap().is_some());
    assert!(sessions.authenticate(&old[0].0).await.unwrap().is_some());
    for (secret, _) in &old[1..] {
        assert!(sessions.authenticate(secret).await.unwrap().is_none());
        assert!(
            stores
                .sessions
                .session_by_secret(&secret.hash())
                .await
                .unwrap()
                .is_none()
        );
    }
    assert_eq!(sessions.of_user(&user.id).await.unwrap().len(), 2);
}

#[tokio::test]
async fn sweep_on_memory() {
    sweep_deletes_only_expired_sessions(Stores::from_one(MemoryStore::new())).await;
}

#[tokio::test]
async fn sweep_on_sqlite() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    sweep_deletes_only_expired_sessions(Stores::from_one(store)).await;
}

/// With the near cache off, every check reads the store: a session deleted there (not through the
/// service, so nothing is announced) is refused on the very next request.
#[tokio::test]
async fn without_a_near_cache_every_check_reads_the_store() {
    let stores = Stores::from_one(MemoryStore::new());
    let config = SessionConfig {
        near_cache_bytes: 0,
        ..SessionConfig::default()
    };
    let (_clock, accounts, sessions) = services(&stores, config).await;
    let user = support::create_alice(&accounts).await;
    let (secret, session) = sessions.start(&user, ClientInfo::default()).await.unwrap();
    assert!(sessions.authenticate(&secret).await.unwrap().is_some());
    assert!(sessions.authenticate(&secret).await.unwrap().is_some());

    stores
        .sessions
        .delete_session(&session.handle)
        .await
        .unwrap();
    assert!(sessions.authenticate(&secret).await.unwrap().is_none());
}

/// A change whose announcement never arrived (made straight in the store here) is still enforced
/// once the cached copies are older than the bound: the near caches never answer from an entry
/// read longer ago than that.
#[tokio::test]
async fn cached_sessions_and_accounts_are_re_read_after_the_announcement_loss_bound() {
    let stores = Stores::from_one(MemoryStore::new());
    let (clock, accounts, sessions) = services(&stores, SessionConfig::default()).await;
    let user = accounts
        .create(
            "bob",
            &Password::new("correct horse battery staple"),
            vec![],
        )
        .await
        .unwrap();
    let (secret, _) = sessions.start(&user, ClientInfo::default()).await.unwrap();
    let (_, seen) = sessions.authenticate(&secret).await.unwrap().unwrap();
    assert!(seen.roles.is_empty());

    // Changed behind the caches' back, as if the announcement had been lost.
    let at = clock.now();
    stores
        .users
        .set_user_roles(&user.id, &["admin".to_owned()], at)
        .await
        .unwrap();
    let (_, cached) = sessions.authenticate(&secret).await.unwrap().unwrap();
    assert!(
        cached.roles.is_empty(),
        "served from memory within the bound"
    );
    assert!(
        sessions
            .users()
            .get(&user.id)
            .await
            .unwrap()
            .unwrap()
            .roles
            .is_empty(),
        "the accounts cache too"
    );

    clock.advance(tessera_core::feed::ANNOUNCEMENT_LOSS_BOUND);
    let (_, fresh) = sessions.authenticate(&secret).await.unwrap().unwrap();
    assert_eq!(
        fresh.roles,
        vec!["admin".to_owned()],
        "re-read once past the bound"
    );

    // A disabled account, and a deleted session, likewise.
    stores
        .users
        .set_user_disabled(&user.id, true, clock.now())
        .await
        .unwrap();
    let handle = stores
        .sessions
        .session_by_secret(&secret.hash())
        .await
        .unwrap()
        .unwrap()
        .handle;
    stores.sessions.delete_session(&handle).await.unwrap();
    clock.advance(tessera_core::feed::ANNOUNCEMENT_LOSS_BOUND);
    assert!(sessions.authenticate(&secret).await.unwrap().is_none());
    assert!(
        sessions
            .users()
            .get(&user.id)
            .await
            .unwrap()
            .unwrap()
            .disabled,
        "the account is re-read too"
    );
}

/// A session read from SQL carries a fresh copy of its user id; the near cache keeps the cached
/// account's own instead, so a user's cached sessions share one.
#[tokio::test]
async fn cached_sessions_share_their_accounts_user_id() {
    let stores = Stores::from_one(SqliteStore::open_in_memory().await.unwrap());
    let (_clock, accounts, sessions) = services(&stores, SessionConfig::default()).await;
    let user = support::create_alice(&accounts).await;
    let (secret, _) = sessions.start(&user, ClientInfo::default()).await.unwrap();

    let read = stores
        .sessions
        .session_by_secret(&secret.hash())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !read.user_id.shares_with(&user.id),
        "a store read makes its own copy"
    );
    let (first, account) = sessions.find(&secret).await.unwrap().unwrap();
    assert!(first.user_id.shares_with(&account.id));
    let (again, _) = sessions.find(&secret).await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&first, &again), "answered from the near cache");
}
