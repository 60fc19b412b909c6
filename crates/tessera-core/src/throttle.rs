//! Login throttling per account and per client address (GCRA, via governor). A client over the
//! limit gets [`Error::Throttled`] (a 429 with `Retry-After` over HTTP); there is no permanent
//! lockout: the budget refills with time.
//!
//! One node keeps its budgets in process; nodes that share Redis spend one shared budget
//! ([`AttemptLimiter`]), so the limit holds across the cluster.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::Error;
use crate::store::AttemptLimiter;
use crate::user::Username;

/// How fast login attempts may come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Attempts allowed at once.
    pub burst: u32,
    /// Attempts regained per minute.
    pub per_minute: u32,
}

/// Throttling settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Attempts against one account, from anywhere.
    pub per_account: Rate,
    /// Attempts from one client address, against any account.
    pub per_ip: Rate,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            per_account: Rate {
                burst: 10,
                per_minute: 10,
            },
            per_ip: Rate {
                burst: 30,
                per_minute: 60,
            },
        }
    }
}

/// Which budget ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThrottleScope {
    /// The client address's.
    Address,
    /// The account's.
    Account,
}

impl ThrottleScope {
    /// The label of the scope in metrics and problem documents.
    pub fn as_str(self) -> &'static str {
        match self {
            ThrottleScope::Address => "address",
            ThrottleScope::Account => "account",
        }
    }
}

/// The login-attempt budgets: in process (one node), or shared (Redis) across nodes.
pub struct Throttle {
    per_account: DefaultKeyedRateLimiter<String>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    config: ThrottleConfig,
    shared: Option<Arc<dyn AttemptLimiter>>,
    checks: AtomicU64,
}

fn quota(rate: Rate) -> Quota {
    let per_minute = NonZeroU32::new(rate.per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl Throttle {
    /// Budgets as `config` says; `shared`, when given, replaces the in-process ones.
    pub fn new(config: ThrottleConfig, shared: Option<Arc<dyn AttemptLimiter>>) -> Self {
        Self {
            per_account: RateLimiter::keyed(quota(config.per_account)),
            per_ip: RateLimiter::keyed(quota(config.per_ip)),
            config,
            shared,
            checks: AtomicU64::new(0),
        }
    }

    /// Spends one attempt of `ip` and, when given, of `account`; [`Error::Throttled`] when either
    /// is exhausted. With a shared budget that cannot be reached, a store error: fail closed.
    pub async fn check(&self, ip: Option<IpAddr>, account: Option<&str>) -> Result<(), Error> {
        let account = account.map(normalize_account);
        let outcome = match &self.shared {
            None => self.check_local(ip, account.as_deref()),
            Some(shared) => self.check_shared(&**shared, ip, account.as_deref()).await?,
        };
        outcome.map_err(|(retry_after, scope)| {
            metrics::counter!("tessera_throttled_total", "scope" => scope.as_str()).increment(1);
            Error::Throttled { retry_after, scope }
        })
    }

    async fn check_shared(
        &self,
        shared: &dyn AttemptLimiter,
        ip: Option<IpAddr>,
        account: Option<&str>,
    ) -> Result<Result<(), (Duration, ThrottleScope)>, Error> {
        let ThrottleConfig {
            per_ip,
            per_account,
        } = self.config;
        if let Some(ip) = ip
            && let Err(wait) = shared
                .take_attempt(&format!("ip:{ip}"), per_ip.burst, per_ip.per_minute)
                .await?
        {
            return Ok(Err((wait, ThrottleScope::Address)));
        }
        if let Some(account) = account
            && let Err(wait) = shared
                .take_attempt(
                    &format!("acct:{account}"),
                    per_account.burst,
                    per_account.per_minute,
                )
                .await?
        {
            return Ok(Err((wait, ThrottleScope::Account)));
        }
        Ok(Ok(()))
    }

    fn check_local(
        &self,
        ip: Option<IpAddr>,
        account: Option<&str>,
    ) -> Result<(), (Duration, ThrottleScope)> {
        // Forget idle keys now and then, so the maps do not grow without bound.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.per_account.retain_recent();
            self.per_ip.retain_recent();
        }
        let clock = DefaultClock::default();
        if let Some(ip) = ip
            && let Err(not_until) = self.per_ip.check_key(&ip)
        {
            return Err((
                not_until.wait_time_from(clock.now()),
                ThrottleScope::Address,
            ));
        }
        if let Some(account) = account
            && let Err(not_until) = self.per_account.check_key(&account.to_owned())
        {
            return Err((
                not_until.wait_time_from(clock.now()),
                ThrottleScope::Account,
            ));
        }
        Ok(())
    }
}

/// The name as login normalizes it (NFKC, lower case), so "ａｌｉｃｅ" spends alice's budget; a
/// name that cannot parse is throttled as typed.
fn normalize_account(account: &str) -> String {
    Username::parse(account)
        .map(|u| u.as_str().to_owned())
        .unwrap_or_else(|_| account.trim().to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(
            ThrottleConfig {
                per_account: Rate {
                    burst: 3,
                    per_minute: 1,
                },
                per_ip: Rate {
                    burst: 5,
                    per_minute: 1,
                },
            },
            None,
        )
    }

    #[test]
    fn accounts_and_addresses_have_separate_budgets() {
        let t = throttle();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            t.check_local(Some(ip), Some("alice")).unwrap();
        }
        let (_, scope) = t.check_local(Some(ip), Some("alice")).unwrap_err();
        assert_eq!(scope, ThrottleScope::Account);
        // Another account from the same address still has budget, until the address runs out.
        t.check_local(Some(ip), Some("bob")).unwrap();
        assert!(t.check_local(Some(ip), Some("carol")).is_err());
        assert!(
            t.check_local(Some("192.0.2.2".parse().unwrap()), Some("carol"))
                .is_ok()
        );
    }
}
