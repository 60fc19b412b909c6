//! The operator's commands against the real binary: `tessera user …`, `tessera sessions …`,
//! `tessera keys list --json`, `tessera completions` and `tessera backup`, on a stopped server and
//! beside a running one, which applies what they change at once (the SQLite file's change feed).

mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use harness::{NO_ENV, Node, add_user, run, run_with_input};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a different horse entirely";
/// How long a change made from the command line may take to reach the running server: the feed
/// is polled every 100 ms; this only bounds a failure.
const AT_ONCE: Duration = Duration::from_secs(5);

/// Runs `tessera ARGS` in `dir`; returns (success, stdout, stderr).
fn cli(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = run(dir, args, NO_ENV);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `tessera ARGS`, which must succeed; returns its stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let (success, out, err) = cli(dir, args);
    assert!(success, "tessera {args:?} failed: {err}");
    out
}

/// Runs `tessera ARGS --json`, which must succeed with one JSON document on stdout.
fn json_of(dir: &Path, args: &[&str]) -> Value {
    let out = ok(dir, &[args, &["--json"]].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Runs `tessera ARGS`, which must fail; returns its stderr.
fn refused(dir: &Path, args: &[&str]) -> String {
    let (success, _, err) = cli(dir, args);
    assert!(!success, "tessera {args:?} succeeded");
    err
}

/// Waits (a bounded time) until `condition` holds: what the command line changed reaches the
/// running server through the change feed, not at its next periodic re-read (30 s).
async fn at_once<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + AT_ONCE;
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}: not within {AT_ONCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A session login; returns the `Cookie` header that carries it.
async fn session_login(client: &reqwest::Client, server: &Node, user: &str, pw: &str) -> String {
    let r = client
        .post(server.url("/v1/session/login"))
        .json(&json!({"username": user, "password": pw}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "session login of {user}");
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-tessera="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned()
}

/// A token login; returns the token pair.
async fn token_login(client: &reqwest::Client, server: &Node, user: &str, pw: &str) -> Value {
    let r = client
        .post(server.url("/v1/token"))
        .json(&json!({"username": user, "password": pw}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "token login of {user}");
    r.json().await.unwrap()
}

async fn me_by_cookie(client: &reqwest::Client, server: &Node, cookie: &str) -> StatusCode {
    client
        .get(server.url("/v1/me"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
}

async fn me_by_token(client: &reqwest::Client, server: &Node, pair: &Value) -> StatusCode {
    client
        .get(server.url("/v1/me"))
        .bearer_auth(pair["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .status()
}

async fn login_status(client: &reqwest::Client, server: &Node, user: &str, pw: &str) -> StatusCode {
    client
        .post(server.url("/v1/token"))
        .json(&json!({"username": user, "password": pw}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn user_commands_work_on_a_stopped_server_and_reach_a_running_one_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let alice = add_user(dir, NO_ENV, "alice", true, PASSWORD);
    let bob = add_user(dir, NO_ENV, "Bob", false, PASSWORD);
    add_user(dir, NO_ENV, "carol", false, PASSWORD);

    // Listing, whole or in pages, as a table or JSON.
    let table = ok(dir, &["user", "list"]);
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.lines().nth(1).unwrap().contains("alice"), "{table}");
    let all = json_of(dir, &["user", "list"]);
    let names: Vec<&str> = all["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    assert_eq!(all["users"][0]["id"], alice.as_str());
    assert_eq!(all["users"][0]["roles"], json!(["admin"]));
    assert!(all["next"].is_null());
    let page = json_of(dir, &["user", "list", "--limit", "2"]);
    assert_eq!(page["users"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], "bob");
    let rest = json_of(dir, &["user", "list", "--after", "bob"]);
    assert_eq!(rest["users"][0]["username"], "carol");
    let listed = serde_json::to_string(&all).unwrap();
    assert!(!listed.contains("argon2"), "no password hash: {listed}");

    // One account, by name or by id.
    let shown = json_of(dir, &["user", "show", "bob"]);
    assert_eq!(shown["id"], bob.as_str());
    assert_eq!(shown["disabled"], false);
    assert_eq!(shown["live_logins"], 0);
    assert_eq!(json_of(dir, &["user", "show", &bob])["username"], "bob");
    assert!(ok(dir, &["user", "show", "bob"]).contains("live logins: 0"));
    let err = refused(dir, &["user", "show", "nobody"]);
    assert!(err.contains("nobody"), "{err}");

    // A running server.
    let server = Node::start(dir, &[], NO_ENV);
    let client = reqwest::Client::new();
    let cookie = session_login(&client, &server, "bob", PASSWORD).await;
    let pair = token_login(&client, &server, "bob", PASSWORD).await;
    assert_eq!(
        me_by_cookie(&client, &server, &cookie).await,
        StatusCode::OK
    );
    assert_eq!(me_by_token(&client, &server, &pair).await, StatusCode::OK);

    // Every model's logins, with public ids only.
    let out = ok(dir, &["sessions", "list", "bob", "--json"]);
    let logins: Value = serde_json::from_str(&out).unwrap();
    let models: Vec<&str> = logins["logins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["session", "token"], "{out}");
    let cookie_secret = cookie.split('=').nth(1).unwrap();
    for secret in [
        cookie_secret,
        pair["access_token"].as_str().unwrap(),
        pair["refresh_token"].as_str().unwrap(),
    ] {
        assert!(!out.contains(secret), "a credential was listed: {out}");
    }
    assert_eq!(json_of(dir, &["user", "show", "bob"])["live_logins"], 2);
    assert!(ok(dir, &["sessions", "list", "bob"]).contains("session"));

    // Disabled from the command line: the running server refuses the session and the token at
    // once, and a new login.
    ok(dir, &["user", "disable", "bob"]);
    at_once(
        "a disabled user's session and token are refused",
        || async {
            me_by_cookie(&client, &server, &cookie).await == StatusCode::UNAUTHORIZED
                && me_by_token(&client, &server, &pair).await == StatusCode::UNAUTHORIZED
        },
    )
    .await;
    assert_eq!(
        login_status(&client, &server, "bob", PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(json_of(dir, &["user", "show", "bob"])["disabled"], true);
    ok(dir, &["user", "enable", "bob"]);
    assert_eq!(
        login_status(&client, &server, "bob", PASSWORD).await,
        StatusCode::OK
    );

    // Roles: replaced, validated as the admin API validates them; a token carrying the old roles
    // is refused at once.
    let pair = token_login(&client, &server, "bob", PASSWORD).await;
    ok(dir, &["user", "roles", "bob", "editor", "viewer", "editor"]);
    assert_eq!(
        json_of(dir, &["user", "show", "bob"])["roles"],
        json!(["editor", "viewer"])
    );
    at_once("a token with the old roles is refused", || async {
        me_by_token(&client, &server, &pair).await == StatusCode::UNAUTHORIZED
    })
    .await;
    let err = refused(dir, &["user", "roles", "bob", "no spaces"]);
    assert!(err.contains("role"), "{err}");
    ok(dir, &["user", "roles", "bob"]);
    assert_eq!(json_of(dir, &["user", "show", "bob"])["roles"], json!([]));

    // A password set from the command line: every login ends at once; the old password is refused.
    let cookie = session_login(&client, &server, "bob", PASSWORD).await;
    let out = run_with_input(
        dir,
        &["user", "passwd", "bob"],
        NO_ENV,
        &format!("{NEW_PASSWORD}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains(NEW_PASSWORD));
    at_once(
        "the session of a user whose password was set is refused",
        || async { me_by_cookie(&client, &server, &cookie).await == StatusCode::UNAUTHORIZED },
    )
    .await;
    assert_eq!(
        login_status(&client, &server, "bob", PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login_status(&client, &server, "bob", NEW_PASSWORD).await,
        StatusCode::OK
    );
    // The same rules as registration.
    let out = run_with_input(dir, &["user", "passwd", "bob"], NO_ENV, "password1\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("common"));

    // One login ended by its id: that one is refused at once, the others live on.
    let one = token_login(&client, &server, "bob", NEW_PASSWORD).await;
    let other = session_login(&client, &server, "bob", NEW_PASSWORD).await;
    let listed = json_of(dir, &["sessions", "list", "bob"]);
    let family = listed["logins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["model"] == "token")
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .next_back()
        .unwrap();
    assert!(family.starts_with("fam_"), "{family}");
    ok(dir, &["sessions", "revoke", &family]);
    at_once("a token of an ended login is refused", || async {
        me_by_token(&client, &server, &one).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(me_by_cookie(&client, &server, &other).await, StatusCode::OK);
    let handle = json_of(dir, &["sessions", "list", "bob"])["logins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["model"] == "session")
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .unwrap();
    ok(dir, &["sessions", "revoke", &handle]);
    at_once("an ended session is refused", || async {
        me_by_cookie(&client, &server, &other).await == StatusCode::UNAUTHORIZED
    })
    .await;
    let err = refused(dir, &["sessions", "revoke", &handle]);
    assert!(err.contains(&handle), "{err}");

    // Every login of a user.
    let cookie = session_login(&client, &server, "bob", NEW_PASSWORD).await;
    let pair = token_login(&client, &server, "bob", NEW_PASSWORD).await;
    ok(dir, &["sessions", "revoke", "bob"]);
    at_once("every login of a revoked user is refused", || async {
        me_by_cookie(&client, &server, &cookie).await == StatusCode::UNAUTHORIZED
            && me_by_token(&client, &server, &pair).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(json_of(dir, &["user", "show", "bob"])["live_logins"], 0);
    assert!(server.stop().success());

    // On a stopped server the change waits in the database: the next start honours it.
    ok(dir, &["user", "disable", "carol"]);
    let server = Node::start(dir, &[], NO_ENV);
    assert_eq!(
        login_status(&client, &server, "carol", PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(server.stop().success());

    // The audit log records what the command line did, with no admin.
    let server = Node::start(dir, &[], NO_ENV);
    let admin = token_login(&client, &server, "alice", PASSWORD).await;
    let events: Value = client
        .get(server.url("/v1/admin/events?limit=200"))
        .bearer_auth(admin["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"].get("by").is_some_and(Value::is_null))
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "user_disabled",
        "user_enabled",
        "roles_changed",
        "password_changed",
        "forced_logout",
    ] {
        assert!(kinds.contains(&kind), "no {kind} event: {kinds:?}");
    }
}

/// A password login: the JSON answer (tokens, or a second-factor challenge).
async fn password_login(client: &reqwest::Client, server: &Node, user: &str) -> Value {
    let r = client
        .post(server.url("/v1/token"))
        .json(&json!({"username": user, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "password login of {user}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn passkeys_removed_from_the_command_line_leave_the_password_alone_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let dana = add_user(dir, NO_ENV, "dana", false, PASSWORD);
    let server = Node::start(dir, &[], NO_ENV);
    let client = reqwest::Client::new();

    // A passkey, registered through the running server by a software authenticator on the
    // server's public origin (the default `public_url`).
    let mut key = harness::Passkey::new("http://localhost:8080");
    let login = password_login(&client, &server, "dana").await;
    let access = login["access_token"].as_str().unwrap().to_owned();
    let r = client
        .post(server.url("/v1/account/passkeys/options"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "registration options");
    let options: Value = r.json().await.unwrap();
    let r = client
        .post(server.url("/v1/account/passkeys"))
        .bearer_auth(&access)
        .json(&json!({
            "ceremony": options["ceremony"],
            "credential": key.create(&options["options"]),
            "name": "Phone",
            "current_password": PASSWORD,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "registration");

    // A password login now needs the passkey.
    let challenge = password_login(&client, &server, "dana").await;
    assert_eq!(challenge["second_factor_required"], true, "{challenge}");
    assert_eq!(challenge["methods"], json!(["webauthn"]), "{challenge}");

    // Removed from the command line (by name); the running server lets the password alone in
    // at once, and the passkey no longer completes a login begun before.
    let (success, _, err) = cli(dir, &["user", "remove-passkeys", "dana"]);
    assert!(success, "{err}");
    assert!(err.contains("dana: 1 passkey removed"), "{err}");
    assert!(err.contains("the password alone logs in"), "{err}");
    at_once("a password login needs no second factor", || async {
        password_login(&client, &server, "dana").await["access_token"].is_string()
    })
    .await;
    let r = client
        .post(server.url("/v1/login/second-factor/passkey"))
        .json(&json!({
            "challenge": challenge["challenge"],
            "ceremony": challenge["passkey"]["ceremony"],
            "credential": key.get(&challenge["passkey"]["options"]),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the removed passkey completes no login"
    );
    let list: Value = client
        .get(server.url("/v1/account/passkeys"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["passkeys"], json!([]), "{list}");

    // Again (by id): nothing to remove, said clearly. An unknown user: named.
    let err = refused(dir, &["user", "remove-passkeys", &dana]);
    assert!(err.contains("dana has no passkey"), "{err}");
    let err = refused(dir, &["user", "remove-passkeys", "nobody"]);
    assert!(err.contains("nobody"), "{err}");
    assert!(server.stop().success());

    // The audit log records the removal, by the command line (no admin).
    add_user(dir, NO_ENV, "root", true, PASSWORD);
    let server = Node::start(dir, &[], NO_ENV);
    let admin = token_login(&client, &server, "root", PASSWORD).await;
    let events: Value = client
        .get(server.url("/v1/admin/events?limit=200"))
        .bearer_auth(admin["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let removed: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "second_factor_removed")
        .collect();
    assert_eq!(removed.len(), 1, "{events}");
    assert_eq!(removed[0]["user_id"], dana.as_str());
    assert_eq!(removed[0]["detail"]["method"], "webauthn");
    assert_eq!(removed[0]["detail"]["count"], 1);
    assert!(removed[0]["detail"]["by"].is_null(), "{events}");
}

#[tokio::test]
async fn keys_rotated_from_the_command_line_are_in_the_running_servers_jwks_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let keys = json_of(dir, &["keys", "list"]);
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(keys["keys"][0]["status"], "active");
    assert_eq!(keys["keys"][0]["signing"], true);
    assert!(
        !serde_json::to_string(&keys).unwrap().contains("private"),
        "{keys}"
    );

    let server = Node::start(dir, &[], NO_ENV);
    let client = reqwest::Client::new();
    let jwks = || async {
        client
            .get(server.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let kid = ok(dir, &["keys", "rotate"]).trim().to_owned();
    at_once("the rotated key is published", || async {
        jwks().await.contains(&kid)
    })
    .await;
    ok(dir, &["keys", "retire", &kid]);
    at_once("the retired key leaves the JWKS", || async {
        !jwks().await.contains(&kid)
    })
    .await;
    let listed = json_of(dir, &["keys", "list"]);
    let retired = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap();
    assert_eq!(retired["status"], "retired");
    assert!(retired["retired_at"].is_string());
}

#[test]
fn completions_are_printed_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(dir.path(), &["completions", shell]);
        for word in ["tessera", "sessions", "backup", "passwd"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let err = refused(dir.path(), &["completions", "tcsh"]);
    assert!(err.contains("tcsh"), "{err}");
}

#[tokio::test]
async fn a_backup_taken_while_the_server_runs_serves_the_same_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    add_user(dir, NO_ENV, "alice", false, PASSWORD);
    let server = Node::start(dir, &[], NO_ENV);
    let client = reqwest::Client::new();
    assert_eq!(
        login_status(&client, &server, "alice", PASSWORD).await,
        StatusCode::OK
    );
    let (success, _, err) = cli(dir, &["backup", "copy.db"]);
    assert!(success, "{err}");
    assert!(
        err.contains("tessera.key"),
        "the master key reminder: {err}"
    );
    let copy = dir.join("copy.db");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&copy).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "a backup holds password hashes");
    // Never overwritten.
    let before = std::fs::read(&copy).unwrap();
    let err = refused(dir, &["backup", "copy.db"]);
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&copy).unwrap(), before);
    assert!(server.stop().success());

    // The copy is a database a server runs on, with the same master key file.
    std::fs::remove_file(dir.join("tessera.db")).unwrap();
    let server = Node::start(dir, &["--database", "sqlite://copy.db"], NO_ENV);
    assert_eq!(
        login_status(&client, &server, "alice", PASSWORD).await,
        StatusCode::OK
    );
    assert!(server.stop().success());

    // Other databases.
    let err = refused(dir, &["backup", "x.db", "--database", "memory"]);
    assert!(err.contains("memory"), "{err}");
    let (success, out, err) = cli(
        dir,
        &[
            "backup",
            "dump.pgdump",
            "--database",
            "postgres://tessera:pg-secret-pw@127.0.0.1:5432/auth",
        ],
    );
    assert!(!success, "no file was written: status 1");
    let said = format!("{out}{err}");
    assert!(said.contains("pg_dump"), "{said}");
    assert!(
        said.contains("postgres://tessera@127.0.0.1:5432/auth"),
        "{said}"
    );
    assert!(!said.contains("pg-secret-pw"), "{said}");
    assert!(!dir.join("dump.pgdump").exists());
}
