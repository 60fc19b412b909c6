//! Every error leaves as an RFC 9457 `application/problem+json` document with a clear `detail`.
//! Internal failures are logged with their cause and answered with a generic 500.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tessera_core::throttle::ThrottleScope;
use tessera_core::{Error, StoreError};
use utoipa::ToSchema;

/// The media type of every error response (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:tessera:problem:…`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The standard reason phrase of the status code, e.g. `Unauthorized`.
    pub title: String,
    /// The HTTP status code of the response, repeated for clients that only keep the body.
    pub status: u16,
    /// What went wrong in this request, in words meant for a developer reading it.
    pub detail: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The OAuth error code (RFC 6749 §5.2, RFC 9449), for OAuth client libraries: e.g.
    /// `use_dpop_nonce`, `invalid_dpop_proof`. Only on the answers OAuth defines one for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

/// An error that a handler or extractor returns; renders as a problem document.
#[derive(Debug)]
pub struct ApiError {
    /// The status the response is sent with.
    pub status: StatusCode,
    slug: &'static str,
    detail: String,
    field: Option<String>,
    oauth_error: Option<&'static str>,
    /// Extra headers (`Retry-After`, `WWW-Authenticate`); rarely more than one.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error answered with `status`; `slug` becomes the problem type
    /// (`urn:tessera:problem:{slug}`) and `detail` the explanation.
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            slug,
            detail: detail.into(),
            field: None,
            oauth_error: None,
            headers: Vec::new(),
        }
    }

    /// The problem's short name: `unauthenticated`, `csrf-token-missing`, `missing-role`, … (the
    /// document's `type` is `urn:tessera:problem:` followed by it). For an application that maps
    /// Tessera's refusals to its own error type.
    pub fn slug(&self) -> &'static str {
        self.slug
    }

    /// What was wrong, as the document's `detail` says it.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Names the request field at fault (the problem's `field`).
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Names the OAuth error code the problem document also carries (its `error` member).
    pub fn with_oauth_error(mut self, code: &'static str) -> Self {
        self.oauth_error = Some(code);
        self
    }

    /// Sends `name: value` with the problem, e.g. `Retry-After` or `WWW-Authenticate`.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// 401 with a generic body: it never says which part of a credential was wrong. The challenge
    /// names the bearer scheme (RFC 6750); cookie clients ignore it.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "authentication required",
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tessera\""),
        )
    }

    /// 401 for a bearer token that failed verification: RFC 6750's `invalid_token`, and the same
    /// generic body whatever the reason.
    pub fn invalid_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "authentication required",
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tessera\", error=\"invalid_token\""),
        )
    }

    /// 401 for a login used from a new network and user agent at once, when the server wants a
    /// recent second factor before it goes on (`accounts.new_context = "step_up"`).
    pub fn login_moved(max_age: std::time::Duration) -> Self {
        let seconds = max_age.as_secs();
        let mut refusal = Self::step_up_required(max_age);
        refusal.detail = format!(
            "this login is being used from a new network and a new browser or app at once: use your second factor at POST /v1/account/step-up (with {{\"code\": \"…\"}}) or POST /v1/account/step-up/passkey (a passkey), within {seconds} s of using it, or log in again"
        );
        refusal
    }

    /// 401 for a caller who is logged in but whose second factor is not recent enough for this
    /// action (step-up, RFC 9470): the challenge says `insufficient_user_authentication`, the
    /// `max_age` (seconds) the action needs and the `acr` to reach. Cookie clients read the same
    /// from the problem document.
    pub fn step_up_required(max_age: std::time::Duration) -> Self {
        let seconds = max_age.as_secs();
        let challenge = format!(
            "Bearer realm=\"tessera\", error=\"insufficient_user_authentication\", \
             error_description=\"a second factor used within the last {seconds} s is required\", \
             max_age={seconds}, acr_values=\"{}\"",
            tessera_core::auth_context::ACR_SECOND_FACTOR
        );
        let err = Self::new(
            StatusCode::UNAUTHORIZED,
            "insufficient-user-authentication",
            format!(
                "this action needs your second factor, used within the last {seconds} s: use it again at POST /v1/account/step-up (with {{\"code\": \"…\"}}) or POST /v1/account/step-up/passkey (a passkey), then repeat the request; without a second factor, set one up first (POST /v1/account/totp, or a passkey at POST /v1/account/passkeys/options)"
            ),
        );
        match HeaderValue::from_str(&challenge) {
            Ok(value) => err.with_header(header::WWW_AUTHENTICATE, value),
            Err(_) => err,
        }
    }

    /// 403: the request is understood and refused, e.g. a missing role or a failed CSRF or origin
    /// check.
    pub fn forbidden(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, slug, detail)
    }

    /// 400: the request itself is malformed, e.g. an unreadable body.
    pub fn bad_request(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, slug, detail)
    }

    /// 404 with the `not-found` problem type.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle the request; the failure has been logged",
        )
    }

    fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }

    /// The status, extra headers and problem document this error is answered with.
    pub fn into_problem(self) -> (StatusCode, HeaderMap, Problem) {
        let problem = Problem {
            kind: format!("urn:tessera:problem:{}", self.slug),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            field: self.field,
            error: self.oauth_error,
        };
        (self.status, self.headers.into_iter().collect(), problem)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidCredentials => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
                "invalid username or password",
            ),
            Error::Unauthenticated => Self::unauthenticated(),
            Error::WrongCurrentPassword => {
                let mut err =
                    Self::forbidden("wrong-current-password", "current_password is not correct");
                err.field = Some("current_password".to_owned());
                err
            }
            Error::InvalidGrant => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid-grant",
                "the refresh token is invalid, expired or revoked; log in again",
            ),
            Error::DpopKeyRequired => Self::bad_request(
                "invalid-dpop-proof",
                "this login is bound to a DPoP key: send a DPoP proof signed with that key \
                 (nothing was used up)",
            )
            .with_oauth_error("invalid_dpop_proof"),
            Error::LoginMoved { max_age } => Self::login_moved(max_age),
            Error::DpopNotBound => Self::bad_request(
                "invalid-dpop-proof",
                "this refresh token belongs to a login made without DPoP: refresh it without a \
                 DPoP header, or log in with a DPoP proof to bind a new login to your key",
            )
            .with_oauth_error("invalid_dpop_proof"),
            Error::Invalid { field, message } => {
                let mut err = Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-field",
                    format!("{field} {message}"),
                );
                err.field = Some(field.to_owned());
                err
            }
            Error::Conflict(detail) => Self::new(StatusCode::CONFLICT, "conflict", detail),
            Error::EmailNotVerified => Self::forbidden(
                "email-not-verified",
                "the password is right, but this account's email address is not verified yet: \
                 open the link in the verification mail, or ask for a new one with \
                 POST /v1/account/email/verification",
            ),
            Error::InvalidCode => {
                let mut err = Self::new(
                    StatusCode::BAD_REQUEST,
                    "invalid-code",
                    "the code is unknown, used already, expired, or replaced by a newer one; ask for a new one",
                );
                err.field = Some("code".to_owned());
                err
            }
            Error::InvalidSecondFactor => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid-second-factor",
                "the second-factor code is not correct (a TOTP code works once, within about 30 s either side of its time; a recovery code works once)",
            )
            .with_field("code"),
            Error::PasskeyRefused => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid-second-factor",
                "the passkey's answer does not verify: it must answer options asked for this very login or step-up, once, within five minutes, from this site, with user verification (ask for new options)",
            )
            .with_field("credential"),
            Error::InvalidChallenge => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid-challenge",
                "the login challenge is unknown, used, expired, or was tried too often; log in again with the password",
            )
            .with_field("challenge"),
            Error::StepUpRequired { max_age } => Self::step_up_required(max_age),
            Error::CrossSite => Self::forbidden(
                "cross-site-request",
                "a browser login (session or hybrid) is completed only from this server's own origin",
            ),
            Error::PasskeysUnavailable => Self::new(
                StatusCode::NOT_FOUND,
                "passkeys-unavailable",
                "this server offers no passkeys: its public URL has no domain name to bind them \
                 to (an IP address cannot be a relying party)",
            ),
            Error::MailUnavailable => Self::new(
                StatusCode::NOT_FOUND,
                "mail-unavailable",
                "this server sends no mail (email.smtp_url is not set), so account recovery and \
                 address verification are not available",
            ),
            Error::RegistrationClosed => Self::forbidden(
                "registration-closed",
                "registration is closed on this server; ask an administrator for an account",
            ),
            Error::TooLarge(detail) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", detail)
            }
            Error::Throttled { retry_after, scope } => {
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                let detail = match scope {
                    ThrottleScope::Address => {
                        format!(
                            "too many login attempts from this address; try again in {seconds} s"
                        )
                    }
                    ThrottleScope::Account => {
                        format!(
                            "too many login attempts for this account; try again in {seconds} s"
                        )
                    }
                    ThrottleScope::Mail => format!(
                        "too many mails asked for this account or address; try again in {seconds} s"
                    ),
                };
                Self::new(StatusCode::TOO_MANY_REQUESTS, "too-many-attempts", detail)
                    .with_header(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)))
            }
            Error::Busy => Self::unavailable("the server is busy; try again shortly"),
            Error::Store(StoreError::Unavailable(cause)) => {
                tracing::error!(%cause, "store unavailable");
                Self::unavailable("a backing store is unavailable; try again shortly")
            }
            Error::Store(e) => {
                tracing::error!(error = %e, "store failure");
                Self::internal()
            }
            Error::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Self::internal()
            }
        }
    }
}

impl From<tessera_core::StoreError> for ApiError {
    fn from(e: tessera_core::StoreError) -> Self {
        Error::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, headers, problem) = self.into_problem();
        problem_response(status, headers, &problem)
    }
}

pub(crate) fn problem_response(
    status: StatusCode,
    mut headers: HeaderMap,
    problem: &Problem,
) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_else(|_| b"{}".to_vec());
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    (status, headers, body).into_response()
}

/// The problems any route with a JSON body may answer, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum JsonBodyProblems {
    /// The body is not valid JSON.
    #[response(status = 400, content_type = "application/problem+json")]
    Malformed(Problem),
    /// The body is larger than the server accepts.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body is not JSON (Content-Type).
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// The body is JSON of the wrong shape, or a value is not acceptable.
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
}

/// The problems any route may answer when the server cannot serve it right now.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ServiceProblems {
    /// A store is unreachable, password hashing is saturated, or the request took too long; retry
    /// after `Retry-After` seconds.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}
