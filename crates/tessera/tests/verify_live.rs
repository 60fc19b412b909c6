//! `tessera-verify` against the real server: `tessera serve` processes on 127.0.0.1 (embedded
//! SQLite), a verifier following their JWKS and revocation stream, and, where the test needs to
//! cut the stream without stopping the server, a TCP proxy in between that the test controls.
//!
//! - key rotation (old and new kid accepted during the overlap), retirement (refused at once),
//!   made-up kids (the JWKS fetched at most once per refetch interval);
//! - revocations of every kind made on the server refused by the verifier within a second: a
//!   token (RFC 7009), a logout (its refresh token), a forced logout, a disabled account;
//! - the stream cut: tokens accepted during the grace, refused after it with "state
//!   unavailable", accepted again by themselves once the stream is back; a revocation made while
//!   disconnected arrives by `Last-Event-ID` replay; a server restart recovers by snapshot.
//!
//! `cargo test -p tessera --test verify_live -- --nocapture` prints the measured delays.

mod harness;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use harness::{Node, add_user, free_port};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_verify::{RevokedReason, StreamStatus, Verifier, VerifierBuilder, VerifyError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const PASSWORD: &str = "correct horse battery staple";
const ADMIN_PASSWORD: &str = "a long admin passphrase for the test";
/// The issuer: the server's public URL.
const ISSUER: &str = "http://localhost:9";
const AUDIENCE: &str = "tessera";
/// The service client the verifier follows the stream with.
const SERVICE: (&str, &str) = ("orders", "orders-stream-secret-0123");
/// 32 bytes of base64: the key sealing the signing keys, the same across restarts.
const MASTER_KEY: &str = "dGVzc2VyYS12ZXJpZnktbGl2ZS1tYXN0ZXIta2V5ISE=";
/// How soon a revocation must be refused by the verifier.
const PROPAGATION: Duration = Duration::from_secs(1);
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The server

/// The configuration of every `tessera` this test runs.
fn env() -> Vec<(&'static str, String)> {
    vec![
        ("TESSERA_DATABASE", "sqlite://tessera.db".into()),
        ("TESSERA_TOKENS__MASTER_KEY", MASTER_KEY.into()),
        ("TESSERA_PUBLIC_URL", ISSUER.into()),
        (
            "TESSERA_TOKENS__INTROSPECTION_CLIENTS",
            format!("{{{}=\"{}\"}}", SERVICE.0, SERVICE.1),
        ),
        (
            "TESSERA_THROTTLING__PER_ACCOUNT",
            "{burst=10000,per_minute=10000}".into(),
        ),
        (
            "TESSERA_THROTTLING__PER_IP",
            "{burst=10000,per_minute=10000}".into(),
        ),
    ]
}

/// `tessera user add NAME --admin`.
fn add_admin(dir: &Path, name: &str) {
    add_user(dir, &env(), name, true, ADMIN_PASSWORD);
}

/// `tessera serve` on a fixed port, so a restart comes back at the same address.
fn start_server(dir: &Path, port: u16) -> Node {
    Node::start_on(dir, port, &[], &env())
}

// ---------------------------------------------------------------------------------------------
// HTTP to the server

struct Http {
    client: reqwest::Client,
    base: String,
}

struct Login {
    access: String,
    refresh: String,
}

impl Http {
    fn new(server: &Node) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: server.base.clone(),
        }
    }

    /// Registers `username`; returns the user id.
    async fn register(&self, username: &str) -> String {
        let r = self
            .client
            .post(format!("{}/v1/users", self.base))
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn login(&self, username: &str, password: &str) -> Login {
        let r = self
            .client
            .post(format!("{}/v1/token", self.base))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "login {username}");
        let body: Value = r.json().await.unwrap();
        Login {
            access: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    async fn admin(&self, path: &str, admin: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// RFC 7009 revocation of an access or refresh token.
    async fn revoke(&self, token: &str) {
        let r = self
            .client
            .post(format!("{}/v1/token/revoke", self.base))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}

/// The `kid` in a token's header.
fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// `token` with its header's `kid` replaced: a kid no server ever made.
fn with_kid(token: &str, kid: &str) -> String {
    let (header, rest) = token.split_once('.').unwrap();
    let mut header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"] = json!(kid);
    format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
}

// ---------------------------------------------------------------------------------------------
// The verifier

fn verifier(base: &str) -> VerifierBuilder {
    Verifier::builder(ISSUER, AUDIENCE)
        .server_url(base)
        .service_credentials(SERVICE.0, SERVICE.1)
}

async fn ready(builder: VerifierBuilder) -> Verifier {
    let verifier = builder.build().unwrap();
    tokio::time::timeout(PATIENCE, verifier.ready())
        .await
        .expect("the verifier fetched the keys and the first snapshot");
    verifier
}

/// Polls until `check` holds; returns how long that took, or fails after `limit`.
async fn within(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn refused_as(verifier: &Verifier, token: &str, expected: &VerifyError) -> bool {
    verifier.verify_offline(token).err().as_ref() == Some(expected)
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy the test can cut

/// Forwards 127.0.0.1 connections to the server while open; closing it cuts every connection
/// and refuses new ones. Keeps what clients sent, to read the requests' headers.
struct Proxy {
    base: String,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    sent: Arc<Mutex<Vec<u8>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (o, c, s) = (open.clone(), connections.clone(), sent.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let record = s.clone();
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = client_read.read(&mut buf).await {
                        if n == 0 || server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                });
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                let mut list = c.lock().unwrap();
                list.push(up.abort_handle());
                list.push(down.abort_handle());
            }
        });
        Proxy {
            base,
            open,
            connections,
            sent,
            accept,
        }
    }

    fn cut(&self) {
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Cuts every connection and refuses new ones.
    fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cut();
    }

    fn reopen(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// The `Last-Event-ID` values clients have sent through the proxy.
    fn last_event_ids(&self) -> Vec<String> {
        let sent = String::from_utf8_lossy(&self.sent.lock().unwrap()).into_owned();
        sent.lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("last-event-id")
                    .then(|| value.trim().to_owned())
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_retirement_and_made_up_kids() {
    let dir = tempfile::tempdir().unwrap();
    add_admin(dir.path(), "root");
    let server = start_server(dir.path(), free_port());
    let http = Http::new(&server);
    let alice = http.register("alice").await;
    let before = http.login("alice", PASSWORD).await;
    let interval = Duration::from_millis(500);
    let verifier = ready(verifier(&server.base).jwks_refetch_interval(interval)).await;

    let verified = verifier.verify(&before.access).await.unwrap();
    assert_eq!(verified.subject(), alice);
    assert_eq!(verified.claims().model.as_deref(), Some("token"));
    assert!(verified.claims().iat_ms.is_some() && verified.claims().fid.is_some());
    let old_kid = kid(&before.access);
    assert_eq!(verified.key_id(), old_kid);
    assert_eq!(verifier.status().jwks_fetches, 1);

    // Rotation: new tokens carry a new kid, which the verifier fetches once; both verify.
    let root = http.login("root", ADMIN_PASSWORD).await;
    let (status, key) = http.admin("/v1/admin/keys/rotate", &root.access).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let after = http.login("alice", PASSWORD).await;
    let new_kid = kid(&after.access);
    assert_ne!(new_kid, old_kid);
    assert!(verifier.verify(&after.access).await.is_ok(), "new kid");
    assert!(
        verifier.verify(&before.access).await.is_ok(),
        "old kid, in the overlap"
    );
    assert_eq!(verifier.status().jwks_fetches, 2);
    assert_eq!(verifier.status().keys, 2);

    // Made-up kids: concurrent ones share a fetch; a steady stream costs one per interval.
    let forged: Vec<String> = (0..30)
        .map(|i| with_kid(&after.access, &format!("kid_made_up_{i}")))
        .collect();
    let started = Instant::now();
    let fetches = verifier.status().jwks_fetches;
    let answers = futures_util::future::join_all(forged.iter().map(|t| verifier.verify(t))).await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().err() == Some(&VerifyError::UnknownKey))
    );
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let t = &forged[n % forged.len()];
        assert_eq!(
            verifier.verify(t).await.unwrap_err(),
            VerifyError::UnknownKey
        );
        n += 1;
    }
    let made = verifier.status().jwks_fetches - fetches;
    let allowed = 1 + (started.elapsed().as_millis() / interval.as_millis()) as u64;
    println!(
        "made-up kids: {n} sequential + 30 concurrent verifies in {:?} -> {made} JWKS fetches (allowed {allowed})",
        started.elapsed()
    );
    assert!(made <= allowed, "{made} fetches, at most {allowed} allowed");

    // Retirement (admin API): refused at once, from the cache too, although the token is valid.
    let (status, body) = http
        .admin(&format!("/v1/admin/keys/{old_kid}/retire"), &root.access)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let took = within("retired key refused", PROPAGATION, || {
        refused_as(&verifier, &before.access, &VerifyError::KeyRetired)
    })
    .await;
    println!("key retirement reached the verifier in {took:?}");
    assert!(verifier.verify(&after.access).await.is_ok());
    assert_eq!(verifier.status().keys, 1);
    assert_eq!(verifier.status().stream, StreamStatus::Live);

    // The stream is for service clients: 401 without, 403 for a user's token.
    let stream = format!("{}/v1/revocations/stream", server.base);
    let client = reqwest::Client::new();
    let wrong = client
        .get(&stream)
        .basic_auth(SERVICE.0, Some("not the secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let user = client
        .get(&stream)
        .bearer_auth(&after.access)
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), StatusCode::FORBIDDEN);
    assert!(!server.log_text().contains(SERVICE.1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_revocation_is_refused_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    add_admin(dir.path(), "root");
    let server = start_server(dir.path(), free_port());
    let http = Http::new(&server);
    let bob = http.register("bob").await;
    let carol = http.register("carol").await;
    let dave = http.register("dave").await;
    let root = http.login("root", ADMIN_PASSWORD).await;
    let verifier = ready(verifier(&server.base)).await;

    let revoked = http.login("bob", PASSWORD).await;
    let logged_out = http.login("bob", PASSWORD).await;
    let bob_other = http.login("bob", PASSWORD).await;
    let carol_login = http.login("carol", PASSWORD).await;
    let dave_login = http.login("dave", PASSWORD).await;
    for t in [
        &revoked.access,
        &logged_out.access,
        &bob_other.access,
        &carol_login.access,
        &dave_login.access,
    ] {
        verifier.verify(t).await.unwrap();
    }

    // RFC 7009 on the access token.
    http.revoke(&revoked.access).await;
    let t1 = within("revoked access token refused", PROPAGATION, || {
        verifier.verify_offline(&revoked.access).is_err()
    })
    .await;
    assert!(matches!(
        verifier.verify_offline(&revoked.access),
        Err(VerifyError::Revoked(_))
    ));
    // Logout of a token login: its refresh token revoked ends the login's access tokens.
    http.revoke(&logged_out.refresh).await;
    let t2 = within("logged-out login refused", PROPAGATION, || {
        refused_as(
            &verifier,
            &logged_out.access,
            &VerifyError::Revoked(RevokedReason::Family),
        )
    })
    .await;
    assert!(
        verifier.verify_offline(&bob_other.access).is_ok(),
        "bob's other login lives"
    );
    // Forced logout of every login of a user.
    let (status, body) = http
        .admin(&format!("/v1/admin/users/{carol}/logout"), &root.access)
        .await;
    assert!(status.is_success(), "{status} {body}");
    let t3 = within("forced logout refused", PROPAGATION, || {
        verifier.verify_offline(&carol_login.access).is_err()
    })
    .await;
    // A disabled account.
    let (status, body) = http
        .admin(&format!("/v1/admin/users/{dave}/disable"), &root.access)
        .await;
    assert!(status.is_success(), "{status} {body}");
    let t4 = within("disabled account refused", PROPAGATION, || {
        verifier.verify_offline(&dave_login.access).is_err()
    })
    .await;
    println!(
        "revocation -> refused by the verifier: token {t1:?}, logout {t2:?}, forced logout {t3:?}, disabled {t4:?}"
    );
    assert!(verifier.verify_offline(&bob_other.access).is_ok());
    assert_eq!(verifier.status().snapshots, 1);
    let _ = bob;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_stream_fails_closed_and_a_replay_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), free_port());
    let http = Http::new(&server);
    http.register("erin").await;
    let proxy = Proxy::start(server.addr).await;
    let grace = Duration::from_millis(1500);
    let verifier = ready(verifier(&proxy.base).stream_grace(grace)).await;
    let kept = http.login("erin", PASSWORD).await;
    let revoked_meanwhile = http.login("erin", PASSWORD).await;
    let revoked_before = http.login("erin", PASSWORD).await;
    for t in [
        &kept.access,
        &revoked_meanwhile.access,
        &revoked_before.access,
    ] {
        verifier.verify(t).await.unwrap();
    }
    // One revocation while connected, so the verifier has an event id to resume from.
    http.revoke(&revoked_before.access).await;
    within("revocation applied", PROPAGATION, || {
        verifier.verify_offline(&revoked_before.access).is_err()
    })
    .await;

    // The stream is cut and reconnections are refused: accepted during the grace only.
    proxy.close();
    let lost = Instant::now();
    within("stream lost noticed", PATIENCE, || {
        verifier.status().stream == StreamStatus::Grace
    })
    .await;
    assert!(
        verifier.verify_offline(&kept.access).is_ok(),
        "within the grace"
    );
    // Meanwhile a revocation on the server.
    http.revoke(&revoked_meanwhile.access).await;
    within("refused after the grace", PATIENCE, || {
        refused_as(&verifier, &kept.access, &VerifyError::StateUnavailable)
    })
    .await;
    let refused_after = lost.elapsed();
    println!("stream cut -> tokens refused after {refused_after:?} (grace {grace:?})");
    assert!(refused_after >= grace, "refused before the grace ended");
    assert!(
        refused_after < grace + Duration::from_millis(1500),
        "refused late"
    );
    assert_eq!(verifier.status().stream, StreamStatus::Unavailable);

    // Back: resumed with Last-Event-ID, the missed revocation replayed, accepted again.
    proxy.reopen();
    let back = Instant::now();
    within("accepted again", PATIENCE, || {
        verifier.verify_offline(&kept.access).is_ok()
    })
    .await;
    println!(
        "stream back -> tokens accepted again after {:?}",
        back.elapsed()
    );
    assert_eq!(
        verifier
            .verify_offline(&revoked_meanwhile.access)
            .unwrap_err(),
        VerifyError::Revoked(RevokedReason::Token),
        "the revocation made while disconnected was replayed"
    );
    assert!(verifier.verify_offline(&revoked_before.access).is_err());
    let status = verifier.status();
    assert_eq!(status.stream, StreamStatus::Live);
    assert_eq!(
        status.snapshots, 1,
        "resumed by replay, not by a new snapshot"
    );
    let ids = proxy.last_event_ids();
    assert!(!ids.is_empty(), "reconnections sent Last-Event-ID");
    assert!(ids.iter().all(|id| !id.is_empty()), "{ids:?}");
    assert!(status.stream_connections >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_recovers_by_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = start_server(dir.path(), port);
    let http = Http::new(&server);
    http.register("frank").await;
    let kept = http.login("frank", PASSWORD).await;
    let revoked = http.login("frank", PASSWORD).await;
    let grace = Duration::from_millis(800);
    let verifier = ready(verifier(&server.base).stream_grace(grace)).await;
    http.revoke(&revoked.access).await;
    within("revocation applied", PROPAGATION, || {
        verifier.verify_offline(&revoked.access).is_err()
    })
    .await;
    assert!(verifier.verify(&kept.access).await.is_ok());

    server.kill();
    within("refused once the server is gone", PATIENCE, || {
        refused_as(&verifier, &kept.access, &VerifyError::StateUnavailable)
    })
    .await;
    let server = start_server(dir.path(), port);
    let back = Instant::now();
    within("accepted again after the restart", PATIENCE, || {
        verifier.verify_offline(&kept.access).is_ok()
    })
    .await;
    println!(
        "server restarted -> tokens accepted again after {:?}",
        back.elapsed()
    );
    assert_eq!(
        verifier.status().snapshots,
        2,
        "a new server process sends a snapshot"
    );
    assert!(
        verifier.verify_offline(&revoked.access).is_err(),
        "the revocation survived the restart"
    );
    drop(server);
}
