//! The playground page: the comparison of the login models as something to click. Static files compiled into
//! the binary; no inline script, so the page's CSP can forbid it.
//!
//! Only mounted when the playground is on ([`crate::HttpConfig::playground`]). Besides the page:
//!
//! - `GET /playground/held`: what the server holds for the caller's own login (its session record
//!   or refresh family, and the denylist entries that refuse its credential), with sizes in bytes.
//!   Never a secret: stored hashes are shortened, CSRF tokens only counted.
//! - `GET /playground/attacks`: the requests the playground's attacker page made to this server,
//!   as this server received and answered them (no cookie values, no user data).
//! - The attacker page itself, served on a listener of its own ([`attacker_router`]): another
//!   origin, so what a browser does with a cross-site form or fetch can be watched for real.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tessera_core::token::AccessClaims;
use tessera_core::{
    FamilyId, RefreshFamily, RevocationEntry, Revoked, Session, Timestamp, TokenHash, UserId,
};

use crate::csrf::{CSRF_HEADER, check_same_origin};
use crate::extract::{BearerAuth, CookieNames, HybridAuth, SessionAuth};
use crate::problem::ApiError;
use crate::state::AppState;

/// The page's CSP: scripts and styles from this origin only; requests to this origin only; no
/// framing of the page. With an attacker page, that origin (and only it) may be framed.
fn page_csp(attacker: Option<&str>) -> String {
    let frames = attacker.map_or("".to_owned(), |a| format!(" frame-src {a};"));
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self';{frames} form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
}

fn asset(state: &AppState, content_type: &'static str, body: impl Into<Body>) -> Response {
    let csp = page_csp(state.attacker_origin());
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_str(&csp)
                    .unwrap_or(HeaderValue::from_static("default-src 'none'")),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body.into(),
    )
        .into_response()
}

/// `text` for an HTML attribute value.
fn attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `GET /`: the playground's HTML page. It names the attacker page's origin (or none) for its
/// script.
pub async fn page(State(state): State<AppState>) -> Response {
    let attacker = state.attacker_origin().unwrap_or("");
    let html = include_str!("../playground/index.html")
        .replace("{{ATTACKER_ORIGIN}}", &attribute(attacker));
    asset(&state, "text/html; charset=utf-8", html)
}

/// `GET /playground.js`: the playground's script, the only one the page's CSP allows.
pub async fn script(State(state): State<AppState>) -> Response {
    asset(
        &state,
        "text/javascript; charset=utf-8",
        include_str!("../playground/playground.js"),
    )
}

/// `GET /playground/injected.js`: stands for a script an attacker injected into the page (an XSS
/// payload). It is served from this origin because the page's CSP allows nothing else — which is
/// what a real injection achieves too.
pub async fn injected(State(state): State<AppState>) -> Response {
    asset(
        &state,
        "text/javascript; charset=utf-8",
        include_str!("../playground/injected.js"),
    )
}

/// `GET /playground.css`: the playground's style sheet.
pub async fn style(State(state): State<AppState>) -> Response {
    asset(
        &state,
        "text/css; charset=utf-8",
        include_str!("../playground/playground.css"),
    )
}

// ---------------------------------------------------------------------------------------------
// What the server holds.

/// `?model=session|token|hybrid` picks the credential to look at (a browser may hold a session
/// and a hybrid login at once). `&family=fam_…`: after a hybrid logout the browser has no cookie
/// left; the login's CSRF token (an HMAC over the family id that only that login's page was given)
/// shows the caller held that login.
#[derive(Deserialize)]
pub struct HeldQuery {
    model: Option<String>,
    family: Option<String>,
}

/// A stored hash, shortened: enough to recognise, nothing to use.
fn short_hash(hash: &TokenHash) -> String {
    let hex: String = hash.as_bytes()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{hex}…")
}

/// What the credential of this request weighs on the wire.
fn credential_view(names: &CookieNames, headers: &HeaderMap, model: &str) -> Value {
    let cookie_bytes: usize = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| "cookie: ".len() + v.len())
        .sum();
    let auth_bytes = headers
        .get(header::AUTHORIZATION)
        .map_or(0, |v| "authorization: ".len() + v.len());
    let named = |name: &str| {
        crate::extract::cookie_value(headers, name).map_or(0, |v| name.len() + 1 + v.len())
    };
    match model {
        "token" => json!({
            "carried_in": "Authorization header",
            "bytes": auth_bytes,
        }),
        "session" => json!({
            "carried_in": format!("cookie {}", names.session),
            "bytes": named(&names.session),
            "cookie_header_bytes": cookie_bytes,
        }),
        _ => json!({
            "carried_in": format!(
                "cookie {}; {} (Path=/, SameSite=Strict) rides along",
                names.hybrid_access, names.hybrid_refresh
            ),
            "bytes": named(&names.hybrid_access),
            "refresh_cookie_bytes": named(&names.hybrid_refresh),
            "cookie_header_bytes": cookie_bytes,
        }),
    }
}

fn time_bytes() -> usize {
    8
}

fn session_view(s: &Session) -> Value {
    let ua = s.client.user_agent.as_ref().map(|u| u.as_str().to_owned());
    let ip = s.client.ip.map(|ip| ip.to_string());
    let data = s.data.to_value();
    let data_bytes = if s.data.is_empty() {
        0
    } else {
        data.to_string().len()
    };
    let csrf_bytes = s.csrf_token.as_bytes().len();
    let ua_bytes = ua.as_ref().map_or(0, String::len);
    let ip_bytes = s
        .client
        .ip
        .map_or(0, |ip| if ip.is_ipv4() { 4 } else { 16 });
    let fields = json!({
        "handle": s.handle.as_str().len(),
        "user_id": s.user_id.as_str().len(),
        "secret_hash": 32,
        "csrf_token": csrf_bytes,
        "times (created, last seen, expires, absolute expiry)": 4 * time_bytes(),
        "user_agent": ua_bytes,
        "ip": ip_bytes,
        "data": data_bytes,
        "data_version": 8,
    });
    let bytes: u64 = fields
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    json!({
        "record": "session",
        "handle": s.handle.as_str(),
        "user_id": s.user_id.as_str(),
        "secret_hash": short_hash(&s.secret_hash),
        "csrf_token": format!("held ({csrf_bytes} bytes, not shown)"),
        "created_at": s.created_at,
        "last_seen_at": s.last_seen_at,
        "expires_at": s.expires_at,
        "absolute_expires_at": s.absolute_expires_at,
        "user_agent": ua,
        "ip": ip,
        "data": data,
        "data_version": s.data_version,
        "bytes": bytes,
        "bytes_by_field": fields,
    })
}

fn family_view(f: &RefreshFamily, with_client: bool) -> Value {
    let ua = f.client.user_agent.as_ref().map(|u| u.as_str().to_owned());
    let fields = json!({
        "id": f.id.as_str().len(),
        "user_id": f.user_id.as_str().len(),
        "model": 1,
        "times (created, last used, expires, absolute expiry, revoked)": 5 * time_bytes(),
        "revoked_reason": f.revoked_reason.as_ref().map_or(0, String::len),
        "user_agent": ua.as_ref().map_or(0, String::len),
        "ip": f.client.ip.map_or(0, |ip| if ip.is_ipv4() { 4 } else { 16 }),
        "generation": 4,
        "current refresh token (hash, issued, rotated, generation)": 32 + 2 * time_bytes() + 4,
    });
    let bytes: u64 = fields
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    let mut view = json!({
        "record": "refresh family",
        "id": f.id.as_str(),
        "model": f.model.as_str(),
        "generation": f.generation,
        "created_at": f.created_at,
        "last_used_at": f.last_used_at,
        "expires_at": f.expires_at,
        "absolute_expires_at": f.absolute_expires_at,
        "revoked_at": f.revoked_at,
        "revoked_reason": f.revoked_reason,
        "bytes": bytes,
        "bytes_by_field": fields,
    });
    if with_client {
        view["user_agent"] = json!(ua);
        view["ip"] = json!(f.client.ip.map(|ip| ip.to_string()));
    }
    view
}

fn entry_view(e: &RevocationEntry) -> Value {
    let (kind, subject, subject_bytes) = match &e.revoked {
        Revoked::Token { jti } => ("token (jti)", jti.clone(), jti.len()),
        Revoked::Family { id } => ("family (fid)", id.as_str().to_owned(), id.as_str().len()),
        Revoked::UserBefore { user, before } => (
            "user, tokens issued before",
            format!("{} before {}", user.as_str(), before.to_rfc3339()),
            user.as_str().len() + time_bytes(),
        ),
    };
    json!({
        "record": "denylist entry",
        "kind": kind,
        "refuses": subject,
        "expires_at": e.expires_at,
        "bytes": 1 + subject_bytes + time_bytes(),
    })
}

fn denylist(state: &AppState, jti: &str, family: &FamilyId, user: &UserId) -> Value {
    let now = state.tokens().now();
    let mode = state.tokens().revocations().mode();
    let entries: Vec<Value> = state
        .tokens()
        .revocations()
        .entries_matching(jti, family, user, now)
        .iter()
        .map(entry_view)
        .collect();
    json!({"mode": format!("{mode:?}").to_lowercase(), "entries": entries})
}

fn token_extras(claims: &AccessClaims) -> Value {
    json!({
        "jti": claims.jti,
        "expires_at": Timestamp::from_unix_millis(claims.exp.saturating_mul(1000)),
        "note": "the access token itself is not stored: it is checked by its signature (and cached once verified, about 450 bytes of memory)",
    })
}

/// `GET /playground/held?model=…`: the caller's own records, authenticated by the caller's own
/// credential of that model. A revoked access token that is still genuine and unexpired, or
/// (after a hybrid logout) the login's CSRF token with `&family=`, shows only what now refuses
/// that login.
pub async fn held(
    State(state): State<AppState>,
    Query(query): Query<HeldQuery>,
    mut parts: Parts,
) -> Result<Json<Value>, ApiError> {
    let headers = parts.headers.clone();
    match query.model.as_deref() {
        Some("session") => {
            let auth = SessionAuth::from_request_parts(&mut parts, &state).await?;
            Ok(Json(json!({
                "model": "session",
                "live": true,
                "credential": credential_view(state.cookies(), &headers, "session"),
                "session": session_view(&auth.session),
                "denylist": {"entries": [], "note": "sessions are never on the denylist: logout deletes the record"},
            })))
        }
        Some("token") => match BearerAuth::from_request_parts(&mut parts, &state).await {
            Ok(auth) => Ok(Json(
                token_held(&state, &headers, auth.claims.claims(), true).await?,
            )),
            Err(refused) => {
                // Read as the bearer extractor reads it (one header, the bearer scheme): only
                // the verdict on the token differs.
                let bearer = crate::extract::bearer_token(&headers).ok().flatten();
                // A DPoP-bound token is only good with its key's proof: its copy shows nothing.
                let claims = bearer
                    .and_then(|t| state.tokens().claims_even_if_revoked(t))
                    .filter(|claims| claims.cnf.is_none());
                match claims {
                    Some(claims) => Ok(Json(token_held(&state, &headers, &claims, false).await?)),
                    None => Err(refused),
                }
            }
        },
        Some("hybrid") => match HybridAuth::from_request_parts(&mut parts, &state).await {
            Ok(auth) => Ok(Json(
                token_held(&state, &headers, auth.claims.claims(), true).await?,
            )),
            Err(refused) => hybrid_after_logout(&state, &query, &headers, refused).await,
        },
        _ => Err(ApiError::bad_request(
            "invalid-model",
            "model must be session, token or hybrid",
        )),
    }
}

/// The token and hybrid models: the access token's facts, its family, and the denylist entries
/// that match it. A revoked credential (`live = false`) is shown no client details.
async fn token_held(
    state: &AppState,
    headers: &HeaderMap,
    c: &AccessClaims,
    live: bool,
) -> Result<Value, ApiError> {
    let model = c.model.as_str();
    let family = state.tokens().family_of_user(&c.fid, &c.sub).await?;
    Ok(json!({
        "model": model,
        "live": live,
        "credential": credential_view(state.cookies(), headers, model),
        "access_token": token_extras(c),
        "family": family.as_ref().map(|f| family_view(f, live)),
        "denylist": denylist(state, &c.jti, &c.fid, &c.sub),
    }))
}

async fn hybrid_after_logout(
    state: &AppState,
    query: &HeldQuery,
    headers: &HeaderMap,
    refused: ApiError,
) -> Result<Json<Value>, ApiError> {
    let (Some(family), Some(csrf)) = (&query.family, headers.get(CSRF_HEADER)) else {
        return Err(refused);
    };
    let proven = csrf.to_str().is_ok_and(|csrf| {
        state
            .tokens()
            .keyring()
            .verify_hybrid_csrf_token(family, csrf)
    });
    if !proven {
        return Err(refused);
    }
    let id = FamilyId::from_stored(family.clone());
    let Some(found) = state.tokens().family(&id).await? else {
        return Err(refused);
    };
    Ok(Json(json!({
        "model": found.model.as_str(),
        "live": false,
        "family": family_view(&found, false),
        "denylist": denylist(state, "", &found.id, &found.user_id),
    })))
}

// ---------------------------------------------------------------------------------------------
// The attacker's requests, as this server saw them.

/// What the server received from the attacker page, and how it answered.
#[derive(Clone, Serialize)]
pub struct AttackRecord {
    /// Counts every record since the server started, so a page can ask for what is new.
    seq: u64,
    at: Timestamp,
    method: String,
    path: String,
    origin: String,
    sec_fetch_site: Option<String>,
    /// The names (never the values) of the credential cookies the browser sent along.
    credential_cookies: Vec<String>,
    authorization_header: bool,
    status: u16,
    /// The problem type's slug, when the answer was a problem document.
    problem: Option<String>,
}

/// The last requests from the attacker page's origin (a bounded list).
pub struct AttackLog {
    attacker_origin: String,
    cookies: CookieNames,
    records: Mutex<VecDeque<AttackRecord>>,
    next: std::sync::atomic::AtomicU64,
}

const ATTACK_LOG_LEN: usize = 64;
/// The longest text a record keeps of a field the client chose (path, origin, …).
const ATTACK_FIELD_MAX: usize = 200;
/// The largest problem document the recorder reads to learn its type.
const ATTACK_PROBLEM_MAX: u64 = 64 * 1024;

/// `text`, cut to [`ATTACK_FIELD_MAX`] bytes at a character boundary, `…` marking a cut.
fn clip(text: &str) -> String {
    if text.len() <= ATTACK_FIELD_MAX {
        return text.to_owned();
    }
    let mut end = ATTACK_FIELD_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn problem_lost() -> Response {
    crate::problem::ApiError::from(tessera_core::Error::Internal(
        "the answer could not be recorded".into(),
    ))
    .into_response()
}

impl AttackLog {
    pub(crate) fn new(attacker_origin: String, cookies: CookieNames) -> Self {
        Self {
            attacker_origin,
            cookies,
            records: Mutex::new(VecDeque::new()),
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }
}

/// The recorder of the attacker page's requests: a tower layer, outermost, so that it sees what
/// the browser sent (CORS preflights too) and what it got back. Written as a plain service rather
/// than an axum `from_fn` middleware: a request from anywhere else passes straight to the router
/// (a header comparison, no allocation), where `from_fn` would clone the whole service stack
/// and box a future for every request the server answers.
#[derive(Clone)]
pub(crate) struct RecordAttacksLayer(pub(crate) Arc<AttackLog>);

impl<S> tower::Layer<S> for RecordAttacksLayer {
    type Service = RecordAttacks<S>;

    fn layer(&self, inner: S) -> RecordAttacks<S> {
        RecordAttacks {
            inner,
            log: Arc::clone(&self.0),
        }
    }
}

/// See [`RecordAttacksLayer`].
#[derive(Clone)]
pub(crate) struct RecordAttacks<S> {
    inner: S,
    log: Arc<AttackLog>,
}

impl<S> tower::Service<Request> for RecordAttacks<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        S::Future,
        futures_util::future::BoxFuture<'static, Result<Response, std::convert::Infallible>>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if !self.log.is_from_attacker(request.headers()) {
            return futures_util::future::Either::Left(self.inner.call(request));
        }
        let record = AttackRecord::of(&request, &self.log.cookies);
        let answer = self.inner.call(request);
        let log = Arc::clone(&self.log);
        futures_util::future::Either::Right(Box::pin(async move {
            let response = answer.await?;
            Ok(log.record(record, response).await)
        }))
    }
}

impl AttackLog {
    /// Whether the request's `Origin` (or, for a form that sent `Origin: null`, `Referer`) is
    /// the attacker page's.
    fn is_from_attacker(&self, headers: &HeaderMap) -> bool {
        let attacker = self.attacker_origin.as_bytes();
        headers
            .get(header::ORIGIN)
            .is_some_and(|o| o.as_bytes().eq_ignore_ascii_case(attacker))
            || headers.get(header::REFERER).is_some_and(|r| {
                r.as_bytes()
                    .get(..attacker.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(attacker))
                    && matches!(r.as_bytes().get(attacker.len()), None | Some(b'/'))
            })
    }

    /// Completes `record` with the answer's status and problem type, keeps it, and hands the
    /// answer on unchanged.
    async fn record(&self, mut record: AttackRecord, response: Response) -> Response {
        record.status = response.status().as_u16();
        let is_problem = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
        // Problem documents are small and whole; anything larger passes through untouched rather
        // than being cut.
        let whole_and_small = {
            use axum::body::HttpBody as _;
            response
                .body()
                .size_hint()
                .exact()
                .is_some_and(|n| n <= ATTACK_PROBLEM_MAX)
        };
        let response = if is_problem && whole_and_small {
            let (parts, body) = response.into_parts();
            let bytes = match axum::body::to_bytes(
                body,
                usize::try_from(ATTACK_PROBLEM_MAX).unwrap_or(usize::MAX),
            )
            .await
            {
                Ok(bytes) => bytes,
                // A full body of a known size does not fail; were it to, say so rather than
                // send an empty one.
                Err(_) => return problem_lost(),
            };
            record.problem = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["type"].as_str().map(str::to_owned))
                .map(|t| t.trim_start_matches("urn:tessera:problem:").to_owned());
            Response::from_parts(parts, Body::from(bytes))
        } else {
            response
        };
        record.seq = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() == ATTACK_LOG_LEN {
            records.pop_front();
        }
        records.push_back(record);
        response
    }
}

impl AttackRecord {
    /// What the request carried, before it is answered.
    fn of(request: &Request, names: &CookieNames) -> Self {
        let headers = request.headers();
        Self {
            seq: 0,
            at: tessera_core::Clock::now(&tessera_core::SystemClock),
            method: clip(request.method().as_str()),
            path: clip(request.uri().path()),
            origin: clip(
                headers
                    .get(header::ORIGIN)
                    .map_or("(none)", |o| o.to_str().unwrap_or("(not text)")),
            ),
            sec_fetch_site: headers
                .get("sec-fetch-site")
                .and_then(|v| v.to_str().ok())
                .map(clip),
            credential_cookies: names
                .credentials()
                .into_iter()
                .filter(|name| crate::extract::cookie_value(headers, name).is_some())
                .map(str::to_owned)
                .collect(),
            authorization_header: headers.contains_key(header::AUTHORIZATION),
            status: 0,
            problem: None,
        }
    }
}

/// `GET /playground/attacks`: the attacker page's requests as this server received and answered
/// them, oldest first. For this origin's pages only.
pub async fn attacks(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_same_origin(&headers, &state.0.trusted_origins)?;
    let Some(log) = &state.0.attack_log else {
        return Ok(Json(json!({"attacker_origin": null, "requests": []})));
    };
    let records: Vec<AttackRecord> = log
        .records
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect();
    Ok(Json(
        json!({"attacker_origin": log.attacker_origin, "requests": records}),
    ))
}

// ---------------------------------------------------------------------------------------------
// The attacker page, on its own listener.

#[derive(Clone)]
struct Attacker {
    /// The playground's (the victim's) origin: the only one that may frame the attacker page and
    /// the only one it reports to.
    victim_origin: String,
    /// Where the attacker's server reaches the victim's server, to replay a stolen token.
    victim_addr: SocketAddr,
}

fn attacker_csp(victim_origin: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self' {victim_origin}; \
         frame-src {victim_origin}; form-action {victim_origin}; base-uri 'none'; \
         frame-ancestors {victim_origin}"
    )
}

fn attacker_asset(a: &Attacker, content_type: &'static str, body: impl Into<Body>) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_str(&attacker_csp(&a.victim_origin))
                    .unwrap_or(HeaderValue::from_static("default-src 'none'")),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body.into(),
    )
        .into_response()
}

async fn attacker_page(State(a): State<Attacker>) -> Response {
    let html = include_str!("../playground/attacker.html")
        .replace("{{VICTIM_ORIGIN}}", &attribute(&a.victim_origin));
    attacker_asset(&a, "text/html; charset=utf-8", html)
}

async fn attacker_script(State(a): State<Attacker>) -> Response {
    attacker_asset(
        &a,
        "text/javascript; charset=utf-8",
        include_str!("../playground/attacker.js"),
    )
}

#[derive(Deserialize)]
struct Loot {
    /// A stolen access token, if the injected script found one.
    access_token: Option<String>,
    /// Whatever `document.cookie` showed the injected script.
    cookie: Option<String>,
}

/// `POST /replay` on the attacker's origin: the attacker's *server* uses what the injected script
/// stole, from outside any browser (no CORS, no SameSite): `GET /v1/me` on the victim's server.
async fn replay(State(a): State<Attacker>, Json(loot): Json<Loot>) -> Response {
    let mut request = format!(
        "GET /v1/me HTTP/1.1\r\nHost: {}\r\nUser-Agent: attacker-server\r\nConnection: close\r\n",
        a.victim_origin
            .trim_start_matches("http://")
            .trim_start_matches("https://")
    );
    let mut used = Vec::new();
    if let Some(token) = loot.access_token.filter(|t| !t.is_empty()) {
        if token.bytes().any(|b| b.is_ascii_control()) || token.len() > 8192 {
            return StatusCode::BAD_REQUEST.into_response();
        }
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        used.push("Authorization: Bearer (the stolen access token)");
    }
    if let Some(cookie) = loot.cookie.filter(|c| !c.is_empty()) {
        if cookie.bytes().any(|b| b.is_ascii_control()) || cookie.len() > 8192 {
            return StatusCode::BAD_REQUEST.into_response();
        }
        request.push_str(&format!("Cookie: {cookie}\r\n"));
        used.push("Cookie (what document.cookie showed)");
    }
    request.push_str("\r\n");
    let answer = send_raw(a.victim_addr, request.as_bytes()).await;
    let (status, body) = match answer {
        Ok(text) => {
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0);
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            // A chunked body starts with its length: keep from the JSON on.
            let body = body.find('{').map_or(body, |i| &body[i..]);
            let body = body.rfind('}').map_or(body, |i| &body[..=i]);
            (
                status,
                serde_json::from_str::<Value>(body).unwrap_or(Value::Null),
            )
        }
        Err(e) => (0, json!(e.to_string())),
    };
    let who = body["user"]["username"].clone();
    Json(json!({"sent": used, "status": status, "username": who, "model": body["auth"]["model"]}))
        .into_response()
}

async fn send_raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        let mut answer = Vec::new();
        stream.take(256 * 1024).read_to_end(&mut answer).await?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), io)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// The attacker page for the playground's demonstrations, to serve on `playground.attacker_listen`
/// (another origin than the server's): `/` (its page), `/attacker.js`, and `POST /replay`, which
/// uses a stolen credential against `victim_addr` from the attacker's server.
/// `victim_origin` is the server's public origin, the only one that may frame the page.
pub fn attacker_router(victim_origin: String, victim_addr: SocketAddr) -> axum::Router {
    let victim_addr = match victim_addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], victim_addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, victim_addr.port()))
        }
        _ => victim_addr,
    };
    let a = Attacker {
        victim_origin,
        victim_addr,
    };
    axum::Router::new()
        .route("/", axum::routing::get(attacker_page))
        .route("/attacker.js", axum::routing::get(attacker_script))
        .route("/replay", axum::routing::post(replay))
        .fallback(crate::layers::not_found)
        .with_state(a)
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .layer(axum::middleware::map_response(
            crate::layers::problem_for_bare_errors,
        ))
}
