//! Passwords: the policy a new password must meet, and argon2id hashing run off the async workers
//! behind a semaphore, with a dummy hash so an unknown user costs the same as a wrong password.
//!
//! Hashes run on the hasher's own threads, one per permitted hash, at a lower scheduling
//! priority (Linux niceness): a burst of logins takes the CPU the requests of logged-in users
//! leave, instead of making those requests wait behind it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, mpsc};
use std::time::Duration;

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier, Version,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::error::Error;

/// A password as received from a client. The secret never appears in `Debug` output or logs,
/// and there is no accessor for it: it leaves this type only to be checked against a
/// [`PasswordPolicy`] or hashed by the [`PasswordHasher`], both after NFKC normalization.
///
/// ```
/// use tessera_core::{Error, Password, PasswordPolicy};
///
/// let password = Password::new("correct horse battery staple");
/// assert_eq!(format!("{password:?}"), "Password(<redacted>)");
///
/// let policy = PasswordPolicy::default();
/// assert!(policy.check(&password).is_ok());
/// // Refused with a message that names the field and never echoes the password.
/// match policy.check(&Password::new("hunter2")) {
///     Err(Error::Invalid { field, message }) => {
///         assert_eq!(field, "password");
///         assert!(!message.contains("hunter2"));
///     }
///     other => panic!("expected a refusal, got {other:?}"),
/// }
/// ```
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Password(SecretString);

impl Password {
    /// Wraps a password as typed; it is normalized (NFKC) only when checked or hashed.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(SecretString::from(secret.into()))
    }

    /// What is checked and hashed: the password after [`normalize`].
    fn normalized(&self) -> String {
        normalize(self.0.expose_secret())
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Passwords are compared after Unicode NFKC normalization (NIST SP 800-63B §5.1.1.2), so the same
/// passphrase typed on two keyboards that compose characters differently is the same password.
fn normalize(password: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    password.nfkc().collect()
}

static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("common-passwords.txt")
        .lines()
        .filter(|l| !l.is_empty())
        .collect()
});

/// The rules a new password must meet: NIST SP 800-63B. A minimum length, a generous maximum, any
/// characters (spaces and Unicode included), no composition rules, and no password from the list of
/// the most common ones (exact match).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicy {
    /// In Unicode scalar values, after normalization. At least 8.
    pub min_length: usize,
    /// In Unicode scalar values; long passphrases must fit.
    pub max_length: usize,
    /// Refuse passwords on the built-in list of common passwords.
    pub refuse_common: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 8,
            max_length: 1024,
            refuse_common: true,
        }
    }
}

impl PasswordPolicy {
    /// Checks a new password (after NFKC normalization, lengths counted in Unicode scalar
    /// values). Fails with [`Error::Invalid`] for the field `password`; the message says what is
    /// wrong without echoing the password. Only new passwords are checked: a login never is, so
    /// tightening the policy locks no one out.
    ///
    /// ```
    /// use tessera_core::{Password, PasswordPolicy};
    ///
    /// let policy = PasswordPolicy::default();
    /// // Long enough, but on the list of the most common passwords.
    /// assert!(policy.check(&Password::new("12345678")).is_err());
    /// // Spaces and any script are fine; there are no composition rules.
    /// assert!(policy.check(&Password::new("ein langer Satz über Kühe")).is_ok());
    ///
    /// let lax = PasswordPolicy { refuse_common: false, ..PasswordPolicy::default() };
    /// assert!(lax.check(&Password::new("12345678")).is_ok());
    /// ```
    pub fn check(&self, password: &Password) -> Result<(), Error> {
        let normalized = password.normalized();
        let length = normalized.chars().count();
        if length < self.min_length {
            return Err(Error::invalid(
                "password",
                format!("must be at least {} characters long", self.min_length),
            ));
        }
        if length > self.max_length {
            return Err(Error::invalid(
                "password",
                format!("must be at most {} characters long", self.max_length),
            ));
        }
        if normalized.chars().any(|c| c == '\0') {
            return Err(Error::invalid(
                "password",
                "must not contain NUL characters",
            ));
        }
        if self.refuse_common && COMMON_PASSWORDS.contains(normalized.as_str()) {
            return Err(Error::invalid(
                "password",
                "is one of the most commonly used passwords; choose another",
            ));
        }
        Ok(())
    }

    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.min_length < 8 {
            return Err(("min_length", "must be at least 8".into()));
        }
        if self.max_length < 64 || self.max_length < self.min_length {
            return Err((
                "max_length",
                "must be at least 64 and at least min_length".into(),
            ));
        }
        Ok(())
    }
}

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Argon2Params {
    /// Memory in KiB (at least 19456).
    pub memory_kib: u32,
    /// Passes (at least 2).
    pub iterations: u32,
    /// Lanes (at least 1).
    pub parallelism: u32,
}

impl Default for Argon2Params {
    /// OWASP's recommendation for argon2id: m=19456 KiB, t=2, p=1.
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl Argon2Params {
    /// Refuses parameters weaker than the default.
    pub fn validate(&self) -> Result<(), String> {
        let min = Self::default();
        if self.memory_kib < min.memory_kib
            || self.iterations < min.iterations
            || self.parallelism < 1
        {
            return Err(format!(
                "argon2 parameters below the minimum (memory_kib >= {}, iterations >= {}, parallelism >= 1)",
                min.memory_kib, min.iterations
            ));
        }
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map(|_| ())
            .map_err(|e| format!("argon2 parameters rejected: {e}"))
    }

    /// Cheap parameters, so that test suites hash thousands of passwords quickly. Only built with
    /// the `test-util` feature, which the binary never enables.
    #[cfg(feature = "test-util")]
    pub fn insecure_fast_for_tests() -> Self {
        Self {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, PartialEq, Eq)]
pub enum Verification {
    /// The password does not match (or there was no stored hash to match).
    Invalid,
    /// The password matches.
    Valid {
        /// A new hash to store when the stored one used other parameters than the current ones.
        rehash: Option<String>,
    },
}

/// How the hasher may use the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashingLimits {
    /// Hashes computed at once (at least one), each on its own thread.
    pub max_concurrent: usize,
    /// How long a caller may wait for a slot before [`Error::Busy`].
    pub queue_timeout: Duration,
    /// The niceness (0–19) of the hashing threads on Linux: at 19 (the default) a thread
    /// serving requests gets about seventy times the CPU of a hashing thread it competes with,
    /// at 10 about nine times. 0 keeps the process's priority. Ignored elsewhere.
    pub niceness: i32,
}

/// The default niceness of the hashing threads: the lowest priority. Logins take the CPU that
/// requests of logged-in users leave (measured: `/v1/me` p99 during a flood of logins 1.56×
/// idle at 19, 2.08× at 10; logins per second the same when requests leave the CPU free).
pub const DEFAULT_HASHING_NICENESS: i32 = 19;

/// Hashes and verifies passwords with argon2id on the hasher's own threads, at most
/// `max_concurrent` at a time; callers that wait longer than `queue_timeout` get
/// [`Error::Busy`].
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<HasherInner>,
}

/// Work for a hashing thread.
type Job = Box<dyn FnOnce() + Send>;

struct HasherInner {
    params: Params,
    permits: Arc<Semaphore>,
    /// To the hashing threads; they stop when the hasher (this sender) is dropped.
    jobs: mpsc::Sender<Job>,
    /// Hashes running right now (for tests and metrics).
    in_flight: AtomicUsize,
    queue_timeout: Duration,
    /// A real hash of a random password, verified when the user does not exist so that the answer
    /// takes as long as for a wrong password.
    dummy_hash: String,
}

impl PasswordHasher {
    /// Builds a hasher. Parameters are not checked against the minimum here (tests use cheap ones):
    /// configuration loading calls [`Argon2Params::validate`].
    pub fn new(params: Argon2Params, limits: HashingLimits) -> Result<Self, Error> {
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))?;
        let random: [u8; 32] = crate::secret::random_bytes()?;
        let dummy_hash = argon2_for(&params)
            .hash_password(&random)
            .map_err(|e| Error::Internal(format!("argon2: {e}")))?
            .to_string();
        let threads = limits.max_concurrent.max(1);
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..threads {
            let receiver = Arc::clone(&receiver);
            let niceness = limits.niceness;
            std::thread::Builder::new()
                .name(format!("tessera-argon2-{n}"))
                .spawn(move || hashing_thread(&receiver, niceness))
                .map_err(|e| Error::Internal(format!("starting a password hashing thread: {e}")))?;
        }
        Ok(Self {
            inner: Arc::new(HasherInner {
                params,
                permits: Arc::new(Semaphore::new(threads)),
                jobs: sender,
                in_flight: AtomicUsize::new(0),
                queue_timeout: limits.queue_timeout,
                dummy_hash,
            }),
        })
    }

    /// Hashes a password into a PHC string.
    #[tracing::instrument(skip_all)]
    pub async fn hash(&self, password: &Password) -> Result<String, Error> {
        let normalized = password.normalized();
        self.run(move |inner| {
            argon2_for(&inner.params)
                .hash_password(normalized.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| Error::Internal(format!("argon2: {e}")))
        })
        .await
    }

    /// Verifies `password` against `stored` (a PHC string), or against the dummy hash when there is
    /// no stored hash, so both cases cost one argon2 computation.
    #[tracing::instrument(skip_all)]
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verification, Error> {
        let normalized = password.normalized();
        let stored = stored.map(str::to_owned);
        self.run(move |inner| {
            let (hash_str, real) = match &stored {
                Some(s) => (s.as_str(), true),
                None => (inner.dummy_hash.as_str(), false),
            };
            let Ok(parsed) = PasswordHash::new(hash_str) else {
                tracing::error!("a stored password hash does not parse; refusing the login");
                // Still spend the time, so a corrupt row is not distinguishable by timing.
                let _ = argon2_for(&inner.params)
                    .verify_password(normalized.as_bytes(), inner.dummy_hash.as_str());
                return Ok(Verification::Invalid);
            };
            let ok = Argon2::default()
                .verify_password(normalized.as_bytes(), &parsed)
                .is_ok();
            if !(ok && real) {
                return Ok(Verification::Invalid);
            }
            let current = Params::try_from(&parsed).ok();
            let same = parsed.algorithm == argon2::ARGON2ID_IDENT
                && current.is_some_and(|p| {
                    p.m_cost() == inner.params.m_cost()
                        && p.t_cost() == inner.params.t_cost()
                        && p.p_cost() == inner.params.p_cost()
                });
            let rehash = if same {
                None
            } else {
                argon2_for(&inner.params)
                    .hash_password(normalized.as_bytes())
                    .map(|h| h.to_string())
                    .ok()
            };
            Ok(Verification::Valid { rehash })
        })
        .await
    }

    /// How many hashes are being computed right now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&HasherInner) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let permit = tokio::time::timeout(
            self.inner.queue_timeout,
            Arc::clone(&self.inner.permits).acquire_owned(),
        )
        .await
        .map_err(|_| Error::Busy)?
        .map_err(|_| Error::Busy)?;
        let inner = Arc::clone(&self.inner);
        let (done, result) = tokio::sync::oneshot::channel();
        // The permit moves into the job: if the caller goes away (a client that disconnects),
        // the hash still holds its slot until it finishes, so the limit holds. A thread is free
        // for every permit, so a job never waits behind another.
        let job: Job = Box::new(move || {
            let running = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            metrics::gauge!("tessera_password_hashes_in_flight").set(running as f64);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&inner)));
            let running = inner.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
            metrics::gauge!("tessera_password_hashes_in_flight").set(running as f64);
            drop(permit);
            let _ = done.send(result);
        });
        self.inner
            .jobs
            .send(job)
            .map_err(|_| Error::Internal("the password hashing threads have stopped".into()))?;
        match result.await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Internal("password hashing panicked".into())),
            Err(_) => Err(Error::Internal("password hashing task failed".into())),
        }
    }
}

/// One hashing thread: lowers its own priority, then runs jobs until the hasher is dropped.
fn hashing_thread(jobs: &Mutex<mpsc::Receiver<Job>>, niceness: i32) {
    lower_priority(niceness);
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = match jobs.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        job();
    }
}

/// Linux keeps a niceness per thread: this one's, not the process's.
#[cfg(target_os = "linux")]
fn lower_priority(niceness: i32) {
    if niceness <= 0 {
        return;
    }
    let me = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(me), niceness.min(19)) {
        tracing::warn!(error = %e, "could not lower the priority of a password hashing thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_niceness: i32) {}

fn argon2_for(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> Argon2Params {
        Argon2Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn policy_accepts_long_unicode_passphrases_and_refuses_common_ones() {
        let policy = PasswordPolicy::default();
        assert!(
            policy
                .check(&Password::new("correct horse battery staple"))
                .is_ok()
        );
        assert!(policy.check(&Password::new("pässwörd ünïcödé 🦀")).is_ok());
        assert!(policy.check(&Password::new("x".repeat(200))).is_ok());
        assert!(policy.check(&Password::new("short")).is_err());
        assert!(policy.check(&Password::new("password1")).is_err());
        assert!(policy.check(&Password::new("iloveyou")).is_err());
        // Exact match only: a common password inside a longer one is fine.
        assert!(policy.check(&Password::new("password1 but longer")).is_ok());
        assert!(policy.check(&Password::new("y".repeat(1025))).is_err());
        let msg = policy
            .check(&Password::new("password1"))
            .unwrap_err()
            .to_string();
        assert!(
            !msg.contains("password1"),
            "the message must not echo the password: {msg}"
        );
    }

    #[test]
    fn the_common_list_has_thousands_of_entries() {
        assert!(COMMON_PASSWORDS.len() > 5000);
        assert!(COMMON_PASSWORDS.iter().all(|p| p.chars().count() >= 8));
    }

    #[test]
    fn length_counts_characters_after_normalization() {
        let policy = PasswordPolicy::default();
        // Seven characters, each two bytes: still too short.
        assert!(policy.check(&Password::new("ééééééé")).is_err());
    }

    #[test]
    fn minimum_params_are_enforced() {
        assert!(Argon2Params::default().validate().is_ok());
        assert!(fast().validate().is_err());
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = PasswordHasher::new(fast(), limits(2, Duration::from_secs(5))).unwrap();
        let hash = hasher.hash(&Password::new("correct horse")).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert_eq!(
            hasher
                .verify(&Password::new("correct horse"), Some(&hash))
                .await
                .unwrap(),
            Verification::Valid { rehash: None }
        );
        assert_eq!(
            hasher
                .verify(&Password::new("wrong horse"), Some(&hash))
                .await
                .unwrap(),
            Verification::Invalid
        );
        // No stored hash: always invalid, even for the dummy's own (unknown) password.
        assert_eq!(
            hasher
                .verify(&Password::new("correct horse"), None)
                .await
                .unwrap(),
            Verification::Invalid
        );
        assert_eq!(
            hasher
                .verify(&Password::new("x"), Some("not a hash"))
                .await
                .unwrap(),
            Verification::Invalid
        );
    }

    #[tokio::test]
    async fn composed_and_decomposed_forms_are_the_same_password() {
        let hasher = PasswordHasher::new(fast(), limits(2, Duration::from_secs(5))).unwrap();
        let hash = hasher
            .hash(&Password::new("caf\u{e9} au lait"))
            .await
            .unwrap();
        let v = hasher
            .verify(&Password::new("cafe\u{301} au lait"), Some(&hash))
            .await
            .unwrap();
        assert_eq!(v, Verification::Valid { rehash: None });
    }

    #[tokio::test]
    async fn changed_parameters_ask_for_a_rehash() {
        let old = PasswordHasher::new(fast(), limits(1, Duration::from_secs(5))).unwrap();
        let hash = old.hash(&Password::new("correct horse")).await.unwrap();
        let stronger = Argon2Params {
            memory_kib: 128,
            ..fast()
        };
        let new = PasswordHasher::new(stronger, limits(1, Duration::from_secs(5))).unwrap();
        match new
            .verify(&Password::new("correct horse"), Some(&hash))
            .await
            .unwrap()
        {
            Verification::Valid { rehash: Some(h) } => assert!(h.contains("m=128")),
            other => panic!("expected a rehash, got {other:?}"),
        }
    }

    /// Callers that give up (a client that disconnects) do not free their slot early: no more
    /// than `max_concurrent` hashes ever run at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_callers_keep_the_concurrency_limit() {
        let params = Argon2Params {
            memory_kib: 4096,
            iterations: 3,
            parallelism: 1,
        };
        let hasher = PasswordHasher::new(params, limits(1, Duration::from_secs(30))).unwrap();
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let h = hasher.clone();
            tasks.push(tokio::spawn(async move {
                h.hash(&Password::new("abandoned!")).await
            }));
        }
        let watcher = {
            let h = hasher.clone();
            tokio::spawn(async move {
                let mut max = 0;
                for _ in 0..400 {
                    max = max.max(h.in_flight());
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
                max
            })
        };
        tokio::time::sleep(Duration::from_millis(2)).await;
        // The first half give up (the one hashing among them); the rest keep waiting their turn.
        for t in &tasks[..6] {
            t.abort();
        }
        assert!(
            watcher.await.unwrap() <= 1,
            "more hashes than permits ran at once"
        );
        for t in tasks.drain(6..) {
            assert!(t.await.unwrap().is_ok());
        }
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy() {
        let params = Argon2Params {
            memory_kib: 8192,
            iterations: 4,
            parallelism: 1,
        };
        let hasher = PasswordHasher::new(params, limits(1, Duration::from_millis(1))).unwrap();
        let results = futures_join(
            (0..4)
                .map(|_| {
                    let h = hasher.clone();
                    tokio::spawn(async move { h.hash(&Password::new("busy busy")).await })
                })
                .collect(),
        )
        .await;
        assert!(results.iter().any(|r| matches!(r, Err(Error::Busy))));
        assert!(results.iter().any(|r| r.is_ok()));
    }

    /// The hashing threads run at the configured niceness, so the threads serving requests win
    /// the CPU from them.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_at_a_lower_priority() {
        let hasher = PasswordHasher::new(
            fast(),
            HashingLimits {
                max_concurrent: 2,
                queue_timeout: Duration::from_secs(5),
                niceness: 7,
            },
        )
        .unwrap();
        // Once a hash has run, at least one thread has started and set its priority.
        hasher.hash(&Password::new("correct horse")).await.unwrap();
        let niceness_of_hashing_threads: Vec<i64> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| {
                let path = task.ok()?.path();
                let name = std::fs::read_to_string(path.join("comm")).ok()?;
                if !name.starts_with("tessera-argon2") {
                    return None;
                }
                let stat = std::fs::read_to_string(path.join("stat")).ok()?;
                // Fields after the parenthesised name: state is field 3, nice is field 19.
                let after_name = &stat[stat.rfind(')')? + 2..];
                after_name.split(' ').nth(16)?.parse().ok()
            })
            .collect();
        assert!(
            niceness_of_hashing_threads.contains(&7),
            "no hashing thread at niceness 7: {niceness_of_hashing_threads:?}"
        );
        // Not the threads that serve requests (this test runs on one).
        let own = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let own_nice: i64 = own[own.rfind(')').unwrap() + 2..]
            .split(' ')
            .nth(16)
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            own_nice < 7,
            "the test's own thread is at niceness {own_nice}"
        );
    }

    fn limits(max_concurrent: usize, queue_timeout: Duration) -> HashingLimits {
        HashingLimits {
            max_concurrent,
            queue_timeout,
            niceness: DEFAULT_HASHING_NICENESS,
        }
    }

    async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }

    #[test]
    fn debug_never_shows_the_secret() {
        assert_eq!(
            format!("{:?}", Password::new("hunter22")),
            "Password(<redacted>)"
        );
    }
}
