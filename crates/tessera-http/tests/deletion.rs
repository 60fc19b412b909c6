//! Deleting an account: `DELETE /v1/account` (the owner, with the password) and
//! `DELETE /v1/admin/users/{id}` (an admin). Afterwards every credential of the account is
//! refused in every model, the audit log keeps the user id and no username, and the username
//! starts a new account from nothing.

mod common;
mod support;

use common::{Backend, Options, PASSWORD, TestApp, problem, session_cookie};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{
    AT_COOKIE, Login, MODELS, RT_COOKIE, admin, assert_throttled, clears, login, set_cookie,
    user_id,
};
use tessera_core::{Rate, ThrottleConfig};

on_every_backend!(
    deleting_my_account_refuses_every_credential_of_every_model,
    the_audit_log_keeps_the_user_id_and_no_username,
    a_wrong_password_or_bad_body_deletes_nothing,
    cookie_callers_need_the_csrf_token,
    a_freed_username_starts_a_new_account_from_nothing,
    an_admin_deletes_a_user,
);

/// A username that no random user id can contain (ids have no `.`).
const NAME: &str = "mallory.quinn";

async fn delete_account(app: &TestApp, caller: &Login, password: &str) -> reqwest::Response {
    caller
        .request(app, Method::DELETE, "/v1/account")
        .json(&json!({ "password": password }))
        .send()
        .await
        .unwrap()
}

/// Every way a credential of `logins` could still be honoured: `/v1/me`, forward-auth, and a
/// refresh of the token models.
async fn assert_all_refused(app: &TestApp, logins: &mut [Login], what: &str) {
    for l in logins.iter_mut() {
        assert_eq!(
            l.me(app).await,
            StatusCode::UNAUTHORIZED,
            "{what}: {} /v1/me",
            l.model()
        );
        let verify = match &*l {
            Login::Session(b) => app.as_browser(b, Method::GET, "/v1/verify", false),
            Login::Token(p) => app
                .request(Method::GET, "/v1/verify")
                .bearer_auth(&p.access),
            Login::Hybrid(h) => h.request(app, Method::GET, "/v1/verify", false),
        };
        let r = verify.send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{what}: {} /v1/verify",
            l.model()
        );
        if let Some(status) = l.refresh(app).await {
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{what}: {} refresh",
                l.model()
            );
        }
    }
}

async fn deleting_my_account_refuses_every_credential_of_every_model(backend: Backend) {
    for caller_model in MODELS {
        let app = TestApp::spawn(backend).await;
        app.register(NAME, PASSWORD).await;
        app.register("bob", PASSWORD).await;
        let mut logins = Vec::new();
        for model in MODELS {
            logins.push(login(&app, model, NAME).await);
        }
        let caller = login(&app, caller_model, NAME).await;
        let mut bobs = login(&app, "token", "bob").await;

        let r = delete_account(&app, &caller, PASSWORD).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{caller_model} caller");
        let cleared = session_cookie(&r).expect("the session cookie is cleared");
        assert!(cleared.value.is_empty() && cleared.has("Max-Age=0"));
        for name in [AT_COOKIE, RT_COOKIE] {
            let c = set_cookie(&r, name).unwrap_or_else(|| panic!("{name} is cleared"));
            assert!(clears(&c), "{name} is cleared");
        }

        logins.push(caller);
        assert_all_refused(&app, &mut logins, caller_model).await;
        // The password went with the account.
        for model in MODELS {
            let r = support::login_response(&app, model, NAME, PASSWORD).await;
            problem(r, StatusCode::UNAUTHORIZED).await;
        }
        // A second deletion has no credential to go on.
        let r = delete_account(&app, &logins[1], PASSWORD).await;
        problem(r, StatusCode::UNAUTHORIZED).await;
        // Another user is untouched.
        assert!(bobs.alive(&app).await, "another user's login lives on");
    }
}

async fn the_audit_log_keeps_the_user_id_and_no_username(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let root = admin(&app).await;
    app.register(NAME, PASSWORD).await;
    let id = user_id(&app, NAME).await;
    let caller = login(&app, "token", NAME).await;
    // A failed login that names the account (spelled differently), and one that names another.
    for attempted in [NAME, "MALLORY.QUINN", "someone.else"] {
        let r = support::login_response(&app, "session", attempted, "wrong password!").await;
        problem(r, StatusCode::UNAUTHORIZED).await;
    }
    let r = delete_account(&app, &caller, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let r = app
        .request(Method::GET, "/v1/admin/events?limit=200")
        .bearer_auth(&root.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(
        !text.to_lowercase().contains(NAME),
        "the username appears nowhere in the audit log: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    let events = body["events"].as_array().unwrap();
    let deleted: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "account_deleted")
        .collect();
    assert_eq!(deleted.len(), 1, "{text}");
    assert_eq!(deleted[0]["user_id"], id.as_str());
    assert_eq!(deleted[0]["detail"]["by"], id.as_str(), "the owner acted");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "login_succeeded" && e["user_id"] == id.as_str()),
        "the user's events stay, by id"
    );
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "login_failed")
        .map(|e| &e["detail"])
        .collect();
    assert_eq!(
        failed
            .iter()
            .filter(|d| d["username_erased"] == true && d.get("username").is_none())
            .count(),
        2,
        "failed logins that named the account lose the name: {text}"
    );
    assert!(
        failed.iter().any(|d| d["username"] == "someone.else"),
        "other names stay"
    );

    // The stored rows say the same.
    let rows = app.stores.events.events(None, 1000).await.unwrap();
    for row in &rows {
        assert!(
            !row.detail.to_string().to_lowercase().contains(NAME),
            "stored event {row:?}"
        );
    }
    assert!(
        app.stores
            .users
            .user_by_id(&tessera_core::UserId::parse(&id).unwrap())
            .await
            .unwrap()
            .is_none(),
        "the user row is gone"
    );
}

async fn a_wrong_password_or_bad_body_deletes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register(NAME, PASSWORD).await;
    for model in MODELS {
        let mut caller = login(&app, model, NAME).await;
        let r = delete_account(&app, &caller, "not my password at all").await;
        let body = problem(r, StatusCode::FORBIDDEN).await;
        assert_eq!(body["field"], "password", "{model}: {body}");
        for (what, content_type, raw) in [
            ("no body", None, ""),
            ("not JSON", Some("application/json"), "{"),
            ("no password", Some("application/json"), "{}"),
            (
                "an unknown field",
                Some("application/json"),
                r#"{"password":"x","also":1}"#,
            ),
            ("a number", Some("application/json"), r#"{"password":5}"#),
            ("not JSON at all", Some("text/plain"), "password"),
        ] {
            let mut rb = caller
                .request(&app, Method::DELETE, "/v1/account")
                .body(raw.to_owned());
            if let Some(ct) = content_type {
                rb = rb.header("content-type", ct);
            }
            let r = rb.send().await.unwrap();
            let status = r.status();
            assert!(
                status.is_client_error() && status != StatusCode::UNAUTHORIZED,
                "{model}, {what}: {status}"
            );
            problem(r, status).await;
        }
        assert!(caller.alive(&app).await, "{model}: nothing was deleted");
    }
    let r = app
        .request(Method::DELETE, "/v1/account")
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    assert!(app.accounts.user_by_name(NAME).await.unwrap().is_some());
}

async fn cookie_callers_need_the_csrf_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register(NAME, PASSWORD).await;
    let mut session = login(&app, "session", NAME).await;
    let mut hybrid = login(&app, "hybrid", NAME).await;
    let Login::Session(browser) = &session else {
        unreachable!()
    };
    let r = app
        .as_browser(browser, Method::DELETE, "/v1/account", false)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
    let r = app
        .as_browser(browser, Method::DELETE, "/v1/account", true)
        .header("sec-fetch-site", "cross-site")
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
    let Login::Hybrid(h) = &hybrid else {
        unreachable!()
    };
    let r = h
        .request(&app, Method::DELETE, "/v1/account", false)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
    assert!(session.alive(&app).await);
    assert!(hybrid.alive(&app).await);
    assert!(app.accounts.user_by_name(NAME).await.unwrap().is_some());
}

async fn a_freed_username_starts_a_new_account_from_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let root = admin(&app).await;
    app.register(NAME, PASSWORD).await;
    let old_id = user_id(&app, NAME).await;
    let r = app
        .request(Method::PUT, &format!("/v1/admin/users/{old_id}/roles"))
        .bearer_auth(&root.access)
        .json(&json!({"roles": ["ops"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A login in the very millisecond of an account change is voided: move past it.
    app.clock.advance(std::time::Duration::from_secs(1));
    let mut old = Vec::new();
    for model in MODELS {
        old.push(login(&app, model, NAME).await);
    }
    let r = delete_account(&app, &old[1], PASSWORD).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let r = app.register(NAME, "a different passphrase").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let new_id = user_id(&app, NAME).await;
    assert_ne!(new_id, old_id);
    assert_all_refused(&app, &mut old, "the old account's credentials").await;
    for model in MODELS {
        let r = support::login_response(&app, model, NAME, PASSWORD).await;
        problem(r, StatusCode::UNAUTHORIZED).await;
    }
    let r = support::token_login_response(&app, NAME, "a different passphrase").await;
    assert_eq!(r.status(), StatusCode::OK, "the new account logs in");
    let body: Value = r.json().await.unwrap();
    let fresh = Login::Token(support::Pair {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
    });
    let r = fresh
        .request(&app, Method::GET, "/v1/me")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "no revocation carries over");
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["user"]["id"], new_id.as_str());
    assert_eq!(me["user"]["roles"], json!([]), "no role carries over");
    let logins = support::my_logins(&app, &fresh).await;
    assert_eq!(logins.len(), 1, "no login carries over: {logins:?}");
}

async fn an_admin_deletes_a_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let root = admin(&app).await;
    let root_id = user_id(&app, "root").await;
    app.register(NAME, PASSWORD).await;
    app.register("bob", PASSWORD).await;
    let id = user_id(&app, NAME).await;
    let mut logins = Vec::new();
    for model in MODELS {
        logins.push(login(&app, model, NAME).await);
    }
    let bob = login(&app, "token", "bob").await;

    // Not an admin.
    let r = bob
        .request(&app, Method::DELETE, &format!("/v1/admin/users/{id}"))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
    // Not themselves.
    let r = app
        .request(Method::DELETE, &format!("/v1/admin/users/{root_id}"))
        .bearer_auth(&root.access)
        .send()
        .await
        .unwrap();
    let body = problem(r, StatusCode::CONFLICT).await;
    assert!(body["detail"].as_str().unwrap().contains("themselves"));

    let r = app
        .request(Method::DELETE, &format!("/v1/admin/users/{id}"))
        .bearer_auth(&root.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_all_refused(&app, &mut logins, "after an admin's deletion").await;
    for path in [
        format!("/v1/admin/users/{id}"),
        format!("/v1/admin/users/{id}/sessions"),
    ] {
        let r = app
            .request(Method::GET, &path)
            .bearer_auth(&root.access)
            .send()
            .await
            .unwrap();
        problem(r, StatusCode::NOT_FOUND).await;
    }
    let r = app
        .request(Method::DELETE, &format!("/v1/admin/users/{id}"))
        .bearer_auth(&root.access)
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND).await;

    let r = app
        .request(Method::GET, "/v1/admin/events")
        .bearer_auth(&root.access)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let deleted = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "account_deleted")
        .expect("the deletion is recorded");
    assert_eq!(deleted["user_id"], id.as_str());
    assert_eq!(deleted["detail"]["by"], root_id.as_str());
    assert!(
        !body.to_string().contains(NAME),
        "no username in the log: {body}"
    );
    assert_eq!(bob.me(&app).await, StatusCode::OK);
}

/// Guessing the password through deletion spends the account's login budget, as a password
/// change does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guesses_are_throttled() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options {
            throttle: ThrottleConfig {
                per_account: Rate {
                    burst: 3,
                    per_minute: 1,
                },
                ..common::relaxed_throttle()
            },
            ..Options::default()
        },
    )
    .await;
    app.register(NAME, PASSWORD).await;
    let caller = login(&app, "token", NAME).await;
    for _ in 0..3 {
        let r = delete_account(&app, &caller, "not my password at all").await;
        problem(r, StatusCode::FORBIDDEN).await;
    }
    let r = delete_account(&app, &caller, PASSWORD).await;
    assert_throttled(r, "a fourth guess").await;
    assert_eq!(caller.me(&app).await, StatusCode::OK, "nothing was deleted");
}
