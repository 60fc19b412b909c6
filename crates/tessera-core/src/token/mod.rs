//! The token model: JWT access tokens (RFC 9068), rotating refresh-token families, revocation,
//! and the key ring.

pub mod access;
pub mod dpop;
pub mod key;
pub mod keyring;
pub mod master_key;
pub mod refresh;
pub mod revocation;
pub mod revoked;
pub mod service;
pub mod stream;

pub use access::{AccessClaims, VerifiedClaims, Verifier, VerifyError};
pub use dpop::{Confirmation, Dpop, DpopConfig, DpopError};
pub use keyring::{KeyInfo, KeyRing};
pub use master_key::MasterKey;
pub use revocation::{RevocationMode, Revocations};
pub use service::{Introspection, SteppedUpAccess, TokenConfig, TokenPair, Tokens};
