//! `ErrorKind` → the `connect_error` message and the ack error code of docs/socketio.md,
//! and the shapes they travel in: [`Refusal`] (a refused handshake, sent as
//! `{ message, data: { code, message } }`) and [`EventError`] (an ack's `error`
//! or an `error` event).

use serde_json::{Value, json};
use std::borrow::Cow;
use std::time::Duration;
use switchboard_domain::ErrorKind;

/// A refused connection: `err.message` from the kind, `err.data.code` precise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self { kind, code, message: message.into() }
    }
}

/// The CONNECT_ERROR payload (see vendor/README.md for how it reaches the wire).
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = json!({
            "message": connect_error_message(self.kind),
            "data": { "code": self.code, "message": self.message },
        });
        write!(f, "{body}")
    }
}

/// A refused event: its documented code, a message for people, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    pub code: &'static str,
    pub message: Cow<'static, str>,
    pub retry_after: Option<Duration>,
}

impl EventError {
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self { code: event_error_code(kind), message: message.into(), retry_after: None }
    }

    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Validation, message)
    }

    pub fn unknown_topic(message: impl Into<Cow<'static, str>>) -> Self {
        Self { code: "unknown_topic", message: message.into(), retry_after: None }
    }

    pub fn not_subscribed(topic: &str) -> Self {
        Self {
            code: "not_subscribed",
            message: format!("not subscribed to {topic}").into(),
            retry_after: None,
        }
    }

    /// `what` is over the tenant's `max_payload_bytes` (`limit`).
    pub fn too_large(what: &str, limit: u32) -> Self {
        Self {
            code: "payload_too_large",
            message: format!("{what} is over the tenant's {limit} bytes").into(),
            retry_after: None,
        }
    }

    /// The same error with another message for people.
    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.message = message.into();
        self
    }

    /// The same error with a more precise code (`token_expired`, ...).
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    /// The tenant's quota of shared memory is used up for now.
    pub fn quota(retry_after: Duration) -> Self {
        Self {
            code: "quota_exceeded",
            message: "the tenant's quota is used up; retry later".into(),
            retry_after: Some(retry_after),
        }
    }

    pub fn rate_limited(retry_after: Duration) -> Self {
        Self {
            code: "rate_limited",
            message: "too many events; retry later".into(),
            retry_after: Some(retry_after),
        }
    }

    /// `{ code, message, retry_after_ms? }`: an `error` event, or an ack's `error`.
    pub fn body(&self) -> Value {
        let mut body = json!({ "code": self.code, "message": self.message });
        if let Some(wait) = self.retry_after {
            body["retry_after_ms"] = json!(wait.as_millis().max(1) as u64);
        }
        body
    }

    /// `{ ok: false, error: { ... } }`.
    pub fn ack(&self) -> Value {
        json!({ "ok": false, "error": self.body() })
    }
}

/// The `err.message` of a refused connection: `unauthorized`, `forbidden`,
/// `tenant_suspended`, `over_capacity` or `rate_limited`.
pub fn connect_error_message(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Unauthenticated | ErrorKind::TokenInvalid | ErrorKind::TokenExpired => "unauthorized",
        ErrorKind::TenantSuspended => "tenant_suspended",
        ErrorKind::OverCapacity | ErrorKind::Unavailable | ErrorKind::Internal => "over_capacity",
        ErrorKind::RateLimited => "rate_limited",
        _ => "forbidden",
    }
}

/// The `error.code` of a refused event: `invalid_payload`, `unknown_topic`,
/// `forbidden`, `not_subscribed`, `rate_limited`, `payload_too_large`,
/// `quota_exceeded`, and `not_found` / `conflict` / `unavailable` / `internal`
/// for failures behind the event.
pub fn event_error_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::BadRequest | ErrorKind::Validation => "invalid_payload",
        ErrorKind::PayloadTooLarge => "payload_too_large",
        ErrorKind::RateLimited => "rate_limited",
        ErrorKind::Unauthenticated
        | ErrorKind::TokenInvalid
        | ErrorKind::TokenExpired
        | ErrorKind::Forbidden
        | ErrorKind::TenantSuspended => "forbidden",
        other => other.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refused_connection_message_is_one_the_docs_name() {
        let allowed = ["unauthorized", "forbidden", "tenant_suspended", "over_capacity", "rate_limited"];
        for kind in [
            ErrorKind::BadRequest,
            ErrorKind::Validation,
            ErrorKind::Unauthenticated,
            ErrorKind::TokenInvalid,
            ErrorKind::TokenExpired,
            ErrorKind::Forbidden,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::PayloadTooLarge,
            ErrorKind::RateLimited,
            ErrorKind::TenantSuspended,
            ErrorKind::OverCapacity,
            ErrorKind::Unavailable,
            ErrorKind::Internal,
        ] {
            assert!(allowed.contains(&connect_error_message(kind)), "{kind:?}");
        }
        assert_eq!(connect_error_message(ErrorKind::TokenExpired), "unauthorized");
    }

    #[test]
    fn a_refusal_is_the_object_socket_io_clients_turn_into_err_message_and_err_data() {
        let r = Refusal::new(ErrorKind::TokenExpired, "token_expired", "the token expired");
        let v: Value = serde_json::from_str(&r.to_string()).unwrap();
        assert_eq!(
            v,
            json!({ "message": "unauthorized", "data": { "code": "token_expired", "message": "the token expired" } })
        );
    }

    #[test]
    fn a_rate_limited_ack_says_when_to_retry() {
        let v = EventError::rate_limited(Duration::from_micros(1500)).ack();
        assert_eq!(v["ok"], json!(false));
        assert_eq!(v["error"]["code"], json!("rate_limited"));
        assert_eq!(v["error"]["retry_after_ms"], json!(1));
    }
}
