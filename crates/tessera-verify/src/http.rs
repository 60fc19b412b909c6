//! HTTP integration: reading `Authorization: Bearer`, answering refusals as RFC 9457 problem
//! documents, and a tower layer that requires a valid token.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, Request, Response, StatusCode};

use crate::{VerifiedToken, Verifier, VerifyError};

/// Why a request was refused, and the answer to give: 401 (no or bad token, with
/// `WWW-Authenticate`), 400 (a malformed `Authorization` header) or 503 (the verifier cannot
/// decide right now). The answer is `application/problem+json` and says no more than the class
/// of failure; [`error`](Self::error) has the details for logs.
#[derive(Debug)]
pub struct Rejection {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// No `Authorization` header, or another scheme.
    Missing,
    /// Two `Authorization` headers, an empty token, or a header that is not text.
    BadRequest(&'static str),
    Token(VerifyError),
}

impl Rejection {
    /// The refusal for a token that failed verification.
    pub fn from_error(error: VerifyError) -> Self {
        Self {
            kind: Kind::Token(error),
        }
    }

    /// The HTTP status: 401, 400 or 503.
    pub fn status(&self) -> StatusCode {
        match &self.kind {
            Kind::Missing => StatusCode::UNAUTHORIZED,
            Kind::BadRequest(_) => StatusCode::BAD_REQUEST,
            Kind::Token(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Token(_) => StatusCode::UNAUTHORIZED,
        }
    }

    /// Why verification failed, when a token was there to verify.
    pub fn error(&self) -> Option<&VerifyError> {
        match &self.kind {
            Kind::Token(e) => Some(e),
            _ => None,
        }
    }

    /// The response, with any body type that can be made from a `String` (axum's `Body`,
    /// `http_body_util::Full<Bytes>`, …).
    pub fn to_response<B: From<String>>(&self) -> Response<B> {
        let status = self.status();
        let (detail, challenge) = match &self.kind {
            Kind::Missing => (
                "this resource needs an access token: Authorization: Bearer <token>",
                Some("Bearer"),
            ),
            Kind::BadRequest(detail) => (*detail, Some("Bearer error=\"invalid_request\"")),
            Kind::Token(e) if e.is_unavailable() => (
                "access tokens cannot be checked right now; try again shortly",
                None,
            ),
            Kind::Token(VerifyError::DpopRequired) => (
                "this access token is bound to a DPoP key: send it as Authorization: DPoP with a DPoP proof of that key",
                Some("DPoP algs=\"ES256 EdDSA\", error=\"invalid_token\""),
            ),
            Kind::Token(VerifyError::NotDpopBound) => (
                "this access token is not bound to a DPoP key: send it as Authorization: Bearer",
                Some("Bearer error=\"invalid_token\""),
            ),
            Kind::Token(e) if e.is_dpop() => (
                "the DPoP proof is invalid, replayed, or not signed by the token's key: make a new proof for every request",
                Some("DPoP algs=\"ES256 EdDSA\", error=\"invalid_dpop_proof\""),
            ),
            Kind::Token(_) => (
                "the access token is invalid, expired or revoked",
                Some("Bearer error=\"invalid_token\""),
            ),
        };
        let body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
        })
        .to_string();
        let mut response = Response::new(B::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(challenge) = challenge {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Missing => f.write_str("no bearer token"),
            Kind::BadRequest(d) => f.write_str(d),
            Kind::Token(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Rejection {}

/// The bearer token of a request. Exactly one `Authorization` header is accepted; the scheme is
/// case-insensitive (`Bearer`, `bearer`); the token is never read from a query string or form.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, Rejection> {
    access_token(headers).map(|(_, token)| token)
}

/// The access token of a request and whether it came with the DPoP scheme: `Authorization:
/// Bearer <token>` or `Authorization: DPoP <token>`.
pub(crate) fn access_token(headers: &HeaderMap) -> Result<(bool, &str), Rejection> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Rejection {
            kind: Kind::Missing,
        });
    };
    if values.next().is_some() {
        return Err(Rejection {
            kind: Kind::BadRequest("send one Authorization header"),
        });
    }
    let value = value.to_str().map_err(|_| Rejection {
        kind: Kind::BadRequest("the Authorization header is not text"),
    })?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let dpop = scheme.eq_ignore_ascii_case(tessera_dpop::AUTH_SCHEME);
    if !dpop && !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Rejection {
            kind: Kind::Missing,
        });
    }
    let token = token.trim_matches(' ');
    if token.is_empty() || token.contains(' ') {
        return Err(Rejection {
            kind: Kind::BadRequest("expected Authorization: Bearer <token>"),
        });
    }
    Ok((dpop, token))
}

/// Verifies the access token of a request with these parts: a bearer token, or a DPoP-bound
/// token with its proof (the `DPoP` header) for this method and URL.
pub(crate) async fn verify_request(
    verifier: &Verifier,
    method: &http::Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    extensions: &http::Extensions,
) -> Result<VerifiedToken, Rejection> {
    let (dpop, token) = access_token(headers)?;
    if !dpop {
        return verifier.verify(token).await.map_err(Rejection::from_error);
    }
    let mut proofs = headers.get_all(tessera_dpop::PROOF_HEADER).iter();
    let proof = match (proofs.next(), proofs.next()) {
        (None, _) => None,
        (Some(value), None) => Some(value.to_str().map_err(|_| Rejection {
            kind: Kind::BadRequest("the DPoP header is not text"),
        })?),
        (Some(_), Some(_)) => {
            return Err(Rejection {
                kind: Kind::BadRequest("send one DPoP header"),
            });
        }
    };
    // Inside a nested axum router the URI has lost its prefix; the client's proof names the
    // whole path.
    #[cfg(feature = "axum")]
    let uri = extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(uri, |original| &original.0);
    #[cfg(not(feature = "axum"))]
    let _ = extensions;
    let url = verifier.request_url(uri, headers).ok_or(Rejection {
        kind: Kind::BadRequest(
            "the request has no Host: its URL, which a DPoP proof names, is unknown",
        ),
    })?;
    verifier
        .verify_dpop(token, proof, method.as_str(), &url)
        .await
        .map_err(Rejection::from_error)
}

/// A tower [`Layer`](tower::Layer) that lets a request through only with a valid bearer token,
/// and puts its [`VerifiedToken`] into the request's extensions (where the axum extractor finds
/// it without verifying again). Refusals are answered by the layer; see [`Rejection`].
///
/// ```no_run
/// # fn wrap(verifier: tessera_verify::Verifier) -> axum::Router {
/// use axum::{Router, routing::get};
/// Router::new()
///     .route("/orders", get(|| async { "only with a valid token" }))
///     .route_layer(tessera_verify::RequireBearerLayer::new(verifier))
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RequireBearerLayer {
    verifier: Verifier,
}

impl RequireBearerLayer {
    /// A layer checking tokens with `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }
}

impl<S> tower::Layer<S> for RequireBearerLayer {
    type Service = RequireBearer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireBearer {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The service [`RequireBearerLayer`] makes: it verifies the bearer token before the wrapped
/// service runs, answers a refusal itself, and hands a valid request on with its
/// [`VerifiedToken`] in the extensions.
#[derive(Clone, Debug)]
pub struct RequireBearer<S> {
    inner: S,
    verifier: Verifier,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for RequireBearer<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let verifier = self.verifier.clone();
        // The clone is not ready; the service that was polled ready handles this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let verified = verify_request(
                &verifier,
                request.method(),
                request.uri(),
                request.headers(),
                request.extensions(),
            )
            .await;
            match verified {
                Ok(token) => {
                    request.extensions_mut().insert::<VerifiedToken>(token);
                    inner.call(request).await
                }
                Err(rejection) => {
                    tracing::debug!(reason = %rejection, "request refused");
                    Ok(rejection.to_response())
                }
            }
        })
    }
}
