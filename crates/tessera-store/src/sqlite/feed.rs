//! The change feed of the processes that share one SQLite file — a server and the `tessera`
//! command line run beside it: each change is a row of `change_feed`, numbered in the order the
//! writes committed, and each subscription reads the rows after the last one it read.
//!
//! A publish inserts the row and wakes this process's subscriptions at once; the other processes
//! read it at their next poll, within [`POLL_INTERVAL`]. Every subscriber, the publisher's own
//! included, hears the changes in the one order of the table. A poll that fails reports
//! [`FeedEvent::Lost`], and the next one that works a [`FeedEvent::Gap`]; a subscriber that fell
//! so far behind that rows it had not read were pruned hears a gap too.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use tessera_core::{Change, ChangeFeed, FeedEvent, StoreError};
use tokio::sync::{mpsc, watch};

use super::{SqliteStore, store_error};
use crate::sql::json_error;

/// How often a subscription reads the rows other processes wrote.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The most rows one poll reads; a longer backlog is read by the polls that follow at once.
const POLL_BATCH: i64 = 512;
/// Events a subscriber may fall behind by before the feed waits for it.
const FEED_BUFFER: usize = 1024;
/// How often a subscription prunes: rows that were there at its previous prune (so at least
/// this old) are deleted. A process that does not poll for this long hears a gap.
pub(crate) const PRUNE_INTERVAL: Duration = Duration::from_secs(30);

/// What a process's subscriptions share: the sequence number of its latest publish, which wakes
/// them.
#[derive(Debug)]
pub(crate) struct FeedWake {
    published: watch::Sender<i64>,
}

impl Default for FeedWake {
    fn default() -> Self {
        Self {
            published: watch::channel(0).0,
        }
    }
}

/// One poll's harvest.
#[derive(Debug)]
pub(crate) struct Polled {
    /// The rows after the position polled from, in order: their sequence number and JSON.
    pub(crate) rows: Vec<(i64, String)>,
    /// The highest sequence number pruned so far.
    pub(crate) pruned_through: i64,
}

impl SqliteStore {
    /// Where a new subscription starts: after every row there is, and after every row pruned.
    async fn feed_position(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT max(coalesce((SELECT max(seq) FROM change_feed), 0), \
             (SELECT through FROM change_feed_pruned WHERE id = 1)) AS position",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        row.try_get::<Option<i64>, _>("position")
            .map(Option::unwrap_or_default)
            .map_err(store_error)
    }

    /// The rows after `after` (at most [`POLL_BATCH`]), then how far rows were pruned. Read in
    /// that order, a prune between the two reads is seen, so missing rows are never overlooked.
    pub(crate) async fn poll_changes(&self, after: i64) -> Result<Polled, StoreError> {
        let rows =
            sqlx::query("SELECT seq, change FROM change_feed WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after)
                .bind(POLL_BATCH)
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?
                .iter()
                .map(|row| Ok((row.try_get("seq")?, row.try_get("change")?)))
                .collect::<Result<Vec<(i64, String)>, sqlx::Error>>()
                .map_err(store_error)?;
        let pruned_through: i64 =
            sqlx::query_scalar("SELECT through FROM change_feed_pruned WHERE id = 1")
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(Polled {
            rows,
            pruned_through,
        })
    }

    /// Deletes the rows up to `through` and records that they are gone, in one transaction.
    pub(crate) async fn prune_changes(&self, through: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let deleted = sqlx::query("DELETE FROM change_feed WHERE seq <= $1")
            .bind(through)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        sqlx::query("UPDATE change_feed_pruned SET through = max(through, $1) WHERE id = 1")
            .bind(through)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(deleted)
    }
}

/// The feed of every process sharing the file (see the module's documentation).
#[async_trait]
impl ChangeFeed for SqliteStore {
    async fn publish(&self, change: &Change) -> Result<(), StoreError> {
        let payload = serde_json::to_string(change).map_err(json_error)?;
        let seq: i64 =
            sqlx::query_scalar("INSERT INTO change_feed (change) VALUES ($1) RETURNING seq")
                .bind(payload)
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
        self.feed.published.send_replace(seq);
        Ok(())
    }

    /// Every change published after this returns is delivered, unless a gap says otherwise.
    async fn subscribe(&self) -> Result<mpsc::Receiver<FeedEvent>, StoreError> {
        let position = self.feed_position().await?;
        let (sender, receiver) = mpsc::channel(FEED_BUFFER);
        let wake = self.feed.published.subscribe();
        tokio::spawn(relay(self.clone(), position, wake, sender));
        Ok(receiver)
    }
}

/// Polls for rows and forwards them to `sender` until its receiver is dropped or the store is
/// closed: a gap first, then every change in order.
async fn relay(
    store: SqliteStore,
    mut position: i64,
    mut wake: watch::Receiver<i64>,
    sender: mpsc::Sender<FeedEvent>,
) {
    // Nothing was heard before subscribing.
    if sender.send(FeedEvent::Gap).await.is_err() {
        return;
    }
    let mut lost = false;
    // Rows up to `prune_mark` were there at the previous prune: the next one deletes them.
    let mut prune_mark: Option<i64> = None;
    let mut next_prune = tokio::time::Instant::now() + PRUNE_INTERVAL;
    let mut backlog = false;
    loop {
        if !backlog {
            tokio::select! {
                () = sender.closed() => return,
                // The sender lives as long as the store this task holds: never an error.
                _ = wake.changed() => {}
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
        backlog = false;
        let polled = match store.poll_changes(position).await {
            Ok(polled) => polled,
            Err(_) if store.pool.is_closed() => return,
            Err(e) => {
                if !lost {
                    tracing::warn!(error = %e, "the change feed cannot read the database");
                    lost = true;
                    if sender.send(FeedEvent::Lost).await.is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        let mut events = Vec::with_capacity(polled.rows.len() + 1);
        if lost {
            tracing::info!("the change feed reads the database again");
            lost = false;
            events.push(FeedEvent::Gap);
        }
        if polled.pruned_through > position {
            tracing::warn!(
                position,
                pruned_through = polled.pruned_through,
                "changes were pruned before this process read them; treating it as a gap"
            );
            position = polled.pruned_through;
            if events.is_empty() {
                events.push(FeedEvent::Gap);
            }
        }
        backlog = i64::try_from(polled.rows.len()).is_ok_and(|n| n >= POLL_BATCH);
        for (seq, text) in polled.rows {
            position = position.max(seq);
            events.push(match serde_json::from_str::<Change>(&text) {
                Ok(change) => FeedEvent::Change(change),
                Err(e) => {
                    tracing::warn!(
                        seq,
                        error = %e,
                        bytes = text.len(),
                        "a change does not decode; treating it as a gap"
                    );
                    FeedEvent::Gap
                }
            });
        }
        for event in events {
            if sender.send(event).await.is_err() {
                return;
            }
        }
        if tokio::time::Instant::now() >= next_prune {
            next_prune = tokio::time::Instant::now() + PRUNE_INTERVAL;
            if let Some(mark) = prune_mark.take()
                && let Err(e) = store.prune_changes(mark).await
            {
                tracing::debug!(error = %e, "pruning the change feed failed; will retry");
            }
            prune_mark = Some(position);
        }
    }
}

#[cfg(test)]
mod tests {
    use tessera_core::UserId;

    use super::*;

    fn user_changed() -> Change {
        Change::UserChanged {
            user: UserId::generate().unwrap(),
        }
    }

    async fn next(events: &mut mpsc::Receiver<FeedEvent>) -> FeedEvent {
        tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("an event within 10 s")
            .expect("the feed is open")
    }

    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new() -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let path = std::env::temp_dir()
                .join(format!("tessera-store-feed-{}-{nanos}", std::process::id()));
            std::fs::create_dir(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Two stores on one file are two processes: each hears every change, its own included, in
    /// the one order of the table, after the gap a subscription starts with.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_on_one_file_hear_each_other_in_order() {
        let dir = TempDir::new();
        let path = dir.0.join("tessera.db");
        let one = SqliteStore::open(&path).await.unwrap();
        let two = SqliteStore::open(&path).await.unwrap();
        // Published before anyone subscribed: not delivered.
        one.publish(&user_changed()).await.unwrap();
        let mut heard_by_one = one.subscribe().await.unwrap();
        let mut heard_by_two = two.subscribe().await.unwrap();
        for events in [&mut heard_by_one, &mut heard_by_two] {
            assert_eq!(next(events).await, FeedEvent::Gap, "a gap comes first");
        }
        let changes = [user_changed(), Change::KeysChanged, user_changed()];
        one.publish(&changes[0]).await.unwrap();
        two.publish(&changes[1]).await.unwrap();
        one.publish(&changes[2]).await.unwrap();
        for events in [&mut heard_by_one, &mut heard_by_two] {
            for change in &changes {
                assert_eq!(next(events).await, FeedEvent::Change(change.clone()));
            }
        }
        one.close().await;
        two.close().await;
    }

    /// A poll that fails is a loss at once, and the first that works again a gap; then the feed
    /// goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_poll_is_lost_then_a_gap_and_the_feed_goes_on() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let mut events = store.subscribe().await.unwrap();
        assert_eq!(next(&mut events).await, FeedEvent::Gap);
        sqlx::query("ALTER TABLE change_feed RENAME TO change_feed_away")
            .execute(&store.pool)
            .await
            .unwrap();
        assert_eq!(next(&mut events).await, FeedEvent::Lost);
        sqlx::query("ALTER TABLE change_feed_away RENAME TO change_feed")
            .execute(&store.pool)
            .await
            .unwrap();
        assert_eq!(next(&mut events).await, FeedEvent::Gap);
        let change = user_changed();
        store.publish(&change).await.unwrap();
        assert_eq!(next(&mut events).await, FeedEvent::Change(change));
    }

    /// Rows a reader had not read yet that were pruned make a gap; a row that does not decode is
    /// one too.
    #[tokio::test]
    async fn pruned_or_undecodable_rows_are_gaps() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        for _ in 0..3 {
            store.publish(&user_changed()).await.unwrap();
        }
        assert_eq!(store.prune_changes(2).await.unwrap(), 2);
        let polled = store.poll_changes(0).await.unwrap();
        assert_eq!(
            polled.pruned_through, 2,
            "a reader at 0 missed rows 1 and 2"
        );
        assert_eq!(polled.rows.len(), 1);
        assert_eq!(store.feed_position().await.unwrap(), 3);
        // Pruning everything keeps the position: numbers are never handed out again.
        store.prune_changes(3).await.unwrap();
        assert_eq!(store.feed_position().await.unwrap(), 3);

        let mut events = store.subscribe().await.unwrap();
        assert_eq!(next(&mut events).await, FeedEvent::Gap);
        sqlx::query("INSERT INTO change_feed (change) VALUES ('{\"kind\":\"exploded\"}')")
            .execute(&store.pool)
            .await
            .unwrap();
        store.publish(&Change::KeysChanged).await.unwrap();
        assert_eq!(next(&mut events).await, FeedEvent::Gap);
        assert_eq!(
            next(&mut events).await,
            FeedEvent::Change(Change::KeysChanged)
        );
    }
}
