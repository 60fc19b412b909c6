//! Faults, against the real `tessera serve` binary and real backing services of the test's own
//! (the shared PostgreSQL and Redis are never touched):
//!
//! - Redis or PostgreSQL stopped: every request that needs it fails closed with a 503 problem
//!   document within seconds, never a 500 and never a hang; liveness stays up, readiness goes down;
//!   the process does not crash; and it recovers by itself when the service returns.
//! - A revocation made on one node while another has lost the change feed is refused by that node
//!   once it can read the store again: a revoked credential is never served after a reconnect.
//! - A node killed with SIGKILL loses nothing it acknowledged with a 2xx (embedded SQLite, and
//!   PostgreSQL + Redis).

mod harness;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use harness::{Node, Postgres, Redis, add_user};
use reqwest::header::COOKIE;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
/// The master key every node of a test shares (base64 of 32 bytes).
const MASTER_KEY: &str = "dGVzc2VyYS1mYXVsdHMtbWFzdGVyLWtleS0zMi1ieXQ=";
/// The session cookie of the session model, and the access-token cookie of the hybrid model.
const SESSION_COOKIE: &str = "__Host-tessera";
const HYBRID_COOKIE: &str = "__Host-tessera-at";
/// The longest a request may take while a backing service is down (the Redis store bounds a
/// round trip at 1.5 s; the PostgreSQL pool waits up to 5 s for a connection).
const FAIL_FAST: Duration = Duration::from_secs(8);
/// How long a node may take to recover by itself once the service is back.
const RECOVERY: Duration = Duration::from_secs(15);
/// How long a node that lost the change feed may trust a re-read of the revocations (the
/// server's `STALE_READ_BOUND`), plus scheduling slack.
const STALE_READ_BOUND: Duration = Duration::from_millis(250);
const SLACK: Duration = Duration::from_millis(100);
/// A resource server allowed to introspect tokens.
const INTROSPECTION_CLIENT: (&str, &str) = ("api", "introspection-secret-0123");

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("TESSERA_TOKENS__MASTER_KEY", MASTER_KEY),
        ("TESSERA_PUBLIC_URL", "http://localhost:9"),
        (
            "TESSERA_THROTTLING__PER_ACCOUNT",
            "{burst=10000,per_minute=10000}",
        ),
        (
            "TESSERA_THROTTLING__PER_IP",
            "{burst=10000,per_minute=10000}",
        ),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    env.extend(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

/// PostgreSQL for users, keys and refresh families; Redis for sessions, revocations, throttling
/// and the change feed.
fn multi_node_env(pg: &Postgres, redis: &Redis) -> Vec<(String, String)> {
    multi_node_env_with(&pg.url(), redis)
}

fn multi_node_env_with(database: &str, redis: &Redis) -> Vec<(String, String)> {
    env(&[
        ("TESSERA_DATABASE", database),
        ("TESSERA_SESSIONS__STORE", "redis"),
        ("TESSERA_REDIS__URL", &redis.url()),
        ("TESSERA_REDIS__PREFIX", "t:"),
        (
            "TESSERA_TOKENS__INTROSPECTION_CLIENTS",
            &format!(
                "{{{}=\"{}\"}}",
                INTROSPECTION_CLIENT.0, INTROSPECTION_CLIENT.1
            ),
        ),
    ])
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// One answer, read completely, and how long it took.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
    set_cookies: Vec<String>,
    took: Duration,
}

impl Answer {
    /// `NAME=value` of a cookie the answer set.
    fn cookie(&self, name: &str) -> String {
        self.set_cookies
            .iter()
            .filter_map(|c| c.split(';').next())
            .find(|c| c.split_once('=').is_some_and(|(n, _)| n == name))
            .unwrap_or_else(|| panic!("no {name} cookie in {self:?}"))
            .to_owned()
    }

    fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {self:?}"))
            .to_owned()
    }

    fn is_problem(&self, status: StatusCode) -> bool {
        self.status == status
            && self.content_type.starts_with("application/problem+json")
            && self.body["status"] == status.as_u16()
    }
}

#[derive(Clone)]
struct Http {
    client: reqwest::Client,
}

/// A token pair.
#[derive(Clone, Debug)]
struct Pair {
    access: String,
    refresh: String,
}

impl Http {
    fn new() -> Self {
        Self {
            // Far above every bound the tests check: a request that hangs fails the test.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    async fn send(&self, request: RequestBuilder) -> Answer {
        let started = Instant::now();
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("no answer after {:?}: {e}", started.elapsed()));
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
        };
        let content_type = header(reqwest::header::CONTENT_TYPE)
            .pop()
            .unwrap_or_default();
        let set_cookies = header(reqwest::header::SET_COOKIE);
        let bytes = response.bytes().await.expect("read the body");
        Answer {
            status,
            content_type,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            set_cookies,
            took: started.elapsed(),
        }
    }

    async fn get(&self, node: &Node, path: &str) -> Answer {
        self.send(self.client.get(node.url(path))).await
    }

    async fn register(&self, node: &Node, username: &str) -> Answer {
        self.send(
            self.client
                .post(node.url("/v1/users"))
                .json(&json!({"username": username, "password": PASSWORD})),
        )
        .await
    }

    async fn login(&self, node: &Node, path: &str, username: &str) -> Answer {
        self.send(
            self.client
                .post(node.url(path))
                .json(&json!({"username": username, "password": PASSWORD})),
        )
        .await
    }

    /// A session login that must succeed: `(cookie, csrf token)`.
    async fn session(&self, node: &Node, username: &str) -> (String, String) {
        let a = self.login(node, "/v1/session/login", username).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
        (a.cookie(SESSION_COOKIE), a.str("csrf_token"))
    }

    /// A token login that must succeed.
    async fn pair(&self, node: &Node, username: &str) -> Pair {
        let a = self.login(node, "/v1/token", username).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
        Pair {
            access: a.str("access_token"),
            refresh: a.str("refresh_token"),
        }
    }

    /// A hybrid login that must succeed: its access-token cookie.
    async fn hybrid(&self, node: &Node, username: &str) -> String {
        let a = self.login(node, "/v1/hybrid/login", username).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
        a.cookie(HYBRID_COOKIE)
    }

    async fn me_cookie(&self, node: &Node, cookie: &str) -> Answer {
        self.send(
            self.client
                .get(node.url("/v1/me"))
                .header(reqwest::header::COOKIE, cookie),
        )
        .await
    }

    async fn me_bearer(&self, node: &Node, access: &str) -> Answer {
        self.send(self.client.get(node.url("/v1/me")).bearer_auth(access))
            .await
    }

    async fn revoke(&self, node: &Node, token: &str) -> Answer {
        self.send(
            self.client
                .post(node.url("/v1/token/revoke"))
                .form(&[("token", token)]),
        )
        .await
    }

    async fn refresh(&self, node: &Node, refresh: &str) -> Answer {
        self.send(
            self.client
                .post(node.url("/v1/token/refresh"))
                .json(&json!({"refresh_token": refresh})),
        )
        .await
    }

    async fn admin_users(&self, node: &Node, admin: &str) -> Answer {
        self.send(
            self.client
                .get(node.url("/v1/admin/users"))
                .bearer_auth(admin),
        )
        .await
    }

    async fn patch_data(&self, node: &Node, cookie: &str, csrf: &str, patch: Value) -> Answer {
        self.send(
            self.client
                .patch(node.url("/v1/session/data"))
                .header(reqwest::header::COOKIE, cookie)
                .header("x-csrf-token", csrf)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/merge-patch+json",
                )
                .body(patch.to_string()),
        )
        .await
    }
}

impl Http {
    /// Sends every request at once (a store that is down may hold each for seconds); answers in
    /// order.
    async fn all(
        &self,
        requests: Vec<(&'static str, RequestBuilder)>,
    ) -> Vec<(&'static str, Answer)> {
        let tasks: Vec<_> = requests
            .into_iter()
            .map(|(what, request)| {
                let http = self.clone();
                (what, tokio::spawn(async move { http.send(request).await }))
            })
            .collect();
        let mut answers = Vec::new();
        for (what, task) in tasks {
            answers.push((what, task.await.unwrap_or_else(|e| panic!("{what}: {e}"))));
        }
        answers
    }

    /// RFC 7662 introspection as the configured resource server.
    fn introspect(&self, node: &Node, token: &str) -> RequestBuilder {
        self.client
            .post(node.url("/v1/token/introspect"))
            .basic_auth(INTROSPECTION_CLIENT.0, Some(INTROSPECTION_CLIENT.1))
            .form(&[("token", token)])
    }
}

/// Polls `check` until it holds; fails after `limit`. Returns how long it took.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(()) => return started.elapsed(),
            Err(last) => assert!(
                started.elapsed() < limit,
                "{what}: not within {limit:?}; last: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn expect(answer: &Answer, status: StatusCode) -> Result<(), String> {
    if answer.status == status {
        Ok(())
    } else {
        Err(format!("{answer:?}"))
    }
}

/// A 503 problem document, in time.
#[track_caller]
fn assert_unavailable(what: &str, answer: &Answer) {
    assert!(
        answer.is_problem(StatusCode::SERVICE_UNAVAILABLE),
        "{what}: expected a 503 problem document, got {answer:?}"
    );
    assert!(
        answer.took < FAIL_FAST,
        "{what}: answered only after {:?}",
        answer.took
    );
}

/// The `kid` in a JWT's header.
fn kid_of(jwt: &str) -> String {
    let header = jwt.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header: Value = serde_json::from_slice(&header).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Redis

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_fails_closed_and_the_nodes_recover_by_themselves() {
    let pg = Postgres::start();
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let env = multi_node_env(&pg, &redis);
    let mut a = Node::start(dir.path(), &[], &env);
    let mut b = Node::start(dir.path(), &[], &env);
    let http = Http::new();

    assert_eq!(http.register(&a, "alice").await.status, StatusCode::CREATED);
    let (session, session_csrf) = http.session(&a, "alice").await;
    let hybrid = http.hybrid(&a, "alice").await;
    let bearer = http.pair(&a, "alice").await;
    let refreshed_during = http.pair(&a, "alice").await;
    // Revoked before the outage (see the end of the test).
    let revoked_before = http.pair(&a, "alice").await;
    // Revoked while Redis is down (refused), then again once it is back.
    let revoked_during = http.pair(&a, "alice").await;
    // Revoked on B as soon as Redis is back, while A may not have heard from the feed yet.
    let revoked_at_return = http.pair(&a, "alice").await;
    // Revoked on B once both nodes are back to normal.
    let revoked_after = http.pair(&a, "alice").await;

    assert_eq!(
        http.revoke(&a, &revoked_before.access).await.status,
        StatusCode::OK
    );
    for node in [&a, &b] {
        assert_eq!(http.me_cookie(node, &session).await.status, StatusCode::OK);
        assert_eq!(http.me_cookie(node, &hybrid).await.status, StatusCode::OK);
        assert_eq!(
            http.me_bearer(node, &bearer.access).await.status,
            StatusCode::OK
        );
        let active = http.send(http.introspect(node, &bearer.access)).await;
        assert_eq!(active.body["active"], true, "{active:?}");
        eventually(Duration::from_secs(2), "the revocation reaches B", || {
            let http = http.clone();
            let token = revoked_before.access.clone();
            async move {
                expect(
                    &http.me_bearer(node, &token).await,
                    StatusCode::UNAUTHORIZED,
                )
            }
        })
        .await;
    }

    // ---- Redis goes away.
    redis.stop();
    let stopped = Instant::now();
    for node in [&a, &b] {
        let noticed = eventually(FAIL_FAST, "readiness reports Redis down", || {
            let http = http.clone();
            async move {
                let ready = http.get(node, "/readyz").await;
                if ready.status == StatusCode::OK {
                    return Err(format!("{ready:?}"));
                }
                assert_unavailable("/readyz", &ready);
                Ok(())
            }
        })
        .await;
        eprintln!(
            "redis down: {} reports not ready after {noticed:?}",
            node.base
        );
    }
    // The node that lost the feed stops trusting its copy of the revocations: bearer checks fail
    // closed, they do not keep accepting.
    eventually(Duration::from_secs(3), "bearer checks fail closed", || {
        let http = http.clone();
        let token = bearer.access.clone();
        let a = &a;
        async move {
            let me = http.me_bearer(a, &token).await;
            if me.status == StatusCode::OK {
                return Err(format!("{me:?}"));
            }
            assert_unavailable("bearer request on A", &me);
            Ok(())
        }
    })
    .await;
    eprintln!(
        "redis down: bearer checks on A fail closed {:?} after the kill",
        stopped.elapsed()
    );

    for node in [&a, &b] {
        let c = &http.client;
        let credentials = json!({"username": "alice", "password": PASSWORD});
        let checks = vec![
            ("/readyz", c.get(node.url("/readyz"))),
            (
                "session cookie",
                c.get(node.url("/v1/me")).header(COOKIE, &session),
            ),
            (
                "session logout",
                c.delete(node.url("/v1/session"))
                    .header(COOKIE, &session)
                    .header("x-csrf-token", &session_csrf),
            ),
            (
                "hybrid cookie",
                c.get(node.url("/v1/me")).header(COOKIE, &hybrid),
            ),
            (
                "bearer token",
                c.get(node.url("/v1/me")).bearer_auth(&bearer.access),
            ),
            (
                "session login",
                c.post(node.url("/v1/session/login")).json(&credentials),
            ),
            (
                "token login",
                c.post(node.url("/v1/token")).json(&credentials),
            ),
            (
                "hybrid login",
                c.post(node.url("/v1/hybrid/login")).json(&credentials),
            ),
            // A revocation that cannot be stored is not acknowledged.
            (
                "token revocation",
                c.post(node.url("/v1/token/revoke"))
                    .form(&[("token", &revoked_during.access)]),
            ),
        ];
        for (what, answer) in http.all(checks).await {
            assert_unavailable(&format!("{} {what}", node.base), &answer);
        }
        let health = http.get(node, "/healthz").await;
        assert_eq!(health.status, StatusCode::OK, "liveness: {health:?}");
    }
    // Observed, not required: a refresh needs only PostgreSQL (refresh families live there).
    let refresh = http.refresh(&a, &refreshed_during.refresh).await;
    eprintln!(
        "redis down: a token refresh answers {} in {:?}",
        refresh.status, refresh.took
    );
    assert!(
        refresh.status == StatusCode::OK || refresh.is_problem(StatusCode::SERVICE_UNAVAILABLE),
        "{refresh:?}"
    );
    // Long enough for the nodes' feed subscriptions to back off to their longest pause, so A is
    // still without its feed for a while after Redis returns. Trust must not come back meanwhile.
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(stopped.elapsed())).await;
    for node in [&a, &b] {
        assert_unavailable(
            "bearer request after seconds without Redis",
            &http.me_bearer(node, &bearer.access).await,
        );
    }
    assert!(a.alive() && b.alive(), "a node died without Redis");

    // ---- Redis comes back, empty (it keeps nothing on disk), on the same port.
    redis.resume();
    let back = Instant::now();
    let feed_back = "the Redis change feed is back";
    let resubscribed_before = a.log_text().matches(feed_back).count();
    let readiness: Vec<_> = [&a, &b]
        .into_iter()
        .map(|node| {
            let (http, url) = (http.clone(), node.url("/readyz"));
            tokio::spawn(async move {
                loop {
                    let ready = http.send(http.client.get(&url)).await;
                    if ready.status == StatusCode::OK {
                        return back.elapsed();
                    }
                    assert_unavailable("/readyz while Redis returns", &ready);
                    assert!(
                        back.elapsed() < RECOVERY,
                        "not ready again after {RECOVERY:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    // At once, B revokes a token. A may still be waiting to resubscribe to the feed, so it can
    // only learn of the revocation by re-reading the store.
    let acknowledged = loop {
        let answer = http.revoke(&b, &revoked_at_return.access).await;
        if answer.status == StatusCode::OK {
            break Instant::now();
        }
        assert_unavailable("revocation on B while Redis returns", &answer);
        assert!(
            back.elapsed() < RECOVERY,
            "B cannot revoke after Redis returned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let a_had_feed = a.log_text().matches(feed_back).count() > resubscribed_before;
    eprintln!(
        "redis back: B acknowledged a revocation {:?} after Redis returned; A's feed was {} then",
        acknowledged - back,
        if a_had_feed {
            "back already"
        } else {
            "still down"
        }
    );
    // From then on A never serves that token once its bounded stale read has lapsed.
    let mut served = Vec::new();
    let mut refused_after = None;
    while acknowledged.elapsed() < Duration::from_secs(2) {
        let sent = Instant::now();
        let me = http.me_bearer(&a, &revoked_at_return.access).await;
        match me.status {
            StatusCode::OK => served.push(sent - acknowledged),
            StatusCode::UNAUTHORIZED => {
                refused_after.get_or_insert(sent - acknowledged);
            }
            _ => assert_unavailable("revoked token on A after Redis returned", &me),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "redis back: A served the token revoked on B at {served:?} after the acknowledgement; \
         first refused it {refused_after:?} after"
    );
    assert!(
        served.iter().all(|&t| t <= STALE_READ_BOUND + SLACK),
        "A served a token revoked on B {served:?} after B acknowledged the revocation"
    );
    let me = http.me_bearer(&a, &revoked_at_return.access).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED, "{me:?}");

    // Both nodes became ready again without a restart, and new logins work.
    for (node, ready) in [&a, &b].into_iter().zip(readiness) {
        let ready = ready.await.unwrap();
        eprintln!(
            "redis back: {} ready {ready:?} after Redis returned",
            node.base
        );
        let took = eventually(RECOVERY, "session login after Redis returned", || {
            let http = http.clone();
            async move {
                expect(
                    &http.login(node, "/v1/session/login", "alice").await,
                    StatusCode::OK,
                )
            }
        })
        .await;
        eprintln!(
            "redis back: {} logs in again (polled {took:?}); {:?} since Redis returned",
            node.base,
            back.elapsed()
        );
    }
    let (fresh, _) = http.session(&a, "alice").await;
    let fresh_hybrid = http.hybrid(&b, "alice").await;
    for node in [&a, &b] {
        assert_eq!(http.me_cookie(node, &fresh).await.status, StatusCode::OK);
        assert_eq!(
            http.me_cookie(node, &fresh_hybrid).await.status,
            StatusCode::OK
        );
        assert_eq!(
            http.me_bearer(node, &bearer.access).await.status,
            StatusCode::OK,
            "a token nobody revoked works again"
        );
        assert_eq!(
            http.me_cookie(node, &hybrid).await.status,
            StatusCode::OK,
            "a hybrid login nobody ended works again"
        );
        // The sessions lived only in Redis's memory.
        let old = http.me_cookie(node, &session).await;
        assert!(old.is_problem(StatusCode::UNAUTHORIZED), "{old:?}");
    }

    // The revocation refused during the outage is made now, and reaches the other node.
    assert_eq!(
        http.revoke(&a, &revoked_during.access).await.status,
        StatusCode::OK
    );
    assert_eq!(
        http.revoke(&b, &revoked_after.access).await.status,
        StatusCode::OK
    );
    for (node, token) in [(&b, &revoked_during), (&a, &revoked_after)] {
        let took = eventually(
            Duration::from_secs(1),
            "a revocation reaches the other node",
            || {
                let http = http.clone();
                let token = token.access.clone();
                async move {
                    expect(
                        &http.me_bearer(node, &token).await,
                        StatusCode::UNAUTHORIZED,
                    )
                }
            },
        )
        .await;
        eprintln!("redis back: a revocation reaches {} in {took:?}", node.base);
    }

    // Redis came back empty, but the revocation made before the outage is not forgotten: every
    // denylist entry is also in PostgreSQL. The login it ended stays ended too.
    let refresh = http.refresh(&a, &revoked_before.refresh).await;
    assert!(refresh.is_problem(StatusCode::UNAUTHORIZED), "{refresh:?}");
    for node in [&a, &b] {
        let remembered = http.me_bearer(node, &revoked_before.access).await;
        assert!(
            remembered.is_problem(StatusCode::UNAUTHORIZED),
            "redis back (empty): a token revoked before the outage answers {remembered:?} on {}",
            node.base
        );
    }

    assert!(a.alive() && b.alive());
    a.assert_no_panic();
    b.assert_no_panic();
}

/// A resource server that introspects a token while the revocation state cannot be read must be
/// told to retry (503), not that the token is inactive (it would throw a good login away, and
/// RFC 7662 gives `active: false` only to tokens that are not usable) nor that it is active (it
/// may have been revoked meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_without_redis_says_retry_rather_than_inactive() {
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("t.db").display());
    let env = multi_node_env_with(&database, &redis);
    let mut node = Node::start(dir.path(), &[], &env);
    let http = Http::new();
    assert_eq!(
        http.register(&node, "alice").await.status,
        StatusCode::CREATED
    );
    let pair = http.pair(&node, "alice").await;
    let active = http.send(http.introspect(&node, &pair.access)).await;
    assert_eq!(active.body["active"], true, "{active:?}");

    redis.stop();
    eventually(FAIL_FAST, "bearer checks fail closed", || {
        let http = http.clone();
        let node = &node;
        let token = pair.access.clone();
        async move {
            let me = http.me_bearer(node, &token).await;
            if me.status == StatusCode::OK {
                return Err(format!("{me:?}"));
            }
            assert_unavailable("bearer request", &me);
            Ok(())
        }
    })
    .await;
    let answer = http.send(http.introspect(&node, &pair.access)).await;
    assert!(node.alive());
    assert_unavailable("introspection of a live token without Redis", &answer);

    redis.resume();
    eventually(RECOVERY, "introspection after Redis returned", || {
        let http = http.clone();
        let request = http.introspect(&node, &pair.access);
        async move {
            let active = http.send(request).await;
            if active.body["active"] == true {
                Ok(())
            } else {
                Err(format!("{active:?}"))
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_fails_closed_and_the_node_recovers_by_itself() {
    let mut pg = Postgres::start();
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let env = multi_node_env(&pg, &redis);
    add_user(dir.path(), &env, "root", true, PASSWORD);
    let mut node = Node::start(dir.path(), &[], &env);
    let http = Http::new();

    assert_eq!(
        http.register(&node, "alice").await.status,
        StatusCode::CREATED
    );
    let (session, _) = http.session(&node, "alice").await;
    let pair = http.pair(&node, "alice").await;
    let admin = http.pair(&node, "root").await;
    assert_eq!(
        http.admin_users(&node, &admin.access).await.status,
        StatusCode::OK
    );
    // Puts the session in the node's near cache.
    assert_eq!(http.me_cookie(&node, &session).await.status, StatusCode::OK);
    let cached_at = Instant::now();

    // ---- PostgreSQL goes away.
    pg.stop();
    let cached = http.me_cookie(&node, &session).await;
    let bearer = http.me_bearer(&node, &pair.access).await;
    let c = &http.client;
    let credentials = json!({"username": "alice", "password": PASSWORD});
    let checks = vec![
        ("/readyz", c.get(node.url("/readyz"))),
        (
            "session login",
            c.post(node.url("/v1/session/login")).json(&credentials),
        ),
        (
            "token login",
            c.post(node.url("/v1/token")).json(&credentials),
        ),
        (
            "hybrid login",
            c.post(node.url("/v1/hybrid/login")).json(&credentials),
        ),
        (
            "registration",
            c.post(node.url("/v1/users"))
                .json(&json!({"username": "bob", "password": PASSWORD})),
        ),
        (
            "refresh",
            c.post(node.url("/v1/token/refresh"))
                .json(&json!({"refresh_token": pair.refresh})),
        ),
        (
            "admin",
            c.get(node.url("/v1/admin/users"))
                .bearer_auth(&admin.access),
        ),
        ("introspection", http.introspect(&node, &pair.access)),
    ];
    for (what, answer) in http.all(checks).await {
        eprintln!(
            "postgres down: {what} → {} in {:?}",
            answer.status, answer.took
        );
        assert_unavailable(what, &answer);
    }
    let health = http.get(&node, "/healthz").await;
    assert_eq!(health.status, StatusCode::OK, "liveness: {health:?}");

    // A session in the near cache may still answer for its few seconds; past them the user
    // record (PostgreSQL) is needed. Either way: an answer or a 503, never a logout (401) or 500.
    let wait = Duration::from_secs(6).saturating_sub(cached_at.elapsed());
    tokio::time::sleep(wait).await;
    let uncached = http.me_cookie(&node, &session).await;
    for (what, answer) in [
        ("session cookie, just after", &cached),
        ("bearer token", &bearer),
        ("session cookie, past the near cache's 5 s", &uncached),
    ] {
        eprintln!(
            "postgres down: {what} → {} in {:?}",
            answer.status, answer.took
        );
        if answer.status != StatusCode::OK {
            assert_unavailable(what, answer);
        }
    }
    assert!(node.alive(), "the node died without PostgreSQL");

    // ---- PostgreSQL comes back.
    pg.resume();
    let back = Instant::now();
    let took = eventually(RECOVERY, "logins after PostgreSQL returned", || {
        let http = http.clone();
        let node = &node;
        async move {
            expect(
                &http.login(node, "/v1/session/login", "alice").await,
                StatusCode::OK,
            )
        }
    })
    .await;
    eprintln!("postgres back: logins work {took:?} after PostgreSQL returned");
    assert_eq!(http.get(&node, "/readyz").await.status, StatusCode::OK);
    assert_eq!(http.me_cookie(&node, &session).await.status, StatusCode::OK);
    assert_eq!(
        http.me_bearer(&node, &pair.access).await.status,
        StatusCode::OK
    );
    let refreshed = http.refresh(&node, &pair.refresh).await;
    assert_eq!(
        refreshed.status,
        StatusCode::OK,
        "the refresh refused during the outage works now: {refreshed:?}"
    );
    let admin = http.pair(&node, "root").await;
    assert_eq!(
        http.admin_users(&node, &admin.access).await.status,
        StatusCode::OK
    );
    assert_eq!(
        http.register(&node, "bob").await.status,
        StatusCode::CREATED
    );
    eprintln!(
        "postgres back: everything checked {:?} after",
        back.elapsed()
    );
    assert!(node.alive());
    node.assert_no_panic();
}

// ---------------------------------------------------------------------------------------------
// SIGKILL

/// Every write below is acknowledged with a 2xx; then the node is killed with SIGKILL at once and
/// started again on the same stores, and every one of them is still there.
async fn acknowledged_writes_survive_sigkill(dir: &Path, args: &[&str], env: &[(String, String)]) {
    let http = Http::new();
    add_user(dir, env, "root", true, PASSWORD);
    let node = Node::start(dir, args, env);
    for name in ["bob", "carol"] {
        assert_eq!(http.register(&node, name).await.status, StatusCode::CREATED);
    }
    let root = http.pair(&node, "root").await;
    let rotated = http
        .send(
            http.client
                .post(node.url("/v1/admin/keys/rotate"))
                .bearer_auth(&root.access),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{rotated:?}");
    let kid = rotated.str("kid");
    // A refresh token rotated: the new one must work after the crash.
    let first = http.pair(&node, "carol").await;
    let refreshed = http.refresh(&node, &first.refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{refreshed:?}");
    let rotated_refresh = refreshed.str("refresh_token");
    // A revoked token.
    let revoked = http.pair(&node, "carol").await;
    assert_eq!(
        http.revoke(&node, &revoked.access).await.status,
        StatusCode::OK
    );
    // Session data, patched twice.
    let (session, csrf) = http.session(&node, "bob").await;
    let patched = http
        .patch_data(
            &node,
            &session,
            &csrf,
            json!({"theme": "dark", "cart": [1, 2, 3]}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{patched:?}");
    let patched = http
        .patch_data(&node, &session, &csrf, json!({"cart": null, "step": 2}))
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{patched:?}");
    let data = json!({"theme": "dark", "step": 2});
    assert_eq!(patched.body, data);
    // Killed right after the last acknowledgement.
    node.kill9();

    let node = Node::start(dir, args, env);
    for name in ["bob", "carol", "root"] {
        let pair = http.pair(&node, name).await;
        assert_eq!(
            kid_of(&pair.access),
            kid,
            "the rotated key signs new tokens"
        );
    }
    let jwks = http.get(&node, "/.well-known/jwks.json").await;
    assert!(
        jwks.body["keys"]
            .as_array()
            .is_some_and(|keys| keys.iter().any(|k| k["kid"] == kid.as_str())),
        "{jwks:?}"
    );
    let me = http.me_cookie(&node, &session).await;
    assert_eq!(me.status, StatusCode::OK, "the session survives: {me:?}");
    assert_eq!(me.body["user"]["username"], "bob");
    let stored = http
        .send(
            http.client
                .get(node.url("/v1/session/data"))
                .header(reqwest::header::COOKIE, &session),
        )
        .await;
    assert_eq!(stored.body, data, "the session data survives: {stored:?}");
    let me = http.me_bearer(&node, &revoked.access).await;
    assert_eq!(
        me.status,
        StatusCode::UNAUTHORIZED,
        "the revocation survives: {me:?}"
    );
    let again = http.refresh(&node, &revoked.refresh).await;
    assert_eq!(
        again.status,
        StatusCode::UNAUTHORIZED,
        "the revoked login stays ended: {again:?}"
    );
    let again = http.refresh(&node, &rotated_refresh).await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "the rotated refresh token works: {again:?}"
    );
    assert_eq!(
        http.me_bearer(&node, &root.access).await.status,
        StatusCode::OK,
        "a token of the key that was rotated out still verifies"
    );
    node.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_nothing_acknowledged_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("t.db").display());
    let env = env(&[("TESSERA_DATABASE", &database)]);
    acknowledged_writes_survive_sigkill(dir.path(), &["--database", &database], &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_nothing_acknowledged_on_postgres_and_redis() {
    let pg = Postgres::start();
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let env = multi_node_env(&pg, &redis);
    acknowledged_writes_survive_sigkill(dir.path(), &[], &env).await;
}
