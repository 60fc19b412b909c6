//! Logging in with each of the three models and presenting the credential as its client would: a
//! browser with the session cookie, an app with a bearer token, a browser with the hybrid cookies
//! (both cookies on every path, as their `Path=/` makes a browser do).
#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use super::common::{Browser, PASSWORD, SetCookie, TestApp};

pub(crate) const AT_COOKIE: &str = "__Host-tessera-at";
pub(crate) const RT_COOKIE: &str = "__Host-tessera-rt";

/// The `Set-Cookie` named `name` in a response.
pub(crate) fn set_cookie(response: &Response, name: &str) -> Option<SetCookie> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let mut parts = v.split(';').map(str::trim);
            let (n, value) = parts.next()?.split_once('=')?;
            (n == name).then(|| SetCookie {
                value: value.to_owned(),
                attributes: parts.map(str::to_owned).collect(),
            })
        })
}

/// Whether a `Set-Cookie` removes its cookie.
pub(crate) fn clears(cookie: &SetCookie) -> bool {
    cookie.value.is_empty() || cookie.get("Max-Age").as_deref() == Some("0")
}

/// A JWT's payload.
pub(crate) fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// What a browser holds after a hybrid login.
#[derive(Clone, Debug)]
pub(crate) struct Hybrid {
    pub at: Option<String>,
    pub rt: Option<String>,
    pub csrf: String,
    pub login_id: String,
}

impl Hybrid {
    /// A request as the browser sends it: both cookies (Path=/), and, when `with_csrf`, the
    /// login's CSRF token.
    pub(crate) fn request(
        &self,
        app: &TestApp,
        method: Method,
        path: &str,
        with_csrf: bool,
    ) -> RequestBuilder {
        let mut cookies = Vec::new();
        if let Some(at) = &self.at {
            cookies.push(format!("{AT_COOKIE}={at}"));
        }
        if let Some(rt) = &self.rt {
            cookies.push(format!("{RT_COOKIE}={rt}"));
        }
        let mut rb = app.request(method, path);
        if !cookies.is_empty() {
            rb = rb.header("cookie", cookies.join("; "));
        }
        if with_csrf {
            rb = rb.header("x-csrf-token", &self.csrf);
        }
        rb
    }

    /// Takes the cookies a response sets, as a browser would.
    pub(crate) fn absorb(&mut self, response: &Response) {
        if let Some(c) = set_cookie(response, AT_COOKIE) {
            self.at = (!clears(&c)).then_some(c.value);
        }
        if let Some(c) = set_cookie(response, RT_COOKIE) {
            self.rt = (!clears(&c)).then_some(c.value);
        }
    }

    /// `POST /v1/hybrid/refresh` with the CSRF token; on success the browser keeps the new cookies.
    pub(crate) async fn refresh(&mut self, app: &TestApp) -> StatusCode {
        let r = self
            .request(app, Method::POST, "/v1/hybrid/refresh", true)
            .send()
            .await
            .unwrap();
        let status = r.status();
        if status == StatusCode::OK {
            self.absorb(&r);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["csrf_token"], self.csrf.as_str());
        }
        status
    }
}

pub(crate) async fn hybrid_login_response(
    app: &TestApp,
    username: &str,
    password: &str,
) -> Response {
    app.request(Method::POST, "/v1/hybrid/login")
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
}

pub(crate) async fn hybrid_login(app: &TestApp, username: &str) -> Hybrid {
    let r = hybrid_login_response(app, username, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    let at = set_cookie(&r, AT_COOKIE).expect("the access cookie").value;
    let rt = set_cookie(&r, RT_COOKIE).expect("the refresh cookie").value;
    let body: Value = r.json().await.unwrap();
    Hybrid {
        at: Some(at),
        rt: Some(rt),
        csrf: body["csrf_token"].as_str().unwrap().to_owned(),
        login_id: body["login_id"].as_str().unwrap().to_owned(),
    }
}

/// A token-model login.
#[derive(Clone, Debug)]
pub(crate) struct Pair {
    pub access: String,
    pub refresh: String,
}

impl Pair {
    pub(crate) fn family(&self) -> String {
        claims(&self.access)["fid"].as_str().unwrap().to_owned()
    }

    /// `POST /v1/token/refresh`; on success the pair is replaced.
    pub(crate) async fn refresh(&mut self, app: &TestApp) -> StatusCode {
        let r = app
            .request(Method::POST, "/v1/token/refresh")
            .json(&json!({"refresh_token": self.refresh}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        if status == StatusCode::OK {
            let body: Value = r.json().await.unwrap();
            self.access = body["access_token"].as_str().unwrap().to_owned();
            self.refresh = body["refresh_token"].as_str().unwrap().to_owned();
        }
        status
    }
}

pub(crate) async fn token_login_response(
    app: &TestApp,
    username: &str,
    password: &str,
) -> Response {
    app.request(Method::POST, "/v1/token")
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
}

pub(crate) async fn token_login(app: &TestApp, username: &str) -> Pair {
    let r = token_login_response(app, username, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    Pair {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
    }
}

/// A login of any model.
#[derive(Clone, Debug)]
pub(crate) enum Login {
    Session(Browser),
    Token(Pair),
    Hybrid(Hybrid),
}

pub(crate) const MODELS: [&str; 3] = ["session", "token", "hybrid"];

pub(crate) async fn login(app: &TestApp, model: &str, username: &str) -> Login {
    match model {
        "session" => Login::Session(app.login(username, PASSWORD).await),
        "token" => Login::Token(token_login(app, username).await),
        "hybrid" => Login::Hybrid(hybrid_login(app, username).await),
        other => panic!("no model {other}"),
    }
}

/// The login response of any model, for tests about refusals.
pub(crate) async fn login_response(
    app: &TestApp,
    model: &str,
    username: &str,
    password: &str,
) -> Response {
    match model {
        "session" => app.login_response(username, password).await,
        "token" => token_login_response(app, username, password).await,
        "hybrid" => hybrid_login_response(app, username, password).await,
        other => panic!("no model {other}"),
    }
}

impl Login {
    pub(crate) fn model(&self) -> &'static str {
        match self {
            Login::Session(_) => "session",
            Login::Token(_) => "token",
            Login::Hybrid(_) => "hybrid",
        }
    }

    /// The id `GET /v1/sessions` lists this login under.
    pub(crate) fn id(&self) -> String {
        match self {
            Login::Session(b) => b.login["session"]["id"].as_str().unwrap().to_owned(),
            Login::Token(p) => p.family(),
            Login::Hybrid(h) => h.login_id.clone(),
        }
    }

    /// A request carrying the whole credential (and the CSRF token of the cookie models).
    pub(crate) fn request(&self, app: &TestApp, method: Method, path: &str) -> RequestBuilder {
        match self {
            Login::Session(b) => app.as_browser(b, method, path, true),
            Login::Token(p) => app.request(method, path).bearer_auth(&p.access),
            Login::Hybrid(h) => h.request(app, method, path, true),
        }
    }

    /// `GET /v1/me` with this credential.
    pub(crate) async fn me(&self, app: &TestApp) -> StatusCode {
        self.request(app, Method::GET, "/v1/me")
            .send()
            .await
            .unwrap()
            .status()
    }

    /// The refresh of the token models (the session model has none: `None`).
    pub(crate) async fn refresh(&mut self, app: &TestApp) -> Option<StatusCode> {
        match self {
            Login::Session(_) => None,
            Login::Token(p) => Some(p.refresh(app).await),
            Login::Hybrid(h) => Some(h.refresh(app).await),
        }
    }

    /// Whether this login still works: its credential authenticates, and a token login can
    /// still refresh (checked without using the refresh token up when `me` already failed).
    pub(crate) async fn alive(&mut self, app: &TestApp) -> bool {
        let me = self.me(app).await;
        let refresh = self.refresh(app).await;
        match (me, refresh) {
            (StatusCode::OK, None | Some(StatusCode::OK)) => true,
            (StatusCode::UNAUTHORIZED, None | Some(StatusCode::UNAUTHORIZED)) => false,
            other => panic!("{} login half alive: {other:?}", self.model()),
        }
    }

    /// Every secret this login holds, to look for in places they must not reach.
    pub(crate) fn secrets(&self) -> Vec<String> {
        match self {
            Login::Session(b) => vec![b.cookie.clone().unwrap(), b.csrf.clone()],
            Login::Token(p) => vec![p.access.clone(), p.refresh.clone()],
            Login::Hybrid(h) => vec![h.at.clone().unwrap(), h.rt.clone().unwrap(), h.csrf.clone()],
        }
    }
}

/// `GET /v1/sessions` as `login`.
pub(crate) async fn my_logins(app: &TestApp, login: &Login) -> Vec<Value> {
    let r = login
        .request(app, Method::GET, "/v1/sessions")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Value>().await.unwrap().as_array().unwrap().clone()
}

/// Creates the admin `root` (as an operator would, from the CLI) and logs it in for a token.
pub(crate) async fn admin(app: &TestApp) -> Pair {
    app.accounts
        .create(
            "root",
            &tessera_core::Password::new(PASSWORD),
            vec!["admin".into()],
        )
        .await
        .unwrap();
    token_login(app, "root").await
}

/// The user id of `username`.
pub(crate) async fn user_id(app: &TestApp, username: &str) -> String {
    app.accounts
        .user_by_name(username)
        .await
        .unwrap()
        .unwrap()
        .id
        .to_string()
}

/// A 429 problem with a `Retry-After` of at least a second, and no credential (no cookie set, no
/// token in the body).
pub(crate) async fn assert_throttled(r: Response, what: &str) {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{what}");
    assert!(super::common::session_cookie(&r).is_none(), "{what}");
    assert!(set_cookie(&r, AT_COOKIE).is_none(), "{what}");
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{what}: Retry-After {retry}");
    let body = super::common::problem(r, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(body.get("access_token").is_none(), "{what}");
}
