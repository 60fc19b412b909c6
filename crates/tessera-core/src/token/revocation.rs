//! The revocation state every access-token check consults: kept in memory (one lookup per
//! request), written through to the store, and spread to other nodes over the change feed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::Error;
use crate::feed::{Change, ChangeFeed};
use crate::store::RevocationStore;
use crate::token::refresh::FamilyId;
use crate::token::revoked::{AllowedToken, RevocationEntry, Revoked};
use crate::token::stream::RevocationLog;
use crate::user::UserId;

/// How access tokens can be revoked before they expire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationMode {
    /// Revoked tokens, families and users are listed; everything else is accepted (a
    /// denylist). The default.
    #[default]
    Denylist,
    /// Only tokens listed as live are accepted: stateful tokens (an allowlist).
    Allowlist,
    /// Access tokens live until they expire; only refresh tokens can be revoked. Pure stateless
    /// JWT, for comparison.
    None,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, Timestamp>,
    families: HashMap<FamilyId, Timestamp>,
    /// The latest "not before" per user, and until when it matters.
    users: HashMap<UserId, (Timestamp, Timestamp)>,
    allowed: HashMap<String, AllowedToken>,
}

/// The revocation state, in memory (checked on every request) and in the store (so it survives a
/// restart and, with a shared store, reaches other nodes).
#[derive(Clone)]
pub struct Revocations {
    store: Arc<dyn RevocationStore>,
    feed: Option<Arc<dyn ChangeFeed>>,
    mode: RevocationMode,
    state: Arc<RwLock<State>>,
    /// Until when the memory copy may be trusted (unix ms): `i64::MAX` while the change feed is
    /// live; while it is lost, the time of the last re-read of the store plus a short bound.
    trusted_until: Arc<AtomicI64>,
    /// What the revocation stream sends resource servers.
    log: Arc<RevocationLog>,
}

/// While the change feed is lost, a re-read of the store is trusted this long.
pub const STALE_READ_BOUND: std::time::Duration = std::time::Duration::from_millis(250);

/// Why an access token is no longer accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokedReason {
    /// The token itself was revoked, by its `jti`.
    Token,
    /// Its login (refresh family) was revoked: logout, reuse detected, an admin.
    Family,
    /// It was issued before the user's "not before" time (password change, roles, forced
    /// logout, disabled account).
    User,
    /// Allowlist mode: the token is not among the live ones.
    NotAllowed,
}

impl Revocations {
    /// Loads the live entries from the store.
    pub async fn load(
        store: Arc<dyn RevocationStore>,
        mode: RevocationMode,
        now: Timestamp,
    ) -> Result<Self, Error> {
        let this = Self {
            store,
            feed: None,
            mode,
            state: Arc::new(RwLock::new(State::default())),
            trusted_until: Arc::new(AtomicI64::new(i64::MAX)),
            log: Arc::new(RevocationLog::new()),
        };
        this.resync(now).await?;
        Ok(this)
    }

    /// Publishes every revocation on `feed`, so other nodes apply it at once.
    pub fn with_feed(mut self, feed: Arc<dyn ChangeFeed>, now: Timestamp) -> Self {
        self.feed = Some(feed);
        // The state was just read; until the follower has subscribed (its first gap), trust it
        // only as long as a re-read while the feed is lost.
        self.trusted_until.store(
            now.saturating_add(STALE_READ_BOUND).unix_millis(),
            Ordering::SeqCst,
        );
        self
    }

    /// The change feed is lost: from now on the memory copy is trusted only for
    /// [`STALE_READ_BOUND`] after each re-read of the store.
    pub fn feed_lost(&self, now: Timestamp) {
        // Only the first loss starts the bound; telling it again must not extend trust.
        let until = now.saturating_add(STALE_READ_BOUND).unix_millis();
        let _ = self
            .trusted_until
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |current| {
                (current == i64::MAX).then_some(until)
            });
    }

    /// Re-reads the store while the feed is lost, extending trust by [`STALE_READ_BOUND`].
    pub async fn refresh_while_lost(&self, now: Timestamp) -> Result<(), Error> {
        self.resync(now).await?;
        let until = now.saturating_add(STALE_READ_BOUND).unix_millis();
        // Only extend a bounded trust; a live feed (i64::MAX) stays as it is.
        let _ = self
            .trusted_until
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |current| {
                (current != i64::MAX).then_some(until.max(current))
            });
        Ok(())
    }

    /// The feed is back and the store was re-read after it: trust the memory copy again.
    pub async fn feed_resumed(&self, now: Timestamp) -> Result<(), Error> {
        self.resync(now).await?;
        self.trusted_until.store(i64::MAX, Ordering::SeqCst);
        Ok(())
    }

    /// Whether the memory copy may answer right now.
    pub fn trusted(&self, now: Timestamp) -> bool {
        self.mode == RevocationMode::None
            || now.unix_millis() < self.trusted_until.load(Ordering::SeqCst)
    }

    /// Applies a change heard on the feed (memory only: the node that made it wrote the store).
    pub fn apply(&self, change: &Change) {
        if self.mode == RevocationMode::None {
            return;
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let entry = match change {
            Change::TokenRevoked { jti, expires_at } => RevocationEntry {
                revoked: Revoked::Token { jti: jti.clone() },
                expires_at: *expires_at,
            },
            Change::FamilyRevoked { family, expires_at } => RevocationEntry {
                revoked: Revoked::Family { id: family.clone() },
                expires_at: *expires_at,
            },
            Change::UserRevokedBefore {
                user,
                before,
                expires_at,
            } => RevocationEntry {
                revoked: Revoked::UserBefore {
                    user: user.clone(),
                    before: *before,
                },
                expires_at: *expires_at,
            },
            Change::TokenAllowed {
                jti,
                family,
                user,
                expires_at,
            } => {
                if self.mode == RevocationMode::Allowlist {
                    state.allowed.insert(
                        jti.clone(),
                        AllowedToken {
                            jti: jti.clone(),
                            family_id: family.clone(),
                            user_id: user.clone(),
                            expires_at: *expires_at,
                        },
                    );
                }
                return;
            }
            _ => return,
        };
        if self.mode == RevocationMode::Allowlist {
            state.forget_allowed(&entry.revoked);
        }
        let changed = state.apply(&entry);
        // Pushed after the state lock is released (a stream subscriber takes the log's lock, then
        // the state's). Revocations commute, so the order between two pushes does not matter.
        drop(state);
        if changed {
            self.log.push(entry.to_wire());
        }
    }

    async fn publish(&self, change: Change) {
        if let Some(feed) = &self.feed {
            crate::feed::publish_or_retry(feed, change, "revocation").await;
        }
    }

    /// Replaces the in-memory state with the store's.
    pub async fn resync(&self, now: Timestamp) -> Result<(), Error> {
        let mut fresh = State::default();
        if self.mode != RevocationMode::None {
            for entry in self.store.revocations(now).await? {
                fresh.apply(&entry);
            }
        }
        if self.mode == RevocationMode::Allowlist {
            for token in self.store.allowed_tokens(now).await? {
                fresh.allowed.insert(token.jti.clone(), token);
            }
        }
        let missed: Vec<RevocationEntry> = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            let missed = fresh.entries().filter(|e| !state.has(e)).collect();
            // Merge, never replace: what reached this node while the store was being read (a
            // change heard on the feed, a revocation made here whose write the read did not see)
            // is newer than the read, and dropping it would accept a revoked token until the
            // next re-read. Denylist entries only ever end by expiring, so keeping every one
            // still in force is exact. An allowed token kept this way that was revoked meanwhile
            // is still refused: allowlist mode checks the denylist too.
            for (jti, token) in &state.allowed {
                if token.expires_at > now {
                    fresh
                        .allowed
                        .entry(jti.clone())
                        .or_insert_with(|| token.clone());
                }
            }
            let newer: Vec<RevocationEntry> = state
                .entries()
                .filter(|e| e.expires_at > now && !fresh.has(e))
                .collect();
            for entry in &newer {
                fresh.apply(entry);
            }
            *state = fresh;
            missed
        };
        // What the store has that this node did not (a missed message) reaches the stream too.
        for entry in missed {
            self.log.push(entry.to_wire());
        }
        Ok(())
    }

    /// What the revocation stream sends resource servers.
    pub fn log(&self) -> &RevocationLog {
        &self.log
    }

    /// Every denylist entry still in force, for the revocation stream.
    pub fn snapshot(&self, now: Timestamp) -> tessera_wire::Snapshot {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut snapshot = tessera_wire::Snapshot {
            mode: Some(match self.mode {
                RevocationMode::Denylist => tessera_wire::Mode::Denylist,
                RevocationMode::Allowlist => tessera_wire::Mode::Allowlist,
                RevocationMode::None => tessera_wire::Mode::None,
            }),
            ..Default::default()
        };
        for entry in state.entries().filter(|e| e.expires_at > now) {
            match entry.to_wire() {
                tessera_wire::Revocation::Token(t) => snapshot.tokens.push(t),
                tessera_wire::Revocation::Family(f) => snapshot.families.push(f),
                tessera_wire::Revocation::UserNotBefore(u) => snapshot.users.push(u),
                _ => {}
            }
        }
        snapshot
    }

    /// The denylist entries (this node's memory copy) that refuse a token with this `jti`, family
    /// and user, as they are kept: for showing a caller the entries about their own login.
    pub fn entries_matching(
        &self,
        jti: &str,
        family: &FamilyId,
        user: &UserId,
        now: Timestamp,
    ) -> Vec<RevocationEntry> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut entries = Vec::new();
        if let Some(until) = state.tokens.get(jti).filter(|until| **until > now) {
            entries.push(RevocationEntry {
                revoked: Revoked::Token {
                    jti: jti.to_owned(),
                },
                expires_at: *until,
            });
        }
        if let Some(until) = state.families.get(family).filter(|until| **until > now) {
            entries.push(RevocationEntry {
                revoked: Revoked::Family { id: family.clone() },
                expires_at: *until,
            });
        }
        if let Some((before, until)) = state.users.get(user).filter(|(_, until)| *until > now) {
            entries.push(RevocationEntry {
                revoked: Revoked::UserBefore {
                    user: user.clone(),
                    before: *before,
                },
                expires_at: *until,
            });
        }
        entries
    }

    /// How this node enforces revocation, as configured.
    pub fn mode(&self) -> RevocationMode {
        self.mode
    }

    /// The per-request check: memory lookups only. `None` when the token is still good. Callers
    /// first make sure the copy is [`Revocations::trusted`].
    pub fn check(
        &self,
        jti: &str,
        family: &FamilyId,
        user: &UserId,
        issued_at: Timestamp,
        now: Timestamp,
    ) -> Option<RevokedReason> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        match self.mode {
            RevocationMode::None => None,
            RevocationMode::Allowlist
                if state.allowed.get(jti).is_none_or(|t| t.expires_at <= now) =>
            {
                Some(RevokedReason::NotAllowed)
            }
            // In allowlist mode the denylist is checked too: a token allowed just after its family
            // was revoked (a refresh racing the revocation) is still refused.
            RevocationMode::Allowlist | RevocationMode::Denylist => {
                if state.tokens.get(jti).is_some_and(|until| *until > now) {
                    Some(RevokedReason::Token)
                } else if state.families.get(family).is_some_and(|until| *until > now) {
                    Some(RevokedReason::Family)
                } else if state
                    .users
                    .get(user)
                    .is_some_and(|(before, _)| issued_at < *before)
                {
                    Some(RevokedReason::User)
                } else {
                    None
                }
            }
        }
    }

    /// Records an issued access token (allowlist mode; a no-op otherwise).
    pub async fn allow(&self, token: AllowedToken) -> Result<(), Error> {
        if self.mode != RevocationMode::Allowlist {
            return Ok(());
        }
        self.store.allow_token(&token).await?;
        self.state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .allowed
            .insert(token.jti.clone(), token.clone());
        self.publish(Change::TokenAllowed {
            jti: token.jti,
            family: token.family_id,
            user: token.user_id,
            expires_at: token.expires_at,
        })
        .await;
        Ok(())
    }

    /// Revokes: writes the store first (so nothing is acknowledged that a restart would forget),
    /// then the memory copy.
    pub async fn revoke(&self, entry: RevocationEntry) -> Result<(), Error> {
        if self.mode == RevocationMode::None {
            return Ok(());
        }
        self.store.add_revocation(&entry).await?;
        let kind = match entry.revoked {
            Revoked::Token { .. } => "token",
            Revoked::Family { .. } => "family",
            Revoked::UserBefore { .. } => "user",
        };
        metrics::counter!("tessera_revocations_total", "kind" => kind).increment(1);
        if self.mode == RevocationMode::Allowlist {
            match &entry.revoked {
                Revoked::Token { jti } => {
                    self.store.disallow_token(jti).await?;
                }
                Revoked::Family { id } => {
                    self.store.disallow_family(id).await?;
                }
                Revoked::UserBefore { user, .. } => {
                    self.store.disallow_user(user).await?;
                }
            }
        }
        let changed = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            if self.mode == RevocationMode::Allowlist {
                state.forget_allowed(&entry.revoked);
            }
            state.apply(&entry)
        };
        if changed {
            self.log.push(entry.to_wire());
        }
        self.publish(match entry.revoked {
            Revoked::Token { jti } => Change::TokenRevoked {
                jti,
                expires_at: entry.expires_at,
            },
            Revoked::Family { id } => Change::FamilyRevoked {
                family: id,
                expires_at: entry.expires_at,
            },
            Revoked::UserBefore { user, before } => Change::UserRevokedBefore {
                user,
                before,
                expires_at: entry.expires_at,
            },
        })
        .await;
        Ok(())
    }

    /// Forgets what has expired, in memory and in the store.
    pub async fn purge(&self, now: Timestamp) -> Result<usize, Error> {
        let purged = self.store.purge_expired(now).await?;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.tokens.retain(|_, until| *until > now);
        state.families.retain(|_, until| *until > now);
        state.users.retain(|_, (_, until)| *until > now);
        state.allowed.retain(|_, t| t.expires_at > now);
        Ok(purged)
    }
}

impl State {
    /// Allowlist mode: the live tokens a revocation ends.
    fn forget_allowed(&mut self, revoked: &Revoked) {
        match revoked {
            Revoked::Token { jti } => {
                self.allowed.remove(jti);
            }
            Revoked::Family { id } => self.allowed.retain(|_, t| t.family_id != *id),
            Revoked::UserBefore { user, .. } => self.allowed.retain(|_, t| t.user_id != *user),
        }
    }

    /// Records an entry; `true` when it changed what is refused (a new entry, or a later
    /// "not before").
    fn apply(&mut self, entry: &RevocationEntry) -> bool {
        fn extend(until: &mut Timestamp, to: Timestamp) -> bool {
            let longer = to > *until;
            *until = (*until).max(to);
            longer
        }
        match &entry.revoked {
            Revoked::Token { jti } => match self.tokens.get_mut(jti) {
                Some(until) => {
                    extend(until, entry.expires_at);
                    false
                }
                None => {
                    self.tokens.insert(jti.clone(), entry.expires_at);
                    true
                }
            },
            Revoked::Family { id } => match self.families.get_mut(id) {
                Some(until) => {
                    extend(until, entry.expires_at);
                    false
                }
                None => {
                    self.families.insert(id.clone(), entry.expires_at);
                    true
                }
            },
            Revoked::UserBefore { user, before } => match self.users.get_mut(user) {
                Some((at, until)) => {
                    extend(until, entry.expires_at);
                    extend(at, *before)
                }
                None => {
                    self.users.insert(user.clone(), (*before, entry.expires_at));
                    true
                }
            },
        }
    }

    /// Whether this state already refuses everything `entry` does.
    fn has(&self, entry: &RevocationEntry) -> bool {
        match &entry.revoked {
            Revoked::Token { jti } => self.tokens.contains_key(jti),
            Revoked::Family { id } => self.families.contains_key(id),
            Revoked::UserBefore { user, before } => {
                self.users.get(user).is_some_and(|(at, _)| at >= before)
            }
        }
    }

    /// The denylist, as entries.
    fn entries(&self) -> impl Iterator<Item = RevocationEntry> + '_ {
        let tokens = self.tokens.iter().map(|(jti, until)| RevocationEntry {
            revoked: Revoked::Token { jti: jti.clone() },
            expires_at: *until,
        });
        let families = self.families.iter().map(|(id, until)| RevocationEntry {
            revoked: Revoked::Family { id: id.clone() },
            expires_at: *until,
        });
        let users = self
            .users
            .iter()
            .map(|(user, (before, until))| RevocationEntry {
                revoked: Revoked::UserBefore {
                    user: user.clone(),
                    before: *before,
                },
                expires_at: *until,
            });
        tokens.chain(families).chain(users)
    }
}
