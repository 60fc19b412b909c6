//! Login throttling per account and per client IP (GCRA, via governor). A client over the limit
//! gets 429 with `Retry-After`; there is no permanent lockout: the budget refills with time.
//!
//! The client IP is the socket's, unless the socket belongs to a configured trusted proxy; then it
//! is the right-most address of `X-Forwarded-For` that is not itself a trusted proxy.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use tessera_core::AttemptLimiter;

use crate::problem::ApiError;
use crate::state::AppState;

/// How fast login attempts may come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Attempts allowed at once.
    pub burst: u32,
    /// Attempts regained per minute.
    pub per_minute: u32,
}

/// Throttling settings.
#[derive(Clone, Debug)]
pub struct ThrottleConfig {
    pub per_account: Rate,
    pub per_ip: Rate,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
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
            trusted_proxies: Vec::new(),
        }
    }
}

/// The limiters: in process (one node), or a shared budget (Redis) so the limit holds across
/// nodes.
pub struct Throttle {
    per_account: DefaultKeyedRateLimiter<String>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    rates: (Rate, Rate),
    shared: Option<Arc<dyn AttemptLimiter>>,
    trusted_proxies: Vec<IpNet>,
    checks: AtomicU64,
}

fn quota(rate: Rate) -> Quota {
    let per_minute = NonZeroU32::new(rate.per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl Throttle {
    pub fn new(config: &ThrottleConfig, shared: Option<Arc<dyn AttemptLimiter>>) -> Self {
        Self {
            per_account: RateLimiter::keyed(quota(config.per_account)),
            per_ip: RateLimiter::keyed(quota(config.per_ip)),
            rates: (config.per_ip, config.per_account),
            shared,
            trusted_proxies: config.trusted_proxies.clone(),
            checks: AtomicU64::new(0),
        }
    }

    /// Spends one attempt of `ip` and, when given, of `account`; a 429 when either is exhausted.
    /// With a shared budget that cannot be reached, a 503: fail closed.
    pub async fn check(&self, ip: Option<IpAddr>, account: Option<&str>) -> Result<(), ApiError> {
        let account = account.map(normalize_account);
        let Some(shared) = &self.shared else {
            return self.check_local(ip, account.as_deref());
        };
        let (per_ip, per_account) = self.rates;
        if let Some(ip) = ip
            && let Err(wait) = shared
                .take_attempt(&format!("ip:{ip}"), per_ip.burst, per_ip.per_minute)
                .await?
        {
            return Err(too_many(wait, "from this address"));
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
            return Err(too_many(wait, "for this account"));
        }
        Ok(())
    }

    fn check_local(&self, ip: Option<IpAddr>, account: Option<&str>) -> Result<(), ApiError> {
        // Forget idle keys now and then, so the maps do not grow without bound.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.per_account.retain_recent();
            self.per_ip.retain_recent();
        }
        let clock = DefaultClock::default();
        if let Some(ip) = ip
            && let Err(not_until) = self.per_ip.check_key(&ip)
        {
            return Err(too_many(
                not_until.wait_time_from(clock.now()),
                "from this address",
            ));
        }
        if let Some(account) = account
            && let Err(not_until) = self.per_account.check_key(&account.to_owned())
        {
            return Err(too_many(
                not_until.wait_time_from(clock.now()),
                "for this account",
            ));
        }
        Ok(())
    }

    /// The client's address: see the module documentation.
    pub fn client_ip(&self, socket: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let socket = socket?;
        if !self.trusts(socket) {
            return Some(socket);
        }
        let Some(list) = forwarded_for else {
            return Some(socket);
        };
        let mut client = socket;
        for hop in list.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !self.trusts(ip) {
                        break;
                    }
                }
                // A malformed entry: stop at the last address we could read.
                Err(_) => break,
            }
        }
        Some(client)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// The name as login normalizes it (NFKC, lower case), so "ａｌｉｃｅ" spends alice's budget; a
/// name that cannot parse is throttled as typed.
fn normalize_account(account: &str) -> String {
    tessera_core::Username::parse(account)
        .map(|u| u.as_str().to_owned())
        .unwrap_or_else(|_| account.trim().to_lowercase())
}

fn too_many(wait: std::time::Duration, what: &str) -> ApiError {
    let scope = if what.contains("account") {
        "account"
    } else {
        "address"
    };
    metrics::counter!("tessera_throttled_total", "scope" => scope).increment(1);
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-attempts",
        format!("too many login attempts {what}; try again in {seconds} s"),
    )
    .with_header(
        header::RETRY_AFTER,
        HeaderValue::from_str(&seconds.max(1).to_string()).unwrap_or(HeaderValue::from_static("1")),
    )
}

/// The client's IP address as the throttle sees it.
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let socket = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Ok(Self(state.0.throttle.client_ip(socket, forwarded)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(proxies: &[&str]) -> Throttle {
        Throttle::new(
            &ThrottleConfig {
                per_account: Rate {
                    burst: 3,
                    per_minute: 1,
                },
                per_ip: Rate {
                    burst: 5,
                    per_minute: 1,
                },
                trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
            },
            None,
        )
    }

    #[test]
    fn accounts_and_addresses_have_separate_budgets() {
        let t = throttle(&[]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            t.check_local(Some(ip), Some("alice")).unwrap();
        }
        let err = t.check_local(Some(ip), Some("alice")).unwrap_err();
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        // Another account from the same address still has budget, until the address runs out.
        t.check_local(Some(ip), Some("bob")).unwrap();
        assert!(t.check_local(Some(ip), Some("carol")).is_err());
        assert!(
            t.check_local(Some("192.0.2.2".parse().unwrap()), Some("carol"))
                .is_ok()
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let t = throttle(&["10.0.0.0/8"]);
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(t.client_ip(Some(stranger), Some("1.2.3.4")), Some(stranger));
        assert_eq!(t.client_ip(Some(proxy), Some("203.0.113.9")), Some(client));
        // A client cannot spoof its way in by prepending addresses.
        assert_eq!(
            t.client_ip(Some(proxy), Some("1.1.1.1, 203.0.113.9, 10.0.0.5")),
            Some(client)
        );
        assert_eq!(t.client_ip(Some(proxy), None), Some(proxy));
        assert_eq!(t.client_ip(Some(proxy), Some("garbage")), Some(proxy));
    }
}
