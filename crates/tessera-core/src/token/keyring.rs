//! The key ring: signing keys created on first start and stored with their private parts sealed
//! by the master key; rotation (new tokens use the new key, old tokens verify until they expire)
//! and retirement (every token a key signed stops verifying at once); the public JWKS.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::Serialize;

use crate::clock::{Clock, Timestamp};
use crate::error::Error;
use crate::store::KeyStore;
use crate::token::key::{KeyStatus, SigningAlgorithm, StoredKey};
use crate::token::master_key::MasterKey;

fn jwt_algorithm(alg: SigningAlgorithm) -> Algorithm {
    match alg {
        SigningAlgorithm::EdDSA => Algorithm::EdDSA,
        SigningAlgorithm::ES256 => Algorithm::ES256,
        SigningAlgorithm::RS256 => Algorithm::RS256,
        SigningAlgorithm::HS256 => Algorithm::HS256,
    }
}

/// New private key material: PKCS#8 v1 DER for the asymmetric algorithms, 32 random bytes for
/// HMAC.
fn generate_private(alg: SigningAlgorithm) -> Result<Vec<u8>, Error> {
    let failed = |what: &str| Error::Internal(format!("generating a {what} key failed"));
    Ok(match alg {
        SigningAlgorithm::EdDSA => Ed25519KeyPair::generate()
            .and_then(|k| k.to_pkcs8v1())
            .map_err(|_| failed("Ed25519"))?
            .as_ref()
            .to_vec(),
        SigningAlgorithm::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|k| k.to_pkcs8v1())
            .map_err(|_| failed("P-256"))?
            .as_ref()
            .to_vec(),
        SigningAlgorithm::RS256 => {
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .and_then(|k| k.as_der())
                .map_err(|_| failed("RSA"))?
                .as_ref()
                .to_vec()
        }
        SigningAlgorithm::HS256 => crate::secret::random_bytes::<32>()?.to_vec(),
    })
}

fn encoding_key(alg: SigningAlgorithm, private: &[u8]) -> Result<EncodingKey, Error> {
    let bad = |e: jsonwebtoken::errors::Error| Error::Internal(format!("unusable {alg} key: {e}"));
    Ok(match alg {
        SigningAlgorithm::EdDSA => EncodingKey::from_ed_der(private),
        SigningAlgorithm::ES256 => EncodingKey::from_ec_der(private),
        // jsonwebtoken wants PKCS#1 for RSA; its PEM reader unwraps PKCS#8.
        SigningAlgorithm::RS256 => {
            EncodingKey::from_rsa_pem(pkcs8_pem(private).as_bytes()).map_err(bad)?
        }
        SigningAlgorithm::HS256 => EncodingKey::from_secret(private),
    })
}

fn pkcs8_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// The public JWK of an asymmetric key: public members only, with kid, alg and `use: sig`.
fn public_jwk(alg: SigningAlgorithm, kid: &str, key: &EncodingKey) -> Result<Jwk, Error> {
    debug_assert!(
        alg.is_asymmetric(),
        "an HMAC key has no public part to publish"
    );
    let mut jwk = Jwk::from_encoding_key(key, jwt_algorithm(alg))
        .map_err(|e| Error::Internal(format!("deriving the public {alg} key failed: {e}")))?;
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(jwk)
}

/// A key ready for use: decoded once, when the ring loads.
pub struct LoadedKey {
    /// The key id tokens name in their `kid` header.
    pub kid: String,
    /// What the key signs with.
    pub algorithm: SigningAlgorithm,
    /// Its status when the ring last loaded.
    pub status: KeyStatus,
    /// When the key was made.
    pub created_at: Timestamp,
    /// When it stopped signing; it still verifies for the access-token lifetime (plus leeway)
    /// after.
    pub rotated_at: Option<Timestamp>,
    pub(crate) jwt_algorithm: Algorithm,
    pub(crate) encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
    /// `None` for HMAC keys.
    pub(crate) jwk: Option<Jwk>,
}

impl fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl LoadedKey {
    fn from_stored(stored: &StoredKey, master: &MasterKey) -> Result<Self, Error> {
        let private = master.open(&stored.kid, &stored.sealed_private)?;
        let encoding = encoding_key(stored.algorithm, &private)?;
        let (decoding, jwk) = if stored.algorithm.is_asymmetric() {
            let jwk = public_jwk(stored.algorithm, &stored.kid, &encoding)?;
            let decoding = DecodingKey::from_jwk(&jwk)
                .map_err(|e| Error::Internal(format!("public key of {}: {e}", stored.kid)))?;
            (decoding, Some(jwk))
        } else {
            (DecodingKey::from_secret(&private), None)
        };
        Ok(Self {
            kid: stored.kid.clone(),
            algorithm: stored.algorithm,
            status: stored.status,
            created_at: stored.created_at,
            rotated_at: stored.rotated_at,
            jwt_algorithm: jwt_algorithm(stored.algorithm),
            encoding,
            decoding,
            jwk,
        })
    }
}

/// What an operator sees of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The key id tokens name in their `kid` header.
    pub kid: String,
    /// What the key signs with.
    pub algorithm: SigningAlgorithm,
    /// Where the key is in its life, as stored.
    pub status: KeyStatus,
    /// Whether the key is in the JWKS (and verifies tokens) right now.
    pub published: bool,
    /// Whether new tokens are signed with it.
    pub signing: bool,
    /// When the key was made.
    pub created_at: Timestamp,
    /// When it stopped signing.
    pub rotated_at: Option<Timestamp>,
    /// When it stopped verifying.
    pub retired_at: Option<Timestamp>,
}

struct KeySet {
    /// The newest active key.
    signing: Arc<LoadedKey>,
    /// Every key that may verify: active ones, and rotated ones (their window is checked per use).
    by_kid: HashMap<String, Arc<LoadedKey>>,
}

/// The signing keys, kept in memory and in the store.
pub struct KeyRing {
    store: Arc<dyn KeyStore>,
    master: MasterKey,
    clock: Arc<dyn Clock>,
    algorithm: SigningAlgorithm,
    /// How long a rotated key keeps verifying: the access-token lifetime plus clock leeway.
    verify_after_rotation: Duration,
    keys: RwLock<Arc<KeySet>>,
    feed: Option<Arc<dyn crate::feed::ChangeFeed>>,
    /// Whether loading created a key, which [`with_feed`](Self::with_feed) then announces.
    created_at_load: bool,
    /// One reload at a time: a slow reload that read the store earlier must not install its
    /// older picture over a newer one.
    reloading: tokio::sync::Mutex<()>,
    /// When `reload_soon` last started a reload (unix ms): at most one a second.
    last_eager_reload: std::sync::atomic::AtomicI64,
}

impl KeyRing {
    /// Loads the keys from the store, creating a key of `algorithm` when there is no active one of
    /// that algorithm (first start, or the configured algorithm changed).
    pub async fn load(
        store: Arc<dyn KeyStore>,
        master: MasterKey,
        clock: Arc<dyn Clock>,
        algorithm: SigningAlgorithm,
        verify_after_rotation: Duration,
    ) -> Result<Self, Error> {
        let stored = store.keys().await?;
        let has_active = stored
            .iter()
            .any(|k| k.status == KeyStatus::Active && k.algorithm == algorithm);
        let set = Self::build(&stored, &master)?;
        let ring = Self {
            store,
            master,
            clock,
            algorithm,
            verify_after_rotation,
            feed: None,
            created_at_load: false,
            reloading: tokio::sync::Mutex::new(()),
            last_eager_reload: std::sync::atomic::AtomicI64::new(0),
            keys: RwLock::new(Arc::new(set.unwrap_or_else(|| KeySet {
                // Replaced just below by the first real key.
                signing: Arc::new(placeholder()),
                by_kid: HashMap::new(),
            }))),
        };
        if !has_active {
            ring.rotate().await?;
        }
        Ok(ring.created_at_load(!has_active))
    }

    fn created_at_load(mut self, created: bool) -> Self {
        self.created_at_load = created;
        self
    }

    fn build(stored: &[StoredKey], master: &MasterKey) -> Result<Option<KeySet>, Error> {
        let by_kid = Self::live_keys(stored, master)?;
        let signing = by_kid
            .values()
            .filter(|k| k.status == KeyStatus::Active)
            .max_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)))
            .cloned();
        Ok(signing.map(|signing| KeySet { signing, by_kid }))
    }

    /// Every stored key that may verify: the active and rotated ones, decoded.
    fn live_keys(
        stored: &[StoredKey],
        master: &MasterKey,
    ) -> Result<HashMap<String, Arc<LoadedKey>>, Error> {
        stored
            .iter()
            .filter(|k| k.status != KeyStatus::Retired)
            .map(|key| {
                Ok((
                    key.kid.clone(),
                    Arc::new(LoadedKey::from_stored(key, master)?),
                ))
            })
            .collect()
    }

    /// Publishes rotations and retirements on `feed`, so other nodes reload their keys at once.
    /// A key [`load`](Self::load) created (a first start, or a new algorithm) is announced now:
    /// nodes started at the same moment on an empty store each make one, and each must learn
    /// the others' before a token signed with them arrives.
    pub async fn with_feed(mut self, feed: Arc<dyn crate::feed::ChangeFeed>) -> Self {
        self.feed = Some(feed);
        if self.created_at_load {
            self.keys_changed().await;
        }
        self
    }

    async fn keys_changed(&self) {
        if let Some(feed) = &self.feed {
            crate::feed::publish_or_retry(feed, crate::feed::Change::KeysChanged, "key change")
                .await;
        }
    }

    /// Starts a reload in the background, at most once a second (tokens naming unknown keys may
    /// come in floods), when a token names a kid this node does not know.
    pub fn reload_soon(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        let now = self.clock.now().unix_millis();
        let last = self.last_eager_reload.load(Ordering::SeqCst);
        if now.saturating_sub(last) < 1000
            || self
                .last_eager_reload
                .compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let ring = Arc::clone(self);
        runtime.spawn(async move {
            if let Err(e) = ring.reload().await {
                tracing::debug!(error = %e, "reloading keys for an unknown kid failed");
            }
        });
    }

    /// Re-reads the keys from the store (after a change made here or by another process). Keys
    /// are decoded again only when the set of keys or their status changed.
    pub async fn reload(&self) -> Result<(), Error> {
        let _one_at_a_time = self.reloading.lock().await;
        let stored = self.store.keys().await?;
        let unchanged = {
            let current = self.current();
            let live: Vec<&StoredKey> = stored
                .iter()
                .filter(|k| k.status != KeyStatus::Retired)
                .collect();
            live.len() == current.by_kid.len()
                && live.iter().all(|k| {
                    current
                        .by_kid
                        .get(&k.kid)
                        .is_some_and(|l| l.status == k.status && l.rotated_at == k.rotated_at)
                })
        };
        if unchanged {
            return Ok(());
        }
        let set = match Self::build(&stored, &self.master)? {
            Some(set) => set,
            // No active key in the store (retired, or deleted by hand): this node cannot pick a
            // new signing key, but what verifies must still follow the store, so a retired key
            // stops verifying here as everywhere else. Tokens signed meanwhile with the old
            // signing key are refused unless it is still live in the store: fail closed.
            None => {
                tracing::error!("the store holds no active signing key: run `tessera keys rotate`");
                KeySet {
                    signing: self.signing_key(),
                    by_kid: Self::live_keys(&stored, &self.master)?,
                }
            }
        };
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(())
    }

    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The key new access tokens are signed with: the newest active one.
    pub fn signing_key(&self) -> Arc<LoadedKey> {
        Arc::clone(&self.current().signing)
    }

    /// The key that may verify a token with this `kid` right now: active, or rotated less than
    /// the access-token lifetime ago. Unknown, retired and expired keys give `None`.
    pub fn verification_key(&self, kid: &str) -> Option<Arc<LoadedKey>> {
        let key = self.current().by_kid.get(kid).cloned()?;
        self.in_window(&key).then_some(key)
    }

    fn in_window(&self, key: &LoadedKey) -> bool {
        match (key.status, key.rotated_at) {
            (KeyStatus::Active, _) => true,
            (KeyStatus::Rotated, Some(at)) => {
                self.clock.now() < at.saturating_add(self.verify_after_rotation)
            }
            _ => false,
        }
    }

    /// The public keys that verify tokens now. Empty when signing with HMAC.
    pub fn jwks(&self) -> JwkSet {
        let set = self.current();
        let mut keys: Vec<&Arc<LoadedKey>> =
            set.by_kid.values().filter(|k| self.in_window(k)).collect();
        // The signing key first, then the newest.
        keys.sort_by_key(|k| (k.kid != set.signing.kid, std::cmp::Reverse(k.created_at)));
        JwkSet {
            keys: keys.iter().filter_map(|k| k.jwk.clone()).collect(),
        }
    }

    /// The configured algorithm, which every new key uses; HS256 means there is no JWKS to
    /// publish.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// See [`MasterKey::hybrid_csrf_token`].
    pub fn hybrid_csrf_token(&self, family: &str) -> String {
        self.master.hybrid_csrf_token(family)
    }

    /// See [`MasterKey::verify_hybrid_csrf_token`].
    pub fn verify_hybrid_csrf_token(&self, family: &str, token: &str) -> bool {
        self.master.verify_hybrid_csrf_token(family, token)
    }

    /// See [`MasterKey::device_token`].
    pub fn device_token(&self, account: &str) -> Result<String, Error> {
        self.master.device_token(account)
    }

    /// See [`MasterKey::verify_device_token`].
    pub fn verify_device_token(&self, account: &str, token: &str) -> Option<String> {
        self.master.verify_device_token(account, token)
    }

    /// Every key the store holds, for operators.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, Error> {
        let set = self.current();
        Ok(self
            .store
            .keys()
            .await?
            .into_iter()
            .map(|k| KeyInfo {
                published: set.by_kid.get(&k.kid).is_some_and(|l| self.in_window(l))
                    && k.algorithm.is_asymmetric(),
                signing: set.signing.kid == k.kid,
                kid: k.kid,
                algorithm: k.algorithm,
                status: k.status,
                created_at: k.created_at,
                rotated_at: k.rotated_at,
                retired_at: k.retired_at,
            })
            .collect())
    }

    /// The kids of keys retired so recently that tokens they signed may still be unexpired
    /// (resource servers must refuse those whatever their copy of the JWKS says).
    pub async fn recently_retired(&self) -> Result<Vec<String>, Error> {
        let now = self.clock.now();
        Ok(self
            .store
            .keys()
            .await?
            .into_iter()
            .filter(|k| {
                k.status == KeyStatus::Retired
                    && k.retired_at
                        .is_none_or(|at| now < at.saturating_add(self.verify_after_rotation))
            })
            .map(|k| k.kid)
            .collect())
    }

    /// Creates a new key of the configured algorithm that signs from now on; the previous active
    /// keys keep verifying the tokens they signed until those expire.
    #[tracing::instrument(skip(self))]
    pub async fn rotate(&self) -> Result<KeyInfo, Error> {
        let now = self.clock.now();
        let kid = crate::secret::random_public_id("k_")?;
        // RSA key generation takes a while: off the async workers.
        let algorithm = self.algorithm;
        let private = tokio::task::spawn_blocking(move || generate_private(algorithm))
            .await
            .map_err(|e| Error::Internal(format!("key generation task failed: {e}")))??;
        let encoding = encoding_key(self.algorithm, &private)?;
        let public_jwk = if self.algorithm.is_asymmetric() {
            let jwk = public_jwk(self.algorithm, &kid, &encoding)?;
            Some(serde_json::to_string(&jwk).map_err(|e| Error::Internal(e.to_string()))?)
        } else {
            None
        };
        let stored = StoredKey {
            kid: kid.clone(),
            algorithm: self.algorithm,
            status: KeyStatus::Active,
            sealed_private: self.master.seal(&kid, &private)?,
            public_jwk,
            created_at: now,
            rotated_at: None,
            retired_at: None,
        };
        let previous: Vec<String> = self
            .store
            .keys()
            .await?
            .into_iter()
            .filter(|k| k.status == KeyStatus::Active)
            .map(|k| k.kid)
            .collect();
        self.store.insert_key(&stored).await?;
        // Between these two writes two keys are active; the newest signs, so that is harmless.
        for old in previous {
            self.store.mark_key_rotated(&old, now).await?;
        }
        self.reload().await?;
        self.keys_changed().await;
        tracing::info!(%kid, algorithm = %self.algorithm, "signing key rotated");
        Ok(KeyInfo {
            kid,
            algorithm: self.algorithm,
            status: KeyStatus::Active,
            published: self.algorithm.is_asymmetric(),
            signing: true,
            created_at: now,
            rotated_at: None,
            retired_at: None,
        })
    }

    /// Retires a key: every token it signed stops verifying at once. Retiring the signing key
    /// rotates first, so there is always a key to sign with. `false` when there is no such key or
    /// it is retired already.
    #[tracing::instrument(skip(self))]
    pub async fn retire(&self, kid: &str) -> Result<bool, Error> {
        // Decided on the store, not on this node's picture (another process may have rotated):
        // retiring the last active key would leave nothing to sign with.
        let active_others = self
            .store
            .keys()
            .await?
            .iter()
            .filter(|k| k.status == KeyStatus::Active && k.kid != kid)
            .count();
        if active_others == 0 {
            self.rotate().await?;
        }
        let retired = self.store.mark_key_retired(kid, self.clock.now()).await?;
        self.reload().await?;
        self.keys_changed().await;
        if retired {
            tracing::info!(%kid, "signing key retired");
        }
        Ok(retired)
    }
}

/// Stands in before the first key exists; never used to sign (load() rotates right away).
fn placeholder() -> LoadedKey {
    LoadedKey {
        kid: String::new(),
        algorithm: SigningAlgorithm::HS256,
        status: KeyStatus::Retired,
        created_at: Timestamp::from_unix_millis(0),
        rotated_at: None,
        jwt_algorithm: Algorithm::HS256,
        encoding: EncodingKey::from_secret(&[]),
        decoding: DecodingKey::from_secret(&[]),
        jwk: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_signs_and_verifies_through_its_public_jwk() {
        let master = MasterKey::generate().unwrap().0;
        for alg in [
            SigningAlgorithm::EdDSA,
            SigningAlgorithm::ES256,
            SigningAlgorithm::RS256,
            SigningAlgorithm::HS256,
        ] {
            let private = generate_private(alg).unwrap();
            let sealed = master.seal("kid1", &private).unwrap();
            let stored = StoredKey {
                kid: "kid1".into(),
                algorithm: alg,
                status: KeyStatus::Active,
                sealed_private: sealed,
                public_jwk: None,
                created_at: Timestamp::from_unix_millis(0),
                rotated_at: None,
                retired_at: None,
            };
            let key = LoadedKey::from_stored(&stored, &master).unwrap();
            let header = jsonwebtoken::Header::new(key.jwt_algorithm);
            let claims = serde_json::json!({"sub": "x", "exp": 4_000_000_000u64});
            let token = jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap();
            let mut validation = jsonwebtoken::Validation::new(key.jwt_algorithm);
            validation.validate_aud = false;
            jsonwebtoken::decode::<serde_json::Value>(&token, &key.decoding, &validation)
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            match (alg.is_asymmetric(), &key.jwk) {
                (true, Some(jwk)) => {
                    let json = serde_json::to_value(jwk).unwrap();
                    assert_eq!(json["kid"], "kid1");
                    assert_eq!(json["use"], "sig");
                    assert_eq!(json["alg"], alg.as_str());
                    for private_member in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                        assert!(
                            json.get(private_member).is_none(),
                            "{alg} publishes {private_member}"
                        );
                    }
                }
                (false, None) => {}
                other => panic!("{alg}: unexpected jwk {:?}", other.1),
            }
        }
    }
}
