//! Tessera's SMTP transport: delivers the mail queue's messages with lettre.
//!
//! [`SmtpTransport`] implements [`tessera_core::MailTransport`]. It is built from
//! [`SmtpSettings`], which [`SmtpTransport::new`] checks in full, so that the server refuses a
//! bad configuration when it starts rather than when the first code is mailed.
//!
//! # `email.smtp_url`
//!
//! | URL | connection | default port |
//! |---|---|---|
//! | `smtps://host` | TLS from the first byte (RFC 8314); the recommended choice | 465 |
//! | `smtp://host?tls=required` | STARTTLS, which must succeed: no mail (nor password) goes in the clear | 587 |
//! | `smtp://host` | STARTTLS when the server offers it, else plain | 587 |
//! | `smtp://user@host` | with a user name, as `tls=required`: a password is never sent where STARTTLS could have been stripped | 587 |
//! | `smtp://host?tls=opportunistic` | STARTTLS when offered, even with a user name | 587 |
//! | `smtp://host?tls=none` | plain SMTP: a local relay, or tests | 25 |
//!
//! - Credentials: `smtp://user:password@host`, or `smtp://user@host` with the password in
//!   [`SmtpSettings::password`] (not both). The user name and password are percent-encoded
//!   (`%40` for `@`); the user information ends at the last `@`.
//! - The host is a name, an IPv4 address or a bracketed IPv6 one (`[::1]`); TLS checks the
//!   server's certificate for that name or address.
//! - Nothing else: no path (lettre reads one as the EHLO name), no other parameter, no fragment.
//! - When STARTTLS is offered it must succeed, even opportunistically: a certificate that does
//!   not verify fails the attempt rather than falling back to plain text.
//! - Certificates are verified against the platform's roots (rustls-platform-verifier) plus
//!   [`SmtpSettings::extra_roots`].
//!
//! The ports follow lettre's `from_url`, which differs in one point: lettre's plain `smtp://`
//! never does STARTTLS.
//!
//! # Failures
//!
//! [`MailTransport::send`](tessera_core::MailTransport::send) answers
//! [`SendError::Permanent`](tessera_core::SendError::Permanent) only for a 5xx reply (RFC 5321
//! §4.2.1), at whatever step: an unknown mailbox (550), a refused sender — but for a refused
//! login (53x, such as 535): a wrong password is the operator's to fix, and the queue keeps its
//! mail until it is (or the mail expires). Everything else is [`SendError::Temporary`](tessera_core::SendError::Temporary) and
//! retried: 4xx replies, a server that cannot be reached or does not answer within
//! [`SmtpSettings::timeout`], TLS failures (an untrusted certificate too: the operator may fix
//! it before the code expires), and a server lacking STARTTLS or a usable AUTH mechanism. The
//! error text names the server's reply or the network error; it never holds the password, the
//! recipient's address or the message.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod settings;
mod transport;

pub use settings::{EXTRA_ROOTS, FROM, MailConfigError, PASSWORD, SmtpSettings, TIMEOUT, URL};
pub use transport::SmtpTransport;
