//! `presence:track` and `presence:list`, and the `presence:join` /
//! `presence:leave` events subscribers receive on every node. An entry is
//! `{ user_id, conn_id, state }`; it leaves when its socket unsubscribes or
//! disconnects, and, when its node dies, within the heartbeat expiry (the
//! [`reaper`] on any surviving node announces it once). A topic holds at most
//! the tenant's `max_presence_per_topic` entries and the tenant at most
//! `max_presence_entries` across its topics and nodes; past either, `track` is
//! refused with `quota_exceeded`.

use crate::codes::EventError;
use crate::event::{Ack, Ev, TopicReq, admit, joined_room, payload, reply, sized, topic, traced};
use crate::session::{Ops, Rooms};
use crate::{From, Inner, Realtime, Session};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use socketioxide::extract::TryData;
use std::borrow::Cow;
use std::sync::Weak;
use std::time::Duration;
use switchboard_cluster::Tracked;
use switchboard_domain::{ErrorKind, Topic};

const REAP_EVERY: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrackReq {
    topic: String,
    #[serde(default)]
    state: Value,
}

async fn announce(inner: &Inner, room: &str, event: &str, entry: &str) {
    let Some((tenant, topic)) = Topic::from_room(room) else { return };
    let Ok(data) = RawValue::from_string(entry.to_owned()) else { return };
    let from = From { user_id: None, kind: Cow::Borrowed("system") };
    let Ok(payload) = crate::envelope::stored(event, &topic.to_string(), &data, Some(&from), None) else {
        return;
    };
    match inner.topics.publish(&topic.room(tenant), &payload).await {
        Ok(_) => {
            inner.published.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(error = %e, room, event, "presence event not published"),
    }
}

pub(crate) async fn track(Ev { s, rt, session }: Ev, TryData(data): TryData<Value>, ack: Ack) {
    let result = traced("presence:track", &session, async {
        let limits = admit(&rt, &s, &session).await?;
        let req: TrackReq = payload(data)?;
        let topic = topic(&req.topic)?;
        let room = joined_room(&session, &topic)?;
        if !(req.state.is_object() || req.state.is_null()) {
            return Err(EventError::invalid("state must be an object"));
        }
        let state = if req.state.is_null() { json!({}) } else { req.state };
        sized(&state, &limits)?;
        let sid = s.id.to_string();
        let entry = json!({ "user_id": session.user, "conn_id": sid, "state": state }).to_string();
        let ops =
            session.ops().await.ok_or_else(|| EventError::new(ErrorKind::Unavailable, "disconnected"))?;
        let new = !session.has_presence(&room);
        let tenant = session.tenant.as_uuid();
        if new && !rt.inner.presence_entries.acquire(tenant, limits.max_presence_entries).await {
            return Err(EventError::quota(Duration::from_secs(1)).with_message(format!(
                "the tenant has its {} presence entries",
                limits.max_presence_entries
            )));
        }
        let tracked = rt.inner.presence.track(&room, &sid, &entry, limits.max_presence_per_topic).await;
        match tracked {
            Ok(Tracked::Full) | Err(_) if new => rt.inner.presence_entries.release(tenant),
            _ => {}
        }
        match tracked {
            Ok(Tracked::Full) => {
                return Err(EventError::quota(Duration::from_secs(1)).with_message(format!(
                    "{topic} has its {} presence entries",
                    limits.max_presence_per_topic
                )));
            }
            Err(e) => {
                tracing::warn!(error = %e, "presence track failed");
                return Err(EventError::new(e.kind(), "presence is unavailable; try again"));
            }
            Ok(_) => {}
        }
        if new {
            ops.topics().presence.insert(room.clone().into_boxed_str());
        }
        announce(&rt.inner, &room, "presence:join", &entry).await;
        Ok(json!({ "ok": true, "topic": topic.to_string() }))
    })
    .await;
    reply(ack, "presence:track", result).await;
}

pub(crate) async fn list_event(Ev { s, rt, session }: Ev, TryData(data): TryData<Value>, ack: Ack) {
    let result = traced("presence:list", &session, async {
        admit(&rt, &s, &session).await?;
        let req: TopicReq = payload(data)?;
        let topic = topic(&req.topic)?;
        let room = joined_room(&session, &topic)?;
        let entries =
            list(&rt.inner, &room).await.map_err(|k| EventError::new(k, "presence is unavailable"))?;
        Ok(json!({ "ok": true, "topic": topic.to_string(), "entries": entries }))
    })
    .await;
    reply(ack, "presence:list", result).await;
}

/// The live entries on `room`, from every node.
pub(crate) async fn list(inner: &Inner, room: &str) -> Result<Vec<Value>, ErrorKind> {
    let raw = inner.presence.list(room).await.map_err(|e| {
        tracing::warn!(error = %e, "presence list failed");
        e.kind()
    })?;
    Ok(raw.iter().filter_map(|e| serde_json::from_str(e).ok()).collect())
}

/// Removes this socket's entry on `room` (it unsubscribed), announcing the departure.
pub(crate) async fn untrack(rt: &Realtime, ops: &Ops<'_>, sid: &str, room: &str) {
    let had = ops.topics().presence.remove(room);
    if had {
        remove(rt, ops.tenant(), sid, room).await;
    }
}

/// Removes every entry of a socket that went away (`rooms`, taken from its
/// closed session).
pub(crate) async fn untrack_all(rt: &Realtime, session: &Session, sid: &str, rooms: &Rooms) {
    for room in rooms.iter() {
        remove(rt, session.tenant, sid, room).await;
    }
}

async fn remove(rt: &Realtime, tenant: switchboard_domain::TenantId, sid: &str, room: &str) {
    rt.inner.presence_entries.release(tenant.as_uuid());
    match rt.inner.presence.untrack(room, sid).await {
        Ok(Some(entry)) => announce(&rt.inner, room, "presence:leave", &entry).await,
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "presence untrack failed; the entry leaves with the node"),
    }
}

/// Announces the departures of entries whose node died (every node runs this;
/// the cluster script hands each entry to exactly one).
pub(crate) async fn reaper(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        match inner.presence.reap_dead().await {
            Ok(gone) => {
                for (room, entry) in gone {
                    announce(&inner, &room, "presence:leave", &entry).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "presence reap failed"),
        }
    }
}
