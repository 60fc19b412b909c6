//! The hybrid model's extractors: the access token and the refresh token live in HttpOnly
//! cookies, and every unsafe request carries the login's CSRF token (an HMAC over its family id).
//! Each route's extractor carries its CSRF rule, so no handler checks it by hand.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use tessera_core::token::{VerifiedClaims, VerifyError};
use tessera_core::{FamilyId, LoginModel, RefreshFamily, RefreshToken, User};

use super::bearer::state_unavailable;
use super::cookies::{cookie_value, hybrid_refresh_token};
use crate::client_ip::ClientIp;
use crate::csrf;
use crate::problem::ApiError;
use crate::state::AppState;

/// A request authenticated by the hybrid model's access-token cookie. On unsafe methods it also
/// enforces the CSRF rules: a same-site origin and the login's CSRF token in `X-CSRF-Token`.
///
/// ```
/// # use std::sync::Arc;
/// # use axum::body::Body;
/// # use axum::http::Request;
/// # use tessera_core::{ClientInfo, LoginModel, Password, Services, ServicesConfig, Stores, SystemClock};
/// # async fn call(app: &axum::Router, request: Request<Body>) -> (u16, String) {
/// #     use tower::ServiceExt;
/// #     let response = app.clone().oneshot(request).await.unwrap();
/// #     let status = response.status().as_u16();
/// #     let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
/// #     (status, String::from_utf8_lossy(&body).into_owned())
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let (key, _) = tessera_core::token::MasterKey::generate().unwrap();
/// # let services = Services::build(Stores::from_one(tessera_store::MemoryStore::new()),
/// #     Arc::new(SystemClock), key, ServicesConfig::default()).await.unwrap();
/// # let _follower = services.spawn_follower();
/// # let state = tessera_http::AppState::new(services, Default::default()).unwrap();
/// # let alice = state.accounts().create("alice", &Password::new("correct horse battery"), vec![]).await.unwrap();
/// use axum::{Router, routing::{get, post}};
/// use tessera_http::extract::HybridAuth;
///
/// async fn page(auth: HybridAuth) -> String {
///     format!("hybrid login {}", auth.claims.claims().fid.as_str().len())
/// }
/// let app = Router::new()
///     .route("/page", get(page))
///     .route("/change", post(page))
///     .with_state(state.clone());
/// let pair = state.tokens().issue(&alice, LoginModel::Hybrid, ClientInfo::default()).await.unwrap();
/// let cookie = format!("{}={}", state.cookies().hybrid_access, pair.access_token);
/// let read = Request::get("/page").header("cookie", &cookie).body(Body::empty()).unwrap();
/// assert_eq!(call(&app, read).await.0, 200);
/// // Unsafe methods need the login's CSRF token.
/// let forged = Request::post("/change").header("cookie", &cookie).body(Body::empty()).unwrap();
/// assert_eq!(call(&app, forged).await.0, 403);
/// let csrf = state.tokens().keyring().hybrid_csrf_token(pair.family_id.as_str());
/// let own_page = Request::post("/change")
///     .header("cookie", &cookie)
///     .header("x-csrf-token", csrf)
///     .body(Body::empty())
///     .unwrap();
/// assert_eq!(call(&app, own_page).await.0, 200);
/// # }
/// ```
pub struct HybridAuth {
    /// The claims of the access token from the cookie, after its signature, lifetime and
    /// revocation were checked.
    pub claims: VerifiedClaims,
}

impl HybridAuth {
    /// `Ok(None)` without the cookie; 401 for a cookie that does not verify.
    pub(super) async fn from_cookie(
        parts: &Parts,
        state: &AppState,
    ) -> Result<Option<Self>, ApiError> {
        let Some(token) = cookie_value(&parts.headers, &state.0.cookies.hybrid_access) else {
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
        // Only a hybrid login's token lives in the cookie: a token-model token planted there
        // (a DPoP-bound one above all, whose proof a cookie cannot carry) is refused.
        if claims.claims().model != LoginModel::Hybrid || claims.claims().cnf.is_some() {
            tracing::debug!("a token of another login model in the hybrid access cookie refused");
            return Err(ApiError::unauthenticated());
        }
        if unsafe_method {
            csrf::check_hybrid_token(&parts.headers, state, claims.claims().fid.as_str())?;
        }
        Ok(Some(Self { claims }))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for HybridAuth
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Self::from_cookie(parts, &AppState::from_ref(state))
            .await?
            .ok_or_else(ApiError::unauthenticated)
    }
}

/// The live hybrid login named by the refresh cookie, and its user (for `GET /v1/hybrid/session`:
/// it works after the access cookie expired). A safe request: no CSRF token.
pub struct HybridLogin {
    /// The login's refresh family: its id, owner and expiry.
    pub family: RefreshFamily,
    /// The family's owner, read from the store; refused when disabled or deleted.
    pub user: User,
    /// The access cookie's claims, when it is there and still verifies.
    pub access: Option<VerifiedClaims>,
}

impl FromRequestParts<AppState> for HybridLogin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let refresh = hybrid_refresh_token(&parts.headers, &state.0.cookies)
            .ok_or_else(ApiError::unauthenticated)?;
        let family = state
            .tokens()
            .live_family_of(&refresh)
            .await?
            .filter(|family| family.model == LoginModel::Hybrid)
            .ok_or_else(ApiError::unauthenticated)?;
        let user = match state.accounts().user(&family.user_id).await? {
            Some(user) if user.is_active() => user,
            _ => return Err(ApiError::unauthenticated()),
        };
        let access = cookie_value(&parts.headers, &state.0.cookies.hybrid_access)
            .and_then(|token| state.tokens().verify(&token).ok())
            .filter(|claims| claims.claims().model == LoginModel::Hybrid);
        Ok(Self {
            family,
            user,
            access,
        })
    }
}

/// The refresh token of `POST /v1/hybrid/refresh`, once the request passed the CSRF rules and
/// spent one refresh of the client address's budget: a same-site origin, and the CSRF token of the login the refresh cookie belongs to. A token that
/// names no live login (rotated out, revoked) still needs the header, and goes on to the reuse
/// check: its CSRF token cannot be checked without using the token up.
pub struct HybridRefresh {
    /// The refresh token from the cookie, not yet rotated: the handler spends it.
    pub presented: RefreshToken,
}

impl FromRequestParts<AppState> for HybridRefresh {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        csrf::check_same_origin(&parts.headers, &state.0.trusted_origins)?;
        let Ok(ClientIp(ip)) = ClientIp::from_request_parts(parts, state).await;
        state.throttle().spend_refresh(ip).await?;
        let presented = hybrid_refresh_token(&parts.headers, &state.0.cookies)
            .ok_or(tessera_core::Error::InvalidGrant)?;
        match state.tokens().live_family_of(&presented).await? {
            // A token-model login's refresh token is not refreshed into cookies.
            Some(family) if family.model != LoginModel::Hybrid => {
                return Err(tessera_core::Error::InvalidGrant.into());
            }
            Some(family) => csrf::check_hybrid_token(&parts.headers, state, family.id.as_str())?,
            None => csrf::require_token_header(&parts.headers)?,
        }
        Ok(Self { presented })
    }
}

/// The hybrid login a logout ends: from the refresh cookie, or else from the access cookie (even
/// an expired one). With a login to end, the request must pass the CSRF rules (only the login's
/// own page ends it); with none there is nothing to protect, and the cookies are just cleared.
pub struct HybridLogout {
    /// The login to end; `None` when the cookies name no login, and only clearing them is left.
    pub family: Option<FamilyId>,
}

impl FromRequestParts<AppState> for HybridLogout {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let from_refresh = match hybrid_refresh_token(&parts.headers, &state.0.cookies) {
            Some(token) => state
                .tokens()
                .live_family_of(&token)
                .await?
                .filter(|f| f.model == LoginModel::Hybrid)
                .map(|f| f.id),
            None => None,
        };
        let family = from_refresh.or_else(|| {
            cookie_value(&parts.headers, &state.0.cookies.hybrid_access)
                .and_then(|token| state.tokens().decode_access_token_for_logout(&token))
        });
        if let Some(family) = &family {
            csrf::check_same_origin(&parts.headers, &state.0.trusted_origins)?;
            csrf::check_hybrid_token(&parts.headers, state, family.as_str())?;
        }
        Ok(Self { family })
    }
}

/// The refresh token of the hybrid login the browser already has, if any: a new hybrid login ends
/// it, so one cookie jar never holds two.
pub struct HybridRefreshCookie(pub Option<RefreshToken>);

impl FromRequestParts<AppState> for HybridRefreshCookie {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(hybrid_refresh_token(&parts.headers, &state.0.cookies)))
    }
}
