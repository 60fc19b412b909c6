//! DPoP (RFC 9449) on the server: the checks around a proof that need state — its `jti` seen
//! before on any node, the server nonce — and the rules of the deployment (`tokens.require_dpop`,
//! `tokens.dpop_nonce`). The proof itself is checked by [`tessera_dpop::check_proof`].
//!
//! A token issued with a proof carries `cnf.jkt`, the thumbprint of the client's key; its login
//! (refresh family) is bound to the same key. From then on every request with the token, and
//! every refresh of the login, needs a fresh proof signed by that key.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
pub use tessera_dpop::{ProofError, VerifiedProof};

use crate::clock::{Clock, Timestamp};
use crate::error::StoreError;
use crate::store::ProofReplayStore;
use crate::token::master_key::MasterKey;

/// `cnf` (RFC 7800) of a DPoP-bound access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// The JWK SHA-256 thumbprint of the key the token is bound to.
    pub jkt: String,
}

/// How long a server nonce is handed out; one stays accepted for one more such period, so a
/// client that just got one never finds it refused.
const NONCE_PERIOD_SECS: i64 = 300;

/// DPoP's settings (`tokens.*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpopConfig {
    /// Every token login and refresh must come with a proof: no bearer tokens are issued.
    pub required: bool,
    /// Proofs must carry a recent server nonce (`DPoP-Nonce`), so a proof made in advance by a
    /// compromised client cannot be used later.
    pub nonce: bool,
    /// How old a proof may be; its `jti` is remembered this long (plus the leeway).
    pub proof_max_age: Duration,
}

impl Default for DpopConfig {
    fn default() -> Self {
        Self {
            required: false,
            nonce: false,
            proof_max_age: Duration::from_secs(60),
        }
    }
}

/// Why a request's proof was refused. Each maps to an RFC 9449 error: `invalid_dpop_proof`,
/// `use_dpop_nonce`, or (for a bound token without its proof) `invalid_token`.
#[derive(Debug, thiserror::Error)]
pub enum DpopError {
    /// No `DPoP` header where one is needed (a bound token or login, or `tokens.require_dpop`).
    #[error("a DPoP proof is required: send a DPoP header signed with the client's key")]
    Missing,
    /// Two `DPoP` headers, or one that is not text.
    #[error("send exactly one DPoP header")]
    Ambiguous,
    /// The proof failed a check.
    #[error(transparent)]
    Invalid(#[from] ProofError),
    /// The proof was used before (on this node or another).
    #[error("the DPoP proof was used before: make a new proof for every request")]
    Replayed,
    /// The proof is signed by another key than the one the token or login is bound to.
    #[error("the DPoP proof is signed with another key than the one the token is bound to")]
    WrongKey,
    /// The proof lacks a current server nonce; the answer carries one in `DPoP-Nonce`.
    #[error("the DPoP proof must carry the server's current nonce (see the DPoP-Nonce header)")]
    UseNonce,
    /// The replay state cannot be reached: fail closed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The DPoP service: replay detection across nodes, server nonces, the deployment's rules.
#[derive(Clone)]
pub struct Dpop {
    proofs: Arc<dyn ProofReplayStore>,
    master: MasterKey,
    clock: Arc<dyn Clock>,
    config: DpopConfig,
    leeway: Duration,
}

impl Dpop {
    /// Built by [`crate::Services::build`].
    pub fn new(
        proofs: Arc<dyn ProofReplayStore>,
        master: MasterKey,
        clock: Arc<dyn Clock>,
        config: DpopConfig,
        leeway: Duration,
    ) -> Self {
        Self {
            proofs,
            master,
            clock,
            config,
            leeway,
        }
    }

    /// The rules this service runs with.
    pub fn config(&self) -> &DpopConfig {
        &self.config
    }

    /// Checks a proof for a request (`method`, the absolute `url` the client addressed, the
    /// `access_token` it carries if any), then records it so it is never accepted again: what a
    /// request with a bound access token goes through.
    pub async fn check(
        &self,
        proof: &str,
        method: &str,
        url: &str,
        access_token: Option<&str>,
    ) -> Result<VerifiedProof, DpopError> {
        let verified = self.verify(proof, method, url, access_token)?;
        self.record(&verified).await?;
        Ok(verified)
    }

    /// Every check of [`Dpop::check`] but the replay check: the proof is not recorded yet. A
    /// token endpoint records it with [`Dpop::record`] once the request has spent its budget, so
    /// that requests nobody is throttled for cannot fill the replay store. A proof without a
    /// current nonce, when nonces are on, is refused with [`DpopError::UseNonce`].
    pub fn verify(
        &self,
        proof: &str,
        method: &str,
        url: &str,
        access_token: Option<&str>,
    ) -> Result<VerifiedProof, DpopError> {
        let now = self.clock.now();
        let expected = tessera_dpop::Expected {
            method,
            url,
            access_token,
            now: now.unix_seconds(),
            max_age: self.config.proof_max_age.as_secs(),
            leeway: self.leeway.as_secs(),
        };
        let verified = tessera_dpop::check_proof(proof, &expected)?;
        if self.config.nonce
            && !verified
                .nonce
                .as_deref()
                .is_some_and(|nonce| self.nonce_is_current(nonce))
        {
            return Err(DpopError::UseNonce);
        }
        Ok(verified)
    }

    /// Records a verified proof: refused as a replay if any node recorded it before.
    pub async fn record(&self, verified: &VerifiedProof) -> Result<(), DpopError> {
        let now = self.clock.now();
        if !self
            .proofs
            .first_use(&verified.replay_key(), self.forget_at(verified.iat), now)
            .await?
        {
            metrics::counter!("tessera_dpop_proofs_total", "outcome" => "replayed").increment(1);
            return Err(DpopError::Replayed);
        }
        Ok(())
    }

    /// Until when a proof issued at `iat` (whole seconds) must be remembered: as long as the age
    /// check could still accept it. That check compares whole seconds, so a proof is accepted
    /// until the end of second `iat + max_age`, to which the leeway adds.
    fn forget_at(&self, iat: i64) -> Timestamp {
        let accepted_until_secs = iat
            .saturating_add(
                i64::try_from(self.config.proof_max_age.as_secs()).unwrap_or(i64::MAX / 4),
            )
            .saturating_add(1);
        Timestamp::from_unix_millis(
            accepted_until_secs
                .saturating_mul(1000)
                .saturating_add(i64::try_from(self.leeway.as_millis()).unwrap_or(i64::MAX / 4)),
        )
    }

    /// The nonce to hand out now (`DPoP-Nonce`), when nonces are on.
    pub fn current_nonce(&self) -> Option<String> {
        self.config
            .nonce
            .then(|| self.master.dpop_nonce(self.period(self.clock.now())))
    }

    fn period(&self, now: Timestamp) -> u64 {
        u64::try_from(now.unix_seconds().max(0) / NONCE_PERIOD_SECS).unwrap_or(0)
    }

    fn nonce_is_current(&self, nonce: &str) -> bool {
        let current = self.period(self.clock.now());
        self.master
            .dpop_nonce_period(nonce)
            .is_some_and(|period| period == current || period.checked_add(1) == Some(current))
    }

    /// Forgets expired proofs (the periodic upkeep).
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        self.proofs.purge_expired_proofs(self.clock.now()).await
    }
}

/// A server nonce: the period it was made in and a MAC over it, so every node that shares the
/// master key accepts it without shared state.
pub(crate) fn encode_nonce(period: u64, tag: &[u8]) -> String {
    let mut bytes = period.to_be_bytes().to_vec();
    bytes.extend_from_slice(&tag[..NONCE_TAG_LEN.min(tag.len())]);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The period a nonce names, and its tag, if it has the shape of one.
pub(crate) fn decode_nonce(nonce: &str) -> Option<(u64, Vec<u8>)> {
    let bytes = URL_SAFE_NO_PAD.decode(nonce).ok()?;
    if bytes.len() != 8 + NONCE_TAG_LEN {
        return None;
    }
    let (period, tag) = bytes.split_at(8);
    Some((u64::from_be_bytes(period.try_into().ok()?), tag.to_vec()))
}

/// Bytes of MAC a nonce keeps (128 bits).
pub(crate) const NONCE_TAG_LEN: usize = 16;

/// DPoP proofs seen lately, in this process: replay detection for a single node (the memory and
/// SQLite stores). Bounded: past its capacity it refuses new proofs (fail closed) rather than
/// forget any.
#[derive(Debug, Default)]
pub struct SeenProofs(tessera_dpop::ReplayCache);

#[async_trait]
impl ProofReplayStore for SeenProofs {
    async fn first_use(
        &self,
        key: &[u8; 32],
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.0
            .first_use(key, expires_at.unix_millis(), now.unix_millis())
            .map_err(|full| StoreError::Unavailable(full.to_string()))
    }

    async fn purge_expired_proofs(&self, now: Timestamp) -> Result<usize, StoreError> {
        Ok(self.0.purge(now.unix_millis()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use tessera_dpop::ProofKey;

    const URL: &str = "https://auth.example.com/v1/token";

    fn service(config: DpopConfig) -> (Dpop, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::starting_at_millis(
            tessera_dpop::unix_now() * 1000,
        ));
        let (master, _) = MasterKey::generate().unwrap();
        let dpop = Dpop::new(
            Arc::new(SeenProofs::default()),
            master,
            clock.clone(),
            config,
            Duration::from_secs(5),
        );
        (dpop, clock)
    }

    #[tokio::test]
    async fn a_proof_is_accepted_once() {
        let (dpop, clock) = service(DpopConfig::default());
        let key = ProofKey::generate_es256().unwrap();
        let now = clock.now().unix_seconds();
        let proof = key.proof_at("POST", URL, None, None, now).unwrap();
        let verified = dpop.check(&proof, "POST", URL, None).await.unwrap();
        assert_eq!(verified.thumbprint, key.thumbprint());
        assert!(matches!(
            dpop.check(&proof, "POST", URL, None).await,
            Err(DpopError::Replayed)
        ));
        // Still refused in the last moments of its window (the age check counts whole seconds)…
        clock.advance(Duration::from_millis(60_900));
        assert!(matches!(
            dpop.check(&proof, "POST", URL, None).await,
            Err(DpopError::Replayed)
        ));
        // …and once it is too old to be accepted anyway, it is forgotten.
        clock.advance(Duration::from_secs(6));
        assert_eq!(dpop.sweep().await.unwrap(), 1);
        assert!(matches!(
            dpop.check(&proof, "POST", URL, None).await,
            Err(DpopError::Invalid(ProofError::Stale))
        ));
    }

    #[tokio::test]
    async fn nonces_are_required_when_on_and_expire() {
        let (dpop, clock) = service(DpopConfig {
            nonce: true,
            ..DpopConfig::default()
        });
        let key = ProofKey::generate_ed25519().unwrap();
        let proof_with = |nonce: Option<&str>| {
            key.proof_at("POST", URL, None, nonce, clock.now().unix_seconds())
                .unwrap()
        };
        assert!(matches!(
            dpop.check(&proof_with(None), "POST", URL, None).await,
            Err(DpopError::UseNonce)
        ));
        assert!(matches!(
            dpop.check(&proof_with(Some("made-up")), "POST", URL, None)
                .await,
            Err(DpopError::UseNonce)
        ));
        let nonce = dpop.current_nonce().unwrap();
        dpop.check(&proof_with(Some(&nonce)), "POST", URL, None)
            .await
            .unwrap();
        // Still good in the next period, not in the one after.
        clock.advance(Duration::from_secs(NONCE_PERIOD_SECS as u64));
        dpop.check(&proof_with(Some(&nonce)), "POST", URL, None)
            .await
            .unwrap();
        clock.advance(Duration::from_secs(NONCE_PERIOD_SECS as u64));
        assert!(matches!(
            dpop.check(&proof_with(Some(&nonce)), "POST", URL, None)
                .await,
            Err(DpopError::UseNonce)
        ));
        // Another server's nonce (another master key) is not this one's.
        let (other, _) = service(DpopConfig {
            nonce: true,
            ..DpopConfig::default()
        });
        let foreign = other.current_nonce().unwrap();
        assert!(matches!(
            dpop.check(&proof_with(Some(&foreign)), "POST", URL, None)
                .await,
            Err(DpopError::UseNonce)
        ));
    }
}
