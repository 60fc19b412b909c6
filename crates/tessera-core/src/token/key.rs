//! Signing keys as the store keeps them: the algorithm, where a key is in its life, and the
//! sealed private part.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

/// A JWS algorithm Tessera signs with. The algorithm belongs to the key; the token header is never
/// trusted to choose it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    /// Ed25519, the default.
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    RS256,
    /// HMAC-SHA-256. Only for a single service: there is no public key, so no JWKS.
    HS256,
}

impl SigningAlgorithm {
    /// The JWS `alg` name (`EdDSA`, `ES256`, …), also what stores persist and the configuration
    /// accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::EdDSA => "EdDSA",
            SigningAlgorithm::ES256 => "ES256",
            SigningAlgorithm::RS256 => "RS256",
            SigningAlgorithm::HS256 => "HS256",
        }
    }

    /// The algorithm named by [`as_str`](Self::as_str) (case-sensitive); `None` for any other.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "EdDSA" => Some(SigningAlgorithm::EdDSA),
            "ES256" => Some(SigningAlgorithm::ES256),
            "RS256" => Some(SigningAlgorithm::RS256),
            "HS256" => Some(SigningAlgorithm::HS256),
            _ => None,
        }
    }

    /// Whether the key has a public part that may be published.
    pub fn is_asymmetric(self) -> bool {
        self != SigningAlgorithm::HS256
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Signs new tokens (the newest active key does) and verifies.
    Active,
    /// Replaced by a newer key: verifies the tokens it signed until they expire, then leaves the
    /// JWKS.
    Rotated,
    /// Verifies nothing.
    Retired,
}

impl KeyStatus {
    /// The lowercase name stores persist and operators see (`active`, `rotated`, `retired`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Rotated => "rotated",
            KeyStatus::Retired => "retired",
        }
    }

    /// The status named by [`as_str`](Self::as_str); `None` for any other name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(KeyStatus::Active),
            "rotated" => Some(KeyStatus::Rotated),
            "retired" => Some(KeyStatus::Retired),
            _ => None,
        }
    }
}

/// A signing key as the store keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The key id (`k_…`) tokens name in their `kid` header.
    pub kid: String,
    /// What the key signs with, fixed for its life.
    pub algorithm: SigningAlgorithm,
    /// Where the key is in its life.
    pub status: KeyStatus,
    /// The private key (PKCS#8 DER, or the HMAC secret) sealed with the master key
    /// (AES-256-GCM: nonce ‖ ciphertext ‖ tag, the kid as associated data).
    pub sealed_private: Vec<u8>,
    /// The public JWK as JSON; `None` for HMAC keys, which have no public part.
    pub public_jwk: Option<String>,
    /// When the key was made (rotated in).
    pub created_at: Timestamp,
    /// When it stopped signing.
    pub rotated_at: Option<Timestamp>,
    /// When it stopped verifying.
    pub retired_at: Option<Timestamp>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("status", &self.status)
            .field("sealed_private", &"<sealed>")
            .field("created_at", &self.created_at)
            .field("rotated_at", &self.rotated_at)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}
