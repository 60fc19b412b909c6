//! Login throttling (per account across every login model, per client address, trusted proxies,
//! no permanent lockout) and CORS for the configured trusted origins.

mod common;
mod support;

use std::time::Duration;

use common::{Backend, Options, PASSWORD, TestApp, problem};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use support::{Login, MODELS, assert_throttled, login, login_response, my_logins, token_login};
use tessera_core::{Rate, ThrottleConfig};
use tessera_http::HttpConfig;

on_every_backend!(
    the_fourth_attempt_for_an_account_is_throttled_whatever_the_model,
    throttling_cannot_be_turned_against_users,
    guessing_at_an_account_does_not_keep_its_owner_out,
    wrong_current_passwords_spend_the_accounts_budget,
    refreshes_spend_a_budget_of_their_own,
    each_address_has_its_own_budget,
    forwarded_for_is_ignored_without_a_trusted_proxy,
    behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget,
    the_budget_refills_with_time,
    look_alike_spellings_of_a_username_share_its_budget,
    behind_a_trusted_proxy_logins_record_the_clients_address,
    a_preflight_from_a_trusted_origin_allows_credentials_for_that_origin_only,
    untrusted_origins_get_no_cors_headers,
    responses_to_the_trusted_origin_are_readable_by_it,
    cookie_requests_from_the_trusted_origin_pass_the_origin_check,
);

fn throttled(per_account: Rate, per_ip: Rate, trusted_proxies: &[&str]) -> Options {
    Options {
        http: HttpConfig {
            trusted_proxies: trusted_proxies.iter().map(|p| p.parse().unwrap()).collect(),
            ..HttpConfig::default()
        },
        throttle: ThrottleConfig {
            per_account,
            per_ip,
            ..common::relaxed_throttle()
        },
        ..Options::default()
    }
}

const GENEROUS: Rate = Rate {
    burst: 100,
    per_minute: 1,
};

/// Creates accounts as an operator would, so no test budget is spent on registration.
async fn users(app: &TestApp, names: &[&str]) {
    for name in names {
        app.accounts
            .create(name, &tessera_core::Password::new(PASSWORD), Vec::new())
            .await
            .unwrap();
    }
}

async fn login_from(app: &TestApp, username: &str, forwarded_for: Option<&str>) -> Response {
    let mut rb = app
        .request(Method::POST, "/v1/token")
        .json(&json!({"username": username, "password": PASSWORD}));
    if let Some(xff) = forwarded_for {
        rb = rb.header("x-forwarded-for", xff);
    }
    rb.send().await.unwrap()
}

/// Throttling cannot be turned against users: a proxy that appends its own `X-Forwarded-For` line
/// (rather than extending the client's) is read line by line, so the client's first line cannot
/// choose the address that is budgeted; an IPv6 client is one /64; and a refresh spends its own
/// budget, not the logins'.
async fn throttling_cannot_be_turned_against_users(backend: Backend) {
    let ip = Rate {
        burst: 1,
        per_minute: 1,
    };
    let app = TestApp::spawn_with(backend, throttled(GENEROUS, ip, &["127.0.0.1/32"])).await;
    users(&app, &["u1", "u2", "u3", "u4"]).await;
    let two_lines = |client_line: &str, proxy_line: &str| {
        app.request(Method::POST, "/v1/token")
            .json(&json!({"username": "u1", "password": PASSWORD}))
            .header("x-forwarded-for", client_line.to_owned())
            .header("x-forwarded-for", proxy_line.to_owned())
    };
    // The real client (the proxy's line, the last) spends its budget…
    let r = two_lines("192.0.2.1", "198.51.100.9").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // …and a forged first line does not give it a new one.
    let r = two_lines("192.0.2.2", "198.51.100.9").send().await.unwrap();
    assert_throttled(r, "forged first line").await;
    // IPv6: one /64, one budget.
    let r = login_from(&app, "u2", Some("2001:db8:1:2::1")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = login_from(&app, "u3", Some("2001:db8:1:2:ffff::7")).await;
    assert_throttled(r, "same /64").await;
    let r = login_from(&app, "u4", Some("2001:db8:1:3::1")).await;
    assert_eq!(r.status(), StatusCode::OK, "another /64");
    // The throttled address still refreshes: refreshes have their own budget.
    let body: Value = login_from(&app, "u4", Some("2001:db8:9::1"))
        .await
        .json()
        .await
        .unwrap();
    let r = app
        .request(Method::POST, "/v1/token/refresh")
        .header("x-forwarded-for", "2001:db8:1:3::1")
        .json(&json!({"refresh_token": body["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Someone guessing at an account from elsewhere cannot keep its owner out: a browser (device
/// cookie) or an app (`device_token`) that logged in to the account before keeps a failed-attempt
/// budget of its own. A device token proves nothing for another account, and cannot be forged.
async fn guessing_at_an_account_does_not_keep_its_owner_out(backend: Backend) {
    let account = Rate {
        burst: 3,
        per_minute: 1,
    };
    let app = TestApp::spawn_with(backend, throttled(account, GENEROUS, &[])).await;
    users(&app, &["alice", "mallory"]).await;
    // The owner's browser and app log in once and are given device tokens.
    let r = login_response(&app, "session", "alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = support::set_cookie(&r, "__Host-tessera-device").expect("a device cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.has(attribute), "device cookie without {attribute}");
    }
    let browser_device = cookie.value;
    let r = login_response(&app, "token", "alice", PASSWORD).await;
    let app_device = r.json::<Value>().await.unwrap()["device_token"]
        .as_str()
        .expect("a device token for the app")
        .to_owned();
    let r = login_response(&app, "token", "mallory", PASSWORD).await;
    let mallorys_device = r.json::<Value>().await.unwrap()["device_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Someone sprays wrong passwords at alice: her shared budget is spent.
    for _ in 0..5 {
        let r = login_response(&app, "token", "alice", "a wrong guess").await;
        assert!(matches!(
            r.status(),
            StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS
        ));
    }
    assert_throttled(
        login_response(&app, "token", "alice", PASSWORD).await,
        "a client alice never logged in from",
    )
    .await;
    // Her browser and her app still get in.
    let r = app
        .request(Method::POST, "/v1/session/login")
        .header("cookie", format!("__Host-tessera-device={browser_device}"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "alice's browser was kept out");
    let with_token = |device: &str| {
        app.request(Method::POST, "/v1/token")
            .json(&json!({"username": "alice", "password": PASSWORD, "device_token": device}))
    };
    let r = with_token(&app_device).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "alice's app was kept out");
    // Another account's device token, or a forged one, is no device of alice's.
    assert_throttled(
        with_token(&mallorys_device).send().await.unwrap(),
        "mallory's device",
    )
    .await;
    let forged = format!("{}.AAAA", app_device.split_once('.').unwrap().0);
    assert_throttled(with_token(&forged).send().await.unwrap(), "forged device").await;
    // A device that guesses wrong spends its own budget.
    for _ in 0..3 {
        problem(
            app.request(Method::POST, "/v1/token")
                .json(
                    &json!({"username": "alice", "password": "wrong!", "device_token": app_device}),
                )
                .send()
                .await
                .unwrap(),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    assert_throttled(
        with_token(&app_device).send().await.unwrap(),
        "spent device",
    )
    .await;
}

/// A wrong current password given to change it is a guess like a wrong login password: it
/// spends the account's failed-attempt budget.
async fn wrong_current_passwords_spend_the_accounts_budget(backend: Backend) {
    let account = Rate {
        burst: 2,
        per_minute: 1,
    };
    let app = TestApp::spawn_with(backend, throttled(account, GENEROUS, &[])).await;
    users(&app, &["alice"]).await;
    let caller = Login::Token(token_login(&app, "alice").await);
    for _ in 0..2 {
        let r = caller
            .request(&app, Method::POST, "/v1/account/password")
            .json(
                &json!({"current_password": "a guess of mine", "new_password": "a new passphrase"}),
            )
            .send()
            .await
            .unwrap();
        problem(r, StatusCode::FORBIDDEN).await;
    }
    assert_throttled(
        login_response(&app, "token", "alice", PASSWORD).await,
        "after two wrong current passwords",
    )
    .await;
}

/// Refreshes are budgeted per address too (token and hybrid), apart from logins: a client cannot
/// grow the store without bound by refreshing, and logins from the address are not held up.
async fn refreshes_spend_a_budget_of_their_own(backend: Backend) {
    let mut options = throttled(GENEROUS, GENEROUS, &["127.0.0.1/32"]);
    options.throttle.refresh_per_ip = Rate {
        burst: 2,
        per_minute: 1,
    };
    let app = TestApp::spawn_with(backend, options).await;
    users(&app, &["alice"]).await;
    let refresh_from = |token: String, address: &'static str| {
        app.request(Method::POST, "/v1/token/refresh")
            .header("x-forwarded-for", address)
            .json(&json!({"refresh_token": token}))
    };
    let mut pair = token_login(&app, "alice").await;
    for _ in 0..2 {
        let r = refresh_from(pair.refresh.clone(), "198.51.100.4")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        pair.refresh = body["refresh_token"].as_str().unwrap().to_owned();
    }
    assert_throttled(
        refresh_from(pair.refresh.clone(), "198.51.100.4")
            .send()
            .await
            .unwrap(),
        "third refresh",
    )
    .await;
    // Another address refreshes, and the throttled one still logs in.
    let r = refresh_from(pair.refresh.clone(), "198.51.100.5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = login_from(&app, "alice", Some("198.51.100.4")).await;
    assert_eq!(r.status(), StatusCode::OK);
}

async fn the_fourth_attempt_for_an_account_is_throttled_whatever_the_model(backend: Backend) {
    let account = Rate {
        burst: 3,
        per_minute: 1,
    };
    let app = TestApp::spawn_with(backend, throttled(account, GENEROUS, &[])).await;
    users(&app, &["alice", "bob"]).await;
    // Logging in spends nothing of the account's budget, however often.
    let token = token_login(&app, "alice").await;
    for model in MODELS {
        let r = login_response(&app, model, "alice", PASSWORD).await;
        assert_eq!(r.status(), StatusCode::OK, "{model}");
    }
    // Three failed attempts, through three models.
    for model in MODELS {
        problem(
            login_response(&app, model, "alice", "wrong password here").await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    // The fourth, whatever the model or spelling, even with the right password.
    for model in MODELS {
        let r = login_response(&app, model, "alice", PASSWORD).await;
        assert_throttled(r, model).await;
    }
    let r = login_response(&app, "token", "ALICE", PASSWORD).await;
    assert_throttled(r, "ALICE").await;
    // A password change guesses the password too: same budget.
    let r = Login::Token(token.clone())
        .request(&app, Method::POST, "/v1/account/password")
        .json(&json!({"current_password": "a guess of mine", "new_password": "a new passphrase"}))
        .send()
        .await
        .unwrap();
    assert_throttled(r, "password change").await;
    // Another account from the same address still logs in, with every model.
    for model in MODELS {
        let r = login_response(&app, model, "bob", PASSWORD).await;
        assert_eq!(r.status(), StatusCode::OK, "bob with {model}");
    }
    // Being throttled does not end what alice already has.
    assert!(Login::Token(token).alive(&app).await);
}

async fn each_address_has_its_own_budget(backend: Backend) {
    let ip = Rate {
        burst: 3,
        per_minute: 1,
    };
    let app = TestApp::spawn_with(backend, throttled(GENEROUS, ip, &[])).await;
    users(&app, &["u1", "u2", "u3", "u4"]).await;
    for (model, name) in MODELS.iter().zip(["u1", "u2", "u3"]) {
        let r = login_response(&app, model, name, PASSWORD).await;
        assert_eq!(r.status(), StatusCode::OK, "{name}");
    }
    for model in MODELS {
        let r = login_response(&app, model, "u4", PASSWORD).await;
        assert_throttled(r, model).await;
    }
    // Registrations spend the same budget.
    let r = app.register("newcomer", PASSWORD).await;
    assert_throttled(r, "registration").await;
}

async fn forwarded_for_is_ignored_without_a_trusted_proxy(backend: Backend) {
    let ip = Rate {
        burst: 2,
        per_minute: 1,
    };
    let app = TestApp::spawn_with(backend, throttled(GENEROUS, ip, &[])).await;
    users(&app, &["u1", "u2", "u3", "u4"]).await;
    let r = login_from(&app, "u1", Some("198.51.100.1")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = login_from(&app, "u2", Some("198.51.100.2")).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Every spoofed address shares 127.0.0.1's budget, which is spent.
    let r = login_from(&app, "u3", Some("198.51.100.3")).await;
    assert_throttled(r, "a third spoofed address").await;
    let r = login_from(&app, "u4", None).await;
    assert_throttled(r, "the socket's own address").await;
}

async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(backend: Backend) {
    let ip = Rate {
        burst: 2,
        per_minute: 1,
    };
    let app = TestApp::spawn_with(backend, throttled(GENEROUS, ip, &["127.0.0.1/32"])).await;
    users(&app, &["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"]).await;
    let a = "198.51.100.1";
    let b = "203.0.113.2";
    assert_eq!(
        login_from(&app, "u1", Some(a)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        login_from(&app, "u2", Some(a)).await.status(),
        StatusCode::OK
    );
    assert_throttled(login_from(&app, "u3", Some(a)).await, "client a").await;
    // Another client behind the same proxy: its own budget.
    assert_eq!(
        login_from(&app, "u4", Some(b)).await.status(),
        StatusCode::OK
    );
    // The client cannot escape by prepending addresses: the proxy appends the real one.
    let spoofed = format!("192.0.2.77, {a}");
    assert_throttled(login_from(&app, "u5", Some(&spoofed)).await, "spoofed a").await;
    assert_eq!(
        login_from(&app, "u6", Some(&format!("{a}, {b}")))
            .await
            .status(),
        StatusCode::OK,
        "the right-most address is the client"
    );
    assert_throttled(login_from(&app, "u7", Some(b)).await, "client b").await;
    // The proxy's own requests (no header) have the proxy's budget, untouched so far.
    assert_eq!(login_from(&app, "u8", None).await.status(), StatusCode::OK);
}

async fn the_budget_refills_with_time(backend: Backend) {
    let account = Rate {
        burst: 1,
        per_minute: 60,
    };
    let app = TestApp::spawn_with(backend, throttled(account, GENEROUS, &[])).await;
    users(&app, &["alice"]).await;
    // One failed attempt spends the budget…
    problem(
        login_response(&app, "token", "alice", "a wrong guess").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // …and hammering, even with the right password, does not push the end of the wait further
    // away: no lockout.
    for _ in 0..5 {
        let r = login_response(&app, "token", "alice", PASSWORD).await;
        assert_throttled(r, "over the budget").await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        login_response(&app, "session", "alice", PASSWORD)
            .await
            .status(),
        StatusCode::OK,
        "still locked out after the budget refilled"
    );
}

/// The throttle keys accounts by the name as typed, lower-cased; logins find the account by its
/// NFKC-normalized name. Full-width "ＡＬＩＣＥ" is alice's account, so it is alice's budget.
async fn look_alike_spellings_of_a_username_share_its_budget(backend: Backend) {
    let account = Rate {
        burst: 3,
        per_minute: 1,
    };
    let app = TestApp::spawn_with(backend, throttled(account, GENEROUS, &[])).await;
    users(&app, &["alice"]).await;
    // The premise: the full-width spelling logs in to alice's account.
    let r = login_response(&app, "token", "ａｌｉｃｅ", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let me: Value = app
        .request(Method::GET, "/v1/me")
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["username"], "alice");
    // Three failed attempts on alice's account, one of them full-width (a successful login
    // spends nothing).
    for spelling in ["ａｌｉｃｅ", "alice", "alice"] {
        problem(
            login_response(&app, "token", spelling, "a guess of mine").await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    // The fourth is refused however it is spelled.
    for spelling in ["alice", "ＡＬＩＣＥ", "ａｌｉｃｅ", "aｌice"] {
        let r = login_response(&app, "token", spelling, "another guess").await;
        assert_eq!(
            r.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{spelling:?}: the fourth attempt on alice's account (three made under other \
             spellings of her name) was not throttled"
        );
    }
}

/// README: trusted proxies are those "whose X-Forwarded-For names the client". The address a login
/// records (listed in GET /v1/sessions and in the audit log) is then the client's, not the proxy's.
async fn behind_a_trusted_proxy_logins_record_the_clients_address(backend: Backend) {
    let options = throttled(GENEROUS, GENEROUS, &["127.0.0.1/32"]);
    let app = TestApp::spawn_with(backend, options).await;
    users(&app, &["alice"]).await;
    let r = login_from(&app, "alice", Some("203.0.113.7")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let caller = Login::Token(support::Pair {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
    });
    let listed = my_logins(&app, &caller).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0]["ip"], "203.0.113.7",
        "the login recorded the proxy's address"
    );
}

fn with_trusted_origin() -> Options {
    Options {
        http: HttpConfig {
            trusted_origins: vec!["http://app.example".into()],
            ..tessera_http::HttpConfig::default()
        },
        ..Options::default()
    }
}

const TRUSTED: &str = "http://app.example";

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

fn list_of(r: &Response, name: &str) -> Vec<String> {
    r.headers()
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

async fn preflight(app: &TestApp, origin: &str, path: &str) -> Response {
    app.request(Method::OPTIONS, path)
        .header("origin", origin)
        .header("access-control-request-method", "DELETE")
        .header(
            "access-control-request-headers",
            "x-csrf-token, authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

async fn a_preflight_from_a_trusted_origin_allows_credentials_for_that_origin_only(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, with_trusted_origin()).await;
    for path in ["/v1/me", "/v1/sessions/ses_x", "/v1/hybrid/refresh"] {
        let r = preflight(&app, TRUSTED, path).await;
        assert!(r.status().is_success(), "{path}: {}", r.status());
        assert_eq!(header(&r, "access-control-allow-origin"), Some(TRUSTED));
        assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
        let methods = list_of(&r, "access-control-allow-methods");
        for m in ["get", "post", "put", "patch", "delete"] {
            assert!(methods.contains(&m.to_owned()), "{m} not in {methods:?}");
        }
        let headers = list_of(&r, "access-control-allow-headers");
        for h in ["x-csrf-token", "authorization", "content-type"] {
            assert!(headers.contains(&h.to_owned()), "{h} not in {headers:?}");
        }
        assert!(
            list_of(&r, "vary").contains(&"origin".to_owned()),
            "no Vary: Origin"
        );
    }
}

async fn untrusted_origins_get_no_cors_headers(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_trusted_origin()).await;
    app.register("alice", PASSWORD).await;
    let pair = token_login(&app, "alice").await;
    for origin in [
        "https://evil.example",
        "http://app.example.evil.example",
        "http://evil.app.example",
        "https://app.example",
        "null",
    ] {
        let r = preflight(&app, origin, "/v1/me").await;
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            None,
            "preflight from {origin}"
        );
        let r = app
            .request(Method::GET, "/v1/me")
            .header("origin", origin)
            .bearer_auth(&pair.access)
            .send()
            .await
            .unwrap();
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            None,
            "GET from {origin}"
        );
    }
    // Without any trusted origin configured, not even the app's own origin is reflected.
    let plain = TestApp::spawn(backend).await;
    let r = preflight(&plain, TRUSTED, "/v1/me").await;
    assert_eq!(header(&r, "access-control-allow-origin"), None);
}

async fn responses_to_the_trusted_origin_are_readable_by_it(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_trusted_origin()).await;
    app.register("alice", PASSWORD).await;
    let pair = token_login(&app, "alice").await;
    let r = app
        .request(Method::GET, "/v1/me")
        .header("origin", TRUSTED)
        .bearer_auth(&pair.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(TRUSTED));
    assert_ne!(header(&r, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert!(list_of(&r, "vary").contains(&"origin".to_owned()));
    // Errors too, with the headers a client needs to act on them.
    let r = app
        .request(Method::GET, "/v1/me")
        .header("origin", TRUSTED)
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(TRUSTED));
    let exposed = list_of(&r, "access-control-expose-headers");
    for h in ["www-authenticate", "retry-after", "x-request-id"] {
        assert!(
            exposed.contains(&h.to_owned()),
            "{h} not exposed: {exposed:?}"
        );
    }
}

async fn cookie_requests_from_the_trusted_origin_pass_the_origin_check(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_trusted_origin()).await;
    app.register("alice", PASSWORD).await;
    // A hybrid login from the trusted origin's page.
    let r = app
        .request(Method::POST, "/v1/hybrid/login")
        .header("origin", TRUSTED)
        .header("sec-fetch-site", "same-site")
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(TRUSTED));
    let session = login(&app, "session", "alice").await;
    let target = login(&app, "token", "alice").await;
    // From elsewhere: refused, even with the right CSRF token.
    let r = session
        .request(
            &app,
            Method::DELETE,
            &format!("/v1/sessions/{}", target.id()),
        )
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::FORBIDDEN).await;
    let r = session
        .request(
            &app,
            Method::DELETE,
            &format!("/v1/sessions/{}", target.id()),
        )
        .header("origin", TRUSTED)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(TRUSTED));
}
