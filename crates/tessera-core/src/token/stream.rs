//! The source of the revocation stream that resource servers follow (`GET
//! /v1/revocations/stream`): every change to what this node refuses — revoked tokens and logins,
//! per-user "not before" times, disabled accounts, retired keys — in the order this node learned
//! of it, numbered so that a client that reconnects can be sent exactly what it missed.
//!
//! The stream is only as complete as this node's own state: while the change feed is lost it is
//! closed (and refused), and when the feed is back every client is sent a fresh snapshot.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use tessera_wire as wire;
use tokio::sync::broadcast;

/// How many recent changes are kept for clients that reconnect with `Last-Event-ID`.
const REPLAY_CAPACITY: usize = 4096;

/// What a stream connection is told after it started.
#[derive(Clone, Debug)]
pub enum StreamItem {
    /// One change, with its event id.
    Revocation {
        /// The SSE event id (`<epoch>.<sequence>`) a reconnecting client sends back as
        /// `Last-Event-ID`.
        id: String,
        /// What is now refused.
        revocation: Arc<wire::Revocation>,
    },
    /// This node re-read its state: send a fresh snapshot.
    Resync,
    /// This node lost the change feed: end the stream (clients reconnect, and fail closed after
    /// their grace if they cannot).
    Closed,
}

/// How a new connection starts.
pub enum StreamStart {
    /// Everything in force now, and the event id it stands for.
    Snapshot {
        /// The event id of the last change the snapshot includes.
        id: String,
        /// Every revocation, disabled user and retired key in force.
        snapshot: wire::Snapshot,
    },
    /// Only what the client missed since its `Last-Event-ID`.
    Replay(Vec<(String, Arc<wire::Revocation>)>),
}

/// A new connection: how it starts, then every change after that.
pub struct Subscription {
    /// What to send first.
    pub start: StreamStart,
    /// Every change after the start; a receiver that falls behind (lags) is sent a fresh
    /// snapshot instead.
    pub changes: broadcast::Receiver<StreamItem>,
}

struct Log {
    /// Changes to the epoch invalidate every earlier event id (after a gap, ids of the previous
    /// epoch may describe a state that was replaced).
    epoch: String,
    seq: u64,
    recent: VecDeque<(u64, Arc<wire::Revocation>)>,
    available: bool,
    disabled: BTreeSet<String>,
    retired_keys: BTreeSet<String>,
}

/// The log behind the stream. Cheap when nobody listens.
pub struct RevocationLog {
    log: Mutex<Log>,
    sender: broadcast::Sender<StreamItem>,
}

impl Default for RevocationLog {
    fn default() -> Self {
        Self::new()
    }
}

fn new_epoch() -> String {
    crate::secret::random_public_id("e").unwrap_or_else(|_| {
        // No OS randomness: a time-based epoch still differs from the previous one.
        format!(
            "t{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        )
    })
}

impl RevocationLog {
    /// An empty log with a fresh epoch, unavailable (connections refused) until the first
    /// [`resync`](Self::resync).
    pub fn new() -> Self {
        Self {
            log: Mutex::new(Log {
                epoch: new_epoch(),
                seq: 0,
                recent: VecDeque::new(),
                available: false,
                disabled: BTreeSet::new(),
                retired_keys: BTreeSet::new(),
            }),
            sender: broadcast::channel(1024).0,
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a change and sends it to every connection.
    pub fn push(&self, revocation: wire::Revocation) {
        let mut log = self.log();
        Self::push_locked(&mut log, &self.sender, revocation);
    }

    fn push_locked(
        log: &mut Log,
        sender: &broadcast::Sender<StreamItem>,
        revocation: wire::Revocation,
    ) {
        log.seq += 1;
        let revocation = Arc::new(revocation);
        if log.recent.len() == REPLAY_CAPACITY {
            log.recent.pop_front();
        }
        log.recent.push_back((log.seq, Arc::clone(&revocation)));
        let id = format!("{}.{}", log.epoch, log.seq);
        // No connection is fine.
        let _ = sender.send(StreamItem::Revocation { id, revocation });
    }

    /// An account was disabled or enabled.
    pub fn set_disabled(&self, user: &str, disabled: bool) {
        let mut log = self.log();
        let changed = if disabled {
            log.disabled.insert(user.to_owned())
        } else {
            log.disabled.remove(user)
        };
        if changed {
            let sub = user.to_owned();
            Self::push_locked(
                &mut log,
                &self.sender,
                if disabled {
                    wire::Revocation::UserDisabled { sub }
                } else {
                    wire::Revocation::UserEnabled { sub }
                },
            );
        }
    }

    /// The keys retired recently enough that tokens they signed may still be unexpired; newly
    /// retired ones are announced.
    pub fn set_retired_keys(&self, kids: impl IntoIterator<Item = String>) {
        let mut log = self.log();
        let kids: BTreeSet<String> = kids.into_iter().collect();
        let new: Vec<String> = kids.difference(&log.retired_keys).cloned().collect();
        log.retired_keys = kids;
        for kid in new {
            Self::push_locked(&mut log, &self.sender, wire::Revocation::KeyRetired { kid });
        }
    }

    /// This node's state was re-read from the store (after a gap in the change feed, or with
    /// changes a missed message would have carried): every connection gets a fresh snapshot, and
    /// event ids from before are no longer replayed.
    pub fn resync(&self, disabled: impl IntoIterator<Item = String>) {
        let mut log = self.log();
        log.epoch = new_epoch();
        log.recent.clear();
        log.disabled = disabled.into_iter().collect();
        log.available = true;
        let _ = self.sender.send(StreamItem::Resync);
    }

    /// This node lost the change feed: its state may miss changes, so the stream ends and new
    /// connections are refused until [`RevocationLog::resync`].
    pub fn lost(&self) {
        let mut log = self.log();
        if log.available {
            log.available = false;
            let _ = self.sender.send(StreamItem::Closed);
        }
    }

    /// The server is stopping: end every stream and take no new connection.
    pub fn shutdown(&self) {
        self.lost();
    }

    /// Whether this node's state is complete enough to stream.
    pub fn available(&self) -> bool {
        self.log().available
    }

    /// Starts a connection: `None` while the stream is unavailable. `snapshot` reads the
    /// revocation state; it runs under the log's lock, so no change falls between the snapshot
    /// and the first change sent after it (a change may be in both; applying it twice is
    /// harmless).
    pub fn subscribe(
        &self,
        last_event_id: Option<&str>,
        snapshot: impl FnOnce() -> wire::Snapshot,
    ) -> Option<Subscription> {
        let log = self.log();
        if !log.available {
            return None;
        }
        let changes = self.sender.subscribe();
        if let Some(missed) = last_event_id.and_then(|id| Self::replay(&log, id)) {
            return Some(Subscription {
                start: StreamStart::Replay(missed),
                changes,
            });
        }
        Some(Subscription {
            start: StreamStart::Snapshot {
                id: format!("{}.{}", log.epoch, log.seq),
                snapshot: Self::complete(&log, snapshot()),
            },
            changes,
        })
    }

    /// A fresh snapshot for a connection that is already open (after a resync, or when it fell
    /// behind).
    pub fn snapshot(&self, snapshot: impl FnOnce() -> wire::Snapshot) -> (String, wire::Snapshot) {
        let log = self.log();
        (
            format!("{}.{}", log.epoch, log.seq),
            Self::complete(&log, snapshot()),
        )
    }

    fn complete(log: &Log, mut snapshot: wire::Snapshot) -> wire::Snapshot {
        snapshot.disabled_users = log.disabled.iter().cloned().collect();
        snapshot.retired_keys = log.retired_keys.iter().cloned().collect();
        snapshot
    }

    /// The changes after `id`, when this log still has all of them.
    fn replay(log: &Log, id: &str) -> Option<Vec<(String, Arc<wire::Revocation>)>> {
        let (epoch, seq) = id.rsplit_once('.')?;
        let seq: u64 = seq.parse().ok()?;
        if epoch != log.epoch || seq > log.seq {
            return None;
        }
        // Everything after `seq` must still be held.
        let oldest_held = log.recent.front().map_or(log.seq + 1, |(s, _)| *s);
        if seq + 1 < oldest_held {
            return None;
        }
        Some(
            log.recent
                .iter()
                .filter(|(s, _)| *s > seq)
                .map(|(s, r)| (format!("{}.{}", log.epoch, s), Arc::clone(r)))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(jti: &str) -> wire::Revocation {
        wire::Revocation::Token(wire::RevokedToken {
            jti: jti.into(),
            expires_at: 1,
        })
    }

    #[test]
    fn unavailable_until_the_first_resync() {
        let log = RevocationLog::new();
        assert!(log.subscribe(None, wire::Snapshot::default).is_none());
        log.resync(Vec::new());
        assert!(log.subscribe(None, wire::Snapshot::default).is_some());
        log.lost();
        assert!(log.subscribe(None, wire::Snapshot::default).is_none());
    }

    #[test]
    fn a_known_id_replays_what_was_missed_and_an_unknown_one_gets_a_snapshot() {
        let log = RevocationLog::new();
        log.resync(vec!["usr_d".to_owned()]);
        let Some(Subscription {
            start: StreamStart::Snapshot { id, snapshot },
            mut changes,
        }) = log.subscribe(None, wire::Snapshot::default)
        else {
            panic!("a first connection starts with a snapshot");
        };
        assert_eq!(snapshot.disabled_users, vec!["usr_d".to_owned()]);
        log.push(token("a"));
        log.push(token("b"));
        let Ok(StreamItem::Revocation { id: first, .. }) = changes.try_recv() else {
            panic!("the change reaches the open connection");
        };
        match log
            .subscribe(Some(&id), wire::Snapshot::default)
            .map(|s| s.start)
        {
            Some(StreamStart::Replay(missed)) => {
                assert_eq!(missed.len(), 2);
                assert_eq!(*missed[0].1, token("a"));
                assert_eq!(missed[0].0, first);
            }
            _ => panic!("a known id replays"),
        }
        match log
            .subscribe(Some(&first), wire::Snapshot::default)
            .map(|s| s.start)
        {
            Some(StreamStart::Replay(missed)) => assert_eq!(*missed[0].1, token("b")),
            _ => panic!("a known id replays"),
        }
        for unknown in ["", "x", "other.1", &format!("{id}9")] {
            assert!(
                matches!(
                    log.subscribe(Some(unknown), wire::Snapshot::default)
                        .map(|s| s.start),
                    Some(StreamStart::Snapshot { .. })
                ),
                "{unknown:?} gets a snapshot"
            );
        }
        // After a resync, ids of the previous epoch are not replayed.
        log.resync(Vec::new());
        assert!(matches!(
            log.subscribe(Some(&first), wire::Snapshot::default)
                .map(|s| s.start),
            Some(StreamStart::Snapshot { .. })
        ));
    }

    #[test]
    fn too_old_an_id_gets_a_snapshot() {
        let log = RevocationLog::new();
        log.resync(Vec::new());
        let Some(StreamStart::Snapshot { id, .. }) = log
            .subscribe(None, wire::Snapshot::default)
            .map(|s| s.start)
        else {
            panic!("snapshot");
        };
        for i in 0..REPLAY_CAPACITY + 1 {
            log.push(token(&i.to_string()));
        }
        assert!(matches!(
            log.subscribe(Some(&id), wire::Snapshot::default)
                .map(|s| s.start),
            Some(StreamStart::Snapshot { .. })
        ));
    }

    #[test]
    fn disabled_users_and_retired_keys_are_announced_once() {
        let log = RevocationLog::new();
        log.resync(Vec::new());
        let mut changes = log
            .subscribe(None, wire::Snapshot::default)
            .unwrap()
            .changes;
        log.set_disabled("usr_a", true);
        log.set_disabled("usr_a", true);
        log.set_disabled("usr_a", false);
        log.set_retired_keys(vec!["k1".to_owned()]);
        log.set_retired_keys(vec!["k1".to_owned()]);
        let mut seen = Vec::new();
        while let Ok(StreamItem::Revocation { revocation, .. }) = changes.try_recv() {
            seen.push((*revocation).clone());
        }
        assert_eq!(
            seen,
            vec![
                wire::Revocation::UserDisabled {
                    sub: "usr_a".into()
                },
                wire::Revocation::UserEnabled {
                    sub: "usr_a".into()
                },
                wire::Revocation::KeyRetired { kid: "k1".into() },
            ]
        );
        let (_, snapshot) = log.snapshot(wire::Snapshot::default);
        assert_eq!(snapshot.retired_keys, vec!["k1".to_owned()]);
        assert!(snapshot.disabled_users.is_empty());
    }
}
