//! An example resource service: an axum app whose routes are protected by `tessera-verify`.
//!
//! - `GET /public`: anyone.
//! - `GET /me`: a valid access token; answers with what the token says about its user.
//! - `GET /admin`: a valid access token with the `admin` role (403 otherwise).
//! - `GET /gateway/{*rest}`: no check of its own. It echoes the `X-Tessera-*` identity headers it
//!   received, as a service behind a gateway that asked Tessera's forward-auth endpoint
//!   (`/v1/verify`) would read them. Such a route must only be reachable through that gateway.
//! - `GET /readyz`: 200 once tokens can be checked (keys fetched, revocation stream current),
//!   503 before and while the stream is lost.

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use tessera_verify::{BuildError, StreamStatus, VerifiedToken, Verifier};

/// The service's routes, checking tokens with `verifier`.
pub fn app(verifier: Verifier) -> Router {
    Router::new()
        .route("/public", get(public))
        .route("/me", get(me))
        .route("/admin", get(admin))
        .route("/gateway/{*rest}", get(gateway))
        .route("/readyz", get(readyz))
        .with_state(verifier)
}

async fn public() -> Json<Value> {
    Json(json!({ "message": "anyone may read this" }))
}

/// Who the caller is, as the token says.
#[derive(serde::Serialize)]
struct Me<'a> {
    sub: &'a str,
    roles: &'a [String],
    client_id: Option<&'a str>,
    model: Option<&'a str>,
    expires_at: i64,
    kid: &'a str,
}

async fn me(token: VerifiedToken) -> Response {
    let c = token.claims();
    // Serialized straight from the claims (no intermediate JSON map): this route is the
    // service's hot path.
    Json(Me {
        sub: &c.sub,
        roles: &c.roles,
        client_id: c.client_id.as_deref(),
        model: c.model.as_deref(),
        expires_at: c.exp,
        kid: token.key_id(),
    })
    .into_response()
}

async fn admin(token: VerifiedToken) -> Response {
    if !token.has_role("admin") {
        return problem(StatusCode::FORBIDDEN, "this resource needs the admin role");
    }
    Json(json!({ "sub": token.subject(), "message": "welcome, administrator" })).into_response()
}

/// The identity headers a gateway forwarded, lower-cased, and the path asked for.
async fn gateway(Path(rest): Path<String>, headers: HeaderMap) -> Json<Value> {
    let mut identity = Map::new();
    for (name, value) in &headers {
        if name.as_str().starts_with("x-tessera-") {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            // A repeated header is shown as a list, never silently merged.
            match identity.get_mut(name.as_str()) {
                Some(Value::Array(values)) => values.push(Value::String(value)),
                Some(first) => *first = json!([first.take(), value]),
                None => {
                    identity.insert(name.as_str().to_owned(), Value::String(value));
                }
            }
        }
    }
    Json(json!({ "path": rest, "headers": identity }))
}

async fn readyz(State(verifier): State<Verifier>) -> Response {
    let status = verifier.status();
    let ready = status.keys_loaded
        && matches!(
            status.stream,
            StreamStatus::Live | StreamStatus::Grace | StreamStatus::Disabled
        );
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "stream": format!("{:?}", status.stream),
        "keys": status.keys,
    });
    (code, Json(body)).into_response()
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

/// The service's configuration, read from the environment.
///
/// | variable | default | |
/// |---|---|---|
/// | `TESSERA_URL` | (required) | the Tessera server's base URL: JWKS and revocation stream |
/// | `TESSERA_ISSUER` | `TESSERA_URL` | the `iss` of access tokens (the server's `tokens.issuer`, by default its `public_url`) |
/// | `TESSERA_AUDIENCE` | `tessera` | the `aud` of access tokens (`tokens.audience`) |
/// | `TESSERA_CLIENT_ID`, `TESSERA_CLIENT_SECRET` | | a service client of the server's `tokens.introspection_clients`, for the revocation stream |
/// | `TESSERA_REVOCATIONS` | `stream` | `off`: no revocation stream (revoked tokens stay accepted until they expire) |
/// | `LISTEN` | `127.0.0.1:3000` | the address to listen on |
#[derive(Clone)]
pub struct Config {
    /// The Tessera server's base URL (`TESSERA_URL`): the JWKS and the revocation stream are
    /// read from it.
    pub tessera_url: String,
    /// The `iss` a token must carry to be accepted (`TESSERA_ISSUER`).
    pub issuer: String,
    /// The `aud` a token must carry to be accepted (`TESSERA_AUDIENCE`).
    pub audience: String,
    /// The service client id and secret the revocation stream is read with; `None` when
    /// `TESSERA_REVOCATIONS=off`, and revoked tokens then stay accepted until they expire.
    /// `Debug` shows the id, never the secret.
    pub credentials: Option<(String, String)>,
    /// The address the service listens on (`LISTEN`).
    pub listen: SocketAddr,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("tessera_url", &self.tessera_url)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field(
                "client_id",
                &self.credentials.as_ref().map(|(id, _)| id.as_str()),
            )
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// An environment variable missing or wrong: the service refuses to start rather than guess.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(
    /// What to fix, naming the variable.
    pub String,
);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the configuration through `var` (`std::env::var(…).ok()` in `main`).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let tessera_url = get("TESSERA_URL").ok_or_else(|| {
            ConfigError("TESSERA_URL is required (e.g. http://localhost:8080)".into())
        })?;
        let issuer = get("TESSERA_ISSUER").unwrap_or_else(|| tessera_url.clone());
        let audience = get("TESSERA_AUDIENCE").unwrap_or_else(|| "tessera".into());
        let credentials = match (
            get("TESSERA_REVOCATIONS").as_deref(),
            get("TESSERA_CLIENT_ID"),
            get("TESSERA_CLIENT_SECRET"),
        ) {
            (Some("off"), None, None) => None,
            (Some("off"), _, _) => {
                return Err(ConfigError(
                    "TESSERA_REVOCATIONS=off and service credentials were both given: choose one"
                        .into(),
                ));
            }
            (None | Some("stream"), Some(id), Some(secret)) => Some((id, secret)),
            (None | Some("stream"), _, _) => {
                return Err(ConfigError(
                    "set TESSERA_CLIENT_ID and TESSERA_CLIENT_SECRET (a service client of the server's tokens.introspection_clients) to follow revocations, or TESSERA_REVOCATIONS=off".into(),
                ));
            }
            (Some(other), _, _) => {
                return Err(ConfigError(format!(
                    "TESSERA_REVOCATIONS must be stream or off, not {other:?}"
                )));
            }
        };
        let listen = match get("LISTEN") {
            None => SocketAddr::from(([127, 0, 0, 1], 3000)),
            Some(text) => text
                .parse()
                .map_err(|_| ConfigError(format!("LISTEN is not an address: {text:?}")))?,
        };
        Ok(Self {
            tessera_url,
            issuer,
            audience,
            credentials,
            listen,
        })
    }

    /// The verifier this configuration describes. Call inside a Tokio runtime.
    pub fn verifier(&self) -> Result<Verifier, BuildError> {
        let builder = Verifier::builder(&self.issuer, &self.audience).server_url(&self.tessera_url);
        match &self.credentials {
            Some((id, secret)) => builder.service_credentials(id, secret),
            None => builder.without_revocation_stream(),
        }
        .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_env(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn reads_the_environment() {
        let c = config(&[
            ("TESSERA_URL", "http://auth:8080"),
            ("TESSERA_CLIENT_ID", "orders"),
            ("TESSERA_CLIENT_SECRET", "s3cret"),
        ])
        .unwrap();
        assert_eq!(c.issuer, "http://auth:8080");
        assert_eq!(c.audience, "tessera");
        assert_eq!(c.listen, "127.0.0.1:3000".parse().unwrap());
        assert!(!format!("{c:?}").contains("s3cret"));

        let c = config(&[
            ("TESSERA_URL", "http://auth:8080"),
            ("TESSERA_ISSUER", "https://auth.example.com"),
            ("TESSERA_AUDIENCE", "orders-api"),
            ("TESSERA_REVOCATIONS", "off"),
            ("LISTEN", "0.0.0.0:9000"),
        ])
        .unwrap();
        assert_eq!(c.issuer, "https://auth.example.com");
        assert_eq!(c.audience, "orders-api");
        assert!(c.credentials.is_none());
        assert_eq!(c.listen.port(), 9000);
    }

    #[test]
    fn refuses_incomplete_or_contradictory_settings() {
        assert!(config(&[]).is_err());
        assert!(
            config(&[("TESSERA_URL", "http://a")]).is_err(),
            "no revocation choice"
        );
        assert!(
            config(&[("TESSERA_URL", "http://a"), ("TESSERA_CLIENT_ID", "x")]).is_err(),
            "an id without a secret"
        );
        assert!(
            config(&[
                ("TESSERA_URL", "http://a"),
                ("TESSERA_REVOCATIONS", "off"),
                ("TESSERA_CLIENT_ID", "x"),
                ("TESSERA_CLIENT_SECRET", "y"),
            ])
            .is_err()
        );
        assert!(
            config(&[
                ("TESSERA_URL", "http://a"),
                ("TESSERA_REVOCATIONS", "maybe")
            ])
            .is_err()
        );
        assert!(
            config(&[
                ("TESSERA_URL", "http://a"),
                ("TESSERA_REVOCATIONS", "off"),
                ("LISTEN", "port 80")
            ])
            .is_err()
        );
    }
}
