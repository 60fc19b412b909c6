//! The account by mail: recovery of a forgotten password, verification of an address, and
//! changing the address.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use tessera_core::Password;
use utoipa::ToSchema;

use crate::client_ip::ClientIp;
use crate::extract::{ClientMeta, Privileged};
use crate::json::ApiJson;
use crate::problem::{ApiError, JsonBodyProblems, Problem, ServiceProblems};
use crate::routes::UserView;
use crate::state::AppState;

/// The language a mail is written in: the best one of the templates' for the request's
/// `Accept-Language`.
pub(crate) fn mail_language(state: &AppState, headers: &HeaderMap) -> String {
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    state.account_mail().templates().negotiate(accept)
}

/// The body of `POST /v1/account/recovery` and `POST /v1/account/email/verification`: the
/// account, by its username or its email address.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountName {
    /// The account's username or its email address (also accepted under the name `email`).
    #[schema(example = "alice", min_length = 1, max_length = 254)]
    #[serde(alias = "email")]
    pub username: String,
}

/// The answer to a request for a mail: the same whether or not the account exists.
#[derive(Serialize, ToSchema)]
pub struct MailRequested {
    /// Always `accepted`.
    #[schema(example = "accepted")]
    pub status: &'static str,
    /// What happens next.
    pub detail: &'static str,
}

/// Ask for a recovery mail (forgotten password).
///
/// Always answers 202 with the same body, whether or not the account exists or has an address,
/// and in the same time: the account is looked up after the answer. If it exists and has an
/// email address, a mail goes there with a single-use code and a link to set a new password,
/// valid for `accounts.recovery_lifetime` (15 minutes by default). A newer request voids the
/// codes of older ones. Throttled per client address and per account name or address.
#[utoipa::path(
    post, path = "/v1/account/recovery", tag = "account",
    request_body = AccountName,
    responses(
        (status = 202, description = "Accepted (whether or not the account exists)", body = MailRequested),
        (status = 404, description = "This server sends no mail", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this address or for this account; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn request_recovery(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AccountName>,
) -> Result<impl IntoResponse, ApiError> {
    let language = mail_language(&state, &headers);
    state
        .account_mail()
        .request_recovery(&body.username, language, ip)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(MailRequested {
            status: "accepted",
            detail: "if an account with an email address matches, a message with a recovery code is on its way to that address",
        }),
    ))
}

/// The body of `POST /v1/account/recovery/complete`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoveryCompletion {
    /// The code from the recovery mail (also in its link, as `code=`).
    pub code: String,
    /// The password to set: the same rules as at registration.
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 1024)]
    pub new_password: Password,
}

/// The answer of a completed recovery.
#[derive(Serialize, ToSchema)]
pub struct Recovered {
    /// The account whose password was set; every login of it has ended.
    pub user_id: String,
}

/// Set a new password with a recovery code.
///
/// The code works once, and only until it expires or a newer recovery is asked for. Every login
/// of the account ends, in every model and on every node, and every access token issued until now
/// is refused. Log in with the new password afterwards.
#[utoipa::path(
    post, path = "/v1/account/recovery/complete", tag = "account",
    request_body = RecoveryCompletion,
    responses(
        (status = 200, description = "The password is set", body = Recovered),
        (status = 400, description = "The code is unknown, used, expired or replaced", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn complete_recovery(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<RecoveryCompletion>,
) -> Result<Json<Recovered>, ApiError> {
    let user = state
        .account_mail()
        .complete_recovery(&body.code, &body.new_password, ip)
        .await?;
    Ok(Json(Recovered {
        user_id: user.to_string(),
    }))
}

/// Ask for a new verification mail.
///
/// For an account whose address is not verified yet (whose logins may be refused until it is),
/// without being logged in. Answers like `POST /v1/account/recovery`: always 202 with the same
/// body, whether or not the account exists.
#[utoipa::path(
    post, path = "/v1/account/email/verification", tag = "account",
    request_body = AccountName,
    responses(
        (status = 202, description = "Accepted (whether or not the account exists)", body = MailRequested),
        (status = 404, description = "This server sends no mail", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this address or for this account; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn request_verification(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AccountName>,
) -> Result<impl IntoResponse, ApiError> {
    let language = mail_language(&state, &headers);
    state
        .account_mail()
        .request_verification(&body.username, language, ip)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(MailRequested {
            status: "accepted",
            detail: "if an account with an unverified email address matches, a message with a verification code is on its way to that address",
        }),
    ))
}

/// The body of `POST /v1/account/email/verify`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificationCode {
    /// The code from the verification mail (also in its link, as `code=`).
    pub code: String,
}

/// The answer of a verified address.
#[derive(Serialize, ToSchema)]
pub struct Verified {
    /// The account whose address is now verified.
    pub user_id: String,
    /// Always `true`.
    pub email_verified: bool,
}

/// Verify an email address with the code mailed to it.
///
/// Needs no login (an account may be refused logins until its address is verified). The code
/// works once, and only while the account still has the address it was mailed to.
#[utoipa::path(
    post, path = "/v1/account/email/verify", tag = "account",
    request_body = VerificationCode,
    responses(
        (status = 200, description = "The address is verified", body = Verified),
        (status = 400, description = "The code is unknown, used, expired, replaced, or for an address the account no longer has", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn verify_email(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<VerificationCode>,
) -> Result<Json<Verified>, ApiError> {
    let user = state.account_mail().verify_email(&body.code, ip).await?;
    Ok(Json(Verified {
        user_id: user.to_string(),
        email_verified: true,
    }))
}

/// The body of `PUT /v1/account/email`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailChange {
    /// The new address, or `null` to remove it (refused when the server requires verified
    /// addresses).
    #[schema(example = "alice@example.org")]
    pub email: Option<String>,
    /// The password the account has now: a stolen session or token alone cannot change where
    /// recovery mail goes.
    #[schema(value_type = String, format = Password)]
    pub current_password: Password,
}

/// Change my email address.
///
/// Needs the current password; privileged (an account with a second factor must have used it
/// within `accounts.privileged_max_age`: step up at `POST /v1/account/step-up` first). The new address starts unverified and gets a verification mail;
/// the old one, if any, gets a notice of the change. Giving the address the account already has
/// changes nothing.
#[utoipa::path(
    put, path = "/v1/account/email", tag = "account",
    request_body = EmailChange,
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 200, description = "Changed", body = UserView),
        (status = 401, description = "Not authenticated, or the second factor was not used recently enough (`insufficient-user-authentication`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The current password is not correct, or a cross-site request or a missing CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another account has this address", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn change_email(
    State(state): State<AppState>,
    Privileged(auth): Privileged,
    client: ClientMeta,
    headers: HeaderMap,
    ApiJson(body): ApiJson<EmailChange>,
) -> Result<Json<UserView>, ApiError> {
    let language = mail_language(&state, &headers);
    let user = state
        .account_mail()
        .change_email(
            &auth.user,
            &body.current_password,
            body.email.as_deref(),
            &language,
            client.ip,
        )
        .await?;
    Ok(Json(UserView::from(&user)))
}
