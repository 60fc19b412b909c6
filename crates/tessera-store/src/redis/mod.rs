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
//! | `P{ch}:<hash>` | hash | a login challenge waiting for its second factor | its lifetime + grace |
//! | `P{ch}:exp` | zset | the challenges' sweep index, scored by `expires_at` | last challenge |
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
//! # Redis Cluster
//!
//! [`RedisStore::connect_cluster`] (or a `redis+cluster://` URL) talks to a Redis Cluster through
//! the cluster client, which follows `MOVED` and `ASK` redirections and re-reads the slot map when
//! a node goes away. Every script touches the keys of one hash tag, so one slot. Commands that
//! merely travel together (a pipeline whose keys live in several slots) are sent one by one
//! instead, each to the node of its slot; none of them needs to be atomic with another (see the
//! pointer order above). Scripts run by `EVALSHA` are loaded on every primary the first time a
//! node does not know them, a replica that took over included.
//!
//! The change feed is ordinary `PUBLISH`/`SUBSCRIBE`, which a cluster forwards to every node: a
//! subscriber listens on any one node of the cluster, and when that node dies, or stops seeing a
//! healthy cluster, it reports [`FeedEvent::Lost`] and listens on another node (then a
//! [`FeedEvent::Gap`]).
//!
//! # Revocations survive a failover
//!
//! Redis replicates asynchronously: a primary that dies right after acknowledging a write may
//! take that write with it, and the replica that takes over never saw it. For writes that end
//! or revoke something (a deleted session, the sessions of a forced logout, a denylist entry, a
//! token leaving the allowlist) that would bring a revoked credential back, so the store sends
//! `WAIT` after them, on the same connection as the write, and fails with
//! [`StoreError::Unavailable`] unless enough replicas ([`RedisStore::with_replica_acks`]; 1 by
//! default on a cluster) confirmed the write in time: a revocation is acknowledged only once a
//! replica holds it. Other writes (new sessions, session data, login throttling) are not waited
//! for: losing one in a failover logs a user out or forgets some attempts, which is safe.
//!
//! # Failure
//!
//! Every round trip is bounded ([`CALL_TIMEOUT`]); a Redis that is down or does not answer is a
//! [`StoreError::Unavailable`] within seconds, and the callers fail closed. On a cluster, that
//! holds for calls that need a primary that is down, until its replica has taken over.
//!
//! [`FeedEvent::Lost`]: tessera_core::feed::FeedEvent::Lost
//! [`FeedEvent::Gap`]: tessera_core::feed::FeedEvent::Gap
//!
//! [`SessionStore::delete_expired_sessions`]: tessera_core::SessionStore::delete_expired_sessions
//! [`RevocationStore::purge_expired`]: tessera_core::RevocationStore::purge_expired

mod challenges;
mod dpop;
mod feed;
mod revocations;
mod scripts;
mod sessions;
mod throttle;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use ::redis::{
    Client, Cmd, ConnectionInfo, ErrorKind, FromRedisValue, IntoConnectionInfo, Pipeline,
    ProtocolVersion, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
};
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
/// How long a revoking write waits for its replicas to confirm it (see the module documentation).
pub const REPLICA_WAIT: Duration = Duration::from_millis(500);
/// How many replicas confirm a revoking write by default on a cluster.
pub const DEFAULT_CLUSTER_REPLICA_ACKS: u32 = 1;

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
    conn: Conn,
    /// Where the change feed's dedicated connections go.
    feed_source: Arc<feed::FeedSource>,
    keys: Arc<Keys>,
    grace_ms: i64,
    /// Replicas that must confirm a revoking write before it counts (0: none).
    replica_acks: u32,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix)
            .field("grace_ms", &self.grace_ms)
            .field("cluster", &matches!(self.conn, Conn::Cluster(_)))
            .field("replica_acks", &self.replica_acks)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://[user:password@]host[:port][/db]`, or `rediss://`
    /// when TLS is built in); every key this store writes starts with `prefix`. A
    /// `redis+cluster://[user:password@]host:port[,host:port…]` URL connects to a Redis Cluster
    /// through those nodes, as [`RedisStore::connect_cluster`] does.
    ///
    /// Fails with [`StoreError::Unavailable`] within two seconds when Redis cannot be reached,
    /// and with [`StoreError::Other`] when the URL does not parse. No error repeats the URL (it
    /// may hold a password).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        if let Some(nodes) = cluster_nodes(url)? {
            return Self::connect_cluster(nodes.as_slice(), prefix).await;
        }
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
        let feed_client = Client::open(resp3(client.get_connection_info().clone()))
            .map_err(|e| StoreError::Other(format!("Redis feed client: {:?}", e.kind())))?;
        let conn = Conn::Single(conn);
        warn_unless_noeviction(conn.clone()).await;
        Ok(Self::with(
            conn,
            feed::FeedSource::Single(feed_client),
            prefix,
            0,
        ))
    }

    /// Connects to a Redis Cluster through any of `nodes` (`redis://[user:password@]host:port`
    /// each; the cluster client finds the others). Revoking writes wait for
    /// [`DEFAULT_CLUSTER_REPLICA_ACKS`] replica by default ([`RedisStore::with_replica_acks`]).
    ///
    /// Every key of one script shares a hash tag; a `prefix` holding `{` or `}` would break that,
    /// and is refused ([`StoreError::Other`]), as are nodes that do not parse. Fails with
    /// [`StoreError::Unavailable`] within two seconds when no node can be reached.
    pub async fn connect_cluster(
        nodes: &[impl AsRef<str>],
        prefix: &str,
    ) -> Result<Self, StoreError> {
        if prefix.contains(['{', '}']) {
            return Err(StoreError::Other(
                "a Redis Cluster key prefix must not contain { or }: they would change the \
                 hash tags that keep each script in one slot"
                    .into(),
            ));
        }
        let infos = nodes
            .iter()
            .map(|node| {
                node.as_ref().into_connection_info().map_err(|e| {
                    StoreError::Other(format!("invalid Redis Cluster node URL: {:?}", e.kind()))
                })
            })
            .collect::<Result<Vec<ConnectionInfo>, _>>()?;
        if infos.is_empty() {
            return Err(StoreError::Other(
                "a Redis Cluster needs at least one node URL".into(),
            ));
        }
        let client = ClusterClientBuilder::new(infos.clone())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(3)
            .min_retry_wait(50)
            .max_retry_wait(500)
            .build()
            .map_err(|e| StoreError::Other(format!("Redis Cluster client: {:?}", e.kind())))?;
        let conn = within(
            "connect to the cluster",
            2 * CONNECT_TIMEOUT,
            client.get_async_connection(),
        )
        .await?;
        let conn = Conn::Cluster(conn);
        warn_unless_noeviction(conn.clone()).await;
        let seeds = infos.into_iter().map(resp3).collect();
        Ok(Self::with(
            conn,
            feed::FeedSource::Cluster(feed::ClusterNodes::new(seeds)),
            prefix,
            DEFAULT_CLUSTER_REPLICA_ACKS,
        ))
    }

    fn with(conn: Conn, feed_source: feed::FeedSource, prefix: &str, replica_acks: u32) -> Self {
        Self {
            conn,
            feed_source: Arc::new(feed_source),
            keys: Arc::new(Keys {
                prefix: prefix.to_owned(),
            }),
            grace_ms: millis(DEFAULT_EXPIRY_GRACE),
            replica_acks,
        }
    }

    /// A write that ends or revokes something is acknowledged only once `replicas` replicas
    /// confirmed it (Redis `WAIT`, up to [`REPLICA_WAIT`]); otherwise it fails with
    /// [`StoreError::Unavailable`]. 0 waits for none. Defaults: 0 on one Redis,
    /// [`DEFAULT_CLUSTER_REPLICA_ACKS`] on a cluster. See the module documentation.
    pub fn with_replica_acks(mut self, replicas: u32) -> Self {
        self.replica_acks = replicas;
        self
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

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Runs a script that ends or revokes something; with replica acknowledgements configured,
    /// `WAIT` follows it on the same connection, and too few confirmations fail the call.
    async fn run_revoking<T: FromRedisValue>(
        &self,
        what: &'static str,
        script: scripts::Call<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn();
        if self.replica_acks == 0 {
            return call(what, script.run(&mut conn)).await;
        }
        let mut p = ::redis::pipe();
        script.add_to(&mut p);
        p.cmd("WAIT")
            .arg(self.replica_acks)
            .arg(millis(REPLICA_WAIT));
        let (value, confirmed): (T, i64) =
            call(what, conn.query_on_node_of(script.first_key(), p)).await?;
        if confirmed < i64::from(self.replica_acks) {
            return Err(StoreError::Unavailable(format!(
                "Redis {what}: {confirmed} of {} replicas confirmed the write within {REPLICA_WAIT:?}",
                self.replica_acks
            )));
        }
        Ok(value)
    }
}

/// The node URLs of a `redis+cluster://[userinfo@]host:port[,host:port…]` URL (`rediss+cluster`
/// for TLS), each `redis://[userinfo@]host:port`; `None` for any other URL.
fn cluster_nodes(url: &str) -> Result<Option<Vec<String>>, StoreError> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis", rest)
    } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
        ("rediss", rest)
    } else {
        return Ok(None);
    };
    let bad = |why: &str| StoreError::Other(format!("invalid Redis Cluster URL: {why}"));
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err(bad(
            "a cluster has one database: no path, query or fragment after the nodes",
        ));
    }
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(|host| match userinfo {
            Some(userinfo) => format!("{scheme}://{userinfo}@{host}"),
            None => format!("{scheme}://{host}"),
        })
        .collect();
    if hosts.split(',').any(str::is_empty) {
        return Err(bad("an empty node in the list"));
    }
    Ok(Some(nodes))
}

/// The same connection settings in RESP3 (the change feed receives messages as pushes).
fn resp3(info: ConnectionInfo) -> ConnectionInfo {
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    info.set_redis_settings(settings)
}

/// The connection every call goes through: one Redis (reconnecting by itself), or a cluster.
/// Cloning is cheap.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Sends `pipeline` whole to the node serving `key`'s slot (on a cluster; one Redis has one
    /// node anyway), so that a `WAIT` in it follows the write before it on the same connection.
    async fn query_on_node_of<T: FromRedisValue>(
        &mut self,
        key: &[u8],
        pipeline: Pipeline,
    ) -> RedisResult<T> {
        let cluster = match self {
            Conn::Single(conn) => return pipeline.query_async(conn).await,
            Conn::Cluster(cluster) => cluster,
        };
        let count = pipeline.len();
        let route = SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
        let mut values = cluster
            .route_pipeline(pipeline.clone(), 0, count, route)
            .await?;
        // The slot moved (a failover the client has not seen yet): once to the node named.
        let moved = values.iter().find_map(|v| match v.clone().extract_error() {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::Moved) => e
                .redirect_node()
                .and_then(|(addr, _)| addr.rsplit_once(':'))
                .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?))),
            _ => None,
        });
        if let Some((host, port)) = moved {
            let route = SingleNodeRoutingInfo::ByAddress { host, port };
            values = cluster.route_pipeline(pipeline, 0, count, route).await?;
        }
        let values = values
            .into_iter()
            .map(Value::extract_error)
            .collect::<RedisResult<Vec<_>>>()?;
        Ok(::redis::from_redis_value(Value::Array(values))?)
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    /// On a cluster, the commands of a pipeline go one by one, each to the node of its slot
    /// (concurrently, so still in one round trip's time); none of this store's pipelines needs
    /// its commands to run together.
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => {
                if pipeline.is_transaction() {
                    return conn.req_packed_commands(pipeline, offset, count);
                }
                let conn = conn.clone();
                Box::pin(async move {
                    futures_util::future::try_join_all(
                        pipeline.cmd_iter().skip(offset).take(count).map(|cmd| {
                            let mut conn = conn.clone();
                            async move { conn.req_packed_command(cmd).await }
                        }),
                    )
                    .await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
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
                    // A cluster's slot moving while a failover settles.
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
            ) | ErrorKind::ClusterConnectionNotFound
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

    fn dpop_proof(&self, key: &[u8; 32]) -> String {
        use std::fmt::Write;
        let mut name = format!("{}dpop:", self.prefix);
        for byte in key {
            let _ = write!(name, "{byte:02x}");
        }
        name
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
async fn warn_unless_noeviction(mut conn: Conn) {
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

#[cfg(test)]
mod tests {
    use ::redis::cluster_routing::Slot;

    use super::*;

    /// Every key a script is given, or names itself, lies in the slot of its first key: a
    /// cluster runs each script on one node and refuses keys of other slots (`CROSSSLOT`).
    #[test]
    fn every_script_keeps_to_one_slot() {
        let same_slot = |what: &str, keys: &[String]| {
            let first = Slot::for_key(&keys[0]);
            for key in keys {
                assert_eq!(
                    Slot::for_key(key),
                    first,
                    "{what}: {key} is not in the slot of {}",
                    keys[0]
                );
            }
        };
        for prefix in ["tessera:", "", "a:b:c:", "ünï-cödé:"] {
            let keys = Keys {
                prefix: prefix.to_owned(),
            };
            for user in ["usr_0123456789abcdef", "usr_x", "u:{odd}"] {
                let hash = "ab".repeat(32);
                // SESSION_CREATE, SESSION_TOUCH, SESSION_DELETE, SESSION_EXPIRE, SESSION_DATA, and
                // the sessions SESSIONS_OF_USER and SESSIONS_DELETE_OF_USER name from the prefix.
                same_slot(
                    "sessions",
                    &[
                        keys.session(user, &hash),
                        keys.user_sessions(user),
                        format!("{}{}", keys.session_prefix(user), "cd".repeat(32)),
                    ],
                );
            }
            // DENY_ADD, ALLOW_ADD, ALLOW_REMOVE, ALLOW_REMOVE_SET, PURGE (and the family and user
            // sets ALLOW_FORGET names from the base).
            same_slot(
                "revocations",
                &[
                    keys.denylist(),
                    keys.allowlist(),
                    keys.allow_expiry(),
                    keys.allow_family("fam_1"),
                    keys.allow_user("usr_1"),
                    format!("{}fam:{}", keys.allow_base(), "fam_2"),
                    format!("{}usr:{}", keys.allow_base(), "usr_2"),
                ],
            );
        }
        // SWEEP_INDEX_PUT, GCRA and GCRA_REFUND take one key each.
    }

    #[test]
    fn cluster_urls_list_their_nodes() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379").unwrap(), None);
        assert_eq!(
            cluster_nodes("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/")
                .unwrap()
                .unwrap(),
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://u:p@a@h1:1,h2:2")
                .unwrap()
                .unwrap(),
            ["rediss://u:p@a@h1:1", "rediss://u:p@a@h2:2"]
        );
        for bad in [
            "redis+cluster://h1:1,,h2:2",
            "redis+cluster://h1:1/3",
            "redis+cluster://:secret@h1:1?x=1",
        ] {
            let e = cluster_nodes(bad).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_cluster_prefix_with_braces_is_refused() {
        let e = RedisStore::connect_cluster(&["redis://127.0.0.1:1"], "x{y}:")
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Other(_)), "{e:?}");
    }
}
