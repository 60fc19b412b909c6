//! A stand-in for a Tessera server, for the tests and the benchmark: signing keys, tokens shaped
//! like Tessera's, and an HTTP server on 127.0.0.1 serving a JWKS and a revocation stream that
//! the test drives (publish events, drop connections, refuse connections, count requests).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub(crate) const ISSUER: &str = "https://auth.test";
pub(crate) const AUDIENCE: &str = "tessera";
pub(crate) const CLIENT_ID: &str = "orders";
pub(crate) const CLIENT_SECRET: &str = "a service secret that must not be logged";

/// A private key and its public JWK.
pub(crate) struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    encoding: EncodingKey,
    pub jwk: Value,
}

impl SigningKey {
    pub(crate) fn ed25519(kid: &str) -> Self {
        let der = aws_lc_rs::signature::Ed25519KeyPair::generate()
            .and_then(|k| k.to_pkcs8v1())
            .unwrap();
        Self::new(
            kid,
            Algorithm::EdDSA,
            EncodingKey::from_ed_der(der.as_ref()),
        )
    }

    pub(crate) fn es256(kid: &str) -> Self {
        let der = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        )
        .and_then(|k| k.to_pkcs8v1())
        .unwrap();
        Self::new(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(der.as_ref()),
        )
    }

    pub(crate) fn rs256(kid: &str) -> Self {
        let der = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .and_then(|k| k.as_der())
            .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Self::new(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        )
    }

    fn new(kid: &str, algorithm: Algorithm, encoding: EncodingKey) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        Self {
            kid: kid.to_owned(),
            algorithm,
            encoding,
            jwk: serde_json::to_value(jwk).unwrap(),
        }
    }

    /// The header Tessera puts on access tokens.
    pub(crate) fn header(&self) -> Header {
        let mut h = Header::new(self.algorithm);
        h.typ = Some("at+jwt".into());
        h.kid = Some(self.kid.clone());
        h
    }

    pub(crate) fn sign(&self, claims: &Value) -> String {
        self.sign_with(&self.header(), claims)
    }

    pub(crate) fn sign_with(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).unwrap()
    }
}

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Claims shaped like a Tessera access token, valid for ten minutes.
pub(crate) fn claims(sub: &str, jti: &str) -> Value {
    let now = now_secs();
    json!({
        "iss": ISSUER,
        "sub": sub,
        "aud": AUDIENCE,
        "exp": now + 600,
        "iat": now,
        "iat_ms": now_millis(),
        "nbf": now,
        "jti": jti,
        "client_id": "tessera",
        "fid": format!("fam_{jti}"),
        "model": "token",
        "roles": ["reader"],
    })
}

pub(crate) fn with_roles(mut claims: Value, roles: &[&str]) -> Value {
    claims["roles"] = json!(roles);
    claims
}

pub(crate) fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

/// One event the fake stream has sent, for replays.
#[derive(Clone)]
struct Logged {
    id: u64,
    event: &'static str,
    data: String,
}

struct FakeState {
    jwks: Mutex<Value>,
    cache_control: Mutex<String>,
    jwks_fetches: AtomicUsize,
    snapshot: Mutex<Value>,
    log: Mutex<VecDeque<Logged>>,
    next_id: Mutex<u64>,
    streams: Mutex<Vec<mpsc::UnboundedSender<Bytes>>>,
    stream_requests: AtomicUsize,
    last_event_ids: Mutex<Vec<Option<String>>>,
    refuse: AtomicBool,
    replay: AtomicBool,
    announce_caught_up: AtomicBool,
}

/// A JWKS endpoint and a revocation stream on 127.0.0.1.
pub(crate) struct FakeTessera {
    pub base: String,
    state: Arc<FakeState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTessera {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeTessera {
    pub(crate) async fn start(keys: &[&SigningKey]) -> Self {
        let state = Arc::new(FakeState {
            jwks: Mutex::new(jwks(keys)),
            cache_control: Mutex::new("public, max-age=60".into()),
            jwks_fetches: AtomicUsize::new(0),
            snapshot: Mutex::new(json!({"mode": "denylist"})),
            log: Mutex::new(VecDeque::new()),
            next_id: Mutex::new(1),
            streams: Mutex::new(Vec::new()),
            stream_requests: AtomicUsize::new(0),
            last_event_ids: Mutex::new(Vec::new()),
            refuse: AtomicBool::new(false),
            replay: AtomicBool::new(true),
            announce_caught_up: AtomicBool::new(true),
        });
        let app = axum::Router::new()
            .route("/.well-known/jwks.json", get(serve_jwks))
            .route("/v1/revocations/stream", get(serve_stream))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base,
            state,
            server,
        }
    }

    pub(crate) fn set_keys(&self, keys: &[&SigningKey]) {
        *self.state.jwks.lock().unwrap() = jwks(keys);
    }

    pub(crate) fn set_cache_control(&self, value: &str) {
        *self.state.cache_control.lock().unwrap() = value.into();
    }

    pub(crate) fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// What a new connection without a usable `Last-Event-ID` receives first.
    pub(crate) fn set_snapshot(&self, snapshot: Value) {
        *self.state.snapshot.lock().unwrap() = snapshot;
    }

    /// Sends a revocation to every connected client, and keeps it for replays.
    pub(crate) fn revoke(&self, revocation: Value) {
        self.publish("revocation", revocation.to_string());
    }

    /// Sends an event with any name and raw data.
    pub(crate) fn publish(&self, event: &'static str, data: String) {
        let id = {
            let mut next = self.state.next_id.lock().unwrap();
            let id = *next;
            *next += 1;
            id
        };
        let logged = Logged { id, event, data };
        self.broadcast(frame(&logged));
        self.state.log.lock().unwrap().push_back(logged);
    }

    pub(crate) fn comment(&self, text: &str) {
        self.broadcast(Bytes::from(format!(": {text}\n\n")));
    }

    pub(crate) fn broadcast(&self, bytes: Bytes) {
        self.state
            .streams
            .lock()
            .unwrap()
            .retain(|tx| tx.send(bytes.clone()).is_ok());
    }

    /// Ends every open stream (the client sees the server close it).
    pub(crate) fn drop_streams(&self) {
        self.state.streams.lock().unwrap().clear();
    }

    /// Answers new stream requests with 503 while `true`.
    pub(crate) fn refuse_streams(&self, refuse: bool) {
        self.state.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Whether a `Last-Event-ID` the fake knows gets a replay (else a snapshot).
    pub(crate) fn set_replay(&self, replay: bool) {
        self.state.replay.store(replay, Ordering::SeqCst);
    }

    /// Whether a replay ends with a comment (as a keep-alive would).
    pub(crate) fn set_announce_caught_up(&self, announce: bool) {
        self.state
            .announce_caught_up
            .store(announce, Ordering::SeqCst);
    }

    /// Stream requests received (answered or not).
    pub(crate) fn stream_requests(&self) -> usize {
        self.state.stream_requests.load(Ordering::SeqCst)
    }

    /// The `Last-Event-ID` of each stream request, in order.
    pub(crate) fn last_event_ids(&self) -> Vec<Option<String>> {
        self.state.last_event_ids.lock().unwrap().clone()
    }

    pub(crate) fn open_streams(&self) -> usize {
        self.state.streams.lock().unwrap().len()
    }
}

fn frame(e: &Logged) -> Bytes {
    let mut out = format!("id: {}\nevent: {}\n", e.id, e.event);
    for line in e.data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

async fn serve_jwks(State(state): State<Arc<FakeState>>) -> Response {
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let body = state.jwks.lock().unwrap().to_string();
    let cache_control = state.cache_control.lock().unwrap().clone();
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json".to_owned()),
            (header::CACHE_CONTROL, cache_control),
        ],
        body,
    )
        .into_response()
}

async fn serve_stream(State(state): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    state.stream_requests.fetch_add(1, Ordering::SeqCst);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&expected)
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state
        .last_event_ids
        .lock()
        .unwrap()
        .push(last_event_id.clone());
    if state.refuse.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    {
        // Under the streams lock, so no event published meanwhile is lost or doubled.
        let mut streams = state.streams.lock().unwrap();
        let log = state.log.lock().unwrap();
        let resume_from = last_event_id
            .and_then(|id| id.parse::<u64>().ok())
            .filter(|id| state.replay.load(Ordering::SeqCst) && log.iter().any(|e| e.id == *id));
        match resume_from {
            Some(after) => {
                for e in log.iter().filter(|e| e.id > after) {
                    let _ = tx.send(frame(e));
                }
                if state.announce_caught_up.load(Ordering::SeqCst) {
                    let _ = tx.send(Bytes::from_static(b": caught up\n\n"));
                }
            }
            None => {
                let snapshot = Logged {
                    id: log.back().map_or(0, |e| e.id),
                    event: "snapshot",
                    data: state.snapshot.lock().unwrap().to_string(),
                };
                let _ = tx.send(frame(&snapshot));
            }
        }
        streams.push(tx);
    }
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(body),
    )
        .into_response()
}

/// Polls `check` every 10 ms until it holds or `limit` passes; returns how long it took.
pub(crate) async fn eventually(
    limit: Duration,
    mut check: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
