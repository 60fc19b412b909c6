//! Why a token was refused, and why a verifier could not be built.

/// Why an access token was refused.
///
/// Tell clients no more than "invalid token" (the HTTP integration answers 401 with
/// `error="invalid_token"` for every variant except the two that [`is_unavailable`] marks, which
/// mean the verifier cannot decide right now and map to 503). The variants are for logs, metrics
/// and tests.
///
/// [`is_unavailable`]: VerifyError::is_unavailable
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Empty, or longer than 8 KiB: refused before any parsing.
    #[error("token empty or too long")]
    BadLength,
    /// Not a JWS compact serialization: three base64url segments, a JSON header, a known `alg`.
    #[error("malformed token")]
    Malformed,
    /// The header names something that would make the verifier fetch or trust a key the token
    /// itself points to (`jku`, `x5u`, `jwk`, `x5c`), carries `crit`, or lacks `kid`.
    #[error("forbidden or missing header member `{0}`")]
    ForbiddenHeader(&'static str),
    /// `typ` is not `at+jwt` (or `application/at+jwt`): not an access token.
    #[error("not an access token (typ)")]
    WrongType,
    /// No key with this `kid` in the JWKS, even after a refetch (or a refetch was not allowed
    /// yet), or the key has left the JWKS since the token was first seen.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signing key was retired (announced on the revocation stream).
    #[error("signing key retired")]
    KeyRetired,
    /// The signature does not verify, or the header's `alg` is not the key's algorithm.
    #[error("bad signature or algorithm")]
    BadSignature,
    /// A required claim (`exp`, `nbf`, `iss`, `aud`, `sub`, `jti`) is missing or has the wrong
    /// type.
    #[error("missing or malformed claims")]
    BadClaims,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is still in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` is not the configured audience.
    #[error("wrong audience")]
    WrongAudience,
    /// Revoked: see the reason.
    #[error("token revoked ({0})")]
    Revoked(RevokedReason),
    /// The revocation stream has been lost for longer than the grace period (or has not
    /// delivered its first snapshot yet): the verifier cannot know whether the token was
    /// revoked, so it refuses every token until the stream is back. Map to 503, not 401.
    #[error("revocation state unavailable")]
    StateUnavailable,
    /// No JWKS has been fetched yet (the server is unreachable): map to 503, not 401.
    #[error("signing keys unavailable")]
    KeysUnavailable,
    /// The token is bound to a DPoP key (`cnf.jkt`) but came as a bearer token, or without a
    /// `DPoP` proof: a copied token, or a client that forgot its proof.
    #[error("the token is bound to a DPoP key: it needs Authorization: DPoP and a proof")]
    DpopRequired,
    /// The token came with the DPoP scheme but is not bound to a key.
    #[error("the token is not bound to a DPoP key: send it as Authorization: Bearer")]
    NotDpopBound,
    /// The DPoP proof failed a check (header, signature, method, URL, age, token hash).
    #[error("invalid DPoP proof: {0}")]
    DpopProof(tessera_dpop::ProofError),
    /// The DPoP proof was signed with another key than the one the token is bound to.
    #[error("the DPoP proof is signed with another key than the token's")]
    DpopWrongKey,
    /// The DPoP proof was accepted before: a replay.
    #[error("the DPoP proof was used before")]
    DpopReplayed,
    /// Too many recent proofs to remember another: refuse until some expire (503).
    #[error("too many recent DPoP proofs")]
    DpopReplayCacheFull,
}

impl VerifyError {
    /// `true` when the verifier cannot decide right now (no revocation state, no keys yet):
    /// answer 503 and let the client retry, rather than 401.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::StateUnavailable | Self::KeysUnavailable | Self::DpopReplayCacheFull
        )
    }
}

impl VerifyError {
    /// `true` for a refusal of the DPoP part of a request (RFC 9449): the answer's challenge is
    /// `WWW-Authenticate: DPoP`.
    pub fn is_dpop(&self) -> bool {
        matches!(
            self,
            Self::DpopRequired
                | Self::NotDpopBound
                | Self::DpopProof(_)
                | Self::DpopWrongKey
                | Self::DpopReplayed
        )
    }
}

/// Which revocation matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RevokedReason {
    /// The token itself (its `jti`) was revoked.
    #[error("token")]
    Token,
    /// The login it belongs to (its `fid`) was revoked: logout, refresh-token reuse.
    #[error("login")]
    Family,
    /// The user's tokens issued before a moment were revoked: password or role change, forced
    /// logout.
    #[error("user not-before")]
    UserNotBefore,
    /// The account is disabled.
    #[error("user disabled")]
    UserDisabled,
}

/// Why [`VerifierBuilder::build`](crate::VerifierBuilder::build) refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Neither `server_url` nor `jwks_url` was given.
    #[error("no JWKS URL: call server_url or jwks_url")]
    NoJwksUrl,
    /// The revocation stream was neither configured (`service_credentials`) nor explicitly
    /// turned off (`without_revocation_stream`).
    #[error(
        "say how revocations are learned: service_credentials (the revocation stream) or without_revocation_stream"
    )]
    RevocationChoice,
    /// Credentials were given but no stream URL (set `server_url` or `revocation_stream_url`).
    #[error("no revocation stream URL: call server_url or revocation_stream_url")]
    NoStreamUrl,
    /// A URL that is not absolute `http` or `https`.
    #[error("{what} is not an http(s) URL")]
    BadUrl {
        /// Which URL was refused: the JWKS URL or the revocation stream URL.
        what: &'static str,
    },
    /// A setting out of range (reversed JWKS max-age bounds, a zero heartbeat timeout or
    /// backoff); the text says which.
    #[error("{0}")]
    BadSetting(&'static str),
    /// `build` was called outside a Tokio runtime; the verifier runs background tasks.
    #[error("build must be called inside a Tokio runtime")]
    NoRuntime,
    /// The built-in HTTP client could not be built; the source error says why.
    #[error("building the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}
