//! Forward-auth: a reverse proxy asks whether a request may pass (the rules themselves live in
//! `crate::forward_auth`).

use axum::extract::State;

use crate::problem::{ApiError, Problem, ServiceProblems};
use crate::state::AppState;

/// Forward-auth: for a reverse proxy (nginx `auth_request`, Traefik ForwardAuth, Caddy
/// `forward_auth`) to ask whether a request may pass.
///
/// The proxy describes the original request in `X-Forwarded-Method`, `X-Forwarded-Proto`,
/// `X-Forwarded-Host` and `X-Forwarded-Uri`; the path is matched against the route rules
/// (`[[verify.rules]]`: a prefix needs a role, or is public; the longest prefix wins, whole
/// segments only). Ambiguous paths (dot or empty segments, encoded slashes, backslashes, `;`,
/// double encoding) are refused with 400. Answers 200 with the identity in headers (none on a
/// public route without a credential), 401, 403 without the route's role, or, for a browser
/// navigation (`Accept: text/html`) when `verify.login_url` is set, 302 to the login page with
/// `return_to` when the original origin is trusted. `?redirect=header` turns that 302 into a 401
/// with the address in `X-Tessera-Location` (nginx cannot pass a redirect on).
///
/// Accepts any login model. Unsafe proxied requests with a cookie are not CSRF-checked here (the
/// proxy forwards this as a GET): apps behind forward-auth must defend their own unsafe routes.
#[utoipa::path(
    get, path = "/v1/verify", tag = "accounts",
    security((), ("bearer" = []), ("session_cookie" = []), ("hybrid_cookies" = [])),
    params(
        ("redirect" = Option<String>, Query, nullable = false, pattern = "^(status|header)$", description = "`status` (default): a browser is sent to the login page with a 302; `header`: a 401 with the address in X-Tessera-Location instead"),
        ("X-Forwarded-Method" = Option<String>, Header, nullable = false, pattern = "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$", description = "The original method (an HTTP token); only GET and HEAD are redirected"),
        ("X-Forwarded-Proto" = Option<String>, Header, nullable = false, pattern = "^[Hh][Tt][Tt][Pp][Ss]?$", description = "http or https (any case), for the return address"),
        ("X-Forwarded-Host" = Option<String>, Header, nullable = false, pattern = "^([A-Za-z0-9_.-]{1,255}|\\[[0-9A-Fa-f:.]{1,253}\\])(:[0-9]{1,5})?$", description = "The original host (a name, or an IPv6 address in brackets, and an optional port up to 65535): host-bound rules and the return address"),
        ("X-Forwarded-Uri" = Option<String>, Header, nullable = false, pattern = "^/[!-\"$-~]*$", description = "The original path and query (visible ASCII, no fragment; the path's percent-escapes must decode); required when route rules are configured"),
    ),
    responses(
        (status = 200, description = "Allowed. With a credential, the identity is in the X-Tessera-* headers; a public route without a credential has none",
            headers(
                ("X-Tessera-User" = String, description = "The user id"),
                ("X-Tessera-Username" = String, description = "The username, percent-encoded UTF-8 (RFC 3986): every byte but A-Z a-z 0-9 - . _ ~ as %XX"),
                ("X-Tessera-Roles" = String, description = "Roles, comma-separated"),
                ("X-Tessera-Model" = String, description = "session, token or hybrid"),
            )),
        (status = 302, description = "A browser navigation without a valid credential: to `verify.login_url`, with `return_to` when the original origin is trusted",
            headers(("Location" = String, description = "The login page"))),
        (status = 400, description = "An X-Forwarded-* header is malformed, or the path is ambiguous", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated (with `?redirect=header`, X-Tessera-Location holds the login page for a browser)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Authenticated without the role the route needs", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn verify(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, ApiError> {
    let (parts, _body) = request.into_parts();
    crate::forward_auth::check(&state, parts).await
}
