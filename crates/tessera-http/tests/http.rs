//! HTTP hygiene: problem documents for every error, methods, media types, body limits, security
//! headers, health, and the OpenAPI document.

mod common;

use common::{Backend, Options, PASSWORD, TestApp, problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_http::HttpConfig;

on_every_backend!(
    malformed_json_is_a_400,
    a_body_that_is_not_json_is_a_415,
    a_body_of_the_wrong_shape_is_a_422,
    an_oversized_body_is_a_413,
    wrong_methods_are_a_405_with_allow,
    unknown_routes_are_a_404,
    every_response_carries_the_security_headers,
    health_and_readiness,
);

async fn malformed_json_is_a_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for body in ["{", "{\"username\": \"a\",}", "nope", ""] {
        let r = app
            .request(Method::POST, "/v1/users")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let p = problem(r, StatusCode::BAD_REQUEST).await;
        assert!(
            p["detail"].as_str().unwrap().contains("not valid JSON"),
            "{p}"
        );
    }
}

async fn a_body_that_is_not_json_is_a_415(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .request(Method::POST, "/v1/session/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username=a&password={PASSWORD}"))
        .send()
        .await
        .unwrap();
    let p = problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert!(p["detail"].as_str().unwrap().contains("application/json"));
    let r = app
        .request(Method::POST, "/v1/users")
        .body("{}")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

async fn a_body_of_the_wrong_shape_is_a_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cases = [
        json!({"username": "a"}),
        json!({"username": 5, "password": PASSWORD}),
        json!({"username": "a", "password": PASSWORD, "admin": true}),
        json!([]),
    ];
    for body in cases {
        let r = app
            .request(Method::POST, "/v1/users")
            .json(&body)
            .send()
            .await
            .unwrap();
        let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(
            p["detail"].as_str().unwrap().contains("expected shape"),
            "{p}"
        );
    }
}

async fn an_oversized_body_is_a_413(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            http: HttpConfig {
                body_limit: 4096,
                ..tessera_http::HttpConfig::default()
            },
            ..Options::default()
        },
    )
    .await;
    let big = json!({"username": "a", "password": "x".repeat(10_000)});
    let r = app
        .request(Method::POST, "/v1/users")
        .json(&big)
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    // Chunked, without a Content-Length up front: the limit holds while reading.
    let raw = raw_request(
        &app,
        "POST /v1/users HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        &{
            let mut body = String::new();
            for _ in 0..10 {
                body.push_str(&format!("3e8\r\n{}\r\n", " ".repeat(1000)));
            }
            body.push_str("0\r\n\r\n");
            body
        },
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("content-type: application/problem+json")
    );
}

/// Writes a request by hand and reads the whole answer.
async fn raw_request(app: &TestApp, head: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before the whole body is sent.
    let _ = stream.write_all(body.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn wrong_methods_are_a_405_with_allow(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .request(Method::GET, "/v1/session/login")
        .send()
        .await
        .unwrap();
    let allow = r.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("POST"), "{allow}");
    let p = problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
    assert!(
        p["detail"].as_str().unwrap().contains("GET is not allowed"),
        "{p}"
    );
    let r = app
        .request(Method::PUT, "/v1/session")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
}

async fn unknown_routes_are_a_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .request(Method::GET, "/v1/nothing-here")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND).await;
}

async fn every_response_carries_the_security_headers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let responses = [
        app.request(Method::GET, "/healthz").send().await.unwrap(),
        app.request(Method::GET, "/v1/me").send().await.unwrap(),
        app.register("alice", PASSWORD).await,
        app.login_response("alice", PASSWORD).await,
    ];
    for r in responses {
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(
            h["content-security-policy"],
            "default-src 'none'; frame-ancestors 'none'"
        );
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(
            h.get("strict-transport-security").is_none(),
            "no HSTS on plain http"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_when_the_public_url_is_https() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options {
            http: HttpConfig {
                public_url: "https://auth.example".into(),
                ..tessera_http::HttpConfig::default()
            },
            ..Options::default()
        },
    )
    .await;
    let r = app.request(Method::GET, "/healthz").send().await.unwrap();
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
}

async fn health_and_readiness(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for path in ["/healthz", "/readyz"] {
        let r = app.request(Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_route_and_the_security_schemes() {
    let app = TestApp::spawn(Backend::Memory).await;
    let r = app
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/users", "post"),
        ("/v1/me", "get"),
        ("/v1/verify", "get"),
        ("/v1/session/login", "post"),
        ("/v1/session", "get"),
        ("/v1/session", "delete"),
        ("/v1/session/csrf", "get"),
        ("/v1/session/data", "get"),
        ("/v1/session/data", "patch"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/v1/token", "post"),
        ("/v1/token/refresh", "post"),
        ("/v1/token/revoke", "post"),
        ("/v1/token/introspect", "post"),
        ("/.well-known/jwks.json", "get"),
        ("/v1/admin/keys", "get"),
        ("/v1/admin/keys/rotate", "post"),
        ("/v1/admin/keys/{kid}/retire", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["session_cookie"]["in"], "cookie");
    assert_eq!(schemes["session_cookie"]["name"], "__Host-tessera");
    assert_eq!(schemes["csrf_token"]["in"], "header");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["bearer"]["bearerFormat"], "JWT");
    assert_eq!(schemes["introspection_client"]["scheme"], "basic");
    let refresh_body = &doc["paths"]["/v1/token/refresh"]["post"]["requestBody"]["content"];
    assert!(refresh_body["application/x-www-form-urlencoded"].is_object());
    for status in ["400", "413", "415", "422", "503"] {
        assert!(
            doc["paths"]["/v1/token"]["post"]["responses"][status].is_object(),
            "POST /v1/token does not document {status}"
        );
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    let logout_responses = &doc["paths"]["/v1/session"]["delete"]["responses"];
    assert!(logout_responses["403"]["content"]["application/problem+json"].is_object());
}

/// With its store gone, the server fails closed: 503 problem documents, no panic, no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_store_fails_closed_with_503() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let browser = app.user_with_session("alice").await;
    app.sqlite.as_ref().unwrap().close().await;
    let ready = app.request(Method::GET, "/readyz").send().await.unwrap();
    let p = problem(ready, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(p["detail"].as_str().unwrap().contains("unavailable"));
    let login = app.login_response("alice", PASSWORD).await;
    assert!(common::session_cookie(&login).is_none());
    assert_eq!(login.headers()["retry-after"], "1");
    problem(login, StatusCode::SERVICE_UNAVAILABLE).await;
    let me = app
        .as_browser(&browser, Method::GET, "/v1/me", false)
        .send()
        .await
        .unwrap();
    problem(me, StatusCode::SERVICE_UNAVAILABLE).await;
    // Liveness does not depend on the store.
    let live = app.request(Method::GET, "/healthz").send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
}

/// Operators scrape request counts per route template and the domain counters, on the management
/// listener only; no user, address or token appears in them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_per_route_and_logins() {
    let app = TestApp::spawn(Backend::Memory).await;
    let browser = app.user_with_session("metrics-user").await;
    let r = app
        .as_browser(&browser, Method::GET, "/v1/me", false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    app.login_response("metrics-user", "wrong password!").await;
    app.request(Method::DELETE, "/v1/sessions/ses_someone")
        .send()
        .await
        .unwrap();

    // Not on the public port: the management listener only.
    let r = app.request(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = app
        .client
        .get(format!("http://{}/metrics", app.management))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for expected in [
        "tessera_http_requests_total{route=\"/v1/me\",method=\"GET\",status=\"200\"}",
        "tessera_http_requests_total{route=\"/v1/sessions/{id}\",method=\"DELETE\",status=\"401\"}",
        "tessera_http_request_duration_seconds_bucket{route=\"/v1/me\",method=\"GET\",le=\"0.005\"}",
        "tessera_logins_total{model=\"session\",outcome=\"success\"}",
        "tessera_logins_total{model=\"session\",outcome=\"failure\"}",
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
    for secret in [
        "metrics-user",
        "ses_someone",
        "127.0.0.1",
        browser.cookie.as_deref().unwrap(),
    ] {
        assert!(!text.contains(secret), "{secret} leaked into the metrics");
    }
}
