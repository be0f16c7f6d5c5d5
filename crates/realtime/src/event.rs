//! What every client event handler receives ([`Ev`]: the socket, the layer and
//! the socket's session, in one extractor) and goes through first ([`admit`]:
//! the tenant's current limits, the socket's and the tenant's event budgets),
//! and the checks handlers share: payload shape, topic names, joined topics,
//! the payload cap, and the ack.

use crate::codes::EventError;
use crate::session::lock;
use crate::{Realtime, Session};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use socketioxide::handler::FromMessageParts;
use socketioxide::socket::Socket;
use socketioxide::{SendError, SocketError};
use std::sync::Arc;
use std::time::Instant;
use switchboard_domain::{ErrorKind, Limits, TenantStatus, Topic};

/// The socket an event came from, the layer, and the socket's session.
pub(crate) struct Ev {
    pub s: SocketRef,
    pub rt: Realtime,
    pub session: Arc<Session>,
}

/// A socket without a session (it never passed the guard): its events are dropped.
#[derive(Debug, thiserror::Error)]
#[error("the socket has no session")]
pub(crate) struct NoSession;

impl FromMessageParts<LocalAdapter> for Ev {
    type Error = NoSession;

    fn from_message_parts(
        s: &Arc<Socket<LocalAdapter>>,
        v: &mut socketioxide::handler::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, NoSession> {
        let State(rt) = State::<Realtime>::from_message_parts(s, v, ack_id).map_err(|_| NoSession)?;
        let session = s.extensions.get::<Arc<Session>>().ok_or(NoSession)?;
        Ok(Self { s: SocketRef::from(s.clone()), rt, session })
    }
}

/// `{ topic }`: `unsubscribe`, `presence:list`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopicReq {
    pub topic: String,
}

/// How to answer an event: its socket and the ack id the client asked for.
/// Unlike a bare ack, it waits while the socket's queue is full (after a long
/// replay, say) instead of dropping the answer.
pub(crate) struct Ack {
    socket: Arc<Socket<LocalAdapter>>,
    id: Option<i64>,
}

impl FromMessageParts<LocalAdapter> for Ack {
    type Error = std::convert::Infallible;

    fn from_message_parts(
        s: &Arc<Socket<LocalAdapter>>,
        _: &mut socketioxide::handler::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        Ok(Self { socket: s.clone(), id: *ack_id })
    }
}

/// How long an answer waits for room in the socket's queue.
const ACK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs a handler's work; with traces on, as a span named after the event,
/// with the tenant and, when refused, the code.
pub(crate) async fn traced(
    event: &'static str,
    session: &Session,
    work: impl std::future::Future<Output = Result<Value, EventError>>,
) -> Result<Value, EventError> {
    use tracing::Instrument;
    if !switchboard_telemetry::trace::enabled() {
        return work.await;
    }
    let span = tracing::info_span!(
        "event",
        "otel.name" = event,
        "otel.kind" = "server",
        event,
        tenant_id = %session.tenant,
        code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    switchboard_telemetry::trace::stamp_ids(&span);
    let result = work.instrument(span.clone()).await;
    if let Err(e) = &result {
        span.record("code", e.code);
    }
    result
}

/// Answers an event through its ack (a no-op when the client sent none),
/// and counts it by name, and its refusal by code.
pub(crate) async fn reply(ack: Ack, event: &'static str, result: Result<Value, EventError>) {
    let metrics = switchboard_telemetry::metrics();
    metrics.event_in(event);
    if let Err(e) = &result {
        metrics.refused("event", e.code);
    }
    if ack.id.is_none() {
        return;
    }
    let body = match result {
        Ok(v) => v,
        Err(e) => e.ack(),
    };
    let deadline = tokio::time::Instant::now() + ACK_PATIENCE;
    loop {
        let mut unused = socketioxide::handler::Value::Bytes(Default::default());
        let Ok(sender) = AckSender::from_message_parts(&ack.socket, &mut unused, &ack.id);
        match sender.send(&body) {
            Ok(()) => return,
            Err(SendError::Socket(SocketError::InternalChannelFull))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "ack not sent");
                return;
            }
        }
    }
}

/// Checks a client event against the tenant's limits and budgets; returns the
/// limits for the handler's own checks. A socket that keeps going while refused
/// is disconnected.
pub(crate) async fn admit(rt: &Realtime, s: &SocketRef, session: &Session) -> Result<Limits, EventError> {
    let info = match rt.inner.directory.tenant(session.tenant).await {
        Ok(Some(info)) => info,
        Ok(None) => return Err(EventError::new(ErrorKind::Forbidden, "the tenant no longer exists")),
        Err(e) => {
            tracing::error!(error = %e, "directory lookup failed");
            return Err(EventError::new(ErrorKind::Unavailable, "try again shortly"));
        }
    };
    if info.status == TenantStatus::Suspended {
        let _ = s.clone().disconnect();
        return Err(EventError::new(ErrorKind::TenantSuspended, "this tenant is suspended"));
    }
    let per_socket = rt.inner.config.socket_events_per_second.min(info.limits.events_per_second);
    let outcome = lock(&session.bucket).take(Instant::now(), per_socket);
    if let Err(refused) = outcome {
        switchboard_telemetry::metrics().limited("socket_events");
        if refused.abusive {
            tracing::warn!(sid = %s.id, tenant_id = %session.tenant, "socket kept sending while rate limited; disconnecting");
            let _ = s.clone().disconnect();
        }
        return Err(EventError::rate_limited(refused.retry_after));
    }
    rt.inner.budgets.take(&rt.inner.limiter, session.tenant, info.limits.events_per_second).await.map_err(
        |wait| {
            switchboard_telemetry::metrics().limited("tenant_events");
            EventError::rate_limited(wait)
        },
    )?;
    Ok(info.limits)
}

/// Parses an event's payload into `T`, or says what is wrong with it.
pub(crate) fn payload<T: DeserializeOwned, E>(data: Result<Value, E>) -> Result<T, EventError> {
    let value = data.map_err(|_| EventError::invalid("the payload must be a JSON object"))?;
    serde_json::from_value(value).map_err(|e| EventError::invalid(format!("invalid payload: {e}")))
}

/// Parses a topic string: `unknown_topic` if it names no topic.
pub(crate) fn topic(s: &str) -> Result<Topic, EventError> {
    Topic::parse(s).map_err(|e| EventError::unknown_topic(format!("unknown topic `{}`: {e}", clip(s))))
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Refuses data larger than the tenant's `max_payload_bytes`; returns it encoded.
/// (Encoded from a [`Value`], it is strict JSON already.)
pub(crate) fn sized(data: &Value, limits: &Limits) -> Result<Box<RawValue>, EventError> {
    let raw = serde_json::value::to_raw_value(data).map_err(|_| EventError::invalid("data is not JSON"))?;
    within(&raw, limits)?;
    Ok(raw)
}

fn within(raw: &RawValue, limits: &Limits) -> Result<(), EventError> {
    if raw.get().len() > limits.max_payload_bytes as usize {
        return Err(EventError::too_large("data", limits.max_payload_bytes));
    }
    Ok(())
}

/// Refuses data kept as the client sent it when it is larger than the
/// tenant's `max_payload_bytes`, or when it is JSON that a [`Value`] would
/// refuse: nested more than 128 deep, a number out of range (`1e400`), a lone
/// surrogate (`"\ud800"`). A `RawValue` only skips over its text, so these
/// would otherwise reach every subscriber, whose own parsers may choke on them.
pub(crate) fn fits(raw: &RawValue, limits: &Limits) -> Result<(), EventError> {
    within(raw, limits)?;
    serde_json::from_str::<Strict>(raw.get())
        .map(|Strict| ())
        .map_err(|e| EventError::invalid(format!("invalid data: {e}")))
}

/// Reads a JSON value as strictly as a [`Value`] does, keeping nothing.
struct Strict;

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Strict)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        while seq.next_element::<Strict>()?.is_some() {}
        Ok(Strict)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        while map.next_entry::<Strict, Strict>()?.is_some() {}
        Ok(Strict)
    }
}

/// An event's payload parsed straight from the packet's text into `T`, with
/// no [`Value`] in between, so a `Box<RawValue>` field keeps the client's
/// JSON exactly as sent (numbers of any size included) without being parsed
/// into a tree and written out again. Binary attachments are refused, as a
/// `Value` refuses them: events carry JSON only.
pub(crate) struct Parsed<T>(pub Result<T, EventError>);

impl<T: DeserializeOwned> FromMessageParts<LocalAdapter> for Parsed<T> {
    type Error = std::convert::Infallible;

    fn from_message_parts(
        s: &Arc<Socket<LocalAdapter>>,
        v: &mut socketioxide::handler::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        if let socketioxide::handler::Value::Str(_, Some(attachments)) = v
            && !attachments.is_empty()
        {
            return Ok(Self(Err(EventError::invalid(
                "the payload must be JSON, without binary attachments",
            ))));
        }
        let Ok(TryData(parsed)) = TryData::<T>::from_message_parts(s, v, ack_id);
        Ok(Self(parsed.map_err(|e| EventError::invalid(format!("invalid payload: {e}")))))
    }
}

/// The room of `topic` if this socket has joined it; `not_subscribed` otherwise.
pub(crate) fn joined_room(session: &Session, topic: &Topic) -> Result<String, EventError> {
    let room = topic.room(session.tenant);
    if !session.has_topic(&room) {
        return Err(EventError::not_subscribed(&topic.to_string()));
    }
    Ok(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(data: &str) -> Result<(), &'static str> {
        let raw = RawValue::from_string(data.to_owned()).expect("the skim accepts it");
        fits(&raw, &Limits::default()).map_err(|e| e.code)
    }

    #[test]
    fn data_kept_as_sent_is_still_held_to_what_a_value_accepts() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(check(r#"{"a":[1,-2.5,1e300,"é\u00e9\ud83d\ude00",null,true,{}]}"#), Ok(()));
        assert_eq!(check(&nest(100)), Ok(()));
        assert_eq!(check(&nest(129)), Err("invalid_payload"), "deeper than a Value nests");
        assert_eq!(check(r#"{"a":{"b":"\ud800"}}"#), Err("invalid_payload"), "a lone surrogate");
        assert_eq!(check(r#"{"\udc00":1}"#), Err("invalid_payload"), "a lone surrogate in a key");
        assert_eq!(check("[1e400]"), Err("invalid_payload"), "a number out of range");
        let big = format!("\"{}\"", "x".repeat(Limits::default().max_payload_bytes as usize));
        assert_eq!(check(&big), Err("payload_too_large"));
    }
}
