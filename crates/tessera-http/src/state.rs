//! The state every handler shares, and the HTTP-level configuration.

use std::sync::Arc;

use ipnet::IpNet;
use tessera_core::token::Tokens;
use tessera_core::{Accounts, HealthCheck, Logins, Services, Sessions, Throttle};

use crate::extract::CookieNames;

/// HTTP settings derived from the server configuration.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The URL clients reach this server at, e.g. `https://auth.example.com`. Its origin is trusted
    /// for cookie-authenticated requests; `https` turns on HSTS.
    pub public_url: String,
    /// Other origins whose pages may call this server with credentials: CORS with credentials,
    /// and cookie-authenticated unsafe requests (exact match). Never a wildcard.
    pub trusted_origins: Vec<String>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// How long reading a request body, and a whole request, may take.
    pub timeouts: Timeouts,
    /// Resource servers allowed to call `POST /v1/token/introspect` with HTTP Basic.
    pub introspection_clients: Vec<IntrospectionClient>,
    /// Proxies whose `X-Forwarded-For` is believed (the client address the throttle and the audit
    /// log see).
    pub trusted_proxies: Vec<IpNet>,
    /// Forward-auth (`GET /v1/verify`): route rules and the login page browsers are sent to.
    pub verify: crate::forward_auth::VerifyConfig,
    /// The playground (`/` and its endpoints); `None` turns it off, and its routes answer 404.
    pub playground: Option<PlaygroundConfig>,
    /// The base of the cookies' names (see [`CookieNames`]): `tessera` gives `__Host-tessera`.
    pub cookie_name: String,
    /// The path Tessera's routes are served under when an application mounts them inside its own
    /// router (`/auth`), or empty when they are at the root. It shows in the OpenAPI document's
    /// server URL; cookies keep `Path=/` whatever it is.
    pub mount: String,
}

/// The playground's settings.
#[derive(Clone, Debug, Default)]
pub struct PlaygroundConfig {
    /// The origin (`http://127.0.0.1:PORT`) the attacker page is served on, by
    /// [`crate::routes::playground::attacker_router`] on a listener of its own; `None`: the page
    /// offers no attack demonstrations.
    pub attacker_origin: Option<String>,
}

/// A resource server's credentials for token introspection.
#[derive(Clone)]
pub struct IntrospectionClient {
    /// The HTTP Basic user name the resource server sends.
    pub id: String,
    /// The HTTP Basic password the resource server sends; compared in constant time, and never
    /// printed by `Debug`.
    pub secret: String,
}

impl std::fmt::Debug for IntrospectionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionClient")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Limits on how long a request may take.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Reading the request body.
    pub body: std::time::Duration,
    /// The whole request, body and handler; past it the answer is a 503.
    pub request: std::time::Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            body: std::time::Duration::from_secs(10),
            request: std::time::Duration::from_secs(30),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            public_url: "http://localhost:8080".into(),
            trusted_origins: Vec::new(),
            body_limit: 64 * 1024,
            timeouts: Timeouts::default(),
            introspection_clients: Vec::new(),
            trusted_proxies: Vec::new(),
            verify: crate::forward_auth::VerifyConfig::default(),
            playground: Some(PlaygroundConfig::default()),
            cookie_name: "tessera".into(),
            mount: String::new(),
        }
    }
}

/// The origin (`scheme://host[:port]`, default port omitted, lower-case) of a URL, as browsers
/// send it in `Origin`.
pub fn origin_of(url: &str) -> Result<String, String> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| format!("{url:?} has no scheme (http:// or https://)"))?
        .to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!("{url:?} must use http or https"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("{url:?} has no host"))?
        .to_ascii_lowercase();
    let default_port = if scheme == "https" { 443 } else { 80 };
    Ok(match uri.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// A mount path as given (`/auth`, `/auth/`, or empty for the root), checked and written
/// without a trailing slash: segments of letters, digits, `-`, `_`, `.` and `~`, none of them `.`
/// or `..`.
pub fn check_mount(mount: &str) -> Result<String, String> {
    let trimmed = mount.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let bad = || {
        format!(
            "{mount:?} is not a mount path: write it like /auth (segments of letters, digits, '-', '_', '.', '~')"
        )
    };
    let rest = trimmed.strip_prefix('/').ok_or_else(bad)?;
    for segment in rest.split('/') {
        if segment.is_empty()
            || segment == "."
            || segment == ".."
            || !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
        {
            return Err(bad());
        }
    }
    Ok(trimmed.to_owned())
}

pub(crate) struct Inner {
    pub services: Services,
    pub config: HttpConfig,
    /// The public origin followed by `config.trusted_origins`.
    pub trusted_origins: Vec<String>,
    pub https: bool,
    /// The attacker page's requests as received, when the playground has an attacker page.
    pub attack_log: Option<Arc<crate::routes::playground::AttackLog>>,
    /// The cookies' names.
    pub cookies: CookieNames,
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

impl AppState {
    /// The routes' state over `services` (built by [`Services::build`]); an error names a
    /// configured URL that is not an http(s) origin.
    pub fn new(services: Services, config: HttpConfig) -> Result<Self, String> {
        let public_origin = origin_of(&config.public_url)?;
        let https = public_origin.starts_with("https://");
        let mut trusted_origins = vec![public_origin];
        for o in &config.trusted_origins {
            trusted_origins.push(origin_of(o)?);
        }
        let cookies = CookieNames::new(&config.cookie_name)?;
        let mut config = config;
        config.mount = check_mount(&config.mount)?;
        if !config.mount.is_empty() && config.playground.is_some() {
            return Err(format!(
                "the playground is served at the root only, not under {}: turn it off when mounting Tessera's routes",
                config.mount
            ));
        }
        let mut attack_log = None;
        if let Some(playground) = &mut config.playground
            && let Some(attacker) = &mut playground.attacker_origin
        {
            *attacker = origin_of(attacker)?;
            if trusted_origins.iter().any(|o| o == attacker) {
                return Err(format!(
                    "the playground's attacker origin {attacker} is a trusted origin"
                ));
            }
            attack_log = Some(Arc::new(crate::routes::playground::AttackLog::new(
                attacker.clone(),
                cookies.clone(),
            )));
        }
        Ok(Self(Arc::new(Inner {
            services,
            config,
            trusted_origins,
            https,
            attack_log,
            cookies,
        })))
    }

    /// The names of the cookies this server sets and reads.
    pub fn cookies(&self) -> &CookieNames {
        &self.0.cookies
    }

    /// The path the routes are mounted under (`/auth`), or empty at the root.
    pub fn mount(&self) -> &str {
        &self.0.config.mount
    }

    /// The path clients reach the routes under: the public URL's path (a proxy may forward
    /// `https://example.com/id/` here) followed by the mount path; empty at the root.
    pub fn base_path(&self) -> String {
        let path = self
            .0
            .config
            .public_url
            .parse::<axum::http::Uri>()
            .map(|uri| uri.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        format!("{path}{}", self.mount())
    }

    /// The URL clients reach this server at (`http.public_url`).
    pub(crate) fn public_url(&self) -> &str {
        &self.0.config.public_url
    }

    /// The origins trusted for cookie-authenticated unsafe requests: the public URL's first.
    pub fn trusted_origins(&self) -> &[String] {
        &self.0.trusted_origins
    }

    /// Whether the playground is on.
    pub fn playground_on(&self) -> bool {
        self.0.config.playground.is_some()
    }

    /// The playground's attacker page origin, when it has one.
    pub fn attacker_origin(&self) -> Option<&str> {
        self.0
            .config
            .playground
            .as_ref()
            .and_then(|p| p.attacker_origin.as_deref())
    }

    /// The session service (the session login model).
    pub fn sessions(&self) -> &Sessions {
        &self.0.services.sessions
    }

    /// The account service: registration, password changes, user administration.
    pub fn accounts(&self) -> &Accounts {
        &self.0.services.accounts
    }

    /// The token service: access and refresh tokens, signing keys, revocations.
    pub fn tokens(&self) -> &Tokens {
        &self.0.services.tokens
    }

    /// The service that sees every login of a user, whatever its model.
    pub fn logins(&self) -> &Logins {
        &self.0.services.logins
    }

    /// Recovery, address verification and address changes, by mail.
    pub fn account_mail(&self) -> &tessera_core::AccountMail {
        &self.0.services.account_mail
    }

    /// The login-attempt budgets (per client address and per account) the login service spends
    /// from; registration and password changes are held to them too.
    pub fn throttle(&self) -> &Throttle {
        self.0.services.logins.throttle()
    }

    /// The store's readiness check, behind `GET /readyz`.
    pub fn health(&self) -> &Arc<dyn HealthCheck> {
        &self.0.services.stores.health
    }
}

#[cfg(test)]
mod tests {
    use super::origin_of;

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("http://localhost:8080").unwrap(),
            "http://localhost:8080"
        );
        assert_eq!(
            origin_of("https://Auth.Example.com/").unwrap(),
            "https://auth.example.com"
        );
        assert_eq!(
            origin_of("https://a.example:443/x").unwrap(),
            "https://a.example"
        );
        assert_eq!(origin_of("http://[::1]:9000").unwrap(), "http://[::1]:9000");
        assert!(origin_of("ftp://x").is_err());
        assert!(origin_of("localhost").is_err());
    }
}
