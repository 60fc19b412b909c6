//! `tessera user delete`: an operator deletes an account from the command line, by username or
//! id, on a stopped server (the embedded SQLite file) and on a running one (PostgreSQL and Redis,
//! where the change feed carries the deletion to the server at once). Every credential of the
//! account is refused afterwards, and the name registers again from nothing. Without `--yes` and
//! without a terminal to ask on, it refuses.
//!
//! The running-server test needs PostgreSQL (`TESSERA_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`) and Redis (`TESSERA_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`); it uses a schema and key prefix of its own and removes both.

mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use harness::{NO_ENV, Node, Shared, add_user, run, run_with_input};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
/// How long a change may take to reach the running server before the test fails.
const PATIENCE: Duration = Duration::from_secs(5);

/// A session cookie (`name=value`) and an access token of `username`, from `base`.
async fn credentials(client: &reqwest::Client, base: &str, username: &str) -> (String, String) {
    let r = client
        .post(format!("{base}/v1/session/login"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "session login");
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-tessera="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let r = client
        .post(format!("{base}/v1/token"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "token login");
    let body: Value = r.json().await.unwrap();
    (cookie, body["access_token"].as_str().unwrap().to_owned())
}

async fn me(
    client: &reqwest::Client,
    base: &str,
    cookie: Option<&str>,
    bearer: Option<&str>,
) -> StatusCode {
    let mut rb = client.get(format!("{base}/v1/me"));
    if let Some(cookie) = cookie {
        rb = rb.header("cookie", cookie);
    }
    if let Some(bearer) = bearer {
        rb = rb.bearer_auth(bearer);
    }
    rb.send().await.unwrap().status()
}

async fn login_status(client: &reqwest::Client, base: &str, username: &str) -> StatusCode {
    client
        .post(format!("{base}/v1/token"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .status()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn an_operator_deletes_an_account_of_a_stopped_server() {
    let dir = tempfile::tempdir().unwrap();
    let id = add_user(dir.path(), NO_ENV, "carol", false, PASSWORD);
    add_user(dir.path(), NO_ENV, "dave", false, PASSWORD);
    let server = Node::start(dir.path(), &[], NO_ENV);
    let client = reqwest::Client::new();
    let (cookie, access) = credentials(&client, &server.base, "carol").await;
    assert_eq!(server.stop().code(), Some(0));

    // Standard input is not a terminal: no confirmation can be asked, so it refuses.
    let out = run_with_input(dir.path(), &["user", "delete", "carol"], NO_ENV, "carol\n");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    // An unknown account is named.
    let out = run(dir.path(), &["user", "delete", "nobody", "--yes"], NO_ENV);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no user \"nobody\""),
        "{}",
        stderr(&out)
    );
    let out = run(
        dir.path(),
        &["user", "delete", "usr_AAAAAAAAAAAAAAAAAAAAAB", "--yes"],
        NO_ENV,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no user"), "{}", stderr(&out));

    // By username, spelled as a login reads it.
    let out = run(dir.path(), &["user", "delete", "CAROL", "--yes"], NO_ENV);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
    // Gone: a second deletion, by id, finds nothing.
    let out = run(dir.path(), &["user", "delete", &id, "--yes"], NO_ENV);
    assert_eq!(out.status.code(), Some(1));

    let server = Node::start(dir.path(), &[], NO_ENV);
    assert_eq!(
        me(&client, &server.base, Some(&cookie), None).await,
        StatusCode::UNAUTHORIZED,
        "the session cookie is refused"
    );
    assert_eq!(
        me(&client, &server.base, None, Some(&access)).await,
        StatusCode::UNAUTHORIZED,
        "the access token is refused"
    );
    assert_eq!(
        login_status(&client, &server.base, "carol").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login_status(&client, &server.base, "dave").await,
        StatusCode::OK
    );
    // The name is free again.
    let r = client
        .post(format!("{}/v1/users", server.base))
        .json(&json!({"username": "carol", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (_, fresh) = credentials(&client, &server.base, "carol").await;
    assert_eq!(
        me(&client, &server.base, None, Some(&fresh)).await,
        StatusCode::OK
    );
}

/// Asks `probe` until it answers 401, for at most [`PATIENCE`]; any answer but 200 or 401 fails.
async fn refused<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StatusCode>,
{
    let since = Instant::now();
    loop {
        match probe().await {
            StatusCode::UNAUTHORIZED => return,
            StatusCode::OK => {}
            other => panic!("{what}: unexpected {other}"),
        }
        assert!(since.elapsed() < PATIENCE, "{what}: still accepted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_operator_deletes_an_account_of_a_running_server() {
    let shared = Shared::new("udel");
    let env = shared.env();
    let dir = tempfile::tempdir().unwrap();
    let id = add_user(dir.path(), &env, "erin", false, PASSWORD);
    let server = Node::start(dir.path(), &[], &env);
    let client = reqwest::Client::new();
    let (cookie, access) = credentials(&client, &server.base, "erin").await;
    assert_eq!(
        me(&client, &server.base, Some(&cookie), None).await,
        StatusCode::OK
    );
    assert_eq!(
        me(&client, &server.base, None, Some(&access)).await,
        StatusCode::OK
    );

    // By id, while the server runs.
    let out = run(dir.path(), &["user", "delete", &id, "--yes"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);

    refused("the session cookie", || {
        me(&client, &server.base, Some(&cookie), None)
    })
    .await;
    refused("the access token", || {
        me(&client, &server.base, None, Some(&access))
    })
    .await;
    assert_eq!(
        login_status(&client, &server.base, "erin").await,
        StatusCode::UNAUTHORIZED
    );
    assert_gone(dir.path(), &env, &id);
}

/// The command line finds the account gone.
fn assert_gone(dir: &Path, env: &[(&'static str, String)], id: &str) {
    let out = run(dir, &["user", "delete", id, "--yes"], env);
    assert_eq!(out.status.code(), Some(1), "the account is gone");
    assert!(stderr(&out).contains("no user"), "{}", stderr(&out));
}
