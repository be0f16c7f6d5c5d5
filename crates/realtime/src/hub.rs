//! Bus ↔ local rooms. The node subscribes to a topic's channel on its first local
//! subscriber and drops it with the last (Centrifugo's model); live events are
//! delivered to the topic's local room by one dispatcher, encoded once per
//! event.
//!
//! Each local topic keeps a cursor: the offset of the last event delivered to its
//! room. A socket that asks for `since` is caught up in two phases. First,
//! without the cursor's lock (so the dispatcher keeps delivering every topic of
//! the node), it reads history in pages from `since` towards the cursor and
//! emits them. Then it takes the lock for the last short stretch, one page at
//! most, and joins the room: everything after the cursor arrives live, so there
//! is no gap and no duplicate at the seam. A replay is bounded in events, bytes
//! and time, paced by the socket's queue (it waits while the queue is full
//! rather than dropping events), and charged to the tenant's event budget; when
//! it cannot be complete, the ack says `recovered: false`. After a bus
//! interruption the dispatcher reads each topic from its cursor, page by page,
//! so live sockets lose nothing either.

use crate::envelope::{self, Envelope};
use crate::limits::Spend;
use crate::{CONTROL_ROOM, Inner, Session};
use serde::{Deserialize, Serialize};
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use switchboard_cluster::{Delivery, Offset, Quota, ReadPage, TopicEvent};
use switchboard_domain::{ErrorKind, TenantId, UserId};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

/// Events a resync reads per topic at most; beyond, the gap is reported.
const RESYNC_LIMIT: u32 = 10_000;

/// One read of history: at most this many events and (after the first) bytes.
const PAGE: ReadPage = ReadPage { count: 64, bytes: 256 * 1024 };

/// How many times a join goes back to reading without the lock because more
/// than a page arrived while it caught up; then the ack says `recovered: false`.
const TAIL_ROUNDS: usize = 4;

/// How long a join waits for this node to deliver an offset the client already
/// holds (it came from another node a moment ago).
const CATCH_UP: Duration = Duration::from_millis(500);

/// A replayed event costs one event of the tenant's budget, and one more for
/// every this many bytes.
const REPLAY_BYTES_PER_EVENT: u64 = 4096;

/// How long a replay waits in all for the socket's queue and the tenant's budget.
const REPLAY_TIME: Duration = Duration::from_secs(10);

struct LocalTopic {
    members: AtomicUsize,
    cursor: tokio::sync::Mutex<Option<Offset>>,
    /// Told whenever the dispatcher moves the cursor.
    advanced: tokio::sync::Notify,
    /// When the dispatcher last delivered an event of the topic.
    delivered_at: Mutex<Option<Instant>>,
}

/// The topics this node has local subscribers for.
#[derive(Default)]
pub(crate) struct Hub {
    topics: Mutex<HashMap<Arc<str>, Arc<LocalTopic>>>,
}

/// The outcome of a join.
pub(crate) struct Joined {
    pub offset: Offset,
    /// With `since`: whether every event after it was replayed.
    pub recovered: Option<bool>,
}

/// Who pays for a replay: the tenant's event budget.
pub(crate) struct Payer {
    pub tenant: TenantId,
    pub events_per_second: u32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where a replay stands.
struct Replay<'a> {
    inner: &'a Inner,
    socket: &'a SocketRef,
    room: &'a str,
    payer: &'a Payer,
    /// The last offset sent to the socket.
    pos: Offset,
    events: u32,
    bytes: u64,
    deadline: Instant,
}

/// How a step of a replay ended.
enum Step {
    /// Reached the target.
    Done,
    /// The page ended before the target (only under the lock, where a replay
    /// reads one page at most).
    More,
    /// Cannot be complete: lost from history, over a bound, or out of time.
    Incomplete,
}

impl Replay<'_> {
    /// Reads and sends pages until `target`; `locked` reads one page at most
    /// and never waits.
    async fn towards(&mut self, target: &Offset, locked: bool) -> Step {
        loop {
            let page = match self.inner.topics.read(self.room, &self.pos, Some(target), PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, room = self.room, "history read failed");
                    return Step::Incomplete;
                }
            };
            if !page.recovered {
                return Step::Incomplete;
            }
            let n = page.events.len() as u32;
            let bytes: u64 = page.events.iter().map(|e| e.payload.len() as u64).sum();
            if self.events + n > self.inner.config.replay_limit
                || self.bytes + bytes > u64::from(self.inner.config.replay_bytes)
            {
                return Step::Incomplete;
            }
            if n > 0 && !self.charge(n, bytes, locked).await {
                return Step::Incomplete;
            }
            for event in &page.events {
                if !self.send(event, locked).await {
                    return Step::Incomplete;
                }
                self.pos = event.offset.clone();
            }
            self.events += n;
            self.bytes += bytes;
            if !page.more {
                return Step::Done;
            }
            if locked {
                return Step::More;
            }
        }
    }

    /// Charges a page of `n` events of `bytes` to the tenant's event budget,
    /// as many events as it holds and one more for every 4 KiB past that,
    /// waiting for budget while time is left (never under the lock). A tenant
    /// replays no faster than it may publish.
    async fn charge(&self, n: u32, bytes: u64, locked: bool) -> bool {
        // Never more than the whole budget, which could never be granted.
        let by_bytes = u32::try_from(bytes.div_ceil(REPLAY_BYTES_PER_EVENT)).unwrap_or(u32::MAX);
        let cost = n.max(by_bytes).min(self.payer.events_per_second.max(1));
        let quota = Quota { per_second: self.payer.events_per_second, burst: self.payer.events_per_second };
        loop {
            let taken = self
                .inner
                .budgets
                .spend(&self.inner.limiter, self.payer.tenant, Spend::Events, quota, cost)
                .await;
            match taken {
                Ok(()) => return true,
                Err(wait) if !locked && Instant::now() + wait < self.deadline => {
                    tokio::time::sleep(wait).await
                }
                Err(_) => return false,
            }
        }
    }

    /// Sends one event, waiting while the socket's queue is full (not under the
    /// lock); `false` if it could not be sent.
    async fn send(&self, event: &TopicEvent, locked: bool) -> bool {
        loop {
            match emit_to_socket(self.socket, event) {
                Emitted::Sent => return true,
                Emitted::Full if !locked && Instant::now() < self.deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Emitted::Full | Emitted::Gone => return false,
            }
        }
    }
}

impl Hub {
    fn get(&self, room: &str) -> Option<Arc<LocalTopic>> {
        lock(&self.topics).get(room).cloned()
    }

    fn rooms(&self) -> Vec<(Arc<str>, Arc<LocalTopic>)> {
        lock(&self.topics).iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The offset last delivered to `room` on this node.
    pub(crate) async fn offset(&self, room: &str) -> Option<Offset> {
        let topic = self.get(room)?;
        topic.cursor.lock().await.clone()
    }

    /// Topics with local subscribers (for metrics).
    pub(crate) fn len(&self) -> usize {
        lock(&self.topics).values().filter(|t| t.members.load(Ordering::SeqCst) > 0).count()
    }

    /// Joins `socket` to `room`, replaying history after `since` first.
    pub(crate) async fn join(
        &self,
        inner: &Inner,
        socket: &SocketRef,
        room: &str,
        since: Option<&str>,
        payer: &Payer,
    ) -> Result<Joined, ErrorKind> {
        let topic = {
            let mut topics = lock(&self.topics);
            let topic = topics
                .entry(Arc::from(room))
                .or_insert_with(|| {
                    Arc::new(LocalTopic {
                        members: AtomicUsize::new(0),
                        cursor: tokio::sync::Mutex::new(None),
                        advanced: tokio::sync::Notify::new(),
                        delivered_at: Mutex::new(None),
                    })
                })
                .clone();
            topic.members.fetch_add(1, Ordering::SeqCst);
            topic
        };
        match self.join_counted(inner, &topic, socket, room, since, payer).await {
            Ok(joined) => Ok(joined),
            Err(e) => {
                self.leave(inner, room);
                Err(e)
            }
        }
    }

    async fn join_counted(
        &self,
        inner: &Inner,
        topic: &LocalTopic,
        socket: &SocketRef,
        room: &str,
        since: Option<&str>,
        payer: &Payer,
    ) -> Result<Joined, ErrorKind> {
        {
            let mut cursor = topic.cursor.lock().await;
            if cursor.is_none() {
                let top = inner.topics.subscribe(room).await.map_err(|e| {
                    tracing::warn!(error = %e, room, "topic subscribe failed");
                    e.kind()
                })?;
                *cursor = Some(top);
            }
        }
        let since = match since.map(Offset::parse) {
            None => return Self::join_live(topic, socket, room, None).await,
            Some(None) => return Self::join_live(topic, socket, room, Some(false)).await,
            Some(Some(since)) => since,
        };
        Self::wait_for(topic, &since).await;
        let mut replay = Replay {
            inner,
            socket,
            room,
            payer,
            pos: since,
            events: 0,
            bytes: 0,
            deadline: Instant::now() + REPLAY_TIME,
        };
        for _ in 0..TAIL_ROUNDS {
            // Without the lock: the dispatcher keeps delivering meanwhile.
            let target = topic.cursor.lock().await.clone().ok_or(ErrorKind::Unavailable)?;
            if let Step::Incomplete = replay.towards(&target, false).await {
                return Self::join_live(topic, socket, room, Some(false)).await;
            }
            // Under the lock: what arrived meanwhile, one page at most, then live.
            let cursor = topic.cursor.lock().await;
            let target = cursor.clone().ok_or(ErrorKind::Unavailable)?;
            match replay.towards(&target, true).await {
                Step::Done => {
                    socket.join(room.to_owned());
                    return Ok(Joined { offset: target, recovered: Some(true) });
                }
                Step::Incomplete => {
                    socket.join(room.to_owned());
                    return Ok(Joined { offset: target, recovered: Some(false) });
                }
                Step::More => {}
            }
        }
        Self::join_live(topic, socket, room, Some(false)).await
    }

    /// Joins the room at the cursor.
    async fn join_live(
        topic: &LocalTopic,
        socket: &SocketRef,
        room: &str,
        recovered: Option<bool>,
    ) -> Result<Joined, ErrorKind> {
        let cursor = topic.cursor.lock().await;
        let offset = cursor.clone().ok_or(ErrorKind::Unavailable)?;
        socket.join(room.to_owned());
        Ok(Joined { offset, recovered })
    }

    /// A client may hold an offset this node has not delivered yet (it came
    /// from another node a moment ago): waits a little for the dispatcher.
    async fn wait_for(topic: &LocalTopic, since: &Offset) {
        let deadline = Instant::now() + CATCH_UP;
        loop {
            // Created before the check, so a move in between is not missed.
            let advanced = topic.advanced.notified();
            let ahead = matches!(&*topic.cursor.lock().await, Some(c) if since.is_after(c) == Some(true));
            if !ahead || tokio::time::timeout_at(deadline, advanced).await.is_err() {
                return;
            }
        }
    }

    /// One local subscriber of `room` left (the caller took the socket out of the
    /// room); the last one unsubscribes the node.
    pub(crate) fn leave(&self, inner: &Inner, room: &str) {
        let Some(topic) = self.get(room) else { return };
        if topic.members.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let topics = inner.topics.clone();
        let room: Arc<str> = Arc::from(room);
        // Under the cursor's lock, so a join that comes meanwhile either sees the
        // subscription still there or subscribes again after this.
        tokio::spawn(async move {
            let mut cursor = topic.cursor.lock().await;
            if topic.members.load(Ordering::SeqCst) == 0 && cursor.is_some() {
                if let Err(e) = topics.unsubscribe(&room).await {
                    tracing::warn!(error = %e, room = %room, "topic unsubscribe failed");
                }
                *cursor = None;
            }
        });
    }

    /// Drops local topics nobody subscribes to any more.
    fn prune(&self) {
        lock(&self.topics).retain(|_, t| {
            t.members.load(Ordering::SeqCst) > 0 || t.cursor.try_lock().map(|c| c.is_some()).unwrap_or(true)
        });
    }
}

/// How an emit to one socket went.
enum Emitted {
    Sent,
    /// The socket's queue is full: it is behind.
    Full,
    /// Closed, or the event could not be encoded.
    Gone,
}

/// Emits one stored event to one socket (a replay).
fn emit_to_socket(socket: &SocketRef, event: &TopicEvent) -> Emitted {
    let Some(stored) = envelope::parse(&event.payload) else { return Emitted::Gone };
    let env = Envelope { topic: &stored.t, offset: event.offset.to_string(), data: stored.d, from: stored.f };
    match socket.emit(&*stored.e, &env) {
        Ok(()) => Emitted::Sent,
        Err(socketioxide::SendError::Socket(socketioxide::SocketError::InternalChannelFull)) => Emitted::Full,
        Err(e) => {
            tracing::debug!(error = %e, sid = %socket.id, "replay emit failed");
            Emitted::Gone
        }
    }
}

/// Emits one stored event to a room, leaving out its sender's socket; then
/// detaches the sockets whose queue was too full to take it
/// ([`lagging`](crate::lagging)). `before` is the room's last delivered
/// event before this one.
async fn emit_to_room(
    inner: &Arc<Inner>,
    io: &SocketIo,
    room: &str,
    members: usize,
    event: &TopicEvent,
    before: &Offset,
) {
    let Some(stored) = envelope::parse(&event.payload) else {
        tracing::error!(room, "unreadable event in history");
        return;
    };
    // With traces on, the delivery is a span of its own, a child of the
    // publish that put the event on the bus (on whichever node that was).
    let span = if switchboard_telemetry::trace::enabled() && stored.p.is_some() {
        let span = tracing::info_span!(
            "deliver",
            "otel.kind" = "consumer",
            event = %stored.e,
            subscribers = members,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        switchboard_telemetry::trace::set_parent(&span, stored.p.as_deref(), None);
        switchboard_telemetry::trace::stamp_ids(&span);
        span
    } else {
        tracing::Span::none()
    };
    let env = Envelope { topic: &stored.t, offset: event.offset.to_string(), data: stored.d, from: stored.f };
    let sender = stored
        .x
        .as_deref()
        .and_then(|x| socketioxide::socket::Sid::from_str(x).ok())
        .and_then(|sid| io.get_socket(sid));
    let others = members.saturating_sub(usize::from(sender.is_some()));
    // The sender alone here (it holds the topic, so it is in the room, and
    // the room has no more sockets than `members`): nobody to write to.
    if others == 0
        && sender
            .as_ref()
            .and_then(|s| s.extensions.get::<Arc<crate::Session>>())
            .is_some_and(|session| session.has_topic(room))
    {
        return;
    }
    let result = async {
        match sender {
            Some(sender) => sender.to(room.to_owned()).emit(&*stored.e, &env).await,
            None => io.to(room.to_owned()).emit(&*stored.e, &env).await,
        }
    }
    .instrument(span)
    .await;
    let metrics = switchboard_telemetry::metrics();
    if stored.s > 0 {
        let took = switchboard_telemetry::unix_micros().saturating_sub(stored.s);
        metrics.publish_to_write.observe(took as f64 / 1e6);
    }
    match result {
        Ok(()) => {
            metrics.events_out.inc_by(others as u64);
        }
        Err(socketioxide::BroadcastError::Socket(errors)) => {
            let full =
                errors.iter().filter(|e| matches!(e, socketioxide::SocketError::InternalChannelFull)).count();
            metrics.events_out.inc_by(others.saturating_sub(errors.len()) as u64);
            metrics.dropped.inc_by(full as u64);
            if full > 0 {
                for s in io.to(room.to_owned()).sockets() {
                    if s.take_missed() > 0 {
                        crate::lagging::detach(inner, s, room, Some(before));
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, room, "delivery failed"),
    }
}

/// Local subscribers of a topic.
fn members(topic: &LocalTopic) -> usize {
    topic.members.load(Ordering::Relaxed)
}

/// Detaches every socket of `room`: events after `before` are lost to them.
fn detach_room(inner: &Arc<Inner>, io: &SocketIo, room: &str, before: &Offset) {
    for s in io.to(room.to_owned()).sockets() {
        crate::lagging::detach(inner, s, room, Some(before));
    }
}

/// A node-wide command carried on the control topic.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Control {
    Disconnect { tenant: TenantId, user: UserId },
    DisconnectTenant { tenant: TenantId },
}

pub(crate) async fn send_control(inner: &Inner, control: &Control) -> Result<(), ErrorKind> {
    let data = serde_json::value::to_raw_value(control).map_err(|_| ErrorKind::Internal)?;
    let payload = envelope::stored("control", CONTROL_ROOM, &data, None, None)?;
    inner.topics.publish(CONTROL_ROOM, &payload).await.map(|_| ()).map_err(|e| e.kind())
}

fn apply_control(io: &SocketIo, event: &TopicEvent) {
    let Some(stored) = envelope::parse(&event.payload) else { return };
    match serde_json::from_str::<Control>(stored.d.get()) {
        Ok(Control::Disconnect { tenant, user }) => {
            let sockets = io.to(Session::user_room(tenant, user)).sockets();
            tracing::info!(tenant_id = %tenant, user_id = %user, sockets = sockets.len(), "disconnecting a user's sockets");
            for s in sockets {
                let _ = s.disconnect();
            }
        }
        Ok(Control::DisconnectTenant { tenant }) => {
            let sockets = io.to(Session::tenant_room(tenant)).sockets();
            tracing::info!(tenant_id = %tenant, sockets = sockets.len(), "disconnecting a tenant's sockets");
            for s in sockets {
                let _ = s.emit(
                    "error",
                    &crate::codes::EventError::new(ErrorKind::TenantSuspended, "this tenant is suspended")
                        .body(),
                );
                let _ = s.disconnect();
            }
        }
        Err(e) => tracing::warn!(error = %e, "unknown control message"),
    }
}

/// The dispatcher: delivers live events to local rooms in order, applies control
/// messages, and resynchronises after interruptions.
pub(crate) async fn dispatch(inner: Weak<Inner>, io: SocketIo, mut deliveries: mpsc::Receiver<Delivery>) {
    let mut prune = tokio::time::interval(Duration::from_secs(30));
    loop {
        let delivery = tokio::select! {
            d = deliveries.recv() => d,
            _ = prune.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                inner.hub.prune();
                continue;
            }
        };
        let Some(delivery) = delivery else { return };
        let Some(inner) = inner.upgrade() else { return };
        match delivery {
            Delivery::Event { room, event } if &*room == CONTROL_ROOM => apply_control(&io, &event),
            Delivery::Event { room, event } => {
                let Some(topic) = inner.hub.get(&room) else { continue };
                let mut cursor = topic.cursor.lock().await;
                let Some(current) = cursor.as_ref() else { continue };
                match event.offset.is_after(current) {
                    Some(false) => continue, // already delivered (or replayed) up to the cursor
                    Some(true) => emit_to_room(&inner, &io, &room, members(&topic), &event, current).await,
                    None => {
                        // A new epoch: the topic's history was lost. Events
                        // after the cursor may have gone with it, unless the
                        // topic was idle long enough to expire on its own.
                        let recent = lock(&topic.delivered_at)
                            .is_some_and(|at| at.elapsed() < inner.config.history.ttl);
                        if recent {
                            tracing::warn!(room = %room, "topic history lost; its subscribers are told");
                            detach_room(&inner, &io, &room, current);
                        } else {
                            emit_to_room(&inner, &io, &room, members(&topic), &event, current).await;
                        }
                    }
                }
                *cursor = Some(event.offset);
                *lock(&topic.delivered_at) = Some(Instant::now());
                topic.advanced.notify_waiters();
            }
            Delivery::Resync => resync(&inner, &io).await,
        }
    }
}

async fn resync(inner: &Arc<Inner>, io: &SocketIo) {
    if let Err(e) = inner.topics.subscribe(CONTROL_ROOM).await {
        tracing::warn!(error = %e, "control topic resubscribe failed");
    }
    for (room, topic) in inner.hub.rooms() {
        let mut cursor = topic.cursor.lock().await;
        let Some(mut current) = cursor.clone() else { continue };
        // Subscribed again before reading, so that nothing falls between the
        // history read and the first live event (the reconnect's own
        // resubscription may not have happened yet).
        let resubscribed = inner.topics.resubscribe(&room).await;
        if let Err(e) = &resubscribed {
            tracing::warn!(error = %e, room = %room, "topic resubscribe failed");
        }
        let mut read = 0;
        let complete = resubscribed.is_ok()
            && loop {
                match inner.topics.read(&room, &current, None, PAGE).await {
                    Ok(page) if page.recovered && read + page.events.len() as u32 <= RESYNC_LIMIT => {
                        read += page.events.len() as u32;
                        for event in page.events {
                            emit_to_room(inner, io, &room, members(&topic), &event, &current).await;
                            current = event.offset;
                        }
                        *cursor = Some(current.clone());
                        if !page.more {
                            break true;
                        }
                    }
                    Ok(_) => break false,
                    Err(e) => {
                        tracing::warn!(error = %e, room = %room, "resync read failed");
                        break false;
                    }
                }
            };
        if !complete {
            tracing::warn!(room = %room, "events were lost while the bus was away; its subscribers are told");
            detach_room(inner, io, &room, &current);
            if let Ok(top) = inner.topics.top(&room).await {
                *cursor = Some(top);
            }
        }
        topic.advanced.notify_waiters();
    }
}
