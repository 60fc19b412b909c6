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
use sqlx::{Row, SqlSafeStr};
use tessera_core::store::{HealthCheck, SessionStore, UserStore};
use tessera_core::{
    ClientInfo, CsrfToken, Session, SessionHandle, StoreError, Timestamp, TokenHash, User, UserId,
    Username,
};

/// How long a statement waits for another connection's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL lets readers proceed beside the single writer; a few connections are plenty.
const MAX_CONNECTIONS: u32 = 8;

const USER_COLUMNS: &str = "id, username, password_hash, roles, disabled, created_at, updated_at";

/// Users and sessions in SQLite. Cloning is cheap and shares the connection pool.
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

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        "init".into(),
        MigrationType::Simple,
        include_str!("../migrations/sqlite/0001_init.sql").into_sql_str(),
        false,
    )])
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
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }
}

const SWEEP: &str = "DELETE FROM sessions WHERE rowid IN \
     (SELECT rowid FROM sessions WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)";

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
}
