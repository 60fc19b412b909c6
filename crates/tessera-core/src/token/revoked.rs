//! What the store keeps so that a revocation outlives a restart and reaches every node: revoked
//! token ids (`jti`), revoked families, per-user "not before" times, and — in allowlist mode — the
//! ids of live access tokens. Every entry expires when the access tokens it concerns would have.

use crate::clock::Timestamp;
use crate::token::refresh::FamilyId;
use crate::user::UserId;

/// One denylist entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Revoked {
    /// One access token, by `jti`.
    Token { jti: String },
    /// Every access token of a refresh family.
    Family { id: FamilyId },
    /// Every access token of a user issued before `before`.
    UserBefore { user: UserId, before: Timestamp },
}

/// A denylist entry and when it can be forgotten (no token it matches is still unexpired).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationEntry {
    pub revoked: Revoked,
    pub expires_at: Timestamp,
}

/// A live access token, in allowlist mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedToken {
    pub jti: String,
    pub family_id: FamilyId,
    pub user_id: UserId,
    pub expires_at: Timestamp,
}

impl RevocationEntry {
    /// The entry as the revocation stream sends it.
    pub fn to_wire(&self) -> tessera_wire::Revocation {
        use tessera_wire as wire;
        let expires_at = self.expires_at.unix_millis();
        match &self.revoked {
            Revoked::Token { jti } => wire::Revocation::Token(wire::RevokedToken {
                jti: jti.clone(),
                expires_at,
            }),
            Revoked::Family { id } => wire::Revocation::Family(wire::RevokedFamily {
                fid: id.to_string(),
                expires_at,
            }),
            Revoked::UserBefore { user, before } => {
                wire::Revocation::UserNotBefore(wire::UserNotBefore {
                    sub: user.to_string(),
                    not_before: before.unix_millis(),
                    expires_at,
                })
            }
        }
    }
}
