//! Security events: the audit trail of logins, logouts, refreshes, reuse detections, revocations
//! and key rotations.

use serde::Serialize;
use serde_json::Value;

use crate::clock::Timestamp;
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
