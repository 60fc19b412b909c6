//! The multi-node store: PostgreSQL through a connection pool, with LISTEN/NOTIFY as the change
//! feed that keeps every node's in-process copies exact.

mod feed;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Executor, Postgres, Row, SqlSafeStr, Transaction};
use tessera_core::store::{
    EventStore, HealthCheck, KeyStore, RefreshStore, RevocationStore, SessionStore, UserStore,
};
use tessera_core::{
    AllowedToken, ClientInfo, CsrfToken, EventKind, FamilyId, KeyStatus, LoginModel, NewEvent,
    RefreshFamily, RefreshTokenRecord, RevocationEntry, Revoked, Rotation, SecurityEvent, Session,
    SessionHandle, SigningAlgorithm, StoreError, StoredKey, Timestamp, TokenHash, User, UserId,
    Username,
};

pub use feed::FEED_APPLICATION_NAME;

/// How long a caller waits for a connection (a new one included) before the store counts as
/// unavailable: a dead server fails requests fast instead of piling them up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Per node. PostgreSQL's default `max_connections` is 100: a handful of nodes fit beside the
/// operator's own sessions.
const MAX_CONNECTIONS: u32 = 16;
/// Names the pool's connections in `pg_stat_activity`, unless the URL names them already.
const APPLICATION_NAME: &str = "tessera";
/// The feed's channel when the store uses the default schema.
const DEFAULT_CHANNEL: &str = "tessera_changes";
/// PostgreSQL silently truncates longer identifiers (schemas and channel names), so that two
/// different long names would name the same thing.
const MAX_IDENTIFIER_BYTES: usize = 63;

const USER_COLUMNS: &str =
    "id, username, password_hash, roles::text AS roles, disabled, created_at, updated_at";

/// Every store in PostgreSQL, and the change feed between the nodes that share it. Cloning is
/// cheap and shares the connection pool.
///
/// ```no_run
/// use tessera_core::{ChangeFeed, HealthCheck};
/// use tessera_store::PostgresStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tessera_core::StoreError> {
/// let store = PostgresStore::connect("postgres://tessera@db.internal/tessera", None).await?;
/// store.ping().await?;
/// let mut changes = store.subscribe().await?;
/// # drop(changes);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// How to open more connections: the feed opens its own, one per subscription.
    options: PgConnectOptions,
    channel: Arc<str>,
}

impl fmt::Debug for PostgresStore {
    // Not derived: the connect options hold the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("channel", &self.channel)
            .field("connections", &self.pool.size())
            .field("closed", &self.pool.is_closed())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host/database?…`) and brings
    /// its schema up to date.
    ///
    /// With `schema`, everything lives in that schema (created if missing): every pooled
    /// connection sets its `search_path` to it, the migrations table included, and the change
    /// feed gets a channel of its own, so several deployments (or tests) can share one database
    /// without seeing each other. Several nodes may start at once: migrations, and creating the
    /// schema, run under PostgreSQL's advisory lock, one node after the other.
    ///
    /// A server that cannot be reached is [`StoreError::Unavailable`] after about 5 s.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        // The error never echoes the URL: it may hold a password.
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("invalid PostgreSQL URL: {e}")))?;
        if options.get_application_name().is_none() {
            options = options.application_name(APPLICATION_NAME);
        }
        if let Some(schema) = schema {
            check_identifier("schema", schema)?;
        }
        let mut pool_options = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        if let Some(schema) = schema {
            let set_path: Arc<str> = format!("SET search_path TO {}", quote(schema)).into();
            pool_options = pool_options.after_connect(move |conn, _| {
                let set_path = Arc::clone(&set_path);
                Box::pin(async move {
                    conn.execute(sqlx::AssertSqlSafe(set_path.to_string()))
                        .await
                        .map(drop)
                })
            });
        }
        let pool = pool_options
            .connect_with(options.clone())
            .await
            .map_err(|e| context("cannot connect to PostgreSQL", store_error(e)))?;
        let store = Self {
            pool,
            options,
            channel: channel_of(schema).into(),
        };
        if let Err(e) = store.migrate(schema).await {
            // A failed migration may leave its connection holding the advisory lock: close it,
            // or every other node would wait for it.
            store.pool.close().await;
            return Err(e);
        }
        tracing::debug!(schema, channel = %store.channel, "postgres store connected");
        Ok(store)
    }

    /// The LISTEN/NOTIFY channel of this store's change feed.
    pub fn feed_channel(&self) -> &str {
        &self.channel
    }

    /// Waits for in-flight queries and closes every pooled connection. Feed subscriptions have
    /// connections of their own and end when their receivers are dropped.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self, schema: Option<&str>) -> Result<(), StoreError> {
        let mut migrator = migrator();
        if let Some(schema) = schema {
            // Created by the migrator after it takes its lock: two nodes running
            // `CREATE SCHEMA IF NOT EXISTS` at the same moment may both try to create it, and the
            // loser fails on a unique violation.
            migrator.create_schema(quote(schema));
        }
        migrator.run(&self.pool).await.map_err(migration_error)
    }
}

/// Every schema version, oldest first. Append; never edit or reorder (they are checksummed).
fn migrator() -> Migrator {
    let migration = |version, description: &'static str, sql: &'static str| {
        Migration::new(
            version,
            description.into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![migration(
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    )])
}

fn migration_error(e: MigrateError) -> StoreError {
    match e {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => {
            context("postgres migration failed", store_error(e))
        }
        e => StoreError::Other(format!("postgres migration failed: {e}")),
    }
}

fn context(what: &str, e: StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("{what}: {m}")),
        StoreError::Conflict(m) => StoreError::Conflict(format!("{what}: {m}")),
        StoreError::Other(m) => StoreError::Other(format!("{what}: {m}")),
    }
}

fn check_identifier(what: &str, name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > MAX_IDENTIFIER_BYTES || name.contains('\0') {
        return Err(StoreError::Other(format!(
            "invalid PostgreSQL {what} name {name:?}: 1 to {MAX_IDENTIFIER_BYTES} bytes, no NUL"
        )));
    }
    Ok(())
}

/// `name` as a quoted identifier: taken literally, case and all.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The feed's channel: one per schema, so deployments sharing a database do not hear each other.
/// A name that would be too long for a channel is replaced by its hash.
fn channel_of(schema: Option<&str>) -> String {
    let Some(schema) = schema else {
        return DEFAULT_CHANNEL.to_owned();
    };
    let named = format!("{DEFAULT_CHANNEL}_{schema}");
    if named.len() <= MAX_IDENTIFIER_BYTES {
        return named;
    }
    let digest: String = TokenHash::of(schema.as_bytes()).as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{DEFAULT_CHANNEL}_{digest}")
}

/// SQLSTATEs of a server that is going away, starting, overloaded or read-only (a standby after
/// a failover): the store is unavailable, not broken.
fn is_unavailable_state(code: &str) -> bool {
    // 08: connection exception; 53: insufficient resources (too many connections, disk full).
    code.starts_with("08")
        || code.starts_with("53")
        // admin_shutdown, crash_shutdown, cannot_connect_now, query_canceled (statement timeout),
        // read_only_sql_transaction.
        || matches!(code, "57P01" | "57P02" | "57P03" | "57014" | "25006")
}

fn store_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        sqlx::Error::Database(db) if db.code().is_some_and(|code| is_unavailable_state(&code)) => {
            StoreError::Unavailable(format!("postgres: {}", db.message()))
        }
        e @ (sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed) => StoreError::Unavailable(format!("postgres: {e}")),
        e => StoreError::Other(format!("postgres: {e}")),
    }
}

fn corrupt(what: &str, detail: impl fmt::Display) -> StoreError {
    StoreError::Other(format!("stored {what} does not decode: {detail}"))
}

fn json_error(e: serde_json::Error) -> StoreError {
    StoreError::Other(format!("cannot encode JSON: {e}"))
}

/// Statements are built from constants only; this marks them as such for sqlx.
fn sql(statement: String) -> impl SqlSafeStr {
    sqlx::AssertSqlSafe(statement)
}

/// `usize` limits as PostgreSQL wants them: anything beyond `i64::MAX` means "no limit" anyway.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn sql_count(rows: u64) -> usize {
    usize::try_from(rows).unwrap_or(usize::MAX)
}

fn column<'r, T>(row: &'r PgRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(name).map_err(store_error)
}

fn millis(row: &PgRow, name: &str) -> Result<Timestamp, StoreError> {
    column(row, name).map(Timestamp::from_unix_millis)
}

fn optional_millis(row: &PgRow, name: &str) -> Result<Option<Timestamp>, StoreError> {
    column::<Option<i64>>(row, name).map(|ms| ms.map(Timestamp::from_unix_millis))
}

fn token_hash(row: &PgRow, name: &str, what: &str) -> Result<TokenHash, StoreError> {
    let bytes: Vec<u8> = column(row, name)?;
    TokenHash::from_slice(&bytes).ok_or_else(|| corrupt(what, "not 32 bytes"))
}

async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, StoreError> {
    pool.begin().await.map_err(store_error)
}

async fn commit(tx: Transaction<'static, Postgres>) -> Result<(), StoreError> {
    tx.commit().await.map_err(store_error)
}

fn user_from_row(row: &PgRow) -> Result<User, StoreError> {
    let roles: String = column(row, "roles")?;
    Ok(User {
        id: UserId::from_stored(column(row, "id")?),
        username: Username::from_stored(column(row, "username")?),
        password_hash: column(row, "password_hash")?,
        roles: serde_json::from_str(&roles).map_err(|e| corrupt("user roles", e))?,
        disabled: column(row, "disabled")?,
        created_at: millis(row, "created_at")?,
        updated_at: millis(row, "updated_at")?,
    })
}

const SESSION_COLUMNS: &str = "handle, user_id, secret_hash, csrf_token, created_at, last_seen_at, \
     expires_at, absolute_expires_at, user_agent, ip, data::text AS data, data_version";

fn session_from_row(row: &PgRow) -> Result<Session, StoreError> {
    let csrf_token: Vec<u8> = column(row, "csrf_token")?;
    let data: String = column(row, "data")?;
    Ok(Session {
        handle: SessionHandle::from_stored(column(row, "handle")?),
        user_id: UserId::from_stored(column(row, "user_id")?),
        secret_hash: token_hash(row, "secret_hash", "session secret hash")?,
        csrf_token: <[u8; 32]>::try_from(csrf_token.as_slice())
            .map(CsrfToken::from_bytes)
            .map_err(|_| corrupt("session CSRF token", "not 32 bytes"))?,
        created_at: millis(row, "created_at")?,
        last_seen_at: millis(row, "last_seen_at")?,
        expires_at: millis(row, "expires_at")?,
        absolute_expires_at: millis(row, "absolute_expires_at")?,
        client: ClientInfo {
            user_agent: column(row, "user_agent")?,
            ip: column(row, "ip")?,
        },
        data: serde_json::from_str(&data).map_err(|e| corrupt("session data", e))?,
        data_version: column(row, "data_version")?,
    })
}

#[async_trait]
impl UserStore for PostgresStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, roles, disabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7)",
        )
        .bind(user.id.as_str())
        .bind(user.username.as_str())
        .bind(user.password_hash.as_str())
        .bind(serde_json::to_string(&user.roles).map_err(json_error)?)
        .bind(user.disabled)
        .bind(user.created_at.unix_millis())
        .bind(user.updated_at.unix_millis())
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        sqlx::query(sql(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }

    async fn user_by_username(&self, username: &Username) -> Result<Option<User>, StoreError> {
        sqlx::query(sql(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = $1"
        )))
        .bind(username.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }

    async fn set_password_hash(
        &self,
        id: &UserId,
        password_hash: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(password_hash)
                .bind(at.unix_millis())
                .bind(id.as_str())
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_users(
        &self,
        after: Option<&Username>,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The column is COLLATE "C" already, so its unique index serves both the cursor and the
        // order; saying so here keeps the byte order even if the column's collation changed.
        let query = match after {
            Some(after) => sqlx::query(sql(format!(
                "SELECT {USER_COLUMNS} FROM users WHERE username COLLATE \"C\" > $1 \
                 ORDER BY username COLLATE \"C\" LIMIT $2"
            )))
            .bind(after.as_str()),
            None => sqlx::query(sql(format!(
                "SELECT {USER_COLUMNS} FROM users ORDER BY username COLLATE \"C\" LIMIT $1"
            ))),
        };
        query
            .bind(sql_limit(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?
            .iter()
            .map(user_from_row)
            .collect()
    }

    async fn disabled_user_ids(&self) -> Result<Vec<UserId>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM users WHERE disabled ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(|(id,)| UserId::from_stored(id))
            .collect())
    }

    async fn set_user_disabled(
        &self,
        id: &UserId,
        disabled: bool,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3")
            .bind(disabled)
            .bind(at.unix_millis())
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_user_roles(
        &self,
        id: &UserId,
        roles: &[String],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET roles = $1::jsonb, updated_at = $2 WHERE id = $3")
            .bind(serde_json::to_string(roles).map_err(json_error)?)
            .bind(at.unix_millis())
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }
}

/// Takes the expiry index up to `now`. `SKIP LOCKED`: sweeps running on several nodes at once
/// share the work instead of queueing on the same rows, and a session being touched right now is
/// left to the next sweep.
const SWEEP: &str = "DELETE FROM sessions WHERE handle IN \
     (SELECT handle FROM sessions WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 \
      FOR UPDATE SKIP LOCKED)";

/// Reads the per-user index. `IS DISTINCT FROM` rather than `<>`: with no session to keep the
/// bound value is NULL, and `handle IS DISTINCT FROM NULL` holds for every row.
const DELETE_OF_USER: &str =
    "DELETE FROM sessions WHERE user_id = $1 AND handle IS DISTINCT FROM $2";

#[async_trait]
impl SessionStore for PostgresStore {
    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (handle, user_id, secret_hash, csrf_token, created_at, \
             last_seen_at, expires_at, absolute_expires_at, user_agent, ip, data, data_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::json, $12)",
        )
        .bind(session.handle.as_str())
        .bind(session.user_id.as_str())
        .bind(session.secret_hash.as_bytes().as_slice())
        .bind(session.csrf_token.as_bytes().as_slice())
        .bind(session.created_at.unix_millis())
        .bind(session.last_seen_at.unix_millis())
        .bind(session.expires_at.unix_millis())
        .bind(session.absolute_expires_at.unix_millis())
        .bind(session.client.user_agent.as_deref())
        .bind(session.client.ip.as_deref())
        .bind(serde_json::to_string(&session.data).map_err(json_error)?)
        .bind(session.data_version)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn session_by_secret(
        &self,
        secret_hash: &TokenHash,
    ) -> Result<Option<Session>, StoreError> {
        sqlx::query(sql(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE secret_hash = $1"
        )))
        .bind(secret_hash.as_bytes().as_slice())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }

    async fn touch_session(
        &self,
        handle: &SessionHandle,
        last_seen_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE sessions SET last_seen_at = $1, expires_at = $2 WHERE handle = $3")
                .bind(last_seen_at.unix_millis())
                .bind(expires_at.unix_millis())
                .bind(handle.as_str())
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn replace_session_data(
        &self,
        handle: &SessionHandle,
        expected_version: i64,
        data: &Value,
    ) -> Result<bool, StoreError> {
        // One statement: a concurrent writer of the same row waits for this one to commit, then
        // re-checks the version against the row as it now is, and finds it moved on.
        let done = sqlx::query(
            "UPDATE sessions SET data = $1::json, data_version = data_version + 1 \
             WHERE handle = $2 AND data_version = $3",
        )
        .bind(serde_json::to_string(data).map_err(json_error)?)
        .bind(handle.as_str())
        .bind(expected_version)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_session(&self, handle: &SessionHandle) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE handle = $1")
            .bind(handle.as_str())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn sessions_of_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        sqlx::query(sql(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 \
             ORDER BY created_at, handle"
        )))
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?
        .iter()
        .map(session_from_row)
        .collect()
    }

    async fn delete_sessions_of_user(
        &self,
        user: &UserId,
        keep: Option<&SessionHandle>,
    ) -> Result<usize, StoreError> {
        // One statement, so a session cannot slip in between a read and the delete.
        let done = sqlx::query(DELETE_OF_USER)
            .bind(user.as_str())
            .bind(keep.map(SessionHandle::as_str))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(sql_count(done.rows_affected()))
    }

    async fn delete_expired_sessions(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let done = sqlx::query(SWEEP)
            .bind(now.unix_millis())
            .bind(sql_limit(limit))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(sql_count(done.rows_affected()))
    }
}

const KEY_COLUMNS: &str =
    "kid, algorithm, status, sealed_private, public_jwk, created_at, rotated_at, retired_at";

fn key_from_row(row: &PgRow) -> Result<StoredKey, StoreError> {
    let algorithm: String = column(row, "algorithm")?;
    let status: String = column(row, "status")?;
    Ok(StoredKey {
        kid: column(row, "kid")?,
        algorithm: SigningAlgorithm::parse(&algorithm)
            .ok_or_else(|| corrupt("key algorithm", format!("unknown algorithm {algorithm:?}")))?,
        status: KeyStatus::parse(&status)
            .ok_or_else(|| corrupt("key status", format!("unknown status {status:?}")))?,
        sealed_private: column(row, "sealed_private")?,
        public_jwk: column(row, "public_jwk")?,
        created_at: millis(row, "created_at")?,
        rotated_at: optional_millis(row, "rotated_at")?,
        retired_at: optional_millis(row, "retired_at")?,
    })
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn insert_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        sqlx::query(sql(format!(
            "INSERT INTO signing_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )))
        .bind(key.kid.as_str())
        .bind(key.algorithm.as_str())
        .bind(key.status.as_str())
        .bind(key.sealed_private.as_slice())
        .bind(key.public_jwk.as_deref())
        .bind(key.created_at.unix_millis())
        .bind(key.rotated_at.map(Timestamp::unix_millis))
        .bind(key.retired_at.map(Timestamp::unix_millis))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        sqlx::query(sql(format!(
            "SELECT {KEY_COLUMNS} FROM signing_keys ORDER BY created_at, kid"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?
        .iter()
        .map(key_from_row)
        .collect()
    }

    async fn mark_key_rotated(&self, kid: &str, at: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE signing_keys SET status = 'rotated', rotated_at = $1 \
             WHERE kid = $2 AND status = 'active'",
        )
        .bind(at.unix_millis())
        .bind(kid)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn mark_key_retired(&self, kid: &str, at: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE signing_keys SET status = 'retired', retired_at = $1 \
             WHERE kid = $2 AND status <> 'retired'",
        )
        .bind(at.unix_millis())
        .bind(kid)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }
}

/// Family columns, qualified so that they can be joined with `refresh_tokens t`; the two tables
/// share no column name, so rows are read by bare name either way.
const FAMILY_COLUMNS: &str = "f.id, f.user_id, f.model, f.created_at, f.last_used_at, \
     f.expires_at, f.absolute_expires_at, f.revoked_at, f.revoked_reason, f.user_agent, f.ip";

const TOKEN_COLUMNS: &str = "t.hash, t.family_id, t.issued_at, t.rotated_at";

fn family_from_row(row: &PgRow) -> Result<RefreshFamily, StoreError> {
    let model: String = column(row, "model")?;
    Ok(RefreshFamily {
        id: FamilyId::from_stored(column(row, "id")?),
        user_id: UserId::from_stored(column(row, "user_id")?),
        model: LoginModel::parse(&model)
            .ok_or_else(|| corrupt("family login model", format!("unknown model {model:?}")))?,
        created_at: millis(row, "created_at")?,
        last_used_at: millis(row, "last_used_at")?,
        expires_at: millis(row, "expires_at")?,
        absolute_expires_at: millis(row, "absolute_expires_at")?,
        revoked_at: optional_millis(row, "revoked_at")?,
        revoked_reason: column(row, "revoked_reason")?,
        client: ClientInfo {
            user_agent: column(row, "user_agent")?,
            ip: column(row, "ip")?,
        },
    })
}

fn refresh_token_from_row(row: &PgRow) -> Result<RefreshTokenRecord, StoreError> {
    Ok(RefreshTokenRecord {
        hash: token_hash(row, "hash", "refresh token hash")?,
        family_id: FamilyId::from_stored(column(row, "family_id")?),
        issued_at: millis(row, "issued_at")?,
        rotated_at: optional_millis(row, "rotated_at")?,
    })
}

async fn insert_refresh_token(
    tx: &mut Transaction<'static, Postgres>,
    token: &RefreshTokenRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, family_id, issued_at, rotated_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(token.hash.as_bytes().as_slice())
    .bind(token.family_id.as_str())
    .bind(token.issued_at.unix_millis())
    .bind(token.rotated_at.map(Timestamp::unix_millis))
    .execute(&mut **tx)
    .await
    .map_err(store_error)?;
    Ok(())
}

/// Reads `refresh_families_by_expiry`: the expression is the index's, exactly. `SKIP LOCKED` as
/// in the session sweep.
const FAMILY_SWEEP: &str = "DELETE FROM refresh_families WHERE id IN \
     (SELECT id FROM refresh_families WHERE LEAST(expires_at, absolute_expires_at) <= $1 \
      ORDER BY LEAST(expires_at, absolute_expires_at) LIMIT $2 FOR UPDATE SKIP LOCKED)";

#[async_trait]
impl RefreshStore for PostgresStore {
    async fn create_family(
        &self,
        family: &RefreshFamily,
        first: &RefreshTokenRecord,
    ) -> Result<(), StoreError> {
        if first.family_id != family.id {
            return Err(StoreError::Other(format!(
                "the first token of family {} names family {}",
                family.id, first.family_id
            )));
        }
        let mut tx = begin(&self.pool).await?;
        sqlx::query(
            "INSERT INTO refresh_families (id, user_id, model, created_at, last_used_at, \
             expires_at, absolute_expires_at, revoked_at, revoked_reason, user_agent, ip) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(family.id.as_str())
        .bind(family.user_id.as_str())
        .bind(family.model.as_str())
        .bind(family.created_at.unix_millis())
        .bind(family.last_used_at.unix_millis())
        .bind(family.expires_at.unix_millis())
        .bind(family.absolute_expires_at.unix_millis())
        .bind(family.revoked_at.map(Timestamp::unix_millis))
        .bind(family.revoked_reason.as_deref())
        .bind(family.client.user_agent.as_deref())
        .bind(family.client.ip.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        insert_refresh_token(&mut tx, first).await?;
        commit(tx).await
    }

    async fn refresh_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(RefreshTokenRecord, RefreshFamily)>, StoreError> {
        let Some(row) = sqlx::query(sql(format!(
            "SELECT {TOKEN_COLUMNS}, {FAMILY_COLUMNS} FROM refresh_tokens t \
             JOIN refresh_families f ON f.id = t.family_id WHERE t.hash = $1"
        )))
        .bind(hash.as_bytes().as_slice())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?
        else {
            return Ok(None);
        };
        Ok(Some((
            refresh_token_from_row(&row)?,
            family_from_row(&row)?,
        )))
    }

    async fn rotate_refresh_token(
        &self,
        old: &TokenHash,
        new: &RefreshTokenRecord,
        now: Timestamp,
        family_expires_at: Timestamp,
    ) -> Result<Rotation, StoreError> {
        // The conditional UPDATE locks the token's row: of concurrent callers one marks it, and
        // the others, waiting on the lock, re-check `rotated_at IS NULL` against the committed
        // row and find it marked.
        let mut tx = begin(&self.pool).await?;
        let rotated = sqlx::query(
            "UPDATE refresh_tokens SET rotated_at = $1 WHERE hash = $2 AND rotated_at IS NULL \
             RETURNING family_id",
        )
        .bind(now.unix_millis())
        .bind(old.as_bytes().as_slice())
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let Some(rotated) = rotated else {
            let row = sqlx::query("SELECT rotated_at FROM refresh_tokens WHERE hash = $1")
                .bind(old.as_bytes().as_slice())
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?;
            drop(tx);
            return match row {
                None => Ok(Rotation::Unknown),
                Some(row) => match optional_millis(&row, "rotated_at")? {
                    Some(at) => Ok(Rotation::AlreadyRotated { at }),
                    // Only a token inserted after the UPDATE looked, with this very hash.
                    None => Err(StoreError::Other(
                        "refresh token neither rotated nor rotatable".into(),
                    )),
                },
            };
        };
        let family_id = FamilyId::from_stored(column(&rotated, "family_id")?);
        if new.family_id != family_id {
            // Dropping the transaction rolls the rotation back.
            return Err(StoreError::Other(format!(
                "a token of family {family_id} cannot rotate into family {}",
                new.family_id
            )));
        }
        insert_refresh_token(&mut tx, new).await?;
        sqlx::query("UPDATE refresh_families SET last_used_at = $1, expires_at = $2 WHERE id = $3")
            .bind(now.unix_millis())
            .bind(family_expires_at.unix_millis())
            .bind(family_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        commit(tx).await?;
        Ok(Rotation::Rotated)
    }

    async fn add_refresh_token(
        &self,
        new: &RefreshTokenRecord,
        now: Timestamp,
        family_expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        // The family's row first: its lock keeps a revocation from slipping in before the insert.
        let mut tx = begin(&self.pool).await?;
        let moved = sqlx::query(
            "UPDATE refresh_families SET last_used_at = $1, expires_at = $2 \
             WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now.unix_millis())
        .bind(family_expires_at.unix_millis())
        .bind(new.family_id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        if moved.rows_affected() == 0 {
            return Ok(false);
        }
        insert_refresh_token(&mut tx, new).await?;
        commit(tx).await?;
        Ok(true)
    }

    async fn revoke_family(
        &self,
        id: &FamilyId,
        at: Timestamp,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE refresh_families SET revoked_at = $1, revoked_reason = $2 \
             WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(at.unix_millis())
        .bind(reason)
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn family(&self, id: &FamilyId) -> Result<Option<RefreshFamily>, StoreError> {
        sqlx::query(sql(format!(
            "SELECT {FAMILY_COLUMNS} FROM refresh_families f WHERE f.id = $1"
        )))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?
        .as_ref()
        .map(family_from_row)
        .transpose()
    }

    async fn families_of_user(&self, user: &UserId) -> Result<Vec<RefreshFamily>, StoreError> {
        sqlx::query(sql(format!(
            "SELECT {FAMILY_COLUMNS} FROM refresh_families f WHERE f.user_id = $1 \
             ORDER BY f.created_at, f.id"
        )))
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?
        .iter()
        .map(family_from_row)
        .collect()
    }

    async fn delete_expired_families(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        // Tokens go by the foreign key's cascade; `rows_affected` counts only the families.
        let done = sqlx::query(FAMILY_SWEEP)
            .bind(now.unix_millis())
            .bind(sql_limit(limit))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(sql_count(done.rows_affected()))
    }
}

const REVOKED_TOKEN: &str = "token";
const REVOKED_FAMILY: &str = "family";
const REVOKED_USER_BEFORE: &str = "user_before";

/// `(kind, subject, before)` as the `revocations` table keeps them.
fn revocation_columns(revoked: &Revoked) -> (&'static str, &str, Option<i64>) {
    match revoked {
        Revoked::Token { jti } => (REVOKED_TOKEN, jti.as_str(), None),
        Revoked::Family { id } => (REVOKED_FAMILY, id.as_str(), None),
        Revoked::UserBefore { user, before } => (
            REVOKED_USER_BEFORE,
            user.as_str(),
            Some(before.unix_millis()),
        ),
    }
}

fn revocation_from_row(row: &PgRow) -> Result<RevocationEntry, StoreError> {
    let kind: String = column(row, "kind")?;
    let subject: String = column(row, "subject")?;
    let before = optional_millis(row, "before")?;
    let revoked = match (kind.as_str(), before) {
        (REVOKED_TOKEN, None) => Revoked::Token { jti: subject },
        (REVOKED_FAMILY, None) => Revoked::Family {
            id: FamilyId::from_stored(subject),
        },
        (REVOKED_USER_BEFORE, Some(before)) => Revoked::UserBefore {
            user: UserId::from_stored(subject),
            before,
        },
        (kind, before) => {
            return Err(corrupt(
                "revocation",
                format!("kind {kind:?} with before {before:?}"),
            ));
        }
    };
    Ok(RevocationEntry {
        revoked,
        expires_at: millis(row, "expires_at")?,
    })
}

fn allowed_from_row(row: &PgRow) -> Result<AllowedToken, StoreError> {
    Ok(AllowedToken {
        jti: column(row, "jti")?,
        family_id: FamilyId::from_stored(column(row, "family_id")?),
        user_id: UserId::from_stored(column(row, "user_id")?),
        expires_at: millis(row, "expires_at")?,
    })
}

#[async_trait]
impl RevocationStore for PostgresStore {
    async fn add_revocation(&self, entry: &RevocationEntry) -> Result<(), StoreError> {
        let (kind, subject, before) = revocation_columns(&entry.revoked);
        // Recorded twice, an entry lasts as long as the later of the two asks. The conflict
        // target is `revocations_by_entry`'s expression, exactly.
        sqlx::query(
            "INSERT INTO revocations (kind, subject, before, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, subject, (COALESCE(before, 0))) \
             DO UPDATE SET expires_at = GREATEST(revocations.expires_at, EXCLUDED.expires_at)",
        )
        .bind(kind)
        .bind(subject)
        .bind(before)
        .bind(entry.expires_at.unix_millis())
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn revocations(&self, now: Timestamp) -> Result<Vec<RevocationEntry>, StoreError> {
        sqlx::query(
            "SELECT kind, subject, before, expires_at FROM revocations WHERE expires_at > $1 \
             ORDER BY expires_at, kind, subject, before",
        )
        .bind(now.unix_millis())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?
        .iter()
        .map(revocation_from_row)
        .collect()
    }

    async fn allow_token(&self, token: &AllowedToken) -> Result<(), StoreError> {
        // Recorded again, a jti takes the new record's place.
        sqlx::query(
            "INSERT INTO allowed_tokens (jti, family_id, user_id, expires_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (jti) DO UPDATE SET family_id = EXCLUDED.family_id, \
             user_id = EXCLUDED.user_id, expires_at = EXCLUDED.expires_at",
        )
        .bind(token.jti.as_str())
        .bind(token.family_id.as_str())
        .bind(token.user_id.as_str())
        .bind(token.expires_at.unix_millis())
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn allowed_tokens(&self, now: Timestamp) -> Result<Vec<AllowedToken>, StoreError> {
        sqlx::query(
            "SELECT jti, family_id, user_id, expires_at FROM allowed_tokens \
             WHERE expires_at > $1 ORDER BY expires_at, jti",
        )
        .bind(now.unix_millis())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?
        .iter()
        .map(allowed_from_row)
        .collect()
    }

    async fn disallow_token(&self, jti: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM allowed_tokens WHERE jti = $1")
            .bind(jti)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn disallow_family(&self, id: &FamilyId) -> Result<usize, StoreError> {
        let done = sqlx::query("DELETE FROM allowed_tokens WHERE family_id = $1")
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(sql_count(done.rows_affected()))
    }

    async fn disallow_user(&self, user: &UserId) -> Result<usize, StoreError> {
        let done = sqlx::query("DELETE FROM allowed_tokens WHERE user_id = $1")
            .bind(user.as_str())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(sql_count(done.rows_affected()))
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        // One statement, one snapshot, one round trip: both tables through their expiry indexes.
        let purged: i64 = sqlx::query_scalar(
            "WITH revoked AS (DELETE FROM revocations WHERE expires_at <= $1 RETURNING 1), \
             allowed AS (DELETE FROM allowed_tokens WHERE expires_at <= $1 RETURNING 1) \
             SELECT (SELECT count(*) FROM revoked) + (SELECT count(*) FROM allowed)",
        )
        .bind(now.unix_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(usize::try_from(purged).unwrap_or(0))
    }
}

const EVENT_COLUMNS: &str = "id, at, kind, user_id, detail::text AS detail";

fn event_from_row(row: &PgRow) -> Result<SecurityEvent, StoreError> {
    let kind: String = column(row, "kind")?;
    let detail: String = column(row, "detail")?;
    Ok(SecurityEvent {
        id: column(row, "id")?,
        at: millis(row, "at")?,
        kind: EventKind::parse(&kind)
            .ok_or_else(|| corrupt("event kind", format!("unknown kind {kind:?}")))?,
        user_id: column::<Option<String>>(row, "user_id")?.map(UserId::from_stored),
        detail: serde_json::from_str(&detail).map_err(|e| corrupt("event detail", e))?,
    })
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn record_event(&self, event: &NewEvent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO security_events (at, kind, user_id, detail) VALUES ($1, $2, $3, $4::json)",
        )
        .bind(event.at.unix_millis())
        .bind(event.kind.as_str())
        .bind(event.user_id.as_ref().map(UserId::as_str))
        .bind(serde_json::to_string(&event.detail).map_err(json_error)?)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn events(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<SecurityEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let query = match before {
            Some(before) => sqlx::query(sql(format!(
                "SELECT {EVENT_COLUMNS} FROM security_events WHERE id < $1 \
                 ORDER BY id DESC LIMIT $2"
            )))
            .bind(before),
            None => sqlx::query(sql(format!(
                "SELECT {EVENT_COLUMNS} FROM security_events ORDER BY id DESC LIMIT $1"
            ))),
        };
        query
            .bind(sql_limit(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?
            .iter()
            .map(event_from_row)
            .collect()
    }
}

#[async_trait]
impl HealthCheck for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
