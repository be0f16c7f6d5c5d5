//! The two shapes of a topic event: as stored in history and carried by the bus
//! (event name, topic, data, sender, excluded socket, when it was published and
//! the publish's trace context), and as a client receives
//! it (`{ topic, offset, data, from? }`, docs/socketio.md). The stored form keeps
//! `data` as raw JSON, so a delivery re-encodes nothing but the envelope.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use switchboard_domain::ErrorKind;

/// Who sent an event, as subscribers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct From {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<uuid::Uuid>,
    /// `user`, `agent` (an API key) or `system`.
    pub kind: Cow<'static, str>,
}

#[derive(Serialize)]
struct StoredOut<'a> {
    e: &'a str,
    t: &'a str,
    d: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    f: Option<&'a From>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<&'a str>,
    /// When the publishing node accepted it, in microseconds since the epoch.
    s: u64,
    /// The publish's W3C `traceparent`, when it was traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<String>,
}

/// A stored event, borrowed from its payload.
#[derive(Deserialize)]
pub(crate) struct Stored<'a> {
    #[serde(borrow)]
    pub e: Cow<'a, str>,
    #[serde(borrow)]
    pub t: Cow<'a, str>,
    #[serde(borrow)]
    pub d: &'a RawValue,
    #[serde(borrow, default)]
    pub f: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub x: Option<Cow<'a, str>>,
    #[serde(default)]
    pub s: u64,
    #[serde(borrow, default)]
    pub p: Option<Cow<'a, str>>,
}

/// What a client receives.
#[derive(Serialize)]
pub(crate) struct Envelope<'a> {
    pub topic: &'a str,
    pub offset: String,
    pub data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'a RawValue>,
}

pub(crate) fn stored(
    event: &str,
    topic: &str,
    data: &RawValue,
    from: Option<&From>,
    except: Option<&str>,
) -> Result<String, ErrorKind> {
    let s = switchboard_telemetry::unix_micros();
    let p = switchboard_telemetry::trace::current_traceparent();
    serde_json::to_string(&StoredOut { e: event, t: topic, d: data, f: from, x: except, s, p })
        .map_err(|_| ErrorKind::Internal)
}

pub(crate) fn parse(payload: &str) -> Option<Stored<'_>> {
    serde_json::from_str(payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_event_becomes_the_client_envelope_with_its_data_untouched() {
        let data = RawValue::from_string(r#"{"text":"hi","n":1.50}"#.to_owned()).unwrap();
        let from = From { user_id: None, kind: Cow::Borrowed("agent") };
        let s = stored("message:new", "channel:a", &data, Some(&from), Some("sid1")).unwrap();
        let p = parse(&s).unwrap();
        assert_eq!((&*p.e, &*p.t, p.x.as_deref()), ("message:new", "channel:a", Some("sid1")));
        let env = Envelope { topic: &p.t, offset: "e:1-0".into(), data: p.d, from: p.f };
        assert_eq!(
            serde_json::to_string(&env).unwrap(),
            r#"{"topic":"channel:a","offset":"e:1-0","data":{"text":"hi","n":1.50},"from":{"kind":"agent"}}"#
        );
    }
}
