//! Forward-auth (`GET /v1/verify`): a reverse proxy asks whether a request may pass.
//!
//! The proxy describes the original request in `X-Forwarded-Method`, `X-Forwarded-Proto`,
//! `X-Forwarded-Host` and `X-Forwarded-Uri`. The URI's path is matched against the configured
//! route rules (a path prefix needs a role, or is public); the longest matching prefix wins and
//! prefixes match whole segments. Paths that different servers could read differently (dot
//! segments, empty segments, encoded slashes, backslashes, `;` parameters, double encoding) are
//! refused with a 400 rather than guessed at.
//!
//! The answer: 200 with the identity in `X-Tessera-*` headers; 401 (or, for a browser
//! navigation when a login page is configured, a redirect to it); 403 when the caller lacks the
//! route's role. Every check is answered from memory, like every other credential check.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::extract::{AuthModel, AuthUser, CookieNames, cookie_value};
use crate::problem::ApiError;
use crate::state::{AppState, origin_of};

/// The original request's method; only a GET or HEAD navigation may be answered with a redirect
/// to the login page.
pub const FORWARDED_METHOD: &str = "x-forwarded-method";
/// The original request's scheme, `http` or `https`; with the host and URI it makes the login
/// page's return address.
pub const FORWARDED_PROTO: &str = "x-forwarded-proto";
/// The original request's host (with an optional port); required when a rule is bound to a host.
pub const FORWARDED_HOST: &str = "x-forwarded-host";
/// The original request's path and query; required once any route rule is configured.
pub const FORWARDED_URI: &str = "x-forwarded-uri";

/// The user id.
pub const USER_HEADER: &str = "x-tessera-user";
/// The username, percent-encoded UTF-8 (see [`encode_username`]).
pub const USERNAME_HEADER: &str = "x-tessera-username";
/// The roles, comma-separated.
pub const ROLES_HEADER: &str = "x-tessera-roles";
/// `session`, `token` or `hybrid`.
pub const MODEL_HEADER: &str = "x-tessera-model";
/// With `?redirect=header`: where a 401 would have redirected a browser.
pub const LOCATION_HEADER: &str = "x-tessera-location";

/// The longest `X-Forwarded-Uri` accepted.
const MAX_URI: usize = 8 * 1024;

/// Who may pass a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, logged in or not.
    Public,
    /// Any logged-in user (what a path without a rule needs; a rule says it to add a second
    /// factor requirement).
    LoggedIn,
    /// A logged-in user with this role.
    Role(String),
}

/// A route rule as configured: requests whose path starts with `prefix` (whole segments), on
/// `host` when given, need `access`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRule {
    /// The path prefix the rule covers, matched segment by segment (`/admin` covers
    /// `/admin/users`, not `/administrator`).
    pub prefix: String,
    /// The host (with an optional port) the rule is limited to; `None` for every host. A
    /// host-bound rule wins over one for every host with the same prefix.
    pub host: Option<String>,
    /// Who may pass.
    pub access: Access,
    /// When set, a logged-in caller must also have used a second factor within this long
    /// (else 401 with RFC 9470's `insufficient_user_authentication`); not with
    /// [`Access::Public`].
    pub second_factor_max_age: Option<std::time::Duration>,
}

/// A setting that cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyConfigError {
    /// The setting at fault, e.g. `verify.rules`.
    pub key: &'static str,
    /// What is wrong with it, naming the rule at fault when there is one.
    pub message: String,
}

impl std::fmt::Display for VerifyConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for VerifyConfigError {}

/// Forward-auth settings, checked once when built; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct VerifyConfig(Arc<Compiled>);

#[derive(Debug, Default)]
struct Compiled {
    /// Longest prefix first; for one prefix, the host-bound rule first.
    rules: Vec<CompiledRule>,
    any_host_rule: bool,
    login_url: Option<String>,
    /// Set when the configuration could not be built: every check is refused (fail closed).
    broken: Option<String>,
}

#[derive(Debug)]
struct CompiledRule {
    prefix: String,
    /// The prefix's segments, lower-cased.
    segments: Vec<String>,
    host: Option<String>,
    access: Access,
    second_factor_max_age: Option<std::time::Duration>,
}

impl VerifyConfig {
    /// Checks and compiles the rules and the login page address.
    pub fn new(
        rules: Vec<RouteRule>,
        login_url: Option<String>,
    ) -> Result<Self, VerifyConfigError> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, rule) in rules.into_iter().enumerate() {
            let fail = |message: String| VerifyConfigError {
                key: "verify.rules",
                message: format!("rule {} (prefix {:?}): {message}", i + 1, rule.prefix),
            };
            let segments = rule_segments(&rule.prefix).map_err(fail)?;
            let host = match &rule.host {
                Some(host) => Some(normalize_host(host).ok_or_else(|| {
                    fail(format!(
                        "host {host:?} is not a host name (with an optional :port)"
                    ))
                })?),
                None => None,
            };
            if let Access::Role(role) = &rule.access
                && !is_role_name(role)
            {
                return Err(fail(format!(
                    "role {role:?} is not a role name (1-32 of letters, digits, - _ . :)"
                )));
            }
            if rule.access == Access::Public && rule.second_factor_max_age.is_some() {
                return Err(fail(
                    "a public rule cannot need a second factor (second_factor_max_age)".into(),
                ));
            }
            if rule.second_factor_max_age.is_some_and(|age| age.is_zero()) {
                return Err(fail("second_factor_max_age must be positive".into()));
            }
            let prefix = format!("/{}", segments.join("/"));
            if compiled
                .iter()
                .any(|c: &CompiledRule| c.host == host && c.segments == segments)
            {
                return Err(fail(format!(
                    "another rule already covers {prefix}{}",
                    host.as_deref()
                        .map(|h| format!(" on {h}"))
                        .unwrap_or_default()
                )));
            }
            compiled.push(CompiledRule {
                prefix,
                segments,
                host,
                access: rule.access,
                second_factor_max_age: rule.second_factor_max_age,
            });
        }
        compiled.sort_by(|a, b| {
            b.segments
                .len()
                .cmp(&a.segments.len())
                .then(b.host.is_some().cmp(&a.host.is_some()))
        });
        let login_url = match login_url {
            Some(url) => Some(check_login_url(&url).map_err(|message| VerifyConfigError {
                key: "verify.login_url",
                message,
            })?),
            None => None,
        };
        Ok(Self(Arc::new(Compiled {
            any_host_rule: compiled.iter().any(|r| r.host.is_some()),
            rules: compiled,
            login_url,
            broken: None,
        })))
    }

    /// A configuration that refuses every check with a 500: for a caller that could not build
    /// the real one and must not fail open.
    pub fn refusing(reason: impl Into<String>) -> Self {
        Self(Arc::new(Compiled {
            broken: Some(reason.into()),
            ..Compiled::default()
        }))
    }

    /// The login page browsers are redirected to when a navigation is not logged in; `None`
    /// answers them with a 401 like any other client.
    pub fn login_url(&self) -> Option<&str> {
        self.0.login_url.as_deref()
    }

    /// The rule deciding `path` on `host`: the longest prefix matching whole segments (compared
    /// by [`match_key`], so no spelling an application might treat as the same name gets around
    /// a rule), a host-bound rule before one for every host.
    fn rule_for(&self, host: Option<&str>, path: &[String]) -> Option<&CompiledRule> {
        let path: Vec<String> = path.iter().map(|segment| match_key(segment)).collect();
        self.0.rules.iter().find(|rule| {
            let host_ok = match (&rule.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => host_matches(want, got),
                (Some(_), None) => false,
            };
            host_ok
                && rule.segments.len() <= path.len()
                && rule
                    .segments
                    .iter()
                    .zip(&path)
                    .all(|(want, got)| want == got)
        })
    }
}

/// How a path segment is compared with a rule: what applications that match names loosely
/// could take it for. Compatibility forms are folded (NFKC: `ｆｕｌｌｗｉｄｔｈ`, `ſ`, the Kelvin
/// sign), case is folded through upper case (so Turkish `ı` and `İ` compare as `i`, as Java's
/// `equalsIgnoreCase` does), and trailing dots and spaces are dropped (as Windows file systems
/// do). A segment that only looks like a rule's matches it, which can only make a route
/// stricter.
fn match_key(segment: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    if segment.is_ascii() {
        return segment.trim_end_matches(['.', ' ']).to_ascii_lowercase();
    }
    let folded: String = segment
        .nfkc()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        // `İ` lower-cases to `i` and a combining dot above.
        .filter(|&c| c != '\u{307}')
        .collect();
    folded.trim_end_matches(['.', ' ']).to_owned()
}

/// Role names as accounts hold them: 1–32 of letters, digits, `-`, `_`, `.`, `:`.
pub fn is_role_name(role: &str) -> bool {
    (1..=32).contains(&role.len())
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// A configured prefix's segments: `/` then segments of RFC 3986 path characters, without
/// percent-encoding, `;`, dot segments or empty segments; one trailing `/` is ignored.
fn rule_segments(prefix: &str) -> Result<Vec<String>, String> {
    let Some(rest) = prefix.strip_prefix('/') else {
        return Err("must start with /".into());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut segments = Vec::new();
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Err("must not contain an empty segment (//)".into());
        }
        if segment == "." || segment == ".." {
            return Err("must not contain . or .. segments".into());
        }
        if let Some(bad) = segment
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || "-._~!$&'()*+,=:@".contains(c)))
        {
            return Err(format!(
                "may contain only letters, digits and - . _ ~ ! $ & ' ( ) * + , = : @ between \
                 slashes (found {bad:?}); write the path as it is before percent-encoding"
            ));
        }
        segments.push(segment.to_ascii_lowercase());
    }
    Ok(segments)
}

/// A host name or address with an optional port, lower-cased; `None` when it is not one.
fn normalize_host(host: &str) -> Option<String> {
    let host = host.trim();
    if host.is_empty() || host.len() > 255 {
        return None;
    }
    let (name, port) = split_host_port(host)?;
    // `example.com.` is `example.com` (the root label written out): proxies route both alike,
    // so a rule for one must hold for the other.
    let name = match name.strip_suffix('.') {
        Some(stripped) if !name.starts_with('[') => stripped,
        _ => name,
    };
    let name_ok = if let Some(inner) = name.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    } else {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    let name_ok = name_ok && !name.ends_with('.');
    let canonical = match port {
        Some(port) => format!("{name}:{port}"),
        None => name.to_owned(),
    };
    (name_ok && port_ok).then(|| canonical.to_ascii_lowercase())
}

/// `host[:port]` → (host, port); an IPv6 address is bracketed.
fn split_host_port(host: &str) -> Option<(&str, Option<&str>)> {
    if host.starts_with('[') {
        let end = host.find(']')?;
        let (name, rest) = host.split_at(end + 1);
        return match rest {
            "" => Some((name, None)),
            _ => Some((name, Some(rest.strip_prefix(':')?))),
        };
    }
    match host.split_once(':') {
        Some((name, port)) => Some((name, Some(port))),
        None => Some((host, None)),
    }
}

/// A rule's host without a port matches that host on any port; with a port, only that port.
fn host_matches(want: &str, got: &str) -> bool {
    if want == got {
        return true;
    }
    match (split_host_port(want), split_host_port(got)) {
        (Some((want_name, None)), Some((got_name, Some(_)))) => want_name == got_name,
        _ => false,
    }
}

fn check_login_url(url: &str) -> Result<String, String> {
    if url.contains('#') {
        return Err(format!("{url:?} must not have a fragment (#)"));
    }
    origin_of(url)?;
    if url
        .chars()
        .any(|c| c.is_ascii_whitespace() || c.is_control())
    {
        return Err(format!("{url:?} must not contain spaces"));
    }
    Ok(url.to_owned())
}

/// Percent-encodes UTF-8 as RFC 3986 does: every byte except `A–Z a–z 0–9 - . _ ~` (and the
/// bytes in `keep`) becomes `%XX` (upper-case hex).
fn percent_encode(value: &str, keep: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || keep.contains(&b)
        {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

/// How `X-Tessera-Username` carries a username: percent-encoded UTF-8 (RFC 3986), every byte
/// but `A–Z a–z 0–9 - . _ ~` as `%XX`. `alice` stays `alice`; `zoë` is `zo%C3%AB`;
/// `bob@example.com` is `bob%40example.com`. Any RFC 3986 percent-decoder reads it back.
pub fn encode_username(username: &str) -> String {
    percent_encode(username, &[])
}

/// A percent-decoded path segment, or why it is refused.
fn decode_segment(raw: &str) -> Result<String, &'static str> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has a % that does not start a %XX escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).map_err(|_| "decodes to something that is not UTF-8")?;
    if decoded == "." || decoded == ".." {
        return Err("has a . or .. segment (plain or percent-encoded)");
    }
    if let Some(c) = decoded
        .chars()
        .find(|&c| matches!(c, '/' | '\\' | '%' | ';') || c.is_control())
    {
        return Err(match c {
            '/' => "has an encoded / inside a segment",
            '\\' => "has a backslash",
            '%' => "is percent-encoded twice",
            ';' => "has a ; (path parameters are read differently by different servers)",
            _ => "has a control character",
        });
    }
    Ok(decoded)
}

/// The decoded segments of an `X-Forwarded-Uri` path. A trailing `/` is allowed; any other
/// ambiguity is refused.
fn path_segments(path: &str) -> Result<Vec<String>, String> {
    let refuse = |why: &str| {
        format!(
            "X-Forwarded-Uri's path {why}; this server refuses it rather than guess what it names"
        )
    };
    let Some(rest) = path.strip_prefix('/') else {
        return Err(refuse("does not start with /"));
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut segments = Vec::new();
    for raw in rest.split('/') {
        if raw.is_empty() {
            return Err(refuse("has an empty segment (//)"));
        }
        segments.push(decode_segment(raw).map_err(refuse)?);
    }
    Ok(segments)
}

/// The original request, as the proxy describes it.
#[derive(Debug, Default)]
struct Forwarded {
    method: Option<String>,
    proto: Option<&'static str>,
    host: Option<String>,
    /// The path and query, as sent.
    uri: Option<String>,
    /// The path's decoded segments.
    segments: Vec<String>,
}

/// One value of a header, or an error for a header sent twice or not in visible ASCII.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad_forwarded(name, "is sent more than once"));
    }
    let value = first
        .to_str()
        .map_err(|_| bad_forwarded(name, "is not visible ASCII"))?
        .trim();
    if value.contains(',') {
        return Err(bad_forwarded(
            name,
            "holds several values; the proxy must set it, not append to it",
        ));
    }
    Ok(Some(value))
}

fn bad_forwarded(name: &str, why: &str) -> ApiError {
    ApiError::bad_request(
        "bad-forwarded-request",
        format!("{} {why}", display_name(name)),
    )
}

/// `x-forwarded-uri` → `X-Forwarded-Uri`.
fn display_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

impl Forwarded {
    fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let method = single(headers, FORWARDED_METHOD)?;
        if let Some(m) = method
            && (m.is_empty()
                || m.len() > 32
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)))
        {
            return Err(bad_forwarded(FORWARDED_METHOD, "is not an HTTP method"));
        }
        let proto = match single(headers, FORWARDED_PROTO)? {
            None => None,
            Some(p) if p.eq_ignore_ascii_case("https") => Some("https"),
            Some(p) if p.eq_ignore_ascii_case("http") => Some("http"),
            Some(_) => return Err(bad_forwarded(FORWARDED_PROTO, "must be http or https")),
        };
        let host = match single(headers, FORWARDED_HOST)? {
            None => None,
            Some(h) => Some(normalize_host(h).ok_or_else(|| {
                bad_forwarded(
                    FORWARDED_HOST,
                    "is not a host name (with an optional :port)",
                )
            })?),
        };
        let mut forwarded = Self {
            method: method.map(str::to_owned),
            proto,
            host,
            uri: None,
            segments: Vec::new(),
        };
        if let Some(uri) = single_uri(headers)? {
            let path = uri.split_once('?').map_or(uri, |(path, _)| path);
            forwarded.segments = path_segments(path)
                .map_err(|why| ApiError::bad_request("bad-forwarded-request", why))?;
            forwarded.uri = Some(uri.to_owned());
        }
        Ok(forwarded)
    }

    /// The request a DPoP proof sent with the original request names: its method and URL, when
    /// the proxy told all of them.
    fn dpop_target(&self) -> crate::extract::dpop::DpopTarget {
        use crate::extract::dpop::DpopTarget;
        let Some(method) = &self.method else {
            return DpopTarget::Unknown("the proxy did not send X-Forwarded-Method");
        };
        let Some(proto) = self.proto else {
            return DpopTarget::Unknown("the proxy did not send X-Forwarded-Proto");
        };
        let Some(host) = &self.host else {
            return DpopTarget::Unknown("the proxy did not send X-Forwarded-Host");
        };
        let Some(uri) = &self.uri else {
            return DpopTarget::Unknown("the proxy did not send X-Forwarded-Uri");
        };
        let path = uri.split_once('?').map_or(uri.as_str(), |(path, _)| path);
        DpopTarget::Known {
            method: method.clone(),
            url: format!("{proto}://{host}{path}"),
        }
    }

    /// Whether the original request may be answered with a redirect: a GET or HEAD (a form
    /// post would lose its body).
    fn redirectable(&self) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case("GET") || m.eq_ignore_ascii_case("HEAD"))
    }
}

/// `X-Forwarded-Uri`: a path with an optional query; unlike the other headers it may hold commas.
fn single_uri(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(FORWARDED_URI).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad_forwarded(FORWARDED_URI, "is sent more than once"));
    }
    if first.len() > MAX_URI {
        return Err(bad_forwarded(
            FORWARDED_URI,
            "is longer than this server accepts (8 KiB)",
        ));
    }
    let uri = first
        .to_str()
        .map_err(|_| bad_forwarded(FORWARDED_URI, "is not visible ASCII"))?;
    if !uri.starts_with('/') {
        return Err(bad_forwarded(
            FORWARDED_URI,
            "must be a path (starting with /) with an optional query",
        ));
    }
    if uri.contains(|c: char| c == '#' || c.is_ascii_whitespace() || c.is_ascii_control()) {
        return Err(bad_forwarded(
            FORWARDED_URI,
            "must not contain spaces, control characters or a fragment (#)",
        ));
    }
    Ok(Some(uri))
}

/// Whether `Accept` asks for HTML: a browser navigating, not an API client (`*/*` is not enough).
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            media.eq_ignore_ascii_case("text/html")
                && !parts.any(|p| {
                    p.split_once('=').is_some_and(|(k, v)| {
                        k.trim().eq_ignore_ascii_case("q")
                            && v.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                    })
                })
        })
}

/// Whether the request carries any credential at all.
fn has_credential(headers: &HeaderMap, names: &CookieNames) -> bool {
    headers.contains_key(header::AUTHORIZATION)
        || cookie_value(headers, &names.hybrid_access).is_some()
        || cookie_value(headers, &names.session).is_some()
}

/// How the proxy wants an unauthenticated browser sent to the login page.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RedirectStyle {
    /// 302 with `Location` (Traefik, Caddy).
    Status,
    /// 401 with the address in `X-Tessera-Location` (nginx, whose `auth_request` cannot pass a
    /// redirect on).
    Header,
}

fn redirect_style(parts: &Parts) -> Result<RedirectStyle, ApiError> {
    let mut style = RedirectStyle::Status;
    for pair in parts.uri.query().unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "redirect" {
            style = match value {
                "header" => RedirectStyle::Header,
                "status" => RedirectStyle::Status,
                _ => {
                    return Err(ApiError::bad_request(
                        "bad-query",
                        "redirect must be `status` (a 302) or `header` (a 401 with X-Tessera-Location)",
                    ));
                }
            };
        }
    }
    Ok(style)
}

/// The login page address for an unauthenticated navigation, with `return_to` set to the
/// original URL when its origin is this server's or a trusted one (exact match); otherwise
/// without a return address, so a forged `X-Forwarded-Host` cannot make the login page send the
/// user elsewhere.
fn login_location(state: &AppState, login_url: &str, forwarded: &Forwarded) -> String {
    let return_to = match (forwarded.proto, &forwarded.host, &forwarded.uri) {
        (Some(proto), Some(host), Some(uri)) => origin_of(&format!("{proto}://{host}"))
            .ok()
            .filter(|origin| state.0.trusted_origins.iter().any(|t| t == origin))
            .map(|origin| format!("{origin}{uri}")),
        _ => None,
    };
    match return_to {
        Some(url) => {
            let separator = if login_url.contains('?') { '&' } else { '?' };
            format!(
                "{login_url}{separator}return_to={}",
                percent_encode(&url, &[])
            )
        }
        None => login_url.to_owned(),
    }
}

fn count(outcome: &'static str) {
    metrics::counter!("tessera_forward_auth_total", "outcome" => outcome).increment(1);
}

/// What the route needs.
enum Need<'c> {
    Nothing,
    Login,
    /// The rule's prefix, and the role.
    Role(&'c str, &'c str),
}

/// The forward-auth decision for a request to `GET /v1/verify`.
pub async fn check(state: &AppState, mut parts: Parts) -> Result<Response, ApiError> {
    let config = state.0.config.verify.clone();
    if let Some(reason) = &config.0.broken {
        tracing::error!(%reason, "forward-auth refuses every request: its configuration is invalid");
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "forward-auth is misconfigured on this server; the cause has been logged",
        ));
    }
    let style = redirect_style(&parts)?;
    let forwarded = match Forwarded::from_headers(&parts.headers) {
        Ok(f) => f,
        Err(e) => {
            count("bad_request");
            return Err(e);
        }
    };
    let mut second_factor_max_age = None;
    let need = if config.0.rules.is_empty() {
        Need::Login
    } else {
        if forwarded.uri.is_none() {
            count("bad_request");
            return Err(bad_forwarded(
                FORWARDED_URI,
                "is missing: this server has route rules, so the proxy must send the original path",
            ));
        }
        if config.0.any_host_rule && forwarded.host.is_none() {
            count("bad_request");
            return Err(bad_forwarded(
                FORWARDED_HOST,
                "is missing: this server has rules for particular hosts, so the proxy must send it",
            ));
        }
        match config.rule_for(forwarded.host.as_deref(), &forwarded.segments) {
            None => Need::Login,
            Some(rule) => {
                second_factor_max_age = rule.second_factor_max_age;
                match &rule.access {
                    Access::Public => Need::Nothing,
                    Access::LoggedIn => Need::Login,
                    Access::Role(role) => Need::Role(&rule.prefix, role),
                }
            }
        }
    };
    // A DPoP proof names the original request, not this check.
    parts.extensions.insert(forwarded.dpop_target());
    if matches!(need, Need::Nothing) && !has_credential(&parts.headers, state.cookies()) {
        count("anonymous");
        return Ok(anonymous());
    }
    let auth = match AuthUser::from_request_parts(&mut parts, state).await {
        Ok(auth) => auth,
        // A public route lets anyone in; a credential that does not verify is ignored there.
        Err(_) if matches!(need, Need::Nothing) => {
            count("anonymous");
            return Ok(anonymous());
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            return unauthenticated(state, &config, &parts.headers, &forwarded, style, e);
        }
        Err(e) => return Err(e),
    };
    if let Need::Role(prefix, role) = need
        && !auth.user.roles.iter().any(|r| r == role)
    {
        count("forbidden");
        return Err(ApiError::forbidden(
            "role-required",
            format!("{prefix} needs the {role:?} role"),
        ));
    }
    if let Some(max_age) = second_factor_max_age
        && !auth.second_factor_within(state.tokens().now(), max_age)
    {
        count("step_up");
        return Err(ApiError::step_up_required(max_age));
    }
    count("allowed");
    Ok(identity(&auth))
}

fn anonymous() -> Response {
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
    )
        .into_response()
}

fn unauthenticated(
    state: &AppState,
    config: &VerifyConfig,
    headers: &HeaderMap,
    forwarded: &Forwarded,
    style: RedirectStyle,
    error: ApiError,
) -> Result<Response, ApiError> {
    let login_url = match config.login_url() {
        Some(url) if wants_html(headers) && forwarded.redirectable() => url,
        _ => {
            count("unauthenticated");
            return Err(error);
        }
    };
    let location = login_location(state, login_url, forwarded);
    // Built only from checked parts and percent-encoded text: always a valid header value.
    let Ok(location) = HeaderValue::from_str(&location) else {
        count("unauthenticated");
        return Err(error);
    };
    match style {
        RedirectStyle::Status => {
            count("redirected");
            Ok((
                StatusCode::FOUND,
                [
                    (header::LOCATION, location),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                ],
            )
                .into_response())
        }
        RedirectStyle::Header => {
            count("unauthenticated");
            Err(error.with_header(HeaderName::from_static(LOCATION_HEADER), location))
        }
    }
}

/// 200 with the identity: every value ASCII, the username percent-encoded.
fn identity(auth: &AuthUser) -> Response {
    let model = match &auth.model {
        AuthModel::Session(_) => "session",
        AuthModel::Token(claims) => claims.claims().model.as_str(),
    };
    // Role names are ASCII by the role rules; anything else (an account created before those
    // rules) is percent-encoded, so a value never breaks the header or the list.
    let roles = auth
        .user
        .roles
        .iter()
        .map(|r| percent_encode(r, b":"))
        .collect::<Vec<_>>()
        .join(",");
    let ascii = |value: String| {
        HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static(""))
    };
    let mut headers = HeaderMap::with_capacity(5);
    headers.insert(
        USER_HEADER,
        ascii(percent_encode(auth.user.id.as_str(), &[])),
    );
    headers.insert(
        USERNAME_HEADER,
        ascii(encode_username(auth.user.username.as_str())),
    );
    headers.insert(ROLES_HEADER, ascii(roles));
    headers.insert(MODEL_HEADER, HeaderValue::from_static(model));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (StatusCode::OK, headers).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str, access: Access) -> RouteRule {
        RouteRule {
            prefix: prefix.into(),
            host: None,
            access,
            second_factor_max_age: None,
        }
    }

    #[test]
    fn usernames_are_percent_encoded() {
        assert_eq!(encode_username("alice"), "alice");
        assert_eq!(encode_username("zoë"), "zo%C3%AB");
        assert_eq!(encode_username("山田-2"), "%E5%B1%B1%E7%94%B0-2");
        assert_eq!(encode_username("a+b@x.org"), "a%2Bb%40x.org");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for path in [
            "/admin/../x",
            "/x/./admin",
            "//admin",
            "/a//b",
            "/%2e%2e/admin",
            "/%2E/admin",
            "/%2fadmin",
            "/a%2Fb",
            "/a%5cb",
            "/a\\b",
            "/admin;x=1",
            "/public/..;/admin",
            "/%252e%252e/admin",
            "/%zz",
            "/%c0%ae%c0%ae/admin",
            "/%00",
            "admin",
        ] {
            assert!(path_segments(path).is_err(), "{path} was accepted");
        }
        assert_eq!(path_segments("/").unwrap(), Vec::<String>::new());
        assert_eq!(path_segments("/a/b/").unwrap(), vec!["a", "b"]);
        assert_eq!(path_segments("/%61dmin").unwrap(), vec!["admin"]);
        assert_eq!(path_segments("/caf%C3%A9").unwrap(), vec!["café"]);
    }

    #[test]
    fn longest_whole_segment_prefix_wins() {
        let config = VerifyConfig::new(
            vec![
                rule("/", Access::Role("member".into())),
                rule("/admin", Access::Role("admin".into())),
                rule("/admin/public/", Access::Public),
                RouteRule {
                    prefix: "/admin".into(),
                    host: Some("ops.example.com".into()),
                    access: Access::Role("ops".into()),
                    second_factor_max_age: None,
                },
            ],
            None,
        )
        .unwrap();
        let decide = |host: Option<&str>, path: &str| {
            config
                .rule_for(host, &path_segments(path).unwrap())
                .map(|r| r.access.clone())
        };
        let role = |r: &str| Some(Access::Role(r.into()));
        assert_eq!(decide(None, "/admin"), role("admin"));
        assert_eq!(decide(None, "/ADMIN/x"), role("admin"));
        assert_eq!(decide(None, "/administrator"), role("member"));
        assert_eq!(decide(None, "/admin/public"), Some(Access::Public));
        assert_eq!(decide(None, "/admin/publicity"), role("admin"));
        assert_eq!(
            decide(Some("ops.example.com:8443"), "/admin/x"),
            role("ops")
        );
        assert_eq!(decide(Some("app.example.com"), "/admin/x"), role("admin"));
        assert_eq!(decide(None, "/"), role("member"));
        // Spellings an application may take for /admin: Turkish dotless and dotted i, the long
        // s, fullwidth letters, trailing dots and spaces.
        for path in [
            "/adm%C4%B1n",
            "/ADM%C4%B0N",
            "/%EF%BC%A1dmin",
            "/admin.",
            "/admin..",
            "/admin%2e",
            "/admin%20",
            "/admin%20./x",
        ] {
            assert_eq!(decide(None, path), role("admin"), "{path}");
        }
    }

    #[test]
    fn a_trailing_dot_does_not_make_another_host() {
        assert_eq!(
            normalize_host("ops.example.com.").as_deref(),
            Some("ops.example.com")
        );
        assert_eq!(
            normalize_host("OPS.example.com.:443").as_deref(),
            Some("ops.example.com:443")
        );
        assert_eq!(normalize_host("ops.example.com.."), None);
        assert_eq!(normalize_host("[::1]:8080").as_deref(), Some("[::1]:8080"));
    }

    #[test]
    fn bad_rules_are_refused_with_the_key() {
        for (rules, login) in [
            (vec![rule("admin", Access::Public)], None),
            (vec![rule("/a/../b", Access::Public)], None),
            (vec![rule("/a%2fb", Access::Public)], None),
            (vec![rule("/a", Access::Role("bad role".into()))], None),
            (
                vec![rule("/a", Access::Public), rule("/a/", Access::Public)],
                None,
            ),
            (vec![], Some("/login".to_owned())),
            (vec![], Some("https://x.example/login#top".to_owned())),
        ] {
            let err = VerifyConfig::new(rules, login).unwrap_err();
            assert!(err.key.starts_with("verify."), "{err}");
        }
    }

    #[test]
    fn html_navigations_are_told_apart() {
        let with = |accept: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            wants_html(&h)
        };
        assert!(with("text/html,application/xhtml+xml,*/*;q=0.8"));
        assert!(!with("*/*"));
        assert!(!with("application/json"));
        assert!(!with("text/html;q=0"));
    }
}
