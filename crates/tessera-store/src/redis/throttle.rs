//! Login throttling shared by every node: GCRA (the generic cell rate algorithm, as redis-cell and
//! governor implement it) in one script, on Redis's clock, so every node spends one budget.

use std::time::Duration;

use tessera_core::StoreError;

use super::scripts::{GCRA, GCRA_REFUND};
use super::{RedisStore, call};

impl RedisStore {
    /// Whether an attempt of `key` may go ahead (up to `burst` at once, regained at `per_minute`,
    /// both at least 1), spending it when it may and `spend` is set. `Ok(Err(retry_after))` when
    /// the budget is spent, with how long until the next attempt would be allowed. The key
    /// expires once it would no longer hold anything back.
    ///
    /// Callers fail closed: an `Err` (Redis unavailable) should refuse the login, not skip the
    /// check.
    pub async fn take_attempt(
        &self,
        key: &str,
        burst: u32,
        per_minute: u32,
        spend: bool,
    ) -> Result<Result<(), Duration>, StoreError> {
        let mut conn = self.conn();
        let (allowed, wait_micros): (i64, i64) = call(
            "take attempt",
            GCRA.call()
                .key(self.keys.throttle(key))
                .arg(burst.max(1))
                .arg(per_minute.max(1))
                .arg(u8::from(spend))
                .run(&mut conn),
        )
        .await?;
        if allowed == 1 {
            Ok(Ok(()))
        } else {
            let wait = u64::try_from(wait_micros).unwrap_or(0).max(1);
            Ok(Err(Duration::from_micros(wait)))
        }
    }
}

impl RedisStore {
    /// Gives back one attempt of `key` spent by [`RedisStore::take_attempt`] (at `per_minute`):
    /// the attempt turned out not to count (a correct password).
    pub async fn refund_attempt(&self, key: &str, per_minute: u32) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let _: i64 = call(
            "refund attempt",
            GCRA_REFUND
                .call()
                .key(self.keys.throttle(key))
                .arg(per_minute.max(1))
                .run(&mut conn),
        )
        .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl tessera_core::AttemptLimiter for RedisStore {
    async fn refund_attempt(
        &self,
        key: &str,
        per_minute: u32,
    ) -> Result<(), tessera_core::StoreError> {
        RedisStore::refund_attempt(self, key, per_minute).await
    }

    async fn take_attempt(
        &self,
        key: &str,
        burst: u32,
        per_minute: u32,
        spend: bool,
    ) -> Result<Result<(), std::time::Duration>, tessera_core::StoreError> {
        RedisStore::take_attempt(self, key, burst, per_minute, spend).await
    }
}
