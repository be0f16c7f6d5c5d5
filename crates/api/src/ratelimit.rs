//! HTTP rate limits, in two lines.
//!
//! 1. [`per_ip`]: tower-governor keyed by the client's address (see
//!    [`crate::client_addr`]; IPv6 by /64), before anything else and without
//!    I/O, against floods from one address; its state is pruned every minute.
//!    [`new_sessions`] does the same for Socket.IO sessions a client opens, so
//!    sessions that never connect cannot pile up from one address either.
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
use switchboard_domain::ClientAddr;
use switchboard_domain::ErrorKind;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

/// Sustained requests per second one client IP may make, and its burst.
const PER_IP_PER_SECOND: u64 = 2_000;
const PER_IP_BURST: u32 = 4_000;

fn seconds_ceil(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

/// A 429 with `Retry-After` (whole seconds, at least 1).
pub(crate) fn too_many(limit: &'static str, retry_after: Duration) -> Response<Body> {
    switchboard_telemetry::metrics().limited(limit);
    ApiError::new(ErrorKind::RateLimited, "too many requests; retry after the indicated time")
        .with_retry_after(retry_after)
        .into_response()
}

/// The node is at capacity: `rate_limited` with `Retry-After`, as an error
/// a handler returns.
pub(crate) fn too_many_error(retry_after: Duration) -> ApiError {
    ApiError::new(ErrorKind::RateLimited, "the node is at capacity; retry after the indicated time")
        .with_retry_after(retry_after)
}

/// A 429 with `Retry-After` for a tenant whose quota (of history, of dedupe
/// keys) is used up for now: code `quota_exceeded`.
pub(crate) fn quota_exceeded(retry_after: Duration, what: &str) -> ApiError {
    ApiError::new(ErrorKind::QuotaExceeded, format!("the tenant's quota of {what} is used up; retry later"))
        .with_retry_after(retry_after)
}

/// Keys the per-address limiters on the request's [`ClientAddr`].
#[derive(Clone, Copy, Debug)]
pub struct ClientKey;

impl KeyExtractor for ClientKey {
    type Key = u128;

    fn extract<T>(&self, req: &axum::http::Request<T>) -> Result<u128, GovernorError> {
        req.extensions().get::<ClientAddr>().map(ClientAddr::bucket).ok_or(GovernorError::UnableToExtractKey)
    }
}

type PerClient =
    GovernorLayer<ClientKey, governor::middleware::NoOpMiddleware<governor::clock::QuantaInstant>, Body>;

/// A per-address limiter of `per_second` (burst `burst`) whose state is pruned
/// every minute.
fn per_client(per_second: u64, burst: u32) -> PerClient {
    let config = GovernorConfigBuilder::default()
        .key_extractor(ClientKey)
        .per_nanosecond(1_000_000_000 / per_second.max(1))
        .burst_size(burst.max(1))
        .finish();
    #[allow(clippy::expect_used)] // start-up: the rate and burst are positive constants
    let config = Arc::new(config.expect("a positive rate and burst"));
    let limiter = Arc::downgrade(config.limiter());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Some(limiter) = limiter.upgrade() else { return };
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    });
    GovernorLayer::new(config).error_handler(|e| match e {
        GovernorError::TooManyRequests { wait_time, .. } => {
            too_many("http_client", Duration::from_secs(wait_time))
        }
        // No address (not served with connect info): nothing to key on.
        _ => ApiError::new(ErrorKind::Internal, "rate limiter could not identify the client").into_response(),
    })
}

/// The per-address limiter of every request.
pub fn per_ip() -> PerClient {
    per_client(PER_IP_PER_SECOND, PER_IP_BURST)
}

/// New Socket.IO sessions one address may open per second, and at once (a
/// shared address, such as an office's, reconnecting after a deploy).
const SESSIONS_PER_SECOND: u32 = 100;
const SESSIONS_BURST: u32 = 1_000;

pub type Keyed = governor::DefaultKeyedRateLimiter<u128>;

/// Limits the Socket.IO sessions each client address opens (requests to
/// `/socket.io/` without a session id: a polling handshake or a direct
/// websocket); requests of open sessions pass. Pruned every minute.
pub fn new_sessions() -> Arc<Keyed> {
    let per_second = std::num::NonZeroU32::new(SESSIONS_PER_SECOND).unwrap_or(std::num::NonZeroU32::MIN);
    let burst = std::num::NonZeroU32::new(SESSIONS_BURST).unwrap_or(std::num::NonZeroU32::MIN);
    let limiter =
        Arc::new(governor::RateLimiter::keyed(governor::Quota::per_second(per_second).allow_burst(burst)));
    let weak = Arc::downgrade(&limiter);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Some(limiter) = weak.upgrade() else { return };
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    });
    limiter
}

/// The middleware of [`new_sessions`].
pub async fn limit_new_sessions(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response<Body> {
    match refuse_session(&state, &request) {
        Some(refusal) => refusal,
        None => next.run(request).await,
    }
}

/// Why a request may not open a session now, if it may not.
fn refuse_session(state: &AppState, request: &Request) -> Option<Response<Body>> {
    let opens = request.uri().path().starts_with("/socket.io")
        && !request.uri().query().unwrap_or("").split('&').any(|p| p.starts_with("sid="));
    if !opens {
        return None;
    }
    if state.is_draining() {
        let refusal = ApiError::new(ErrorKind::Unavailable, "this node is draining; connect again")
            .with_retry_after(Duration::from_secs(1));
        return Some(refusal.into_response());
    }
    let client = request.extensions().get::<ClientAddr>()?;
    let not_until = state.sessions.check_key(&client.bucket()).err()?;
    let wait =
        not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
    tracing::info!(client_ip = %client.0, "too many new sessions from one address");
    Some(too_many("new_sessions", wait))
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
        // Refused: the handler's extractor answers with the reason, once.
        Err(e) => {
            parts.extensions.insert(crate::auth::Rejected(e));
            return next.run(Request::from_parts(parts, body)).await;
        }
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
        let mut response = too_many("http_tenant", decision.retry_after);
        set_headers(response.headers_mut(), &decision);
        return response;
    }
    parts.extensions.insert(caller);
    parts.extensions.insert(info);
    let mut response = next.run(Request::from_parts(parts, body)).await;
    set_headers(response.headers_mut(), &decision);
    response
}
