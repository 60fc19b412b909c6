//! The test server against lettre (the client Tessera uses) and against raw SMTP.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use test_smtp::{FailMode, FailReply, Inbox, SmtpOptions, SmtpServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const PATIENCE: Duration = Duration::from_secs(10);

fn mailbox(text: &str) -> Mailbox {
    text.parse().unwrap()
}

fn transport(
    server: &SmtpServer,
    tls: Option<fn(TlsParameters) -> Tls>,
) -> lettre::transport::smtp::AsyncSmtpTransportBuilder {
    let builder =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("localhost").port(server.port());
    match tls {
        None => builder,
        Some(mode) => {
            let parameters = TlsParameters::builder("localhost".to_owned())
                .add_root_certificate(
                    Certificate::from_der(server.certificate().der().to_vec()).unwrap(),
                )
                .build_rustls()
                .unwrap();
            builder.tls(mode(parameters))
        }
    }
}

fn chinese_message() -> lettre::Message {
    lettre::Message::builder()
        .from(mailbox("Tessera <no-reply@example.org>"))
        .to(mailbox("alice@example.org"))
        .subject("您的验证码 — code 123456")
        .multipart(MultiPart::alternative_plain_html(
            "你好，\n\n您的验证码是 123456。\n.leading dot line\n".to_owned(),
            "<p>你好，您的验证码是 <b>123456</b>。</p>".to_owned(),
        ))
        .unwrap()
}

#[tokio::test]
async fn lettre_delivers_in_plain_smtp_and_the_message_reads_back() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    transport(&server, None)
        .build()
        .send(chinese_message())
        .await
        .unwrap();

    let m = &server.inbox().messages()[0];
    assert_eq!(m.mail_from, "no-reply@example.org");
    assert_eq!(m.rcpt_to, ["alice@example.org"]);
    assert!(!m.tls);
    assert_eq!(m.authenticated_as, None);
    assert_eq!(m.subject().as_deref(), Some("您的验证码 — code 123456"));
    assert_eq!(
        m.header("From").as_deref(),
        Some("Tessera <no-reply@example.org>")
    );
    assert_eq!(
        m.text().as_deref(),
        Some("你好，\n\n您的验证码是 123456。\n.leading dot line")
    );
    assert_eq!(
        m.html().as_deref(),
        Some("<p>你好，您的验证码是 <b>123456</b>。</p>")
    );
}

#[tokio::test]
async fn lettre_delivers_over_starttls_with_auth_plain() {
    let server = SmtpServer::start(
        SmtpOptions::default()
            .starttls()
            .require_auth("mailer", "pw"),
    )
    .await;
    transport(&server, Some(Tls::Required))
        .credentials(Credentials::new("mailer".into(), "pw".into()))
        .build()
        .send(chinese_message())
        .await
        .unwrap();
    let m = &server.inbox().messages()[0];
    assert!(m.tls);
    assert_eq!(m.authenticated_as.as_deref(), Some("mailer"));
}

#[tokio::test]
async fn lettre_delivers_over_implicit_tls_with_auth_login() {
    let server = SmtpServer::start(
        SmtpOptions::default()
            .implicit_tls()
            .require_auth("mailer", "pw"),
    )
    .await;
    transport(&server, Some(Tls::Wrapper))
        .credentials(Credentials::new("mailer".into(), "pw".into()))
        .authentication(vec![Mechanism::Login])
        .build()
        .send(chinese_message())
        .await
        .unwrap();
    let m = &server.inbox().messages()[0];
    assert!(m.tls);
    assert_eq!(m.authenticated_as.as_deref(), Some("mailer"));
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_535() {
    let server = SmtpServer::start(SmtpOptions::default().require_auth("mailer", "pw")).await;
    let error = transport(&server, None)
        .credentials(Credentials::new("mailer".into(), "nope".into()))
        .build()
        .send(chinese_message())
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert_eq!(
        error.status().map(|c| c.to_string()).as_deref(),
        Some("535")
    );
    assert!(server.inbox().is_empty());
}

#[tokio::test]
async fn fail_modes_switch_at_run_time() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let client = transport(&server, None).build();

    server.set_fail_mode(FailMode::Rcpt(FailReply::TryLater));
    let error = client.send(chinese_message()).await.unwrap_err();
    assert!(error.is_transient(), "{error}");

    server.set_fail_mode(FailMode::Data(FailReply::NoSuchUser));
    let error = client.send(chinese_message()).await.unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert!(server.inbox().is_empty());

    server.set_fail_mode(FailMode::Off);
    client.send(chinese_message()).await.unwrap();
    assert_eq!(server.inbox().len(), 1);
}

#[tokio::test]
async fn stop_closes_everything_and_start_on_brings_it_back_with_its_inbox() {
    let inbox = Inbox::new();
    let server = SmtpServer::start(SmtpOptions::default().inbox(&inbox)).await;
    let port = server.port();
    let mut open = Raw::connect(port).await;
    assert!(open.reply().await.starts_with("220 "));

    server.stop().await;
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    // The open connection was closed too.
    assert_eq!(open.reply().await, "");
    server.stop().await;

    let again = SmtpServer::start_on(port, server.options().clone())
        .await
        .unwrap();
    let client = transport(&again, None).build();
    client.send(chinese_message()).await.unwrap();
    again.stop().await;
    let again = SmtpServer::start_on(port, again.options().clone())
        .await
        .unwrap();
    transport(&again, None)
        .build()
        .send(chinese_message())
        .await
        .unwrap();
    assert_eq!(inbox.len(), 2);
}

#[tokio::test]
async fn wait_for_waits_for_a_matching_message() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let none = server
        .inbox()
        .wait_for(|_| true, Duration::from_millis(50))
        .await;
    assert_eq!(none, None);

    let client = transport(&server, None).build();
    let sending = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.send(chinese_message()).await.unwrap();
    });
    let m = server
        .inbox()
        .wait_for(|m| m.rcpt_to == ["alice@example.org"], PATIENCE)
        .await
        .expect("the mail arrives");
    assert!(m.subject().unwrap().contains("123456"));
    sending.await.unwrap();
}

/// A raw SMTP client: one line out, one (possibly multi-line) reply in.
struct Raw {
    io: BufReader<TcpStream>,
}

impl Raw {
    async fn connect(port: u16) -> Self {
        Self {
            io: BufReader::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap()),
        }
    }

    /// The whole reply, its lines joined with `\n`; empty when the server closed the
    /// connection.
    async fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(PATIENCE, self.io.read_line(&mut line))
                .await
                .expect("the server answers");
            if read.unwrap_or(0) == 0 {
                return reply;
            }
            reply.push_str(line.trim_end());
            if line.as_bytes().get(3) != Some(&b'-') {
                return reply;
            }
            reply.push('\n');
        }
    }

    async fn send(&mut self, line: &str) {
        self.io
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }

    async fn command(&mut self, line: &str) -> String {
        self.send(line).await;
        self.reply().await
    }
}

fn code(reply: &str) -> &str {
    reply.get(..3).unwrap_or(reply)
}

#[tokio::test]
async fn raw_smtp_sequence_rules() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let mut c = Raw::connect(server.port()).await;
    assert!(c.reply().await.starts_with("220 "));
    assert_eq!(code(&c.command("MAIL FROM:<a@example.org>").await), "503");
    assert_eq!(code(&c.command("FROB").await), "500");
    let ehlo = c.command("EHLO client.example").await;
    for feature in ["SIZE 1048576", "8BITMIME", "SMTPUTF8", "PIPELINING"] {
        assert!(ehlo.contains(feature), "{ehlo}");
    }
    assert!(
        !ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(code(&c.command("RCPT TO:<b@example.org>").await), "503");
    assert_eq!(code(&c.command("DATA").await), "503");
    assert_eq!(code(&c.command("STARTTLS").await), "503");
    assert_eq!(code(&c.command("AUTH PLAIN AGIAcHc=").await), "503");
    assert_eq!(
        code(&c.command("MAIL FROM:<a@example.org> SIZE=2000000").await),
        "552"
    );
    assert_eq!(
        code(&c.command("mail from: <a@example.org> BODY=8BITMIME").await),
        "250"
    );
    assert_eq!(code(&c.command("MAIL FROM:<a@example.org>").await), "503");
    assert_eq!(code(&c.command("RCPT TO:<b@example.org>").await), "250");
    assert_eq!(code(&c.command("RCPT TO:<c@example.org>").await), "250");
    assert_eq!(code(&c.command("NOOP").await), "250");
    assert_eq!(code(&c.command("DATA").await), "354");
    for line in ["Subject: dots", "", "..one dot", "..", "x."] {
        c.send(line).await;
    }
    assert_eq!(code(&c.command(".").await), "250");
    assert_eq!(code(&c.command("RSET").await), "250");
    assert_eq!(code(&c.command("QUIT").await), "221");
    assert_eq!(c.reply().await, "");

    let m = &server.inbox().messages()[0];
    assert_eq!(m.rcpt_to, ["b@example.org", "c@example.org"]);
    assert_eq!(m.data, "Subject: dots\r\n\r\n.one dot\r\n.\r\nx.\r\n");
    assert_eq!(m.text().as_deref(), Some(".one dot\n.\nx."));
}

#[tokio::test]
async fn raw_smtp_auth_rules() {
    let server = SmtpServer::start(
        SmtpOptions::default()
            .starttls()
            .require_auth("mailer", "pw"),
    )
    .await;
    let mut c = Raw::connect(server.port()).await;
    c.reply().await;
    let ehlo = c.command("EHLO client.example").await;
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "AUTH only after STARTTLS: {ehlo}");
    assert_eq!(code(&c.command("AUTH PLAIN AG1haWxlcgBwdw==").await), "538");
    assert_eq!(code(&c.command("MAIL FROM:<a@example.org>").await), "530");

    // Without STARTTLS, AUTH is offered in the clear; both mechanisms work.
    let server = SmtpServer::start(SmtpOptions::default().require_auth("mailer", "pw")).await;
    let mut c = Raw::connect(server.port()).await;
    c.reply().await;
    assert!(c.command("EHLO x").await.contains("AUTH PLAIN LOGIN"));
    assert_eq!(code(&c.command("MAIL FROM:<a@example.org>").await), "530");
    // "\0mailer\0nope"
    assert_eq!(code(&c.command("AUTH PLAIN AG1haWxlcgBub3Bl").await), "535");
    assert_eq!(code(&c.command("AUTH PLAIN !!!").await), "501");
    assert_eq!(code(&c.command("AUTH CRAM-MD5").await), "504");
    assert_eq!(c.command("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.command("bWFpbGVy").await, "334 UGFzc3dvcmQ6");
    assert_eq!(code(&c.command("cHc=").await), "235");
    assert_eq!(code(&c.command("AUTH PLAIN AG1haWxlcgBwdw==").await), "503");
    assert_eq!(code(&c.command("MAIL FROM:<a@example.org>").await), "250");

    // PLAIN without an initial response.
    let mut c = Raw::connect(server.port()).await;
    c.reply().await;
    c.command("EHLO x").await;
    assert_eq!(c.command("AUTH PLAIN").await, "334");
    assert_eq!(code(&c.command("AG1haWxlcgBwdw==").await), "235");
}

#[tokio::test]
async fn limits_end_what_would_hang() {
    let options = SmtpOptions {
        max_message_size: 100,
        idle_timeout: Duration::from_millis(300),
        ..SmtpOptions::default()
    };
    let server = SmtpServer::start(options).await;

    // A message over the size limit is read to its end and refused.
    let mut c = Raw::connect(server.port()).await;
    c.reply().await;
    c.command("EHLO x").await;
    c.command("MAIL FROM:<a@example.org>").await;
    c.command("RCPT TO:<b@example.org>").await;
    c.command("DATA").await;
    c.send(&"y".repeat(20_000)).await;
    assert_eq!(code(&c.command(".").await), "552");
    assert_eq!(code(&c.command("NOOP").await), "250");

    // An over-long command line ends the connection (4096 bytes without a line end: all of it
    // is read, so the close is clean rather than a reset).
    c.io.get_mut().write_all(&[b'z'; 4096]).await.unwrap();
    assert_eq!(code(&c.reply().await), "500");
    assert_eq!(c.reply().await, "");

    // So does silence.
    let mut c = Raw::connect(server.port()).await;
    c.reply().await;
    assert_eq!(code(&c.reply().await), "421");
    assert_eq!(c.reply().await, "");

    // And twenty refused commands.
    let mut c = Raw::connect(server.port()).await;
    c.reply().await;
    for _ in 0..20 {
        assert_eq!(code(&c.command("FROB").await), "500");
    }
    assert_eq!(code(&c.reply().await), "421");
    assert_eq!(c.reply().await, "");
    assert!(server.inbox().is_empty());
}
