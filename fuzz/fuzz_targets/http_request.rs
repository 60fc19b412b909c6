//! The whole HTTP surface with any credential headers a client (or a hostile sibling subdomain)
//! can send: cookies, `Authorization`, `X-CSRF-Token`, `Origin`, `Sec-Fetch-Site`,
//! `X-Forwarded-For`, on every authenticated route shape. No input is a server error.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tessera_core::token::MasterKey;
use tessera_core::{Services, ServicesConfig, Stores, SystemClock};
use tessera_store::MemoryStore;
use tower::ServiceExt;

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let router = runtime.block_on(async {
            let services = Services::build(
                Stores::from_one(MemoryStore::new()),
                Arc::new(SystemClock),
                MasterKey::from_bytes(&[9; 32]).unwrap(),
                ServicesConfig::default(),
            )
            .await
            .unwrap();
            services.spawn_follower();
            let state =
                tessera_http::AppState::new(services, tessera_http::HttpConfig::default()).unwrap();
            tessera_http::router(state)
        });
        Harness { runtime, router }
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

const HEADERS: [&str; 6] = [
    "cookie",
    "authorization",
    "x-csrf-token",
    "origin",
    "sec-fetch-site",
    "x-forwarded-for",
];

fuzz_target!(|data: &[u8]| {
    let Some((&route, rest)) = data.split_first() else {
        return;
    };
    let (method, path) = ROUTES[usize::from(route) % ROUTES.len()];
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path);
    // The rest: header values separated by 0xFF, given to the headers in turn (some twice).
    for (i, value) in rest.split(|b| *b == 0xFF).enumerate().take(12) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            request = request.header(HeaderName::from_static(HEADERS[i % HEADERS.len()]), value);
        }
    }
    let Ok(request) = request.body(Body::from("{}")) else {
        return;
    };
    let h = harness();
    let status = h
        .runtime
        .block_on(h.router.clone().oneshot(request))
        .map(|r| r.status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
});
