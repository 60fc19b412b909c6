//! The token model: login to a token pair, refresh, revoke (RFC 7009), introspect (RFC 7662),
//! and the JWKS that lets other services verify access tokens offline.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tessera_core::token::{Introspection, TokenPair};
use tessera_core::{LoginModel, RefreshToken};
use utoipa::ToSchema;

use super::Credentials;
use crate::extract::dpop::TokenEndpointProof;
use crate::extract::{AuthUser, ClientMeta, ServiceClient};
use crate::json::{ApiJson, JsonOrForm};
use crate::problem::{ApiError, JsonBodyProblems, Problem, ServiceProblems};
use crate::state::AppState;

/// A token pair (RFC 6749 §5.1).
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// A JWT (RFC 9068) to send as `Authorization: Bearer …`, or, when `token_type` is `DPoP`,
    /// as `Authorization: DPoP …` with a DPoP proof of the client's key.
    pub access_token: String,
    /// `Bearer`, or `DPoP` when the request came with a DPoP proof: the token is then bound to
    /// the proof's key (RFC 9449).
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 600)]
    pub expires_in: u64,
    /// Opaque; exchange it at `POST /v1/token/refresh`. Every use replaces it.
    pub refresh_token: String,
    /// On login only: send it back as `device_token` with later logins to this account. A client
    /// that logged in before keeps a failed-attempt budget of its own, so others guessing at the
    /// account cannot keep it out. It authenticates nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
}

impl From<TokenPair> for TokenResponse {
    fn from(pair: TokenPair) -> Self {
        Self {
            token_type: if pair.dpop_bound { "DPoP" } else { "Bearer" },
            access_token: pair.access_token,
            expires_in: pair.expires_in,
            refresh_token: pair.refresh_token.encode(),
            device_token: None,
        }
    }
}

/// The body of `POST /v1/token/refresh` (RFC 6749 §6), as a form or as JSON.
#[derive(Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// `refresh_token` when given (OAuth clients send it); nothing else is accepted.
    #[serde(default)]
    #[schema(pattern = "^refresh_token$", nullable = false)]
    pub grant_type: Option<String>,
    /// The refresh token of the latest pair; it is used up, and a new pair answers.
    pub refresh_token: String,
}

/// Log in for a token pair.
///
/// For SPAs, mobile apps and services that send `Authorization: Bearer`. The access token is short
/// lived; the refresh token rotates on every use. With a `DPoP` proof header (RFC 9449; ES256 or
/// EdDSA), the tokens are bound to the proof's key: the access token (`token_type: DPoP`) is
/// accepted only with a proof of that key, and so is every refresh of the login.
#[utoipa::path(
    post, path = "/v1/token", tag = "token",
    params(("DPoP" = Option<String>, Header, description = "A DPoP proof (RFC 9449) for this request: binds the tokens to its key")),
    request_body = Credentials,
    responses(
        (status = 200, description = "Logged in (`TokenResponse`); or, for an account with a second factor, a challenge to complete at POST /v1/login/second-factor (`SecondFactorRequired`, no token)", body = crate::routes::second_factor::TokenLoginAnswer),
        (status = 400, description = "The DPoP proof is invalid, replayed, or lacks the server's nonce (`error`: `invalid_dpop_proof`, `use_dpop_nonce`; a fresh nonce in `DPoP-Nonce`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Invalid username or password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn login(
    State(state): State<AppState>,
    client: ClientMeta,
    proof: TokenEndpointProof,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let mut attempt = body.attempt(client, None);
    attempt.dpop_jkt = proof.thumbprint();
    let step = state
        .logins()
        .login_tokens(attempt, LoginModel::Token, None)
        .await?;
    // Recorded once the password was right (the login spent the address's and the account's
    // budgets first), so nobody without a password can fill the replay store. A proof used
    // before voids the login it just made.
    let made = match &step {
        tessera_core::LoginStep::Done(login) => Some(&login.pair.family_id),
        tessera_core::LoginStep::SecondFactor(_) => None,
    };
    proof.record_for_login(&state, made).await?;
    Ok(match step {
        tessera_core::LoginStep::Done(login) => Json(token_login_body(login)).into_response(),
        tessera_core::LoginStep::SecondFactor(pending) => Json(
            crate::routes::second_factor::SecondFactorRequired::from(pending),
        )
        .into_response(),
    })
}

/// What a token login answers: the pair and the device token.
pub(crate) fn token_login_body(login: tessera_core::TokenLogin) -> TokenResponse {
    TokenResponse {
        device_token: Some(login.device_token),
        ..login.pair.into()
    }
}

/// Exchange a refresh token for a new pair.
///
/// The presented token is rotated out. Presenting it again within a few seconds (another tab
/// refreshing at the same time) still gets a valid pair; later, it is treated as stolen and the
/// whole login (every refresh and access token of it) is revoked. A login made with DPoP is
/// refreshed only with a `DPoP` proof of the same key; without one the refresh is refused (and
/// recorded in the audit log), and the refresh token is not used up.
#[utoipa::path(
    post, path = "/v1/token/refresh", tag = "token",
    params(("DPoP" = Option<String>, Header, description = "A DPoP proof (RFC 9449) for this request; required for a login bound to a key")),
    request_body(content(
        (RefreshRequest = "application/json"),
        (RefreshRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "A new pair", body = TokenResponse),
        (status = 400, description = "The DPoP proof is missing (for a bound login), invalid, replayed, of another key, or lacks the server's nonce", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The refresh token is invalid, expired, rotated or revoked", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many refreshes from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    client: ClientMeta,
    proof: TokenEndpointProof,
    JsonOrForm(body): JsonOrForm<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    state.throttle().spend_refresh(client.ip).await?;
    if body
        .grant_type
        .as_deref()
        .is_some_and(|g| g != "refresh_token")
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported-grant-type",
            "grant_type must be refresh_token (or absent)",
        ));
    }
    let token =
        RefreshToken::parse(&body.refresh_token).ok_or(tessera_core::Error::InvalidGrant)?;
    proof.record(&state).await?;
    let pair = state
        .tokens()
        .refresh_with_proof(&token, proof.thumbprint(), Some(&client.info))
        .await?;
    Ok(Json(pair.into()))
}

/// RFC 7009's request (also RFC 7662's).
#[derive(Deserialize, ToSchema)]
pub struct TokenRequest {
    /// The access or refresh token to revoke or introspect.
    pub token: String,
    /// `access_token` or `refresh_token`; a hint only.
    #[serde(default)]
    pub token_type_hint: Option<String>,
}

/// Revoke a token (RFC 7009).
///
/// A refresh token ends its whole login; an access token is refused from now on, and so is its
/// login. The answer is 200 for unknown and invalid tokens too. A token bound to a DPoP key is
/// revoked only with a `DPoP` proof of that key: without one, nothing happens (and the attempt
/// is recorded in the audit log).
#[utoipa::path(
    post, path = "/v1/token/revoke", tag = "token",
    params(("DPoP" = Option<String>, Header, description = "A DPoP proof (RFC 9449) of the key the token is bound to, for a DPoP-bound token")),
    request_body(content(
        (TokenRequest = "application/x-www-form-urlencoded"),
        (TokenRequest = "application/json"),
    )),
    responses(
        (status = 200, description = "The token is not usable any more (or never was)"),
        (status = 400, description = "The DPoP proof is invalid or lacks the server's nonce", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    proof: TokenEndpointProof,
    JsonOrForm(body): JsonOrForm<TokenRequest>,
) -> Result<StatusCode, ApiError> {
    // The proof only shows the caller holds the key; replaying it could only revoke the same
    // token again, so it is not recorded.
    state
        .tokens()
        .revoke_with_proof(
            body.token.trim(),
            body.token_type_hint.as_deref(),
            proof.thumbprint(),
        )
        .await?;
    Ok(StatusCode::OK)
}

/// Introspect a token (RFC 7662).
///
/// For resource servers: authenticate with HTTP Basic as a configured introspection client, or as
/// an admin. Inactive, unknown and invalid tokens all answer `{"active": false}`.
#[utoipa::path(
    post, path = "/v1/token/introspect", tag = "token",
    security(("introspection_client" = []), ("bearer" = [])),
    request_body(content(
        (TokenRequest = "application/x-www-form-urlencoded"),
        (TokenRequest = "application/json"),
    )),
    responses(
        (status = 200, description = "What the token is", body = Object),
        (status = 401, description = "The caller is not an introspection client or an admin", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn introspect(
    State(state): State<AppState>,
    service_client: Option<ServiceClient>,
    caller: Result<AuthUser, ApiError>,
    JsonOrForm(body): JsonOrForm<TokenRequest>,
) -> Result<Json<Introspection>, ApiError> {
    let allowed = service_client.is_some() || caller.is_ok_and(|c| c.is_admin());
    if !allowed {
        return Err(ApiError::unauthenticated().with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"tessera-introspection\""),
        ));
    }
    Ok(Json(state.tokens().introspect(body.token.trim()).await?))
}

/// The public signing keys (RFC 7517), for services that verify access tokens offline.
///
/// Fetch again when a token names a `kid` you do not have. Absent (404) when tokens are signed
/// with HS256, which has no public key.
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "token",
    responses(
        (status = 200, description = "The JWK set", body = Object, content_type = "application/jwk-set+json"),
        (status = 404, description = "Tokens are signed with a shared secret (HS256): there is no public key", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let ring = state.tokens().keyring();
    if !ring.algorithm().is_asymmetric() {
        return Err(ApiError::not_found(
            "tokens are signed with HS256 (a shared secret): there is no public key to publish",
        ));
    }
    Ok((
        [
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=60"),
            ),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jwk-set+json"),
            ),
        ],
        Json(ring.jwks()),
    )
        .into_response())
}

/// This server's OAuth metadata (RFC 8414): where its endpoints are and what they accept,
/// `dpop_signing_alg_values_supported` (RFC 9449) among them.
///
/// The `token_endpoint` is the refresh endpoint, which speaks RFC 6749 (`grant_type=
/// refresh_token`); logins go to `POST /v1/token` with a JSON username and password, which is not
/// an OAuth grant and so is not listed.
#[utoipa::path(
    get, path = "/.well-known/oauth-authorization-server", tag = "token",
    responses(
        (status = 200, description = "The authorization server metadata", body = Object),
    )
)]
pub async fn metadata(State(state): State<AppState>) -> Response {
    let base = format!(
        "{}{}",
        state.public_url().trim_end_matches('/'),
        state.mount()
    );
    let tokens = state.tokens();
    let mut document = serde_json::json!({
        "issuer": tokens.config().issuer,
        "token_endpoint": format!("{base}/v1/token/refresh"),
        "revocation_endpoint": format!("{base}/v1/token/revoke"),
        "introspection_endpoint": format!("{base}/v1/token/introspect"),
        "grant_types_supported": ["refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "dpop_signing_alg_values_supported": tessera_dpop::SIGNING_ALGORITHMS,
        "service_documentation": format!("{base}/openapi.json"),
    });
    if tokens.keyring().algorithm().is_asymmetric() {
        document["jwks_uri"] = format!("{base}/.well-known/jwks.json").into();
    }
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        )],
        Json(document),
    )
        .into_response()
}
