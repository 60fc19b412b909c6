//! Creating users: registration.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::{NewAccount, UserView};
use crate::json::ApiJson;
use crate::problem::{ApiError, JsonBodyProblems, Problem, ServiceProblems};
use crate::state::AppState;
use axum::http::HeaderMap;

/// Register an account.
///
/// Open by default; `registration = "closed"` turns it off. Passwords need at least 8 characters,
/// accept spaces and any Unicode, and must not be one of the most common passwords. With an
/// email address (required when `accounts.require_verified_email` is on), a verification mail
/// goes to it, in the language of the request's `Accept-Language` when the templates have it.
#[utoipa::path(
    post, path = "/v1/users", tag = "accounts",
    request_body = NewAccount,
    responses(
        (status = 201, description = "The account was created", body = UserView),
        (status = 403, description = "Registration is closed", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The username is taken, or another account has the email address", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this address, or too many mails to the email address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn register(
    State(state): State<AppState>,
    crate::client_ip::ClientIp(ip): crate::client_ip::ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewAccount>,
) -> Result<impl IntoResponse, ApiError> {
    // Registrations spend the address's login budget: no account-creation floods.
    state.throttle().spend_address(ip).await?;
    state
        .account_mail()
        .admit_registration(body.email.as_deref())
        .await?;
    let user = state
        .accounts()
        .register(&body.username, &body.password, body.email.as_deref())
        .await?;
    if user.email.is_some() && state.account_mail().mailer().enabled() {
        let language = super::account::mail_language(&state, &headers);
        // The account exists: a mail that cannot be queued now is asked for again later
        // (POST /v1/account/email/verification), not a failed registration.
        if let Err(e) = state
            .account_mail()
            .send_verification(&user, &language, None)
            .await
        {
            tracing::warn!(error = %e, user = %user.id, "could not queue the verification mail");
        }
    }
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}
