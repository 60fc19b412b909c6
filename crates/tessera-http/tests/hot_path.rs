//! The request path reads no store: once a node has seen a credential (and its account), repeated
//! checks with a session cookie, a bearer token or the hybrid cookie — on `/v1/me` and on the
//! forward-auth route — are answered from memory. Counted on the memory store, which counts every
//! call made to it; and a change made through the API still reaches the next check at once.

mod common;
mod support;

use common::{Backend, TestApp};
use reqwest::{Method, StatusCode};
use support::{admin, login, user_id};

const CHECKS: usize = 50;

async fn calls_during(app: &TestApp, f: impl AsyncFnOnce()) -> u64 {
    let store = app.memory.as_ref().expect("a memory-store app");
    let before = store.calls();
    f().await;
    store.calls() - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_checks_in_every_model_make_no_store_call() {
    let app = TestApp::spawn(Backend::Memory).await;
    app.register("alice", common::PASSWORD).await;
    for model in ["session", "token", "hybrid"] {
        let login = login(&app, model, "alice").await;
        // The first check on this node may read the session and the account once.
        assert_eq!(login.me(&app).await, StatusCode::OK, "{model}");
        let calls = calls_during(&app, async || {
            for _ in 0..CHECKS {
                assert_eq!(login.me(&app).await, StatusCode::OK, "{model}");
                let verify = login
                    .request(&app, Method::GET, "/v1/verify")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(verify.status(), StatusCode::OK, "{model}");
                assert!(verify.headers().contains_key("x-tessera-user"));
            }
        })
        .await;
        assert_eq!(
            calls, 0,
            "{model}: {CHECKS} repeated checks of /v1/me and /v1/verify asked the store {calls} times"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_the_next_check_although_it_is_served_from_memory() {
    let app = TestApp::spawn(Backend::Memory).await;
    let admin = admin(&app).await;
    app.register("bob", common::PASSWORD).await;
    let bob = user_id(&app, "bob").await;
    let mut logins = Vec::new();
    for model in ["session", "token", "hybrid"] {
        let login = login(&app, model, "bob").await;
        assert_eq!(login.me(&app).await, StatusCode::OK);
        assert_eq!(login.me(&app).await, StatusCode::OK);
        logins.push(login);
    }
    // (A later millisecond than the tokens' issue: the server's clock is the test's.)
    app.clock.advance(std::time::Duration::from_millis(1));
    // A role change: the cached account is dropped, so the next check shows the new roles (a
    // session) or refuses the token issued with the old ones.
    let put = app
        .request(Method::PUT, &format!("/v1/admin/users/{bob}/roles"))
        .bearer_auth(&admin.access)
        .json(&serde_json::json!({"roles": ["editor"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let me: serde_json::Value = logins[0]
        .request(&app, Method::GET, "/v1/me")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["roles"], serde_json::json!(["editor"]));
    for login in &logins[1..] {
        assert_eq!(
            login.me(&app).await,
            StatusCode::UNAUTHORIZED,
            "{}",
            login.model()
        );
    }
    // Disabling the account ends the session at once too.
    let disable = app
        .request(Method::POST, &format!("/v1/admin/users/{bob}/disable"))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    assert_eq!(disable.status(), StatusCode::OK);
    assert_eq!(logins[0].me(&app).await, StatusCode::UNAUTHORIZED);
}
