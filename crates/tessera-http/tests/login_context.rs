//! Binding hints: a login used from a new network and a new user agent at once is recorded in the
//! audit log, and with `accounts.new_context = "step_up"` must show a recent second factor (or
//! log in again). The client's address comes from `X-Forwarded-For` through a trusted proxy, so
//! the tests can move between networks on loopback.

mod common;
mod support;

use std::time::Duration;

use common::{Backend, Options, PASSWORD, TestApp, problem, session_cookie};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use support::admin;
use tessera_core::login_context::NewContextPolicy;
use tessera_core::{Clock, SecondFactorConfig, TotpSecret};
use tessera_http::HttpConfig;

on_every_backend!(
    a_session_used_from_a_new_network_and_browser_is_recorded_once,
    with_step_up_a_moved_session_needs_a_recent_second_factor,
    with_step_up_a_moved_refresh_needs_a_recent_second_factor,
);

const HOME: (&str, &str) = (
    "192.0.2.10",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
);
/// The same browser after an update, on the same network's other address.
const HOME_UPDATED: (&str, &str) = (
    "192.0.2.44",
    "Mozilla/5.0 (X11; Linux x86_64; rv:134.0) Gecko/20100101 Firefox/134.0",
);
const ELSEWHERE: (&str, &str) = ("198.51.100.7", "python-requests/2.32.3");

fn options(policy: NewContextPolicy) -> Options {
    Options {
        http: HttpConfig {
            trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
            ..HttpConfig::default()
        },
        second_factor: SecondFactorConfig {
            new_context: policy,
            ..SecondFactorConfig::default()
        },
        ..Options::default()
    }
}

/// A request from `(address, user agent)`.
fn from(app: &TestApp, method: Method, path: &str, place: (&str, &str)) -> reqwest::RequestBuilder {
    app.request(method, path)
        .header("x-forwarded-for", place.0)
        .header("user-agent", place.1)
}

/// Registers `username` and logs in with a session from `place`: the cookie header and CSRF
/// token.
async fn session_from(app: &TestApp, username: &str, place: (&str, &str)) -> (String, String) {
    let r = from(app, Method::POST, "/v1/session/login", place)
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = session_cookie(&r).unwrap().value;
    let body: Value = r.json().await.unwrap();
    (
        format!("__Host-tessera={cookie}"),
        body["csrf_token"].as_str().unwrap().to_owned(),
    )
}

async fn me(app: &TestApp, cookie: &str, place: (&str, &str)) -> Response {
    from(app, Method::GET, "/v1/me", place)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

async fn context_events(app: &TestApp, admin_token: &str) -> Vec<Value> {
    let r = app
        .request(Method::GET, "/v1/admin/events?limit=200")
        .bearer_auth(admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let events: Value = r.json().await.unwrap();
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "login_context_changed")
        .cloned()
        .collect()
}

async fn a_session_used_from_a_new_network_and_browser_is_recorded_once(backend: Backend) {
    let app = TestApp::spawn_with(backend, options(NewContextPolicy::Record)).await;
    let root = admin(&app).await;
    assert_eq!(
        app.register("alice", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let (cookie, _) = session_from(&app, "alice", HOME).await;

    // The same browser, updated, on another address of the same network; a new network with the
    // same browser; the same network with another client: none is a move.
    for place in [HOME_UPDATED, (ELSEWHERE.0, HOME.1), (HOME.0, ELSEWHERE.1)] {
        assert_eq!(me(&app, &cookie, place).await.status(), StatusCode::OK);
    }
    assert!(context_events(&app, &root.access).await.is_empty());

    // Both at once: allowed (the policy only records), and recorded once however often.
    for _ in 0..3 {
        assert_eq!(me(&app, &cookie, ELSEWHERE).await.status(), StatusCode::OK);
    }
    let events = context_events(&app, &root.access).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let detail = &events[0]["detail"];
    assert_eq!(detail["model"], "session");
    assert_eq!(detail["ip"], ELSEWHERE.0);
    assert_eq!(detail["user_agent"], ELSEWHERE.1);
    assert_eq!(detail["was"]["ip"], HOME.0);
    assert_eq!(detail["policy"], "record");
}

/// Sets up TOTP for the session's user (the clock moves past the confirming step).
async fn enrol(app: &TestApp, cookie: &str, csrf: &str) -> TotpSecret {
    let post = |path: &str| {
        from(app, Method::POST, path, HOME)
            .header("cookie", cookie)
            .header("x-csrf-token", csrf)
            .header("origin", &app.origin)
    };
    let r = post("/v1/account/totp").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let secret = TotpSecret::from_base32(body["secret"].as_str().unwrap()).unwrap();
    let r = post("/v1/account/totp/confirm")
        .json(&json!({"code": secret.code_at(app.clock.now()), "current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    app.clock.advance(Duration::from_secs(30));
    secret
}

async fn with_step_up_a_moved_session_needs_a_recent_second_factor(backend: Backend) {
    let app = TestApp::spawn_with(backend, options(NewContextPolicy::StepUp)).await;
    assert_eq!(
        app.register("alice", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.register("bob", PASSWORD).await.status(),
        StatusCode::CREATED
    );

    // Bob has no second factor: his session, copied elsewhere, is refused there (he logs in
    // again), and goes on at home.
    let (bob, _) = session_from(&app, "bob", HOME).await;
    let r = me(&app, &bob, ELSEWHERE).await;
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_user_authentication")
    );
    let body = problem(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        body["type"],
        "urn:tessera:problem:insufficient-user-authentication"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("new network"),
        "{body}"
    );
    assert_eq!(me(&app, &bob, HOME).await.status(), StatusCode::OK);

    // Alice has TOTP; her session's second factor grows old.
    let (cookie, csrf) = session_from(&app, "alice", HOME).await;
    let secret = enrol(&app, &cookie, &csrf).await;
    app.clock.advance(Duration::from_secs(11 * 60));
    assert_eq!(
        me(&app, &cookie, ELSEWHERE).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // From the new place she steps up with her code, and goes on there.
    let r = from(&app, Method::POST, "/v1/account/step-up", ELSEWHERE)
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("origin", &app.origin)
        .json(&json!({"code": secret.code_at(app.clock.now())}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(me(&app, &cookie, ELSEWHERE).await.status(), StatusCode::OK);
}

async fn with_step_up_a_moved_refresh_needs_a_recent_second_factor(backend: Backend) {
    let app = TestApp::spawn_with(backend, options(NewContextPolicy::StepUp)).await;
    assert_eq!(
        app.register("carol", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let r = from(&app, Method::POST, "/v1/token", HOME)
        .json(&json!({"username": "carol", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let pair: Value = r.json().await.unwrap();
    let refresh = pair["refresh_token"].as_str().unwrap();
    let refresh_from = |place| {
        from(&app, Method::POST, "/v1/token/refresh", place)
            .json(&json!({"refresh_token": refresh}))
            .send()
    };
    // Stolen and refreshed elsewhere: refused, and not used up.
    let r = refresh_from(ELSEWHERE).await.unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    let r = refresh_from(HOME).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
