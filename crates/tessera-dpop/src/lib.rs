//! DPoP (RFC 9449): proof-of-possession for access and refresh tokens.
//!
//! A client holds a key pair of its own. With every request it sends a *proof*: a small JWT in
//! the `DPoP` header, signed with its private key, that names the request (`htm` method, `htu`
//! URL), when it was made (`iat`), a unique id (`jti`) and, with an access token, that token's
//! hash (`ath`). The server binds the tokens it issues to the key's thumbprint (`cnf.jkt`), so a
//! copied token is useless without the private key, and a copied proof is useless for any other
//! request or a second time.
//!
//! This crate checks proofs ([`check_proof`]) for the Tessera server and for resource servers
//! using `tessera-verify`, and makes them ([`ProofKey`]) for Rust clients and tests. What it
//! cannot do alone is remember which proofs it has seen: the caller keeps the `jti`s of recent
//! proofs ([`VerifiedProof::replay_key`]) for [`Expected::max_age`] and refuses a repeat.
//!
//! ```
//! use tessera_dpop::{Expected, ProofKey, check_proof};
//!
//! let key = ProofKey::generate_es256()?;
//! let proof = key.proof("GET", "https://api.example.com/notes?page=2", Some("the-access-token"), None)?;
//!
//! let expected = Expected {
//!     method: "GET",
//!     url: "https://API.example.com:443/notes",
//!     access_token: Some("the-access-token"),
//!     now: tessera_dpop::unix_now(),
//!     max_age: 60,
//!     leeway: 5,
//! };
//! let verified = check_proof(&proof, &expected)?;
//! assert_eq!(verified.thumbprint, key.thumbprint());
//!
//! // The same proof for another request, or with another token, is refused.
//! let other = Expected { method: "POST", ..expected };
//! assert!(check_proof(&proof, &other).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The `typ` header of every proof.
pub const PROOF_TYP: &str = "dpop+jwt";

/// The proof algorithms accepted, as `dpop_signing_alg_values_supported` lists them.
pub const SIGNING_ALGORITHMS: [&str; 2] = ["ES256", "EdDSA"];

/// The HTTP scheme of a bound access token: `Authorization: DPoP <token>`.
pub const AUTH_SCHEME: &str = "DPoP";

/// The request header that carries the proof.
pub const PROOF_HEADER: &str = "DPoP";

/// The response header that carries a server nonce.
pub const NONCE_HEADER: &str = "DPoP-Nonce";

/// Proofs longer than this are refused before any parsing: a proof is a few hundred bytes.
const MAX_PROOF_LEN: usize = 4096;

/// `jti`s longer than this are refused: it only has to be unique.
const MAX_JTI_LEN: usize = 256;

/// JWK members that only a private key has; a proof carrying one is refused (its key leaked).
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

/// What the request a proof came with was: what the proof must name.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    /// The request's method, e.g. `POST`.
    pub method: &'a str,
    /// The request's absolute URL as the client addressed it (scheme, host, path); its query and
    /// fragment are ignored, as they are in the proof's `htu`.
    pub url: &'a str,
    /// The access token the request carries, whose hash (`ath`) the proof must name; `None` at
    /// the token endpoint.
    pub access_token: Option<&'a str>,
    /// Now, in seconds since the epoch.
    pub now: i64,
    /// How old a proof may be, in seconds (its `iat` at most this far back); also how long its
    /// `jti` must be remembered.
    pub max_age: u64,
    /// How far ahead of `now` a proof's `iat` may be (the client's clock runs fast), in seconds.
    pub leeway: u64,
}

/// A proof that passed every check but the replay check, which is the caller's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedProof {
    /// The JWK SHA-256 thumbprint (RFC 7638) of the proof's key: what a bound token's `cnf.jkt`
    /// names.
    pub thumbprint: String,
    /// The proof's unique id.
    pub jti: String,
    /// When the client made it, in seconds since the epoch.
    pub iat: i64,
    /// The server nonce it carries, if any; the caller checks it when it asks for nonces.
    pub nonce: Option<String>,
}

impl VerifiedProof {
    /// What identifies this proof among all proofs: SHA-256 over the key's thumbprint and the
    /// `jti` (two clients choosing the same `jti` do not collide). A caller that has seen this
    /// key within `max_age + leeway` refuses the proof as a replay.
    pub fn replay_key(&self) -> [u8; 32] {
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        context.update(self.thumbprint.as_bytes());
        context.update(b"\0");
        context.update(self.jti.as_bytes());
        let digest = context.finish();
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        key
    }
}

/// Why a proof was refused. The messages say what was wrong, never echoing the proof.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// Not a JWS compact serialization with a readable header and claims.
    #[error("the DPoP proof is not a well-formed JWT")]
    Malformed,
    /// `typ` is not `dpop+jwt`.
    #[error("the DPoP proof's typ must be dpop+jwt")]
    WrongType,
    /// `alg` is not one of [`SIGNING_ALGORITHMS`].
    #[error("the DPoP proof's alg must be ES256 or EdDSA")]
    UnsupportedAlgorithm,
    /// The `jwk` header is missing, holds a private key, or is not a P-256 (ES256) or Ed25519
    /// (EdDSA) public key.
    #[error(
        "the DPoP proof's jwk must be the public key (EC P-256 for ES256, OKP Ed25519 for EdDSA)"
    )]
    InvalidKey,
    /// The signature does not verify with the proof's own key.
    #[error("the DPoP proof's signature does not verify")]
    BadSignature,
    /// A required claim (`jti`, `htm`, `htu`, `iat`) is missing or of the wrong type.
    #[error("the DPoP proof lacks a valid {0} claim")]
    MissingClaim(&'static str),
    /// `htm` is not the request's method.
    #[error("the DPoP proof is for another HTTP method")]
    WrongMethod,
    /// `htu` is not the request's URL.
    #[error("the DPoP proof is for another URL")]
    WrongUrl,
    /// `iat` is older than `max_age` or further ahead than `leeway`.
    #[error("the DPoP proof is too old or from the future: make a new proof for every request")]
    Stale,
    /// The request carries an access token but the proof's `ath` is missing or is the hash of
    /// another token.
    #[error("the DPoP proof's ath is not the hash of the access token sent with it")]
    WrongTokenHash,
}

/// Checks a proof against the request it came with: header (`typ`, `alg`, a public `jwk`),
/// signature with that key, `htm`, `htu`, `iat`, and `ath` when a token is expected. The replay
/// check (`jti` seen before) and the nonce check are the caller's.
pub fn check_proof(proof: &str, expected: &Expected<'_>) -> Result<VerifiedProof, ProofError> {
    if proof.len() > MAX_PROOF_LEN || proof.split('.').count() != 3 {
        return Err(ProofError::Malformed);
    }
    let (encoded_header, _) = proof.split_once('.').ok_or(ProofError::Malformed)?;
    let header: serde_json::Value = URL_SAFE_NO_PAD
        .decode(encoded_header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(ProofError::Malformed)?;
    let header = header.as_object().ok_or(ProofError::Malformed)?;
    if header.get("typ").and_then(|t| t.as_str()) != Some(PROOF_TYP) {
        return Err(ProofError::WrongType);
    }
    let algorithm = match header.get("alg").and_then(|a| a.as_str()) {
        Some("ES256") => Algorithm::ES256,
        Some("EdDSA") => Algorithm::EdDSA,
        _ => return Err(ProofError::UnsupportedAlgorithm),
    };
    // Members that would point somewhere else for the key, or that we would have to understand.
    for refused in ["jku", "x5u", "x5c", "kid", "crit"] {
        if header.contains_key(refused) {
            return Err(ProofError::InvalidKey);
        }
    }
    let jwk_value = header.get("jwk").ok_or(ProofError::InvalidKey)?;
    let jwk_object = jwk_value.as_object().ok_or(ProofError::InvalidKey)?;
    if PRIVATE_MEMBERS.iter().any(|m| jwk_object.contains_key(*m)) {
        return Err(ProofError::InvalidKey);
    }
    let jwk: Jwk = serde_json::from_value(jwk_value.clone()).map_err(|_| ProofError::InvalidKey)?;
    let curve_matches = match (&jwk.algorithm, algorithm) {
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => {
            okp.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    if !curve_matches {
        return Err(ProofError::InvalidKey);
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| ProofError::InvalidKey)?;
    let mut validation = Validation::new(algorithm);
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<ProofClaims>(proof, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature
            | jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey
            | jsonwebtoken::errors::ErrorKind::InvalidKeyFormat => ProofError::BadSignature,
            jsonwebtoken::errors::ErrorKind::Json(_) => {
                ProofError::MissingClaim("jti, htm, htu, iat")
            }
            _ => ProofError::Malformed,
        })?
        .claims;
    let jti = claims.jti.ok_or(ProofError::MissingClaim("jti"))?;
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(ProofError::MissingClaim("jti"));
    }
    let htm = claims.htm.ok_or(ProofError::MissingClaim("htm"))?;
    let htu = claims.htu.ok_or(ProofError::MissingClaim("htu"))?;
    let iat = claims
        .iat
        .filter(|t| t.is_finite())
        .ok_or(ProofError::MissingClaim("iat"))?;
    if htm != expected.method {
        return Err(ProofError::WrongMethod);
    }
    match (normalize_htu(&htu), normalize_htu(expected.url)) {
        (Some(proof_url), Some(request_url)) if proof_url == request_url => {}
        _ => return Err(ProofError::WrongUrl),
    }
    // Whole seconds, rounding down; a proof's iat is compared with windows of seconds.
    let iat = iat.floor() as i64;
    let oldest = expected
        .now
        .saturating_sub(i64::try_from(expected.max_age).unwrap_or(i64::MAX));
    let newest = expected
        .now
        .saturating_add(i64::try_from(expected.leeway).unwrap_or(i64::MAX));
    if iat < oldest || iat > newest {
        return Err(ProofError::Stale);
    }
    if let Some(token) = expected.access_token {
        let expected_ath = access_token_hash(token);
        let matches = claims.ath.as_deref().is_some_and(|ath| {
            aws_lc_rs::constant_time::verify_slices_are_equal(
                ath.as_bytes(),
                expected_ath.as_bytes(),
            )
            .is_ok()
        });
        if !matches {
            return Err(ProofError::WrongTokenHash);
        }
    }
    let thumbprint = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| ProofError::InvalidKey)?;
    Ok(VerifiedProof {
        thumbprint,
        jti,
        iat,
        nonce: claims.nonce,
    })
}

/// `ath`: the base64url SHA-256 of an access token, as a proof names the token it goes with.
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        access_token.as_bytes(),
    ))
}

/// A URL as `htu` comparison sees it (RFC 9449 §4.3, RFC 3986 §6.2.2–6.2.3): scheme and host
/// in lower case, no default port, no query or fragment, an empty path as `/`. `None` for
/// something that is not an absolute http(s) URL.
pub fn normalize_htu(url: &str) -> Option<String> {
    let mut parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return None;
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return None;
    }
    parsed.set_query(None);
    parsed.set_fragment(None);
    Some(parsed.into())
}

/// Now, in seconds since the epoch, by the system clock.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Proofs seen lately, in this process: what a single server (or one replica of a resource
/// service) needs to refuse a replayed proof. Exact, never evicting a live entry: past its
/// capacity it refuses new proofs ([`ReplayCacheFull`]) rather than forget one.
pub struct ReplayCache {
    seen: std::sync::Mutex<std::collections::HashMap<[u8; 32], i64>>,
    capacity: usize,
}

/// The replay cache holds as many live proofs as it may: refuse the request (fail closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many recent DPoP proofs to remember another")]
pub struct ReplayCacheFull;

impl Default for ReplayCache {
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl ReplayCache {
    /// The default capacity: about a million proofs (some 50 MB at most).
    pub const DEFAULT_CAPACITY: usize = 1 << 20;

    /// A cache of at most `capacity` live proofs.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            seen: std::sync::Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    /// Records `key` (a [`VerifiedProof::replay_key`]) until `expires_at_ms`: `Ok(true)` the
    /// first time (or once its record expired by `now_ms`), `Ok(false)` for a replay.
    pub fn first_use(
        &self,
        key: &[u8; 32],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, ReplayCacheFull> {
        // A panic elsewhere while holding the lock leaves the map whole (each change is one
        // insert), so its contents are still right.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = seen.get_mut(key) {
            if *until > now_ms {
                return Ok(false);
            }
            *until = expires_at_ms;
            return Ok(true);
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, until| *until > now_ms);
            if seen.len() >= self.capacity {
                return Err(ReplayCacheFull);
            }
        }
        seen.insert(*key, expires_at_ms);
        Ok(true)
    }

    /// Forgets the records that expired by `now_ms`; returns how many.
    pub fn purge(&self, now_ms: i64) -> usize {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let before = seen.len();
        seen.retain(|_, until| *until > now_ms);
        before - seen.len()
    }
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<f64>,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

#[derive(Serialize)]
struct NewProofClaims<'a> {
    jti: String,
    htm: &'a str,
    htu: String,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ath: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

/// Why a proof could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The system's random generator failed.
    #[error("no randomness for a new key or jti")]
    Random,
    /// The URL is not an absolute http(s) URL.
    #[error("the URL of a DPoP proof must be an absolute http(s) URL")]
    Url,
    /// The key or the signature failed.
    #[error("signing the DPoP proof failed: {0}")]
    Sign(String),
}

/// A client's DPoP key pair: makes proofs for its requests.
///
/// The private key never leaves this value (its `Debug` prints the thumbprint only).
pub struct ProofKey {
    encoding: EncodingKey,
    algorithm: Algorithm,
    jwk: Jwk,
    thumbprint: String,
}

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofKey")
            .field("algorithm", &self.algorithm)
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

impl ProofKey {
    /// A new ECDSA P-256 key (proofs signed ES256).
    pub fn generate_es256() -> Result<Self, SignError> {
        let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        )
        .map_err(|_| SignError::Random)?;
        let der = pair
            .to_pkcs8v1()
            .map_err(|e| SignError::Sign(e.to_string()))?;
        Self::from_encoding(EncodingKey::from_ec_der(der.as_ref()), Algorithm::ES256)
    }

    /// A new Ed25519 key (proofs signed EdDSA).
    pub fn generate_ed25519() -> Result<Self, SignError> {
        let pair =
            aws_lc_rs::signature::Ed25519KeyPair::generate().map_err(|_| SignError::Random)?;
        let der = pair
            .to_pkcs8v1()
            .map_err(|e| SignError::Sign(e.to_string()))?;
        Self::from_encoding(EncodingKey::from_ed_der(der.as_ref()), Algorithm::EdDSA)
    }

    fn from_encoding(encoding: EncodingKey, algorithm: Algorithm) -> Result<Self, SignError> {
        let jwk = Jwk::from_encoding_key(&encoding, algorithm)
            .map_err(|e| SignError::Sign(e.to_string()))?;
        let thumbprint = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| SignError::Sign(e.to_string()))?;
        Ok(Self {
            encoding,
            algorithm,
            jwk,
            thumbprint,
        })
    }

    /// The key's JWK SHA-256 thumbprint: what tokens bound to it carry as `cnf.jkt`.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The public key as a JWK.
    pub fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// A proof for one request: `method` and `url` (its query and fragment are left out), the
    /// access token sent with it (`ath`), and the server's latest `DPoP-Nonce`, if it asked for
    /// one. Issued now, with a fresh random `jti`.
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<String, SignError> {
        self.proof_at(method, url, access_token, nonce, unix_now())
    }

    /// [`ProofKey::proof`] with a chosen `iat` (seconds since the epoch).
    pub fn proof_at(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
        iat: i64,
    ) -> Result<String, SignError> {
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|_| SignError::Random)?;
        let claims = NewProofClaims {
            jti: URL_SAFE_NO_PAD.encode(jti),
            htm: method,
            htu: normalize_htu(url).ok_or(SignError::Url)?,
            iat,
            ath: access_token.map(access_token_hash),
            nonce,
        };
        let mut header = Header::new(self.algorithm);
        header.typ = Some(PROOF_TYP.into());
        header.jwk = Some(self.jwk.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| SignError::Sign(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://auth.example.com/v1/token";

    fn expected(now: i64) -> Expected<'static> {
        Expected {
            method: "POST",
            url: URL,
            access_token: None,
            now,
            max_age: 60,
            leeway: 5,
        }
    }

    fn encode_part(value: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    /// A proof whose header was changed after signing (the signature no longer covers it, so
    /// every such test also shows the header is checked before the signature).
    fn with_header(proof: &str, change: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut parts = proof.split('.');
        let header = parts.next().unwrap();
        let mut value: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        change(&mut value);
        format!(
            "{}.{}.{}",
            encode_part(&value),
            parts.next().unwrap(),
            parts.next().unwrap()
        )
    }

    #[test]
    fn proofs_from_both_key_types_verify_and_name_their_key() {
        for key in [
            ProofKey::generate_es256().unwrap(),
            ProofKey::generate_ed25519().unwrap(),
        ] {
            let now = unix_now();
            let proof = key.proof_at("POST", URL, None, Some("n-1"), now).unwrap();
            let verified = check_proof(&proof, &expected(now)).unwrap();
            assert_eq!(verified.thumbprint, key.thumbprint());
            assert_eq!(verified.nonce.as_deref(), Some("n-1"));
            assert_eq!(verified.iat, now);
            let again = key.proof_at("POST", URL, None, None, now).unwrap();
            let second = check_proof(&again, &expected(now)).unwrap();
            assert_ne!(verified.jti, second.jti, "every proof has its own jti");
            assert_ne!(verified.replay_key(), second.replay_key());
        }
    }

    #[test]
    fn thumbprints_follow_rfc_7638() {
        // RFC 7638 §3.1's example key is RSA; RFC 8037 §A.3 gives an Ed25519 key's thumbprint.
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        }))
        .unwrap();
        assert_eq!(
            jwk.thumbprint(ThumbprintHash::SHA256).unwrap(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn a_proof_for_another_request_is_refused() {
        let key = ProofKey::generate_es256().unwrap();
        let now = unix_now();
        let proof = key.proof_at("POST", URL, None, None, now).unwrap();
        let check = |expected: Expected<'_>| check_proof(&proof, &expected);
        assert_eq!(
            check(Expected {
                method: "GET",
                ..expected(now)
            }),
            Err(ProofError::WrongMethod)
        );
        assert_eq!(
            check(Expected {
                url: "https://auth.example.com/v1/token/refresh",
                ..expected(now)
            }),
            Err(ProofError::WrongUrl)
        );
        assert_eq!(
            check(Expected {
                url: "http://auth.example.com/v1/token",
                ..expected(now)
            }),
            Err(ProofError::WrongUrl)
        );
        assert_eq!(
            check(Expected {
                url: "https://other.example.com/v1/token",
                ..expected(now)
            }),
            Err(ProofError::WrongUrl)
        );
        // Query, fragment, host case and the default port do not matter.
        assert!(
            check(Expected {
                url: "https://AUTH.example.com:443/v1/token?x=1#y",
                ..expected(now)
            })
            .is_ok()
        );
    }

    #[test]
    fn old_and_future_proofs_are_refused() {
        let key = ProofKey::generate_ed25519().unwrap();
        let now = unix_now();
        let at = |iat| {
            check_proof(
                &key.proof_at("POST", URL, None, None, iat).unwrap(),
                &expected(now),
            )
        };
        assert!(at(now - 60).is_ok());
        assert_eq!(at(now - 61), Err(ProofError::Stale));
        assert!(at(now + 5).is_ok());
        assert_eq!(at(now + 6), Err(ProofError::Stale));
    }

    #[test]
    fn the_access_token_hash_must_name_the_token_sent() {
        let key = ProofKey::generate_es256().unwrap();
        let now = unix_now();
        let with_token = |token| Expected {
            access_token: Some(token),
            ..expected(now)
        };
        let proof = key
            .proof_at("POST", URL, Some("token-a"), None, now)
            .unwrap();
        assert!(check_proof(&proof, &with_token("token-a")).is_ok());
        assert_eq!(
            check_proof(&proof, &with_token("token-b")),
            Err(ProofError::WrongTokenHash)
        );
        let without = key.proof_at("POST", URL, None, None, now).unwrap();
        assert_eq!(
            check_proof(&without, &with_token("token-a")),
            Err(ProofError::WrongTokenHash)
        );
    }

    #[test]
    fn headers_that_are_not_a_public_key_proof_are_refused() {
        let key = ProofKey::generate_es256().unwrap();
        let now = unix_now();
        let proof = key.proof_at("POST", URL, None, None, now).unwrap();
        let refused = |change: &dyn Fn(&mut serde_json::Value)| {
            check_proof(&with_header(&proof, change), &expected(now)).unwrap_err()
        };
        assert_eq!(refused(&|h| h["typ"] = "JWT".into()), ProofError::WrongType);
        assert_eq!(
            refused(&|h| h["alg"] = "none".into()),
            ProofError::UnsupportedAlgorithm
        );
        assert_eq!(
            refused(&|h| h["alg"] = "HS256".into()),
            ProofError::UnsupportedAlgorithm
        );
        assert_eq!(
            refused(&|h| h["alg"] = "EdDSA".into()),
            ProofError::InvalidKey
        );
        assert_eq!(
            refused(&|h| h["jwk"]["d"] = "AAAA".into()),
            ProofError::InvalidKey
        );
        assert_eq!(
            refused(&|h| h["jwk"]["crv"] = "P-384".into()),
            ProofError::InvalidKey
        );
        assert_eq!(
            refused(&|h| {
                h.as_object_mut().unwrap().remove("jwk");
            }),
            ProofError::InvalidKey
        );
        assert_eq!(
            refused(&|h| h["jku"] = "https://evil.example/".into()),
            ProofError::InvalidKey
        );
        // Another key's public part: the signature does not verify with it.
        let other = ProofKey::generate_es256().unwrap();
        let other_jwk = serde_json::to_value(other.public_jwk()).unwrap();
        assert_eq!(
            refused(&|h| h["jwk"] = other_jwk.clone()),
            ProofError::BadSignature
        );
    }

    #[test]
    fn malformed_proofs_are_refused_without_panicking() {
        let now = unix_now();
        for proof in ["", "a.b", "a.b.c", "...", "e30.e30.", &"a".repeat(5000)] {
            assert!(check_proof(proof, &expected(now)).is_err(), "{proof:.20}");
        }
        // A proof without htu.
        let key = ProofKey::generate_ed25519().unwrap();
        let header = serde_json::json!({"typ": PROOF_TYP, "alg": "EdDSA", "jwk": key.public_jwk()});
        let mut h = Header::new(Algorithm::EdDSA);
        h.typ = Some(PROOF_TYP.into());
        h.jwk = Some(key.public_jwk().clone());
        let token = jsonwebtoken::encode(
            &h,
            &serde_json::json!({"jti": "x", "htm": "POST", "iat": now}),
            &key.encoding,
        )
        .unwrap();
        assert!(header.is_object());
        assert_eq!(
            check_proof(&token, &expected(now)),
            Err(ProofError::MissingClaim("htu"))
        );
    }

    #[test]
    fn the_replay_cache_refuses_repeats_and_fails_closed_when_full() {
        let cache = ReplayCache::with_capacity(2);
        assert_eq!(cache.first_use(&[1; 32], 100, 0), Ok(true));
        assert_eq!(cache.first_use(&[1; 32], 100, 50), Ok(false));
        assert_eq!(cache.first_use(&[2; 32], 100, 50), Ok(true));
        assert_eq!(cache.first_use(&[3; 32], 100, 50), Err(ReplayCacheFull));
        // Expired entries make room, and an expired key may be used again.
        assert_eq!(cache.first_use(&[3; 32], 200, 100), Ok(true));
        assert_eq!(cache.first_use(&[1; 32], 200, 100), Ok(true));
        assert_eq!(cache.purge(200), 2);
    }

    #[test]
    fn urls_normalize_as_htu_compares_them() {
        assert_eq!(
            normalize_htu("HTTPS://Example.COM:443/a/b?q#f").as_deref(),
            Some("https://example.com/a/b")
        );
        assert_eq!(
            normalize_htu("http://example.com").as_deref(),
            Some("http://example.com/")
        );
        assert_eq!(
            normalize_htu("http://example.com:8080/x").as_deref(),
            Some("http://example.com:8080/x")
        );
        assert_eq!(normalize_htu("/relative"), None);
        assert_eq!(normalize_htu("ftp://example.com/"), None);
        assert_eq!(normalize_htu("https://user:pw@example.com/"), None);
    }
}
