//! The session model: login with a cookie, the current session, logout, CSRF token, session data.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::Serialize;
use serde_json::Value;
use tessera_core::{Session, SessionId};
use utoipa::ToSchema;

use super::{Credentials, SessionView, UserView};
use crate::csrf::SameOrigin;
use crate::extract::{ClientMeta, CookieNames, DeviceCookie, SessionAuth, SessionCookie};
use crate::json::ApiJson;
use crate::problem::{ApiError, JsonBodyProblems, Problem, ServiceProblems};
use crate::state::AppState;

/// The current session, its user, and its CSRF token.
#[derive(Serialize, ToSchema)]
pub struct SessionInfo {
    /// The account logged in.
    pub user: UserView,
    /// The session itself: its id, timestamps and the client it was created from.
    pub session: SessionView,
    /// Send it back in `X-CSRF-Token` on every unsafe request made with the session cookie.
    pub csrf_token: String,
}

impl SessionInfo {
    pub(crate) fn new(auth_user: &tessera_core::User, session: &Session) -> Self {
        Self {
            user: auth_user.into(),
            session: session.into(),
            csrf_token: session.csrf_token.encode(),
        }
    }
}

/// The session's CSRF token, for a page that needs it again (e.g. after a reload).
#[derive(Serialize, ToSchema)]
pub struct CsrfTokenBody {
    /// Send it back in `X-CSRF-Token` on every unsafe request made with the session cookie; it
    /// stays the same for the life of the session.
    pub csrf_token: String,
}

pub(crate) fn session_cookie(
    names: &CookieNames,
    secret: &SessionId,
    session: &Session,
    now_ms: i64,
) -> Cookie<'static> {
    let remaining_secs = (session.absolute_expires_at.unix_millis() - now_ms).max(0) / 1000;
    Cookie::build((names.session.clone(), secret.encode()))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Lax)
        .path("/")
        .max_age(time::Duration::seconds(remaining_secs))
        .build()
}

/// An expired cookie that replaces the session cookie. It keeps `Secure` and `Path=/`, which the
/// `__Host-` prefix requires for a browser to accept the removal.
pub(crate) fn removal_cookie(names: &CookieNames) -> Cookie<'static> {
    Cookie::build((names.session.clone(), ""))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Lax)
        .path("/")
        .max_age(time::Duration::ZERO)
        .expires(time::OffsetDateTime::UNIX_EPOCH)
        .build()
}

/// Log in with a cookie session.
///
/// Sets `__Host-tessera` (Secure, HttpOnly, SameSite=Lax, Path=/) to a fresh session id: a cookie
/// the client brought is never adopted. Cross-site requests are refused (login CSRF).
#[utoipa::path(
    post, path = "/v1/session/login", tag = "session",
    request_body = Credentials,
    responses(
        (status = 200, description = "Logged in, the session cookie set (`SessionInfo`); or, for an account with a second factor, a challenge to complete at POST /v1/login/second-factor (`SecondFactorRequired`, no cookie)", body = crate::routes::second_factor::SessionLoginAnswer,
            headers(("Set-Cookie" = String, description = "__Host-tessera=…; Secure; HttpOnly; SameSite=Lax; Path=/ (and __Host-tessera-device, the device cookie: SameSite=Strict)"))),
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
    SessionCookie(previous): SessionCookie,
    DeviceCookie(device): DeviceCookie,
    client: ClientMeta,
    jar: CookieJar,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    let step = state
        .logins()
        .login_session(body.attempt(client, device.as_deref()), previous.as_ref())
        .await?;
    match step {
        tessera_core::LoginStep::Done(login) => Ok(session_login_response(&state, jar, login)),
        tessera_core::LoginStep::SecondFactor(pending) => Ok(Json(
            crate::routes::second_factor::SecondFactorRequired::from(pending),
        )
        .into_response()),
    }
}

/// What a session login answers: the session and device cookies, and the session with its CSRF
/// token.
pub(crate) fn session_login_response(
    state: &AppState,
    jar: CookieJar,
    login: tessera_core::SessionLogin,
) -> axum::response::Response {
    let session = &login.session;
    let cookie = session_cookie(
        state.cookies(),
        &login.secret,
        session,
        session.created_at.unix_millis(),
    );
    (
        jar.add(cookie)
            .add(super::device_cookie(state.cookies(), login.device_token)),
        Json(SessionInfo::new(&login.user, session)),
    )
        .into_response()
}

/// The current session and user.
#[utoipa::path(
    get, path = "/v1/session", tag = "session",
    security(("session_cookie" = [])),
    responses(
        (status = 200, body = SessionInfo),
        (status = 401, description = "No live session", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn current(auth: SessionAuth) -> Json<SessionInfo> {
    Json(SessionInfo::new(&auth.user, &auth.session))
}

/// The session's CSRF token.
#[utoipa::path(
    get, path = "/v1/session/csrf", tag = "session",
    security(("session_cookie" = [])),
    responses(
        (status = 200, body = CsrfTokenBody),
        (status = 401, description = "No live session", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn csrf_token(auth: SessionAuth) -> Json<CsrfTokenBody> {
    Json(CsrfTokenBody {
        csrf_token: auth.session.csrf_token.encode(),
    })
}

/// Log out: deletes the session on the server and expires the cookie.
#[utoipa::path(
    delete, path = "/v1/session", tag = "session",
    security(("session_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Logged out; the cookie is cleared"),
        (status = 401, description = "No live session", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "CSRF token missing or wrong, or a cross-site request", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    jar: CookieJar,
    auth: SessionAuth,
) -> Result<impl IntoResponse, ApiError> {
    state
        .logins()
        .logout_session(&auth.user.id, &auth.session.handle)
        .await?;
    Ok((
        StatusCode::NO_CONTENT,
        jar.add(removal_cookie(state.cookies())),
    ))
}

/// The session data: a JSON object the application keeps with the session.
#[utoipa::path(
    get, path = "/v1/session/data", tag = "session",
    security(("session_cookie" = [])),
    responses(
        (status = 200, description = "The session data document", body = Object),
        (status = 401, description = "No live session", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn get_data(auth: SessionAuth) -> Json<Value> {
    Json(auth.session.data.to_value())
}

/// Change the session data with a JSON merge patch (RFC 7396).
///
/// Concurrent patches are applied one after the other; none is lost.
#[utoipa::path(
    patch, path = "/v1/session/data", tag = "session",
    security(("session_cookie" = [], "csrf_token" = [])),
    request_body(content = Object, content_type = "application/merge-patch+json",
        description = "A JSON merge patch: members set to null are removed"),
    responses(
        (status = 200, description = "The session data after the patch", body = Object),
        (status = 401, description = "No live session", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "CSRF token missing or wrong, or a cross-site request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Too many concurrent changes to the same session data; retry", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn patch_data(
    State(state): State<AppState>,
    auth: SessionAuth,
    ApiJson(patch): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let data = state.sessions().patch_data(&auth.secret, &patch).await?;
    Ok(Json(data))
}
