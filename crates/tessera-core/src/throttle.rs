//! Login throttling per client address and per account (GCRA: the generic cell rate algorithm). A
//! client over a limit gets [`Error::Throttled`] (a 429 with `Retry-After` over HTTP); there is no
//! permanent lockout: a budget refills with time.
//!
//! The two budgets are spent differently, so that throttling cannot be turned against a user:
//! - every attempt from an address spends that address's budget (logins, registrations, refreshes,
//!   password changes): one client cannot flood the server or grow its store without bound;
//! - only a *failed* attempt spends an account's budget, and a login is refused only while that
//!   budget is spent: a user who logs in often is never throttled, and guessing at an account is
//!   slowed down wherever the guesses come from.
//!
//! IPv6 clients are budgeted per network (a /64 by default: one subscriber usually holds a whole
//! /64), and an IPv4-mapped IPv6 address counts as the IPv4 address it carries.
//!
//! One node keeps its budgets in process; nodes that share Redis spend one shared budget
//! ([`AttemptLimiter`]), so the limits hold across the cluster.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::store::AttemptLimiter;
use crate::user::Username;

/// How fast attempts may come.
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
    /// Failed attempts against one account, from anywhere.
    pub per_account: Rate,
    /// Attempts from one client address (or IPv6 network), against any account: logins,
    /// registrations and password changes.
    pub per_ip: Rate,
    /// Refreshes (token and hybrid) from one client address: budgeted apart from logins, since
    /// every open tab refreshes, and many users may share an address behind a NAT.
    pub refresh_per_ip: Rate,
    /// Mails asked for one account or address (recovery and verification codes): every request
    /// spends it, whether or not the account exists, so neither a mailbox can be flooded nor the
    /// limit tell accounts apart.
    pub mail_per_account: Rate,
    /// The prefix length that makes one IPv6 client: every address in the same network shares a
    /// budget. 64 by default; 128 budgets each address on its own.
    pub ipv6_prefix: u8,
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
            refresh_per_ip: Rate {
                burst: 120,
                per_minute: 600,
            },
            mail_per_account: Rate {
                burst: 3,
                per_minute: 1,
            },
            ipv6_prefix: 64,
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
    /// The mails asked for one account or address.
    Mail,
}

impl ThrottleScope {
    /// The label of the scope in metrics and problem documents.
    pub fn as_str(self) -> &'static str {
        match self {
            ThrottleScope::Address => "address",
            ThrottleScope::Account => "account",
            ThrottleScope::Mail => "mail",
        }
    }
}

/// The attempt budgets: in process (one node), or shared (Redis) across nodes.
pub struct Throttle {
    addresses: Gcra,
    refreshes: Gcra,
    accounts: Gcra,
    mails: Gcra,
    config: ThrottleConfig,
    shared: Option<Arc<dyn AttemptLimiter>>,
}

impl Throttle {
    /// Budgets as `config` says; `shared`, when given, replaces the in-process ones.
    pub fn new(config: ThrottleConfig, shared: Option<Arc<dyn AttemptLimiter>>) -> Self {
        Self {
            addresses: Gcra::new(config.per_ip),
            refreshes: Gcra::new(config.refresh_per_ip),
            accounts: Gcra::new(config.per_account),
            mails: Gcra::new(config.mail_per_account),
            config,
            shared,
        }
    }

    /// Spends one attempt of the client's address: [`Error::Throttled`] when its budget is
    /// spent. With a shared budget that cannot be reached, a store error: fail closed.
    pub async fn spend_address(&self, ip: Option<IpAddr>) -> Result<(), Error> {
        self.spend(ip, "ip", &self.addresses, self.config.per_ip)
            .await
    }

    /// Spends one refresh of the client's address (its own budget, apart from logins).
    pub async fn spend_refresh(&self, ip: Option<IpAddr>) -> Result<(), Error> {
        self.spend(
            ip,
            "refresh-ip",
            &self.refreshes,
            self.config.refresh_per_ip,
        )
        .await
    }

    async fn spend(
        &self,
        ip: Option<IpAddr>,
        kind: &str,
        local: &Gcra,
        rate: Rate,
    ) -> Result<(), Error> {
        let Some(ip) = ip else {
            return Ok(());
        };
        let key = format!("{kind}:{}", self.address_key(ip));
        let outcome = match &self.shared {
            None => local.attempt(&key, true),
            Some(shared) => {
                shared
                    .take_attempt(&key, rate.burst, rate.per_minute, true)
                    .await?
            }
        };
        throttled(outcome, ThrottleScope::Address)
    }

    /// Spends one attempt of `account`'s budget, refusing while it is spent. `device` is the id
    /// of a device that logged in to this account before (a verified device token): it has a
    /// budget of its own, so that someone guessing at the account from elsewhere cannot keep its
    /// owner out.
    ///
    /// The attempt is spent before the password is checked, in one step, so that guesses sent all
    /// at once cannot all pass a check made before the first of them fails; only failures count
    /// in the end: give the attempt back with [`Throttle::refund_account`] when the password was
    /// right (or was never checked).
    pub async fn spend_account(&self, account: &str, device: Option<&str>) -> Result<(), Error> {
        let key = account_key(account, device);
        let outcome = match &self.shared {
            None => self.accounts.attempt(&key, true),
            Some(shared) => {
                let rate = self.config.per_account;
                shared
                    .take_attempt(&key, rate.burst, rate.per_minute, true)
                    .await?
            }
        };
        throttled(outcome, ThrottleScope::Account)
    }

    /// Gives back the attempt [`Throttle::spend_account`] spent: it was not a wrong password.
    pub async fn refund_account(&self, account: &str, device: Option<&str>) -> Result<(), Error> {
        let key = account_key(account, device);
        match &self.shared {
            None => self.accounts.refund(&key),
            Some(shared) => {
                shared
                    .refund_attempt(&key, self.config.per_account.per_minute)
                    .await?;
            }
        }
        Ok(())
    }

    /// Spends one mail of `target`'s budget: the account or address a recovery or verification
    /// mail is asked for, as typed (normalized as login normalizes names), or an account id.
    /// [`Error::Throttled`] (scope account) when it is spent.
    pub async fn spend_mail(&self, target: &str) -> Result<(), Error> {
        let key = format!("mail:{}", normalize_account(target));
        let outcome = match &self.shared {
            None => self.mails.attempt(&key, true),
            Some(shared) => {
                let rate = self.config.mail_per_account;
                shared
                    .take_attempt(&key, rate.burst, rate.per_minute, true)
                    .await?
            }
        };
        throttled(outcome, ThrottleScope::Mail)
    }

    /// The budget an address spends: an IPv4 address; an IPv6 address's network of
    /// `ipv6_prefix` bits; an IPv4-mapped IPv6 address as the IPv4 address it carries.
    fn address_key(&self, ip: IpAddr) -> String {
        match ip.to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let prefix = u32::from(self.config.ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                let network = std::net::Ipv6Addr::from(u128::from(v6) & mask);
                format!("{network}/{prefix}")
            }
        }
    }
}

fn throttled(outcome: Result<(), Duration>, scope: ThrottleScope) -> Result<(), Error> {
    outcome.map_err(|retry_after| {
        metrics::counter!("tessera_throttled_total", "scope" => scope.as_str()).increment(1);
        Error::Throttled { retry_after, scope }
    })
}

/// The budget key of an account, or of one of its devices.
fn account_key(account: &str, device: Option<&str>) -> String {
    let account = normalize_account(account);
    match device {
        Some(device) => format!("acct:{account}:device:{device}"),
        None => format!("acct:{account}"),
    }
}

/// The name as login normalizes it (NFKC, lower case), so "ａｌｉｃｅ" spends alice's budget; a
/// name that cannot parse is throttled as typed.
pub fn normalize_account(account: &str) -> String {
    Username::parse(account)
        .map(|u| u.as_str().to_owned())
        .unwrap_or_else(|_| account.trim().to_lowercase())
}

/// Keyed budgets in process: for each key, the theoretical arrival time of its next attempt
/// (GCRA). An attempt is allowed while that time is at most `burst - 1` intervals ahead of now.
struct Gcra {
    cells: Mutex<HashMap<String, Instant>>,
    interval: Duration,
    burst: u32,
    checks: AtomicU64,
}

impl Gcra {
    fn new(rate: Rate) -> Self {
        Self {
            cells: Mutex::new(HashMap::new()),
            interval: Duration::from_secs(60) / rate.per_minute.max(1),
            burst: rate.burst.max(1),
            checks: AtomicU64::new(0),
        }
    }

    /// Whether an attempt of `key` may go ahead now (`Err` holds how long until one may), and,
    /// when it may and `spend` is set, spends it.
    fn attempt(&self, key: &str, spend: bool) -> Result<(), Duration> {
        let now = Instant::now();
        let mut cells = self
            .cells
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget keys that hold nothing back now and then, so the map does not grow without
        // bound.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            cells.retain(|_, tat| *tat > now);
        }
        let tat = cells.get(key).copied().unwrap_or(now).max(now);
        let tolerance = self.interval * (self.burst - 1);
        if tat > now + tolerance {
            return Err(tat - tolerance - now);
        }
        if spend {
            cells.insert(key.to_owned(), tat + self.interval);
        }
        Ok(())
    }

    /// Gives back one attempt of `key`: its theoretical arrival time moves back one interval,
    /// never before now.
    fn refund(&self, key: &str) {
        let now = Instant::now();
        let mut cells = self
            .cells
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tat) = cells.get_mut(key) {
            *tat = tat.checked_sub(self.interval).unwrap_or(now).max(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mail_budgets_are_kept_per_target_as_typed_and_normalized() {
        let t = throttle(64);
        t.spend_mail("Alice").await.unwrap();
        t.spend_mail("ａｌｉｃｅ").await.unwrap();
        assert!(matches!(
            t.spend_mail("alice").await,
            Err(Error::Throttled {
                scope: ThrottleScope::Mail,
                ..
            })
        ));
        // Another target has its own budget, and logins do not share it.
        t.spend_mail("bob@example.org").await.unwrap();
        t.spend_account("alice", None).await.unwrap();
    }

    fn throttle(prefix: u8) -> Throttle {
        Throttle::new(
            ThrottleConfig {
                per_account: Rate {
                    burst: 3,
                    per_minute: 1,
                },
                per_ip: Rate {
                    burst: 2,
                    per_minute: 1,
                },
                refresh_per_ip: Rate {
                    burst: 1,
                    per_minute: 1,
                },
                mail_per_account: Rate {
                    burst: 2,
                    per_minute: 1,
                },
                ipv6_prefix: prefix,
            },
            None,
        )
    }

    #[tokio::test]
    async fn only_failures_spend_an_accounts_budget() {
        let t = throttle(64);
        // Attempts given back (right passwords) never run the budget down.
        for _ in 0..10 {
            t.spend_account("alice", None).await.unwrap();
            t.refund_account("alice", None).await.unwrap();
        }
        // Three kept (wrong passwords): the fourth is refused, however spelled.
        for _ in 0..3 {
            t.spend_account("alice", None).await.unwrap();
        }
        assert!(matches!(
            t.spend_account("ALICE", None).await,
            Err(Error::Throttled {
                scope: ThrottleScope::Account,
                ..
            })
        ));
        t.spend_account("bob", None).await.unwrap();
        // A device alice logged in from before keeps its own budget.
        for _ in 0..3 {
            t.spend_account("alice", Some("dev1")).await.unwrap();
        }
        assert!(t.spend_account("alice", Some("dev1")).await.is_err());
        t.spend_account("alice", Some("dev2")).await.unwrap();
    }

    #[tokio::test]
    async fn addresses_spend_per_ipv4_and_per_ipv6_network() {
        let t = throttle(64);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        t.spend_address(ip("192.0.2.1")).await.unwrap();
        // The same IPv4 address, mapped into IPv6.
        t.spend_address(ip("::ffff:192.0.2.1")).await.unwrap();
        assert!(t.spend_address(ip("192.0.2.1")).await.is_err());
        t.spend_address(ip("2001:db8:1:2::1")).await.unwrap();
        t.spend_address(ip("2001:db8:1:2:ffff::9")).await.unwrap();
        assert!(
            t.spend_address(ip("2001:db8:1:2::77")).await.is_err(),
            "one /64, one budget"
        );
        t.spend_address(ip("2001:db8:1:3::1")).await.unwrap();
        let each = throttle(128);
        each.spend_address(ip("2001:db8::1")).await.unwrap();
        each.spend_address(ip("2001:db8::1")).await.unwrap();
        each.spend_address(ip("2001:db8::2")).await.unwrap();
        // Refreshes have their own budget.
        t.spend_refresh(ip("192.0.2.1")).await.unwrap();
        assert!(t.spend_refresh(ip("192.0.2.1")).await.is_err());
    }
}
