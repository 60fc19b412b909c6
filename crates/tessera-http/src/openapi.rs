//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::csrf::CSRF_HEADER;
use crate::extract::{CookieNames, SESSION_COOKIE};

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
        (name = "second-factor", description = "TOTP and recovery codes: enrolment, completing a login with the second factor, and step-up"),
        (name = "passkeys", description = "Passkeys (WebAuthn): registration, passwordless login, and a passkey as the second factor of a login or a step-up"),
        (name = "admin", description = "For users with the admin role; privileged (an admin with a second factor must have used it recently)"),
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
                "The hybrid model's access-token cookie, set by POST /v1/hybrid/login.",
            ))),
        );
        components.add_security_scheme(
            "hybrid_refresh_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-tessera-rt",
                "The hybrid model's refresh cookie, set by POST /v1/hybrid/login: it names the login, so it works after the access cookie expired.",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from POST /v1/token (RFC 9068). A token issued with a DPoP proof (token_type DPoP) is sent as `Authorization: DPoP <token>` instead, with a `DPoP` proof header for each request (RFC 9449).",
                    ))
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

pub(crate) fn render(
    mut doc: utoipa::openapi::OpenApi,
    names: &CookieNames,
    base_path: &str,
) -> std::sync::Arc<str> {
    add_links(&mut doc);
    // The cookies' names as this server sets them, and the path clients reach its routes under.
    if let Some(components) = doc.components.as_mut() {
        for (scheme, name) in [
            ("session_cookie", &names.session),
            ("hybrid_cookies", &names.hybrid_access),
            ("hybrid_refresh_cookie", &names.hybrid_refresh),
        ] {
            if let Some(utoipa::openapi::RefOr::T(SecurityScheme::ApiKey(ApiKey::Cookie(value)))) =
                components.security_schemes.get_mut(scheme)
            {
                value.name.clone_from(name);
            }
        }
    }
    if !base_path.is_empty() {
        doc.servers = Some(vec![utoipa::openapi::server::Server::new(base_path)]);
    }
    doc.to_json().unwrap_or_else(|_| "{}".into()).into()
}

/// OpenAPI links: which later requests use what a response returns, so that
/// a client generator or a stateful API tester can follow a login to the routes that use it.
fn add_links(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::link::LinkBuilder;
    use utoipa::openapi::path::HttpMethod;

    // (from path, method, status, link name, to path, method, parameters, request body)
    type Spec = (
        &'static str,
        HttpMethod,
        &'static str,
        &'static str,
        &'static str,
        HttpMethod,
        &'static [(&'static str, &'static str)],
        Option<serde_json::Value>,
    );
    let links: Vec<Spec> = vec![
        (
            "/v1/token",
            HttpMethod::Post,
            "200",
            "Refresh",
            "/v1/token/refresh",
            HttpMethod::Post,
            &[],
            Some(serde_json::json!({"refresh_token": "$response.body#/refresh_token"})),
        ),
        (
            "/v1/token",
            HttpMethod::Post,
            "200",
            "Revoke",
            "/v1/token/revoke",
            HttpMethod::Post,
            &[],
            Some(serde_json::json!({"token": "$response.body#/refresh_token"})),
        ),
        (
            "/v1/token/refresh",
            HttpMethod::Post,
            "200",
            "RefreshAgain",
            "/v1/token/refresh",
            HttpMethod::Post,
            &[],
            Some(serde_json::json!({"refresh_token": "$response.body#/refresh_token"})),
        ),
        (
            "/v1/users",
            HttpMethod::Post,
            "201",
            "GetUser",
            "/v1/admin/users/{id}",
            HttpMethod::Get,
            &[("id", "$response.body#/id")],
            None,
        ),
        (
            "/v1/users",
            HttpMethod::Post,
            "201",
            "DisableUser",
            "/v1/admin/users/{id}/disable",
            HttpMethod::Post,
            &[("id", "$response.body#/id")],
            None,
        ),
        (
            "/v1/users",
            HttpMethod::Post,
            "201",
            "EnableUser",
            "/v1/admin/users/{id}/enable",
            HttpMethod::Post,
            &[("id", "$response.body#/id")],
            None,
        ),
        (
            "/v1/users",
            HttpMethod::Post,
            "201",
            "SetRoles",
            "/v1/admin/users/{id}/roles",
            HttpMethod::Put,
            &[("id", "$response.body#/id")],
            None,
        ),
        (
            "/v1/users",
            HttpMethod::Post,
            "201",
            "UserSessions",
            "/v1/admin/users/{id}/sessions",
            HttpMethod::Get,
            &[("id", "$response.body#/id")],
            None,
        ),
        (
            "/v1/users",
            HttpMethod::Post,
            "201",
            "ForceLogout",
            "/v1/admin/users/{id}/logout",
            HttpMethod::Post,
            &[("id", "$response.body#/id")],
            None,
        ),
        (
            "/v1/users",
            HttpMethod::Post,
            "201",
            "DeleteUser",
            "/v1/admin/users/{id}",
            HttpMethod::Delete,
            &[("id", "$response.body#/id")],
            None,
        ),
        (
            "/v1/session/login",
            HttpMethod::Post,
            "200",
            "EndThisLogin",
            "/v1/sessions/{id}",
            HttpMethod::Delete,
            &[("id", "$response.body#/session/id")],
            None,
        ),
        (
            "/v1/hybrid/login",
            HttpMethod::Post,
            "200",
            "EndThisLogin",
            "/v1/sessions/{id}",
            HttpMethod::Delete,
            &[("id", "$response.body#/login_id")],
            None,
        ),
    ];
    for (from, method, status, name, to, to_method, parameters, body) in links {
        let reference = format!(
            "#/paths/{}/{}",
            to.replace('~', "~0").replace('/', "~1"),
            method_name(&to_method)
        );
        let mut link = LinkBuilder::new().operation_ref(reference);
        for (parameter, expression) in parameters {
            link = link.parameter(*parameter, *expression);
        }
        let link = link.request_body(body).build();
        let Some(item) = doc.paths.paths.get_mut(from) else {
            continue;
        };
        let operation = match method {
            HttpMethod::Get => item.get.as_mut(),
            HttpMethod::Post => item.post.as_mut(),
            HttpMethod::Put => item.put.as_mut(),
            HttpMethod::Delete => item.delete.as_mut(),
            _ => None,
        };
        if let Some(RefOr::T(response)) =
            operation.and_then(|o| o.responses.responses.get_mut(status))
        {
            response.links.insert(name.to_owned(), RefOr::T(link));
        }
    }
}

fn method_name(method: &utoipa::openapi::path::HttpMethod) -> &'static str {
    use utoipa::openapi::path::HttpMethod;
    match method {
        HttpMethod::Get => "get",
        HttpMethod::Post => "post",
        HttpMethod::Put => "put",
        HttpMethod::Delete => "delete",
        HttpMethod::Patch => "patch",
        HttpMethod::Head => "head",
        HttpMethod::Options => "options",
        HttpMethod::Trace => "trace",
    }
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
