//! Wiring shared by every command: the configured stores and the master key, from which
//! [`crate::Tessera`]'s builder builds the core services.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tessera_core::token::MasterKey;
use tessera_core::{AllHealthy, MirroredRevocations, Stores};
use tessera_store::memory::MemoryStore;
use tessera_store::sqlite::SqliteStore;
use tessera_store::{PostgresStore, RedisStore};

use crate::config::{Config, Database, RedisTarget, SessionStoreKind};

/// Everything a command needs, built from the configuration: the services (`app.sessions`, …
/// through `Deref`) and the stores under them.
pub(crate) type App = crate::Tessera;

/// The configured stores: one database for everything, or sessions, revocations, throttling and
/// the change feed in Redis beside it.
pub(crate) async fn stores(
    config: &Config,
    database: &Database,
) -> anyhow::Result<(Stores, Option<SqliteStore>)> {
    let (mut stores, sqlite) = match database {
        Database::Memory => {
            tracing::warn!("database = memory: everything is lost when the server stops");
            (Stores::from_one(MemoryStore::new()), None)
        }
        Database::Sqlite(path) => {
            let store = SqliteStore::open(path)
                .await
                .with_context(|| format!("opening the SQLite database {}", path.display()))?;
            tracing::info!(path = %path.display(), "SQLite database ready");
            let mut stores = Stores::from_one(store.clone());
            // Processes sharing the file (a server, the command line) hear each other through it.
            stores.feed = Arc::new(store.clone());
            (stores, Some(store))
        }
        Database::Postgres(url) => {
            let store = PostgresStore::connect(url, config.postgres.schema.as_deref())
                .await
                .context("connecting to PostgreSQL")?;
            tracing::info!("PostgreSQL ready");
            let mut stores = Stores::from_one(store.clone());
            // Nodes sharing the database hear each other through LISTEN/NOTIFY.
            stores.feed = Arc::new(store);
            (stores, None)
        }
    };
    if config.sessions.store == SessionStoreKind::Redis {
        let target = config
            .redis
            .target()
            .map_err(|(key, why)| anyhow::anyhow!("{key}: {why}"))?;
        let prefix = &config.redis.prefix;
        let mut redis = match &target {
            RedisTarget::Url { url, .. } => RedisStore::connect(url, prefix).await,
            RedisTarget::ClusterNodes(nodes) => {
                RedisStore::connect_cluster(nodes.as_slice(), prefix).await
            }
        }
        .with_context(|| {
            if target.is_cluster() {
                "connecting to the Redis Cluster"
            } else {
                "connecting to Redis"
            }
        })?;
        if let Some(replicas) = config.redis.replica_acks {
            redis = redis.with_replica_acks(replicas);
        }
        tracing::info!(
            prefix = %config.redis.prefix,
            cluster = target.is_cluster(),
            "Redis ready: sessions, login challenges, revocations, throttling, DPoP proofs and the change feed"
        );
        stores.sessions = Arc::new(redis.clone());
        // Login challenges are short-lived like sessions, and live beside them.
        stores.challenges = Arc::new(redis.clone());
        // Every denylist entry is also written to the database, so a Redis that restarts
        // empty forgets no revocation.
        stores.revocations = Arc::new(MirroredRevocations {
            fast: Arc::new(redis.clone()),
            durable: stores.revocations.clone(),
        });
        stores.feed = Arc::new(redis.clone());
        stores.proofs = Arc::new(redis.clone());
        stores.health = Arc::new(AllHealthy(vec![
            stores.health.clone(),
            Arc::new(redis.clone()),
        ]));
        stores.limiter = Some(Arc::new(redis));
    }
    Ok((stores, sqlite))
}

/// The master key: from the configuration (`tokens.master_key`, best set through the
/// environment), else from `tokens.master_key_file`, created on first start. A memory database
/// gets a throwaway key: nothing it seals outlives the process anyway.
pub(crate) fn master_key(config: &Config, database: &Database) -> anyhow::Result<MasterKey> {
    if let Some(text) = &config.tokens.master_key {
        return MasterKey::parse_base64(text)
            .map_err(|e| anyhow::anyhow!("tokens.master_key: {e}"));
    }
    if *database == Database::Memory {
        return Ok(MasterKey::generate()?.0);
    }
    let path = &config.tokens.master_key_file;
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the master key file {}", path.display()))?;
        return MasterKey::parse_base64(&text)
            .map_err(|e| anyhow::anyhow!("the master key file {}: {e}", path.display()));
    }
    let (key, bytes) = MasterKey::generate()?;
    write_private_file(path, &base64_line(&bytes))
        .with_context(|| format!("creating the master key file {}", path.display()))?;
    tracing::warn!(
        path = %path.display(),
        "created a new master key file: back it up with the database; without it the signing keys cannot be used"
    );
    Ok(key)
}

fn base64_line(bytes: &[u8]) -> String {
    use base64::Engine;
    format!(
        "{}\n",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Creates `path` with mode 0600 and writes `content`; fails if it exists.
fn write_private_file(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()
}

/// Runs `command` on a runtime of its own with an [`App`] built from `config`, then closes the
/// stores whatever the outcome: how every command but `serve` reaches the services.
pub(crate) fn with_app<T>(
    config: &Config,
    command: impl AsyncFnOnce(&App) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let app = crate::Tessera::from_loaded(config.clone())
                .without_upkeep()
                .build()
                .await
                .map_err(crate::BuildError::into_anyhow)?;
            let result = command(&app).await;
            app.shutdown().await;
            result
        })
}

/// The account `user` names: a user id (`usr_…`) or a username.
pub(crate) async fn find_user(app: &App, user: &str) -> anyhow::Result<tessera_core::User> {
    let found = match tessera_core::UserId::parse(user) {
        Some(id) => app.accounts.user(&id).await?,
        None => app.accounts.user_by_name(user).await?,
    };
    found.ok_or_else(|| anyhow::anyhow!("no user {user:?} (give a username or a user id, usr_…)"))
}

/// Prints `value` as one JSON document on standard output.
pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
