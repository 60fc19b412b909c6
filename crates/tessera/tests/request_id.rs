//! Request ids on the real server: every response carries `X-Request-Id`; an id sent by a
//! trusted proxy is kept when well-formed, any other is replaced; the id is in the request's log
//! lines (text and JSON) and in the audit events the request recorded.

mod harness;

use std::time::{Duration, Instant};

use harness::{NO_ENV, Node, add_user};
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const PATIENCE: Duration = Duration::from_secs(30);

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The `X-Request-Id` of a response; fails if it has none.
fn id_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .expect("an X-Request-Id on every response")
        .to_str()
        .unwrap()
        .to_owned()
}

/// A fresh id: 32 lower-case hex digits.
fn is_fresh(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn start_with_config(toml: &str) -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tessera.toml"), toml).unwrap();
    let node = Node::start(dir.path(), &[], NO_ENV);
    (dir, node)
}

/// Waits until the server logged a line containing `needle`; returns it.
fn wait_for_log(node: &Node, needle: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(line) = node.log_text().lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needle:?}:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_has_an_id_and_strangers_cannot_choose_it() {
    let (_dir, node) = start_with_config(
        "database = \"memory\"\nplayground = false\n[http]\ntrusted_origins = [\"https://app.example.com\"]\n",
    );
    let c = client();
    let ok = c.get(node.url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let first = id_of(&ok);
    assert!(is_fresh(&first), "{first}");
    let again = id_of(&c.get(node.url("/healthz")).send().await.unwrap());
    assert_ne!(first, again, "every request has its own id");

    // Errors, problem documents and CORS preflights too.
    let missing = c.get(node.url("/no/such/path")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(is_fresh(&id_of(&missing)));
    let unauthorized = c.get(node.url("/v1/me")).send().await.unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    assert!(is_fresh(&id_of(&unauthorized)));
    let bad_json = c
        .post(node.url("/v1/session/login"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert!(bad_json.status().is_client_error());
    assert!(is_fresh(&id_of(&bad_json)));
    let preflight = c
        .request(reqwest::Method::OPTIONS, node.url("/v1/me"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert!(is_fresh(&id_of(&preflight)));
    // Scripts of a trusted origin may read it.
    let cors = c
        .get(node.url("/healthz"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    let exposed = cors.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");

    // No proxy is trusted: a client's own id is replaced, however well-formed.
    let r = c
        .get(node.url("/healthz"))
        .header("x-request-id", "chosen-by-the-client")
        .send()
        .await
        .unwrap();
    let id = id_of(&r);
    assert!(is_fresh(&id), "{id}");
    node.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_s_id_is_kept_in_the_response_the_log_and_the_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tessera.toml"),
        "playground = false\n[log]\nfilter = \"info,tessera_http=debug,tower_http=debug\"\n[http]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    )
    .unwrap();
    add_user(dir.path(), NO_ENV, "root", true, PASSWORD);
    let node = Node::start(dir.path(), &[], NO_ENV);
    let c = client();

    // Kept when well-formed.
    for good in ["proxy-req.42:x_y", "a", &"z".repeat(128)] {
        let r = c
            .get(node.url("/healthz"))
            .header("x-request-id", good)
            .send()
            .await
            .unwrap();
        assert_eq!(id_of(&r), good);
    }
    // Replaced when not: too long, empty, spaces, other punctuation, non-ASCII, control bytes.
    let too_long = "z".repeat(129);
    let bad: Vec<HeaderValue> = vec![
        HeaderValue::from_str(&too_long).unwrap(),
        HeaderValue::from_static(""),
        HeaderValue::from_static("has space"),
        HeaderValue::from_static("semi;colon"),
        HeaderValue::from_static("a/b"),
        HeaderValue::from_static("x%0d%0aSet-Cookie:%20a=b"),
        HeaderValue::from_bytes("café".as_bytes()).unwrap(),
        HeaderValue::from_bytes(b"tab\there").unwrap(),
    ];
    for value in bad {
        let r = c
            .get(node.url("/healthz"))
            .header("x-request-id", value.clone())
            .send()
            .await
            .unwrap();
        let id = id_of(&r);
        assert!(is_fresh(&id), "{value:?} was kept as {id}");
    }

    // The log lines of a request carry its id.
    let r = c
        .get(node.url("/healthz"))
        .header("x-request-id", "log-line-req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let line = wait_for_log(&node, "request_id=log-line-req-1");
    assert!(line.contains("path=/healthz"), "{line}");

    // The audit events of a login carry its id.
    let login = c
        .post(node.url("/v1/token"))
        .header("x-request-id", "login-req-7")
        .json(&json!({"username": "root", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    assert_eq!(id_of(&login), "login-req-7");
    let pair: Value = login.json().await.unwrap();
    let failed = c
        .post(node.url("/v1/token"))
        .header("x-request-id", "failed-login-req-8")
        .json(&json!({"username": "root", "password": "not the password at all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);
    let events: Value = c
        .get(node.url("/v1/admin/events?limit=50"))
        .bearer_auth(pair["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = events["events"].as_array().unwrap();
    let of = |id: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["detail"]["request_id"] == id)
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    let login_events = of("login-req-7");
    assert!(
        login_events.contains(&"login_succeeded".to_owned()),
        "{events:#?}"
    );
    assert_eq!(of("failed-login-req-8"), ["login_failed"], "{events:#?}");
    node.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_the_id() {
    let (_dir, node) = start_with_config(
        "database = \"memory\"\nplayground = false\n[log]\nformat = \"json\"\nfilter = \"info,tower_http=debug\"\n",
    );
    let r = client().get(node.url("/healthz")).send().await.unwrap();
    let id = id_of(&r);
    let line = wait_for_log(&node, &id);
    let parsed: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(parsed["request_id"], id.as_str(), "{line}");
}
