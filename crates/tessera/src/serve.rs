//! `tessera serve`: wires the configured store into the services and serves HTTP (HTTPS with
//! `tls.cert` and `tls.key`) until SIGINT or SIGTERM, then finishes the requests in flight.
//!
//! The management listener and the playground's attacker page stay plain HTTP: they are meant
//! for loopback or a private network only.

use anyhow::Context;

use crate::Tessera;
use crate::config::Config;

pub(crate) fn run(config: Config) -> anyhow::Result<()> {
    crate::logging::init(&config);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // A bad certificate or key stops the server before anything else happens.
    let tls = match config.tls.files() {
        Some((cert, key)) => Some(crate::tls::Tls::load(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    // The playground's attacker page: a listener of its own, so it is another origin.
    let attacker = if config.playground_enabled() {
        let at = config.attacker_listen();
        let attacker_listener = match tokio::net::TcpListener::bind(at).await {
            Ok(l) => l,
            // The default port (the next one) is taken: any free loopback port will do.
            Err(e) if config.playground.attacker_listen.is_none() => {
                tracing::warn!(%at, error = %e, "the playground's attacker page takes another port");
                tokio::net::TcpListener::bind((at.ip(), 0))
                    .await
                    .context("listening for the playground's attacker page")?
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("listening on {at} (playground.attacker_listen)"));
            }
        };
        let local = attacker_listener.local_addr()?;
        Some((attacker_listener, local))
    } else {
        None
    };
    let app = Tessera::from_loaded(config.clone())
        .attacker_origin(
            attacker
                .as_ref()
                .map(|(_, local)| format!("http://{local}")),
        )
        .build()
        .await
        .map_err(crate::BuildError::into_anyhow)?;
    let mut router: axum::Router = app.router();
    if !app.mount().is_empty() {
        // Outside the mount path, too, an unknown path is a problem document.
        router = router.fallback(|| async {
            tessera_http::ApiError::not_found(
                "no route matches this path (the routes are under http.mount)",
            )
        });
    }
    let attacker = match attacker {
        Some((attacker_listener, local)) => {
            let victim_origin =
                tessera_http::origin_of(&config.public_url).map_err(anyhow::Error::msg)?;
            let page = tessera_http::attacker_router(victim_origin, addr);
            tracing::info!(addr = %local, "playground on {}/; its attacker page on http://{local}/", config.public_url.trim_end_matches('/'));
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(attacker_listener, page).await {
                    tracing::error!(error = %e, "the playground's attacker listener stopped");
                }
            }))
        }
        None => None,
    };
    let management = match config.http.management_listen {
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("listening on {at} (http.management_listen)"))?;
            let local = listener.local_addr()?;
            tracing::info!(addr = %local, "management listener (/metrics) on http://{local}");
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, tessera_http::management_router()).await {
                    tracing::error!(error = %e, "the management listener stopped");
                }
            }))
        }
        None => None,
    };
    if !serves_secure_cookies(&config.public_url) {
        tracing::warn!(
            public_url = %config.public_url,
            "the public URL is neither https nor localhost: browsers will not keep the Secure session cookie"
        );
    }
    // The handlers are in place before anyone can learn the address: a SIGTERM right after
    // "listening" is a graceful stop, never the default kill.
    let signals = ShutdownSignals::install()?;
    let mut redirect = None;
    let (listener, reloader) = match &tls {
        Some(tls) => {
            if let Some(at) = config.tls.redirect_listen {
                let plain = tokio::net::TcpListener::bind(at)
                    .await
                    .with_context(|| format!("listening on {at} (tls.redirect_listen)"))?;
                let local = plain.local_addr()?;
                let public_origin =
                    tessera_http::origin_of(&config.public_url).map_err(anyhow::Error::msg)?;
                tracing::info!(addr = %local, "redirecting plain HTTP on {local} to {public_origin}");
                let page = crate::tls::redirect_router(public_origin);
                redirect = Some(tokio::spawn(async move {
                    if let Err(e) = axum::serve(plain, page).await {
                        tracing::error!(error = %e, "the HTTP-to-HTTPS redirect listener stopped");
                    }
                }));
            }
            let reloader = tls.spawn_reloader()?;
            (Listener::Tls(tls.listener(listener)?), Some(reloader))
        }
        None => (Listener::Plain(listener), None),
    };
    match &listener {
        Listener::Tls(_) => tracing::info!(%addr, "listening on https://{addr}"),
        Listener::Plain(_) => tracing::info!(%addr, "listening on http://{addr}"),
    }
    let header_timeout = config.http.header_timeout;
    app.serve_with(signals.wait(), move |signal| {
        listener.serve(router, header_timeout, signal)
    })
    .await
    .context("serving HTTP")?;
    for task in [reloader, redirect].into_iter().flatten() {
        task.abort();
    }
    if let Some(management) = management {
        management.abort();
    }
    if let Some(attacker) = attacker {
        attacker.abort();
    }
    app.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// The public listener.
enum Listener {
    Plain(tokio::net::TcpListener),
    Tls(crate::tls::TlsListener),
}

impl Listener {
    async fn serve(
        self,
        router: axum::Router,
        header_timeout: std::time::Duration,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        match self {
            Listener::Plain(listener) => {
                tessera_http::serve(listener, router, header_timeout, shutdown).await
            }
            Listener::Tls(listener) => listener.serve(router, header_timeout, shutdown).await,
        }
    }
}

/// SIGINT and SIGTERM, registered at once (not when first awaited).
struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
        tracing::info!("shutting down: finishing requests in flight");
    }
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
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use tessera_core::{ClientInfo, ManualClock};

    /// The background task sweeps on its own: expired sessions disappear without any request.
    #[tokio::test(start_paused = true)]
    async fn the_background_sweep_deletes_expired_sessions() {
        let clock = ManualClock::starting_at_millis(1_000_000);
        let config = Config {
            database: "memory".into(),
            ..Config::default()
        };
        let app = Tessera::from_loaded(config)
            .without_upkeep()
            .clock(Arc::new(clock.clone()))
            .build()
            .await
            .unwrap();
        let user = app
            .accounts
            .create(
                "sweep",
                &tessera_core::Password::new("correct horse battery"),
                vec![],
            )
            .await
            .unwrap();
        let (secret, _) = app
            .sessions
            .start(&user, ClientInfo::default())
            .await
            .unwrap();
        let task = app.spawn_sweeper(Duration::from_secs(60));
        clock.advance(Duration::from_secs(31 * 60));
        tokio::time::sleep(Duration::from_secs(61)).await;
        let hash = secret.hash();
        let stored = app.stores.sessions.session_by_secret(&hash).await.unwrap();
        assert!(stored.is_none(), "the expired session is still stored");
        task.abort();
    }

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
