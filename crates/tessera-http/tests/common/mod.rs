//! `TestApp`: starts the real server on 127.0.0.1:0 with a fresh store (memory or SQLite) and a
//! manual clock, and talks HTTP to it. Cookies are handled explicitly, as a browser would, so tests
//! can see and tamper with them.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tessera_core::SigningAlgorithm;
use tessera_core::token::{MasterKey, TokenConfig, Tokens};
use tessera_core::{
    Accounts, AccountsConfig, Argon2Params, ManualClock, PasswordsConfig, Rate, Registration,
    Services, ServicesConfig, SessionConfig, Stores, ThrottleConfig,
};
use tessera_http::{AppState, HttpConfig};
use tessera_store::memory::MemoryStore;
use tessera_store::sqlite::SqliteStore;

pub(crate) const COOKIE: &str = "__Host-tessera";
pub(crate) const PASSWORD: &str = "correct horse battery staple";

#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Memory,
    Sqlite,
}

/// Runs one async test body against every backend.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Backend::Memory).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Backend::Sqlite).await
                }
            )*
        }
    };
}

pub(crate) struct Options {
    /// Mail goes out through this (the SMTP transport to a test server); none by default.
    pub mail: Option<std::sync::Arc<dyn tessera_core::MailTransport>>,
    pub registration: Registration,
    pub sessions: SessionConfig,
    pub http: HttpConfig,
    pub throttle: ThrottleConfig,
    pub argon2: Argon2Params,
    /// `issuer` is replaced by the app's own origin.
    pub tokens: TokenConfig,
    pub algorithm: SigningAlgorithm,
    pub max_logins_per_user: usize,
    /// Second factors: challenges and how recent a second factor privileged routes need.
    pub second_factor: tessera_core::SecondFactorConfig,
}

/// Throttling relaxed, so tests that log in often are not throttled; throttling tests set their
/// own rates.
pub(crate) fn relaxed_throttle() -> ThrottleConfig {
    ThrottleConfig {
        per_account: Rate {
            burst: 10_000,
            per_minute: 10_000,
        },
        per_ip: Rate {
            burst: 10_000,
            per_minute: 10_000,
        },
        refresh_per_ip: Rate {
            burst: 10_000,
            per_minute: 10_000,
        },
        ..ThrottleConfig::default()
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mail: None,
            registration: Registration::Open,
            sessions: SessionConfig::default(),
            http: HttpConfig::default(),
            throttle: relaxed_throttle(),
            argon2: Argon2Params::insecure_fast_for_tests(),
            tokens: TokenConfig::default(),
            max_logins_per_user: 0,
            algorithm: SigningAlgorithm::EdDSA,
            second_factor: tessera_core::SecondFactorConfig::default(),
        }
    }
}

pub(crate) struct TestApp {
    /// The management listener (`/metrics`), apart from the public one.
    pub(crate) management: SocketAddr,
    management_task: tokio::task::JoinHandle<()>,
    pub addr: SocketAddr,
    pub clock: ManualClock,
    pub client: reqwest::Client,
    pub origin: String,
    /// The SQLite store, for tests that take it away.
    pub sqlite: Option<SqliteStore>,
    /// The memory store, for tests that count its calls.
    pub memory: Option<MemoryStore>,
    /// The services behind the server, for tests that act as an operator would (create an admin,
    /// rotate a key from the CLI's side).
    pub accounts: Accounts,
    pub tokens: Arc<Tokens>,
    pub stores: Stores,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    follower: tokio::task::JoinHandle<()>,
    db_dir: Option<tempfile::TempDir>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.follower.abort();
        self.management_task.abort();
    }
}

impl TestApp {
    pub(crate) async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, Options::default()).await
    }

    pub(crate) async fn spawn_with(backend: Backend, options: Options) -> Self {
        let (stores, sqlite, db_dir, memory) = match backend {
            Backend::Memory => {
                let memory = MemoryStore::new();
                (Stores::from_one(memory.clone()), None, None, Some(memory))
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = SqliteStore::open(&dir.path().join("tessera.db"))
                    .await
                    .expect("sqlite");
                (
                    Stores::from_one(store.clone()),
                    Some(store),
                    Some(dir),
                    None,
                )
            }
        };
        let clock = ManualClock::starting_now();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut http = options.http;
        // The app's own origin, unless a test asked for an https one.
        if !http.public_url.starts_with("https://") {
            http.public_url = format!("http://localhost:{}", addr.port());
        }
        let origin = http.public_url.clone();
        let config = ServicesConfig {
            accounts: AccountsConfig {
                registration: options.registration,
                ..AccountsConfig::default()
            },
            passwords: PasswordsConfig {
                argon2: options.argon2,
                max_concurrent: 4,
                queue_timeout: Duration::from_secs(30),
                ..PasswordsConfig::default()
            },
            sessions: options.sessions,
            tokens: TokenConfig {
                issuer: origin.clone(),
                ..options.tokens
            },
            signing_algorithm: options.algorithm,
            throttle: options.throttle,
            max_logins_per_user: options.max_logins_per_user,
            account_mail: tessera_core::AccountMailConfig {
                product_name: "Tessera test".into(),
                recovery_url: format!("{origin}/account/recovery"),
                verification_url: format!("{origin}/account/verify"),
                ..tessera_core::AccountMailConfig::default()
            },
            second_factor: tessera_core::SecondFactorConfig {
                // Passkeys on the app's own origin, as the server binary derives them from
                // `public_url`, unless the test set them.
                passkeys: options.second_factor.passkeys.clone().or_else(|| {
                    tessera_core::PasskeyConfig::for_public_url(&origin, None, "Tessera test", &[])
                }),
                ..options.second_factor
            },
            ..ServicesConfig::default()
        };
        let services = Services::build(
            stores,
            Arc::new(clock.clone()),
            MasterKey::generate().unwrap().0,
            config,
        )
        .await
        .unwrap();
        let services = match options.mail {
            Some(transport) => {
                services.with_mail(transport, tessera_core::MailTemplates::builtin())
            }
            None => services,
        };
        // Does nothing without a transport.
        let _mailer = services.spawn_mailer();
        let follower = services.spawn_follower();
        let state = AppState::new(services.clone(), http).unwrap();
        let app = tessera_http::router(state);
        // The management surface on a listener of its own, as `http.management_listen` gives it.
        let management_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let management = management_listener.local_addr().unwrap();
        let management_task = tokio::spawn(async move {
            axum::serve(management_listener, tessera_http::management_router())
                .await
                .unwrap();
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            tessera_http::serve(listener, app, Duration::from_secs(10), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            addr,
            management,
            management_task,
            clock,
            client,
            origin,
            sqlite,
            memory,
            accounts: services.accounts.clone(),
            tokens: services.tokens.clone(),
            stores: services.stores.clone(),
            follower,
            shutdown: Some(tx),
            db_dir,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub(crate) async fn register(&self, username: &str, password: &str) -> Response {
        self.request(Method::POST, "/v1/users")
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn login_response(&self, username: &str, password: &str) -> Response {
        self.request(Method::POST, "/v1/session/login")
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// Registers `username` with [`PASSWORD`] and logs in.
    pub(crate) async fn user_with_session(&self, username: &str) -> Browser {
        assert_eq!(
            self.register(username, PASSWORD).await.status(),
            StatusCode::CREATED
        );
        self.login(username, PASSWORD).await
    }

    pub(crate) async fn login(&self, username: &str, password: &str) -> Browser {
        let response = self.login_response(username, password).await;
        assert_eq!(response.status(), StatusCode::OK);
        let cookie = session_cookie(&response).expect("login sets the session cookie");
        let body: Value = response.json().await.unwrap();
        Browser {
            cookie: Some(cookie.value),
            csrf: body["csrf_token"].as_str().unwrap().to_owned(),
            login: body,
        }
    }

    /// Sends a request as `browser` would: its cookie and, when `with_csrf`, its CSRF token.
    pub(crate) fn as_browser(
        &self,
        browser: &Browser,
        method: Method,
        path: &str,
        with_csrf: bool,
    ) -> RequestBuilder {
        let mut rb = self.request(method, path);
        if let Some(cookie) = &browser.cookie {
            rb = rb.header("cookie", format!("{COOKIE}={cookie}"));
        }
        if with_csrf {
            rb = rb.header("x-csrf-token", &browser.csrf);
        }
        rb
    }
}

/// What a browser holds after logging in.
#[derive(Clone, Debug)]
pub(crate) struct Browser {
    pub cookie: Option<String>,
    pub csrf: String,
    pub login: Value,
}

/// A parsed `Set-Cookie` for the session cookie.
#[derive(Debug)]
pub(crate) struct SetCookie {
    pub value: String,
    pub attributes: Vec<String>,
}

impl SetCookie {
    pub(crate) fn has(&self, attribute: &str) -> bool {
        self.attributes
            .iter()
            .any(|a| a.eq_ignore_ascii_case(attribute))
    }

    pub(crate) fn get(&self, name: &str) -> Option<String> {
        self.attributes.iter().find_map(|a| {
            let (k, v) = a.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

pub(crate) fn session_cookie(response: &Response) -> Option<SetCookie> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let mut parts = v.split(';').map(str::trim);
            let (name, value) = parts.next()?.split_once('=')?;
            (name == COOKIE).then(|| SetCookie {
                value: value.to_owned(),
                attributes: parts.map(str::to_owned).collect(),
            })
        })
}

/// Reads a problem document and checks its media type and shape.
pub(crate) async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:tessera:problem:")
    );
    assert!(!body["title"].as_str().unwrap().is_empty());
    assert!(!body["detail"].as_str().unwrap().is_empty());
    body
}
