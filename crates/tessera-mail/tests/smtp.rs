//! The transport against a real SMTP server (test-smtp) on 127.0.0.1.

use std::time::Duration;

use secrecy::SecretString;
use tessera_core::{MailMessage, MailTransport, SendError};
use tessera_mail::{SmtpSettings, SmtpTransport};
use test_smtp::{FailMode, FailReply, SmtpOptions, SmtpServer};

const PASSWORD: &str = "correct horse";

fn settings(url: &str) -> SmtpSettings {
    SmtpSettings {
        url: SecretString::from(url),
        password: None,
        from: "Tessera <no-reply@example.org>".to_owned(),
        timeout: Duration::from_secs(10),
        extra_roots: Vec::new(),
    }
}

/// Settings that trust the server's certificate.
fn trusting(url: &str, server: &SmtpServer) -> SmtpSettings {
    SmtpSettings {
        extra_roots: vec![server.certificate().der().to_vec()],
        ..settings(url)
    }
}

fn transport(settings: SmtpSettings) -> SmtpTransport {
    SmtpTransport::new(settings).expect("valid settings")
}

fn chinese() -> MailMessage {
    MailMessage {
        to: "alice@example.org".to_owned(),
        subject: "您的验证码是 381024".to_owned(),
        text: "你好，\n\n您的验证码是 381024，十分钟内有效。\n".to_owned(),
        html: Some("<p>你好，</p><p>您的验证码是 <b>381024</b>。</p>".to_owned()),
        language: "zh".to_owned(),
    }
}

fn plain_english() -> MailMessage {
    MailMessage {
        to: "bob@example.org".to_owned(),
        subject: "Your code".to_owned(),
        text: "Your code is 123456.".to_owned(),
        html: None,
        language: "en".to_owned(),
    }
}

#[tokio::test]
async fn plain_smtp_delivers_headers_and_both_bodies_in_utf8() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let mailer = transport(settings(&format!("smtp://127.0.0.1:{}", server.port())));
    assert_eq!(
        mailer.endpoint(),
        format!(
            "smtp://127.0.0.1:{}?tls=opportunistic (STARTTLS when offered)",
            server.port()
        )
    );
    mailer.send(&chinese()).await.unwrap();

    let m = &server.inbox().messages()[0];
    assert!(!m.tls);
    assert_eq!(m.mail_from, "no-reply@example.org");
    assert_eq!(m.rcpt_to, ["alice@example.org"]);
    assert_eq!(m.subject().as_deref(), Some("您的验证码是 381024"));
    assert_eq!(
        m.header("From").as_deref(),
        Some("Tessera <no-reply@example.org>")
    );
    assert_eq!(m.header("To").as_deref(), Some("alice@example.org"));
    assert_eq!(m.header("Content-Language").as_deref(), Some("zh"));
    assert!(m.header("Date").is_some(), "{}", m.data);
    let id = m.header("Message-ID").unwrap();
    assert!(
        id.starts_with("<mail_") && id.ends_with("@example.org>"),
        "{id}"
    );
    assert!(
        m.header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative"),
        "{}",
        m.data
    );
    assert_eq!(m.text().unwrap(), chinese().text.trim_end());
    assert_eq!(m.html().unwrap(), chinese().html.unwrap());

    mailer.send(&plain_english()).await.unwrap();
    let m = &server.inbox().messages()[1];
    assert_eq!(m.rcpt_to, ["bob@example.org"]);
    assert_eq!(
        m.header("Content-Type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(m.header("Content-Language").as_deref(), Some("en"));
    assert_eq!(m.text().as_deref(), Some("Your code is 123456."));
    assert_eq!(m.html(), None);
}

#[tokio::test]
async fn header_injection_through_the_subject_or_language_does_not_work() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let mailer = transport(settings(&format!(
        "smtp://127.0.0.1:{}?tls=none",
        server.port()
    )));
    let message = MailMessage {
        subject: "Hi\r\nBcc: mallory@example.org".to_owned(),
        language: "en\r\nBcc: mallory@example.org".to_owned(),
        ..plain_english()
    };
    mailer.send(&message).await.unwrap();
    let m = &server.inbox().messages()[0];
    assert_eq!(m.rcpt_to, ["bob@example.org"]);
    assert_eq!(m.raw_header("Bcc"), None, "{}", m.data);
    assert_eq!(m.header("Content-Language"), None, "{}", m.data);
    assert_eq!(
        m.subject().as_deref(),
        Some("Hi\r\nBcc: mallory@example.org")
    );
}

#[tokio::test]
async fn starttls_is_used_and_verified_with_extra_roots() {
    let server = SmtpServer::start(SmtpOptions::default().starttls()).await;
    for url in [
        format!("smtp://localhost:{}?tls=required", server.port()),
        // Opportunistic: offered, so used.
        format!("smtp://localhost:{}", server.port()),
        format!("smtp://127.0.0.1:{}", server.port()),
    ] {
        transport(trusting(&url, &server))
            .send(&chinese())
            .await
            .unwrap();
    }
    let messages = server.inbox().messages();
    assert_eq!(messages.len(), 3);
    assert!(messages.iter().all(|m| m.tls));
    assert_eq!(messages[0].text().unwrap(), chinese().text.trim_end());
}

#[tokio::test]
async fn tls_that_cannot_be_had_is_a_temporary_failure() {
    // An untrusted certificate fails the attempt, even when STARTTLS is only opportunistic.
    let server = SmtpServer::start(SmtpOptions::default().starttls()).await;
    for url in [
        format!("smtp://localhost:{}?tls=required", server.port()),
        format!("smtp://localhost:{}?tls=opportunistic", server.port()),
    ] {
        match transport(settings(&url)).send(&chinese()).await {
            Err(SendError::Temporary(why)) => {
                assert!(why.contains("invalid peer certificate"), "{why}");
                assert!(!why.contains("error: Connection error"), "{why}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    // The certificate names localhost and 127.0.0.1, not this.
    let url = format!("smtp://127.0.0.2:{}?tls=required", server.port());
    let wrong_name = transport(trusting(&url, &server)).send(&chinese()).await;
    assert!(
        matches!(wrong_name, Err(SendError::Temporary(_))),
        "{wrong_name:?}"
    );

    // STARTTLS required of a server that does not offer it.
    let plain = SmtpServer::start(SmtpOptions::default()).await;
    let url = format!("smtp://localhost:{}?tls=required", plain.port());
    match transport(settings(&url)).send(&chinese()).await {
        Err(SendError::Temporary(why)) => assert!(why.contains("STARTTLS"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(server.inbox().is_empty() && plain.inbox().is_empty());
}

#[tokio::test]
async fn smtps_delivers_over_implicit_tls() {
    let server = SmtpServer::start(SmtpOptions::default().implicit_tls()).await;
    let url = format!("smtps://127.0.0.1:{}", server.port());
    let mailer = transport(trusting(&url, &server));
    assert_eq!(
        mailer.endpoint(),
        format!("smtps://127.0.0.1:{} (implicit TLS)", server.port())
    );
    mailer.send(&chinese()).await.unwrap();
    let m = &server.inbox().messages()[0];
    assert!(m.tls);
    assert_eq!(m.subject().as_deref(), Some("您的验证码是 381024"));

    // Untrusted.
    let failed = transport(settings(&url)).send(&chinese()).await;
    assert!(matches!(failed, Err(SendError::Temporary(_))), "{failed:?}");
}

#[tokio::test]
async fn auth_with_the_password_in_the_url_or_apart() {
    let server = SmtpServer::start(
        SmtpOptions::default()
            .starttls()
            .require_auth("mailer@example.org", PASSWORD),
    )
    .await;
    let port = server.port();

    let in_url = format!("smtp://mailer%40example.org:correct%20horse@localhost:{port}");
    let mailer = transport(trusting(&in_url, &server));
    assert_eq!(
        mailer.endpoint(),
        format!("smtp://mailer%40example.org@localhost:{port}?tls=required (STARTTLS required)")
    );
    mailer.send(&chinese()).await.unwrap();
    mailer.check().await.unwrap();

    let apart = SmtpSettings {
        password: Some(SecretString::from(PASSWORD)),
        ..trusting(
            &format!("smtp://mailer%40example.org@localhost:{port}"),
            &server,
        )
    };
    transport(apart).send(&plain_english()).await.unwrap();

    let messages = server.inbox().messages();
    assert_eq!(messages.len(), 2);
    for m in &messages {
        assert!(m.tls);
        assert_eq!(m.authenticated_as.as_deref(), Some("mailer@example.org"));
    }
    // Neither Debug repeats the password.
    let shown = format!("{mailer:?} {:?}", trusting(&in_url, &server));
    assert!(!shown.contains("horse"), "{shown}");
}

#[tokio::test]
async fn a_wrong_password_is_retried_and_not_repeated() {
    // 535 and 530 are 5xx replies, but about the login, not the message: the operator fixes the
    // password and the queued mail goes out, so they are temporary.
    let server = SmtpServer::start(SmtpOptions::default().require_auth("mailer", PASSWORD)).await;
    let url = format!("smtp://mailer:hunter2@127.0.0.1:{}?tls=none", server.port());
    let mailer = transport(settings(&url));
    for outcome in [mailer.send(&chinese()).await, mailer.check().await] {
        match outcome {
            Err(SendError::Temporary(why)) => {
                assert!(why.contains("535"), "{why}");
                assert!(!why.contains("hunter2"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }
    // Without credentials: 530 to MAIL.
    let anonymous = transport(settings(&format!(
        "smtp://127.0.0.1:{}?tls=none",
        server.port()
    )));
    match anonymous.send(&chinese()).await {
        Err(SendError::Temporary(why)) => assert!(why.contains("530"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(server.inbox().is_empty());
}

#[tokio::test]
async fn a_server_that_is_down_is_temporary_and_mail_flows_when_it_is_back() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let port = server.port();
    let mailer = transport(settings(&format!("smtp://127.0.0.1:{port}")));
    server.stop().await;

    match mailer.send(&chinese()).await {
        Err(SendError::Temporary(why)) => {
            assert!(!why.contains("alice"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(mailer.check().await, Err(SendError::Temporary(_))));

    let again = SmtpServer::start_on(port, server.options().clone())
        .await
        .unwrap();
    mailer.send(&chinese()).await.unwrap();
    mailer.check().await.unwrap();
    assert_eq!(again.inbox().len(), 1);
}

#[tokio::test]
async fn a_server_that_stops_answering_is_a_temporary_failure_after_the_timeout() {
    // Accepts the connection and says nothing (lettre bounds only the connect itself).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let mailer = transport(SmtpSettings {
        timeout: Duration::from_millis(300),
        ..settings(&format!("smtp://127.0.0.1:{port}"))
    });
    let started = std::time::Instant::now();
    match mailer.send(&chinese()).await {
        Err(SendError::Temporary(why)) => assert!(why.contains("no answer"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    holder.abort();
}

#[tokio::test]
async fn fail_modes_map_4xx_to_temporary_and_5xx_to_permanent() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let mailer = transport(settings(&format!("smtp://127.0.0.1:{}", server.port())));
    for (mode, permanent, code) in [
        (FailMode::Rcpt(FailReply::TryLater), false, "451"),
        (FailMode::Rcpt(FailReply::NoSuchUser), true, "550"),
        (FailMode::Data(FailReply::TryLater), false, "451"),
        (FailMode::Data(FailReply::NoSuchUser), true, "550"),
    ] {
        server.set_fail_mode(mode);
        let (is_permanent, why) = match mailer.send(&chinese()).await {
            Err(SendError::Permanent(why)) => (true, why),
            Err(SendError::Temporary(why)) => (false, why),
            Ok(()) => panic!("{mode:?}: sent"),
        };
        assert_eq!(is_permanent, permanent, "{mode:?}: {why}");
        assert!(why.contains(code), "{why}");
        assert!(!why.contains("alice") && !why.contains("381024"), "{why}");
    }
    assert!(server.inbox().is_empty());
    server.set_fail_mode(FailMode::Off);
    mailer.send(&chinese()).await.unwrap();
    assert_eq!(server.inbox().len(), 1);
}

#[tokio::test]
async fn a_recipient_that_is_not_an_address_is_permanent() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let mailer = transport(settings(&format!("smtp://127.0.0.1:{}", server.port())));
    let message = MailMessage {
        to: "not an address".to_owned(),
        ..chinese()
    };
    match mailer.send(&message).await {
        Err(SendError::Permanent(why)) => assert!(!why.contains("not an address"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_settings_are_refused_up_front_without_the_password() {
    let refused = |settings: SmtpSettings| {
        let error = SmtpTransport::new(settings).expect_err("refused");
        let text = error.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        text
    };
    assert_eq!(
        refused(settings("http://u:hunter2@mail.example.org")),
        "email.smtp_url: unknown scheme \"http\" (use smtp:// or smtps://)"
    );
    assert_eq!(
        refused(SmtpSettings {
            from: "x".to_owned(),
            ..settings("smtp://u:hunter2@mail.example.org")
        }),
        "email.from: \"x\" is not a mailbox (use name@example.org or Name <name@example.org>)"
    );
    assert_eq!(
        refused(SmtpSettings {
            timeout: Duration::ZERO,
            ..settings("smtp://u:hunter2@mail.example.org")
        }),
        "email.timeout: must be longer than zero"
    );
    let bad_root = refused(SmtpSettings {
        extra_roots: vec![b"hunter2".to_vec()],
        ..settings("smtps://u:hunter2@mail.example.org")
    });
    assert!(bad_root.starts_with("email.ca_file: "), "{bad_root}");
    let error = SmtpTransport::new(settings("smtp://u@mail.example.org")).unwrap_err();
    assert_eq!(error.field(), tessera_mail::URL);
}
