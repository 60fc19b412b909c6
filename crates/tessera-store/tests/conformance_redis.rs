//! The Redis store passes the conformance suite, keeps a TTL on every key, carries the change feed
//! between nodes (and across a Redis restart), fails fast when Redis is down, and throttles.
//!
//! These tests need a running Redis: `TESSERA_TEST_REDIS_URL`, by default
//! `redis://127.0.0.1:6379`. They fail, never skip, when it cannot be reached. Every store uses
//! its own key prefix, and each test deletes its keys when it ends. The reconnection test starts
//! its own `redis-server` on a free port.
//!
//! The suite runs a second time on a Redis Cluster (`on_a_cluster`): three primaries with a
//! replica each, started by this test binary on free ports, shared by its tests, and killed when
//! the binary ends. A script that touched keys of two slots would fail there (`CROSSSLOT`).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::{Value, json};
use tessera_core::feed::{Change, ChangeFeed, FeedEvent};
use tessera_core::store::{HealthCheck, RevocationStore, SessionStore, UserStore};
use tessera_core::{
    AllowedToken, ClientInfo, CsrfToken, FamilyId, RevocationEntry, Revoked, Session,
    SessionHandle, SessionId, StoreError, Timestamp, TokenHash, User, UserId, Username,
};
use tessera_store::{MemoryStore, RedisStore};
use tokio::sync::mpsc::Receiver;

fn redis_url() -> String {
    std::env::var("TESSERA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A prefix no other test (or test run) uses: tests of one run that start at the same moment
/// differ by their sequence number.
fn unique_prefix(test: &str) -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("tessera-test:{}:{nanos}:{seq}:{test}:", std::process::id())
}

async fn connect(prefix: &str) -> RedisStore {
    let url = redis_url();
    RedisStore::connect(&url, prefix).await.unwrap_or_else(|e| {
        panic!(
            "cannot reach Redis at {url} ({e}): these tests need a running Redis; start one, \
             or point TESSERA_TEST_REDIS_URL at one"
        )
    })
}

/// Escapes a literal for a `SCAN MATCH` glob.
fn glob_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Every key under `prefix`.
fn keys_under(prefix: &str) -> Vec<String> {
    try_keys_under(prefix).expect("SCAN the test's keys")
}

fn try_keys_under(prefix: &str) -> redis::RedisResult<Vec<String>> {
    let client = redis::Client::open(redis_url())?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    let pattern = format!("{}*", glob_literal(prefix));
    let mut cursor = String::from("0");
    let mut keys = Vec::new();
    loop {
        let (next, page): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(&cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)?;
        keys.extend(page);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Deletes every key under its prefix when dropped, also when the test failed (and then never
/// panics itself).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(keys) = try_keys_under(&self.0) else {
            return;
        };
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        for key in keys {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&key).query(&mut conn);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Users in memory, sessions in Redis: what `session_conformance` needs on one type.

struct UsersAndSessions {
    users: MemoryStore,
    sessions: RedisStore,
}

#[async_trait]
impl UserStore for UsersAndSessions {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        self.users.create_user(user).await
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.users.user_by_id(id).await
    }

    async fn user_by_username(&self, username: &Username) -> Result<Option<User>, StoreError> {
        self.users.user_by_username(username).await
    }

    async fn set_password_hash(
        &self,
        id: &UserId,
        password_hash: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.users.set_password_hash(id, password_hash, at).await
    }

    async fn list_users(
        &self,
        after: Option<&Username>,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        self.users.list_users(after, limit).await
    }

    async fn disabled_user_ids(&self) -> Result<Vec<UserId>, StoreError> {
        self.users.disabled_user_ids().await
    }

    async fn set_user_disabled(
        &self,
        id: &UserId,
        disabled: bool,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.users.set_user_disabled(id, disabled, at).await
    }

    async fn set_user_roles(
        &self,
        id: &UserId,
        roles: &[String],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.users.set_user_roles(id, roles, at).await
    }

    async fn rehash_password(
        &self,
        id: &UserId,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError> {
        self.users.rehash_password(id, old_hash, new_hash).await
    }

    async fn set_user_not_before(&self, id: &UserId, at: Timestamp) -> Result<bool, StoreError> {
        self.users.set_user_not_before(id, at).await
    }

    async fn delete_user(&self, deletion: &tessera_core::UserDeletion) -> Result<bool, StoreError> {
        self.users.delete_user(deletion).await
    }

    async fn user_by_email(&self, key: &str) -> Result<Option<User>, StoreError> {
        self.users.user_by_email(key).await
    }

    async fn set_email(
        &self,
        id: &UserId,
        email: Option<&tessera_core::EmailAddress>,
    ) -> Result<bool, StoreError> {
        self.users.set_email(id, email).await
    }

    async fn create_code(&self, code: &tessera_core::AccountCode) -> Result<bool, StoreError> {
        self.users.create_code(code).await
    }

    async fn use_recovery_code(
        &self,
        hash: &tessera_core::TokenHash,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<Option<UserId>, StoreError> {
        self.users.use_recovery_code(hash, password_hash, now).await
    }

    async fn use_verification_code(
        &self,
        hash: &tessera_core::TokenHash,
        now: Timestamp,
    ) -> Result<Option<tessera_core::CodeVerified>, StoreError> {
        self.users.use_verification_code(hash, now).await
    }

    async fn delete_expired_codes(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.users.delete_expired_codes(now, limit).await
    }
}

#[async_trait]
impl SessionStore for UsersAndSessions {
    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        // What a foreign key does in SQL: Redis does not know the users.
        if self.users.user_by_id(&session.user_id).await?.is_none() {
            return Err(StoreError::Other(format!("no user {}", session.user_id)));
        }
        self.sessions.create_session(session).await
    }

    async fn session_by_secret(
        &self,
        secret_hash: &TokenHash,
    ) -> Result<Option<Session>, StoreError> {
        self.sessions.session_by_secret(secret_hash).await
    }

    async fn set_session_auth(
        &self,
        handle: &SessionHandle,
        auth: &tessera_core::AuthContext,
    ) -> Result<bool, StoreError> {
        self.sessions.set_session_auth(handle, auth).await
    }

    async fn touch_session(
        &self,
        handle: &SessionHandle,
        last_seen_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.sessions
            .touch_session(handle, last_seen_at, expires_at)
            .await
    }

    async fn replace_session_data(
        &self,
        handle: &SessionHandle,
        expected_version: i64,
        data: &Value,
    ) -> Result<bool, StoreError> {
        self.sessions
            .replace_session_data(handle, expected_version, data)
            .await
    }

    async fn delete_session(&self, handle: &SessionHandle) -> Result<bool, StoreError> {
        self.sessions.delete_session(handle).await
    }

    async fn session_owner(&self, handle: &SessionHandle) -> Result<Option<UserId>, StoreError> {
        self.sessions.session_owner(handle).await
    }

    async fn sessions_of_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        self.sessions.sessions_of_user(user).await
    }

    async fn delete_sessions_of_user(
        &self,
        user: &UserId,
        keep: Option<&SessionHandle>,
    ) -> Result<usize, StoreError> {
        self.sessions.delete_sessions_of_user(user, keep).await
    }

    async fn delete_expired_sessions(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.sessions.delete_expired_sessions(now, limit).await
    }
}

/// Challenges live in Redis beside the sessions; the accounts they name stay in the database.
#[async_trait]
impl tessera_core::ChallengeStore for UsersAndSessions {
    async fn create_challenge(
        &self,
        challenge: &tessera_core::LoginChallenge,
    ) -> Result<(), StoreError> {
        self.sessions.create_challenge(challenge).await
    }

    async fn attempt_challenge(
        &self,
        hash: &TokenHash,
        now: Timestamp,
        max_attempts: u32,
    ) -> Result<Option<tessera_core::LoginChallenge>, StoreError> {
        self.sessions
            .attempt_challenge(hash, now, max_attempts)
            .await
    }

    async fn consume_challenge(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        self.sessions.consume_challenge(hash).await
    }

    async fn delete_expired_challenges(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.sessions.delete_expired_challenges(now, limit).await
    }
}

// ---------------------------------------------------------------------------------------------
// The suite

/// Each check under a key prefix of its own, deleted when it ends.
mod sessions {
    use super::{Cleanup, MemoryStore, UsersAndSessions, connect, unique_prefix};

    tessera_store::conformance_tests!(
        [users, sessions, challenges] | check | {
            let prefix = unique_prefix("sessions");
            let _cleanup = Cleanup(prefix.clone());
            check(UsersAndSessions {
                users: MemoryStore::new(),
                sessions: connect(&prefix).await,
            })
            .await;
        }
    );
}

mod revocations {
    use super::{Cleanup, connect, unique_prefix};

    tessera_store::conformance_tests!(
        [revocations] | check | {
            let prefix = unique_prefix("revocations");
            let _cleanup = Cleanup(prefix.clone());
            check(connect(&prefix).await).await;
        }
    );
}

mod proofs {
    use super::{Cleanup, connect, unique_prefix};

    tessera_store::conformance_tests!(
        [proofs] | check | {
            let prefix = unique_prefix("proofs");
            let _cleanup = Cleanup(prefix.clone());
            check(connect(&prefix).await).await;
        }
    );
}

/// The same suite on a Redis Cluster of this binary's own.
mod on_a_cluster {
    use std::sync::OnceLock;

    use tessera_store::RedisStore;
    use test_redis_cluster::RedisCluster;

    use super::unique_prefix;

    /// One cluster for every test of this binary: it lives in memory only and dies with the
    /// binary (see `test_redis_cluster`), so nothing needs deleting.
    fn cluster() -> &'static RedisCluster {
        static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
        CLUSTER.get_or_init(RedisCluster::start)
    }

    async fn connect(test: &str) -> RedisStore {
        let url = tokio::task::spawn_blocking(|| cluster().cluster_url())
            .await
            .expect("the cluster starts");
        RedisStore::connect(&url, &unique_prefix(test))
            .await
            .expect("connect to the test's Redis Cluster")
    }

    mod sessions {
        use super::super::{MemoryStore, UsersAndSessions};
        use super::connect;

        tessera_store::conformance_tests!(
            [users, sessions, challenges] | check | {
                check(UsersAndSessions {
                    users: MemoryStore::new(),
                    sessions: connect("sessions").await,
                })
                .await;
            }
        );
    }

    mod revocations {
        use super::connect;

        tessera_store::conformance_tests!(
            [revocations] | check | {
                check(connect("revocations").await).await;
            }
        );
    }

    /// `PING` goes to every primary.
    #[tokio::test]
    async fn ping_answers_on_every_primary() {
        use tessera_core::store::HealthCheck;
        connect("ping").await.ping().await.expect("ping");
    }
}

#[tokio::test]
async fn ping_answers() {
    let prefix = unique_prefix("ping");
    let _cleanup = Cleanup(prefix.clone());
    connect(&prefix).await.ping().await.expect("ping");
}

// ---------------------------------------------------------------------------------------------
// TTLs

fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    Timestamp::from_unix_millis(i64::try_from(ms).unwrap())
}

fn session_of(user: &UserId, created_at: Timestamp, lifetime: Duration) -> Session {
    Session {
        handle: SessionHandle::generate().unwrap(),
        user_id: user.clone(),
        secret_hash: SessionId::generate().unwrap().hash(),
        csrf_token: CsrfToken::generate().unwrap(),
        created_at,
        last_seen_at: created_at,
        expires_at: created_at.saturating_add(lifetime),
        absolute_expires_at: created_at.saturating_add(12 * lifetime),
        client: ClientInfo {
            user_agent: Some("test".into()),
            ip: Some("192.0.2.1".parse().expect("an IP address")),
        },
        data: json!({}).into(),
        data_version: 0,
        auth: tessera_core::AuthContext::password(created_at),
    }
}

/// Every key a session flow, revocations, throttling and DPoP proofs write has a TTL.
#[tokio::test]
async fn every_key_has_a_ttl() {
    let prefix = unique_prefix("ttl");
    let _cleanup = Cleanup(prefix.clone());
    let store = connect(&prefix).await;
    let t = now();
    let alice = UserId::generate().unwrap();
    let bob = UserId::generate().unwrap();

    let one = session_of(&alice, t, Duration::from_secs(1800));
    let two = session_of(&alice, t, Duration::from_secs(1800));
    let three = session_of(&bob, t, Duration::from_secs(60));
    for s in [&one, &two, &three] {
        store.create_session(s).await.unwrap();
    }
    assert!(
        store
            .touch_session(
                &one.handle,
                t.saturating_add(Duration::from_secs(60)),
                t.saturating_add(Duration::from_secs(3600)),
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .replace_session_data(&two.handle, 0, &json!({"cart": [1, 2]}))
            .await
            .unwrap()
    );
    assert_eq!(store.sessions_of_user(&alice).await.unwrap().len(), 2);
    assert!(store.delete_session(&three.handle).await.unwrap());

    let family = FamilyId::generate().unwrap();
    for revoked in [
        Revoked::Token { jti: "j1".into() },
        Revoked::Family { id: family.clone() },
        Revoked::UserBefore {
            user: alice.clone(),
            before: t,
        },
    ] {
        store
            .add_revocation(&RevocationEntry {
                revoked,
                expires_at: t.saturating_add(Duration::from_secs(900)),
            })
            .await
            .unwrap();
    }
    for jti in ["a1", "a2"] {
        store
            .allow_token(&AllowedToken {
                jti: jti.into(),
                family_id: family.clone(),
                user_id: alice.clone(),
                expires_at: t.saturating_add(Duration::from_secs(900)),
            })
            .await
            .unwrap();
    }
    assert!(
        store
            .take_attempt("login:alice", 5, 10, true)
            .await
            .unwrap()
            .is_ok()
    );
    assert!(
        tessera_core::ProofReplayStore::first_use(
            &store,
            &[9; 32],
            t.saturating_add(Duration::from_secs(65)),
            t
        )
        .await
        .unwrap()
    );

    let keys = keys_under(&prefix);
    let kinds = [
        ":s:",
        ":sessions",
        "sessptr:",
        "sesshandle:",
        "sessexp",
        "{rev}:deny",
        "{rev}:allow",
        "{rev}:allow:exp",
        "{rev}:allow:fam:",
        "{rev}:allow:usr:",
        "throttle:",
        "dpop:",
    ];
    for kind in kinds {
        assert!(
            keys.iter().any(|k| k.contains(kind)),
            "a key of kind {kind:?} was written: {keys:#?}"
        );
    }
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    for key in &keys {
        let pttl: i64 = redis::cmd("PTTL").arg(key).query(&mut conn).unwrap();
        assert!(pttl > 0, "{key} has no TTL (PTTL {pttl})");
    }
    // The deleted session left nothing behind.
    let three_handle_keys = keys
        .iter()
        .filter(|k| k.contains(three.handle.as_str()))
        .count();
    assert_eq!(
        three_handle_keys, 0,
        "the deleted session's handle pointer is gone"
    );

    // The touched session's keys last as long as its new expiry (plus the grace).
    let hash_hex: String = one
        .secret_hash
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let session_key = keys
        .iter()
        .find(|k| k.ends_with(&format!(":s:{hash_hex}")))
        .expect("the touched session's key");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(session_key)
        .query(&mut conn)
        .unwrap();
    assert!(
        pttl > 3_400_000,
        "touch extended the session's TTL to its new expiry ({pttl} ms)"
    );
}

/// The TTL is a backstop: a session whose keys expired in Redis is gone from every lookup and
/// from the listing, and the sweep does not count it.
#[tokio::test]
async fn sessions_expired_by_ttl_are_gone_everywhere() {
    let prefix = unique_prefix("backstop");
    let _cleanup = Cleanup(prefix.clone());
    let store = connect(&prefix)
        .await
        .with_expiry_grace(Duration::from_millis(1));
    let t = now();
    let alice = UserId::generate().unwrap();
    let short = session_of(&alice, t, Duration::from_millis(150));
    let long = session_of(&alice, t, Duration::from_secs(600));
    store.create_session(&short).await.unwrap();
    store.create_session(&long).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.session_by_secret(&short.secret_hash).await.unwrap(),
        None
    );
    assert!(
        !store
            .touch_session(
                &short.handle,
                now(),
                now().saturating_add(Duration::from_secs(60))
            )
            .await
            .unwrap(),
        "an expired session cannot be brought back"
    );
    assert_eq!(
        store.sessions_of_user(&alice).await.unwrap(),
        vec![long.clone()]
    );
    assert_eq!(
        store
            .delete_expired_sessions(now().saturating_add(Duration::from_secs(1)), 100)
            .await
            .unwrap(),
        0,
        "a session the TTL took is not counted by the sweep"
    );
    assert_eq!(
        store.delete_sessions_of_user(&alice, None).await.unwrap(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// The change feed

async fn next_event(events: &mut Receiver<FeedEvent>, within: Duration) -> FeedEvent {
    tokio::time::timeout(within, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no feed event within {within:?}"))
        .expect("the feed ended")
}

/// Two stores on one prefix are two nodes: a change either publishes reaches both.
#[tokio::test]
async fn a_change_reaches_every_node() {
    let prefix = unique_prefix("feed");
    let _cleanup = Cleanup(prefix.clone());
    let one = connect(&prefix).await;
    let two = connect(&prefix).await;
    let mut heard_by_one = one.subscribe().await.unwrap();
    let mut heard_by_two = two.subscribe().await.unwrap();
    let second = Duration::from_secs(5);
    assert_eq!(next_event(&mut heard_by_one, second).await, FeedEvent::Gap);
    assert_eq!(next_event(&mut heard_by_two, second).await, FeedEvent::Gap);

    let user = UserId::generate().unwrap();
    one.publish(&Change::KeysChanged).await.unwrap();
    // Not a change this node can read: a gap (re-read everything), and the feed goes on.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut raw = client.get_connection().unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("{prefix}changes"))
        .arg("{not a change")
        .query(&mut raw)
        .unwrap();
    two.publish(&Change::UserChanged { user: user.clone() })
        .await
        .unwrap();
    for events in [&mut heard_by_one, &mut heard_by_two] {
        assert_eq!(
            next_event(events, second).await,
            FeedEvent::Change(Change::KeysChanged)
        );
        assert_eq!(next_event(events, second).await, FeedEvent::Gap);
        assert_eq!(
            next_event(events, second).await,
            FeedEvent::Change(Change::UserChanged { user: user.clone() })
        );
    }

    // Another prefix is another feed.
    let elsewhere = connect(&unique_prefix("feed-elsewhere")).await;
    elsewhere.publish(&Change::KeysChanged).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), heard_by_one.recv())
            .await
            .is_err(),
        "a change on another prefix is not heard"
    );
}

/// A `redis-server` of this test's own, on a free port; killed when dropped.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (is it installed?)");
        let mut server = Self {
            port,
            child: Some(child),
        };
        server.wait_until_ready();
        server
    }

    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_until_ready(&mut self) {
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200))
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return;
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Asserts `call` fails as `Unavailable`, quickly.
async fn fails_fast<T: std::fmt::Debug>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) {
    let started = Instant::now();
    let result = call.await;
    let took = started.elapsed();
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{what} with Redis down: {result:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "{what} took {took:?} to fail"
    );
}

/// Redis restarts: the subscriber hears `Lost`, calls fail fast while it is down, and once it is
/// back a `Gap` comes and changes flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_survives_a_restart_and_calls_fail_fast_meanwhile() {
    let mut server = PrivateRedis::start();
    let url = server.url();
    let store = RedisStore::connect(&url, "restart:")
        .await
        .expect("connect to the private redis-server");
    let mut events = store.subscribe().await.unwrap();
    let wait = Duration::from_secs(10);
    assert_eq!(next_event(&mut events, wait).await, FeedEvent::Gap);
    store.publish(&Change::KeysChanged).await.unwrap();
    assert_eq!(
        next_event(&mut events, wait).await,
        FeedEvent::Change(Change::KeysChanged)
    );

    server.stop();
    assert_eq!(
        next_event(&mut events, wait).await,
        FeedEvent::Lost,
        "the subscriber notices the loss"
    );

    let user = UserId::generate().unwrap();
    let session = session_of(&user, now(), Duration::from_secs(60));
    fails_fast("ping", store.ping()).await;
    fails_fast("create_session", store.create_session(&session)).await;
    fails_fast(
        "session_by_secret",
        store.session_by_secret(&session.secret_hash),
    )
    .await;
    fails_fast(
        "touch_session",
        store.touch_session(&session.handle, now(), now()),
    )
    .await;
    fails_fast("sessions_of_user", store.sessions_of_user(&user)).await;
    fails_fast("revocations", store.revocations(now())).await;
    fails_fast(
        "add_revocation",
        store.add_revocation(&RevocationEntry {
            revoked: Revoked::Token { jti: "j".into() },
            expires_at: now(),
        }),
    )
    .await;
    fails_fast("take_attempt", store.take_attempt("k", 1, 1, true)).await;
    fails_fast("publish", store.publish(&Change::KeysChanged)).await;
    fails_fast("subscribe", store.subscribe()).await;
    fails_fast("connect", RedisStore::connect(&url, "restart:")).await;
    // Nothing from the dead feed meanwhile.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), events.recv())
            .await
            .is_err()
    );

    let _server = PrivateRedis::start_on(server.port);
    assert_eq!(
        next_event(&mut events, wait).await,
        FeedEvent::Gap,
        "a gap once the subscription is back"
    );
    // The store's own connection comes back by itself (its first call may still see the loss).
    let deadline = Instant::now() + wait;
    let changed = Change::UserChanged { user };
    while let Err(e) = store.publish(&changed).await {
        assert!(Instant::now() < deadline, "publish never recovered: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        next_event(&mut events, wait).await,
        FeedEvent::Change(changed),
        "changes published after the restart are delivered"
    );
    store.ping().await.expect("ping after the restart");

    // Dropping the receiver ends the subscription: Redis sees no subscriber left.
    drop(events);
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let deadline = Instant::now() + wait;
    loop {
        let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("restart:changes")
            .query(&mut conn)
            .unwrap();
        if subscribers == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the subscription outlived its receiver"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Throttling

#[tokio::test]
async fn gcra_allows_a_burst_then_refuses_until_the_budget_refills() {
    let prefix = unique_prefix("gcra");
    let _cleanup = Cleanup(prefix.clone());
    let store = connect(&prefix).await;
    // 3 at once, then one a second.
    for attempt in 0..3 {
        assert_eq!(
            store
                .take_attempt("login:alice", 3, 60, true)
                .await
                .unwrap(),
            Ok(()),
            "attempt {attempt} of the burst"
        );
    }
    let retry_after = store
        .take_attempt("login:alice", 3, 60, true)
        .await
        .unwrap()
        .expect_err("the fourth attempt at once is refused");
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1),
        "retry after {retry_after:?}"
    );
    // A refusal spends nothing: still refused, and not for longer.
    let again = store
        .take_attempt("login:alice", 3, 60, true)
        .await
        .unwrap()
        .expect_err("still refused");
    assert!(again <= retry_after);

    // Other keys have their own budgets.
    assert_eq!(
        store.take_attempt("login:bob", 3, 60, true).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        store
            .take_attempt("ip:192.0.2.1", 1, 60, true)
            .await
            .unwrap(),
        Ok(())
    );
    assert!(
        store
            .take_attempt("ip:192.0.2.1", 1, 60, true)
            .await
            .unwrap()
            .is_err()
    );

    // The budget refills with time: one every 10 ms here.
    assert_eq!(
        store.take_attempt("fast", 1, 6000, true).await.unwrap(),
        Ok(())
    );
    let wait = store
        .take_attempt("fast", 1, 6000, true)
        .await
        .unwrap()
        .expect_err("spent");
    assert!(wait <= Duration::from_millis(10), "retry after {wait:?}");
    tokio::time::sleep(wait + Duration::from_millis(5)).await;
    assert_eq!(
        store.take_attempt("fast", 1, 6000, true).await.unwrap(),
        Ok(())
    );
}

/// Asking without spending tells whether an attempt may go ahead and spends nothing.
#[tokio::test]
async fn gcra_can_be_asked_without_spending() {
    let prefix = unique_prefix("gcra-ask");
    let _cleanup = Cleanup(prefix.clone());
    let store = connect(&prefix).await;
    for _ in 0..5 {
        assert_eq!(
            store.take_attempt("acct:dave", 1, 1, false).await.unwrap(),
            Ok(()),
            "asking spends nothing"
        );
    }
    assert_eq!(
        store.take_attempt("acct:dave", 1, 1, true).await.unwrap(),
        Ok(())
    );
    assert!(
        store
            .take_attempt("acct:dave", 1, 1, false)
            .await
            .unwrap()
            .is_err(),
        "once spent, asking is refused too"
    );
}

/// An attempt given back is as if never spent, and a refund never leaves credit for later.
#[tokio::test]
async fn gcra_attempts_can_be_given_back() {
    let prefix = unique_prefix("gcra-refund");
    let _cleanup = Cleanup(prefix.clone());
    let store = connect(&prefix).await;
    for _ in 0..5 {
        assert_eq!(
            store.take_attempt("acct:erin", 2, 1, true).await.unwrap(),
            Ok(())
        );
        store.refund_attempt("acct:erin", 1).await.unwrap();
    }
    // Refunds beyond what was spent bank nothing: still a burst of two.
    store.refund_attempt("acct:erin", 1).await.unwrap();
    store.refund_attempt("acct:erin", 1).await.unwrap();
    assert_eq!(
        store.take_attempt("acct:erin", 2, 1, true).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        store.take_attempt("acct:erin", 2, 1, true).await.unwrap(),
        Ok(())
    );
    assert!(
        store
            .take_attempt("acct:erin", 2, 1, true)
            .await
            .unwrap()
            .is_err()
    );
}

/// Nodes share one budget: two stores on one prefix spend the same attempts.
#[tokio::test]
async fn gcra_budget_is_shared_between_nodes() {
    let prefix = unique_prefix("gcra-shared");
    let _cleanup = Cleanup(prefix.clone());
    let one = connect(&prefix).await;
    let two = connect(&prefix).await;
    assert_eq!(
        one.take_attempt("login:carol", 2, 1, true).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        two.take_attempt("login:carol", 2, 1, true).await.unwrap(),
        Ok(())
    );
    let wait = one
        .take_attempt("login:carol", 2, 1, true)
        .await
        .unwrap()
        .expect_err("the shared burst is spent");
    assert!(
        wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
        "one attempt a minute: retry after {wait:?}"
    );
}
