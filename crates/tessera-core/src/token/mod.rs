//! The token model: JWT access tokens (RFC 9068), rotating refresh-token families, revocation,
//! and the key ring.

pub mod keyring;
pub mod refresh;
pub mod revocation;
