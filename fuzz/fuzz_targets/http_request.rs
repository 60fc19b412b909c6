//! The whole HTTP surface with any credential headers a client (or a hostile sibling subdomain)
//! can send: cookies, `Authorization`, `X-CSRF-Token`, `Origin`, `Sec-Fetch-Site`,
//! `X-Forwarded-For`, on every authenticated route shape.
//!
//! The harness holds a live login in each model; a header value may splice in its real
//! credentials (byte 0x01 then a letter, see `CREDENTIALS`), so the fuzzer can build the tricks a
//! sibling subdomain plays with real cookies (encoded names, duplicates, order). Two properties:
//! no input is a server error, and a protected route answers 2xx only when the request carried a
//! credential the server issued.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use tessera_core::token::MasterKey;
use tessera_core::{
    Argon2Params, PasswordsConfig, Rate, Services, ServicesConfig, Stores, SystemClock,
    ThrottleConfig,
};
use tessera_store::MemoryStore;
use tower::ServiceExt;

const USER: &str = "fuzz-user";
const PASSWORD: &str = "correct horse battery staple";

/// The credentials of the harness's logins, spliced in where a header value has 0x01 and then:
/// `S` session id, `C` the session's CSRF token, `A` a bearer access token, `H` the hybrid access
/// cookie, `R` the hybrid refresh cookie, `X` the hybrid CSRF token.
const CREDENTIALS: &[u8] = b"SCAHRX";

#[derive(Default)]
struct Credentials {
    session: String,
    session_csrf: String,
    access: String,
    hybrid_access: String,
    hybrid_refresh: String,
    hybrid_csrf: String,
}

impl Credentials {
    fn get(&self, letter: u8) -> &str {
        match letter {
            b'S' => &self.session,
            b'C' => &self.session_csrf,
            b'A' => &self.access,
            b'H' => &self.hybrid_access,
            b'R' => &self.hybrid_refresh,
            _ => &self.hybrid_csrf,
        }
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    credentials: Mutex<Credentials>,
}

fn relaxed() -> Rate {
    Rate {
        burst: 1_000_000,
        per_minute: 1_000_000,
    }
}

impl Harness {
    fn call(&self, request: Request<Body>) -> Response<Body> {
        self.runtime
            .block_on(self.router.clone().oneshot(request))
            .unwrap()
    }

    /// Logs in with `path`'s model; the answer's JSON and its `Set-Cookie` values.
    fn login(&self, path: &str) -> (serde_json::Value, Vec<(String, String)>) {
        let response = self.call(
            Request::post(path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    serde_json::json!({"username": USER, "password": PASSWORD}).to_string(),
                ))
                .unwrap(),
        );
        assert_eq!(response.status(), StatusCode::OK, "login at {path}");
        let cookies = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next()?.split_once('='))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        let body = self
            .runtime
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
            .unwrap();
        (serde_json::from_slice(&body).unwrap(), cookies)
    }

    fn login_session(&self) {
        let (json, cookies) = self.login("/v1/session/login");
        let mut c = self.credentials.lock().unwrap();
        c.session = cookie(&cookies, "__Host-tessera");
        c.session_csrf = json["csrf_token"].as_str().unwrap().to_owned();
    }

    fn login_token(&self) {
        let (json, _) = self.login("/v1/token");
        self.credentials.lock().unwrap().access = json["access_token"].as_str().unwrap().to_owned();
    }

    fn login_hybrid(&self) {
        let (json, cookies) = self.login("/v1/hybrid/login");
        let mut c = self.credentials.lock().unwrap();
        c.hybrid_access = cookie(&cookies, "__Host-tessera-at");
        c.hybrid_refresh = cookie(&cookies, "__Host-tessera-rt");
        c.hybrid_csrf = json["csrf_token"].as_str().unwrap().to_owned();
    }
}

fn cookie(cookies: &[(String, String)], name: &str) -> String {
    cookies
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap()
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let router = runtime.block_on(async {
            let config = ServicesConfig {
                passwords: PasswordsConfig {
                    argon2: Argon2Params::insecure_fast_for_tests(),
                    max_concurrent: 1,
                    queue_timeout: Duration::from_secs(30),
                    ..PasswordsConfig::default()
                },
                throttle: ThrottleConfig {
                    per_account: relaxed(),
                    per_ip: relaxed(),
                    refresh_per_ip: relaxed(),
                    ..ThrottleConfig::default()
                },
                // No cap: the harness's logins pile up as it logs in again, and none may end.
                max_logins_per_user: 0,
                ..ServicesConfig::default()
            };
            let services = Services::build(
                Stores::from_one(MemoryStore::new()),
                Arc::new(SystemClock),
                MasterKey::from_bytes(&[9; 32]).unwrap(),
                config,
            )
            .await
            .unwrap();
            services.spawn_follower();
            let http = tessera_http::HttpConfig {
                introspection_clients: vec![tessera_http::IntrospectionClient {
                    id: "api".into(),
                    secret: "an-introspection-secret".into(),
                }],
                ..tessera_http::HttpConfig::default()
            };
            let state = tessera_http::AppState::new(services, http).unwrap();
            tessera_http::router(state)
        });
        let harness = Harness {
            runtime,
            router,
            credentials: Mutex::default(),
        };
        let created = harness.call(
            Request::post("/v1/users")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    serde_json::json!({"username": USER, "password": PASSWORD}).to_string(),
                ))
                .unwrap(),
        );
        assert!(created.status().is_success(), "{}", created.status());
        harness.login_session();
        harness.login_token();
        harness.login_hybrid();
        harness
    })
}

const ROUTES: [(&str, &str); 10] = [
    ("GET", "/v1/me"),
    ("GET", "/v1/session"),
    ("DELETE", "/v1/session"),
    ("PATCH", "/v1/session/data"),
    ("POST", "/v1/hybrid/refresh"),
    ("DELETE", "/v1/hybrid/session"),
    ("GET", "/v1/hybrid/session"),
    ("POST", "/v1/token/introspect"),
    ("GET", "/v1/verify"),
    ("GET", "/v1/revocations/stream"),
];

/// Routes that answer 2xx only to a caller with a credential.
const PROTECTED: [(&str, &str); 4] = [
    ("GET", "/v1/me"),
    ("GET", "/v1/session"),
    ("PATCH", "/v1/session/data"),
    ("GET", "/v1/hybrid/session"),
];

const HEADERS: [&str; 6] = [
    "cookie",
    "authorization",
    "x-csrf-token",
    "origin",
    "sec-fetch-site",
    "x-forwarded-for",
];

/// The one cookie a route authenticates by.
fn credential_cookie(method: &str, path: &str) -> Option<&'static str> {
    match (method, path) {
        ("GET", "/v1/session") | ("PATCH", "/v1/session/data") => Some("__Host-tessera"),
        ("GET", "/v1/hybrid/session") => Some("__Host-tessera-rt"),
        _ => None,
    }
}

/// How many pairs named exactly `name` the `Cookie` headers carry.
fn cookie_count(headers: &[Vec<u8>], name: &str) -> usize {
    headers
        .iter()
        .flat_map(|h| h.split(|b| *b == b';'))
        .filter(|pair| {
            let pair = pair.trim_ascii();
            pair.split(|b| *b == b'=').next() == Some(name.as_bytes()) && pair.contains(&b'=')
        })
        .count()
}

/// `value` with every 0x01 + letter replaced by that credential; whether any was.
fn splice(value: &[u8], credentials: &Credentials) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(value.len());
    let mut spliced = false;
    let mut bytes = value.iter().copied();
    while let Some(b) = bytes.next() {
        if b == 0x01 {
            if let Some(letter) = bytes.next() {
                let letter = if CREDENTIALS.contains(&letter) {
                    letter
                } else {
                    CREDENTIALS[usize::from(letter) % CREDENTIALS.len()]
                };
                out.extend_from_slice(credentials.get(letter).as_bytes());
                spliced = true;
            }
        } else {
            out.push(b);
        }
    }
    (out, spliced)
}

fuzz_target!(|data: &[u8]| {
    let Some((&route, rest)) = data.split_first() else {
        return;
    };
    let h = harness();
    let (method, path) = ROUTES[usize::from(route) % ROUTES.len()];
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path);
    // The rest: header values separated by 0xFF, given to the headers in turn (some twice).
    let mut credentialed = false;
    let mut cookie_headers: Vec<Vec<u8>> = Vec::new();
    {
        let credentials = h.credentials.lock().unwrap();
        for (i, value) in rest.split(|b| *b == 0xFF).enumerate().take(12) {
            let (value, spliced) = splice(value, &credentials);
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                credentialed |= spliced;
                let name = HEADERS[i % HEADERS.len()];
                if name == "cookie" {
                    cookie_headers.push(value.as_bytes().to_vec());
                }
                request = request.header(HeaderName::from_static(name), value);
            }
        }
    }
    let Ok(request) = request.body(Body::from("{}")) else {
        return;
    };
    let status = h.call(request).status();
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_success() && PROTECTED.contains(&(method, path)) {
        assert!(
            credentialed,
            "{method} {path} answered {status} without a credential"
        );
    }
    // Two values for the credential cookie a route reads: the browser cannot tell us which one
    // this site set (a sibling subdomain may have set the other), so it is never accepted.
    if let Some(name) = credential_cookie(method, path)
        && cookie_count(&cookie_headers, name) > 1
    {
        assert!(
            !status.is_success(),
            "{method} {path} answered {status} to two {name} cookies"
        );
    }
    // A logout or a refresh that went through ended or rotated the harness's login: log in again.
    if status.is_success() {
        match (method, path) {
            ("DELETE", "/v1/session") => h.login_session(),
            ("POST", "/v1/hybrid/refresh") | ("DELETE", "/v1/hybrid/session") => h.login_hybrid(),
            _ => {}
        }
    }
});
