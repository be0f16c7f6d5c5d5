//! Per-tenant counts shared by every node: a tenant's open connections, its
//! presence entries. Each count has a limit across the cluster.
//!
//! Guarantees:
//! - [`Shares::acquire`] admits one more only while the tenant's count over live
//!   nodes is below its limit (one atomic script on one key, one round trip).
//! - Each node owns its share: a field named by its instance, beside a field
//!   with the time the node last wrote it. A node rewrites its own shares every
//!   few seconds from its exact local counts, so a release lost while Redis was
//!   away cannot leak, and a share not written for the heartbeat expiry (its
//!   node died) stops counting and is dropped by the next acquire. Every script
//!   touches the tenant's one key, so this runs on a Redis Cluster.
//! - Without Redis (or while it is unreachable) a node admits up to the limit
//!   divided by the live nodes it last saw, counting locally.

use crate::{ClusterError, RateLimiter, Redis};
use fred::types::scripts::Script;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// KEYS: the tenant's hash. ARGV: own instance, max, expiry seconds. Counts
/// the shares written within the expiry (and its own), drops the others.
const ACQUIRE: &str = r#"
local now = tonumber(redis.call('TIME')[1])
local all = redis.call('HGETALL', KEYS[1])
local counts, times = {}, {}
for i = 1, #all, 2 do
  local node = string.match(all[i], '^(.*)@t$')
  if node then times[node] = tonumber(all[i + 1]) else counts[all[i]] = tonumber(all[i + 1]) end
end
local total = 0
for node, count in pairs(counts) do
  if node == ARGV[1] or (times[node] and times[node] >= now - tonumber(ARGV[3])) then
    total = total + count
  else
    redis.call('HDEL', KEYS[1], node, node .. '@t')
  end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HSET', KEYS[1], ARGV[1] .. '@t', now)
return 1
"#;

/// KEYS: the tenant's hash. ARGV: own instance, count.
const SET: &str = r#"
if ARGV[2] == '0' then redis.call('HDEL', KEYS[1], ARGV[1], ARGV[1] .. '@t')
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[1] .. '@t', redis.call('TIME')[1]) end
return 1
"#;

/// KEYS: the tenant's hash. ARGV: own instance.
const RELEASE: &str = r#"
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1], ARGV[1] .. '@t')
else
  redis.call('HSET', KEYS[1], ARGV[1] .. '@t', redis.call('TIME')[1])
end
return 1
"#;

const RECONCILE_EVERY: Duration = Duration::from_secs(5);

/// One kind of shared count (`conns`, `presence`); cheap to clone.
#[derive(Clone)]
pub struct Shares {
    inner: Arc<Inner>,
}

struct Inner {
    /// Names the count in its keys: `sb:<name>:<tenant>`.
    name: &'static str,
    instance: String,
    redis: Option<Redis>,
    acquire: Script,
    set: Script,
    release: Script,
    limiter: RateLimiter,
    local: Mutex<HashMap<Uuid, u32>>,
}

impl Inner {
    fn key(&self, tenant: Uuid) -> String {
        format!("sb:{}:{tenant}", self.name)
    }
}

impl std::fmt::Debug for Shares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shares")
            .field("name", &self.inner.name)
            .field("instance", &self.inner.instance)
            .finish()
    }
}

impl Shares {
    /// A count called `name`; `instance` names this process; `limiter` tells
    /// how many nodes are alive (for the local share while Redis is away).
    pub fn new(name: &'static str, redis: Option<Redis>, instance: &str, limiter: RateLimiter) -> Self {
        let inner = Arc::new(Inner {
            name,
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

    /// Takes one for `tenant` if it holds fewer than `max`.
    pub async fn acquire(&self, tenant: Uuid, max: u32) -> bool {
        if let Some(client) = self.inner.redis.as_ref().and_then(Redis::live) {
            let args = vec![
                self.inner.instance.clone(),
                max.to_string(),
                crate::ratelimit::NODE_EXPIRY.as_secs().to_string(),
            ];
            let call = self.inner.acquire.evalsha_with_reload::<i64, _, _>(
                client,
                vec![self.inner.key(tenant)],
                args,
            );
            match tokio::time::timeout(Duration::from_millis(500), call).await {
                Ok(Ok(admitted)) => {
                    if admitted == 1 {
                        *self.local().entry(tenant).or_insert(0) += 1;
                    }
                    return admitted == 1;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, count = self.inner.name, "shared count: redis failed; counting locally")
                }
                Err(_) => {
                    tracing::warn!(count = self.inner.name, "shared count: redis timed out; counting locally")
                }
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

    /// Gives back one taken by [`Self::acquire`].
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
                        .evalsha_with_reload(client, vec![inner.key(tenant)], args)
                        .await
                        .map_err(Into::into);
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "shared count: release not written; reconciled later");
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
                inner.set.evalsha_with_reload(client, vec![inner.key(tenant)], args).await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "shared count: reconcile failed");
                return;
            }
        }
    }
}

async fn reconcile(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(RECONCILE_EVERY).await;
        let Some(strong) = inner.upgrade() else { return };
        Shares::write_shares(&strong).await;
    }
}
