//! The axum extractor: a handler that takes a [`VerifiedToken`] runs only for valid tokens.

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::http::{Rejection, bearer_token, verify_request};
use crate::{VerifiedToken, Verifier};

/// Reads `Authorization: Bearer` (or `Authorization: DPoP` with its `DPoP` proof, for a token
/// bound to the client's key) and verifies it with the [`Verifier`] in the router's state
/// (the state is the verifier, or implements [`FromRef`] for it). When
/// [`RequireBearerLayer`](crate::RequireBearerLayer) already verified the request, its result is
/// reused.
///
/// ```no_run
/// use axum::{Json, Router, routing::get};
/// use tessera_verify::{VerifiedToken, Verifier};
///
/// async fn me(token: VerifiedToken) -> Json<Vec<String>> {
///     Json(token.roles().to_vec())
/// }
///
/// fn app(verifier: Verifier) -> Router {
///     Router::new().route("/me", get(me)).with_state(verifier)
/// }
/// ```
impl<S> FromRequestParts<S> for VerifiedToken
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(token) = parts.extensions.get::<VerifiedToken>() {
            return Ok(token.clone());
        }
        let verifier = Verifier::from_ref(state);
        let verified = verify_request(
            &verifier,
            &parts.method,
            &parts.uri,
            &parts.headers,
            &parts.extensions,
        )
        .await
        .inspect_err(|e| tracing::debug!(reason = %e, "access token refused"))?;
        parts.extensions.insert(verified.clone());
        Ok(verified)
    }
}

/// `Option<VerifiedToken>`: `None` without an `Authorization` header (or with another scheme);
/// a token that is there must be valid.
impl<S> OptionalFromRequestParts<S> for VerifiedToken
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        if parts.extensions.get::<VerifiedToken>().is_none()
            && let Err(rejection) = bearer_token(&parts.headers)
            && rejection.status() == http::StatusCode::UNAUTHORIZED
        {
            return Ok(None);
        }
        <Self as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        self.to_response()
    }
}
