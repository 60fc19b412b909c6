//! Refresh-token families: every refresh rotates the token; a rotated token presented again after
//! the grace window revokes the whole family.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::clock::Timestamp;
use crate::error::Error;
use crate::secret::TokenHash;
use crate::session::ClientInfo;
use crate::user::UserId;

/// The public id of a refresh-token family (`fam_` + 128 random bits): one login of the token or
/// hybrid model. Access tokens carry it (`fid`), so revoking the family reaches them.
/// Deserializing checks the shape, so a token's `fid` is a well-formed id or the token is refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct FamilyId(String);

impl FamilyId {
    const PREFIX: &str = "fam_";

    /// A new random id; fails only if the system's random source does.
    pub fn generate() -> Result<Self, Error> {
        crate::secret::random_public_id(Self::PREFIX).map(Self)
    }

    /// Wraps an id read back from the store, which holds only ids we generated: not checked
    /// again.
    pub fn from_stored(id: String) -> Self {
        Self(id)
    }

    /// The id as stored and as carried in tokens (`fam_…`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for FamilyId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::secret::deserialize_public_id(deserializer, Self::PREFIX).map(Self)
    }
}

impl fmt::Display for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which login model created a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoginModel {
    /// A server session named by a cookie, with a CSRF token.
    Session,
    /// Bearer tokens: a JWT access token and a refresh token the client keeps.
    Token,
    /// The token pair kept in `HttpOnly` cookies for a browser.
    Hybrid,
}

impl LoginModel {
    /// The lowercase name stores persist and the API shows (`session`, `token`, `hybrid`).
    pub fn as_str(self) -> &'static str {
        match self {
            LoginModel::Session => "session",
            LoginModel::Token => "token",
            LoginModel::Hybrid => "hybrid",
        }
    }

    /// The model named by [`as_str`](Self::as_str); `None` for any other name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "session" => Some(LoginModel::Session),
            "token" => Some(LoginModel::Token),
            "hybrid" => Some(LoginModel::Hybrid),
            _ => None,
        }
    }
}

/// One login's chain of refresh tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct RefreshFamily {
    /// The public id, also the `fid` claim of its access tokens.
    pub id: FamilyId,
    /// The account logged in.
    pub user_id: UserId,
    /// Token or hybrid (never session).
    pub model: LoginModel,
    /// When the login happened.
    pub created_at: Timestamp,
    /// The last refresh, or the login if none yet.
    pub last_used_at: Timestamp,
    /// Idle expiry: moves forward with every refresh, never past `absolute_expires_at`.
    pub expires_at: Timestamp,
    /// The login ends at this time however active; set at login, never moved.
    pub absolute_expires_at: Timestamp,
    /// When the family was revoked (logout, reuse detected, admin); its refresh tokens stop
    /// working at once and its access tokens are refused through the revocation list.
    pub revoked_at: Option<Timestamp>,
    /// Why it was revoked, for the audit trail (`logout`, `refresh token reuse`).
    pub revoked_reason: Option<String>,
    /// What the client told us about itself at login.
    pub client: ClientInfo,
    /// How many times the family has been rotated: the generation of its current tokens. Only a
    /// token of this generation may rotate, and each rotation moves it on by one, so a family has
    /// one branch that goes on; a token of an older generation presented again is reuse.
    pub generation: u32,
    /// The JWK thumbprint of the DPoP key the login is bound to (RFC 9449): every refresh must
    /// come with a proof signed by that key. `None` for a login without DPoP.
    pub dpop_jkt: Option<String>,
    /// How the user authenticated: at login, or at the latest step-up. Every access token of
    /// the family carries it (`amr`, `acr`, `auth_time`), refreshed ones too.
    pub auth: crate::auth_context::AuthContext,
}

impl RefreshFamily {
    /// Whether the login still stands at `now`: not revoked, and past neither its idle nor its
    /// absolute expiry. The store may still hold a dead family until the sweep deletes it, so
    /// every reader asks this rather than trusting that a family it found is usable.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && now < self.expires_at && now < self.absolute_expires_at
    }
}

/// One refresh token of a family, stored by the hash of its secret.
#[derive(Clone, Debug, PartialEq)]
pub struct RefreshTokenRecord {
    /// SHA-256 of the token's secret, the key it is looked up by; the secret is never stored.
    pub hash: TokenHash,
    /// The family (login) it belongs to.
    pub family_id: FamilyId,
    /// When it was handed out.
    pub issued_at: Timestamp,
    /// Set when the token was exchanged for a new one.
    pub rotated_at: Option<Timestamp>,
    /// The family's generation when the token was handed out: 0 for the login's token, one more
    /// for each rotation. Tokens handed out again within the reuse grace (another tab refreshing
    /// with the same token) share the generation of the one they stand beside.
    pub generation: u32,
}

impl RefreshTokenRecord {
    /// Whether this is a token its family may go on with: never rotated, and of the family's
    /// current generation (not a sibling whose branch ended when another token of its generation
    /// was rotated first).
    pub fn is_current(&self, family: &RefreshFamily) -> bool {
        self.rotated_at.is_none() && self.generation == family.generation
    }

    /// Whether this token was rotated into the family's current generation, so that presenting it
    /// again within the reuse grace is a concurrent refresh (another tab), not a replay of an
    /// ended branch.
    pub fn is_parent_of_current(&self, family: &RefreshFamily) -> bool {
        self.rotated_at.is_some() && self.generation.checked_add(1) == Some(family.generation)
    }
}

/// The outcome of an atomic rotation attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live; it is now rotated and the new one stored.
    Rotated,
    /// Someone rotated it first, at this time.
    AlreadyRotated {
        /// When the first rotation happened; within the grace window the presenter gets the
        /// current pair again, after it the family is revoked as reused.
        at: Timestamp,
    },
    /// The token was never rotated, but its family has moved past its generation: a sibling of
    /// the same generation was rotated first, so this branch is dead. Presenting it is reuse.
    Superseded,
    /// The family was revoked, before or while the rotation was attempted: nothing was stored.
    Revoked,
    /// No such token (or its family is gone).
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_is_live_until_revoked_or_either_expiry() {
        let at = Timestamp::from_unix_millis;
        let family = RefreshFamily {
            id: FamilyId::generate().unwrap(),
            user_id: UserId::generate().unwrap(),
            model: LoginModel::Token,
            created_at: at(0),
            last_used_at: at(0),
            expires_at: at(100),
            absolute_expires_at: at(200),
            revoked_at: None,
            revoked_reason: None,
            client: ClientInfo::default(),
            generation: 0,
            dpop_jkt: None,
            auth: crate::auth_context::AuthContext::password(at(0)),
        };
        assert!(family.is_live(at(99)));
        assert!(!family.is_live(at(100)), "idle expiry");
        let slid = RefreshFamily {
            expires_at: at(300),
            ..family.clone()
        };
        assert!(slid.is_live(at(199)));
        assert!(!slid.is_live(at(200)), "absolute expiry");
        let revoked = RefreshFamily {
            revoked_at: Some(at(1)),
            ..family
        };
        assert!(!revoked.is_live(at(2)));
    }
}
