//! The embedded default: one SQLite file in WAL mode, nothing to install.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr, Sqlite, Transaction};
use tessera_core::store::{
    EventStore, HealthCheck, KeyStore, RefreshStore, RevocationStore, SessionStore, UserStore,
};
use tessera_core::{
    AllowedToken, ClientInfo, CsrfToken, EventKind, FamilyId, KeyStatus, LoginModel, NewEvent,
    RefreshFamily, RefreshTokenRecord, RevocationEntry, Revoked, Rotation, SecurityEvent, Session,
    SessionHandle, SigningAlgorithm, StoreError, StoredKey, Timestamp, TokenHash, User, UserId,
    Username,
};

/// How long a statement waits for another connection's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL lets readers proceed beside the single writer; a few connections are plenty.
const MAX_CONNECTIONS: u32 = 8;

const USER_COLUMNS: &str = "id, username, password_hash, roles, disabled, created_at, updated_at";

/// Every store in SQLite. Cloning is cheap and shares the connection pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and brings its schema up to date.
    ///
    /// A new file is created with mode 0600 on Unix before SQLite touches it, so it is never
    /// readable by others, not even for a moment; the mode of an existing file is left alone.
    /// Connections use WAL, `synchronous=NORMAL`, foreign keys and a 5 s busy timeout.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        create_private_file(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| open_error(path, e))?;
        let store = Self { pool };
        store.migrate().await?;
        tracing::debug!(path = %path.display(), "sqlite store opened");
        Ok(store)
    }

    /// A private in-memory database, for tests: one connection that is never recycled (the data
    /// lives exactly as long as it), so every query of this store sees the same database.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(store_error)?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Waits for in-flight queries and closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        migrator()
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Other(format!("sqlite migration failed: {e}")))
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
            include_str!("../migrations/sqlite/0001_init.sql"),
        ),
        migration(
            2,
            "tokens",
            include_str!("../migrations/sqlite/0002_tokens.sql"),
        ),
    ])
}

/// Creates `path` readable and writable by its owner only, unless it exists already.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

fn open_error(path: &Path, e: sqlx::Error) -> StoreError {
    match store_error(e) {
        StoreError::Unavailable(m) => {
            StoreError::Unavailable(format!("cannot open {}: {m}", path.display()))
        }
        StoreError::Other(m) => StoreError::Other(format!("cannot open {}: {m}", path.display())),
        conflict => conflict,
    }
}

/// SQLite's primary result codes for "another connection holds the lock" (after the busy timeout).
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

fn store_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        sqlx::Error::Database(db)
            if db
                .code()
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED)) =>
        {
            StoreError::Unavailable(format!("sqlite: {}", db.message()))
        }
        e @ (sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed) => StoreError::Unavailable(format!("sqlite: {e}")),
        e => StoreError::Other(format!("sqlite: {e}")),
    }
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("stored {what} does not decode: {detail}"))
}

fn user_from_row(row: &SqliteRow) -> Result<User, StoreError> {
    let roles: String = row.try_get("roles").map_err(store_error)?;
    Ok(User {
        id: UserId::from_stored(row.try_get("id").map_err(store_error)?),
        username: Username::from_stored(row.try_get("username").map_err(store_error)?),
        password_hash: row.try_get("password_hash").map_err(store_error)?,
        roles: serde_json::from_str(&roles).map_err(|e| corrupt("user roles", e))?,
        disabled: row.try_get("disabled").map_err(store_error)?,
        created_at: Timestamp::from_unix_millis(row.try_get("created_at").map_err(store_error)?),
        updated_at: Timestamp::from_unix_millis(row.try_get("updated_at").map_err(store_error)?),
    })
}

const SESSION_COLUMNS: &str = "handle, user_id, secret_hash, csrf_token, created_at, last_seen_at, \
     expires_at, absolute_expires_at, user_agent, ip, data, data_version";

fn session_from_row(row: &SqliteRow) -> Result<Session, StoreError> {
    let millis = |column: &str| -> Result<Timestamp, StoreError> {
        row.try_get(column)
            .map(Timestamp::from_unix_millis)
            .map_err(store_error)
    };
    let secret_hash: Vec<u8> = row.try_get("secret_hash").map_err(store_error)?;
    let csrf_token: Vec<u8> = row.try_get("csrf_token").map_err(store_error)?;
    let data: String = row.try_get("data").map_err(store_error)?;
    Ok(Session {
        handle: SessionHandle::from_stored(row.try_get("handle").map_err(store_error)?),
        user_id: UserId::from_stored(row.try_get("user_id").map_err(store_error)?),
        secret_hash: TokenHash::from_slice(&secret_hash)
            .ok_or_else(|| corrupt("session secret hash", "not 32 bytes"))?,
        csrf_token: <[u8; 32]>::try_from(csrf_token.as_slice())
            .map(CsrfToken::from_bytes)
            .map_err(|_| corrupt("session CSRF token", "not 32 bytes"))?,
        created_at: millis("created_at")?,
        last_seen_at: millis("last_seen_at")?,
        expires_at: millis("expires_at")?,
        absolute_expires_at: millis("absolute_expires_at")?,
        client: ClientInfo {
            user_agent: row.try_get("user_agent").map_err(store_error)?,
            ip: row.try_get("ip").map_err(store_error)?,
        },
        data: serde_json::from_str(&data).map_err(|e| corrupt("session data", e))?,
        data_version: row.try_get("data_version").map_err(store_error)?,
    })
}

fn json_error(e: serde_json::Error) -> StoreError {
    StoreError::Other(format!("cannot encode JSON: {e}"))
}

/// Statements are built from constants only; this marks them as such for sqlx.
fn sql(statement: String) -> impl SqlSafeStr {
    sqlx::AssertSqlSafe(statement)
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, roles, disabled, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
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
            "SELECT {USER_COLUMNS} FROM users WHERE id = ?"
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
            "SELECT {USER_COLUMNS} FROM users WHERE username = ?"
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
        let done = sqlx::query("UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?")
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
        // `username` is UNIQUE, so its index serves both the cursor and the order. The default
        // BINARY collation orders by bytes, as `str` does in the memory store.
        let query = match after {
            Some(after) => sqlx::query(sql(format!(
                "SELECT {USER_COLUMNS} FROM users WHERE username > ? ORDER BY username LIMIT ?"
            )))
            .bind(after.as_str()),
            None => sqlx::query(sql(format!(
                "SELECT {USER_COLUMNS} FROM users ORDER BY username LIMIT ?"
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
            sqlx::query_as("SELECT id FROM users WHERE disabled <> 0 ORDER BY id")
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
        let done = sqlx::query("UPDATE users SET disabled = ?, updated_at = ? WHERE id = ?")
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
        let done = sqlx::query("UPDATE users SET roles = ?, updated_at = ? WHERE id = ?")
            .bind(serde_json::to_string(roles).map_err(json_error)?)
            .bind(at.unix_millis())
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (handle, user_id, secret_hash, csrf_token, created_at, \
             last_seen_at, expires_at, absolute_expires_at, user_agent, ip, data, data_version) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE secret_hash = ?"
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
            sqlx::query("UPDATE sessions SET last_seen_at = ?, expires_at = ? WHERE handle = ?")
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
        // One statement: the version check and the write cannot be split by another writer.
        let done = sqlx::query(
            "UPDATE sessions SET data = ?, data_version = data_version + 1 \
             WHERE handle = ? AND data_version = ?",
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
        let done = sqlx::query("DELETE FROM sessions WHERE handle = ?")
            .bind(handle.as_str())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn sessions_of_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        sqlx::query(sql(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ? ORDER BY created_at, handle"
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
        // The subquery reads only the expiry index (it holds the rowid), so the sweep costs what
        // expired, not how many sessions exist.
        let done = sqlx::query(SWEEP)
            .bind(now.unix_millis())
            .bind(sql_limit(limit))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(sql_count(done.rows_affected()))
    }
}

const SWEEP: &str = "DELETE FROM sessions WHERE rowid IN \
     (SELECT rowid FROM sessions WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)";

/// Reads the per-user index. `IS NOT` rather than `<>`: with no session to keep the bound value is
/// NULL, and `handle IS NOT NULL` holds for every row (`handle <> NULL` for none).
const DELETE_OF_USER: &str = "DELETE FROM sessions WHERE user_id = ? AND handle IS NOT ?";

/// `usize` limits as SQLite wants them: anything beyond `i64::MAX` means "no limit" anyway.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn sql_count(rows: u64) -> usize {
    usize::try_from(rows).unwrap_or(usize::MAX)
}

/// A write transaction. sqlx's `begin` is SQLite's deferred `BEGIN`: every transaction here writes
/// before it reads, so it takes the write lock up front (waiting out the busy timeout) and never
/// has to upgrade a read snapshot, which SQLite may refuse with `SQLITE_BUSY`.
async fn begin(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, StoreError> {
    pool.begin().await.map_err(store_error)
}

async fn commit(tx: Transaction<'static, Sqlite>) -> Result<(), StoreError> {
    tx.commit().await.map_err(store_error)
}

fn millis(row: &SqliteRow, column: &str) -> Result<Timestamp, StoreError> {
    row.try_get(column)
        .map(Timestamp::from_unix_millis)
        .map_err(store_error)
}

fn optional_millis(row: &SqliteRow, column: &str) -> Result<Option<Timestamp>, StoreError> {
    row.try_get::<Option<i64>, _>(column)
        .map(|ms| ms.map(Timestamp::from_unix_millis))
        .map_err(store_error)
}

fn token_hash(row: &SqliteRow, column: &str, what: &str) -> Result<TokenHash, StoreError> {
    let bytes: Vec<u8> = row.try_get(column).map_err(store_error)?;
    TokenHash::from_slice(&bytes).ok_or_else(|| corrupt(what, "not 32 bytes"))
}

const KEY_COLUMNS: &str =
    "kid, algorithm, status, sealed_private, public_jwk, created_at, rotated_at, retired_at";

fn key_from_row(row: &SqliteRow) -> Result<StoredKey, StoreError> {
    let algorithm: String = row.try_get("algorithm").map_err(store_error)?;
    let status: String = row.try_get("status").map_err(store_error)?;
    Ok(StoredKey {
        kid: row.try_get("kid").map_err(store_error)?,
        algorithm: SigningAlgorithm::parse(&algorithm)
            .ok_or_else(|| corrupt("key algorithm", format!("unknown algorithm {algorithm:?}")))?,
        status: KeyStatus::parse(&status)
            .ok_or_else(|| corrupt("key status", format!("unknown status {status:?}")))?,
        sealed_private: row.try_get("sealed_private").map_err(store_error)?,
        public_jwk: row.try_get("public_jwk").map_err(store_error)?,
        created_at: millis(row, "created_at")?,
        rotated_at: optional_millis(row, "rotated_at")?,
        retired_at: optional_millis(row, "retired_at")?,
    })
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        sqlx::query(sql(format!(
            "INSERT INTO signing_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
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
            "UPDATE signing_keys SET status = 'rotated', rotated_at = ? \
             WHERE kid = ? AND status = 'active'",
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
            "UPDATE signing_keys SET status = 'retired', retired_at = ? \
             WHERE kid = ? AND status <> 'retired'",
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

fn family_from_row(row: &SqliteRow) -> Result<RefreshFamily, StoreError> {
    let model: String = row.try_get("model").map_err(store_error)?;
    Ok(RefreshFamily {
        id: FamilyId::from_stored(row.try_get("id").map_err(store_error)?),
        user_id: UserId::from_stored(row.try_get("user_id").map_err(store_error)?),
        model: LoginModel::parse(&model)
            .ok_or_else(|| corrupt("family login model", format!("unknown model {model:?}")))?,
        created_at: millis(row, "created_at")?,
        last_used_at: millis(row, "last_used_at")?,
        expires_at: millis(row, "expires_at")?,
        absolute_expires_at: millis(row, "absolute_expires_at")?,
        revoked_at: optional_millis(row, "revoked_at")?,
        revoked_reason: row.try_get("revoked_reason").map_err(store_error)?,
        client: ClientInfo {
            user_agent: row.try_get("user_agent").map_err(store_error)?,
            ip: row.try_get("ip").map_err(store_error)?,
        },
    })
}

fn refresh_token_from_row(row: &SqliteRow) -> Result<RefreshTokenRecord, StoreError> {
    Ok(RefreshTokenRecord {
        hash: token_hash(row, "hash", "refresh token hash")?,
        family_id: FamilyId::from_stored(row.try_get("family_id").map_err(store_error)?),
        issued_at: millis(row, "issued_at")?,
        rotated_at: optional_millis(row, "rotated_at")?,
    })
}

async fn insert_refresh_token(
    tx: &mut Transaction<'static, Sqlite>,
    token: &RefreshTokenRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, family_id, issued_at, rotated_at) VALUES (?, ?, ?, ?)",
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

#[async_trait]
impl RefreshStore for SqliteStore {
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
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
             JOIN refresh_families f ON f.id = t.family_id WHERE t.hash = ?"
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
        // Write first: the conditional UPDATE takes the write lock, so of concurrent callers one
        // marks the token and the others, serialized behind it, find it marked.
        let mut tx = begin(&self.pool).await?;
        let rotated = sqlx::query(
            "UPDATE refresh_tokens SET rotated_at = ? WHERE hash = ? AND rotated_at IS NULL \
             RETURNING family_id",
        )
        .bind(now.unix_millis())
        .bind(old.as_bytes().as_slice())
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let Some(rotated) = rotated else {
            let row = sqlx::query("SELECT rotated_at FROM refresh_tokens WHERE hash = ?")
                .bind(old.as_bytes().as_slice())
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?;
            drop(tx);
            return match row {
                None => Ok(Rotation::Unknown),
                Some(row) => match optional_millis(&row, "rotated_at")? {
                    Some(at) => Ok(Rotation::AlreadyRotated { at }),
                    // We hold the write lock: nobody can have cleared it in between.
                    None => Err(StoreError::Other(
                        "refresh token neither rotated nor rotatable".into(),
                    )),
                },
            };
        };
        let family_id = FamilyId::from_stored(rotated.try_get("family_id").map_err(store_error)?);
        if new.family_id != family_id {
            // Dropping the transaction rolls the rotation back.
            return Err(StoreError::Other(format!(
                "a token of family {family_id} cannot rotate into family {}",
                new.family_id
            )));
        }
        insert_refresh_token(&mut tx, new).await?;
        sqlx::query("UPDATE refresh_families SET last_used_at = ?, expires_at = ? WHERE id = ?")
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
        let mut tx = begin(&self.pool).await?;
        let moved = sqlx::query(
            "UPDATE refresh_families SET last_used_at = ?, expires_at = ? \
             WHERE id = ? AND revoked_at IS NULL",
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
            "UPDATE refresh_families SET revoked_at = ?, revoked_reason = ? \
             WHERE id = ? AND revoked_at IS NULL",
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
            "SELECT {FAMILY_COLUMNS} FROM refresh_families f WHERE f.id = ?"
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
            "SELECT {FAMILY_COLUMNS} FROM refresh_families f WHERE f.user_id = ? \
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

/// The expression must match `refresh_families_by_expiry` exactly for SQLite to use the index.
const FAMILY_SWEEP: &str = "DELETE FROM refresh_families WHERE rowid IN \
     (SELECT rowid FROM refresh_families WHERE min(expires_at, absolute_expires_at) <= ? \
      ORDER BY min(expires_at, absolute_expires_at) LIMIT ?)";

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

fn revocation_from_row(row: &SqliteRow) -> Result<RevocationEntry, StoreError> {
    let kind: String = row.try_get("kind").map_err(store_error)?;
    let subject: String = row.try_get("subject").map_err(store_error)?;
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

fn allowed_from_row(row: &SqliteRow) -> Result<AllowedToken, StoreError> {
    Ok(AllowedToken {
        jti: row.try_get("jti").map_err(store_error)?,
        family_id: FamilyId::from_stored(row.try_get("family_id").map_err(store_error)?),
        user_id: UserId::from_stored(row.try_get("user_id").map_err(store_error)?),
        expires_at: millis(row, "expires_at")?,
    })
}

#[async_trait]
impl RevocationStore for SqliteStore {
    async fn add_revocation(&self, entry: &RevocationEntry) -> Result<(), StoreError> {
        let (kind, subject, before) = revocation_columns(&entry.revoked);
        // Recorded twice, an entry lasts as long as the later of the two asks.
        sqlx::query(
            "INSERT INTO revocations (kind, subject, before, expires_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (kind, subject, ifnull(before, 0)) \
             DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
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
            "SELECT kind, subject, before, expires_at FROM revocations WHERE expires_at > ? \
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
            "INSERT INTO allowed_tokens (jti, family_id, user_id, expires_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (jti) DO UPDATE SET family_id = excluded.family_id, \
             user_id = excluded.user_id, expires_at = excluded.expires_at",
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
            "SELECT jti, family_id, user_id, expires_at FROM allowed_tokens WHERE expires_at > ? \
             ORDER BY expires_at, jti",
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
        let done = sqlx::query("DELETE FROM allowed_tokens WHERE jti = ?")
            .bind(jti)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn disallow_family(&self, id: &FamilyId) -> Result<usize, StoreError> {
        let done = sqlx::query("DELETE FROM allowed_tokens WHERE family_id = ?")
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(sql_count(done.rows_affected()))
    }

    async fn disallow_user(&self, user: &UserId) -> Result<usize, StoreError> {
        let done = sqlx::query("DELETE FROM allowed_tokens WHERE user_id = ?")
            .bind(user.as_str())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(sql_count(done.rows_affected()))
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut tx = begin(&self.pool).await?;
        let revocations = sqlx::query("DELETE FROM revocations WHERE expires_at <= ?")
            .bind(now.unix_millis())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        let allowed = sqlx::query("DELETE FROM allowed_tokens WHERE expires_at <= ?")
            .bind(now.unix_millis())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        commit(tx).await?;
        Ok(sql_count(revocations.rows_affected())
            .saturating_add(sql_count(allowed.rows_affected())))
    }
}

const EVENT_COLUMNS: &str = "id, at, kind, user_id, detail";

fn event_from_row(row: &SqliteRow) -> Result<SecurityEvent, StoreError> {
    let kind: String = row.try_get("kind").map_err(store_error)?;
    let detail: String = row.try_get("detail").map_err(store_error)?;
    Ok(SecurityEvent {
        id: row.try_get("id").map_err(store_error)?,
        at: millis(row, "at")?,
        kind: EventKind::parse(&kind)
            .ok_or_else(|| corrupt("event kind", format!("unknown kind {kind:?}")))?,
        user_id: row
            .try_get::<Option<String>, _>("user_id")
            .map_err(store_error)?
            .map(UserId::from_stored),
        detail: serde_json::from_str(&detail).map_err(|e| corrupt("event detail", e))?,
    })
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn record_event(&self, event: &NewEvent) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO security_events (at, kind, user_id, detail) VALUES (?, ?, ?, ?)")
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
                "SELECT {EVENT_COLUMNS} FROM security_events WHERE id < ? ORDER BY id DESC LIMIT ?"
            )))
            .bind(before),
            None => sqlx::query(sql(format!(
                "SELECT {EVENT_COLUMNS} FROM security_events ORDER BY id DESC LIMIT ?"
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
impl HealthCheck for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store_with_user() -> (SqliteStore, UserId) {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let id = UserId::generate().unwrap();
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, roles, disabled, created_at, updated_at) \
             VALUES (?, 'mallory', 'x', '[]', 0, 0, 0)",
        )
        .bind(id.as_str())
        .execute(&store.pool)
        .await
        .unwrap();
        (store, id)
    }

    #[tokio::test]
    async fn the_sweep_reads_the_expiry_index() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let plan: Vec<String> = sqlx::query(sql(format!("EXPLAIN QUERY PLAN {SWEEP}")))
            .bind(0_i64)
            .bind(10_i64)
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<String, _>("detail").unwrap())
            .collect();
        assert!(
            plan.iter().any(|step| step.contains("sessions_by_expiry")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN sessions")),
            "{plan:?}"
        );
    }

    async fn plan(store: &SqliteStore, statement: &str, binds: &[&str]) -> Vec<String> {
        let statement = format!("EXPLAIN QUERY PLAN {statement}");
        let mut query = sqlx::query(sql(statement));
        for bind in binds {
            query = query.bind(*bind);
        }
        query
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<String, _>("detail").unwrap())
            .collect()
    }

    #[tokio::test]
    async fn deleting_a_users_sessions_reads_the_user_index() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let plan = plan(&store, DELETE_OF_USER, &["usr_x", "ses_x"]).await;
        assert!(
            plan.iter().any(|step| step.contains("sessions_by_user")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN sessions")),
            "{plan:?}"
        );
    }

    #[tokio::test]
    async fn listing_users_reads_the_username_index() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let plan = plan(
            &store,
            &format!(
                "SELECT {USER_COLUMNS} FROM users WHERE username > ? ORDER BY username LIMIT 10"
            ),
            &["alice"],
        )
        .await;
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "no sort on read: {plan:?}"
        );
        assert!(!plan.iter().any(|step| step == "SCAN users"), "{plan:?}");
    }

    #[tokio::test]
    async fn bad_stored_user_data_is_an_error_not_a_panic() {
        let (store, id) = store_with_user().await;
        sqlx::query("UPDATE users SET roles = 'not json' WHERE id = ?")
            .bind(id.as_str())
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(matches!(
            store.user_by_id(&id).await,
            Err(StoreError::Other(_))
        ));
    }

    #[tokio::test]
    async fn bad_stored_session_data_is_an_error_not_a_panic() {
        let (store, user) = store_with_user().await;
        let secret = TokenHash::of(b"secret");
        sqlx::query(
            "INSERT INTO sessions (handle, user_id, secret_hash, csrf_token, created_at, \
             last_seen_at, expires_at, absolute_expires_at, data, data_version) \
             VALUES ('ses_x', ?, ?, zeroblob(32), 0, 0, 0, 0, '{\"truncated\":', 0)",
        )
        .bind(user.as_str())
        .bind(secret.as_bytes().as_slice())
        .execute(&store.pool)
        .await
        .unwrap();
        assert!(matches!(
            store.session_by_secret(&secret).await,
            Err(StoreError::Other(_))
        ));
        assert!(matches!(
            store.sessions_of_user(&user).await,
            Err(StoreError::Other(_))
        ));
    }

    #[tokio::test]
    async fn a_closed_pool_is_unavailable() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store.close().await;
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
    }

    /// A directory under the system temp dir, removed on drop (also when a test fails).
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let path = std::env::temp_dir().join(format!(
                "tessera-store-unit-{name}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn a_file_database_uses_wal() {
        let dir = TempDir::new("wal");
        let store = SqliteStore::open(&dir.0.join("tessera.db")).await.unwrap();
        // Every pooled connection reports the mode: ask more than once.
        for _ in 0..3 {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&store.pool)
                .await
                .unwrap();
            assert_eq!(mode, "wal");
        }
        store.close().await;
    }

    #[tokio::test]
    async fn a_version_1_database_is_upgraded() {
        let dir = TempDir::new("upgrade");
        let path = dir.0.join("tessera.db");
        let (store, user) = {
            let store = SqliteStore::open(&path).await.unwrap();
            // Back to the schema as released with version 1, with a user in it.
            for table in [
                "security_events",
                "allowed_tokens",
                "revocations",
                "refresh_tokens",
                "refresh_families",
                "signing_keys",
            ] {
                sqlx::query(sql(format!("DROP TABLE {table}")))
                    .execute(&store.pool)
                    .await
                    .unwrap();
            }
            sqlx::query("DELETE FROM _sqlx_migrations WHERE version > 1")
                .execute(&store.pool)
                .await
                .unwrap();
            let user = UserId::generate().unwrap();
            sqlx::query(
                "INSERT INTO users (id, username, password_hash, roles, disabled, created_at, \
                 updated_at) VALUES (?, 'mallory', 'x', '[]', 0, 0, 0)",
            )
            .bind(user.as_str())
            .execute(&store.pool)
            .await
            .unwrap();
            store.close().await;
            (SqliteStore::open(&path).await.unwrap(), user)
        };
        let family = RefreshFamily {
            id: FamilyId::generate().unwrap(),
            user_id: user.clone(),
            model: LoginModel::Token,
            created_at: Timestamp::from_unix_millis(0),
            last_used_at: Timestamp::from_unix_millis(0),
            expires_at: Timestamp::from_unix_millis(10),
            absolute_expires_at: Timestamp::from_unix_millis(20),
            revoked_at: None,
            revoked_reason: None,
            client: ClientInfo::default(),
        };
        let first = RefreshTokenRecord {
            hash: TokenHash::of(b"first"),
            family_id: family.id.clone(),
            issued_at: Timestamp::from_unix_millis(0),
            rotated_at: None,
        };
        store.create_family(&family, &first).await.unwrap();
        assert_eq!(store.families_of_user(&user).await.unwrap(), vec![family]);
        store.close().await;
    }

    #[tokio::test]
    async fn the_family_sweep_reads_the_expiry_index() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let plan: Vec<String> = sqlx::query(sql(format!("EXPLAIN QUERY PLAN {FAMILY_SWEEP}")))
            .bind(0_i64)
            .bind(10_i64)
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<String, _>("detail").unwrap())
            .collect();
        assert!(
            plan.iter()
                .any(|step| step.contains("refresh_families_by_expiry")),
            "{plan:?}"
        );
        assert!(
            !plan
                .iter()
                .any(|step| step.starts_with("SCAN refresh_families")),
            "{plan:?}"
        );
    }

    /// Lets a test write rows the schema's CHECKs would refuse, as a damaged or hand-edited
    /// database might hold. The in-memory store has one connection, so the pragma sticks.
    async fn ignore_checks(store: &SqliteStore) {
        sqlx::query("PRAGMA ignore_check_constraints = ON")
            .execute(&store.pool)
            .await
            .unwrap();
    }

    async fn exec(store: &SqliteStore, statement: &str) {
        sqlx::query(sql(statement.to_owned()))
            .execute(&store.pool)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn bad_stored_keys_are_an_error_not_a_panic() {
        for row in [
            "('k1', 'none', 'active', x'00', NULL, 0, NULL, NULL)",
            "('k2', 'EdDSA', 'lost', x'00', NULL, 0, NULL, NULL)",
        ] {
            let store = SqliteStore::open_in_memory().await.unwrap();
            ignore_checks(&store).await;
            exec(
                &store,
                &format!("INSERT INTO signing_keys ({KEY_COLUMNS}) VALUES {row}"),
            )
            .await;
            assert!(
                matches!(store.keys().await, Err(StoreError::Other(_))),
                "{row}"
            );
        }
    }

    #[tokio::test]
    async fn bad_stored_families_are_an_error_not_a_panic() {
        let (store, user) = store_with_user().await;
        let hash = TokenHash::of(b"token");
        sqlx::query(
            "INSERT INTO refresh_families (id, user_id, model, created_at, last_used_at, \
             expires_at, absolute_expires_at) VALUES ('fam_x', ?, 'carrier-pigeon', 0, 0, 0, 0)",
        )
        .bind(user.as_str())
        .execute(&store.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, family_id, issued_at) VALUES (?, 'fam_x', 0)",
        )
        .bind(hash.as_bytes().as_slice())
        .execute(&store.pool)
        .await
        .unwrap();
        let id = FamilyId::from_stored("fam_x".into());
        assert!(matches!(store.family(&id).await, Err(StoreError::Other(_))));
        assert!(matches!(
            store.families_of_user(&user).await,
            Err(StoreError::Other(_))
        ));
        assert!(matches!(
            store.refresh_token(&hash).await,
            Err(StoreError::Other(_))
        ));
    }

    #[tokio::test]
    async fn a_bad_stored_token_hash_is_an_error_not_a_panic() {
        let (store, user) = store_with_user().await;
        ignore_checks(&store).await;
        sqlx::query(
            "INSERT INTO refresh_families (id, user_id, model, created_at, last_used_at, \
             expires_at, absolute_expires_at) VALUES ('fam_x', ?, 'token', 0, 0, 0, 0)",
        )
        .bind(user.as_str())
        .execute(&store.pool)
        .await
        .unwrap();
        exec(
            &store,
            "INSERT INTO refresh_tokens (hash, family_id, issued_at) \
             VALUES (zeroblob(31), 'fam_x', 0)",
        )
        .await;
        // No lookup can find a 31-byte hash, so read the row directly.
        let row = sqlx::query(sql(format!("SELECT {TOKEN_COLUMNS} FROM refresh_tokens t")))
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert!(matches!(
            refresh_token_from_row(&row),
            Err(StoreError::Other(_))
        ));
    }

    #[tokio::test]
    async fn bad_stored_revocations_are_an_error_not_a_panic() {
        for row in [
            "('mystery', 'x', NULL, 10)",
            "('user_before', 'usr_x', NULL, 10)",
            "('token', 'jti', 5, 10)",
        ] {
            let store = SqliteStore::open_in_memory().await.unwrap();
            ignore_checks(&store).await;
            exec(
                &store,
                &format!(
                    "INSERT INTO revocations (kind, subject, before, expires_at) VALUES {row}"
                ),
            )
            .await;
            assert!(
                matches!(
                    store.revocations(Timestamp::from_unix_millis(0)).await,
                    Err(StoreError::Other(_))
                ),
                "{row}"
            );
        }
    }

    #[tokio::test]
    async fn bad_stored_events_are_an_error_not_a_panic() {
        for row in [
            "(0, 'exploded', NULL, '{}')",
            "(0, 'logout', NULL, '{\"truncated\":')",
        ] {
            let store = SqliteStore::open_in_memory().await.unwrap();
            exec(
                &store,
                &format!("INSERT INTO security_events (at, kind, user_id, detail) VALUES {row}"),
            )
            .await;
            assert!(
                matches!(store.events(None, 10).await, Err(StoreError::Other(_))),
                "{row}"
            );
        }
    }

    #[tokio::test]
    async fn event_ids_are_never_reused() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let event = NewEvent {
            at: Timestamp::from_unix_millis(0),
            kind: EventKind::Logout,
            user_id: None,
            detail: serde_json::json!({}),
        };
        store.record_event(&event).await.unwrap();
        store.record_event(&event).await.unwrap();
        let newest = store.events(None, 1).await.unwrap()[0].id;
        exec(&store, "DELETE FROM security_events").await;
        store.record_event(&event).await.unwrap();
        assert!(
            store.events(None, 1).await.unwrap()[0].id > newest,
            "a paging cursor must never see an id twice"
        );
    }
}
