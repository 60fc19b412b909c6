//! Layers applied to every response: security headers, `Cache-Control: no-store`, and problem
//! documents for errors that axum or tower produced with a bare body.

use std::any::Any;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::problem::{ApiError, PROBLEM_JSON, Problem, problem_response};

/// The API's security headers. `Cache-Control: no-store` keeps credentials and personal data out of
/// shared and browser caches.
pub(crate) async fn security_headers(mut response: Response, https: bool) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
    response
}

/// Turns an error response that is not yet a problem document (axum's 405, a path rejection) into
/// one, keeping its status and headers (`Allow`, for instance) and its text as the detail.
pub(crate) async fn problem_for_bare_errors<B>(response: axum::http::Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let response = response.map(Body::new);
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let detail = if !text.is_empty() && status.is_client_error() {
        text
    } else {
        status.canonical_reason().unwrap_or("error").to_owned()
    };
    let mut headers: HeaderMap = parts.headers;
    headers.remove(header::CONTENT_LENGTH);
    let problem = Problem {
        kind: format!("urn:tessera:problem:http-{}", status.as_u16()),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        field: None,
        error: None,
    };
    problem_response(status, headers, &problem)
}

/// axum adds the `Allow` header to this answer.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!(
            "{method} is not allowed on {}; the Allow header lists the methods that are",
            uri.path()
        ),
    )
}

/// CORS for the configured trusted origins only: credentials allowed for them, never a reflected
/// arbitrary `Origin`, never `*`. Same-origin requests need no CORS at all.
pub(crate) fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            axum::http::HeaderName::from_static(crate::csrf::CSRF_HEADER),
            crate::extract::dpop::DPOP,
        ])
        .expose_headers([
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
            crate::request_id::X_REQUEST_ID,
            crate::extract::dpop::DPOP_NONCE,
        ])
        .max_age(std::time::Duration::from_secs(600))
        .vary([header::ORIGIN])
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no route matches this path")
}

/// A panic in a handler is a bug: log it, answer a generic 500, keep serving.
pub(crate) fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("<non-string panic>");
    tracing::error!(panic = message, "a request handler panicked");
    let problem = Problem {
        kind: "urn:tessera:problem:internal".into(),
        title: "Internal Server Error".into(),
        status: 500,
        detail: "the server failed to handle the request; the failure has been logged".into(),
        field: None,
        error: None,
    };
    problem_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        HeaderMap::new(),
        &problem,
    )
    .into_response()
}
