//! `PostgresStore` against a real PostgreSQL: the conformance suite, the LISTEN/NOTIFY feed, and
//! starting up (migrations racing, a dead server).
//!
//! These tests need a running server: `TESSERA_TEST_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`. They fail, never skip, when it cannot be reached.
//! Every store gets a schema of its own (`tessera_test_<random>`), dropped at the end.

use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tessera_core::{
    AllStores, Change, ChangeFeed, EventKind, EventStore, FamilyId, FeedEvent, HealthCheck,
    KeyStore, NewEvent, RefreshStore, SessionStore, StoreError, Stores, Timestamp, User, UserId,
    UserStore, Username,
};
use tessera_store::PostgresStore;
use tessera_store::postgres::FEED_APPLICATION_NAME;
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinSet;

/// How long a feed test waits for an event that should come.
const PATIENCE: Duration = Duration::from_secs(20);

fn url() -> String {
    std::env::var("TESSERA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A connection of the test's own, for what a client of the store cannot do: dropping schemas,
/// writing rows the store would never write, ending a backend.
async fn admin() -> PgConnection {
    let url = url();
    match PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(e) => panic!(
            "PostgreSQL is not reachable at {url} ({e}). These tests need a running server: \
             start one, or point TESSERA_TEST_POSTGRES_URL at one"
        ),
    }
}

/// A pool on `schema`, as the store's own connections see it.
async fn admin_pool(schema: &str) -> PgPool {
    let set_path = format!("SET search_path TO \"{schema}\"");
    PgPoolOptions::new()
        .max_connections(1)
        .after_connect(move |conn, _| {
            let set_path = set_path.clone();
            Box::pin(async move { conn.execute(sqlx::AssertSqlSafe(set_path)).await.map(drop) })
        })
        .connect(&url())
        .await
        .expect("admin pool")
}

fn random_suffix() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:016x}", hasher.finish())
}

/// The schemas a test made, dropped at its end: by [`Schemas::drop_all`], or, when the test
/// failed before, when this is dropped.
#[derive(Default)]
struct Schemas(Mutex<Vec<String>>);

impl Schemas {
    fn fresh(&self) -> String {
        self.named(format!("tessera_test_{}", random_suffix()))
    }

    fn named(&self, name: String) -> String {
        self.0.lock().unwrap().push(name.clone());
        name
    }

    async fn store(&self) -> PostgresStore {
        let schema = self.fresh();
        connect(&schema).await
    }

    async fn drop_all(&self) {
        let names = std::mem::take(&mut *self.0.lock().unwrap());
        drop_schemas(names).await;
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.0.lock().unwrap());
        if names.is_empty() {
            return;
        }
        // Best effort, from a thread of its own: this may run inside the test's runtime, which
        // cannot be blocked on.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(drop_schemas(names));
        })
        .join();
    }
}

async fn drop_schemas(names: Vec<String>) {
    if names.is_empty() {
        return;
    }
    let Ok(mut conn) = PgConnection::connect(&url()).await else {
        return;
    };
    for name in names {
        let statement = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
        if let Err(e) = conn.execute(sqlx::AssertSqlSafe(statement)).await {
            eprintln!("cannot drop schema {name}: {e}");
        }
    }
}

async fn connect(schema: &str) -> PostgresStore {
    // Reachable at all? A clear message rather than a connect error from deep inside.
    drop(admin().await);
    PostgresStore::connect(&url(), Some(schema))
        .await
        .unwrap_or_else(|e| panic!("PostgresStore::connect on schema {schema}: {e}"))
}

fn alice() -> User {
    User {
        id: UserId::generate().unwrap(),
        username: Username::parse("alice").unwrap(),
        password_hash: "$argon2id$x".into(),
        roles: vec!["admin".into()],
        disabled: false,
        created_at: Timestamp::from_unix_millis(1_700_000_000_000),
        updated_at: Timestamp::from_unix_millis(1_700_000_000_000),
        not_before: Timestamp::from_unix_millis(1_700_000_000_000),
        email: None,
    }
}

async fn next_event(events: &mut Receiver<FeedEvent>) -> FeedEvent {
    tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("a feed event within the time allowed")
        .expect("the feed is still open")
}

/// Each check on a schema of its own, dropped when it ends.
mod conformance {
    use super::Schemas;

    tessera_store::conformance_tests!(|check| {
        let schemas = Schemas::default();
        check(schemas.store().await).await;
        schemas.drop_all().await;
    });
}

/// One PostgreSQL backs a whole server, feed included.
#[tokio::test]
async fn the_store_holds_everything() {
    fn holds_everything<S: AllStores + ChangeFeed>(store: S) -> Stores {
        Stores::from_one(store)
    }
    let schemas = Schemas::default();
    let stores = holds_everything(schemas.store().await);
    stores.health.ping().await.unwrap();
    assert!(stores.keys.keys().await.unwrap().is_empty());
    schemas.drop_all().await;
}

#[tokio::test]
async fn reconnecting_keeps_the_data() {
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let alice = alice();
    let store = connect(&schema).await;
    store.create_user(&alice).await.unwrap();
    store.close().await;
    // Twice: applying migrations to an up-to-date schema changes nothing.
    for _ in 0..2 {
        let store = connect(&schema).await;
        assert_eq!(
            store.user_by_id(&alice.id).await.unwrap(),
            Some(alice.clone())
        );
        store.close().await;
    }
    schemas.drop_all().await;
}

/// Several nodes starting at once against a new schema: the advisory lock serializes them, and
/// none fails on the schema or the tables another one is creating.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_migrating_one_schema_at_once_all_succeed() {
    drop(admin().await);
    let schemas = Schemas::default();
    for _ in 0..3 {
        let schema = schemas.fresh();
        let mut nodes = JoinSet::new();
        for _ in 0..6 {
            let schema = schema.clone();
            nodes.spawn(async move { PostgresStore::connect(&url(), Some(&schema)).await });
        }
        let stores: Vec<PostgresStore> = nodes
            .join_all()
            .await
            .into_iter()
            .map(|started| started.expect("every node starts"))
            .collect();
        let alice = alice();
        stores[0].create_user(&alice).await.unwrap();
        for store in &stores {
            assert_eq!(
                store.user_by_id(&alice.id).await.unwrap(),
                Some(alice.clone()),
                "every node sees the same tables"
            );
        }
        for store in stores {
            store.close().await;
        }
    }
    schemas.drop_all().await;
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_fails_fast() {
    let started = Instant::now();
    let result = PostgresStore::connect("postgres://postgres@127.0.0.1:1/test", None).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_url_that_does_not_parse_is_an_error() {
    assert!(matches!(
        PostgresStore::connect("not a url", None).await,
        Err(StoreError::Other(_))
    ));
}

#[tokio::test]
async fn a_schema_name_postgres_would_truncate_is_refused() {
    let long = "s".repeat(64);
    for schema in ["", long.as_str()] {
        assert!(
            matches!(
                PostgresStore::connect(&url(), Some(schema)).await,
                Err(StoreError::Other(_))
            ),
            "{schema:?}"
        );
    }
}

#[tokio::test]
async fn a_closed_store_is_unavailable() {
    let schemas = Schemas::default();
    let store = schemas.store().await;
    store.close().await;
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.user_by_id(&alice().id).await,
        Err(StoreError::Unavailable(_))
    ));
    schemas.drop_all().await;
}

#[tokio::test]
async fn bad_stored_data_is_an_error_not_a_panic() {
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let store = connect(&schema).await;
    let raw = admin_pool(&schema).await;
    let alice = alice();
    store.create_user(&alice).await.unwrap();

    sqlx::query("UPDATE users SET roles = '[1, 2]' WHERE id = $1")
        .bind(alice.id.as_str())
        .execute(&raw)
        .await
        .unwrap();
    assert!(matches!(
        store.user_by_id(&alice.id).await,
        Err(StoreError::Other(_))
    ));
    assert!(matches!(
        store.list_users(None, 10).await,
        Err(StoreError::Other(_))
    ));

    raw.execute(
        "INSERT INTO signing_keys (kid, algorithm, status, sealed_private, created_at) \
         VALUES ('k1', 'none', 'active', '\\x00', 0)",
    )
    .await
    .unwrap();
    assert!(matches!(store.keys().await, Err(StoreError::Other(_))));

    sqlx::query(
        "INSERT INTO refresh_families (id, user_id, model, created_at, last_used_at, \
         expires_at, absolute_expires_at) VALUES ('fam_x', $1, 'carrier-pigeon', 0, 0, 0, 0)",
    )
    .bind(alice.id.as_str())
    .execute(&raw)
    .await
    .unwrap();
    assert!(matches!(
        store.family(&FamilyId::from_stored("fam_x".into())).await,
        Err(StoreError::Other(_))
    ));
    assert!(matches!(
        store.families_of_user(&alice.id).await,
        Err(StoreError::Other(_))
    ));

    raw.execute("INSERT INTO security_events (at, kind, detail) VALUES (0, 'exploded', '{}')")
        .await
        .unwrap();
    assert!(matches!(
        store.events(None, 10).await,
        Err(StoreError::Other(_))
    ));
    raw.close().await;
    schemas.drop_all().await;
}

/// JSONB cannot hold `\u0000`; an audit detail quoting an attacker's input may.
#[tokio::test]
async fn an_event_detail_holding_a_nul_is_recorded_as_written() {
    let schemas = Schemas::default();
    let store = schemas.store().await;
    let detail = json!({"username": "mallory\u{0}admin", "n": u64::MAX});
    store
        .record_event(&NewEvent {
            at: Timestamp::from_unix_millis(0),
            kind: EventKind::LoginFailed,
            user_id: None,
            detail: detail.clone(),
        })
        .await
        .unwrap();
    assert_eq!(store.events(None, 1).await.unwrap()[0].detail, detail);
    schemas.drop_all().await;
}

#[tokio::test]
async fn event_ids_are_never_reused() {
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let store = connect(&schema).await;
    let event = NewEvent {
        at: Timestamp::from_unix_millis(0),
        kind: EventKind::Logout,
        user_id: None,
        detail: json!({}),
    };
    store.record_event(&event).await.unwrap();
    store.record_event(&event).await.unwrap();
    let newest = store.events(None, 1).await.unwrap()[0].id;
    let raw = admin_pool(&schema).await;
    raw.execute("DELETE FROM security_events").await.unwrap();
    raw.close().await;
    store.record_event(&event).await.unwrap();
    assert!(
        store.events(None, 1).await.unwrap()[0].id > newest,
        "a paging cursor must never see an id twice"
    );
    schemas.drop_all().await;
}

/// Deleting a user takes their sessions and refresh families with them (ON DELETE CASCADE).
#[tokio::test]
async fn a_deleted_user_takes_their_sessions_and_families() {
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let store = connect(&schema).await;
    let alice = alice();
    store.create_user(&alice).await.unwrap();
    let now = Timestamp::from_unix_millis(1_700_000_000_000);
    let family = tessera_core::RefreshFamily {
        id: FamilyId::generate().unwrap(),
        user_id: alice.id.clone(),
        model: tessera_core::LoginModel::Token,
        created_at: now,
        last_used_at: now,
        expires_at: now,
        absolute_expires_at: now,
        revoked_at: None,
        revoked_reason: None,
        client: Default::default(),
        generation: 0,
        dpop_jkt: None,
        auth: tessera_core::AuthContext::password(now),
    };
    let first = tessera_core::RefreshTokenRecord {
        hash: tessera_core::TokenHash::of(b"first"),
        family_id: family.id.clone(),
        issued_at: now,
        rotated_at: None,
        generation: 0,
    };
    store.create_family(&family, &first).await.unwrap();
    let raw = admin_pool(&schema).await;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(alice.id.as_str())
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;
    assert_eq!(store.family(&family.id).await.unwrap(), None);
    assert_eq!(store.refresh_token(&first.hash).await.unwrap(), None);
    assert!(store.sessions_of_user(&alice.id).await.unwrap().is_empty());
    schemas.drop_all().await;
}

// ---------------------------------------------------------------------------------------------
// The change feed

fn user_changed() -> Change {
    Change::UserChanged {
        user: UserId::generate().unwrap(),
    }
}

/// Two stores on one schema are two nodes: a change published on either reaches both, after the
/// gap every subscription starts with. A deployment on another schema hears none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_reaches_every_node_and_no_other_deployment() {
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let one = connect(&schema).await;
    let two = connect(&schema).await;
    let elsewhere = schemas.store().await;
    assert_eq!(one.feed_channel(), two.feed_channel());
    assert_ne!(one.feed_channel(), elsewhere.feed_channel());

    let mut heard_by_one = one.subscribe().await.unwrap();
    let mut heard_by_two = two.subscribe().await.unwrap();
    let mut heard_elsewhere = elsewhere.subscribe().await.unwrap();
    for events in [&mut heard_by_one, &mut heard_by_two, &mut heard_elsewhere] {
        assert_eq!(
            next_event(events).await,
            FeedEvent::Gap,
            "a gap comes first"
        );
    }

    let first = user_changed();
    let second = Change::TokenRevoked {
        jti: "jti-1 ünï".into(),
        expires_at: Timestamp::from_unix_millis(1_700_000_000_000),
    };
    one.publish(&first).await.unwrap();
    two.publish(&second).await.unwrap();
    two.publish(&Change::KeysChanged).await.unwrap();
    for events in [&mut heard_by_one, &mut heard_by_two] {
        for expected in [&first, &second, &Change::KeysChanged] {
            assert_eq!(
                next_event(events).await,
                FeedEvent::Change(expected.clone()),
                "every node hears every change, in order"
            );
        }
    }

    // Published after the others: were the other deployment's changes heard here, they would
    // come first.
    let own = user_changed();
    elsewhere.publish(&own).await.unwrap();
    assert_eq!(
        next_event(&mut heard_elsewhere).await,
        FeedEvent::Change(own)
    );
    schemas.drop_all().await;
}

#[tokio::test]
async fn notifications_that_do_not_decode_are_gaps() {
    let schemas = Schemas::default();
    let store = schemas.store().await;
    let mut events = store.subscribe().await.unwrap();
    assert_eq!(next_event(&mut events).await, FeedEvent::Gap);

    let mut raw = admin().await;
    for garbage in ["not json", "{\"kind\":\"exploded\"}", ""] {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(store.feed_channel())
            .bind(garbage)
            .execute(&mut raw)
            .await
            .unwrap();
    }
    // Each may have been a change this node cannot read (a newer node's): re-read everything.
    for _ in 0..3 {
        assert_eq!(next_event(&mut events).await, FeedEvent::Gap);
    }
    let change = user_changed();
    store.publish(&change).await.unwrap();
    assert_eq!(
        next_event(&mut events).await,
        FeedEvent::Change(change),
        "the feed goes on"
    );
    schemas.drop_all().await;
}

/// Ends the feed's listening backends of `channel`; returns how many.
async fn terminate_listeners(channel: &str) -> i64 {
    let mut raw = admin().await;
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND query LIKE 'LISTEN%' \
         AND position($2 IN query) > 0) AS ended",
    )
    .bind(FEED_APPLICATION_NAME)
    .bind(channel)
    .fetch_one(&mut raw)
    .await
    .unwrap()
}

async fn listeners(channel: &str) -> i64 {
    let mut raw = admin().await;
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
         AND query LIKE 'LISTEN%' AND position($2 IN query) > 0",
    )
    .bind(FEED_APPLICATION_NAME)
    .bind(channel)
    .fetch_one(&mut raw)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listener_connection_is_reported_then_a_gap_and_the_feed_goes_on() {
    let schemas = Schemas::default();
    let store = schemas.store().await;
    let mut events = store.subscribe().await.unwrap();
    assert_eq!(next_event(&mut events).await, FeedEvent::Gap);

    for round in 0..2 {
        assert_eq!(
            terminate_listeners(store.feed_channel()).await,
            1,
            "round {round}: one listener to end"
        );
        assert_eq!(
            next_event(&mut events).await,
            FeedEvent::Lost,
            "round {round}: the feed says at once that it is not hearing changes"
        );
        assert_eq!(
            next_event(&mut events).await,
            FeedEvent::Gap,
            "round {round}: the feed says it may have missed changes"
        );
        // The gap comes once the feed listens again: nothing published from now on is lost.
        let change = user_changed();
        store.publish(&change).await.unwrap();
        assert_eq!(next_event(&mut events).await, FeedEvent::Change(change));
    }
    schemas.drop_all().await;
}

#[tokio::test]
async fn dropping_the_receiver_stops_listening() {
    let schemas = Schemas::default();
    let store = schemas.store().await;
    let mut events = store.subscribe().await.unwrap();
    assert_eq!(next_event(&mut events).await, FeedEvent::Gap);
    assert_eq!(listeners(store.feed_channel()).await, 1);
    drop(events);
    let deadline = Instant::now() + PATIENCE;
    while listeners(store.feed_channel()).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the listening connection outlived its receiver"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    schemas.drop_all().await;
}

/// A schema name as long as PostgreSQL allows makes a channel name too long: the feed hashes it.
#[tokio::test]
async fn a_long_schema_name_still_has_a_feed() {
    let schemas = Schemas::default();
    let prefix = format!("tessera_test_{}_", random_suffix());
    let schema = schemas.named(format!("{prefix}{}", "x".repeat(63 - prefix.len())));
    assert_eq!(schema.len(), 63);
    let store = connect(&schema).await;
    assert!(store.feed_channel().len() <= 63, "{}", store.feed_channel());
    let mut events = store.subscribe().await.unwrap();
    assert_eq!(next_event(&mut events).await, FeedEvent::Gap);
    let change = user_changed();
    store.publish(&change).await.unwrap();
    assert_eq!(next_event(&mut events).await, FeedEvent::Change(change));
    schemas.drop_all().await;
}

/// A listener whose connection goes silent without closing (a partition, a half-open socket)
/// never errors; the feed must notice by its heartbeat. The listener's server process is frozen
/// (SIGSTOP) to make exactly that happen, then thawed and ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_listener_is_noticed_by_its_heartbeat() {
    let schemas = Schemas::default();
    let store = schemas.store().await;
    let mut events = store.subscribe().await.unwrap();
    assert_eq!(next_event(&mut events).await, FeedEvent::Gap);
    let mut raw = admin().await;
    let pid: i32 = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
         AND query LIKE 'LISTEN%' AND position($2 IN query) > 0",
    )
    .bind(FEED_APPLICATION_NAME)
    .bind(store.feed_channel())
    .fetch_one(&mut raw)
    .await
    .unwrap();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "cannot send {sig} to the listener's server process {pid}"
        );
    };
    signal("-STOP");
    let started = Instant::now();
    let event = tokio::time::timeout(Duration::from_secs(15), events.recv()).await;
    signal("-CONT");
    assert_eq!(
        event.expect("the feed noticed within 15 s").expect("open"),
        FeedEvent::Lost,
        "a silent listener must be reported lost"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(next_event(&mut events).await, FeedEvent::Gap);
    let change = user_changed();
    store.publish(&change).await.unwrap();
    // The thawed old listener may still deliver a stale notification first; look for the change.
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(
            Instant::now() < deadline,
            "the change never arrived after the gap"
        );
        if next_event(&mut events).await == FeedEvent::Change(change.clone()) {
            break;
        }
    }
    drop(events);
    schemas.drop_all().await;
}
