//! The namespaced per-tenant cache: moka (L1) on every node, Redis (L2) shared.
//!
//! Guarantees:
//! - Keys live in a namespace per tenant and [`Kind`], which carries a version.
//!   [`Cache::invalidate`] bumps the version (in Redis, `INCR`) and publishes it;
//!   every node drops to the new version on the message, so a change is seen
//!   cluster-wide within a pub/sub hop. Entries of old versions are never read
//!   again and age out.
//! - If the subscriber reconnects (messages may have been missed), the node forgets
//!   every version and L1 entry and re-reads versions from Redis.
//! - Concurrent misses of one key on one node load once (moka's `try_get_with`).
//! - L1 and L2 entries expire after their TTL with ±10% jitter, which bounds
//!   staleness even if an invalidation were lost entirely.
//! - Without Redis the cache is L1 only, and invalidation is local.
//! - Redis errors never fail a lookup: the value is loaded from the source, and
//!   while Redis is down no lookup waits on it.
//! - [`Cache::invalidate`] says whether Redis took the invalidation. One that
//!   did not reach it must be carried some other way (the directory keeps it in
//!   Postgres); meanwhile [`Cache::hold`] names the namespaces whose Redis
//!   entries may be stale, and lookups in them skip L2 until the version in
//!   Redis has been bumped.
//!
//! The second layer is the role [`SharedCache`], kept in Redis by
//! [`RedisCache`]; a node alone has none.

use crate::{ClusterError, Redis};
use fred::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

const CHANNEL: &str = "sb:cache:invalidate";

/// A key was read as a different type than it was stored as (a programming error).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("a cache key was read as a different type than it holds")]
pub struct TypeMismatch;

/// What a namespace holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A tenant's status and limits.
    Tenant,
    /// API-key lookups by hash (platform-wide, keyed by the nil tenant).
    ApiKey,
    /// Authorization answers (may this user subscribe to that conversation).
    Authz,
    /// Runs' status, for writes that must not touch Postgres (streamed deltas).
    Run,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tenant => "tenant",
            Kind::ApiKey => "api_key",
            Kind::Authz => "authz",
            Kind::Run => "run",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tenant" => Some(Kind::Tenant),
            "api_key" => Some(Kind::ApiKey),
            "authz" => Some(Kind::Authz),
            "run" => Some(Kind::Run),
            _ => None,
        }
    }
}

/// A tenant's namespace of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Namespace {
    pub tenant: Uuid,
    pub kind: Kind,
}

impl Namespace {
    pub fn new(tenant: Uuid, kind: Kind) -> Self {
        Self { tenant, kind }
    }

    fn version_key(&self) -> String {
        format!("sb:cv:{}:{}", self.tenant, self.kind.as_str())
    }

    fn entry_key(&self, version: u64, key: &str) -> String {
        format!("sb:c:{}:{}:{version}:{key}", self.tenant, self.kind.as_str())
    }
}

/// An L1 entry's key: the namespace's version in Redis (which L2 keys carry
/// too) and this node's own generation of it, moved on by invalidations Redis
/// did not take. A local generation never names an L2 entry, so nodes whose
/// local counts happen to agree cannot share stale entries through Redis.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct L1Key {
    ns: Namespace,
    version: u64,
    generation: u64,
    key: String,
}

/// Hit and miss counts per layer since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    pub l1_hits: u64,
    pub l2_hits: u64,
    /// Lookups that went to the source.
    pub misses: u64,
}

impl CacheStats {
    /// The share of lookups that did not reach the source.
    pub fn hit_rate(&self) -> f64 {
        let total = self.l1_hits + self.l2_hits + self.misses;
        if total == 0 { 0.0 } else { (self.l1_hits + self.l2_hits) as f64 / total as f64 }
    }
}

#[derive(Default)]
struct Counters {
    l1_hits: AtomicU64,
    l2_hits: AtomicU64,
    misses: AtomicU64,
}

type Value = Arc<dyn Any + Send + Sync>;

/// The cache's second layer, shared by every node: the role behind [`Cache`].
#[async_trait::async_trait]
pub trait SharedCache: Send + Sync + 'static {
    /// Whether it can answer now: while it cannot, lookups skip it at once.
    fn live(&self) -> bool;

    /// `ns`'s version (0 before its first invalidation).
    async fn version(&self, ns: Namespace) -> Result<u64, ClusterError>;

    async fn get(&self, key: &str) -> Result<Option<String>, ClusterError>;

    async fn set(&self, key: &str, value: String, ttl: Duration) -> Result<(), ClusterError>;

    /// Bumps `ns`'s version and tells every node; the new version. An error
    /// after the bump is logged, not returned (the TTL bounds what it costs).
    async fn bump(&self, ns: Namespace) -> Result<u64, ClusterError>;
}

/// The second layer in Redis: entries under versioned keys, versions under
/// `sb:cv:…`, invalidations on one pub/sub channel.
pub struct RedisCache {
    redis: Redis,
}

impl RedisCache {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }
}

#[async_trait::async_trait]
impl SharedCache for RedisCache {
    fn live(&self) -> bool {
        self.redis.live().is_some()
    }

    async fn version(&self, ns: Namespace) -> Result<u64, ClusterError> {
        let client = self.redis.live().ok_or(ClusterError::Down)?;
        Ok(client.get::<Option<u64>, _>(ns.version_key()).await?.unwrap_or(0))
    }

    async fn get(&self, key: &str) -> Result<Option<String>, ClusterError> {
        let client = self.redis.live().ok_or(ClusterError::Down)?;
        Ok(client.get::<Option<String>, _>(key).await?)
    }

    async fn set(&self, key: &str, value: String, ttl: Duration) -> Result<(), ClusterError> {
        let client = self.redis.live().ok_or(ClusterError::Down)?;
        let ttl = ttl.as_secs().max(1) as i64;
        let _: () = client.set(key, value, Some(Expiration::EX(ttl)), None, false).await?;
        Ok(())
    }

    async fn bump(&self, ns: Namespace) -> Result<u64, ClusterError> {
        let client = self.redis.live().ok_or(ClusterError::Down)?;
        let v: u64 = client.incr(ns.version_key()).await?;
        let message = format!("{}:{}:{v}", ns.tenant, ns.kind.as_str());
        let published: Result<(), _> = client.publish(CHANNEL, message).await;
        if let Err(e) = published {
            tracing::warn!(error = %e, "cache: invalidation not published; other nodes rely on TTL");
        }
        Ok(v)
    }
}

struct Inner {
    l1: moka::future::Cache<L1Key, Value>,
    versions: moka::sync::Cache<Namespace, u64>,
    generations: moka::sync::Cache<Namespace, u64>,
    l2: Option<Arc<dyn SharedCache>>,
    l2_ttl: Duration,
    counters: Counters,
    /// Namespaces whose L2 entries may predate an invalidation Redis missed.
    held: std::sync::RwLock<Arc<std::collections::HashSet<Namespace>>>,
}

/// The cache; cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("stats", &self.stats()).finish()
    }
}

/// ±10% of `ttl`, so entries made together do not expire together.
fn jittered(ttl: Duration) -> Duration {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let spread = ttl.as_millis() as u64 / 5;
    if spread == 0 {
        return ttl;
    }
    let offset = u64::from(nanos) % spread;
    ttl - Duration::from_millis(spread / 2) + Duration::from_millis(offset)
}

struct JitterExpiry(Duration);

impl moka::Expiry<L1Key, Value> for JitterExpiry {
    fn expire_after_create(&self, _: &L1Key, _: &Value, _: std::time::Instant) -> Option<Duration> {
        Some(jittered(self.0))
    }
}

impl Cache {
    /// A cache holding at most `capacity` L1 entries. With `redis`, it subscribes
    /// to invalidations (call from within a tokio runtime).
    pub async fn new(redis: Option<Redis>, capacity: u64, l1_ttl: Duration, l2_ttl: Duration) -> Self {
        let inner = Arc::new(Inner {
            l1: moka::future::Cache::builder()
                .max_capacity(capacity)
                .expire_after(JitterExpiry(l1_ttl))
                .build(),
            versions: moka::sync::Cache::builder().max_capacity(capacity).build(),
            generations: moka::sync::Cache::builder().max_capacity(capacity).build(),
            l2: redis.clone().map(|r| Arc::new(RedisCache::new(r)) as Arc<dyn SharedCache>),
            l2_ttl,
            counters: Counters::default(),
            held: Default::default(),
        });
        if let Some(redis) = &redis {
            if let Err(e) = redis.subscribe(CHANNEL).await {
                tracing::warn!(error = %e, "cache: cannot subscribe to invalidations yet; will on reconnect");
            }
            tokio::spawn(listen(Arc::downgrade(&inner), redis.clone()));
        }
        Self { inner }
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        CacheStats {
            l1_hits: c.l1_hits.load(Ordering::Relaxed),
            l2_hits: c.l2_hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
        }
    }

    /// The current version of `ns` as this node knows it (a Redis read the first
    /// time a namespace is seen, then none until it changes).
    async fn version(&self, ns: Namespace) -> u64 {
        if let Some(v) = self.inner.versions.get(&ns) {
            return v;
        }
        let v = match &self.inner.l2 {
            // Down: not remembered, so the next lookup asks Redis again.
            Some(l2) => match l2.version(ns).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(error = %e, "cache: version read failed");
                    return 0;
                }
            },
            None => 0,
        };
        self.inner.versions.insert(ns, v);
        v
    }

    /// The value of `key` in `ns`: from L1, else L2, else `load` (whose result is
    /// stored in both). Concurrent misses on this node share one `load`.
    ///
    /// A hit builds no loader: the miss's future (a Redis read, `load`'s
    /// Postgres calls, a Redis write) is kilobytes, and every caller's future
    /// would carry it inline, to be allocated and copied wherever the caller's
    /// is (a socket event's handler is a task of its own). A miss goes
    /// through one boxed future instead.
    pub async fn get_or_load<T, E, F, Fut>(&self, ns: Namespace, key: &str, load: F) -> Result<T, Arc<E>>
    where
        T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
        E: From<TypeMismatch> + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let version = self.version(ns).await;
        let generation = self.inner.generations.get(&ns).unwrap_or(0);
        let l1_key = L1Key { ns, version, generation, key: key.to_owned() };
        let inner = &self.inner;
        let value = match inner.l1.get(&l1_key).await {
            Some(value) => {
                inner.counters.l1_hits.fetch_add(1, Ordering::Relaxed);
                value
            }
            None => Box::pin(self.load_l1(l1_key, load)).await?,
        };
        match value.downcast_ref::<T>() {
            Some(v) => Ok(v.clone()),
            // The same key read as two types: a bug. Drop the entry and say so.
            None => {
                tracing::error!(kind = ns.kind.as_str(), "cache: one key read as two types");
                inner.l1.invalidate(&L1Key { ns, version, generation, key: key.to_owned() }).await;
                Err(Arc::new(E::from(TypeMismatch)))
            }
        }
    }

    /// [`Self::get_or_load`]'s miss: L2, else `load`, into L1 (shared with
    /// the concurrent misses on this node).
    async fn load_l1<T, E, F, Fut>(&self, l1_key: L1Key, load: F) -> Result<Value, Arc<E>>
    where
        T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let (ns, version, key) = (l1_key.ns, l1_key.version, l1_key.key.clone());
        let missed = AtomicBool::new(false);
        let inner = &self.inner;
        let held = inner.held.read().map(|h| h.contains(&ns)).unwrap_or(false);
        let l2 = || if held { None } else { inner.l2.as_ref().filter(|l2| l2.live()) };
        let value = inner
            .l1
            .try_get_with(l1_key, async {
                missed.store(true, Ordering::Relaxed);
                let l2_key = ns.entry_key(version, &key);
                if let Some(l2) = l2() {
                    match l2.get(&l2_key).await {
                        Ok(Some(json)) => {
                            if let Ok(v) = serde_json::from_str::<T>(&json) {
                                inner.counters.l2_hits.fetch_add(1, Ordering::Relaxed);
                                return Ok(Arc::new(v) as Value);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::debug!(error = %e, "cache: L2 read failed"),
                    }
                }
                inner.counters.misses.fetch_add(1, Ordering::Relaxed);
                let v = load().await?;
                if let (Some(l2), Ok(json)) = (l2(), serde_json::to_string(&v))
                    && let Err(e) = l2.set(&l2_key, json, jittered(inner.l2_ttl)).await
                {
                    tracing::debug!(error = %e, "cache: L2 write failed");
                }
                Ok(Arc::new(v) as Value)
            })
            .await?;
        // Another miss loaded it meanwhile: a hit for this one.
        if !missed.load(Ordering::Relaxed) {
            inner.counters.l1_hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(value)
    }

    /// Makes every node stop using what `ns` held. `false` when Redis did not
    /// take it (other nodes were not told and its L2 entries stand).
    pub async fn invalidate(&self, ns: Namespace) -> bool {
        let bumped = match &self.inner.l2 {
            Some(l2) if l2.live() => match l2.bump(ns).await {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(error = %e, "cache: version bump failed; other nodes rely on TTL");
                    None
                }
            },
            Some(_) => {
                tracing::warn!("cache: redis is down; the invalidation is kept elsewhere until it returns");
                None
            }
            None => None,
        };
        self.bump_local(ns, bumped);
        bumped.is_some() || self.inner.l2.is_none()
    }

    /// Whether an invalidation now would reach Redis (always, without Redis).
    pub fn reaches_redis(&self) -> bool {
        self.inner.l2.as_ref().is_none_or(|l2| l2.live())
    }

    /// Drops this node's view of `ns` (its L1 entries are not read again).
    pub fn forget(&self, ns: Namespace) {
        self.bump_local(ns, None);
    }

    /// Moves to Redis's new version `to`, or, without one, to this node's next
    /// generation (which drops L1 but names no L2 entry).
    fn bump_local(&self, ns: Namespace, to: Option<u64>) {
        match to {
            Some(v) => {
                let current = self.inner.versions.get(&ns).unwrap_or(0);
                self.inner.versions.insert(ns, current.max(v));
            }
            None => {
                let generation = self.inner.generations.get(&ns).unwrap_or(0);
                self.inner.generations.insert(ns, generation + 1);
            }
        }
    }

    /// The namespaces whose Redis entries may be stale: lookups in them skip
    /// L2 until the next call leaves them out.
    pub fn hold(&self, namespaces: std::collections::HashSet<Namespace>) {
        if let Ok(mut held) = self.inner.held.write() {
            *held = Arc::new(namespaces);
        }
    }
}

async fn listen(inner: std::sync::Weak<Inner>, redis: Redis) {
    let mut messages = redis.messages();
    let mut reconnects = redis.reconnects();
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(m) if m.channel == CHANNEL => {
                    let Some(inner) = inner.upgrade() else { return };
                    if let Some(text) = m.value.as_string() {
                        apply(&inner, &text);
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let Some(inner) = inner.upgrade() else { return };
                    forget_all(&inner);
                }
                Err(_) => return,
            },
            reconnect = reconnects.recv() => match reconnect {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let Some(inner) = inner.upgrade() else { return };
                    forget_all(&inner);
                }
                Err(_) => return,
            },
        }
    }
}

fn apply(inner: &Inner, text: &str) {
    let mut parts = text.splitn(3, ':');
    let (Some(tenant), Some(kind), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let (Ok(tenant), Some(kind), Ok(version)) =
        (tenant.parse::<Uuid>(), Kind::parse(kind), version.parse::<u64>())
    else {
        return;
    };
    let ns = Namespace { tenant, kind };
    let current = inner.versions.get(&ns).unwrap_or(0);
    inner.versions.insert(ns, current.max(version));
}

/// After a gap in the message stream nothing local can be trusted.
fn forget_all(inner: &Inner) {
    inner.versions.invalidate_all();
    inner.l1.invalidate_all();
}
