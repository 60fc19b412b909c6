//! The login models in a real headless Chromium, with two sites served by the test:
//! `http://localhost:PORT` (the app and its playground page) and an attacker on
//! `http://127.0.0.1:PORT2` (another site). The attacker's pages are also opened as
//! `http://localhost:PORT2`: another origin of the same site, to which the browser does send the
//! victim's cookies, so the server's own defences (Origin and CSRF token) are what stops it.
//!
//! - The playground logs in, calls `/v1/me` and logs out with each model.
//! - `document.cookie` never shows a session, access or refresh token, while WebDriver shows the
//!   cookies exist (HttpOnly, Secure, SameSite, Path as Chromium stored them).
//! - The attacker's auto-submitting forms and credentialed fetches change nothing: same session,
//!   same hybrid login, same session data, same password, no login ended, no security event.
//! - The attacker's login forms do not log the browser into the attacker's account.
//!
//! - The playground's own demonstrations, with its attacker page on `http://127.0.0.1:PORT3`: the
//!   cross-site form and fetches are refused for every model (session and hybrid: the browser
//!   withheld the SameSite cookies and the server answered 401; token: there is no credential to
//!   attach); the injected script reads the token in the token model, and the attacker's server
//!   uses it (200), but reads no cookie in the session and hybrid models (the attacker's replay
//!   gets 401) while it can still call the server from inside the page. "What the server holds"
//!   shows the session record, the refresh families and, after a revoke or logout, the denylist
//!   entries. With `TESSERA_UPDATE_SCREENSHOT=1` the page is saved to `docs/playground.png`.
//!
//! Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian's `chromium`, `chromium-driver`);
//! fails when they are missing.

mod common;
mod webdriver;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use common::{Backend, COOKIE, Options, PASSWORD, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_http::{HttpConfig, PlaygroundConfig};
use webdriver::Chromium;

const ACCESS_COOKIE: &str = "__Host-tessera-at";
const REFRESH_COOKIE: &str = "__Host-tessera-rt";
const VICTIM: &str = "victim";
const ATTACKER: &str = "mallory";
/// Contains `=`, so a `text/plain` form can carry it inside crafted JSON (see `text_plain_json`).
const ATTACKER_PASSWORD: &str = "mallory=owns this";
const NEW_PASSWORD: &str = "changed=by mallory";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_and_an_attacker_site_in_headless_chromium() {
    let started = Instant::now();
    // The playground's own attacker page, on another site (127.0.0.1; the app is localhost).
    let attacker_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let attacker_origin = format!("http://{}", attacker_listener.local_addr().unwrap());
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options {
            http: HttpConfig {
                playground: Some(PlaygroundConfig {
                    attacker_origin: Some(attacker_origin.clone()),
                }),
                ..HttpConfig::default()
            },
            ..Options::default()
        },
    )
    .await;
    let attacker_page = tessera_http::attacker_router(app.origin.clone(), app.addr);
    tokio::spawn(async move { axum::serve(attacker_listener, attacker_page).await });
    let attacker = AttackerSite::start(&app.origin).await;
    let chromium = Chromium::start().await;
    let page = AppPage {
        chromium: &chromium,
        app: &app,
        secrets: RefCell::default(),
    };
    the_playground_logs_in_and_out_with_every_model(&page).await;
    cross_site_forms_and_fetches_change_nothing(&page, &attacker).await;
    login_csrf_logs_nobody_in(&page, &attacker).await;
    the_playground_runs_the_attacks(&page, &attacker_origin).await;
    eprintln!("browser tests took {:.1?}", started.elapsed());
}

/// Test 1 and 2: the app's own page, each model in turn. After every click, `act` also checks
/// that script in the page sees no token.
async fn the_playground_logs_in_and_out_with_every_model(page: &AppPage<'_>) {
    let (c, app) = (page.chromium, page.app);
    page.open().await;
    page.no_token_visible("fresh page").await;
    c.fill("#username", "alice").await;
    c.fill("#password", PASSWORD).await;
    assert_eq!(page.act("register").await, "POST /v1/users → 201");

    // Session model.
    assert_eq!(
        page.act("session-login").await,
        "POST /v1/session/login → 200"
    );
    let cookies = c.cookies().await;
    let session = named(&cookies, COOKIE).expect("the session cookie is stored");
    assert_stored_as(session, "Lax", "/");
    let session_secret = value_of(session);
    assert_eq!(session_secret.len(), 43, "{session}");
    assert_eq!(page.act("session-me").await, "GET /v1/me → 200");
    assert_eq!(c.text("#whoami").await, "alice (session)");
    assert_eq!(page.act("session-logout").await, "DELETE /v1/session → 204");
    assert_eq!(tessera_cookies(&c.cookies().await), Vec::<String>::new());
    assert_eq!(page.act("session-me").await, "GET /v1/me → 401");
    assert_eq!(c.text("#whoami").await, "nobody");
    // The server ended the session too: its id no longer works from anywhere.
    let replay = app
        .request(Method::GET, "/v1/session")
        .header("cookie", format!("{COOKIE}={session_secret}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);

    // Hybrid model.
    assert_eq!(
        page.act("hybrid-login").await,
        "POST /v1/hybrid/login → 200"
    );
    let cookies = c.cookies().await;
    let access = named(&cookies, ACCESS_COOKIE).expect("the access cookie is stored");
    assert_stored_as(access, "Lax", "/");
    assert_eq!(value_of(access).split('.').count(), 3, "a JWT: {access}");
    // A `__Host-` cookie too: no other site can set or overwrite it.
    let refresh = named(&cookies, REFRESH_COOKIE).expect("the refresh cookie is stored");
    assert_stored_as(refresh, "Strict", "/");
    let (access_1, refresh_1) = (value_of(access), value_of(refresh));
    page.no_token_visible("hybrid login").await;
    assert_eq!(page.act("hybrid-me").await, "GET /v1/me → 200");
    assert_eq!(c.text("#whoami").await, "alice (hybrid)");
    assert_eq!(
        page.act("hybrid-refresh").await,
        "POST /v1/hybrid/refresh → 200"
    );
    let access_2 = value_of(named(&c.cookies().await, ACCESS_COOKIE).expect("access cookie"));
    let refresh_2 =
        value_of(named(&page.cookies_at_hybrid().await, REFRESH_COOKIE).expect("refresh cookie"));
    assert_ne!(access_2, access_1, "refresh replaces the access cookie");
    assert_ne!(refresh_2, refresh_1, "refresh rotates the refresh cookie");
    page.no_token_visible("hybrid refresh").await;
    assert_eq!(page.act("hybrid-me").await, "GET /v1/me → 200");
    assert_eq!(c.text("#whoami").await, "alice (hybrid)");
    assert_eq!(
        page.act("hybrid-logout").await,
        "DELETE /v1/hybrid/session → 204"
    );
    assert_eq!(tessera_cookies(&c.cookies().await), Vec::<String>::new());
    assert_eq!(
        tessera_cookies(&page.cookies_at_hybrid().await),
        Vec::<String>::new()
    );
    assert_eq!(page.act("hybrid-me").await, "GET /v1/me → 401");
    assert_eq!(c.text("#whoami").await, "nobody");
    // Logout revoked the login: its last access token is refused wherever it comes from.
    let replay = app
        .request(Method::GET, "/v1/me")
        .header("cookie", format!("{ACCESS_COOKIE}={access_2}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);

    // Token model: the tokens live in the page's memory, never in a cookie.
    assert_eq!(page.act("token-login").await, "POST /v1/token → 200");
    assert_eq!(tessera_cookies(&c.cookies().await), Vec::<String>::new());
    assert_eq!(page.act("token-me").await, "GET /v1/me → 200");
    assert_eq!(c.text("#whoami").await, "alice (token)");
    assert_eq!(
        page.act("token-refresh").await,
        "POST /v1/token/refresh → 200"
    );
    assert_eq!(page.act("token-me").await, "GET /v1/me → 200");
    assert_eq!(c.text("#whoami").await, "alice (token)");
    assert_eq!(
        page.act("token-revoke").await,
        "POST /v1/token/revoke → 200"
    );
    assert_eq!(page.act("token-me").await, "GET /v1/me → 401");
    assert_eq!(c.text("#whoami").await, "nobody");
    assert_eq!(tessera_cookies(&c.cookies().await), Vec::<String>::new());
    // Every cookie value the browser held was seen, and none showed in the page.
    assert!(page.secrets.borrow().len() >= 5, "{:?}", page.secrets);
}

/// Test 3 (and 4 with the victim logged in): the attacker's forms and fetches change nothing.
async fn cross_site_forms_and_fetches_change_nothing(page: &AppPage<'_>, attacker: &AttackerSite) {
    let (c, app) = (page.chromium, page.app);
    assert_eq!(
        app.register(ATTACKER, ATTACKER_PASSWORD).await.status(),
        StatusCode::CREATED
    );
    // The victim logs in with the session and the hybrid model, in this browser.
    page.open().await;
    c.fill("#username", VICTIM).await;
    c.fill("#password", PASSWORD).await;
    assert_eq!(page.act("register").await, "POST /v1/users → 201");
    assert_eq!(
        page.act("session-login").await,
        "POST /v1/session/login → 200"
    );
    assert_eq!(
        page.act("hybrid-login").await,
        "POST /v1/hybrid/login → 200"
    );
    // …and on another device, once with a session and once with the token model.
    let other_device = app.login(VICTIM, PASSWORD).await;
    let token_login = app
        .request(Method::POST, "/v1/token")
        .json(&json!({"username": VICTIM, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(token_login.status(), StatusCode::OK);
    let token_login: Value = token_login.json().await.unwrap();
    let bearer = token_login["access_token"].as_str().unwrap().to_owned();
    // Session data, set by the app's own page with the session's CSRF token.
    let (status, body) = page.fetch("GET", "/v1/session/csrf", json!({}), None).await;
    assert_eq!(status, 200, "{body}");
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    let (status, body) = page
        .fetch(
            "PATCH",
            "/v1/session/data",
            json!({"content-type": "application/merge-patch+json", "x-csrf-token": csrf}),
            Some(r#"{"cart": ["a book"], "theme": "dark"}"#),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let before = page.victim_state().await;
    assert_eq!(before.me, "victim (hybrid)");
    assert_eq!(
        before.session_data,
        json!({"cart": ["a book"], "theme": "dark"})
    );
    assert_eq!(before.logins.len(), 4, "{before:?}");
    let last_event = newest_event_id(app).await;

    c.network_events().await; // Only what the attacker's pages make, from here.
    for origin in [attacker.cross_site(), attacker.same_site()] {
        for form in attacker.forms.iter().map(|f| f.name) {
            submit_attacker_form(c, app, &origin, form).await;
        }
        run_attacker_fetches(c, &origin).await;
    }
    judge_attacker_requests(&c.network_events().await, app, attacker, true);

    page.open().await;
    let after = page.victim_state().await;
    assert_eq!(
        after, before,
        "the attacker changed the victim's logins, session data or cookies"
    );
    assert_eq!(events_since(app, last_event).await, Vec::<String>::new());
    // The other device's logins were not ended.
    let other = app
        .as_browser(&other_device, Method::GET, "/v1/session", false)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    let me = app
        .request(Method::GET, "/v1/me")
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    // The password did not change.
    assert_eq!(
        app.login_response(VICTIM, NEW_PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login_response(VICTIM, PASSWORD).await.status(),
        StatusCode::OK
    );
}

/// Test 4 with nobody logged in: the attacker's login forms and fetches log nobody in.
async fn login_csrf_logs_nobody_in(page: &AppPage<'_>, attacker: &AttackerSite) {
    let (c, app) = (page.chromium, page.app);
    // The victim logs out of both models from the app's own page.
    page.open().await;
    let state = page.victim_state().await;
    let (status, body) = page
        .fetch(
            "DELETE",
            "/v1/session",
            json!({"x-csrf-token": state.session_csrf}),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = page
        .fetch(
            "DELETE",
            "/v1/hybrid/session",
            json!({"x-csrf-token": state.hybrid_csrf}),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    page.nobody_logged_in("after logout").await;

    let last_event = newest_event_id(app).await;
    c.network_events().await;
    for origin in [attacker.cross_site(), attacker.same_site()] {
        for form in attacker.forms.iter().filter(|f| f.login).map(|f| f.name) {
            submit_attacker_form(c, app, &origin, form).await;
        }
        run_attacker_fetches(c, &origin).await;
    }
    judge_attacker_requests(&c.network_events().await, app, attacker, false);

    page.open().await;
    page.nobody_logged_in("after the attacker's login attempts")
        .await;
    assert_eq!(page.act("session-me").await, "GET /v1/me → 401");
    assert_eq!(c.text("#whoami").await, "nobody");
    assert_eq!(events_since(app, last_event).await, Vec::<String>::new());

    // The attacker's credentials were good: the same login from the app's own page works.
    c.fill("#username", ATTACKER).await;
    c.fill("#password", ATTACKER_PASSWORD).await;
    assert_eq!(
        page.act("session-login").await,
        "POST /v1/session/login → 200"
    );
    assert_eq!(page.act("session-me").await, "GET /v1/me → 200");
    assert_eq!(c.text("#whoami").await, "mallory (session)");
}

/// The playground's own demonstrations, per model, with its attacker page at `attacker_origin`.
async fn the_playground_runs_the_attacks(page: &AppPage<'_>, attacker_origin: &str) {
    let c = page.chromium;
    c.set_window_size(1300, 3000).await;
    page.open().await;
    let where_ = c.text("#attacker-where").await;
    assert!(where_.contains(attacker_origin), "{where_}");
    assert!(where_.contains("another site"), "{where_}");
    c.fill("#username", "carol").await;
    c.fill("#password", PASSWORD).await;
    assert_eq!(page.act("register").await, "POST /v1/users → 201");
    assert_eq!(
        page.act("session-login").await,
        "POST /v1/session/login → 200"
    );
    assert_eq!(
        page.act("hybrid-login").await,
        "POST /v1/hybrid/login → 200"
    );
    assert_eq!(page.act("token-login").await, "POST /v1/token → 200");

    // What the server holds, per model, while logged in.
    let session = page.held("session").await;
    assert!(session.contains("Session record: "), "{session}");
    assert!(session.contains("cookie __Host-tessera: "), "{session}");
    let hybrid = page.held("hybrid").await;
    assert!(hybrid.contains("Refresh family: "), "{hybrid}");
    assert!(hybrid.contains("(hybrid)"), "{hybrid}");
    assert!(hybrid.contains("Denylist: no entry"), "{hybrid}");
    assert!(hybrid.contains("__Host-tessera-rt (Path=/"), "{hybrid}");
    let token = page.held("token").await;
    assert!(token.contains("Authorization header: "), "{token}");
    assert!(token.contains("(token)"), "{token}");

    // The cross-site form and fetches: refused for every model, and why.
    c.network_events().await;
    for model in ["session", "hybrid", "token"] {
        let out = page
            .demo(&format!("{model}-csrf"), &format!("#csrf-{model}"))
            .await;
        eprintln!("cross-site, {model}: {out}");
        assert_eq!(out["outcome"], "refused", "{model}: {out}");
        // No request the attacker made carried a credential; the server saw them and refused.
        assert_eq!(out["carried"], "0", "{model}: {out}");
        let received: u32 = out["received"].as_str().unwrap().parse().unwrap();
        assert!(received >= 2, "{model}: {out}");
        assert!(
            out["reasons"].as_str().unwrap().contains("unauthenticated"),
            "{model}: {out}"
        );
        // The browser marked every one cross-site (127.0.0.1 is not localhost's site).
        assert_eq!(out["sites"], "cross-site", "{model}: {out}");
        let text = out["text"].as_str().unwrap();
        assert!(text.contains("still alive, unchanged"), "{model}: {text}");
        // The form went out, without a cookie, and was refused.
        assert!(
            text.contains(
                "Server received POST /v1/account/password (Sec-Fetch-Site: cross-site, \
                 no credential) → 401 unauthenticated"
            ),
            "{model}: {text}"
        );
        assert!(text.contains("TypeError"), "CORS refused the fetch: {text}");
        if model == "token" {
            assert!(text.contains("no credential to attach"), "{text}");
        } else {
            assert!(text.contains("withheld your cookies"), "{text}");
        }
    }
    // The injected script: steals the token, not the cookies.
    let out = page.demo("token-xss", "#xss-token").await;
    eprintln!("injected script, token: {out}");
    assert_eq!(out["outcome"], "succeeded", "{out}");
    assert_eq!(out["stolen"], "true", "{out}");
    assert_eq!(
        out["replay"], "200",
        "the stolen token works elsewhere: {out}"
    );
    let text = out["text"].as_str().unwrap();
    assert!(
        text.contains("blocked ("),
        "CSP stops a direct fetch: {text}"
    );
    assert!(text.contains("carol, token"), "{text}");
    for model in ["session", "hybrid"] {
        let out = page
            .demo(&format!("{model}-xss"), &format!("#xss-{model}"))
            .await;
        eprintln!("injected script, {model}: {out}");
        assert_eq!(out["outcome"], "refused", "{model}: {out}");
        assert_eq!(out["stolen"], "false", "{model}: {out}");
        assert_eq!(out["cookie"], "", "{model}: {out}");
        assert_eq!(out["replay"], "401", "{model}: {out}");
        // …but from inside the page, the script is the user.
        assert!(
            out["sameOrigin"]
                .as_str()
                .unwrap()
                .starts_with(&format!("200 (carol, {model})")),
            "{model}: {out}"
        );
    }
    page.no_token_visible("after the demonstrations").await;

    // After a revoke and logouts: the denylist entries, and the session record gone.
    assert_eq!(
        page.act("token-revoke").await,
        "POST /v1/token/revoke → 200"
    );
    let token = page.wait_held("token", "Denylist entry").await;
    assert!(token.contains("family (fid)"), "{token}");
    assert!(token.contains("This login has ended"), "{token}");
    assert_eq!(
        page.act("hybrid-logout").await,
        "DELETE /v1/hybrid/session → 204"
    );
    let hybrid = page.wait_held("hybrid", "Denylist entry").await;
    assert!(hybrid.contains("revoked"), "{hybrid}");
    assert_eq!(page.act("session-logout").await, "DELETE /v1/session → 204");
    page.wait_held("session", "deleted the session record")
        .await;
    // Logged in again with a session, for the screenshot to show a live record too.
    assert_eq!(
        page.act("session-login").await,
        "POST /v1/session/login → 200"
    );
    page.wait_held("session", "Session record: ").await;

    if std::env::var_os("TESSERA_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        let png = c.screenshot().await;
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/playground.png");
        std::fs::write(&path, png).unwrap();
        eprintln!("saved {}", path.display());
    }
}

/// The playground at `http://localhost:PORT/`, driven as a user would.
struct AppPage<'a> {
    chromium: &'a Chromium,
    app: &'a TestApp,
    /// Every value of the app's cookies the browser has held: none may ever show in the page.
    secrets: RefCell<BTreeSet<String>>,
}

/// What the victim's browser is logged in as, as the app's own page sees it.
#[derive(Debug, PartialEq)]
struct VictimState {
    me: String,
    session_id: String,
    session_csrf: String,
    session_data: Value,
    hybrid_login: String,
    hybrid_csrf: String,
    /// Ids from `GET /v1/sessions`: every login of the victim, on every device.
    logins: BTreeSet<String>,
    /// Name and value of every cookie sent to `/` or to `/v1/hybrid/session`.
    cookies: BTreeMap<String, String>,
}

impl AppPage<'_> {
    async fn open(&self) {
        self.chromium.goto(&format!("{}/", self.app.origin)).await;
        self.chromium
            .wait_for(
                "the playground",
                "return document.readyState === 'complete' && !!document.getElementById('status')",
                json!([]),
            )
            .await;
    }

    /// Clicks a playground button and waits for its request to be answered; returns `#status`.
    async fn act(&self, action: &str) -> String {
        let c = self.chromium;
        let count = "return document.querySelectorAll('#log li').length";
        let before = c.execute(count, json!([])).await;
        let selector = if action == "register" {
            "#register".to_owned()
        } else {
            format!("button[data-action=\"{action}\"]")
        };
        c.click(&selector).await;
        c.wait_for(
            &format!("the answer to {action}"),
            "return document.querySelectorAll('#log li').length > arguments[0]",
            json!([before]),
        )
        .await;
        let status = c.text("#status").await;
        self.remember(&c.cookies().await);
        self.no_token_visible(&format!("after {action} ({status})"))
            .await;
        status
    }

    fn remember(&self, cookies: &[Value]) {
        let mut secrets = self.secrets.borrow_mut();
        for c in cookies {
            if c["name"].as_str().is_some_and(|n| n.contains("tessera")) {
                secrets.insert(value_of(c));
            }
        }
    }

    /// Clicks "What the server holds" for `model` and returns the panel's text.
    async fn held(&self, model: &str) -> String {
        let c = self.chromium;
        let panel = format!("held-{model}");
        let before = c
            .execute(
                "return document.getElementById(arguments[0]).dataset.run || '0'",
                json!([panel]),
            )
            .await;
        c.click(&format!("button[data-action=\"{model}-held\"]"))
            .await;
        c.wait_for(
            &format!("the server's records for {model}"),
            "return (document.getElementById(arguments[0]).dataset.run || '0') !== arguments[1]",
            json!([panel, before]),
        )
        .await;
        c.text(&format!("#{panel}")).await
    }

    /// Waits until the held panel of `model` (refreshed by the page itself) shows `text`.
    async fn wait_held(&self, model: &str, text: &str) -> String {
        let v = self
            .chromium
            .wait_for(
                &format!("{text:?} in the {model} panel"),
                "const t = document.getElementById(arguments[0]).textContent;
                 return t.includes(arguments[1]) ? t : null",
                json!([format!("held-{model}"), text]),
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Runs one of the playground's demonstrations and returns its outcome element's data and text.
    async fn demo(&self, action: &str, outcome: &str) -> Value {
        let c = self.chromium;
        c.execute(
            "const el = document.querySelector(arguments[0]); delete el.dataset.outcome;",
            json!([outcome]),
        )
        .await;
        c.click(&format!("button[data-action=\"{action}\"]")).await;
        let deadline = Instant::now() + std::time::Duration::from_secs(40);
        loop {
            let v = c
                .execute(
                    "const el = document.querySelector(arguments[0]);
                     const o = el.dataset.outcome;
                     return o && o !== 'running' ? {...el.dataset, text: el.textContent} : null;",
                    json!([outcome]),
                )
                .await;
            if !v.is_null() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {action}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The cookies the browser sends to `/v1/hybrid/session`.
    async fn cookies_at_hybrid(&self) -> Vec<Value> {
        let cookies = self
            .chromium
            .cookies_at(&format!("{}/v1/hybrid/session", self.app.origin))
            .await;
        self.remember(&cookies);
        cookies
    }

    /// A `fetch` made by the app's own page (same origin, its cookies).
    async fn fetch(
        &self,
        method: &str,
        path: &str,
        headers: Value,
        body: Option<&str>,
    ) -> (u64, Value) {
        let r = self
            .chromium
            .execute_async(
                r#"const [method, path, headers, body, done] = arguments;
                fetch(path, {method, headers, body: body ?? undefined, credentials: "same-origin"})
                  .then(async (r) => {
                    const text = await r.text();
                    let parsed = text;
                    try { parsed = text ? JSON.parse(text) : null; } catch (_) {}
                    done({status: r.status, body: parsed});
                  })
                  .catch((e) => done({status: 0, body: String(e)}));"#,
                json!([method, path, headers, body]),
            )
            .await;
        (r["status"].as_u64().unwrap_or(0), r["body"].clone())
    }

    async fn victim_state(&self) -> VictimState {
        let get = |path: &'static str| async move {
            let (status, body) = self.fetch("GET", path, json!({}), None).await;
            assert_eq!(status, 200, "GET {path}: {body}");
            body
        };
        let me = get("/v1/me").await;
        let session = get("/v1/session").await;
        let session_data = get("/v1/session/data").await;
        let hybrid = get("/v1/hybrid/session").await;
        let logins = get("/v1/sessions").await;
        let mut cookies = BTreeMap::new();
        let at_root = self.chromium.cookies().await;
        let at_hybrid = self.cookies_at_hybrid().await;
        for c in at_root.iter().chain(&at_hybrid) {
            cookies.insert(c["name"].as_str().unwrap().to_owned(), value_of(c));
        }
        VictimState {
            me: format!("{} ({})", me["user"]["username"], me["auth"]["model"]).replace('"', ""),
            session_id: session["session"]["id"].as_str().unwrap().to_owned(),
            session_csrf: session["csrf_token"].as_str().unwrap().to_owned(),
            session_data,
            hybrid_login: hybrid["login_id"].as_str().unwrap().to_owned(),
            hybrid_csrf: hybrid["csrf_token"].as_str().unwrap().to_owned(),
            logins: logins
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["id"].as_str().unwrap().to_owned())
                .collect(),
            cookies,
        }
    }

    /// No login of any model in this browser: no cookie, and every way of asking says so.
    async fn nobody_logged_in(&self, step: &str) {
        let c = self.chromium;
        assert_eq!(
            tessera_cookies(&c.cookies().await),
            Vec::<String>::new(),
            "{step}"
        );
        assert_eq!(
            tessera_cookies(&self.cookies_at_hybrid().await),
            Vec::<String>::new(),
            "{step}"
        );
        for path in ["/v1/me", "/v1/session", "/v1/hybrid/session"] {
            let (status, body) = self.fetch("GET", path, json!({}), None).await;
            assert_eq!(status, 401, "{step}: GET {path} → {body}");
        }
    }

    /// Script in the page sees no token: `document.cookie` (read directly and as the playground
    /// shows it) is empty, no cookie value appears anywhere in the page, nothing is in storage.
    async fn no_token_visible(&self, step: &str) {
        let seen = self
            .chromium
            .execute(
                "const shown = document.getElementById('cookies');
                return {
                  cookie: document.cookie,
                  shown: shown ? shown.textContent : null,
                  html: document.documentElement.outerHTML,
                  stored: localStorage.length + sessionStorage.length,
                };",
                json!([]),
            )
            .await;
        assert_eq!(seen["cookie"], "", "{step}: document.cookie shows {seen:#}");
        assert_eq!(seen["shown"], "\"\"", "{step}: #cookies shows {seen:#}");
        assert_eq!(seen["stored"], 0, "{step}: web storage is not empty");
        let html = seen["html"].as_str().unwrap();
        for secret in self.secrets.borrow().iter() {
            assert!(
                !html.contains(secret.as_str()),
                "{step}: a cookie's value is in the page"
            );
        }
    }
}

/// Opens one of the attacker's auto-submitting forms and waits for the app's answer, which the
/// browser shows as the top-level page. The answer must be a refusal.
async fn submit_attacker_form(c: &Chromium, app: &TestApp, origin: &str, form: &str) {
    c.goto(&format!("{origin}/{form}")).await;
    let answer = c
        .wait_for(
            &format!("the app's answer to {origin}/{form}"),
            "return location.origin === arguments[0] && document.readyState === 'complete'
               && document.body ? document.body.innerText : null",
            json!([app.origin]),
        )
        .await;
    let answer = answer.as_str().unwrap_or_default();
    let problem: Value = serde_json::from_str(answer)
        .unwrap_or_else(|_| panic!("{origin}/{form}: the app answered {answer:?}"));
    let status = problem["status"].as_u64().unwrap_or(0);
    assert!(
        status >= 400,
        "{origin}/{form}: the app accepted the form: {answer}"
    );
    eprintln!("form  {origin}/{form} → {status} {}", problem["type"]);
}

/// Opens the attacker's fetch page and checks it could read nothing: every fetch failed or came
/// back opaque.
async fn run_attacker_fetches(c: &Chromium, origin: &str) {
    c.goto(&format!("{origin}/fetch")).await;
    let results = c
        .wait_for(
            &format!("the fetches of {origin}/fetch"),
            "return window.finished ? window.results : null",
            json!([]),
        )
        .await;
    let results = results.as_array().expect("a list of results");
    assert!(results.len() >= 15, "{results:?}");
    for r in results {
        eprintln!("fetch {origin}: {r}");
        let opaque = r["type"] == "opaque" && r["status"] == 0 && r["body"] == "";
        assert!(
            r.get("error").is_some() || opaque,
            "{origin}: the attacker's page could read the app's answer: {r}"
        );
    }
}

/// A request the browser sent to the app, from the DevTools network events.
#[derive(Debug, Default)]
struct Sent {
    method: String,
    url: String,
    /// Request headers as sent, names in lower case.
    headers: BTreeMap<String, String>,
    /// Cookies the browser had for the URL but did not send, with its reasons.
    withheld: Vec<String>,
    status: Option<u64>,
    response_headers: BTreeMap<String, String>,
    failure: Option<String>,
}

fn sent_requests(events: &[Value], origin: &str) -> Vec<Sent> {
    let mut order = Vec::new();
    let mut by_id: HashMap<String, Sent> = HashMap::new();
    let lower = |headers: &Value| -> BTreeMap<String, String> {
        headers
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.to_lowercase(), v.as_str().unwrap_or_default().to_owned()))
            .collect()
    };
    for event in events {
        let p = &event["params"];
        let Some(id) = p["requestId"].as_str() else {
            continue;
        };
        let sent = by_id.entry(id.to_owned()).or_insert_with(|| {
            order.push(id.to_owned());
            Sent::default()
        });
        match event["method"].as_str().unwrap_or_default() {
            "Network.requestWillBeSent" => {
                sent.method = p["request"]["method"].as_str().unwrap_or_default().into();
                sent.url = p["request"]["url"].as_str().unwrap_or_default().into();
            }
            "Network.requestWillBeSentExtraInfo" => {
                sent.headers = lower(&p["headers"]);
                for c in p["associatedCookies"].as_array().into_iter().flatten() {
                    let reasons: Vec<&str> = c["blockedReasons"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    if !reasons.is_empty() {
                        let name = c["cookie"]["name"].as_str().unwrap_or_default();
                        sent.withheld
                            .push(format!("{name} ({})", reasons.join(", ")));
                    }
                }
            }
            "Network.responseReceivedExtraInfo" => {
                sent.status = p["statusCode"].as_u64();
                sent.response_headers = lower(&p["headers"]);
            }
            "Network.responseReceived" if sent.status.is_none() => {
                sent.status = p["response"]["status"].as_u64();
            }
            "Network.loadingFailed" => {
                sent.failure = Some(format!(
                    "{} {}",
                    p["errorText"],
                    p.get("corsErrorStatus").unwrap_or(&Value::Null)
                ));
            }
            _ => {}
        }
    }
    let prefix = format!("{origin}/");
    order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .filter(|s| s.url.starts_with(&prefix) && !s.url.ends_with("/favicon.ico"))
        .collect()
}

/// What reached the app from the attacker's pages: every unsafe request was refused; nothing
/// from the other site carried a cookie of the app; and from the same-site origin the cookies did
/// go along (so the server's own checks were tested), when the victim was logged in.
fn judge_attacker_requests(
    events: &[Value],
    app: &TestApp,
    attacker: &AttackerSite,
    victim_logged_in: bool,
) {
    let requests = sent_requests(events, &app.origin);
    let (mut cross_site, mut same_site, mut withheld, mut carried) = (0, 0, 0, 0);
    for r in &requests {
        let site = r.headers.get("sec-fetch-site").map_or("?", String::as_str);
        let cookie = r.headers.get("cookie").cloned().unwrap_or_default();
        let cookie_names: Vec<&str> = cookie
            .split(';')
            .filter_map(|c| Some(c.split_once('=')?.0.trim()))
            .collect();
        let origin = r.headers.get("origin").map_or("", String::as_str);
        let content_type = r.headers.get("content-type").map_or("", String::as_str);
        eprintln!(
            "sent  {site:10} {origin:24} {} {} [{content_type}] → {:?} {} sent {cookie_names:?} withheld {:?}",
            r.method,
            &r.url[app.origin.len()..],
            r.status,
            r.failure.as_deref().unwrap_or(""),
            r.withheld,
        );
        if r.headers.is_empty() {
            // Stopped by the browser before it went out (its CORS preflight was refused).
            assert!(
                r.failure.is_some() && r.status.is_none(),
                "a request with no record of its headers: {r:?}"
            );
            continue;
        }
        let carries_ours = cookie.contains("tessera");
        match site {
            "cross-site" => {
                cross_site += 1;
                assert!(
                    !carries_ours,
                    "a cross-site request carried a cookie: {r:?}"
                );
                withheld += usize::from(r.withheld.iter().any(|w| w.contains("tessera")));
            }
            "same-site" => {
                same_site += 1;
                carried += usize::from(carries_ours);
            }
            other => panic!("a request to the app from {other:?} in the attacker's turn: {r:?}"),
        }
        let from = [attacker.cross_site(), attacker.same_site()];
        assert!(
            from.iter()
                .any(|o| r.headers.get("referer").is_some_and(|v| v.starts_with(o))),
            "a request not made by the attacker's pages: {r:?}"
        );
        if r.method == "OPTIONS" {
            // A preflight: the app must not allow the attacker's origin.
            assert!(
                !r.response_headers
                    .contains_key("access-control-allow-origin"),
                "the app allowed a cross-origin request: {r:?}"
            );
        } else if r.method != "GET" {
            assert!(
                r.status.is_none_or(|s| s >= 400),
                "the app accepted the attacker's {} {}: {r:?}",
                r.method,
                r.url
            );
        }
    }
    assert!(
        cross_site >= 10,
        "too few cross-site requests reached the app"
    );
    assert!(
        same_site >= 10,
        "too few same-site requests reached the app"
    );
    if victim_logged_in {
        assert!(
            withheld > 0,
            "no cross-site request had a cookie to withhold"
        );
        assert!(
            carried > 0,
            "no same-site request carried the victim's cookies"
        );
    }
}

/// The attacker: a site of its own serving auto-submitting forms and a page of credentialed
/// fetches aimed at the app.
struct AttackerSite {
    port: u16,
    forms: Vec<AttackForm>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

struct AttackForm {
    name: &'static str,
    action: &'static str,
    /// `text/plain` (a body that reads as JSON) or `application/x-www-form-urlencoded`.
    enctype: &'static str,
    fields: Vec<(String, String)>,
    /// A login form (login CSRF).
    login: bool,
}

impl AttackerSite {
    async fn start(app_origin: &str) -> Self {
        let attacker_login = json!({"username": ATTACKER, "password": ATTACKER_PASSWORD});
        let password_change = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
        let urlencoded = "application/x-www-form-urlencoded";
        let pairs = |v: &Value| -> Vec<(String, String)> {
            v.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect()
        };
        let form = |name, action, enctype, fields, login| AttackForm {
            name,
            action,
            enctype,
            fields,
            login,
        };
        let forms = vec![
            form(
                "form-session-login-json",
                "/v1/session/login",
                "text/plain",
                text_plain_json(&attacker_login),
                true,
            ),
            form(
                "form-session-login",
                "/v1/session/login",
                urlencoded,
                pairs(&attacker_login),
                true,
            ),
            form(
                "form-hybrid-login-json",
                "/v1/hybrid/login",
                "text/plain",
                text_plain_json(&attacker_login),
                true,
            ),
            form(
                "form-password-json",
                "/v1/account/password",
                "text/plain",
                text_plain_json(&password_change),
                false,
            ),
            form(
                "form-password",
                "/v1/account/password",
                urlencoded,
                pairs(&password_change),
                false,
            ),
            form(
                "form-hybrid-refresh",
                "/v1/hybrid/refresh",
                urlencoded,
                Vec::new(),
                false,
            ),
            form(
                "form-session-data",
                "/v1/session/data?_method=PATCH",
                "text/plain",
                text_plain_json(&json!({"cart": null, "theme": "pwned=yes"})),
                false,
            ),
            form(
                "form-logout",
                "/v1/session?_method=DELETE",
                urlencoded,
                vec![("_method".into(), "DELETE".into())],
                false,
            ),
            form(
                "form-end-other-logins",
                "/v1/sessions?_method=DELETE",
                urlencoded,
                vec![("_method".into(), "DELETE".into())],
                false,
            ),
        ];
        let mut pages: HashMap<String, String> = forms
            .iter()
            .map(|f| (f.name.to_owned(), form_page(app_origin, f)))
            .collect();
        pages.insert("fetch".into(), fetch_page(app_origin));
        let pages = Arc::new(pages);

        async fn page(
            State(pages): State<Arc<HashMap<String, String>>>,
            Path(name): Path<String>,
        ) -> Response {
            match pages.get(&name) {
                Some(html) => Html(html.clone()).into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
        let router = axum::Router::new()
            .route("/{name}", axum::routing::get(page))
            .with_state(pages);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            port,
            forms,
            _shutdown: tx,
        }
    }

    /// Another site than the app's (`127.0.0.1` is not `localhost`).
    fn cross_site(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The app's site (`localhost`), another origin (port): the browser sends it the app's cookies.
    fn same_site(&self) -> String {
        format!("http://localhost:{}", self.port)
    }
}

/// A `text/plain` form sends `name=value`: a name up to the first `=` inside a JSON string and a
/// value with the rest make the body that JSON.
fn text_plain_json(body: &Value) -> Vec<(String, String)> {
    let text = body.to_string();
    let (name, value) = text.split_once('=').expect("a '=' inside a string value");
    vec![(name.to_owned(), value.to_owned())]
}

fn attribute(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn form_page(app_origin: &str, form: &AttackForm) -> String {
    let inputs: String = form
        .fields
        .iter()
        .map(|(name, value)| {
            format!(
                r#"<input type="hidden" name="{}" value="{}">"#,
                attribute(name),
                attribute(value)
            )
        })
        .collect();
    format!(
        r#"<!doctype html><title>You won a prize</title>
<form method="POST" action="{}" enctype="{}">{inputs}</form>
<script>document.forms[0].submit();</script>"#,
        attribute(&format!("{app_origin}{}", form.action)),
        form.enctype,
    )
}

/// Credentialed fetches against the session, hybrid and account routes; each result records what
/// the attacker's script could observe.
fn fetch_page(app_origin: &str) -> String {
    let config = json!({
        "target": app_origin,
        "login": {"username": ATTACKER, "password": ATTACKER_PASSWORD},
        "change": {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    });
    format!(
        r#"<!doctype html><title>Cute cats</title><pre id="out"></pre>
<script>
const C = {config};
const text = (v) => JSON.stringify(v);
const blob = (v) => new Blob([text(v)], {{type: "application/json"}});
const attempts = [
  ["DELETE /v1/session", "/v1/session", {{method: "DELETE"}}],
  ["DELETE /v1/session no-cors", "/v1/session", {{method: "DELETE", mode: "no-cors"}}],
  ["PATCH /v1/session/data", "/v1/session/data", {{method: "PATCH",
    headers: {{"content-type": "application/merge-patch+json"}}, body: text({{cart: null}})}}],
  ["PATCH /v1/session/data no-cors", "/v1/session/data", {{method: "PATCH", mode: "no-cors",
    body: text({{cart: null}})}}],
  ["DELETE /v1/sessions", "/v1/sessions", {{method: "DELETE"}}],
  ["DELETE /v1/hybrid/session", "/v1/hybrid/session", {{method: "DELETE"}}],
  ["DELETE /v1/hybrid/session with a guessed CSRF token", "/v1/hybrid/session",
    {{method: "DELETE", headers: {{"x-csrf-token": "guess"}}}}],
  ["POST /v1/hybrid/refresh no-cors", "/v1/hybrid/refresh", {{method: "POST", mode: "no-cors"}}],
  ["POST /v1/hybrid/refresh with a guessed CSRF token", "/v1/hybrid/refresh",
    {{method: "POST", headers: {{"x-csrf-token": "guess"}}}}],
  ["POST /v1/account/password no-cors text", "/v1/account/password",
    {{method: "POST", mode: "no-cors", body: text(C.change)}}],
  ["POST /v1/account/password no-cors JSON blob", "/v1/account/password",
    {{method: "POST", mode: "no-cors", body: blob(C.change)}}],
  ["POST /v1/account/password JSON", "/v1/account/password", {{method: "POST",
    headers: {{"content-type": "application/json"}}, body: text(C.change)}}],
  ["POST /v1/session/login no-cors JSON blob", "/v1/session/login",
    {{method: "POST", mode: "no-cors", body: blob(C.login)}}],
  ["POST /v1/session/login no-cors text", "/v1/session/login",
    {{method: "POST", mode: "no-cors", body: text(C.login)}}],
  ["POST /v1/hybrid/login no-cors JSON blob", "/v1/hybrid/login",
    {{method: "POST", mode: "no-cors", body: blob(C.login)}}],
  ["POST /v1/session/login JSON", "/v1/session/login", {{method: "POST",
    headers: {{"content-type": "application/json"}}, body: text(C.login)}}],
  ["GET /v1/me", "/v1/me", {{}}],
  ["GET /v1/session/csrf", "/v1/session/csrf", {{}}],
  ["GET /v1/session/data", "/v1/session/data", {{}}],
  ["GET /v1/hybrid/session", "/v1/hybrid/session", {{}}],
  ["GET /v1/sessions", "/v1/sessions", {{}}],
];
window.results = [];
(async () => {{
  for (const [name, path, init] of attempts) {{
    const seen = {{name}};
    try {{
      const r = await fetch(C.target + path, {{credentials: "include", ...init}});
      seen.type = r.type;
      seen.status = r.status;
      seen.body = await r.text();
    }} catch (e) {{
      seen.error = `${{e.name}}: ${{e.message}}`;
    }}
    window.results.push(seen);
  }}
  document.getElementById("out").textContent = JSON.stringify(window.results, null, 1);
  window.finished = true;
}})();
</script>"#
    )
}

fn named<'a>(cookies: &'a [Value], name: &str) -> Option<&'a Value> {
    cookies.iter().find(|c| c["name"] == name)
}

fn value_of(cookie: &Value) -> String {
    cookie["value"].as_str().unwrap_or_default().to_owned()
}

/// The names of the app's cookies among `cookies`.
/// The credential cookies Tessera set. The device cookie is left out: it authenticates nothing
/// (it only gives a browser that logged in before its own failed-attempt budget) and outlives a
/// logout on purpose.
fn tessera_cookies(cookies: &[Value]) -> Vec<String> {
    cookies
        .iter()
        .filter_map(|c| c["name"].as_str())
        .filter(|n| n.contains("tessera") && *n != "__Host-tessera-device")
        .map(str::to_owned)
        .collect()
}

/// Checks a cookie's attributes as Chromium stored them.
fn assert_stored_as(cookie: &Value, same_site: &str, path: &str) {
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["secure"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], same_site, "{cookie}");
    assert_eq!(cookie["path"], path, "{cookie}");
    // Host-only: a cookie with a Domain attribute is stored as ".localhost".
    assert_eq!(cookie["domain"], "localhost", "{cookie}");
}

async fn newest_event_id(app: &TestApp) -> i64 {
    let events = app.stores.events.events(None, 1).await.unwrap();
    events.first().map_or(0, |e| e.id)
}

/// The security events recorded after `id`, as `kind user`.
async fn events_since(app: &TestApp, id: i64) -> Vec<String> {
    let events = app.stores.events.events(None, 1000).await.unwrap();
    events
        .into_iter()
        .filter(|e| e.id > id)
        .map(|e| format!("{} {:?} {}", e.kind.as_str(), e.user_id, e.detail))
        .collect()
}
