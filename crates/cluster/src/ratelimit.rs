//! Distributed rate limiting: GCRA (the generic cell rate algorithm) over Redis,
//! one round trip per decision (a Lua script that reads Redis's own clock, so
//! nodes need not agree on time), with an in-process twin.
//!
//! Guarantees:
//! - Across all nodes sharing a Redis, a key admits at most `burst` requests at
//!   once and `per_second` sustained: within any window of `t` seconds at most
//!   `burst + per_second × t`.
//! - If Redis cannot answer, the node never fails open: it limits locally at
//!   `per_second / live nodes` (the count it last saw, from [`Nodes`]), and
//!   logs the change of mode.
//!
//! The role is [`RateLimit`]: [`RedisRateLimit`] shared by the cluster,
//! [`LocalRateLimit`] inside the process (a node alone, and the fallback).

use crate::{ClusterError, Nodes, Redis};
use fred::types::scripts::Script;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How much a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub per_second: u32,
    pub burst: u32,
}

/// The answer for one request, with what the `RateLimit-*` headers report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset_after: Duration,
    /// Until the next request would be admitted (zero when allowed).
    pub retry_after: Duration,
}

const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3] or '1')
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0, new_tat - now}
"#;

/// A decision waits at most this long for Redis before falling back.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// One GCRA step on local state: `tat` is the theoretical arrival time in µs
/// since `epoch`. Returns (allowed, wait µs, µs until full).
#[cfg(test)]
fn gcra(tat: &mut u64, now: u64, interval: u64, tolerance: u64) -> (bool, u64, u64) {
    gcra_n(tat, now, interval, tolerance, 1)
}

/// [`gcra`] for `cost` cells at once.
fn gcra_n(tat: &mut u64, now: u64, interval: u64, tolerance: u64, cost: u64) -> (bool, u64, u64) {
    let current = (*tat).max(now);
    let new_tat = current + interval * cost;
    let allow_at = new_tat.saturating_sub(tolerance);
    if now < allow_at {
        return (false, allow_at - now, current - now);
    }
    *tat = new_tat;
    (true, 0, new_tat - now)
}

fn decision(quota: Quota, interval: u64, allowed: bool, wait_us: u64, full_in_us: u64) -> Decision {
    let tolerance = interval * u64::from(quota.burst);
    let used = full_in_us.div_ceil(interval.max(1));
    let remaining = (tolerance / interval.max(1)).saturating_sub(used);
    Decision {
        allowed,
        limit: quota.burst,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reset_after: Duration::from_micros(full_in_us),
        retry_after: Duration::from_micros(wait_us),
    }
}

/// Where budgets are kept: the role behind [`RateLimiter`].
#[async_trait::async_trait]
pub trait RateLimit: Send + Sync + 'static {
    /// One GCRA step taking `cost` cells of `key`'s budget (emission
    /// `interval` and `tolerance` in µs): (allowed, µs until it would be, µs
    /// until the budget is full again).
    async fn take(
        &self,
        key: &str,
        interval: u64,
        tolerance: u64,
        cost: u64,
    ) -> Result<(bool, u64, u64), ClusterError>;
}

/// Budgets in Redis, shared by every node: one script call per decision.
pub struct RedisRateLimit {
    redis: Redis,
    script: Script,
}

impl RedisRateLimit {
    pub fn new(redis: Redis) -> Self {
        Self { redis, script: Script::from_lua(GCRA) }
    }
}

#[async_trait::async_trait]
impl RateLimit for RedisRateLimit {
    async fn take(
        &self,
        key: &str,
        interval: u64,
        tolerance: u64,
        cost: u64,
    ) -> Result<(bool, u64, u64), ClusterError> {
        let client = self.redis.live().ok_or(ClusterError::Down)?;
        let args = vec![interval as i64, tolerance as i64, cost as i64];
        let call = crate::redis::timed(
            "rate_limit",
            self.script.evalsha_with_reload::<Vec<i64>, _, _>(client, format!("sb:rl:{key}"), args),
        );
        match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(Ok(v)) if v.len() == 3 => Ok((v[0] == 1, v[1].max(0) as u64, v[2].max(0) as u64)),
            Ok(Ok(v)) => Err(ClusterError::Unexpected(format!("rate limit answer {v:?}"))),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ClusterError::Timeout),
        }
    }
}

/// Budgets inside the process, forgotten after two idle minutes.
pub struct LocalRateLimit {
    cells: moka::sync::Cache<String, Arc<Mutex<u64>>>,
    epoch: Instant,
}

impl Default for LocalRateLimit {
    fn default() -> Self {
        Self {
            cells: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(120))
                .build(),
            epoch: Instant::now(),
        }
    }
}

impl LocalRateLimit {
    fn take_now(&self, key: &str, interval: u64, tolerance: u64, cost: u64) -> (bool, u64, u64) {
        let cell = self.cells.get_with(key.to_owned(), || Arc::new(Mutex::new(0)));
        let now = self.epoch.elapsed().as_micros() as u64;
        // A poisoned cell only means another request panicked mid-update.
        let mut tat = cell.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        gcra_n(&mut tat, now, interval, tolerance, cost)
    }
}

#[async_trait::async_trait]
impl RateLimit for LocalRateLimit {
    async fn take(
        &self,
        key: &str,
        interval: u64,
        tolerance: u64,
        cost: u64,
    ) -> Result<(bool, u64, u64), ClusterError> {
        Ok(self.take_now(key, interval, tolerance, cost))
    }
}

struct Inner {
    /// The cluster's budgets; `None` for a node alone.
    shared: Option<Arc<dyn RateLimit>>,
    /// This node's own (alone, or its share while the cluster's cannot answer).
    local: LocalRateLimit,
    nodes: Nodes,
    degraded: AtomicBool,
}

/// The rate limiter; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("nodes", &self.inner.nodes.live_nodes()).finish()
    }
}

impl RateLimiter {
    /// With `redis`, limits are cluster-wide; `nodes` tells how many nodes
    /// share a budget while Redis cannot answer.
    pub fn new(redis: Option<Redis>, nodes: Nodes) -> Self {
        Self::with(redis.map(|r| Arc::new(RedisRateLimit::new(r)) as Arc<dyn RateLimit>), nodes)
    }

    /// Limits on `shared` (`None`: this node alone).
    pub fn with(shared: Option<Arc<dyn RateLimit>>, nodes: Nodes) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared,
                local: LocalRateLimit::default(),
                nodes,
                degraded: AtomicBool::new(false),
            }),
        }
    }

    /// The membership this limiter divides budgets by.
    pub fn nodes(&self) -> &Nodes {
        &self.inner.nodes
    }

    /// Nodes alive as last seen (at least 1).
    pub fn live_nodes(&self) -> u32 {
        self.inner.nodes.live_nodes()
    }

    /// Takes one request from `key`'s budget.
    pub async fn check(&self, key: &str, quota: Quota) -> Decision {
        self.check_n(key, quota, 1).await
    }

    /// Takes `cost` cells from `key`'s budget at once, or none (a node leasing a
    /// batch of event budget). `cost` above the burst is never admitted.
    pub async fn check_n(&self, key: &str, quota: Quota, cost: u32) -> Decision {
        let cost = u64::from(cost.max(1));
        let quota = Quota { per_second: quota.per_second.max(1), burst: quota.burst.max(1) };
        let interval = 1_000_000 / u64::from(quota.per_second);
        let tolerance = interval * u64::from(quota.burst);
        let Some(shared) = &self.inner.shared else {
            let (allowed, wait, full) = self.inner.local.take_now(key, interval, tolerance, cost);
            return decision(quota, interval, allowed, wait, full);
        };
        match shared.take(key, interval, tolerance, cost).await {
            Ok((allowed, wait, full)) => {
                if self.inner.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limiter: redis answers again; limits are cluster-wide");
                }
                return decision(quota, interval, allowed, wait, full);
            }
            Err(e) => {
                if !self.inner.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, nodes = self.live_nodes(),
                        "rate limiter: redis unreachable; limiting locally at the tenant rate / live nodes");
                }
            }
        }
        // Fallback: this node's share of the budget.
        let nodes = self.live_nodes();
        let share =
            Quota { per_second: (quota.per_second / nodes).max(1), burst: (quota.burst / nodes).max(1) };
        let interval = 1_000_000 / u64::from(share.per_second);
        let tolerance = interval * u64::from(share.burst);
        let (allowed, wait, full) =
            self.inner.local.take_now(&format!("fallback:{key}"), interval, tolerance, cost);
        decision(share, interval, allowed, wait, full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_admits_the_burst_then_one_per_interval() {
        let (interval, burst) = (100_000, 5); // 10/s, burst 5
        let mut tat = 0;
        let admitted = (0..20).filter(|_| gcra(&mut tat, 1_000_000, interval, interval * burst).0).count();
        assert_eq!(admitted, 5);
        let (allowed, wait, _) = gcra(&mut tat, 1_000_000, interval, interval * burst);
        assert!(!allowed && wait == interval);
        assert!(gcra(&mut tat, 1_000_000 + interval, interval, interval * burst).0);
    }

    #[test]
    fn decisions_report_remaining_and_reset() {
        let q = Quota { per_second: 10, burst: 5 };
        let d = decision(q, 100_000, true, 0, 100_000);
        assert_eq!((d.limit, d.remaining), (5, 4));
        assert_eq!(d.reset_after, Duration::from_millis(100));
    }
}
