//! The token model end to end: login, refresh rotation with reuse detection and a grace window,
//! revocation in every mode, key rotation and retirement, introspection, JWKS.

mod common;
mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Backend, Options, PASSWORD, TestApp, problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_core::SigningAlgorithm;
use tessera_core::token::{RevocationMode, TokenConfig};
use tessera_http::{HttpConfig, IntrospectionClient};

on_every_backend!(
    login_issues_an_rfc9068_access_token_and_a_refresh_token,
    refresh_rotates_and_reuse_after_the_grace_window_kills_the_family,
    concurrent_refreshes_inside_the_window_all_get_valid_pairs,
    a_replay_inside_the_window_grows_no_second_branch,
    revoking_an_expired_access_token_has_no_effect_on_its_login,
    revoking_a_refresh_token_ends_its_family,
    revoking_an_access_token_denylists_it_and_ends_its_family,
    unknown_tokens_revoke_with_200,
    access_tokens_expire,
    families_expire_when_idle_and_at_their_absolute_lifetime,
    key_rotation_overlaps_and_retirement_is_immediate,
    introspection_needs_a_client_or_an_admin,
    reuse_is_recorded_as_a_security_event,
);

fn token_options(revocation: RevocationMode) -> Options {
    Options {
        tokens: TokenConfig {
            revocation,
            ..TokenConfig::default()
        },
        http: HttpConfig {
            introspection_clients: vec![IntrospectionClient {
                id: "api".into(),
                secret: "a-long-introspection-secret".into(),
            }],
            ..tessera_http::HttpConfig::default()
        },
        ..Options::default()
    }
}

struct Pair {
    access: String,
    refresh: String,
}

async fn token_login(app: &TestApp, username: &str) -> Pair {
    let r = app
        .request(Method::POST, "/v1/token")
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    pair_of(r.json().await.unwrap())
}

fn pair_of(body: Value) -> Pair {
    assert_eq!(body["token_type"], "Bearer");
    Pair {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
    }
}

async fn refresh(app: &TestApp, refresh_token: &str) -> reqwest::Response {
    app.request(Method::POST, "/v1/token/refresh")
        .json(&json!({"refresh_token": refresh_token}))
        .send()
        .await
        .unwrap()
}

async fn me(app: &TestApp, access: &str) -> StatusCode {
    app.request(Method::GET, "/v1/me")
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .status()
}

fn segment(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

async fn login_issues_an_rfc9068_access_token_and_a_refresh_token(backend: Backend) {
    let app = TestApp::spawn_with(backend, token_options(RevocationMode::Denylist)).await;
    app.register("alice", PASSWORD).await;
    let r = app
        .request(Method::POST, "/v1/token")
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(
        r.headers().get("set-cookie").is_none(),
        "the token model sets no cookie"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["expires_in"], 600);
    let pair = pair_of(body);
    assert_eq!(pair.refresh.len(), 43, "256-bit opaque refresh token");

    let header = segment(&pair.access, 0);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    let claims = segment(&pair.access, 1);
    assert_eq!(claims["iss"], app.origin.as_str());
    assert_eq!(claims["aud"], "tessera");
    assert!(claims["sub"].as_str().unwrap().starts_with("usr_"));
    assert_eq!(claims["client_id"], "tessera");
    assert_eq!(claims["roles"], json!([]));
    assert!(claims["fid"].as_str().unwrap().starts_with("fam_"));
    let (iat, exp, nbf) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
        claims["nbf"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 600);
    assert_eq!(nbf, iat);
    assert!(claims["jti"].as_str().unwrap().len() > 16);

    // The kid is in the JWKS, with public members only.
    let jwks: Value = app
        .request(Method::GET, "/.well-known/jwks.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], header["kid"]);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["use"], "sig");
    assert!(keys[0].get("d").is_none());

    let r = app
        .request(Method::GET, "/v1/me")
        .bearer_auth(&pair.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["user"]["username"], "alice");
    assert_eq!(me["auth"]["model"], "token");
    assert_eq!(me["auth"]["family_id"], claims["fid"]);

    // Wrong password: the same generic 401 as the session login.
    let r = app
        .request(Method::POST, "/v1/token")
        .json(&json!({"username": "alice", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    let body = problem(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["detail"], "invalid username or password");
}

async fn refresh_rotates_and_reuse_after_the_grace_window_kills_the_family(backend: Backend) {
    let app = TestApp::spawn_with(backend, token_options(RevocationMode::Denylist)).await;
    app.register("alice", PASSWORD).await;
    let first = token_login(&app, "alice").await;
    let other_login = token_login(&app, "alice").await;

    let r = refresh(&app, &first.refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    let second = pair_of(r.json().await.unwrap());
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    assert_eq!(
        segment(&second.access, 1)["fid"],
        segment(&first.access, 1)["fid"]
    );
    assert_eq!(me(&app, &second.access).await, StatusCode::OK);

    // The rotated token, presented after the grace window: theft. The family dies.
    app.clock.advance(Duration::from_secs(6));
    let r = refresh(&app, &first.refresh).await;
    let body = problem(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["type"], "urn:tessera:problem:invalid-grant");
    // Every token of the family is dead: the legitimate new refresh token and both access tokens.
    assert_eq!(
        refresh(&app, &second.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me(&app, &second.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &first.access).await, StatusCode::UNAUTHORIZED);
    // Another login of the same user is untouched.
    assert_eq!(me(&app, &other_login.access).await, StatusCode::OK);
    assert_eq!(
        refresh(&app, &other_login.refresh).await.status(),
        StatusCode::OK
    );
    // Garbage refresh tokens get the same answer.
    for bad in ["", "nope", &"A".repeat(43)] {
        problem(refresh(&app, bad).await, StatusCode::UNAUTHORIZED).await;
    }
    // Form bodies work too (OAuth clients).
    let fresh = token_login(&app, "alice").await;
    let r = app
        .request(Method::POST, "/v1/token/refresh")
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", fresh.refresh.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .request(Method::POST, "/v1/token/refresh")
        .form(&[("grant_type", "password"), ("refresh_token", "x")])
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
}

async fn concurrent_refreshes_inside_the_window_all_get_valid_pairs(backend: Backend) {
    let app = TestApp::spawn_with(backend, token_options(RevocationMode::Denylist)).await;
    app.register("alice", PASSWORD).await;
    let start = token_login(&app, "alice").await;
    // Five tabs refresh with the same token at once.
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let request = app
            .request(Method::POST, "/v1/token/refresh")
            .json(&json!({"refresh_token": start.refresh}));
        tasks.push(tokio::spawn(async move { request.send().await.unwrap() }));
    }
    let mut pairs = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "a concurrent refresh was treated as theft"
        );
        pairs.push(pair_of(r.json().await.unwrap()));
    }
    // One more, late but inside the window (a slow tab).
    app.clock.advance(Duration::from_secs(3));
    let r = refresh(&app, &start.refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    pairs.push(pair_of(r.json().await.unwrap()));
    // Every tab ends up with a working access token.
    for pair in &pairs {
        assert_eq!(me(&app, &pair.access).await, StatusCode::OK);
    }
    // The login goes on along one branch: the first of those refresh tokens to be used.
    let r = refresh(&app, &pairs[2].refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    let going_on = pair_of(r.json().await.unwrap());
    assert_eq!(me(&app, &going_on.access).await, StatusCode::OK);
}

/// The grace window lets concurrent refreshes each get an answer, but a second holder of a
/// refresh token cannot grow a chain of its own: the first of the answers to be refreshed goes
/// on, and using another afterwards is reuse, which ends the whole login and is recorded.
async fn a_replay_inside_the_window_grows_no_second_branch(backend: Backend) {
    let app = TestApp::spawn_with(backend, token_options(RevocationMode::Denylist)).await;
    app.register("alice", PASSWORD).await;
    let start = token_login(&app, "alice").await;
    // The owner refreshes; a thief replays the same token a second later, inside the window.
    let r = refresh(&app, &start.refresh).await;
    let owner = pair_of(r.json().await.unwrap());
    app.clock.advance(Duration::from_secs(1));
    let r = refresh(&app, &start.refresh).await;
    assert_eq!(r.status(), StatusCode::OK, "inside the window: an answer");
    let thief = pair_of(r.json().await.unwrap());
    // The owner goes on…
    app.clock.advance(Duration::from_secs(1));
    let r = refresh(&app, &owner.refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    let owner = pair_of(r.json().await.unwrap());
    // …and the thief's branch has ended: using it is reuse, still inside the window.
    let body = problem(
        refresh(&app, &thief.refresh).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(body["type"], "urn:tessera:problem:invalid-grant");
    // Reuse ends the whole login, the owner's branch included: the owner logs in again, the
    // thief has nothing.
    assert_eq!(
        refresh(&app, &owner.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me(&app, &owner.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &thief.access).await, StatusCode::UNAUTHORIZED);
    let admin = support::admin(&app).await;
    let events: Value = app
        .request(Method::GET, "/v1/admin/events?limit=100")
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "refresh_reuse_detected" && e["detail"]["superseded"] == true),
        "the reuse is recorded: {events}"
    );

    // The same when the thief's branch is the one refreshed first: the owner's answer ends.
    let start = token_login(&app, "alice").await;
    let owner = pair_of(refresh(&app, &start.refresh).await.json().await.unwrap());
    let thief = pair_of(refresh(&app, &start.refresh).await.json().await.unwrap());
    assert_eq!(refresh(&app, &thief.refresh).await.status(), StatusCode::OK);
    assert_eq!(
        refresh(&app, &owner.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

async fn revoking_a_refresh_token_ends_its_family(backend: Backend) {
    let app = TestApp::spawn_with(backend, token_options(RevocationMode::Denylist)).await;
    app.register("alice", PASSWORD).await;
    let pair = token_login(&app, "alice").await;
    let r = app
        .request(Method::POST, "/v1/token/revoke")
        .form(&[
            ("token", pair.refresh.as_str()),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        refresh(&app, &pair.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me(&app, &pair.access).await, StatusCode::UNAUTHORIZED);
}

/// An expired access token is refused anyway: revoking it (RFC 7009) leaves its login alone, so
/// a token found in an old log cannot log its owner out.
async fn revoking_an_expired_access_token_has_no_effect_on_its_login(backend: Backend) {
    let app = TestApp::spawn_with(backend, token_options(RevocationMode::Denylist)).await;
    app.register("alice", PASSWORD).await;
    let pair = token_login(&app, "alice").await;
    app.clock.advance(Duration::from_secs(3600));
    let r = app
        .request(Method::POST, "/v1/token/revoke")
        .form(&[
            ("token", pair.access.as_str()),
            ("token_type_hint", "access_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = refresh(&app, &pair.refresh).await;
    assert_eq!(r.status(), StatusCode::OK, "the login goes on");
    let fresh = pair_of(r.json().await.unwrap());
    assert_eq!(me(&app, &fresh.access).await, StatusCode::OK);
}

async fn revoking_an_access_token_denylists_it_and_ends_its_family(backend: Backend) {
    let app = TestApp::spawn_with(backend, token_options(RevocationMode::Denylist)).await;
    app.register("alice", PASSWORD).await;
    let pair = token_login(&app, "alice").await;
    let other = token_login(&app, "alice").await;
    // JSON body, no hint: RFC 7009 lets the server find out.
    let r = app
        .request(Method::POST, "/v1/token/revoke")
        .json(&json!({"token": pair.access}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(me(&app, &pair.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(&app, &pair.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me(&app, &other.access).await, StatusCode::OK);
}

async fn unknown_tokens_revoke_with_200(backend: Backend) {
    let app = TestApp::spawn_with(backend, token_options(RevocationMode::Denylist)).await;
    for token in ["", "garbage", &"A".repeat(43), "a.b.c"] {
        let r = app
            .request(Method::POST, "/v1/token/revoke")
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{token:?}");
    }
    // A body without a token is a client error, not a 200.
    let r = app
        .request(Method::POST, "/v1/token/revoke")
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
}

async fn access_tokens_expire(backend: Backend) {
    let app = TestApp::spawn_with(backend, token_options(RevocationMode::Denylist)).await;
    app.register("alice", PASSWORD).await;
    let pair = token_login(&app, "alice").await;
    // 600 s lifetime and 5 s leeway.
    app.clock.advance(Duration::from_secs(600));
    assert_eq!(me(&app, &pair.access).await, StatusCode::OK);
    app.clock.advance(Duration::from_secs(6));
    let r = app
        .request(Method::GET, "/v1/me")
        .bearer_auth(&pair.access)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"tessera\", error=\"invalid_token\""
    );
    problem(r, StatusCode::UNAUTHORIZED).await;
    // The refresh token still gets a fresh access token.
    let r = refresh(&app, &pair.refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    let next = pair_of(r.json().await.unwrap());
    assert_eq!(me(&app, &next.access).await, StatusCode::OK);
}

async fn families_expire_when_idle_and_at_their_absolute_lifetime(backend: Backend) {
    let mut options = token_options(RevocationMode::Denylist);
    options.tokens.refresh_idle_lifetime = Duration::from_secs(3600);
    options.tokens.refresh_absolute_lifetime = Duration::from_secs(3 * 3600);
    let app = TestApp::spawn_with(backend, options).await;
    app.register("alice", PASSWORD).await;
    // Idle: unused for longer than an hour.
    let idle = token_login(&app, "alice").await;
    app.clock.advance(Duration::from_secs(3601));
    assert_eq!(
        refresh(&app, &idle.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Absolute: used every 50 minutes, still ends 3 hours after login.
    let mut current = token_login(&app, "alice").await.refresh;
    for _ in 0..3 {
        app.clock.advance(Duration::from_secs(50 * 60));
        let r = refresh(&app, &current).await;
        assert_eq!(r.status(), StatusCode::OK);
        current = pair_of(r.json().await.unwrap()).refresh;
    }
    app.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(
        refresh(&app, &current).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

async fn admin_bearer(app: &TestApp) -> String {
    app.accounts
        .create(
            "root",
            &tessera_core::Password::new(PASSWORD),
            vec!["admin".into()],
        )
        .await
        .unwrap();
    token_login(app, "root").await.access
}

async fn key_rotation_overlaps_and_retirement_is_immediate(backend: Backend) {
    let app = TestApp::spawn_with(backend, token_options(RevocationMode::Denylist)).await;
    app.register("alice", PASSWORD).await;
    let admin = admin_bearer(&app).await;
    let old = token_login(&app, "alice").await;
    let old_kid = segment(&old.access, 0)["kid"].as_str().unwrap().to_owned();

    // Non-admins may not rotate.
    let r = app
        .request(Method::POST, "/v1/admin/keys/rotate")
        .bearer_auth(&old.access)
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::FORBIDDEN).await;

    let r = app
        .request(Method::POST, "/v1/admin/keys/rotate")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let rotated: Value = r.json().await.unwrap();
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);

    // New tokens use the new key; tokens of the old key keep working; both are published.
    let new = token_login(&app, "alice").await;
    assert_eq!(segment(&new.access, 0)["kid"], new_kid.as_str());
    assert_eq!(me(&app, &old.access).await, StatusCode::OK);
    assert_eq!(me(&app, &new.access).await, StatusCode::OK);
    let kids = |jwks: Value| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    let jwks: Value = app
        .request(Method::GET, "/.well-known/jwks.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(kids(jwks), vec![new_kid.clone(), old_kid.clone()]);
    let listed: Value = app
        .request(Method::GET, "/v1/admin/keys")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // Once every token of the old key has expired, the old key leaves the JWKS.
    app.clock.advance(Duration::from_secs(600 + 6));
    let jwks: Value = app
        .request(Method::GET, "/.well-known/jwks.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(kids(jwks), vec![new_kid.clone()]);

    // Retiring a key invalidates its tokens at once, long before they expire.
    let admin = token_login(&app, "root").await.access;
    let victim = token_login(&app, "alice").await;
    let r = app
        .request(Method::POST, &format!("/v1/admin/keys/{new_kid}/retire"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(me(&app, &victim.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &admin).await, StatusCode::UNAUTHORIZED);
    // A new signing key took over; refreshing gives tokens that work.
    let r = refresh(&app, &victim.refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    let after = pair_of(r.json().await.unwrap());
    assert_ne!(segment(&after.access, 0)["kid"], new_kid.as_str());
    assert_eq!(me(&app, &after.access).await, StatusCode::OK);
    // Retiring twice, or an unknown kid: 404.
    let admin = token_login(&app, "root").await.access;
    for kid in [new_kid.as_str(), "k_nope"] {
        let r = app
            .request(Method::POST, &format!("/v1/admin/keys/{kid}/retire"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        problem(r, StatusCode::NOT_FOUND).await;
    }
}

async fn introspection_needs_a_client_or_an_admin(backend: Backend) {
    let app = TestApp::spawn_with(backend, token_options(RevocationMode::Denylist)).await;
    app.register("alice", PASSWORD).await;
    let pair = token_login(&app, "alice").await;
    let introspect =
        |token: String, auth: Option<(&'static str, &'static str)>, bearer: Option<String>| {
            let mut rb = app
                .request(Method::POST, "/v1/token/introspect")
                .form(&[("token", token)]);
            if let Some((id, secret)) = auth {
                rb = rb.basic_auth(id, Some(secret));
            }
            if let Some(b) = bearer {
                rb = rb.bearer_auth(b);
            }
            rb.send()
        };
    let client = Some(("api", "a-long-introspection-secret"));

    let r = introspect(pair.access.clone(), client, None).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["active"], true);
    assert_eq!(body["token_type"], "access_token");
    assert_eq!(body["username"], "alice");
    assert_eq!(body["aud"], "tessera");

    let body: Value = introspect(pair.refresh.clone(), client, None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["active"], true);
    assert_eq!(body["token_type"], "refresh_token");

    for bad in [
        Some(("api", "wrong-secret-of-some-length")),
        Some(("nope", "a-long-introspection-secret")),
        None,
    ] {
        let r = introspect(pair.access.clone(), bad, None).await.unwrap();
        problem(r, StatusCode::UNAUTHORIZED).await;
    }
    // A user's own token does not make them an introspection client; an admin's does.
    let r = introspect(pair.access.clone(), None, Some(pair.access.clone()))
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED).await;
    let admin = admin_bearer(&app).await;
    let r = introspect(pair.access.clone(), None, Some(admin))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Revoked and garbage tokens: inactive, and nothing else said.
    app.request(Method::POST, "/v1/token/revoke")
        .form(&[("token", pair.refresh.as_str())])
        .send()
        .await
        .unwrap();
    for token in [pair.access.clone(), pair.refresh.clone(), "garbage".into()] {
        let body: Value = introspect(token, client, None)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body, json!({"active": false}));
    }
}

async fn reuse_is_recorded_as_a_security_event(backend: Backend) {
    let app = TestApp::spawn_with(backend, token_options(RevocationMode::Denylist)).await;
    app.register("alice", PASSWORD).await;
    let pair = token_login(&app, "alice").await;
    refresh(&app, &pair.refresh).await;
    app.clock.advance(Duration::from_secs(30));
    refresh(&app, &pair.refresh).await;
    let events = app.stores.events.events(None, 50).await.unwrap();
    let reuse: Vec<_> = events
        .iter()
        .filter(|e| e.kind == tessera_core::EventKind::RefreshReuseDetected)
        .collect();
    assert_eq!(reuse.len(), 1);
    assert_eq!(reuse[0].detail["family"], segment(&pair.access, 1)["fid"]);
    assert!(
        !reuse[0].detail.to_string().contains(&pair.refresh),
        "a secret reached the audit log"
    );
}

/// The allowlist mode (白名單): only tokens the store lists as live are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_mode_accepts_only_live_tokens() {
    let app = TestApp::spawn_with(Backend::Sqlite, token_options(RevocationMode::Allowlist)).await;
    app.register("alice", PASSWORD).await;
    let pair = token_login(&app, "alice").await;
    assert_eq!(me(&app, &pair.access).await, StatusCode::OK);
    // A token with a valid signature whose jti was never issued is refused.
    let mut claims = segment(&pair.access, 1);
    claims["jti"] = json!("at_never_issued");
    let forged = app.tokens.sign_for_tests(Some("at+jwt"), &claims);
    assert_eq!(me(&app, &forged).await, StatusCode::UNAUTHORIZED);
    // Revocation removes it from the list.
    app.request(Method::POST, "/v1/token/revoke")
        .form(&[("token", pair.access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(me(&app, &pair.access).await, StatusCode::UNAUTHORIZED);

    // The same forged token passes in denylist mode: that is the difference between the two.
    let deny = TestApp::spawn_with(Backend::Memory, token_options(RevocationMode::Denylist)).await;
    deny.register("alice", PASSWORD).await;
    let genuine = token_login(&deny, "alice").await;
    let mut claims = segment(&genuine.access, 1);
    claims["jti"] = json!("at_never_issued");
    let unlisted = deny.tokens.sign_for_tests(Some("at+jwt"), &claims);
    assert_eq!(me(&deny, &unlisted).await, StatusCode::OK);
}

/// Pure stateless JWT: revoking stops the refresh token, not the access token, which lives until
/// it expires. Tessera shows the trade-off instead of hiding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_mode_none_only_stops_refresh() {
    let app = TestApp::spawn_with(Backend::Memory, token_options(RevocationMode::None)).await;
    app.register("alice", PASSWORD).await;
    let pair = token_login(&app, "alice").await;
    app.request(Method::POST, "/v1/token/revoke")
        .form(&[("token", pair.access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(me(&app, &pair.access).await, StatusCode::OK);
    assert_eq!(
        refresh(&app, &pair.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.clock.advance(Duration::from_secs(606));
    assert_eq!(me(&app, &pair.access).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_issues_tokens_that_verify() {
    for algorithm in [
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::ES256,
        SigningAlgorithm::RS256,
        SigningAlgorithm::HS256,
    ] {
        let app = TestApp::spawn_with(
            Backend::Memory,
            Options {
                algorithm,
                ..Options::default()
            },
        )
        .await;
        app.register("alice", PASSWORD).await;
        let pair = token_login(&app, "alice").await;
        assert_eq!(segment(&pair.access, 0)["alg"], algorithm.as_str());
        assert_eq!(me(&app, &pair.access).await, StatusCode::OK, "{algorithm}");
        let jwks = app
            .request(Method::GET, "/.well-known/jwks.json")
            .send()
            .await
            .unwrap();
        if algorithm == SigningAlgorithm::HS256 {
            // Publishing an HMAC key would publish the secret.
            problem(jwks, StatusCode::NOT_FOUND).await;
        } else {
            let jwks: Value = jwks.json().await.unwrap();
            let key = &jwks["keys"][0];
            for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                assert!(
                    key.get(private).is_none(),
                    "{algorithm} publishes {private}"
                );
            }
        }
    }
}

/// Revocations are stored before they are acknowledged: a restarted server still refuses a
/// revoked token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.db");
    let store = tessera_store::SqliteStore::open(&path).await.unwrap();
    let stores = tessera_core::Stores::from_one(store.clone());
    let clock = std::sync::Arc::new(tessera_core::SystemClock);
    let now = tessera_core::Clock::now(&*clock);
    let revocations = tessera_core::token::Revocations::load(
        stores.revocations.clone(),
        RevocationMode::Denylist,
        now,
    )
    .await
    .unwrap();
    let family = tessera_core::FamilyId::from_stored("fam_x".into());
    revocations
        .revoke(tessera_core::RevocationEntry {
            revoked: tessera_core::Revoked::Family { id: family.clone() },
            expires_at: now.saturating_add(Duration::from_secs(600)),
        })
        .await
        .unwrap();
    store.close().await;
    let reopened = tessera_store::SqliteStore::open(&path).await.unwrap();
    let stores = tessera_core::Stores::from_one(reopened);
    let loaded = tessera_core::token::Revocations::load(
        stores.revocations.clone(),
        RevocationMode::Denylist,
        now,
    )
    .await
    .unwrap();
    let user = tessera_core::UserId::from_stored("usr_x".into());
    assert!(loaded.check("at_1", &family, &user, now, now).is_some());
}
