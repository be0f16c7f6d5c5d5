//! Presence: who is on a topic, across every node.
//!
//! Guarantees:
//! - An entry is keyed by the node instance and the connection, so one socket
//!   holds one entry per topic and [`Presence::track`] again replaces its state.
//! - A topic holds at most the cap [`Presence::track`] is given; a new entry
//!   past it is refused ([`Tracked::Full`]), a replaced one never is.
//! - [`Presence::list`] never shows an entry of a node that stopped beating (see
//!   [`crate::membership`] for the heartbeat), even before it is reaped.
//! - [`Presence::reap_dead`] removes the entries of nodes that stopped beating and
//!   returns each exactly once across the cluster, so the caller can announce
//!   each departure once. It works a bounded batch of rooms per call, so no
//!   single Redis call walks a dead node's whole index.
//! - Every script touches one key (the room's hash), so presence runs on a
//!   Redis Cluster; a node's index of its rooms is kept with plain commands
//!   and trimmed when its last entry on a room leaves.
//!
//! Without Redis the same holds inside the process (there is no other node).
//! The role is [`PresenceStore`]: [`RedisPresence`] shared by the cluster,
//! [`LocalPresence`] inside the process.

use crate::{ClusterError, Nodes, Redis};
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

/// Where entries are kept: the role behind [`Presence`]. An entry's field is
/// `<instance>/<connection>`.
#[async_trait::async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Sets `field`'s entry on `room` unless the room holds `cap` others:
    /// `None` when full, else whether an entry was replaced.
    async fn put(
        &self,
        instance: &str,
        room: &str,
        field: &str,
        entry: &str,
        cap: u32,
    ) -> Result<Option<bool>, ClusterError>;

    /// Removes `field`'s entry on `room`; returns it if there was one.
    async fn remove(&self, room: &str, field: &str) -> Result<Option<String>, ClusterError>;

    /// `instance` holds no entry on `room` any more (its index of rooms shrinks).
    async fn left(&self, instance: &str, room: &str) -> Result<(), ClusterError>;

    /// Every entry on `room`: (field, entry).
    async fn entries(&self, room: &str) -> Result<Vec<(String, String)>, ClusterError>;

    /// The instances that hold (or held) entries.
    async fn instances(&self) -> Result<Vec<String>, ClusterError>;

    /// Removes `instance`'s entries from up to `batch` of its rooms: the
    /// (room, entry) pairs removed by this call, and whether it holds none now.
    async fn reap(&self, instance: &str, batch: u32) -> Result<(Vec<(String, String)>, bool), ClusterError>;
}

/// Entries in Redis: a hash per room (`sb:{room}:p`), an index of rooms per
/// instance and the set of instances.
pub struct RedisPresence {
    redis: Redis,
    track: Script,
    untrack: Script,
    reap: Script,
}

impl RedisPresence {
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            track: Script::from_lua(TRACK),
            untrack: Script::from_lua(UNTRACK),
            reap: Script::from_lua(REAP_ROOM),
        }
    }
}

#[async_trait::async_trait]
impl PresenceStore for RedisPresence {
    async fn put(
        &self,
        instance: &str,
        room: &str,
        field: &str,
        entry: &str,
        cap: u32,
    ) -> Result<Option<bool>, ClusterError> {
        // The index first: an entry the index does not name could never be
        // reaped. Both sets are added to on every track, in one round trip: a
        // node that was reaped while it stalled, or a Redis that lost its data,
        // is named again by the next entry it stores.
        let client = self.redis.client();
        let pipe = client.pipeline();
        let _: () = pipe.sadd(PRESENCE_NODES, instance).await?;
        let _: () = pipe.sadd(index_key(instance), room).await?;
        let _: Vec<i64> = pipe.all().await?;
        let args = vec![field.to_owned(), entry.to_owned(), cap.to_string()];
        let stored: i64 = crate::redis::timed(
            "presence_track",
            self.track.evalsha_with_reload(client, vec![hash_key(room)], args),
        )
        .await?;
        Ok((stored != 0).then_some(stored == 2))
    }

    async fn remove(&self, room: &str, field: &str) -> Result<Option<String>, ClusterError> {
        let removed: Option<String> = crate::redis::timed(
            "presence_untrack",
            self.untrack.evalsha_with_reload(
                self.redis.client(),
                vec![hash_key(room)],
                vec![field.to_owned()],
            ),
        )
        .await?;
        Ok(removed)
    }

    async fn left(&self, instance: &str, room: &str) -> Result<(), ClusterError> {
        let _: () = self.redis.client().srem(index_key(instance), room).await?;
        Ok(())
    }

    async fn entries(&self, room: &str) -> Result<Vec<(String, String)>, ClusterError> {
        let all: HashMap<String, String> = self.redis.client().hgetall(hash_key(room)).await?;
        Ok(all.into_iter().collect())
    }

    async fn instances(&self) -> Result<Vec<String>, ClusterError> {
        Ok(self.redis.client().smembers(PRESENCE_NODES).await?)
    }

    async fn reap(&self, instance: &str, batch: u32) -> Result<(Vec<(String, String)>, bool), ClusterError> {
        let client = self.redis.client();
        let index = index_key(instance);
        let rooms: Vec<String> = client.srandmember(index.as_str(), Some(batch as usize)).await?;
        let mut out = Vec::new();
        for room in &rooms {
            let gone: Vec<String> = crate::redis::timed(
                "presence_reap",
                self.reap.evalsha_with_reload(client, vec![hash_key(room)], vec![instance.to_owned()]),
            )
            .await?;
            out.extend(gone.into_iter().map(|entry| (room.clone(), entry)));
        }
        if !rooms.is_empty() {
            let _: () = client.srem(index.as_str(), rooms).await?;
        }
        let left: u64 = client.scard(index.as_str()).await?;
        if left == 0 {
            let _: () = client.srem(PRESENCE_NODES, instance).await?;
        }
        Ok((out, left == 0))
    }
}

/// Entries inside the process: room → field → entry.
#[derive(Default)]
pub struct LocalPresence {
    rooms: Mutex<HashMap<String, HashMap<String, String>>>,
}

/// Whether `field` belongs to `instance`.
fn owned_by(instance: &str, field: &str) -> bool {
    field.strip_prefix(instance).is_some_and(|rest| rest.starts_with('/'))
}

#[async_trait::async_trait]
impl PresenceStore for LocalPresence {
    async fn put(
        &self,
        _instance: &str,
        room: &str,
        field: &str,
        entry: &str,
        cap: u32,
    ) -> Result<Option<bool>, ClusterError> {
        let mut rooms = lock(&self.rooms);
        let entries = rooms.entry(room.to_owned()).or_default();
        let existed = entries.contains_key(field);
        if !existed && entries.len() >= cap as usize {
            return Ok(None);
        }
        entries.insert(field.to_owned(), entry.to_owned());
        Ok(Some(existed))
    }

    async fn remove(&self, room: &str, field: &str) -> Result<Option<String>, ClusterError> {
        let mut rooms = lock(&self.rooms);
        let removed = rooms.get_mut(room).and_then(|m| m.remove(field));
        if rooms.get(room).is_some_and(HashMap::is_empty) {
            rooms.remove(room);
        }
        Ok(removed)
    }

    async fn left(&self, _instance: &str, _room: &str) -> Result<(), ClusterError> {
        Ok(())
    }

    async fn entries(&self, room: &str) -> Result<Vec<(String, String)>, ClusterError> {
        let rooms = lock(&self.rooms);
        Ok(rooms
            .get(room)
            .map(|m| m.iter().map(|(f, e)| (f.clone(), e.clone())).collect())
            .unwrap_or_default())
    }

    async fn instances(&self) -> Result<Vec<String>, ClusterError> {
        let rooms = lock(&self.rooms);
        let names: HashSet<String> =
            rooms.values().flat_map(|m| m.keys()).filter_map(|f| node_of(f).map(str::to_owned)).collect();
        Ok(names.into_iter().collect())
    }

    async fn reap(&self, instance: &str, batch: u32) -> Result<(Vec<(String, String)>, bool), ClusterError> {
        let mut rooms = lock(&self.rooms);
        let theirs: Vec<String> = rooms
            .iter()
            .filter(|(_, m)| m.keys().any(|f| owned_by(instance, f)))
            .map(|(r, _)| r.clone())
            .collect();
        let mut out = Vec::new();
        for room in theirs.iter().take(batch as usize) {
            if let Some(entries) = rooms.get_mut(room) {
                let fields: Vec<String> = entries.keys().filter(|f| owned_by(instance, f)).cloned().collect();
                for field in fields {
                    if let Some(entry) = entries.remove(&field) {
                        out.push((room.clone(), entry));
                    }
                }
                if entries.is_empty() {
                    rooms.remove(room);
                }
            }
        }
        Ok((out, theirs.len() <= batch as usize))
    }
}

/// Presence entries; cheap to clone.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    nodes: Nodes,
    store: Arc<dyn PresenceStore>,
    /// This node's entries per room, to know when its last one on a room left.
    mine: Mutex<HashMap<String, usize>>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence").field("instance", &self.inner.nodes.instance()).finish_non_exhaustive()
    }
}

fn hash_key(room: &str) -> String {
    crate::topics::room_key(room, 'p')
}

fn index_key(instance: &str) -> String {
    format!("sb:presence:{instance}")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The instance a field belongs to.
fn node_of(field: &str) -> Option<&str> {
    field.rsplit_once('/').map(|(node, _)| node)
}

impl Presence {
    /// Entries in Redis, or in process without it; `nodes` names this
    /// instance and tells which nodes are alive.
    pub fn new(redis: Option<Redis>, nodes: Nodes) -> Self {
        let store: Arc<dyn PresenceStore> = match redis {
            Some(redis) => Arc::new(RedisPresence::new(redis)),
            None => Arc::new(LocalPresence::default()),
        };
        Self::with(store, nodes)
    }

    /// Entries kept in `store`.
    pub fn with(store: Arc<dyn PresenceStore>, nodes: Nodes) -> Self {
        Self { inner: Arc::new(Inner { nodes, store, mine: Mutex::new(HashMap::new()) }) }
    }

    fn field(&self, conn: &str) -> String {
        format!("{}/{conn}", self.inner.nodes.instance())
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
        match self.inner.store.put(self.inner.nodes.instance(), room, &field, entry, cap).await? {
            None => Ok(Tracked::Full),
            Some(true) => Ok(Tracked::Replaced),
            Some(false) => {
                *lock(&self.inner.mine).entry(room.to_owned()).or_insert(0) += 1;
                Ok(Tracked::Added)
            }
        }
    }

    /// Removes `conn`'s entry on `room`; returns it if there was one.
    pub async fn untrack(&self, room: &str, conn: &str) -> Result<Option<String>, ClusterError> {
        let removed = self.inner.store.remove(room, &self.field(conn)).await?;
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
            if last && let Err(e) = self.inner.store.left(self.inner.nodes.instance(), room).await {
                tracing::debug!(error = %e, room, "presence: index not trimmed");
            }
        }
        Ok(removed)
    }

    /// Every live entry on `room`.
    pub async fn list(&self, room: &str) -> Result<Vec<String>, ClusterError> {
        let all = self.inner.store.entries(room).await?;
        let mut live: HashSet<String> = self.inner.nodes.live_set().iter().cloned().collect();
        // Nodes this node has not seen beat (just started, or dead and not yet
        // reaped): asked about now, once per list.
        let unknown: Vec<String> = all
            .iter()
            .filter_map(|(f, _)| node_of(f))
            .filter(|n| !live.contains(*n))
            .map(str::to_owned)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !unknown.is_empty() {
            live.extend(self.inner.nodes.alive(&unknown).await?);
        }
        Ok(all
            .into_iter()
            .filter(|(field, _)| node_of(field).is_some_and(|n| live.contains(n)))
            .map(|(_, entry)| entry)
            .collect())
    }

    /// Removes entries of nodes that stopped beating, a batch of rooms per dead
    /// node at a time: `(room, entry)` pairs, each returned once in the cluster.
    pub async fn reap_dead(&self) -> Result<Vec<(String, String)>, ClusterError> {
        let live = self.inner.nodes.live_set();
        let mut out = Vec::new();
        for node in self.inner.store.instances().await?.into_iter().filter(|n| !live.contains(n)) {
            // Fresh: a node that beats now (it just started) is spared.
            if !self.inner.nodes.alive(std::slice::from_ref(&node)).await?.is_empty() {
                continue;
            }
            let (gone, _) = self.inner.store.reap(&node, REAP_BATCH).await?;
            out.extend(gone);
        }
        Ok(out)
    }
}
