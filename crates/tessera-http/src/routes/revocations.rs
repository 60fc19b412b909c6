//! The revocation stream: what resource servers follow to refuse revoked tokens offline.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use futures_util::stream::{self, Stream};
use tessera_core::token::stream::{StreamItem, StreamStart, Subscription};
use tessera_wire as wire;
use tokio::sync::broadcast::error::RecvError;

use crate::extract::{BearerAuth, ServiceClient};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// How often an idle stream sends a comment, well within the promised 15 s.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Follow revocations (Server-Sent Events), for resource servers that verify tokens offline.
///
/// For a service client of `tokens.introspection_clients` (HTTP Basic). The stream starts with a
/// `snapshot` event (every revoked token id, revoked login, per-user "not before", disabled
/// account and retired key still in force), then sends each change as a `revocation` event as
/// soon as any node makes it. Reconnect with `Last-Event-ID` to get only what was missed (or a
/// fresh snapshot when that is too old). A `: keep-alive` comment comes at least every 15 s; a
/// stream that falls silent longer is lost. Answers 503 while this node re-reads its state.
#[utoipa::path(
    get, path = "/v1/revocations/stream", tag = "token",
    security(("introspection_client" = [])),
    params(("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received, to resume")),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
        (status = 401, description = "No or wrong service client credentials", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A user's credential: the stream is for service clients", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This node is re-reading its revocation state; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    service_client: Option<ServiceClient>,
    user: Result<BearerAuth, ApiError>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if service_client.is_none() {
        if user.is_ok() {
            return Err(ApiError::forbidden(
                "service-client-only",
                "the revocation stream is for service clients (HTTP Basic with a client of tokens.introspection_clients), not users",
            ));
        }
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the revocation stream needs a service client's HTTP Basic credentials",
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"tessera-revocations\""),
        ));
    }
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let tokens = state.0.services.tokens.clone();
    let subscription = {
        let revocations = tokens.revocations();
        revocations
            .log()
            .subscribe(last_event_id, || revocations.snapshot(tokens.now()))
    };
    let Some(subscription) = subscription else {
        return Err(tessera_core::StoreError::Unavailable(
            "this node is re-reading its revocation state".into(),
        )
        .into());
    };
    metrics::gauge!("tessera_revocation_streams").increment(1.0);
    let events = events(tokens, subscription);
    Ok((
        // Proxies must pass events on as they come.
        [("x-accel-buffering", HeaderValue::from_static("no"))],
        Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("keep-alive")),
    )
        .into_response())
}

/// Counts open streams down when one ends, however it ends.
struct Open;

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!("tessera_revocation_streams").decrement(1.0);
    }
}

/// A snapshot as an SSE event; `None` if it cannot be encoded (the stream then ends rather than
/// leave a silent gap: the client reconnects and gets a fresh snapshot).
fn snapshot_event(id: String, snapshot: &wire::Snapshot) -> Option<Event> {
    Event::default()
        .event(wire::SNAPSHOT_EVENT)
        .id(id)
        .json_data(snapshot)
        .ok()
}

fn revocation_event(id: String, revocation: &wire::Revocation) -> Option<Event> {
    Event::default()
        .event(wire::REVOCATION_EVENT)
        .id(id)
        .json_data(revocation)
        .ok()
}

fn events(
    tokens: Arc<tessera_core::token::Tokens>,
    subscription: Subscription,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let Subscription { start, changes } = subscription;
    let mut first: Vec<Event> = Vec::new();
    match start {
        StreamStart::Snapshot { id, snapshot } => first.extend(snapshot_event(id, &snapshot)),
        StreamStart::Replay(missed) => {
            for (id, r) in missed {
                match revocation_event(id, &r) {
                    Some(event) => first.push(event),
                    // Never a silent gap: send a snapshot instead of a partial replay.
                    None => {
                        first.clear();
                        first.extend(fresh_snapshot(&tokens));
                        break;
                    }
                }
            }
        }
    }
    // Tells the client that what it missed has all been sent: from here on, it is live.
    first.push(Event::default().comment(wire::CAUGHT_UP_COMMENT));
    let rest = stream::unfold(
        (tokens, changes, Open),
        move |(tokens, mut changes, open)| async move {
            let event = match changes.recv().await {
                Ok(StreamItem::Revocation { id, revocation }) => revocation_event(id, &revocation),
                // This node re-read its state, or this connection fell behind: start over.
                Ok(StreamItem::Resync) | Err(RecvError::Lagged(_)) => fresh_snapshot(&tokens),
                Ok(StreamItem::Closed) | Err(RecvError::Closed) => None,
            }?;
            Some((Ok(event), (tokens, changes, open)))
        },
    );
    stream::iter(first.into_iter().map(Ok)).chain(rest)
}

/// Everything in force now, as an event.
fn fresh_snapshot(tokens: &tessera_core::token::Tokens) -> Option<Event> {
    let revocations = tokens.revocations();
    let (id, snapshot) = revocations
        .log()
        .snapshot(|| revocations.snapshot(tokens.now()));
    snapshot_event(id, &snapshot)
}
