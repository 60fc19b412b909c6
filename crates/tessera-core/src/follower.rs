//! Keeps this node's in-process state exact: applies the changes other nodes publish on the change
//! feed, and when the feed breaks, stops trusting that state until the store has been re-read.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::error::{Error, StoreError};
use crate::feed::{ANNOUNCEMENT_LOSS_BOUND, Change, ChangeFeed, FeedEvent};
use crate::session::Sessions;
use crate::token::keyring::KeyRing;
use crate::token::revocation::{Revocations, STALE_READ_BOUND};

/// The longest a store call of the follower may take: a hung store must not hang the follower.
const STORE_CALL_LIMIT: Duration = Duration::from_secs(5);

/// Follows the change feed for one node.
pub struct Follower {
    /// The revocation state to update, and re-read after a gap.
    pub(crate) revocations: Revocations,
    /// The signing keys to reload when another node rotates or retires one.
    pub(crate) keyring: Arc<KeyRing>,
    /// Whose near caches of sessions and accounts to evict from, or distrust while the feed is
    /// lost.
    pub(crate) sessions: Sessions,
    /// Dates the losses and re-reads of the revocation state, which decide how long it stays
    /// trusted while the feed is lost.
    pub(crate) clock: Arc<dyn Clock>,
}

impl Follower {
    /// Runs until the process ends: subscribes, applies changes, and re-subscribes whenever the
    /// subscription ends.
    pub async fn run(self, feed: Arc<dyn ChangeFeed>) {
        let mut lost = false;
        // A gap was heard but re-reading after it failed: retry the re-read, not just a refresh.
        let mut gap_pending = false;
        let mut next_reread = tokio::time::Instant::now() + ANNOUNCEMENT_LOSS_BOUND;
        let mut first = true;
        loop {
            let mut events = match feed.subscribe().await {
                Ok(events) => {
                    // Once listening, the keys are read again: a node started at the same moment
                    // on an empty store may have made its first key after this node loaded its
                    // own, and announced it before this node listened. From here on, every new
                    // key is announced to this node.
                    if std::mem::take(&mut first) {
                        self.reload_keys().await;
                    }
                    events
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to the change feed; retrying");
                    self.lose(&mut lost);
                    self.refresh_while_lost().await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            loop {
                // While lost, re-read the store often enough that trust never lapses for long;
                // while live, now and then (however busy the feed), in case an announcement was
                // lost.
                let poll = tokio::time::sleep_until(if lost {
                    tokio::time::Instant::now() + STALE_READ_BOUND / 2
                } else {
                    next_reread
                });
                tokio::select! {
                    event = events.recv() => match event {
                        Some(FeedEvent::Change(change)) => self.apply(&change).await,
                        Some(FeedEvent::Gap) => {
                            gap_pending = true;
                            self.resume(&mut lost, &mut gap_pending).await;
                        }
                        Some(FeedEvent::Lost) => {
                            gap_pending = false;
                            self.lose(&mut lost);
                        }
                        None => {
                            gap_pending = false;
                            self.lose(&mut lost);
                            break;
                        }
                    },
                    () = poll => {
                        if gap_pending {
                            self.resume(&mut lost, &mut gap_pending).await;
                        } else if lost {
                            self.refresh_while_lost().await;
                        } else {
                            self.reread().await;
                            next_reread = tokio::time::Instant::now() + ANNOUNCEMENT_LOSS_BOUND;
                        }
                    }
                }
            }
        }
    }

    async fn apply(&self, change: &Change) {
        self.revocations.apply(change);
        self.sessions.apply(change);
        match change {
            Change::UserDisabled { user, disabled } => {
                self.revocations
                    .log()
                    .set_disabled(user.as_str(), *disabled);
            }
            Change::KeysChanged => {
                self.reload_keys().await;
                self.announce_retired_keys().await;
            }
            _ => {}
        }
    }

    /// Tells the revocation stream which keys are retired (a store read: key changes are rare).
    async fn announce_retired_keys(&self) {
        match tokio::time::timeout(STORE_CALL_LIMIT, self.keyring.recently_retired()).await {
            Ok(Ok(kids)) => self.revocations.log().set_retired_keys(kids),
            Ok(Err(e)) => tracing::warn!(error = %e, "listing retired keys failed"),
            Err(_) => tracing::warn!("listing retired keys timed out"),
        }
    }

    fn lose(&self, lost: &mut bool) {
        metrics::gauge!("tessera_change_feed_trusted").set(0.0);
        if !*lost {
            metrics::counter!("tessera_change_feed_lost_total").increment(1);
            tracing::warn!("the change feed is lost: caches are not trusted until it is back");
        }
        *lost = true;
        self.revocations.feed_lost(self.clock.now());
        self.revocations.log().lost();
        self.sessions.feed_lost();
    }

    async fn refresh_while_lost(&self) {
        // Keys first: a key retired meanwhile must stop verifying here too. If they cannot be
        // re-read, the revocation state is not refreshed either, so its trust lapses and bearer
        // checks fail closed rather than accept a key that may have been retired.
        if !self.reload_keys().await {
            return;
        }
        let refreshed = tokio::time::timeout(
            STORE_CALL_LIMIT,
            self.revocations.refresh_while_lost(self.clock.now()),
        )
        .await
        .unwrap_or_else(|_| Err(Error::Store(StoreError::Unavailable("timed out".into()))));
        if let Err(e) = refreshed {
            tracing::warn!(error = %e, "re-reading the revocations failed; bearer requests fail closed");
        }
    }

    /// With the feed live: re-reads what an announcement lost on the way (a publish that failed
    /// for good) would have told, so such a change is enforced here within
    /// [`ANNOUNCEMENT_LOSS_BOUND`]. The caches bound their entries' age the same way.
    async fn reread(&self) {
        let resynced =
            tokio::time::timeout(STORE_CALL_LIMIT, self.revocations.resync(self.clock.now()))
                .await
                .unwrap_or_else(|_| Err(Error::Store(StoreError::Unavailable("timed out".into()))));
        if let Err(e) = resynced {
            tracing::warn!(error = %e, "the periodic re-read of the revocations failed");
        }
        self.reload_keys().await;
        self.announce_retired_keys().await;
    }

    /// Re-reads the signing keys, within [`STORE_CALL_LIMIT`]; `false` when that failed.
    async fn reload_keys(&self) -> bool {
        match tokio::time::timeout(STORE_CALL_LIMIT, self.keyring.reload()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reloading the signing keys failed");
                false
            }
            Err(_) => {
                tracing::warn!("reloading the signing keys timed out");
                false
            }
        }
    }

    /// After a gap: re-read everything, then trust the caches again. If the store cannot be read,
    /// the node stays distrustful and keeps trying.
    async fn resume(&self, lost: &mut bool, gap_pending: &mut bool) {
        // The keys are part of what must be re-read before the caches are trusted again.
        if !self.reload_keys().await {
            tracing::warn!("re-reading the keys after a gap failed; retrying");
            self.lose(lost);
            return;
        }
        let resumed = tokio::time::timeout(
            STORE_CALL_LIMIT,
            self.revocations.feed_resumed(self.clock.now()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Error::Store(StoreError::Unavailable(
                "re-reading the revocations timed out".into(),
            )))
        });
        // The stream's list of disabled accounts is part of what must be re-read.
        let resumed = match resumed {
            Ok(()) => tokio::time::timeout(STORE_CALL_LIMIT, self.sessions.users().disabled_ids())
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(
                        "listing disabled accounts timed out".into(),
                    ))
                })
                .map_err(Error::from),
            Err(e) => Err(e),
        };
        match resumed {
            Ok(disabled) => {
                *gap_pending = false;
                self.sessions.feed_resumed();
                self.revocations
                    .log()
                    .resync(disabled.into_iter().map(|u| u.to_string()));
                self.announce_retired_keys().await;
                metrics::gauge!("tessera_change_feed_trusted").set(1.0);
                if *lost {
                    tracing::info!("the change feed is back; state re-read from the store");
                }
                *lost = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-reading the state after a gap failed; retrying");
                self.lose(lost);
            }
        }
    }
}
