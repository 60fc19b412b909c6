//! Three `tessera serve` processes (A, B, C) sharing one PostgreSQL schema and one Redis key
//! prefix, as a multi-node deployment runs them: a login made on one node works on the others,
//! and a logout, a revocation, a key rotation or a forced logout made on one node is enforced by
//! the others. The test also measures how long a revocation takes to reach the other nodes.
//!
//! It needs PostgreSQL (`TESSERA_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`) and Redis (`TESSERA_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`), and fails, never skips, when either cannot be reached. Each run
//! uses its own schema and key prefix and removes both when it ends, also when it fails.
//!
//! The same test runs again with the nodes on a Redis Cluster (three primaries with a replica
//! each, started by the test on free ports, `redis-server` and `redis-cli` on the `PATH`), and a
//! third test kills one primary of such a cluster during a run: requests that need it fail
//! closed (503) until its replica took over, then succeed again, and no acknowledged revocation
//! or logout comes back. The tests take turns, so the measurements are not disturbed.
//!
//! `cargo test -p tessera --test multinode -- --nocapture` shows the latency table.

mod harness;

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use harness::add_user;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use test_redis_cluster::RedisCluster;

const PASSWORD: &str = "correct horse battery staple";
const ADMIN_PASSWORD: &str = "a long admin passphrase for the test";
/// The issuer, and the origin the nodes trust; the same for every node.
const PUBLIC_URL: &str = "http://localhost:8080";

const SESSION_COOKIE: &str = "__Host-tessera";
const HYBRID_ACCESS_COOKIE: &str = "__Host-tessera-at";
const HYBRID_REFRESH_COOKIE: &str = "__Host-tessera-rt";

/// How many revocations the latency measurement makes. Each needs a login of its own (revoking
/// an access token ends its whole login, so tokens from refreshing one login cannot be revoked
/// one by one), and a login costs an argon2id hash.
const REVOCATIONS: usize = 200;
/// Users the measurement's logins are spread over: the default cap is 100 live logins per user.
const BENCH_USERS: usize = 4;
/// The target for the 99th percentile on loopback (50 ms) is a speed figure: this test prints it
/// in its table (recorded in docs/benchmarks.md) and does not fail on it, since a loaded machine
/// moves it. What it asserts is delivery within this bound: a revocation that has not reached
/// every node and every stream by then was lost, not slow (a node whose feed breaks stops
/// answering within about 6 s, far below it).
const DELIVERY_BOUND: Duration = Duration::from_secs(10);
/// The service client that follows the nodes' revocation streams.
const STREAM_CLIENT: &str = "streamwatch";
const STREAM_SECRET: &str = "a service secret for the stream measurement";
/// How long a functional check waits for a change to reach another node before failing. Far
/// above the target: these checks are about correctness, the measurement is about speed.
const PATIENCE: Duration = Duration::from_secs(2);

fn postgres_url() -> String {
    std::env::var("TESSERA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn redis_url() -> String {
    std::env::var("TESSERA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Random hex, for names no other run uses and for the master key.
fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:016x}", hasher.finish())
}

/// The tests of this file run one at a time: each starts nodes and measures them.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The Redis the nodes share.
enum Redis {
    /// The one at [`redis_url`], under the run's prefix.
    Shared,
    /// A Redis Cluster of the test's own, named by `redis.url = "redis+cluster://…"`, or by
    /// `redis.cluster_urls` when `by_node_list`.
    Cluster {
        cluster: RedisCluster,
        by_node_list: bool,
    },
}

impl Redis {
    /// Starts a private cluster (off the async workers: it takes a few seconds).
    async fn cluster(by_node_list: bool) -> Self {
        let cluster = tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .expect("the Redis Cluster starts");
        Redis::Cluster {
            cluster,
            by_node_list,
        }
    }

    /// The environment that points a node at it.
    fn env(&self) -> (&'static str, String) {
        match self {
            Redis::Shared => ("TESSERA_REDIS__URL", redis_url()),
            Redis::Cluster {
                cluster,
                by_node_list: false,
            } => ("TESSERA_REDIS__URL", cluster.cluster_url()),
            Redis::Cluster {
                cluster,
                by_node_list: true,
            } => {
                let quoted: Vec<String> =
                    cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
                (
                    "TESSERA_REDIS__CLUSTER_URLS",
                    format!("[{}]", quoted.join(",")),
                )
            }
        }
    }

    /// Where to look for the run's keys: the shared Redis, or every live node of the cluster.
    fn urls(&self) -> Vec<String> {
        match self {
            Redis::Shared => vec![redis_url()],
            Redis::Cluster { cluster, .. } => cluster
                .live_ports()
                .into_iter()
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect(),
        }
    }
}

/// Fails the test with a clear message when PostgreSQL or Redis cannot be reached.
async fn require_services() {
    let url = postgres_url();
    let pg = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url)).await;
    match pg {
        Ok(Ok(conn)) => drop(conn.close().await),
        Ok(Err(e)) => panic!(
            "PostgreSQL is not reachable at {url} ({e}). This test needs a running server: \
             start one, or point TESSERA_TEST_POSTGRES_URL at one"
        ),
        Err(_) => panic!("PostgreSQL at {url} did not answer within 5 s"),
    }
    let url = redis_url();
    let pong: redis::RedisResult<String> = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .and_then(|mut conn| redis::cmd("PING").query(&mut conn));
    if let Err(e) = pong {
        panic!(
            "Redis is not reachable at {url} ({e}). This test needs a running server: start \
             one, or point TESSERA_TEST_REDIS_URL at one"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The nodes

/// One node: a `tessera serve` process, killed when dropped, and its name.
struct Node {
    name: &'static str,
    process: harness::Node,
}

impl Deref for Node {
    type Target = harness::Node;

    fn deref(&self) -> &harness::Node {
        &self.process
    }
}

/// The shared schema, key prefix and configuration, and the nodes. Dropping it kills the nodes,
/// then drops the schema and deletes the prefix's keys, also when the test panicked.
struct Cluster {
    nodes: Vec<Node>,
    schema: String,
    prefix: String,
    master_key: String,
    dir: tempfile::TempDir,
    redis: Redis,
}

impl Cluster {
    fn new(redis: Redis) -> Self {
        let id = random_hex();
        let key: Vec<u8> = (0..4)
            .flat_map(|_| {
                u64::from_str_radix(&random_hex(), 16)
                    .unwrap()
                    .to_le_bytes()
            })
            .collect();
        Self {
            nodes: Vec::new(),
            schema: format!("tessera_mn_{id}"),
            prefix: format!("tessera-mn:{id}:"),
            master_key: base64::engine::general_purpose::STANDARD.encode(key),
            dir: tempfile::tempdir().unwrap(),
            redis,
        }
    }

    /// The configuration every node and the CLI share.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TESSERA_DATABASE", postgres_url()),
            ("TESSERA_POSTGRES__SCHEMA", self.schema.clone()),
            ("TESSERA_SESSIONS__STORE", "redis".into()),
            self.redis.env(),
            ("TESSERA_REDIS__PREFIX", self.prefix.clone()),
            ("TESSERA_TOKENS__MASTER_KEY", self.master_key.clone()),
            ("TESSERA_PUBLIC_URL", PUBLIC_URL.into()),
            (
                "TESSERA_THROTTLING__PER_ACCOUNT",
                "{burst=10000,per_minute=10000}".into(),
            ),
            (
                "TESSERA_THROTTLING__PER_IP",
                "{burst=10000,per_minute=10000}".into(),
            ),
            (
                "TESSERA_TOKENS__INTROSPECTION_CLIENTS",
                format!("{{{STREAM_CLIENT}=\"{STREAM_SECRET}\"}}"),
            ),
        ]
    }

    /// `tessera user add NAME --admin`, the password on stdin; returns the user id.
    fn add_admin(&self, name: &str) -> String {
        add_user(self.dir.path(), &self.env(), name, true, ADMIN_PASSWORD)
    }

    /// Starts A, B and C at once and waits until all three listen.
    fn start_nodes(&mut self) {
        let env = self.env();
        let starting: Vec<_> = ["A", "B", "C"]
            .into_iter()
            .map(|name| {
                let process = harness::Node::spawn(self.dir.path(), "127.0.0.1:0", &[], &env);
                (name, process)
            })
            .collect();
        for (name, process) in starting {
            let process = process.ready();
            self.nodes.push(Node { name, process });
        }
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    /// Keys under this run's prefix (on every node of a cluster).
    fn redis_keys(&self) -> redis::RedisResult<Vec<String>> {
        let mut keys = Vec::new();
        for url in self.redis.urls() {
            let client = redis::Client::open(url)?;
            let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
            // The prefix is made of [a-z0-9:-]: nothing to escape for the glob.
            let pattern = format!("{}*", self.prefix);
            let mut cursor = String::from("0");
            loop {
                let (next, page): (String, Vec<String>) = redis::cmd("SCAN")
                    .arg(&cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut conn)?;
                keys.extend(page);
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Deletes the run's keys from the shared Redis (a private cluster goes with its processes).
    fn delete_redis_keys(&self) -> redis::RedisResult<()> {
        if !matches!(self.redis, Redis::Shared) {
            return Ok(());
        }
        let keys = self.redis_keys()?;
        let client = redis::Client::open(redis_url())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        for chunk in keys.chunks(500) {
            let _: i64 = redis::cmd("DEL").arg(chunk).query(&mut conn)?;
        }
        Ok(())
    }

    /// Tables in this run's schema.
    async fn tables(&self) -> Vec<String> {
        let mut conn = PgConnection::connect(&postgres_url()).await.unwrap();
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
        )
        .bind(&self.schema)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        rows.into_iter().map(|(t,)| t).collect()
    }
}

async fn drop_schema(schema: String) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect(&postgres_url()).await?;
    let statement = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    conn.execute(sqlx::AssertSqlSafe(statement)).await?;
    conn.close().await
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "---- node {} ({}), last log lines ----\n{}",
                    node.name,
                    node.base,
                    node.log_tail(40)
                );
            }
        }
        // The nodes first: they hold connections to the schema and write under the prefix.
        self.nodes.clear();
        if let Err(e) = self.delete_redis_keys() {
            eprintln!("cannot delete the Redis keys under {}: {e}", self.prefix);
        }
        // From a thread of its own: this may run inside the test's runtime, which cannot be
        // blocked on.
        let schema = self.schema.clone();
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(drop_schema(schema))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cannot drop schema {}: {e}", self.schema),
            Err(_) => eprintln!("cannot drop schema {}: the cleanup panicked", self.schema),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP, as a curl-like client: no cookie jar, no Origin; cookies are passed by hand, so each
// request says exactly which credential it carries to which node.

#[derive(Clone)]
struct Http(reqwest::Client);

/// A session-model login: the cookie (`name=value`) and its CSRF token.
struct SessionLogin {
    cookie: String,
    csrf: String,
    user_id: String,
}

/// A token-model pair.
#[derive(Clone)]
struct Pair {
    access: String,
    refresh: String,
}

/// A hybrid login: both cookies (`name=value`) and the CSRF token.
struct HybridLogin {
    access_cookie: String,
    refresh_cookie: String,
    csrf: String,
}

/// `name=value` of the cookie `name` that the response sets.
fn set_cookie(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie set: {:?}", response.headers()))
        .to_owned()
}

/// The `kid` in a JWT's header.
fn kid(jwt: &str) -> String {
    let header = jwt.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url JWT header");
    let header: Value = serde_json::from_slice(&bytes).expect("JSON JWT header");
    header["kid"].as_str().expect("a kid").to_owned()
}

impl Http {
    fn new() -> Self {
        Self(
            reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        )
    }

    async fn register(&self, node: &Node, username: &str) {
        let r = self
            .0
            .post(format!("{}/v1/users", node.base))
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "register {username}");
    }

    async fn session_login(&self, node: &Node, username: &str) -> SessionLogin {
        let r = self
            .0
            .post(format!("{}/v1/session/login", node.base))
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "session login on {}", node.name);
        let cookie = set_cookie(&r, SESSION_COOKIE);
        let body: Value = r.json().await.unwrap();
        SessionLogin {
            cookie,
            csrf: body["csrf_token"].as_str().unwrap().to_owned(),
            user_id: body["user"]["id"].as_str().unwrap().to_owned(),
        }
    }

    async fn token_login_as(&self, node: &Node, username: &str, password: &str) -> Pair {
        let r = self
            .0
            .post(format!("{}/v1/token", node.base))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "token login on {}", node.name);
        let body: Value = r.json().await.unwrap();
        Pair {
            access: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    async fn token_login(&self, node: &Node, username: &str) -> Pair {
        self.token_login_as(node, username, PASSWORD).await
    }

    async fn hybrid_login(&self, node: &Node, username: &str) -> HybridLogin {
        let r = self
            .0
            .post(format!("{}/v1/hybrid/login", node.base))
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "hybrid login on {}", node.name);
        let access_cookie = set_cookie(&r, HYBRID_ACCESS_COOKIE);
        let refresh_cookie = set_cookie(&r, HYBRID_REFRESH_COOKIE);
        let body: Value = r.json().await.unwrap();
        HybridLogin {
            access_cookie,
            refresh_cookie,
            csrf: body["csrf_token"].as_str().unwrap().to_owned(),
        }
    }

    async fn me_with_cookie(&self, node: &Node, cookie: &str) -> StatusCode {
        self.0
            .get(format!("{}/v1/me", node.base))
            .header(COOKIE, cookie)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn me_with_bearer(&self, node: &Node, token: &str) -> StatusCode {
        self.0
            .get(format!("{}/v1/me", node.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// `POST /v1/token/refresh`: the new pair, or the refusal's status.
    async fn refresh(&self, node: &Node, refresh_token: &str) -> Result<Pair, StatusCode> {
        let r = self
            .0
            .post(format!("{}/v1/token/refresh", node.base))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            .unwrap();
        if r.status() != StatusCode::OK {
            return Err(r.status());
        }
        let body: Value = r.json().await.unwrap();
        Ok(Pair {
            access: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        })
    }

    async fn hybrid_refresh(&self, node: &Node, login: &HybridLogin) -> StatusCode {
        self.0
            .post(format!("{}/v1/hybrid/refresh", node.base))
            .header(
                COOKIE,
                format!("{}; {}", login.access_cookie, login.refresh_cookie),
            )
            .header("X-CSRF-Token", &login.csrf)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn revoke(&self, node: &Node, token: &str) {
        let r = self
            .0
            .post(format!("{}/v1/token/revoke", node.base))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "revoke on {}", node.name);
    }

    async fn jwks_kids(&self, node: &Node) -> Vec<String> {
        let jwks: Value = self
            .0
            .get(format!("{}/.well-known/jwks.json", node.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Asks `probe` until it answers 401; fails on any answer other than 200 and 401, or after
/// [`PATIENCE`]. Returns how long it took from `since`, and how many 200s came before.
async fn refused_within<F, Fut>(what: &str, since: Instant, mut probe: F) -> (Duration, usize)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StatusCode>,
{
    let mut accepted = 0;
    loop {
        match probe().await {
            StatusCode::UNAUTHORIZED => return (since.elapsed(), accepted),
            StatusCode::OK => accepted += 1,
            other => panic!("{what}: unexpected {other}"),
        }
        assert!(
            since.elapsed() < PATIENCE,
            "{what}: still accepted {PATIENCE:?} later"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------------------------------------
// The test

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_logins_revocations_and_keys() {
    let _turn = ONE_AT_A_TIME.lock().await;
    require_services().await;
    three_nodes_share(Redis::Shared).await;
}

/// The same, with the nodes on a Redis Cluster (named by a `redis+cluster://` URL).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_logins_revocations_and_keys_on_a_redis_cluster() {
    let _turn = ONE_AT_A_TIME.lock().await;
    require_services().await;
    three_nodes_share(Redis::cluster(false).await).await;
}

async fn three_nodes_share(redis: Redis) {
    let started = Instant::now();
    let mut cluster = Cluster::new(redis);
    let admin_id = cluster.add_admin("root");
    assert!(admin_id.starts_with("usr_"), "{admin_id}");
    cluster.start_nodes();
    let http = Http::new();
    let (a, b, c) = (cluster.node("A"), cluster.node("B"), cluster.node("C"));
    println!(
        "nodes: A {} · B {} · C {} (schema {}, Redis prefix {})",
        a.base, b.base, c.base, cluster.schema, cluster.prefix
    );

    http.register(a, "alice").await;
    http.register(b, "bob").await;

    // ---- Session model: log in on A, use the cookie on B and C, log out on C. ----
    let session = http.session_login(a, "alice").await;
    for node in [a, b, c] {
        assert_eq!(
            http.me_with_cookie(node, &session.cookie).await,
            StatusCode::OK,
            "a session made on A works on {}",
            node.name
        );
    }
    let r = http
        .0
        .delete(format!("{}/v1/session", c.base))
        .header(COOKIE, &session.cookie)
        .header("X-CSRF-Token", &session.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "logout on C");
    let logged_out = Instant::now();
    for node in [a, b, c] {
        let took = refused_within(
            &format!("the session logged out on C, on {}", node.name),
            logged_out,
            || http.me_with_cookie(node, &session.cookie),
        )
        .await;
        println!(
            "session logged out on C: refused on {} {} after the logout's answer \
             (accepted {} times before; nodes checked in turn)",
            node.name,
            ms(took.0),
            took.1
        );
    }

    // ---- Token model: log in on A, use the bearer on B and C, revoke on B. ----
    let pair = http.token_login(a, "alice").await;
    for node in [a, b, c] {
        assert_eq!(
            http.me_with_bearer(node, &pair.access).await,
            StatusCode::OK,
            "a token issued on A works on {}",
            node.name
        );
    }
    http.revoke(b, &pair.access).await;
    let revoked = Instant::now();
    for node in [a, c, b] {
        let took = refused_within(
            &format!("the token revoked on B, on {}", node.name),
            revoked,
            || http.me_with_bearer(node, &pair.access),
        )
        .await;
        println!(
            "token revoked on B: refused on {} {} after the revoke's answer \
             (accepted {} times before; nodes checked in turn)",
            node.name,
            ms(took.0),
            took.1
        );
    }
    // Revoking the access token ended its login: its refresh token is dead on every node.
    for node in [c, a] {
        assert_eq!(
            http.refresh(node, &pair.refresh).await.err(),
            Some(StatusCode::UNAUTHORIZED),
            "the refresh token of a revoked login, on {}",
            node.name
        );
    }

    // ---- Key rotation on A: B and C sign with the new key and still accept the old one. ----
    let admin = http.token_login_as(a, "root", ADMIN_PASSWORD).await;
    let before_rotation = http.token_login(b, "alice").await;
    let old_kid = kid(&before_rotation.access);
    let r = http
        .0
        .post(format!("{}/v1/admin/keys/rotate", a.base))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "rotate on A");
    let rotated = Instant::now();
    let new_kid = r.json::<Value>().await.unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_kid, old_kid);
    // Refreshing is cheap (no argon2): ask until the node signs with the new key.
    let mut refresh_token = before_rotation.refresh.clone();
    for node in [b, c] {
        loop {
            let next = http
                .refresh(node, &refresh_token)
                .await
                .unwrap_or_else(|s| panic!("refresh on {}: {s}", node.name));
            refresh_token = next.refresh;
            if kid(&next.access) == new_kid {
                break;
            }
            assert!(
                rotated.elapsed() < PATIENCE,
                "{} still signs with {} {PATIENCE:?} after the rotation on A",
                node.name,
                kid(&next.access)
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        println!(
            "key rotated on A, signing on {}: {}",
            node.name,
            ms(rotated.elapsed())
        );
    }
    let mut fresh = Vec::new();
    for node in [b, c] {
        let pair = http.token_login(node, "alice").await;
        assert_eq!(
            kid(&pair.access),
            new_kid,
            "a fresh login on {} is signed with the key rotated on A",
            node.name
        );
        fresh.push((node.name, pair));
    }
    for node in [a, b, c] {
        assert_eq!(
            http.me_with_bearer(node, &before_rotation.access).await,
            StatusCode::OK,
            "{} accepts a token signed with the previous key",
            node.name
        );
        for (issuer, pair) in &fresh {
            assert_eq!(
                http.me_with_bearer(node, &pair.access).await,
                StatusCode::OK,
                "{} accepts a new-key token issued on {issuer}",
                node.name
            );
        }
        let kids = http.jwks_kids(node).await;
        assert!(
            kids.contains(&old_kid) && kids.contains(&new_kid),
            "the JWKS of {} publishes both keys: {kids:?}",
            node.name
        );
    }

    // ---- Forced logout on A: every credential of bob is refused on every node. ----
    let bob_session = http.session_login(b, "bob").await;
    let bob_id = bob_session.user_id.clone();
    let bob_pair = http.token_login(c, "bob").await;
    let bob_hybrid = http.hybrid_login(a, "bob").await;
    // A refresh on another node than the login's: it works, and gives the refresh token to test.
    let bob_refreshed = http.refresh(b, &bob_pair.refresh).await.unwrap();
    let alice_pair = http.token_login(c, "alice").await;
    for node in [a, b, c] {
        for (what, status) in [
            (
                "session cookie",
                http.me_with_cookie(node, &bob_session.cookie).await,
            ),
            ("bearer", http.me_with_bearer(node, &bob_pair.access).await),
            (
                "refreshed bearer",
                http.me_with_bearer(node, &bob_refreshed.access).await,
            ),
            (
                "hybrid cookie",
                http.me_with_cookie(node, &bob_hybrid.access_cookie).await,
            ),
        ] {
            assert_eq!(
                status,
                StatusCode::OK,
                "bob's {what} on {} before the forced logout",
                node.name
            );
        }
    }
    let r = http
        .0
        .post(format!("{}/v1/admin/users/{bob_id}/logout", a.base))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "forced logout on A");
    let forced = Instant::now();
    let ended = r.json::<Value>().await.unwrap()["ended"].as_u64().unwrap();
    assert!(
        ended >= 3,
        "the session, the token login and the hybrid login end: {ended}"
    );
    let mut slowest = Duration::ZERO;
    let mut stale_probes = 0;
    for node in [a, b, c] {
        let n = node.name;
        let took = [
            refused_within(&format!("bob's session cookie on {n}"), forced, || {
                http.me_with_cookie(node, &bob_session.cookie)
            })
            .await,
            refused_within(&format!("bob's bearer on {n}"), forced, || {
                http.me_with_bearer(node, &bob_pair.access)
            })
            .await,
            refused_within(&format!("bob's refreshed bearer on {n}"), forced, || {
                http.me_with_bearer(node, &bob_refreshed.access)
            })
            .await,
            refused_within(&format!("bob's hybrid cookie on {n}"), forced, || {
                http.me_with_cookie(node, &bob_hybrid.access_cookie)
            })
            .await,
        ];
        for (elapsed, accepted) in took {
            slowest = slowest.max(elapsed);
            stale_probes += accepted;
        }
        assert_eq!(
            http.refresh(node, &bob_refreshed.refresh).await.err(),
            Some(StatusCode::UNAUTHORIZED),
            "bob's refresh token on {n}"
        );
        assert_eq!(
            http.hybrid_refresh(node, &bob_hybrid).await,
            StatusCode::UNAUTHORIZED,
            "bob's hybrid refresh cookie on {n}"
        );
        assert_eq!(
            http.me_with_bearer(node, &alice_pair.access).await,
            StatusCode::OK,
            "another user's token on {n} survives bob's forced logout"
        );
    }
    println!(
        "forced logout on A ended {ended} logins: every credential refused on every node \
         {} after the answer (accepted {stale_probes} times before; checked in turn)",
        ms(slowest)
    );

    // ---- Revocation propagation: revoke on A, poll B and C until they refuse. ----
    let setup = Instant::now();
    let tokens = issue_logins(&http, &cluster).await;
    println!(
        "{} logins for the measurement in {}",
        tokens.len(),
        ms(setup.elapsed())
    );
    // Every node's revocation stream, followed as a resource server would.
    let mut watches = Vec::new();
    for node in &cluster.nodes {
        watches.push(StreamWatch::open(node).await);
    }
    let measured = measure_revocations(&http, &cluster, &tokens).await;
    report(&measured);
    let stream_p99 = report_streams(&watches, &tokens, &measured).await;

    // The nodes really shared PostgreSQL and Redis under this run's names.
    assert!(
        !cluster.tables().await.is_empty(),
        "no table in schema {}",
        cluster.schema
    );
    assert!(
        !cluster.redis_keys().unwrap().is_empty(),
        "no Redis key under {}",
        cluster.prefix
    );
    for (node, p99) in stream_p99 {
        assert!(
            p99 < DELIVERY_BOUND,
            "revocations on A reached the stream of {node} in p99 {}: not delivered within {}",
            ms(p99),
            ms(DELIVERY_BOUND)
        );
    }
    for m in &measured.observed {
        let from_send = Stats::of(&m.from_send);
        assert!(
            from_send.p99 < DELIVERY_BOUND,
            "revocation on A reached {} in p99 {} (from sending the revoke): not delivered within {}",
            m.node,
            ms(from_send.p99),
            ms(DELIVERY_BOUND)
        );
    }
    drop(cluster);
    println!("total {}", ms(started.elapsed()));
}

/// [`REVOCATIONS`] access tokens, each of a login of its own, from logins spread over the nodes.
async fn issue_logins(http: &Http, cluster: &Cluster) -> Vec<String> {
    let names: Vec<String> = (0..BENCH_USERS).map(|i| format!("bench{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        http.register(&cluster.nodes[i % 3], name).await;
    }
    let bases: Vec<(&'static str, String)> = cluster
        .nodes
        .iter()
        .map(|n| (n.name, n.base.clone()))
        .collect();
    let mut workers = tokio::task::JoinSet::new();
    for (w, name) in names.into_iter().enumerate() {
        let http = http.clone();
        let bases = bases.clone();
        workers.spawn(async move {
            let mut tokens = Vec::new();
            for j in 0..REVOCATIONS / BENCH_USERS {
                let (_, base) = &bases[(w + j) % bases.len()];
                let body: Value = http
                    .0
                    .post(format!("{base}/v1/token"))
                    .json(&json!({"username": name, "password": PASSWORD}))
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                tokens.push(body["access_token"].as_str().unwrap().to_owned());
            }
            tokens
        });
    }
    let mut tokens = Vec::new();
    while let Some(batch) = workers.join_next().await {
        tokens.extend(batch.unwrap());
    }
    assert_eq!(tokens.len(), REVOCATIONS);
    tokens
}

/// What one observing node saw over all revocations.
struct Observed {
    node: &'static str,
    /// From just before the revoke request was sent to A to the first 401 from this node.
    from_send: Vec<Duration>,
    /// From A's answer to the revoke to the first 401 from this node (zero when it came first).
    from_answer: Vec<Duration>,
    /// Revocations this node refused before A's answer to the revoke had arrived.
    refused_before_answer: usize,
    /// Revocations this node still accepted at least once after A had answered.
    stale: usize,
    /// Requests answered 200 after A had answered, over all revocations.
    stale_requests: usize,
}

/// The measurement: the revoke round trip on A, and what B and C saw.
struct Measured {
    /// When each revoke was sent, in the order of the tokens.
    sent: Vec<Instant>,
    revoke: Vec<Duration>,
    observed: Vec<Observed>,
}

/// For each token: both other nodes accept it (so their verified-token caches hold it), then A
/// is sent the revoke while B and C are polled back to back, concurrently, from the same
/// instant, until each refuses it.
async fn measure_revocations(http: &Http, cluster: &Cluster, tokens: &[String]) -> Measured {
    let a = cluster.node("A");
    let others = [cluster.node("B"), cluster.node("C")];
    let mut revoke = Vec::with_capacity(tokens.len());
    let mut sent_at = Vec::with_capacity(tokens.len());
    let mut observed: Vec<Observed> = others
        .iter()
        .map(|n| Observed {
            node: n.name,
            from_send: Vec::with_capacity(tokens.len()),
            from_answer: Vec::with_capacity(tokens.len()),
            refused_before_answer: 0,
            stale: 0,
            stale_requests: 0,
        })
        .collect();
    for token in tokens {
        for node in others {
            assert_eq!(
                http.me_with_bearer(node, token).await,
                StatusCode::OK,
                "a fresh token on {}",
                node.name
            );
        }
        let sent = Instant::now();
        let (answered, b, c) = tokio::join!(
            async {
                http.revoke(a, token).await;
                Instant::now()
            },
            poll_until_refused(http, others[0], token, sent),
            poll_until_refused(http, others[1], token, sent),
        );
        revoke.push(answered - sent);
        sent_at.push(sent);
        for (o, (refused, accepted)) in observed.iter_mut().zip([b, c]) {
            o.from_send.push(refused - sent);
            o.from_answer
                .push(refused.saturating_duration_since(answered));
            if refused <= answered {
                o.refused_before_answer += 1;
            }
            let late = accepted.iter().filter(|&&at| at > answered).count();
            if late > 0 {
                o.stale += 1;
                o.stale_requests += late;
            }
        }
    }
    Measured {
        sent: sent_at,
        revoke,
        observed,
    }
}

/// Asks `node` back to back until it refuses `token`; returns when the refusal arrived and when
/// each earlier acceptance did.
async fn poll_until_refused(
    http: &Http,
    node: &Node,
    token: &str,
    sent: Instant,
) -> (Instant, Vec<Instant>) {
    let mut accepted = Vec::new();
    loop {
        match http.me_with_bearer(node, token).await {
            StatusCode::UNAUTHORIZED => return (Instant::now(), accepted),
            StatusCode::OK => accepted.push(Instant::now()),
            other => panic!("{}: unexpected {other} while polling", node.name),
        }
        assert!(
            sent.elapsed() < PATIENCE,
            "{} still accepts a token revoked on A {PATIENCE:?} ago",
            node.name
        );
    }
}

/// One node's revocation stream, read as it comes: when each revoked token id first appeared.
struct StreamWatch {
    node: &'static str,
    seen: Arc<Mutex<std::collections::HashMap<String, Instant>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for StreamWatch {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl StreamWatch {
    /// Connects, and returns once the stream's snapshot has arrived.
    async fn open(node: &Node) -> Self {
        // No overall timeout: the stream stays open for the whole measurement.
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut response = client
            .get(format!("{}/v1/revocations/stream", node.base))
            .basic_auth(STREAM_CLIENT, Some(STREAM_SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "the stream of {}",
            node.name
        );
        let seen = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let (ready, snapshot) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn({
            let seen = Arc::clone(&seen);
            async move {
                let mut ready = Some(ready);
                let mut buffer = String::new();
                while let Ok(Some(chunk)) = response.chunk().await {
                    let at = Instant::now();
                    buffer.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = buffer.find("\n\n") {
                        let event: String = buffer.drain(..end + 2).collect();
                        if event.lines().any(|l| l == "event: snapshot")
                            && let Some(ready) = ready.take()
                        {
                            let _ = ready.send(());
                        }
                        let data = event.lines().find_map(|l| l.strip_prefix("data:"));
                        if let Some(Ok(data)) =
                            data.map(|d| serde_json::from_str::<Value>(d.trim()))
                            && data["kind"] == "token"
                            && let Some(jti) = data["jti"].as_str()
                        {
                            seen.lock().unwrap().entry(jti.to_owned()).or_insert(at);
                        }
                    }
                }
            }
        });
        tokio::time::timeout(PATIENCE, snapshot)
            .await
            .expect("a snapshot first")
            .expect("the stream stays open");
        Self {
            node: node.name,
            seen,
            reader,
        }
    }
}

/// The `jti` claim of a JWT.
fn jti(jwt: &str) -> String {
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url JWT payload");
    let claims: Value = serde_json::from_slice(&bytes).expect("JSON JWT payload");
    claims["jti"].as_str().expect("a jti").to_owned()
}

/// From each revoke sent to A to the revoked token id's event on each node's stream; returns
/// the p99 per node.
async fn report_streams(
    watches: &[StreamWatch],
    tokens: &[String],
    measured: &Measured,
) -> Vec<(&'static str, Duration)> {
    // The last events may still be on their way.
    let deadline = Instant::now() + PATIENCE;
    let ids: Vec<String> = tokens.iter().map(|t| jti(t)).collect();
    let mut p99s = Vec::new();
    println!("| revocation event on the stream of | p50 | p99 | max |");
    println!("|---|---|---|---|");
    for watch in watches {
        let samples: Vec<Duration> = loop {
            let samples: Option<Vec<Duration>> = {
                let seen = watch.seen.lock().unwrap();
                ids.iter()
                    .zip(&measured.sent)
                    .map(|(id, sent)| seen.get(id).map(|at| at.saturating_duration_since(*sent)))
                    .collect()
            };
            match samples {
                Some(samples) => break samples,
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                None => panic!(
                    "a revocation never appeared on the stream of {}",
                    watch.node
                ),
            }
        };
        let s = Stats::of(&samples);
        println!(
            "| {} (after the revoke was sent to A) | {} | {} | {} |",
            watch.node,
            ms(s.p50),
            ms(s.p99),
            ms(s.max)
        );
        p99s.push((watch.node, s.p99));
    }
    println!();
    p99s
}

/// Nearest-rank percentiles.
struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Stats {
    fn of(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let rank = |p: usize| sorted[(sorted.len() * p).div_ceil(100).max(1) - 1];
        Self {
            p50: rank(50),
            p99: rank(99),
            max: *sorted.last().unwrap(),
        }
    }
}

fn report(m: &Measured) {
    let n = m.revoke.len();
    println!();
    println!(
        "Revocation propagation: {n} access tokens, each of its own login, each revoked on A \
         (POST /v1/token/revoke) while GET /v1/me is polled back to back on B and C until 401."
    );
    println!("| what | p50 | p99 | max | refused before A answered | accepted after A answered |");
    println!("|---|---|---|---|---|---|");
    let s = Stats::of(&m.revoke);
    println!(
        "| revoke round trip on A | {} | {} | {} | | |",
        ms(s.p50),
        ms(s.p99),
        ms(s.max)
    );
    for o in &m.observed {
        let s = Stats::of(&o.from_send);
        println!(
            "| first 401 on {} after the revoke was sent | {} | {} | {} | {} of {n} | {} of {n} ({} requests) |",
            o.node,
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            o.refused_before_answer,
            o.stale,
            o.stale_requests
        );
        let s = Stats::of(&o.from_answer);
        println!(
            "| first 401 on {} after A answered (0 if before) | {} | {} | {} | | |",
            o.node,
            ms(s.p50),
            ms(s.p99),
            ms(s.max)
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// A primary of the Redis Cluster dies during a run

/// How long the cluster may take to notice a dead primary and promote its replica (a node
/// timeout of a second, an election, the clients' slot maps catching up).
const FAILOVER: Duration = Duration::from_secs(30);

impl Http {
    /// `POST /v1/session/login`: the status and, on success, the cookie.
    async fn try_session_login(&self, node: &Node, username: &str) -> (StatusCode, Option<String>) {
        let r = self
            .0
            .post(format!("{}/v1/session/login", node.base))
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let cookie = (status == StatusCode::OK).then(|| set_cookie(&r, SESSION_COOKIE));
        (status, cookie)
    }

    /// `DELETE /v1/session`: the status.
    async fn logout(&self, node: &Node, login: &SessionLogin) -> StatusCode {
        self.0
            .delete(format!("{}/v1/session", node.base))
            .header(COOKIE, &login.cookie)
            .header("X-CSRF-Token", &login.csrf)
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// Asks `probe` until it answers `want`; every other answer must be one of `meanwhile`.
async fn answers_within<F, Fut>(
    what: &str,
    want: StatusCode,
    meanwhile: &[StatusCode],
    mut probe: F,
) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StatusCode>,
{
    let deadline = Instant::now() + FAILOVER;
    let mut others = 0;
    loop {
        let status = probe().await;
        if status == want {
            return others;
        }
        assert!(
            meanwhile.contains(&status),
            "{what}: {status} (expected {want}, or meanwhile one of {meanwhile:?})"
        );
        others += 1;
        assert!(
            Instant::now() < deadline,
            "{what}: still {status} after {FAILOVER:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One primary is killed (SIGKILL) right after it acknowledged a logout and a token
/// revocation that every node has applied. Requests that need it answer 503 (never 500, never a success on stale state)
/// until its replica took over, then succeed; the logout and the revocation hold on every node.
/// Logouts on that shard stay refused (503) while it has no replica to confirm them, and work
/// again once the old primary is back as its replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_primary_dies_and_no_acknowledged_revocation_is_lost() {
    let _turn = ONE_AT_A_TIME.lock().await;
    require_services().await;
    let mut nodes = Cluster::new(Redis::cluster(true).await);
    let Redis::Cluster { cluster: redis, .. } = &nodes.redis else {
        unreachable!("a cluster was asked for")
    };
    // A user whose sessions live on the primary that holds the revocations: one kill takes
    // both away.
    let victim = redis.primary_of(&format!("{}{{rev}}:deny", nodes.prefix));
    let mut name = String::new();
    for i in 0.. {
        assert!(i < 60, "no user id landed on the primary {victim}");
        name = format!("user{i}");
        let id = add_user(nodes.dir.path(), &nodes.env(), &name, false, PASSWORD);
        if redis.primary_of(&format!("{}{{u:{id}}}:sessions", nodes.prefix)) == victim {
            break;
        }
    }
    nodes.start_nodes();
    let http = Http::new();
    let (a, b, c) = (nodes.node("A"), nodes.node("B"), nodes.node("C"));

    let ended = http.session_login(a, &name).await;
    let kept = http.session_login(b, &name).await;
    let to_end_later = http.session_login(c, &name).await;
    let revoked = http.token_login(a, &name).await;
    let live = http.token_login(b, &name).await;
    for node in [a, b, c] {
        for cookie in [&ended.cookie, &kept.cookie, &to_end_later.cookie] {
            assert_eq!(http.me_with_cookie(node, cookie).await, StatusCode::OK);
        }
        assert_eq!(
            http.me_with_bearer(node, &revoked.access).await,
            StatusCode::OK
        );
    }

    // Acknowledged: a logout on B, a token revocation on C, and every node has heard of both.
    // Then the primary that holds them dies. (Whether an announcement still on its way when a
    // primary dies reaches every node is another matter: a node that keeps its feed but misses
    // it enforces the revocation at its next periodic re-read of the store.)
    assert_eq!(http.logout(b, &ended).await, StatusCode::NO_CONTENT);
    http.revoke(c, &revoked.access).await;
    let since = Instant::now();
    for node in [a, b, c] {
        refused_within(
            &format!("the logged-out session on {}", node.name),
            since,
            || http.me_with_cookie(node, &ended.cookie),
        )
        .await;
        refused_within(
            &format!("the revoked token on {}", node.name),
            since,
            || http.me_with_bearer(node, &revoked.access),
        )
        .await;
    }
    let Redis::Cluster { cluster: redis, .. } = &mut nodes.redis else {
        unreachable!()
    };
    redis.kill(victim);
    let replica_port = {
        let nodes_now = redis.nodes();
        nodes_now
            .iter()
            .find(|n| {
                let dead = nodes_now.iter().find(|d| d.port == victim);
                dead.is_some_and(|d| n.primary_id.as_deref() == Some(d.id.as_str()))
            })
            .map(|n| n.port)
    };
    println!("killed the primary {victim}; its replica {replica_port:?} is to take over");

    // A login for this user needs the dead primary: 503 until the replica took over, then 200.
    let (a, b, c) = (nodes.node("A"), nodes.node("B"), nodes.node("C"));
    let deadline = Instant::now() + FAILOVER;
    let mut unavailable = 0;
    loop {
        let (status, cookie) = http.try_session_login(a, &name).await;
        match status {
            StatusCode::OK => {
                // Once the login succeeded, its session works on another node.
                let cookie = cookie.unwrap();
                answers_within(
                    "the new session",
                    StatusCode::OK,
                    &[StatusCode::SERVICE_UNAVAILABLE],
                    || http.me_with_cookie(c, &cookie),
                )
                .await;
                break;
            }
            StatusCode::SERVICE_UNAVAILABLE => unavailable += 1,
            other => panic!("a login while the primary is down: {other} (not 503)"),
        }
        // Meanwhile, nothing revoked is accepted anywhere.
        for node in [a, b, c] {
            let status = http.me_with_cookie(node, &ended.cookie).await;
            assert!(
                matches!(
                    status,
                    StatusCode::UNAUTHORIZED | StatusCode::SERVICE_UNAVAILABLE
                ),
                "the logged-out session on {} during the failover: {status}",
                node.name
            );
            let status = http.me_with_bearer(node, &revoked.access).await;
            assert!(
                matches!(
                    status,
                    StatusCode::UNAUTHORIZED | StatusCode::SERVICE_UNAVAILABLE
                ),
                "the revoked token on {} during the failover: {status}",
                node.name
            );
        }
        assert!(Instant::now() < deadline, "logins never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        unavailable > 0,
        "a login needing the dead primary was refused with 503 first"
    );
    println!("logins answered 503 {unavailable} times, then 200");

    // After the failover, on every node: what was revoked stays revoked, the rest works.
    let unavailable = [StatusCode::SERVICE_UNAVAILABLE];
    for node in [a, b, c] {
        let n = node.name;
        answers_within(
            &format!("the logged-out session on {n}"),
            StatusCode::UNAUTHORIZED,
            &unavailable,
            || http.me_with_cookie(node, &ended.cookie),
        )
        .await;
        answers_within(
            &format!("the revoked token on {n}"),
            StatusCode::UNAUTHORIZED,
            &unavailable,
            || http.me_with_bearer(node, &revoked.access),
        )
        .await;
        answers_within(
            &format!("the kept session on {n}"),
            StatusCode::OK,
            &unavailable,
            || http.me_with_cookie(node, &kept.cookie),
        )
        .await;
        answers_within(
            &format!("the live token on {n}"),
            StatusCode::OK,
            &unavailable,
            || http.me_with_bearer(node, &live.access),
        )
        .await;
        assert_eq!(
            http.refresh(node, &revoked.refresh).await.err(),
            Some(StatusCode::UNAUTHORIZED),
            "the revoked login's refresh token on {n}"
        );
    }

    // The shard has no replica now: a logout there cannot be confirmed, so it is not
    // acknowledged (503). (The primary may have applied it: the nodes drop the session from
    // their caches all the same, and a retry finds it gone.)
    assert_eq!(
        http.logout(a, &to_end_later).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "a logout no replica can confirm"
    );
    // The old primary comes back as a replica: logouts are confirmed again.
    let Redis::Cluster { cluster: redis, .. } = &mut nodes.redis else {
        unreachable!()
    };
    redis.restart(victim);
    tokio::task::block_in_place(|| redis.wait_until_healthy());
    let (a, b, c) = (nodes.node("A"), nodes.node("B"), nodes.node("C"));
    let deadline = Instant::now() + FAILOVER;
    loop {
        match http.logout(a, &to_end_later).await {
            StatusCode::NO_CONTENT | StatusCode::UNAUTHORIZED => break,
            StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("a logout once the replica is back: {other}"),
        }
        assert!(Instant::now() < deadline, "logouts never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new logout is confirmed too. The returning replica may still be catching up (a full
    // resynchronisation on a loaded machine): until it answers WAIT, the logout is a 503, and a
    // retry of one the primary applied meanwhile finds the session gone (401).
    let login = http.session_login(b, &name).await;
    let deadline = Instant::now() + FAILOVER;
    let mut unconfirmed = 0;
    loop {
        match http.logout(c, &login).await {
            StatusCode::NO_CONTENT => break,
            StatusCode::UNAUTHORIZED if unconfirmed > 0 => break,
            StatusCode::SERVICE_UNAVAILABLE => unconfirmed += 1,
            other => panic!("a logout with a replica to confirm it: {other}"),
        }
        assert!(
            Instant::now() < deadline,
            "a logout with a replica to confirm it was never confirmed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("a logout with the replica back: confirmed after {unconfirmed} unconfirmed tries");
    for node in [a, b, c] {
        for (what, cookie) in [("retried", &to_end_later.cookie), ("new", &login.cookie)] {
            answers_within(
                &format!("the {what} logged-out session on {}", node.name),
                StatusCode::UNAUTHORIZED,
                &unavailable,
                || http.me_with_cookie(node, cookie),
            )
            .await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Account deletion across nodes

/// The snapshot a resource server is sent when it connects to `node`'s revocation stream.
async fn stream_snapshot(node: &Node) -> Value {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut response = client
        .get(format!("{}/v1/revocations/stream", node.base))
        .basic_auth(STREAM_CLIENT, Some(STREAM_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the stream of {}",
        node.name
    );
    let read = async {
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                if event.lines().any(|l| l == "event: snapshot") {
                    let data: String = event
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim)
                        .collect();
                    return serde_json::from_str::<Value>(&data).expect("a JSON snapshot");
                }
            }
        }
        panic!("the stream of {} ended before its snapshot", node.name)
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("a snapshot first")
}

/// A user deleted through one node is refused by every node, in every model, at once: the
/// session cookie, the hybrid cookies, the bearer token and its refresh token, forward-auth,
/// and the old password; resource servers following any node's revocation stream are told to
/// refuse the user's tokens. The freed username registers again from nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_an_account_on_one_node_refuses_it_on_every_node() {
    require_services().await;
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::new(Redis::Shared);
    cluster.add_admin("root");
    cluster.start_nodes();
    let http = Http::new();
    let (a, b, c) = (cluster.node("A"), cluster.node("B"), cluster.node("C"));
    let nodes = [a, b, c];
    let admin = http.token_login_as(a, "root", ADMIN_PASSWORD).await;

    http.register(a, "dora").await;
    let session = http.session_login(b, "dora").await;
    let user_id = session.user_id.clone();
    let pair = http.token_login(c, "dora").await;
    let hybrid = http.hybrid_login(a, "dora").await;
    let hybrid_cookies = format!("{}; {}", hybrid.access_cookie, hybrid.refresh_cookie);
    let caller = http.token_login(b, "dora").await;
    // Every node has the account and its logins in its near caches before the deletion.
    for node in nodes {
        assert_eq!(
            http.me_with_cookie(node, &session.cookie).await,
            StatusCode::OK
        );
        assert_eq!(
            http.me_with_bearer(node, &pair.access).await,
            StatusCode::OK
        );
        assert_eq!(
            http.me_with_cookie(node, &hybrid.access_cookie).await,
            StatusCode::OK
        );
    }

    // Deleted on B by its owner.
    let since = Instant::now();
    let r = http
        .0
        .delete(format!("{}/v1/account", b.base))
        .bearer_auth(&caller.access)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "deletion on B");

    for node in nodes {
        let what = |credential: &str| format!("{credential} on {} after the deletion", node.name);
        refused_within(&what("the session cookie"), since, || {
            http.me_with_cookie(node, &session.cookie)
        })
        .await;
        refused_within(&what("the bearer token"), since, || {
            http.me_with_bearer(node, &pair.access)
        })
        .await;
        refused_within(&what("the hybrid cookie"), since, || {
            http.me_with_cookie(node, &hybrid.access_cookie)
        })
        .await;
        refused_within(
            &what("forward-auth with the bearer token"),
            since,
            || async {
                http.0
                    .get(format!("{}/v1/verify", node.base))
                    .bearer_auth(&pair.access)
                    .send()
                    .await
                    .unwrap()
                    .status()
            },
        )
        .await;
        refused_within(
            &what("forward-auth with the session cookie"),
            since,
            || async {
                http.0
                    .get(format!("{}/v1/verify", node.base))
                    .header(COOKIE, &session.cookie)
                    .send()
                    .await
                    .unwrap()
                    .status()
            },
        )
        .await;
        assert_eq!(
            http.refresh(node, &pair.refresh).await.err(),
            Some(StatusCode::UNAUTHORIZED),
            "{}",
            what("the refresh token")
        );
        let r = http
            .0
            .post(format!("{}/v1/hybrid/refresh", node.base))
            .header(COOKIE, &hybrid_cookies)
            .header("X-CSRF-Token", &hybrid.csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{}",
            what("the hybrid refresh")
        );
        let r = http
            .0
            .post(format!("{}/v1/token", node.base))
            .json(&json!({"username": "dora", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{}",
            what("the password")
        );
        // A resource server connecting to this node is told to refuse the user's tokens.
        let snapshot = stream_snapshot(node).await;
        assert!(
            snapshot["users"]
                .as_array()
                .is_some_and(|users| users.iter().any(|u| u["sub"] == user_id.as_str())),
            "the stream of {} carries the user's not-before: {snapshot}",
            node.name
        );
    }

    // The audit log, read on another node, keeps the id and not the name.
    let r = http
        .0
        .get(format!("{}/v1/admin/events?limit=200", c.base))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let log: Value = r.json().await.unwrap();
    let events = log["events"].as_array().unwrap();
    let deleted = events
        .iter()
        .find(|e| e["kind"] == "account_deleted")
        .unwrap_or_else(|| panic!("the deletion is recorded: {log}"));
    assert_eq!(deleted["user_id"], user_id.as_str());
    // Up to the deletion; the failed logins the test made afterwards name a username that
    // belongs to nobody, as any failed login does.
    let until_deleted: Vec<&Value> = events
        .iter()
        .filter(|e| e["id"].as_i64() <= deleted["id"].as_i64())
        .collect();
    assert!(
        until_deleted
            .iter()
            .any(|e| e["user_id"] == user_id.as_str() && e["kind"] == "login_succeeded"),
        "the user's events stay, by id: {log}"
    );
    assert!(
        !serde_json::to_string(&until_deleted)
            .unwrap()
            .contains("\"dora\""),
        "no username in the audit log: {log}"
    );
    // Nothing of the user is left in Redis.
    let keys = cluster.redis_keys().unwrap();
    assert!(
        !keys.iter().any(|k| k.contains(&user_id)),
        "Redis keys of the deleted user remain: {keys:?}"
    );

    // The name registers again, on another node, from nothing.
    http.register(c, "dora").await;
    let fresh = http.session_login(a, "dora").await;
    assert_ne!(fresh.user_id, user_id);
    for node in nodes {
        assert_eq!(
            http.me_with_cookie(node, &fresh.cookie).await,
            StatusCode::OK,
            "the new account works on {}",
            node.name
        );
        assert_eq!(
            http.me_with_cookie(node, &session.cookie).await,
            StatusCode::UNAUTHORIZED,
            "the old session stays refused on {}",
            node.name
        );
    }
}

/// DPoP across nodes: a proof accepted by one node is refused by every other (the replay state
/// is shared), a token bound on one node needs its key's proofs on all of them, and a refresh
/// token stolen without the key is refused wherever it is tried, and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dpop_proof_replayed_to_another_node_is_refused() {
    use tessera_dpop::ProofKey;

    require_services().await;
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::new(Redis::Shared);
    cluster.add_admin("root");
    cluster.start_nodes();
    let http = Http::new();
    let (a, b, c) = (cluster.node("A"), cluster.node("B"), cluster.node("C"));
    http.register(a, "erin").await;
    let key = ProofKey::generate_es256().unwrap();
    // Every node is reached through the same public URL: proofs name it, not the node.
    let proof = |method: &str, path: &str, token: Option<&str>| {
        key.proof(method, &format!("{PUBLIC_URL}{path}"), token, None)
            .unwrap()
    };

    let r = http
        .0
        .post(format!("{}/v1/token", a.base))
        .header("dpop", proof("POST", "/v1/token", None))
        .json(&json!({"username": "erin", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "DPoP login on A");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();

    let me = |node: &Node, proof: String| {
        http.0
            .get(format!("{}/v1/me", node.base))
            .header("authorization", format!("DPoP {access}"))
            .header("dpop", proof)
            .send()
    };
    let once = proof("GET", "/v1/me", Some(&access));
    assert_eq!(me(a, once.clone()).await.unwrap().status(), StatusCode::OK);
    for node in [b, c, a] {
        assert_eq!(
            me(node, once.clone()).await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "the proof A accepted, replayed on {}",
            node.name
        );
    }
    for node in [b, c] {
        assert_eq!(
            me(node, proof("GET", "/v1/me", Some(&access)))
                .await
                .unwrap()
                .status(),
            StatusCode::OK,
            "a fresh proof on {}",
            node.name
        );
        assert_eq!(
            http.me_with_bearer(node, &access).await,
            StatusCode::UNAUTHORIZED,
            "the bound token as a bearer token on {}",
            node.name
        );
    }

    // The refresh token, stolen: useless on any node without the key.
    for node in [b, c] {
        let r = http
            .0
            .post(format!("{}/v1/token/refresh", node.base))
            .json(&json!({"refresh_token": refresh}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "on {}", node.name);
    }
    let admin = http.token_login_as(c, "root", ADMIN_PASSWORD).await;
    let events: Value = http
        .0
        .get(format!("{}/v1/admin/events?limit=200", a.base))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refused = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "dpop_binding_refused")
        .count();
    assert_eq!(refused, 2, "{events}");
    // Its owner refreshes on A with the key; the proof for that refresh is then spent on B too.
    let refresh_proof = proof("POST", "/v1/token/refresh", None);
    let refreshed = http
        .0
        .post(format!("{}/v1/token/refresh", a.base))
        .header("dpop", &refresh_proof)
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    let next: Value = refreshed.json().await.unwrap();
    let r = http
        .0
        .post(format!("{}/v1/token/refresh", b.base))
        .header("dpop", &refresh_proof)
        .json(&json!({"refresh_token": next["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "the refresh's proof replayed on B"
    );
}

/// Second factors across nodes: a login challenge made on one node completes on another (it
/// lives in the shared database), and a step-up of a session on one node is seen by the others
/// at once (their near caches drop the session), so a privileged route refused there before
/// is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_factor_works_across_nodes() {
    require_services().await;
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::new(Redis::Shared);
    cluster.start_nodes();
    let http = Http::new();
    let (a, b, c) = (cluster.node("A"), cluster.node("B"), cluster.node("C"));
    let now = || {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        tessera_core::Timestamp::from_unix_millis(i64::try_from(ms).unwrap())
    };

    http.register(a, "erin").await;
    let session = http.session_login(a, "erin").await;
    let post = |node: &Node, path: &str| {
        http.0
            .post(format!("{}{path}", node.base))
            .header(COOKIE, &session.cookie)
            .header("X-CSRF-Token", &session.csrf)
    };
    let r = post(a, "/v1/account/totp").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "TOTP enrolment on A");
    let body: Value = r.json().await.unwrap();
    let secret = tessera_core::TotpSecret::from_base32(body["secret"].as_str().unwrap()).unwrap();
    let r = post(a, "/v1/account/totp/confirm")
        .json(&json!({"code": secret.code_at(now()), "current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "TOTP confirmation on A");
    let body: Value = r.json().await.unwrap();
    let recovery = body["recovery_codes"][0].as_str().unwrap().to_owned();

    // The session logged in with the password alone: B refuses it a privileged route (and
    // keeps the session in its near cache).
    let r = post(b, "/v1/account/totp/recovery-codes")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "privileged route on B"
    );

    // A challenge made on B completes on C, with the code of the next time step (the current
    // one was used by the confirmation; one step of skew is accepted).
    let r = http
        .0
        .post(format!("{}/v1/token", b.base))
        .json(&json!({"username": "erin", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["second_factor_required"], true, "{body}");
    let next_step = now().saturating_add(Duration::from_secs(30));
    let r = http
        .0
        .post(format!("{}/v1/login/second-factor", c.base))
        .json(&json!({"challenge": body["challenge"], "code": secret.code_at(next_step)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "challenge of B completed on C");
    let pair: Value = r.json().await.unwrap();
    let access = pair["access_token"].as_str().unwrap();
    let claims = access.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["acr"], "aal2");

    // The session steps up on C (with a recovery code); B lets it through soon after.
    let r = post(c, "/v1/account/step-up")
        .json(&json!({"code": recovery}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "step-up on C");
    let since = Instant::now();
    loop {
        let status = post(b, "/v1/account/totp/recovery-codes")
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            since.elapsed() < PATIENCE,
            "B still refuses the stepped-up session {PATIENCE:?} later"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Passkeys across nodes. Every node has the same `public_url` ([`PUBLIC_URL`]), as nodes
/// behind one load balancer do, and as they must: it is the tokens' issuer too. So they have
/// one relying party (`localhost`) and one origin, where the user's browser is, and an answer
/// made for one node's options is one every node accepts. (Listing one node's origin in the
/// others' `http.trusted_origins` instead would need a `public_url`, so an issuer, per node.)
/// A ceremony is sealed, not stored: options from one node are finished on another. It works
/// once across all of them: its use is recorded in Redis, where DPoP proofs are, so an answer
/// replayed to any other node is refused, for a registration, a login's second factor, a
/// step-up and a passwordless login.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_passkey_ceremony_works_once_across_nodes() {
    require_services().await;
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::new(Redis::Shared);
    // As an operator does before the nodes start: this also makes the first signing key, which
    // nodes started at once on an empty database would each make on their own (and a token of
    // one would be refused by the others until they reload their keys).
    cluster.add_admin("root");
    cluster.start_nodes();
    let http = Http::new();
    let (a, b, c) = (cluster.node("A"), cluster.node("B"), cluster.node("C"));
    let mut key = harness::Passkey::new(PUBLIC_URL);
    let post = |node: &Node, path: &str| http.0.post(format!("{}{path}", node.base));
    let problem_type = async |r: reqwest::Response| {
        let body: Value = r.json().await.unwrap();
        body["type"].as_str().unwrap_or_default().to_owned()
    };

    http.register(a, "fern").await;
    let password_only = http.token_login(a, "fern").await;

    // Registered with options from A, the answer finished on B.
    let r = post(a, "/v1/account/passkeys/options")
        .bearer_auth(&password_only.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "registration options on A");
    let registration: Value = r.json().await.unwrap();
    assert_eq!(
        registration["options"]["publicKey"]["rp"]["id"],
        "localhost"
    );
    let created = key.create(&registration["options"]);
    let register = json!({
        "ceremony": registration["ceremony"],
        "credential": created,
        "name": "Laptop",
        "current_password": PASSWORD,
    });
    let r = post(b, "/v1/account/passkeys")
        .bearer_auth(&password_only.access)
        .json(&register)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "A's registration on B: {body}");
    for node in [a, b, c] {
        let list: Value = http
            .0
            .get(format!("{}/v1/account/passkeys", node.base))
            .bearer_auth(&password_only.access)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            list["passkeys"].as_array().map(Vec::len),
            Some(1),
            "the passkey on {}: {list}",
            node.name
        );
    }

    // A password login on A is answered with passkey options; B completes it, and the very
    // same request is refused by A and C afterwards.
    let password_login = async |node: &Node| {
        let r = post(node, "/v1/token")
            .json(&json!({"username": "fern", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "password login on {}",
            node.name
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["second_factor_required"], true, "{body}");
        assert!(body["passkey"]["ceremony"].is_string(), "{body}");
        body
    };
    let completion = |challenge: &Value, credential: &Value| {
        json!({
            "challenge": challenge["challenge"],
            "ceremony": challenge["passkey"]["ceremony"],
            "credential": credential,
        })
    };
    let challenge = password_login(a).await;
    let answer = completion(&challenge, &key.get(&challenge["passkey"]["options"]));
    let r = post(b, "/v1/login/second-factor/passkey")
        .json(&answer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "A's login completed on B");
    let pair: Value = r.json().await.unwrap();
    let fresh = pair["access_token"].as_str().unwrap().to_owned();
    for node in [a, c] {
        let r = post(node, "/v1/login/second-factor/passkey")
            .json(&answer)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "the completion replayed on {}",
            node.name
        );
    }

    // A replayed answer is refused twice over: by its ceremony, and by the authenticator's
    // signature counter, which it does not move forward. Synced passkeys have no counter (it
    // stays 0), and the software one has: so each ceremony is also spent on one node by an
    // answer that does not verify (made on another origin; the counter is not recorded), and
    // a right answer to it is then refused on another node, by the ceremony alone.
    let elsewhere = webauthn_rs::prelude::Url::parse("http://localhost:9").unwrap();

    // The login's ceremony, spent on C, is refused on A while the login's challenge is open.
    let challenge = password_login(a).await;
    let phished = key.get_on(&elsewhere, &challenge["passkey"]["options"]);
    let r = post(c, "/v1/login/second-factor/passkey")
        .json(&completion(&challenge, &phished))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "another origin's answer"
    );
    assert_eq!(
        problem_type(r).await,
        "urn:tessera:problem:invalid-second-factor"
    );
    let right = key.get(&challenge["passkey"]["options"]);
    let r = post(a, "/v1/login/second-factor/passkey")
        .json(&completion(&challenge, &right))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a login's ceremony spent on C, on A"
    );
    assert_eq!(
        problem_type(r).await,
        "urn:tessera:problem:invalid-second-factor"
    );

    // The registration's ceremony was spent on B: its answer replayed to A by a login that may
    // register passkeys (its second factor is fresh) is refused for the ceremony (not as a
    // passkey registered already).
    let r = post(a, "/v1/account/passkeys")
        .bearer_auth(&fresh)
        .json(&register)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "the registration replayed on A"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["field"], "ceremony", "{body}");

    // Step-up: options from B, answered on A; the same request is refused on B and C.
    let step_up_options = async |node: &Node| {
        let r = post(node, "/v1/account/step-up/passkey/options")
            .bearer_auth(&password_only.access)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "step-up options on {}",
            node.name
        );
        r.json::<Value>().await.unwrap()
    };
    let step_up = async |node: &Node, body: &Value| {
        let r = post(node, "/v1/account/step-up/passkey")
            .bearer_auth(&password_only.access)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json::<Value>().await.unwrap())
    };
    let options = step_up_options(b).await;
    let answer =
        json!({"ceremony": options["ceremony"], "credential": key.get(&options["options"])});
    let (status, stepped) = step_up(a, &answer).await;
    assert_eq!(status, StatusCode::OK, "step-up on A: {stepped}");
    assert_eq!(
        stepped["authentication"]["amr"],
        json!(["pwd", "hwk", "mfa"])
    );
    for node in [b, c] {
        let (status, body) = step_up(node, &answer).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "the step-up replayed on {}",
            node.name
        );
        assert_eq!(body["type"], "urn:tessera:problem:invalid-second-factor");
    }
    // Spent on A by another origin's answer, the ceremony is refused on B.
    let options = step_up_options(c).await;
    let phished = json!({"ceremony": options["ceremony"], "credential": key.get_on(&elsewhere, &options["options"])});
    let (status, _) = step_up(a, &phished).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "another origin's step-up");
    let right =
        json!({"ceremony": options["ceremony"], "credential": key.get(&options["options"])});
    let (status, body) = step_up(b, &right).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a step-up ceremony spent on A, on B"
    );
    assert_eq!(body["type"], "urn:tessera:problem:invalid-second-factor");

    // A passwordless login: options from C, answered on A; the same request is refused on B
    // and C.
    let user_handle = &registration["options"]["publicKey"]["user"]["id"];
    let passwordless_options = async || {
        let r = post(c, "/v1/login/passkey/options").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "passwordless options on C");
        r.json::<Value>().await.unwrap()
    };
    let passwordless = async |node: &Node, body: &Value| {
        let r = post(node, "/v1/login/passkey")
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json::<Value>().await.unwrap())
    };
    let options = passwordless_options().await;
    let answer = json!({
        "ceremony": options["ceremony"],
        "credential": key.get_discoverable(&options["options"], &created["id"], user_handle),
        "model": "token",
    });
    let (status, pair) = passwordless(a, &answer).await;
    assert_eq!(status, StatusCode::OK, "passwordless login on A: {pair}");
    let claims = pair["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["amr"], json!(["hwk", "user", "mfa"]));
    for node in [b, c] {
        let (status, body) = passwordless(node, &answer).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "the passwordless login replayed on {}",
            node.name
        );
        assert_eq!(body["type"], "urn:tessera:problem:invalid-credentials");
    }
    // Spent on A by another origin's answer, the ceremony is refused on B.
    let options = passwordless_options().await;
    let phished = json!({
        "ceremony": options["ceremony"],
        "credential": key.get_discoverable_on(&elsewhere, &options["options"], &created["id"], user_handle),
        "model": "token",
    });
    let (status, _) = passwordless(a, &phished).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "another origin's login");
    let right = json!({
        "ceremony": options["ceremony"],
        "credential": key.get_discoverable(&options["options"], &created["id"], user_handle),
        "model": "token",
    });
    let (status, body) = passwordless(b, &right).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a passwordless ceremony spent on A, on B"
    );
    assert_eq!(body["type"], "urn:tessera:problem:invalid-credentials");
    // The same answer with fresh options is taken: the refusal was the ceremony's.
    let options = passwordless_options().await;
    let fresh_answer = json!({
        "ceremony": options["ceremony"],
        "credential": key.get_discoverable(&options["options"], &created["id"], user_handle),
        "model": "token",
    });
    let (status, body) = passwordless(b, &fresh_answer).await;
    assert_eq!(status, StatusCode::OK, "a passwordless login on B: {body}");
}

/// Three nodes started at the same moment on an empty store may each make a first signing key
/// (none finds an active one). Each announces the key it made, and each reads the keys again
/// once it listens to the feed, so a token signed on any node verifies on every other one at
/// its first use, not only after a background reload that the first such request would miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_started_together_on_an_empty_store_accept_each_others_tokens_at_once() {
    require_services().await;
    let _turn = ONE_AT_A_TIME.lock().await;
    for round in 0..3 {
        let mut cluster = Cluster::new(Redis::Shared);
        cluster.start_nodes();
        let http = Http::new();
        let names = ["A", "B", "C"];
        http.register(cluster.node("A"), "frank").await;
        for signer in names {
            let pair = http.token_login(cluster.node(signer), "frank").await;
            for verifier in names {
                assert_eq!(
                    http.me_with_bearer(cluster.node(verifier), &pair.access)
                        .await,
                    StatusCode::OK,
                    "round {round}: a token of {signer} at its first use on {verifier}"
                );
            }
        }
    }
}
