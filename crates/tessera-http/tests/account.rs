//! A user's control over their own logins, whatever the model: listing them, ending one or all
//! others, changing the password; and the per-user cap on live logins.

mod common;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Backend, Options, PASSWORD, TestApp, problem, session_cookie};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Login, MODELS, login, login_response, my_logins};

on_every_backend!(
    the_list_shows_every_login_of_every_model_with_one_current,
    ending_a_login_stops_its_credential_whatever_the_models,
    a_login_of_another_user_cannot_be_ended,
    ending_all_others_keeps_only_the_current_login,
    a_password_change_refuses_bad_input_and_changes_nothing,
    a_weak_new_password_is_blamed_on_the_new_password_field,
    a_token_caller_changes_the_password,
    a_session_caller_changes_the_password_and_gets_a_new_session,
    a_hybrid_caller_changes_the_password,
    a_password_change_stops_earlier_access_tokens_of_the_callers_login,
    the_cap_ends_the_oldest_logins,
    the_cap_never_ends_the_login_it_just_made,
);

const NEW_PASSWORD: &str = "a brand new passphrase";

async fn change_password(
    app: &TestApp,
    caller: &Login,
    current: &str,
    new: &str,
) -> reqwest::Response {
    caller
        .request(app, Method::POST, "/v1/account/password")
        .json(&json!({"current_password": current, "new_password": new}))
        .send()
        .await
        .unwrap()
}

async fn the_list_shows_every_login_of_every_model_with_one_current(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    app.register("bob", PASSWORD).await;
    let mut logins = Vec::new();
    for model in MODELS {
        logins.push(login(&app, model, "alice").await);
        app.clock.advance(Duration::from_secs(1));
    }
    // One more, from a client that names itself.
    let r = app
        .request(Method::POST, "/v1/token")
        .header("user-agent", "tessera-tests/1.0")
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let named = support::claims(
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap(),
    )["fid"]
        .as_str()
        .unwrap()
        .to_owned();
    let bobs = login(&app, "token", "bob").await;

    let expected: Vec<(String, &str)> = logins
        .iter()
        .map(|l| (l.id(), l.model()))
        .chain([(named.clone(), "token")])
        .collect();
    for caller in &logins {
        let r = caller
            .request(&app, Method::GET, "/v1/sessions")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let text = r.text().await.unwrap();
        for secret in caller.secrets() {
            assert!(!text.contains(&secret), "the list leaks a secret");
        }
        let listed: Vec<Value> = serde_json::from_str(&text).unwrap();
        // Oldest first, every model, none of bob's.
        let got: Vec<(String, &str)> = listed
            .iter()
            .map(|l| {
                (
                    l["id"].as_str().unwrap().to_owned(),
                    match l["model"].as_str().unwrap() {
                        "session" => "session",
                        "token" => "token",
                        "hybrid" => "hybrid",
                        other => panic!("model {other}"),
                    },
                )
            })
            .collect();
        assert_eq!(got, expected, "as a {} caller", caller.model());
        assert!(!text.contains(&bobs.id()));
        let current: Vec<&Value> = listed.iter().filter(|l| l["current"] == true).collect();
        assert_eq!(
            current.len(),
            1,
            "as a {} caller: {listed:?}",
            caller.model()
        );
        assert_eq!(current[0]["id"], caller.id().as_str());
        for l in &listed {
            for field in ["created_at", "last_seen_at", "expires_at"] {
                assert!(l[field].is_string(), "{field} in {l}");
            }
            assert_eq!(l["ip"], "127.0.0.1");
            assert!(l["user_agent"].is_null() || l["user_agent"].is_string());
        }
        let named_entry = listed.iter().find(|l| l["id"] == named.as_str()).unwrap();
        assert_eq!(named_entry["user_agent"], "tessera-tests/1.0");
    }
    let anonymous = app
        .request(Method::GET, "/v1/sessions")
        .send()
        .await
        .unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
}

async fn ending_a_login_stops_its_credential_whatever_the_models(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    for caller_model in MODELS {
        for target_model in MODELS {
            let mut caller = login(&app, caller_model, "alice").await;
            let mut target = login(&app, target_model, "alice").await;
            assert!(target.alive(&app).await);
            let path = format!("/v1/sessions/{}", target.id());
            let r = caller
                .request(&app, Method::DELETE, &path)
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::NO_CONTENT,
                "{caller_model} ending {target_model}"
            );
            // Every part of the ended login is refused: the credential, and the refresh.
            assert_eq!(target.me(&app).await, StatusCode::UNAUTHORIZED);
            if target_model != "session" {
                assert_eq!(
                    target.refresh(&app).await,
                    Some(StatusCode::UNAUTHORIZED),
                    "{caller_model} ending {target_model}: the refresh still works"
                );
            }
            assert!(
                caller.alive(&app).await,
                "{caller_model} ending {target_model}"
            );
            assert!(
                !my_logins(&app, &caller)
                    .await
                    .iter()
                    .any(|l| l["id"] == target.id().as_str())
            );
            // It is gone: ending it again is a 404.
            let again = caller
                .request(&app, Method::DELETE, &path)
                .send()
                .await
                .unwrap();
            problem(again, StatusCode::NOT_FOUND).await;
        }
    }
}

async fn a_login_of_another_user_cannot_be_ended(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    app.register("bob", PASSWORD).await;
    let mut bobs = Vec::new();
    for model in MODELS {
        bobs.push(login(&app, model, "bob").await);
    }
    for model in MODELS {
        let alice = login(&app, model, "alice").await;
        for bob in &bobs {
            let r = alice
                .request(&app, Method::DELETE, &format!("/v1/sessions/{}", bob.id()))
                .send()
                .await
                .unwrap();
            problem(r, StatusCode::NOT_FOUND).await;
        }
        for nonsense in ["ses_nope", "fam_nope", "x"] {
            let r = alice
                .request(&app, Method::DELETE, &format!("/v1/sessions/{nonsense}"))
                .send()
                .await
                .unwrap();
            problem(r, StatusCode::NOT_FOUND).await;
        }
    }
    for bob in &mut bobs {
        assert!(
            bob.alive(&app).await,
            "alice ended bob's {} login",
            bob.model()
        );
    }
    let anonymous = app
        .request(Method::DELETE, &format!("/v1/sessions/{}", bobs[1].id()))
        .send()
        .await
        .unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
}

async fn ending_all_others_keeps_only_the_current_login(backend: Backend) {
    for caller_model in MODELS {
        let app = TestApp::spawn(backend).await;
        app.register("alice", PASSWORD).await;
        app.register("bob", PASSWORD).await;
        let mut others = Vec::new();
        for model in MODELS {
            others.push(login(&app, model, "alice").await);
        }
        let mut caller = login(&app, caller_model, "alice").await;
        let mut bob = login(&app, "token", "bob").await;
        let r = caller
            .request(&app, Method::DELETE, "/v1/sessions")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"ended": 3}));
        for other in &mut others {
            assert!(
                !other.alive(&app).await,
                "a {caller_model} caller left a {} login alive",
                other.model()
            );
        }
        assert!(caller.alive(&app).await);
        assert!(bob.alive(&app).await);
        let left = my_logins(&app, &caller).await;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["current"], true);
        // Nothing else to end.
        let r = caller
            .request(&app, Method::DELETE, "/v1/sessions")
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"ended": 0}));
    }
}

async fn a_password_change_refuses_bad_input_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    let mut other = login(&app, "session", "alice").await;
    for model in MODELS {
        let mut caller = login(&app, model, "alice").await;
        for (current, new, field) in [
            (
                "not my password at all",
                NEW_PASSWORD,
                Some("current_password"),
            ),
            (PASSWORD, "short", None),
            (PASSWORD, "password", None),
            (PASSWORD, PASSWORD, Some("new_password")),
        ] {
            let r = change_password(&app, &caller, current, new).await;
            assert!(
                session_cookie(&r).is_none(),
                "a refused change set a cookie"
            );
            // A wrong current password is refused (403); a bad new one is invalid input (422).
            let status = if field == Some("current_password") {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            let body = problem(r, status).await;
            if let Some(field) = field {
                assert_eq!(body["field"], field, "{model}: {current:?} -> {new:?}");
            }
            let text = body.to_string();
            assert!(!text.contains(PASSWORD) && !text.contains("not my password"));
        }
        assert!(caller.alive(&app).await, "{model}");
    }
    assert!(other.alive(&app).await);
    assert_eq!(
        app.login_response("alice", PASSWORD).await.status(),
        StatusCode::OK
    );
    let anonymous = app
        .request(Method::POST, "/v1/account/password")
        .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
}

/// A problem's `field` names "the request field at fault"; the request has no `password` field.
async fn a_weak_new_password_is_blamed_on_the_new_password_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    let caller = login(&app, "token", "alice").await;
    for weak in ["short", "password"] {
        let r = change_password(&app, &caller, PASSWORD, weak).await;
        let body = problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["field"], "new_password", "{weak:?}: {body}");
    }
}

/// The logins of alice besides the caller, one of each model, and one of bob's.
async fn bystanders(app: &TestApp) -> (Vec<Login>, Login) {
    let mut others = Vec::new();
    for model in MODELS {
        others.push(login(app, model, "alice").await);
    }
    (others, login(app, "session", "bob").await)
}

/// After a successful change: the old password is refused, the new one logs in, every other login
/// of alice is gone and bob's lives.
async fn after_the_change(app: &TestApp, others: &mut [Login], bob: &mut Login) {
    for other in others.iter_mut() {
        assert!(
            !other.alive(app).await,
            "a {} login survived",
            other.model()
        );
    }
    assert!(bob.alive(app).await);
    // The test's clock stands still: it moves on by the millisecond that separates the change
    // from the next login (a login in the very millisecond of a change is void).
    app.clock.advance(Duration::from_millis(1));
    for model in MODELS {
        let old = login_response(app, model, "alice", PASSWORD).await;
        problem(old, StatusCode::UNAUTHORIZED).await;
        let new = login_response(app, model, "alice", NEW_PASSWORD).await;
        assert_eq!(
            new.status(),
            StatusCode::OK,
            "{model} with the new password"
        );
    }
}

async fn a_token_caller_changes_the_password(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    app.register("bob", PASSWORD).await;
    let (mut others, mut bob) = bystanders(&app).await;
    let Login::Token(mut caller) = login(&app, "token", "alice").await else {
        unreachable!()
    };
    let as_login = Login::Token(caller.clone());
    let r = change_password(&app, &as_login, PASSWORD, NEW_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // The caller's access token stops at once; its refresh token gets a working one.
    assert_eq!(as_login.me(&app).await, StatusCode::UNAUTHORIZED);
    assert_eq!(caller.refresh(&app).await, StatusCode::OK);
    let mut refreshed = Login::Token(caller);
    assert!(refreshed.alive(&app).await);
    after_the_change(&app, &mut others, &mut bob).await;
    // The caller's login is the one left of the old ones.
    let left = my_logins(&app, &refreshed).await;
    assert!(
        left.iter()
            .any(|l| l["id"] == refreshed.id().as_str() && l["current"] == true)
    );
}

async fn a_session_caller_changes_the_password_and_gets_a_new_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    app.register("bob", PASSWORD).await;
    let (mut others, mut bob) = bystanders(&app).await;
    let caller = login(&app, "session", "alice").await;
    let Login::Session(old) = &caller else {
        unreachable!()
    };
    let r = change_password(&app, &caller, PASSWORD, NEW_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = session_cookie(&r).expect("a new session cookie");
    assert!(cookie.has("HttpOnly") && cookie.has("Secure"));
    assert_eq!(cookie.get("Path").as_deref(), Some("/"));
    assert_ne!(
        Some(&cookie.value),
        old.cookie.as_ref(),
        "the session id was kept"
    );
    let body: Value = r.json().await.unwrap();
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    assert_ne!(csrf, old.csrf);
    assert_ne!(body["session"]["id"], old.login["session"]["id"]);
    // The old cookie is dead; the new one and its CSRF token work.
    assert_eq!(caller.me(&app).await, StatusCode::UNAUTHORIZED);
    let new = common::Browser {
        cookie: Some(cookie.value.clone()),
        csrf,
        login: body.clone(),
    };
    let new_login = Login::Session(new.clone());
    assert_eq!(new_login.me(&app).await, StatusCode::OK);
    let r = app
        .as_browser(&new, Method::DELETE, "/v1/sessions", true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let left = my_logins(&app, &new_login).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], body["session"]["id"]);
    assert_eq!(left[0]["current"], true);
    after_the_change(&app, &mut others, &mut bob).await;
}

async fn a_hybrid_caller_changes_the_password(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    app.register("bob", PASSWORD).await;
    let (mut others, mut bob) = bystanders(&app).await;
    let mut caller = login(&app, "hybrid", "alice").await;
    let r = change_password(&app, &caller, PASSWORD, NEW_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(caller.me(&app).await, StatusCode::UNAUTHORIZED);
    assert_eq!(caller.refresh(&app).await, Some(StatusCode::OK));
    assert!(caller.alive(&app).await);
    after_the_change(&app, &mut others, &mut bob).await;
}

/// "Access tokens issued before stop working at once — the caller's own included": that holds for
/// an access token the caller's login issued before its latest refresh, even within the second.
async fn a_password_change_stops_earlier_access_tokens_of_the_callers_login(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    let Login::Token(first) = login(&app, "token", "alice").await else {
        unreachable!()
    };
    // A millisecond later (the test clock only moves when told): still the same second.
    app.clock.advance(std::time::Duration::from_millis(1));
    let mut latest = first.clone();
    assert_eq!(latest.refresh(&app).await, StatusCode::OK);
    let first = Login::Token(first);
    assert_eq!(first.me(&app).await, StatusCode::OK);
    let r = change_password(&app, &Login::Token(latest), PASSWORD, NEW_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        first.me(&app).await,
        StatusCode::UNAUTHORIZED,
        "an access token issued before the password change still works"
    );
}

fn capped(n: usize) -> Options {
    Options {
        max_logins_per_user: n,
        ..Options::default()
    }
}

async fn the_cap_ends_the_oldest_logins(backend: Backend) {
    let app = TestApp::spawn_with(backend, capped(3)).await;
    app.register("alice", PASSWORD).await;
    app.register("bob", PASSWORD).await;
    let mut bob = login(&app, "session", "bob").await;
    let mut logins = Vec::new();
    for model in ["session", "token", "hybrid", "session", "token", "hybrid"] {
        logins.push(login(&app, model, "alice").await);
        app.clock.advance(Duration::from_secs(1));
        // The newest three live, everything older ended.
        let n = logins.len();
        let newest: BTreeSet<String> = logins[n.saturating_sub(3)..]
            .iter()
            .map(Login::id)
            .collect();
        let listed: BTreeSet<String> = my_logins(&app, &logins[n - 1])
            .await
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(listed, newest, "after {n} logins");
    }
    let n = logins.len();
    for (i, l) in logins.iter_mut().enumerate() {
        assert_eq!(l.alive(&app).await, i + 3 >= n, "login {i} ({})", l.model());
    }
    // Bob's logins do not count against alice's cap, nor hers against his.
    assert!(bob.alive(&app).await);
}

/// With logins made in the same instant there is no "oldest" among them, but the login just made is
/// never the one to end: its answer has already handed the client the credential.
async fn the_cap_never_ends_the_login_it_just_made(backend: Backend) {
    let app = TestApp::spawn_with(backend, capped(1)).await;
    app.register("alice", PASSWORD).await;
    for (first, second) in [
        ("session", "token"),
        ("session", "hybrid"),
        ("token", "session"),
        ("hybrid", "token"),
    ] {
        let _older = login(&app, first, "alice").await;
        let mut newer = login(&app, second, "alice").await;
        assert!(
            newer.alive(&app).await,
            "a {second} login made right after a {first} login was ended by the cap"
        );
        let listed = my_logins(&app, &newer).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["id"], newer.id().as_str());
    }
}
