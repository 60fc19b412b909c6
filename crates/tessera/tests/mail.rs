//! Account recovery and email verification over real SMTP: `tessera serve` sends through an SMTP
//! server the test runs on a spare port (test-smtp), and the test reads what arrives.
//!
//! - Registration with an address sends a verification mail whose code verifies it.
//! - Recovery: the mail arrives (in Chinese for `Accept-Language: zh-CN`) with a code that sets a
//!   new password once; a refused password does not spend it; a newer request voids the older
//!   code; every session and token of the user is refused afterwards.
//! - An unknown account and a known one get the same status, headers and body, in about the same
//!   time.
//! - Codes expire (an embedded server with a clock the test moves).
//! - The SMTP server down when the mail is asked for: the mail goes out once it is back, with a
//!   restart of Tessera in between.
//! - Two nodes on PostgreSQL and Redis: recovery on one ends the logins on the other.
//! - `require_verified_email`: logins refused with a problem that says why until the address is
//!   verified, or allowed with `email_verified: false` in `/v1/me` and the access token.

mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use harness::{Node, Shared};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_smtp::{Message, SmtpOptions, SmtpServer};

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a brand new passphrase";
/// How long a mail may take to arrive.
const MAIL_PATIENCE: Duration = Duration::from_secs(30);
/// How long a change may take to reach another node.
const PATIENCE: Duration = Duration::from_secs(5);

/// The environment of a node that sends through `smtp`, with budgets that the test's many
/// requests from one address do not exhaust.
fn mail_env(smtp: &SmtpServer) -> Vec<(&'static str, String)> {
    vec![
        (
            "TESSERA_EMAIL__SMTP_URL",
            format!("smtp://127.0.0.1:{}", smtp.port()),
        ),
        (
            "TESSERA_EMAIL__FROM",
            "Example <no-reply@example.org>".into(),
        ),
        ("TESSERA_EMAIL__PRODUCT_NAME", "Example".into()),
        (
            "TESSERA_THROTTLING__PER_IP",
            "{burst=100000,per_minute=100000}".into(),
        ),
    ]
}

/// The code a mail carries: the `code=` parameter of its link.
fn code_of(message: &Message) -> String {
    let text = message.text().expect("a text part");
    let start = text.find("code=").expect("a link with a code") + "code=".len();
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// The mail to `to` whose subject has `subject_has`, the one after the first `after` of them
/// (in the order they arrived), waiting for it to arrive.
async fn mail_to(smtp: &SmtpServer, to: &str, subject_has: &str, after: usize) -> Message {
    let since = Instant::now();
    loop {
        let matching: Vec<Message> = smtp
            .inbox()
            .messages()
            .into_iter()
            .filter(|m| {
                m.rcpt_to.iter().any(|r| r == to)
                    && m.subject().is_some_and(|s| s.contains(subject_has))
            })
            .collect();
        if let Some(m) = matching.into_iter().nth(after) {
            return m;
        }
        assert!(
            since.elapsed() < MAIL_PATIENCE,
            "no mail {after} to {to} about {subject_has:?} arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> (StatusCode, Value) {
    let r = client.post(url).json(&body).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn register(client: &reqwest::Client, node: &Node, name: &str, email: &str) -> Value {
    let (status, body) = post(
        client,
        node.url("/v1/users"),
        json!({"username": name, "password": PASSWORD, "email": email}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "register {name}: {body}");
    body
}

/// A session cookie (`name=value`) and an access token of `username`.
async fn logins(
    client: &reqwest::Client,
    node: &Node,
    username: &str,
    password: &str,
) -> (String, String) {
    let r = client
        .post(node.url("/v1/session/login"))
        .json(&json!({"username": username, "password": password}))
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
    let (status, body) = post(
        client,
        node.url("/v1/token"),
        json!({"username": username, "password": password}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "token login: {body}");
    (cookie, body["access_token"].as_str().unwrap().to_owned())
}

async fn me_with(
    client: &reqwest::Client,
    node: &Node,
    cookie: Option<&str>,
    bearer: Option<&str>,
) -> (StatusCode, Value) {
    let mut rb = client.get(node.url("/v1/me"));
    if let Some(cookie) = cookie {
        rb = rb.header("cookie", cookie);
    }
    if let Some(bearer) = bearer {
        rb = rb.bearer_auth(bearer);
    }
    let r = rb.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The claims of a JWT, unverified (the test only reads what the server put there).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_and_recovery_by_real_smtp() {
    let smtp = SmtpServer::start(SmtpOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = mail_env(&smtp);
    env.push(("TESSERA_DATABASE", "sqlite://tessera.db".into()));
    let node = Node::start(dir.path(), &[], &env);
    let client = client();

    // Registration with an address: a verification mail, whose code verifies it.
    let alice = register(&client, &node, "alice", "Alice@Example.org").await;
    assert_eq!(
        alice["email"], "Alice@example.org",
        "the domain in its lower-case ASCII form"
    );
    assert_eq!(alice["email_verified"], false);
    let verify = mail_to(&smtp, "Alice@example.org", "", 0).await;
    assert_eq!(verify.mail_from, "no-reply@example.org");
    assert!(
        verify
            .html()
            .expect("an HTML part")
            .contains(&code_of(&verify)),
        "the HTML part carries the code too"
    );
    let (status, body) = post(
        &client,
        node.url("/v1/account/email/verify"),
        json!({"code": code_of(&verify)}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (cookie, token) = logins(&client, &node, "alice", PASSWORD).await;
    let (_, me) = me_with(&client, &node, Some(&cookie), None).await;
    assert_eq!(me["user"]["email_verified"], true, "{me}");
    assert_eq!(claims(&token)["email_verified"], true);
    assert!(
        !claims(&token).to_string().contains("xample.org"),
        "the address is not in the token"
    );
    // The code worked once.
    let (status, body) = post(
        &client,
        node.url("/v1/account/email/verify"),
        json!({"code": code_of(&verify)}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["type"], "urn:tessera:problem:invalid-code");

    // Recovery, asked for by address (any case) in Chinese.
    let r = client
        .post(node.url("/v1/account/recovery"))
        .header("accept-language", "zh-CN,zh;q=0.9,en;q=0.5")
        .json(&json!({"email": "alice@EXAMPLE.org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let first = mail_to(&smtp, "Alice@example.org", "", 1).await;
    assert_eq!(first.header("content-language").as_deref(), Some("zh"));
    assert!(
        first
            .subject()
            .unwrap()
            .chars()
            .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
        "a Chinese subject: {:?}",
        first.subject()
    );
    // A newer request (by username, in English) voids the first code.
    let (status, _) = post(
        &client,
        node.url("/v1/account/recovery"),
        json!({"username": "ALICE"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let second = mail_to(&smtp, "Alice@example.org", "", 2).await;
    assert_eq!(second.header("content-language").as_deref(), Some("en"));
    assert_ne!(code_of(&first), code_of(&second));
    let complete = |code: String, password: &'static str| {
        let client = client.clone();
        let url = node.url("/v1/account/recovery/complete");
        async move {
            post(
                &client,
                url,
                json!({"code": code, "new_password": password}),
            )
            .await
        }
    };
    let (status, body) = complete(code_of(&first), NEW_PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the older code is void: {body}"
    );
    // A password the rules refuse does not spend the code.
    let (status, body) = complete(code_of(&second), "short").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "new_password");
    let (status, body) = complete(code_of(&second), NEW_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], alice["id"]);
    // Once only.
    let (status, _) = complete(code_of(&second), "yet another passphrase").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Every login of the account ended; the old password is gone, the new one works.
    assert_eq!(
        me_with(&client, &node, Some(&cookie), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        me_with(&client, &node, None, Some(&token)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = post(
        &client,
        node.url("/v1/token"),
        json!({"username": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, token) = logins(&client, &node, "alice", NEW_PASSWORD).await;

    // A change of address: the new one gets a verification mail, the old one a notice that
    // names the new one masked.
    let r = client
        .put(node.url("/v1/account/email"))
        .bearer_auth(&token)
        .json(&json!({"email": "alice.new@example.org", "current_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let changed: Value = r.json().await.unwrap();
    assert_eq!(changed["email"], "alice.new@example.org");
    assert_eq!(changed["email_verified"], false);
    let notice = mail_to(&smtp, "Alice@example.org", "changed", 0).await;
    let text = notice.text().unwrap();
    assert!(text.contains("a•••@example.org"), "{text}");
    assert!(
        !text.contains("alice.new@"),
        "the new address is masked: {text}"
    );
    assert!(!text.contains("code="), "a notice carries no code: {text}");
    let verify_new = mail_to(&smtp, "alice.new@example.org", "Confirm", 0).await;
    let (status, _) = post(
        &client,
        node.url("/v1/account/email/verify"),
        json!({"code": code_of(&verify_new)}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    node.assert_no_panic();
    smtp.stop().await;
}

/// What a client sees of an answer: status, headers (but the date and request id) and body.
async fn answer_of(r: reqwest::Response) -> (StatusCode, Vec<(String, String)>, String) {
    let status = r.status();
    let mut headers: Vec<(String, String)> = r
        .headers()
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "date" | "x-request-id"))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    headers.sort();
    (status, headers, r.text().await.unwrap())
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_known_accounts_get_the_same_answer_in_the_same_time() {
    let smtp = SmtpServer::start(SmtpOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = mail_env(&smtp);
    env.push(("TESSERA_DATABASE", "sqlite://tessera.db".into()));
    let node = Node::start(dir.path(), &[], &env);
    let client = client();
    const ROUNDS: usize = 12;
    for i in 0..ROUNDS {
        register(
            &client,
            &node,
            &format!("known{i}"),
            &format!("known{i}@example.org"),
        )
        .await;
    }
    let ask = |name: String| {
        let client = client.clone();
        let url = node.url("/v1/account/recovery");
        async move {
            let started = Instant::now();
            let r = client
                .post(url)
                .json(&json!({"username": name}))
                .send()
                .await
                .unwrap();
            let answer = answer_of(r).await;
            (answer, started.elapsed())
        }
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    let mut answers = Vec::new();
    for i in 0..ROUNDS {
        let (a, t) = ask(format!("known{i}")).await;
        answers.push(a);
        known.push(t);
        let (a, t) = ask(format!("nobody{i}")).await;
        answers.push(a);
        unknown.push(t);
    }
    assert_eq!(answers[0].0, StatusCode::ACCEPTED);
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "every answer is the same: {answers:#?}"
    );
    let (k, u) = (median(known), median(unknown));
    let gap = k.abs_diff(u);
    assert!(
        gap < Duration::from_millis(15),
        "known accounts answer in {k:?}, unknown ones in {u:?}"
    );
    // The known accounts did get their mail.
    for i in 0..ROUNDS {
        mail_to(&smtp, &format!("known{i}@example.org"), "", 1).await;
    }
    assert!(
        !smtp
            .inbox()
            .messages()
            .iter()
            .any(|m| m.rcpt_to.iter().any(|r| r.starts_with("nobody"))),
        "no mail for unknown accounts"
    );
    smtp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mail_goes_out_when_the_smtp_server_is_back_after_a_restart_of_tessera() {
    let options = SmtpOptions::default();
    let smtp = SmtpServer::start(options.clone()).await;
    let port = smtp.port();
    let env = {
        let mut env = mail_env(&smtp);
        env.push(("TESSERA_DATABASE", "sqlite://tessera.db".into()));
        env
    };
    smtp.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client();
    let node = Node::start(dir.path(), &[], &env);
    register(&client, &node, "bob", "bob@example.org").await;
    let (status, _) = post(
        &client,
        node.url("/v1/account/recovery"),
        json!({"username": "bob"}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "the request does not wait on SMTP"
    );
    // Both mails were tried and failed: the node logged it.
    let since = Instant::now();
    while node
        .log_text()
        .matches("sending a mail failed; will retry")
        .count()
        < 2
    {
        assert!(
            since.elapsed() < MAIL_PATIENCE,
            "no failed attempt logged:\n{}",
            node.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.stop();
    // The mail server comes back on its port; Tessera starts again on the same database.
    let smtp = SmtpServer::start_on(port, options).await.unwrap();
    let node = Node::start(dir.path(), &[], &env);
    let recovery = mail_to(&smtp, "bob@example.org", "recovery", 0).await;
    let (status, body) = post(
        &client,
        node.url("/v1/account/recovery/complete"),
        json!({"code": code_of(&recovery), "new_password": NEW_PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The verification mail asked for before the restart arrives too, once.
    mail_to(&smtp, "bob@example.org", "Confirm", 0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.inbox().len(), 2, "each mail was sent once");
    smtp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_on_one_node_ends_the_logins_on_another() {
    let smtp = SmtpServer::start(SmtpOptions::default()).await;
    let shared = Shared::new("mail");
    let mut env = shared.env();
    env.extend(mail_env(&smtp));
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(dir.path(), &[], &env);
    let b = Node::start(dir.path(), &[], &env);
    let client = client();
    register(&client, &a, "carol", "carol@example.org").await;
    let (cookie, token) = logins(&client, &b, "carol", PASSWORD).await;
    assert_eq!(
        me_with(&client, &b, Some(&cookie), None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        me_with(&client, &b, None, Some(&token)).await.0,
        StatusCode::OK
    );
    let (status, _) = post(
        &client,
        a.url("/v1/account/recovery"),
        json!({"email": "carol@example.org"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Either node may send it: both work the one queue, and it arrives once.
    let mail = mail_to(&smtp, "carol@example.org", "recovery", 0).await;
    let (status, body) = post(
        &client,
        a.url("/v1/account/recovery/complete"),
        json!({"code": code_of(&mail), "new_password": NEW_PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let since = Instant::now();
    loop {
        let session = me_with(&client, &b, Some(&cookie), None).await.0;
        let bearer = me_with(&client, &b, None, Some(&token)).await.0;
        if session == StatusCode::UNAUTHORIZED && bearer == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            since.elapsed() < PATIENCE,
            "node b still accepts: session {session}, bearer {bearer}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let recovery_mails = smtp
        .inbox()
        .messages()
        .iter()
        .filter(|m| m.subject().is_some_and(|s| s.contains("recovery")))
        .count();
    assert_eq!(recovery_mails, 1, "the mail was sent once, by one node");
    smtp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_addresses_are_refused_or_flagged_as_configured() {
    let smtp = SmtpServer::start(SmtpOptions::default()).await;
    let client = client();
    for allow in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut env = mail_env(&smtp);
        env.push(("TESSERA_DATABASE", "memory".into()));
        env.push(("TESSERA_ACCOUNTS__REQUIRE_VERIFIED_EMAIL", "true".into()));
        if allow {
            env.push(("TESSERA_ACCOUNTS__UNVERIFIED_LOGINS", "allow".into()));
        }
        let node = Node::start(dir.path(), &[], &env);
        // An address is required.
        let (status, body) = post(
            &client,
            node.url("/v1/users"),
            json!({"username": "dave", "password": PASSWORD}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["field"], "email");
        let address = format!("dave{allow}@example.org");
        register(&client, &node, "dave", &address).await;
        let login = || {
            post(
                &client,
                node.url("/v1/token"),
                json!({"username": "dave", "password": PASSWORD}),
            )
        };
        if allow {
            let (status, body) = login().await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let token = body["access_token"].as_str().unwrap();
            assert_eq!(claims(token)["email_verified"], false);
            let (_, me) = me_with(&client, &node, None, Some(token)).await;
            assert_eq!(me["user"]["email_verified"], false, "{me}");
        } else {
            let (status, body) = login().await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
            assert!(
                body["type"]
                    .as_str()
                    .unwrap()
                    .ends_with("email-not-verified")
            );
            assert!(body["detail"].as_str().unwrap().contains("verif"), "{body}");
            // A wrong password still gets the one answer for bad credentials.
            let (status, _) = post(
                &client,
                node.url("/v1/token"),
                json!({"username": "dave", "password": "not the password"}),
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        let mail = mail_to(&smtp, &address, "", 0).await;
        let (status, _) = post(
            &client,
            node.url("/v1/account/email/verify"),
            json!({"code": code_of(&mail)}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = login().await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            claims(body["access_token"].as_str().unwrap())["email_verified"],
            true
        );
    }
    smtp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_expire() {
    use tessera_core::ManualClock;
    let smtp = SmtpServer::start(SmtpOptions::default()).await;
    let clock = ManualClock::starting_now();
    let tessera = tessera::Tessera::builder()
        .memory()
        .clock(Arc::new(clock.clone()))
        .smtp(
            &format!("smtp://127.0.0.1:{}", smtp.port()),
            "no-reply@example.org",
        )
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = tessera.router::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let client = client();
    let (status, _) = post(
        &client,
        format!("{base}/v1/users"),
        json!({"username": "erin", "password": PASSWORD, "email": "erin@example.org"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let verify = smtp
        .inbox()
        .wait_for(|m| m.rcpt_to == ["erin@example.org"], MAIL_PATIENCE)
        .await
        .expect("the verification mail");
    let (status, _) = post(
        &client,
        format!("{base}/v1/account/recovery"),
        json!({"username": "erin"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let recovery = smtp
        .inbox()
        .wait_for(
            |m| m.subject().is_some_and(|s| s.contains("recovery")),
            MAIL_PATIENCE,
        )
        .await
        .expect("the recovery mail");
    // 15 minutes for a recovery code; 48 hours for a verification code.
    clock.advance(Duration::from_secs(15 * 60 + 1));
    let (status, _) = post(
        &client,
        format!("{base}/v1/account/recovery/complete"),
        json!({"code": code_of(&recovery), "new_password": NEW_PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an expired recovery code");
    clock.advance(Duration::from_secs(48 * 3600));
    let (status, _) = post(
        &client,
        format!("{base}/v1/account/email/verify"),
        json!({"code": code_of(&verify)}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an expired verification code"
    );
    server.abort();
    tessera.shutdown().await;
    smtp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_set_addresses_and_vouch_for_them() {
    let smtp = SmtpServer::start(SmtpOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = mail_env(&smtp);
    env.push(("TESSERA_DATABASE", "sqlite://tessera.db".into()));
    // An account made before verified addresses were required: it has none.
    harness::add_user(dir.path(), &env, "legacy", false, PASSWORD);
    env.push(("TESSERA_ACCOUNTS__REQUIRE_VERIFIED_EMAIL", "true".into()));
    let refused = harness::run_with_input(
        dir.path(),
        &["user", "add", "root", "--admin"],
        &env,
        &format!("{PASSWORD}\n"),
    );
    assert!(!refused.status.success(), "an admin without an address");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--email"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let made = harness::run_with_input(
        dir.path(),
        &[
            "user",
            "add",
            "root",
            "--admin",
            "--email",
            "root@example.org",
            "--email-verified",
        ],
        &env,
        &format!("{PASSWORD}\n"),
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let client = client();
    {
        let node = Node::start(dir.path(), &[], &env);
        let (status, body) = post(
            &client,
            node.url("/v1/token"),
            json!({"username": "root", "password": PASSWORD}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            claims(body["access_token"].as_str().unwrap())["email_verified"],
            true
        );
        // The account without an address is refused, with a way out for its operator.
        let (status, body) = post(
            &client,
            node.url("/v1/token"),
            json!({"username": "legacy", "password": PASSWORD}),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        node.stop();
    }
    let set = harness::run(
        dir.path(),
        &[
            "user",
            "email",
            "legacy",
            "legacy@example.org",
            "--verified",
        ],
        &env,
    );
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    env.push(("TESSERA_ACCOUNTS__UNVERIFIED_LOGINS", "allow".into()));
    harness::add_user(
        dir.path(),
        &[("TESSERA_DATABASE", "sqlite://tessera.db")],
        "bare",
        false,
        PASSWORD,
    );
    let node = Node::start(dir.path(), &[], &env);
    let (status, body) = post(
        &client,
        node.url("/v1/token"),
        json!({"username": "legacy", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["email_verified"],
        true
    );
    // Allowed without an address: the token and /v1/me say it is not verified.
    let (status, body) = post(
        &client,
        node.url("/v1/token"),
        json!({"username": "bare", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&token)["email_verified"], false);
    let (_, me) = me_with(&client, &node, None, Some(&token)).await;
    assert_eq!(me["user"]["email_verified"], false, "{me}");

    // Changing the address spends the new address's mail budget: no flooding a mailbox by
    // switching an account's address back and forth.
    let mut statuses = Vec::new();
    for address in ["victim@example.org", "bare@example.org"]
        .iter()
        .cycle()
        .take(10)
    {
        let r = client
            .put(node.url("/v1/account/email"))
            .bearer_auth(&token)
            .json(&json!({"email": address, "current_password": PASSWORD}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status());
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to_victim = smtp
        .inbox()
        .messages()
        .iter()
        .filter(|m| m.rcpt_to.iter().any(|r| r == "victim@example.org"))
        .count();
    assert!(to_victim <= 3 + 3, "{to_victim} mails reached the victim");
    smtp.stop().await;
}
