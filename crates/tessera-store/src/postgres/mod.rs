//! The multi-node store: PostgreSQL through a connection pool, with LISTEN/NOTIFY as the change
//! feed that keeps every node's in-process copies exact.

mod feed;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Executor, Postgres, SqlSafeStr};
use tessera_core::{StoreError, Timestamp, TokenHash};

use crate::sql::{self, Dialect, StoreErrors};

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
    Migrator::with_migrations(vec![
        migration(
            1,
            "init",
            include_str!("../../migrations/postgres/0001_init.sql"),
        ),
        migration(
            2,
            "refresh generations",
            include_str!("../../migrations/postgres/0002_refresh_generations.sql"),
        ),
        migration(
            3,
            "user not before",
            include_str!("../../migrations/postgres/0003_user_not_before.sql"),
        ),
        migration(
            4,
            "email and mail",
            include_str!("../../migrations/postgres/0004_email_and_mail.sql"),
        ),
        migration(
            5,
            "dpop",
            include_str!("../../migrations/postgres/0005_dpop.sql"),
        ),
        migration(
            6,
            "second factor",
            include_str!("../../migrations/postgres/0006_second_factor.sql"),
        ),
        migration(
            7,
            "passkeys",
            include_str!("../../migrations/postgres/0007_passkeys.sql"),
        ),
    ])
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

impl StoreErrors for Postgres {
    fn store_error(e: sqlx::Error) -> StoreError {
        store_error(e)
    }
}

/// What PostgreSQL says differently from SQLite: JSON columns cast from and to text, byte order
/// for usernames spelled out, and sweeps that several nodes can run at once.
const SQL: Dialect = Dialect {
    user_columns: "id, username, password_hash, roles::text AS roles, disabled, created_at, \
         updated_at, not_before, email, email_verified",
    session_columns: "handle, user_id, secret_hash, csrf_token, created_at, last_seen_at, \
         expires_at, absolute_expires_at, user_agent, ip, data::text AS data, data_version, \
         auth_context",
    event_columns: "id, at, kind, user_id, detail::text AS detail",
    // The column is COLLATE "C" already, so its unique index serves both the cursor and the
    // order; saying so here keeps the byte order even if the column's collation changed.
    username_order: "username COLLATE \"C\"",
    insert_user: "INSERT INTO users (id, username, password_hash, roles, disabled, created_at, \
         updated_at, not_before, email, email_key, email_verified) \
         VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10, $11)",
    // NO KEY UPDATE: what an UPDATE of the row's other columns takes, so it queues the writers
    // of the user's codes without holding off inserts that merely reference the user (a new
    // session's foreign key).
    lock_user: "SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE",
    lock_code_owner: "SELECT u.id FROM users u JOIN account_codes c ON c.user_id = u.id \
         WHERE c.hash = $1 FOR NO KEY UPDATE OF u",
    // `SKIP LOCKED` as in the session sweep; a code being used right now is left to the next one.
    delete_expired_codes: "DELETE FROM account_codes WHERE hash IN \
         (SELECT hash FROM account_codes WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 \
          FOR UPDATE SKIP LOCKED)",
    // `SKIP LOCKED`: a mail another node is claiming right now is not waited for but passed
    // over, and one it claimed and committed no longer matches `next_attempt_at <= now` when
    // PostgreSQL checks the row again under its lock, so no two claims ever return one mail.
    claim_mail: "UPDATE mail_queue SET next_attempt_at = $2, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM mail_queue WHERE next_attempt_at <= $1 \
         ORDER BY next_attempt_at, created_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
         RETURNING id, user_id, sealed, created_at, not_after, attempts, next_attempt_at, \
         last_error",
    set_user_roles: "UPDATE users SET roles = $1::jsonb, updated_at = $2, \
         not_before = CASE WHEN not_before >= $2 THEN not_before + 1 ELSE $2 END WHERE id = $3",
    disabled_user_ids: "SELECT id FROM users WHERE disabled ORDER BY id",
    insert_session: "INSERT INTO sessions (handle, user_id, secret_hash, csrf_token, created_at, \
         last_seen_at, expires_at, absolute_expires_at, user_agent, ip, data, data_version, \
         auth_context) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::json, $12, $13)",
    replace_session_data: "UPDATE sessions SET data = $1::json, data_version = data_version + 1 \
         WHERE handle = $2 AND data_version = $3",
    // Reads the per-user index. `IS DISTINCT FROM` rather than `<>`: with no session to keep the
    // bound value is NULL, and `handle IS DISTINCT FROM NULL` holds for every row.
    delete_sessions_of_user: "DELETE FROM sessions WHERE user_id = $1 AND handle IS DISTINCT FROM $2",
    // Takes the expiry index up to `now`. `SKIP LOCKED`: sweeps running on several nodes at once
    // share the work instead of queueing on the same rows, and a session being touched right now
    // is left to the next sweep.
    delete_expired_sessions: "DELETE FROM sessions WHERE handle IN \
         (SELECT handle FROM sessions WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 \
          FOR UPDATE SKIP LOCKED)",
    // Reads `refresh_families_by_expiry`: the expression is the index's, exactly. `SKIP LOCKED`
    // as in the session sweep.
    delete_expired_families: "DELETE FROM refresh_families WHERE id IN \
         (SELECT id FROM refresh_families WHERE LEAST(expires_at, absolute_expires_at) <= $1 \
          ORDER BY LEAST(expires_at, absolute_expires_at) LIMIT $2 FOR UPDATE SKIP LOCKED)",
    // The conflict target is `revocations_by_entry`'s expression, exactly.
    add_revocation: "INSERT INTO revocations (kind, subject, before, expires_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (kind, subject, (COALESCE(before, 0))) \
         DO UPDATE SET expires_at = GREATEST(revocations.expires_at, EXCLUDED.expires_at)",
    insert_event: "INSERT INTO security_events (at, kind, user_id, detail) \
         VALUES ($1, $2, $3, $4::json)",
    update_event_detail: "UPDATE security_events SET detail = $1::json WHERE id = $2",
};

sql::impl_db_on_pool!(PostgresStore, Postgres, PgRow, &SQL, {
    async fn delete_expired_revocations(&self, now: Timestamp) -> Result<usize, StoreError> {
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
});

sql::impl_store_traits!(PostgresStore);

#[async_trait::async_trait]
impl tessera_core::ProofReplayStore for PostgresStore {
    async fn first_use(
        &self,
        key: &[u8; 32],
        expires_at: tessera_core::Timestamp,
        now: tessera_core::Timestamp,
    ) -> Result<bool, StoreError> {
        // One statement, atomic across nodes: a row is written when there was none, or when the
        // one there had expired; a live one is left alone, and nothing is written.
        let written = sql::Db::execute(
            self,
            "INSERT INTO dpop_proofs (key, expires_at) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE dpop_proofs.expires_at <= $3",
            &[key.as_slice().into(), expires_at.into(), now.into()],
        )
        .await?;
        Ok(written == 1)
    }

    async fn purge_expired_proofs(
        &self,
        now: tessera_core::Timestamp,
    ) -> Result<usize, StoreError> {
        let deleted = sql::Db::execute(
            self,
            "DELETE FROM dpop_proofs WHERE expires_at <= $1",
            &[now.into()],
        )
        .await?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }
}
