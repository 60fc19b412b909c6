//! The client's address, as the login throttle and the audit log see it: the socket's, unless the
//! socket belongs to a configured trusted proxy; then the right-most address of `X-Forwarded-For`
//! that is not itself a trusted proxy (a client cannot spoof its way in by prepending addresses).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use ipnet::IpNet;

use crate::state::AppState;

/// The client's IP address (see the module documentation).
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts, state))
    }
}

impl ClientIp {
    /// The client's address of a request with these parts.
    pub(crate) fn of(parts: &Parts, state: &AppState) -> Self {
        let socket = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        if socket.is_none() {
            warn_once_without_address();
        }
        // Every header line, in order: proxies may append a line rather than extend one, and
        // reading only the first would believe what the client wrote.
        let lines: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().unwrap_or("garbage"))
            .collect();
        let forwarded = (!lines.is_empty()).then(|| lines.join(","));
        Self(client_ip(
            &state.0.config.trusted_proxies,
            socket,
            forwarded.as_deref(),
        ))
    }
}

/// Says once per process that requests come without the client's socket address.
fn warn_once_without_address() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "requests carry no client address: the login throttle cannot count per address and \
             logins record none; serve with tessera_http::serve (or Tessera::serve), or give \
             axum::serve the router's into_make_service_with_connect_info::<SocketAddr>()"
        );
    });
}

/// The client's address given the socket's and `X-Forwarded-For`.
fn client_ip(
    trusted_proxies: &[IpNet],
    socket: Option<IpAddr>,
    forwarded_for: Option<&str>,
) -> Option<IpAddr> {
    let trusts = |ip: IpAddr| is_trusted_proxy(trusted_proxies, ip);
    let socket = socket?.to_canonical();
    if !trusts(socket) {
        return Some(socket);
    }
    let Some(list) = forwarded_for else {
        return Some(socket);
    };
    let mut client = socket;
    for hop in list.rsplit(',') {
        match parse_hop(hop.trim()) {
            Some(ip) => {
                client = ip.to_canonical();
                if !trusts(ip) {
                    break;
                }
            }
            // A malformed entry: stop at the last address we could read.
            None => break,
        }
    }
    Some(client)
}

/// Whether `ip` belongs to a configured trusted proxy. An IPv4-mapped IPv6 address (a dual-stack
/// socket) is the IPv4 address it carries.
pub(crate) fn is_trusted_proxy(trusted_proxies: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    trusted_proxies.iter().any(|net| net.contains(&ip))
}

/// One `X-Forwarded-For` entry: an address, or an address with the port some proxies add
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |socket, forwarded| client_ip(&proxies, Some(socket), forwarded);
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(ip(stranger, Some("1.2.3.4")), Some(stranger));
        assert_eq!(ip(proxy, Some("203.0.113.9")), Some(client));
        // A client cannot spoof its way in by prepending addresses.
        assert_eq!(
            ip(proxy, Some("1.1.1.1, 203.0.113.9, 10.0.0.5")),
            Some(client)
        );
        assert_eq!(ip(proxy, None), Some(proxy));
        assert_eq!(ip(proxy, Some("garbage")), Some(proxy));
        // Proxies that add the client's port.
        assert_eq!(ip(proxy, Some("203.0.113.9:4711")), Some(client));
        assert_eq!(
            ip(proxy, Some("[2001:db8::9]:4711")),
            Some("2001:db8::9".parse().unwrap())
        );
        assert_eq!(
            ip(proxy, Some("[2001:db8::9]")),
            Some("2001:db8::9".parse().unwrap())
        );
        // A proxy reaching a dual-stack socket shows up IPv4-mapped: still the trusted proxy.
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(ip(mapped, Some("203.0.113.9")), Some(client));
        assert_eq!(
            ip(proxy, Some("::ffff:203.0.113.9")),
            Some(client),
            "a mapped client is its IPv4 address"
        );
    }
}
