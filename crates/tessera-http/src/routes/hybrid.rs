//! The hybrid model (the usual compromise): the access token lives in an HttpOnly cookie, the
//! refresh token in another one sent only to `/v1/hybrid`, and unsafe requests carry a CSRF token
//! bound to the login (an HMAC over its family id). Script never sees a token.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::Serialize;
use tessera_core::token::TokenPair;
use tessera_core::{LoginModel, RefreshToken, User};
use utoipa::ToSchema;

use super::{Credentials, UserView};
use crate::csrf;
use crate::extract::{
    ClientMeta, HYBRID_ACCESS_COOKIE, HYBRID_REFRESH_COOKIE, HYBRID_REFRESH_PATH,
    check_hybrid_csrf, cookie_value,
};
use crate::json::ApiJson;
use crate::problem::{ApiError, JsonBodyProblems, Problem, ServiceProblems};
use crate::state::AppState;
use crate::throttle::ClientIp;

/// A hybrid login: who, and the CSRF token for unsafe requests. The tokens are only in cookies.
#[derive(Serialize, ToSchema)]
pub struct HybridSession {
    pub user: UserView,
    /// Send it in `X-CSRF-Token` on every unsafe request (refresh and logout included).
    pub csrf_token: String,
    /// The login's id (refresh-token family), as `GET /v1/sessions` lists it.
    pub login_id: String,
    /// Seconds until the access-token cookie expires; refresh before.
    pub expires_in: u64,
}

fn access_cookie(pair: &TokenPair) -> Cookie<'static> {
    Cookie::build((HYBRID_ACCESS_COOKIE, pair.access_token.clone()))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Lax)
        .path("/")
        .max_age(time::Duration::seconds(
            i64::try_from(pair.expires_in).unwrap_or(0),
        ))
        .build()
}

fn refresh_cookie(pair: &TokenPair) -> Cookie<'static> {
    let seconds = (pair.refresh_expires_at.unix_millis() - pair.access_expires_at.unix_millis()
        + i64::try_from(pair.expires_in).unwrap_or(0) * 1000)
        .max(0)
        / 1000;
    Cookie::build((HYBRID_REFRESH_COOKIE, pair.refresh_token.encode()))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .path(HYBRID_REFRESH_PATH)
        .max_age(time::Duration::seconds(seconds))
        .build()
}

/// Expired cookies that replace both hybrid cookies (with the attributes their prefixes require).
fn cleared(jar: CookieJar) -> CookieJar {
    let clear = |name: &'static str, path: &'static str, same_site: SameSite| {
        Cookie::build((name, ""))
            .http_only(true)
            .secure(true)
            .same_site(same_site)
            .path(path)
            .max_age(time::Duration::ZERO)
            .expires(time::OffsetDateTime::UNIX_EPOCH)
            .build()
    };
    jar.add(clear(HYBRID_ACCESS_COOKIE, "/", SameSite::Lax))
        .add(clear(
            HYBRID_REFRESH_COOKIE,
            HYBRID_REFRESH_PATH,
            SameSite::Strict,
        ))
}

fn session_body(state: &AppState, user: &User, pair: &TokenPair) -> HybridSession {
    HybridSession {
        user: user.into(),
        csrf_token: state
            .tokens()
            .keyring()
            .hybrid_csrf_token(pair.family_id.as_str()),
        login_id: pair.family_id.to_string(),
        expires_in: pair.expires_in,
    }
}

/// Log in with the hybrid model.
///
/// Sets `__Host-tessera-at` (the access JWT; Secure, HttpOnly, SameSite=Lax, Path=/) and
/// `__Secure-tessera-rt` (the refresh token; Secure, HttpOnly, SameSite=Strict, Path=/v1/hybrid).
/// Cross-site requests are refused (login CSRF).
#[utoipa::path(
    post, path = "/v1/hybrid/login", tag = "hybrid",
    request_body = Credentials,
    responses(
        (status = 200, description = "Logged in; both cookies are set", body = HybridSession),
        (status = 401, description = "Invalid username or password", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Cross-site login refused", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    ClientIp(ip): ClientIp,
    ClientMeta(client): ClientMeta,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    csrf::check_same_origin(&headers, &state.0.trusted_origins)?;
    let user = super::authenticate(&state, ip, &client, &body, LoginModel::Hybrid).await?;
    // A login the browser already had ends: never two hybrid logins in one cookie jar.
    if let Some(previous) =
        cookie_value(&headers, HYBRID_REFRESH_COOKIE).and_then(|v| RefreshToken::parse(&v))
        && let Ok(Some(family)) = state.tokens().live_family_of(&previous).await
    {
        state
            .tokens()
            .revoke_family(&family.id, "replaced by a new login")
            .await?;
    }
    let pair = state
        .tokens()
        .issue(&user, LoginModel::Hybrid, client)
        .await?;
    state
        .logins()
        .enforce_cap(
            &user.id,
            &tessera_core::CurrentLogin::Family(pair.family_id.clone()),
        )
        .await?;
    let body = session_body(&state, &user, &pair);
    Ok((
        jar.add(access_cookie(&pair)).add(refresh_cookie(&pair)),
        Json(body),
    ))
}

/// The current hybrid login and its CSRF token (after a page reload, say).
///
/// Authenticated by the refresh cookie, so it works after the access cookie expired.
#[utoipa::path(
    get, path = "/v1/hybrid/session", tag = "hybrid",
    security(("hybrid_cookies" = [])),
    responses(
        (status = 200, body = HybridSession),
        (status = 401, description = "No live hybrid login", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn current(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<HybridSession>, ApiError> {
    let refresh = cookie_value(&headers, HYBRID_REFRESH_COOKIE)
        .and_then(|v| RefreshToken::parse(&v))
        .ok_or_else(ApiError::unauthenticated)?;
    let family = state
        .tokens()
        .live_family_of(&refresh)
        .await?
        .ok_or_else(ApiError::unauthenticated)?;
    let user = match state.accounts().user(&family.user_id).await? {
        Some(user) if !user.disabled => user,
        _ => return Err(ApiError::unauthenticated()),
    };
    let now = state.tokens().now().unix_seconds();
    let expires_in = cookie_value(&headers, HYBRID_ACCESS_COOKIE)
        .and_then(|t| state.tokens().verify(&t).ok())
        .map_or(0, |c| u64::try_from(c.claims().exp - now).unwrap_or(0));
    Ok(Json(HybridSession {
        user: (&user).into(),
        csrf_token: state
            .tokens()
            .keyring()
            .hybrid_csrf_token(family.id.as_str()),
        login_id: family.id.to_string(),
        expires_in,
    }))
}

/// Refresh: rotates both cookies (same reuse rules as the token model).
#[utoipa::path(
    post, path = "/v1/hybrid/refresh", tag = "hybrid",
    security(("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 200, description = "Both cookies are replaced", body = HybridSession),
        (status = 401, description = "No live refresh cookie", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "CSRF token missing or wrong, or a cross-site request", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Result<impl IntoResponse, ApiError> {
    csrf::check_same_origin(&headers, &state.0.trusted_origins)?;
    let presented = cookie_value(&headers, HYBRID_REFRESH_COOKIE)
        .and_then(|v| RefreshToken::parse(&v))
        .ok_or(tessera_core::Error::InvalidGrant)?;
    // The CSRF token is bound to the login: find the login first, without using the token up.
    // A rotated-out token finds no live family here, and goes on to the reuse check below.
    if let Some(family) = state.tokens().live_family_of(&presented).await? {
        check_hybrid_csrf(&headers, &state, family.id.as_str())?;
    } else if headers.get(csrf::CSRF_HEADER).is_none() {
        return Err(ApiError::forbidden(
            "csrf-token-missing",
            "this request needs the login's CSRF token in the X-CSRF-Token header",
        ));
    }
    let pair = state.tokens().refresh(&presented).await?;
    let body = session_body(&state, &pair.user, &pair);
    Ok((
        jar.add(access_cookie(&pair)).add(refresh_cookie(&pair)),
        Json(body),
    ))
}

/// Log out: revokes the login (refresh and access tokens) and clears both cookies.
#[utoipa::path(
    delete, path = "/v1/hybrid/session", tag = "hybrid",
    security(("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Logged out; both cookies are cleared"),
        (status = 403, description = "CSRF token missing or wrong, or a cross-site request", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Result<impl IntoResponse, ApiError> {
    let from_refresh =
        match cookie_value(&headers, HYBRID_REFRESH_COOKIE).and_then(|v| RefreshToken::parse(&v)) {
            Some(token) => state.tokens().live_family_of(&token).await?.map(|f| f.id),
            None => None,
        };
    let family = from_refresh.or_else(|| {
        cookie_value(&headers, HYBRID_ACCESS_COOKIE)
            .and_then(|t| state.tokens().decode_access_token_for_logout(&t))
    });
    // A live login is only ended by its own page; with none, there is nothing to protect.
    if let Some(family) = family {
        csrf::check_same_origin(&headers, &state.0.trusted_origins)?;
        check_hybrid_csrf(&headers, &state, family.as_str())?;
        state.tokens().revoke_family(&family, "logout").await?;
        state
            .logins()
            .record(
                tessera_core::EventKind::Logout,
                None,
                serde_json::json!({"login": family, "model": "hybrid"}),
            )
            .await;
    }
    Ok((StatusCode::NO_CONTENT, cleared(jar)))
}
