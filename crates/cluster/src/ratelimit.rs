//! Distributed rate limiting: GCRA (the generic cell rate algorithm) over Redis,
//! one round trip per decision (a Lua script that reads Redis's own clock, so
//! nodes need not agree on time), with an in-process twin.
//!
//! Guarantees:
//! - Across all nodes sharing a Redis, a key admits at most `burst` requests at
//!   once and `per_second` sustained: within any window of `t` seconds at most
//!   `burst + per_second × t`.
//! - If Redis cannot answer, the node never fails open: it limits locally at
//!   `per_second / live nodes` (the count it last saw), and logs the change of mode.
//! - Live nodes are counted through a heartbeat every 2 s; a node that stops
//!   beating leaves the count after 10 s. Each node keeps the names of the live
//!   nodes it last saw ([`RateLimiter::live_set`]), which presence and the
//!   shared counts use to tell a dead node's entries apart without a script
//!   that spans keys.

use crate::Redis;
use fred::prelude::*;
use fred::types::scripts::Script;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
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

pub(crate) const NODES_KEY: &str = "sb:nodes";
/// A decision waits at most this long for Redis before falling back.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
const HEARTBEAT: Duration = Duration::from_secs(2);
pub(crate) const NODE_EXPIRY: Duration = Duration::from_secs(10);

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

struct Inner {
    redis: Option<Redis>,
    script: Script,
    local: moka::sync::Cache<String, Arc<Mutex<u64>>>,
    epoch: Instant,
    nodes: AtomicU32,
    live: RwLock<Arc<HashSet<String>>>,
    node_id: String,
    degraded: AtomicBool,
}

/// The rate limiter; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("nodes", &self.live_nodes()).finish()
    }
}

impl RateLimiter {
    /// With `redis`, limits are cluster-wide and this node joins the live-node
    /// count as `node_id` (call from within a tokio runtime).
    pub fn new(redis: Option<Redis>, node_id: &str) -> Self {
        let inner = Arc::new(Inner {
            redis,
            script: Script::from_lua(GCRA),
            local: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(120))
                .build(),
            epoch: Instant::now(),
            nodes: AtomicU32::new(1),
            live: RwLock::new(Arc::new(HashSet::from([node_id.to_owned()]))),
            node_id: node_id.to_owned(),
            degraded: AtomicBool::new(false),
        });
        if inner.redis.is_some() {
            tokio::spawn(heartbeat(Arc::downgrade(&inner)));
        }
        Self { inner }
    }

    /// Beats once now, so this node counts as live before it serves anything
    /// (the background heartbeat keeps it so).
    pub async fn join_cluster(&self) {
        beat(&self.inner).await;
    }

    /// The instances seen beating in the last 10 s (always this one).
    pub fn live_set(&self) -> Arc<HashSet<String>> {
        self.inner.live.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// Nodes that beat within the last 10 s, as last seen (at least 1).
    pub fn live_nodes(&self) -> u32 {
        self.inner.nodes.load(Ordering::Relaxed).max(1)
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
        if self.inner.redis.is_some() {
            let redis_key = format!("sb:rl:{key}");
            let answer: Result<Vec<i64>, String> = match self.inner.redis.as_ref().and_then(Redis::live) {
                Some(client) => {
                    let args = vec![interval as i64, tolerance as i64, cost as i64];
                    let call = self.inner.script.evalsha_with_reload(client, redis_key, args);
                    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err("timed out".to_owned()),
                    }
                }
                None => Err("not connected".to_owned()),
            };
            match answer {
                Ok(v) if v.len() == 3 => {
                    if self.inner.degraded.swap(false, Ordering::Relaxed) {
                        tracing::info!("rate limiter: redis answers again; limits are cluster-wide");
                    }
                    let (allowed, wait, full) = (v[0] == 1, v[1].max(0) as u64, v[2].max(0) as u64);
                    return decision(quota, interval, allowed, wait, full);
                }
                Ok(v) => tracing::error!(answer = ?v, "rate limiter: unexpected script answer"),
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
            return self.check_local(&format!("fallback:{key}"), share, cost);
        }
        self.check_local(key, quota, cost)
    }

    fn check_local(&self, key: &str, quota: Quota, cost: u64) -> Decision {
        let interval = 1_000_000 / u64::from(quota.per_second.max(1));
        let tolerance = interval * u64::from(quota.burst.max(1));
        let cell = self.inner.local.get_with(key.to_owned(), || Arc::new(Mutex::new(0)));
        let now = self.inner.epoch.elapsed().as_micros() as u64;
        let (allowed, wait, full) = match cell.lock() {
            Ok(mut tat) => gcra_n(&mut tat, now, interval, tolerance, cost),
            // A poisoned cell only means another request panicked mid-update.
            Err(poisoned) => gcra_n(&mut poisoned.into_inner(), now, interval, tolerance, cost),
        };
        decision(quota, interval, allowed, wait, full)
    }
}

async fn heartbeat(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else { return };
        beat(&strong).await;
        drop(strong);
        tokio::time::sleep(HEARTBEAT).await;
    }
}

/// Writes this node's beat and reads who else is alive.
async fn beat(inner: &Inner) {
    let Some(client) = inner.redis.as_ref().and_then(Redis::live) else { return };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let oldest = now - NODE_EXPIRY.as_secs_f64();
    let beat = async {
        let _: () = client.zadd(NODES_KEY, None, None, false, false, (now, inner.node_id.as_str())).await?;
        let _: () = client.zremrangebyscore(NODES_KEY, 0.0, oldest).await?;
        client.zrangebyscore::<Vec<String>, _, _, _>(NODES_KEY, oldest, "+inf", false, None).await
    };
    match beat.await {
        Ok(names) => {
            let mut live: HashSet<String> = names.into_iter().collect();
            live.insert(inner.node_id.clone());
            inner.nodes.store(live.len() as u32, Ordering::Relaxed);
            if let Ok(mut l) = inner.live.write() {
                *l = Arc::new(live);
            }
        }
        Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
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
