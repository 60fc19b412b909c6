//! A small SMTP server for tests: real SMTP (RFC 5321) on a spare port of 127.0.0.1, so that a
//! test sends with a real client (lettre, in Tessera) and reads what arrived.
//!
//! ```no_run
//! # async fn example() {
//! use std::time::Duration;
//! use test_smtp::{FailMode, FailReply, SmtpOptions, SmtpServer};
//!
//! // STARTTLS offered, AUTH required once encrypted; the client trusts
//! // `server.certificate().der()`.
//! let server = SmtpServer::start(SmtpOptions::default().starttls().require_auth("mailer", "s3cret")).await;
//! // … send to server.port() …
//! let message = server
//!     .inbox()
//!     .wait_for(|m| m.rcpt_to == ["alice@example.org"], Duration::from_secs(5))
//!     .await
//!     .expect("the mail arrived");
//! assert!(message.tls);
//! assert_eq!(message.subject().as_deref(), Some("Your code"));
//!
//! // Refuse mail for a while, then go away and come back on the same port.
//! server.set_fail_mode(FailMode::Rcpt(FailReply::TryLater));
//! server.stop().await;
//! let again = SmtpServer::start_on(server.port(), server.options().clone()).await.unwrap();
//! # }
//! ```
//!
//! What it speaks: `EHLO` (advertising `SIZE`, `8BITMIME`, `SMTPUTF8`, `PIPELINING`,
//! `ENHANCEDSTATUSCODES`, and `STARTTLS` and `AUTH PLAIN LOGIN` as configured), `HELO`,
//! `STARTTLS`, `AUTH PLAIN`, `AUTH LOGIN`, `MAIL FROM` (with `SIZE`, `BODY`, `SMTPUTF8`),
//! `RCPT TO`, `DATA` (dot-unstuffed), `RSET`, `NOOP`, `QUIT`; 500 for an unknown command, 503 for
//! one out of sequence, 530 for `MAIL` before a required AUTH. Bounded so that no test can hang
//! it: command lines of 4 KiB, messages of [`SmtpOptions::max_message_size`], an idle timeout,
//! at most 100 recipients and 20 refused commands per connection.
#![forbid(unsafe_code)]

mod cert;
mod inbox;
mod message;
mod server;
mod session;

pub use cert::TestCertificate;
pub use inbox::Inbox;
pub use message::Message;
pub use server::{FailMode, FailReply, Login, SmtpOptions, SmtpServer, TlsMode};
