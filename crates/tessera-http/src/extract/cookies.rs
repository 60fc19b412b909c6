//! The credential cookies: their names, and how a request's value for one is read.

use std::borrow::Cow;

use axum::http::{HeaderMap, header};
use tessera_core::{RefreshToken, SessionId};

/// The session cookie's default name. `__Host-` makes browsers insist on Secure, Path=/ and no Domain, so a
/// sibling subdomain cannot plant or overwrite it.
pub const SESSION_COOKIE: &str = "__Host-tessera";
/// The hybrid model's access-token cookie's default name (`__Host-`: Secure, Path=/, no Domain).
pub const HYBRID_ACCESS_COOKIE: &str = "__Host-tessera-at";
/// The hybrid model's refresh-token cookie's default name (`__Host-`: Secure, Path=/, no Domain). A `__Secure-`
/// cookie could be scoped to `/v1/hybrid`, but a sibling subdomain can set one of that name for
/// the whole domain (`Domain=`), so it would let another site log a browser in as someone else;
/// only `__Host-` cookies are credentials here.
pub const HYBRID_REFRESH_COOKIE: &str = "__Host-tessera-rt";
/// The device cookie's default name: proof that this browser logged in to an account before, so that it keeps
/// a failed-attempt budget of its own. Not a credential: it authenticates nothing.
pub const DEVICE_COOKIE: &str = "__Host-tessera-device";

/// The names of the cookies Tessera sets, from one base name (`http.cookie_name`, default
/// `tessera`): `__Host-{base}` for the session, `__Host-{base}-at` and `__Host-{base}-rt` for the
/// hybrid model's access and refresh tokens, `__Host-{base}-device` for the device cookie. Every
/// one is a `__Host-` cookie (Secure, `Path=/`, no `Domain`), whatever path Tessera's routes are
/// mounted under, so a sibling subdomain can neither plant nor overwrite one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieNames {
    /// The session cookie.
    pub session: String,
    /// The hybrid model's access-token cookie.
    pub hybrid_access: String,
    /// The hybrid model's refresh-token cookie.
    pub hybrid_refresh: String,
    /// The device cookie (not a credential; see [`DEVICE_COOKIE`]).
    pub device: String,
}

impl CookieNames {
    /// The names from `base`: 1 to 64 letters, digits, `-` or `_`, starting with a letter or a
    /// digit and not ending in `-at`, `-rt` or `-device` (which would give one deployment's
    /// session cookie the name of another's hybrid or device cookie). An error says what is wrong.
    ///
    /// ```
    /// use tessera_http::extract::CookieNames;
    /// let names = CookieNames::new("shop").unwrap();
    /// assert_eq!(names.session, "__Host-shop");
    /// assert_eq!(names.hybrid_refresh, "__Host-shop-rt");
    /// assert_eq!(CookieNames::default().session, tessera_http::extract::SESSION_COOKIE);
    /// assert!(CookieNames::new("a b").is_err());
    /// assert!(CookieNames::new("__Host-shop").is_err());
    /// assert!(CookieNames::new("shop-at").is_err());
    /// ```
    pub fn new(base: &str) -> Result<Self, String> {
        if base.is_empty()
            || base.len() > 64
            || !base
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "{base:?} is not a cookie name: use 1 to 64 letters, digits, '-' or '_'"
            ));
        }
        if !base.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "{base:?} must start with a letter or a digit (the __Host- prefix is added)"
            ));
        }
        if ["-at", "-rt", "-device"]
            .iter()
            .any(|end| base.ends_with(end))
        {
            return Err(format!(
                "{base:?} must not end in -at, -rt or -device: those endings name the other cookies"
            ));
        }
        Ok(Self {
            session: format!("__Host-{base}"),
            hybrid_access: format!("__Host-{base}-at"),
            hybrid_refresh: format!("__Host-{base}-rt"),
            device: format!("__Host-{base}-device"),
        })
    }

    /// Every credential cookie (session, hybrid access, hybrid refresh).
    pub fn credentials(&self) -> [&str; 3] {
        [&self.session, &self.hybrid_access, &self.hybrid_refresh]
    }
}

impl Default for CookieNames {
    fn default() -> Self {
        Self {
            session: SESSION_COOKIE.to_owned(),
            hybrid_access: HYBRID_ACCESS_COOKIE.to_owned(),
            hybrid_refresh: HYBRID_REFRESH_COOKIE.to_owned(),
            device: DEVICE_COOKIE.to_owned(),
        }
    }
}

/// The value of the credential cookie named exactly `name`. Names are compared as the browser
/// stores them, never decoded (`__%48ost-tessera` is not `__Host-tessera`). A request carrying the
/// cookie more than once gets `None`: a sibling subdomain can add a second cookie of that name,
/// and nothing tells which one this site set, so neither is trusted.
pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        // Bytes that are not text (a browser may send any it was given) do not hide a header:
        // its cookies still count, with the odd bytes as replacement characters that no
        // credential parses. (`from_utf8` first: it is much faster on the text every browser
        // sends.)
        let text = match std::str::from_utf8(value.as_bytes()) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(value.as_bytes()),
        };
        // Names are compared exactly, so a header without the name's text cannot hold the
        // cookie: skip parsing it (most requests carry one model's cookies only).
        if !text.contains(name) {
            continue;
        }
        for (cookie_name, value) in pairs(&text) {
            if cookie_name == name {
                if found.is_some() {
                    return None;
                }
                found = Some(value.to_owned());
            }
        }
    }
    found
}

/// The `name=value` pairs of one `Cookie` header, as a browser sends them: separated by `;`,
/// with spaces and tabs around names and values dropped, and nothing else. In particular no other
/// whitespace: the `cookie` crate's parser trims every Unicode space, so a cookie named
/// `\u{2000}__Host-tessera`, which a browser lets any sibling subdomain set because its name does
/// not start with `__Host-`, would read as `__Host-tessera`. Segments without `=` are skipped.
fn pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    const HTTP_SPACE: [char; 2] = [' ', '\t'];
    header.split(';').filter_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        Some((
            name.trim_matches(HTTP_SPACE),
            value.trim_matches(HTTP_SPACE),
        ))
    })
}

/// The session secret in the request's cookie, if it parses.
pub(crate) fn session_secret(headers: &HeaderMap, names: &CookieNames) -> Option<SessionId> {
    cookie_value(headers, &names.session).and_then(|v| SessionId::parse(&v))
}

/// The hybrid refresh token in the request's cookie, if it parses.
pub(crate) fn hybrid_refresh_token(
    headers: &HeaderMap,
    names: &CookieNames,
) -> Option<RefreshToken> {
    cookie_value(headers, &names.hybrid_refresh).and_then(|v| RefreshToken::parse(&v))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    /// A second cookie of the name is ambiguous even when its header carries bytes that are not
    /// text (found by the `http_request` fuzz target: such a header used to be skipped whole).
    #[test]
    fn a_duplicate_in_a_header_that_is_not_text_still_counts() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-tessera=first"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"__Host-tessera=Host-\xbdsecond").unwrap(),
        );
        assert_eq!(cookie_value(&headers, SESSION_COOKIE), None);
        headers.remove(header::COOKIE);
        headers.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"other=\xbd; __Host-tessera=only").unwrap(),
        );
        assert_eq!(
            cookie_value(&headers, SESSION_COOKIE).as_deref(),
            Some("only")
        );
    }

    /// Only spaces and tabs around a name are dropped (as browsers do before they apply the
    /// `__Host-` rules). A name with any other whitespace is another cookie, which a sibling
    /// subdomain may set: it is neither the credential nor a second copy of it (found by a
    /// black-box review: the `cookie` crate trims every Unicode space).
    #[test]
    fn a_name_padded_with_other_whitespace_is_another_cookie() {
        let header = |text: &str| {
            let mut headers = HeaderMap::new();
            headers.append(
                header::COOKIE,
                HeaderValue::from_bytes(text.as_bytes()).unwrap(),
            );
            headers
        };
        for planted in [
            "\u{2000}__Host-tessera=planted",
            "__Host-tessera\u{a0}=planted",
            "\u{3000}__Host-tessera=planted",
            "\u{2028}__Host-tessera=planted",
            "\u{85}__Host-tessera=planted",
            "\u{feff}__Host-tessera=planted",
        ] {
            assert_eq!(
                cookie_value(&header(planted), SESSION_COOKIE),
                None,
                "{planted:?}"
            );
            let both = format!("__Host-tessera=real; {planted}");
            assert_eq!(
                cookie_value(&header(&both), SESSION_COOKIE).as_deref(),
                Some("real"),
                "{both:?}"
            );
        }
        assert_eq!(
            cookie_value(
                &header(" \t__Host-tessera \t= real \t; other=1"),
                SESSION_COOKIE
            )
            .as_deref(),
            Some("real")
        );
        assert_eq!(
            cookie_value(&header("__Host-tessera=a=b;noequals;;"), SESSION_COOKIE).as_deref(),
            Some("a=b")
        );
        assert_eq!(
            cookie_value(
                &header("__Host-tessera=a; __Host-tessera=b"),
                SESSION_COOKIE
            ),
            None
        );
    }
}
