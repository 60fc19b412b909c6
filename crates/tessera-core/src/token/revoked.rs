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
    Token {
        /// The token's `jti` claim.
        jti: String,
    },
    /// Every access token of a refresh family.
    Family {
        /// The family, matched against the tokens' `fid` claim.
        id: FamilyId,
    },
    /// Every access token of a user issued before `before`.
    UserBefore {
        /// Whose tokens (`sub` claim).
        user: UserId,
        /// Tokens issued earlier than this (by `iat_ms`) are refused; later ones are not.
        before: Timestamp,
    },
}

/// A denylist entry and when it can be forgotten (no token it matches is still unexpired).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationEntry {
    /// Which tokens are refused.
    pub revoked: Revoked,
    /// When the entry may be dropped: every access token it could match has expired by then.
    pub expires_at: Timestamp,
}

/// A live access token, in allowlist mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedToken {
    /// The token's `jti` claim.
    pub jti: String,
    /// The login it belongs to: revoking the family removes it.
    pub family_id: FamilyId,
    /// Whose token it is: revoking the user removes it.
    pub user_id: UserId,
    /// The token's `exp`; the entry is dropped after it.
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
