//! The audit log of security events: logins and logouts, token issue, refresh and reuse
//! detection, revocations, key rotation and retirement, and changes to an account (password,
//! roles, disabling, forced logout).

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::clock::{Clock, Timestamp};
use crate::error::Error;
use crate::store::EventStore;
use crate::user::UserId;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    LoginSucceeded,
    LoginFailed,
    Logout,
    TokenIssued,
    TokenRefreshed,
    /// A refresh token was presented again after its grace window: its family was revoked.
    RefreshReuseDetected,
    TokenRevoked,
    KeyRotated,
    KeyRetired,
    PasswordChanged,
    /// An admin ended every login of a user.
    ForcedLogout,
    UserDisabled,
    UserEnabled,
    RolesChanged,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LoginSucceeded => "login_succeeded",
            EventKind::LoginFailed => "login_failed",
            EventKind::Logout => "logout",
            EventKind::TokenIssued => "token_issued",
            EventKind::TokenRefreshed => "token_refreshed",
            EventKind::RefreshReuseDetected => "refresh_reuse_detected",
            EventKind::TokenRevoked => "token_revoked",
            EventKind::KeyRotated => "key_rotated",
            EventKind::KeyRetired => "key_retired",
            EventKind::PasswordChanged => "password_changed",
            EventKind::ForcedLogout => "forced_logout",
            EventKind::UserDisabled => "user_disabled",
            EventKind::UserEnabled => "user_enabled",
            EventKind::RolesChanged => "roles_changed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            EventKind::LoginSucceeded,
            EventKind::LoginFailed,
            EventKind::Logout,
            EventKind::TokenIssued,
            EventKind::TokenRefreshed,
            EventKind::RefreshReuseDetected,
            EventKind::TokenRevoked,
            EventKind::KeyRotated,
            EventKind::KeyRetired,
            EventKind::PasswordChanged,
            EventKind::ForcedLogout,
            EventKind::UserDisabled,
            EventKind::UserEnabled,
            EventKind::RolesChanged,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// An event to record. Details never hold a secret (no password, token or hash).
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub at: Timestamp,
    pub kind: EventKind,
    pub user_id: Option<UserId>,
    /// A small JSON object: family id, key id, client IP, reason.
    pub detail: Value,
}

/// A recorded event; `id` grows with every event (the paging cursor).
#[derive(Clone, Debug, PartialEq)]
pub struct SecurityEvent {
    pub id: i64,
    pub at: Timestamp,
    pub kind: EventKind,
    pub user_id: Option<UserId>,
    pub detail: Value,
}

/// Records security events with the service clock's time. A failure to record is logged, never
/// passed on: the audit trail must not take the service down with it.
#[derive(Clone)]
pub struct Audit {
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
}

impl Audit {
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    pub async fn record(&self, kind: EventKind, user: Option<&UserId>, detail: Value) {
        let event = NewEvent {
            at: self.clock.now(),
            kind,
            user_id: user.cloned(),
            detail,
        };
        if let Err(e) = self.store.record_event(&event).await {
            tracing::error!(error = %e, kind = kind.as_str(), "could not record a security event");
        }
    }

    /// Newest first: up to `limit` events with an id below `before`.
    pub async fn events(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<SecurityEvent>, Error> {
        Ok(self.store.events(before, limit).await?)
    }
}
