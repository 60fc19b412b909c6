//! The example application started on a random port, with Tessera built by its builder and
//! mounted under `/auth`: each kind of route with each login model (allowed, refused, CSRF
//! refused), role checks, logouts reaching the application's routes at once, and a graceful
//! shutdown that stops Tessera's background tasks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera::{Tessera, TesseraBuilder};
use tessera_core::Password;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PASSWORD: &str = "correct horse battery staple";

/// The example application, serving on 127.0.0.1 at a random port.
struct TestApp {
    base: String,
    client: reqwest::Client,
    tessera: Tessera,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    async fn spawn() -> Self {
        Self::spawn_with(|builder| builder).await
    }

    /// The app with Tessera's builder adjusted by `adjust`.
    async fn spawn_with(adjust: impl FnOnce(TesseraBuilder) -> TesseraBuilder) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let builder = Tessera::builder().memory().public_url(&base).mount("/auth");
        let tessera = adjust(builder).build().await.unwrap();
        let app = embedded_axum::app(&tessera);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(tessera.serve(listener, app, async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            base,
            client,
            tessera,
            stop,
            server,
        }
    }

    /// A new account, with `roles`.
    async fn user(&self, name: &str, roles: &[&str]) -> String {
        let roles = roles.iter().map(|r| (*r).to_owned()).collect();
        let user = self
            .tessera
            .accounts
            .create(name, &Password::new(PASSWORD), roles)
            .await
            .unwrap();
        user.id.as_str().to_owned()
    }

    async fn send(&self, method: Method, path: &str, caller: &mut Caller, body: Body) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .headers(caller.headers());
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Form(pairs) => request.form(&pairs),
        };
        let response = request.send().await.unwrap();
        caller.keep_cookies(response.headers());
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        Answer {
            status,
            headers,
            text,
        }
    }

    async fn get(&self, path: &str, caller: &mut Caller) -> Answer {
        self.send(Method::GET, path, caller, Body::None).await
    }

    /// Logs `username` in with `model` (session, hybrid or token).
    async fn login(&self, username: &str, model: Model) -> Caller {
        let mut caller = Caller::browser(&self.base);
        let path = match model {
            Model::Session => "/auth/v1/session/login",
            Model::Hybrid => "/auth/v1/hybrid/login",
            Model::Token => "/auth/v1/token",
        };
        let answer = self
            .send(
                Method::POST,
                path,
                &mut caller,
                Body::Json(json!({"username": username, "password": PASSWORD})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let body = answer.json();
        match model {
            Model::Session | Model::Hybrid => {
                caller.csrf = body["csrf_token"].as_str().map(str::to_owned);
                assert!(caller.csrf.is_some(), "{body}");
            }
            Model::Token => {
                caller.bearer = body["access_token"].as_str().map(str::to_owned);
                caller.refresh = body["refresh_token"].as_str().map(str::to_owned);
                caller.origin = None;
            }
        }
        caller.model = Some(model);
        caller
    }

    /// Stops the server gracefully, then Tessera.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.server)
            .await
            .expect("the server did not stop")
            .unwrap()
            .unwrap();
        self.tessera.shutdown().await;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Model {
    Session,
    Hybrid,
    Token,
}

const MODELS: [Model; 3] = [Model::Session, Model::Hybrid, Model::Token];

enum Body {
    None,
    Json(Value),
    Form(Vec<(&'static str, String)>),
}

/// A client: its cookies (kept by hand: `__Host-` cookies are `Secure`, which a cookie store
/// would not send to http://127.0.0.1), the `Origin` a browser sends, and its credentials.
struct Caller {
    cookies: BTreeMap<String, String>,
    origin: Option<String>,
    csrf: Option<String>,
    bearer: Option<String>,
    refresh: Option<String>,
    model: Option<Model>,
    /// Send the CSRF token in `X-CSRF-Token`.
    csrf_header: bool,
}

impl Caller {
    fn browser(base: &str) -> Self {
        Self {
            cookies: BTreeMap::new(),
            origin: Some(base.to_owned()),
            csrf: None,
            bearer: None,
            refresh: None,
            model: None,
            csrf_header: true,
        }
    }

    fn anonymous(base: &str) -> Self {
        Self::browser(base)
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if !self.cookies.is_empty() {
            let text: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            headers.insert("cookie", HeaderValue::from_str(&text.join("; ")).unwrap());
        }
        if let Some(origin) = &self.origin {
            headers.insert("origin", HeaderValue::from_str(origin).unwrap());
        }
        if self.csrf_header
            && let Some(csrf) = &self.csrf
        {
            headers.insert("x-csrf-token", HeaderValue::from_str(csrf).unwrap());
        }
        if let Some(token) = &self.bearer {
            headers.insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            );
        }
        headers
    }

    fn keep_cookies(&mut self, headers: &HeaderMap) {
        for value in headers.get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            assert!(
                attributes.contains("Path=/") && attributes.contains("Secure"),
                "a __Host- cookie keeps Path=/ and Secure under a mount: {text}"
            );
            if value.is_empty() || attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// A problem document of `status` whose type ends with `slug`.
    fn assert_problem(&self, status: StatusCode, slug: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.headers["content-type"], "application/problem+json",
            "{}",
            self.text
        );
        let kind = self.json()["type"].as_str().unwrap_or("").to_owned();
        assert!(
            kind.ends_with(slug),
            "expected {slug}, got {kind}: {}",
            self.text
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_kind_with_each_model() {
    let app = TestApp::spawn().await;
    app.user("alice", &[]).await;

    // The public page: anyone; a logged-in caller by name.
    let mut anonymous = Caller::anonymous(&app.base);
    let home = app.get("/", &mut anonymous).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.text.contains("Hello, stranger"), "{}", home.text);
    // The page for logged-in users refuses an anonymous caller with Tessera's problem document.
    app.get("/account", &mut anonymous)
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "unauthenticated");

    for model in MODELS {
        let mut caller = app.login("alice", model).await;
        let home = app.get("/", &mut caller).await;
        assert!(
            home.text.contains("Hello, alice."),
            "{model:?}: {}",
            home.text
        );
        let account = app.get("/account", &mut caller).await;
        assert_eq!(
            account.status,
            StatusCode::OK,
            "{model:?}: {}",
            account.text
        );
        let expected = match model {
            Model::Session => "session",
            Model::Hybrid => "hybrid",
            Model::Token => "token",
        };
        assert!(
            account.text.contains(&format!("the {expected} model")),
            "{model:?}: {}",
            account.text
        );

        // The HTML form: the CSRF token in the form's field, as the page put it there.
        let note = format!("a note from the {expected} model");
        let form = vec![
            ("text", note.clone()),
            ("csrf_token", caller.csrf.clone().unwrap_or_default()),
        ];
        caller.csrf_header = false;
        let posted = app
            .send(Method::POST, "/notes", &mut caller, Body::Form(form))
            .await;
        match model {
            Model::Session | Model::Hybrid => {
                assert_eq!(
                    posted.status,
                    StatusCode::SEE_OTHER,
                    "{model:?}: {}",
                    posted.text
                );
                let page = app.get("/account", &mut caller).await;
                assert!(page.text.contains(&note), "{model:?}: {}", page.text);
                // The page shows the token the form needs.
                let csrf = caller.csrf.clone().unwrap();
                assert!(page.text.contains(&csrf), "{model:?}: {}", page.text);
            }
            // A form is for cookie logins: a bearer caller has no business posting one.
            Model::Token => posted.assert_problem(StatusCode::UNAUTHORIZED, "unauthenticated"),
        }
        if model != Model::Token {
            // Without the token, or with another one: refused, and nothing is added.
            let refused = app
                .send(
                    Method::POST,
                    "/notes",
                    &mut caller,
                    Body::Form(vec![("text", "forged".into())]),
                )
                .await;
            refused.assert_problem(StatusCode::FORBIDDEN, "csrf-token-missing");
            let wrong = app
                .send(
                    Method::POST,
                    "/notes",
                    &mut caller,
                    Body::Form(vec![
                        ("text", "forged".into()),
                        (
                            "csrf_token",
                            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
                        ),
                    ]),
                )
                .await;
            wrong.assert_problem(StatusCode::FORBIDDEN, "csrf-token-invalid");
            // A form posted from another site, even with the token: refused.
            let mut from_elsewhere = Caller {
                origin: Some("https://evil.example".into()),
                cookies: caller.cookies.clone(),
                ..Caller::anonymous(&app.base)
            };
            from_elsewhere.csrf_header = false;
            let cross = app
                .send(
                    Method::POST,
                    "/notes",
                    &mut from_elsewhere,
                    Body::Form(vec![
                        ("text", "forged".into()),
                        ("csrf_token", caller.csrf.clone().unwrap()),
                    ]),
                )
                .await;
            cross.assert_problem(StatusCode::FORBIDDEN, "untrusted-origin");
            let page = app.get("/account", &mut caller).await;
            assert!(!page.text.contains("forged"), "{model:?}: {}", page.text);
        }
        caller.csrf_header = true;

        // The JSON API takes bearer tokens only.
        let api = app.get("/api/notes", &mut caller).await;
        match model {
            Model::Token => {
                assert_eq!(api.status, StatusCode::OK, "{}", api.text);
                let added = app
                    .send(
                        Method::POST,
                        "/api/notes",
                        &mut caller,
                        Body::Json(json!({"text": "from the API"})),
                    )
                    .await;
                assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
                assert!(
                    added.json()["notes"]
                        .as_array()
                        .unwrap()
                        .contains(&json!("from the API"))
                );
            }
            _ => api.assert_problem(StatusCode::UNAUTHORIZED, "unauthenticated"),
        }

        // The session's data: session callers only, with the CSRF token.
        let cart = app
            .send(
                Method::POST,
                "/cart",
                &mut caller,
                Body::Json(json!({"item": "tea"})),
            )
            .await;
        match model {
            Model::Session => {
                assert_eq!(cart.status, StatusCode::OK, "{}", cart.text);
                assert_eq!(cart.json()["cart"], json!(["tea"]));
                caller.csrf_header = false;
                app.send(
                    Method::POST,
                    "/cart",
                    &mut caller,
                    Body::Json(json!({"item": "forged"})),
                )
                .await
                .assert_problem(StatusCode::FORBIDDEN, "csrf-token-missing");
                caller.csrf_header = true;
                // Tessera's own route sees the same data.
                let data = app.get("/auth/v1/session/data", &mut caller).await;
                assert_eq!(data.json()["cart"], json!(["tea"]), "{}", data.text);
            }
            Model::Hybrid | Model::Token => {
                cart.assert_problem(StatusCode::UNAUTHORIZED, "unauthenticated")
            }
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_checked_on_every_request() {
    let app = TestApp::spawn().await;
    let admin_id = app.user("root", &["admin"]).await;
    app.user("bob", &[]).await;
    for model in MODELS {
        let mut bob = app.login("bob", model).await;
        app.get("/admin", &mut bob)
            .await
            .assert_problem(StatusCode::FORBIDDEN, "missing-role");
        let mut root = app.login("root", model).await;
        let page = app.get("/admin", &mut root).await;
        assert_eq!(page.status, StatusCode::OK, "{model:?}: {}", page.text);
        assert!(page.text.contains("admin page, root"), "{}", page.text);
    }
    app.get("/admin", &mut Caller::anonymous(&app.base))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "unauthenticated");

    // The role taken away: refused on the very next request (sessions; a token carries the
    // roles it was signed with, and a role change revokes it).
    let mut session = app.login("root", Model::Session).await;
    let mut bearer = app.login("root", Model::Token).await;
    let id = tessera_core::UserId::parse(&admin_id).unwrap();
    assert!(app.tessera.logins.set_roles(&id, &[], None).await.unwrap());
    for caller in [&mut session, &mut bearer] {
        let answer = app.get("/admin", caller).await;
        assert!(
            answer.status == StatusCode::FORBIDDEN || answer.status == StatusCode::UNAUTHORIZED,
            "{:?}: {}",
            caller.model,
            answer.text
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_reaches_the_applications_routes_at_once() {
    let app = TestApp::spawn().await;
    app.user("carol", &[]).await;
    for model in MODELS {
        let mut caller = app.login("carol", model).await;
        assert_eq!(
            app.get("/account", &mut caller).await.status,
            StatusCode::OK
        );
        let (method, path, body) = match model {
            Model::Session => (Method::DELETE, "/auth/v1/session", Body::None),
            Model::Hybrid => (Method::DELETE, "/auth/v1/hybrid/session", Body::None),
            Model::Token => (
                Method::POST,
                "/auth/v1/token/revoke",
                Body::Json(json!({"token": caller.refresh.clone().unwrap()})),
            ),
        };
        let kept = Caller {
            cookies: caller.cookies.clone(),
            origin: caller.origin.clone(),
            csrf: caller.csrf.clone(),
            bearer: caller.bearer.clone(),
            refresh: None,
            model: caller.model,
            csrf_header: true,
        };
        let out = app.send(method, path, &mut caller, body).await;
        assert!(out.status.is_success(), "{model:?}: {}", out.text);
        // The credentials as they were before the logout (a copy kept by an attacker, say) are
        // refused by the application's routes on the next request.
        let mut copy = kept;
        app.get("/account", &mut copy)
            .await
            .assert_problem(StatusCode::UNAUTHORIZED, "");
        let home = app.get("/", &mut copy).await;
        assert!(
            home.text.contains("Hello, stranger"),
            "{model:?}: {}",
            home.text
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_to_the_session_data_are_all_kept() {
    let app = TestApp::spawn().await;
    app.user("dave", &[]).await;
    let caller = app.login("dave", Model::Session).await;
    let headers = caller.headers();
    let mut requests = Vec::new();
    for i in 0..16 {
        let request = app
            .client
            .post(format!("{}/cart", app.base))
            .headers(headers.clone())
            .json(&json!({"item": format!("item {i}")}));
        requests.push(tokio::spawn(async move {
            request.send().await.unwrap().status()
        }));
    }
    for request in requests {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    let mut caller = caller;
    let data = app.get("/auth/v1/session/data", &mut caller).await;
    let cart = data.json()["cart"].as_array().cloned().unwrap_or_default();
    assert_eq!(cart.len(), 16, "an update was lost: {}", data.text);
    app.stop().await;
}

/// The cookies, the issuer and the OpenAPI document follow the mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tessera_routes_live_under_the_mount() {
    let app = TestApp::spawn().await;
    let mut anonymous = Caller::anonymous(&app.base);
    assert_eq!(
        app.get("/auth/healthz", &mut anonymous).await.status,
        StatusCode::OK
    );
    // Not at the root: those paths are the application's (which has none there).
    assert_eq!(
        app.get("/healthz", &mut anonymous).await.status,
        StatusCode::NOT_FOUND
    );
    // Unknown paths under the mount are Tessera's 404 problem.
    app.get("/auth/nothing-here", &mut anonymous)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not-found");
    let doc = app.get("/auth/openapi.json", &mut anonymous).await.json();
    assert_eq!(doc["servers"][0]["url"], "/auth", "{doc}");
    let jwks = app.get("/auth/.well-known/jwks.json", &mut anonymous).await;
    assert_eq!(jwks.status, StatusCode::OK);
    // The access token's issuer is the public URL with the mount path.
    app.user("erin", &[]).await;
    let caller = app.login("erin", Model::Token).await;
    let token = caller.bearer.unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["iss"], format!("{}/auth", app.base));
    app.stop().await;
}

/// A graceful stop of the application ends the server and then every task Tessera started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_stops_tesseras_tasks() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let app = TestApp::spawn().await;
    app.user("frank", &[]).await;
    let mut caller = app.login("frank", Model::Session).await;
    assert_eq!(
        app.get("/account", &mut caller).await.status,
        StatusCode::OK
    );
    // Tessera's tasks (the feed follower and the upkeep) and the server are running.
    assert!(metrics.num_alive_tasks() >= before + 3);
    let client = app.client.clone();
    app.stop().await;
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.num_alive_tasks() > before {
        assert!(
            Instant::now() < deadline,
            "{} tasks still alive after the shutdown (before: {before})",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The application's own refusals are problem documents too; its pages are neither cached nor
/// framed; and logins record the client's address (the server passes it to Tessera).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_problem_documents_and_pages_are_protected() {
    let app = TestApp::spawn().await;
    app.user("grace", &[]).await;
    let mut session = app.login("grace", Model::Session).await;
    let mut bearer = app.login("grace", Model::Token).await;

    let page = app.get("/account", &mut session).await;
    assert_eq!(page.headers["cache-control"], "no-store");
    assert_eq!(page.headers["x-frame-options"], "DENY");

    app.get("/no/such/page", &mut session)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not-found");
    app.get("/notes", &mut session)
        .await
        .assert_problem(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed");
    let not_json = app
        .send(
            Method::POST,
            "/api/notes",
            &mut bearer,
            Body::Form(vec![("text", "hi".into())]),
        )
        .await;
    assert_eq!(
        not_json.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{}",
        not_json.text
    );
    assert_eq!(not_json.headers["content-type"], "application/problem+json");
    let wrong_shape = app
        .send(
            Method::POST,
            "/api/notes",
            &mut bearer,
            Body::Json(json!({"note": "hi"})),
        )
        .await;
    wrong_shape.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body");
    let empty = app
        .send(
            Method::POST,
            "/api/notes",
            &mut bearer,
            Body::Json(json!({"text": ""})),
        )
        .await;
    empty.assert_problem(StatusCode::BAD_REQUEST, "invalid-text");

    // A form's CSRF refusal speaks of the form's field.
    session.csrf_header = false;
    let refused = app
        .send(
            Method::POST,
            "/notes",
            &mut session,
            Body::Form(vec![("text", "hi".into()), ("csrf_token", "nope".into())]),
        )
        .await;
    refused.assert_problem(StatusCode::FORBIDDEN, "csrf-token-invalid");
    assert!(refused.text.contains("csrf_token"), "{}", refused.text);
    session.csrf_header = true;

    // A session cookie beside a bearer token: the session's data is not changed for a caller
    // that other extractors take for the bearer's owner.
    let mut both = Caller {
        bearer: bearer.bearer.clone(),
        cookies: session.cookies.clone(),
        csrf: session.csrf.clone(),
        ..Caller::anonymous(&app.base)
    };
    app.send(
        Method::POST,
        "/cart",
        &mut both,
        Body::Json(json!({"item": "tea"})),
    )
    .await
    .assert_problem(StatusCode::UNAUTHORIZED, "unauthenticated");

    // The login recorded where it came from.
    let logins = app.get("/auth/v1/sessions", &mut session).await;
    assert_eq!(logins.status, StatusCode::OK, "{}", logins.text);
    assert!(logins.text.contains("127.0.0.1"), "{}", logins.text);
    app.stop().await;
}

/// A client that starts a request and never finishes its headers is cut off after
/// `http.header_timeout`, and does not hold up a graceful stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_cut_off_and_does_not_hold_up_the_stop() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(|b| b.set("http.header_timeout", "1s")).await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    stalled
        .write_all(b"GET /account HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buffer))
        .await
        .expect("the stalled connection was never closed");
    // Closed (or answered 408 and closed): never left open.
    if let Ok(n) = read
        && n > 0
    {
        let text = String::from_utf8_lossy(&buffer[..n]);
        assert!(text.contains(" 408 "), "{text}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Another stalled client, then a stop: it does not wait for the client.
    let mut second = tokio::net::TcpStream::connect(&address).await.unwrap();
    second.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the stop waited for a stalled client");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    drop(second);
}

/// A browser holding two cookie logins (say, a session planted by someone else beside its own
/// hybrid login) is one caller everywhere: the hybrid login, as the pages show it. A form sent
/// with the other login's CSRF token is refused, not carried out as that other login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cookie_logins_in_one_browser_act_as_one() {
    let app = TestApp::spawn().await;
    app.user("bob", &[]).await;
    app.user("alice", &[]).await;
    let bob = app.login("bob", Model::Session).await;
    let alice = app.login("alice", Model::Hybrid).await;
    let mut both = Caller {
        cookies: bob
            .cookies
            .clone()
            .into_iter()
            .chain(alice.cookies.clone())
            .collect(),
        csrf_header: false,
        ..Caller::anonymous(&app.base)
    };
    let page = app.get("/account", &mut both).await;
    assert!(page.text.contains("<h1>alice</h1>"), "{}", page.text);
    let with_bobs_token = app
        .send(
            Method::POST,
            "/notes",
            &mut both,
            Body::Form(vec![
                ("text", "as bob?".into()),
                ("csrf_token", bob.csrf.clone().unwrap()),
            ]),
        )
        .await;
    with_bobs_token.assert_problem(StatusCode::FORBIDDEN, "csrf-token-invalid");
    let with_alices_token = app
        .send(
            Method::POST,
            "/notes",
            &mut both,
            Body::Form(vec![
                ("text", "as alice".into()),
                ("csrf_token", alice.csrf.clone().unwrap()),
            ]),
        )
        .await;
    assert_eq!(
        with_alices_token.status,
        StatusCode::SEE_OTHER,
        "{}",
        with_alices_token.text
    );
    let mut bob = bob;
    let bobs_page = app.get("/account", &mut bob).await;
    assert!(!bobs_page.text.contains("as bob?"), "{}", bobs_page.text);
    app.stop().await;
}
