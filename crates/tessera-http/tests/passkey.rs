//! Passkeys over HTTP with a software authenticator (webauthn-authenticator-rs's `SoftPasskey`,
//! a real authenticator that makes P-256 keys and signs in process): registration, a passkey
//! as the second factor of a password login in every model, step-up, and what is refused (a
//! wrong password at registration, a ceremony used twice or bound to another login, an
//! assertion for another origin, a passkey of another account). Passwordless login with a
//! discoverable passkey is tested in Chromium (`passkey_browser.rs`): the software passkey
//! keeps no credentials of its own.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Backend, Browser, Options, PASSWORD, TestApp, problem, session_cookie};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_core::{Clock, SecondFactorConfig};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

/// A user's authenticator, answering for the app's origin.
struct Authenticator {
    inner: SoftPasskey,
    origin: Url,
}

impl Authenticator {
    fn new(app: &TestApp) -> Self {
        Self::for_origin(&app.origin)
    }

    fn for_origin(origin: &str) -> Self {
        Self {
            // `true`: it reports the user verified (as a PIN or a fingerprint would).
            inner: SoftPasskey::new(true),
            origin: Url::parse(origin).unwrap(),
        }
    }

    /// What `navigator.credentials.create` would answer to `options`.
    fn create(&mut self, options: &Value) -> Value {
        let options: CreationChallengeResponse = serde_json::from_value(options.clone()).unwrap();
        let credential = self
            .inner
            .do_registration(self.origin.clone(), options)
            .expect("the authenticator registers");
        serde_json::to_value(credential).unwrap()
    }

    /// What a discoverable passkey answers to passwordless options (which name no
    /// credential): the software authenticator keeps no list of its credentials, so the test
    /// names the one it registered, and the answer carries the account's user handle (the
    /// registration options' `user.id`), as a discoverable passkey's answer does. The handle is
    /// not signed: the server checks it against the credential's account.
    fn get_discoverable(&mut self, options: &Value, registered: &Registered) -> Value {
        let mut options = options.clone();
        options["publicKey"]["allowCredentials"] =
            json!([{"type": "public-key", "id": registered.credential_id}]);
        let mut answer = self.get(&options);
        answer["response"]["userHandle"] = registered.user_handle.clone();
        answer
    }

    /// What `navigator.credentials.get` would answer to `options`.
    fn get(&mut self, options: &Value) -> Value {
        let options: RequestChallengeResponse = serde_json::from_value(options.clone()).unwrap();
        let credential = self
            .inner
            .do_authentication(self.origin.clone(), options)
            .expect("the authenticator asserts");
        serde_json::to_value(credential).unwrap()
    }
}

fn segment(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// A registered passkey: the server's view, and what the authenticator keeps of it.
struct Registered {
    view: Value,
    credential_id: Value,
    user_handle: Value,
}

/// Registers a passkey of `authenticator` for the caller, named `name`.
async fn register(
    app: &TestApp,
    browser: &Browser,
    authenticator: &mut Authenticator,
    name: &str,
) -> Registered {
    let r = app
        .as_browser(browser, Method::POST, "/v1/account/passkeys/options", true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let options: Value = r.json().await.unwrap();
    let public_key = &options["options"]["publicKey"];
    assert_eq!(public_key["rp"]["id"], "localhost");
    assert_eq!(
        public_key["authenticatorSelection"]["userVerification"],
        "required"
    );
    assert_eq!(
        public_key["authenticatorSelection"]["residentKey"],
        "preferred"
    );
    let credential = authenticator.create(&options["options"]);

    // A copied session alone cannot add a passkey: the password is needed.
    let r = app
        .as_browser(browser, Method::POST, "/v1/account/passkeys", true)
        .json(&json!({"ceremony": options["ceremony"], "credential": credential, "name": name, "current_password": "not the password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(r, StatusCode::FORBIDDEN).await["field"],
        "current_password"
    );
    let r = app
        .as_browser(browser, Method::POST, "/v1/account/passkeys", true)
        .json(&json!({"ceremony": options["ceremony"], "credential": credential, "name": name, "current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["name"], name);
    assert!(view["id"].as_str().unwrap().starts_with("pky_"));
    assert!(
        view.get("credential").is_none() && view.get("public_key").is_none(),
        "no key material in the answer: {view}"
    );

    // The same answer again: for a login whose second factor is fresh, the ceremony is used;
    // for a password-only login, the account now has a second factor, so adding a passkey is
    // privileged and needs it first.
    let r = app
        .as_browser(browser, Method::POST, "/v1/account/passkeys", true)
        .json(&json!({"ceremony": options["ceremony"], "credential": credential, "current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let fresh = browser.login["session"]["authentication"]["acr"] == "aal2";
    if fresh {
        assert_eq!(
            problem(r, StatusCode::UNPROCESSABLE_ENTITY).await["field"],
            "ceremony"
        );
    } else {
        assert_eq!(
            problem(r, StatusCode::UNAUTHORIZED).await["type"],
            "urn:tessera:problem:insufficient-user-authentication"
        );
    }
    Registered {
        view,
        credential_id: credential["id"].clone(),
        user_handle: public_key["user"]["id"].clone(),
    }
}

/// Logs in with the password at `path`: the answer must be a challenge offering a passkey.
async fn challenge(app: &TestApp, path: &str, username: &str) -> Value {
    let r = app
        .request(Method::POST, path)
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        session_cookie(&r).is_none(),
        "no credential before the passkey"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["second_factor_required"], true, "{body}");
    assert!(
        body["methods"]
            .as_array()
            .unwrap()
            .contains(&json!("webauthn")),
        "{body}"
    );
    assert!(body["passkey"]["ceremony"].is_string(), "{body}");
    body
}

async fn complete(app: &TestApp, challenge: &Value, credential: &Value) -> reqwest::Response {
    app.request(Method::POST, "/v1/login/second-factor/passkey")
        .json(&json!({
            "challenge": challenge["challenge"],
            "ceremony": challenge["passkey"]["ceremony"],
            "credential": credential,
        }))
        .send()
        .await
        .unwrap()
}

async fn a_passkey_is_the_second_factor_of_every_model(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user_with_session("alice").await;
    let mut key = Authenticator::new(&app);
    register(&app, &alice, &mut key, "Laptop").await;

    let status: Value = app
        .as_browser(&alice, Method::GET, "/v1/account/totp", false)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["passkeys"], 1);
    assert_eq!(status["methods"], json!(["webauthn"]));

    // Token model: the passkey completes the login; the tokens say how.
    let c = challenge(&app, "/v1/token", "alice").await;
    let credential = key.get(&c["passkey"]["options"]);
    let r = complete(&app, &c, &credential).await;
    assert_eq!(r.status(), StatusCode::OK);
    let pair: Value = r.json().await.unwrap();
    let claims = segment(pair["access_token"].as_str().unwrap(), 1);
    assert_eq!(claims["amr"], json!(["pwd", "hwk", "mfa"]));
    assert_eq!(claims["acr"], "aal2");
    // `/v1/me` reads the token as the token says: the passkey, not a code.
    let me: Value = app
        .request(Method::GET, "/v1/me")
        .bearer_auth(pair["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me["auth"]["authentication"]["amr"],
        json!(["pwd", "hwk", "mfa"]),
        "{me}"
    );
    // The same answer again: the challenge is used.
    let again = complete(&app, &c, &credential).await;
    assert_eq!(
        problem(again, StatusCode::UNAUTHORIZED).await["type"],
        "urn:tessera:problem:invalid-challenge"
    );
    // Replayed to another login of the same account: its ceremony is bound to the first.
    let other = challenge(&app, "/v1/token", "alice").await;
    let replay = app
        .request(Method::POST, "/v1/login/second-factor/passkey")
        .json(&json!({
            "challenge": other["challenge"],
            "ceremony": c["passkey"]["ceremony"],
            "credential": credential,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(replay, StatusCode::UNAUTHORIZED).await["type"],
        "urn:tessera:problem:invalid-second-factor"
    );
    // An answer to this login's options, but for the wrong ceremony of it: refused too.
    let stale = key.get(&other["passkey"]["options"]);
    let crossed = app
        .request(Method::POST, "/v1/login/second-factor/passkey")
        .json(&json!({
            "challenge": other["challenge"],
            "ceremony": c["passkey"]["ceremony"],
            "credential": stale,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(crossed.status(), StatusCode::UNAUTHORIZED);

    // Session model, with a correct answer.
    let c = challenge(&app, "/v1/session/login", "alice").await;
    let r = complete(&app, &c, &key.get(&c["passkey"]["options"])).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(session_cookie(&r).is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["session"]["authentication"]["amr"],
        json!(["pwd", "hwk", "mfa"])
    );

    // Hybrid model.
    let c = challenge(&app, "/v1/hybrid/login", "alice").await;
    let r = complete(&app, &c, &key.get(&c["passkey"]["options"])).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("__Host-tessera-at=")),
        "{cookies:?}"
    );

    // The list shows it, used, with no key material.
    let list: Value = app
        .as_browser(&alice, Method::GET, "/v1/account/passkeys", false)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let passkeys = list["passkeys"].as_array().unwrap();
    assert_eq!(passkeys.len(), 1);
    assert_eq!(passkeys[0]["name"], "Laptop");
    assert!(passkeys[0]["last_used_at"].is_string());
}

async fn what_a_passkey_answer_must_be(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user_with_session("alice").await;
    let mut key = Authenticator::new(&app);
    register(&app, &alice, &mut key, "Key").await;
    let bob = app.user_with_session("bob").await;
    let mut bobs_key = Authenticator::new(&app);
    register(&app, &bob, &mut bobs_key, "Bob's").await;

    // An answer made on another origin of the same host (another app's page on another port;
    // the browser lets it ask for this site's passkeys, the server must not take it): refused.
    let c = challenge(&app, "/v1/token", "alice").await;
    let mut phished = Authenticator {
        inner: key.inner,
        origin: Url::parse("http://localhost:9").unwrap(),
    };
    let credential = phished.get(&c["passkey"]["options"]);
    let key_back = phished.inner;
    let r = complete(&app, &c, &credential).await;
    assert_eq!(
        problem(r, StatusCode::UNAUTHORIZED).await["type"],
        "urn:tessera:problem:invalid-second-factor"
    );
    let mut key = Authenticator {
        inner: key_back,
        origin: Url::parse(&app.origin).unwrap(),
    };
    // The refused answer used the login's options up; new ones for the same login, without the
    // password again (from the client that logged in only), complete it.
    let fresh = |challenge: &Value, agent: &str| {
        app.request(Method::POST, "/v1/login/second-factor/passkey/options")
            .header("user-agent", agent)
            .json(&json!({"challenge": challenge["challenge"]}))
    };
    let r = fresh(&c, "another client").send().await.unwrap();
    assert_eq!(
        problem(r, StatusCode::UNAUTHORIZED).await["type"],
        "urn:tessera:problem:invalid-challenge"
    );
    let r = app
        .request(Method::POST, "/v1/login/second-factor/passkey/options")
        .json(&json!({"challenge": URL_SAFE_NO_PAD.encode([9u8; 32])}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app
        .request(Method::POST, "/v1/login/second-factor/passkey/options")
        .json(&json!({"challenge": c["challenge"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let renewed: Value = r.json().await.unwrap();
    let r = complete(
        &app,
        &json!({"challenge": c["challenge"], "passkey": renewed}),
        &key.get(&renewed["options"]),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    // The login is made: the challenge is gone, and so is the asking.
    let r = app
        .request(Method::POST, "/v1/login/second-factor/passkey/options")
        .json(&json!({"challenge": c["challenge"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Bob's passkey, answering a ceremony of bob's, cannot complete alice's login.
    let c = challenge(&app, "/v1/token", "alice").await;
    let bobs_login = challenge(&app, "/v1/token", "bob").await;
    let bobs_answer = bobs_key.get(&bobs_login["passkey"]["options"]);
    let r = app
        .request(Method::POST, "/v1/login/second-factor/passkey")
        .json(&json!({
            "challenge": c["challenge"],
            "ceremony": bobs_login["passkey"]["ceremony"],
            "credential": bobs_answer,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Alice still completes her login with her own passkey (the refusal spent an attempt only).
    let r = complete(&app, &c, &key.get(&c["passkey"]["options"])).await;
    assert_eq!(r.status(), StatusCode::OK);

    // Malformed bodies: a clear 4xx, never a panic.
    for body in [
        json!({"challenge": c["challenge"], "ceremony": "x", "credential": {"id": 1}}),
        json!({"challenge": c["challenge"], "ceremony": "x"}),
        json!({"challenge": c["challenge"], "ceremony": "x", "credential": {}, "extra": 1}),
    ] {
        let r = app
            .request(Method::POST, "/v1/login/second-factor/passkey")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == StatusCode::UNPROCESSABLE_ENTITY || r.status() == StatusCode::BAD_REQUEST,
            "{body}: {}",
            r.status()
        );
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{body}"
        );
    }
    // A ceremony that is not one of ours, for a passwordless login: 401 like a wrong password.
    let options: Value = app
        .request(Method::POST, "/v1/login/passkey/options")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let forged = URL_SAFE_NO_PAD.encode([7u8; 80]);
    let any_answer = key.get(&c["passkey"]["options"]);
    let r = app
        .request(Method::POST, "/v1/login/passkey")
        .json(&json!({"ceremony": forged, "credential": any_answer, "model": "token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(r, StatusCode::UNAUTHORIZED).await["type"],
        "urn:tessera:problem:invalid-credentials"
    );
    // A real passwordless ceremony, answered by a passkey that names no user: refused.
    let r = app
        .request(Method::POST, "/v1/login/passkey")
        .json(&json!({"ceremony": options["ceremony"], "credential": any_answer, "model": "token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

async fn step_up_with_a_passkey(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            second_factor: SecondFactorConfig {
                privileged_max_age: Duration::from_secs(120),
                ..SecondFactorConfig::default()
            },
            ..Options::default()
        },
    )
    .await;
    let alice = app.user_with_session("alice").await;
    let mut key = Authenticator::new(&app);
    let first = register(&app, &alice, &mut key, "First").await;

    // A login with the passkey as its second factor.
    let c = challenge(&app, "/v1/session/login", "alice").await;
    let r = complete(&app, &c, &key.get(&c["passkey"]["options"])).await;
    let cookie = session_cookie(&r).unwrap();
    let body: Value = r.json().await.unwrap();
    let browser = Browser {
        cookie: Some(cookie.value),
        csrf: body["csrf_token"].as_str().unwrap().to_owned(),
        login: body,
    };
    // A second passkey, while the factor is fresh; it is refused once the factor is stale.
    let mut second_key = Authenticator::new(&app);
    register(&app, &browser, &mut second_key, "Second").await;
    app.clock.advance(Duration::from_secs(300));
    let path = format!(
        "/v1/account/passkeys/{}",
        first.view["id"].as_str().unwrap()
    );
    let r = app
        .as_browser(&browser, Method::DELETE, &path, true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(r, StatusCode::UNAUTHORIZED).await["type"],
        "urn:tessera:problem:insufficient-user-authentication"
    );
    let r = app
        .as_browser(&browser, Method::POST, "/v1/account/passkeys/options", true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Step up with either passkey: the options list both.
    let options: Value = app
        .as_browser(
            &browser,
            Method::POST,
            "/v1/account/step-up/passkey/options",
            true,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        options["options"]["publicKey"]["allowCredentials"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let answer = second_key.get(&options["options"]);
    let r = app
        .as_browser(&browser, Method::POST, "/v1/account/step-up/passkey", true)
        .json(&json!({"ceremony": options["ceremony"], "credential": answer}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let stepped: Value = r.json().await.unwrap();
    assert_eq!(
        stepped["authentication"]["amr"],
        json!(["pwd", "hwk", "mfa"])
    );
    // The answer again: its ceremony is used.
    let r = app
        .as_browser(&browser, Method::POST, "/v1/account/step-up/passkey", true)
        .json(&json!({"ceremony": options["ceremony"], "credential": answer}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(r, StatusCode::UNAUTHORIZED).await["type"],
        "urn:tessera:problem:invalid-second-factor"
    );

    // Fresh again: the first passkey goes, and no longer completes a login.
    let r = app
        .as_browser(&browser, Method::DELETE, &path, true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app
        .as_browser(&browser, Method::DELETE, &path, true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = app
        .as_browser(
            &browser,
            Method::PATCH,
            "/v1/account/passkeys/pky_unknown",
            true,
        )
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "no such passkey id");
    let c = challenge(&app, "/v1/token", "alice").await;
    assert_eq!(
        c["passkey"]["options"]["publicKey"]["allowCredentials"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = complete(&app, &c, &second_key.get(&c["passkey"]["options"])).await;
    assert_eq!(r.status(), StatusCode::OK);

    // An admin can take every passkey off an account (a user who lost them): the password
    // alone logs in again.
    let list: Value = app
        .as_browser(&browser, Method::GET, "/v1/account/passkeys", false)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["passkeys"][0]["id"].as_str().unwrap().to_owned();
    let r = app
        .as_browser(
            &browser,
            Method::PATCH,
            &format!("/v1/account/passkeys/{id}"),
            true,
        )
        .json(&json!({"name": "Phone"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    app.accounts
        .create(
            "root",
            &tessera_core::Password::new(PASSWORD),
            vec!["admin".into()],
        )
        .await
        .unwrap();
    let root: Value = app
        .request(Method::POST, "/v1/token")
        .json(&json!({"username": "root", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alice_id = browser.login["user"]["id"].as_str().unwrap();
    let r = app
        .request(
            Method::DELETE,
            &format!("/v1/admin/users/{alice_id}/passkeys"),
        )
        .bearer_auth(root["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["removed"], 1);
    let r = app
        .request(Method::POST, "/v1/session/login")
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert!(session_cookie(&r).is_some(), "the password alone logs in");
}

/// Passwordless logins keep every rule a login has: `tokens.require_dpop` (no bearer token from
/// a passkey either), the authentication context through a step-up of a token login (the login
/// began with the passkey, never a password), and a name is never emptied.
async fn passwordless_logins_keep_the_rules(backend: Backend) {
    use tessera_core::token::dpop::DpopConfig;
    let app = TestApp::spawn_with(
        backend,
        Options {
            tokens: tessera_core::token::TokenConfig {
                dpop: DpopConfig {
                    required: true,
                    ..DpopConfig::default()
                },
                ..tessera_core::token::TokenConfig::default()
            },
            ..Options::default()
        },
    )
    .await;
    let alice = app.user_with_session("alice").await;
    let mut key = Authenticator::new(&app);
    let registered = register(&app, &alice, &mut key, "Key").await;
    let passwordless = async |key: &mut Authenticator, model: &str, dpop: Option<String>| {
        let options: Value = app
            .request(Method::POST, "/v1/login/passkey/options")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let answer = key.get_discoverable(&options["options"], &registered);
        let mut request = app
            .request(Method::POST, "/v1/login/passkey")
            .json(&json!({"ceremony": options["ceremony"], "credential": answer, "model": model}));
        if let Some(proof) = dpop {
            request = request.header("dpop", proof);
        }
        request.send().await.unwrap()
    };
    // Without a proof, the token model gives nothing, as POST /v1/token does not.
    let r = passwordless(&mut key, "token", None).await;
    assert_eq!(
        problem(r, StatusCode::BAD_REQUEST).await["type"],
        "urn:tessera:problem:invalid-dpop-proof"
    );
    // With one, a bound pair.
    let proof_key = tessera_dpop::ProofKey::generate_ed25519().unwrap();
    let proof = proof_key
        .proof_at(
            "POST",
            &format!("{}/v1/login/passkey", app.origin),
            None,
            None,
            app.clock.now().unix_seconds(),
        )
        .unwrap();
    let r = passwordless(&mut key, "token", Some(proof)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let pair: Value = r.json().await.unwrap();
    assert_eq!(pair["token_type"], "DPoP");
    let claims = segment(pair["access_token"].as_str().unwrap(), 1);
    assert_eq!(claims["amr"], json!(["hwk", "user", "mfa"]));
    assert!(claims["cnf"]["jkt"].is_string());
    // The session model is not bound by DPoP.
    let r = passwordless(&mut key, "session", None).await;
    assert_eq!(r.status(), StatusCode::OK);

    // A token login by passkey alone, stepped up with the passkey: still no password in it.
    let app = TestApp::spawn(backend).await;
    let bob = app.user_with_session("bob").await;
    let mut key = Authenticator::new(&app);
    let registered = register(&app, &bob, &mut key, "Key").await;
    let options: Value = app
        .request(Method::POST, "/v1/login/passkey/options")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answer = key.get_discoverable(&options["options"], &registered);
    let pair: Value = app
        .request(Method::POST, "/v1/login/passkey")
        .json(&json!({"ceremony": options["ceremony"], "credential": answer, "model": "token"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = pair["access_token"].as_str().unwrap();
    let me: Value = app
        .request(Method::GET, "/v1/me")
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me["auth"]["authentication"]["amr"],
        json!(["hwk", "user", "mfa"])
    );
    let options: Value = app
        .request(Method::POST, "/v1/account/step-up/passkey/options")
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answer = key.get(&options["options"]);
    let stepped: Value = app
        .request(Method::POST, "/v1/account/step-up/passkey")
        .bearer_auth(access)
        .json(&json!({"ceremony": options["ceremony"], "credential": answer}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stepped["authentication"]["amr"],
        json!(["hwk", "user", "mfa"])
    );
    let claims = segment(stepped["access_token"].as_str().unwrap(), 1);
    assert_eq!(claims["amr"], json!(["hwk", "user", "mfa"]), "{claims}");
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
    assert_eq!(claims["amr"], json!(["hwk", "user", "mfa"]), "{claims}");

    // A name is never emptied; an answer of the wrong type is not a passkey's.
    let path = format!(
        "/v1/account/passkeys/{}",
        registered.view["id"].as_str().unwrap()
    );
    let r = app
        .request(Method::PATCH, &path)
        .bearer_auth(refreshed["access_token"].as_str().unwrap())
        .json(&json!({"name": "  "}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(r, StatusCode::UNPROCESSABLE_ENTITY).await["field"],
        "name"
    );
    let options: Value = app
        .request(Method::POST, "/v1/login/passkey/options")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut answer = key.get_discoverable(&options["options"], &registered);
    answer["type"] = json!("password");
    let r = app
        .request(Method::POST, "/v1/login/passkey")
        .json(&json!({"ceremony": options["ceremony"], "credential": answer, "model": "token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// With `accounts.new_context = "step_up"`, a session used from a new network and browser must
/// show a recent second factor: a passkey does, at the passkey step-up routes, from the new place.
async fn a_moved_session_steps_up_with_a_passkey(backend: Backend) {
    const HOME: (&str, &str) = (
        "192.0.2.10",
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
    );
    const ELSEWHERE: (&str, &str) = ("198.51.100.7", "Mozilla/5.0 (Macintosh) Safari/605.1.15");
    let app = TestApp::spawn_with(
        backend,
        Options {
            http: tessera_http::HttpConfig {
                trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
                ..tessera_http::HttpConfig::default()
            },
            second_factor: SecondFactorConfig {
                new_context: tessera_core::login_context::NewContextPolicy::StepUp,
                privileged_max_age: Duration::from_secs(120),
                ..SecondFactorConfig::default()
            },
            ..Options::default()
        },
    )
    .await;
    let from = |method: Method, path: &str, place: (&str, &str), browser: &Browser| {
        app.as_browser(browser, method, path, true)
            .header("x-forwarded-for", place.0)
            .header("user-agent", place.1)
    };
    let alice = app.user_with_session("alice").await;
    let mut key = Authenticator::new(&app);
    register(&app, &alice, &mut key, "Key").await;
    // A session login at home, with the passkey as its second factor.
    let r = app
        .request(Method::POST, "/v1/session/login")
        .header("x-forwarded-for", HOME.0)
        .header("user-agent", HOME.1)
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let c: Value = r.json().await.unwrap();
    let r = app
        .request(Method::POST, "/v1/login/second-factor/passkey")
        .header("x-forwarded-for", HOME.0)
        .header("user-agent", HOME.1)
        .json(&json!({
            "challenge": c["challenge"],
            "ceremony": c["passkey"]["ceremony"],
            "credential": key.get(&c["passkey"]["options"]),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = session_cookie(&r).unwrap();
    let body: Value = r.json().await.unwrap();
    let session = Browser {
        cookie: Some(cookie.value),
        csrf: body["csrf_token"].as_str().unwrap().to_owned(),
        login: body,
    };
    app.clock.advance(Duration::from_secs(300));
    // Used from elsewhere, with a stale second factor: refused, and told how to go on.
    let r = from(Method::GET, "/v1/me", ELSEWHERE, &session)
        .send()
        .await
        .unwrap();
    let refused = problem(r, StatusCode::UNAUTHORIZED).await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("/v1/account/step-up/passkey"),
        "{refused}"
    );
    // The passkey step-up works from there.
    let r = from(
        Method::POST,
        "/v1/account/step-up/passkey/options",
        ELSEWHERE,
        &session,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let options: Value = r.json().await.unwrap();
    let r = from(
        Method::POST,
        "/v1/account/step-up/passkey",
        ELSEWHERE,
        &session,
    )
    .json(&json!({"ceremony": options["ceremony"], "credential": key.get(&options["options"])}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = from(Method::GET, "/v1/me", ELSEWHERE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Refused registrations spend the account's attempt budget, as wrong passwords do: a client
/// cannot send malformed attestations without end.
async fn refused_registrations_are_throttled(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            throttle: tessera_core::ThrottleConfig {
                per_account: tessera_core::Rate {
                    burst: 3,
                    per_minute: 1,
                },
                ..common::relaxed_throttle()
            },
            ..Options::default()
        },
    )
    .await;
    let alice = app.user_with_session("alice").await;
    let mut key = Authenticator::new(&app);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let options: Value = app
            .as_browser(&alice, Method::POST, "/v1/account/passkeys/options", true)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut credential = key.create(&options["options"]);
        // Another challenge's answer: the client data no longer matches the ceremony.
        credential["response"]["clientDataJSON"] = json!(URL_SAFE_NO_PAD.encode(
            br#"{"type":"webauthn.create","challenge":"AAAA","origin":"http://localhost"}"#
        ));
        let r = app
            .as_browser(&alice, Method::POST, "/v1/account/passkeys", true)
            .json(&json!({"ceremony": options["ceremony"], "credential": credential, "current_password": PASSWORD}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [422, 422, 422, 429]);
}

on_every_backend!(
    refused_registrations_are_throttled,
    a_passkey_is_the_second_factor_of_every_model,
    what_a_passkey_answer_must_be,
    step_up_with_a_passkey,
    passwordless_logins_keep_the_rules,
    a_moved_session_steps_up_with_a_passkey,
);
