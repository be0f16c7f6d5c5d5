//! Which address a request comes from. Behind a load balancer every request
//! comes from the balancer, so the client is the one it names in
//! `X-Forwarded-For`, but only when the peer is one of `TRUSTED_PROXIES`:
//! then the client is the rightmost address in the header that is not itself
//! a trusted proxy (addresses to its left could be made up by the client).
//! From any other peer the header is ignored, so nobody can pick the address
//! the limiters see. The answer goes into the request's extensions as
//! [`ClientAddr`] for the per-address limiter, failed-authentication limits,
//! audit rows and logs, Socket.IO handshakes included.

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use switchboard_domain::ClientAddr;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    /// Parses comma-separated CIDRs (a bare address is its own /32 or /128).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("`{item}` is not a CIDR such as 10.0.0.0/8 or fd00::/8"))?;
            nets.push(net);
        }
        Ok(Self(nets.into()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer`, given the request's `X-Forwarded-For` values.
    pub fn client(&self, peer: IpAddr, forwarded: &[&str]) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|h| parse_hop(h.trim()))
            .map(canonical)
            .collect();
        // Right to left: the first address that is not a trusted proxy. If
        // every hop is trusted, the leftmost is the client.
        hops.iter().rev().find(|ip| !self.trusts(**ip)).or(hops.first()).copied().unwrap_or(peer)
    }
}

/// An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: an address, possibly `[v6]:port` or `v4:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(sock) = hop.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    hop.strip_prefix('[')?.split_once(']')?.0.parse().ok()
}

/// Puts the request's [`ClientAddr`] into its extensions.
pub async fn stamp(
    axum::extract::State(trusted): axum::extract::State<TrustedProxies>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(peer) = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()) {
        let forwarded: Vec<&str> = if trusted.is_empty() {
            Vec::new()
        } else {
            request.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect()
        };
        let client = trusted.client(peer, &forwarded);
        tracing::Span::current().record("client_ip", tracing::field::display(client));
        request.extensions_mut().insert(ClientAddr(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_peer_and_its_rightmost_untrusted_hop_wins() {
        let t = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").unwrap();
        // An untrusted peer: its header is ignored.
        assert_eq!(t.client(ip("203.0.113.9"), &["1.2.3.4"]), ip("203.0.113.9"));
        // Through the balancer: the client it saw.
        assert_eq!(t.client(ip("10.1.1.1"), &["198.51.100.7"]), ip("198.51.100.7"));
        // A client that sends its own header: the balancer appends the real one.
        assert_eq!(t.client(ip("10.1.1.1"), &["6.6.6.6, 198.51.100.7"]), ip("198.51.100.7"));
        // Two proxies in a row, and several header lines.
        assert_eq!(t.client(ip("127.0.0.1"), &["6.6.6.6, 198.51.100.7", "10.2.2.2"]), ip("198.51.100.7"));
        // Ports, brackets and mapped addresses.
        assert_eq!(t.client(ip("10.1.1.1"), &["[2001:db8::1]:443"]), ip("2001:db8::1"));
        assert_eq!(t.client(ip("::ffff:10.1.1.1"), &["198.51.100.7:5000"]), ip("198.51.100.7"));
        // Garbage and no header: the peer.
        assert_eq!(t.client(ip("10.1.1.1"), &["not an address"]), ip("10.1.1.1"));
        assert_eq!(t.client(ip("10.1.1.1"), &[]), ip("10.1.1.1"));
        // Nothing trusted: always the peer.
        assert_eq!(TrustedProxies::default().client(ip("10.1.1.1"), &["1.2.3.4"]), ip("10.1.1.1"));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err() && TrustedProxies::parse("nope").is_err());
    }
}
