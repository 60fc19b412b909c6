//! Extractors: a handler's signature says what it requires.
//!
//! - [`SessionAuth`]: a live session from the session cookie. On unsafe methods it also enforces the
//!   CSRF rules (same origin and the session's token), so a cookie-authenticated handler cannot
//!   forget them.
//! - [`AuthUser`]: the caller's identity, whichever model authenticated it.
//! - [`ClientMeta`]: user agent and socket IP, recorded with a session.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use axum_extra::extract::cookie::CookieJar;
use tessera_core::{ClientInfo, Session, SessionId, User};

use crate::csrf;
use crate::problem::ApiError;
use crate::state::AppState;

/// The session cookie. `__Host-` makes browsers insist on Secure, Path=/ and no Domain, so a
/// sibling subdomain cannot plant or overwrite it.
pub const SESSION_COOKIE: &str = "__Host-tessera";

/// The session secret in the request's cookie, if it parses.
pub(crate) fn session_secret(parts: &Parts) -> Option<SessionId> {
    CookieJar::from_headers(&parts.headers)
        .get(SESSION_COOKIE)
        .and_then(|c| SessionId::parse(c.value()))
}

/// A request authenticated by the session cookie.
pub struct SessionAuth {
    pub session: Session,
    pub user: User,
    pub secret: SessionId,
}

impl FromRequestParts<AppState> for SessionAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = session_secret(parts).ok_or_else(ApiError::unauthenticated)?;
        let (session, user) = state
            .sessions()
            .authenticate(&secret)
            .await?
            .ok_or_else(ApiError::unauthenticated)?;
        if csrf::is_unsafe(&parts.method) {
            csrf::check_same_origin(&parts.headers, &state.0.trusted_origins)?;
            csrf::check_token(&parts.headers, &session.csrf_token)?;
        }
        Ok(Self {
            session,
            user,
            secret,
        })
    }
}

/// How the caller was authenticated.
pub enum AuthModel {
    Session(Box<Session>),
}

/// The caller's identity, from any login model.
pub struct AuthUser {
    pub user: User,
    pub model: AuthModel,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = SessionAuth::from_request_parts(parts, state).await?;
        Ok(Self {
            user: auth.user,
            model: AuthModel::Session(Box::new(auth.session)),
        })
    }
}

/// What a session records about the client that created it.
pub struct ClientMeta(pub ClientInfo);

impl<S: Send + Sync> FromRequestParts<S> for ClientMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        // The socket address only: forwarded headers are trusted once trusted proxies exist.
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        Ok(Self(ClientInfo { user_agent, ip }))
    }
}
