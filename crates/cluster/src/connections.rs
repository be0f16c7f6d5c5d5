//! A tenant's concurrent connections, counted across the cluster.
//!
//! Guarantees:
//! - [`Connections::acquire`] admits a connection only while the tenant's count
//!   over live nodes is below its limit (one atomic script, one round trip).
//! - Each node owns its share (a field named by its instance); a node that stops
//!   beating stops counting within the heartbeat expiry, and its field is dropped
//!   by the next acquire. A node rewrites its own shares every few seconds from
//!   its exact local counts, so a release lost while Redis was away cannot leak.
//! - Without Redis (or while it is unreachable) a node admits up to the limit
//!   divided by the live nodes it last saw, counting locally.

use crate::{ClusterError, RateLimiter, Redis};
use fred::types::scripts::Script;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// KEYS: the tenant's hash, nodes zset. ARGV: own instance, max, expiry seconds.
const ACQUIRE: &str = r#"
local t = redis.call('TIME')
local oldest = tonumber(t[1]) - tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #all, 2 do
  local score = redis.call('ZSCORE', KEYS[2], all[i])
  if all[i] == ARGV[1] or (score and tonumber(score) >= oldest) then
    total = total + tonumber(all[i + 1])
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
"#;

/// KEYS: the tenant's hash. ARGV: own instance, count.
const SET: &str = r#"
if ARGV[2] == '0' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"#;

/// KEYS: the tenant's hash. ARGV: own instance.
const RELEASE: &str = r#"
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"#;

const RECONCILE_EVERY: Duration = Duration::from_secs(5);

fn key(tenant: Uuid) -> String {
    format!("sb:conns:{tenant}")
}

/// Connection counts; cheap to clone.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Inner>,
}

struct Inner {
    instance: String,
    redis: Option<Redis>,
    acquire: Script,
    set: Script,
    release: Script,
    limiter: RateLimiter,
    local: Mutex<HashMap<Uuid, u32>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").field("instance", &self.inner.instance).finish_non_exhaustive()
    }
}

impl Connections {
    /// `instance` names this process (the heartbeat's member); `limiter` tells how
    /// many nodes are alive.
    pub fn new(redis: Option<Redis>, instance: &str, limiter: RateLimiter) -> Self {
        let inner = Arc::new(Inner {
            instance: instance.to_owned(),
            redis,
            acquire: Script::from_lua(ACQUIRE),
            set: Script::from_lua(SET),
            release: Script::from_lua(RELEASE),
            limiter,
            local: Mutex::new(HashMap::new()),
        });
        if inner.redis.is_some() {
            tokio::spawn(reconcile(Arc::downgrade(&inner)));
        }
        Self { inner }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, u32>> {
        self.inner.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This node's connections for `tenant`.
    pub fn local_count(&self, tenant: Uuid) -> u32 {
        self.local().get(&tenant).copied().unwrap_or(0)
    }

    /// Takes a slot for `tenant` if it has fewer than `max` connections.
    pub async fn acquire(&self, tenant: Uuid, max: u32) -> bool {
        if let Some(client) = self.inner.redis.as_ref().and_then(Redis::live) {
            let keys = vec![key(tenant), crate::ratelimit::NODES_KEY.to_owned()];
            let args = vec![
                self.inner.instance.clone(),
                max.to_string(),
                crate::ratelimit::NODE_EXPIRY.as_secs().to_string(),
            ];
            let call = self.inner.acquire.evalsha_with_reload::<i64, _, _>(client, keys, args);
            match tokio::time::timeout(Duration::from_millis(500), call).await {
                Ok(Ok(admitted)) => {
                    if admitted == 1 {
                        *self.local().entry(tenant).or_insert(0) += 1;
                    }
                    return admitted == 1;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "connection count: redis failed; counting locally"),
                Err(_) => tracing::warn!("connection count: redis timed out; counting locally"),
            }
        }
        // Alone (no Redis) the live-node count is 1, so the share is the limit.
        let share = (max / self.inner.limiter.live_nodes()).max(1);
        let mut local = self.local();
        let count = local.entry(tenant).or_insert(0);
        if *count >= share {
            return false;
        }
        *count += 1;
        true
    }

    /// Gives back a slot taken by [`Self::acquire`].
    pub fn release(&self, tenant: Uuid) {
        {
            let mut local = self.local();
            let Some(count) = local.get_mut(&tenant) else { return };
            *count = count.saturating_sub(1);
        }
        if let Some(redis) = self.inner.redis.clone() {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                if let Some(client) = redis.live() {
                    let args = vec![inner.instance.clone()];
                    let r: Result<i64, ClusterError> = inner
                        .release
                        .evalsha_with_reload(client, vec![key(tenant)], args)
                        .await
                        .map_err(Into::into);
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection count: release not written; reconciled later");
                    }
                }
            });
        }
    }

    /// Rewrites every share this node holds from its local counts (see the module doc).
    async fn write_shares(inner: &Inner) {
        let Some(client) = inner.redis.as_ref().and_then(Redis::live) else { return };
        let shares: Vec<(Uuid, u32)> = {
            let mut local = inner.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let shares = local.iter().map(|(t, c)| (*t, *c)).collect();
            local.retain(|_, c| *c > 0);
            shares
        };
        for (tenant, count) in shares {
            let args = vec![inner.instance.clone(), count.to_string()];
            let r: Result<i64, fred::error::Error> =
                inner.set.evalsha_with_reload(client, vec![key(tenant)], args).await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection count: reconcile failed");
                return;
            }
        }
    }
}

async fn reconcile(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(RECONCILE_EVERY).await;
        let Some(strong) = inner.upgrade() else { return };
        Connections::write_shares(&strong).await;
    }
}
