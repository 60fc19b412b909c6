//! The multi-node store for what changes on every request: sessions, revocations, the change feed
//! and login throttling, in Redis. Users, keys and refresh families stay in SQL.
//!
//! # Key layout
//!
//! Every key starts with the store's prefix `P` (so stores can share a Redis, and tests run in
//! parallel). Keys that one Lua script changes together share a hash tag (`{…}`), so every script
//! touches a single Redis Cluster slot:
//!
//! | key | type | holds | TTL |
//! |---|---|---|---|
//! | `P{u:<user>}:s:<hash>` | hash | one session (`<hash>` = hex SHA-256 of its secret) | session |
//! | `P{u:<user>}:sessions` | zset | the user's sessions: `<hash>` scored by its key's deadline | last deadline |
//! | `Psessptr:<hash>` | string | secret hash → user id | session |
//! | `Psesshandle:<handle>` | string | handle → `<hash><user id>` | session |
//! | `Psessexp` | zset | the sweep's index: `<hash><user id>` scored by `expires_at` | last deadline |
//! | `P{rev}:deny` | zset | denylist entries scored by `expires_at` | last entry + grace |
//! | `P{rev}:allow` | hash | allowlist: jti → `[family, user, expires_at]` | last token + grace |
//! | `P{rev}:allow:exp` | zset | allowlist jtis scored by `expires_at` | last token + grace |
//! | `P{rev}:allow:fam:<id>`, `P{rev}:allow:usr:<id>` | set | allowlist jtis of a family, a user | last token + grace |
//! | `Pthrottle:<key>` | string | GCRA theoretical arrival time, µs | until it no longer matters |
//! | `Pchanges` | channel | the change feed | — |
//!
//! # Why the user id is the sessions' hash tag
//!
//! A session, and the per-user index that lists it, change together in one script: creating,
//! touching, deleting, listing and "log out everywhere" are each atomic, so the index can never
//! miss a live session (which would let it survive a forced logout). Lookups by secret hash or
//! by handle cannot know the user in advance, so two small pointer keys lead to it. They are
//! written first (`SET NX`, which is also how clashes are detected) and removed last, so a failure
//! part-way leaves at most a pointer to nothing: readers treat the session key as the truth and
//! find nothing there. The alternative (the secret hash as the tag, the per-user index updated in
//! a second step) makes the one lookup that matters a round trip cheaper, but the index could
//! then lag behind the sessions it must end.
//!
//! # Expiry
//!
//! The services run on an injected clock, and the store contract keeps expired sessions and
//! revocations until they are swept ([`SessionStore::delete_expired_sessions`],
//! [`RevocationStore::purge_expired`]), so the store keeps indexes by `expires_at` and sweeps by
//! them exactly like the SQL stores. The TTLs are a backstop on Redis's own clock, so nothing
//! outlives its use when no sweeper runs:
//!
//! - a session's keys expire `expires_at - last_seen_at` (the lifetime left, measured on the
//!   caller's clock, so Redis's clock need not agree) plus a grace period after each write;
//! - revocations and allowlist tokens live until `max(expires_at, now) + grace` on Redis's clock
//!   (their callers give no "now"): a node whose clock lags Redis's by less than the grace still
//!   finds them;
//! - an index lives as long as the longest-lived thing it lists, and its entries are trimmed by
//!   the same deadlines whenever it is written.
//!
//! The grace ([`DEFAULT_EXPIRY_GRACE`], see [`RedisStore::with_expiry_grace`]) should exceed the
//! sweep interval, so the sweeper, not the TTL, normally ends a session.
//!
//! # Requirements
//!
//! Redis 6.2 or later (`ZADD GT`); the change feed subscribes over RESP3 (Redis 6 or later).
//!
//! # Failure
//!
//! Every round trip is bounded ([`CALL_TIMEOUT`]); a Redis that is down or does not answer is a
//! [`StoreError::Unavailable`] within seconds, and the callers fail closed.
//!
//! [`SessionStore::delete_expired_sessions`]: tessera_core::SessionStore::delete_expired_sessions
//! [`RevocationStore::purge_expired`]: tessera_core::RevocationStore::purge_expired

mod feed;
mod revocations;
mod scripts;
mod sessions;
mod throttle;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ErrorKind, ProtocolVersion, RedisError, RedisResult, ServerErrorKind};
use async_trait::async_trait;
use tessera_core::StoreError;
use tessera_core::store::HealthCheck;

/// How long a TCP connection to Redis may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long Redis may take to answer one command or pipeline on an open connection.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The bound on one round trip, waiting for a reconnection included: past it the store answers
/// [`StoreError::Unavailable`].
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long keys outlive the expiry they were written with (see the module documentation).
pub const DEFAULT_EXPIRY_GRACE: Duration = Duration::from_secs(10 * 60);
/// No key is given a TTL longer than this, whatever the expiry it was written with.
const MAX_TTL_MS: i64 = 10 * 366 * 24 * 3_600_000;

/// Sessions, revocations, the change feed and login throttling in Redis. Cloning is cheap: clones
/// share one multiplexed connection, which reconnects by itself.
///
/// ```no_run
/// use tessera_core::HealthCheck;
/// use tessera_store::RedisStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379", "tessera:").await?;
/// store.ping().await?;
/// // Five attempts at once, then one every 12 s.
/// match store.take_attempt("login:alice", 5, 5, true).await? {
///     Ok(()) => println!("go ahead"),
///     Err(retry_after) => println!("too many attempts; retry in {retry_after:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    /// The same server in RESP3, for the change feed's dedicated connections.
    feed_client: Client,
    keys: Arc<Keys>,
    grace_ms: i64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix)
            .field("grace_ms", &self.grace_ms)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://[user:password@]host[:port][/db]`, or `rediss://`
    /// when TLS is built in); every key this store writes starts with `prefix`.
    ///
    /// Fails with [`StoreError::Unavailable`] within two seconds when Redis cannot be reached,
    /// and with [`StoreError::Other`] when the URL does not parse.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = Client::open(url)
            .map_err(|e| StoreError::Other(format!("invalid Redis URL: {:?}", e.kind())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = within(
            "connect",
            2 * CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await?;
        let info = client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let feed_client = Client::open(info.set_redis_settings(resp3))
            .map_err(|e| StoreError::Other(format!("Redis feed client: {:?}", e.kind())))?;
        warn_unless_noeviction(conn.clone()).await;
        Ok(Self {
            conn,
            feed_client,
            keys: Arc::new(Keys {
                prefix: prefix.to_owned(),
            }),
            grace_ms: millis(DEFAULT_EXPIRY_GRACE),
        })
    }

    /// Keys outlive the expiry they were written with by `grace` (default
    /// [`DEFAULT_EXPIRY_GRACE`]); see the module documentation.
    pub fn with_expiry_grace(mut self, grace: Duration) -> Self {
        self.grace_ms = millis(grace);
        self
    }

    /// The prefix of every key (and of the change channel) this store uses.
    pub fn prefix(&self) -> &str {
        &self.keys.prefix
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

/// `d` in milliseconds, saturating, at least 1 (Redis refuses a TTL of 0).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis())
        .unwrap_or(i64::MAX)
        .clamp(1, MAX_TTL_MS)
}

/// Runs one round trip to Redis, bounded by [`CALL_TIMEOUT`].
async fn call<T>(
    what: &'static str,
    round_trip: impl Future<Output = RedisResult<T>>,
) -> Result<T, StoreError> {
    within(what, CALL_TIMEOUT, round_trip).await
}

async fn within<T>(
    what: &'static str,
    limit: Duration,
    round_trip: impl Future<Output = RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, round_trip).await {
        Ok(result) => result.map_err(|e| redis_error(what, &e)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "Redis did not answer {what} within {limit:?}"
        ))),
    }
}

/// Connection trouble is `Unavailable` (callers fail closed and may retry); anything else
/// (a script error, a reply of the wrong type) is `Other`.
fn redis_error(what: &str, e: &RedisError) -> StoreError {
    let unavailable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        );
    if unavailable {
        StoreError::Unavailable(format!("Redis {what}: {e}"))
    } else {
        StoreError::Other(format!("Redis {what}: {e}"))
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("Redis holds data that does not decode: {what}"))
}

/// Key names (see the module documentation).
#[derive(Debug)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn session_prefix(&self, user: &str) -> String {
        format!("{}{{u:{user}}}:s:", self.prefix)
    }

    fn session(&self, user: &str, hash: &str) -> String {
        format!("{}{hash}", self.session_prefix(user))
    }

    fn user_sessions(&self, user: &str) -> String {
        format!("{}{{u:{user}}}:sessions", self.prefix)
    }

    fn secret_pointer(&self, hash: &str) -> String {
        format!("{}sessptr:{hash}", self.prefix)
    }

    fn handle_pointer(&self, handle: &str) -> String {
        format!("{}sesshandle:{handle}", self.prefix)
    }

    fn session_expiry(&self) -> String {
        format!("{}sessexp", self.prefix)
    }

    fn denylist(&self) -> String {
        format!("{}{{rev}}:deny", self.prefix)
    }

    /// What the allowlist's per-family and per-user sets' names start with.
    fn allow_base(&self) -> String {
        format!("{}{{rev}}:allow:", self.prefix)
    }

    fn allowlist(&self) -> String {
        format!("{}{{rev}}:allow", self.prefix)
    }

    fn allow_expiry(&self) -> String {
        format!("{}exp", self.allow_base())
    }

    fn allow_family(&self, family: &str) -> String {
        format!("{}fam:{family}", self.allow_base())
    }

    fn allow_user(&self, user: &str) -> String {
        format!("{}usr:{user}", self.allow_base())
    }

    fn throttle(&self, key: &str) -> String {
        format!("{}throttle:{key}", self.prefix)
    }

    fn changes(&self) -> String {
        format!("{}changes", self.prefix)
    }
}

#[async_trait]
impl HealthCheck for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let pong: String = call("PING", ::redis::cmd("PING").query_async(&mut conn)).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Other(format!(
                "Redis answered PING with {pong:?}"
            )))
        }
    }
}

/// Every key has a TTL, so a `volatile-*` or `allkeys-*` eviction policy may drop a live session,
/// a user's session index (a forced logout would then miss sessions) or the allowlist under memory
/// pressure. Tessera needs `noeviction`; managed services that refuse `CONFIG` get no check.
async fn warn_unless_noeviction(mut conn: ConnectionManager) {
    let policy: Result<Vec<String>, _> = tokio::time::timeout(
        RESPONSE_TIMEOUT,
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut conn),
    )
    .await
    .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))));
    match policy {
        Ok(pair) if pair.get(1).is_some_and(|p| p == "noeviction") => {}
        Ok(pair) => tracing::warn!(
            policy = pair.get(1).map(String::as_str).unwrap_or("unknown"),
            "Redis may evict keys under memory pressure (maxmemory-policy is not noeviction): \
             sessions could vanish and a forced logout could miss some; set noeviction"
        ),
        Err(e) => tracing::debug!(error = %e, "cannot read Redis's maxmemory-policy"),
    }
}
