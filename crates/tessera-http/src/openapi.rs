//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::csrf::CSRF_HEADER;
use crate::extract::SESSION_COOKIE;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera",
        description = "Session, token and hybrid login from one server. Errors are RFC 9457 problem documents (application/problem+json).",
    ),
    components(schemas(crate::problem::Problem)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "accounts", description = "Registration and identity"),
        (name = "session", description = "The session model: server-side state, an HttpOnly cookie, CSRF tokens"),
        (name = "token", description = "The token model: JWT access tokens, rotating refresh tokens, revocation, JWKS"),
        (name = "hybrid", description = "The hybrid model: the access token in an HttpOnly cookie, plus a CSRF token"),
        (name = "account", description = "A user's own logins (any model) and password"),
        (name = "admin", description = "For users with the admin role"),
        (name = "ops", description = "Health and readiness"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "The session cookie set by POST /v1/session/login (HttpOnly, Secure, SameSite=Lax).",
            ))),
        );
        components.add_security_scheme(
            "csrf_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRF-Token",
                "The session's CSRF token, required with the cookie on every unsafe request.",
            ))),
        );
        components.add_security_scheme(
            "hybrid_cookies",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-tessera-at",
                "The hybrid model's access-token cookie (with __Secure-tessera-rt on /v1/hybrid), set by POST /v1/hybrid/login.",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token from POST /v1/token (RFC 9068)."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "introspection_client",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "A resource server's introspection credentials (configuration).",
                    ))
                    .build(),
            ),
        );
        debug_assert_eq!(CSRF_HEADER, "x-csrf-token");
    }
}

pub(crate) fn base() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

pub(crate) fn render(doc: utoipa::openapi::OpenApi) -> std::sync::Arc<str> {
    doc.to_json().unwrap_or_else(|_| "{}".into()).into()
}

pub(crate) async fn serve(json: std::sync::Arc<str>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        json.to_string(),
    )
        .into_response()
}
