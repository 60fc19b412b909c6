//! The change feed: how a change made on one node reaches every node's in-process state
//! (revocations, keys, cached sessions and users). Implementations use an existing engine —
//! Redis pub/sub, PostgreSQL LISTEN/NOTIFY — or stay in process for a single node.
//!
//! Delivery is at-most-once: a subscriber that loses its connection may miss changes. Every
//! implementation therefore reports [`FeedEvent::Lost`] as soon as it notices its subscription
//! broke, and [`FeedEvent::Gap`] when it is listening again. From `Lost` until the state is
//! re-read after the next `Gap`, consumers stop trusting their caches; then they trust them again.
//! A revoked credential is never served after a reconnect.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::session::SessionHandle;
use crate::token::refresh::FamilyId;
use crate::user::UserId;

/// A change other nodes must apply. Small, and never a secret: sessions are named by their public
/// handle, not their id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A session ended or changed (logout, an admin, new session data): drop it from caches.
    SessionChanged {
        /// The session's public handle (never its secret id).
        handle: SessionHandle,
    },
    /// Every session of a user may have ended or changed (forced logout, password change).
    UserSessionsChanged {
        /// Whose sessions (and cached account) to drop.
        user: UserId,
    },
    /// A user's account changed (password, roles): drop the cached account.
    UserChanged {
        /// Whose cached account to drop.
        user: UserId,
    },
    /// An account was disabled or enabled: drop the cached account; resource servers following
    /// the revocation stream refuse a disabled user's tokens.
    UserDisabled {
        /// The account concerned.
        user: UserId,
        /// `true` when disabled, `false` when enabled again.
        disabled: bool,
    },
    /// An access token was revoked.
    TokenRevoked {
        /// The revoked token's `jti` claim.
        jti: String,
        /// When the entry may be forgotten: no access token it could match outlives this.
        expires_at: Timestamp,
    },
    /// Every access token of a login was revoked.
    FamilyRevoked {
        /// The login whose tokens (`fid` claim) are refused.
        family: FamilyId,
        /// When the entry may be forgotten: no access token it could match outlives this.
        expires_at: Timestamp,
    },
    /// Access tokens of a user issued before `before` are refused.
    UserRevokedBefore {
        /// Whose tokens (`sub` claim).
        user: UserId,
        /// Tokens issued earlier than this (by their `iat_ms` claim) are refused.
        before: Timestamp,
        /// When the entry may be forgotten: no access token it could match outlives this.
        expires_at: Timestamp,
    },
    /// An access token became live (allowlist mode).
    TokenAllowed {
        /// The new token's `jti` claim.
        jti: String,
        /// The login it was issued to, so revoking the family drops it.
        family: FamilyId,
        /// Whose token it is, so revoking the user drops it.
        user: UserId,
        /// The token's own expiry; the allowlist entry goes with it.
        expires_at: Timestamp,
    },
    /// Signing keys were rotated or retired: reload them.
    KeysChanged,
}

/// What a subscriber receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedEvent {
    /// A change published by some node (this one included).
    Change(Change),
    /// The subscription was interrupted and is back: changes may have been missed.
    Gap,
    /// The subscription just broke: changes are not heard until the next `Gap`.
    Lost,
}

/// A feed shared by every node.
#[async_trait]
pub trait ChangeFeed: Send + Sync + 'static {
    /// Sends a change to every subscriber, on every node (this one included). An error means it
    /// may not have reached other nodes: callers have already written the store, so other nodes
    /// catch up at their next resync, and the error is logged.
    async fn publish(&self, change: &Change) -> Result<(), StoreError>;

    /// A stream of events. The first event is always [`FeedEvent::Gap`] (nothing was heard before
    /// subscribing), and another follows every reconnection. Dropping the receiver unsubscribes.
    async fn subscribe(&self) -> Result<tokio::sync::mpsc::Receiver<FeedEvent>, StoreError>;
}

/// The longest a change can go unnoticed by another node when its announcement is lost (a
/// publish that failed for good, a node that died between its write and its publish): caches
/// re-read an entry older than this, and every node re-reads revocations and keys this often.
pub const ANNOUNCEMENT_LOSS_BOUND: std::time::Duration = std::time::Duration::from_secs(30);

/// Publishes `change`; when that fails (the connection broke), keeps trying in the background
/// with backoff, so a brief fault on the publishing side delays the news instead of losing it.
/// Changes are idempotent: a late or repeated one is harmless. `what` names the change in logs.
pub async fn publish_or_retry(feed: &Arc<dyn ChangeFeed>, change: Change, what: &'static str) {
    let Err(e) = feed.publish(&change).await else {
        return;
    };
    tracing::warn!(error = %e, what, "could not publish a change on the change feed; retrying in the background");
    let feed = Arc::clone(feed);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let started = tokio::time::Instant::now();
        let mut wait = std::time::Duration::from_millis(50);
        loop {
            tokio::time::sleep(wait).await;
            match feed.publish(&change).await {
                Ok(()) => {
                    tracing::info!(what, "published a change after retrying");
                    return;
                }
                // Past this, every node has re-read the store anyway.
                Err(e) if started.elapsed() >= ANNOUNCEMENT_LOSS_BOUND => {
                    tracing::warn!(error = %e, what, "gave up publishing a change; other nodes pick it up at their next re-read");
                    return;
                }
                Err(_) => wait = (wait * 2).min(std::time::Duration::from_secs(2)),
            }
        }
    });
}

/// The feed of a single process: a broadcast channel. It never has gaps after the first.
pub struct LocalFeed {
    sender: tokio::sync::broadcast::Sender<Change>,
}

impl Default for LocalFeed {
    fn default() -> Self {
        Self {
            sender: tokio::sync::broadcast::channel(4096).0,
        }
    }
}

impl LocalFeed {
    /// A feed with no subscribers yet; changes published before a subscription are dropped.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ChangeFeed for LocalFeed {
    async fn publish(&self, change: &Change) -> Result<(), StoreError> {
        // No subscriber yet is fine: nobody has state to update.
        let _ = self.sender.send(change.clone());
        Ok(())
    }

    async fn subscribe(&self) -> Result<tokio::sync::mpsc::Receiver<FeedEvent>, StoreError> {
        let mut changes = self.sender.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            if tx.send(FeedEvent::Gap).await.is_err() {
                return;
            }
            loop {
                let event = match changes.recv().await {
                    Ok(change) => FeedEvent::Change(change),
                    // A slow subscriber missed changes: that is a gap too.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => FeedEvent::Gap,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_feed_starts_with_a_gap_then_delivers_in_order() {
        let feed = LocalFeed::new();
        let mut rx = feed.subscribe().await.unwrap();
        assert_eq!(rx.recv().await, Some(FeedEvent::Gap));
        feed.publish(&Change::KeysChanged).await.unwrap();
        let user = UserId::generate().unwrap();
        feed.publish(&Change::UserChanged { user: user.clone() })
            .await
            .unwrap();
        assert_eq!(
            rx.recv().await,
            Some(FeedEvent::Change(Change::KeysChanged))
        );
        assert_eq!(
            rx.recv().await,
            Some(FeedEvent::Change(Change::UserChanged { user }))
        );
    }

    #[test]
    fn changes_serialize_as_tagged_json() {
        let change = Change::FamilyRevoked {
            family: FamilyId::generate().unwrap(),
            expires_at: Timestamp::from_unix_millis(0),
        };
        let json = serde_json::to_string(&change).unwrap();
        assert!(json.starts_with("{\"kind\":\"family_revoked\""), "{json}");
        assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), change);
    }
}
