//! The state every handler shares, and the HTTP-level configuration.

use std::sync::Arc;

use tessera_core::{Accounts, HealthCheck, Sessions};

/// HTTP settings derived from the server configuration.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The URL clients reach this server at, e.g. `https://auth.example.com`. Its origin is trusted
    /// for cookie-authenticated requests; `https` turns on HSTS.
    pub public_url: String,
    /// Other origins whose pages may make cookie-authenticated unsafe requests (exact match).
    pub trusted_origins: Vec<String>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            public_url: "http://localhost:8080".into(),
            trusted_origins: Vec::new(),
            body_limit: 64 * 1024,
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

pub(crate) struct Inner {
    pub accounts: Accounts,
    pub sessions: Sessions,
    pub health: Arc<dyn HealthCheck>,
    pub config: HttpConfig,
    /// The public origin followed by `config.trusted_origins`.
    pub trusted_origins: Vec<String>,
    pub https: bool,
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

impl AppState {
    pub fn new(
        accounts: Accounts,
        sessions: Sessions,
        health: Arc<dyn HealthCheck>,
        config: HttpConfig,
    ) -> Result<Self, String> {
        let public_origin = origin_of(&config.public_url)?;
        let https = public_origin.starts_with("https://");
        let mut trusted_origins = vec![public_origin];
        for o in &config.trusted_origins {
            trusted_origins.push(origin_of(o)?);
        }
        Ok(Self(Arc::new(Inner {
            accounts,
            sessions,
            health,
            config,
            trusted_origins,
            https,
        })))
    }

    pub fn sessions(&self) -> &Sessions {
        &self.0.sessions
    }

    pub fn accounts(&self) -> &Accounts {
        &self.0.accounts
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
