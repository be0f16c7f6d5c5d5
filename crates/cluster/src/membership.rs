//! Node membership: which instances of the cluster are alive.
//!
//! Guarantees:
//! - An instance counts as alive while it beats: [`Nodes`] beats every 2 s
//!   through its [`Membership`], and an instance that stops leaves the view
//!   after 10 s ([`NODE_EXPIRY`]). A node sees itself alive, always.
//! - [`Nodes::live_set`] is the view as of the last beat (no round trip), for
//!   hot paths: a node's share of a limit while Redis is away, the entries
//!   presence lists. [`Nodes::alive`] asks now, for the instances the view
//!   does not name (one that just started, or one that died and is not yet
//!   reaped).
//!
//! [`RedisMembership`] keeps the beats in one sorted set (instance → last beat,
//! Unix seconds); [`LocalMembership`] is a node alone.

use crate::{ClusterError, Redis};
use fred::prelude::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often a node beats.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long an instance that stopped beating still counts as alive.
pub const NODE_EXPIRY: Duration = Duration::from_secs(10);
const NODES_KEY: &str = "sb:nodes";

/// Where beats are kept: the role behind [`Nodes`].
#[async_trait::async_trait]
pub trait Membership: Send + Sync + 'static {
    /// Records a beat of `instance` now; returns every instance that beat
    /// within [`NODE_EXPIRY`] (with `instance`).
    async fn beat(&self, instance: &str) -> Result<HashSet<String>, ClusterError>;

    /// Of `instances`, those that beat within [`NODE_EXPIRY`], asked now.
    async fn alive(&self, instances: &[String]) -> Result<HashSet<String>, ClusterError>;
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Beats in Redis: one sorted set shared by the cluster.
pub struct RedisMembership {
    redis: Redis,
}

impl RedisMembership {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }
}

#[async_trait::async_trait]
impl Membership for RedisMembership {
    async fn beat(&self, instance: &str) -> Result<HashSet<String>, ClusterError> {
        let client = self.redis.live().ok_or(ClusterError::Down)?;
        let now = unix_now();
        let oldest = now - NODE_EXPIRY.as_secs_f64();
        let _: () = client.zadd(NODES_KEY, None, None, false, false, (now, instance)).await?;
        let _: () = client.zremrangebyscore(NODES_KEY, 0.0, oldest).await?;
        let names: Vec<String> = client.zrangebyscore(NODES_KEY, oldest, "+inf", false, None).await?;
        Ok(names.into_iter().collect())
    }

    async fn alive(&self, instances: &[String]) -> Result<HashSet<String>, ClusterError> {
        if instances.is_empty() {
            return Ok(HashSet::new());
        }
        let scores: Vec<Option<f64>> = self.redis.client().zmscore(NODES_KEY, instances.to_vec()).await?;
        let oldest = unix_now() - NODE_EXPIRY.as_secs_f64();
        Ok(instances
            .iter()
            .zip(scores)
            .filter(|(_, score)| score.is_some_and(|s| s >= oldest))
            .map(|(instance, _)| instance.clone())
            .collect())
    }
}

/// A node alone: only the instances that beat through it, itself.
#[derive(Default)]
pub struct LocalMembership {
    beats: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

#[async_trait::async_trait]
impl Membership for LocalMembership {
    async fn beat(&self, instance: &str) -> Result<HashSet<String>, ClusterError> {
        let mut beats = self.beats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        beats.insert(instance.to_owned(), std::time::Instant::now());
        beats.retain(|_, at| at.elapsed() < NODE_EXPIRY);
        Ok(beats.keys().cloned().collect())
    }

    async fn alive(&self, instances: &[String]) -> Result<HashSet<String>, ClusterError> {
        let beats = self.beats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(instances
            .iter()
            .filter(|i| beats.get(*i).is_some_and(|at| at.elapsed() < NODE_EXPIRY))
            .cloned()
            .collect())
    }
}

/// This node's membership: its beat and its view of the others; cheap to clone.
#[derive(Clone)]
pub struct Nodes {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Membership>,
    instance: String,
    live: RwLock<Arc<HashSet<String>>>,
    count: AtomicU32,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nodes")
            .field("instance", &self.inner.instance)
            .field("live", &self.live_nodes())
            .finish()
    }
}

impl Nodes {
    /// Membership in Redis, or alone without it, as `instance`; beats in the
    /// background from now on (call from within a tokio runtime).
    pub fn new(redis: Option<Redis>, instance: &str) -> Self {
        match redis {
            Some(redis) => Self::with(Arc::new(RedisMembership::new(redis)), instance),
            None => Self::with(Arc::new(LocalMembership::default()), instance),
        }
    }

    /// Membership through `backend`, as `instance`.
    pub fn with(backend: Arc<dyn Membership>, instance: &str) -> Self {
        let nodes = Self {
            inner: Arc::new(Inner {
                backend,
                instance: instance.to_owned(),
                live: RwLock::new(Arc::new(HashSet::from([instance.to_owned()]))),
                count: AtomicU32::new(1),
            }),
        };
        tokio::spawn(heartbeat(Arc::downgrade(&nodes.inner)));
        nodes
    }

    /// Beats once now, so this node counts as alive before it serves anything.
    pub async fn join(&self) {
        beat(&self.inner).await;
    }

    /// This process's name in the cluster.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// The instances alive as of the last beat (always this one).
    pub fn live_set(&self) -> Arc<HashSet<String>> {
        self.inner.live.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// How many instances are alive, as of the last beat (at least 1).
    pub fn live_nodes(&self) -> u32 {
        self.inner.count.load(Ordering::Relaxed).max(1)
    }

    /// Of `instances`, those alive now (this one always is).
    pub async fn alive(&self, instances: &[String]) -> Result<HashSet<String>, ClusterError> {
        let mut alive = self.inner.backend.alive(instances).await?;
        if instances.contains(&self.inner.instance) {
            alive.insert(self.inner.instance.clone());
        }
        Ok(alive)
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

async fn beat(inner: &Inner) {
    match inner.backend.beat(&inner.instance).await {
        Ok(mut live) => {
            live.insert(inner.instance.clone());
            inner.count.store(live.len() as u32, Ordering::Relaxed);
            if let Ok(mut l) = inner.live.write() {
                *l = Arc::new(live);
            }
        }
        Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
    }
}
