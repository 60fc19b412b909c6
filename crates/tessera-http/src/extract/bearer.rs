//! The token model's extractor: `Authorization: Bearer`, or `Authorization: DPoP` with a proof
//! for a token bound to the client's key.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use tessera_core::token::{VerifiedClaims, VerifyError};

use super::dpop::Scheme;
use crate::problem::ApiError;
use crate::state::AppState;

/// A request authenticated by `Authorization: Bearer <access token>`, or, for a token bound to a
/// DPoP key (its `cnf.jkt`), `Authorization: DPoP <access token>` with a `DPoP` proof signed by
/// that key for this very request. Tokens are read from that header only, never from the query
/// string or a form body. Needs no CSRF token: browsers never attach the header by themselves.
///
/// ```
/// # use std::sync::Arc;
/// # use axum::body::Body;
/// # use axum::http::Request;
/// # use tessera_core::{ClientInfo, LoginModel, Password, Services, ServicesConfig, Stores, SystemClock};
/// # async fn call(app: &axum::Router, request: Request<Body>) -> (u16, String) {
/// #     use tower::ServiceExt;
/// #     let response = app.clone().oneshot(request).await.unwrap();
/// #     let status = response.status().as_u16();
/// #     let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
/// #     (status, String::from_utf8_lossy(&body).into_owned())
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let (key, _) = tessera_core::token::MasterKey::generate().unwrap();
/// # let services = Services::build(Stores::from_one(tessera_store::MemoryStore::new()),
/// #     Arc::new(SystemClock), key, ServicesConfig::default()).await.unwrap();
/// # let _follower = services.spawn_follower();
/// # let state = tessera_http::AppState::new(services, Default::default()).unwrap();
/// # let alice = state.accounts().create("alice", &Password::new("correct horse battery"), vec![]).await.unwrap();
/// use axum::{Json, Router, routing::get};
/// use serde_json::{Value, json};
/// use tessera_http::extract::BearerAuth;
///
/// async fn notes(bearer: BearerAuth) -> Json<Value> {
///     Json(json!({ "owner": bearer.claims.claims().sub }))
/// }
/// let app = Router::new().route("/api/notes", get(notes)).with_state(state.clone());
/// let pair = state.tokens().issue(&alice, LoginModel::Token, ClientInfo::default()).await.unwrap();
/// let with_token = || Request::get("/api/notes")
///     .header("authorization", format!("Bearer {}", pair.access_token))
///     .body(Body::empty())
///     .unwrap();
/// let (status, body) = call(&app, with_token()).await;
/// assert_eq!(status, 200);
/// assert!(body.contains(alice.id.as_str()), "{body}");
/// // Revoked (its refresh token, hence its whole login): refused on the next request.
/// state.tokens().revoke(&pair.refresh_token.encode(), None).await.unwrap();
/// assert_eq!(call(&app, with_token()).await.0, 401);
/// # }
/// ```
pub struct BearerAuth {
    /// The claims of the access token, after its signature, lifetime and revocation were checked.
    pub claims: VerifiedClaims,
}

/// The access token of a request: `Ok(None)` without an `Authorization` header, an error for a
/// header that is not a well-formed `Bearer` or `DPoP` credential.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    Ok(access_token(headers)?.map(|(_, token)| token))
}

/// [`bearer_token`] with the scheme it came with.
pub(crate) fn access_token(headers: &HeaderMap) -> Result<Option<(Scheme, &str)>, ApiError> {
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
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case(tessera_dpop::AUTH_SCHEME) {
        Scheme::Dpop
    } else {
        return Err(ApiError::invalid_token());
    };
    if token.is_empty() {
        return Err(ApiError::invalid_token());
    }
    Ok(Some((scheme, token)))
}

impl<S: Send + Sync> FromRequestParts<S> for BearerAuth
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Self::extract(parts, &AppState::from_ref(state)).await
    }
}

impl BearerAuth {
    pub(crate) async fn extract(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        let (scheme, token) =
            access_token(&parts.headers)?.ok_or_else(ApiError::unauthenticated)?;
        let claims = match state.tokens().verify(token) {
            Ok(claims) => claims,
            Err(VerifyError::StateUnavailable) => return Err(state_unavailable()),
            Err(reason) => {
                tracing::debug!(?reason, "bearer token refused");
                return Err(ApiError::invalid_token());
            }
        };
        // A hybrid login's token lives in its HttpOnly cookie; copied into a header (by a script
        // that read it from somewhere it should not be) it is refused.
        if claims.claims().model == tessera_core::LoginModel::Hybrid {
            tracing::debug!("a hybrid login's token in the Authorization header refused");
            return Err(ApiError::invalid_token());
        }
        super::dpop::check_resource_request(state, parts, scheme, token, &claims).await?;
        Ok(Self { claims })
    }
}

/// Fail closed: the node cannot tell whether a token was revoked.
pub(super) fn state_unavailable() -> ApiError {
    tessera_core::StoreError::Unavailable("the revocation state is being re-read".into()).into()
}
