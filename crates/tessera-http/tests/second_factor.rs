//! Second factors over HTTP: TOTP enrolment, the login challenge in every model, recovery codes,
//! and step-up for privileged routes (RFC 9470), with the server's manual clock moved forward.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Backend, Browser, Options, PASSWORD, TestApp, problem, session_cookie};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use tessera_core::{Clock, SecondFactorConfig, TotpSecret};

const STEP: Duration = Duration::from_secs(30);

/// A credential of one model, as a client holds it.
enum Cred<'a> {
    Browser(&'a Browser),
    Bearer(&'a str),
}

fn send(app: &TestApp, cred: &Cred<'_>, method: Method, path: &str) -> reqwest::RequestBuilder {
    match cred {
        Cred::Browser(browser) => app.as_browser(browser, method, path, true),
        Cred::Bearer(token) => app.request(method, path).bearer_auth(token),
    }
}

/// The code the authenticator app shows now, on the server's clock.
fn code_now(app: &TestApp, secret: &TotpSecret) -> String {
    secret.code_at(app.clock.now())
}

/// Sets up TOTP for the caller: starts it, confirms it with the current code, and moves the
/// clock to the next time step (the confirming step is used). Returns the secret and the
/// recovery codes.
async fn enrol(app: &TestApp, cred: &Cred<'_>, username: &str) -> (TotpSecret, Vec<String>) {
    let r = send(app, cred, Method::POST, "/v1/account/totp")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let secret_text = body["secret"].as_str().unwrap();
    let uri = body["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with(&format!(
            "otpauth://totp/Tessera:{username}?secret={secret_text}&"
        )),
        "{uri}"
    );
    for part in ["issuer=Tessera", "algorithm=SHA1", "digits=6", "period=30"] {
        assert!(uri.contains(part), "{uri} lacks {part}");
    }
    let secret = TotpSecret::from_base32(secret_text).expect("a base32 secret");

    // Not required yet: the status says pending.
    let status: Value = send(app, cred, Method::GET, "/v1/account/totp")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["totp"], false);
    assert_eq!(status["totp_pending"], true);

    let wrong = send(app, cred, Method::POST, "/v1/account/totp/confirm")
        .json(&json!({"code": wrong_code(&code_now(app, &secret)), "current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let wrong = problem(wrong, StatusCode::UNAUTHORIZED).await;
    assert_eq!(wrong["type"], "urn:tessera:problem:invalid-second-factor");

    // A copied session or token alone cannot set a second factor up: the password is needed.
    let r = send(app, cred, Method::POST, "/v1/account/totp/confirm")
        .json(&json!({"code": code_now(app, &secret), "current_password": "not the password"}))
        .send()
        .await
        .unwrap();
    let refused = problem(r, StatusCode::FORBIDDEN).await;
    assert_eq!(refused["field"], "current_password");
    let r = send(app, cred, Method::POST, "/v1/account/totp/confirm")
        .json(&json!({"code": code_now(app, &secret), "current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    let distinct: std::collections::HashSet<_> = codes.iter().collect();
    assert_eq!(distinct.len(), 10);
    assert!(
        codes
            .iter()
            .all(|c| c.len() == 19 && c.matches('-').count() == 3)
    );

    let status: Value = send(app, cred, Method::GET, "/v1/account/totp")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["totp"], true);
    assert_eq!(status["recovery_codes_left"], 10);
    assert_eq!(status["methods"], json!(["totp", "recovery_code"]));
    app.clock.advance(STEP);
    (secret, codes)
}

/// A six-digit code that is not `code`.
fn wrong_code(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

fn segment(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn set_cookies(response: &Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

async fn password_login(app: &TestApp, path: &str, username: &str) -> Response {
    app.request(Method::POST, path)
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
}

/// Logs in with the password at `path`, checks the answer is a challenge and no credential,
/// and returns the challenge.
async fn challenge(app: &TestApp, path: &str, username: &str) -> String {
    let r = password_login(app, path, username).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        set_cookies(&r)
            .iter()
            .all(|c| !c.starts_with("__Host-tessera=")
                && !c.starts_with("__Host-tessera-at=")
                && !c.starts_with("__Host-tessera-rt="))
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["second_factor_required"], true, "{body}");
    assert_eq!(body["methods"], json!(["totp", "recovery_code"]));
    assert_eq!(body["expires_in"], 300);
    assert!(body.get("access_token").is_none() && body.get("csrf_token").is_none());
    body["challenge"].as_str().unwrap().to_owned()
}

async fn complete(app: &TestApp, challenge: &str, code: &str) -> Response {
    app.request(Method::POST, "/v1/login/second-factor")
        .json(&json!({"challenge": challenge, "code": code}))
        .send()
        .await
        .unwrap()
}

async fn login_with_session(app: &TestApp, username: &str) -> Browser {
    let r = password_login(app, "/v1/session/login", username).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = session_cookie(&r).expect("a session cookie");
    let body: Value = r.json().await.unwrap();
    Browser {
        cookie: Some(cookie.value),
        csrf: body["csrf_token"].as_str().unwrap().to_owned(),
        login: body,
    }
}

async fn enrolment_then_a_challenge_in_every_model(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user_with_session("alice").await;
    let (secret, recovery) = enrol(&app, &Cred::Browser(&alice), "alice").await;

    // Session model: a challenge, then the session cookie for the code.
    let c = challenge(&app, "/v1/session/login", "alice").await;
    let wrong = complete(&app, &c, &wrong_code(&code_now(&app, &secret))).await;
    let wrong = problem(wrong, StatusCode::UNAUTHORIZED).await;
    assert_eq!(wrong["type"], "urn:tessera:problem:invalid-second-factor");
    let r = complete(&app, &c, &code_now(&app, &secret)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = session_cookie(&r).expect("the session cookie");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user"]["username"], "alice");
    let session = body["session"]["authentication"].clone();
    assert_eq!(session["acr"], "aal2");
    assert_eq!(session["amr"], json!(["pwd", "otp", "mfa"]));
    let browser = Browser {
        cookie: Some(cookie.value),
        csrf: body["csrf_token"].as_str().unwrap().to_owned(),
        login: body.clone(),
    };
    let me: Value = app
        .as_browser(&browser, Method::GET, "/v1/me", false)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["auth"]["authentication"]["acr"], "aal2");
    // The challenge was used up.
    let again = complete(&app, &c, &code_now(&app, &secret)).await;
    let again = problem(again, StatusCode::UNAUTHORIZED).await;
    assert_eq!(again["type"], "urn:tessera:problem:invalid-challenge");
    // The same code (its time step is used) does not complete another login.
    let c = challenge(&app, "/v1/session/login", "alice").await;
    let replay = complete(&app, &c, &code_now(&app, &secret)).await;
    assert_eq!(
        problem(replay, StatusCode::UNAUTHORIZED).await["type"],
        "urn:tessera:problem:invalid-second-factor"
    );

    // Token model: the pair, carrying the authentication context, also after a refresh.
    app.clock.advance(STEP);
    let c = challenge(&app, "/v1/token", "alice").await;
    let r = complete(&app, &c, &code_now(&app, &secret)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let pair: Value = r.json().await.unwrap();
    let access = pair["access_token"].as_str().unwrap();
    let claims = segment(access, 1);
    assert_eq!(claims["acr"], "aal2");
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]));
    let auth_time = claims["auth_time"].as_i64().unwrap();
    assert_eq!(auth_time, app.clock.now().unix_seconds());
    app.clock.advance(Duration::from_secs(90));
    let refreshed: Value = app
        .request(Method::POST, "/v1/token/refresh")
        .json(&json!({"refresh_token": pair["refresh_token"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let claims = segment(refreshed["access_token"].as_str().unwrap(), 1);
    assert_eq!(claims["acr"], "aal2");
    assert_eq!(
        claims["auth_time"], auth_time,
        "a refresh keeps the login's context"
    );

    // Hybrid model: both cookies and the CSRF token.
    let c = challenge(&app, "/v1/hybrid/login", "alice").await;
    // The one-step-ahead code is accepted (skew), and the current one is then refused as older.
    let ahead = secret.code_at(app.clock.now().saturating_add(STEP));
    let r = complete(&app, &c, &ahead).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookies = set_cookies(&r);
    assert!(cookies.iter().any(|c| c.starts_with("__Host-tessera-at=")));
    assert!(cookies.iter().any(|c| c.starts_with("__Host-tessera-rt=")));
    let body: Value = r.json().await.unwrap();
    assert!(body["csrf_token"].as_str().is_some_and(|t| !t.is_empty()));
    let c = challenge(&app, "/v1/hybrid/login", "alice").await;
    let behind = complete(&app, &c, &code_now(&app, &secret)).await;
    assert_eq!(behind.status(), StatusCode::UNAUTHORIZED);

    // Two steps either side: refused.
    app.clock.advance(STEP * 4);
    for skew in [-2i64, 2] {
        let c = challenge(&app, "/v1/token", "alice").await;
        let at = if skew < 0 {
            app.clock.now().saturating_sub(STEP * 2)
        } else {
            app.clock.now().saturating_add(STEP * 2)
        };
        let r = complete(&app, &c, &secret.code_at(at)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "skew {skew}");
    }

    // A recovery code completes a login once.
    let c = challenge(&app, "/v1/token", "alice").await;
    let r = complete(&app, &c, &recovery[0].to_uppercase()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let c = challenge(&app, "/v1/token", "alice").await;
    let r = complete(&app, &c, &recovery[0]).await;
    assert_eq!(
        problem(r, StatusCode::UNAUTHORIZED).await["type"],
        "urn:tessera:problem:invalid-second-factor"
    );
    let status: Value = app
        .as_browser(&browser, Method::GET, "/v1/account/totp", false)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["recovery_codes_left"], 9);
}

async fn challenges_are_bound_and_burn(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user_with_session("alice").await;
    let (secret, _) = enrol(&app, &Cred::Browser(&alice), "alice").await;

    // Five wrong codes burn it: the right one then finds no challenge.
    let c = challenge(&app, "/v1/token", "alice").await;
    for _ in 0..5 {
        let r = complete(&app, &c, &wrong_code(&code_now(&app, &secret))).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = complete(&app, &c, &code_now(&app, &secret)).await;
    assert_eq!(
        problem(r, StatusCode::UNAUTHORIZED).await["type"],
        "urn:tessera:problem:invalid-challenge"
    );

    // It lapses after five minutes.
    let c = challenge(&app, "/v1/token", "alice").await;
    app.clock.advance(Duration::from_secs(301));
    let r = complete(&app, &c, &code_now(&app, &secret)).await;
    assert_eq!(
        problem(r, StatusCode::UNAUTHORIZED).await["type"],
        "urn:tessera:problem:invalid-challenge"
    );

    // Another client (another User-Agent) cannot complete it.
    let c = challenge(&app, "/v1/token", "alice").await;
    let r = app
        .request(Method::POST, "/v1/login/second-factor")
        .header("user-agent", "somebody else")
        .json(&json!({"challenge": c, "code": code_now(&app, &secret)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A session login is not completed cross-site.
    let c = challenge(&app, "/v1/session/login", "alice").await;
    let r = app
        .request(Method::POST, "/v1/login/second-factor")
        .header("sec-fetch-site", "cross-site")
        .json(&json!({"challenge": c, "code": code_now(&app, &secret)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Garbage gets a problem, not a panic.
    for body in [
        json!({"challenge": "x", "code": "123456"}),
        json!({"challenge": c, "code": ""}),
        json!({"challenge": c, "code": "9".repeat(100)}),
        json!({"challenge": c, "code": "123456", "method": "sms"}),
    ] {
        let r = app
            .request(Method::POST, "/v1/login/second-factor")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{body}: {}", r.status());
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
    }

    // A wrong password and an unknown user answer as they always did.
    for (username, password) in [("alice", "wrong password!"), ("nobody", PASSWORD)] {
        let r = app
            .request(Method::POST, "/v1/token")
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            problem(r, StatusCode::UNAUTHORIZED).await["type"],
            "urn:tessera:problem:invalid-credentials"
        );
    }
}

fn step_up_options() -> Options {
    Options {
        second_factor: SecondFactorConfig {
            privileged_max_age: Duration::from_secs(120),
            ..SecondFactorConfig::default()
        },
        ..Options::default()
    }
}

async fn step_up_guards_admin_routes(backend: Backend) {
    let app = TestApp::spawn_with(backend, step_up_options()).await;
    app.accounts
        .create(
            "root",
            &tessera_core::Password::new(PASSWORD),
            vec!["admin".into()],
        )
        .await
        .unwrap();
    let r = password_login(&app, "/v1/token", "root").await;
    let pair: Value = r.json().await.unwrap();
    let access = pair["access_token"].as_str().unwrap().to_owned();
    assert_eq!(segment(&access, 1)["acr"], "aal1");
    let admin = |token: String| {
        let app = &app;
        async move {
            app.request(Method::GET, "/v1/admin/users")
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    // Without a second factor, the admin route needs none.
    assert_eq!(admin(access.clone()).await.status(), StatusCode::OK);

    let (secret, _) = enrol(&app, &Cred::Bearer(&access), "root").await;
    // Now it does, and this token's login used none.
    let refused = admin(access.clone()).await;
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains("error=\"insufficient_user_authentication\""),
        "{challenge}"
    );
    assert!(challenge.contains("max_age=120"), "{challenge}");
    assert!(challenge.contains("acr_values=\"aal2\""), "{challenge}");
    let body = problem(refused, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        body["type"],
        "urn:tessera:problem:insufficient-user-authentication"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("POST /v1/account/step-up")
    );

    // Step up: a fresh access token that carries the second factor.
    let wrong = send(
        &app,
        &Cred::Bearer(&access),
        Method::POST,
        "/v1/account/step-up",
    )
    .json(&json!({"code": wrong_code(&code_now(&app, &secret))}))
    .send()
    .await
    .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let r = send(
        &app,
        &Cred::Bearer(&access),
        Method::POST,
        "/v1/account/step-up",
    )
    .json(&json!({"code": code_now(&app, &secret)}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let stepped: Value = r.json().await.unwrap();
    assert_eq!(stepped["authentication"]["acr"], "aal2");
    assert_eq!(stepped["token_type"], "Bearer");
    let fresh = stepped["access_token"].as_str().unwrap().to_owned();
    let claims = segment(&fresh, 1);
    assert_eq!(claims["acr"], "aal2");
    assert_eq!(claims["auth_time"], app.clock.now().unix_seconds());
    assert_eq!(admin(fresh.clone()).await.status(), StatusCode::OK);
    // The old token still says aal1.
    assert_eq!(
        admin(access.clone()).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Past privileged_max_age, refused again; a refresh keeps the old auth_time, so it does
    // not help; another step-up does.
    app.clock.advance(Duration::from_secs(121));
    assert_eq!(
        admin(fresh.clone()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let refreshed: Value = app
        .request(Method::POST, "/v1/token/refresh")
        .json(&json!({"refresh_token": pair["refresh_token"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refreshed = refreshed["access_token"].as_str().unwrap().to_owned();
    assert_eq!(segment(&refreshed, 1)["acr"], "aal2");
    assert_eq!(
        admin(refreshed.clone()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = send(
        &app,
        &Cred::Bearer(&refreshed),
        Method::POST,
        "/v1/account/step-up",
    )
    .json(&json!({"code": code_now(&app, &secret)}))
    .send()
    .await
    .unwrap();
    let stepped: Value = r.json().await.unwrap();
    let again = stepped["access_token"].as_str().unwrap().to_owned();
    assert_eq!(admin(again).await.status(), StatusCode::OK);
}

async fn step_up_on_a_session_guards_privileged_account_routes(backend: Backend) {
    let app = TestApp::spawn_with(backend, step_up_options()).await;
    let alice = app.user_with_session("alice").await;
    let (secret, _) = enrol(&app, &Cred::Browser(&alice), "alice").await;
    // This session logged in with the password alone: removing TOTP needs a step-up first.
    let r = app
        .as_browser(&alice, Method::DELETE, "/v1/account/totp", true)
        .send()
        .await
        .unwrap();
    let body = problem(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        body["type"],
        "urn:tessera:problem:insufficient-user-authentication"
    );
    let r = app
        .as_browser(
            &alice,
            Method::POST,
            "/v1/account/totp/recovery-codes",
            true,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app
        .as_browser(&alice, Method::POST, "/v1/account/password", true)
        .json(&json!({"current_password": PASSWORD, "new_password": "another fine passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Step-up needs the CSRF token like any unsafe request of a session.
    let r = app
        .as_browser(&alice, Method::POST, "/v1/account/step-up", false)
        .json(&json!({"code": code_now(&app, &secret)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = app
        .as_browser(&alice, Method::POST, "/v1/account/step-up", true)
        .json(&json!({"code": code_now(&app, &secret)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let stepped: Value = r.json().await.unwrap();
    assert!(stepped.get("access_token").is_none());
    let session: Value = app
        .as_browser(&alice, Method::GET, "/v1/session", false)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["session"]["authentication"]["acr"], "aal2");

    let r = app
        .as_browser(
            &alice,
            Method::POST,
            "/v1/account/totp/recovery-codes",
            true,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let codes: Value = r.json().await.unwrap();
    assert_eq!(codes["recovery_codes"].as_array().unwrap().len(), 10);
    let r = app
        .as_browser(&alice, Method::DELETE, "/v1/account/totp", true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Logins need only the password again.
    let r = password_login(&app, "/v1/session/login", "alice").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(session_cookie(&r).is_some());
    let again = login_with_session(&app, "alice").await;
    assert_eq!(again.login["session"]["authentication"]["acr"], "aal1");
}

async fn a_hybrid_step_up_renews_the_access_cookie(backend: Backend) {
    let app = TestApp::spawn_with(backend, step_up_options()).await;
    let alice = app.user_with_session("alice").await;
    let (secret, _) = enrol(&app, &Cred::Browser(&alice), "alice").await;
    let c = challenge(&app, "/v1/hybrid/login", "alice").await;
    let r = complete(&app, &c, &code_now(&app, &secret)).await;
    let cookies = set_cookies(&r);
    let body: Value = r.json().await.unwrap();
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    let access = cookies
        .iter()
        .find_map(|c| c.strip_prefix("__Host-tessera-at="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    app.clock.advance(Duration::from_secs(150));
    let r = app
        .request(Method::POST, "/v1/account/step-up")
        .header("cookie", format!("__Host-tessera-at={access}"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"code": code_now(&app, &secret)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let renewed = set_cookies(&r)
        .iter()
        .find_map(|c| c.strip_prefix("__Host-tessera-at=").map(str::to_owned))
        .expect("a new access cookie");
    let token = renewed.split(';').next().unwrap();
    assert_ne!(token, access);
    assert_eq!(
        segment(token, 1)["auth_time"],
        app.clock.now().unix_seconds()
    );
}

async fn forward_auth_rules_can_need_a_recent_second_factor(backend: Backend) {
    use tessera_http::forward_auth::{Access, RouteRule, VerifyConfig};
    let rules = vec![RouteRule {
        prefix: "/security".into(),
        host: None,
        access: Access::LoggedIn,
        second_factor_max_age: Some(Duration::from_secs(300)),
    }];
    let app = TestApp::spawn_with(
        backend,
        Options {
            http: tessera_http::HttpConfig {
                verify: VerifyConfig::new(rules, None).unwrap(),
                ..tessera_http::HttpConfig::default()
            },
            ..Options::default()
        },
    )
    .await;
    let alice = app.user_with_session("alice").await;
    let verify = |token: String, uri: &'static str| {
        let app = &app;
        async move {
            app.request(Method::GET, "/v1/verify")
                .bearer_auth(token)
                .header("x-forwarded-method", "GET")
                .header("x-forwarded-uri", uri)
                .send()
                .await
                .unwrap()
        }
    };
    let password_only: Value = password_login(&app, "/v1/token", "alice")
        .await
        .json()
        .await
        .unwrap();
    let password_only = password_only["access_token"].as_str().unwrap().to_owned();
    // Without a second factor in this login: other paths pass, the rule's path does not.
    assert_eq!(
        verify(password_only.clone(), "/elsewhere").await.status(),
        StatusCode::OK
    );
    let refused = verify(password_only, "/security/keys").await;
    assert!(
        refused.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_user_authentication")
    );
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let (secret, _) = enrol(&app, &Cred::Browser(&alice), "alice").await;
    let c = challenge(&app, "/v1/token", "alice").await;
    let pair: Value = complete(&app, &c, &code_now(&app, &secret))
        .await
        .json()
        .await
        .unwrap();
    let with_factor = pair["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        verify(with_factor.clone(), "/security/keys").await.status(),
        StatusCode::OK
    );
    app.clock.advance(Duration::from_secs(301));
    assert_eq!(
        verify(with_factor, "/security/keys").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

async fn admins_can_be_made_to_use_a_second_factor(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            second_factor: SecondFactorConfig {
                admin_requires_second_factor: true,
                ..SecondFactorConfig::default()
            },
            ..Options::default()
        },
    )
    .await;
    app.accounts
        .create(
            "root",
            &tessera_core::Password::new(PASSWORD),
            vec!["admin".into()],
        )
        .await
        .unwrap();
    let pair: Value = password_login(&app, "/v1/token", "root")
        .await
        .json()
        .await
        .unwrap();
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let r = app
        .request(Method::GET, "/v1/admin/users")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(r, StatusCode::UNAUTHORIZED).await["type"],
        "urn:tessera:problem:insufficient-user-authentication"
    );
    // Setting one up is not an admin route; then a login with it opens them.
    let (secret, _) = enrol(&app, &Cred::Bearer(&access), "root").await;
    let c = challenge(&app, "/v1/token", "root").await;
    let pair: Value = complete(&app, &c, &code_now(&app, &secret))
        .await
        .json()
        .await
        .unwrap();
    let admin_token = pair["access_token"].as_str().unwrap().to_owned();
    let r = app
        .request(Method::GET, "/v1/admin/users")
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // An admin removes the second factor of a user who lost it.
    let alice = app.user_with_session("alice").await;
    enrol(&app, &Cred::Browser(&alice), "alice").await;
    challenge(&app, "/v1/session/login", "alice").await;
    let id = alice.login["user"]["id"].as_str().unwrap();
    let path = format!("/v1/admin/users/{id}/totp");
    let r = app
        .request(Method::DELETE, &path)
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app
        .request(Method::DELETE, &path)
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = password_login(&app, "/v1/session/login", "alice").await;
    assert!(
        session_cookie(&r).is_some(),
        "the password alone logs in again"
    );
}

on_every_backend!(
    enrolment_then_a_challenge_in_every_model,
    challenges_are_bound_and_burn,
    step_up_guards_admin_routes,
    step_up_on_a_session_guards_privileged_account_routes,
    a_hybrid_step_up_renews_the_access_cookie,
    forward_auth_rules_can_need_a_recent_second_factor,
    admins_can_be_made_to_use_a_second_factor,
);
