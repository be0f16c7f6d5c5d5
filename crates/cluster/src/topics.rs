//! Per-topic fan-out and history: the bus that carries a topic's events to the
//! nodes that have subscribers for it, and the bounded history a reconnecting
//! client recovers from.
//!
//! Guarantees:
//! - [`Topics::publish`] appends the event to the topic's history and publishes it
//!   in one atomic step (a Lua script), so every event that any node receives live
//!   is also in history, and history order is delivery order. It returns the
//!   event's [`Offset`].
//! - A node receives a topic's events only between [`Topics::subscribe`] and
//!   [`Topics::unsubscribe`] (one Redis channel per topic; sharded pub/sub when
//!   Redis is a cluster). The caller counts local subscribers and calls these on
//!   the first and the last.
//! - Live events reach the receiver returned by [`Topics::new`] in offset order
//!   per topic. When they may have been interrupted (the subscriber reconnected,
//!   or this node fell behind), the receiver gets [`Delivery::Resync`]: read each
//!   topic from its last delivered offset to close the gap.
//! - History keeps at least the last `max_len` events per topic and at most
//!   [`trim_step`] - 1 more (it trims in steps); events older than `ttl` go at
//!   the topic's next publish, and the topic's keys expire `ttl` after its
//!   last event. [`Topics::read`] answers `recovered: false` whenever an event
//!   after `since` may be missing: trimmed (the largest trimmed id is kept beside
//!   the stream), expired, or Redis lost the topic
//!   (every topic has an epoch, renewed when its keys are gone, that is part of
//!   each offset).
//! - Reads come in pages bounded by count and bytes ([`ReadPage`]): one Redis
//!   call never carries more than a page, and the caller decides how many pages
//!   a replay may take.
//! - A dedupe key is remembered with the fingerprint of the batch it sent: the
//!   same key with the same fingerprint replays the first offsets, with another
//!   fingerprint it is [`ClusterError::DedupeMismatch`].
//!
//! Without Redis, [`Topics`] keeps the same promises inside the process.

use crate::{ClusterError, Redis};
use fred::prelude::*;
use fred::types::scripts::Script;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, oneshot};

/// An event's place in its topic's history: the topic's epoch and a stream id.
/// Written `"{epoch}:{ms}-{seq}"`; opaque to clients.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Offset {
    epoch: Box<str>,
    ms: u64,
    seq: u64,
}

impl Offset {
    pub fn parse(s: &str) -> Option<Self> {
        let (epoch, id) = s.split_once(':')?;
        let (ms, seq) = id.split_once('-')?;
        let ok = (1..=32).contains(&epoch.len()) && epoch.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            return None;
        }
        Some(Self { epoch: epoch.into(), ms: ms.parse().ok()?, seq: seq.parse().ok()? })
    }

    /// Whether `self` comes after `other` in the same epoch; `None` when the
    /// epochs differ (the topic's history was lost in between).
    pub fn is_after(&self, other: &Offset) -> Option<bool> {
        (self.epoch == other.epoch).then(|| (self.ms, self.seq) > (other.ms, other.seq))
    }

    pub fn same_epoch(&self, other: &Offset) -> bool {
        self.epoch == other.epoch
    }

    fn stream_id(&self) -> String {
        format!("{}-{}", self.ms, self.seq)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}-{}", self.epoch, self.ms, self.seq)
    }
}

/// One event of a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicEvent {
    pub offset: Offset,
    pub payload: Arc<str>,
}

/// What the bus hands to the node.
#[derive(Clone, Debug)]
pub enum Delivery {
    /// A live event of a topic this node subscribes to.
    Event { room: Arc<str>, event: TopicEvent },
    /// Live events may have been missed: catch up from history.
    Resync,
}

/// The answer of [`Topics::read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// `false` when an event after `since` may be missing (trimmed, expired,
    /// or lost with Redis): then `events` is empty.
    pub recovered: bool,
    /// The events after `since`, in order: the whole range, or its first page.
    pub events: Vec<TopicEvent>,
    /// The page ended before `upto` (or the latest event): read on from the
    /// last event's offset.
    pub more: bool,
}

/// How much one [`Topics::read`] returns at most: `count` events and, after
/// the first, `bytes` of payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadPage {
    pub count: u32,
    pub bytes: u32,
}

/// The answer of [`Topics::publish_batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The offsets of the batch's first and last events.
    pub first: Offset,
    pub last: Offset,
    /// Events in the batch.
    pub count: usize,
    /// The dedupe key was seen before with the same fingerprint: nothing was
    /// published now, and these are the offsets of the first time.
    pub replayed: bool,
}

/// A batch's dedupe key and the fingerprint of the request that sent it.
#[derive(Clone, Copy, Debug)]
pub struct Dedupe<'a> {
    pub key: &'a str,
    /// Hex, compared as text.
    pub fingerprint: &'a str,
    /// Only replay: a key not seen before publishes nothing
    /// ([`ClusterError::DedupeUnseen`]); for a sender that may not add keys.
    pub replay_only: bool,
}

/// How long a [`Topics::publish_batch`] dedupe key is remembered.
pub const DEDUPE_TTL: Duration = Duration::from_secs(15 * 60);

/// How much history each topic keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    pub max_len: u32,
    pub ttl: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self { max_len: 1_000, ttl: Duration::from_secs(300) }
    }
}

/// Live events waiting for the node; beyond this the bus reader waits, and
/// Redis's broadcast channel absorbs the rest or reports a lag (→ resync).
const DELIVERY_QUEUE: usize = 16_384;

const COMMON: &str = r#"
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local function info(key)
  if redis.call('EXISTS', key) == 0 then return nil end
  local r = redis.call('XINFO', 'STREAM', key)
  local m = {}
  for i = 1, #r, 2 do m[r[i]] = r[i + 1] end
  return m
end
"#;

/// KEYS: stream, epoch, trimmed (, dedupe). ARGV: max_len, ttl_ms, fresh epoch,
/// channel, sharded, dedupe ttl_ms, dedupe fingerprint, replay only, payload… Appends and
/// publishes each payload in order; returns {0, "first last count"}. Keeps the
/// largest id ever trimmed, so a read can tell whether anything after an
/// offset is gone. With a dedupe key that is already set, publishes nothing and
/// returns {1, "first last count"} of the first time if the fingerprint is the
/// one stored, {2} otherwise; with `replay only` and a new key, {3} and nothing.
const PUBLISH: &str = r#"
if KEYS[4] then
  local seen = redis.call('GET', KEYS[4])
  if seen then
    local fp, rest = string.match(seen, '^(%S+) (.*)$')
    if fp == ARGV[7] then return {1, rest} end
    return {2, ''}
  end
  if ARGV[8] == '1' then return {3, ''} end
end
local e = redis.call('GET', KEYS[2])
if not e then e = ARGV[3] end
redis.call('SET', KEYS[2], e, 'PX', ARGV[2])
local maxlen = tonumber(ARGV[1])
local trimmed = nil
local ids = {}
for i = 9, #ARGV do
  local len = redis.call('XLEN', KEYS[1])
  if len >= maxlen then
    local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - maxlen + 1)
    if #old > 0 then trimmed = old[#old][1] end
  end
  ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', maxlen, '*', 'p', ARGV[i])
end
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2])
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if cutoff > 0 and #first > 0 and before(first[1][1], cutoff .. '-0') then
  local aged = redis.call('XREVRANGE', KEYS[1], '(' .. cutoff .. '-0', '-', 'COUNT', 1)
  if #aged > 0 then
    if (not trimmed) or before(trimmed, aged[1][1]) then trimmed = aged[1][1] end
    redis.call('XTRIM', KEYS[1], 'MINID', cutoff)
  end
end
local old = redis.call('GET', KEYS[3])
if trimmed and ((not old) or before(old, trimmed)) then old = trimmed end
if old then redis.call('SET', KEYS[3], old, 'PX', ARGV[2]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local cmd = 'PUBLISH'
if ARGV[5] == '1' then cmd = 'SPUBLISH' end
for i, id in ipairs(ids) do
  redis.call(cmd, ARGV[4], e .. ':' .. id .. ' ' .. ARGV[8 + i])
end
local answer = e .. ':' .. ids[1] .. ' ' .. e .. ':' .. ids[#ids] .. ' ' .. #ids
if KEYS[4] then redis.call('SET', KEYS[4], ARGV[7] .. ' ' .. answer, 'PX', ARGV[6]) end
return {0, answer}
"#;

/// Many topics' publishes in one call, for publishes without a dedupe key.
/// KEYS: stream, epoch, trimmed of each topic, in order. ARGV: max_len,
/// ttl_ms, sharded, a fresh epoch (for every topic of the call whose epoch is
/// gone), the [`trim_step`], then per topic: channel, age check (`1` or `0`), n, and its n
/// payloads. Keeps [`PUBLISH`]'s promises with fewer calls
/// per event:
/// - The length bound trims in steps of [`trim_step`] events: appends trim
///   nothing until the stream is a step over the bound, then one range read
///   finds the newest event the trim removes, which becomes the trimmed mark
///   (trimmed ids only grow, so the mark is set without reading it).
/// - The age bound is checked only for the topics the node asks for (see
///   [`AgeChecks`]): the first event left decides whether anything is older
///   than the ttl, and its age says when it will be.
///
/// Returns one "first last count" per topic; a topic whose age was checked
/// gets " wait" after it: the milliseconds until its oldest event is older
/// than the ttl.
const PUBLISH_MANY: &str = r#"
local maxlen = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local cmd = 'PUBLISH'
if ARGV[3] == '1' then cmd = 'SPUBLISH' end
local step = tonumber(ARGV[5])
local now = nil
local out = {}
local a = 6
for k = 1, #KEYS, 3 do
  local h, ek, dk = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local channel, aging, n = ARGV[a], ARGV[a + 1] == '1', tonumber(ARGV[a + 2])
  local e = redis.call('GETEX', ek, 'PX', ttl)
  if not e then
    e = ARGV[4]
    redis.call('SET', ek, e, 'PX', ttl)
  end
  a = a + 3
  local len = redis.call('XLEN', h)
  local ids = {}
  for i = 1, n do ids[i] = redis.call('XADD', h, '*', 'p', ARGV[a + i - 1]) end
  local trimmed = nil
  local over = len + n - maxlen
  if over >= step then
    trimmed = redis.call('XRANGE', h, '-', '+', 'COUNT', over)[over][1]
    redis.call('XTRIM', h, 'MAXLEN', maxlen)
  end
  local wait = ''
  if aging then
    if not now then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    local cutoff = now - ttl
    local oldest = parse(redis.call('XRANGE', h, '-', '+', 'COUNT', 1)[1][1])
    if oldest < cutoff then
      trimmed = redis.call('XREVRANGE', h, '(' .. cutoff .. '-0', '-', 'COUNT', 1)[1][1]
      redis.call('XTRIM', h, 'MINID', cutoff)
      oldest = cutoff
    end
    wait = ' ' .. (oldest - cutoff)
  end
  if trimmed then redis.call('SET', dk, trimmed, 'PX', ttl) else redis.call('PEXPIRE', dk, ttl) end
  redis.call('PEXPIRE', h, ttl)
  for i = 1, n do
    redis.call(cmd, channel, e .. ':' .. ids[i] .. ' ' .. ARGV[a + i - 1])
  end
  out[#out + 1] = e .. ':' .. ids[1] .. ' ' .. e .. ':' .. ids[n] .. ' ' .. n .. wait
  a = a + n
end
return out
"#;

/// KEYS: stream, epoch (, trimmed). ARGV: fresh epoch, ttl_ms. The topic's current offset.
const TOP: &str = r#"
local e = redis.call('GET', KEYS[2])
if not e then
  e = ARGV[1]
  redis.call('SET', KEYS[2], e, 'PX', ARGV[2])
end
local m = info(KEYS[1])
local id = '0-0'
if m then id = m['last-generated-id'] end
return e .. ':' .. id
"#;

/// KEYS: stream, epoch, trimmed. ARGV: since epoch, since id, upto id or '+',
/// page count, page bytes. Returns {status, id1, payload1, id2, payload2, ...}:
/// status 0 when something after `since` is gone (and no events), 1 when the
/// events reach `upto`, 2 when the page ended first.
const READ: &str = r#"
local e = redis.call('GET', KEYS[2])
if (not e) or e ~= ARGV[1] then return {0} end
local trimmed = redis.call('GET', KEYS[3])
if trimmed and before(ARGV[2], trimmed) then return {0} end
local count = tonumber(ARGV[4])
local budget = tonumber(ARGV[5])
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], ARGV[3], 'COUNT', count + 1)
local out = {1}
local bytes = 0
for i, en in ipairs(entries) do
  local p = en[2][2]
  if i > count or (i > 1 and bytes + #p > budget) then
    out[1] = 2
    break
  end
  bytes = bytes + #p
  out[#out + 1] = en[1]
  out[#out + 1] = p
end
return out
"#;

/// A room's Redis key with `suffix`: `sb:{room}:suffix`. The braces make every
/// key and channel of one room hash to one cluster slot, so one script can
/// touch them all. Suffixes: `h` history stream, `e` epoch, `d` largest trimmed
/// id, `c` channel, `p` presence (see `presence.rs`), `k` dedupe keys.
pub(crate) fn room_key(room: &str, suffix: char) -> String {
    format!("sb:{{{room}}}:{suffix}")
}

/// The keys the history scripts take, in their order: stream, epoch, trimmed.
fn history_keys(room: &str) -> Vec<String> {
    vec![room_key(room, 'h'), room_key(room, 'e'), room_key(room, 'd')]
}

fn dedupe_key(room: &str, key: &str) -> String {
    format!("{}:{key}", room_key(room, 'k'))
}

fn room_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("sb:{")?.strip_suffix("}:c")
}

fn fresh_epoch() -> String {
    let v = uuid::Uuid::new_v4().as_u128();
    format!("{:08x}", (v & 0xffff_ffff) as u32)
}

/// The bus and history behind [`Topics`]: the role a backend implements, with
/// the guarantees of this module. `history` is the node's configuration.
#[async_trait::async_trait]
pub trait TopicBus: Send + Sync + 'static {
    /// Appends `payloads` to `room`'s history and sends them to the subscribed
    /// nodes, atomically, honouring `dedupe` (see [`Topics::publish_batch`]).
    async fn publish(
        &self,
        room: &str,
        payloads: &[&str],
        dedupe: Option<Dedupe<'_>>,
        history: HistoryConfig,
    ) -> Result<Published, ClusterError>;

    /// Starts (or confirms) this node's subscription to `room`; returns once
    /// every later event will arrive live.
    async fn subscribe(&self, room: &str) -> Result<(), ClusterError>;

    async fn unsubscribe(&self, room: &str) -> Result<(), ClusterError>;

    /// The offset of `room`'s latest event, or its start in its current epoch.
    async fn top(&self, room: &str, history: HistoryConfig) -> Result<Offset, ClusterError>;

    /// One page of events after `since` (same epoch) up to `upto` (`None`:
    /// the latest); `recovered: false` when some may be missing.
    async fn read(
        &self,
        room: &str,
        since: &Offset,
        upto: Option<&Offset>,
        page: ReadPage,
        history: HistoryConfig,
    ) -> Result<Replay, ClusterError>;
}

/// The topics bus and history; cheap to clone.
#[derive(Clone)]
pub struct Topics {
    inner: Arc<Inner>,
}

struct Inner {
    config: HistoryConfig,
    bus: Arc<dyn TopicBus>,
}

impl fmt::Debug for Topics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topics").field("history", &self.inner.config).finish_non_exhaustive()
    }
}

impl Topics {
    /// The bus on `redis`, or in-process without it, and the receiver of live
    /// events for the topics this node subscribes to.
    pub fn new(redis: Option<Redis>, config: HistoryConfig) -> (Self, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(DELIVERY_QUEUE);
        let bus: Arc<dyn TopicBus> = match redis {
            Some(redis) => Arc::new(RedisBus::new(redis, tx)),
            None => Arc::new(LocalBus::new(tx)),
        };
        (Self::with(bus, config), rx)
    }

    /// Topics on `bus` (which delivers live events to its own receiver).
    pub fn with(bus: Arc<dyn TopicBus>, config: HistoryConfig) -> Self {
        Self { inner: Arc::new(Inner { config, bus }) }
    }

    pub fn history(&self) -> HistoryConfig {
        self.inner.config
    }

    /// Appends `payload` to `room`'s history and sends it to every subscribed node.
    pub async fn publish(&self, room: &str, payload: &str) -> Result<Offset, ClusterError> {
        Ok(self.publish_batch(room, &[payload], None).await?.first)
    }

    /// Appends `payloads` (at least one) to `room`'s history and sends them to
    /// every subscribed node, in order and atomically: no other event of the
    /// room lands between them. With `dedupe`, the first call for the key
    /// publishes and remembers the offsets and the fingerprint for
    /// [`DEDUPE_TTL`]; a later call with the same key and fingerprint publishes
    /// nothing and answers with them (`replayed`), with another fingerprint it
    /// is [`ClusterError::DedupeMismatch`].
    pub async fn publish_batch(
        &self,
        room: &str,
        payloads: &[&str],
        dedupe: Option<Dedupe<'_>>,
    ) -> Result<Published, ClusterError> {
        if payloads.is_empty() {
            return Err(ClusterError::Unexpected("an empty batch".to_owned()));
        }
        self.inner.bus.publish(room, payloads, dedupe, self.inner.config).await
    }

    /// Starts receiving `room`'s live events on this node; returns the topic's
    /// offset at a moment after the subscription took effect, so every later
    /// event arrives live.
    pub async fn subscribe(&self, room: &str) -> Result<Offset, ClusterError> {
        self.inner.bus.subscribe(room).await?;
        self.top(room).await
    }

    /// Subscribes this node to `room`'s channel again and waits until it is
    /// confirmed, without reading the topic's offset: after an interruption,
    /// every event published from now on arrives live, and the events before
    /// are in history.
    pub async fn resubscribe(&self, room: &str) -> Result<(), ClusterError> {
        self.inner.bus.subscribe(room).await
    }

    /// Stops receiving `room`'s live events on this node.
    pub async fn unsubscribe(&self, room: &str) -> Result<(), ClusterError> {
        self.inner.bus.unsubscribe(room).await
    }

    /// The offset of the topic's latest event (or its start, in its current epoch).
    pub async fn top(&self, room: &str) -> Result<Offset, ClusterError> {
        self.inner.bus.top(room, self.inner.config).await
    }

    /// The events after `since` up to `upto` (inclusive; `None` = latest),
    /// at most one `page` of them (`more` when the page ended first);
    /// `recovered: false` (and no events) when some may be missing.
    pub async fn read(
        &self,
        room: &str,
        since: &Offset,
        upto: Option<&Offset>,
        page: ReadPage,
    ) -> Result<Replay, ClusterError> {
        if let Some(upto) = upto {
            if !upto.same_epoch(since) {
                return Ok(Replay { recovered: false, events: Vec::new(), more: false });
            }
            if upto.is_after(since) != Some(true) {
                return Ok(Replay { recovered: true, events: Vec::new(), more: false });
            }
        }
        let page = ReadPage { count: page.count.max(1), bytes: page.bytes.max(1) };
        self.inner.bus.read(room, since, upto, page, self.inner.config).await
    }
}

/// The bus on Redis: history in a stream per topic, one channel per topic
/// (sharded on a cluster), and Lua scripts that append, trim and publish in one
/// step. Publishes without a dedupe key go through one batcher per node: while
/// one call is in Redis, the publishes that arrive meanwhile wait and then go
/// together in the next ([`PUBLISH_MANY`]), so a busy node makes one call per
/// round trip instead of one per event, and an idle node's publish goes at
/// once. One batch is in Redis at a time, so a topic's events from this node
/// reach Redis in the order they were published.
pub struct RedisBus {
    redis: Redis,
    publish: Script,
    top: Script,
    read: Script,
    batcher: mpsc::Sender<Pending>,
}

/// A publish waiting for the batcher.
struct Pending {
    room: Box<str>,
    /// Moved into the script's arguments when its batch goes.
    payloads: Vec<String>,
    history: HistoryConfig,
    /// Set by the batcher: the topic's age bound is due for a check.
    check_age: bool,
    reply: oneshot::Sender<Result<Published, ClusterError>>,
}

/// When each topic this node publishes to needs its age bound checked next:
/// the moment its oldest event, when last checked, becomes older than the
/// history ttl. Other nodes only add newer events and trims only remove older
/// ones, so until then none of the topic's events is too old. A topic not
/// remembered is checked, and so is every topic after the ttl changes.
#[derive(Default)]
struct AgeChecks {
    ttl: Duration,
    due: HashMap<Box<str>, Instant>,
}

/// Topics whose next age check one node remembers at most.
const AGE_CHECKS: usize = 16_384;

impl AgeChecks {
    fn needed(&mut self, room: &str, ttl: Duration, now: Instant) -> bool {
        if ttl != self.ttl {
            self.due.clear();
            self.ttl = ttl;
        }
        self.due.get(room).is_none_or(|due| *due <= now)
    }

    fn checked(&mut self, room: Box<str>, due: Instant, now: Instant) {
        if self.due.len() >= AGE_CHECKS && !self.due.contains_key(&room) {
            // Forget what is due anyway; if that frees little, forget all
            // rather than scan again for the next topic.
            self.due.retain(|_, d| *d > now);
            if self.due.len() >= AGE_CHECKS / 2 {
                self.due.clear();
            }
        }
        self.due.insert(room, due);
    }
}

/// How many events over its length bound a topic's history holds before it
/// trims back to the bound: a sixteenth of the bound, 1 to 64. So a topic
/// holds at most `trim_step - 1` events over the bound, and only one publish
/// in a step pays for a trim (a range read and the trim itself).
pub fn trim_step(max_len: u32) -> u32 {
    (max_len / 16).clamp(1, 64)
}

/// Publishes waiting for the batcher at most; a publisher beyond this waits
/// for room (the node bounds client publishes well below it).
const BATCHER_QUEUE: usize = 4_096;
/// Events in one batch at most, and payload bytes (unless its first publish
/// alone is larger): one call must not hold Redis for long.
const BATCH_EVENTS: usize = 256;
const BATCH_BYTES: usize = 512 * 1024;

impl RedisBus {
    /// Starts forwarding this node's pub/sub messages to `tx`.
    pub fn new(redis: Redis, tx: mpsc::Sender<Delivery>) -> Self {
        tokio::spawn(read_bus(redis.messages(), redis.reconnects(), tx));
        let (batcher, pending) = mpsc::channel(BATCHER_QUEUE);
        tokio::spawn(run_batcher(
            redis.clone(),
            Arc::new(Script::from_lua(format!("{COMMON}{PUBLISH_MANY}"))),
            pending,
        ));
        Self {
            redis,
            publish: Script::from_lua(format!("{COMMON}{PUBLISH}")),
            top: Script::from_lua(format!("{COMMON}{TOP}")),
            read: Script::from_lua(format!("{COMMON}{READ}")),
            batcher,
        }
    }
}

/// Takes the publishes waiting, sends them in one call (one per cluster slot
/// on a cluster, where one script may only touch one slot), answers each,
/// and goes again.
async fn run_batcher(redis: Redis, script: Arc<Script>, mut pending: mpsc::Receiver<Pending>) {
    // A publish that did not fit the last batch goes first in the next.
    let mut carried: Option<Pending> = None;
    let mut ages = AgeChecks::default();
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match pending.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut events = first.payloads.len();
        let mut bytes = payload_bytes(&first);
        let history = first.history;
        let mut batch = vec![first];
        while events < BATCH_EVENTS {
            let Ok(next) = pending.try_recv() else { break };
            let size = payload_bytes(&next);
            if next.history != history || bytes + size > BATCH_BYTES {
                carried = Some(next);
                break;
            }
            events += next.payloads.len();
            bytes += size;
            batch.push(next);
        }
        // A caller that is gone waits for nothing: its publish is not sent.
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let sent = Instant::now();
        for p in &mut batch {
            p.check_age = ages.needed(&p.room, p.history.ttl, sent);
        }
        let waits = if redis.sharded() {
            let mut slots: HashMap<u16, Vec<Pending>> = HashMap::new();
            for p in batch {
                let slot = fred::util::redis_keyslot(room_key(&p.room, 'h').as_bytes());
                slots.entry(slot).or_default().push(p);
            }
            futures_util::future::join_all(slots.into_values().map(|b| publish_many(&redis, &script, b)))
                .await
                .into_iter()
                .flatten()
                .collect()
        } else {
            publish_many(&redis, &script, batch).await
        };
        // Redis measured each wait from a moment after `sent`: due no later than it should.
        let now = Instant::now();
        for (room, wait) in waits {
            ages.checked(room, sent + wait, now);
        }
    }
}

fn payload_bytes(p: &Pending) -> usize {
    p.payloads.iter().map(|x| x.len()).sum()
}

/// One [`PUBLISH_MANY`] call for `batch`; every publish gets its answer.
/// Returns, for each topic whose age bound was checked, how long until it is
/// due again.
async fn publish_many(redis: &Redis, script: &Script, mut batch: Vec<Pending>) -> Vec<(Box<str>, Duration)> {
    let Some(history) = batch.first().map(|p| p.history) else { return Vec::new() };
    let mut keys: Vec<String> = Vec::with_capacity(batch.len() * 3);
    let max_len = history.max_len.max(1);
    let mut args: Vec<String> = Vec::with_capacity(5 + batch.len() * 4);
    args.extend([
        max_len.to_string(),
        ttl_ms(history).to_string(),
        if redis.sharded() { "1" } else { "0" }.to_owned(),
        fresh_epoch(),
        trim_step(max_len).to_string(),
    ]);
    let mut sent = Vec::with_capacity(batch.len());
    for p in &mut batch {
        keys.extend(history_keys(&p.room));
        args.extend([
            room_key(&p.room, 'c'),
            if p.check_age { "1" } else { "0" }.to_owned(),
            p.payloads.len().to_string(),
        ]);
        sent.push(p.payloads.len());
        args.append(&mut p.payloads);
    }
    let answers: Result<Vec<String>, ClusterError> =
        script.evalsha_with_reload(redis.client(), keys, args).await.map_err(ClusterError::from);
    match answers {
        Ok(answers) if answers.len() == batch.len() => {
            let mut waits = Vec::new();
            for ((p, answer), sent) in batch.into_iter().zip(answers).zip(sent) {
                if p.check_age
                    && let Some(ms) = answer.split_ascii_whitespace().nth(3).and_then(|w| w.parse().ok())
                {
                    waits.push((p.room, Duration::from_millis(ms)));
                }
                let _ = p.reply.send(parse_published(&answer, sent, false));
            }
            return waits;
        }
        Ok(answers) => {
            let e = format!("{} answers for {} publishes", answers.len(), batch.len());
            for p in batch {
                let _ = p.reply.send(Err(ClusterError::Unexpected(e.clone())));
            }
        }
        Err(e) => {
            for p in batch {
                let _ = p.reply.send(Err(e.again()));
            }
        }
    }
    Vec::new()
}

/// "first last count" as the publish scripts answer it.
fn parse_published(answer: &str, sent: usize, replayed: bool) -> Result<Published, ClusterError> {
    let mut parts = answer.split_ascii_whitespace();
    let offset = |o: Option<&str>| {
        o.and_then(Offset::parse).ok_or_else(|| ClusterError::Unexpected(format!("offsets {answer}")))
    };
    let (first, last) = (offset(parts.next())?, offset(parts.next())?);
    let count = parts.next().and_then(|c| c.parse().ok()).unwrap_or(sent);
    Ok(Published { first, last, count, replayed })
}

fn ttl_ms(history: HistoryConfig) -> u64 {
    history.ttl.as_millis().max(1) as u64
}

impl RedisBus {
    /// A publish with a dedupe key: one [`PUBLISH`] call of its own.
    async fn publish_deduped(
        &self,
        room: &str,
        payloads: &[&str],
        dedupe: Option<Dedupe<'_>>,
        history: HistoryConfig,
    ) -> Result<Published, ClusterError> {
        let mut args: Vec<String> = Vec::with_capacity(8 + payloads.len());
        args.extend([
            history.max_len.max(1).to_string(),
            ttl_ms(history).to_string(),
            fresh_epoch(),
            room_key(room, 'c'),
            if self.redis.sharded() { "1" } else { "0" }.to_owned(),
            DEDUPE_TTL.as_millis().to_string(),
            dedupe.map_or_else(String::new, |d| d.fingerprint.to_owned()),
            if dedupe.is_some_and(|d| d.replay_only) { "1" } else { "0" }.to_owned(),
        ]);
        args.extend(payloads.iter().map(|p| (*p).to_owned()));
        let mut keys = history_keys(room);
        if let Some(d) = dedupe {
            keys.push(dedupe_key(room, d.key));
        }
        let (status, answer): (i64, String) = crate::redis::timed(
            "topic_publish",
            self.publish.evalsha_with_reload(self.redis.client(), keys, args),
        )
        .await?;
        match status {
            2 => return Err(ClusterError::DedupeMismatch),
            3 => return Err(ClusterError::DedupeUnseen),
            _ => {}
        }
        parse_published(&answer, payloads.len(), status == 1)
    }
}

#[async_trait::async_trait]
impl TopicBus for RedisBus {
    async fn publish(
        &self,
        room: &str,
        payloads: &[&str],
        dedupe: Option<Dedupe<'_>>,
        history: HistoryConfig,
    ) -> Result<Published, ClusterError> {
        if dedupe.is_none() {
            let (reply, answer) = oneshot::channel();
            let pending = Pending {
                room: room.into(),
                payloads: payloads.iter().map(|p| (*p).to_owned()).collect(),
                history,
                check_age: false,
                reply,
            };
            // Timed here, so a traced publish's Redis span is its own child.
            return crate::redis::timed("topic_publish", async {
                self.batcher.send(pending).await.map_err(|_| ClusterError::Down)?;
                answer.await.map_err(|_| ClusterError::Down)?
            })
            .await;
        }
        // Boxed: this rarer path's future is large, and the common one above
        // should not carry its size.
        Box::pin(self.publish_deduped(room, payloads, dedupe, history)).await
    }

    async fn subscribe(&self, room: &str) -> Result<(), ClusterError> {
        self.redis.subscribe_topic(&room_key(room, 'c')).await
    }

    async fn unsubscribe(&self, room: &str) -> Result<(), ClusterError> {
        self.redis.unsubscribe_topic(&room_key(room, 'c')).await
    }

    async fn top(&self, room: &str, history: HistoryConfig) -> Result<Offset, ClusterError> {
        let args = vec![fresh_epoch(), ttl_ms(history).to_string()];
        let off: String = crate::redis::timed(
            "topic_top",
            self.top.evalsha_with_reload(self.redis.client(), history_keys(room), args),
        )
        .await?;
        Offset::parse(&off).ok_or_else(|| ClusterError::Unexpected(format!("offset {off}")))
    }

    async fn read(
        &self,
        room: &str,
        since: &Offset,
        upto: Option<&Offset>,
        page: ReadPage,
        _history: HistoryConfig,
    ) -> Result<Replay, ClusterError> {
        let upto_id = upto.map_or_else(|| "+".to_owned(), Offset::stream_id);
        let args = vec![
            since.epoch.to_string(),
            since.stream_id(),
            upto_id,
            page.count.to_string(),
            page.bytes.to_string(),
        ];
        let raw: Vec<Value> = crate::redis::timed(
            "topic_read",
            self.read.evalsha_with_reload(self.redis.client(), history_keys(room), args),
        )
        .await?;
        let status = raw.first().and_then(Value::as_i64).unwrap_or(0);
        let mut events = Vec::with_capacity(raw.len() / 2);
        for pair in raw.get(1..).unwrap_or_default().chunks(2) {
            let (Some(id), Some(payload)) =
                (pair.first().and_then(Value::as_str), pair.get(1).and_then(Value::as_str))
            else {
                return Err(ClusterError::Unexpected("history entry".to_owned()));
            };
            let offset = Offset::parse(&format!("{}:{id}", since.epoch))
                .ok_or_else(|| ClusterError::Unexpected(format!("stream id {id}")))?;
            events.push(TopicEvent { offset, payload: Arc::from(&*payload) });
        }
        Ok(Replay { recovered: status != 0, events, more: status == 2 })
    }
}

/// The bus inside one process: a node alone.
pub struct LocalBus {
    streams: Mutex<HashMap<Arc<str>, LocalStream>>,
    subscribed: Mutex<HashSet<Arc<str>>>,
    tx: mpsc::Sender<Delivery>,
}

impl LocalBus {
    /// Delivers live events of subscribed topics to `tx`.
    pub fn new(tx: mpsc::Sender<Delivery>) -> Self {
        Self { streams: Mutex::new(HashMap::new()), subscribed: Mutex::new(HashSet::new()), tx }
    }
}

#[async_trait::async_trait]
impl TopicBus for LocalBus {
    async fn publish(
        &self,
        room: &str,
        payloads: &[&str],
        dedupe: Option<Dedupe<'_>>,
        history: HistoryConfig,
    ) -> Result<Published, ClusterError> {
        let (room, events) = {
            let mut streams = lock(&self.streams);
            let (key, stream) = local_stream(&mut streams, room, history);
            if let Some(d) = dedupe
                && let Some(seen) = stream.seen(d.key)
            {
                return if *seen.fingerprint == *d.fingerprint {
                    Ok(Published { replayed: true, ..seen.published })
                } else {
                    Err(ClusterError::DedupeMismatch)
                };
            }
            if dedupe.is_some_and(|d| d.replay_only) {
                return Err(ClusterError::DedupeUnseen);
            }
            let events: Vec<TopicEvent> = payloads.iter().map(|p| stream.push(p, history)).collect();
            (key, events)
        };
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Err(ClusterError::Unexpected("an empty batch".to_owned()));
        };
        let published = Published {
            first: first.offset.clone(),
            last: last.offset.clone(),
            count: events.len(),
            replayed: false,
        };
        if let Some(d) = dedupe {
            let mut streams = lock(&self.streams);
            let (_, stream) = local_stream(&mut streams, &room, history);
            stream.remember(d.key, Seen { fingerprint: d.fingerprint.into(), published: published.clone() });
        }
        if lock(&self.subscribed).contains(&room) {
            for event in events {
                // A full queue means the node is far behind: it resyncs.
                if self.tx.try_send(Delivery::Event { room: room.clone(), event }).is_err() {
                    let _ = self.tx.try_send(Delivery::Resync);
                    break;
                }
            }
        }
        Ok(published)
    }

    async fn subscribe(&self, room: &str) -> Result<(), ClusterError> {
        lock(&self.subscribed).insert(room.into());
        Ok(())
    }

    async fn unsubscribe(&self, room: &str) -> Result<(), ClusterError> {
        lock(&self.subscribed).remove(room);
        Ok(())
    }

    async fn top(&self, room: &str, history: HistoryConfig) -> Result<Offset, ClusterError> {
        let mut streams = lock(&self.streams);
        let (_, stream) = local_stream(&mut streams, room, history);
        Ok(stream.top())
    }

    async fn read(
        &self,
        room: &str,
        since: &Offset,
        upto: Option<&Offset>,
        page: ReadPage,
        history: HistoryConfig,
    ) -> Result<Replay, ClusterError> {
        let mut streams = lock(&self.streams);
        let (_, stream) = local_stream(&mut streams, room, history);
        Ok(stream.read(since, upto, page))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Forwards topic messages from Redis to the node, in order; a reconnect or a lag
/// becomes a [`Delivery::Resync`].
async fn read_bus(
    mut messages: broadcast::Receiver<fred::types::Message>,
    mut reconnects: broadcast::Receiver<fred::types::config::Server>,
    tx: mpsc::Sender<Delivery>,
) {
    loop {
        let delivery = tokio::select! {
            m = messages.recv() => match m {
                Ok(m) => {
                    let Some(room) = room_of_channel(&m.channel) else { continue };
                    let Some(text) = m.value.as_str() else { continue };
                    let Some((offset, payload)) = text.split_once(' ') else { continue };
                    let Some(offset) = Offset::parse(offset) else { continue };
                    Delivery::Event {
                        room: Arc::from(room),
                        event: TopicEvent { offset, payload: Arc::from(payload) },
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "topic bus: fell behind redis; resynchronising from history");
                    Delivery::Resync
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            r = reconnects.recv() => match r {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    tracing::info!("topic bus: redis reconnected; resynchronising from history");
                    Delivery::Resync
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if tx.send(delivery).await.is_err() {
            return;
        }
    }
}

/// The in-process history of one topic.
struct LocalStream {
    epoch: Box<str>,
    entries: VecDeque<(u64, u64, Arc<str>)>,
    last: (u64, u64),
    max_deleted: (u64, u64),
    touched: Instant,
    /// Dedupe keys of batches, oldest first, with what they sent.
    seen: VecDeque<(Box<str>, Seen, Instant)>,
}

/// What a dedupe key remembers: the batch's fingerprint and its offsets.
#[derive(Clone, Debug)]
struct Seen {
    fingerprint: Box<str>,
    published: Published,
}

/// Dedupe keys one in-process topic remembers at most.
const LOCAL_DEDUPE_KEYS: usize = 4_096;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn local_stream<'a>(
    streams: &'a mut HashMap<Arc<str>, LocalStream>,
    room: &str,
    config: HistoryConfig,
) -> (Arc<str>, &'a mut LocalStream) {
    // Expire idle topics the way Redis keys expire.
    if streams.len() > 1_024 {
        streams.retain(|_, s| s.touched.elapsed() < config.ttl);
    }
    if streams.get(room).is_some_and(|s| s.touched.elapsed() >= config.ttl) {
        streams.remove(room);
    }
    let key = streams.get_key_value(room).map_or_else(|| Arc::from(room), |(k, _)| k.clone());
    let stream = streams.entry(key.clone()).or_insert_with(|| LocalStream {
        epoch: fresh_epoch().into(),
        entries: VecDeque::new(),
        last: (0, 0),
        max_deleted: (0, 0),
        touched: Instant::now(),
        seen: VecDeque::new(),
    });
    (key, stream)
}

impl LocalStream {
    fn offset(&self, (ms, seq): (u64, u64)) -> Offset {
        Offset { epoch: self.epoch.clone(), ms, seq }
    }

    fn top(&mut self) -> Offset {
        self.touched = Instant::now();
        self.offset(self.last)
    }

    fn push(&mut self, payload: &str, config: HistoryConfig) -> TopicEvent {
        self.touched = Instant::now();
        let ms = now_ms().max(self.last.0);
        let id = if ms == self.last.0 { (ms, self.last.1 + 1) } else { (ms, 0) };
        self.last = id;
        let payload: Arc<str> = Arc::from(payload);
        self.entries.push_back((id.0, id.1, payload.clone()));
        let cutoff = ms.saturating_sub(config.ttl.as_millis() as u64);
        while self.entries.len() > config.max_len.max(1) as usize
            || self.entries.front().is_some_and(|e| e.0 < cutoff)
        {
            if let Some((m, s, _)) = self.entries.pop_front() {
                self.max_deleted = (m, s);
            }
        }
        TopicEvent { offset: self.offset(id), payload }
    }

    fn seen(&mut self, key: &str) -> Option<Seen> {
        while self.seen.front().is_some_and(|(_, _, at)| at.elapsed() >= DEDUPE_TTL) {
            self.seen.pop_front();
        }
        self.seen.iter().find(|(k, _, _)| &**k == key).map(|(_, seen, _)| seen.clone())
    }

    fn remember(&mut self, key: &str, seen: Seen) {
        if self.seen.len() >= LOCAL_DEDUPE_KEYS {
            self.seen.pop_front();
        }
        self.seen.push_back((key.into(), seen, Instant::now()));
    }

    fn read(&mut self, since: &Offset, upto: Option<&Offset>, page: ReadPage) -> Replay {
        self.touched = Instant::now();
        if *since.epoch != *self.epoch || (since.ms, since.seq) < self.max_deleted {
            return Replay { recovered: false, events: Vec::new(), more: false };
        }
        let upto = upto.map_or((u64::MAX, u64::MAX), |u| (u.ms, u.seq));
        let mut events = Vec::new();
        let (mut bytes, mut more) = (0usize, false);
        for (m, s, p) in
            self.entries.iter().filter(|(m, s, _)| (*m, *s) > (since.ms, since.seq) && (*m, *s) <= upto)
        {
            if events.len() >= page.count as usize
                || (!events.is_empty() && bytes + p.len() > page.bytes as usize)
            {
                more = true;
                break;
            }
            bytes += p.len();
            events.push(TopicEvent { offset: self.offset((*m, *s)), payload: p.clone() });
        }
        Replay { recovered: true, events, more }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_compare_within_an_epoch() {
        let a = Offset::parse("ab12cd34:1700000000000-0").unwrap();
        let b = Offset::parse("ab12cd34:1700000000000-1").unwrap();
        assert_eq!(a.to_string(), "ab12cd34:1700000000000-0");
        assert_eq!(b.is_after(&a), Some(true));
        assert_eq!(a.is_after(&b), Some(false));
        let other = Offset::parse("ffffffff:1-0").unwrap();
        assert_eq!(other.is_after(&a), None);
        for bad in ["", "x", "ab:1", "ab:1-", "ab:-1", "a b:1-0", ":1-0", "ab:1-0-0"] {
            assert!(Offset::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_local_stream_trims_by_count_and_says_so() {
        let config = HistoryConfig { max_len: 3, ttl: Duration::from_secs(60) };
        let mut s = LocalStream {
            epoch: "e".into(),
            entries: VecDeque::new(),
            last: (0, 0),
            max_deleted: (0, 0),
            touched: Instant::now(),
            seen: VecDeque::new(),
        };
        let start = s.top();
        let offsets: Vec<Offset> = (0..5).map(|i| s.push(&i.to_string(), config).offset).collect();
        assert_eq!(s.entries.len(), 3);
        let all = ReadPage { count: 100, bytes: 1 << 20 };
        assert!(!s.read(&start, None, all).recovered, "two events were trimmed after `start`");
        let r = s.read(&offsets[1], None, all);
        assert!(r.recovered && !r.more);
        assert_eq!(r.events.iter().map(|e| &*e.payload).collect::<Vec<_>>(), ["2", "3", "4"]);
        let r = s.read(&offsets[2], Some(&offsets[3]), all);
        assert_eq!(r.events.len(), 1);
        let r = s.read(&offsets[1], None, ReadPage { count: 2, bytes: 1 << 20 });
        assert!(r.recovered && r.more && r.events.len() == 2, "a page of two, more to come");
        let r = s.read(&offsets[1], None, ReadPage { count: 100, bytes: 1 });
        assert!(r.recovered && r.more && r.events.len() == 1, "past the byte budget after the first");
    }
}
