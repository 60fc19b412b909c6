//! Following the revocation stream: connect, apply, and on any trouble reconnect with backoff,
//! sending `Last-Event-ID` so the server can replay what was missed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use secrecy::ExposeSecret;
use tessera_wire::{REVOCATION_EVENT, Revocation, SNAPSHOT_EVENT, Snapshot};
use tokio::time::Instant;

use crate::sse::{SseItem, SseParser};
use crate::verifier::{ServiceCredentials, Shared};

/// The longest `retry` a server may ask for.
const MAX_RETRY_HINT: Duration = Duration::from_secs(30);

pub(crate) struct StreamConfig {
    pub(crate) url: String,
    pub(crate) credentials: ServiceCredentials,
    pub(crate) grace: Duration,
    pub(crate) heartbeat_timeout: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) max_event_bytes: usize,
    pub(crate) replay_settle: Duration,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("connecting took longer than {0:?}")]
    ConnectTimeout(Duration),
    #[error("request failed: {0}")]
    Request(reqwest::Error),
    #[error("wrong service credentials (401)")]
    Unauthorized,
    #[error("the credentials are not a service client's (403)")]
    Forbidden,
    #[error("answered {0}")]
    Status(reqwest::StatusCode),
    #[error("answered with {0:?}, not an event stream")]
    NotEventStream(String),
    #[error("silent for longer than {0:?}")]
    Silent(Duration),
    #[error("reading failed: {0}")]
    Read(reqwest::Error),
    #[error("the server closed the stream")]
    Closed,
    #[error("{0}")]
    TooLarge(#[from] crate::sse::TooLarge),
    #[error("undecodable {event} event: {error}")]
    Undecodable {
        event: &'static str,
        error: serde_json::Error,
    },
}

/// Per-connection progress that outlives a connection.
struct Cursor {
    /// The id of the last event applied; sent as `Last-Event-ID`.
    last_id: Option<String>,
    /// The server's `retry`, if it sent one.
    retry: Option<Duration>,
}

pub(crate) async fn follow(shared: Arc<Shared>, client: reqwest::Client, config: StreamConfig) {
    let mut cursor = Cursor {
        last_id: None,
        retry: None,
    };
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
    loop {
        let mut caught_up = false;
        let ended = connect(&shared, &client, &config, &mut cursor, &mut caught_up).await;
        shared.gate.lost(config.grace);
        match &ended {
            Ended::Unauthorized | Ended::Forbidden => {
                tracing::error!(url = %config.url, client_id = %config.credentials.client_id, reason = %ended, "revocation stream refused")
            }
            _ if caught_up => {
                tracing::warn!(url = %config.url, reason = %ended, "revocation stream lost; reconnecting")
            }
            _ => {
                tracing::warn!(url = %config.url, reason = %ended, "revocation stream unavailable")
            }
        }
        if caught_up {
            backoff.reset();
        }
        let delay = match ended {
            // Credentials are not going to fix themselves quickly.
            Ended::Unauthorized | Ended::Forbidden => config.backoff_max,
            _ => backoff.next(cursor.retry),
        };
        tokio::time::sleep(delay).await;
    }
}

/// One connection, until it ends. Sets `caught_up` once the state is current on it.
async fn connect(
    shared: &Shared,
    client: &reqwest::Client,
    config: &StreamConfig,
    cursor: &mut Cursor,
    caught_up: &mut bool,
) -> Ended {
    let mut request = client
        .get(&config.url)
        .basic_auth(
            &config.credentials.client_id,
            Some(config.credentials.secret.expose_secret()),
        )
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .header(reqwest::header::CACHE_CONTROL, "no-cache");
    let resuming = match cursor.last_id.as_deref() {
        Some(id) if !id.is_empty() => match reqwest::header::HeaderValue::from_str(id) {
            Ok(value) => {
                request = request.header("last-event-id", value);
                true
            }
            Err(_) => false,
        },
        _ => false,
    };
    let mut response = match tokio::time::timeout(config.heartbeat_timeout, request.send()).await {
        Err(_) => return Ended::ConnectTimeout(config.heartbeat_timeout),
        Ok(Err(e)) => return Ended::Request(e.without_url()),
        Ok(Ok(r)) => r,
    };
    match response.status() {
        reqwest::StatusCode::OK => {}
        reqwest::StatusCode::UNAUTHORIZED => return Ended::Unauthorized,
        reqwest::StatusCode::FORBIDDEN => return Ended::Forbidden,
        other => return Ended::Status(other),
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !content_type
        .to_ascii_lowercase()
        .starts_with("text/event-stream")
    {
        return Ended::NotEventStream(content_type);
    }
    shared
        .counters
        .stream_connections
        .fetch_add(1, Ordering::Relaxed);
    let mut parser = SseParser::new(config.max_event_bytes);
    let mut items = Vec::new();
    let mut last_byte = Instant::now();
    loop {
        let silent_at = last_byte + config.heartbeat_timeout;
        // A resumed connection replays what was missed at once, in one burst, then says nothing
        // until the next change or keep-alive: a short quiet spell after the burst means the
        // replay is complete. (A comment says so at once.)
        let settling = resuming && !*caught_up;
        let deadline = if settling {
            silent_at.min(last_byte + config.replay_settle)
        } else {
            silent_at
        };
        let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
            Err(_) if settling && deadline < silent_at => {
                *caught_up = true;
                shared.gate.live();
                continue;
            }
            Err(_) => return Ended::Silent(config.heartbeat_timeout),
            Ok(Err(e)) => return Ended::Read(e.without_url()),
            Ok(Ok(None)) => return Ended::Closed,
            Ok(Ok(Some(chunk))) => chunk,
        };
        last_byte = Instant::now();
        if let Err(e) = parser.feed(&chunk, &mut items) {
            return e.into();
        }
        for item in items.drain(..) {
            match item {
                SseItem::Comment(_) => {
                    // The server writes in order: a comment after a resumed connection's replay
                    // means everything missed has been applied. Without `Last-Event-ID` only a
                    // snapshot brings the state up to date (a comment before it says nothing).
                    if resuming && !*caught_up {
                        *caught_up = true;
                        shared.gate.live();
                    }
                }
                SseItem::Retry(ms) => {
                    cursor.retry = Some(Duration::from_millis(ms).min(MAX_RETRY_HINT));
                }
                SseItem::Event { event, data, id } => match event.as_str() {
                    SNAPSHOT_EVENT => {
                        let snapshot = match serde_json::from_str::<Snapshot>(&data) {
                            Ok(s) => s,
                            Err(error) => {
                                cursor.last_id = None;
                                return Ended::Undecodable {
                                    event: SNAPSHOT_EVENT,
                                    error,
                                };
                            }
                        };
                        shared.apply_snapshot(&snapshot);
                        remember(shared, cursor, id);
                        *caught_up = true;
                        shared.gate.live();
                    }
                    REVOCATION_EVENT => {
                        let revocation = match serde_json::from_str::<Revocation>(&data) {
                            Ok(r) => r,
                            Err(error) => {
                                // A change we cannot apply (perhaps a kind newer than this
                                // crate): start over from a snapshot rather than skip it.
                                cursor.last_id = None;
                                return Ended::Undecodable {
                                    event: REVOCATION_EVENT,
                                    error,
                                };
                            }
                        };
                        shared.apply_revocation(&revocation);
                        remember(shared, cursor, id);
                    }
                    other => {
                        tracing::debug!(
                            event = other,
                            "ignoring an unknown event on the revocation stream"
                        );
                        remember(shared, cursor, id);
                    }
                },
            }
        }
    }
}

fn remember(shared: &Shared, cursor: &mut Cursor, id: String) {
    let id = (!id.is_empty()).then_some(id);
    cursor.last_id.clone_from(&id);
    *shared
        .last_event_id
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = id;
}

/// Exponential backoff with "equal jitter": half the delay fixed, half random, so many services
/// reconnecting after a server restart do not arrive together.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x7e55e7a);
        Self {
            min,
            max,
            next: min,
            seed: h.finish() | 1,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    /// The next delay. A server's `retry` replaces the first step.
    fn next(&mut self, retry: Option<Duration>) -> Duration {
        let base = if self.next == self.min {
            retry.unwrap_or(self.min)
        } else {
            self.next
        };
        self.next = (base * 2).min(self.max).max(self.min);
        let half = base / 2;
        half + half.mul_f64(self.random_unit())
    }

    fn random_unit(&mut self) -> f64 {
        // xorshift64: jitter, not secrets.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let delays: Vec<Duration> = (0..10).map(|_| b.next(None)).collect();
        for (i, d) in delays.iter().enumerate() {
            let base = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(5));
            assert!(
                *d >= base / 2 && *d <= base,
                "step {i}: {d:?} for base {base:?}"
            );
        }
        b.reset();
        assert!(b.next(None) <= Duration::from_millis(100));
        b.reset();
        let d = b.next(Some(Duration::from_secs(2)));
        assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
    }
}
