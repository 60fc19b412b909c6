//! The claims of a Tessera access token, and the proof that they were verified.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::jwks::VerifyingKey;

/// The claims of a Tessera access token (RFC 9068).
///
/// `iss`, `sub`, `aud`, `exp`, `nbf` and `jti` are required; the others are optional here so a
/// token from an older or newer server still parses, and unknown claims are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// The issuer: the Tessera server's URL.
    pub iss: String,
    /// The user id (`usr_…`).
    pub sub: String,
    /// The audience: what this service checks.
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Issued at, Unix seconds.
    #[serde(default)]
    pub iat: Option<i64>,
    /// Issued at, Unix milliseconds: what a user's revocation "not before" is compared with.
    #[serde(default)]
    pub iat_ms: Option<i64>,
    /// The token's unique id: what a single-token revocation names.
    pub jti: String,
    /// The OAuth client the token was issued to.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The login (refresh-token family) the token belongs to: revoking the login revokes it.
    #[serde(default)]
    pub fid: Option<String>,
    /// The login model: `token` or `hybrid`.
    #[serde(default)]
    pub model: Option<String>,
    /// The user's roles when the token was issued.
    #[serde(default)]
    pub roles: Vec<String>,
    /// How the user authenticated (RFC 8176): `["pwd"]`, or `["pwd", "otp", "mfa"]` with a
    /// second factor.
    #[serde(default)]
    pub amr: Option<Vec<String>>,
    /// The assurance level: `aal1` (password) or `aal2` (with a second factor).
    #[serde(default)]
    pub acr: Option<String>,
    /// When the user last authenticated for this login (the login, or a step-up with the second
    /// factor), Unix seconds.
    #[serde(default)]
    pub auth_time: Option<i64>,
    /// The DPoP key the token is bound to (RFC 9449): it is accepted only with a proof of that
    /// key ([`Verifier::verify_dpop`](crate::Verifier::verify_dpop)).
    #[serde(default)]
    pub cnf: Option<Confirmation>,
}

/// `cnf` (RFC 7800): the key a token is bound to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Confirmation {
    /// The JWK SHA-256 thumbprint (RFC 7638) of the client's DPoP key.
    #[serde(default)]
    pub jkt: Option<String>,
}

impl Claims {
    /// When the token was issued, in milliseconds: `iat_ms`, else `iat * 1000`, else 0 (a token
    /// that says nothing about its age is older than any "not before").
    pub fn issued_at_millis(&self) -> i64 {
        self.iat_ms
            .or_else(|| self.iat.map(|s| s.saturating_mul(1000)))
            .unwrap_or(0)
    }

    /// Whether the user used a second factor no longer than `max_age_secs` before `now_secs`
    /// (Unix seconds): `acr` is `aal2` and `auth_time` recent enough. What a service checks
    /// before a sensitive action; when it is `false`, answer 401 with
    /// `WWW-Authenticate: Bearer error="insufficient_user_authentication", max_age=…` (RFC 9470)
    /// so the client steps up at the Tessera server and retries with the fresh token.
    ///
    /// ```
    /// # let mut claims: tessera_verify::Claims = serde_json::from_value(serde_json::json!({
    /// #     "iss": "https://auth.example", "sub": "usr_1", "aud": "api", "exp": 2000, "nbf": 0,
    /// #     "jti": "at_1", "acr": "aal2", "auth_time": 1000, "amr": ["pwd", "otp", "mfa"]})).unwrap();
    /// assert!(claims.second_factor_within(1_500, 600));
    /// assert!(!claims.second_factor_within(1_700, 600));
    /// claims.acr = Some("aal1".into());
    /// assert!(!claims.second_factor_within(1_500, 600));
    /// ```
    pub fn second_factor_within(&self, now_secs: i64, max_age_secs: u64) -> bool {
        self.acr.as_deref() == Some("aal2")
            && self.auth_time.is_some_and(|at| {
                u64::try_from(now_secs.saturating_sub(at)).is_ok_and(|age| age <= max_age_secs)
            })
    }

    /// Roughly how much memory the claims hold, for the cache's byte budget.
    pub(crate) fn approximate_size(&self) -> usize {
        let optional = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        self.iss.len()
            + self.sub.len()
            + self.aud.len()
            + self.jti.len()
            + optional(&self.client_id)
            + optional(&self.fid)
            + optional(&self.model)
            + self.roles.iter().map(|r| r.len() + 24).sum::<usize>()
            + self
                .amr
                .as_ref()
                .map_or(0, |amr| amr.iter().map(|m| m.len() + 24).sum::<usize>())
            + optional(&self.acr)
            + self
                .cnf
                .as_ref()
                .and_then(|c| c.jkt.as_ref())
                .map_or(0, |jkt| jkt.len() + 24)
            + std::mem::size_of::<Self>()
    }
}

/// An access token that passed every check: signature, header, claims, time, revocation.
///
/// Only the verifier makes one. Cloning is cheap (one reference count). This is what the axum
/// extractor yields and what the tower layer puts into the request's extensions.
#[derive(Clone)]
pub struct VerifiedToken {
    pub(crate) inner: Arc<Verified>,
}

pub(crate) struct Verified {
    pub(crate) claims: Claims,
    pub(crate) key: Arc<VerifyingKey>,
}

impl VerifiedToken {
    pub(crate) fn new(claims: Claims, key: Arc<VerifyingKey>) -> Self {
        Self {
            inner: Arc::new(Verified { claims, key }),
        }
    }

    /// All the claims.
    pub fn claims(&self) -> &Claims {
        &self.inner.claims
    }

    /// The user id (`sub`).
    pub fn subject(&self) -> &str {
        &self.inner.claims.sub
    }

    /// The roles the token carries.
    pub fn roles(&self) -> &[String] {
        &self.inner.claims.roles
    }

    /// Whether the token carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.inner.claims.roles.iter().any(|r| r == role)
    }

    /// The `kid` of the key that signed it.
    pub fn key_id(&self) -> &str {
        &self.inner.key.kid
    }
}

impl std::fmt::Debug for VerifiedToken {
    // The claims are identifiers, not secrets; the token itself is never kept here.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("claims", &self.inner.claims)
            .field("kid", &self.inner.key.kid)
            .finish()
    }
}
