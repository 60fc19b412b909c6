//! The audit log of security events: logins and logouts, token issue, refresh and reuse
//! detection, revocations, key rotation and retirement, and changes to an account (password,
//! roles, disabling, forced logout, deletion).

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::clock::{Clock, Timestamp};
use crate::error::Error;
use crate::request_id::RequestId;
use crate::store::EventStore;
use crate::user::UserId;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Credentials were accepted, in any login model; the detail has the model and client IP.
    LoginSucceeded,
    /// Credentials were refused; the detail has the attempted username (at most 64 characters)
    /// and the client IP, as the event has no user.
    LoginFailed,
    /// A login ended: a logout, the user ending one or all other logins, or the per-user cap
    /// ending the oldest (the detail's `reason` says which, when it was not a logout).
    Logout,
    /// A new refresh family and its first token pair were issued.
    TokenIssued,
    /// A refresh token was rotated for a new pair.
    TokenRefreshed,
    /// A refresh token was presented again after its grace window: its family was revoked.
    RefreshReuseDetected,
    /// A client revoked a token (RFC 7009); its whole family was revoked.
    TokenRevoked,
    /// A refresh token of a login bound to a DPoP key came without a proof signed by that key
    /// (a copied refresh token, most likely): refused, and the token was not used up.
    DpopBindingRefused,
    /// A new signing key became current; the user, if any, is the admin who asked.
    KeyRotated,
    /// A signing key was retired; tokens it signed no longer verify.
    KeyRetired,
    /// A user changed their password, or an admin or operator set it (the detail's `by`: the
    /// admin, or null for the command line); their other logins ended.
    PasswordChanged,
    /// An admin ended every login of a user.
    ForcedLogout,
    /// An admin disabled the account; every credential of it stopped working.
    UserDisabled,
    /// An admin enabled a disabled account again.
    UserEnabled,
    /// An admin replaced the user's roles; tokens issued before carry the old roles and are
    /// revoked.
    RolesChanged,
    /// The account was deleted, by its owner or an admin (the detail's `by`): everything of it
    /// was erased, and its username taken out of the log; the event names the user by id only.
    AccountDeleted,
    /// The account's address was set, changed or removed (by the user at registration or later, or by an admin: the detail's `by`); a new address starts unverified.
    EmailChanged,
    /// A verification code was queued for the account's address (the detail's `by`: an admin who asked to resend).
    VerificationSent,
    /// A verification code came back: the account's address is verified.
    EmailVerified,
    /// Account recovery was asked for an existing account with an address: a code was queued for it. (A request for an unknown account records nothing, so the log cannot be used to tell them apart.)
    RecoveryRequested,
    /// A recovery code was used: the password was set and every login of the account ended.
    AccountRecovered,
    /// A recovery or verification code was presented that is unknown, used, expired or replaced (the detail's `purpose`); the event has no user.
    CodeRefused,
    /// A queued mail was accepted by the mail server (the detail has its id, subject and attempts).
    MailSent,
    /// A queued mail was given up: refused for good by the mail server, no longer useful (the code it carried expired), or unreadable.
    MailAbandoned,
    /// A second factor was confirmed and is now required at login (the detail's `method`).
    SecondFactorEnrolled,
    /// A second factor was removed (the detail's `method`); logins need only the password again.
    SecondFactorRemoved,
    /// A second-factor code was refused: at a login challenge or a step-up (the detail's
    /// `during`), or the challenge itself was unknown, used or expired.
    SecondFactorFailed,
    /// A recovery code was used instead of the authenticator (the detail has how many are left).
    RecoveryCodeUsed,
    /// New recovery codes replaced the old ones.
    RecoveryCodesRegenerated,
    /// A logged-in user used their second factor again (step-up); the detail names the login.
    SteppedUp,
    /// A login (session or refresh family) was used from a new network and a new user agent at
    /// once: likely a copied credential. The detail has the login, where it is used now and
    /// where it was made, and the policy applied (`record` or `step_up`).
    LoginContextChanged,
}

impl EventKind {
    /// The snake_case name stores persist and the admin API shows (`login_failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LoginSucceeded => "login_succeeded",
            EventKind::LoginFailed => "login_failed",
            EventKind::Logout => "logout",
            EventKind::TokenIssued => "token_issued",
            EventKind::TokenRefreshed => "token_refreshed",
            EventKind::RefreshReuseDetected => "refresh_reuse_detected",
            EventKind::TokenRevoked => "token_revoked",
            EventKind::DpopBindingRefused => "dpop_binding_refused",
            EventKind::KeyRotated => "key_rotated",
            EventKind::KeyRetired => "key_retired",
            EventKind::PasswordChanged => "password_changed",
            EventKind::ForcedLogout => "forced_logout",
            EventKind::UserDisabled => "user_disabled",
            EventKind::UserEnabled => "user_enabled",
            EventKind::RolesChanged => "roles_changed",
            EventKind::AccountDeleted => "account_deleted",
            EventKind::EmailChanged => "email_changed",
            EventKind::VerificationSent => "verification_sent",
            EventKind::EmailVerified => "email_verified",
            EventKind::RecoveryRequested => "recovery_requested",
            EventKind::AccountRecovered => "account_recovered",
            EventKind::CodeRefused => "code_refused",
            EventKind::MailSent => "mail_sent",
            EventKind::MailAbandoned => "mail_abandoned",
            EventKind::SecondFactorEnrolled => "second_factor_enrolled",
            EventKind::SecondFactorRemoved => "second_factor_removed",
            EventKind::SecondFactorFailed => "second_factor_failed",
            EventKind::RecoveryCodeUsed => "recovery_code_used",
            EventKind::RecoveryCodesRegenerated => "recovery_codes_regenerated",
            EventKind::SteppedUp => "stepped_up",
            EventKind::LoginContextChanged => "login_context_changed",
        }
    }

    /// The kind named by [`as_str`](Self::as_str); `None` for an unknown name (a row written by a
    /// newer version).
    pub fn parse(s: &str) -> Option<Self> {
        [
            EventKind::LoginSucceeded,
            EventKind::LoginFailed,
            EventKind::Logout,
            EventKind::TokenIssued,
            EventKind::TokenRefreshed,
            EventKind::RefreshReuseDetected,
            EventKind::TokenRevoked,
            EventKind::DpopBindingRefused,
            EventKind::KeyRotated,
            EventKind::KeyRetired,
            EventKind::PasswordChanged,
            EventKind::ForcedLogout,
            EventKind::UserDisabled,
            EventKind::UserEnabled,
            EventKind::RolesChanged,
            EventKind::AccountDeleted,
            EventKind::EmailChanged,
            EventKind::VerificationSent,
            EventKind::EmailVerified,
            EventKind::RecoveryRequested,
            EventKind::AccountRecovered,
            EventKind::CodeRefused,
            EventKind::MailSent,
            EventKind::MailAbandoned,
            EventKind::SecondFactorEnrolled,
            EventKind::SecondFactorRemoved,
            EventKind::SecondFactorFailed,
            EventKind::RecoveryCodeUsed,
            EventKind::RecoveryCodesRegenerated,
            EventKind::SteppedUp,
            EventKind::LoginContextChanged,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// An event to record. Details never hold a secret (no password, token or hash).
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// When it happened, by the service clock.
    pub at: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// The account concerned, `None` when there is none to name (a failed login, a hybrid
    /// logout, an operator's key rotation).
    pub user_id: Option<UserId>,
    /// A small JSON object: family id, key id, client IP, reason; `request_id` when it was
    /// recorded while a request was served.
    pub detail: Value,
}

/// `detail` with the request's id added as `request_id` (a detail that is not an object is
/// kept under `detail`).
fn with_request_id(detail: Value, id: Option<RequestId>) -> Value {
    let Some(id) = id else {
        return detail;
    };
    let mut object = match detail {
        Value::Object(object) => object,
        Value::Null => serde_json::Map::new(),
        other => serde_json::Map::from_iter([("detail".to_owned(), other)]),
    };
    object.insert(
        "request_id".to_owned(),
        Value::String(id.as_str().to_owned()),
    );
    Value::Object(object)
}

/// A recorded event; `id` grows with every event (the paging cursor).
#[derive(Clone, Debug, PartialEq)]
pub struct SecurityEvent {
    /// Assigned by the store, increasing; pass it as `before` to read the next older page.
    pub id: i64,
    /// When it happened, by the clock of the node that recorded it.
    pub at: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// The account concerned, if any (see [`NewEvent::user_id`]).
    pub user_id: Option<UserId>,
    /// The JSON object recorded with it (see [`NewEvent::detail`]).
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
    /// An audit log writing to `store`, stamping events with `clock`.
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Records one event now. Never fails: a store error is logged and the event is lost.
    /// Recorded while a request is served, the event's detail also holds that request's id
    /// (`request_id`, see [`RequestId`]).
    pub async fn record(&self, kind: EventKind, user: Option<&UserId>, detail: Value) {
        let detail = with_request_id(detail, RequestId::current());
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_request_id_joins_the_detail() {
        let id = RequestId::parse(b"req-7").unwrap();
        assert_eq!(
            with_request_id(json!({"ip": "192.0.2.1"}), Some(id)),
            json!({"ip": "192.0.2.1", "request_id": "req-7"})
        );
        assert_eq!(
            with_request_id(Value::Null, Some(id)),
            json!({"request_id": "req-7"})
        );
        assert_eq!(
            with_request_id(json!("x"), Some(id)),
            json!({"detail": "x", "request_id": "req-7"})
        );
        assert_eq!(with_request_id(json!({"a": 1}), None), json!({"a": 1}));
    }
}
