//! Extractors: a handler's signature says what it requires.
//!
//! - [`SessionAuth`]: a live session from the session cookie. On unsafe methods it also enforces the
//!   CSRF rules (same origin and the session's token), so a cookie-authenticated handler cannot
//!   forget them.
//! - [`AuthUser`]: the caller's identity, whichever model authenticated it.
//! - [`ClientMeta`]: user agent and socket IP, recorded with a session.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum_extra::extract::cookie::Cookie;
use tessera_core::token::{VerifiedClaims, VerifyError};
use tessera_core::{ClientInfo, Session, SessionId, User};

use crate::csrf;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::throttle::ClientIp;

/// The session cookie. `__Host-` makes browsers insist on Secure, Path=/ and no Domain, so a
/// sibling subdomain cannot plant or overwrite it.
pub const SESSION_COOKIE: &str = "__Host-tessera";

/// The session secret in the request's cookie, if it parses.
pub(crate) fn session_secret(headers: &HeaderMap) -> Option<SessionId> {
    cookie_value(headers, SESSION_COOKIE).and_then(|v| SessionId::parse(&v))
}

/// A request authenticated by the session cookie.
pub struct SessionAuth {
    pub session: Arc<Session>,
    pub user: Arc<User>,
    pub secret: SessionId,
}

impl FromRequestParts<AppState> for SessionAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = session_secret(&parts.headers).ok_or_else(ApiError::unauthenticated)?;
        let unsafe_method = csrf::is_unsafe(&parts.method);
        if unsafe_method {
            csrf::check_same_origin(&parts.headers, &state.0.trusted_origins)?;
        }
        let (mut session, user) = state
            .sessions()
            .find(&secret)
            .await?
            .ok_or_else(ApiError::unauthenticated)?;
        if unsafe_method {
            csrf::check_token(&parts.headers, &session.csrf_token)?;
        }
        // Only a request that passed every check keeps the session alive.
        if !state.sessions().record_activity(&mut session).await? {
            return Err(ApiError::unauthenticated());
        }
        Ok(Self {
            session,
            user,
            secret,
        })
    }
}

/// The hybrid model's access-token cookie (`__Host-`: Secure, Path=/, no Domain).
pub const HYBRID_ACCESS_COOKIE: &str = "__Host-tessera-at";
/// The hybrid model's refresh-token cookie, sent only to `/v1/hybrid` (so `__Secure-`, not
/// `__Host-`, which requires Path=/).
pub const HYBRID_REFRESH_COOKIE: &str = "__Secure-tessera-rt";
/// Where the refresh cookie is sent.
pub const HYBRID_REFRESH_PATH: &str = "/v1/hybrid";

/// The value of the credential cookie named exactly `name`. Names are compared as the browser
/// stores them, never decoded (`__%48ost-tessera` is not `__Host-tessera`). A request carrying the
/// cookie more than once gets `None`: a sibling subdomain can add a second cookie of that name,
/// and nothing tells which one this site set, so neither is trusted.
pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for cookie in Cookie::split_parse(text).flatten() {
            if cookie.name() == name {
                if found.is_some() {
                    return None;
                }
                found = Some(cookie.value().to_owned());
            }
        }
    }
    found
}

/// A request authenticated by the hybrid model's access-token cookie. On unsafe methods it also
/// enforces the CSRF rules: a same-site origin and the login's CSRF token (an HMAC over its
/// family id) in `X-CSRF-Token`.
pub struct HybridAuth {
    pub claims: VerifiedClaims,
}

impl HybridAuth {
    /// `Ok(None)` without the cookie; 401 for a cookie that does not verify.
    async fn from_cookie(parts: &Parts, state: &AppState) -> Result<Option<Self>, ApiError> {
        let Some(token) = cookie_value(&parts.headers, HYBRID_ACCESS_COOKIE) else {
            return Ok(None);
        };
        let unsafe_method = csrf::is_unsafe(&parts.method);
        if unsafe_method {
            csrf::check_same_origin(&parts.headers, &state.0.trusted_origins)?;
        }
        let claims = state.tokens().verify(&token).map_err(|reason| {
            if reason == VerifyError::StateUnavailable {
                return state_unavailable();
            }
            tracing::debug!(?reason, "hybrid access cookie refused");
            ApiError::unauthenticated()
        })?;
        if unsafe_method {
            check_hybrid_csrf(&parts.headers, state, claims.claims().fid.as_str())?;
        }
        Ok(Some(Self { claims }))
    }
}

/// Fail closed: the node cannot tell whether a token was revoked.
fn state_unavailable() -> ApiError {
    tessera_core::StoreError::Unavailable("the revocation state is being re-read".into()).into()
}

/// Checks `X-CSRF-Token` against the token of the login (family) `family`.
pub(crate) fn check_hybrid_csrf(
    headers: &HeaderMap,
    state: &AppState,
    family: &str,
) -> Result<(), ApiError> {
    let Some(sent) = headers.get(csrf::CSRF_HEADER) else {
        return Err(ApiError::forbidden(
            "csrf-token-missing",
            "this request needs the login's CSRF token in the X-CSRF-Token header (GET /v1/hybrid/session)",
        ));
    };
    let ok = sent.to_str().is_ok_and(|sent| {
        state
            .tokens()
            .keyring()
            .verify_hybrid_csrf_token(family, sent)
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "csrf-token-invalid",
            "the X-CSRF-Token header does not match this login's CSRF token",
        ))
    }
}

impl FromRequestParts<AppState> for HybridAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Self::from_cookie(parts, state)
            .await?
            .ok_or_else(ApiError::unauthenticated)
    }
}

/// A request authenticated by `Authorization: Bearer <access token>`. Tokens are read from that
/// header only, never from the query string or a form body. Needs no CSRF token: browsers never
/// attach the header by themselves.
pub struct BearerAuth {
    pub claims: VerifiedClaims,
}

/// The bearer token of a request: `Ok(None)` without an `Authorization` header, an error for a
/// header that is not a well-formed bearer credential.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    // Two credentials: refuse rather than guess which one the client meant.
    if values.next().is_some() {
        return Err(ApiError::invalid_token());
    }
    let value = value.to_str().map_err(|_| ApiError::invalid_token())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(ApiError::invalid_token)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::invalid_token());
    }
    Ok(Some(token))
}

impl FromRequestParts<AppState> for BearerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers)?.ok_or_else(ApiError::unauthenticated)?;
        match state.tokens().verify(token) {
            Ok(claims) => Ok(Self { claims }),
            Err(VerifyError::StateUnavailable) => Err(state_unavailable()),
            Err(reason) => {
                tracing::debug!(?reason, "bearer token refused");
                Err(ApiError::invalid_token())
            }
        }
    }
}

/// How the caller was authenticated.
pub enum AuthModel {
    Session(Arc<Session>),
    /// A bearer (token model) or cookie-held (hybrid model) access token.
    Token(Box<VerifiedClaims>),
}

/// The caller's identity, from any login model. A request with an `Authorization` header is judged
/// by it alone; otherwise by the session cookie.
pub struct AuthUser {
    /// The account, from this node's accounts cache (read from the store once, then kept current
    /// by the change feed).
    pub user: Arc<User>,
    pub model: AuthModel,
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.user.roles.iter().any(|r| r == "admin")
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let BearerAuth { claims } = BearerAuth::from_request_parts(parts, state).await?;
            let user = token_user(state, &claims)
                .await?
                .ok_or_else(ApiError::invalid_token)?;
            return Ok(Self {
                user,
                model: AuthModel::Token(Box::new(claims)),
            });
        }
        // The hybrid cookie, when it is there and valid; otherwise the session cookie.
        let hybrid = match HybridAuth::from_cookie(parts, state).await {
            Ok(found) => found,
            Err(e) if session_secret(&parts.headers).is_none() => return Err(e),
            Err(_) => None,
        };
        if let Some(HybridAuth { claims }) = hybrid {
            let user = token_user(state, &claims)
                .await?
                .ok_or_else(ApiError::unauthenticated)?;
            return Ok(Self {
                user,
                model: AuthModel::Token(Box::new(claims)),
            });
        }
        let auth = SessionAuth::from_request_parts(parts, state).await?;
        Ok(Self {
            user: auth.user,
            model: AuthModel::Session(auth.session),
        })
    }
}

/// The account a verified access token belongs to, from the accounts cache: `None` when it was
/// deleted or disabled since the token was issued.
async fn token_user(
    state: &AppState,
    claims: &VerifiedClaims,
) -> Result<Option<Arc<User>>, ApiError> {
    Ok(state
        .sessions()
        .users()
        .get(&claims.claims().sub)
        .await?
        .filter(|user| !user.disabled))
}

/// An authenticated caller with the `admin` role.
pub struct AdminUser(pub AuthUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if !user.is_admin() {
            return Err(ApiError::forbidden(
                "admin-only",
                "this route needs the admin role",
            ));
        }
        Ok(Self(user))
    }
}

/// What a session records about the client that created it.
pub struct ClientMeta(pub ClientInfo);

impl FromRequestParts<AppState> for ClientMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        // The address the throttle sees: the socket's, or the client behind a trusted proxy.
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        Ok(Self(ClientInfo {
            user_agent,
            ip: ip.map(|ip| ip.to_string()),
        }))
    }
}
