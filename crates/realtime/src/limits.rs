//! Event limits, with no I/O on the common path.
//!
//! - Per socket: a GCRA bucket in the session (rate = the smaller of the node's
//!   per-socket rate and the tenant's, burst twice that). A socket that keeps
//!   sending after being refused (more than [`ABUSE_REFUSALS`] refusals within
//!   [`ABUSE_WINDOW`]) is disconnected; one that slows down stays connected.
//! - Per tenant, across the cluster: each node leases a tenth of a second of the
//!   tenant's `events_per_second` at a time from the distributed limiter (one
//!   Redis round trip per lease, not per event) and spends it locally. A lease
//!   unspent after a second is dropped, so a node cannot hoard budget.
//! - The tenant's quotas on what it keeps in Redis are budgets of the same
//!   kind ([`Spend`]): the bytes it adds to topic history per history TTL
//!   (`max_history_bytes`) and the dedupe keys of streamed batches per 15
//!   minutes (`max_dedupe_keys`). Over any window of that length a tenant adds
//!   at most twice its quota, so what it holds in Redis at once is bounded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_cluster::{DEDUPE_TTL, Quota, RateLimiter};
use switchboard_domain::{Limits, TenantId};

pub const ABUSE_REFUSALS: u32 = 200;
pub const ABUSE_WINDOW: Duration = Duration::from_secs(10);
const LEASE_LIFETIME: Duration = Duration::from_secs(1);

/// A refused event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub retry_after: Duration,
    /// The socket kept going while refused: disconnect it.
    pub abusive: bool,
}

/// One socket's event budget.
#[derive(Debug, Default)]
pub struct SocketBucket {
    tat: Option<Instant>,
    refusals: u32,
    window_start: Option<Instant>,
}

impl SocketBucket {
    /// Takes one event at `per_second` (burst twice that).
    pub fn take(&mut self, now: Instant, per_second: u32) -> Result<(), Refused> {
        let per_second = per_second.max(1);
        let interval = Duration::from_micros(1_000_000 / u64::from(per_second));
        let tolerance = interval * per_second.saturating_mul(2);
        let current = self.tat.map_or(now, |t| t.max(now));
        let new_tat = current + interval;
        let allow_at = new_tat.checked_sub(tolerance).unwrap_or(now);
        if now >= allow_at {
            self.tat = Some(new_tat);
            return Ok(());
        }
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < ABUSE_WINDOW => self.refusals += 1,
            _ => {
                self.window_start = Some(now);
                self.refusals = 1;
            }
        }
        Err(Refused { retry_after: allow_at - now, abusive: self.refusals > ABUSE_REFUSALS })
    }
}

struct Budget {
    lease: Mutex<(u32, Instant)>,
    refill: tokio::sync::Mutex<()>,
}

impl Budget {
    fn spend(&self, n: u32) -> bool {
        let mut lease = self.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if lease.0 >= n && lease.1.elapsed() < LEASE_LIFETIME {
            lease.0 -= n;
            return true;
        }
        false
    }
}

/// What a tenant spends from one of its cluster-wide budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Spend {
    /// Events: publishes, broadcasts, deltas, and replayed history (a
    /// replayed event costs one, and one more per 4 KiB).
    Events,
    /// Bytes added to topic history, per history TTL.
    HistoryBytes,
    /// Dedupe keys of streamed batches, per 15 minutes.
    DedupeKeys,
}

impl Spend {
    fn prefix(self) -> &'static str {
        match self {
            Spend::Events => "ev",
            Spend::HistoryBytes => "hb",
            Spend::DedupeKeys => "dk",
        }
    }

    /// The tenant's budget of this kind: a rate, and a burst of the whole
    /// quota (for the quotas, the rate spreads the quota over its window).
    pub fn quota(self, limits: &Limits, history_ttl: Duration) -> Quota {
        let spread = |total: u32, window: Duration| {
            let per_second = (u64::from(total) / window.as_secs().max(1)).clamp(1, u64::from(u32::MAX));
            Quota { per_second: per_second as u32, burst: total.max(1) }
        };
        match self {
            Spend::Events => Quota { per_second: limits.events_per_second, burst: limits.events_per_second },
            Spend::HistoryBytes => spread(limits.max_history_bytes, history_ttl),
            Spend::DedupeKeys => spread(limits.max_dedupe_keys, DEDUPE_TTL),
        }
    }
}

/// Every tenant's leased budgets on this node.
pub struct TenantBudgets {
    budgets: moka::sync::Cache<(TenantId, Spend), Arc<Budget>>,
}

impl Default for TenantBudgets {
    fn default() -> Self {
        Self {
            budgets: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(60))
                .build(),
        }
    }
}

impl TenantBudgets {
    /// Takes one event from `tenant`'s cluster-wide budget of `per_second`.
    pub async fn take(
        &self,
        limiter: &RateLimiter,
        tenant: TenantId,
        per_second: u32,
    ) -> Result<(), Duration> {
        let quota = Quota { per_second, burst: per_second };
        self.spend(limiter, tenant, Spend::Events, quota, 1).await
    }

    /// Takes `n` events at once (a batch of streamed deltas) from `tenant`'s
    /// cluster-wide budget of `per_second`: all of them or none.
    pub async fn take_n(
        &self,
        limiter: &RateLimiter,
        tenant: TenantId,
        per_second: u32,
        n: u32,
    ) -> Result<(), Duration> {
        let quota = Quota { per_second, burst: per_second };
        self.spend(limiter, tenant, Spend::Events, quota, n).await
    }

    /// Takes `n` from `tenant`'s cluster-wide budget of kind `spend`, whose
    /// size is `quota`: all of it or none; refused with how long to wait.
    pub async fn spend(
        &self,
        limiter: &RateLimiter,
        tenant: TenantId,
        spend: Spend,
        quota: Quota,
        n: u32,
    ) -> Result<(), Duration> {
        let n = n.max(1);
        let budget = self.budgets.get_with((tenant, spend), || {
            Arc::new(Budget { lease: Mutex::new((0, Instant::now())), refill: tokio::sync::Mutex::new(()) })
        });
        if budget.spend(n) {
            return Ok(());
        }
        // The lease ran out: a Redis call, in a boxed future so that every
        // caller's future (a publish's, say) does not carry it inline.
        Box::pin(Self::refill(budget, limiter, tenant, spend, quota, n)).await
    }

    /// Leases more of the budget from Redis, or refuses; one refill at a time.
    async fn refill(
        budget: Arc<Budget>,
        limiter: &RateLimiter,
        tenant: TenantId,
        spend: Spend,
        quota: Quota,
        n: u32,
    ) -> Result<(), Duration> {
        let _refilling = budget.refill.lock().await;
        if budget.spend(n) {
            return Ok(());
        }
        let per_second = quota.per_second.max(1);
        let quota = Quota { per_second, burst: quota.burst.max(1) };
        let key = format!("{}:{tenant}", spend.prefix());
        // A tenth of a second of budget beyond what is asked; when the cluster
        // has less left, just what is asked.
        let lease = n.saturating_add((per_second / 10).max(1) - 1);
        let mut decision = limiter.check_n(&key, quota, lease).await;
        let mut size = lease;
        if !decision.allowed && lease > n {
            decision = limiter.check_n(&key, quota, n).await;
            size = n;
        }
        if !decision.allowed {
            return Err(decision.retry_after.max(Duration::from_millis(1)));
        }
        let mut held = budget.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *held = (size - n, Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_gets_twice_its_rate_at_once_then_its_rate() {
        let mut b = SocketBucket::default();
        let t0 = Instant::now();
        let admitted = (0..100).filter(|_| b.take(t0, 10).is_ok()).count();
        assert_eq!(admitted, 20);
        let refused = b.take(t0, 10).unwrap_err();
        assert!(refused.retry_after > Duration::ZERO && !refused.abusive);
        assert!(b.take(t0 + Duration::from_millis(100), 10).is_ok());
    }

    #[test]
    fn a_socket_that_keeps_sending_while_refused_is_abusive() {
        let mut b = SocketBucket::default();
        let t0 = Instant::now();
        let last = (0..(ABUSE_REFUSALS + 10)).map(|_| b.take(t0, 1)).last();
        assert!(matches!(last, Some(Err(Refused { abusive: true, .. }))));
    }
}
