//! Review 10: attacks on the account throttle from outside.

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
