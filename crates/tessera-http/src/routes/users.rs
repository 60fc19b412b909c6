//! Creating users: registration.

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
        (status = 429, description = "Too many attempts from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn register(
    State(state): State<AppState>,
    crate::client_ip::ClientIp(ip): crate::client_ip::ClientIp,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    // Registrations spend the address's login budget: no account-creation floods.
    state.throttle().spend_address(ip).await?;
    let user = state
        .accounts()
        .register(&body.username, &body.password)
        .await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}
