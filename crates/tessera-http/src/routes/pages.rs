//! The account pages the mails link to: `/account/recovery` (set a new password with a recovery
//! code) and `/account/verify` (verify an address). Plain HTML with one script from this origin,
//! in the language of the request when it is English or Chinese; they call the JSON API beside
//! them, so they work under `http.mount` too.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Scripts, styles and requests from this origin only; no framing; no referrer (the code is in
/// the address until the script takes it out).
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: impl Into<Body>) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_CSP),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body.into(),
    )
        .into_response()
}

/// The page's language: Chinese when the request prefers it to English, else English.
fn language(state: &AppState, headers: &HeaderMap) -> &'static str {
    match crate::routes::account::mail_language(state, headers).as_str() {
        "zh" => "zh",
        _ => "en",
    }
}

fn page(state: &AppState, headers: &HeaderMap, name: &'static str) -> Response {
    let html = include_str!("../pages/account.html")
        .replace("{{LANG}}", language(state, headers))
        .replace("{{PAGE}}", name);
    asset("text/html; charset=utf-8", html)
}

/// `GET /account/recovery`: set a new password with the code of a recovery mail.
pub async fn recovery(State(state): State<AppState>, headers: HeaderMap) -> Response {
    page(&state, &headers, "recovery")
}

/// `GET /account/verify`: verify an address with the code of a verification mail.
pub async fn verify(State(state): State<AppState>, headers: HeaderMap) -> Response {
    page(&state, &headers, "verify")
}

/// `GET /account/account.js`: the pages' script.
pub async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../pages/account.js"),
    )
}

/// `GET /account/account.css`: the pages' style sheet.
pub async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../pages/account.css"),
    )
}
