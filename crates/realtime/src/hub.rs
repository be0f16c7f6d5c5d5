//! Bus ↔ local rooms. The node subscribes to a topic's channel on its first local
//! subscriber and drops it with the last (Centrifugo's model); live events are
//! delivered to the topic's local room by one dispatcher, encoded once per
//! event.
//!
//! Each local topic keeps a cursor: the offset of the last event delivered to its
//! room. Joining a topic takes the cursor's lock, so no live event reaches the
//! room meanwhile; a socket that asks for `since` gets history from `since` up to
//! the cursor, then joins the room and gets everything after it live: no gap and
//! no duplicate at the seam. After a bus interruption the dispatcher reads each
//! topic from its cursor, so live sockets lose nothing either.

use crate::envelope::{self, Envelope};
use crate::{CONTROL_ROOM, Inner, Session};
use serde::{Deserialize, Serialize};
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use switchboard_cluster::{Delivery, Offset, TopicEvent};
use switchboard_domain::{ErrorKind, TenantId, UserId};
use tokio::sync::mpsc;

/// Events a resync reads per topic at most; beyond, the gap is reported.
const RESYNC_LIMIT: u32 = 10_000;

/// How long a join waits for this node to deliver an offset the client already
/// holds (it came from another node a moment ago).
const CATCH_UP: Duration = Duration::from_millis(500);

struct LocalTopic {
    members: AtomicUsize,
    cursor: tokio::sync::Mutex<Option<Offset>>,
    /// Told whenever the dispatcher moves the cursor.
    advanced: tokio::sync::Notify,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Local topics (for metrics).
    pub(crate) fn len(&self) -> usize {
        lock(&self.topics).len()
    }

    /// Joins `socket` to `room`, replaying history after `since` first.
    pub(crate) async fn join(
        &self,
        inner: &Inner,
        socket: &SocketRef,
        room: &str,
        since: Option<&str>,
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
                    })
                })
                .clone();
            topic.members.fetch_add(1, Ordering::SeqCst);
            topic
        };
        match self.join_locked(inner, &topic, socket, room, since).await {
            Ok(joined) => Ok(joined),
            Err(e) => {
                self.leave(inner, room);
                Err(e)
            }
        }
    }

    async fn join_locked(
        &self,
        inner: &Inner,
        topic: &LocalTopic,
        socket: &SocketRef,
        room: &str,
        since: Option<&str>,
    ) -> Result<Joined, ErrorKind> {
        let since = since.map(Offset::parse);
        // A client may hold an offset this node has not delivered yet (it came
        // from another node a moment ago): wait for the dispatcher to reach it.
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        loop {
            // Created before the check, so a move in between is not missed.
            let advanced = topic.advanced.notified();
            let cursor = topic.cursor.lock().await;
            let ahead = matches!((&since, &*cursor), (Some(Some(s)), Some(c)) if s.is_after(c) == Some(true));
            drop(cursor);
            if !ahead || tokio::time::timeout_at(deadline, advanced).await.is_err() {
                break;
            }
        }
        let mut cursor = topic.cursor.lock().await;
        if cursor.is_none() {
            let top = inner.topics.subscribe(room).await.map_err(|e| {
                tracing::warn!(error = %e, room, "topic subscribe failed");
                e.kind()
            })?;
            *cursor = Some(top);
        }
        let Some(current) = cursor.clone() else { return Err(ErrorKind::Internal) };
        let recovered = match since {
            None => None,
            Some(None) => Some(false),
            Some(Some(since)) => {
                match inner.topics.read(room, &since, Some(&current), inner.config.replay_limit).await {
                    Ok(replay) => {
                        for event in &replay.events {
                            emit_to_socket(socket, event);
                        }
                        Some(replay.recovered)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, room, "history read failed");
                        Some(false)
                    }
                }
            }
        };
        socket.join(room.to_owned());
        drop(cursor);
        Ok(Joined { offset: current, recovered })
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

/// Emits one stored event to one socket (a replay).
fn emit_to_socket(socket: &SocketRef, event: &TopicEvent) {
    let Some(stored) = envelope::parse(&event.payload) else { return };
    let env = Envelope { topic: &stored.t, offset: event.offset.to_string(), data: stored.d, from: stored.f };
    if let Err(e) = socket.emit(&*stored.e, &env) {
        tracing::debug!(error = %e, sid = %socket.id, "replay emit failed");
    }
}

/// Emits one stored event to a room, leaving out its sender's socket.
async fn emit_to_room(io: &SocketIo, room: &str, event: &TopicEvent) {
    let Some(stored) = envelope::parse(&event.payload) else {
        tracing::error!(room, "unreadable event in history");
        return;
    };
    let env = Envelope { topic: &stored.t, offset: event.offset.to_string(), data: stored.d, from: stored.f };
    let sender = stored
        .x
        .as_deref()
        .and_then(|x| socketioxide::socket::Sid::from_str(x).ok())
        .and_then(|sid| io.get_socket(sid));
    let result = match sender {
        Some(sender) => sender.to(room.to_owned()).emit(&*stored.e, &env).await,
        None => io.to(room.to_owned()).emit(&*stored.e, &env).await,
    };
    if let Err(e) = result {
        // Sockets whose queue is full miss this event; they recover on reconnect.
        tracing::warn!(error = %e, room, "delivery to some sockets failed");
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
                if event.offset.is_after(current) == Some(false) {
                    continue; // already delivered (or replayed) up to the cursor
                }
                emit_to_room(&io, &room, &event).await;
                *cursor = Some(event.offset);
                topic.advanced.notify_waiters();
            }
            Delivery::Resync => resync(&inner, &io).await,
        }
    }
}

async fn resync(inner: &Inner, io: &SocketIo) {
    if let Err(e) = inner.topics.subscribe(CONTROL_ROOM).await {
        tracing::warn!(error = %e, "control topic resubscribe failed");
    }
    for (room, topic) in inner.hub.rooms() {
        let mut cursor = topic.cursor.lock().await;
        let Some(current) = cursor.clone() else { continue };
        match inner.topics.read(&room, &current, None, RESYNC_LIMIT).await {
            Ok(replay) if replay.recovered => {
                for event in replay.events {
                    emit_to_room(io, &room, &event).await;
                    *cursor = Some(event.offset);
                }
            }
            Ok(_) => {
                tracing::warn!(room = %room, "events were lost while the bus was away; subscribers should refetch");
                if let Ok(top) = inner.topics.top(&room).await {
                    *cursor = Some(top);
                }
            }
            Err(e) => tracing::warn!(error = %e, room = %room, "resync read failed"),
        }
        topic.advanced.notify_waiters();
    }
}
