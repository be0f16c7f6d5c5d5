//! Tenant limits and status. A tenant stores only the limits it overrides (a
//! partial object, [`LimitOverrides`]); they are merged over the configured
//! defaults, so a new limit needs no migration.
//!
//! Besides rates and sizes, the limits hold each tenant's quotas on what it may
//! keep in the shared Redis: topic history, presence entries and the dedupe
//! keys of streamed batches. A tenant at a quota is refused with
//! `quota_exceeded`; other tenants are unaffected.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Whether a tenant may connect and make requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    Suspended,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(TenantStatus::Active),
            "suspended" => Some(TenantStatus::Suspended),
            _ => None,
        }
    }
}

/// A tenant's effective limits, cluster-wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_connections: u32,
    pub events_per_second: u32,
    pub http_requests_per_second: u32,
    pub max_topics_per_socket: u32,
    pub max_payload_bytes: u32,
    /// Bytes of events the tenant may add to topic history per history TTL
    /// (what it can hold in Redis at once is at most twice this).
    pub max_history_bytes: u32,
    /// Presence entries on one topic.
    pub max_presence_per_topic: u32,
    /// Presence entries across all the tenant's topics, on every node.
    pub max_presence_entries: u32,
    /// Dedupe keys of streamed delta batches remembered at once (each lives
    /// 15 minutes).
    pub max_dedupe_keys: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            events_per_second: 1_000,
            http_requests_per_second: 100,
            max_topics_per_socket: 100,
            max_payload_bytes: 64 * 1024,
            max_history_bytes: 64 * 1024 * 1024,
            max_presence_per_topic: 1_000,
            max_presence_entries: 20_000,
            max_dedupe_keys: 100_000,
        }
    }
}

/// The largest value any limit may take.
pub const MAX_LIMIT: u32 = 1 << 30;

/// A tenant's stored overrides: only the limits it changes. Unknown names are
/// refused, each value is an integer from 1 to [`MAX_LIMIT`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_requests_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_topics_per_socket: Option<u32>,
    /// From 1 KiB to 16 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload_bytes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_history_bytes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_presence_per_topic: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_presence_entries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_dedupe_keys: Option<u32>,
}

/// A limits object that cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    #[error("limits must be an object of known limit names with whole numbers: {0}")]
    Shape(String),
    #[error("limit `{0}` must be an integer between {1} and {2}")]
    OutOfRange(&'static str, u32, u32),
}

/// The largest payload a tenant may be allowed (a Socket.IO packet is at most 1 MiB on the wire).
const MAX_PAYLOAD: u32 = 16 * 1024 * 1024;

/// The smallest value of a limit: 1, but a payload cap must leave room for the
/// server's own events (ids, numbers and a short preview).
fn min_of(name: &str) -> u32 {
    if name == "max_payload_bytes" { 1024 } else { 1 }
}

impl LimitOverrides {
    /// Parses overrides as sent to `PATCH /tenants/{id}`.
    pub fn parse(value: &Value) -> Result<Self, LimitsError> {
        if !value.is_object() {
            return Err(LimitsError::Shape("not an object".to_owned()));
        }
        let overrides: Self =
            serde_json::from_value(value.clone()).map_err(|e| LimitsError::Shape(e.to_string()))?;
        for (name, v, max) in overrides.named() {
            let min = min_of(name);
            if let Some(v) = v
                && !(min..=max).contains(&v)
            {
                return Err(LimitsError::OutOfRange(name, min, max));
            }
        }
        Ok(overrides)
    }

    /// Overrides as stored; anything unreadable (it was refused on the way in)
    /// counts as no override.
    pub fn stored(value: &Value) -> Self {
        let Some(map) = value.as_object() else { return Self::default() };
        let mut out = Self::default();
        for (name, slot, max) in out.slots() {
            *slot = map
                .get(name)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (min_of(name)..=max).contains(n));
        }
        out
    }

    fn named(&self) -> [(&'static str, Option<u32>, u32); 9] {
        [
            ("max_connections", self.max_connections, MAX_LIMIT),
            ("events_per_second", self.events_per_second, MAX_LIMIT),
            ("http_requests_per_second", self.http_requests_per_second, MAX_LIMIT),
            ("max_topics_per_socket", self.max_topics_per_socket, MAX_LIMIT),
            ("max_payload_bytes", self.max_payload_bytes, MAX_PAYLOAD),
            ("max_history_bytes", self.max_history_bytes, MAX_LIMIT),
            ("max_presence_per_topic", self.max_presence_per_topic, MAX_LIMIT),
            ("max_presence_entries", self.max_presence_entries, MAX_LIMIT),
            ("max_dedupe_keys", self.max_dedupe_keys, MAX_LIMIT),
        ]
    }

    fn slots(&mut self) -> [(&'static str, &mut Option<u32>, u32); 9] {
        [
            ("max_connections", &mut self.max_connections, MAX_LIMIT),
            ("events_per_second", &mut self.events_per_second, MAX_LIMIT),
            ("http_requests_per_second", &mut self.http_requests_per_second, MAX_LIMIT),
            ("max_topics_per_socket", &mut self.max_topics_per_socket, MAX_LIMIT),
            ("max_payload_bytes", &mut self.max_payload_bytes, MAX_PAYLOAD),
            ("max_history_bytes", &mut self.max_history_bytes, MAX_LIMIT),
            ("max_presence_per_topic", &mut self.max_presence_per_topic, MAX_LIMIT),
            ("max_presence_entries", &mut self.max_presence_entries, MAX_LIMIT),
            ("max_dedupe_keys", &mut self.max_dedupe_keys, MAX_LIMIT),
        ]
    }
}

impl Limits {
    /// These limits with `overrides` applied.
    pub fn with(self, o: &LimitOverrides) -> Self {
        Self {
            max_connections: o.max_connections.unwrap_or(self.max_connections),
            events_per_second: o.events_per_second.unwrap_or(self.events_per_second),
            http_requests_per_second: o.http_requests_per_second.unwrap_or(self.http_requests_per_second),
            max_topics_per_socket: o.max_topics_per_socket.unwrap_or(self.max_topics_per_socket),
            max_payload_bytes: o.max_payload_bytes.unwrap_or(self.max_payload_bytes),
            max_history_bytes: o.max_history_bytes.unwrap_or(self.max_history_bytes),
            max_presence_per_topic: o.max_presence_per_topic.unwrap_or(self.max_presence_per_topic),
            max_presence_entries: o.max_presence_entries.unwrap_or(self.max_presence_entries),
            max_dedupe_keys: o.max_dedupe_keys.unwrap_or(self.max_dedupe_keys),
        }
    }

    /// These limits with a stored override object applied.
    pub fn with_overrides(self, stored: &Value) -> Self {
        self.with(&LimitOverrides::stored(stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn overrides_replace_only_the_named_limits() {
        let limits = Limits::default().with_overrides(&json!({"max_connections": 5}));
        assert_eq!(limits.max_connections, 5);
        assert_eq!(limits.events_per_second, Limits::default().events_per_second);
    }

    #[test]
    fn unknown_names_non_integers_and_out_of_range_values_are_refused() {
        assert!(matches!(LimitOverrides::parse(&json!({"max_sockets": 1})), Err(LimitsError::Shape(_))));
        assert!(LimitOverrides::parse(&json!({"max_connections": 0})).is_err());
        assert!(LimitOverrides::parse(&json!({"max_connections": "5"})).is_err());
        assert!(LimitOverrides::parse(&json!({"max_connections": 1.5})).is_err());
        assert!(LimitOverrides::parse(&json!({"max_connections": -1})).is_err());
        assert!(LimitOverrides::parse(&json!({"max_payload_bytes": 17 * 1024 * 1024})).is_err());
        assert!(LimitOverrides::parse(&json!({"max_payload_bytes": 1023})).is_err());
        assert!(LimitOverrides::parse(&json!([1])).is_err());
        let ok = LimitOverrides::parse(&json!({"max_payload_bytes": 1024, "max_presence_per_topic": 2}));
        assert_eq!(ok.map(|o| (o.max_payload_bytes, o.max_presence_per_topic)), Ok((Some(1024), Some(2))));
    }

    #[test]
    fn stored_overrides_that_no_longer_parse_count_as_none() {
        let o = LimitOverrides::stored(
            &json!({"max_connections": 7, "retired_limit": 3, "max_payload_bytes": 0}),
        );
        assert_eq!(o, LimitOverrides { max_connections: Some(7), ..LimitOverrides::default() });
    }
}
