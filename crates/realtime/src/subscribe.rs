//! `subscribe`, `unsubscribe` and `publish`.

use crate::codes::EventError;
use crate::event::{Ack, Ev, Parsed, TopicReq, admit, fits, joined_room, payload, reply, topic, traced};
use crate::hub::Payer;
use crate::session::Ops;
use crate::{From, Realtime, Session};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use socketioxide::ParserError;
use socketioxide::extract::{SocketRef, TryData};
use std::borrow::Cow;
use switchboard_db::TenantContext;
use switchboard_domain::ErrorKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeReq {
    topic: String,
    since: Option<String>,
}

/// Parsed straight from the packet: `data` is kept as the client sent it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishReq {
    topic: String,
    event: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

pub(crate) async fn subscribe(Ev { s, rt, session }: Ev, TryData(data): TryData<Value>, ack: Ack) {
    let result = traced("subscribe", &session, subscribe_inner(&rt, &s, &session, data)).await;
    reply(ack, "subscribe", result).await;
}

fn gone() -> EventError {
    EventError::new(ErrorKind::Unavailable, "the socket is disconnecting")
}

async fn subscribe_inner(
    rt: &Realtime,
    s: &SocketRef,
    session: &Session,
    data: Result<Value, ParserError>,
) -> Result<Value, EventError> {
    let limits = admit(rt, s, session).await?;
    let req: SubscribeReq = payload(data)?;
    let topic = topic(&req.topic)?;
    let room = topic.room(session.tenant);
    // Held to the end: this socket's topics change one handler at a time.
    let ops = session.ops().await.ok_or_else(gone)?;
    if session.has_topic(&room) {
        return Ok(
            json!({ "ok": true, "topic": topic.to_string(), "offset": rt.inner.hub.offset(&room).await.map(|o| o.to_string()) }),
        );
    }
    if ops.topics().rooms.len() >= limits.max_topics_per_socket as usize {
        return Err(EventError::new(
            ErrorKind::Forbidden,
            format!("a socket may hold at most {} topics", limits.max_topics_per_socket),
        ));
    }
    let ctx = TenantContext::new(session.tenant, Some(session.user), session.role());
    match rt.inner.directory.may_subscribe(&ctx, &topic).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(EventError::new(ErrorKind::Forbidden, format!("you cannot subscribe to {topic}")));
        }
        Err(e) => {
            tracing::error!(error = %e, "authorization lookup failed");
            return Err(EventError::new(e.kind(), "try again shortly"));
        }
    }
    let payer = Payer { tenant: session.tenant, events_per_second: limits.events_per_second };
    let joined = rt
        .inner
        .hub
        .join(&rt.inner, s, &room, req.since.as_deref(), &payer)
        .await
        .map_err(|kind| EventError::new(kind, "the topic is unavailable; try again"))?;
    ops.topics().rooms.insert(room.into_boxed_str());
    let mut ack = json!({ "ok": true, "topic": topic.to_string(), "offset": joined.offset.to_string() });
    if let Some(recovered) = joined.recovered {
        switchboard_telemetry::metrics().recovery(recovered);
        ack["recovered"] = json!(recovered);
    }
    Ok(ack)
}

pub(crate) async fn unsubscribe(Ev { s, rt, session }: Ev, TryData(data): TryData<Value>, ack: Ack) {
    let result = traced("unsubscribe", &session, async {
        admit(&rt, &s, &session).await?;
        let req: TopicReq = payload(data)?;
        let topic = topic(&req.topic)?;
        let room = topic.room(session.tenant);
        let ops = session.ops().await.ok_or_else(gone)?;
        if !leave(&rt, &s, &ops, &room).await {
            return Err(EventError::not_subscribed(&topic.to_string()));
        }
        Ok(json!({ "ok": true, "topic": topic.to_string() }))
    })
    .await;
    reply(ack, "unsubscribe", result).await;
}

/// Takes `room` off the socket: out of its topics, its Socket.IO room, the
/// node's subscription (with the last local subscriber) and its presence
/// entry there. Returns whether the socket held the room.
pub(crate) async fn leave(rt: &Realtime, s: &SocketRef, ops: &Ops<'_>, room: &str) -> bool {
    let removed = ops.topics().rooms.remove(room);
    if removed {
        s.leave(room.to_owned());
        rt.inner.hub.leave(&rt.inner, room);
        crate::presence::untrack(rt, ops, &s.id.to_string(), room).await;
    }
    removed
}

/// Event names a client may not publish: Socket.IO's own and the server's.
fn reserved(event: &str) -> bool {
    const NAMES: [&str; 7] =
        ["connect", "connect_error", "disconnect", "disconnecting", "error", "newListener", "removeListener"];
    const PREFIXES: [&str; 7] = ["message:", "run:", "presence:", "system:", "auth:", "approval:", "task:"];
    NAMES.contains(&event) || PREFIXES.iter().any(|p| event.starts_with(p))
}

/// Why `event` cannot be sent by a client or over `POST /broadcast`, if it cannot.
pub fn check_event_name(event: &str) -> Result<(), String> {
    if !valid_event_name(event) {
        return Err("event names are 1 to 64 characters of A-Z a-z 0-9 _ . : -".to_owned());
    }
    if reserved(event) {
        return Err(format!("`{event}` is reserved for the server"));
    }
    Ok(())
}

fn valid_event_name(event: &str) -> bool {
    (1..=64).contains(&event.len())
        && event.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

pub(crate) async fn publish(Ev { s, rt, session }: Ev, Parsed(req): Parsed<PublishReq>, ack: Ack) {
    let result = traced("publish", &session, async {
        let limits = admit(&rt, &s, &session).await?;
        let req = req?;
        let topic = topic(&req.topic)?;
        check_event_name(&req.event).map_err(EventError::invalid)?;
        if !topic.client_publishable() {
            return Err(EventError::new(ErrorKind::Forbidden, format!("clients cannot publish to {topic}")));
        }
        joined_room(&session, &topic)?;
        let data = req.data.as_deref().unwrap_or(RawValue::NULL);
        fits(data, &limits)?;
        // Pushes back when the node is saturated, before any Redis work.
        let _slot = rt.publish_slot().ok_or_else(|| EventError::rate_limited(Realtime::PUBLISH_RETRY))?;
        rt.charge_history(session.tenant, &limits, data.get().len()).await.map_err(EventError::quota)?;
        let from = From { user_id: Some(session.user.as_uuid()), kind: Cow::Borrowed("user") };
        let sid = s.id.to_string();
        let offset = rt
            .publish(session.tenant, &topic, &req.event, data, Some(&from), Some(&sid))
            .await
            .map_err(|kind| EventError::new(kind, "the event could not be published; try again"))?;
        Ok(json!({ "ok": true, "topic": topic.to_string(), "offset": offset.to_string() }))
    })
    .await;
    reply(ack, "publish", result).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_and_socket_io_event_names_cannot_be_published() {
        for e in [
            "message:new",
            "run:delta",
            "presence:join",
            "system:drain",
            "error",
            "disconnect",
            "auth:refresh",
        ] {
            assert!(reserved(e), "{e}");
        }
        assert!(!reserved("typing") && valid_event_name("typing:start"));
        assert!(!valid_event_name("") && !valid_event_name("a b") && !valid_event_name(&"x".repeat(65)));
    }
}
