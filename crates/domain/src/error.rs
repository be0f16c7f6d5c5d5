//! The one error vocabulary. Each crate's error says which kind it is; the REST
//! layer maps a kind to a status once, the Socket.IO layer to an ack code once.

use serde::Serialize;

/// What went wrong, as a client should understand it. `code()` is the stable,
/// public snake_case string used in REST bodies and Socket.IO acks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request could not be parsed (malformed JSON, bad encoding).
    BadRequest,
    /// Parsed but invalid; the failing fields go in `details`.
    Validation,
    /// No credentials.
    Unauthenticated,
    /// Credentials present but not valid (forged, wrong key, wrong issuer).
    TokenInvalid,
    /// Credentials valid once, now expired.
    TokenExpired,
    /// Authenticated, but not allowed.
    Forbidden,
    /// Not found, including another tenant's ids.
    NotFound,
    /// Conflicts with the current state (duplicate, illegal transition).
    Conflict,
    /// Larger than the limit allows.
    PayloadTooLarge,
    /// Over a rate limit.
    RateLimited,
    /// The tenant is suspended.
    TenantSuspended,
    /// A capacity limit (connections) is reached.
    OverCapacity,
    /// A tenant's quota of shared memory (history, presence, dedupe keys) is used up.
    QuotaExceeded,
    /// A dependency (Postgres, Redis) is unreachable, or the node is draining.
    Unavailable,
    /// A bug or an unexpected failure; details go to the log only.
    Internal,
}

impl ErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Validation => "validation_failed",
            ErrorKind::Unauthenticated => "unauthorized",
            ErrorKind::TokenInvalid => "token_invalid",
            ErrorKind::TokenExpired => "token_expired",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::TenantSuspended => "tenant_suspended",
            ErrorKind::OverCapacity => "over_capacity",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}
