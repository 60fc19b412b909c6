//! DPoP (RFC 9449) on the HTTP surface: reading the `DPoP` header, naming the request a proof
//! must be for, and answering refusals as the RFC says — `400` with `error` at the token
//! endpoints, `401` with a `WWW-Authenticate: DPoP` challenge on resources — with a fresh
//! `DPoP-Nonce` whenever nonces are on.

use axum::extract::{OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tessera_core::token::{DpopError, VerifiedClaims};
use tessera_dpop::VerifiedProof;

use crate::problem::ApiError;
use crate::state::AppState;

/// The `DPoP` request header.
pub(crate) const DPOP: HeaderName = HeaderName::from_static("dpop");
/// The `DPoP-Nonce` response header.
pub(crate) const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// The request a proof must name, when it is not the request that carries it: forward-auth puts
/// the original request's method and URL here (from `X-Forwarded-*`) before checking the
/// credential, or the reason it cannot name it.
#[derive(Clone, Debug)]
pub(crate) enum DpopTarget {
    /// The original request's method and absolute URL.
    Known { method: String, url: String },
    /// What the proxy failed to send.
    Unknown(&'static str),
}

/// How the access token came: `Authorization: Bearer` or `Authorization: DPoP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Bearer,
    Dpop,
}

/// The `DPoP` header: `Ok(None)` without one; two, or one that is not text, are refused.
fn proof_header(headers: &HeaderMap) -> Result<Option<&str>, DpopError> {
    let mut values = headers.get_all(DPOP).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(DpopError::Ambiguous);
    }
    value.to_str().map(Some).map_err(|_| DpopError::Ambiguous)
}

/// The method and absolute URL the client addressed: the public URL's origin (and any path it
/// has) followed by the path the request came in on, as the client saw it (before any nesting).
/// An error says why the request cannot be named (forward-auth without the original request).
fn request_target(state: &AppState, parts: &Parts) -> Result<(String, String), &'static str> {
    if let Some(target) = parts.extensions.get::<DpopTarget>() {
        return match target {
            DpopTarget::Known { method, url } => Ok((method.clone(), url.clone())),
            DpopTarget::Unknown(why) => Err(why),
        };
    }
    let path = parts
        .extensions
        .get::<OriginalUri>()
        .map_or_else(|| parts.uri.path(), |original| original.0.path());
    let base = state.public_url().trim_end_matches('/');
    Ok((parts.method.as_str().to_owned(), format!("{base}{path}")))
}

/// The check every request with a token goes through after the token itself verified: a token
/// bound to a key (`cnf.jkt`) needs `Authorization: DPoP` and a fresh proof by that key naming
/// this request and this token; an unbound token must not claim to be one.
pub(crate) async fn check_resource_request(
    state: &AppState,
    parts: &Parts,
    scheme: Scheme,
    token: &str,
    claims: &VerifiedClaims,
) -> Result<(), ApiError> {
    let Some(cnf) = &claims.claims().cnf else {
        if scheme == Scheme::Dpop {
            // RFC 9449 §7.1: the DPoP scheme promises a bound token.
            return Err(resource_refusal(
                state,
                "invalid_token",
                "this access token is not bound to a DPoP key: send it as Authorization: Bearer",
            ));
        }
        return Ok(());
    };
    if scheme != Scheme::Dpop {
        metrics::counter!("tessera_dpop_proofs_total", "outcome" => "bound_token_as_bearer")
            .increment(1);
        return Err(resource_refusal(
            state,
            "invalid_token",
            "this access token is bound to a DPoP key: send it as Authorization: DPoP, with a \
             DPoP proof signed by that key",
        ));
    }
    let proof = proof_header(&parts.headers)
        .and_then(|proof| proof.ok_or(DpopError::Missing))
        .map_err(|e| dpop_resource_error(state, e))?;
    let (method, url) = request_target(state, parts).map_err(|why| {
        resource_refusal(
            state,
            "invalid_dpop_proof",
            &format!("the DPoP proof cannot be checked: {why}"),
        )
    })?;
    let verified = state
        .tokens()
        .dpop()
        .check(proof, &method, &url, Some(token))
        .await
        .map_err(|e| dpop_resource_error(state, e))?;
    if verified.thumbprint != cnf.jkt {
        metrics::counter!("tessera_dpop_proofs_total", "outcome" => "wrong_key").increment(1);
        return Err(dpop_resource_error(state, DpopError::WrongKey));
    }
    Ok(())
}

/// The proof of a request to a token endpoint (`POST /v1/token`, `/v1/token/refresh`,
/// `/v1/token/revoke`): `None` without a `DPoP` header (refused when the server requires DPoP),
/// else the verified proof, not recorded yet (see [`TokenEndpointProof::record`]).
pub(crate) async fn token_endpoint_proof(
    state: &AppState,
    parts: &Parts,
    enforce_required: bool,
) -> Result<Option<VerifiedProof>, ApiError> {
    let dpop = state.tokens().dpop();
    let proof = match proof_header(&parts.headers) {
        Ok(Some(proof)) => proof,
        Ok(None) if enforce_required && dpop.config().required => {
            return Err(token_endpoint_error(state, DpopError::Missing));
        }
        Ok(None) => return Ok(None),
        Err(e) => return Err(token_endpoint_error(state, e)),
    };
    let (method, url) = request_target(state, parts).map_err(|why| {
        ApiError::bad_request(
            "invalid-dpop-proof",
            format!("the DPoP proof cannot be checked: {why}"),
        )
        .with_oauth_error("invalid_dpop_proof")
    })?;
    dpop.verify(proof, &method, &url, None)
        .map(Some)
        .map_err(|e| token_endpoint_error(state, e))
}

/// A refusal at a token endpoint: 400 with the OAuth `error` (RFC 9449 §5, §8).
fn token_endpoint_error(state: &AppState, error: DpopError) -> ApiError {
    let (slug, code) = match error {
        DpopError::Store(e) => return ApiError::from(e),
        DpopError::UseNonce => ("use-dpop-nonce", "use_dpop_nonce"),
        _ => ("invalid-dpop-proof", "invalid_dpop_proof"),
    };
    count_refusal(&error);
    with_nonce(
        state,
        ApiError::bad_request(slug, error.to_string()).with_oauth_error(code),
    )
}

/// A refusal of a DPoP proof on a resource: 401 with a `WWW-Authenticate: DPoP` challenge (RFC
/// 9449 §7.1, §9).
fn dpop_resource_error(state: &AppState, error: DpopError) -> ApiError {
    let code = match error {
        DpopError::Store(e) => return ApiError::from(e),
        DpopError::UseNonce => "use_dpop_nonce",
        DpopError::Missing | DpopError::WrongKey => "invalid_token",
        _ => "invalid_dpop_proof",
    };
    count_refusal(&error);
    resource_refusal(state, code, &error.to_string())
}

fn count_refusal(error: &DpopError) {
    let outcome = match error {
        DpopError::Missing => "missing",
        DpopError::UseNonce => "use_nonce",
        DpopError::Replayed => return, // counted where it is found
        DpopError::WrongKey => return,
        _ => "invalid",
    };
    metrics::counter!("tessera_dpop_proofs_total", "outcome" => outcome).increment(1);
}

/// 401 with `WWW-Authenticate: DPoP error="…"` naming the algorithms accepted, the problem
/// document saying the same in words.
fn resource_refusal(state: &AppState, code: &'static str, detail: &str) -> ApiError {
    let challenge = format!(
        "DPoP algs=\"{}\", error=\"{code}\", error_description=\"{}\"",
        tessera_dpop::SIGNING_ALGORITHMS.join(" "),
        detail.replace(['"', '\\'], "'"),
    );
    let slug = match code {
        "use_dpop_nonce" => "use-dpop-nonce",
        "invalid_dpop_proof" => "invalid-dpop-proof",
        _ => "invalid-token",
    };
    let mut refusal =
        ApiError::new(StatusCode::UNAUTHORIZED, slug, detail.to_owned()).with_oauth_error(code);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        refusal = refusal.with_header(header::WWW_AUTHENTICATE, value);
    }
    with_nonce(state, refusal)
}

fn with_nonce(state: &AppState, refusal: ApiError) -> ApiError {
    match state
        .tokens()
        .dpop()
        .current_nonce()
        .and_then(|nonce| HeaderValue::from_str(&nonce).ok())
    {
        Some(nonce) => refusal.with_header(DPOP_NONCE, nonce),
        None => refusal,
    }
}

/// With nonces on, every answer to a request that carried a proof brings the current nonce, so
/// clients never need a failed request to learn a new one.
pub(crate) async fn send_nonce(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let carried_proof = request.headers().contains_key(DPOP);
    let mut response = next.run(request).await;
    if carried_proof
        && !response.headers().contains_key(DPOP_NONCE)
        && let Some(nonce) = state.tokens().dpop().current_nonce()
        && let Ok(value) = HeaderValue::from_str(&nonce)
    {
        response.headers_mut().insert(DPOP_NONCE, value);
    }
    response
}

/// The verified DPoP proof (RFC 9449) of a request to a token endpoint, if it carried one: its
/// `DPoP` header checked against the request (method and URL), and required when the server
/// requires DPoP. A refusal is a 400 with the OAuth `error` (`invalid_dpop_proof`,
/// `use_dpop_nonce`). The handler records the proof ([`TokenEndpointProof::record`]) once the
/// request has spent its budget, so that it is never accepted again.
pub struct TokenEndpointProof(pub Option<VerifiedProof>);

impl TokenEndpointProof {
    /// The JWK thumbprint of the proof's key: what tokens bound to it carry as `cnf.jkt`.
    pub fn thumbprint(&self) -> Option<&str> {
        self.0.as_ref().map(|proof| proof.thumbprint.as_str())
    }

    /// Records the proof of a request that has just made a login (`made`, its family, for the
    /// token models): a proof used before is refused, and voids that login.
    pub async fn record_for_login(
        &self,
        state: &AppState,
        made: Option<&tessera_core::FamilyId>,
    ) -> Result<(), ApiError> {
        let refusal = match self.record(state).await {
            Ok(()) => return Ok(()),
            Err(refusal) => refusal,
        };
        if let Some(family) = made {
            state
                .tokens()
                .revoke_family(family, "DPoP proof replayed")
                .await?;
        }
        Err(refusal)
    }

    /// For a route that makes token-model logins besides others (a passkey login names its
    /// model in the body): with `tokens.require_dpop`, a token login without a proof is refused
    /// as at `POST /v1/token`.
    pub fn require_for_token_login(&self, state: &AppState) -> Result<(), ApiError> {
        if self.0.is_none() && state.tokens().dpop().config().required {
            return Err(token_endpoint_error(state, DpopError::Missing));
        }
        Ok(())
    }

    /// Records the proof, on every node: a proof that was used before is refused.
    pub async fn record(&self, state: &AppState) -> Result<(), ApiError> {
        match &self.0 {
            Some(proof) => state
                .tokens()
                .dpop()
                .record(proof)
                .await
                .map_err(|e| token_endpoint_error(state, e)),
            None => Ok(()),
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for TokenEndpointProof
where
    AppState: axum::extract::FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = <AppState as axum::extract::FromRef<S>>::from_ref(state);
        token_endpoint_proof(&state, parts, true).await.map(Self)
    }
}

/// [`TokenEndpointProof`] where the server's `tokens.require_dpop` does not apply by itself:
/// completing a login with its second factor, where the login being completed says whether a
/// proof is needed (one started with a proof needs a proof of the same key).
pub struct OptionalDpopProof(pub TokenEndpointProof);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for OptionalDpopProof
where
    AppState: axum::extract::FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = <AppState as axum::extract::FromRef<S>>::from_ref(state);
        token_endpoint_proof(&state, parts, false)
            .await
            .map(|proof| Self(TokenEndpointProof(proof)))
    }
}
