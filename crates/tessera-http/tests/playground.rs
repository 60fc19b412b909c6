//! The playground's routes over plain HTTP: on by default (the library's default is the loopback
//! server's), 404 problems when off, and `GET /playground/held`: the caller's own records only, no
//! secret, 401 without a credential.

mod common;

use common::{Backend, COOKIE, Options, PASSWORD, TestApp, problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_http::HttpConfig;

const PLAYGROUND_PATHS: [&str; 6] = [
    "/",
    "/playground.js",
    "/playground.css",
    "/playground/injected.js",
    "/playground/held?model=session",
    "/playground/attacks",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_is_on_by_default() {
    let app = TestApp::spawn(Backend::Memory).await;
    let page = app.request(Method::GET, "/").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    // No attacker page configured: nothing may be framed.
    assert!(!csp.contains("frame-src"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"name="tessera-attacker-origin" content="""#));
    for path in ["/playground.js", "/playground/injected.js"] {
        let r = app.request(Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "text/javascript; charset=utf-8"
        );
    }
    let attacks = app
        .request(Method::GET, "/playground/attacks")
        .send()
        .await
        .unwrap();
    assert_eq!(attacks.status(), StatusCode::OK);
    let attacks: Value = attacks.json().await.unwrap();
    assert_eq!(attacks["requests"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_is_404_when_off() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options {
            http: HttpConfig {
                playground: None,
                ..HttpConfig::default()
            },
            ..Options::default()
        },
    )
    .await;
    let browser = app.user_with_session("alice").await;
    for path in PLAYGROUND_PATHS {
        let r = app
            .as_browser(&browser, Method::GET, path, false)
            .send()
            .await
            .unwrap();
        let body = problem(r, StatusCode::NOT_FOUND).await;
        assert_eq!(body["type"], "urn:tessera:problem:not-found", "{path}");
    }
    // The rest of the server is as before.
    let me = app
        .as_browser(&browser, Method::GET, "/v1/me", false)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_without_a_credential_is_401_and_a_bad_model_400() {
    let app = TestApp::spawn(Backend::Memory).await;
    for model in ["session", "token", "hybrid"] {
        let r = app
            .request(Method::GET, &format!("/playground/held?model={model}"))
            .send()
            .await
            .unwrap();
        let body = problem(r, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body["type"], "urn:tessera:problem:unauthenticated");
    }
    // A forged bearer token, and a hybrid family with a made-up CSRF token.
    let r = app
        .request(Method::GET, "/playground/held?model=token")
        .bearer_auth("eyJhbGciOiJFZERTQSJ9.e30.AAAA")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    let r = app
        .request(Method::GET, "/playground/held?model=hybrid&family=fam_x")
        .header("x-csrf-token", "guess")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    for query in ["", "?model=admin", "?model=session&model=token"] {
        let browser = app.user_with_session(&format!("user{}", query.len())).await;
        let r = app
            .as_browser(
                &browser,
                Method::GET,
                &format!("/playground/held{query}"),
                false,
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{query}: {}", r.status());
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{query}"
        );
    }
}

/// Every string in `v` longer than 40 characters that looks like hex or base64url: a full hash or
/// a secret would be one.
fn long_opaque_strings(v: &Value, out: &mut Vec<String>) {
    let opaque = |s: &str| {
        s.len() >= 40
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    match v {
        Value::String(s) if opaque(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| long_opaque_strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| long_opaque_strings(v, out)),
        _ => {}
    }
}

fn assert_no_secret(view: &Value, secrets: &[&str]) {
    let text = view.to_string();
    for secret in secrets {
        assert!(!text.contains(secret), "a secret is in {view:#}");
    }
    let mut opaque = Vec::new();
    long_opaque_strings(view, &mut opaque);
    assert_eq!(opaque, Vec::<String>::new(), "{view:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_shows_the_callers_own_session_and_no_secret() {
    let app = TestApp::spawn(Backend::Memory).await;
    let alice = app.user_with_session("alice").await;
    let bob = app.user_with_session("bob").await;
    let r = app
        .as_browser(&alice, Method::GET, "/playground/held?model=session", false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["model"], "session");
    assert_eq!(view["live"], true);
    let session = &view["session"];
    assert_eq!(session["handle"], alice.login["session"]["id"]);
    assert_eq!(session["user_id"], alice.login["user"]["id"]);
    assert!(session["bytes"].as_u64().unwrap() > 100, "{view:#}");
    assert!(session["secret_hash"].as_str().unwrap().ends_with('…'));
    let cookie = alice.cookie.as_deref().unwrap();
    assert_eq!(
        view["credential"]["bytes"],
        COOKIE.len() + 1 + cookie.len(),
        "{view:#}"
    );
    assert_no_secret(&view, &[cookie, &alice.csrf]);
    let text = view.to_string();
    for other in [
        bob.cookie.as_deref().unwrap(),
        bob.login["session"]["id"].as_str().unwrap(),
        bob.login["user"]["id"].as_str().unwrap(),
        "bob",
    ] {
        assert!(
            !text.contains(other),
            "bob's data in alice's view: {view:#}"
        );
    }
    // After logout, nothing: the old cookie is refused.
    let out = app
        .as_browser(&alice, Method::DELETE, "/v1/session", true)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let r = app
        .as_browser(&alice, Method::GET, "/playground/held?model=session", false)
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
}

async fn token_login(app: &TestApp, username: &str) -> Value {
    let r = app
        .request(Method::POST, "/v1/token")
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_shows_the_token_family_and_after_revoke_its_denylist_entry() {
    let app = TestApp::spawn(Backend::Memory).await;
    for user in ["alice", "bob"] {
        assert_eq!(
            app.register(user, PASSWORD).await.status(),
            StatusCode::CREATED
        );
    }
    let alice = token_login(&app, "alice").await;
    let bob = token_login(&app, "bob").await;
    let access = alice["access_token"].as_str().unwrap();
    let refresh = alice["refresh_token"].as_str().unwrap();
    let held = |token: String| {
        let rb = app
            .request(Method::GET, "/playground/held?model=token")
            .bearer_auth(token);
        async move {
            let r = rb.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }
    };
    let view = held(access.to_owned()).await;
    assert_eq!(view["model"], "token");
    assert_eq!(view["live"], true);
    assert_eq!(
        view["credential"]["bytes"],
        "authorization: Bearer ".len() + access.len()
    );
    let family = view["family"]["id"].as_str().unwrap().to_owned();
    assert!(family.starts_with("fam_"), "{view:#}");
    assert_eq!(view["denylist"]["entries"], json!([]));
    assert!(view["family"]["bytes"].as_u64().unwrap() > 50);
    assert_no_secret(
        &view,
        &[access, refresh, bob["access_token"].as_str().unwrap()],
    );
    let bob_view = held(bob["access_token"].as_str().unwrap().to_owned()).await;
    assert_ne!(bob_view["family"]["id"], family);

    // Revoked: the same token still shows, without client details, what refuses it now.
    let r = app
        .request(Method::POST, "/v1/token/revoke")
        .form(&[("token", refresh)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let me = app
        .request(Method::GET, "/v1/me")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    let view = held(access.to_owned()).await;
    assert_eq!(view["live"], false);
    assert!(view["family"]["revoked_at"].is_string(), "{view:#}");
    assert!(view["family"].get("ip").is_none(), "{view:#}");
    assert!(view["family"].get("user_agent").is_none(), "{view:#}");
    let entries = view["denylist"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{view:#}");
    assert_eq!(entries[0]["kind"], "family (fid)");
    assert_eq!(entries[0]["refuses"], family.as_str());
    assert!(entries[0]["bytes"].as_u64().unwrap() > 8);
    assert_no_secret(&view, &[access, refresh]);
    // Bob's login is untouched and still his own.
    let bob_view = held(bob["access_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(bob_view["live"], true);
    assert_eq!(bob_view["denylist"]["entries"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_shows_the_hybrid_login_and_after_logout_needs_its_csrf_token() {
    let app = TestApp::spawn(Backend::Memory).await;
    for user in ["alice", "bob"] {
        assert_eq!(
            app.register(user, PASSWORD).await.status(),
            StatusCode::CREATED
        );
    }
    let app = &app;
    let login = |user: &'static str| async move {
        let r = app
            .request(Method::POST, "/v1/hybrid/login")
            .json(&json!({"username": user, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let cookies: Vec<String> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .filter(|c| c.starts_with("__Host-tessera-at=") || c.starts_with("__Host-tessera-rt="))
            .collect();
        let body: Value = r.json().await.unwrap();
        (
            cookies.join("; "),
            body["csrf_token"].as_str().unwrap().to_owned(),
        )
    };
    let (alice_cookies, alice_csrf) = login("alice").await;
    let (bob_cookies, bob_csrf) = login("bob").await;
    let r = app
        .request(Method::GET, "/playground/held?model=hybrid")
        .header("cookie", &alice_cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["model"], "hybrid");
    let family = view["family"]["id"].as_str().unwrap().to_owned();
    let secrets: Vec<&str> = alice_cookies
        .split("; ")
        .map(|c| c.split_once('=').unwrap().1)
        .chain([alice_csrf.as_str()])
        .collect();
    assert_no_secret(&view, &secrets);

    let out = app
        .request(Method::DELETE, "/v1/hybrid/session")
        .header("cookie", &alice_cookies)
        .header("x-csrf-token", &alice_csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let after = |csrf: String| {
        app.request(
            Method::GET,
            &format!("/playground/held?model=hybrid&family={family}"),
        )
        .header("x-csrf-token", csrf)
        .send()
    };
    // Bob's CSRF token does not open alice's login; neither do his cookies.
    problem(
        after(bob_csrf.clone()).await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let r = app
        .request(
            Method::GET,
            &format!("/playground/held?model=hybrid&family={family}"),
        )
        .header("cookie", &bob_cookies)
        .send()
        .await
        .unwrap();
    let bobs: Value = r.json().await.unwrap();
    assert_ne!(bobs["family"]["id"], family.as_str(), "{bobs:#}");
    // Alice's own CSRF token shows what now refuses her ended login.
    let r = after(alice_csrf.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["live"], false);
    assert_eq!(view["family"]["id"], family.as_str());
    assert!(view["family"].get("ip").is_none());
    let entries = view["denylist"]["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["refuses"] == family.as_str()),
        "{view:#}"
    );
    assert_no_secret(&view, &secrets);
}

/// Two `Authorization` headers are refused by `held` as by every bearer route, also for a
/// revoked token (the view of a token that now refuses it reads the header the same way; found
/// by a black-box review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_reads_the_bearer_header_as_every_route_does() {
    let app = TestApp::spawn(Backend::Memory).await;
    for user in ["alice", "bob"] {
        assert_eq!(
            app.register(user, PASSWORD).await.status(),
            StatusCode::CREATED
        );
    }
    let alice = token_login(&app, "alice").await;
    let bob = token_login(&app, "bob").await;
    let (a, b) = (
        alice["access_token"].as_str().unwrap(),
        bob["access_token"].as_str().unwrap(),
    );
    let r = app
        .request(Method::GET, "/playground/held?model=token")
        .header("authorization", format!("Bearer {a}"))
        .header("authorization", format!("Bearer {b}"))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    // Alice's token revoked: alone it still shows what refuses it, beside a second header not.
    let revoke = app
        .request(Method::POST, "/v1/token/revoke")
        .form(&[("token", a), ("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap();
    assert!(revoke.status().is_success());
    let alone = app
        .request(Method::GET, "/playground/held?model=token")
        .bearer_auth(a)
        .send()
        .await
        .unwrap();
    assert_eq!(alone.status(), StatusCode::OK);
    let r = app
        .request(Method::GET, "/playground/held?model=token")
        .header("authorization", format!("Bearer {a}"))
        .header("authorization", format!("Bearer {b}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// The attack log keeps at most a couple of hundred bytes of what a client chose (path, origin,
/// Sec-Fetch-Site), and recording a request never changes its answer, however large.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attack_log_keeps_short_fields_and_whole_answers() {
    let attacker = "http://127.0.0.1:9";
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options {
            http: HttpConfig {
                playground: Some(tessera_http::PlaygroundConfig {
                    attacker_origin: Some(attacker.into()),
                }),
                ..HttpConfig::default()
            },
            ..Options::default()
        },
    )
    .await;
    let long = "A".repeat(30_000);
    let r = app
        .request(Method::GET, &format!("/v1/{long}"))
        .header("origin", attacker)
        .header("sec-fetch-site", &long)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A problem document larger than the recorder reads: passed on whole.
    let body = format!("{{\"{}\": 1}}", "B".repeat(70_000));
    let direct = app
        .request(Method::POST, "/v1/users")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let (status, direct) = (direct.status(), direct.text().await.unwrap());
    let recorded = app
        .request(Method::POST, "/v1/users")
        .header("content-type", "application/json")
        .header("origin", attacker)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(recorded.status(), status);
    assert_eq!(recorded.text().await.unwrap(), direct);
    let log: Value = app
        .request(Method::GET, "/playground/attacks")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let requests = log["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2, "{log}");
    for record in requests {
        for field in ["path", "origin", "sec_fetch_site"] {
            if let Some(text) = record[field].as_str() {
                assert!(text.len() <= 210, "{field}: {} bytes", text.len());
            }
        }
    }
}
