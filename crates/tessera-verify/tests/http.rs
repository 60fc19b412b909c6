//! The axum extractor and the tower layer: what a client sees.

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::Value;
use support::{AUDIENCE, CLIENT_ID, CLIENT_SECRET, FakeTessera, ISSUER, SigningKey, claims};
use tessera_verify::{RequireBearerLayer, VerifiedToken, Verifier};
use tower::ServiceExt;

async fn verifier(fake: &FakeTessera) -> Verifier {
    let v = Verifier::builder(ISSUER, AUDIENCE)
        .server_url(&fake.base)
        .service_credentials(CLIENT_ID, CLIENT_SECRET)
        .build()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), v.ready())
        .await
        .unwrap();
    v
}

fn routes(verifier: Verifier) -> Router {
    let layered = Router::new()
        .route(
            "/layered",
            get(|Extension(t): Extension<VerifiedToken>| async move { t.subject().to_owned() }),
        )
        .route(
            // The extractor reuses what the layer verified.
            "/layered-extractor",
            get(|t: VerifiedToken| async move { t.subject().to_owned() }),
        )
        .route_layer(RequireBearerLayer::new(verifier.clone()));
    Router::new()
        .route(
            "/extractor",
            get(|t: VerifiedToken| async move { t.subject().to_owned() }),
        )
        .route(
            "/optional",
            get(|t: Option<VerifiedToken>| async move {
                t.map_or("anonymous".to_owned(), |t| t.subject().to_owned())
            }),
        )
        .merge(layered)
        .with_state(verifier)
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn problem(&self) -> Value {
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let doc: Value = serde_json::from_slice(&self.body).unwrap();
        assert_eq!(doc["status"], self.status.as_u16());
        assert!(doc["detail"].is_string());
        doc
    }

    fn challenge(&self) -> Option<&str> {
        self.headers
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap())
    }
}

async fn call(app: &Router, path: &str, authorization: &[&str]) -> Answer {
    let mut request = Request::get(path);
    for value in authorization {
        request = request.header(header::AUTHORIZATION, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn the_extractor_and_the_layer_answer_alike() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let app = routes(verifier(&fake).await);
    let token = key.sign(&claims("usr_1", "j1"));
    let bearer = format!("Bearer {token}");
    let lower = format!("bearer {token}");
    let bad = key.sign(&serde_json::json!({"sub": "usr_1"}));
    let bad = format!("Bearer {bad}");

    for path in ["/extractor", "/layered", "/layered-extractor"] {
        for auth in [&bearer, &lower] {
            let ok = call(&app, path, &[auth]).await;
            assert_eq!(ok.status, StatusCode::OK, "{path}");
            assert_eq!(ok.body, b"usr_1");
        }

        let missing = call(&app, path, &[]).await;
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
        assert_eq!(missing.challenge(), Some("Bearer"));
        missing.problem();

        let basic = call(&app, path, &["Basic dXNlcjpwYXNz"]).await;
        assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
        assert_eq!(basic.challenge(), Some("Bearer"));

        let invalid = call(&app, path, &[&bad]).await;
        assert_eq!(invalid.status, StatusCode::UNAUTHORIZED);
        assert_eq!(invalid.challenge(), Some("Bearer error=\"invalid_token\""));
        let doc = invalid.problem();
        assert_eq!(doc["title"], "Unauthorized");

        let two = call(&app, path, &[&bearer, &bearer]).await;
        assert_eq!(
            two.status,
            StatusCode::BAD_REQUEST,
            "two Authorization headers"
        );
        assert_eq!(two.challenge(), Some("Bearer error=\"invalid_request\""));
        two.problem();

        for malformed in ["Bearer", "Bearer ", "Bearer a b"] {
            let answer = call(&app, path, &[malformed]).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{malformed:?}");
        }
    }

    assert_eq!(call(&app, "/optional", &[]).await.body, b"anonymous");
    assert_eq!(call(&app, "/optional", &[&bearer]).await.body, b"usr_1");
    assert_eq!(
        call(&app, "/optional", &[&bad]).await.status,
        StatusCode::UNAUTHORIZED,
        "a token that is there must be valid"
    );
}

/// An application state that holds the verifier among other things.
#[derive(Clone)]
struct AppState {
    verifier: Verifier,
    greeting: &'static str,
}

impl axum::extract::FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Verifier {
        state.verifier.clone()
    }
}

#[tokio::test]
async fn the_extractor_finds_the_verifier_in_a_larger_state() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let state = AppState {
        verifier: verifier(&fake).await,
        greeting: "hello",
    };
    let app = Router::new()
        .route(
            "/hello",
            get(
                |axum::extract::State(s): axum::extract::State<AppState>, t: VerifiedToken| async move {
                    format!("{} {}", s.greeting, t.subject())
                },
            ),
        )
        .with_state(state);
    let token = key.sign(&claims("usr_1", "j1"));
    let answer = call(&app, "/hello", &[&format!("Bearer {token}")]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, b"hello usr_1");
    assert_eq!(
        call(&app, "/hello", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn unavailable_state_is_a_503_not_a_401() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    // The stream never delivers a snapshot: refused connections.
    fake.refuse_streams(true);
    let verifier = Verifier::builder(ISSUER, AUDIENCE)
        .server_url(&fake.base)
        .service_credentials(CLIENT_ID, CLIENT_SECRET)
        .build()
        .unwrap();
    let app = routes(verifier);
    let token = key.sign(&claims("usr_1", "j1"));
    for path in ["/extractor", "/layered"] {
        let answer = call(&app, path, &[&format!("Bearer {token}")]).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers[header::RETRY_AFTER], "1");
        assert_eq!(answer.challenge(), None);
        answer.problem();
    }
}

/// A token bound to a DPoP key: the extractor and the layer want `Authorization: DPoP` and a
/// fresh proof of that key for this request, once; a bearer copy of it is refused.
#[tokio::test]
async fn dpop_bound_tokens_need_their_keys_proof() {
    use tessera_dpop::ProofKey;

    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let verifier = Verifier::builder(ISSUER, AUDIENCE)
        .server_url(&fake.base)
        .service_credentials(CLIENT_ID, CLIENT_SECRET)
        .public_url("https://api.example.com")
        .build()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), verifier.ready())
        .await
        .unwrap();
    let app = routes(verifier);
    let client = ProofKey::generate_es256().unwrap();
    let mut bound = claims("usr_1", "j1");
    bound["cnf"] = serde_json::json!({"jkt": client.thumbprint()});
    let token = key.sign(&bound);
    let dpop = format!("DPoP {token}");
    let proof = |path: &str| {
        client
            .proof(
                "GET",
                &format!("https://api.example.com{path}"),
                Some(&token),
                None,
            )
            .unwrap()
    };
    let with_proof = async |path: &str, proof: String| {
        let request = Request::get(path)
            .header(header::AUTHORIZATION, &dpop)
            .header("dpop", proof)
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(request).await.unwrap().status()
    };

    for path in ["/extractor", "/layered", "/layered-extractor"] {
        assert_eq!(
            with_proof(path, proof(path)).await,
            StatusCode::OK,
            "{path}"
        );
        // The same proof again: a replay.
        let once = proof(path);
        assert_eq!(
            with_proof(path, once.clone()).await,
            StatusCode::OK,
            "{path}"
        );
        assert_eq!(
            with_proof(path, once).await,
            StatusCode::UNAUTHORIZED,
            "{path} replay"
        );
        // A proof for another path.
        assert_eq!(
            with_proof(path, proof("/elsewhere")).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        // As a bearer token, or without its proof.
        let stolen = call(&app, path, &[&format!("Bearer {token}")]).await;
        assert_eq!(stolen.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(stolen.challenge().unwrap().starts_with("DPoP"), "{path}");
        stolen.problem();
        assert_eq!(
            call(&app, path, &[&dpop]).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Nested under a prefix, the proof names the whole path the client used, not the part the
    // nested router sees.
    let nested = Router::new().nest("/api", app.clone());
    let nested_call = async |proof: String| {
        let request = Request::get("/api/extractor")
            .header(header::AUTHORIZATION, &dpop)
            .header("dpop", proof)
            .body(Body::empty())
            .unwrap();
        nested.clone().oneshot(request).await.unwrap().status()
    };
    assert_eq!(nested_call(proof("/api/extractor")).await, StatusCode::OK);
    assert_eq!(
        nested_call(proof("/extractor")).await,
        StatusCode::UNAUTHORIZED
    );
    // Another key's proof.
    let thief = ProofKey::generate_es256().unwrap();
    let theirs = thief
        .proof(
            "GET",
            "https://api.example.com/extractor",
            Some(&token),
            None,
        )
        .unwrap();
    assert_eq!(
        with_proof("/extractor", theirs).await,
        StatusCode::UNAUTHORIZED
    );
    // An unbound token under the DPoP scheme.
    let plain = key.sign(&claims("usr_2", "j2"));
    let request = Request::get("/extractor")
        .header(header::AUTHORIZATION, format!("DPoP {plain}"))
        .header(
            "dpop",
            client
                .proof(
                    "GET",
                    "https://api.example.com/extractor",
                    Some(&plain),
                    None,
                )
                .unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.clone().oneshot(request).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}
