//! Passkeys in a real headless Chromium, through the playground page, with a virtual
//! authenticator (WebDriver's WebAuthn extension: a CTAP2 platform authenticator that keeps
//! discoverable credentials and verifies the user without a prompt):
//!
//! - The page registers a user, logs in with the password, and adds a passkey (its current
//!   password asked for); the authenticator keeps it as a discoverable credential for
//!   `localhost`, under the account's user handle, and the page lists it.
//! - After a logout, "Sign in with a passkey" logs in with the passkey alone (no username):
//!   `amr` `["hwk", "user", "mfa"]`, `aal2`; in the session model and in the token model.
//! - A password login then asks for the passkey, and the page completes it with
//!   `navigator.credentials.get`: `amr` `["pwd", "hwk", "mfa"]`; in the session model and in
//!   the hybrid model.
//! - An account whose only second factor is TOTP: the page says it takes no code, and makes no
//!   login.
//! - With the authenticator no longer verifying the user, the passkey login and the password
//!   login's second factor fail, the page shows why, and no login is made. Options that do not
//!   ask for user verification get an answer without it, which the server refuses.
//! - The page removes the passkey (the login is fresh from the passkey); the password alone
//!   logs in again.
//!
//! Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian's `chromium`, `chromium-driver`);
//! fails when they are missing.

mod common;
mod webdriver;

use std::time::Instant;

use common::{Backend, PASSWORD, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_core::TotpSecret;
use webdriver::Chromium;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_registers_and_logs_in_with_a_passkey_in_chromium() {
    let started = Instant::now();
    let app = TestApp::spawn(Backend::Memory).await;
    let chromium = Chromium::start().await;
    let authenticator = chromium
        .add_virtual_authenticator(json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserConsenting": true,
            "isUserVerified": true,
        }))
        .await;
    let page = Page {
        c: &chromium,
        app: &app,
    };
    page.open().await;

    // Register alice and log in with the password (no second factor yet).
    chromium.fill("#username", "alice").await;
    chromium.fill("#password", PASSWORD).await;
    assert_eq!(page.act("register").await, "POST /v1/users → 201");
    assert_eq!(
        page.act("session-login").await,
        "POST /v1/session/login → 200"
    );
    let alice = page.me().await;
    assert_eq!(alice["auth"]["authentication"]["amr"], json!(["pwd"]));
    let alice_id = alice["user"]["id"].as_str().unwrap().to_owned();

    // Adding a passkey needs the current password: without it the page says so and asks
    // nothing of the authenticator; with a wrong one the server's refusal is shown.
    let (kind, text) = page.passkey("passkey-add").await;
    assert_eq!(kind, "error");
    assert!(text.contains("current password"), "{text}");
    let log = page.log().await;
    assert!(
        !log.iter()
            .any(|l| l.contains("passkeys") || l.starts_with("WebAuthn")),
        "{log:?}"
    );
    chromium.fill("#passkey-name", "Chromium").await;
    chromium.fill("#passkey-password", "not the password").await;
    let (kind, text) = page.passkey("passkey-add").await;
    assert_eq!(kind, "error");
    assert!(text.starts_with("No passkey added: "), "{text}");
    assert!(text.contains("password"), "the problem's detail: {text}");
    // That attempt's credential was made by the authenticator but never registered.
    let made = chromium.authenticator_credentials(&authenticator).await;
    assert_eq!(made.len(), 1, "{made:?}");

    chromium.fill("#passkey-password", PASSWORD).await;
    let (kind, text) = page.passkey("passkey-add").await;
    assert_eq!(kind, "done", "{text}");
    assert!(text.contains("\"Chromium\""), "{text}");
    assert_eq!(
        chromium
            .execute(
                "return document.getElementById('passkey-password').value",
                json!([])
            )
            .await,
        "",
        "the password field is cleared"
    );
    let listed = page.listed().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].starts_with("Chromium: added "), "{listed:?}");
    // The authenticator keeps it as a discoverable credential for this site, under the user
    // handle of alice's account (the random bits of her id, no name). It replaced the one made
    // for the refused attempt: one credential per account and site.
    let credentials = chromium.authenticator_credentials(&authenticator).await;
    assert_eq!(credentials.len(), 1, "{credentials:?}");
    let registered = &credentials[0];
    assert_ne!(registered["credentialId"], made[0]["credentialId"]);
    assert_eq!(registered["isResidentCredential"], true, "{registered}");
    assert_eq!(registered["rpId"], "localhost", "{registered}");
    let handle = registered["userHandle"]
        .as_str()
        .unwrap()
        .trim_end_matches('=');
    assert_eq!(format!("usr_{handle}"), alice_id);
    // The server has it too.
    let session = page.session_cookie().await.expect("the session cookie");
    let list: Value = app
        .request(Method::GET, "/v1/account/passkeys")
        .header("cookie", format!("{}={session}", common::COOKIE))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["passkeys"][0]["name"], "Chromium", "{list}");

    // Passwordless, session model: the passkey alone, no username.
    assert_eq!(page.act("session-logout").await, "DELETE /v1/session → 204");
    chromium.fill("#username", "").await;
    chromium.fill("#password", "").await;
    let (kind, text) = page.passkey("passkey-login").await;
    assert_eq!(kind, "done", "{text}");
    assert_eq!(
        text,
        "Logged in as alice with the passkey alone (session model)."
    );
    let me = page.me().await;
    assert_eq!(me["user"]["id"], alice_id.as_str());
    assert_eq!(me["auth"]["model"], "session");
    assert_eq!(
        me["auth"]["authentication"]["amr"],
        json!(["hwk", "user", "mfa"])
    );
    assert_eq!(me["auth"]["authentication"]["acr"], "aal2");
    assert_eq!(page.act("session-me").await, "GET /v1/me → 200");
    assert_eq!(chromium.text("#whoami").await, "alice (session)");
    assert_eq!(page.act("session-logout").await, "DELETE /v1/session → 204");

    // Passwordless, token model.
    page.choose_model("token").await;
    let (kind, text) = page.passkey("passkey-login").await;
    assert_eq!(kind, "done", "{text}");
    assert_eq!(text, "Logged in with the passkey alone (token model).");
    assert_eq!(page.act("token-me").await, "GET /v1/me → 200");
    assert_eq!(chromium.text("#whoami").await, "alice (token)");
    let me = page.me_with_token().await;
    assert_eq!(
        me["auth"]["authentication"]["amr"],
        json!(["hwk", "user", "mfa"])
    );
    assert_eq!(
        page.act("token-revoke").await,
        "POST /v1/token/revoke → 200"
    );
    page.choose_model("session").await;

    // A password login now asks for the passkey, and the page completes it.
    chromium.fill("#username", "alice").await;
    chromium.fill("#password", PASSWORD).await;
    page.reset_passkey_status().await;
    // The login answers with a challenge; the page goes on to the passkey by itself.
    page.act("session-login").await;
    let (kind, text) = page.passkey_outcome().await;
    assert_eq!(kind, "done", "{text}");
    assert_eq!(
        text,
        "Logged in with the password and the passkey (session model)."
    );
    let me = page.me().await;
    assert_eq!(me["user"]["id"], alice_id.as_str());
    assert_eq!(
        me["auth"]["authentication"]["amr"],
        json!(["pwd", "hwk", "mfa"])
    );
    let log = page.log().await;
    assert!(
        log.iter()
            .any(|l| l.starts_with("POST /v1/session/login → 200")
                && l.contains("\"second_factor_required\":true")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("POST /v1/login/second-factor/passkey → 200")),
        "{log:?}"
    );
    assert_eq!(page.act("session-logout").await, "DELETE /v1/session → 204");
    // The same in the hybrid model (its access token says how the login was made).
    page.reset_passkey_status().await;
    page.act("hybrid-login").await;
    let (kind, text) = page.passkey_outcome().await;
    assert_eq!(kind, "done", "{text}");
    assert_eq!(
        text,
        "Logged in with the password and the passkey (hybrid model)."
    );
    assert_eq!(page.act("hybrid-me").await, "GET /v1/me → 200");
    assert_eq!(chromium.text("#whoami").await, "alice (hybrid)");
    let me = page.me().await;
    assert_eq!(me["auth"]["model"], "hybrid");
    assert_eq!(
        me["auth"]["authentication"]["amr"],
        json!(["pwd", "hwk", "mfa"])
    );
    assert_eq!(
        page.act("hybrid-logout").await,
        "DELETE /v1/hybrid/session → 204"
    );

    // An account with TOTP only: the page says it takes no code, and no login is made.
    let bob = app.user_with_session("bob").await;
    let r = app
        .as_browser(&bob, Method::POST, "/v1/account/totp", true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let secret =
        TotpSecret::from_base32(r.json::<Value>().await.unwrap()["secret"].as_str().unwrap())
            .unwrap();
    let code = secret.code_at(tessera_core::Clock::now(&app.clock));
    let r = app
        .as_browser(&bob, Method::POST, "/v1/account/totp/confirm", true)
        .json(&json!({"code": code, "current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    chromium.fill("#username", "bob").await;
    page.reset_passkey_status().await;
    assert_eq!(
        page.act("session-login").await,
        "POST /v1/session/login → 200"
    );
    let (kind, text) = page.passkey_outcome().await;
    assert_eq!(kind, "error");
    assert!(
        text.contains("does not take (totp, recovery_code)"),
        "{text}"
    );
    page.no_login().await;

    // The authenticator no longer verifies the user: the passkey login fails, the page says
    // why, and no login is made.
    chromium.fill("#username", "alice").await;
    let logins_before = page.logins().await;
    chromium.set_user_verified(&authenticator, false).await;
    let (kind, text) = page.passkey("passkey-login").await;
    assert_eq!(kind, "error", "{text}");
    assert!(
        text.starts_with("The passkey was not used (NotAllowedError)"),
        "{text}"
    );
    page.no_login().await;
    // Nor is the password login's second factor given.
    page.reset_passkey_status().await;
    // The login answers with a challenge; the page goes on to the passkey by itself.
    page.act("session-login").await;
    let (kind, text) = page.passkey_outcome().await;
    assert_eq!(kind, "error", "{text}");
    assert!(
        text.starts_with("The passkey was not used (NotAllowedError)"),
        "{text}"
    );
    page.no_login().await;
    assert_eq!(
        page.logins().await,
        logins_before,
        "no login answered after the refusals"
    );
    // The browser refused before the server was asked, as the options require user
    // verification. Options that do not (as a page of the attacker's, or a modified one, could
    // pass) get an answer without it, and the server refuses that answer itself.
    let unverified = chromium
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             (async () => { \
               const o = await (await fetch('/v1/login/passkey/options', {method: 'POST'})).json(); \
               const options = {...o.options.publicKey, userVerification: 'discouraged'}; \
               const credential = await navigator.credentials.get( \
                 {publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options)}); \
               const flags = new Uint8Array(credential.response.authenticatorData)[32]; \
               const r = await fetch('/v1/login/passkey', {method: 'POST', \
                 headers: {'content-type': 'application/json'}, \
                 body: JSON.stringify({ceremony: o.ceremony, credential: credential.toJSON(), model: 'session'})}); \
               done({flags, status: r.status, body: await r.json()}); \
             })().catch(e => done({error: String(e)}));",
            json!([]),
        )
        .await;
    assert_eq!(
        unverified["flags"].as_u64().unwrap() & 0x04,
        0,
        "no UV flag: {unverified}"
    );
    assert_eq!(unverified["status"], 401, "{unverified}");
    assert_eq!(
        unverified["body"]["type"], "urn:tessera:problem:invalid-credentials",
        "{unverified}"
    );
    page.no_login().await;

    // Verifying again: a passkey login is fresh, so the page may remove the passkey; then the
    // password alone logs in.
    chromium.set_user_verified(&authenticator, true).await;
    let (kind, text) = page.passkey("passkey-login").await;
    assert_eq!(kind, "done", "{text}");
    // The page's step-up: the login shows the passkey again.
    let (kind, text) = page.passkey("passkey-step-up").await;
    assert_eq!(kind, "done", "{text}");
    assert!(text.starts_with("Stepped up: hwk, user, mfa at "), "{text}");
    page.passkey("passkey-list").await;
    chromium.click("#passkey-list li button").await;
    chromium
        .wait_for(
            "the passkey to be removed",
            "return document.getElementById('passkey-list').dataset.count === '0'",
            json!([]),
        )
        .await;
    assert_eq!(page.listed().await, ["This account has no passkey."]);
    assert_eq!(
        chromium.text("#passkey-status").await,
        "Removed the passkey \"Chromium\"."
    );
    assert_eq!(page.act("session-logout").await, "DELETE /v1/session → 204");
    page.reset_passkey_status().await;
    assert_eq!(
        page.act("session-login").await,
        "POST /v1/session/login → 200"
    );
    let me = page.me().await;
    assert_eq!(me["auth"]["authentication"]["amr"], json!(["pwd"]));
    assert_eq!(
        chromium
            .execute(
                "return document.getElementById('passkey-status').dataset.kind || ''",
                json!([])
            )
            .await,
        "",
        "no second factor was asked for"
    );
    chromium.remove_virtual_authenticator(&authenticator).await;
    eprintln!("passkey browser test took {:.1?}", started.elapsed());
}

/// The playground page in the browser.
struct Page<'a> {
    c: &'a Chromium,
    app: &'a TestApp,
}

impl Page<'_> {
    async fn open(&self) {
        // WebAuthn needs a domain: the page is opened on `localhost`, the relying party.
        assert!(self.app.origin.starts_with("http://localhost:"));
        self.c.goto(&format!("{}/", self.app.origin)).await;
        self.c
            .wait_for(
                "the playground",
                "return document.readyState === 'complete' && !!document.getElementById('passkey-status')",
                json!([]),
            )
            .await;
    }

    /// Clicks a playground button and waits for its request to be answered; returns `#status`.
    async fn act(&self, action: &str) -> String {
        let count = "return document.querySelectorAll('#log li').length";
        let before = self.c.execute(count, json!([])).await;
        let selector = if action == "register" {
            "#register".to_owned()
        } else {
            format!("button[data-action=\"{action}\"]")
        };
        self.c.click(&selector).await;
        self.c
            .wait_for(
                &format!("the answer to {action}"),
                "return document.querySelectorAll('#log li').length > arguments[0]",
                json!([before]),
            )
            .await;
        self.c.text("#status").await
    }

    async fn reset_passkey_status(&self) {
        self.c
            .execute(
                "const s = document.getElementById('passkey-status'); \
                 s.textContent = ''; delete s.dataset.kind;",
                json!([]),
            )
            .await;
    }

    /// Waits for the passkey step under way to end; returns how (`done` or `error`) and what
    /// the page says.
    async fn passkey_outcome(&self) -> (String, String) {
        let v = self
            .c
            .wait_for(
                "the passkey step to end",
                "const s = document.getElementById('passkey-status'); \
                 return ['done', 'error'].includes(s.dataset.kind) && [s.dataset.kind, s.textContent];",
                json!([]),
            )
            .await;
        (
            v[0].as_str().unwrap().to_owned(),
            v[1].as_str().unwrap().to_owned(),
        )
    }

    /// Clicks a button of the passkey section and waits for what it says at the end.
    async fn passkey(&self, action: &str) -> (String, String) {
        self.reset_passkey_status().await;
        if action == "passkey-list" {
            self.c
                .execute(
                    "delete document.getElementById('passkey-list').dataset.count",
                    json!([]),
                )
                .await;
            self.c
                .click(&format!("button[data-action=\"{action}\"]"))
                .await;
            self.c
                .wait_for(
                    "the list",
                    "return document.getElementById('passkey-list').dataset.count !== undefined",
                    json!([]),
                )
                .await;
            return (String::new(), String::new());
        }
        self.c
            .click(&format!("button[data-action=\"{action}\"]"))
            .await;
        self.passkey_outcome().await
    }

    async fn choose_model(&self, model: &str) {
        self.c
            .click(&format!("#passkey-model option[value=\"{model}\"]"))
            .await;
        assert_eq!(
            self.c
                .execute(
                    "return document.getElementById('passkey-model').value",
                    json!([])
                )
                .await,
            model
        );
    }

    /// The passkey list's entries, as the page shows them.
    async fn listed(&self) -> Vec<String> {
        let v = self
            .c
            .execute(
                "return [...document.querySelectorAll('#passkey-list li')].map(li => li.firstChild.textContent.trim())",
                json!([]),
            )
            .await;
        serde_json::from_value(v).unwrap()
    }

    /// The request log, newest first.
    async fn log(&self) -> Vec<String> {
        let v = self
            .c
            .execute(
                "return [...document.querySelectorAll('#log li')].map(li => li.textContent)",
                json!([]),
            )
            .await;
        serde_json::from_value(v).unwrap()
    }

    /// How many logins the page's request log shows answered (passwordless, or a second factor
    /// given).
    async fn logins(&self) -> usize {
        self.log()
            .await
            .iter()
            .filter(|l| {
                l.starts_with("POST /v1/login/passkey → 200")
                    || l.starts_with("POST /v1/login/second-factor/passkey → 200")
            })
            .count()
    }

    /// `GET /v1/me` from the page with its cookies (not logged in the page's request list).
    async fn me(&self) -> Value {
        self.c
            .execute_async(
                "const done = arguments[arguments.length - 1]; \
                 fetch('/v1/me', {credentials: 'same-origin'}) \
                   .then(async r => done({status: r.status, body: await r.json()}), e => done({error: String(e)}));",
                json!([]),
            )
            .await
            .get("body")
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// `GET /v1/me` with the access token the page holds in memory.
    async fn me_with_token(&self) -> Value {
        self.c
            .execute_async(
                "const done = arguments[arguments.length - 1]; \
                 fetch('/v1/me', {headers: {authorization: `Bearer ${state.access}`}}) \
                   .then(r => r.json()).then(done, e => done({error: String(e)}));",
                json!([]),
            )
            .await
    }

    async fn session_cookie(&self) -> Option<String> {
        self.c.cookies().await.into_iter().find_map(|c| {
            (c["name"] == common::COOKIE).then(|| c["value"].as_str().unwrap().to_owned())
        })
    }

    /// The browser holds no login: no credential cookie, `/v1/me` is 401, and the page holds
    /// no token.
    async fn no_login(&self) {
        let names: Vec<String> = self
            .c
            .cookies()
            .await
            .iter()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .filter(|n| {
                [common::COOKIE, "__Host-tessera-at", "__Host-tessera-rt"].contains(&n.as_str())
            })
            .collect();
        assert!(names.is_empty(), "no login cookie: {names:?}");
        let status = self
            .c
            .execute_async(
                "const done = arguments[arguments.length - 1]; \
                 fetch('/v1/me', {credentials: 'same-origin'}).then(r => done(r.status), e => done(String(e)));",
                json!([]),
            )
            .await;
        assert_eq!(status, 401);
        let token = self.c.execute("return state.access", json!([])).await;
        assert_eq!(token, Value::Null);
    }
}
