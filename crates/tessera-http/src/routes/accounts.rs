//! Accounts: registration.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::{Credentials, UserView};
use crate::json::ApiJson;
use crate::problem::{ApiError, Problem};
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
        (status = 422, description = "The username or password is not acceptable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    let user = state
        .accounts()
        .register(&body.username, &body.password)
        .await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

/// How the caller of `/v1/me` is authenticated.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AuthView {
    /// `session` (cookie); `token` and `hybrid` come with those models.
    #[schema(example = "session")]
    pub model: &'static str,
    /// The session's public id, for the session model.
    pub session_id: Option<String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Me {
    pub user: UserView,
    pub auth: AuthView,
}

/// The caller's identity, whichever login model authenticated it.
#[utoipa::path(
    get, path = "/v1/me", tag = "accounts",
    security(("session_cookie" = [])),
    responses(
        (status = 200, body = Me),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn me(auth: crate::extract::AuthUser) -> Json<Me> {
    let auth_view = match &auth.model {
        crate::extract::AuthModel::Session(session) => AuthView {
            model: "session",
            session_id: Some(session.handle.to_string()),
        },
    };
    Json(Me {
        user: UserView::from(&auth.user),
        auth: auth_view,
    })
}
