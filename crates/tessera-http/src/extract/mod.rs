//! Extractors: a handler's signature says what it requires, and an extractor that authenticates
//! with a cookie carries that route's CSRF rule, so a handler cannot forget it.
//!
//! - [`AuthUser`]: the caller's identity, whichever model authenticated it; [`AdminUser`]: one with
//!   the `admin` role.
//! - [`SessionAuth`] (session cookie), [`BearerAuth`] (`Authorization: Bearer`), [`HybridAuth`]
//!   (the hybrid access cookie): one model each.
//! - [`HybridLogin`], [`HybridRefresh`], [`HybridLogout`]: the hybrid routes that work from the
//!   refresh cookie.
//! - [`SessionCookie`], [`HybridRefreshCookie`]: the login a browser already has, which a new login
//!   replaces.
//! - [`ServiceClient`]: a resource server with HTTP Basic credentials (introspection, the
//!   revocation stream).
//! - [`ClientMeta`]: the client's address and user agent, recorded with a login.

mod bearer;
mod cookies;
mod hybrid;
mod service_client;
mod session;

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use tessera_core::token::VerifiedClaims;
use tessera_core::{ClientInfo, Session, User, UserAgent};

pub use bearer::BearerAuth;
pub(crate) use bearer::bearer_token;
pub use cookies::{DEVICE_COOKIE, HYBRID_ACCESS_COOKIE, HYBRID_REFRESH_COOKIE, SESSION_COOKIE};
pub(crate) use cookies::{cookie_value, session_secret};
pub use hybrid::{HybridAuth, HybridLogin, HybridLogout, HybridRefresh, HybridRefreshCookie};
pub use service_client::ServiceClient;
pub use session::{DeviceCookie, SessionAuth, SessionCookie};

use crate::client_ip::ClientIp;
use crate::problem::ApiError;
use crate::state::AppState;

/// How the caller was authenticated.
pub enum AuthModel {
    /// The session cookie, with the session it names (already checked live, and its activity
    /// recorded).
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
    /// Which login model authenticated the request, and its session or token claims.
    pub model: AuthModel,
}

impl AuthUser {
    /// Whether the account has the `admin` role, which the `/v1/admin` routes require.
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
        .filter(|user| user.is_active()))
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

/// The client: its address as the throttle sees it (the socket's, or the client behind a trusted
/// proxy), and what a login records about it.
pub struct ClientMeta {
    /// The client's address, which the login throttle counts by; `None` when the server has no
    /// socket address to go by (e.g. a router driven without `serve`).
    pub ip: Option<IpAddr>,
    /// The user agent (its first 256 characters) and the address, stored with a login so
    /// its owner can recognise it in the session list.
    pub info: ClientInfo,
}

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
            .map(UserAgent::new);
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        Ok(Self {
            ip,
            info: ClientInfo { user_agent, ip },
        })
    }
}
