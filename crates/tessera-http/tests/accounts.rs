//! Registration, login failures that reveal nothing, and `/v1/me`.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Options, PASSWORD, TestApp, problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_core::{Argon2Params, Registration};

on_every_backend!(
    registration_creates_an_account,
    usernames_are_unique_ignoring_case,
    weak_passwords_are_refused_with_a_reason,
    long_unicode_passphrases_are_accepted,
    bad_usernames_are_refused,
    closed_registration_is_refused,
    unknown_user_and_wrong_password_look_the_same,
    me_requires_authentication,
    unknown_user_costs_the_same_hash_as_a_wrong_password,
);

async fn registration_creates_an_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.register("Alice", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["username"], "alice");
    assert!(body["id"].as_str().unwrap().starts_with("usr_"));
    assert_eq!(body["roles"], json!([]));
    assert!(body.get("password_hash").is_none());
    assert!(!body.to_string().contains("argon2"));
    // The new account can log in.
    app.login("alice", PASSWORD).await;
}

async fn usernames_are_unique_ignoring_case(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(
        app.register("bob", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let body = problem(
        app.register("BOB", "another fine passphrase").await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(body["detail"], "the username \"bob\" is taken");
}

async fn weak_passwords_are_refused_with_a_reason(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let short = problem(
        app.register("carol", "short").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(short["field"], "password");
    assert!(short["detail"].as_str().unwrap().contains("at least 8"));
    for common_password in ["password1", "iloveyou", "1q2w3e4r5t", "qwertyuiop"] {
        let body = problem(
            app.register("carol", common_password).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("common"), "{detail}");
        assert!(
            !detail.contains(common_password),
            "the password is echoed: {detail}"
        );
    }
    let too_long = "z".repeat(1025);
    problem(
        app.register("carol", &too_long).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    // No account was created by any of these.
    assert_eq!(
        app.login_response("carol", "password1").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

async fn long_unicode_passphrases_are_accepted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let passphrases = [
        "eight ch",
        "all lower case no digits no symbols at all",
        "日本語のパスフレーズ、とても長い",
        "emoji 🦀🦀🦀 and spaces",
        &"a long passphrase, ".repeat(20),
    ];
    for (i, pw) in passphrases.iter().enumerate() {
        let name = format!("user{i}");
        assert_eq!(
            app.register(&name, pw).await.status(),
            StatusCode::CREATED,
            "{pw:?}"
        );
        app.login(&name, pw).await;
    }
    // NFKC: a decomposed "é" logs in to an account registered with the composed form.
    assert_eq!(
        app.register("zoe", "caf\u{e9} au lait").await.status(),
        StatusCode::CREATED
    );
    app.login("zoe", "cafe\u{301} au lait").await;
}

async fn bad_usernames_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for bad in ["", "has space", "slash/es", &"x".repeat(65)] {
        let body = problem(
            app.register(bad, PASSWORD).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(body["field"], "username", "{bad:?}");
    }
}

async fn closed_registration_is_refused(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            registration: Registration::Closed,
            ..Options::default()
        },
    )
    .await;
    let body = problem(app.register("dave", PASSWORD).await, StatusCode::FORBIDDEN).await;
    assert!(body["detail"].as_str().unwrap().contains("closed"));
}

async fn unknown_user_and_wrong_password_look_the_same(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("erin", PASSWORD).await;
    let wrong = app.login_response("erin", "not the password").await;
    let unknown = app.login_response("nobody", "not the password").await;
    let invalid_name = app
        .login_response("not a valid name!", "not the password")
        .await;
    let mut bodies = Vec::new();
    for response in [wrong, unknown, invalid_name] {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(common::session_cookie(&response).is_none());
        bodies.push(response.text().await.unwrap());
    }
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[0], bodies[2]);
}

/// With production argon2 parameters, a login for an unknown user takes as long as one with a wrong
/// password: both compute one hash. Compares the fastest of several tries of each, which a noisy
/// machine slows least.
async fn unknown_user_costs_the_same_hash_as_a_wrong_password(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            argon2: Argon2Params::default(),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(
        app.register("frank", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    async fn attempt(app: &TestApp, user: &str) -> Duration {
        let start = Instant::now();
        let r = app.login_response(user, "wrong password here").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        start.elapsed()
    }
    // Alternate the two kinds, so both see the same load from whatever else runs on the machine.
    let (mut wrong, mut unknown) = (Duration::MAX, Duration::MAX);
    for _ in 0..12 {
        wrong = wrong.min(attempt(&app, "frank").await);
        unknown = unknown.min(attempt(&app, "nobody-at-all").await);
    }
    // Without the dummy hash an unknown user answers in about a twentieth of the time.
    let ratio = unknown.as_secs_f64() / wrong.as_secs_f64();
    assert!(
        (0.35..3.0).contains(&ratio),
        "unknown user {unknown:?} vs wrong password {wrong:?}"
    );
}

async fn me_requires_authentication(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let anonymous = app.request(Method::GET, "/v1/me").send().await.unwrap();
    let body = problem(anonymous, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["detail"], "authentication required");
    let garbage = app
        .request(Method::GET, "/v1/me")
        .header("cookie", "__Host-tessera=not-a-session")
        .send()
        .await
        .unwrap();
    let garbage_body = problem(garbage, StatusCode::UNAUTHORIZED).await;
    assert_eq!(garbage_body, body, "401 bodies are generic");

    let browser = app.user_with_session("gina").await;
    let me = app
        .as_browser(&browser, Method::GET, "/v1/me", false)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["user"]["username"], "gina");
    assert_eq!(me["auth"]["model"], "session");
    assert_eq!(me["auth"]["session_id"], browser.login["session"]["id"]);
}

/// Forward-auth answers a reverse proxy with the identity in headers, whatever the login model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_passes_the_identity_in_headers() {
    let app = TestApp::spawn(Backend::Memory).await;
    let anonymous = app.request(Method::GET, "/v1/verify").send().await.unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;

    let browser = app.user_with_session("grace").await;
    let r = app
        .as_browser(&browser, Method::GET, "/v1/verify", false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-tessera-username"], "grace");
    assert_eq!(r.headers()["x-tessera-model"], "session");
    assert!(
        r.headers()["x-tessera-user"]
            .to_str()
            .unwrap()
            .starts_with("usr_")
    );

    let pair: Value = app
        .request(Method::POST, "/v1/token")
        .json(&json!({"username": "grace", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = app
        .request(Method::GET, "/v1/verify")
        .bearer_auth(pair["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-tessera-model"], "token");
    assert_eq!(r.headers()["x-tessera-roles"], "");
    let forged = app
        .request(Method::GET, "/v1/verify")
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    problem(forged, StatusCode::UNAUTHORIZED).await;
}
