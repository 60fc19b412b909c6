//! The example service over HTTP, against the stand-in Tessera that `tessera-verify`'s tests use
//! (a JWKS and a revocation stream on 127.0.0.1): once in process, once as the binary configured
//! from the environment.

#[path = "../../../crates/tessera-verify/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{AUDIENCE, CLIENT_ID, CLIENT_SECRET, FakeTessera, ISSUER, SigningKey, claims};
use tessera_verify::Verifier;

/// The service on 127.0.0.1:0, in this process; returns its base URL.
async fn serve(fake: &FakeTessera) -> String {
    let verifier = Verifier::builder(ISSUER, AUDIENCE)
        .server_url(&fake.base)
        .service_credentials(CLIENT_ID, CLIENT_SECRET)
        .build()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), verifier.ready())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, resource_service::app(verifier))
            .await
            .unwrap();
    });
    base
}

async fn get(
    base: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

#[tokio::test]
async fn public_me_admin_and_readiness() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let base = serve(&fake).await;
    let reader = key.sign(&claims("usr_reader", "j1"));
    let admin = key.sign(&support::with_roles(claims("usr_admin", "j2"), &["admin"]));

    let (status, _, body) = get(&base, "/public", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["message"].is_string());

    let (status, headers, body) = get(&base, "/me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["status"], 401);

    let (status, _, body) = get(&base, "/me", Some(&reader)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["sub"], "usr_reader");
    assert_eq!(body["roles"], json!(["reader"]));
    assert_eq!(body["kid"], "k1");
    assert_eq!(body["model"], "token");

    let (status, headers, _) = get(&base, "/me", Some("not-a-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );

    let (status, headers, body) = get(&base, "/admin", Some(&reader)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["status"], 403);
    let (status, _, body) = get(&base, "/admin", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["sub"], "usr_admin");
    assert_eq!(get(&base, "/admin", None).await.0, StatusCode::UNAUTHORIZED);

    // A revoked token is refused by the service within moments.
    fake.revoke(
        json!({"kind": "token", "jti": "j2", "expires_at": support::now_millis() + 600_000}),
    );
    let mut refused = false;
    for _ in 0..100 {
        if get(&base, "/admin", Some(&admin)).await.0 == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the revoked admin token still works");

    let (status, _, body) = get(&base, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["stream"], "Live");
}

#[tokio::test]
async fn the_gateway_route_echoes_identity_headers_without_checking() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let base = serve(&fake).await;
    let response = reqwest::Client::new()
        .get(format!("{base}/gateway/orders/42"))
        .header("X-Tessera-User", "usr_1")
        .header("X-Tessera-Username", "alice")
        .header("X-Tessera-Roles", "admin,reader")
        .header("X-Other", "ignored")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "path": "orders/42",
            "headers": {
                "x-tessera-user": "usr_1",
                "x-tessera-username": "alice",
                "x-tessera-roles": "admin,reader",
            }
        })
    );
    let (status, _, body) = get(&base, "/gateway/x", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["headers"], json!({}));
}

#[tokio::test]
async fn the_binary_reads_its_configuration_from_the_environment() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_resource-service"))
        .env_clear()
        .env("TESSERA_URL", &fake.base)
        .env("TESSERA_ISSUER", ISSUER)
        .env("TESSERA_AUDIENCE", AUDIENCE)
        .env("TESSERA_CLIENT_ID", CLIENT_ID)
        .env("TESSERA_CLIENT_SECRET", CLIENT_SECRET)
        .env("LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on http://").nth(1) {
                let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_owned());
            }
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the service started");
    let base = format!("http://{addr}");
    let token = key.sign(&claims("usr_1", "j1"));
    let mut answer = None;
    for _ in 0..200 {
        let (status, _, body) = get(&base, "/me", Some(&token)).await;
        if status == StatusCode::OK {
            answer = Some(body);
            break;
        }
        // 503 until the first snapshot has arrived.
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(answer.expect("the token was accepted")["sub"], "usr_1");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "stopped cleanly on SIGTERM: {status}");
    let log = log.lock().unwrap().clone();
    assert!(!log.contains(CLIENT_SECRET), "the secret reached the log");
    assert!(!log.contains(&token), "a token reached the log");
}
