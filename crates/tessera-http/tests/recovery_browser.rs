//! The recovery link of a real mail opened in headless Chromium: the built-in page takes the code
//! out of the address bar, refuses two different passwords, sets the new password, and every
//! login of the account ends. The mail goes out over real SMTP to a server the test runs
//! (test-smtp), through the server's SMTP transport.
//!
//! Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian's `chromium`, `chromium-driver`);
//! fails when they are missing.

mod common;
mod webdriver;

use std::sync::Arc;
use std::time::Duration;

use common::{Backend, Options, PASSWORD, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_smtp::{SmtpOptions, SmtpServer};
use webdriver::Chromium;

const NEW_PASSWORD: &str = "set in the browser";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recovery_link_opens_a_page_that_sets_the_new_password() {
    let smtp = SmtpServer::start(SmtpOptions::default()).await;
    let transport = tessera_mail::SmtpTransport::new(tessera_mail::SmtpSettings {
        url: format!("smtp://127.0.0.1:{}", smtp.port()).into(),
        password: None,
        from: "Tessera test <no-reply@example.org>".into(),
        timeout: Duration::from_secs(10),
        extra_roots: Vec::new(),
    })
    .expect("an SMTP transport");
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options {
            mail: Some(Arc::new(transport)),
            ..Options::default()
        },
    )
    .await;
    let r = app
        .request(Method::POST, "/v1/users")
        .json(&json!({"username": "alice", "password": PASSWORD, "email": "alice@example.org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let browser = app.login("alice", PASSWORD).await;
    let r = app
        .request(Method::POST, "/v1/account/recovery")
        .json(&json!({"username": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mail = smtp
        .inbox()
        .wait_for(
            |m| m.subject().is_some_and(|s| s.contains("recovery")),
            Duration::from_secs(30),
        )
        .await
        .expect("the recovery mail");
    let text = mail.text().unwrap();
    let link = text
        .split_whitespace()
        .find(|w| w.contains("/account/recovery?code="))
        .expect("a link in the mail")
        .to_owned();
    assert!(link.starts_with(&app.origin), "{link} is on the server");

    let chromium = Chromium::start().await;
    chromium.goto(&link).await;
    chromium
        .wait_for(
            "the recovery form",
            "const f = document.getElementById('recovery'); return f && !f.hidden;",
            json!([]),
        )
        .await;
    let search = chromium.execute("return location.search;", json!([])).await;
    assert_eq!(search, "", "the code is out of the address bar");
    let referrer = chromium
        .execute(
            "return document.querySelector('meta[name=referrer]').content;",
            json!([]),
        )
        .await;
    assert_eq!(referrer, "no-referrer");

    // Two different passwords: refused in the page, the code unspent.
    chromium.fill("#new-password", NEW_PASSWORD).await;
    chromium.fill("#confirm-password", "something else").await;
    chromium.click("#recovery-submit").await;
    chromium
        .wait_for(
            "the mismatch message",
            "return document.getElementById('status').className === 'error';",
            json!([]),
        )
        .await;
    chromium
        .execute(
            "document.getElementById('confirm-password').value = '';",
            json!([]),
        )
        .await;
    chromium.fill("#confirm-password", NEW_PASSWORD).await;
    chromium.click("#recovery-submit").await;
    let status = chromium
        .wait_for(
            "the password to be set",
            "const s = document.getElementById('status'); \
             return s.className === 'done' ? s.textContent : null;",
            json!([]),
        )
        .await;
    assert!(status.as_str().unwrap().contains("password"), "{status}");

    // The session the user had is gone; the new password logs in, the old one does not. (The
    // test's clock stands still: move it past the instant the recovery voided every login.)
    app.clock.advance(Duration::from_secs(1));
    let r = app
        .as_browser(&browser, Method::GET, "/v1/me", false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app.login_response("alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app.login_response("alice", NEW_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["user"]["email_verified"], true,
        "the code verified the address: {body}"
    );
    smtp.stop().await;
}
