//! DPoP (RFC 9449) end to end, with a client holding real keys (ES256 and EdDSA): tokens bound
//! at login, bound tokens refused without their key's proof, proofs for another request or used
//! twice refused, a stolen refresh token useless without the key (and recorded), server nonces,
//! `tokens.require_dpop`, forward-auth, and the metadata document.

mod common;
mod support;

use std::time::Duration;

use common::{Backend, Options, PASSWORD, TestApp, problem};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use support::{admin, claims};
use tessera_core::Clock;
use tessera_core::token::{DpopConfig, TokenConfig};
use tessera_dpop::ProofKey;
use tessera_http::forward_auth::USER_HEADER;

on_every_backend!(
    a_proof_at_login_binds_the_tokens_to_the_key,
    a_bound_token_needs_a_fresh_proof_of_its_key_for_this_request,
    a_stolen_refresh_token_is_useless_without_the_key_and_is_recorded,
    nonces_are_asked_for_and_then_accepted,
    a_server_that_requires_dpop_issues_no_bearer_tokens,
    forward_auth_checks_the_proof_against_the_original_request,
    bad_proofs_are_clear_problems,
    a_copy_of_a_bound_token_cannot_end_or_show_its_login,
    proofs_are_recorded_only_once_the_credentials_were_right,
    a_login_with_a_second_factor_keeps_its_key,
);

/// A client with a DPoP key, talking to `app`.
struct Client<'a> {
    app: &'a TestApp,
    key: ProofKey,
}

impl<'a> Client<'a> {
    fn es256(app: &'a TestApp) -> Self {
        Self {
            app,
            key: ProofKey::generate_es256().unwrap(),
        }
    }

    fn ed25519(app: &'a TestApp) -> Self {
        Self {
            app,
            key: ProofKey::generate_ed25519().unwrap(),
        }
    }

    /// A proof for `method` on `path` of the server's public URL, made now by the server's clock.
    fn proof(&self, method: &str, path: &str, token: Option<&str>, nonce: Option<&str>) -> String {
        self.key
            .proof_at(
                method,
                &format!("{}{path}", self.app.origin),
                token,
                nonce,
                self.app.clock.now().unix_seconds(),
            )
            .unwrap()
    }

    async fn login(&self, username: &str, nonce: Option<&str>) -> Response {
        self.app
            .request(Method::POST, "/v1/token")
            .header("dpop", self.proof("POST", "/v1/token", None, nonce))
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .unwrap()
    }

    /// Logs in and returns the access and refresh tokens.
    async fn bound_pair(&self, username: &str) -> (String, String) {
        let r = self.login(username, None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["token_type"], "DPoP");
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    async fn me(&self, token: &str, proof: Option<String>) -> Response {
        let mut request = self
            .app
            .request(Method::GET, "/v1/me")
            .header("authorization", format!("DPoP {token}"));
        if let Some(proof) = proof {
            request = request.header("dpop", proof);
        }
        request.send().await.unwrap()
    }

    async fn refresh(&self, refresh_token: &str, proof: Option<String>) -> Response {
        let mut request = self
            .app
            .request(Method::POST, "/v1/token/refresh")
            .json(&json!({"refresh_token": refresh_token}));
        if let Some(proof) = proof {
            request = request.header("dpop", proof);
        }
        request.send().await.unwrap()
    }
}

async fn spawn_with_dpop(backend: Backend, dpop: DpopConfig) -> TestApp {
    TestApp::spawn_with(
        backend,
        Options {
            tokens: TokenConfig {
                dpop,
                ..TokenConfig::default()
            },
            ..Options::default()
        },
    )
    .await
}

async fn register(app: &TestApp, username: &str) {
    assert_eq!(
        app.register(username, PASSWORD).await.status(),
        StatusCode::CREATED
    );
}

fn challenge(r: &Response) -> String {
    r.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn a_proof_at_login_binds_the_tokens_to_the_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    register(&app, "alice").await;
    for client in [Client::es256(&app), Client::ed25519(&app)] {
        let (access, refresh) = client.bound_pair("alice").await;
        assert_eq!(claims(&access)["cnf"]["jkt"], client.key.thumbprint());
        let me = client
            .me(
                &access,
                Some(client.proof("GET", "/v1/me", Some(&access), None)),
            )
            .await;
        assert_eq!(me.status(), StatusCode::OK);
        let me: Value = me.json().await.unwrap();
        assert_eq!(me["user"]["username"], "alice");
        // A refresh with the key keeps the binding.
        let r = client
            .refresh(
                &refresh,
                Some(client.proof("POST", "/v1/token/refresh", None, None)),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["token_type"], "DPoP");
        let next = body["access_token"].as_str().unwrap();
        assert_eq!(claims(next)["cnf"]["jkt"], client.key.thumbprint());
    }
    // Without a proof, a login is a bearer login as before.
    let r = app
        .request(Method::POST, "/v1/token")
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        claims(body["access_token"].as_str().unwrap())
            .get("cnf")
            .is_none()
    );
    // …and such a token is refused under the DPoP scheme, which promises a bound token.
    let client = Client::es256(&app);
    let bearer = body["access_token"].as_str().unwrap();
    let r = client
        .me(
            bearer,
            Some(client.proof("GET", "/v1/me", Some(bearer), None)),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

async fn a_bound_token_needs_a_fresh_proof_of_its_key_for_this_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    register(&app, "alice").await;
    let client = Client::es256(&app);
    let (access, _) = client.bound_pair("alice").await;

    // As a bearer token (stolen, and sent the usual way): refused.
    let r = app
        .request(Method::GET, "/v1/me")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert!(challenge(&r).starts_with("DPoP "), "{}", challenge(&r));
    let body = problem(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["error"], "invalid_token");

    // The DPoP scheme without a proof: refused.
    let r = client.me(&access, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&r).contains("error=\"invalid_token\""));

    // Proofs for another method, another URL, another token, or too old: refused.
    for (what, proof) in [
        (
            "another method",
            client.proof("POST", "/v1/me", Some(&access), None),
        ),
        (
            "another URL",
            client.proof("GET", "/v1/sessions", Some(&access), None),
        ),
        (
            "another token",
            client.proof("GET", "/v1/me", Some("other"), None),
        ),
        ("no token hash", client.proof("GET", "/v1/me", None, None)),
    ] {
        let r = client.me(&access, Some(proof)).await;
        assert!(
            challenge(&r).contains("error=\"invalid_dpop_proof\""),
            "{what}: {}",
            challenge(&r)
        );
        let body = problem(r, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body["error"], "invalid_dpop_proof", "{what}");
    }
    let old = client
        .key
        .proof_at(
            "GET",
            &format!("{}/v1/me", app.origin),
            Some(&access),
            None,
            app.clock.now().unix_seconds() - 61,
        )
        .unwrap();
    assert_eq!(
        client.me(&access, Some(old)).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A good proof works once; the same proof again is a replay.
    let proof = client.proof("GET", "/v1/me", Some(&access), None);
    assert_eq!(
        client.me(&access, Some(proof.clone())).await.status(),
        StatusCode::OK
    );
    let r = client.me(&access, Some(proof)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&r).contains("invalid_dpop_proof"));

    // A thief with the token and a key of their own: the proof verifies, but the key is not
    // the one the token is bound to.
    let thief = Client::es256(&app);
    let r = thief
        .me(
            &access,
            Some(thief.proof("GET", "/v1/me", Some(&access), None)),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&r).contains("error=\"invalid_token\""));

    // A bound token in the hybrid model's cookie carries no proof: refused too.
    let r = app
        .request(Method::GET, "/v1/me")
        .header("cookie", format!("__Host-tessera-at={access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The owner goes on.
    let r = client
        .me(
            &access,
            Some(client.proof("GET", "/v1/me", Some(&access), None)),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

async fn a_stolen_refresh_token_is_useless_without_the_key_and_is_recorded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let root = admin(&app).await;
    register(&app, "alice").await;
    let client = Client::ed25519(&app);
    let (_, refresh) = client.bound_pair("alice").await;

    // Without a proof, and with a proof of the thief's own key: refused, and not used up.
    let r = client.refresh(&refresh, None).await;
    let body = problem(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["error"], "invalid_dpop_proof");
    let thief = Client::ed25519(&app);
    let r = thief
        .refresh(
            &refresh,
            Some(thief.proof("POST", "/v1/token/refresh", None, None)),
        )
        .await;
    problem(r, StatusCode::BAD_REQUEST).await;

    // Both attempts are in the audit log.
    let r = app
        .request(Method::GET, "/v1/admin/events?limit=200")
        .bearer_auth(&root.access)
        .send()
        .await
        .unwrap();
    let events: Value = r.json().await.unwrap();
    let refused: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "dpop_binding_refused")
        .collect();
    assert_eq!(refused.len(), 2, "{events}");

    // The owner's refresh still works: the thief's attempts ended nothing.
    let r = client
        .refresh(
            &refresh,
            Some(client.proof("POST", "/v1/token/refresh", None, None)),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

async fn nonces_are_asked_for_and_then_accepted(backend: Backend) {
    let app = spawn_with_dpop(
        backend,
        DpopConfig {
            nonce: true,
            ..DpopConfig::default()
        },
    )
    .await;
    register(&app, "alice").await;
    let client = Client::es256(&app);

    // The first login has no nonce: refused, with one to use.
    let r = client.login("alice", None).await;
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let body = problem(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["error"], "use_dpop_nonce");
    let r = client.login("alice", Some("not-a-nonce")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let r = client.login("alice", Some(&nonce)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers().contains_key("dpop-nonce"),
        "a success brings the nonce too"
    );
    let body: Value = r.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();

    // Resources ask for it the same way, with a 401.
    let r = client
        .me(
            &access,
            Some(client.proof("GET", "/v1/me", Some(&access), None)),
        )
        .await;
    assert!(challenge(&r).contains("error=\"use_dpop_nonce\""));
    assert!(r.headers().contains_key("dpop-nonce"));
    assert_eq!(
        problem(r, StatusCode::UNAUTHORIZED).await["error"],
        "use_dpop_nonce"
    );
    let r = client
        .me(
            &access,
            Some(client.proof("GET", "/v1/me", Some(&access), Some(&nonce))),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Nonces expire: ten minutes on, the old one is refused and a new one is handed out.
    app.clock.advance(Duration::from_secs(600));
    let r = client.login("alice", Some(&nonce)).await;
    let fresh = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_ne!(fresh, nonce);
    assert_eq!(
        problem(r, StatusCode::BAD_REQUEST).await["error"],
        "use_dpop_nonce"
    );
    assert_eq!(
        client.login("alice", Some(&fresh)).await.status(),
        StatusCode::OK
    );
}

async fn a_server_that_requires_dpop_issues_no_bearer_tokens(backend: Backend) {
    let app = spawn_with_dpop(
        backend,
        DpopConfig {
            required: true,
            ..DpopConfig::default()
        },
    )
    .await;
    register(&app, "alice").await;
    let r = app
        .request(Method::POST, "/v1/token")
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let body = problem(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["error"], "invalid_dpop_proof");
    assert!(body["detail"].as_str().unwrap().contains("DPoP"));
    let client = Client::es256(&app);
    let (_, refresh) = client.bound_pair("alice").await;
    assert_eq!(
        client.refresh(&refresh, None).await.status(),
        StatusCode::BAD_REQUEST
    );
    // Sessions are another model: untouched.
    assert_eq!(
        app.login_response("alice", PASSWORD).await.status(),
        StatusCode::OK
    );
}

async fn forward_auth_checks_the_proof_against_the_original_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    register(&app, "alice").await;
    let client = Client::es256(&app);
    let (access, _) = client.bound_pair("alice").await;
    let original = "https://app.example.com/orders";
    let verify = |proof: String| {
        app.request(Method::GET, "/v1/verify")
            .header("authorization", format!("DPoP {access}"))
            .header("dpop", proof)
            .header("x-forwarded-method", "POST")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "app.example.com")
            .header("x-forwarded-uri", "/orders?page=2")
            .send()
    };
    let now = app.clock.now().unix_seconds();
    let for_original = client
        .key
        .proof_at("POST", original, Some(&access), None, now)
        .unwrap();
    let r = verify(for_original).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key(USER_HEADER), "{:?}", r.headers());
    // A proof for the check itself (its own URL) names another request.
    let for_check = client.proof("GET", "/v1/verify", Some(&access), None);
    assert_eq!(
        verify(for_check).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // Without X-Forwarded-Host the original URL is unknown: refused, saying so.
    let r = app
        .request(Method::GET, "/v1/verify")
        .header("authorization", format!("DPoP {access}"))
        .header(
            "dpop",
            client
                .key
                .proof_at("POST", original, Some(&access), None, now)
                .unwrap(),
        )
        .header("x-forwarded-method", "POST")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-uri", "/orders")
        .send()
        .await
        .unwrap();
    let body = problem(r, StatusCode::UNAUTHORIZED).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("X-Forwarded-Host"),
        "{body}"
    );
}

async fn bad_proofs_are_clear_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    register(&app, "alice").await;
    let login = |proofs: Vec<&'static str>| {
        let mut request = app
            .request(Method::POST, "/v1/token")
            .json(&json!({"username": "alice", "password": PASSWORD}));
        for proof in proofs {
            request = request.header("dpop", proof);
        }
        request.send()
    };
    for proofs in [vec!["not a jwt"], vec!["a.b.c"], vec!["x", "y"]] {
        let r = login(proofs.clone()).await.unwrap();
        let body = problem(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["error"], "invalid_dpop_proof", "{proofs:?}");
        assert_eq!(body["type"], "urn:tessera:problem:invalid-dpop-proof");
    }
    // A proof for the refresh URL at the login URL.
    let client = Client::es256(&app);
    let r = app
        .request(Method::POST, "/v1/token")
        .header(
            "dpop",
            client.proof("POST", "/v1/token/refresh", None, None),
        )
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let body = problem(r, StatusCode::BAD_REQUEST).await;
    assert!(body["detail"].as_str().unwrap().contains("URL"), "{body}");

    // The metadata document names the algorithms.
    let r = app
        .request(Method::GET, "/.well-known/oauth-authorization-server")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let metadata: Value = r.json().await.unwrap();
    assert_eq!(
        metadata["dpop_signing_alg_values_supported"],
        json!(["ES256", "EdDSA"])
    );
    assert_eq!(metadata["issuer"], app.origin);
    assert_eq!(
        metadata["token_endpoint"],
        format!("{}/v1/token/refresh", app.origin)
    );
}

async fn a_copy_of_a_bound_token_cannot_end_or_show_its_login(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let root = admin(&app).await;
    register(&app, "alice").await;
    let client = Client::es256(&app);
    let (access, refresh) = client.bound_pair("alice").await;
    let revoke = |token: &str, proof: Option<String>| {
        let mut request = app
            .request(Method::POST, "/v1/token/revoke")
            .form(&[("token", token)]);
        if let Some(proof) = proof {
            request = request.header("dpop", proof);
        }
        request.send()
    };

    // Introspection says the token is bound, so a resource server that introspects knows not to
    // take it as a bearer token.
    let r = app
        .request(Method::POST, "/v1/token/introspect")
        .bearer_auth(&root.access)
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    let introspected: Value = r.json().await.unwrap();
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["cnf"]["jkt"], client.key.thumbprint());

    // A thief revoking with the copies alone (or with a key of their own): 200, and nothing
    // ends.
    let thief = Client::es256(&app);
    for token in [&access, &refresh] {
        assert_eq!(revoke(token, None).await.unwrap().status(), StatusCode::OK);
        let theirs = thief.proof("POST", "/v1/token/revoke", None, None);
        assert_eq!(
            revoke(token, Some(theirs)).await.unwrap().status(),
            StatusCode::OK
        );
    }
    // Nor can the copied refresh token be shown, refreshed or ended through the hybrid model's
    // cookie routes.
    let cookie = format!("__Host-tessera-rt={refresh}");
    let r = app
        .request(Method::GET, "/v1/hybrid/session")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app
        .request(Method::POST, "/v1/hybrid/refresh")
        .header("cookie", &cookie)
        .header("origin", &app.origin)
        .header("x-csrf-token", "anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client
        .me(
            &access,
            Some(client.proof("GET", "/v1/me", Some(&access), None)),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "the owner's login goes on");

    // A login made without DPoP is not bound halfway by a proof at refresh.
    let r = app
        .request(Method::POST, "/v1/token")
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let bearer: Value = r.json().await.unwrap();
    let r = client
        .refresh(
            bearer["refresh_token"].as_str().unwrap(),
            Some(client.proof("POST", "/v1/token/refresh", None, None)),
        )
        .await;
    let body = problem(r, StatusCode::BAD_REQUEST).await;
    assert!(
        body["detail"].as_str().unwrap().contains("without DPoP"),
        "{body}"
    );

    // The owner, with the key, revokes: the login ends.
    let mine = client.proof("POST", "/v1/token/revoke", None, None);
    assert_eq!(
        revoke(&refresh, Some(mine)).await.unwrap().status(),
        StatusCode::OK
    );
    let r = client
        .me(
            &access,
            Some(client.proof("GET", "/v1/me", Some(&access), None)),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

async fn proofs_are_recorded_only_once_the_credentials_were_right(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    register(&app, "alice").await;
    let client = Client::ed25519(&app);
    let proof = client.proof("POST", "/v1/token", None, None);
    let login = |password: &'static str| {
        app.request(Method::POST, "/v1/token")
            .header("dpop", &proof)
            .json(&json!({"username": "alice", "password": password}))
            .send()
    };
    // A wrong password spends the proof's request, not the proof: nobody without the password
    // can fill the replay store.
    assert_eq!(
        login("not the password at all").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let r = login(PASSWORD).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let first: Value = r.json().await.unwrap();
    let access = first["access_token"].as_str().unwrap();
    // Once it made a login, it is spent; the replay makes no second login.
    let r = login(PASSWORD).await.unwrap();
    let body = problem(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["error"], "invalid_dpop_proof");
    let r = app
        .request(Method::GET, "/v1/sessions")
        .header("authorization", format!("DPoP {access}"))
        .header(
            "dpop",
            client.proof("GET", "/v1/sessions", Some(access), None),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let logins: Value = r.json().await.unwrap();
    assert_eq!(logins.as_array().unwrap().len(), 1, "{logins}");
}

async fn a_login_with_a_second_factor_keeps_its_key(backend: Backend) {
    use tessera_core::TotpSecret;

    let app = TestApp::spawn(backend).await;
    register(&app, "alice").await;
    // TOTP set up from a bearer login.
    let r = app
        .request(Method::POST, "/v1/token")
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let bearer: Value = r.json().await.unwrap();
    let bearer = bearer["access_token"].as_str().unwrap().to_owned();
    let r = app
        .request(Method::POST, "/v1/account/totp")
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    let enrolment: Value = r.json().await.unwrap();
    let secret = TotpSecret::from_base32(enrolment["secret"].as_str().unwrap()).unwrap();
    let r = app
        .request(Method::POST, "/v1/account/totp/confirm")
        .bearer_auth(&bearer)
        .json(&json!({"code": secret.code_at(app.clock.now()), "current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    app.clock.advance(Duration::from_secs(30));

    // A DPoP login answers with a challenge…
    let client = Client::es256(&app);
    let r = client.login("alice", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let challenge: Value = r.json().await.unwrap();
    assert_eq!(challenge["second_factor_required"], true);
    let challenge = challenge["challenge"].as_str().unwrap().to_owned();
    let complete = |proof: Option<String>| {
        let mut request = app
            .request(Method::POST, "/v1/login/second-factor")
            .json(&json!({"challenge": challenge, "code": secret.code_at(app.clock.now())}));
        if let Some(proof) = proof {
            request = request.header("dpop", proof);
        }
        request.send()
    };
    // …which only the same key completes: not without a proof, not with another key (and
    // neither attempt uses the challenge up).
    let r = complete(None).await.unwrap();
    assert_eq!(
        problem(r, StatusCode::BAD_REQUEST).await["error"],
        "invalid_dpop_proof"
    );
    let thief = Client::es256(&app);
    let r = complete(Some(thief.proof(
        "POST",
        "/v1/login/second-factor",
        None,
        None,
    )))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = complete(Some(client.proof(
        "POST",
        "/v1/login/second-factor",
        None,
        None,
    )))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let pair: Value = r.json().await.unwrap();
    assert_eq!(pair["token_type"], "DPoP");
    let access = pair["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&access)["cnf"]["jkt"], client.key.thumbprint());
    assert_eq!(claims(&access)["acr"], "aal2");

    // A step-up on the bound login, with its proof, gives a token bound to the same key.
    app.clock.advance(Duration::from_secs(30));
    let r = app
        .request(Method::POST, "/v1/account/step-up")
        .header("authorization", format!("DPoP {access}"))
        .header(
            "dpop",
            client.proof("POST", "/v1/account/step-up", Some(&access), None),
        )
        .json(&json!({"code": secret.code_at(app.clock.now())}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let stepped: Value = r.json().await.unwrap();
    assert_eq!(stepped["token_type"], "DPoP");
    let fresh = stepped["access_token"].as_str().unwrap();
    assert_eq!(claims(fresh)["cnf"]["jkt"], client.key.thumbprint());
}
