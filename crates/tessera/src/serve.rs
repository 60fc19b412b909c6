//! `tessera serve`: wires the configured store into the services and serves HTTP until SIGINT or
//! SIGTERM, then finishes the requests in flight.

use std::sync::Arc;

use anyhow::Context;
use tessera_core::{Accounts, Clock, PasswordHasher, Sessions, Stores, SystemClock};
use tessera_store::memory::MemoryStore;
use tessera_store::sqlite::SqliteStore;

use crate::config::{Config, Database, LogFormat};

/// How many expired sessions one sweep statement deletes.
const SWEEP_BATCH: usize = 1000;

pub fn run(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(config))
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log.filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn open_stores(config: &Config) -> anyhow::Result<Stores> {
    let database = config.database().map_err(anyhow::Error::msg)?;
    Ok(match database {
        Database::Memory => {
            tracing::warn!(
                "database = memory: accounts and sessions are lost when the server stops"
            );
            Stores::from_one(MemoryStore::new())
        }
        Database::Sqlite(path) => {
            let store = SqliteStore::open(&path)
                .await
                .with_context(|| format!("opening the SQLite database {}", path.display()))?;
            tracing::info!(path = %path.display(), "SQLite database ready");
            Stores::from_one(store)
        }
    })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let stores = open_stores(&config).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let max_concurrent = match config.passwords.max_concurrent {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let hasher = PasswordHasher::new(
        config.passwords.argon2,
        max_concurrent,
        config.passwords.queue_timeout,
    )?;
    let accounts = Accounts::new(
        stores.users.clone(),
        hasher,
        clock.clone(),
        config.accounts_config(),
    );
    let sessions = Sessions::new(
        stores.sessions.clone(),
        stores.users.clone(),
        clock,
        config.session_config(),
    );
    let state = tessera_http::AppState::new(
        accounts,
        sessions.clone(),
        stores.health,
        config.http_config(),
    )
    .map_err(anyhow::Error::msg)?;
    let app = tessera_http::router(state);

    let sweeper = tokio::spawn(sweep_forever(sessions, config.sessions.sweep_interval));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    if !serves_secure_cookies(&config.public_url) {
        tracing::warn!(
            public_url = %config.public_url,
            "the public URL is neither https nor localhost: browsers will not keep the Secure session cookie"
        );
    }
    tracing::info!(%addr, "listening on http://{addr}");
    tessera_http::serve(listener, app, shutdown_signal())
        .await
        .context("serving HTTP")?;
    sweeper.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Deletes expired sessions every `interval`.
async fn sweep_forever(sessions: Sessions, interval: std::time::Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match sessions.sweep(SWEEP_BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "expired sessions swept"),
            Err(e) => tracing::warn!(error = %e, "session sweep failed; will retry"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// Browsers keep `Secure` cookies on https, and on http only for localhost.
fn serves_secure_cookies(public_url: &str) -> bool {
    let Ok(uri) = public_url.parse::<axum::http::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or("").to_ascii_lowercase();
    uri.scheme_str() == Some("https")
        || matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
        || host.ends_with(".localhost")
}

#[cfg(test)]
mod tests {
    use super::serves_secure_cookies;

    #[test]
    fn secure_cookie_hosts() {
        assert!(serves_secure_cookies("https://auth.example.com"));
        assert!(serves_secure_cookies("http://localhost:8080"));
        assert!(serves_secure_cookies("http://localhost"));
        assert!(serves_secure_cookies("http://127.0.0.1:9000"));
        assert!(serves_secure_cookies("http://[::1]:9000"));
        assert!(!serves_secure_cookies("http://auth.example.com"));
        assert!(!serves_secure_cookies("http://localhost.evil.com"));
    }
}
