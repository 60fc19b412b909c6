//! The token model: JWT access tokens (RFC 9068), rotating refresh-token families, revocation,
//! and the key ring.

pub mod access;
pub mod keyring;
pub mod refresh;
pub mod revocation;
pub mod service;
pub mod stream;

pub use access::{AccessClaims, VerifiedClaims, Verifier, VerifyError};
pub use keyring::{KeyInfo, KeyRing, MasterKey};
pub use revocation::{RevocationMode, Revocations};
pub use service::{Introspection, TokenConfig, TokenPair, Tokens};
