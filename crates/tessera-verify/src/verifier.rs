//! The verifier: configuration, the verify path, and the JWKS it follows.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use secrecy::SecretString;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::cache::TokenCache;
use crate::claims::{Claims, VerifiedToken};
use crate::clock::{Clock, SystemClock};
use crate::error::{BuildError, RevokedReason, VerifyError};
use crate::jwks::{KeySet, KeyState, freshness, parse_jwks};
use crate::revocation::{Gate, RevocationState, StreamStatus};
use crate::stream;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// The `typ` of access tokens (RFC 9068).
const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Checks Tessera access tokens offline. Cheap to clone: clones share the keys, the cache and the
/// revocation state. Background tasks (JWKS refresh, revocation stream) stop when the last clone
/// is dropped.
///
/// ```no_run
/// # async fn run() -> Result<(), tessera_verify::BuildError> {
/// let verifier = tessera_verify::Verifier::builder("https://auth.example.com", "orders-api")
///     .server_url("https://auth.example.com")
///     .service_credentials("orders-api", std::env::var("TESSERA_CLIENT_SECRET").unwrap_or_default())
///     .build()?;
/// # let token = "";
/// match verifier.verify(token).await {
///     Ok(t) => println!("user {} with roles {:?}", t.subject(), t.roles()),
///     Err(e) if e.is_unavailable() => { /* 503: try again shortly */ }
///     Err(_) => { /* 401 */ }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

pub(crate) struct Shared {
    issuer: String,
    audience: String,
    leeway_ms: i64,
    clock: Arc<dyn Clock>,
    pub(crate) keys: KeySet,
    cache: TokenCache,
    pub(crate) revocations: RwLock<RevocationState>,
    pub(crate) gate: Arc<Gate>,
    stream_enabled: bool,
    jwks: JwksSource,
    keys_loaded: watch::Sender<bool>,
    pub(crate) counters: Counters,
    pub(crate) last_event_id: Mutex<Option<String>>,
    runtime: tokio::runtime::Handle,
    dpop: DpopSettings,
}

/// How DPoP proofs are checked (RFC 9449).
struct DpopSettings {
    /// The service's public URL (scheme, host, any path prefix): what `htu` is compared with.
    public_url: Option<String>,
    proof_max_age: Duration,
    seen: tessera_dpop::ReplayCache,
    /// Whether the missing public URL was warned about already.
    #[cfg(feature = "tower")]
    warned_no_public_url: AtomicBool,
}

struct JwksSource {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
    refetch_interval: Duration,
    min_age: Duration,
    max_age: Duration,
    default_age: Duration,
    /// Held while fetching; holds when the last fetch began (for the unknown-kid rate limit).
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// A refetch scheduled from [`Verifier::verify_offline`] is pending.
    background_pending: AtomicBool,
    /// Fetches completed (or failed), so a caller that waited during one does not start another.
    generation: AtomicU64,
    /// The last fetch failed: callers do not wait for the next one (the server is in trouble;
    /// the refresh task keeps retrying).
    last_failed: AtomicBool,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) jwks_fetches: AtomicU64,
    pub(crate) jwks_failures: AtomicU64,
    pub(crate) stream_connections: AtomicU64,
    pub(crate) snapshots: AtomicU64,
    pub(crate) revocations: AtomicU64,
}

/// What the verifier knows right now, for health checks, metrics and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// Where the revocation stream stands.
    pub stream: StreamStatus,
    /// Whether a JWKS has been fetched at least once.
    pub keys_loaded: bool,
    /// Signing keys in force.
    pub keys: usize,
    /// JWKS requests made (periodic refreshes and unknown-`kid` refetches).
    pub jwks_fetches: u64,
    /// JWKS requests that failed.
    pub jwks_fetch_failures: u64,
    /// Revocation-stream connections that were answered with an event stream.
    pub stream_connections: u64,
    /// Snapshots applied.
    pub snapshots: u64,
    /// Single revocations applied.
    pub revocations: u64,
    /// Revocation entries held (tokens, logins, users).
    pub revocation_entries: usize,
    /// Verified tokens cached.
    pub cached_tokens: usize,
    /// Estimated bytes the cache holds.
    pub cache_bytes: u64,
    /// The id of the last stream event applied: what a reconnection sends as `Last-Event-ID`.
    pub last_event_id: Option<String>,
}

/// The service client a resource server uses on the revocation stream (HTTP Basic). `Debug`
/// never shows the secret.
#[derive(Clone)]
pub struct ServiceCredentials {
    pub(crate) client_id: String,
    pub(crate) secret: SecretString,
}

impl ServiceCredentials {
    /// A client id and secret from the server's `tokens.introspection_clients`.
    pub fn new(client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            secret: SecretString::from(secret.into()),
        }
    }
}

impl std::fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCredentials")
            .field("client_id", &self.client_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

enum StreamChoice {
    Unset,
    Disabled,
    Credentials(ServiceCredentials),
}

/// Configures a [`Verifier`]. Start with [`Verifier::builder`].
///
/// Defaults: leeway 5 s; JWKS fresh for its `Cache-Control: max-age` clamped to 30 s … 1 h (5 min
/// when absent); an unknown `kid` refetches the JWKS at most once per second; the revocation
/// stream is presumed lost after 20 s of silence (the server's 15 s heartbeat plus 5 s), and
/// tokens are accepted for a 5 s grace after a loss; reconnection backs off from 100 ms to 5 s;
/// a resumed stream counts as caught up after its replay and 1 s of quiet (or a comment);
/// the verified-token cache holds about 32 MiB; HTTP requests time out after 10 s.
pub struct VerifierBuilder {
    issuer: String,
    audience: String,
    jwks_url: Option<String>,
    stream_url: Option<String>,
    stream: StreamChoice,
    leeway: Duration,
    refetch_interval: Duration,
    min_age: Duration,
    max_age: Duration,
    default_age: Duration,
    grace: Duration,
    heartbeat_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    cache_bytes: u64,
    max_event_bytes: usize,
    replay_settle: Duration,
    http_timeout: Duration,
    client: Option<reqwest::Client>,
    clock: Arc<dyn Clock>,
    public_url: Option<String>,
    dpop_proof_max_age: Duration,
}

impl std::fmt::Debug for VerifierBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierBuilder")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks_url", &self.jwks_url)
            .field("stream_url", &self.stream_url)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Starts configuring a verifier for tokens with this `iss` and `aud` (Tessera's
    /// `tokens.issuer`, by default its public URL, and `tokens.audience`).
    pub fn builder(issuer: impl Into<String>, audience: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_url: None,
            stream_url: None,
            stream: StreamChoice::Unset,
            leeway: Duration::from_secs(5),
            refetch_interval: Duration::from_secs(1),
            min_age: Duration::from_secs(30),
            max_age: Duration::from_secs(3600),
            default_age: Duration::from_secs(300),
            grace: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(tessera_wire::HEARTBEAT_SECONDS + 5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            cache_bytes: 32 * 1024 * 1024,
            max_event_bytes: 64 * 1024 * 1024,
            replay_settle: Duration::from_secs(1),
            http_timeout: Duration::from_secs(10),
            client: None,
            clock: Arc::new(SystemClock),
            public_url: None,
            dpop_proof_max_age: Duration::from_secs(60),
        }
    }

    /// Verifies an access token completely: size, header, signature with the key its `kid`
    /// names (if the `kid` is unknown, after one JWKS refetch, which may wait up to the refetch
    /// interval for its turn),
    /// claims, time, and revocation. A token seen before costs a cache lookup plus the checks
    /// that can change: the key still being in force, `exp`/`nbf`, and every revocation.
    ///
    /// A token bound to a DPoP key is refused here ([`VerifyError::DpopRequired`]): such a
    /// token is only good with a proof, see [`Verifier::verify_dpop`].
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        let verified = self.verify_any(token).await?;
        if verified.claims().cnf.is_some() {
            return Err(VerifyError::DpopRequired);
        }
        Ok(verified)
    }

    /// Verifies a DPoP-bound access token sent as `Authorization: DPoP` (RFC 9449): the token
    /// as [`Verifier::verify`] does, then the `DPoP` proof sent with it — signed by the key the
    /// token is bound to, for this `method` and absolute `url` (see
    /// [`VerifierBuilder::public_url`] and [`Verifier::request_url`]), recent, naming this token,
    /// and never seen before by this process.
    ///
    /// A service running as several replicas refuses a replay to the same replica only; a
    /// proof is also bound to one request (method and URL) and expires after a minute.
    pub async fn verify_dpop(
        &self,
        token: &str,
        proof: Option<&str>,
        method: &str,
        url: &str,
    ) -> Result<VerifiedToken, VerifyError> {
        let verified = self.verify_any(token).await?;
        let Some(jkt) = verified
            .claims()
            .cnf
            .as_ref()
            .and_then(|c| c.jkt.as_deref())
        else {
            return Err(VerifyError::NotDpopBound);
        };
        let proof = proof.ok_or(VerifyError::DpopRequired)?;
        let shared = &self.inner.shared;
        let now_ms = shared.clock.now_unix_millis();
        let settings = &shared.dpop;
        let checked = tessera_dpop::check_proof(
            proof,
            &tessera_dpop::Expected {
                method,
                url,
                access_token: Some(token),
                now: now_ms.div_euclid(1000),
                max_age: settings.proof_max_age.as_secs(),
                leeway: u64::try_from(shared.leeway_ms / 1000).unwrap_or(0),
            },
        )
        .map_err(VerifyError::DpopProof)?;
        if checked.thumbprint != jkt {
            return Err(VerifyError::DpopWrongKey);
        }
        // The age check compares whole seconds: a proof is accepted until the end of second
        // `iat + max_age`, plus the leeway; it is remembered that long.
        let forget_at = checked
            .iat
            .saturating_add(i64::try_from(settings.proof_max_age.as_secs()).unwrap_or(0))
            .saturating_add(1)
            .saturating_mul(1000)
            .saturating_add(shared.leeway_ms);
        match settings
            .seen
            .first_use(&checked.replay_key(), forget_at, now_ms)
        {
            Ok(true) => Ok(verified),
            Ok(false) => Err(VerifyError::DpopReplayed),
            Err(_) => {
                settings.seen.purge(now_ms);
                Err(VerifyError::DpopReplayCacheFull)
            }
        }
    }

    /// The absolute URL a DPoP proof for this request must name: the configured public URL
    /// followed by the request's path, else the request's own absolute URI, else `http://` and
    /// its `Host` header. `None` when none of these is known.
    #[cfg(feature = "tower")]
    pub fn request_url(&self, uri: &http::Uri, headers: &http::HeaderMap) -> Option<String> {
        let path = uri.path();
        let dpop = &self.inner.shared.dpop;
        if let Some(base) = &dpop.public_url {
            return Some(format!("{}{path}", base.trim_end_matches('/')));
        }
        if !dpop.warned_no_public_url.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "a DPoP request arrived but the verifier has no public URL: proofs are checked \
                 against the URL the request itself names (its Host header); set \
                 VerifierBuilder::public_url"
            );
        }
        if let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) {
            return Some(format!("{scheme}://{authority}{path}"));
        }
        let host = headers.get(http::header::HOST)?.to_str().ok()?;
        Some(format!("http://{host}{path}"))
    }

    async fn verify_any(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        let shared = &self.inner.shared;
        match shared.verify_now(token) {
            Err(Refusal::UnknownKid(kid)) => {
                if shared.refetch_for(&kid).await {
                    shared.verify_now(token).map_err(|r| shared.refusal(r))
                } else {
                    Err(shared.unknown_key(&kid))
                }
            }
            other => other.map_err(|r| shared.refusal(r)),
        }
    }

    /// Like [`verify`](Self::verify), but never waits for the network: a token naming an
    /// unknown `kid` is refused at once, and a refetch (rate-limited) runs in the background.
    /// For synchronous code and benchmarks.
    pub fn verify_offline(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        let shared = &self.inner.shared;
        match shared.verify_now(token) {
            Err(Refusal::UnknownKid(kid)) => {
                let error = shared.unknown_key(&kid);
                Shared::schedule_refetch(shared, kid);
                Err(error)
            }
            other => other.map_err(|r| shared.refusal(r)),
        }
    }

    /// Waits until the verifier can accept tokens: a JWKS fetched and, unless the stream is
    /// off, the first snapshot applied. Wrap it in a timeout.
    pub async fn ready(&self) {
        let shared = &self.inner.shared;
        let mut keys = shared.keys_loaded.subscribe();
        let _ = keys.wait_for(|loaded| *loaded).await;
        let mut stream = shared.gate.subscribe();
        let _ = stream
            .wait_for(|s| matches!(s, StreamStatus::Disabled | StreamStatus::Live))
            .await;
    }

    /// What the verifier knows right now.
    pub fn status(&self) -> Status {
        let shared = &self.inner.shared;
        let c = &shared.counters;
        Status {
            stream: shared.gate.status(),
            keys_loaded: shared.keys.loaded(),
            keys: shared.keys.len(),
            jwks_fetches: c.jwks_fetches.load(Ordering::Relaxed),
            jwks_fetch_failures: c.jwks_failures.load(Ordering::Relaxed),
            stream_connections: c.stream_connections.load(Ordering::Relaxed),
            snapshots: c.snapshots.load(Ordering::Relaxed),
            revocations: c.revocations.load(Ordering::Relaxed),
            revocation_entries: shared
                .revocations
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .len(),
            cached_tokens: shared.cache.len(),
            cache_bytes: shared.cache.weight(),
            last_event_id: shared
                .last_event_id
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// The `iss` this verifier accepts.
    pub fn issuer(&self) -> &str {
        &self.inner.shared.issuer
    }

    /// The `aud` this verifier accepts.
    pub fn audience(&self) -> &str {
        &self.inner.shared.audience
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = &self.inner.shared;
        f.debug_struct("Verifier")
            .field("issuer", &shared.issuer)
            .field("audience", &shared.audience)
            .field("jwks_url", &shared.jwks.url)
            .field("stream", &shared.gate.status())
            .finish_non_exhaustive()
    }
}

impl VerifierBuilder {
    /// The Tessera server's base URL: the JWKS is `{url}/.well-known/jwks.json` and the
    /// revocation stream `{url}/v1/revocations/stream`, unless set one by one.
    pub fn server_url(mut self, url: impl AsRef<str>) -> Self {
        let base = url.as_ref().trim_end_matches('/');
        self.jwks_url = Some(format!("{base}/.well-known/jwks.json"));
        self.stream_url = Some(format!("{base}{}", tessera_wire::STREAM_PATH));
        self
    }

    /// Where the JWKS is fetched.
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// Where the revocation stream is read.
    pub fn revocation_stream_url(mut self, url: impl Into<String>) -> Self {
        self.stream_url = Some(url.into());
        self
    }

    /// Follow the revocation stream with this service client (one of the server's
    /// `tokens.introspection_clients`).
    pub fn service_credentials(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        self.stream = StreamChoice::Credentials(ServiceCredentials::new(client_id, client_secret));
        self
    }

    /// Do not follow the revocation stream: tokens are checked against the JWKS only, so a
    /// revoked token (logout, password change, disabled account) stays accepted until it
    /// expires. Choose this knowingly.
    pub fn without_revocation_stream(mut self) -> Self {
        self.stream = StreamChoice::Disabled;
        self
    }

    /// Clock skew allowed on `exp` and `nbf` (default 5 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The shortest time between two JWKS fetches caused by tokens naming an unknown `kid`
    /// (default 1 s). Bounds what a stream of made-up `kid`s can cost the JWKS endpoint; a token
    /// naming a new key waits at most this long (plus the request) for the refetch.
    pub fn jwks_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// Bounds on how long a fetched JWKS is used before it is fetched again, whatever its
    /// `Cache-Control: max-age` says (default 30 s … 1 h).
    pub fn jwks_max_age_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.min_age = min;
        self.max_age = max;
        self
    }

    /// How long a JWKS without a usable `max-age` is used (default 5 min), within the bounds.
    pub fn jwks_default_max_age(mut self, age: Duration) -> Self {
        self.default_age = age;
        self
    }

    /// How long tokens are still accepted after the revocation stream is lost (default 5 s).
    /// Past it, every token is refused with [`VerifyError::StateUnavailable`] until the stream
    /// is back. Zero refuses at once.
    pub fn stream_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Silence after which the stream is presumed lost (default 20 s: the server's 15 s
    /// heartbeat and a 5 s margin). Also bounds how long a connection attempt may take.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    /// The first and the longest wait between reconnection attempts (default 100 ms and 5 s;
    /// doubling, with jitter). A `retry` field from the server replaces the first.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// The verified-token cache's budget in bytes (default 32 MiB; entries are about 1 KiB).
    pub fn cache_capacity_bytes(mut self, bytes: u64) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// The largest single event accepted on the stream (default 64 MiB; a snapshot holds every
    /// revocation in force).
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// After reconnecting with `Last-Event-ID`, how long the stream must stay quiet after the
    /// server's replay before the state counts as current again (default 1 s; a comment from the
    /// server ends the wait at once). The server writes a replay in one burst; until then the
    /// grace, if still running, covers the gap, and past it tokens are refused.
    pub fn replay_settle(mut self, settle: Duration) -> Self {
        self.replay_settle = settle;
        self
    }

    /// Timeout for a JWKS request (default 10 s).
    pub fn http_timeout(mut self, timeout: Duration) -> Self {
        self.http_timeout = timeout;
        self
    }

    /// Use this HTTP client instead of the built-in one (which follows no redirects and times
    /// out connecting after 5 s).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Read the time from this clock (for tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the verifier and starts its background tasks: the JWKS is fetched at once and then
    /// kept fresh, and the revocation stream is followed. Must run inside a Tokio runtime. Never
    /// fails for network reasons: until the first JWKS and snapshot arrive, tokens are refused
    /// with an error for which [`VerifyError::is_unavailable`] holds (see [`Verifier::ready`]).
    /// This service's public URL (`https://api.example.com`, with a path prefix if a proxy adds
    /// one): DPoP proofs must name it followed by the request's path. Without it, the URL is
    /// taken from the request (its absolute form or `Host` header, as `http`), which is wrong
    /// behind a proxy that ends TLS.
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into());
        self
    }

    /// How old a DPoP proof may be (default 60 s); its id is remembered this long, so a replay
    /// to this process is refused.
    pub fn dpop_proof_max_age(mut self, age: Duration) -> Self {
        self.dpop_proof_max_age = age;
        self
    }

    /// Checks the settings, starts the background tasks (JWKS refresh, revocation stream) on
    /// the current Tokio runtime, and returns the verifier.
    pub fn build(self) -> Result<Verifier, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        if let Some(url) = &self.public_url
            && tessera_dpop::normalize_htu(url).is_none()
        {
            return Err(BuildError::BadSetting(
                "the public URL must be an absolute http(s) URL",
            ));
        }
        let jwks_url = self.jwks_url.ok_or(BuildError::NoJwksUrl)?;
        check_url(&jwks_url, "the JWKS URL")?;
        if self.min_age > self.max_age {
            return Err(BuildError::BadSetting(
                "the JWKS max-age bounds are reversed",
            ));
        }
        if self.heartbeat_timeout.is_zero() || self.backoff_min.is_zero() {
            return Err(BuildError::BadSetting(
                "the heartbeat timeout and the first backoff must be positive",
            ));
        }
        let stream = match self.stream {
            StreamChoice::Unset => return Err(BuildError::RevocationChoice),
            StreamChoice::Disabled => None,
            StreamChoice::Credentials(credentials) => {
                let url = self.stream_url.ok_or(BuildError::NoStreamUrl)?;
                check_url(&url, "the revocation stream URL")?;
                Some(stream::StreamConfig {
                    url,
                    credentials,
                    grace: self.grace,
                    heartbeat_timeout: self.heartbeat_timeout,
                    backoff_min: self.backoff_min,
                    backoff_max: self.backoff_max.max(self.backoff_min),
                    max_event_bytes: self.max_event_bytes,
                    replay_settle: self.replay_settle,
                })
            }
        };
        let client = match self.client {
            Some(c) => c,
            None => reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("tessera-verify/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(BuildError::HttpClient)?,
        };
        let shared = Arc::new(Shared {
            issuer: self.issuer,
            audience: self.audience,
            leeway_ms: i64::try_from(self.leeway.as_millis()).unwrap_or(i64::MAX),
            clock: self.clock,
            keys: KeySet::default(),
            cache: TokenCache::new(self.cache_bytes),
            revocations: RwLock::new(RevocationState::default()),
            gate: Gate::new(if stream.is_some() {
                StreamStatus::Connecting
            } else {
                StreamStatus::Disabled
            }),
            stream_enabled: stream.is_some(),
            jwks: JwksSource {
                client: client.clone(),
                url: jwks_url,
                timeout: self.http_timeout,
                refetch_interval: self.refetch_interval,
                min_age: self.min_age,
                max_age: self.max_age,
                default_age: self.default_age,
                last_fetch: tokio::sync::Mutex::new(None),
                background_pending: AtomicBool::new(false),
                generation: AtomicU64::new(0),
                last_failed: AtomicBool::new(false),
            },
            keys_loaded: watch::Sender::new(false),
            counters: Counters::default(),
            last_event_id: Mutex::new(None),
            runtime: runtime.clone(),
            dpop: DpopSettings {
                public_url: self.public_url,
                proof_max_age: self.dpop_proof_max_age,
                seen: tessera_dpop::ReplayCache::default(),
                #[cfg(feature = "tower")]
                warned_no_public_url: AtomicBool::new(false),
            },
        });
        let mut tasks = vec![
            runtime
                .spawn(refresh_keys(Arc::clone(&shared)))
                .abort_handle(),
        ];
        if let Some(config) = stream {
            tasks.push(
                runtime
                    .spawn(stream::follow(Arc::clone(&shared), client.clone(), config))
                    .abort_handle(),
            );
            tasks.push(
                runtime
                    .spawn(prune_revocations(Arc::clone(&shared)))
                    .abort_handle(),
            );
        }
        Ok(Verifier {
            inner: Arc::new(Inner { shared, tasks }),
        })
    }
}

fn check_url(url: &str, what: &'static str) -> Result<(), BuildError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(()),
        _ => Err(BuildError::BadUrl { what }),
    }
}

/// Why `verify_now` stopped: a refusal, or a `kid` worth a JWKS refetch.
pub(crate) enum Refusal {
    Error(VerifyError),
    UnknownKid(String),
}

impl From<VerifyError> for Refusal {
    fn from(e: VerifyError) -> Self {
        Self::Error(e)
    }
}

impl Shared {
    fn refusal(&self, r: Refusal) -> VerifyError {
        match r {
            Refusal::Error(e) => e,
            Refusal::UnknownKid(kid) => self.unknown_key(&kid),
        }
    }

    fn unknown_key(&self, kid: &str) -> VerifyError {
        if self.keys.is_retired(kid) {
            VerifyError::KeyRetired
        } else if self.keys.loaded() {
            VerifyError::UnknownKey
        } else {
            VerifyError::KeysUnavailable
        }
    }

    /// Everything that needs no network.
    #[inline]
    fn verify_now(&self, token: &str) -> Result<VerifiedToken, Refusal> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(VerifyError::BadLength.into());
        }
        if let Some(hit) = self.cache.get(token) {
            match hit.inner.key.state() {
                KeyState::Live => {
                    self.check_time(hit.claims())?;
                    self.check_revocation(hit.claims())?;
                    return Ok(hit);
                }
                KeyState::Retired => return Err(VerifyError::KeyRetired.into()),
                // The key left the JWKS, perhaps only for one fetch: judge the token afresh
                // against the keys in force now.
                KeyState::Withdrawn => {}
            }
        }
        let verified = self.verify_signature(token)?;
        self.check_time(verified.claims())?;
        self.cache.insert(token, verified.clone());
        self.check_revocation(verified.claims())?;
        Ok(verified)
    }

    fn verify_signature(&self, token: &str) -> Result<VerifiedToken, Refusal> {
        let well_formed = token.bytes().filter(|&b| b == b'.').count() == 2
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !well_formed {
            return Err(VerifyError::Malformed.into());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        check_header(&header)?;
        let kid = header.kid.ok_or(VerifyError::ForbiddenHeader("kid"))?;
        let Some(key) = self.keys.get(&kid) else {
            return Err(if self.keys.is_retired(&kid) {
                VerifyError::KeyRetired.into()
            } else {
                Refusal::UnknownKid(kid)
            });
        };
        // The key decides the algorithm. `decode` would refuse the mismatch too; saying it here
        // keeps that rule independent of the library.
        if header.alg != key.algorithm {
            return Err(VerifyError::BadSignature.into());
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        // Time is checked against the injected clock, with our leeway.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
                ErrorKind::InvalidAudience => VerifyError::WrongAudience,
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::Provider(_) => VerifyError::BadSignature,
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                    VerifyError::Malformed
                }
                _ => VerifyError::BadClaims,
            },
        )?;
        Ok(VerifiedToken::new(data.claims, key))
    }

    #[inline]
    fn check_time(&self, claims: &Claims) -> Result<(), VerifyError> {
        let now = self.clock.now_unix_millis();
        if now
            >= claims
                .exp
                .saturating_mul(1000)
                .saturating_add(self.leeway_ms)
        {
            return Err(VerifyError::Expired);
        }
        if now.saturating_add(self.leeway_ms) < claims.nbf.saturating_mul(1000) {
            return Err(VerifyError::NotYetValid);
        }
        Ok(())
    }

    #[inline]
    fn check_revocation(&self, claims: &Claims) -> Result<(), VerifyError> {
        if !self.stream_enabled {
            return Ok(());
        }
        if !self.gate.trusted() {
            return Err(VerifyError::StateUnavailable);
        }
        let state = self.revocations.read().unwrap_or_else(|e| e.into_inner());
        match state.check(claims) {
            None => Ok(()),
            Some(reason) => Err(VerifyError::Revoked(reason)),
        }
    }

    /// Fetches the JWKS and installs it; returns how long it stays fresh. The caller holds
    /// `last_fetch`.
    async fn fetch_jwks(&self) -> Result<Duration, String> {
        self.counters.jwks_fetches.fetch_add(1, Ordering::Relaxed);
        let result = self.fetch_jwks_inner().await;
        if result.is_err() {
            self.counters.jwks_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.jwks
            .last_failed
            .store(result.is_err(), Ordering::Release);
        self.jwks.generation.fetch_add(1, Ordering::AcqRel);
        result
    }

    async fn fetch_jwks_inner(&self) -> Result<Duration, String> {
        let jwks = &self.jwks;
        let mut response = jwks
            .client
            .get(&jwks.url)
            .header(
                reqwest::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .timeout(jwks.timeout)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(format!("answered {}", response.status()));
        }
        let cache_control = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let (keys, skipped) = parse_jwks(&body).map_err(|e| e.to_string())?;
        if skipped > 0 {
            tracing::debug!(
                skipped,
                "JWKS keys that cannot verify access tokens were skipped"
            );
        }
        self.keys.install(keys);
        self.keys_loaded.send_replace(true);
        Ok(freshness(
            cache_control.as_deref(),
            jwks.min_age,
            jwks.max_age,
            jwks.default_age,
        ))
    }

    /// A token named `kid`, which we do not have: fetch the JWKS again, but never sooner than
    /// the refetch interval after the previous fetch (waiting for that moment if needed), and
    /// never twice for one caller: whoever was waiting while a fetch completed takes that
    /// fetch's answer. So a key that appeared just after a fetch is found within the interval,
    /// and made-up `kid`s cost at most one request per interval. Returns whether the key is now
    /// known.
    async fn refetch_for(&self, kid: &str) -> bool {
        let seen = self.jwks.generation.load(Ordering::Acquire);
        let mut last = self.jwks.last_fetch.lock().await;
        if self.keys.get(kid).is_some() {
            return true;
        }
        if self.keys.is_retired(kid) || self.jwks.generation.load(Ordering::Acquire) != seen {
            return false;
        }
        if let Some(at) = *last {
            let turn = at + self.jwks.refetch_interval;
            if Instant::now() < turn && self.jwks.last_failed.load(Ordering::Acquire) {
                // The server just failed to answer: refuse now rather than pile requests up.
                return false;
            }
            // Callers arriving meanwhile queue on the lock and take this fetch's answer.
            tokio::time::sleep_until(turn).await;
        }
        *last = Some(Instant::now());
        if let Err(error) = self.fetch_jwks().await {
            tracing::warn!(url = %self.jwks.url, %error, "JWKS refetch for an unknown kid failed");
        }
        self.keys.get(kid).is_some()
    }

    fn schedule_refetch(self: &Arc<Self>, kid: String) {
        if self.jwks.background_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = Arc::clone(self);
        self.runtime.spawn(async move {
            shared.refetch_for(&kid).await;
            shared
                .jwks
                .background_pending
                .store(false, Ordering::Release);
        });
    }

    /// Applies a snapshot: the revocations, and the retired keys.
    pub(crate) fn apply_snapshot(&self, snapshot: &tessera_wire::Snapshot) {
        let now = self.clock.now_unix_millis();
        {
            let mut state = self.revocations.write().unwrap_or_else(|e| e.into_inner());
            state.replace(snapshot);
            state.prune(now);
        }
        self.keys.set_retired(&snapshot.retired_keys);
        self.counters.snapshots.fetch_add(1, Ordering::Relaxed);
    }

    /// Applies one change.
    pub(crate) fn apply_revocation(&self, revocation: &tessera_wire::Revocation) {
        if let tessera_wire::Revocation::KeyRetired { kid } = revocation {
            self.keys.retire(kid);
        } else {
            self.revocations
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .apply(revocation);
        }
        self.counters.revocations.fetch_add(1, Ordering::Relaxed);
    }
}

fn check_header(header: &Header) -> Result<(), VerifyError> {
    // Members that point at a key to trust: the key must come from the configured JWKS only.
    let forbidden = [
        ("jku", header.jku.is_some()),
        ("jwk", header.jwk.is_some()),
        ("x5u", header.x5u.is_some()),
        ("x5c", header.x5c.is_some()),
        // Extensions we do not understand must not be ignored (RFC 7515 §4.1.11).
        ("crit", header.crit.is_some()),
    ];
    if let Some((name, _)) = forbidden.iter().find(|(_, present)| *present) {
        return Err(VerifyError::ForbiddenHeader(name));
    }
    let typ_ok = header.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
    });
    if !typ_ok {
        return Err(VerifyError::WrongType);
    }
    Ok(())
}

/// Keeps the JWKS fresh: fetched at start, then again when its freshness runs out; after a
/// failure, retried with backoff (1 s doubling to 32 s) while the keys already held stay in use.
async fn refresh_keys(shared: Arc<Shared>) {
    let mut failures: u32 = 0;
    loop {
        let wait = {
            let mut last = shared.jwks.last_fetch.lock().await;
            *last = Some(Instant::now());
            match shared.fetch_jwks().await {
                Ok(fresh) => {
                    failures = 0;
                    fresh
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(url = %shared.jwks.url, %error, failures, "JWKS fetch failed");
                    Duration::from_secs(1u64 << failures.min(6).saturating_sub(1))
                }
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Forgets revocations whose tokens have all expired.
async fn prune_revocations(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = shared.clock.now_unix_millis();
        shared
            .revocations
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .prune(now);
    }
}

impl From<RevokedReason> for VerifyError {
    fn from(reason: RevokedReason) -> Self {
        Self::Revoked(reason)
    }
}
