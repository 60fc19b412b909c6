//! Forward-auth (`GET /v1/verify`) as a reverse proxy uses it: route rules matched against
//! `X-Forwarded-Uri` (roles, public routes, the longest prefix, whole segments, path tricks
//! refused), host-bound rules, the redirect of browser navigations to the login page with a safe
//! return address, and the identity headers, non-ASCII usernames included.

mod common;
mod support;

use common::{Backend, Options, TestApp, problem};
use reqwest::{Method, RequestBuilder, StatusCode};
use support::{Login, MODELS, admin, login};
use tessera_http::HttpConfig;
use tessera_http::forward_auth::{Access, RouteRule, VerifyConfig};

const LOGIN_URL: &str = "https://login.example.com/sign-in?app=docs";
const APP_ORIGIN: &str = "https://app.example.com";

fn rule(prefix: &str, access: Access) -> RouteRule {
    RouteRule {
        prefix: prefix.into(),
        host: None,
        access,
        second_factor_max_age: None,
    }
}

fn role(name: &str) -> Access {
    Access::Role(name.into())
}

/// Rules for a typical app: `/admin` for admins (with a public corner), `/public` open,
/// `/reports` for the `reports` role, `/internal` on ops.example.com for `ops`.
fn rules() -> Vec<RouteRule> {
    vec![
        rule("/admin", role("admin")),
        rule("/admin/help", Access::Public),
        rule("/public", Access::Public),
        rule("/reports/", role("reports")),
        RouteRule {
            prefix: "/internal".into(),
            host: Some("ops.example.com".into()),
            access: role("ops"),
            second_factor_max_age: None,
        },
    ]
}

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(
        backend,
        Options {
            http: HttpConfig {
                trusted_origins: vec![APP_ORIGIN.into()],
                verify: VerifyConfig::new(rules(), Some(LOGIN_URL.into())).unwrap(),
                ..tessera_http::HttpConfig::default()
            },
            ..Options::default()
        },
    )
    .await
}

/// `GET /v1/verify` as a proxy sends it for the original request `GET {uri}`.
fn proxied(rb: RequestBuilder, uri: &str) -> RequestBuilder {
    rb.header("x-forwarded-method", "GET")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "app.example.com")
        .header("x-forwarded-uri", uri)
}

fn anonymous(app: &TestApp, uri: &str) -> RequestBuilder {
    proxied(app.request(Method::GET, "/v1/verify"), uri)
}

fn as_login(app: &TestApp, login: &Login, uri: &str) -> RequestBuilder {
    // The proxy's subrequest is a GET whatever the original method: the cookie models need no
    // CSRF token here.
    let rb = match login {
        Login::Session(b) => app.as_browser(b, Method::GET, "/v1/verify", false),
        Login::Token(p) => app
            .request(Method::GET, "/v1/verify")
            .bearer_auth(&p.access),
        Login::Hybrid(h) => h.request(app, Method::GET, "/v1/verify", false),
    };
    proxied(rb, uri)
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn roles_decide(backend: Backend) {
    let app = spawn(backend).await;
    let root = admin(&app).await;
    app.register("alice", common::PASSWORD).await;
    for model in MODELS {
        let alice = login(&app, model, "alice").await;
        for uri in ["/admin", "/admin/", "/admin/users?page=2", "/ADMIN/x"] {
            let r = as_login(&app, &alice, uri).send().await.unwrap();
            let body = problem(r, StatusCode::FORBIDDEN).await;
            assert_eq!(
                body["type"], "urn:tessera:problem:role-required",
                "{model} {uri}"
            );
        }
        // Whole segments: /administrator and /reportsx are not under /admin and /reports.
        for uri in ["/administrator", "/reportsx/1", "/", "/anything/else"] {
            let r = as_login(&app, &alice, uri).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{model} {uri}");
            assert_eq!(header(&r, "x-tessera-username").unwrap(), "alice");
            assert_eq!(header(&r, "x-tessera-model").unwrap(), model);
        }
        // The longest prefix wins: /admin/help is public inside /admin.
        let r = as_login(&app, &alice, "/admin/help/faq")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{model}");
        assert_eq!(header(&r, "x-tessera-username").unwrap(), "alice");
        let r = as_login(&app, &alice, "/reports/q3").send().await.unwrap();
        problem(r, StatusCode::FORBIDDEN).await;
    }
    let root = Login::Token(root);
    for uri in ["/admin", "/admin/users/1", "/public/x"] {
        let r = as_login(&app, &root, uri).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{uri}");
        assert_eq!(header(&r, "x-tessera-roles").unwrap(), "admin");
        assert_eq!(header(&r, "x-tessera-username").unwrap(), "root");
    }
    // The admin role is a role like any other: it does not open /reports.
    let r = as_login(&app, &root, "/reports").send().await.unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
    // Without a credential, a role route is a 401 for an API client.
    let r = anonymous(&app, "/admin").send().await.unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
}

async fn public_routes_need_no_login(backend: Backend) {
    let app = spawn(backend).await;
    for uri in ["/public", "/public/", "/public/a/b?c=d", "/admin/help"] {
        let r = anonymous(&app, uri).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{uri}");
        assert!(header(&r, "x-tessera-user").is_none(), "{uri}");
        assert!(header(&r, "x-tessera-username").is_none(), "{uri}");
    }
    // With a valid credential the identity comes along; a credential that does not verify is
    // ignored on a public route.
    let browser = app.user_with_session("bea").await;
    let r = as_login(&app, &Login::Session(browser), "/public/x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-tessera-username").unwrap(), "bea");
    let r = anonymous(&app, "/public/x")
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(header(&r, "x-tessera-user").is_none());
    // Not public: /publicity (whole segments), and anything without a rule.
    for uri in ["/publicity", "/elsewhere"] {
        let r = anonymous(&app, uri).send().await.unwrap();
        problem(r, StatusCode::UNAUTHORIZED).await;
    }
}

async fn path_tricks_are_refused(backend: Backend) {
    let app = spawn(backend).await;
    let root = Login::Token(admin(&app).await);
    for uri in [
        "/public/../admin",
        "/public/./../admin",
        "//admin",
        "/public//admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/%2fadmin",
        "/public%2f..%2fadmin",
        "/public\\..\\admin",
        "/public/%5c../admin",
        "/public/..;/admin",
        "/admin;jsessionid=1",
        "/public/%252e%252e/admin",
        "/public/%zz",
        "/public/%c0%ae%c0%ae/admin",
        "/public/%00",
        "admin",
        "https://app.example.com/admin",
        "/public/a b",
        "/public#x",
    ] {
        for (who, rb) in [
            ("anonymous", anonymous(&app, uri)),
            ("admin", as_login(&app, &root, uri)),
        ] {
            let r = rb.send().await;
            // reqwest itself refuses some of these header values (the space).
            let Ok(r) = r else { continue };
            let body = problem(r, StatusCode::BAD_REQUEST).await;
            assert_eq!(
                body["type"], "urn:tessera:problem:bad-forwarded-request",
                "{who} {uri}"
            );
            assert!(
                body["detail"].as_str().unwrap().contains("X-Forwarded-Uri"),
                "{uri}: {body}"
            );
        }
    }
    // A percent-encoded letter is the letter: it does not dodge the rule.
    let r = anonymous(&app, "/%61dmin").send().await.unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    let alice = Login::Session(app.user_with_session("alice").await);
    let r = as_login(&app, &alice, "/%61dmin/x").send().await.unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
}

async fn forwarded_headers_are_checked(backend: Backend) {
    let app = spawn(backend).await;
    let bad = [
        ("x-forwarded-method", "GET POST"),
        ("x-forwarded-method", ""),
        ("x-forwarded-proto", "ftp"),
        ("x-forwarded-proto", "https, http"),
        ("x-forwarded-host", "evil.example/x"),
        ("x-forwarded-host", "a.example.com, b.example.com"),
        ("x-forwarded-host", "a.example.com:99999"),
    ];
    for (name, value) in bad {
        let r = app
            .request(Method::GET, "/v1/verify")
            .header("x-forwarded-uri", "/public")
            .header(name, value)
            .send()
            .await
            .unwrap();
        let body = problem(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["type"], "urn:tessera:problem:bad-forwarded-request");
    }
    // Two values of one header.
    let r = anonymous(&app, "/public")
        .header("x-forwarded-uri", "/admin")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::BAD_REQUEST).await;
    // With rules, the path is required (else a role rule could be skipped).
    let r = app
        .request(Method::GET, "/v1/verify")
        .header("x-forwarded-host", "app.example.com")
        .send()
        .await
        .unwrap();
    let body = problem(r, StatusCode::BAD_REQUEST).await;
    assert!(body["detail"].as_str().unwrap().contains("X-Forwarded-Uri"));
    // A host-bound rule: /internal needs `ops` on ops.example.com (any port), and only a login
    // elsewhere; without the host, the check is refused.
    let browser = app.user_with_session("alice").await;
    for host in ["ops.example.com", "OPS.example.com:8443"] {
        let r = app
            .as_browser(&browser, Method::GET, "/v1/verify", false)
            .header("x-forwarded-uri", "/internal/x")
            .header("x-forwarded-host", host)
            .send()
            .await
            .unwrap();
        problem(r, StatusCode::FORBIDDEN).await;
    }
    let alice = Login::Session(browser.clone());
    let r = as_login(&app, &alice, "/internal/x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .as_browser(&browser, Method::GET, "/v1/verify", false)
        .header("x-forwarded-uri", "/internal/x")
        .send()
        .await
        .unwrap();
    let body = problem(r, StatusCode::BAD_REQUEST).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("X-Forwarded-Host")
    );
    // The redirect query parameter takes two values.
    let r = app
        .request(Method::GET, "/v1/verify?redirect=yes")
        .header("x-forwarded-uri", "/public")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::BAD_REQUEST).await;
}

async fn browsers_are_sent_to_the_login_page(backend: Backend) {
    let app = spawn(backend).await;
    let html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let expected_return = format!(
        "{LOGIN_URL}&return_to=https%3A%2F%2Fapp.example.com%2Fadmin%2Fusers%3Fpage%3D2%26q%3Dz"
    );
    let r = anonymous(&app, "/admin/users?page=2&q=z")
        .header("accept", html)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(header(&r, "location").unwrap(), expected_return);
    // A credential that no longer verifies is sent to log in again, too.
    let r = anonymous(&app, "/admin/users?page=2&q=z")
        .header("accept", html)
        .header("cookie", format!("{}=expired-or-forged", common::COOKIE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(header(&r, "location").unwrap(), expected_return);
    // This server's own origin is trusted as well.
    let own = app.origin.clone();
    let own_host = own.strip_prefix("http://").unwrap().to_owned();
    let r = app
        .request(Method::GET, "/v1/verify")
        .header("accept", "text/html")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", &own_host)
        .header("x-forwarded-uri", "/docs")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let location = header(&r, "location").unwrap();
    assert!(
        location.ends_with(&format!(
            "&return_to=http%3A%2F%2F{}%2Fdocs",
            own_host.replace(':', "%3A")
        )),
        "{location}"
    );
    // No open redirect: an origin that is not trusted (another host, or the trusted host over
    // plain http) gets the login page without a return address.
    for (proto, host) in [
        ("https", "evil.example.net"),
        ("https", "app.example.com.evil.example.net"),
        ("http", "app.example.com"),
        ("https", "app.example.com:8443"),
    ] {
        let r = app
            .request(Method::GET, "/v1/verify")
            .header("accept", "text/html")
            .header("x-forwarded-proto", proto)
            .header("x-forwarded-host", host)
            .header("x-forwarded-uri", "/admin")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FOUND, "{proto}://{host}");
        assert_eq!(
            header(&r, "location").unwrap(),
            LOGIN_URL,
            "{proto}://{host}"
        );
    }
    // API clients, form posts and logged-in users without the role are not redirected.
    let r = anonymous(&app, "/admin")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    let r = anonymous(&app, "/admin").send().await.unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    let r = anonymous(&app, "/admin")
        .header("accept", html)
        .header("x-forwarded-method", "POST")
        .send()
        .await
        .unwrap();
    // `anonymous` already set the method to GET: two values are refused.
    problem(r, StatusCode::BAD_REQUEST).await;
    let r = app
        .request(Method::GET, "/v1/verify")
        .header("accept", html)
        .header("x-forwarded-method", "POST")
        .header("x-forwarded-host", "app.example.com")
        .header("x-forwarded-uri", "/admin")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    let alice = Login::Session(app.user_with_session("alice").await);
    let r = as_login(&app, &alice, "/admin")
        .header("accept", html)
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
    // For nginx: a 401 carrying the address instead of a 302.
    let r = proxied(
        app.request(Method::GET, "/v1/verify?redirect=header"),
        "/admin/users?page=2&q=z",
    )
    .header("accept", html)
    .send()
    .await
    .unwrap();
    assert_eq!(
        header(&r, "x-tessera-location").unwrap(),
        expected_return,
        "the 401 names the login page"
    );
    problem(r, StatusCode::UNAUTHORIZED).await;
}

async fn without_a_login_page_browsers_get_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // No rules and no login page: today's behaviour, X-Forwarded-* optional.
    let r = app
        .request(Method::GET, "/v1/verify")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    let r = anonymous(&app, "/anything")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
}

async fn non_ascii_usernames_are_percent_encoded(backend: Backend) {
    let app = spawn(backend).await;
    for (name, encoded) in [
        ("zoë", "zo%C3%AB"),
        ("山田-2", "%E5%B1%B1%E7%94%B0-2"),
        ("ann+tag@example.com", "ann%2Btag%40example.com"),
    ] {
        app.register(name, common::PASSWORD).await;
        for model in MODELS {
            let login = login(&app, model, name).await;
            let r = as_login(&app, &login, "/anything").send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{name} {model}");
            assert_eq!(header(&r, "x-tessera-username").unwrap(), encoded);
            assert!(r.headers().values().all(|v| v.to_str().is_ok()));
            assert_eq!(
                percent_decode(&header(&r, "x-tessera-username").unwrap()),
                name
            );
            assert!(header(&r, "x-tessera-user").unwrap().starts_with("usr_"));
        }
    }
}

/// The RFC 3986 decoding a consumer of the header does.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

on_every_backend!(
    roles_decide,
    public_routes_need_no_login,
    path_tricks_are_refused,
    forwarded_headers_are_checked,
    browsers_are_sent_to_the_login_page,
    without_a_login_page_browsers_get_401,
    non_ascii_usernames_are_percent_encoded,
);

/// With rules, a repeated check still reads no store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_with_rules_make_no_store_call() {
    let app = spawn(Backend::Memory).await;
    app.register("alice", common::PASSWORD).await;
    let store = app.memory.clone().unwrap();
    for model in MODELS {
        let alice = login(&app, model, "alice").await;
        let first = as_login(&app, &alice, "/docs").send().await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let before = store.calls();
        for uri in ["/docs", "/admin", "/public/x", "/reports/1"] {
            for _ in 0..10 {
                let r = as_login(&app, &alice, uri).send().await.unwrap();
                assert!(r.status() == StatusCode::OK || r.status() == StatusCode::FORBIDDEN);
            }
        }
        assert_eq!(store.calls() - before, 0, "{model}");
    }
}
