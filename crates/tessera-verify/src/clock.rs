//! Wall-clock time, injected so tests can move it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Where the verifier reads the current time for `exp`, `nbf` and revocation expiry.
///
/// The default, [`SystemClock`], reads the system clock. Tests supply their own to move time
/// forward instead of sleeping.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_unix_millis(&self) -> i64;
}

/// The system's wall clock: what a verifier uses unless given another [`Clock`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_millis(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            // A clock set before 1970 makes every token look not yet valid: refused, not accepted.
            Err(_) => 0,
        }
    }
}
