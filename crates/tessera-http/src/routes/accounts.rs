//! Accounts: registration.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::{Credentials, UserView};
use crate::json::ApiJson;
use crate::problem::{ApiError, JsonBodyProblems, Problem, ServiceProblems};
use crate::state::AppState;

/// Register an account.
///
/// Open by default; `registration = "closed"` turns it off. Passwords need at least 8 characters,
/// accept spaces and any Unicode, and must not be one of the most common passwords.
#[utoipa::path(
    post, path = "/v1/users", tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 201, description = "The account was created", body = UserView),
        (status = 403, description = "Registration is closed", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The username is taken", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn register(
    State(state): State<AppState>,
    crate::throttle::ClientIp(ip): crate::throttle::ClientIp,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    // Registrations spend the address's login budget: no account-creation floods.
    state.throttle().check(ip, None).await?;
    let user = state
        .accounts()
        .register(&body.username, &body.password)
        .await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
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
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Me {
    pub user: UserView,
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
pub async fn me(auth: crate::extract::AuthUser) -> Json<Me> {
    let auth_view = match &auth.model {
        crate::extract::AuthModel::Session(session) => AuthView {
            model: "session",
            session_id: Some(session.handle.to_string()),
            family_id: None,
            expires_at: None,
        },
        crate::extract::AuthModel::Token(claims) => AuthView {
            model: claims.claims().model.as_str(),
            session_id: None,
            family_id: Some(claims.claims().fid.clone()),
            expires_at: Some(claims.claims().exp),
        },
    };
    Json(Me {
        user: UserView::from(&*auth.user),
        auth: auth_view,
    })
}

/// Forward-auth: for a reverse proxy (nginx `auth_request`, Traefik ForwardAuth, Caddy
/// `forward_auth`) to ask whether a request may pass. 200 with the identity in headers, or 401.
///
/// Accepts any login model. Unsafe proxied requests with a cookie are not CSRF-checked here (the
/// proxy forwards this as a GET): apps behind forward-auth must defend their own unsafe routes.
#[utoipa::path(
    get, path = "/v1/verify", tag = "accounts",
    security(("bearer" = []), ("session_cookie" = []), ("hybrid_cookies" = [])),
    responses(
        (status = 200, description = "Authenticated; see the X-Tessera-* headers",
            headers(
                ("X-Tessera-User" = String, description = "The user id"),
                ("X-Tessera-Username" = String, description = "The username"),
                ("X-Tessera-Roles" = String, description = "Roles, comma-separated"),
                ("X-Tessera-Model" = String, description = "session, token or hybrid"),
            )),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn verify(auth: crate::extract::AuthUser) -> Result<impl IntoResponse, ApiError> {
    let model = match &auth.model {
        crate::extract::AuthModel::Session(_) => "session",
        crate::extract::AuthModel::Token(claims) => claims.claims().model.as_str(),
    };
    let header = |value: &str| {
        axum::http::HeaderValue::from_str(value).map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "an identity value cannot be sent as a header",
            )
        })
    };
    Ok((
        StatusCode::OK,
        [
            ("x-tessera-user", header(auth.user.id.as_str())?),
            ("x-tessera-username", header(auth.user.username.as_str())?),
            ("x-tessera-roles", header(&auth.user.roles.join(","))?),
            ("x-tessera-model", header(model)?),
        ],
    ))
}
