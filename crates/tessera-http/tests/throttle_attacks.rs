//! Attacks from outside on the account throttle (guesses sent all at once), the management
//! surface, and the parsers of device tokens and X-Forwarded-For.

mod common;
mod support;

use common::{Backend, Options, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tessera_core::{Rate, ThrottleConfig};

on_every_backend!(concurrent_guesses_do_not_exceed_the_accounts_budget);

/// The account's budget is checked before the password and spent only after a failure. Guesses
/// sent all at once (from addresses with budget to spare: a botnet, or one IPv6 /48 with many
/// /64s) all pass the check before the first failure is spent, so many more passwords are tried
/// than the budget allows.
async fn concurrent_guesses_do_not_exceed_the_accounts_budget(backend: Backend) {
    let options = Options {
        throttle: ThrottleConfig {
            per_account: Rate {
                burst: 3,
                per_minute: 1,
            },
            ..common::relaxed_throttle()
        },
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    app.accounts
        .create(
            "victim",
            &tessera_core::Password::new(common::PASSWORD),
            Vec::new(),
        )
        .await
        .unwrap();
    let url = format!("http://{}/v1/token", app.addr);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = app.client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            client
                .request(Method::POST, url)
                .json(&json!({"username": "victim", "password": format!("guess number {i}")}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut checked = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        checked <= 3,
        "{checked} passwords were checked against an account whose budget is 3"
    );
}

/// Probes that held: `/metrics` is not on the public port under any spelling; hostile device
/// tokens and `X-Forwarded-For` lines are never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_that_held() {
    let app = TestApp::spawn(Backend::Memory).await;
    for path in [
        "/metrics",
        "/metrics/",
        "/Metrics",
        "//metrics",
        "/v1/../metrics",
        "/%6detrics",
        "/metrics?x=1",
    ] {
        let r = app.request(Method::GET, path).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("tessera_"),
            "{path}: {status} exposes metrics"
        );
    }
    app.accounts
        .create(
            "alice",
            &tessera_core::Password::new(common::PASSWORD),
            Vec::new(),
        )
        .await
        .unwrap();
    let long = "A".repeat(100_000);
    let devices = [
        json!("."),
        json!(".."),
        json!("a.b.c"),
        json!(long),
        json!(format!("{long}.{long}")),
        json!(42),
        json!(null),
        json!(["x"]),
        json!("\u{0}.\u{0}"),
    ];
    for device in devices {
        let r = app
            .request(Method::POST, "/v1/token")
            .json(
                &json!({"username": "alice", "password": common::PASSWORD, "device_token": device}),
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().as_u16() < 500, "{device}: {}", r.status());
        let r = app
            .request(Method::POST, "/v1/session/login")
            .header(
                "cookie",
                format!(
                    "__Host-tessera-device={}",
                    device
                        .as_str()
                        .unwrap_or("x")
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(3000)
                        .collect::<String>()
                ),
            )
            .json(&json!({"username": "alice", "password": common::PASSWORD}))
            .send()
            .await
            .unwrap();
        assert!(r.status().as_u16() < 500, "cookie {device}: {}", r.status());
    }
    for xff in [
        "",
        ",,,,",
        "[::1]:80",
        "1.2.3.4:5",
        "fe80::1%eth0",
        "::ffff:0.0.0.0",
        &"1.1.1.1,".repeat(5000),
    ] {
        let r = app
            .request(Method::POST, "/v1/token")
            .header("x-forwarded-for", xff)
            .json(&json!({"username": "alice", "password": common::PASSWORD}))
            .send()
            .await
            .unwrap();
        assert!(r.status().as_u16() < 500, "xff {xff:.40}: {}", r.status());
    }
}
