//! Passkeys (WebAuthn): registering them, listing, renaming and removing them, and logging in
//! with one alone. A passkey is also a second factor: a password login of an account with one
//! answers with passkey options (see `POST /v1/login/second-factor/passkey`), and step-up takes
//! one (`POST /v1/account/step-up/passkey`).
//!
//! Each ceremony is two requests: options (for `navigator.credentials.create` or `.get`) with
//! a sealed `ceremony`, then the authenticator's answer with that ceremony. Only this server
//! can open a ceremony; it lapses after five minutes and works once.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tessera_core::passkey::{Ceremony, StoredPasskey};
use tessera_core::{LoginModel, PasskeyLoginAttempt, Timestamp};
use utoipa::ToSchema;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse};

use crate::extract::{AdminUser, AuthUser, Privileged};
use crate::json::ApiJson;
use crate::problem::{ApiError, JsonBodyProblems, Problem, ServiceProblems};
use crate::routes::second_factor::{
    BrowserLogin, CompletedLoginAnswer, check_current_password, login_answer,
};
use crate::state::AppState;

/// Options to assert a passkey, and the ceremony to send back with the answer.
#[derive(Serialize, ToSchema)]
pub struct AssertionOptions {
    /// `{"publicKey": …}` for `navigator.credentials.get` (binary fields as base64url, as
    /// `PublicKeyCredential.parseRequestOptionsFromJSON` takes them).
    #[schema(value_type = Object)]
    pub options: RequestChallengeResponse,
    /// Send it back with the authenticator's answer; opaque, single use, five minutes.
    pub ceremony: String,
}

impl From<Ceremony<RequestChallengeResponse>> for AssertionOptions {
    fn from(c: Ceremony<RequestChallengeResponse>) -> Self {
        Self {
            options: c.options,
            ceremony: c.ceremony,
        }
    }
}

/// Options to register a passkey, and the ceremony to send back with the answer.
#[derive(Serialize, ToSchema)]
pub struct RegistrationOptions {
    /// `{"publicKey": …}` for `navigator.credentials.create` (binary fields as base64url, as
    /// `PublicKeyCredential.parseCreationOptionsFromJSON` takes them).
    #[schema(value_type = Object)]
    pub options: CreationChallengeResponse,
    /// Send it back with the authenticator's answer; opaque, single use, five minutes.
    pub ceremony: String,
}

/// A registered passkey, as its owner sees it (no key material).
#[derive(Serialize, ToSchema)]
pub struct PasskeyView {
    /// Its id (`pky_…`), for renaming and removing it.
    pub id: String,
    /// What the owner called it.
    #[schema(example = "Laptop")]
    pub name: String,
    /// When it was registered.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it was last used to log in or step up.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<Timestamp>,
}

impl From<StoredPasskey> for PasskeyView {
    fn from(p: StoredPasskey) -> Self {
        Self {
            id: p.id,
            name: p.name,
            created_at: p.created_at,
            last_used_at: p.last_used_at,
        }
    }
}

/// The passkeys of an account.
#[derive(Serialize, ToSchema)]
pub struct PasskeyList {
    /// Oldest first.
    pub passkeys: Vec<PasskeyView>,
}

/// My passkeys.
#[utoipa::path(
    get, path = "/v1/account/passkeys", tag = "passkeys",
    security(("bearer" = []), ("session_cookie" = []), ("hybrid_cookies" = [])),
    responses(
        (status = 200, body = PasskeyList),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<PasskeyList>, ApiError> {
    let passkeys = state
        .logins()
        .second_factors()
        .passkeys()
        .list(&auth.user.id)
        .await?;
    Ok(Json(PasskeyList {
        passkeys: passkeys.into_iter().map(Into::into).collect(),
    }))
}

/// Start registering a passkey.
///
/// Answers the options for `navigator.credentials.create` (the account's passkeys excluded,
/// user verification required, a discoverable credential preferred so it also logs in without
/// the username) and a `ceremony`; send both the authenticator's answer and the ceremony to
/// `POST /v1/account/passkeys` within five minutes. Privileged for an account that has a second
/// factor: it must have been used within `accounts.privileged_max_age`.
#[utoipa::path(
    post, path = "/v1/account/passkeys/options", tag = "passkeys",
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 200, body = RegistrationOptions),
        (status = 401, description = "Not authenticated, or the second factor was not used recently enough (`insufficient-user-authentication`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cross-site request or a missing CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "This server offers no passkeys", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The account holds as many passkeys as it may", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn registration_options(
    State(state): State<AppState>,
    Privileged(auth): Privileged,
) -> Result<Json<RegistrationOptions>, ApiError> {
    let ceremony = state
        .logins()
        .second_factors()
        .passkeys()
        .registration_options(&auth.user)
        .await?;
    Ok(Json(RegistrationOptions {
        options: ceremony.options,
        ceremony: ceremony.ceremony,
    }))
}

/// The body of `POST /v1/account/passkeys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyRegistration {
    /// The `ceremony` that came with the options.
    pub ceremony: String,
    /// What `navigator.credentials.create` returned, as JSON (`PublicKeyCredential.toJSON()`).
    #[schema(value_type = Object)]
    pub credential: Box<webauthn_rs::prelude::RegisterPublicKeyCredential>,
    /// A name to tell it by (default `Passkey`); at most 64 characters.
    #[serde(default)]
    #[schema(example = "Laptop", max_length = 64)]
    pub name: Option<String>,
    /// The account's current password: whoever holds only a copied session or token cannot put
    /// a passkey of theirs on the account.
    #[schema(value_type = String, format = Password)]
    pub current_password: tessera_core::Password,
}

/// Register a passkey.
///
/// Checks the authenticator's answer against the ceremony and stores the passkey (its public
/// key only). From then on it logs in alone (passwordless), and password logins of the account
/// need a second factor: this passkey, or TOTP if set up.
#[utoipa::path(
    post, path = "/v1/account/passkeys", tag = "passkeys",
    request_body = PasskeyRegistration,
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 201, description = "Registered", body = PasskeyView),
        (status = 401, description = "Not authenticated, or the second factor was not used recently enough (`insufficient-user-authentication`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The current password is not correct, or a cross-site request or a missing CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "This server offers no passkeys", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "This passkey is registered already, or the account holds as many as it may", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The ceremony is unknown, expired or used, or the authenticator's answer was refused (wrong origin, challenge or signature; no user verification)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn register(
    State(state): State<AppState>,
    Privileged(auth): Privileged,
    ApiJson(body): ApiJson<PasskeyRegistration>,
) -> Result<(StatusCode, Json<PasskeyView>), ApiError> {
    check_current_password(&state, &auth.user, &body.current_password).await?;
    let registered = state
        .logins()
        .second_factors()
        .register_passkey(
            &auth.user,
            &body.ceremony,
            &body.credential,
            body.name.as_deref(),
        )
        .await;
    if let Err(tessera_core::Error::Invalid { .. }) = &registered {
        // A refused answer spends the account's attempt budget, as a wrong password does: a
        // client cannot send the server malformed attestations without end.
        state
            .throttle()
            .spend_account(auth.user.username.as_str(), None)
            .await?;
    }
    Ok((StatusCode::CREATED, Json(registered?.into())))
}

/// The body of `PATCH /v1/account/passkeys/{id}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyRename {
    /// The new name; at most 64 characters.
    #[schema(example = "Phone", min_length = 1, max_length = 64)]
    pub name: String,
}

/// Rename a passkey.
#[utoipa::path(
    patch, path = "/v1/account/passkeys/{id}", tag = "passkeys",
    params(("id" = String, Path, description = "The passkey's id")),
    request_body = PasskeyRename,
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Renamed"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cross-site request or a missing CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such passkey on this account", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn rename(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PasskeyRename>,
) -> Result<StatusCode, ApiError> {
    if state
        .logins()
        .second_factors()
        .passkeys()
        .rename(&auth.user.id, &id, &body.name)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "no passkey with this id on this account",
        ))
    }
}

/// Remove a passkey.
///
/// It no longer logs in, nor counts as a second factor. Privileged: needs a second factor used
/// within `accounts.privileged_max_age` (step up first).
#[utoipa::path(
    delete, path = "/v1/account/passkeys/{id}", tag = "passkeys",
    params(("id" = String, Path, description = "The passkey's id")),
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Not authenticated, or the second factor was not used recently enough (`insufficient-user-authentication`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cross-site request or a missing CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such passkey on this account", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    Privileged(auth): Privileged,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .logins()
        .second_factors()
        .remove_passkey(&auth.user.id, &id, Some(&auth.user.id))
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "no passkey with this id on this account",
        ))
    }
}

/// Options for a passwordless login.
///
/// No username: the authenticator offers the passkeys it keeps for this site. Answers the
/// options for `navigator.credentials.get` and a `ceremony` for `POST /v1/login/passkey`.
#[utoipa::path(
    post, path = "/v1/login/passkey/options", tag = "passkeys",
    responses(
        (status = 200, body = AssertionOptions),
        (status = 404, description = "This server offers no passkeys", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn login_options(
    State(state): State<AppState>,
) -> Result<Json<AssertionOptions>, ApiError> {
    let options = state
        .logins()
        .second_factors()
        .passkeys()
        .passwordless_options()?;
    Ok(Json(options.into()))
}

/// A login model, as a passkey login names the one it wants.
#[derive(Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelName {
    /// A server session (the session cookie and a CSRF token).
    Session,
    /// A token pair (bearer, or DPoP-bound with a proof).
    Token,
    /// The hybrid model (the access token and refresh token in cookies, and a CSRF token).
    Hybrid,
}

impl From<ModelName> for LoginModel {
    fn from(m: ModelName) -> Self {
        match m {
            ModelName::Session => LoginModel::Session,
            ModelName::Token => LoginModel::Token,
            ModelName::Hybrid => LoginModel::Hybrid,
        }
    }
}

/// The body of `POST /v1/login/passkey`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyLogin {
    /// The `ceremony` that came with the options.
    pub ceremony: String,
    /// What `navigator.credentials.get` returned, as JSON (`PublicKeyCredential.toJSON()`).
    #[schema(value_type = Object)]
    pub credential: Box<webauthn_rs::prelude::PublicKeyCredential>,
    /// The login model to log in with.
    pub model: ModelName,
}

/// Log in with a passkey alone.
///
/// Send the authenticator's answer to the options of `POST /v1/login/passkey/options` with
/// their ceremony, and the model to log in with: the answer is what that model's login route
/// answers for a completed login (session cookie and CSRF token; token pair; hybrid cookies).
/// The passkey verified the user (PIN or biometric), so no second factor is asked for: the
/// login is `aal2`, `amr` `["hwk", "user", "mfa"]`. Every try spends the address's attempt
/// budget; one that does not verify answers 401 `invalid-credentials`. A browser login
/// (session, hybrid) is made only from this server's own origin.
#[utoipa::path(
    post, path = "/v1/login/passkey", tag = "passkeys",
    params(("DPoP" = Option<String>, Header, description = "A DPoP proof (RFC 9449), token model: the tokens are bound to its key")),
    request_body = PasskeyLogin,
    responses(
        (status = 200, description = "Logged in, as the model's login answers", body = CompletedLoginAnswer),
        (status = 400, description = "The DPoP proof is invalid or replayed, or missing for a token login where the server requires DPoP (`tokens.require_dpop`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The passkey's answer does not verify, the passkey is unknown, or the ceremony is unknown, expired or used", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cross-site request for a browser login, or an unverified email address where logins need one", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "This server offers no passkeys", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn login(
    State(state): State<AppState>,
    browser: BrowserLogin,
    crate::extract::OptionalDpopProof(proof): crate::extract::OptionalDpopProof,
    ApiJson(body): ApiJson<PasskeyLogin>,
) -> Result<Response, ApiError> {
    let model = LoginModel::from(body.model);
    if model == LoginModel::Token {
        proof.require_for_token_login(&state)?;
    }
    let completed = state
        .logins()
        .login_passkey(PasskeyLoginAttempt {
            ceremony: &body.ceremony,
            credential: &body.credential,
            model,
            ip: browser.client.ip,
            client: browser.client.info,
            same_origin: browser.same_origin,
            replacing_session: browser.previous_session.as_ref(),
            replacing_refresh: browser.previous_refresh.as_ref(),
            dpop_jkt: proof.thumbprint().filter(|_| model == LoginModel::Token),
        })
        .await?;
    login_answer(&state, browser.jar, &proof, completed).await
}

/// How many passkeys went.
#[derive(Serialize, ToSchema)]
pub struct PasskeysRemoved {
    /// How many passkeys were removed.
    pub removed: usize,
}

/// Remove every passkey of a user, for a user who lost them.
///
/// Their logins no longer take a passkey, and need only the password again unless TOTP is set
/// up. Check who asks before doing this: it is how an attacker who has the password would like
/// to get in.
#[utoipa::path(
    delete, path = "/v1/admin/users/{id}/passkeys", tag = "admin",
    params(("id" = String, Path, description = "The user id")),
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 200, body = PasskeysRemoved),
        (status = 401, description = "Not authenticated, or the admin's second factor was not used recently enough", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn admin_remove_all(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
) -> Result<Json<PasskeysRemoved>, ApiError> {
    let user = crate::routes::admin::target(&state, &id).await?;
    let removed = state
        .logins()
        .second_factors()
        .remove_passkeys(&user.id, Some(&admin.user.id))
        .await?;
    Ok(Json(PasskeysRemoved { removed }))
}
