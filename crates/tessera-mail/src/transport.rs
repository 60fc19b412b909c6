//! The transport: lettre's asynchronous SMTP client, configured once and checked up front.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use tessera_core::{MailId, MailMessage, MailTransport, SendError};

use crate::settings::{
    EXTRA_ROOTS, Endpoint, FROM, MailConfigError, Security, SmtpSettings, TIMEOUT,
};

/// The longest error text kept from a failed attempt (it goes to the queue's `last_error`, the
/// audit log and the logs).
const MAX_ERROR_TEXT: usize = 300;

/// Sends mail over SMTP with lettre: one connection per message (no pool), STARTTLS or implicit
/// TLS on rustls, AUTH PLAIN or LOGIN. `Debug` shows the endpoint without its password.
#[derive(Clone)]
pub struct SmtpTransport {
    client: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
    endpoint: String,
    /// The password, kept only to scrub it from error text should a server ever echo it.
    password: Option<SecretString>,
}

impl fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpTransport")
            .field("endpoint", &self.endpoint)
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SmtpTransport {
    /// Checks the settings and sets up the client; connects to nothing yet (see
    /// [`SmtpTransport::check`]). Every error names the setting at fault and repeats no
    /// password.
    pub fn new(settings: SmtpSettings) -> Result<Self, MailConfigError> {
        let endpoint = Endpoint::parse(&settings.url, settings.password.as_ref())?;
        let from: Mailbox = settings.from.trim().parse().map_err(|_| {
            MailConfigError::new(
                FROM,
                format!(
                    "{:?} is not a mailbox (use name@example.org or Name <name@example.org>)",
                    settings.from
                ),
            )
        })?;
        if settings.timeout.is_zero() {
            return Err(MailConfigError::new(TIMEOUT, "must be longer than zero"));
        }

        let mut roots = Vec::with_capacity(settings.extra_roots.len());
        for (i, der) in settings.extra_roots.into_iter().enumerate() {
            let cert = Certificate::from_der(der).map_err(|e| {
                MailConfigError::new(EXTRA_ROOTS, format!("certificate {}: {e}", i + 1))
            })?;
            roots.push(cert);
        }
        let tls = match endpoint.security {
            Security::Plain => Tls::None,
            security => {
                let mut parameters = TlsParameters::builder(endpoint.host.clone());
                for root in roots {
                    parameters = parameters.add_root_certificate(root);
                }
                // Loads the platform's roots now, so a machine without any fails at startup.
                let parameters = parameters.build_rustls().map_err(|e| {
                    MailConfigError::new(EXTRA_ROOTS, format!("cannot set up TLS: {e}"))
                })?;
                match security {
                    Security::Implicit => Tls::Wrapper(parameters),
                    Security::StartTlsRequired => Tls::Required(parameters),
                    _ => Tls::Opportunistic(parameters),
                }
            }
        };

        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&endpoint.host)
            .port(endpoint.port)
            .tls(tls)
            .timeout(Some(settings.timeout));
        let password = endpoint.login.as_ref().map(|(_, p)| p.clone());
        if let Some((user, password)) = &endpoint.login {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        Ok(Self {
            client: builder.build(),
            from,
            timeout: settings.timeout,
            endpoint: format!("{} ({})", endpoint.describe(), endpoint.security.describe()),
            password,
        })
    }

    /// Where mail goes, without the password: `smtp://user@host:587?tls=required (STARTTLS
    /// required)`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Connects, does TLS and AUTH as configured, sends `NOOP` and `QUIT`: whether mail could
    /// be sent now (for `tessera config check`). Errors are classified as for
    /// [`MailTransport::send`] (a refused password is permanent).
    pub async fn check(&self) -> Result<(), SendError> {
        match tokio::time::timeout(self.timeout, self.client.test_connection()).await {
            Err(_) => Err(self.timed_out()),
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(SendError::Temporary(
                "the server did not answer NOOP".to_owned(),
            )),
            Ok(Err(e)) => Err(self.failure(&e, None)),
        }
    }

    /// The message as lettre builds it: From, To, Subject, Date, Message-ID, Content-Language;
    /// text/plain, or
    /// multipart/alternative with the HTML; UTF-8 throughout.
    fn compose(&self, message: &MailMessage) -> Result<lettre::Message, SendError> {
        let to: Address = message
            .to
            .parse()
            .map_err(|_| SendError::Permanent("the recipient's address is not valid".to_owned()))?;
        // Random, on the sender's domain (lettre's own would name this machine).
        let id = MailId::generate()
            .map_err(|e| SendError::Temporary(format!("cannot make a Message-ID: {e}")))?;
        let mut builder = lettre::Message::builder()
            .message_id(Some(format!("<{id}@{}>", self.from.email.domain())))
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(message.subject.as_str());
        if is_language_tag(&message.language) {
            builder = builder.header(ContentLanguage(message.language.clone()));
        } else if !message.language.is_empty() {
            tracing::warn!(language = %message.language.escape_debug(), "not a language tag; Content-Language left out");
        }
        let built = match &message.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                message.text.clone(),
                html.clone(),
            )),
            None => builder.singlepart(SinglePart::plain(message.text.clone())),
        };
        built.map_err(|e| SendError::Permanent(format!("cannot compose the message: {e}")))
    }

    fn timed_out(&self) -> SendError {
        SendError::Temporary(format!(
            "no answer from {} within {:?}",
            self.endpoint, self.timeout
        ))
    }

    /// A lettre error as a [`SendError`]: 5xx replies are permanent but for a refused login (53x),
    /// everything else (4xx,
    /// connection, TLS, timeouts, a server lacking STARTTLS or AUTH) temporary. The text has
    /// no password, no recipient and no content.
    fn failure(
        &self,
        error: &lettre::transport::smtp::Error,
        recipient: Option<&str>,
    ) -> SendError {
        let mut text = error_chain(error);
        if let Some(password) = &self.password {
            text = scrub(&text, password.expose_secret(), "<password>");
        }
        if let Some(recipient) = recipient {
            text = scrub(&text, recipient, "<recipient>");
        }
        if text.len() > MAX_ERROR_TEXT {
            let mut end = MAX_ERROR_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        // A refused login (53x: AUTH) is the operator's to fix, not the message's fault: it is
        // retried, so the queue keeps its mail until the password is right again.
        let auth_refused = error.status().is_some_and(|code| {
            code.category == lettre::transport::smtp::response::Category::Unspecified3
        });
        if error.is_permanent() && !auth_refused {
            SendError::Permanent(text)
        } else {
            SendError::Temporary(text)
        }
    }
}

#[async_trait]
impl MailTransport for SmtpTransport {
    async fn send(&self, message: &MailMessage) -> Result<(), SendError> {
        let email = self.compose(message)?;
        // lettre bounds connecting only: a server that stops answering would hold the worker.
        match tokio::time::timeout(self.timeout, self.client.send(email)).await {
            Err(_) => Err(self.timed_out()),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.failure(&e, Some(&message.to))),
        }
    }
}

/// The error and its sources, as one line (lettre's own text stops at the first source).
fn error_chain(error: &lettre::transport::smtp::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    // The first source is already part of lettre's text.
    if let Some(first) = source {
        source = first.source();
    }
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    // lettre wraps some errors in one of the same kind ("Connection error: Connection error:
    // invalid peer certificate"): say each part once.
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    parts.join(": ").replace(['\r', '\n'], " ")
}

/// `text` with every occurrence of `secret` (ASCII case ignored) replaced.
fn scrub(text: &str, secret: &str, replacement: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    // ASCII lowercasing keeps byte offsets.
    let lower_text = text.to_ascii_lowercase();
    let lower_secret = secret.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(found) = lower_text[from..].find(&lower_secret) {
        out.push_str(&text[from..from + found]);
        out.push_str(replacement);
        from += found + secret.len();
    }
    out.push_str(&text[from..]);
    out
}

/// A BCP 47 tag as Tessera writes them (`en`, `zh-Hans`, `pt-BR`): letters, digits and
/// single dashes, at most 35 characters (RFC 5646 §4.4.1's advice).
fn is_language_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 35
        && tag.split('-').all(|sub| {
            !sub.is_empty() && sub.len() <= 8 && sub.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// `Content-Language` (RFC 3282).
#[derive(Clone)]
struct ContentLanguage(String);

impl Header for ContentLanguage {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Content-Language")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_ignores_ascii_case() {
        assert_eq!(
            scrub(
                "550 <Alice@Example.org>: no; alice@example.org",
                "alice@example.org",
                "<r>"
            ),
            "550 <<r>>: no; <r>"
        );
        assert_eq!(scrub("nothing here", "x@y", "<r>"), "nothing here");
    }

    #[test]
    fn language_tags() {
        for good in ["en", "zh-Hans", "pt-BR", "de-CH-1996"] {
            assert!(is_language_tag(good), "{good}");
        }
        for bad in [
            "",
            "en\r\nBcc: x@y",
            "en--US",
            "-en",
            "en_US",
            "toolongsubtag",
        ] {
            assert!(!is_language_tag(bad), "{bad}");
        }
    }
}
