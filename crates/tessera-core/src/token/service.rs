//! The token service: login to a token pair, refresh with rotation and reuse detection,
//! revocation (RFC 7009), introspection (RFC 7662).

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Header;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{Audit, EventKind};
use crate::auth_context::AuthContext;
use crate::clock::{Clock, Timestamp};
use crate::error::Error;
use crate::secret::RefreshToken;
use crate::session::ClientInfo;
use crate::store::ProofReplayStore;
use crate::store::{EventStore, RefreshStore, UserStore};
use crate::token::access::{ACCESS_TOKEN_TYP, AccessClaims, VerifiedClaims, Verifier, VerifyError};
use crate::token::dpop::{Confirmation, Dpop, DpopConfig};
use crate::token::keyring::{KeyInfo, KeyRing};
use crate::token::master_key::MasterKey;
use crate::token::refresh::{FamilyId, LoginModel, RefreshFamily, RefreshTokenRecord, Rotation};
use crate::token::revocation::{RevocationMode, Revocations};
use crate::token::revoked::{AllowedToken, RevocationEntry, Revoked};
use crate::user::{User, UserId};

/// Lifetimes and names of the token model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenConfig {
    /// `iss` of every access token: this server's public URL.
    pub issuer: String,
    /// `aud` of every access token: the resource servers that accept them.
    pub audience: String,
    /// `client_id` of every access token (RFC 9068).
    pub client_id: String,
    /// How long an access token is valid (`exp - iat`); at least 30 s. A revocation entry is
    /// kept this long (plus leeway) after it is made, as no token it matches outlives that.
    pub access_lifetime: Duration,
    /// A family unused this long ends.
    pub refresh_idle_lifetime: Duration,
    /// A family ends this long after login, however active.
    pub refresh_absolute_lifetime: Duration,
    /// A rotated refresh token presented again within this window (several tabs refreshing at
    /// once) gets a fresh pair; after it, the presentation is treated as theft.
    pub reuse_grace: Duration,
    /// How access tokens are revoked before they expire: denylist, allowlist, or not at all.
    pub revocation: RevocationMode,
    /// Allowed clock skew when checking `exp` and `nbf`.
    pub leeway: Duration,
    /// Memory for verified tokens, in bytes (about 450 bytes a token): a repeated token costs a
    /// lookup instead of a signature check. 0 turns the cache off.
    pub verify_cache_bytes: u64,
    /// Whether every access token says `email_verified` (false for an account without an
    /// address): set when verified addresses are required. Otherwise only accounts with an
    /// address carry the claim.
    pub email_verified_always: bool,
    /// Sender-constrained tokens (DPoP, RFC 9449).
    pub dpop: DpopConfig,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            issuer: "http://localhost:8080".into(),
            audience: "tessera".into(),
            client_id: "tessera".into(),
            access_lifetime: Duration::from_secs(10 * 60),
            refresh_idle_lifetime: Duration::from_secs(14 * 24 * 3600),
            refresh_absolute_lifetime: Duration::from_secs(30 * 24 * 3600),
            reuse_grace: Duration::from_secs(5),
            revocation: RevocationMode::Denylist,
            leeway: Duration::from_secs(5),
            verify_cache_bytes: VERIFY_CACHE_CAPACITY_BYTES,
            email_verified_always: false,
            dpop: DpopConfig::default(),
        }
    }
}

impl TokenConfig {
    /// Checks the values; an error names the field at fault.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.access_lifetime < Duration::from_secs(30) {
            return Err(("access_lifetime", "must be at least 30s".into()));
        }
        if self.refresh_idle_lifetime <= self.access_lifetime {
            return Err((
                "refresh_idle_lifetime",
                "must be longer than access_lifetime".into(),
            ));
        }
        if self.refresh_absolute_lifetime < self.refresh_idle_lifetime {
            return Err((
                "refresh_absolute_lifetime",
                "must be at least refresh_idle_lifetime".into(),
            ));
        }
        if self.reuse_grace > Duration::from_secs(60) {
            return Err(("reuse_grace", "must be at most 60s".into()));
        }
        if self.leeway > Duration::from_secs(300) {
            return Err(("leeway", "must be at most 5m".into()));
        }
        if self.dpop.proof_max_age < Duration::from_secs(5)
            || self.dpop.proof_max_age > Duration::from_secs(600)
        {
            return Err((
                "dpop_proof_max_age",
                "must be between 5s and 10m: a proof is made for one request".into(),
            ));
        }
        if self.issuer.is_empty() || self.audience.is_empty() || self.client_id.is_empty() {
            return Err((
                "issuer",
                "issuer, audience and client_id must not be empty".into(),
            ));
        }
        Ok(())
    }
}

/// What a login or refresh hands out.
#[derive(Clone)]
pub struct TokenPair {
    /// The signed JWT, for `Authorization: Bearer` or the hybrid access cookie.
    pub access_token: String,
    /// The access token's lifetime in seconds, as the OAuth token response reports it.
    pub expires_in: u64,
    /// The new refresh token; only its hash is stored, so this is the one copy.
    pub refresh_token: RefreshToken,
    /// The login (family) both tokens belong to.
    pub family_id: FamilyId,
    /// When the access token expires (its `exp`).
    pub access_expires_at: Timestamp,
    /// When the refresh token expires unless used: the family's idle expiry, capped by its
    /// absolute one.
    pub refresh_expires_at: Timestamp,
    /// The account as the access token describes it (read just before signing).
    pub user: User,
    /// Whether the access token is bound to a DPoP key (`token_type: DPoP`).
    pub dpop_bound: bool,
}

/// A fresh access token after a step-up: the refresh token stays as it is.
pub struct SteppedUpAccess {
    /// The signed JWT, carrying the new `auth_time`, `amr` and `acr`.
    pub access_token: String,
    /// Its lifetime in seconds.
    pub expires_in: u64,
    /// When it expires (its `exp`).
    pub expires_at: Timestamp,
    /// Whether it is bound to the login's DPoP key (`token_type: DPoP`).
    pub dpop_bound: bool,
}

impl std::fmt::Debug for SteppedUpAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SteppedUpAccess")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("family_id", &self.family_id)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// RFC 7662's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Introspection {
    /// Whether the token is valid now; when `false` every other member is omitted.
    pub active: bool,
    /// `access_token` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// The user id the token speaks for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The user's current username (read from the store, not the token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The OAuth client it was issued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Expiry in seconds since the epoch; for a refresh token, its family's idle expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issue time in seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not-before time in seconds since the epoch (access tokens only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// The issuer, this server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The audience (access tokens only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The access token's id (access tokens only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The roles the access token carries (access tokens only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// The DPoP key the token is bound to (RFC 9449 §6.2): a resource server must accept such a
    /// token only as `Authorization: DPoP` with a proof signed by that key, never as a bearer
    /// token. For a refresh token, the key its login is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// How the user authenticated (RFC 8176 values; access tokens that carry it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
    /// The assurance level: `aal1` or `aal2` (access tokens that carry it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// When the user last authenticated for the login, in seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

/// The token and hybrid login models: issues access tokens (signed JWTs, checked in memory by
/// [`Tokens::verify`]) with rotating refresh tokens (stored only as hashes; one reused after a
/// short grace revokes its whole family), and revokes, introspects and sweeps them. Built by
/// [`Services::build`](crate::Services::build), which shares it behind an `Arc`.
pub struct Tokens {
    keyring: Arc<KeyRing>,
    verifier: Verifier,
    revocations: Revocations,
    refresh: Arc<dyn RefreshStore>,
    users: Arc<dyn UserStore>,
    audit: Audit,
    clock: Arc<dyn Clock>,
    config: TokenConfig,
    dpop: Dpop,
    contexts: crate::login_context::LoginContexts,
    /// How recent a second factor a login used from a new place must show
    /// (`accounts.privileged_max_age`), with [`NewContextPolicy::StepUp`](crate::login_context::NewContextPolicy::StepUp).
    privileged_max_age: Duration,
}

/// Bytes the verified-token cache holds by default (about 100k tokens).
pub const VERIFY_CACHE_CAPACITY_BYTES: u64 = 48 * 1024 * 1024;

impl Tokens {
    /// A token service signing with `keyring`, recording families in `refresh`, events in
    /// `events` and DPoP proofs in `proofs`; built by [`Services::build`](crate::Services::build)
    /// in the server.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        keyring: Arc<KeyRing>,
        revocations: Revocations,
        refresh: Arc<dyn RefreshStore>,
        users: Arc<dyn UserStore>,
        events: Arc<dyn EventStore>,
        proofs: Arc<dyn ProofReplayStore>,
        master_key: MasterKey,
        clock: Arc<dyn Clock>,
        config: TokenConfig,
        contexts: crate::login_context::LoginContexts,
        privileged_max_age: Duration,
    ) -> Self {
        let verifier = Verifier::new(
            Arc::clone(&keyring),
            revocations.clone(),
            Arc::clone(&clock),
            config.issuer.clone(),
            config.audience.clone(),
            i64::try_from(config.leeway.as_secs()).unwrap_or(0),
            config.verify_cache_bytes,
        );
        let dpop = Dpop::new(
            proofs,
            master_key,
            Arc::clone(&clock),
            config.dpop.clone(),
            config.leeway,
        );
        Self {
            keyring,
            verifier,
            revocations,
            refresh,
            users,
            audit: Audit::new(events, Arc::clone(&clock)),
            clock,
            config,
            dpop,
            contexts,
            privileged_max_age,
        }
    }

    /// Binding hints: logins used from a new network and user agent at once.
    pub fn contexts(&self) -> &crate::login_context::LoginContexts {
        &self.contexts
    }

    /// DPoP: proof checks with replay detection, server nonces.
    pub fn dpop(&self) -> &Dpop {
        &self.dpop
    }

    /// The signing keys, for the JWKS document and key administration.
    pub fn keyring(&self) -> &Arc<KeyRing> {
        &self.keyring
    }

    /// The lifetimes and names this service runs with.
    pub fn config(&self) -> &TokenConfig {
        &self.config
    }

    /// The in-memory revocation state every verification consults.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// The time by the clock the services were built with (not the system clock: tests move it).
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The per-request check of a bearer token: memory only.
    pub fn verify(&self, token: &str) -> Result<VerifiedClaims, VerifyError> {
        self.verifier.verify(token)
    }

    /// Starts a family for `user` and hands out its first pair (bearer tokens).
    pub async fn issue(
        &self,
        user: &User,
        model: LoginModel,
        client: ClientInfo,
    ) -> Result<TokenPair, Error> {
        let auth = AuthContext::password(self.clock.now());
        self.issue_with(user, model, client, auth, None).await
    }

    /// [`Tokens::issue`] for a login authenticated as `auth` says (with a second factor), and
    /// with `dpop_jkt` (the thumbprint of the key a verified DPoP proof was signed with) bound to
    /// that key: the login and its access tokens.
    #[tracing::instrument(skip_all, fields(user = %user.id, model = model.as_str()))]
    pub async fn issue_with(
        &self,
        user: &User,
        model: LoginModel,
        client: ClientInfo,
        auth: AuthContext,
        dpop_jkt: Option<&str>,
    ) -> Result<TokenPair, Error> {
        let now = self.clock.now();
        let absolute = now.saturating_add(self.config.refresh_absolute_lifetime);
        let family = RefreshFamily {
            id: FamilyId::generate()?,
            user_id: user.id.clone(),
            model,
            created_at: now,
            last_used_at: now,
            expires_at: now
                .saturating_add(self.config.refresh_idle_lifetime)
                .min(absolute),
            absolute_expires_at: absolute,
            revoked_at: None,
            revoked_reason: None,
            client,
            generation: 0,
            auth,
            dpop_jkt: dpop_jkt.map(str::to_owned),
        };
        let refresh_token = RefreshToken::generate()?;
        let record = RefreshTokenRecord {
            hash: refresh_token.hash(),
            family_id: family.id.clone(),
            issued_at: now,
            rotated_at: None,
            generation: 0,
        };
        self.refresh.create_family(&family, &record).await?;
        let pair = match self
            .pair(user, &family, refresh_token, family.expires_at)
            .await
        {
            Ok(pair) => pair,
            Err(e) => {
                // The account changed meanwhile (or the keys failed): the family was never handed
                // out, so it must not stay live for anyone to find.
                if let Err(revoke) = self
                    .refresh
                    .revoke_family(&family.id, self.clock.now(), "never handed out")
                    .await
                {
                    tracing::warn!(family = %family.id, error = %revoke, "could not revoke a family that was never handed out");
                }
                return Err(e);
            }
        };
        self.event(
            EventKind::TokenIssued,
            Some(&user.id),
            json!({"family": family.id, "model": model, "dpop": family.dpop_jkt.is_some()}),
        )
        .await;
        Ok(pair)
    }

    async fn pair(
        &self,
        user: &User,
        family: &RefreshFamily,
        refresh_token: RefreshToken,
        refresh_expires_at: Timestamp,
    ) -> Result<TokenPair, Error> {
        // The token says what the account was at `as_of`: read it again now, after noting the
        // time, so a role or password change recorded after that time refuses this token, and one
        // recorded before is in the data it carries.
        let as_of = self.clock.now();
        let user = match self.users.user_by_id(&user.id).await? {
            Some(fresh) if fresh.is_active() => fresh,
            _ => return Err(Error::InvalidGrant),
        };
        let user = &user;
        let (access_token, claims) = self.sign_access_token(user, family, as_of)?;
        self.revocations
            .allow(AllowedToken {
                jti: claims.jti.clone(),
                family_id: family.id.clone(),
                user_id: user.id.clone(),
                expires_at: Timestamp::from_unix_millis(claims.exp.saturating_mul(1000)),
            })
            .await?;
        Ok(TokenPair {
            access_token,
            expires_in: self.config.access_lifetime.as_secs(),
            refresh_token,
            family_id: family.id.clone(),
            access_expires_at: Timestamp::from_unix_millis(claims.exp.saturating_mul(1000)),
            refresh_expires_at,
            user: user.clone(),
            dpop_bound: family.dpop_jkt.is_some(),
        })
    }

    fn sign_access_token(
        &self,
        user: &User,
        family: &RefreshFamily,
        as_of: Timestamp,
    ) -> Result<(String, AccessClaims), Error> {
        let key = self.keyring.signing_key();
        let now = self.clock.now().unix_seconds();
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            sub: user.id.clone(),
            aud: self.config.audience.clone(),
            exp: now + i64::try_from(self.config.access_lifetime.as_secs()).unwrap_or(i64::MAX / 2),
            iat: now,
            iat_ms: as_of.unix_millis(),
            nbf: now,
            jti: crate::secret::random_public_id("at_")?,
            client_id: self.config.client_id.clone(),
            fid: family.id.clone(),
            model: family.model,
            roles: user.roles.clone(),
            email_verified: match &user.email {
                Some(email) => Some(email.verified),
                None => self.config.email_verified_always.then_some(false),
            },
            amr: Some(family.auth.amr().iter().map(|m| (*m).to_owned()).collect()),
            acr: Some(family.auth.acr().to_owned()),
            auth_time: Some(family.auth.auth_time.unix_seconds()),
            cnf: family.dpop_jkt.clone().map(|jkt| Confirmation { jkt }),
        };
        let mut header = Header::new(key.jwt_algorithm);
        header.typ = Some(ACCESS_TOKEN_TYP.into());
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| Error::Internal(format!("signing an access token failed: {e}")))?;
        Ok((token, claims))
    }

    /// Signs arbitrary claims with the current signing key and the given `typ` header, so tests
    /// can present tokens the server would never issue (wrong `aud`, string `exp`, future `nbf`).
    /// Only built with the `test-util` feature, which the binary never enables.
    #[cfg(feature = "test-util")]
    pub fn sign_for_tests(&self, typ: Option<&str>, claims: &serde_json::Value) -> String {
        let key = self.keyring.signing_key();
        let mut header = Header::new(key.jwt_algorithm);
        header.typ = typ.map(str::to_owned);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap_or_default()
    }

    /// Exchanges a refresh token for a new pair. The presented token is rotated out. A token
    /// rotated less than `reuse_grace` ago (a concurrent refresh from another tab) still gets a
    /// valid pair; one rotated earlier is treated as stolen: the whole family, and every access
    /// token it issued, is revoked.
    ///
    /// A login bound to a DPoP key is refused here: see [`Tokens::refresh_with_proof`].
    pub async fn refresh(&self, presented: &RefreshToken) -> Result<TokenPair, Error> {
        self.refresh_with_proof(presented, None, None).await
    }

    /// [`Tokens::refresh`] for a request with a DPoP proof: `dpop_jkt` is the thumbprint of the
    /// key its verified proof was signed with, if it had one. A login bound to a key is refreshed
    /// only with a proof of that key: otherwise the attempt is refused and recorded, and the token
    /// is not used up (its owner goes on). The new access token is bound to the proof's key
    /// whenever there is one.
    ///
    /// `seen` is the client refreshing: a login refreshed from a new network and user agent at
    /// once is recorded, and with `accounts.new_context = "step_up"` refused
    /// ([`Error::LoginMoved`], the token not used up) unless its last second factor is recent.
    #[tracing::instrument(skip_all)]
    pub async fn refresh_with_proof(
        &self,
        presented: &RefreshToken,
        dpop_jkt: Option<&str>,
        seen: Option<&ClientInfo>,
    ) -> Result<TokenPair, Error> {
        let hash = presented.hash();
        let Some((record, family)) = self.refresh.refresh_token(&hash).await? else {
            return Err(Error::InvalidGrant);
        };
        let now = self.clock.now();
        if !family.is_live(now) {
            return Err(Error::InvalidGrant);
        }
        if let Some(bound) = &family.dpop_jkt
            && dpop_jkt != Some(bound.as_str())
        {
            tracing::warn!(family = %family.id, user = %family.user_id, "refresh of a DPoP-bound login without its key's proof; refused");
            metrics::counter!("tessera_token_refreshes_total", "outcome" => "dpop_key_missing")
                .increment(1);
            self.event(
                EventKind::DpopBindingRefused,
                Some(&family.user_id),
                json!({"family": family.id, "proof": if dpop_jkt.is_some() { "another key" } else { "none" }}),
            )
            .await;
            return Err(Error::DpopKeyRequired);
        }
        // A login made without DPoP stays a bearer login: a proof here would bind the new access
        // token but not the refresh token, a half-bound login a copied refresh token still
        // works for. The client logs in with a proof instead.
        if family.dpop_jkt.is_none() && dpop_jkt.is_some() {
            return Err(Error::DpopNotBound);
        }
        if let Some(seen) = seen
            && self
                .contexts
                .observe(
                    family.id.as_str(),
                    &family.user_id,
                    family.model,
                    &family.client,
                    seen,
                )
                .await
            && self.contexts.policy() == crate::login_context::NewContextPolicy::StepUp
            && !family
                .auth
                .second_factor_within(now, self.privileged_max_age)
        {
            return Err(Error::LoginMoved {
                max_age: self.privileged_max_age,
            });
        }
        let user = match self.users.user_by_id(&family.user_id).await? {
            Some(user) if user.is_active() => user,
            _ => return Err(Error::InvalidGrant),
        };
        let expires_at = now
            .saturating_add(self.config.refresh_idle_lifetime)
            .min(family.absolute_expires_at);
        let next = RefreshToken::generate()?;
        // The generation after the presented token's: a rotation's new token, or a sibling of it.
        let Some(child_generation) = record.generation.checked_add(1) else {
            return Err(Error::InvalidGrant);
        };
        let next_record = RefreshTokenRecord {
            hash: next.hash(),
            family_id: family.id.clone(),
            issued_at: now,
            rotated_at: None,
            generation: child_generation,
        };
        // When the presented token was rotated; `None` when it never was but its branch ended (a
        // sibling of its generation was rotated first).
        let rotated_at = match record.rotated_at {
            Some(at) => Some(at),
            None if !record.is_current(&family) => None,
            None => match self
                .refresh
                .rotate_refresh_token(&hash, &next_record, now, expires_at)
                .await?
            {
                Rotation::Rotated => {
                    metrics::counter!("tessera_token_refreshes_total", "outcome" => "rotated")
                        .increment(1);
                    self.event(
                        EventKind::TokenRefreshed,
                        Some(&user.id),
                        json!({"family": family.id}),
                    )
                    .await;
                    return self.pair(&user, &family, next, expires_at).await;
                }
                // The same token, rotated a moment ago by a concurrent request.
                Rotation::AlreadyRotated { at } => Some(at),
                Rotation::Superseded => None,
                Rotation::Revoked | Rotation::Unknown => return Err(Error::InvalidGrant),
            },
        };
        if let Some(at) = rotated_at
            && now.since(at) <= self.config.reuse_grace
        {
            // Another tab refreshed with the same token a moment ago: not theft. It gets a token
            // beside the one that tab got, of the same generation; whichever of them is refreshed
            // first goes on, and the other's branch ends there.
            metrics::counter!("tessera_token_refreshes_total", "outcome" => "grace").increment(1);
            if !self
                .refresh
                .add_refresh_token(&next_record, now, expires_at)
                .await?
            {
                // Revoked, or the family has moved on past this token's child meanwhile: no
                // branch may start from an ended one.
                return Err(Error::InvalidGrant);
            }
            return self.pair(&user, &family, next, expires_at).await;
        }
        tracing::warn!(family = %family.id, user = %user.id, "refresh token reuse detected; revoking the family");
        metrics::counter!("tessera_token_refreshes_total", "outcome" => "reuse_detected")
            .increment(1);
        self.revoke_family(&family.id, "refresh token reuse")
            .await?;
        let detail = match rotated_at {
            Some(at) => {
                json!({"family": family.id, "rotated_ms_ago": now.since(at).as_millis() as u64})
            }
            None => json!({"family": family.id, "superseded": true}),
        };
        self.event(EventKind::RefreshReuseDetected, Some(&user.id), detail)
            .await;
        Err(Error::InvalidGrant)
    }

    /// Whether a request may act on a token bound to `bound` (a key thumbprint; `None`: a bearer
    /// token, which anyone holding it may act on): its proof's key must be that key. A refusal is
    /// recorded.
    async fn holds_key(
        &self,
        bound: Option<&str>,
        proof: Option<&str>,
        family: &FamilyId,
        user: &UserId,
    ) -> bool {
        match bound {
            None => true,
            Some(bound) if proof == Some(bound) => true,
            Some(_) => {
                tracing::warn!(%family, %user, "revocation of a DPoP-bound token without its key's proof; ignored");
                self.event(
                    EventKind::DpopBindingRefused,
                    Some(user),
                    json!({"family": family, "proof": if proof.is_some() { "another key" } else { "none" }, "action": "revoke"}),
                )
                .await;
                false
            }
        }
    }

    /// The live family a refresh token belongs to (not rotated out, not revoked, not expired),
    /// without using the token up.
    pub async fn live_family_of(
        &self,
        presented: &RefreshToken,
    ) -> Result<Option<RefreshFamily>, Error> {
        let Some((record, family)) = self.refresh.refresh_token(&presented.hash()).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        // A token rotated into the current generation within the grace window still counts
        // (another tab's refresh); a sibling whose branch ended does not.
        let current = record.is_current(&family)
            || (record.is_parent_of_current(&family)
                && record
                    .rotated_at
                    .is_some_and(|at| now.since(at) <= self.config.reuse_grace));
        Ok((current && family.is_live(now)).then_some(family))
    }

    /// The claims of an access token that is genuine and unexpired, whether or not it has been
    /// revoked: for showing the holder of a revoked token the entries that now refuse it.
    pub fn claims_even_if_revoked(&self, token: &str) -> Option<Arc<AccessClaims>> {
        self.verifier.verify_unrevoked(token, true).ok()
    }

    /// Records a step-up on the live family `id` of `user` (its later tokens, refreshed ones
    /// too, carry `auth`) and signs a fresh access token that carries it. [`Error::InvalidGrant`]
    /// when the family is not live or not the user's.
    pub async fn step_up(
        &self,
        id: &FamilyId,
        user: &UserId,
        auth: AuthContext,
    ) -> Result<SteppedUpAccess, Error> {
        let now = self.clock.now();
        let Some(mut family) = self
            .family_of_user(id, user)
            .await?
            .filter(|f| f.is_live(now))
        else {
            return Err(Error::InvalidGrant);
        };
        if !self.refresh.set_family_auth(id, &auth).await? {
            return Err(Error::InvalidGrant);
        }
        family.auth = auth;
        let as_of = self.clock.now();
        let account = match self.users.user_by_id(user).await? {
            Some(fresh) if fresh.is_active() => fresh,
            _ => return Err(Error::InvalidGrant),
        };
        let (access_token, claims) = self.sign_access_token(&account, &family, as_of)?;
        let expires_at = Timestamp::from_unix_millis(claims.exp.saturating_mul(1000));
        self.revocations
            .allow(AllowedToken {
                jti: claims.jti.clone(),
                family_id: family.id.clone(),
                user_id: account.id.clone(),
                expires_at,
            })
            .await?;
        Ok(SteppedUpAccess {
            access_token,
            expires_in: self.config.access_lifetime.as_secs(),
            expires_at,
            dpop_bound: family.dpop_jkt.is_some(),
        })
    }

    /// The family `id` (revoked or not, until the sweep deletes it).
    pub async fn family(&self, id: &FamilyId) -> Result<Option<RefreshFamily>, Error> {
        Ok(self.refresh.family(id).await?)
    }

    /// The family `id` when it belongs to `user` (revoked or not, until the sweep deletes it).
    pub async fn family_of_user(
        &self,
        id: &FamilyId,
        user: &UserId,
    ) -> Result<Option<RefreshFamily>, Error> {
        Ok(self
            .refresh
            .family(id)
            .await?
            .filter(|family| family.user_id == *user))
    }

    /// An access token's claims if it is genuine, even when expired or revoked: for logout, which
    /// must find the login an old cookie belonged to.
    pub fn decode_access_token_for_logout(&self, token: &str) -> Option<FamilyId> {
        self.verifier
            .verify_unrevoked(token, false)
            .ok()
            .map(|c| c.fid.clone())
    }

    /// Ends a family: its refresh tokens stop working, and so do the access tokens it issued.
    pub async fn revoke_family(&self, id: &FamilyId, reason: &str) -> Result<bool, Error> {
        let now = self.clock.now();
        let newly = self.refresh.revoke_family(id, now, reason).await?;
        self.revocations
            .revoke(RevocationEntry {
                revoked: Revoked::Family { id: id.clone() },
                expires_at: self.access_tokens_outlive(now),
            })
            .await?;
        Ok(newly)
    }

    /// One access token, by `jti`, stops working (it would expire within the access lifetime).
    pub async fn revoke_access_token(&self, jti: &str, now: Timestamp) -> Result<(), Error> {
        self.revocations
            .revoke(RevocationEntry {
                revoked: Revoked::Token {
                    jti: jti.to_owned(),
                },
                expires_at: self.access_tokens_outlive(now),
            })
            .await
    }

    /// Every access token issued before `before` to `user` stops working (password change,
    /// forced logout, disabled account).
    ///
    /// Compared with the token's `iat_ms`: `iat` has whole seconds only, which cannot tell a
    /// token issued just before a password change from one issued just after in the same second.
    pub async fn revoke_user_before(&self, user: &UserId, before: Timestamp) -> Result<(), Error> {
        self.revocations
            .revoke(RevocationEntry {
                revoked: Revoked::UserBefore {
                    user: user.clone(),
                    before,
                },
                expires_at: self.access_tokens_outlive(before),
            })
            .await
    }

    /// The moment after which no access token issued until `at` can still be valid.
    fn access_tokens_outlive(&self, at: Timestamp) -> Timestamp {
        at.saturating_add(self.config.access_lifetime)
            .saturating_add(self.config.leeway)
            .saturating_add(Duration::from_secs(1))
    }

    /// RFC 7009: revokes a refresh token (its family) or an access token (its `jti` until it
    /// expires, and its family). Unknown and invalid tokens are not an error.
    #[tracing::instrument(skip_all, fields(hint = hint.unwrap_or("")))]
    pub async fn revoke(&self, token: &str, hint: Option<&str>) -> Result<(), Error> {
        self.revoke_with_proof(token, hint, None).await
    }

    /// [`Tokens::revoke`] for a request with a DPoP proof (`dpop_jkt`, the thumbprint of its
    /// verified key). A token bound to a key — a DPoP access token, or a refresh token of a login
    /// bound to one — is revoked only with a proof of that key: a copy, useless for anything
    /// else, must not be able to log its owner out either. Otherwise nothing happens (the answer
    /// is the same as for an unknown token) and the attempt is recorded.
    pub async fn revoke_with_proof(
        &self,
        token: &str,
        hint: Option<&str>,
        dpop_jkt: Option<&str>,
    ) -> Result<(), Error> {
        let as_refresh = || RefreshToken::parse(token);
        let refresh_first = hint != Some("access_token");
        if refresh_first && let Some(refresh) = as_refresh() {
            if let Some((_, family)) = self.refresh.refresh_token(&refresh.hash()).await? {
                if !self
                    .holds_key(
                        family.dpop_jkt.as_deref(),
                        dpop_jkt,
                        &family.id,
                        &family.user_id,
                    )
                    .await
                {
                    return Ok(());
                }
                self.revoke_family(&family.id, "revoked by the client")
                    .await?;
                self.event(
                    EventKind::TokenRevoked,
                    Some(&family.user_id),
                    json!({"family": family.id, "token_type": "refresh_token"}),
                )
                .await;
            }
            return Ok(());
        }
        // An access token that has expired is refused anyway: revoking it has no effect on its
        // login, so a token found in an old log cannot be used to log its owner out.
        match self.verifier.verify_unrevoked(token, true) {
            Ok(claims) => {
                let bound = claims.cnf.as_ref().map(|c| c.jkt.as_str());
                if !self
                    .holds_key(bound, dpop_jkt, &claims.fid, &claims.sub)
                    .await
                {
                    return Ok(());
                }
                let now = self.clock.now();
                self.revocations
                    .revoke(RevocationEntry {
                        revoked: Revoked::Token {
                            jti: claims.jti.clone(),
                        },
                        expires_at: Timestamp::from_unix_millis(claims.exp.saturating_mul(1000))
                            .saturating_add(self.config.leeway)
                            .max(now),
                    })
                    .await?;
                self.revoke_family(&claims.fid, "revoked by the client")
                    .await?;
                self.event(
                    EventKind::TokenRevoked,
                    Some(&claims.sub),
                    json!({"family": claims.fid, "token_type": "access_token"}),
                )
                .await;
            }
            Err(_) if !refresh_first => {
                // Hinted as an access token but it is not one: try it as a refresh token.
                if let Some(refresh) = as_refresh()
                    && let Some((_, family)) = self.refresh.refresh_token(&refresh.hash()).await?
                    && self
                        .holds_key(
                            family.dpop_jkt.as_deref(),
                            dpop_jkt,
                            &family.id,
                            &family.user_id,
                        )
                        .await
                {
                    self.revoke_family(&family.id, "revoked by the client")
                        .await?;
                }
            }
            Err(_) => {}
        }
        Ok(())
    }

    /// RFC 7662: what a resource server may know about a token.
    pub async fn introspect(&self, token: &str) -> Result<Introspection, Error> {
        let verified = match self.verifier.verify(token) {
            Ok(verified) => Some(verified),
            // "Inactive" would make a resource server drop a good login over an outage.
            Err(VerifyError::StateUnavailable) => {
                return Err(Error::Store(crate::error::StoreError::Unavailable(
                    "the revocation state is being re-read".into(),
                )));
            }
            Err(_) => None,
        };
        if let Some(verified) = verified {
            let c = verified.claims();
            // A token of an account deleted or disabled since it was issued is not active, even
            // where no revocation list refuses it (`tokens.revocation = "none"`).
            let Some(user) = self
                .users
                .user_by_id(verified.user_id())
                .await?
                .filter(User::is_active)
            else {
                return Ok(Introspection::default());
            };
            let username = Some(user.username.to_string());
            return Ok(Introspection {
                active: true,
                token_type: Some("access_token"),
                sub: Some(c.sub.to_string()),
                username,
                client_id: Some(c.client_id.clone()),
                exp: Some(c.exp),
                iat: Some(c.iat),
                nbf: Some(c.nbf),
                iss: Some(c.iss.clone()),
                aud: Some(c.aud.clone()),
                jti: Some(c.jti.clone()),
                roles: Some(c.roles.clone()),
                cnf: c.cnf.clone(),
                amr: c.amr.clone(),
                acr: c.acr.clone(),
                auth_time: c.auth_time,
            });
        }
        if let Some(refresh) = RefreshToken::parse(token)
            && let Some((record, family)) = self.refresh.refresh_token(&refresh.hash()).await?
        {
            let now = self.clock.now();
            if record.is_current(&family)
                && family.is_live(now)
                && let Some(user) = self.users.user_by_id(&family.user_id).await?
                && user.is_active()
            {
                return Ok(Introspection {
                    active: true,
                    token_type: Some("refresh_token"),
                    sub: Some(user.id.to_string()),
                    username: Some(user.username.to_string()),
                    client_id: Some(self.config.client_id.clone()),
                    exp: Some(family.expires_at.unix_seconds()),
                    iat: Some(record.issued_at.unix_seconds()),
                    iss: Some(self.config.issuer.clone()),
                    cnf: family.dpop_jkt.clone().map(|jkt| Confirmation { jkt }),
                    amr: Some(family.auth.amr().iter().map(|m| (*m).to_owned()).collect()),
                    acr: Some(family.auth.acr().to_owned()),
                    auth_time: Some(family.auth.auth_time.unix_seconds()),
                    ..Introspection::default()
                });
            }
        }
        Ok(Introspection::default())
    }

    /// Rotates the signing key (see [`KeyRing::rotate`]) and records who did.
    pub async fn rotate_key(&self, by: Option<&UserId>) -> Result<KeyInfo, Error> {
        let key = self.keyring.rotate().await?;
        self.event(
            EventKind::KeyRotated,
            by,
            json!({"kid": key.kid, "algorithm": key.algorithm}),
        )
        .await;
        Ok(key)
    }

    /// Retires a key (see [`KeyRing::retire`]) and records who did.
    pub async fn retire_key(&self, kid: &str, by: Option<&UserId>) -> Result<bool, Error> {
        let retired = self.keyring.retire(kid).await?;
        if retired {
            self.event(EventKind::KeyRetired, by, json!({"kid": kid}))
                .await;
        }
        Ok(retired)
    }

    /// Deletes expired families and forgets expired revocations.
    pub async fn sweep(&self, batch: usize) -> Result<usize, Error> {
        let now = self.clock.now();
        let mut total = self.revocations.purge(now).await?;
        loop {
            let n = self.refresh.delete_expired_families(now, batch).await?;
            total += n;
            if n < batch {
                return Ok(total);
            }
        }
    }

    async fn event(&self, kind: EventKind, user: Option<&UserId>, detail: serde_json::Value) {
        self.audit.record(kind, user, detail).await;
    }
}
