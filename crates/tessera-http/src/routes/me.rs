//! The caller's own account, whatever the login model: who they are, their logins, their password.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::{Deserialize, Serialize};
use tessera_core::{CurrentLogin, LoginInfo, Password, Timestamp};
use utoipa::ToSchema;

use crate::extract::{AuthModel, AuthUser, ClientMeta, Privileged};
use crate::json::ApiJson;
use crate::problem::{ApiError, JsonBodyProblems, Problem, ServiceProblems};
use crate::routes::UserView;
use crate::routes::session::{SessionInfo, session_cookie};
use crate::state::AppState;

/// One of the caller's logins.
#[derive(Serialize, ToSchema)]
pub struct LoginView {
    /// `ses_…` for a session, `fam_…` for a token or hybrid login.
    pub id: String,
    /// `session`, `token` or `hybrid`.
    pub model: String,
    /// When the user logged in.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// The last recorded use: a request with the session, or a refresh of the tokens.
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: Timestamp,
    /// When the login ends unless used again (idle timeout), or at its absolute lifetime if
    /// sooner.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// The `User-Agent` the client sent at login, if any.
    pub user_agent: Option<String>,
    /// The client's address at login, if known.
    pub ip: Option<String>,
    /// The login this request came with.
    pub current: bool,
}

impl From<LoginInfo> for LoginView {
    fn from(l: LoginInfo) -> Self {
        Self {
            id: l.id,
            model: l.model.as_str().to_owned(),
            created_at: l.created_at,
            last_seen_at: l.last_seen_at,
            expires_at: l.expires_at,
            user_agent: l.user_agent,
            ip: l.ip,
            current: l.current,
        }
    }
}

pub(crate) fn current_login(auth: &AuthUser) -> CurrentLogin {
    match &auth.model {
        AuthModel::Session(s) => CurrentLogin::Session(s.handle.clone()),
        AuthModel::Token(c) => CurrentLogin::Family(c.family_id().clone()),
    }
}

/// How the caller of `/v1/me` is authenticated.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AuthView {
    /// `session` (cookie), `token` (bearer) or `hybrid` (token in a cookie).
    #[schema(example = "session")]
    pub model: &'static str,
    /// The session's public id, for the session model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The login (refresh-token family) the access token belongs to, for the token models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_id: Option<String>,
    /// When the credential expires: the access token's `exp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// How the user authenticated for this login (`amr`, `acr`, `auth_time`).
    pub authentication: crate::routes::second_factor::AuthenticationView,
}

/// The caller of `GET /v1/me`: who they are, and how this request was authenticated.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The caller's account.
    pub user: UserView,
    /// The login model and credential this request came with.
    pub auth: AuthView,
}

/// The caller's identity, whichever login model authenticated it.
#[utoipa::path(
    get, path = "/v1/me", tag = "accounts",
    security(("bearer" = []), ("session_cookie" = []), ("hybrid_cookies" = [])),
    responses(
        (status = 200, body = Me),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn me(State(state): State<AppState>, auth: AuthUser) -> Response {
    // The body borrows from the caller's cached account and credential rather than copying them
    // into a `Me`: the same JSON (the `Me` schema), with no allocation but the body's own.
    #[derive(Serialize)]
    struct UserBody<'a> {
        id: &'a tessera_core::UserId,
        username: &'a tessera_core::Username,
        roles: &'a [String],
        created_at: Timestamp,
        #[serde(skip_serializing_if = "Option::is_none")]
        email: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        email_verified: Option<bool>,
    }
    #[derive(Serialize)]
    struct AuthBody<'a> {
        model: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<&'a tessera_core::SessionHandle>,
        #[serde(skip_serializing_if = "Option::is_none")]
        family_id: Option<&'a tessera_core::FamilyId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_at: Option<i64>,
        authentication: AuthenticationBody,
    }
    /// `AuthenticationView`'s JSON, from static text.
    #[derive(Serialize)]
    struct AuthenticationBody {
        amr: &'static [&'static str],
        acr: &'static str,
        auth_time: Timestamp,
        #[serde(skip_serializing_if = "Option::is_none")]
        second_factor_at: Option<Timestamp>,
    }
    #[derive(Serialize)]
    struct MeBody<'a> {
        user: UserBody<'a>,
        auth: AuthBody<'a>,
    }
    let user = &*auth.user;
    let context = auth.auth_context();
    let authentication = AuthenticationBody {
        amr: context.amr(),
        acr: context.acr(),
        auth_time: context.auth_time,
        second_factor_at: context.second_factor_at(),
    };
    let auth_body = match &auth.model {
        AuthModel::Session(session) => AuthBody {
            model: "session",
            session_id: Some(&session.handle),
            family_id: None,
            expires_at: None,
            authentication,
        },
        AuthModel::Token(claims) => AuthBody {
            model: claims.claims().model.as_str(),
            session_id: None,
            family_id: Some(&claims.claims().fid),
            expires_at: Some(claims.claims().exp),
            authentication,
        },
    };
    Json(MeBody {
        user: UserBody {
            id: &user.id,
            username: &user.username,
            roles: &user.roles,
            created_at: user.created_at,
            email: user.email.as_ref().map(|e| e.address.as_str()),
            // With verified addresses required, the answer is always there (false without an
            // address), as in the access token.
            email_verified: match &user.email {
                Some(email) => Some(email.verified),
                None => state
                    .accounts()
                    .config()
                    .require_verified_email
                    .then_some(false),
            },
        },
        auth: auth_body,
    })
    .into_response()
}

/// List my logins: sessions, token and hybrid logins alike.
#[utoipa::path(
    get, path = "/v1/sessions", tag = "account",
    security(("bearer" = []), ("session_cookie" = []), ("hybrid_cookies" = [])),
    responses(
        (status = 200, body = Vec<LoginView>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<Vec<LoginView>>, ApiError> {
    let logins = state
        .logins()
        .list(&auth.user.id, &current_login(&auth))
        .await?;
    Ok(Json(logins.into_iter().map(LoginView::from).collect()))
}

/// End one of my logins.
#[utoipa::path(
    delete, path = "/v1/sessions/{id}", tag = "account",
    params(("id" = String, Path, description = "A login id from GET /v1/sessions")),
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Ended"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such login of mine", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn end_one(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .logins()
        .end(&auth.user.id, &id, "ended by the user")
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "you have no live login {id:?}"
        )))
    }
}

/// The answer of a route that ends logins.
#[derive(Serialize, ToSchema)]
pub struct Ended {
    /// How many logins ended.
    pub ended: usize,
}

/// End all my other logins (every one but the current).
#[utoipa::path(
    delete, path = "/v1/sessions", tag = "account",
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 200, body = Ended),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn end_others(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<Ended>, ApiError> {
    let ended = state
        .logins()
        .end_others(&auth.user.id, &current_login(&auth), "ended by the user")
        .await?;
    Ok(Json(Ended { ended }))
}

/// The body of `POST /v1/account/password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The password the account has now: a stolen session or token alone cannot change it.
    #[schema(value_type = String, format = Password)]
    pub current_password: Password,
    /// The password to set: it must meet the server's password policy, as at registration (by
    /// default 8 to 1,024 characters, not a common password), and differ from the current one.
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 1024)]
    pub new_password: Password,
}

/// Change my password.
///
/// Needs the current password; privileged (an account with a second factor must have used it
/// within `accounts.privileged_max_age`: step up at `POST /v1/account/step-up` first). Every other login ends, and access tokens issued before stop
/// working at once — a token or hybrid caller refreshes; a session caller gets a new session id
/// (a new cookie and CSRF token in the answer).
#[utoipa::path(
    post, path = "/v1/account/password", tag = "account",
    request_body = PasswordChange,
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 200, description = "Changed; a session caller gets its new session", body = SessionInfo),
        (status = 204, description = "Changed (token and hybrid callers)"),
        (status = 401, description = "Not authenticated, or the second factor was not used recently enough (`insufficient-user-authentication`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The current password is not correct, or a cross-site request or a missing CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    jar: CookieJar,
    Privileged(auth): Privileged,
    client: ClientMeta,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<Response, ApiError> {
    let current = current_login(&auth);
    let jti = match &auth.model {
        AuthModel::Token(c) => Some(c.claims().jti.clone()),
        AuthModel::Session(_) => None,
    };
    state
        .logins()
        .change_password(
            &auth.user,
            &body.current_password,
            &body.new_password,
            &current,
            jti.as_deref(),
            client.ip,
        )
        .await?;
    match auth.model {
        // A privilege change: the session gets a new id.
        AuthModel::Session(old) => {
            state.sessions().end(&old.handle).await?;
            // The new session is the same login: it keeps how the user authenticated.
            let (secret, session) = state
                .sessions()
                .start_with(&auth.user, client.info, old.auth)
                .await?;
            let cookie = session_cookie(
                state.cookies(),
                &secret,
                &session,
                session.created_at.unix_millis(),
            );
            Ok((
                jar.add(cookie),
                Json(SessionInfo::new(&auth.user, &session)),
            )
                .into_response())
        }
        AuthModel::Token(_) => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// The body of `DELETE /v1/account`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountDeletion {
    /// The account's current password: a stolen session or token alone cannot delete it.
    #[schema(value_type = String, format = Password)]
    pub password: Password,
}

/// Delete my account.
///
/// Needs the current password and, for an account with a second factor, that factor used within
/// `accounts.privileged_max_age` (step up first). The account and everything of it are erased — sessions and
/// their data, token and hybrid logins, roles, the password — and every credential of it stops
/// working at once, on every node and at resource servers following the revocation stream. The
/// audit log keeps the user id (not the username) and records the deletion. The username is free
/// to register again, for a new account that inherits nothing. The session and hybrid cookies
/// are cleared.
#[utoipa::path(
    delete, path = "/v1/account", tag = "account",
    request_body = AccountDeletion,
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Deleted; the session and hybrid cookies are cleared"),
        (status = 401, description = "Not authenticated, or the second factor is not recent enough (`insufficient-user-authentication`: step up first)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The password is not correct, or a cross-site request or a missing CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn delete_account(
    State(state): State<AppState>,
    jar: CookieJar,
    Privileged(auth): Privileged,
    client: ClientMeta,
    ApiJson(body): ApiJson<AccountDeletion>,
) -> Result<Response, ApiError> {
    match state
        .logins()
        .delete_own_account(&auth.user, &body.password, client.ip)
        .await
    {
        Ok(()) => {}
        Err(tessera_core::Error::WrongCurrentPassword) => {
            return Err(
                ApiError::forbidden("wrong-password", "password is not correct")
                    .with_field("password"),
            );
        }
        Err(e) => return Err(e.into()),
    }
    let jar = crate::routes::hybrid::cleared(
        jar.add(crate::routes::session::removal_cookie(state.cookies())),
        state.cookies(),
    );
    Ok((StatusCode::NO_CONTENT, jar).into_response())
}
