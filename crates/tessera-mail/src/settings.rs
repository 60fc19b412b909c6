//! What the transport is configured with, and the reading of `email.smtp_url`.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// The SMTP transport's configuration.
///
/// `Debug` shows neither the URL (it may carry a password) nor the password.
pub struct SmtpSettings {
    /// `smtp://[user[:password]@]host[:port][?tls=required|opportunistic|none]` or
    /// `smtps://[user[:password]@]host[:port]`; see the crate documentation for what each means.
    /// The user name and password are percent-encoded (`@` as `%40`).
    pub url: SecretString,
    /// The password, when the URL names a user but holds no password (so that the password can
    /// come from its own setting or file).
    pub password: Option<SecretString>,
    /// The sender: `noreply@example.org` or `Example <noreply@example.org>`.
    pub from: String,
    /// The longest a delivery attempt may take, from connecting to the server's last reply.
    pub timeout: Duration,
    /// Certificates (DER) trusted besides the platform's roots: a private CA, or a test
    /// server's own certificate.
    pub extra_roots: Vec<Vec<u8>>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .field("extra_roots", &self.extra_roots.len())
            .finish_non_exhaustive()
    }
}

/// A configuration the transport cannot work with. Says which setting is wrong and why, and
/// never repeats a password (nor the URL, which may hold one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct MailConfigError {
    field: &'static str,
    problem: String,
}

impl MailConfigError {
    pub(crate) fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }

    /// The setting at fault: [`URL`], [`PASSWORD`], [`FROM`], [`TIMEOUT`] or [`EXTRA_ROOTS`].
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with it, without the setting's name.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

/// The name of [`SmtpSettings::url`] in errors.
pub const URL: &str = "email.smtp_url";
/// The name of [`SmtpSettings::password`] in errors.
pub const PASSWORD: &str = "email.smtp_password";
/// The name of [`SmtpSettings::from`] in errors.
pub const FROM: &str = "email.from";
/// The name of [`SmtpSettings::timeout`] in errors.
pub const TIMEOUT: &str = "email.timeout";
/// The name of [`SmtpSettings::extra_roots`] in errors.
pub const EXTRA_ROOTS: &str = "email.ca_file";

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Security {
    /// TLS from the first byte (`smtps://`).
    Implicit,
    /// Plain, then STARTTLS, which must succeed.
    StartTlsRequired,
    /// Plain, then STARTTLS if the server offers it.
    StartTlsOpportunistic,
    /// Plain throughout.
    Plain,
}

impl Security {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Security::Implicit => "implicit TLS",
            Security::StartTlsRequired => "STARTTLS required",
            Security::StartTlsOpportunistic => "STARTTLS when offered",
            Security::Plain => "no TLS",
        }
    }
}

/// `email.smtp_url`, read.
pub(crate) struct Endpoint {
    pub(crate) security: Security,
    /// A host name or an IP address (an IPv6 one without its brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) login: Option<(String, SecretString)>,
}

impl Endpoint {
    /// Reads the URL and, when the URL has none, takes the password from `password`.
    pub(crate) fn parse(
        url: &SecretString,
        password: Option<&SecretString>,
    ) -> Result<Endpoint, MailConfigError> {
        let url = url.expose_secret();
        let bad = |problem: &str| MailConfigError::new(URL, problem);
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains spaces or control characters"));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad(
                "not a URL (use smtp://host[:port] or smtps://host[:port])",
            ));
        };
        let implicit = match scheme.to_ascii_lowercase().as_str() {
            "smtps" => true,
            "smtp" => false,
            _ => {
                let shown = if is_token(scheme) { scheme } else { "…" };
                return Err(bad(&format!(
                    "unknown scheme \"{shown}\" (use smtp:// or smtps://)"
                )));
            }
        };
        // The user information ends at the last @: a password may hold / ? # raw.
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        if rest.contains('#') {
            return Err(bad("a URL fragment (#…) is not allowed"));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (hostport, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        if !path.is_empty() && path != "/" {
            return Err(bad("a path is not allowed (smtp://host:port)"));
        }
        let (host, port) = host_and_port(hostport)?;

        let mut tls: Option<&str> = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "tls" if tls.is_none() => tls = Some(value),
                "tls" => return Err(bad("tls= is given twice")),
                _ => {
                    let shown = if is_token(key) { key } else { "…" };
                    return Err(bad(&format!(
                        "unknown parameter \"{shown}\" (only tls= is understood)"
                    )));
                }
            }
        }

        let login = match userinfo {
            None => None,
            Some(userinfo) => {
                let (user, in_url) = match userinfo.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (userinfo, None),
                };
                let user = percent_decode(user)
                    .ok_or_else(|| bad("the user name is not valid percent-encoded UTF-8"))?;
                if user.is_empty() {
                    return Err(bad("the user name before @ is empty"));
                }
                let password = match (in_url, password) {
                    (Some(_), Some(_)) => {
                        return Err(MailConfigError::new(
                            PASSWORD,
                            format!("set, but {URL} holds a password too: keep one"),
                        ));
                    }
                    (Some(in_url), None) => {
                        SecretString::from(percent_decode(in_url).ok_or_else(|| {
                            bad("the password is not valid percent-encoded UTF-8")
                        })?)
                    }
                    (None, Some(password)) => password.clone(),
                    (None, None) => {
                        return Err(bad(&format!(
                            "names a user but no password (smtp://user:password@host, or set {PASSWORD})"
                        )));
                    }
                };
                if password.expose_secret().is_empty() {
                    return Err(MailConfigError::new(
                        if in_url.is_some() { URL } else { PASSWORD },
                        "the password is empty",
                    ));
                }
                Some((user, password))
            }
        };
        if login.is_none() && password.is_some() {
            return Err(MailConfigError::new(
                PASSWORD,
                format!("set, but {URL} names no user (smtp://user@host)"),
            ));
        }

        let security = match (implicit, tls) {
            (true, None) => Security::Implicit,
            (true, Some(_)) => {
                return Err(bad("tls= applies to smtp:// only (smtps:// is always TLS)"));
            }
            (false, Some("required")) => Security::StartTlsRequired,
            (false, Some("opportunistic")) => Security::StartTlsOpportunistic,
            (false, Some("none")) => Security::Plain,
            (false, Some(other)) => {
                let shown = if is_token(other) { other } else { "…" };
                return Err(bad(&format!(
                    "unknown tls=\"{shown}\" (use required, opportunistic or none)"
                )));
            }
            // A password is never sent where STARTTLS could have been stripped.
            (false, None) if login.is_some() => Security::StartTlsRequired,
            (false, None) => Security::StartTlsOpportunistic,
        };
        let port = port.unwrap_or(match security {
            Security::Implicit => 465,
            Security::StartTlsRequired | Security::StartTlsOpportunistic => 587,
            Security::Plain => 25,
        });
        Ok(Endpoint {
            security,
            host,
            port,
            login,
        })
    }

    /// The endpoint as a URL without its password, for logs and `config check`.
    pub(crate) fn describe(&self) -> String {
        let scheme = if self.security == Security::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        let user = match &self.login {
            Some((user, _)) => format!("{}@", percent_encode(user)),
            None => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let tls = match self.security {
            Security::Implicit => "",
            Security::StartTlsRequired => "?tls=required",
            Security::StartTlsOpportunistic => "?tls=opportunistic",
            Security::Plain => "?tls=none",
        };
        format!("{scheme}://{user}{host}:{}{tls}", self.port)
    }
}

/// Short, harmless text that may be repeated in an error.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 24
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-._".contains(c))
}

fn host_and_port(hostport: &str) -> Result<(String, Option<u16>), MailConfigError> {
    let bad = |problem: &str| MailConfigError::new(URL, problem);
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("an IPv6 address lacks its closing ]"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("the address in [] is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| bad("expected :port after the IPv6 address"))?,
            ),
        };
        (host, port)
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host (smtp://host[:port])"));
    }
    if !hostport.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    {
        return Err(bad(
            "the host may contain only letters, digits, dots and dashes",
        ));
    }
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(number) if number > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Some(number),
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// `%XX` decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, password: Option<&str>) -> Result<Endpoint, MailConfigError> {
        Endpoint::parse(
            &SecretString::from(url),
            password.map(SecretString::from).as_ref(),
        )
    }

    fn summary(
        url: &str,
        password: Option<&str>,
    ) -> (Security, String, u16, Option<(String, String)>) {
        let e = parse(url, password).unwrap();
        let login = e
            .login
            .map(|(user, pass)| (user, pass.expose_secret().to_owned()));
        (e.security, e.host, e.port, login)
    }

    #[test]
    fn schemes_tls_modes_and_default_ports() {
        use Security::*;
        let login = |u: &str, p: &str| Some((u.to_owned(), p.to_owned()));
        for (url, password, expected) in [
            (
                "smtp://mail.example.org",
                None,
                (StartTlsOpportunistic, "mail.example.org", 587, None),
            ),
            (
                "SMTP://Mail.Example.org:2525/",
                None,
                (StartTlsOpportunistic, "mail.example.org", 2525, None),
            ),
            (
                "smtp://mail.example.org?tls=required",
                None,
                (StartTlsRequired, "mail.example.org", 587, None),
            ),
            (
                "smtp://127.0.0.1?tls=none",
                None,
                (Plain, "127.0.0.1", 25, None),
            ),
            ("smtps://[::1]", None, (Implicit, "::1", 465, None)),
            ("smtps://[::1]:1465", None, (Implicit, "::1", 1465, None)),
            // Credentials make STARTTLS required unless tls= says otherwise.
            (
                "smtp://u:p@h",
                None,
                (StartTlsRequired, "h", 587, login("u", "p")),
            ),
            (
                "smtp://u@h?tls=opportunistic",
                Some("p"),
                (StartTlsOpportunistic, "h", 587, login("u", "p")),
            ),
            (
                "smtp://u%40x.org:p%3A%40%25w@h",
                None,
                (StartTlsRequired, "h", 587, login("u@x.org", "p:@%w")),
            ),
            (
                "smtp://u:p@ss@h",
                None,
                (StartTlsRequired, "h", 587, login("u", "p@ss")),
            ),
            (
                "smtp://u:p/?#:s@h/",
                None,
                (StartTlsRequired, "h", 587, login("u", "p/?#:s")),
            ),
        ] {
            let (security, host, port, login) = expected;
            assert_eq!(
                summary(url, password),
                (security, host.to_owned(), port, login),
                "{url}"
            );
        }
    }

    #[test]
    fn bad_urls_are_refused_without_repeating_the_password() {
        for (url, password, expected) in [
            (
                "http://u:hunter2@h",
                None,
                "email.smtp_url: unknown scheme \"http\" (use smtp:// or smtps://)",
            ),
            (
                "hunter2",
                None,
                "email.smtp_url: not a URL (use smtp://host[:port] or smtps://host[:port])",
            ),
            (
                "smtp://u:hunter2@",
                None,
                "email.smtp_url: no host (smtp://host[:port])",
            ),
            (
                "smtp://u:hunter2@h:0",
                None,
                "email.smtp_url: the port must be a number from 1 to 65535",
            ),
            (
                "smtp://u:hunter2@h:99999",
                None,
                "email.smtp_url: the port must be a number from 1 to 65535",
            ),
            (
                "smtp://u:hunter2@h:+25",
                None,
                "email.smtp_url: the port must be a number from 1 to 65535",
            ),
            (
                "smtp://u:hunter2@h/ehlo",
                None,
                "email.smtp_url: a path is not allowed (smtp://host:port)",
            ),
            (
                "smtp://u:hunter2@h?tls=hunter2",
                None,
                "email.smtp_url: unknown tls=\"hunter2\" (use required, opportunistic or none)",
            ),
            (
                "smtp://u:hunter2@h?hunter2=1",
                None,
                "email.smtp_url: unknown parameter \"hunter2\" (only tls= is understood)",
            ),
            (
                "smtps://u:hunter2@h?tls=required",
                None,
                "email.smtp_url: tls= applies to smtp:// only (smtps:// is always TLS)",
            ),
            (
                "smtp://u:hunter2@h#x",
                None,
                "email.smtp_url: a URL fragment (#…) is not allowed",
            ),
            (
                "smtp://u:hunter2%zz@h",
                None,
                "email.smtp_url: the password is not valid percent-encoded UTF-8",
            ),
            (
                "smtp://u:hunter2 @h",
                None,
                "email.smtp_url: contains spaces or control characters",
            ),
            (
                "smtp://:hunter2@h",
                None,
                "email.smtp_url: the user name before @ is empty",
            ),
            ("smtp://u:@h", None, "email.smtp_url: the password is empty"),
            (
                "smtp://u@h",
                None,
                "email.smtp_url: names a user but no password (smtp://user:password@host, or set email.smtp_password)",
            ),
            (
                "smtp://u:hunter2@h",
                Some("hunter2"),
                "email.smtp_password: set, but email.smtp_url holds a password too: keep one",
            ),
            (
                "smtp://h",
                Some("hunter2"),
                "email.smtp_password: set, but email.smtp_url names no user (smtp://user@host)",
            ),
            (
                "smtp://u@h",
                Some(""),
                "email.smtp_password: the password is empty",
            ),
            (
                "smtp://u:hunter2@[::1",
                None,
                "email.smtp_url: an IPv6 address lacks its closing ]",
            ),
            (
                "smtp://u:hunter2@ho/st",
                None,
                "email.smtp_url: a path is not allowed (smtp://host:port)",
            ),
            (
                "smtp://u:hunter2@h%41st",
                None,
                "email.smtp_url: the host may contain only letters, digits, dots and dashes",
            ),
        ] {
            let error = parse(url, password)
                .err()
                .unwrap_or_else(|| panic!("{url} accepted"));
            assert_eq!(error.to_string(), expected, "{url}");
        }
        // Odd schemes and keys are not repeated either.
        let error = parse("hunter2:x://h", None).err().unwrap();
        assert_eq!(
            error.to_string(),
            "email.smtp_url: unknown scheme \"…\" (use smtp:// or smtps://)"
        );
    }

    #[test]
    fn described_without_the_password() {
        let e = parse("smtp://us%40er:hunter2@[::1]:2525", None).unwrap();
        assert_eq!(e.describe(), "smtp://us%40er@[::1]:2525?tls=required");
        let e = parse("smtps://mail.example.org", None).unwrap();
        assert_eq!(e.describe(), "smtps://mail.example.org:465");
    }
}
