//! The change feed over LISTEN/NOTIFY: `pg_notify(<channel>, <json>)`; each subscriber listens on
//! a connection of its own, checks with heartbeats that it still hears, and reports
//! [`FeedEvent::Lost`] when it breaks and [`FeedEvent::Gap`] once it listens again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tessera_core::{Change, ChangeFeed, FeedEvent, StoreError};
use tokio::sync::mpsc;

use super::{ACQUIRE_TIMEOUT, PostgresStore, context, store_error};
use crate::sql::json_error;

/// Names the feed's listening connections, so an operator can tell (and a test can end) them.
pub const FEED_APPLICATION_NAME: &str = "tessera-feed";
/// Events a subscriber may fall behind by before the feed waits for it.
const FEED_BUFFER: usize = 1024;
/// Bounds the wait between attempts to listen again after the server went away.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);
/// How often the change feed checks that its listener still hears.
const HEARTBEAT: Duration = Duration::from_secs(3);
/// Not a `Change`: listeners skip it.
const HEARTBEAT_PAYLOAD: &str = "tessera-heartbeat";

/// LISTEN/NOTIFY. A notification reaches every session listening at the moment it commits and
/// no other, so a listener that loses its connection misses what was sent until it listens
/// again: it reports a [`FeedEvent::Gap`] then, and the consumer re-reads the store.
#[async_trait]
impl ChangeFeed for PostgresStore {
    async fn publish(&self, change: &Change) -> Result<(), StoreError> {
        // A change is a few hundred bytes at most, far below NOTIFY's 8000-byte payload limit.
        let payload = serde_json::to_string(change).map_err(json_error)?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&*self.channel)
            .bind(payload)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Listens before returning: every change published after this returns is delivered, unless
    /// a gap says otherwise.
    async fn subscribe(&self) -> Result<mpsc::Receiver<FeedEvent>, StoreError> {
        let listener = listen(&self.options, &self.channel)
            .await
            .map_err(|e| context("cannot listen for changes", store_error(e)))?;
        let (sender, receiver) = mpsc::channel(FEED_BUFFER);
        tokio::spawn(relay(
            listener,
            self.options.clone(),
            Arc::clone(&self.channel),
            self.pool.clone(),
            sender,
        ));
        Ok(receiver)
    }
}

/// A listener on a connection of its own (a pool of one, which `PgListener` reconnects through),
/// outside the store's pool: it holds its connection for as long as it listens.
async fn listen(options: &PgConnectOptions, channel: &str) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(options.clone().application_name(FEED_APPLICATION_NAME));
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Forwards notifications to `sender` until its receiver is dropped: a gap first, then every
/// change, and another gap whenever the connection was lost and the listener listens again.
async fn relay(
    mut listener: PgListener,
    options: PgConnectOptions,
    channel: Arc<str>,
    pool: PgPool,
    sender: mpsc::Sender<FeedEvent>,
) {
    // Nothing was heard before subscribing.
    if sender.send(FeedEvent::Gap).await.is_err() {
        return;
    }
    // A connection can die silently (a partition, a half-open socket): every HEARTBEAT a
    // heartbeat goes out on the channel, and if none came back by the next one, the listener is
    // treated as lost. Any node's heartbeat proves the listener hears.
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut awaiting_heartbeat = false;
    loop {
        let received = tokio::select! {
            () = sender.closed() => return,
            received = listener.try_recv() => received,
            _ = heartbeat.tick() => {
                if awaiting_heartbeat {
                    tracing::warn!(%channel, "no heartbeat came back on the change feed");
                    Ok(None)
                } else {
                    awaiting_heartbeat = true;
                    let sent = tokio::time::timeout(
                        HEARTBEAT / 2,
                        sqlx::query("SELECT pg_notify($1, $2)")
                            .bind(&*channel)
                            .bind(HEARTBEAT_PAYLOAD)
                            .execute(&pool),
                    )
                    .await;
                    if !matches!(sent, Ok(Ok(_))) {
                        tracing::debug!(%channel, "could not send a change-feed heartbeat");
                    }
                    continue;
                }
            }
        };
        let event = match received {
            Ok(Some(notification)) if notification.payload() == HEARTBEAT_PAYLOAD => {
                awaiting_heartbeat = false;
                continue;
            }
            Ok(Some(notification)) => {
                match serde_json::from_str::<Change>(notification.payload()) {
                    Ok(change) => FeedEvent::Change(change),
                    Err(e) => {
                        tracing::warn!(
                            %channel,
                            error = %e,
                            bytes = notification.payload().len(),
                            "a change notification does not decode; treating it as a gap"
                        );
                        FeedEvent::Gap
                    }
                }
            }
            // `Ok(None)`: the connection was lost (`PgListener` would reconnect on the next call);
            // `Err`: reconnecting failed, or the connection failed in a way the listener does not
            // recover from. Either way: say so at once, then listen again on a fresh connection
            // and report the gap only once it is listening.
            Ok(None) | Err(_) => {
                if let Err(e) = &received {
                    tracing::warn!(%channel, error = %e, "change feed lost its connection");
                } else {
                    tracing::warn!(%channel, "change feed lost its connection");
                }
                if sender.send(FeedEvent::Lost).await.is_err() {
                    return;
                }
                drop(listener);
                let Some(again) = listen_again(&options, &channel, &sender).await else {
                    return;
                };
                listener = again;
                awaiting_heartbeat = false;
                heartbeat.reset();
                tracing::info!(%channel, "change feed listening again");
                FeedEvent::Gap
            }
        };
        if sender.send(event).await.is_err() {
            return;
        }
    }
}

/// Retries [`listen`] with a growing pause until it works, or until the receiver is dropped
/// (`None`).
async fn listen_again(
    options: &PgConnectOptions,
    channel: &str,
    sender: &mpsc::Sender<FeedEvent>,
) -> Option<PgListener> {
    let mut pause = Duration::from_millis(100);
    loop {
        let attempt = tokio::select! {
            () = sender.closed() => return None,
            attempt = listen(options, channel) => attempt,
        };
        match attempt {
            Ok(listener) => return Some(listener),
            Err(e) => tracing::warn!(%channel, error = %e, "change feed cannot listen yet"),
        }
        tokio::select! {
            () = sender.closed() => return None,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_RECONNECT_DELAY);
    }
}
