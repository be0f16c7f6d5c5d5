//! Tenant limits and status. Limits are stored as a partial JSON object and merged
//! over the configured defaults, so a new limit needs no migration.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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

/// A tenant's effective limits, cluster-wide (contract §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_connections: u32,
    pub events_per_second: u32,
    pub http_requests_per_second: u32,
    pub max_topics_per_socket: u32,
    pub max_payload_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            events_per_second: 1_000,
            http_requests_per_second: 100,
            max_topics_per_socket: 100,
            max_payload_bytes: 64 * 1024,
        }
    }
}

/// A stored or requested limits object that cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    #[error("limits must be a JSON object")]
    NotAnObject,
    #[error("unknown limit `{0}`")]
    Unknown(String),
    #[error("limit `{0}` must be an integer between 1 and {1}")]
    OutOfRange(String, u64),
}

const NAMES: [&str; 5] = [
    "max_connections",
    "events_per_second",
    "http_requests_per_second",
    "max_topics_per_socket",
    "max_payload_bytes",
];

/// The largest value any limit may take; also bounds payloads at 16 MiB.
const MAX_LIMIT: u64 = 16 * 1024 * 1024;

impl Limits {
    /// Checks a partial limits object (as sent to `PATCH /tenants/{id}`): known
    /// names only, each a positive integer.
    pub fn validate_overrides(value: &Value) -> Result<(), LimitsError> {
        let map = value.as_object().ok_or(LimitsError::NotAnObject)?;
        for (name, v) in map {
            if !NAMES.contains(&name.as_str()) {
                return Err(LimitsError::Unknown(name.clone()));
            }
            match v.as_u64() {
                Some(n) if (1..=MAX_LIMIT).contains(&n) => {}
                _ => return Err(LimitsError::OutOfRange(name.clone(), MAX_LIMIT)),
            }
        }
        Ok(())
    }

    /// These limits with a stored override object applied. Unknown or invalid
    /// entries are ignored here (they were rejected on the way in).
    pub fn with_overrides(mut self, overrides: &Value) -> Self {
        let Some(map) = overrides.as_object() else {
            return self;
        };
        let get = |m: &Map<String, Value>, k: &str| {
            m.get(k)
                .and_then(Value::as_u64)
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .and_then(|n| u32::try_from(n).ok())
        };
        if let Some(n) = get(map, "max_connections") {
            self.max_connections = n;
        }
        if let Some(n) = get(map, "events_per_second") {
            self.events_per_second = n;
        }
        if let Some(n) = get(map, "http_requests_per_second") {
            self.http_requests_per_second = n;
        }
        if let Some(n) = get(map, "max_topics_per_socket") {
            self.max_topics_per_socket = n;
        }
        if let Some(n) = get(map, "max_payload_bytes") {
            self.max_payload_bytes = n;
        }
        self
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
    fn unknown_names_and_non_positive_values_are_rejected() {
        assert_eq!(
            Limits::validate_overrides(&json!({"max_sockets": 1})),
            Err(LimitsError::Unknown("max_sockets".into()))
        );
        assert!(Limits::validate_overrides(&json!({"max_connections": 0})).is_err());
        assert!(Limits::validate_overrides(&json!({"max_connections": "5"})).is_err());
        assert!(Limits::validate_overrides(&json!([1])).is_err());
        assert!(Limits::validate_overrides(&json!({"max_payload_bytes": 1024})).is_ok());
    }
}
