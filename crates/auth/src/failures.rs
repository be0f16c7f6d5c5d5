//! Failed authentications, limited per client address: a client that keeps
//! presenting bad tokens or keys is refused before any verification work (no
//! signature check, no key lookup) until it slows down. IPv6 clients are
//! counted per /64, the block one subscriber usually holds. Per node and in
//! memory: what it protects is this node's CPU and the database behind it.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failures one address may make at once, and per second after that (the
/// defaults; `AUTH_FAILURES_PER_SECOND` sets the rate and four times it at once).
const BURST: u32 = 20;
const PER_SECOND: u32 = 5;

/// Failed authentications per client address (GCRA, like the rate limiters).
pub struct AuthFailures {
    tats: moka::sync::Cache<u128, Arc<Mutex<Instant>>>,
    interval: Duration,
    tolerance: Duration,
}

impl std::fmt::Debug for AuthFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthFailures").field("tracked", &self.tats.entry_count()).finish()
    }
}

impl Default for AuthFailures {
    fn default() -> Self {
        Self::new(BURST, PER_SECOND)
    }
}

fn key(ip: IpAddr) -> u128 {
    switchboard_domain::ClientAddr(ip).bucket()
}

impl AuthFailures {
    pub fn new(burst: u32, per_second: u32) -> Self {
        let interval = Duration::from_micros(1_000_000 / u64::from(per_second.max(1)));
        Self {
            // Bounded, and an address forgotten after a minute of quiet.
            tats: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(60))
                .build(),
            interval,
            tolerance: interval * burst.max(1),
        }
    }

    /// How long `ip` must wait before it may try again; `None` if it may now.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let tat = self.tats.get(&key(ip))?;
        let tat = *tat.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let allow_at = tat.checked_sub(self.tolerance)?;
        let now = Instant::now();
        (allow_at > now).then(|| allow_at - now)
    }

    /// Counts one failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let cell = self.tats.get_with(key(ip), || Arc::new(Mutex::new(now)));
        let mut tat = cell.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *tat = (*tat).max(now) + self.interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_burst_of_failures_and_ipv6_counts_per_64() {
        let f = AuthFailures::new(3, 1);
        let a: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..3 {
            assert!(f.blocked(a).is_none());
            f.failed(a);
        }
        f.failed(a);
        assert!(f.blocked(a).is_some_and(|w| w > Duration::ZERO && w <= Duration::from_secs(2)));
        assert!(f.blocked([10, 0, 0, 2].into()).is_none(), "another address is unaffected");

        let six = |s: &str| s.parse::<IpAddr>().unwrap_or(a);
        for _ in 0..5 {
            f.failed(six("2001:db8:1:2::1"));
        }
        assert!(f.blocked(six("2001:db8:1:2::ffff")).is_some(), "the same /64");
        assert!(f.blocked(six("2001:db8:1:3::1")).is_none(), "another /64");
    }
}
