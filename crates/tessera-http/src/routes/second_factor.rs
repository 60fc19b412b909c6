//! Second factors: TOTP enrolment and removal, recovery codes, completing a login that answered
//! with a challenge, and step-up (using the second factor again on a login that has one).

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::{Deserialize, Serialize};
use tessera_core::logins::{CompletedLogin, PendingLogin, SecondFactorAttempt};
use tessera_core::second_factor::FactorProof;
use tessera_core::{AuthContext, LoginModel, RecoveryCode, SecondFactorMethod, Timestamp};
use utoipa::ToSchema;

use crate::csrf::check_same_origin;
use crate::extract::{AuthUser, ClientMeta, HybridRefreshCookie, Privileged, SessionCookie};
use crate::json::ApiJson;
use crate::problem::{ApiError, JsonBodyProblems, Problem, ServiceProblems};
use crate::routes::hybrid::{HybridSession, access_token_cookie};
use crate::routes::session::SessionInfo;
use crate::routes::token::TokenResponse;
use crate::state::AppState;

/// The answer to a correct password for an account with a second factor: no credential yet,
/// but a challenge to complete with a code at `POST /v1/login/second-factor`.
#[derive(Serialize, ToSchema)]
pub struct SecondFactorRequired {
    /// Always `true`: tells this answer from a completed login.
    pub second_factor_required: bool,
    /// Send it back with the code. Single use; only its hash is stored.
    pub challenge: String,
    /// What the account can complete the login with: `webauthn` (a passkey), `totp`,
    /// `recovery_code`.
    #[schema(example = json!(["totp", "recovery_code"]))]
    pub methods: Vec<String>,
    /// Seconds until the challenge lapses (then log in again).
    #[schema(example = 300)]
    pub expires_in: u64,
    /// For an account with a passkey: the options to assert one (for
    /// `navigator.credentials.get`) and the ceremony to send back with the answer to
    /// `POST /v1/login/second-factor/passkey`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passkey: Option<crate::routes::passkey::AssertionOptions>,
}

impl From<PendingLogin> for SecondFactorRequired {
    fn from(pending: PendingLogin) -> Self {
        Self {
            second_factor_required: true,
            challenge: pending.challenge.encode(),
            methods: pending
                .methods
                .iter()
                .map(|m| m.as_str().to_owned())
                .collect(),
            expires_in: pending.expires_in.as_secs(),
            passkey: pending.passkey.map(|c| (*c).into()),
        }
    }
}

/// What `POST /v1/session/login` answers with 200.
///
/// Only the OpenAPI document's schema of the answer: the handlers build its variants directly.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
pub enum SessionLoginAnswer {
    /// Logged in.
    Done(SessionInfo),
    /// A second factor is needed.
    SecondFactor(SecondFactorRequired),
}

/// What `POST /v1/token` answers with 200.
///
/// Only the OpenAPI document's schema of the answer: the handlers build its variants directly.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
pub enum TokenLoginAnswer {
    /// Logged in.
    Done(TokenResponse),
    /// A second factor is needed.
    SecondFactor(SecondFactorRequired),
}

/// What `POST /v1/hybrid/login` answers with 200.
///
/// Only the OpenAPI document's schema of the answer: the handlers build its variants directly.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
pub enum HybridLoginAnswer {
    /// Logged in.
    Done(HybridSession),
    /// A second factor is needed.
    SecondFactor(SecondFactorRequired),
}

/// What a completed login answers: the answer of the model its login started in.
///
/// Only the OpenAPI document's schema of the answer: the handlers build its variants directly.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
pub enum CompletedLoginAnswer {
    /// A session login (`POST /v1/session/login`): the session cookie is set.
    Session(SessionInfo),
    /// A token login (`POST /v1/token`).
    Token(TokenResponse),
    /// A hybrid login (`POST /v1/hybrid/login`): both cookies are set.
    Hybrid(HybridSession),
}

/// The body of `POST /v1/login/second-factor`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorLogin {
    /// The `challenge` the login answered with.
    #[schema(min_length = 43, max_length = 43)]
    pub challenge: String,
    /// The six-digit code of the authenticator app, or one of the recovery codes.
    #[schema(example = "492039", min_length = 1, max_length = 64)]
    pub code: String,
    /// `totp` or `recovery_code`; without it, six digits are a TOTP code and anything else a
    /// recovery code.
    #[serde(default)]
    pub method: Option<CodeMethod>,
}

/// A second-factor method, as requests name it.
#[derive(Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CodeMethod {
    /// A code of the authenticator app.
    Totp,
    /// A recovery code.
    RecoveryCode,
}

impl From<CodeMethod> for SecondFactorMethod {
    fn from(m: CodeMethod) -> Self {
        match m {
            CodeMethod::Totp => SecondFactorMethod::Totp,
            CodeMethod::RecoveryCode => SecondFactorMethod::RecoveryCode,
        }
    }
}

/// Codes are short; anything longer is refused before any work.
const MAX_CODE_LEN: usize = 64;

fn check_code(code: &str) -> Result<(), ApiError> {
    if code.trim().is_empty() || code.len() > MAX_CODE_LEN {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            "code must be a six-digit TOTP code or a recovery code",
        )
        .with_field("code"));
    }
    Ok(())
}

/// Complete a login with the second factor.
///
/// After a correct password, an account with a second factor gets a `challenge` instead of a
/// credential. Send it here with a code from the authenticator app (or a recovery code) within
/// `expires_in` seconds: the answer is what the model's login route would have answered — the
/// session cookie and CSRF token, a token pair, or the hybrid cookies — for the model the login
/// started in. A challenge works once; wrong codes spend the attempt budgets of the address and
/// the account, and a few of them burn the challenge (log in again). A browser login (session,
/// hybrid) is completed only from this server's own origin.
#[utoipa::path(
    post, path = "/v1/login/second-factor", tag = "second-factor",
    params(("DPoP" = Option<String>, Header, description = "A DPoP proof (RFC 9449) for this request: required, of the same key, when the login was started with one; its tokens are bound to that key")),
    request_body = SecondFactorLogin,
    responses(
        (status = 200, description = "Logged in, as the login's model answers", body = CompletedLoginAnswer),
        (status = 400, description = "The DPoP proof is missing (for a login started with one), invalid, replayed or of another key", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The code is not correct (`invalid-second-factor`), or the challenge is unknown, used, expired or burnt (`invalid-challenge`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cross-site request for a browser login", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
// Each argument is an extractor: what the route reads from the request, said where it is read.
#[allow(clippy::too_many_arguments)]
pub async fn complete_login(
    State(state): State<AppState>,
    browser: BrowserLogin,
    proof: crate::extract::OptionalDpopProof,
    ApiJson(body): ApiJson<SecondFactorLogin>,
) -> Result<Response, ApiError> {
    check_code(&body.code)?;
    complete(
        &state,
        browser,
        proof,
        &body.challenge,
        FactorProof::Code {
            code: &body.code,
            method: body.method.map(Into::into),
        },
    )
    .await
}

/// The body of `POST /v1/login/second-factor/passkey`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorPasskeyLogin {
    /// The `challenge` the login answered with.
    #[schema(min_length = 43, max_length = 43)]
    pub challenge: String,
    /// The `passkey.ceremony` the login answered with.
    pub ceremony: String,
    /// What `navigator.credentials.get` returned, as JSON (`PublicKeyCredential.toJSON()`).
    #[schema(value_type = Object)]
    pub credential: Box<webauthn_rs::prelude::PublicKeyCredential>,
}

/// Complete a login with a passkey.
///
/// For an account with a passkey, the login's answer carries `passkey.options` for
/// `navigator.credentials.get` and a `passkey.ceremony`. Send the ceremony back here with the
/// authenticator's answer and the login's `challenge`: the answer is what the model's login
/// route would have answered. An answer that does not verify spends the attempt budgets like a
/// wrong code; a ceremony works once.
#[utoipa::path(
    post, path = "/v1/login/second-factor/passkey", tag = "passkeys",
    params(("DPoP" = Option<String>, Header, description = "A DPoP proof (RFC 9449) for this request: required, of the same key, when the login was started with one")),
    request_body = SecondFactorPasskeyLogin,
    responses(
        (status = 200, description = "Logged in, as the login's model answers", body = CompletedLoginAnswer),
        (status = 400, description = "The DPoP proof is missing (for a login started with one), invalid, replayed or of another key", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The passkey's answer does not verify, or the ceremony is unknown, expired or used (`invalid-second-factor`), or the challenge is unknown, used, expired or burnt (`invalid-challenge`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cross-site request for a browser login", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "This server offers no passkeys", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn complete_login_passkey(
    State(state): State<AppState>,
    browser: BrowserLogin,
    proof: crate::extract::OptionalDpopProof,
    ApiJson(body): ApiJson<SecondFactorPasskeyLogin>,
) -> Result<Response, ApiError> {
    complete(
        &state,
        browser,
        proof,
        &body.challenge,
        FactorProof::Passkey {
            ceremony: &body.ceremony,
            credential: &body.credential,
        },
    )
    .await
}

/// The body of `POST /v1/login/second-factor/passkey/options`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRef {
    /// The `challenge` the login answered with.
    #[schema(min_length = 43, max_length = 43)]
    pub challenge: String,
}

/// New passkey options for a login that waits for its second factor.
///
/// The login's answer carries passkey options that work once: after a passkey's answer was
/// refused (or the options lapsed), ask here for new ones rather than typing the password
/// again. Asking counts as one of the challenge's attempts; only the client that logged in may
/// ask.
#[utoipa::path(
    post, path = "/v1/login/second-factor/passkey/options", tag = "passkeys",
    request_body = ChallengeRef,
    responses(
        (status = 200, body = crate::routes::passkey::AssertionOptions),
        (status = 401, description = "The challenge is unknown, used, expired or burnt, or was given to another client (`invalid-challenge`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "This server offers no passkeys", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The account has no passkey", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn login_passkey_options(
    State(state): State<AppState>,
    client: ClientMeta,
    ApiJson(body): ApiJson<ChallengeRef>,
) -> Result<Json<crate::routes::passkey::AssertionOptions>, ApiError> {
    let options = state
        .logins()
        .second_factor_passkey_options(&body.challenge, &client.info)
        .await?;
    Ok(Json(options.into()))
}

/// What a browser brings to a login: the login it has already (which the new one replaces),
/// who it is, whether the request is same-origin, and its cookie jar.
pub struct BrowserLogin {
    pub(crate) previous_session: Option<tessera_core::SessionId>,
    pub(crate) previous_refresh: Option<tessera_core::RefreshToken>,
    pub(crate) client: ClientMeta,
    pub(crate) same_origin: bool,
    pub(crate) jar: CookieJar,
}

impl FromRequestParts<AppState> for BrowserLogin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let Ok(SessionCookie(previous_session)) =
            SessionCookie::from_request_parts(parts, state).await;
        let Ok(HybridRefreshCookie(previous_refresh)) =
            HybridRefreshCookie::from_request_parts(parts, state).await;
        let jar = CookieJar::from_headers(&parts.headers);
        Ok(Self {
            previous_session,
            previous_refresh,
            client: ClientMeta::of(parts, state),
            same_origin: check_same_origin(&parts.headers, &state.0.trusted_origins).is_ok(),
            jar,
        })
    }
}

async fn complete(
    state: &AppState,
    browser: BrowserLogin,
    crate::extract::OptionalDpopProof(proof): crate::extract::OptionalDpopProof,
    challenge: &str,
    factor: FactorProof<'_>,
) -> Result<Response, ApiError> {
    let completed = state
        .logins()
        .complete_second_factor(SecondFactorAttempt {
            challenge,
            proof: factor,
            ip: browser.client.ip,
            client: browser.client.info,
            same_origin: browser.same_origin,
            replacing_session: browser.previous_session.as_ref(),
            replacing_refresh: browser.previous_refresh.as_ref(),
            dpop_jkt: proof.thumbprint(),
        })
        .await?;
    login_answer(state, browser.jar, &proof, completed).await
}

/// The answer of a completed login, in the model it was made in. The request's DPoP proof is
/// recorded first, as at the login route: once the credentials were right, and a proof used
/// before voids the login it just completed.
pub(crate) async fn login_answer(
    state: &AppState,
    jar: CookieJar,
    proof: &crate::extract::TokenEndpointProof,
    completed: CompletedLogin,
) -> Result<Response, ApiError> {
    let made = match &completed {
        CompletedLogin::Tokens(_, login) => Some(&login.pair.family_id),
        CompletedLogin::Session(_) => None,
    };
    proof.record_for_login(state, made).await?;
    Ok(match completed {
        CompletedLogin::Session(login) => {
            crate::routes::session::session_login_response(state, jar, login)
        }
        CompletedLogin::Tokens(LoginModel::Hybrid, login) => {
            crate::routes::hybrid::hybrid_login_response(state, jar, login)
        }
        CompletedLogin::Tokens(_, login) => {
            Json(crate::routes::token::token_login_body(login)).into_response()
        }
    })
}

/// A user's second factors.
#[derive(Serialize, ToSchema)]
pub struct SecondFactorStatusView {
    /// Whether TOTP is set up (confirmed): logins then need a code.
    pub totp: bool,
    /// Whether a TOTP enrolment waits for its first code.
    pub totp_pending: bool,
    /// How many unused recovery codes are left.
    pub recovery_codes_left: usize,
    /// How many passkeys are registered (each is a second factor too).
    pub passkeys: usize,
    /// The methods a login challenge accepts (empty without a second factor).
    pub methods: Vec<String>,
}

/// My second factors.
#[utoipa::path(
    get, path = "/v1/account/totp", tag = "second-factor",
    security(("bearer" = []), ("session_cookie" = []), ("hybrid_cookies" = [])),
    responses(
        (status = 200, body = SecondFactorStatusView),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn status(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<SecondFactorStatusView>, ApiError> {
    let status = state
        .logins()
        .second_factors()
        .status(&auth.user.id)
        .await?;
    Ok(Json(SecondFactorStatusView {
        totp: status.totp,
        totp_pending: status.totp_pending,
        recovery_codes_left: status.recovery_codes_left,
        passkeys: status.passkeys,
        methods: status
            .methods()
            .iter()
            .map(|m| m.as_str().to_owned())
            .collect(),
    }))
}

/// What an authenticator app needs. Shown once.
#[derive(Serialize, ToSchema)]
pub struct TotpEnrolmentView {
    /// The shared secret, base32 (for typing into the app).
    #[schema(example = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")]
    pub secret: String,
    /// The same as an `otpauth://` URI, for a QR code.
    #[schema(
        example = "otpauth://totp/Tessera:alice?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Tessera&algorithm=SHA1&digits=6&period=30"
    )]
    pub otpauth_uri: String,
    /// What to do next.
    pub detail: &'static str,
}

/// Start setting up TOTP.
///
/// Answers a new secret for the authenticator app (as base32 and as an `otpauth://` URI). It is
/// not required at login until confirmed with a first code at `POST /v1/account/totp/confirm`;
/// starting again before that replaces the secret. Refused (409) when TOTP is set up already:
/// remove it first.
#[utoipa::path(
    post, path = "/v1/account/totp", tag = "second-factor",
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 200, body = TotpEnrolmentView),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cross-site request or a missing CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "TOTP is set up already", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn begin(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<TotpEnrolmentView>, ApiError> {
    let enrolment = state
        .logins()
        .second_factors()
        .begin_totp(&auth.user)
        .await?;
    Ok(Json(TotpEnrolmentView {
        secret: enrolment.secret,
        otpauth_uri: enrolment.otpauth_uri,
        detail: "add the secret to an authenticator app, then confirm with a code it shows at POST /v1/account/totp/confirm",
    }))
}

/// The body of `POST /v1/account/totp/confirm` and `POST /v1/account/step-up`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorCode {
    /// The six-digit code of the authenticator app (for step-up, a recovery code works too).
    #[schema(example = "492039", min_length = 1, max_length = 64)]
    pub code: String,
    /// `totp` or `recovery_code` (step-up only); guessed from the code's shape when absent.
    #[serde(default)]
    pub method: Option<CodeMethod>,
}

/// The body of `POST /v1/account/totp/confirm`: the first code, and the current password (a
/// second factor is a change no stolen session alone may make).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirmation {
    /// The six-digit code the authenticator app shows.
    #[schema(example = "492039", min_length = 1, max_length = 64)]
    pub code: String,
    /// The account's current password.
    #[schema(value_type = String, format = Password)]
    pub current_password: tessera_core::Password,
}

/// Recovery codes, shown once.
#[derive(Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Ten single-use codes, each usable instead of a TOTP code once (at login or step-up).
    /// Only their hashes are stored: keep them somewhere safe now.
    #[schema(example = json!(["k3xq-7fna-2mzr-p4ve", "…"]))]
    pub recovery_codes: Vec<String>,
}

fn recovery_codes(codes: Vec<RecoveryCode>) -> RecoveryCodes {
    RecoveryCodes {
        recovery_codes: codes.iter().map(|c| c.as_str().to_owned()).collect(),
    }
}

/// Confirm TOTP with a first code.
///
/// From now on, logins of the account need a code after the password. Needs the current
/// password too: whoever holds only a copied session or token cannot put a second factor of
/// theirs on the account (and lock its owner out). Answers ten single-use recovery codes, shown
/// this once.
#[utoipa::path(
    post, path = "/v1/account/totp/confirm", tag = "second-factor",
    request_body = TotpConfirmation,
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 200, description = "TOTP is set up", body = RecoveryCodes),
        (status = 401, description = "Not authenticated, or the code is not correct", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The current password is not correct, or a cross-site request or a missing CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No enrolment waits for confirmation", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn confirm(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientMeta,
    ApiJson(body): ApiJson<TotpConfirmation>,
) -> Result<Json<RecoveryCodes>, ApiError> {
    check_code(&body.code)?;
    check_current_password(&state, &auth.user, &body.current_password).await?;
    let codes = state
        .logins()
        .second_factors()
        .confirm_totp(&auth.user, &body.code, client.ip)
        .await?;
    Ok(Json(recovery_codes(codes)))
}

/// Checks the caller's current password before a new second factor goes on the account: a
/// wrong one spends the account's attempt budget, as at login, and answers 403.
pub(crate) async fn check_current_password(
    state: &AppState,
    user: &tessera_core::User,
    password: &tessera_core::Password,
) -> Result<(), ApiError> {
    let throttle = state.throttle();
    let account = user.username.as_str();
    throttle.spend_account(account, None).await?;
    let checked = state.accounts().check_password(user, password).await;
    if !matches!(checked, Err(tessera_core::Error::WrongCurrentPassword)) {
        throttle.refund_account(account, None).await?;
    }
    checked.map_err(|e| match e {
        tessera_core::Error::WrongCurrentPassword => {
            ApiError::forbidden("wrong-current-password", "current_password is not correct")
                .with_field("current_password")
        }
        e => e.into(),
    })
}

/// Remove TOTP.
///
/// Logins need only the password again; the recovery codes go too. Privileged: needs the second
/// factor used within `accounts.privileged_max_age` (step up first).
#[utoipa::path(
    delete, path = "/v1/account/totp", tag = "second-factor",
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Not authenticated, or the second factor was not used recently enough (`insufficient-user-authentication`: step up at POST /v1/account/step-up)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cross-site request or a missing CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "TOTP is not set up", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    Privileged(auth): Privileged,
) -> Result<StatusCode, ApiError> {
    if state
        .logins()
        .second_factors()
        .remove_totp(&auth.user.id, Some(&auth.user.id))
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("TOTP is not set up for this account"))
    }
}

/// Replace my recovery codes.
///
/// Ten new codes; the old ones stop working. Privileged: needs the second factor used within
/// `accounts.privileged_max_age` (step up first).
#[utoipa::path(
    post, path = "/v1/account/totp/recovery-codes", tag = "second-factor",
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 200, body = RecoveryCodes),
        (status = 401, description = "Not authenticated, or the second factor was not used recently enough (`insufficient-user-authentication`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cross-site request or a missing CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "TOTP is not set up", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    Privileged(auth): Privileged,
) -> Result<Json<RecoveryCodes>, ApiError> {
    let codes = state
        .logins()
        .second_factors()
        .regenerate_recovery_codes(&auth.user.id)
        .await?;
    Ok(Json(recovery_codes(codes)))
}

/// How a login was authenticated.
#[derive(Serialize, ToSchema)]
pub struct AuthenticationView {
    /// Authentication Method References (RFC 8176): `pwd`, plus `otp` (a code) or `hwk` (a
    /// passkey) and `mfa` with a second factor; `hwk`, `user` and `mfa` for a passwordless
    /// passkey login.
    #[schema(example = json!(["pwd", "otp", "mfa"]))]
    pub amr: Vec<String>,
    /// `aal1` (password) or `aal2` (with a second factor, or a passkey).
    #[schema(example = "aal2")]
    pub acr: String,
    /// When the user last authenticated for this login: the login, or the latest step-up.
    #[schema(value_type = String, format = DateTime)]
    pub auth_time: Timestamp,
    /// When the second factor was used last for this login, if ever.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub second_factor_at: Option<Timestamp>,
}

impl From<&AuthContext> for AuthenticationView {
    fn from(auth: &AuthContext) -> Self {
        Self {
            amr: auth.amr().iter().map(|m| (*m).to_owned()).collect(),
            acr: auth.acr().to_owned(),
            auth_time: auth.auth_time,
            second_factor_at: auth.second_factor_at(),
        }
    }
}

/// The answer of a step-up.
#[derive(Serialize, ToSchema)]
pub struct SteppedUp {
    /// How the login is now authenticated.
    pub authentication: AuthenticationView,
    /// For a token (bearer) login: a fresh access token carrying the new `auth_time`, `amr` and
    /// `acr` (the refresh token stays; later refreshes carry them too). A hybrid login gets it
    /// in its access cookie instead; a session is updated in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// `Bearer`, or `DPoP` for a login bound to a DPoP key, with `access_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// Seconds until `access_token` (or the hybrid access cookie) expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

/// Use the second factor again (step-up).
///
/// For a login that must show a recent second factor: privileged routes (admin routes, password
/// and email changes, removing TOTP, new recovery codes) answer 401
/// `insufficient-user-authentication` when the second factor was used longer ago than
/// `accounts.privileged_max_age`. Send a TOTP code (or a recovery code) here, then repeat the
/// request. The current login records the time: a session in place, a token login in its
/// family (refreshed tokens keep it), with a fresh access token in the answer (bearer) or in
/// the access cookie (hybrid). Wrong codes spend the attempt budgets.
#[utoipa::path(
    post, path = "/v1/account/step-up", tag = "second-factor",
    request_body = SecondFactorCode,
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 200, body = SteppedUp),
        (status = 401, description = "Not authenticated, or the code is not correct (`invalid-second-factor`; also for an account without a second factor)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cross-site request or a missing CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn step_up(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientMeta,
    jar: CookieJar,
    ApiJson(body): ApiJson<SecondFactorCode>,
) -> Result<Response, ApiError> {
    check_code(&body.code)?;
    stepped_up(
        &state,
        &auth,
        &client,
        jar,
        FactorProof::Code {
            code: &body.code,
            method: body.method.map(Into::into),
        },
    )
    .await
}

/// Options to step up with a passkey.
///
/// The options for `navigator.credentials.get` (the account's passkeys) and a `ceremony` to
/// send back with the authenticator's answer to `POST /v1/account/step-up/passkey`, within five
/// minutes, once.
#[utoipa::path(
    post, path = "/v1/account/step-up/passkey/options", tag = "passkeys",
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 200, body = crate::routes::passkey::AssertionOptions),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cross-site request or a missing CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "This server offers no passkeys", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The account has no passkey", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn step_up_passkey_options(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<crate::routes::passkey::AssertionOptions>, ApiError> {
    let options = state.logins().step_up_options(&auth.user.id).await?;
    Ok(Json(options.into()))
}

/// The body of `POST /v1/account/step-up/passkey`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyAssertion {
    /// The `ceremony` that came with the options.
    pub ceremony: String,
    /// What `navigator.credentials.get` returned, as JSON (`PublicKeyCredential.toJSON()`).
    #[schema(value_type = Object)]
    pub credential: Box<webauthn_rs::prelude::PublicKeyCredential>,
}

/// Step up with a passkey.
///
/// As `POST /v1/account/step-up`, with a passkey's answer to the options of
/// `POST /v1/account/step-up/passkey/options` instead of a code.
#[utoipa::path(
    post, path = "/v1/account/step-up/passkey", tag = "passkeys",
    request_body = PasskeyAssertion,
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 200, body = SteppedUp),
        (status = 401, description = "Not authenticated, or the passkey's answer does not verify, or the ceremony is unknown, expired or used (`invalid-second-factor`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cross-site request or a missing CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "This server offers no passkeys", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn step_up_passkey(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientMeta,
    jar: CookieJar,
    ApiJson(body): ApiJson<PasskeyAssertion>,
) -> Result<Response, ApiError> {
    stepped_up(
        &state,
        &auth,
        &client,
        jar,
        FactorProof::Passkey {
            ceremony: &body.ceremony,
            credential: &body.credential,
        },
    )
    .await
}

async fn stepped_up(
    state: &AppState,
    auth: &AuthUser,
    client: &ClientMeta,
    jar: CookieJar,
    proof: FactorProof<'_>,
) -> Result<Response, ApiError> {
    let (context, access) = state
        .logins()
        .step_up(
            &auth.user,
            &auth.login(),
            auth.auth_context(),
            proof,
            client.ip,
        )
        .await?;
    let authentication = AuthenticationView::from(&context);
    let hybrid = auth.model_name() == LoginModel::Hybrid.as_str();
    Ok(match access {
        Some(access) if hybrid => {
            let cookie =
                access_token_cookie(state.cookies(), access.access_token, access.expires_in);
            (
                jar.add(cookie),
                Json(SteppedUp {
                    authentication,
                    access_token: None,
                    token_type: None,
                    expires_in: Some(access.expires_in),
                }),
            )
                .into_response()
        }
        Some(access) => Json(SteppedUp {
            authentication,
            access_token: Some(access.access_token),
            token_type: Some(if access.dpop_bound { "DPoP" } else { "Bearer" }),
            expires_in: Some(access.expires_in),
        })
        .into_response(),
        None => Json(SteppedUp {
            authentication,
            access_token: None,
            token_type: None,
            expires_in: None,
        })
        .into_response(),
    })
}
