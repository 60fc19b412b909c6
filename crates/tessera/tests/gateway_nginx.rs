//! A real nginx in front of an application, asking a real `tessera serve` through `auth_request`,
//! with the configuration docs/gateways.md shows (read from that file, addresses substituted, so
//! the two cannot drift): requests without a credential are refused, the three login models
//! reach the application with the identity headers, role rules refuse and admit, browsers are
//! sent to the login page with a safe return address, client-sent identity headers are dropped,
//! and a logout or revocation is enforced through nginx within a second. The application is the
//! example service (`examples/resource-service`), which also verifies bearer tokens itself with
//! `tessera-verify`: a revoked token sent straight to it is refused within a second too, learnt
//! from the revocation stream.
//!
//! Needs Debian's `nginx` (with the auth_request module) on the PATH or in /usr/sbin; fails,
//! never skips, without it (`scripts/test` installs it). Everything listens on 127.0.0.1.

mod harness;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use harness::{Node, add_user, free_port, run};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, COOKIE, SET_COOKIE};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const ADMIN_PASSWORD: &str = "a long admin passphrase for the test";
const LOGIN_URL: &str = "http://login.test/sign-in";
const HTML: &str = "text/html,application/xhtml+xml,*/*;q=0.8";

/// nginx, killed when dropped.
struct Nginx {
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "nginx is not installed. This test runs a real nginx: install Debian's `nginx` \
             package (scripts/test does it)"
        )
    })
}

/// The nginx server block of docs/gateways.md.
fn documented_config() -> String {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/gateways.md");
    let text = std::fs::read_to_string(&doc).expect("read docs/gateways.md");
    let after = text
        .split_once("<!-- nginx-config")
        .expect("docs/gateways.md marks its nginx configuration")
        .1;
    let block = after.split_once("```nginx\n").expect("an nginx block").1;
    block
        .split_once("\n```")
        .expect("the end of the block")
        .0
        .to_owned()
}

fn substitute(config: &str, from: &str, to: &str) -> String {
    assert!(
        config.contains(from),
        "docs/gateways.md's nginx configuration no longer has {from:?}"
    );
    config.replace(from, to)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn start_nginx(dir: &Path, port: u16, tessera: &str, upstream: SocketAddr) -> Nginx {
    let server = documented_config();
    let server = substitute(&server, "listen 80;", &format!("listen 127.0.0.1:{port};"));
    let server = substitute(
        &server,
        "server 127.0.0.1:8080;",
        &format!("server {tessera};"),
    );
    let server = substitute(
        &server,
        "server 127.0.0.1:3000;",
        &format!("server {upstream};"),
    );
    let d = dir.display();
    // Workers run as root only when the test does (they must read this private directory).
    let user = if is_root() { "user root root;" } else { "" };
    let config = format!(
        "daemon off;\nworker_processes 1;\n{user}\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 128; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/client_body;\n  \
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
         scgi_temp_path {d}/scgi;\n{server}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), config).unwrap();
    let stderr = std::fs::File::create(dir.join("nginx.stderr")).unwrap();
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start nginx");
    let mut nginx = Nginx { child };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = nginx.child.try_wait() {
            panic!(
                "nginx exited ({status}):\n{}\n{}",
                std::fs::read_to_string(dir.join("nginx.stderr")).unwrap_or_default(),
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return nginx;
        }
        assert!(
            Instant::now() < deadline,
            "nginx did not listen within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The service client the example service follows the revocation stream with.
const STREAM_CLIENT: &str = "example-service";
const STREAM_SECRET: &str = "the example service's stream secret";

/// The application behind nginx: the example service, following `tessera`'s revocation stream,
/// with a count of the requests that reached it.
async fn start_upstream(tessera: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let verifier = tessera_verify::Verifier::builder("http://localhost:8080", "tessera")
        .server_url(format!("http://{tessera}"))
        .service_credentials(STREAM_CLIENT, STREAM_SECRET)
        .build()
        .expect("a verifier");
    tokio::time::timeout(Duration::from_secs(10), verifier.ready())
        .await
        .expect("the example service gets the keys and the first snapshot");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let app = resource_service::app(verifier).layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            counter.fetch_add(1, Ordering::SeqCst);
            next.run(request)
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, hits)
}

/// One raw request line through nginx (a client that sends the path exactly as written, which
/// reqwest would normalize); returns the status.
fn raw_status(port: u16, target: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line from nginx for {target}: {response:?}"))
}

fn cookie_pair(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie"))
        .to_owned()
}

struct Gateway {
    http: reqwest::Client,
    tessera: String,
    nginx: String,
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Gateway {
    async fn login(&self, route: &str, username: &str, password: &str) -> reqwest::Response {
        let r = self
            .http
            .post(format!("{}{route}", self.tessera))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "login {username} at {route}");
        r
    }

    /// GET through nginx with extra headers.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut rb = self.http.get(format!("{}{path}", self.nginx));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send().await.unwrap()
    }

    /// The identity headers the application saw, after checking the request reached it.
    async fn identity(&self, path: &str, headers: &[(&str, &str)]) -> Value {
        let before = self.hits.load(Ordering::SeqCst);
        let r = self.get(path, headers).await;
        assert_eq!(r.status(), StatusCode::OK, "{path} through nginx");
        assert_eq!(self.hits.load(Ordering::SeqCst), before + 1);
        let body: Value = r.json().await.unwrap();
        let route = path.split('?').next().unwrap();
        assert_eq!(body["path"], route.strip_prefix("/gateway/").unwrap());
        body["headers"].clone()
    }

    /// The status nginx answers, checking a refusal never reaches the application.
    async fn refused(&self, path: &str, headers: &[(&str, &str)]) -> StatusCode {
        let before = self.hits.load(Ordering::SeqCst);
        let status = self.get(path, headers).await.status();
        assert_eq!(
            self.hits.load(Ordering::SeqCst),
            before,
            "{path} reached the app"
        );
        status
    }

    /// Waits until nginx refuses the credential, at most a second.
    async fn refused_within_a_second(&self, what: &str, headers: &[(&str, &str)]) {
        let started = Instant::now();
        loop {
            let status = self.get("/gateway/x", headers).await.status();
            if status == StatusCode::UNAUTHORIZED {
                return;
            }
            assert_eq!(status, StatusCode::OK, "{what}");
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{what}: still admitted by nginx a second later"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_in_front_of_an_application() {
    let nginx_binary = nginx_binary();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env: Vec<(&str, String)> = vec![
        (
            "TESSERA_DATABASE",
            format!("sqlite://{}/tessera.db", dir.path().display()),
        ),
        ("TESSERA_PUBLIC_URL", "http://localhost:8080".into()),
        (
            "TESSERA_HTTP__TRUSTED_ORIGINS",
            format!("[\"http://127.0.0.1:{port}\"]"),
        ),
        ("TESSERA_VERIFY__LOGIN_URL", LOGIN_URL.into()),
        (
            "TESSERA_VERIFY__RULES",
            r#"[{prefix="/gateway/admin",role="admin"},{prefix="/gateway/public",public=true}]"#
                .into(),
        ),
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
            format!("{{{STREAM_CLIENT:?}={STREAM_SECRET:?}}}"),
        ),
    ];
    add_user(dir.path(), &env, "root", true, ADMIN_PASSWORD);
    let tessera = Node::start(dir.path(), &[], &env);
    let tessera_addr = tessera.addr.to_string();
    let (upstream, hits) = start_upstream(&tessera_addr).await;
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir(&nginx_dir).unwrap();
    assert!(nginx_binary.is_file());
    let _nginx = start_nginx(&nginx_dir, port, &tessera_addr, upstream);
    let g = Gateway {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        tessera: format!("http://{tessera_addr}"),
        nginx: format!("http://127.0.0.1:{port}"),
        port,
        hits,
    };

    // No credential: refused, and the application never sees the request.
    assert_eq!(g.refused("/gateway/x", &[]).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        g.refused("/gateway/x", &[("accept", "application/json")])
            .await,
        StatusCode::UNAUTHORIZED
    );
    // A public route: anonymous, and identity headers a client sends are dropped.
    let identity = g
        .identity(
            "/gateway/public/page",
            &[
                ("x-tessera-user", "usr_forged"),
                ("x-tessera-roles", "admin"),
            ],
        )
        .await;
    assert_eq!(
        identity,
        json!({}),
        "client-sent identity headers reached the app"
    );

    // The three login models, each reaching the application with its identity.
    let r = g
        .http
        .post(format!("{}/v1/users", g.tessera))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let session = g.login("/v1/session/login", "alice", PASSWORD).await;
    let session_cookie = cookie_pair(&session, "__Host-tessera");
    let session_csrf = session.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let token: Value = g
        .login("/v1/token", "alice", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let hybrid = g.login("/v1/hybrid/login", "alice", PASSWORD).await;
    let hybrid_cookie = cookie_pair(&hybrid, "__Host-tessera-at");
    let hybrid_csrf = hybrid.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for (model, header, value) in [
        ("session", COOKIE.as_str(), session_cookie.as_str()),
        ("token", "authorization", bearer.as_str()),
        ("hybrid", COOKIE.as_str(), hybrid_cookie.as_str()),
    ] {
        let identity = g
            .identity(
                "/gateway/x",
                &[(header, value), ("x-tessera-user", "usr_forged")],
            )
            .await;
        assert_eq!(identity["x-tessera-username"], "alice", "{model}");
        assert_eq!(identity["x-tessera-model"], model);
        // No roles: Tessera sends an empty X-Tessera-Roles, which nginx does not pass on.
        assert!(identity.get("x-tessera-roles").is_none(), "{model}");
        let user = identity["x-tessera-user"].as_str().unwrap();
        assert!(user.starts_with("usr_") && user != "usr_forged", "{model}");
        // The role route refuses alice whatever the model.
        assert_eq!(
            g.refused("/gateway/admin/users", &[(header, value)]).await,
            StatusCode::FORBIDDEN,
            "{model}"
        );
    }
    // A form post goes through too: nginx sends the check as a GET. (The example service itself
    // only answers GET there: its 405 shows the post reached it.)
    let before = g.hits.load(Ordering::SeqCst);
    let r = g
        .http
        .post(format!("{}/gateway/form", g.nginx))
        .header("authorization", &bearer)
        .body("a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(g.hits.load(Ordering::SeqCst), before + 1);

    // The admin passes the role route.
    let root: Value = g
        .login("/v1/token", "root", ADMIN_PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let root_bearer = format!("Bearer {}", root["access_token"].as_str().unwrap());
    let identity = g
        .identity("/gateway/admin/users", &[("authorization", &root_bearer)])
        .await;
    assert_eq!(identity["x-tessera-roles"], "admin");
    assert_eq!(identity["x-tessera-username"], "root");

    // A non-ASCII username travels percent-encoded.
    let r = g
        .http
        .post(format!("{}/v1/users", g.tessera))
        .json(&json!({"username": "山田-2", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let yamada: Value = g
        .login("/v1/token", "山田-2", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let yamada_bearer = format!("Bearer {}", yamada["access_token"].as_str().unwrap());
    let identity = g
        .identity("/gateway/x", &[("authorization", &yamada_bearer)])
        .await;
    assert_eq!(identity["x-tessera-username"], "%E5%B1%B1%E7%94%B0-2");

    // A browser is sent to the login page with its address; a forged Host gets no return address.
    let r = g
        .get("/gateway/admin/x?tab=2", &[(ACCEPT.as_str(), HTML)])
        .await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        r.headers()["location"],
        format!(
            "{LOGIN_URL}?return_to=http%3A%2F%2F127.0.0.1%3A{port}%2Fgateway%2Fadmin%2Fx%3Ftab%3D2"
        )
        .as_str()
    );
    let r = g
        .get(
            "/gateway/x",
            &[(ACCEPT.as_str(), HTML), ("host", "evil.example.net")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], LOGIN_URL);

    // Paths that could slip past a rule are refused (Tessera's 400 is an error to nginx).
    for target in [
        "/gateway/public/..%2fadmin/users",
        "/gateway/public/%2e%2e/admin/users",
        "/gateway/public/..;/admin/users",
        "/gateway/public//../admin/users",
    ] {
        let before = g.hits.load(Ordering::SeqCst);
        let status = raw_status(g.port, target);
        assert!(
            status >= 400,
            "{target}: nginx answered {status} (expected a refusal)"
        );
        assert_eq!(
            g.hits.load(Ordering::SeqCst),
            before,
            "{target} reached the app"
        );
    }

    // Logout and revocation reach nginx's next check.
    let r = g
        .http
        .delete(format!("{}/v1/session", g.tessera))
        .header(COOKIE, &session_cookie)
        .header("x-csrf-token", &session_csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    g.refused_within_a_second(
        "the session after logout",
        &[(COOKIE.as_str(), &session_cookie)],
    )
    .await;
    // The example service verifies the bearer token itself, offline.
    let direct = format!("http://{upstream}/me");
    let r = g
        .http
        .get(&direct)
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the token, straight to the service"
    );
    let r = g
        .http
        .post(format!("{}/v1/token/revoke", g.tessera))
        .form(&[("token", token["access_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let revoked = Instant::now();
    g.refused_within_a_second("the revoked token", &[("authorization", &bearer)])
        .await;
    // Straight to the service: refused within a second of the revoke too, learnt from the stream.
    loop {
        let status = g
            .http
            .get(&direct)
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK, "the revoked token at the service");
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "the example service still accepts the token a second after its revocation"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = g
        .http
        .delete(format!("{}/v1/hybrid/session", g.tessera))
        .header(COOKIE, &hybrid_cookie)
        .header("x-csrf-token", &hybrid_csrf)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "hybrid logout: {}", r.status());
    g.refused_within_a_second(
        "the hybrid cookie after logout",
        &[(COOKIE.as_str(), &hybrid_cookie)],
    )
    .await;
    // The admin, untouched, still passes.
    g.identity("/gateway/admin/x", &[("authorization", &root_bearer)])
        .await;
}

/// Invalid rules stop the server at start, naming the setting.
#[test]
fn invalid_rules_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value, expected) in [
        (
            "TESSERA_VERIFY__RULES",
            r#"[{prefix="admin",role="admin"}]"#,
            "verify.rules",
        ),
        (
            "TESSERA_VERIFY__RULES",
            r#"[{prefix="/admin",role="admin",public=true}]"#,
            "verify.rules",
        ),
        (
            "TESSERA_VERIFY__RULES",
            r#"[{prefix="/admin",role="not a role"}]"#,
            "verify.rules",
        ),
        ("TESSERA_VERIFY__LOGIN_URL", "/login", "verify.login_url"),
    ] {
        let out = run(
            dir.path(),
            &["serve", "--listen", "127.0.0.1:0"],
            &[("TESSERA_DATABASE", "memory"), (key, value)],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{value} was accepted");
        assert!(stderr.contains(expected), "{value}: {stderr}");
    }
}
