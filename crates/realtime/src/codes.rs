//! `ErrorKind` → the `connect_error` message and the ack error code of contract §3.

use switchboard_domain::ErrorKind;

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
/// `forbidden`, `not_subscribed`, `rate_limited`, `payload_too_large`, and
/// `not_found` / `unavailable` / `internal` for failures behind the event.
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
    fn every_refused_connection_message_is_one_the_contract_names() {
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
}
