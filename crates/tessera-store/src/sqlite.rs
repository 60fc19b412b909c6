//! The embedded default: one SQLite file in WAL mode, nothing to install. The processes that
//! share the file hear each other's changes through a table in it (`change_feed`).

mod feed;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{SqlSafeStr, Sqlite};
use tessera_core::{StoreError, Timestamp};

use crate::sql::{self, Dialect, StoreErrors, Tx, sql_count};

/// How long a statement waits for another connection's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL lets readers proceed beside the single writer; a few connections are plenty.
const MAX_CONNECTIONS: u32 = 8;

/// Every store in SQLite, and the change feed between the processes that share the file.
/// Cloning is cheap and shares the connection pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Wakes this process's feed subscriptions when it publishes.
    feed: Arc<feed::FeedWake>,
    /// DPoP proofs seen lately: in memory, as a SQLite server is one node (a proof is checked
    /// once per request, and a disk write per request would cost more than the rest of it).
    proofs: Arc<tessera_core::token::dpop::SeenProofs>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and brings its schema up to date.
    ///
    /// A new file is created with mode 0600 on Unix before SQLite touches it, so it is never
    /// readable by others, not even for a moment; the mode of an existing file is left alone.
    /// Connections use WAL, `synchronous=NORMAL`, foreign keys and a 5 s busy timeout.
    ///
    /// Fails with a [`StoreError`] when the file cannot be created or opened, or when its schema
    /// cannot be brought up to date (it holds migrations this build does not know, or one that
    /// was edited after it was applied).
    ///
    /// ```
    /// use tessera_core::{HealthCheck, UserStore, Username};
    /// use tessera_store::SqliteStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("tessera.db");
    /// let store = SqliteStore::open(&path).await?;
    /// store.ping().await?;
    /// assert_eq!(store.user_by_username(&Username::parse("alice")?).await?, None);
    /// store.close().await;
    ///
    /// #[cfg(unix)]
    /// {
    ///     use std::os::unix::fs::PermissionsExt;
    ///     assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
    /// }
    /// # Ok(())
    /// # }
    /// ```
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
        let store = Self {
            pool,
            feed: Arc::default(),
            proofs: Arc::default(),
        };
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
        let store = Self {
            pool,
            feed: Arc::default(),
            proofs: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Waits for in-flight queries and closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Writes a consistent copy of the whole database to `target` (`VACUUM INTO`), while other
    /// connections and processes go on reading and writing. `target` must not exist: it is
    /// created readable and writable by its owner only, and removed again if the copy fails.
    ///
    /// ```
    /// use tessera_core::{Timestamp, User, UserId, UserStore, Username};
    /// use tessera_store::SqliteStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let store = SqliteStore::open(&dir.path().join("tessera.db")).await?;
    /// let now = Timestamp::from_unix_millis(1_700_000_000_000);
    /// let alice = User {
    ///     id: UserId::generate()?,
    ///     username: Username::parse("alice")?,
    ///     password_hash: "$argon2id$v=19$m=19456,t=2,p=1$…".into(),
    ///     roles: Vec::new(),
    ///     disabled: false,
    ///     created_at: now,
    ///     updated_at: now,
    ///     not_before: now,
    ///     email: None,
    /// };
    /// store.create_user(&alice).await?;
    ///
    /// let copy = dir.path().join("backup.db");
    /// store.backup_into(&copy).await?;
    /// // The target must not exist: a second backup to it is refused, the first left intact.
    /// assert!(store.backup_into(&copy).await.is_err());
    ///
    /// let restored = SqliteStore::open(&copy).await?;
    /// assert_eq!(restored.user_by_id(&alice.id).await?, Some(alice));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn backup_into(&self, target: &Path) -> Result<(), StoreError> {
        let name = target.to_str().ok_or_else(|| {
            StoreError::Other(format!("{} is not a UTF-8 path", target.display()))
        })?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options
            .open(target)
            .map_err(|e| StoreError::Other(format!("cannot create {}: {e}", target.display())))?;
        let copied = async {
            // SQLite writes into an empty file as into a new one.
            sqlx::query("VACUUM INTO $1")
                .bind(name)
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
            // VACUUM INTO does not sync what it wrote.
            std::fs::File::open(target)
                .and_then(|f| f.sync_all())
                .map_err(|e| StoreError::Other(format!("cannot sync {}: {e}", target.display())))
        }
        .await;
        if copied.is_err() {
            let _ = std::fs::remove_file(target);
        }
        copied
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
        migration(
            3,
            "refresh generations",
            include_str!("../migrations/sqlite/0003_refresh_generations.sql"),
        ),
        migration(
            4,
            "user not before",
            include_str!("../migrations/sqlite/0004_user_not_before.sql"),
        ),
        migration(
            5,
            "change feed",
            include_str!("../migrations/sqlite/0005_change_feed.sql"),
        ),
        migration(
            6,
            "email and mail",
            include_str!("../migrations/sqlite/0006_email_and_mail.sql"),
        ),
        migration(
            7,
            "dpop",
            include_str!("../migrations/sqlite/0007_dpop.sql"),
        ),
        migration(
            8,
            "second factor",
            include_str!("../migrations/sqlite/0008_second_factor.sql"),
        ),
        migration(
            9,
            "passkeys",
            include_str!("../migrations/sqlite/0009_passkeys.sql"),
        ),
        migration(
            10,
            "single uses",
            include_str!("../migrations/sqlite/0010_single_uses.sql"),
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

impl StoreErrors for Sqlite {
    fn store_error(e: sqlx::Error) -> StoreError {
        store_error(e)
    }
}

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

/// What SQLite says differently from PostgreSQL.
const SQL: Dialect = Dialect {
    user_columns: "id, username, password_hash, roles, disabled, created_at, updated_at, \
         not_before, email, email_verified",
    session_columns: "handle, user_id, secret_hash, csrf_token, created_at, last_seen_at, \
         expires_at, absolute_expires_at, user_agent, ip, data, data_version, auth_context",
    event_columns: "id, at, kind, user_id, detail",
    // The default BINARY collation orders by bytes, and `username` is UNIQUE, so its index
    // serves both the cursor and the order.
    username_order: "username",
    insert_user: "INSERT INTO users (id, username, password_hash, roles, disabled, created_at, \
         updated_at, not_before, email, email_key, email_verified) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    // SQLite locks the whole database, not rows: any write takes the write lock, and one that
    // changes nothing is enough.
    lock_user: "UPDATE users SET email_verified = email_verified WHERE id = $1 RETURNING id",
    lock_code_owner: "UPDATE users SET email_verified = email_verified \
         WHERE id = (SELECT user_id FROM account_codes WHERE hash = $1) RETURNING id",
    // The subquery reads only the expiry index, as in the session sweep.
    delete_expired_codes: "DELETE FROM account_codes WHERE rowid IN \
         (SELECT rowid FROM account_codes WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)",
    // One statement under the write lock: no other claim runs between the choice and the lease.
    claim_mail: "UPDATE mail_queue SET next_attempt_at = $2, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM mail_queue WHERE next_attempt_at <= $1 \
         ORDER BY next_attempt_at, created_at, id LIMIT $3) \
         RETURNING id, user_id, sealed, created_at, not_after, attempts, next_attempt_at, \
         last_error",
    set_user_roles: "UPDATE users SET roles = $1, updated_at = $2, \
         not_before = CASE WHEN not_before >= $2 THEN not_before + 1 ELSE $2 END WHERE id = $3",
    disabled_user_ids: "SELECT id FROM users WHERE disabled <> 0 ORDER BY id",
    insert_session: "INSERT INTO sessions (handle, user_id, secret_hash, csrf_token, created_at, \
         last_seen_at, expires_at, absolute_expires_at, user_agent, ip, data, data_version, \
         auth_context) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    replace_session_data: "UPDATE sessions SET data = $1, data_version = data_version + 1 \
         WHERE handle = $2 AND data_version = $3",
    // Reads the per-user index. `IS NOT` rather than `<>`: with no session to keep the bound
    // value is NULL, and `handle IS NOT NULL` holds for every row (`handle <> NULL` for none).
    delete_sessions_of_user: "DELETE FROM sessions WHERE user_id = $1 AND handle IS NOT $2",
    // The subquery reads only the expiry index (it holds the rowid), so the sweep costs what
    // expired, not how many sessions exist.
    delete_expired_sessions: "DELETE FROM sessions WHERE rowid IN \
         (SELECT rowid FROM sessions WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)",
    // The expression must match `refresh_families_by_expiry` exactly for SQLite to use the index.
    delete_expired_families: "DELETE FROM refresh_families WHERE rowid IN \
         (SELECT rowid FROM refresh_families WHERE min(expires_at, absolute_expires_at) <= $1 \
          ORDER BY min(expires_at, absolute_expires_at) LIMIT $2)",
    // The conflict target is `revocations_by_entry`'s expression, exactly.
    add_revocation: "INSERT INTO revocations (kind, subject, before, expires_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (kind, subject, ifnull(before, 0)) \
         DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
    insert_event: "INSERT INTO security_events (at, kind, user_id, detail) VALUES ($1, $2, $3, $4)",
    update_event_detail: "UPDATE security_events SET detail = $1 WHERE id = $2",
};

// sqlx's `begin` is SQLite's deferred `BEGIN`: every transaction here writes before it reads, so
// it takes the write lock up front (waiting out the busy timeout) and never has to upgrade a read
// snapshot, which SQLite may refuse with `SQLITE_BUSY`.
sql::impl_db_on_pool!(SqliteStore, Sqlite, SqliteRow, &SQL, {
    async fn delete_expired_revocations(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut tx = self.begin().await?;
        let revocations = tx
            .execute(
                "DELETE FROM revocations WHERE expires_at <= $1",
                &[now.into()],
            )
            .await?;
        let allowed = tx
            .execute(
                "DELETE FROM allowed_tokens WHERE expires_at <= $1",
                &[now.into()],
            )
            .await?;
        Tx::commit(tx).await?;
        Ok(sql_count(revocations).saturating_add(sql_count(allowed)))
    }
});

sql::impl_store_traits!(SqliteStore);

#[async_trait::async_trait]
impl tessera_core::ProofReplayStore for SqliteStore {
    async fn first_use(
        &self,
        key: &[u8; 32],
        expires_at: tessera_core::Timestamp,
        now: tessera_core::Timestamp,
    ) -> Result<bool, StoreError> {
        self.proofs.first_use(key, expires_at, now).await
    }

    async fn purge_expired_proofs(
        &self,
        now: tessera_core::Timestamp,
    ) -> Result<usize, StoreError> {
        let durable = sql::Db::execute(
            self,
            "DELETE FROM single_uses WHERE expires_at <= $1",
            &[now.into()],
        )
        .await?;
        Ok(self
            .proofs
            .purge_expired_proofs(now)
            .await?
            .saturating_add(sql_count(durable)))
    }

    async fn first_use_durable(
        &self,
        key: &[u8; 32],
        expires_at: tessera_core::Timestamp,
        now: tessera_core::Timestamp,
    ) -> Result<bool, StoreError> {
        // One statement, atomic for every process on the file: a row is written when there was
        // none, or when the one there had expired; a live one is left alone.
        let written = sql::Db::execute(
            self,
            "INSERT INTO single_uses (key, expires_at) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE single_uses.expires_at <= $3",
            &[key.as_slice().into(), expires_at.into(), now.into()],
        )
        .await?;
        Ok(written == 1)
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;
    use tessera_core::store::{
        EventStore, HealthCheck, KeyStore, RefreshStore, RevocationStore, SessionStore, UserStore,
    };
    use tessera_core::{
        ClientInfo, EventKind, FamilyId, LoginModel, MailStore, NewEvent, RefreshFamily,
        RefreshTokenRecord, TokenHash, UserId,
    };

    use super::*;
    use crate::sql::keys::KEY_COLUMNS;
    use crate::sql::refresh::TOKEN_COLUMNS;
    use crate::sql::rows;

    /// Test statements are built from constants too.
    fn sql(statement: String) -> impl SqlSafeStr {
        sqlx::AssertSqlSafe(statement)
    }

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
        let plan: Vec<String> = sqlx::query(sql(format!(
            "EXPLAIN QUERY PLAN {}",
            SQL.delete_expired_sessions
        )))
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
        let plan = plan(&store, SQL.delete_sessions_of_user, &["usr_x", "ses_x"]).await;
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
                "SELECT {} FROM users WHERE username > $1 ORDER BY username LIMIT 10",
                SQL.user_columns
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

    /// What is used once durably stays used for another process on the file and after a
    /// restart, until it expires; DPoP proofs stay in the process that saw them.
    #[tokio::test]
    async fn single_uses_outlive_the_process_that_recorded_them() {
        use tessera_core::ProofReplayStore;
        let dir = TempDir::new("single-uses");
        let path = dir.0.join("tessera.db");
        let now = tessera_core::Timestamp::from_unix_millis(1_764_400_000_000);
        let until = tessera_core::Timestamp::from_unix_millis(1_764_400_300_000);
        let first = SqliteStore::open(&path).await.unwrap();
        assert!(first.first_use_durable(&[1; 32], until, now).await.unwrap());
        assert!(!first.first_use_durable(&[1; 32], until, now).await.unwrap());
        let other = SqliteStore::open(&path).await.unwrap();
        assert!(
            !other.first_use_durable(&[1; 32], until, now).await.unwrap(),
            "another process on the file sees the use"
        );
        drop(first);
        let restarted = SqliteStore::open(&path).await.unwrap();
        assert!(
            !restarted
                .first_use_durable(&[1; 32], until, now)
                .await
                .unwrap()
        );
        // Expired: usable again, and swept.
        assert!(
            restarted
                .first_use_durable(&[1; 32], until, until)
                .await
                .unwrap()
        );
        let later = tessera_core::Timestamp::from_unix_millis(1_764_401_000_000);
        assert!(restarted.purge_expired_proofs(later).await.unwrap() >= 1);
        // A DPoP proof's record is the process's own.
        assert!(restarted.first_use(&[2; 32], until, now).await.unwrap());
        assert!(other.first_use(&[2; 32], until, now).await.unwrap());
    }

    #[tokio::test]
    async fn a_version_1_database_is_upgraded() {
        let dir = TempDir::new("upgrade");
        let path = dir.0.join("tessera.db");
        let (store, user) = {
            let store = SqliteStore::open(&path).await.unwrap();
            // Back to the schema as released with version 1, with a user in it.
            for table in [
                "single_uses",
                "passkeys",
                "login_challenges",
                "recovery_codes",
                "totp_factors",
                "mail_queue",
                "account_codes",
                "change_feed",
                "change_feed_pruned",
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
            // Later migrations also added columns (and an index) to version 1's tables.
            for statement in [
                "ALTER TABLE sessions DROP COLUMN auth_context",
                "DROP INDEX users_by_email_key",
                "ALTER TABLE users DROP COLUMN email_verified",
                "ALTER TABLE users DROP COLUMN email_key",
                "ALTER TABLE users DROP COLUMN email",
                "ALTER TABLE users DROP COLUMN not_before",
            ] {
                exec(&store, statement).await;
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
            generation: 0,
            dpop_jkt: None,
            auth: tessera_core::AuthContext::password(Timestamp::from_unix_millis(0)),
        };
        let first = RefreshTokenRecord {
            hash: TokenHash::of(b"first"),
            family_id: family.id.clone(),
            issued_at: Timestamp::from_unix_millis(0),
            rotated_at: None,
            generation: 0,
        };
        store.create_family(&family, &first).await.unwrap();
        assert_eq!(store.families_of_user(&user).await.unwrap(), vec![family]);
        assert_eq!(
            store.user_by_id(&user).await.unwrap().map(|u| u.email),
            Some(None),
            "an account from before addresses has none"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn the_code_sweep_reads_the_expiry_index() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let plan = plan(&store, SQL.delete_expired_codes, &["0", "10"]).await;
        assert!(
            plan.iter()
                .any(|step| step.contains("account_codes_by_expiry")),
            "{plan:?}"
        );
        assert!(
            !plan
                .iter()
                .any(|step| step.starts_with("SCAN account_codes")),
            "{plan:?}"
        );
    }

    #[tokio::test]
    async fn claiming_mail_reads_the_due_index_in_order() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let plan = plan(&store, SQL.claim_mail, &["0", "10", "16"]).await;
        assert!(
            plan.iter().any(|step| step.contains("mail_queue_by_due")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "no sort: the index holds the order: {plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN mail_queue")),
            "{plan:?}"
        );
    }

    #[tokio::test]
    async fn bad_stored_mail_is_an_error_not_a_panic() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        ignore_checks(&store).await;
        exec(
            &store,
            "INSERT INTO mail_queue (id, sealed, created_at, not_after, attempts, \
             next_attempt_at) VALUES ('mail_x', x'00', 0, 10, -5, 0)",
        )
        .await;
        assert!(matches!(
            store
                .claim_mail(
                    Timestamp::from_unix_millis(0),
                    Timestamp::from_unix_millis(5),
                    1
                )
                .await,
            Err(StoreError::Other(_))
        ));
    }

    #[tokio::test]
    async fn the_family_sweep_reads_the_expiry_index() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let plan: Vec<String> = sqlx::query(sql(format!(
            "EXPLAIN QUERY PLAN {}",
            SQL.delete_expired_families
        )))
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
            rows::refresh_token(&row),
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
