//! Binding hints: a login (a session, a refresh family) used from a new network *and* a new user
//! agent at once is most likely a copied credential in someone else's browser. It is recorded in
//! the audit log (once per login and new place, per node) and, with
//! [`NewContextPolicy::StepUp`], must show a recent second factor before it goes on.
//!
//! One of the two changing alone is ordinary (a phone moving from Wi-Fi to a mobile network, a
//! browser updating itself), so it is never flagged. A network is an IPv4 /24 or an IPv6 /48;
//! a user agent is compared without its version numbers and case, so an update is the same
//! browser.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{Audit, EventKind};
use crate::session::{ClientInfo, UserAgent};
use crate::token::refresh::LoginModel;
use crate::user::UserId;

/// What a login used from a new network and user agent at once must do
/// (`accounts.new_context`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NewContextPolicy {
    /// Recorded in the audit log (`login_context_changed`); the login goes on.
    #[default]
    Record,
    /// Recorded, and the login must show a second factor used within
    /// `accounts.privileged_max_age` (step up) before it goes on; an account without a second
    /// factor logs in again.
    StepUp,
}

/// Whether two addresses are on one network: the same IPv4 /24 or IPv6 /48 (an IPv4-mapped IPv6
/// address is its IPv4 address).
pub fn same_network(a: IpAddr, b: IpAddr) -> bool {
    match (a.to_canonical(), b.to_canonical()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..3] == b.segments()[..3],
        _ => false,
    }
}

/// A user agent without its version numbers, in lower case: the browser and platform it names.
fn agent_family(agent: &UserAgent) -> String {
    agent
        .as_str()
        .chars()
        .filter(|c| !c.is_ascii_digit() && *c != '.' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether `seen` is a new network *and* a new user agent for a login made as `recorded`. What
/// either side does not know (no address, no `User-Agent`) counts as unchanged.
pub fn moved(recorded: &ClientInfo, seen: &ClientInfo) -> bool {
    // Checked on every request with a session: the cheap comparisons first, and nothing
    // allocated unless both the network and the exact user agent differ.
    let new_network = matches!((recorded.ip, seen.ip), (Some(a), Some(b)) if !same_network(a, b));
    new_network
        && matches!(
            (&recorded.user_agent, &seen.user_agent),
            (Some(a), Some(b)) if a != b && agent_family(a) != agent_family(b)
        )
}

/// Watches logins for use from a new network and user agent at once: records each login's new
/// place once per node (a bounded memory of what was recorded, so a busy copied session does
/// not write an event per request).
#[derive(Clone)]
pub struct LoginContexts {
    policy: NewContextPolicy,
    audit: Audit,
    recorded: Arc<quick_cache::sync::Cache<[u8; 32], ()>>,
}

/// How many (login, place) pairs a node remembers having recorded.
const RECORDED_CAPACITY: usize = 100_000;

impl LoginContexts {
    /// Built by [`crate::Services::build`].
    pub fn new(policy: NewContextPolicy, audit: Audit) -> Self {
        Self {
            policy,
            audit,
            recorded: Arc::new(quick_cache::sync::Cache::new(RECORDED_CAPACITY)),
        }
    }

    /// The configured policy.
    pub fn policy(&self) -> NewContextPolicy {
        self.policy
    }

    /// Checks a use of `login` (a session handle or a family id) of `user`, made as `recorded`
    /// and used now as `seen`: `true` when it moved (a new network and user agent at once), in
    /// which case the first such use per node is recorded in the audit log.
    pub async fn observe(
        &self,
        login: &str,
        user: &UserId,
        model: LoginModel,
        recorded: &ClientInfo,
        seen: &ClientInfo,
    ) -> bool {
        if !moved(recorded, seen) {
            return false;
        }
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        digest.update(login.as_bytes());
        digest.update(b"\0");
        if let Some(ip) = seen.ip {
            digest.update(ip.to_string().as_bytes());
        }
        digest.update(b"\0");
        if let Some(agent) = &seen.user_agent {
            digest.update(agent.as_str().as_bytes());
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.finish().as_ref());
        if self.recorded.get(&key).is_none() {
            self.recorded.insert(key, ());
            tracing::warn!(%login, %user, "a login used from a new network and user agent at once");
            self.audit
                .record(
                    EventKind::LoginContextChanged,
                    Some(user),
                    json!({
                        "login": login,
                        "model": model,
                        "ip": seen.ip,
                        "user_agent": seen.user_agent.as_ref().map(UserAgent::as_str),
                        "was": {
                            "ip": recorded.ip,
                            "user_agent": recorded.user_agent.as_ref().map(UserAgent::as_str),
                        },
                        "policy": self.policy,
                    }),
                )
                .await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: &str, agent: &str) -> ClientInfo {
        ClientInfo {
            ip: Some(ip.parse().unwrap()),
            user_agent: Some(UserAgent::new(agent)),
        }
    }

    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
    const FIREFOX_NEXT: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:134.0) Gecko/20100101 Firefox/134.0.1";
    const CURL: &str = "curl/8.5.0";

    #[test]
    fn only_a_new_network_and_a_new_agent_together_are_a_move() {
        let home = client("192.0.2.10", FIREFOX);
        assert!(!moved(&home, &client("192.0.2.77", FIREFOX)), "same /24");
        assert!(
            !moved(&home, &client("198.51.100.7", FIREFOX)),
            "new network only"
        );
        assert!(!moved(&home, &client("192.0.2.10", CURL)), "new agent only");
        assert!(
            !moved(&home, &client("198.51.100.7", FIREFOX_NEXT)),
            "a browser update on another network is the same browser"
        );
        assert!(moved(&home, &client("198.51.100.7", CURL)));
        let v6 = client("2001:db8:1:2::1", FIREFOX);
        assert!(!moved(&v6, &client("2001:db8:1:ffff::9", CURL)), "same /48");
        assert!(moved(&v6, &client("2001:db8:2::1", CURL)));
        assert!(
            !moved(&home, &client("::ffff:192.0.2.99", CURL)),
            "an IPv4-mapped address is its IPv4 address"
        );
        assert!(
            !moved(&ClientInfo::default(), &client("198.51.100.7", CURL)),
            "nothing recorded: nothing to compare"
        );
    }
}
