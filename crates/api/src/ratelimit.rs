//! HTTP rate limits, in two lines.
//!
//! 1. [`per_ip`]: tower-governor keyed by the client's IP, before anything else and
//!    without I/O, against floods from one address.
//! 2. [`per_tenant`]: after authentication, the tenant's `http_requests_per_second`
//!    from the distributed limiter (one Redis round trip), keyed by tenant and
//!    route class (`read` for safe methods, `write` otherwise). Every limited
//!    response carries `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`;
//!    a 429 adds `Retry-After`. The authenticated caller and its tenant's record are
//!    left in the request's extensions so the handler's extractors do not look
//!    them up twice.

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, Response};
use axum::middleware::Next;
use axum::response::IntoResponse;
use std::sync::Arc;
use std::time::Duration;
use switchboard_cluster::{Decision, Quota};
use switchboard_domain::ErrorKind;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::PeerIpKeyExtractor;

/// Sustained requests per second one client IP may make, and its burst.
const PER_IP_PER_SECOND: u64 = 2_000;
const PER_IP_BURST: u32 = 4_000;

fn seconds_ceil(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

/// A 429 with `Retry-After` (whole seconds, at least 1).
pub(crate) fn too_many(retry_after: Duration) -> Response<Body> {
    ApiError::new(ErrorKind::RateLimited, "too many requests; retry after the indicated time")
        .with_retry_after(retry_after)
        .into_response()
}

/// A 429 with `Retry-After` for a tenant whose quota (of history, of dedupe
/// keys) is used up for now: code `quota_exceeded`.
pub(crate) fn quota_exceeded(retry_after: Duration, what: &str) -> ApiError {
    ApiError::new(ErrorKind::QuotaExceeded, format!("the tenant's quota of {what} is used up; retry later"))
        .with_retry_after(retry_after)
}

/// The per-IP limiter layer.
pub fn per_ip() -> GovernorLayer<
    PeerIpKeyExtractor,
    governor::middleware::NoOpMiddleware<governor::clock::QuantaInstant>,
    Body,
> {
    let config = GovernorConfigBuilder::default()
        .per_nanosecond(1_000_000_000 / PER_IP_PER_SECOND)
        .burst_size(PER_IP_BURST)
        .finish();
    let layer = GovernorLayer::new(Arc::new(config.unwrap_or_default()));
    layer.error_handler(|e| match e {
        tower_governor::GovernorError::TooManyRequests { wait_time, .. } => {
            too_many(Duration::from_secs(wait_time))
        }
        // No peer address (not served with connect info): nothing to key on.
        _ => ApiError::new(ErrorKind::Internal, "rate limiter could not identify the client").into_response(),
    })
}

fn set_headers(headers: &mut HeaderMap, d: &Decision) {
    headers.insert("ratelimit-limit", HeaderValue::from(d.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(seconds_ceil(d.reset_after)));
}

/// The per-tenant limiter middleware.
pub async fn per_tenant(State(state): State<AppState>, request: Request, next: Next) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    let caller = match Caller::from_request_parts(&mut parts, &state).await {
        Ok(caller) => caller,
        // Unauthenticated: the handler's extractor answers 401 with the reason.
        Err(_) => return next.run(Request::from_parts(parts, body)).await,
    };
    let Some(tenant) = caller.principal.tenant_id() else {
        parts.extensions.insert(caller);
        return next.run(Request::from_parts(parts, body)).await;
    };
    let info = match state.directory.tenant(tenant).await {
        Ok(Some(info)) => info,
        // Unknown tenant or lookup failure: the extractor answers it.
        _ => {
            parts.extensions.insert(caller);
            return next.run(Request::from_parts(parts, body)).await;
        }
    };
    let rate = info.limits.http_requests_per_second;
    let class = if parts.method.is_safe() { "read" } else { "write" };
    let decision =
        state.limiter.check(&format!("http:{tenant}:{class}"), Quota { per_second: rate, burst: rate }).await;
    if !decision.allowed {
        tracing::info!(tenant_id = %tenant, class, "rate limited");
        let mut response = too_many(decision.retry_after);
        set_headers(response.headers_mut(), &decision);
        return response;
    }
    parts.extensions.insert(caller);
    parts.extensions.insert(info);
    let mut response = next.run(Request::from_parts(parts, body)).await;
    set_headers(response.headers_mut(), &decision);
    response
}
