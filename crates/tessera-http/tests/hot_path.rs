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

/// Credential cookies are found by their exact names, and one sent twice is trusted in neither
/// copy: a sibling subdomain can plant a second cookie of the same name (or one whose name only
/// decodes to it), and the server cannot tell which one it set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_cookies_are_read_by_exact_name_and_never_twice() {
    let app = TestApp::spawn(Backend::Memory).await;
    app.register("alice", common::PASSWORD).await;
    app.register("mallory", common::PASSWORD).await;
    let alice = app.login("alice", common::PASSWORD).await;
    let mallory = app.login("mallory", common::PASSWORD).await;
    let (a, m) = (alice.cookie.unwrap(), mallory.cookie.unwrap());
    let alice_hybrid = support::hybrid_login(&app, "alice").await;
    let mallory_hybrid = support::hybrid_login(&app, "mallory").await;
    let (ah, mh) = (alice_hybrid.at.unwrap(), mallory_hybrid.at.unwrap());
    let me = async |cookie: String| {
        app.request(Method::GET, "/v1/me")
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(me(format!("__Host-tessera={a}")).await, StatusCode::OK);
    assert_eq!(me(format!("__Host-tessera-at={ah}")).await, StatusCode::OK);
    for cookie in [
        // Two values, in either order, in one header or two.
        format!("__Host-tessera={a}; __Host-tessera={m}"),
        format!("__Host-tessera={m}; __Host-tessera={a}"),
        format!("__Host-tessera-at={ah}; __Host-tessera-at={mh}"),
        // Names that only decode to ours.
        format!("__%48ost-tessera={m}"),
        format!("__Host%2Dtessera={m}"),
        format!("__host-tessera={m}"),
        format!("__%48ost-tessera-at={mh}"),
    ] {
        assert_eq!(
            me(cookie.clone()).await,
            StatusCode::UNAUTHORIZED,
            "{cookie}"
        );
    }
    // The same cookie in two Cookie headers is two values too.
    let r = app
        .request(Method::GET, "/v1/me")
        .header("cookie", format!("__Host-tessera={a}"))
        .header("cookie", format!("__Host-tessera={m}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A decoded look-alike next to the genuine cookie neither replaces nor spoils it.
    let r = me(format!("__Host-tessera={a}; __%48ost-tessera={m}")).await;
    assert_eq!(r, StatusCode::OK);
}
