//! The `tessera` binary as an operator runs it: configuration sources and their precedence, errors
//! that say where a bad value came from, the SQLite file, and graceful shutdown.

mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use harness::{NO_ENV, Node, run, run_with_input};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

/// Runs `tessera serve` expecting it to refuse to start; returns its stderr.
fn refuses_to_start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(
        dir,
        &[&["serve", "--listen", "127.0.0.1:0"], args].concat(),
        env,
    );
    assert!(
        !out.status.success(),
        "tessera started with a bad configuration"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn register_and_login(client: &reqwest::Client, base: &str, username: &str) -> StatusCode {
    let r = client
        .post(format!("{base}/v1/users"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    login(client, base, username, None).await
}

async fn login(
    client: &reqwest::Client,
    base: &str,
    username: &str,
    origin: Option<&str>,
) -> StatusCode {
    let mut rb = client
        .post(format!("{base}/v1/session/login"))
        .json(&json!({"username": username, "password": PASSWORD}));
    if let Some(o) = origin {
        rb = rb.header("origin", o);
    }
    rb.send().await.unwrap().status()
}

#[tokio::test]
async fn serves_on_the_embedded_default_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let server = Node::start(dir.path(), &[], NO_ENV);
    let client = reqwest::Client::new();
    assert_eq!(
        register_and_login(&client, &server.base, "alice").await,
        StatusCode::OK
    );
    let db = dir.path().join("tessera.db");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&db).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "the database holds password hashes: owner only"
    );
    let health: Value = client
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let status = server.stop();
    assert!(status.success(), "exit status {status}");

    // Accounts survive a restart.
    let server = Node::start(dir.path(), &[], NO_ENV);
    assert_eq!(
        login(&client, &server.base, "alice", None).await,
        StatusCode::OK
    );
    let log = server.log_text();
    assert!(!log.contains(PASSWORD), "a password reached the log");
    assert!(server.stop().success());
}

/// `/metrics` is served on the management listener only, never on the public port.
#[tokio::test]
async fn metrics_are_on_the_management_listener_only() {
    let dir = tempfile::tempdir().unwrap();
    let port = harness::free_port();
    let management = format!("127.0.0.1:{port}");
    let server = Node::start(
        dir.path(),
        &[],
        &[("TESSERA_HTTP__MANAGEMENT_LISTEN", management.as_str())],
    );
    let client = reqwest::Client::new();
    let public = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let scraped = client
        .get(format!("http://{management}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
    assert!(server.stop().success());
}

/// The playground is on for a loopback listener, with its attacker page on another port; off when
/// configured off (404 problems, no attacker listener); a non-loopback attacker address is refused.
#[tokio::test]
async fn the_playground_is_on_for_loopback_and_off_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let server = Node::start(dir.path(), &["--database", "memory"], NO_ENV);
    let page = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let log = server.log_text();
    let attacker = log
        .split("its attacker page on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no attacker page in the log:\n{log}"))
        .trim_end_matches('/')
        .to_owned();
    assert!(attacker.starts_with("http://127.0.0.1:"), "{attacker}");
    assert_ne!(attacker, server.base);
    let html = page.text().await.unwrap();
    assert!(html.contains(&format!("content=\"{attacker}\"")), "{html}");
    let attacker_page = client.get(format!("{attacker}/")).send().await.unwrap();
    assert_eq!(attacker_page.status(), StatusCode::OK);
    let csp = attacker_page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors http://localhost:8080"),
        "{csp}"
    );
    assert!(server.stop().success());

    let server = Node::start(
        dir.path(),
        &["--database", "memory"],
        &[("TESSERA_PLAYGROUND", "false")],
    );
    for path in [
        "/",
        "/playground.js",
        "/playground.css",
        "/playground/held?model=token",
    ] {
        let r = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    assert!(!server.log_text().contains("attacker page"));
    assert!(server.stop().success());

    let err = refuses_to_start(
        dir.path(),
        &["--database", "memory"],
        &[("TESSERA_PLAYGROUND__ATTACKER_LISTEN", "0.0.0.0:9001")],
    );
    assert!(err.contains("playground.attacker_listen"), "{err}");
    assert!(err.contains("not a loopback address"), "{err}");
}

#[tokio::test]
async fn flags_beat_environment_beat_file_beat_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tessera.toml"),
        "public_url = \"http://file.example\"\ndatabase = \"memory\"\n[http]\nbody_limit = 2048\n",
    )
    .unwrap();
    let client = reqwest::Client::new();
    // The public URL's origin is the one trusted for logins from a browser: a login from a trusted
    // origin with an unknown user is a 401, from any other origin a 403.
    let trusted = |base: String, origin: &'static str| {
        let client = client.clone();
        async move { login(&client, &base, "nobody", Some(origin)).await == StatusCode::UNAUTHORIZED }
    };

    let server = Node::start(dir.path(), &[], NO_ENV);
    assert!(trusted(server.base.clone(), "http://file.example").await);
    // The nested file value applies: a 3 KB body is over the 2 KB limit.
    let big = client
        .post(format!("{}/v1/users", server.base))
        .json(&json!({"username": "a", "password": "p".repeat(3000)}))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    drop(server);

    let env = [
        ("TESSERA_PUBLIC_URL", "http://env.example"),
        ("TESSERA_HTTP__BODY_LIMIT", "8192"),
    ];
    let server = Node::start(dir.path(), &[], &env);
    assert!(trusted(server.base.clone(), "http://env.example").await);
    assert!(!trusted(server.base.clone(), "http://file.example").await);
    let big = client
        .post(format!("{}/v1/users", server.base))
        .json(&json!({"username": "a", "password": "p".repeat(3000)}))
        .send()
        .await
        .unwrap();
    assert_ne!(
        big.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "the environment beats the file"
    );
    drop(server);

    let server = Node::start(dir.path(), &["--public-url", "http://flag.example"], &env);
    assert!(trusted(server.base.clone(), "http://flag.example").await);
    assert!(!trusted(server.base.clone(), "http://env.example").await);
    drop(server);

    // An explicit --config file replaces ./tessera.toml.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        "public_url = \"http://other.example\"\ndatabase = \"memory\"\n",
    )
    .unwrap();
    let server = Node::start(dir.path(), &["--config", other.to_str().unwrap()], NO_ENV);
    assert!(trusted(server.base.clone(), "http://other.example").await);
}

#[test]
fn bad_values_are_reported_with_their_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tessera.toml");

    std::fs::write(&file, "[sessions]\nidle_timeout = \"soon\"\n").unwrap();
    let err = refuses_to_start(dir.path(), &[], &[]);
    assert!(err.contains("sessions.idle_timeout"), "{err}");
    assert!(err.contains("tessera.toml"), "{err}");

    std::fs::write(&file, "[sessions]\nidel_timeout = \"5m\"\n").unwrap();
    let err = refuses_to_start(dir.path(), &[], &[]);
    assert!(err.contains("idel_timeout"), "{err}");

    std::fs::write(
        &file,
        "[passwords.argon2]\nmemory_kib = 1024\niterations = 2\nparallelism = 1\n",
    )
    .unwrap();
    let err = refuses_to_start(dir.path(), &[], &[]);
    assert!(err.contains("passwords.argon2"), "{err}");
    assert!(err.contains("tessera.toml"), "{err}");
    std::fs::remove_file(&file).unwrap();

    let err = refuses_to_start(
        dir.path(),
        &[],
        &[("TESSERA_SESSIONS__MAX_DATA_BYTES", "lots")],
    );
    assert!(err.contains("sessions.max_data_bytes"), "{err}");
    assert!(err.to_lowercase().contains("environment"), "{err}");

    let err = refuses_to_start(dir.path(), &[], &[("TESSERA_PUBLIC_URL", "ftp://x")]);
    assert!(err.contains("public_url"), "{err}");
    assert!(err.to_lowercase().contains("environment"), "{err}");

    let err = refuses_to_start(dir.path(), &["--database", "mysql://db"], &[]);
    assert!(err.contains("database"), "{err}");

    let err = refuses_to_start(dir.path(), &["--config", "/nonexistent/tessera.toml"], &[]);
    assert!(err.contains("does not exist"), "{err}");

    std::fs::write(&file, "[accounts]\nregistration = \"sometimes\"\n").unwrap();
    let err = refuses_to_start(dir.path(), &[], &[]);
    assert!(err.contains("accounts.registration"), "{err}");
}

/// Sends the head of a registration and part of its body; returns the connection.
async fn half_sent_request(base: &str) -> (tokio::net::TcpStream, String) {
    use tokio::io::AsyncWriteExt;
    let addr = base.trim_start_matches("http://");
    let body = json!({"username": "late", "password": PASSWORD}).to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/users HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    stream.flush().await.unwrap();
    (stream, body[10..].to_owned())
}

#[tokio::test]
async fn a_request_in_flight_at_sigterm_is_finished() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let server = Node::start(dir.path(), &["--database", "memory"], NO_ENV);
    let (mut stream, rest) = half_sent_request(&server.base).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let status = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(15)))
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_stuck_client_holds_shutdown_only_for_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let server = Node::start(
        dir.path(),
        &["--database", "memory"],
        &[
            ("TESSERA_HTTP__SHUTDOWN_GRACE", "1s"),
            ("TESSERA_HTTP__BODY_TIMEOUT", "1h"),
            ("TESSERA_HTTP__REQUEST_TIMEOUT", "1h"),
        ],
    );
    let (_stream, _rest) = half_sent_request(&server.base).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.signal("-INT");
    let status = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(status.success());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "stopped before the grace period"
    );
}

/// Runs `tessera keys …` in `dir`; returns (success, stdout, stderr).
fn keys(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = run(dir, &[&["keys"], args].concat(), env);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn keys_are_listed_rotated_and_retired_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = keys(dir.path(), &["list"], &[]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert!(
        rows[0].contains("EdDSA") && rows[0].contains("active"),
        "{out}"
    );
    let key_file = dir.path().join("tessera.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the master key file is owner-only");

    let (ok, new_kid, err) = keys(dir.path(), &["rotate"], &[]);
    assert!(ok, "{err}");
    let new_kid = new_kid.trim().to_owned();
    let (_, out, _) = keys(dir.path(), &["list"], &[]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&new_kid) && l.contains("active")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.contains("rotated")), "{out}");

    // A running server picks up a retirement made from the command line.
    let server = Node::start(
        dir.path(),
        &[],
        &[("TESSERA_SESSIONS__SWEEP_INTERVAL", "200ms")],
    );
    let client = reqwest::Client::new();
    client
        .post(format!("{}/v1/users", server.base))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let pair: Value = client
        .post(format!("{}/v1/token", server.base))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let me = |token: String| {
        let client = client.clone();
        let url = format!("{}/v1/me", server.base);
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(me(access.clone()).await, StatusCode::OK);
    let (ok, _, err) = keys(dir.path(), &["retire", &new_kid], &[]);
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while me(access.clone()).await == StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "the server kept accepting a token of a retired key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(server);

    let (ok, _, err) = keys(dir.path(), &["retire", "k_nope"], &[]);
    assert!(!ok);
    assert!(err.contains("k_nope"), "{err}");

    // Another master key cannot open the stored keys: a clear error, not a panic.
    let other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let (ok, _, err) = keys(
        dir.path(),
        &["list"],
        &[("TESSERA_TOKENS__MASTER_KEY", other)],
    );
    assert!(!ok);
    assert!(err.contains("master key"), "{err}");
}

#[tokio::test]
async fn the_first_admin_is_made_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_with_input(
        dir.path(),
        &["user", "add", "Root", "--admin"],
        NO_ENV,
        &format!("{PASSWORD}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .starts_with("usr_")
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains(PASSWORD));

    // A weak password is refused with the policy's reason.
    let out = run_with_input(dir.path(), &["user", "add", "weak"], NO_ENV, "password1\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("common"));

    let server = Node::start(dir.path(), &[], NO_ENV);
    let client = reqwest::Client::new();
    let pair: Value = client
        .post(format!("{}/v1/token", server.base))
        .json(&json!({"username": "root", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let users = client
        .get(format!("{}/v1/admin/users", server.base))
        .bearer_auth(pair["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(users.status(), StatusCode::OK);
    let users: Value = users.json().await.unwrap();
    assert_eq!(users["users"][0]["username"], "root");
    assert_eq!(users["users"][0]["roles"], json!(["admin"]));
}

#[test]
fn init_writes_a_configuration_from_the_three_questions() {
    let dir = tempfile::tempdir().unwrap();
    // init may refuse (the file exists) and exit before reading: a broken pipe is fine.
    let init = |answers: &str, extra: &[&str]| {
        run_with_input(dir.path(), &[&["init"], extra].concat(), NO_ENV, answers)
    };
    let out = init("n\nn\ny\n", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("session"));
    let written = std::fs::read_to_string(dir.path().join("tessera.toml")).unwrap();
    assert!(written.contains("registration = \"closed\""), "{written}");
    assert!(
        written.contains("database = \"sqlite://tessera.db\""),
        "{written}"
    );
    // It does not overwrite without --force, and a bad answer writes nothing.
    assert!(!init("y\ny\ny\n", &[]).status.success());
    assert!(!init("y\nperhaps\ny\n", &["--force"]).status.success());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tessera.toml")).unwrap(),
        written
    );
    assert!(init("y\ny\nn\n", &["--force"]).status.success());
    let replaced = std::fs::read_to_string(dir.path().join("tessera.toml")).unwrap();
    assert!(replaced.contains("store = \"redis\""), "{replaced}");
    // The server accepts what init wrote (it refuses to start on a bad value).
    let server = Node::start(
        dir.path(),
        &["--database", "memory", "--config", "tessera.toml"],
        &[("TESSERA_SESSIONS__STORE", "database")],
    );
    assert!(server.stop().success());
}
