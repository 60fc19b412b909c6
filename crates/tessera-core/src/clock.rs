//! Time, injected: services never read the system clock directly, so tests move time forward instead
//! of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time, as milliseconds since the Unix epoch (UTC). Serialized as RFC 3339.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `ms` milliseconds after the Unix epoch (negative is before it).
    pub const fn from_unix_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch: the form stores persist.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch (rounded down).
    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// This instant moved `d` later (an expiry from a lifetime); clamps at the end of
    /// representable time instead of overflowing.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// This instant moved `d` earlier; clamps instead of overflowing.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// RFC 3339 in UTC (`2025-11-26T10:49:10.123Z`), the form used in JSON; falls back to the
    /// raw millisecond count if the instant is outside the calendar `time` can format.
    pub fn to_rfc3339(self) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| self.0.to_string())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = OffsetDateTime::parse(&s, &Rfc3339).map_err(serde::de::Error::custom)?;
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(ms)
            .map(Timestamp)
            .map_err(serde::de::Error::custom)
    }
}

/// The source of the current time. Every service reads the time only through it, so a test can
/// drive expiry with a [`ManualClock`] instead of sleeping; the server uses [`SystemClock`].
pub trait Clock: Send + Sync + 'static {
    /// The current time; every expiry and `created_at` in the services is read from here.
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        // Read on every request (expiry checks): the milliseconds since the epoch straight from
        // the system clock, without the calendar arithmetic of a date-time type.
        let ms = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
        };
        Timestamp(ms)
    }
}

/// A clock that only moves when told to; shared by cloning.
///
/// ```
/// use std::time::Duration;
/// use tessera_core::{Clock, ManualClock};
/// let clock = ManualClock::starting_at_millis(1_000);
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now().unix_millis(), 3_000);
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A manual clock that reads `ms` milliseconds since the epoch until advanced.
    pub fn starting_at_millis(ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(ms)))
    }

    /// A manual clock set to the real time now.
    pub fn starting_now() -> Self {
        Self::starting_at_millis(SystemClock.now().unix_millis())
    }

    /// Moves the clock forward by `d`, for every clone at once.
    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::from_unix_millis(1_764_154_150_123);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2025-11-26T10:49:10.123Z\"");
        let back: Timestamp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn since_is_never_negative() {
        let a = Timestamp::from_unix_millis(10);
        let b = Timestamp::from_unix_millis(20);
        assert_eq!(b.since(a), Duration::from_millis(10));
        assert_eq!(a.since(b), Duration::ZERO);
    }
}
