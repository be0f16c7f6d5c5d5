//! Presence: who is on a topic, across every node.
//!
//! Guarantees:
//! - An entry is keyed by the node instance and the connection, so one socket
//!   holds one entry per topic and [`Presence::track`] again replaces its state.
//! - A topic holds at most the cap [`Presence::track`] is given; a new entry
//!   past it is refused ([`Tracked::Full`]), a replaced one never is.
//! - [`Presence::list`] never shows an entry of a node that stopped beating (see
//!   [`crate::ratelimit`] for the heartbeat), even before it is reaped.
//! - [`Presence::reap_dead`] removes the entries of nodes that stopped beating and
//!   returns each exactly once across the cluster, so the caller can announce
//!   each departure once. It works a bounded batch of rooms per call, so no
//!   single Redis call walks a dead node's whole index.
//! - Every script touches one key (the room's hash), so presence runs on a
//!   Redis Cluster; a node's index of its rooms is kept with plain commands
//!   and trimmed when its last entry on a room leaves.
//!
//! Without Redis the same holds inside the process (there is no other node).

use crate::{ClusterError, RateLimiter, Redis};
use fred::prelude::*;
use fred::types::scripts::Script;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// KEYS: the room's hash. ARGV: field, entry, cap. 1 added, 2 replaced, 0 full.
const TRACK: &str = r#"
local existed = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
if (not existed) and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if existed then return 2 end
return 1
"#;

/// KEYS: the room's hash. ARGV: field. The removed entry, or nil.
const UNTRACK: &str = r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
return v
"#;

/// KEYS: the room's hash. ARGV: dead instance. Removes its entries and returns
/// those this call removed (so two reapers never announce one twice).
const REAP_ROOM: &str = r#"
local prefix = ARGV[1] .. '/'
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  if string.sub(all[i], 1, #prefix) == prefix and redis.call('HDEL', KEYS[1], all[i]) == 1 then
    out[#out + 1] = all[i + 1]
  end
end
return out
"#;

/// Instances that have (or had) presence entries.
const PRESENCE_NODES: &str = "sb:presence:nodes";

/// Rooms a dead node's index yields to one reaping pass.
const REAP_BATCH: u32 = 100;

/// The outcome of [`Presence::track`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracked {
    /// A new entry.
    Added,
    /// The connection's entry on the room, with its new state.
    Replaced,
    /// The room holds its cap of entries.
    Full,
}

/// Presence entries; cheap to clone.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    instance: String,
    limiter: RateLimiter,
    backend: Backend,
    /// This node's entries per room, to know when its last one on a room left.
    mine: Mutex<HashMap<String, usize>>,
}

type LocalRooms = HashMap<String, HashMap<String, String>>;

// One per process, behind an Arc: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Redis { redis: Redis, track: Script, untrack: Script, reap: Script },
    Local(Mutex<LocalRooms>),
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence").field("instance", &self.inner.instance).finish_non_exhaustive()
    }
}

fn hash_key(room: &str) -> String {
    crate::topics::room_key(room, 'p')
}

fn index_key(instance: &str) -> String {
    format!("sb:presence:{instance}")
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Presence {
    /// `instance` names this process in the cluster (the heartbeat's member);
    /// `limiter` tells which nodes are alive.
    pub fn new(redis: Option<Redis>, instance: &str, limiter: RateLimiter) -> Self {
        let backend = match redis {
            Some(redis) => Backend::Redis {
                redis,
                track: Script::from_lua(TRACK),
                untrack: Script::from_lua(UNTRACK),
                reap: Script::from_lua(REAP_ROOM),
            },
            None => Backend::Local(Mutex::new(HashMap::new())),
        };
        Self {
            inner: Arc::new(Inner {
                instance: instance.to_owned(),
                limiter,
                backend,
                mine: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn field(&self, conn: &str) -> String {
        format!("{}/{conn}", self.inner.instance)
    }

    /// Sets connection `conn`'s entry on `room` to `entry`, unless that would be
    /// more than `cap` entries on the room.
    pub async fn track(
        &self,
        room: &str,
        conn: &str,
        entry: &str,
        cap: u32,
    ) -> Result<Tracked, ClusterError> {
        let field = self.field(conn);
        let replaced = match &self.inner.backend {
            Backend::Redis { redis, track, .. } => {
                // The index first: an entry the index does not name could never
                // be reaped. Both sets are added to on every track, in one round
                // trip: a node that was reaped while it stalled, or a Redis that
                // lost its data, is named again by the next entry it stores.
                let client = redis.client();
                let pipe = client.pipeline();
                let _: () = pipe.sadd(PRESENCE_NODES, self.inner.instance.as_str()).await?;
                let _: () = pipe.sadd(index_key(&self.inner.instance), room).await?;
                let _: Vec<i64> = pipe.all().await?;
                let args = vec![field, entry.to_owned(), cap.to_string()];
                let stored: i64 = track.evalsha_with_reload(client, vec![hash_key(room)], args).await?;
                if stored == 0 {
                    return Ok(Tracked::Full);
                }
                stored == 2
            }
            Backend::Local(rooms) => {
                let mut rooms = lock(rooms);
                let entries = rooms.entry(room.to_owned()).or_default();
                let existed = entries.contains_key(&field);
                if !existed && entries.len() >= cap as usize {
                    return Ok(Tracked::Full);
                }
                entries.insert(field, entry.to_owned());
                existed
            }
        };
        if replaced {
            return Ok(Tracked::Replaced);
        }
        *lock(&self.inner.mine).entry(room.to_owned()).or_insert(0) += 1;
        Ok(Tracked::Added)
    }

    /// Removes `conn`'s entry on `room`; returns it if there was one.
    pub async fn untrack(&self, room: &str, conn: &str) -> Result<Option<String>, ClusterError> {
        let field = self.field(conn);
        let removed: Option<String> = match &self.inner.backend {
            Backend::Redis { redis, untrack, .. } => {
                untrack.evalsha_with_reload(redis.client(), vec![hash_key(room)], vec![field]).await?
            }
            Backend::Local(rooms) => {
                let mut rooms = lock(rooms);
                let removed = rooms.get_mut(room).and_then(|m| m.remove(&field));
                if rooms.get(room).is_some_and(HashMap::is_empty) {
                    rooms.remove(room);
                }
                removed
            }
        };
        if removed.is_some() {
            let last = {
                let mut mine = lock(&self.inner.mine);
                let n = mine.entry(room.to_owned()).or_insert(1);
                *n = n.saturating_sub(1);
                let last = *n == 0;
                if last {
                    mine.remove(room);
                }
                last
            };
            if let (true, Backend::Redis { redis, .. }) = (last, &self.inner.backend) {
                let _: Result<(), _> = redis.client().srem(index_key(&self.inner.instance), room).await;
            }
        }
        Ok(removed)
    }

    /// Every live entry on `room`.
    pub async fn list(&self, room: &str) -> Result<Vec<String>, ClusterError> {
        match &self.inner.backend {
            Backend::Redis { redis, .. } => {
                let client = redis.client();
                let all: HashMap<String, String> = client.hgetall(hash_key(room)).await?;
                let node_of = |field: &str| field.rsplit_once('/').map(|(node, _)| node.to_owned());
                let mut live: HashSet<String> = self.inner.limiter.live_set().iter().cloned().collect();
                // Nodes this node has not seen beat (just started, or dead and
                // not yet reaped): asked about now, once per list.
                let unknown: Vec<String> = all
                    .keys()
                    .filter_map(|f| node_of(f))
                    .filter(|n| !live.contains(n))
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                if !unknown.is_empty() {
                    let scores: Vec<Option<f64>> =
                        client.zmscore(crate::ratelimit::NODES_KEY, unknown.clone()).await?;
                    let oldest = unix_now() - crate::ratelimit::NODE_EXPIRY.as_secs_f64();
                    for (node, score) in unknown.into_iter().zip(scores) {
                        if score.is_some_and(|s| s >= oldest) {
                            live.insert(node);
                        }
                    }
                }
                Ok(all
                    .into_iter()
                    .filter(|(field, _)| node_of(field).is_some_and(|n| live.contains(&n)))
                    .map(|(_, entry)| entry)
                    .collect())
            }
            Backend::Local(rooms) => {
                Ok(lock(rooms).get(room).map(|m| m.values().cloned().collect()).unwrap_or_default())
            }
        }
    }

    /// Removes entries of nodes that stopped beating, a batch of rooms per dead
    /// node at a time: `(room, entry)` pairs, each returned once in the cluster.
    pub async fn reap_dead(&self) -> Result<Vec<(String, String)>, ClusterError> {
        let Backend::Redis { redis, reap, .. } = &self.inner.backend else {
            return Ok(Vec::new());
        };
        let client = redis.client();
        let live = self.inner.limiter.live_set();
        let nodes: Vec<String> = client.smembers(PRESENCE_NODES).await?;
        let mut out = Vec::new();
        for node in nodes.into_iter().filter(|n| !live.contains(n)) {
            // Fresh from Redis: a node that beats now (it just started) is spared.
            let score: Option<f64> = client.zscore(crate::ratelimit::NODES_KEY, node.as_str()).await?;
            if score.is_some_and(|s| s >= unix_now() - crate::ratelimit::NODE_EXPIRY.as_secs_f64()) {
                continue;
            }
            let index = index_key(&node);
            let rooms: Vec<String> = client.srandmember(index.as_str(), Some(REAP_BATCH as usize)).await?;
            for room in &rooms {
                let gone: Vec<String> =
                    reap.evalsha_with_reload(client, vec![hash_key(room)], vec![node.clone()]).await?;
                out.extend(gone.into_iter().map(|entry| (room.clone(), entry)));
            }
            if !rooms.is_empty() {
                let _: () = client.srem(index.as_str(), rooms).await?;
            }
            let left: u64 = client.scard(index.as_str()).await?;
            if left == 0 {
                let _: () = client.srem(PRESENCE_NODES, node.as_str()).await?;
            }
        }
        Ok(out)
    }
}
