//! The JWK set: parsing (RFC 7517), the keys in force, and how long a fetched set stays fresh.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// RSA moduli shorter than this (in bytes: 2048 bits) are not accepted as signing keys.
const MIN_RSA_MODULUS_BYTES: usize = 256;

const KEY_LIVE: u8 = 0;
const KEY_WITHDRAWN: u8 = 1;
const KEY_RETIRED: u8 = 2;

/// One public key from the JWKS that may verify access tokens.
pub(crate) struct VerifyingKey {
    pub(crate) kid: String,
    /// The only algorithm this key verifies: taken from the key, never from a token's header.
    pub(crate) algorithm: Algorithm,
    pub(crate) decoding: DecodingKey,
    /// The key's public parameters, so a refetch that returns the same key keeps this object
    /// (and the verified tokens that point to it) instead of replacing it.
    material: String,
    /// Live, withdrawn (gone from the JWKS) or retired (announced on the revocation stream). A
    /// cached token checks this on every use.
    state: AtomicU8,
}

/// Why a key may no longer verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyState {
    Live,
    Withdrawn,
    Retired,
}

impl VerifyingKey {
    pub(crate) fn state(&self) -> KeyState {
        match self.state.load(Ordering::Acquire) {
            KEY_LIVE => KeyState::Live,
            KEY_RETIRED => KeyState::Retired,
            _ => KeyState::Withdrawn,
        }
    }

    fn set_state(&self, state: u8) {
        // Retired is final: a withdrawal never turns a retired key back into a withdrawn one.
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s != KEY_RETIRED).then_some(state)
            });
    }
}

/// A JWK as RFC 7517/7518/8037 spell it; only what a verifying key needs.
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

#[derive(Deserialize)]
struct RawJwkSet {
    keys: Vec<serde_json::Value>,
}

/// The JWKS document could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("not a JWK set: {0}")]
pub(crate) struct JwksParseError(String);

/// Parses a JWK set, keeping the keys that can verify Tessera's access tokens (EdDSA over
/// Ed25519, ES256 over P-256, RS256 with at least 2048 bits). Keys for other uses or
/// algorithms, symmetric keys and malformed entries are skipped, not fatal: one odd key must
/// not take the others down. Returns the keys and how many were skipped.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<(Vec<VerifyingKey>, usize), JwksParseError> {
    let set: RawJwkSet = serde_json::from_slice(body).map_err(|e| JwksParseError(e.to_string()))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    let mut skipped = 0;
    let mut seen = HashSet::new();
    for value in set.keys {
        let parsed = serde_json::from_value::<RawJwk>(value)
            .ok()
            .and_then(verifying_key);
        match parsed {
            // Two keys with one kid: which one a token means is ambiguous, so keep the first
            // (servers list their signing key first).
            Some(key) if seen.insert(key.kid.clone()) => keys.push(key),
            _ => skipped += 1,
        }
    }
    Ok((keys, skipped))
}

fn verifying_key(jwk: RawJwk) -> Option<VerifyingKey> {
    let kid = jwk.kid.filter(|k| !k.is_empty())?;
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    if let Some(ops) = &jwk.key_ops
        && !ops.iter().any(|o| o == "verify")
    {
        return None;
    }
    let kty = jwk.kty?;
    // The algorithm a key type can mean here; an `alg` member must agree with it.
    let (algorithm, decoding, material) = match (kty.as_str(), jwk.crv.as_deref()) {
        ("OKP", Some("Ed25519")) => {
            let x = jwk.x?;
            let key = DecodingKey::from_ed_components(&x).ok()?;
            (Algorithm::EdDSA, key, format!("OKP:{x}"))
        }
        ("EC", Some("P-256")) => {
            let (x, y) = (jwk.x?, jwk.y?);
            let key = DecodingKey::from_ec_components(&x, &y).ok()?;
            (Algorithm::ES256, key, format!("EC:{x}:{y}"))
        }
        ("RSA", _) => {
            let (n, e) = (jwk.n?, jwk.e?);
            // base64url without padding: 4 characters per 3 bytes. A leading zero byte is not
            // allowed in JWK's `n`, so the length is the modulus size.
            if n.len() * 3 / 4 < MIN_RSA_MODULUS_BYTES {
                return None;
            }
            let key = DecodingKey::from_rsa_components(&n, &e).ok()?;
            (Algorithm::RS256, key, format!("RSA:{n}:{e}"))
        }
        _ => return None,
    };
    if let Some(alg) = jwk.alg.as_deref() {
        let named = match alg {
            "EdDSA" | "Ed25519" => Algorithm::EdDSA,
            "ES256" => Algorithm::ES256,
            "RS256" => Algorithm::RS256,
            _ => return None,
        };
        if named != algorithm {
            return None;
        }
    }
    Some(VerifyingKey {
        kid,
        algorithm,
        decoding,
        material,
        state: AtomicU8::new(KEY_LIVE),
    })
}

/// The keys in force: from the last JWKS fetched, less the ones the revocation stream retired.
#[derive(Default)]
pub(crate) struct KeySet {
    inner: RwLock<Keys>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<VerifyingKey>, foldhash::fast::RandomState>,
    /// Retired on the revocation stream: never taken from a JWKS again, even one fetched before
    /// the retirement (another server node may still be publishing it).
    retired: HashSet<String, foldhash::fast::RandomState>,
    /// A JWKS has been installed at least once.
    loaded: bool,
}

impl KeySet {
    /// The live key with this `kid`.
    pub(crate) fn get(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        let keys = self.inner.read().unwrap_or_else(|e| e.into_inner());
        keys.by_kid.get(kid).cloned()
    }

    pub(crate) fn loaded(&self) -> bool {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).loaded
    }

    pub(crate) fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_kid
            .len()
    }

    pub(crate) fn is_retired(&self, kid: &str) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .retired
            .contains(kid)
    }

    /// Installs a freshly fetched set. A key that is unchanged keeps its object; keys that left
    /// the set are withdrawn, so tokens they verified stop being accepted from the cache.
    pub(crate) fn install(&self, fetched: Vec<VerifyingKey>) {
        let mut keys = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::with_capacity_and_hasher(fetched.len(), Default::default());
        for key in fetched {
            if keys.retired.contains(&key.kid) {
                continue;
            }
            let key = match keys.by_kid.get(&key.kid) {
                Some(old) if old.material == key.material && old.algorithm == key.algorithm => {
                    Arc::clone(old)
                }
                _ => Arc::new(key),
            };
            next.insert(key.kid.clone(), key);
        }
        for (kid, old) in &keys.by_kid {
            if !next.get(kid).is_some_and(|new| Arc::ptr_eq(new, old)) {
                old.set_state(KEY_WITHDRAWN);
            }
        }
        keys.by_kid = next;
        keys.loaded = true;
    }

    /// A key retired on the revocation stream: dropped at once, and kept out of later fetches.
    pub(crate) fn retire(&self, kid: &str) {
        let mut keys = self.inner.write().unwrap_or_else(|e| e.into_inner());
        keys.retired.insert(kid.to_owned());
        if let Some(key) = keys.by_kid.remove(kid) {
            key.set_state(KEY_RETIRED);
        }
    }

    /// Replaces the retired list with a snapshot's: every key in it is dropped.
    pub(crate) fn set_retired(&self, kids: &[String]) {
        let mut keys = self.inner.write().unwrap_or_else(|e| e.into_inner());
        keys.retired = kids.iter().cloned().collect();
        for kid in kids {
            if let Some(key) = keys.by_kid.remove(kid) {
                key.set_state(KEY_RETIRED);
            }
        }
    }
}

/// How long a fetched JWKS stays fresh: the response's `Cache-Control: max-age`, clamped to
/// `[min, max]`; `default` when the header says nothing usable; `min` for `no-cache` and
/// `no-store`.
pub(crate) fn freshness(
    cache_control: Option<&str>,
    min: Duration,
    max: Duration,
    default: Duration,
) -> Duration {
    let Some(value) = cache_control else {
        return default.clamp(min, max);
    };
    let mut max_age = None;
    for directive in value.split(',') {
        let directive = directive.trim();
        let (name, arg) = match directive.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
            None => (directive, None),
        };
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return min;
        }
        if name.eq_ignore_ascii_case("max-age")
            && let Some(secs) = arg.and_then(|a| a.parse::<u64>().ok())
        {
            max_age = Some(Duration::from_secs(secs));
        }
    }
    max_age.unwrap_or(default).clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn ed_x() -> String {
        URL_SAFE_NO_PAD.encode([7u8; 32])
    }

    fn set(keys: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn keeps_usable_keys_and_skips_the_rest() {
        let n = URL_SAFE_NO_PAD.encode([0xC5u8; 256]);
        let short_n = URL_SAFE_NO_PAD.encode([0xC5u8; 128]);
        let body = set(serde_json::json!([
            {"kty": "OKP", "crv": "Ed25519", "x": ed_x(), "kid": "ed", "alg": "EdDSA", "use": "sig"},
            {"kty": "RSA", "n": n, "e": "AQAB", "kid": "rsa"},
            {"kty": "RSA", "n": short_n, "e": "AQAB", "kid": "short-rsa"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
            {"kty": "OKP", "crv": "Ed25519", "x": ed_x(), "kid": "enc", "use": "enc"},
            {"kty": "OKP", "crv": "Ed25519", "x": ed_x(), "kid": "ops", "key_ops": ["sign"]},
            {"kty": "OKP", "crv": "Ed25519", "x": ed_x(), "kid": "lying-alg", "alg": "RS256"},
            {"kty": "OKP", "crv": "Ed25519", "x": ed_x()},
            {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA", "kid": "p384"},
            {"kty": "OKP", "crv": "Ed25519", "x": ed_x(), "kid": "ed"},
            "not an object",
            {"kty": "ML-DSA", "kid": "future", "alg": "ML-DSA-44", "pub": "AA"},
        ]));
        let (keys, skipped) = parse_jwks(&body).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, ["ed", "rsa"]);
        assert_eq!(skipped, 10);
        assert_eq!(keys[0].algorithm, Algorithm::EdDSA);
        assert_eq!(keys[1].algorithm, Algorithm::RS256);
    }

    #[test]
    fn a_document_that_is_not_a_set_is_an_error() {
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(b"[]").is_err());
        assert!(parse_jwks(b"\xff").is_err());
        assert!(parse_jwks(br#"{"keys": []}"#).unwrap().0.is_empty());
    }

    fn ed(kid: &str, byte: u8) -> VerifyingKey {
        let body = set(serde_json::json!([
            {"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([byte; 32]), "kid": kid}
        ]));
        parse_jwks(&body).unwrap().0.remove(0)
    }

    #[test]
    fn a_refetch_keeps_unchanged_keys_and_withdraws_the_others() {
        let set = KeySet::default();
        assert!(!set.loaded());
        set.install(vec![ed("a", 1), ed("b", 2)]);
        let a = set.get("a").unwrap();
        let b = set.get("b").unwrap();
        set.install(vec![ed("a", 1), ed("b", 3), ed("c", 4)]);
        assert!(
            Arc::ptr_eq(&a, &set.get("a").unwrap()),
            "unchanged key kept"
        );
        assert_eq!(a.state(), KeyState::Live);
        assert_eq!(b.state(), KeyState::Withdrawn, "same kid, new material");
        set.install(vec![ed("c", 4)]);
        assert_eq!(a.state(), KeyState::Withdrawn);
        assert!(set.get("a").is_none());
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn a_retired_key_stays_out() {
        let set = KeySet::default();
        set.install(vec![ed("a", 1), ed("b", 2)]);
        let a = set.get("a").unwrap();
        set.retire("a");
        assert_eq!(a.state(), KeyState::Retired);
        assert!(set.get("a").is_none());
        // A JWKS fetched before the retirement reached every server node still lists it.
        set.install(vec![ed("a", 1), ed("b", 2)]);
        assert!(set.get("a").is_none());
        assert!(set.is_retired("a"));
        assert_eq!(a.state(), KeyState::Retired, "retired is final");
        set.set_retired(&["b".to_owned()]);
        assert!(set.get("b").is_none());
        assert!(!set.is_retired("a"));
    }

    #[test]
    fn freshness_honours_max_age_within_bounds() {
        let (min, max, default) = (
            Duration::from_secs(30),
            Duration::from_secs(3600),
            Duration::from_secs(300),
        );
        let f = |h: Option<&str>| freshness(h, min, max, default).as_secs();
        assert_eq!(f(None), 300);
        assert_eq!(f(Some("public, max-age=60")), 60);
        assert_eq!(f(Some("Max-Age=\"120\"")), 120);
        assert_eq!(f(Some("max-age=1")), 30);
        assert_eq!(f(Some("max-age=999999")), 3600);
        assert_eq!(f(Some("max-age=soon")), 300);
        assert_eq!(f(Some("public")), 300);
        assert_eq!(f(Some("no-cache, max-age=600")), 30);
        assert_eq!(f(Some("no-store")), 30);
    }
}
