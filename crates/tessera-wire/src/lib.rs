//! The wire format of Tessera's revocation stream, `GET /v1/revocations/stream`.
//!
//! The stream is Server-Sent Events (`text/event-stream`). Each event has an `id` (opaque to the
//! client; send the last one back as `Last-Event-ID` when reconnecting) and one of two names:
//!
//! - [`SNAPSHOT_EVENT`] (`snapshot`): `data` is a [`Snapshot`], everything still in force. A
//!   client replaces what it knew with it. Sent first on every connection, unless the server can
//!   replay exactly what the client missed since its `Last-Event-ID`; sent again whenever the
//!   server itself may have missed changes.
//! - [`REVOCATION_EVENT`] (`revocation`): `data` is one [`Revocation`], applied on top.
//!
//! A comment line (`: keep-alive`) arrives at least every [`HEARTBEAT_SECONDS`] seconds, so a
//! client that hears nothing for longer knows the stream is lost.
//!
//! Times are Unix milliseconds. An entry may be forgotten once its `expires_at` has passed: no
//! access token it concerns can still be unexpired.
//!
//! Checking an access token against this state:
//! - its `jti` is in `tokens` → revoked;
//! - its `fid` (the login it belongs to) is in `families` → revoked;
//! - its `sub` has a `not_before` in `users` and the token's `iat_ms` (its issue time in
//!   milliseconds; `iat * 1000` when absent) is earlier → revoked (password change, role change,
//!   forced logout, disabled account);
//! - its `sub` is in `disabled_users` → refused;
//! - its `kid` is in `retired_keys` → refused, whatever the JWKS still says.
//!
//! Reading an event's `data`:
//!
//! ```
//! use tessera_wire::{Revocation, RevokedFamily};
//!
//! let data = r#"{"kind":"family","fid":"fam_x","expires_at":1764400600000}"#;
//! let revocation: Revocation = serde_json::from_str(data)?;
//! assert_eq!(
//!     revocation,
//!     Revocation::Family(RevokedFamily { fid: "fam_x".into(), expires_at: 1764400600000 })
//! );
//! # Ok::<(), serde_json::Error>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

/// The SSE event name of a [`Snapshot`].
pub const SNAPSHOT_EVENT: &str = "snapshot";
/// The SSE event name of a [`Revocation`].
pub const REVOCATION_EVENT: &str = "revocation";
/// The longest the server stays silent on a healthy stream.
pub const HEARTBEAT_SECONDS: u64 = 15;
/// The comment the server sends once the snapshot, or the replay of what a reconnecting client
/// missed, has been sent in full: from then on the client is live.
pub const CAUGHT_UP_COMMENT: &str = "caught up";
/// The path of the stream on a Tessera server.
pub const STREAM_PATH: &str = "/v1/revocations/stream";

/// How the server revokes access tokens (`tokens.revocation`). Informational: in every mode the
/// stream carries what a resource server must refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Revoked tokens, logins and users are listed; everything else is accepted (the default).
    Denylist,
    /// Only tokens the server lists as live are accepted; revocations are listed too.
    Allowlist,
    /// Access tokens are never revoked before they expire; the stream still carries disabled
    /// users and retired keys.
    None,
    /// A mode this version does not know (a newer server): informational only, so a snapshot
    /// still parses.
    #[serde(other)]
    Unknown,
}

/// One revoked access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedToken {
    /// The token's `jti` claim.
    pub jti: String,
    /// Unix ms after which the entry may be forgotten.
    pub expires_at: i64,
}

/// A revoked login: every access token whose `fid` claim is this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedFamily {
    /// The login's id: the tokens' `fid` claim.
    pub fid: String,
    /// Unix ms after which the entry may be forgotten.
    pub expires_at: i64,
}

/// A user's access tokens issued before `not_before` are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNotBefore {
    /// The user: the tokens' `sub` claim.
    pub sub: String,
    /// Unix ms: tokens whose `iat_ms` is earlier are refused.
    pub not_before: i64,
    /// Unix ms after which the entry may be forgotten.
    pub expires_at: i64,
}

/// Everything in force when it was sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The server's `tokens.revocation` setting.
    pub mode: Option<Mode>,
    /// Revoked access tokens.
    #[serde(default)]
    pub tokens: Vec<RevokedToken>,
    /// Revoked logins.
    #[serde(default)]
    pub families: Vec<RevokedFamily>,
    /// Per-user "not before" times.
    #[serde(default)]
    pub users: Vec<UserNotBefore>,
    /// Ids (`sub`) of disabled accounts.
    #[serde(default)]
    pub disabled_users: Vec<String>,
    /// `kid`s of retired signing keys: tokens they signed are refused.
    #[serde(default)]
    pub retired_keys: Vec<String>,
}

/// One change, in the order the server learned of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Revocation {
    /// An access token was revoked.
    Token(RevokedToken),
    /// A login was revoked (logout, refresh-token reuse, an admin).
    Family(RevokedFamily),
    /// A user's earlier tokens were revoked (password or role change, forced logout, disable).
    UserNotBefore(UserNotBefore),
    /// An account was disabled: refuse its tokens.
    UserDisabled {
        /// The user: the tokens' `sub` claim.
        sub: String,
    },
    /// An account was enabled again (its earlier tokens stay refused by `user_not_before`).
    UserEnabled {
        /// The user: the tokens' `sub` claim.
        sub: String,
    },
    /// A signing key was retired: refuse tokens with this `kid`.
    KeyRetired {
        /// The key's id.
        kid: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_are_tagged_json() {
        let r = Revocation::Family(RevokedFamily {
            fid: "fam_1".into(),
            expires_at: 5,
        });
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"kind":"family","fid":"fam_1","expires_at":5}"#);
        assert_eq!(serde_json::from_str::<Revocation>(&json).unwrap(), r);
        let json = serde_json::to_string(&Revocation::KeyRetired { kid: "k1".into() }).unwrap();
        assert_eq!(json, r#"{"kind":"key_retired","kid":"k1"}"#);
    }

    #[test]
    fn an_unknown_mode_still_parses() {
        let s: Snapshot = serde_json::from_str(r#"{"mode":"someday"}"#).unwrap();
        assert_eq!(s.mode, Some(Mode::Unknown));
    }

    #[test]
    fn a_snapshot_tolerates_missing_lists() {
        let s: Snapshot = serde_json::from_str(r#"{"mode":"denylist"}"#).unwrap();
        assert_eq!(s.mode, Some(Mode::Denylist));
        assert!(s.tokens.is_empty() && s.retired_keys.is_empty());
    }
}
