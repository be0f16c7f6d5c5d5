//! Keeps webhook deliveries off addresses inside the deployment: loopback,
//! private, link-local (cloud metadata), carrier-grade NAT, unique-local,
//! multicast and the other special ranges. An endpoint's URL is checked when
//! it is saved ([`check_url`]), and again at every delivery, by the HTTP
//! client's resolver ([`GuardedResolver`]): a name that resolves to a public
//! address when saved and to a private one later (DNS rebinding) is refused
//! then, because the client connects only to the addresses the resolver let
//! through. `WEBHOOK_ALLOW_PRIVATE` turns the guard off (for tests on
//! loopback).

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96): as good as the IPv4 address inside.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return public_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(s[..6] == [0; 6] // ::/96: unspecified, loopback, IPv4-compatible
                || (s[..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0) // IPv4-translated ::ffff:0:0/96
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
                || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard 100::/64
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x2002) // 6to4: an IPv4 address in disguise
                || (s[0] == 0x2001 && s[1] == 0)) // Teredo: likewise
        }
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || a >= 240) // reserved
}

/// Why a URL may not be an endpoint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("must be an http or https URL with a host, no user name or password, at most 2048 characters")]
    Malformed,
    #[error("resolves to a private, loopback or otherwise internal address")]
    Private,
    #[error("its host name does not resolve")]
    Unresolved,
}

/// Checks `raw` as an endpoint URL: http(s), a host, no credentials; unless
/// `allow_private`, its host (an address, or every address a name resolves
/// to) must be public.
pub async fn check_url(raw: &str, allow_private: bool) -> Result<url::Url, UrlError> {
    let url = url::Url::parse(raw).map_err(|_| UrlError::Malformed)?;
    if !matches!(url.scheme(), "http" | "https")
        || url.as_str().len() > 2048
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(UrlError::Malformed);
    }
    let host = match url.host() {
        Some(h) => h.to_owned(),
        None => return Err(UrlError::Malformed),
    };
    if allow_private {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match host {
        url::Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
        url::Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
        url::Host::Domain(name) => {
            let lookup = tokio::net::lookup_host((name.as_str(), port));
            match tokio::time::timeout(Duration::from_secs(3), lookup).await {
                Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
                _ => return Err(UrlError::Unresolved),
            }
        }
    };
    if addrs.is_empty() {
        return Err(UrlError::Unresolved);
    }
    if addrs.iter().all(|ip| is_public(*ip)) { Ok(url) } else { Err(UrlError::Private) }
}

/// Whether a URL's host is an address literal the guard refuses (the client
/// connects to those without asking the resolver).
pub fn literal_refused(url: &url::Url, allow_private: bool) -> bool {
    if allow_private {
        return false;
    }
    match url.host() {
        Some(url::Host::Ipv4(ip)) => !is_public(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => !is_public(IpAddr::V6(ip)),
        _ => false,
    }
}

/// Why the resolver gave no address.
pub const REFUSED: &str = "the host resolves only to private or internal addresses";

/// The webhook client's resolver: the system's answers, less every address
/// the guard refuses; a name left with none does not resolve.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let kept: Vec<SocketAddr> = found.filter(|a| allow || is_public(a.ip())).collect();
            if kept.is_empty() {
                let refused = std::io::Error::other(REFUSED);
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn internal_ranges_are_refused_and_public_ones_pass() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::169.254.169.254",
            "::7f00:1",
            "::ffff:0:a00:1",
            "fec0::1",
            "100::1",
            "192.88.99.1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_for_shape_and_address() {
        for bad in ["ftp://example.com/", "not a url", "http://user:pw@1.1.1.1/", "file:///etc/passwd"] {
            assert_eq!(check_url(bad, false).await, Err(UrlError::Malformed), "{bad}");
        }
        for private in [
            "http://127.0.0.1:9/",
            "http://[::1]/x",
            "https://10.0.0.8/",
            "http://169.254.169.254/latest",
            "http://localhost:8080/",
        ] {
            assert_eq!(check_url(private, false).await, Err(UrlError::Private), "{private}");
            assert!(check_url(private, true).await.is_ok(), "{private}");
        }
        assert!(check_url("https://1.1.1.1/hook", false).await.is_ok());
    }
}
