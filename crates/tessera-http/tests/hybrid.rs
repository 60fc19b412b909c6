//! The hybrid model end to end: the access token in a `__Host-` cookie, the refresh token in a
//! `__Host-` cookie too, a CSRF token bound to the login, rotation with
//! reuse detection, logout, and the cross-site refusals.

mod common;
mod support;

use std::time::Duration;

use common::{Backend, PASSWORD, TestApp, problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{
    AT_COOKIE, Hybrid, Login, RT_COOKIE, clears, hybrid_login, hybrid_login_response, set_cookie,
    token_login,
};

on_every_backend!(
    login_sets_two_secure_httponly_cookies_and_no_token_in_the_body,
    the_access_cookie_authenticates_as_hybrid,
    refresh_rotates_both_cookies_and_keeps_the_csrf_token,
    reuse_of_a_rotated_refresh_cookie_after_the_grace_window_ends_the_login,
    refresh_needs_the_logins_csrf_token_and_a_same_site_request,
    logout_revokes_the_login_and_clears_both_cookies,
    unsafe_requests_need_the_logins_own_csrf_token,
    cross_site_unsafe_requests_are_refused,
    a_page_reload_gets_the_csrf_token_from_the_refresh_cookie,
    cross_site_hybrid_login_is_refused,
    a_rotated_out_refresh_cookie_is_not_a_live_login,
    the_session_route_counts_expiry_on_the_servers_clock,
);

async fn me(app: &TestApp, h: &Hybrid) -> reqwest::Response {
    h.request(app, Method::GET, "/v1/me", false)
        .send()
        .await
        .unwrap()
}

async fn login_sets_two_secure_httponly_cookies_and_no_token_in_the_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    let r = hybrid_login_response(&app, "alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");

    let at = set_cookie(&r, AT_COOKIE).expect("the access-token cookie");
    assert!(at.has("Secure"), "{at:?}");
    assert!(at.has("HttpOnly"), "{at:?}");
    assert_eq!(at.get("SameSite").as_deref(), Some("Lax"));
    assert_eq!(at.get("Path").as_deref(), Some("/"));
    assert_eq!(at.get("Domain"), None, "__Host- cookies carry no Domain");
    assert_eq!(at.get("Max-Age").as_deref(), Some("600"));
    // The access cookie holds the access JWT of a hybrid login.
    assert_eq!(support::claims(&at.value)["model"], "hybrid");

    let rt = set_cookie(&r, RT_COOKIE).expect("the refresh-token cookie");
    assert!(rt.has("Secure"), "{rt:?}");
    assert!(rt.has("HttpOnly"), "{rt:?}");
    assert_eq!(rt.get("SameSite").as_deref(), Some("Strict"));
    assert_eq!(rt.get("Path").as_deref(), Some("/"));
    assert_eq!(rt.get("Domain"), None);
    let rt_age: i64 = rt.get("Max-Age").unwrap().parse().unwrap();
    assert!(
        rt_age > 600,
        "the refresh cookie outlives the access cookie"
    );
    assert_ne!(rt.value, at.value);

    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["user"]["username"], "alice");
    assert!(!body["csrf_token"].as_str().unwrap().is_empty());
    assert!(body["login_id"].as_str().unwrap().starts_with("fam_"));
    assert_eq!(body["expires_in"], 600);
    for key in ["access_token", "refresh_token", "token"] {
        assert!(body.get(key).is_none(), "the body carries {key}");
    }
    assert!(!text.contains(&at.value), "the access token reached script");
    assert!(
        !text.contains(&rt.value),
        "the refresh token reached script"
    );
}

async fn the_access_cookie_authenticates_as_hybrid(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    let h = hybrid_login(&app, "alice").await;
    let r = me(&app, &h).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user"]["username"], "alice");
    assert_eq!(body["auth"]["model"], "hybrid");
    assert_eq!(body["auth"]["family_id"], h.login_id.as_str());
    // Without the cookie, or with a forged one: 401.
    let anonymous = app.request(Method::GET, "/v1/me").send().await.unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
    let forged = Hybrid {
        at: Some(format!("{}x", h.at.clone().unwrap())),
        ..h.clone()
    };
    problem(me(&app, &forged).await, StatusCode::UNAUTHORIZED).await;
}

async fn refresh_rotates_both_cookies_and_keeps_the_csrf_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    let h = hybrid_login(&app, "alice").await;
    let r = h
        .request(&app, Method::POST, "/v1/hybrid/refresh", true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let at = set_cookie(&r, AT_COOKIE).expect("a new access cookie");
    let rt = set_cookie(&r, RT_COOKIE).expect("a new refresh cookie");
    assert_ne!(Some(&at.value), h.at.as_ref());
    assert_ne!(Some(&rt.value), h.rt.as_ref());
    assert!(at.has("HttpOnly") && at.has("Secure"));
    assert_eq!(rt.get("Path").as_deref(), Some("/"));
    assert_eq!(rt.get("SameSite").as_deref(), Some("Strict"));
    let body: Value = r.json().await.unwrap();
    // The CSRF token is bound to the login, not to one access token: it stays the same.
    assert_eq!(body["csrf_token"], h.csrf.as_str());
    assert_eq!(body["login_id"], h.login_id.as_str());
    assert!(body.get("access_token").is_none());

    let mut next = h.clone();
    next.at = Some(at.value);
    next.rt = Some(rt.value);
    let r = me(&app, &next).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["auth"]["model"], "hybrid");
    // The same CSRF token still works for unsafe requests after the refresh.
    assert_eq!(next.clone().refresh(&app).await, StatusCode::OK);
    // A request without any refresh cookie: 401.
    let none = app
        .request(Method::POST, "/v1/hybrid/refresh")
        .header("x-csrf-token", &h.csrf)
        .send()
        .await
        .unwrap();
    problem(none, StatusCode::UNAUTHORIZED).await;
}

async fn reuse_of_a_rotated_refresh_cookie_after_the_grace_window_ends_the_login(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    let old = hybrid_login(&app, "alice").await;
    let mut current = old.clone();
    assert_eq!(current.refresh(&app).await, StatusCode::OK);
    assert_eq!(me(&app, &current).await.status(), StatusCode::OK);
    // Past the 5 s grace window the old refresh cookie is a stolen one.
    app.clock.advance(Duration::from_secs(6));
    let reuse = old
        .request(&app, Method::POST, "/v1/hybrid/refresh", true)
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&reuse, AT_COOKIE).is_none_or(|c| clears(&c)));
    problem(reuse, StatusCode::UNAUTHORIZED).await;
    // The whole login is gone: the legitimate browser's cookies too.
    problem(me(&app, &current).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(current.refresh(&app).await, StatusCode::UNAUTHORIZED);
    // Another login of the same user is untouched.
    let other = hybrid_login(&app, "alice").await;
    assert_eq!(me(&app, &other).await.status(), StatusCode::OK);
}

async fn refresh_needs_the_logins_csrf_token_and_a_same_site_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    app.register("bob", PASSWORD).await;
    let mut h = hybrid_login(&app, "alice").await;
    let bobs = hybrid_login(&app, "bob").await;
    let attempts: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no token", vec![]),
        ("wrong token", vec![("x-csrf-token", "A".repeat(43))]),
        ("bob's token", vec![("x-csrf-token", bobs.csrf.clone())]),
        (
            "cross-site",
            vec![
                ("x-csrf-token", h.csrf.clone()),
                ("sec-fetch-site", "cross-site".into()),
            ],
        ),
        (
            "foreign origin",
            vec![
                ("x-csrf-token", h.csrf.clone()),
                ("origin", "https://evil.example".into()),
            ],
        ),
    ];
    for (what, headers) in attempts {
        let mut rb = h.request(&app, Method::POST, "/v1/hybrid/refresh", false);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        let r = rb.send().await.unwrap();
        assert!(set_cookie(&r, AT_COOKIE).is_none(), "{what}: cookies set");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}");
        problem(r, StatusCode::FORBIDDEN).await;
    }
    // None of that used the refresh token up.
    assert_eq!(h.refresh(&app).await, StatusCode::OK);
    assert_eq!(me(&app, &h).await.status(), StatusCode::OK);
}

async fn logout_revokes_the_login_and_clears_both_cookies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    let h = hybrid_login(&app, "alice").await;
    let other = hybrid_login(&app, "alice").await;
    let r = h
        .request(&app, Method::DELETE, "/v1/hybrid/session", true)
        .header("origin", &app.origin)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let at = set_cookie(&r, AT_COOKIE).expect("the access cookie is cleared");
    let rt = set_cookie(&r, RT_COOKIE).expect("the refresh cookie is cleared");
    for (c, path) in [(&at, "/"), (&rt, "/")] {
        assert!(clears(c), "{c:?}");
        // A browser only replaces a prefixed cookie with one of the same attributes.
        assert!(c.has("Secure"), "{c:?}");
        assert_eq!(c.get("Path").as_deref(), Some(path), "{c:?}");
    }
    // Replaying the old cookies: refused.
    problem(me(&app, &h).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(h.clone().refresh(&app).await, StatusCode::UNAUTHORIZED);
    let session = h
        .request(&app, Method::GET, "/v1/hybrid/session", false)
        .send()
        .await
        .unwrap();
    problem(session, StatusCode::UNAUTHORIZED).await;
    // Another hybrid login of the same user lives on.
    assert_eq!(me(&app, &other).await.status(), StatusCode::OK);
    // Logging out again, with cookies of a dead login: nothing to do, still 204.
    let again = h
        .request(&app, Method::DELETE, "/v1/hybrid/session", true)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
}

/// Each unsafe request a hybrid cookie can make, with what its refusal must leave unchanged.
async fn unsafe_requests_need_the_logins_own_csrf_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    app.register("bob", PASSWORD).await;
    let h = hybrid_login(&app, "alice").await;
    let second = hybrid_login(&app, "alice").await;
    let bobs = hybrid_login(&app, "bob").await;
    let alices_session = app.login("alice", PASSWORD).await;
    let target = token_login(&app, "alice").await;
    let target_path = format!("/v1/sessions/{}", target.family());

    let bad_tokens: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("garbage", Some("not a token".into())),
        ("wrong", Some("A".repeat(43))),
        ("another hybrid login of alice", Some(second.csrf.clone())),
        ("bob's hybrid login", Some(bobs.csrf.clone())),
        ("alice's session", Some(alices_session.csrf.clone())),
    ];
    for (what, token) in &bad_tokens {
        let requests = [
            h.request(&app, Method::DELETE, &target_path, false),
            h.request(&app, Method::DELETE, "/v1/sessions", false),
            h.request(&app, Method::POST, "/v1/account/password", false)
                .json(&json!({"current_password": PASSWORD, "new_password": "a new passphrase of mine"})),
            h.request(&app, Method::DELETE, "/v1/hybrid/session", false),
        ];
        for rb in requests {
            let rb = match token {
                Some(t) => rb.header("x-csrf-token", t),
                None => rb,
            };
            let r = rb.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}");
            problem(r, StatusCode::FORBIDDEN).await;
        }
    }
    // Nothing changed: every login lives, the password is the old one.
    assert_eq!(me(&app, &h).await.status(), StatusCode::OK);
    assert_eq!(me(&app, &second).await.status(), StatusCode::OK);
    let mut target_login = Login::Token(target.clone());
    assert!(
        target_login.alive(&app).await,
        "a refused request ended a login"
    );
    assert_eq!(
        app.login_response("alice", PASSWORD).await.status(),
        StatusCode::OK
    );
    // With its own token the same request goes through.
    let target = token_login(&app, "alice").await;
    let r = h
        .request(
            &app,
            Method::DELETE,
            &format!("/v1/sessions/{}", target.family()),
            true,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!Login::Token(target).alive(&app).await);
}

async fn cross_site_unsafe_requests_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    let h = hybrid_login(&app, "alice").await;
    let target = token_login(&app, "alice").await;
    let target_path = format!("/v1/sessions/{}", target.family());
    let cases: [&[(&str, &str)]; 4] = [
        &[("sec-fetch-site", "cross-site")],
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
        &[
            ("sec-fetch-site", "same-site"),
            ("origin", "http://evil.localhost"),
        ],
    ];
    for headers in cases {
        for (method, path) in [
            (Method::DELETE, target_path.as_str()),
            (Method::POST, "/v1/account/password"),
            (Method::DELETE, "/v1/hybrid/session"),
            (Method::POST, "/v1/hybrid/refresh"),
        ] {
            // The right CSRF token: the origin alone must refuse it.
            let mut rb = h.request(&app, method.clone(), path, true).json(
                &json!({"current_password": PASSWORD, "new_password": "a new passphrase of mine"}),
            );
            for (k, v) in headers {
                rb = rb.header(*k, *v);
            }
            let r = rb.send().await.unwrap();
            assert_eq!(
                r.status(),
                StatusCode::FORBIDDEN,
                "{method} {path} {headers:?}"
            );
            problem(r, StatusCode::FORBIDDEN).await;
        }
    }
    assert_eq!(me(&app, &h).await.status(), StatusCode::OK);
    assert!(Login::Token(target).alive(&app).await);
    assert_eq!(
        app.login_response("alice", PASSWORD).await.status(),
        StatusCode::OK
    );
    // The app's own origin, as a browser sends it, passes.
    let r = h
        .request(&app, Method::DELETE, "/v1/hybrid/session", true)
        .header("origin", &app.origin)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

async fn a_page_reload_gets_the_csrf_token_from_the_refresh_cookie(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    let h = hybrid_login(&app, "alice").await;
    // Script forgot the token; only the refresh cookie is sent (the access cookie expired, say).
    let reload = Hybrid {
        at: None,
        csrf: String::new(),
        ..h.clone()
    };
    let r = reload
        .request(&app, Method::GET, "/v1/hybrid/session", false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["csrf_token"], h.csrf.as_str());
    assert_eq!(body["login_id"], h.login_id.as_str());
    assert_eq!(body["user"]["username"], "alice");
    assert!(body.get("access_token").is_none());
    // The token it gives works.
    let mut fetched = h.clone();
    fetched.csrf = body["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(fetched.refresh(&app).await, StatusCode::OK);
    // Without a refresh cookie, or with the access cookie alone: 401.
    let only_at = Hybrid {
        rt: None,
        ..h.clone()
    };
    let r = only_at
        .request(&app, Method::GET, "/v1/hybrid/session", false)
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    let forged = Hybrid {
        rt: Some("rt_forged".into()),
        ..h.clone()
    };
    let r = forged
        .request(&app, Method::GET, "/v1/hybrid/session", false)
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
}

async fn cross_site_hybrid_login_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.example"),
        ("origin", "null"),
    ] {
        let r = app
            .request(Method::POST, "/v1/hybrid/login")
            .header(name, value)
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert!(set_cookie(&r, AT_COOKIE).is_none());
        assert!(set_cookie(&r, RT_COOKIE).is_none());
        problem(r, StatusCode::FORBIDDEN).await;
    }
    // No login was made.
    let session = app.login("alice", PASSWORD).await;
    let logins = support::my_logins(&app, &Login::Session(session)).await;
    assert_eq!(logins.len(), 1, "{logins:?}");
    // From the app's own origin it works.
    let r = app
        .request(Method::POST, "/v1/hybrid/login")
        .header("origin", &app.origin)
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// `live_family_of` promises a family that is "not rotated out": a refresh cookie that was
/// rotated out long ago is no proof of a live login, and must not hand out the login's CSRF token.
async fn a_rotated_out_refresh_cookie_is_not_a_live_login(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    let stale = hybrid_login(&app, "alice").await;
    let mut current = stale.clone();
    assert_eq!(current.refresh(&app).await, StatusCode::OK);
    app.clock.advance(Duration::from_secs(60));
    let stale_rt_only = Hybrid {
        at: None,
        csrf: String::new(),
        ..stale.clone()
    };
    let r = stale_rt_only
        .request(&app, Method::GET, "/v1/hybrid/session", false)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a refresh cookie rotated out a minute ago still gets the login's CSRF token"
    );
    problem(r, StatusCode::UNAUTHORIZED).await;
}

/// `expires_in` of `GET /v1/hybrid/session` is counted on the server's clock, like the token's
/// `exp` and every other time check.
async fn the_session_route_counts_expiry_on_the_servers_clock(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice", PASSWORD).await;
    let h = hybrid_login(&app, "alice").await;
    app.clock.advance(Duration::from_secs(400));
    let r = h
        .request(&app, Method::GET, "/v1/hybrid/session", false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let left = body["expires_in"].as_u64().unwrap();
    assert!(
        (195..=200).contains(&left),
        "400 s into a 600 s access token, expires_in is {left}"
    );
}
