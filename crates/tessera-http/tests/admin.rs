//! Admin routes for users (paging, disable/enable, roles, forced logout, their logins) and the audit
//! log; and the OpenAPI document of the routes added with them.

mod common;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Backend, PASSWORD, TestApp, problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{
    Login, MODELS, Pair, admin, login, login_response, token_login, token_login_response, user_id,
};

on_every_backend!(
    listing_users_pages_by_username_and_needs_the_admin_role,
    one_user_and_their_logins,
    disabling_a_user_stops_every_credential_at_once,
    admins_cannot_lock_themselves_out,
    a_role_change_reaches_fresh_tokens_and_stops_old_ones,
    a_role_change_stops_access_tokens_issued_in_the_same_second,
    a_forced_logout_stops_every_credential_of_that_user_only,
    the_audit_log_records_each_kind_newest_first_without_secrets,
    the_audit_log_pages_with_before,
);

fn get(app: &TestApp, bearer: &str, path: &str) -> reqwest::RequestBuilder {
    app.request(Method::GET, path).bearer_auth(bearer)
}

fn post(app: &TestApp, bearer: &str, path: &str) -> reqwest::RequestBuilder {
    app.request(Method::POST, path).bearer_auth(bearer)
}

async fn json_of(rb: reqwest::RequestBuilder) -> Value {
    let r = rb.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.url().path());
    r.json().await.unwrap()
}

async fn listing_users_pages_by_username_and_needs_the_admin_role(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for name in ["dave", "bob", "carol", "alice"] {
        app.register(name, PASSWORD).await;
    }
    let root = admin(&app).await;
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/admin/users?limit=2&after={a}"),
            None => "/v1/admin/users?limit=2".to_owned(),
        };
        let r = get(&app, &root.access, &path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let text = r.text().await.unwrap();
        assert!(!text.contains("argon2"), "a password hash is listed");
        let page: Value = serde_json::from_str(&text).unwrap();
        let users = page["users"].as_array().unwrap();
        assert!(users.len() <= 2);
        for u in users {
            names.push(u["username"].as_str().unwrap().to_owned());
            assert!(u["id"].as_str().unwrap().starts_with("usr_"));
            assert_eq!(u["disabled"], false);
            assert!(u["created_at"].is_string() && u["updated_at"].is_string());
            assert!(u.get("password_hash").is_none());
        }
        pages += 1;
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(users.len(), 2, "a short page with a next cursor");
                assert_eq!(next, names.last().unwrap());
                after = Some(next.to_owned());
            }
            None => break,
        }
        assert!(pages < 10, "the cursor does not advance");
    }
    assert_eq!(names, ["alice", "bob", "carol", "dave", "root"]);
    assert_eq!(pages, 3);
    let roles: Value = json_of(get(&app, &root.access, "/v1/admin/users?limit=200")).await;
    let root_view = roles["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "root")
        .unwrap();
    assert_eq!(root_view["roles"], json!(["admin"]));

    for limit in ["0", "500", "201"] {
        let r = get(
            &app,
            &root.access,
            &format!("/v1/admin/users?limit={limit}"),
        )
        .send()
        .await
        .unwrap();
        problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    // Not for users without the role, whatever their login; not for strangers.
    let alice = token_login(&app, "alice").await;
    let r = get(&app, &alice.access, "/v1/admin/users")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
    for model in ["session", "hybrid"] {
        let l = login(&app, model, "alice").await;
        let r = l
            .request(&app, Method::GET, "/v1/admin/users")
            .send()
            .await
            .unwrap();
        problem(r, StatusCode::FORBIDDEN).await;
    }
    let r = app
        .request(Method::GET, "/v1/admin/users")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    // An admin's session cookie works too, and its unsafe requests need the CSRF token.
    let root_session = app.login("root", PASSWORD).await;
    let r = app
        .as_browser(&root_session, Method::GET, "/v1/admin/users", false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let alice_id = user_id(&app, "alice").await;
    let r = app
        .as_browser(
            &root_session,
            Method::POST,
            &format!("/v1/admin/users/{alice_id}/disable"),
            false,
        )
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
    let alice_view = json_of(get(
        &app,
        &root.access,
        &format!("/v1/admin/users/{alice_id}"),
    ))
    .await;
    assert_eq!(
        alice_view["disabled"], false,
        "a request without CSRF token disabled alice"
    );
}

async fn one_user_and_their_logins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    app.register("bob", PASSWORD).await;
    let root = admin(&app).await;
    let alice_id = user_id(&app, "alice").await;
    let view = json_of(get(
        &app,
        &root.access,
        &format!("/v1/admin/users/{alice_id}"),
    ))
    .await;
    assert_eq!(view["id"], alice_id.as_str());
    assert_eq!(view["username"], "alice");
    assert_eq!(view["roles"], json!([]));
    assert_eq!(view["disabled"], false);
    let r = get(&app, &root.access, "/v1/admin/users/usr_nobody")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND).await;

    let path = format!("/v1/admin/users/{alice_id}/sessions");
    assert_eq!(json_of(get(&app, &root.access, &path)).await, json!([]));
    let mut ids = BTreeSet::new();
    for model in MODELS {
        ids.insert(login(&app, model, "alice").await.id());
    }
    login(&app, "token", "bob").await;
    let listed = json_of(get(&app, &root.access, &path)).await;
    let listed = listed.as_array().unwrap();
    let got: BTreeSet<String> = listed
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, ids, "alice's logins, and only hers");
    let models: BTreeSet<&str> = listed
        .iter()
        .map(|l| l["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, BTreeSet::from(["session", "token", "hybrid"]));
    assert!(
        listed.iter().all(|l| l["current"] == false),
        "the admin's request is none of alice's logins"
    );
    let r = get(&app, &root.access, "/v1/admin/users/usr_nobody/sessions")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND).await;
    let bob = token_login(&app, "bob").await;
    let r = get(&app, &bob.access, &path).send().await.unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
}

/// Every login of `username`, one of each model, plus a second token login kept for its refresh.
async fn logins_of(app: &TestApp, username: &str) -> Vec<Login> {
    let mut logins = Vec::new();
    for model in MODELS {
        logins.push(login(app, model, username).await);
    }
    logins
}

async fn all_dead(app: &TestApp, logins: &mut [Login], what: &str) {
    for l in logins.iter_mut() {
        assert!(
            !l.alive(app).await,
            "{what}: a {} login still works",
            l.model()
        );
    }
}

async fn all_alive(app: &TestApp, logins: &mut [Login], what: &str) {
    for l in logins.iter_mut() {
        assert!(l.alive(app).await, "{what}: a {} login stopped", l.model());
    }
}

async fn disabling_a_user_stops_every_credential_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    app.register("bob", PASSWORD).await;
    let root = admin(&app).await;
    let alice_id = user_id(&app, "alice").await;
    let mut alices = logins_of(&app, "alice").await;
    let mut bobs = logins_of(&app, "bob").await;
    let Login::Hybrid(alice_hybrid) = alices[2].clone() else {
        unreachable!()
    };

    // Only admins may.
    let Login::Token(bob_token) = &bobs[1] else {
        unreachable!()
    };
    let r = post(
        &app,
        &bob_token.access,
        &format!("/v1/admin/users/{alice_id}/disable"),
    )
    .send()
    .await
    .unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
    all_alive(&app, &mut alices, "a refused disable").await;

    let r = post(
        &app,
        &root.access,
        &format!("/v1/admin/users/{alice_id}/disable"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["disabled"], true);
    all_dead(&app, &mut alices, "disabled").await;
    let r = alice_hybrid
        .request(&app, Method::GET, "/v1/hybrid/session", false)
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    all_alive(&app, &mut bobs, "alice disabled").await;

    // No login, and the same answer as a wrong password: nothing says the account is disabled.
    let wrong = login_response(&app, "token", "bob", "a wrong password here").await;
    let wrong = problem(wrong, StatusCode::UNAUTHORIZED).await;
    for model in MODELS {
        let r = login_response(&app, model, "alice", PASSWORD).await;
        let body = problem(r, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body, wrong, "{model}");
    }
    let view = json_of(get(
        &app,
        &root.access,
        &format!("/v1/admin/users/{alice_id}"),
    ))
    .await;
    assert_eq!(view["disabled"], true);

    let r = post(
        &app,
        &root.access,
        &format!("/v1/admin/users/{alice_id}/enable"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["disabled"], false);
    // The old credentials stay dead; new logins work, at once (the test's clock stands still,
    // so each change so far moved the account's not-before a millisecond on; it moves on by
    // the time that separates the changes from the next login).
    all_dead(&app, &mut alices, "enabled again").await;
    app.clock.advance(Duration::from_millis(10));
    let mut fresh = logins_of(&app, "alice").await;
    all_alive(&app, &mut fresh, "enabled again").await;

    for action in ["disable", "enable"] {
        let r = post(
            &app,
            &root.access,
            &format!("/v1/admin/users/usr_nobody/{action}"),
        )
        .send()
        .await
        .unwrap();
        problem(r, StatusCode::NOT_FOUND).await;
    }
}

async fn admins_cannot_lock_themselves_out(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let root = admin(&app).await;
    let root_id = user_id(&app, "root").await;
    let r = post(
        &app,
        &root.access,
        &format!("/v1/admin/users/{root_id}/disable"),
    )
    .send()
    .await
    .unwrap();
    problem(r, StatusCode::CONFLICT).await;
    for roles in [json!([]), json!(["user"]), json!(["Admin"])] {
        let r = app
            .request(Method::PUT, &format!("/v1/admin/users/{root_id}/roles"))
            .bearer_auth(&root.access)
            .json(&json!({ "roles": roles }))
            .send()
            .await
            .unwrap();
        problem(r, StatusCode::CONFLICT).await;
    }
    // Still an admin, still enabled, the token still good.
    let view = json_of(get(
        &app,
        &root.access,
        &format!("/v1/admin/users/{root_id}"),
    ))
    .await;
    assert_eq!(view["roles"], json!(["admin"]));
    assert_eq!(view["disabled"], false);
    // Keeping the admin role while adding another is allowed.
    let r = app
        .request(Method::PUT, &format!("/v1/admin/users/{root_id}/roles"))
        .bearer_auth(&root.access)
        .json(&json!({"roles": ["admin", "auditor"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["roles"],
        json!(["admin", "auditor"])
    );
}

async fn a_role_change_reaches_fresh_tokens_and_stops_old_ones(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    app.register("bob", PASSWORD).await;
    let root = admin(&app).await;
    let alice_id = user_id(&app, "alice").await;
    let mut alices = logins_of(&app, "alice").await;
    let mut bob = login(&app, "token", "bob").await;
    let roles_path = format!("/v1/admin/users/{alice_id}/roles");

    // Refused: not an admin, a body of the wrong shape, an unknown user.
    let Login::Token(alice_token) = &alices[1] else {
        unreachable!()
    };
    let r = app
        .request(Method::PUT, &roles_path)
        .bearer_auth(&alice_token.access)
        .json(&json!({"roles": ["admin"]}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
    let r = app
        .request(Method::PUT, &roles_path)
        .bearer_auth(&root.access)
        .json(&json!({"roles": "editor"}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    let r = app
        .request(Method::PUT, "/v1/admin/users/usr_nobody/roles")
        .bearer_auth(&root.access)
        .json(&json!({"roles": ["editor"]}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND).await;
    all_alive(&app, &mut alices, "refused role changes").await;

    app.clock.advance(Duration::from_secs(1));
    let r = app
        .request(Method::PUT, &roles_path)
        .bearer_auth(&root.access)
        .json(&json!({"roles": ["editor"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["roles"], json!(["editor"]));

    // The access tokens carry the old roles: refused. The logins live on.
    for l in &mut alices {
        let me = l.me(&app).await;
        match l.model() {
            "session" => assert_eq!(me, StatusCode::OK),
            model => assert_eq!(me, StatusCode::UNAUTHORIZED, "an old {model} access token"),
        }
        if l.model() != "session" {
            assert_eq!(l.refresh(&app).await, Some(StatusCode::OK));
            assert_eq!(l.me(&app).await, StatusCode::OK);
        }
    }
    let Login::Token(refreshed) = &alices[1] else {
        unreachable!()
    };
    assert_eq!(
        support::claims(&refreshed.access)["roles"],
        json!(["editor"])
    );
    let Login::Hybrid(hybrid) = &alices[2] else {
        unreachable!()
    };
    assert_eq!(
        support::claims(hybrid.at.as_ref().unwrap())["roles"],
        json!(["editor"])
    );
    let fresh = token_login(&app, "alice").await;
    assert_eq!(support::claims(&fresh.access)["roles"], json!(["editor"]));
    let me: Value = alices[0]
        .request(&app, Method::GET, "/v1/me")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["roles"], json!(["editor"]));
    // Nobody else was touched.
    assert!(bob.alive(&app).await);
    assert_eq!(
        get(&app, &root.access, "/v1/me")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

/// Access tokens carry roles, so a role change must stop the tokens already out — including one
/// issued a moment before, in the same second. Resource servers that verify offline would
/// otherwise honour the old roles for the token's whole lifetime.
async fn a_role_change_stops_access_tokens_issued_in_the_same_second(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let root = admin(&app).await;
    app.accounts
        .create(
            "eve",
            &tessera_core::Password::new(PASSWORD),
            vec!["admin".into()],
        )
        .await
        .unwrap();
    let eve = token_login(&app, "eve").await;
    assert_eq!(support::claims(&eve.access)["roles"], json!(["admin"]));
    let eve_id = user_id(&app, "eve").await;
    // A millisecond later (the test clock only moves when told): still the same second.
    app.clock.advance(std::time::Duration::from_millis(1));
    let r = app
        .request(Method::PUT, &format!("/v1/admin/users/{eve_id}/roles"))
        .bearer_auth(&root.access)
        .json(&json!({"roles": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let me = get(&app, &eve.access, "/v1/me").send().await.unwrap();
    assert_eq!(
        me.status(),
        StatusCode::UNAUTHORIZED,
        "a token claiming the admin role outlived the demotion"
    );
}

async fn a_forced_logout_stops_every_credential_of_that_user_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    app.register("bob", PASSWORD).await;
    let root = admin(&app).await;
    let alice_id = user_id(&app, "alice").await;
    let mut alices = logins_of(&app, "alice").await;
    let mut bobs = logins_of(&app, "bob").await;
    let Login::Token(bob_token) = bobs[1].clone() else {
        unreachable!()
    };
    let r = post(
        &app,
        &bob_token.access,
        &format!("/v1/admin/users/{alice_id}/logout"),
    )
    .send()
    .await
    .unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
    all_alive(&app, &mut alices, "a refused forced logout").await;

    let r = post(
        &app,
        &root.access,
        &format!("/v1/admin/users/{alice_id}/logout"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"ended": 3}));
    all_dead(&app, &mut alices, "forced out").await;
    all_alive(&app, &mut bobs, "alice forced out").await;
    assert_eq!(
        get(&app, &root.access, "/v1/me")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let listed = json_of(get(
        &app,
        &root.access,
        &format!("/v1/admin/users/{alice_id}/sessions"),
    ))
    .await;
    assert_eq!(listed, json!([]));
    // Not a lockout: alice logs in again at once (a millisecond later: the test's clock stands
    // still, and a login in the very millisecond of the change is void).
    app.clock.advance(Duration::from_millis(1));
    let mut fresh = logins_of(&app, "alice").await;
    all_alive(&app, &mut fresh, "after a forced logout").await;
    let r = post(&app, &root.access, "/v1/admin/users/usr_nobody/logout")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND).await;
}

async fn events(app: &TestApp, bearer: &str, query: &str) -> Value {
    json_of(get(app, bearer, &format!("/v1/admin/events{query}"))).await
}

async fn the_audit_log_records_each_kind_newest_first_without_secrets(backend: Backend) {
    const WRONG: &str = "wrong horse battery staple";
    const NEW_PASSWORD: &str = "a brand new passphrase";
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    app.register("bob", PASSWORD).await;
    let root = admin(&app).await;
    let mut secrets: Vec<String> = vec![
        PASSWORD.into(),
        WRONG.into(),
        NEW_PASSWORD.into(),
        root.access.clone(),
        root.refresh.clone(),
    ];

    problem(
        login_response(&app, "session", "alice", WRONG).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    problem(
        login_response(&app, "token", "mallory", WRONG).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // Refresh, then a reuse past the grace window.
    let mut pair = token_login(&app, "alice").await;
    let stolen = pair.clone();
    secrets.extend([stolen.access.clone(), stolen.refresh.clone()]);
    assert_eq!(pair.refresh(&app).await, StatusCode::OK);
    secrets.extend([pair.access.clone(), pair.refresh.clone()]);
    app.clock.advance(Duration::from_secs(30));
    let mut reused = stolen.clone();
    assert_eq!(reused.refresh(&app).await, StatusCode::UNAUTHORIZED);
    // Revocation (RFC 7009).
    let revoked = token_login(&app, "alice").await;
    secrets.extend([revoked.access.clone(), revoked.refresh.clone()]);
    let r = app
        .request(Method::POST, "/v1/token/revoke")
        .form(&[("token", revoked.refresh.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A hybrid logout.
    let hybrid = login(&app, "hybrid", "alice").await;
    secrets.extend(hybrid.secrets());
    let r = hybrid
        .request(&app, Method::DELETE, "/v1/hybrid/session")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Ending a login from the list.
    let ended = login(&app, "token", "alice").await;
    secrets.extend(ended.secrets());
    let session = login(&app, "session", "alice").await;
    secrets.extend(session.secrets());
    let r = session
        .request(
            &app,
            Method::DELETE,
            &format!("/v1/sessions/{}", ended.id()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // A password change.
    let r = session
        .request(&app, Method::POST, "/v1/account/password")
        .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    if let Some(c) = common::session_cookie(&r) {
        secrets.push(c.value);
    }
    secrets.push(
        r.json::<Value>().await.unwrap()["csrf_token"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    // Admin actions.
    let bob = login(&app, "token", "bob").await;
    secrets.extend(bob.secrets());
    let bob_id = user_id(&app, "bob").await;
    let r = post(&app, &root.access, "/v1/admin/keys/rotate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = post(
        &app,
        &root.access,
        &format!("/v1/admin/users/{bob_id}/logout"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = post(
        &app,
        &root.access,
        &format!("/v1/admin/users/{bob_id}/disable"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let r = get(&app, &root.access, "/v1/admin/events?limit=200")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret reached the audit log"
        );
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(body["next"].is_null());
    let list = body["events"].as_array().unwrap();
    // Newest first.
    for w in list.windows(2) {
        assert!(w[0]["id"].as_i64().unwrap() > w[1]["id"].as_i64().unwrap());
        let at =
            |e: &Value| serde_json::from_value::<tessera_core::Timestamp>(e["at"].clone()).unwrap();
        assert!(at(&w[0]) >= at(&w[1]), "{} before {}", w[0], w[1]);
    }
    let position = |kind: &str| {
        list.iter()
            .position(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {list:#?}"))
    };
    for kind in [
        "login_succeeded",
        "login_failed",
        "logout",
        "token_refreshed",
        "refresh_reuse_detected",
        "token_revoked",
        "password_changed",
        "forced_logout",
        "key_rotated",
        "user_disabled",
    ] {
        position(kind);
    }
    // The order they happened in, read backwards.
    assert!(position("user_disabled") < position("forced_logout"));
    assert!(position("forced_logout") < position("key_rotated"));
    assert!(position("key_rotated") < position("password_changed"));
    assert!(position("password_changed") < position("token_revoked"));
    assert!(position("token_revoked") < position("refresh_reuse_detected"));
    assert!(position("refresh_reuse_detected") < position("token_refreshed"));
    // Failed logins name the attempted user, and no user id.
    let failed: Vec<&Value> = list
        .iter()
        .filter(|e| e["kind"] == "login_failed")
        .collect();
    let attempted: BTreeSet<&str> = failed
        .iter()
        .map(|e| e["detail"]["username"].as_str().unwrap())
        .collect();
    assert_eq!(attempted, BTreeSet::from(["alice", "mallory"]));
    assert!(failed.iter().all(|e| e["user_id"].is_null()));
    let alice_id = user_id(&app, "alice").await;
    let pw = &list[position("password_changed")];
    assert_eq!(pw["user_id"], alice_id.as_str());
    let disabled = &list[position("user_disabled")];
    assert_eq!(disabled["user_id"], bob_id.as_str());

    // Admins only; limits checked.
    let r = token_login_response(&app, "alice", NEW_PASSWORD).await;
    let alice: Value = r.json().await.unwrap();
    let r = get(
        &app,
        alice["access_token"].as_str().unwrap(),
        "/v1/admin/events",
    )
    .send()
    .await
    .unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
    let r = app
        .request(Method::GET, "/v1/admin/events")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    for limit in ["0", "500"] {
        let r = get(
            &app,
            &root.access,
            &format!("/v1/admin/events?limit={limit}"),
        )
        .send()
        .await
        .unwrap();
        problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
}

async fn the_audit_log_pages_with_before(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    let root: Pair = admin(&app).await;
    for i in 0..4 {
        login(&app, MODELS[i % 3], "alice").await;
        login_response(&app, "token", "alice", "not the password").await;
    }
    let all = events(&app, &root.access, "?limit=200").await;
    let all: Vec<i64> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(all.len() >= 9, "{all:?}");
    let mut paged: Vec<i64> = Vec::new();
    let mut before: Option<i64> = None;
    for _ in 0..all.len() + 2 {
        let query = match before {
            Some(b) => format!("?limit=2&before={b}"),
            None => "?limit=2".to_owned(),
        };
        let page = events(&app, &root.access, &query).await;
        let ids: Vec<i64> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect();
        assert!(ids.len() <= 2);
        if let Some(b) = before {
            assert!(ids.iter().all(|id| *id < b), "page {ids:?} not before {b}");
        }
        paged.extend(&ids);
        match page["next"].as_i64() {
            Some(next) => {
                assert_eq!(Some(&next), ids.last());
                before = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(paged, all, "paging lost or repeated events");
    // A cursor past the newest event is the first page.
    let first = events(
        &app,
        &root.access,
        &format!("?limit=2&before={}", all[0] + 1000),
    )
    .await;
    let ids: Vec<i64> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, all[..2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_the_hybrid_account_and_admin_routes() {
    let app = TestApp::spawn(Backend::Memory).await;
    let doc: Value = app
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/hybrid/login", "post"),
        ("/v1/hybrid/session", "get"),
        ("/v1/hybrid/session", "delete"),
        ("/v1/hybrid/refresh", "post"),
        ("/v1/sessions", "get"),
        ("/v1/sessions", "delete"),
        ("/v1/sessions/{id}", "delete"),
        ("/v1/account/password", "post"),
        ("/v1/account", "delete"),
        ("/v1/admin/users", "get"),
        ("/v1/admin/users/{id}", "get"),
        ("/v1/admin/users/{id}", "delete"),
        ("/v1/admin/users/{id}/disable", "post"),
        ("/v1/admin/users/{id}/enable", "post"),
        ("/v1/admin/users/{id}/roles", "put"),
        ("/v1/admin/users/{id}/sessions", "get"),
        ("/v1/admin/users/{id}/logout", "post"),
        ("/v1/admin/events", "get"),
    ] {
        let op = paths.get(path).and_then(|p| p.get(method));
        assert!(op.is_some(), "{method} {path} missing");
        let op = op.unwrap();
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} documents no responses"
        );
        if path.starts_with("/v1/hybrid/") && path != "/v1/hybrid/login" {
            assert!(
                op["security"].to_string().contains("hybrid_refresh_cookie"),
                "{method} {path} does not name the hybrid refresh cookie"
            );
        }
    }
    let scheme = &doc["components"]["securitySchemes"]["hybrid_cookies"];
    assert_eq!(scheme["type"], "apiKey");
    assert_eq!(scheme["in"], "cookie");
    assert_eq!(scheme["name"], "__Host-tessera-at");
    let scheme = &doc["components"]["securitySchemes"]["hybrid_refresh_cookie"];
    assert_eq!(scheme["in"], "cookie");
    assert_eq!(scheme["name"], "__Host-tessera-rt");
    // The login answers 429 when throttled, and 403 for a cross-site login.
    for status in ["403", "429"] {
        assert!(
            doc["paths"]["/v1/hybrid/login"]["post"]["responses"][status].is_object(),
            "POST /v1/hybrid/login does not document {status}"
        );
    }
    for path in ["/v1/admin/users", "/v1/admin/events"] {
        let params = doc["paths"][path]["get"]["parameters"].to_string();
        assert!(params.contains("limit"), "{path} does not document limit");
    }
}
