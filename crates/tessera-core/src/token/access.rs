//! Access tokens: JWTs per RFC 9068, and the verify path every bearer request takes.
//!
//! The algorithm comes from the key the `kid` names, never from the header; `none`, embedded
//! `jwk`, `jku`, `x5u`, `x5c` are refused without fetching anything; `typ` must be `at+jwt`;
//! `iss`, `aud`, `exp`, `nbf` are always checked, against the injected clock. A verified-token cache
//! makes a repeated token cost one hash lookup, while `exp`, the key's validity and every
//! revocation are still checked on each use.

use std::sync::Arc;

use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, Timestamp};
use crate::secret::TokenHash;
use crate::token::keyring::KeyRing;
use crate::token::refresh::{FamilyId, LoginModel};
use crate::token::revocation::{Revocations, RevokedReason};
use crate::user::UserId;

/// The `typ` header of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The claims of a Tessera access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessClaims {
    /// The issuer: this server's public URL ([`TokenConfig::issuer`](crate::token::TokenConfig::issuer)).
    pub iss: String,
    /// The user the token speaks for.
    pub sub: UserId,
    /// The resource servers that accept it ([`TokenConfig::audience`](crate::token::TokenConfig::audience)).
    pub aud: String,
    /// Expiry, in seconds since the epoch.
    pub exp: i64,
    /// Issue time, in whole seconds since the epoch.
    pub iat: i64,
    /// When it was issued, in milliseconds: what a user's "not before" (password change, role
    /// change, forced logout) is compared with.
    pub iat_ms: i64,
    /// Not valid before this, in seconds since the epoch (the issue time).
    pub nbf: i64,
    /// The token's own id (`at_…`), what a single-token revocation names.
    pub jti: String,
    /// The OAuth client it was issued to (RFC 9068), from the configuration.
    pub client_id: String,
    /// The refresh family this token was issued with: revoking the family revokes the token.
    pub fid: FamilyId,
    /// `token` or `hybrid`.
    pub model: LoginModel,
    /// The user's roles when the token was signed; a role change revokes older tokens.
    pub roles: Vec<String>,
    /// Whether the account's email address was verified when the token was signed; absent for
    /// an account without an address. (The address itself is never in a token.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// The DPoP key the token is bound to (RFC 9449 §6): it is accepted only with a proof signed
    /// by that key, as `Authorization: DPoP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<crate::token::dpop::Confirmation>,
    /// How the user authenticated (RFC 8176 values): `["pwd"]`, `["pwd", "otp", "mfa"]` or
    /// `["pwd", "hwk", "mfa"]` with a second factor, `["hwk", "user", "mfa"]` for a passkey
    /// alone. Absent in tokens signed before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
    /// The assurance level reached: `aal1` (password) or `aal2` (with a second factor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// When the user last authenticated for this login (the login or the latest step-up), in
    /// seconds since the epoch (OpenID Connect's `auth_time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

impl AccessClaims {
    /// Whether the token says a second factor was used within `max_age` before `now`: its
    /// `acr` is `aal2` and its `auth_time` (the time of that factor: a login with it, or a
    /// step-up) is recent enough.
    pub fn second_factor_within(&self, now: Timestamp, max_age: std::time::Duration) -> bool {
        self.acr.as_deref() == Some(crate::auth_context::ACR_SECOND_FACTOR)
            && self.auth_time.is_some_and(|at| {
                let age = now.unix_seconds().saturating_sub(at);
                u64::try_from(age).is_ok_and(|age| age <= max_age.as_secs())
            })
    }
}

/// Why a token was refused. Clients only ever see a generic 401; this is for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// Not a JWS compact serialization we accept (segments, encoding, size).
    Malformed,
    /// A header member we refuse: `jwk`, `jku`, `x5u`, `x5c`, `crit`, or a missing `kid`.
    ForbiddenHeader,
    /// `typ` is not `at+jwt`.
    WrongType,
    /// No live key with that `kid`.
    UnknownKey,
    /// The signature, the algorithm, or the claims' shape is wrong.
    Invalid,
    /// `exp` has passed, by more than the allowed clock skew.
    Expired,
    /// `nbf` is still ahead, by more than the allowed clock skew.
    NotYetValid,
    /// `iss` is not this server's issuer.
    WrongIssuer,
    /// `aud` is not the configured audience.
    WrongAudience,
    /// Valid, but revoked (or, in allowlist mode, not known to be live); the reason says which
    /// entry matched.
    Revoked(RevokedReason),
    /// The revocation state cannot be trusted right now (the change feed is lost and the store
    /// could not be re-read): fail closed.
    StateUnavailable,
}

/// Claims that passed every check. Only the verifier builds one.
#[derive(Clone, Debug)]
pub struct VerifiedClaims {
    claims: Arc<AccessClaims>,
}

impl VerifiedClaims {
    /// Every claim of the token.
    pub fn claims(&self) -> &AccessClaims {
        &self.claims
    }

    /// The user the token speaks for (`sub`); the account itself may since have changed.
    pub fn user_id(&self) -> &UserId {
        &self.claims.sub
    }

    /// The login the token belongs to (`fid`).
    pub fn family_id(&self) -> &FamilyId {
        &self.claims.fid
    }
}

struct Cached {
    claims: Arc<AccessClaims>,
    kid: String,
}

#[derive(Clone)]
struct CachedWeighter;

impl quick_cache::Weighter<TokenHash, Arc<Cached>> for CachedWeighter {
    fn weight(&self, _key: &TokenHash, c: &Arc<Cached>) -> u64 {
        let claims = &c.claims;
        (std::mem::size_of::<AccessClaims>()
            + 96
            + c.kid.len()
            + claims.iss.len()
            + claims.sub.as_str().len()
            + claims.aud.len()
            + claims.jti.len()
            + claims.client_id.len()
            + claims.fid.as_str().len()
            + claims.cnf.as_ref().map_or(0, |c| c.jkt.len() + 24)
            + claims.roles.iter().map(|r| r.len() + 24).sum::<usize>()
            + claims
                .amr
                .as_ref()
                .map_or(0, |amr| amr.iter().map(|m| m.len() + 24).sum::<usize>())
            + claims.acr.as_ref().map_or(0, String::len)) as u64
    }
}

/// The verified-token cache: bounded by bytes, with S3-FIFO eviction, so a token seen once waits
/// in a small probation queue while tokens seen again live in the main one. A flood of tokens
/// that are never repeated (a pool of stolen or enumerated tokens, every user's first request)
/// churns the probation queue and leaves the hot entries where they are.
fn verified_token_cache(
    capacity_bytes: u64,
) -> quick_cache::sync::Cache<TokenHash, Arc<Cached>, CachedWeighter> {
    let estimated_items = usize::try_from(capacity_bytes / 512)
        .unwrap_or(100_000)
        .max(16);
    quick_cache::sync::Cache::with_weighter(estimated_items, capacity_bytes, CachedWeighter)
}

/// Checks bearer tokens. Cheap to share.
pub struct Verifier {
    keyring: Arc<KeyRing>,
    revocations: Revocations,
    clock: Arc<dyn Clock>,
    issuer: String,
    audience: String,
    /// Allowed clock skew for `exp` and `nbf`, in seconds.
    leeway: i64,
    /// Verified tokens by hash, bounded by bytes with an eviction policy (S3-FIFO).
    cache: quick_cache::sync::Cache<TokenHash, Arc<Cached>, CachedWeighter>,
}

impl Verifier {
    /// A verifier of tokens signed by `keyring`'s keys for `issuer` and `audience`, with
    /// `leeway_seconds` of clock skew on `exp` and `nbf`, and a verified-token cache of
    /// `cache_capacity_bytes` (0 turns it off).
    pub fn new(
        keyring: Arc<KeyRing>,
        revocations: Revocations,
        clock: Arc<dyn Clock>,
        issuer: String,
        audience: String,
        leeway_seconds: i64,
        cache_capacity_bytes: u64,
    ) -> Self {
        Self {
            keyring,
            revocations,
            clock,
            issuer,
            audience,
            leeway: leeway_seconds,
            cache: verified_token_cache(cache_capacity_bytes),
        }
    }

    /// The `iss` every token must carry.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `aud` every token must carry.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Verifies an access token completely: signature, header, claims, revocation.
    pub fn verify(&self, token: &str) -> Result<VerifiedClaims, VerifyError> {
        let claims = self.verify_unrevoked(token, true)?;
        self.check_revocation(&claims)?;
        Ok(VerifiedClaims { claims })
    }

    /// Verifies signature and claims but not revocation; `check_time = false` also accepts an
    /// expired token (logout, which must find the login an old cookie belonged to).
    pub(crate) fn verify_unrevoked(
        &self,
        token: &str,
        check_time: bool,
    ) -> Result<Arc<AccessClaims>, VerifyError> {
        if token.len() > MAX_TOKEN_LEN || token.is_empty() {
            return Err(VerifyError::Malformed);
        }
        let hash = TokenHash::of(token.as_bytes());
        let claims = match self.cache.get(&hash) {
            // The key may have been retired since: check it is still live.
            Some(c) if self.keyring.verification_key(&c.kid).is_some() => Arc::clone(&c.claims),
            _ => {
                let (claims, kid) = self.verify_signature(token)?;
                let claims = Arc::new(claims);
                self.remember(hash, Arc::clone(&claims), kid);
                claims
            }
        };
        if check_time {
            self.check_time(&claims)?;
        }
        Ok(claims)
    }

    fn verify_signature(&self, token: &str) -> Result<(AccessClaims, String), VerifyError> {
        if token.split('.').count() != 3 || token.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(VerifyError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        check_header(&header)?;
        let kid = header.kid.as_deref().ok_or(VerifyError::ForbiddenHeader)?;
        let Some(key) = self.keyring.verification_key(kid) else {
            // Perhaps a key another node just made, whose announcement this node missed.
            self.keyring.reload_soon();
            return Err(VerifyError::UnknownKey);
        };
        // The key decides the algorithm; a header naming another one fails here.
        let mut validation = Validation::new(key.jwt_algorithm);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        // Time is checked against the injected clock, below.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
                    ErrorKind::InvalidAudience => VerifyError::WrongAudience,
                    _ => VerifyError::Invalid,
                }
            })?;
        Ok((data.claims, key.kid.clone()))
    }

    fn check_time(&self, claims: &AccessClaims) -> Result<(), VerifyError> {
        let now = self.clock.now().unix_seconds();
        if now >= claims.exp.saturating_add(self.leeway) {
            return Err(VerifyError::Expired);
        }
        if now.saturating_add(self.leeway) < claims.nbf {
            return Err(VerifyError::NotYetValid);
        }
        Ok(())
    }

    fn check_revocation(&self, claims: &AccessClaims) -> Result<(), VerifyError> {
        if !self.revocations.trusted(self.clock.now()) {
            return Err(VerifyError::StateUnavailable);
        }
        let reason = self.revocations.check(
            &claims.jti,
            &claims.fid,
            &claims.sub,
            Timestamp::from_unix_millis(claims.iat_ms),
            self.clock.now(),
        );
        match reason {
            Some(r) => Err(VerifyError::Revoked(r)),
            None => Ok(()),
        }
    }

    fn remember(&self, hash: TokenHash, claims: Arc<AccessClaims>, kid: String) {
        if self.cache.capacity() == 0 {
            return;
        }
        self.cache.insert(hash, Arc::new(Cached { claims, kid }));
    }
}

fn check_header(header: &Header) -> Result<(), VerifyError> {
    if header.jwk.is_some()
        || header.jku.is_some()
        || header.x5u.is_some()
        || header.x5c.is_some()
        || header.crit.is_some()
    {
        return Err(VerifyError::ForbiddenHeader);
    }
    let typ_ok = header.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
    });
    if !typ_ok {
        return Err(VerifyError::WrongType);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(n: usize) -> Arc<Cached> {
        let user = UserId::generate().unwrap();
        Arc::new(Cached {
            claims: Arc::new(AccessClaims {
                iss: "http://localhost:8080".into(),
                sub: user,
                aud: "tessera".into(),
                exp: 4_000_000_000,
                iat: 1,
                iat_ms: 1_000,
                nbf: 1,
                jti: format!("at_{n:022}"),
                client_id: "tessera".into(),
                fid: FamilyId::generate().unwrap(),
                model: LoginModel::Token,
                roles: Vec::new(),
                email_verified: None,
                cnf: None,
                amr: None,
                acr: None,
                auth_time: None,
            }),
            kid: "k1".into(),
        })
    }

    /// A flood of tokens that are never repeated (many times the cache's size) does not evict
    /// the tokens that keep being used: the policy keeps them, not the order of arrival.
    #[test]
    fn a_flood_of_never_seen_tokens_keeps_the_hot_ones() {
        let cache = verified_token_cache(256 * 1024);
        let hot: Vec<TokenHash> = (0..20)
            .map(|n| TokenHash::of(format!("hot {n}").as_bytes()))
            .collect();
        for (n, hash) in hot.iter().enumerate() {
            cache.insert(*hash, claims(n));
        }
        let mut hits = 0;
        let mut lookups = 0;
        // 20,000 distinct tokens (a 256 KiB cache holds about 600), each followed now and then
        // by the hot tokens' requests: 90 % repeated, 10 % never seen, as in the mixed benchmark.
        for n in 0..20_000 {
            let hash = TokenHash::of(format!("never seen {n}").as_bytes());
            if cache.get(&hash).is_none() {
                cache.insert(hash, claims(n));
            }
            for h in &hot {
                if n % 2 == 0 {
                    lookups += 1;
                    if cache.get(h).is_some() {
                        hits += 1;
                    } else {
                        cache.insert(*h, claims(0));
                    }
                }
            }
        }
        // Not one miss: a cache emptied when full, or one that evicts by arrival, would miss
        // the hot tokens after every few hundred new ones.
        assert_eq!(
            hits,
            lookups,
            "the hot tokens missed {} times",
            lookups - hits
        );
        assert!(hot.iter().all(|h| cache.get(h).is_some()));
        assert!(cache.weight() <= 256 * 1024);
    }
}
