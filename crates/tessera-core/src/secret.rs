//! Secrets that travel to clients: session ids, CSRF tokens and refresh tokens. 256 bits from the
//! OS CSPRNG, base64url on the wire, compared in constant time, redacted in `Debug`, and stored
//! only as a SHA-256 [`TokenHash`] where the store would otherwise hold a live credential. Also the
//! shape of public ids (users, sessions, refresh families): random too, but not secret.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::Error;

const SECRET_LEN: usize = 32;
/// Length of a 32-byte secret in unpadded base64url.
const ENCODED_LEN: usize = 43;

/// `N` bytes from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Internal(format!("OS random source failed: {e}")))?;
    Ok(bytes)
}

/// The random bits of a public id.
const PUBLIC_ID_LEN: usize = 16;
/// Length of those bits in unpadded base64url.
pub(crate) const PUBLIC_ID_ENCODED_LEN: usize = 22;

/// A random identifier that is not a secret (a user id, a session handle): `prefix` + 128 bits.
pub(crate) fn random_public_id(prefix: &str) -> Result<String, Error> {
    let bytes: [u8; PUBLIC_ID_LEN] = random_bytes()?;
    Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// Whether `text` has the shape [`random_public_id`] gives: `prefix`, then 128 bits in canonical
/// unpadded base64url. Ids that come from outside (a URL, a token's claims, a feed message) are
/// held to it, so a malformed one is turned away before it reaches a lookup or a log line.
pub(crate) fn is_public_id(text: &str, prefix: &str) -> bool {
    let Some(encoded) = text.strip_prefix(prefix) else {
        return false;
    };
    let mut bytes = [0u8; PUBLIC_ID_LEN];
    encoded.len() == PUBLIC_ID_ENCODED_LEN
        && matches!(
            URL_SAFE_NO_PAD.decode_slice(encoded, &mut bytes),
            Ok(PUBLIC_ID_LEN)
        )
}

/// Deserializes a public id with `prefix`, refusing any other shape (see [`is_public_id`]).
pub(crate) fn deserialize_public_id<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    prefix: &str,
) -> Result<String, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    if is_public_id(&text, prefix) {
        Ok(text)
    } else {
        Err(serde::de::Error::custom(format_args!(
            "expected an id of the form {prefix}… (128 bits in base64url)"
        )))
    }
}

fn decode_secret(encoded: &str) -> Option<[u8; SECRET_LEN]> {
    if encoded.len() != ENCODED_LEN {
        return None;
    }
    let mut out = [0u8; SECRET_LEN];
    match URL_SAFE_NO_PAD.decode_slice(encoded, &mut out) {
        Ok(SECRET_LEN) => Some(out),
        _ => None,
    }
}

/// Compares two secrets without leaking where they differ or how long they are (their SHA-256
/// digests are compared in constant time). Use it for any secret compared as bytes (a client
/// secret from configuration); the secret types here already compare this way with `==`.
///
/// ```
/// use tessera_core::secret::secrets_equal;
///
/// assert!(secrets_equal(b"s3cret", b"s3cret"));
/// assert!(!secrets_equal(b"s3cret", b"s3cret, and then some"));
/// ```
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    TokenHash::of(a).0.ct_eq(&TokenHash::of(b).0).into()
}

/// SHA-256 of a secret: what the store keeps and looks secrets up by, so a copy of the database
/// holds no live credential.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The SHA-256 digest of `secret`.
    pub fn of(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    /// Wraps a digest read back from a store.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Builds a hash from a stored slice; `None` when it is not 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The 32 digest bytes, as stores write them.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only a prefix: enough to correlate log lines, not to look anything up.
        write!(
            f,
            "TokenHash({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name([u8; SECRET_LEN]);

        impl $name {
            /// A fresh secret from the OS CSPRNG.
            pub fn generate() -> Result<Self, Error> {
                random_bytes().map(Self)
            }

            /// Parses the wire form; `None` for anything that is not exactly 32 base64url bytes.
            pub fn parse(encoded: &str) -> Option<Self> {
                decode_secret(encoded).map(Self)
            }

            /// The wire form (43 characters of unpadded base64url).
            pub fn encode(&self) -> String {
                URL_SAFE_NO_PAD.encode(self.0)
            }

            /// The SHA-256 of the secret: what the store keeps and looks it up by.
            pub fn hash(&self) -> TokenHash {
                TokenHash::of(&self.0)
            }

            /// The raw bytes, for a store that must keep the secret itself (a CSRF token is
            /// handed back to its session's owner, so a hash would not do).
            pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
                &self.0
            }

            /// Rebuilds a secret from the raw bytes a store kept.
            pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
                Self(bytes)
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.0.ct_eq(&other.0).into()
            }
        }

        impl Eq for $name {}

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

secret_type!(
    /// The secret in the session cookie. The server stores only its [`TokenHash`]; `==` compares
    /// in constant time and `Debug` prints no part of it.
    ///
    /// ```
    /// use tessera_core::{SessionId, TokenHash};
    ///
    /// let id = SessionId::generate()?;
    /// let cookie = id.encode();
    /// assert_eq!(cookie.len(), 43);
    ///
    /// let presented = SessionId::parse(&cookie).expect("a well-formed session id");
    /// assert_eq!(presented, id);
    /// // The store is asked by hash; the secret itself is never written down.
    /// assert_eq!(presented.hash(), TokenHash::of(id.as_bytes()));
    /// assert_eq!(format!("{id:?}"), "SessionId(<redacted>)");
    /// assert!(SessionId::parse("not-a-session-id").is_none());
    /// # Ok::<(), tessera_core::Error>(())
    /// ```
    SessionId
);

secret_type!(
    /// The synchronizer token a session-cookie client sends in `X-CSRF-Token` on unsafe requests.
    /// Bound to one session: stored with it, compared in constant time.
    CsrfToken
);

secret_type!(
    /// An opaque refresh token. The server stores only its [`TokenHash`]; every refresh replaces it.
    ///
    /// Parsing takes only the canonical form: a padded, truncated or otherwise altered token is
    /// refused rather than repaired.
    ///
    /// ```
    /// use tessera_core::RefreshToken;
    ///
    /// let token = RefreshToken::generate()?;
    /// let wire = token.encode();
    /// assert!(RefreshToken::parse(&format!("{wire}=")).is_none());
    /// assert!(RefreshToken::parse(&wire[..42]).is_none());
    /// assert_eq!(RefreshToken::parse(&wire).map(|t| t.hash()), Some(token.hash()));
    /// # Ok::<(), tessera_core::Error>(())
    /// ```
    RefreshToken
);

secret_type!(
    /// The secret of a second-factor login challenge: handed to the client after a correct
    /// password, exchanged with a code for the login. The server stores only its [`TokenHash`].
    ChallengeSecret
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_redaction() {
        let id = SessionId::generate().unwrap();
        let wire = id.encode();
        assert_eq!(wire.len(), ENCODED_LEN);
        assert_eq!(SessionId::parse(&wire), Some(id.clone()));
        assert_eq!(format!("{id:?}"), "SessionId(<redacted>)");
        assert!(!format!("{:?}", id.hash()).contains(&wire));
    }

    #[test]
    fn rejects_malformed_wire_forms() {
        let wire = SessionId::generate().unwrap().encode();
        for bad in [
            "",
            "abc",
            &wire[..42],
            &format!("{wire}A"),
            &format!("{}=", &wire[..42]),
            &wire.replace(|c: char| c.is_ascii_alphanumeric(), "+"),
        ] {
            assert!(SessionId::parse(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn generated_secrets_differ() {
        let a = CsrfToken::generate().unwrap();
        let b = CsrfToken::generate().unwrap();
        assert_ne!(a, b);
        assert_ne!(a.hash(), b.hash());
    }
}

secret_type!(
    /// The single-use code a mail carries: account recovery, or proof that an address is the
    /// user's. The server stores only its [`TokenHash`], so a copy of the database (or of the mail
    /// queue, which is sealed) holds no usable code.
    OneTimeCode
);
