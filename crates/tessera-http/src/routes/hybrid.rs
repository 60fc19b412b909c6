//! The hybrid model (the usual compromise): the access token lives in an HttpOnly cookie, the
//! refresh token in another (both `__Host-` cookies, which no other site can set), and unsafe requests carry a CSRF token
//! bound to the login (an HMAC over its family id). Script never sees a token.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::Serialize;
use tessera_core::token::TokenPair;
use tessera_core::{LoginModel, User};
use utoipa::ToSchema;

use super::{Credentials, UserView};
use crate::csrf::SameOrigin;
use crate::extract::{
    ClientMeta, CookieNames, DeviceCookie, HybridLogin, HybridLogout, HybridRefresh,
    HybridRefreshCookie,
};
use crate::json::ApiJson;
use crate::problem::{ApiError, JsonBodyProblems, Problem, ServiceProblems};
use crate::routes::second_factor::{HybridLoginAnswer, SecondFactorRequired};
use crate::state::AppState;
use tessera_core::LoginStep;

/// A hybrid login: who, and the CSRF token for unsafe requests. The tokens are only in cookies.
#[derive(Serialize, ToSchema)]
pub struct HybridSession {
    /// The account logged in.
    pub user: UserView,
    /// Send it in `X-CSRF-Token` on every unsafe request (refresh and logout included).
    pub csrf_token: String,
    /// The login's id (refresh-token family), as `GET /v1/sessions` lists it.
    pub login_id: String,
    /// Seconds until the access-token cookie expires; refresh before.
    pub expires_in: u64,
}

pub(crate) fn access_cookie(names: &CookieNames, pair: &TokenPair) -> Cookie<'static> {
    access_token_cookie(names, pair.access_token.clone(), pair.expires_in)
}

/// The access-token cookie for `token`, which expires in `expires_in` seconds.
pub(crate) fn access_token_cookie(
    names: &CookieNames,
    token: String,
    expires_in: u64,
) -> Cookie<'static> {
    Cookie::build((names.hybrid_access.clone(), token))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Lax)
        .path("/")
        .max_age(time::Duration::seconds(
            i64::try_from(expires_in).unwrap_or(0),
        ))
        .build()
}

pub(crate) fn refresh_cookie(names: &CookieNames, pair: &TokenPair) -> Cookie<'static> {
    let seconds = (pair.refresh_expires_at.unix_millis() - pair.access_expires_at.unix_millis()
        + i64::try_from(pair.expires_in).unwrap_or(0) * 1000)
        .max(0)
        / 1000;
    Cookie::build((names.hybrid_refresh.clone(), pair.refresh_token.encode()))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(time::Duration::seconds(seconds))
        .build()
}

/// Expired cookies that replace both hybrid cookies (with the attributes their prefixes require).
pub(crate) fn cleared(jar: CookieJar, names: &CookieNames) -> CookieJar {
    let clear = |name: &str, path: &'static str, same_site: SameSite| {
        Cookie::build((name.to_owned(), ""))
            .http_only(true)
            .secure(true)
            .same_site(same_site)
            .path(path)
            .max_age(time::Duration::ZERO)
            .expires(time::OffsetDateTime::UNIX_EPOCH)
            .build()
    };
    jar.add(clear(&names.hybrid_access, "/", SameSite::Lax))
        .add(clear(&names.hybrid_refresh, "/", SameSite::Strict))
}

pub(crate) fn session_body(state: &AppState, user: &User, pair: &TokenPair) -> HybridSession {
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
/// `__Host-tessera-rt` (the refresh token; Secure, HttpOnly, SameSite=Strict, Path=/).
/// Cross-site requests are refused (login CSRF).
#[utoipa::path(
    post, path = "/v1/hybrid/login", tag = "hybrid",
    request_body = Credentials,
    responses(
        (status = 200, description = "Logged in, both cookies set (`HybridSession`); or, for an account with a second factor, a challenge to complete at POST /v1/login/second-factor (`SecondFactorRequired`, no cookie)", body = HybridLoginAnswer),
        (status = 401, description = "Invalid username or password", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Cross-site login refused", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn login(
    State(state): State<AppState>,
    _: SameOrigin,
    HybridRefreshCookie(previous): HybridRefreshCookie,
    DeviceCookie(device): DeviceCookie,
    client: ClientMeta,
    jar: CookieJar,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    let step = state
        .logins()
        .login_tokens(
            body.attempt(client, device.as_deref()),
            LoginModel::Hybrid,
            previous.as_ref(),
        )
        .await?;
    let login = match step {
        LoginStep::Done(login) => login,
        LoginStep::SecondFactor(pending) => {
            return Ok(Json(SecondFactorRequired::from(pending)).into_response());
        }
    };
    Ok(hybrid_login_response(&state, jar, login))
}

/// What a hybrid login answers: both cookies, the device cookie, and the login's CSRF token.
pub(crate) fn hybrid_login_response(
    state: &AppState,
    jar: CookieJar,
    login: tessera_core::TokenLogin,
) -> axum::response::Response {
    let body = session_body(state, &login.user, &login.pair);
    (
        jar.add(access_cookie(state.cookies(), &login.pair))
            .add(refresh_cookie(state.cookies(), &login.pair))
            .add(super::device_cookie(state.cookies(), login.device_token)),
        Json(body),
    )
        .into_response()
}

/// The current hybrid login and its CSRF token (after a page reload, say).
///
/// Authenticated by the refresh cookie, so it works after the access cookie expired.
#[utoipa::path(
    get, path = "/v1/hybrid/session", tag = "hybrid",
    security(("hybrid_refresh_cookie" = [])),
    responses(
        (status = 200, body = HybridSession),
        (status = 401, description = "No live hybrid login", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn current(State(state): State<AppState>, login: HybridLogin) -> Json<HybridSession> {
    let now = state.tokens().now().unix_seconds();
    let expires_in = login
        .access
        .map_or(0, |c| u64::try_from(c.claims().exp - now).unwrap_or(0));
    Json(HybridSession {
        user: (&login.user).into(),
        csrf_token: state
            .tokens()
            .keyring()
            .hybrid_csrf_token(login.family.id.as_str()),
        login_id: login.family.id.to_string(),
        expires_in,
    })
}

/// Refresh: rotates both cookies (same reuse rules as the token model).
#[utoipa::path(
    post, path = "/v1/hybrid/refresh", tag = "hybrid",
    security(("hybrid_refresh_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 200, description = "Both cookies are replaced", body = HybridSession),
        (status = 401, description = "No live refresh cookie", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many refreshes from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "CSRF token missing or wrong, or a cross-site request", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    client: crate::extract::ClientMeta,
    HybridRefresh { presented }: HybridRefresh,
    jar: CookieJar,
) -> Result<impl IntoResponse, ApiError> {
    let pair = state
        .tokens()
        .refresh_with_proof(&presented, None, Some(&client.info))
        .await?;
    let body = session_body(&state, &pair.user, &pair);
    Ok((
        jar.add(access_cookie(state.cookies(), &pair))
            .add(refresh_cookie(state.cookies(), &pair)),
        Json(body),
    ))
}

/// Log out: revokes the login (refresh and access tokens) and clears both cookies.
#[utoipa::path(
    delete, path = "/v1/hybrid/session", tag = "hybrid",
    security(
        (),
        ("hybrid_refresh_cookie" = [], "csrf_token" = []),
        ("hybrid_cookies" = [], "csrf_token" = []),
    ),
    responses(
        (status = 204, description = "Logged out; both cookies are cleared"),
        (status = 403, description = "CSRF token missing or wrong, or a cross-site request", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    HybridLogout { family }: HybridLogout,
    jar: CookieJar,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(family) = family {
        state.logins().logout_hybrid(&family).await?;
    }
    Ok((StatusCode::NO_CONTENT, cleared(jar, state.cookies())))
}
