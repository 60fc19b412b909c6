//! The session model end to end: cookie attributes, fixation, logout, CSRF, expiry, session data.

mod common;

use std::time::Duration;

use common::{Backend, Browser, COOKIE, Options, PASSWORD, TestApp, problem, session_cookie};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_core::SessionConfig;

on_every_backend!(
    login_sets_a_host_only_secure_httponly_cookie,
    a_cookie_brought_to_login_is_never_adopted,
    logout_deletes_the_server_session,
    unsafe_requests_need_the_sessions_csrf_token,
    cross_site_requests_are_refused,
    cross_site_login_is_refused,
    idle_sessions_expire,
    activity_slides_the_idle_timeout_until_the_absolute_lifetime,
    activity_is_recorded_at_most_once_per_touch_interval,
    session_data_round_trips_with_merge_patch,
    session_data_is_limited_in_size,
    concurrent_patches_lose_nothing,
    the_csrf_token_can_be_fetched_again,
);

async fn alive(app: &TestApp, browser: &Browser) -> bool {
    let r = app
        .as_browser(browser, Method::GET, "/v1/session", false)
        .send()
        .await
        .unwrap();
    match r.status() {
        StatusCode::OK => true,
        StatusCode::UNAUTHORIZED => false,
        other => panic!("unexpected {other}"),
    }
}

async fn login_sets_a_host_only_secure_httponly_cookie(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    let response = app.login_response("alice", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let cookie = session_cookie(&response).unwrap();
    assert!(cookie.has("Secure"), "{cookie:?}");
    assert!(cookie.has("HttpOnly"), "{cookie:?}");
    assert_eq!(cookie.get("SameSite").as_deref(), Some("Lax"));
    assert_eq!(cookie.get("Path").as_deref(), Some("/"));
    assert_eq!(
        cookie.get("Domain"),
        None,
        "__Host- cookies carry no Domain"
    );
    // 256 bits in unpadded base64url.
    assert_eq!(cookie.value.len(), 43);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["username"], "alice");
    assert_eq!(body["csrf_token"].as_str().unwrap().len(), 43);
    assert!(body["session"]["id"].as_str().unwrap().starts_with("ses_"));
    assert!(
        !body.to_string().contains(&cookie.value),
        "the secret is only in the cookie"
    );
}

async fn a_cookie_brought_to_login_is_never_adopted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    // An attacker plants a well-formed id of their choosing, then the victim logs in.
    let planted = "A".repeat(43);
    let response = app
        .request(Method::POST, "/v1/session/login")
        .header("cookie", format!("{COOKIE}={planted}"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let issued = session_cookie(&response).unwrap().value;
    assert_ne!(issued, planted);
    let attacker = Browser {
        cookie: Some(planted),
        csrf: String::new(),
        login: Value::Null,
    };
    assert!(
        !alive(&app, &attacker).await,
        "the planted id must not authenticate"
    );

    // A valid session brought to a new login is replaced, not reused, and stops working.
    let first = app.login("alice", PASSWORD).await;
    let response = app
        .request(Method::POST, "/v1/session/login")
        .header(
            "cookie",
            format!("{COOKIE}={}", first.cookie.as_deref().unwrap()),
        )
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let second = session_cookie(&response).unwrap().value;
    assert_ne!(Some(second.as_str()), first.cookie.as_deref());
    assert!(!alive(&app, &first).await);
}

async fn logout_deletes_the_server_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.user_with_session("alice").await;
    let other = app.login("alice", PASSWORD).await;
    assert!(alive(&app, &browser).await);
    let response = app
        .as_browser(&browser, Method::DELETE, "/v1/session", true)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let cleared = session_cookie(&response).expect("logout clears the cookie");
    assert_eq!(cleared.value, "");
    assert_eq!(cleared.get("Max-Age").as_deref(), Some("0"));
    assert!(cleared.has("Secure") && cleared.get("Path").as_deref() == Some("/"));
    // Replaying the old cookie fails: the state is gone on the server, not just in the browser.
    assert!(!alive(&app, &browser).await);
    let me = app
        .as_browser(&browser, Method::GET, "/v1/me", false)
        .send()
        .await
        .unwrap();
    problem(me, StatusCode::UNAUTHORIZED).await;
    let again = app
        .as_browser(&browser, Method::DELETE, "/v1/session", true)
        .send()
        .await
        .unwrap();
    problem(again, StatusCode::UNAUTHORIZED).await;
    // Another session of the same user is untouched.
    assert!(alive(&app, &other).await);
}

async fn unsafe_requests_need_the_sessions_csrf_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.user_with_session("alice").await;
    let other = app.user_with_session("bob").await;

    let missing = app
        .as_browser(&browser, Method::DELETE, "/v1/session", false)
        .send()
        .await
        .unwrap();
    let body = problem(missing, StatusCode::FORBIDDEN).await;
    assert!(body["detail"].as_str().unwrap().contains("X-CSRF-Token"));

    let wrong = app
        .as_browser(&browser, Method::DELETE, "/v1/session", false)
        .header("x-csrf-token", "A".repeat(43))
        .send()
        .await
        .unwrap();
    problem(wrong, StatusCode::FORBIDDEN).await;

    let garbage = app
        .as_browser(&browser, Method::DELETE, "/v1/session", false)
        .header("x-csrf-token", "not a token at all")
        .send()
        .await
        .unwrap();
    problem(garbage, StatusCode::FORBIDDEN).await;

    // A genuine token, but of another session.
    let borrowed = app
        .as_browser(&browser, Method::DELETE, "/v1/session", false)
        .header("x-csrf-token", &other.csrf)
        .send()
        .await
        .unwrap();
    problem(borrowed, StatusCode::FORBIDDEN).await;

    let patch = app
        .as_browser(&browser, Method::PATCH, "/v1/session/data", false)
        .json(&json!({"x": 1}))
        .send()
        .await
        .unwrap();
    problem(patch, StatusCode::FORBIDDEN).await;

    // None of that changed anything.
    assert!(alive(&app, &browser).await);
    let data = app
        .as_browser(&browser, Method::GET, "/v1/session/data", false)
        .send()
        .await
        .unwrap();
    assert_eq!(data.json::<Value>().await.unwrap(), json!({}));
    // Safe requests need no token.
    assert!(alive(&app, &other).await);
}

async fn cross_site_requests_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.user_with_session("alice").await;
    let cases: [&[(&str, &str)]; 4] = [
        &[("sec-fetch-site", "cross-site")],
        &[("origin", "http://127.0.0.1:9")],
        &[("origin", "null")],
        // A sibling subdomain is same-site, but not a trusted origin.
        &[
            ("sec-fetch-site", "same-site"),
            ("origin", "http://evil.localhost"),
        ],
    ];
    for headers in cases {
        for (method, path) in [
            (Method::DELETE, "/v1/session"),
            (Method::PATCH, "/v1/session/data"),
        ] {
            let mut request = app
                .as_browser(&browser, method, path, true)
                .json(&json!({"changed": true}));
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await.unwrap();
            problem(response, StatusCode::FORBIDDEN).await;
        }
    }
    assert!(alive(&app, &browser).await);
    let data = app
        .as_browser(&browser, Method::GET, "/v1/session/data", false)
        .send()
        .await
        .unwrap();
    assert_eq!(
        data.json::<Value>().await.unwrap(),
        json!({}),
        "a refused PATCH changed data"
    );
    // The app's own origin, as a browser sends it, is accepted.
    let own = app
        .as_browser(&browser, Method::DELETE, "/v1/session", true)
        .header("origin", &app.origin)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::NO_CONTENT);
}

async fn cross_site_login_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.example"),
    ] {
        let response = app
            .request(Method::POST, "/v1/session/login")
            .header(name, value)
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert!(session_cookie(&response).is_none());
        problem(response, StatusCode::FORBIDDEN).await;
    }
}

fn short_sessions() -> Options {
    Options {
        sessions: SessionConfig {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_lifetime: Duration::from_secs(2 * 3600),
            touch_interval: Duration::from_secs(60),
            max_data_bytes: 1024,
            ..SessionConfig::default()
        },
        ..Options::default()
    }
}

async fn idle_sessions_expire(backend: Backend) {
    let app = TestApp::spawn_with(backend, short_sessions()).await;
    let browser = app.user_with_session("alice").await;
    app.clock.advance(Duration::from_secs(29 * 60));
    assert!(alive(&app, &browser).await);
    app.clock.advance(Duration::from_secs(30 * 60 + 1));
    assert!(!alive(&app, &browser).await);
    // Gone for good: moving nothing back revives it.
    assert!(!alive(&app, &browser).await);
}

async fn activity_slides_the_idle_timeout_until_the_absolute_lifetime(backend: Backend) {
    let app = TestApp::spawn_with(backend, short_sessions()).await;
    let browser = app.user_with_session("alice").await;
    // Active every 20 minutes: well past the 30-minute idle timeout in total.
    for _ in 0..5 {
        app.clock.advance(Duration::from_secs(20 * 60));
        assert!(alive(&app, &browser).await);
    }
    // 100 minutes in; the absolute lifetime is 2 hours, however active the user is.
    app.clock.advance(Duration::from_secs(19 * 60));
    assert!(alive(&app, &browser).await);
    app.clock.advance(Duration::from_secs(60 + 1));
    assert!(!alive(&app, &browser).await);
}

async fn activity_is_recorded_at_most_once_per_touch_interval(backend: Backend) {
    let app = TestApp::spawn_with(backend, short_sessions()).await;
    let browser = app.user_with_session("alice").await;
    let last_seen = || async {
        let r = app
            .as_browser(&browser, Method::GET, "/v1/session", false)
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        body["session"]["last_seen_at"].as_str().unwrap().to_owned()
    };
    let at_login = last_seen().await;
    app.clock.advance(Duration::from_secs(30));
    assert_eq!(
        last_seen().await,
        at_login,
        "no write inside the touch interval"
    );
    app.clock.advance(Duration::from_secs(31));
    let touched = last_seen().await;
    assert_ne!(touched, at_login, "a write once the interval has passed");
    app.clock.advance(Duration::from_secs(10));
    assert_eq!(last_seen().await, touched);
    // A refused request (no CSRF token) does not count as activity: the idle timeout runs on.
    app.clock.advance(Duration::from_secs(29 * 60));
    let refused = app
        .as_browser(&browser, Method::DELETE, "/v1/session", false)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    app.clock.advance(Duration::from_secs(2 * 60));
    assert!(
        !alive(&app, &browser).await,
        "a refused request kept the session alive"
    );
}

async fn session_data_round_trips_with_merge_patch(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.user_with_session("alice").await;
    let get = || async {
        let r = app
            .as_browser(&browser, Method::GET, "/v1/session/data", false)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()
    };
    assert_eq!(get().await, json!({}));
    let patch = |body: Value| {
        app.as_browser(&browser, Method::PATCH, "/v1/session/data", true)
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string())
            .send()
    };
    let r = patch(json!({"cart": {"items": [1, 2]}, "theme": "dark", "名前": "アリス"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = patch(json!({"cart": {"coupon": "X"}, "theme": null}))
        .await
        .unwrap();
    let expected = json!({"cart": {"items": [1, 2], "coupon": "X"}, "名前": "アリス"});
    assert_eq!(r.json::<Value>().await.unwrap(), expected);
    assert_eq!(get().await, expected);
    // Plain application/json works too.
    let r = app
        .as_browser(&browser, Method::PATCH, "/v1/session/data", true)
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A patch that is not an object would replace the whole document: refused.
    for bad in [json!([1]), json!("x"), json!(null)] {
        let r = patch(bad).await.unwrap();
        problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    // Data belongs to the session: a second login of the same user starts empty.
    let second = app.login("alice", PASSWORD).await;
    let r = app
        .as_browser(&second, Method::GET, "/v1/session/data", false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({}));
}

async fn session_data_is_limited_in_size(backend: Backend) {
    let app = TestApp::spawn_with(backend, short_sessions()).await;
    let browser = app.user_with_session("alice").await;
    let r = app
        .as_browser(&browser, Method::PATCH, "/v1/session/data", true)
        .json(&json!({"blob": "x".repeat(600)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .as_browser(&browser, Method::PATCH, "/v1/session/data", true)
        .json(&json!({"more": "y".repeat(600)}))
        .send()
        .await
        .unwrap();
    let body = problem(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(body["detail"].as_str().unwrap().contains("1024"));
    // The refused patch left the data as it was.
    let r = app
        .as_browser(&browser, Method::GET, "/v1/session/data", false)
        .send()
        .await
        .unwrap();
    let data: Value = r.json().await.unwrap();
    assert!(data.get("more").is_none());
    assert_eq!(data["blob"].as_str().unwrap().len(), 600);
}

async fn concurrent_patches_lose_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.user_with_session("alice").await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let request = app
            .as_browser(&browser, Method::PATCH, "/v1/session/data", true)
            .json(&json!({ format!("k{i}"): i, "counter": {format!("c{i}"): true} }));
        tasks.push(tokio::spawn(async move {
            request.send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let r = app
        .as_browser(&browser, Method::GET, "/v1/session/data", false)
        .send()
        .await
        .unwrap();
    let data: Value = r.json().await.unwrap();
    for i in 0..24 {
        assert_eq!(data[format!("k{i}")], i, "update {i} was lost: {data}");
        assert_eq!(data["counter"][format!("c{i}")], true);
    }
}

async fn the_csrf_token_can_be_fetched_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.user_with_session("alice").await;
    let r = app
        .as_browser(&browser, Method::GET, "/v1/session/csrf", false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["csrf_token"], browser.csrf.as_str());
    let anonymous = app
        .request(Method::GET, "/v1/session/csrf")
        .send()
        .await
        .unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
}
