//! Per-tenant counts shared by every node: a tenant's open connections, its
//! presence entries. Each count has a limit across the cluster.
//!
//! Guarantees:
//! - [`Shares::acquire`] admits one more only while the tenant's count over live
//!   nodes is below its limit. A node takes room from Redis a [`chunk`] at a
//!   time (one atomic script on one key, one round trip) and admits from what
//!   it holds without Redis until that is used up; its share in Redis counts
//!   all it holds, so the nodes together never admit past the limit. Room
//!   freed by releases stays with the node up to twice a chunk less two
//!   (none for a small limit, whose chunk is 1); beyond that it goes back in
//!   one call, and all of it at every rewrite (below). So near its limit a
//!   tenant may be refused that many early on another node, for a few
//!   seconds at most. A node makes one such call per tenant at a time (those
//!   that arrive meanwhile use the room it brings), and the rewrite waits
//!   for it, so a rewrite never erases a grant or a give-back.
//! - Each node owns its share: a field named by its instance, beside a field
//!   with the time the node last wrote it. A node rewrites its own shares every
//!   few seconds from its exact local counts, so a release lost while Redis was
//!   away cannot leak, and a share not written for the heartbeat expiry (its
//!   node died) stops counting and is dropped by the next acquire. Every script
//!   touches the tenant's one key, so this runs on a Redis Cluster.
//! - Without Redis (or while it is unreachable) a node admits up to the limit
//!   divided by the live nodes it last saw, counting locally.
//!
//! The role is [`SharedCounts`]: [`RedisCounts`] shared by the cluster,
//! [`LocalCounts`] inside the process.

use crate::membership::NODE_EXPIRY;
use crate::{ClusterError, Nodes, Redis};
use fred::types::scripts::Script;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// KEYS: the tenant's hash. ARGV: own instance, max, expiry seconds, wanted.
/// Counts the shares written within the expiry (and its own), drops the
/// others, and adds up to `wanted` to its own while the total stays within
/// max; returns how many it added.
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
local room = tonumber(ARGV[2]) - total
if room <= 0 then return 0 end
local granted = math.min(room, tonumber(ARGV[4]))
redis.call('HINCRBY', KEYS[1], ARGV[1], granted)
redis.call('HSET', KEYS[1], ARGV[1] .. '@t', now)
return granted
"#;

/// KEYS: the tenant's hash. ARGV: own instance, count.
const SET: &str = r#"
if ARGV[2] == '0' then redis.call('HDEL', KEYS[1], ARGV[1], ARGV[1] .. '@t')
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[1] .. '@t', redis.call('TIME')[1]) end
return 1
"#;

/// KEYS: the tenant's hash. ARGV: own instance, count.
const RELEASE: &str = r#"
if redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2])) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1], ARGV[1] .. '@t')
else
  redis.call('HSET', KEYS[1], ARGV[1] .. '@t', redis.call('TIME')[1])
end
return 1
"#;

const RECONCILE_EVERY: Duration = Duration::from_secs(5);

/// Where the shares are kept: the role behind [`Shares`]. A count `key` holds
/// one share per instance.
#[async_trait::async_trait]
pub trait SharedCounts: Send + Sync + 'static {
    /// Adds up to `wanted` to `instance`'s share of `key` while the shares
    /// written within [`NODE_EXPIRY`] (and its own) stay within `max`; drops
    /// the others. Returns how many it added (0: the limit is reached).
    async fn acquire(&self, key: &str, instance: &str, max: u32, wanted: u32) -> Result<u32, ClusterError>;

    /// Takes `count` from `instance`'s share of `key`.
    async fn release(&self, key: &str, instance: &str, count: u32) -> Result<(), ClusterError>;

    /// Sets `instance`'s share of `key` to `count` (0 removes it).
    async fn set(&self, key: &str, instance: &str, count: u32) -> Result<(), ClusterError>;
}

/// Shares in Redis: one hash per count, a field per instance and one with the
/// time it last wrote.
pub struct RedisCounts {
    redis: Redis,
    acquire: Script,
    set: Script,
    release: Script,
}

impl RedisCounts {
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            acquire: Script::from_lua(ACQUIRE),
            set: Script::from_lua(SET),
            release: Script::from_lua(RELEASE),
        }
    }
}

#[async_trait::async_trait]
impl SharedCounts for RedisCounts {
    async fn acquire(&self, key: &str, instance: &str, max: u32, wanted: u32) -> Result<u32, ClusterError> {
        let client = self.redis.live().ok_or(ClusterError::Down)?;
        let args = vec![
            instance.to_owned(),
            max.to_string(),
            NODE_EXPIRY.as_secs().to_string(),
            wanted.max(1).to_string(),
        ];
        let call = crate::redis::timed(
            "share_acquire",
            self.acquire.evalsha_with_reload::<i64, _, _>(client, vec![key.to_owned()], args),
        );
        match tokio::time::timeout(Duration::from_millis(500), call).await {
            Ok(granted) => Ok(u32::try_from(granted?).unwrap_or(0)),
            Err(_) => Err(ClusterError::Timeout),
        }
    }

    async fn release(&self, key: &str, instance: &str, count: u32) -> Result<(), ClusterError> {
        let client = self.redis.live().ok_or(ClusterError::Down)?;
        let args = vec![instance.to_owned(), count.to_string()];
        let _: i64 = crate::redis::timed(
            "share_release",
            self.release.evalsha_with_reload(client, vec![key.to_owned()], args),
        )
        .await?;
        Ok(())
    }

    async fn set(&self, key: &str, instance: &str, count: u32) -> Result<(), ClusterError> {
        let client = self.redis.live().ok_or(ClusterError::Down)?;
        let args = vec![instance.to_owned(), count.to_string()];
        let _: i64 = crate::redis::timed(
            "share_set",
            self.set.evalsha_with_reload(client, vec![key.to_owned()], args),
        )
        .await?;
        Ok(())
    }
}

/// One count's shares: instance → (share, last written).
type InstanceShares = HashMap<String, (u32, std::time::Instant)>;

/// Shares inside the process: a node alone.
#[derive(Default)]
pub struct LocalCounts {
    counts: Mutex<HashMap<String, InstanceShares>>,
}

impl LocalCounts {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, InstanceShares>> {
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl SharedCounts for LocalCounts {
    async fn acquire(&self, key: &str, instance: &str, max: u32, wanted: u32) -> Result<u32, ClusterError> {
        let mut counts = self.counts();
        let shares = counts.entry(key.to_owned()).or_default();
        shares.retain(|node, (_, at)| node == instance || at.elapsed() < NODE_EXPIRY);
        let room = max.saturating_sub(shares.values().map(|(n, _)| *n).sum::<u32>());
        let granted = room.min(wanted.max(1));
        if granted == 0 {
            return Ok(0);
        }
        let share = shares.entry(instance.to_owned()).or_insert((0, std::time::Instant::now()));
        *share = (share.0 + granted, std::time::Instant::now());
        Ok(granted)
    }

    async fn release(&self, key: &str, instance: &str, count: u32) -> Result<(), ClusterError> {
        let mut counts = self.counts();
        if let Some(shares) = counts.get_mut(key) {
            if let Some(share) = shares.get_mut(instance) {
                *share = (share.0.saturating_sub(count), std::time::Instant::now());
                if share.0 == 0 {
                    shares.remove(instance);
                }
            }
            if shares.is_empty() {
                counts.remove(key);
            }
        }
        Ok(())
    }

    async fn set(&self, key: &str, instance: &str, count: u32) -> Result<(), ClusterError> {
        let mut counts = self.counts();
        let shares = counts.entry(key.to_owned()).or_default();
        if count == 0 {
            shares.remove(instance);
        } else {
            shares.insert(instance.to_owned(), (count, std::time::Instant::now()));
        }
        if shares.is_empty() {
            counts.remove(key);
        }
        Ok(())
    }
}

/// One kind of shared count (`conns`, `presence`); cheap to clone.
#[derive(Clone)]
pub struct Shares {
    inner: Arc<Inner>,
}

struct Inner {
    /// Names the count in its keys: `sb:<name>:<tenant>`.
    name: &'static str,
    shared: Arc<dyn SharedCounts>,
    nodes: Nodes,
    /// This node's exact counts, and the room it holds beyond them.
    local: Mutex<HashMap<Uuid, Held>>,
}

/// One tenant's count on this node: in use, and taken from the shared count
/// but not used yet.
#[derive(Debug, Default)]
struct Held {
    used: u32,
    spare: u32,
    /// How much it takes at once (from the last acquire's limit); it keeps
    /// twice one less than this spare at most.
    chunk: u32,
    /// Held across each of this node's Redis calls for the tenant (taking
    /// room, giving it back, the rewrite), so that none lands between
    /// another's reading of the local count and its write: an absolute
    /// rewrite never erases a grant or a give-back.
    calls: Arc<tokio::sync::Mutex<()>>,
    /// A give-back is on its way.
    trimming: bool,
}

/// How much room a node takes from the shared count at once (one to use, the
/// rest spare), for a limit of `max` over `nodes` live nodes: an eighth of
/// each node's part of the limit, between 1 and 32, so a small limit is
/// counted exactly and a large one costs a Redis call per 32 admissions, not
/// each.
pub fn chunk(max: u32, nodes: u32) -> u32 {
    (max / (8 * nodes.max(1))).clamp(1, 32)
}

impl Inner {
    fn key(&self, tenant: Uuid) -> String {
        format!("sb:{}:{tenant}", self.name)
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Held>> {
        self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Held {
    /// Spare room to give back once it is more than twice a chunk less two:
    /// all but a chunk less one (all of it for a chunk of 1).
    fn excess(&self) -> u32 {
        let keep = self.chunk.saturating_sub(1);
        if self.spare > 2 * keep { self.spare - keep } else { 0 }
    }
}

impl std::fmt::Debug for Shares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shares")
            .field("name", &self.inner.name)
            .field("instance", &self.inner.nodes.instance())
            .finish()
    }
}

impl Shares {
    /// A count called `name`, in Redis or in process; `nodes` names this
    /// instance and tells how many nodes are alive (for the local share while
    /// Redis is away).
    pub fn new(name: &'static str, redis: Option<Redis>, nodes: Nodes) -> Self {
        let shared: Arc<dyn SharedCounts> = match redis {
            Some(redis) => Arc::new(RedisCounts::new(redis)),
            None => Arc::new(LocalCounts::default()),
        };
        Self::with(name, shared, nodes)
    }

    /// A count called `name` kept in `shared`.
    pub fn with(name: &'static str, shared: Arc<dyn SharedCounts>, nodes: Nodes) -> Self {
        let inner = Arc::new(Inner { name, shared, nodes, local: Mutex::new(HashMap::new()) });
        tokio::spawn(reconcile(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Takes room held spare, if there is any and the count is below `max`.
    fn take_spare(&self, tenant: Uuid, max: u32) -> bool {
        let mut local = self.inner.local();
        match local.get_mut(&tenant) {
            Some(held) if held.spare > 0 && held.used < max => {
                held.spare -= 1;
                held.used += 1;
                true
            }
            _ => false,
        }
    }

    /// The lock over this node's Redis calls for `tenant`.
    fn calls(&self, tenant: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        self.inner.local().entry(tenant).or_default().calls.clone()
    }

    /// Takes one for `tenant` if it holds fewer than `max`: from the room this
    /// node holds when it has some, else from the shared count (one call at a
    /// time per tenant: those that come meanwhile use the room it brings).
    pub async fn acquire(&self, tenant: Uuid, max: u32) -> bool {
        if self.take_spare(tenant, max) {
            return true;
        }
        let calls = self.calls(tenant);
        let _calls = calls.lock().await;
        if self.take_spare(tenant, max) {
            return true;
        }
        let instance = self.inner.nodes.instance();
        let chunk = chunk(max, self.inner.nodes.live_nodes());
        match self.inner.shared.acquire(&self.inner.key(tenant), instance, max, chunk).await {
            Ok(granted) => {
                if granted == 0 {
                    return false;
                }
                let mut local = self.inner.local();
                let held = local.entry(tenant).or_default();
                held.used += 1;
                held.spare += granted - 1;
                held.chunk = chunk;
                return true;
            }
            Err(ClusterError::Down) => {}
            Err(e) => {
                tracing::warn!(error = %e, count = self.inner.name, "shared count: redis failed; counting locally")
            }
        }
        let share = (max / self.inner.nodes.live_nodes()).max(1);
        let mut local = self.inner.local();
        let held = local.entry(tenant).or_default();
        if held.used >= share {
            return false;
        }
        held.used += 1;
        true
    }

    /// Gives back one taken by [`Self::acquire`]: it becomes room this node
    /// holds, and what goes beyond twice its chunk goes back to the shared
    /// count (down to one chunk), not one by one as sockets come and go.
    pub fn release(&self, tenant: Uuid) {
        let calls = {
            let mut local = self.inner.local();
            let Some(held) = local.get_mut(&tenant) else { return };
            if held.used == 0 {
                return;
            }
            held.used -= 1;
            held.spare += 1;
            if held.trimming || held.excess() == 0 {
                return;
            }
            held.trimming = true;
            held.calls.clone()
        };
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _calls = calls.lock().await;
            // Read under the lock, so the rewrite cannot come in between.
            let excess = {
                let mut local = inner.local();
                let Some(held) = local.get_mut(&tenant) else { return };
                held.trimming = false;
                let excess = held.excess();
                held.spare -= excess;
                excess
            };
            if excess == 0 {
                return;
            }
            if let Err(e) = inner.shared.release(&inner.key(tenant), inner.nodes.instance(), excess).await {
                tracing::debug!(error = %e, "shared count: release not written; reconciled later");
            }
        });
    }

    /// Rewrites every share this node holds from its local counts, giving
    /// back the room it holds unused (see the module doc).
    async fn write_shares(inner: &Inner) {
        let tenants: Vec<(Uuid, Arc<tokio::sync::Mutex<()>>)> =
            inner.local().iter().map(|(t, h)| (*t, h.calls.clone())).collect();
        for (tenant, calls) in tenants {
            let _calls = calls.lock().await;
            let count = {
                let mut local = inner.local();
                let Some(held) = local.get_mut(&tenant) else { continue };
                held.spare = 0;
                held.used
            };
            if let Err(e) = inner.shared.set(&inner.key(tenant), inner.nodes.instance(), count).await {
                tracing::debug!(error = %e, "shared count: reconcile failed");
                return;
            }
        }
        // Forget tenants with nothing here, unless a call is waiting on them.
        inner.local().retain(|_, h| h.used > 0 || h.spare > 0 || Arc::strong_count(&h.calls) > 1);
    }
}

async fn reconcile(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(RECONCILE_EVERY).await;
        let Some(strong) = inner.upgrade() else { return };
        Shares::write_shares(&strong).await;
    }
}
