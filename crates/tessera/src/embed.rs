//! Tessera built in a few lines, inside an application or as the `tessera serve` server: the
//! stores, the services, the change-feed follower and the periodic upkeep, and the routes.

use std::future::Future;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use figment::Figment;
use figment::providers::Serialized;
use serde::Serialize;
use tessera_core::{Clock, Services, SystemClock};
use tessera_http::AppState;
use tessera_store::sqlite::SqliteStore;
use tokio::task::JoinHandle;

use crate::config::{Config, Named};

/// How errors and `tessera config check` name a value set through [`TesseraBuilder`].
pub(crate) const BUILDER: &str = "the application's builder";

/// A running Tessera: its services (through `Deref`, e.g. `tessera.accounts`), the state its
/// extractors need ([`Tessera::state`]), its routes ([`Tessera::router`]), and the tasks it runs
/// in the background (following the change feed; the periodic upkeep that sweeps expired
/// sessions and tokens and picks up rotated signing keys), which [`Tessera::shutdown`] stops.
///
/// ```
/// use axum::{Router, routing::get};
/// use tessera::Tessera;
/// use tessera_http::AppState;
/// use tessera_http::extract::AuthUser;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tessera::BuildError> {
/// let tessera = Tessera::builder().memory().mount("/auth").build().await?;
/// let app: Router = Router::new()
///     .route("/", get(|| async { "welcome" }))
///     .route("/me", get(|user: AuthUser| async move { user.user.username.to_string() }))
///     .merge(tessera.router())
///     .with_state(tessera.state());
/// # drop(app);
/// tessera.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct Tessera {
    services: Services,
    state: AppState,
    mount: String,
    /// The SQLite store itself, to close (and checkpoint) at the end.
    sqlite: Option<SqliteStore>,
    /// The follower and, unless turned off, the upkeep.
    tasks: Vec<JoinHandle<()>>,
    /// `http.header_timeout`, for [`Tessera::serve`].
    header_timeout: std::time::Duration,
    /// `http.shutdown_grace`, for [`Tessera::serve`].
    shutdown_grace: std::time::Duration,
}

/// Why Tessera could not be built: an invalid setting (naming the key and where its value came
/// from), a store that cannot be opened or reached, or an unreadable master key file.
#[derive(Debug)]
pub struct BuildError(anyhow::Error);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for BuildError {}

impl From<anyhow::Error> for BuildError {
    fn from(e: anyhow::Error) -> Self {
        Self(e)
    }
}

impl BuildError {
    /// The error as an `anyhow::Error`, with its whole chain of causes.
    pub fn into_anyhow(self) -> anyhow::Error {
        self.0
    }
}

/// Settings for a [`Tessera`], from [`Tessera::builder`] (the defaults) or
/// [`Tessera::from_config`] (what `tessera serve` reads). Any key of the configuration file can
/// be set with [`TesseraBuilder::set`]; the methods cover the usual ones. Values are checked by
/// [`TesseraBuilder::build`], which names the key at fault.
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct TesseraBuilder {
    figment: Figment,
    /// A configuration `serve` or a command already loaded and checked (setters do not apply).
    loaded: Option<Box<Config>>,
    clock: Arc<dyn Clock>,
    upkeep: bool,
    attacker_origin: Option<String>,
    mail_transport: Option<Arc<dyn tessera_core::MailTransport>>,
}

impl Tessera {
    /// A builder starting from the defaults alone: the embedded SQLite database `tessera.db` in
    /// the working directory, the public URL `http://localhost:8080`, every route at the root,
    /// and no configuration file or environment variable read.
    pub fn builder() -> TesseraBuilder {
        TesseraBuilder::new(Figment::from(crate::config::defaults()))
    }

    /// A builder starting from the configuration `tessera serve` reads: the defaults, then `file`
    /// (or `./tessera.toml` when `None` and it exists), then the `TESSERA_…` environment
    /// variables. Fails when `file` is given and does not exist. Values set on the builder
    /// afterwards override all three.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let file = dir.path().join("tessera.toml");
    /// std::fs::write(&file, "database = \"memory\"\n[http]\nmount = \"/id/\"\n")?;
    /// let tessera = tessera::Tessera::from_config(Some(&file))?.build().await?;
    /// assert_eq!(tessera.mount(), "/id");
    /// tessera.shutdown().await;
    ///
    /// let missing = tessera::Tessera::from_config(Some(&dir.path().join("nope.toml")));
    /// assert!(missing.is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_config(file: Option<&Path>) -> Result<TesseraBuilder, BuildError> {
        let figment = Config::figment(file, &crate::config::Overrides::default())?;
        Ok(TesseraBuilder::new(figment))
    }

    /// A builder over a configuration already loaded and checked.
    pub(crate) fn from_loaded(config: Config) -> TesseraBuilder {
        let mut builder = TesseraBuilder::new(Figment::new());
        builder.loaded = Some(Box::new(config));
        builder
    }

    /// The state Tessera's extractors ([`tessera_http::extract`]) take: give it to the
    /// application's router (`.with_state(tessera.state())`), or derive it from the
    /// application's own state with `axum::extract::FromRef`. Cheap to clone.
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// The services: accounts, sessions, tokens, logins (also reachable through `Deref`).
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The path the routes are mounted under (`/auth`), or empty at the root.
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// Tessera's routes (every login model, accounts, admin, JWKS, OpenAPI; the playground when
    /// it is on), under the mount path, with their own layers (CSRF and origin checks, CORS for
    /// the trusted origins, security headers, time limits, request ids). Merge them into the
    /// application's router: `app.merge(tessera.router())`.
    ///
    /// Mounted under a path, unknown paths below it get Tessera's 404 problem document and the
    /// application's own routes are untouched. At the root (no mount), the router also answers
    /// every path the application has no route for.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let routes = tessera_http::routes(self.state.clone());
        if self.mount.is_empty() {
            routes
        } else {
            Router::new().nest(&self.mount, routes)
        }
    }

    /// A future for `axum::serve(…).with_graceful_shutdown(…)`: it waits for `signal`, then ends
    /// the revocation streams (which never end by themselves), so that the graceful shutdown
    /// waits only for the requests in flight. Their clients reconnect to another node.
    pub fn graceful<F>(&self, signal: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let tokens = self.services.tokens.clone();
        async move {
            signal.await;
            tokens.revocations().log().shutdown();
        }
    }

    /// Serves `app` (the application's router, with [`Tessera::router`] merged in) on `listener`
    /// until `signal` completes, then finishes the requests in flight, as `tessera serve` serves:
    /// handlers see the client's address (the login throttle counts by it, logins record it),
    /// and a connection that does not send a request's head within `http.header_timeout` is
    /// closed, so clients that trickle their headers hold nothing for long. The revocation
    /// streams end when `signal` completes (see [`Tessera::graceful`]).
    ///
    /// Serving with `axum::serve` works too, but then give it
    /// `app.into_make_service_with_connect_info::<SocketAddr>()`, or every client shares one
    /// unknown address, which turns the per-address login throttle off.
    ///
    /// Once `signal` has completed, requests in flight get `http.shutdown_grace` (default 10 s)
    /// to finish; past it the future completes anyway (and says so in the log), so a client that
    /// holds a connection open cannot hold up the stop.
    ///
    /// The future does not borrow `self`: it can be spawned, and [`Tessera::shutdown`] called once
    /// it has completed.
    pub fn serve<F>(
        &self,
        listener: tokio::net::TcpListener,
        app: Router,
        signal: F,
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let header_timeout = self.header_timeout;
        self.serve_with(signal, move |signal| {
            tessera_http::serve(listener, app, header_timeout, signal)
        })
    }

    /// Runs `serve` (which stops gracefully when the future it is given completes) until
    /// `signal`, then for at most `http.shutdown_grace` more: what [`Tessera::serve`] and
    /// `tessera serve` (on its plain or TLS listener) share.
    pub(crate) fn serve_with<F, S, Fut>(
        &self,
        signal: F,
        serve: S,
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
        S: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let stopping = Arc::new(tokio::sync::Notify::new());
        let signal = {
            let stopping = Arc::clone(&stopping);
            self.graceful(async move {
                signal.await;
                stopping.notify_one();
            })
        };
        let served = serve(Box::pin(signal));
        let grace = self.shutdown_grace;
        async move {
            tokio::select! {
                served = served => served,
                () = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
                    tracing::warn!(?grace, "requests still in flight after the shutdown grace period; stopping anyway");
                    Ok(())
                }
            }
        }
    }

    /// Stops the background tasks and waits until they have ended, ends the revocation streams,
    /// and closes the stores (the SQLite database is checkpointed). Call it once the HTTP server
    /// has stopped.
    pub async fn shutdown(self) {
        self.services.tokens.revocations().log().shutdown();
        for task in self.tasks {
            task.abort();
            // An aborted task ends at its next await point; a panic in it was logged already.
            let _ = task.await;
        }
        if let Some(sqlite) = self.sqlite {
            sqlite.close().await;
        }
    }
}

impl Deref for Tessera {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}

impl TesseraBuilder {
    fn new(figment: Figment) -> Self {
        Self {
            figment,
            loaded: None,
            clock: Arc::new(SystemClock),
            upkeep: true,
            attacker_origin: None,
            mail_transport: None,
        }
    }

    /// Sets a configuration key (dotted, as in the file: `sessions.idle_timeout`,
    /// `tokens.algorithm`) to `value`, which must serialize as the file would write it
    /// (`"15m"` for a duration). Checked by [`TesseraBuilder::build`]. A value set here
    /// overrides the defaults and, after [`Tessera::from_config`], the file and the environment.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let refused = tessera::Tessera::builder()
    ///     .memory()
    ///     .set("sessions.idle_timeout", "a while")
    ///     .build()
    ///     .await;
    /// let message = refused.err().unwrap().to_string();
    /// assert!(message.contains("sessions.idle_timeout"), "{message}");
    /// # }
    /// ```
    pub fn set(mut self, key: &str, value: impl Serialize) -> Self {
        self.figment = self.figment.merge(Named {
            name: BUILDER,
            provider: Serialized::default(key, value),
        });
        self
    }

    /// Keeps everything in memory: nothing survives the process (for tests and demonstrations).
    pub fn memory(self) -> Self {
        self.set("database", "memory")
    }

    /// Keeps everything in the SQLite database at `path` (created when missing).
    pub fn sqlite(self, path: impl AsRef<Path>) -> Self {
        let url = format!("sqlite://{}", path.as_ref().display());
        self.set("database", url)
    }

    /// Keeps everything in PostgreSQL (`postgres://…`).
    pub fn postgres(self, url: &str) -> Self {
        self.set("database", url)
    }

    /// Keeps sessions, revocations, login throttling and the change feed in Redis (`redis://…`,
    /// `rediss://…`, or `redis+cluster://…`), beside the database.
    pub fn redis(self, url: &str) -> Self {
        self.set("sessions.store", "redis").set("redis.url", url)
    }

    /// The URL browsers reach the application at (`https://shop.example`): its origin is trusted
    /// for cookie-authenticated requests, and with the mount path it is the tokens' issuer.
    pub fn public_url(self, url: &str) -> Self {
        self.set("public_url", url)
    }

    /// Serves Tessera's routes under `path` (`/auth`: `/auth/v1/session/login`, …). Cookies keep
    /// `Path=/`, so the application's own routes receive them.
    pub fn mount(self, path: &str) -> Self {
        self.set("http.mount", path)
    }

    /// Other origins whose pages may call with credentials (CORS) and make cookie-authenticated
    /// unsafe requests: exact origins (`https://admin.shop.example`), never a wildcard.
    pub fn trusted_origins<I, T>(self, origins: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let origins: Vec<String> = origins.into_iter().map(Into::into).collect();
        self.set("http.trusted_origins", origins)
    }

    /// The base of the cookies' names (`shop` gives `__Host-shop`, …); default `tessera`.
    pub fn cookie_name(self, name: &str) -> Self {
        self.set("http.cookie_name", name)
    }

    /// Where the master key (which encrypts the signing keys at rest) is kept; created on first
    /// start. Default `tessera.key` in the working directory.
    pub fn master_key_file(self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().display().to_string();
        self.set("tokens.master_key_file", path)
    }

    /// Turns the playground page on or off (off by default in an application; it is served at
    /// the root only).
    pub fn playground(self, on: bool) -> Self {
        self.set("playground", on)
    }

    /// The clock every expiry is measured by (for tests that move time forward).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sends mail (recovery and verification codes) through `transport` instead of the SMTP
    /// server of `email.smtp_url`: an application that already has a way to send mail. The queue,
    /// its retries and the templates stay Tessera's.
    pub fn mail_transport(mut self, transport: Arc<dyn tessera_core::MailTransport>) -> Self {
        self.mail_transport = Some(transport);
        self
    }

    /// Sends mail through the SMTP server at `url` (`smtp://…` or `smtps://…`), from `from`.
    pub fn smtp(self, url: &str, from: &str) -> Self {
        self.set("email.smtp_url", url).set("email.from", from)
    }

    /// Without the periodic upkeep: for a command that runs once.
    pub(crate) fn without_upkeep(mut self) -> Self {
        self.upkeep = false;
        self
    }

    /// The playground's attacker page origin, once its listener is bound.
    pub(crate) fn attacker_origin(mut self, origin: Option<String>) -> Self {
        self.attacker_origin = origin;
        self
    }

    /// The configuration in force: what `build` will use.
    pub(crate) fn config(&self) -> anyhow::Result<Config> {
        match &self.loaded {
            Some(config) => Ok(Config::clone(config)),
            None => Config::extract(self.figment.clone()),
        }
    }

    /// Checks the settings, opens the stores (running their migrations), builds the services,
    /// and starts the background tasks on the current Tokio runtime.
    pub async fn build(self) -> Result<Tessera, BuildError> {
        let mut config = self.config()?;
        if self.loaded.is_none() && config.playground.enabled.is_none() {
            // An application shows its own pages; the playground is asked for by name.
            config.playground.enabled = Some(false);
        }
        let database = config.database().map_err(anyhow::Error::msg)?;
        let (stores, sqlite) = crate::app::stores(&config, &database).await?;
        let master = crate::app::master_key(&config, &database)?;
        let mut services = Services::build(stores, self.clock, master, config.services_config())
            .await
            .context("starting the services")?;
        let transport = match self.mail_transport {
            Some(transport) => Some(transport),
            None if config.email.smtp_url.is_some() => Some(
                crate::mail::transport(&config.email)
                    .map_err(|(key, why)| anyhow::anyhow!("invalid configuration: {key}: {why}"))?,
            ),
            None => None,
        };
        if let Some(transport) = transport {
            let templates = match &config.email.templates_dir {
                Some(dir) => crate::mail::templates(dir).map_err(|why| {
                    anyhow::anyhow!("invalid configuration: email.templates_dir: {why}")
                })?,
                None => tessera_core::MailTemplates::builtin(),
            };
            services = services.with_mail(transport, templates);
        }
        let mut http = config.http_config();
        if let Some(playground) = &mut http.playground {
            playground.attacker_origin = self.attacker_origin;
        }
        let state = AppState::new(services.clone(), http).map_err(anyhow::Error::msg)?;
        // Without the feed a node stops trusting its revocation state.
        let mut tasks = vec![services.spawn_follower()];
        if self.upkeep {
            tasks.push(services.spawn_sweeper(config.sessions.sweep_interval));
            // Mail queued by any node (or by a command) goes out from every serving node.
            tasks.push(services.spawn_mailer());
        }
        Ok(Tessera {
            services,
            mount: state.mount().to_owned(),
            state,
            sqlite,
            tasks,
            header_timeout: config.http.header_timeout,
            shutdown_grace: config.http.shutdown_grace,
        })
    }
}
