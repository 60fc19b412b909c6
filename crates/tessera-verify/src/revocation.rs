//! What the revocation stream has said, applied as `tessera-wire` specifies, and whether it can
//! be trusted right now.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_wire::{Revocation, Snapshot};
use tokio::sync::watch;

use crate::claims::Claims;
use crate::error::RevokedReason;

type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// What a user's tokens are checked against: one lookup by `sub` answers both questions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct UserEntry {
    /// Tokens issued (`iat_ms`) before this are revoked; with the entry's expiry.
    not_before: Option<(i64, i64)>,
    disabled: bool,
}

impl UserEntry {
    fn is_empty(&self) -> bool {
        self.not_before.is_none() && !self.disabled
    }
}

/// The revocations in force. Entries whose `expires_at` (Unix ms) has passed are forgotten by
/// [`RevocationState::prune`]: no unexpired token can concern them.
#[derive(Default)]
pub(crate) struct RevocationState {
    tokens: Map<i64>,
    families: Map<i64>,
    users: Map<UserEntry>,
}

impl RevocationState {
    /// Replaces everything with a snapshot. Its retired keys are the caller's business (the key
    /// set holds them).
    pub(crate) fn replace(&mut self, snapshot: &Snapshot) {
        let mut next = Self::default();
        for t in &snapshot.tokens {
            next.tokens.insert(t.jti.clone(), t.expires_at);
        }
        for f in &snapshot.families {
            next.families.insert(f.fid.clone(), f.expires_at);
        }
        for u in &snapshot.users {
            next.users.entry(u.sub.clone()).or_default().not_before =
                Some(later(None, u.not_before, u.expires_at));
        }
        for sub in &snapshot.disabled_users {
            next.users.entry(sub.clone()).or_default().disabled = true;
        }
        *self = next;
    }

    /// Applies one change. `KeyRetired` is the caller's business (the key set).
    pub(crate) fn apply(&mut self, revocation: &Revocation) {
        match revocation {
            Revocation::Token(t) => {
                let e = self.tokens.entry(t.jti.clone()).or_insert(t.expires_at);
                *e = (*e).max(t.expires_at);
            }
            Revocation::Family(f) => {
                let e = self.families.entry(f.fid.clone()).or_insert(f.expires_at);
                *e = (*e).max(f.expires_at);
            }
            Revocation::UserNotBefore(u) => {
                let entry = self.users.entry(u.sub.clone()).or_default();
                entry.not_before = Some(later(entry.not_before, u.not_before, u.expires_at));
            }
            Revocation::UserDisabled { sub } => {
                self.users.entry(sub.clone()).or_default().disabled = true;
            }
            Revocation::UserEnabled { sub } => {
                if let Some(entry) = self.users.get_mut(sub) {
                    entry.disabled = false;
                    if entry.is_empty() {
                        self.users.remove(sub);
                    }
                }
            }
            Revocation::KeyRetired { .. } => {}
        }
    }

    /// Forgets entries that expired before `now_ms`.
    pub(crate) fn prune(&mut self, now_ms: i64) {
        self.tokens.retain(|_, exp| *exp > now_ms);
        self.families.retain(|_, exp| *exp > now_ms);
        self.users.retain(|_, u| {
            if u.not_before.is_some_and(|(_, exp)| exp <= now_ms) {
                u.not_before = None;
            }
            !u.is_empty()
        });
    }

    /// Whether a token with these claims is revoked.
    pub(crate) fn check(&self, claims: &Claims) -> Option<RevokedReason> {
        if self.tokens.contains_key(&claims.jti) {
            return Some(RevokedReason::Token);
        }
        if let Some(fid) = &claims.fid
            && self.families.contains_key(fid)
        {
            return Some(RevokedReason::Family);
        }
        let user = self.users.get(&claims.sub)?;
        if user.disabled {
            return Some(RevokedReason::UserDisabled);
        }
        match user.not_before {
            Some((not_before, _)) if claims.issued_at_millis() < not_before => {
                Some(RevokedReason::UserNotBefore)
            }
            _ => None,
        }
    }

    /// Entries held, of every kind.
    pub(crate) fn len(&self) -> usize {
        self.tokens.len() + self.families.len() + self.users.len()
    }
}

/// A later "not before" wins; its entry lives as long as the longer of the two.
fn later(current: Option<(i64, i64)>, not_before: i64, expires_at: i64) -> (i64, i64) {
    match current {
        Some((nb, exp)) => (nb.max(not_before), exp.max(expires_at)),
        None => (not_before, expires_at),
    }
}

/// Where the revocation stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamStatus {
    /// The service opted out of the stream: only the JWKS is followed, nothing is refused for
    /// lack of revocation state.
    Disabled,
    /// No snapshot yet since start: tokens are refused (`StateUnavailable`).
    Connecting,
    /// Connected and current: tokens are checked against the state.
    Live,
    /// The stream was lost moments ago: tokens are still accepted until the grace period ends.
    Grace,
    /// Lost for longer than the grace period: tokens are refused (`StateUnavailable`) until the
    /// stream is back and caught up.
    Unavailable,
}

/// Whether the revocation state may be trusted: one atomic load on the request path, a mutex and
/// a watch channel for the rare transitions.
pub(crate) struct Gate {
    trusted: AtomicBool,
    state: Mutex<GateState>,
    status: watch::Sender<StreamStatus>,
}

struct GateState {
    status: StreamStatus,
    /// Bumped on every loss and recovery, so a grace timer from an earlier loss does nothing.
    epoch: u64,
}

impl Gate {
    pub(crate) fn new(status: StreamStatus) -> Arc<Self> {
        Arc::new(Self {
            trusted: AtomicBool::new(trusts(status)),
            state: Mutex::new(GateState { status, epoch: 0 }),
            status: watch::Sender::new(status),
        })
    }

    #[inline]
    pub(crate) fn trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    pub(crate) fn status(&self) -> StreamStatus {
        *self.status.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<StreamStatus> {
        self.status.subscribe()
    }

    /// The stream is back and caught up.
    pub(crate) fn live(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.status != StreamStatus::Live {
            state.epoch += 1;
            self.set(&mut state, StreamStatus::Live);
        }
    }

    /// The stream was lost. From `Live`, tokens stay accepted for `grace`; in any other state
    /// nothing changes (a repeated loss never extends trust).
    pub(crate) fn lost(self: &Arc<Self>, grace: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.status != StreamStatus::Live {
            return;
        }
        state.epoch += 1;
        let epoch = state.epoch;
        if grace.is_zero() {
            self.set(&mut state, StreamStatus::Unavailable);
            return;
        }
        self.set(&mut state, StreamStatus::Grace);
        drop(state);
        let gate = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            gate.grace_over(epoch);
        });
    }

    fn grace_over(&self, epoch: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.epoch == epoch && state.status == StreamStatus::Grace {
            self.set(&mut state, StreamStatus::Unavailable);
        }
    }

    fn set(&self, state: &mut GateState, status: StreamStatus) {
        state.status = status;
        self.trusted.store(trusts(status), Ordering::Release);
        self.status.send_replace(status);
    }
}

fn trusts(status: StreamStatus) -> bool {
    matches!(
        status,
        StreamStatus::Disabled | StreamStatus::Live | StreamStatus::Grace
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_wire::{RevokedFamily, RevokedToken, UserNotBefore};

    fn claims(jti: &str, fid: Option<&str>, sub: &str, iat_ms: Option<i64>) -> Claims {
        Claims {
            iss: "iss".into(),
            sub: sub.into(),
            aud: "aud".into(),
            exp: 2_000_000_000,
            nbf: 0,
            iat: Some(1_000),
            iat_ms,
            jti: jti.into(),
            client_id: None,
            fid: fid.map(Into::into),
            model: None,
            roles: vec![],
            cnf: None,
            amr: None,
            acr: None,
            auth_time: None,
        }
    }

    #[test]
    fn each_kind_of_revocation() {
        let mut state = RevocationState::default();
        let c = claims("j1", Some("f1"), "u1", Some(1_000_500));
        assert_eq!(state.check(&c), None);

        state.apply(&Revocation::Token(RevokedToken {
            jti: "j1".into(),
            expires_at: 10,
        }));
        assert_eq!(state.check(&c), Some(RevokedReason::Token));
        assert_eq!(
            state.check(&claims("j2", Some("f1"), "u1", Some(1_000_500))),
            None
        );

        state.apply(&Revocation::Family(RevokedFamily {
            fid: "f1".into(),
            expires_at: 10,
        }));
        assert_eq!(
            state.check(&claims("j2", Some("f1"), "u1", Some(1_000_500))),
            Some(RevokedReason::Family)
        );
        assert_eq!(state.check(&claims("j2", None, "u1", None)), None);

        // Not before: iat_ms when present, else iat * 1000.
        state.apply(&Revocation::UserNotBefore(UserNotBefore {
            sub: "u1".into(),
            not_before: 1_000_400,
            expires_at: 10,
        }));
        assert_eq!(
            state.check(&claims("j3", None, "u1", Some(1_000_400))),
            None,
            "issued at the very moment: not revoked"
        );
        assert_eq!(
            state.check(&claims("j3", None, "u1", Some(1_000_399))),
            Some(RevokedReason::UserNotBefore)
        );
        assert_eq!(
            state.check(&claims("j3", None, "u1", None)),
            Some(RevokedReason::UserNotBefore),
            "iat 1000 s = 1 000 000 ms < not_before"
        );
        // An earlier not-before never moves it back.
        state.apply(&Revocation::UserNotBefore(UserNotBefore {
            sub: "u1".into(),
            not_before: 5,
            expires_at: 10,
        }));
        assert_eq!(
            state.check(&claims("j3", None, "u1", Some(1_000_399))),
            Some(RevokedReason::UserNotBefore)
        );

        state.apply(&Revocation::UserDisabled { sub: "u2".into() });
        assert_eq!(
            state.check(&claims("j4", None, "u2", Some(i64::MAX))),
            Some(RevokedReason::UserDisabled)
        );
        state.apply(&Revocation::UserEnabled { sub: "u2".into() });
        assert_eq!(state.check(&claims("j4", None, "u2", Some(i64::MAX))), None);
        assert_eq!(
            state.users.len(),
            1,
            "an enabled user with nothing else is forgotten"
        );
    }

    #[test]
    fn a_snapshot_replaces_everything() {
        let mut state = RevocationState::default();
        state.apply(&Revocation::Token(RevokedToken {
            jti: "old".into(),
            expires_at: 10,
        }));
        state.replace(&Snapshot {
            mode: None,
            tokens: vec![RevokedToken {
                jti: "new".into(),
                expires_at: 10,
            }],
            families: vec![],
            users: vec![UserNotBefore {
                sub: "u".into(),
                not_before: 50,
                expires_at: 10,
            }],
            disabled_users: vec!["u".into(), "d".into()],
            retired_keys: vec!["k".into()],
        });
        assert_eq!(state.check(&claims("old", None, "x", None)), None);
        assert_eq!(
            state.check(&claims("new", None, "x", None)),
            Some(RevokedReason::Token)
        );
        assert_eq!(
            state.check(&claims("j", None, "d", None)),
            Some(RevokedReason::UserDisabled)
        );
        assert_eq!(state.len(), 3);
    }

    #[test]
    fn expired_entries_are_forgotten() {
        let mut state = RevocationState::default();
        state.apply(&Revocation::Token(RevokedToken {
            jti: "a".into(),
            expires_at: 100,
        }));
        state.apply(&Revocation::Token(RevokedToken {
            jti: "b".into(),
            expires_at: 300,
        }));
        state.apply(&Revocation::Family(RevokedFamily {
            fid: "f".into(),
            expires_at: 100,
        }));
        state.apply(&Revocation::UserNotBefore(UserNotBefore {
            sub: "u".into(),
            not_before: 50,
            expires_at: 100,
        }));
        state.apply(&Revocation::UserNotBefore(UserNotBefore {
            sub: "d".into(),
            not_before: 50,
            expires_at: 100,
        }));
        state.apply(&Revocation::UserDisabled { sub: "d".into() });
        state.prune(100);
        assert_eq!(state.tokens.len(), 1);
        assert!(state.families.is_empty());
        assert_eq!(state.users.len(), 1, "a disabled user stays disabled");
        assert_eq!(
            state.users.get("d"),
            Some(&UserEntry {
                not_before: None,
                disabled: true
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_closes_after_the_grace_and_reopens_when_live() {
        let gate = Gate::new(StreamStatus::Connecting);
        assert!(
            !gate.trusted(),
            "nothing is known before the first snapshot"
        );
        gate.lost(Duration::from_secs(5));
        assert_eq!(
            gate.status(),
            StreamStatus::Connecting,
            "no grace before the first snapshot"
        );

        gate.live();
        assert!(gate.trusted());
        gate.lost(Duration::from_secs(5));
        assert_eq!(gate.status(), StreamStatus::Grace);
        assert!(gate.trusted());
        tokio::time::sleep(Duration::from_millis(4_900)).await;
        // A second loss during the grace does not extend it.
        gate.lost(Duration::from_secs(5));
        assert!(gate.trusted());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(gate.status(), StreamStatus::Unavailable);
        assert!(!gate.trusted());

        gate.live();
        assert!(gate.trusted());
        // A recovery within the grace cancels the timer of that loss.
        gate.lost(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(1)).await;
        gate.live();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(gate.status(), StreamStatus::Live);

        let disabled = Gate::new(StreamStatus::Disabled);
        assert!(disabled.trusted());
    }
}
