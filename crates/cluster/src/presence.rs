//! Presence: who is on a topic, across every node.
//!
//! Guarantees:
//! - An entry is keyed by the node instance and the connection, so one socket
//!   holds one entry per topic and [`Presence::track`] again replaces its state.
//! - [`Presence::list`] never shows an entry of a node that stopped beating (see
//!   [`crate::ratelimit`] for the heartbeat), even before it is reaped.
//! - [`Presence::reap_dead`] removes the entries of nodes that stopped beating and
//!   returns them exactly once across the cluster (one atomic script), so the
//!   caller can announce each departure once.
//!
//! Without Redis the same holds inside the process (there is no other node).

use crate::{ClusterError, Redis};
use fred::types::scripts::Script;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const TRACK: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1] .. '/' .. ARGV[2], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"#;

const UNTRACK: &str = r#"
local f = ARGV[1] .. '/' .. ARGV[2]
local v = redis.call('HGET', KEYS[1], f)
if not v then return false end
redis.call('HDEL', KEYS[1], f)
return v
"#;

/// KEYS: presence hash, nodes zset. ARGV: own instance, expiry seconds.
const LIST: &str = r#"
local t = redis.call('TIME')
local oldest = tonumber(t[1]) - tonumber(ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local alive = {}
local out = {}
for i = 1, #all, 2 do
  local node = string.match(all[i], '^(.*)/[^/]*$')
  if alive[node] == nil then
    local score = redis.call('ZSCORE', KEYS[2], node)
    alive[node] = node == ARGV[1] or (score and tonumber(score) >= oldest) or false
  end
  if alive[node] then out[#out + 1] = all[i + 1] end
end
return out
"#;

/// KEYS: presence nodes set, nodes zset. ARGV: own instance, expiry seconds.
const REAP: &str = r#"
local t = redis.call('TIME')
local oldest = tonumber(t[1]) - tonumber(ARGV[2])
local out = {}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local score = redis.call('ZSCORE', KEYS[2], n)
  if n ~= ARGV[1] and ((not score) or tonumber(score) < oldest) then
    local set = 'sb:presence:' .. n
    for _, room in ipairs(redis.call('SMEMBERS', set)) do
      local h = 'sb:{' .. room .. '}:p'
      local all = redis.call('HGETALL', h)
      for i = 1, #all, 2 do
        if string.sub(all[i], 1, #n + 1) == n .. '/' then
          redis.call('HDEL', h, all[i])
          out[#out + 1] = room
          out[#out + 1] = all[i + 1]
        end
      end
    end
    redis.call('DEL', set)
    redis.call('SREM', KEYS[1], n)
  end
end
return out
"#;

const PRESENCE_NODES: &str = "sb:presence:nodes";

/// Presence entries; cheap to clone.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    instance: String,
    backend: Backend,
}

type LocalRooms = HashMap<String, HashMap<String, String>>;

// One per process, behind an Arc: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Redis { redis: Redis, track: Script, untrack: Script, list: Script, reap: Script },
    Local(Mutex<LocalRooms>),
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence").field("instance", &self.inner.instance).finish_non_exhaustive()
    }
}

fn hash_key(room: &str) -> String {
    // REAP builds the same name in Lua.
    crate::topics::room_key(room, 'p')
}

fn lock(m: &Mutex<LocalRooms>) -> std::sync::MutexGuard<'_, LocalRooms> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Presence {
    /// `instance` names this process in the cluster (the heartbeat's member).
    pub fn new(redis: Option<Redis>, instance: &str) -> Self {
        let backend = match redis {
            Some(redis) => Backend::Redis {
                redis,
                track: Script::from_lua(TRACK),
                untrack: Script::from_lua(UNTRACK),
                list: Script::from_lua(LIST),
                reap: Script::from_lua(REAP),
            },
            None => Backend::Local(Mutex::new(HashMap::new())),
        };
        Self { inner: Arc::new(Inner { instance: instance.to_owned(), backend }) }
    }

    /// Sets connection `conn`'s entry on `room` to `entry`.
    pub async fn track(&self, room: &str, conn: &str, entry: &str) -> Result<(), ClusterError> {
        match &self.inner.backend {
            Backend::Redis { redis, track, .. } => {
                let keys = vec![
                    hash_key(room),
                    format!("sb:presence:{}", self.inner.instance),
                    PRESENCE_NODES.to_owned(),
                ];
                let args =
                    vec![self.inner.instance.clone(), conn.to_owned(), entry.to_owned(), room.to_owned()];
                let _: i64 = track.evalsha_with_reload(redis.client(), keys, args).await?;
            }
            Backend::Local(rooms) => {
                lock(rooms).entry(room.to_owned()).or_default().insert(conn.to_owned(), entry.to_owned());
            }
        }
        Ok(())
    }

    /// Removes `conn`'s entry on `room`; returns it if there was one.
    pub async fn untrack(&self, room: &str, conn: &str) -> Result<Option<String>, ClusterError> {
        match &self.inner.backend {
            Backend::Redis { redis, untrack, .. } => {
                let args = vec![self.inner.instance.clone(), conn.to_owned()];
                Ok(untrack.evalsha_with_reload(redis.client(), vec![hash_key(room)], args).await?)
            }
            Backend::Local(rooms) => {
                let mut rooms = lock(rooms);
                let removed = rooms.get_mut(room).and_then(|m| m.remove(conn));
                if rooms.get(room).is_some_and(HashMap::is_empty) {
                    rooms.remove(room);
                }
                Ok(removed)
            }
        }
    }

    /// Every live entry on `room`.
    pub async fn list(&self, room: &str) -> Result<Vec<String>, ClusterError> {
        match &self.inner.backend {
            Backend::Redis { redis, list, .. } => {
                let keys = vec![hash_key(room), crate::ratelimit::NODES_KEY.to_owned()];
                let args =
                    vec![self.inner.instance.clone(), crate::ratelimit::NODE_EXPIRY.as_secs().to_string()];
                Ok(list.evalsha_with_reload(redis.client(), keys, args).await?)
            }
            Backend::Local(rooms) => {
                Ok(lock(rooms).get(room).map(|m| m.values().cloned().collect()).unwrap_or_default())
            }
        }
    }

    /// Removes the entries of nodes that stopped beating: `(room, entry)` pairs.
    pub async fn reap_dead(&self) -> Result<Vec<(String, String)>, ClusterError> {
        let Backend::Redis { redis, reap, .. } = &self.inner.backend else {
            return Ok(Vec::new());
        };
        let keys = vec![PRESENCE_NODES.to_owned(), crate::ratelimit::NODES_KEY.to_owned()];
        let args = vec![self.inner.instance.clone(), crate::ratelimit::NODE_EXPIRY.as_secs().to_string()];
        let flat: Vec<String> = reap.evalsha_with_reload(redis.client(), keys, args).await?;
        Ok(flat.chunks_exact(2).map(|p| (p[0].clone(), p[1].clone())).collect())
    }
}
