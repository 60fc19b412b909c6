//! The change feed over Redis pub/sub: `PUBLISH Pchanges <json>`; each subscriber holds its own
//! connection (RESP3, so messages arrive as pushes on a channel), and reports
//! [`FeedEvent::Lost`] when it breaks and [`FeedEvent::Gap`] once it listens again.

use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, Msg, PushInfo, PushKind, cmd};
use async_trait::async_trait;
use tessera_core::StoreError;
use tessera_core::feed::{Change, ChangeFeed, FeedEvent};
use tokio::sync::mpsc;

use super::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT, RedisStore, call};

/// Events buffered for a subscriber that is slow to read them.
const BUFFER: usize = 1024;
/// The first wait before resubscribing; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often an idle subscription checks that Redis still answers (a connection can die
/// without closing, behind a network partition).
const PING_EVERY: Duration = Duration::from_secs(5);

#[async_trait]
impl ChangeFeed for RedisStore {
    async fn publish(&self, change: &Change) -> Result<(), StoreError> {
        let payload = serde_json::to_string(change)
            .map_err(|e| StoreError::Other(format!("change does not encode: {e}")))?;
        let mut conn = self.conn();
        let _receivers: i64 = call(
            "PUBLISH",
            cmd("PUBLISH")
                .arg(self.keys.changes())
                .arg(payload)
                .query_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    /// Subscribes before returning (an error when Redis cannot be reached), then follows the
    /// channel in a task that ends when the receiver is dropped.
    async fn subscribe(&self) -> Result<mpsc::Receiver<FeedEvent>, StoreError> {
        let listener = Listener {
            client: self.feed_client.clone(),
            channel: self.keys.changes(),
        };
        let subscription = listener.subscribe().await?;
        let (events, receiver) = mpsc::channel(BUFFER);
        tokio::spawn(listener.follow(subscription, events));
        Ok(receiver)
    }
}

struct Listener {
    client: Client,
    channel: String,
}

/// A live subscription: its connection, and where its messages arrive.
struct Subscription {
    conn: MultiplexedConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

enum Ended {
    /// The connection broke: resubscribe.
    Broken,
    /// The receiver was dropped: stop.
    Unsubscribed,
}

impl Listener {
    async fn subscribe(&self) -> Result<Subscription, StoreError> {
        let (push_sender, pushes) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_push_sender(push_sender);
        let mut conn = call(
            "connect for the change feed",
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        call("SUBSCRIBE", conn.subscribe(&self.channel)).await?;
        Ok(Subscription { conn, pushes })
    }

    async fn follow(self, mut subscription: Subscription, events: mpsc::Sender<FeedEvent>) {
        // Nothing was heard before subscribing.
        if events.send(FeedEvent::Gap).await.is_err() {
            return;
        }
        loop {
            if let Ended::Unsubscribed = self.listen(&mut subscription, &events).await {
                return;
            }
            tracing::warn!(channel = %self.channel, "the Redis change feed broke; resubscribing");
            if events.send(FeedEvent::Lost).await.is_err() {
                return;
            }
            let Some(again) = self.resubscribe(&events).await else {
                return;
            };
            subscription = again;
            tracing::info!(channel = %self.channel, "the Redis change feed is back");
            // Changes published while we were away are lost: say so.
            if events.send(FeedEvent::Gap).await.is_err() {
                return;
            }
        }
    }

    /// Forwards changes until the subscription breaks or the receiver goes away.
    async fn listen(
        &self,
        subscription: &mut Subscription,
        events: &mpsc::Sender<FeedEvent>,
    ) -> Ended {
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            tokio::select! {
                () = events.closed() => return Ended::Unsubscribed,
                push = subscription.pushes.recv() => {
                    let Some(push) = push else {
                        return Ended::Broken;
                    };
                    match push.kind {
                        PushKind::Disconnection => return Ended::Broken,
                        PushKind::Message => {
                            // A message this node cannot read (a newer node's change, during a
                            // rolling upgrade) may have been a revocation: re-read everything.
                            let event = decode(push).map_or(FeedEvent::Gap, FeedEvent::Change);
                            if events.send(event).await.is_err() {
                                return Ended::Unsubscribed;
                            }
                        }
                        // Subscription confirmations and the like.
                        _ => {}
                    }
                }
                _ = ping.tick() => {
                    let pong: Result<String, _> =
                        call("PING", cmd("PING").query_async(&mut subscription.conn)).await;
                    if let Err(e) = pong {
                        tracing::warn!(error = %e, "the Redis change feed does not answer");
                        return Ended::Broken;
                    }
                }
            }
        }
    }

    /// Tries again, backing off, until subscribed; `None` when the receiver went away meanwhile.
    async fn resubscribe(&self, events: &mpsc::Sender<FeedEvent>) -> Option<Subscription> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            tokio::select! {
                () = events.closed() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            match self.subscribe().await {
                Ok(subscription) => return Some(subscription),
                Err(e) => {
                    tracing::debug!(error = %e, ?backoff, "resubscribing to the Redis change feed failed");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// A message's change; `None` (logged) for anything that is not one.
fn decode(push: PushInfo) -> Option<Change> {
    let msg = Msg::from_push_info(push)?;
    match serde_json::from_slice(msg.get_payload_bytes()) {
        Ok(change) => Some(change),
        Err(e) => {
            tracing::warn!(error = %e, "a message on the Redis change feed does not decode; treating it as a gap");
            None
        }
    }
}
