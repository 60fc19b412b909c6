//! The master key: seals signing keys at rest, and keys the hybrid model's CSRF tokens.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::error::Error;

/// The key that seals signing keys at rest (AES-256-GCM), and from which the hybrid model's CSRF
/// key is derived (HKDF-SHA256), so every node that shares the master key agrees on both. Never
/// printed. Losing it makes the sealed signing keys unreadable; [`crate::Services::build`] then
/// fails rather than start with new ones.
///
/// ```
/// use tessera_core::token::MasterKey;
///
/// // 32 zero bytes, as 43 characters of unpadded base64url (padding is accepted too).
/// let key = MasterKey::parse_base64(&"A".repeat(43))?;
/// assert_eq!(format!("{key:?}"), "MasterKey(<redacted>)");
///
/// // Two nodes with the same master key agree on the hybrid model's CSRF tokens.
/// let same = MasterKey::parse_base64(&format!("{}=", "A".repeat(43)))?;
/// let csrf = key.hybrid_csrf_token("fam_example");
/// assert!(same.verify_hybrid_csrf_token("fam_example", &csrf));
/// assert!(!same.verify_hybrid_csrf_token("fam_other", &csrf));
///
/// // The error never repeats what it was given.
/// let error = MasterKey::parse_base64("c2hvcnQ").unwrap_err();
/// assert!(!error.contains("c2hvcnQ"));
/// # Ok::<(), String>(())
/// ```
#[derive(Clone)]
pub struct MasterKey(LessSafeKeyHolder);

#[derive(Clone)]
struct LessSafeKeyHolder(
    Arc<LessSafeKey>,
    Arc<aws_lc_rs::hmac::Key>,
    Arc<aws_lc_rs::hmac::Key>,
    Arc<aws_lc_rs::hmac::Key>,
);

/// How many random bytes name a device.
const DEVICE_ID_LEN: usize = 16;

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// The key length in bytes (256 bits).
    pub const LEN: usize = 32;

    /// The master key with these bytes, and the keys derived from them (HKDF, one label each):
    /// the hybrid CSRF key and the device-cookie key.
    pub fn from_bytes(bytes: &[u8; Self::LEN]) -> Result<Self, Error> {
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| Error::Internal("the master key was refused by AES-256-GCM".into()))?;
        let derive = |label: &'static [u8]| -> Result<aws_lc_rs::hmac::Key, Error> {
            Ok(
                aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, &[])
                    .extract(bytes)
                    .expand(&[label], aws_lc_rs::hmac::HMAC_SHA256)
                    .map_err(|_| {
                        Error::Internal("deriving a key from the master key failed".into())
                    })?
                    .into(),
            )
        };
        Ok(Self(LessSafeKeyHolder(
            Arc::new(LessSafeKey::new(key)),
            Arc::new(derive(b"tessera hybrid csrf v1")?),
            Arc::new(derive(b"tessera device cookie v1")?),
            Arc::new(derive(b"tessera dpop nonce v1")?),
        )))
    }

    /// A new random master key, and its bytes (to write to the key file).
    pub fn generate() -> Result<(Self, [u8; Self::LEN]), Error> {
        let bytes: [u8; Self::LEN] = crate::secret::random_bytes()?;
        Ok((Self::from_bytes(&bytes)?, bytes))
    }

    /// Parses 32 bytes written as base64 (standard or URL-safe, padded or not). The message never
    /// echoes the input.
    pub fn parse_base64(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .or_else(|_| STANDARD.decode(text))
            .map_err(|_| "the master key is not valid base64".to_owned())?;
        let bytes: [u8; Self::LEN] = bytes
            .try_into()
            .map_err(|_| "the master key must be 32 bytes (44 characters of base64)".to_owned())?;
        Self::from_bytes(&bytes).map_err(|e| e.to_string())
    }

    /// nonce ‖ ciphertext ‖ tag, with the kid as associated data (a sealed key cannot be moved to
    /// another kid).
    pub(crate) fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let nonce_bytes: [u8; NONCE_LEN] = crate::secret::random_bytes()?;
        let mut in_out = plaintext.to_vec();
        self.0
            .0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(kid.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| Error::Internal("sealing a signing key failed".into()))?;
        let mut sealed = nonce_bytes.to_vec();
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    /// The hybrid model's CSRF token for a login: HMAC-SHA256 over its family id. A token of
    /// another login, or a cookie planted from elsewhere, does not match.
    pub fn hybrid_csrf_token(&self, family: &str) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.0.1, family.as_bytes());
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Checks a hybrid CSRF token in constant time.
    pub fn verify_hybrid_csrf_token(&self, family: &str, token: &str) -> bool {
        match URL_SAFE_NO_PAD.decode(token.as_bytes()) {
            Ok(tag) => aws_lc_rs::hmac::verify(&self.0.1, family.as_bytes(), &tag).is_ok(),
            Err(_) => false,
        }
    }

    /// A device token for `account` (a normalized username): proof that this client logged in
    /// to that account before, so that it keeps a login budget of its own (a device cookie, as
    /// OWASP describes). `DEVICE.TAG`: a random device id and an HMAC binding it to the account;
    /// the account itself is not in the token.
    pub fn device_token(&self, account: &str) -> Result<String, Error> {
        let device: [u8; DEVICE_ID_LEN] = crate::secret::random_bytes()?;
        let device = URL_SAFE_NO_PAD.encode(device);
        let tag = aws_lc_rs::hmac::sign(&self.0.2, &device_message(account, &device));
        Ok(format!("{device}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())))
    }

    /// The device id of a device token issued for `account`, checked in constant time; `None`
    /// for a token of another account, a forged or malformed one.
    pub fn verify_device_token(&self, account: &str, token: &str) -> Option<String> {
        let (device, tag) = token.split_once('.')?;
        let id = URL_SAFE_NO_PAD.decode(device).ok()?;
        if id.len() != DEVICE_ID_LEN {
            return None;
        }
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        aws_lc_rs::hmac::verify(&self.0.2, &device_message(account, device), &tag)
            .is_ok()
            .then(|| device.to_owned())
    }

    /// The DPoP server nonce of a period: the period and an HMAC over it, so every node that
    /// shares the master key makes and accepts the same nonces without shared state.
    pub(crate) fn dpop_nonce(&self, period: u64) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.0.3, &period.to_be_bytes());
        crate::token::dpop::encode_nonce(period, tag.as_ref())
    }

    /// The period a nonce made by [`MasterKey::dpop_nonce`] names; `None` for anything else.
    pub(crate) fn dpop_nonce_period(&self, nonce: &str) -> Option<u64> {
        let (period, tag) = crate::token::dpop::decode_nonce(nonce)?;
        let expected = aws_lc_rs::hmac::sign(&self.0.3, &period.to_be_bytes());
        let expected = &expected.as_ref()[..crate::token::dpop::NONCE_TAG_LEN];
        aws_lc_rs::constant_time::verify_slices_are_equal(expected, &tag)
            .is_ok()
            .then_some(period)
    }

    pub(crate) fn open(&self, kid: &str, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        let fail = || {
            Error::Internal(format!(
                "cannot unseal signing key {kid}: the master key is not the one it was sealed with, or the stored key is damaged"
            ))
        };
        if sealed.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .0
            .0
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut in_out)
            .map_err(|_| fail())?;
        Ok(plain.to_vec())
    }
}

/// What a device token's tag covers: the account and the device id, unambiguously joined (a
/// username has no NUL).
fn device_message(account: &str, device: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(account.len() + 1 + device.len());
    message.extend_from_slice(account.as_bytes());
    message.push(0);
    message.extend_from_slice(device.as_bytes());
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_the_same_master_key_and_kid() {
        let (master, _) = MasterKey::generate().unwrap();
        let (other, _) = MasterKey::generate().unwrap();
        let sealed = master.seal("kid1", b"secret material").unwrap();
        assert!(!sealed.windows(15).any(|w| w == b"secret material"));
        assert_eq!(master.open("kid1", &sealed).unwrap(), b"secret material");
        assert!(master.open("kid2", &sealed).is_err());
        assert!(other.open("kid1", &sealed).is_err());
        assert!(master.open("kid1", &sealed[..5]).is_err());
    }

    #[test]
    fn hybrid_csrf_tokens_are_bound_to_a_login_and_a_master_key() {
        let (a, bytes) = MasterKey::generate().unwrap();
        let same = MasterKey::from_bytes(&bytes).unwrap();
        let (other, _) = MasterKey::generate().unwrap();
        let token = a.hybrid_csrf_token("fam_1");
        assert!(
            same.verify_hybrid_csrf_token("fam_1", &token),
            "another node with the same master key agrees"
        );
        assert!(!a.verify_hybrid_csrf_token("fam_2", &token));
        assert!(!other.verify_hybrid_csrf_token("fam_1", &token));
        assert!(!a.verify_hybrid_csrf_token("fam_1", "garbage!"));
        assert!(!a.verify_hybrid_csrf_token("fam_1", ""));
    }

    #[test]
    fn master_keys_parse_from_base64_only_when_32_bytes() {
        let (_, bytes) = MasterKey::generate().unwrap();
        assert!(MasterKey::parse_base64(&STANDARD.encode(bytes)).is_ok());
        assert!(MasterKey::parse_base64(&URL_SAFE_NO_PAD.encode(bytes)).is_ok());
        let err = MasterKey::parse_base64("c2hvcnQ=").unwrap_err();
        assert!(err.contains("32 bytes"));
        assert!(MasterKey::parse_base64("not base64 at all!").is_err());
        assert_eq!(
            format!("{:?}", MasterKey::from_bytes(&bytes).unwrap()),
            "MasterKey(<redacted>)"
        );
    }

    #[test]
    fn device_tokens_are_bound_to_their_account() {
        let (key, _) = MasterKey::generate().unwrap();
        let (other, _) = MasterKey::generate().unwrap();
        let token = key.device_token("alice").unwrap();
        let device = key.verify_device_token("alice", &token).unwrap();
        assert!(token.starts_with(&format!("{device}.")));
        assert_eq!(key.verify_device_token("bob", &token), None);
        assert_eq!(other.verify_device_token("alice", &token), None);
        assert_eq!(key.verify_device_token("alice", "garbage"), None);
        assert_eq!(
            key.verify_device_token("alice", &format!("{device}.")),
            None
        );
        assert_ne!(
            token,
            key.device_token("alice").unwrap(),
            "each device its own id"
        );
    }
}
