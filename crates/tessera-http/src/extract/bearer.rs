//! The token model's extractor: `Authorization: Bearer`.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use tessera_core::token::{VerifiedClaims, VerifyError};

use crate::problem::ApiError;
use crate::state::AppState;

/// A request authenticated by `Authorization: Bearer <access token>`. Tokens are read from that
/// header only, never from the query string or a form body. Needs no CSRF token: browsers never
/// attach the header by themselves.
pub struct BearerAuth {
    /// The claims of the access token, after its signature, lifetime and revocation were checked.
    pub claims: VerifiedClaims,
}

/// The bearer token of a request: `Ok(None)` without an `Authorization` header, an error for a
/// header that is not a well-formed bearer credential.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    // Two credentials: refuse rather than guess which one the client meant.
    if values.next().is_some() {
        return Err(ApiError::invalid_token());
    }
    let value = value.to_str().map_err(|_| ApiError::invalid_token())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(ApiError::invalid_token)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::invalid_token());
    }
    Ok(Some(token))
}

impl<S: Send + Sync> FromRequestParts<S> for BearerAuth
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Self::extract(parts, &AppState::from_ref(state))
    }
}

impl BearerAuth {
    pub(crate) fn extract(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers)?.ok_or_else(ApiError::unauthenticated)?;
        match state.tokens().verify(token) {
            Ok(claims) => Ok(Self { claims }),
            Err(VerifyError::StateUnavailable) => Err(state_unavailable()),
            Err(reason) => {
                tracing::debug!(?reason, "bearer token refused");
                Err(ApiError::invalid_token())
            }
        }
    }
}

/// Fail closed: the node cannot tell whether a token was revoked.
pub(super) fn state_unavailable() -> ApiError {
    tessera_core::StoreError::Unavailable("the revocation state is being re-read".into()).into()
}
