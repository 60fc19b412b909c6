//! Every cross-site request rule, for cookie-authenticated requests: the request must not come
//! from another site (`Sec-Fetch-Site`, `Origin`), and an unsafe one must carry the login's CSRF
//! token — the session's synchronizer token (session model), or an HMAC over the login's family id
//! (hybrid model). Bearer requests need neither: browsers never attach an `Authorization` header by
//! themselves.
//!
//! The extractors apply these rules ([`crate::extract`]); a login route takes [`SameOrigin`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use tessera_core::CsrfToken;

use crate::problem::ApiError;
use crate::state::AppState;

/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Safe methods change nothing, so they need no CSRF defence.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Refuses a request a browser marks as cross-site, or whose `Origin` is neither the public origin
/// nor an explicitly trusted one. Requests with neither header (curl, servers) pass: they cannot
/// carry a victim's cookies by accident.
pub fn check_same_origin(headers: &HeaderMap, trusted_origins: &[String]) -> Result<(), ApiError> {
    // Browsers send each of these once: two are a forged request, and neither is believed.
    for name in ["sec-fetch-site", "origin"] {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err(ApiError::forbidden(
                "untrusted-origin",
                format!("the request has more than one {name} header"),
            ));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        // `same-site` is not enough: a sibling subdomain is same-site and may be hostile. The
        // Origin check below decides those.
        if site.as_bytes().eq_ignore_ascii_case(b"cross-site") {
            return Err(ApiError::forbidden(
                "cross-site-request",
                "cross-site requests are refused on cookie-authenticated routes",
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
        if !trusted_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
        {
            return Err(ApiError::forbidden(
                "untrusted-origin",
                "the request's Origin is not this server's public origin nor a trusted origin",
            ));
        }
    }
    Ok(())
}

/// A request that is not cross-site: what a login route requires (login CSRF: another site must
/// not log a victim's browser into the attacker's account).
pub struct SameOrigin;

impl FromRequestParts<AppState> for SameOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        check_same_origin(&parts.headers, &state.0.trusted_origins)?;
        Ok(Self)
    }
}

/// Checks the `X-CSRF-Token` header against the session's token, in constant time.
pub fn check_session_token(headers: &HeaderMap, expected: &CsrfToken) -> Result<(), ApiError> {
    refuse_two_tokens(headers)?;
    let Some(sent) = headers.get(CSRF_HEADER) else {
        return Err(ApiError::forbidden(
            "csrf-token-missing",
            "this request needs the session's CSRF token in the X-CSRF-Token header (GET /v1/session/csrf)",
        ));
    };
    let matches = sent
        .to_str()
        .ok()
        .and_then(CsrfToken::parse)
        .is_some_and(|sent| sent == *expected);
    if matches {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "csrf-token-invalid",
            "the X-CSRF-Token header does not match this session's CSRF token",
        ))
    }
}

/// Checks `X-CSRF-Token` against the CSRF token of the hybrid login (refresh family) `family`.
pub(crate) fn check_hybrid_token(
    headers: &HeaderMap,
    state: &AppState,
    family: &str,
) -> Result<(), ApiError> {
    refuse_two_tokens(headers)?;
    let Some(sent) = headers.get(CSRF_HEADER) else {
        return Err(ApiError::forbidden(
            "csrf-token-missing",
            "this request needs the login's CSRF token in the X-CSRF-Token header (GET /v1/hybrid/session)",
        ));
    };
    let ok = sent.to_str().is_ok_and(|sent| {
        state
            .tokens()
            .keyring()
            .verify_hybrid_csrf_token(family, sent)
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "csrf-token-invalid",
            "the X-CSRF-Token header does not match this login's CSRF token",
        ))
    }
}

/// Two `X-CSRF-Token` headers: refused, rather than guess which one the page meant.
fn refuse_two_tokens(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.get_all(CSRF_HEADER).iter().nth(1).is_some() {
        return Err(ApiError::forbidden(
            "csrf-token-invalid",
            "the request has more than one X-CSRF-Token header",
        ));
    }
    Ok(())
}

/// Requires an `X-CSRF-Token` header without checking its value: for a hybrid refresh token that
/// names no live login, whose CSRF token cannot be known.
pub(crate) fn require_token_header(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.contains_key(CSRF_HEADER) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "csrf-token-missing",
            "this request needs the login's CSRF token in the X-CSRF-Token header",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origin_rules() {
        let trusted = vec!["https://app.example".to_owned()];
        assert!(check_same_origin(&headers(&[]), &trusted).is_ok());
        assert!(
            check_same_origin(&headers(&[("sec-fetch-site", "same-origin")]), &trusted).is_ok()
        );
        assert!(check_same_origin(&headers(&[("sec-fetch-site", "none")]), &trusted).is_ok());
        assert!(
            check_same_origin(&headers(&[("sec-fetch-site", "cross-site")]), &trusted).is_err()
        );
        assert!(
            check_same_origin(&headers(&[("origin", "https://app.example")]), &trusted).is_ok()
        );
        assert!(
            check_same_origin(&headers(&[("origin", "https://APP.example")]), &trusted).is_ok()
        );
        assert!(
            check_same_origin(&headers(&[("origin", "https://evil.example")]), &trusted).is_err()
        );
        assert!(check_same_origin(&headers(&[("origin", "null")]), &trusted).is_err());
        assert!(
            check_same_origin(
                &headers(&[
                    ("origin", "https://sub.app.example"),
                    ("sec-fetch-site", "same-site")
                ]),
                &trusted
            )
            .is_err()
        );
    }

    #[test]
    fn token_rules() {
        let token = CsrfToken::generate().unwrap();
        let other = CsrfToken::generate().unwrap();
        let mut h = HeaderMap::new();
        assert!(check_session_token(&h, &token).is_err());
        h.insert(CSRF_HEADER, HeaderValue::from_str(&other.encode()).unwrap());
        assert!(check_session_token(&h, &token).is_err());
        h.insert(CSRF_HEADER, HeaderValue::from_static("garbage"));
        assert!(check_session_token(&h, &token).is_err());
        h.insert(CSRF_HEADER, HeaderValue::from_str(&token.encode()).unwrap());
        assert!(check_session_token(&h, &token).is_ok());
        // The right token beside a wrong one: neither is believed.
        h.append(CSRF_HEADER, HeaderValue::from_str(&other.encode()).unwrap());
        assert!(check_session_token(&h, &token).is_err());
    }

    /// Two Origin or Sec-Fetch-Site headers are refused even when the first is trusted.
    #[test]
    fn duplicated_origin_headers_are_refused() {
        let trusted = vec!["https://app.example".to_owned()];
        for name in ["origin", "sec-fetch-site"] {
            let mut h = HeaderMap::new();
            let first = if name == "origin" {
                "https://app.example"
            } else {
                "same-origin"
            };
            h.append(name, HeaderValue::from_static(first));
            assert!(check_same_origin(&h, &trusted).is_ok(), "{name}");
            h.append(name, HeaderValue::from_static("https://evil.example"));
            assert!(check_same_origin(&h, &trusted).is_err(), "{name}");
        }
    }
}
