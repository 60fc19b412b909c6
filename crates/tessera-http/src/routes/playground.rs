//! The playground page: the comparison of the login models as something to click. Static files compiled into
//! the binary; no inline script, so the page's CSP can forbid it.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// Scripts and styles from this origin only; requests to this origin only; no framing.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_CSP),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the playground's HTML page.
pub async fn page() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("../playground/index.html"),
    )
}

/// `GET /playground.js`: the playground's script, the only one the page's CSP allows.
pub async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../playground/playground.js"),
    )
}

/// `GET /playground.css`: the playground's style sheet.
pub async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../playground/playground.css"),
    )
}
