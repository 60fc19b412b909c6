//! `GET /v1/revocations/stream`: who may follow it, the snapshot it starts with, the changes it
//! sends as they happen, and resuming with `Last-Event-ID`.

mod common;
mod support;

use std::time::Duration;

use common::{Backend, Options, TestApp, problem};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use support::{admin, login, token_login, user_id};
use tessera_http::{HttpConfig, IntrospectionClient};

const CLIENT: &str = "gateway";
const SECRET: &str = "a long service secret for the stream";

on_every_backend!(
    only_service_clients_may_follow_the_stream,
    the_stream_starts_with_a_snapshot_then_sends_each_revocation,
    a_client_that_resumes_gets_exactly_what_it_missed,
);

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(
        backend,
        Options {
            http: HttpConfig {
                introspection_clients: vec![IntrospectionClient {
                    id: CLIENT.into(),
                    secret: SECRET.into(),
                }],
                ..tessera_http::HttpConfig::default()
            },
            ..Options::default()
        },
    )
    .await
}

/// Reads server-sent events from a streaming response.
struct Events {
    response: Response,
    buffer: String,
}

#[derive(Debug)]
struct Event {
    id: Option<String>,
    name: String,
    data: Value,
}

impl Events {
    async fn open(app: &TestApp, last_event_id: Option<&str>) -> Self {
        let mut request = app
            .request(Method::GET, "/v1/revocations/stream")
            .basic_auth(CLIENT, Some(SECRET));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (comments skipped), waiting at most a few seconds.
    async fn next(&mut self) -> Event {
        self.next_block(false).await.0
    }

    /// Reads until the comment `text`; panics if an event comes first.
    async fn expect_comment(&mut self, text: &str) {
        let (_, comment) = self.next_block(true).await;
        assert_eq!(comment.as_deref(), Some(text));
    }

    /// The next event, or with `comments` the next comment (an event first is a failure).
    async fn next_block(&mut self, comments: bool) -> (Event, Option<String>) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut name, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if name.is_empty() {
                    if comments {
                        let comment = block.trim().trim_start_matches(':').trim().to_owned();
                        let none = Event {
                            id: None,
                            name,
                            data: Value::Null,
                        };
                        return (none, Some(comment));
                    }
                    continue; // a comment: the heartbeat, or "caught up"
                }
                assert!(!comments, "an event where a comment was expected: {block}");
                let event = Event {
                    id,
                    name,
                    data: serde_json::from_str(&data).unwrap(),
                };
                return (event, None);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.response.chunk())
                .await
                .expect("an event within 5 s")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

async fn only_service_clients_may_follow_the_stream(backend: Backend) {
    let app = spawn(backend).await;
    let nobody = app
        .request(Method::GET, "/v1/revocations/stream")
        .send()
        .await
        .unwrap();
    let challenges: Vec<&str> = nobody
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(challenges.len(), 1, "{challenges:?}");
    assert!(challenges[0].starts_with("Basic"), "{challenges:?}");
    problem(nobody, StatusCode::UNAUTHORIZED).await;
    let wrong = app
        .request(Method::GET, "/v1/revocations/stream")
        .basic_auth(CLIENT, Some("not the secret"))
        .send()
        .await
        .unwrap();
    problem(wrong, StatusCode::UNAUTHORIZED).await;
    app.register("alice", common::PASSWORD).await;
    let pair = token_login(&app, "alice").await;
    let user = app
        .request(Method::GET, "/v1/revocations/stream")
        .bearer_auth(&pair.access)
        .send()
        .await
        .unwrap();
    let body = problem(user, StatusCode::FORBIDDEN).await;
    assert!(body["detail"].as_str().unwrap().contains("service clients"));
}

async fn the_stream_starts_with_a_snapshot_then_sends_each_revocation(backend: Backend) {
    let app = spawn(backend).await;
    let admin = admin(&app).await;
    app.register("alice", common::PASSWORD).await;
    let alice = user_id(&app, "alice").await;
    // Revoked before the stream opens: in the snapshot.
    let early = token_login(&app, "alice").await;
    let revoke = app
        .request(Method::POST, "/v1/token/revoke")
        .form(&[("token", early.refresh.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::OK);
    let mut events = Events::open(&app, None).await;
    let snapshot = events.next().await;
    assert_eq!(snapshot.name, "snapshot");
    assert!(snapshot.id.is_some());
    assert_eq!(snapshot.data["mode"], "denylist");
    let families: Vec<&str> = snapshot.data["families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fid"].as_str().unwrap())
        .collect();
    assert!(families.contains(&early.family().as_str()), "{snapshot:?}");

    // A logout of a token login: its family, as it happens.
    let pair = token_login(&app, "alice").await;
    app.request(Method::POST, "/v1/token/revoke")
        .form(&[("token", pair.access.as_str())])
        .send()
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = events.next().await;
        assert_eq!(event.name, "revocation");
        seen.push(event.data);
    }
    assert!(
        seen.iter()
            .any(|e| e["kind"] == "family" && e["fid"] == pair.family().as_str()),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|e| e["kind"] == "token"),
        "the access token itself: {seen:?}"
    );

    // Disabling an account: the per-user "not before" and the disabled account.
    app.clock.advance(Duration::from_millis(1));
    let disable = app
        .request(Method::POST, &format!("/v1/admin/users/{alice}/disable"))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    assert_eq!(disable.status(), StatusCode::OK);
    let mut kinds = Vec::new();
    while !(kinds.contains(&"user_disabled".to_owned())
        && kinds.contains(&"user_not_before".to_owned()))
    {
        let event = events.next().await;
        assert_eq!(event.data["sub"], alice.as_str(), "{event:?}");
        kinds.push(event.data["kind"].as_str().unwrap().to_owned());
    }

    // Retiring a key.
    let kid = {
        use base64::Engine;
        let header = admin.access.split('.').next().unwrap();
        let header: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(header)
                .unwrap(),
        )
        .unwrap();
        header["kid"].as_str().unwrap().to_owned()
    };
    let retire = app
        .request(Method::POST, &format!("/v1/admin/keys/{kid}/retire"))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    assert_eq!(retire.status(), StatusCode::NO_CONTENT);
    loop {
        let event = events.next().await;
        if event.data["kind"] == "key_retired" {
            assert_eq!(event.data["kid"], kid.as_str());
            break;
        }
    }
}

async fn a_client_that_resumes_gets_exactly_what_it_missed(backend: Backend) {
    let app = spawn(backend).await;
    app.register("alice", common::PASSWORD).await;
    let mut events = Events::open(&app, None).await;
    let snapshot = events.next().await;
    events.expect_comment("caught up").await;
    let last = snapshot.id.unwrap();
    drop(events);
    // Missed while disconnected.
    let session = login(&app, "token", "alice").await;
    let support::Login::Token(pair) = &session else {
        unreachable!("a token login");
    };
    app.request(Method::POST, "/v1/token/revoke")
        .form(&[("token", pair.refresh.as_str())])
        .send()
        .await
        .unwrap();
    let mut resumed = Events::open(&app, Some(&last)).await;
    let first = resumed.next().await;
    assert_eq!(first.name, "revocation", "a replay, not a snapshot");
    assert_eq!(first.data["kind"], "family");
    assert_eq!(first.data["fid"], pair.family().as_str());
    // That was all that was missed: the replay says it is complete.
    resumed.expect_comment("caught up").await;
    // An id this server never gave: a fresh snapshot.
    let mut fresh = Events::open(&app, Some("e-unknown.7")).await;
    let first = fresh.next().await;
    assert_eq!(first.name, "snapshot");
    assert!(
        first.data["families"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["fid"] == pair.family().as_str())
    );
}
