//! The authentication surface, attacked from outside: the cookie routes' CSRF and origin rules,
//! duplicated credential cookies, rotated-out refresh cookies, introspection and revocation-stream
//! callers, malformed ids in well-signed tokens, and the login throttle for every route that
//! spends it.

mod common;
mod support;

use common::{Backend, Options, PASSWORD, TestApp, problem, session_cookie};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use support::{
    AT_COOKIE, Login, RT_COOKIE, admin, assert_throttled, claims, hybrid_login, set_cookie,
    token_login,
};
use tessera_core::{Rate, ThrottleConfig};
use tessera_http::{HttpConfig, IntrospectionClient};

const CLIENT: &str = "gateway";
const SECRET: &str = "a long service secret for the review";

fn options() -> Options {
    Options {
        http: HttpConfig {
            introspection_clients: vec![IntrospectionClient {
                id: CLIENT.into(),
                secret: SECRET.into(),
            }],
            ..HttpConfig::default()
        },
        ..Options::default()
    }
}

async fn spawn() -> TestApp {
    TestApp::spawn_with(Backend::Memory, options()).await
}

fn cross_site_variants() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        (
            "sec-fetch-site cross-site",
            vec![("sec-fetch-site", "cross-site")],
        ),
        (
            "SEC-FETCH-SITE CROSS-SITE",
            vec![("sec-fetch-site", "CROSS-SITE")],
        ),
        ("foreign origin", vec![("origin", "https://evil.example")]),
        ("null origin", vec![("origin", "null")]),
        (
            "same-site sibling",
            vec![
                ("origin", "https://sub.localhost"),
                ("sec-fetch-site", "same-site"),
            ],
        ),
    ]
}

fn no_server_error(r: &Response, what: &str) {
    assert!(
        !r.status().is_server_error(),
        "{what}: a server error {}",
        r.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_logins_are_refused_for_both_cookie_models() {
    let app = spawn().await;
    app.register("alice", PASSWORD).await;
    for path in ["/v1/session/login", "/v1/hybrid/login"] {
        for (what, headers) in cross_site_variants() {
            let mut rb = app
                .request(Method::POST, path)
                .json(&json!({"username": "alice", "password": PASSWORD}));
            for (k, v) in headers {
                rb = rb.header(k, v);
            }
            let r = rb.send().await.unwrap();
            assert!(session_cookie(&r).is_none(), "{path} {what}");
            assert!(set_cookie(&r, AT_COOKIE).is_none(), "{path} {what}");
            assert!(set_cookie(&r, RT_COOKIE).is_none(), "{path} {what}");
            problem(r, StatusCode::FORBIDDEN).await;
        }
        // Same origin passes.
        let r = app
            .request(Method::POST, path)
            .header("origin", app.origin.as_str())
            .header("sec-fetch-site", "same-origin")
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path} same origin");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_logout_needs_the_logins_csrf_token_and_a_same_site_request() {
    let app = spawn().await;
    app.register("alice", PASSWORD).await;
    app.register("bob", PASSWORD).await;
    let h = hybrid_login(&app, "alice").await;
    let bobs = hybrid_login(&app, "bob").await;
    let mut attempts: Vec<(String, Vec<(&str, String)>)> = vec![
        ("no token".into(), vec![]),
        ("empty token".into(), vec![("x-csrf-token", String::new())]),
        ("wrong token".into(), vec![("x-csrf-token", "A".repeat(43))]),
        (
            "bob's token".into(),
            vec![("x-csrf-token", bobs.csrf.clone())],
        ),
    ];
    for (what, headers) in cross_site_variants() {
        let mut hs: Vec<(&str, String)> = vec![("x-csrf-token", h.csrf.clone())];
        hs.extend(headers.into_iter().map(|(k, v)| (k, v.to_owned())));
        attempts.push((what.into(), hs));
    }
    // With both cookies, with only the refresh cookie, and with only the access cookie (the
    // family then comes from the access token).
    let variants: Vec<(&str, Option<String>, Option<String>)> = vec![
        ("both cookies", h.at.clone(), h.rt.clone()),
        ("refresh cookie only", None, h.rt.clone()),
        ("access cookie only", h.at.clone(), None),
    ];
    for (cookies_what, at, rt) in &variants {
        for (what, headers) in &attempts {
            let mut cookies = Vec::new();
            if let Some(at) = at {
                cookies.push(format!("{AT_COOKIE}={at}"));
            }
            if let Some(rt) = rt {
                cookies.push(format!("{RT_COOKIE}={rt}"));
            }
            let mut rb = app
                .request(Method::DELETE, "/v1/hybrid/session")
                .header("cookie", cookies.join("; "));
            for (k, v) in headers {
                rb = rb.header(*k, v);
            }
            let r = rb.send().await.unwrap();
            assert_eq!(
                r.status(),
                StatusCode::FORBIDDEN,
                "{cookies_what}, {what}: logout accepted"
            );
        }
    }
    // Still logged in.
    let r = h
        .request(&app, Method::GET, "/v1/me", false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = h
        .request(&app, Method::GET, "/v1/hybrid/session", false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The right request does log out.
    let r = h
        .request(&app, Method::DELETE, "/v1/hybrid/session", true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = h
        .request(&app, Method::GET, "/v1/me", false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_refresh_refuses_cross_site_and_wrong_tokens_in_every_spelling() {
    let app = spawn().await;
    app.register("alice", PASSWORD).await;
    let mut h = hybrid_login(&app, "alice").await;
    for (what, headers) in cross_site_variants() {
        let mut rb = h.request(&app, Method::POST, "/v1/hybrid/refresh", true);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        let r = rb.send().await.unwrap();
        assert!(set_cookie(&r, AT_COOKIE).is_none(), "{what}");
        problem(r, StatusCode::FORBIDDEN).await;
    }
    // The access cookie alone (no refresh cookie) refreshes nothing.
    let r = app
        .request(Method::POST, "/v1/hybrid/refresh")
        .header("cookie", format!("{AT_COOKIE}={}", h.at.clone().unwrap()))
        .header("x-csrf-token", &h.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&r, AT_COOKIE).is_none());
    assert_eq!(h.refresh(&app).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_credential_cookies_are_trusted_for_nothing() {
    let app = spawn().await;
    app.register("alice", PASSWORD).await;
    let h = hybrid_login(&app, "alice").await;
    let at = h.at.clone().unwrap();
    let rt = h.rt.clone().unwrap();
    let s = app.login("alice", PASSWORD).await;
    let sc = s.cookie.clone().unwrap();

    // Access cookie twice (same value and with junk): not authenticated.
    for cookie in [
        format!("{AT_COOKIE}={at}; {AT_COOKIE}={at}"),
        format!("{AT_COOKIE}=junk; {AT_COOKIE}={at}"),
    ] {
        let r = app
            .request(Method::GET, "/v1/me")
            .header("cookie", cookie.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{cookie}");
    }
    // In two Cookie headers.
    let r = app
        .request(Method::GET, "/v1/me")
        .header("cookie", format!("{AT_COOKIE}={at}"))
        .header("cookie", format!("{AT_COOKIE}={at}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "two cookie headers");
    // Session cookie twice.
    let r = app
        .request(Method::GET, "/v1/session")
        .header(
            "cookie",
            format!("{}={sc}; {}={sc}", common::COOKIE, common::COOKIE),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "session twice");
    // A name padded with other whitespace is another cookie: not the credential, and not a
    // second copy that would lock the real one out.
    for planted in ["\u{2000}__Host-tessera", "__Host-tessera\u{a0}"] {
        let r = app
            .request(Method::GET, "/v1/session")
            .header("cookie", format!("{planted}={sc}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{planted:?} alone");
        let r = app
            .request(Method::GET, "/v1/session")
            .header(
                "cookie",
                format!("{}={sc}; {planted}=planted", common::COOKIE),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{planted:?} beside the real one"
        );
    }
    // Refresh cookie twice: no current login, no refresh.
    let r = app
        .request(Method::GET, "/v1/hybrid/session")
        .header("cookie", format!("{RT_COOKIE}={rt}; {RT_COOKIE}={rt}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "refresh twice (current)"
    );
    let r = app
        .request(Method::POST, "/v1/hybrid/refresh")
        .header("cookie", format!("{RT_COOKIE}={rt}; {RT_COOKIE}={rt}"))
        .header("x-csrf-token", &h.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "refresh twice (refresh)"
    );
    assert!(set_cookie(&r, AT_COOKIE).is_none());
    // Names that only decode to the refresh cookie's, the `__Secure-` name a sibling subdomain
    // can set for the whole domain, and names padded with whitespace other than space and tab
    // (a browser lets any sibling set them: they do not start with `__Host-`): no login.
    for name in [
        "__Host%2Dtessera-rt",
        "__host-tessera-rt",
        "__%48ost-tessera-rt",
        "__Secure-tessera-rt",
        "\u{2000}__Host-tessera-rt",
        "__Host-tessera-rt\u{a0}",
        "\u{3000}__Host-tessera-rt",
        "\u{85}__Host-tessera-rt",
    ] {
        let r = app
            .request(Method::POST, "/v1/hybrid/refresh")
            .header("cookie", format!("{name}={rt}"))
            .header("x-csrf-token", &h.csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert!(set_cookie(&r, AT_COOKIE).is_none(), "{name}");
    }
    // Past the reuse grace: had any refused request rotated the token, presenting the genuine
    // cookie now would be reuse and end the login.
    app.clock.advance(std::time::Duration::from_secs(6));
    // Still one live hybrid login that refreshes normally.
    let mut h = h;
    assert_eq!(h.refresh(&app).await, StatusCode::OK);
}

/// Every cookie the server sets is a `__Host-` cookie (Secure, Path=/, no Domain): a browser
/// lets no other site set or overwrite one, so a sibling subdomain cannot plant a credential of
/// its own (a `__Secure-` cookie can be set for the whole domain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cookie_the_server_sets_is_host_only() {
    let app = spawn().await;
    app.register("alice", PASSWORD).await;
    let mut answers = Vec::new();
    let mut h = hybrid_login(&app, "alice").await;
    answers.push(
        app.request(Method::POST, "/v1/hybrid/login")
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
            .await
            .unwrap(),
    );
    answers.push(
        h.request(&app, Method::POST, "/v1/hybrid/refresh", true)
            .send()
            .await
            .unwrap(),
    );
    assert_eq!(h.refresh(&app).await, StatusCode::OK);
    answers.push(
        h.request(&app, Method::DELETE, "/v1/hybrid/session", true)
            .send()
            .await
            .unwrap(),
    );
    let s = app.login("alice", PASSWORD).await;
    answers.push(app.login_response("alice", PASSWORD).await);
    answers.push(
        app.request(Method::DELETE, "/v1/session")
            .header(
                "cookie",
                format!("{}={}", common::COOKIE, s.cookie.unwrap()),
            )
            .header("x-csrf-token", s.csrf)
            .send()
            .await
            .unwrap(),
    );
    let mut seen = 0;
    for r in &answers {
        for line in r.headers().get_all("set-cookie") {
            let line = line.to_str().unwrap();
            let name = line.split('=').next().unwrap();
            let attributes: Vec<String> = line
                .split(';')
                .skip(1)
                .map(|a| a.trim().to_ascii_lowercase())
                .collect();
            assert!(name.starts_with("__Host-"), "{line}");
            assert!(attributes.iter().any(|a| a == "secure"), "{line}");
            assert!(attributes.iter().any(|a| a == "path=/"), "{line}");
            assert!(
                !attributes.iter().any(|a| a.starts_with("domain")),
                "{line}"
            );
            seen += 1;
        }
    }
    // Login, refresh and logout of each model set or clear cookies.
    assert!(seen >= 8, "{seen} cookies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_out_refresh_cookie_needs_the_header_and_then_ends_the_login() {
    let app = spawn().await;
    app.register("alice", PASSWORD).await;
    let mut h = hybrid_login(&app, "alice").await;
    let old_rt = h.rt.clone().unwrap();
    assert_eq!(h.refresh(&app).await, StatusCode::OK);
    // Past the grace window.
    app.clock.advance(std::time::Duration::from_secs(60));
    // Without the header: 403, and the login is not ended by the attempt.
    let r = app
        .request(Method::POST, "/v1/hybrid/refresh")
        .header("cookie", format!("{RT_COOKIE}={old_rt}"))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
    // Cross-site: 403 too.
    let r = app
        .request(Method::POST, "/v1/hybrid/refresh")
        .header("cookie", format!("{RT_COOKIE}={old_rt}"))
        .header("x-csrf-token", "anything")
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
    let r = h
        .request(&app, Method::GET, "/v1/hybrid/session", false)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "refused attempts ended the login"
    );
    // With some header: a reuse, refused, and the login ends.
    let r = app
        .request(Method::POST, "/v1/hybrid/refresh")
        .header("cookie", format!("{RT_COOKIE}={old_rt}"))
        .header("x-csrf-token", "anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&r, AT_COOKIE).is_none());
    let r = h
        .request(&app, Method::GET, "/v1/hybrid/session", false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h.refresh(&app).await, StatusCode::UNAUTHORIZED);
}

async fn introspect(app: &TestApp, rb: reqwest::RequestBuilder, token: &str) -> Response {
    let _ = app;
    rb.form(&[("token", token)]).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_needs_a_service_client_or_an_admin() {
    let app = spawn().await;
    app.register("alice", PASSWORD).await;
    let alice = token_login(&app, "alice").await;
    let root = admin(&app).await;
    let url = "/v1/token/introspect";
    let wrong: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("nothing", app.request(Method::POST, url)),
        (
            "wrong secret",
            app.request(Method::POST, url)
                .basic_auth(CLIENT, Some("wrong")),
        ),
        (
            "secret prefix",
            app.request(Method::POST, url)
                .basic_auth(CLIENT, Some(&SECRET[..10])),
        ),
        (
            "empty secret",
            app.request(Method::POST, url).basic_auth(CLIENT, Some("")),
        ),
        (
            "no colon",
            app.request(Method::POST, url)
                .header("authorization", "Basic Z2F0ZXdheQ=="),
        ),
        (
            "wrong id",
            app.request(Method::POST, url)
                .basic_auth("other", Some(SECRET)),
        ),
        (
            "non-admin bearer",
            app.request(Method::POST, url).bearer_auth(&alice.access),
        ),
        (
            "garbage bearer",
            app.request(Method::POST, url).bearer_auth("garbage"),
        ),
        (
            "basic with the bearer scheme",
            app.request(Method::POST, url)
                .header("authorization", format!("Bearer {CLIENT}:{SECRET}")),
        ),
    ];
    for (what, rb) in wrong {
        let r = introspect(&app, rb, &alice.access).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("\"active\""), "{what}: {body}");
    }
    // Two Authorization headers: one good Basic and one bearer: refused or answered, never 5xx.
    let r = app
        .request(Method::POST, url)
        .basic_auth(CLIENT, Some(SECRET))
        .header("authorization", format!("Bearer {}", alice.access))
        .form(&[("token", alice.access.as_str())])
        .send()
        .await
        .unwrap();
    no_server_error(&r, "two authorization headers");
    // Right ones.
    for (what, rb) in [
        (
            "service client",
            app.request(Method::POST, url)
                .basic_auth(CLIENT, Some(SECRET)),
        ),
        (
            "admin",
            app.request(Method::POST, url).bearer_auth(&root.access),
        ),
    ] {
        let r = introspect(&app, rb, &alice.access).await;
        assert_eq!(r.status(), StatusCode::OK, "{what}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["active"], true, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_stream_is_for_service_clients_only() {
    let app = spawn().await;
    app.register("alice", PASSWORD).await;
    let alice = token_login(&app, "alice").await;
    let root = admin(&app).await;
    let url = "/v1/revocations/stream";
    for (what, rb, status) in [
        (
            "user bearer",
            app.request(Method::GET, url).bearer_auth(&alice.access),
            StatusCode::FORBIDDEN,
        ),
        (
            "admin bearer",
            app.request(Method::GET, url).bearer_auth(&root.access),
            StatusCode::FORBIDDEN,
        ),
        (
            "nothing",
            app.request(Method::GET, url),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "garbage bearer",
            app.request(Method::GET, url).bearer_auth("garbage"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong basic",
            app.request(Method::GET, url)
                .basic_auth(CLIENT, Some("nope")),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), status, "{what}");
        assert_ne!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream"),
            "{what}"
        );
    }
    // A session cookie (a browser) gets no stream either.
    let s = app.login("alice", PASSWORD).await;
    let r = app
        .as_browser(&s, Method::GET, url, false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "session cookie");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ids_in_well_signed_tokens_are_refused_without_a_server_error() {
    let app = spawn().await;
    app.register("alice", PASSWORD).await;
    let alice = token_login(&app, "alice").await;
    let h = hybrid_login(&app, "alice").await;
    let good = claims(&alice.access);
    let sign = |c: &Value| app.tokens.sign_for_tests(Some("at+jwt"), c);
    let sub = good["sub"].as_str().unwrap().to_owned();
    let fid = good["fid"].as_str().unwrap().to_owned();
    let mut cases: Vec<(String, Value)> = Vec::new();
    for bad in [
        json!(""),
        json!("usr_"),
        json!("usr_nobody"),
        json!(format!("{sub}A")),
        json!(format!(" {sub}")),
        json!(sub.to_uppercase()),
        json!(fid.clone()),
        json!(123),
        json!(null),
        json!([sub.clone()]),
        json!({"id": sub.clone()}),
        json!("usr_AAAAAAAAAAAAAAAAAAAAAB"),
        json!("usr_../../admin"),
    ] {
        let mut c = good.clone();
        c["sub"] = bad.clone();
        cases.push((format!("sub {bad}"), c));
    }
    for bad in [
        json!(""),
        json!("fam_"),
        json!("fam_x"),
        json!(sub.clone()),
        json!(format!("{fid}=")),
        json!(7),
        json!(null),
    ] {
        let mut c = good.clone();
        c["fid"] = bad.clone();
        cases.push((format!("fid {bad}"), c));
    }
    for (what, c) in &cases {
        let token = sign(c);
        // Bearer.
        let r = app
            .request(Method::GET, "/v1/me")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what} (bearer)");
        // Hybrid cookie, safe and unsafe.
        let r = app
            .request(Method::GET, "/v1/me")
            .header("cookie", format!("{AT_COOKIE}={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what} (cookie)");
        let r = app
            .request(Method::DELETE, "/v1/sessions")
            .header("cookie", format!("{AT_COOKIE}={token}"))
            .header("x-csrf-token", &h.csrf)
            .send()
            .await
            .unwrap();
        no_server_error(&r, what);
        assert_ne!(r.status(), StatusCode::OK, "{what} (cookie, unsafe)");
        // Hybrid logout with it as the access cookie: nothing to end, never a 5xx.
        let r = app
            .request(Method::DELETE, "/v1/hybrid/session")
            .header("cookie", format!("{AT_COOKIE}={token}"))
            .send()
            .await
            .unwrap();
        no_server_error(&r, what);
        // Introspection says inactive.
        let r = app
            .request(Method::POST, "/v1/token/introspect")
            .basic_auth(CLIENT, Some(SECRET))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{what} (introspect)");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body, json!({"active": false}), "{what} (introspect)");
        // Revocation of it: 200, never a 5xx.
        let r = app
            .request(Method::POST, "/v1/token/revoke")
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{what} (revoke)");
    }
    // The genuine logins are untouched.
    assert_eq!(Login::Token(alice.clone()).me(&app).await, StatusCode::OK);
    assert_eq!(Login::Hybrid(h.clone()).me(&app).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_user_ids_in_admin_urls_are_404s() {
    let app = spawn().await;
    let root = admin(&app).await;
    for id in [
        "usr_nobody",
        "x",
        "usr_AAAAAAAAAAAAAAAAAAAAAB",
        "%20",
        "usr_%2F..%2F",
    ] {
        for (method, path) in [
            (Method::GET, format!("/v1/admin/users/{id}")),
            (Method::POST, format!("/v1/admin/users/{id}/disable")),
            (Method::POST, format!("/v1/admin/users/{id}/logout")),
            (Method::DELETE, format!("/v1/admin/users/{id}")),
        ] {
            let r = app
                .request(method.clone(), &path)
                .bearer_auth(&root.access)
                .send()
                .await
                .unwrap();
            no_server_error(&r, &path);
            assert!(
                r.status() == StatusCode::NOT_FOUND || r.status() == StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {}",
                r.status()
            );
        }
    }
}

fn throttled(per_account: Rate, per_ip: Rate) -> Options {
    Options {
        throttle: ThrottleConfig {
            per_account,
            per_ip,
            ..common::relaxed_throttle()
        },
        ..options()
    }
}

const LOGIN_PATHS: [&str; 3] = ["/v1/session/login", "/v1/token", "/v1/hybrid/login"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_login_route_alone_exhausts_the_account_budget() {
    for path in LOGIN_PATHS {
        let app = TestApp::spawn_with(
            Backend::Memory,
            throttled(
                Rate {
                    burst: 2,
                    per_minute: 1,
                },
                Rate {
                    burst: 1000,
                    per_minute: 1,
                },
            ),
        )
        .await;
        app.accounts
            .create("alice", &tessera_core::Password::new(PASSWORD), Vec::new())
            .await
            .unwrap();
        for _ in 0..2 {
            let r = app
                .request(Method::POST, path)
                .json(&json!({"username": "alice", "password": "wrong password!"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
        let r = app
            .request(Method::POST, path)
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_throttled(r, path).await;
        // Spelled otherwise.
        let r = app
            .request(Method::POST, path)
            .json(&json!({"username": " Alice ", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_throttled(r, path).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_login_route_registration_and_password_change_spend_the_address_budget() {
    // Each route alone exhausts the address budget; then every other route is throttled too.
    let routes = [
        "/v1/session/login",
        "/v1/token",
        "/v1/hybrid/login",
        "/v1/users",
        "password",
    ];
    for first in routes {
        let app = TestApp::spawn_with(
            Backend::Memory,
            throttled(
                Rate {
                    burst: 1000,
                    per_minute: 1,
                },
                Rate {
                    burst: 3,
                    per_minute: 1,
                },
            ),
        )
        .await;
        let mut names = Vec::new();
        for i in 0..8 {
            let name = format!("user{i}");
            app.accounts
                .create(&name, &tessera_core::Password::new(PASSWORD), Vec::new())
                .await
                .unwrap();
            names.push(name);
        }
        // A token to change the password with, made without spending budget: the services.
        let root_user = app
            .accounts
            .create("keeper", &tessera_core::Password::new(PASSWORD), Vec::new())
            .await
            .unwrap();
        let pair = app
            .tokens
            .issue(
                &root_user,
                tessera_core::LoginModel::Token,
                Default::default(),
            )
            .await
            .unwrap();
        let send = |route: &'static str, i: usize| {
            let name = names[i % names.len()].clone();
            let app = &app;
            let access = pair.access_token.clone();
            async move {
                match route {
                    "password" => app
                        .request(Method::POST, "/v1/account/password")
                        .bearer_auth(access)
                        .json(&json!({"current_password": "a wrong guess", "new_password": "another passphrase here"}))
                        .send()
                        .await
                        .unwrap(),
                    "/v1/users" => app
                        .request(Method::POST, "/v1/users")
                        .json(&json!({"username": format!("new{i}"), "password": PASSWORD}))
                        .send()
                        .await
                        .unwrap(),
                    path => app
                        .request(Method::POST, path)
                        .json(&json!({"username": name, "password": "wrong password!"}))
                        .send()
                        .await
                        .unwrap(),
                }
            }
        };
        for i in 0..3 {
            let r = send(first, i).await;
            assert_ne!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{first} #{i}");
            no_server_error(&r, first);
        }
        for other in routes {
            let r = send(other, 7).await;
            assert_throttled(r, &format!("{other} after {first}")).await;
        }
    }
}
