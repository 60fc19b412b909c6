//! Verify Tessera access tokens offline, in any Rust service.
//!
//! A [`Verifier`] fetches the server's public keys (the JWKS at `/.well-known/jwks.json`) and
//! follows its revocation stream (`/v1/revocations/stream`), then checks each bearer token in
//! memory: no request to the server per token.
//!
//! What is checked, as the server itself checks it:
//! - the token is at most 8 KiB and a JWS compact serialization;
//! - the header carries a `kid`, `typ` `at+jwt`, and none of `jku`, `x5u`, `jwk`, `x5c`, `crit`
//!   (nothing is ever fetched or trusted because a token says so);
//! - the signature verifies with the key that `kid` names, using the algorithm of that key
//!   (EdDSA, ES256 or RS256), never the one the header names;
//! - `iss` and `aud` equal the configured values; `exp` and `nbf` hold within the leeway; `sub`
//!   and `jti` are present;
//! - the token is not revoked: not by its `jti`, not by its login (`fid`), not by a "not before"
//!   of its user (compared with `iat_ms`), the user is not disabled, and its key is not retired.
//!
//! Verified tokens are cached (bounded by bytes), so a repeated token costs a hash lookup while
//! the key, the time and the revocations are still checked on every use.
//!
//! **Fail closed.** When the revocation stream is lost, tokens are still accepted for a short
//! grace (5 s by default), then refused with [`VerifyError::StateUnavailable`] (an HTTP answer of
//! 503, not 401) until the stream is back and caught up. A service can opt out of the stream
//! ([`VerifierBuilder::without_revocation_stream`]); it then learns of nothing but key changes.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use tessera_verify::{VerifiedToken, Verifier};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder("https://auth.example.com", "tessera")
//!     .server_url("https://auth.example.com")
//!     .service_credentials("orders", std::env::var("TESSERA_CLIENT_SECRET")?)
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/me", get(|token: VerifiedToken| async move { token.subject().to_owned() }))
//!     .with_state(verifier);
//! # Ok(()) }
//! ```
//!
//! Cargo features: `axum` (the extractor; on by default), `tower` (the layer; implied by
//! `axum`), `rustls` (https URLs, on aws-lc-rs; on by default).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cache;
mod claims;
mod clock;
mod error;
#[cfg(feature = "axum")]
mod extract;
#[cfg(feature = "tower")]
mod http;
mod jwks;
mod revocation;
mod sse;
mod stream;
mod verifier;

pub use claims::{Claims, VerifiedToken};
pub use clock::{Clock, SystemClock};
pub use error::{BuildError, RevokedReason, VerifyError};
#[cfg(feature = "tower")]
pub use http::{Rejection, RequireBearer, RequireBearerLayer, bearer_token};
pub use revocation::StreamStatus;
pub use verifier::{MAX_TOKEN_BYTES, ServiceCredentials, Status, Verifier, VerifierBuilder};
